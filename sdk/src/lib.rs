//! # keyport-sdk
//!
//! Write a keyport connector: a WebAssembly component that describes one provider (its
//! authentication scheme, scopes, API base URL, egress hosts, per-connection config) and
//! implements the few operations that differ from one provider to the next.
//!
//! You implement one trait, [`Connector`], and call one macro, [`export_connector!`]. Build with
//! `cargo build --release --target wasm32-wasip2` and check the result with
//! `keyport connector check target/wasm32-wasip2/release/<name>.wasm`.
//!
//! The host owns every credential. Requests you send with [`http`] reach only the hosts your
//! manifest lists (and the admin granted); the host adds the connection's access token or API key
//! to them, so connector code never sees one.
//!
//! ```no_run
//! use keyport_sdk::{export_connector, http, Account, CallContext, Connector, Error, Manifest};
//!
//! struct Example;
//!
//! impl Connector for Example {
//!     fn describe() -> Manifest {
//!         Manifest::api_key("example", "Example", "Example's REST API")
//!             .api_base_url("https://api.example.com/v1/")
//!             .egress_host("api.example.com")
//!     }
//!
//!     fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
//!         let me: serde_json::Value = http::get("me").send()?.error_for_status()?.json()?;
//!         Ok(Account::new(me["id"].to_string(), me["name"].as_str().unwrap_or("Example")))
//!     }
//! }
//!
//! export_connector!(Example);
//! ```
#![deny(missing_docs)]

extern crate self as keyport_sdk;

/// The complete connector in `sdk/README.md`, compiled and run as a doctest so the README never
/// shows code that does not build.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod manifest;

pub mod http;

/// Generated bindings; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    #[allow(missing_docs, unused_qualifications, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/v0.2.0",
            world: "connector",
            runtime_path: "::keyport_sdk::__private::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "__export_connector_impl",
            default_bindings_module: "::keyport_sdk::__private::bindings",
        });
    }

    use crate::{
        Account, CallContext, Classification, Connector, ConnectorError, FieldError, Manifest,
        ResponseView, TokenSet,
    };
    use std::marker::PhantomData;

    /// Adapts a [`Connector`] to the generated `Guest` trait.
    pub struct Shim<T>(PhantomData<T>);

    impl<T: Connector> bindings::Guest for Shim<T> {
        fn describe() -> Manifest {
            T::describe()
        }

        fn lookup_account(ctx: CallContext) -> Result<Account, ConnectorError> {
            T::lookup_account(&ctx).map_err(Into::into)
        }

        fn validate_config(config: String) -> Vec<FieldError> {
            match serde_json::from_str::<serde_json::Value>(&config) {
                Ok(value) => T::validate_config(&value),
                Err(e) => vec![FieldError {
                    path: String::new(),
                    message: format!("config is not valid JSON: {e}"),
                }],
            }
        }

        fn parse_token_response(
            status: u16,
            body: Vec<u8>,
        ) -> Option<Result<TokenSet, ConnectorError>> {
            T::parse_token_response(status, &body).map(|r| r.map_err(Into::into))
        }

        fn classify_response(response: ResponseView) -> Option<Classification> {
            T::classify_response(&response)
        }

        fn configure(definition: String) -> Result<Manifest, Vec<FieldError>> {
            match serde_json::from_str::<serde_json::Value>(&definition) {
                Ok(value) if value.is_object() => T::configure(&value),
                Ok(_) => Err(vec![FieldError {
                    path: String::new(),
                    message: "the definition must be a JSON object".into(),
                }]),
                Err(e) => Err(vec![FieldError {
                    path: String::new(),
                    message: format!("the definition is not valid JSON: {e}"),
                }]),
            }
        }
    }
}

pub use __private::bindings::keyport::connector::types::{
    Account, ApiKey, AuthScheme, CallContext, Classification, ClientAuth, ConnectorError,
    CredentialPlacement, ErrorKind, FieldError, Manifest, Oauth2, ResponseView, Scope, TokenBody,
    TokenPaths, TokenSet,
};

/// Write to the host's log, tagged with the connector's id. Never log secrets: the host never
/// gives you any, keep it that way with what users type in config.
pub mod log {
    use crate::__private::bindings::keyport::connector::log as imp;

    /// Log at debug level.
    pub fn debug(message: &str) {
        imp::log(imp::Level::Debug, message)
    }
    /// Log at info level.
    pub fn info(message: &str) {
        imp::log(imp::Level::Info, message)
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        imp::log(imp::Level::Warn, message)
    }
    /// Log at error level.
    pub fn error(message: &str) {
        imp::log(imp::Level::Error, message)
    }
}

