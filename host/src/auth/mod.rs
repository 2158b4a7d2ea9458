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
pub mod people;
pub mod sessions;
pub mod sso;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method, header};
use serde_json::json;

use crate::connections::{Actor, Error as ServiceError, Principal, Role, Service, Who};
use crate::oauth::hash;
use crate::store::{ApiKeyRow, Store, now_ms};

pub use sessions::Session;

/// Runs CPU-heavy work (an Argon2id hash or check: tens of milliseconds and about 19 MiB) on the
/// blocking pool, so the HTTP thread that asked keeps serving its other connections meanwhile.
/// At most one piece per CPU core runs at once, process-wide; the rest wait their turn without
/// holding a thread, so a burst of guesses costs what it did when the checks ran inline.
pub(crate) async fn off_loop<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
    });
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Permission an API key needs for `GET …/credentials`.
pub const CREDENTIALS_READ: &str = "credentials:read";
/// Permission an API key needs to act for one of its platform's users (`X-Keyport-User`).
pub const ACT_AS_USER: &str = "act-as-user";
/// Every API key permission.
pub const KEY_PERMISSIONS: [&str; 2] = [CREDENTIALS_READ, ACT_AS_USER];

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is, as the lifecycle decides on it.
    pub principal: Principal,
    /// The workspace the request acts in.
    pub workspace: String,
    /// Installation admin: the admin token, or a user with the installation-admin flag.
    pub admin: bool,
    /// For the audit log.
    pub actor: Actor,
    /// Extra permissions of an API key (e.g. `credentials:read`); the admin token has none.
    pub permissions: Vec<String>,
    /// The UI session's cookie hash, when the caller is the web UI.
    pub session: Option<String>,
}

impl Caller {
    /// Refuses everyone but installation admins.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.admin {
            Ok(())
        } else {
            Err(AuthError::Forbidden(
                "this endpoint needs the admin token or an installation admin".into(),
            ))
        }
    }

    /// A caller for `principal` (API keys add their permissions, sessions their hash).
    pub fn of(principal: Principal) -> Caller {
        Caller {
            workspace: principal.workspace.clone(),
            admin: principal.installation_admin,
            actor: principal.actor(),
            principal,
            permissions: Vec::new(),
            session: None,
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

/// How long a checked credential is remembered. A revoked API key stops working at once on the
/// replica that revoked it (its cache is cleared) and within this time on every other.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// API credentials recently checked: token hash and workspace header → (when, caller).
#[derive(Default)]
pub struct CallerCache(Mutex<HashMap<String, (std::time::Instant, Caller)>>);

impl CallerCache {
    /// Forgets every remembered credential (after a key is revoked).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

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
        let mut caller = Caller::of(people::session_principal(svc, &session).await?);
        caller.session = Some(session.id_hash);
        return Ok(caller);
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
    let as_user = headers
        .get("x-keyport-user")
        .map(|v| {
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|u| !u.is_empty() && u.len() <= 200)
                .ok_or_else(|| {
                    AuthError::Service(ServiceError::BadRequest(
                        "X-Keyport-User: the platform's id of the user, 1-200 visible characters"
                            .into(),
                    ))
                })
        })
        .transpose()?;
    let key = format!("{h}|{ws_header}|{}", as_user.unwrap_or_default());
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
    let caller = match authenticate(&svc.store, token, &h, ws_header, as_user).await {
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
    as_user: Option<&str>,
) -> Result<Caller, AuthError> {
    // API keys first: they are found by their hash, without the admin token's slow check.
    if let Some(key) = store.api_key_by_hash(h).await? {
        let permissions: Vec<String> = serde_json::from_str(&key.permissions).unwrap_or_default();
        let who = match as_user {
            None => Who::Automation {
                key_id: key.id.clone(),
                key_name: key.name.clone(),
            },
            Some(_) if !permissions.iter().any(|p| p == ACT_AS_USER) => {
                return Err(AuthError::Forbidden(format!(
                    "this API key may not act for users (X-Keyport-User); create one with the {ACT_AS_USER:?} permission"
                )));
            }
            Some(external) => {
                let (user, role) =
                    people::external_user(store, &key.workspace_id, external).await?;
                Who::User {
                    label: user.external_id.clone().unwrap_or_default(),
                    id: user.id,
                    role,
                    via_key: Some((key.id.clone(), key.name.clone())),
                }
            }
        };
        let _ = store.touch_api_key(&key.id, now_ms()).await;
        let mut caller = Caller::of(Principal {
            workspace: key.workspace_id,
            who,
            installation_admin: false,
        });
        caller.permissions = permissions;
        return Ok(caller);
    }
    if admin_token::matches(store, token).await? {
        let workspace = ws_header.to_string();
        if !store.workspace_exists(&workspace).await? {
            return Err(ServiceError::NotFound(format!(
                "no workspace {workspace:?}; create it with POST /api/v1/workspaces"
            ))
            .into());
        }
        return Ok(Caller::of(Principal::admin_token(&workspace)));
    }
    Err(AuthError::Unauthorized(
        "the token is not valid; use the admin token or a workspace API key".into(),
    ))
}

/// Whether `who` may call `method path` at all: a workspace's clients reach only the portal's
/// API (their requests, single connections — where the lifecycle shows them only their own —
/// and themselves); everyone else every endpoint (the lifecycle still decides on each
/// connection).
pub fn may_reach(who: &Principal, method: &Method, path: &str) -> bool {
    if who.role() != Some(Role::Client) {
        return true;
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return true;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["me"] | ["portal"] | ["auth", ..] => true,
        ["connection-requests", _, "connect"] => *method == Method::POST,
        ["connections", "oauth", ..] => false,
        ["connections", _, ..] => true,
        _ => false,
    }
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
        if !KEY_PERMISSIONS.contains(&p.as_str()) {
            return Err(ServiceError::BadRequest(format!(
                "unknown permission {p:?}; use {}",
                KEY_PERMISSIONS
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
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
        last_used_at: None,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_work_runs_at_most_one_piece_per_core_at_once() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pieces = (0..cores * 4).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            tokio::spawn(super::off_loop(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for p in futures::future::join_all(pieces).await {
            p.unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            (1..=cores).contains(&peak),
            "{peak} pieces ran at once on {cores} cores"
        );
    }
}
