//! What a change records about itself: audit rows and webhook events, written in the change's
//! own transaction, so a crash keeps both the change and its record or neither.

use super::*;

/// Audit rows and events to write with a change.
#[derive(Debug, Default, Clone)]
pub struct Journal {
    audit: Vec<Entry>,
    events: Vec<OutEvent>,
}

#[derive(Debug, Clone)]
struct Entry {
    connection: Option<String>,
    action: String,
    actor: String,
    detail: String,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an audit row.
    pub fn audit(
        mut self,
        connection: Option<&str>,
        action: &str,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Self {
        self.audit.push(Entry {
            connection: connection.map(str::to_string),
            action: action.to_string(),
            actor: actor.to_string(),
            detail: detail.to_string(),
        });
        self
    }

    /// Adds a webhook event (queued for every subscription of the workspace that wants it).
    pub fn event(mut self, event: impl Into<Option<OutEvent>>) -> Self {
        self.events.extend(event.into());
        self
    }

    /// Writes every row and event in `tx`.
    pub(super) async fn write(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        kind: DbKind,
        workspace: &str,
    ) -> Result<()> {
        let now = now_ms();
        for a in &self.audit {
            sqlx::query("INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(workspace)
                .bind(&a.connection)
                .bind(&a.action)
                .bind(&a.actor)
                .bind(&a.detail)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        for e in &self.events {
            enqueue(&mut **tx, kind, workspace, e).await?;
        }
        Ok(())
    }
}

impl Store {
    /// Begins a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first could not take it later once another writer
    /// committed, and would fail with "database is locked" instead of waiting its turn.
    pub async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    /// Runs one change and, when it changed a row, writes its journal — in one transaction.
    /// True when it changed something.
    pub(super) async fn change_journaled<'q>(
        &self,
        change: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        workspace: &str,
        journal: &Journal,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let changed = change.execute(&mut *tx).await?.rows_affected() > 0;
        if changed {
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
