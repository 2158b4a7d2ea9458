//! The refresh scheduler: tokens are refreshed before they expire with no caller involved;
//! transient failures back off and change the status only after a run of them, with one recovery;
//! `invalid_grant` stops all attempts.

mod common;

use std::time::Duration;

use common::e2e::*;
use common::fake_as::{self, FakeAs};
use serde_json::{Value, json};

async fn setup(script: fake_as::Script, env: &[(&str, &str)]) -> (Keyport, FakeAs, String) {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env,
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    *fake.script.lock().unwrap() = script;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] != "pending").await;
    (kp, fake, id)
}

async fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    for _ in 0..150 {
        if pred() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn status_changes(kp: &Keyport, id: &str) -> Vec<(String, String)> {
    let (_, audit) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "status.changed")
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap_or("").to_string(),
                e["detail"]["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn audit_actions(kp: &Keyport, id: &str, action: &str) -> Vec<Value> {
    let (_, audit) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .map(|e| e["detail"].clone())
        .collect()
}

#[tokio::test]
async fn tokens_are_refreshed_before_they_expire_without_any_caller() {
    let (kp, fake, id) = setup(
        fake_as::Script {
            expires_in: Some(json!(4)),
            ..Default::default()
        },
        &[],
    )
    .await;
    wait_until("two scheduled refreshes happened", || {
        fake.token_requests() >= 3
    })
    .await;
    let times = fake.seen.lock().unwrap().token_times.clone();
    for w in times.windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap < Duration::from_millis(3900),
            "each refresh before the 4 s token expired: {gap:?}"
        );
    }
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "active");

    // The work shows in /metrics (Prometheus text).
    let text = kp
        .http
        .get(format!("{}/metrics", kp.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let successes: f64 = text
        .lines()
        .find(|l| l.starts_with("keyport_refreshes_total{outcome=\"success\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("refresh counter missing:\n{text}"));
    assert!(successes >= 2.0, "{text}");
    assert!(
        text.contains("keyport_refresh_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("keyport_refresh_due_backlog"), "{text}");
    assert!(
        text.contains("keyport_refresh_oldest_overdue_seconds"),
        "{text}"
    );
}

#[tokio::test]
async fn transient_failures_back_off_turn_to_error_after_the_threshold_and_recover_once() {
    let (kp, fake, id) = setup(
        fake_as::Script {
            expires_in: Some(json!(1)),
            refresh_failures: 3,
            ..Default::default()
        },
        &[
            ("KEYPORT_REFRESH_BACKOFF_MS", "200"),
            ("KEYPORT_REFRESH_FAILURE_THRESHOLD", "2"),
        ],
    )
    .await;
    // 1 exchange + 3 failed refreshes + 1 success.
    wait_until("the refresh succeeded after three 503s", || {
        fake.token_requests() >= 5
    })
    .await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let changes = status_changes(&kp, &id).await;
    let to_error = changes.iter().filter(|(_, to)| to == "error").count();
    let recovered = changes
        .iter()
        .filter(|(from, to)| from == "error" && to == "active")
        .count();
    assert_eq!(
        to_error, 1,
        "one change to error, not one per failed attempt: {changes:?}"
    );
    assert_eq!(recovered, 1, "one recovery: {changes:?}");
    // Failing refreshes flag the connection as expiring soon, once; the recovery clears it.
    let flags = audit_actions(&kp, &id, "connection.expiring_soon").await;
    assert_eq!(flags.len(), 1, "flagged once: {flags:?}");
    assert_eq!(flags[0]["reason"], "failing");
    let c = kp.wait_for(&id, |c| c["expiring_soon"].is_null()).await;
    assert_eq!(c["status"], "active");
    // The retry delays double from the configured 200 ms (plus up to 20 % jitter).
    let (_, audit) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    let delays: Vec<i64> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refresh.failed")
        .map(|e| e["detail"]["retry_in_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(delays.len(), 3, "{delays:?}");
    for (n, d) in delays.iter().enumerate() {
        let base = 200 << n;
        assert!(
            (base..=base + base / 5).contains(d),
            "attempt {n}: {d} ms, expected {base}..{}",
            base + base / 5
        );
    }
}

#[tokio::test]
async fn invalid_grant_stops_all_further_attempts() {
    let (kp, fake, id) = setup(
        fake_as::Script {
            expires_in: Some(json!(1)),
            refresh_invalid_grant: true,
            ..Default::default()
        },
        &[],
    )
    .await;
    let c: Value = kp.wait_for(&id, |c| c["status"] == "revoked").await;
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    let after = fake.token_requests();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.token_requests(),
        after,
        "no attempts after a definitive answer"
    );
    assert_eq!(after, 2, "one exchange, one refresh attempt");
}

#[tokio::test]
async fn an_unanswered_refresh_is_retried_once_with_the_same_refresh_token() {
    let (kp, fake, id) = setup(
        fake_as::Script {
            slow_refreshes: 1,
            slow_refresh_ms: 2_000,
            ..Default::default()
        },
        &[
            ("KEYPORT_TOKEN_TIMEOUT_MS", "500"),
            ("KEYPORT_REFRESH_LEASE_MS", "3000"),
        ],
    )
    .await;
    let before = kp.read_secret(&id, "refresh_token").await.unwrap();
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "the retry succeeded: {b}");
    let seen = fake.seen.lock().unwrap().token_requests.clone();
    let refreshes: Vec<&String> = seen
        .iter()
        .filter(|r| r["grant_type"] == "refresh_token")
        .map(|r| &r["refresh_token"])
        .collect();
    assert_eq!(
        refreshes.len(),
        2,
        "one request and one retry: {refreshes:?}"
    );
    assert!(
        refreshes.iter().all(|rt| **rt == before),
        "both with the same refresh token"
    );
    assert_ne!(kp.read_secret(&id, "refresh_token").await.unwrap(), before);
    assert_eq!(audit_actions(&kp, &id, "refresh.in_doubt").await.len(), 1);
    assert_eq!(b["status"], "active");
}

#[tokio::test]
async fn a_refresh_token_about_to_expire_flags_the_connection_once() {
    let (kp, _fake, id) = setup(
        fake_as::Script {
            refresh_token_expires_in: Some(3600),
            ..Default::default()
        },
        &[("KEYPORT_EXPIRING_SOON", "2h")],
    )
    .await;
    let c = kp.wait_for(&id, |c| !c["expiring_soon"].is_null()).await;
    assert_eq!(
        c["expiring_soon"]["reason"], "refresh_token_expiring",
        "{c}"
    );
    assert!(c["refresh_token_expires_at"].is_string(), "{c}");
    // Later sweeps do not flag it again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let flags = audit_actions(&kp, &id, "connection.expiring_soon").await;
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0]["reason"], "refresh_token_expiring");
}

#[tokio::test]
async fn a_refresh_token_far_from_expiry_is_not_flagged() {
    let (kp, _fake, id) = setup(
        fake_as::Script {
            refresh_token_expires_in: Some(30 * 24 * 3600),
            ..Default::default()
        },
        &[("KEYPORT_EXPIRING_SOON", "2h")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert!(c["expiring_soon"].is_null(), "{c}");
    assert!(
        audit_actions(&kp, &id, "connection.expiring_soon")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn tokens_that_never_expire_are_probed_and_a_dead_one_is_found() {
    let (kp, fake, id) = setup(
        fake_as::Script {
            expires_in: Some(Value::Null),
            ..Default::default()
        },
        &[("KEYPORT_PROBE_INTERVAL", "1s")],
    )
    .await;
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "active", "{c}");
    assert!(c["expires_at"].is_null(), "a token without expiry: {c}");
    // A working credential is looked up again on the slow schedule and stays active.
    let lookups = fake.seen.lock().unwrap().userinfo_requests;
    wait_until("a probe looked the account up", || {
        fake.seen.lock().unwrap().userinfo_requests >= lookups + 2
    })
    .await;
    assert_eq!(
        kp.get(&format!("/api/v1/connections/{id}")).await.1["status"],
        "active"
    );
    // The provider stops accepting it: the next probe finds out, and probing stops.
    fake.script.lock().unwrap().userinfo_rejects = true;
    let c = kp.wait_for(&id, |c| c["status"] == "revoked").await;
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("routine check"),
        "{c}"
    );
    let after = fake.seen.lock().unwrap().userinfo_requests;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.seen.lock().unwrap().userinfo_requests,
        after,
        "no probes of a revoked connection"
    );
    assert_eq!(fake.token_requests(), 1, "nothing to refresh");
}

#[tokio::test]
async fn scheduled_refreshes_honour_the_per_connector_rate_limit() {
    let (kp, fake, _id) = setup(
        fake_as::Script::default(),
        &[("KEYPORT_REFRESH_RATE_LIMIT", "5")],
    )
    .await;
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
    let now = keyport::store::now_ms();
    keyport::seed::oauth_connections(
        &store,
        &ring,
        &keyport::seed::Spec {
            workspace: "default",
            connector: "oidc-test",
            start: 0,
            count: 20,
            prefix: "rl-",
            expires_at: now + 60_000,
            next_refresh_at: now,
            tokens: &|i| (format!("fake-at-seed{i}"), format!("fake-rt-seed{i}")),
        },
        |_| {},
    )
    .await
    .unwrap();
    wait_until("all 20 were refreshed", || fake.token_requests() >= 21).await;
    let times: Vec<std::time::Instant> = fake.seen.lock().unwrap().token_times[1..].to_vec();
    // A 5/s budget (burst 5): no second holds more than 5 + 5, and 20 take at least 2 s.
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 10, "{in_window} refreshes within one second");
    }
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(span >= Duration::from_secs(2), "20 refreshes in {span:?}");
    assert_eq!(fake.token_requests(), 21, "each one once");
}
