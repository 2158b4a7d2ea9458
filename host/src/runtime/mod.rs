//! The connector runtime: the one module that knows wasmtime.
//!
//! It owns the process's single [`wasmtime::Engine`], turns component bytes into a
//! pre-instantiated [`Component`] (compiled once, cached on disk by content hash), and runs each
//! call in a fresh `Store` with:
//!
//! | limit | how | on breach |
//! |---|---|---|
//! | time | epoch interruption, deadline per call ([`Limits::call_timeout`]); the guest yields its thread at every tick until then | the call fails with [`CallError::Deadline`] |
//! | memory | a per-store limiter ([`Limits::memory_bytes`]) | the call fails with [`CallError::MemoryLimit`] |
//! | egress | the single `http.send` implementation ([`egress`]) | the guest gets `http-error.denied` |
//! | output | stdout/stderr captured, capped, sent to the host log | excess bytes are dropped |
//!
//! WASI p2 is linked because Rust guests import it through std, but with an empty context: no
//! preopened directories, no environment, no arguments, no sockets, no name lookups.
//!
//! Everything wasmtime-specific (its `Error` type, its config) stays here; callers see
//! [`LoadError`] and [`CallError`].

pub mod egress;
mod http;
mod legacy;
mod upstream;

pub use http::{
    BodyError, Outbound, add_credential, api_headers, body_capped, check_literal, checked_target,
    checked_url, error_chain, outbound_client,
};
pub use upstream::{DeadlineBody, LocalUpstream, Upstream, UpstreamError};
mod manifest;
mod stdio;
pub mod template;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use manifest::{
    ManifestError, config_schema, manifest_json, schema_defaults, validate_manifest,
};
pub(crate) use template::sample as sample_placeholders;

pub use self::bindings::keyport::connector::types::{
    Account, ApiKey, AuthScheme, CallContext, Classification, ClientAuth, ConnectorError,
    CredentialPlacement, ErrorKind, FieldError, Manifest, Oauth2, ResponseView, Scope, TokenBody,
    TokenPaths, TokenSet,
};

/// A standard OAuth 2 scheme (form bodies, standard token fields), for unit tests and fuzzing.
pub(crate) fn standard_oauth2() -> Oauth2 {
    Oauth2 {
        authorize_url: "https://idp.example/authorize".into(),
        token_url: "https://idp.example/token".into(),
        refresh_url: None,
        revoke_url: None,
        issuer: None,
        iss_required: false,
        scope_separator: " ".into(),
        pkce: true,
        client_auth: ClientAuth::Body,
        token_body: TokenBody::Form,
        authorize_params: vec![],
        token_params: vec![],
        refresh_params: vec![],
        token_paths: TokenPaths {
            access_token: vec![],
            refresh_token: vec![],
            expires_in: vec![],
            refresh_token_expires_in: vec![],
            scope: vec![],
            token_type: vec![],
            metadata: vec![],
        },
    }
}

/// Host bindings for `keyport:connector@0.2.0`, the current contract.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "connector",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The contract versions this host loads, newest first. Older versions are adapted to the newest
/// (see `legacy`).
pub const CONTRACT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// A pre-instantiated component, by the contract version it implements.
#[derive(Clone)]
enum Pre {
    Current(bindings::ConnectorPre<HostState>),
    V0_1(legacy::bindings::ConnectorPre<HostState>),
}

/// An instance of a component, by contract version.
enum Instance {
    Current(bindings::Connector),
    V0_1(legacy::bindings::Connector),
}

/// Resource limits for connector calls.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one call, including its HTTP requests.
    pub call_timeout: Duration,
    /// Linear memory a call may use.
    pub memory_bytes: usize,
    /// Largest response body `http.send` hands to a guest.
    pub max_response_bytes: usize,
    /// Requests one call may send.
    pub max_requests_per_call: usize,
    /// Connect timeout of `http.send`.
    pub connect_timeout: Duration,
    /// Total timeout of one `http.send`.
    pub request_timeout: Duration,
    /// Bytes of guest stdout/stderr kept per call (each).
    pub max_output_bytes: usize,
    /// Calls running at once (pool size).
    pub max_concurrent_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            max_response_bytes: 8 << 20,
            max_requests_per_call: 16,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_output_bytes: 16 << 10,
            max_concurrent_calls: 128,
        }
    }
}

