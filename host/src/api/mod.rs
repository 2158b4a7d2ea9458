//! The HTTP surface: JSON API under `/api/v1`, health, and the start page.
//!
//! Errors are `{"error": {"code", "message"}}` with a message that says what to do.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::registry::Registry;
use crate::runtime::manifest_json;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Loaded connectors.
    pub registry: Arc<Registry>,
}

/// An API error, rendered once here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/api/v1/connectors", get(list_connectors))
        .route("/api/v1/connectors/{id}", get(get_connector))
        .fallback(|| async { ApiError::not_found("no such endpoint; the API lives under /api/v1") })
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn list_connectors(State(state): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<_> = state
        .registry
        .all()
        .iter()
        .map(|e| {
            let mut v = manifest_json(&e.connector);
            v["source"] = json!(e.source);
            v
        })
        .collect();
    Json(json!({ "connectors": list }))
}

async fn get_connector(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let e = state.registry.get(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no connector {id:?}; GET /api/v1/connectors lists the loaded ones"
        ))
    })?;
    let mut v = manifest_json(&e.connector);
    v["source"] = json!(e.source);
    Ok(Json(v))
}

async fn index(State(state): State<AppState>) -> Html<String> {
    let mut cards = String::new();
    for e in state.registry.all() {
        let m = e.connector.manifest();
        let kind = match m.auth {
            crate::runtime::AuthScheme::Oauth2(_) => "OAuth 2",
            crate::runtime::AuthScheme::ApiKey(_) => "API key",
        };
        cards.push_str(&format!(
            "<li class=card><div class=icon aria-hidden=true>{icon}</div><div><h2>{name}</h2><p>{desc}</p><p class=meta>{kind} · v{version} · {scopes} scopes</p></div></li>",
            icon = icon_img(&m.icon),
            name = escape(&m.display_name),
            desc = escape(&m.description),
            version = escape(&m.version),
            scopes = m.scopes.len(),
        ));
    }
    Html(format!(
        r#"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1"><title>keyport</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:52rem;padding:0 1rem;color:#1a1a1a}}ul{{list-style:none;padding:0}}.card{{display:flex;gap:1rem;border:1px solid #ccc;border-radius:8px;padding:1rem;margin:.75rem 0}}.icon img{{width:40px;height:40px}}h2{{margin:0;font-size:1.1rem}}p{{margin:.2rem 0}}.meta{{color:#555;font-size:.9rem}}</style></head>
<body><h1>keyport</h1><p>Integrations loaded on this host. The JSON API is at <a href="/api/v1/connectors">/api/v1/connectors</a>.</p><ul>{cards}</ul></body></html>"#
    ))
}

/// An icon as an `<img>` with a data URL: SVG shown this way cannot run scripts.
fn icon_img(svg: &str) -> String {
    use base64::Engine;
    if !svg.trim_start().starts_with("<svg") {
        return String::new();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(svg);
    format!("<img alt=\"\" width=40 height=40 src=\"data:image/svg+xml;base64,{b64}\">")
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
