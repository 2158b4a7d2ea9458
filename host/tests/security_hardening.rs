//! Findings of the attack on a running `keyport serve` (the security hardening issue), each
//! checked against a real host: manifests are not readable without a caller, a workspace key
//! cannot touch the admin's endpoint overrides even with an empty map, and the proxy forwards
//! only the methods REST APIs use and no dot segment in any encoding or with matrix parameters.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, Uri};
use common::e2e::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// A provider that answers every request with the account and records (method, path).
async fn recording_provider() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            log.lock()
                .unwrap()
                .push((method.to_string(), uri.path().to_string()));
            (
                StatusCode::OK,
                axum::Json(json!({"id": "acct-1", "name": "Key Co", "path": uri.path()})),
            )
        }
    });
    (common::serve_fake(app).await, seen)
}

async fn keyport_with_connection() -> (Keyport, String, Arc<Mutex<Vec<(String, String)>>>) {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let (base, seen) = recording_provider().await;
    let id = common::apikey_connection_at(&kp, &base).await;
    (kp, id, seen)
}

async fn workspace_key(kp: &Keyport) -> String {
    let (s, key) = kp
        .post("/api/v1/api-keys", json!({"name": "automation"}))
        .await;
    assert_eq!(s, 201, "{key}");
    key["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn connector_manifests_need_a_caller() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    for path in ["/api/v1/connectors", "/api/v1/connectors/slack"] {
        let r = kp
            .http
            .get(format!("{}{path}", kp.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} without Authorization");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
    let key = workspace_key(&kp).await;
    let r = kp
        .http
        .get(format!("{}/api/v1/connectors/slack", kp.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a workspace key reads manifests");
}

#[tokio::test]
async fn a_workspace_key_cannot_wipe_endpoint_overrides_with_an_empty_map() {
    let (kp, _, _) = keyport_with_connection().await;
    let key = workspace_key(&kp).await;
    for overrides in [
        json!({}),
        json!({"https://api.keytest.example": "http://127.0.0.1:9"}),
    ] {
        let r = kp
            .http
            .put(format!("{}/api/v1/provider-apps/apikey-test", kp.url))
            .bearer_auth(&key)
            .json(&json!({"endpoint_overrides": overrides}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{overrides}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("admin token"),
            "{body}"
        );
    }
    let (_, app) = kp.get("/api/v1/provider-apps/apikey-test").await;
    assert_eq!(
        app["endpoint_overrides"]
            .as_object()
            .map(|o| o.len())
            .unwrap_or_default(),
        1,
        "the admin's override is still there: {app}"
    );
}

#[tokio::test]
async fn the_proxy_forwards_only_rest_methods() {
    let (kp, id, seen) = keyport_with_connection().await;
    let url = format!("{}/api/v1/connections/{id}/proxy/reports/7", kp.url);
    for method in ["TRACE", "PROPFIND", "MKCOL", "LOCK"] {
        let r = kp
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert!(
            r.headers()["allow"].to_str().unwrap().contains("PATCH"),
            "{method}: Allow lists the methods"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{method}");
    }
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = kp
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
    }
    let seen = seen.lock().unwrap().clone();
    let methods: Vec<&str> = seen
        .iter()
        .filter(|(_, p)| p == "/v1/reports/7")
        .map(|(m, _)| m.as_str())
        .collect();
    assert_eq!(
        methods,
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "refused methods never reached the provider"
    );
}

#[tokio::test]
async fn dot_segments_with_matrix_parameters_or_deep_encoding_never_reach_the_provider() {
    let (kp, id, seen) = keyport_with_connection().await;
    for path in [
        "api/..;/token",
        "api/..;x=1/token",
        "api/%2e%2e%3b/token",
        "api/%25252e%25252e/token",
    ] {
        let (s, b) = kp
            .get(&format!("/api/v1/connections/{id}/proxy/{path}"))
            .await;
        assert_eq!(s, 400, "{path}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("refused proxy path"),
            "{path}: {b}"
        );
    }
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/items;v=1/x"))
        .await;
    assert_eq!(s, 200, "matrix parameters on ordinary segments pass");
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("..") && !p.contains("token")),
        "{paths:?}"
    );
}

/// A listener on 127.0.0.1 and ::1 (same port) that counts the connections it accepts: it must
/// count none, since every request to it is refused before anything is sent.
async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let v6 = tokio::net::TcpListener::bind(("::1", port)).await.ok();
    for l in std::iter::once(v4).chain(v6) {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
    }
    (port, accepted)
}

/// A host in which loopback is not allowed, as in production (the suite's hosts allow it to
/// reach their fake providers).
async fn keyport_without_loopback() -> Keyport {
    Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env: vec![("KEYPORT_ALLOW_LOOPBACK".into(), "0".into())],
        ..Default::default()
    })
    .await
}

