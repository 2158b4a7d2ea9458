//! API authentication: the admin token and workspace API keys, both as `Authorization: Bearer`.
//!
//! | credential | where it comes from | scope |
//! |---|---|---|
//! | admin token | `KEYPORT_ADMIN_TOKEN`, or generated on first start of the embedded default and printed once; stored as SHA-256 | any workspace: `X-Keyport-Workspace` (default `default`); admin-only endpoints |
//! | workspace API key | `POST /api/v1/api-keys` (admin); shown once; stored as SHA-256 | its own workspace only |
//! | web UI session | the session cookie set by signing in with the admin token at `/login`; every call also needs the page's `X-CSRF-Token` and a same-origin `Origin` | the session's workspace, as admin |
//!
//! Anything else is 401. Tokens are compared by their hashes; none is logged.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::connections::Actor;
use crate::oauth::hash;

/// Settings key of the admin token's hash.
pub const ADMIN_TOKEN_HASH: &str = "admin_token_sha256";

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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.get(header::AUTHORIZATION).is_none()
            && let Some(session) = crate::ui::session_of(state, &parts.headers).await?
        {
            crate::ui::check_csrf(state, &parts.headers, &session)?;
            return Ok(Caller {
                workspace: session.workspace_id,
                admin: true,
                actor: Actor("ui:admin".into()),
                permissions: Vec::new(),
                session: Some(session.id_hash),
            });
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("send `Authorization: Bearer <admin token or API key>`")
            })?;
        let h = hash(token);
        let ws_header = parts
            .headers
            .get("x-keyport-workspace")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("default");
        let key = format!("{h}|{ws_header}");
        if let Some((at, Some(caller))) = state
            .service
            .auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < AUTH_CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let caller = authenticate(state, &h, ws_header).await?;
        let mut cache = state
            .service
            .auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, (std::time::Instant::now(), Some(caller.clone())));
        Ok(caller)
    }
}

/// How long a checked credential is remembered (the admin token and API keys change rarely).
const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

async fn authenticate(state: &AppState, h: &str, ws_header: &str) -> Result<Caller, ApiError> {
    {
        let h = h.to_string();
        let store = &state.service.store;
        let admin_hash = store
            .setting(ADMIN_TOKEN_HASH)
            .await
            .map_err(ApiError::from_store)?;
        if admin_hash.as_deref() == Some(h.as_str()) {
            let workspace = ws_header.to_string();
            if !store
                .workspace_exists(&workspace)
                .await
                .map_err(ApiError::from_store)?
            {
                return Err(ApiError::not_found(format!(
                    "no workspace {workspace:?}; create it with POST /api/v1/workspaces"
                )));
            }
            return Ok(Caller {
                workspace,
                admin: true,
                actor: Actor("admin".into()),
                permissions: Vec::new(),
                session: None,
            });
        }
        if let Some(key) = store
            .api_key_by_hash(&h)
            .await
            .map_err(ApiError::from_store)?
        {
            return Ok(Caller {
                workspace: key.workspace_id,
                admin: false,
                actor: Actor(format!("api-key:{}", key.id)),
                permissions: serde_json::from_str(&key.permissions).unwrap_or_default(),
                session: None,
            });
        }
        Err(ApiError::unauthorized(
            "the token is not valid; use the admin token or a workspace API key",
        ))
    }
}

impl Caller {
    /// Refuses non-admins.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint needs the admin token"))
        }
    }
}
