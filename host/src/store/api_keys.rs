//! Workspace API keys, stored by hash.

use super::*;

/// An API key (hash only).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub key_hash: String,
    pub permissions: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl Store {
    /// Stores an API key's hash.
    pub async fn insert_api_key(&self, row: &ApiKeyRow) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (id, workspace_id, name, key_hash, permissions, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&row.id)
            .bind(&row.workspace_id)
            .bind(&row.name)
            .bind(&row.key_hash)
            .bind(&row.permissions)
            .bind(row.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live API key with this hash.
    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A workspace's live API keys, oldest first.
    pub async fn api_keys(&self, workspace: &str) -> Result<Vec<ApiKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a workspace's API key, with the journal of the change; false when there is no
    /// live key with this id in the workspace.
    pub async fn revoke_api_key(
        &self,
        workspace: &str,
        id: &str,
        journal: &Journal,
    ) -> Result<bool> {
        self.change_journaled(
            sqlx::query(
            "UPDATE api_keys SET revoked_at = $3 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
        )
        .bind(workspace)
        .bind(id)
        .bind(now_ms()),
            workspace,
            journal,
        )
        .await
    }

    /// Records that a key was used (at most once a minute per key is worth a write).
    pub async fn touch_api_key(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
