//! What the benchmarks share: a release `keyport serve` child process with the test connectors.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The admin token of benchmark hosts.
pub const ADMIN: &str = "kp_admin_bench_0123456789abcdef";

/// A fixed master key (benchmark data only).
pub fn master_keys() -> String {
    use base64::Engine;
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    )
}

/// A running host; killed on drop.
pub struct Host {
    pub child: Child,
    pub url: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyport serve` on loopback with `data` as data directory, the given test connectors
/// (paths from `keyport_test_artifacts`) in its connectors directory, and extra environment.
/// Its errors are echoed; returns once it serves.
pub fn start_host(data: &Path, connectors: &[&str], env: &[(&str, String)]) -> Host {
    let dir = data.join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    for c in connectors {
        let name = Path::new(c).file_name().unwrap();
        std::fs::copy(c, dir.join(name)).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyport"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--connectors-dir")
        .arg(&dir)
        .env("KEYPORT_ALLOW_LOOPBACK", "1")
        .env("KEYPORT_ADMIN_TOKEN", ADMIN)
        .env("KEYPORT_MASTER_KEYS", master_keys())
        .env("RUST_LOG", "warn")
        .env_remove("KEYPORT_DATABASE_URL")
        .env_remove("KEYPORT_PUBLIC_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in err.lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("keyport is running. Open ") {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches('/');
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url.to_string());
                }
            } else if line.contains("ERROR") || line.contains("error:") {
                eprintln!("host: {line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("keyport serve did not start");
    Host { child, url }
}

/// Seeds `count` active `oidc-test` connections (ids `{prefix}0`, `{prefix}1`, …, tokens far from
/// expiry) straight into the SQLite database of a host whose data directory is `data`.
pub async fn seed_oidc_test(data: &Path, count: usize, prefix: &str) {
    seed_oauth(data, "oidc-test", count, prefix).await
}

/// [`seed_oidc_test`] for any OAuth connector.
pub async fn seed_oauth(data: &Path, connector: &str, count: usize, prefix: &str) {
    let store =
        keyport::store::Store::connect(&format!("sqlite:{}", data.join("keyport.db").display()))
            .await
            .unwrap();
    seed_into(&store, connector, count, prefix).await
}

/// [`seed_oauth`] into any database.
pub async fn seed_into(store: &keyport::store::Store, connector: &str, count: usize, prefix: &str) {
    let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
    let far = keyport::store::now_ms() + 365 * 24 * 3600 * 1000;
    keyport::seed::oauth_connections(
        store,
        &ring,
        &keyport::seed::Spec {
            workspace: "default",
            connector,
            start: 0,
            count,
            prefix,
            expires_at: far,
            next_refresh_at: far,
            tokens: &|_| ("bench-at".into(), "bench-rt".into()),
        },
        |_| {},
    )
    .await
    .unwrap();
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A scratch database on the PostgreSQL at 127.0.0.1:5432: its URL and its name (for
/// [`drop_scratch_pg`]).
pub async fn scratch_pg() -> (String, String) {
    use sqlx::Connection;
    let name = format!("keyport_bench_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(PG_ADMIN)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    (format!("postgres://postgres@127.0.0.1:5432/{name}"), name)
}

/// Drops a database made by [`scratch_pg`] (best effort).
pub async fn drop_scratch_pg(name: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(PG_ADMIN).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
