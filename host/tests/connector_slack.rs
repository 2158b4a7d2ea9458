//! The Slack connector through the host runtime, against a fake Slack on loopback.

mod common;

use common::*;
use keyport::runtime::{AuthScheme, ErrorKind};
use serde_json::{Value, json};

#[tokio::test]
async fn slack_component_loads_and_describes_itself() {
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.expect("slack loads");
    let m = slack.manifest();
    assert_eq!(m.id, "slack");
    assert_eq!(m.display_name, "Slack");
    let AuthScheme::Oauth2(o) = &m.auth else {
        panic!("slack is OAuth 2")
    };
    assert_eq!(o.authorize_url, "https://slack.com/oauth/v2/authorize");
    assert_eq!(o.token_url, "https://slack.com/api/oauth.v2.access");
    assert_eq!(o.scope_separator, ",");
    assert!(!o.pkce, "Slack's v2 flow does not support PKCE");
    assert_eq!(m.egress_hosts, vec!["slack.com".to_string()]);
    assert!(
        m.scopes
            .iter()
            .any(|s| s.name == "chat:write" && s.required)
    );
    assert!(
        m.scopes
            .iter()
            .any(|s| s.param.as_deref() == Some("user_scope")),
        "user scopes go in user_scope"
    );
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    assert_eq!(
        schema["properties"]["default_channel"]["default"],
        "#general"
    );
    assert!(schema["properties"]["posting_username"].is_object());
}

#[tokio::test]
async fn slack_lookup_account_returns_the_team_with_the_host_adding_the_token() {
    let (addr, seen) = fake_slack().await;
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.unwrap();
    let account = slack
        .lookup_account(slack_env(addr, SLACK_TOKEN), ctx(json!({})))
        .await
        .expect("the call runs")
        .expect("lookup succeeds");
    assert_eq!(account.display_name, "T-Rex Inc");
    assert_eq!(account.external_id, "T0123ABCD");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.authorization,
        vec![Some(format!("Bearer {SLACK_TOKEN}"))],
        "the host added the credential"
    );
}

#[tokio::test]
async fn slack_ok_false_is_an_error_even_at_http_200() {
    let (addr, _) = fake_slack().await;
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.unwrap();
    let err = slack
        .lookup_account(slack_env(addr, "xoxb-wrong"), ctx(json!({})))
        .await
        .unwrap()
        .expect_err("invalid_auth at HTTP 200 is a failure");
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.message.contains("invalid_auth"), "{}", err.message);
    assert!(
        !err.message.contains("xoxb-wrong"),
        "errors never carry the token"
    );
}

#[tokio::test]
async fn slack_validates_the_default_channel() {
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.unwrap();
    assert!(
        slack
            .validate_config(r##"{"default_channel":"#general"}"##)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        slack
            .validate_config(r#"{"default_channel":"C0123456789"}"#)
            .await
            .unwrap()
            .is_empty()
    );
    let errs = slack
        .validate_config(r#"{"default_channel":"General Chat"}"#)
        .await
        .unwrap();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "/default_channel");
}

#[tokio::test]
async fn slack_token_hook_reads_bot_user_and_error_answers() {
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.unwrap();
    let bot = json!({
        "ok": true, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write,channels:read",
        "bot_user_id": "U1", "app_id": "A1", "team": {"id": "T1", "name": "T-Rex Inc"},
        "enterprise": null, "is_enterprise_install": false,
        "authed_user": {"id": "U2", "scope": "search:read", "access_token": "xoxp-2", "token_type": "user"}
    });
    let set = slack
        .parse_token_response(200, bot.to_string().into_bytes())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(set.access_token, "xoxb-1");
    assert_eq!(
        set.scopes.unwrap(),
        vec!["chat:write", "channels:read"],
        "comma-separated scopes split"
    );
    let meta: Value = serde_json::from_str(&set.metadata).unwrap();
    assert_eq!(meta["team_name"], "T-Rex Inc");

    let user_only = json!({
        "ok": true, "app_id": "A1", "team": {"id": "T1", "name": "T-Rex Inc"},
        "authed_user": {"id": "U2", "scope": "search:read", "access_token": "xoxp-2", "token_type": "user",
                        "refresh_token": "xoxe-1-r", "expires_in": 43200}
    });
    let set = slack
        .parse_token_response(200, user_only.to_string().into_bytes())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        set.access_token, "xoxp-2",
        "a user-only install's token is under authed_user"
    );
    assert_eq!(set.refresh_token.as_deref(), Some("xoxe-1-r"));
    assert_eq!(set.expires_in, Some(43200));

    let failed = json!({"ok": false, "error": "invalid_code"});
    let err = slack
        .parse_token_response(200, failed.to_string().into_bytes())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Provider);
    let revoked = json!({"ok": false, "error": "invalid_refresh_token"});
    let err = slack
        .parse_token_response(200, revoked.to_string().into_bytes())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Revoked);
}

