//! Single sign-on with any OpenID Connect provider, configured once for the installation by an
//! installation admin (issuer, client id and secret; the secret sealed by the vault).
//!
//! The flow is the authorization code flow with PKCE (S256), `state` bound to the browser by a
//! cookie, and a `nonce`. The ID token is verified before anything else: its signature against
//! the provider's JWKS (RS256/384/512, PS256/384/512, ES256/384, EdDSA; never `none`, never a
//! symmetric key), `iss` equal to the configured issuer, `aud` containing the client id, `exp` in
//! the future (a minute of leeway) and `nonce` equal to the flow's. A user is matched by the
//! provider's subject, then by email when the provider says it is verified; otherwise, when the
//! admin allows sign-up, created as a member of the configured workspace. Discovery, token and
//! JWKS requests obey the same address rules as every other outbound request.

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::people::require_installation_admin;
use super::{AuthError, Session};
use crate::connections::{Error as ServiceError, Principal, Role, Service};
use crate::oauth::hash;
use crate::store::{SsoFlowRow, UserRow, now_ms};

const SETTINGS_KEY: &str = "sso_config";
const SECRET_OWNER: &str = "sso";
/// The vault context's workspace for installation-wide secrets.
const INSTALLATION: &str = "";
/// How long a sign-on may take from start to callback.
const FLOW_TTL_MS: i64 = 10 * 60 * 1000;
/// Largest discovery document, JWKS or token response read.
const BODY_MAX: usize = 256 * 1024;
/// Clock skew allowed on `exp`.
const LEEWAY_SECS: i64 = 60;

/// The installation's single sign-on settings (the client secret is stored apart, sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SsoConfig {
    pub issuer: String,
    pub client_id: String,
    /// Create an account on first sign-in for a person the installation does not know.
    #[serde(default)]
    pub allow_signup: bool,
    /// Where such a person becomes a member (default `default`).
    #[serde(default = "default_workspace")]
    pub signup_workspace: String,
    /// With which role (default `member`; never `owner`).
    #[serde(default = "default_role")]
    pub signup_role: String,
    /// How keyport authenticates at the token endpoint: `client_secret_basic` (the default) or
    /// `client_secret_post`, as registered at the provider.
    #[serde(default = "default_token_auth")]
    pub token_auth: String,
}

fn default_token_auth() -> String {
    "client_secret_basic".into()
}

fn default_workspace() -> String {
    "default".into()
}
fn default_role() -> String {
    "member".into()
}

/// `PUT /api/v1/admin/sso` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoInput {
    pub issuer: String,
    pub client_id: String,
    /// Left out: the stored one is kept.
    pub client_secret: Option<String>,
    #[serde(default)]
    pub allow_signup: bool,
    pub signup_workspace: Option<String>,
    pub signup_role: Option<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    pub token_auth: Option<String>,
}

fn invalid(path: &str, message: impl Into<String>) -> AuthError {
    let message = message.into();
    ServiceError::Invalid {
        fields: vec![(path.into(), message.clone())],
        message,
    }
    .into()
}

