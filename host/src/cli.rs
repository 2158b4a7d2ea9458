//! The `keyport` command line: `serve` (the default), `migrate`, `keys rotate` and
//! `connector new | check | dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::connections::{Service, ServiceConfig};
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig, manifest_json};
use crate::store::Store;
use crate::vault::KeyRing;

/// keyport: owns your platform's connections to third-party accounts.
#[derive(Debug, Parser)]
#[command(name = "keyport", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the service (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Work with connector components.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Apply database migrations and exit.
    Migrate(StorageArgs),
    /// Manage master keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the OpenAPI 3.1 document of `/api/v1` (what `GET /api/v1/openapi.json` serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored secret under the active master key (resumable).
    Rotate(StorageArgs),
}

/// Where data lives: shared by `serve`, `migrate` and `keys`.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Directory for the embedded database, the development key file and the compiled-connector cache.
    #[arg(long, env = "KEYPORT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite:PATH` or `postgres://user@host/db`. Default: SQLite in the data directory.
    #[arg(long, env = "KEYPORT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Master keys as `kid:base64key[,kid:base64key…]` (32-byte keys). Overrides the key file.
    #[arg(long, env = "KEYPORT_MASTER_KEYS", hide_env_values = true)]
    pub master_keys: Option<String>,
    /// The master key id used for new secrets (default: the first in KEYPORT_MASTER_KEYS).
    #[arg(long, env = "KEYPORT_MASTER_KEY_ACTIVE")]
    pub master_key_active: Option<String>,
    /// Key file (JSON `{"active": "kid", "keys": {"kid": "base64"}}`). Default: master-keys.json in the data directory.
    #[arg(long, env = "KEYPORT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

impl StorageArgs {
    fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.data_dir.join("keyport.db").display()))
    }

    fn embedded(&self) -> bool {
        self.database_url.is_none()
    }
}

#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Validate a connector component against the contract and print its manifest as JSON; then
    /// run `validate-config` on the schema's defaults and, with --try-lookup, the account lookup.
    Check {
        /// The `.wasm` component (built for wasm32-wasip2).
        file: PathBuf,
        /// Try `lookup-account` with API calls sent to this base URL (a mock, or the provider's
        /// API) instead of the manifest's.
        #[arg(long, value_name = "URL", requires = "credential")]
        try_lookup: Option<String>,
        /// The access token or API key the lookup sends (never printed).
        #[arg(long, env = "KEYPORT_TRY_CREDENTIAL", hide_env_values = true)]
        credential: Option<String>,
        /// Connection settings (JSON) over the schema's defaults.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
    },
    /// Write a new connector crate (SDK, scopes, API base URL, egress hosts, a config field,
    /// the account lookup, the wasm32-wasip2 build settings and a README).
    New {
        /// The connector id, also the crate's name (e.g. acme-crm).
        name: String,
        /// An OAuth 2 connector (the default).
        #[arg(long, conflicts_with = "api_key")]
        oauth2: bool,
        /// An API-key connector.
        #[arg(long)]
        api_key: bool,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A local keyport-sdk to depend on (default: the SDK of this keyport checkout, if any).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Rebuild a connector crate when it changes and upload it to a running host.
    Dev {
        /// The connector crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The running host.
        #[arg(long, env = "KEYPORT_HOST", default_value = "http://127.0.0.1:8080")]
        host: String,
        /// The host's admin token.
        #[arg(long, env = "KEYPORT_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Build and upload once, then exit (non-zero when either fails).
        #[arg(long)]
        once: bool,
    },
}

