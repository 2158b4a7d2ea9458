//! Who is calling: the admin token, workspace API keys and web UI sessions, each resolved to one
//! [`Caller`] before a request reaches the lifecycle. Both the JSON API and the pages use this
//! module; neither decides who a caller is by itself.
//!
//! | credential | where it comes from | scope |
//! |---|---|---|
//! | admin token | `KEYPORT_ADMIN_TOKEN`, or generated on first start of the embedded default and printed once; stored as an Argon2id hash | any workspace: `X-Keyport-Workspace` (default `default`); admin-only endpoints |
//! | workspace API key | `POST /api/v1/api-keys` (admin); shown once; stored as SHA-256 | its own workspace only |
//! | web UI session | the session cookie set by signing in with the admin token at `/login`; every call also needs the page's `X-CSRF-Token` and a same-origin `Origin` | the session's workspace, as admin |
//!
//! Anything else is 401. Ten failed attempts from one address in a minute (bearer tokens and
//! sign-ins together, see [`limiter`]) answer 429 until the minute has passed. Tokens are
//! compared by their hashes; none is logged.

pub mod admin_token;
pub mod limiter;
pub mod sessions;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use serde_json::json;

use crate::connections::{Actor, Error as ServiceError, Service};
use crate::oauth::hash;
use crate::store::{ApiKeyRow, Store, now_ms};

pub use sessions::Session;

/// Permission an API key needs for `GET …/credentials`.
pub const CREDENTIALS_READ: &str = "credentials:read";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The workspace the request acts in.
    pub workspace: String,
    /// Admin token or API key.
    pub admin: bool,
    /// For the audit log.
    pub actor: Actor,
    /// Extra permissions of an API key (e.g. `credentials:read`); the admin token has none.
    pub permissions: Vec<String>,
    /// The UI session's cookie hash, when the caller is the web UI.
    pub session: Option<String>,
}

impl Caller {
    /// Refuses non-admins.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.admin {
            Ok(())
        } else {
            Err(AuthError::Forbidden(
                "this endpoint needs the admin token".into(),
            ))
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: no credential, or one that is not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: known, but not allowed (wrong CSRF token, cross-origin, not an admin).
    #[error("{0}")]
    Forbidden(String),
    /// 429: too many failed attempts from this address.
    #[error("{0}")]
    TooManyAttempts(String),
    /// The lifecycle's answer (e.g. 404 for an unknown workspace, 500 for the database).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for AuthError {
    fn from(e: crate::store::StoreError) -> Self {
        AuthError::Service(e.into())
    }
}

/// How long a checked credential is remembered (the admin token and API keys change rarely).
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// API credentials recently checked: token hash and workspace header → (when, caller).
#[derive(Default)]
pub struct CallerCache(Mutex<HashMap<String, (std::time::Instant, Caller)>>);

/// The caller a request's headers identify: a UI session cookie (with its CSRF token and
/// origin) when there is no `Authorization`, else the bearer token.
/// `client` is the address failed attempts count against.
pub async fn caller_of(
    svc: &Service,
    cache: &CallerCache,
    headers: &HeaderMap,
    client: IpAddr,
) -> Result<Caller, AuthError> {
    if headers.get(header::AUTHORIZATION).is_none()
        && let Some(session) = sessions::session_of(svc, headers).await?
    {
        sessions::check_csrf(svc, headers, &session)?;
        return Ok(Caller {
            workspace: session.workspace_id,
            admin: true,
            actor: Actor("ui:admin".into()),
            permissions: Vec::new(),
            session: Some(session.id_hash),
        });
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AuthError::Unauthorized("send `Authorization: Bearer <admin token or API key>`".into())
        })?;
    let h = hash(token);
    let ws_header = headers
        .get("x-keyport-workspace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default");
    let key = format!("{h}|{ws_header}");
    if let Some((at, caller)) = cache.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && at.elapsed() < CACHE_TTL
    {
        return Ok(caller.clone());
    }
    let now = now_ms();
    if limiter::sign_in_blocked(client, now) {
        return Err(AuthError::TooManyAttempts(
            "too many failed authentications from this address; wait a minute, then try again"
                .into(),
        ));
    }
    let caller = match authenticate(&svc.store, token, &h, ws_header).await {
        Err(AuthError::Unauthorized(why)) => {
            limiter::sign_in_failed(client, now);
            tracing::warn!(client = %client, "API call with a token that is not valid");
            return Err(AuthError::Unauthorized(why));
        }
        other => other?,
    };
    limiter::sign_in_succeeded(client);
    let mut cache = cache.0.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(key, (std::time::Instant::now(), caller.clone()));
    Ok(caller)
}

async fn authenticate(
    store: &Store,
    token: &str,
    h: &str,
    ws_header: &str,
) -> Result<Caller, AuthError> {
    // API keys first: they are found by their hash, without the admin token's slow check.
    if let Some(key) = store.api_key_by_hash(h).await? {
        return Ok(Caller {
            workspace: key.workspace_id,
            admin: false,
            actor: Actor(format!("api-key:{}", key.id)),
            permissions: serde_json::from_str(&key.permissions).unwrap_or_default(),
            session: None,
        });
    }
    if admin_token::matches(store, token).await? {
        let workspace = ws_header.to_string();
        if !store.workspace_exists(&workspace).await? {
            return Err(ServiceError::NotFound(format!(
                "no workspace {workspace:?}; create it with POST /api/v1/workspaces"
            ))
            .into());
        }
        return Ok(Caller {
            workspace,
            admin: true,
            actor: Actor("admin".into()),
            permissions: Vec::new(),
            session: None,
        });
    }
    Err(AuthError::Unauthorized(
        "the token is not valid; use the admin token or a workspace API key".into(),
    ))
}

/// A new workspace API key: `(id, key)`; the key is shown once and stored as its hash.
pub async fn issue_api_key(
    svc: &Service,
    ws: &str,
    actor: &Actor,
    name: String,
    permissions: &[String],
) -> Result<(String, String), AuthError> {
    if !svc.store.workspace_exists(ws).await? {
        return Err(ServiceError::NotFound(format!("no workspace {ws:?}")).into());
    }
    for p in permissions {
        if p != CREDENTIALS_READ {
            return Err(ServiceError::BadRequest(format!(
                "unknown permission {p:?}; the only one is {CREDENTIALS_READ:?}"
            ))
            .into());
        }
    }
    let key = format!("kp_{}", crate::vault::random_hex(24));
    let row = ApiKeyRow {
        id: format!("key_{}", crate::vault::random_hex(8)),
        workspace_id: ws.to_string(),
        name,
        key_hash: hash(&key),
        permissions: serde_json::to_string(permissions).unwrap_or_else(|_| "[]".into()),
        created_at: now_ms(),
        revoked_at: None,
    };
    svc.store.insert_api_key(&row).await?;
    svc.store
        .audit(
            ws,
            None,
            "api_key.created",
            &actor.0,
            &json!({"id": row.id, "name": row.name}),
        )
        .await?;
    Ok((row.id, key))
}