/// How the runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Limits of every call.
    pub limits: Limits,
    /// Lets connectors reach loopback addresses over plain HTTP (local development and tests).
    pub allow_loopback: bool,
}

/// Failure to turn bytes into a usable connector.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly binary.
    #[error(
        "not a WebAssembly file (the first bytes are not `\\0asm`); build the connector with `cargo build --release --target wasm32-wasip2`"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; build for the `wasm32-wasip2` target (not wasm32-unknown-unknown or wasm32-wasip1)"
    )]
    CoreModule,
    /// Compilation or validation by wasmtime failed.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not implement the contract.
    #[error(
        "the component does not implement the `connector` world of keyport:connector@0.2.0 (or of an older supported version: 0.1.0): {0}"
    )]
    WrongWorld(String),
    /// `describe` failed.
    #[error("calling `describe` failed: {0}")]
    Describe(#[from] CallError),
    /// The manifest is invalid.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
}

/// A call into a connector that failed on the host side (the guest's own errors are results).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline.
    #[error("the connector did not finish within {0:?} and was stopped")]
    Deadline(Duration),
    /// The call asked for more memory than allowed.
    #[error("the connector exceeded its memory limit of {0} bytes and was stopped")]
    MemoryLimit(usize),
    /// The guest trapped (panic, unreachable, out-of-bounds access).
    #[error("the connector crashed: {0}")]
    Trap(String),
    /// The host could not run the call.
    #[error("the host could not run the connector: {0}")]
    Host(String),
}

/// A loaded connector: compiled, pre-instantiated, its manifest read and validated.
pub struct Connector {
    pre: Pre,
    runtime: Arc<RuntimeInner>,
    manifest: Manifest,
    access: Option<Arc<ManifestAccess>>,
    hash: String,
    contract: &'static str,
    /// The definition a parameterised connector was configured with.
    definition: Option<Arc<str>>,
}

/// Failure to configure a parameterised connector with a definition.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The connector refused the definition: field errors (JSON Pointer, message).
    #[error("the definition is invalid: {}", .0.iter().map(|f| format!("{}: {}", if f.path.is_empty() { "/" } else { &f.path }, f.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The call failed.
    #[error("calling `configure` failed: {0}")]
    Call(#[from] CallError),
    /// The manifest it produced is invalid.
    #[error("the manifest for this definition is invalid: {0}")]
    Manifest(#[from] ManifestError),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.manifest.id)
            .field("hash", &self.hash)
            .finish()
    }
}

/// What a call may do and on whose behalf: built by the caller, never visible to the guest.
#[derive(Clone, Default)]
pub struct CallEnv {
    /// The connection's credential (access token or API key), added by the host.
    pub credential: Option<Secret>,
    /// Secrets a guest may ask to have appended to a form body (`form-secrets`).
    pub form_secrets: HashMap<SecretKind, Secret>,
    /// The API base URL with placeholders filled; relative request URLs resolve against it.
    pub api_base_url: Option<String>,
    /// Egress hosts the admin granted; `None` means all the manifest declares.
    pub granted_hosts: Option<Vec<String>>,
    /// URL prefix rewrites (self-hosted provider instances, tests): `(from, to)`.
    pub endpoint_overrides: Vec<(String, String)>,
    /// The hosts of the manifest's egress patterns with placeholders (`{hostname}`,
    /// `api.{region}.example.com`), filled from this connection's config.
    pub resolved_hosts: Vec<String>,
    /// The connection's effective config, for placeholders in API headers.
    pub config: serde_json::Value,
    /// The connection's token-response fields, for placeholders in API headers.
    pub metadata: serde_json::Value,
    /// When set, each request the component sends is noted here as `METHOD URL` (before the
    /// credential is added): `keyport connector check --try-lookup` shows them to the author.
    pub request_log: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl CallEnv {
    /// The values placeholders in API headers and credential headers may use: host values
    /// (`client_id`, and `credential` where given) first, then config, then token-response fields.
    pub fn vars<'a>(&'a self, extra: &'a [(&'a str, &'a str)]) -> template::Vars<'a> {
        template::Vars {
            config: &self.config,
            metadata: &self.metadata,
            extra,
        }
    }

    /// The provider app's client id, when the call has one.
    pub fn client_id(&self) -> Option<&str> {
        self.form_secrets
            .get(&SecretKind::ClientId)
            .map(|s| s.expose())
    }
}

/// The secrets the host can add for a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// The connection's access token.
    AccessToken,
    /// The connection's refresh token.
    RefreshToken,
    /// The connection's API key.
    ApiKey,
    /// The provider app's client id.
    ClientId,
    /// The provider app's client secret.
    ClientSecret,
}

