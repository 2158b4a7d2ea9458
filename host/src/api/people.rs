//! `/api/v1` handlers for people: password sign-in, the signed-in user, users, workspace members,
//! invitations and workspace API keys.

use super::schema;
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiJson, ApiPath, AppState};
use crate::auth::people::{self, PasswordSignInError};
use crate::auth::{AuthError, Caller, Session, sessions};
use crate::connections::{Role, Who, rfc3339};

type R<T> = Result<T, ApiError>;

/// The session cookie for a new session, and the JSON a sign-in answers.
pub(super) fn signed_in(state: &AppState, cookie: &str, s: &Session, user: Value) -> Response {
    let mut r = Json(json!({
        "user": user,
        "workspace": s.workspace_id,
        "csrf_token": s.csrf_token,
    }))
    .into_response();
    sessions::set_session_cookie(&state.service, r.headers_mut(), cookie);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSignIn {
    email: String,
    password: String,
}

/// `POST /api/v1/auth/password {email, password}`: a new session (cookie) for the user.
#[utoipa::path(
    post,
    path = "/api/v1/auth/password",
    tag = "auth",
    summary = "Signs in with email and password (sets the session cookie)",
    request_body = PasswordSignIn,
    responses(
        (status = 200, description = "Signed in", body = schema::SignedIn)
    ),
    security(()),
)]
pub async fn password_sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<PasswordSignIn>,
) -> R<Response> {
    sessions::same_origin(&state.service, &headers)?;
    let client = state.client_ip(peer.ip(), &headers);
    match people::sign_in_with_password(&state.service, &b.email, &b.password, client).await {
        Ok((cookie, s)) => {
            let user = match &s.user_id {
                Some(u) => people::user_view(&people::user(&state.service, u).await?),
                None => Value::Null,
            };
            Ok(signed_in(&state, &cookie, &s, user))
        }
        Err(PasswordSignInError::Auth(e)) => Err(e.into()),
        Err(e @ PasswordSignInError::Limited) => {
            Err(ApiError::from(AuthError::TooManyAttempts(e.to_string())))
        }
        Err(e @ PasswordSignInError::Wrong) => Err(ApiError::unauthorized(e.to_string())),
        Err(e) => Err(ApiError::forbidden(e.to_string())),
    }
}

fn session_user(caller: &Caller) -> R<&str> {
    match (&caller.session, caller.principal.user_id()) {
        (Some(_), Some(u)) => Ok(u),
        _ => Err(ApiError::bad_request(
            "this needs a signed-in user's session (not a token or an API key)",
        )),
    }
}

/// `GET /api/v1/me`: who the caller is, in which workspace, with which role.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    summary = "Who the caller is, in which workspace, with which role",
    responses(
        (status = 200, description = "The caller", body = schema::Me)
    ),
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> R<Json<Value>> {
    let p = &caller.principal;
    let user = match p.user_id() {
        Some(u) => Some(people::user_view(&people::user(&state.service, u).await?)),
        None => None,
    };
    let kind = match &p.who {
        Who::AdminToken => "admin_token",
        Who::User {
            via_key: Some(_), ..
        } => "api_key_as_user",
        Who::User { .. } => "user",
        Who::Automation { .. } => "api_key",
        Who::System => "keyport",
    };
    Ok(Json(json!({
        "kind": kind,
        "workspace": p.workspace,
        "role": p.role(),
        "installation_admin": p.installation_admin,
        "user": user,
        "actor": p.actor().0,
    })))
}

