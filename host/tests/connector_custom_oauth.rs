//! The custom-OAuth connector: one component parameterised by each imported provider's definition.
//! Covers the definition language (templated URLs, extra params, JSON token bodies, a separate
//! refresh URL, nested token paths, token-response metadata, extra API headers), field-level
//! validation, and account lookup and token exchange through the host against a fake provider.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use keyport::runtime::{
    AuthScheme, CallContext, CallEnv, ClientAuth, Connector, Secret, TokenBody,
};
use serde_json::{Value, json};

fn definition() -> Value {
    json!({
        "id": "acme",
        "display_name": "Acme CRM",
        "authorization_url": "https://{subdomain}.acme.example/oauth/authorize",
        "token_url": "https://{subdomain}.acme.example/oauth/token",
        "refresh_url": "https://{subdomain}.acme.example/oauth/refresh",
        "revocation_url": "https://{subdomain}.acme.example/oauth/revoke",
        "scopes": [{"name": "crm.read", "description": "Read CRM records"}, "crm.write"],
        "default_scopes": ["crm.read"],
        "scope_separator": ",",
        "pkce": false,
        "client_auth": "basic",
        "token_request_body": "json",
        "authorize_params": {"audience": "api.acme.example"},
        "token_params": {"tenant": "{subdomain}"},
        "refresh_params": {"grant_scope": "offline"},
        "token_paths": {"access_token": ["authed_user.access_token", "access_token"], "expires_in": "authed_user.expires_in"},
        "token_metadata": {"instance_url": "instance_url"},
        "api_base_url": "https://{subdomain}.acme.example/api/",
        "api_headers": {"Acme-Version": "2026-01"},
        "userinfo": {"url": "me", "id": "data.id", "name": "data.attributes.company", "email": "data.attributes.email"}
    })
}

async fn template() -> (keyport::runtime::Runtime, Connector) {
    let rt = common::runtime_with_loopback();
    let c = rt
        .load(common::builtin("custom-oauth"))
        .await
        .expect("custom-oauth loads");
    (rt, c)
}

#[tokio::test]
async fn custom_oauth_describes_itself_as_a_configurable_template() {
    let (_, t) = template().await;
    assert_eq!(t.manifest().id, "custom-oauth");
    assert!(t.manifest().configurable, "usable only through configure");
    let slack = common::runtime_with_loopback()
        .load(common::builtin("slack"))
        .await
        .unwrap();
    assert!(
        slack.configure("{}").await.is_err(),
        "ordinary connectors take no definition"
    );
}

#[tokio::test]
async fn custom_oauth_definition_becomes_a_manifest() {
    let (_, t) = template().await;
    let c = t
        .configure(&definition().to_string())
        .await
        .expect("a valid definition");
    let m = c.manifest();
    assert_eq!(m.id, "custom-acme");
    assert_eq!(m.display_name, "Acme CRM");
    assert!(!m.configurable);
    let AuthScheme::Oauth2(o) = &m.auth else {
        panic!()
    };
    assert_eq!(
        o.authorize_url,
        "https://{subdomain}.acme.example/oauth/authorize"
    );
    assert_eq!(
        o.refresh_url.as_deref(),
        Some("https://{subdomain}.acme.example/oauth/refresh")
    );
    assert_eq!(
        o.revoke_url.as_deref(),
        Some("https://{subdomain}.acme.example/oauth/revoke")
    );
    assert_eq!(o.scope_separator, ",");
    assert!(!o.pkce);
    assert!(matches!(o.client_auth, ClientAuth::Basic));
    assert!(matches!(o.token_body, TokenBody::Json));
    assert_eq!(
        o.authorize_params,
        vec![("audience".into(), "api.acme.example".into())]
    );
    assert_eq!(
        o.token_params,
        vec![("tenant".into(), "{subdomain}".into())]
    );
    assert_eq!(
        o.refresh_params,
        vec![("grant_scope".into(), "offline".into())]
    );
    assert_eq!(
        o.token_paths.access_token,
        vec!["authed_user.access_token", "access_token"]
    );
    assert_eq!(
        o.token_paths.metadata,
        vec![("instance_url".into(), "instance_url".into())]
    );
    assert_eq!(
        m.api_headers,
        vec![("Acme-Version".into(), "2026-01".into())]
    );
    assert_eq!(
        m.egress_hosts,
        vec!["*.acme.example".to_string()],
        "derived from the templated URLs"
    );
    assert!(
        m.scopes.iter().any(|s| s.name == "crm.read" && s.required),
        "default scopes are required"
    );
    assert!(
        m.scopes
            .iter()
            .any(|s| s.name == "crm.write" && !s.required)
    );
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap();
    assert_eq!(
        schema["required"],
        json!(["subdomain"]),
        "one config field per placeholder"
    );
}

