//! People: who may see, use and manage which connection (one table, every role × every
//! connection endpoint × every relation to the connection, on SQLite and PostgreSQL), password
//! sign-in and sessions, invitations mailed over a real SMTP server, API keys acting for users,
//! key revocation across replicas, and the upgrade of a database made before people existed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::e2e::*;
use common::{GOOD_KEY, fake_key_provider};
use reqwest::Method;
use serde_json::{Value, json};

/// How a request is authenticated.
#[derive(Clone, Debug)]
enum Auth {
    Admin,
    /// A signed-in user's session: cookie and CSRF token.
    Session {
        cookie: String,
        csrf: String,
    },
    /// A workspace API key, optionally acting for a user (`X-Keyport-User`).
    Key {
        key: String,
        as_user: Option<String>,
    },
}

async fn call(
    kp: &Keyport,
    auth: &Auth,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = kp.http.request(method, format!("{}{path}", kp.url));
    req = match auth {
        Auth::Admin => req.bearer_auth(ADMIN),
        Auth::Session { cookie, csrf } => req.header("cookie", cookie).header("x-csrf-token", csrf),
        Auth::Key { key, as_user } => {
            let r = req.bearer_auth(key);
            match as_user {
                Some(u) => r.header("x-keyport-user", u),
                None => r,
            }
        }
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates a user with a password and a role in the admin's default workspace.
async fn user(kp: &Keyport, email: &str, role: &str) -> String {
    let (s, u) = kp
        .post(
            "/api/v1/users",
            json!({"email": email, "password": "correct horse battery", "role": role}),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    u["id"].as_str().unwrap().to_string()
}

/// Signs in with email and password: the session's cookie and CSRF token.
async fn sign_in(kp: &Keyport, email: &str, password: &str) -> (u16, Option<Auth>, Value) {
    let resp = kp
        .http
        .post(format!("{}/api/v1/auth/password", kp.url))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cookie = set_cookie_headers(resp.headers())
        .into_iter()
        .next()
        .map(|c| c.split(';').next().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let auth = cookie.map(|cookie| Auth::Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap_or_default().to_string(),
    });
    (status, auth, body)
}

async fn signed_in(kp: &Keyport, email: &str, role: &str) -> (String, Auth) {
    let id = user(kp, email, role).await;
    let (s, auth, body) = sign_in(kp, email, "correct horse battery").await;
    assert_eq!(s, 200, "{body}");
    (id, auth.unwrap())
}

async fn api_key(kp: &Keyport, ws: &str, permissions: &[&str]) -> String {
    let (s, k) = kp
        .post(
            "/api/v1/api-keys",
            json!({"name": format!("key {permissions:?}"), "workspace": ws, "permissions": permissions}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    k["key"].as_str().unwrap().to_string()
}

async fn connection(kp: &Keyport, auth: &Auth, name: &str) -> Value {
    let (s, c) = call(
        kp,
        auth,
        Method::POST,
        "/api/v1/connections",
        Some(json!({"connector": "apikey-test", "api_key": GOOD_KEY, "name": name})),
    )
    .await;
    assert_eq!(s, 201, "{c}");
    c
}

/// A connection a client authorized (as a connection request makes it: theirs, shared with the
/// workspace at `use`).
async fn client_connection(kp: &Keyport, client: &str, name: &str) -> Value {
    let c = connection(kp, &Auth::Admin, name).await;
    let id = c["id"].as_str().unwrap();
    kp.sql(&format!(
        "UPDATE connections SET owner_user_id = '{client}', visibility = 'shared', share_permission = 'use' WHERE id = '{id}'"
    ))
    .await;
    kp.get(&format!("/api/v1/connections/{id}")).await.1
}

async fn share(kp: &Keyport, auth: &Auth, id: &str, permission: &str) {
    let (s, c) = call(
        kp,
        auth,
        Method::PATCH,
        &format!("/api/v1/connections/{id}"),
        Some(json!({"visibility": "shared", "permission": permission})),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["visibility"], "shared");
    assert_eq!(c["permission"], permission);
}

/// The endpoints, in the order they are tried (revoke and delete last: they end the fixture).
const ENDPOINTS: [&str; 17] = [
    "get",
    "list",
    "config",
    "config_post",
    "deps",
    "dep_put",
    "dep_delete",
    "audit",
    "proxy",
    "creds",
    "refresh",
    "rename",
    "share",
    "apikey",
    "reconnect",
    "revoke",
    "delete",
];

const RELATIONS: [&str; 6] = [
    "own",
    "others_personal",
    "shared_use",
    "shared_manage",
    "other_ws",
    "clients",
];

/// The rules, one letter per endpoint in `ENDPOINTS` order: A allowed (any answer but 403 and
/// 404), D denied (403), H hidden (404, as for another workspace's connection). Raw credentials
/// also need the API key permission `credentials:read`, which sessions never have.
#[rustfmt::skip]
const EXPECTED: &[(&str, [&str; 6])] = &[
    //               own                  others_personal      shared_use           shared_manage        other_ws             clients
    ("owner",       ["AAAAAAAAADAAAAAAA", "AADDADDADDDDDDDAA", "AAAAAAAAADAAAAAAA", "AAAAAAAAADAAAAAAA", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADAAAAADD"]),
    ("admin",       ["AAAAAAAAADAAAAAAA", "AADDADDADDDDDDDAA", "AAAAAAAAADAAAAAAA", "AAAAAAAAADAAAAAAA", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADAAAAADD"]),
    ("member",      ["AAAAAAAAADAAAAAAA", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD", "AAAAAAAAADAADAAAD", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD"]),
    ("client",      ["ADDDADDADDAADAAAA", "HDHHHHHHHHHHHHHHH", "HDHHHHHHHHHHHHHHH", "HDHHHHHHHHHHHHHHH", "HDHHHHHHHHHHHHHHH", "HDHHHHHHHHHHHHHHH"]),
    ("automation",  ["AAAAAAAAAAAADAAAA", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD", "AAAAAAAAAAAADAAAD", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD"]),
    ("key_as_user", ["AAAAAAAAAAAAAAAAA", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD", "AAAAAAAAAAAADAAAD", "HHHHHHHHHHHHHHHHH", "AAAAAAAAADDDDDDDD"]),
];

/// One endpoint called on connection `c` as `auth`: A, D or H (with the answer, for the table).
async fn outcome(kp: &Keyport, auth: &Auth, endpoint: &str, c: &Value) -> (char, String) {
    let id = c["id"].as_str().unwrap();
    let base = format!("/api/v1/connections/{id}");
    let (method, path, body) = match endpoint {
        "get" => (Method::GET, base.clone(), None),
        "list" => (
            Method::GET,
            "/api/v1/connections?limit=500".to_string(),
            None,
        ),
        "config" => (Method::GET, format!("{base}/config"), None),
        "config_post" => (Method::POST, format!("{base}/config"), Some(json!({}))),
        "deps" => (Method::GET, format!("{base}/dependents"), None),
        "dep_put" => (Method::PUT, format!("{base}/dependents/wf-1"), None),
        "dep_delete" => (Method::DELETE, format!("{base}/dependents/wf-1"), None),
        "audit" => (Method::GET, format!("{base}/audit"), None),
        "proxy" => (Method::GET, format!("{base}/proxy/me"), None),
        "creds" => (Method::GET, format!("{base}/credentials"), None),
        "refresh" => (Method::POST, format!("{base}/refresh"), None),
        "rename" => (
            Method::PATCH,
            base.clone(),
            Some(json!({"name": c["name"]})),
        ),
        "share" => (
            Method::PATCH,
            base.clone(),
            Some(
                json!({"visibility": c["visibility"], "permission": c["permission"].as_str().unwrap_or("manage")}),
            ),
        ),
        "apikey" => (
            Method::PUT,
            format!("{base}/api-key"),
            Some(json!({"api_key": GOOD_KEY})),
        ),
        "reconnect" => (Method::POST, format!("{base}/reconnect"), None),
        "revoke" => (Method::POST, format!("{base}/revoke"), None),
        "delete" => (Method::DELETE, base.clone(), None),
        other => unreachable!("{other}"),
    };
    let (s, b) = call(kp, auth, method, &path, body).await;
    if endpoint == "list" && s == 403 {
        return (
            'D',
            format!("{s} {}", b["error"]["message"].as_str().unwrap_or("")),
        );
    }
    if endpoint == "list" {
        assert_eq!(s, 200, "{b}");
        let listed = b["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id);
        return (if listed { 'A' } else { 'H' }, format!("listed: {listed}"));
    }
    let code = b["error"]["code"].as_str().unwrap_or_default();
    let letter = match (s, code) {
        (404, "not_found") => 'H',
        (403, "forbidden") => 'D',
        (404 | 403, _) => panic!("{endpoint}: {s} that keyport did not decide: {b}"),
        _ => 'A',
    };
    (
        letter,
        format!("{s} {}", b["error"]["message"].as_str().unwrap_or("")),
    )
}

async fn permission_matrix(db: Db) {
    let kp = Keyport::start(KeyportOpts {
        db,
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let provider = fake_key_provider().await;
    let overrides = json!({"endpoint_overrides": {"https://api.keytest.example": format!("http://{provider}")}});
    let (s, b) = kp
        .put("/api/v1/provider-apps/apikey-test", overrides.clone())
        .await;
    assert_eq!(s, 200, "{b}");
    // Another workspace, with a connection of its own.
    let (s, b) = kp.post("/api/v1/workspaces", json!({"id": "ws2"})).await;
    assert_eq!(s, 201, "{b}");
    let ws2_admin_key = api_key(&kp, "ws2", &[]).await;
    let ws2 = Auth::Key {
        key: ws2_admin_key,
        as_user: None,
    };
    let r = kp
        .http
        .put(format!("{}/api/v1/provider-apps/apikey-test", kp.url))
        .bearer_auth(ADMIN)
        .header("x-keyport-workspace", "ws2")
        .json(&overrides)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (_, other) = signed_in(&kp, "other@example.com", "member").await;
    let (client_id, _) = signed_in(&kp, "a-client@example.com", "client").await;
    let mut principals: Vec<(&str, Auth)> = Vec::new();
    let mut client_ids = std::collections::HashMap::new();
    for role in ["owner", "admin", "member", "client"] {
        let (id, auth) = signed_in(&kp, &format!("{role}@example.com"), role).await;
        client_ids.insert(role, id);
        principals.push((role, auth));
    }
    let automation = api_key(&kp, "default", &["credentials:read"]).await;
    principals.push((
        "automation",
        Auth::Key {
            key: automation,
            as_user: None,
        },
    ));
    let acting = api_key(&kp, "default", &["credentials:read", "act-as-user"]).await;
    principals.push((
        "key_as_user",
        Auth::Key {
            key: acting,
            as_user: Some("platform-user-42".into()),
        },
    ));

    let mut got: BTreeMap<(String, String), (String, Vec<String>)> = BTreeMap::new();
    for (role, auth) in &principals {
        // Fresh fixtures for each principal: its own connection, and another member's
        // personal, shared-at-use and shared-at-manage ones, and one in another workspace.
        // Clients connect through requests, not this API: theirs are made for them.
        let own = if *role == "client" {
            client_connection(&kp, &client_ids["client"], "client's own").await
        } else {
            connection(&kp, auth, &format!("{role}'s own")).await
        };
        let personal = connection(&kp, &other, "other's personal").await;
        let shared_use = connection(&kp, &other, "shared at use").await;
        share(&kp, &other, shared_use["id"].as_str().unwrap(), "use").await;
        let shared_manage = connection(&kp, &other, "shared at manage").await;
        share(&kp, &other, shared_manage["id"].as_str().unwrap(), "manage").await;
        let (_, shared_use) = kp
            .get(&format!(
                "/api/v1/connections/{}",
                shared_use["id"].as_str().unwrap()
            ))
            .await;
        let (_, shared_manage) = kp
            .get(&format!(
                "/api/v1/connections/{}",
                shared_manage["id"].as_str().unwrap()
            ))
            .await;
        let elsewhere = connection(&kp, &ws2, "in ws2").await;
        // A connection a client of the workspace authorized (shared with it at `use`).
        let clients = client_connection(&kp, &client_id, "a client's").await;
        for (rel, c) in RELATIONS.iter().zip([
            &own,
            &personal,
            &shared_use,
            &shared_manage,
            &elsewhere,
            &clients,
        ]) {
            let mut letters = String::new();
            let mut answers = Vec::new();
            for ep in ENDPOINTS {
                let (l, answer) = outcome(&kp, auth, ep, c).await;
                letters.push(l);
                answers.push(format!("{ep}: {answer}"));
            }
            got.insert((role.to_string(), rel.to_string()), (letters, answers));
        }
    }

    let mut table = format!(
        "{:<12} {:<16} {:<16} {}\n",
        "principal", "relation", "expected", "got"
    );
    let mut wrong = Vec::new();
    for (role, rows) in EXPECTED {
        for (rel, expected) in RELATIONS.iter().zip(rows) {
            let (letters, answers) = &got[&(role.to_string(), rel.to_string())];
            let mark = if letters == expected {
                ""
            } else {
                "   <- differs"
            };
            table.push_str(&format!(
                "{role:<12} {rel:<16} {expected:<16} {letters}{mark}\n"
            ));
            if letters != expected {
                for (i, (e, g)) in expected.chars().zip(letters.chars()).enumerate() {
                    if e != g {
                        wrong.push(format!(
                            "{role} × {rel} × {}: expected {e}, got {g} ({})",
                            ENDPOINTS[i], answers[i]
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "endpoints: {}\n{table}\n{}",
        ENDPOINTS.join(" "),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn permission_matrix_on_sqlite() {
    permission_matrix(Db::Sqlite).await;
}

#[tokio::test]
async fn permission_matrix_on_postgres() {
    permission_matrix(Db::Postgres).await;
}

/// The audit log names who acted: user id and email, API key id and name and the user it acted
/// for, or the admin token.
#[tokio::test]
async fn audit_rows_name_the_principal() {
    let kp = Keyport::start(KeyportOpts {
        master_keys: Some(master_keys()),
        ..Default::default()
    })
    .await;
    let provider = fake_key_provider().await;
    kp.put(
        "/api/v1/provider-apps/apikey-test",
        json!({"endpoint_overrides": {"https://api.keytest.example": format!("http://{provider}")}}),
    )
    .await;
    let (uid, alice) = signed_in(&kp, "alice@example.com", "member").await;
    let a = connection(&kp, &alice, "alice's").await;
    let key = api_key(&kp, "default", &["act-as-user"]).await;
    let (s, kid) = kp.get("/api/v1/api-keys").await;
    assert_eq!(s, 200);
    let key_id = kid["api_keys"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let acting = Auth::Key {
        key,
        as_user: Some("ext-7".into()),
    };
    let b = connection(&kp, &acting, "platform user's").await;
    let c = connection(&kp, &Auth::Admin, "the workspace's").await;
    let actor_of = |v: Value| v["events"][0]["actor"].as_str().unwrap().to_string();
    let (_, ev) = kp
        .get(&format!(
            "/api/v1/connections/{}/audit",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(actor_of(ev), format!("user:{uid} <alice@example.com>"));
    let (_, ev) = kp
        .get(&format!(
            "/api/v1/connections/{}/audit",
            b["id"].as_str().unwrap()
        ))
        .await;
    let actor = actor_of(ev);
    assert!(
        actor.starts_with(&format!(
            "api-key:{key_id} (key [\"act-as-user\"]) for user:usr_"
        )) && actor.ends_with("<ext-7>"),
        "{actor}"
    );
    let (_, ev) = kp
        .get(&format!(
            "/api/v1/connections/{}/audit",
            c["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(actor_of(ev), "admin");
    // New connections: a user's are personal, the workspace's are shared at manage.
    assert_eq!(a["visibility"], "personal");
    assert_eq!(a["owner"]["user_id"], uid.as_str());
    assert_eq!(b["visibility"], "personal");
    assert_eq!(c["visibility"], "shared");
    assert_eq!(c["permission"], "manage");
    assert!(c["owner"].is_null());
    // The workspace's connection cannot become personal; the error says why.
    let (s, e) = kp
        .patch(
            &format!("/api/v1/connections/{}", c["id"].as_str().unwrap()),
            json!({"visibility": "personal"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("belongs to the workspace"),
        "{e}"
    );
    // A key without act-as-user may not send X-Keyport-User.
    let plain = api_key(&kp, "default", &[]).await;
    let (s, e) = call(
        &kp,
        &Auth::Key {
            key: plain,
            as_user: Some("ext-7".into()),
        },
        Method::GET,
        "/api/v1/connections",
        None,
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("act-as-user"),
        "{e}"
    );
}

/// Sessions: every sign-in gets a new session id; a wrong password and an unknown email answer
/// alike; disabling a user ends their sessions at once; changing the password and "sign out
/// everywhere" end every session of the user.
#[tokio::test]
async fn sessions_are_new_at_sign_in_and_end_when_the_user_is_disabled() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (uid, first) = signed_in(&kp, "bob@example.com", "member").await;
    let (_, second, _) = sign_in(&kp, "bob@example.com", "correct horse battery").await;
    let second = second.unwrap();
    let cookie = |a: &Auth| match a {
        Auth::Session { cookie, .. } => cookie.clone(),
        _ => unreachable!(),
    };
    assert_ne!(
        cookie(&first),
        cookie(&second),
        "each sign-in starts a new session"
    );
    // A session id planted before sign-in is not adopted.
    let resp = kp
        .http
        .post(format!("{}/api/v1/auth/password", kp.url))
        .header("cookie", "keyport-session=attacker-chosen-value")
        .json(&json!({"email": "bob@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let set = set_cookie_headers(resp.headers()).join(";");
    assert!(!set.contains("attacker-chosen-value"), "{set}");
    assert!(set.contains("keyport-session="), "{set}");
    let (s, me) = call(&kp, &first, Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"]["email"], "bob@example.com");
    assert_eq!(me["role"], "member");

    let (s1, _, e1) = sign_in(&kp, "bob@example.com", "wrong password!").await;
    let (s2, _, e2) = sign_in(&kp, "nobody@example.com", "wrong password!").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        e1["error"]["message"], e2["error"]["message"],
        "no hint which one was wrong"
    );

    // Disabled: both sessions end at once, and the password no longer signs in.
    let (s, b) = kp
        .patch(&format!("/api/v1/users/{uid}"), json!({"disabled": true}))
        .await;
    assert_eq!(s, 200, "{b}");
    for a in [&first, &second] {
        let (s, b) = call(&kp, a, Method::GET, "/api/v1/me", None).await;
        assert_eq!(s, 401, "{b}");
    }
    let (s, _, b) = sign_in(&kp, "bob@example.com", "correct horse battery").await;
    assert_eq!(s, 403, "{b}");
    kp.patch(&format!("/api/v1/users/{uid}"), json!({"disabled": false}))
        .await;

    // Changing the password ends every session; the new one signs in, the old does not.
    let (_, a, _) = sign_in(&kp, "bob@example.com", "correct horse battery").await;
    let a = a.unwrap();
    let (_, b, _) = sign_in(&kp, "bob@example.com", "correct horse battery").await;
    let b = b.unwrap();
    let (s, e) = call(&kp, &a, Method::POST, "/api/v1/auth/password/change",
        Some(json!({"current_password": "correct horse battery", "new_password": "a much better passphrase"}))).await;
    assert_eq!(s, 204, "{e}");
    for x in [&a, &b] {
        assert_eq!(call(&kp, x, Method::GET, "/api/v1/me", None).await.0, 401);
    }
    assert_eq!(
        sign_in(&kp, "bob@example.com", "correct horse battery")
            .await
            .0,
        401
    );
    let (s, c, _) = sign_in(&kp, "bob@example.com", "a much better passphrase").await;
    assert_eq!(s, 200);
    let c = c.unwrap();
    let (_, d, _) = sign_in(&kp, "bob@example.com", "a much better passphrase").await;
    let d = d.unwrap();
    let (s, e) = call(
        &kp,
        &c,
        Method::POST,
        "/api/v1/auth/sign-out-everywhere",
        None,
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["ended_sessions"], 2);
    assert_eq!(call(&kp, &d, Method::GET, "/api/v1/me", None).await.0, 401);
}

/// An invitation travels by email: invite → the mail arrives at a real SMTP server → the link's
/// token accepts once, sets the password, signs in with the role; a second use is refused.
#[tokio::test]
async fn an_invitation_is_mailed_and_accepted_once() {
    let smtp = common::smtp::Smtp::start();
    let kp = Keyport::start(KeyportOpts {
        env: vec![
            ("KEYPORT_SMTP_URL".into(), smtp.url()),
            (
                "KEYPORT_MAIL_FROM".into(),
                "keyport <noreply@keyport.test>".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let (s, inv) = kp
        .post(
            "/api/v1/invitations",
            json!({"email": "Carol@Example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(s, 201, "{inv}");
    assert_eq!(inv["emailed"], true, "{inv}");
    assert_eq!(inv["email"], "carol@example.com");
    let mail = smtp.wait_for("carol@example.com").await;
    assert!(
        mail.contains("From: keyport <noreply@keyport.test>"),
        "{mail}"
    );
    let link = common::smtp::link_in(&mail);
    assert_eq!(
        link,
        inv["link"].as_str().unwrap(),
        "the mail carries the link shown once"
    );
    assert!(
        link.starts_with(&format!("{}/invite#inv_", kp.url)),
        "{link}"
    );
    let token = link.split_once('#').unwrap().1.to_string();
    // Listing never shows the link.
    let (_, list) = kp.get("/api/v1/invitations").await;
    assert!(!list.to_string().contains(&token), "{list}");
    assert_eq!(list["invitations"][0]["email"], "carol@example.com");

    let (s, d) = kp
        .post("/api/v1/invitations/lookup", json!({"token": token}))
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["role"], "admin");
    assert_eq!(d["account_exists"], false);
    let (s, e) = kp
        .post(
            "/api/v1/invitations/accept",
            json!({"token": token, "password": "short"}),
        )
        .await;
    assert_eq!(
        s, 422,
        "a short password is refused and the invitation stays open: {e}"
    );
    let resp = kp
        .http
        .post(format!("{}/api/v1/invitations/accept", kp.url))
        .json(&json!({"token": token, "password": "carol's long passphrase", "display_name": "Carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = set_cookie_headers(resp.headers())[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: Value = resp.json().await.unwrap();
    let carol = Auth::Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().into(),
    };
    let (s, me) = call(&kp, &carol, Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["user"]["email"], "carol@example.com");
    let (s, e) = kp
        .post(
            "/api/v1/invitations/accept",
            json!({"token": token, "password": "carol's long passphrase"}),
        )
        .await;
    assert_eq!(s, 404, "single use: {e}");
    assert_eq!(
        sign_in(&kp, "carol@example.com", "carol's long passphrase")
            .await
            .0,
        200
    );
    // Admins invite members but not owners.
    let (s, e) = call(
        &kp,
        &carol,
        Method::POST,
        "/api/v1/invitations",
        Some(json!({"email": "dan@example.com", "role": "owner"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, e) = call(
        &kp,
        &carol,
        Method::POST,
        "/api/v1/invitations",
        Some(json!({"email": "dan@example.com", "role": "member"})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    smtp.wait_for("dan@example.com").await;
}

/// Members: owners manage roles; the last owner stays; removing a member ends their access to
/// the workspace.
#[tokio::test]
async fn members_are_listed_changed_and_removed() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let (owner_id, owner) = signed_in(&kp, "olivia@example.com", "owner").await;
    let (mid, member) = signed_in(&kp, "mike@example.com", "member").await;
    let (s, list) = call(
        &kp,
        &member,
        Method::GET,
        "/api/v1/workspaces/default/members",
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
    // A member cannot change roles.
    let (s, e) = call(
        &kp,
        &member,
        Method::PUT,
        &format!("/api/v1/workspaces/default/members/{mid}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (s, e) = call(
        &kp,
        &owner,
        Method::PUT,
        &format!("/api/v1/workspaces/default/members/{mid}"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["role"], "admin");
    let (s, e) = call(
        &kp,
        &owner,
        Method::PUT,
        &format!("/api/v1/workspaces/default/members/{owner_id}"),
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(s, 409, "the last owner stays: {e}");
    let (s, _) = call(
        &kp,
        &owner,
        Method::DELETE,
        &format!("/api/v1/workspaces/default/members/{mid}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, e) = call(&kp, &member, Method::GET, "/api/v1/connections", None).await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a member"),
        "{e}"
    );
}

/// A revoked API key stops working at once on the replica that revoked it and within one second
/// on another replica sharing the PostgreSQL database.
#[tokio::test]
async fn api_key_revocation_reaches_every_replica_within_a_second() {
    let a = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        ..Default::default()
    })
    .await;
    let b = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        database_url: Some(a.db_url()),
        ..Default::default()
    })
    .await;
    let (s, k) = a.post("/api/v1/api-keys", json!({"name": "ci"})).await;
    assert_eq!(s, 201, "{k}");
    let key = Auth::Key {
        key: k["key"].as_str().unwrap().into(),
        as_user: None,
    };
    for kp in [&a, &b] {
        assert_eq!(
            call(kp, &key, Method::GET, "/api/v1/connections", None)
                .await
                .0,
            200
        );
    }
    let (s, list) = a.get("/api/v1/api-keys").await;
    assert_eq!(s, 200);
    assert!(
        !list.to_string().contains(k["key"].as_str().unwrap()),
        "never the key: {list}"
    );
    assert!(list["api_keys"][0]["last_used_at"].is_string(), "{list}");
    let (s, _) = a
        .delete(&format!("/api/v1/api-keys/{}", k["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 204);
    let revoked = Instant::now();
    assert_eq!(
        call(&a, &key, Method::GET, "/api/v1/connections", None)
            .await
            .0,
        401,
        "at once here"
    );
    loop {
        let (s, _) = call(&b, &key, Method::GET, "/api/v1/connections", None).await;
        if s == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the other replica still accepts the key after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, list) = a.get("/api/v1/api-keys").await;
    assert_eq!(s, 200);
    assert_eq!(list["api_keys"].as_array().unwrap().len(), 0);
}

/// An installation from before people upgrades in place: its connections get no owner and stay
/// shared with the workspace at `manage`, so members use and manage them; the admin token and
/// the API keys it made keep working. The database is made by keyport, then brought back to the
/// previous release's schema (the people migration undone and its record removed), so the
/// upgrade runs on rows the previous release wrote.
#[tokio::test]
async fn a_database_from_before_people_upgrades_in_place() {
    let kp = Keyport::start(KeyportOpts {
        db: Db::Postgres,
        ..Default::default()
    })
    .await;
    let provider = fake_key_provider().await;
    kp.put(
        "/api/v1/provider-apps/apikey-test",
        json!({"endpoint_overrides": {"https://api.keytest.example": format!("http://{provider}")}}),
    )
    .await;
    let c = connection(&kp, &Auth::Admin, "from the old days").await;
    let id = c["id"].as_str().unwrap().to_string();
    let (_, k) = kp
        .post("/api/v1/api-keys", json!({"name": "old automation"}))
        .await;
    let old_key = Auth::Key {
        key: k["key"].as_str().unwrap().into(),
        as_user: None,
    };
    let db_url = kp.db_url();
    let (data, pg) = kp.stop();
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
        // Undoes migrations/postgres/0014_background_sweep_indexes.sql,
        // 0013_connection_listing_index.sql, 0012_hidden_connectors.sql,
        // 0011_connection_requests.sql and 0010_people.sql (keep them in step).
        for stmt in [
            "DROP INDEX connections_abandoned",
            "DROP INDEX oauth_flows_by_connection",
            "DROP INDEX oauth_flows_by_expiry",
            "DELETE FROM _sqlx_migrations WHERE version = 14",
            "DROP INDEX connections_listing",
            "DELETE FROM _sqlx_migrations WHERE version = 13",
            "DROP TABLE hidden_connectors",
            "DELETE FROM _sqlx_migrations WHERE version = 12",
            "DROP TABLE sign_in_links",
            "DROP TABLE connection_requests",
            "ALTER TABLE oauth_flows DROP COLUMN request_id",
            "ALTER TABLE workspaces DROP COLUMN logo",
            "ALTER TABLE workspaces DROP COLUMN members_may_request",
            "DELETE FROM _sqlx_migrations WHERE version = 11",
            "DROP TABLE sso_flows",
            "ALTER TABLE provider_apps DROP COLUMN require_account_email_match",
            "DROP TABLE invitations",
            "DROP TABLE memberships",
            "DROP TABLE users",
            "DROP INDEX connections_by_owner",
            "ALTER TABLE connections DROP COLUMN owner_user_id, DROP COLUMN visibility, DROP COLUMN share_permission",
            "ALTER TABLE ui_sessions DROP COLUMN user_id",
            "ALTER TABLE api_keys DROP COLUMN last_used_at",
            "DELETE FROM _sqlx_migrations WHERE version = 10",
        ] {
            sqlx::query(stmt)
                .execute(&mut db)
                .await
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
    }
    let kp = Keyport::start_in(
        data,
        pg,
        KeyportOpts {
            db: Db::Postgres,
            ..Default::default()
        },
    );
    let (s, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(s, 200, "the admin token keeps working: {c}");
    assert!(c["owner"].is_null(), "{c}");
    assert_eq!(c["visibility"], "shared");
    assert_eq!(c["permission"], "manage");
    assert_eq!(
        call(
            &kp,
            &old_key,
            Method::GET,
            &format!("/api/v1/connections/{id}/proxy/me"),
            None
        )
        .await
        .0,
        200
    );
    let (_, member) = signed_in(&kp, "newcomer@example.com", "member").await;
    let (s, list) = call(&kp, &member, Method::GET, "/api/v1/connections", None).await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str())
    );
    let (s, b) = call(
        &kp,
        &member,
        Method::GET,
        &format!("/api/v1/connections/{id}/proxy/me"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &kp,
        &member,
        Method::POST,
        &format!("/api/v1/connections/{id}/refresh"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &kp,
        &member,
        Method::POST,
        &format!("/api/v1/connections/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "revoked");
}

/// `require_account_email_match`: with it on, an OAuth connection activates only when the
/// provider account's email is the connecting person's; another account is refused, its tokens
/// revoked and deleted, with the expected email named.
#[tokio::test]
async fn a_provider_app_can_require_the_account_to_be_the_connecting_persons() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let (s, app) = kp
        .put(
            "/api/v1/provider-apps/oidc-test",
            json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "require_account_email_match": true}),
        )
        .await;
    assert_eq!(s, 200, "{app}");
    assert_eq!(app["require_account_email_match"], true);
    assert!(
        app["endpoint_overrides"].to_string().contains(&oidc.issuer),
        "overrides kept: {app}"
    );
    let (_, ada) = signed_in(&kp, "ada@example.com", "member").await;
    let Auth::Session { cookie, .. } = &ada else {
        unreachable!()
    };
    let connect = |as_who: &'static str| {
        let (kp, ada, cookie) = (&kp, &ada, cookie.clone());
        async move {
            let (s, started) = call(
                kp,
                ada,
                Method::POST,
                "/api/v1/connections/oauth/start",
                Some(json!({"connector": "oidc-test", "scopes": ["email"]})),
            )
            .await;
            assert_eq!(s, 201, "{started}");
            let browser = Browser::new();
            browser.add_cookie(&kp.url, &cookie);
            let done = browser
                .connect(started["authorize_url"].as_str().unwrap(), as_who)
                .await;
            assert_eq!(done.status, 303, "{}", done.body);
            let id = started["connection_id"].as_str().unwrap().to_string();
            (id, done.location.unwrap())
        }
    };
    // Ada's own account (oidc-provider's user "ada" is ada@example.com).
    let (id, location) = connect("ada").await;
    assert!(location.contains("status=active"), "{location}");
    let (_, c) = call(
        &kp,
        &ada,
        Method::GET,
        &format!("/api/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(c["status"], "active", "{c}");
    assert_eq!(c["account"]["email"], "ada@example.com");
    // Someone else's account.
    let (id, location) = connect("bob").await;
    assert!(location.contains("error=account_mismatch"), "{location}");
    let (_, c) = call(
        &kp,
        &ada,
        Method::GET,
        &format!("/api/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(c["status"], "revoked", "{c}");
    let reason = c["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("expected the account of ada@example.com"),
        "{reason}"
    );
    assert!(reason.contains("bob@example.com"), "{reason}");
    assert_eq!(
        kp.read_secret(&id, "access_token").await,
        None,
        "the wrong account's tokens are gone"
    );
    assert_eq!(kp.read_secret(&id, "refresh_token").await, None);
}
