//! The web UI: server-rendered pages embedded in the binary, with one small script for the OAuth
//! popup, dialogs, forms and toasts. Pages are read-only renderings; every change goes through the
//! JSON API with the session cookie and the page's CSRF token (see `api::auth`).
//!
//! | page | what it shows |
//! |---|---|
//! | `/login` | sign-in with the admin token (printed at first start of the embedded default) |
//! | `/` | Integrations: a card per connector, Connect (OAuth popup) or Configure (API key) |
//! | `/connections` | the connections table, filters by connector and status |
//! | `/connections/{id}` | status and what to do next, actions, config form, recent audit events |
//! | `/admin` | loaded connectors and upload, custom OAuth import, provider app settings |
//! | `/admin/audit` | the audit log with filters |
//!
//! Sessions: a random cookie (`HttpOnly`, `SameSite=Lax`, `Secure` behind https) whose SHA-256
//! is stored with a CSRF token; 12 hours idle expiry. Pages carry a strict Content Security Policy
//! (no inline script or style).

mod pages;

use axum::Router;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::auth::ADMIN_TOKEN_HASH;
use crate::api::{ApiError, AppState};
use crate::oauth::hash;
use crate::store::{UiSessionRow, now_ms};

/// Idle lifetime of a UI session.
const SESSION_IDLE_MS: i64 = 12 * 3600 * 1000;

/// The session cookie's name (`__Host-` prefixed behind https).
fn cookie_name(state: &AppState) -> &'static str {
    if state.service.secure_cookies() {
        "__Host-keyport-session"
    } else {
        "keyport-session"
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The SHA-256 of the request's session cookie, if it carries one (not checked against the store).
pub fn session_hash_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, cookie_name(state)).map(hash)
}

/// The live session the request's cookie belongs to; sliding idle expiry.
pub async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<UiSessionRow>, ApiError> {
    let Some(h) = session_hash_of(state, headers) else {
        return Ok(None);
    };
    let now = now_ms();
    let store = &state.service.store;
    let session = store
        .ui_session(&h, now)
        .await
        .map_err(ApiError::from_store)?;
    if let Some(s) = &session
        && now - s.last_seen_at > 60_000
    {
        store
            .touch_ui_session(&h, now, now + SESSION_IDLE_MS)
            .await
            .map_err(ApiError::from_store)?;
    }
    Ok(session)
}

/// Changes made with a session cookie need the page's CSRF token and, when the browser sends
/// one, a same-origin `Origin`.
pub fn check_csrf(method: &Method, headers: &HeaderMap, s: &UiSessionRow) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes()) {
        return Err(ApiError::forbidden(
            "missing or wrong CSRF token: reload the page and try again",
        ));
    }
    same_origin(headers)
}

fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return Ok(());
    };
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "cross-origin request refused: use keyport's own pages",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Text for an OAuth outcome: fixed texts only (the codes arrive in a URL anyone can write).
pub fn outcome_message(status: &str, error: Option<&str>) -> String {
    match (status, error) {
        ("active", _) => "Connected. You can close this window.".into(),
        ("pending", _) => {
            "Authorized. keyport is still looking up the account; it will appear shortly.".into()
        }
        (_, Some("access_denied")) => {
            "The provider denied access — try again and approve the permissions.".into()
        }
        (_, Some("token_exchange_failed")) => {
            "The provider did not complete the authorization. Try connecting again; if it keeps failing, check the provider app settings under Admin.".into()
        }
        (_, Some("provider_error")) => {
            "The provider returned an error. Try connecting again.".into()
        }
        _ => "The connection was not completed. Try connecting again.".into(),
    }
}

/// A signed-in page request; anything else is sent to `/login`.
pub(crate) struct SignedIn(pub UiSessionRow);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(state, &parts.headers).await {
            Ok(Some(s)) => Ok(SignedIn(s)),
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next)
                    .finish();
                Err(Redirect::to(&format!("/login?{q}")).into_response())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

/// The UI's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::integrations))
        .route("/connections", get(pages::connections))
        .route("/connections/{id}", get(pages::connection))
        .route("/admin", get(pages::admin))
        .route("/admin/audit", get(pages::audit))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/app.js", get(asset_js))
        .route("/ui/app.css", get(asset_css))
}

async fn asset_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

async fn asset_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("app.css"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers every page carries.
pub(crate) fn page_response(status: StatusCode, markup: maud::Markup) -> Response {
    let mut r = (status, markup).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only local paths: no open redirect through `next`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    page_response(
        StatusCode::OK,
        pages::login(&local_path(q.next.as_deref()), None),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Sign-in attempts a process accepts: a burst of 10, then one every 6 seconds.
fn sign_in_limiter() -> &'static governor::DefaultDirectRateLimiter {
    static LIMITER: std::sync::OnceLock<governor::DefaultDirectRateLimiter> =
        std::sync::OnceLock::new();
    LIMITER.get_or_init(|| {
        governor::RateLimiter::direct(governor::Quota::per_minute(
            std::num::NonZeroU32::new(10).expect("non-zero"),
        ))
    })
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = local_path(f.next.as_deref());
    if sign_in_limiter().check().is_err() {
        return page_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(
                &next,
                Some("Too many sign-in attempts. Wait a minute, then try again."),
            ),
        );
    }
    if same_origin(&headers).is_err() {
        return page_response(
            StatusCode::FORBIDDEN,
            pages::login(
                &next,
                Some("Sign-in must come from this page. Reload it and try again."),
            ),
        );
    }
    let store = &state.service.store;
    let admin = match store.setting(ADMIN_TOKEN_HASH).await {
        Ok(h) => h,
        Err(e) => return ApiError::from_store(e).into_response(),
    };
    let given = hash(f.token.trim());
    if admin.is_none_or(|a| !constant_time_eq(a.as_bytes(), given.as_bytes())) {
        tracing::warn!("UI sign-in with a wrong token");
        return page_response(
            StatusCode::UNAUTHORIZED,
            pages::login(
                &next,
                Some(
                    "That is not the admin token. Use the token printed when keyport first started (or the value of KEYPORT_ADMIN_TOKEN).",
                ),
            ),
        );
    }
    let cookie = crate::vault::random_hex(32);
    let now = now_ms();
    let row = UiSessionRow {
        id_hash: hash(&cookie),
        csrf_token: crate::vault::random_hex(24),
        workspace_id: "default".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + SESSION_IDLE_MS,
    };
    if let Err(e) = store.create_ui_session(&row).await {
        return ApiError::from_store(e).into_response();
    }
    let _ = store.purge_ui_sessions(now).await;
    let secure = if state.service.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(&state),
        SESSION_IDLE_MS / 1000
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    if let Ok(Some(s)) = session_of(&state, &headers).await
        && constant_time_eq(f.csrf.as_bytes(), s.csrf_token.as_bytes())
    {
        let _ = state.service.store.delete_ui_session(&s.id_hash).await;
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        cookie_name(&state)
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
