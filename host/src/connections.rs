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
use serde_json::{Value, json};

use crate::oauth::{self, OAuthError, TokenCall};
use crate::registry::Registry;
use crate::runtime::{
    AuthScheme, CallContext, CallEnv, ErrorKind, Oauth2, Secret, SecretKind, TokenSet,
};
use crate::store::{ConnectionRow, FlowRow, ProviderAppRow, SealedField, Store, TokenMeta, now_ms};
use crate::vault::{Context, KeyRing};

/// On-demand refreshes leave alone a token valid for at least this long.
pub const ON_DEMAND_MARGIN_MS: i64 = 60_000;

/// How long a refresh lease lasts; a crashed holder's lease expires after this.
pub const LEASE_MS: i64 = 30_000;

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
    /// Lifetime of a refresh lease; longer than two token requests (a refresh and its in-doubt
    /// retry), so a lease never lapses while its holder talks to the provider.
    pub refresh_lease_ms: i64,
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

/// What a refresh under a lease did.
enum Refreshed {
    /// Nothing was needed (the row as read); the lease is still held.
    Fresh(Box<ConnectionRow>),
    /// New tokens were committed, and the lease released with them.
    Saved,
}

/// When a refresh may be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Refresh now ("Refresh credential").
    Force,
    /// Only when the access token expires within a minute (callers about to use it).
    IfExpiring,
    /// Only when the scheduled refresh time has come (the scheduler).
    IfDue,
    /// The provider rejected the access token used at this time (Unix ms): refresh unless a
    /// refresh completed since (the proxy after a 401).
    RejectedAt(i64),
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
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 502: the provider failed.
    #[error("{0}")]
    Upstream(String),
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
    pub http: reqwest::Client,
    pub config: ServiceConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This process's id for refresh leases.
    instance: String,
    /// Scheduled refreshes per connector, when limited.
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    /// Client for webhook deliveries.
    pub(crate) webhook_http: reqwest::Client,
    /// Client for proxied API calls.
    pub(crate) proxy_http: reqwest::Client,
    /// Proxy use not yet written: audit rows and last-used times (flushed in batches).
    pub(crate) usage: Mutex<crate::proxy::Usage>,
    /// Provider apps recently read.
    app_cache: Mutex<HashMap<(String, String), (std::time::Instant, CachedApp)>>,
    /// Connections and their call envs recently used by the proxy (see `usable_conn`).
    conn_cache: Mutex<HashMap<String, (std::time::Instant, CachedConn)>>,
    /// API credentials recently checked: token hash → (when, workspace, actor, permissions).
    pub(crate) auth_cache:
        Mutex<HashMap<String, (std::time::Instant, Option<crate::api::auth::Caller>)>>,
    /// The connector runtime, for loading uploads (set once at start).
    pub runtime: std::sync::OnceLock<crate::runtime::Runtime>,
    /// Problems with files in the watched connectors directory.
    pub(crate) dir_errors: crate::hotload::DirErrors,
    /// When the proxy last refreshed each connection because the provider rejected its token.
    pub(crate) rejection_refreshes: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long the proxy trusts a cached connection row and credential. Changes made by this
/// process clear the entry at once; changes by another replica show within this time (a token
/// refreshed elsewhere is picked up at once when the provider answers 401).
pub const CONN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

type CachedApp = (ProviderAppRow, Option<Secret>, BTreeMap<String, String>);

/// A connection and its call env, as the proxy uses them.
pub(crate) type CachedConn = Arc<(ConnectionRow, CallEnv)>;

/// How long a provider app read stays cached.
const APP_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /connections/oauth/start` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartOAuth {
    pub connector: String,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub config: Option<Value>,
    pub return_to: Option<String>,
    /// Set by the API layer (never from the body): the UI session starting the flow, whose
    /// browser alone may open the launch link.
    #[serde(skip)]
    pub session: Option<String>,
}

/// Where a flow's browser comes back to, and the UI session it belongs to.
struct FlowBrowser {
    return_to: Option<String>,
    session: Option<String>,
}

/// `POST /connections` body (API key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub connector: String,
    pub api_key: String,
    pub name: Option<String>,
    pub config: Option<Value>,
}

/// `PATCH /connections/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub name: Option<String>,
    pub config: Option<Value>,
}

/// `PUT /provider-apps/{connector}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAppInput {
    #[serde(default)]
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// URL prefix rewrites (admin only).
    pub endpoint_overrides: Option<BTreeMap<String, String>>,
}

/// A started OAuth flow.
#[derive(Debug, Serialize)]
pub struct Started {
    pub connection_id: String,
    /// Open this in the user's browser: it binds the flow to that browser and redirects to the
    /// provider's consent screen.
    pub authorize_url: String,
    pub expires_at: String,
}

/// The outcome of a callback, for the browser.
#[derive(Debug)]
pub struct CallbackOutcome {
    pub location: String,
    pub clear_cookie: Option<String>,
}

/// What the callback got.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The JSON view of a connection.
pub fn view(c: &ConnectionRow) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    json!({
        "id": c.id,
        "connector": c.connector_id,
        "name": c.name,
        "auth_kind": c.auth_kind,
        "status": c.status,
        "status_reason": c.status_reason,
        "account": c.account_id.as_ref().map(|id| json!({
            "id": id, "display_name": c.account_name, "email": c.account_email
        })),
        "requested_scopes": parse(&c.requested_scopes),
        "granted_scopes": c.granted_scopes.as_deref().map(parse),
        "scope_narrowed": c.scope_narrowed != 0,
        "config": parse(&c.config),
        "metadata": parse(&c.metadata),
        "expires_at": c.expires_at.map(rfc3339),
        "last_refreshed_at": c.last_refreshed_at.map(rfc3339),
        "last_used_at": c.last_used_at.map(rfc3339),
        "refresh_token_expires_at": c.refresh_token_expires_at.map(rfc3339),
        "next_refresh_at": c.next_refresh_at.map(rfc3339),
        "expiring_soon": c.expiring_soon_at.map(|at| json!({
            "since": rfc3339(at),
            "reason": c.expiring_soon_reason,
        })),
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
    })
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
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

