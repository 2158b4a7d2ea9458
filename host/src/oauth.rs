//! OAuth 2 client mechanics: authorize URLs, code exchange, refresh, revocation, and reading
//! token responses.
//!
//! | concern | rule (SECURITY.md) |
//! |---|---|
//! | state | 32 random bytes (base64url), only its SHA-256 is stored (O1) |
//! | PKCE | S256 whenever the connector allows it; never `plain` (O4) |
//! | redirect URI | from configuration, identical in authorize and token requests (O5) |
//! | server-to-server calls | no redirects, connect and total timeouts, private/loopback targets refused outside test mode (O10) |
//! | token responses | non-empty access token; `token_type` case-insensitive; `expires_in` number or numeric string; granted scope recorded, a narrower grant flagged (O12) |
//! | 200 with an error | `error` in a 2xx body is an error (O13); connector hooks handle provider bodies (Slack `ok:false`) |
//! | scopes | the connector's separator both ways (O18) |
//!
//! Requests are built by hand rather than through `oauth2`'s token client: providers need JSON
//! bodies, numeric-string `expires_in`, nested token paths and connector hooks that a typed
//! RFC 6749 response cannot express. The `oauth2` crate still generates the state and PKCE pair.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::runtime::{ClientAuth, ConnectorError, ErrorKind, Oauth2, Secret, TokenSet};
use crate::runtime::{error_chain, template};

/// A failed OAuth exchange. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The grant is dead (`invalid_grant`, revoked): reconnect.
    #[error("the provider rejected the authorization ({code}): {description}")]
    Definitive {
        /// The provider's error code.
        code: String,
        /// Its description, if any.
        description: String,
    },
    /// A transient failure (5xx, 429, network): retry later.
    #[error("the provider is unavailable: {0}")]
    Transient(String, Option<u64>),
    /// The request was sent and no answer arrived (a timeout after sending, a broken answer):
    /// the provider may have acted on it. Retry later, like a transient failure.
    #[error("the provider did not answer: {0}")]
    InDoubt(String),
    /// Any other provider or configuration error.
    #[error("{0}")]
    Provider(String),
}

impl OAuthError {
    /// From a connector hook's error.
    pub fn from_connector(e: ConnectorError) -> Self {
        match e.kind {
            ErrorKind::Revoked => OAuthError::Definitive {
                code: "revoked".into(),
                description: e.message,
            },
            ErrorKind::Unavailable | ErrorKind::RateLimited => {
                OAuthError::Transient(e.message, e.retry_after.map(u64::from))
            }
            _ => OAuthError::Provider(e.message),
        }
    }
}

/// A fresh `state`: 32 random bytes, base64url.
pub fn new_state() -> String {
    oauth2::CsrfToken::new_random_len(32).secret().clone()
}

/// A PKCE S256 pair: (challenge, verifier).
pub fn new_pkce() -> (String, String) {
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256_len(32);
    assert_eq!(challenge.method().as_str(), "S256");
    (challenge.as_str().to_string(), verifier.secret().clone())
}

