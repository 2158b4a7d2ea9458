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
//! is stored with a CSRF token; 12 hours idle expiry, 7 days at most; a new admin token ends
//! every session. Failed sign-ins are limited per client address. Pages carry a strict Content Security Policy
//! (no inline script or style).

mod pages;

use axum::Router;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::auth::ADMIN_TOKEN_HASH;
use crate::api::{ApiError, AppState};
use crate::oauth::hash;
use crate::store::{UiSessionRow, now_ms};

/// Idle lifetime of a UI session.
const SESSION_IDLE_MS: i64 = 12 * 3600 * 1000;
/// Longest lifetime of a UI session, however active.
const SESSION_MAX_MS: i64 = 7 * 24 * 3600 * 1000;

/// The session cookie's name (`__Host-` prefixed behind https).
fn cookie_name(state: &AppState) -> &'static str {
    if state.service.secure_cookies() {
        "__Host-keyport-session"
    } else {
        "keyport-session"
    }
}

/// The SHA-256 of the request's session cookie, if it carries one (not checked against the store).
pub fn session_hash_of(state: &AppState, headers: &HeaderMap) -> Option<String> {
    crate::api::cookies(headers)
        .remove(cookie_name(state))
        .filter(|v| !v.is_empty())
        .map(|v| hash(&v))
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
        let expires = (now + SESSION_IDLE_MS).min(s.created_at + SESSION_MAX_MS);
        store
            .touch_ui_session(&h, now, expires)
            .await
            .map_err(ApiError::from_store)?;
    }
    Ok(session)
}

/// API calls made with a session cookie, reads included (a cross-site link must not make the
/// browser call the proxy), need the page's CSRF token and, when the browser sends one, a
/// same-origin `Origin`.
pub fn check_csrf(state: &AppState, headers: &HeaderMap, s: &UiSessionRow) -> Result<(), ApiError> {
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes()) {
        return Err(ApiError::forbidden(
            "missing or wrong CSRF token: reload the page and try again",
        ));
    }
    same_origin(state, headers)
}

