//! A real SMTP server for the tests: `aiosmtpd` (PyPI, pinned in `tests/smtp/requirements.txt`)
//! on loopback with its Maildir handler. The harness creates the virtualenv in `tests/smtp/.venv`
//! the first time (`python3 -m venv` and `pip install`), the way it runs `npm ci` for the OAuth
//! server.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    super::python::venv("smtp", "aiosmtpd", "the mail tests")
}

/// A running SMTP server that keeps every message it receives.
pub struct Smtp {
    child: Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Smtp {
        let py = python();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(py)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "aiosmtpd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp {
            child,
            port,
            maildir,
        }
    }

    /// What keyport's `KEYPORT_SMTP_URL` is set to.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, decoded (quoted-printable soft breaks joined).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(dir) = std::fs::read_dir(self.maildir.path().join("mail").join(sub)) else {
                continue;
            };
            for e in dir.flatten() {
                if let Ok(raw) = std::fs::read_to_string(e.path()) {
                    out.push(decode_qp(&raw));
                }
            }
        }
        out
    }

    /// The first message to `to`, waiting up to ten seconds for it.
    pub async fn wait_for(&self, to: &str) -> String {
        let t = Instant::now();
        loop {
            if let Some(m) = self
                .messages()
                .into_iter()
                .find(|m| m.lines().any(|l| l.starts_with("To:") && l.contains(to)))
            {
                return m;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no mail to {to} arrived; got {:?}",
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Joins quoted-printable soft line breaks and decodes `=XX` (enough to read a link).
fn decode_qp(raw: &str) -> String {
    if !raw.to_ascii_lowercase().contains("quoted-printable") {
        return raw.to_string();
    }
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The invitation link in a message.
pub fn link_in(message: &str) -> String {
    message
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("/invite#"))
        .unwrap_or_else(|| panic!("no invitation link in {message}"))
        .to_string()
}
