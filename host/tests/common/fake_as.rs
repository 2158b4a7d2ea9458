//! A scriptable fake authorization server for the O-series tests: it counts every token request
//! and can misbehave on demand (wrong `iss`, 307 on the token endpoint, 200-with-error, 503 on
//! userinfo). The real-server tests use oidc-provider instead.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Script {
    /// `iss` to send: None = the server's own; Some("") = omit it.
    pub iss: Option<String>,
    /// Token endpoint answers 307 to /token-elsewhere.
    pub token_redirect: bool,
    /// Token endpoint answers this JSON with HTTP 200 instead of tokens.
    pub token_body: Option<Value>,
    /// Userinfo answers 503 this many times first.
    pub userinfo_failures: usize,
    /// Refresh grants answer 503 this many times first ...
    pub refresh_failures: usize,
    /// ... or 429 with this `Retry-After` (seconds), when set.
    pub refresh_retry_after: Option<u64>,
    /// The token endpoint answers 200 with an endless body (no length; stops at 64 MiB so a
    /// test ends whatever happens), counting what it sent in `Seen::token_bytes_sent`.
    pub token_endless: bool,
    /// Refresh grants answer `invalid_grant`.
    pub refresh_invalid_grant: bool,
    /// `expires_in` of issued tokens (default "3600").
    pub expires_in: Option<Value>,
    /// `refresh_token_expires_in` of issued tokens, if any.
    pub refresh_token_expires_in: Option<u64>,
    /// The first this-many refresh grants are answered only after `slow_refresh_ms`.
    pub slow_refreshes: usize,
    pub slow_refresh_ms: u64,
    /// Userinfo rejects every token (401).
    pub userinfo_rejects: bool,
    /// The API rejects every token.
    pub api_rejects_all: bool,
    /// Userinfo answers only after this long.
    pub userinfo_delay_ms: u64,
    /// The revocation endpoint answers this status (default 200) ...
    pub revocation_status: Option<u16>,
    /// ... after this long.
    pub revocation_delay_ms: u64,
}

#[derive(Default)]
pub struct Seen {
    pub token_requests: Vec<HashMap<String, String>>,
    /// When each token request arrived.
    pub token_times: Vec<std::time::Instant>,
    pub redirected_token_requests: usize,
    pub userinfo_requests: usize,
    pub authorize_requests: Vec<HashMap<String, String>>,
    /// Access tokens the API accepts (every issued one until `invalidate_tokens`).
    pub valid_tokens: std::collections::HashSet<String>,
    /// API requests: (method, path, status answered).
    pub api_requests: Vec<(String, String, u16)>,
    /// Bytes of endless token answers produced so far (`Script::token_endless`).
    pub token_bytes_sent: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Clone)]
pub struct FakeAs {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    pub seen: Arc<Mutex<Seen>>,
}

impl FakeAs {
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token_requests(&self) -> usize {
        self.seen.lock().unwrap().token_requests.len()
    }
}

pub async fn start() -> FakeAs {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = FakeAs {
        addr,
        script: Arc::default(),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/auth", get(authorize))
        .route("/token", post(token))
        .route("/token-elsewhere", any(token_elsewhere))
        .route("/me", get(userinfo))
        .route("/token/revocation", post(revocation))
        .route("/api/{*rest}", any(api))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    fake
}

/// RFC 7009 revocation: 200, or the scripted status after the scripted delay.
async fn revocation(State(f): State<FakeAs>) -> StatusCode {
    let (status, delay) = {
        let s = f.script.lock().unwrap();
        (s.revocation_status, s.revocation_delay_ms)
    };
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK)
}

/// Approves at once: redirects to `redirect_uri` with a code, the state and (scripted) `iss`.
async fn authorize(State(f): State<FakeAs>, Query(q): Query<HashMap<String, String>>) -> Response {
    f.seen.lock().unwrap().authorize_requests.push(q.clone());
    let mut u = url::Url::parse(&q["redirect_uri"]).unwrap();
    {
        let mut qp = u.query_pairs_mut();
        qp.append_pair("code", &format!("code-{}", uuid::Uuid::new_v4().simple()));
        qp.append_pair("state", &q["state"]);
        match f.script.lock().unwrap().iss.clone() {
            None => {
                qp.append_pair("iss", &f.issuer());
            }
            Some(s) if s.is_empty() => {}
            Some(s) => {
                qp.append_pair("iss", &s);
            }
        }
    }
    Redirect::to(u.as_str()).into_response()
}

