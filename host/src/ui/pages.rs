//! The pages, rendered with maud (every interpolation is HTML-escaped).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

use super::{SignedIn, page_response};
use crate::auth::{Session, people};
use crate::connections::{ConnectionFilter, Need, Principal, Role, Status, Who, rfc3339, view};
use crate::registry::Source;
use crate::runtime::{AuthScheme, Manifest};
use crate::web::AppState;

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Pending => "Pending",
        Status::Active => "Active",
        Status::Expired => "Expired",
        Status::Error => "Error",
        Status::Revoked => "Revoked",
    }
}

/// What a status means, and what to do next.
fn status_help(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Pending => (
            "Waiting for the authorization or for the account lookup.",
            "Finish the provider's consent screen, or Reconnect to start again.",
        ),
        Status::Active => (
            "Working. keyport refreshes the credential before it expires.",
            "Nothing to do.",
        ),
        Status::Expired => (
            "The credential expired and keyport could not refresh it yet.",
            "Refresh credential; if that fails, Reconnect.",
        ),
        Status::Error => (
            "Recent refreshes or calls with this connection failed.",
            "keyport keeps retrying. Refresh credential to try now, or Reconnect.",
        ),
        Status::Revoked => (
            "The authorization was revoked; keyport holds no credential for it any more.",
            "Reconnect to authorize again, or Delete the connection.",
        ),
    }
}

/// A status badge for a connection's JSON view (the string form is the edge: HTML).
fn badge_of(c: &Value) -> Markup {
    html! {
        @match c["status"].as_str().and_then(|s| s.parse().ok()) {
            Some(st) => (badge(st)),
            None => span class="badge" { "Unknown" },
        }
        @if c["enabled"] == false { " " span class="badge badge-disabled" { "Disabled" } }
    }
}

fn badge(status: Status) -> Markup {
    html! { span class={ "badge badge-" (status.as_str()) } { (status_label(status)) } }
}

pub(super) fn time(ts: Option<&str>) -> Markup {
    match ts {
        Some(t) => html! { time datetime=(t) { (t) } },
        None => html! { span class="muted" { "never" } },
    }
}

fn icon(svg: &str) -> Markup {
    use base64::Engine;
    if !svg.trim_start().starts_with("<svg") {
        return html! { span class="icon icon-empty" aria-hidden="true" {} };
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(svg);
    html! { img class="icon" alt="" width="40" height="40" src={ "data:image/svg+xml;base64," (b64) }; }
}

fn auth_kind(m: &Manifest) -> &'static str {
    match m.auth {
        AuthScheme::Oauth2(_) => "OAuth 2",
        AuthScheme::ApiKey(_) => "API key",
    }
}

pub(super) fn layout(
    s: &Session,
    workspaces: &[(String, String)],
    p: &Principal,
    title: &str,
    nav: &str,
    body: Markup,
) -> Markup {
    let admin = p.is_workspace_admin();
    let client = p.role() == Some(Role::Client);
    let links: Vec<(&str, &str, &str)> = [
        ("/portal", "Portal", "portal", client),
        ("/", "Integrations", "integrations", !client),
        ("/connections", "Connections", "connections", !client),
        ("/members", "Members", "members", !client),
        ("/admin", "Admin", "admin", admin),
        ("/admin/audit", "Audit log", "audit", !client),
    ]
    .into_iter()
    .filter(|l| l.3)
    .map(|(a, b, c, _)| (a, b, c))
    .collect();
    let (who, role) = match &p.who {
        Who::User { label, role, .. } => (label.clone(), role.as_str()),
        _ => ("Admin token".to_string(), "owner"),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="csrf-token" content=(s.csrf_token);
                title { (title) " · keyport" }
                link rel="stylesheet" href="/ui/app.css";
                script src="/static/keyport-connect.js" defer {}
                script src="/ui/app.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "keyport" }
                    nav aria-label="Main" {
                        @for (href, label, key) in links {
                            a href=(href) aria-current=[(key == nav).then_some("page")] { (label) }
                        }
                    }
                    @if workspaces.len() > 1 {
                        form method="post" action="/ui/workspace" class="workspace" data-workspace-form {
                            input type="hidden" name="csrf" value=(s.csrf_token);
                            input type="hidden" name="next" value="" data-current-path;
                            label for="workspace-select" { "Workspace" }
                            select id="workspace-select" name="workspace" {
                                @for (id, name) in workspaces { option value=(id) selected[*id == s.workspace_id] { (name) } }
                            }
                            button type="submit" { "Switch" }
                        }
                    }
                    @if workspaces.len() <= 1 { span class="muted" { "Workspace " strong { (s.workspace_id) } } }
                    details class="user-menu" {
                        summary id="user-menu" { span data-signed-in-as { (who) } " " span class="muted" { "(" (role) ")" } }
                        div class="menu" {
                            a href="/account" { "Account and password" }
                            @if p.user_id().is_some() { button type="button" class="link" data-sign-out-everywhere { "Sign out everywhere" } }
                            form method="post" action="/logout" class="signout" {
                                input type="hidden" name="csrf" value=(s.csrf_token);
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
                div id="toasts" class="toasts" role="status" aria-live="polite" {}
            }
        }
    }
}

/// The sign-in page.
/// A page for people not signed in (sign-in, invitation, request and sign-in links): the
/// stylesheet, the script, a narrow main and the toasts.
pub(super) fn public_page(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · keyport" }
                link rel="stylesheet" href="/ui/app.css";
                script src="/static/keyport-connect.js" defer {}
                script src="/ui/app.js" defer {}
            }
            body class="login" {
                main id="main" class="narrow" { (main) }
                div id="toasts" class="toasts" role="status" aria-live="polite" {}
            }
        }
    }
}

pub fn login(next: &str, error: Option<&str>, token_first: bool, sso: bool) -> Markup {
    public_page(
        "Sign in",
        html! {
            h1 { "Sign in to keyport" }
            @if let Some(e) = error { p class="alert" role="alert" id="login-error" { (e) } }
            @if sso {
                p { a class="button primary" id="sso-sign-in" href={ "/sso/start?next=" (url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()) } { "Sign in with single sign-on" } }
            }
            @if token_first {
                (token_form(next, error.is_some()))
                details class="other-sign-in" {
                    summary { "Sign in with email and password" }
                    (password_form(next, false))
                }
            } @else {
                (password_form(next, error.is_some()))
                details class="other-sign-in" {
                    summary { "Sign in with the admin token" }
                    (token_form(next, false))
                }
            }
            details class="other-sign-in" id="email-link" {
                summary { "No password? Email me a sign-in link" }
                form data-email-link-form novalidate {
                    label for="link-email" { "Email" }
                    input id="link-email" name="email" type="email" autocomplete="email" required;
                    button type="submit" { "Email me a link" }
                    p class="notice" role="status" data-email-link-sent hidden {}
                }
            }
        },
    )
}

