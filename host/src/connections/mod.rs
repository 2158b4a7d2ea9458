//! The connection lifecycle: create (OAuth or API key), authorize, look up the account, refresh,
//! reconnect, revoke, delete; config resolution; dependents.
//!
//! Status machine (ARCHITECTURE.md):
//!
//! | from | event | to |
//! |---|---|---|
//! | — | OAuth start | `pending` |
//! | `pending` | callback + account lookup | `active` |
//! | `pending` | transient lookup failure | `pending` (lookup retried with backoff) |
//! | `pending` | access denied / flow error | `pending`, with the reason |
//! | any | refresh succeeds | `active` |
//! | `active`, `error` | `invalid_grant` / revoked | `revoked` |
//! | `active`, `error` | expired and no refresh token | `expired` |
//! | any | revoke | `revoked` (secrets deleted) |
//!
//! Every change writes an audit row. Secrets pass through here only to the vault and to the
//! provider; responses and errors carry none.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::events;
use crate::model::now_ms;
pub use crate::model::{Status, rfc3339};
use crate::oauth::{self, OAuthError, TokenCall};
use crate::registry::Registry;
use crate::runtime::{
    AuthScheme, CallContext, CallEnv, ErrorKind, Oauth2, Secret, SecretKind, TokenSet,
};
pub use crate::store::{AuditRow, ConnectionFilter, ConnectionRow, RequestRow};
use crate::store::{FlowRow, Journal, OutEvent, ProviderAppRow, SealedField, Store, TokenMeta};
use crate::vault::{Context, KeyRing};

pub mod access;
mod accounts;
mod api_keys;
mod cache;
mod config;
mod flows;
mod manage;
mod provider_apps;
mod reads;
mod refresh;
mod requests;
mod scheduler;
mod tokens;
mod usage;

pub use access::{Need, Principal, Role, Who};
pub use api_keys::CreateApiKey;
pub use cache::CONN_CACHE_TTL;
pub(crate) use cache::CachedConn;
pub use config::schema_defaults;
pub use flows::{CallbackOutcome, CallbackParams, FlowBrowser, StartOAuth, Started};
pub use manage::Patch;
pub use provider_apps::ProviderAppInput;
pub use refresh::{RefreshMode, on_demand_margin};
pub use requests::{NewRequest, REQUEST_TTL_MS, RequestView, request_view};

use config::merge;
use provider_apps::CachedApp;
use refresh::Refreshed;

/// On-demand refreshes leave alone a token valid for at least this long (or a quarter of its
/// lifetime, when that is shorter: [`on_demand_margin`]).
pub const ON_DEMAND_MARGIN_MS: i64 = 60_000;

/// How long a refresh lease lasts without renewal. Its holder renews it every third of this
/// while it works (however long the provider takes), so a crashed holder's lease lapses within
/// this time.
pub const LEASE_MS: i64 = 6_000;

/// How long a caller waits for a refresh that another caller (or process) is making before it
/// answers 503 with `Retry-After`.
pub const REFRESH_WAIT_MS: i64 = 8_000;

/// Shortest time between two refreshes of one connection caused by the provider rejecting its
/// token (the proxy after a 401).
pub const REJECTION_REFRESH_MIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Lifetime of an OAuth flow (O1: at most 10 minutes).
pub const FLOW_TTL_MS: i64 = 10 * 60 * 1000;

/// Service configuration.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Public base URL (scheme, host, port, no trailing slash): redirect URIs come from here.
    pub public_url: String,
    /// Origins (or URL prefixes) `return_to` may point at, besides the public URL.
    pub return_to_allowlist: Vec<String>,
    /// Test mode: loopback targets allowed for OAuth calls.
    pub allow_loopback: bool,
    /// First retry delay after a transient refresh failure; doubles per failure (≤ 15 min).
    pub refresh_backoff_ms: i64,
    /// Transient refresh failures in a row before the connection shows `error`.
    pub refresh_failure_threshold: i64,
    /// Lifetime of a refresh lease without renewal (its holder renews it every third of this).
    pub refresh_lease_ms: i64,
    /// How long a caller waits for someone else's refresh before answering 503.
    pub refresh_wait_ms: i64,
    /// Refreshes the scheduler runs at once in this process.
    pub refresh_concurrency: usize,
    /// Scheduled refreshes per second per connector in this process (0: unlimited).
    pub refresh_rate_per_connector: u32,
    /// Total timeout of one token-endpoint request.
    pub token_timeout_ms: u64,
    /// How often credentials that never expire (API keys, non-expiring tokens) are probed.
    pub probe_interval_ms: i64,
    /// A refresh token expiring within this window flags its connection as expiring soon.
    pub expiring_soon_ms: i64,
    /// First retry delay of a failed webhook delivery; doubles per attempt (≤ 1 h).
    pub webhook_backoff_ms: i64,
    /// Attempts before a webhook delivery is given up.
    pub webhook_max_attempts: i64,
    /// How long audit events are kept.
    pub audit_retention_ms: i64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            public_url: "http://127.0.0.1:8080".into(),
            return_to_allowlist: Vec::new(),
            allow_loopback: false,
            refresh_backoff_ms: 30_000,
            refresh_failure_threshold: 5,
            refresh_lease_ms: LEASE_MS,
            refresh_wait_ms: REFRESH_WAIT_MS,
            refresh_concurrency: 16,
            refresh_rate_per_connector: 100,
            token_timeout_ms: 10_000,
            probe_interval_ms: 6 * 3600 * 1000,
            expiring_soon_ms: 7 * 24 * 3600 * 1000,
            webhook_backoff_ms: 5_000,
            webhook_max_attempts: 12,
            audit_retention_ms: 90 * 24 * 3600 * 1000,
        }
    }
}

