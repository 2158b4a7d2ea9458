//! People: users and their passwords, memberships (a role per workspace), invitations, and the
//! principal a signed-in user or an API key acting for a user becomes.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, OWASP's recommendation:
//! 19 MiB of memory, 2 iterations, 1 lane, a 16-byte random salt), 10 to 1024 characters.
//! Failed password sign-ins are limited per address (with the admin-token sign-ins, see
//! [`super::limiter`]) and per account: ten in fifteen minutes lock the account's password
//! sign-in for the rest of those fifteen minutes.
//!
//! Changing a password, disabling a user and "sign out everywhere" end all of the user's
//! sessions at once; every sign-in starts a new session (a new cookie), so a session id known
//! before sign-in is worth nothing after it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde_json::json;

use super::limiter::{sign_in_blocked, sign_in_failed, sign_in_succeeded};
use super::{AuthError, Session};
use crate::connections::{Error as ServiceError, Principal, Role, Service, Who};
use crate::oauth::hash;
use crate::store::{InvitationRow, Journal, MemberRow, Store, UserRow, now_ms};

/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 10;
/// Longest password accepted (Argon2 takes any length; this bounds the work per attempt).
pub const PASSWORD_MAX: usize = 1024;
/// How long an invitation link stays valid by default.
pub const INVITATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Failed password sign-ins per account in [`ACCOUNT_WINDOW_MS`] before it is locked.
const ACCOUNT_FAILURES: u32 = 10;
const ACCOUNT_WINDOW_MS: i64 = 15 * 60 * 1000;

fn account_failures() -> &'static Mutex<HashMap<String, (i64, u32)>> {
    static MAP: std::sync::OnceLock<Mutex<HashMap<String, (i64, u32)>>> =
        std::sync::OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn account_locked(email: &str, now: i64) -> bool {
    let map = account_failures().lock().unwrap_or_else(|p| p.into_inner());
    map.get(email)
        .is_some_and(|(start, n)| now - start < ACCOUNT_WINDOW_MS && *n >= ACCOUNT_FAILURES)
}

fn account_failed(email: &str, now: i64) {
    let mut map = account_failures().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > 100_000 {
        map.retain(|_, (start, _)| now - *start < ACCOUNT_WINDOW_MS);
    }
    let e = map.entry(email.to_string()).or_insert((now, 0));
    if now - e.0 >= ACCOUNT_WINDOW_MS {
        *e = (now, 0);
    }
    e.1 += 1;
}

/// The Argon2id hash of a password (PHC string, fresh salt).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any input")
        .to_string()
}

/// Whether `password` matches the PHC string `stored`.
pub fn password_matches(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when there is no such user, so a wrong email takes as long as a
/// wrong password.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("keyport-no-such-user"))
}

fn check_password_rules(password: &str) -> Result<(), ServiceError> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(ServiceError::Invalid {
            message: format!(
                "a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters; a few unrelated words make a good one"
            ),
            fields: vec![(
                "/password".into(),
                format!("{PASSWORD_MIN}-{PASSWORD_MAX} characters"),
            )],
        });
    }
    Ok(())
}

/// A normalized email, or 422 (see [`crate::connections::normalize_email`]).
pub fn normalize_email(email: &str) -> Result<String, ServiceError> {
    crate::connections::normalize_email(email, "/email")
}

pub(super) fn new_user_id() -> String {
    format!("usr_{}", crate::vault::random_hex(10))
}

/// The principal a user is in `ws`: their role there (installation admins are owners of every
/// workspace); 403 when they are not a member.
pub async fn user_principal(
    store: &Store,
    user: &UserRow,
    ws: &str,
) -> Result<Principal, AuthError> {
    if user.disabled_at.is_some() {
        return Err(AuthError::Unauthorized(
            "this account is disabled; ask a workspace owner".into(),
        ));
    }
    let admin = user.installation_admin != 0;
    let role = match store.role_of(ws, &user.id).await? {
        Some(r) => r.parse::<Role>()?,
        None if admin => Role::Owner,
        None => {
            return Err(AuthError::Forbidden(format!(
                "you are not a member of workspace {ws:?}; ask one of its owners to invite you"
            )));
        }
    };
    Ok(Principal {
        workspace: ws.to_string(),
        who: Who::User {
            id: user.id.clone(),
            label: user
                .email
                .clone()
                .or_else(|| user.external_id.clone())
                .unwrap_or_default(),
            role,
            via_key: None,
        },
        installation_admin: admin,
    })
}