/// The settings, when single sign-on is configured.
pub async fn config(svc: &Service) -> Result<Option<SsoConfig>, AuthError> {
    Ok(svc
        .store
        .setting(SETTINGS_KEY)
        .await?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// The settings' JSON view (never the secret).
pub async fn view(svc: &Service, who: &Principal) -> Result<Value, AuthError> {
    require_installation_admin(who)?;
    let Some(c) = config(svc).await? else {
        return Err(ServiceError::NotFound(
            "single sign-on is not configured; PUT /api/v1/admin/sso {issuer, client_id, client_secret}".into(),
        )
        .into());
    };
    let secret = svc
        .store
        .secret(INSTALLATION, SECRET_OWNER, "client_secret")
        .await?
        .is_some();
    Ok(json!({
        "issuer": c.issuer,
        "client_id": c.client_id,
        "client_secret_set": secret,
        "allow_signup": c.allow_signup,
        "signup_workspace": c.signup_workspace,
        "signup_role": c.signup_role,
        "token_auth": c.token_auth,
        "redirect_uri": redirect_uri(svc),
    }))
}

/// The redirect URI to register at the provider.
pub fn redirect_uri(svc: &Service) -> String {
    format!("{}/sso/callback", svc.config.public_url)
}

/// Configures single sign-on: the issuer is discovered and checked before anything is stored.
pub async fn configure(
    svc: &Service,
    who: &Principal,
    input: SsoInput,
) -> Result<Value, AuthError> {
    require_installation_admin(who)?;
    let issuer = input.issuer.trim().trim_end_matches('/').to_string();
    if input.client_id.trim().is_empty() {
        return Err(invalid("/client_id", "client_id must not be empty"));
    }
    let role: Role = input.signup_role.as_deref().unwrap_or("member").parse()?;
    if role == Role::Owner {
        return Err(invalid(
            "/signup_role",
            "people who sign up by themselves cannot become owners; use member, admin or client",
        ));
    }
    let workspace = input.signup_workspace.unwrap_or_else(default_workspace);
    if !svc.store.workspace_exists(&workspace).await? {
        return Err(invalid(
            "/signup_workspace",
            format!("no workspace {workspace:?}"),
        ));
    }
    let token_auth = input.token_auth.unwrap_or_else(default_token_auth);
    if !matches!(
        token_auth.as_str(),
        "client_secret_basic" | "client_secret_post"
    ) {
        return Err(invalid(
            "/token_auth",
            "token_auth is client_secret_basic or client_secret_post, as the client is registered at the provider",
        ));
    }
    discover(svc, &issuer).await?;
    let has_secret = svc
        .store
        .secret(INSTALLATION, SECRET_OWNER, "client_secret")
        .await?
        .is_some();
    match input.client_secret.filter(|s| !s.is_empty()) {
        Some(secret) => {
            let sealed = svc.seal_field(INSTALLATION, SECRET_OWNER, "client_secret", &secret);
            svc.store
                .put_secret(SECRET_OWNER, INSTALLATION, &sealed)
                .await?;
        }
        None if !has_secret => {
            return Err(invalid("/client_secret", "client_secret is required"));
        }
        None => {}
    }
    let c = SsoConfig {
        issuer,
        client_id: input.client_id.trim().to_string(),
        allow_signup: input.allow_signup,
        signup_workspace: workspace,
        signup_role: role.as_str().to_string(),
        token_auth,
    };
    svc.store
        .put_setting(SETTINGS_KEY, &serde_json::to_string(&c).unwrap_or_default())
        .await?;
    svc.store
        .audit(
            &who.workspace,
            None,
            "sso.configured",
            &who.actor().0,
            &json!({"issuer": c.issuer, "client_id": c.client_id, "allow_signup": c.allow_signup}),
        )
        .await?;
    view(svc, who).await
}

/// Turns single sign-on off.
pub async fn remove(svc: &Service, who: &Principal) -> Result<(), AuthError> {
    require_installation_admin(who)?;
    svc.store.delete_setting(SETTINGS_KEY).await?;
    svc.store
        .audit(
            &who.workspace,
            None,
            "sso.removed",
            &who.actor().0,
            &json!({}),
        )
        .await?;
    Ok(())
}

/// The parts of the provider's discovery document keyport uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

async fn get_json(svc: &Service, url: &str, what: &str) -> Result<Value, AuthError> {
    let fail = |m: String| invalid("/issuer", m);
    let req = svc
        .http
        .request_str(reqwest::Method::GET, url)
        .map_err(|d| fail(format!("the {what} address is refused: {d}")))?;
    let resp = req
        .send()
        .await
        .map_err(|e| fail(format!("could not fetch the {what}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(fail(format!(
            "the {what} answered {}",
            resp.status().as_u16()
        )));
    }
    read_json(resp, what).await.map_err(fail)
}

async fn read_json(resp: reqwest::Response, what: &str) -> Result<Value, String> {
    let body = crate::runtime::body_capped(resp, BODY_MAX)
        .await
        .map_err(|e| match e {
            crate::runtime::BodyError::TooLarge => format!("the {what} is larger than 256 KiB"),
            crate::runtime::BodyError::Transport(e) => {
                format!("could not read the {what}: {}", e.without_url())
            }
        })?;
    serde_json::from_slice(&body).map_err(|e| format!("the {what} is not JSON: {e}"))
}

async fn discover(svc: &Service, issuer: &str) -> Result<Discovery, AuthError> {
    let url = url::Url::parse(issuer).map_err(|e| invalid("/issuer", format!("not a URL: {e}")))?;
    if url.scheme() != "https" && !(url.scheme() == "http" && svc.config.allow_loopback) {
        return Err(invalid("/issuer", "the issuer must be an https:// URL"));
    }
    let doc = get_json(
        svc,
        &format!("{issuer}/.well-known/openid-configuration"),
        "discovery document",
    )
    .await?;
    let d: Discovery = serde_json::from_value(doc).map_err(|e| {
        invalid(
            "/issuer",
            format!("the discovery document lacks what sign-in needs: {e}"),
        )
    })?;
    if d.issuer.trim_end_matches('/') != issuer {
        return Err(invalid(
            "/issuer",
            format!(
                "the discovery document names the issuer {:?}, not {issuer:?}",
                d.issuer
            ),
        ));
    }
    Ok(d)
}

/// What is sealed in a flow: the nonce, the PKCE verifier, and the provider's endpoints as
/// discovered at the start (the callback does not discover them again).
#[derive(Serialize, Deserialize)]
struct FlowSecrets {
    nonce: String,
    verifier: String,
    provider: Discovery,
}

fn seal_ctx(state_hash: &str) -> crate::vault::Context<'_> {
    crate::vault::Context {
        workspace: INSTALLATION,
        row: state_hash,
        field: "sso_flow",
    }
}

