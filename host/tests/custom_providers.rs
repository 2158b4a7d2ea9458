//! Custom OAuth providers imported at runtime, against the real `oidc-provider` server: imported
//! once by discovery and once by a manual definition, each connects end to end without a restart,
//! refreshes and revokes. Imports are validated field by field, issuers are unique, a flow for one
//! provider cannot complete on another, definitions move between installations, and a second
//! replica on the same PostgreSQL serves an import without a restart.

mod common;

use std::time::Duration;

use common::e2e::*;
use serde_json::{Value, json};

async fn start(db: Db) -> Keyport {
    Keyport::start(KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await
}

fn by_discovery(slug: &str, oidc: &Oidc) -> Value {
    json!({
        "id": slug,
        "display_name": format!("{slug} ID"),
        "issuer": oidc.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        // The test server registers its client for client_secret_post and wants consent for
        // offline access: fields next to `issuer` win over discovered ones.
        "client_auth": "body",
        "authorize_params": {"prompt": "consent"},
        "default_scopes": ["openid", "offline_access", "profile", "email"],
    })
}

fn manual(slug: &str, oidc: &Oidc) -> Value {
    let i = &oidc.issuer;
    json!({
        "id": slug,
        "display_name": "Manual Co",
        "authorization_url": format!("{i}/auth"),
        "token_url": format!("{i}/token"),
        "revocation_url": format!("{i}/token/revocation"),
        "issuer": i,
        "iss_required": true,
        "pkce": true,
        "client_auth": "body",
        "scopes": ["openid", "offline_access", "profile", "email"],
        "default_scopes": ["openid", "offline_access", "profile"],
        "authorize_params": {"prompt": "consent"},
        "api_base_url": i,
        "userinfo": {"url": format!("{i}/me"), "id": "sub", "name": "name", "email": "email"},
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    })
}

/// Connects, refreshes and revokes a connection of `connector` through the real server.
async fn lifecycle(kp: &Keyport, connector: &str, user: &str) {
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": connector}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let id = started["connection_id"].as_str().unwrap().to_string();
    let done = Browser::new()
        .connect(started["authorize_url"].as_str().unwrap(), user)
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["display_name"], format!("Ada {user}"), "{c}");
    let before = kp.read_secret(&id, "refresh_token").await.unwrap();
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(
        kp.read_secret(&id, "refresh_token").await.unwrap(),
        before,
        "rotated"
    );
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "revoked", "{b}");
}

#[tokio::test]
async fn a_provider_imported_by_discovery_connects_refreshes_and_revokes() {
    let kp = start(Db::Sqlite).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let (s, p) = kp
        .post("/api/v1/admin/providers", by_discovery("acme", &oidc))
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["id"], "custom-acme");
    assert_eq!(
        p["definition"]["token_url"],
        format!("{}/token", oidc.issuer)
    );
    assert!(
        p["definition"].get("client_secret").is_none(),
        "no secret in the definition"
    );
    let (_, list) = kp.get("/api/v1/connectors").await;
    assert!(list.to_string().contains("custom-acme"), "served at once");
    lifecycle(&kp, "custom-acme", "dora").await;
}

#[tokio::test]
async fn a_provider_imported_by_manual_definition_connects_refreshes_and_revokes() {
    let kp = start(Db::Sqlite).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let (s, p) = kp
        .post("/api/v1/admin/providers", manual("manual", &oidc))
        .await;
    assert_eq!(s, 201, "{p}");
    lifecycle(&kp, "custom-manual", "ivo").await;
}