/// SHA-256 hex of a value (state, launch token, browser binding).
pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Fills placeholders in an endpoint URL from the connection config (see
/// [`crate::runtime::template`]: a value never changes the URL's structure).
pub fn fill_template(template: &str, config: &Value) -> Result<String, String> {
    template::fill(
        template,
        &template::Vars::config(config),
        template::Use::Url,
    )
}

/// Fills a parameter value (`authorize_params`, `token_params`): `None` when it fills to empty,
/// so the parameter is left out.
fn fill_param(template: &str, config: &Value) -> Result<Option<String>, String> {
    template::fill(
        template,
        &template::Vars::config(config),
        template::Use::Param,
    )
    .map(|v| (!v.is_empty()).then_some(v))
}

/// Parameters keyport sets itself and a connector's extra parameters cannot replace.
const FIXED_AUTHORIZE_PARAMS: [&str; 5] = [
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// A token, refresh or revocation URL whose host comes from the connection's settings receives
/// the client secret: the filled host must be covered by one of the connector's fixed egress
/// patterns (`login_host` may be `acme.my.salesforce.com` under `*.salesforce.com`, never a host
/// of the user's choosing). Hosts written out in full need no check.
pub fn secret_endpoint_host_allowed(
    template: &str,
    filled: &str,
    egress: &[String],
) -> Result<(), String> {
    if !template::host_is_templated(template) {
        return Ok(());
    }
    let host = url::Url::parse(filled)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let fixed: Vec<String> = egress
        .iter()
        .filter(|h| !h.contains('{'))
        .cloned()
        .collect();
    if crate::runtime::egress::host_allowed(&host, &fixed) {
        Ok(())
    } else {
        Err(format!(
            "the token endpoint's host {host} is not among the provider's fixed egress hosts ({}); it would receive the client secret",
            if fixed.is_empty() {
                "none".to_string()
            } else {
                fixed.join(", ")
            }
        ))
    }
}

/// Rewrites a URL by the first matching `(from-prefix, to-prefix)` override.
pub fn apply_overrides(url: &str, overrides: &BTreeMap<String, String>) -> String {
    for (from, to) in overrides {
        if let Some(rest) = url.strip_prefix(from.as_str()) {
            return format!("{to}{rest}");
        }
    }
    url.to_string()
}

/// Everything needed to build an authorize URL.
pub struct AuthorizeParams<'a> {
    pub oauth: &'a Oauth2,
    pub config: &'a Value,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub code_challenge: Option<&'a str>,
    /// (scope name, authorize parameter) pairs.
    pub scopes: &'a [(String, String)],
    pub overrides: &'a BTreeMap<String, String>,
}

/// The provider's authorize URL. A connector's extra parameter named like a standard one
/// (`response_type`, `scope`) replaces it, except those keyport must set itself (client id,
/// redirect URI, state, PKCE); one that fills to empty is left out. A fragment in the
/// authorize URL stays at the end.
pub fn authorize_url(p: &AuthorizeParams<'_>) -> Result<String, String> {
    let base = apply_overrides(
        &fill_template(&p.oauth.authorize_url, p.config)?,
        p.overrides,
    );
    let mut url = url::Url::parse(&base).map_err(|e| format!("invalid authorize URL: {e}"))?;
    let mut extra = Vec::new();
    for (k, v) in &p.oauth.authorize_params {
        if FIXED_AUTHORIZE_PARAMS.contains(&k.as_str()) {
            return Err(format!(
                "the authorize parameter {k} is set by keyport and cannot be replaced"
            ));
        }
        extra.push((k.as_str(), fill_param(v, p.config)?));
    }
    let replaced = |name: &str| extra.iter().any(|(k, _)| *k == name);
    {
        let mut q = url.query_pairs_mut();
        if !replaced("response_type") {
            q.append_pair("response_type", "code");
        }
        q.append_pair("client_id", p.client_id);
        q.append_pair("redirect_uri", p.redirect_uri);
        q.append_pair("state", p.state);
        let mut by_param: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (scope, param) in p.scopes {
            by_param
                .entry(param.as_str())
                .or_default()
                .push(scope.as_str());
        }
        for (param, scopes) in by_param {
            if !replaced(param) {
                q.append_pair(param, &scopes.join(&p.oauth.scope_separator));
            }
        }
        if let Some(challenge) = p.code_challenge {
            q.append_pair("code_challenge", challenge);
            q.append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &extra {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    Ok(url.to_string())
}

/// Largest token-endpoint answer read; a larger one is refused as it streams in.
const TOKEN_RESPONSE_MAX: usize = 1 << 20;

/// The token endpoint call: code exchange, refresh, or revocation.
pub struct TokenCall<'a> {
    pub http: &'a crate::runtime::Outbound,
    pub oauth: &'a Oauth2,
    pub config: &'a Value,
    pub client_id: &'a str,
    pub client_secret: Option<&'a Secret>,
    pub overrides: &'a BTreeMap<String, String>,
    /// The connector's egress patterns: a token endpoint whose host is filled from the config
    /// must land on one of the fixed ones (it receives the client secret and grants).
    pub egress: &'a [String],
}

impl TokenCall<'_> {
    fn url(&self, template: &str) -> Result<String, OAuthError> {
        let filled = fill_template(template, self.config).map_err(OAuthError::Provider)?;
        secret_endpoint_host_allowed(template, &filled, self.egress)
            .map_err(OAuthError::Provider)?;
        Ok(apply_overrides(&filled, self.overrides))
    }

    /// Sends a token-endpoint request and returns (status, body).
    async fn post(
        &self,
        url: &str,
        mut params: Vec<(String, String)>,
        json_body: bool,
    ) -> Result<(u16, Vec<u8>), OAuthError> {
        let mut req = self
            .http
            .request_str(reqwest::Method::POST, url)
            .map_err(|d| OAuthError::Provider(format!("the token endpoint is refused: {d}")))?
            .header("accept", "application/json");
        match self.oauth.client_auth {
            ClientAuth::Basic => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let secret = self
                    .client_secret
                    .map(|s| enc(s.expose()))
                    .unwrap_or_default();
                let creds = format!("{}:{secret}", enc(self.client_id));
                let mut v = reqwest::header::HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(creds)
                ))
                .map_err(|_| {
                    OAuthError::Provider("the client credentials cannot be sent in a header".into())
                })?;
                v.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, v);
            }
            ClientAuth::Body => {
                params.push(("client_id".into(), self.client_id.into()));
                if let Some(s) = self.client_secret {
                    params.push(("client_secret".into(), s.expose().into()));
                }
            }
        }
        req = if json_body {
            let map: serde_json::Map<String, Value> = params
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            req.json(&map)
        } else {
            req.form(&params)
        };
        let resp = req.send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_connect() {
                OAuthError::Transient(
                    format!("could not reach the token endpoint: {}", error_chain(&e)),
                    None,
                )
            } else if e.is_builder() {
                OAuthError::Provider(format!(
                    "the token request could not be built: {}",
                    error_chain(&e)
                ))
            } else {
                OAuthError::InDoubt(format!(
                    "no answer from the token endpoint: {}",
                    error_chain(&e)
                ))
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if (300..400).contains(&status) {
            return Err(OAuthError::Provider(format!(
                "the token endpoint answered with a redirect (HTTP {status}); keyport does not follow redirects on token requests — check the token URL"
            )));
        }
        let body = crate::runtime::body_capped(resp, TOKEN_RESPONSE_MAX)
            .await
            .map_err(|e| match e {
                crate::runtime::BodyError::TooLarge => {
                    OAuthError::Provider("the token endpoint's answer is larger than 1 MiB".into())
                }
                crate::runtime::BodyError::Transport(e) => {
                    OAuthError::InDoubt(error_chain(&e.without_url()))
                }
            })?;
        if status == 429 || status >= 500 {
            return Err(OAuthError::Transient(
                format!("the token endpoint answered HTTP {status}"),
                retry_after,
            ));
        }
        Ok((status, body))
    }

    /// Sends a grant to `template` with the base parameters, then the connector's extra ones.
    async fn grant(
        &self,
        template: &str,
        mut params: Vec<(String, String)>,
        extra: &[(String, String)],
    ) -> Result<(u16, Vec<u8>), OAuthError> {
        let url = self.url(template)?;
        for (k, v) in extra {
            if let Some(v) = fill_param(v, self.config).map_err(OAuthError::Provider)? {
                params.push((k.clone(), v));
            }
        }
        let json = matches!(self.oauth.token_body, crate::runtime::TokenBody::Json);
        self.post(&url, params, json).await
    }

    /// Exchanges an authorization code.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<(u16, Vec<u8>), OAuthError> {
        let mut params = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), redirect_uri.to_string()),
        ];
        if let Some(v) = verifier {
            params.push(("code_verifier".into(), v.into()));
        }
        self.grant(&self.oauth.token_url, params, &self.oauth.token_params)
            .await
    }

    /// Uses a refresh token (at the refresh URL when the connector has one).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        scopes: Option<&str>,
    ) -> Result<(u16, Vec<u8>), OAuthError> {
        let mut params = vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), refresh_token.to_string()),
        ];
        if let Some(s) = scopes {
            params.push(("scope".into(), s.into()));
        }
        let url = self
            .oauth
            .refresh_url
            .as_deref()
            .unwrap_or(&self.oauth.token_url);
        self.grant(url, params, &self.oauth.refresh_params).await
    }

    /// RFC 7009 revocation; Ok when the provider accepted it (2xx).
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<(), OAuthError> {
        let Some(template) = &self.oauth.revoke_url else {
            return Ok(());
        };
        let url = self.url(template)?;
        let params = vec![
            ("token".to_string(), token.to_string()),
            ("token_type_hint".to_string(), hint.to_string()),
        ];
        let (status, body) = self.post(&url, params, false).await?;
        if !(200..300).contains(&status) {
            return Err(OAuthError::Provider(format!(
                "the revocation endpoint answered HTTP {status}"
            )));
        }
        // 200 with an error inside (O13).
        if let Ok(v) = serde_json::from_slice::<Value>(&body)
            && (v.get("ok") == Some(&Value::Bool(false))
                || v.get("error").is_some_and(|e| e.is_string()))
        {
            let code = v.get("error").and_then(Value::as_str).unwrap_or("error");
            return Err(OAuthError::Provider(format!(
                "the revocation endpoint answered with an error ({code})"
            )));
        }
        Ok(())
    }
}

