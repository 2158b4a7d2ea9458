//! The HubSpot connector, through `keyport serve`, against a fake HubSpot with the real response
//! shapes: dated 2026-03 token, introspection and revocation endpoints; 30-minute tokens; scopes as
//! an array; `{status, message}` errors.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Form, Json, Router};
use common::e2e::{Keyport, KeyportOpts, master_keys};
use serde_json::{Value, json};

#[derive(Default)]
struct Fake {
    issued: Vec<String>,
    refresh_tokens: Vec<String>,
    introspections: Vec<HashMap<String, String>>,
    revoked: Vec<String>,
    v1_calls: usize,
    authorize: Vec<HashMap<String, String>>,
}
type S = Arc<Mutex<Fake>>;

/// HubSpot access tokens are long and of variable length.
fn access_token(n: usize) -> String {
    format!("CJSP5qf1LhICAQEYs-gDIIGOBii1{}", "x".repeat(250 + n * 7))
}

fn app(s: S) -> Router {
    Router::new()
        .route(
            "/oauth/authorize",
            get(
                |State(s): State<S>, Query(q): Query<HashMap<String, String>>| async move {
                    s.lock().unwrap().authorize.push(q.clone());
                    common::approve(&q, "hubspot-code", None)
                },
            ),
        )
        .route("/oauth/2026-03/token", post(token))
        .route("/oauth/2026-03/token/introspect", post(introspect))
        .route(
            "/oauth/2026-03/token/revoke",
            post(
                |State(s): State<S>, Form(f): Form<HashMap<String, String>>| async move {
                    s.lock()
                        .unwrap()
                        .revoked
                        .push(f.get("token").cloned().unwrap_or_default());
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/oauth/v1/{*rest}",
            any(|State(s): State<S>| async move {
                s.lock().unwrap().v1_calls += 1;
                (StatusCode::GONE, "v1 is sunset")
            }),
        )
        .with_state(s)
}

async fn token(State(s): State<S>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    if f.get("client_secret").map(String::as_str) != Some("client-secret-456") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "BAD_CLIENT_ID", "message": "missing or unknown client"})),
        )
            .into_response();
    }
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") if f.get("code").map(String::as_str) == Some("hubspot-code") => {
        }
        Some("refresh_token") if s.refresh_tokens.last() == f.get("refresh_token") => {}
        Some("refresh_token") => {
            return (StatusCode::BAD_REQUEST, Json(json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token", "correlationId": "a1b2"}))).into_response();
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "BAD_AUTH_CODE", "message": "unknown code"})),
            )
                .into_response();
        }
    }
    let n = s.issued.len();
    let at = access_token(n);
    let rt = format!("na1-6b5c-{n}-refresh");
    s.issued.push(at.clone());
    s.refresh_tokens.push(rt.clone());
    Json(json!({"token_type": "bearer", "access_token": at, "refresh_token": rt, "expires_in": 1800, "hub_id": 62515,
        "scopes": ["oauth", "crm.objects.contacts.read", "crm.objects.deals.read"]}))
    .into_response()
}

async fn introspect(State(s): State<S>, Form(f): Form<HashMap<String, String>>) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.introspections.push(f.clone());
    let active = f.get("client_id").map(String::as_str) == Some("client-123")
        && f.get("client_secret").map(String::as_str) == Some("client-secret-456")
        && f.get("token")
            .is_some_and(|t| s.issued.contains(t) && !s.revoked.contains(t));
    if !active {
        return Json(json!({"active": false}));
    }
    Json(
        json!({"active": true, "token_type": "access_token", "hub_domain": "t-rex-inc.hubspot.com", "hub_id": 62515,
        "user": "ada@t-rex.example", "user_id": 123, "app_id": 456, "scopes": ["oauth", "crm.objects.contacts.read"]}),
    )
}

