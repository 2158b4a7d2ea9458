//! Uploaded connector components (content-addressed) and which version of each is deployed.

use std::collections::BTreeSet;

use super::*;

/// What an upload row records besides the bytes.
pub struct Upload<'a> {
    /// The connector's id.
    pub connector_id: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The egress hosts its manifest asks for.
    pub egress_hosts: &'a [String],
}

/// A deployment: which uploaded version of a connector is active.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Deployment {
    pub connector_id: String,
    pub active_hash: Option<String>,
    pub previous_hash: Option<String>,
    pub pending_hash: Option<String>,
    pub granted_hosts: String,
    pub updated_at: i64,
}

impl Deployment {
    pub(crate) fn granted(&self) -> BTreeSet<String> {
        serde_json::from_str::<Vec<String>>(&self.granted_hosts)
            .unwrap_or_default()
            .into_iter()
            .collect()
    }
}

impl Store {
    pub(crate) async fn deployment(&self, id: &str) -> Result<Option<Deployment>> {
        Ok(
            sqlx::query_as("SELECT * FROM connector_deployments WHERE connector_id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub(crate) async fn deployments(&self) -> Result<Vec<Deployment>> {
        Ok(
            sqlx::query_as("SELECT * FROM connector_deployments ORDER BY connector_id")
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub(crate) async fn put_deployment(&self, d: &Deployment) -> Result<()> {
        sqlx::query(
            "INSERT INTO connector_deployments (connector_id, active_hash, previous_hash, pending_hash, granted_hosts, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connector_id) DO UPDATE SET active_hash = excluded.active_hash,
               previous_hash = excluded.previous_hash, pending_hash = excluded.pending_hash,
               granted_hosts = excluded.granted_hosts, updated_at = excluded.updated_at",
        )
        .bind(&d.connector_id)
        .bind(&d.active_hash)
        .bind(&d.previous_hash)
        .bind(&d.pending_hash)
        .bind(&d.granted_hosts)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn delete_deployment(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM connector_deployments WHERE connector_id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub(crate) async fn put_upload(
        &self,
        hash: &str,
        upload: &Upload<'_>,
        bytes: &[u8],
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO connector_uploads (hash, connector_id, version, component, egress_hosts, uploaded_at, uploaded_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(upload.connector_id)
        .bind(upload.version)
        .bind(bytes)
        .bind(serde_json::to_string(upload.egress_hosts).unwrap_or_default())
        .bind(now_ms())
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn upload_bytes(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query("SELECT component FROM connector_uploads WHERE hash = $1")
                .bind(hash)
                .fetch_optional(self.pool())
                .await?
                .map(|r| r.get(0)),
        )
    }

    /// An upload's version and egress hosts.
    pub(crate) async fn upload_summary(&self, hash: &str) -> Result<Option<(String, Vec<String>)>> {
        Ok(
            sqlx::query("SELECT version, egress_hosts FROM connector_uploads WHERE hash = $1")
                .bind(hash)
                .fetch_optional(self.pool())
                .await?
                .map(|r| {
                    let hosts: String = r.get(1);
                    (r.get(0), serde_json::from_str(&hosts).unwrap_or_default())
                }),
        )
    }
}
