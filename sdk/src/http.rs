//! Requests to the provider, through the host.
//!
//! The host resolves relative URLs against the connection's API base URL, enforces the egress
//! list, adds the credential (unless you call [`Request::anonymous`]) and caps response sizes.
//! Do not set `Authorization` or `Cookie` yourself: the host refuses such requests.

use crate::__private::bindings::keyport::connector::http as imp;
use crate::Error;

pub use imp::{Method, SecretRef};

/// A request being built. Send it with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    inner: imp::Request,
}

/// Starts a `GET` request.
pub fn get(url: &str) -> Request {
    Request::new(Method::Get, url)
}

/// Starts a `POST` request.
pub fn post(url: &str) -> Request {
    Request::new(Method::Post, url)
}

impl Request {
    /// Starts a request; `url` is absolute (`https://…`) or relative to the API base URL.
    pub fn new(method: Method, url: &str) -> Self {
        Request {
            inner: imp::Request {
                method,
                url: url.into(),
                headers: Vec::new(),
                body: None,
                authenticate: true,
                form_secrets: Vec::new(),
            },
        }
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner.headers.push((name.into(), value.into()));
        self
    }
    /// Sets a JSON body (and `Content-Type: application/json`).
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.inner.body = Some(body.to_string().into_bytes());
        self.header("content-type", "application/json")
    }
    /// Sets a form body (and its content type).
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.inner.body = Some(body.into_bytes());
        self.header("content-type", "application/x-www-form-urlencoded")
    }
    /// Asks the host to append a secret to the form body as `name=<secret>` (e.g. for token
    /// introspection). You never see the value.
    pub fn form_secret(mut self, name: &str, secret: SecretRef) -> Self {
        if self.inner.body.is_none() {
            self = self.form(&[]);
        }
        self.inner.form_secrets.push((name.into(), secret));
        self
    }
    /// Sends the request without the connection's credential.
    pub fn anonymous(mut self) -> Self {
        self.inner.authenticate = false;
        self
    }
    /// Sends the request through the host.
    pub fn send(self) -> Result<Response, Error> {
        match imp::send(&self.inner) {
            Ok(r) => Ok(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(imp::HttpError::Denied(why)) => Err(Error::provider(format!(
                "request refused by the host: {why}"
            ))),
            Err(imp::HttpError::Timeout) => {
                Err(Error::unavailable("the provider did not answer in time"))
            }
            Err(imp::HttpError::TooLarge(cap)) => Err(Error::provider(format!(
                "the provider's answer exceeded {cap} bytes"
            ))),
            Err(imp::HttpError::Transport(why)) => Err(Error::unavailable(format!(
                "could not reach the provider: {why}"
            ))),
        }
    }
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body (capped by the host).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Turns a non-2xx status into an [`Error`] of the matching kind: 401 unauthorized, 403
    /// insufficient scope, 429 rate limited (with `Retry-After`), 5xx unavailable, else provider.
    pub fn error_for_status(self) -> Result<Self, Error> {
        match self.status {
            200..=299 => Ok(self),
            401 => Err(Error::unauthorized(
                "the provider rejected the credential (HTTP 401)",
            )),
            403 => Err(Error::insufficient_scope(
                "the provider refused access (HTTP 403)",
            )),
            429 => Err(Error::rate_limited(
                self.header("retry-after")
                    .and_then(|v| v.trim().parse().ok()),
            )),
            500..=599 => Err(Error::unavailable(format!(
                "the provider failed (HTTP {})",
                self.status
            ))),
            s => Err(Error::provider(format!("the provider answered HTTP {s}"))),
        }
    }
}

/// Percent-encodes a form component (`application/x-www-form-urlencoded`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
