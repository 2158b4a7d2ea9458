//! API authentication: the admin token and workspace API keys, both as `Authorization: Bearer`.
//!
//! | credential | where it comes from | scope |
//! |---|---|---|
//! | admin token | `KEYPORT_ADMIN_TOKEN`, or generated on first start of the embedded default and printed once; stored as SHA-256 | any workspace: `X-Keyport-Workspace` (default `default`); admin-only endpoints |
//! | workspace API key | `POST /api/v1/api-keys` (admin); shown once; stored as SHA-256 | its own workspace only |
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
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
        let store = &state.service.store;
        let admin_hash = store
            .setting(ADMIN_TOKEN_HASH)
            .await
            .map_err(ApiError::from_store)?;
        if admin_hash.as_deref() == Some(h.as_str()) {
            let workspace = parts
                .headers
                .get("x-keyport-workspace")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("default")
                .to_string();
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
