//! The refresh engine under load: three `keyport serve` replicas on one PostgreSQL database keep
//! 500 short-lived tokens fresh, each refreshed exactly once per cycle and before it expires; and
//! a replica killed with SIGKILL in the middle of a refresh storm loses no connection and leaves
//! no lease behind.
//!
//! The token endpoint here rotates refresh tokens strictly, like oidc-provider: each refresh
//! token works once, and presenting a used one is reuse (the grant dies). So "exactly once" is
//! checked at the server, where it matters.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::e2e::*;
use serde_json::json;
use sqlx::Row;

/// One grant at the rotating server.
#[derive(Debug, Default, Clone)]
struct Grant {
    /// Generation of the current refresh token (`rt-{i}-{gen}`).
    generation: u64,
    /// When the current access token expires.
    expires: Option<Instant>,
    /// Refreshes accepted, by the generation they presented.
    refreshed: Vec<u64>,
    /// Refreshes that arrived after the access token they replaced had expired.
    late: usize,
    /// A used refresh token was presented again: the grant is dead.
    reused: bool,
}

#[derive(Clone)]
struct Rotating {
    grants: Arc<Mutex<HashMap<u64, Grant>>>,
    /// Lifetime of issued access tokens (s).
    expires_in: u64,
    /// Delay before each answer.
    delay: Duration,
}

async fn token(State(s): State<Rotating>, Form(form): Form<HashMap<String, String>>) -> Response {
    tokio::time::sleep(s.delay).await;
    let bad = |what: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": what})),
        )
            .into_response()
    };
    let Some(rt) = form.get("refresh_token") else {
        return bad("only refresh grants here");
    };
    let mut parts = rt.trim_start_matches("fake-rt-").split('-');
    let (Some(i), Some(g)) = (
        parts.next().and_then(|p| p.parse::<u64>().ok()),
        parts.next().and_then(|p| p.parse::<u64>().ok()),
    ) else {
        return bad("unknown refresh token");
    };
    let mut grants = s.grants.lock().unwrap();
    let grant = grants.entry(i).or_default();
    if grant.reused || g != grant.generation {
        grant.reused = true;
        return bad("refresh token reused; grant revoked");
    }
    if grant.expires.is_some_and(|e| Instant::now() > e) {
        grant.late += 1;
    }
    grant.refreshed.push(g);
    grant.generation += 1;
    grant.expires = Some(Instant::now() + Duration::from_secs(s.expires_in));
    Json(json!({
        "access_token": format!("fake-at-{i}-{}", grant.generation),
        "refresh_token": format!("fake-rt-{i}-{}", grant.generation),
        "token_type": "Bearer",
        "expires_in": s.expires_in,
    }))
    .into_response()
}

async fn start_rotating(
    expires_in: u64,
    delay: Duration,
    n: u64,
    first_expiry: Instant,
) -> (String, Rotating) {
    let state = Rotating {
        grants: Arc::default(),
        expires_in,
        delay,
    };
    {
        let mut g = state.grants.lock().unwrap();
        for i in 0..n {
            g.insert(
                i,
                Grant {
                    expires: Some(first_expiry),
                    ..Default::default()
                },
            );
        }
    }
    let app = Router::new()
        .route("/token", post(token))
        .route(
            "/me",
            get(|| async { Json(json!({"sub": "load-user", "name": "Load User"})) }),
        )
        .with_state(state.clone());
    (common::serve_fake(app).await, state)
}