/// Options of `keyport serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KEYPORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The URL users reach keyport at (OAuth redirect URIs are built from it). Default: http://LISTEN.
    #[arg(long, env = "KEYPORT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where compiled connectors are cached (default: cache/components in the data directory).
    #[arg(long, env = "KEYPORT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A directory of connector components (`*.wasm`) to load at start, besides the built-in ones.
    #[arg(long, env = "KEYPORT_CONNECTORS_DIR")]
    pub connectors_dir: Option<PathBuf>,
    /// First retry delay (ms) after a transient refresh failure; doubles per failure.
    #[arg(long, env = "KEYPORT_REFRESH_BACKOFF_MS", default_value_t = 30_000)]
    pub refresh_backoff_ms: i64,
    /// Transient refresh failures in a row before a connection shows `error`.
    #[arg(long, env = "KEYPORT_REFRESH_FAILURE_THRESHOLD", default_value_t = 5)]
    pub refresh_failure_threshold: i64,
    /// How long a refresh lease lasts without renewal (ms); its holder renews it every third of
    /// this while it works, so a crashed holder's lease lapses within this time.
    #[arg(long, env = "KEYPORT_REFRESH_LEASE_MS", default_value_t = 6_000)]
    pub refresh_lease_ms: i64,
    /// How long a caller waits for a refresh in progress elsewhere before answering 503 with
    /// Retry-After (ms).
    #[arg(long, env = "KEYPORT_REFRESH_WAIT_MS", default_value_t = 8_000)]
    pub refresh_wait_ms: i64,
    /// Scheduled refreshes this process runs at once.
    #[arg(long, env = "KEYPORT_REFRESH_CONCURRENCY", default_value_t = 16)]
    pub refresh_concurrency: usize,
    /// Scheduled refreshes per second per connector in this process (0: unlimited).
    #[arg(long, env = "KEYPORT_REFRESH_RATE_LIMIT", default_value_t = 100)]
    pub refresh_rate_limit: u32,
    /// Timeout of one token-endpoint request (ms).
    #[arg(long, env = "KEYPORT_TOKEN_TIMEOUT_MS", default_value_t = 10_000)]
    pub token_timeout_ms: u64,
    /// How often API keys and tokens that never expire are checked with an account lookup.
    #[arg(long, env = "KEYPORT_PROBE_INTERVAL", default_value = "6h", value_parser = humantime::parse_duration)]
    pub probe_interval: std::time::Duration,
    /// Flag a connection as expiring soon when its refresh token expires within this window.
    #[arg(long, env = "KEYPORT_EXPIRING_SOON", default_value = "7days", value_parser = humantime::parse_duration)]
    pub expiring_soon: std::time::Duration,
    /// First retry delay (ms) of a failed webhook delivery; doubles per attempt up to an hour.
    #[arg(long, env = "KEYPORT_WEBHOOK_BACKOFF_MS", default_value_t = 5_000)]
    pub webhook_backoff_ms: i64,
    /// Attempts before a webhook delivery is given up (it stays in the delivery log as failed).
    #[arg(long, env = "KEYPORT_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: i64,
    /// How long audit events are kept.
    #[arg(long, env = "KEYPORT_AUDIT_RETENTION", default_value = "90days", value_parser = humantime::parse_duration)]
    pub audit_retention: std::time::Duration,
    /// Comma-separated origins that `return_to` may point at, besides the public URL.
    #[arg(long, env = "KEYPORT_RETURN_TO_ALLOWLIST", value_delimiter = ',')]
    pub return_to_allowlist: Vec<String>,
    /// Let connectors reach loopback addresses over plain HTTP. For local development and tests
    /// only: it weakens the egress policy.
    #[arg(long, env = "KEYPORT_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub allow_loopback: bool,
    /// Reverse proxies in front of keyport (addresses or CIDR ranges, comma-separated): only a
    /// request from one of them has its client taken from `X-Forwarded-For` (for the limits on
    /// failed sign-ins and tokens). Empty: the header is never believed.
    #[arg(long, env = "KEYPORT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Threads that serve HTTP, each with its own event loop (0: one per CPU core). A request,
    /// and the proxied call it makes, run on one thread from start to end.
    #[arg(long, env = "KEYPORT_SERVE_THREADS", default_value = "0")]
    pub serve_threads: usize,
    /// SMTP server for invitation mail: `smtp://host:port`, `smtp://host:587?tls=required` or
    /// `smtps://user:password@host:465`. Unset: the inviter is shown the link to pass on.
    #[arg(long, env = "KEYPORT_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of keyport's mail.
    #[arg(
        long,
        env = "KEYPORT_MAIL_FROM",
        default_value = "keyport <keyport@localhost>"
    )]
    pub mail_from: String,
}