/// A secret string: redacted in `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct Secret(Arc<zeroize::Zeroizing<String>>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::new(zeroize::Zeroizing::new(value.into())))
    }
    /// The value; keep it out of logs and errors.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The runtime: engine, linker, HTTP client, epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    http: Outbound,
    slots: Semaphore,
    pooling: bool,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// Epoch tick: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(5);

impl Runtime {
    /// Sets up the engine (pooling allocator when the machine allows it), the linker with an
    /// empty WASI and the keyport imports, and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let limits = &config.limits;
        let (engine, pooling) = match Engine::new(&engine_config(limits, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable on this machine; using on-demand allocation");
                let engine = Engine::new(&engine_config(limits, false)).map_err(to_anyhow)?;
                (engine, false)
            }
        };
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        bindings::Connector::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;
        legacy::bindings::Connector::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(to_anyhow)?;

        let http = http::client(&config)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("keyport-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        if config.allow_loopback {
            tracing::warn!(
                "KEYPORT_ALLOW_LOOPBACK is on: connectors may reach loopback addresses over plain HTTP. \
                 Use this for local development and tests only."
            );
        }
        let slots = Semaphore::new(limits.max_concurrent_calls);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                http,
                slots,
                pooling,
                stop_ticker,
            }),
        })
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Validates, compiles (or loads from cache), pre-instantiates and describes a component.
    pub async fn load(&self, bytes: &[u8]) -> Result<Connector, LoadError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        // Core modules are version 1 (layer 0); components carry layer 1 in bytes 6..8.
        if bytes[6..8] == [0, 0] {
            return Err(LoadError::CoreModule);
        }
        // Hashing and compiling take up to seconds for a large upload: on the blocking pool, so
        // the HTTP thread that received it keeps serving its other connections.
        let (engine, cache_dir, owned) = (
            self.inner.engine.clone(),
            self.inner.config.cache_dir.clone(),
            bytes.to_vec(),
        );
        let (hash, component) = tokio::task::spawn_blocking(move || {
            let hash = hex::encode(Sha256::digest(&owned));
            compile(&engine, cache_dir.as_deref(), &owned, &hash).map(|c| (hash, c))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            LoadError::WrongWorld(format!(
                "{} (connectors may import only keyport:connector/http, keyport:connector/log and WASI p2)",
                flatten(&e)
            ))
        })?;
        // The newest contract first; a component that matches none is reported against it.
        let (pre, contract) = match bindings::ConnectorPre::new(pre.clone()) {
            Ok(p) => (Pre::Current(p), CONTRACT_VERSIONS[0]),
            Err(current) => match legacy::bindings::ConnectorPre::new(pre) {
                Ok(p) => (Pre::V0_1(p), "0.1.0"),
                Err(legacy) => {
                    return Err(LoadError::WrongWorld(format!(
                        "{} (as 0.1.0: {})",
                        flatten(&current),
                        flatten(&legacy)
                    )));
                }
            },
        };
        let mut connector = Connector {
            pre,
            runtime: self.inner.clone(),
            manifest: placeholder_manifest(),
            access: None,
            hash,
            contract,
            definition: None,
        };
        let manifest = connector.describe().await?;
        validate_manifest(&manifest)?;
        connector.set_manifest(manifest);
        Ok(connector)
    }
}

