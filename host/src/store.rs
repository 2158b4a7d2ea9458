//! Persistence: one repository surface over SQLite (the embedded default) and PostgreSQL.
//!
//! Queries are written once with `$n` placeholders and run through sqlx's `Any` driver; the few
//! dialect differences are branched on [`DbKind`]. Times are Unix milliseconds, JSON is TEXT.
//!
//! The store holds ciphertext only: it never sees a plaintext secret and never calls the vault.
//! Every query that reads or writes a workspace's rows takes the workspace id, so one workspace's
//! rows cannot be reached through another's.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// SQLite, embedded.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database error.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names an unsupported database.
    #[error("unsupported database URL {0:?}: use sqlite:PATH or postgres://…")]
    Url(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
}

/// A connection row (no secrets: those are in `secrets`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ConnectionRow {
    pub id: String,
    pub workspace_id: String,
    pub connector_id: String,
    pub name: String,
    pub auth_kind: String,
    pub status: String,
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
}

impl ConnectionRow {
    /// A new row: the given fields, everything else empty, created now.
    pub fn new(
        id: &str,
        workspace: &str,
        connector: &str,
        name: String,
        auth_kind: &str,
        status: &str,
        config: String,
    ) -> Self {
        let now = now_ms();
        ConnectionRow {
            id: id.into(),
            workspace_id: workspace.into(),
            connector_id: connector.into(),
            name,
            auth_kind: auth_kind.into(),
            status: status.into(),
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
        }
    }
}

/// An OAuth flow in progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlowRow {
    pub id: String,
    pub workspace_id: String,
    pub connection_id: String,
    pub connector_id: String,
    pub state_hash: String,
    pub launch_hash: String,
    pub browser_hash: Option<String>,
    pub redirect_uri: String,
    pub requested_scopes: String,
    pub return_to: Option<String>,
    pub reconnect: i64,
    /// The UI session that started the flow: only its browser may open the launch link.
    pub session_hash: Option<String>,
    pub expires_at: i64,
    pub launched_at: Option<i64>,
    pub consumed_at: Option<i64>,
    pub created_at: i64,
}

/// A signed-in web UI session (the cookie's hash, never the cookie).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UiSessionRow {
    pub id_hash: String,
    pub csrf_token: String,
    pub workspace_id: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

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
}

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

/// An audit event.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub workspace_id: String,
    pub connection_id: Option<String>,
    pub action: String,
    pub actor: String,
    pub detail: String,
    pub created_at: i64,
}

/// A sealed secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub owner_id: String,
    pub field: String,
    pub workspace_id: String,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// The `WHERE` clause of connection listings: `$1` workspace, `$2` connector, `$3` status (both
/// optional).
macro_rules! connection_filter {
    () => {
        "WHERE workspace_id = $1 AND ($2 IS NULL OR connector_id = $2) AND ($3 IS NULL OR status = $3)"
    };
}

