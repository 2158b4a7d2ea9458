//! Provider apps: a workspace's OAuth client (or endpoint overrides) for one connector.

use super::*;

/// A provider app: a workspace's OAuth client for one connector.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderAppRow {
    pub workspace_id: String,
    pub connector_id: String,
    pub client_id: String,
    pub scopes: String,
    pub endpoint_overrides: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// A connection activates only when the provider account's email is its owner's.
    pub require_account_email_match: i64,
}

impl Store {
    /// Creates or replaces a provider app.
    pub async fn upsert_provider_app(&self, row: &ProviderAppRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_apps (workspace_id, connector_id, client_id, scopes, endpoint_overrides, created_at, updated_at,
               require_account_email_match)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
             ON CONFLICT (workspace_id, connector_id) DO UPDATE SET client_id = excluded.client_id,
               scopes = excluded.scopes, endpoint_overrides = excluded.endpoint_overrides, updated_at = excluded.updated_at,
               require_account_email_match = excluded.require_account_email_match",
        )
        .bind(&row.workspace_id)
        .bind(&row.connector_id)
        .bind(&row.client_id)
        .bind(&row.scopes)
        .bind(&row.endpoint_overrides)
        .bind(row.updated_at)
        .bind(row.require_account_email_match)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A workspace's provider app for a connector.
    pub async fn provider_app(
        &self,
        workspace: &str,
        connector: &str,
    ) -> Result<Option<ProviderAppRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM provider_apps WHERE workspace_id = $1 AND connector_id = $2",
        )
        .bind(workspace)
        .bind(connector)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A workspace's provider apps.
    pub async fn provider_apps(&self, workspace: &str) -> Result<Vec<ProviderAppRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM provider_apps WHERE workspace_id = $1 ORDER BY connector_id",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?)
    }
}
