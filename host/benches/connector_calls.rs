//! Connector call latency: `describe` and `lookup-account` on the built-in Slack component, each
//! including a fresh Store and instantiation, with two baselines from the same run:
//! instantiation alone, and the fake Slack's `auth.test` called directly over loopback.
//!
//! Run: `cargo bench -p keyport --bench connector_calls` (or `just bench`).
//! `KEYPORT_BENCH_ITERS` sets the measured iterations (default 20000).

use std::time::{Duration, Instant};

use keyport::runtime::{CallContext, CallEnv, Runtime, RuntimeConfig, Secret};

const TOKEN: &str = "xoxb-bench-token";

fn median_us(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

async fn measure<F, Fut>(iters: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..iters / 10 {
        f().await;
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    median_us(samples)
}

async fn fake_slack() -> std::net::SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/api/auth.test",
        post(|| async {
            axum::Json(serde_json::json!({
                "ok": true, "url": "https://t-rex-inc.slack.com/", "team": "T-Rex Inc", "user": "keyport",
                "team_id": "T0123ABCD", "user_id": "U0456EFGH", "is_enterprise_install": false
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a smoke pass then.
    let bench = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("KEYPORT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 20_000 } else { 10 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Runtime::new(RuntimeConfig {
            allow_loopback: true,
            ..Default::default()
        })
        .unwrap();
        let slack_bytes = keyport::builtin::BUILTIN
            .iter()
            .find(|(n, _)| *n == "slack")
            .unwrap()
            .1;
        let slack = runtime.load(slack_bytes).await.unwrap();
        let addr = fake_slack().await;
        let env = CallEnv {
            credential: Some(Secret::new(TOKEN)),
            api_base_url: Some("https://slack.com/api/".into()),
            endpoint_overrides: vec![("https://slack.com/".into(), format!("http://{addr}/"))],
            ..Default::default()
        };
        let ctx = CallContext {
            config: "{}".into(),
            metadata: "{}".into(),
            definition: String::new(),
        };

        let (inst, inst99) =
            measure(iters, || async { slack.instantiate_only().await.unwrap() }).await;
        let (desc, desc99) = measure(iters, || async {
            slack.describe().await.unwrap();
        })
        .await;
        if std::env::var("KEYPORT_BENCH_ONLY").as_deref() == Ok("describe") {
            println!("describe median {desc:.1} µs (p99 {desc99:.1}); instantiate only {inst:.1} µs (p99 {inst99:.1})");
            return;
        }
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/api/auth.test");
        let http_iters = iters / 4;
        let (direct, direct99) = measure(http_iters, || async {
            let r = client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
            r.bytes().await.unwrap();
        })
        .await;
        let (lookup, lookup99) = measure(http_iters, || async {
            slack
                .lookup_account(env.clone(), ctx.clone())
                .await
                .unwrap()
                .unwrap();
        })
        .await;

        println!(
            "connector_calls (pooling allocator: {}, {iters} iterations, {http_iters} for HTTP)",
            runtime.pooling()
        );
        println!("  {:<44} {:>9} {:>9}", "", "median µs", "p99 µs");
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            "baseline: fresh store + instantiate (no call)", inst, inst99
        );
        println!(
            "  {:<44} {:>9.1} {:>9.1}   ({:.2}x baseline)",
            "describe (store + instantiate + call)",
            desc,
            desc99,
            desc / inst
        );
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            "baseline: auth.test direct over loopback", direct, direct99
        );
        println!(
            "  {:<44} {:>9.1} {:>9.1}   ({:.2}x baseline)",
            "lookup-account (through the host's http)",
            lookup,
            lookup99,
            lookup / direct
        );
    });
}
