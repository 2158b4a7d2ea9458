//! Single-flight refresh (SECURITY.md O14/O15): concurrent refreshes of one connection make one
//! token request, within a process and across processes sharing PostgreSQL, and a server with
//! refresh-token rotation and reuse detection never sees a token twice.

mod common;

use common::e2e::*;
use common::fake_as;
use serde_json::json;

async fn connect_via_fake(kp: &Keyport, fake: &fake_as::FakeAs) -> String {
    kp.point_oidc_test_at(&fake.issuer()).await;
    let (id, _) = common::oauth_connect(kp, "oidc-test", json!({})).await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    id
}

/// Marks the access token expired, then sends `n` on-demand refreshes at once, spread over
/// `targets`.
async fn refresh_concurrently(targets: &[&Keyport], id: &str, n: usize) -> Vec<u16> {
    targets[0]
        .sql(&format!(
            "UPDATE connections SET expires_at = 1 WHERE id = '{id}'"
        ))
        .await;
    let calls = (0..n).map(|i| {
        let kp = targets[i % targets.len()];
        async move {
            kp.post(
                &format!("/api/v1/connections/{id}/refresh?if_needed=true"),
                json!({}),
            )
            .await
            .0
        }
    });
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn fifty_concurrent_on_demand_refreshes_of_an_expired_token_make_one_token_request() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    let id = connect_via_fake(&kp, &fake).await;
    assert_eq!(fake.token_requests(), 1, "the code exchange");
    let statuses = refresh_concurrently(&[&kp], &id, 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        fake.token_requests(),
        2,
        "exactly one refresh request for 50 callers"
    );
    let stored = kp.read_secret(&id, "refresh_token").await.unwrap();
    let last = fake.seen.lock().unwrap().token_requests.len();
    assert_eq!(last, 2);
    assert!(
        stored.starts_with("fake-rt-"),
        "the new refresh token was committed"
    );
}

#[tokio::test]
async fn two_processes_on_one_postgres_refresh_once() {
    let a = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let b = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        database_url: Some(a.db_url()),
        ..Default::default()
    })
    .await;
    let fake = fake_as::start().await;
    let id = connect_via_fake(&a, &fake).await;
    let statuses = refresh_concurrently(&[&a, &b], &id, 50).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        fake.token_requests(),
        2,
        "one refresh across both processes"
    );
    let (_, ca) = a.get(&format!("/api/v1/connections/{id}")).await;
    let (_, cb) = b.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(ca["last_refreshed_at"], cb["last_refreshed_at"]);
}

#[tokio::test]
async fn the_grant_survives_ten_cycles_of_concurrent_refreshes_with_reuse_detection() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let (_, started) = kp
        .post(
            "/api/v1/connections/oauth/start",
            json!({"connector": "oidc-test"}),
        )
        .await;
    let id = started["connection_id"].as_str().unwrap().to_string();
    Browser::new()
        .connect(started["authorize_url"].as_str().unwrap(), "dora")
        .await;
    kp.wait_for(&id, |c| c["status"] == "active").await;
    let mut seen = std::collections::HashSet::new();
    for cycle in 0..10 {
        let statuses = refresh_concurrently(&[&kp], &id, 50).await;
        assert!(
            statuses.iter().all(|s| *s == 200),
            "cycle {cycle}: {statuses:?}"
        );
        let rt = kp.read_secret(&id, "refresh_token").await.unwrap();
        assert!(
            seen.insert(rt),
            "cycle {cycle}: a new refresh token each cycle"
        );
    }
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(
        c["status"], "active",
        "oidc-provider never saw a reused refresh token: {c}"
    );
}

