//! The provider catalogue and the definition format's long tail, through `keyport serve`:
//!
//! - every `catalogue/*.json` entry is served, passes the validation an import does, and its
//!   `oauth/start` redirects to the provider exactly as declared (host and path, client id,
//!   redirect URI, scopes with the provider's separator, PKCE exactly when declared);
//! - an admin hides entries per workspace;
//! - definitions with a regional host and a `{hostname}`, a token-response `instance_url` where
//!   API calls then go, a custom authorization header, a header with the client id, a credential
//!   template for an API-key provider, a query credential, fallbacks, and authorization URL
//!   details, each against a fake provider on loopback that behaves like the real case.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{any, get, post};
use axum::{Form, Json, Router};
use common::e2e::*;
use serde_json::{Value, json};

fn catalogue() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalogue");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let id = p.file_stem().unwrap().to_string_lossy().to_string();
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (id, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A value for each setting a catalogue entry asks for, of the shape its schema wants.
fn sample_config(id: &str, def: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let Some(props) = def["config_schema"]["properties"].as_object() else {
        return json!({});
    };
    for (name, prop) in props {
        let v = if let Some(first) = prop["enum"].as_array().and_then(|a| a.first()) {
            first.clone()
        } else {
            json!(match name.as_str() {
                "subdomain" => "acme",
                "shop" => "acme-store",
                "cloud_id" | "tenant_id" => "1324a887-45db-1bf4-1e99-ef0ff456d421",
                "tenant" => "contoso.onmicrosoft.com",
                "login_host" => "acme.my.salesforce.com",
                "base_uri_host" => "na3.docusign.net",
                "realm_id" => "9130355377388",
                "dc" => "us6",
                "app_key" => "0123456789abcdef0123456789abcdef",
                other => panic!("{id}: give the test a sample value for the setting {other:?}"),
            })
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// Fills `{a|'b'}` templates from a config, independently of keyport's own filler.
fn expand(template: &str, config: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(a) = rest.find('{') {
        out.push_str(&rest[..a]);
        let b = rest[a..].find('}').unwrap() + a;
        let value = rest[a + 1..b]
            .split('|')
            .find_map(|alt| match alt.strip_prefix('\'') {
                Some(lit) => Some(lit.trim_end_matches('\'').to_string()),
                None => config[alt]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            })
            .unwrap_or_default();
        out.push_str(&value);
        rest = &rest[b + 1..];
    }
    out.push_str(rest);
    out
}

const REQUIRED: &[&str] = &[
    "github",
    "gitlab",
    "notion",
    "linear",
    "trello",
    "jira",
    "confluence",
    "asana",
    "google-drive",
    "google-calendar",
    "google-sheets",
    "microsoft-outlook",
    "microsoft-onedrive",
    "microsoft-teams",
    "salesforce",
    "zoom",
    "dropbox",
    "box",
    "intercom",
    "zendesk",
    "shopify",
    "quickbooks",
    "xero",
    "pipedrive",
    "calendly",
    "airtable",
    "clickup",
    "figma",
    "miro",
    "monday",
    "discord",
    "linkedin",
    "zoho-crm",
    "mailchimp",
    "typeform",
    "webflow",
    "bitbucket",
    "docusign",
    "stripe",
    "twitch",
    "spotify",
];

#[tokio::test]
async fn every_catalogue_entry_is_served_and_passes_the_validation_an_import_does() {
    let entries = catalogue();
    assert!(entries.len() >= 40, "{} entries", entries.len());
    for id in REQUIRED {
        assert!(
            entries.iter().any(|(e, _)| e == id),
            "catalogue/{id}.json is missing"
        );
    }
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (s, cat) = kp.get("/api/v1/admin/catalogue").await;
    assert_eq!(s, 200, "{cat}");
    assert_eq!(cat["redirect_uri"], kp.redirect_uri());
    let listed = cat["entries"].as_array().unwrap();
    assert_eq!(listed.len(), entries.len());
    let (_, connectors) = kp.get("/api/v1/connectors").await;
    for (id, def) in &entries {
        assert_eq!(def["id"], id.as_str(), "{id}: id equals the file name");
        for field in [
            "docs_url",
            "register_url",
            "refresh",
            "categories",
            "egress_hosts",
        ] {
            assert!(!def[field].is_null(), "{id}: {field} is required");
        }
        let e = listed.iter().find(|e| e["id"] == id.as_str()).unwrap();
        assert_eq!(e["served"], true, "{id} is served: {e}");
        assert_eq!(e["hidden"], false);
        let c = connectors["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is listed with the connectors"));
        assert_eq!(c["source"], "catalogue");
        assert_eq!(
            c["categories"], def["categories"],
            "{id}: listed under its categories"
        );
        // The same definition imported by an admin passes the import's validation.
        let mut imported = def.clone();
        imported["id"] = json!(format!("cat-{id}"));
        let (s, b) = kp.post("/api/v1/admin/providers", imported).await;
        assert_eq!(s, 201, "{id} imports: {b}");
    }
}

#[tokio::test]
async fn every_oauth_catalogue_entry_redirects_to_its_provider_as_declared() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let browser = Browser::new();
    let mut checked = 0;
    for (id, def) in catalogue() {
        if def["auth"] == "api_key" {
            continue;
        }
        let client_id = format!("client-{id}");
        let (s, b) = kp
            .put(
                &format!("/api/v1/provider-apps/{id}"),
                json!({"client_id": client_id, "client_secret": "s3cret-value"}),
            )
            .await;
        assert_eq!(s, 200, "{id}: {b}");
        let config = sample_config(&id, &def);
        let (s, started) = kp
            .post(
                "/api/v1/connections/oauth/start",
                json!({"connector": id, "config": config}),
            )
            .await;
        assert_eq!(s, 201, "{id}: {started}");
        let (s, location, body) = browser
            .get(started["authorize_url"].as_str().unwrap())
            .await;
        assert_eq!(s, 302, "{id}: {body}");
        let got = url::Url::parse(&location.unwrap()).unwrap();
        let want =
            url::Url::parse(&expand(def["authorization_url"].as_str().unwrap(), &config)).unwrap();
        assert_eq!(got.scheme(), "https", "{id}");
        assert_eq!(got.host_str(), want.host_str(), "{id}: host");
        assert_eq!(got.path(), want.path(), "{id}: path");
        let q: Vec<(String, String)> = got.query_pairs().into_owned().collect();
        let one = |name: &str| -> Option<String> {
            let all: Vec<&String> = q
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .collect();
            assert!(all.len() <= 1, "{id}: {name} appears {} times", all.len());
            all.first().map(|v| v.to_string())
        };
        assert_eq!(
            one("client_id").as_deref(),
            Some(client_id.as_str()),
            "{id}"
        );
        assert_eq!(
            one("redirect_uri"),
            Some(kp.redirect_uri()),
            "{id}: the redirect URI exactly as registered"
        );
        assert!(one("state").is_some_and(|s| s.len() >= 43), "{id}: state");
        let separator = def["scope_separator"].as_str().unwrap_or(" ");
        let defaults: Vec<&str> = def["default_scopes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        match one("scope") {
            None => assert!(
                defaults.is_empty(),
                "{id}: scopes {defaults:?} not requested"
            ),
            Some(scope) => {
                let mut sent: Vec<&str> = scope.split(separator).collect();
                let mut wanted = defaults.clone();
                sent.sort();
                wanted.sort();
                assert_eq!(sent, wanted, "{id}: scope {scope:?} split by {separator:?}");
            }
        }
        let pkce = def["pkce"].as_bool().unwrap_or(true);
        assert_eq!(one("code_challenge").is_some(), pkce, "{id}: PKCE");
        assert_eq!(
            one("code_challenge_method").as_deref(),
            pkce.then_some("S256"),
            "{id}"
        );
        let params = def["authorize_params"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            one("response_type").as_deref(),
            Some(
                params
                    .get("response_type")
                    .and_then(Value::as_str)
                    .unwrap_or("code")
            ),
            "{id}"
        );
        for (k, v) in &params {
            let v = expand(v.as_str().unwrap(), &config);
            assert_eq!(
                one(k),
                (!v.is_empty()).then_some(v),
                "{id}: authorize parameter {k}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 39, "{checked} OAuth entries checked");
}

#[tokio::test]
async fn an_admin_hides_catalogue_entries_in_their_workspace_only() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/github",
            json!({"client_id": "gh", "client_secret": "x"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = kp
        .put("/api/v1/admin/catalogue/github", json!({"hidden": true}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, list) = kp.get("/api/v1/connectors").await;
    let gh = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "github")
        .expect("admins still see it");
    assert_eq!(gh["hidden"], true);
    let (s, b) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "github"}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["fields"][0]["path"], "/connector", "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("hidden"),
        "{b}"
    );
    let (_, cat) = kp.get("/api/v1/admin/catalogue").await;
    let e = cat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "github")
        .unwrap();
    assert_eq!(e["hidden"], true);
    assert_eq!(e["app_configured"], true);
    let (_, audit) = kp.get("/api/v1/audit?action=integration.hidden").await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(1), "{audit}");
    // An unknown id is refused; showing it again lets connections start.
    let (s, _) = kp
        .put("/api/v1/admin/catalogue/no-such", json!({"hidden": true}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = kp
        .put("/api/v1/admin/catalogue/github", json!({"hidden": false}))
        .await;
    assert_eq!(s, 200);
    let (s, b) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "github"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

/// What a fake provider saw: (path with query, headers, form body).
type Seen = Arc<Mutex<Vec<(String, HeaderMap, HashMap<String, String>)>>>;

#[derive(Clone)]
struct Fake {
    seen: Seen,
    /// The `instance_url` the next token response carries, if any.
    instance: Arc<Mutex<Option<String>>>,
    tokens: Arc<Mutex<u32>>,
}

/// A provider on loopback: approves every authorization, issues `tok-N` tokens (with the current
/// `instance_url`), answers `/v1/me` and echoes any other API path.
async fn fake_provider() -> (String, Fake) {
    let fake = Fake {
        seen: Arc::default(),
        instance: Arc::default(),
        tokens: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/oauth/authorize",
            get(|State(f): State<Fake>, uri: Uri, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                f.seen.lock().unwrap().push((uri.to_string(), h, q.clone()));
                common::approve(&q, "code-1", None)
            }),
        )
        .route(
            "/oauth/token",
            post(|State(f): State<Fake>, uri: Uri, h: HeaderMap, Form(form): Form<HashMap<String, String>>| async move {
                f.seen.lock().unwrap().push((uri.to_string(), h, form));
                let n = {
                    let mut t = f.tokens.lock().unwrap();
                    *t += 1;
                    *t
                };
                let mut body = json!({"access_token": format!("tok-{n}"), "refresh_token": format!("ref-{n}"), "expires_in": 3600, "token_type": "Bearer"});
                if let Some(i) = f.instance.lock().unwrap().clone() {
                    body["instance_url"] = json!(i);
                }
                Json(body)
            }),
        )
        .route(
            "/{*rest}",
            any(|State(f): State<Fake>, uri: Uri, h: HeaderMap| async move {
                f.seen.lock().unwrap().push((uri.to_string(), h, HashMap::new()));
                if uri.path().ends_with("/me") {
                    Json(json!({"id": "u-1", "name": "Ursula", "email": "ursula@example.com"}))
                } else {
                    Json(json!({"path": uri.path()}))
                }
            }),
        )
        .with_state(fake.clone());
    (common::serve_fake(app).await, fake)
}

fn seen_at(fake: &Fake, path_prefix: &str) -> Vec<(String, HeaderMap, HashMap<String, String>)> {
    fake.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p.starts_with(path_prefix))
        .cloned()
        .collect()
}

async fn import(kp: &Keyport, def: Value) {
    let (s, b) = kp.post("/api/v1/admin/providers", def).await;
    assert_eq!(s, 201, "{b}");
}

async fn wait_active(kp: &Keyport, id: &str) -> Value {
    for _ in 0..100 {
        let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        if c["status"] == "active" && !c["account"]["display_name"].is_null() {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    panic!("not active: {c}");
}

#[tokio::test]
async fn regional_and_self_hosted_hosts_come_from_each_connections_settings() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (base, fake) = fake_provider().await;
    // A region label inside the host (`api.{region}.…`), with a fallback login host.
    import(
        &kp,
        json!({
            "id": "regional",
            "display_name": "Regional",
            "authorization_url": "https://{login_host|'login.regional.test'}/oauth/authorize",
            "token_url": "https://{login_host|'login.regional.test'}/oauth/token",
            "api_base_url": "https://api.{region}.regional.test/v1/",
            // The login host may be the default or a sandbox; API calls go where the region says.
            "egress_hosts": ["api.{region}.regional.test", "login.regional.test", "login.sandbox.test"],
            "userinfo": {"url": "me", "id": "id", "name": "name", "email": "email"},
            "config_schema": {"type": "object", "required": ["region"], "properties": {
                "region": {"type": "string", "enum": ["eu", "us"]},
                "login_host": {"type": "string", "pattern": "^login[.][a-z.]+$"}
            }},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    common::provider_app(
        &kp,
        "custom-regional",
        &[
            ("https://login.regional.test", &base),
            ("https://api.eu.regional.test", &base),
        ],
        true,
    )
    .await;
    let (_, m) = kp.get("/api/v1/connectors/custom-regional").await;
    assert_eq!(
        m["egress_hosts"][0], "api.{region}.regional.test",
        "the egress host is derived per connection: {m}"
    );
    // A value outside the schema's enum never reaches a URL.
    let (s, b) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "custom-regional", "config": {"region": "evil.example/x"}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (id, _) =
        common::oauth_connect(&kp, "custom-regional", json!({"config": {"region": "eu"}})).await;
    let c = wait_active(&kp, &id).await;
    assert_eq!(c["account"]["display_name"], "Ursula");
    let authorize = &seen_at(&fake, "/oauth/authorize")[0];
    assert!(
        authorize.1["host"]
            .to_str()
            .unwrap()
            .starts_with("127.0.0.1")
    );
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/items?limit=2"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "/v1/items", "the call went to api.eu.…/v1/");
    // An explicit login host replaces the fallback: the authorization goes there.
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "custom-regional", "config": {"region": "us", "login_host": "login.sandbox.test"}}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let (_, location, _) = Browser::new()
        .get(started["authorize_url"].as_str().unwrap())
        .await;
    assert!(
        location
            .unwrap()
            .starts_with("https://login.sandbox.test/oauth/authorize?"),
        "the fallback gives way to the field"
    );

    // A whole self-hosted host (`https://{hostname}/…`, here loopback with a port). API calls go
    // to the host a connection names; the token endpoint, which receives the client secret, only
    // to hosts the definition lists as fixed egress hosts.
    let port = base.rsplit(':').next().unwrap().to_string();
    import(
        &kp,
        json!({
            "id": "selfhosted",
            "display_name": "Self-hosted",
            "authorization_url": "http://{hostname}/oauth/authorize",
            "token_url": "http://{hostname}/oauth/token",
            "api_base_url": "http://{hostname}/v1/",
            "egress_hosts": ["{hostname}", "127.0.0.1"],
            "userinfo": {"url": "me", "id": "id", "name": "name"},
            "config_schema": {"type": "object", "required": ["hostname"], "properties": {
                "hostname": {"type": "string", "pattern": "^[a-z0-9.-]+(:[0-9]+)?$"}
            }},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    let (_, m) = kp.get("/api/v1/connectors/custom-selfhosted").await;
    assert_eq!(m["egress_hosts"], json!(["{hostname}", "127.0.0.1"]));
    let (id, _) = common::oauth_connect(
        &kp,
        "custom-selfhosted",
        json!({"config": {"hostname": format!("127.0.0.1:{port}")}}),
    )
    .await;
    wait_active(&kp, &id).await;
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/repos"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "/v1/repos");
    // `localhost` (the same fake) is a host of the user's choosing, not a fixed egress host: the
    // authorization opens there, but the code and the client secret are not sent.
    let tokens_before = seen_at(&fake, "/oauth/token").len();
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "custom-selfhosted", "config": {"hostname": format!("localhost:{port}")}}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let browser = Browser::new();
    let (_, loc, _) = browser
        .get(started["authorize_url"].as_str().unwrap())
        .await;
    let (_, loc, _) = browser.get(&loc.unwrap()).await;
    browser.finish(&loc.unwrap()).await;
    assert_eq!(
        seen_at(&fake, "/oauth/token").len(),
        tokens_before,
        "no token request left keyport"
    );
    let cid = started["connection_id"].as_str().unwrap();
    let (_, c) = kp.get(&format!("/api/v1/connections/{cid}")).await;
    assert_ne!(c["status"], "active", "{c}");
    let (_, audit) = kp.get(&format!("/api/v1/audit?connection_id={cid}")).await;
    assert!(
        audit.to_string().contains("fixed egress hosts"),
        "the reason is recorded: {audit}"
    );
}

#[tokio::test]
async fn api_calls_follow_the_instance_url_of_the_latest_token_response() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (login, fake) = fake_provider().await;
    let (instance_a, fake_a) = fake_provider().await;
    let (instance_b, fake_b) = fake_provider().await;
    // A provider whose host comes from the token response must name fixed hosts for it.
    for (egress, pointer) in [
        (json!(["{instance_url}"]), "/egress_hosts/0"),
        (Value::Null, "/egress_hosts"),
    ] {
        let mut def = json!({
            "id": "bad-instance",
            "display_name": "Bad",
            "authorization_url": format!("{login}/oauth/authorize"),
            "token_url": format!("{login}/oauth/token"),
            "token_metadata": {"instance_url": "instance_url"},
            "api_base_url": "{instance_url}/services/data/",
        });
        if !egress.is_null() {
            def["egress_hosts"] = egress;
        }
        let (s, b) = kp.post("/api/v1/admin/providers", def).await;
        assert_eq!(s, 422, "{b}");
        assert!(
            b["error"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == pointer),
            "{pointer} in {b}"
        );
    }
    import(
        &kp,
        json!({
            "id": "instance",
            "display_name": "Instance CRM",
            "authorization_url": format!("{login}/oauth/authorize"),
            "token_url": format!("{login}/oauth/token"),
            "token_metadata": {"instance_url": "instance_url"},
            "api_base_url": "{instance_url}/services/data/",
            "egress_hosts": ["127.0.0.1"],
            "userinfo": {"url": "me", "id": "id", "name": "name"},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    *fake.instance.lock().unwrap() = Some(instance_a.clone());
    let (id, _) = common::oauth_connect(&kp, "custom-instance", json!({})).await;
    let c = wait_active(&kp, &id).await;
    assert_eq!(
        c["metadata"]["instance_url"], instance_a,
        "shown with the connection"
    );
    assert_eq!(
        seen_at(&fake_a, "/services/data/me").len(),
        1,
        "the account lookup went to the instance"
    );
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/sobjects"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(seen_at(&fake_a, "/services/data/sobjects").len(), 1);
    assert!(seen_at(&fake, "/services").is_empty(), "not the login host");
    // A refresh that names another instance moves the calls there.
    *fake.instance.lock().unwrap() = Some(instance_b.clone());
    let (s, b) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["metadata"]["instance_url"], instance_b);
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/sobjects"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(seen_at(&fake_b, "/services/data/sobjects").len(), 1);
    let auth = &seen_at(&fake_b, "/services/data/sobjects")[0].1["authorization"];
    assert_eq!(auth, "Bearer tok-2", "the refreshed token");
}

#[tokio::test]
async fn credentials_go_where_the_definition_places_them() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (base, fake) = fake_provider().await;
    // `Authorization: Zoho-oauthtoken …` and a header with the app's client id.
    import(
        &kp,
        json!({
            "id": "zoho-like",
            "display_name": "Zoho-like",
            "authorization_url": format!("{base}/oauth/authorize"),
            "token_url": format!("{base}/oauth/token"),
            "api_base_url": format!("{base}/v1/"),
            "api_headers": {"Client-Id": "{client_id}", "X-Org": "{org|'none'}"},
            "credential": {"header": "Authorization", "value": "Zoho-oauthtoken {access_token}"},
            "userinfo": {"url": "me", "id": "id", "name": "name"},
            "config_schema": {"type": "object", "properties": {"org": {"type": "string", "pattern": "^[a-z]+$"}}},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    let (id, _) =
        common::oauth_connect(&kp, "custom-zoho-like", json!({"config": {"org": "acme"}})).await;
    wait_active(&kp, &id).await;
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/deals"))
        .await;
    assert_eq!(s, 200);
    for (path, h, _) in seen_at(&fake, "/v1/") {
        assert_eq!(h["authorization"], "Zoho-oauthtoken tok-1", "{path}");
        assert_eq!(h["client-id"], "client-123", "{path}");
        assert_eq!(h["x-org"], "acme", "{path}");
    }
    assert_eq!(seen_at(&fake, "/v1/").len(), 2, "lookup and proxied call");

    // The token in a query parameter (and not in a header).
    import(
        &kp,
        json!({
            "id": "query-token",
            "display_name": "Query token",
            "authorization_url": format!("{base}/oauth/authorize"),
            "token_url": format!("{base}/oauth/token"),
            "api_base_url": format!("{base}/q/"),
            "credential": {"query": "access_token"},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    let (id, _) = common::oauth_connect(&kp, "custom-query-token", json!({})).await;
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{id}/proxy/list?x=1"))
        .await;
    assert_eq!(s, 200);
    let (path, h, _) = seen_at(&fake, "/q/list").remove(0);
    assert_eq!(path, "/q/list?x=1&access_token=tok-2");
    assert!(h.get("authorization").is_none());

    // An API-key provider whose header wraps the key with a per-connection setting (Trello's
    // `OAuth oauth_consumer_key="…", oauth_token="…"`).
    import(
        &kp,
        json!({
            "id": "board-like",
            "display_name": "Board-like",
            "auth": "api_key",
            "api_key": {"label": "API token", "help": "Paste the token."},
            "api_base_url": format!("{base}/k/"),
            "credential": {"header": "Authorization", "value": "OAuth oauth_consumer_key=\"{app_key}\", oauth_token=\"{access_token}\""},
            "userinfo": {"url": "me", "id": "id", "name": "name"},
            "config_schema": {"type": "object", "required": ["app_key"], "properties": {"app_key": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}},
        }),
    )
    .await;
    let (s, b) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "custom-board-like", "api_key": "ATTAtoken123", "config": {"app_key": "0123456789abcdef0123456789abcdef"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["account"]["display_name"], "Ursula");
    let (_, h, _) = seen_at(&fake, "/k/me").remove(0);
    assert_eq!(
        h["authorization"],
        "OAuth oauth_consumer_key=\"0123456789abcdef0123456789abcdef\", oauth_token=\"ATTAtoken123\""
    );
    // A header may not name a secret, and the token goes in exactly once.
    for (def_patch, pointer) in [
        (
            json!({"api_headers": {"X-Secret": "{client_secret}"}}),
            "/api_headers/X-Secret",
        ),
        (
            json!({"credential": {"header": "Authorization", "value": "Bearer"}}),
            "/credential/value",
        ),
    ] {
        let mut def = json!({
            "id": "bad-header",
            "display_name": "Bad",
            "authorization_url": format!("{base}/oauth/authorize"),
            "token_url": format!("{base}/oauth/token"),
        });
        def.as_object_mut()
            .unwrap()
            .extend(def_patch.as_object().unwrap().clone());
        let (s, b) = kp.post("/api/v1/admin/providers", def).await;
        assert_eq!(s, 422, "{pointer}: {b}");
    }
}

#[tokio::test]
async fn authorization_urls_carry_extra_parameters_fragments_and_the_exact_redirect_uri() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (base, fake) = fake_provider().await;
    import(
        &kp,
        json!({
            "id": "details",
            "display_name": "Details",
            "authorization_url": format!("{base}/oauth/authorize#consent"),
            "token_url": format!("{base}/oauth/token"),
            "authorize_params": {
                "response_type": "code id_token",
                "prompt": "consent",
                "login_hint": "{login_hint|''}",
                "audience": "{audience|'api.details.test'}",
            },
            "scopes": ["read", "write"],
            "default_scopes": ["read", "write"],
            "scope_separator": "+",
            "config_schema": {"type": "object", "properties": {
                "login_hint": {"type": "string"},
                "audience": {"type": "string"}
            }},
            "client_id": "client-123",
            "client_secret": "client-secret-456",
        }),
    )
    .await;
    let start = |config: Value| {
        let kp = &kp;
        async move {
            let (s, started) = kp
                .post(
                    "/api/v1/connections/oauth/start",
                    json!({"connector": "custom-details", "config": config}),
                )
                .await;
            assert_eq!(s, 201, "{started}");
            let (_, location, _) = Browser::new()
                .get(started["authorize_url"].as_str().unwrap())
                .await;
            location.unwrap()
        }
    };
    let plain = start(json!({})).await;
    assert!(
        plain.ends_with("#consent"),
        "the fragment stays last: {plain}"
    );
    let u = url::Url::parse(&plain).unwrap();
    let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    let all = |k: &str| -> Vec<String> {
        q.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        all("response_type"),
        ["code id_token"],
        "replaced, not repeated"
    );
    assert_eq!(all("prompt"), ["consent"]);
    assert_eq!(all("audience"), ["api.details.test"], "the fallback");
    assert!(all("login_hint").is_empty(), "left out when empty");
    assert_eq!(all("scope"), ["read+write"], "the provider's separator");
    assert_eq!(all("redirect_uri"), [kp.redirect_uri()]);
    let hinted = start(json!({"login_hint": "ann@example.com", "audience": "other"})).await;
    let u = url::Url::parse(&hinted).unwrap();
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(q["login_hint"], "ann@example.com");
    assert_eq!(q["audience"], "other");
    // The token request carries the very same redirect URI.
    let (id, _) = common::oauth_connect(&kp, "custom-details", json!({})).await;
    assert!(!id.is_empty());
    let token = seen_at(&fake, "/oauth/token");
    assert_eq!(token[0].2["redirect_uri"], kp.redirect_uri());
    // keyport's own parameters cannot be replaced.
    let (s, b) = kp
        .post(
            "/api/v1/admin/providers",
            json!({"id": "steal", "display_name": "Steal",
                   "authorization_url": format!("{base}/oauth/authorize"),
                   "token_url": format!("{base}/oauth/token"),
                   "authorize_params": {"redirect_uri": "https://evil.example/cb"}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(
        b["error"]["fields"][0]["path"],
        "/authorize_params/redirect_uri"
    );
}
