//! Single sign-on against a real OpenID Connect provider (`oidc-provider`): a new person gets an
//! account, a returning one is matched, an existing account is linked by verified email, flows
//! are single use and bound to their browser; and ID tokens the provider really issued are
//! refused when their nonce, audience, issuer or expiry is not what the sign-in expects.

mod common;

use base64::Engine;
use common::e2e::*;
use serde_json::{Value, json};
use sha2::Digest;

async fn sso_keyport() -> (Keyport, Oidc) {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start_with(
        &kp.redirect_uri(),
        &[(
            "OIDC_EXTRA_REDIRECT_URIS",
            &format!("{}/sso/callback", kp.url),
        )],
    );
    let (s, v) = kp
        .put(
            "/api/v1/admin/sso",
            json!({
                "issuer": oidc.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "allow_signup": true,
                "token_auth": "client_secret_post",
            }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["redirect_uri"], format!("{}/sso/callback", kp.url));
    assert_eq!(v["client_secret_set"], true);
    assert!(
        !v.to_string().contains(CLIENT_SECRET),
        "never the secret: {v}"
    );
    (kp, oidc)
}

/// Signs in through the provider as `user` in a fresh browser: the browser and where keyport
/// sent it.
async fn sso_sign_in(kp: &Keyport, user: &str) -> (Browser, Finished) {
    let b = Browser::new();
    let done = b
        .connect(&format!("{}/sso/start?next=/connections", kp.url), user)
        .await;
    (b, done)
}

/// `GET /api/v1/me` in the browser's session.
async fn me(kp: &Keyport, b: &Browser) -> Value {
    let csrf: Value = b
        .http
        .get(format!("{}/ui/csrf", kp.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    b.http
        .get(format!("{}/api/v1/me", kp.url))
        .header("x-csrf-token", csrf["csrf"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn single_sign_on_creates_matches_and_links_users() {
    let (kp, _oidc) = sso_keyport().await;
    let (_, page) = {
        let r = kp
            .http
            .get(format!("{}/login", kp.url))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert!(page.contains("Sign in with single sign-on"), "{page}");

    // A new person: an account is created (sign-up allowed), as a member, signed in.
    let (b, done) = sso_sign_in(&kp, "grace").await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/connections"));
    let first = me(&kp, &b).await;
    assert_eq!(first["user"]["email"], "grace@example.com", "{first}");
    assert_eq!(first["user"]["sso"], true);
    assert_eq!(first["role"], "member");

    // Returning: the same account, not a new one.
    let (b, done) = sso_sign_in(&kp, "grace").await;
    assert_eq!(done.status, 303, "{}", done.body);
    let again = me(&kp, &b).await;
    assert_eq!(again["user"]["id"], first["user"]["id"]);
    let (_, users) = kp.get("/api/v1/users").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");

    // A password account with the same (verified) email is linked, keeping its role.
    let (s, hank) = kp
        .post(
            "/api/v1/users",
            json!({"email": "hank@example.com", "password": "hank's passphrase", "role": "admin"}),
        )
        .await;
    assert_eq!(s, 201, "{hank}");
    let (b, done) = sso_sign_in(&kp, "hank").await;
    assert_eq!(done.status, 303, "{}", done.body);
    let linked = me(&kp, &b).await;
    assert_eq!(linked["user"]["id"], hank["id"]);
    assert_eq!(linked["role"], "admin");

    // A callback is single use, and only in the browser that started the sign-in.
    let (s, body) = replay_without_cookies(&done.callback_url).await;
    assert_eq!(s, 403);
    assert!(body.contains("used already"), "{body}");
    let b2 = Browser::new();
    let cb = b2
        .authorize_at_provider(&format!("{}/sso/start", kp.url), "ivy", false)
        .await;
    let (s, body) = replay_without_cookies(&cb).await;
    assert_eq!(s, 403);
    assert!(body.contains("another browser"), "{body}");
}

#[tokio::test]
async fn without_sign_up_an_unknown_person_is_refused() {
    let (kp, oidc) = sso_keyport().await;
    let (s, v) = kp
        .put(
            "/api/v1/admin/sso",
            json!({"issuer": oidc.issuer, "client_id": CLIENT_ID, "allow_signup": false, "token_auth": "client_secret_post"}),
        )
        .await;
    assert_eq!(s, 200, "the stored secret is kept: {v}");
    let (_, done) = sso_sign_in(&kp, "mallory").await;
    assert_eq!(done.status, 403, "{}", done.body);
    assert!(
        done.body.contains("no keyport account for your email"),
        "{}",
        done.body
    );
    let (_, users) = kp.get("/api/v1/users").await;
    assert_eq!(users["users"].as_array().unwrap().len(), 0);
    // Only installation admins configure it.
    let (_, k) = kp.post("/api/v1/api-keys", json!({"name": "ci"})).await;
    let r = kp
        .http
        .get(format!("{}/api/v1/admin/sso", kp.url))
        .bearer_auth(k["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// An ID token the provider issued, for the nonce given: (token, JWKS, issuer).
async fn real_id_token(kp: &Keyport, oidc: &Oidc, nonce: &str) -> (String, Value) {
    let http = reqwest::Client::new();
    let d: Value = http
        .get(format!("{}/.well-known/openid-configuration", oidc.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghij";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut auth = url::Url::parse(d["authorization_endpoint"].as_str().unwrap()).unwrap();
    auth.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &kp.redirect_uri())
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email")
        .append_pair("state", "s")
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let cb = Browser::new()
        .authorize_at_provider(auth.as_str(), "judy", false)
        .await;
    let code = query(&cb)["code"].clone();
    let tokens: Value = http
        .post(d["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", kp.redirect_uri().as_str()),
            ("code_verifier", verifier),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks: Value = http
        .get(d["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (tokens["id_token"].as_str().unwrap().to_string(), jwks)
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_audience_or_issuer_or_expired_are_refused() {
    use keyport::auth::sso::{Expected, verify_id_token};
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let (token, jwks) = real_id_token(&kp, &oidc, "the-nonce").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let want = |issuer: &'static str, client: &'static str, nonce: &'static str, now: i64| {
        (issuer, client, nonce, now)
    };
    let issuer: &'static str = Box::leak(oidc.issuer.clone().into_boxed_str());
    let check = |(iss, client, nonce, now): (&str, &str, &str, i64)| {
        verify_id_token(
            &token,
            &jwks,
            &Expected {
                issuer: iss,
                client_id: client,
                nonce,
                now,
            },
        )
    };
    let claims = check(want(issuer, CLIENT_ID, "the-nonce", now)).expect("the real token verifies");
    assert_eq!(claims.sub, "judy");
    let err = check(want(issuer, CLIENT_ID, "another-nonce", now)).unwrap_err();
    assert!(err.contains("nonce"), "{err}");
    let err = check(want(issuer, "another-client", "the-nonce", now)).unwrap_err();
    assert!(err.contains("not for the client"), "{err}");
    let err = check(want("https://issuer.invalid", CLIENT_ID, "the-nonce", now)).unwrap_err();
    assert!(err.contains("issuer"), "{err}");
    let err = check(want(issuer, CLIENT_ID, "the-nonce", claims.exp + 61)).unwrap_err();
    assert!(err.contains("expired"), "{err}");
    // A token whose payload was changed no longer matches its signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["sub"] = json!("admin");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    let forged = parts.join(".");
    let err = verify_id_token(
        &forged,
        &jwks,
        &Expected {
            issuer,
            client_id: CLIENT_ID,
            nonce: "the-nonce",
            now,
        },
    )
    .unwrap_err();
    assert!(err.contains("signature"), "{err}");
}