/// The principal a UI session acts as.
pub async fn session_principal(svc: &Service, s: &Session) -> Result<Principal, AuthError> {
    let Some(uid) = &s.user_id else {
        return Ok(Principal::admin_token(&s.workspace_id));
    };
    let user = svc
        .store
        .user(uid)
        .await?
        .ok_or_else(|| AuthError::Unauthorized("this account no longer exists".into()))?;
    user_principal(&svc.store, &user, &s.workspace_id).await
}

/// The user a workspace's platform calls `external` (created, as a member, on first use).
pub async fn external_user(
    store: &Store,
    ws: &str,
    external: &str,
) -> Result<(UserRow, Role), AuthError> {
    let user = match store.user_by_external_id(ws, external).await? {
        Some(u) => u,
        None => {
            let mut u = UserRow::new(new_user_id(), None, external.to_string());
            u.external_workspace = Some(ws.to_string());
            u.external_id = Some(external.to_string());
            if store.insert_user(&u).await? {
                store
                    .set_membership(ws, &u.id, Role::Member.as_str())
                    .await?;
                store
                    .audit(
                        ws,
                        None,
                        "user.created",
                        "keyport",
                        &json!({"user_id": u.id, "external_id": external}),
                    )
                    .await?;
                u
            } else {
                // Created by a concurrent request.
                store
                    .user_by_external_id(ws, external)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("a user vanished".into()))?
            }
        }
    };
    let p = user_principal(store, &user, ws).await?;
    Ok((user, p.role().unwrap_or(Role::Member)))
}