async fn seed(kp: &Keyport, n: usize, expires_at: i64, due: i64) {
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
    keyport::seed::oauth_connections(
        &store,
        &ring,
        &keyport::seed::Spec {
            workspace: "default",
            connector: "oidc-test",
            start: 0,
            count: n,
            prefix: "load-",
            expires_at,
            next_refresh_at: due,
            tokens: &|i| (format!("fake-at-{i}-0"), format!("fake-rt-{i}-0")),
        },
        |_| {},
    )
    .await
    .unwrap();
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn three_replicas_on_postgres_refresh_500_short_lived_tokens_exactly_once_per_cycle() {
    const N: usize = 500;
    const LIFETIME: u64 = 8;
    const CYCLES: u64 = 4;
    let settings = env(&[("KEYPORT_REFRESH_RATE_LIMIT", "0")]);
    let a = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        master_keys: Some(master_keys()),
        env: settings.clone(),
        ..Default::default()
    })
    .await;
    let now = keyport::store::now_ms();
    // The seeded tokens expire in LIFETIME seconds and come due at once: the first cycle starts
    // with all 500 due together, the hardest case.
    let (issuer, server) = start_rotating(
        LIFETIME,
        Duration::ZERO,
        N as u64,
        Instant::now() + Duration::from_secs(LIFETIME),
    )
    .await;
    a.point_oidc_test_at(&issuer).await;
    seed(&a, N, now + LIFETIME as i64 * 1000, now + 2_000).await;
    let replicas = [
        Keyport::start(KeyportOpts {
            master_keys: Some(master_keys()),
            database_url: Some(a.db_url()),
            env: settings.clone(),
            ..Default::default()
        })
        .await,
        Keyport::start(KeyportOpts {
            master_keys: Some(master_keys()),
            database_url: Some(a.db_url()),
            env: settings,
            ..Default::default()
        })
        .await,
    ];
    let started = Instant::now();
    loop {
        let least = {
            let g = server.grants.lock().unwrap();
            g.values()
                .map(|g| g.refreshed.len() as u64)
                .min()
                .unwrap_or(0)
        };
        if least >= CYCLES {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {least} cycles in 90 s; logs:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let grants = server.grants.lock().unwrap().clone();
    assert_eq!(grants.len(), N);
    eprintln!(
        "{} refreshes of {N} connections in {:.1?}",
        grants.values().map(|g| g.refreshed.len()).sum::<usize>(),
        started.elapsed()
    );
    for (i, g) in &grants {
        assert!(
            !g.reused,
            "connection {i}: a refresh token was presented twice"
        );
        let expected: Vec<u64> = (0..g.refreshed.len() as u64).collect();
        assert_eq!(
            g.refreshed, expected,
            "connection {i}: each generation refreshed exactly once, in order"
        );
        assert_eq!(g.late, 0, "connection {i} missed a deadline");
    }
    // Every connection is active, and the replicas left no lease behind.
    let store = keyport::store::Store::connect(&a.db_url()).await.unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*), SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END) FROM connections WHERE id LIKE 'load-%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), N as i64);
    assert_eq!(row.get::<i64, _>(1), N as i64);
    // The replicas shared the work: each refreshed a fair part of the connections (the audit row
    // of every refresh names the replica that made it).
    let rows = sqlx::query(
        "SELECT detail FROM audit_events WHERE action = 'token.refreshed' AND connection_id LIKE 'load-%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut by_replica: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &rows {
        let detail: serde_json::Value = serde_json::from_str(&r.get::<String, _>(0)).unwrap();
        *by_replica
            .entry(detail["replica"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let total: usize = by_replica.values().sum();
    assert_eq!(
        by_replica.len(),
        3,
        "three replicas refreshed: {by_replica:?}"
    );
    for (replica, n) in &by_replica {
        assert!(
            *n * 10 >= total,
            "replica {replica} refreshed {n} of {total}: less than a tenth ({by_replica:?})"
        );
    }
    drop(replicas);
}

#[tokio::test]
async fn a_replica_killed_during_a_refresh_storm_loses_no_connection_and_no_lease() {
    const N: usize = 300;
    let settings = env(&[
        ("KEYPORT_REFRESH_RATE_LIMIT", "0"),
        ("KEYPORT_REFRESH_LEASE_MS", "3000"),
        ("KEYPORT_TOKEN_TIMEOUT_MS", "1000"),
    ]);
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        env: settings.clone(),
        ..Default::default()
    })
    .await;
    // Each answer takes 150 ms, so a storm of 300 takes seconds and the kill lands mid-flight.
    let (issuer, server) = start_rotating(
        3600,
        Duration::from_millis(150),
        N as u64,
        Instant::now() + Duration::from_secs(3600),
    )
    .await;
    kp.point_oidc_test_at(&issuer).await;
    let now = keyport::store::now_ms();
    seed(&kp, N, now + 3_600_000, now).await;
    let refreshed = || {
        server
            .grants
            .lock()
            .unwrap()
            .values()
            .filter(|g| !g.refreshed.is_empty())
            .count()
    };
    let t = Instant::now();
    while refreshed() < 40 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the storm never started:\n{}",
            kp.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (data, pg) = kp.stop(); // SIGKILL, with refreshes in flight
    let at_kill = refreshed();
    assert!(
        at_kill < N,
        "the kill landed mid-storm ({at_kill} of {N} done)"
    );
    let kp = Keyport::start_in(
        data,
        pg,
        KeyportOpts {
            master_keys: Some(master_keys()),
            env: settings,
            ..Default::default()
        },
    );
    // Wait until nothing is due any more.
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    let t = Instant::now();
    loop {
        let due: i64 = sqlx::query(
            "SELECT COUNT(*) FROM connections WHERE id LIKE 'load-%' AND status IN ('active', 'error') AND next_refresh_at <= $1",
        )
        .bind(keyport::store::now_ms())
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
        if due == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{due} still due:\n{}",
            kp.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = sqlx::query(
        "SELECT id, status, lease_owner, lease_until FROM connections WHERE id LIKE 'load-%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), N, "no connection lost");
    let grants = server.grants.lock().unwrap().clone();
    let now = keyport::store::now_ms();
    let mut revoked = 0;
    for r in &rows {
        let id: String = r.get(0);
        let status: String = r.get(1);
        let lease_until: Option<i64> = r.get(3);
        assert!(
            lease_until.is_none_or(|u| u < now),
            "{id}: a lease is still held after the storm ({:?})",
            r.get::<Option<String>, _>(2)
        );
        let i: u64 = id.trim_start_matches("load-").parse().unwrap();
        let g = &grants[&i];
        match status.as_str() {
            "active" => {
                // A working token: the one the server issued last.
                let at = kp.read_secret(&id, "access_token").await.unwrap();
                assert_eq!(at, format!("fake-at-{i}-{}", g.generation), "{id}");
                assert!(!g.reused, "{id} is active but its grant is dead");
            }
            "revoked" => {
                // Only a refresh the kill cut off between the server's answer and the commit
                // can cost a grant, and then the server did see the old token again.
                assert!(g.reused, "{id} is revoked but its grant is alive");
                revoked += 1;
            }
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    eprintln!(
        "killed after {at_kill} of {N} refreshes; afterwards {} active, {revoked} revoked",
        N - revoked
    );
    assert!(
        revoked <= 16,
        "at most the refreshes in flight at the kill ({revoked})"
    );
}
