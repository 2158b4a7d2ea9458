//! `GET /api/v1/connections?limit=500`: what a page of connections costs per connection, on SQLite
//! and PostgreSQL, and where the time goes.
//!
//! Run: `cargo bench -p keyport --bench listing`.
//! - `KEYPORT_BENCH_N`: connections in the workspace (default 1000; the page is 500 of them).
//! - `KEYPORT_BENCH_DBS`: `sqlite,postgres` (default both; PostgreSQL at 127.0.0.1:5432, a scratch
//!   database created and dropped).
//! - `KEYPORT_BENCH_REQUESTS`: requests per measurement (default 200).
//!
//! Rows, each the p50 of the requests (or calls) measured in the same run:
//! - `GET /healthz`: one HTTP round trip, the floor;
//! - the API answer for a page of 500;
//! - in this process, through the same store code: the query alone (database, driver, rows);
//! - in this process: the rows turned into the API's JSON (views and serialisation).
//!
//! Per connection = (API p50 − healthz p50) / 500.

use std::time::Instant;

use common::{ADMIN, start_host};
use keyport::store::{ConnectionFilter, ConnectionRow, Store};

mod common;

/// The host's allocator, so that the in-process rows measure what the host pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAGE: i64 = 500;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The p50 in µs of `n` calls of `once`, after 10 not counted.
async fn p50_of(n: usize, mut once: impl AsyncFnMut()) -> f64 {
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        once().await;
        if i >= 10 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    p50(times)
}

async fn http_p50(client: &reqwest::Client, url: &str, n: usize) -> f64 {
    p50_of(n, async || {
        let r = client.get(url).bearer_auth(ADMIN).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let _ = r.bytes().await.unwrap();
    })
    .await
}