/// `POST /api/v1/auth/sign-out-everywhere`: ends every session of the signed-in user.
#[utoipa::path(
    post,
    path = "/api/v1/auth/sign-out-everywhere",
    tag = "auth",
    summary = "Ends every session of the signed-in user",
    responses(
        (status = 200, description = "How many sessions ended", body = schema::EndedSessions)
    ),
)]
pub async fn sign_out_everywhere(State(state): State<AppState>, caller: Caller) -> R<Json<Value>> {
    let user = session_user(&caller)?;
    let n = people::sign_out_everywhere(&state.service, user).await?;
    Ok(Json(json!({"ended_sessions": n})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/auth/password/change {current_password, new_password}`: ends every session of
/// the user (sign in again with the new password).
#[utoipa::path(
    post,
    path = "/api/v1/auth/password/change",
    tag = "auth",
    summary = "Changes the signed-in user's password and ends all their sessions",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed")
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<PasswordChange>,
) -> R<StatusCode> {
    let user = session_user(&caller)?;
    people::change_password(&state.service, user, &b.current_password, &b.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users`: creates a user with a role in the caller's workspace (owners and
/// admins; with a password, or without and invite them).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    summary = "Creates a user with a role in the caller's workspace",
    request_body = people::NewUser,
    responses(
        (status = 201, description = "The user", body = schema::UserView),
        (status = 409, description = "The email has an account")
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(n): ApiJson<people::NewUser>,
) -> R<impl IntoResponse> {
    let u = people::create_user(&state.service, &caller.principal, n).await?;
    Ok((StatusCode::CREATED, Json(people::user_view(&u))))
}

/// `GET /api/v1/users`: every user of the installation (installation admins).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    summary = "Every user of the installation (installation admins)",
    responses(
        (status = 200, description = "The users", body = schema::Users)
    ),
)]
pub async fn list_users(State(state): State<AppState>, caller: Caller) -> R<Json<Value>> {
    let users = people::list_users(&state.service, &caller.principal).await?;
    Ok(Json(
        json!({"users": users.iter().map(people::user_view).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    disabled: Option<bool>,
    installation_admin: Option<bool>,
}

/// `PATCH /api/v1/users/{id} {disabled?, installation_admin?}`.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    summary = "Disables or enables a user, or grants installation admin",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user", body = schema::UserView),
        (status = 409, description = "Not possible (the last installation admin)")
    ),
)]
pub async fn patch_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UserPatch>,
) -> R<Json<Value>> {
    if let Some(d) = b.disabled {
        people::set_disabled(&state.service, &caller.principal, &id, d).await?;
    }
    if let Some(a) = b.installation_admin {
        people::set_installation_admin(&state.service, &caller.principal, &id, a).await?;
    }
    Ok(Json(people::user_view(
        &people::user(&state.service, &id).await?,
    )))
}

/// `GET /api/v1/workspaces/{ws}/members`: anyone in the workspace but clients.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{ws}/members",
    tag = "members",
    summary = "A workspace's members",
    params(("ws" = String, Path, description = "The workspace's id.")),
    responses(
        (status = 200, description = "The members", body = schema::Members)
    ),
)]
pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(ws): ApiPath<String>,
) -> R<Json<Value>> {
    let p = people::in_workspace(&state.service, &caller.principal, &ws).await?;
    Ok(Json(people::members(&state.service, &p).await?))
}

/// `GET /api/v1/workspaces/{ws}/members/{user}`.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces/{ws}/members/{user}",
    tag = "members",
    summary = "One member",
    params(("ws" = String, Path, description = "The workspace's id."), ("user" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The member", body = schema::Member)
    ),
)]
pub async fn member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((ws, user)): ApiPath<(String, String)>,
) -> R<Json<Value>> {
    let p = people::in_workspace(&state.service, &caller.principal, &ws).await?;
    Ok(Json(people::member(&state.service, &p, &user).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRole {
    role: String,
}

/// `PUT /api/v1/workspaces/{ws}/members/{user} {role}`: adds or changes a member.
#[utoipa::path(
    put,
    path = "/api/v1/workspaces/{ws}/members/{user}",
    tag = "members",
    summary = "Adds a user to the workspace or changes their role",
    params(("ws" = String, Path, description = "The workspace's id."), ("user" = String, Path, description = "The user's id.")),
    request_body = MemberRole,
    responses(
        (status = 200, description = "The member", body = schema::Member),
        (status = 409, description = "Not possible (the last owner)")
    ),
)]
pub async fn put_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((ws, user)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<MemberRole>,
) -> R<Json<Value>> {
    let p = people::in_workspace(&state.service, &caller.principal, &ws).await?;
    let role: Role = b.role.parse().map_err(AuthError::from)?;
    people::set_member(&state.service, &p, &user, role).await?;
    member(State(state), caller, ApiPath((ws, user))).await
}

/// `DELETE /api/v1/workspaces/{ws}/members/{user}`.
#[utoipa::path(
    delete,
    path = "/api/v1/workspaces/{ws}/members/{user}",
    tag = "members",
    summary = "Removes a member",
    params(("ws" = String, Path, description = "The workspace's id."), ("user" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Not possible (the last owner, or connections they own)")
    ),
)]
pub async fn delete_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((ws, user)): ApiPath<(String, String)>,
) -> R<StatusCode> {
    let p = people::in_workspace(&state.service, &caller.principal, &ws).await?;
    people::remove_member(&state.service, &p, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    email: String,
    role: Option<String>,
    /// Hours the link stays valid (default 168: seven days).
    expires_in_hours: Option<i64>,
}

/// `POST /api/v1/invitations {email, role?, expires_in_hours?}`: the link is shown once; it is
/// also emailed when SMTP is configured.
#[utoipa::path(
    post,
    path = "/api/v1/invitations",
    tag = "invitations",
    summary = "Invites someone by email (the link is shown once and emailed when SMTP is set up)",
    request_body = NewInvitation,
    responses(
        (status = 201, description = "The invitation and its link", body = schema::InvitationCreated),
        (status = 409, description = "Already a member, or already invited")
    ),
)]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<NewInvitation>,
) -> R<impl IntoResponse> {
    let role: Role = b
        .role
        .as_deref()
        .unwrap_or("member")
        .parse()
        .map_err(AuthError::from)?;
    let (inv, token) = people::invite(
        &state.service,
        &caller.principal,
        &b.email,
        role,
        b.expires_in_hours.map(|h| h.saturating_mul(3600 * 1000)),
    )
    .await?;
    let link = format!("{}/invite#{token}", state.service.config.public_url);
    let emailed = match &state.mailer {
        Some(m) => match m
            .send_invitation(&inv.email, &inv.workspace_id, role, &link)
            .await
        {
            Ok(()) => json!(true),
            Err(e) => {
                tracing::warn!(error = %e, "could not email an invitation");
                json!({"error": format!("the mail server refused it ({e}); send the link yourself")})
            }
        },
        None => json!(false),
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": inv.id,
            "email": inv.email,
            "role": inv.role,
            "workspace": inv.workspace_id,
            "expires_at": rfc3339(inv.expires_at),
            "link": link,
            "emailed": emailed,
            "note": "This link is shown only once; it works once, until it expires.",
        })),
    ))
}

