//! Bulk seeding of OAuth connections, for load tests and the refresh benchmark.
//!
//! Writes connection rows and their sealed tokens straight into the database in batches, the way
//! a finished authorization would leave them, so a test can start from 500 or 1,000,000
//! connections without running as many consent flows. Tokens are sealed with the given key ring
//! exactly as the service seals them, so a `keyport serve` on the same database can use them.

use sqlx::Row;

use crate::store::{Store, StoreError, now_ms};
use crate::vault::{Context, KeyRing};

/// What to seed.
pub struct Spec<'a> {
    /// Workspace (must exist).
    pub workspace: &'a str,
    /// Connector id (an OAuth connector).
    pub connector: &'a str,
    /// Index of the first connection; ids are `{prefix}{index}`.
    pub start: usize,
    /// How many connections.
    pub count: usize,
    /// Id prefix.
    pub prefix: &'a str,
    /// Access-token expiry (Unix ms).
    pub expires_at: i64,
    /// When the scheduler should refresh them (Unix ms).
    pub next_refresh_at: i64,
    /// (access token, refresh token) of connection `index`.
    pub tokens: &'a (dyn Fn(usize) -> (String, String) + Sync),
}

/// Rows per insert statement.
const BATCH: usize = 250;

/// Inserts the connections of `spec`, active, with sealed tokens; `progress` is called after
/// each batch with the number written so far.
pub async fn oauth_connections(
    store: &Store,
    vault: &KeyRing,
    spec: &Spec<'_>,
    mut progress: impl FnMut(usize),
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut done = 0;
    while done < spec.count {
        let n = BATCH.min(spec.count - done);
        let ids: Vec<String> = (0..n)
            .map(|i| format!("{}{}", spec.prefix, spec.start + done + i))
            .collect();
        let mut conn_sql = String::from(
            "INSERT INTO connections (id, workspace_id, connector_id, name, auth_kind, status, config, metadata,
               requested_scopes, expires_at, next_refresh_at, last_refreshed_at, created_at, updated_at) VALUES ",
        );
        let mut secret_sql = String::from(
            "INSERT INTO secrets (owner_id, field, workspace_id, key_id, ciphertext, updated_at) VALUES ",
        );
        for i in 0..n {
            let b = i * 5;
            conn_sql.push_str(&format!(
                "{}(${}, ${}, ${}, ${}, 'oauth2', 'active', '{{}}', '{{}}', '[]', ${}, $1, $2, $2, $2)",
                if i == 0 { "" } else { ", " },
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
            ));
            for f in 0..2 {
                let b = 1 + (i * 2 + f) * 5;
                secret_sql.push_str(&format!(
                    "{}(${}, ${}, ${}, ${}, ${}, $1)",
                    if i == 0 && f == 0 { "" } else { ", " },
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                ));
            }
        }
        let mut sealed = Vec::with_capacity(n * 2);
        for (i, id) in ids.iter().enumerate() {
            let (access, refresh) = (spec.tokens)(spec.start + done + i);
            for (field, value) in [("access_token", access), ("refresh_token", refresh)] {
                let ctx = Context {
                    workspace: spec.workspace,
                    row: id,
                    field,
                };
                sealed.push((id.as_str(), field, vault.seal(value.as_bytes(), ctx)));
            }
        }
        let mut tx = store.write_tx().await?;
        let mut q = sqlx::query(&conn_sql).bind(spec.next_refresh_at).bind(now);
        for id in &ids {
            q = q
                .bind(id.as_str())
                .bind(spec.workspace)
                .bind(spec.connector)
                .bind(id.as_str())
                .bind(spec.expires_at);
        }
        q.execute(&mut *tx).await?;
        let mut q = sqlx::query(&secret_sql).bind(now);
        for (id, field, ct) in &sealed {
            q = q
                .bind(*id)
                .bind(*field)
                .bind(spec.workspace)
                .bind(vault.active())
                .bind(ct.as_slice());
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        done += n;
        progress(done);
    }
    Ok(())
}

/// How many connections of `connector` were refreshed at or after `since` (Unix ms), and how
/// many are still due at `now`.
pub async fn refresh_progress(
    store: &Store,
    connector: &str,
    since: i64,
) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN last_refreshed_at >= $2 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN next_refresh_at <= $3 AND status IN ('active', 'error') THEN 1 ELSE 0 END), 0)
         FROM connections WHERE connector_id = $1",
    )
    .bind(connector)
    .bind(since)
    .bind(now_ms())
    .fetch_one(store.pool())
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Whether any connection of `connector` is still due for a refresh. It reads the due-time
/// index from its start and stops at the first due row, so polling it costs the same at any
/// number of connections (a count of the due rows read every one of them: at 1,000,000 on
/// PostgreSQL, a parallel scan of the table on every poll).
pub async fn any_still_due(store: &Store, connector: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "SELECT id FROM connections WHERE next_refresh_at <= $1 AND connector_id = $2
           AND status IN ('active', 'error') ORDER BY next_refresh_at LIMIT 1",
    )
    .bind(now_ms())
    .bind(connector)
    .fetch_optional(store.pool())
    .await?
    .is_some())
}
