//! The account behind a connection ("Connected as …"): the call env a connector gets, the
//! lookup, activation, and retries of lookups that failed for now.

use super::*;

impl Service {
    /// The call env for a connection: credential, base URL, overrides, app secrets.
    pub async fn call_env(
        &self,
        c: &ConnectionRow,
        m: &crate::runtime::Manifest,
    ) -> Result<CallEnv> {
        let ws = c.workspace_id.as_str();
        let field = if c.auth_kind == "api_key" {
            "api_key"
        } else {
            "access_token"
        };
        let credential = self
            .open_secret(ws, &c.id, field)
            .await?
            .map(|s| Secret::new(s.as_str()));
        let config = self.effective_config_of(c, &json!({}))?;
        let mut overrides = BTreeMap::new();
        let mut form_secrets = HashMap::new();
        if let AuthScheme::Oauth2(_) = &m.auth
            && let Ok((app, secret, o)) = self.app(ws, &c.connector_id).await
        {
            overrides = o;
            form_secrets.insert(SecretKind::ClientId, Secret::new(app.client_id));
            if let Some(s) = secret {
                form_secrets.insert(SecretKind::ClientSecret, s);
            }
        } else if let AuthScheme::ApiKey(_) = &m.auth {
            // API-key connectors have no OAuth app, only the admin's endpoint overrides.
            overrides = self
                .api_key_overrides(ws, &c.connector_id)
                .await?
                .into_iter()
                .collect();
        }
        if let Some(cred) = &credential {
            form_secrets.insert(
                if field == "api_key" {
                    SecretKind::ApiKey
                } else {
                    SecretKind::AccessToken
                },
                cred.clone(),
            );
        }
        let metadata: Value = serde_json::from_str(&c.metadata).unwrap_or(Value::Null);
        let granted_hosts = self
            .registry
            .get(&c.connector_id)
            .and_then(|e| e.granted_hosts.clone());
        let (api_base_url, resolved_hosts) =
            resolve_endpoints(m, &config, &metadata, granted_hosts.as_deref())?;
        Ok(CallEnv {
            credential,
            form_secrets,
            api_base_url,
            granted_hosts,
            endpoint_overrides: overrides.into_iter().collect(),
            resolved_hosts,
            config,
            metadata,
            request_log: None,
        })
    }

    /// The connector's account lookup with the connection's stored credential and config.
    pub(super) async fn look_up(
        &self,
        c: &ConnectionRow,
    ) -> Result<
        std::result::Result<
            std::result::Result<crate::runtime::Account, crate::runtime::ConnectorError>,
            crate::runtime::CallError,
        >,
    > {
        let entry = self.connector(&c.connector_id)?;
        let env = self.call_env(c, entry.connector.manifest()).await?;
        let config = self.effective_config_of(c, &json!({}))?;
        Ok(entry
            .connector
            .lookup_account(
                env,
                CallContext {
                    config: config.to_string(),
                    metadata: c.metadata.clone(),
                    definition: String::new(),
                },
            )
            .await)
    }

    /// Looks up the account and activates the connection; a transient failure leaves it
    /// `pending` and schedules a retry. Returns the resulting status.
    pub async fn lookup_and_activate(&self, ws: &str, id: &str) -> Result<Status> {
        let c = self.get(ws, id).await?;
        let actor = Actor("keyport".into());
        match self.look_up(&c).await? {
            Ok(Ok(account)) => {
                if let Some(refusal) = self
                    .account_email_refusal(
                        ws,
                        &c.connector_id,
                        c.owner_user_id.as_deref(),
                        account.email.as_deref(),
                    )
                    .await?
                {
                    self.audit(
                        ws,
                        Some(id),
                        "account.refused",
                        &actor,
                        json!({"account_id": account.external_id, "reason": refusal}),
                    )
                    .await;
                    let lock = self.lock(id);
                    let _guard = lock.lock().await;
                    self.revoke_row(&c, &refusal, &actor).await?;
                    return Ok(Status::Revoked);
                }
                self.store
                    .set_account(
                        ws,
                        id,
                        &account.external_id,
                        &account.display_name,
                        account.email.as_deref().filter(|e| !e.is_empty()),
                        now_ms() + self.config.probe_interval_ms,
                    )
                    .await?;
                self.audit(ws, Some(id), "account.looked_up", &actor, json!({"account_id": account.external_id, "display_name": account.display_name})).await;
                self.transition(&c, Status::Active, "", &actor).await?;
                Ok(Status::Active)
            }
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::RateLimited) => {
                self.retry_lookup(&c, &e.message).await?;
                Ok(Status::Pending)
            }
            Err(call) => {
                self.retry_lookup(&c, &call.to_string()).await?;
                Ok(Status::Pending)
            }
            Ok(Err(e)) => {
                let reason = format!(
                    "The account lookup failed: {}. Reconnect to try again.",
                    e.message
                );
                self.transition(&c, Status::Error, &reason, &actor).await?;
                Ok(Status::Error)
            }
        }
    }

    pub(super) async fn retry_lookup(&self, c: &ConnectionRow, why: &str) -> Result<()> {
        let delay = (2_000i64 << c.lookup_attempts.min(8)).min(10 * 60 * 1000);
        let reason =
            format!("Authorized; the account lookup failed for now ({why}) and will be retried.");
        self.store
            .schedule_lookup(&c.workspace_id, &c.id, now_ms() + delay, &reason)
            .await?;
        self.audit(
            &c.workspace_id,
            Some(&c.id),
            "account.lookup_failed",
            &Actor("keyport".into()),
            json!({"error": why, "retry_in_ms": delay}),
        )
        .await;
        Ok(())
    }
}

/// A connection's API base URL and the hosts its templated egress patterns stand for, filled from
/// its config and token-response fields. Patterns the admin did not grant stay unresolved.
pub(super) fn resolve_endpoints(
    m: &crate::runtime::Manifest,
    config: &Value,
    metadata: &Value,
    granted: Option<&[String]>,
) -> Result<(Option<String>, Vec<String>)> {
    use crate::runtime::template::{self, Use, Vars};
    let vars = Vars {
        config,
        metadata,
        extra: &[],
    };
    let base = if m.api_base_url.is_empty() {
        None
    } else {
        Some(
            template::fill(&m.api_base_url, &vars, Use::Url).map_err(|e| Error::Invalid {
                message: e,
                fields: vec![],
            })?,
        )
    };
    let mut hosts = Vec::new();
    for pattern in m.egress_hosts.iter().filter(|h| h.contains('{')) {
        if granted.is_some_and(|g| !g.iter().any(|x| x == pattern)) {
            continue;
        }
        // A pattern that cannot be filled (a field not set) allows nothing; the base URL's
        // error already names the field when calls need it.
        if let Ok(host) = template::egress_host(pattern, &vars) {
            hosts.push(host);
        }
    }
    Ok((base, hosts))
}