fn loopback_literals(port: u16) -> Vec<String> {
    [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0x7f000001",
        "2130706433",
    ]
    .iter()
    .map(|h| format!("https://{h}:{port}/hook"))
    .collect()
}

#[tokio::test]
async fn webhooks_to_ip_literals_are_refused_when_created() {
    let kp = keyport_without_loopback().await;
    let (port, accepted) = counting_listener().await;
    for url in loopback_literals(port) {
        let (s, b) = kp
            .post("/api/v1/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(s, 422, "{url}: {b}");
        let field = &b["error"]["fields"][0];
        assert_eq!(field["path"], "/url", "{url}: {b}");
        assert!(
            field["message"].as_str().unwrap().contains("loopback"),
            "{url}: {b}"
        );
    }
    let (_, list) = kp.get("/api/v1/webhooks").await;
    assert_eq!(list["webhooks"], json!([]), "nothing was subscribed");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn discovery_at_an_ip_literal_is_refused_before_anything_is_sent() {
    let kp = keyport_without_loopback().await;
    let (port, accepted) = counting_listener().await;
    for (i, base) in loopback_literals(port).iter().enumerate() {
        let issuer = base.trim_end_matches("/hook");
        let (s, b) = kp
            .post(
                "/api/v1/admin/providers",
                json!({"id": format!("lit{i}"), "issuer": issuer}),
            )
            .await;
        assert_eq!(s, 422, "{issuer}: {b}");
        let message = b["error"]["fields"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("loopback"), "{issuer}: {b}");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn huge_lifetimes_from_a_provider_are_clamped_and_listings_keep_working() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let fake = common::fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let browser = Browser::new();
    let mut ids = Vec::new();
    // Past year 9999 in seconds, a float that overflows milliseconds, and a numeric string.
    for (i, (expires_in, refresh_expires_in)) in [
        (json!(300_000_000_000u64), json!(20_000_000_000_000_000u64)),
        (json!(2e16), json!(2e16)),
        (json!("99999999999999999"), json!(1)),
    ]
    .into_iter()
    .enumerate()
    {
        fake.script.lock().unwrap().token_body = Some(json!({
            "access_token": format!("fake-at-huge-{i}"), "token_type": "bearer",
            "refresh_token": format!("fake-rt-huge-{i}"),
            "expires_in": expires_in, "refresh_token_expires_in": refresh_expires_in,
        }));
        let (s, started) = kp
            .post(
                "/api/v1/connections/oauth/start",
                json!({"connector": "oidc-test"}),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        let launch = started["authorize_url"].as_str().unwrap();
        let (s, loc, body) = browser.get(launch).await;
        assert_eq!(s, 302, "{body}");
        let (_, loc, _) = browser.get(&loc.unwrap()).await;
        let done = browser.finish(&loc.unwrap()).await;
        assert_eq!(done.status, 303, "{}", done.body);
        ids.push(started["connection_id"].as_str().unwrap().to_string());
    }
    let (s, list) = kp.get("/api/v1/connections").await;
    assert_eq!(s, 200, "the listing answers: {list}");
    let listed = list["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let ten_years_on = (chrono_year_now() + 11).to_string();
    for c in listed {
        for field in ["expires_at", "refresh_token_expires_at", "next_refresh_at"] {
            let at = c[field].as_str().unwrap_or_else(|| panic!("{field}: {c}"));
            assert!(
                at.as_bytes()[..4] <= *ten_years_on.as_bytes(),
                "{field} {at} is clamped to ten years"
            );
        }
    }
    for id in &ids {
        let (s, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        assert_eq!(s, 200, "{c}");
    }
    // A row already stored with times no clock can show (written before the clamp, or by
    // hand): the listings, the connection and its page still answer.
    kp.sql(&format!(
        "UPDATE connections SET expires_at = {}, refresh_token_expires_at = {}, last_refreshed_at = {}, next_refresh_at = {} WHERE id = '{}'",
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MAX,
        ids[0]
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // the connection cache lapses
    let (s, list) = kp.get("/api/v1/connections").await;
    assert_eq!(s, 200, "the listing answers: {list}");
    assert_eq!(list["connections"].as_array().unwrap().len(), 3, "{list}");
    let (s, c) = kp.get(&format!("/api/v1/connections/{}", ids[0])).await;
    assert_eq!(s, 200, "{c}");
    assert!(
        c["expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("9999-")),
        "{c}"
    );
    for page in [
        "/connections".to_string(),
        format!("/connections/{}", ids[0]),
    ] {
        let html = common::signed_in_page(&kp, &page).await;
        assert!(
            html.contains(&ids[0]),
            "{page} shows the connection:\n{html}"
        );
    }
}

/// This year, from the system clock (no date crate needed for a bound).
fn chrono_year_now() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    1970 + secs / 31_556_952
}

async fn bearer_status(kp: &Keyport, token: &str, forwarded_for: Option<&str>) -> u16 {
    let mut r = kp
        .http
        .get(format!("{}/api/v1/connections", kp.url))
        .bearer_auth(token);
    if let Some(f) = forwarded_for {
        r = r.header("x-forwarded-for", f);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_admin_token_is_stored_slowly_hashed_and_cannot_be_guessed_without_limit() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(bearer_status(&kp, &format!("kpa_guess_{i:02}_0123456789"), None).await);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429, 429], "{statuses:?}");
    assert_eq!(
        bearer_status(&kp, ADMIN, None).await,
        429,
        "guessing cannot race the right token from the same address"
    );
    let r = kp
        .http
        .get(format!("{}/api/v1/connections", kp.url))
        .bearer_auth("kpa_guess_again_0123456789")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // At rest: an Argon2id hash, not the SHA-256 of the token.
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let stored = store.setting("admin_token_argon2").await.unwrap().unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(store.setting("admin_token_sha256").await.unwrap(), None);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // No trusted proxy: the header is anyone's to write, so every client shares the peer's budget.
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    for i in 0..10 {
        let s = bearer_status(
            &kp,
            &format!("kpa_wrong_{i:02}_0123456789"),
            Some("203.0.113.5"),
        )
        .await;
        assert_eq!(s, 401);
    }
    assert_eq!(
        bearer_status(&kp, "kpa_wrong_other_0123456789", Some("203.0.113.6")).await,
        429,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    // Behind a trusted proxy (the loopback peer here), each forwarded client has its own budget.
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env: vec![("KEYPORT_TRUSTED_PROXIES".into(), "127.0.0.1,::1".into())],
        ..Default::default()
    })
    .await;
    for i in 0..10 {
        let s = bearer_status(
            &kp,
            &format!("kpa_wrong_{i:02}_0123456789"),
            Some("203.0.113.5"),
        )
        .await;
        assert_eq!(s, 401);
    }
    assert_eq!(
        bearer_status(&kp, "kpa_wrong_more_0123456789", Some("203.0.113.5")).await,
        429
    );
    assert_eq!(
        bearer_status(&kp, "kpa_wrong_other_0123456789", Some("203.0.113.6")).await,
        401,
        "another forwarded client is not blocked"
    );
    assert_eq!(bearer_status(&kp, ADMIN, Some("203.0.113.6")).await, 200);
}

#[tokio::test]
async fn every_rejection_is_the_documented_json_error() {
    let (kp, id, _) = keyport_with_connection().await;
    let cases: Vec<(Method, String, Option<Vec<u8>>, u16)> = vec![
        (Method::GET, "/api/v1/audit?limit=abc".into(), None, 400),
        (
            Method::POST,
            format!("/api/v1/connections/{id}/refresh?if_needed=maybe"),
            None,
            400,
        ),
        (Method::GET, "/api/v1/connections/%FF%FE".into(), None, 400),
        (Method::DELETE, "/api/v1/connectors".into(), None, 405),
        (Method::PATCH, "/api/v1/audit".into(), None, 405),
        (
            Method::GET,
            format!("/api/v1/connections/{}", "a".repeat(20_000)),
            None,
            414,
        ),
        (
            Method::GET,
            format!("/login?next=/{}", "a".repeat(20_000)),
            None,
            414,
        ),
        (
            Method::POST,
            format!("/api/v1/connections/{id}/reconnect"),
            Some(vec![b' '; 300 * 1024]),
            413,
        ),
    ];
    for (method, full_path, body, status) in cases {
        // Messages name the path, cut short.
        let path = &full_path[..full_path.len().min(100)];
        let mut r = kp
            .http
            .request(method.clone(), format!("{}{full_path}", kp.url))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{method} {path}: {v}"
        );
    }
}

#[tokio::test]
async fn a_discovery_document_is_read_against_its_cap_as_it_streams() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    // An endless answer (bounded at 64 MiB so the test ends whatever happens), no length.
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
            let stream = futures::stream::iter(0..1024).map(move |_| {
                counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            axum::body::Body::from_stream(stream)
        }
    });
    let issuer = common::serve_fake(app).await;
    let (s, b) = kp
        .post(
            "/api/v1/admin/providers",
            json!({"id": "endless", "issuer": issuer}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let message = b["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("more than 256 KiB"), "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < 16 << 20,
        "keyport stopped reading soon after the cap ({sent} bytes produced)"
    );
}

#[tokio::test]
async fn a_token_answer_is_read_against_its_cap_as_it_streams() {
    let (kp, fake) = common::keyport_with_fake_as().await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    // The token endpoint now answers with an endless body and no length.
    fake.script.lock().unwrap().token_endless = true;
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert!(s >= 400, "{s} {b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("larger than 1 MiB")),
        "{b}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = fake
        .seen
        .lock()
        .unwrap()
        .token_bytes_sent
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent > 0 && sent < 16 << 20,
        "keyport stopped reading soon after the cap ({sent} bytes produced)"
    );
}

#[tokio::test]
async fn a_hook_that_sees_tokens_cannot_leak_them_into_metadata_errors_or_the_log() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let r = kp
        .http
        .post(format!(
            "{}/api/v1/admin/connectors?grant=leaky.keyport.test",
            kp.url
        ))
        .bearer_auth(ADMIN)
        .header("content-type", "application/wasm")
        .body(std::fs::read(keyport_test_artifacts::LEAKY_HOOK).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let fake = common::fake_as::start().await;
    common::provider_app(
        &kp,
        "leaky-hook",
        &[("https://leaky.keyport.test", &fake.issuer())],
        true,
    )
    .await;
    let (at, rt) = ("fake-at-leak-0123456789", "fake-rt-leak-0123456789");
    let browser = Browser::new();
    let connect = async |leak_in_error: bool| {
        fake.script.lock().unwrap().token_body = Some(json!({
            "access_token": at, "refresh_token": rt, "token_type": "bearer",
            "expires_in": 3600, "leak_in_error": leak_in_error,
        }));
        let (s, started) = kp
            .post(
                "/api/v1/connections/oauth/start",
                json!({"connector": "leaky-hook"}),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        let (s, loc, body) = browser
            .get(started["authorize_url"].as_str().unwrap())
            .await;
        assert_eq!(s, 302, "{body}");
        let (_, loc, _) = browser.get(&loc.unwrap()).await;
        browser.finish(&loc.unwrap()).await;
        let (_, c) = kp
            .get(&format!(
                "/api/v1/connections/{}",
                started["connection_id"].as_str().unwrap()
            ))
            .await;
        c
    };
    let c = connect(false).await;
    assert_eq!(c["status"], "active", "{c}");
    let text = c.to_string();
    assert!(!text.contains(at) && !text.contains(rt), "{c}");
    assert_eq!(c["metadata"]["copied"], "[redacted]", "{c}");
    assert_eq!(
        c["metadata"]["nested"]["inside"], "token=[redacted];",
        "{c}"
    );
    assert_eq!(c["metadata"]["plain"], "kept", "{c}");
    assert_eq!(
        kp.read_secret(c["id"].as_str().unwrap(), "access_token")
            .await
            .as_deref(),
        Some(at),
        "the token itself is stored, sealed"
    );
    let c = connect(true).await;
    let reason = c["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("[redacted]") && !reason.contains(at), "{c}");
    let log = kp.log();
    assert!(
        !log.contains(at) && !log.contains(rt),
        "the hook's stdout and stderr never reach the log"
    );
}

#[tokio::test]
async fn a_definition_cannot_keep_a_token_as_metadata() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let i = "https://auth.leaky-metadata.example";
    for (name, path) in [
        ("copy", "access_token"),
        ("nested", "authed_user.access_token"),
        ("refresh", "refresh_token"),
        ("id", "id_token"),
    ] {
        let (s, b) = kp
            .post(
                "/api/v1/admin/providers",
                json!({
                    "id": format!("leaky-{name}"),
                    "display_name": "Leaky metadata",
                    "authorization_url": format!("{i}/auth"),
                    "token_url": format!("{i}/token"),
                    "scopes": ["read"],
                    "api_base_url": format!("{i}/api/"),
                    "token_metadata": {name: path, "instance_url": "instance_url"},
                }),
            )
            .await;
        assert_eq!(s, 422, "{path}: {b}");
        let fields = b["error"]["fields"].as_array().unwrap();
        assert!(
            fields
                .iter()
                .any(|f| f["path"] == format!("/token_metadata/{name}")
                    && f["message"].as_str().unwrap().contains("names a token")),
            "{path}: {b}"
        );
    }
}

#[tokio::test]
async fn an_upload_cannot_send_secrets_to_a_host_nobody_granted() {
    let kp = keyport_without_loopback().await;
    let bytes = std::fs::read(keyport_test_artifacts::STRAY_TOKEN).unwrap();
    for grant in ["", "api.stray.test"] {
        let r = kp
            .http
            .post(format!("{}/api/v1/admin/connectors?grant={grant}", kp.url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/wasm")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "grant {grant:?}");
        let b: Value = r.json().await.unwrap();
        let fields = b["error"]["fields"].as_array().unwrap();
        let named = |path: &str, needle: &str| {
            fields.iter().any(|f| {
                f["path"] == path && f["message"].as_str().unwrap_or_default().contains(needle)
            })
        };
        assert!(
            named("/auth/oauth2/token_url", "collector.elsewhere.test"),
            "{b}"
        );
        assert!(named("/auth/oauth2/revoke_url", "must be https"), "{b}");
    }
    let (_, list) = kp.get("/api/v1/admin/connectors").await;
    assert!(
        !list.to_string().contains("stray-token"),
        "nothing stored or waiting: {list}"
    );
    // An upload whose OAuth endpoints are on a declared host waits for approval, and both the
    // API and the approval screen name the hosts that would receive the secrets.
    let r = kp
        .http
        .post(format!("{}/api/v1/admin/connectors", kp.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/wasm")
        .body(std::fs::read(keyport_test_artifacts::LEAKY_HOOK).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let b: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status} {b}");
    let (_, list) = kp.get("/api/v1/admin/connectors").await;
    let waiting = list["pending_approval"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "leaky-hook")
        .unwrap_or_else(|| panic!("the upload waits for approval: {list}"));
    assert_eq!(
        waiting["oauth_hosts"],
        json!(["leaky.keyport.test"]),
        "{waiting}"
    );
    let page = common::signed_in_page(&kp, "/admin").await;
    let shown = page
        .split("its OAuth endpoints send codes, refresh tokens and the client secret to:")
        .nth(1)
        .unwrap_or_else(|| panic!("the approval screen names the OAuth hosts:\n{page}"));
    assert!(
        shown[..shown.len().min(200)].contains("<code>leaky.keyport.test</code>"),
        "{shown}"
    );
}
