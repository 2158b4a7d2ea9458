//! Refreshing one connection: single flight in this process, a lease across processes, the
//! token call, and the fenced write-back; failures classified into backoff or a status change.

use super::*;

/// What a refresh under a lease did.
pub(super) enum Refreshed {
    /// Nothing was needed (the row as read); the lease is still held.
    Fresh(Box<ConnectionRow>),
    /// New tokens were committed, and the lease released with them.
    Saved,
}

/// When a refresh may be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Refresh now ("Refresh credential").
    Force,
    /// Only when the access token expires within a minute (callers about to use it).
    IfExpiring,
    /// Only when the scheduled refresh time has come (the scheduler).
    IfDue,
    /// The provider rejected the access token used at this time (Unix ms): refresh unless a
    /// refresh completed since (the proxy after a 401).
    RejectedAt(i64),
}

/// How close to its expiry an access token is refreshed on demand (by a caller about to use
/// it): a quarter of the token's lifetime, at most [`ON_DEMAND_MARGIN_MS`]. One token generation
/// then serves every call for three quarters of its life, and the scheduler (which refreshes
/// from a fifth of the lifetime before expiry) keeps it fresh before callers need to; a token
/// living a minute is not refreshed by every call.
pub fn on_demand_margin(c: &ConnectionRow) -> i64 {
    match (c.expires_at, c.last_refreshed_at) {
        (Some(exp), Some(issued)) if exp > issued => ((exp - issued) / 4).min(ON_DEMAND_MARGIN_MS),
        _ => ON_DEMAND_MARGIN_MS,
    }
}

/// When a connection's refreshes are backing off after transient failures: the time of the next
/// try, if it is still ahead.
fn in_backoff(c: &ConnectionRow) -> Option<i64> {
    (c.refresh_failures > 0)
        .then_some(c.next_refresh_at)
        .flatten()
        .filter(|t| *t > now_ms())
}

/// The answer to a caller that waited its bound for a refresh in progress: 503, try again soon.
fn still_refreshing() -> Error {
    Error::Unavailable {
        message: "This connection's token is being refreshed and the provider has not answered yet; try again in a moment.".into(),
        retry_after_secs: 2,
    }
}

pub(super) fn revoked_reason(c: &ConnectionRow) -> String {
    c.status_reason
        .clone()
        .unwrap_or_else(|| "This connection was revoked. Reconnect it to continue.".into())
}

impl Service {
    /// Refreshes a connection's access token, as `mode` says, for a caller who manages it.
    pub async fn refresh(
        &self,
        who: &Principal,
        id: &str,
        mode: RefreshMode,
    ) -> Result<ConnectionRow> {
        self.connection_for(who, id, Need::Manage).await?;
        self.refresh_as(&who.workspace, &who.actor(), id, mode)
            .await
    }