/// Starts a sign-on: the provider's authorization URL, and the browser-binding cookie value.
pub async fn start(svc: &Service, next: &str) -> Result<(String, String), AuthError> {
    let c = config(svc).await?.ok_or_else(|| {
        AuthError::from(ServiceError::NotFound(
            "single sign-on is not configured on this installation".into(),
        ))
    })?;
    let d = discover(svc, &c.issuer).await?;
    let state = crate::vault::random_hex(24);
    let browser = crate::vault::random_hex(24);
    let secrets = FlowSecrets {
        nonce: crate::vault::random_hex(24),
        verifier: crate::vault::random_hex(48),
        provider: d,
    };
    let state_hash = hash(&state);
    let sealed = svc.vault.seal(
        serde_json::to_string(&secrets)
            .unwrap_or_default()
            .as_bytes(),
        seal_ctx(&state_hash),
    );
    svc.store
        .insert_sso_flow(&SsoFlowRow {
            state_hash: state_hash.clone(),
            browser_hash: hash(&browser),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
            next_path: next.to_string(),
            expires_at: now_ms() + FLOW_TTL_MS,
            consumed_at: None,
        })
        .await?;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        <sha2::Sha256 as sha2::Digest>::digest(secrets.verifier.as_bytes()),
    );
    let mut u = url::Url::parse(&secrets.provider.authorization_endpoint)
        .map_err(|e| invalid("/issuer", format!("the authorization endpoint: {e}")))?;
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &c.client_id)
        .append_pair("redirect_uri", &redirect_uri(svc))
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &secrets.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    Ok((u.to_string(), browser))
}

/// The claims keyport reads from an ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    pub iss: String,
    pub exp: i64,
    pub nonce: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
}

/// What an ID token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// Verifies an ID token against the provider's keys and what the flow expects; the claims, or
/// why not.
pub fn verify_id_token(token: &str, jwks: &Value, want: &Expected<'_>) -> Result<IdClaims, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("not a signed JWT: {e}"))?;
    let alg = header.alg;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(format!("{alg:?} is not accepted for ID tokens"));
    }
    let set: JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| format!("the provider's JWKS: {e}"))?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or("the ID token is signed with a key the provider does not publish")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("the provider's key: {e}"))?;
    let mut v = Validation::new(alg);
    v.set_issuer(&[want.issuer]);
    v.set_audience(&[want.client_id]);
    // `exp` is checked below against the caller's clock.
    v.validate_exp = false;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
            format!("the ID token's issuer is not {}", want.issuer)
        }
        jsonwebtoken::errors::ErrorKind::InvalidAudience => {
            format!("the ID token is not for the client {}", want.client_id)
        }
        jsonwebtoken::errors::ErrorKind::InvalidSignature => {
            "the ID token's signature is not valid".to_string()
        }
        _ => format!("the ID token is not valid: {e}"),
    })?;
    let claims = data.claims;
    if claims.exp + LEEWAY_SECS <= want.now {
        return Err("the ID token has expired".into());
    }
    if claims.nonce.as_deref() != Some(want.nonce) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    Ok(claims)
}

