//! `/api/v1/admin` handlers (admin token only): custom OAuth providers.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::{ApiError, ApiJson, AppState};

type R<T> = Result<T, ApiError>;

fn object(v: Value) -> R<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request(
            "send a JSON object: a provider definition, or an issuer to discover it from",
        )),
    }
}

/// `POST /api/v1/admin/providers`: import by definition or by issuer discovery.
pub async fn import(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> R<impl IntoResponse> {
    caller.require_admin()?;
    let v = s
        .service
        .import_provider(&caller.workspace, &caller.actor, object(body)?, None)
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/admin/providers`.
pub async fn list(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.list_providers().await?))
}

/// `GET /api/v1/admin/providers/{id}`.
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.provider_view(&id).await?))
}

/// `PUT /api/v1/admin/providers/{id}`: replace the definition.
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(
        s.service
            .import_provider(&caller.workspace, &caller.actor, object(body)?, Some(&id))
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Force {
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/admin/providers/{id}?force=`.
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<Force>,
) -> R<StatusCode> {
    caller.require_admin()?;
    s.service
        .delete_provider(&caller.workspace, &caller.actor, &id, q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/providers/export`: every definition, no client credentials.
pub async fn export(State(s): State<AppState>, caller: Caller) -> R<impl IntoResponse> {
    caller.require_admin()?;
    let v = s.service.export_providers().await?;
    Ok((
        [(
            http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"keyport-providers.json\"",
        )],
        Json(v),
    ))
}

/// `POST /api/v1/admin/providers/import`: an export document.
pub async fn import_file(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(file): ApiJson<Value>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(
        s.service
            .import_provider_file(&caller.workspace, &caller.actor, file)
            .await?,
    ))
}
