//! API-key connections: the key is verified with the provider before anything is stored.

use super::*;

/// `POST /connections` body (API key).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub connector: String,
    pub api_key: String,
    pub name: Option<String>,
    pub config: Option<Value>,
}

impl Service {
    /// Creates an API-key connection after verifying the key with the provider.
    pub async fn create_api_key(
        &self,
        who: &Principal,
        req: CreateApiKey,
    ) -> Result<ConnectionRow> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        let entry = self.connector(&req.connector)?;
        let m = entry.connector.manifest();
        self.refuse_hidden(ws, &m.id).await?;
        let AuthScheme::ApiKey(key_scheme) = &m.auth else {
            return Err(Error::BadRequest(format!(
                "{} connects with OAuth: start with POST /api/v1/connections/oauth/start",
                m.display_name
            )));
        };
        let api_key = req.api_key.trim().to_string();
        if api_key.is_empty() {
            return Err(Error::Invalid {
                message: format!(
                    "the {} is empty; paste it from the provider",
                    key_scheme.label
                ),
                fields: vec![("/api_key".into(), "required".into())],
            });
        }
        let config = self
            .validate_config(&entry.connector, req.config.as_ref().unwrap_or(&json!({})))
            .await?;
        let account = self
            .verify_api_key(ws, &entry, &config, &api_key, req.name.as_deref())
            .await?;
        if let Some(refusal) = self
            .account_email_refusal(ws, &m.id, who.user_id(), account.email.as_deref())
            .await?
        {
            return Err(Error::Invalid {
                message: refusal,
                fields: vec![(
                    "/api_key".into(),
                    "not the connecting person's account".into(),
                )],
            });
        }
        let id = new_id("conn");
        let name = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| account.display_name.clone());
        let mut row = ConnectionRow::new(
            &id,
            ws,
            &m.id,
            name,
            "api_key",
            Status::Active,
            config.to_string(),
        );
        who.own(&mut row);
        row.account_id = Some(account.external_id.clone());
        row.account_name = Some(account.display_name.clone());
        row.account_email = account.email.clone();
        row.next_probe_at = Some(now_ms() + self.config.probe_interval_ms);
        // The row, its key, its audit rows and its events commit together (or not at all).
        let journal = Journal::new()
            .audit(
                Some(&id),
                "connection.created",
                &actor.0,
                &json!({"connector": m.id, "auth": "api_key"}),
            )
            .audit(
                Some(&id),
                "account.looked_up",
                &actor.0,
                &json!({"account_id": account.external_id, "display_name": account.display_name}),
            )
            .event(Self::event("connection.created", &row, json!({})))
            .event(Self::event("connection.active", &row, json!({})));
        let sealed = self.seal_field(ws, &id, "api_key", &api_key);
        self.store
            .insert_connection(&row, &[sealed], &journal)
            .await?;
        self.get(ws, &id).await
    }

    /// Asks the provider who `api_key` belongs to (the connector's account lookup with the key
    /// and the effective `config`): 422 naming the field when the provider rejects it, 502 when it
    /// is unavailable.
    async fn verify_api_key(
        &self,
        ws: &str,
        entry: &crate::registry::Entry,
        config: &Value,
        api_key: &str,
        name: Option<&str>,
    ) -> Result<crate::runtime::Account> {
        let m = entry.connector.manifest();
        let label = match &m.auth {
            AuthScheme::ApiKey(k) => k.label.as_str(),
            AuthScheme::Oauth2(_) => "API key",
        };
        let mut merged = schema_defaults(
            &crate::runtime::config_schema(&m.config_schema)
                .map_err(|e| Error::Internal(e.to_string()))?,
        );
        merge(&mut merged, config);
        let config = Value::Object(merged.clone());
        let (api_base_url, resolved_hosts) =
            accounts::resolve_endpoints(m, &config, &Value::Null, entry.granted_hosts.as_deref())?;
        let credential = Secret::new(api_key.to_string());
        let env = CallEnv {
            credential: Some(credential.clone()),
            form_secrets: HashMap::from([(SecretKind::ApiKey, credential)]),
            api_base_url,
            granted_hosts: entry.granted_hosts.clone(),
            endpoint_overrides: self.api_key_overrides(ws, &m.id).await?,
            resolved_hosts,
            config,
            metadata: Value::Null,
            request_log: None,
        };
        entry
            .connector
            .lookup_account(
                env,
                CallContext {
                    config: Value::Object(merged).to_string(),
                    metadata: json!({"display_name": name}).to_string(),
                    definition: String::new(),
                },
            )
            .await
            .map_err(|e| Error::Upstream(format!("could not verify the key: {e}")))?
            .map_err(|e| match e.kind {
                ErrorKind::Unavailable | ErrorKind::RateLimited => Error::Upstream(format!(
                    "{} is unavailable, try again: {}",
                    m.display_name, e.message
                )),
                _ => Error::Invalid {
                    message: format!("{} rejected the {label}: {}", m.display_name, e.message),
                    fields: vec![("/api_key".into(), e.message)],
                },
            })
    }

    /// Replaces an API-key connection's key in place (rotated at the provider): verified with
    /// the provider first (422, nothing changed, when rejected); the connection keeps its id,
    /// name, config, dependents and history, takes the account the key belongs to, and turns
    /// `active` again if it was not.
    pub async fn replace_api_key(
        &self,
        who: &Principal,
        id: &str,
        api_key: &str,
    ) -> Result<ConnectionRow> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        self.forget(id);
        let c = self.connection_for(who, id, Need::Manage).await?;
        if c.auth_kind != "api_key" {
            return Err(Error::BadRequest(
                "this connection uses OAuth: reconnect it instead (POST …/reconnect)".into(),
            ));
        }
        let entry = self.connector(&c.connector_id)?;
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(Error::Invalid {
                message: "the API key is empty; paste it from the provider".into(),
                fields: vec![("/api_key".into(), "required".into())],
            });
        }
        let config: Value = serde_json::from_str(&c.config).unwrap_or(json!({}));
        let account = self
            .verify_api_key(ws, &entry, &config, api_key, Some(&c.name))
            .await?;
        if let Some(refusal) = self
            .account_email_refusal(
                ws,
                &c.connector_id,
                c.owner_user_id.as_deref(),
                account.email.as_deref(),
            )
            .await?
        {
            return Err(Error::Invalid {
                message: refusal,
                fields: vec![(
                    "/api_key".into(),
                    "not the connection owner's account".into(),
                )],
            });
        }
        let sealed = self.seal_field(ws, id, "api_key", api_key);
        self.store.put_secret(id, ws, &sealed).await?;
        self.store
            .set_account(
                ws,
                id,
                &account.external_id,
                &account.display_name,
                account.email.as_deref(),
                now_ms() + self.config.probe_interval_ms,
            )
            .await?;
        self.forget(id);
        self.audit(
            ws,
            Some(id),
            "credential.replaced",
            actor,
            json!({"account_id": account.external_id}),
        )
        .await;
        if c.status != Status::Active {
            self.transition(&c, Status::Active, "", actor).await?;
        }
        self.get(ws, id).await
    }
}
