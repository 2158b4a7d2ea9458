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

mod members;
mod pages;
mod portal;

use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::auth::AuthError;
use crate::auth::people::{self, PasswordSignInError};
use crate::auth::sessions::{self, Session, SignInError};
use crate::auth::sso;
use crate::connections::Principal;
use crate::web::{ApiError, AppState, escape, no_store};

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
        (_, Some("account_mismatch")) => {
            "This workspace requires the connected account to be your own (the one with your email address). Connect again with that account; the connection page says which one.".into()
        }
        (_, Some("provider_error")) => {
            "The provider returned an error. Try connecting again.".into()
        }
        _ => "The connection was not completed. Try connecting again.".into(),
    }
}

/// A signed-in page request (the session, the workspaces to switch between, and who it is);
/// anything else is sent to `/login`.
pub(crate) struct SignedIn(pub Session, pub Vec<(String, String)>, pub Principal);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match sessions::session_of(&state.service, &parts.headers).await {
            Ok(Some(s)) => {
                let principal = people::session_principal(&state.service, &s)
                    .await
                    .map_err(|e| ApiError::from(e).into_response())?;
                // Clients have the portal, their connections' pages and their account.
                let path = parts.uri.path();
                if principal.role() == Some(crate::connections::Role::Client)
                    && !(path.starts_with("/portal")
                        || path.starts_with("/connections/")
                        || path == "/account")
                {
                    return Err(Redirect::to("/portal").into_response());
                }
                let mine: Option<Vec<String>> = match &s.user_id {
                    Some(u) if !principal.installation_admin => Some(
                        state
                            .service
                            .store
                            .memberships_of(u)
                            .await
                            .map_err(|e| ApiError::from(AuthError::from(e)).into_response())?
                            .into_iter()
                            .map(|(w, _)| w)
                            .collect(),
                    ),
                    _ => None,
                };
                let workspaces = state
                    .service
                    .workspaces()
                    .await
                    .map_err(|e| ApiError::from(e).into_response())?
                    .into_iter()
                    .filter(|(id, _, _)| mine.as_ref().is_none_or(|m| m.contains(id)))
                    .map(|(id, name, _)| (id, name))
                    .collect();
                Ok(SignedIn(s, workspaces, principal))
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
            Err(e) => Err(ApiError::from(e).into_response()),
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
        .route("/members", get(members::members))
        .route("/account", get(members::account))
        .route("/invite", get(members::invite))
        .route("/portal", get(portal::portal))
        .route("/portal/join", get(portal::join))
        .route("/login/link", get(portal::sign_in_link))
        .route("/portal/connections", get(portal::connections))
        .route("/portal/connections/{id}", get(portal::connection))
        .route("/sso/start", get(sso_start))
        .route("/sso/callback", get(sso_callback))
        .route("/admin/audit", get(pages::audit))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/workspace", post(switch_workspace))
        .route("/ui/csrf", get(csrf_token))
        .route("/oauth/done", get(oauth_done))
        .route("/ui/app.js", get(asset_js))
        .route("/static/keyport-connect.js", get(connect_js))
        .route(
            &format!("/static/keyport-connect-{}.js", CONNECT_JS_VERSION),
            get(connect_js_versioned),
        )
        .route("/ui/app.css", get(asset_css))
}

async fn asset_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

/// The embeddable Connect script, for platforms' own pages (see the README, "Embedding the
/// Connect flow").
pub const CONNECT_JS: &str = include_str!("keyport-connect.js");
/// Its version: `/static/keyport-connect-<version>.js` never changes, so pages may pin it with a
/// subresource-integrity hash.
pub const CONNECT_JS_VERSION: &str = "1.0.0";

fn connect_js_response(cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
            // Loaded by other sites, with `crossorigin` for the integrity check.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CONNECT_JS,
    )
        .into_response()
}

async fn connect_js() -> Response {
    connect_js_response("public, max-age=300")
}

