//! Start-up to healthy: from spawning `keyport serve` to its first `200` on `/healthz`, with the
//! built-in connectors and the provider catalogue loaded.
//!
//! Run: `cargo bench -p keyport --bench startup`.
//! - `KEYPORT_BENCH_RUNS`: starts per row (default 15; the empty start runs a third as often).
//! - `KEYPORT_BENCH_N`: connections in the database of the warm start (default 1000).
//!
//! Rows (p50 and max of the runs, all of the same release binary, measured in the same run):
//! - the process floor: `keyport --version` (exec, dynamic loading, argument parsing);
//! - an empty start: a new data directory and an empty compile cache (migrations from scratch,
//!   every component compiled);
//! - a warm start, the one that matters: an existing database with N connections and a warm
//!   compile cache, as after a restart or a deploy.
//!
//! The host logs what each phase of its start took (`keyport started`, at info).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN, master_keys};

mod common;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

/// Milliseconds from spawn to healthy; the host is stopped afterwards.
fn start(data: &Path, cache: &Path) -> f64 {
    let port = free_port();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyport"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("KEYPORT_CACHE_DIR", cache)
        .env("KEYPORT_ADMIN_TOKEN", ADMIN)
        .env("KEYPORT_MASTER_KEYS", master_keys())
        .env("RUST_LOG", "warn")
        .env_remove("KEYPORT_DATABASE_URL")
        .env_remove("KEYPORT_PUBLIC_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if healthy(port) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "keyport serve exited during start-up"
        );
        assert!(t.elapsed() < Duration::from_secs(120), "no health in 120 s");
        std::thread::sleep(Duration::from_micros(500));
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    ms
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let runs: usize = std::env::var("KEYPORT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let n: usize = std::env::var("KEYPORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // The process floor.
    let floor: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_keyport"))
                .arg("--version")
                .output()
                .unwrap();
            assert!(out.status.success());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // Empty starts: nothing on disk.
    let empty: Vec<f64> = (0..runs.div_ceil(3).max(2))
        .map(|_| {
            let data = tempfile::tempdir().unwrap();
            let cache = tempfile::tempdir().unwrap();
            start(data.path(), cache.path())
        })
        .collect();
    // Warm starts: one database and compile cache, started again and again.
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    start(data.path(), cache.path());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::seed_oauth(data.path(), "slack", n, "bench-start-"));
    let warm: Vec<f64> = (0..runs)
        .map(|_| start(data.path(), cache.path()))
        .collect();
    let (floor, floor_max) = summary(floor);
    let (empty, empty_max) = summary(empty);
    let (warm, warm_max) = summary(warm);
    println!("| start | p50 (ms) | max (ms) | vs empty start |");
    println!("|---|---|---|---|");
    println!(
        "| process floor: `keyport --version` | {floor:.1} | {floor_max:.1} | {:.2}× |",
        floor / empty
    );
    println!(
        "| empty start: new data directory, empty compile cache | {empty:.1} | {empty_max:.1} | 1.00× |"
    );
    println!(
        "| **warm start**: {n} connections, warm compile cache | **{warm:.1}** | {warm_max:.1} | {:.2}× |",
        warm / empty
    );
}
