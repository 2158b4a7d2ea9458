//! The `keyport` binary: `connector check` and `serve`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use keyport_test_artifacts as guests;

fn keyport() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyport"))
}

fn check(path: &std::path::Path) -> (bool, String, String) {
    let out = keyport()
        .args(["connector", "check"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn check_accepts_slack_and_prints_its_manifest() {
    let (_d, path) = temp_file("slack.wasm", common::builtin("slack"));
    let (ok, stdout, stderr) = check(&path);
    assert!(ok, "{stderr}");
    let manifest: serde_json::Value = serde_json::from_str(&stdout).expect("the manifest is JSON");
    assert_eq!(manifest["id"], "slack");
    assert_eq!(manifest["auth_kind"], "oauth2");
    assert_eq!(manifest["config_schema"]["type"], "object");
    assert!(
        stderr.contains("implements keyport:connector@0.2.0"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_a_file_that_is_not_wasm() {
    let (_d, path) = temp_file("notes.wasm", b"this is not webassembly\n");
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(stderr.contains("not a WebAssembly file"), "{stderr}");
}

#[test]
fn check_rejects_a_core_module() {
    // The smallest valid core module: magic + version 1.
    let (_d, path) = temp_file("core.wasm", b"\0asm\x01\0\0\0");
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(
        stderr.contains("core WebAssembly module, not a component"),
        "{stderr}"
    );
    assert!(
        stderr.contains("wasm32-wasip2"),
        "the message says how to fix it: {stderr}"
    );
}

#[test]
fn check_rejects_a_component_of_another_world() {
    let (ok, _, stderr) = check(std::path::Path::new(guests::WRONG_WORLD));
    assert!(!ok);
    assert!(
        stderr.contains("does not implement the `connector` world of keyport:connector@0.2.0"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_an_invalid_config_schema() {
    let (ok, _, stderr) = check(std::path::Path::new(guests::BAD_SCHEMA));
    assert!(!ok);
    assert!(
        stderr.contains("config-schema: is not a valid JSON Schema"),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let (ok, _, stderr) = check(std::path::Path::new("/nonexistent/connector.wasm"));
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent/connector.wasm"),
        "{stderr}"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["connector", "--help"],
        &["connector", "check", "--help"],
        &["migrate", "--help"],
        &["keys", "--help"],
        &["keys", "rotate", "--help"],
    ] {
        let out = keyport().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

/// Starts `keyport serve` on a free port; returns the child and its base URL.
fn serve(data_dir: &std::path::Path) -> (std::process::Child, String, Vec<String>) {
    let mut child = keyport()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("KEYPORT_ALLOW_LOOPBACK")
        .env_remove("KEYPORT_ADMIN_TOKEN")
        .env_remove("KEYPORT_MASTER_KEYS")
        .env_remove("KEYPORT_DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.trim().strip_prefix("keyport is running. Open ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url, seen)
}

#[tokio::test]
async fn serve_reports_health_and_lists_the_builtin_connectors() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, url, startup) = serve(data.path());
    let startup = startup.join("\n");
    // First start of the embedded default: a development key file (loudly) and an admin token, once.
    assert!(
        startup.contains("WARNING: keyport generated a development master key"),
        "{startup}"
    );
    assert!(data.path().join("master-keys.json").exists());
    let token = startup
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Admin token (shown once, store it now): ")
        })
        .expect("the admin token is printed on first start")
        .to_string();
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/connections"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the printed admin token works");
    // ... for the web UI too, whose address is printed with it.
    assert!(
        startup.contains(&format!(
            "Open {url}/ in a browser and sign in with the admin token"
        )),
        "{startup}"
    );
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/login"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in to the web UI");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("keyport-session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/api/v1/connectors"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"slack"), "{ids:?}");
    let slack = &list["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "slack")
        .unwrap();
    assert_eq!(slack["source"], "builtin");
    assert!(slack["scopes"].as_array().unwrap().len() >= 3);
    let page = reqwest::get(format!("{url}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Sign in to keyport"),
        "the start page asks to sign in"
    );
    let missing = reqwest::Client::new()
        .get(format!("{url}/api/v1/connectors/nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // The compiled component is cached on disk for the next start.
    let cached = std::fs::read_dir(data.path().join("cache/components"))
        .unwrap()
        .count();
    assert!(cached >= 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // Second start: same keys and token, nothing printed again.
    let (mut child, url, startup) = serve(data.path());
    let startup = startup.join("\n");
    assert!(!startup.contains("Admin token"), "{startup}");
    assert!(
        !startup.contains("generated a development master key"),
        "{startup}"
    );
    let r = reqwest::Client::new()
        .get(format!("{url}/api/v1/connections"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn migrate_creates_and_updates_the_database() {
    let data = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = keyport()
            .args(["migrate", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("is up to date"));
    }
    assert!(data.path().join("keyport.db").exists());
    let out = keyport()
        .args(["migrate", "--database-url", "mysql://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use sqlite:PATH or postgres://"));
}
