//! The OpenAPI document of `/api/v1`: served, valid, complete, and true to the running host.
//!
//! The heavy check is Schemathesis (`tests/openapi/fuzz.py`): it validates the document with
//! openapi-spec-validator, then sends thousands of generated requests to every operation of a live
//! `keyport serve` and fails on any 5xx, any status code, content type, header or body the
//! document does not describe. It runs in a network namespace of its own (`unshare -n`) holding
//! only loopback, so that nothing it makes the host do (provider discovery, webhooks, API-key
//! checks) can send a packet off this machine.

mod common;

use std::process::Command;

use common::e2e::{Keyport, KeyportOpts};
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_and_describes_every_operation_its_security_and_its_errors() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    // Public, as JSON, and the same document `keyport openapi` prints.
    let r = reqwest::get(format!("{}/api/v1/openapi.json", kp.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = r.json().await.unwrap();
    let printed = Command::new(env!("CARGO_BIN_EXE_keyport"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(
        doc, printed,
        "`keyport openapi` prints what the host serves"
    );

    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["admin_token"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");

    let ops = operations(&doc);
    assert!(ops.len() >= 80, "{} operations", ops.len());
    let mut ids = std::collections::BTreeSet::new();
    for (m, path, op) in &ops {
        let what = format!("{m} {path}");
        assert!(path.starts_with("/api/v1/"), "{what}");
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{what}: operationId taken"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no summary"
        );
        assert!(op["tags"][0].is_string(), "{what}: no tag");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s == "default"),
            "{what}: no success answer"
        );
        for status in ["400", "401", "403", "404", "429"] {
            assert!(
                responses.contains_key(status),
                "{what}: {status} not described"
            );
        }
        // Every error answer has the error body.
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let r = match r["$ref"].as_str() {
                    Some(reference) => {
                        &doc["components"]["responses"][reference.rsplit('/').next().unwrap()]
                    }
                    None => r,
                };
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{what}: {status}"
                );
            }
        }
        let public = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty()));
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["in"] == "header")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            headers.contains(&"X-Keyport-Workspace"),
            !public,
            "{what}: the workspace header belongs to every authenticated operation"
        );
        if op.get("requestBody").is_some() {
            assert!(
                responses.contains_key("422") || path.contains("/proxy/"),
                "{what}"
            );
        }
    }
    // Authenticated unless said otherwise, by each of the three credentials.
    let security = doc["security"].as_array().unwrap();
    assert_eq!(security.len(), 3);
    let public: Vec<String> = ops
        .iter()
        .filter(|(_, _, op)| op.get("security").is_some())
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        public,
        [
            "post /api/v1/auth/email-link",
            "post /api/v1/auth/email-link/use",
            "post /api/v1/auth/password",
            "post /api/v1/connection-requests/join",
            "post /api/v1/invitations/accept",
            "post /api/v1/invitations/lookup",
        ]
    );
    // The objects most callers read are described field by field.
    let connection = &doc["components"]["schemas"]["Connection"];
    for field in [
        "id",
        "connector",
        "status",
        "account",
        "config",
        "expires_at",
    ] {
        assert!(connection["properties"].get(field).is_some(), "{field}");
    }
    assert_eq!(
        doc["components"]["schemas"]["Status"]["enum"],
        serde_json::json!(["pending", "active", "expired", "error", "revoked"])
    );
    // Every operation the document names is routed (a request to it is not the router's 404).
    for (m, path, _) in &ops {
        let url = format!(
            "{}{}",
            kp.url,
            path.replace("{path}", "x").replace(['{', '}'], "")
        );
        let r = kp
            .http
            .request(m.to_uppercase().parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("no such endpoint"),
                "{m} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn the_reference_page_is_rendered_by_the_host_from_the_document() {
    let kp = Keyport::start(KeyportOpts::default()).await;
    let r = reqwest::get(format!("{}/api/reference", kp.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(!page.contains("<script"), "no script, nothing from a CDN");
    assert!(!page.contains("https://"), "nothing loaded from elsewhere");
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", kp.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (m, path, op) in operations(&doc) {
        let summary = maud::html! { (op["summary"].as_str().unwrap()) }.into_string();
        assert!(
            page.contains(&format!("{}</span> <code>{path}</code>", m.to_uppercase())),
            "{m} {path}"
        );
        let plain = summary.replace('`', "");
        let rendered = page.replace("<code>", "").replace("</code>", "");
        assert!(rendered.contains(&plain), "{m} {path}: {plain}");
    }
}

/// The whole API under Schemathesis: at least 1,000 generated requests, no findings.
#[test]
fn schemathesis_finds_nothing_in_the_live_api() {
    let py = common::python::venv("openapi", "schemathesis", "the API checks");
    let fuzz = common::python::repo_root().join("tests/openapi/fuzz.py");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    let _ = std::fs::remove_dir_all(&out);
    // A network namespace with loopback alone: as root `unshare -n`, otherwise as a mapped root.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let flags = if root { "-n" } else { "-rn" };
    let probe = Command::new("unshare").args([flags, "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "the API checks run in a network namespace of their own and need `unshare {flags}` \
         (util-linux; as a non-root user also unprivileged user namespaces: \
         sysctl kernel.unprivileged_userns_clone=1)"
    );
    let output = Command::new("unshare")
        .arg(flags)
        .arg(&py)
        .arg(&fuzz)
        .arg(env!("CARGO_BIN_EXE_keyport"))
        .arg(&out)
        .env(
            "KEYPORT_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyport-component-cache"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Schemathesis found problems (reports in {}):\n{stdout}\n{stderr}",
        out.display()
    );
    // What fuzz.py's statistics say, checked here too.
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    let requests = stats["requests"].as_u64().unwrap();
    assert!(requests >= 1000, "{requests} requests");
    let by_status = stats["by_status"].as_object().unwrap();
    assert!(
        by_status.keys().all(|s| !s.starts_with('5')),
        "no 5xx: {by_status:?}"
    );
    // The fuzzer got past "not found": most operations answered with success at least once.
    let ops = stats["by_operation"].as_object().unwrap();
    let succeeded = ops
        .values()
        .filter(|c| c.as_object().unwrap().keys().any(|s| s.starts_with('2')))
        .count();
    assert!(ops.len() >= 80, "{} operations exercised", ops.len());
    assert!(
        succeeded >= 45,
        "only {succeeded} operations ever answered 2xx:\n{stdout}"
    );
    println!("{stdout}");
}

/// The TypeScript client in `clients/typescript/`: its types are what openapi-typescript makes of
/// the document the host serves now, they type-check, and the client calls a live host.
#[tokio::test]
async fn the_typescript_client_is_generated_from_the_document_and_calls_a_live_host() {
    let dir = common::python::repo_root().join("clients/typescript");
    common::e2e::npm_ci(
        "clients/typescript",
        "openapi-typescript",
        "the TypeScript client's tests",
    );
    let kp = Keyport::start(KeyportOpts::default()).await;
    let doc = reqwest::get(format!("{}/api/v1/openapi.json", kp.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("openapi.json"), doc).unwrap();
    let generated = tmp.path().join("schema.d.ts");
    let status = Command::new(dir.join("node_modules/.bin/openapi-typescript"))
        .arg(tmp.path().join("openapi.json"))
        .arg("-o")
        .arg(&generated)
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "openapi-typescript failed");
    assert!(
        std::fs::read_to_string(&generated).unwrap()
            == std::fs::read_to_string(dir.join("src/schema.d.ts")).unwrap(),
        "clients/typescript/src/schema.d.ts is not what the document generates now: run `npm run generate` in clients/typescript and commit the result"
    );
    let status = Command::new(dir.join("node_modules/.bin/tsc"))
        .args(["-p", "."])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "tsc failed in {}", dir.display());
    let out = Command::new("node")
        .arg("dist/test/live.js")
        .current_dir(&dir)
        .env("KEYPORT_URL", &kp.url)
        .env("KEYPORT_TOKEN", common::e2e::ADMIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the TypeScript client's calls failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all calls answered as typed"));
}