/// Compiles a component, or reads it from the compile cache (`cache_dir`) by its hash.
fn compile(
    engine: &Engine,
    cache_dir: Option<&std::path::Path>,
    bytes: &[u8],
    hash: &str,
) -> Result<Component, LoadError> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes).map_err(|e| LoadError::Invalid(flatten(&e)));
    };
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    let path = dir.join(format!(
        "{hash}-{:016x}.cwasm",
        std::hash::Hasher::finish(&h)
    ));
    if path.exists() {
        // SAFETY: files in the cache directory are written only by `Component::serialize`
        // below, named by the source's hash and this engine's compatibility hash.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component")
            }
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid(flatten(&e)))?;
    match component.serialize() {
        Ok(compiled) => {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if let Err(e) =
                std::fs::write(&tmp, compiled).and_then(|_| std::fs::rename(&tmp, &path))
            {
                tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not serialize the compiled component"),
    }
    Ok(component)
}

fn engine_config(limits: &Limits, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let n = limits.max_concurrent_calls as u32;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(limits.memory_bytes)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16);
        // Reset the low part of each slot with memset instead of madvise: a connector call
        // touches a few pages (stack, data, small heap), and madvise costs page faults on reuse
        // and TLB shootdowns across threads. Measured in BENCHMARKS.md: describe 34 µs → 12 µs.
        pool.linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn placeholder_manifest() -> Manifest {
    Manifest {
        id: String::new(),
        display_name: String::new(),
        version: String::new(),
        description: String::new(),
        icon: String::new(),
        docs_url: None,
        auth: AuthScheme::ApiKey(ApiKey {
            label: String::new(),
            help: String::new(),
        }),
        credential: CredentialPlacement::Bearer,
        scopes: Vec::new(),
        api_base_url: String::new(),
        api_headers: Vec::new(),
        egress_hosts: Vec::new(),
        config_schema: String::new(),
        configurable: false,
        classifies_responses: false,
        categories: Vec::new(),
    }
}

/// wasmtime's error rendered with its causes, for messages.
fn flatten(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// Per-store state: WASI's empty context, limits, and what this call may do.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    env: Arc<CallEnv>,
    manifest: Option<Arc<ManifestAccess>>,
    runtime: Arc<RuntimeInner>,
    imports_enabled: bool,
    requests_sent: usize,
    log_lines: usize,
}

/// The manifest facts `http.send` needs.
pub(crate) struct ManifestAccess {
    id: String,
    egress_hosts: Vec<String>,
    credential: CredentialPlacement,
    api_headers: Vec<(String, String)>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryLimiter {
    max: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.max
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::keyport::connector::types::Host for HostState {}

impl bindings::keyport::connector::log::Host for HostState {
    async fn log(&mut self, level: bindings::keyport::connector::log::Level, message: String) {
        use bindings::keyport::connector::log::Level;
        if !self.imports_enabled || self.log_lines >= 200 {
            return;
        }
        self.log_lines += 1;
        let id = self.manifest.as_ref().map(|m| m.id.as_str()).unwrap_or("?");
        let message: String = message.chars().take(2048).collect();
        match level {
            Level::Trace => {
                tracing::trace!(target: "keyport::connector", connector = id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "keyport::connector", connector = id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "keyport::connector", connector = id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "keyport::connector", connector = id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "keyport::connector", connector = id, "{message}")
            }
        }
    }
}

/// How much of the host a call may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imports {
    Enabled,
    /// `http` and `log` refuse.
    Disabled,
    /// As `Disabled`, and the guest's stdout and stderr are dropped, never logged: for hooks
    /// that see secrets (`parse-token-response` reads the raw token response).
    Sealed,
}

impl Connector {
    fn set_manifest(&mut self, manifest: Manifest) {
        self.access = Some(Arc::new(ManifestAccess {
            id: manifest.id.clone(),
            egress_hosts: manifest.egress_hosts.clone(),
            credential: manifest.credential.clone(),
            api_headers: manifest.api_headers.clone(),
        }));
        self.manifest = manifest;
    }

    /// Configures a parameterised connector (e.g. custom OAuth) with a definition: a new
    /// connector sharing this compiled component, with the definition's manifest, whose calls
    /// carry the definition.
    pub async fn configure(&self, definition: &str) -> Result<Connector, ConfigureError> {
        let def = definition.to_owned();
        let manifest = self
            .call(
                Arc::new(CallEnv::default()),
                Imports::Disabled,
                move |c, s| {
                    Box::pin(async move {
                        match c {
                            Instance::Current(c) => c.call_configure(s, &def).await,
                            Instance::V0_1(c) => match c.call_configure(s, &def).await? {
                                Ok(m) => Ok(Ok(legacy::manifest(m)?)),
                                Err(e) => Ok(Err(legacy::convert(e)?)),
                            },
                        }
                    })
                },
            )
            .await?
            .map_err(ConfigureError::Invalid)?;
        validate_manifest(&manifest)?;
        let mut configured = Connector {
            pre: self.pre.clone(),
            runtime: self.runtime.clone(),
            manifest: placeholder_manifest(),
            access: None,
            hash: self.hash.clone(),
            contract: self.contract,
            definition: Some(Arc::from(definition)),
        };
        configured.set_manifest(manifest);
        Ok(configured)
    }

    /// The definition this connector was configured with, if any.
    pub fn definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// SHA-256 of the component bytes, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    /// The contract version the component implements.
    pub fn contract(&self) -> &'static str {
        self.contract
    }

    /// Runs one call in a fresh store, under the deadline and memory limit.
    async fn call<R, F>(&self, env: Arc<CallEnv>, imports: Imports, f: F) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(
                &'a Instance,
                &'a mut Store<HostState>,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
            > + Send,
        R: Send,
    {
        let rt = &self.runtime;
        let limits = &rt.config.limits;
        let _slot = rt
            .slots
            .acquire()
            .await
            .map_err(|_| CallError::Host("runtime shut down".into()))?;
        let (out, err) = (
            stdio::CappedPipe::new(limits.max_output_bytes),
            stdio::CappedPipe::new(limits.max_output_bytes),
        );
        let state = HostState {
            wasi: WasiCtx::builder()
                .stdout(out.clone())
                .stderr(err.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max: limits.memory_bytes,
                exceeded: false,
            },
            env,
            manifest: self.access.clone(),
            runtime: rt.clone(),
            imports_enabled: imports == Imports::Enabled,
            requests_sent: 0,
            log_lines: 0,
        };
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        // At every tick the guest yields to the event loop (a spinning guest shares its thread
        // with the connections served there); once its ticks are used up, it traps.
        let mut ticks_left = (limits.call_timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left = ticks_left.saturating_sub(1);
            Ok(if ticks_left == 0 {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Yield(1)
            })
        });

        let timeout = limits.call_timeout;
        let run = async {
            let instance = match &self.pre {
                Pre::Current(pre) => Instance::Current(pre.instantiate_async(&mut store).await?),
                Pre::V0_1(pre) => Instance::V0_1(pre.instantiate_async(&mut store).await?),
            };
            f(&instance, &mut store).await
        };
        // The epoch deadline stops guest code; the wall-clock timeout also covers time spent
        // waiting in host calls (HTTP), with a little slack so the trap wins when both apply.
        let result = tokio::time::timeout(timeout + TICK * 4, run).await;
        let id = self.manifest.id.as_str();
        for (stream, pipe) in [("stdout", &out), ("stderr", &err)] {
            match pipe.take() {
                Some(_) if imports == Imports::Sealed => {
                    tracing::debug!(target: "keyport::connector", connector = id, stream, "output of a hook that sees secrets dropped");
                }
                Some(text) => {
                    tracing::info!(target: "keyport::connector", connector = id, stream, "{text}");
                }
                None => {}
            }
        }
        match result {
            Err(_) => Err(CallError::Deadline(timeout)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                if store.data().limiter.exceeded {
                    return Err(CallError::MemoryLimit(limits.memory_bytes));
                }
                match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => Err(CallError::Deadline(timeout)),
                    Some(trap) => Err(CallError::Trap(format!("{trap} ({})", first_line(&e)))),
                    None => Err(CallError::Trap(flatten(&e))),
                }
            }
        }
    }

    /// A fresh store and instance, no call: the fixed cost under every call (benchmarks).
    #[doc(hidden)]
    pub async fn instantiate_only(&self) -> Result<(), CallError> {
        self.call(Arc::new(CallEnv::default()), Imports::Disabled, |_, _| {
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// `describe`: the manifest as the component returns it (unvalidated).
    pub async fn describe(&self) -> Result<Manifest, CallError> {
        self.call(Arc::new(CallEnv::default()), Imports::Disabled, |c, s| {
            Box::pin(async move {
                match c {
                    Instance::Current(c) => c.call_describe(s).await,
                    Instance::V0_1(c) => legacy::manifest(c.call_describe(s).await?),
                }
            })
        })
        .await
    }

    /// `lookup-account` for a connection: `env` carries its credential and base URL.
    pub async fn lookup_account(
        &self,
        env: CallEnv,
        ctx: CallContext,
    ) -> Result<Result<Account, ConnectorError>, CallError> {
        let mut ctx = ctx;
        ctx.definition = self.definition.as_deref().unwrap_or_default().to_owned();
        self.call(Arc::new(env), Imports::Enabled, move |c, s| {
            Box::pin(async move {
                match c {
                    Instance::Current(c) => c.call_lookup_account(s, &ctx).await,
                    Instance::V0_1(c) => {
                        let ctx = legacy::convert(&ctx)?;
                        legacy::convert(c.call_lookup_account(s, &ctx).await?)
                    }
                }
            })
        })
        .await
    }

    /// `validate-config` on a JSON object.
    pub async fn validate_config(&self, config: &str) -> Result<Vec<FieldError>, CallError> {
        let config = config.to_owned();
        self.call(
            Arc::new(CallEnv::default()),
            Imports::Disabled,
            move |c, s| {
                Box::pin(async move {
                    match c {
                        Instance::Current(c) => c.call_validate_config(s, &config).await,
                        Instance::V0_1(c) => {
                            legacy::convert(c.call_validate_config(s, &config).await?)
                        }
                    }
                })
            },
        )
        .await
    }

    /// The `parse-token-response` hook: sealed (no `http`, no `log`, no output to the log).
    pub async fn parse_token_response(
        &self,
        status: u16,
        body: Vec<u8>,
    ) -> Result<Option<Result<TokenSet, ConnectorError>>, CallError> {
        self.call(
            Arc::new(CallEnv::default()),
            Imports::Sealed,
            move |c, s| {
                Box::pin(async move {
                    match c {
                        Instance::Current(c) => c.call_parse_token_response(s, status, &body).await,
                        Instance::V0_1(c) => {
                            legacy::convert(c.call_parse_token_response(s, status, &body).await?)
                        }
                    }
                })
            },
        )
        .await
    }

    /// The `classify-response` hook.
    pub async fn classify_response(
        &self,
        response: ResponseView,
    ) -> Result<Option<Classification>, CallError> {
        self.call(
            Arc::new(CallEnv::default()),
            Imports::Disabled,
            move |c, s| {
                Box::pin(async move {
                    match c {
                        Instance::Current(c) => c.call_classify_response(s, &response).await,
                        Instance::V0_1(c) => {
                            let response = legacy::response_view(response);
                            legacy::convert(c.call_classify_response(s, &response).await?)
                        }
                    }
                })
            },
        )
        .await
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    let s = flatten(e);
    s.lines().next().unwrap_or_default().to_string()
}
