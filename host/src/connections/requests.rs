//! Connection requests (the asking side): a workspace asks a client, by email, to connect one or
//! more apps — or to reconnect one of their connections — through one single-use link that
//! expires. Requests are `outstanding` until fulfilled, cancelled (only the asking side can) or
//! expired; each change writes its audit row and its `connection_request.*` event in its own
//! transaction. Resending gives a request a new link and kills the old one.

use super::*;

use crate::store::RequestRow;

/// Longest a request link may live.
const REQUEST_TTL_MAX_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long a request link lives by default.
pub const REQUEST_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// `POST /api/v1/connection-requests` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub client_email: String,
    /// One app, or
    pub connector: Option<String>,
    /// several (one connection each), or
    pub connectors: Option<Vec<String>>,
    /// a connection to reconnect (its tokens are replaced in place; it keeps its id).
    pub connection_id: Option<String>,
    pub label: Option<String>,
    pub message: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub config: Option<Value>,
    /// Seconds the link stays valid (default seven days, at most thirty).
    pub expires_in: Option<i64>,
}

/// A request's status as shown: an outstanding request whose link lapsed is `expired`.
fn status_of(r: &RequestRow) -> &str {
    if r.status == "outstanding" && r.expires_at <= now_ms() {
        "expired"
    } else {
        r.status.as_str()
    }
}

/// A connection request as the API shows it (never its link).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = ConnectionRequest)]
pub struct RequestView<'a> {
    pub id: &'a str,
    pub client_email: &'a str,
    pub connector: &'a str,
    /// The connection it created, or the one it reconnects.
    pub connection_id: Option<&'a str>,
    pub reconnect: bool,
    pub label: Option<&'a str>,
    pub message: Option<&'a str>,
    #[schema(value_type = Vec<String>)]
    pub scopes: Value,
    #[schema(value_type = Object)]
    pub config: Value,
    pub requested_by: &'a str,
    /// `outstanding`, `fulfilled`, `cancelled` or `expired`.
    pub status: &'a str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub fulfilled_at: Option<String>,
    #[schema(format = DateTime)]
    pub cancelled_at: Option<String>,
}

/// The JSON view of a request ([`RequestView`]).
pub fn request_view(r: &RequestRow) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    serde_json::to_value(RequestView {
        id: &r.id,
        client_email: &r.client_email,
        connector: &r.connector_id,
        connection_id: r.connection_id.as_deref(),
        reconnect: r.reconnect != 0,
        label: r.label.as_deref(),
        message: r.message.as_deref(),
        scopes: parse(&r.scopes),
        config: parse(&r.config),
        requested_by: &r.requested_by,
        status: status_of(r),
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
        fulfilled_at: r.fulfilled_at.map(rfc3339),
        cancelled_at: r.cancelled_at.map(rfc3339),
    })
    .unwrap_or(Value::Null)
}

fn request_event(kind: &str, r: &RequestRow) -> OutEvent {
    events::request_event(kind, &r.workspace_id, request_view(r))
}

impl Service {
    /// The asking side: owners and admins, and members when the workspace lets them
    /// (`members_may_request`).
    async fn may_request(&self, who: &Principal, what: &str) -> Result<()> {
        if who.role() == Some(Role::Member)
            && self.store.members_may_request(&who.workspace).await?
        {
            return Ok(());
        }
        who.may_administer(false, what).map_err(|_| {
            Error::Forbidden(format!(
                "{what} needs a workspace owner or admin (or a member, when the workspace allows members to send requests)"
            ))
        })
    }