/// Why a password sign-in failed (one message for a wrong email and a wrong password).
#[derive(Debug, thiserror::Error)]
pub enum PasswordSignInError {
    /// Too many failures from this address or for this account.
    #[error("Too many failed sign-ins. Wait a few minutes, then try again.")]
    Limited,
    /// Wrong email or password (or the account cannot sign in with a password).
    #[error("That email and password do not match an account.")]
    Wrong,
    /// The account is disabled.
    #[error("This account is disabled. Ask a workspace owner.")]
    Disabled,
    /// A member of no workspace.
    #[error("This account is not a member of any workspace yet. Ask an owner to invite you.")]
    NoWorkspace,
    /// The store failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// A new session for `user` in `ws` (a fresh cookie: no fixation). Returns the cookie value.
pub async fn start_session(
    svc: &Service,
    user: Option<&str>,
    ws: &str,
) -> Result<(String, Session), AuthError> {
    let now = now_ms();
    let cookie = crate::vault::random_hex(32);
    let row = Session {
        id_hash: hash(&cookie),
        csrf_token: crate::vault::random_hex(24),
        workspace_id: ws.to_string(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + super::sessions::SESSION_IDLE_MS,
        user_id: user.map(str::to_string),
    };
    svc.store.create_ui_session(&row).await?;
    let _ = svc.store.purge_ui_sessions(now).await;
    if let Some(u) = user {
        svc.store.touch_sign_in(u, now).await?;
    }
    Ok((cookie, row))
}

/// The workspace a user's session starts in: `preferred` when they may act there, else their
/// first membership.
pub(super) async fn home_workspace(
    store: &Store,
    user: &UserRow,
    preferred: Option<&str>,
) -> Result<Option<String>, AuthError> {
    let memberships = store.memberships_of(&user.id).await?;
    if let Some(p) = preferred
        && (memberships.iter().any(|(w, _)| w == p)
            || (user.installation_admin != 0 && store.workspace_exists(p).await?))
    {
        return Ok(Some(p.to_string()));
    }
    if let Some((w, _)) = memberships.into_iter().next() {
        return Ok(Some(w));
    }
    if user.installation_admin != 0 && store.workspace_exists("default").await? {
        return Ok(Some("default".into()));
    }
    Ok(None)
}

/// Signs in with email and password from `client`: a new session and its cookie value.
pub async fn sign_in_with_password(
    svc: &Service,
    email: &str,
    password: &str,
    client: IpAddr,
) -> Result<(String, Session), PasswordSignInError> {
    let now = now_ms();
    let email = email.trim().to_lowercase();
    if sign_in_blocked(client, now) || account_locked(&email, now) {
        return Err(PasswordSignInError::Limited);
    }
    let user = svc
        .store
        .user_by_email(&email)
        .await
        .map_err(AuthError::from)?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let given = password.to_string();
    let matches = super::off_loop(move || {
        password_matches(stored.as_deref().unwrap_or(dummy_hash()), &given)
    })
    .await;
    let user = match user {
        Some(u) if matches && u.password_hash.is_some() => u,
        _ => {
            sign_in_failed(client, now);
            account_failed(&email, now);
            tracing::warn!(client = %client, "password sign-in failed");
            return Err(PasswordSignInError::Wrong);
        }
    };
    sign_in_succeeded(client);
    if user.disabled_at.is_some() {
        return Err(PasswordSignInError::Disabled);
    }
    let Some(ws) = home_workspace(&svc.store, &user, None).await? else {
        return Err(PasswordSignInError::NoWorkspace);
    };
    Ok(start_session(svc, Some(&user.id), &ws).await?)
}

/// Whether anyone can sign in with a password yet (until then the sign-in page leads with the
/// admin token).
pub async fn has_people(svc: &Service) -> bool {
    svc.store
        .count_people()
        .await
        .map(|n| n > 0)
        .unwrap_or(true)
}

/// Ends every session of a user.
pub async fn sign_out_everywhere(svc: &Service, user: &str) -> Result<u64, AuthError> {
    Ok(svc.store.delete_user_sessions(user).await?)
}

/// Changes a user's own password (the current one is required when there is one: people who
/// came by a link or single sign-on set theirs without); ends all their sessions.
pub async fn change_password(
    svc: &Service,
    user: &str,
    current: &str,
    new: &str,
) -> Result<(), AuthError> {
    let u = svc
        .store
        .user(user)
        .await?
        .ok_or_else(|| AuthError::Unauthorized("this account no longer exists".into()))?;
    let (stored, given) = (u.password_hash.clone(), current.to_string());
    if let Some(stored) = stored
        && !super::off_loop(move || password_matches(&stored, &given)).await
    {
        return Err(AuthError::Forbidden(
            "the current password is not right".into(),
        ));
    }
    check_password_rules(new)?;
    let new = new.to_string();
    let hashed = super::off_loop(move || hash_password(&new)).await;
    svc.store.set_password(user, &hashed).await?;
    Ok(())
}

/// What `POST /api/v1/users` creates.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Set now, or leave out and send an invitation.
    #[serde(default)]
    pub password: Option<String>,
    /// Role in the caller's workspace (default `member`).
    #[serde(default)]
    pub role: Option<String>,
    /// Installation admin (only an installation admin may grant it).
    #[serde(default)]
    pub installation_admin: bool,
}

/// Creates a user with a role in the caller's workspace (owners and admins; only owners make
/// owners; only installation admins make installation admins). 409 when the email is taken.
pub async fn create_user(svc: &Service, who: &Principal, n: NewUser) -> Result<UserRow, AuthError> {
    let role: Role = n.role.as_deref().unwrap_or("member").parse()?;
    may_grant(who, role)?;
    if n.installation_admin && !who.installation_admin {
        return Err(AuthError::Forbidden(
            "only an installation admin (or the admin token) makes installation admins".into(),
        ));
    }
    let email = normalize_email(&n.email)?;
    let mut u = UserRow::new(
        new_user_id(),
        Some(email.clone()),
        n.display_name.unwrap_or_default().trim().to_string(),
    );
    if let Some(p) = &n.password {
        check_password_rules(p)?;
        let p = p.clone();
        u.password_hash = Some(super::off_loop(move || hash_password(&p)).await);
    }
    u.installation_admin = i64::from(n.installation_admin);
    if !svc.store.insert_user(&u).await? {
        return Err(ServiceError::Conflict(format!(
            "there is already a user with the email {email}; add them to this workspace with PUT /api/v1/workspaces/{{ws}}/members/{{user}}"
        ))
        .into());
    }
    svc.store
        .set_membership(&who.workspace, &u.id, role.as_str())
        .await?;
    svc.store
        .audit(
            &who.workspace,
            None,
            "user.created",
            &who.actor().0,
            &json!({"user_id": u.id, "email": email, "role": role}),
        )
        .await?;
    Ok(u)
}

/// Whether `who` may give (or take away) `role`: owners and admins manage members, only owners
/// manage owners.
fn may_grant(who: &Principal, role: Role) -> Result<(), AuthError> {
    who.may_administer(false, "managing members")?;
    if role == Role::Owner && who.role() != Some(Role::Owner) {
        return Err(AuthError::Forbidden(
            "only a workspace owner makes or changes owners".into(),
        ));
    }
    Ok(())
}

/// Sets a user's role in the caller's workspace (adds them when they are not a member). The
/// last owner cannot be demoted.
pub async fn set_member(
    svc: &Service,
    who: &Principal,
    user: &str,
    role: Role,
) -> Result<(), AuthError> {
    may_grant(who, role)?;
    let ws = &who.workspace;
    self::user(svc, user).await?;
    let current = svc.store.role_of(ws, user).await?;
    if let Some(c) = &current {
        may_grant(who, c.parse()?)?;
        if c == "owner" && role != Role::Owner {
            ensure_other_owner(svc, ws).await?;
        }
    }
    svc.store.set_membership(ws, user, role.as_str()).await?;
    svc.store
        .audit(
            ws,
            None,
            "member.role_set",
            &who.actor().0,
            &json!({"user_id": user, "from": current, "to": role}),
        )
        .await?;
    Ok(())
}

/// Removes a user from the caller's workspace (their connections stay, owned by them).
pub async fn remove_member(svc: &Service, who: &Principal, user: &str) -> Result<(), AuthError> {
    let ws = &who.workspace;
    let Some(current) = svc.store.role_of(ws, user).await? else {
        return Err(
            ServiceError::NotFound(format!("{user:?} is not a member of this workspace")).into(),
        );
    };
    may_grant(who, current.parse()?)?;
    if current == "owner" {
        ensure_other_owner(svc, ws).await?;
    }
    svc.store.remove_membership(ws, user).await?;
    svc.store
        .audit(
            ws,
            None,
            "member.removed",
            &who.actor().0,
            &json!({"user_id": user, "role": current}),
        )
        .await?;
    Ok(())
}

/// A workspace keeps at least one owner: refuses a change that would take away the last.
async fn ensure_other_owner(svc: &Service, ws: &str) -> Result<(), AuthError> {
    if svc.store.count_owners(ws).await? <= 1 {
        return Err(ServiceError::Conflict(
            "this is the workspace's last owner; make someone else an owner first".into(),
        )
        .into());
    }
    Ok(())
}

/// Disables or enables a user (installation admins, or a workspace owner or admin for a user
/// who is a member of their workspace and nowhere else). Disabling ends their sessions at once.
pub async fn set_disabled(
    svc: &Service,
    who: &Principal,
    user: &str,
    disabled: bool,
) -> Result<(), AuthError> {
    let memberships = svc.store.memberships_of(user).await?;
    let only_here = memberships.iter().all(|(w, _)| *w == who.workspace) && !memberships.is_empty();
    if !who.installation_admin {
        who.may_administer(false, "disabling a user")?;
        if !only_here {
            return Err(AuthError::Forbidden(
                "this user belongs to other workspaces too; an installation admin disables them"
                    .into(),
            ));
        }
        if let Some((_, r)) = memberships.first() {
            may_grant(who, r.parse()?)?;
        }
    }
    if !svc.store.set_user_disabled(user, disabled).await? {
        return Err(ServiceError::NotFound(format!("no user {user:?}")).into());
    }
    svc.store
        .audit(
            &who.workspace,
            None,
            if disabled {
                "user.disabled"
            } else {
                "user.enabled"
            },
            &who.actor().0,
            &json!({"user_id": user}),
        )
        .await?;
    Ok(())
}

/// A new invitation: `(row, token)`. The token is the link's secret, shown once.
pub async fn invite(
    svc: &Service,
    who: &Principal,
    email: &str,
    role: Role,
    ttl_ms: Option<i64>,
) -> Result<(InvitationRow, String), AuthError> {
    may_grant(who, role)?;
    let email = normalize_email(email)?;
    let ttl = ttl_ms.unwrap_or(INVITATION_TTL_MS);
    if !(60_000..=30 * 24 * 3600 * 1000).contains(&ttl) {
        return Err(ServiceError::BadRequest(
            "an invitation lasts from one minute to 30 days".into(),
        )
        .into());
    }
    let token = format!("inv_{}", crate::vault::random_hex(24));
    let now = now_ms();
    let row = InvitationRow {
        id: format!("inv_{}", crate::vault::random_hex(8)),
        token_hash: hash(&token),
        workspace_id: who.workspace.clone(),
        email: email.clone(),
        role: role.as_str().to_string(),
        invited_by: who.actor().0,
        created_at: now,
        expires_at: now + ttl,
        accepted_at: None,
        accepted_by: None,
    };
    svc.store.insert_invitation(&row).await?;
    svc.store
        .audit(
            &who.workspace,
            None,
            "invitation.created",
            &who.actor().0,
            &json!({"id": row.id, "email": email, "role": role}),
        )
        .await?;
    Ok((row, token))
}

/// The open invitation a link's token names, or 404 (used, expired and unknown ones alike).
pub async fn open_invitation(svc: &Service, token: &str) -> Result<InvitationRow, AuthError> {
    svc.store
        .invitation_by_token(&hash(token))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > now_ms())
        .ok_or_else(|| {
            ServiceError::NotFound(
                "this invitation link is not valid: it was used already, has expired, or was withdrawn; ask for a new one".into(),
            )
            .into()
        })
}

