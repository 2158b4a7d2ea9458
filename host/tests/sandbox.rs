//! The connector sandbox (SECURITY.md "Connector sandbox"), proved with hostile components built
//! from `tests/guests/`. After every misbehaviour the same runtime keeps serving other calls.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keyport::runtime::{CallEnv, CallError, Connector, Limits, Runtime, RuntimeConfig, Secret};
use keyport_test_artifacts as guests;
use serde_json::{Value, json};

fn runtime(allow_loopback: bool) -> Runtime {
    Runtime::new(RuntimeConfig {
        allow_loopback,
        limits: Limits {
            call_timeout: Duration::from_millis(500),
            memory_bytes: 32 << 20,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

async fn hostile(rt: &Runtime) -> Connector {
    rt.load(&guests::read(guests::HOSTILE))
        .await
        .expect("the hostile guest loads")
}

fn env() -> CallEnv {
    CallEnv {
        credential: Some(Secret::new("hostile-secret-credential")),
        api_base_url: Some("https://api.example.com/".into()),
        ..Default::default()
    }
}

async fn run(
    c: &Connector,
    config: Value,
) -> Result<Result<keyport::runtime::Account, keyport::runtime::ConnectorError>, CallError> {
    c.lookup_account(env(), ctx(config)).await
}

/// The host still serves: the same connector answers a well-behaved call, and Slack loads.
async fn still_serving(rt: &Runtime, c: &Connector) {
    let ok = run(c, json!({"mode": "fine"}))
        .await
        .expect("later calls still run")
        .expect("and succeed");
    assert_eq!(ok.display_name, "Hostile account");
    rt.load(builtin("slack"))
        .await
        .expect("other connectors still load");
}

#[tokio::test]
async fn infinite_loop_fails_its_call_within_the_deadline() {
    let rt = runtime(false);
    let c = hostile(&rt).await;
    let started = Instant::now();
    let err = run(&c, json!({"mode": "loop"}))
        .await
        .expect_err("a spinning guest is stopped");
    assert!(
        matches!(err, CallError::Deadline(d) if d == Duration::from_millis(500)),
        "{err:?}"
    );
    // Stopped at its deadline, not left running: generous bound for a loaded CI machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    still_serving(&rt, &c).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_yields_its_thread_to_other_tasks_until_its_deadline() {
    let rt = runtime(false);
    let c = hostile(&rt).await;
    // On this one thread: a task that needs to run once, 50 ms in, while the guest spins for
    // its 500 ms. It can run only if the guest gives the thread back.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = tokio::spawn({
        let ran = ran.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let err = run(&c, json!({"mode": "loop"}))
        .await
        .expect_err("a spinning guest is stopped");
    let ran_meanwhile = ran.load(std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(err, CallError::Deadline(_)), "{err:?}");
    assert!(
        ran_meanwhile,
        "the other task ran while the guest spun, not only after its deadline"
    );
    other.await.unwrap();
}

#[tokio::test]
async fn unbounded_allocation_fails_its_call() {
    let rt = runtime(false);
    let c = hostile(&rt).await;
    let err = run(&c, json!({"mode": "alloc"}))
        .await
        .expect_err("a hoarding guest is stopped");
    assert!(
        matches!(err, CallError::MemoryLimit(n) if n == 32 << 20),
        "{err:?}"
    );
    still_serving(&rt, &c).await;
}

#[tokio::test]
async fn panicking_guest_fails_only_its_own_call() {
    let rt = runtime(false);
    let c = hostile(&rt).await;
    let (a, b) = tokio::join!(
        run(&c, json!({"mode": "panic"})),
        run(&c, json!({"mode": "fine"}))
    );
    assert!(matches!(a, Err(CallError::Trap(_))), "{a:?}");
    assert_eq!(
        b.unwrap().unwrap().display_name,
        "Hostile account",
        "a concurrent call is unaffected"
    );
    still_serving(&rt, &c).await;
}

fn refused(
    result: Result<Result<keyport::runtime::Account, keyport::runtime::ConnectorError>, CallError>,
) -> String {
    let err = result
        .expect("the call itself runs")
        .expect_err("the request must be refused");
    assert!(
        err.message.starts_with("request refused by the host"),
        "{}",
        err.message
    );
    err.message
}

#[tokio::test]
async fn request_outside_the_allow_list_is_refused() {
    let rt = runtime(true);
    let c = hostile(&rt).await;
    let msg = refused(
        run(
            &c,
            json!({"mode": "fetch", "url": "https://evil.example.net/steal"}),
        )
        .await,
    );
    assert!(msg.contains("not in the connector's egress list"), "{msg}");
    let msg = refused(
        run(
            &c,
            json!({"mode": "fetch", "url": "https://api.example.com.evil.net/"}),
        )
        .await,
    );
    assert!(msg.contains("egress list"), "{msg}");
    still_serving(&rt, &c).await;
}

/// A loopback server that counts requests, so a refusal is proved by zero hits.
async fn counting_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "hello"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

#[tokio::test]
async fn name_resolving_to_loopback_is_refused_without_the_grant() {
    let (addr, hits) = counting_server().await;
    let rt = runtime(false);
    let c = hostile(&rt).await;
    // `localhost` is in the hostile manifest's egress list; the address check after DNS refuses it.
    let msg = refused(
        run(
            &c,
            json!({"mode": "fetch", "url": format!("https://localhost:{}/", addr.port())}),
        )
        .await,
    );
    assert!(msg.contains("loopback"), "{msg}");
    let msg = refused(
        run(
            &c,
            json!({"mode": "fetch", "url": format!("https://127.0.0.1:{}/", addr.port())}),
        )
        .await,
    );
    assert!(msg.contains("loopback"), "{msg}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    still_serving(&rt, &c).await;
}

#[tokio::test]
async fn loopback_grant_lets_a_declared_host_through() {
    let (addr, hits) = counting_server().await;
    let rt = runtime(true);
    let c = hostile(&rt).await;
    let account = run(
        &c,
        json!({"mode": "fetch", "url": format!("http://localhost:{}/x", addr.port())}),
    )
    .await
    .unwrap()
    .expect("granted loopback is reachable");
    assert_eq!(account.external_id, "200");
    assert_eq!(account.display_name, "hello");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn guest_authorization_and_cookie_headers_are_refused() {
    let rt = runtime(true);
    let c = hostile(&rt).await;
    let msg = refused(run(&c, json!({"mode": "auth-header"})).await);
    assert!(msg.contains("Authorization"), "{msg}");
    let msg = refused(run(&c, json!({"mode": "cookie-header"})).await);
    assert!(msg.contains("cookie"), "{msg}");
}

#[tokio::test]
async fn response_bodies_are_size_capped() {
    let app = axum::Router::new().fallback(|| async { "x".repeat(64 * 1024) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let rt = Runtime::new(RuntimeConfig {
        allow_loopback: true,
        limits: Limits {
            max_response_bytes: 16 * 1024,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let c = hostile(&rt).await;
    let err = run(
        &c,
        json!({"mode": "fetch", "url": format!("http://127.0.0.1:{}/", addr.port())}),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        err.message.contains("exceeded 16384 bytes"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn wasi_is_empty_and_the_credential_is_never_visible() {
    let rt = runtime(true);
    let c = hostile(&rt).await;
    let account = run(&c, json!({"mode": "probe"})).await.unwrap().unwrap();
    let report: Value = serde_json::from_str(&account.display_name).unwrap();
    assert_eq!(report["env"], json!([]), "no environment variables");
    assert!(
        report["args"].as_array().unwrap().is_empty(),
        "no arguments: {}",
        report["args"]
    );
    for key in ["read_root", "read_cwd", "read_passwd", "tcp_connect", "dns"] {
        assert!(
            report[key].as_str().unwrap().starts_with("Err"),
            "{key} must fail: {}",
            report[key]
        );
    }
    assert!(
        !account.display_name.contains("hostile-secret-credential"),
        "the guest saw the credential: {}",
        account.display_name
    );
}

#[tokio::test]
async fn guest_output_is_capped_and_does_not_fail_the_call() {
    let rt = runtime(false);
    let c = hostile(&rt).await;
    let account = run(&c, json!({"mode": "stdout", "bytes": 1_000_000}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.external_id, "printed");
}
