//! The audit log: single rows, batches, cursor pages and retention.

use super::*;

/// An audit event.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub workspace_id: String,
    pub connection_id: Option<String>,
    pub action: String,
    pub actor: String,
    pub detail: String,
    pub created_at: i64,
}

/// What an audit page is narrowed to.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditFilter<'a> {
    pub connection: Option<&'a str>,
    pub action: Option<&'a str>,
    /// Events at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Events older than this id (the cursor).
    pub before_id: Option<i64>,
}

impl Store {
    /// Appends an audit event.
    pub async fn audit(
        &self,
        workspace: &str,
        connection: Option<&str>,
        action: &str,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(workspace)
            .bind(connection)
            .bind(action)
            .bind(actor)
            .bind(detail.to_string())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts many audit rows in one statement (proxied requests, written in batches).
    pub async fn audit_batch(&self, rows: &[AuditRow]) -> Result<()> {
        for chunk in rows.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                if self.kind == DbKind::Sqlite {
                    // Positional: SQLite looks numbered parameters up by name one at a time,
                    // which made a batch's binding quadratic in its size.
                    sql.push_str("(?, ?, ?, ?, ?, ?)");
                } else {
                    let b = i * 6;
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6
                    ));
                }
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(&r.workspace_id)
                    .bind(&r.connection_id)
                    .bind(&r.action)
                    .bind(&r.actor)
                    .bind(&r.detail)
                    .bind(r.created_at);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// One page of a workspace's audit log, newest first: events older than the cursor
    /// `before_id`, filtered by connection, action and time.
    pub async fn audit_page(
        &self,
        workspace: &str,
        visible: &Visible,
        f: &AuditFilter<'_>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let (scope, user) = visible.sql();
        Ok(sqlx::query_as(
            "SELECT * FROM audit_events WHERE workspace_id = $1
               AND ($2 IS NULL OR connection_id = $2) AND ($3 IS NULL OR action = $3)
               AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR id < $5)
               AND ($7 = 'all' OR connection_id IN (SELECT id FROM connections WHERE workspace_id = $1
                 AND (owner_user_id = $8 OR ($7 = 'shared' AND (owner_user_id IS NULL OR visibility = 'shared')))))
             ORDER BY id DESC LIMIT $6",
        )
        .bind(workspace)
        .bind(f.connection)
        .bind(f.action)
        .bind(f.since)
        .bind(f.before_id)
        .bind(limit)
        .bind(scope)
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes up to `limit` audit events older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64, limit: i64) -> Result<u64> {
        Ok(sqlx::query(PURGE_AUDIT)
            .bind(before)
            .bind(limit)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// A connection's audit events, oldest first.
    pub async fn audit_events(
        &self,
        workspace: &str,
        connection: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM audit_events WHERE workspace_id = $1 AND ($2 IS NULL OR connection_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(workspace)
        .bind(connection)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Proxied calls through a connection per day (UTC) since `since`: (day start, calls).
    pub async fn daily_calls(
        &self,
        workspace: &str,
        connection: &str,
        since: i64,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query(
            "SELECT created_at / 86400000 AS day, COUNT(*) FROM audit_events
             WHERE workspace_id = $1 AND connection_id = $2 AND action = 'proxy.request' AND created_at >= $3
             GROUP BY created_at / 86400000 ORDER BY day",
        )
        .bind(workspace)
        .bind(connection)
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get::<i64, _>(0) * 86_400_000, r.get::<i64, _>(1)))
        .collect())
    }
}

/// The retention sweep, oldest first by time so it walks `audit_by_time` and stops: ordered by
/// id, SQLite read the whole table every second to find nothing.
pub(super) const PURGE_AUDIT: &str = "DELETE FROM audit_events WHERE id IN
    (SELECT id FROM audit_events WHERE created_at < $1 ORDER BY created_at LIMIT $2)";
