//! `/api/v1` handlers for using connections (proxy, credentials) and watching them (audit log,
//! webhooks).

use super::schema;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, AppState};
use crate::auth::{CREDENTIALS_READ, Caller};
use crate::connections::rfc3339;
use crate::proxy::ProxyRequest;

type R<T> = Result<T, ApiError>;

/// The methods REST APIs use; the proxy refuses any other with 405 (`TRACE`, WebDAV's, …).
const PROXY_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Largest request body the proxy forwards.
pub const PROXY_BODY_MAX: usize = 10 * 1024 * 1024;

/// `ANY /api/v1/connections/{id}/proxy/{*path}`.
/// The call is made with the connection's credential (refreshed first when needed), only to the
/// connector's API base URL; the provider's status, headers and body come back as they are.
/// `X-Keyport-Retries: N` retries idempotent calls the provider rate-limited or failed.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/api/v1/connections/{id}/proxy/{path}",
    tag = "connections",
    summary = "Calls the provider's API on the connection's behalf",
    params(
        ("id" = String, Path, description = "The connection's id (`conn_…`)."),
        ("path" = String, Path, description = "The path under the connector's API base URL (it may contain `/`); the query string is passed on."),
        ("X-Keyport-Retries" = Option<u32>, Header, description = "Retries for idempotent calls the provider answers 429 or 5xx (default 0)."),
    ),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Passed on to the provider (at most 10 MiB)."),
    responses(
        (status = 409, description = "The connection cannot be used (disabled, expired, revoked)"),
        (status = 502, description = "The provider could not be reached"),
        (status = 503, description = "A refresh of this connection is in flight; retry after `Retry-After`"),
        (status = "default", description = "The provider's answer: its status, headers and body as they are", content_type = "*/*"),
    ),
)]
pub async fn proxy(State(s): State<AppState>, caller: Caller, req: Request) -> R<Response> {
    let (parts, body) = req.into_parts();
    if !PROXY_METHODS.contains(&parts.method) {
        return Ok(ApiError::method_not_allowed(
            format!(
                "the proxy forwards {} only, not {}",
                PROXY_METHODS
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                parts.method
            ),
            &PROXY_METHODS
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    // The raw path, still percent-encoded: axum's `Path` would decode it and hide traversal.
    let path = parts.uri.path();
    let rest = path
        .strip_prefix("/api/v1/connections/")
        .ok_or_else(|| ApiError::bad_request("malformed proxy path"))?;
    let (id, raw_path) = rest
        .split_once("/proxy/")
        .or_else(|| rest.strip_suffix("/proxy").map(|id| (id, "")))
        .ok_or_else(|| ApiError::bad_request("malformed proxy path"))?;
    let retries = parts
        .headers
        .get("x-keyport-retries")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let body = axum::body::to_bytes(body, PROXY_BODY_MAX)
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is larger than {} MiB, the proxy's limit",
                PROXY_BODY_MAX >> 20
            ))
        })?;
    let req = ProxyRequest {
        method: parts.method,
        raw_path: raw_path.to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    Ok(s.service.proxy(&caller.principal, id, req, retries).await?)
}

/// `GET /api/v1/connections/{id}/credentials`: only for API keys with `credentials:read`.
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}/credentials",
    tag = "connections",
    summary = "The connection's current credential (API keys need `credentials:read`)",
    params(("id" = String, Path, description = "The connection's id (`conn_…`).")),
    responses(
        (status = 200, description = "The credential; never cached", body = schema::Credentials),
        (status = 409, description = "The connection is not usable (disabled, expired, revoked)"),
        (status = 502, description = "The token needed a refresh and the provider failed"),
        (status = 503, description = "A refresh is in flight; retry after `Retry-After`")
    ),
)]
pub async fn credentials(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<Response> {
    let permitted = caller.permissions.iter().any(|p| p == CREDENTIALS_READ);
    let v = s
        .service
        .credentials(&caller.principal, &id, permitted)
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    connection_id: Option<String>,
    action: Option<String>,
    /// RFC 3339 time or Unix milliseconds.
    since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /api/v1/audit?connection_id=&action=&since=&limit=&cursor=`, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "audit_log",
    tag = "audit",
    summary = "The workspace's audit log, newest first",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page", body = schema::AuditPage)
    ),
)]
pub async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> R<Json<Value>> {
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(v) => Some(match v.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => humantime::parse_rfc3339_weak(v)
                .map_err(|_| {
                    ApiError::bad_request(
                        "since: an RFC 3339 time (2026-01-31T12:00:00Z) or Unix milliseconds",
                    )
                })?
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }),
    };
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("cursor: pass back the next_cursor of the previous page")
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 500"));
    }
    let rows = s
        .service
        .audit_page(
            &caller.principal,
            q.connection_id.as_deref(),
            q.action.as_deref(),
            since,
            cursor,
            limit + 1,
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let events: Vec<Value> = page
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "connection_id": r.connection_id,
                "action": r.action,
                "actor": r.actor,
                "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
                "created_at": rfc3339(r.created_at),
            })
        })
        .collect();
    let next = more
        .then(|| page.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({"events": events, "next_cursor": next})))
}

/// `POST /api/v1/webhooks {url, events, description?}`.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Subscribes a URL to events (signed with the secret in the answer, shown once)",
    request_body = crate::webhooks::NewWebhook,
    responses(
        (status = 201, description = "The webhook and its signing secret", body = schema::Webhook)
    ),
)]
pub async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(w): ApiJson<crate::webhooks::NewWebhook>,
) -> R<impl IntoResponse> {
    let v = s.service.create_webhook(&caller.principal, w).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/webhooks`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "The workspace's webhooks",
    responses(
        (status = 200, description = "The webhooks", body = schema::Webhooks)
    ),
)]
pub async fn list_webhooks(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(s.service.list_webhooks(&caller.principal).await?))
}

/// `DELETE /api/v1/webhooks/{id}`.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Deletes a webhook",
    params(("id" = String, Path, description = "The webhook's id.")),
    responses(
        (status = 204, description = "Deleted")
    ),
)]
pub async fn delete_webhook(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    s.service.delete_webhook(&caller.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit=`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's recent deliveries",
    params(("id" = String, Path, description = "The webhook's id."), LimitQuery),
    responses(
        (status = 200, description = "The deliveries", body = schema::Deliveries)
    ),
)]
pub async fn deliveries(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> R<Json<Value>> {
    Ok(Json(
        s.service
            .webhook_deliveries(&caller.principal, &id, q.limit.unwrap_or(100))
            .await?,
    ))
}
