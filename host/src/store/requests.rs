//! Connection requests: what a workspace asked a client to connect, by one link (stored as its
//! token's hash).

use super::*;

/// A connection request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub workspace_id: String,
    pub token_hash: String,
    pub client_email: String,
    pub connector_id: String,
    pub connection_id: Option<String>,
    pub reconnect: i64,
    pub label: Option<String>,
    pub message: Option<String>,
    pub scopes: String,
    pub config: String,
    pub requested_by: String,
    /// `outstanding`, `fulfilled`, `cancelled` or `expired`.
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub fulfilled_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    /// When the client opened the link (it signs them in once).
    pub joined_at: Option<i64>,
}

impl Store {
    /// Stores the requests of one link, with the journal of their creation, in one transaction.
    pub async fn insert_requests(&self, rows: &[RequestRow], journal: &Journal) -> Result<()> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let mut tx = self.write_tx().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO connection_requests (id, workspace_id, token_hash, client_email, connector_id,
                   connection_id, reconnect, label, message, scopes, config, requested_by, status, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&r.id)
            .bind(&r.workspace_id)
            .bind(&r.token_hash)
            .bind(&r.client_email)
            .bind(&r.connector_id)
            .bind(&r.connection_id)
            .bind(r.reconnect)
            .bind(&r.label)
            .bind(&r.message)
            .bind(&r.scopes)
            .bind(&r.config)
            .bind(&r.requested_by)
            .bind(&r.status)
            .bind(r.created_at)
            .bind(r.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        journal
            .write(&mut tx, self.kind, &first.workspace_id)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A workspace's request.
    pub async fn request(&self, workspace: &str, id: &str) -> Result<Option<RequestRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM connection_requests WHERE workspace_id = $1 AND id = $2")
                .bind(workspace)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A workspace's requests, newest first, optionally of one status.
    pub async fn requests(
        &self,
        workspace: &str,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RequestRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM connection_requests WHERE workspace_id = $1 AND ($2 IS NULL OR status = $2)
             ORDER BY created_at DESC, id LIMIT $3",
        )
        .bind(workspace)
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Moves an outstanding request to `to` (`cancelled` or `expired`) with its journal, in one
    /// transaction; false when it was not outstanding any more.
    pub async fn close_request(
        &self,
        workspace: &str,
        id: &str,
        to: &str,
        journal: &Journal,
    ) -> Result<bool> {
        self.change_journaled(
            sqlx::query(
            "UPDATE connection_requests SET status = $3, cancelled_at = CASE WHEN $3 = 'cancelled' THEN $4 ELSE cancelled_at END
             WHERE workspace_id = $1 AND id = $2 AND status = 'outstanding'",
        )
        .bind(workspace)
        .bind(id)
        .bind(to)
        .bind(now_ms()),
            workspace,
            journal,
        )
        .await
    }

    /// Gives an outstanding request a new link (the old one stops working) and expiry.
    pub async fn relink_request(
        &self,
        workspace: &str,
        id: &str,
        token_hash: &str,
        expires_at: i64,
        journal: &Journal,
    ) -> Result<bool> {
        self.change_journaled(
            sqlx::query(
                "UPDATE connection_requests SET token_hash = $3, expires_at = $4
             WHERE workspace_id = $1 AND id = $2 AND status = 'outstanding'",
            )
            .bind(workspace)
            .bind(id)
            .bind(token_hash)
            .bind(expires_at),
            workspace,
            journal,
        )
        .await
    }

    /// Outstanding requests whose link has expired, oldest first.
    pub async fn expired_requests(&self, now: i64, limit: i64) -> Result<Vec<RequestRow>> {
        Ok(sqlx::query_as(EXPIRED_REQUESTS)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Uses a request link once: marks its requests joined and returns them, when the link is
    /// known, unused and not expired (an empty list otherwise).
    pub async fn join_requests(&self, token_hash: &str, now: i64) -> Result<Vec<RequestRow>> {
        let mut tx = self.write_tx().await?;
        let rows: Vec<RequestRow> = sqlx::query_as(
            "UPDATE connection_requests SET joined_at = $2
             WHERE token_hash = $1 AND joined_at IS NULL AND status = 'outstanding' AND expires_at > $2
             RETURNING *",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A client's outstanding requests in a workspace (by their email), oldest first.
    pub async fn requests_for(
        &self,
        workspace: &str,
        email: &str,
        now: i64,
    ) -> Result<Vec<RequestRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM connection_requests WHERE workspace_id = $1 AND client_email = $2
               AND status = 'outstanding' AND expires_at > $3 ORDER BY created_at, id",
        )
        .bind(workspace)
        .bind(email)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fulfils an outstanding request with the connection it produced, with its journal, in one
    /// transaction; false when it was not outstanding any more.
    pub async fn fulfil_request(
        &self,
        workspace: &str,
        id: &str,
        connection: &str,
        journal: &Journal,
    ) -> Result<bool> {
        self.change_journaled(
            sqlx::query(
            "UPDATE connection_requests SET status = 'fulfilled', fulfilled_at = $4, connection_id = $3
             WHERE workspace_id = $1 AND id = $2 AND status = 'outstanding'",
        )
        .bind(workspace)
        .bind(id)
        .bind(connection)
        .bind(now_ms()),
            workspace,
            journal,
        )
        .await
    }
}

/// Outstanding requests whose link expired before `$1`, oldest first.
pub(super) const EXPIRED_REQUESTS: &str =
    "SELECT * FROM connection_requests WHERE status = 'outstanding' AND expires_at <= $1
     ORDER BY expires_at LIMIT $2";