/// The write-back is fenced: with a lease or token version that is not ours nothing is written
/// (no secret, no audit row); with ours, tokens, version, lease release and the audit row land
/// together. On SQLite (a transaction) and PostgreSQL (one statement).
#[tokio::test]
async fn the_token_write_back_is_fenced_by_lease_and_version() {
    use keyport::store::{SealedField, Status, Store, TokenMeta};
    let pg = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("fence.db").display());
    for url in [sqlite.as_str(), pg.url.as_str()] {
        let store = Store::connect(url).await.unwrap();
        store.migrate().await.unwrap();
        store.ensure_workspace("default", "Default").await.unwrap();
        let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
        let now = keyport::store::now_ms();
        keyport::seed::oauth_connections(
            &store,
            &ring,
            &keyport::seed::Spec {
                workspace: "default",
                connector: "oidc-test",
                start: 0,
                count: 1,
                prefix: "fence-",
                expires_at: now,
                next_refresh_at: now,
                tokens: &|_| ("at-0".into(), "rt-0".into()),
            },
            |_| {},
        )
        .await
        .unwrap();
        let seal = |field: &'static str, v: &str| SealedField {
            field,
            key_id: ring.active().to_string(),
            ciphertext: ring.seal(
                v.as_bytes(),
                keyport::vault::Context {
                    workspace: "default",
                    row: "fence-0",
                    field,
                },
            ),
        };
        let meta = TokenMeta {
            metadata: "{}".into(),
            audit: Some(("token.refreshed".into(), "test".into(), "{}".into())),
            ..Default::default()
        };
        let read = |field: &'static str| {
            let store = &store;
            let ring = &ring;
            async move {
                let ct = store
                    .secret("default", "fence-0", field)
                    .await
                    .unwrap()
                    .unwrap();
                ring.open_string(
                    &ct,
                    keyport::vault::Context {
                        workspace: "default",
                        row: "fence-0",
                        field,
                    },
                )
                .unwrap()
                .to_string()
            }
        };
        let audits = || async {
            store
                .audit_events("default", Some("fence-0"), 100)
                .await
                .unwrap()
                .len()
        };
        assert!(
            store
                .acquire_lease("default", "fence-0", "me", 0, 30_000)
                .await
                .unwrap()
        );
        // Someone else's lease, or a stale version: nothing is written.
        for fence in [("other", 0), ("me", 7)] {
            let (a, r) = (seal("access_token", "at-x"), seal("refresh_token", "rt-x"));
            let out = store
                .store_tokens("default", "fence-0", &a, Some(&r), &meta, Some(fence))
                .await
                .unwrap();
            assert_eq!(out, None, "{url}: fenced out by {fence:?}");
            assert_eq!(read("refresh_token").await, "rt-0", "{url}");
            assert_eq!(audits().await, 0, "{url}");
        }
        // Ours: everything lands, and the lease is released.
        let (a, r) = (seal("access_token", "at-1"), seal("refresh_token", "rt-1"));
        let out = store
            .store_tokens("default", "fence-0", &a, Some(&r), &meta, Some(("me", 0)))
            .await
            .unwrap();
        assert_eq!(out, Some(1), "{url}");
        assert_eq!(read("access_token").await, "at-1");
        assert_eq!(read("refresh_token").await, "rt-1");
        assert_eq!(audits().await, 1, "{url}");
        let c = store
            .connection("default", "fence-0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.lease_owner, None, "{url}: the lease went with the write");
        // A response without a refresh token keeps the old one.
        assert!(
            store
                .acquire_lease("default", "fence-0", "me", 1, 30_000)
                .await
                .unwrap()
        );
        let a = seal("access_token", "at-2");
        let out = store
            .store_tokens("default", "fence-0", &a, None, &meta, Some(("me", 1)))
            .await
            .unwrap();
        assert_eq!(out, Some(2));
        assert_eq!(read("access_token").await, "at-2");
        assert_eq!(read("refresh_token").await, "rt-1", "{url}: kept");
        // A connection revoked meanwhile takes no new tokens, and a change decided on a stale
        // read (error → active) does not bring it back.
        store
            .set_status(
                "default",
                "fence-0",
                Status::Revoked,
                Some("revoked by a user"),
            )
            .await
            .unwrap();
        assert!(
            store
                .acquire_lease("default", "fence-0", "me", 2, 30_000)
                .await
                .unwrap()
        );
        let a = seal("access_token", "at-3");
        let out = store
            .store_tokens("default", "fence-0", &a, None, &meta, Some(("me", 2)))
            .await
            .unwrap();
        assert_eq!(out, None, "{url}: revoked connections take no tokens");
        assert_eq!(read("access_token").await, "at-2");
        let changed = store
            .transition_status(
                "default",
                "fence-0",
                Some(Status::Error),
                Status::Active,
                None,
                |_| keyport::store::Journal::new(),
            )
            .await
            .unwrap();
        assert!(!changed, "{url}");
        let c = store
            .connection("default", "fence-0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.status, Status::Revoked, "{url}");
        assert_eq!(c.status_reason.as_deref(), Some("revoked by a user"));
    }
}
