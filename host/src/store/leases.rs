//! Refresh leases and the scheduler's claims: due refreshes, probes and expiring-soon flags.

use super::*;

/// Keeps a lease alive while its holder works: runs `renew` every `period` until dropped. A
/// holder that dies stops renewing, so its lease lapses within one lease lifetime instead of
/// the longest time the work could take.
///
/// A renewal that answers `false` (the lease is no longer ours) or does not answer within
/// `period` stops the heartbeat and marks the lease lost: the holder checks [`Heartbeat::held`]
/// before each step that must not run twice (e.g. sending a refresh token).
pub struct Heartbeat {
    task: tokio::task::AbortHandle,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Heartbeat {
    /// Starts renewing; the first renewal is one `period` from now.
    pub fn start<F, Fut>(period: Duration, mut renew: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                if !tokio::time::timeout(period, renew()).await.unwrap_or(false) {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        });
        Heartbeat {
            task: task.abort_handle(),
            lost,
        }
    }

    /// Whether every renewal so far succeeded in time.
    pub fn held(&self) -> bool {
        !self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A due refresh claimed under this process's lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub workspace_id: String,
    pub id: String,
    pub connector_id: String,
    /// The token version the lease was claimed for.
    pub token_version: i64,
}

impl Store {
    /// Claims the refresh lease for the token version `version`, unless another process holds
    /// an unexpired lease or the version moved on. True when this call claimed it.
    pub async fn acquire_lease(
        &self,
        workspace: &str,
        id: &str,
        owner: &str,
        version: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(sqlx::query(
            "UPDATE connections SET lease_owner = $3, lease_until = $5
             WHERE workspace_id = $1 AND id = $2 AND token_version = $4
               AND (lease_until IS NULL OR lease_until < $6 OR lease_owner = $3)",
        )
        .bind(workspace)
        .bind(id)
        .bind(owner)
        .bind(version)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Claims up to `limit` due refreshes for `owner` under a lease of `ttl_ms`, oldest due
    /// first, skipping leased rows and the connectors in `skip` (rate-limited right now).
    /// PostgreSQL replicas claim disjoint sets (`FOR UPDATE SKIP LOCKED`); SQLite has one writer.
    pub async fn claim_due_refreshes(
        &self,
        now: i64,
        limit: i64,
        owner: &str,
        ttl_ms: i64,
        skip: &[String],
    ) -> Result<Vec<Claimed>> {
        let sql = claim_due_refreshes_sql(self.skip_locked(), skip.len());
        let mut q = sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .bind(owner)
            .bind(now + ttl_ms);
        for c in skip {
            q = q.bind(c);
        }
        Ok(q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| Claimed {
                workspace_id: r.get(0),
                id: r.get(1),
                connector_id: r.get(2),
                token_version: r.get(3),
            })
            .collect())
    }

    /// Extends a lease this process holds on token version `version`; false when it is no
    /// longer ours (expired and claimed by another process, or the tokens moved on).
    pub async fn renew_lease(
        &self,
        workspace: &str,
        id: &str,
        owner: &str,
        version: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE connections SET lease_until = $5
             WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND token_version = $4",
        )
        .bind(workspace)
        .bind(id)
        .bind(owner)
        .bind(version)
        .bind(now_ms() + ttl_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Releases a lease this process holds.
    pub async fn release_lease(&self, workspace: &str, id: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3")
            .bind(workspace)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the next scheduled refresh and the run of failures.
    pub async fn schedule_refresh(
        &self,
        workspace: &str,
        id: &str,
        at: Option<i64>,
        failures: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE connections SET next_refresh_at = $3, refresh_failures = $4 WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .bind(at)
            .bind(failures)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Refreshes due now: how many, and the oldest due time.
    pub async fn refresh_backlog(&self, now: i64) -> Result<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(next_refresh_at) FROM connections
             WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status IN ('active', 'error')",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get(0), row.try_get::<Option<i64>, _>(1).unwrap_or(None)))
    }

    /// Claims up to `limit` connections due for a probe, moving their next probe to `next` in
    /// the same statement so no other replica picks them: (workspace, id).
    pub async fn claim_due_probes(
        &self,
        now: i64,
        limit: i64,
        next: i64,
    ) -> Result<Vec<(String, String)>> {
        let sql = claim_due_probes_sql(self.skip_locked());
        Ok(sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .bind(next)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Sets (or clears) the next probe.
    pub async fn set_probe(&self, workspace: &str, id: &str, at: Option<i64>) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET next_probe_at = $3 WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace)
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Flags, once, up to `limit` live connections whose refresh token expires before
    /// `horizon`, writing each one's journal with it; returns how many were flagged.
    pub async fn flag_expiring_refresh_tokens(
        &self,
        horizon: i64,
        limit: i64,
        journal: impl Fn(&ConnectionRow) -> Journal,
    ) -> Result<usize> {
        let sql = flag_expiring_sql(self.skip_locked());
        let mut tx = self.write_tx().await?;
        let rows: Vec<ConnectionRow> = sqlx::query_as(&sql)
            .bind(horizon)
            .bind(limit)
            .bind(now_ms())
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            journal(row)
                .write(&mut tx, self.kind, &row.workspace_id)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Flags a connection as expiring soon unless it already is, writing `journal` with it; true
    /// when this call flagged it.
    pub async fn set_expiring_soon(
        &self,
        workspace: &str,
        id: &str,
        reason: &str,
        journal: &Journal,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let flagged = sqlx::query(
            "UPDATE connections SET expiring_soon_at = $3, expiring_soon_reason = $4
             WHERE workspace_id = $1 AND id = $2 AND expiring_soon_at IS NULL",
        )
        .bind(workspace)
        .bind(id)
        .bind(now_ms())
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if flagged {
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(flagged)
    }

    /// Clears the expiring-soon flag (any reason, or only `reason`).
    pub async fn clear_expiring_soon(
        &self,
        workspace: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET expiring_soon_at = NULL, expiring_soon_reason = NULL
             WHERE workspace_id = $1 AND id = $2 AND ($3 IS NULL OR expiring_soon_reason = $3)",
        )
        .bind(workspace)
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The scheduler's claim: due, live, unleased rows, oldest due first, minus `skip` connectors
/// (parameters `$5`…), locked with `lock`.
pub(super) fn claim_due_refreshes_sql(lock: &str, skip: usize) -> String {
    let skip_clause = if skip == 0 {
        String::new()
    } else {
        let marks: Vec<String> = (0..skip).map(|i| format!("${}", i + 5)).collect();
        format!(" AND connector_id NOT IN ({})", marks.join(", "))
    };
    format!(
        "UPDATE connections SET lease_owner = $3, lease_until = $4
         WHERE id IN (SELECT id FROM connections
           WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status IN ('active', 'error')
             AND (lease_until IS NULL OR lease_until < $1){skip_clause}
           ORDER BY next_refresh_at LIMIT $2{lock})
         RETURNING workspace_id, id, connector_id, token_version"
    )
}

/// The probe loop's claim, moving each claimed row's next probe in the same statement.
pub(super) fn claim_due_probes_sql(lock: &str) -> String {
    format!(
        "UPDATE connections SET next_probe_at = $3
         WHERE id IN (SELECT id FROM connections
           WHERE next_probe_at IS NOT NULL AND next_probe_at <= $1 AND status IN ('active', 'error')
             AND next_lookup_at IS NULL
           ORDER BY next_probe_at LIMIT $2{lock})
         RETURNING workspace_id, id"
    )
}

/// The expiring-soon sweep: live rows whose refresh token expires before `$1`, not yet flagged.
pub(super) fn flag_expiring_sql(lock: &str) -> String {
    format!(
        "UPDATE connections SET expiring_soon_at = $3, expiring_soon_reason = 'refresh_token_expiring'
         WHERE id IN (SELECT id FROM connections
           WHERE refresh_token_expires_at IS NOT NULL AND refresh_token_expires_at <= $1
             AND expiring_soon_at IS NULL AND status IN ('active', 'error')
           LIMIT $2{lock})
         RETURNING *"
    )
}
