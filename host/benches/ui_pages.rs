//! Web UI page latency: the server-rendered pages against the JSON API answering the same data,
//! measured in the same run, with N connections in the workspace.
//!
//! Run: `cargo bench -p keyport --bench ui_pages` (or `just bench-ui`).
//! - `KEYPORT_BENCH_N`: comma-separated connection counts (default `100,1000`).
//! - `KEYPORT_BENCH_REQUESTS`: sequential requests per measurement (default 300).

use std::time::Instant;

use common::{ADMIN, start_host};

mod common;

/// p50 and p99 of `n` sequential GETs, in µs.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    n: usize,
) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let mut req = client.get(url);
        req = match cookie {
            Some(c) => req.header("cookie", c),
            None => req.bearer_auth(ADMIN),
        };
        let t = Instant::now();
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let _ = r.bytes().await.unwrap();
        if i >= 20 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let counts: Vec<usize> = std::env::var("KEYPORT_BENCH_N")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("KEYPORT_BENCH_N: numbers"))
        .collect();
    let requests: usize = std::env::var("KEYPORT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("| connections | request | p50 (µs) | p99 (µs) | p50 vs JSON list |");
        println!("|---|---|---|---|---|");
        for &n in &counts {
            let data = tempfile::tempdir().unwrap();
            let host = start_host(data.path(), &[keyport_test_artifacts::OIDC_TEST], &[]);
            let url = host.url.clone();
            common::seed_oidc_test(data.path(), n, "bench-ui-").await;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let r = client
                .post(format!("{url}/login"))
                .form(&[("token", ADMIN)])
                .send()
                .await
                .unwrap();
            let cookie = r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let json = measure(
                &client,
                &format!("{url}/api/v1/connections"),
                None,
                requests,
            )
            .await;
            let rows: Vec<(&str, String, Option<&str>)> = vec![
                ("GET /healthz (floor)", format!("{url}/healthz"), None),
                (
                    "GET /api/v1/connections (JSON, baseline)",
                    format!("{url}/api/v1/connections"),
                    None,
                ),
                (
                    "GET /connections (page)",
                    format!("{url}/connections"),
                    Some(cookie.as_str()),
                ),
                (
                    "GET / (Integrations page)",
                    format!("{url}/"),
                    Some(cookie.as_str()),
                ),
                (
                    "GET /connections/{id} (detail page)",
                    format!("{url}/connections/bench-ui-0"),
                    Some(cookie.as_str()),
                ),
            ];
            for (name, u, c) in rows {
                let (p50, p99) = if name.contains("baseline") {
                    json
                } else {
                    measure(&client, &u, c, requests).await
                };
                println!(
                    "| {n} | {name} | {p50:.0} | {p99:.0} | {:.2}× |",
                    p50 / json.0
                );
            }
            drop(host);
        }
    });
}
