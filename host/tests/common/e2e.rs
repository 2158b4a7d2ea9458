//! End-to-end harness: a real `keyport serve` process, a real OAuth server (`oidc-provider` from
//! npm, in `tests/oidc/`), a scripted browser, and PostgreSQL on 127.0.0.1:5432.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

pub const ADMIN: &str = "kpa_test_admin_token_0123456789";
pub const CLIENT_ID: &str = "keyport-e2e";
pub const CLIENT_SECRET: &str = "oidc-client-secret-6f1d0c2e9a7b";

/// Which database a keyport process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

use super::python::repo_root;

/// A fresh PostgreSQL database on 127.0.0.1:5432, dropped on drop. Fails loudly when PostgreSQL
/// is unreachable: the PostgreSQL suite never skips silently.
pub struct PgDb {
    pub url: String,
    name: String,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and is not reachable at {PG_ADMIN}: {e}\n\
                 Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) \
                 or point the tests at your server."
            )
        });
        let name = format!("keyport_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        PgDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on its own thread: we may be inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(PG_ADMIN).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            })
        })
        .join();
    }
}

/// A running `keyport serve`.
pub struct Keyport {
    child: Child,
    pub url: String,
    pub log: Arc<Mutex<String>>,
    pub data: tempfile::TempDir,
    pub http: reqwest::Client,
    _pg: Option<PgDb>,
}

pub struct KeyportOpts {
    pub db: Db,
    pub rust_log: String,
    pub master_keys: Option<String>,
    /// Share another process's database (e.g. two replicas on one PostgreSQL).
    pub database_url: Option<String>,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
}

impl Default for KeyportOpts {
    fn default() -> Self {
        KeyportOpts {
            db: Db::Sqlite,
            rust_log: "info".into(),
            master_keys: None,
            database_url: None,
            env: Vec::new(),
        }
    }
}

pub fn master_keys() -> String {
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

impl Keyport {
    pub async fn start(opts: KeyportOpts) -> Keyport {
        let data = tempfile::tempdir().unwrap();
        let pg = match opts.db {
            Db::Postgres => Some(PgDb::create().await),
            Db::Sqlite => None,
        };
        Self::start_in(data, pg, opts)
    }

    pub fn start_in(data: tempfile::TempDir, pg: Option<PgDb>, opts: KeyportOpts) -> Keyport {
        let connectors = data.path().join("connectors");
        std::fs::create_dir_all(&connectors).unwrap();
        for (name, path) in [
            ("oidc_test.wasm", keyport_test_artifacts::OIDC_TEST),
            ("apikey_test.wasm", keyport_test_artifacts::APIKEY_TEST),
        ] {
            std::fs::copy(path, connectors.join(name)).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyport"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .arg("--connectors-dir")
            .arg(&connectors)
            .env("KEYPORT_ALLOW_LOOPBACK", "1")
            .env(
                "KEYPORT_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyport-component-cache"),
            )
            .env("KEYPORT_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", &opts.rust_log)
            .env("NO_COLOR", "1")
            .env_remove("KEYPORT_DATABASE_URL")
            .env_remove("KEYPORT_PUBLIC_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &opts.master_keys {
            Some(k) => cmd.env("KEYPORT_MASTER_KEYS", k),
            None => cmd.env_remove("KEYPORT_MASTER_KEYS"),
        };
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
            if opts.master_keys.is_none() {
                cmd.env("KEYPORT_MASTER_KEYS", master_keys());
            }
        } else if let Some(pg) = &pg {
            cmd.arg("--database-url").arg(&pg.url);
            if opts.master_keys.is_none() {
                cmd.env("KEYPORT_MASTER_KEYS", master_keys());
            }
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        {
            let out = child.stdout.take().unwrap();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&line);
                    log.lock().unwrap().push('\n');
                }
            });
        }
        {
            let err = child.stderr.take().unwrap();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    {
                        let mut l = log.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                    if let Some(rest) = line.trim().strip_prefix("keyport is running. Open ") {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .trim_end_matches('/')
                            .to_string();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Some(url));
                        }
                    }
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(None);
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(url)) => url,
            _ => panic!("keyport serve did not start:\n{}", log.lock().unwrap()),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Keyport {
            child,
            url,
            log,
            data,
            http,
            _pg: pg,
        }
    }

    /// Stops the process (SIGKILL) and returns the data directory and database for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, Option<PgDb>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        let pg = self._pg.take();
        (data, pg)
    }

    /// Stops the host as a service manager would (SIGTERM) and waits up to 30 s for it to exit;
    /// its exit status (`None`: it did not exit and was killed), and its data as [`Keyport::stop`]
    /// returns them.
    pub fn terminate(
        mut self,
    ) -> (
        Option<std::process::ExitStatus>,
        tempfile::TempDir,
        Option<PgDb>,
    ) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let (data, pg) = self.stop();
                return (Some(status), data, pg);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (data, pg) = self.stop();
        (None, data, pg)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        super::conformance::check(method.as_str(), path, status, &body);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.api(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.api(reqwest::Method::DELETE, path, None).await
    }

    /// Configures the oidc-test provider app to point at `oidc`.
    pub async fn configure_oidc(&self, oidc: &Oidc) {
        let (s, body) = self
            .put(
                "/api/v1/provider-apps/oidc-test",
                json!({
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "endpoint_overrides": {"https://oidc.keyport.test": oidc.issuer},
                }),
            )
            .await;
        assert_eq!(s, 200, "{body}");
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.url)
    }
}

