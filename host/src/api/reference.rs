//! `GET /api/reference`: the API reference, rendered by the host from the OpenAPI document
//! ([`super::document`]) as one static page: no script, nothing from a CDN. Operations are grouped
//! by tag, each with its parameters, request body and answers; schemas are listed at the end and
//! linked from wherever they are used.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// The page (built once: the document never changes while the process runs).
pub async fn page() -> Response {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = PAGE.get_or_init(|| {
        let doc = serde_json::to_value(super::document()).unwrap_or_default();
        render(&doc).into_string()
    });
    let mut r = (StatusCode::OK, maud::PreEscaped(body.clone())).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The anchor of an operation.
fn op_anchor(method: &str, path: &str) -> String {
    let mut a = format!("op-{method}-");
    for c in path.chars() {
        a.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    a
}

/// The last segment of a `$ref`.
fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// A schema as a short type: a link for references, `array of …`, `string | null`, enums.
fn type_of(s: &Value) -> Markup {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = ref_name(r);
        return html! { a href={ "#schema-" (name) } { (name) } };
    }
    for (key, joiner) in [("allOf", " and "), ("oneOf", " or "), ("anyOf", " or ")] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            return html! {
                @for (i, item) in list.iter().enumerate() {
                    @if i > 0 { (joiner) }
                    (type_of(item))
                }
            };
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    html! {
        @if types.is_empty() {
            "any"
        }
        @for (i, t) in types.iter().enumerate() {
            @if i > 0 { " | " }
            @if *t == "array" {
                "array of " (s.get("items").map(type_of).unwrap_or_else(|| html! { "any" }))
            } @else {
                (t)
            }
        }
        @if let Some(f) = s.get("format").and_then(Value::as_str) {
            " (" (f) ")"
        }
        @if let Some(e) = s.get("enum").and_then(Value::as_array) {
            ": " (e.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Text with `code` spans.
fn inline(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn description(v: &Value) -> Markup {
    html! {
        @if let Some(d) = v.get("description").and_then(Value::as_str) {
            @for para in d.split("\n\n") {
                p { (inline(para)) }
            }
        }
    }
}

/// A schema's properties as a table (or its type when it has none).
fn schema_body(s: &Value) -> Markup {
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = s.get("properties").and_then(Value::as_object);
    html! {
        @if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
            p { "All of: " (type_of(s)) }
            @for part in parts.iter().filter(|p| p.get("properties").is_some()) {
                (schema_body(part))
            }
        } @else if let Some(props) = props {
            table {
                thead { tr { th { "Field" } th { "Type" } th { "Required" } th { "Description" } } }
                tbody {
                    @for (name, p) in props {
                        tr {
                            td { code { (name) } }
                            td { (type_of(p)) }
                            td { @if required.contains(&name.as_str()) { "yes" } @else { "no" } }
                            td { (inline(p.get("description").and_then(Value::as_str).unwrap_or(""))) }
                        }
                    }
                }
            }
        } @else {
            p { "Type: " (type_of(s)) }
        }
    }
}

/// An answer's or a body's media types and schemas.
fn content(c: &Value) -> Markup {
    html! {
        @if let Some(c) = c.as_object() {
            @for (media, m) in c {
                span.muted { code { (media) } }
                @if let Some(s) = m.get("schema") {
                    " " (type_of(s))
                }
            }
        }
    }
}

fn operation(doc: &Value, method: &str, path: &str, op: &Value) -> Markup {
    let resolve = |v: &'_ Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => doc["components"]["responses"][ref_name(r)].clone(),
            None => v.clone(),
        }
    };
    let public = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
        });
    html! {
        section.op id=(op_anchor(method, path)) {
            h3 { span.method { (method.to_uppercase()) } " " code { (path) } }
            p { strong { (inline(op.get("summary").and_then(Value::as_str).unwrap_or(""))) } }
            (description(op))
            p.muted {
                @if public { "No credential needed." } @else { "Admin token, workspace API key, or session with CSRF token." }
                @if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    " Operation id: " code { (id) } "."
                }
            }
            @if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
                h4 { "Parameters" }
                table {
                    thead { tr { th { "Name" } th { "In" } th { "Type" } th { "Required" } th { "Description" } } }
                    tbody {
                        @for p in params {
                            tr {
                                td { code { (p["name"].as_str().unwrap_or("")) } }
                                td { (p["in"].as_str().unwrap_or("")) }
                                td { (p.get("schema").map(type_of).unwrap_or_else(|| html! { "any" })) }
                                td { @if p["required"].as_bool() == Some(true) { "yes" } @else { "no" } }
                                td { (inline(p.get("description").and_then(Value::as_str).unwrap_or(""))) }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = op.get("requestBody") {
                h4 { "Request body" @if body["required"].as_bool() != Some(true) { " (optional)" } }
                (description(body))
                p { (content(&body["content"])) }
            }
            h4 { "Answers" }
            table {
                thead { tr { th { "Status" } th { "Description" } th { "Body" } } }
                tbody {
                    @if let Some(rs) = op.get("responses").and_then(Value::as_object) {
                        @for (status, r) in rs {
                            @let r = resolve(r);
                            tr {
                                td { code { (status) } }
                                td { (inline(r.get("description").and_then(Value::as_str).unwrap_or(""))) }
                                td { (content(&r["content"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The whole page.
pub fn render(doc: &Value) -> Markup {
    let info = &doc["info"];
    let mut tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or("").to_string(),
                        t["description"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ops: Vec<(&str, &str, &Value)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter_map(move |m| item.get(*m).map(|op| (*m, path.as_str(), op)))
        })
        .collect();
    let tag_of = |op: &Value| op["tags"][0].as_str().unwrap_or("other").to_string();
    for (_, _, op) in &ops {
        let t = tag_of(op);
        if !tags.iter().any(|(n, _)| *n == t) {
            tags.push((t, String::new()));
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object();
    let schemas = doc["components"]["schemas"].as_object();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "keyport API reference" }
                link rel="stylesheet" href="/ui/app.css";
            }
            body.reference {
                main {
                    h1 { (info["title"].as_str().unwrap_or("keyport")) " API reference" }
                    p.muted {
                        "Version " (info["version"].as_str().unwrap_or("")) " · OpenAPI " (doc["openapi"].as_str().unwrap_or(""))
                        " · " a href="/api/v1/openapi.json" { "openapi.json" }
                    }
                    (description(info))
                    h2 id="authentication" { "Authentication" }
                    @if let Some(schemes) = schemes {
                        dl {
                            @for (name, s) in schemes {
                                dt { code { (name) } " — "
                                    @if let Some(scheme) = s["scheme"].as_str() { (s["type"].as_str().unwrap_or("")) " " (scheme) }
                                    @else { (s["in"].as_str().unwrap_or("")) " " code { (s["name"].as_str().unwrap_or("")) } }
                                }
                                dd { (inline(s["description"].as_str().unwrap_or(""))) }
                            }
                        }
                    }
                    nav aria-label="Operations" {
                        h2 { "Operations" }
                        @for (tag, _) in &tags {
                            h3 { (tag) }
                            ul {
                                @for (m, p, op) in ops.iter().filter(|(_, _, op)| tag_of(op) == *tag) {
                                    li {
                                        a href={ "#" (op_anchor(m, p)) } {
                                            span.method { (m.to_uppercase()) } " " code { (p) }
                                        }
                                        " — " (inline(op.get("summary").and_then(Value::as_str).unwrap_or("")))
                                    }
                                }
                            }
                        }
                    }
                    @for (tag, about) in &tags {
                        h2 id={ "tag-" (tag) } { (tag) }
                        @if !about.is_empty() { p.muted { (inline(about)) } }
                        @for (m, p, op) in ops.iter().filter(|(_, _, op)| tag_of(op) == *tag) {
                            (operation(doc, m, p, op))
                        }
                    }
                    h2 id="schemas" { "Schemas" }
                    @if let Some(schemas) = schemas {
                        @for (name, s) in schemas {
                            section.schema id={ "schema-" (name) } {
                                h3 { (name) }
                                (description(s))
                                (schema_body(s))
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_and_schema_is_on_the_page_and_every_link_has_its_target() {
        let doc = serde_json::to_value(super::super::document()).unwrap();
        let page = render(&doc).into_string();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in METHODS {
                if item.get(m).is_some() {
                    let anchor = op_anchor(m, path);
                    assert!(page.contains(&format!("id=\"{anchor}\"")), "{m} {path}");
                    assert!(page.contains(&format!("href=\"#{anchor}\"")), "{m} {path}");
                    count += 1;
                }
            }
        }
        assert!(count >= 80, "{count} operations");
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        // Every in-page link lands somewhere.
        for link in page.split("href=\"#").skip(1) {
            let target = &link[..link.find('"').unwrap()];
            assert!(
                page.contains(&format!("id=\"{target}\"")),
                "a link to #{target} has no target"
            );
        }
        assert!(page.contains("X-Keyport-Workspace"));
        assert!(!page.contains("<script"), "the page runs no script");
    }
}
