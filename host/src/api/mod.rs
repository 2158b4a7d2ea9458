//! The HTTP surface: JSON API under `/api/v1`, the OAuth endpoints, health, and the start page.
//!
//! Errors are `{"error": {"code", "message"}}` with a message that says what to do. Request bodies
//! are capped at 256 KiB.

mod admin;
pub mod auth;
mod connections;
mod oauth;
mod usage;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::connections::{Error as ServiceError, Service};
use crate::registry::Registry;
use crate::runtime::manifest_json;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Loaded connectors.
    pub registry: Arc<Registry>,
    /// The connection lifecycle.
    pub service: Arc<Service>,
    /// Renders the Prometheus metrics (none when no recorder is installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// An API error, rendered once here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<(String, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: vec![],
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
    /// From a store error (logged; the client gets a generic message).
    pub fn from_store(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
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
            ServiceError::Upstream(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "provider_error", message)
            }
            ServiceError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
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
        (self.status, Json(json!({ "error": error }))).into_response()
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

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/connectors", get(list_connectors))
        .route("/api/v1/connectors/{id}", get(get_connector))
        .route(
            "/api/v1/workspaces",
            post(connections::create_workspace).get(connections::list_workspaces),
        )
        .route("/api/v1/api-keys", post(connections::create_api_key))
        .route(
            "/api/v1/provider-apps/{connector}",
            put(connections::put_provider_app).get(connections::get_provider_app),
        )
        .route(
            "/api/v1/connections",
            get(connections::list).post(connections::create),
        )
        .route(
            "/api/v1/connections/oauth/start",
            post(connections::start_oauth),
        )
        .route(
            "/api/v1/connections/{id}",
            get(connections::get)
                .patch(connections::patch)
                .delete(connections::delete),
        )
        .route(
            "/api/v1/connections/{id}/config",
            get(connections::config_get).post(connections::config_post),
        )
        .route(
            "/api/v1/connections/{id}/refresh",
            post(connections::refresh),
        )
        .route(
            "/api/v1/connections/{id}/reconnect",
            post(connections::reconnect),
        )
        .route("/api/v1/connections/{id}/revoke", post(connections::revoke))
        .route(
            "/api/v1/connections/{id}/dependents",
            get(connections::dependents),
        )
        .route(
            "/api/v1/connections/{id}/dependents/{dep}",
            put(connections::add_dependent).delete(connections::remove_dependent),
        )
        .route("/api/v1/connections/{id}/audit", get(connections::audit))
        .route(
            "/api/v1/connections/{id}/credentials",
            get(usage::credentials),
        )
        .route("/api/v1/connections/{id}/proxy", any(usage::proxy))
        .route("/api/v1/connections/{id}/proxy/{*path}", any(usage::proxy))
        .route("/api/v1/audit", get(usage::audit))
        .route(
            "/api/v1/admin/providers",
            post(admin::import).get(admin::list),
        )
        .route(
            "/api/v1/admin/connectors",
            post(admin::upload_connector).get(admin::list_connectors),
        )
        .route(
            "/api/v1/admin/connectors/{id}",
            delete(admin::unload_connector),
        )
        .route(
            "/api/v1/admin/connectors/{id}/rollback",
            post(admin::rollback_connector),
        )
        .route(
            "/api/v1/admin/connectors/{id}/approve",
            post(admin::approve_connector),
        )
        .route("/api/v1/admin/providers/export", get(admin::export))
        .route("/api/v1/admin/providers/import", post(admin::import_file))
        .route(
            "/api/v1/admin/providers/{id}",
            get(admin::get).put(admin::update).delete(admin::delete),
        )
        .route(
            "/api/v1/webhooks",
            post(usage::create_webhook).get(usage::list_webhooks),
        )
        .route("/api/v1/webhooks/{id}", delete(usage::delete_webhook))
        .route("/api/v1/webhooks/{id}/deliveries", get(usage::deliveries))
        .route("/oauth/launch/{token}", get(oauth::launch))
        .route("/oauth/callback", get(oauth::callback))
        .route("/oauth/done", get(oauth::done))
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint; the API lives under /api/v1") })
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

/// `GET /metrics`, Prometheus text format: refreshes by outcome, refresh latency, the due
/// backlog and the age of the oldest overdue refresh. No secrets, no per-connection labels.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return ApiError::not_found("metrics are not enabled in this process").into_response();
    };
    let now = crate::store::now_ms();
    if let Ok((due, oldest)) = state.service.store.refresh_backlog(now).await {
        metrics::gauge!("keyport_refresh_due_backlog").set(due as f64);
        let age = oldest
            .map(|t| (now - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("keyport_refresh_oldest_overdue_seconds").set(age);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn list_connectors(State(state): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<_> = state
        .registry
        .all()
        .iter()
        .map(|e| {
            let mut v = manifest_json(&e.connector);
            v["source"] = json!(e.source);
            v
        })
        .collect();
    Json(json!({ "connectors": list }))
}

async fn get_connector(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let e = state.registry.get(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no connector {id:?}; GET /api/v1/connectors lists the loaded ones"
        ))
    })?;
    let mut v = manifest_json(&e.connector);
    v["source"] = json!(e.source);
    Ok(Json(v))
}

/// The request's cookies by name.
pub(crate) fn cookies(headers: &HeaderMap) -> std::collections::HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
