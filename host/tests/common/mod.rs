//! Shared helpers for the host's integration tests: a fake Slack and runtime set-up.
#![allow(dead_code)]

pub mod e2e;
pub mod fake_as;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::HeaderMap;
use axum::routing::post;
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
    }
}
