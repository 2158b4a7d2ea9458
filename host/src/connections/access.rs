//! Who may see, use or manage a connection: one decision ([`decide`]) that every path calls
//! (API, pages, proxy, credentials, audit views). Handlers never decide.
//!
//! A request reaches the lifecycle as a [`Principal`]: a user with a role in the workspace, the
//! workspace's automation (an API key without `X-Keyport-User`), or the admin token. A connection
//! has an owner (the user who authorized it, or none: the workspace's own) and a visibility,
//! `personal` or `shared` at `use` or `manage`. The rules:
//!
//! | principal | sees | uses | manages (refresh, reconnect, config, name, revoke) | deletes | changes sharing |
//! |---|---|---|---|---|---|
//! | owner, admin, admin token | all | own, the workspace's, shared | own, the workspace's, shared; others' personal: revoke only | all but clients' | own; others' unless personal |
//! | member | own, the workspace's, shared | the same | own, the workspace's, shared at `manage` | own | own |
//! | client | own | — | own | own | — |
//! | automation (API key) | the workspace's, shared | the same | the workspace's, shared at `manage` | the workspace's | — |
//!
//! A connection owned by a client is the client's to revoke and delete; admins may switch it off.
//! An API key acting for a user (`X-Keyport-User`) is that user. Something the caller may not see
//! is 404, exactly like another workspace's connection; something they see but may not do is 403
//! naming what is needed.

use super::{ConnectionRow, Error, Result};
use crate::store::Visible;

/// A workspace role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Client,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Client => "client",
        }
    }

    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Client];

    /// Owner or admin.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "unknown role {s:?}: use owner, admin, member or client"
                ))
            })
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The admin token (bootstrap, break-glass): a workspace owner without a user.
    AdminToken,
    /// A user, signed in or acted for by an API key.
    User {
        id: String,
        /// Email, or the platform's external id for users an API key acts for.
        label: String,
        role: Role,
        /// The API key acting for this user (`X-Keyport-User`): `(id, name)`.
        via_key: Option<(String, String)>,
    },
    /// A workspace API key acting as the workspace's automation.
    Automation { key_id: String, key_name: String },
    /// keyport itself (scheduler, probes).
    System,
}

/// An authenticated caller in one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub workspace: String,
    pub who: Who,
    /// Gives what the admin token gives across the installation (connector uploads, provider
    /// imports, SSO settings, users).
    pub installation_admin: bool,
}

impl Principal {
    /// The admin token in `ws`.
    pub fn admin_token(ws: &str) -> Self {
        Principal {
            workspace: ws.into(),
            who: Who::AdminToken,
            installation_admin: true,
        }
    }

    /// keyport itself in `ws`.
    pub fn system(ws: &str) -> Self {
        Principal {
            workspace: ws.into(),
            who: Who::System,
            installation_admin: false,
        }
    }

