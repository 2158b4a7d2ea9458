//! Users (installation-wide), their memberships in workspaces, and invitations.

use super::*;

/// A user. Emails are stored lower-cased.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
    /// Argon2id PHC string (never leaves the store layer except to be verified).
    pub password_hash: Option<String>,
    pub external_workspace: Option<String>,
    pub external_id: Option<String>,
    pub sso_issuer: Option<String>,
    pub sso_subject: Option<String>,
    pub installation_admin: i64,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
}

impl UserRow {
    /// A new user with nothing but an id and an email.
    pub fn new(id: String, email: Option<String>, display_name: String) -> Self {
        UserRow {
            id,
            email,
            display_name,
            password_hash: None,
            external_workspace: None,
            external_id: None,
            sso_issuer: None,
            sso_subject: None,
            installation_admin: 0,
            disabled_at: None,
            created_at: now_ms(),
            last_sign_in_at: None,
        }
    }
}

/// A user's role in one workspace.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub workspace_id: String,
    pub user_id: String,
    pub role: String,
    pub created_at: i64,
    pub email: Option<String>,
    pub display_name: String,
    pub external_id: Option<String>,
    pub disabled_at: Option<i64>,
}

/// An invitation (the link's token is stored as its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub token_hash: String,
    pub workspace_id: String,
    pub email: String,
    pub role: String,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub accepted_by: Option<String>,
}

/// Makes `user` a member of `workspace` with `role` (the role changes when they are one).
fn upsert_membership<'q>(
    workspace: &'q str,
    user: &'q str,
    role: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(workspace)
    .bind(user)
    .bind(role)
    .bind(now)
}

const MEMBER_COLS: &str = "m.workspace_id, m.user_id, m.role, m.created_at, u.email, u.display_name, u.external_id, u.disabled_at";

