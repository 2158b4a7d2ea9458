//! Connections: the rows, listings, status changes, account facts and dependents.

use super::*;

/// A connection row (no secrets: those are in `secrets`).
///
/// On SQLite, listings read it as one JSON array per row (`row_as_json!`, fields in this order):
/// decoding one text column is a fraction of decoding thirty-five (a test keeps the two in step).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct ConnectionRow {
    pub id: String,
    pub workspace_id: String,
    pub connector_id: String,
    pub name: String,
    pub auth_kind: String,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub status_reason: Option<String>,
    pub config: String,
    pub metadata: String,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub account_email: Option<String>,
    pub requested_scopes: String,
    pub granted_scopes: Option<String>,
    pub scope_narrowed: i64,
    pub expires_at: Option<i64>,
    pub refresh_token_expires_at: Option<i64>,
    pub last_refreshed_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub lookup_attempts: i64,
    pub next_lookup_at: Option<i64>,
    pub token_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The process holding the refresh lease, if any.
    pub lease_owner: Option<String>,
    /// When the refresh lease expires (Unix ms).
    pub lease_until: Option<i64>,
    /// When the scheduler refreshes next (Unix ms).
    pub next_refresh_at: Option<i64>,
    /// Refreshes that failed in a row.
    pub refresh_failures: i64,
    /// When the slow-schedule probe checks this credential next (Unix ms).
    pub next_probe_at: Option<i64>,
    /// When the connection was flagged as expiring soon, if it is.
    pub expiring_soon_at: Option<i64>,
    /// Why: `refresh_token_expiring` or `failing`.
    pub expiring_soon_reason: Option<String>,
    /// When it was switched off (`None`: on).
    pub disabled_at: Option<i64>,
    /// The user who authorized it (`None`: the workspace itself).
    pub owner_user_id: Option<String>,
    /// `personal` or `shared`.
    pub visibility: String,
    /// For shared connections: `use` or `manage`.
    pub share_permission: String,
}

impl ConnectionRow {
    /// A new row: the given fields, everything else empty, created now.
    pub fn new(
        id: &str,
        workspace: &str,
        connector: &str,
        name: String,
        auth_kind: &str,
        status: Status,
        config: String,
    ) -> Self {
        let now = now_ms();
        ConnectionRow {
            id: id.into(),
            workspace_id: workspace.into(),
            connector_id: connector.into(),
            name,
            auth_kind: auth_kind.into(),
            status,
            status_reason: None,
            config,
            metadata: "{}".into(),
            account_id: None,
            account_name: None,
            account_email: None,
            requested_scopes: "[]".into(),
            granted_scopes: None,
            scope_narrowed: 0,
            expires_at: None,
            refresh_token_expires_at: None,
            last_refreshed_at: None,
            last_used_at: None,
            lookup_attempts: 0,
            next_lookup_at: None,
            token_version: 0,
            created_at: now,
            updated_at: now,
            lease_owner: None,
            lease_until: None,
            next_refresh_at: None,
            refresh_failures: 0,
            next_probe_at: None,
            expiring_soon_at: None,
            expiring_soon_reason: None,
            disabled_at: None,
            owner_user_id: None,
            visibility: "shared".into(),
            share_permission: "manage".into(),
        }
    }
}

/// The `WHERE` clause of connection listings: `$1` workspace, `$2` connector, `$3` status (both
/// optional), `$4` and `$5` the caller's [`Visible`] scope as [`Visible::sql`] binds it.
/// The columns of [`ConnectionRow`] in its field order, for listings that read each row as one
/// JSON array.
macro_rules! row_as_json {
    () => {
        "id, workspace_id, connector_id, name, auth_kind, status, status_reason, config, metadata,
         account_id, account_name, account_email, requested_scopes, granted_scopes, scope_narrowed,
         expires_at, refresh_token_expires_at, last_refreshed_at, last_used_at, lookup_attempts,
         next_lookup_at, token_version, created_at, updated_at, lease_owner, lease_until,
         next_refresh_at, refresh_failures, next_probe_at, expiring_soon_at, expiring_soon_reason,
         disabled_at, owner_user_id, visibility, share_permission"
    };
}

/// [`row_as_json!`]: the columns of [`ConnectionRow`] in its fields' order (the test
/// `the_json_row_columns_are_the_struct_fields_in_order_and_read_back` keeps them in step).
pub const ROW_COLUMNS: &str = row_as_json!();

