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
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/webhooks"),
        (reqwest::Method::GET, "/api/v1/connections"),
        (reqwest::Method::GET, "/api/v1/connection-requests"),
        (reqwest::Method::GET, "/api/v1/audit"),
        (reqwest::Method::POST, "/api/v1/connections/oauth/start"),
        (reqwest::Method::GET, "/api/v1/workspaces/default/members"),
    ] {
        let (s, e) = call(
            &kp,
            &client,
            method,
            path,
            Some(json!({"connector": "oidc-test"})),
        )
        .await;
        assert_eq!(s, 403, "{path}: {e}");
    }

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
    // The agency's Connections page shows the client as its owner.
    let signed_in = kp
        .http
        .post(format!("{}/login", kp.url))
        .form(&[("token", ADMIN), ("next", "/connections")])
        .send()
        .await
        .unwrap();
    let agency = set_cookie_headers(signed_in.headers())[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = kp
        .http
        .get(format!("{}/connections", kp.url))
        .header("cookie", agency)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = page
        .split("<tr ")
        .find(|r| r.contains(&format!("data-connection=\"{conn}\"")))
        .unwrap_or_else(|| panic!("{page}"));
    assert!(
        row.contains(
            "<td data-owner>client@example.com <span class=\"muted\">(shared: use)</span>"
        ),
        "{row}"
    );
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
    let (s, _) = call(
        &kp,
        &other,
        reqwest::Method::GET,
        "/api/v1/connections",
        None,
    )
    .await;
    assert_eq!(s, 403, "clients stay in the portal's API");
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

/// Later visits: a client (who has no password) asks for a sign-in link by email and is signed in
/// once with it; the portal shows the agency's name and logo; a client of another workspace sees
/// none of this workspace's requests or connections.
#[tokio::test]
async fn clients_come_back_with_an_emailed_link_to_a_portal_branded_by_the_agency() {
    let (kp, _oidc, smtp) = setup(Db::Sqlite).await;
    let (_, made) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "dora@example.com", "connector": "oidc-test"}),
        )
        .await;
    let first = join(&kp, made["link"].as_str().unwrap()).await.unwrap();
    let id = made["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    connect(&kp, &first, &id, "dora").await;

    let ask = |email: &'static str| {
        kp.http
            .post(format!("{}/api/v1/auth/email-link", kp.url))
            .json(&json!({"email": email}))
            .send()
    };
    let known = ask("dora@example.com").await.unwrap();
    assert_eq!(known.status(), 202);
    let known: Value = known.json().await.unwrap();
    let unknown: Value = ask("nobody@example.com")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        known, unknown,
        "the same answer whether or not there is an account"
    );
    let mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.contains("sign-in link"))
        .unwrap_or_else(|| panic!("no sign-in mail: {:?}", smtp.messages()));
    assert!(mail.contains("To: dora@example.com"), "{mail}");
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/login/link#"))
        .unwrap()
        .to_string();
    let token = link.split_once('#').unwrap().1;
    let use_link = || {
        kp.http
            .post(format!("{}/api/v1/auth/email-link/use", kp.url))
            .json(&json!({"token": token}))
            .send()
    };
    let resp = use_link().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = set_cookie_headers(resp.headers())[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: Value = resp.json().await.unwrap();
    let dora = Client {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().into(),
    };
    let (_, portal) = call(&kp, &dora, reqwest::Method::GET, "/api/v1/portal", None).await;
    assert_eq!(
        portal["connections"].as_array().unwrap().len(),
        1,
        "{portal}"
    );
    assert_eq!(use_link().await.unwrap().status(), 404, "single use");

    // The agency's name and logo on the portal.
    let logo = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (s, w) = kp
        .patch(
            "/api/v1/workspaces/default",
            json!({"name": "Acme Agency", "logo": logo}),
        )
        .await;
    assert_eq!(s, 200, "{w}");
    let (s, e) = kp
        .patch(
            "/api/v1/workspaces/default",
            json!({"logo": "https://acme.example/logo.png"}),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    let (s, e) = call(
        &kp,
        &dora,
        reqwest::Method::PATCH,
        "/api/v1/workspaces/default",
        Some(json!({"name": "Mine"})),
    )
    .await;
    assert_eq!(s, 403, "a client does not rename the workspace: {e}");
    let page = kp
        .http
        .get(format!("{}/portal", kp.url))
        .header("cookie", &dora.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Connections for Acme Agency"), "{page}");
    assert!(page.contains(&format!("src=\"{logo}\"")), "{page}");

    // A client of another workspace sees none of it.
    kp.post("/api/v1/workspaces", json!({"id": "elsewhere"}))
        .await;
    let r = kp
        .http
        .put(format!("{}/api/v1/provider-apps/oidc-test", kp.url))
        .bearer_auth(ADMIN)
        .header("x-keyport-workspace", "elsewhere")
        .json(&json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let made = kp
        .http
        .post(format!("{}/api/v1/connection-requests", kp.url))
        .bearer_auth(ADMIN)
        .header("x-keyport-workspace", "elsewhere")
        .json(&json!({"client_email": "eve@example.com", "connector": "oidc-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let eve = join(&kp, made["link"].as_str().unwrap()).await.unwrap();
    let (_, portal) = call(&kp, &eve, reqwest::Method::GET, "/api/v1/portal", None).await;
    assert_eq!(portal["workspace"], "elsewhere");
    let eve_page = kp
        .http
        .get(format!("{}/portal", kp.url))
        .header("cookie", &eve.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        eve_page.contains("No connections yet") && !eve_page.contains("Acme Agency"),
        "{eve_page}"
    );
    assert_eq!(portal["connections"].as_array().unwrap().len(), 0);
    assert_eq!(portal["requests"].as_array().unwrap().len(), 1);
    let conn = call(&kp, &dora, reqwest::Method::GET, "/api/v1/portal", None)
        .await
        .1["connections"][0]["id"]
        .clone();
    let (s, _) = call(
        &kp,
        &eve,
        reqwest::Method::GET,
        &format!("/api/v1/connections/{}", conn.as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &kp,
        &eve,
        reqwest::Method::POST,
        &format!("/api/v1/connection-requests/{id}/connect"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    // A client who came by link sets a password and signs in with it later.
    let (s, e) = call(
        &kp,
        &dora,
        reqwest::Method::POST,
        "/api/v1/auth/password/change",
        Some(json!({"current_password": "", "new_password": "dora's own passphrase"})),
    )
    .await;
    assert_eq!(s, 204, "{e}");
    let r = kp
        .http
        .post(format!("{}/api/v1/auth/password", kp.url))
        .json(&json!({"email": "dora@example.com", "password": "dora's own passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The portal's four statuses and their texts, as the pages render them: a credential that
/// expired or was rejected reads as `error`, "Reconnection needed."; another client's portal
/// page shows none of it.
#[tokio::test]
async fn the_portal_shows_four_statuses_with_their_texts() {
    let (kp, _oidc, _smtp) = setup(Db::Sqlite).await;
    let (_, made) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "fay@example.com", "connector": "oidc-test"}),
        )
        .await;
    let fay = join(&kp, made["link"].as_str().unwrap()).await.unwrap();
    let id = made["connection_requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    connect(&kp, &fay, &id, "fay").await;
    let conn = call(&kp, &fay, reqwest::Method::GET, "/api/v1/portal", None)
        .await
        .1["connections"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = |path: String, cookie: String| {
        let http = kp.http.clone();
        let url = format!("{}{path}", kp.url);
        async move {
            http.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    for (status, badge, text) in [
        ("active", "active", "Connected and working."),
        ("error", "error", "Reconnection needed."),
        ("expired", "error", "Reconnection needed."),
        ("pending", "pending", "Waiting for the first sync."),
        (
            "revoked",
            "revoked",
            "This connection was revoked. Reconnect to keep workflows running.",
        ),
    ] {
        kp.sql(&format!(
            "UPDATE connections SET status = '{status}' WHERE id = '{conn}'"
        ))
        .await;
        let detail = page(format!("/portal/connections/{conn}"), fay.cookie.clone()).await;
        assert!(
            detail.contains(&format!("data-portal-status=\"{badge}\">{badge}<")),
            "{status}: {detail}"
        );
        assert!(detail.contains(text), "{status}: {detail}");
        let list = page("/portal/connections".into(), fay.cookie.clone()).await;
        assert!(
            list.contains(&format!("data-portal-status=\"{badge}\"")),
            "{status}: {list}"
        );
        for header in [
            "<th scope=\"col\">App</th>",
            "<th scope=\"col\">Label</th>",
            "<th scope=\"col\">Status</th>",
            "<th scope=\"col\">Actions</th>",
        ] {
            assert!(list.contains(header), "{list}");
        }
        assert_eq!(
            list.matches("<th scope=\"col\">").count(),
            4,
            "exactly four columns"
        );
    }
    // Another client of the workspace: an empty portal, and no way to this connection's page.
    let (_, other) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "gus@example.com", "connector": "oidc-test"}),
        )
        .await;
    let gus = join(&kp, other["link"].as_str().unwrap()).await.unwrap();
    let list = page("/portal/connections".into(), gus.cookie.clone()).await;
    assert!(list.contains("No connections yet"), "{list}");
    assert!(
        list.contains("When your team asks you to connect an app, it will show up here."),
        "{list}"
    );
    assert!(!list.contains(&conn), "{list}");
    let detail = page(format!("/portal/connections/{conn}"), gus.cookie.clone()).await;
    assert!(
        !detail.contains("fay@example.com") && detail.contains("not one of yours"),
        "{detail}"
    );
}

/// Members send requests only when the workspace lets them; clients never.
#[tokio::test]
async fn members_send_requests_when_the_workspace_lets_them() {
    let (kp, _oidc, _smtp) = setup(Db::Sqlite).await;
    let (s, u) = kp
        .post(
            "/api/v1/users",
            json!({"email": "mo@example.com", "password": "member password", "role": "member"}),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    let resp = kp
        .http
        .post(format!("{}/api/v1/auth/password", kp.url))
        .json(&json!({"email": "mo@example.com", "password": "member password"}))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie_headers(resp.headers())[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: Value = resp.json().await.unwrap();
    let mo = Client {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().into(),
    };
    let ask = json!({"client_email": "x@example.com", "connector": "oidc-test"});
    let (s, e) = call(
        &kp,
        &mo,
        reqwest::Method::POST,
        "/api/v1/connection-requests",
        Some(ask.clone()),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("when the workspace allows members"),
        "{e}"
    );
    let (s, w) = kp
        .patch(
            "/api/v1/workspaces/default",
            json!({"members_may_request": true}),
        )
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["members_may_request"], true);
    let (s, made) = call(
        &kp,
        &mo,
        reqwest::Method::POST,
        "/api/v1/connection-requests",
        Some(ask),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let id = made["connection_requests"][0]["id"].as_str().unwrap();
    let (s, r) = call(
        &kp,
        &mo,
        reqwest::Method::POST,
        &format!("/api/v1/connection-requests/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
}
