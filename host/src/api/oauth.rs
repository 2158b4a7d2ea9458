//! Browser-facing OAuth endpoints: the launch link and the callback (the done page is a page:
//! [`crate::ui`]).
//!
//! The callback always answers with `Cache-Control: no-store` and `Referrer-Policy: no-referrer`,
//! and ends in a redirect to a clean URL (no code, no state) on success (O8).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::auth::sessions::{cookies, session_hash_of};
use crate::connections::{CallbackParams, Error as ServiceError};
use crate::web::{escape, no_store};

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    no_store(
        (
            status,
            Html(format!(
                "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t}</title></head><body style=\"font:16px system-ui;margin:3rem auto;max-width:36rem\"><h1>{t}</h1><p role=alert>{m}</p></body></html>",
                t = escape(title),
                m = escape(message)
            )),
        )
            .into_response(),
    )
}

fn error_page(e: ServiceError) -> Response {
    let status = match e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Upstream(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    page(status, "Connection not completed", &e.to_string())
}

/// `GET /oauth/launch/{token}`: binds the flow to this browser with a cookie, then redirects to
/// the provider.
pub async fn launch(
    State(s): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let session = session_hash_of(&s.service, &headers);
    match s.service.launch(&token, session.as_deref()).await {
        Ok((url, cookie, value)) => {
            let secure = if s.service.secure_cookies() {
                "; Secure"
            } else {
                ""
            };
            let set_cookie =
                format!("{cookie}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=600{secure}");
            let mut r = (StatusCode::FOUND, [(header::LOCATION, url)]).into_response();
            if let Ok(v) = HeaderValue::from_str(&set_cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            no_store(r)
        }
        Err(e) => error_page(e),
    }
}

/// `GET /oauth/callback`.
pub async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<CallbackParams>,
) -> Response {
    match s.service.callback(p, &cookies(&headers)).await {
        Ok(outcome) => {
            let mut r = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, outcome.location)],
            )
                .into_response();
            if let Some(name) = outcome.clear_cookie {
                let secure = if s.service.secure_cookies() {
                    "; Secure"
                } else {
                    ""
                };
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
                )) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            no_store(r)
        }
        Err(e) => error_page(e),
    }
}
