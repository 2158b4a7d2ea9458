//! `/api/v1/admin` handlers (admin token only): custom OAuth providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::Caller;

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
        .import_provider(&caller.principal, object(body)?, None)
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
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.provider_view(&id).await?))
}

/// `PUT /api/v1/admin/providers/{id}`: replace the definition.
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(
        s.service
            .import_provider(&caller.principal, object(body)?, Some(&id))
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
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Force>,
) -> R<StatusCode> {
    caller.require_admin()?;
    s.service
        .delete_provider(&caller.principal, &id, q.force)
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
            .import_provider_file(&caller.principal, file)
            .await?,
    ))
}

/// Largest component an upload may carry.
pub const UPLOAD_MAX: usize = 32 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Comma-separated egress hosts granted with the upload.
    #[serde(default)]
    grant: String,
}

/// `POST /api/v1/admin/connectors?grant=host,…`: the body is the `.wasm` component.
pub async fn upload_connector(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    req: axum::extract::Request,
) -> R<impl IntoResponse> {
    caller.require_admin()?;
    let bytes = axum::body::to_bytes(req.into_body(), UPLOAD_MAX)
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "send the component as the request body, at most {} MiB",
                UPLOAD_MAX >> 20
            ))
        })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send the .wasm file (curl --data-binary @connector.wasm)",
        ));
    }
    let grant: Vec<String> = q
        .grant
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    let v = s
        .service
        .upload_connector(&caller.actor, &bytes, &grant)
        .await?;
    let status = if v["status"] == "active" {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(v)))
}

/// `GET /api/v1/admin/connectors`: loaded connectors, waiting uploads, directory problems.
pub async fn list_connectors(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.loaded_connectors().await?))
}

/// `DELETE /api/v1/admin/connectors/{id}?force=`.
pub async fn unload_connector(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Force>,
) -> R<StatusCode> {
    caller.require_admin()?;
    s.service
        .unload_connector(&caller.actor, &id, q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/admin/connectors/{id}/rollback`.
pub async fn rollback_connector(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(
        s.service.rollback_connector(&caller.actor, &id).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    hosts: Vec<String>,
}

/// `POST /api/v1/admin/connectors/{id}/approve {hosts}`: grants egress hosts.
pub async fn approve_connector(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(a): ApiJson<Approve>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(
        s.service
            .approve_connector(&caller.actor, &id, &a.hosts)
            .await?,
    ))
}

/// `PUT /api/v1/admin/sso {issuer, client_id, client_secret?, allow_signup?, signup_workspace?,
/// signup_role?, token_auth?}`: single sign-on for the installation (installation admins).
pub async fn put_sso(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<crate::auth::sso::SsoInput>,
) -> R<Json<Value>> {
    Ok(Json(
        crate::auth::sso::configure(&s.service, &caller.principal, input).await?,
    ))
}

/// `GET /api/v1/admin/sso`.
pub async fn get_sso(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(
        crate::auth::sso::view(&s.service, &caller.principal).await?,
    ))
}

/// `DELETE /api/v1/admin/sso`: password and admin-token sign-in only.
pub async fn delete_sso(State(s): State<AppState>, caller: Caller) -> R<StatusCode> {
    crate::auth::sso::remove(&s.service, &caller.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/catalogue`: the provider catalogue for this workspace (workspace admins).
pub async fn catalogue(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(s.service.catalogue_view(&caller.principal).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntryPatch {
    hidden: bool,
}

/// `PUT /api/v1/admin/catalogue/{id}` `{"hidden": bool}`: hide an integration in this workspace
/// (or show it again).
pub async fn put_catalogue_entry(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CatalogueEntryPatch>,
) -> R<Json<Value>> {
    Ok(Json(
        s.service
            .set_catalogue_hidden(&caller.principal, &id, body.hidden)
            .await?,
    ))
}