/// The `default`s of a schema's top-level properties.
pub fn schema_defaults(schema: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            if let Some(d) = p.get("default") {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    out
}

/// `base ⊕ over` for JSON objects (top level).
fn merge(base: &mut serde_json::Map<String, Value>, over: &Value) {
    if let Some(o) = over.as_object() {
        for (k, v) in o {
            base.insert(k.clone(), v.clone());
        }
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
        if config.refresh_lease_ms < 2 * config.token_timeout_ms as i64 + 1_000 {
            anyhow::bail!(
                "the refresh lease ({} ms) must outlast two token requests ({} ms each) plus a second; raise KEYPORT_REFRESH_LEASE_MS or lower KEYPORT_TOKEN_TIMEOUT_MS",
                config.refresh_lease_ms,
                config.token_timeout_ms
            );
        }
        let limiter = std::num::NonZeroU32::new(config.refresh_rate_per_connector)
            .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n)));
        let webhook_http = crate::runtime::outbound_client(
            config.allow_loopback,
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(15),
        )?;
        let proxy_http = crate::runtime::outbound_client(
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
            auth_cache: Mutex::default(),
            runtime: std::sync::OnceLock::new(),
            dir_errors: Default::default(),
            rejection_refreshes: Mutex::default(),
        })
    }

    /// The OAuth redirect URI providers must allow.
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
    /// Drops a connection from the proxy's cache (after any change to it).
    pub(crate) fn forget(&self, id: &str) {
        self.conn_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Drops every cached connection (a connector was swapped: its grants may have changed).
    pub(crate) fn forget_all(&self) {
        self.conn_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A connection and its call env for the proxy, from a cache of at most `CONN_CACHE_TTL`.
    pub(crate) async fn cached_conn(&self, ws: &str, id: &str, fresh: bool) -> Result<CachedConn> {
        if !fresh
            && let Some((at, hit)) = self
                .conn_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
            && at.elapsed() < CONN_CACHE_TTL
            && hit.0.workspace_id == ws
        {
            return Ok(hit.clone());
        }
        let c = self.get(ws, id).await?;
        let entry = self.connector(&c.connector_id)?;
        let env = self.call_env(&c, entry.connector.manifest()).await?;
        let out = Arc::new((c, env));
        let mut cache = self.conn_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < CONN_CACHE_TTL);
        }
        cache.insert(id.to_string(), (std::time::Instant::now(), out.clone()));
        Ok(out)
    }

    /// Queues a webhook event about `c` (failures are logged: the change itself stands).
    pub(crate) async fn emit(&self, kind: &str, c: &ConnectionRow, extra: Value) {
        let event = crate::webhooks::connection_event(kind, c, extra);
        if let Err(e) = self.store.emit(&c.workspace_id, &event).await {
            tracing::error!(connection = %c.id, event = kind, error = %e, "could not queue a webhook event");
        }
    }

    async fn audit(
        &self,
        ws: &str,
        conn: Option<&str>,
        action: &str,
        actor: &Actor,
        detail: Value,
    ) {
        if let Err(e) = self.store.audit(ws, conn, action, &actor.0, &detail).await {
            tracing::error!(error = %e, action, "could not write an audit event");
        }
    }

    /// A workspace's connection, or 404.
    pub async fn get(&self, ws: &str, id: &str) -> Result<ConnectionRow> {
        self.store
            .connection(ws, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no connection {id:?} in this workspace")))
    }

    /// Validates a config against the connector's schema and `validate-config`, defaults applied.
    pub async fn validate_config(
        &self,
        connector: &crate::runtime::Connector,
        config: &Value,
    ) -> Result<Value> {
        if !config.is_object() {
            return Err(Error::Invalid {
                message: "config must be a JSON object".into(),
                fields: vec![],
            });
        }
        let schema = crate::runtime::config_schema(&connector.manifest().config_schema)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut merged = schema_defaults(&schema);
        merge(&mut merged, config);
        let merged = Value::Object(merged);
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| Error::Internal(e.to_string()))?;
        let mut fields: Vec<(String, String)> = validator
            .iter_errors(&merged)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        if fields.is_empty() {
            let extra = connector
                .validate_config(&merged.to_string())
                .await
                .map_err(|e| {
                    Error::Upstream(format!("the connector could not check the config: {e}"))
                })?;
            fields.extend(extra.into_iter().map(|f| (f.path, f.message)));
        }
        if !fields.is_empty() {
            let summary = fields
                .iter()
                .map(|(p, m)| format!("{}: {m}", if p.is_empty() { "/" } else { p }))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Invalid {
                message: format!("the config is invalid: {summary}"),
                fields,
            });
        }
        Ok(config.clone())
    }

    /// The effective config: schema defaults ⊕ the connection's config ⊕ `overrides`.
    pub async fn effective_config(&self, ws: &str, id: &str, overrides: &Value) -> Result<Value> {
        let c = self.get(ws, id).await?;
        self.effective_config_of(&c, overrides)
    }

    /// The effective config of a connection already read.
    pub fn effective_config_of(&self, c: &ConnectionRow, overrides: &Value) -> Result<Value> {
        let entry = self.connector(&c.connector_id)?;
        let schema: Value = serde_json::from_str(&entry.connector.manifest().config_schema)
            .map_err(|e| Error::Internal(format!("the connector's config schema: {e}")))?;
        let mut merged = schema_defaults(&schema);
        merge(
            &mut merged,
            &serde_json::from_str(&c.config).unwrap_or(Value::Null),
        );
        merge(&mut merged, overrides);
        Ok(Value::Object(merged))
    }

    fn oauth_of<'a>(&self, m: &'a crate::runtime::Manifest) -> Result<&'a Oauth2> {
        match &m.auth {
            AuthScheme::Oauth2(o) => Ok(o),
            AuthScheme::ApiKey(_) => Err(Error::BadRequest(format!(
                "{} uses API keys, not OAuth: create the connection with POST /api/v1/connections {{connector, api_key}}",
                m.display_name
            ))),
        }
    }

    async fn app(
        &self,
        ws: &str,
        connector: &str,
    ) -> Result<(ProviderAppRow, Option<Secret>, BTreeMap<String, String>)> {
        // A short-lived cache: refreshes and proxied calls read the app on every use. Changes in
        // this process clear it at once; other replicas' changes show within APP_CACHE_TTL.
        let key = (ws.to_string(), connector.to_string());
        if let Some((at, cached)) = self
            .app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < APP_CACHE_TTL
        {
            return Ok(cached.clone());
        }
        let loaded = self.load_app(ws, connector).await?;
        self.app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (std::time::Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    async fn load_app(
        &self,
        ws: &str,
        connector: &str,
    ) -> Result<(ProviderAppRow, Option<Secret>, BTreeMap<String, String>)> {
        let app = self.store.provider_app(ws, connector).await?.ok_or_else(|| {
            Error::BadRequest(format!(
                "no OAuth app is configured for {connector} in this workspace; set its client id and secret with PUT /api/v1/provider-apps/{connector}"
            ))
        })?;
        let secret = self
            .open_secret(ws, &app_owner(ws, connector), "client_secret")
            .await?
            .map(|s| Secret::new(s.as_str()));
        let overrides = serde_json::from_str(&app.endpoint_overrides).unwrap_or_default();
        Ok((app, secret, overrides))
    }

    /// Sets a workspace's provider app for a connector.
    pub async fn put_provider_app(
        &self,
        ws: &str,
        actor: &Actor,
        connector: &str,
        input: ProviderAppInput,
        admin: bool,
    ) -> Result<Value> {
        self.app_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let entry = self.connector(connector)?;
        let is_oauth = matches!(entry.connector.manifest().auth, AuthScheme::Oauth2(_));
        if !is_oauth && input.client_secret.is_some() {
            return Err(Error::BadRequest(format!(
                "{connector} uses API keys: it has no client secret; set only endpoint_overrides"
            )));
        }
        if is_oauth && input.client_id.trim().is_empty() {
            return Err(Error::Invalid {
                message: "client_id must not be empty".into(),
                fields: vec![("/client_id".into(), "required".into())],
            });
        }
        if input
            .endpoint_overrides
            .as_ref()
            .is_some_and(|o| !o.is_empty())
            && !admin
        {
            return Err(Error::BadRequest(
                "endpoint overrides can only be set with the admin token".into(),
            ));
        }
        if let Some(o) = &input.endpoint_overrides {
            for (from, to) in o {
                for u in [from, to] {
                    let parsed = url::Url::parse(u).map_err(|_| Error::Invalid {
                        message: format!("endpoint override {u:?} is not a URL"),
                        fields: vec![(
                            "/endpoint_overrides".into(),
                            "must map URL prefixes to URL prefixes".into(),
                        )],
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(Error::BadRequest(format!(
                            "endpoint override {u:?} must be http(s)"
                        )));
                    }
                }
            }
        }
        let known: Vec<&str> = entry
            .connector
            .manifest()
            .scopes
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        if let Some(scopes) = &input.scopes
            && let Some(bad) = scopes.iter().find(|s| !known.contains(&s.as_str()))
        {
            return Err(Error::Invalid {
                message: format!(
                    "{bad:?} is not a scope of {connector}; known scopes: {}",
                    known.join(", ")
                ),
                fields: vec![("/scopes".into(), format!("unknown scope {bad}"))],
            });
        }
        let existing = self.store.provider_app(ws, connector).await?;
        let now = now_ms();
        let row = ProviderAppRow {
            workspace_id: ws.into(),
            connector_id: connector.into(),
            client_id: input.client_id.trim().into(),
            scopes: serde_json::to_string(&input.scopes.unwrap_or_default()).unwrap_or_default(),
            endpoint_overrides: match (&input.endpoint_overrides, &existing) {
                (Some(o), _) => serde_json::to_string(o).unwrap_or_default(),
                (None, Some(e)) => e.endpoint_overrides.clone(),
                (None, None) => "{}".into(),
            },
            created_at: now,
            updated_at: now,
        };
        self.store.upsert_provider_app(&row).await?;
        if let Some(secret) = input.client_secret.filter(|s| !s.is_empty()) {
            let owner = app_owner(ws, connector);
            let sealed = self.seal_field(ws, &owner, "client_secret", &secret);
            self.store.put_secret(&owner, ws, &sealed).await?;
        }
        self.audit(
            ws,
            None,
            "provider_app.updated",
            actor,
            json!({"connector": connector}),
        )
        .await;
        self.provider_app_view(ws, connector).await
    }

    /// A provider app's view (never the secret).
    pub async fn provider_app_view(&self, ws: &str, connector: &str) -> Result<Value> {
        let app = self
            .store
            .provider_app(ws, connector)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!("no provider app for {connector} in this workspace"))
            })?;
        let has_secret = self
            .store
            .secret(ws, &app_owner(ws, connector), "client_secret")
            .await?
            .is_some();
        Ok(json!({
            "connector": app.connector_id,
            "client_id": app.client_id,
            "client_secret_set": has_secret,
            "scopes": serde_json::from_str::<Value>(&app.scopes).unwrap_or(Value::Null),
            "endpoint_overrides": serde_json::from_str::<Value>(&app.endpoint_overrides).unwrap_or(Value::Null),
            "redirect_uri": self.redirect_uri(),
            "updated_at": rfc3339(app.updated_at),
        }))
    }

    fn check_return_to(&self, return_to: &str) -> Result<()> {
        let ok = url::Url::parse(return_to).ok().is_some_and(|u| {
            let origin = u.origin().ascii_serialization();
            std::iter::once(&self.config.public_url)
                .chain(self.config.return_to_allowlist.iter())
                .any(|allowed| {
                    let allowed = allowed.trim_end_matches('/');
                    origin == allowed || return_to.starts_with(&format!("{allowed}/"))
                })
        });
        if ok {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "return_to {return_to:?} is not allowed; add its origin to KEYPORT_RETURN_TO_ALLOWLIST"
            )))
        }
    }

    /// Starts an OAuth connection: a `pending` connection plus a flow.
    pub async fn start_oauth(&self, ws: &str, actor: &Actor, req: StartOAuth) -> Result<Started> {
        let entry = self.connector(&req.connector)?;
        let m = entry.connector.manifest();
        self.oauth_of(m)?;
        if let Some(r) = &req.return_to {
            self.check_return_to(r)?;
        }
        let config = self
            .validate_config(&entry.connector, req.config.as_ref().unwrap_or(&json!({})))
            .await?;
        let (app, _, _) = self.app(ws, &m.id).await?;
        let scopes = self.requested_scopes(m, &app, req.scopes.as_deref().unwrap_or(&[]), &[])?;
        let id = new_id("conn");
        let name = req
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| m.display_name.clone());
        let mut row = ConnectionRow::new(
            &id,
            ws,
            &m.id,
            name,
            "oauth2",
            "pending",
            config.to_string(),
        );
        row.status_reason = Some("Waiting for the user to authorize.".into());
        row.requested_scopes = serde_json::to_string(&scopes).unwrap_or_default();
        self.store.insert_connection(&row).await?;
        self.audit(
            ws,
            Some(&id),
            "connection.created",
            actor,
            json!({"connector": m.id, "auth": "oauth2"}),
        )
        .await;
        self.emit("connection.created", &row, json!({})).await;
        let browser = FlowBrowser {
            return_to: req.return_to,
            session: req.session,
        };
        self.new_flow(ws, &id, &m.id, &scopes, false, browser).await
    }

    /// Scopes to request: required ones, the app's chosen ones, the caller's, and `extra`.
    fn requested_scopes(
        &self,
        m: &crate::runtime::Manifest,
        app: &ProviderAppRow,
        asked: &[String],
        extra: &[String],
    ) -> Result<Vec<String>> {
        let chosen: Vec<String> = serde_json::from_str(&app.scopes).unwrap_or_default();
        let mut out: Vec<String> = m
            .scopes
            .iter()
            .filter(|s| s.required)
            .map(|s| s.name.clone())
            .collect();
        for s in chosen.iter().chain(asked).chain(extra) {
            if !m.scopes.iter().any(|k| &k.name == s) {
                return Err(Error::Invalid {
                    message: format!(
                        "{s:?} is not a scope of {}; GET /api/v1/connectors/{} lists them",
                        m.id, m.id
                    ),
                    fields: vec![("/scopes".into(), format!("unknown scope {s}"))],
                });
            }
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        Ok(out)
    }

    async fn new_flow(
        &self,
        ws: &str,
        conn: &str,
        connector: &str,
        scopes: &[String],
        reconnect: bool,
        browser: FlowBrowser,
    ) -> Result<Started> {
        let now = now_ms();
        let flow_id = new_id("flow");
        let state = oauth::new_state();
        let launch = oauth::new_state();
        let flow = FlowRow {
            id: flow_id.clone(),
            workspace_id: ws.into(),
            connection_id: conn.into(),
            connector_id: connector.into(),
            state_hash: oauth::hash(&state),
            launch_hash: oauth::hash(&launch),
            browser_hash: None,
            redirect_uri: self.redirect_uri(),
            requested_scopes: serde_json::to_string(scopes).unwrap_or_default(),
            return_to: browser.return_to,
            reconnect: reconnect as i64,
            session_hash: browser.session,
            expires_at: now + FLOW_TTL_MS,
            launched_at: None,
            consumed_at: None,
            created_at: now,
        };
        self.store.insert_flow(&flow).await?;
        // The state itself is needed once more, at launch, to build the provider URL: keep it
        // sealed with the flow, with the PKCE verifier.
        let (challenge, verifier) = oauth::new_pkce();
        for (field, value) in [
            ("state", state.as_str()),
            ("pkce_verifier", verifier.as_str()),
            ("pkce_challenge", challenge.as_str()),
        ] {
            let sealed = self.seal_field(ws, &flow_id, field, value);
            self.store.put_secret(&flow_id, ws, &sealed).await?;
        }
        Ok(Started {
            connection_id: conn.into(),
            authorize_url: format!("{}/oauth/launch/{launch}", self.config.public_url),
            expires_at: rfc3339(flow.expires_at),
        })
    }

    /// Opens a launch link once: binds the flow to this browser and returns (provider URL,
    /// cookie name, cookie value).
    /// `session` is the opening browser's UI session (cookie hash), if signed in.
    pub async fn launch(
        &self,
        launch: &str,
        session: Option<&str>,
    ) -> Result<(String, String, String)> {
        let binding = oauth::new_state();
        let now = now_ms();
        let launch_hash = oauth::hash(launch);
        let Some(flow) = self
            .store
            .launch_flow(&launch_hash, &oauth::hash(&binding), session, now)
            .await?
        else {
            let other_session = self
                .store
                .flow_by_launch(&launch_hash, now)
                .await?
                .is_some_and(|f| f.session_hash.is_some());
            return Err(Error::BadRequest(if other_session {
                "This authorization link was started from another keyport sign-in. Open it in the browser that started it, or start the connection again.".into()
            } else {
                "This authorization link was already used or has expired. Start the connection again.".into()
            }));
        };
        let ws = flow.workspace_id.as_str();
        let entry = self.connector(&flow.connector_id)?;
        let m = entry.connector.manifest();
        let o = self.oauth_of(m)?;
        let (app, _, overrides) = self.app(ws, &flow.connector_id).await?;
        let conn = self.get(ws, &flow.connection_id).await?;
        let config: Value = self.effective_config(ws, &conn.id, &json!({})).await?;
        let expired = || {
            Error::BadRequest(
                "This authorization link has expired. Start the connection again.".into(),
            )
        };
        let state = self
            .open_secret(ws, &flow.id, "state")
            .await?
            .ok_or_else(expired)?;
        let challenge = self
            .open_secret(ws, &flow.id, "pkce_challenge")
            .await?
            .ok_or_else(expired)?;
        self.store
            .delete_secrets(ws, &flow.id, Some("state"))
            .await?;
        self.store
            .delete_secrets(ws, &flow.id, Some("pkce_challenge"))
            .await?;
        let scopes: Vec<String> = serde_json::from_str(&flow.requested_scopes).unwrap_or_default();
        let scope_params: Vec<(String, String)> = scopes
            .iter()
            .map(|s| {
                let param = m
                    .scopes
                    .iter()
                    .find(|k| &k.name == s)
                    .and_then(|k| k.param.clone())
                    .unwrap_or_else(|| "scope".into());
                (s.clone(), param)
            })
            .collect();
        let url = oauth::authorize_url(&oauth::AuthorizeParams {
            oauth: o,
            config: &config,
            client_id: &app.client_id,
            redirect_uri: &flow.redirect_uri,
            state: &state,
            code_challenge: o.pkce.then_some(challenge.as_str()),
            scopes: &scope_params,
            overrides: &overrides,
        })
        .map_err(Error::BadRequest)?;
        Ok((url, self.cookie_name(&flow.id), binding))
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

    /// The browser-binding cookie's name for a flow.
    pub fn cookie_name(&self, flow_id: &str) -> String {
        let short = &flow_id[flow_id.len().saturating_sub(12)..];
        if self.config.public_url.starts_with("https://") {
            format!("__Host-keyport-flow-{short}")
        } else {
            format!("keyport-flow-{short}")
        }
    }

    /// Whether cookies must be `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.config.public_url.starts_with("https://")
    }

    /// Completes an OAuth flow (O1–O13). `cookies` are the request's cookies.
    pub async fn callback(
        &self,
        p: CallbackParams,
        cookies: &HashMap<String, String>,
    ) -> Result<CallbackOutcome> {
        let state = p
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::BadRequest(
                    "The provider's answer has no state. Start the connection again.".into(),
                )
            })?;
        let flow = self
            .store
            .flow_by_state(&oauth::hash(state))
            .await?
            .ok_or_else(|| {
                Error::BadRequest("Unknown authorization state. Start the connection again.".into())
            })?;
        let now = now_ms();
        if flow.consumed_at.is_some() {
            return Err(Error::BadRequest(
                "This authorization was already completed. Start the connection again if needed."
                    .into(),
            ));
        }
        if flow.expires_at <= now {
            return Err(Error::BadRequest(
                "This authorization expired (flows last 10 minutes). Start the connection again."
                    .into(),
            ));
        }
        // O2: the browser that launched the flow.
        let cookie_name = self.cookie_name(&flow.id);
        let bound = match (&flow.browser_hash, cookies.get(&cookie_name)) {
            (Some(h), Some(v)) => constant_eq(h, &oauth::hash(v)),
            _ => false,
        };
        if !bound {
            return Err(Error::BadRequest(
                "This authorization was started in another browser (or cookies are blocked). Start the connection again from this browser.".into(),
            ));
        }
        let ws = flow.workspace_id.clone();
        let entry = self.connector(&flow.connector_id)?;
        let m = entry.connector.manifest().clone();
        let o = self.oauth_of(&m)?.clone();
        let (app, client_secret, overrides) = self.app(&ws, &flow.connector_id).await?;
        // O6: mix-up defence, also for error callbacks.
        if let Some(issuer) = &o.issuer {
            let expected = oauth::apply_overrides(issuer, &overrides);
            match &p.iss {
                Some(iss) if iss == &expected => {}
                Some(_) => return Err(Error::BadRequest("The authorization response came from an unexpected issuer. Start the connection again.".into())),
                None if o.iss_required => {
                    return Err(Error::BadRequest("The authorization response is missing its issuer (iss). Start the connection again.".into()));
                }
                None => {}
            }
        } else if p.iss.is_some() && o.iss_required {
            return Err(Error::BadRequest(
                "Unexpected issuer in the authorization response.".into(),
            ));
        }
        // O3: consume once.
        if !self.store.consume_flow(&flow.id, now).await? {
            return Err(Error::BadRequest(
                "This authorization was already completed. Start the connection again if needed."
                    .into(),
            ));
        }
        let verifier = self.open_secret(&ws, &flow.id, "pkce_verifier").await?;
        self.store.delete_secrets(&ws, &flow.id, None).await?;
        let actor = Actor("oauth-callback".into());
        // `error` is a fixed code pages may show text for; `message` is the detail for the
        // platform's own `return_to` page.
        let done = |status: &str, failure: Option<(&str, &str)>| {
            let base = flow
                .return_to
                .clone()
                .unwrap_or_else(|| format!("{}/oauth/done", self.config.public_url));
            let mut u = url::Url::parse(&base).unwrap_or_else(|_| {
                url::Url::parse(&format!("{}/oauth/done", self.config.public_url))
                    .expect("public URL")
            });
            u.query_pairs_mut()
                .append_pair("connection_id", &flow.connection_id)
                .append_pair("status", status);
            if let Some((code, msg)) = failure {
                u.query_pairs_mut().append_pair("error", code);
                // The detail only for the platform's own page; keyport's pages show fixed texts.
                if flow.return_to.is_some() {
                    u.query_pairs_mut().append_pair("message", msg);
                }
            }
            CallbackOutcome {
                location: u.to_string(),
                clear_cookie: Some(cookie_name.clone()),
            }
        };

        // O11: error callbacks never reach the token endpoint.
        if let Some(err) = p.error.as_deref() {
            let reason = if err == "access_denied" {
                "The provider denied access — try again and approve the permissions.".to_string()
            } else {
                format!("The provider returned an error ({err}). Try connecting again.")
            };
            self.authorization_failed(&flow, &reason, err).await?;
            let code = if err == "access_denied" {
                "access_denied"
            } else {
                "provider_error"
            };
            return Ok(done("error", Some((code, &reason))));
        }
        let code = p.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::BadRequest(
                "The provider's answer has no code. Start the connection again.".into(),
            )
        })?;
        let conn = self.get(&ws, &flow.connection_id).await?;
        let config: Value = self.effective_config(&ws, &conn.id, &json!({})).await?;
        let call = TokenCall {
            http: &self.http,
            oauth: &o,
            config: &config,
            client_id: &app.client_id,
            client_secret: client_secret.as_ref(),
            overrides: &overrides,
        };
        let requested: Vec<String> =
            serde_json::from_str(&flow.requested_scopes).unwrap_or_default();
        let tokens = match call
            .exchange_code(
                code,
                &flow.redirect_uri,
                if o.pkce {
                    verifier.as_deref().map(|v| v.as_str())
                } else {
                    None
                },
            )
            .await
        {
            Ok((status, body)) => self.read_tokens(&entry.connector, &o, status, body).await,
            Err(e) => Err(e),
        };
        let tokens = match tokens {
            Ok(t) => t,
            Err(e) => {
                let reason =
                    format!("Could not complete the authorization: {e}. Try connecting again.");
                self.authorization_failed(&flow, &reason, &e.to_string())
                    .await?;
                return Ok(done("error", Some(("token_exchange_failed", &reason))));
            }
        };
        self.save_tokens(&ws, &conn, &tokens, &requested, true, None, None)
            .await?;
        if flow.reconnect != 0 {
            self.store
                .set_requested_scopes(&ws, &conn.id, &flow.requested_scopes)
                .await?;
            self.audit(
                &ws,
                Some(&conn.id),
                "connection.reconnected",
                &actor,
                json!({"scopes": requested}),
            )
            .await;
        } else {
            self.audit(
                &ws,
                Some(&conn.id),
                "connection.authorized",
                &actor,
                json!({"scopes": requested}),
            )
            .await;
        }
        self.store
            .set_status(
                &ws,
                &conn.id,
                if conn.account_id.is_some() {
                    &conn.status
                } else {
                    "pending"
                },
                Some(PENDING_LOOKUP),
            )
            .await?;
        let status = self.lookup_and_activate(&ws, &conn.id).await?;
        Ok(done(&status, None))
    }

    /// Records a failed authorization: a new connection stays `pending` with the reason (a
    /// reconnect leaves the working connection alone); the audit log gets the error.
    async fn authorization_failed(&self, flow: &FlowRow, reason: &str, error: &str) -> Result<()> {
        if flow.reconnect == 0 {
            self.store
                .set_status(
                    &flow.workspace_id,
                    &flow.connection_id,
                    "pending",
                    Some(reason),
                )
                .await?;
        }
        let actor = Actor("oauth-callback".into());
        self.audit(
            &flow.workspace_id,
            Some(&flow.connection_id),
            "authorization.failed",
            &actor,
            json!({"error": error}),
        )
        .await;
        Ok(())
    }

    /// Reads a token response through the connector hook, else the standard way.
    async fn read_tokens(
        &self,
        connector: &crate::runtime::Connector,
        o: &Oauth2,
        status: u16,
        body: Vec<u8>,
    ) -> std::result::Result<TokenSet, OAuthError> {
        match connector.parse_token_response(status, body.clone()).await {
            Ok(Some(Ok(t))) if !t.access_token.is_empty() => Ok(t),
            Ok(Some(Ok(_))) => Err(OAuthError::Provider(
                "the token response has no access token".into(),
            )),
            Ok(Some(Err(e))) => Err(OAuthError::from_connector(e)),
            Ok(None) => oauth::parse_token_response(status, &body, o),
            Err(e) => Err(OAuthError::Provider(format!(
                "the connector could not read the token response: {e}"
            ))),
        }
    }

    /// Seals and stores a token set; keeps the old refresh token when the response has none.
    #[allow(clippy::too_many_arguments)]
    async fn save_tokens(
        &self,
        ws: &str,
        conn: &ConnectionRow,
        t: &TokenSet,
        requested: &[String],
        replace_metadata: bool,
        fence: Option<(&str, i64)>,
        audit: Option<(&str, &Actor, Value)>,
    ) -> Result<Option<i64>> {
        self.forget(&conn.id);
        let now = now_ms();
        let access = self.seal_field(ws, &conn.id, "access_token", &t.access_token);
        let refresh = t
            .refresh_token
            .as_ref()
            .map(|r| self.seal_field(ws, &conn.id, "refresh_token", r));
        let granted = t.scopes.clone();
        let narrowed = granted
            .as_ref()
            .is_some_and(|g| requested.iter().any(|r| !g.contains(r)));
        let mut metadata: serde_json::Map<String, Value> = if replace_metadata {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&conn.metadata).unwrap_or_default()
        };
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&t.metadata) {
            metadata.extend(m);
        }
        // Refresh before expiry by max(5 min, 20 % of the lifetime), at most half of it, minus up
        // to 10 % jitter so tokens issued together do not come due together.
        let next_refresh_at = t.expires_in.map(|secs| {
            let lifetime = secs as i64 * 1000;
            let margin = (5 * 60 * 1000).max(lifetime / 5).min(lifetime / 2);
            let jitter = (rand::random::<u64>() % (margin as u64 / 10 + 1)) as i64;
            now + lifetime - margin - jitter
        });
        let meta = TokenMeta {
            next_refresh_at,
            next_probe_at: t
                .expires_in
                .is_none()
                .then(|| now + self.config.probe_interval_ms),
            new_grant: replace_metadata,
            audit: audit.map(|(action, actor, detail)| {
                (action.to_string(), actor.0.clone(), detail.to_string())
            }),
            expires_at: t.expires_in.map(|s| now + (s as i64) * 1000),
            refresh_token_expires_at: t.refresh_token_expires_in.map(|s| now + (s as i64) * 1000),
            granted_scopes: granted.map(|g| serde_json::to_string(&g).unwrap_or_default()),
            scope_narrowed: narrowed,
            metadata: Value::Object(metadata).to_string(),
        };
        Ok(self
            .store
            .store_tokens(ws, &conn.id, &access, refresh.as_ref(), &meta, fence)
            .await?)
    }

    /// The call env for a connection: credential, base URL, overrides, app secrets.
    pub async fn call_env(
        &self,
        c: &ConnectionRow,
        m: &crate::runtime::Manifest,
    ) -> Result<CallEnv> {
        let ws = c.workspace_id.as_str();
        let field = if c.auth_kind == "api_key" {
            "api_key"
        } else {
            "access_token"
        };
        let credential = self
            .open_secret(ws, &c.id, field)
            .await?
            .map(|s| Secret::new(s.as_str()));
        let config = self.effective_config_of(c, &json!({}))?;
        let mut overrides = BTreeMap::new();
        let mut form_secrets = HashMap::new();
        if let AuthScheme::Oauth2(_) = &m.auth
            && let Ok((app, secret, o)) = self.app(ws, &c.connector_id).await
        {
            overrides = o;
            form_secrets.insert(SecretKind::ClientId, Secret::new(app.client_id));
            if let Some(s) = secret {
                form_secrets.insert(SecretKind::ClientSecret, s);
            }
        } else if let AuthScheme::ApiKey(_) = &m.auth {
            // API-key connectors have no OAuth app, only the admin's endpoint overrides.
            overrides = self
                .api_key_overrides(ws, &c.connector_id)
                .await?
                .into_iter()
                .collect();
        }
        if let Some(cred) = &credential {
            form_secrets.insert(
                if field == "api_key" {
                    SecretKind::ApiKey
                } else {
                    SecretKind::AccessToken
                },
                cred.clone(),
            );
        }
        let base = if m.api_base_url.is_empty() {
            None
        } else {
            Some(
                oauth::fill_template(&m.api_base_url, &config).map_err(|e| Error::Invalid {
                    message: e,
                    fields: vec![],
                })?,
            )
        };
        Ok(CallEnv {
            credential,
            form_secrets,
            api_base_url: base,
            granted_hosts: self
                .registry
                .get(&c.connector_id)
                .and_then(|e| e.granted_hosts.clone()),
            endpoint_overrides: overrides.into_iter().collect(),
        })
    }

    /// The connector's account lookup with the connection's stored credential and config.
    async fn look_up(
        &self,
        c: &ConnectionRow,
    ) -> Result<
        std::result::Result<
            std::result::Result<crate::runtime::Account, crate::runtime::ConnectorError>,
            crate::runtime::CallError,
        >,
    > {
        let entry = self.connector(&c.connector_id)?;
        let env = self.call_env(c, entry.connector.manifest()).await?;
        let config = self.effective_config_of(c, &json!({}))?;
        Ok(entry
            .connector
            .lookup_account(
                env,
                CallContext {
                    config: config.to_string(),
                    metadata: c.metadata.clone(),
                    definition: String::new(),
                },
            )
            .await)
    }

    /// Looks up the account and activates the connection; a transient failure leaves it
    /// `pending` and schedules a retry. Returns the resulting status.
    pub async fn lookup_and_activate(&self, ws: &str, id: &str) -> Result<String> {
        let c = self.get(ws, id).await?;
        let actor = Actor("keyport".into());
        match self.look_up(&c).await? {
            Ok(Ok(account)) => {
                self.store
                    .set_account(
                        ws,
                        id,
                        &account.external_id,
                        &account.display_name,
                        account.email.as_deref().filter(|e| !e.is_empty()),
                        now_ms() + self.config.probe_interval_ms,
                    )
                    .await?;
                self.audit(ws, Some(id), "account.looked_up", &actor, json!({"account_id": account.external_id, "display_name": account.display_name})).await;
                self.transition(&c, "active", "", &actor).await?;
                Ok("active".into())
            }
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::RateLimited) => {
                self.retry_lookup(&c, &e.message).await?;
                Ok("pending".into())
            }
            Err(call) => {
                self.retry_lookup(&c, &call.to_string()).await?;
                Ok("pending".into())
            }
            Ok(Err(e)) => {
                let reason = format!(
                    "The account lookup failed: {}. Reconnect to try again.",
                    e.message
                );
                self.transition(&c, "error", &reason, &actor).await?;
                Ok("error".into())
            }
        }
    }

    async fn retry_lookup(&self, c: &ConnectionRow, why: &str) -> Result<()> {
        let delay = (2_000i64 << c.lookup_attempts.min(8)).min(10 * 60 * 1000);
        let reason =
            format!("Authorized; the account lookup failed for now ({why}) and will be retried.");
        self.store
            .schedule_lookup(&c.workspace_id, &c.id, now_ms() + delay, &reason)
            .await?;
        self.audit(
            &c.workspace_id,
            Some(&c.id),
            "account.lookup_failed",
            &Actor("keyport".into()),
            json!({"error": why, "retry_in_ms": delay}),
        )
        .await;
        Ok(())
    }

    /// The refresh scheduler of this process; runs until its task is dropped. It claims due
    /// connections in small batches under a lease (disjoint across replicas), keeps at most
    /// `refresh_concurrency` refreshes running and about as many claimed and waiting, honours the
    /// per-connector rate limit by not claiming a limited connector's rows, and never holds more
    /// than that in memory.
    pub async fn run_refresh_scheduler(self: Arc<Self>) {
        let concurrency = self.config.refresh_concurrency.max(1);
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let mut limited: HashMap<String, std::time::Instant> = HashMap::new();
        let idle = std::time::Duration::from_millis(500);
        loop {
            let mut claimed = 0;
            if tasks.len() < concurrency {
                let now = std::time::Instant::now();
                limited.retain(|_, until| *until > now);
                let skip: Vec<String> = limited.keys().cloned().collect();
                let want = (2 * concurrency - tasks.len()) as i64;
                match self
                    .store
                    .claim_due_refreshes(
                        now_ms(),
                        want,
                        &self.instance,
                        self.config.refresh_lease_ms,
                        &skip,
                    )
                    .await
                {
                    Ok(rows) => {
                        for row in rows {
                            if let Some(wait) = self.rate_limited(&row.connector_id) {
                                limited.insert(row.connector_id.clone(), now + wait);
                                let _ = self
                                    .store
                                    .release_lease(&row.workspace_id, &row.id, &self.instance)
                                    .await;
                                continue;
                            }
                            claimed += 1;
                            let service = self.clone();
                            let slots = slots.clone();
                            tasks.spawn(async move {
                                let Ok(_permit) = slots.acquire_owned().await else {
                                    return;
                                };
                                service.refresh_claimed(row).await;
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim due refreshes"),
                }
            }
            if claimed > 0 && tasks.len() < concurrency {
                continue;
            }
            if tasks.is_empty() {
                tokio::time::sleep(idle).await;
            } else if claimed == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            } else {
                tasks.join_next().await;
            }
        }
    }

    /// How long a connector's scheduled refreshes must wait, when its rate limit is used up;
    /// otherwise takes one from its budget.
    fn rate_limited(&self, connector: &str) -> Option<std::time::Duration> {
        use governor::clock::Clock;
        let limiter = self.limiter.as_ref()?;
        match limiter.check_key(&connector.to_string()) {
            Ok(()) => None,
            Err(not_until) => {
                Some(not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
            }
        }
    }

    /// Refreshes a connection the scheduler claimed, if it is still due and still ours.
    async fn refresh_claimed(&self, row: crate::store::Claimed) {
        let (ws, id) = (row.workspace_id.as_str(), row.id.as_str());
        let actor = Actor("scheduler".into());
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let due = |c: &ConnectionRow| c.next_refresh_at.is_none_or(|t| t > now_ms());
        let result: Result<bool> = async {
            let c = self.get(ws, id).await?;
            if c.token_version != row.token_version
                || c.lease_owner.as_deref() != Some(self.instance.as_str())
                || due(&c)
            {
                return Ok(false);
            }
            // The row may have waited in the queue: make the lease whole again before the call
            // when less than half of it is left.
            let left = c.lease_until.unwrap_or(0) - now_ms();
            if left < self.config.refresh_lease_ms / 2
                && !self
                    .store
                    .renew_lease(
                        ws,
                        id,
                        &self.instance,
                        row.token_version,
                        self.config.refresh_lease_ms,
                    )
                    .await?
            {
                return Ok(false);
            }
            Ok(matches!(
                self.refresh_with_lease(ws, &actor, id, &due, Some(c))
                    .await?,
                Refreshed::Saved
            ))
        }
        .await;
        let released = match result {
            Ok(saved) => saved,
            Err(e) => {
                tracing::debug!(connection = %id, error = %e, "scheduled refresh failed");
                false
            }
        };
        if released {
            return;
        }
        if let Err(e) = self.store.release_lease(ws, id, &self.instance).await {
            tracing::warn!(connection = id, error = %e, "could not release a refresh lease; it expires by itself");
        }
    }

    /// Flags, once, connections whose refresh token expires within the configured window;
    /// returns how many were flagged.
    pub async fn flag_expiring_refresh_tokens(&self) -> Result<usize> {
        let flagged = self
            .store
            .flag_expiring_refresh_tokens(now_ms() + self.config.expiring_soon_ms, 200)
            .await?;
        for (ws, id, at) in &flagged {
            if let Ok(c) = self.get(ws, id).await {
                self.emit(
                    "connection.expiring_soon",
                    &c,
                    json!({"reason": "refresh_token_expiring", "refresh_token_expires_at": rfc3339(*at)}),
                )
                .await;
            }
            self.audit(
                ws,
                Some(id),
                "connection.expiring_soon",
                &Actor("scheduler".into()),
                json!({"reason": "refresh_token_expiring", "refresh_token_expires_at": rfc3339(*at),
                       "message": "The provider's refresh token expires soon; reconnect before then to keep this connection working."}),
            )
            .await;
        }
        Ok(flagged.len())
    }

    /// Probes due credentials that never expire (a cheap account lookup) so a dead one is found
    /// before a workflow hits it; returns how many were probed.
    pub async fn run_due_probes(&self) -> Result<usize> {
        let next = now_ms() + self.config.probe_interval_ms;
        let due = self.store.claim_due_probes(now_ms(), 50, next).await?;
        for (ws, id) in &due {
            if let Err(e) = self.probe(ws, id).await {
                tracing::debug!(connection = %id, error = %e, "probe failed");
            }
        }
        Ok(due.len())
    }

    /// One probe: the account lookup with the stored credential.
    async fn probe(&self, ws: &str, id: &str) -> Result<()> {
        let c = self.get(ws, id).await?;
        let actor = Actor("probe".into());
        let result = self.look_up(&c).await?;
        metrics::counter!("keyport_probes_total", "outcome" => match &result {
            Ok(Ok(_)) => "success",
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Revoked) => "rejected",
            _ => "failure",
        })
        .increment(1);
        match result {
            Ok(Ok(_)) if c.status == "error" => {
                // A success after failures: "recovered".
                self.transition(&c, "active", "", &actor).await
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::Revoked) => {
                let what = if c.auth_kind == "api_key" {
                    "Enter a new API key to continue"
                } else {
                    "Reconnect to continue"
                };
                let reason = format!(
                    "The provider rejected this connection's credential during a routine check ({}). {what}.",
                    e.message
                );
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": e.message, "definitive": true}),
                )
                .await;
                self.store.set_probe(ws, id, None).await?;
                self.transition(&c, "revoked", &reason, &actor).await
            }
            Ok(Err(e)) => {
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": e.message, "definitive": false}),
                )
                .await;
                Ok(())
            }
            Err(call) => {
                self.audit(
                    ws,
                    Some(id),
                    "probe.failed",
                    &actor,
                    json!({"error": call.to_string(), "definitive": false}),
                )
                .await;
                Ok(())
            }
        }
    }

    /// Retries due account lookups; returns how many ran.
    pub async fn run_due_lookups(&self) -> Result<usize> {
        let due = self.store.due_lookups(now_ms(), 50).await?;
        for c in &due {
            if let Err(e) = self.lookup_and_activate(&c.workspace_id, &c.id).await {
                tracing::warn!(connection = %c.id, error = %e, "account lookup retry failed");
            }
        }
        Ok(due.len())
    }

    /// Creates an API-key connection after verifying the key with the provider.
    pub async fn create_api_key(
        &self,
        ws: &str,
        actor: &Actor,
        req: CreateApiKey,
    ) -> Result<ConnectionRow> {
        let entry = self.connector(&req.connector)?;
        let m = entry.connector.manifest();
        let AuthScheme::ApiKey(key_scheme) = &m.auth else {
            return Err(Error::BadRequest(format!(
                "{} connects with OAuth: start with POST /api/v1/connections/oauth/start",
                m.display_name
            )));
        };
        let api_key = req.api_key.trim().to_string();
        if api_key.is_empty() {
            return Err(Error::Invalid {
                message: format!(
                    "the {} is empty; paste it from the provider",
                    key_scheme.label
                ),
                fields: vec![("/api_key".into(), "required".into())],
            });
        }
        let config = self
            .validate_config(&entry.connector, req.config.as_ref().unwrap_or(&json!({})))
            .await?;
        let mut merged = schema_defaults(
            &crate::runtime::config_schema(&m.config_schema)
                .map_err(|e| Error::Internal(e.to_string()))?,
        );
        merge(&mut merged, &config);
        let base =
            oauth::fill_template(&m.api_base_url, &Value::Object(merged.clone())).map_err(|e| {
                Error::Invalid {
                    message: e,
                    fields: vec![],
                }
            })?;
        let credential = Secret::new(api_key.clone());
        let env = CallEnv {
            credential: Some(credential.clone()),
            form_secrets: HashMap::from([(SecretKind::ApiKey, credential)]),
            api_base_url: Some(base),
            granted_hosts: entry.granted_hosts.clone(),
            endpoint_overrides: self.api_key_overrides(ws, &m.id).await?,
        };
        let account = entry
            .connector
            .lookup_account(
                env,
                CallContext {
                    config: Value::Object(merged).to_string(),
                    metadata: json!({"display_name": req.name}).to_string(),
                    definition: String::new(),
                },
            )
            .await
            .map_err(|e| Error::Upstream(format!("could not verify the key: {e}")))?
            .map_err(|e| match e.kind {
                ErrorKind::Unavailable | ErrorKind::RateLimited => Error::Upstream(format!(
                    "{} is unavailable, try again: {}",
                    m.display_name, e.message
                )),
                _ => Error::Invalid {
                    message: format!(
                        "{} rejected the {}: {}",
                        m.display_name, key_scheme.label, e.message
                    ),
                    fields: vec![("/api_key".into(), e.message)],
                },
            })?;
        let id = new_id("conn");
        let name = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| account.display_name.clone());
        let mut row = ConnectionRow::new(
            &id,
            ws,
            &m.id,
            name,
            "api_key",
            "active",
            config.to_string(),
        );
        row.account_id = Some(account.external_id.clone());
        row.account_name = Some(account.display_name.clone());
        row.account_email = account.email.clone();
        self.store.insert_connection(&row).await?;
        self.emit("connection.created", &row, json!({})).await;
        self.emit("connection.active", &row, json!({})).await;
        let sealed = self.seal_field(ws, &id, "api_key", &api_key);
        self.store.put_secret(&id, ws, &sealed).await?;
        self.store
            .set_account(
                ws,
                &id,
                &account.external_id,
                &account.display_name,
                account.email.as_deref(),
                now_ms() + self.config.probe_interval_ms,
            )
            .await?;
        self.audit(
            ws,
            Some(&id),
            "connection.created",
            actor,
            json!({"connector": m.id, "auth": "api_key"}),
        )
        .await;
        self.audit(
            ws,
            Some(&id),
            "account.looked_up",
            actor,
            json!({"account_id": account.external_id, "display_name": account.display_name}),
        )
        .await;
        self.get(ws, &id).await
    }

    /// Endpoint overrides for API-key connectors come from a provider app row without a client.
    async fn api_key_overrides(&self, ws: &str, connector: &str) -> Result<Vec<(String, String)>> {
        Ok(match self.store.provider_app(ws, connector).await? {
            Some(app) => serde_json::from_str::<BTreeMap<String, String>>(&app.endpoint_overrides)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            None => vec![],
        })
    }

    /// Renames or reconfigures a connection.
    pub async fn patch(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        p: Patch,
    ) -> Result<ConnectionRow> {
        self.forget(id);
        let c = self.get(ws, id).await?;
        let entry = self.connector(&c.connector_id)?;
        let name = match p.name {
            Some(n) if n.trim().is_empty() => {
                return Err(Error::Invalid {
                    message: "name must not be empty".into(),
                    fields: vec![("/name".into(), "required".into())],
                });
            }
            Some(n) => n.trim().to_string(),
            None => c.name.clone(),
        };
        let config = match &p.config {
            Some(cfg) => self
                .validate_config(&entry.connector, cfg)
                .await?
                .to_string(),
            None => c.config.clone(),
        };
        self.store
            .update_name_config(ws, id, &name, &config)
            .await?;
        if name != c.name {
            self.audit(
                ws,
                Some(id),
                "connection.renamed",
                actor,
                json!({"name": name}),
            )
            .await;
        }
        if config != c.config {
            self.audit(ws, Some(id), "config.changed", actor, json!({"keys": serde_json::from_str::<Value>(&config).ok().and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))})).await;
        }
        self.get(ws, id).await
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Refreshes a connection's access token now.
    /// Refreshes a connection's access token, as `mode` says.
    pub async fn refresh(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        mode: RefreshMode,
    ) -> Result<ConnectionRow> {
        // A refresh completed after this request arrived satisfies it: callers that queued behind
        // a refresh share it. Otherwise the mode decides whether one is needed.
        let arrived = match mode {
            RefreshMode::RejectedAt(t) => t,
            _ => now_ms(),
        };
        let fresh = |c: &ConnectionRow| {
            c.last_refreshed_at.is_some_and(|t| t >= arrived)
                || match mode {
                    RefreshMode::Force | RefreshMode::RejectedAt(_) => false,
                    RefreshMode::IfExpiring => c
                        .expires_at
                        .is_some_and(|e| e > now_ms() + ON_DEMAND_MARGIN_MS),
                    RefreshMode::IfDue => c.next_refresh_at.is_none_or(|t| t > now_ms()),
                }
        };
        // Single flight in this process: callers queue here.
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        self.forget(id);
        let c = self.get(ws, id).await?;
        if fresh(&c) {
            return Ok(c);
        }
        if let RefreshMode::RejectedAt(_) = mode {
            // A caller hammering an endpoint that keeps answering 401 for another reason must
            // not rotate the tokens on every request: one rejection-driven refresh per
            // connection per REJECTION_REFRESH_MIN (callers that queued behind it share it above).
            let mut recent = self
                .rejection_refreshes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if recent
                .get(id)
                .is_some_and(|at| at.elapsed() < REJECTION_REFRESH_MIN)
            {
                return Ok(c);
            }
            recent.retain(|_, at| at.elapsed() < REJECTION_REFRESH_MIN);
            recent.insert(id.to_string(), std::time::Instant::now());
        }
        let entry = self.connector(&c.connector_id)?;
        if c.auth_kind == "api_key" {
            // Nothing to refresh: verify the key instead.
            self.lookup_and_activate(ws, id).await?;
            return self.get(ws, id).await;
        }
        self.oauth_of(entry.connector.manifest())?;
        // Single flight across processes: claim the lease for the version we read, or wait for
        // the process that holds it and share its result.
        let lease_ms = self.config.refresh_lease_ms;
        let deadline = now_ms() + lease_ms + 5_000;
        while !self
            .store
            .acquire_lease(ws, id, &self.instance, c.token_version, lease_ms)
            .await?
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.get(ws, id).await?;
            if now.token_version != c.token_version || fresh(&now) {
                return Ok(now);
            }
            if now.status == "revoked" {
                return Err(Error::Conflict(revoked_reason(&now)));
            }
            if now_ms() > deadline {
                return Err(Error::Upstream(
                    "Another keyport process is refreshing this connection; try again shortly."
                        .into(),
                ));
            }
        }
        let result = self.refresh_with_lease(ws, actor, id, &fresh, None).await;
        if !matches!(result, Ok(Refreshed::Saved))
            && let Err(e) = self.store.release_lease(ws, id, &self.instance).await
        {
            tracing::warn!(connection = id, error = %e, "could not release a refresh lease; it expires by itself");
        }
        match result? {
            Refreshed::Fresh(c) => Ok(*c),
            Refreshed::Saved => self.get(ws, id).await,
        }
    }

    /// The refresh itself, holding the lease: re-read, call the provider, write back fenced by
    /// lease and token version (new refresh token and access token in one transaction, before any
    /// caller sees the access token).
    async fn refresh_with_lease(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        fresh: &(dyn Fn(&ConnectionRow) -> bool + Sync),
        read: Option<ConnectionRow>,
    ) -> Result<Refreshed> {
        let c = match read {
            Some(c) => c,
            None => self.get(ws, id).await?,
        };
        if fresh(&c) {
            return Ok(Refreshed::Fresh(Box::new(c)));
        }
        let entry = self.connector(&c.connector_id)?;
        let m = entry.connector.manifest().clone();
        if c.status == "revoked" {
            return Err(Error::Conflict(revoked_reason(&c)));
        }
        let o = self.oauth_of(&m)?.clone();
        let refresh_token = match self.open_secret(ws, id, "refresh_token").await? {
            Some(token) => token,
            None => {
                let reason = "The access token cannot be refreshed (the provider issued no refresh token). Reconnect to continue.";
                if c.expires_at.is_some_and(|e| e <= now_ms()) {
                    if c.status != "expired" {
                        self.transition(&c, "expired", reason, actor).await?;
                    }
                    self.store.schedule_refresh(ws, id, None, 0).await?;
                } else {
                    // Nothing to refresh with: look again when the token expires.
                    self.store.schedule_refresh(ws, id, c.expires_at, 0).await?;
                }
                return Err(Error::Conflict(reason.into()));
            }
        };
        let (app, client_secret, overrides) = self.app(ws, &c.connector_id).await?;
        let config = self.effective_config_of(&c, &json!({}))?;
        let call = TokenCall {
            http: &self.http,
            oauth: &o,
            config: &config,
            client_id: &app.client_id,
            client_secret: client_secret.as_ref(),
            overrides: &overrides,
        };
        let started = std::time::Instant::now();
        let mut result = match call.refresh(&refresh_token, None).await {
            Ok((status, body)) => self.read_tokens(&entry.connector, &o, status, body).await,
            Err(e) => Err(e),
        };
        if let Err(OAuthError::InDoubt(why)) = &result {
            // The request went out and no answer came back: the provider may or may not have
            // rotated the refresh token. Retry once with the same one, within a renewed lease
            // (providers with a reuse grace period answer it; others say invalid_grant).
            self.audit(
                ws,
                Some(id),
                "refresh.in_doubt",
                actor,
                json!({"error": why}),
            )
            .await;
            if !self
                .store
                .renew_lease(
                    ws,
                    id,
                    &self.instance,
                    c.token_version,
                    self.config.refresh_lease_ms,
                )
                .await?
            {
                return Err(Error::Upstream(
                    "The refresh lease lapsed during an unanswered refresh; try again.".into(),
                ));
            }
            result = match call.refresh(&refresh_token, None).await {
                Ok((status, body)) => self.read_tokens(&entry.connector, &o, status, body).await,
                Err(e) => Err(e),
            };
        }
        let outcome = match &result {
            Ok(_) => "success",
            Err(OAuthError::Definitive { .. }) => "definitive_failure",
            Err(_) => "transient_failure",
        };
        metrics::counter!("keyport_refreshes_total", "outcome" => outcome).increment(1);
        metrics::histogram!("keyport_refresh_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(t) => {
                let requested: Vec<String> =
                    serde_json::from_str(&c.requested_scopes).unwrap_or_default();
                let fence = Some((self.instance.as_str(), c.token_version));
                // The audit row commits with the tokens, and the lease is released by the same
                // statement.
                let audit = (
                    "token.refreshed",
                    actor,
                    json!({"rotated": t.refresh_token.is_some(), "expires_in": t.expires_in}),
                );
                if self
                    .save_tokens(ws, &c, &t, &requested, false, fence, Some(audit))
                    .await?
                    .is_none()
                {
                    tracing::error!(
                        connection = id,
                        "refresh lease lost before the new tokens were written; they were discarded"
                    );
                    return Err(Error::Upstream(
                        "The refresh took longer than its lease and was discarded; try again."
                            .into(),
                    ));
                }
                if c.expiring_soon_reason.as_deref() == Some("failing") {
                    self.store
                        .clear_expiring_soon(ws, id, Some("failing"))
                        .await?;
                }
                if c.status != "active" && c.status != "pending" {
                    // A success after failures: "recovered".
                    self.transition(&c, "active", "", actor).await?;
                } else if c.status == "pending" && c.account_id.is_none() {
                    self.lookup_and_activate(ws, id).await?;
                }
                Ok(Refreshed::Saved)
            }
            Err(OAuthError::Definitive { code, description }) => {
                let reason = format!(
                    "The provider no longer accepts this connection's authorization ({code}{}). Reconnect to continue.",
                    if description.is_empty() {
                        String::new()
                    } else {
                        format!(": {description}")
                    }
                );
                self.audit(
                    ws,
                    Some(id),
                    "refresh.failed",
                    actor,
                    json!({"error": code, "definitive": true}),
                )
                .await;
                self.transition(&c, "revoked", &reason, actor).await?;
                Err(Error::Conflict(reason))
            }
            Err(e) => {
                // Transient (5xx, 429, network) or unclear: back off with jitter, honouring
                // Retry-After; the status changes only after a run of failures.
                let failures = c.refresh_failures + 1;
                let retry_after = match &e {
                    OAuthError::Transient(_, Some(secs)) => Some(*secs as i64 * 1000),
                    _ => None,
                };
                let exp = self
                    .config
                    .refresh_backoff_ms
                    .saturating_mul(1 << (failures - 1).min(16));
                let delay = retry_after.unwrap_or(exp).clamp(1, 15 * 60 * 1000);
                let jitter = (rand::random::<u64>() % (delay as u64 / 5 + 1)) as i64;
                self.store
                    .schedule_refresh(ws, id, Some(now_ms() + delay + jitter), failures)
                    .await?;
                self.audit(
                    ws,
                    Some(id),
                    "refresh.failed",
                    actor,
                    json!({"error": e.to_string(), "definitive": false, "failures": failures, "retry_in_ms": delay + jitter}),
                )
                .await;
                if failures >= (self.config.refresh_failure_threshold + 1) / 2
                    && self.store.set_expiring_soon(ws, id, "failing").await?
                {
                    self.emit(
                        "connection.expiring_soon",
                        &c,
                        json!({"reason": "failing", "failures": failures}),
                    )
                    .await;
                    self.audit(
                        ws,
                        Some(id),
                        "connection.expiring_soon",
                        actor,
                        json!({"reason": "failing", "failures": failures,
                               "message": "Refreshes keep failing; the connection will need reconnecting if this goes on."}),
                    )
                    .await;
                }
                if failures >= self.config.refresh_failure_threshold && c.status == "active" {
                    let reason = format!(
                        "Reconnection needed: the provider failed {failures} refreshes in a row (last: {e}). keyport keeps retrying."
                    );
                    self.transition(&c, "error", &reason, actor).await?;
                }
                Err(Error::Upstream(format!(
                    "Failed to refresh the connection: {e}. Try again later; you may need to reconnect."
                )))
            }
        }
    }

    pub(crate) async fn transition(
        &self,
        c: &ConnectionRow,
        to: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        self.forget(&c.id);
        let reason = (!reason.is_empty()).then_some(reason);
        let from = c.status.clone();
        let changed = self
            .store
            // Revoking applies whatever happened meanwhile; other changes only from the status
            // they were decided on.
            .transition_status(
                &c.workspace_id,
                &c.id,
                (to != "revoked").then_some(from.as_str()),
                to,
                reason,
                |row| {
                    crate::webhooks::status_event(&from, to).map(|kind| {
                        crate::webhooks::connection_event(
                            kind,
                            row,
                            json!({"previous_status": from, "reason": reason}),
                        )
                    })
                },
            )
            .await?;
        if changed {
            self.audit(
                &c.workspace_id,
                Some(&c.id),
                "status.changed",
                actor,
                json!({"from": c.status, "to": to, "reason": reason}),
            )
            .await;
        }
        Ok(())
    }

    /// Starts a reconnect: a new flow for the same connection, optionally with more scopes.
    pub async fn reconnect(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
        extra_scopes: &[String],
        return_to: Option<String>,
        session: Option<String>,
    ) -> Result<Started> {
        let c = self.get(ws, id).await?;
        let entry = self.connector(&c.connector_id)?;
        let m = entry.connector.manifest();
        self.oauth_of(m)?;
        if let Some(r) = &return_to {
            self.check_return_to(r)?;
        }
        let (app, _, _) = self.app(ws, &m.id).await?;
        let previous: Vec<String> = serde_json::from_str(&c.requested_scopes).unwrap_or_default();
        let scopes = self.requested_scopes(m, &app, &previous, extra_scopes)?;
        self.audit(
            ws,
            Some(id),
            "reconnect.started",
            actor,
            json!({"scopes": scopes}),
        )
        .await;
        let browser = FlowBrowser { return_to, session };
        self.new_flow(ws, id, &m.id, &scopes, true, browser).await
    }

    /// Revokes at the provider (when it has an endpoint) and deletes the secrets whatever the
    /// outcome (O17).
    pub async fn revoke(
        &self,
        ws: &str,
        actor: &Actor,
        id: &str,
    ) -> Result<(ConnectionRow, Option<String>)> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let c = self.get(ws, id).await?;
        let entry = self.connector(&c.connector_id)?;
        let m = entry.connector.manifest().clone();
        let mut provider_error = None;
        if let AuthScheme::Oauth2(o) = &m.auth
            && o.revoke_url.is_some()
        {
            // RFC 7009: revoking the refresh token revokes the grant; else the access token.
            let token = match self.open_secret(ws, id, "refresh_token").await? {
                Some(t) => Some((t, "refresh_token")),
                None => self
                    .open_secret(ws, id, "access_token")
                    .await?
                    .map(|t| (t, "access_token")),
            };
            if let Some((token, hint)) = token {
                match self.app(ws, &c.connector_id).await {
                    Ok((app, secret, overrides)) => {
                        let config = self.effective_config(ws, id, &json!({})).await?;
                        let call = TokenCall {
                            http: &self.http,
                            oauth: o,
                            config: &config,
                            client_id: &app.client_id,
                            client_secret: secret.as_ref(),
                            overrides: &overrides,
                        };
                        if let Err(e) = call.revoke(&token, hint).await {
                            provider_error = Some(e.to_string());
                        }
                    }
                    Err(e) => provider_error = Some(e.to_string()),
                }
            }
        }
        let deleted = self.store.delete_secrets(ws, id, None).await?;
        self.audit(
            ws,
            Some(id),
            "connection.revoked",
            actor,
            json!({"secrets_deleted": deleted, "provider_error": provider_error}),
        )
        .await;
        let reason = format!("Revoked by {}. Reconnect to use it again.", actor.0);
        self.transition(&c, "revoked", &reason, actor).await?;
        Ok((self.get(ws, id).await?, provider_error))
    }

    /// Deletes a connection; 409 while dependents exist.
    pub async fn delete(&self, ws: &str, actor: &Actor, id: &str) -> Result<()> {
        self.forget(id);
        let c = self.get(ws, id).await?;
        let blocking = self.store.delete_connection(ws, id).await?;
        if blocking > 0 {
            return Err(Error::Conflict(format!(
                "{blocking} workflow(s) depend on this connection; remove them (DELETE /api/v1/connections/{id}/dependents/{{ref}}) before deleting it"
            )));
        }
        self.audit(
            ws,
            Some(id),
            "connection.deleted",
            actor,
            json!({"connector": c.connector_id, "name": c.name}),
        )
        .await;
        self.emit("connection.deleted", &c, json!({})).await;
        Ok(())
    }

    /// Registers a dependent.
    pub async fn add_dependent(&self, ws: &str, actor: &Actor, id: &str, r: &str) -> Result<bool> {
        self.get(ws, id).await?;
        if r.is_empty() || r.len() > 200 {
            return Err(Error::BadRequest(
                "a dependent ref is 1-200 characters".into(),
            ));
        }
        let added = self.store.add_dependent(ws, id, r).await?;
        if added {
            self.audit(ws, Some(id), "dependent.added", actor, json!({"ref": r}))
                .await;
        }
        Ok(added)
    }

    /// Removes a dependent.
    pub async fn remove_dependent(&self, ws: &str, actor: &Actor, id: &str, r: &str) -> Result<()> {
        self.get(ws, id).await?;
        if !self.store.remove_dependent(ws, id, r).await? {
            return Err(Error::NotFound(format!(
                "no dependent {r:?} on this connection"
            )));
        }
        self.audit(ws, Some(id), "dependent.removed", actor, json!({"ref": r}))
            .await;
        Ok(())
    }
}

fn revoked_reason(c: &ConnectionRow) -> String {
    c.status_reason
        .clone()
        .unwrap_or_else(|| "This connection was revoked. Reconnect it to continue.".into())
}

fn app_owner(ws: &str, connector: &str) -> String {
    format!("app:{ws}:{connector}")
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
