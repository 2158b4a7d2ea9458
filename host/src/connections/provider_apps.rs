//! Provider apps: a workspace's OAuth client for a connector (client id, sealed secret, chosen
//! scopes, admin endpoint overrides), read through a short cache.

use super::*;

/// `PUT /provider-apps/{connector}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderAppInput {
    #[serde(default)]
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// URL prefix rewrites (admin only).
    pub endpoint_overrides: Option<BTreeMap<String, String>>,
    /// A connection activates only when the provider account's email equals its owner's
    /// (left out: unchanged; default off).
    pub require_account_email_match: Option<bool>,
}

pub(super) type CachedApp = (ProviderAppRow, Option<Secret>, BTreeMap<String, String>);

/// How long a provider app read stays cached.
pub(super) const APP_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) fn app_owner(ws: &str, connector: &str) -> String {
    format!("app:{ws}:{connector}")
}

impl Service {
    pub(super) fn oauth_of<'a>(&self, m: &'a crate::runtime::Manifest) -> Result<&'a Oauth2> {
        match &m.auth {
            AuthScheme::Oauth2(o) => Ok(o),
            AuthScheme::ApiKey(_) => Err(Error::BadRequest(format!(
                "{} uses API keys, not OAuth: create the connection with POST /api/v1/connections {{connector, api_key}}",
                m.display_name
            ))),
        }
    }

    pub(super) async fn app(
        &self,
        ws: &str,
        connector: &str,
    ) -> Result<(ProviderAppRow, Option<Secret>, BTreeMap<String, String>)> {
        // A short-lived cache: refreshes and proxied calls read the app on every use. Changes in
        // this process clear it at once; other replicas' changes show within APP_CACHE_TTL.
        let key = (ws.to_string(), connector.to_string());
        if let Some((at, cached)) = self
            .app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < APP_CACHE_TTL
        {
            return Ok(cached.clone());
        }
        let loaded = self.load_app(ws, connector).await?;
        self.app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (std::time::Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    pub(super) async fn load_app(
        &self,
        ws: &str,
        connector: &str,
    ) -> Result<(ProviderAppRow, Option<Secret>, BTreeMap<String, String>)> {
        let app = self.store.provider_app(ws, connector).await?.ok_or_else(|| {
            Error::BadRequest(format!(
                "no OAuth app is configured for {connector} in this workspace; set its client id and secret with PUT /api/v1/provider-apps/{connector}"
            ))
        })?;
        let secret = self
            .open_secret(ws, &app_owner(ws, connector), "client_secret")
            .await?
            .map(|s| Secret::new(s.as_str()));
        let overrides = serde_json::from_str(&app.endpoint_overrides).unwrap_or_default();
        Ok((app, secret, overrides))
    }

    /// Sets a workspace's provider app for a connector.
    pub async fn put_provider_app(
        &self,
        who: &Principal,
        connector: &str,
        input: ProviderAppInput,
    ) -> Result<Value> {
        who.may_administer(true, "setting a provider app")?;
        let (ws, actor, admin) = (who.workspace.as_str(), &who.actor(), who.installation_admin);
        self.app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let entry = self.connector(connector)?;
        let is_oauth = matches!(entry.connector.manifest().auth, AuthScheme::Oauth2(_));
        if !is_oauth && input.client_secret.is_some() {
            return Err(Error::BadRequest(format!(
                "{connector} uses API keys: it has no client secret; set only endpoint_overrides"
            )));
        }
        if is_oauth && input.client_id.trim().is_empty() {
            return Err(Error::Invalid {
                message: "client_id must not be empty".into(),
                fields: vec![("/client_id".into(), "required".into())],
            });
        }
        // Any value, an empty map included (it would wipe the admin's overrides).
        if input.endpoint_overrides.is_some() && !admin {
            return Err(Error::BadRequest(
                "endpoint overrides can only be set with the admin token".into(),
            ));
        }
        if let Some(o) = &input.endpoint_overrides {
            for (from, to) in o {
                for u in [from, to] {
                    let parsed = url::Url::parse(u).map_err(|_| Error::Invalid {
                        message: format!("endpoint override {u:?} is not a URL"),
                        fields: vec![(
                            "/endpoint_overrides".into(),
                            "must map URL prefixes to URL prefixes".into(),
                        )],
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(Error::BadRequest(format!(
                            "endpoint override {u:?} must be http(s)"
                        )));
                    }
                }
            }
        }
        let known: Vec<&str> = entry
            .connector
            .manifest()
            .scopes
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        if let Some(scopes) = &input.scopes
            && let Some(bad) = scopes.iter().find(|s| !known.contains(&s.as_str()))
        {
            return Err(Error::Invalid {
                message: format!(
                    "{bad:?} is not a scope of {connector}; known scopes: {}",
                    known.join(", ")
                ),
                fields: vec![("/scopes".into(), format!("unknown scope {bad}"))],
            });
        }
        let existing = self.store.provider_app(ws, connector).await?;
        let now = now_ms();
        let row = ProviderAppRow {
            workspace_id: ws.into(),
            connector_id: connector.into(),
            client_id: input.client_id.trim().into(),
            scopes: serde_json::to_string(&input.scopes.unwrap_or_default()).unwrap_or_default(),
            endpoint_overrides: match (&input.endpoint_overrides, &existing) {
                (Some(o), _) => serde_json::to_string(o).unwrap_or_default(),
                (None, Some(e)) => e.endpoint_overrides.clone(),
                (None, None) => "{}".into(),
            },
            created_at: now,
            updated_at: now,
            require_account_email_match: match (input.require_account_email_match, &existing) {
                (Some(b), _) => i64::from(b),
                (None, Some(e)) => e.require_account_email_match,
                (None, None) => 0,
            },
        };
        self.store.upsert_provider_app(&row).await?;
        if let Some(secret) = input.client_secret.filter(|s| !s.is_empty()) {
            let owner = app_owner(ws, connector);
            let sealed = self.seal_field(ws, &owner, "client_secret", &secret);
            self.store.put_secret(&owner, ws, &sealed).await?;
        }
        self.audit(
            ws,
            None,
            "provider_app.updated",
            actor,
            json!({"connector": connector}),
        )
        .await;
        self.provider_app_view(ws, connector).await
    }

    /// A provider app's view (never the secret).
    pub async fn provider_app_view(&self, ws: &str, connector: &str) -> Result<Value> {
        let app = self
            .store
            .provider_app(ws, connector)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("no provider app for {connector} in this workspace"))
            })?;
        let has_secret = self
            .store
            .secret(ws, &app_owner(ws, connector), "client_secret")
            .await?
            .is_some();
        Ok(json!({
            "connector": app.connector_id,
            "client_id": app.client_id,
            "client_secret_set": has_secret,
            "scopes": serde_json::from_str::<Value>(&app.scopes).unwrap_or(Value::Null),
            "endpoint_overrides": serde_json::from_str::<Value>(&app.endpoint_overrides).unwrap_or(Value::Null),
            "require_account_email_match": app.require_account_email_match != 0,
            "redirect_uri": self.redirect_uri(),
            "updated_at": rfc3339(app.updated_at),
        }))
    }

    /// Endpoint overrides for API-key connectors come from a provider app row without a client.
    pub(super) async fn api_key_overrides(
        &self,
        ws: &str,
        connector: &str,
    ) -> Result<Vec<(String, String)>> {
        Ok(match self.store.provider_app(ws, connector).await? {
            Some(app) => serde_json::from_str::<BTreeMap<String, String>>(&app.endpoint_overrides)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            None => vec![],
        })
    }

    /// Why the provider account may not be this connection's, when its provider app requires
    /// the account's email to be the owner's (`None`: it may).
    pub(super) async fn account_email_refusal(
        &self,
        ws: &str,
        connector: &str,
        owner: Option<&str>,
        account_email: Option<&str>,
    ) -> Result<Option<String>> {
        let required = self
            .store
            .provider_app(ws, connector)
            .await?
            .is_some_and(|a| a.require_account_email_match != 0);
        if !required {
            return Ok(None);
        }
        let expected = match owner {
            Some(u) => self.store.user(u).await?.and_then(|u| u.email),
            None => None,
        };
        let Some(expected) = expected else {
            return Ok(Some(
                "This workspace requires the connected account's email to match the connecting person's, and this connection has no person with an email: connect it while signed in as yourself.".into(),
            ));
        };
        let got = account_email.map(|e| e.trim().to_lowercase());
        if got.as_deref() == Some(expected.as_str()) {
            return Ok(None);
        }
        Ok(Some(match got {
            Some(g) => format!(
                "This workspace requires the connected account to be your own: expected the account of {expected}, but the provider account is {g}. Connect again with the account of {expected}."
            ),
            None => format!(
                "This workspace requires the connected account to be your own: expected the account of {expected}, but the provider did not say the account's email. Connect again with the account of {expected}."
            ),
        }))
    }
}