/// `GET /api/v1/invitations`: the workspace's open invitations (never their links).
#[utoipa::path(
    get,
    path = "/api/v1/invitations",
    tag = "invitations",
    summary = "The workspace's open invitations (never their links)",
    responses(
        (status = 200, description = "The invitations", body = schema::Invitations)
    ),
)]
pub async fn list_invitations(State(state): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(
        people::invitations(&state.service, &caller.principal).await?,
    ))
}

/// `DELETE /api/v1/invitations/{id}`: withdraws an open invitation.
#[utoipa::path(
    delete,
    path = "/api/v1/invitations/{id}",
    tag = "invitations",
    summary = "Withdraws an open invitation",
    params(("id" = String, Path, description = "The invitation's id.")),
    responses(
        (status = 204, description = "Withdrawn")
    ),
)]
pub async fn delete_invitation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    people::withdraw_invitation(&state.service, &caller.principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationToken {
    token: String,
}

/// `POST /api/v1/invitations/lookup {token}`: what an invitation link offers (no sign-in).
#[utoipa::path(
    post,
    path = "/api/v1/invitations/lookup",
    tag = "invitations",
    summary = "What an invitation link offers (no sign-in)",
    request_body = InvitationToken,
    responses(
        (status = 200, description = "The offer", body = schema::InvitationOffer)
    ),
    security(()),
)]
pub async fn lookup_invitation(
    State(state): State<AppState>,
    ApiJson(b): ApiJson<InvitationToken>,
) -> R<Json<Value>> {
    Ok(Json(
        people::describe_invitation(&state.service, &b.token).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    token: String,
    password: Option<String>,
    display_name: Option<String>,
}

/// `POST /api/v1/invitations/accept {token, password, display_name?}`: joins (creating the
/// account when the email has none) and signs in.
#[utoipa::path(
    post,
    path = "/api/v1/invitations/accept",
    tag = "invitations",
    summary = "Accepts an invitation (creating the account when the email has none) and signs in",
    request_body = Acceptance,
    responses(
        (status = 200, description = "Signed in", body = schema::SignedIn),
        (status = 409, description = "Already used")
    ),
    security(()),
)]
pub async fn accept_invitation(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<Acceptance>,
) -> R<Response> {
    sessions::same_origin(&state.service, &headers)?;
    let (cookie, s, user) = people::accept_invitation(
        &state.service,
        &b.token,
        b.password.as_deref(),
        b.display_name.as_deref(),
    )
    .await?;
    Ok(signed_in(&state, &cookie, &s, people::user_view(&user)))
}

/// `GET /api/v1/api-keys`: the workspace's live keys (never the key itself).
#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    tag = "api-keys",
    summary = "The workspace's live keys (never the key itself)",
    responses(
        (status = 200, description = "The keys", body = schema::ApiKeys)
    ),
)]
pub async fn list_api_keys(State(state): State<AppState>, caller: Caller) -> R<Json<Value>> {
    Ok(Json(
        people::api_keys(&state.service, &caller.principal).await?,
    ))
}