/// A CIDR range, or one address as its own range.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a CIDR range such as 10.0.0.0/8"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            None => serve(ServeArgs::parse_from_env()).await,
            Some(Command::Serve(args)) => serve(*args).await,
            Some(Command::Connector(ConnectorCommand::Check {
                file,
                try_lookup,
                credential,
                config,
            })) => check(file, try_lookup, credential, config).await,
            Some(Command::Connector(ConnectorCommand::New {
                name,
                api_key,
                dir,
                sdk,
                ..
            })) => connector_new(name, api_key, dir, sdk),
            Some(Command::Connector(ConnectorCommand::Dev {
                path,
                host,
                token,
                once,
            })) => connector_dev(path, host, token, once).await,
            Some(Command::Migrate(storage)) => migrate(storage).await,
            Some(Command::Openapi) => {
                println!("{}", crate::api::document().to_pretty_json()?);
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Keys(KeysCommand::Rotate(storage))) => rotate(storage).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl ServeArgs {
    /// `serve`'s options from the environment and defaults (no command line given).
    fn parse_from_env() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["keyport"]).args
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Opens the database (creating the data directory for the embedded default) and migrates it.
async fn open_store(storage: &StorageArgs) -> anyhow::Result<Store> {
    if storage.embedded() {
        std::fs::create_dir_all(&storage.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}; pass --data-dir or set KEYPORT_DATA_DIR",
                storage.data_dir.display()
            )
        })?;
    }
    let url = storage.database_url();
    let store = Store::connect(&url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open the database: {e}; check --database-url / KEYPORT_DATABASE_URL"
        )
    })?;
    store.migrate().await?;
    Ok(store)
}

/// Loads the master keys: KEYPORT_MASTER_KEYS, else the key file; the embedded default creates a
/// development key file on first start.
fn load_keys(storage: &StorageArgs) -> anyhow::Result<KeyRing> {
    if let Some(spec) = &storage.master_keys {
        return Ok(KeyRing::parse(spec, storage.master_key_active.as_deref())?);
    }
    let path = storage
        .key_file
        .clone()
        .unwrap_or_else(|| storage.data_dir.join("master-keys.json"));
    if path.exists() {
        return Ok(KeyRing::read_file(&path)?);
    }
    if storage.key_file.is_none() && storage.embedded() {
        let ring = KeyRing::generate_file(&path)?;
        tracing::warn!(file = %path.display(), kid = ring.active(), "generated a DEVELOPMENT master key file");
        eprintln!(
            "\n  WARNING: keyport generated a development master key at {}.\n  Every stored secret is encrypted with it: back it up, or set KEYPORT_MASTER_KEYS for production.\n",
            path.display()
        );
        return Ok(ring);
    }
    anyhow::bail!(
        "no master keys: set KEYPORT_MASTER_KEYS=kid:<32 bytes base64> (e.g. `k1:$(openssl rand -base64 32)`) or KEYPORT_KEY_FILE"
    )
}

