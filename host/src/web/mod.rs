//! HTTP plumbing shared by the JSON API ([`crate::api`]) and the pages ([`crate::ui`]): the
//! state handlers share, the error every rejection renders to, the body extractor, and the
//! extractor that turns a request into an authenticated [`Caller`] through [`crate::auth`].
//! Neither `api` nor `ui` imports the other; both import this.
//!
//! Errors are `{"error": {"code", "message"}}` with a message that says what to do. Request bodies
//! are capped at 256 KiB.

pub mod balanced;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{AuthError, Caller, CallerCache};
use crate::connections::{Error as ServiceError, Service};
use crate::registry::Registry;

/// What handlers share: one allocation, so the clone each request's extractors take is one
/// reference count (its fields are [`Shared`]'s, reached through `Deref`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
pub struct Shared {
    /// Loaded connectors.
    pub registry: Arc<Registry>,
    /// The connection lifecycle.
    pub service: Arc<Service>,
    /// Renders the Prometheus metrics (none when no recorder is installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// API credentials recently checked.
    pub callers: Arc<CallerCache>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`KEYPORT_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Sends invitations (`KEYPORT_SMTP_URL`), when configured.
    pub mailer: Option<Arc<crate::mail::Mailer>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state over its parts.
    pub fn new(
        registry: Arc<Registry>,
        service: Arc<Service>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        trusted_proxies: Vec<ipnet::IpNet>,
        mailer: Option<Arc<crate::mail::Mailer>>,
    ) -> Self {
        AppState(Arc::new(Shared {
            registry,
            service,
            metrics,
            callers: Arc::default(),
            mailer,
            trusted_proxies: Arc::new(trusted_proxies),
        }))
    }

    /// The address a request's failed attempts count against (see [`crate::auth::limiter`]).
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &HeaderMap) -> std::net::IpAddr {
        crate::auth::limiter::client_ip(peer, headers, &self.trusted_proxies)
    }
}

/// The whole application: `routes` (the API's and the pages'), a JSON 404 for anything else, the
/// body limit and the URL limit.
pub fn app(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { ApiError::not_found("no such endpoint; the API lives under /api/v1") })
        .layer(DefaultBodyLimit::max(256 * 1024))
        .layer(axum::middleware::from_fn(limit_uri))
        .with_state(state)
}

/// The longest request URL (path and query) served. Longer ones get the documented JSON 414
/// here, well below the HTTP layer's own limit (64 KiB), which answers 414 without a body.
pub const MAX_URI_BYTES: usize = 16 * 1024;

async fn limit_uri(req: Request, next: axum::middleware::Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request URL is {len} bytes; keep it under {} KiB and send large inputs in a JSON body",
                MAX_URI_BYTES / 1024
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// An API error, rendered once here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<(String, String)>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: vec![],
            retry_after: None,
        }
    }
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 405 with the `Allow` header listing `allowed`.
    pub fn method_not_allowed(message: impl Into<String>, allowed: &str) -> Response {
        let mut r = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(allowed) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        r
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ServiceError::BadRequest(_) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            ServiceError::Invalid { fields, .. } => ApiError {
                fields,
                ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            },
            ServiceError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            ServiceError::Forbidden(m) => ApiError::forbidden(m),
            ServiceError::Upstream(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "provider_error", message)
            }
            ServiceError::Unavailable {
                retry_after_secs, ..
            } => ApiError {
                retry_after: Some(retry_after_secs),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            },
            ServiceError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(m) => ApiError::unauthorized(m),
            AuthError::Forbidden(m) => ApiError::forbidden(m),
            AuthError::TooManyAttempts(m) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m)
            }
            AuthError::Service(e) => e.into(),
        }
    }
}

/// A JSON answer written into one buffer of about `size_hint` bytes. For long answers (pages of
/// connections) this spares the many small appends and regrowths of a buffer that starts small
/// (axum's `Json` starts at 128 bytes).
pub fn json_sized<T: serde::Serialize>(value: &T, size_hint: usize) -> Response {
    let mut body = Vec::with_capacity(size_hint);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an answer could not be written as JSON");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
            .into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.fields.is_empty() {
            error["fields"] = self
                .fields
                .iter()
                .map(|(p, m)| json!({"path": p, "message": m}))
                .collect();
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// `Json` whose rejections are API errors that say what is wrong with the body.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid JSON body: {}",
                e.body_text()
            ))),
        }
    }
}

/// `Query` whose rejections are API errors that say which parameter is wrong.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid query string: {}",
                e.body_text()
            ))),
        }
    }
}

/// `Path` whose rejections are API errors.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                e.body_text()
            ))),
        }
    }
}

/// A raw request body whose rejections (413 past the limit) are API errors.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S> FromRequest<S> for ApiBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(ApiBytes(b)),
            Err(e) => Err(ApiError::new(
                e.status(),
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "bad_request"
                },
                format!("the request body was not read: {}", e.body_text()),
            )),
        }
    }
}

/// Turns the error answers the router makes by itself (405 for a method a route does not take,
/// 413 and others from extractors outside these wrappers) into the documented JSON error. Answers
/// that already carry a body type pass unchanged, and so does everything the proxy streams back
/// from a provider.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let proxied = req.uri().path().contains("/proxy");
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    // Only answers without a body type of their own, or with the router's plain text.
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/plain"));
    if proxied || !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "{method} is not allowed here{}",
                allow
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .map(|a| format!("; use {a}"))
                    .unwrap_or_default()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than this endpoint takes (256 KiB)".to_string(),
        ),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URL is too long".to_string()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json".to_string(),
        ),
        s if s.is_server_error() => ("internal", "internal error; see the server log".to_string()),
        _ => ("bad_request", "the request was not understood".to_string()),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let client = state.client_ip(peer, &parts.headers);
        let caller =
            crate::auth::caller_of(&state.service, &state.callers, &parts.headers, client).await?;
        if !crate::auth::may_reach(&caller.principal, &parts.method, parts.uri.path()) {
            return Err(ApiError::forbidden(
                "clients use the portal: /api/v1/portal, their connection requests and their own connections",
            ));
        }
        Ok(caller)
    }
}

/// Marks a browser-facing OAuth answer as never to be cached or sent on as a referrer (O8).
pub fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
