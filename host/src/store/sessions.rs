//! Web UI sessions, stored by the cookie's hash.

use super::*;

/// A signed-in web UI session (the cookie's hash, never the cookie).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UiSessionRow {
    pub id_hash: String,
    pub csrf_token: String,
    pub workspace_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    /// The signed-in user (`None`: signed in with the admin token).
    pub user_id: Option<String>,
}

impl Store {
    /// Creates a UI session.
    pub async fn create_ui_session(&self, s: &UiSessionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, csrf_token, workspace_id, created_at, last_seen_at, expires_at, user_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id_hash)
        .bind(&s.csrf_token)
        .bind(&s.workspace_id)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(&s.user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live UI session with this cookie hash; expired ones are deleted on sight.
    pub async fn ui_session(&self, id_hash: &str, now: i64) -> Result<Option<UiSessionRow>> {
        let row: Option<UiSessionRow> =
            // A disabled user's sessions are void even before they are deleted.
            sqlx::query_as(
                "SELECT s.* FROM ui_sessions s LEFT JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = $1 AND (s.user_id IS NULL OR (u.id IS NOT NULL AND u.disabled_at IS NULL))",
            )
                .bind(id_hash)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) if r.expires_at > now => Ok(Some(r)),
            Some(_) => {
                self.delete_ui_session(id_hash).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Extends a session's idle expiry.
    pub async fn touch_ui_session(&self, id_hash: &str, now: i64, expires_at: i64) -> Result<()> {
        sqlx::query("UPDATE ui_sessions SET last_seen_at = $2, expires_at = $3 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(now)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Switches the workspace a UI session acts in.
    pub async fn set_ui_session_workspace(&self, id_hash: &str, workspace: &str) -> Result<()> {
        sqlx::query("UPDATE ui_sessions SET workspace_id = $2 WHERE id_hash = $1")
            .bind(id_hash)
            .bind(workspace)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a session (sign-out).
    pub async fn delete_ui_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes expired UI sessions.
    pub async fn purge_ui_sessions(&self, now: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Ends every session of a user (sign out everywhere, password change, disabled).
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
