//! Token responses in, sealed tokens out: the connector hook or the standard parser, and the
//! write-back with its non-secret facts.

use super::*;

use crate::model::lifetime_ms;

impl Service {
    /// Reads a token response through the connector hook, else the standard way. Nothing that
    /// leaves here outside the token fields carries a token: every token value of the response
    /// (and the tokens read) is scrubbed from the metadata, scopes and error messages, whatever
    /// the hook returned.
    pub(super) async fn read_tokens(
        &self,
        connector: &crate::runtime::Connector,
        o: &Oauth2,
        status: u16,
        body: Vec<u8>,
    ) -> std::result::Result<TokenSet, OAuthError> {
        let mut secrets = token_values(&body);
        let result = match connector.parse_token_response(status, body.clone()).await {
            Ok(Some(Ok(t))) if !t.access_token.is_empty() => Ok(t),
            Ok(Some(Ok(_))) => Err(OAuthError::Provider(
                "the token response has no access token".into(),
            )),
            Ok(Some(Err(e))) => Err(OAuthError::from_connector(e)),
            Ok(None) => oauth::parse_token_response(status, &body, o),
            Err(e) => Err(OAuthError::Provider(format!(
                "the connector could not read the token response: {e}"
            ))),
        };
        match result {
            Ok(mut t) => {
                secrets.push(t.access_token.clone());
                secrets.extend(t.refresh_token.clone());
                t.metadata = scrub_json(&t.metadata, &secrets);
                t.scopes = t
                    .scopes
                    .map(|s| s.iter().map(|x| scrub(x, &secrets)).collect());
                t.token_type = t.token_type.map(|x| scrub(&x, &secrets));
                Ok(t)
            }
            Err(e) => Err(scrub_error(e, &secrets)),
        }
    }

    /// Seals and stores a token set; keeps the old refresh token when the response has none.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn save_tokens(
        &self,
        ws: &str,
        conn: &ConnectionRow,
        t: &TokenSet,
        requested: &[String],
        replace_metadata: bool,
        fence: Option<(&str, i64)>,
        audit: Option<(&str, &Actor, Value)>,
    ) -> Result<Option<i64>> {
        self.forget(&conn.id);
        let now = now_ms();
        let access = self.seal_field(ws, &conn.id, "access_token", &t.access_token);
        let refresh = t
            .refresh_token
            .as_ref()
            .map(|r| self.seal_field(ws, &conn.id, "refresh_token", r));
        let granted = t.scopes.clone();
        let narrowed = granted
            .as_ref()
            .is_some_and(|g| requested.iter().any(|r| !g.contains(r)));
        let mut metadata: serde_json::Map<String, Value> = if replace_metadata {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&conn.metadata).unwrap_or_default()
        };
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&t.metadata) {
            metadata.extend(m);
        }
        // Refresh before expiry by max(5 min, 20 % of the lifetime), at most half of it, minus up
        // to 10 % jitter so tokens issued together do not come due together.
        let next_refresh_at = t.expires_in.map(|secs| {
            let lifetime = lifetime_ms(secs);
            let margin = (5 * 60 * 1000).max(lifetime / 5).min(lifetime / 2);
            let jitter = (rand::random::<u64>() % (margin as u64 / 10 + 1)) as i64;
            now + lifetime - margin - jitter
        });
        let meta = TokenMeta {
            next_refresh_at,
            next_probe_at: t
                .expires_in
                .is_none()
                .then(|| now + self.config.probe_interval_ms),
            new_grant: replace_metadata,
            audit: audit.map(|(action, actor, detail)| {
                (action.to_string(), actor.0.clone(), detail.to_string())
            }),
            expires_at: t.expires_in.map(|s| now + lifetime_ms(s)),
            refresh_token_expires_at: t.refresh_token_expires_in.map(|s| now + lifetime_ms(s)),
            granted_scopes: granted.map(|g| serde_json::to_string(&g).unwrap_or_default()),
            scope_narrowed: narrowed,
            metadata: Value::Object(metadata).to_string(),
        };
        Ok(self
            .store
            .store_tokens(ws, &conn.id, &access, refresh.as_ref(), &meta, fence)
            .await?)
    }
}

/// Shortest value treated as a token when scrubbing (shorter strings are too likely to be
/// ordinary words).
const MIN_SECRET_LEN: usize = 8;

/// The string values of a token response's fields named like tokens (`access_token`,
/// `refresh_token`, `id_token`, `authed_user.access_token`, …), at any depth.
fn token_values(body: &[u8]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) if k.to_ascii_lowercase().contains("token") => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        walk(&v, &mut out);
    }
    out
}

/// `text` with every secret in it replaced by `[redacted]`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

/// A JSON document (the metadata) with every string scrubbed; not JSON: scrubbed as text.
fn scrub_json(text: &str, secrets: &[String]) -> String {
    fn walk(v: &mut Value, secrets: &[String]) {
        match v {
            Value::String(s) => *s = scrub(s, secrets),
            Value::Array(a) => a.iter_mut().for_each(|v| walk(v, secrets)),
            Value::Object(m) => m.values_mut().for_each(|v| walk(v, secrets)),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v, secrets);
            v.to_string()
        }
        Err(_) => scrub(text, secrets),
    }
}

fn scrub_error(e: OAuthError, secrets: &[String]) -> OAuthError {
    match e {
        OAuthError::Definitive { code, description } => OAuthError::Definitive {
            code: scrub(&code, secrets),
            description: scrub(&description, secrets),
        },
        OAuthError::Transient(m, retry) => OAuthError::Transient(scrub(&m, secrets), retry),
        OAuthError::InDoubt(m) => OAuthError::InDoubt(scrub(&m, secrets)),
        OAuthError::Provider(m) => OAuthError::Provider(scrub(&m, secrets)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_found_at_any_depth_and_scrubbed_from_everything_else() {
        let body = br#"{"ok":true,"access_token":"xoxb-secret-1","authed_user":{"access_token":"xoxp-secret-2","id":"U1"},"refresh_token":"rt-secret-3","team":{"name":"T-Rex"}}"#;
        let secrets = token_values(body);
        assert_eq!(secrets, ["xoxb-secret-1", "xoxp-secret-2", "rt-secret-3"]);
        let meta = r#"{"copy":"xoxb-secret-1","nested":{"a":["x rt-secret-3 y"]},"team":"T-Rex"}"#;
        let clean = scrub_json(meta, &secrets);
        assert!(!clean.contains("secret"), "{clean}");
        assert!(clean.contains("T-Rex"));
        assert_eq!(
            scrub("cannot use xoxp-secret-2 here", &secrets),
            "cannot use [redacted] here"
        );
        assert_eq!(
            scrub("short a b", &["a".into()]),
            "short a b",
            "too short to scrub"
        );
    }
}
