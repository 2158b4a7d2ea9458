//! The Fireflies connector, through `keyport serve`, against a fake Fireflies GraphQL endpoint
//! whose failures arrive in `errors[]` with HTTP 200.

mod common;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::e2e::{Keyport, KeyportOpts, master_keys};
use keyport::runtime::{Classification, ErrorKind, ResponseView};
use serde_json::{Value, json};

const KEY: &str = "ff-3c2b1a09-live";

async fn setup() -> Keyport {
    let app = Router::new().route(
        "/graphql",
        post(|h: HeaderMap, Json(body): Json<Value>| async move {
            if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
                return Json(json!({"errors": [{"message": "Invalid API key", "extensions": {"code": "invalid_api_key", "status": 401}}], "data": null}));
            }
            assert!(body["query"].as_str().unwrap().contains("user { user_id name email }"));
            Json(json!({"data": {"user": {"user_id": "01HFF-USER", "name": "Ada Lovelace", "email": "ada@t-rex.example"}}}))
        }),
    );
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let base = common::serve_fake(app).await;
    common::provider_app(
        &kp,
        "fireflies",
        &[("https://api.fireflies.ai", &base)],
        false,
    )
    .await;
    kp
}

#[tokio::test]
async fn fireflies_key_is_verified_with_the_user_query() {
    let kp = setup().await;
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "fireflies", "api_key": KEY}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["account"]["id"], "01HFF-USER");
    assert_eq!(c["account"]["display_name"], "Ada Lovelace");
    assert_eq!(c["account"]["email"], "ada@t-rex.example");
}

#[tokio::test]
async fn fireflies_errors_at_http_200_are_failures() {
    let kp = setup().await;
    let (s, err) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "fireflies", "api_key": "bad"}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid API key"),
        "{err}"
    );
    let (_, list) = kp.get("/api/v1/connections").await;
    assert_eq!(list["connections"], json!([]));
}

#[tokio::test]
async fn fireflies_classifies_graphql_error_bodies() {
    let rt = common::runtime_with_loopback();
    let ff = rt.load(common::builtin("fireflies")).await.unwrap();
    let view = |body: Value| ResponseView {
        status: 200,
        headers: vec![],
        body: body.to_string().into_bytes(),
    };
    let c = ff.classify_response(view(json!({"errors": [{"message": "Too many requests", "extensions": {"code": "TOO_MANY_REQUESTS"}}]}))).await.unwrap();
    assert!(
        matches!(c, Some(Classification::Failure(ref e)) if e.kind == ErrorKind::RateLimited),
        "{c:?}"
    );
    let c = ff
        .classify_response(view(json!({"data": {"transcripts": []}})))
        .await
        .unwrap();
    assert!(matches!(c, Some(Classification::Ok)));
}