fn password_form(next: &str, described: bool) -> Markup {
    html! {
        form method="post" action="/login" id="password-sign-in" {
            input type="hidden" name="next" value=(next);
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" required autofocus
                aria-describedby=[described.then_some("login-error")];
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" class="primary" { "Sign in" }
        }
    }
}

fn token_form(next: &str, described: bool) -> Markup {
    html! {
        p { "The admin token is the bootstrap and break-glass credential: keyport printed it with the address of this page when it first started (or it is the value of " code { "KEYPORT_ADMIN_TOKEN" } ")." }
        form method="post" action="/login" id="token-sign-in" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Admin token" }
            input id="token" name="token" type="password" autocomplete="off" required autofocus
                aria-describedby=[described.then_some("login-error")];
            button type="submit" class="primary" { "Sign in" }
        }
    }
}

/// Rows per page of the connections table.
const PAGE: i64 = 50;
/// Connections listed under an Integrations card (the rest are one click away).
const PER_CARD: i64 = 5;

/// One page of connections as their JSON views, and how many match in all.
async fn connections_of(
    state: &AppState,
    who: &Principal,
    filter: &ConnectionFilter,
    offset: i64,
    limit: i64,
) -> (Vec<Value>, i64) {
    state
        .service
        .connections_page(who, filter, offset, limit)
        .await
        .map(|(rows, total)| (rows.iter().map(view).collect(), total))
        .unwrap_or_default()
}

fn account_line(c: &Value) -> Markup {
    let id = c["id"].as_str().unwrap_or_default();
    let name = c["account"]["display_name"].as_str();
    html! {
        @if let Some(n) = name {
            span class="account" { "Connected as: " strong { (n) } }
                } @else if c["status"] == "pending" && c["last_refreshed_at"].is_null() {
            span class="account muted" { "Authorization not completed" }
        } @else if c["status"] == "pending" || c["status"] == "active" {
            span class="account muted" data-poll-account=(id) { "Looking up the account…" }
        }
    }
}

/// A card's buttons: Connect (OAuth popup) or Configure (the API-key dialog), and Docs.
/// The settings a connection needs before it can start (a Zendesk subdomain, a Shopify shop), as
/// form fields; empty when the connector has none.
fn start_fields(m: &Manifest) -> Markup {
    let schema: Value = serde_json::from_str(&m.config_schema).unwrap_or(Value::Null);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let prefix = format!("start-{}", m.id);
    html! {
        @if let Some(props) = schema["properties"].as_object() {
            @for (key, prop) in props {
                (config_field(&prefix, key, prop, &Value::Null, required.contains(&key.as_str())))
            }
        }
    }
}

/// Whether a connection is started from a settings dialog: when the schema requires a setting
/// without a default, or (for a catalogue entry or an imported provider, whose settings are
/// parts of its URLs) has any setting at all — GitLab's optional self-managed host.
fn settings_first(m: &Manifest, source: Source) -> bool {
    let Ok(schema) = serde_json::from_str::<Value>(&m.config_schema) else {
        return false;
    };
    let Some(props) = schema["properties"].as_object().filter(|p| !p.is_empty()) else {
        return false;
    };
    if matches!(source, Source::Catalogue | Source::Imported) {
        return true;
    }
    schema["required"].as_array().is_some_and(|req| {
        req.iter()
            .filter_map(Value::as_str)
            .any(|r| props.get(r).is_some_and(|p| p.get("default").is_none()))
    })
}