async fn run(db: &str, data: &std::path::Path, url: &str, n: usize, requests: usize) {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    store.ensure_workspace("default", "Default").await.unwrap();
    common::seed_into(&store, "oidc-test", n, "bench-list-").await;
    let env = if db == "postgres" {
        vec![("KEYPORT_DATABASE_URL", url.to_string())]
    } else {
        vec![]
    };
    let host = start_host(
        data,
        &[keyport_test_artifacts::OIDC_TEST],
        &env.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>(),
    );
    let client = reqwest::Client::new();
    let floor = http_p50(&client, &format!("{}/healthz", host.url), requests).await;
    let api = http_p50(
        &client,
        &format!("{}/api/v1/connections?limit={PAGE}", host.url),
        requests,
    )
    .await;
    // In this process, on the host's database.
    let filter = ConnectionFilter::default();
    let mut query = Vec::new();
    let mut views = Vec::new();
    for i in 0..requests + 10 {
        let t = Instant::now();
        let rows = store
            .connections("default", &filter, None, PAGE + 1)
            .await
            .unwrap();
        let q = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(rows.len() as i64, PAGE + 1);
        let t = Instant::now();
        let page: Vec<_> = rows[..PAGE as usize]
            .iter()
            .map(keyport::connections::connection_view)
            .collect();
        let body = serde_json::to_vec(&page).unwrap();
        let v = t.elapsed().as_secs_f64() * 1e6;
        assert!(body.len() > 1000);
        if i >= 10 {
            query.push(q);
            views.push(v);
        }
    }
    let (query, views) = (p50(query), p50(views));
    // The same rows through sqlx's typed driver for the backend, for comparison with `Any`.
    let sql =
        "SELECT * FROM connections WHERE workspace_id = $1 ORDER BY created_at DESC, id LIMIT $2";
    macro_rules! plain_p50 {
        ($pool:expr) => {{
            let pool = $pool;
            p50_of(requests, async || {
                let rows: Vec<ConnectionRow> = sqlx::query_as(sql)
                    .bind("default")
                    .bind(PAGE)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                assert_eq!(rows.len() as i64, PAGE);
            })
            .await
        }};
    }
    let typed = if db == "postgres" {
        plain_p50!(&sqlx::PgPool::connect(url).await.unwrap())
    } else {
        plain_p50!(&sqlx::SqlitePool::connect(url).await.unwrap())
    };
    let any = plain_p50!(store.pool());
    // Other shapes of the same page through the `Any` driver, each read into rows.
    let columns = keyport::store::ROW_COLUMNS;
    let order = "FROM connections WHERE workspace_id = $1 ORDER BY created_at DESC, id LIMIT $2";
    let variants: Vec<(&str, String, bool)> = if db == "postgres" {
        vec![
            (
                "one `json_build_array` per row",
                format!("SELECT json_build_array({columns})::text {order}"),
                false,
            ),
            (
                "the page as one text (`string_agg` of `json_build_array`)",
                format!(
                    "SELECT '[' || string_agg(r, ',' ORDER BY created_at DESC, id) || ']' FROM \
                     (SELECT json_build_array({columns})::text AS r, created_at, id {order}) p"
                ),
                true,
            ),
        ]
    } else {
        vec![
            (
                "one `json_array` per row",
                format!("SELECT json_array({columns}) {order}"),
                false,
            ),
            (
                "the page as one text (`json_group_array`, ordered)",
                format!(
                    "SELECT json_group_array(json_array({columns}) ORDER BY created_at DESC, id) \
                     FROM (SELECT * {order})"
                ),
                true,
            ),
            (
                "the page as one text (`group_concat` of `json_array`, unordered)",
                format!(
                    "SELECT '[' || group_concat(json_array({columns}), ',') || ']' \
                     FROM (SELECT * {order})"
                ),
                true,
            ),
        ]
    };
    for (what, sql, whole) in variants {
        let us = p50_of(requests, async || {
            let texts: Vec<String> = sqlx::query_scalar(&sql)
                .bind("default")
                .bind(PAGE)
                .fetch_all(store.pool())
                .await
                .unwrap();
            let rows: Vec<ConnectionRow> = if whole {
                serde_json::from_str(&texts[0]).unwrap()
            } else {
                texts
                    .iter()
                    .map(|t| serde_json::from_str(t).unwrap())
                    .collect()
            };
            assert_eq!(rows.len() as i64, PAGE);
        })
        .await;
        println!(
            "| {db} | {n} | diagnostic: {what} | {us:.0} | {:.2} |",
            us / PAGE as f64
        );
    }
    for (driver, us) in [("`Any` driver", any), ("typed driver", typed)] {
        println!(
            "| {db} | {n} | diagnostic: plain query, {driver} | {us:.0} | {:.2} |",
            us / PAGE as f64
        );
    }
    let per = (api - floor) / PAGE as f64;
    let row = |what: &str, us: f64| {
        println!(
            "| {db} | {n} | {what} | {us:.0} | {:.2} |",
            us / PAGE as f64
        );
    };
    row("`GET /healthz` (floor)", floor);
    row("`GET /api/v1/connections?limit=500`", api);
    row(
        "in process: the store's query (database, driver, rows)",
        query,
    );
    row("in process: views and JSON", views);
    println!("| {db} | {n} | **per connection returned** (API − floor) / 500 | | **{per:.2}** |");
    drop(host);
}

fn main() {
    let n: usize = std::env::var("KEYPORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    assert!(n as i64 > PAGE, "KEYPORT_BENCH_N: more than {PAGE}");
    let requests: usize = std::env::var("KEYPORT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dbs = std::env::var("KEYPORT_BENCH_DBS").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("| database | connections | measure | p50 (µs) | µs per connection of the page |");
        println!("|---|---|---|---|---|");
        for db in dbs.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match db {
                "sqlite" => {
                    // The host's own database file, seeded before it starts.
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite:{}", dir.path().join("keyport.db").display());
                    run(db, dir.path(), &url, n, requests).await;
                }
                "postgres" => {
                    let (url, name) = common::scratch_pg().await;
                    let dir = tempfile::tempdir().unwrap();
                    run(db, dir.path(), &url, n, requests).await;
                    common::drop_scratch_pg(&name).await;
                }
                other => panic!("KEYPORT_BENCH_DBS: unknown database {other:?}"),
            }
        }
    });
}
