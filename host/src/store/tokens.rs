//! The token write-back: sealed tokens and their non-secret facts in one transaction, fenced by
//! the refresh lease and the token version.

use super::*;

/// Non-secret facts of a token set.
#[derive(Debug, Clone, Default)]
pub struct TokenMeta {
    pub expires_at: Option<i64>,
    pub refresh_token_expires_at: Option<i64>,
    pub granted_scopes: Option<String>,
    pub scope_narrowed: bool,
    pub metadata: String,
    pub next_refresh_at: Option<i64>,
    /// When to probe a token that never expires.
    pub next_probe_at: Option<i64>,
    /// A new authorization (callback, reconnect): clears the expiring-soon flag.
    pub new_grant: bool,
    /// An audit row committed with the tokens: (action, actor, detail JSON).
    pub audit: Option<(String, String, String)>,
}

/// Binds $1–$13 of the token write-back (shared by the SQLite and PostgreSQL forms).
pub(super) fn bind_token_update<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    workspace: &'q str,
    id: &'q str,
    t: &'q TokenMeta,
    now: i64,
    fence: Option<(&'q str, i64)>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(workspace)
        .bind(id)
        .bind(t.expires_at)
        .bind(t.refresh_token_expires_at)
        .bind(t.granted_scopes.as_deref())
        .bind(t.scope_narrowed as i64)
        .bind(&t.metadata)
        .bind(now)
        .bind(fence.map(|f| f.0))
        .bind(fence.map(|f| f.1).unwrap_or(0))
        .bind(t.next_refresh_at)
        .bind(t.next_probe_at)
        .bind(t.new_grant as i64)
}