    /// Creates the requests of one link: `(requests, token)`; the token is the link's secret,
    /// shown once.
    pub async fn create_requests(
        &self,
        who: &Principal,
        n: NewRequest,
    ) -> Result<(Vec<RequestRow>, String)> {
        self.may_request(who, "asking a client to connect an app")
            .await?;
        let ws = who.workspace.as_str();
        let email = normalize_email(&n.client_email, "/client_email")?;
        let ttl = n
            .expires_in
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(REQUEST_TTL_MS);
        if !(60_000..=REQUEST_TTL_MAX_MS).contains(&ttl) {
            return Err(Error::Invalid {
                message: "expires_in: from 60 seconds to 30 days (2592000)".into(),
                fields: vec![("/expires_in".into(), "60 to 2592000 seconds".into())],
            });
        }
        // What to ask for: (connector, connection to reconnect).
        let mut asks: Vec<(String, Option<ConnectionRow>)> = Vec::new();
        match (&n.connector, &n.connectors, &n.connection_id) {
            (Some(c), None, None) => asks.push((c.clone(), None)),
            (None, Some(list), None) if !list.is_empty() && list.len() <= 20 => {
                for c in list {
                    if asks.iter().any(|(x, _)| x == c) {
                        return Err(Error::BadRequest(format!("{c} is asked for twice")));
                    }
                    asks.push((c.clone(), None));
                }
            }
            (None, None, Some(id)) => {
                let c = self.connection_for(who, id, Need::See).await?;
                if c.auth_kind != "oauth2" {
                    return Err(Error::BadRequest(
                        "only OAuth connections are reconnected through a request; replace an API key with PUT …/api-key".into(),
                    ));
                }
                asks.push((c.connector_id.clone(), Some(c)));
            }
            _ => {
                return Err(Error::Invalid {
                    message: "name what to connect: connector, connectors (1 to 20) or connection_id (to reconnect), exactly one of them".into(),
                    fields: vec![("/connector".into(), "exactly one of connector, connectors, connection_id".into())],
                });
            }
        }
        let token = format!("req_{}", crate::vault::random_hex(24));
        let now = now_ms();
        let mut rows = Vec::new();
        let mut journal = Journal::new();
        for (connector, existing) in asks {
            let entry = self.connector(&connector)?;
            let m = entry.connector.manifest();
            if !matches!(m.auth, AuthScheme::Oauth2(_)) {
                return Err(Error::BadRequest(format!(
                    "{} connects with an API key; requests ask clients to authorize OAuth apps",
                    m.display_name
                )));
            }
            let config = match (&n.config, &existing) {
                (Some(cfg), None) => self.validate_config(&entry.connector, cfg).await?,
                (None, None) => self.validate_config(&entry.connector, &json!({})).await?,
                (_, Some(c)) => serde_json::from_str(&c.config).unwrap_or(json!({})),
            };
            let (app, _, _) = self.app(ws, &m.id).await?;
            let previous: Vec<String> = existing
                .as_ref()
                .and_then(|c| serde_json::from_str(&c.requested_scopes).ok())
                .unwrap_or_default();
            let scopes =
                self.requested_scopes(m, &app, n.scopes.as_deref().unwrap_or(&previous), &[])?;
            let row = RequestRow {
                id: new_id("creq"),
                workspace_id: ws.to_string(),
                token_hash: oauth::hash(&token),
                client_email: email.clone(),
                connector_id: m.id.clone(),
                connection_id: existing.as_ref().map(|c| c.id.clone()),
                reconnect: i64::from(existing.is_some()),
                label: n
                    .label
                    .clone()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .or_else(|| existing.as_ref().map(|c| c.name.clone())),
                message: n.message.clone().filter(|m| !m.trim().is_empty()),
                scopes: serde_json::to_string(&scopes).unwrap_or_default(),
                config: config.to_string(),
                requested_by: who.actor().0,
                status: "outstanding".into(),
                created_at: now,
                expires_at: now + ttl,
                fulfilled_at: None,
                cancelled_at: None,
                joined_at: None,
            };
            journal = journal.audit(
                row.connection_id.as_deref(),
                "connection_request.created",
                &who.actor().0,
                &json!({"id": row.id, "client_email": email, "connector": row.connector_id, "reconnect": row.reconnect != 0}),
            );
            rows.push(row);
        }
        self.store.insert_requests(&rows, &journal).await?;
        Ok((rows, token))
    }

