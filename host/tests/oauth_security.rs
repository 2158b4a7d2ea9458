//! SECURITY.md O1–O13 and O18, one named test each, against a real `keyport serve` and a
//! scriptable fake authorization server that counts token requests.

mod common;

use base64::Engine;
use common::e2e::*;
use common::fake_as::{self, FakeAs};
use serde_json::{Value, json};
use sha2::Digest;

struct Setup {
    kp: Keyport,
    fake: FakeAs,
}

async fn setup() -> Setup {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    Setup { kp, fake }
}

async fn start(kp: &Keyport, extra: Value) -> (String, String) {
    let mut body = json!({"connector": "oidc-test"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, started) = kp.post("/api/v1/connections/oauth/start", body).await;
    assert_eq!(s, 201, "{started}");
    (
        started["connection_id"].as_str().unwrap().into(),
        started["authorize_url"].as_str().unwrap().into(),
    )
}

/// Launches in `browser` and lets the fake approve; returns keyport's callback URL (not followed).
async fn approve(browser: &Browser, launch: &str) -> String {
    let (s, loc, body) = browser.get(launch).await;
    assert_eq!(s, 302, "{body}");
    let (s, loc, _) = browser.get(&loc.unwrap()).await;
    assert_eq!(s, 303);
    loc.unwrap()
}

fn with_param(url: &str, key: &str, value: Option<&str>) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != key)
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(key, v);
        }
    }
    u.to_string()
}

#[tokio::test]
async fn o1_unknown_expired_or_reused_state_is_rejected_without_a_token_request() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    let (s, _, body) = browser
        .get(&format!(
            "{}/oauth/callback?code=abc&state=not-a-real-state",
            kp.url
        ))
        .await;
    assert_eq!(s, 400, "unknown state: {body}");
    assert!(body.contains("Unknown authorization state"), "{body}");

    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    kp.sql("UPDATE oauth_flows SET expires_at = 1").await;
    let done = browser.finish(&callback).await;
    assert_eq!(done.status, 400, "expired state: {}", done.body);
    assert!(done.body.contains("expired"), "{}", done.body);
    assert_eq!(
        fake.token_requests(),
        0,
        "the token endpoint was never called"
    );

    // Reused: a completed flow's state is refused the second time.
    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    assert_eq!(browser.finish(&callback).await.status, 303);
    let again = browser.finish(&callback).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn o1_state_is_32_random_bytes_stored_only_as_a_hash_with_a_short_ttl() {
    let Setup { kp, .. } = setup().await;
    let browser = Browser::new();
    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let state = query(&callback)["state"].clone();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&state)
        .unwrap();
    assert_eq!(raw.len(), 32);
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let row: (String, i64, i64) =
        sqlx::query_as("SELECT state_hash, created_at, expires_at FROM oauth_flows")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(row.0, hex::encode(sha2::Sha256::digest(state.as_bytes())));
    assert!(row.2 - row.1 <= 10 * 60 * 1000, "TTL at most 10 minutes");
    let db = std::fs::read(kp.data.path().join("keyport.db")).unwrap();
    let wal = std::fs::read(kp.data.path().join("keyport.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(state.len()).any(|w| w == state.as_bytes()),
            "the raw state is not stored"
        );
    }
}

#[tokio::test]
async fn o2_callback_replayed_without_the_browser_cookie_is_rejected() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let (s, body) = replay_without_cookies(&callback).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("another browser"), "{body}");
    assert_eq!(fake.token_requests(), 0);
    // The real browser still completes.
    assert_eq!(browser.finish(&callback).await.status, 303);
    kp.wait_for(&id, |c| c["status"] == "active").await;
}

#[tokio::test]
async fn o3_the_same_callback_twice_exchanges_the_code_once() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let (a, b) = tokio::join!(browser.finish(&callback), browser.finish(&callback));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [303, 400], "exactly one completes");
    assert_eq!(
        fake.token_requests(),
        1,
        "one code exchange at the provider"
    );
}

#[tokio::test]
async fn o4_pkce_s256_on_every_flow_and_none_for_slack() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    browser.finish(&callback).await;
    let (auth, token) = {
        let seen = fake.seen.lock().unwrap();
        (
            seen.authorize_requests[0].clone(),
            seen.token_requests[0].clone(),
        )
    };
    assert_eq!(auth["code_challenge_method"], "S256");
    let verifier = &token["code_verifier"];
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(
        auth["code_challenge"], expected,
        "the verifier matches the S256 challenge"
    );

    // Slack's v2 flow does not support PKCE: no challenge is sent; scopes are comma-separated (O18).
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/slack",
            json!({"client_id": "123.456", "client_secret": "slack-secret"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "slack", "scopes": ["search:read"]}),
        )
        .await;
    assert_eq!(s, 201, "{started}");
    let (s, loc, _) = browser
        .get(started["authorize_url"].as_str().unwrap())
        .await;
    assert_eq!(s, 302);
    let loc = loc.unwrap();
    assert!(
        loc.starts_with("https://slack.com/oauth/v2/authorize?"),
        "{loc}"
    );
    let q = query(&loc);
    assert!(!q.contains_key("code_challenge"), "{loc}");
    assert_eq!(q["scope"], "chat:write,channels:read,team:read");
    assert_eq!(q["user_scope"], "search:read");
}

