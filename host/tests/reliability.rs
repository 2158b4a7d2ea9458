//! Lifecycle guarantees that must hold whatever the provider or the stored data does (the
//! reliability issue), against a real `keyport serve` and a scriptable fake authorization server.

mod common;

use common::e2e::*;
use common::fake_as;
use serde_json::json;
use sqlx::Row;

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
    // The last case breaks the provider app for the connections after it.
    for case in [
        "500",
        "timeout",
        "unreadable secret",
        "connector unloaded",
        "app unreadable",
    ] {
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
        if case == "app unreadable" {
            // Looking up the provider app fails: its client secret cannot be opened.
            kp.sql("UPDATE secrets SET ciphertext = X'00' WHERE field = 'client_secret'")
                .await;
            // The provider-app cache holds the app for up to 5 s.
            tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
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
    // Only the refreshes: the proxied calls' own rows would push them out of a page.
    let (_, a) = kp
        .get(&format!(
            "/api/v1/audit?connection_id={id}&action=token.refreshed&limit=500"
        ))
        .await;
    let rows: Vec<&serde_json::Value> = a["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{a}"))
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
    // oidc-provider issues access tokens that live 8 seconds (the old one-minute margin made
    // every call refresh them). The scheduler refreshes them 4 s before expiry, callers only in
    // the last 2 s: a margin that holds on a busy machine.
    let oidc = Oidc::start_with(&kp.redirect_uri(), &[("OIDC_ACCESS_TOKEN_TTL", "8")]);
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

    // Over 8 token generations the scheduler keeps the token fresh and the calls, a burst every
    // 1.2 s, never refresh it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
        burst(&kp, &id).await;
        let (on_demand, scheduled) = refreshes(&kp, &id).await;
        assert_eq!(on_demand, 0, "calls caused no refresh");
        if scheduled >= 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler refreshed only {scheduled} times in 90 s"
        );
    }

    // A token past its expiry that the scheduler has not reached: the burst shares one refresh.
    // (A scheduled refresh already in flight may land after the update: then update again.)
    for attempt in 0.. {
        kp.sql(&format!(
            "UPDATE connections SET expires_at = last_refreshed_at - 1000, next_refresh_at = NULL WHERE id = '{id}'"
        ))
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await; // the proxy's cache lapses
        let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        let (exp, last) = (c["expires_at"].as_str(), c["last_refreshed_at"].as_str());
        if exp < last {
            break;
        }
        assert!(
            attempt < 3,
            "the token could not be made to look expired: {c}"
        );
    }
    let before = refreshes(&kp, &id).await.0;
    assert_eq!(before, 0);
    burst(&kp, &id).await;
    assert_eq!(
        refreshes(&kp, &id).await.0,
        1,
        "exactly one refresh for the whole burst"
    );
}

