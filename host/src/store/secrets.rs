//! Sealed secrets by owner and field (ciphertext only), and key-rotation bookkeeping.

use super::*;

/// A sealed secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub owner_id: String,
    pub field: String,
    pub workspace_id: String,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// A sealed secret ready to store.
pub struct SealedField {
    /// Field name.
    pub field: &'static str,
    /// The key id inside the ciphertext.
    pub key_id: String,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
}

impl Store {
    /// Stores one sealed secret.
    pub async fn put_secret(&self, owner: &str, workspace: &str, s: &SealedField) -> Result<()> {
        let mut tx = self.write_tx().await?;
        upsert_secret(&mut tx, owner, workspace, s, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One sealed secret.
    pub async fn secret(
        &self,
        workspace: &str,
        owner: &str,
        field: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query("SELECT ciphertext FROM secrets WHERE workspace_id = $1 AND owner_id = $2 AND field = $3")
            .bind(workspace)
            .bind(owner)
            .bind(field)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get::<Vec<u8>, _>(0)))
    }

    /// Deletes an owner's secrets (all fields, or one).
    pub async fn delete_secrets(
        &self,
        workspace: &str,
        owner: &str,
        field: Option<&str>,
    ) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND owner_id = $2 AND ($3 IS NULL OR field = $3)")
            .bind(workspace)
            .bind(owner)
            .bind(field)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The key ids that sealed the stored secrets.
    pub async fn secret_key_ids(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query("SELECT DISTINCT key_id FROM secrets ORDER BY key_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }

    /// Secrets not sealed under `key_id`: count.
    pub async fn count_secrets_not_under(&self, key_id: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM secrets WHERE key_id <> $1")
                .bind(key_id)
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }

    /// A batch of secrets not sealed under `key_id`.
    pub async fn secrets_not_under(&self, key_id: &str, limit: i64) -> Result<Vec<SecretRow>> {
        Ok(sqlx::query_as(
            "SELECT owner_id, field, workspace_id, key_id, ciphertext FROM secrets WHERE key_id <> $1
             ORDER BY owner_id, field LIMIT $2",
        )
        .bind(key_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a secret only if it still has `old` ciphertext (rotation racing a refresh loses).
    pub async fn replace_secret(&self, row: &SecretRow, new_key: &str, new: &[u8]) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE secrets SET key_id = $4, ciphertext = $5 WHERE owner_id = $1 AND field = $2 AND ciphertext = $3",
        )
        .bind(&row.owner_id)
        .bind(&row.field)
        .bind(&row.ciphertext)
        .bind(new_key)
        .bind(new)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// All sealed secrets (for start-up checks on small installations, use `secret_key_ids`).
    pub async fn count_secrets(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM secrets")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }
}
