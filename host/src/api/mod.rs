//! The JSON API under `/api/v1`, the browser's OAuth endpoints (launch, callback), health and
//! metrics. Handlers turn requests into calls on the lifecycle ([`crate::connections::Service`])
//! and its answers into JSON; they decide nothing and never touch the store. Errors render through
//! [`crate::web::ApiError`].

mod admin;
mod connections;
mod oauth;
mod people;
mod requests;
mod usage;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::Caller;
use crate::runtime::manifest_json;
use crate::web::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery, AppState};

/// The API's routes (mounted with the pages' by [`crate::web::app`]).
/// A JSON body that may be left out: empty (or only whitespace) means the type's default.
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub fn routes() -> Router<AppState> {
    api_routes().layer(axum::middleware::from_fn(crate::web::json_errors))
}

fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/connectors", get(list_connectors))
        .route("/api/v1/connectors/{id}", get(get_connector))
        .route(
            "/api/v1/workspaces",
            post(connections::create_workspace).get(connections::list_workspaces),
        )
        .route(
            "/api/v1/api-keys",
            post(connections::create_api_key).get(people::list_api_keys),
        )
        .route("/api/v1/api-keys/{id}", delete(people::delete_api_key))
        .route(
            "/api/v1/connection-requests",
            post(requests::create).get(requests::list),
        )
        .route("/api/v1/connection-requests/join", post(requests::join))
        .route("/api/v1/connection-requests/{id}", get(requests::get))
        .route(
            "/api/v1/connection-requests/{id}/cancel",
            post(requests::cancel),
        )
        .route(
            "/api/v1/connection-requests/{id}/resend",
            post(requests::resend),
        )
        .route(
            "/api/v1/connection-requests/{id}/connect",
            post(requests::connect),
        )
        .route("/api/v1/portal", get(requests::portal))
        .route("/api/v1/auth/password", post(people::password_sign_in))
        .route("/api/v1/auth/email-link", post(people::email_link))
        .route("/api/v1/auth/email-link/use", post(people::use_email_link))
        .route("/api/v1/workspaces/{ws}", patch(people::patch_workspace))
        .route(
            "/api/v1/auth/password/change",
            post(people::change_password),
        )
        .route(
            "/api/v1/auth/sign-out-everywhere",
            post(people::sign_out_everywhere),
        )
        .route("/api/v1/me", get(people::me))
        .route(
            "/api/v1/users",
            post(people::create_user).get(people::list_users),
        )
        .route("/api/v1/users/{id}", patch(people::patch_user))
        .route("/api/v1/workspaces/{ws}/members", get(people::members))
        .route(
            "/api/v1/workspaces/{ws}/members/{user}",
            get(people::member)
                .put(people::put_member)
                .delete(people::delete_member),
        )
        .route(
            "/api/v1/invitations",
            post(people::invite).get(people::list_invitations),
        )
        .route(
            "/api/v1/invitations/lookup",
            post(people::lookup_invitation),
        )
        .route(
            "/api/v1/invitations/accept",
            post(people::accept_invitation),
        )
        .route(
            "/api/v1/invitations/{id}",
            delete(people::delete_invitation),
        )
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
            "/api/v1/connections/{id}/api-key",
            put(connections::replace_api_key),
        )
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
        .route(
            "/api/v1/admin/sso",
            put(admin::put_sso)
                .get(admin::get_sso)
                .delete(admin::delete_sso),
        )
        .route("/api/v1/admin/catalogue", get(admin::catalogue))
        .route(
            "/api/v1/admin/catalogue/{id}",
            put(admin::put_catalogue_entry),
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
}

/// `GET /metrics`, Prometheus text format: refreshes by outcome, refresh latency, the due
/// backlog and the age of the oldest overdue refresh. No secrets, no per-connection labels.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return ApiError::not_found("metrics are not enabled in this process").into_response();
    };
    let now = crate::model::now_ms();
    if let Ok((due, oldest)) = state.service.refresh_backlog(now).await {
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

/// `GET /api/v1/connectors`: any authenticated caller (manifests carry static headers and token
/// parameters, which may be secret to the operator).
async fn list_connectors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Integrations hidden in the workspace are listed (marked) only to those who may show them.
    let hidden = state
        .service
        .hidden_connectors(&caller.principal.workspace)
        .await?;
    let admin = caller.principal.may_administer(true, "").is_ok();
    let list: Vec<_> = state
        .registry
        .all()
        .iter()
        .filter_map(|e| {
            let is_hidden = hidden.contains(&e.connector.manifest().id);
            if is_hidden && !admin {
                return None;
            }
            let mut v = manifest_json(&e.connector);
            v["source"] = json!(e.source);
            v["hidden"] = json!(is_hidden);
            Some(v)
        })
        .collect();
    Ok(Json(json!({ "connectors": list })))
}

async fn get_connector(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
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
