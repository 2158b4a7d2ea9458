//! The JSON API under `/api/v1`, the browser's OAuth endpoints (launch, callback), health and
//! metrics. Handlers turn requests into calls on the lifecycle ([`crate::connections::Service`])
//! and its answers into JSON; they decide nothing and never touch the store. Errors render through
//! [`crate::web::ApiError`].

mod admin;
mod connections;
mod oauth;
pub mod openapi;
mod people;
mod reference;
mod requests;
pub mod schema;
mod usage;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::runtime::manifest_json;
use crate::web::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery, AppState};

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

/// The API's routes (mounted with the pages' by [`crate::web::app`]).
pub fn routes() -> Router<AppState> {
    let (api, doc) = api_router().split_for_parts();
    // The router describes itself as it is built: keep that description rather than build it
    // again for `/api/v1/openapi.json`.
    DOC.get_or_init(|| openapi::finish(doc));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/reference", get(reference::page))
        .route("/api/v1/connections/{id}/proxy", any(usage::proxy))
        .route("/api/v1/connections/{id}/proxy/{*path}", any(usage::proxy))
        .route("/oauth/launch/{token}", get(oauth::launch))
        .route("/oauth/callback", get(oauth::callback))
        .merge(api)
        .layer(axum::middleware::from_fn(crate::web::json_errors))
}

/// The OpenAPI document of `/api/v1` ([`openapi`]), built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    DOC.get_or_init(|| openapi::finish(api_router().split_for_parts().1))
}

static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// `GET /api/v1/openapi.json`: the document, for code generators, Schemathesis and the
/// reference page (`/api/reference`). Public: it describes the API, never an installation.
async fn openapi_json() -> Response {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = JSON.get_or_init(|| document().to_json().unwrap_or_default());
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body.as_str(),
    )
        .into_response()
}

/// Every `/api/v1` operation, each registered from its `#[utoipa::path]` (the proxy, which takes
/// any method, is routed by [`routes`] and described through [`openapi::ApiDoc`]).
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(list_connectors))
        .routes(routes!(get_connector))
        .routes(routes!(
            connections::create_workspace,
            connections::list_workspaces
        ))
        .routes(routes!(people::patch_workspace))
        .routes(routes!(connections::create_api_key, people::list_api_keys))
        .routes(routes!(people::delete_api_key))
        .routes(routes!(requests::create, requests::list))
        .routes(routes!(requests::join))
        .routes(routes!(requests::get))
        .routes(routes!(requests::cancel))
        .routes(routes!(requests::resend))
        .routes(routes!(requests::connect))
        .routes(routes!(requests::portal))
        .routes(routes!(people::password_sign_in))
        .routes(routes!(people::email_link))
        .routes(routes!(people::use_email_link))
        .routes(routes!(people::change_password))
        .routes(routes!(people::sign_out_everywhere))
        .routes(routes!(people::me))
        .routes(routes!(people::create_user, people::list_users))
        .routes(routes!(people::patch_user))
        .routes(routes!(people::members))
        .routes(routes!(
            people::member,
            people::put_member,
            people::delete_member
        ))
        .routes(routes!(people::invite, people::list_invitations))
        .routes(routes!(people::lookup_invitation))
        .routes(routes!(people::accept_invitation))
        .routes(routes!(people::delete_invitation))
        .routes(routes!(
            connections::put_provider_app,
            connections::get_provider_app
        ))
        .routes(routes!(connections::list, connections::create))
        .routes(routes!(connections::start_oauth))
        .routes(routes!(
            connections::get,
            connections::patch,
            connections::delete
        ))
        .routes(routes!(connections::config_get, connections::config_post))
        .routes(routes!(connections::refresh))
        .routes(routes!(connections::reconnect))
        .routes(routes!(connections::revoke))
        .routes(routes!(connections::replace_api_key))
        .routes(routes!(connections::dependents))
        .routes(routes!(
            connections::add_dependent,
            connections::remove_dependent
        ))
        .routes(routes!(connections::audit))
        .routes(routes!(usage::credentials))
        .routes(routes!(usage::audit))
        .routes(routes!(admin::import, admin::list))
        .routes(routes!(admin::upload_connector, admin::list_connectors))
        .routes(routes!(admin::unload_connector))
        .routes(routes!(admin::rollback_connector))
        .routes(routes!(admin::approve_connector))
        .routes(routes!(admin::put_sso, admin::get_sso, admin::delete_sso))
        .routes(routes!(admin::catalogue))
        .routes(routes!(admin::put_catalogue_entry))
        .routes(routes!(admin::export))
        .routes(routes!(admin::import_file))
        .routes(routes!(admin::get, admin::update, admin::delete))
        .routes(routes!(usage::create_webhook, usage::list_webhooks))
        .routes(routes!(usage::delete_webhook))
        .routes(routes!(usage::deliveries))
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
#[utoipa::path(
    get,
    path = "/api/v1/connectors",
    operation_id = "list_connectors",
    tag = "connectors",
    summary = "The loaded connectors and their manifests",
    responses(
        (status = 200, description = "The connectors", body = schema::Connectors)
    ),
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/connectors/{id}",
    tag = "connectors",
    summary = "One connector's manifest",
    params(("id" = String, Path, description = "The connector's id (`slack`, `github`, …).")),
    responses(
        (status = 200, description = "The manifest", body = schema::Connector)
    ),
)]
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
