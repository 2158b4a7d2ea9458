//! The client portal: a client signed in by a connection request link sees what they are asked
//! to connect and the connections they authorized in this workspace — nothing else.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{DOCTYPE, html};
use serde_json::Value;

use super::pages::{forbidden, layout};
use super::{SignedIn, page_response};
use crate::auth::people;
use crate::web::AppState;

/// `/portal`: outstanding connection requests, then the client's connections.
pub async fn portal(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    let email = match people::email_of(&state.service, &p).await {
        Ok(e) => e,
        Err(e) => return forbidden(&s, &w, &p, &e.to_string()),
    };
    let data = state
        .service
        .portal(&p, &email)
        .await
        .unwrap_or(Value::Null);
    let empty = Vec::new();
    let requests = data["requests"].as_array().unwrap_or(&empty);
    let connections = data["connections"].as_array().unwrap_or(&empty);
    let body = html! {
        h1 { "Connections for " (s.workspace_id) }
        section aria-labelledby="requests-title" {
            h2 id="requests-title" { "Outstanding connection requests" }
            @if requests.is_empty() { p class="muted" { "Nothing to connect right now." } }
            @for r in requests {
                @let id = r["id"].as_str().unwrap_or_default();
                article class="card" data-request=(id) {
                    h3 { (r["app"].as_str().unwrap_or_default()) @if let Some(l) = r["label"].as_str() { " · " (l) } }
                    p class="muted" { "Asked by " (r["requested_by"].as_str().unwrap_or_default()) @if r["reconnect"] == true { " to reconnect it" } }
                    @if let Some(m) = r["message"].as_str() { blockquote { (m) } }
                    button type="button" class="primary" data-request-connect=(id) { @if r["reconnect"] == true { "Reconnect" } @else { "Connect" } }
                    p class="notice" data-popup-blocked=(id) hidden {}
                }
            }
        }
        section aria-labelledby="connections-title" {
            h2 id="connections-title" { "Connections" }
            @if connections.is_empty() {
                div class="empty" {
                    h3 { "No connections yet" }
                    p { "When your team asks you to connect an app, it will show up here." }
                }
            } @else {
                table class="table" id="portal-connections" {
                    thead { tr { th scope="col" { "App" } th scope="col" { "Label" } th scope="col" { "Status" } th scope="col" { "Actions" } } }
                    tbody { @for c in connections {
                        @let id = c["id"].as_str().unwrap_or_default();
                        tr data-connection=(id) {
                            td { (c["app"].as_str().unwrap_or_default()) }
                            td { (c["name"].as_str().unwrap_or_default()) }
                            td data-status { (c["status"].as_str().unwrap_or_default()) }
                            td { a href={ "/connections/" (id) } { "Manage" } }
                        }
                    } }
                }
            }
        }
    };
    page_response(StatusCode::OK, layout(&s, &w, &p, "Portal", "portal", body))
}

/// `/portal/join#<token>`: opens a connection request link (the token stays in the fragment).
pub async fn join() -> Response {
    page_response(
        StatusCode::OK,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width,initial-scale=1";
                    title { "Connection request · keyport" }
                    link rel="stylesheet" href="/ui/app.css";
                    script src="/ui/app.js" defer {}
                }
                body class="login" {
                    main id="main" class="narrow" {
                        h1 { "Connection request" }
                        p data-request-join { "Opening your request…" }
                        div class="alert" role="alert" id="join-error" hidden {}
                    }
                    div id="toasts" class="toasts" role="status" aria-live="polite" {}
                }
            }
        },
    )
}