/// Accepts an invitation: creates the user (with `password`) when the email has none yet, adds
/// the membership, and starts a session. Single use: a second accept is 404.
pub async fn accept_invitation(
    svc: &Service,
    token: &str,
    password: Option<&str>,
    display_name: Option<&str>,
) -> Result<(String, Session, UserRow), AuthError> {
    let inv = open_invitation(svc, token).await?;
    let user = match svc.store.user_by_email(&inv.email).await? {
        Some(u) => {
            // An existing account joins by proving it is theirs.
            let pair = password.map(str::to_string).zip(u.password_hash.clone());
            let proven = match pair {
                Some((p, h)) => super::off_loop(move || password_matches(&h, &p)).await,
                None => false,
            };
            if !proven {
                return Err(AuthError::Forbidden(format!(
                    "{} already has an account: enter its password to join",
                    inv.email
                )));
            }
            u
        }
        None => {
            let password = password.ok_or_else(|| ServiceError::Invalid {
                message: "choose a password".into(),
                fields: vec![("/password".into(), "required".into())],
            })?;
            check_password_rules(password)?;
            let mut u = UserRow::new(
                new_user_id(),
                Some(inv.email.clone()),
                display_name.unwrap_or_default().trim().to_string(),
            );
            u.password_hash = Some(hash_password(password));
            if !svc.store.insert_user(&u).await? {
                return Err(ServiceError::Conflict(
                    "an account with this email was just created; sign in and open the link again"
                        .into(),
                )
                .into());
            }
            u
        }
    };
    if user.disabled_at.is_some() {
        return Err(AuthError::Forbidden(
            "this account is disabled; ask a workspace owner".into(),
        ));
    }
    let now = now_ms();
    if !svc.store.accept_invitation(&inv.id, &user.id, now).await? {
        return Err(ServiceError::NotFound(
            "this invitation link was used already or has expired; ask for a new one".into(),
        )
        .into());
    }
    svc.store
        .audit(
            &inv.workspace_id,
            None,
            "invitation.accepted",
            &format!("user:{} <{}>", user.id, inv.email),
            &json!({"id": inv.id, "user_id": user.id, "role": inv.role}),
        )
        .await?;
    let (cookie, session) = start_session(svc, Some(&user.id), &inv.workspace_id).await?;
    Ok((cookie, session, user))
}

