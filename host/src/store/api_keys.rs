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
}