async fn connect_js_versioned() -> Response {
    connect_js_response("public, max-age=31536000, immutable")
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

async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let token_first = !people::has_people(&state.service).await;
    let sso = matches!(sso::config(&state.service).await, Ok(Some(_)));
    page_response(
        StatusCode::OK,
        pages::login(&local_path(q.next.as_deref()), None, token_first, sso),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    /// The admin token, or
    token: Option<String>,
    /// an email and password.
    email: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = local_path(f.next.as_deref());
    if sessions::same_origin(&state.service, &headers).is_err() {
        return page_response(
            StatusCode::FORBIDDEN,
            pages::login(
                &next,
                Some("Sign-in must come from this page. Reload it and try again."),
                f.token.is_some(),
                false,
            ),
        );
    }
    let client = state.client_ip(peer.ip(), &headers);
    let signed_in = match (&f.token, &f.email) {
        (Some(token), _) => sessions::sign_in_with_admin_token(&state.service, token, client)
            .await
            .map_err(|e| match e {
                SignInError::Auth(e) => Err(e),
                SignInError::Limited => Ok((StatusCode::TOO_MANY_REQUESTS, e.to_string())),
                e => Ok((StatusCode::UNAUTHORIZED, e.to_string())),
            }),
        (None, Some(email)) => people::sign_in_with_password(
            &state.service,
            email,
            f.password.as_deref().unwrap_or_default(),
            client,
        )
        .await
        .map_err(|e| match e {
            PasswordSignInError::Auth(e) => Err(e),
            PasswordSignInError::Limited => Ok((StatusCode::TOO_MANY_REQUESTS, e.to_string())),
            PasswordSignInError::Wrong => Ok((StatusCode::UNAUTHORIZED, e.to_string())),
            e => Ok((StatusCode::FORBIDDEN, e.to_string())),
        }),
        (None, None) => Err(Ok((
            StatusCode::BAD_REQUEST,
            "Enter your email and password, or the admin token.".to_string(),
        ))),
    };
    let cookie = match signed_in {
        Ok((cookie, _)) => cookie,
        Err(Err(e)) => return ApiError::from(e).into_response(),
        Err(Ok((status, message))) => {
            return page_response(
                status,
                pages::login(&next, Some(&message), f.token.is_some(), false),
            );
        }
    };
    with_session_cookie(&state, Redirect::to(&next).into_response(), &cookie)
}

/// `response` with the session cookie set.
fn with_session_cookie(state: &AppState, mut r: Response, cookie: &str) -> Response {
    sessions::set_session_cookie(&state.service, r.headers_mut(), cookie);
    r
}

/// The cookie binding a single sign-on flow to the browser that started it.
const SSO_COOKIE: &str = "keyport-sso";

/// `GET /sso/start?next=`: to the identity provider.
async fn sso_start(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = local_path(q.next.as_deref());
    match sso::start(&state.service, &next).await {
        Ok((url, browser)) => {
            let mut r = Redirect::to(&url).into_response();
            let secure = if state.service.secure_cookies() {
                "; Secure"
            } else {
                ""
            };
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{SSO_COOKIE}={browser}; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=600{secure}"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => page_response(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(
                &next,
                Some(&format!("Single sign-on is not available: {e}")),
                false,
                false,
            ),
        ),
    }
}

/// `GET /sso/callback`: back from the identity provider.
async fn sso_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let browser = sessions::cookies(&headers).remove(SSO_COOKIE);
    let clear =
        HeaderValue::from_static("keyport-sso=; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=0");
    let mut r = match sso::callback(&state.service, &q, browser.as_deref()).await {
        Ok((cookie, _, next)) => {
            with_session_cookie(&state, Redirect::to(&next).into_response(), &cookie)
        }
        Err(e) => page_response(
            StatusCode::FORBIDDEN,
            pages::login("/", Some(&e.to_string()), false, true),
        ),
    };
    r.headers_mut().append(header::SET_COOKIE, clear);
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
    if let Ok(Some(s)) = sessions::session_of(&state.service, &headers).await
        && sessions::csrf_matches(&s, &f.csrf)
    {
        let _ = sessions::sign_out(&state.service, &s).await;
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        sessions::cookie_name(&state.service)
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
    let session = match sessions::session_of(&state.service, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !sessions::csrf_matches(&session, &f.csrf)
        || sessions::same_origin(&state.service, &headers).is_err()
    {
        return ApiError::forbidden("missing or wrong CSRF token: reload the page and try again")
            .into_response();
    }
    if let Err(e) = sessions::switch_workspace(&state.service, &session, &f.workspace).await {
        return ApiError::from(e).into_response();
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
    if sessions::same_origin(&state.service, &headers).is_err() {
        return ApiError::forbidden("cross-origin request refused: use keyport's own pages")
            .into_response();
    }
    match sessions::session_of(&state.service, &headers).await {
        Ok(Some(s)) => {
            let mut r = axum::Json(serde_json::json!({"csrf": s.csrf_token})).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(None) => ApiError::unauthorized("sign in first").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /oauth/done`: tells an opener window (the OAuth popup's parent) and the user how it went.
async fn oauth_done(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = q.get("status").map(String::as_str).unwrap_or("unknown");
    let conn = q.get("connection_id").map(String::as_str).unwrap_or("");
    // Only fixed texts: the query string is anyone's to write.
    let message = outcome_message(status, q.get("error").map(String::as_str));
    let payload = serde_json::json!({"type": "keyport:oauth", "status": status, "connection_id": conn, "error": q.get("error").filter(|_| status == "error"), "message": message});
    let payload = payload.to_string().replace('<', "\\u003c");
    // The opener hears it through keyport-connect.js (what platforms' pages use too); a window
    // whose opener link the provider cut tells keyport's pages by broadcast.
    let script = format!(
        "<script src=\"/static/keyport-connect.js\"></script><script>try{{if(!window.opener&&window.BroadcastChannel){{new BroadcastChannel('keyport-oauth').postMessage({});setTimeout(function(){{window.close();}},200);}}}}catch(e){{}}</script>",
        payload
    );
    no_store(
        Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>keyport</title></head><body style=\"font:16px system-ui;margin:3rem auto;max-width:36rem\"><h1>{}</h1><p role=status>{}</p>{script}<p><a href=\"/connections\">Back to keyport</a></p></body></html>",
        if status == "error" { "Connection not completed" } else { "Connection" },
        escape(&message)
    ))
        .into_response(),
    )
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