/// Filters for listing connections.
#[derive(Debug, Default, Clone)]
pub struct ConnectionFilter {
    pub connector: Option<String>,
    pub status: Option<String>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite:path` / `sqlite://path`, or `postgres://…`). A SQLite file is
    /// created when missing.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            DbKind::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let pool = match kind {
            DbKind::Sqlite => {
                // Create the file, enable WAL and foreign keys, then open the Any pool on it.
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                drop(sqlx::SqlitePool::connect_with(opts).await?);
                let sep = if url.contains('?') { '&' } else { '?' };
                AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&format!("{url}{sep}mode=rwc"))
                    .await?
            }
            DbKind::Postgres => {
                // KEYPORT_DB_MAX_CONNECTIONS: per process; mind PostgreSQL's max_connections
                // across replicas.
                let max = std::env::var("KEYPORT_DB_MAX_CONNECTIONS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(16);
                AnyPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        Ok(Store { pool, kind })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        match self.kind {
            DbKind::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            DbKind::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The row-lock clause of claim queries: PostgreSQL replicas claim disjoint rows; SQLite has
    /// one writer and needs none.
    fn skip_locked(&self) -> &'static str {
        match self.kind {
            DbKind::Postgres => " FOR UPDATE SKIP LOCKED",
            DbKind::Sqlite => "",
        }
    }

    /// The database kind.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// The pool, for the few callers that need a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- settings ----

    /// A setting's value.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r: AnyRow| r.get::<String, _>(0)))
    }

    /// Sets a setting only if it is not set; returns whether it was written.
    pub async fn init_setting(&self, key: &str, value: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets a setting.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- workspaces and API keys ----

    /// Creates a workspace if it does not exist.
    pub async fn ensure_workspace(&self, id: &str, name: &str) -> Result<()> {
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a workspace exists.
    pub async fn workspace_exists(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// All workspaces: (id, name, created_at).
    pub async fn workspaces(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(
            sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )
    }

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

    // ---- provider apps ----

    /// Creates or replaces a provider app.
    pub async fn upsert_provider_app(&self, row: &ProviderAppRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_apps (workspace_id, connector_id, client_id, scopes, endpoint_overrides, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (workspace_id, connector_id) DO UPDATE SET client_id = excluded.client_id,
               scopes = excluded.scopes, endpoint_overrides = excluded.endpoint_overrides, updated_at = excluded.updated_at",
        )
        .bind(&row.workspace_id)
        .bind(&row.connector_id)
        .bind(&row.client_id)
        .bind(&row.scopes)
        .bind(&row.endpoint_overrides)
        .bind(row.updated_at)
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

    // ---- connections ----

    /// Inserts a new connection.
    pub async fn insert_connection(&self, c: &ConnectionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO connections (id, workspace_id, connector_id, name, auth_kind, status, status_reason, config,
               metadata, requested_scopes, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(&c.id)
        .bind(&c.workspace_id)
        .bind(&c.connector_id)
        .bind(&c.name)
        .bind(&c.auth_kind)
        .bind(&c.status)
        .bind(&c.status_reason)
        .bind(&c.config)
        .bind(&c.metadata)
        .bind(&c.requested_scopes)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
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

    /// A workspace's connections, newest first.
    pub async fn connections(
        &self,
        workspace: &str,
        f: &ConnectionFilter,
    ) -> Result<Vec<ConnectionRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT * FROM connections ",
            connection_filter!(),
            " ORDER BY created_at DESC, id"
        ))
        .bind(workspace)
        .bind(f.connector.as_deref())
        .bind(f.status.as_deref())
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many of a workspace's connections match.
    pub async fn count_connections(&self, workspace: &str, f: &ConnectionFilter) -> Result<i64> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM connections ",
            connection_filter!()
        ))
        .bind(workspace)
        .bind(f.connector.as_deref())
        .bind(f.status.as_deref())
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
            " ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"
        ))
        .bind(workspace)
        .bind(f.connector.as_deref())
        .bind(f.status.as_deref())
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
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool> {
        self.transition_status(workspace, id, None, status, reason, |_| None)
            .await
    }

    /// Sets status and reason; when the status actually changes, queues the event `event`
    /// makes from the updated row for every matching webhook, in the same transaction.
    /// With `from`, only a connection still in that status changes (a decision made on a read
    /// that another process has overtaken changes nothing). True when the status changed.
    pub async fn transition_status(
        &self,
        workspace: &str,
        id: &str,
        from: Option<&str>,
        status: &str,
        reason: Option<&str>,
        event: impl FnOnce(&ConnectionRow) -> Option<OutEvent>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let changed = sqlx::query(
            "UPDATE connections SET status = $3, status_reason = $4, updated_at = $5
             WHERE workspace_id = $1 AND id = $2 AND status <> $3 AND ($6 IS NULL OR status = $6)",
        )
        .bind(workspace)
        .bind(id)
        .bind(status)
        .bind(reason)
        .bind(now)
        .bind(from)
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
            if let Some(e) = event(&row) {
                enqueue(&mut *tx, workspace, &e).await?;
            }
        } else {
            sqlx::query(
                "UPDATE connections SET status_reason = $3 WHERE workspace_id = $1 AND id = $2 AND status = $4",
            )
            .bind(workspace)
            .bind(id)
            .bind(reason)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Queues an event for every matching webhook of the workspace.
    pub async fn emit(&self, workspace: &str, event: &OutEvent) -> Result<()> {
        enqueue(&self.pool, workspace, event).await
    }

    /// Sets name and/or config.
    pub async fn update_name_config(
        &self,
        workspace: &str,
        id: &str,
        name: &str,
        config: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE connections SET name = $3, config = $4, updated_at = $5 WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .bind(name)
            .bind(config)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
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
        Ok(sqlx::query_as(
            "SELECT * FROM connections WHERE status = 'pending' AND next_lookup_at IS NOT NULL AND next_lookup_at <= $1
             ORDER BY next_lookup_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores new tokens' metadata and sealed secrets in one transaction, bumping the token
    /// version. `refresh` is `None` to keep the stored refresh token.
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
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let fields: Vec<&SealedField> = std::iter::once(access).chain(refresh).collect();
        upsert_secrets(&mut tx, id, workspace, &fields, now).await?;
        let row = bind_token_update(
            sqlx::query(
            "UPDATE connections SET expires_at = $3, refresh_token_expires_at = COALESCE($4, refresh_token_expires_at),
               granted_scopes = COALESCE($5, granted_scopes), scope_narrowed = $6, metadata = $7,
               last_refreshed_at = $8, token_version = token_version + 1, updated_at = $8,
               next_refresh_at = $11, refresh_failures = 0, next_probe_at = $12,
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

    /// Claims the refresh lease for the token version `version`, unless another process holds
    /// an unexpired lease or the version moved on. True when this call claimed it.
    pub async fn acquire_lease(
        &self,
        workspace: &str,
        id: &str,
        owner: &str,
        version: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let now = now_ms();
        Ok(sqlx::query(
            "UPDATE connections SET lease_owner = $3, lease_until = $5
             WHERE workspace_id = $1 AND id = $2 AND token_version = $4
               AND (lease_until IS NULL OR lease_until < $6 OR lease_owner = $3)",
        )
        .bind(workspace)
        .bind(id)
        .bind(owner)
        .bind(version)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Claims up to `limit` due refreshes for `owner` under a lease of `ttl_ms`, oldest due
    /// first, skipping leased rows and the connectors in `skip` (rate-limited right now).
    /// PostgreSQL replicas claim disjoint sets (`FOR UPDATE SKIP LOCKED`); SQLite has one writer.
    pub async fn claim_due_refreshes(
        &self,
        now: i64,
        limit: i64,
        owner: &str,
        ttl_ms: i64,
        skip: &[String],
    ) -> Result<Vec<Claimed>> {
        let skip_clause = if skip.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..skip.len()).map(|i| format!("${}", i + 5)).collect();
            format!(" AND connector_id NOT IN ({})", marks.join(", "))
        };
        let lock = self.skip_locked();
        let sql = format!(
            "UPDATE connections SET lease_owner = $3, lease_until = $4
             WHERE id IN (SELECT id FROM connections
               WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status IN ('active', 'error')
                 AND (lease_until IS NULL OR lease_until < $1){skip_clause}
               ORDER BY next_refresh_at LIMIT $2{lock})
             RETURNING workspace_id, id, connector_id, token_version"
        );
        let mut q = sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .bind(owner)
            .bind(now + ttl_ms);
        for c in skip {
            q = q.bind(c);
        }
        Ok(q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| Claimed {
                workspace_id: r.get(0),
                id: r.get(1),
                connector_id: r.get(2),
                token_version: r.get(3),
            })
            .collect())
    }

    /// Extends a lease this process holds on token version `version`; false when it is no
    /// longer ours (expired and claimed by another process, or the tokens moved on).
    pub async fn renew_lease(
        &self,
        workspace: &str,
        id: &str,
        owner: &str,
        version: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE connections SET lease_until = $5
             WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3 AND token_version = $4",
        )
        .bind(workspace)
        .bind(id)
        .bind(owner)
        .bind(version)
        .bind(now_ms() + ttl_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Claims up to `limit` connections due for a probe, moving their next probe to `next` in
    /// the same statement so no other replica picks them: (workspace, id).
    pub async fn claim_due_probes(
        &self,
        now: i64,
        limit: i64,
        next: i64,
    ) -> Result<Vec<(String, String)>> {
        let lock = self.skip_locked();
        let sql = format!(
            "UPDATE connections SET next_probe_at = $3
             WHERE id IN (SELECT id FROM connections
               WHERE next_probe_at IS NOT NULL AND next_probe_at <= $1 AND status IN ('active', 'error')
                 AND next_lookup_at IS NULL
               ORDER BY next_probe_at LIMIT $2{lock})
             RETURNING workspace_id, id"
        );
        Ok(sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .bind(next)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Sets (or clears) the next probe.
    pub async fn set_probe(&self, workspace: &str, id: &str, at: Option<i64>) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET next_probe_at = $3 WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace)
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Flags, once, up to `limit` live connections whose refresh token expires before
    /// `horizon`: (workspace, id, refresh-token expiry).
    pub async fn flag_expiring_refresh_tokens(
        &self,
        horizon: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, i64)>> {
        let lock = self.skip_locked();
        let sql = format!(
            "UPDATE connections SET expiring_soon_at = $3, expiring_soon_reason = 'refresh_token_expiring'
             WHERE id IN (SELECT id FROM connections
               WHERE refresh_token_expires_at IS NOT NULL AND refresh_token_expires_at <= $1
                 AND expiring_soon_at IS NULL AND status IN ('active', 'error')
               LIMIT $2{lock})
             RETURNING workspace_id, id, refresh_token_expires_at"
        );
        Ok(sqlx::query(&sql)
            .bind(horizon)
            .bind(limit)
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Flags a connection as expiring soon unless it already is; true when this call flagged it.
    pub async fn set_expiring_soon(&self, workspace: &str, id: &str, reason: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE connections SET expiring_soon_at = $3, expiring_soon_reason = $4
             WHERE workspace_id = $1 AND id = $2 AND expiring_soon_at IS NULL",
        )
        .bind(workspace)
        .bind(id)
        .bind(now_ms())
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Clears the expiring-soon flag (any reason, or only `reason`).
    pub async fn clear_expiring_soon(
        &self,
        workspace: &str,
        id: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET expiring_soon_at = NULL, expiring_soon_reason = NULL
             WHERE workspace_id = $1 AND id = $2 AND ($3 IS NULL OR expiring_soon_reason = $3)",
        )
        .bind(workspace)
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refreshes due now: how many, and the oldest due time.
    pub async fn refresh_backlog(&self, now: i64) -> Result<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(next_refresh_at) FROM connections
             WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status IN ('active', 'error')",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get(0), row.try_get::<Option<i64>, _>(1).unwrap_or(None)))
    }

    /// Sets the next scheduled refresh and the run of failures.
    pub async fn schedule_refresh(
        &self,
        workspace: &str,
        id: &str,
        at: Option<i64>,
        failures: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE connections SET next_refresh_at = $3, refresh_failures = $4 WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .bind(at)
            .bind(failures)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Releases a lease this process holds.
    pub async fn release_lease(&self, workspace: &str, id: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE workspace_id = $1 AND id = $2 AND lease_owner = $3")
            .bind(workspace)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
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

    /// Deletes a connection and its secrets, unless dependents exist; returns the number of
    /// dependents that blocked it (0 means deleted).
    pub async fn delete_connection(&self, workspace: &str, id: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("DELETE FROM connections WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(0)
    }

    // ---- secrets ----

    /// Stores one sealed secret.
    pub async fn put_secret(&self, owner: &str, workspace: &str, s: &SealedField) -> Result<()> {
        let mut tx = self.pool.begin().await?;
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

    // ---- OAuth flows ----

    /// Records a new flow.
    pub async fn insert_flow(&self, f: &FlowRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_flows (id, workspace_id, connection_id, connector_id, state_hash, launch_hash, redirect_uri,
               requested_scopes, return_to, reconnect, expires_at, created_at, session_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(&f.connection_id)
        .bind(&f.connector_id)
        .bind(&f.state_hash)
        .bind(&f.launch_hash)
        .bind(&f.redirect_uri)
        .bind(&f.requested_scopes)
        .bind(&f.return_to)
        .bind(f.reconnect)
        .bind(f.expires_at)
        .bind(f.created_at)
        .bind(&f.session_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unopened, unexpired flow with this launch hash.
    pub async fn flow_by_launch(&self, launch_hash: &str, now: i64) -> Result<Option<FlowRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM oauth_flows
             WHERE launch_hash = $1 AND launched_at IS NULL AND consumed_at IS NULL AND expires_at > $2",
        )
        .bind(launch_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Binds a flow to the browser that opened its launch link, once. Returns the flow if this
    /// call bound it. A flow started from a UI session binds only for that session.
    pub async fn launch_flow(
        &self,
        launch_hash: &str,
        browser_hash: &str,
        session_hash: Option<&str>,
        now: i64,
    ) -> Result<Option<FlowRow>> {
        Ok(sqlx::query_as(
            "UPDATE oauth_flows SET browser_hash = $2, launched_at = $3
             WHERE launch_hash = $1 AND launched_at IS NULL AND consumed_at IS NULL AND expires_at > $3
               AND (session_hash IS NULL OR session_hash = $4)
             RETURNING *",
        )
        .bind(launch_hash)
        .bind(browser_hash)
        .bind(now)
        .bind(session_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Creates a UI session.
    pub async fn create_ui_session(&self, s: &UiSessionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, csrf_token, workspace_id, created_at, last_seen_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id_hash)
        .bind(&s.csrf_token)
        .bind(&s.workspace_id)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live UI session with this cookie hash; expired ones are deleted on sight.
    pub async fn ui_session(&self, id_hash: &str, now: i64) -> Result<Option<UiSessionRow>> {
        let row: Option<UiSessionRow> =
            sqlx::query_as("SELECT * FROM ui_sessions WHERE id_hash = $1")
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

    /// The flow with this state hash.
    pub async fn flow_by_state(&self, state_hash: &str) -> Result<Option<FlowRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM oauth_flows WHERE state_hash = $1")
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Consumes a flow atomically; true only for the one caller that consumed it.
    pub async fn consume_flow(&self, id: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query("UPDATE oauth_flows SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL AND expires_at > $2")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    /// Removes flows that expired before `before`, with their secrets.
    pub async fn purge_flows(&self, before: i64) -> Result<u64> {
        sqlx::query("DELETE FROM secrets WHERE owner_id IN (SELECT id FROM oauth_flows WHERE expires_at < $1)")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("DELETE FROM oauth_flows WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    // ---- dependents ----

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

    // ---- audit ----

    /// Appends an audit event.
    pub async fn audit(
        &self,
        workspace: &str,
        connection: Option<&str>,
        action: &str,
        actor: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(workspace)
            .bind(connection)
            .bind(action)
            .bind(actor)
            .bind(detail.to_string())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inserts many audit rows in one statement (proxied requests, written in batches).
    pub async fn audit_batch(&self, rows: &[AuditRow]) -> Result<()> {
        for chunk in rows.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO audit_events (workspace_id, connection_id, action, actor, detail, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 6;
                sql.push_str(&format!(
                    "{}(${}, ${}, ${}, ${}, ${}, ${})",
                    if i == 0 { "" } else { ", " },
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(&r.workspace_id)
                    .bind(&r.connection_id)
                    .bind(&r.action)
                    .bind(&r.actor)
                    .bind(&r.detail)
                    .bind(r.created_at);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// One page of a workspace's audit log, newest first: events older than the cursor
    /// `before_id`, filtered by connection, action and time.
    pub async fn audit_page(
        &self,
        workspace: &str,
        connection: Option<&str>,
        action: Option<&str>,
        since: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM audit_events WHERE workspace_id = $1
               AND ($2 IS NULL OR connection_id = $2) AND ($3 IS NULL OR action = $3)
               AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR id < $5)
             ORDER BY id DESC LIMIT $6",
        )
        .bind(workspace)
        .bind(connection)
        .bind(action)
        .bind(since)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes up to `limit` audit events older than `before`; returns how many.
    pub async fn purge_audit(&self, before: i64, limit: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE created_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected())
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

    // ---- webhooks ----

    /// Adds a subscription.
    pub async fn insert_webhook(&self, w: &WebhookRow) -> Result<()> {
        sqlx::query("INSERT INTO webhooks (id, workspace_id, url, events, description, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&w.id)
            .bind(&w.workspace_id)
            .bind(&w.url)
            .bind(&w.events)
            .bind(&w.description)
            .bind(w.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A workspace's subscriptions (or one of them).
    pub async fn webhooks(&self, workspace: &str, id: Option<&str>) -> Result<Vec<WebhookRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM webhooks WHERE workspace_id = $1 AND ($2 IS NULL OR id = $2) ORDER BY created_at, id",
        )
        .bind(workspace)
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a subscription and its pending deliveries; true when it existed.
    pub async fn delete_webhook(&self, workspace: &str, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_outbox WHERE webhook_id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(workspace)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM webhooks WHERE workspace_id = $1 AND id = $2")
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Claims up to `limit` due deliveries, pushing their next attempt `lease_ms` ahead so no
    /// other replica sends them meanwhile.
    pub async fn claim_deliveries(&self, limit: i64, lease_ms: i64) -> Result<Vec<DeliveryRow>> {
        let lock = self.skip_locked();
        let now = now_ms();
        let sql = format!(
            "UPDATE webhook_outbox SET next_attempt_at = $2
             WHERE id IN (SELECT id FROM webhook_outbox
               WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
               ORDER BY created_at, id LIMIT $3{lock})
             RETURNING *"
        );
        let mut rows: Vec<DeliveryRow> = sqlx::query_as(&sql)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(rows)
    }

    /// Records an attempt: delivered, retried at `next`, or given up (`next` None, not delivered).
    pub async fn delivery_attempted(
        &self,
        id: &str,
        status: Option<i64>,
        error: Option<&str>,
        delivered: bool,
        next: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $2, last_error = $3,
               delivered_at = CASE WHEN $4 = 1 THEN $5 ELSE NULL END,
               failed_at = CASE WHEN $4 = 0 AND $6 IS NULL THEN $5 ELSE NULL END,
               next_attempt_at = $6
             WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(delivered as i64)
        .bind(now)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A subscription's deliveries, newest first.
    pub async fn deliveries(
        &self,
        workspace: &str,
        webhook: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM webhook_outbox WHERE workspace_id = $1 AND webhook_id = $2
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(workspace)
        .bind(webhook)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A connection's audit events, oldest first.
    pub async fn audit_events(
        &self,
        workspace: &str,
        connection: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM audit_events WHERE workspace_id = $1 AND ($2 IS NULL OR connection_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(workspace)
        .bind(connection)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Binds $1–$13 of the token write-back (shared by the SQLite and PostgreSQL forms).
fn bind_token_update<'q>(
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

/// An event to deliver to webhooks.
#[derive(Debug, Clone)]
pub struct OutEvent {
    /// `evt_…`, the same for every subscription.
    pub id: String,
    /// `connection.revoked`, …
    pub event_type: String,
    /// The JSON body sent.
    pub payload: String,
}

/// Queues `e` for every subscription of `workspace` that wants it.
async fn enqueue<'e, E>(executor: E, workspace: &str, e: &OutEvent) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhook_outbox (id, webhook_id, workspace_id, event_id, event_type, payload, created_at, next_attempt_at)
         SELECT $1 || ':' || id, id, workspace_id, $1, $2, $3, $4, $4 FROM webhooks
         WHERE workspace_id = $5 AND (events LIKE $6 OR events LIKE '%,*,%')",
    )
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(&e.payload)
    .bind(now)
    .bind(workspace)
    .bind(format!("%,{},%", e.event_type))
    .execute(executor)
    .await?;
    Ok(())
}

/// A webhook subscription.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    pub events: String,
    pub description: String,
    pub created_at: i64,
}

/// One event for one subscription, with its delivery state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub workspace_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// A due refresh claimed under this process's lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub workspace_id: String,
    pub id: String,
    pub connector_id: String,
    /// The token version the lease was claimed for.
    pub token_version: i64,
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

/// Upserts several secrets of one owner in one statement.
async fn upsert_secrets(
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

async fn upsert_secret(
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
