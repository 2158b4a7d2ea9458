//! The connector authoring kit: `keyport connector new` writes both kinds of crate, they build
//! for wasm32-wasip2 against this repository's SDK, `connector check` passes and tries the
//! account lookup against a mock, `connector dev --once` uploads to a running `keyport serve`,
//! and an API-key connection completes through the new connector.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use common::e2e::*;
use serde_json::json;

fn keyport() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyport"))
}

/// Builds the generated crates in one target directory kept between runs (the SDK's
/// dependencies compile once).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("connector-kit")
}

fn new_crate(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let out = keyport()
        .args(["connector", "new", name, kind, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.join(name);
    for f in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "README.md",
    ] {
        assert!(root.join(f).exists(), "{name}: {f} is written");
    }
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(config.contains("wasm32-wasip2") && config.contains("stack-size=131072"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for cmd in [
        "cargo build --release",
        "keyport connector check",
        "keyport connector dev",
    ] {
        assert!(readme.contains(cmd), "{name}: the README shows {cmd}");
    }
    // The same locked versions as the built-in connectors: no surprise upgrades.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors/Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .unwrap();
    root
}

fn check(wasm: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = keyport()
        .args(["connector", "check"])
        .arg(wasm)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn new_connectors_build_check_upload_and_connect() {
    let tmp = tempfile::tempdir().unwrap();
    // Refused names say what a name may be.
    let out = keyport()
        .args(["connector", "new", "Bad Name", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a-z, 0-9 and '-'"));

    let api = new_crate(tmp.path(), "acme-keys", "--api-key");
    let oauth = new_crate(tmp.path(), "acme-oauth", "--oauth2");
    let out = keyport()
        .args(["connector", "new", "acme-keys", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an existing crate is never overwritten"
    );

    // Build both for wasm32-wasip2 with the plain command the README gives.
    let mut wasm = Vec::new();
    for root in [&api, &oauth] {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success(), "{} builds", root.display());
        let name = root
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('-', "_");
        wasm.push(target_dir().join(format!("wasm32-wasip2/release/{name}.wasm")));
    }

    // `check`: loads, validates the config defaults.
    for (w, id) in wasm.iter().zip(["acme-keys", "acme-oauth"]) {
        let (ok, stdout, stderr) = check(w, &[]);
        assert!(ok, "{stderr}");
        let manifest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(manifest["id"], id);
        assert!(stderr.contains("validate-config accepts"), "{stderr}");
    }

    // `check --try-lookup`: the request the component made and what it found.
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let mock = common::serve_fake(axum::Router::new().route(
        "/v1/me",
        get(move |h: HeaderMap| {
            let s = s.clone();
            async move {
                let ok = h
                    .get("authorization")
                    .is_some_and(|v| v == "Bearer key-123");
                s.lock().unwrap().push(h);
                if ok {
                    axum::Json(json!({"id": 7, "name": "Acme Ops", "email": "ops@acme.example"}))
                        .into_response()
                } else {
                    (http::StatusCode::UNAUTHORIZED, "no").into_response()
                }
            }
        }),
    ))
    .await;
    // (off the test's thread: the mock answers on it)
    let try_lookup = |credential: &'static str| {
        let (w, base) = (wasm[0].clone(), format!("{mock}/v1/"));
        tokio::task::spawn_blocking(move || {
            check(&w, &["--try-lookup", &base, "--credential", credential])
        })
    };
    let (ok, _, stderr) = try_lookup("key-123").await.unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("lookup-account sent: GET {mock}/v1/me")),
        "{stderr}"
    );
    assert!(stderr.contains("Acme Ops"), "{stderr}");
    assert!(
        !stderr.contains("key-123"),
        "the credential is never printed"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|h| h["authorization"] == "Bearer key-123"),
        "the host added the credential to the component's request"
    );
    let (ok, _, stderr) = try_lookup("wrong").await.unwrap();
    assert!(!ok);
    assert!(stderr.contains("error: lookup-account"), "{stderr}");

    // `dev --once` builds and uploads to a running host.
    let kp = Keyport::start(KeyportOpts::default()).await;
    for root in [&api, &oauth] {
        let out = keyport()
            .args(["connector", "dev"])
            .arg(root)
            .args(["--host", &kp.url, "--token", ADMIN, "--once"])
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("is active on"), "{stderr}");
    }
    let (_, list) = kp.get("/api/v1/admin/connectors").await;
    for id in ["acme-keys", "acme-oauth"] {
        assert!(
            list["connectors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == id && c["source"] == "uploaded"),
            "{id} is loaded: {list}"
        );
    }
    // An API-key connection through the new connector (its API pointed at the mock).
    let (s, b) = kp
        .put(
            "/api/v1/provider-apps/acme-keys",
            json!({"endpoint_overrides": {"https://api.example.com/v1/": format!("{mock}/v1/")}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, c) = kp
        .post(
            "/api/v1/connections",
            json!({"connector": "acme-keys", "api_key": "key-123"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["account"]["display_name"], "Acme Ops");
    assert_eq!(c["account"]["email"], "ops@acme.example");

    // A broken save is reported as the build's error; the host keeps the working version.
    std::fs::write(api.join("src/lib.rs"), "this is not Rust").unwrap();
    let out = keyport()
        .args(["connector", "dev"])
        .arg(&api)
        .args(["--host", &kp.url, "--token", ADMIN, "--once"])
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the build failed"));
    let (s, _) = kp.get("/api/v1/connectors/acme-keys").await;
    assert_eq!(s, 200);
}
