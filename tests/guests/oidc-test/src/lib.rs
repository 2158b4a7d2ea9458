//! A standard OpenID Connect provider as a connector, for the end-to-end tests against the
//! `oidc-provider` server in `tests/oidc/`. Its URLs use the placeholder origin
//! `https://oidc.keyport.test`, which tests map to the real server with an endpoint override.
use keyport_sdk::{
    Account, CallContext, Classification, Connector, Error, Manifest, Oauth2, ResponseView, Scope,
    export_connector, http,
};
use serde_json::Value;

struct OidcTest;

const ORIGIN: &str = "https://oidc.keyport.test";

impl Connector for OidcTest {
    fn describe() -> Manifest {
        let oauth = Oauth2::new(&format!("{ORIGIN}/auth"), &format!("{ORIGIN}/token"))
            .revoke_url(&format!("{ORIGIN}/token/revocation"))
            .issuer(ORIGIN, true)
            .authorize_param("prompt", "consent");
        Manifest::oauth2(
            "oidc-test",
            "OIDC test provider",
            "oidc-provider, for end-to-end tests.",
            oauth,
        )
        .api_base_url(&format!("{ORIGIN}/"))
        .egress_host("oidc.keyport.test")
        .classifies_responses()
        .scope(Scope::required("openid", "Sign in"))
        .scope(Scope::required(
            "offline_access",
            "Stay connected (refresh tokens)",
        ))
        .scope(Scope::optional("profile", "Your name"))
        .scope(Scope::optional("email", "Your email address"))
        .config_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "label": {"type": "string", "default": "tests", "maxLength": 20},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}
            }
        }))
    }

    fn lookup_account(_ctx: &CallContext) -> Result<Account, Error> {
        let me: Value = http::get("me").send()?.error_for_status()?.json()?;
        let sub = me["sub"]
            .as_str()
            .ok_or_else(|| Error::provider("userinfo has no sub"))?;
        let mut account = Account::new(sub, me["name"].as_str().unwrap_or(sub));
        if let Some(email) = me["email"].as_str() {
            account = account.email(email);
        }
        Ok(account)
    }

    /// Slack-style answers: HTTP 200 with `{"ok": false, "error": "invalid_auth"}` is an
    /// authentication failure (the proxy refreshes and retries once).
    fn classify_response(response: &ResponseView) -> Option<Classification> {
        if response.status != 200 {
            return None;
        }
        let body: Value = response.json()?;
        match (body["ok"].as_bool(), body["error"].as_str()) {
            (Some(false), Some(code @ ("invalid_auth" | "token_expired"))) => Some(
                Classification::Failure(Error::unauthorized(format!("rejected ({code})")).into()),
            ),
            (Some(false), Some("token_revoked")) => Some(Classification::Failure(
                Error::revoked("the authorization was revoked").into(),
            )),
            _ => None,
        }
    }
}

export_connector!(OidcTest);
