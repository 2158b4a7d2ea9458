//! Every answer the end-to-end tests get through [`super::e2e::Keyport::api`] is checked against
//! the OpenAPI document (`keyport openapi`): its status must be documented for the operation, and
//! a JSON body must match the documented schema. The whole suite thereby checks the document
//! against real states Schemathesis cannot reach (active connections, signed-in clients, single
//! sign-on, uploaded connectors).

use std::sync::OnceLock;

use serde_json::{Value, json};

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyport"))
            .arg("openapi")
            .output()
            .expect("keyport openapi");
        assert!(out.status.success(), "keyport openapi failed");
        serde_json::from_slice(&out.stdout).expect("the document is JSON")
    })
}

/// The documented path template `path` (without its query) falls under, preferring literal
/// segments over parameters.
fn template(doc: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .filter_map(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (p, s) in parts.iter().zip(&segments) {
                if p.starts_with('{') {
                    continue;
                }
                if p != s {
                    return None;
                }
                literal += 1;
            }
            Some((literal, t.clone()))
        })
        .max()
        .map(|(_, t)| t)
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or(v),
        None => v,
    }
}

/// Panics when the answer is not what the document says `method path` answers.
pub fn check(method: &str, path_and_query: &str, status: u16, body: &Value) {
    let path = path_and_query.split('?').next().unwrap_or("");
    if !path.starts_with("/api/v1/") || path.contains("/proxy") {
        return;
    }
    let doc = document();
    let Some(t) = template(doc, path) else {
        panic!("{method} {path}: not in the OpenAPI document");
    };
    let op = &doc["paths"][&t][method.to_lowercase()];
    if op.is_null() {
        // A method the route does not take: the router's 405, not an operation.
        assert_eq!(
            status, 405,
            "{method} {path}: undocumented operation answered {status}"
        );
        return;
    }
    let responses = &op["responses"];
    let Some(response) = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
    else {
        panic!(
            "{method} {t}: status {status} is not documented (documented: {:?}); body {body}",
            responses.as_object().map(|r| r.keys().collect::<Vec<_>>())
        );
    };
    let response = resolve(doc, response);
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return;
    };
    if body.is_string() && status == 204 {
        return;
    }
    let mut root = schema.clone();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("components".into(), doc["components"].clone());
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
    }
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{method} {t}: the documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {t} answered {status} with a body the OpenAPI document does not describe:\n{}\nbody: {body}",
        errors.join("\n")
    );
}