async fn token(State(f): State<FakeAs>, Form(form): Form<HashMap<String, String>>) -> Response {
    {
        let mut seen = f.seen.lock().unwrap();
        seen.token_requests.push(form.clone());
        seen.token_times.push(std::time::Instant::now());
    }
    let delay = {
        let mut script = f.script.lock().unwrap();
        let refresh = form.get("grant_type").map(String::as_str) == Some("refresh_token");
        if refresh && script.slow_refreshes > 0 {
            script.slow_refreshes -= 1;
            script.slow_refresh_ms
        } else {
            0
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    let mut script = f.script.lock().unwrap();
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        if script.refresh_invalid_grant {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
                ),
            )
                .into_response();
        }
        if script.refresh_failures > 0 {
            script.refresh_failures -= 1;
            if let Some(secs) = script.refresh_retry_after {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", secs.to_string())],
                    Json(json!({"error": "rate_limited"})),
                )
                    .into_response();
            }
            return (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable").into_response();
        }
    }
    if script.token_endless {
        use futures::StreamExt;
        let counter = f.seen.lock().unwrap().token_bytes_sent.clone();
        let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
        let stream = futures::stream::iter(0..1024).map(move |_| {
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(chunk.clone())
        });
        return (
            [("content-type", "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
    }
    if script.token_redirect {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", "/token-elsewhere")],
        )
            .into_response();
    }
    if let Some(body) = &script.token_body {
        return Json(body.clone()).into_response();
    }
    let mut body = json!({
        "access_token": format!("fake-at-{}", uuid::Uuid::new_v4().simple()),
        "token_type": "Bearer",
        "expires_in": script.expires_in.clone().unwrap_or(json!("3600")),
        "refresh_token": format!("fake-rt-{}", uuid::Uuid::new_v4().simple()),
        "scope": "openid offline_access",
    });
    if let Some(secs) = script.refresh_token_expires_in {
        body["refresh_token_expires_in"] = json!(secs);
    }
    f.seen
        .lock()
        .unwrap()
        .valid_tokens
        .insert(body["access_token"].as_str().unwrap().to_string());
    Json(body).into_response()
}

async fn token_elsewhere(State(f): State<FakeAs>) -> Response {
    f.seen.lock().unwrap().redirected_token_requests += 1;
    Json(json!({"access_token": "should-never-be-used", "token_type": "Bearer"})).into_response()
}

async fn userinfo(State(f): State<FakeAs>, headers: HeaderMap) -> Response {
    let delay = f.script.lock().unwrap().userinfo_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let n = {
        let mut seen = f.seen.lock().unwrap();
        seen.userinfo_requests += 1;
        seen.userinfo_requests
    };
    if f.script.lock().unwrap().userinfo_rejects {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    if n <= f.script.lock().unwrap().userinfo_failures {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("Bearer fake-at-") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    Json(json!({"sub": "fake-user-1", "name": "Fake User", "email": "fake@example.com"}))
        .into_response()
}

impl FakeAs {
    /// The API stops accepting every token issued so far (they "expired").
    pub fn invalidate_tokens(&self) {
        self.seen.lock().unwrap().valid_tokens.clear();
    }
    pub fn api_requests(&self) -> Vec<(String, String, u16)> {
        self.seen.lock().unwrap().api_requests.clone()
    }
}

/// A small provider API behind the base URL:
/// - `/api/limited`: 429 with `Retry-After: 7`;
/// - `/api/flaky…`: 429 with `Retry-After: 1` the first time for each path, then like any other;
/// - `/api/slack-style`: HTTP 200 with `{"ok": false, "error": "invalid_auth"}` for a bad token;
/// - anything else: 401 for a bad token, else an echo of the request (method, path, query,
///   headers, body).
async fn api(
    State(f): State<FakeAs>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let valid = !f.script.lock().unwrap().api_rejects_all
        && f.seen.lock().unwrap().valid_tokens.contains(&token);
    let flaky = path.starts_with("/api/flaky")
        && !f
            .seen
            .lock()
            .unwrap()
            .api_requests
            .iter()
            .any(|r| r.1 == path);
    let (status, resp) = if flaky {
        (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(json!({"error": "slow_down"})),
            )
                .into_response(),
        )
    } else if path == "/api/limited" {
        (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                Json(json!({"error": "rate_limited"})),
            )
                .into_response(),
        )
    } else if path == "/api/slack-style" {
        let body = if valid {
            json!({"ok": true, "user": "U1"})
        } else {
            json!({"ok": false, "error": "invalid_auth"})
        };
        (200, Json(body).into_response())
    } else if !valid {
        (
            401,
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_token"})),
            )
                .into_response(),
        )
    } else {
        let hs: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        (
            200,
            (
                [("set-cookie", "provider-session=1"), ("x-provider", "fake")],
                Json(json!({
                    "method": method.as_str(),
                    "path": path,
                    "query": uri.query(),
                    "headers": hs,
                    "body": String::from_utf8_lossy(&body),
                })),
            )
                .into_response(),
        )
    };
    f.seen
        .lock()
        .unwrap()
        .api_requests
        .push((method.to_string(), path, status));
    resp
}