/// Opens a connection request link: signs the client it was sent to in to the portal of that
/// workspace (created on first use, as a `client`; someone who is a member already keeps their
/// role). The link works once and not after it expired or was cancelled.
pub async fn join_with_request_link(
    svc: &Service,
    token: &str,
) -> Result<(String, Session), AuthError> {
    let rows = svc.join_requests(token).await?;
    let Some(first) = rows.first() else {
        return Err(ServiceError::NotFound(
            "this link was used already, has expired or was cancelled; ask the team that sent it for a new one".into(),
        )
        .into());
    };
    let ws = first.workspace_id.clone();
    let email = first.client_email.clone();
    let user = match svc.store.user_by_email(&email).await? {
        Some(u) => u,
        None => {
            let u = UserRow::new(new_user_id(), Some(email.clone()), String::new());
            if !svc.store.insert_user(&u).await? {
                svc.store
                    .user_by_email(&email)
                    .await?
                    .ok_or_else(|| ServiceError::Internal("a user vanished".into()))?
            } else {
                svc.store
                    .audit(
                        &ws,
                        None,
                        "user.created",
                        "keyport",
                        &json!({"user_id": u.id, "email": email, "role": "client", "via": "connection_request"}),
                    )
                    .await?;
                u
            }
        }
    };
    if user.disabled_at.is_some() {
        return Err(AuthError::Forbidden(
            "this account is disabled; ask the team that sent the link".into(),
        ));
    }
    if svc.store.role_of(&ws, &user.id).await?.is_none() {
        svc.store
            .set_membership(&ws, &user.id, Role::Client.as_str())
            .await?;
    }
    start_session(svc, Some(&user.id), &ws).await
}