#[tokio::test]
async fn o5_redirect_uri_comes_from_configuration_not_the_host_header() {
    let Setup { kp, fake } = setup().await;
    let r = kp
        .http
        .post(format!("{}/api/v1/connections/oauth/start", kp.url))
        .bearer_auth(ADMIN)
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .json(&json!({"connector": "oidc-test"}))
        .send()
        .await
        .unwrap();
    let started: Value = r.json().await.unwrap();
    let launch = started["authorize_url"].as_str().unwrap();
    assert!(launch.starts_with(&kp.url), "{launch}");
    let browser = Browser::new();
    let callback = approve(&browser, launch).await;
    browser.finish(&callback).await;
    let seen = fake.seen.lock().unwrap();
    let expected = format!("{}/oauth/callback", kp.url);
    assert_eq!(seen.authorize_requests[0]["redirect_uri"], expected);
    assert_eq!(
        seen.token_requests[0]["redirect_uri"], expected,
        "identical in the token request"
    );
}

#[tokio::test]
async fn o6_tampered_or_missing_iss_is_rejected_also_on_error_callbacks() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    for iss in ["http://127.0.0.1:1", ""] {
        fake.script.lock().unwrap().iss = Some(iss.to_string());
        let (id, launch) = start(&kp, json!({})).await;
        let callback = approve(&browser, &launch).await;
        let done = browser.finish(&callback).await;
        assert_eq!(done.status, 400, "iss {iss:?}: {}", done.body);
        assert!(done.body.contains("issuer"), "{}", done.body);
        let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
        assert_eq!(c["status"], "pending");
    }
    // An error callback with a foreign issuer is refused too.
    fake.script.lock().unwrap().iss = None;
    let (_, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let forged = with_param(
        &with_param(
            &with_param(&callback, "code", None),
            "error",
            Some("access_denied"),
        ),
        "iss",
        Some("https://evil.example"),
    );
    assert_eq!(browser.finish(&forged).await.status, 400);
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn o7_a_flow_started_for_one_provider_cannot_complete_on_another() {
    let Setup { kp, fake } = setup().await;
    let other = fake_as::start().await;
    let browser = Browser::new();
    let (_, launch) = start(&kp, json!({})).await;
    let (_, loc, _) = browser.get(&launch).await;
    // The browser is steered to provider B with A's request (state included).
    let to_b = loc.unwrap().replace(&fake.issuer(), &other.issuer());
    let (_, callback, _) = browser.get(&to_b).await;
    let done = browser.finish(&callback.unwrap()).await;
    assert_eq!(done.status, 400, "{}", done.body);
    assert_eq!(fake.token_requests() + other.token_requests(), 0);
}

#[tokio::test]
async fn o8_the_callback_redirects_to_a_clean_url_with_no_store_and_no_referrer() {
    let Setup { kp, .. } = setup().await;
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let done = browser.finish(&callback).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.headers["cache-control"], "no-store");
    assert_eq!(done.headers["referrer-policy"], "no-referrer");
    let location = done.location.unwrap();
    let q = query(&location);
    assert!(
        !q.contains_key("code") && !q.contains_key("state") && !q.contains_key("iss"),
        "{location}"
    );
    assert_eq!(q["connection_id"], id);
    // Error pages carry the same headers.
    let failed = browser.finish(&callback).await;
    assert_eq!(failed.status, 400);
    assert_eq!(failed.headers["cache-control"], "no-store");
    assert_eq!(failed.headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn o9_return_to_must_be_on_the_allow_list() {
    let Setup { kp, .. } = setup().await;
    let (s, err) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test", "return_to": "https://evil.example/steal"}),
        )
        .await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KEYPORT_RETURN_TO_ALLOWLIST")
    );
    let (s, _) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test", "return_to": format!("{}.evil.example/", kp.url)}),
        )
        .await;
    assert_eq!(s, 400, "a look-alike prefix is not the same origin");
    let back = format!("{}/after-connect", kp.url);
    let (_, launch) = start(&kp, json!({"return_to": back})).await;
    let browser = Browser::new();
    let callback = approve(&browser, &launch).await;
    let done = browser.finish(&callback).await;
    assert!(done.location.unwrap().starts_with(&back));
}