/// Refuses to run with stored secrets sealed under keys that are not loaded.
async fn check_keys(store: &Store, ring: &KeyRing) -> anyhow::Result<()> {
    let missing: Vec<String> = store
        .secret_key_ids()
        .await?
        .into_iter()
        .filter(|k| !ring.has(k))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "stored secrets are encrypted with master key(s) {} that are not loaded; add them to KEYPORT_MASTER_KEYS or the key file (keyport never starts with secrets it cannot decrypt)",
            missing
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// When each phase of `serve`'s start ended, since the start (logged once serving).
#[derive(Default)]
struct Phases {
    storage: std::time::Duration,
    admin_token: std::time::Duration,
    builtins: std::time::Duration,
    catalogue: std::time::Duration,
    loaded: std::time::Duration,
}

/// Starts the service and runs until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut phases = Phases::default();
    let storage = &args.storage;
    let store = open_store(storage).await?;
    let ring = Arc::new(load_keys(storage)?);
    check_keys(&store, &ring).await?;
    store.ensure_workspace("default", "Default").await?;
    phases.storage = started.elapsed();
    // The admin token's Argon2id check is the slowest step of a start: it runs beside loading
    // the connectors, and serving waits for it.
    let admin_token = tokio::spawn({
        let store = store.clone();
        let embedded = storage.embedded();
        async move { crate::auth::admin_token::set_up(&store, embedded).await }
    });

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(
            args.cache_dir
                .clone()
                .unwrap_or_else(|| storage.data_dir.join("cache").join("components")),
        ),
        allow_loopback: args.allow_loopback,
        ..Default::default()
    })?;
    let registry = Arc::new(Registry::new());
    registry
        .load_builtins(&runtime)
        .await
        .map_err(|(name, e)| anyhow::anyhow!("built-in connector {name} failed to load: {e}"))?;
    phases.builtins = started.elapsed();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another address with --listen or KEYPORT_LISTEN",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    url::Url::parse(&public_url)
        .map_err(|e| anyhow::anyhow!("KEYPORT_PUBLIC_URL {public_url:?} is not a URL: {e}"))?;
    let service = Arc::new(Service::new(
        store,
        ring,
        registry.clone(),
        service_config(&args, &public_url),
    )?);
    let _ = service.runtime.set(runtime.clone());
    for (id, why) in service.load_catalogue().await {
        tracing::error!(connector = %id, "catalogue entry not served: {why}");
    }
    phases.catalogue = started.elapsed();
    admin_token
        .await
        .map_err(|e| anyhow::anyhow!("setting up the admin token failed: {e}"))??;
    phases.admin_token = started.elapsed();
    let mut dir_state = crate::hotload::DirState::default();
    if let Some(dir) = &args.connectors_dir {
        if !dir.is_dir() {
            anyhow::bail!(
                "the connectors directory {} does not exist; create it or drop --connectors-dir",
                dir.display()
            );
        }
        service
            .scan_dir(dir, &mut dir_state, true)
            .await
            .map_err(|e| anyhow::anyhow!("cannot load the connectors directory: {e}"))?;
    }
    let mut uploads_seen = None;
    service
        .sync_uploads(&mut uploads_seen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the uploaded connectors: {e}"))?;
    let mut providers_seen = None;
    service
        .sync_custom_providers(&mut providers_seen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the imported providers: {e}"))?;
    phases.loaded = started.elapsed();
    let loops = spawn_loops(
        &service,
        args.connectors_dir.clone(),
        dir_state,
        uploads_seen,
        providers_seen,
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("keyport_refresh_duration_seconds".into()),
            &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .and_then(|b| b.install_recorder())
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let flush = service.clone();
    let mailer = match &args.smtp_url {
        Some(url) => Some(Arc::new(crate::mail::Mailer::new(url, &args.mail_from)?)),
        None => None,
    };
    let state = crate::web::AppState::new(
        registry.clone(),
        service,
        metrics,
        args.trusted_proxies.clone(),
        mailer,
    );
    let app = crate::web::app(crate::api::routes().merge(crate::ui::routes()), state);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    tracing::info!(
        storage_ms = ms(phases.storage),
        builtins_ms = ms(phases.builtins - phases.storage),
        catalogue_ms = ms(phases.catalogue - phases.builtins),
        admin_token_wait_ms = ms(phases.admin_token - phases.catalogue),
        uploads_and_providers_ms = ms(phases.loaded - phases.admin_token),
        routes_ms = ms(started.elapsed() - phases.loaded),
        total_ms = ms(started.elapsed()),
        "keyport started"
    );
    let threads = match args.serve_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    tracing::info!(%addr, connectors = registry.all().len(), pooling = runtime.pooling(), http_threads = threads, "keyport is serving");
    eprintln!(
        "\n  keyport is running. Open {public_url}/ in a browser and sign in with the admin token.\n"
    );
    let mut serving = ServingThreads::start(listener.into_std()?, app, threads)?;
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        e = serving.stopped() => Some(e),
    };
    serving.drain().await;
    for task in loops {
        task.abort();
    }
    if let Err(e) = flush.flush_usage().await {
        tracing::warn!(error = %e, "could not write proxy usage at shutdown");
    }
    serving.exit();
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The threads that serve HTTP. Each runs its own single-threaded event loop and accepts from
/// the one listening socket, so a request, the handler's tasks and the proxied call's upstream
/// connection all stay on one thread: no hand-offs between threads on the hot path (the
/// background loops run on the main runtime). New connections are spread evenly over the
/// threads ([`crate::web::balanced`]).
struct ServingThreads {
    /// Asks every thread to stop accepting and finish what it serves.
    drain: tokio::sync::watch::Sender<bool>,
    /// Each thread's serving ended (with its result).
    drained: Vec<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    /// Lets the threads end their event loops. Until then they keep driving the sockets and
    /// timers created on them (pooled database and HTTP connections), which the final flush
    /// may still use.
    exit: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ServingThreads {
    fn start(
        listener: std::net::TcpListener,
        app: axum::Router,
        threads: usize,
    ) -> anyhow::Result<Self> {
        let (drain, drain_rx) = tokio::sync::watch::channel(false);
        let (exit, exit_rx) = tokio::sync::watch::channel(false);
        let mut out = ServingThreads {
            drain,
            drained: Vec::new(),
            exit,
            threads: Vec::new(),
        };
        let (shared, inboxes) = crate::web::balanced::Threads::new(threads);
        for (i, inbox) in inboxes.into_iter().enumerate() {
            let listener = listener.try_clone()?;
            let shared = shared.clone();
            let app = app.clone();
            let (mut drain_rx, mut exit_rx) = (drain_rx.clone(), exit_rx.clone());
            let (done, drained) = tokio::sync::oneshot::channel();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("keyport-http-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        tokio::spawn(standing_timer());
                        let served = async {
                            // Connections are spread evenly over the threads, and answers go
                            // out as soon as they are written (TCP_NODELAY: no Nagle delay on a
                            // streamed proxy body).
                            let listener =
                                crate::web::balanced::Balanced::new(listener, i, shared, inbox)?;
                            // (`tap_io` gives handlers the peer's address as `ConnectInfo`.)
                            let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                            axum::serve(
                                listener,
                                app.into_make_service_with_connect_info::<SocketAddr>(),
                            )
                            .with_graceful_shutdown(async move {
                                let _ = drain_rx.wait_for(|d| *d).await;
                            })
                            .await
                        };
                        let _ = done.send(served.await);
                        let _ = exit_rx.wait_for(|e| *e).await;
                    });
                })?;
            out.drained.push(drained);
            out.threads.push(thread);
        }
        Ok(out)
    }

    /// Resolves only if a thread stopped serving by itself (its listener failed).
    async fn stopped(&mut self) -> anyhow::Error {
        if self.drained.is_empty() {
            return std::future::pending().await;
        }
        let (result, i) = {
            let (result, i, _) = futures::future::select_all(self.drained.iter_mut()).await;
            (result, i)
        };
        self.drained.remove(i);
        match result {
            Ok(Err(e)) => anyhow::anyhow!("serving HTTP failed: {e}"),
            _ => anyhow::anyhow!("an HTTP serving thread stopped"),
        }
    }

    /// Stops accepting and waits until every thread finished the requests it was serving.
    async fn drain(&mut self) {
        let _ = self.drain.send(true);
        for done in self.drained.drain(..) {
            if let Ok(Err(e)) = done.await {
                tracing::error!(error = %e, "serving HTTP failed");
            }
        }
    }

    /// Ends the threads' event loops and waits for them.
    fn exit(self) {
        let _ = self.exit.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Keeps a timer due within a second on a serving thread's event loop, for as long as the loop
/// runs. tokio wakes the loop through its eventfd whenever a timer is registered that is due
/// before every timer the loop knows of, even from the loop's own thread, which is already awake.
/// With no timer pending between calls, every proxied call's timeout did that: a `write`, then a
/// needless turn of the loop to read it back, per request (BENCHMARKS.md, fifth pass). With
/// this one standing, timeouts of a second or more register without waking anything.
async fn standing_timer() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The lifecycle's settings from `keyport serve`'s arguments.
fn service_config(args: &ServeArgs, public_url: &str) -> ServiceConfig {
    ServiceConfig {
        public_url: public_url.to_string(),
        return_to_allowlist: args.return_to_allowlist.clone(),
        allow_loopback: args.allow_loopback,
        refresh_backoff_ms: args.refresh_backoff_ms.max(1),
        refresh_failure_threshold: args.refresh_failure_threshold.max(1),
        refresh_lease_ms: args.refresh_lease_ms,
        refresh_wait_ms: args.refresh_wait_ms.max(0),
        refresh_concurrency: args.refresh_concurrency.max(1),
        refresh_rate_per_connector: args.refresh_rate_limit,
        token_timeout_ms: args.token_timeout_ms.max(100),
        probe_interval_ms: (args.probe_interval.as_millis() as i64).max(1_000),
        expiring_soon_ms: args.expiring_soon.as_millis() as i64,
        webhook_backoff_ms: args.webhook_backoff_ms.max(1),
        webhook_max_attempts: args.webhook_max_attempts.max(1),
        audit_retention_ms: args.audit_retention.as_millis() as i64,
    }
}

/// The background loops of `keyport serve`: the connectors directory watcher, the refresh
/// scheduler, probes, webhook deliveries, and a once-a-second loop for syncs, usage flushes,
/// lookup retries, expiring-soon flags and retention.
fn spawn_loops(
    service: &Arc<Service>,
    connectors_dir: Option<PathBuf>,
    mut dir_state: crate::hotload::DirState,
    mut uploads_seen: Option<String>,
    mut providers_seen: Option<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let watcher = connectors_dir.map(|dir| {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                if let Err(e) = service.scan_dir(&dir, &mut dir_state, false).await {
                    tracing::warn!(error = %e, "watching the connectors directory failed");
                }
            }
        })
    });
    let scheduler = tokio::spawn(service.clone().run_refresh_scheduler());
    // Probes call providers (up to a connector's call timeout each): their own loop, so they
    // never hold up usage flushes, syncs and sweeps.
    let probes = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = service.run_due_probes().await {
                    tracing::warn!(error = %e, "credential probes failed");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    };
    let deliveries = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                match service.run_webhook_deliveries().await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook deliveries failed"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    let background = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = service.sync_uploads(&mut uploads_seen).await {
                    tracing::warn!(error = %e, "could not sync uploaded connectors");
                }
                if let Err(e) = service.sync_custom_providers(&mut providers_seen).await {
                    tracing::warn!(error = %e, "could not sync imported providers");
                }
                if let Err(e) = service.flush_usage().await {
                    tracing::warn!(error = %e, "could not write proxy usage");
                }
                if let Err(e) = service.run_due_lookups().await {
                    tracing::warn!(error = %e, "account lookup retries failed");
                }
                if let Err(e) = service.flag_expiring_refresh_tokens().await {
                    tracing::warn!(error = %e, "expiring-soon check failed");
                }
                if let Err(e) = service.remove_abandoned().await {
                    tracing::warn!(error = %e, "removing abandoned authorizations failed");
                }
                if let Err(e) = service.expire_requests().await {
                    tracing::warn!(error = %e, "closing expired connection requests failed");
                }
                let _ = service
                    .store
                    .purge_flows(crate::store::now_ms() - 24 * 3600 * 1000)
                    .await;
                let _ = service
                    .store
                    .purge_audit(
                        crate::store::now_ms() - service.config.audit_retention_ms,
                        5_000,
                    )
                    .await;
            }
        })
    };
    let mut out = vec![scheduler, probes, deliveries, background];
    out.extend(watcher);
    out
}