/// The signed-in person's email (the portal matches requests by it).
pub async fn email_of(svc: &Service, who: &Principal) -> Result<String, AuthError> {
    let id = who.user_id().ok_or_else(|| {
        AuthError::Forbidden("the portal is for people signed in as themselves".into())
    })?;
    user(svc, id).await?.email.ok_or_else(|| {
        AuthError::Forbidden(
            "this account has no email, so no request can be addressed to it".into(),
        )
    })
}

/// How long an emailed sign-in link works.
pub const SIGN_IN_LINK_TTL_MS: i64 = 15 * 60 * 1000;

/// A sign-in link for the person with `email`, when there is one who may sign in: `(token,
/// email)`; `None` otherwise (the caller answers the same either way). Counts against the
/// client's address like a failed sign-in, so links cannot be sent in bulk.
pub async fn sign_in_link(
    svc: &Service,
    email: &str,
    client: IpAddr,
) -> Result<Option<String>, AuthError> {
    let now = now_ms();
    if sign_in_blocked(client, now) {
        return Err(AuthError::TooManyAttempts(
            "too many sign-in links asked for from this address; wait a minute".into(),
        ));
    }
    sign_in_failed(client, now);
    let Some(user) = svc.store.user_by_email(email).await? else {
        return Ok(None);
    };
    if user.disabled_at.is_some() || svc.store.memberships_of(&user.id).await?.is_empty() {
        return Ok(None);
    }
    let token = format!("sil_{}", crate::vault::random_hex(24));
    svc.store
        .insert_sign_in_link(&hash(&token), &user.id, now + SIGN_IN_LINK_TTL_MS)
        .await?;
    Ok(Some(token))
}

/// Signs in with an emailed link, once.
pub async fn use_sign_in_link(svc: &Service, token: &str) -> Result<(String, Session), AuthError> {
    let refused = || {
        AuthError::from(ServiceError::NotFound(
            "this sign-in link was used already or has expired; ask for a new one".into(),
        ))
    };
    let uid = svc
        .store
        .use_sign_in_link(&hash(token), now_ms())
        .await?
        .ok_or_else(refused)?;
    let user = svc.store.user(&uid).await?.ok_or_else(refused)?;
    if user.disabled_at.is_some() {
        return Err(AuthError::Forbidden(
            "this account is disabled; ask a workspace owner".into(),
        ));
    }
    let ws = home_workspace(&svc.store, &user, None)
        .await?
        .ok_or_else(refused)?;
    start_session(svc, Some(&user.id), &ws).await
}

/// A change that may leave a value as it is.
pub enum Keep<T> {
    Unchanged,
    Set(T),
}

/// Largest logo accepted (the data: URL's length).
pub const LOGO_MAX: usize = 96 * 1024;

/// Sets how a workspace presents itself: its name and its logo (owners and admins).
pub async fn set_branding(
    svc: &Service,
    who: &Principal,
    name: Option<String>,
    logo: Keep<Option<String>>,
) -> Result<serde_json::Value, AuthError> {
    who.may_administer(false, "changing the workspace's name and logo")?;
    let (current_name, current_logo) = svc
        .store
        .workspace_branding(&who.workspace)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no workspace {:?}", who.workspace)))?;
    let name = match name {
        Some(n) if n.trim().is_empty() || n.len() > 100 => {
            return Err(ServiceError::Invalid {
                message: "name: 1 to 100 characters".into(),
                fields: vec![("/name".into(), "1 to 100 characters".into())],
            }
            .into());
        }
        Some(n) => n.trim().to_string(),
        None => current_name,
    };
    let logo = match logo {
        Keep::Unchanged => current_logo,
        Keep::Set(None) => None,
        Keep::Set(Some(l)) => {
            let image = ["png", "jpeg", "gif", "webp"]
                .iter()
                .any(|t| l.starts_with(&format!("data:image/{t};base64,")));
            if !image || l.len() > LOGO_MAX {
                return Err(ServiceError::Invalid {
                    message: format!(
                        "logo: a data:image/png, jpeg, gif or webp;base64 URL of at most {} KiB",
                        LOGO_MAX / 1024
                    ),
                    fields: vec![("/logo".into(), "a small image as a data: URL".into())],
                }
                .into());
            }
            Some(l)
        }
    };
    svc.store
        .set_workspace_branding(&who.workspace, &name, logo.as_deref())
        .await?;
    svc.store
        .audit(
            &who.workspace,
            None,
            "workspace.updated",
            &who.actor().0,
            &json!({"name": name, "logo": logo.is_some()}),
        )
        .await?;
    Ok(json!({"id": who.workspace, "name": name, "logo": logo}))
}

