//! Proxy overhead: requests per second and p50/p99 latency through `keyport serve`'s proxy to a
//! local upstream, next to the same upstream called directly and through nginx `proxy_pass`
//! (Debian's package), all measured in the same run, at concurrency 1 and 64.
//!
//! Run: `cargo bench -p keyport --bench proxy_overhead` (or `just bench-proxy`).
//! - `KEYPORT_BENCH_SECS`: seconds per target and concurrency (default 5).
//! - `KEYPORT_BENCH_ROUNDS`: slices those seconds are measured in (default 5). The targets take
//!   turns, one slice each per round, in an order that rotates from round to round, so a slow
//!   spell of the machine falls on all of them alike rather than on whichever ran then.
//! - `KEYPORT_BENCH_CONCURRENCY`: comma-separated levels (default `1,64`).
//! - `KEYPORT_BENCH_ONLY`: measure only the keyport targets whose name contains this text (the
//!   direct and nginx rows stay), e.g. `API key` while profiling one of them.
//!
//! Each row sums its target's slices; the last column gives, besides the ratio of the sums, the
//! lowest and highest ratio of single rounds. The CPU column is the proxy's own CPU time (user and
//! system, all threads; for nginx its master and workers) over its slices, per request served:
//! the work a request costs the proxy, which the shared cores' contention moves far less than
//! throughput.
//!
//! nginx must be installed (`apt-get install nginx-light`); without it that column is skipped
//! with a message.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ADMIN, Host, start_host};

mod common;

async fn upstream() -> String {
    use axum::routing::get;
    let answer = || async {
        (
            [("content-type", "application/json")],
            r#"{"ok":true,"id":"u1","name":"Bench","items":[1,2,3],"note":"a small JSON answer"}"#,
        )
    };
    let app = axum::Router::new()
        .route("/api/{*rest}", get(answer))
        .route("/v1/{*rest}", get(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (a SIGKILLed master leaves them
        // running); SIGKILL only if it has not exited within a second.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..20 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_keyport(data: &std::path::Path) -> (Host, String) {
    let host = start_host(
        data,
        &[
            keyport_test_artifacts::OIDC_TEST,
            keyport_test_artifacts::APIKEY_TEST,
        ],
        &[],
    );
    let url = host.url.clone();
    (host, url)
}

fn start_nginx(dir: &std::path::Path, upstream: &str) -> Option<(Proc, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(nginx) = nginx else {
        eprintln!("nginx is not installed (apt-get install nginx-light): skipping its column");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let up = upstream.trim_start_matches("http://");
    let d = dir.display();
    let conf = format!(
        "worker_processes auto; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  upstream u {{ server {up}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}
  }}
}}
"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let child = Proc(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, url));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    panic!("nginx did not start; see {d}/error.log");
}

struct Stats {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU µs per request, for targets whose process is known.
    cpu_us: Option<f64>,
}

/// CPU time (user + system, all threads) of `pid` and its child processes, from `/proc`.
fn cpu_of(pid: u32) -> Duration {
    let ticks = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th
        // of the whole line.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let pid = pid.to_string();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let total: u64 = ticks(&pid) + children.split_whitespace().map(ticks).sum::<u64>();
    // Linux reports these in USER_HZ, 100 per second on every architecture keyport builds for.
    Duration::from_millis(total * 10)
}

/// One target of a concurrency level: its clients (kept from slice to slice, so their
/// connections stay open), its latencies and its requests per round.
struct Target {
    name: &'static str,
    url: Arc<String>,
    client: reqwest::Client,
    samples: Vec<Duration>,
    elapsed: Duration,
    per_round: Vec<f64>,
    /// The proxy's process, whose CPU time is counted over the slices.
    pid: Option<u32>,
    cpu: Duration,
}

impl Target {
    async fn new(name: &'static str, url: String, pid: Option<u32>, concurrency: usize) -> Target {
        let auth = name.starts_with("keyport");
        // keyport's targets take the admin token on every request.
        let mut headers = reqwest::header::HeaderMap::new();
        if auth {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {ADMIN}").parse().unwrap(),
            );
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .default_headers(headers)
            .build()
            .unwrap();
        // Warm up connections and caches.
        for _ in 0..200 {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}: {}", resp.text().await.unwrap());
            resp.bytes().await.unwrap();
        }
        Target {
            name,
            url: Arc::new(url),
            client,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
            per_round: Vec::new(),
            pid,
            cpu: Duration::ZERO,
        }
    }

    /// One slice: `concurrency` callers for `slice`.
    async fn slice(&mut self, concurrency: usize, slice: Duration) {
        let cpu_before = self.pid.map(cpu_of);
        let started = Instant::now();
        let until = started + slice;
        let workers = (0..concurrency).map(|_| {
            let (client, url) = (self.client.clone(), self.url.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let resp = client.get(url.as_str()).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                    samples.push(t.elapsed());
                }
                samples
            })
        });
        let mut n = 0;
        for s in futures::future::join_all(workers).await {
            let s = s.unwrap();
            n += s.len();
            self.samples.extend(s);
        }
        let took = started.elapsed();
        if let (Some(pid), Some(before)) = (self.pid, cpu_before) {
            self.cpu += cpu_of(pid).saturating_sub(before);
        }
        self.elapsed += took;
        self.per_round.push(n as f64 / took.as_secs_f64());
    }

    fn stats(&mut self) -> Stats {
        self.samples.sort();
        let all = &self.samples;
        let at = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
        Stats {
            rps: all.len() as f64 / self.elapsed.as_secs_f64(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            cpu_us: self
                .pid
                .map(|_| self.cpu.as_secs_f64() * 1e6 / all.len() as f64),
        }
    }
}

