//! `/api/v1/admin` handlers (admin token only): custom OAuth providers.

use super::schema;
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
#[utoipa::path(
    post,
    path = "/api/v1/admin/providers",
    operation_id = "import_provider",
    tag = "admin",
    summary = "Imports a custom OAuth provider from a definition or an issuer to discover",
    request_body = schema::ProviderDefinition,
    responses(
        (status = 201, description = "The provider", body = schema::Provider),
        (status = 409, description = "The id is taken"),
        (status = 502, description = "The issuer's discovery document could not be fetched")
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/admin/providers",
    operation_id = "list_providers",
    tag = "admin",
    summary = "Every custom provider",
    responses(
        (status = 200, description = "The providers", body = schema::Providers)
    ),
)]
pub async fn list(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.list_providers().await?))
}

/// `GET /api/v1/admin/providers/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/providers/{id}",
    operation_id = "get_provider",
    tag = "admin",
    summary = "One custom provider",
    params(("id" = String, Path, description = "The provider's id.")),
    responses(
        (status = 200, description = "The provider", body = schema::Provider)
    ),
)]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.provider_view(&id).await?))
}

/// `PUT /api/v1/admin/providers/{id}`: replace the definition.
#[utoipa::path(
    put,
    path = "/api/v1/admin/providers/{id}",
    operation_id = "update_provider",
    tag = "admin",
    summary = "Replaces a custom provider's definition",
    params(("id" = String, Path, description = "The provider's id.")),
    request_body = schema::ProviderDefinition,
    responses(
        (status = 200, description = "The provider", body = schema::Provider),
        (status = 502, description = "The issuer's discovery document could not be fetched")
    ),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Force {
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/admin/providers/{id}?force=`.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/providers/{id}",
    operation_id = "delete_provider",
    tag = "admin",
    summary = "Removes a custom provider (refused while connections use it, unless `force`)",
    params(("id" = String, Path, description = "The provider's id."), Force),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Connections use it")
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/admin/providers/export",
    operation_id = "export_providers",
    tag = "admin",
    summary = "Every custom provider's definition, as one file",
    responses(
        (status = 200, description = "The file (no client credentials)", body = schema::ProviderFile)
    ),
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/admin/providers/import",
    operation_id = "import_provider_file",
    tag = "admin",
    summary = "Imports an export file (existing providers are updated)",
    request_body = schema::ProviderFileInput,
    responses(
        (status = 200, description = "What happened to each definition", body = schema::ImportReport)
    ),
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Comma-separated egress hosts granted with the upload.
    #[serde(default)]
    grant: String,
}

/// `POST /api/v1/admin/connectors?grant=host,…`: the body is the `.wasm` component.
#[utoipa::path(
    post,
    path = "/api/v1/admin/connectors",
    tag = "admin",
    summary = "Uploads a connector component (hot-loaded; new egress hosts wait for approval)",
    params(UploadQuery),
    request_body(content = schema::Wasm, content_type = "application/octet-stream", description = "The component (`.wasm`), at most 32 MiB (the content type is not checked)"),
    responses(
        (status = 201, description = "Loaded", body = schema::Uploaded),
        (status = 202, description = "Waiting for an admin to grant its egress hosts", body = schema::Uploaded),
        (status = 409, description = "It would replace a built-in connector"),
        (status = 413, description = "Larger than 32 MiB")
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/admin/connectors",
    operation_id = "admin_list_connectors",
    tag = "admin",
    summary = "Every loaded connector, uploads waiting for approval, and directory errors",
    responses(
        (status = 200, description = "The connectors", body = schema::LoadedConnectors)
    ),
)]
pub async fn list_connectors(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(s.service.loaded_connectors().await?))
}

/// `DELETE /api/v1/admin/connectors/{id}?force=`.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/connectors/{id}",
    tag = "admin",
    summary = "Unloads an uploaded connector (refused while connections use it, unless `force`)",
    params(("id" = String, Path, description = "The connector's id."), Force),
    responses(
        (status = 204, description = "Unloaded"),
        (status = 409, description = "Not uploaded, or connections use it")
    ),
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/admin/connectors/{id}/rollback",
    tag = "admin",
    summary = "Makes the previous version of an uploaded connector active again",
    params(("id" = String, Path, description = "The connector's id.")),
    responses(
        (status = 200, description = "The version active now", body = schema::RolledBack),
        (status = 409, description = "No previous version")
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    hosts: Vec<String>,
}

/// `POST /api/v1/admin/connectors/{id}/approve {hosts}`: grants egress hosts.
#[utoipa::path(
    post,
    path = "/api/v1/admin/connectors/{id}/approve",
    tag = "admin",
    summary = "Grants egress hosts to an uploaded connector",
    params(("id" = String, Path, description = "The connector's id.")),
    request_body = Approve,
    responses(
        (status = 200, description = "The grant", body = schema::Approved)
    ),
)]
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
#[utoipa::path(
    put,
    path = "/api/v1/admin/sso",
    tag = "admin",
    summary = "Configures single sign-on (the issuer is discovered and checked first)",
    request_body = crate::auth::sso::SsoInput,
    responses(
        (status = 200, description = "The configuration (never the secret)", body = schema::Sso),
        (status = 502, description = "The issuer could not be discovered")
    ),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/admin/sso",
    tag = "admin",
    summary = "The single sign-on configuration",
    responses(
        (status = 200, description = "The configuration (never the secret)", body = schema::Sso)
    ),
)]
pub async fn get_sso(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(
        crate::auth::sso::view(&s.service, &caller.principal).await?,
    ))
}

/// `DELETE /api/v1/admin/sso`: password and admin-token sign-in only.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/sso",
    tag = "admin",
    summary = "Removes single sign-on",
    responses(
        (status = 204, description = "Removed")
    ),
)]
pub async fn delete_sso(State(s): State<AppState>, caller: Caller) -> R<StatusCode> {
    crate::auth::sso::remove(&s.service, &caller.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/catalogue`: the provider catalogue for this workspace (workspace admins).
#[utoipa::path(
    get,
    path = "/api/v1/admin/catalogue",
    operation_id = "get_catalogue",
    tag = "admin",
    summary = "The provider catalogue as this workspace sees it",
    responses(
        (status = 200, description = "The catalogue", body = schema::Catalogue)
    ),
)]
pub async fn catalogue(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(s.service.catalogue_view(&caller.principal).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntryPatch {
    hidden: bool,
}

/// `PUT /api/v1/admin/catalogue/{id}` `{"hidden": bool}`: hide an integration in this workspace
/// (or show it again).
#[utoipa::path(
    put,
    path = "/api/v1/admin/catalogue/{id}",
    tag = "admin",
    summary = "Hides or shows a catalogue entry in this workspace",
    params(("id" = String, Path, description = "The catalogue entry's id.")),
    request_body = CatalogueEntryPatch,
    responses(
        (status = 200, description = "The entry", body = schema::CatalogueEntry)
    ),
)]
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
