//! The Gmail connector, through `keyport serve`, against a fake Google (accounts, oauth2,
//! openidconnect and gmail hosts) with the real response shapes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::e2e::{Keyport, KeyportOpts, master_keys};
use serde_json::json;

#[derive(Default)]
struct Fake {
    authorize: Vec<HashMap<String, String>>,
    token_requests: Vec<HashMap<String, String>>,
    access: Vec<String>,
    refresh_token: Option<String>,
    revoked: Vec<String>,
    no_openid: bool,
}
type S = Arc<Mutex<Fake>>;

fn bearer(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .into()
}

fn app(s: S) -> Router {
    Router::new()
        .route("/o/oauth2/v2/auth", get(|State(s): State<S>, Query(q): Query<HashMap<String, String>>| async move {
            s.lock().unwrap().authorize.push(q.clone());
            common::approve(&q, "4/0AfJohXn-google-code", None)
        }))
        .route("/token", post(token))
        .route("/revoke", post(|State(s): State<S>, Form(f): Form<HashMap<String, String>>| async move {
            s.lock().unwrap().revoked.push(f.get("token").cloned().unwrap_or_default());
            StatusCode::OK
        }))
        .route("/v1/userinfo", get(|State(s): State<S>, h: HeaderMap| async move {
            let s = s.lock().unwrap();
            if s.no_openid || !s.access.contains(&bearer(&h)) {
                return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_request"}))).into_response();
            }
            Json(json!({"sub": "110169484474386276334", "email": "ada@t-rex.example", "email_verified": true, "name": "Ada", "hd": "t-rex.example"})).into_response()
        }))
        .route("/gmail/v1/users/me/profile", get(|State(s): State<S>, h: HeaderMap| async move {
            if !s.lock().unwrap().access.contains(&bearer(&h)) {
                return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}))).into_response();
            }
            Json(json!({"emailAddress": "ada@t-rex.example", "messagesTotal": 1234, "threadsTotal": 1000, "historyId": "98765"})).into_response()
        }))
        .with_state(s)
}

async fn token(State(s): State<S>, Form(f): Form<HashMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    s.token_requests.push(f.clone());
    let n = s.access.len();
    let at = format!("ya29.a0AfB_byC-{n}-access");
    match f.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            s.access.push(at.clone());
            s.refresh_token = Some("1//0gLx-refresh-token".into());
            Json(json!({"access_token": at, "expires_in": 3599, "refresh_token": "1//0gLx-refresh-token",
                "scope": "openid https://www.googleapis.com/auth/gmail.readonly https://www.googleapis.com/auth/userinfo.email",
                "token_type": "Bearer", "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.sig"}))
            .into_response()
        }
        Some("refresh_token") if s.refresh_token.as_ref() == f.get("refresh_token") => {
            s.access.push(at.clone());
            // Google's refresh answers carry no refresh token.
            Json(json!({"access_token": at, "expires_in": 3599, "scope": "openid https://www.googleapis.com/auth/gmail.readonly", "token_type": "Bearer"})).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}))).into_response(),
    }
}

async fn setup(fake: Fake) -> (Keyport, S) {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let s: S = Arc::new(Mutex::new(fake));
    let base = common::serve_fake(app(s.clone())).await;
    let hosts = [
        "https://accounts.google.com",
        "https://oauth2.googleapis.com",
        "https://openidconnect.googleapis.com",
        "https://gmail.googleapis.com",
    ];
    let overrides: Vec<(&str, &str)> = hosts.iter().map(|h| (*h, base.as_str())).collect();
    common::provider_app(&kp, "gmail", &overrides, true).await;
    (kp, s)
}

#[tokio::test]
async fn gmail_asks_for_offline_access_with_consent_and_pkce() {
    let (kp, fake) = setup(Fake::default()).await;
    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let f = fake.lock().unwrap();
    let q = &f.authorize[0];
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["include_granted_scopes"], "true");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        q["scope"].contains("https://www.googleapis.com/auth/gmail.readonly"),
        "space-separated scopes"
    );
    assert!(f.token_requests[0].contains_key("code_verifier"));
}

#[tokio::test]
async fn gmail_account_is_the_openid_subject_with_the_email() {
    let (kp, _) = setup(Fake::default()).await;
    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(
        c["account"]["id"], "110169484474386276334",
        "the stable sub"
    );
    assert_eq!(
        c["scope_narrowed"], false,
        "Google's full scope names match what was requested"
    );
    assert_eq!(c["account"]["display_name"], "ada@t-rex.example");
}

#[tokio::test]
async fn gmail_falls_back_to_the_gmail_profile_without_openid() {
    let (kp, _) = setup(Fake {
        no_openid: true,
        ..Default::default()
    })
    .await;
    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["id"], "ada@t-rex.example");
}

#[tokio::test]
async fn gmail_refresh_keeps_the_stored_refresh_token() {
    let (kp, fake) = setup(Fake::default()).await;
    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    for _ in 0..2 {
        let (s, c) = kp
            .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
            .await;
        assert_eq!(s, 200, "{c}");
    }
    assert_eq!(
        kp.read_secret(&id, "refresh_token").await.unwrap(),
        "1//0gLx-refresh-token",
        "kept across refreshes"
    );
    assert_eq!(
        kp.read_secret(&id, "access_token").await.unwrap(),
        fake.lock().unwrap().access[2]
    );
}

#[tokio::test]
async fn gmail_invalid_grant_revokes_and_revocation_uses_googles_endpoint() {
    let (kp, fake) = setup(Fake::default()).await;
    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let (s, _) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        fake.lock().unwrap().revoked,
        vec!["1//0gLx-refresh-token".to_string()]
    );

    let (id, _) = common::oauth_connect(&kp, "gmail", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    fake.lock().unwrap().refresh_token = None; // e.g. the user revoked access in their Google account
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
            .contains("invalid_grant")
    );
}

#[tokio::test]
async fn gmail_send_as_must_be_an_address() {
    let (kp, _) = setup(Fake::default()).await;
    let (s, err) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "gmail", "config": {"send_as": "sales"}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    assert_eq!(err["error"]["fields"][0]["path"], "/send_as");
}