/// `keyport migrate`.
async fn migrate(storage: StorageArgs) -> anyhow::Result<ExitCode> {
    open_store(&storage).await?;
    eprintln!(
        "ok: the database at {} is up to date",
        redact_url(&storage.database_url())
    );
    Ok(ExitCode::SUCCESS)
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `keyport keys rotate`: re-encrypts every secret not under the active key, in batches that
/// commit one by one, so an interrupted run resumes where it stopped.
async fn rotate(storage: StorageArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&storage).await?;
    let ring = load_keys(&storage)?;
    check_keys(&store, &ring).await?;
    let active = ring.active().to_string();
    let total = store.count_secrets_not_under(&active).await?;
    let already = store.count_secrets().await? - total;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "re-encrypting {bar:40} {pos}/{len} secrets ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut done, mut raced) = (0u64, 0u64);
    loop {
        let batch = store.secrets_not_under(&active, 500).await?;
        if batch.is_empty() {
            break;
        }
        for row in &batch {
            let ctx = crate::vault::Context {
                workspace: &row.workspace_id,
                row: &row.owner_id,
                field: &row.field,
            };
            let plain = ring.open(&row.ciphertext, ctx)?;
            let sealed = ring.seal(&plain, ctx);
            if store.replace_secret(row, &active, &sealed).await? {
                done += 1;
            } else {
                raced += 1;
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "ok: re-encrypted {done} secret(s) under key {active:?}; {already} were already under it; {raced} changed concurrently and were re-read"
    );
    let left = store.count_secrets_not_under(&active).await?;
    if left > 0 {
        anyhow::bail!(
            "{left} secret(s) are still under other keys; run `keyport keys rotate` again"
        );
    }
    eprintln!("Keys other than {active:?} can now be removed from the configuration.");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// `keyport connector check FILE`: load the component as the host would, print its manifest,
/// run `validate-config` on the schema's defaults and, with `--try-lookup`, the account lookup.
async fn check(
    file: PathBuf,
    try_lookup: Option<String>,
    credential: Option<String>,
    config: Option<String>,
) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let config: serde_json::Value = match config.as_deref() {
        None => serde_json::json!({}),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| anyhow::anyhow!("--config is not JSON: {e}"))?
        }
    };
    let runtime = crate::kit::check_runtime()?;
    let connector = match runtime.load(&bytes).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: {} is not a valid keyport connector: {e}",
                file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&manifest_json(&connector))?
    );
    eprintln!(
        "ok: {} {} implements keyport:connector@{}",
        connector.manifest().id,
        connector.manifest().version,
        connector.contract()
    );
    let lookup = try_lookup.as_deref().zip(credential.as_deref());
    let (validated, tried) = crate::kit::exercise(&connector, &config, lookup).await?;
    let errors = validated["field_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        eprintln!("ok: validate-config accepts {}", validated["config"]);
    } else {
        eprintln!(
            "error: validate-config rejects {}: {}",
            validated["config"],
            serde_json::Value::Array(errors)
        );
        return Ok(ExitCode::FAILURE);
    }
    let Some(tried) = tried else {
        return Ok(ExitCode::SUCCESS);
    };
    for r in &tried.requests {
        eprintln!("lookup-account sent: {r}");
    }
    match tried.outcome {
        Ok(account) => {
            eprintln!("ok: lookup-account found {account}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("error: lookup-account: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `keyport connector new NAME [--oauth2 | --api-key]`.
fn connector_new(
    name: String,
    api_key: bool,
    dir: PathBuf,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let kind = if api_key {
        crate::kit::Kind::ApiKey
    } else {
        crate::kit::Kind::Oauth2
    };
    let root = crate::kit::scaffold(&name, kind, &dir, sdk.as_deref())?;
    println!("created {}", root.display());
    println!("next: cd {} && cargo build --release", root.display());
    println!("      (once: rustup target add wasm32-wasip2; see README.md for check and dev)");
    Ok(ExitCode::SUCCESS)
}

/// `keyport connector dev PATH --host URL`: build, upload, and again on every change.
async fn connector_dev(
    path: PathBuf,
    host: String,
    token: String,
    once: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = crate::kit::check_runtime()?;
    let mut seen = None;
    loop {
        let changed = crate::kit::sources_changed_at(&path);
        if seen != Some(changed) {
            seen = Some(changed);
            let ok = match dev_round(&runtime, &path, &host, &token).await {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    false
                }
            };
            if once {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            eprintln!("watching {} for changes (Ctrl-C stops)", path.display());
        }
        tokio::time::sleep(crate::kit::POLL).await;
    }
}

async fn dev_round(
    runtime: &Runtime,
    path: &std::path::Path,
    host: &str,
    token: &str,
) -> anyhow::Result<()> {
    let dir = path.to_path_buf();
    let wasm = tokio::task::spawn_blocking(move || crate::kit::build(&dir)).await??;
    let (egress, manifest) = crate::kit::describe_file(runtime, &wasm).await?;
    let (status, body) = crate::kit::upload(host, token, &wasm, &egress).await?;
    match status {
        200 | 201 => eprintln!(
            "ok: {} {} is active on {host} (egress granted: {})",
            manifest["id"].as_str().unwrap_or_default(),
            manifest["version"].as_str().unwrap_or_default(),
            egress.join(", ")
        ),
        202 => eprintln!("uploaded; the host waits for an admin to approve it: {body}"),
        _ => anyhow::bail!(
            "the host refused the upload (HTTP {status}): {}",
            body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string())
        ),
    }
    Ok(())
}
