//! The connections API beyond OAuth: API-key connections against a fake provider, tenancy,
//! config validation and resolution, authentication, and the vault at start-up and rotation.

mod common;

use common::e2e::*;
use common::{GOOD_KEY, fake_key_provider};
use serde_json::{Value, json};

async fn keyport_with_key_provider() -> Keyport {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let addr = fake_key_provider().await;
    kp.point_apikey_test_at(&format!("http://{addr}")).await;
    kp
}

#[tokio::test]
async fn api_key_connection_with_a_valid_key_is_active() {
    let kp = keyport_with_key_provider().await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY, "config": {"region": "us"}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "active");
    assert_eq!(c["account"]["id"], "acct-77");
    assert_eq!(c["account"]["display_name"], "Acme Sales");
    assert_eq!(c["config"]["region"], "us");
    assert!(
        !c.to_string().contains(GOOD_KEY),
        "responses never carry the key"
    );
    let id = c["id"].as_str().unwrap();
    assert_eq!(
        kp.read_secret(id, "api_key").await.as_deref(),
        Some(GOOD_KEY),
        "stored sealed, readable with the master key"
    );
    // Refresh on an API-key connection re-verifies the key.
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "active");
}

#[tokio::test]
async fn api_key_connection_with_an_invalid_key_is_refused_and_nothing_is_stored() {
    let kp = keyport_with_key_provider().await;
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": "wrong-key"}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rejected the API key") && msg.contains("Invalid Token"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-key"));
    let (_, list) = kp.get("/api/v1/connections").await;
    assert_eq!(list["connections"], json!([]), "no connection was created");
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    assert_eq!(
        store.count_secrets().await.unwrap(),
        0,
        "no secret was stored"
    );
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": "  "}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
}

#[tokio::test]
async fn another_workspace_sees_404_and_api_keys_stay_in_their_workspace() {
    let kp = keyport_with_key_provider().await;
    let (_, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY}),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    let (s, _) = kp
        .post(
            "/api/v1/workspaces",
            json!({"id": "other", "name": "Other team"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, key) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": "other's automation", "workspace": "other"}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let other_key = key["key"].as_str().unwrap();
    let other = |path: String| {
        let http = kp.http.clone();
        let url = format!("{}{path}", kp.url);
        let k = other_key.to_string();
        async move {
            let r = http.get(url).bearer_auth(k).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, _) = other(format!("/api/v1/connections/{id}")).await;
    assert_eq!(s, 404, "another workspace's connection answers 404");
    let (s, list) = other("/api/v1/connections".into()).await;
    assert_eq!(s, 200);
    assert_eq!(list["connections"], json!([]));
    let r = kp
        .http
        .post(format!("{}/api/v1/connections/{id}/revoke", kp.url))
        .bearer_auth(other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nor can it act on it");
    let r = kp
        .http
        .post(format!("{}/api/v1/workspaces", kp.url))
        .bearer_auth(other_key)
        .json(&json!({"id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "workspace keys are not admin");
    // The admin can act in the other workspace with the header.
    let r = kp
        .http
        .get(format!("{}/api/v1/connections", kp.url))
        .bearer_auth(ADMIN)
        .header("x-keyport-workspace", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["connections"], json!([]));
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    for auth in [None, Some("Bearer nope"), Some("Basic YWRtaW46YWRtaW4=")] {
        let mut req = kp.http.get(format!("{}/api/v1/connections", kp.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn config_is_validated_defaulted_and_resolved_with_overrides() {
    let kp = keyport_with_key_provider().await;
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY, "config": {"region": "mars"}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["path"], "/region");
    let (_, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY}),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    let (_, cfg) = kp.get(&format!("/api/v1/connections/{id}/config")).await;
    assert_eq!(
        cfg["config"],
        json!({"region": "eu"}),
        "defaults come from the schema"
    );
    let (s, c) = kp
        .patch(
            &format!("/api/v1/connections/{id}"),
            json!({"config": {"region": "us"}, "name": "US sales"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["name"], "US sales");
    let (_, cfg) = kp.get(&format!("/api/v1/connections/{id}/config")).await;
    assert_eq!(cfg["config"]["region"], "us");
    let (_, cfg) = kp
        .get(&format!(
            "/api/v1/connections/{id}/config?region=eu&extra=1"
        ))
        .await;
    assert_eq!(
        cfg["config"],
        json!({"region": "eu", "extra": "1"}),
        "per-call overrides win"
    );
    let (_, cfg) = kp
        .post(
            &format!("/api/v1/connections/{id}/config"),
            json!({"region": "us", "n": 3}),
        )
        .await;
    assert_eq!(cfg["config"]["n"], 3);
    let (s, err) = kp
        .patch(
            &format!("/api/v1/connections/{id}"),
            json!({"config": {"region": 7}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(
        c["config"]["region"], "us",
        "a rejected patch changes nothing"
    );
    let (s, err) = kp
        .patch(
            &format!("/api/v1/connections/{id}"),
            json!({"colour": "red"}),
        )
        .await;
    assert_eq!(s, 400, "unknown fields are refused: {err}");
    let (s, list) = kp
        .get("/api/v1/connections?connector=apikey-test&status=active")
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    let (s, _) = kp.get("/api/v1/connections?status=sleeping").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn the_service_refuses_to_start_with_secrets_it_cannot_decrypt() {
    let kp = keyport_with_key_provider().await;
    let (s, _) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY}),
        )
        .await;
    assert_eq!(s, 201);
    let (data, _) = kp.stop();
    let other = format!(
        "k9:{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 32])
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyport"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("KEYPORT_MASTER_KEYS", other)
        .env("KEYPORT_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"k1\"") && stderr.contains("not loaded"),
        "names the missing key id: {stderr}"
    );
}

#[tokio::test]
async fn key_rotation_re_encrypts_everything_under_the_new_key() {
    use base64::Engine;
    let kp = keyport_with_key_provider().await;
    let (_, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY}),
        )
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    let (data, _) = kp.stop();
    let k2 = format!(
        "k2:{}",
        base64::engine::general_purpose::STANDARD.encode([2u8; 32])
    );
    let both = format!("{k2},{}", master_keys());
    let rotate = |keys: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyport"))
            .args(["keys", "rotate", "--data-dir"])
            .arg(data.path())
            .env("KEYPORT_MASTER_KEYS", keys)
            .output()
            .unwrap()
    };
    let out = rotate(both.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("re-encrypted 1 secret(s) under key \"k2\""),
        "{stderr}"
    );
    // Resumable and idempotent: a second run has nothing left to do.
    let out = rotate(both);
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-encrypted 0 secret(s)"));
    // The old key can go: the service starts with k2 alone and the secrets decrypt.
    let store = keyport::store::Store::connect(&format!(
        "sqlite:{}",
        data.path().join("keyport.db").display()
    ))
    .await
    .unwrap();
    assert_eq!(
        store.secret_key_ids().await.unwrap(),
        vec!["k2".to_string()]
    );
    let ring = keyport::vault::KeyRing::parse(&k2, None).unwrap();
    let ct = store
        .secret("default", &id, "api_key")
        .await
        .unwrap()
        .unwrap();
    let plain = ring
        .open_string(
            &ct,
            keyport::vault::Context {
                workspace: "default",
                row: &id,
                field: "api_key",
            },
        )
        .unwrap();
    assert_eq!(plain.as_str(), GOOD_KEY);
}
