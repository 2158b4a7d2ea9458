//! The client portal: a client signed in by a connection request link sees what they are asked
//! to connect and the connections they authorized in this workspace — nothing else.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::pages::{forbidden, layout};
use super::{SignedIn, page_response};
use crate::auth::people;
use crate::connections::{Need, Principal, Status, view};
use crate::web::AppState;

/// What the signed-in person is asked for and what they connected, or why they have no portal.
async fn portal_data(state: &AppState, p: &Principal) -> Result<Value, String> {
    let email = people::email_of(&state.service, p)
        .await
        .map_err(|e| e.to_string())?;
    Ok(state.service.portal(p, &email).await.unwrap_or(Value::Null))
}

/// `/portal`: outstanding connection requests, then the client's connections.
pub async fn portal(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    let data = match portal_data(&state, &p).await {
        Ok(d) => d,
        Err(why) => return forbidden(&s, &w, &p, &why),
    };
    let empty = Vec::new();
    let requests = data["requests"].as_array().unwrap_or(&empty);
    let connections = data["connections"].as_array().unwrap_or(&empty);
    let (name, logo) = people::branding(&state.service, &s.workspace_id).await;
    let body = html! {
        (brand(&name, logo.as_deref()))
        h1 { "Connections for " (name) }
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
            (connections_table(connections))
        }
    };
    page_response(StatusCode::OK, layout(&s, &w, &p, "Portal", "portal", body))
}

/// The workspace's logo and name at the top of the portal (the agency's portal).
fn brand(name: &str, logo: Option<&str>) -> Markup {
    html! {
        @if let Some(l) = logo {
            div class="brand-logo" { img src=(l) alt={ (name) " logo" } height="48"; }
        }
    }
}

/// The portal's four statuses: a credential that expired or was rejected needs reconnecting.
fn portal_status(status: &str) -> (&'static str, &'static str) {
    match status {
        "active" => ("active", "Connected and working."),
        "pending" => ("pending", "Waiting for the first sync."),
        "revoked" => (
            "revoked",
            "This connection was revoked. Reconnect to keep workflows running.",
        ),
        _ => ("error", "Reconnection needed."),
    }
}

fn badge(status: &str) -> Markup {
    let (value, _) = portal_status(status);
    html! { span class={ "badge badge-" (value) } data-portal-status=(value) { (value) } }
}

fn connections_table(connections: &[Value]) -> Markup {
    html! {
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
                        td { (badge(c["status"].as_str().unwrap_or_default())) }
                        td { a href={ "/portal/connections/" (id) } { "Manage" } }
                    }
                } }
            }
        }
    }
}

/// `/portal/connections`: every connection this client authorized in this workspace.
pub async fn connections(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    let data = match portal_data(&state, &p).await {
        Ok(d) => d,
        Err(why) => return forbidden(&s, &w, &p, &why),
    };
    let empty = Vec::new();
    let (name, logo) = people::branding(&state.service, &s.workspace_id).await;
    let body = html! {
        (brand(&name, logo.as_deref()))
        h1 { "Your connections with " (name) }
        (connections_table(data["connections"].as_array().unwrap_or(&empty)))
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Your connections", "portal", body),
    )
}

/// `/portal/connections/{id}`: one of the client's connections, its health and use, and what
/// they may do with it.
pub async fn connection(
    State(state): State<AppState>,
    SignedIn(s, w, p): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let Ok(row) = state.service.connection_for(&p, &id, Need::See).await else {
        return forbidden(&s, &w, &p, "This connection is not one of yours.");
    };
    let usage = state
        .service
        .connection_usage(&p, &id)
        .await
        .unwrap_or(Value::Null);
    let c = view(&row);
    let app = state.registry.display_name(&row.connector_id);
    let (_, meaning) = portal_status(row.status.as_str());
    let revoked = row.status == Status::Revoked;
    let empty = Vec::new();
    let days = usage["calls_per_day"].as_array().unwrap_or(&empty);
    let body = html! {
        p class="crumbs" { a href="/portal" { "Portal" } " / " (row.name) }
        div class="detail-head" data-connection-id=(id) {
            h1 { (app) }
            p { "Label: " strong data-label { (row.name) } }
            p { (badge(row.status.as_str())) " " span data-status-text { (meaning) } }
        }
        dl class="facts" {
            @if let Some(e) = &row.account_email { dt { "Account" } dd data-account-email { (e) } }
            @if let Some(t) = c["last_refreshed_at"].as_str() { dt { "Last refreshed" } dd { (super::pages::time(Some(t))) } }
            dt { "Last used" } dd { (super::pages::time(usage["last_used_at"].as_str())) }
        }
        div class="actions" {
            @if usage["refreshable"] == true && !revoked {
                button type="button" data-portal-refresh=(id) { "Refresh credential" }
            } @else {
                p class="muted" data-contact-agency { "Contact your agency if this integration needs to be reconnected." }
            }
            @if !revoked { button type="button" class="danger" data-open-dialog="portal-revoke-dialog" { "Revoke" } }
        }
        dialog id="portal-revoke-dialog" aria-labelledby="portal-revoke-title" {
            h2 id="portal-revoke-title" { "Revoke this connection?" }
            p { "Workflows that depend on this credential will pause until you (or another team member) reconnect it. You can reconnect at any time from this page or from a future request email." }
            div class="actions" {
                button type="button" class="danger" data-portal-revoke=(id) { "Revoke connection" }
                button type="button" data-close-dialog autofocus { "Keep connection" }
            }
        }
        section aria-labelledby="usage-title" {
            h2 id="usage-title" { "Use in the last 30 days" }
            @if days.is_empty() { p class="muted" data-usage { "Not used in the last 30 days." } } @else {
                table class="table compact" data-usage {
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Calls" } } }
                    tbody { @for d in days { tr { td { (d["day"].as_str().unwrap_or_default()) } td { (d["calls"]) } } } }
                }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, &row.name, "portal", body),
    )
}

/// `/portal/join#<token>`: opens a connection request link (the token stays in the fragment).
pub async fn join() -> Response {
    page_response(
        StatusCode::OK,
        super::pages::public_page(
            "Connection request",
            html! {
                h1 { "Connection request" }
                p data-request-join { "Opening your request…" }
                div class="alert" role="alert" id="join-error" hidden {}
            },
        ),
    )
}

/// `/login/link#<token>`: signs in with an emailed link (the token stays in the fragment).
pub async fn sign_in_link() -> Response {
    page_response(
        StatusCode::OK,
        super::pages::public_page(
            "Signing in",
            html! {
                h1 { "Signing in" }
                p data-email-link { "Checking your link…" }
                div class="alert" role="alert" id="link-error" hidden {}
                p { a href="/login" { "Back to sign-in" } }
            },
        ),
    )
}
