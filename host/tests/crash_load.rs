//! keyport under a mixed load with a `kill -9` in the middle, on each database: 200 connections
//! with 5-second tokens kept fresh by the scheduler, 16 concurrent proxy callers, concurrent
//! creates, renames, disables and deletes, and a webhook subscription created and deleted over
//! and over while events are written. After the restart and a quiet moment it checks:
//!
//! - no request was answered with a 5xx (requests cut off by the kill got no answer at all);
//! - no connection is stuck: every seeded one is `active` with a fresh token, nothing `pending`;
//! - every committed change is audited and its event delivered exactly once, and nothing that did
//!   not commit was audited or announced: a connection that exists has exactly one `created`
//!   audit row and one `connection.created` and `connection.active` event; one that is gone has
//!   exactly one `deleted` row and one `connection.deleted` event; every acknowledged change is
//!   among them. Shortly before the kill the provider starts giving refresh tokens an expiry
//!   inside the expiring-soon window, so the scheduler flags the 200 connections while the kill
//!   lands: each ends with exactly one `connection.expiring_soon` row and event. No event arrives twice, except one the kill cut off between the receiver's
//!   answer and keyport's record of it: that one is sent again after the restart with the same
//!   `Keyport-Event-Id` (receivers dedupe on it), at most one claim batch (4) of them.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::e2e::*;
use common::fake_as;
use serde_json::{Value, json};
use sqlx::Row;

const SEEDED: usize = 200;
const PROXY_CALLERS: usize = 16;
const WRITERS: usize = 4;
/// Load before the kill, and after the restart.
const PHASE: Duration = Duration::from_secs(8);
/// The expiring-soon window; refresh tokens issued from `PHASE - 5 s` on expire 2 s past it, so
/// each connection is flagged about 2 s after its next refresh.
const EXPIRING_SOON_SECS: u64 = 3600;

/// One delivery: (event id, type, connection id, when it arrived).
type Delivery = (String, String, String, Instant);

/// Every delivery the receiver got.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Delivery>>>);

async fn receiver(got: Received) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let got = got.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                got.0.lock().unwrap().push((
                    headers["keyport-event-id"].to_str().unwrap().to_string(),
                    headers["keyport-event-type"].to_str().unwrap().to_string(),
                    v["data"]["connection"]["id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    Instant::now(),
                ));
                "ok"
            }
        }),
    );
    format!("{}/hook", common::serve_fake(app).await)
}

/// What the load saw: answers by status, and what was acknowledged.
#[derive(Default)]
struct Seen {
    statuses: BTreeMap<u16, usize>,
    /// 5xx answers: (request, status, body).
    server_errors: Vec<(String, u16, String)>,
    /// Requests that got no answer (cut off by the kill, or sent while it was down).
    unanswered: usize,
    /// Connections whose create was acknowledged (201).
    created: BTreeSet<String>,
    /// Connections whose delete was acknowledged (204).
    deleted: BTreeSet<String>,
    /// Acknowledged renames by connection.
    renamed: HashMap<String, usize>,
    /// Renames sent without an answer, by connection.
    renames_unanswered: HashMap<String, usize>,
}

struct Load {
    base: RwLock<String>,
    http: reqwest::Client,
    seen: Mutex<Seen>,
    stop: AtomicBool,
    n: AtomicUsize,
}