/// `DELETE /api/v1/api-keys/{id}`: revokes a key, at once on this replica and within
/// [`crate::auth::CACHE_TTL`] on every other.
#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revokes an API key",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 204, description = "Revoked")
    ),
)]
pub async fn delete_api_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> R<StatusCode> {
    people::revoke_api_key(&state.service, &caller.principal, &id).await?;
    state.callers.clear();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailLinkRequest {
    email: String,
}

/// `POST /api/v1/auth/email-link {email}`: emails a single-use sign-in link when there is an
/// account for the email. The answer is the same either way.
#[utoipa::path(
    post,
    path = "/api/v1/auth/email-link",
    tag = "auth",
    summary = "Emails a single-use sign-in link when there is an account for the email",
    request_body = EmailLinkRequest,
    responses(
        (status = 202, description = "The same answer whether or not there is an account", body = schema::Note),
        (status = 409, description = "This installation has no SMTP server")
    ),
    security(()),
)]
pub async fn email_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<EmailLinkRequest>,
) -> R<impl IntoResponse> {
    sessions::same_origin(&state.service, &headers)?;
    let Some(mailer) = &state.mailer else {
        return Err(ApiError::from(crate::connections::Error::Conflict(
            "sign-in links need email, and this installation has no SMTP server (KEYPORT_SMTP_URL); sign in with your password or ask for a new invitation".into(),
        )));
    };
    let client = state.client_ip(peer.ip(), &headers);
    let email = b.email.trim().to_lowercase();
    if let Some(token) = people::sign_in_link(&state.service, &email, client).await? {
        let link = format!("{}/login/link#{token}", state.service.config.public_url);
        if let Err(e) = mailer.send_sign_in_link(&email, &link).await {
            tracing::warn!(error = %e, "could not email a sign-in link");
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"note": "If there is an account for this email, a sign-in link is on its way. It works once, for 15 minutes."}),
        ),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailLinkUse {
    token: String,
}

/// `POST /api/v1/auth/email-link/use {token}`: signs in with an emailed link, once.
#[utoipa::path(
    post,
    path = "/api/v1/auth/email-link/use",
    tag = "auth",
    summary = "Signs in with an emailed link (once)",
    request_body = EmailLinkUse,
    responses(
        (status = 200, description = "Signed in", body = schema::SignedIn)
    ),
    security(()),
)]
pub async fn use_email_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<EmailLinkUse>,
) -> R<Response> {
    sessions::same_origin(&state.service, &headers)?;
    let (cookie, s) = people::use_sign_in_link(&state.service, &b.token).await?;
    let user = match &s.user_id {
        Some(u) => people::user_view(&people::user(&state.service, u).await?),
        None => Value::Null,
    };
    Ok(signed_in(&state, &cookie, &s, user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    name: Option<String>,
    /// A `data:image/png|jpeg|gif|webp;base64,…` URL of at most 96 KiB, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    logo: Option<Value>,
    /// Whether members may send connection requests (owners and admins always may).
    members_may_request: Option<bool>,
}

/// A field that is present (even `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as Deserialize>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/workspaces/{ws} {name?, logo?}`: how the workspace presents itself (the
/// client portal shows its name and logo). Owners and admins.
#[utoipa::path(
    patch,
    path = "/api/v1/workspaces/{ws}",
    tag = "workspaces",
    summary = "Changes a workspace's name, logo and whether members may send connection requests",
    params(("ws" = String, Path, description = "The workspace's id.")),
    request_body = WorkspacePatch,
    responses(
        (status = 200, description = "How the workspace presents itself now", body = schema::Branding)
    ),
)]
pub async fn patch_workspace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(ws): ApiPath<String>,
    ApiJson(b): ApiJson<WorkspacePatch>,
) -> R<Json<Value>> {
    let p = people::in_workspace(&state.service, &caller.principal, &ws).await?;
    let logo = match b.logo {
        None => people::Keep::Unchanged,
        Some(Value::Null) => people::Keep::Set(None),
        Some(Value::String(s)) => people::Keep::Set(Some(s)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "logo: a data: URL string, or null to remove it",
            ));
        }
    };
    let mut out = people::set_branding(&state.service, &p, b.name, logo).await?;
    out["members_may_request"] =
        json!(people::set_members_may_request(&state.service, &p, b.members_may_request).await?);
    Ok(Json(out))
}