/// A service error with an HTTP-ish class and a message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 422 with field errors.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Field errors: (JSON pointer, message).
        fields: Vec<(String, String)>,
    },
    /// 403: the caller sees it but may not do this; says what is needed.
    #[error("{0}")]
    Forbidden(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 502: the provider failed.
    #[error("{0}")]
    Upstream(String),
    /// 503: not now; try again after `retry_after_secs` (the provider is failing and keyport
    /// is backing off).
    #[error("{message}")]
    Unavailable {
        /// What is going on and when to retry.
        message: String,
        /// Seconds until a retry may succeed (`Retry-After`).
        retry_after_secs: u64,
    },
    /// 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Error::Internal("the database failed; see the server log".into())
    }
}

impl From<crate::vault::VaultError> for Error {
    fn from(e: crate::vault::VaultError) -> Self {
        tracing::error!(error = %e, "vault error");
        Error::Internal(format!("a stored secret could not be read: {e}"))
    }
}

/// Service results.
pub type Result<T> = std::result::Result<T, Error>;

/// Who is acting (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The lifecycle service.
pub struct Service {
    pub store: Store,
    pub vault: Arc<KeyRing>,
    pub registry: Arc<Registry>,
    pub http: crate::runtime::Outbound,
    pub config: ServiceConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This process's id for refresh leases.
    instance: String,
    /// Scheduled refreshes per connector, when limited.
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Client for webhook deliveries.
    pub(crate) webhook_http: crate::runtime::Outbound,
    /// Client for proxied API calls.
    /// The proxy's client, one per thread (see [`crate::runtime::LocalUpstream`]).
    pub(crate) proxy_http: crate::runtime::LocalUpstream,
    /// Proxy use not yet written: audit rows and last-used times (flushed in batches).
    pub(crate) usage: Mutex<usage::Usage>,
    /// Provider apps recently read.
    app_cache: Mutex<HashMap<(String, String), (std::time::Instant, CachedApp)>>,
    /// Connections and their call envs recently used by the proxy (see `usable_conn`).
    conn_cache: Mutex<HashMap<String, (std::time::Instant, CachedConn)>>,
    /// The connector runtime, for loading uploads (set once at start).
    pub runtime: std::sync::OnceLock<crate::runtime::Runtime>,
    /// When the proxy last refreshed each connection because the provider rejected its token.
    pub(crate) rejection_refreshes: Mutex<HashMap<String, std::time::Instant>>,
}

/// A connection as the API and webhooks show it (never a secret). [`view`] builds it; the
/// OpenAPI document describes this very type.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = Connection)]
pub struct ConnectionView<'a> {
    pub id: &'a str,
    pub connector: &'a str,
    pub name: &'a str,
    /// `oauth2` or `api_key`.
    pub auth_kind: &'a str,
    pub status: Status,
    /// Why the connection is not active, in words to show a person.
    pub status_reason: Option<&'a str>,
    /// The provider account, once known ("Connected as …").
    pub account: Option<AccountView<'a>>,
    #[schema(value_type = Vec<String>)]
    pub requested_scopes: &'a RawValue,
    /// What the provider granted, when it says.
    #[schema(value_type = Option<Vec<String>>)]
    pub granted_scopes: Option<&'a RawValue>,
    /// The provider granted fewer scopes than were requested.
    pub scope_narrowed: bool,
    /// The connection's settings, valid against its connector's config schema.
    #[schema(value_type = Object)]
    pub config: &'a RawValue,
    /// Values the provider's token response carried (`instance_url`, `api_domain`, …).
    #[schema(value_type = Object)]
    pub metadata: &'a RawValue,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_refreshed_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(format = DateTime)]
    pub refresh_token_expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub next_refresh_at: Option<String>,
    /// Set when the connection will break soon unless someone acts (a refresh token about to
    /// expire, a provider warning).
    pub expiring_soon: Option<ExpiringSoon<'a>>,
    /// `false`: switched off (the proxy and credential reads refuse it; it keeps refreshing).
    pub enabled: bool,
    pub owner: Option<OwnerView<'a>>,
    /// `personal` or `shared`.
    pub visibility: &'a str,
    /// For shared connections: what the workspace may do with it (`use` or `manage`).
    pub permission: Option<&'a str>,
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// The provider account behind a connection.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountView<'a> {
    pub id: &'a str,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// Why a connection needs attention soon.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ExpiringSoon<'a> {
    #[schema(format = DateTime)]
    pub since: String,
    pub reason: Option<&'a str>,
}

