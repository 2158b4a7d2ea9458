//! Changes to an existing connection: rename and reconfigure, status transitions, revoke,
//! delete, dependents.

use super::*;

/// `PATCH /connections/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub name: Option<String>,
    pub config: Option<Value>,
    /// `false` switches the connection off (proxy and credential reads refuse it; it keeps
    /// refreshing), `true` on again.
    pub enabled: Option<bool>,
    /// `personal` (its owner alone uses it) or `shared` with the workspace.
    pub visibility: Option<String>,
    /// What the workspace may do with a shared connection: `use` or `manage`.
    pub permission: Option<String>,
}

impl Service {
    /// Renames, reconfigures, switches on or off, or changes who shares a connection. Each
    /// part needs its own right; nothing changes unless the caller has all the ones asked for.
    pub async fn patch(&self, who: &Principal, id: &str, p: Patch) -> Result<ConnectionRow> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        self.forget(id);
        let c = self.connection_for(who, id, Need::See).await?;
        if p.name.is_some() || p.config.is_some() || p.enabled.is_some() {
            self.authorize(who, &c, Need::Manage).await?;
        }
        let sharing = self.sharing_change(who, &c, &p).await?;
        let entry = self.connector(&c.connector_id)?;
        let name = match p.name {
            Some(n) if n.trim().is_empty() => {
                return Err(Error::Invalid {
                    message: "name must not be empty".into(),
                    fields: vec![("/name".into(), "required".into())],
                });
            }
            Some(n) => n.trim().to_string(),
            None => c.name.clone(),
        };
        let config = match &p.config {
            Some(cfg) => self
                .validate_config(&entry.connector, cfg)
                .await?
                .to_string(),
            None => c.config.clone(),
        };
        if name != c.name || config != c.config {
            let mut journal = Journal::new();
            if name != c.name {
                journal = journal.audit(
                    Some(id),
                    "connection.renamed",
                    &actor.0,
                    &json!({"name": name}),
                );
            }
            if config != c.config {
                let keys = serde_json::from_str::<Value>(&config)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()));
                journal =
                    journal.audit(Some(id), "config.changed", &actor.0, &json!({"keys": keys}));
            }
            self.store
                .update_name_config(ws, id, &name, &config, &journal)
                .await?;
        }
        if let Some(enabled) = p.enabled {
            let action = if enabled {
                "connection.enabled"
            } else {
                "connection.disabled"
            };
            let journal = Journal::new().audit(Some(id), action, &actor.0, &json!({}));
            self.store.set_enabled(ws, id, enabled, &journal).await?;
            self.forget(id);
        }
        if let Some((visibility, permission)) = sharing {
            let journal = Journal::new().audit(
                Some(id),
                "connection.sharing_changed",
                &actor.0,
                &json!({
                    "from": {"visibility": c.visibility, "permission": c.share_permission},
                    "to": {"visibility": visibility, "permission": permission},
                }),
            );
            self.store
                .set_sharing(ws, id, visibility, permission, &journal)
                .await?;
            self.forget(id);
        }
        self.get(ws, id).await
    }

    /// The visibility and permission a patch asks for, checked: `None` when it asks for no
    /// change of sharing.
    async fn sharing_change(
        &self,
        who: &Principal,
        c: &ConnectionRow,
        p: &Patch,
    ) -> Result<Option<(&'static str, &'static str)>> {
        if p.visibility.is_none() && p.permission.is_none() {
            return Ok(None);
        }
        let visibility = match p.visibility.as_deref().unwrap_or(&c.visibility) {
            "personal" => "personal",
            "shared" => "shared",
            other => {
                return Err(Error::Invalid {
                    message: format!("visibility {other:?}: use \"personal\" or \"shared\""),
                    fields: vec![("/visibility".into(), "personal or shared".into())],
                });
            }
        };
        let permission = match p.permission.as_deref().unwrap_or(&c.share_permission) {
            "use" => "use",
            "manage" => "manage",
            other => {
                return Err(Error::Invalid {
                    message: format!("permission {other:?}: use \"use\" or \"manage\""),
                    fields: vec![("/permission".into(), "use or manage".into())],
                });
            }
        };
        self.authorize(who, c, Need::Share).await?;
        if c.owner_user_id.is_none() && visibility == "personal" {
            return Err(Error::BadRequest(
                "this connection belongs to the workspace, not to a person, so it cannot be personal; share it at `use` to keep members from managing it".into(),
            ));
        }
        Ok(Some((visibility, permission)))
    }

    pub(crate) async fn transition(
        &self,
        c: &ConnectionRow,
        to: Status,
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        self.forget(&c.id);
        let reason = (!reason.is_empty()).then_some(reason);
        let from = c.status;
        self.store
            // Revoking applies whatever happened meanwhile; other changes only from the status
            // they were decided on.
            .transition_status(
                &c.workspace_id,
                &c.id,
                (to != Status::Revoked).then_some(from),
                to,
                reason,
                |row| {
                    Journal::new()
                        .audit(
                            Some(&row.id),
                            "status.changed",
                            &actor.0,
                            &json!({"from": from, "to": to, "reason": reason}),
                        )
                        .event(events::status_event(from, to).map(|kind| {
                            Self::event(
                                kind,
                                row,
                                json!({"previous_status": from, "reason": reason}),
                            )
                        }))
                },
            )
            .await?;
        Ok(())
    }

    /// Revokes at the provider (when it has an endpoint) and deletes the secrets whatever the
    /// outcome (O17).
    pub async fn revoke(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(ConnectionRow, Option<String>)> {
        let actor = who.actor();
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let c = self.connection_for(who, id, Need::Revoke).await?;
        let reason = format!("Revoked by {}. Reconnect to use it again.", actor.0);
        self.revoke_row(&c, &reason, &actor).await
    }

    /// Revokes `c` at the provider and deletes its secrets whatever the outcome (O17), with
    /// `reason` (the caller holds the connection's lock).
    pub(super) async fn revoke_row(
        &self,
        c: &ConnectionRow,
        reason: &str,
        actor: &Actor,
    ) -> Result<(ConnectionRow, Option<String>)> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        // Whatever fails at the provider or on the way there (the connector unloaded, the app or
        // a stored secret unreadable, a timeout, a 500), the secrets are deleted below (O17).
        let provider_error = self.revoke_at_provider(c).await.err();
        // The secrets go, the status changes, and the audit rows and the event are written, in
        // one transaction.
        self.forget(id);
        self.store
            .revoke_connection(ws, id, reason, |row, from, deleted| {
                let journal = Journal::new().audit(
                    Some(id),
                    "connection.revoked",
                    &actor.0,
                    &json!({"secrets_deleted": deleted, "provider_error": provider_error}),
                );
                if from == Status::Revoked {
                    return journal;
                }
                journal
                    .audit(
                        Some(id),
                        "status.changed",
                        &actor.0,
                        &json!({"from": from, "to": Status::Revoked, "reason": reason}),
                    )
                    .event(events::status_event(from, Status::Revoked).map(|kind| {
                        Self::event(
                            kind,
                            row,
                            json!({"previous_status": from, "reason": reason}),
                        )
                    }))
            })
            .await?;
        self.forget(id);
        Ok((self.get(ws, id).await?, provider_error))
    }

    /// RFC 7009 revocation at the provider, when the connector has an endpoint: the refresh
    /// token (which revokes the grant), else the access token. Errors say what went wrong.
    async fn revoke_at_provider(&self, c: &ConnectionRow) -> std::result::Result<(), String> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        let entry = self.connector(&c.connector_id).map_err(|e| e.to_string())?;
        let m = entry.connector.manifest();
        let AuthScheme::Oauth2(o) = &m.auth else {
            return Ok(());
        };
        if o.revoke_url.is_none() {
            return Ok(());
        }
        let token = match self
            .open_secret(ws, id, "refresh_token")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(t) => Some((t, "refresh_token")),
            None => self
                .open_secret(ws, id, "access_token")
                .await
                .map_err(|e| e.to_string())?
                .map(|t| (t, "access_token")),
        };
        let Some((token, hint)) = token else {
            return Ok(());
        };
        let (app, secret, overrides) = self
            .app(ws, &c.connector_id)
            .await
            .map_err(|e| e.to_string())?;
        let config = self
            .effective_config_of(c, &json!({}))
            .map_err(|e| e.to_string())?;
        let egress = self.egress_of(&c.connector_id);
        let call = TokenCall {
            http: &self.http,
            oauth: o,
            config: &config,
            client_id: &app.client_id,
            client_secret: secret.as_ref(),
            overrides: &overrides,
            egress: &egress,
        };
        call.revoke(&token, hint).await.map_err(|e| e.to_string())
    }

    /// Deletes a connection; 409 while dependents exist.
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<()> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        self.forget(id);
        let c = self.connection_for(who, id, Need::Delete).await?;
        let journal = Journal::new()
            .audit(
                Some(id),
                "connection.deleted",
                &actor.0,
                &json!({"connector": c.connector_id, "name": c.name}),
            )
            .event(Self::event("connection.deleted", &c, json!({})));
        let blocking = self.store.delete_connection(ws, id, &journal).await?;
        if blocking > 0 {
            return Err(Error::Conflict(format!(
                "{blocking} workflow(s) depend on this connection; remove them (DELETE /api/v1/connections/{id}/dependents/{{ref}}) before deleting it"
            )));
        }
        Ok(())
    }

    /// Registers a dependent.
    pub async fn add_dependent(&self, who: &Principal, id: &str, r: &str) -> Result<bool> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        self.connection_for(who, id, Need::Use).await?;
        if r.is_empty() || r.len() > 200 {
            return Err(Error::BadRequest(
                "a dependent ref is 1-200 characters".into(),
            ));
        }
        let added = self.store.add_dependent(ws, id, r).await?;
        if added {
            self.audit(ws, Some(id), "dependent.added", actor, json!({"ref": r}))
                .await;
        }
        Ok(added)
    }

    /// Removes a dependent.
    pub async fn remove_dependent(&self, who: &Principal, id: &str, r: &str) -> Result<()> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        self.connection_for(who, id, Need::Use).await?;
        if !self.store.remove_dependent(ws, id, r).await? {
            return Err(Error::NotFound(format!(
                "no dependent {r:?} on this connection"
            )));
        }
        self.audit(ws, Some(id), "dependent.removed", actor, json!({"ref": r}))
            .await;
        Ok(())
    }
}