#[tokio::test]
async fn o10_a_token_endpoint_redirect_is_not_followed() {
    let Setup { kp, fake } = setup().await;
    fake.script.lock().unwrap().token_redirect = true;
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let done = browser.finish(&callback).await;
    assert_eq!(done.status, 303);
    assert_eq!(query(&done.location.unwrap())["status"], "error");
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(
        fake.seen.lock().unwrap().redirected_token_requests,
        0,
        "nothing was re-sent to the redirect target"
    );
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending");
    assert!(
        c["status_reason"].as_str().unwrap().contains("redirect"),
        "{c}"
    );
}

#[tokio::test]
async fn o11_access_denied_makes_no_token_request_and_says_what_to_do() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let callback = approve(&browser, &launch).await;
    let denied = with_param(
        &with_param(&callback, "code", None),
        "error",
        Some("access_denied"),
    );
    let done = browser.finish(&denied).await;
    assert_eq!(done.status, 303);
    let q = query(&done.location.unwrap());
    assert_eq!(q["status"], "error");
    assert_eq!(q["error"], "access_denied");
    assert!(
        !q.contains_key("message"),
        "keyport's own done page takes a code, not text"
    );
    assert_eq!(fake.token_requests(), 0);
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending");
    assert_eq!(
        c["status_reason"],
        "The provider denied access — try again and approve the permissions."
    );
}

#[tokio::test]
async fn o12_token_responses_are_validated_and_a_narrower_grant_is_flagged() {
    let Setup { kp, fake } = setup().await;
    let browser = Browser::new();
    fake.script.lock().unwrap().token_body = Some(
        json!({"access_token": "fake-at-narrow", "token_type": "BEARER", "expires_in": "1800", "scope": "openid"}),
    );
    let (id, launch) = start(&kp, json!({})).await;
    browser.finish(&approve(&browser, &launch).await).await;
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["granted_scopes"], json!(["openid"]));
    assert_eq!(
        c["scope_narrowed"], true,
        "offline_access was requested but not granted"
    );
    assert!(
        c["expires_at"].is_string(),
        "a numeric-string expires_in is understood"
    );

    fake.script.lock().unwrap().token_body =
        Some(json!({"access_token": "", "token_type": "bearer"}));
    let (id, launch) = start(&kp, json!({})).await;
    let done = browser.finish(&approve(&browser, &launch).await).await;
    assert_eq!(query(&done.location.unwrap())["status"], "error");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("no access_token"),
        "{c}"
    );
}

#[tokio::test]
async fn o13_an_error_inside_a_200_token_response_is_an_error() {
    let Setup { kp, fake } = setup().await;
    fake.script.lock().unwrap().token_body =
        Some(json!({"error": "invalid_grant", "error_description": "code expired"}));
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let done = browser.finish(&approve(&browser, &launch).await).await;
    assert_eq!(query(&done.location.unwrap())["status"], "error");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending");
    assert!(
        c["status_reason"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{c}"
    );
    assert!(
        kp.read_secret(&id, "access_token").await.is_none(),
        "nothing stored"
    );
}

#[tokio::test]
async fn o18_granted_scopes_use_the_provider_separator() {
    // Slack's "a,b" answer → two scopes, through the Slack connector's token hook.
    let rt = common::runtime_with_loopback();
    let slack = rt.load(common::builtin("slack")).await.unwrap();
    let body = json!({"ok": true, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write,channels:read", "team": {"id": "T1", "name": "T"}});
    let set = slack
        .parse_token_response(200, body.to_string().into_bytes())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        set.scopes.unwrap(),
        vec!["chat:write".to_string(), "channels:read".to_string()]
    );
}

#[tokio::test]
async fn a_transient_account_lookup_failure_leaves_the_connection_pending_and_is_retried() {
    let Setup { kp, fake } = setup().await;
    fake.script.lock().unwrap().userinfo_failures = 1;
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    let done = browser.finish(&approve(&browser, &launch).await).await;
    assert_eq!(query(&done.location.unwrap())["status"], "pending");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "pending");
    assert!(
        c["status_reason"].as_str().unwrap().contains("retried"),
        "{c}"
    );
    let c = kp.wait_for(&id, |c| c["status"] == "active").await;
    assert_eq!(c["account"]["display_name"], "Fake User");
}

#[tokio::test]
async fn an_expired_token_without_a_refresh_token_becomes_expired_on_refresh() {
    let Setup { kp, fake } = setup().await;
    fake.script.lock().unwrap().token_body = Some(
        json!({"access_token": "fake-at-short", "token_type": "Bearer", "expires_in": 1, "scope": "openid offline_access"}),
    );
    let browser = Browser::new();
    let (id, launch) = start(&kp, json!({})).await;
    browser.finish(&approve(&browser, &launch).await).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, err) = kp
        .post(&format!("/api/v1/connections/{id}/refresh"), json!({}))
        .await;
    assert_eq!(s, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Reconnect"),
        "{err}"
    );
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "expired");
    assert_eq!(
        fake.token_requests(),
        1,
        "no refresh request without a refresh token"
    );
}
