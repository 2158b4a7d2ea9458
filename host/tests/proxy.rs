//! The proxy against a fake provider: the host adds the credential and the caller's never passes;
//! traversal and absolute URLs are refused; 401 (or a 200 the connector classifies as an auth
//! failure) → one refresh and one retry; 429 passes through; revoked connections answer 409;
//! `error` connections are tried and recover; raw credentials need an explicit permission; every
//! use is audited (without tokens) and `last_used_at` follows.

mod common;

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use common::e2e::*;
use common::fake_as::{self, FakeAs};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (Keyport, FakeAs, String) {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    (kp, fake, id)
}

/// Sends a request with the exact request target given (no client-side normalisation of `..` or
/// percent-escapes), returning the status code.
async fn raw_get(kp: &Keyport, target: &str) -> u16 {
    let addr = kp.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text}"))
}

async fn audit(kp: &Keyport, query: &str) -> Value {
    let (s, b) = kp.get(&format!("/api/v1/audit?{query}")).await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test]
async fn the_host_adds_the_credential_and_the_callers_never_passes() {
    let (kp, fake, id) = setup().await;
    let token = kp.read_secret(&id, "access_token").await.unwrap();
    let resp = kp
        .http
        .post(format!(
            "{}/api/v1/connections/{id}/proxy/api/echo/users?limit=2",
            kp.url
        ))
        .bearer_auth(ADMIN)
        .header("cookie", "session=caller-cookie")
        .header("x-forwarded-host", "evil.example")
        .header("x-custom", "kept")
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "provider cookies are not handed to callers"
    );
    assert_eq!(resp.headers()["x-provider"], "fake");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/echo/users");
    assert_eq!(echo["query"], "limit=2");
    assert_eq!(echo["body"], r#"{"hello":"world"}"#);
    let h = &echo["headers"];
    assert_eq!(
        h["authorization"],
        format!("Bearer {token}"),
        "the host's credential, not the caller's"
    );
    assert!(h.get("cookie").is_none(), "{h}");
    assert!(h.get("x-forwarded-host").is_none(), "{h}");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(fake.token_requests(), 1, "no refresh was needed");
}

#[tokio::test]
async fn traversal_and_absolute_urls_are_refused() {
    let (kp, fake, id) = setup().await;
    let base = format!("/api/v1/connections/{id}/proxy/");
    for bad in [
        "../../admin",
        "api/../../../admin",
        "%2e%2e/%2e%2e/admin",
        "%2E%2E/admin",
        "api/%2e%2e%2f%2e%2e%2fadmin",
        "%252e%252e/admin",
        "api%2fecho",
        "api%5cecho",
        "http://evil.example/steal",
        "https:%2f%2fevil.example",
        "/evil.example/x",
    ] {
        let status = raw_get(&kp, &format!("{base}{bad}")).await;
        assert_eq!(status, 400, "{bad} must be refused");
    }
    assert!(
        fake.api_requests().is_empty(),
        "nothing reached the provider: {:?}",
        fake.api_requests()
    );
    // A normal path still works through the same raw client.
    assert_eq!(raw_get(&kp, &format!("{base}api/echo/ok")).await, 200);
}

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once() {
    let (kp, fake, id) = setup().await;
    fake.invalidate_tokens();
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/api/echo/me"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fake.token_requests(), 2, "one code exchange, one refresh");
    let statuses: Vec<u16> = fake.api_requests().iter().map(|r| r.2).collect();
    assert_eq!(statuses, [401, 200], "one retry");
    let token = kp.read_secret(&id, "access_token").await.unwrap();
    assert_eq!(b["headers"]["authorization"], format!("Bearer {token}"));
    // A provider that keeps refusing right after that: no second refresh within 10 s (tokens
    // are not rotated on every request of a caller hammering a refusing endpoint); the 401
    // passes through.
    fake.script.lock().unwrap().api_rejects_all = true;
    let before = fake.token_requests();
    for _ in 0..3 {
        let (s, _) = kp
            .get(&format!("/api/v1/connections/{id}/proxy/api/echo/again"))
            .await;
        assert_eq!(s, 401, "the provider's answer passes through");
    }
    assert_eq!(fake.token_requests(), before, "no refresh storm");
}

