//! Rules over all built-in connectors: each crate in `connectors/` has its own test file with real
//! tests, passes `keyport connector check`, and is served by `GET /api/v1/connectors`.

mod common;

use std::path::Path;

fn connector_crates() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_connector_crate_has_tests() {
    let crates = connector_crates();
    assert!(crates.len() >= 5, "{crates:?}");
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut missing = Vec::new();
    for name in &crates {
        let file = tests.join(format!("connector_{}.rs", name.replace('-', "_")));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.matches("#[tokio::test]").count() + text.matches("#[test]").count() < 3 {
            missing.push(format!(
                "{name}: add at least three tests to {}",
                file.display()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "connectors without tests:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_connector_crate_is_built_in() {
    let built: Vec<&str> = keyport::builtin::BUILTIN.iter().map(|(n, _)| *n).collect();
    for name in connector_crates() {
        assert!(
            built.contains(&name.as_str()),
            "{name} is not embedded in the binary: {built:?}"
        );
    }
}

#[test]
fn connector_check_passes_on_every_builtin_connector() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in keyport::builtin::BUILTIN {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyport"))
            .args(["connector", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn the_api_lists_every_builtin_with_scopes_and_config_schema() {
    let kp = common::e2e::Keyport::start(Default::default()).await;
    let (_, list) = kp.get("/api/v1/connectors").await;
    let connectors = list["connectors"].as_array().unwrap();
    let template = connectors
        .iter()
        .find(|c| c["id"] == "custom-oauth")
        .expect("the custom-OAuth template is listed");
    assert_eq!(template["configurable"], true);
    let builtin = connectors
        .iter()
        .filter(|c| c["source"] == "builtin")
        .count();
    assert_eq!(builtin, 6, "six built-in connectors");
    for id in ["slack", "hubspot", "gmail", "avoma", "fireflies"] {
        let c = connectors
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} is listed: {list}"));
        assert_eq!(c["source"], "builtin");
        assert_eq!(c["config_schema"]["type"], "object", "{id}");
        assert!(!c["egress_hosts"].as_array().unwrap().is_empty(), "{id}");
        if c["auth_kind"] == "oauth2" {
            let scopes = c["scopes"].as_array().unwrap();
            assert!(
                scopes.iter().any(|s| s["required"] == true),
                "{id} has required scopes"
            );
            assert!(
                scopes
                    .iter()
                    .all(|s| !s["description"].as_str().unwrap().is_empty()),
                "{id} describes its scopes"
            );
        }
    }
}
