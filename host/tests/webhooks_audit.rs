//! Webhooks and the audit log: signed deliveries that verify, one per transition; a receiver that
//! is down gets every event once it is back, also across a host restart; an audit row for every
//! lifecycle action, paginated with a cursor, filtered, and purged after the retention period.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use common::e2e::*;
use common::fake_as;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, String)>>>);

impl Received {
    fn types(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h["keyport-event-type"].to_str().unwrap().to_string())
            .collect()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A webhook receiver on `port` (0: any); returns its URL.
async fn receiver(port: u16, got: Received) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let got = got.clone();
            async move {
                got.0.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), task)
}

/// Verifies `Keyport-Signature: t=…,v1=…` the way the README tells receivers to.
fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let sig = headers["keyport-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

async fn start(env: &[(&str, &str)]) -> Keyport {
    Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

async fn wait_until(what: &str, secs: u64, mut pred: impl FnMut() -> bool) {
    for _ in 0..secs * 10 {
        if pred() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn deliveries_are_signed_and_each_transition_is_delivered_once() {
    let kp = start(&[]).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let got = Received::default();
    let (url, _task) = receiver(0, got.clone()).await;
    let (s, hook) = kp
        .post("/api/v1/webhooks", json!({"url": url, "events": ["*"]}))
        .await;
    assert_eq!(s, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    let (s, b) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": "ftp://x", "events": ["connection.exploded"]}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["fields"].as_array().unwrap().len(), 2, "{b}");

    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    // Revoking twice is one transition.
    kp.post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    kp.post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    wait_until("three events arrived", 10, || got.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        got.types(),
        [
            "connection.created",
            "connection.active",
            "connection.revoked"
        ]
    );
    for (headers, body) in got.0.lock().unwrap().iter() {
        assert!(verify(&secret, headers, body), "the signature verifies");
        assert!(!verify("whsec_wrong", headers, body));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["id"], headers["keyport-event-id"].to_str().unwrap());
        assert_eq!(v["data"]["connection"]["id"], id);
        assert!(v["data"]["connection"].get("access_token").is_none());
    }
    let (_, last) = (0, got.0.lock().unwrap()[2].1.clone());
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["data"]["previous_status"], "active");
    // The delivery log.
    let hook_id = hook["id"].as_str().unwrap();
    let (_, log) = kp
        .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"))
        .await;
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert!(
        log.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_each_event_once_after_it_returns_even_across_a_restart() {
    let env = [
        ("KEYPORT_WEBHOOK_BACKOFF_MS", "200"),
        ("KEYPORT_REFRESH_BACKOFF_MS", "100"),
        ("KEYPORT_REFRESH_FAILURE_THRESHOLD", "1"),
    ];
    let kp = start(&env).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    // A port nobody listens on yet: the receiver is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (s, hook) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": [
                "connection.created", "connection.active", "connection.error",
                "connection.recovered", "connection.revoked", "connection.expiring_soon"]}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_string();
    // created → active; two failed refreshes → error (+ expiring soon, once); success →
    // recovered; revoke → revoked.
    {
        let mut script = fake.script.lock().unwrap();
        script.refresh_failures = 2;
    }
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    kp.sql(&format!(
        "UPDATE connections SET next_refresh_at = 1 WHERE id = '{id}'"
    ))
    .await;
    wait_until("the connection recovered", 20, || {
        fake.token_requests() >= 4
    })
    .await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    kp.post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    let expected = [
        "connection.created",
        "connection.active",
        "connection.error",
        "connection.expiring_soon",
        "connection.recovered",
        "connection.revoked",
    ];
    // Every delivery was tried and failed while the receiver was down.
    for _ in 0..100 {
        let (_, log) = kp
            .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"))
            .await;
        let log = log["deliveries"].as_array().unwrap().clone();
        if log.len() == expected.len() && log.iter().all(|d| d["attempts"].as_i64() >= Some(1)) {
            assert!(log.iter().all(|d| d["state"] == "pending"), "{log:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Restart the host (SIGKILL), then bring the receiver up.
    let (data, pg) = kp.stop();
    let kp = Keyport::start_in(
        data,
        pg,
        KeyportOpts {
            master_keys: Some(master_keys()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    );
    let got = Received::default();
    let (_url, _task) = receiver(port, got.clone()).await;
    wait_until("every event arrived", 30, || got.len() >= expected.len()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut types = got.types();
    types.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(types, want, "each transition exactly once");
    let ids: std::collections::HashSet<String> = got
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h["keyport-event-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), expected.len(), "no duplicates");
    let (_, log) = kp
        .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"))
        .await;
    assert!(
        log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered"),
        "{log}"
    );
}

async fn complete_flow(authorize_url: &str) {
    let browser = Browser::new();
    let (s, loc, body) = browser.get(authorize_url).await;
    assert_eq!(s, 302, "{body}");
    let (_, loc, _) = browser.get(&loc.unwrap()).await;
    let done = browser.finish(&loc.unwrap()).await;
    assert_eq!(done.status, 303, "{}", done.body);
}

#[tokio::test]
async fn every_lifecycle_action_is_audited_and_the_log_pages_with_a_cursor() {
    let kp = start(&[]).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let c = format!("/api/v1/connections/{id}");
    assert_eq!(kp.patch(&c, json!({"config": {"limit": 5}})).await.0, 200);
    assert_eq!(kp.post(&format!("{c}/refresh"), json!({})).await.0, 200);
    fake.script.lock().unwrap().refresh_failures = 1;
    assert_eq!(kp.post(&format!("{c}/refresh"), json!({})).await.0, 502);
    assert_eq!(
        kp.put(&format!("{c}/dependents/wf-1"), json!({})).await.0 / 100,
        2
    );
    assert_eq!(kp.delete(&format!("{c}/dependents/wf-1")).await.0 / 100, 2);
    let (_, key) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": "reader", "permissions": ["credentials:read"]}),
        )
        .await;
    let r = kp
        .http
        .get(format!("{}{c}/credentials", kp.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(kp.post(&format!("{c}/revoke"), json!({})).await.0, 200);
    let (s, r) = kp.post(&format!("{c}/reconnect"), json!({})).await;
    assert_eq!(s, 200, "{r}");
    complete_flow(r["authorize_url"].as_str().unwrap()).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(kp.delete(&c).await.0 / 100, 2);

    // All of it, a page of 3 at a time.
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = kp
            .get(&format!(
                "/api/v1/audit?connection_id={id}&limit=3&cursor={cursor}"
            ))
            .await;
        assert_eq!(s, 200, "{page}");
        let batch = page["events"].as_array().unwrap();
        assert!(batch.len() <= 3);
        events.extend(batch.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    let (_, all) = kp
        .get(&format!("/api/v1/audit?connection_id={id}&limit=500"))
        .await;
    assert_eq!(all["events"].as_array().unwrap().len(), events.len());
    let actions: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "connection.created",
        "connection.authorized",
        "account.looked_up",
        "config.changed",
        "token.refreshed",
        "refresh.failed",
        "status.changed",
        "reconnect.started",
        "connection.reconnected",
        "connection.revoked",
        "connection.deleted",
        "dependent.added",
        "dependent.removed",
        "credentials.read",
    ] {
        assert!(actions.contains(action), "no {action} event in {actions:?}");
    }
    // Filters.
    let (_, only) = kp
        .get(&format!(
            "/api/v1/audit?connection_id={id}&action=token.refreshed"
        ))
        .await;
    assert!(
        only["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "token.refreshed")
    );
    let (_, none) = kp.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert!(none["events"].as_array().unwrap().is_empty());
    let (s, b) = kp.get("/api/v1/audit?since=yesterday").await;
    assert_eq!(s, 400, "{b}");
    // No secret in any of it.
    let text = all.to_string();
    assert!(!text.contains("fake-at-") && !text.contains("fake-rt-"));
}

#[tokio::test]
async fn audit_events_older_than_the_retention_period_are_purged() {
    let kp = start(&[("KEYPORT_AUDIT_RETENTION", "2s")]).await;
    let (s, _) = kp.post("/api/v1/workspaces", json!({"id": "team-a"})).await;
    assert_eq!(s / 100, 2);
    let count = || async {
        let (_, all) = kp.get("/api/v1/audit?limit=500").await;
        all["events"].as_array().unwrap().len()
    };
    let (_, key) = kp.post("/api/v1/api-keys", json!({"name": "k"})).await;
    assert!(key["key"].is_string());
    assert!(count().await >= 1, "the key creation is audited");
    let mut left = usize::MAX;
    for _ in 0..60 {
        left = count().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "purged after 2 s");
}