// ---- Through `keyport serve`, against a fake Slack that answers like the real one. ----

mod fake {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::{Form, Json, Router};
    use serde_json::{Value, json};

    #[derive(Default)]
    pub struct Slack {
        /// Install with user scopes only (token under `authed_user`).
        pub user_only: bool,
        /// Token rotation on: 12-hour tokens and `xoxe-` refresh tokens.
        pub rotation: bool,
        /// Refresh answers `invalid_refresh_token`.
        pub refresh_dead: bool,
        pub issued: Vec<String>,
        pub refreshes: usize,
        pub revoked: Vec<String>,
        pub auth_tests: Vec<String>,
        pub authorize: Vec<HashMap<String, String>>,
    }

    pub type S = Arc<Mutex<Slack>>;

    pub fn app(s: S) -> Router {
        Router::new()
            .route("/oauth/v2/authorize", get(authorize))
            .route("/api/oauth.v2.access", post(access))
            .route("/api/auth.test", post(auth_test))
            .route("/api/auth.revoke", post(revoke))
            .with_state(s)
    }

    async fn authorize(
        State(s): State<S>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        s.lock().unwrap().authorize.push(q.clone());
        crate::common::approve(&q, "slack-code-1", None)
    }

    async fn access(State(s): State<S>, Form(f): Form<HashMap<String, String>>) -> Json<Value> {
        let mut s = s.lock().unwrap();
        if f.get("client_id").map(String::as_str) != Some("client-123")
            || f.get("client_secret").map(String::as_str) != Some("client-secret-456")
        {
            return Json(json!({"ok": false, "error": "invalid_client_id"}));
        }
        let n = s.issued.len();
        if f.get("grant_type").map(String::as_str) == Some("refresh_token") {
            s.refreshes += 1;
            if s.refresh_dead {
                return Json(json!({"ok": false, "error": "invalid_refresh_token"}));
            }
        } else if f.get("code").map(String::as_str) != Some("slack-code-1") {
            return Json(json!({"ok": false, "error": "invalid_code"}));
        }
        let prefix = if s.user_only { "xoxp" } else { "xoxb" };
        let token = format!("{prefix}-{n}-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy");
        s.issued.push(token.clone());
        let mut tok = json!({"access_token": token, "token_type": if s.user_only { "user" } else { "bot" }, "scope": "chat:write,channels:read,team:read"});
        if s.rotation {
            tok["refresh_token"] = json!(format!("xoxe-1-refresh-{n}"));
            tok["expires_in"] = json!(43200);
        }
        if s.user_only {
            let mut user = tok.clone();
            user["id"] = json!("U0456EFGH");
            user["scope"] = json!("search:read");
            return Json(
                json!({"ok": true, "app_id": "A0KRD7HC3", "team": {"id": "T0123ABCD", "name": "T-Rex Inc"},
                "enterprise": null, "is_enterprise_install": false, "authed_user": user}),
            );
        }
        let mut body = json!({"ok": true, "app_id": "A0KRD7HC3", "bot_user_id": "U0KRQLJ9H",
            "team": {"id": "T0123ABCD", "name": "T-Rex Inc"}, "enterprise": null, "is_enterprise_install": false,
            "authed_user": {"id": "U0456EFGH"}});
        body.as_object_mut()
            .unwrap()
            .extend(tok.as_object().unwrap().clone());
        Json(body)
    }

    async fn auth_test(State(s): State<S>, h: HeaderMap) -> Json<Value> {
        let mut s = s.lock().unwrap();
        let token = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        s.auth_tests.push(token.clone());
        if !s.issued.contains(&token) || s.revoked.contains(&token) {
            return Json(json!({"ok": false, "error": "invalid_auth"}));
        }
        Json(
            json!({"ok": true, "url": "https://t-rex-inc.slack.com/", "team": "T-Rex Inc", "user": "keyport",
            "team_id": "T0123ABCD", "user_id": "U0456EFGH", "bot_id": "B0789IJKL", "enterprise_id": null, "is_enterprise_install": false}),
        )
    }

    async fn revoke(State(s): State<S>, Form(f): Form<HashMap<String, String>>) -> Json<Value> {
        s.lock()
            .unwrap()
            .revoked
            .push(f.get("token").cloned().unwrap_or_default());
        Json(json!({"ok": true, "revoked": true}))
    }
}

async fn slack_keyport(script: fake::Slack) -> (e2e::Keyport, fake::S) {
    let kp = e2e::Keyport::start(e2e::KeyportOpts {
        master_keys: Some(e2e::master_keys()),
        ..Default::default()
    })
    .await;
    let state = std::sync::Arc::new(std::sync::Mutex::new(script));
    let base = serve_fake(fake::app(state.clone())).await;
    provider_app(&kp, "slack", &[("https://slack.com", &base)], true).await;
    (kp, state)
}

