//! `/api/v1` handlers for workspaces, API keys, provider apps and connections.

use super::schema;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::Caller;
use crate::connections::{
    ConnectionFilter, CreateApiKey, FlowBrowser, Need, Patch, ProviderAppInput, RefreshMode,
    StartOAuth, Status, connection_view, rfc3339, view,
};

type R<T> = Result<T, ApiError>;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    id: String,
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workspaces",
    tag = "workspaces",
    summary = "Creates a workspace (installation admins)",
    request_body = NewWorkspace,
    responses(
        (status = 201, description = "Created", body = schema::Workspace),
        (status = 409, description = "The id is taken")
    ),
)]
pub async fn create_workspace(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(w): ApiJson<NewWorkspace>,
) -> R<impl IntoResponse> {
    caller.require_admin()?;
    let name = w.name.unwrap_or(w.id.clone());
    s.service.create_workspace(&w.id, &name).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": w.id, "name": name}))))
}

#[utoipa::path(
    get,
    path = "/api/v1/workspaces",
    tag = "workspaces",
    summary = "Every workspace (installation admins)",
    responses(
        (status = 200, description = "The workspaces", body = schema::Workspaces)
    ),
)]
pub async fn list_workspaces(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    let list = s.service.workspaces().await?;
    Ok(Json(
        json!({"workspaces": list.into_iter().map(|(id, name, at)| json!({"id": id, "name": name, "created_at": rfc3339(at)})).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    name: String,
    workspace: Option<String>,
    /// Extra permissions: `credentials:read` lets the key read raw credentials.
    #[serde(default)]
    permissions: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "api-keys",
    summary = "Issues a workspace API key (shown once)",
    request_body = NewApiKey,
    responses(
        (status = 201, description = "The key, shown only in this answer", body = schema::ApiKeyCreated)
    ),
)]
pub async fn create_api_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(k): ApiJson<NewApiKey>,
) -> R<impl IntoResponse> {
    caller.require_admin()?;
    let ws = k.workspace.unwrap_or(caller.workspace);
    let name = k.name;
    let (id, key) =
        crate::auth::issue_api_key(&s.service, &ws, &caller.actor, name.clone(), &k.permissions)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": id, "workspace": ws, "name": name, "key": key, "note": "Store this key now: it is shown only once."}),
        ),
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/provider-apps/{connector}",
    tag = "provider-apps",
    summary = "Saves the workspace's OAuth app (client id and secret) for a connector",
    params(("connector" = String, Path, description = "The connector's id.")),
    request_body = ProviderAppInput,
    responses(
        (status = 200, description = "The app (never its secret)", body = schema::ProviderApp)
    ),
)]
pub async fn put_provider_app(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(connector): ApiPath<String>,
    ApiJson(input): ApiJson<ProviderAppInput>,
) -> R<Json<Value>> {
    Ok(Json(
        s.service
            .put_provider_app(&caller.principal, &connector, input)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/provider-apps/{connector}",
    tag = "provider-apps",
    summary = "The workspace's OAuth app for a connector",
    params(("connector" = String, Path, description = "The connector's id.")),
    responses(
        (status = 200, description = "The app (never its secret)", body = schema::ProviderApp)
    ),
)]
pub async fn get_provider_app(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(connector): ApiPath<String>,
) -> R<Json<Value>> {
    Ok(Json(
        s.service
            .provider_app_view(&caller.workspace, &connector)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/oauth/start",
    tag = "connections",
    summary = "Starts an OAuth connection: open `authorize_url` in the user's browser",
    request_body = StartOAuth,
    responses(
        (status = 201, description = "A pending connection and the link that continues the flow", body = schema::OAuthStarted),
        (status = 409, description = "No provider app, or the integration is hidden")
    ),
)]
pub async fn start_oauth(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<StartOAuth>,
) -> R<impl IntoResponse> {
    req.session = caller.session.clone();
    let started = s.service.start_oauth(&caller.principal, req).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

#[utoipa::path(
    post,
    path = "/api/v1/connections",
    operation_id = "create_api_key_connection",
    tag = "connections",
    summary = "Connects with an API key (verified with the provider before it is stored)",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The new connection", body = schema::ConnectionView<'static>),
        (status = 409, description = "The connector does not take API keys, or the integration is hidden"),
        (status = 502, description = "The provider could not be reached or answered in a way keyport could not read")
    ),
)]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> R<impl IntoResponse> {
    let c = s.service.create_api_key(&caller.principal, req).await?;
    Ok((StatusCode::CREATED, Json(view(&c))))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    connector: Option<String>,
    status: Option<String>,
    /// Page size: 1 to 500, default 100.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `true`: also count every match (`total`).
    total: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/connections",
    operation_id = "list_connections",
    tag = "connections",
    summary = "Lists the connections the caller may see, a page at a time",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = schema::ConnectionPage<'static>)
    ),
)]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<axum::response::Response> {
    let status = match q.status.as_deref().map(str::parse::<Status>) {
        None => None,
        Some(Ok(st)) => Some(st),
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "status must be one of pending, active, expired, error, revoked",
            ));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 500"));
    }
    let filter = ConnectionFilter {
        connector: q.connector,
        status,
        ..Default::default()
    };
    let (rows, next) = s
        .service
        .list_connections(&caller.principal, &filter, q.cursor.as_deref(), limit)
        .await?;
    let total = match q.total {
        Some(true) => Some(
            s.service
                .count_connections(&caller.principal, &filter)
                .await?,
        ),
        _ => None,
    };
    // Written straight from the typed views into one buffer: no JSON tree in between. A
    // connection's view is about 700 bytes.
    let page = schema::ConnectionPage {
        connections: rows.iter().map(connection_view).collect(),
        next_cursor: next,
        total,
    };
    Ok(crate::web::json_sized(&page, 1024 * (rows.len() + 1)))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}",
    operation_id = "get_connection",
    tag = "connections",
    summary = "One connection",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 200, description = "The connection", body = schema::ConnectionView<'static>)
    ),
)]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    Ok(Json(view(
        &s.service
            .connection_for(&caller.principal, &id, Need::See)
            .await?,
    )))
}

