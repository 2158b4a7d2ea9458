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

mod api_keys;
mod audit;
mod connections;
mod flows;
mod journal;
mod leases;
mod provider_apps;
mod providers;
mod requests;
mod secrets;
mod sessions;
mod tokens;
mod uploads;
mod users;
mod webhooks;

pub use crate::model::{Status, now_ms};

pub use api_keys::ApiKeyRow;
pub use audit::{AuditFilter, AuditRow};
pub use connections::{ConnectionFilter, ConnectionRow, ROW_COLUMNS, Visible};
pub use flows::FlowRow;
pub use journal::Journal;
pub use leases::{Claimed, Heartbeat};
pub use provider_apps::ProviderAppRow;
pub use providers::ProviderRow;
pub use requests::RequestRow;
pub use secrets::{SealedField, SecretRow};
pub use sessions::UiSessionRow;
pub use tokens::TokenMeta;
pub use uploads::{Deployment, Upload};
pub use users::{InvitationRow, MemberRow, SsoFlowRow, UserRow};
pub use webhooks::{DeliveryRow, OutEvent, WebhookRow};

use tokens::{upsert_secret, upsert_secrets};
use webhooks::enqueue;

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

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
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

    /// Removes a setting.
    pub async fn delete_setting(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The statements the background loops run every second or so (SQLite's form): each must
    /// read an index range, so its cost does not grow with the number of connections, audit
    /// rows or flows.
    fn background_statements() -> Vec<(&'static str, String)> {
        vec![
            (
                "claim due refreshes",
                leases::claim_due_refreshes_sql("", 0),
            ),
            (
                "claim due refreshes, skipping rate-limited connectors",
                leases::claim_due_refreshes_sql("", 2),
            ),
            ("claim due probes", leases::claim_due_probes_sql("")),
            (
                "flag expiring refresh tokens",
                leases::flag_expiring_sql(""),
            ),
            ("due account lookups", connections::DUE_LOOKUPS.into()),
            (
                "abandoned authorizations",
                connections::abandoned_connections_sql(),
            ),
            (
                "expired connection requests",
                requests::EXPIRED_REQUESTS.into(),
            ),
            ("expired flows' secrets", flows::PURGE_FLOW_SECRETS.into()),
            ("expired flows", flows::PURGE_FLOWS.into()),
            ("audit retention", audit::PURGE_AUDIT.into()),
            (
                "claim webhook deliveries",
                webhooks::claim_deliveries_sql(""),
            ),
        ]
    }

    #[tokio::test]
    async fn background_sweeps_read_an_index_range_never_a_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let store = Store::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        for (what, sql) in background_statements() {
            let params = (1..=9).filter(|n| sql.contains(&format!("${n}"))).count();
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(&explain);
            for _ in 0..params {
                q = q.bind(0i64);
            }
            let plan: Vec<String> = q
                .fetch_all(&mut db)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect();
            assert!(
                plan.iter().any(|l| l.starts_with("SEARCH ")),
                "{what}: no index search in the plan {plan:#?}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN ")),
                "{what}: reads a whole table, so it costs more with every row: {plan:#?}"
            );
        }
    }
}
