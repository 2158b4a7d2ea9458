//! OAuth flows in progress: hashed state and launch tokens, single use, expiring.

use super::*;

/// An OAuth flow in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlowRow {
    pub id: String,
    pub workspace_id: String,
    pub connection_id: String,
    pub connector_id: String,
    pub state_hash: String,
    pub launch_hash: String,
    pub browser_hash: Option<String>,
    pub redirect_uri: String,
    pub requested_scopes: String,
    pub return_to: Option<String>,
    pub reconnect: i64,
    /// The UI session that started the flow: only its browser may open the launch link.
    pub session_hash: Option<String>,
    pub expires_at: i64,
    pub launched_at: Option<i64>,
    pub consumed_at: Option<i64>,
    pub created_at: i64,
    /// The connection request this flow fulfils, if any.
    pub request_id: Option<String>,
}

impl Store {
    /// Records a new flow.
    pub async fn insert_flow(&self, f: &FlowRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_flows (id, workspace_id, connection_id, connector_id, state_hash, launch_hash, redirect_uri,
               requested_scopes, return_to, reconnect, expires_at, created_at, session_hash, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(&f.connection_id)
        .bind(&f.connector_id)
        .bind(&f.state_hash)
        .bind(&f.launch_hash)
        .bind(&f.redirect_uri)
        .bind(&f.requested_scopes)
        .bind(&f.return_to)
        .bind(f.reconnect)
        .bind(f.expires_at)
        .bind(f.created_at)
        .bind(&f.session_hash)
        .bind(&f.request_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unopened, unexpired flow with this launch hash.
    pub async fn flow_by_launch(&self, launch_hash: &str, now: i64) -> Result<Option<FlowRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM oauth_flows
             WHERE launch_hash = $1 AND launched_at IS NULL AND consumed_at IS NULL AND expires_at > $2",
        )
        .bind(launch_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Binds a flow to the browser that opened its launch link, once. Returns the flow if this
    /// call bound it. A flow started from a UI session binds only for that session.
    pub async fn launch_flow(
        &self,
        launch_hash: &str,
        browser_hash: &str,
        session_hash: Option<&str>,
        now: i64,
    ) -> Result<Option<FlowRow>> {
        Ok(sqlx::query_as(
            "UPDATE oauth_flows SET browser_hash = $2, launched_at = $3
             WHERE launch_hash = $1 AND launched_at IS NULL AND consumed_at IS NULL AND expires_at > $3
               AND (session_hash IS NULL OR session_hash = $4)
             RETURNING *",
        )
        .bind(launch_hash)
        .bind(browser_hash)
        .bind(now)
        .bind(session_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The flow with this state hash.
    pub async fn flow_by_state(&self, state_hash: &str) -> Result<Option<FlowRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM oauth_flows WHERE state_hash = $1")
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Consumes a flow atomically; true only for the one caller that consumed it.
    pub async fn consume_flow(&self, id: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query("UPDATE oauth_flows SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    /// Removes flows that expired before `before`, with their secrets.
    pub async fn purge_flows(&self, before: i64) -> Result<u64> {
        sqlx::query(PURGE_FLOW_SECRETS)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query(PURGE_FLOWS)
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// The flow sweep's two statements: the expired flows' secrets, then the flows.
pub(super) const PURGE_FLOW_SECRETS: &str =
    "DELETE FROM secrets WHERE owner_id IN (SELECT id FROM oauth_flows WHERE expires_at < $1)";
pub(super) const PURGE_FLOWS: &str = "DELETE FROM oauth_flows WHERE expires_at < $1";