async fn setup() -> (Keyport, S) {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let s: S = Arc::default();
    let base = common::serve_fake(app(s.clone())).await;
    common::provider_app(
        &kp,
        "hubspot",
        &[
            ("https://api.hubapi.com", &base),
            ("https://app.hubspot.com", &base),
        ],
        true,
    )
    .await;
    (kp, s)
}

#[tokio::test]
async fn hubspot_describes_scopes_endpoints_and_config() {
    let (kp, _) = setup().await;
    let (_, m) = kp.get("/api/v1/connectors/hubspot").await;
    assert_eq!(
        m["auth"]["Oauth2"]["token_url"],
        "https://api.hubapi.com/oauth/2026-03/token"
    );
    assert_eq!(
        m["auth"]["Oauth2"]["revoke_url"],
        "https://api.hubapi.com/oauth/2026-03/token/revoke"
    );
    assert_eq!(
        m["config_schema"]["properties"]["default_pipeline"]["default"],
        "default"
    );
    assert!(m["config_schema"]["properties"]["default_owner"].is_object());
    let optional: Vec<&Value> = m["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["required"] == false)
        .collect();
    assert!(
        optional.iter().all(|s| s["param"] == "optional_scope"),
        "optional scopes go in optional_scope"
    );
}

#[tokio::test]
async fn hubspot_connects_with_the_dated_endpoints_and_names_the_hub_from_introspection() {
    let (kp, fake) = setup().await;
    let (id, _) = common::oauth_connect(
        &kp,
        "hubspot",
        json!({"scopes": ["crm.objects.deals.read"]}),
    )
    .await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["display_name"], "t-rex-inc.hubspot.com");
    assert_eq!(c["account"]["id"], "62515");
    assert_eq!(c["account"]["email"], "ada@t-rex.example");
    assert_eq!(c["metadata"]["hub_id"], 62515);
    let f = fake.lock().unwrap();
    assert_eq!(f.v1_calls, 0, "the sunset v1 endpoints are never used");
    assert_eq!(
        f.authorize[0]["scope"], "oauth crm.objects.contacts.read",
        "required scopes, space-separated"
    );
    assert_eq!(f.authorize[0]["optional_scope"], "crm.objects.deals.read");
    let intro = &f.introspections[0];
    assert_eq!(
        intro["token"], f.issued[0],
        "the host added the access token to the introspection form"
    );
    assert_eq!(
        intro["client_secret"], "client-secret-456",
        "and the client secret"
    );
}

#[tokio::test]
async fn hubspot_scopes_array_and_thirty_minute_tokens_are_recorded() {
    let (kp, _) = setup().await;
    let (id, _) = common::oauth_connect(&kp, "hubspot", json!({})).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(
        c["granted_scopes"],
        json!([
            "oauth",
            "crm.objects.contacts.read",
            "crm.objects.deals.read"
        ])
    );
    let expires = humantime::parse_rfc3339(c["expires_at"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!(
        (1700..=1800).contains(&left),
        "30-minute access tokens: {left}s left"
    );
}

#[tokio::test]
async fn hubspot_refresh_rotates_and_bad_refresh_token_revokes() {
    let (kp, fake) = setup().await;
    let (id, _) = common::oauth_connect(&kp, "hubspot", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        kp.read_secret(&id, "access_token").await.unwrap(),
        fake.lock().unwrap().issued[1]
    );
    // The provider forgets the refresh token: older-style {status: BAD_REFRESH_TOKEN}.
    fake.lock().unwrap().refresh_tokens.clear();
    let (s, err) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "revoked");
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("BAD_REFRESH_TOKEN"),
        "{c}"
    );
}

#[tokio::test]
async fn hubspot_revoke_uses_the_dated_revocation_endpoint() {
    let (kp, fake) = setup().await;
    let (id, _) = common::oauth_connect(&kp, "hubspot", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let rt = kp.read_secret(&id, "refresh_token").await.unwrap();
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(fake.lock().unwrap().revoked, vec![rt]);
    assert_eq!(c["status"], "revoked");
}