/// A browser's `Origin`, when sent, must be keyport's public origin (or, when no public URL is
/// configured behind a proxy, the `Host` the request came to).
fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let public = url::Url::parse(&state.service.config.public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let scheme = if state.service.secure_cookies() {
        "https"
    } else {
        "http"
    };
    if origin.eq_ignore_ascii_case(&public)
        || origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
    {
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

/// A signed-in page request (the session, and the workspaces to switch between); anything else
/// is sent to `/login`.
pub(crate) struct SignedIn(pub UiSessionRow, pub Vec<(String, String)>);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session_of(state, &parts.headers).await {
            Ok(Some(s)) => {
                let workspaces = state
                    .service
                    .store
                    .workspaces()
                    .await
                    .map_err(|e| ApiError::from_store(e).into_response())?
                    .into_iter()
                    .map(|(id, name, _)| (id, name))
                    .collect();
                Ok(SignedIn(s, workspaces))
            }
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
        .route("/ui/workspace", post(switch_workspace))
        .route("/ui/csrf", get(csrf_token))
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

/// Only local paths: no open redirect through `next` (browsers drop tabs and newlines from URLs,
/// so `/\t/evil.example` would become `//evil.example`).
fn local_path(next: Option<&str>) -> String {
    let Some(n) = next else {
        return "/".into();
    };
    let clean = n.starts_with('/')
        && !n.starts_with("//")
        && n.bytes().all(|b| b > 0x20 && b != 0x7f && b != b'\\');
    let base = url::Url::parse("http://keyport.invalid/").expect("static URL");
    match base.join(n) {
        Ok(u) if clean && u.origin() == base.origin() => {
            let mut out = u.path().to_string();
            if let Some(q) = u.query() {
                out.push('?');
                out.push_str(q);
            }
            out
        }
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

/// Failed sign-ins allowed per client address per minute.
const SIGN_IN_FAILURES: u32 = 10;

type FailureMap = std::sync::Mutex<std::collections::HashMap<IpAddr, (i64, u32)>>;

/// Failed sign-ins by client address: (window start, failures). A successful sign-in resets its
/// address; other addresses are not affected.
fn sign_in_failures() -> &'static FailureMap {
    static FAILURES: std::sync::OnceLock<FailureMap> = std::sync::OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// Addresses tracked at once; beyond that, new addresses share one budget.
const SIGN_IN_TRACKED: usize = 10_000;

/// The key an address is counted under: IPv6 by its /64 (one host can hold a whole /64), and
/// addresses beyond the table's capacity together under one key.
fn sign_in_key(map: &std::collections::HashMap<IpAddr, (i64, u32)>, ip: IpAddr) -> IpAddr {
    let key = match ip {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(seg))
        }
        v4 => v4,
    };
    if map.len() >= SIGN_IN_TRACKED && !map.contains_key(&key) {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        key
    }
}

fn sign_in_blocked(ip: IpAddr, now: i64) -> bool {
    let map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&sign_in_key(&map, ip))
        .is_some_and(|(start, n)| now - start < 60_000 && *n >= SIGN_IN_FAILURES)
}

fn sign_in_failed(ip: IpAddr, now: i64) {
    let mut map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= SIGN_IN_TRACKED {
        map.retain(|_, (start, _)| now - *start < 60_000);
    }
    let key = sign_in_key(&map, ip);
    let e = map.entry(key).or_insert((now, 0));
    if now - e.0 >= 60_000 {
        *e = (now, 0);
    }
    e.1 += 1;
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = local_path(f.next.as_deref());
    if same_origin(&state, &headers).is_err() {
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
    let now = now_ms();
    if sign_in_blocked(peer.ip(), now) {
        return page_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(
                &next,
                Some("Too many failed sign-ins from this address. Wait a minute, then try again."),
            ),
        );
    }
    let given = hash(f.token.trim());
    if admin.is_none_or(|a| !constant_time_eq(a.as_bytes(), given.as_bytes())) {
        sign_in_failed(peer.ip(), now);
        tracing::warn!(client = %peer.ip(), "UI sign-in with a wrong token");
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
    {
        let mut map = sign_in_failures().lock().unwrap_or_else(|p| p.into_inner());
        let key = sign_in_key(&map, peer.ip());
        map.remove(&key);
    }
    let cookie = crate::vault::random_hex(32);
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
        SESSION_MAX_MS / 1000
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

#[derive(Deserialize)]
struct WorkspaceForm {
    csrf: String,
    workspace: String,
    next: Option<String>,
}

/// `POST /ui/workspace`: the session acts in another workspace from now on.
async fn switch_workspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<WorkspaceForm>,
) -> Response {
    let session = match session_of(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return e.into_response(),
    };
    if !constant_time_eq(f.csrf.as_bytes(), session.csrf_token.as_bytes())
        || same_origin(&state, &headers).is_err()
    {
        return ApiError::forbidden("missing or wrong CSRF token: reload the page and try again")
            .into_response();
    }
    let store = &state.service.store;
    match store.workspace_exists(&f.workspace).await {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::not_found(format!("no workspace {:?}", f.workspace)).into_response();
        }
        Err(e) => return ApiError::from_store(e).into_response(),
    }
    if let Err(e) = store
        .set_ui_session_workspace(&session.id_hash, &f.workspace)
        .await
    {
        return ApiError::from_store(e).into_response();
    }
    // Pages of one workspace's connections mean nothing in another: go to the list.
    let next = local_path(f.next.as_deref());
    let next = if next.starts_with("/connections/") {
        "/connections".to_string()
    } else {
        next
    };
    Redirect::to(&next).into_response()
}

/// `GET /ui/csrf`: the session's CSRF token, for a page whose session was renewed in another tab
/// (readable only by keyport's own pages: no CORS).
async fn csrf_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if same_origin(&state, &headers).is_err() {
        return ApiError::forbidden("cross-origin request refused: use keyport's own pages")
            .into_response();
    }
    match session_of(&state, &headers).await {
        Ok(Some(s)) => {
            let mut r = axum::Json(serde_json::json!({"csrf": s.csrf_token})).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(None) => ApiError::unauthorized("sign in first").into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            local_path(Some("/connections?status=active")),
            "/connections?status=active"
        );
        assert_eq!(
            local_path(Some("/connections/conn_1")),
            "/connections/conn_1"
        );
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/ok\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn failed_sign_ins_block_only_their_address() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = 1_000_000;
        for _ in 0..SIGN_IN_FAILURES {
            assert!(!sign_in_blocked(a, now));
            sign_in_failed(a, now);
        }
        assert!(sign_in_blocked(a, now));
        assert!(!sign_in_blocked(b, now));
        assert!(!sign_in_blocked(a, now + 60_000), "the window passes");
        // One IPv6 host holds a /64: its addresses share one budget.
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        for i in 0..SIGN_IN_FAILURES {
            sign_in_failed(v6(&format!("2001:db8:1:2::{i:x}")), now);
        }
        assert!(sign_in_blocked(v6("2001:db8:1:2::ffff"), now));
        assert!(!sign_in_blocked(v6("2001:db8:1:3::1"), now));
    }

    #[test]
    fn outcome_texts_are_fixed() {
        assert_eq!(
            outcome_message("error", Some("access_denied")),
            "The provider denied access — try again and approve the permissions."
        );
        assert!(
            outcome_message("error", Some("<script>"))
                .starts_with("The connection was not completed")
        );
    }
}