    /// Refreshes a connection's access token, as `mode` says (keyport's own paths: the proxy
    /// and credential reads refresh for callers who only use the connection).
    pub(crate) async fn refresh_as(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        mode: RefreshMode,
    ) -> Result<ConnectionRow> {
        // A refresh completed after this request arrived satisfies it: callers that queued behind
        // a refresh share it. Otherwise the mode decides whether one is needed. (Strictly after:
        // times are milliseconds, and a refresh stamped in the millisecond this request arrived
        // may have finished before it; refreshing again is harmless, skipping a refresh the
        // caller asked for is not.)
        let arrived = match mode {
            RefreshMode::RejectedAt(t) => t,
            _ => now_ms(),
        };
        let fresh = |c: &ConnectionRow| {
            c.last_refreshed_at.is_some_and(|t| t > arrived)
                || match mode {
                    RefreshMode::Force | RefreshMode::RejectedAt(_) => false,
                    RefreshMode::IfExpiring => c
                        .expires_at
                        .is_some_and(|e| e > now_ms() + on_demand_margin(c)),
                    RefreshMode::IfDue => c.next_refresh_at.is_none_or(|t| t > now_ms()),
                }
        };
        // Single flight in this process: callers queue here, for a bounded time.
        let lock = self.lock(id);
        let wait = self.config.refresh_wait_ms;
        let waited = std::time::Instant::now();
        let _guard =
            tokio::time::timeout(std::time::Duration::from_millis(wait as u64), lock.lock())
                .await
                .map_err(|_| still_refreshing())?;
        self.forget(id);
        let c = self.get(ws, id).await?;
        if fresh(&c) {
            return Ok(c);
        }
        if matches!(mode, RefreshMode::IfExpiring | RefreshMode::RejectedAt(_))
            && let Some(retry_at) = in_backoff(&c)
        {
            // The provider failed recently and the scheduler waits before trying again: callers
            // wait too, instead of sending a token request each. A token that still works is
            // used as it is.
            if c.expires_at.is_some_and(|e| e > now_ms()) {
                return Ok(c);
            }
            return Err(Error::Unavailable {
                message: format!(
                    "The provider failed to refresh this connection's token {} time(s) in a row; keyport tries again at {}. Retry after that.",
                    c.refresh_failures,
                    rfc3339(retry_at)
                ),
                retry_after_secs: ((retry_at - now_ms()).max(0) as u64).div_ceil(1000).max(1),
            });
        }
        if let RefreshMode::RejectedAt(_) = mode {
            // A caller hammering an endpoint that keeps answering 401 for another reason must
            // not rotate the tokens on every request: one rejection-driven refresh per
            // connection per REJECTION_REFRESH_MIN (callers that queued behind it share it above).
            let mut recent = self
                .rejection_refreshes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if recent
                .get(id)
                .is_some_and(|at| at.elapsed() < REJECTION_REFRESH_MIN)
            {
                return Ok(c);
            }
            recent.retain(|_, at| at.elapsed() < REJECTION_REFRESH_MIN);
            recent.insert(id.to_string(), std::time::Instant::now());
        }
        let entry = self.connector(&c.connector_id)?;
        if c.auth_kind == "api_key" {
            // Nothing to refresh: verify the key instead.
            self.lookup_and_activate(ws, id).await?;
            return self.get(ws, id).await;
        }
        self.oauth_of(entry.connector.manifest())?;
        // Single flight across processes: claim the lease for the version we read, or wait for
        // the process that holds it and share its result.
        // A live holder renews its lease while it works; a dead one's lapses within a lease.
        let lease_ms = self.config.refresh_lease_ms;
        let deadline = now_ms() + (wait - waited.elapsed().as_millis() as i64).max(0);
        while !self
            .store
            .acquire_lease(ws, id, &self.instance, c.token_version, lease_ms)
            .await?
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.get(ws, id).await?;
            if now.token_version != c.token_version || fresh(&now) {
                return Ok(now);
            }
            if now.status == Status::Revoked {
                return Err(Error::Conflict(revoked_reason(&now)));
            }
            if now_ms() > deadline {
                return Err(still_refreshing());
            }
        }
        let result = self.refresh_with_lease(ws, actor, id, &fresh, None).await;
        if !matches!(result, Ok(Refreshed::Saved))
            && let Err(e) = self.store.release_lease(ws, id, &self.instance).await
        {
            tracing::warn!(connection = id, error = %e, "could not release a refresh lease; it expires by itself");
        }
        match result? {
            Refreshed::Fresh(c) => Ok(*c),
            Refreshed::Saved => self.get(ws, id).await,
        }
    }

    /// Renews this process's lease on `id` (taken for token `version`) while the returned guard
    /// lives.
    fn lease_heartbeat(&self, ws: &str, id: &str, version: i64) -> crate::store::Heartbeat {
        let ttl = self.config.refresh_lease_ms;
        let (store, ws, id, owner) = (
            self.store.clone(),
            ws.to_string(),
            id.to_string(),
            self.instance.clone(),
        );
        crate::store::Heartbeat::start(
            std::time::Duration::from_millis((ttl / 3).max(100) as u64),
            move || {
                let (store, ws, id, owner) = (store.clone(), ws.clone(), id.clone(), owner.clone());
                async move {
                    match store.renew_lease(&ws, &id, &owner, version, ttl).await {
                        Ok(held) => held,
                        Err(e) => {
                            tracing::warn!(connection = %id, error = %e, "could not renew a refresh lease");
                            false
                        }
                    }
                }
            },
        )
    }

    /// The refresh itself, holding the lease: re-read, call the provider, write back fenced by
    /// lease and token version (new refresh token and access token in one transaction, before any
    /// caller sees the access token).
    pub(super) async fn refresh_with_lease(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        fresh: &(dyn Fn(&ConnectionRow) -> bool + Sync),
        read: Option<ConnectionRow>,
    ) -> Result<Refreshed> {
        let c = match read {
            Some(c) => c,
            None => self.get(ws, id).await?,
        };
        if fresh(&c) {
            return Ok(Refreshed::Fresh(Box::new(c)));
        }
        let heartbeat = self.lease_heartbeat(ws, id, c.token_version);
        let entry = self.connector(&c.connector_id)?;
        let m = entry.connector.manifest().clone();
        if c.status == Status::Revoked {
            return Err(Error::Conflict(revoked_reason(&c)));
        }
        let o = self.oauth_of(&m)?.clone();
        let refresh_token = self.refresh_token_or_expire(&c, actor).await?;
        if !heartbeat.held() {
            // Another process may hold the lease now: sending the refresh token as well could
            // cost the grant at a rotating provider.
            return Err(Error::Unavailable {
                message: "This connection's refresh lease could not be renewed in time; try again in a moment.".into(),
                retry_after_secs: 2,
            });
        }
        let started = std::time::Instant::now();
        let result = self
            .call_refresh(&c, &entry.connector, &o, &refresh_token, actor)
            .await?;
        let outcome = match &result {
            Ok(_) => "success",
            Err(OAuthError::Definitive { .. }) => "definitive_failure",
            Err(_) => "transient_failure",
        };
        metrics::counter!("keyport_refreshes_total", "outcome" => outcome).increment(1);
        metrics::histogram!("keyport_refresh_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(t) => self.refreshed(&c, &t, actor).await,
            Err(OAuthError::Definitive { code, description }) => {
                Err(self.refresh_refused(&c, &code, &description, actor).await?)
            }
            Err(e) => Err(self.refresh_failed_for_now(&c, &e, actor).await?),
        }
    }

    /// The stored refresh token; without one, the connection turns `expired` once its access
    /// token has (else the scheduler looks again when it does), and the answer is 409.
    async fn refresh_token_or_expire(
        &self,
        c: &ConnectionRow,
        actor: &Actor,
    ) -> Result<zeroize::Zeroizing<String>> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        if let Some(token) = self.open_secret(ws, id, "refresh_token").await? {
            return Ok(token);
        }
        let reason = "The access token cannot be refreshed (the provider issued no refresh token). Reconnect to continue.";
        if c.expires_at.is_some_and(|e| e <= now_ms()) {
            if c.status != Status::Expired {
                self.transition(c, Status::Expired, reason, actor).await?;
            }
            self.store.schedule_refresh(ws, id, None, 0).await?;
        } else {
            // Nothing to refresh with: look again when the token expires.
            self.store.schedule_refresh(ws, id, c.expires_at, 0).await?;
        }
        Err(Error::Conflict(reason.into()))
    }

    /// The refresh grant, read through the connector. An unanswered request (in doubt: the
    /// provider may or may not have rotated the refresh token) is retried once with the same
    /// token within a renewed lease; providers with a reuse grace period answer it, others say
    /// `invalid_grant`.
    async fn call_refresh(
        &self,
        c: &ConnectionRow,
        connector: &crate::runtime::Connector,
        o: &Oauth2,
        refresh_token: &str,
        actor: &Actor,
    ) -> Result<std::result::Result<TokenSet, OAuthError>> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        let (app, client_secret, overrides) = self.app(ws, &c.connector_id).await?;
        let config = self.effective_config_of(c, &json!({}))?;
        let egress = self.egress_of(&c.connector_id);
        let call = TokenCall {
            http: &self.http,
            oauth: o,
            config: &config,
            client_id: &app.client_id,
            client_secret: client_secret.as_ref(),
            overrides: &overrides,
            egress: &egress,
        };
        let result = match call.refresh(refresh_token, None).await {
            Ok((status, body)) => self.read_tokens(connector, o, status, body).await,
            Err(e) => Err(e),
        };
        let Err(OAuthError::InDoubt(why)) = &result else {
            return Ok(result);
        };
        self.audit(
            ws,
            Some(id),
            "refresh.in_doubt",
            actor,
            json!({"error": why}),
        )
        .await;
        if !self
            .store
            .renew_lease(
                ws,
                id,
                &self.instance,
                c.token_version,
                self.config.refresh_lease_ms,
            )
            .await?
        {
            return Err(Error::Upstream(
                "The refresh lease lapsed during an unanswered refresh; try again.".into(),
            ));
        }
        Ok(match call.refresh(refresh_token, None).await {
            Ok((status, body)) => self.read_tokens(connector, o, status, body).await,
            Err(e) => Err(e),
        })
    }

    /// New tokens: written fenced (with their audit row, releasing the lease), then the
    /// connection recovers or finishes its account lookup.
    async fn refreshed(&self, c: &ConnectionRow, t: &TokenSet, actor: &Actor) -> Result<Refreshed> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        let requested: Vec<String> = serde_json::from_str(&c.requested_scopes).unwrap_or_default();
        let fence = Some((self.instance.as_str(), c.token_version));
        // The audit row commits with the tokens, and the lease is released by the same
        // statement.
        let audit = (
            "token.refreshed",
            actor,
            json!({"rotated": t.refresh_token.is_some(), "expires_in": t.expires_in, "replica": self.instance}),
        );
        if self
            .save_tokens(ws, c, t, &requested, false, fence, Some(audit))
            .await?
            .is_none()
        {
            tracing::error!(
                connection = id,
                "refresh lease lost before the new tokens were written; they were discarded"
            );
            return Err(Error::Upstream(
                "The refresh took longer than its lease and was discarded; try again.".into(),
            ));
        }
        if c.expiring_soon_reason.as_deref() == Some("failing") {
            self.store
                .clear_expiring_soon(ws, id, Some("failing"))
                .await?;
        }
        if c.status != Status::Active && c.status != Status::Pending {
            // A success after failures: "recovered".
            self.transition(c, Status::Active, "", actor).await?;
        } else if c.status == Status::Pending && c.account_id.is_none() {
            self.lookup_and_activate(ws, id).await?;
        }
        Ok(Refreshed::Saved)
    }

    /// A definitive refusal (`invalid_grant`): the connection is `revoked`; the error to return.
    async fn refresh_refused(
        &self,
        c: &ConnectionRow,
        code: &str,
        description: &str,
        actor: &Actor,
    ) -> Result<Error> {
        let reason = format!(
            "The provider no longer accepts this connection's authorization ({code}{}). Reconnect to continue.",
            if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            }
        );
        self.audit(
            &c.workspace_id,
            Some(&c.id),
            "refresh.failed",
            actor,
            json!({"error": code, "definitive": true}),
        )
        .await;
        self.transition(c, Status::Revoked, &reason, actor).await?;
        Ok(Error::Conflict(reason))
    }

    /// A transient (5xx, 429, network) or unclear failure: back off with jitter, honouring
    /// `Retry-After`; flag the connection expiring soon after half the threshold of failures in
    /// a row, and show `error` at the threshold. The error to return.
    async fn refresh_failed_for_now(
        &self,
        c: &ConnectionRow,
        e: &OAuthError,
        actor: &Actor,
    ) -> Result<Error> {
        let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
        let failures = c.refresh_failures + 1;
        let retry_after = match e {
            OAuthError::Transient(_, Some(secs)) => Some(crate::model::lifetime_ms(*secs)),
            _ => None,
        };
        let exp = self
            .config
            .refresh_backoff_ms
            .saturating_mul(1 << (failures - 1).min(16));
        let delay = retry_after.unwrap_or(exp).clamp(1, 15 * 60 * 1000);
        let jitter = (rand::random::<u64>() % (delay as u64 / 5 + 1)) as i64;
        self.store
            .schedule_refresh(ws, id, Some(now_ms() + delay + jitter), failures)
            .await?;
        self.audit(
            ws,
            Some(id),
            "refresh.failed",
            actor,
            json!({"error": e.to_string(), "definitive": false, "failures": failures, "retry_in_ms": delay + jitter}),
        )
        .await;
        if failures >= (self.config.refresh_failure_threshold + 1) / 2 {
            let journal = Journal::new()
                .audit(
                    Some(id),
                    "connection.expiring_soon",
                    &actor.0,
                    &json!({"reason": "failing", "failures": failures,
                            "message": "Refreshes keep failing; the connection will need reconnecting if this goes on."}),
                )
                .event(Self::event(
                    "connection.expiring_soon",
                    c,
                    json!({"reason": "failing", "failures": failures}),
                ));
            self.store
                .set_expiring_soon(ws, id, "failing", &journal)
                .await?;
        }
        if failures >= self.config.refresh_failure_threshold && c.status == Status::Active {
            let reason = format!(
                "Reconnection needed: the provider failed {failures} refreshes in a row (last: {e}). keyport keeps retrying."
            );
            self.transition(c, Status::Error, &reason, actor).await?;
        }
        Ok(Error::Upstream(format!(
            "Failed to refresh the connection: {e}. Try again later; you may need to reconnect."
        )))
    }
}
