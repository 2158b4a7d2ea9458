//! The Avoma connector, through `keyport serve`, against a fake Avoma: `GET /v1/users/` is a bare
//! array; a bad key answers `401 {"detail": "Invalid Token"}`.

mod common;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use common::e2e::{Keyport, KeyportOpts, master_keys};
use serde_json::json;

const KEY: &str = "avoma-live-9f8e7d6c5b4a";

async fn setup() -> Keyport {
    let app = Router::new().route(
        "/v1/users/",
        get(|h: HeaderMap| async move {
            if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
                return (StatusCode::UNAUTHORIZED, Json(json!({"detail": "Invalid Token"}))).into_response();
            }
            Json(json!([
                {"uuid": "b1", "email": "Ada@T-Rex.example", "first_name": "Ada", "last_name": "L", "role": "admin"},
                {"uuid": "b2", "email": "bob@t-rex.example", "first_name": "Bob", "last_name": "M", "role": "member"}
            ]))
            .into_response()
        }),
    );
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let base = common::serve_fake(app).await;
    common::provider_app(&kp, "avoma", &[("https://api.avoma.com", &base)], false).await;
    kp
}

#[tokio::test]
async fn avoma_describes_an_api_key_form() {
    let kp = setup().await;
    let (_, m) = kp.get("/api/v1/connectors/avoma").await;
    assert_eq!(m["auth_kind"], "api-key");
    assert_eq!(m["auth"]["ApiKey"]["label"], "API key");
    assert_eq!(m["api_base_url"], "https://api.avoma.com/v1/");
}

#[tokio::test]
async fn avoma_key_is_verified_and_named_by_the_user() {
    let kp = setup().await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "avoma", "api_key": KEY, "name": "Sales calls"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "active");
    assert_eq!(c["name"], "Sales calls");
    assert_eq!(c["account"]["display_name"], "Sales calls");
}

#[tokio::test]
async fn avoma_without_a_name_uses_the_users_email_domain() {
    let kp = setup().await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "avoma", "api_key": KEY}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["account"]["display_name"], "t-rex.example");
    assert_eq!(c["name"], "t-rex.example");
}

#[tokio::test]
async fn avoma_invalid_token_is_a_clear_rejection() {
    let kp = setup().await;
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "avoma", "api_key": "nope"}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the API key was rejected by Avoma (Invalid Token)"),
        "{msg}"
    );
}
