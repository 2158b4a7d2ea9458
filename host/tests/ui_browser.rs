//! The web UI in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven
//! through WebDriver against a real `keyport serve`, a real OAuth server (`oidc-provider`) and a
//! fake API-key provider: sign in; connect an API-key connection and an OAuth connection through
//! the popup; "Connected as"; refresh; config with a validation error, then saved; revoke
//! through the dialog; delete refused while a dependent exists; the blocked-popup fallback.
//! Each test saves a screenshot of the page it checks under `target/ui-screenshots/` (or
//! `$KEYPORT_SCREENSHOT_DIR`).

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::*;
use common::{GOOD_KEY, fake_key_provider};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// A running ChromeDriver and a browser session through it.
struct Chrome {
    client: Client,
    driver: Child,
    /// The browser profile, removed with the test.
    _profile: tempfile::TempDir,
}

impl Drop for Chrome {
    /// ChromeDriver runs in its own process group with the browser it started: kill the group,
    /// so no browser outlives its test (also when the test panicked).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_binary(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for n in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = PathBuf::from(dir).join(n);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "the browser tests need Chromium and ChromeDriver: `apt-get install chromium chromium-driver` (or set {env})"
    );
}

impl Chrome {
    async fn start(extra_args: &[&str]) -> Chrome {
        let driver_bin = find_binary("KEYPORT_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_binary(
            "KEYPORT_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The browser's profile and scratch files (TMPDIR), removed with the test.
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new(driver_bin)
            .env("TMPDIR", profile.path())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let profile_arg = format!("--user-data-dir={}", profile.path().display());
        let mut args = vec![
            profile_arg.as_str(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
        ];
        if !extra_args.iter().any(|a| a.starts_with("--window-size")) {
            args.push("--window-size=1280,1000");
        }
        args.extend_from_slice(extra_args);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        let started = Instant::now();
        let client = loop {
            // WebDriver on loopback: plain HTTP, no TLS stack.
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("could not start a Chromium session through chromedriver: {e}"),
            }
        };
        Chrome {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::env::var("KEYPORT_SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join("..")
                    .join("ui-screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    async fn click(&self, css: &str) {
        self.wait_visible(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_visible(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn wait_visible(&self, css: &str) -> fantoccini::elements::Element {
        let t = Instant::now();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && el.is_displayed().await.unwrap_or(false)
            {
                return el;
            }
            if t.elapsed() > Duration::from_secs(20) {
                panic!("{css} never became visible on {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element's text contains `needle`; returns the text.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(els) = self.client.find_all(Locator::Css(css)).await {
                for el in els {
                    if let Ok(text) = el.text().await {
                        if text.contains(needle) {
                            return text;
                        }
                        last = text;
                    }
                }
            }
            if t.elapsed() > Duration::from_secs(20) {
                panic!(
                    "{css} never contained {needle:?} on {} (last text: {last:?})",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn exists(&self, css: &str) -> bool {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| !v.is_empty())
            .unwrap_or(false)
    }

    async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    async fn sign_in(&self, kp: &Keyport) {
        self.goto(&format!("{}/", kp.url)).await;
        self.type_into("#token", ADMIN).await;
        self.click("main form button[type=submit]").await;
        self.wait_text("h1", "Integrations").await;
    }

    /// Clicks `css` and switches to the popup it opens; returns the main window.
    async fn open_popup(&self, css: &str) -> fantoccini::wd::WindowHandle {
        let main = self.client.window().await.unwrap();
        self.click(css).await;
        let t = Instant::now();
        let popup = loop {
            let windows = self.client.windows().await.unwrap();
            if let Some(w) = windows.into_iter().find(|w| *w != main) {
                break w;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no popup opened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.client.switch_to_window(popup).await.unwrap();
        main
    }

    /// Waits for the popup to close itself, then switches back to `main`.
    async fn back_from_popup(&self, main: fantoccini::wd::WindowHandle) {
        let t = Instant::now();
        while self.client.windows().await.unwrap().len() > 1 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the popup did not close"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client.switch_to_window(main).await.unwrap();
    }

    /// Fills oidc-provider's login page, then its consent page, in the current window.
    async fn approve_at_oidc_provider(&self, user: &str) {
        self.type_into("input[name=login]", user).await;
        self.type_into("input[name=password]", "any").await;
        self.click("button[type=submit]").await;
        // The consent page (a new interaction) follows.
        let t = Instant::now();
        while !self.url().await.contains("/interaction/") || self.exists("input[name=login]").await
        {
            if t.elapsed() > Duration::from_secs(20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.url().await.contains("/interaction/") {
            self.click("button[type=submit]").await;
        }
    }
}

async fn keyport_with_key_provider() -> Keyport {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let addr = fake_key_provider().await;
    kp.point_apikey_test_at(&format!("http://{addr}")).await;
    kp
}

/// A host with the oidc-test provider app pointing at a running oidc-provider, and a browser
/// signed in to it.
async fn signed_in_with_oidc() -> (Keyport, Oidc, Chrome) {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    (kp, oidc, chrome)
}

async fn api_key_connection(kp: &Keyport) -> String {
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "apikey-test", "api_key": GOOD_KEY, "name": "Sales key"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn sign_in_refuses_a_wrong_token_and_then_opens_integrations() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let chrome = Chrome::start(&[]).await;
    chrome.goto(&format!("{}/connections", kp.url)).await;
    assert!(
        chrome.url().await.contains("/login?next=%2Fconnections"),
        "{}",
        chrome.url().await
    );
    chrome.type_into("#token", "kpa_not_the_token_at_all").await;
    chrome.click("main form button[type=submit]").await;
    chrome
        .wait_text("#login-error", "not the admin token")
        .await;
    chrome.type_into("#token", ADMIN).await;
    chrome.click("main form button[type=submit]").await;
    // Back where the user was going, signed in.
    chrome.wait_text("h1", "Connections").await;
    chrome.wait_text(".empty", "No connections yet").await;
    chrome.screenshot("sign-in-empty-connections").await;
    // Pages' changes need the CSRF token: the session cookie alone is refused.
    let status: Value = chrome
        .client
        .execute(
            "return fetch('/api/v1/connections/oauth/start', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({connector: 'oidc-test'})}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    chrome.click("nav a[href='/']").await;
    chrome
        .wait_text(
            ".card[data-connector=apikey-test] h2",
            "API key test provider",
        )
        .await;
    chrome.screenshot("sign-in-integrations").await;
    // Sign out ends the session.
    chrome.click("#user-menu").await;
    chrome.click(".signout button").await;
    chrome.wait_text("h1", "Sign in").await;
    chrome.goto(&format!("{}/", kp.url)).await;
    chrome.wait_text("h1", "Sign in").await;
}

#[tokio::test]
async fn api_key_connection_through_the_configure_dialog_shows_connected_as() {
    let kp = keyport_with_key_provider().await;
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    chrome
        .click(".card[data-connector=apikey-test] [data-open-dialog]")
        .await;
    chrome
        .wait_text("#configure-apikey-test label", "API key")
        .await;
    chrome.type_into("#key-apikey-test", "wrong-key").await;
    chrome
        .click("#configure-apikey-test button[type=submit]")
        .await;
    let err = chrome
        .wait_text("#key-error-apikey-test", "rejected the API key")
        .await;
    assert!(!err.contains("wrong-key"), "the key is never echoed: {err}");
    chrome.type_into("#key-apikey-test", GOOD_KEY).await;
    chrome
        .click("#configure-apikey-test button[type=submit]")
        .await;
    chrome
        .wait_text(
            ".card[data-connector=apikey-test] .conn-list",
            "Connected as: Acme Sales",
        )
        .await;
    chrome
        .wait_text(".card[data-connector=apikey-test] .meta", "Connected")
        .await;
    chrome
        .wait_text("#toasts", "Connected as Acme Sales.")
        .await;
    chrome.screenshot("api-key-connected").await;
    let (_, list) = kp.get("/api/v1/connections?connector=apikey-test").await;
    assert_eq!(list["connections"][0]["status"], "active", "{list}");
}

#[tokio::test]
async fn oauth_connection_through_the_popup_then_refresh_and_config() {
    let (kp, oidc, chrome) = signed_in_with_oidc().await;
    // The provider's consent opens in a popup, which reports to the page and closes itself.
    let main = chrome.open_popup("[data-connect=oidc-test]").await;
    chrome.approve_at_oidc_provider("alice").await;
    chrome.back_from_popup(main).await;
    let (_, list) = kp.get("/api/v1/connections?connector=oidc-test").await;
    let c = &list["connections"][0];
    let id = c["id"].as_str().expect("a connection").to_string();
    let c = kp
        .wait_for(&id, |c| c["account"]["display_name"].is_string())
        .await;
    let account = c["account"]["display_name"].as_str().unwrap().to_string();
    chrome
        .wait_text(
            ".card[data-connector=oidc-test] .conn-list",
            &format!("Connected as: {account}"),
        )
        .await;
    chrome.screenshot("oauth-popup-connected").await;

    // Refresh credential.
    chrome
        .click(&format!(
            ".card[data-connector=oidc-test] a[href='/connections/{id}']"
        ))
        .await;
    chrome.wait_text(".detail-head", "Active").await;
    let before = kp.get(&format!("/api/v1/connections/{id}")).await.1["last_refreshed_at"].clone();
    chrome.click(&format!("[data-refresh='{id}']")).await;
    chrome.wait_text("#toasts", "Connection refreshed.").await;
    let after = kp.get(&format!("/api/v1/connections/{id}")).await.1["last_refreshed_at"].clone();
    assert_ne!(before, after, "the refresh happened");
    chrome.screenshot("oauth-refreshed").await;

    // Config: a validation error inline, nothing saved; then saved.
    chrome.type_into("#cfg-limit", "500").await;
    chrome.click("[data-config-form] button[type=submit]").await;
    chrome.wait_text("#cfg-limit-error", "at most 100").await;
    chrome.wait_text("#toasts", "Settings not saved").await;
    chrome.screenshot("config-validation-error").await;
    let (_, cfg) = kp.get(&format!("/api/v1/connections/{id}/config")).await;
    assert_eq!(cfg["config"]["limit"], 10, "nothing saved: {cfg}");
    chrome.type_into("#cfg-limit", "50").await;
    chrome.type_into("#cfg-label", "nightly sync").await;
    chrome.click("[data-config-form] button[type=submit]").await;
    chrome.wait_text("#toasts", "Settings saved.").await;
    let (_, cfg) = kp.get(&format!("/api/v1/connections/{id}/config")).await;
    assert_eq!(cfg["config"]["limit"], 50, "{cfg}");
    assert_eq!(cfg["config"]["label"], "nightly sync", "{cfg}");
    assert!(
        !chrome.exists("#cfg-limit[aria-invalid=true]").await,
        "the error is cleared"
    );
    chrome.screenshot("config-saved").await;

    // With the provider gone, a refresh fails and the toast says what to do.
    drop(oidc);
    chrome.click(&format!("[data-refresh='{id}']")).await;
    chrome
        .wait_text(
            "#toasts",
            "Failed to refresh connection. You may need to reconnect.",
        )
        .await;
    chrome.screenshot("refresh-failed").await;
}

#[tokio::test]
async fn a_denied_consent_says_so_and_connects_nothing() {
    let (kp, _oidc, chrome) = signed_in_with_oidc().await;
    let main = chrome.open_popup("[data-connect=oidc-test]").await;
    // oidc-provider's login page offers to cancel: the user declines.
    chrome.click("a[href$='/abort']").await;
    chrome.back_from_popup(main).await;
    chrome
        .wait_text(
            "#toasts",
            "The provider denied access — try again and approve the permissions.",
        )
        .await;
    chrome.screenshot("consent-denied").await;
    let (_, list) = kp
        .get("/api/v1/connections?connector=oidc-test&status=active")
        .await;
    assert_eq!(list["connections"], json!([]), "nothing connected");
}

#[tokio::test]
async fn admin_pages_save_provider_apps_upload_connectors_import_providers_and_show_the_audit_log()
{
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    chrome.click("nav a[href='/admin']").await;
    chrome.wait_text("h1", "Admin").await;

    // Provider app: the secret is stored, never shown back.
    chrome.type_into("#app-id-oidc-test", "ui-client").await;
    chrome
        .type_into("#app-secret-oidc-test", "ui-secret-value-0123")
        .await;
    chrome
        .click("form[data-app-form=oidc-test] button[type=submit]")
        .await;
    chrome.wait_text("#toasts", "Provider app saved.").await;
    let (_, app) = kp.get("/api/v1/provider-apps/oidc-test").await;
    assert_eq!(app["client_id"], "ui-client", "{app}");
    assert_eq!(app["client_secret_set"], true, "{app}");
    chrome.goto(&format!("{}/admin", kp.url)).await;
    let page = chrome.client.source().await.unwrap();
    assert!(!page.contains("ui-secret-value-0123"));
    chrome
        .wait_visible("#app-secret-oidc-test[placeholder^=stored]")
        .await;

    // A broken upload is refused inline; a good one is loaded.
    let garbage = kp.data.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    chrome
        .wait_visible("#upload-file")
        .await
        .send_keys(garbage.to_str().unwrap())
        .await
        .unwrap();
    chrome
        .click("form[data-upload-form] button[type=submit]")
        .await;
    chrome
        .wait_text("[data-error-for='/upload']", "not a WebAssembly file")
        .await;
    chrome.screenshot("admin-upload-refused").await;
    let swap = std::path::Path::new(keyport_test_artifacts::SWAP_V1)
        .canonicalize()
        .unwrap();
    let file = chrome.wait_visible("#upload-file").await;
    file.clear().await.unwrap();
    file.send_keys(swap.to_str().unwrap()).await.unwrap();
    chrome.type_into("#upload-grant", "api.swap.test").await;
    chrome
        .click("form[data-upload-form] button[type=submit]")
        .await;
    chrome.wait_text("#toasts", "Connector loaded.").await;
    chrome.wait_text("table", "swap-test").await;
    assert_eq!(kp.get("/api/v1/connectors/swap-test").await.0, 200);

    // Custom OAuth import: the issuer is discovered, the fields given next to it win.
    chrome.type_into("#import-issuer", &oidc.issuer).await;
    chrome
        .type_into(
            "#import-definition",
            &json!({"id": "acme-id", "display_name": "Acme ID", "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "client_auth": "body"})
            .to_string(),
        )
        .await;
    chrome
        .click("form[data-import-form] button[type=submit]")
        .await;
    chrome.wait_text("#toasts", "Provider imported").await;
    chrome.wait_text("#custom-title + ul", "Acme ID").await;
    chrome.screenshot("admin").await;
    chrome.click("nav a[href='/']").await;
    chrome.wait_text(".cards", "Acme ID").await;

    // The audit log, filtered by event.
    chrome.click("nav a[href='/admin/audit']").await;
    chrome.wait_text("table", "provider_app.updated").await;
    chrome.type_into("#a-action", "connector.uploaded").await;
    chrome.click("form.filters button[type=submit]").await;
    chrome.wait_text("table", "connector.uploaded").await;
    let cells = chrome
        .client
        .find_all(Locator::Css("table tbody tr td:nth-child(2)"))
        .await
        .unwrap();
    assert!(!cells.is_empty());
    for c in cells {
        assert_eq!(c.text().await.unwrap(), "connector.uploaded");
    }
    chrome.screenshot("audit-log").await;
}

#[tokio::test]
async fn every_page_labels_its_controls_has_readable_contrast_and_fits_a_phone() {
    let kp = keyport_with_key_provider().await;
    let id = api_key_connection(&kp).await;
    let chrome = Chrome::start(&["--window-size=390,844"]).await;
    chrome.sign_in(&kp).await;
    for path in [
        "/".to_string(),
        "/connections".into(),
        format!("/connections/{id}"),
        "/admin".into(),
        "/admin/audit".into(),
    ] {
        chrome.goto(&format!("{}{path}", kp.url)).await;
        chrome.wait_visible("main h1").await;
        // Every form control has an accessible name; every button has text; no horizontal
        // scrolling on a 390 px wide screen; one h1; text contrast meets WCAG AA.
        let problems: Value = chrome
            .client
            .execute(
                r#"const out = [];
                for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
                  const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.closest('label') || el.getAttribute('aria-label');
                  if (!labelled) out.push('unlabelled ' + el.outerHTML.slice(0, 80));
                }
                for (const b of document.querySelectorAll('button, a')) {
                  if (!b.textContent.trim() && !b.getAttribute('aria-label')) out.push('empty ' + b.outerHTML.slice(0, 80));
                }
                                if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('horizontal scroll: ' + document.documentElement.scrollWidth);
                // WCAG AA contrast of every visible text: 4.5:1, 3:1 for large text.
                const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
                const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
                  .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
                const background = (el) => {
                  for (let e = el; e; e = e.parentElement) {
                    const c = rgb(getComputedStyle(e).backgroundColor);
                    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
                  }
                  return [255, 255, 255];
                };
                for (const el of document.querySelectorAll('body *')) {
                  const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
                  if (!own || !el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
                  const st = getComputedStyle(el);
                  const fg = rgb(st.color).slice(0, 3);
                  const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
                  const ratio = (a + 0.05) / (b + 0.05);
                  const size = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
                  const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
                  if (ratio < need) out.push('contrast ' + ratio.toFixed(2) + ' < ' + need + ': ' + el.outerHTML.slice(0, 80));
                }
                if (document.querySelectorAll('h1').length !== 1) out.push('h1 count');
                return out;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(problems, json!([]), "{path}");
    }
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome.screenshot("phone-connection").await;
    // Keyboard: the revoke dialog opens from the keyboard and Escape closes it.
    chrome
        .client
        .execute(
            "document.querySelector('[data-open-dialog=revoke-dialog]').focus()",
            vec![],
        )
        .await
        .unwrap();
    let focused = chrome.client.active_element().await.unwrap();
    focused
        .send_keys(&char::from(fantoccini::key::Key::Enter).to_string())
        .await
        .unwrap();
    chrome.wait_visible("#revoke-dialog").await;
    chrome
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys(&char::from(fantoccini::key::Key::Escape).to_string())
        .await
        .unwrap();
    let t = Instant::now();
    while chrome
        .client
        .find(Locator::Css("#revoke-dialog"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "Escape closes the dialog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoke_through_the_confirmation_dialog() {
    let kp = keyport_with_key_provider().await;
    let id = api_key_connection(&kp).await;
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome.wait_text(".facts", "API key test provider").await;
    chrome.click("[data-open-dialog=revoke-dialog]").await;
    chrome
        .wait_text("#revoke-dialog", "Dependent workflows will pause")
        .await;
    chrome.screenshot("revoke-dialog").await;
    // Meanwhile the user signed in again (another tab): this page's CSRF token is stale, and it
    // fetches the new one instead of failing.
    let status: Value = chrome
        .client
        .execute(
            "return fetch('/login', {method: 'POST', body: new URLSearchParams({token: arguments[0]})}).then(r => r.status)",
            vec![json!(ADMIN)],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(200), "signed in again (redirect followed)");
    chrome
        .click(&format!("#revoke-dialog [data-revoke='{id}']"))
        .await;
    chrome.wait_text("#toasts", "Connection revoked.").await;
    chrome.wait_text(".detail-head", "Revoked").await;
    chrome
        .wait_text(".status-help", "Reconnect to authorize again")
        .await;
    assert!(
        !chrome.exists("[data-open-dialog=revoke-dialog]").await,
        "Revoke is hidden once revoked"
    );
    chrome.screenshot("revoked").await;
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "revoked");
}

#[tokio::test]
async fn delete_is_refused_while_a_dependent_exists_and_says_why() {
    let kp = keyport_with_key_provider().await;
    let id = api_key_connection(&kp).await;
    let (s, _) = kp
        .put(
            &format!("/api/v1/connections/{id}/dependents/workflow:invoice-sync"),
            json!({}),
        )
        .await;
    assert_eq!(s, 201);
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    chrome.goto(&format!("{}/connections", kp.url)).await;
    chrome.wait_text("table", "Sales key").await;
    chrome.click(&format!("a[href='/connections/{id}']")).await;
    chrome.click("[data-open-dialog=delete-dialog]").await;
    chrome.wait_text("#delete-dialog", "cannot be undone").await;
    chrome
        .click(&format!("#delete-dialog [data-delete='{id}']"))
        .await;
    chrome
        .wait_text("#delete-error", "workflow:invoice-sync")
        .await;
    chrome.screenshot("delete-refused").await;
    assert_eq!(kp.get(&format!("/api/v1/connections/{id}")).await.0, 200);
    // Without the dependent it goes, back to the (now empty) list.
    kp.delete(&format!(
        "/api/v1/connections/{id}/dependents/workflow:invoice-sync"
    ))
    .await;
    chrome.click("[data-open-dialog=delete-dialog]").await;
    chrome
        .click(&format!("#delete-dialog [data-delete='{id}']"))
        .await;
    chrome.wait_text("#toasts", "Connection deleted.").await;
    chrome.wait_text(".empty", "No connections yet").await;
    chrome.screenshot("deleted-empty-state").await;
}

#[tokio::test]
async fn a_blocked_popup_explains_and_connects_in_the_same_window() {
    let (_kp, _oidc, chrome) = signed_in_with_oidc().await;
    // A popup blocker: `window.open` answers null, as blockers do (HTML: "the user agent may
    // return null"). Chromium lets click-initiated popups through whatever its settings say.
    chrome
        .client
        .execute("window.open = function () { return null; };", vec![])
        .await
        .unwrap();
    chrome.click("[data-connect=oidc-test]").await;
    chrome
        .wait_text(
            "[data-popup-blocked=oidc-test]",
            "blocked the sign-in window",
        )
        .await;
    assert_eq!(chrome.client.windows().await.unwrap().len(), 1);
    chrome.screenshot("popup-blocked").await;
    chrome
        .click("[data-popup-blocked=oidc-test] a[data-same-window]")
        .await;
    chrome.approve_at_oidc_provider("bob").await;
    chrome.wait_text("#toasts", "Connected").await;
    chrome
        .wait_text(
            ".card[data-connector=oidc-test] .conn-list",
            "Connected as:",
        )
        .await;
    assert!(
        !chrome.url().await.contains("code="),
        "the address bar carries no code: {}",
        chrome.url().await
    );
    chrome.screenshot("same-window-connected").await;
}

/// Signs in over HTTP; returns the cookie-keeping client and the page's CSRF token.
async fn http_session(kp: &Keyport) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/login", kp.url))
        .form(&[("token", ADMIN), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in");
    let page = client
        .get(format!("{}/connections", kp.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    (client, csrf)
}

#[tokio::test]
async fn a_flow_started_from_the_ui_opens_only_in_the_browser_that_started_it() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let (ui, csrf) = http_session(&kp).await;
    let start = |csrf: Option<String>, origin: Option<&'static str>| {
        let mut r = ui
            .post(format!("{}/api/v1/connections/oauth/start", kp.url))
            .json(&json!({"connector": "oidc-test"}));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    // Without the token, or from another origin, the session cookie does nothing, reads
    // included (a cross-site link must not drive the API, e.g. the proxy).
    assert_eq!(start(None, None).await.unwrap().status(), 403);
    let read = |csrf: Option<String>| {
        let mut r = ui.get(format!("{}/api/v1/connections", kp.url));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    assert_eq!(read(None).await.unwrap().status(), 403);
    assert_eq!(read(Some(csrf.clone())).await.unwrap().status(), 200);
    assert_eq!(
        start(Some(csrf.clone()), Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = start(Some(csrf.clone()), None).await.unwrap();
    assert_eq!(r.status(), 201);
    let launch = r.json::<Value>().await.unwrap()["authorize_url"]
        .as_str()
        .unwrap()
        .to_string();
    // Another browser (an attacker's link sent to a victim) cannot open it...
    let other = Browser::new();
    let (s, _, body) = other.get(&launch).await;
    assert_eq!(s, 400);
    assert!(
        body.contains("started from another keyport sign-in"),
        "{body}"
    );
    // ... the browser that started it can.
    let r = ui.get(&launch).send().await.unwrap();
    assert_eq!(r.status(), 302, "redirect to the provider");
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = client
            .post(format!("{}/login", kp.url))
            .form(&[("token", "kpa_guessing_0123456789")])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let page = r.text().await.unwrap();
            assert!(page.contains("Too many failed sign-ins"), "{page}");
        }
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
    // Even the right token waits: guessing cannot race a legitimate sign-in.
    let r = client
        .post(format!("{}/login", kp.url))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn switching_workspace_shows_that_workspaces_connections() {
    let kp = keyport_with_key_provider().await;
    let (s, b) = kp
        .post(
            "/api/v1/workspaces",
            json!({"id": "acme", "name": "Acme Corp"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let addr = kp.get("/api/v1/provider-apps/apikey-test").await.1["endpoint_overrides"]
        ["https://api.keytest.example"]
        .clone();
    let in_acme = |method: reqwest::Method, path: &str| {
        kp.http
            .request(method, format!("{}{path}", kp.url))
            .bearer_auth(ADMIN)
            .header("x-keyport-workspace", "acme")
    };
    let r = in_acme(reqwest::Method::PUT, "/api/v1/provider-apps/apikey-test")
        .json(&json!({"endpoint_overrides": {"https://api.keytest.example": addr}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = in_acme(reqwest::Method::POST, "/api/v1/connections")
        .json(&json!({"connector": "apikey-test", "api_key": GOOD_KEY, "name": "Acme key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    chrome.click("nav a[href='/connections']").await;
    chrome.wait_text(".empty", "No connections yet").await;
    chrome
        .wait_visible("#workspace-select")
        .await
        .select_by_value("acme")
        .await
        .unwrap();
    chrome.wait_text("table", "Acme key").await;
    chrome
        .wait_text("#workspace-select option:checked", "Acme Corp")
        .await;
    chrome.screenshot("workspace-switched").await;
}

#[tokio::test]
async fn connections_are_paged_and_cards_link_to_the_rest() {
    let kp = keyport_with_key_provider().await;
    for i in 0..120 {
        let (s, c) = kp
            .post(
                "/api/v1/connections",
                json!({"connector": "apikey-test", "api_key": GOOD_KEY, "name": format!("Key {i:03}")}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
    }
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    // The card lists the newest five and links to the rest.
    let card = ".card[data-connector=apikey-test]";
    let items = chrome
        .client
        .find_all(Locator::Css(&format!("{card} .conn-list li")))
        .await
        .unwrap();
    assert_eq!(items.len(), 5);
    chrome
        .wait_text(&format!("{card} .conn-list"), "Key 119")
        .await;
    chrome
        .click(&format!(
            "{card} a[href='/connections?connector=apikey-test']"
        ))
        .await;
    chrome.wait_text(".pager", "Showing 1–50 of 120").await;
    chrome.wait_text("table", "Key 119").await;
    chrome.click(".pager a[rel=next]").await;
    chrome.wait_text(".pager", "Showing 51–100 of 120").await;
    assert!(
        chrome.url().await.contains("connector=apikey-test"),
        "filters are kept"
    );
    chrome.click(".pager a[rel=next]").await;
    chrome.wait_text(".pager", "Showing 101–120 of 120").await;
    chrome.wait_text("table", "Key 000").await;
    assert!(
        !chrome.exists(".pager a[rel=next]").await,
        "no page after the last"
    );
    chrome.screenshot("connections-last-page").await;
    chrome.click(".pager a[rel=prev]").await;
    chrome.wait_text(".pager", "Showing 51–100 of 120").await;
}

impl Chrome {
    /// Signs in with email and password on the sign-in page.
    async fn sign_in_as(&self, kp: &Keyport, email: &str, password: &str) {
        self.goto(&format!("{}/login", kp.url)).await;
        self.type_into("#email", email).await;
        self.type_into("#password", password).await;
        self.click("#password-sign-in button[type=submit]").await;
        self.wait_text("#user-menu", email).await;
    }

    async fn sign_out(&self) {
        self.click("#user-menu").await;
        self.click(".signout button").await;
        self.wait_text("h1", "Sign in").await;
    }

    /// `fetch` from the page with its CSRF token: the status.
    async fn fetch_status(&self, method: &str, path: &str) -> u16 {
        let v: Value = self
            .client
            .execute(
                "return fetch(arguments[1], {method: arguments[0], headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)",
                vec![json!(method), json!(path)],
            )
            .await
            .unwrap();
        v.as_u64().unwrap() as u16
    }
}

/// An invitation end to end: invited by API, the mail arrives at a real SMTP server, its link is
/// opened in the browser, a password is chosen, and the person is signed in with the role.
#[tokio::test]
async fn an_invitation_mailed_and_opened_in_the_browser_signs_the_person_in_with_the_role() {
    let smtp = common::smtp::Smtp::start();
    let kp = Keyport::start(KeyportOpts {
        env: vec![("KEYPORT_SMTP_URL".into(), smtp.url())],
        ..Default::default()
    })
    .await;
    let (s, inv) = kp
        .post(
            "/api/v1/invitations",
            json!({"email": "erin@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(s, 201, "{inv}");
    let link = common::smtp::link_in(&smtp.wait_for("erin@example.com").await);
    let chrome = Chrome::start(&[]).await;
    chrome.goto(&link).await;
    chrome
        .wait_text("#invite-summary", "as admin (erin@example.com)")
        .await;
    chrome.screenshot("invitation").await;
    chrome.type_into("#display-name", "Erin").await;
    chrome
        .type_into("#accept-password", "erin's long passphrase")
        .await;
    chrome.click("#accept-form button[type=submit]").await;
    chrome.wait_text("h1", "Integrations").await;
    chrome.wait_text("#user-menu", "erin@example.com").await;
    chrome.wait_text("#user-menu", "(admin)").await;
    // Admins see the Members page, with Erin on it.
    chrome.click("nav a[href='/members']").await;
    chrome.wait_text("#members", "erin@example.com").await;
    chrome.screenshot("members").await;
    // The link worked once.
    chrome.sign_out().await;
    chrome.goto(&link).await;
    chrome.wait_text("#invite-error", "not valid").await;
    // The password chosen signs in.
    chrome
        .sign_in_as(&kp, "erin@example.com", "erin's long passphrase")
        .await;
}

/// Sharing in the browser: A shares a connection at `use`; B sees it, has no Revoke button, is
/// refused by the API, and calls the provider through the proxy; A raises it to `manage`; B
/// revokes it.
#[tokio::test]
async fn a_connection_shared_at_use_then_manage_lets_a_teammate_use_then_revoke_it() {
    let kp = keyport_with_key_provider().await;
    for email in ["ann@example.com", "ben@example.com"] {
        let (s, u) = kp
            .post(
                "/api/v1/users",
                json!({"email": email, "password": "team password 1", "role": "member"}),
            )
            .await;
        assert_eq!(s, 201, "{u}");
    }
    let chrome = Chrome::start(&[]).await;
    chrome
        .sign_in_as(&kp, "ann@example.com", "team password 1")
        .await;
    // Ann connects an account through the Configure dialog: it is hers, personal.
    chrome
        .click(".card[data-connector=apikey-test] [data-open-dialog]")
        .await;
    chrome.type_into("#key-apikey-test", GOOD_KEY).await;
    chrome
        .click("#configure-apikey-test button[type=submit]")
        .await;
    chrome
        .wait_text(
            ".card[data-connector=apikey-test] .conn-list",
            "Connected as: Acme Sales",
        )
        .await;
    let (_, list) = kp.get("/api/v1/connections").await;
    let id = list["connections"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["connections"][0]["visibility"], "personal");
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome.wait_text("[data-owner]", "ann@example.com").await;
    chrome.click("#share-switch").await;
    chrome
        .client
        .find(Locator::Css("#share-permission option[value=use]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    chrome
        .click("[data-sharing-form] button[type=submit]")
        .await;
    chrome
        .wait_text("[data-sharing]", "Shared with the team: members use it")
        .await;
    chrome.screenshot("shared-at-use").await;
    chrome.sign_out().await;

    chrome
        .sign_in_as(&kp, "ben@example.com", "team password 1")
        .await;
    chrome.goto(&format!("{}/connections", kp.url)).await;
    chrome
        .wait_text(&format!("tr[data-connection='{id}']"), "ann@example.com")
        .await;
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome.wait_text("[data-use-only]", "You may use").await;
    assert!(!chrome.exists("[data-open-dialog=revoke-dialog]").await);
    assert!(!chrome.exists("[data-sharing-form]").await);
    chrome.screenshot("use-only").await;
    assert_eq!(
        chrome
            .fetch_status("POST", &format!("/api/v1/connections/{id}/revoke"))
            .await,
        403
    );
    assert_eq!(
        chrome
            .fetch_status("GET", &format!("/api/v1/connections/{id}/proxy/me"))
            .await,
        200,
        "Ben uses it through the proxy"
    );
    chrome.sign_out().await;

    chrome
        .sign_in_as(&kp, "ann@example.com", "team password 1")
        .await;
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome
        .client
        .find(Locator::Css("#share-permission option[value=manage]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    chrome
        .click("[data-sharing-form] button[type=submit]")
        .await;
    chrome
        .wait_text("[data-sharing]", "use and manage it")
        .await;
    chrome.sign_out().await;

    chrome
        .sign_in_as(&kp, "ben@example.com", "team password 1")
        .await;
    chrome.goto(&format!("{}/connections/{id}", kp.url)).await;
    chrome.click("[data-open-dialog=revoke-dialog]").await;
    chrome
        .click(&format!("#revoke-dialog [data-revoke='{id}']"))
        .await;
    chrome.wait_text(".detail-head", "Revoked").await;
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], "revoked");
    let (_, ev) = kp.get(&format!("/api/v1/connections/{id}/audit")).await;
    assert!(
        ev.to_string().contains("<ben@example.com>"),
        "the audit names Ben: {ev}"
    );
}

/// The client's side in the browser: the request link from the email opens the portal as a
/// client, the outstanding request connects through oidc-provider's consent in a popup, and the
/// portal lists the connection; pages outside the portal send the client back to it.
#[tokio::test]
async fn a_client_opens_the_request_link_and_connects_from_the_portal() {
    let smtp = common::smtp::Smtp::start();
    let kp = Keyport::start(KeyportOpts {
        env: vec![("KEYPORT_SMTP_URL".into(), smtp.url())],
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    // A webhook receiver: the event types it got.
    let hooks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let got = hooks.clone();
    let receiver = common::serve_fake(axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let got = got.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                got.lock()
                    .unwrap()
                    .push(v["type"].as_str().unwrap_or_default().to_string());
                "ok"
            }
        }),
    ))
    .await;
    let (s, w) = kp
        .post(
            "/api/v1/webhooks",
            json!({"url": format!("{receiver}/hook"), "events": ["connection.revoked", "connection_request.fulfilled"]}),
        )
        .await;
    assert_eq!(s, 201, "{w}");
    let (s, made) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "client@example.com", "connector": "oidc-test", "scopes": ["email"], "message": "For the weekly report."}),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let mail = smtp.wait_for("client@example.com").await;
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/portal/join#"))
        .unwrap()
        .to_string();
    let chrome = Chrome::start(&[]).await;
    chrome.goto(&link).await;
    chrome
        .wait_text("#requests-title", "Outstanding connection requests")
        .await;
    chrome
        .wait_text("[data-request]", "For the weekly report.")
        .await;
    chrome.wait_text(".empty", "No connections yet").await;
    chrome
        .wait_text(
            ".empty",
            "When your team asks you to connect an app, it will show up here.",
        )
        .await;
    chrome.screenshot("portal-request").await;
    let id = made["connection_requests"][0]["id"].as_str().unwrap();
    let main = chrome
        .open_popup(&format!("[data-request-connect='{id}']"))
        .await;
    chrome.approve_at_oidc_provider("client").await;
    chrome.back_from_popup(main).await;
    chrome
        .wait_text("#portal-connections", "OIDC test provider")
        .await;
    chrome.wait_text("#portal-connections", "active").await;
    assert!(
        !chrome.exists("[data-request]").await,
        "no longer outstanding"
    );
    chrome.screenshot("portal-connected").await;
    let (_, r) = kp.get(&format!("/api/v1/connection-requests/{id}")).await;
    assert_eq!(r["status"], "fulfilled");
    // The agency uses it; the client manages it from the portal.
    let (_, r) = kp.get(&format!("/api/v1/connection-requests/{id}")).await;
    let conn = r["connection_id"].as_str().unwrap().to_string();
    assert_eq!(
        kp.get(&format!("/api/v1/connections/{conn}/proxy/me"))
            .await
            .0,
        200
    );
    chrome
        .click(&format!(
            "#portal-connections a[href='/portal/connections/{conn}']"
        ))
        .await;
    chrome
        .wait_text("[data-status-text]", "Connected and working.")
        .await;
    chrome.wait_text("[data-portal-status]", "active").await;
    chrome
        .wait_text("[data-account-email]", "client@example.com")
        .await;
    chrome.wait_text(".facts", "Last refreshed").await;
    chrome
        .click(&format!("[data-portal-refresh='{conn}']"))
        .await;
    chrome.wait_text("#toasts", "Connection refreshed.").await;
    chrome
        .wait_text("[data-status-text]", "Connected and working.")
        .await;
    // With the provider down, a refresh fails and says what to do.
    drop(oidc);
    chrome
        .click(&format!("[data-portal-refresh='{conn}']"))
        .await;
    chrome
        .wait_text("#toasts", "Failed to refresh connection")
        .await;
    chrome
        .wait_text("#toasts", "You may need to reconnect.")
        .await;
    chrome
        .click("[data-open-dialog=portal-revoke-dialog]")
        .await;
    chrome
        .wait_text("#portal-revoke-title", "Revoke this connection?")
        .await;
    chrome
        .wait_text(
            "#portal-revoke-dialog",
            "Workflows that depend on this credential will pause until you (or another team member) reconnect it. You can reconnect at any time from this page or from a future request email.",
        )
        .await;
    chrome
        .wait_text("#portal-revoke-dialog", "Keep connection")
        .await;
    chrome.screenshot("portal-revoke-dialog").await;
    chrome
        .click(&format!("[data-portal-revoke='{conn}']"))
        .await;
    chrome.wait_text("#toasts", "Connection revoked").await;
    chrome
        .wait_text(
            "#toasts",
            "Workflows using this connection will pause until reconnected.",
        )
        .await;
    chrome.wait_text("[data-portal-status]", "revoked").await;
    chrome
        .wait_text(
            "[data-status-text]",
            "This connection was revoked. Reconnect to keep workflows running.",
        )
        .await;
    chrome
        .wait_text(
            "[data-contact-agency]",
            "Contact your agency if this integration needs to be reconnected.",
        )
        .await;
    assert!(
        !chrome
            .exists("[data-open-dialog=portal-revoke-dialog]")
            .await,
        "Revoke is hidden once revoked"
    );
    chrome.screenshot("portal-revoked").await;
    assert_eq!(
        kp.get(&format!("/api/v1/connections/{conn}/proxy/me"))
            .await
            .0,
        409,
        "the agency's next call is refused"
    );
    let t = Instant::now();
    while !hooks
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == "connection.revoked")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no connection.revoked delivery: {:?}",
            hooks.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "connection_request.fulfilled")
    );
    // Outside the portal, a client is sent back to it.
    chrome.goto(&format!("{}/admin/audit", kp.url)).await;
    chrome
        .wait_text("#requests-title", "Outstanding connection requests")
        .await;
    assert!(chrome.url().await.ends_with("/portal"));
    // A cancelled request's link says so and signs nobody in.
    let (_, again) = kp
        .post(
            "/api/v1/connection-requests",
            json!({"client_email": "late@example.com", "connector": "oidc-test"}),
        )
        .await;
    let rid = again["connection_requests"][0]["id"].as_str().unwrap();
    kp.post(
        &format!("/api/v1/connection-requests/{rid}/cancel"),
        json!({}),
    )
    .await;
    chrome.goto(again["link"].as_str().unwrap()).await;
    chrome
        .wait_text("#join-error", "ask the team that sent it for a new one")
        .await;
    chrome.screenshot("portal-link-cancelled").await;
}

/// The Admin page imports a file of providers and shows the report per entry.
#[tokio::test]
async fn the_admin_page_imports_a_file_and_reports_each_entry() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("providers.json");
    let good = json!({
        "id": "filed",
        "display_name": "Filed Co",
        "authorization_url": "https://auth.filed.example/authorize",
        "token_url": "https://auth.filed.example/token",
        "api_base_url": "https://api.filed.example/",
        "scopes": ["read"],
    });
    let mut bad = good.clone();
    bad["id"] = json!("broken");
    bad["token_url"] = json!("not a url");
    std::fs::write(
        &path,
        json!({"format": "keyport-providers/1", "providers": [good, bad]}).to_string(),
    )
    .unwrap();
    chrome.goto(&format!("{}/admin", kp.url)).await;
    chrome
        .client
        .find(Locator::Css("#import-file"))
        .await
        .unwrap()
        .send_keys(path.to_str().unwrap())
        .await
        .unwrap();
    chrome
        .click("[data-import-file-form] button[type=submit]")
        .await;
    chrome
        .wait_text("#import-report", "1 created, 0 updated, 1 rejected.")
        .await;
    chrome
        .wait_text("#import-report tr[data-outcome=created]", "custom-filed")
        .await;
    chrome
        .wait_text(
            "#import-report tr[data-outcome=rejected]",
            "/providers/1/token_url",
        )
        .await;
    chrome.screenshot("admin-import-report").await;
}

#[tokio::test]
async fn catalogue_entries_are_set_up_connected_with_their_settings_and_hidden() {
    use axum::http::Uri;
    use std::sync::{Arc, Mutex};
    let kp = Keyport::start(KeyportOpts::default()).await;
    // A loopback stand-in for acme.zendesk.com: records the authorization request it receives.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let fake = common::serve_fake(axum::Router::new().route(
        "/oauth/authorizations/new",
        axum::routing::get(move |uri: Uri| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(uri.to_string());
                axum::response::Html("<p>Zendesk sign-in</p>")
            }
        }),
    ))
    .await;
    let (st, b) = kp
        .put(
            "/api/v1/provider-apps/zendesk",
            json!({"client_id": "zd-client", "client_secret": "zd-secret",
                   "endpoint_overrides": {"https://acme.zendesk.com": fake}}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let chrome = Chrome::start(&[]).await;
    chrome.sign_in(&kp).await;

    // The category filter narrows the cards to a catalogue category.
    chrome.wait_visible("li.card[data-connector=zendesk]").await;
    chrome.click("#category-filter option[value=support]").await;
    chrome.wait_visible("li.card[data-connector=zendesk]").await;
    let github = chrome
        .client
        .find(Locator::Css("li.card[data-connector=github]"))
        .await
        .unwrap();
    assert!(
        !github.is_displayed().await.unwrap(),
        "GitHub is not in the support category"
    );
    chrome.click("#category-filter option[value='']").await;
    chrome.wait_visible("li.card[data-connector=github]").await;

    // Zendesk asks for its subdomain before the provider opens; a bad one is refused inline.
    chrome
        .click("li.card[data-connector=zendesk] button[data-open-dialog=connect-zendesk]")
        .await;
    chrome
        .type_into("#start-zendesk-subdomain", "not a subdomain")
        .await;
    chrome
        .click("form[data-connect-form=zendesk] button[type=submit]")
        .await;
    chrome
        .wait_text("#start-zendesk-subdomain-error", "expected format")
        .await;
    chrome.type_into("#start-zendesk-subdomain", "acme").await;
    chrome.screenshot("catalogue-connect-settings").await;
    let main = chrome.client.window().await.unwrap();
    chrome
        .click("form[data-connect-form=zendesk] button[type=submit]")
        .await;
    let t = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the provider never saw the authorization"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let request = seen.lock().unwrap()[0].clone();
    assert!(request.contains("client_id=zd-client"), "{request}");
    for w in chrome.client.windows().await.unwrap() {
        if w != main {
            chrome.client.switch_to_window(w).await.unwrap();
            chrome.client.close_window().await.unwrap();
        }
    }
    chrome.client.switch_to_window(main).await.unwrap();

    // GitHub has no app yet: an admin is sent to its entry on the Admin page to set it up.
    chrome.goto(&format!("{}/", kp.url)).await;
    chrome
        .click("li.card[data-connector=github] a[href='/admin#app-github']")
        .await;
    chrome
        .wait_text("#app-github", "github.com/settings/applications/new")
        .await;
    chrome.wait_text("#app-github", &kp.redirect_uri()).await;
    chrome.type_into("#app-id-github", "gh-client").await;
    chrome
        .type_into("#app-secret-github", "gh-secret-value")
        .await;
    chrome
        .click("form[data-app-form=github] button[type=submit]")
        .await;
    chrome.wait_text("#toasts", "Provider app saved.").await;
    chrome.goto(&format!("{}/", kp.url)).await;
    chrome
        .wait_visible("li.card[data-connector=github] button[data-connect=github]")
        .await;

    // Hidden: gone from the Integrations page, marked on the Admin page, shown again.
    chrome.goto(&format!("{}/admin#app-github", kp.url)).await;
    chrome
        .click("#app-github button[data-hide-connector=github]")
        .await;
    chrome.wait_text("#app-github summary", "Hidden").await;
    chrome.screenshot("catalogue-hidden").await;
    chrome.goto(&format!("{}/", kp.url)).await;
    chrome.wait_text("h1", "Integrations").await;
    assert!(!chrome.exists("li.card[data-connector=github]").await);
    assert!(chrome.exists("li.card[data-connector=zendesk]").await);
    let (_, list) = kp.get("/api/v1/admin/catalogue").await;
    let gh = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "github")
        .unwrap()
        .clone();
    assert_eq!(gh["hidden"], true, "{gh}");
    chrome.goto(&format!("{}/admin#app-github", kp.url)).await;
    chrome
        .click("#app-github button[data-hide-connector=github]")
        .await;
    chrome.wait_text("#app-github summary", "App saved").await;
    chrome.goto(&format!("{}/", kp.url)).await;
    chrome.wait_visible("li.card[data-connector=github]").await;
}

/// The subresource-integrity hash the README documents for keyport-connect.js.
fn documented_connect_sri() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let at = readme
        .find("integrity=\"sha384-")
        .expect("the README documents the script's integrity hash");
    let rest = &readme[at + "integrity=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_embeddable_connect_script_works_on_another_sites_page() {
    use base64::Engine;
    use sha2::Digest;
    // The documented hash is the served file's.
    let sri = documented_connect_sri();
    let served = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha384::digest(keyport::ui::CONNECT_JS.as_bytes()))
    );
    assert_eq!(sri, served, "update the README's integrity hash");

    // The platform: another origin on loopback, allow-listed as a return_to.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform = format!("http://{}", listener.local_addr().unwrap());
    let kp = Keyport::start(KeyportOpts {
        env: vec![("KEYPORT_RETURN_TO_ALLOWLIST".into(), platform.clone())],
        ..Default::default()
    })
    .await;
    let oidc = Oidc::start(&kp.redirect_uri());
    kp.configure_oidc(&oidc).await;
    let (kp_url, page_url) = (kp.url.clone(), format!("{platform}/app.html"));
    let version = keyport::ui::CONNECT_JS_VERSION;
    let page = format!(
        r#"<!doctype html><html><head><meta charset=utf-8><title>Platform</title></head><body>
<button id="connect">Connect your calendar</button>
<pre id="out"></pre>
<script src="{kp_url}/static/keyport-connect-{version}.js" integrity="{sri}" crossorigin="anonymous"></script>
<script>
  const out = (t) => {{ document.getElementById("out").textContent = t; }};
  const back = KeyportConnect.result();
  if (back) back.then((v) => out("ok " + JSON.stringify(v)), (e) => out("err " + e.reason));
  document.getElementById("connect").addEventListener("click", () => {{
    KeyportConnect.connect(() => fetch("/start").then((r) => r.json()).then((b) => b.authorize_url))
      .then((v) => out("ok " + JSON.stringify(v)), (e) => out("err " + e.reason));
  }});
</script></body></html>"#
    );
    // The platform's backend starts flows with its API key (here the admin token).
    let start = {
        let (kp_url, page_url) = (kp_url.clone(), page_url.clone());
        move || {
            let (kp_url, page_url) = (kp_url.clone(), page_url.clone());
            async move {
                let b: Value = reqwest::Client::new()
                    .post(format!("{kp_url}/api/v1/connections/oauth/start"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"connector": "oidc-test", "return_to": page_url}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                axum::Json(json!({"authorize_url": b["authorize_url"]}))
            }
        }
    };
    let app = axum::Router::new()
        .route(
            "/app.html",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        )
        .route("/start", axum::routing::get(start));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let chrome = Chrome::start(&[]).await;
    // Every loopback server shares the cookie jar of 127.0.0.1: start each flow signed out of
    // the provider.
    chrome.client.delete_all_cookies().await.unwrap();
    chrome.goto(&page_url).await;
    // Popup: approved; the promise resolves with the connection, its status and the account.
    let main = chrome.open_popup("#connect").await;
    chrome.approve_at_oidc_provider("carol").await;
    chrome.back_from_popup(main).await;
    let text = chrome.wait_text("#out", "ok ").await;
    let v: Value = serde_json::from_str(text.trim_start_matches("ok ")).unwrap();
    let id = v["connection_id"].as_str().unwrap();
    assert!(v["status"] == "active" || v["status"] == "pending", "{v}");
    let (_, c) = kp.get(&format!("/api/v1/connections/{id}")).await;
    assert_eq!(c["status"], v["status"]);
    assert_eq!(
        v["account"]["display_name"], c["account"]["display_name"],
        "{v} {c}"
    );
    chrome.screenshot("embed-connected").await;

    // Denied at the provider: rejected with access_denied.
    // Every loopback server shares the cookie jar of 127.0.0.1: start each flow signed out of
    // the provider.
    chrome.client.delete_all_cookies().await.unwrap();
    chrome.goto(&page_url).await;
    let main = chrome.open_popup("#connect").await;
    chrome.click("a[href$='/abort']").await;
    chrome.back_from_popup(main).await;
    chrome.wait_text("#out", "err access_denied").await;

    // Closed before finishing: rejected with closed.
    // Every loopback server shares the cookie jar of 127.0.0.1: start each flow signed out of
    // the provider.
    chrome.client.delete_all_cookies().await.unwrap();
    chrome.goto(&page_url).await;
    let main = chrome.open_popup("#connect").await;
    chrome.client.close_window().await.unwrap();
    chrome.client.switch_to_window(main).await.unwrap();
    chrome.wait_text("#out", "err closed").await;

    // Blocked: the page itself goes to the provider and comes back with the outcome.
    // Every loopback server shares the cookie jar of 127.0.0.1: start each flow signed out of
    // the provider.
    chrome.client.delete_all_cookies().await.unwrap();
    chrome.goto(&page_url).await;
    chrome
        .client
        .execute("window.open = function () { return null; };", vec![])
        .await
        .unwrap();
    chrome.click("#connect").await;
    chrome.approve_at_oidc_provider("dave").await;
    let text = chrome.wait_text("#out", "ok ").await;
    assert!(
        chrome.url().await.starts_with(&page_url),
        "back on the platform"
    );
    let v: Value = serde_json::from_str(text.trim_start_matches("ok ")).unwrap();
    assert_ne!(v["connection_id"].as_str(), Some(id), "a second connection");
}