fn card_actions(
    m: &Manifest,
    source: Source,
    first: bool,
    docs: Option<&str>,
    app_ready: bool,
    admin: bool,
) -> Markup {
    html! {
        div class="actions" {
            @match &m.auth {
                AuthScheme::Oauth2(_) if !app_ready => {
                    @if admin {
                        a class="button" href={ "/admin#app-" (m.id) } aria-label={ "Set up " (m.display_name) } { "Set up" }
                        span class="muted" { "Register an OAuth app for this workspace first." }
                    } @else {
                        span class="muted" { "Not set up yet: an admin registers the app first." }
                    }
                }
                AuthScheme::Oauth2(_) if settings_first(m, source) => {
                    button type="button" class="primary" data-open-dialog={ "connect-" (m.id) } aria-label={ "Connect " (m.display_name) } { @if first { "Connect" } @else { "Connect another" } }
                    dialog id={ "connect-" (m.id) } aria-labelledby={ "connect-title-" (m.id) } {
                        form data-connect-form=(m.id) data-stored="{}" novalidate {
                            h2 id={ "connect-title-" (m.id) } { "Connect " (m.display_name) }
                            (start_fields(m))
                            div class="actions" {
                                button type="button" data-close-dialog { "Cancel" }
                                button type="submit" class="primary" { "Continue to " (m.display_name) }
                            }
                        }
                    }
                }
                AuthScheme::Oauth2(_) => {
                    button type="button" class="primary" data-connect=(m.id) aria-label={ "Connect " (m.display_name) } { @if first { "Connect" } @else { "Connect another" } }
                }
                AuthScheme::ApiKey(k) => {
                    button type="button" class="primary" data-open-dialog={ "configure-" (m.id) } aria-label={ "Configure " (m.display_name) } { "Configure" }
                    dialog id={ "configure-" (m.id) } aria-labelledby={ "configure-title-" (m.id) } {
                        form data-api-key-form=(m.id) {
                            h2 id={ "configure-title-" (m.id) } { "Connect " (m.display_name) }
                            label for={ "key-" (m.id) } { (k.label) }
                            input id={ "key-" (m.id) } name="api_key" type="password" autocomplete="off" required aria-describedby={ "key-help-" (m.id) " key-error-" (m.id) };
                            p class="help" id={ "key-help-" (m.id) } { (k.help) @if let Some(d) = docs { " " a href=(d) target="_blank" rel="noopener noreferrer" { "Where to find it" } } }
                            p class="field-error" id={ "key-error-" (m.id) } data-error-for="/api_key" {}
                            (start_fields(m))
                            label for={ "name-" (m.id) } { "Name (optional)" }
                            input id={ "name-" (m.id) } name="name" type="text" placeholder=(m.display_name);
                            div class="actions" {
                                button type="button" data-close-dialog { "Cancel" }
                                button type="submit" class="primary" { "Connect" }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = docs { a href=(d) target="_blank" rel="noopener noreferrer" aria-label={ (m.display_name) " documentation" } { "Docs" } }
        }
    }
}

/// The dialog that re-enters an API-key connection's key (rotated at the provider).
fn api_key_dialog(id: &str, label: &str) -> Markup {
    html! {
        dialog id="api-key-dialog" aria-labelledby="api-key-title" {
            form data-api-key-replace=(id) {
                h2 id="api-key-title" { "Replace the " (label) }
                p { "Re-enter the " (label) " after rotating it at the provider. keyport checks it first; the connection keeps its name, settings and dependent workflows." }
                label for="replace-key" { (label) }
                input id="replace-key" name="api_key" type="password" autocomplete="off" required aria-describedby="replace-key-error";
                p class="field-error" id="replace-key-error" data-error-for="/api_key" {}
                div class="actions" {
                    button type="button" data-close-dialog { "Cancel" }
                    button type="submit" class="primary" { "Replace key" }
                }
            }
        }
    }
}

/// `/`: Integrations.
pub async fn integrations(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    let mut entries = state.registry.all();
    // Integrations an admin hid in this workspace are listed on the Admin page only.
    let hidden = state
        .service
        .hidden_connectors(&p.workspace)
        .await
        .unwrap_or_default();
    let apps = state
        .service
        .configured_apps(&p.workspace)
        .await
        .unwrap_or_default();
    let admin = p.is_workspace_admin();
    entries.retain(|e| {
        let m = e.connector.manifest();
        !m.configurable && !hidden.contains(&m.id)
    });
    entries.sort_by(|a, b| {
        a.connector
            .manifest()
            .display_name
            .to_lowercase()
            .cmp(&b.connector.manifest().display_name.to_lowercase())
    });
    let mut categories: Vec<String> = entries
        .iter()
        .flat_map(|e| e.connector.manifest().categories.clone())
        .collect();
    categories.sort();
    categories.dedup();
    // Per card: the newest connections, how many there are, whether one is active.
    let mut listed = std::collections::HashMap::new();
    for e in &entries {
        let id = e.connector.manifest().id.clone();
        let of = |status: Option<Status>| ConnectionFilter {
            connector: Some(id.clone()),
            status,
            ..Default::default()
        };
        let (rows, total) = connections_of(&state, &p, &of(None), 0, PER_CARD).await;
        let active = state
            .service
            .count_connections(&p, &of(Some(Status::Active)))
            .await
            .unwrap_or_default();
        listed.insert(id, (rows, total, active > 0));
    }
    let none = (Vec::new(), 0, false);
    let first_owner = p.who == Who::AdminToken && !people::has_people(&state.service).await;
    let body = html! {
        h1 { "Integrations" }
        @if first_owner {
            section class="notice" aria-labelledby="first-owner-title" {
                h2 id="first-owner-title" { "Create the first owner account" }
                p { "You signed in with the admin token. Create an account for yourself: it owns this workspace and may do what the token does. Keep the token for emergencies." }
                form data-first-owner-form novalidate {
                    label for="owner-email" { "Email" }
                    input id="owner-email" name="email" type="email" autocomplete="username" required;
                    p class="field-error" data-error-for="/email" {}
                    label for="owner-password" { "Password (10 characters or more)" }
                    input id="owner-password" name="password" type="password" autocomplete="new-password" minlength="10" required;
                    p class="field-error" data-error-for="/password" {}
                    button type="submit" class="primary" { "Create owner account" }
                }
            }
        }
        p class="lead" { "Connect the accounts your workflows use. keyport keeps their credentials encrypted and fresh." }
        @if categories.len() > 1 {
            div class="filters" {
                label for="category-filter" { "Category" }
                select id="category-filter" data-category-filter {
                    option value="" { "All" }
                    @for c in &categories { option value=(c) { (c) } }
                }
            }
        }
        ul class="cards" {
            @for e in &entries {
                @let m = e.connector.manifest();
                                                @let (mine, total, connected) = listed.get(&m.id).unwrap_or(&none);
                @let docs = m.docs_url.as_deref().filter(|d| d.starts_with("https://") || d.starts_with("http://"));

                li class="card" data-connector=(m.id) data-categories=(m.categories.join(" ")) {
                    div class="card-head" {
                        (icon(&m.icon))
                        div {
                            h2 { (m.display_name) }
                            p class="meta" {
                                span class="pill" { (auth_kind(m)) }
                                @for c in &m.categories { " " span class="pill pill-soft" { (c) } }
                                                                @if *connected { " " span class="badge badge-active" { "Connected" } }
                            }
                        }
                    }
                    p { (m.description) }
                    @if !m.scopes.is_empty() {
                        details {
                            summary { "Permissions requested (" (m.scopes.len()) ")" }
                            ul class="scopes" {
                                @for sc in &m.scopes {
                                    li { code { (sc.name) } @if !sc.description.is_empty() { " — " (sc.description) } @if !sc.required { " " span class="muted" { "(optional)" } } }
                                }
                            }
                        }
                    }
                    (card_actions(m, e.source, mine.is_empty(), docs, apps.contains(&m.id), admin))
                    p class="notice" data-popup-blocked=(m.id) hidden {}
                    @if !mine.is_empty() {
                        ul class="conn-list" aria-label={ (m.display_name) " connections" } {
                                                        @for c in mine {
                                li {
                                    (badge_of(c))
                                    " " span { (c["name"].as_str().unwrap_or_default()) } " "
                                    (account_line(c))
                                    " " a href={ "/connections/" (c["id"].as_str().unwrap_or_default()) } aria-label={ "Manage " (c["name"].as_str().unwrap_or_default()) } { "Manage" }
                                }
                            }
                        }
                        @if *total > PER_CARD {
                            p { a href={ "/connections?connector=" (m.id) } { "All " (total) " " (m.display_name) " connections" } }
                        }
                    }
                }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Integrations", "integrations", body),
    )
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    connector: Option<String>,
    status: Option<String>,
    page: Option<i64>,
}

/// `/connections`: the table with filters.
pub async fn connections(
    State(state): State<AppState>,
    SignedIn(s, w, p): SignedIn,
    Query(q): Query<ListQuery>,
) -> Response {
    let connector = q.connector.filter(|c| !c.is_empty());
    let status = q.status.and_then(|st| st.parse::<Status>().ok());
    let filtered = connector.is_some() || status.is_some();
    let page = q.page.unwrap_or(1).clamp(1, 1_000_000);
    let (rows, total) = connections_of(
        &state,
        &p,
        &ConnectionFilter {
            connector: connector.clone(),
            status,
            ..Default::default()
        },
        (page - 1) * PAGE,
        PAGE,
    )
    .await;
    let page_link = |p: i64| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(c) = &connector {
            q.append_pair("connector", c);
        }
        if let Some(st) = status {
            q.append_pair("status", st.as_str());
        }
        q.append_pair("page", &p.to_string());
        format!("/connections?{}", q.finish())
    };
    let first = (page - 1) * PAGE + 1;
    let last = (page - 1) * PAGE + rows.len() as i64;
    let mut ids: Vec<(String, String)> = state
        .registry
        .all()
        .iter()
        .map(|e| {
            (
                e.connector.manifest().id.clone(),
                e.connector.manifest().display_name.clone(),
            )
        })
        .collect();
    ids.sort();
    let name_of = |id: &str| {
        ids.iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let members: std::collections::HashMap<String, String> = people::members(&state.service, &p)
        .await
        .ok()
        .and_then(|v| v["members"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            Some((
                m["user_id"].as_str()?.to_string(),
                m["email"]
                    .as_str()
                    .or(m["external_id"].as_str())?
                    .to_string(),
            ))
        })
        .collect();
    let owner_of = |c: &Value| match c["owner"]["user_id"].as_str() {
        None => "Workspace".to_string(),
        Some(u) if Some(u) == p.user_id() => "You".to_string(),
        Some(u) => members
            .get(u)
            .cloned()
            .unwrap_or_else(|| "Former member".into()),
    };
    let sharing_of = |c: &Value| match (c["visibility"].as_str(), c["permission"].as_str()) {
        (Some("personal"), _) => "personal",
        (_, Some("use")) => "shared: use",
        _ => "shared: manage",
    };
    let body = html! {
        h1 { "Connections" }
        form class="filters" method="get" action="/connections" {
            label for="f-connector" { "Connector" }
            select id="f-connector" name="connector" {
                option value="" { "All connectors" }
                @for (id, name) in &ids { option value=(id) selected[connector.as_deref() == Some(id.as_str())] { (name) } }
            }
            label for="f-status" { "Status" }
            select id="f-status" name="status" {
                option value="" { "All statuses" }
                @for st in Status::ALL { option value=(st.as_str()) selected[status == Some(st)] { (status_label(st)) } }
            }
            button type="submit" { "Apply" }
            @if filtered { a href="/connections" { "Clear filters" } }
        }
                @if rows.is_empty() && page > 1 {
            div class="empty" {
                h2 { "No more connections" }
                p { a href=(page_link(1)) { "Back to the first page" } }
            }
        } @else if rows.is_empty() {
            div class="empty" {
                @if filtered {
                    h2 { "No connections match these filters" }
                    p { a href="/connections" { "Clear the filters" } " to see every connection." }
                } @else {
                    h2 { "No connections yet" }
                    p { "Open " a href="/" { "Integrations" } " and choose Connect (or Configure for API-key services) on a card. Connections appear here with their status." }
                }
            }
        } @else {
            table class="table" {
                caption class="sr-only" { "Connections" }
                thead { tr { th scope="col" { "Connector" } th scope="col" { "Name" } th scope="col" { "Owner" } th scope="col" { "Account" } th scope="col" { "Status" } th scope="col" { "Last used" } th scope="col" { span class="sr-only" { "Actions" } } } }
                tbody {
                    @for c in &rows {
                        @let id = c["id"].as_str().unwrap_or_default();
                        tr data-connection=(id) {
                            td { (name_of(c["connector"].as_str().unwrap_or_default())) }
                            td { (c["name"].as_str().unwrap_or_default()) }
                            td data-owner { (owner_of(c)) " " span class="muted" { "(" (sharing_of(c)) ")" } }
                            td { @if let Some(n) = c["account"]["display_name"].as_str() { (n) } @else { span class="muted" { "—" } } }
                            td { (badge_of(c)) }
                            td { (time(c["last_used_at"].as_str())) }
                                                        td { a href={ "/connections/" (id) } aria-label={ "Manage " (c["name"].as_str().unwrap_or_default()) } { "Manage" } }
                        }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                span { "Showing " (first) "–" (last) " of " (total) }
                @if page > 1 { " " a href=(page_link(page - 1)) rel="prev" { "Previous page" } }
                @if last < total { " " a href=(page_link(page + 1)) rel="next" { "Next page" } }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Connections", "connections", body),
    )
}

fn not_found(s: &Session, w: &[(String, String)], p: &Principal, what: &str) -> Response {
    page_response(
        StatusCode::NOT_FOUND,
        layout(
            s,
            w,
            p,
            "Not found",
            "",
            html! { h1 { "Not found" } p { (what) " " a href="/connections" { "Back to connections" } } },
        ),
    )
}

pub(super) fn forbidden(
    s: &Session,
    w: &[(String, String)],
    p: &Principal,
    what: &str,
) -> Response {
    page_response(
        StatusCode::FORBIDDEN,
        layout(
            s,
            w,
            p,
            "Not allowed",
            "",
            html! { h1 { "Not allowed" } p { (what) " " a href="/connections" { "Back to connections" } } },
        ),
    )
}

/// A JSON value as form text.
fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|v| !v.is_object() && !v.is_array()) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    }
}

/// One config field generated from a JSON Schema property. It shows the stored value; an empty
/// field means the schema's default (shown as the placeholder), so later default changes apply.
fn config_field(prefix: &str, key: &str, prop: &Value, stored: &Value, required: bool) -> Markup {
    let id = format!("{prefix}-{key}");
    let path = format!("/{key}");
    let label = prop["title"].as_str().unwrap_or(key);
    let help = prop["description"].as_str().unwrap_or_default();
    let kind = prop["type"].as_str().unwrap_or("string");
    let described = format!("{id}-help {id}-error");
    let text_value = as_text(stored);
    let default = prop.get("default").map(as_text);
    let placeholder = default.clone().unwrap_or_default();
    html! {
        div class="field" {
            @if kind == "boolean" {
                @let on = stored.as_bool().or(prop["default"].as_bool()).unwrap_or(false);
                label class="check" {
                    input type="checkbox" id=(id) name=(key) data-type="boolean" checked[on]
                        data-initial=(on) data-stored[!stored.is_null()] aria-describedby=(described);
                    " " (label)
                }
            } @else {
                label for=(id) { (label) @if required { " " span class="muted" { "(required)" } } }
                @if let Some(options) = prop["enum"].as_array() {
                    select id=(id) name=(key) data-type=(kind) data-required[required && default.is_none()] aria-describedby=(described) {
                        @if let Some(d) = &default { option value="" { "Default (" (d) ")" } }
                        @else if !required { option value="" { "—" } }
                        @for o in options {
                            @let ov = as_text(o);
                            option value=(ov) selected[!stored.is_null() && ov == text_value] { (ov) }
                        }
                    }
                } @else if kind == "integer" || kind == "number" {
                    input type="number" id=(id) name=(key) data-type=(kind) value=(text_value) placeholder=(placeholder)
                        step=(if kind == "integer" { "1" } else { "any" })
                        data-min=[prop["minimum"].as_f64()] data-max=[prop["maximum"].as_f64()]
                        data-required[required && default.is_none()] aria-describedby=(described);
                } @else if kind == "object" || (kind == "array" && !prop["items"]["type"].as_str().is_some_and(|t| t != "object" && t != "array")) {
                    textarea id=(id) name=(key) data-type="json" rows="4" placeholder=(placeholder)
                        data-required[required && default.is_none()] aria-describedby=(described) { (if stored.is_null() { String::new() } else { stored.to_string() }) }
                } @else {
                    input type="text" id=(id) name=(key) data-type=(kind) value=(text_value) placeholder=(placeholder)
                        data-max-length=[prop["maxLength"].as_u64()] data-min-length=[prop["minLength"].as_u64()]
                        data-pattern=[prop["pattern"].as_str()] data-required[required && default.is_none()] aria-describedby=(described);
                }
            }
            @if !help.is_empty() { p class="help" id={ (id) "-help" } { (help) } }
            @if let Some(d) = &default { @if kind != "boolean" { p class="help muted" { "Empty means the default: " code { (d) } } } }
            p class="field-error" id={ (id) "-error" } data-error-for=(path) {}
        }
    }
}

/// `/connections/{id}`: the connection detail.
pub async fn connection(
    State(state): State<AppState>,
    SignedIn(s, w, p): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let Ok(row) = state.service.connection_for(&p, &id, Need::See).await else {
        return not_found(
            &s,
            &w,
            &p,
            "This connection does not exist (or was deleted).",
        );
    };
    let c = view(&row);
    let status = row.status;
    let can = |need| {
        let (svc, p, row) = (&state.service, &p, &row);
        async move { svc.authorize(p, row, need).await.is_ok() }
    };
    let (can_manage, can_revoke, can_delete, can_share) = (
        can(Need::Manage).await,
        can(Need::Revoke).await,
        can(Need::Delete).await,
        can(Need::Share).await,
    );
    let owner = match &row.owner_user_id {
        Some(u) => Some(
            people::user(&state.service, u)
                .await
                .ok()
                .and_then(|u| u.email.or(u.external_id))
                .unwrap_or_else(|| u.clone()),
        ),
        None => None,
    };
    let sharing = match (row.visibility.as_str(), row.share_permission.as_str()) {
        ("personal", _) => "Personal: only its owner uses it",
        (_, "use") => "Shared with the team: members use it",
        _ => "Shared with the team: members use and manage it",
    };
    let entry = state.registry.get(&row.connector_id);
    let manifest = entry.as_ref().map(|e| e.connector.manifest().clone());
    let connector_name = manifest
        .as_ref()
        .map(|m| m.display_name.clone())
        .unwrap_or_else(|| row.connector_id.clone());
    let oauth = row.auth_kind == "oauth2";
    let schema: Value = manifest
        .as_ref()
        .and_then(|m| serde_json::from_str(&m.config_schema).ok())
        .unwrap_or_default();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let config = &c["config"];
    let events = state
        .service
        .connection_audit(&p, &id, 20)
        .await
        .unwrap_or_default();
    let (mut meaning, next) = status_help(status);
    if status == Status::Active && !oauth {
        meaning = "Working. keyport checks the key with the provider from time to time.";
    }
    let scopes: Vec<String> = c["granted_scopes"]
        .as_array()
        .or(c["requested_scopes"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        p class="crumbs" { a href="/connections" { "Connections" } " / " (row.name) }
        div class="detail-head" data-connection-id=(id) {
            h1 { (row.name) " " (badge(status)) @if row.disabled_at.is_some() { " " span class="badge badge-disabled" { "Disabled" } } }
            @if row.disabled_at.is_some() { p class="reason" { "Disabled: workflows cannot use this connection (proxy and credential reads answer 409) until it is enabled again. keyport keeps its credential fresh meanwhile." } }
            p class="status-help" { strong { (meaning) } " " (next) }
            @if let Some(reason) = &row.status_reason { @if !reason.is_empty() { p class="reason" { (reason) } } }
        }
        dl class="facts" {
            dt { "Connector" } dd { (connector_name) }
            dt { "Owner" } dd data-owner { @if let Some(o) = &owner { (o) } @else { "Workspace" } }
            dt { "Sharing" } dd data-sharing { (sharing) }
            dt { "Account" } dd { @if let Some(n) = &row.account_name { (n) @if let Some(e) = &row.account_email { " (" (e) ")" } } @else { span class="muted" data-poll-account=[(status != Status::Revoked).then_some(id.as_str())] { "Not known yet" } } }
            dt { "Granted scopes" } dd { @if scopes.is_empty() { span class="muted" { "—" } } @else { @for sc in &scopes { code { (sc) } " " } } }
            dt { "Last refreshed" } dd { (time(c["last_refreshed_at"].as_str())) }
            dt { "Last used" } dd { (time(c["last_used_at"].as_str())) }
            @if oauth { dt { "Token expires" } dd { (time(c["expires_at"].as_str())) } }
            dt { "Created" } dd { (time(c["created_at"].as_str())) }
        }
        div class="actions" {
            @if can_manage {
                @if oauth && status != Status::Revoked { button type="button" data-refresh=(id) { "Refresh credential" } }
                @if oauth { button type="button" data-reconnect=(id) { "Reconnect" } } @else { button type="button" data-open-dialog="api-key-dialog" { "Replace API key" } }
                @if row.disabled_at.is_some() { button type="button" data-set-enabled=(id) data-enabled="true" { "Enable" } } @else { button type="button" data-set-enabled=(id) data-enabled="false" { "Disable" } }
            }
            @if can_revoke && status != Status::Revoked { button type="button" class="danger" data-open-dialog="revoke-dialog" { "Revoke" } }
            @if can_delete { button type="button" class="danger-outline" data-open-dialog="delete-dialog" { "Delete" } }
        }
        @if !can_manage { p class="muted" data-use-only { "You may use this connection in workflows; its owner or a workspace admin manages it." } }
        @if can_share {
            section aria-labelledby="share-title" {
                h2 id="share-title" { "Sharing" }
                form data-sharing-form=(id) class="sharing" {
                    label class="switch" {
                        input type="checkbox" name="shared" id="share-switch" checked[row.visibility == "shared"] disabled[row.owner_user_id.is_none()];
                        " Share with team"
                    }
                    label for="share-permission" { "Members may" }
                    select id="share-permission" name="permission" {
                        option value="use" selected[row.share_permission == "use"] { "use it" }
                        option value="manage" selected[row.share_permission == "manage"] { "use and manage it" }
                    }
                    button type="submit" { "Save sharing" }
                    @if row.owner_user_id.is_none() { p class="help muted" { "This connection belongs to the workspace: it is always shared." } }
                }
            }
        }
        p class="notice" data-popup-blocked=(id) hidden {}
        div class="alert" id="delete-error" role="alert" hidden {}
                dialog id="delete-dialog" aria-labelledby="delete-title" {
            h2 id="delete-title" { "Delete this connection?" }
            p { "keyport revokes it if needed and removes it with its settings. This cannot be undone; the audit trail is kept." }
            div class="actions" {
                button type="button" data-close-dialog autofocus { "Cancel" }
                button type="button" class="danger" data-delete=(id) { "Delete connection" }
            }
        }
        @if let Some(label) = manifest.as_ref().and_then(|m| match &m.auth { AuthScheme::ApiKey(k) => Some(k.label.clone()), AuthScheme::Oauth2(_) => None }) { (api_key_dialog(&id, &label)) }
        dialog id="revoke-dialog" aria-labelledby="revoke-title" {
            h2 id="revoke-title" { "Revoke this connection?" }
            p { "keyport deletes its credentials and asks " (connector_name) " to revoke the authorization. Dependent workflows will pause until someone reconnects." }
            div class="actions" {
                button type="button" data-close-dialog autofocus { "Cancel" }
                button type="button" class="danger" data-revoke=(id) { "Revoke connection" }
            }
        }
        @if let Some(meta) = c["metadata"].as_object().filter(|m| !m.is_empty()) {
            section aria-labelledby="metadata-title" {
                h2 id="metadata-title" { "From the provider" }
                p class="muted" { "Values the provider sent with the token (kept up to date on every refresh)." }
                dl class="meta-list" data-metadata {
                    @for (k, v) in meta {
                        dt { code { (k) } }
                        dd { (v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())) }
                    }
                }
            }
        }
        section aria-labelledby="config-title" {
            h2 id="config-title" { "Settings" }
            @match schema["properties"].as_object() {
                Some(props) if !props.is_empty() && !can_manage => {
                    p class="muted" { "Only those who manage this connection change its settings." }
                    pre { (serde_json::to_string_pretty(config).unwrap_or_default()) }
                }
                Some(props) if !props.is_empty() => {
                    form data-config-form=(id) data-stored=(config.to_string()) novalidate {
                        @for (key, prop) in props {
                            (config_field("cfg", key, prop, &config[key.as_str()], required.contains(&key.as_str())))
                        }
                        div class="actions" { button type="submit" class="primary" { "Save settings" } }
                    }
                }
                _ => { p class="muted" { "This connector has no settings." } }
            }
        }
        section aria-labelledby="audit-title" {
            h2 id="audit-title" { "Recent activity" }
            @if events.is_empty() { p class="muted" { "No events yet." } } @else {
                table class="table compact" {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "By" } } }
                    tbody { @for e in &events { tr { td { (time(Some(&rfc3339(e.created_at)))) } td { code { (e.action) } } td { (e.actor) } } } }
                }
                p { a href={ "/admin/audit?connection=" (id) } { "Full audit log for this connection" } }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, &row.name, "connections", body),
    )
}

/// `/admin`: connectors, custom OAuth providers, provider apps.
pub async fn admin(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    if !p.is_workspace_admin() {
        return forbidden(
            &s,
            &w,
            &p,
            "The Admin page is for the workspace's owners and admins.",
        );
    }
    let ws = s.workspace_id.as_str();
    let sso = if p.installation_admin {
        crate::auth::sso::view(&state.service, &p)
            .await
            .unwrap_or_default()
    } else {
        Value::Null
    };
    let loaded = state.service.loaded_connectors().await.unwrap_or_default();
    let providers = state.service.list_providers().await.unwrap_or_default();
    let mut connectors: Vec<Manifest> = state
        .registry
        .all()
        .iter()
        .map(|e| e.connector.manifest().clone())
        .filter(|m| !m.configurable)
        .collect();
    connectors.sort_by(|a, b| {
        a.display_name
            .to_lowercase()
            .cmp(&b.display_name.to_lowercase())
    });
    let hidden = state
        .service
        .hidden_connectors(ws)
        .await
        .unwrap_or_default();
    let mut apps = Vec::new();
    for m in &connectors {
        // Only OAuth integrations have a provider app to show.
        apps.push(match m.auth {
            AuthScheme::Oauth2(_) => state.service.provider_app_view(ws, &m.id).await.ok(),
            AuthScheme::ApiKey(_) => None,
        });
    }
    let empty = Vec::new();
    let body = html! {
        h1 { "Admin" }
        section aria-labelledby="connectors-title" {
            h2 id="connectors-title" { "Connectors" }
            table class="table compact" {
                thead { tr { th scope="col" { "Connector" } th scope="col" { "Version" } th scope="col" { "Contract" } th scope="col" { "Hash" } th scope="col" { "Source" } th scope="col" { "Egress hosts" } th scope="col" { "Loaded" } } }
                tbody {
                    @for c in loaded["connectors"].as_array().unwrap_or(&empty) {
                        tr {
                            td { code { (c["id"].as_str().unwrap_or_default()) } }
                            td { (c["version"].as_str().unwrap_or_default()) }
                            td { (c["contract"].as_str().unwrap_or_default()) }
                            td { code title=(c["hash"].as_str().unwrap_or_default()) { (c["hash"].as_str().unwrap_or_default().chars().take(12).collect::<String>()) } }
                            td { (c["source"].as_str().unwrap_or_default()) }
                            td { @for h in c["egress_hosts"].as_array().unwrap_or(&empty) {
                                span class={ "pill " @if h["granted"] == true { "pill-soft" } @else { "pill-warn" } } { (h["host"].as_str().unwrap_or_default()) @if h["granted"] != true { " (not granted)" } } " "
                            } }
                            td { (time(c["loaded_at"].as_str())) }
                        }
                    }
                }
            }
            @let pending = loaded["pending_approval"].as_array().cloned().unwrap_or_default();
            @if !pending.is_empty() {
                h3 { "Waiting for approval" }
                ul { @for p in &pending {
                    @let id = p["id"].as_str().unwrap_or_default();
                    li { code { (id) } " " (p["version"].as_str().unwrap_or_default()) " asks for egress hosts that are not granted: "
                        @for h in p["missing_grants"].as_array().unwrap_or(&empty) { code { (h.as_str().unwrap_or_default()) } " " }
                        @if let Some(oauth) = p["oauth_hosts"].as_array().filter(|a| !a.is_empty()) {
                            "— its OAuth endpoints send codes, refresh tokens and the client secret to: "
                            @for h in oauth { code { (h.as_str().unwrap_or_default()) } " " }
                        }
                        label for={ "approve-" (id) } { "Hosts to grant" } " "
                        input id={ "approve-" (id) } type="text" data-approve-hosts=(id) placeholder="api.example.com";
                        " " button type="button" data-approve=(id) { "Approve" } }
                } }
            }
                        @let dir_errors = loaded["directory_errors"].as_array().cloned().unwrap_or_default();
            @if !dir_errors.is_empty() {
                div class="alert" role="alert" {
                    p { "Files in the watched connectors directory that did not load (the previous version keeps serving):" }
                    ul { @for e in &dir_errors { li { code { (e["file"].as_str().unwrap_or_default()) } ": " (e["error"].as_str().unwrap_or_default()) } } }
                }
            }
            form data-upload-form class="stack" {
                h3 { "Upload a connector" }
                label for="upload-file" { "Component (.wasm, built for wasm32-wasip2)" }
                input id="upload-file" name="file" type="file" accept=".wasm,application/wasm" required aria-describedby="upload-error";
                label for="upload-grant" { "Grant egress hosts (comma-separated, optional)" }
                input id="upload-grant" name="grant" type="text" placeholder="api.example.com";
                p class="field-error" id="upload-error" data-error-for="/upload" {}
                button type="submit" class="primary" { "Upload" }
            }
        }
        section aria-labelledby="custom-title" {
            h2 id="custom-title" { "Custom OAuth providers" }
            @let list = providers["providers"].as_array().cloned().unwrap_or_default();
            @if list.is_empty() { p class="muted" { "None imported yet." } } @else {
                ul { @for p in &list { li { strong { (p["manifest"]["display_name"].as_str().or(p["definition"]["display_name"].as_str()).unwrap_or_default()) } " " code { (p["id"].as_str().unwrap_or_default()) } " " span class="muted" { (p["issuer"].as_str().unwrap_or_default()) } } } }
            }
            form data-import-form class="stack" {
                h3 { "Import a provider" }
                label for="import-issuer" { "Issuer URL (the rest is discovered)" }
                input id="import-issuer" name="issuer" type="url" placeholder="https://auth.example.com" aria-describedby="import-error";
                label for="import-definition" { "…or a full definition (JSON)" }
                textarea id="import-definition" name="definition" rows="6" placeholder="{\"id\": \"acme\", \"display_name\": \"Acme\", \"authorization_url\": \"…\", \"token_url\": \"…\"}" {}
                p class="field-error" id="import-error" data-error-for="/import" {}
                button type="submit" class="primary" { "Import" }
            }
            form data-import-file-form class="stack" {
                h3 { "Import a file of providers" }
                label for="import-file" { "An export (format keyport-providers/1): each entry is imported or reported on its own" }
                input id="import-file" name="file" type="file" accept="application/json,.json" aria-describedby="import-file-error";
                p class="field-error" id="import-file-error" data-error-for="/file" {}
                button type="submit" { "Import file" }
            }
            div id="import-report" hidden {}
        }
        section aria-labelledby="apps-title" {
            h2 id="apps-title" { "Integrations and provider apps" }
            p class="muted" { "Each OAuth integration needs an app registered at its provider, with keyport's redirect URI exactly as shown: " code data-redirect-uri { (state.service.redirect_uri()) } ". Hide the integrations this workspace does not use: they leave the Integrations page and cannot be connected; existing connections keep working." }
            @for (m, app) in connectors.iter().zip(&apps) {
                @let facts = crate::catalogue::facts_of(&m.id);
                @let is_hidden = hidden.contains(&m.id);
                @let oauth = matches!(m.auth, AuthScheme::Oauth2(_));
                details class="app" id={ "app-" (m.id) } data-app=(m.id) open[facts.is_none()] {
                    summary {
                        strong { (m.display_name) } " "
                        @if !oauth { span class="pill pill-soft" { "API key" } }
                        @else if app.is_some() { span class="pill pill-soft" { "App saved" } }
                        @else { span class="pill pill-warn" { "Needs an app" } }
                        @if is_hidden { " " span class="pill pill-warn" { "Hidden" } }
                        @for c in &m.categories { " " span class="pill pill-soft" { (c) } }
                    }
                    @if let Some(f) = &facts {
                        @if let Some(reg) = f["register_url"].as_str().filter(|u| u.starts_with("https://")) {
                            @if oauth {
                                p { "Register an OAuth app at " a href=(reg) target="_blank" rel="noopener noreferrer" { (reg) } " and give it the redirect URI " code { (state.service.redirect_uri()) } "." }
                            } @else {
                                p { "Where the key comes from: " a href=(reg) target="_blank" rel="noopener noreferrer" { (reg) } }
                            }
                        }
                        @if let Some(notes) = f["refresh"]["notes"].as_str() {
                            p class="help" { "Tokens: " (notes) }
                        }
                        @if let Some(docs) = f["docs_url"].as_str().filter(|u| u.starts_with("https://")) {
                            p class="help" { "Facts from " a href=(docs) target="_blank" rel="noopener noreferrer" { (docs) } }
                        }
                    }
                    @if oauth {
                        form data-app-form=(m.id) class="stack app" {
                            label for={ "app-id-" (m.id) } { "Client ID" }
                            input id={ "app-id-" (m.id) } name="client_id" type="text" aria-describedby={ "app-error-" (m.id) } value=(app.as_ref().and_then(|a| a["client_id"].as_str()).unwrap_or_default()) autocomplete="off";
                            label for={ "app-secret-" (m.id) } { "Client secret" }
                            input id={ "app-secret-" (m.id) } name="client_secret" type="password" autocomplete="off"
                                placeholder=(if app.as_ref().is_some_and(|a| a["client_secret_set"] == true) { "stored — leave empty to keep" } else { "not set" });
                            @let chosen: Vec<String> = app.as_ref().and_then(|a| a["scopes"].as_array()).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
                            @let optional: Vec<_> = m.scopes.iter().filter(|sc| !sc.required).collect();
                            @if !optional.is_empty() {
                                fieldset { legend { "Optional scopes to request" }
                                    @for sc in &optional { label class="check" { input type="checkbox" name="scopes" value=(sc.name) checked[chosen.contains(&sc.name)]; " " code { (sc.name) } } }
                                }
                            }
                            p class="field-error" id={ "app-error-" (m.id) } data-error-for={ "/app/" (m.id) } {}
                            button type="submit" { "Save" }
                        }
                    }
                    button type="button" data-hide-connector=(m.id) data-hidden=(is_hidden) {
                        @if is_hidden { "Show " (m.display_name) " on the Integrations page" } @else { "Hide " (m.display_name) " from the Integrations page" }
                    }
                }
            }
        }
        @if p.installation_admin {
            section aria-labelledby="sso-title" {
                h2 id="sso-title" { "Single sign-on" }
                p class="muted" { "Any OpenID Connect provider. Register " code { (crate::auth::sso::redirect_uri(&state.service)) } " as a redirect URI of its client." }
                form data-sso-form novalidate {
                    label for="sso-issuer" { "Issuer" }
                    input id="sso-issuer" name="issuer" type="url" value=(sso["issuer"].as_str().unwrap_or_default()) required;
                    label for="sso-client-id" { "Client ID" }
                    input id="sso-client-id" name="client_id" type="text" value=(sso["client_id"].as_str().unwrap_or_default()) required;
                    label for="sso-client-secret" { "Client secret" }
                    input id="sso-client-secret" name="client_secret" type="password" autocomplete="off"
                        placeholder=(if sso["client_secret_set"] == true { "stored — leave empty to keep" } else { "not set" });
                    label for="sso-token-auth" { "Client authentication" }
                    select id="sso-token-auth" name="token_auth" {
                        option value="client_secret_basic" selected[sso["token_auth"] != "client_secret_post"] { "client_secret_basic" }
                        option value="client_secret_post" selected[sso["token_auth"] == "client_secret_post"] { "client_secret_post" }
                    }
                    label class="check" { input type="checkbox" name="allow_signup" checked[sso["allow_signup"] == true]; " Create an account for people keyport does not know yet (as members of " (sso["signup_workspace"].as_str().unwrap_or("default")) ")" }
                    p class="field-error" data-error-for="/issuer" {}
                    button type="submit" { "Save single sign-on" }
                }
            }
        }
    };
    page_response(StatusCode::OK, layout(&s, &w, &p, "Admin", "admin", body))
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    connection: Option<String>,
    action: Option<String>,
    before: Option<i64>,
}

/// `/admin/audit`: the audit log viewer.
pub async fn audit(
    State(state): State<AppState>,
    SignedIn(s, w, p): SignedIn,
    Query(q): Query<AuditQuery>,
) -> Response {
    let connection = q.connection.filter(|c| !c.is_empty());
    let action = q.action.filter(|a| !a.is_empty());
    let rows = state
        .service
        .audit_page(
            &p,
            connection.as_deref(),
            action.as_deref(),
            None,
            q.before,
            50,
        )
        .await
        .unwrap_or_default();
    let older = (rows.len() == 50)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let body = html! {
        h1 { "Audit log" }
        form class="filters" method="get" action="/admin/audit" {
            label for="a-connection" { "Connection ID" }
            input id="a-connection" name="connection" type="text" value=(connection.clone().unwrap_or_default());
            label for="a-action" { "Event" }
            input id="a-action" name="action" type="text" placeholder="connection.refreshed" value=(action.clone().unwrap_or_default());
            button type="submit" { "Apply" }
            @if connection.is_some() || action.is_some() { a href="/admin/audit" { "Clear filters" } }
        }
        @if rows.is_empty() { div class="empty" { h2 { "No events" } p { "Nothing matches these filters yet." } } } @else {
            table class="table compact" {
                thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "By" } th scope="col" { "Connection" } th scope="col" { "Detail" } } }
                tbody { @for e in &rows { tr {
                    td { (time(Some(&rfc3339(e.created_at)))) }
                    td { code { (e.action) } }
                    td { (e.actor) }
                    td { @if let Some(c) = &e.connection_id { a href={ "/connections/" (c) } { code { (c) } } } }
                    td { code class="detail" { (e.detail) } }
                } } }
            }
            @if let Some(before) = older {
                p { a href={ "/admin/audit?" (audit_query(&connection, &action, before)) } { "Older events" } }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Audit log", "audit", body),
    )
}

fn audit_query(
    connection: &Option<String>,
    action: &Option<String>,
    before: i64,
) -> PreEscaped<String> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(c) = connection {
        q.append_pair("connection", c);
    }
    if let Some(a) = action {
        q.append_pair("action", a);
    }
    q.append_pair("before", &before.to_string());
    // Inside an attribute: escape what the serializer leaves (`&`).
    PreEscaped(q.finish().replace('&', "&amp;"))
}