macro_rules! connection_filter {
    () => {
        "WHERE workspace_id = $1 AND ($2 IS NULL OR connector_id = $2) AND ($3 IS NULL OR status = $3)
         AND ($4 = 'all' OR owner_user_id = $5 OR ($4 = 'shared' AND (owner_user_id IS NULL OR visibility = 'shared')))"
    };
}

/// Which of a workspace's connections a listing may return: the SQL form of
/// `connections::access::decide(…, Need::See)`, which decides (a test holds them equal).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visible {
    /// Every connection.
    #[default]
    All,
    /// Shared ones, the workspace's own, and those owned by this user (if any).
    Shared(Option<String>),
    /// Only those owned by this user.
    Own(String),
}

impl Visible {
    /// `($4, $5)` of [`connection_filter!`].
    pub(super) fn sql(&self) -> (&'static str, Option<&str>) {
        match self {
            Visible::All => ("all", None),
            Visible::Shared(u) => ("shared", u.as_deref()),
            Visible::Own(u) => ("own", Some(u)),
        }
    }
}

/// Filters for listing connections.
#[derive(Debug, Default, Clone)]
pub struct ConnectionFilter {
    pub connector: Option<String>,
    pub status: Option<Status>,
    /// Set by the service from the caller, never from a request.
    pub visible: Visible,
}