#[tokio::test]
async fn slack_connects_and_shows_connected_as_the_team() {
    let (kp, fake) = slack_keyport(fake::Slack::default()).await;
    let (id, _) = oauth_connect(
        &kp,
        "slack",
        json!({"config": {"default_channel": "#deploys"}}),
    )
    .await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["display_name"], "T-Rex Inc");
    assert_eq!(c["account"]["id"], "T0123ABCD");
    assert_eq!(
        c["granted_scopes"],
        json!(["chat:write", "channels:read", "team:read"]),
        "comma-separated scopes split (O18)"
    );
    assert_eq!(c["metadata"]["team_name"], "T-Rex Inc");
    assert_eq!(
        c["expires_at"],
        Value::Null,
        "without rotation Slack tokens never expire"
    );
    let f = fake.lock().unwrap();
    assert!(
        !f.authorize[0].contains_key("code_challenge"),
        "no PKCE for Slack"
    );
    assert_eq!(
        f.auth_tests,
        vec![f.issued[0].clone()],
        "auth.test got the bot token from the host"
    );
}

#[tokio::test]
async fn slack_user_scope_only_install_uses_the_authed_user_token() {
    let (kp, fake) = slack_keyport(fake::Slack {
        user_only: true,
        ..Default::default()
    })
    .await;
    let (id, _) = oauth_connect(&kp, "slack", json!({})).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["metadata"]["token_owner"], "user");
    assert!(
        fake.lock().unwrap().auth_tests[0].starts_with("xoxp-"),
        "the user token from authed_user is used"
    );
}

#[tokio::test]
async fn slack_token_rotation_refreshes_twelve_hour_tokens() {
    let (kp, fake) = slack_keyport(fake::Slack {
        rotation: true,
        ..Default::default()
    })
    .await;
    let (id, _) = oauth_connect(&kp, "slack", json!({})).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert!(c["expires_at"].is_string(), "rotating tokens expire");
    assert_eq!(
        kp.read_secret(&id, "refresh_token").await.unwrap(),
        "xoxe-1-refresh-0"
    );
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(
        kp.read_secret(&id, "refresh_token").await.unwrap(),
        "xoxe-1-refresh-1",
        "the new refresh token is kept"
    );
    assert_eq!(
        kp.read_secret(&id, "access_token").await.unwrap(),
        fake.lock().unwrap().issued[1]
    );
}

#[tokio::test]
async fn slack_invalid_refresh_token_at_http_200_revokes_the_connection() {
    let (kp, fake) = slack_keyport(fake::Slack {
        rotation: true,
        refresh_dead: true,
        ..Default::default()
    })
    .await;
    let (id, _) = oauth_connect(&kp, "slack", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let (s, err) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "revoked");
    assert!(
        c["status_reason"].as_str().unwrap().contains("reconnect"),
        "{c}"
    );
    let (s, _) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(
        fake.lock().unwrap().refreshes,
        1,
        "no further attempts after a definitive answer"
    );
}

#[tokio::test]
async fn slack_revoke_calls_auth_revoke_and_deletes_the_token() {
    let (kp, fake) = slack_keyport(fake::Slack::default()).await;
    let (id, _) = oauth_connect(&kp, "slack", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let token = kp.read_secret(&id, "access_token").await.unwrap();
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["provider_revocation"]["ok"], true);
    assert_eq!(fake.lock().unwrap().revoked, vec![token]);
    assert!(kp.read_secret(&id, "access_token").await.is_none());
}

#[tokio::test]
async fn slack_org_wide_install_is_identified_by_the_enterprise() {
    let app = axum::Router::new().route(
        "/api/auth.test",
        axum::routing::post(|| async {
            axum::Json(json!({"ok": true, "url": "https://t-rex-corp.enterprise.slack.com/", "team": "T-Rex Corp",
                "user": "keyport", "team_id": "T0ORG", "user_id": "U1", "bot_id": "B1",
                "enterprise_id": "E0123ENT", "is_enterprise_install": true}))
        }),
    );
    let base = serve_fake(app).await;
    let rt = runtime_with_loopback();
    let slack = rt.load(builtin("slack")).await.unwrap();
    let env = keyport::runtime::CallEnv {
        credential: Some(keyport::runtime::Secret::new("xoxb-org")),
        api_base_url: Some("https://slack.com/api/".into()),
        endpoint_overrides: vec![("https://slack.com/".into(), format!("{base}/"))],
        ..Default::default()
    };
    let account = slack
        .lookup_account(env, ctx(json!({})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        account.external_id, "E0123ENT",
        "org-wide installs are identified by the enterprise id"
    );
    assert_eq!(account.display_name, "T-Rex Corp");
}