/// A provider. Implement this and export it with [`export_connector!`].
///
/// Only [`describe`](Connector::describe) and [`lookup_account`](Connector::lookup_account) are
/// required; the rest have defaults that suit providers following the standards.
pub trait Connector {
    /// The manifest. Called once when the host loads the connector; keep it deterministic.
    fn describe() -> Manifest;

    /// Who the connection's credential belongs to: what "Connected as …" shows. Send requests with
    /// [`http`]; the host adds the credential.
    fn lookup_account(ctx: &CallContext) -> Result<Account, Error>;

    /// Checks a config (a JSON object that already passed the manifest's JSON Schema) for problems
    /// the schema cannot express. Default: no further checks.
    fn validate_config(config: &serde_json::Value) -> Vec<FieldError> {
        let _ = config;
        Vec::new()
    }

    /// Reads a token response the standard reader cannot (HTTP 200 with an error inside, tokens
    /// at unusual places). Return `None` for the standard reading. Runs with [`http`] and [`log`]
    /// disabled. Default: `None`.
    fn parse_token_response(status: u16, body: &[u8]) -> Option<Result<TokenSet, Error>> {
        let _ = (status, body);
        None
    }

    /// For parameterised connectors (one component serving many providers): checks an
    /// admin-supplied definition and returns the manifest of the provider it describes, or errors
    /// per field (JSON Pointers). Calls made for that provider see the definition in
    /// [`CallContext::definition`]. Default: this connector takes no definition.
    fn configure(definition: &serde_json::Value) -> Result<Manifest, Vec<FieldError>> {
        let _ = definition;
        Err(vec![FieldError::new(
            "",
            "this connector takes no definition",
        )])
    }

    /// Classifies a provider answer the HTTP status does not describe truthfully (an HTTP 200
    /// whose body says the token expired). Return `None` to classify by status. Default: `None`.
    fn classify_response(response: &ResponseView) -> Option<Classification> {
        let _ = response;
        None
    }
}

/// Exports a [`Connector`] implementation as the component's `connector` world.
///
/// Call it once, at the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[doc(hidden)]
        type __KeyportConnector = $crate::__private::Shim<$connector>;
        $crate::__private::bindings::__export_connector_impl!(
            __KeyportConnector with_types_in $crate::__private::bindings
        );
    };
}

/// A connector failure: what kind, and a message for people. Never put secrets in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind; the host decides the connection's status from it.
    pub kind: ErrorKind,
    /// What happened and, where possible, what to do.
    pub message: String,
    /// Seconds to wait before retrying, when the provider said.
    pub retry_after: Option<u32>,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    /// The credential was rejected; a refresh may help.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// The grant or key is dead; the user must reconnect.
    pub fn revoked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Revoked, message)
    }
    /// The credential lacks a permission.
    pub fn insufficient_scope(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InsufficientScope, message)
    }
    /// Slow down, and retry after `retry_after` seconds when known.
    pub fn rate_limited(retry_after: Option<u32>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                ErrorKind::RateLimited,
                "the provider is rate limiting requests",
            )
        }
    }
    /// The connection's config is wrong.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }
    /// A transient failure; retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// Any other provider error.
    pub fn provider(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Provider, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        ConnectorError {
            kind: e.kind,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl From<ConnectorError> for Error {
    fn from(e: ConnectorError) -> Self {
        Error {
            kind: e.kind,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::provider(format!(
            "the provider's answer is not the expected JSON: {e}"
        ))
    }
}

impl Account {
    /// An account with an external id and a display name.
    pub fn new(external_id: impl Into<String>, display_name: impl Into<String>) -> Self {
        Account {
            external_id: external_id.into(),
            display_name: display_name.into(),
            email: None,
        }
    }
    /// Adds the account's email address.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }
}

impl CallContext {
    /// The connection's effective config as JSON (an empty object when unparsable).
    pub fn config(&self) -> serde_json::Value {
        parse_object(&self.config)
    }
    /// Non-secret metadata kept from the token response, as JSON.
    pub fn metadata(&self) -> serde_json::Value {
        parse_object(&self.metadata)
    }
    /// The definition this connector was configured with (parameterised connectors), as JSON.
    pub fn definition(&self) -> serde_json::Value {
        parse_object(&self.definition)
    }
}

impl TokenSet {
    /// A token set with just an access token.
    pub fn new(access_token: impl Into<String>) -> Self {
        TokenSet {
            access_token: access_token.into(),
            token_type: None,
            refresh_token: None,
            expires_in: None,
            refresh_token_expires_in: None,
            scopes: None,
            metadata: String::new(),
        }
    }
}

impl FieldError {
    /// An error at a JSON Pointer (`/default_channel`).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ResponseView {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_object(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
}