    /// The workspace's requests, newest first (`status`: outstanding, fulfilled, cancelled or
    /// expired).
    pub async fn list_requests(&self, who: &Principal, status: Option<&str>) -> Result<Value> {
        self.may_request(who, "listing connection requests").await?;
        if let Some(s) = status
            && !matches!(s, "outstanding" | "fulfilled" | "cancelled" | "expired")
        {
            return Err(Error::BadRequest(
                "status: outstanding, fulfilled, cancelled or expired".into(),
            ));
        }
        // Expired links are closed first, so the statuses are current.
        self.expire_requests().await?;
        let rows = self.store.requests(&who.workspace, status, 500).await?;
        Ok(json!({"connection_requests": rows.iter().map(request_view).collect::<Vec<_>>()}))
    }

    /// One request.
    pub async fn request(&self, who: &Principal, id: &str) -> Result<RequestRow> {
        self.may_request(who, "reading connection requests").await?;
        self.request_row(&who.workspace, id).await
    }

    /// A request of the workspace, read again after a change (the caller was checked).
    async fn request_row(&self, ws: &str, id: &str) -> Result<RequestRow> {
        self.store.request(ws, id).await?.ok_or_else(|| {
            Error::NotFound(format!("no connection request {id:?} in this workspace"))
        })
    }

    /// Cancels an outstanding request (the asking side only); its link stops working.
    pub async fn cancel_request(&self, who: &Principal, id: &str) -> Result<RequestRow> {
        let r = self.request(who, id).await?;
        let mut closed = r.clone();
        closed.status = "cancelled".into();
        closed.cancelled_at = Some(now_ms());
        let journal = Journal::new()
            .audit(
                r.connection_id.as_deref(),
                "connection_request.cancelled",
                &who.actor().0,
                &json!({"id": r.id}),
            )
            .event(request_event("connection_request.cancelled", &closed));
        if !self
            .store
            .close_request(&who.workspace, id, "cancelled", &journal)
            .await?
        {
            return Err(Error::Conflict(format!(
                "this request is {} already; only an outstanding request can be cancelled",
                status_of(&r)
            )));
        }
        self.request_row(&who.workspace, id).await
    }

    /// Gives an outstanding request a new link (shown once); the old link stops working.
    pub async fn resend_request(&self, who: &Principal, id: &str) -> Result<(RequestRow, String)> {
        let r = self.request(who, id).await?;
        let token = format!("req_{}", crate::vault::random_hex(24));
        let ttl = (r.expires_at - r.created_at).clamp(60_000, REQUEST_TTL_MAX_MS);
        let journal = Journal::new().audit(
            r.connection_id.as_deref(),
            "connection_request.resent",
            &who.actor().0,
            &json!({"id": r.id}),
        );
        let relinked = r.status == "outstanding"
            && self
                .store
                .relink_request(
                    &who.workspace,
                    id,
                    &oauth::hash(&token),
                    now_ms() + ttl,
                    &journal,
                )
                .await?;
        if !relinked {
            return Err(Error::Conflict(format!(
                "this request is {}; only an outstanding request can be sent again",
                status_of(&r)
            )));
        }
        Ok((self.request_row(&who.workspace, id).await?, token))
    }

