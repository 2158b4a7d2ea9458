//! Custom OAuth provider definitions imported at runtime.

use super::*;

/// A stored provider definition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub id: String,
    pub issuer: Option<String>,
    pub definition: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// One imported provider.
    pub async fn custom_provider(&self, id: &str) -> Result<Option<ProviderRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM custom_providers WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Every imported provider.
    pub async fn custom_providers(&self) -> Result<Vec<ProviderRow>> {
        Ok(sqlx::query_as("SELECT * FROM custom_providers ORDER BY id")
            .fetch_all(self.pool())
            .await?)
    }

    /// The provider holding an issuer, if any.
    pub async fn provider_with_issuer(&self, issuer: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT id FROM custom_providers WHERE issuer = $1")
                .bind(issuer)
                .fetch_optional(self.pool())
                .await?
                .map(|r| r.get(0)),
        )
    }

    /// Inserts or replaces a provider.
    pub async fn put_custom_provider(
        &self,
        id: &str,
        issuer: Option<&str>,
        definition: &str,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO custom_providers (id, issuer, definition, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET issuer = excluded.issuer, definition = excluded.definition, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(issuer)
        .bind(definition)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes a provider.
    pub async fn delete_custom_provider(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM custom_providers WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// How many connections (any workspace) use a connector.
    pub async fn connections_of_connector(&self, connector: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM connections WHERE connector_id = $1")
                .bind(connector)
                .fetch_one(self.pool())
                .await?
                .get(0),
        )
    }

    /// The connectors an admin hid in a workspace.
    pub async fn hidden_connectors(&self, ws: &str) -> Result<Vec<String>> {
        Ok(sqlx::query(
            "SELECT connector_id FROM hidden_connectors WHERE workspace_id = $1 ORDER BY connector_id",
        )
        .bind(ws)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    /// Whether a connector is hidden in a workspace.
    pub async fn connector_hidden(&self, ws: &str, connector: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM hidden_connectors WHERE workspace_id = $1 AND connector_id = $2",
        )
        .bind(ws)
        .bind(connector)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    /// Hides or shows a connector in a workspace; returns whether anything changed.
    pub async fn set_connector_hidden(
        &self,
        ws: &str,
        connector: &str,
        hidden: bool,
        by: &str,
    ) -> Result<bool> {
        let q = if hidden {
            sqlx::query(
                "INSERT INTO hidden_connectors (workspace_id, connector_id, hidden_by, hidden_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, connector_id) DO NOTHING",
            )
            .bind(ws)
            .bind(connector)
            .bind(by)
            .bind(now_ms())
        } else {
            sqlx::query(
                "DELETE FROM hidden_connectors WHERE workspace_id = $1 AND connector_id = $2",
            )
            .bind(ws)
            .bind(connector)
        };
        Ok(q.execute(self.pool()).await?.rows_affected() > 0)
    }
}