impl Load {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.read().unwrap())
    }

    /// Sends a request; records its status. `None` when it got no answer.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        match req
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let mut seen = self.seen.lock().unwrap();
                *seen.statuses.entry(status).or_default() += 1;
                if status >= 500 {
                    seen.server_errors
                        .push((what.to_string(), status, body.clone()));
                }
                Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
            }
            Err(_) => {
                self.seen.lock().unwrap().unanswered += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    }

    async fn proxy_caller(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            let i = self.n.fetch_add(7, Ordering::Relaxed) % SEEDED;
            let path = format!("/api/v1/connections/load-{i}/proxy/api/items");
            self.send("proxy", self.http.get(self.url(&path))).await;
        }
    }

    async fn writer(self: Arc<Self>) {
        let mut mine: Vec<String> = Vec::new();
        let mut step = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            step += 1;
            match step % 4 {
                // Create (twice as often as delete, so the set grows).
                0 | 1 => {
                    let r = self
                        .send(
                            "create",
                            self.http.post(self.url("/api/v1/connections")).json(
                                &json!({"connector": "apikey-test", "api_key": common::GOOD_KEY}),
                            ),
                        )
                        .await;
                    if let Some((201, c)) = r {
                        let id = c["id"].as_str().unwrap().to_string();
                        self.seen.lock().unwrap().created.insert(id.clone());
                        mine.push(id);
                    }
                }
                2 => {
                    let Some(id) = mine.get(step % mine.len().max(1)).cloned() else {
                        continue;
                    };
                    let path = format!("/api/v1/connections/{id}");
                    let body = if step % 8 == 2 {
                        json!({"name": format!("renamed {step}")})
                    } else {
                        json!({"enabled": step % 16 != 6})
                    };
                    let rename = body.get("name").is_some();
                    match self
                        .send("patch", self.http.patch(self.url(&path)).json(&body))
                        .await
                    {
                        Some((200, _)) if rename => {
                            *self.seen.lock().unwrap().renamed.entry(id).or_default() += 1;
                        }
                        None if rename => {
                            *self
                                .seen
                                .lock()
                                .unwrap()
                                .renames_unanswered
                                .entry(id)
                                .or_default() += 1;
                        }
                        _ => {}
                    }
                }
                _ => {
                    if mine.len() < 3 {
                        continue;
                    }
                    let id = mine.remove(0);
                    let path = format!("/api/v1/connections/{id}");
                    if let Some((204, _)) =
                        self.send("delete", self.http.delete(self.url(&path))).await
                    {
                        self.seen.lock().unwrap().deleted.insert(id);
                    }
                }
            }
        }
    }

    /// Creates a subscription to a receiver nobody reads and deletes it again, over and over,
    /// while events are being written.
    async fn subscription_churn(self: Arc<Self>, url: String) {
        while !self.stop.load(Ordering::Relaxed) {
            let r = self
                .send(
                    "webhook create",
                    self.http
                        .post(self.url("/api/v1/webhooks"))
                        .json(&json!({"url": url, "events": ["*"]})),
                )
                .await;
            if let Some((201, h)) = r {
                let path = format!("/api/v1/webhooks/{}", h["id"].as_str().unwrap());
                self.send("webhook delete", self.http.delete(self.url(&path)))
                    .await;
            }
        }
    }
}

fn opts(db: Db) -> KeyportOpts {
    KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        env: vec![
            ("KEYPORT_REFRESH_RATE_LIMIT".into(), "0".into()),
            ("KEYPORT_REFRESH_LEASE_MS".into(), "3000".into()),
            ("KEYPORT_WEBHOOK_BACKOFF_MS".into(), "200".into()),
            (
                "KEYPORT_EXPIRING_SOON".into(),
                format!("{EXPIRING_SOON_SECS}s"),
            ),
        ],
        ..Default::default()
    }
}