/// Why a sign-on callback failed (shown on the sign-in page; never a token).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SsoFailure(pub String);

/// Completes a sign-on: checks the flow and the browser, exchanges the code, verifies the ID
/// token, finds (or creates) the user, and starts a session: (cookie, session, next path).
pub async fn callback(
    svc: &Service,
    params: &std::collections::HashMap<String, String>,
    browser_cookie: Option<&str>,
) -> Result<(String, Session, String), SsoFailure> {
    let fail = |m: &str| SsoFailure(m.to_string());
    if params.contains_key("error") {
        return Err(fail(
            "The identity provider did not sign you in (it answered with an error). Try again.",
        ));
    }
    let state = params
        .get("state")
        .ok_or_else(|| fail("The sign-in answer has no state; start again."))?;
    let code = params
        .get("code")
        .ok_or_else(|| fail("The sign-in answer has no code; start again."))?;
    let flow = svc
        .store
        .take_sso_flow(&hash(state), now_ms())
        .await
        .map_err(|_| fail("The database failed; try again."))?
        .ok_or_else(|| fail("This sign-in link was used already or has expired; start again."))?;
    if browser_cookie.map(hash).as_deref() != Some(flow.browser_hash.as_str()) {
        return Err(fail(
            "This sign-in was started in another browser; start again here.",
        ));
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&flow.sealed)
        .map_err(|_| fail("The sign-in could not be read; start again."))?;
    let opened = svc
        .vault
        .open(&sealed, seal_ctx(&flow.state_hash))
        .map_err(|_| fail("The sign-in could not be read; start again."))?;
    let secrets: FlowSecrets = serde_json::from_slice(&opened)
        .map_err(|_| fail("The sign-in could not be read; start again."))?;
    let c = config(svc)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| fail("Single sign-on is not configured any more."))?;
    let d = &secrets.provider;
    if d.issuer.trim_end_matches('/') != c.issuer {
        return Err(fail(
            "Single sign-on was set up anew meanwhile; start again.",
        ));
    }
    if let Some(iss) = params.get("iss")
        && iss.trim_end_matches('/') != c.issuer
    {
        return Err(fail("The sign-in answer came from another issuer."));
    }
    let secret = svc
        .open_secret(INSTALLATION, SECRET_OWNER, "client_secret")
        .await
        .ok()
        .flatten()
        .ok_or_else(|| fail("Single sign-on has no client secret; an admin must set it."))?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.clone()),
        ("redirect_uri", redirect_uri(svc)),
        ("code_verifier", secrets.verifier.clone()),
    ];
    let basic = c.token_auth != "client_secret_post";
    let mut req = svc
        .http
        .request_str(reqwest::Method::POST, &d.token_endpoint)
        .map_err(|e| SsoFailure(format!("The token endpoint is refused: {e}")))?;
    if basic {
        req = req.basic_auth(&c.client_id, Some(secret.as_str()));
    } else {
        form.push(("client_id", c.client_id.clone()));
        form.push(("client_secret", secret.to_string()));
    }
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| SsoFailure(format!("The token request failed: {}", e.without_url())))?;
    let status = resp.status();
    let body = read_json(resp, "token response")
        .await
        .map_err(|e| SsoFailure(format!("The token response: {e}")))?;
    if !status.is_success() {
        return Err(SsoFailure(format!(
            "The identity provider refused the sign-in ({}). Start again.",
            body["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let id_token = body["id_token"]
        .as_str()
        .ok_or_else(|| fail("The identity provider sent no ID token."))?;
    let jwks = get_json(svc, &d.jwks_uri, "JWKS")
        .await
        .map_err(|e| SsoFailure(format!("The provider's keys: {e}")))?;
    let claims = verify_id_token(
        id_token,
        &jwks,
        &Expected {
            issuer: &c.issuer,
            client_id: &c.client_id,
            nonce: &secrets.nonce,
            now: now_ms() / 1000,
        },
    )
    .map_err(|e| {
        tracing::warn!(reason = %e, "single sign-on ID token refused");
        SsoFailure(format!("The sign-in was refused: {e}."))
    })?;
    let mut claims = claims;
    if claims.email.is_none()
        && let (Some(endpoint), Some(access)) =
            (&d.userinfo_endpoint, body["access_token"].as_str())
    {
        // Providers that keep the ID token small say the email at the userinfo endpoint.
        let info = userinfo(svc, endpoint, access).await?;
        if info["sub"].as_str() != Some(claims.sub.as_str()) {
            return Err(fail(
                "The identity provider's userinfo is about someone else; sign-in refused.",
            ));
        }
        claims.email = info["email"].as_str().map(str::to_string);
        claims.email_verified = info["email_verified"].as_bool();
        if claims.name.is_none() {
            claims.name = info["name"].as_str().map(str::to_string);
        }
    }
    let user = match_user(svc, &c, &claims).await?;
    let ws = super::people::home_workspace(&svc.store, &user, None)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            fail("Your account is not a member of any workspace yet. Ask an owner to invite you.")
        })?;
    let (cookie, session) = super::people::start_session(svc, Some(&user.id), &ws)
        .await
        .map_err(|e| SsoFailure(e.to_string()))?;
    Ok((cookie, session, flow.next_path))
}

async fn userinfo(svc: &Service, endpoint: &str, access_token: &str) -> Result<Value, SsoFailure> {
    let req = svc
        .http
        .request_str(reqwest::Method::GET, endpoint)
        .map_err(|e| SsoFailure(format!("The userinfo endpoint is refused: {e}")))?;
    let resp = req
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|e| SsoFailure(format!("The userinfo request failed: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(SsoFailure(format!(
            "The identity provider's userinfo answered {}.",
            resp.status().as_u16()
        )));
    }
    read_json(resp, "userinfo")
        .await
        .map_err(|e| SsoFailure(format!("The userinfo: {e}")))
}

