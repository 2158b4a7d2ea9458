//! Lifecycle guarantees that must hold whatever the provider or the stored data does (the
//! reliability issue), against a real `keyport serve` and a scriptable fake authorization server.

mod common;

use common::e2e::*;
use common::fake_as;
use serde_json::json;

#[tokio::test]
async fn revoking_deletes_the_secrets_whatever_the_provider_or_the_vault_says() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env: vec![("KEYPORT_TOKEN_TIMEOUT_MS".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    for case in ["500", "timeout", "unreadable secret", "connector unloaded"] {
        let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
        kp.wait_for(&id, |c| c["status"] == "active").await;
        assert!(
            kp.read_secret(&id, "refresh_token").await.is_some(),
            "{case}"
        );
        {
            let mut s = fake.script.lock().unwrap();
            s.revocation_status = (case == "500").then_some(500);
            s.revocation_delay_ms = if case == "timeout" { 3_000 } else { 0 };
        }
        if case == "unreadable secret" {
            kp.sql(&format!(
                "UPDATE secrets SET ciphertext = X'00' WHERE owner_id = '{id}' AND field = 'refresh_token'"
            ))
            .await;
        }
        if case == "connector unloaded" {
            // The connector's id no longer names a loaded connector.
            kp.sql(&format!(
                "UPDATE connections SET connector_id = 'gone-connector' WHERE id = '{id}'"
            ))
            .await;
        }
        let (s, c) = kp
            .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
            .await;
        assert_eq!(s, 200, "{case}: {c}");
        assert_eq!(c["status"], "revoked", "{case}: {c}");
        assert_eq!(c["provider_revocation"]["ok"], false, "{case}: {c}");
        for field in ["access_token", "refresh_token"] {
            assert_eq!(
                kp.read_secret(&id, field).await,
                None,
                "{case}: the {field} is gone"
            );
        }
    }
}

/// Token refreshes recorded for a connection: (on demand, by the scheduler).
async fn refreshes(kp: &Keyport, id: &str) -> (usize, usize) {
    let (_, a) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    let rows: Vec<&serde_json::Value> = a["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.refreshed")
        .collect();
    let scheduled = rows.iter().filter(|e| e["actor"] == "scheduler").count();
    (rows.len() - scheduled, scheduled)
}

/// 40 concurrent proxied calls; every one must succeed.
async fn burst(kp: &Keyport, id: &str) {
    let calls = (0..40).map(|_| {
        kp.http
            .get(format!("{}/api/v1/connections/{id}/proxy/me", kp.url))
            .bearer_auth(ADMIN)
            .send()
    });
    for r in futures::future::join_all(calls).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_once_per_generation_not_per_call() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    // oidc-provider issues access tokens that live 4 seconds.
    let oidc = Oidc::start_with(&kp.redirect_uri(), &[("OIDC_ACCESS_TOKEN_TTL", "4")]);
    kp.configure_oidc(&oidc).await;
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let id = started["connection_id"].as_str().unwrap().to_string();
    Browser::new()
        .connect(started["authorize_url"].as_str().unwrap(), "ada")
        .await;
    kp.wait_for(&id, |c| c["status"] == "active").await;

    // Right after a new token: a burst refreshes nothing.
    burst(&kp, &id).await;
    assert_eq!(
        refreshes(&kp, &id).await.0,
        0,
        "a fresh token serves the burst"
    );

    // Over 8 cycles the scheduler keeps the token fresh and the calls never refresh it.
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        burst(&kp, &id).await;
    }
    let (on_demand, scheduled) = refreshes(&kp, &id).await;
    assert_eq!(on_demand, 0, "calls caused no refresh");
    assert!(
        scheduled >= 2,
        "the scheduler refreshed {scheduled} times in ~10 s"
    );

    // A token past its expiry that the scheduler has not reached: the burst shares one refresh.
    kp.sql(&format!(
        "UPDATE connections SET expires_at = last_refreshed_at - 1000, next_refresh_at = NULL WHERE id = '{id}'"
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // the proxy's cache lapses
    burst(&kp, &id).await;
    assert_eq!(
        refreshes(&kp, &id).await.0,
        1,
        "exactly one refresh for the whole burst"
    );
}