#[tokio::test]
async fn custom_oauth_invalid_definitions_get_field_level_errors() {
    let (_, t) = template().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"display_name": "X", "authorization_url": "https://a.example/auth", "token_url": "https://a.example/t"}),
            "/id",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/auth"}),
            "/token_url",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "ftp://a.example", "token_url": "https://a.example/t"}),
            "/authorization_url",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t", "scope_separator": ";"}),
            "/scope_separator",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t", "client_secret": "s"}),
            "/client_secret",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t", "client_auth": "jwt"}),
            "/client_auth",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t", "token_paths": {"acces_token": "x"}}),
            "/token_paths/acces_token",
        ),
        (
            json!({"id": "x", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t", "userinfo": {"url": "https://a.example/me"}}),
            "/userinfo/id",
        ),
        (
            json!({"id": "Bad Id", "display_name": "X", "authorization_url": "https://a.example/a", "token_url": "https://a.example/t"}),
            "/id",
        ),
    ];
    for (def, pointer) in cases {
        match t.configure(&def.to_string()).await {
            Err(keyport::runtime::ConfigureError::Invalid(errors)) => {
                assert!(
                    errors.iter().any(|e| e.path == pointer),
                    "{pointer} expected in {errors:?}"
                );
                assert!(errors.iter().all(|e| !e.message.is_empty()));
            }
            other => panic!("{pointer}: expected field errors, got {other:?}"),
        }
    }
    let err = t.configure("not json").await.unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[tokio::test]
async fn custom_oauth_looks_up_the_account_at_nested_paths_with_api_headers() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let base = common::serve_fake(axum::Router::new().route(
        "/api/me",
        get(move |h: HeaderMap| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(h);
                Json(json!({"data": {"id": 42, "attributes": {"company": "T-Rex Inc", "email": "ops@t-rex.example"}}}))
            }
        }),
    ))
    .await;
    let (_, t) = template().await;
    let c = t.configure(&definition().to_string()).await.unwrap();
    let env = CallEnv {
        credential: Some(Secret::new("acme-access-token")),
        api_base_url: Some(
            keyport::oauth::fill_template(
                &c.manifest().api_base_url,
                &json!({"subdomain": "t-rex"}),
            )
            .unwrap(),
        ),
        endpoint_overrides: vec![("https://t-rex.acme.example".into(), base)],
        ..Default::default()
    };
    let ctx = CallContext {
        config: json!({"subdomain": "t-rex"}).to_string(),
        metadata: "{}".into(),
        definition: String::new(),
    };
    let account = c
        .lookup_account(env, ctx)
        .await
        .unwrap()
        .expect("lookup succeeds");
    assert_eq!(account.external_id, "42");
    assert_eq!(account.display_name, "T-Rex Inc");
    assert_eq!(account.email.as_deref(), Some("ops@t-rex.example"));
    let h = &seen.lock().unwrap()[0];
    assert_eq!(h["authorization"], "Bearer acme-access-token");
    assert_eq!(h["acme-version"], "2026-01", "extra API headers are sent");
}

#[tokio::test]
async fn custom_oauth_token_exchange_uses_json_bodies_basic_auth_and_nested_paths() {
    let seen: Arc<Mutex<Vec<(HeaderMap, Value, String)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/oauth/{kind}",
        post(move |axum::extract::Path(kind): axum::extract::Path<String>, h: HeaderMap, Json(body): Json<Value>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((h, body, kind));
                Json(json!({"ok": true, "authed_user": {"access_token": "nested-token", "expires_in": "7200"},
                    "refresh_token": "r1", "token_type": "Bearer", "instance_url": "https://t-rex.acme.example"}))
            }
        }),
    );
    let base = common::serve_fake(app).await;
    let (_, t) = template().await;
    let c = t.configure(&definition().to_string()).await.unwrap();
    let AuthScheme::Oauth2(o) = &c.manifest().auth else {
        panic!()
    };
    let http = keyport::runtime::outbound_client(
        true,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let overrides = BTreeMap::from([("https://t-rex.acme.example".to_string(), base.clone())]);
    let config = json!({"subdomain": "t-rex"});
    let secret = Secret::new("acme-client-secret");
    let call = keyport::oauth::TokenCall {
        http: &http,
        oauth: o,
        config: &config,
        client_id: "acme-client",
        client_secret: Some(&secret),
        overrides: &overrides,
        egress: &c.manifest().egress_hosts,
    };
    let (status, body) = call
        .exchange_code("code-1", "https://keyport.example/oauth/callback", None)
        .await
        .unwrap();
    let tokens = keyport::oauth::parse_token_response(status, &body, o).unwrap();
    assert_eq!(tokens.access_token, "nested-token", "the nested path wins");
    assert_eq!(tokens.expires_in, Some(7200));
    assert_eq!(
        serde_json::from_str::<Value>(&tokens.metadata).unwrap()["instance_url"],
        "https://t-rex.acme.example"
    );
    call.refresh("r1", None).await.unwrap();
    let seen = seen.lock().unwrap();
    let (h, b, kind) = &seen[0];
    assert_eq!(kind, "token");
    assert_eq!(
        h["content-type"], "application/json",
        "JSON token request body"
    );
    assert!(
        h["authorization"].to_str().unwrap().starts_with("Basic "),
        "client auth: basic"
    );
    assert_eq!(b["tenant"], "t-rex", "templated extra token params");
    assert!(
        b.get("client_secret").is_none(),
        "the secret is in the Basic header, not the body"
    );
    let (_, b, kind) = &seen[1];
    assert_eq!(kind, "refresh", "a separate refresh URL");
    assert_eq!(b["grant_scope"], "offline", "extra refresh params");

    // The authorize URL: templated, extra params, comma-separated scopes, no PKCE.
    let url = keyport::oauth::authorize_url(&keyport::oauth::AuthorizeParams {
        oauth: o,
        config: &config,
        client_id: "acme-client",
        redirect_uri: "https://keyport.example/oauth/callback",
        state: "s",
        code_challenge: None,
        scopes: &[
            ("crm.read".into(), "scope".into()),
            ("crm.write".into(), "scope".into()),
        ],
        overrides: &BTreeMap::new(),
    })
    .unwrap();
    let q: HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        url.starts_with("https://t-rex.acme.example/oauth/authorize?"),
        "{url}"
    );
    assert_eq!(q["scope"], "crm.read,crm.write");
    assert_eq!(q["audience"], "api.acme.example");
}