#[utoipa::path(
    patch,
    path = "/api/v1/connections/{id}",
    operation_id = "update_connection",
    tag = "connections",
    summary = "Renames, reconfigures, switches on or off, or shares a connection",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    request_body = Patch,
    responses(
        (status = 200, description = "The connection", body = schema::ConnectionView<'static>),
        (status = 409, description = "Not possible in its state")
    ),
)]
pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(p): ApiJson<Patch>,
) -> R<Json<Value>> {
    Ok(Json(view(
        &s.service.patch(&caller.principal, &id, p).await?,
    )))
}

#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    operation_id = "delete_connection",
    tag = "connections",
    summary = "Deletes a connection and its stored credentials (its audit trail stays)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Other things depend on it")
    ),
)]
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    s.service.delete(&caller.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query-string overrides are strings; a JSON body keeps types.
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}/config",
    tag = "connections",
    summary = "The connection's config with query-string overrides applied (strings)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`)."), ("overrides" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode, description = "Settings to override for this read, as `key=value` pairs.")),
    responses(
        (status = 200, description = "The effective config", body = schema::EffectiveConfig)
    ),
)]
pub async fn config_get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<std::collections::BTreeMap<String, String>>,
) -> R<Json<Value>> {
    let overrides: serde_json::Map<String, Value> =
        q.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Ok(Json(
        json!({"config": s.service.effective_config(&caller.principal, &id, &Value::Object(overrides)).await?}),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/config",
    tag = "connections",
    summary = "The connection's config with JSON overrides applied (types kept)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    request_body = schema::ConfigOverrides,
    responses(
        (status = 200, description = "The effective config", body = schema::EffectiveConfig)
    ),
)]
pub async fn config_post(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(overrides): ApiJson<Value>,
) -> R<Json<Value>> {
    if !overrides.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object of config overrides",
        ));
    }
    Ok(Json(
        json!({"config": s.service.effective_config(&caller.principal, &id, &overrides).await?}),
    ))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RefreshQuery {
    /// Refresh only when the token expires within a minute (what automated callers want).
    #[serde(default)]
    if_needed: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/refresh",
    tag = "connections",
    summary = "Refreshes the access token now (or only when it expires within a minute)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`)."), RefreshQuery),
    responses(
        (status = 200, description = "The connection", body = schema::ConnectionView<'static>),
        (status = 409, description = "The connection cannot be refreshed (API key, revoked, expired)"),
        (status = 502, description = "The provider refused or failed"),
        (status = 503, description = "Another refresh of this connection is in flight; retry after `Retry-After`")
    ),
)]
pub async fn refresh(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RefreshQuery>,
) -> R<Json<Value>> {
    let c = s
        .service
        .refresh(
            &caller.principal,
            &id,
            if q.if_needed {
                RefreshMode::IfExpiring
            } else {
                RefreshMode::Force
            },
        )
        .await?;
    Ok(Json(view(&c)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectBody {
    scopes: Option<Vec<String>>,
    return_to: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/reconnect",
    tag = "connections",
    summary = "Starts a new OAuth grant for an existing connection (it keeps its id)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    request_body = Option<ReconnectBody>,
    responses(
        (status = 200, description = "The link that continues the flow", body = schema::OAuthStarted),
        (status = 409, description = "Not an OAuth connection, or no provider app")
    ),
)]
pub async fn reconnect(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> R<Json<Value>> {
    let b: ReconnectBody = super::optional_json(&body)?;
    let started = s
        .service
        .reconnect(
            &caller.principal,
            &id,
            b.scopes.as_deref().unwrap_or(&[]),
            FlowBrowser {
                return_to: b.return_to,
                session: caller.session.clone(),
                request: None,
            },
        )
        .await?;
    Ok(Json(serde_json::to_value(started).unwrap_or_default()))
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/revoke",
    tag = "connections",
    summary = "Revokes the grant at the provider and deletes the stored credentials",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 200, description = "The revoked connection and what the provider said", body = schema::RevokedConnection<'static>),
        (status = 409, description = "Already revoked")
    ),
)]
pub async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<axum::response::Response> {
    let (c, provider_error) = s.service.revoke(&caller.principal, &id).await?;
    Ok(Json(schema::RevokedConnection {
        connection: connection_view(&c),
        provider_revocation: schema::ProviderRevocation {
            ok: provider_error.is_none(),
            message: provider_error.map(|e| format!("The provider's revocation failed ({e}); keyport deleted the stored credentials anyway.")),
        },
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}/dependents",
    tag = "connections",
    summary = "What the platform marked as depending on the connection",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 200, description = "The dependents", body = schema::Dependents)
    ),
)]
pub async fn dependents(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    let deps = s.service.dependents(&caller.principal, &id).await?;
    Ok(Json(
        json!({"dependents": deps.into_iter().map(|(r, at)| json!({"ref": r, "created_at": rfc3339(at)})).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/connections/{id}/dependents/{dep}",
    tag = "connections",
    summary = "Marks something as depending on the connection (deleting it is then refused)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`)."), ("dep" = String, Path, description = "The platform's name for what depends on it.")),
    responses(
        (status = 201, description = "Added"),
        (status = 200, description = "Already there")
    ),
)]
pub async fn add_dependent(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((id, dep)): ApiPath<(String, String)>,
) -> R<StatusCode> {
    let created = s
        .service
        .add_dependent(&caller.principal, &id, &dep)
        .await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}/dependents/{dep}",
    tag = "connections",
    summary = "Removes a dependent",
    params(("id" = String, Path, description = "The connection's id (`conn_…`)."), ("dep" = String, Path, description = "The platform's name for what depended on it.")),
    responses(
        (status = 204, description = "Removed")
    ),
)]
pub async fn remove_dependent(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((id, dep)): ApiPath<(String, String)>,
) -> R<StatusCode> {
    s.service
        .remove_dependent(&caller.principal, &id, &dep)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A connection's audit trail; it outlives the connection (deleted connections keep theirs).
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}/audit",
    operation_id = "connection_audit",
    tag = "audit",
    summary = "A connection's audit trail (it outlives the connection)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 200, description = "The newest 500 events", body = schema::AuditPage)
    ),
)]
pub async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    let rows = s
        .service
        .connection_audit(&caller.principal, &id, 500)
        .await?;
    let events: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"id": r.id, "action": r.action, "actor": r.actor, "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null), "created_at": rfc3339(r.created_at)}))
        .collect();
    Ok(Json(json!({"events": events})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyValue {
    api_key: String,
}

/// `PUT /api/v1/connections/{id}/api-key {api_key}`: a rotated key, in place.
#[utoipa::path(
    put,
    path = "/api/v1/connections/{id}/api-key",
    tag = "connections",
    summary = "Replaces an API-key connection's key (verified first)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    request_body = NewApiKeyValue,
    responses(
        (status = 200, description = "The connection", body = schema::ConnectionView<'static>),
        (status = 409, description = "Not an API-key connection"),
        (status = 502, description = "The provider could not be reached")
    ),
)]
pub async fn replace_api_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<NewApiKeyValue>,
) -> R<Json<Value>> {
    let c = s
        .service
        .replace_api_key(&caller.principal, &id, &b.api_key)
        .await?;
    Ok(Json(view(&c)))
}