/// Lets members send connection requests, or not (`None`: unchanged); the setting now.
pub async fn set_members_may_request(
    svc: &Service,
    who: &Principal,
    allowed: Option<bool>,
) -> Result<bool, AuthError> {
    if let Some(a) = allowed {
        who.may_administer(false, "changing who may send connection requests")?;
        svc.store.set_members_may_request(&who.workspace, a).await?;
        svc.store
            .audit(
                &who.workspace,
                None,
                "workspace.updated",
                &who.actor().0,
                &json!({"members_may_request": a}),
            )
            .await?;
    }
    Ok(svc.store.members_may_request(&who.workspace).await?)
}

/// A workspace's name and logo, for the pages.
pub async fn branding(svc: &Service, ws: &str) -> (String, Option<String>) {
    svc.store
        .workspace_branding(ws)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| (ws.to_string(), None))
}

/// A user's JSON view (never the password hash).
pub fn user_view(u: &UserRow) -> serde_json::Value {
    serde_json::to_value(UserView {
        id: &u.id,
        email: u.email.as_deref(),
        display_name: &u.display_name,
        external_id: u.external_id.as_deref(),
        installation_admin: u.installation_admin != 0,
        disabled: u.disabled_at.is_some(),
        sso: u.sso_subject.is_some(),
        created_at: crate::model::rfc3339(u.created_at),
        last_sign_in_at: u.last_sign_in_at.map(crate::model::rfc3339),
    })
    .unwrap_or_default()
}

/// A user as the API shows it (never a password hash).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserView<'a> {
    pub id: &'a str,
    /// `null` for a platform's user known only by `external_id`.
    pub email: Option<&'a str>,
    pub display_name: &'a str,
    /// The platform's own id for the user (API keys acting as users).
    pub external_id: Option<&'a str>,
    pub installation_admin: bool,
    pub disabled: bool,
    /// Signs in through single sign-on.
    pub sso: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_sign_in_at: Option<String>,
}

/// Every user of the installation (installation admins).
pub async fn list_users(svc: &Service, who: &Principal) -> Result<Vec<UserRow>, AuthError> {
    require_installation_admin(who)?;
    Ok(svc.store.users().await?)
}

pub(super) fn require_installation_admin(who: &Principal) -> Result<(), AuthError> {
    if who.installation_admin {
        Ok(())
    } else {
        Err(AuthError::Forbidden(
            "this needs the admin token or an installation admin".into(),
        ))
    }
}

/// A user, or 404.
pub async fn user(svc: &Service, id: &str) -> Result<UserRow, AuthError> {
    svc.store
        .user(id)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no user {id:?}")).into())
}

/// Grants or takes away the installation-admin flag (installation admins).
pub async fn set_installation_admin(
    svc: &Service,
    who: &Principal,
    id: &str,
    admin: bool,
) -> Result<(), AuthError> {
    require_installation_admin(who)?;
    if !svc.store.set_installation_admin(id, admin).await? {
        return Err(ServiceError::NotFound(format!("no user {id:?}")).into());
    }
    svc.store
        .audit(
            &who.workspace,
            None,
            "user.installation_admin_set",
            &who.actor().0,
            &json!({"user_id": id, "installation_admin": admin}),
        )
        .await?;
    Ok(())
}

/// The principal `who` is in workspace `ws` (themselves when it is theirs); 404 for a workspace
/// that does not exist or that an API key does not belong to.
pub async fn in_workspace(
    svc: &Service,
    who: &Principal,
    ws: &str,
) -> Result<Principal, AuthError> {
    if who.workspace == ws {
        return Ok(who.clone());
    }
    let hidden = || AuthError::from(ServiceError::NotFound(format!("no workspace {ws:?}")));
    if !svc.store.workspace_exists(ws).await? {
        return Err(hidden());
    }
    match &who.who {
        Who::AdminToken => Ok(Principal::admin_token(ws)),
        Who::User {
            id, via_key: None, ..
        } => {
            let u = svc.store.user(id).await?.ok_or_else(hidden)?;
            user_principal(&svc.store, &u, ws).await
        }
        _ => Err(hidden()),
    }
}

fn member_view(m: &MemberRow) -> serde_json::Value {
    json!({
        "user_id": m.user_id,
        "email": m.email,
        "display_name": m.display_name,
        "external_id": m.external_id,
        "role": m.role,
        "disabled": m.disabled_at.is_some(),
        "since": crate::model::rfc3339(m.created_at),
    })
}