#[tokio::test]
async fn imports_are_validated_and_issuers_are_unique_and_flows_stay_with_their_provider() {
    let kp = start(Db::Sqlite).await;
    let a = Oidc::start(&kp.redirect_uri());
    let b = Oidc::start(&kp.redirect_uri());
    // Field-level errors.
    let mut bad = manual("bad", &a);
    bad["token_url"] = json!("not a url");
    bad["scope_separator"] = json!(";");
    let (s, e) = kp.post("/api/v1/admin/providers", bad).await;
    assert_eq!(s, 422, "{e}");
    let paths: Vec<&str> = e["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/token_url") && paths.contains(&"/scope_separator"),
        "{e}"
    );
    // Discovery: the document must name exactly the configured issuer.
    let mut wrong = by_discovery("wrong", &a);
    wrong["issuer"] = json!(format!("{}/", a.issuer));
    let (s, e) = kp.post("/api/v1/admin/providers", wrong).await;
    assert_eq!(s, 422, "{e}");
    assert!(e.to_string().contains("identical"), "{e}");
    // Unique issuers.
    let (s, _) = kp
        .post("/api/v1/admin/providers", by_discovery("one", &a))
        .await;
    assert_eq!(s, 201);
    let (s, e) = kp.post("/api/v1/admin/providers", manual("two", &a)).await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = kp.post("/api/v1/admin/providers", manual("two", &b)).await;
    assert_eq!(s, 201);
    // O7: a flow started for provider one, steered to provider two's server, fails.
    let (_, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "custom-one"}),
        )
        .await;
    let browser = Browser::new();
    let (_, loc, _) = browser
        .get(started["authorize_url"].as_str().unwrap())
        .await;
    let to_b = loc.unwrap().replace(&a.issuer, &b.issuer);
    let callback = browser.authorize_at_provider(&to_b, "eve", false).await;
    let done = browser.finish(&callback).await;
    assert_eq!(done.status, 400, "{}", done.body);
    let id = started["connection_id"].as_str().unwrap();
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending", "{c}");
    // Only the admin imports.
    let (_, key) = kp.post("/api/v1/api-keys", json!({"name": "k"})).await;
    let r = kp
        .http
        .get(format!("{}/api/v1/admin/providers", kp.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn definitions_export_import_update_and_delete() {
    let kp = start(Db::Sqlite).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let (s, _) = kp
        .post("/api/v1/admin/providers", manual("moving", &oidc))
        .await;
    assert_eq!(s, 201);
    let (s, file) = kp.get("/api/v1/admin/providers/export").await;
    assert_eq!(s, 200, "{file}");
    assert!(
        !file.to_string().contains(CLIENT_SECRET),
        "no secrets exported"
    );
    // Another installation.
    let other = start(Db::Sqlite).await;
    let (s, r) = other
        .post("/api/v1/admin/providers/import", file.clone())
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["imported"], json!(["custom-moving"]));
    let (_, c) = other.get("/api/v1/connectors/custom-moving").await;
    assert_eq!(c["display_name"], "Manual Co", "{c}");
    // Update.
    let mut def = file["providers"][0].clone();
    def["display_name"] = json!("Moved Co");
    let (s, p) = other
        .put("/api/v1/admin/providers/custom-moving", def)
        .await;
    assert_eq!(s, 200, "{p}");
    let (_, c) = other.get("/api/v1/connectors/custom-moving").await;
    assert_eq!(c["display_name"], "Moved Co");
    // Delete: refused while a connection uses it, unless forced.
    let (s, _) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "custom-moving"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, e) = kp.delete("/api/v1/admin/providers/custom-moving").await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = kp
        .delete("/api/v1/admin/providers/custom-moving?force=true")
        .await;
    assert_eq!(s, 204);
    let (s, _) = kp.get("/api/v1/connectors/custom-moving").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_provider_imported_on_one_replica_is_served_by_another_without_restart() {
    let a = start(Db::Postgres).await;
    let b = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        database_url: Some(a.db_url()),
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&a.redirect_uri());
    let (s, _) = a
        .post("/api/v1/admin/providers", manual("shared", &oidc))
        .await;
    assert_eq!(s, 201);
    for _ in 0..50 {
        if b.get("/api/v1/connectors/custom-shared").await.0 == 200 {
            let (s, _) = a.delete("/api/v1/admin/providers/custom-shared").await;
            assert_eq!(s, 204);
            for _ in 0..50 {
                if b.get("/api/v1/connectors/custom-shared").await.0 == 404 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the deletion never reached the second replica");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the import never reached the second replica");
}

/// A file with valid, invalid and duplicate entries: each is imported or reported on its own
/// (field and reason), and a rejected entry leaves nothing behind.
#[tokio::test]
async fn a_bulk_import_reports_each_entry_and_imports_the_valid_ones_whole() {
    let kp = start(Db::Sqlite).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let (s, _) = kp
        .post("/api/v1/admin/providers", manual("existing", &oidc))
        .await;
    assert_eq!(s, 201);
    let mut updated = manual("existing", &oidc);
    updated["display_name"] = json!("Existing, renamed");
    // Two providers cannot share an issuer: the new entries name none.
    let without_issuer = |slug: &str| {
        let mut d = manual(slug, &oidc);
        let o = d.as_object_mut().unwrap();
        o.remove("issuer");
        o.remove("iss_required");
        d
    };
    let mut bad_url = without_issuer("badurl");
    bad_url["token_url"] = json!("not a url");
    let file = json!({
        "format": "keyport-providers/1",
        "providers": [
            without_issuer("fresh"),
            bad_url,
            without_issuer("fresh"),
            updated,
            "not an object",
        ],
    });
    let (s, r) = kp.post("/api/v1/admin/providers/import", file).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            r["created"].as_i64(),
            r["updated"].as_i64(),
            r["rejected"].as_i64()
        ),
        (Some(1), Some(1), Some(3)),
        "{r}"
    );
    let report = r["report"].as_array().unwrap();
    assert_eq!(report[0]["outcome"], "created");
    assert_eq!(report[0]["id"], "custom-fresh");
    assert_eq!(report[1]["outcome"], "rejected");
    assert!(
        report[1]["field"]
            .as_str()
            .unwrap()
            .starts_with("/providers/1/token_url"),
        "{r}"
    );
    assert_eq!(report[2]["outcome"], "rejected");
    assert!(
        report[2]["reason"]
            .as_str()
            .unwrap()
            .contains("defined twice"),
        "{r}"
    );
    assert_eq!(report[3]["outcome"], "updated");
    assert_eq!(report[4]["outcome"], "rejected");
    assert_eq!(report[4]["field"], "/providers/4");
    // The rejected entry left nothing; the valid ones are served.
    assert_eq!(kp.get("/api/v1/connectors/custom-badurl").await.0, 404);
    assert_eq!(kp.get("/api/v1/admin/providers/custom-badurl").await.0, 404);
    assert_eq!(kp.get("/api/v1/connectors/custom-fresh").await.0, 200);
    let (_, c) = kp.get("/api/v1/connectors/custom-existing").await;
    assert_eq!(c["display_name"], "Existing, renamed");
    // A file that is not an export at all is refused whole.
    let (s, e) = kp
        .post("/api/v1/admin/providers/import", json!({"providers": []}))
        .await;
    assert_eq!(s, 422, "{e}");
}
