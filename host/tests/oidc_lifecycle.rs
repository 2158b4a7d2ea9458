//! The connection lifecycle end to end against a real OAuth server (oidc-provider: PKCE required,
//! refresh-token rotation with reuse detection, revocation, `iss`), on SQLite and on PostgreSQL.

mod common;

use common::e2e::*;
use serde_json::{Value, json};

async fn lifecycle(db: Db) {
    let kp = Keyport::start(KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;

    // Connect: a pending connection and a launch link.
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test", "name": "Ada's account", "config": {"label": "ops"}}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let id = started["connection_id"].as_str().unwrap().to_string();
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending");

    let browser = Browser::new();
    let done = browser
        .connect(started["authorize_url"].as_str().unwrap(), "ada")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let location = done.location.clone().unwrap();
    assert!(
        !location.contains("code=") && !location.contains("state="),
        "clean redirect: {location}"
    );

    // Account lookup through the connector: "Connected as".
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["id"], "ada");
    assert_eq!(
        c["account"]["display_name"], "ada",
        "without the profile scope the name claim is not released"
    );
    assert_eq!(c["name"], "Ada's account");
    assert_eq!(c["granted_scopes"], json!(["openid", "offline_access"]));
    let rt1 = kp
        .read_secret(&id, "refresh_token")
        .await
        .expect("a refresh token is stored");

    // Refresh: rotation gives a new refresh token; the old one is consumed at the server.
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "active");
    let rt2 = kp.read_secret(&id, "refresh_token").await.unwrap();
    assert_ne!(
        rt1, rt2,
        "oidc-provider rotates refresh tokens; keyport keeps the newest"
    );
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "a second refresh uses the rotated token: {c}");

    // Reconnect with an extra scope: same id, name and config; tokens replaced in place.
    let (s, dep) = kp
        .put(
            &format!("/api/v1/connections/{id}/dependents/workflow-42"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{dep}");
    let (s, re) = kp
        .post(
            &format!("/api/v1/connections/{id}/reconnect"),
            json!({"scopes": ["email"]}),
        )
        .await;
    assert_eq!(s, 200, "{re}");
    assert_eq!(re["connection_id"], id.as_str());
    let done = browser
        .connect(re["authorize_url"].as_str().unwrap(), "ada")
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let c = kp
        .wait_for(&id, |c| {
            c["granted_scopes"]
                .as_array()
                .is_some_and(|g| g.contains(&json!("email")))
        })
        .await;
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["status"], "active");
    assert_eq!(c["name"], "Ada's account");
    assert_eq!(c["config"]["label"], "ops");
    assert_eq!(
        c["account"]["email"], "ada@example.com",
        "the new scope's claim is visible"
    );
    let (_, deps) = kp
        .get(&format!("/api/v1/connections/{id}/dependents"))
        .await;
    assert_eq!(
        deps["dependents"][0]["ref"], "workflow-42",
        "dependents survive a reconnect"
    );

    // Delete is refused while a dependent exists.
    let (s, err) = kp.delete(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(s, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 workflow"),
        "{err}"
    );

    // Revoke: the provider revokes the grant; keyport deletes the secrets.
    let rt_before = kp.read_secret(&id, "refresh_token").await.unwrap();
    let (s, c) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "revoked");
    assert_eq!(c["provider_revocation"]["ok"], true, "{c}");
    assert!(
        kp.read_secret(&id, "refresh_token").await.is_none(),
        "secrets deleted"
    );
    assert!(kp.read_secret(&id, "access_token").await.is_none());
    let (s, body) = oidc_refresh(&oidc, &rt_before).await;
    assert_eq!(
        s, 400,
        "the old refresh token is dead at the server: {body}"
    );
    assert_eq!(body["error"], "invalid_grant");

    // Refresh after revoke tells the user to reconnect.
    let (s, err) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");

    // With the dependent gone, delete succeeds; the connection is gone.
    let (s, _) = kp
        .delete(&format!("/api/v1/connections/{id}/dependents/workflow-42"))
        .await;
    assert_eq!(s, 204);
    let (s, _) = kp.delete(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(s, 204);
    let (s, _) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(s, 404);

    // The audit trail has every step.
    let (_, audit) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    assert!(audit["events"].is_array(), "{audit}");
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["action"].as_str().unwrap()).collect())
        .unwrap_or_default();
    for a in [
        "connection.created",
        "connection.authorized",
        "account.looked_up",
        "token.refreshed",
        "dependent.added",
        "connection.reconnected",
        "connection.revoked",
        "dependent.removed",
        "connection.deleted",
    ] {
        assert!(actions.contains(&a), "audit has {a}: {actions:?}");
    }
}

#[tokio::test]
async fn lifecycle_against_oidc_provider_on_sqlite() {
    lifecycle(Db::Sqlite).await;
}

#[tokio::test]
async fn lifecycle_against_oidc_provider_on_postgres() {
    lifecycle(Db::Postgres).await;
}

/// Refresh-token reuse at a server with reuse detection kills the grant: keyport must never
/// replay an old refresh token, and reports `invalid_grant` as `revoked` with what to do.
#[tokio::test]
async fn invalid_grant_revokes_the_connection_with_a_clear_reason() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let (_, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    let id = started["connection_id"].as_str().unwrap().to_string();
    Browser::new()
        .connect(started["authorize_url"].as_str().unwrap(), "bob")
        .await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    // Someone else uses the refresh token first (rotation consumes it)...
    let rt = kp.read_secret(&id, "refresh_token").await.unwrap();
    let (s, _) = oidc_refresh(&oidc, &rt).await;
    assert_eq!(s, 200);
    // ...so keyport's copy is a reused token: the server answers invalid_grant.
    let (s, err) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");
    let c: Value = kp.get(&format!("/api/v1/connections/{id}")).await.1;
    assert_eq!(c["status"], "revoked");
    assert!(
        c["status_reason"].as_str().unwrap().contains("Reconnect"),
        "{c}"
    );
}