impl Store {
    /// Inserts a user; `Ok(false)` when the email (or external id, or SSO subject) is taken.
    pub async fn insert_user(&self, u: &UserRow) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, external_workspace, external_id,
               sso_issuer, sso_subject, installation_admin, disabled_at, created_at, last_sign_in_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&u.password_hash)
        .bind(&u.external_workspace)
        .bind(&u.external_id)
        .bind(&u.sso_issuer)
        .bind(&u.sso_subject)
        .bind(u.installation_admin)
        .bind(u.disabled_at)
        .bind(u.created_at)
        .bind(u.last_sign_in_at)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A user by id.
    pub async fn user(&self, id: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A user by email (case-insensitive: emails are stored lower-cased).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The user a workspace's platform knows by `external_id`.
    pub async fn user_by_external_id(
        &self,
        workspace: &str,
        external_id: &str,
    ) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as(
                "SELECT * FROM users WHERE external_workspace = $1 AND external_id = $2",
            )
            .bind(workspace)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// The user an SSO provider knows as `subject`.
    pub async fn user_by_sso(&self, issuer: &str, subject: &str) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM users WHERE sso_issuer = $1 AND sso_subject = $2")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every user, oldest first.
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM users ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// How many users can sign in (have an email).
    pub async fn count_people(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Sets a user's password hash and ends their sessions, in one transaction.
    pub async fn set_password(&self, user: &str, hash: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables (or enables) a user; disabling ends their sessions in the same transaction.
    pub async fn set_user_disabled(&self, user: &str, disabled: bool) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
            .bind(user)
            .bind(disabled.then(now_ms))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if disabled {
            sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1")
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Grants or takes away the installation-admin flag.
    pub async fn set_installation_admin(&self, user: &str, admin: bool) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE users SET installation_admin = $2 WHERE id = $1")
                .bind(user)
                .bind(i64::from(admin))
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Records a sign-in.
    pub async fn touch_sign_in(&self, user: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE users SET last_sign_in_at = $2 WHERE id = $1")
            .bind(user)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Links an SSO identity to a user.
    pub async fn link_sso(&self, user: &str, issuer: &str, subject: &str) -> Result<()> {
        sqlx::query("UPDATE users SET sso_issuer = $2, sso_subject = $3 WHERE id = $1")
            .bind(user)
            .bind(issuer)
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A user's role in a workspace.
    pub async fn role_of(&self, workspace: &str, user: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets a user's role in a workspace (adds them when they are not a member).
    pub async fn set_membership(&self, workspace: &str, user: &str, role: &str) -> Result<()> {
        upsert_membership(workspace, user, role, now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a user from a workspace; false when they were not a member.
    pub async fn remove_membership(&self, workspace: &str, user: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2")
                .bind(workspace)
                .bind(user)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// A workspace's members with their users, oldest first.
    pub async fn members(&self, workspace: &str) -> Result<Vec<MemberRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MEMBER_COLS} FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 ORDER BY m.created_at, m.user_id"
        ))
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One member.
    pub async fn member(&self, workspace: &str, user: &str) -> Result<Option<MemberRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MEMBER_COLS} FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 AND m.user_id = $2"
        ))
        .bind(workspace)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user's workspaces and roles, oldest membership first.
    pub async fn memberships_of(&self, user: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query(
            "SELECT workspace_id, role FROM memberships WHERE user_id = $1 ORDER BY created_at, workspace_id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    /// How many owners a workspace has.
    pub async fn count_owners(&self, workspace: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'",
        )
        .bind(workspace)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Stores an invitation.
    pub async fn insert_invitation(&self, i: &InvitationRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO invitations (id, token_hash, workspace_id, email, role, invited_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&i.id)
        .bind(&i.token_hash)
        .bind(&i.workspace_id)
        .bind(&i.email)
        .bind(&i.role)
        .bind(&i.invited_by)
        .bind(i.created_at)
        .bind(i.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The invitation whose link carries this token hash.
    pub async fn invitation_by_token(&self, token_hash: &str) -> Result<Option<InvitationRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM invitations WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A workspace's open invitations, newest first.
    pub async fn open_invitations(&self, workspace: &str, now: i64) -> Result<Vec<InvitationRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM invitations WHERE workspace_id = $1 AND accepted_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC",
        )
        .bind(workspace)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Accepts an invitation once: marks it used and makes `user` a member with its role, in one
    /// transaction. False when it was already used or has expired (nothing changes).
    pub async fn accept_invitation(&self, id: &str, user: &str, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let row: Option<InvitationRow> = sqlx::query_as(
            "UPDATE invitations SET accepted_at = $2, accepted_by = $3
             WHERE id = $1 AND accepted_at IS NULL AND expires_at > $2 RETURNING *",
        )
        .bind(id)
        .bind(now)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(inv) = row else {
            return Ok(false);
        };
        upsert_membership(&inv.workspace_id, user, &inv.role, now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Withdraws an open invitation; false when there is none with this id in the workspace.
    pub async fn delete_invitation(&self, workspace: &str, id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "DELETE FROM invitations WHERE workspace_id = $1 AND id = $2 AND accepted_at IS NULL",
        )
        .bind(workspace)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// Stores a single sign-on flow in progress (and drops expired ones).
    pub async fn insert_sso_flow(&self, f: &SsoFlowRow) -> Result<()> {
        sqlx::query("DELETE FROM sso_flows WHERE expires_at < $1")
            .bind(now_ms() - 3_600_000)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sso_flows (state_hash, browser_hash, sealed, next_path, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&f.state_hash)
        .bind(&f.browser_hash)
        .bind(&f.sealed)
        .bind(&f.next_path)
        .bind(f.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes a single sign-on flow once: marks it used and returns it, if it is open.
    pub async fn take_sso_flow(&self, state_hash: &str, now: i64) -> Result<Option<SsoFlowRow>> {
        Ok(sqlx::query_as(
            "UPDATE sso_flows SET consumed_at = $2
             WHERE state_hash = $1 AND consumed_at IS NULL AND expires_at > $2 RETURNING *",
        )
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }
}

impl Store {
    /// Stores a sign-in link (and drops old ones).
    pub async fn insert_sign_in_link(
        &self,
        token_hash: &str,
        user: &str,
        expires_at: i64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query("DELETE FROM sign_in_links WHERE expires_at < $1")
            .bind(now - 86_400_000)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sign_in_links (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses a sign-in link once: the user it signs in, if it is unused and not expired.
    pub async fn use_sign_in_link(&self, token_hash: &str, now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE sign_in_links SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A workspace's name and logo.
    pub async fn workspace_branding(&self, id: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(
            sqlx::query("SELECT name, logo FROM workspaces WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| (r.get(0), r.get(1))),
        )
    }

    /// Whether a workspace lets members send connection requests.
    pub async fn members_may_request(&self, id: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>(
                "SELECT members_may_request FROM workspaces WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0)
                != 0,
        )
    }

    /// Lets members send connection requests (or not).
    pub async fn set_members_may_request(&self, id: &str, allowed: bool) -> Result<()> {
        sqlx::query("UPDATE workspaces SET members_may_request = $2 WHERE id = $1")
            .bind(id)
            .bind(i64::from(allowed))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a workspace's name and logo.
    pub async fn set_workspace_branding(
        &self,
        id: &str,
        name: &str,
        logo: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE workspaces SET name = $2, logo = $3 WHERE id = $1")
            .bind(id)
            .bind(name)
            .bind(logo)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A single sign-on flow in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoFlowRow {
    pub state_hash: String,
    pub browser_hash: String,
    /// The nonce and PKCE verifier, sealed by the vault (base64).
    pub sealed: String,
    pub next_path: String,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}