/// Follows a dotted path (`authed_user.access_token`) in a JSON value.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn first<'a>(v: &'a Value, paths: &[String], default: &str) -> Option<&'a Value> {
    if paths.is_empty() {
        return at(v, default);
    }
    paths.iter().find_map(|p| at(v, p))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a standard token response (RFC 6749 §5.1, with the connector's token paths).
pub fn parse_token_response(
    status: u16,
    body: &[u8],
    oauth: &Oauth2,
) -> Result<TokenSet, OAuthError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        OAuthError::Provider(format!(
            "the token endpoint answered HTTP {status} with a body that is not JSON"
        ))
    })?;
    if let Some(code) = v.get("error").and_then(Value::as_str) {
        let description = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return Err(match code {
            "invalid_grant" | "unauthorized_client" | "access_denied" => OAuthError::Definitive {
                code: code.to_string(),
                description,
            },
            "temporarily_unavailable" | "server_error" | "slow_down" => {
                OAuthError::Transient(format!("{code}: {description}"), None)
            }
            _ => OAuthError::Provider(format!(
                "the provider answered {code}{}",
                if description.is_empty() {
                    String::new()
                } else {
                    format!(": {description}")
                }
            )),
        });
    }
    if !(200..300).contains(&status) {
        // HubSpot's older shape: {"status": "BAD_REFRESH_TOKEN", "message": "…"}
        let code = v.get("status").and_then(Value::as_str).unwrap_or("error");
        if code == "BAD_REFRESH_TOKEN" || code == "BAD_AUTH_CODE" {
            return Err(OAuthError::Definitive {
                code: code.into(),
                description: String::new(),
            });
        }
        return Err(OAuthError::Provider(format!(
            "the token endpoint answered HTTP {status} ({code})"
        )));
    }
    let p = &oauth.token_paths;
    let access = first(&v, &p.access_token, "access_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError::Provider("the token response has no access_token".into()))?;
    let token_type = first(&v, &p.token_type, "token_type")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(t) = &token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(OAuthError::Provider(format!(
            "the token type is {t:?}; keyport supports Bearer tokens (a connector hook can read other kinds)"
        )));
    }
    let scopes = first(&v, &p.scope, "scope")
        .or_else(|| v.get("scopes"))
        .and_then(|s| match s {
            Value::String(s) => Some(split_scopes(s, &oauth.scope_separator)),
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        });
    let mut metadata = serde_json::Map::new();
    for (name, path) in &p.metadata {
        if let Some(x) = at(&v, path) {
            metadata.insert(name.clone(), x.clone());
        }
    }
    Ok(TokenSet {
        access_token: access.to_string(),
        token_type,
        refresh_token: first(&v, &p.refresh_token, "refresh_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        expires_in: first(&v, &p.expires_in, "expires_in").and_then(as_u64),
        refresh_token_expires_in: first(
            &v,
            &p.refresh_token_expires_in,
            "refresh_token_expires_in",
        )
        .and_then(as_u64),
        scopes,
        metadata: Value::Object(metadata).to_string(),
    })
}

