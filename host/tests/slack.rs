//! The Slack connector through the host runtime, against a fake Slack on loopback.

mod common;

use common::*;
use keyport::runtime::{AuthScheme, ErrorKind};
use serde_json::json;

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
    let schema: serde_json::Value = serde_json::from_str(&m.config_schema).unwrap();
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
    let meta: serde_json::Value = serde_json::from_str(&set.metadata).unwrap();
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