/// Upserts several secrets of one owner in one statement.
pub(super) async fn upsert_secrets(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: &str,
    workspace: &str,
    fields: &[&SealedField],
    now: i64,
) -> Result<()> {
    let mut sql = String::from(
        "INSERT INTO secrets (owner_id, field, workspace_id, key_id, ciphertext, updated_at) VALUES ",
    );
    for i in 0..fields.len() {
        let b = 4 + i * 3;
        sql.push_str(&format!(
            "{}($1, ${}, $2, ${}, ${}, $3)",
            if i == 0 { "" } else { ", " },
            b,
            b + 1,
            b + 2
        ));
    }
    sql.push_str(
        " ON CONFLICT (owner_id, field) DO UPDATE SET key_id = excluded.key_id, ciphertext = excluded.ciphertext,
           updated_at = excluded.updated_at",
    );
    let mut q = sqlx::query(&sql).bind(owner).bind(workspace).bind(now);
    for s in fields {
        q = q.bind(s.field).bind(&s.key_id).bind(&s.ciphertext);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn upsert_secret(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: &str,
    workspace: &str,
    s: &SealedField,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO secrets (owner_id, field, workspace_id, key_id, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (owner_id, field) DO UPDATE SET key_id = excluded.key_id, ciphertext = excluded.ciphertext,
           updated_at = excluded.updated_at",
    )
    .bind(owner)
    .bind(s.field)
    .bind(workspace)
    .bind(&s.key_id)
    .bind(&s.ciphertext)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Stores new tokens' metadata and sealed secrets in one transaction, bumping the token
    /// version. `refresh` is `None` to keep the stored refresh token. A new grant for a
    /// connection without an account also records its account lookup as due in 10 s: the caller
    /// looks it up at once, and if the process dies first, the scheduler resumes it.
    #[allow(clippy::too_many_arguments)]
    pub async fn store_tokens(
        &self,
        workspace: &str,
        id: &str,
        access: &SealedField,
        refresh: Option<&SealedField>,
        t: &TokenMeta,
        fence: Option<(&str, i64)>,
    ) -> Result<Option<i64>> {
        if self.kind == DbKind::Postgres {
            return self
                .store_tokens_one_statement(workspace, id, access, refresh, t, fence)
                .await;
        }
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let fields: Vec<&SealedField> = std::iter::once(access).chain(refresh).collect();
        upsert_secrets(&mut tx, id, workspace, &fields, now).await?;
        let row = bind_token_update(
            sqlx::query(
            "UPDATE connections SET expires_at = $3, refresh_token_expires_at = COALESCE($4, refresh_token_expires_at),
               granted_scopes = COALESCE($5, granted_scopes), scope_narrowed = $6, metadata = $7,
               last_refreshed_at = $8, token_version = token_version + 1, updated_at = $8,
               next_refresh_at = $11, refresh_failures = 0, next_probe_at = $12,
               next_lookup_at = CASE WHEN $13 = 1 AND account_id IS NULL THEN $8 + 10000 ELSE next_lookup_at END,
               expiring_soon_at = CASE WHEN $13 = 1 THEN NULL ELSE expiring_soon_at END,
               expiring_soon_reason = CASE WHEN $13 = 1 THEN NULL ELSE expiring_soon_reason END,
               lease_owner = CASE WHEN $9 IS NULL THEN lease_owner ELSE NULL END,
               lease_until = CASE WHEN $9 IS NULL THEN lease_until ELSE NULL END
             WHERE workspace_id = $1 AND id = $2
               AND ($9 IS NULL OR (lease_owner = $9 AND token_version = $10 AND status <> 'revoked'))
             RETURNING token_version",
            ),
            workspace,
            id,
            t,
            now,
            fence,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Fenced out: the lease or the token version is no longer ours. Write nothing.
            tx.rollback().await?;
            return Ok(None);
        };
        if let Some((action, actor, detail)) = &t.audit {
            sqlx::query("INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(workspace)
                .bind(id)
                .bind(action)
                .bind(actor)
                .bind(detail)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(row.get::<i64, _>(0)))
    }

    /// PostgreSQL: the same writes as [`Store::store_tokens`] in one statement (data-modifying
    /// CTEs: one round trip, one implicit transaction). The secrets and the audit row are written
    /// only when the fenced update matched.
    async fn store_tokens_one_statement(
        &self,
        workspace: &str,
        id: &str,
        access: &SealedField,
        refresh: Option<&SealedField>,
        t: &TokenMeta,
        fence: Option<(&str, i64)>,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let values = if refresh.is_some() {
            "($14, $15, $16::bytea), ($17, $18, $19::bytea)"
        } else {
            "($14, $15, $16::bytea)"
        };
        let audit_param = if refresh.is_some() { 20 } else { 17 };
        let sql = format!(
            "WITH u AS (
               UPDATE connections SET expires_at = $3, refresh_token_expires_at = COALESCE($4, refresh_token_expires_at),
                 granted_scopes = COALESCE($5, granted_scopes), scope_narrowed = $6, metadata = $7,
                 last_refreshed_at = $8, token_version = token_version + 1, updated_at = $8,
                 next_refresh_at = $11, refresh_failures = 0, next_probe_at = $12,
                 next_lookup_at = CASE WHEN $13 = 1 AND account_id IS NULL THEN $8 + 10000 ELSE next_lookup_at END,
                 expiring_soon_at = CASE WHEN $13 = 1 THEN NULL ELSE expiring_soon_at END,
                 expiring_soon_reason = CASE WHEN $13 = 1 THEN NULL ELSE expiring_soon_reason END,
                 lease_owner = CASE WHEN $9::text IS NULL THEN lease_owner ELSE NULL END,
                 lease_until = CASE WHEN $9::text IS NULL THEN lease_until ELSE NULL END
               WHERE workspace_id = $1 AND id = $2
                 AND ($9::text IS NULL OR (lease_owner = $9 AND token_version = $10 AND status <> 'revoked'))
               RETURNING id, workspace_id, token_version
             ), s AS (
               INSERT INTO secrets (owner_id, field, workspace_id, key_id, ciphertext, updated_at)
               SELECT u.id, v.field, u.workspace_id, v.key_id, v.ct, $8 FROM u, (VALUES {values}) AS v(field, key_id, ct)
               ON CONFLICT (owner_id, field) DO UPDATE SET key_id = excluded.key_id,
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at
             ), a AS (
               INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at)
               SELECT u.workspace_id, u.id, ${a}::text, ${b}::text, ${c}::text, $8 FROM u WHERE ${a}::text IS NOT NULL
             )
             SELECT token_version FROM u",
            a = audit_param,
            b = audit_param + 1,
            c = audit_param + 2,
        );
        let mut q = bind_token_update(sqlx::query(&sql), workspace, id, t, now, fence);
        for f in std::iter::once(access).chain(refresh) {
            q = q.bind(f.field).bind(&f.key_id).bind(&f.ciphertext);
        }
        let (action, actor, detail) = match &t.audit {
            Some((a, b, c)) => (Some(a.as_str()), Some(b.as_str()), Some(c.as_str())),
            None => (None, None, None),
        };
        let row = q
            .bind(action)
            .bind(actor)
            .bind(detail)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }
}
