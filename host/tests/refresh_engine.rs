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
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/oidc-test",
            json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "endpoint_overrides": {"https://oidc.keyport.test": fake.issuer()}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
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
