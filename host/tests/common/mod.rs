//! Shared helpers for the host's integration tests: a fake Slack and runtime set-up.
#![allow(dead_code)]

pub mod conformance;
pub mod e2e;
pub mod fake_as;
pub mod python;
pub mod smtp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use keyport::runtime::{CallEnv, Runtime, RuntimeConfig, Secret};
use serde_json::{Value, json};

pub const SLACK_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";

/// What the fake Slack saw.
#[derive(Default, Clone)]
pub struct Seen {
    pub authorization: Vec<Option<String>>,
}

/// A fake Slack on 127.0.0.1 answering `auth.test` with the real response shape. A request
/// without `Authorization: Bearer SLACK_TOKEN` gets `ok:false, error:invalid_auth` at HTTP 200,
/// as Slack does.
pub async fn fake_slack() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/api/auth.test",
        post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                s.lock().unwrap().authorization.push(auth.clone());
                if auth.as_deref() != Some(&format!("Bearer {SLACK_TOKEN}")) {
                    return Json(json!({"ok": false, "error": "invalid_auth"}));
                }
                Json(json!({
                    "ok": true,
                    "url": "https://t-rex-inc.slack.com/",
                    "team": "T-Rex Inc",
                    "user": "keyport",
                    "team_id": "T0123ABCD",
                    "user_id": "U0456EFGH",
                    "bot_id": "B0789IJKL",
                    "is_enterprise_install": false
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// A runtime allowed to reach loopback (the fake providers live there).
pub fn runtime_with_loopback() -> Runtime {
    Runtime::new(RuntimeConfig {
        allow_loopback: true,
        ..Default::default()
    })
    .unwrap()
}

/// The env of a Slack call routed to a fake at `addr`.
pub fn slack_env(addr: SocketAddr, token: &str) -> CallEnv {
    CallEnv {
        credential: Some(Secret::new(token)),
        api_base_url: Some("https://slack.com/api/".into()),
        endpoint_overrides: vec![("https://slack.com/".into(), format!("http://{addr}/"))],
        ..Default::default()
    }
}

pub fn builtin(name: &str) -> &'static [u8] {
    keyport::builtin::BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no built-in connector {name}"))
        .1
}

pub fn ctx(config: Value) -> keyport::runtime::CallContext {
    keyport::runtime::CallContext {
        config: config.to_string(),
        metadata: "{}".into(),
        definition: String::new(),
    }
}

/// Serves an axum app on 127.0.0.1 and returns its base URL.
pub async fn serve_fake(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Runs an OAuth connect through `keyport serve`: start, launch, follow the fake provider's
/// authorize redirect, finish the callback. Returns (connection id, keyport's final redirect).
pub async fn oauth_connect(kp: &e2e::Keyport, connector: &str, extra: Value) -> (String, String) {
    let mut body = serde_json::json!({"connector": connector});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, started) = kp.post("/api/v1/connections/oauth/start", body).await;
    assert_eq!(s, 201, "{started}");
    let id = started["connection_id"].as_str().unwrap().to_string();
    let browser = e2e::Browser::new();
    let (s, loc, body) = browser
        .get(started["authorize_url"].as_str().unwrap())
        .await;
    assert_eq!(s, 302, "{body}");
    let (s, loc, body) = browser.get(&loc.unwrap()).await;
    assert!(
        (300..400).contains(&s),
        "the fake provider approves with a redirect: {s} {body}"
    );
    let done = browser.finish(&loc.unwrap()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    (id, done.location.unwrap())
}

/// Sets a provider app (client credentials and endpoint overrides to a fake).
pub async fn provider_app(
    kp: &e2e::Keyport,
    connector: &str,
    overrides: &[(&str, &str)],
    oauth: bool,
) {
    let map: serde_json::Map<String, Value> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let mut body = serde_json::json!({"endpoint_overrides": map});
    if oauth {
        body["client_id"] = "client-123".into();
        body["client_secret"] = "client-secret-456".into();
    }
    let (s, b) = kp
        .put(&format!("/api/v1/provider-apps/{connector}"), body)
        .await;
    assert_eq!(s, 200, "{b}");
}

/// Redirects to `redirect_uri` with a code and the state (what a consenting user's provider does).
pub fn approve(
    q: &std::collections::HashMap<String, String>,
    code: &str,
    iss: Option<&str>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut u = url::Url::parse(&q["redirect_uri"]).unwrap();
    u.query_pairs_mut()
        .append_pair("code", code)
        .append_pair("state", &q["state"]);
    if let Some(i) = iss {
        u.query_pairs_mut().append_pair("iss", i);
    }
    axum::response::Redirect::to(u.as_str()).into_response()
}

pub const GOOD_KEY: &str = "ak_live_5d1e0f3c2b9a8877";

/// A fake API-key provider: `GET /v1/me` with the good key answers the account; anything else
/// answers `401 {"detail": "Invalid Token"}`.
pub async fn fake_key_provider() -> SocketAddr {
    let app = axum::Router::new().route(
        "/v1/me",
        get(|h: HeaderMap| async move {
            if h.get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {GOOD_KEY}"))
            {
                Json(json!({"id": "acct-77", "name": "Acme Sales"})).into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"detail": "Invalid Token"})),
                )
                    .into_response()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// A page as the web UI shows it after signing in with the admin token.
pub async fn signed_in_page(kp: &e2e::Keyport, path: &str) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .post(format!("{}/login", kp.url))
        .form(&[("token", e2e::ADMIN)])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    browser
        .get(format!("{}{path}", kp.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A host whose `oidc-test` connector talks to a scriptable fake authorization server.
pub async fn keyport_with_fake_as() -> (e2e::Keyport, fake_as::FakeAs) {
    let kp = e2e::Keyport::start(e2e::KeyportOpts {
        master_keys: Some(e2e::master_keys()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    (kp, fake)
}

/// An `apikey-test` connection (key `key-123`) whose provider is `app`, served on loopback; its id.
pub async fn apikey_connection(kp: &e2e::Keyport, app: axum::Router) -> String {
    apikey_connection_at(kp, &serve_fake(app).await).await
}

/// An `apikey-test` connection (key `key-123`) whose provider runs at `base`; its id.
pub async fn apikey_connection_at(kp: &e2e::Keyport, base: &str) -> String {
    kp.point_apikey_test_at(base).await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": "key-123"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}