impl Drop for Keyport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running oidc-provider.
pub struct Oidc {
    child: Child,
    pub issuer: String,
    pub log: Arc<Mutex<String>>,
}

/// Installs the OAuth server's npm packages when missing, or says exactly what to run.
fn ensure_npm_packages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| npm_ci("tests/oidc", "oidc-provider", "the OAuth tests"));
}

/// `npm ci` in `dir` (relative to the repository) unless the package `probe` is installed there;
/// `what` names the tests that need it in the message that says what to run.
pub fn npm_ci(dir: &str, probe: &str, what: &str) {
    let dir = repo_root().join(dir);
    if dir
        .join(format!("node_modules/{probe}/package.json"))
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{what} need Node.js and npm ({e}); install them, then run `npm ci` in {}",
                dir.display()
            )
        });
    assert!(
        status.success(),
        "`npm ci` failed in {}; run it there and fix what it reports",
        dir.display()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Oidc {
    pub fn start(redirect_uri: &str) -> Oidc {
        Self::start_with(redirect_uri, &[])
    }

    pub fn start_with(redirect_uri: &str, env: &[(&str, &str)]) -> Oidc {
        ensure_npm_packages();
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .arg(port.to_string())
            .arg(redirect_uri)
            .arg(CLIENT_ID)
            .arg(CLIENT_SECRET)
            .current_dir(repo_root().join("tests/oidc"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node is required for the OAuth tests");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    let _ = tx.send(issuer.to_string());
                }
                l.lock().unwrap().push_str(&line);
            }
        });
        let err = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("oidc-provider did not start: {}", log.lock().unwrap()));
        Oidc { child, issuer, log }
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted browser: its own cookie jar, no automatic redirects.
pub struct Browser {
    pub http: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

/// What the browser saw at the end of an authorization.
pub struct Finished {
    /// The callback URL the provider redirected to (with code and state).
    pub callback_url: String,
    /// keyport's response to the callback.
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Browser {
    pub fn new() -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Browser { http, jar }
    }

    /// Adds a cookie (`name=value`) for `url`, e.g. a keyport session signed in elsewhere.
    pub fn add_cookie(&self, url: &str, cookie: &str) {
        self.jar.add_cookie_str(cookie, &url.parse().unwrap());
    }

    /// Cookies the jar would send to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// GET without following redirects: (status, location, body).
    pub async fn get(&self, url: &str) -> (u16, Option<String>, String) {
        let r = self.http.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        (status, location, r.text().await.unwrap())
    }

    /// Opens keyport's launch link and logs in and consents at oidc-provider as `user`; stops
    /// at the redirect to keyport's callback, which it returns (not yet followed).
    pub async fn authorize_at_provider(&self, launch_url: &str, user: &str, deny: bool) -> String {
        let (s, loc, body) = self.get(launch_url).await;
        assert!(
            (300..400).contains(&s),
            "launch answers a redirect to the provider: {s} {body}"
        );
        let mut next = url::Url::parse(launch_url)
            .unwrap()
            .join(&loc.unwrap())
            .unwrap()
            .to_string();
        for _ in 0..20 {
            if next.contains("/oauth/callback") || next.contains("/sso/callback") {
                return next;
            }
            // Steered straight to the provider, the first stop may be its interaction page.
            let (s, loc, _) = if next.contains("/interaction/") {
                (302, Some(next.clone()), String::new())
            } else {
                self.get(&next).await
            };
            assert!(
                (300..400).contains(&s),
                "expected a redirect at {next}, got {s}"
            );
            let loc = loc.unwrap();
            let abs = url::Url::parse(&next)
                .unwrap()
                .join(&loc)
                .unwrap()
                .to_string();
            if abs.contains("/interaction/") {
                let (s, _, page) = self.get(&abs).await;
                assert_eq!(s, 200, "interaction page");
                let prompt = if page.contains("name=\"login\"") {
                    "login"
                } else {
                    "consent"
                };
                if deny {
                    let (_, loc, _) = self.get(&format!("{abs}/abort")).await;
                    next = url::Url::parse(&abs)
                        .unwrap()
                        .join(&loc.unwrap())
                        .unwrap()
                        .to_string();
                    continue;
                }
                let form: Vec<(&str, &str)> = if prompt == "login" {
                    vec![("prompt", "login"), ("login", user), ("password", "any")]
                } else {
                    vec![("prompt", "consent")]
                };
                let r = self.http.post(&abs).form(&form).send().await.unwrap();
                assert!(
                    r.status().is_redirection(),
                    "{prompt} submit: {}",
                    r.status()
                );
                let loc = r
                    .headers()
                    .get(LOCATION)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                next = url::Url::parse(&abs)
                    .unwrap()
                    .join(&loc)
                    .unwrap()
                    .to_string();
            } else {
                next = abs;
            }
        }
        panic!("the authorization did not reach keyport's callback");
    }

