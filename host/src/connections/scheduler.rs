//! Background work: claiming due refreshes under lease, probing credentials that never expire,
//! retrying account lookups, flagging refresh tokens that expire soon.

use super::*;

impl Service {
    /// The refresh scheduler of this process; runs until its task is dropped. It claims due
    /// connections under a lease (disjoint across replicas), only as many as it can start at once
    /// (`refresh_concurrency`), so no claimed row waits unrenewed; it honours the per-connector
    /// rate limit by not claiming a limited connector's rows.
    ///
    /// While every slot is busy it claims again once a quarter of them are free (or after
    /// `GATHER` at most), not after each refresh that ends: each claim walks the due-time index
    /// past the rows already leased, so claiming one row per finished refresh made the claim
    /// query the scheduler's limit (one claim of a few milliseconds per refresh, in series).
    pub async fn run_refresh_scheduler(self: Arc<Self>) {
        const GATHER: std::time::Duration = std::time::Duration::from_millis(50);
        let concurrency = self.config.refresh_concurrency.max(1);
        let batch = (concurrency / 4).max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let mut limited: HashMap<String, std::time::Instant> = HashMap::new();
        let idle = std::time::Duration::from_millis(500);
        loop {
            let mut claimed = 0;
            let tried = tasks.len() < concurrency;
            if tried {
                let now = std::time::Instant::now();
                limited.retain(|_, until| *until > now);
                let skip: Vec<String> = limited.keys().cloned().collect();
                // Only as many as can start now: a claimed row waiting for a slot would hold a
                // lease nobody renews.
                let want = (concurrency - tasks.len()) as i64;
                match self
                    .store
                    .claim_due_refreshes(
                        now_ms(),
                        want,
                        &self.instance,
                        self.config.refresh_lease_ms,
                        &skip,
                    )
                    .await
                {
                    Ok(rows) => {
                        for row in rows {
                            if let Some(wait) = self.rate_limited(&row.connector_id) {
                                limited.insert(row.connector_id.clone(), now + wait);
                                let _ = self
                                    .store
                                    .release_lease(&row.workspace_id, &row.id, &self.instance)
                                    .await;
                                continue;
                            }
                            claimed += 1;
                            // At most `concurrency` tasks exist: each starts at once.
                            let service = self.clone();
                            tasks.spawn(async move { service.refresh_claimed(row).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim due refreshes"),
                }
            }
            if claimed > 0 && tasks.len() < concurrency {
                continue;
            }
            if tasks.is_empty() {
                tokio::time::sleep(idle).await;
            } else if tried && claimed == 0 {
                // Nothing due (or only rate-limited connectors): wait for a slot or a while.
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            } else {
                // Every slot is busy: gather a batch of free ones before the next claim.
                let until = tokio::time::Instant::now() + GATHER;
                while concurrency - tasks.len() < batch {
                    tokio::select! {
                        done = tasks.join_next() => if done.is_none() { break },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
        }
    }

    /// How long a connector's scheduled refreshes must wait, when its rate limit is used up;
    /// otherwise takes one from its budget.
    pub(super) fn rate_limited(&self, connector: &str) -> Option<std::time::Duration> {
        use governor::clock::Clock;
        let limiter = self.limiter.as_ref()?;
        match limiter.check_key(&connector.to_string()) {
            Ok(()) => None,
            Err(not_until) => {
                Some(not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
            }
        }
    }

    /// Refreshes a connection the scheduler claimed, if it is still due and still ours.
    pub(super) async fn refresh_claimed(&self, row: crate::store::Claimed) {
        let (ws, id) = (row.workspace_id.as_str(), row.id.as_str());
        let actor = Actor("scheduler".into());
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let due = |c: &ConnectionRow| c.next_refresh_at.is_none_or(|t| t > now_ms());
        let result: Result<bool> = async {
            let c = self.get(ws, id).await?;
            if c.token_version != row.token_version
                || c.lease_owner.as_deref() != Some(self.instance.as_str())
                || due(&c)
            {
                return Ok(false);
            }
            // The row may have waited in the queue: make the lease whole again before the call
            // when less than half of it is left.
            let left = c.lease_until.unwrap_or(0) - now_ms();
            if left < self.config.refresh_lease_ms / 2
                && !self
                    .store
                    .renew_lease(
                        ws,
                        id,
                        &self.instance,
                        row.token_version,
                        self.config.refresh_lease_ms,
                    )
                    .await?
            {
                return Ok(false);
            }
            Ok(matches!(
                self.refresh_with_lease(ws, &actor, id, &due, Some(c))
                    .await?,
                Refreshed::Saved
            ))
        }
        .await;
        let released = match result {
            Ok(saved) => saved,
            Err(e) => {
                tracing::debug!(connection = %id, error = %e, "scheduled refresh failed");
                false
            }
        };
        if released {
            return;
        }
        if let Err(e) = self.store.release_lease(ws, id, &self.instance).await {
            tracing::warn!(connection = id, error = %e, "could not release a refresh lease; it expires by itself");
        }
    }

    /// Flags, once, connections whose refresh token expires within the configured window;
    /// returns how many were flagged.
    pub async fn flag_expiring_refresh_tokens(&self) -> Result<usize> {
        let flagged = self
            .store
            .flag_expiring_refresh_tokens(now_ms() + self.config.expiring_soon_ms, 200, |c| {
                let at = c.refresh_token_expires_at.map(rfc3339);
                Journal::new()
                    .audit(
                        Some(&c.id),
                        "connection.expiring_soon",
                        "scheduler",
                        &json!({"reason": "refresh_token_expiring", "refresh_token_expires_at": at,
                                "message": "The provider's refresh token expires soon; reconnect before then to keep this connection working."}),
                    )
                    .event(Self::event(
                        "connection.expiring_soon",
                        c,
                        json!({"reason": "refresh_token_expiring", "refresh_token_expires_at": at}),
                    ))
            })
            .await?;
        Ok(flagged)
    }

    /// Probes due credentials that never expire (a cheap account lookup) so a dead one is found
    /// before a workflow hits it; returns how many were probed.
    pub async fn run_due_probes(&self) -> Result<usize> {
        let next = now_ms() + self.config.probe_interval_ms;
        let due = self.store.claim_due_probes(now_ms(), 50, next).await?;
        for (ws, id) in &due {
            if let Err(e) = self.probe(ws, id).await {
                tracing::debug!(connection = %id, error = %e, "probe failed");
            }
        }
        Ok(due.len())
    }

    /// One probe: the account lookup with the stored credential.
    pub(super) async fn probe(&self, ws: &str, id: &str) -> Result<()> {
        let c = self.get(ws, id).await?;
        let actor = Actor("probe".into());
        let result = self.look_up(&c).await?;
        metrics::counter!("keyport_probes_total", "outcome" => match &result {
            Ok(Ok(_)) => "success",
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Revoked) => "rejected",
            _ => "failure",
        })
        .increment(1);
        match result {
            Ok(Ok(_)) if c.status == Status::Error => {
                // A success after failures: "recovered".
                self.transition(&c, Status::Active, "", &actor).await
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Revoked) => {
                let what = if c.auth_kind == "api_key" {
                    "Enter a new API key to continue"
                } else {
                    "Reconnect to continue"
                };
                let reason = format!(
                    "The provider rejected this connection's credential during a routine check ({}). {what}.",
                    e.message
                );
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": e.message, "definitive": true}),
                )
                .await;
                self.store.set_probe(ws, id, None).await?;
                self.transition(&c, Status::Revoked, &reason, &actor).await
            }
            Ok(Err(e)) => {
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": e.message, "definitive": false}),
                )
                .await;
                Ok(())
            }
            Err(call) => {
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": call.to_string(), "definitive": false}),
                )
                .await;
                Ok(())
            }
        }
    }

    /// Retries due account lookups; returns how many ran.
    pub async fn run_due_lookups(&self) -> Result<usize> {
        let due = self.store.due_lookups(now_ms(), 50).await?;
        for c in &due {
            if let Err(e) = self.lookup_and_activate(&c.workspace_id, &c.id).await {
                tracing::warn!(connection = %c.id, error = %e, "account lookup retry failed");
            }
        }
        Ok(due.len())
    }

    /// Removes connections whose authorization was abandoned: still `pending` without tokens
    /// [`ABANDONED_GRACE_MS`] after their last flow expired (a reconnect never qualifies: its
    /// connection has tokens). Each removal is audited and announced as `connection.deleted`.
    pub async fn remove_abandoned(&self) -> Result<usize> {
        let cutoff = now_ms() - ABANDONED_GRACE_MS;
        let mut removed = 0;
        for c in self.store.abandoned_connections(cutoff, 100).await? {
            let (ws, id) = (c.workspace_id.as_str(), c.id.as_str());
            let journal = Journal::new()
                .audit(
                    Some(id),
                    "connection.deleted",
                    "keyport",
                    &json!({"connector": c.connector_id, "name": c.name,
                            "reason": "authorization abandoned: never completed, its authorization link expired"}),
                )
                .event(Self::event(
                    "connection.deleted",
                    &c,
                    json!({"reason": "abandoned"}),
                ));
            if !self
                .store
                .delete_abandoned(ws, id, cutoff, &journal)
                .await?
            {
                continue;
            }
            self.forget(id);
            removed += 1;
        }
        Ok(removed)
    }
}

/// How long after its authorization link expired an abandoned `pending` connection is kept
/// (so the user sees why it did not complete) before it is removed.
pub const ABANDONED_GRACE_MS: i64 = 60 * 60 * 1000;
