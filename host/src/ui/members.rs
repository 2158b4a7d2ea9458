//! The pages about people: Members (invite, change role, remove), Account (change password, sign
//! out everywhere) and the invitation page a link opens (no sign-in; its token stays in the
//! URL's fragment, which browsers never send to a server).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::pages::{forbidden, layout};
use super::{SignedIn, page_response};
use crate::auth::people;
use crate::connections::Role;
use crate::web::AppState;

/// `/members`: the workspace's members; owners and admins invite, change roles and remove.
pub async fn members(State(state): State<AppState>, SignedIn(s, w, p): SignedIn) -> Response {
    let list = match people::members(&state.service, &p).await {
        Ok(v) => v,
        Err(_) => return forbidden(&s, &w, &p, "Clients do not see the workspace's members."),
    };
    let admin = p.is_workspace_admin();
    let owner = p.role() == Some(Role::Owner);
    let invitations = if admin {
        people::invitations(&state.service, &p)
            .await
            .unwrap_or_default()
    } else {
        Value::Null
    };
    let grantable: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| owner || **r != Role::Owner)
        .map(|r| r.as_str())
        .collect();
    let empty = Vec::new();
    let body = html! {
        h1 { "Members" }
        p class="lead" { "People in the workspace " strong { (s.workspace_id) } " and what they may do: owners and admins manage members, provider apps, webhooks and API keys; members connect accounts and use the ones shared with them; clients only see the connections they authorized." }
        @if admin {
            section aria-labelledby="invite-title" {
                h2 id="invite-title" { "Invite someone" }
                form data-invite-form novalidate {
                    label for="invite-email" { "Email" }
                    input id="invite-email" name="email" type="email" required autocomplete="off";
                    label for="invite-role" { "Role" }
                    select id="invite-role" name="role" {
                        @for r in &grantable { option value=(r) selected[*r == "member"] { (r) } }
                    }
                    button type="submit" class="primary" { "Send invitation" }
                    p class="field-error" data-error-for="/email" {}
                }
                div class="notice" id="invite-result" role="status" hidden {}
            }
        }
        table class="table" id="members" {
            thead { tr { th { "Person" } th { "Role" } th { "Since" } @if admin { th { span class="visually-hidden" { "Actions" } } } } }
            tbody {
                @for m in list["members"].as_array().unwrap_or(&empty) {
                    @let uid = m["user_id"].as_str().unwrap_or_default();
                    @let role = m["role"].as_str().unwrap_or_default();
                    @let label = m["email"].as_str().or(m["external_id"].as_str()).unwrap_or(uid);
                    @let editable = admin && (owner || role != "owner") && Some(uid) != p.user_id();
                    tr data-member=(uid) {
                        td { (label) @if let Some(n) = m["display_name"].as_str().filter(|n| !n.is_empty()) { " " span class="muted" { "(" (n) ")" } } @if m["disabled"] == true { " " span class="badge badge-disabled" { "Disabled" } } }
                        td {
                            @if editable {
                                label class="visually-hidden" for={ "role-" (uid) } { "Role of " (label) }
                                select id={ "role-" (uid) } data-member-role=(uid) data-workspace=(s.workspace_id) {
                                    @for r in &grantable { option value=(r) selected[*r == role] { (r) } }
                                }
                            } @else { (role) }
                        }
                        td { (super::pages::time(m["since"].as_str())) }
                        @if admin {
                            td { @if editable {
                                button type="button" class="danger-outline" data-remove-member=(uid) data-workspace=(s.workspace_id) data-label=(label) { "Remove" }
                            } }
                        }
                    }
                }
            }
        }
        @if admin {
            @let open = invitations["invitations"].as_array().unwrap_or(&empty);
            @if !open.is_empty() {
                h2 { "Open invitations" }
                table class="table compact" {
                    thead { tr { th { "Email" } th { "Role" } th { "Expires" } th { span class="visually-hidden" { "Actions" } } } }
                    tbody { @for i in open { tr {
                        td { (i["email"].as_str().unwrap_or_default()) }
                        td { (i["role"].as_str().unwrap_or_default()) }
                        td { (super::pages::time(i["expires_at"].as_str())) }
                        td { button type="button" class="link" data-withdraw-invitation=(i["id"].as_str().unwrap_or_default()) { "Withdraw" } }
                    } } }
                }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Members", "members", body),
    )
}

/// `/account`: change password, sign out everywhere.
pub async fn account(SignedIn(s, w, p): SignedIn) -> Response {
    let body = html! {
        h1 { "Your account" }
        @if p.user_id().is_none() {
            p { "You are signed in with the admin token, the bootstrap and break-glass credential. Create accounts for people from the Members page; change the token with " code { "KEYPORT_ADMIN_TOKEN" } "." }
        } @else {
            section aria-labelledby="pw-title" {
                h2 id="pw-title" { "Change password" }
                p class="muted" { "Changing it signs you out everywhere, this browser included." }
                form data-password-form novalidate {
                    label for="current-password" { "Current password (leave empty if you never set one)" }
                    input id="current-password" name="current_password" type="password" autocomplete="current-password";
                    label for="new-password" { "New password (10 characters or more)" }
                    input id="new-password" name="new_password" type="password" autocomplete="new-password" minlength="10" required;
                    p class="field-error" data-error-for="/password" {}
                    button type="submit" class="primary" { "Change password" }
                }
            }
            section aria-labelledby="sessions-title" {
                h2 id="sessions-title" { "Sessions" }
                p { "Signed in somewhere you should not be? End every session of your account." }
                button type="button" class="danger-outline" data-sign-out-everywhere { "Sign out everywhere" }
            }
        }
    };
    page_response(
        StatusCode::OK,
        layout(&s, &w, &p, "Account", "account", body),
    )
}

/// `/invite#<token>`: what an invitation offers, and the form that accepts it.
pub async fn invite() -> Response {
    page_response(StatusCode::OK, invite_page())
}

fn invite_page() -> Markup {
    super::pages::public_page(
        "Accept invitation",
        html! {
            h1 { "Join keyport" }
            p id="invite-summary" data-invite-summary { "Reading the invitation…" }
            form id="accept-form" data-accept-form hidden novalidate {
                p class="muted" id="invite-existing" hidden { "You have an account: enter its password to join." }
                label for="display-name" data-new-only { "Your name" }
                input id="display-name" name="display_name" type="text" autocomplete="name" data-new-only;
                label for="accept-password" { "Password" }
                input id="accept-password" name="password" type="password" autocomplete="new-password" required;
                p class="field-error" data-error-for="/password" {}
                button type="submit" class="primary" { "Accept and sign in" }
            }
            div class="alert" role="alert" id="invite-error" hidden {}
        },
    )
}
