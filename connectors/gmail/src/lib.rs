//! Gmail, through Google's OAuth 2.
//!
//! Quirks: a refresh token is issued only with `access_type=offline` and when consent was shown
//! (`prompt=consent`); refresh responses carry no refresh token, so the stored one is kept (the
//! host does); `invalid_grant` has many causes (user revoked access, six months unused, password
//! change, more than 100 live tokens, "Testing" apps' 7-day tokens) and always means reconnect;
//! revocation is `POST https://oauth2.googleapis.com/revoke` with `token=…`. The account is the
//! OpenID `sub` when the `openid` scope was granted, else the Gmail profile's `emailAddress`.

use keyport_sdk::{
    Account, CallContext, Connector, Error, FieldError, Manifest, Oauth2, Scope, export_connector,
    http,
};
use serde_json::Value;

struct Gmail;

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#fff"/><path fill="#ea4335" d="M5 10v13h4V14l7 5 7-5v9h4V10l-11 8z"/><path fill="#4285f4" d="M5 10l11 8 11-8-2-2-9 6.5L7 8z" opacity=".8"/></svg>"##;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "default_label": {
      "type": "string", "title": "Default label", "default": "INBOX", "maxLength": 100,
      "description": "Label that list and watch calls use when a workflow names none."
    },
    "send_as": {
      "type": "string", "title": "Send as", "default": "", "maxLength": 254,
      "description": "A verified send-as address; empty means the account's own address."
    }
  }
}"#;

impl Connector for Gmail {
    fn describe() -> Manifest {
        let oauth = Oauth2::new(
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
        )
        .revoke_url("https://oauth2.googleapis.com/revoke")
        .issuer("https://accounts.google.com", false)
        .authorize_param("access_type", "offline")
        .authorize_param("prompt", "consent")
        .authorize_param("include_granted_scopes", "true");
        Manifest::oauth2(
            "gmail",
            "Gmail",
            "Read, label and send email from a Gmail or Google Workspace mailbox.",
            oauth,
        )
        .version("0.1.0")
        .category("email")
        .icon(ICON)
        .docs_url("https://developers.google.com/identity/protocols/oauth2/web-server")
        .api_base_url("https://gmail.googleapis.com/")
        .egress_host("gmail.googleapis.com")
        .egress_host("openidconnect.googleapis.com")
        .scope(Scope::required(
            "openid",
            "Identify the Google account (stable id)",
        ))
        // Google answers granted scopes by their full names; request them that way so the
        // granted list compares equal.
        .scope(Scope::required(
            "https://www.googleapis.com/auth/userinfo.email",
            "See the account's email address",
        ))
        .scope(Scope::required(
            "https://www.googleapis.com/auth/gmail.readonly",
            "Read messages and settings",
        ))
        .scope(Scope::optional(
            "https://www.googleapis.com/auth/gmail.send",
            "Send email on the user's behalf",
        ))
        .scope(Scope::optional(
            "https://www.googleapis.com/auth/gmail.modify",
            "Read, label and archive messages (no permanent delete)",
        ))
        .scope(Scope::optional(
            "https://www.googleapis.com/auth/gmail.labels",
            "Create and edit labels",
        ))
        .config_schema_text(CONFIG_SCHEMA)
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        // Prefer the stable OpenID subject; fall back to the Gmail profile.
        let info = http::get("https://openidconnect.googleapis.com/v1/userinfo").send()?;
        if info.status == 200 {
            let v: Value = info.json()?;
            if let Some(sub) = v["sub"].as_str() {
                let email = v["email"].as_str().map(str::to_owned);
                let name = email
                    .clone()
                    .or_else(|| v["name"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| sub.to_owned());
                let mut account = Account::new(sub, name);
                if let Some(e) = email {
                    account = account.email(e);
                }
                return Ok(account);
            }
        }
        // No openid scope (or userinfo refused): the Gmail profile names the mailbox.
        let profile: Value = http::get("gmail/v1/users/me/profile")
            .send()?
            .error_for_status()?
            .json()?;
        let email = profile["emailAddress"]
            .as_str()
            .ok_or_else(|| Error::provider("the Gmail profile has no emailAddress"))?;
        Ok(Account::new(email, email).email(email))
    }

    fn validate_config(config: &Value) -> Vec<FieldError> {
        match config["send_as"].as_str() {
            Some(s) if !s.is_empty() && !s.contains('@') => {
                vec![FieldError::new(
                    "/send_as",
                    "Use an email address, e.g. sales@example.com, or leave it empty.",
                )]
            }
            _ => vec![],
        }
    }
}

export_connector!(Gmail);
