//! The refresh engine under load: three `keyport serve` replicas on one PostgreSQL database keep
//! 500 short-lived tokens fresh, each refreshed exactly once per cycle and before it expires; and
//! a process killed with SIGKILL in the middle of a refresh storm (alone on SQLite and restarted;
//! one of two replicas on PostgreSQL) costs exactly the grants whose new tokens the provider had
//! sent but the dead process never committed, at most one per refresh it was running, and leaves
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
    /// When the last one was answered.
    answered: Option<Instant>,
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
    grant.answered = Some(Instant::now());
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
    a.seed_oauth("load-", N, now + LIFETIME as i64 * 1000, now + 2_000)
        .await;
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

/// A refresh storm of `N` connections (every one due at once, each answer taking 150 ms) on
/// `db`, with `replicas` processes; one is killed with SIGKILL mid-storm (on SQLite it is the only
/// one, and it is restarted). Then, once nothing is due:
/// - every connection still exists, and no lease is held;
/// - every `active` one holds the token the provider issued last, on a live grant;
/// - every `revoked` one lost exactly one answer: the provider sent it new tokens before the kill
///   and then saw its old refresh token again (the dead process never committed them). On SQLite
///   that set is computed right after the kill and must match exactly;
/// - there are at most as many of those as the killed process ran refreshes at once (16).
async fn killed_during_a_refresh_storm(db: Db, replicas: usize) {
    const N: usize = 300;
    const CONCURRENCY: usize = 16;
    let settings = env(&[
        ("KEYPORT_REFRESH_RATE_LIMIT", "0"),
        ("KEYPORT_REFRESH_LEASE_MS", "3000"),
        ("KEYPORT_TOKEN_TIMEOUT_MS", "1000"),
        ("KEYPORT_REFRESH_CONCURRENCY", "16"),
    ]);
    let first = Keyport::start(KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        env: settings.clone(),
        ..Default::default()
    })
    .await;
    let (issuer, server) = start_rotating(
        3600,
        Duration::from_millis(150),
        N as u64,
        Instant::now() + Duration::from_secs(3600),
    )
    .await;
    first.point_oidc_test_at(&issuer).await;
    let now = keyport::store::now_ms();
    first.seed_oauth("load-", N, now + 3_600_000, now).await;
    let mut others = Vec::new();
    for _ in 1..replicas {
        others.push(Keyport::start_in(
            tempfile::tempdir().unwrap(),
            None,
            KeyportOpts {
                master_keys: Some(master_keys()),
                database_url: Some(first.db_url()),
                env: settings.clone(),
                ..Default::default()
            },
        ));
    }
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
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db_url = first.db_url();
    let (data, pg) = first.stop(); // SIGKILL, with refreshes in flight
    let killed = Instant::now();
    let at_kill = refreshed();
    assert!(
        at_kill < N,
        "the kill landed mid-storm ({at_kill} of {N} done)"
    );
    let store = keyport::store::Store::connect(&db_url).await.unwrap();
    // Alone on its database, the answers the dead process never committed are known once the
    // provider has finished what it was answering (150 ms).
    let mut lost_at_kill = None;
    if replicas == 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grants = server.grants.lock().unwrap().clone();
        let mut lost = std::collections::BTreeSet::new();
        for (i, g) in &grants {
            let stored = read_secret_at(&db_url, &format!("load-{i}"), "access_token")
                .await
                .unwrap_or_default();
            if stored != format!("fake-at-{i}-{}", g.generation) {
                lost.insert(format!("load-{i}"));
            }
        }
        lost_at_kill = Some(lost);
    }
    // Alone, it is restarted; otherwise the other replica carries on (its database kept).
    let (restarted, _kept) = if replicas == 1 {
        let kp = Keyport::start_in(
            data,
            pg,
            KeyportOpts {
                master_keys: Some(master_keys()),
                env: settings.clone(),
                ..Default::default()
            },
        );
        (Some(kp), None)
    } else {
        (None, Some((data, pg)))
    };
    let log = || match (&restarted, others.first()) {
        (Some(kp), _) | (None, Some(kp)) => kp.log(),
        _ => String::new(),
    };
    // Wait until nothing is due any more.
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
            log()
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
    assert_eq!(rows.len(), N, "every connection still exists");
    let grants = server.grants.lock().unwrap().clone();
    let now = keyport::store::now_ms();
    let mut revoked = std::collections::BTreeSet::new();
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
                let at = read_secret_at(&db_url, &id, "access_token")
                    .await
                    .unwrap_or_default();
                assert_eq!(at, format!("fake-at-{i}-{}", g.generation), "{id}");
                assert!(!g.reused, "{id} is active but its grant is dead");
            }
            "revoked" => {
                assert!(g.reused, "{id} is revoked but its grant is alive");
                assert!(
                    g.answered
                        .is_some_and(|a| a < killed + Duration::from_millis(200)),
                    "{id} lost an answer the provider sent after the kill"
                );
                revoked.insert(id);
            }
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    eprintln!(
        "{db:?}, {replicas} replica(s): killed after {at_kill} of {N} refreshes; {} revoked",
        revoked.len()
    );
    if let Some(lost) = lost_at_kill {
        assert_eq!(
            revoked, lost,
            "exactly the connections whose answer the dead process never committed"
        );
    }
    assert!(
        revoked.len() <= CONCURRENCY,
        "at most one per refresh the dead process was running ({})",
        revoked.len()
    );
    drop(others);
}

#[tokio::test]
async fn a_process_killed_during_a_refresh_storm_on_sqlite_costs_only_the_answers_it_never_committed()
 {
    killed_during_a_refresh_storm(Db::Sqlite, 1).await;
}

#[tokio::test]
async fn one_of_two_replicas_killed_during_a_refresh_storm_on_postgres_costs_only_the_answers_it_never_committed()
 {
    killed_during_a_refresh_storm(Db::Postgres, 2).await;
}