impl Store {
    /// Inserts a new connection with its sealed secrets and its journal, in one transaction.
    pub async fn insert_connection(
        &self,
        c: &ConnectionRow,
        secrets: &[SealedField],
        journal: &Journal,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO connections (id, workspace_id, connector_id, name, auth_kind, status, status_reason, config,
               metadata, requested_scopes, account_id, account_name, account_email, next_probe_at,
               created_at, updated_at, owner_user_id, visibility, share_permission)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18)",
        )
        .bind(&c.id)
        .bind(&c.workspace_id)
        .bind(&c.connector_id)
        .bind(&c.name)
        .bind(&c.auth_kind)
        .bind(c.status.as_str())
        .bind(&c.status_reason)
        .bind(&c.config)
        .bind(&c.metadata)
        .bind(&c.requested_scopes)
        .bind(&c.account_id)
        .bind(&c.account_name)
        .bind(&c.account_email)
        .bind(c.next_probe_at)
        .bind(c.created_at)
        .bind(&c.owner_user_id)
        .bind(&c.visibility)
        .bind(&c.share_permission)
        .execute(&mut *tx)
        .await?;
        if !secrets.is_empty() {
            let fields: Vec<&SealedField> = secrets.iter().collect();
            upsert_secrets(&mut tx, &c.id, &c.workspace_id, &fields, c.created_at).await?;
        }
        journal.write(&mut tx, self.kind, &c.workspace_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A workspace's connection.
    pub async fn connection(&self, workspace: &str, id: &str) -> Result<Option<ConnectionRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM connections WHERE workspace_id = $1 AND id = $2")
                .bind(workspace)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A workspace's connections matching `f`, newest first, after `cursor` (the created time
    /// and id of the last row of the previous page), at most `limit`.
    pub async fn connections(
        &self,
        workspace: &str,
        f: &ConnectionFilter,
        cursor: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<ConnectionRow>> {
        macro_rules! from_where_order {
            () => {
                concat!(
                    " FROM connections ",
                    connection_filter!(),
                    " AND ($6 IS NULL OR created_at < $6 OR (created_at = $6 AND id > $7))",
                    " ORDER BY created_at DESC, id LIMIT $8"
                )
            };
        }
        macro_rules! bound {
            ($query:expr) => {
                $query
                    .bind(workspace)
                    .bind(f.connector.as_deref())
                    .bind(f.status.map(Status::as_str))
                    .bind(f.visible.sql().0)
                    .bind(f.visible.sql().1)
                    .bind(cursor.map(|c| c.0))
                    .bind(cursor.map(|c| c.1).unwrap_or_default())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            };
        }
        if self.kind == DbKind::Postgres {
            // PostgreSQL's driver decodes columns quickly enough; building the JSON there was not
            // faster (BENCHMARKS.md, "Listing").
            return Ok(bound!(sqlx::query_as(concat!(
                "SELECT *",
                from_where_order!()
            ))));
        }
        // SQLite: each row as one JSON array built by SQLite, read as one text column. (The whole
        // page as one aggregate text measured no faster: BENCHMARKS.md, "Listing".)
        let rows: Vec<String> = bound!(sqlx::query_scalar(concat!(
            "SELECT json_array(",
            row_as_json!(),
            ")",
            from_where_order!()
        )));
        rows.iter()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| StoreError::Db(sqlx::Error::Decode(Box::new(e))))
            })
            .collect()
    }

    /// How many of a workspace's connections match.
    pub async fn count_connections(&self, workspace: &str, f: &ConnectionFilter) -> Result<i64> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM connections ",
            connection_filter!()
        ))
        .bind(workspace)
        .bind(f.connector.as_deref())
        .bind(f.status.map(Status::as_str))
        .bind(f.visible.sql().0)
        .bind(f.visible.sql().1)
        .fetch_one(&self.pool)
        .await?)
    }

    /// One page of a workspace's connections, newest first, and how many match in all.
    pub async fn connections_page(
        &self,
        workspace: &str,
        f: &ConnectionFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ConnectionRow>, i64)> {
        let total = self.count_connections(workspace, f).await?;
        let rows = sqlx::query_as(concat!(
            "SELECT * FROM connections ",
            connection_filter!(),
            " ORDER BY created_at DESC, id LIMIT $6 OFFSET $7"
        ))
        .bind(workspace)
        .bind(f.connector.as_deref())
        .bind(f.status.map(Status::as_str))
        .bind(f.visible.sql().0)
        .bind(f.visible.sql().1)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows, total))
    }

    /// Sets status and reason; true when the status changed (only one of several concurrent
    /// identical changes sees true).
    pub async fn set_status(
        &self,
        workspace: &str,
        id: &str,
        status: Status,
        reason: Option<&str>,
    ) -> Result<bool> {
        self.transition_status(workspace, id, None, status, reason, |_| Journal::new())
            .await
    }

    /// Sets status and reason; when the status actually changes, writes the journal `journal`
    /// makes from the updated row (audit rows, webhook events) in the same transaction.
    /// With `from`, only a connection still in that status changes (a decision made on a read
    /// that another process has overtaken changes nothing). True when the status changed.
    pub async fn transition_status(
        &self,
        workspace: &str,
        id: &str,
        from: Option<Status>,
        status: Status,
        reason: Option<&str>,
        journal: impl FnOnce(&ConnectionRow) -> Journal,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let changed = sqlx::query(
            "UPDATE connections SET status = $3, status_reason = $4, updated_at = $5
             WHERE workspace_id = $1 AND id = $2 AND status <> $3 AND ($6 IS NULL OR status = $6)",
        )
        .bind(workspace)
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .bind(from.map(Status::as_str))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            let row: ConnectionRow =
                sqlx::query_as("SELECT * FROM connections WHERE workspace_id = $1 AND id = $2")
                    .bind(workspace)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            journal(&row).write(&mut tx, self.kind, workspace).await?;
        } else {
            sqlx::query(
                "UPDATE connections SET status_reason = $3 WHERE workspace_id = $1 AND id = $2 AND status = $4",
            )
            .bind(workspace)
            .bind(id)
            .bind(reason)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Revokes a connection in one transaction: sets it `revoked` with `reason` (whatever its
    /// status), deletes its secrets, and writes the journal `journal` makes from the updated row,
    /// the status it had and the number of secrets deleted. Returns that number.
    ///
    /// The connection row is locked first and the secrets second, the order token writes use,
    /// so a revoke and a concurrent token write on PostgreSQL queue instead of deadlocking (and
    /// the token write, fenced on `status <> 'revoked'`, then stores nothing).
    pub async fn revoke_connection(
        &self,
        workspace: &str,
        id: &str,
        reason: &str,
        journal: impl FnOnce(&ConnectionRow, Status, u64) -> Journal,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let Some(before) = lock_connection(&mut tx, workspace, id).await? else {
            return Ok(0);
        };
        let row: ConnectionRow = sqlx::query_as(
            "UPDATE connections SET status = 'revoked', status_reason = $3, updated_at = $4
             WHERE workspace_id = $1 AND id = $2 RETURNING *",
        )
        .bind(workspace)
        .bind(id)
        .bind(reason)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND owner_id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        journal(&row, before, deleted)
            .write(&mut tx, self.kind, workspace)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Sets name and config, writing `journal` with them.
    pub async fn update_name_config(
        &self,
        workspace: &str,
        id: &str,
        name: &str,
        config: &str,
        journal: &Journal,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let updated = sqlx::query("UPDATE connections SET name = $3, config = $4, updated_at = $5 WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .bind(name)
            .bind(config)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 1 {
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets who may use a connection, with the journal of the change, in one transaction.
    pub async fn set_sharing(
        &self,
        workspace: &str,
        id: &str,
        visibility: &str,
        permission: &str,
        journal: &Journal,
    ) -> Result<()> {
        self.change_journaled(
            sqlx::query(
                "UPDATE connections SET visibility = $3, share_permission = $4, updated_at = $5
             WHERE workspace_id = $1 AND id = $2 AND (visibility <> $3 OR share_permission <> $4)",
            )
            .bind(workspace)
            .bind(id)
            .bind(visibility)
            .bind(permission)
            .bind(now_ms()),
            workspace,
            journal,
        )
        .await?;
        Ok(())
    }

    /// Switches a connection off (`disabled_at` now) or on, writing `journal` when that changed
    /// anything; true when it did.
    pub async fn set_enabled(
        &self,
        workspace: &str,
        id: &str,
        enabled: bool,
        journal: &Journal,
    ) -> Result<bool> {
        let sql = if enabled {
            "UPDATE connections SET disabled_at = NULL, updated_at = $3
             WHERE workspace_id = $1 AND id = $2 AND disabled_at IS NOT NULL"
        } else {
            "UPDATE connections SET disabled_at = $3, updated_at = $3
             WHERE workspace_id = $1 AND id = $2 AND disabled_at IS NULL"
        };
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(sql)
            .bind(workspace)
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if changed {
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Records the account behind a connection and activates it.
    pub async fn set_account(
        &self,
        workspace: &str,
        id: &str,
        account_id: &str,
        name: &str,
        email: Option<&str>,
        probe_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET account_id = $3, account_name = $4, account_email = $5,
               lookup_attempts = 0, next_lookup_at = NULL, updated_at = $6,
               next_probe_at = CASE WHEN auth_kind = 'api_key' OR expires_at IS NULL THEN $7 ELSE NULL END
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace)
        .bind(id)
        .bind(account_id)
        .bind(name)
        .bind(email)
        .bind(now_ms())
        .bind(probe_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Schedules another account lookup (after a transient failure).
    pub async fn schedule_lookup(
        &self,
        workspace: &str,
        id: &str,
        at: i64,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET lookup_attempts = lookup_attempts + 1, next_lookup_at = $3, status_reason = $4, updated_at = $5
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace)
        .bind(id)
        .bind(at)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending connections whose account lookup is due.
    pub async fn due_lookups(&self, now: i64, limit: i64) -> Result<Vec<ConnectionRow>> {
        Ok(sqlx::query_as(DUE_LOOKUPS)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Sets requested scopes (reconnect with more scopes).
    pub async fn set_requested_scopes(
        &self,
        workspace: &str,
        id: &str,
        scopes: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE connections SET requested_scopes = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .bind(scopes)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a connection and its secrets, writing `journal` with it, unless dependents exist;
    /// returns the number of dependents that blocked it (0 means deleted).
    pub async fn delete_connection(
        &self,
        workspace: &str,
        id: &str,
        journal: &Journal,
    ) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM dependents WHERE workspace_id = $1 AND connection_id = $2",
        )
        .bind(workspace)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        if n > 0 {
            return Ok(n);
        }
        // The row first, then the secrets: the order token writes take them in.
        lock_connection(&mut tx, workspace, id).await?;
        sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND owner_id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM oauth_flows WHERE workspace_id = $1 AND connection_id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM connections WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 1 {
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(0)
    }

    /// Connections whose authorization was abandoned: `pending`, never given tokens, created
    /// before `cutoff`, with no flow still open after `cutoff` and no dependent.
    pub async fn abandoned_connections(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> Result<Vec<ConnectionRow>> {
        Ok(sqlx::query_as(&abandoned_connections_sql())
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes an abandoned connection (the conditions of [`Store::abandoned_connections`],
    /// checked again in the same statement) with its flows, writing `journal` with it; true when
    /// it was deleted.
    pub async fn delete_abandoned(
        &self,
        workspace: &str,
        id: &str,
        cutoff: i64,
        journal: &Journal,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let sql = format!(
            "DELETE FROM connections AS c WHERE workspace_id = $1 AND id = $2 AND {}",
            abandoned("$3")
        );
        let deleted = sqlx::query(&sql)
            .bind(workspace)
            .bind(id)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            sqlx::query("DELETE FROM oauth_flows WHERE workspace_id = $1 AND connection_id = $2")
                .bind(workspace)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            journal.write(&mut tx, self.kind, workspace).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Registers a dependent (idempotent); true when it was new.
    pub async fn add_dependent(&self, workspace: &str, connection: &str, r: &str) -> Result<bool> {
        Ok(sqlx::query(
            "INSERT INTO dependents (connection_id, ref, workspace_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (connection_id, ref) DO NOTHING",
        )
        .bind(connection)
        .bind(r)
        .bind(workspace)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Removes a dependent; true when it existed.
    pub async fn remove_dependent(
        &self,
        workspace: &str,
        connection: &str,
        r: &str,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "DELETE FROM dependents WHERE workspace_id = $1 AND connection_id = $2 AND ref = $3",
        )
        .bind(workspace)
        .bind(connection)
        .bind(r)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// A connection's dependents: (ref, created_at).
    pub async fn dependents(
        &self,
        workspace: &str,
        connection: &str,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query("SELECT ref, created_at FROM dependents WHERE workspace_id = $1 AND connection_id = $2 ORDER BY ref")
            .bind(workspace)
            .bind(connection)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Records when connections were last used (coalesced writes: one per connection per flush).
    pub async fn touch_last_used(&self, used: &[(String, String, i64)]) -> Result<()> {
        for (ws, id, at) in used {
            sqlx::query(
                "UPDATE connections SET last_used_at = $3 WHERE workspace_id = $1 AND id = $2
                   AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(ws)
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// Locks a connection's row in `tx` (a no-op update: the row lock on PostgreSQL, the write lock
/// SQLite already holds) and returns its status, or `None` when it does not exist.
async fn lock_connection(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    workspace: &str,
    id: &str,
) -> Result<Option<Status>> {
    let row = sqlx::query(
        "UPDATE connections SET updated_at = updated_at WHERE workspace_id = $1 AND id = $2
         RETURNING status",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|r| r.get::<String, _>(0).parse().ok()))
}

/// Pending connections whose account lookup is due before `$1`, first due first.
pub(super) const DUE_LOOKUPS: &str = "SELECT * FROM connections
    WHERE status = 'pending' AND next_lookup_at IS NOT NULL AND next_lookup_at <= $1
    ORDER BY next_lookup_at LIMIT $2";

/// The sweep of abandoned authorizations (before `$1`, at most `$2`, oldest first). Its
/// `status = 'pending' AND token_version = 0` is the predicate of the partial index
/// `connections_abandoned`, which lets it read only pending rows.
pub(super) fn abandoned_connections_sql() -> String {
    format!(
        "SELECT * FROM connections c WHERE {} ORDER BY created_at LIMIT $2",
        abandoned("$1")
    )
}

/// The condition on a connection `c` whose authorization was abandoned before the time in
/// parameter `cutoff` (see [`Store::abandoned_connections`]).
fn abandoned(cutoff: &str) -> String {
    format!(
        "c.status = 'pending' AND c.token_version = 0 AND c.created_at < {cutoff}
         AND NOT EXISTS (SELECT 1 FROM oauth_flows f WHERE f.connection_id = c.id AND f.expires_at > {cutoff})
         AND NOT EXISTS (SELECT 1 FROM dependents d WHERE d.connection_id = c.id)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_row_columns_are_the_struct_fields_in_order_and_read_back() {
        let mut row = ConnectionRow::new(
            "conn_1",
            "default",
            "slack",
            "Sales \"team\"".into(),
            "oauth2",
            Status::Active,
            r#"{"channel":"C1"}"#.into(),
        );
        row.granted_scopes = Some(r#"["a","b"]"#.into());
        row.expires_at = Some(1_700_000_000_000);
        row.owner_user_id = Some("usr_1".into());
        let value = serde_json::to_value(&row).unwrap();
        let columns: Vec<&str> = ROW_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(
            columns.len(),
            value.as_object().unwrap().len(),
            "every field"
        );
        // Serialised, the struct writes its fields in declaration order.
        let text = serde_json::to_string(&row).unwrap();
        let at: Vec<usize> = columns
            .iter()
            .map(|c| {
                text.find(&format!("\"{c}\":"))
                    .unwrap_or_else(|| panic!("{c}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "row_as_json! lists ConnectionRow's fields in their order"
        );
        // An array in that order, as the databases build it, reads back as the same row.
        let array: Vec<&serde_json::Value> = columns.iter().map(|c| &value[*c]).collect();
        let back: ConnectionRow =
            serde_json::from_str(&serde_json::to_string(&array).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), value);
    }
}