/// Splits a scope string by the provider's separator (spaces also separate, per RFC 6749).
pub fn split_scopes(s: &str, separator: &str) -> Vec<String> {
    s.split(separator)
        .flat_map(|p| p.split(' '))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oauth() -> Oauth2 {
        crate::runtime::standard_oauth2()
    }

    #[test]
    fn o12_token_responses_are_validated_leniently() {
        let o = oauth();
        let t = parse_token_response(
            200,
            br#"{"access_token":"a","token_type":"BEARER","expires_in":"3600","scope":"x y"}"#,
            &o,
        )
        .unwrap();
        assert_eq!(t.expires_in, Some(3600), "numeric strings are accepted");
        assert_eq!(t.scopes.unwrap(), vec!["x", "y"]);
        let t = parse_token_response(
            200,
            br#"{"access_token":"a","token_type":"bearer","expires_in":1800,"scopes":["a","b"]}"#,
            &o,
        )
        .unwrap();
        assert_eq!(
            t.scopes.unwrap(),
            vec!["a", "b"],
            "arrays of scopes (HubSpot)"
        );
        assert!(
            parse_token_response(200, br#"{"access_token":"","token_type":"bearer"}"#, &o).is_err()
        );
        assert!(parse_token_response(200, br#"{"token_type":"bearer"}"#, &o).is_err());
        assert!(
            parse_token_response(200, br#"{"access_token":"a","token_type":"mac"}"#, &o).is_err()
        );
        assert!(parse_token_response(200, b"<html>", &o).is_err());
    }

    #[test]
    fn o13_errors_inside_a_200_are_errors() {
        let o = oauth();
        let e = parse_token_response(
            200,
            br#"{"error":"invalid_grant","error_description":"expired"}"#,
            &o,
        )
        .unwrap_err();
        assert!(
            matches!(e, OAuthError::Definitive { ref code, .. } if code == "invalid_grant"),
            "{e:?}"
        );
    }

    #[test]
    fn o18_scopes_use_the_provider_separator() {
        assert_eq!(split_scopes("a,b", ","), vec!["a", "b"]);
        assert_eq!(split_scopes("a+b", "+"), vec!["a", "b"]);
        let mut o = oauth();
        o.scope_separator = ",".into();
        let url = authorize_url(&AuthorizeParams {
            oauth: &o,
            config: &json!({}),
            client_id: "c",
            redirect_uri: "https://k/cb",
            state: "s",
            code_challenge: None,
            scopes: &[
                ("a".into(), "scope".into()),
                ("b".into(), "scope".into()),
                ("u".into(), "user_scope".into()),
            ],
            overrides: &BTreeMap::new(),
        })
        .unwrap();
        let q: BTreeMap<_, _> = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["scope"], "a,b");
        assert_eq!(q["user_scope"], "u");
    }

    #[test]
    fn templates_fill_from_config_and_refuse_injection() {
        let c = json!({"subdomain": "acme", "evil": "x.com/#"});
        assert_eq!(
            fill_template("https://{subdomain}.example.com/t", &c).unwrap(),
            "https://acme.example.com/t"
        );
        assert!(fill_template("https://{evil}.example.com/", &c).is_err());
        assert!(
            fill_template("https://{missing}.example.com/", &c)
                .unwrap_err()
                .contains("required")
        );
    }

    #[test]
    fn token_endpoints_with_hosts_from_settings_stay_on_fixed_egress_hosts() {
        let egress = vec!["*.salesforce.com".to_string(), "{hostname}".to_string()];
        let t = "https://{login_host|'login.salesforce.com'}/services/oauth2/token";
        for (filled, ok) in [
            ("https://login.salesforce.com/services/oauth2/token", true),
            ("https://acme.my.salesforce.com/services/oauth2/token", true),
            ("https://attacker.example/services/oauth2/token", false),
            ("https://salesforce.com.attacker.example/x", false),
        ] {
            assert_eq!(
                secret_endpoint_host_allowed(t, filled, &egress).is_ok(),
                ok,
                "{filled}"
            );
        }
        // A templated egress pattern does not vouch for a token endpoint.
        assert!(
            secret_endpoint_host_allowed(
                "https://{hostname}/oauth/token",
                "https://gitlab.example/oauth/token",
                &egress
            )
            .is_err()
        );
        // Written out in full, or with placeholders only in the path: no check.
        assert!(
            secret_endpoint_host_allowed("https://a.example/t", "https://a.example/t", &[]).is_ok()
        );
        assert!(
            secret_endpoint_host_allowed(
                "https://login.microsoftonline.com/{tenant|'common'}/oauth2/v2.0/token",
                "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn pkce_and_state_are_strong() {
        let s = new_state();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&s)
                .unwrap()
                .len(),
            32
        );
        let (challenge, verifier) = new_pkce();
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, expected, "S256");
    }
}
