//! `/api/v1` handlers for workspaces, API keys, provider apps and connections.

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
    StartOAuth, Status, rfc3339, view,
};

type R<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    id: String,
    name: Option<String>,
}

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

pub async fn list_workspaces(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    caller.require_admin()?;
    let list = s.service.workspaces().await?;
    Ok(Json(
        json!({"workspaces": list.into_iter().map(|(id, name, at)| json!({"id": id, "name": name, "created_at": rfc3339(at)})).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    name: String,
    workspace: Option<String>,
    /// Extra permissions: `credentials:read` lets the key read raw credentials.
    #[serde(default)]
    permissions: Vec<String>,
}

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

pub async fn start_oauth(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<StartOAuth>,
) -> R<impl IntoResponse> {
    req.session = caller.session.clone();
    let started = s.service.start_oauth(&caller.principal, req).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> R<impl IntoResponse> {
    let c = s.service.create_api_key(&caller.principal, req).await?;
    Ok((StatusCode::CREATED, Json(view(&c))))
}

#[derive(Deserialize)]
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

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> R<Json<Value>> {
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
    let mut out = json!({
        "connections": rows.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    if q.total == Some(true) {
        out["total"] = json!(
            s.service
                .count_connections(&caller.principal, &filter)
                .await?
        );
    }
    Ok(Json(out))
}

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

pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    s.service.delete(&caller.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query-string overrides are strings; a JSON body keeps types.
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RefreshQuery {
    /// Refresh only when the token expires within a minute (what automated callers want).
    #[serde(default)]
    if_needed: bool,
}

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReconnectBody {
    scopes: Option<Vec<String>>,
    return_to: Option<String>,
}

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

pub async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Json<Value>> {
    let (c, provider_error) = s.service.revoke(&caller.principal, &id).await?;
    let mut v = view(&c);
    v["provider_revocation"] = match provider_error {
        None => json!({"ok": true}),
        Some(e) => {
            json!({"ok": false, "message": format!("The provider's revocation failed ({e}); keyport deleted the stored credentials anyway.")})
        }
    };
    Ok(Json(v))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyValue {
    api_key: String,
}

/// `PUT /api/v1/connections/{id}/api-key {api_key}`: a rotated key, in place.
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