    /// Follows the provider's redirect into keyport's callback.
    pub async fn finish(&self, callback_url: &str) -> Finished {
        let r = self.http.get(callback_url).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let location = headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        Finished {
            callback_url: callback_url.into(),
            status,
            location,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    /// The whole dance: launch, login, consent, callback.
    pub async fn connect(&self, launch_url: &str, user: &str) -> Finished {
        let cb = self.authorize_at_provider(launch_url, user, false).await;
        self.finish(&cb).await
    }
}

/// Requests the callback with no cookies at all (another browser).
pub async fn replay_without_cookies(callback_url: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(callback_url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The query parameters of a URL.
pub fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Calls oidc-provider's token endpoint directly (to prove a refresh token is dead).
pub async fn oidc_refresh(oidc: &Oidc, refresh_token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/token", oidc.issuer))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub fn set_cookie_headers(h: &reqwest::header::HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Reads and decrypts a stored secret of the `default` workspace straight from the database at
/// `db_url` (test-only: proves what is stored, also after its process was killed).
pub async fn read_secret_at(db_url: &str, owner: &str, field: &str) -> Option<String> {
    let store = keyport::store::Store::connect(db_url).await.unwrap();
    let ws = "default";
    let ct = store.secret(ws, owner, field).await.unwrap()?;
    let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
    let plain = ring
        .open_string(
            &ct,
            keyport::vault::Context {
                workspace: ws,
                row: owner,
                field,
            },
        )
        .unwrap();
    Some(plain.to_string())
}

pub fn cookie_header(h: &str) -> (reqwest::header::HeaderName, String) {
    (COOKIE, h.to_string())
}

impl Keyport {
    /// The database URL this process uses.
    pub fn db_url(&self) -> String {
        match &self._pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite:{}", self.data.path().join("keyport.db").display()),
        }
    }

    /// Reads and decrypts a stored secret straight from the database (test-only: proves what is
    /// stored, and lets tests check tokens at the provider).
    pub async fn read_secret(&self, owner: &str, field: &str) -> Option<String> {
        read_secret_at(&self.db_url(), owner, field).await
    }

    /// Configures the `oidc-test` provider app with the test client and points the connector's
    /// placeholder origin at `issuer` (oidc-provider or a fake authorization server).
    pub async fn point_oidc_test_at(&self, issuer: &str) {
        let (s, b) = self
            .put(
                "/api/v1/provider-apps/oidc-test",
                serde_json::json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "endpoint_overrides": {"https://oidc.keyport.test": issuer}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Points the `apikey-test` provider app's API at `base` (a fake provider on loopback).
    pub async fn point_apikey_test_at(&self, base: &str) {
        let (s, b) = self
            .put(
                "/api/v1/provider-apps/apikey-test",
                serde_json::json!({"endpoint_overrides": {"https://api.keytest.example": base}}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Seeds `n` active `oidc-test` connections `{prefix}{i}` straight into the database, with
    /// tokens `fake-at-{i}-0` / `fake-rt-{i}-0` that expire at `expires_at` and a refresh due at
    /// `due` (Unix ms).
    pub async fn seed_oauth(&self, prefix: &str, n: usize, expires_at: i64, due: i64) {
        let store = keyport::store::Store::connect(&self.db_url())
            .await
            .unwrap();
        let ring = keyport::vault::KeyRing::parse(&master_keys(), None).unwrap();
        keyport::seed::oauth_connections(
            &store,
            &ring,
            &keyport::seed::Spec {
                workspace: "default",
                connector: "oidc-test",
                start: 0,
                count: n,
                prefix,
                expires_at,
                next_refresh_at: due,
                tokens: &|i| (format!("fake-at-{i}-0"), format!("fake-rt-{i}-0")),
            },
            |_| {},
        )
        .await
        .unwrap();
    }

    /// Runs SQL against the process's database (test set-up only).
    pub async fn sql(&self, statement: &str) {
        let store = keyport::store::Store::connect(&self.db_url())
            .await
            .unwrap();
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }

    /// Polls a connection until `pred` holds (the account lookup may land a moment later).
    pub async fn wait_for(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (_, c) = self.get(&format!("/api/v1/connections/{id}")).await;
            if pred(&c) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, c) = self.get(&format!("/api/v1/connections/{id}")).await;
        panic!("connection never reached the expected state: {c}");
    }
}