#[tokio::test]
async fn a_200_the_connector_classifies_as_an_auth_failure_refreshes_and_retries() {
    let (kp, fake, id) = setup().await;
    fake.invalidate_tokens();
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/api/slack-style"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["ok"], true, "the retry's answer: {b}");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn a_429_passes_through_with_retry_after() {
    let (kp, fake, id) = setup().await;
    let resp = kp
        .http
        .get(format!(
            "{}/api/v1/connections/{id}/proxy/api/limited",
            kp.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        fake.api_requests().len(),
        1,
        "no automatic retry unless asked"
    );
    assert_eq!(fake.token_requests(), 1, "a 429 is not an auth failure");
}

#[tokio::test]
async fn idempotent_requests_are_retried_after_a_short_retry_after_only_when_asked() {
    let (kp, fake, id) = setup().await;
    let url = format!("{}/api/v1/connections/{id}/proxy/api/flaky", kp.url);
    // POST is not idempotent: the 429 passes through even when retries are asked for.
    let r = kp
        .http
        .post(format!("{url}-post"))
        .bearer_auth(ADMIN)
        .header("x-keyport-retries", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // GET with retries asked: keyport waits the second and retries.
    let r = kp
        .http
        .get(format!("{url}-get"))
        .bearer_auth(ADMIN)
        .header("x-keyport-retries", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let statuses: Vec<u16> = fake.api_requests().iter().map(|r| r.2).collect();
    assert_eq!(
        statuses,
        [429, 429, 200],
        "the POST's 429; the GET's 429 and its retry"
    );
}

#[tokio::test]
async fn revoked_connections_answer_409_and_error_ones_recover() {
    let (kp, fake, id) = setup().await;
    kp.sql(&format!(
        "UPDATE connections SET status = 'error', status_reason = 'test' WHERE id = '{id}'"
    ))
    .await;
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/api/echo/x"))
        .await;
    assert_eq!(s, 200, "error connections are still tried");
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert!(c["status_reason"].is_null(), "{c}");

    let (s, _) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    let n = fake.api_requests().len();
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/api/echo/x"))
        .await;
    assert_eq!(s, 409, "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("revoked") && msg.contains("reconnect"),
        "{msg}"
    );
    assert_eq!(
        fake.api_requests().len(),
        n,
        "nothing sent for a revoked connection"
    );
}

#[tokio::test]
async fn proxy_use_is_audited_without_tokens_and_last_used_follows() {
    let (kp, _fake, id) = setup().await;
    for i in 0..3 {
        let (s, _) = kp
            .get(&format!(
                "/api/v1/connections/{id}/proxy/api/echo/item/{i}?secret_query=hidden"
            ))
            .await;
        assert_eq!(s, 200);
    }
    let c = kp.wait_for(&id, |c| c["last_used_at"].is_string()).await;
    assert!(c["last_used_at"].is_string());
    let mut rows = Vec::new();
    for _ in 0..50 {
        rows = audit(&kp, &format!("connection_id={id}&action=proxy.request")).await["events"]
            .as_array()
            .unwrap()
            .clone();
        if rows.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    let d = &rows[0]["detail"];
    assert_eq!(d["method"], "GET");
    assert_eq!(
        d["path"], "/api/echo/item/2",
        "newest first, no query string"
    );
    assert_eq!(d["status"], 200);
    assert!(d["latency_ms"].is_u64());
    assert_eq!(rows[0]["actor"], "admin");
    // No token anywhere in the audit table or the logs.
    let token = kp.read_secret(&id, "access_token").await.unwrap();
    let refresh = kp.read_secret(&id, "refresh_token").await.unwrap();
    let all = audit(&kp, "limit=500").await.to_string();
    for secret in [&token, &refresh] {
        assert!(!all.contains(secret.as_str()), "a token in the audit log");
        assert!(!kp.log().contains(secret.as_str()), "a token in the logs");
    }
}

#[tokio::test]
async fn raw_credentials_need_an_explicit_permission_and_every_read_is_audited() {
    let (kp, _fake, id) = setup().await;
    let path = format!("/api/v1/connections/{id}/credentials");
    let (s, b) = kp.get(&path).await;
    assert_eq!(s, 403, "not even the admin token by default: {b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials:read")
    );
    let (_, plain) = kp
        .post("/api/v1/api-keys", json!({"name": "workflows"}))
        .await;
    let (_, reader) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": "exporter", "permissions": ["credentials:read"]}),
        )
        .await;
    let (s, _) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": "x", "permissions": ["everything"]}),
        )
        .await;
    assert_eq!(s, 400, "unknown permissions are refused");
    let get_with = |key: &str| {
        kp.http
            .get(format!("{}{path}", kp.url))
            .bearer_auth(key.to_string())
            .send()
    };
    let r = get_with(plain["key"].as_str().unwrap()).await.unwrap();
    assert_eq!(r.status(), 403);
    let r = get_with(reader["key"].as_str().unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["access_token"],
        kp.read_secret(&id, "access_token").await.unwrap()
    );
    let reads = audit(&kp, &format!("connection_id={id}&action=credentials.read")).await;
    let reads = reads["events"].as_array().unwrap();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(reads[0]["actor"].as_str().unwrap().starts_with("api-key:"));
    assert!(
        !reads[0]
            .to_string()
            .contains(body["access_token"].as_str().unwrap())
    );
}

#[tokio::test]
async fn api_key_connections_are_proxied_with_their_key_and_overrides() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let app = axum::Router::new().route(
        "/v1/{*rest}",
        axum::routing::get(|headers: HeaderMap, uri: Uri| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if auth != "Bearer key-123" {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"detail": "bad key"})),
                );
            }
            (
                StatusCode::OK,
                axum::Json(json!({"id": "acct-1", "name": "Key Co", "path": uri.path()})),
            )
        }),
    );
    let id = common::apikey_connection(&kp, app).await;
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/reports/7"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "/v1/reports/7");
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_and_writes_their_usage_before_exiting() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    // A provider whose API answers after a second (the account lookup at once).
    let app = axum::Router::new().fallback(|uri: Uri| async move {
        if uri.path().contains("slow") {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        axum::Json(json!({"id": "acct-1", "name": "Key Co"}))
    });
    let id = common::apikey_connection(&kp, app).await;
    let db = kp.db_url();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let req = kp
                .http
                .get(format!("{}/api/v1/connections/{id}/proxy/slow/{i}", kp.url))
                .bearer_auth(ADMIN);
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The calls are at the provider: stop the host meanwhile.
    let (status, _data, _pg) = tokio::task::spawn_blocking(move || kp.terminate())
        .await
        .unwrap();
    for call in calls {
        assert_eq!(
            call.await.unwrap().ok(),
            Some(200),
            "a call in flight was answered"
        );
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "keyport exited cleanly: {status:?}"
    );
    // Their usage was written before the process ended.
    let store = keyport::store::Store::connect(&db).await.unwrap();
    let rows = store.audit_events("default", Some(&id), 100).await.unwrap();
    let used = rows.iter().filter(|r| r.action == "proxy.request").count();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(used, 8, "one usage row per call: {actions:?}");
}