/// The user who owns a connection.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OwnerView<'a> {
    pub user_id: &'a str,
}

/// The typed view of a connection.
pub fn connection_view(c: &ConnectionRow) -> ConnectionView<'_> {
    // The stored JSON goes out as it is (checked, not parsed into a tree and written again).
    fn parse(s: &str) -> &RawValue {
        serde_json::from_str::<&RawValue>(s)
            .unwrap_or_else(|_| serde_json::from_str::<&RawValue>("null").expect("null is JSON"))
    }
    ConnectionView {
        id: &c.id,
        connector: &c.connector_id,
        name: &c.name,
        auth_kind: &c.auth_kind,
        status: c.status,
        status_reason: c.status_reason.as_deref(),
        account: c.account_id.as_deref().map(|id| AccountView {
            id,
            display_name: c.account_name.as_deref(),
            email: c.account_email.as_deref(),
        }),
        requested_scopes: parse(&c.requested_scopes),
        granted_scopes: c.granted_scopes.as_deref().map(parse),
        scope_narrowed: c.scope_narrowed != 0,
        config: parse(&c.config),
        metadata: parse(&c.metadata),
        expires_at: c.expires_at.map(rfc3339),
        last_refreshed_at: c.last_refreshed_at.map(rfc3339),
        last_used_at: c.last_used_at.map(rfc3339),
        refresh_token_expires_at: c.refresh_token_expires_at.map(rfc3339),
        next_refresh_at: c.next_refresh_at.map(rfc3339),
        expiring_soon: c.expiring_soon_at.map(|at| ExpiringSoon {
            since: rfc3339(at),
            reason: c.expiring_soon_reason.as_deref(),
        }),
        enabled: c.disabled_at.is_none(),
        owner: c
            .owner_user_id
            .as_deref()
            .map(|user_id| OwnerView { user_id }),
        visibility: &c.visibility,
        permission: (c.visibility == "shared").then_some(c.share_permission.as_str()),
        disabled_at: c.disabled_at.map(rfc3339),
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// The JSON view of a connection ([`ConnectionView`]).
pub fn view(c: &ConnectionRow) -> Value {
    serde_json::to_value(connection_view(c)).unwrap_or(Value::Null)
}

/// An email address lower-cased and checked (one `@`, a dotted domain, no spaces), or 422 on
/// the field at `pointer`.
pub fn normalize_email(email: &str, pointer: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(e)
    } else {
        Err(Error::Invalid {
            message: format!("{email:?} is not an email address"),
            fields: vec![(pointer.into(), "an email address".into())],
        })
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn ctx<'a>(ws: &'a str, row: &'a str, field: &'a str) -> Context<'a> {
    Context {
        workspace: ws,
        row,
        field,
    }
}

const PENDING_LOOKUP: &str = "Authorized; looking up the account.";

