//! Refresh throughput: N connections due at once, refreshed by one `keyport serve` against a
//! local token endpoint, on SQLite and on PostgreSQL. Reports sustained refreshes per second, the
//! host's peak memory (VmHWM), and the token endpoint's raw capacity measured in the same run
//! (the same requests sent straight to it at the same concurrency).
//!
//! Run: `cargo bench -p keyport --bench refresh_throughput` (or `just bench-refresh`).
//! - `KEYPORT_BENCH_N`: comma-separated connection counts (default `1000,10000`; the documented
//!   large run is `1000000`).
//! - `KEYPORT_BENCH_DBS`: `sqlite,postgres` (default both; PostgreSQL at
//!   postgres://postgres@127.0.0.1:5432, a scratch database created and dropped).
//! - `KEYPORT_BENCH_CONCURRENCY`: the host's refresh concurrency and the baseline's (default 64).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ADMIN, Host, master_keys, start_host};
use keyport::store::{Store, now_ms};

mod common;

/// The token endpoint: answers every refresh grant with a new token pair.
async fn token_endpoint() -> (String, Arc<AtomicU64>) {
    use axum::routing::post;
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/token",
        post(move |body: String| {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::Relaxed);
                let _ = body;
                axum::Json(serde_json::json!({
                    "access_token": format!("bench-at-{n}"),
                    "refresh_token": format!("bench-rt-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), count)
}

/// Raw capacity: refresh-shaped POSTs straight to the endpoint for `secs` at `concurrency`.
async fn raw_capacity(issuer: &str, concurrency: usize, secs: u64) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("{issuer}/token");
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let workers = (0..concurrency).map(|_| {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                let r = client
                    .post(&url)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", "bench-rt"),
                        ("client_id", "bench"),
                        ("client_secret", "bench-secret"),
                    ])
                    .send()
                    .await
                    .unwrap();
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let t = Instant::now();
    futures::future::join_all(workers).await;
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn start_refresh_host(data: &std::path::Path, db_url: &str, concurrency: usize) -> Host {
    start_host(
        data,
        &[keyport_test_artifacts::OIDC_TEST],
        &[
            ("KEYPORT_DATABASE_URL", db_url.to_string()),
            ("KEYPORT_REFRESH_RATE_LIMIT", "0".into()),
            ("KEYPORT_REFRESH_CONCURRENCY", concurrency.to_string()),
            ("KEYPORT_DB_MAX_CONNECTIONS", "32".into()),
        ],
    )
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Run {
    refreshes_per_s: f64,
    peak_mib: f64,
}

async fn run(
    db: &str,
    db_url: &str,
    n: usize,
    issuer: &str,
    concurrency: usize,
    served: &AtomicU64,
) -> Run {
    let served_before = served.load(Ordering::Relaxed);
    let data = tempfile::tempdir().unwrap();
    let store = Store::connect(db_url).await.unwrap();
    store.migrate().await.unwrap();
    store.ensure_workspace("default", "Default").await.unwrap();
    // Configure the provider app through the API of a first host, then stop it.
    {
        let host = start_refresh_host(data.path(), db_url, concurrency);
        let r = reqwest::Client::new()
            .put(format!("{}/api/v1/provider-apps/oidc-test", host.url))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "client_id": "bench", "client_secret": "bench-secret",
                "endpoint_overrides": {"https://oidc.keyport.test": issuer}
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
    let now = now_ms();
    let seeding = Instant::now();
    keyport::seed::oauth_connections(
        &store,
        &ring,
        &keyport::seed::Spec {
            workspace: "default",
            connector: "oidc-test",
            start: 0,
            count: n,
            prefix: "bench-",
            expires_at: now + 60_000,
            next_refresh_at: now,
            tokens: &|i| (format!("bench-at-seed-{i}"), format!("bench-rt-seed-{i}")),
        },
        |done| {
            if done % 100_000 == 0 {
                eprintln!("  {db}: seeded {done}/{n}");
            }
        },
    )
    .await
    .unwrap();
    eprintln!("  {db}: seeded {n} in {:.1?}", seeding.elapsed());
    let since = now_ms();
    let t = Instant::now();
    let host = start_refresh_host(data.path(), db_url, concurrency);
    // Poll whether anything is still due (the first entry of the due-time index), not how many
    // are (a count that reads every due row and competes with the host for the same two cores).
    let poll = if n >= 100_000 { 1_000 } else { 200 };
    let mut reported = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(poll)).await;
        if !keyport::seed::any_still_due(&store, "oidc-test")
            .await
            .unwrap()
        {
            break;
        }
        if reported.elapsed() >= Duration::from_secs(60) {
            reported = Instant::now();
            eprintln!(
                "  {db}: {:.0?}, {} token requests so far",
                t.elapsed(),
                served.load(Ordering::Relaxed) - served_before
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "{db}: connections of {n} still due after an hour"
        );
    }
    let elapsed = t.elapsed();
    let (done, _) = keyport::seed::refresh_progress(&store, "oidc-test", since)
        .await
        .unwrap();
    assert_eq!(done as usize, n, "{db}: every connection was refreshed");
    let peak = peak_rss_mib(host.child.id());
    drop(host);
    Run {
        refreshes_per_s: n as f64 / elapsed.as_secs_f64(),
        peak_mib: peak,
    }
}

fn main() {
    let ns: Vec<usize> = std::env::var("KEYPORT_BENCH_N")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("KEYPORT_BENCH_N: numbers"))
        .collect();
    let dbs = std::env::var("KEYPORT_BENCH_DBS").unwrap_or_else(|_| "sqlite,postgres".into());
    let concurrency: usize = std::env::var("KEYPORT_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (issuer, served) = token_endpoint().await;
        let raw = raw_capacity(&issuer, concurrency, 3).await;
        println!("token endpoint raw capacity (concurrency {concurrency}): {raw:.0} req/s");
        println!("| database | N | refreshes/s | vs raw endpoint | host peak RSS (MiB) |");
        println!("|---|---|---|---|---|");
        for db in dbs.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            for &n in &ns {
                let before = served.load(Ordering::Relaxed);
                let (url, _guard) = match db {
                    "sqlite" => {
                        let dir = tempfile::tempdir().unwrap();
                        (
                            format!("sqlite:{}", dir.path().join("bench.db").display()),
                            Guard::Dir(dir),
                        )
                    }
                    "postgres" => {
                        let (url, name) = common::scratch_pg().await;
                        (url, Guard::Pg(name))
                    }
                    other => panic!("KEYPORT_BENCH_DBS: unknown database {other:?}"),
                };
                let r = run(db, &url, n, &issuer, concurrency, &served).await;
                let served_now = served.load(Ordering::Relaxed) - before;
                assert!(
                    served_now as usize >= n,
                    "{db}: the endpoint saw {served_now} refreshes for {n} connections"
                );
                println!(
                    "| {db} | {n} | {:.0} | {:.2}× | {:.0} |",
                    r.refreshes_per_s,
                    r.refreshes_per_s / raw,
                    r.peak_mib
                );
                if let Guard::Pg(name) = _guard {
                    common::drop_scratch_pg(&name).await;
                }
            }
        }
    });
}

enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Pg(String),
}