    /// Closes outstanding requests whose link expired, each with its event. Returns how many.
    pub async fn expire_requests(&self) -> Result<usize> {
        let mut n = 0;
        for r in self.store.expired_requests(now_ms(), 100).await? {
            let mut closed = r.clone();
            closed.status = "expired".into();
            let journal = Journal::new()
                .audit(
                    r.connection_id.as_deref(),
                    "connection_request.expired",
                    "keyport",
                    &json!({"id": r.id}),
                )
                .event(request_event("connection_request.expired", &closed));
            if self
                .store
                .close_request(&r.workspace_id, &r.id, "expired", &journal)
                .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Marks a request fulfilled by `connection` (the OAuth callback, once authorized), with its
    /// event, in one transaction.
    pub(super) async fn fulfil_request(&self, ws: &str, id: &str, connection: &str) -> Result<()> {
        let Some(r) = self.store.request(ws, id).await? else {
            return Ok(());
        };
        let mut done = r.clone();
        done.status = "fulfilled".into();
        done.connection_id = Some(connection.to_string());
        done.fulfilled_at = Some(now_ms());
        let journal = Journal::new()
            .audit(
                Some(connection),
                "connection_request.fulfilled",
                "keyport",
                &json!({"id": r.id, "client_email": r.client_email}),
            )
            .event(request_event("connection_request.fulfilled", &done));
        self.store
            .fulfil_request(ws, id, connection, &journal)
            .await?;
        Ok(())
    }

    /// The requests a link names, using the link once (an empty list: used, expired, cancelled
    /// or unknown).
    pub async fn join_requests(&self, token: &str) -> Result<Vec<RequestRow>> {
        // The query itself refuses an expired link; closing it is the background loop's.
        Ok(self
            .store
            .join_requests(&oauth::hash(token), now_ms())
            .await?)
    }

    /// What the client `email` is asked for in `who`'s workspace, and the connections they own.
    pub async fn portal(&self, who: &Principal, email: &str) -> Result<Value> {
        let now = now_ms();
        let requests = self.store.requests_for(&who.workspace, email, now).await?;
        let Some(me) = who.user_id() else {
            return Err(Error::Forbidden(
                "the portal is for people signed in as themselves".into(),
            ));
        };
        let filter = ConnectionFilter {
            visible: crate::store::Visible::Own(me.to_string()),
            ..Default::default()
        };
        let rows = self
            .store
            .connections(&who.workspace, &filter, None, 500)
            .await?;
        let app = |id: &str| self.registry.display_name(id);
        Ok(json!({
            "workspace": who.workspace,
            "requests": requests.iter().map(|r| {
                let mut v = request_view(r);
                v["app"] = json!(app(&r.connector_id));
                v
            }).collect::<Vec<_>>(),
            "connections": rows.iter().map(|c| {
                let mut v = view(c);
                v["app"] = json!(app(&c.connector_id));
                v
            }).collect::<Vec<_>>(),
        }))
    }

    /// Starts the OAuth flow a request asks for, for the client it was sent to: a new
    /// connection they own (shared with the workspace at `use`), or the reconnect of the one the
    /// request names. The callback fulfils the request.
    pub async fn connect_request(
        &self,
        who: &Principal,
        email: &str,
        id: &str,
        browser: FlowBrowser,
    ) -> Result<Started> {
        let hidden = || Error::NotFound(format!("no connection request {id:?} for you"));
        let r = self
            .store
            .request(&who.workspace, id)
            .await?
            .filter(|r| r.client_email == email)
            .ok_or_else(hidden)?;
        if status_of(&r) != "outstanding" {
            return Err(Error::Conflict(format!(
                "this request is {}; ask for a new one",
                status_of(&r)
            )));
        }
        let browser = FlowBrowser {
            request: Some(r.id.clone()),
            ..browser
        };
        let scopes: Vec<String> = serde_json::from_str(&r.scopes).unwrap_or_default();
        match (&r.connection_id, r.reconnect != 0) {
            (Some(conn), true) => self.reconnect(who, conn, &scopes, browser).await,
            _ => {
                self.start_oauth(
                    who,
                    StartOAuth {
                        connector: r.connector_id.clone(),
                        name: r.label.clone(),
                        scopes: Some(scopes),
                        config: serde_json::from_str(&r.config).ok(),
                        return_to: browser.return_to,
                        session: browser.session,
                        request: browser.request,
                    },
                )
                .await
            }
        }
    }
}