fn main() {
    let secs: u64 = std::env::var("KEYPORT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("KEYPORT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(5);
    let levels: Vec<usize> = std::env::var("KEYPORT_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,64".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("KEYPORT_BENCH_CONCURRENCY: numbers")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let up = upstream().await;
        let data = tempfile::tempdir().unwrap();
        let (kp, kp_url) = start_keyport(data.path());
        let kp_pid = Some(kp.child.id());
        let r = reqwest::Client::new()
            .put(format!("{kp_url}/api/v1/provider-apps/oidc-test"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "client_id": "bench", "client_secret": "bench-secret",
                "endpoint_overrides": {"https://oidc.keyport.test": up}
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let client = reqwest::Client::new();
        let r = client
            .put(format!("{kp_url}/api/v1/provider-apps/apikey-test"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"endpoint_overrides": {"https://api.keytest.example": up}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let r: serde_json::Value = client
            .post(format!("{kp_url}/api/v1/connections"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"connector": "apikey-test", "api_key": "bench-key"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key_conn = r["id"].as_str().expect("an API-key connection").to_string();
        common::seed_oidc_test(data.path(), 1, "bench-proxy-").await;
        // Slack, built as the built-in connectors are (opt-level "s", LTO), classifies every
        // 200 JSON answer (`{"ok": …}`) in its component.
        let r = client
            .put(format!("{kp_url}/api/v1/provider-apps/slack"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({
                "client_id": "bench", "client_secret": "bench-secret",
                "endpoint_overrides": {"https://slack.com": up}
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        common::seed_oauth(data.path(), "slack", 1, "bench-slack-").await;
        let nginx_dir = tempfile::tempdir().unwrap();
        let nginx = start_nginx(nginx_dir.path(), &up);
        let path = "api/v1/items?limit=3";
        println!("| concurrency | target | requests/s | p50 (µs) | p99 (µs) | added p50 vs direct (µs) | proxy CPU per request (µs) | throughput vs nginx |");
        println!("|---|---|---|---|---|---|---|---|");
        for &c in &levels {
            let mut targets = vec![Target::new("direct", format!("{up}/{path}"), None, c).await];
            let only = std::env::var("KEYPORT_BENCH_ONLY").unwrap_or_default();
            for (name, proxied) in [
                (
                    "keyport proxy, OAuth, answer classified by the test guest (opt-level 1)",
                    format!("bench-proxy-0/proxy/{path}"),
                ),
                (
                    "keyport proxy, Slack (built-in), answer classified",
                    "bench-slack-0/proxy/users.list?limit=3".to_string(),
                ),
                (
                    "keyport proxy, API key, no classification",
                    format!("{key_conn}/proxy/items?limit=3"),
                ),
            ] {
                if name.contains(&only) {
                    let url = format!("{kp_url}/api/v1/connections/{proxied}");
                    targets.push(Target::new(name, url, kp_pid, c).await);
                }
            }
            if let Some((proc, n)) = &nginx {
                let pid = Some(proc.0.id());
                targets.insert(
                    1,
                    Target::new("nginx proxy_pass", format!("{n}/{path}"), pid, c).await,
                );
            }
            let slice = Duration::from_secs_f64(secs as f64 / rounds as f64);
            for round in 0..rounds {
                let k = targets.len();
                for i in 0..k {
                    targets[(i + round) % k].slice(c, slice).await;
                }
            }
            let stats: Vec<Stats> = targets.iter_mut().map(Target::stats).collect();
            let direct = &stats[0];
            let nginx_at = targets.iter().position(|t| t.name == "nginx proxy_pass");
            for (t, s) in targets.iter().zip(&stats) {
                let vs_nginx = match nginx_at {
                    Some(n) => {
                        let ratios: Vec<f64> = t
                            .per_round
                            .iter()
                            .zip(&targets[n].per_round)
                            .map(|(a, b)| a / b)
                            .collect();
                        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = ratios.iter().copied().fold(0.0, f64::max);
                        format!(
                            "{:.2}× (rounds {lo:.2}–{hi:.2})",
                            s.rps / stats[n].rps
                        )
                    }
                    None => "–".into(),
                };
                let cpu = s.cpu_us.map_or("–".into(), |us| format!("{us:.0}"));
                println!(
                    "| {c} | {} | {:.0} | {:.0} | {:.0} | {:+.0} | {cpu} | {vs_nginx} |",
                    t.name,
                    s.rps,
                    s.p50_us,
                    s.p99_us,
                    s.p50_us - direct.p50_us,
                );
            }
        }
    });
}