    /// The user it is (also when an API key acts for them).
    pub fn user_id(&self) -> Option<&str> {
        match &self.who {
            Who::User { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Its role in the workspace: the admin token and keyport itself count as owners; the
    /// automation has none.
    pub fn role(&self) -> Option<Role> {
        match &self.who {
            Who::AdminToken | Who::System => Some(Role::Owner),
            Who::User { role, .. } => Some(*role),
            Who::Automation { .. } => None,
        }
    }

    /// Owner or admin of the workspace (or the admin token).
    pub fn is_workspace_admin(&self) -> bool {
        self.role().is_some_and(Role::is_admin)
    }

    /// What the audit log records: user id and email, API key id and name (and the user it acted
    /// for), or the admin token.
    pub fn actor(&self) -> super::Actor {
        super::Actor(match &self.who {
            Who::AdminToken => "admin".into(),
            Who::System => "keyport".into(),
            Who::User {
                id,
                label,
                via_key: None,
                ..
            } => format!("user:{id} <{label}>"),
            Who::User {
                id,
                label,
                via_key: Some((key, name)),
                ..
            } => format!("api-key:{key} ({name}) for user:{id} <{label}>"),
            Who::Automation { key_id, key_name } => format!("api-key:{key_id} ({key_name})"),
        })
    }

    /// Makes a new connection this principal's: a user owns it (personal; a client's is shared
    /// with the workspace at `use`), anyone else leaves it to the workspace (shared at `manage`).
    pub fn own(&self, c: &mut ConnectionRow) {
        c.owner_user_id = self.user_id().map(str::to_string);
        (c.visibility, c.share_permission) = match self.role() {
            _ if c.owner_user_id.is_none() => ("shared".into(), "manage".into()),
            Some(Role::Client) => ("shared".into(), "use".into()),
            _ => ("personal".into(), "manage".into()),
        };
    }

    /// Workspace settings (provider apps, webhooks, API keys, members) are for owners and
    /// admins (and the admin token); `automation`: also for the workspace's automation.
    pub fn may_administer(&self, automation: bool, what: &str) -> Result<()> {
        match self.role() {
            Some(r) if r.is_admin() => Ok(()),
            None if automation => Ok(()),
            _ => Err(Error::Forbidden(format!(
                "{what} needs a workspace owner or admin"
            ))),
        }
    }

    /// Which connections a listing shows this principal ([`decide`] with [`Need::See`], as SQL).
    pub fn visible(&self) -> Visible {
        match &self.who {
            Who::AdminToken | Who::System => Visible::All,
            Who::Automation { .. } => Visible::Shared(None),
            Who::User { id, role, .. } => match role {
                Role::Owner | Role::Admin => Visible::All,
                Role::Member => Visible::Shared(Some(id.clone())),
                Role::Client => Visible::Own(id.clone()),
            },
        }
    }
}

/// What the caller wants to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// Read it (detail, listing, audit trail, dependents).
    See,
    /// Call through the proxy, read its effective config, register dependents.
    Use,
    /// Refresh, reconnect, rename, edit config, replace its API key, switch it on or off.
    Manage,
    /// Revoke at the provider and drop its secrets.
    Revoke,
    /// Delete it.
    Delete,
    /// Change its visibility or permission.
    Share,
    /// Read its raw credentials (also needs the API key permission `credentials:read`).
    ReadSecrets,
}

impl Need {
    /// Every need, for tests and docs.
    pub const ALL: [Need; 7] = [
        Need::See,
        Need::Use,
        Need::Manage,
        Need::Revoke,
        Need::Delete,
        Need::Share,
        Need::ReadSecrets,
    ];
}

/// How the principal stands to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    /// They own it.
    Own,
    /// Nobody owns it: the workspace's (counts as shared at `manage`).
    Workspace,
    /// Someone else's, personal.
    OthersPersonal,
    /// Someone else's, shared at `use`.
    SharedUse,
    /// Someone else's, shared at `manage`.
    SharedManage,
}

fn relation(p: &Principal, c: &ConnectionRow) -> Relation {
    match (&c.owner_user_id, p.user_id()) {
        (None, _) => Relation::Workspace,
        (Some(o), Some(u)) if o == u => Relation::Own,
        _ if c.visibility != "shared" => Relation::OthersPersonal,
        _ if c.share_permission == "manage" => Relation::SharedManage,
        _ => Relation::SharedUse,
    }
}

/// Whether `p` may do `need` with `c`: `Ok`, 404 when they may not even see it (exactly what
/// another workspace's connection answers), or 403 naming what is needed. `owner_is_client`:
/// the connection's owner is a client of this workspace.
pub fn decide(p: &Principal, c: &ConnectionRow, need: Need, owner_is_client: bool) -> Result<()> {
    use Need::*;
    use Relation::*;
    let hidden = || Error::NotFound(format!("no connection {:?} in this workspace", c.id));
    let deny = |why: &str| Err(Error::Forbidden(why.to_string()));
    if c.workspace_id != p.workspace {
        return Err(hidden());
    }
    if p.who == Who::System {
        return Ok(());
    }
    let rel = relation(p, c);
    let client_owned = owner_is_client && rel != Own;
    match (p.role(), rel) {
        // Clients see their own connections and nothing else.
        (Some(Role::Client), r) if r != Own => Err(hidden()),
        (Some(Role::Client), _) => match need {
            Use | ReadSecrets => deny(
                "a client's connections are used by the workspace's members, not from the client portal",
            ),
            Share => deny("the workspace decides who uses a client's connection"),
            _ => Ok(()),
        },
        // Members and the automation do not see other people's personal connections.
        (Some(Role::Member) | None, OthersPersonal) => Err(hidden()),
        (role, rel) => {
            let admin = role.is_some_and(Role::is_admin);
            let automation = role.is_none();
            match need {
                See => Ok(()),
                Use => match rel {
                    OthersPersonal => deny("a personal connection is used by its owner alone"),
                    _ => Ok(()),
                },
                Manage | ReadSecrets => match rel {
                    Own | Workspace | SharedManage => Ok(()),
                    SharedUse if admin => Ok(()),
                    SharedUse => deny(
                        "this connection is shared at `use`: refreshing, reconnecting, editing, revoking or reading its credentials needs `manage` (ask its owner or a workspace admin)",
                    ),
                    OthersPersonal => deny(
                        "a personal connection is managed by its owner alone; workspace owners and admins may only revoke or delete it",
                    ),
                },
                Revoke => match rel {
                    _ if client_owned => deny(
                        "a client's connection is the client's to revoke; switch it off (PATCH {\"enabled\": false}) to stop using it",
                    ),
                    Own | Workspace | SharedManage => Ok(()),
                    SharedUse | OthersPersonal if admin => Ok(()),
                    _ => deny(
                        "this connection is shared at `use`: revoking it needs `manage` (ask its owner or a workspace admin)",
                    ),
                },
                Delete => match rel {
                    _ if client_owned => deny(
                        "a client's connection is the client's to delete; switch it off (PATCH {\"enabled\": false}) to stop using it",
                    ),
                    Own => Ok(()),
                    Workspace if automation => Ok(()),
                    _ if admin => Ok(()),
                    _ => deny(
                        "deleting this connection needs its owner or a workspace owner or admin",
                    ),
                },
                Share => match rel {
                    _ if automation => deny(
                        "an API key cannot change who shares a connection; its owner or a workspace admin can",
                    ),
                    Own => Ok(()),
                    OthersPersonal => deny("only its owner shares a personal connection"),
                    _ if admin => Ok(()),
                    _ => deny(
                        "changing who shares this connection needs its owner or a workspace owner or admin",
                    ),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn conn(owner: Option<&str>, vis: &str, perm: &str) -> ConnectionRow {
        let mut c = ConnectionRow::new(
            "c1",
            "ws",
            "slack",
            "n".into(),
            "oauth2",
            Status::Active,
            "{}".into(),
        );
        c.owner_user_id = owner.map(str::to_string);
        c.visibility = vis.into();
        c.share_permission = perm.into();
        c
    }

    fn user(id: &str, role: Role) -> Principal {
        Principal {
            workspace: "ws".into(),
            who: Who::User {
                id: id.into(),
                label: format!("{id}@example.com"),
                role,
                via_key: None,
            },
            installation_admin: false,
        }
    }

    /// The SQL listing scope agrees with `decide(See)` for every principal and relation.
    #[test]
    fn listing_scope_matches_the_decision() {
        let principals = [
            Principal::admin_token("ws"),
            user("a", Role::Owner),
            user("a", Role::Admin),
            user("a", Role::Member),
            user("a", Role::Client),
            Principal {
                workspace: "ws".into(),
                who: Who::Automation {
                    key_id: "k".into(),
                    key_name: "ci".into(),
                },
                installation_admin: false,
            },
        ];
        let conns = [
            conn(None, "shared", "manage"),
            conn(Some("a"), "personal", "manage"),
            conn(Some("a"), "shared", "use"),
            conn(Some("b"), "personal", "manage"),
            conn(Some("b"), "shared", "use"),
            conn(Some("b"), "shared", "manage"),
        ];
        for p in &principals {
            for c in &conns {
                let decided = decide(p, c, Need::See, false).is_ok();
                let listed = match p.visible() {
                    Visible::All => true,
                    Visible::Shared(u) => {
                        c.owner_user_id.is_none()
                            || c.visibility == "shared"
                            || c.owner_user_id == u
                    }
                    Visible::Own(u) => c.owner_user_id.as_deref() == Some(u.as_str()),
                };
                assert_eq!(decided, listed, "{p:?} and {c:?}");
            }
        }
    }

    #[test]
    fn another_workspace_is_not_found_for_everyone() {
        let mut c = conn(None, "shared", "manage");
        c.workspace_id = "other".into();
        for need in Need::ALL {
            assert!(matches!(
                decide(&Principal::admin_token("ws"), &c, need, false),
                Err(Error::NotFound(_))
            ));
        }
    }
}
