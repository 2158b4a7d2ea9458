//! Components built against `keyport:connector@0.1.0`.
//!
//! The host links both contracts: a 0.1.0 component's imports (`http`, `log`) are served by the
//! same implementation as 0.2.0's, and its exports are adapted to the 0.2.0 types, so the rest of
//! the host sees one contract. The two versions' shared types have the same shape; they are
//! converted through their serde form, and the fields 0.1.0 lacks get their empty value
//! (`manifest.categories`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::HostState;
use super::bindings::keyport::connector as current;

/// Host bindings for `keyport:connector@0.1.0` (frozen).
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "connector",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

use bindings::keyport::connector as v0_1;

/// Converts between same-shaped types of the two contract versions.
pub(super) fn convert<A: Serialize, B: DeserializeOwned>(value: A) -> wasmtime::Result<B> {
    let json = serde_json::to_value(value)?;
    serde_json::from_value(json)
        .map_err(|e| wasmtime::format_err!("adapting a keyport:connector@0.1.0 value: {e}"))
}

/// A 0.1.0 manifest as a 0.2.0 one: no categories.
pub(super) fn manifest(m: v0_1::types::Manifest) -> wasmtime::Result<super::Manifest> {
    let mut json = serde_json::to_value(m)?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("categories".into(), serde_json::Value::Array(Vec::new()));
    }
    convert(json)
}

/// A provider answer for a 0.1.0 `classify-response` (bodies are not sent through serde).
pub(super) fn response_view(r: super::ResponseView) -> v0_1::types::ResponseView {
    v0_1::types::ResponseView {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

impl v0_1::types::Host for HostState {}

impl v0_1::log::Host for HostState {
    async fn log(&mut self, level: v0_1::log::Level, message: String) {
        use current::log::{Host, Level};
        let level = match level {
            v0_1::log::Level::Trace => Level::Trace,
            v0_1::log::Level::Debug => Level::Debug,
            v0_1::log::Level::Info => Level::Info,
            v0_1::log::Level::Warn => Level::Warn,
            v0_1::log::Level::Error => Level::Error,
        };
        Host::log(self, level, message).await
    }
}

impl v0_1::http::Host for HostState {
    async fn send(
        &mut self,
        request: v0_1::http::Request,
    ) -> Result<v0_1::http::Response, v0_1::http::HttpError> {
        use current::http::{Host, HttpError, Method, Request, SecretRef};
        use v0_1::http as old;
        let method = match request.method {
            old::Method::Get => Method::Get,
            old::Method::Post => Method::Post,
            old::Method::Put => Method::Put,
            old::Method::Patch => Method::Patch,
            old::Method::Delete => Method::Delete,
            old::Method::Head => Method::Head,
        };
        let form_secrets = request
            .form_secrets
            .into_iter()
            .map(|(name, secret)| {
                let secret = match secret {
                    old::SecretRef::AccessToken => SecretRef::AccessToken,
                    old::SecretRef::RefreshToken => SecretRef::RefreshToken,
                    old::SecretRef::ApiKey => SecretRef::ApiKey,
                    old::SecretRef::ClientId => SecretRef::ClientId,
                    old::SecretRef::ClientSecret => SecretRef::ClientSecret,
                };
                (name, secret)
            })
            .collect();
        let request = Request {
            method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            authenticate: request.authenticate,
            form_secrets,
        };
        match Host::send(self, request).await {
            Ok(r) => Ok(old::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(HttpError::Denied(why)) => Err(old::HttpError::Denied(why)),
            Err(HttpError::Timeout) => Err(old::HttpError::Timeout),
            Err(HttpError::TooLarge(n)) => Err(old::HttpError::TooLarge(n)),
            Err(HttpError::Transport(why)) => Err(old::HttpError::Transport(why)),
        }
    }
}