/// The user an ID token names: by subject, then by verified email (linking the subject), else a
/// new one when sign-up is allowed.
async fn match_user(
    svc: &Service,
    c: &SsoConfig,
    claims: &IdClaims,
) -> Result<UserRow, SsoFailure> {
    let db = |_| SsoFailure("The database failed; try again.".into());
    let user = match svc
        .store
        .user_by_sso(&c.issuer, &claims.sub)
        .await
        .map_err(db)?
    {
        Some(u) => u,
        None => {
            let email = claims
                .email
                .as_deref()
                .filter(|_| claims.email_verified == Some(true))
                .map(|e| e.trim().to_lowercase());
            let existing = match &email {
                Some(e) => svc.store.user_by_email(e).await.map_err(db)?,
                None => None,
            };
            match (existing, email) {
                (Some(u), _) => {
                    if u.sso_subject.is_some() {
                        return Err(SsoFailure(
                            "This email belongs to an account linked to another identity.".into(),
                        ));
                    }
                    svc.store
                        .link_sso(&u.id, &c.issuer, &claims.sub)
                        .await
                        .map_err(db)?;
                    u
                }
                (None, Some(email)) if c.allow_signup => {
                    let mut u = UserRow::new(
                        super::people::new_user_id(),
                        Some(email.clone()),
                        claims.name.clone().unwrap_or_default(),
                    );
                    u.sso_issuer = Some(c.issuer.clone());
                    u.sso_subject = Some(claims.sub.clone());
                    if !svc.store.insert_user(&u).await.map_err(db)? {
                        return Err(SsoFailure(
                            "An account with this email was just created; sign in again.".into(),
                        ));
                    }
                    svc.store
                        .set_membership(&c.signup_workspace, &u.id, &c.signup_role)
                        .await
                        .map_err(db)?;
                    let _ = svc
                        .store
                        .audit(
                            &c.signup_workspace,
                            None,
                            "user.created",
                            &format!("user:{} <{email}>", u.id),
                            &json!({"user_id": u.id, "email": email, "role": c.signup_role, "via": "sso"}),
                        )
                        .await;
                    u
                }
                (None, Some(_)) => {
                    return Err(SsoFailure(
                        "There is no keyport account for your email. Ask a workspace owner for an invitation.".into(),
                    ));
                }
                (None, None) => {
                    return Err(SsoFailure(
                        "The identity provider did not confirm your email, so keyport cannot tell which account is yours.".into(),
                    ));
                }
            }
        }
    };
    if user.disabled_at.is_some() {
        return Err(SsoFailure(
            "This account is disabled. Ask a workspace owner.".into(),
        ));
    }
    Ok(user)
}
