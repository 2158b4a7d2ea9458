//! Mail keyport sends (invitations) over SMTP with `lettre`, when `KEYPORT_SMTP_URL` is set:
//! `smtp://host:25` (plain, for a relay on the same host), `smtp://host:587?tls=required`
//! (STARTTLS) or `smtps://user:password@host:465` (TLS). The sender is `KEYPORT_MAIL_FROM`
//! (default `keyport <keyport@localhost>`). Without SMTP the inviter is shown the link to pass on.

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::connections::Role;

/// Sends keyport's mail.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A mailer for `url`, sending as `from`.
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| {
                anyhow::anyhow!(
                    "KEYPORT_SMTP_URL is not a usable SMTP URL ({e}); use smtp://host:port, smtp://host:587?tls=required or smtps://user:password@host:465"
                )
            })?
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        let from = from.parse().map_err(|e| {
            anyhow::anyhow!("KEYPORT_MAIL_FROM {from:?} is not a mailbox ({e}); use \"keyport <keyport@example.com>\"")
        })?;
        Ok(Mailer { transport, from })
    }

    /// Emails an invitation link.
    pub async fn send_invitation(
        &self,
        to: &str,
        workspace: &str,
        role: Role,
        link: &str,
    ) -> anyhow::Result<()> {
        self.send(
            to,
            format!("You are invited to {workspace} on keyport"),
            format!(
                "You are invited to join the workspace \"{workspace}\" on keyport as {}.\n\n\
                 Open this link to accept (it works once, and expires in a few days):\n\n{link}\n\n\
                 If you did not expect this invitation, ignore this email.\n",
                role.as_str()
            ),
        )
        .await
    }

    /// Emails a connection request: who asks, for which apps, their message, the link and when
    /// it expires.
    pub async fn send_request(&self, r: &RequestMail<'_>) -> anyhow::Result<()> {
        let mut body = format!(
            "{} (workspace \"{}\") asks you to connect {}.\n\n",
            r.asked_by,
            r.workspace,
            r.apps.join(", ")
        );
        if let Some(m) = r.message {
            body.push_str(&format!("Their message:\n\n{m}\n\n"));
        }
        body.push_str(&format!(
            "Open this link to connect (it works once, until {}):\n\n{}\n\n\
             You will authorize each app at its own site; nobody asks for your password.\n\
             If you did not expect this request, ignore this email.\n",
            r.expires_at, r.link
        ));
        let subject = format!("{} asks you to connect {}", r.workspace, r.apps.join(", "));
        self.send(r.to, subject, body).await
    }

    /// Emails a sign-in link.
    pub async fn send_sign_in_link(&self, to: &str, link: &str) -> anyhow::Result<()> {
        self.send(
            to,
            "Your keyport sign-in link".into(),
            format!(
                "Open this link to sign in to keyport (it works once, for 15 minutes):\n\n{link}\n\n\
                 If you did not ask for it, ignore this email.\n"
            ),
        )
        .await
    }

    /// Sends a plain-text message.
    async fn send(&self, to: &str, subject: String, body: String) -> anyhow::Result<()> {
        let to: Mailbox = to.parse()?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)?;
        self.transport.send(msg).await?;
        Ok(())
    }
}

/// What a connection request email says.
pub struct RequestMail<'a> {
    pub to: &'a str,
    pub workspace: &'a str,
    pub asked_by: &'a str,
    pub apps: Vec<String>,
    pub message: Option<&'a str>,
    pub link: &'a str,
    pub expires_at: &'a str,
}