impl Service {
    /// A service over its parts.
    pub fn new(
        store: Store,
        vault: Arc<KeyRing>,
        registry: Arc<Registry>,
        config: ServiceConfig,
    ) -> anyhow::Result<Self> {
        let http = crate::runtime::outbound_client(
            config.allow_loopback,
            std::time::Duration::from_secs(5)
                .min(std::time::Duration::from_millis(config.token_timeout_ms)),
            std::time::Duration::from_millis(config.token_timeout_ms),
        )?;
        let mut config = config;
        config.refresh_wait_ms = config.refresh_wait_ms.max(0);
        if config.refresh_lease_ms < 1_000 {
            anyhow::bail!(
                "the refresh lease ({} ms) is too short to be renewed in time; set KEYPORT_REFRESH_LEASE_MS to 1000 or more",
                config.refresh_lease_ms
            );
        }
        let limiter = std::num::NonZeroU32::new(config.refresh_rate_per_connector)
            .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n)));
        let webhook_http = crate::runtime::outbound_client(
            config.allow_loopback,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(15),
        )?;
        let proxy_http = crate::runtime::LocalUpstream::new(
            config.allow_loopback,
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(300),
        )?;
        Ok(Service {
            store,
            vault,
            registry,
            http,
            config,
            locks: Mutex::new(HashMap::new()),
            instance: format!("{}-{}", std::process::id(), crate::vault::random_hex(6)),
            limiter,
            webhook_http,
            proxy_http,
            usage: Mutex::default(),
            app_cache: Mutex::default(),
            conn_cache: Mutex::default(),
            runtime: std::sync::OnceLock::new(),
            rejection_refreshes: Mutex::default(),
        })
    }

    /// The OAuth redirect URI providers must allow.
    /// A connector's egress patterns (empty when it is not loaded).
    pub(crate) fn egress_of(&self, connector: &str) -> Vec<String> {
        self.registry
            .get(connector)
            .map(|e| e.connector.manifest().egress_hosts.clone())
            .unwrap_or_default()
    }

    /// New connections to an integration an admin hid in the workspace are refused.
    pub(crate) async fn refuse_hidden(&self, ws: &str, connector: &str) -> Result<()> {
        if self.store.connector_hidden(ws, connector).await? {
            return Err(Error::Invalid {
                message: format!(
                    "{connector} is hidden in this workspace; an admin can show it again on the Admin page (PUT /api/v1/admin/catalogue/{connector} {{\"hidden\": false}})"
                ),
                fields: vec![("/connector".into(), "hidden in this workspace".into())],
            });
        }
        Ok(())
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.config.public_url)
    }

    pub(crate) fn connector(&self, id: &str) -> Result<Arc<crate::registry::Entry>> {
        let entry = self.registry.get(id).ok_or_else(|| {
            Error::NotFound(format!(
                "no connector {id:?} is loaded; GET /api/v1/connectors lists them"
            ))
        })?;
        if entry.connector.manifest().configurable {
            return Err(Error::BadRequest(format!(
                "{id} is a template for providers described at runtime; import a provider definition and use its connector id"
            )));
        }
        Ok(entry)
    }

    /// Whether `who` may do `need` with `c` ([`access::decide`]); looks up whether the owner is
    /// a client only when the rule depends on it.
    pub async fn authorize(&self, who: &Principal, c: &ConnectionRow, need: Need) -> Result<()> {
        let owner_is_client = match (&c.owner_user_id, need) {
            (Some(owner), Need::Revoke | Need::Delete) if who.user_id() != Some(owner) => {
                self.store.role_of(&c.workspace_id, owner).await?.as_deref()
                    == Some(Role::Client.as_str())
            }
            _ => false,
        };
        access::decide(who, c, need, owner_is_client)
    }

    /// The connection `id` when `who` may do `need` with it: 404 when they may not see it, 403
    /// when they see it but may not do this.
    pub async fn connection_for(
        &self,
        who: &Principal,
        id: &str,
        need: Need,
    ) -> Result<ConnectionRow> {
        let c = self.get(&who.workspace, id).await?;
        self.authorize(who, &c, need).await?;
        Ok(c)
    }

    /// A workspace's connection, or 404, whoever asks (keyport's own paths; callers go through
    /// [`Self::connection_for`]).
    pub(crate) async fn get(&self, ws: &str, id: &str) -> Result<ConnectionRow> {
        self.store
            .connection(ws, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no connection {id:?} in this workspace")))
    }

    /// Seals a secret for `owner`'s `field` under the active key.
    pub(crate) fn seal_field(
        &self,
        ws: &str,
        owner: &str,
        field: &'static str,
        value: &str,
    ) -> SealedField {
        SealedField {
            field,
            key_id: self.vault.active().into(),
            ciphertext: self.vault.seal(value.as_bytes(), ctx(ws, owner, field)),
        }
    }

    /// Decrypts one stored secret, if present.
    pub(crate) async fn open_secret(
        &self,
        ws: &str,
        owner: &str,
        field: &str,
    ) -> Result<Option<zeroize::Zeroizing<String>>> {
        match self.store.secret(ws, owner, field).await? {
            Some(ct) => Ok(Some(self.vault.open_string(&ct, ctx(ws, owner, field))?)),
            None => Ok(None),
        }
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }

    /// The webhook event `kind` about `c`, to write in the journal of the change it describes.
    pub(crate) fn event(kind: &str, c: &ConnectionRow, extra: Value) -> OutEvent {
        events::connection_event(kind, &c.workspace_id, view(c), extra)
    }

    async fn audit(
        &self,
        ws: &str,
        conn: Option<&str>,
        action: &str,
        actor: &Actor,
        detail: Value,
    ) {
        if let Err(e) = events::audit(&self.store, ws, conn, action, &actor.0, &detail).await {
            tracing::error!(error = %e, action, "could not write an audit event");
        }
    }
}