async fn listing_pages(db: Db) {
    let kp = Keyport::start(KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let addr = common::fake_key_provider().await;
    kp.point_apikey_test_at(&format!("http://{addr}")).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let (s, c) = kp
            .post(
                "/api/v1/connections",
                json!({"connector": "apikey-test", "api_key": common::GOOD_KEY, "name": format!("key {i}")}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        created.push(c["id"].as_str().unwrap().to_string());
    }
    // Pages of 3: 3, 3, 1, newest first, each connection exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/connections?limit=3&cursor={c}"),
            None => "/api/v1/connections?limit=3&total=true".to_string(),
        };
        let (s, page) = kp.get(&path).await;
        assert_eq!(s, 200, "{page}");
        if cursor.is_none() {
            assert_eq!(page["total"], 7, "the total on request");
        }
        pages += 1;
        seen.extend(
            page["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    sorted_seen.dedup();
    assert_eq!(sorted_seen.len(), 7, "each once: {seen:?}");
    created.sort();
    assert_eq!(sorted_seen, created, "exactly the created ones");
    let (_, all) = kp.get("/api/v1/connections").await;
    let all: Vec<String> = all["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all, seen, "pages follow the listing's order");
    assert_eq!(all.len(), 7, "the default page (100) holds them all");
    for bad in ["limit=0", "limit=501", "limit=abc", "cursor=nonsense"] {
        let (s, b) = kp.get(&format!("/api/v1/connections?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
}

#[tokio::test]
async fn connection_listings_are_paginated_with_a_cursor_on_sqlite() {
    listing_pages(Db::Sqlite).await;
}

#[tokio::test]
async fn connection_listings_are_paginated_with_a_cursor_on_postgres() {
    listing_pages(Db::Postgres).await;
}

#[tokio::test]
async fn abandoned_authorizations_are_removed_after_their_link_expired() {
    let (kp, _fake) = common::keyport_with_fake_as().await;
    let start = async || {
        let (s, started) = kp
            .post(
                "/api/v1/connections/oauth/start",
                json!({"connector": "oidc-test"}),
            )
            .await;
        assert_eq!(s, 201, "{started}");
        started["connection_id"].as_str().unwrap().to_string()
    };
    let abandoned = start().await;
    let still_open = start().await;
    let (connected, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&connected, |c| c["status"] == "active").await;
    // Reconnects of existing connections that were abandoned too: of a working one, and of one
    // that was revoked (no tokens left).
    let (revoked, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&revoked, |c| c["status"] == "active").await;
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{revoked}/revoke"), json!({}))
        .await;
    assert!(s < 300, "{b}");
    for id in [&connected, &revoked] {
        let (s, b) = kp
            .post(&format!("/api/v1/connections/{id}/reconnect"), json!({}))
            .await;
        assert!(s < 300, "{b}");
    }
    // Two hours ago for all of them; the links of the abandoned one and of both reconnects
    // expired back then (the abandoned one's last, so a cleanup that removes it has seen the
    // others' expired links too).
    for id in [&abandoned, &still_open, &connected, &revoked] {
        kp.sql(&format!(
            "UPDATE connections SET created_at = created_at - 7200000 WHERE id = '{id}'"
        ))
        .await;
    }
    for id in [&connected, &revoked, &abandoned] {
        kp.sql(&format!(
            "UPDATE oauth_flows SET expires_at = expires_at - 7200000 WHERE connection_id = '{id}'"
        ))
        .await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (s, _) = kp.get(&format!("/api/v1/connections/{abandoned}")).await;
        if s == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned connection was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, audit) = kp
        .get(&format!("/api/v1/connections/{abandoned}/audit"))
        .await;
    assert!(
        audit["events"].as_array().unwrap().iter().any(|e| {
            e["action"] == "connection.deleted"
                && e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("abandoned"))
        }),
        "{audit}"
    );
    // The cleanup has run (the abandoned one is gone); the reconnected ones keep their status.
    for (id, status) in [
        (&still_open, "pending"),
        (&connected, "active"),
        (&revoked, "revoked"),
    ] {
        let (s, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(c["status"], status, "{c}");
    }
}

#[tokio::test]
async fn a_disabled_connection_refuses_use_keeps_refreshing_and_says_so() {
    let (kp, _fake) = common::keyport_with_fake_as().await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let proxy = format!("/api/v1/connections/{id}/proxy/api/items");
    assert_eq!(kp.get(&proxy).await.0, 200, "usable while enabled");

    let (s, c) = kp
        .patch(
            &format!("/api/v1/connections/{id}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["enabled"], false);
    assert!(c["disabled_at"].is_string(), "{c}");
    let (s, b) = kp.get(&proxy).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("disabled"),
        "{b}"
    );
    let (s, key) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": "reader", "permissions": ["credentials:read"]}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let r = kp
        .http
        .get(format!("{}/api/v1/connections/{id}/credentials", kp.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "no credential reads while disabled");
    // It keeps refreshing: still active, a refresh still works and the schedule stays.
    let before = c["last_refreshed_at"].clone();
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "active");
    assert_ne!(c["last_refreshed_at"], before, "{c}");
    assert!(c["next_refresh_at"].is_string(), "{c}");
    // The page says so.
    let page = common::signed_in_page(&kp, &format!("/connections/{id}")).await;
    assert!(
        page.contains(">Disabled<"),
        "the connection page shows Disabled"
    );
    assert!(page.contains("data-enabled=\"true\""), "and offers Enable");
    // On again: usable again; both switches are audited.
    let (s, c) = kp
        .patch(
            &format!("/api/v1/connections/{id}"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["enabled"], true);
    assert_eq!(kp.get(&proxy).await.0, 200);
    let (_, a) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    let actions: Vec<&str> = a["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"connection.disabled") && actions.contains(&"connection.enabled"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn an_api_key_is_replaced_in_place_after_the_provider_checks_it() {
    use axum::http::{HeaderMap, StatusCode};
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let (old_key, new_key) = ("ak_live_old_0123456789", "ak_live_new_9876543210");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    // Both keys are valid at the provider (one account); anything else is refused.
    let app = axum::Router::new().fallback(move |h: HeaderMap| {
        let log = log.clone();
        async move {
            let auth = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            log.lock().unwrap().push(auth.clone());
            if auth == format!("Bearer {old_key}") || auth == format!("Bearer {new_key}") {
                (
                    StatusCode::OK,
                    axum::Json(json!({"id": "acct-77", "name": "Acme Sales"})),
                )
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"detail": "Invalid Token"})),
                )
            }
        }
    });
    kp.point_apikey_test_at(&common::serve_fake(app).await)
        .await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": old_key, "name": "Sales key", "config": {}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let (s, _) = kp
        .put(
            &format!("/api/v1/connections/{id}/dependents/workflow-7"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201);
    // Rejected by the provider: 422 naming the field, nothing changed.
    let (s, b) = kp
        .put(
            &format!("/api/v1/connections/{id}/api-key"),
            json!({"api_key": "ak_live_wrong_000000"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["fields"][0]["path"], "/api_key", "{b}");
    assert_eq!(
        kp.read_secret(&id, "api_key").await.as_deref(),
        Some(old_key)
    );
    // The key was rotated and the old one stopped working: the connection shows revoked ...
    kp.sql(&format!(
        "UPDATE connections SET status = 'revoked', status_reason = 'rejected' WHERE id = '{id}'"
    ))
    .await;
    // ... and the new key brings it back in place.
    let (s, c) = kp
        .put(
            &format!("/api/v1/connections/{id}/api-key"),
            json!({"api_key": new_key}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["name"], "Sales key");
    assert_eq!(c["status"], "active", "{c}");
    assert_eq!(
        kp.read_secret(&id, "api_key").await.as_deref(),
        Some(new_key)
    );
    let (_, deps) = kp
        .get(&format!("/api/v1/connections/{id}/dependents"))
        .await;
    assert_eq!(deps["dependents"][0]["ref"], "workflow-7", "{deps}");
    seen.lock().unwrap().clear();
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/reports"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        seen.lock().unwrap().clone(),
        [format!("Bearer {new_key}")],
        "calls use the new key"
    );
    // The Connection page offers it.
    let page = common::signed_in_page(&kp, &format!("/connections/{id}")).await;
    assert!(page.contains("Replace API key") && page.contains("data-api-key-replace"));
}

#[tokio::test]
async fn during_a_token_endpoint_outage_calls_wait_out_the_backoff_instead_of_refreshing() {
    let (kp, fake) = common::keyport_with_fake_as().await;
    fake.script.lock().unwrap().expires_in = Some(json!(2));
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    // The token endpoint goes down; the token expires; the scheduler's refresh fails and backs off.
    fake.script.lock().unwrap().refresh_failures = 1_000;
    kp.wait_for(&id, |c| {
        c["expiring_soon"].is_object()
            || c["next_refresh_at"]
                .as_str()
                .is_some_and(|t| t > c["expires_at"].as_str().unwrap_or(""))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let before = fake.token_requests();
    let calls = (0..20).map(|_| {
        kp.http
            .get(format!(
                "{}/api/v1/connections/{id}/proxy/api/items",
                kp.url
            ))
            .bearer_auth(ADMIN)
            .send()
    });
    for r in futures::future::join_all(calls).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 503);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "Retry-After {retry}");
        let b: serde_json::Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "unavailable", "{b}");
    }
    assert_eq!(
        fake.token_requests(),
        before,
        "the calls sent no token request during the backoff"
    );
}

/// Sets when `id`'s token expires, and waits until the proxy's connection cache (2 s) sees it.
async fn expire_at(kp: &Keyport, id: &str, at: i64) {
    kp.sql(&format!(
        "UPDATE connections SET expires_at = {at} WHERE id = '{id}'"
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
}

/// A proxied call on `id`: (status, Retry-After, body).
async fn proxied(kp: &Keyport, id: &str) -> (u16, Option<u64>, serde_json::Value) {
    let r = kp
        .http
        .get(format!(
            "{}/api/v1/connections/{id}/proxy/api/items",
            kp.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_rate_limited_token_endpoint_is_waited_out_for_its_retry_after_and_a_working_token_is_still_used()
 {
    let (kp, fake) = common::keyport_with_fake_as().await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    // The token endpoint answers refresh grants with 429 and `Retry-After: 40`.
    {
        let mut s = fake.script.lock().unwrap();
        s.refresh_failures = 1_000;
        s.refresh_retry_after = Some(40);
    }
    let before = fake.token_requests();
    kp.sql(&format!(
        "UPDATE connections SET next_refresh_at = 1 WHERE id = '{id}'"
    ))
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let c = loop {
        let c = store.connection("default", &id).await.unwrap().unwrap();
        if c.refresh_failures > 0 {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler never tried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let wait = c.next_refresh_at.unwrap() - keyport::store::now_ms();
    assert!(
        (39_000..=48_100).contains(&wait),
        "the scheduler waits as Retry-After says (40 s, plus up to a fifth of jitter): next try in {wait} ms"
    );
    let after_scheduler = fake.token_requests();
    assert_eq!(after_scheduler, before + 1, "one refresh by the scheduler");
    // The token is due for an on-demand refresh but still works: calls use it as it is.
    let now = keyport::store::now_ms();
    expire_at(&kp, &id, now + 20_000).await;
    for _ in 0..10 {
        let (s, _, b) = proxied(&kp, &id).await;
        assert_eq!(s, 200, "{b}");
    }
    // Expired: calls are told when to come back, at once, and send no token request.
    expire_at(&kp, &id, keyport::store::now_ms() - 1_000).await;
    let calls = futures::future::join_all((0..20).map(|_| proxied(&kp, &id))).await;
    for (s, retry, b) in calls {
        assert_eq!(s, 503, "{b}");
        assert_eq!(b["error"]["code"], "unavailable", "{b}");
        let retry = retry.expect("Retry-After");
        assert!(
            (30..=49).contains(&retry),
            "Retry-After {retry} follows the provider's"
        );
    }
    assert_eq!(
        fake.token_requests(),
        after_scheduler,
        "no call sent a token request while the provider asked to wait"
    );
}

#[tokio::test]
async fn an_account_lookup_cut_short_by_a_crash_is_resumed_after_restart() {
    let opts = || KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    };
    let kp = Keyport::start(opts()).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    // The provider's userinfo hangs: the callback stores the tokens, then waits on the lookup.
    fake.script.lock().unwrap().userinfo_delay_ms = 120_000;
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let id = started["connection_id"].as_str().unwrap().to_string();
    let launch = started["authorize_url"].as_str().unwrap().to_string();
    let browser = Browser::new();
    let (s, loc, body) = browser.get(&launch).await;
    assert_eq!(s, 302, "{body}");
    let (_, loc, _) = browser.get(&loc.unwrap()).await;
    let callback = loc.unwrap();
    let http = browser.http.clone();
    let pending_callback = tokio::spawn(async move {
        let _ = http.get(callback).send().await;
    });
    kp.wait_for(&id, |c| {
        c["status_reason"] == "Authorized; looking up the account."
    })
    .await;
    // kill -9 in the middle of the lookup, then start again on the same data.
    let (data, pg) = kp.stop();
    pending_callback.abort();
    fake.script.lock().unwrap().userinfo_delay_ms = 0;
    let kp = Keyport::start_in(data, pg, opts());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        if c["status"] == "active" {
            assert!(c["account"]["id"].is_string(), "{c}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lookup was never resumed: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A connection's refresh lease as stored: (holder, until, Unix ms).
async fn lease(store: &keyport::store::Store, id: &str) -> (Option<String>, Option<i64>) {
    let c = store.connection("default", id).await.unwrap().unwrap();
    (c.lease_owner, c.lease_until)
}

#[tokio::test]
async fn a_refresh_lease_is_renewed_while_its_holder_works_and_lapses_within_seconds_when_it_dies()
{
    const LEASE: i64 = 3_000;
    let opts = || KeyportOpts {
        master_keys: Some(master_keys()),
        env: vec![
            ("KEYPORT_REFRESH_LEASE_MS".into(), LEASE.to_string()),
            ("KEYPORT_REFRESH_WAIT_MS".into(), "1500".into()),
            ("KEYPORT_TOKEN_TIMEOUT_MS".into(), "120000".into()),
        ],
        ..Default::default()
    };
    let kp = Keyport::start(opts()).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (id, _) = common::oauth_connect(&kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    // The provider takes a minute to answer the next refresh.
    {
        let mut s = fake.script.lock().unwrap();
        s.slow_refreshes = 1;
        s.slow_refresh_ms = 60_000;
    }
    let before = fake.token_requests();
    let forced = {
        let (http, url) = (kp.http.clone(), kp.url.clone());
        let id = id.clone();
        tokio::spawn(async move {
            let _ = http
                .post(format!("{url}/api/v1/connections/{id}/refresh"))
                .bearer_auth(ADMIN)
                .send()
                .await;
        })
    };
    while fake.token_requests() == before {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Held and renewed: over three lease lifetimes the holder keeps a lease that never reaches
    // further than one lifetime ahead.
    let mut untils = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(2 * LEASE as u64 / 3)).await;
        let (owner, until) = lease(&store, &id).await;
        let now = keyport::store::now_ms();
        let until = until.expect("a lease is held during the refresh");
        assert!(owner.is_some());
        assert!(until > now, "the lease lapsed while its holder was alive");
        assert!(
            until <= now + LEASE + 50,
            "the lease reaches {} ms ahead",
            until - now
        );
        untils.push(until);
    }
    assert!(
        untils.windows(2).all(|w| w[1] > w[0]),
        "the holder renewed its lease: {untils:?}"
    );
    // Another caller that needs a new token does not hang on the slow one: 503, Retry-After.
    let t = std::time::Instant::now();
    let r = kp
        .http
        .post(format!("{}/api/v1/connections/{id}/refresh", kp.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?} (bound 1.5 s)",
        t.elapsed()
    );
    // A call that needs no new token is served meanwhile.
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/api/items"))
        .await;
    assert_eq!(s, 200, "{b}");
    // A proxied call whose token has expired waits its bound for the refresh in progress, then
    // is told to come back (503, Retry-After), instead of hanging on the slow provider.
    expire_at(&kp, &id, keyport::store::now_ms() - 1_000).await;
    let t = std::time::Instant::now();
    let (s, retry, b) = proxied(&kp, &id).await;
    assert_eq!(s, 503, "{b}");
    assert!(retry.is_some_and(|r| r >= 1), "{b}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "answered after {:?} (bound 1.5 s)",
        t.elapsed()
    );
    // kill -9 mid-refresh: the dead holder's lease ends within one lifetime of its last renewal.
    let killed_at = keyport::store::now_ms();
    let (data, pg) = kp.stop();
    forced.abort();
    let (_, until) = lease(&store, &id).await;
    assert!(
        until.is_some_and(|u| u <= killed_at + LEASE + 50),
        "a dead holder's lease reaches {:?} ms past the kill",
        until.map(|u| u - killed_at)
    );
    // After the restart a refresh goes through as soon as that lease has lapsed.
    let kp = Keyport::start_in(data, pg, opts());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, b) = kp
            .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
            .await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{b}");
        assert!(std::time::Instant::now() < deadline, "never refreshed: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_webhook_delivery_claim_is_renewed_while_sending_and_lapses_within_seconds_after_a_crash()
{
    let opts = || KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    };
    let kp = Keyport::start(opts()).await;
    // A receiver that hangs on its first request, and answers every later one at once.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let n = hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                    }
                    "ok"
                }
            }),
        )
    };
    let url = format!("{}/hook", common::serve_fake(app).await);
    // An OAuth app, so that starting a connection (which announces `connection.created`) works;
    // the authorization is never visited.
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (s, hook) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "events": ["connection.created"]}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let (s, b) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let hits_now = || hits.load(std::sync::atomic::Ordering::SeqCst);
    let t = std::time::Instant::now();
    while hits_now() == 0 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "never delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Twice the claim's lifetime later the delivery has not been sent again: its claim was
    // renewed while the receiver held it.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    assert_eq!(hits_now(), 1, "a delivery being sent was claimed again");
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let killed_at = keyport::store::now_ms();
    let (data, pg) = kp.stop();
    let next: i64 = sqlx::query("SELECT next_attempt_at FROM webhook_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(
        next <= killed_at + 6_000 + 50,
        "the dead sender's claim reaches {} ms past the kill",
        next - killed_at
    );
    let _kp = Keyport::start_in(data, pg, opts());
    let t = std::time::Instant::now();
    while hits_now() < 2 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "never redelivered after the restart"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn oauth_callbacks_never_fail_while_webhook_subscriptions_are_deleted_on_postgres() {
    let kp = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let receiver = common::serve_fake(axum::Router::new().fallback(|| async { "ok" })).await;
    let (s, steady) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": format!("{receiver}/steady"), "events": ["*"]}),
        )
        .await;
    assert_eq!(s, 201, "{steady}");
    let steady = steady["id"].as_str().unwrap().to_string();
    // Two loops create and delete subscriptions as fast as they can while connections are
    // authorized, so events are written while subscriptions they copy are being deleted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = (0..2).map(|_| {
        let (http, url, stop) = (kp.http.clone(), kp.url.clone(), stop.clone());
        let hook = format!("{receiver}/churn");
        tokio::spawn(async move {
            let mut cycles = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/api/v1/webhooks"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"url": hook, "events": ["*"]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let h: serde_json::Value = r.json().await.unwrap();
                let r = http
                    .delete(format!(
                        "{url}/api/v1/webhooks/{}",
                        h["id"].as_str().unwrap()
                    ))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
                cycles += 1;
            }
            cycles
        })
    });
    let churn: Vec<_> = churn.collect();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let round = futures::future::join_all(
            (0..4).map(|_| common::oauth_connect(&kp, "oidc-test", json!({}))),
        )
        .await;
        ids.extend(round.into_iter().map(|(id, location)| {
            assert!(
                !location.contains("error"),
                "the callback failed: {location}"
            );
            id
        }));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cycles = 0;
    for c in churn {
        cycles += c.await.unwrap();
    }
    assert!(cycles >= 20, "the subscriptions churned ({cycles} cycles)");
    for id in &ids {
        kp.wait_for(id, |c| c["status"] == "active").await;
    }
    // The steady subscription got each connection's events exactly once.
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let mut events: std::collections::HashMap<(String, String), usize> = Default::default();
    for r in sqlx::query("SELECT event_type, payload FROM webhook_outbox WHERE webhook_id = $1")
        .bind(&steady)
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        let payload: serde_json::Value = serde_json::from_str(r.get::<&str, _>(1)).unwrap();
        let conn = payload["data"]["connection"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *events.entry((conn, r.get(0))).or_default() += 1;
    }
    for id in &ids {
        for kind in ["connection.created", "connection.active"] {
            assert_eq!(
                events.get(&(id.clone(), kind.to_string())),
                Some(&1),
                "{id}: {kind}"
            );
        }
    }
}