async fn mixed_load_with_a_kill(db: Db) {
    let kp = Keyport::start(opts(db)).await;
    let fake = fake_as::start().await;
    kp.point_oidc_test_at(&fake.issuer()).await;
    let keys = common::fake_key_provider().await;
    kp.point_apikey_test_at(&format!("http://{keys}")).await;
    // 200 connections whose 5-second tokens the scheduler keeps fresh.
    fake.script.lock().unwrap().expires_in = Some(json!(5));
    let now = keyport::store::now_ms();
    kp.seed_oauth("load-", SEEDED, now + 5_000, now + 1_000)
        .await;
    {
        let mut seen = fake.seen.lock().unwrap();
        for i in 0..SEEDED {
            seen.valid_tokens.insert(format!("fake-at-{i}-0"));
        }
    }
    let got = Received::default();
    let hook_url = receiver(got.clone()).await;
    let (s, hook) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": hook_url, "events": ["*"]}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let ignored = receiver(Received::default()).await;

    let load = Arc::new(Load {
        base: RwLock::new(kp.url.clone()),
        http: kp.http.clone(),
        seen: Mutex::default(),
        stop: AtomicBool::new(false),
        n: AtomicUsize::new(0),
    });
    let mut tasks = Vec::new();
    for _ in 0..PROXY_CALLERS {
        tasks.push(tokio::spawn(load.clone().proxy_caller()));
    }
    for _ in 0..WRITERS {
        tasks.push(tokio::spawn(load.clone().writer()));
    }
    tasks.push(tokio::spawn(load.clone().subscription_churn(ignored)));

    tokio::time::sleep(PHASE - Duration::from_secs(5)).await;
    fake.script.lock().unwrap().refresh_token_expires_in = Some(EXPIRING_SOON_SECS + 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed_at = keyport::store::now_ms();
    let (data, pg) = kp.stop(); // kill -9 under load
    // Let the receiver read what the killed process had already written to its sockets, then
    // draw the line: the new process does not exist before it, so nothing it sends arrives
    // earlier. The start blocks, so it runs off this thread and the receiver keeps reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = Instant::now();
    let kp = tokio::task::spawn_blocking(move || Keyport::start_in(data, pg, opts(db)))
        .await
        .unwrap();
    *load.base.write().unwrap() = kp.url.clone();
    tokio::time::sleep(PHASE).await;
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    // Every seeded connection flagged as expiring soon (each is flagged about 2 s after its
    // first refresh with the new refresh-token expiry).
    let t = Instant::now();
    loop {
        let unflagged: i64 = sqlx::query(
            "SELECT COUNT(*) FROM connections WHERE id LIKE 'load-%' AND expiring_soon_at IS NULL",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
        if unflagged == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{unflagged} connections never flagged as expiring soon:\n{}",
            kp.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Quiet: every queued event delivered.
    let t = Instant::now();
    loop {
        let pending: i64 = sqlx::query(
            "SELECT COUNT(*) FROM webhook_outbox WHERE webhook_id = $1 AND delivered_at IS NULL",
        )
        .bind(&hook_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
        if pending == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{pending} events still undelivered:\n{}",
            kp.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seen = std::mem::take(&mut *load.seen.lock().unwrap());
    eprintln!(
        "{db:?}: answers {:?}, {} unanswered; {} created, {} deleted",
        seen.statuses,
        seen.unanswered,
        seen.created.len(),
        seen.deleted.len()
    );
    assert!(
        seen.server_errors.is_empty(),
        "{} answers were 5xx, e.g. {:?}",
        seen.server_errors.len(),
        &seen.server_errors[..seen.server_errors.len().min(5)]
    );
    assert!(
        seen.statuses.get(&200).copied().unwrap_or(0) > 200,
        "the load ran ({:?})",
        seen.statuses
    );
    assert!(seen.created.len() >= 20 && !seen.deleted.is_empty());

    // Nothing stuck: every connection is active and every seeded token is kept fresh. (On a
    // busy machine a refresh may land a moment after its token expired; a stuck connection stays
    // expired, so its token is given a few seconds to be renewed.)
    for r in sqlx::query("SELECT id, status FROM connections")
        .fetch_all(store.pool())
        .await
        .unwrap()
    {
        let (id, status): (String, String) = (r.get(0), r.get(1));
        assert_eq!(status, "active", "{id} is stuck {status}");
    }
    let t = Instant::now();
    loop {
        let expired: Vec<String> = sqlx::query(
            "SELECT id FROM connections WHERE id LIKE 'load-%' AND (expires_at IS NULL OR expires_at <= $1)",
        )
        .bind(keyport::store::now_ms())
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        if expired.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tokens left to expire: {expired:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every committed change audited and announced exactly once; nothing else.
    let existing: BTreeSet<String> =
        sqlx::query("SELECT id FROM connections WHERE id NOT LIKE 'load-%'")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    let mut audited: HashMap<(String, String), usize> = HashMap::new();
    for r in sqlx::query(
        "SELECT connection_id, action FROM audit_events WHERE connection_id IS NOT NULL AND connection_id NOT LIKE 'load-%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    {
        *audited.entry((r.get(0), r.get(1))).or_default() += 1;
    }
    let got = got.0.lock().unwrap().clone();
    let mut by_event_id: HashMap<&str, Vec<Instant>> = HashMap::new();
    let mut events: HashMap<(String, String), usize> = HashMap::new();
    for (event_id, kind, conn, at) in &got {
        let times = by_event_id.entry(event_id).or_default();
        if times.is_empty() {
            *events.entry((conn.clone(), kind.clone())).or_default() += 1;
        }
        times.push(*at);
    }
    let again: Vec<_> = by_event_id.iter().filter(|(_, t)| t.len() > 1).collect();
    for (id, times) in &again {
        let at: Vec<String> = times
            .iter()
            .map(|t| {
                if *t < restarted {
                    format!("{:?} before the restart", restarted - *t)
                } else {
                    format!("{:?} after it", *t - restarted)
                }
            })
            .collect();
        assert!(
            times.len() == 2 && times[0] < restarted && times[1] > restarted,
            "{id} was delivered more than once, not once by each process: {at:?}"
        );
    }
    assert!(
        again.len() <= 4,
        "{} events were sent again after the restart: more than one claim batch",
        again.len()
    );
    let count = |m: &HashMap<(String, String), usize>, id: &str, what: &str| {
        m.get(&(id.to_string(), what.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let ever: BTreeSet<String> = audited
        .keys()
        .map(|(id, _)| id.clone())
        .chain(events.keys().map(|(id, _)| id.clone()))
        .chain(existing.iter().cloned())
        .chain(seen.created.iter().cloned())
        .filter(|id| !id.starts_with("load-") && !id.is_empty())
        .collect();
    for id in &ever {
        let exists = existing.contains(id);
        let deleted = count(&audited, id, "connection.deleted");
        assert_eq!(
            count(&audited, id, "connection.created"),
            1,
            "{id}: created row"
        );
        assert_eq!(
            count(&events, id, "connection.created"),
            1,
            "{id}: created event"
        );
        assert_eq!(
            count(&events, id, "connection.active"),
            1,
            "{id}: active event"
        );
        if exists {
            assert_eq!(deleted, 0, "{id} exists but has a deleted row");
            assert_eq!(count(&events, id, "connection.deleted"), 0, "{id}");
        } else {
            assert_eq!(deleted, 1, "{id} is gone: one deleted row");
            assert_eq!(
                count(&events, id, "connection.deleted"),
                1,
                "{id}: deleted event"
            );
        }
        if seen.deleted.contains(id) {
            assert!(!exists, "{id}: its delete was acknowledged");
        }
        let renamed = count(&audited, id, "connection.renamed");
        let acked = seen.renamed.get(id).copied().unwrap_or(0);
        let maybe = seen.renames_unanswered.get(id).copied().unwrap_or(0);
        assert!(
            renamed >= acked && renamed <= acked + maybe,
            "{id}: {renamed} rename rows for {acked} acknowledged (+{maybe} unanswered)"
        );
    }
    for id in &seen.created {
        assert!(ever.contains(id), "{id}: its create was acknowledged");
    }

    // Every seeded connection was flagged as expiring soon exactly once, with its row and its
    // event, whether the flag was written before the kill or after the restart.
    let mut flagged: HashMap<String, Vec<i64>> = HashMap::new();
    for r in sqlx::query(
        "SELECT connection_id, created_at FROM audit_events WHERE action = 'connection.expiring_soon'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    {
        flagged.entry(r.get(0)).or_default().push(r.get(1));
    }
    let before_kill = flagged
        .values()
        .flatten()
        .filter(|at| **at < killed_at)
        .count();
    eprintln!(
        "{db:?}: {} connections flagged as expiring soon, {before_kill} of them before the kill",
        flagged.len()
    );
    for i in 0..SEEDED {
        let id = format!("load-{i}");
        assert_eq!(
            flagged.get(&id).map(Vec::len),
            Some(1),
            "{id}: one expiring-soon row"
        );
        assert_eq!(
            count(&events, &id, "connection.expiring_soon"),
            1,
            "{id}: one expiring-soon event"
        );
    }
}

#[tokio::test]
async fn sqlite_under_mixed_load_and_a_kill_answers_no_5xx_and_loses_no_change_or_event() {
    mixed_load_with_a_kill(Db::Sqlite).await;
}

#[tokio::test]
async fn postgres_under_mixed_load_and_a_kill_answers_no_5xx_and_loses_no_change_or_event() {
    mixed_load_with_a_kill(Db::Postgres).await;
}
