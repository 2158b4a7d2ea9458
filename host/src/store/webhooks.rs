//! Webhook subscriptions and the outbox of events to deliver to them.

use super::*;

/// An event to deliver to webhooks.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// `evt_…`, the same for every subscription.
    pub id: String,
    /// `connection.revoked`, …
    pub event_type: String,
    /// The JSON body sent.
    pub payload: String,
}

/// Queues `e` for every subscription of `workspace` that wants it. A subscription deleted
/// meanwhile simply gets nothing: on PostgreSQL the subscriptions read are locked against
/// deletion (`FOR KEY SHARE`) until the change commits, and one whose delete committed first is
/// skipped rather than failing the insert on its foreign key, so writing an event never fails
/// the change it describes.
pub(super) async fn enqueue<'e, E>(
    executor: E,
    kind: DbKind,
    workspace: &str,
    e: &OutEvent,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let now = now_ms();
    let lock = match kind {
        DbKind::Postgres => " FOR KEY SHARE",
        DbKind::Sqlite => "",
    };
    let sql = format!(
        "INSERT INTO webhook_outbox (id, webhook_id, workspace_id, event_id, event_type, payload, created_at, next_attempt_at)
         SELECT $1 || ':' || id, id, workspace_id, $1, $2, $3, $4, $4 FROM webhooks
         WHERE workspace_id = $5 AND (events LIKE $6 OR events LIKE '%,*,%'){lock}"
    );
    sqlx::query(&sql)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.payload)
        .bind(now)
        .bind(workspace)
        .bind(format!("%,{},%", e.event_type))
        .execute(executor)
        .await?;
    Ok(())
}

/// A webhook subscription.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    pub events: String,
    pub description: String,
    pub created_at: i64,
}

/// One event for one subscription, with its delivery state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub workspace_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

impl Store {
    /// Adds a subscription with its signing secret (sealed, stored under `secret_owner`) and its
    /// journal, in one transaction.
    pub async fn insert_webhook(
        &self,
        w: &WebhookRow,
        secret_owner: &str,
        secret: &SealedField,
        journal: &Journal,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        upsert_secret(&mut tx, secret_owner, &w.workspace_id, secret, w.created_at).await?;
        sqlx::query("INSERT INTO webhooks (id, workspace_id, url, events, description, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&w.id)
            .bind(&w.workspace_id)
            .bind(&w.url)
            .bind(&w.events)
            .bind(&w.description)
            .bind(w.created_at)
            .execute(&mut *tx)
            .await?;
        journal.write(&mut tx, self.kind, &w.workspace_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A workspace's subscriptions (or one of them).
    pub async fn webhooks(&self, workspace: &str, id: Option<&str>) -> Result<Vec<WebhookRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM webhooks WHERE workspace_id = $1 AND ($2 IS NULL OR id = $2) ORDER BY created_at, id",
        )
        .bind(workspace)
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a subscription, its pending deliveries and its signing secret (stored under
    /// `secret_owner`), writing `journal` with them; true when it existed.
    pub async fn delete_webhook(
        &self,
        workspace: &str,
        id: &str,
        secret_owner: &str,
        journal: &Journal,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM webhook_outbox WHERE webhook_id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(workspace)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM webhooks WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND owner_id = $2")
                .bind(workspace)
                .bind(secret_owner)
                .execute(&mut *tx)
                .await?;
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Claims up to `limit` due deliveries, pushing their next attempt `lease_ms` ahead so no
    /// other replica sends them meanwhile.
    pub async fn claim_deliveries(&self, limit: i64, lease_ms: i64) -> Result<Vec<DeliveryRow>> {
        let now = now_ms();
        let sql = claim_deliveries_sql(self.skip_locked());
        let mut rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(rows)
    }

    /// Extends the claim on deliveries still being sent (`(id, attempts)` as claimed: a delivery
    /// whose attempt was recorded meanwhile keeps the retry time that attempt set).
    pub async fn extend_delivery_claims(
        &self,
        claimed: &[(String, i64)],
        until: i64,
    ) -> Result<()> {
        for (id, attempts) in claimed {
            sqlx::query(
                "UPDATE webhook_outbox SET next_attempt_at = $3
                 WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND next_attempt_at IS NOT NULL",
            )
            .bind(id)
            .bind(attempts)
            .bind(until)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Records an attempt: delivered, retried at `next`, or given up (`next` None, not delivered).
    pub async fn delivery_attempted(
        &self,
        id: &str,
        status: Option<i64>,
        error: Option<&str>,
        delivered: bool,
        next: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $2, last_error = $3,
               delivered_at = CASE WHEN $4 = 1 THEN $5 ELSE NULL END,
               failed_at = CASE WHEN $4 = 0 AND $6 IS NULL THEN $5 ELSE NULL END,
               next_attempt_at = $6
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(delivered as i64)
        .bind(now)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A subscription's deliveries, newest first.
    pub async fn deliveries(
        &self,
        workspace: &str,
        webhook: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM webhook_outbox WHERE workspace_id = $1 AND webhook_id = $2
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(workspace)
        .bind(webhook)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// The delivery loop's claim: due deliveries, oldest first, their next attempt moved to `$2`.
pub(super) fn claim_deliveries_sql(lock: &str) -> String {
    format!(
        "UPDATE webhook_outbox SET next_attempt_at = $2
         WHERE id IN (SELECT id FROM webhook_outbox
           WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
           ORDER BY created_at, id LIMIT $3{lock})
         RETURNING *"
    )
}
