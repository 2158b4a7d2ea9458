//! Connection requests: a workspace asks a client by email, the client opens the link (signed in
//! to the portal as a client), connects through oidc-provider, and the connection is theirs —
//! shared with the workspace at `use` — while the workspace uses it; cancel, resend and expiry;
//! reconnect requests keep the connection's id; clients see only their own.

mod common;

use common::e2e::*;
use serde_json::{Value, json};

struct Client {
    cookie: String,
    csrf: String,
}

async fn call(
    kp: &Keyport,
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = kp
        .http
        .request(method, format!("{}{path}", kp.url))
        .header("cookie", &c.cookie)
        .header("x-csrf-token", &c.csrf);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Opens a request link: the client's session, or the refusal.
async fn join(kp: &Keyport, link: &str) -> Result<Client, (u16, Value)> {
    let token = link.split_once('#').unwrap().1;
    let resp = kp
        .http
        .post(format!("{}/api/v1/connection-requests/join", kp.url))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let cookie = set_cookie_headers(resp.headers())
        .first()
        .map(|c| c.split(';').next().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match cookie {
        Some(cookie) if s == 200 => Ok(Client {
            cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
        }),
        _ => Err((s, body)),
    }
}

/// The client connects what request `id` asks for, as `who` at oidc-provider: where keyport
/// sent the browser.
async fn connect(kp: &Keyport, c: &Client, id: &str, who: &str) -> String {
    let (s, started) = call(
        kp,
        c,
        reqwest::Method::POST,
        &format!("/api/v1/connection-requests/{id}/connect"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{started}");
    let b = Browser::new();
    b.add_cookie(&kp.url, &c.cookie);
    let done = b
        .connect(started["authorize_url"].as_str().unwrap(), who)
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    done.location.unwrap()
}

async fn outbox(kp: &Keyport, event: &str) -> Vec<Value> {
    let store = keyport::store::Store::connect(&kp.db_url()).await.unwrap();
    use sqlx::Row;
    sqlx::query("SELECT payload FROM webhook_outbox WHERE event_type = $1")
        .bind(event)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)).unwrap())
        .collect()
}

async fn setup(db: Db) -> (Keyport, Oidc, common::smtp::Smtp) {
    let smtp = common::smtp::Smtp::start();
    let kp = Keyport::start(KeyportOpts {
        db,
        env: vec![("KEYPORT_SMTP_URL".into(), smtp.url())],
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    // A subscription, so events are queued.
    let (s, w) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["connection_request.fulfilled", "connection_request.cancelled", "connection_request.expired", "connection.revoked"]}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    (kp, oidc, smtp)
}

async fn the_whole_loop(db: Db) {
    let (kp, _oidc, smtp) = setup(db).await;
    let (s, made) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "Client@Example.com", "connector": "oidc-test", "label": "Client's login", "message": "Please connect your account so we can run the weekly report."}),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["emailed"], true, "{made}");
    let req = made["connection_requests"][0].clone();
    assert_eq!(req["status"], "outstanding");
    assert_eq!(req["client_email"], "client@example.com");
    let mail = smtp.wait_for("client@example.com").await;
    assert!(mail.contains("weekly report"), "{mail}");
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/portal/join#"))
        .unwrap()
        .to_string();
    assert_eq!(link, made["link"].as_str().unwrap());
    let (_, listed) = kp.get("/api/v1/connection-requests").await;
    assert!(
        !listed.to_string().contains(link.split_once('#').unwrap().1),
        "never the link"
    );

    // The client opens the link: signed in as a client; the link works once.
    let client = join(&kp, &link)
        .await
        .expect("the link signs the client in");
    let (s, me) = call(&kp, &client, reqwest::Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["role"], "client");
    let (s, e) = join(&kp, &link).await.err().unwrap();
    assert_eq!(s, 404, "{e}");
    let (_, portal) = call(&kp, &client, reqwest::Method::GET, "/api/v1/portal", None).await;
    assert_eq!(portal["requests"][0]["id"], req["id"], "{portal}");
    assert_eq!(
        portal["requests"][0]["app"], "OIDC test provider",
        "{portal}"
    );
    assert_eq!(portal["connections"].as_array().unwrap().len(), 0);
    // A client cannot cancel, and sees none of the workspace's settings.
    let (s, _) = call(
        &kp,
        &client,
        reqwest::Method::POST,
        &format!(
            "/api/v1/connection-requests/{}/cancel",
            req["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(&kp, &client, reqwest::Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(s, 403);

    // Connecting fulfils the request: the connection is the client's, shared at use.
    let location = connect(&kp, &client, req["id"].as_str().unwrap(), "client").await;
    assert!(location.contains("status=active"), "{location}");
    let (_, r) = kp
        .get(&format!(
            "/api/v1/connection-requests/{}",
            req["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r["status"], "fulfilled", "{r}");
    let conn = r["connection_id"].as_str().unwrap().to_string();
    let (_, c) = kp.get(&format!("/api/v1/connections/{conn}")).await;
    assert_eq!(c["status"], "active");
    assert_eq!(c["name"], "Client's login");
    assert_eq!(c["owner"]["user_id"], me["user"]["id"]);
    assert_eq!(c["visibility"], "shared");
    assert_eq!(c["permission"], "use");
    let fulfilled = outbox(&kp, "connection_request.fulfilled").await;
    assert_eq!(fulfilled.len(), 1);
    assert_eq!(
        fulfilled[0]["data"]["connection_request"]["connection_id"],
        conn.as_str()
    );
    // The workspace uses it, but revoking is the client's.
    let (s, b) = kp
        .get(&format!("/api/v1/connections/{conn}/proxy/me"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, e) = kp
        .post(&format!("/api/v1/connections/{conn}/revoke"), json!({}))
        .await;
    assert_eq!(s, 403, "{e}");
    let (_, portal) = call(&kp, &client, reqwest::Method::GET, "/api/v1/portal", None).await;
    assert_eq!(portal["requests"].as_array().unwrap().len(), 0);
    assert_eq!(portal["connections"][0]["id"], conn.as_str());
    let (s, c) = call(
        &kp,
        &client,
        reqwest::Method::POST,
        &format!("/api/v1/connections/{conn}/refresh"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let (s, c) = call(
        &kp,
        &client,
        reqwest::Method::POST,
        &format!("/api/v1/connections/{conn}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let (s, _) = kp
        .get(&format!("/api/v1/connections/{conn}/proxy/me"))
        .await;
    assert_eq!(s, 409, "the workspace's next call is refused");
    assert_eq!(outbox(&kp, "connection.revoked").await.len(), 1);

    // A reconnect request brings the same connection back.
    let (s, made) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "client@example.com", "connection_id": conn}),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["connection_requests"][0]["reconnect"], true);
    let client = join(&kp, made["link"].as_str().unwrap()).await.unwrap();
    let id = made["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let location = connect(&kp, &client, &id, "client").await;
    assert!(
        location.contains(&format!("connection_id={conn}")),
        "{location}"
    );
    let (_, c) = kp.get(&format!("/api/v1/connections/{conn}")).await;
    assert_eq!(c["status"], "active", "same id, active again: {c}");
    let (_, r) = kp.get(&format!("/api/v1/connection-requests/{id}")).await;
    assert_eq!(r["status"], "fulfilled");
    assert_eq!(r["connection_id"], conn.as_str());

    // Isolation: another client in this workspace sees none of it.
    let (_, other) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "other@example.com", "connector": "oidc-test"}),
        )
        .await;
    let other = join(&kp, other["link"].as_str().unwrap()).await.unwrap();
    let (_, portal) = call(&kp, &other, reqwest::Method::GET, "/api/v1/portal", None).await;
    assert_eq!(
        portal["connections"].as_array().unwrap().len(),
        0,
        "{portal}"
    );
    assert_eq!(portal["requests"].as_array().unwrap().len(), 1);
    let (s, _) = call(
        &kp,
        &other,
        reqwest::Method::GET,
        &format!("/api/v1/connections/{conn}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &kp,
        &other,
        reqwest::Method::POST,
        &format!("/api/v1/connection-requests/{id}/connect"),
        None,
    )
    .await;
    assert_eq!(s, 404, "someone else's request");
    let (s, l) = call(
        &kp,
        &other,
        reqwest::Method::GET,
        "/api/v1/connections",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(l["connections"].as_array().unwrap().len(), 0, "{l}");
}

#[tokio::test]
async fn a_request_is_mailed_joined_connected_used_and_revoked_by_the_client_on_sqlite() {
    the_whole_loop(Db::Sqlite).await;
}

#[tokio::test]
async fn a_request_is_mailed_joined_connected_used_and_revoked_by_the_client_on_postgres() {
    the_whole_loop(Db::Postgres).await;
}

#[tokio::test]
async fn cancelled_resent_and_expired_links_sign_nobody_in() {
    let (kp, _oidc, _smtp) = setup(Db::Sqlite).await;
    let ask = || {
        kp.post(
            "/api/v1/connection-requests",
            json!({"client_email": "c@example.com", "connectors": ["oidc-test"]}),
        )
    };
    // Cancelled: the link is dead, the event is queued, it cannot be cancelled twice.
    let (_, a) = ask().await;
    let id = a["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = kp
        .post(
            &format!("/api/v1/connection-requests/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "cancelled");
    let (s, e) = join(&kp, a["link"].as_str().unwrap()).await.err().unwrap();
    assert_eq!(s, 404);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ask the team that sent it for a new one"),
        "{e}"
    );
    assert_eq!(outbox(&kp, "connection_request.cancelled").await.len(), 1);
    let (s, _) = kp
        .post(
            &format!("/api/v1/connection-requests/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 409);
    // Resent: the new link works, the old one is dead.
    let (_, b) = ask().await;
    let id = b["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, again) = kp
        .post(
            &format!("/api/v1/connection-requests/{id}/resend"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_ne!(again["link"], b["link"]);
    assert_eq!(
        join(&kp, b["link"].as_str().unwrap())
            .await
            .err()
            .unwrap()
            .0,
        404
    );
    assert!(join(&kp, again["link"].as_str().unwrap()).await.is_ok());
    // Expired: closed with its event, the link signs nobody in.
    let (_, c) = ask().await;
    let id = c["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    kp.sql(&format!(
        "UPDATE connection_requests SET expires_at = 1 WHERE id = '{id}'"
    ))
    .await;
    let (_, list) = kp.get("/api/v1/connection-requests?status=expired").await;
    assert_eq!(list["connection_requests"][0]["id"], id.as_str(), "{list}");
    assert_eq!(outbox(&kp, "connection_request.expired").await.len(), 1);
    assert_eq!(
        join(&kp, c["link"].as_str().unwrap())
            .await
            .err()
            .unwrap()
            .0,
        404
    );
    // Bad input says what to do.
    let (s, e) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "c@example.com"}),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    let (s, e) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "c@example.com", "connector": "apikey-test"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("API key"),
        "{e}"
    );
}
