//! Hot-loading connectors: a new version swaps in under 200 calls per second with zero failures
//! and later calls see it; a version asking for more egress waits for approval while the old one
//! serves; broken uploads are rejected with a clear error and change nothing; rollback and unload;
//! an upload to one replica is served by another on the same PostgreSQL; a file dropped into the
//! watched directory serves within 2 seconds; a component built against the frozen 0.1.0 contract
//! keeps loading and working next to 0.2.0 connectors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use common::e2e::*;
use serde_json::{Value, json};

/// A fake provider for `swap-test`: every path answers the account and the connector version
/// the request carried (`X-Connector-Version`, set by the connector's manifest).
async fn fake_provider() -> String {
    let app = axum::Router::new().route(
        "/{*rest}",
        axum::routing::get(|uri: Uri, headers: HeaderMap| async move {
            axum::Json(json!({
                "id": "swap-user",
                "version": headers.get("x-connector-version").and_then(|v| v.to_str().ok()),
                "error": if uri.path().ends_with("/revoked") { "revoked" } else { "none" },
            }))
        }),
    );
    common::serve_fake(app).await
}

async fn upload(kp: &Keyport, bytes: Vec<u8>, grant: &str) -> (u16, Value) {
    let r = kp
        .http
        .post(format!("{}/api/v1/admin/connectors?grant={grant}", kp.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn guest(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

async fn version_served(kp: &Keyport, id: &str) -> (u16, String) {
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/items"))
        .await;
    (s, b["version"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_new_version_swaps_in_under_load_with_zero_failures() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let provider = fake_provider().await;
    // Version 1 asks for api.swap.test: it waits for the grant.
    let (s, b) = upload(&kp, guest(keyport_test_artifacts::SWAP_V1), "").await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["status"], "pending_approval");
    assert_eq!(b["missing_grants"], json!(["api.swap.test"]));
    assert_eq!(kp.get("/api/v1/connectors/swap-test").await.0, 404);
    let (s, b) = kp
        .post(
            "/api/v1/admin/connectors/swap-test/approve",
            json!({"hosts": ["api.swap.test"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["activated"].is_string(), "{b}");
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/swap-test",
            json!({"endpoint_overrides": {"https://api.swap.test": provider}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "swap-test", "api_key": "k"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(version_served(&kp, &id).await, (200, "1.0.0".into()));

    // 200 calls per second for 4 seconds, each through the connector (via the proxy).
    let results: Arc<Mutex<Vec<(Instant, u16, String)>>> = Arc::default();
    let load = {
        let (url, id, results) = (kp.url.clone(), id.clone(), results.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut calls = Vec::new();
            for _ in 0..800 {
                tick.tick().await;
                let (client, url, id, results) =
                    (client.clone(), url.clone(), id.clone(), results.clone());
                calls.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = client
                        .get(format!("{url}/api/v1/connections/{id}/proxy/items"))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap();
                    let s = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    results.lock().unwrap().push((
                        sent,
                        s,
                        v["version"].as_str().unwrap_or_default().to_string(),
                    ));
                }));
            }
            futures::future::join_all(calls).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Version 2 also wants cdn.swap.test: it waits, and version 1 keeps serving.
    let (s, b) = upload(&kp, guest(keyport_test_artifacts::SWAP_V2), "").await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["missing_grants"], json!(["cdn.swap.test"]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (s, b) = kp
        .post(
            "/api/v1/admin/connectors/swap-test/approve",
            json!({"hosts": ["cdn.swap.test"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let swapped = Instant::now();
    load.await.unwrap();
    let results = results.lock().unwrap().clone();
    assert_eq!(results.len(), 800);
    let failures: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    assert!(failures.is_empty(), "zero failures: {failures:?}");
    let after: Vec<&String> = results
        .iter()
        .filter(|r| r.0 > swapped)
        .map(|r| &r.2)
        .collect();
    assert!(after.len() > 100, "enough calls after the swap");
    assert!(
        after.iter().all(|v| *v == "2.0.0"),
        "calls after the swap see the new version"
    );
    assert!(results.iter().any(|r| r.2 == "1.0.0"));
    // Every one of those calls ran the component's `classify-response` (the connector declares
    // it): an answer it classifies as revoked turns a connection revoked through the proxy.
    let (s, other) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "swap-test", "api_key": "k2"}),
        )
        .await;
    assert_eq!(s, 201, "{other}");
    let other = other["id"].as_str().unwrap();
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{other}/proxy/revoked"))
        .await;
    assert_eq!(s, 200, "the answer passes through");
    let (_, c) = kp.get(&format!("/api/v1/connections/{other}")).await;
    assert_eq!(c["status"], "revoked", "{c}");

    // The listing shows the version, hash, source and granted hosts.
    let (_, list) = kp.get("/api/v1/admin/connectors").await;
    let entry = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "swap-test")
        .unwrap()
        .clone();
    assert_eq!(entry["version"], "2.0.0");
    assert_eq!(entry["source"], "uploaded");
    assert_eq!(entry["hash"].as_str().unwrap().len(), 64);
    assert!(
        entry["egress_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["granted"] == true)
    );

    // Broken uploads are rejected and change nothing.
    for (bytes, expect) in [
        (b"this is not wasm".to_vec(), "not a WebAssembly file"),
        (
            guest(keyport_test_artifacts::WRONG_WORLD),
            "does not implement",
        ),
        (guest(keyport_test_artifacts::DESCRIBE_TRAP), "describe"),
        (guest(keyport_test_artifacts::BAD_SCHEMA), "schema"),
    ] {
        let (s, b) = upload(&kp, bytes, "").await;
        assert_eq!(s, 422, "{b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{msg}");
        assert_eq!(version_served(&kp, &id).await, (200, "2.0.0".into()));
    }

    // Rollback, then unload (refused while the connection exists, unless forced).
    let (s, b) = kp
        .post("/api/v1/admin/connectors/swap-test/rollback", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(version_served(&kp, &id).await, (200, "1.0.0".into()));
    let (s, b) = kp.delete("/api/v1/admin/connectors/swap-test").await;
    assert_eq!(s, 409, "{b}");
    let (s, _) = kp
        .delete("/api/v1/admin/connectors/swap-test?force=true")
        .await;
    assert_eq!(s, 204);
    assert_eq!(kp.get("/api/v1/connectors/swap-test").await.0, 404);
    // Built-in connectors cannot be unloaded here.
    assert_eq!(kp.delete("/api/v1/admin/connectors/slack").await.0, 409);
}

#[tokio::test]
async fn an_upload_to_one_replica_is_served_by_another_on_postgres() {
    let a = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        ..Default::default()
    })
    .await;
    let b = Keyport::start(KeyportOpts {
        database_url: Some(a.db_url()),
        ..Default::default()
    })
    .await;
    let (s, r) = upload(&a, guest(keyport_test_artifacts::SWAP_V1), "api.swap.test").await;
    assert_eq!(s, 201, "{r}");
    for _ in 0..50 {
        let (s, c) = b.get("/api/v1/connectors/swap-test").await;
        if s == 200 {
            assert_eq!(c["version"], "1.0.0");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the second replica never served the upload");
}

#[tokio::test]
async fn a_connector_dropped_into_the_watched_directory_serves_within_two_seconds() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let dir = kp.data.path().join("connectors");
    let wait = |version: &'static str| {
        let kp = &kp;
        async move {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                let (s, c) = kp.get("/api/v1/connectors/swap-test").await;
                if s == 200 && c["version"] == version {
                    return t.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("version {version} was not serving within 2 s");
        }
    };
    std::fs::copy(keyport_test_artifacts::SWAP_V1, dir.join("swap.wasm")).unwrap();
    wait("1.0.0").await;
    // A broken file is reported; what serves keeps serving.
    std::fs::write(dir.join("broken.wasm"), b"garbage").unwrap();
    let mut reported = false;
    for _ in 0..40 {
        let (_, list) = kp.get("/api/v1/admin/connectors").await;
        if list["directory_errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["file"] == "broken.wasm")
        {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported, "the broken file is reported");
    assert!(kp.log().contains("broken.wasm"), "and logged");
    assert_eq!(kp.get("/api/v1/connectors/swap-test").await.0, 200);
    // Replacing the file loads the new version.
    let tmp = dir.join("swap.wasm.tmp");
    std::fs::copy(keyport_test_artifacts::SWAP_V2, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("swap.wasm")).unwrap();
    wait("2.0.0").await;
    // Removing it unloads it.
    std::fs::remove_file(dir.join("swap.wasm")).unwrap();
    for _ in 0..40 {
        if kp.get("/api/v1/connectors/swap-test").await.0 == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("removing the file did not unload the connector");
}

/// A fake provider for `legacy-test`: `/me` answers the account when the key and the manifest's
/// header arrived; `/dead` answers HTTP 200 with `ok: false` (what the connector's
/// `classify-response` calls revoked).
async fn legacy_provider() -> String {
    let app = axum::Router::new()
        .route(
            "/me",
            axum::routing::get(|headers: HeaderMap| async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                if h("x-legacy-key").as_deref() != Some("legacy-key") {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
                }
                assert_eq!(h("x-contract").as_deref(), Some("0.1.0"));
                (StatusCode::OK, axum::Json(json!({"id": "legacy-user"})))
            }),
        )
        .route(
            "/dead",
            axum::routing::get(|| async { axum::Json(json!({"ok": false})) }),
        );
    common::serve_fake(app).await
}

#[tokio::test]
async fn a_component_built_against_the_frozen_0_1_0_contract_keeps_working_next_to_0_2_0() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (s, b) = upload(
        &kp,
        guest(keyport_test_artifacts::LEGACY_V0_1),
        "api.legacy.test",
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (_, list) = kp.get("/api/v1/admin/connectors").await;
    let contract = |id: &str| {
        list["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["contract"].clone())
    };
    assert_eq!(contract("legacy-test"), Some(json!("0.1.0")), "{list}");
    assert_eq!(contract("slack"), Some(json!("0.2.0")), "{list}");
    // describe, adapted: 0.1.0 has no categories.
    let (s, m) = kp.get("/api/v1/connectors/legacy-test").await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["categories"], json!([]));
    assert_eq!(m["auth"]["ApiKey"]["label"], "Legacy key", "{m}");
    assert_eq!(
        kp.get("/api/v1/connectors/slack").await.1["categories"],
        json!(["communication"])
    );

    let provider = legacy_provider().await;
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/legacy-test",
            json!({"endpoint_overrides": {"https://api.legacy.test": provider}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // validate-config, adapted.
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "legacy-test", "api_key": "legacy-key", "config": {"team": "forbidden"}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["path"], "/team", "{err}");
    assert_eq!(
        err["error"]["fields"][0]["message"],
        "this team is not allowed"
    );
    // lookup-account through the 0.1.0 `http` import: a wrong key is refused...
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "legacy-test", "api_key": "wrong"}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 401"),
        "{err}"
    );
    // ... and the right one connects, the call context carrying the defaulted config.
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "legacy-test", "api_key": "legacy-key"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "active", "{c}");
    assert_eq!(c["account"]["display_name"], "legacy-user (core)", "{c}");
    // classify-response, adapted: the provider's `ok: false` marks the connection revoked.
    let id = c["id"].as_str().unwrap();
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/dead"))
        .await;
    assert_eq!(s, 200);
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "revoked", "{c}");
}