/// A workspace's members (anyone in it but clients).
pub async fn members(svc: &Service, who: &Principal) -> Result<serde_json::Value, AuthError> {
    if who.role() == Some(Role::Client) {
        return Err(AuthError::Forbidden(
            "clients do not see the workspace's members".into(),
        ));
    }
    let rows = svc.store.members(&who.workspace).await?;
    Ok(json!({"members": rows.iter().map(member_view).collect::<Vec<_>>()}))
}

/// One member (clients see only themselves).
pub async fn member(
    svc: &Service,
    who: &Principal,
    user: &str,
) -> Result<serde_json::Value, AuthError> {
    if who.role() == Some(Role::Client) && who.user_id() != Some(user) {
        return Err(AuthError::Forbidden(
            "clients do not see the workspace's members".into(),
        ));
    }
    let m = svc
        .store
        .member(&who.workspace, user)
        .await?
        .ok_or_else(|| {
            ServiceError::NotFound(format!("{user:?} is not a member of {:?}", who.workspace))
        })?;
    Ok(member_view(&m))
}

/// The workspace's open invitations (never their links).
pub async fn invitations(svc: &Service, who: &Principal) -> Result<serde_json::Value, AuthError> {
    who.may_administer(false, "listing invitations")?;
    let rows = svc.store.open_invitations(&who.workspace, now_ms()).await?;
    Ok(json!({"invitations": rows.iter().map(|i| json!({
        "id": i.id, "email": i.email, "role": i.role, "invited_by": i.invited_by,
        "created_at": crate::model::rfc3339(i.created_at),
        "expires_at": crate::model::rfc3339(i.expires_at),
    })).collect::<Vec<_>>()}))
}

/// Withdraws an open invitation.
pub async fn withdraw_invitation(
    svc: &Service,
    who: &Principal,
    id: &str,
) -> Result<(), AuthError> {
    who.may_administer(false, "withdrawing an invitation")?;
    if !svc.store.delete_invitation(&who.workspace, id).await? {
        return Err(ServiceError::NotFound(format!("no open invitation {id:?}")).into());
    }
    svc.store
        .audit(
            &who.workspace,
            None,
            "invitation.withdrawn",
            &who.actor().0,
            &json!({"id": id}),
        )
        .await?;
    Ok(())
}

/// What an invitation link offers (shown before accepting).
pub async fn describe_invitation(
    svc: &Service,
    token: &str,
) -> Result<serde_json::Value, AuthError> {
    let inv = open_invitation(svc, token).await?;
    let account = svc.store.user_by_email(&inv.email).await?.is_some();
    Ok(json!({
        "workspace": inv.workspace_id,
        "email": inv.email,
        "role": inv.role,
        "account_exists": account,
        "expires_at": crate::model::rfc3339(inv.expires_at),
    }))
}

/// The workspace's live API keys (never the key itself).
pub async fn api_keys(svc: &Service, who: &Principal) -> Result<serde_json::Value, AuthError> {
    who.may_administer(false, "listing API keys")?;
    let keys = svc.store.api_keys(&who.workspace).await?;
    Ok(json!({"api_keys": keys.iter().map(|k| json!({
        "id": k.id,
        "name": k.name,
        "permissions": serde_json::from_str::<serde_json::Value>(&k.permissions).unwrap_or(json!([])),
        "created_at": crate::model::rfc3339(k.created_at),
        "last_used_at": k.last_used_at.map(crate::model::rfc3339),
    })).collect::<Vec<_>>()}))
}

/// Revokes one of the workspace's API keys (the caller clears its credential cache).
pub async fn revoke_api_key(svc: &Service, who: &Principal, id: &str) -> Result<(), AuthError> {
    who.may_administer(false, "revoking an API key")?;
    let journal = Journal::new().audit(None, "api_key.revoked", &who.actor().0, &json!({"id": id}));
    if !svc
        .store
        .revoke_api_key(&who.workspace, id, &journal)
        .await?
    {
        return Err(ServiceError::NotFound(format!(
            "no API key {id:?} in this workspace; GET /api/v1/api-keys lists them"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches(&h, "correct horse battery"));
        assert!(!password_matches(&h, "correct horse batterY"));
        assert!(!password_matches("not a phc string", "x"));
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_account_locks_after_ten_failures_in_its_window() {
        let email = "lock-test@example.com";
        let t = 1_000_000;
        for _ in 0..9 {
            account_failed(email, t);
        }
        assert!(!account_locked(email, t));
        account_failed(email, t);
        assert!(account_locked(email, t + 1));
        assert!(!account_locked(email, t + ACCOUNT_WINDOW_MS));
        assert!(!account_locked("other@example.com", t));
    }
}
