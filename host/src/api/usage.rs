//! `/api/v1` handlers for using connections (proxy, credentials) and watching them (audit log,
//! webhooks).

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

#[derive(Deserialize)]
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
pub async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(w): ApiJson<crate::webhooks::NewWebhook>,
) -> R<impl IntoResponse> {
    let v = s.service.create_webhook(&caller.principal, w).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /api/v1/webhooks`.
pub async fn list_webhooks(State(s): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(s.service.list_webhooks(&caller.principal).await?))
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn delete_webhook(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    s.service.delete_webhook(&caller.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit=`.
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
