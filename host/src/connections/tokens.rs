//! Token responses in, sealed tokens out: the connector hook or the standard parser, and the
//! write-back with its non-secret facts.

use super::*;

use crate::model::lifetime_ms;

impl Service {
    /// Reads a token response through the connector hook, else the standard way.
    pub(super) async fn read_tokens(
        &self,
        connector: &crate::runtime::Connector,
        o: &Oauth2,
        status: u16,
        body: Vec<u8>,
    ) -> std::result::Result<TokenSet, OAuthError> {
        match connector.parse_token_response(status, body.clone()).await {
            Ok(Some(Ok(t))) if !t.access_token.is_empty() => Ok(t),
            Ok(Some(Ok(_))) => Err(OAuthError::Provider(
                "the token response has no access token".into(),
            )),
            Ok(Some(Err(e))) => Err(OAuthError::from_connector(e)),
            Ok(None) => oauth::parse_token_response(status, &body, o),
            Err(e) => Err(OAuthError::Provider(format!(
                "the connector could not read the token response: {e}"
            ))),
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
