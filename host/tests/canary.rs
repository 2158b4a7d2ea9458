//! Canary: a full flow with logging at `trace`, then every secret the flow handled — tokens,
//! codes, verifiers, state, cookies, client secret, API key, admin token, master key — is searched
//! for in everything the process printed. None may appear.

mod common;

use base64::Engine;
use common::e2e::*;
use serde_json::json;

#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace_level() {
    // Warm the shared compiled-component cache first: compiling at trace level only logs
    // Cranelift's work (public wasm code) and takes long.
    drop(Keyport::start(KeyportOpts::default()).await);
    let kp = Keyport::start(KeyportOpts {
        rust_log: "trace".into(),
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let mut secrets: Vec<(String, String)> = vec![
        ("admin token".into(), ADMIN.into()),
        ("client secret".into(), CLIENT_SECRET.into()),
        (
            "master key".into(),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        ),
    ];

    let (_, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    let id = started["connection_id"].as_str().unwrap().to_string();
    let launch = started["authorize_url"].as_str().unwrap().to_string();
    secrets.push((
        "launch token".into(),
        launch.rsplit('/').next().unwrap().into(),
    ));
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let (flow_id,): (String,) = sqlx::query_as("SELECT id FROM oauth_flows")
        .fetch_one(store.pool())
        .await
        .unwrap();
    secrets.push((
        "pkce verifier".into(),
        kp.read_secret(&flow_id, "pkce_verifier").await.unwrap(),
    ));

    let browser = Browser::new();
    let callback = browser.authorize_at_provider(&launch, "carol", false).await;
    let q = query(&callback);
    secrets.push(("authorization code".into(), q["code"].clone()));
    secrets.push(("state".into(), q["state"].clone()));
    let cookies = browser.cookies_for(&kp.url);
    let binding = cookies.split(';').find_map(|c| {
        c.trim()
            .strip_prefix("keyport-flow-")
            .map(|v| v.split_once('=').unwrap().1.to_string())
    });
    secrets.push((
        "browser binding".into(),
        binding.expect("the binding cookie was set"),
    ));
    assert_eq!(browser.finish(&callback).await.status, 303);
    kp.wait_for(&id, |c| c["status"] == "active").await;
    secrets.push((
        "access token".into(),
        kp.read_secret(&id, "access_token").await.unwrap(),
    ));
    secrets.push((
        "refresh token".into(),
        kp.read_secret(&id, "refresh_token").await.unwrap(),
    ));

    let (s, _) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200);
    secrets.push((
        "rotated access token".into(),
        kp.read_secret(&id, "access_token").await.unwrap(),
    ));
    secrets.push((
        "rotated refresh token".into(),
        kp.read_secret(&id, "refresh_token").await.unwrap(),
    ));
    let (s, _) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, key) = kp.post("/api/v1/api-keys", json!({"name": "canary"})).await;
    assert_eq!(s, 201);
    secrets.push((
        "workspace API key".into(),
        key["key"].as_str().unwrap().into(),
    ));
    let r = kp
        .http
        .get(format!("{}/api/v1/connections", kp.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Give the log threads a moment, then search.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = kp.log();
    assert!(
        log.contains("TRACE"),
        "the run really logged at trace level"
    );
    assert!(log.len() > 10_000, "and logged a lot ({} bytes)", log.len());
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is a real secret");
        if let Some(at) = log.find(value.as_str()) {
            let start = at.saturating_sub(200);
            panic!(
                "the {what} appears in the log: …{}…",
                &log[start..(at + value.len() + 50).min(log.len())]
            );
        }
    }
}
