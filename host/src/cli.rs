//! The `keyport` command line: `serve` (the default) and `connector check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig, manifest_json};

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
    Serve(ServeArgs),
    /// Work with connector components.
    #[command(subcommand)]
    Connector(ConnectorCommand),
}

#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Validate a connector component against the contract and print its manifest as JSON.
    Check {
        /// The `.wasm` component (built for wasm32-wasip2).
        file: PathBuf,
    },
}

/// Options of `keyport serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KEYPORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the embedded database, keys and the compiled-connector cache.
    #[arg(long, env = "KEYPORT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Let connectors reach loopback addresses over plain HTTP. For local development and tests
    /// only: it weakens the egress policy.
    #[arg(long, env = "KEYPORT_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub allow_loopback: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            listen: ([127, 0, 0, 1], 8080).into(),
            data_dir: "data".into(),
            allow_loopback: false,
        }
    }
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
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Connector(ConnectorCommand::Check { file })) => check(file).await,
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

/// Starts the service and runs until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the data directory {}: {e}; pass --data-dir or set KEYPORT_DATA_DIR",
            args.data_dir.display()
        )
    })?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(args.data_dir.join("cache").join("components")),
        allow_loopback: args.allow_loopback,
        ..Default::default()
    })?;
    let registry = Arc::new(Registry::new());
    registry
        .load_builtins(&runtime)
        .await
        .map_err(|(name, e)| anyhow::anyhow!("built-in connector {name} failed to load: {e}"))?;
    let app = crate::api::router(crate::api::AppState {
        registry: registry.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another address with --listen or KEYPORT_LISTEN",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, connectors = registry.all().len(), pooling = runtime.pooling(), "keyport is serving");
    eprintln!("\n  keyport is running. Open http://{addr}/ in a browser.\n");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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

/// `keyport connector check FILE`: load the component as the host would and print its manifest.
async fn check(file: PathBuf) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let runtime = Runtime::new(RuntimeConfig::default())?;
    match runtime.load(&bytes).await {
        Ok(connector) => {
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
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: {} is not a valid keyport connector: {e}",
                file.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
