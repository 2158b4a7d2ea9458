//! Web UI sessions: a random cookie (`HttpOnly`, `SameSite=Lax`, `Secure` behind https) whose
//! SHA-256 is stored with a CSRF token; 12 hours idle expiry, 7 days at most; a new admin token
//! ends every session. Failed sign-ins are limited per client address (IPv6 per /64).
//!
//! Calls made with a session cookie, reads included (a cross-site link must not make the browser
//! call the proxy), need the page's CSRF token and, when the browser sends one, a same-origin
//! `Origin`.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header};

use super::AuthError;
use super::limiter::{sign_in_blocked, sign_in_failed, sign_in_succeeded};
use crate::connections::{Error as ServiceError, Service};
use crate::oauth::hash;
use crate::store::now_ms;

/// A signed-in web UI session.
pub use crate::store::UiSessionRow as Session;

/// Idle lifetime of a UI session.
pub const SESSION_IDLE_MS: i64 = 12 * 3600 * 1000;
/// Longest lifetime of a UI session, however active.
pub const SESSION_MAX_MS: i64 = 7 * 24 * 3600 * 1000;

/// The session cookie's name (`__Host-` prefixed behind https).
pub fn cookie_name(svc: &Service) -> &'static str {
    if svc.secure_cookies() {
        "__Host-keyport-session"
    } else {
        "keyport-session"
    }
}

/// Adds the `Set-Cookie` of a new session (its cookie value) to a response's headers.
pub fn set_session_cookie(svc: &Service, headers: &mut HeaderMap, cookie: &str) {
    let secure = if svc.secure_cookies() { "; Secure" } else { "" };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(svc),
        SESSION_MAX_MS / 1000
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// The request's cookies by name.
pub fn cookies(headers: &HeaderMap) -> std::collections::HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The SHA-256 of the request's session cookie, if it carries one (not checked against the store).
pub fn session_hash_of(svc: &Service, headers: &HeaderMap) -> Option<String> {
    cookies(headers)
        .remove(cookie_name(svc))
        .filter(|v| !v.is_empty())
        .map(|v| hash(&v))
}

/// The live session the request's cookie belongs to; sliding idle expiry.
pub async fn session_of(svc: &Service, headers: &HeaderMap) -> Result<Option<Session>, AuthError> {
    let Some(h) = session_hash_of(svc, headers) else {
        return Ok(None);
    };
    let now = now_ms();
    let session = svc.store.ui_session(&h, now).await?;
    if let Some(s) = &session
        && now - s.last_seen_at > 60_000
    {
        let expires = (now + SESSION_IDLE_MS).min(s.created_at + SESSION_MAX_MS);
        svc.store.touch_ui_session(&h, now, expires).await?;
    }
    Ok(session)
}

/// The page's CSRF token (`X-CSRF-Token`) and a same-origin `Origin`, for calls made with `s`.
pub fn check_csrf(svc: &Service, headers: &HeaderMap, s: &Session) -> Result<(), AuthError> {
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !csrf_matches(s, sent) {
        return Err(AuthError::Forbidden(
            "missing or wrong CSRF token: reload the page and try again".into(),
        ));
    }
    same_origin(svc, headers)
}

/// A browser's `Origin`, when sent, must be keyport's public origin (or, when no public URL is
/// configured behind a proxy, the `Host` the request came to).
pub fn same_origin(svc: &Service, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let public = url::Url::parse(&svc.config.public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let scheme = if svc.secure_cookies() {
        "https"
    } else {
        "http"
    };
    if origin.eq_ignore_ascii_case(&public)
        || origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
    {
        Ok(())
    } else {
        Err(AuthError::Forbidden(
            "cross-origin request refused: use keyport's own pages".into(),
        ))
    }
}

/// Whether `sent` is `s`'s CSRF token (compared in constant time).
pub fn csrf_matches(s: &Session, sent: &str) -> bool {
    crate::vault::constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes())
}

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many failures from this address in the last minute.
    #[error("Too many failed sign-ins from this address. Wait a minute, then try again.")]
    Limited,
    /// Not the admin token.
    #[error(
        "That is not the admin token. Use the token printed when keyport first started (or the value of KEYPORT_ADMIN_TOKEN)."
    )]
    WrongToken,
    /// The store failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Signs in with the admin token from `client`: a new session (and its cookie value, shown to
/// the browser only), or why not. Failures count against the client's address.
pub async fn sign_in_with_admin_token(
    svc: &Service,
    token: &str,
    client: IpAddr,
) -> Result<(String, Session), SignInError> {
    let now = now_ms();
    if sign_in_blocked(client, now) {
        return Err(SignInError::Limited);
    }
    if !super::admin_token::matches(&svc.store, token.trim())
        .await
        .map_err(AuthError::from)?
    {
        sign_in_failed(client, now);
        tracing::warn!(client = %client, "UI sign-in with a wrong token");
        return Err(SignInError::WrongToken);
    }
    sign_in_succeeded(client);
    Ok(super::people::start_session(svc, None, "default").await?)
}

/// Ends a session.
pub async fn sign_out(svc: &Service, s: &Session) -> Result<(), AuthError> {
    svc.store.delete_ui_session(&s.id_hash).await?;
    Ok(())
}

/// The session acts in `workspace` from now on (404 when there is no such workspace, 403 when
/// the signed-in user is not a member).
pub async fn switch_workspace(
    svc: &Service,
    s: &Session,
    workspace: &str,
) -> Result<(), AuthError> {
    if !svc.store.workspace_exists(workspace).await? {
        return Err(ServiceError::NotFound(format!("no workspace {workspace:?}")).into());
    }
    if let Some(user) = &s.user_id {
        let u = svc
            .store
            .user(user)
            .await?
            .ok_or_else(|| AuthError::Unauthorized("this account no longer exists".into()))?;
        super::people::user_principal(&svc.store, &u, workspace).await?;
    }
    svc.store
        .set_ui_session_workspace(&s.id_hash, workspace)
        .await?;
    Ok(())
}
