//! The authorization-code flow: start, launch (binding the browser), callback (state, `iss`,
//! PKCE, code exchange) and reconnect.

use super::*;

use crate::vault::constant_time_eq;

/// `POST /connections/oauth/start` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartOAuth {
    pub connector: String,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub config: Option<Value>,
    pub return_to: Option<String>,
    /// Set by the API layer (never from the body): the UI session starting the flow, whose
    /// browser alone may open the launch link.
    #[serde(skip)]
    pub session: Option<String>,
    /// Set by the service (never from the body): the connection request this flow fulfils.
    #[serde(skip)]
    pub request: Option<String>,
}

/// Where a flow's browser comes back to, the UI session it belongs to, and the connection
/// request it fulfils.
#[derive(Debug, Default)]
pub struct FlowBrowser {
    pub return_to: Option<String>,
    pub session: Option<String>,
    pub request: Option<String>,
}

/// A started OAuth flow.
#[derive(Debug, Serialize)]
pub struct Started {
    pub connection_id: String,
    /// Open this in the user's browser: it binds the flow to that browser and redirects to the
    /// provider's consent screen.
    pub authorize_url: String,
    pub expires_at: String,
}

/// The outcome of a callback, for the browser.
#[derive(Debug)]
pub struct CallbackOutcome {
    pub location: String,
    pub clear_cookie: Option<String>,
}

/// What the callback got.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl Service {
    pub(super) fn check_return_to(&self, return_to: &str) -> Result<()> {
        let ok = url::Url::parse(return_to).ok().is_some_and(|u| {
            let origin = u.origin().ascii_serialization();
            std::iter::once(&self.config.public_url)
                .chain(self.config.return_to_allowlist.iter())
                .any(|allowed| {
                    let allowed = allowed.trim_end_matches('/');
                    origin == allowed || return_to.starts_with(&format!("{allowed}/"))
                })
        });
        if ok {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "return_to {return_to:?} is not allowed; add its origin to KEYPORT_RETURN_TO_ALLOWLIST"
            )))
        }
    }

    /// Starts an OAuth connection: a `pending` connection plus a flow.
    pub async fn start_oauth(&self, who: &Principal, req: StartOAuth) -> Result<Started> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        let entry = self.connector(&req.connector)?;
        let m = entry.connector.manifest();
        self.oauth_of(m)?;
        self.refuse_hidden(ws, &m.id).await?;
        if let Some(r) = &req.return_to {
            self.check_return_to(r)?;
        }
        let config = self
            .validate_config(&entry.connector, req.config.as_ref().unwrap_or(&json!({})))
            .await?;
        let (app, _, _) = self.app(ws, &m.id).await?;
        let scopes = self.requested_scopes(m, &app, req.scopes.as_deref().unwrap_or(&[]), &[])?;
        let id = new_id("conn");
        let name = req
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| m.display_name.clone());
        let mut row = ConnectionRow::new(
            &id,
            ws,
            &m.id,
            name,
            "oauth2",
            Status::Pending,
            config.to_string(),
        );
        row.status_reason = Some("Waiting for the user to authorize.".into());
        who.own(&mut row);
        row.requested_scopes = serde_json::to_string(&scopes).unwrap_or_default();
        let journal = Journal::new()
            .audit(
                Some(&id),
                "connection.created",
                &actor.0,
                &json!({"connector": m.id, "auth": "oauth2"}),
            )
            .event(Self::event("connection.created", &row, json!({})));
        self.store.insert_connection(&row, &[], &journal).await?;
        let browser = FlowBrowser {
            return_to: req.return_to,
            session: req.session,
            request: req.request,
        };
        self.new_flow(ws, &id, &m.id, &scopes, false, browser).await
    }

    /// Scopes to request: required ones, the app's chosen ones, the caller's, and `extra`.
    pub(super) fn requested_scopes(
        &self,
        m: &crate::runtime::Manifest,
        app: &ProviderAppRow,
        asked: &[String],
        extra: &[String],
    ) -> Result<Vec<String>> {
        let chosen: Vec<String> = serde_json::from_str(&app.scopes).unwrap_or_default();
        let mut out: Vec<String> = m
            .scopes
            .iter()
            .filter(|s| s.required)
            .map(|s| s.name.clone())
            .collect();
        for s in chosen.iter().chain(asked).chain(extra) {
            if !m.scopes.iter().any(|k| &k.name == s) {
                return Err(Error::Invalid {
                    message: format!(
                        "{s:?} is not a scope of {}; GET /api/v1/connectors/{} lists them",
                        m.id, m.id
                    ),
                    fields: vec![("/scopes".into(), format!("unknown scope {s}"))],
                });
            }
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        Ok(out)
    }

    pub(super) async fn new_flow(
        &self,
        ws: &str,
        conn: &str,
        connector: &str,
        scopes: &[String],
        reconnect: bool,
        browser: FlowBrowser,
    ) -> Result<Started> {
        let now = now_ms();
        let flow_id = new_id("flow");
        let state = oauth::new_state();
        let launch = oauth::new_state();
        let flow = FlowRow {
            id: flow_id.clone(),
            workspace_id: ws.into(),
            connection_id: conn.into(),
            connector_id: connector.into(),
            state_hash: oauth::hash(&state),
            launch_hash: oauth::hash(&launch),
            browser_hash: None,
            redirect_uri: self.redirect_uri(),
            requested_scopes: serde_json::to_string(scopes).unwrap_or_default(),
            return_to: browser.return_to,
            reconnect: reconnect as i64,
            session_hash: browser.session,
            expires_at: now + FLOW_TTL_MS,
            launched_at: None,
            consumed_at: None,
            created_at: now,
            request_id: browser.request,
        };
        self.store.insert_flow(&flow).await?;
        // The state itself is needed once more, at launch, to build the provider URL: keep it
        // sealed with the flow, with the PKCE verifier.
        let (challenge, verifier) = oauth::new_pkce();
        for (field, value) in [
            ("state", state.as_str()),
            ("pkce_verifier", verifier.as_str()),
            ("pkce_challenge", challenge.as_str()),
        ] {
            let sealed = self.seal_field(ws, &flow_id, field, value);
            self.store.put_secret(&flow_id, ws, &sealed).await?;
        }
        Ok(Started {
            connection_id: conn.into(),
            authorize_url: format!("{}/oauth/launch/{launch}", self.config.public_url),
            expires_at: rfc3339(flow.expires_at),
        })
    }

    /// Opens a launch link once: binds the flow to this browser and returns (provider URL,
    /// cookie name, cookie value).
    /// `session` is the opening browser's UI session (cookie hash), if signed in.
    pub async fn launch(
        &self,
        launch: &str,
        session: Option<&str>,
    ) -> Result<(String, String, String)> {
        let binding = oauth::new_state();
        let now = now_ms();
        let launch_hash = oauth::hash(launch);
        let Some(flow) = self
            .store
            .launch_flow(&launch_hash, &oauth::hash(&binding), session, now)
            .await?
        else {
            let other_session = self
                .store
                .flow_by_launch(&launch_hash, now)
                .await?
                .is_some_and(|f| f.session_hash.is_some());
            return Err(Error::BadRequest(if other_session {
                "This authorization link was started from another keyport sign-in. Open it in the browser that started it, or start the connection again.".into()
            } else {
                "This authorization link was already used or has expired. Start the connection again.".into()
            }));
        };
        let ws = flow.workspace_id.as_str();
        let entry = self.connector(&flow.connector_id)?;
        let m = entry.connector.manifest();
        let o = self.oauth_of(m)?;
        let (app, _, overrides) = self.app(ws, &flow.connector_id).await?;
        let conn = self.get(ws, &flow.connection_id).await?;
        let config: Value = self.effective_config_of(&conn, &json!({}))?;
        let expired = || {
            Error::BadRequest(
                "This authorization link has expired. Start the connection again.".into(),
            )
        };
        let state = self
            .open_secret(ws, &flow.id, "state")
            .await?
            .ok_or_else(expired)?;
        let challenge = self
            .open_secret(ws, &flow.id, "pkce_challenge")
            .await?
            .ok_or_else(expired)?;
        self.store
            .delete_secrets(ws, &flow.id, Some("state"))
            .await?;
        self.store
            .delete_secrets(ws, &flow.id, Some("pkce_challenge"))
            .await?;
        let scopes: Vec<String> = serde_json::from_str(&flow.requested_scopes).unwrap_or_default();
        let scope_params: Vec<(String, String)> = scopes
            .iter()
            .map(|s| {
                let param = m
                    .scopes
                    .iter()
                    .find(|k| &k.name == s)
                    .and_then(|k| k.param.clone())
                    .unwrap_or_else(|| "scope".into());
                (s.clone(), param)
            })
            .collect();
        let url = oauth::authorize_url(&oauth::AuthorizeParams {
            oauth: o,
            config: &config,
            client_id: &app.client_id,
            redirect_uri: &flow.redirect_uri,
            state: &state,
            code_challenge: o.pkce.then_some(challenge.as_str()),
            scopes: &scope_params,
            overrides: &overrides,
        })
        .map_err(Error::BadRequest)?;
        Ok((url, self.cookie_name(&flow.id), binding))
    }

    /// The browser-binding cookie's name for a flow.
    pub fn cookie_name(&self, flow_id: &str) -> String {
        let short = &flow_id[flow_id.len().saturating_sub(12)..];
        if self.config.public_url.starts_with("https://") {
            format!("__Host-keyport-flow-{short}")
        } else {
            format!("keyport-flow-{short}")
        }
    }

    /// Whether cookies must be `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.config.public_url.starts_with("https://")
    }

    /// Completes an OAuth flow (O1–O13). `cookies` are the request's cookies.
    pub async fn callback(
        &self,
        p: CallbackParams,
        cookies: &HashMap<String, String>,
    ) -> Result<CallbackOutcome> {
        let flow = self.callback_flow(&p, cookies).await?;
        let ws = flow.workspace_id.clone();
        let entry = self.connector(&flow.connector_id)?;
        let m = entry.connector.manifest().clone();
        let o = self.oauth_of(&m)?.clone();
        let (app, client_secret, overrides) = self.app(&ws, &flow.connector_id).await?;
        // O6: mix-up defence, also for error callbacks.
        check_issuer(&o, &overrides, p.iss.as_deref())?;
        // O3: consume once.
        if !self.store.consume_flow(&flow.id, now_ms()).await? {
            return Err(Error::BadRequest(
                "This authorization was already completed. Start the connection again if needed."
                    .into(),
            ));
        }
        let verifier = self.open_secret(&ws, &flow.id, "pkce_verifier").await?;
        self.store.delete_secrets(&ws, &flow.id, None).await?;
        // O11: error callbacks never reach the token endpoint.
        if let Some(err) = p.error.as_deref() {
            let reason = if err == "access_denied" {
                "The provider denied access — try again and approve the permissions.".to_string()
            } else {
                format!("The provider returned an error ({err}). Try connecting again.")
            };
            self.authorization_failed(&flow, &reason, err).await?;
            let code = if err == "access_denied" {
                "access_denied"
            } else {
                "provider_error"
            };
            return Ok(self.done(&flow, "error", Some((code, &reason)), None));
        }
        let code = p.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::BadRequest(
                "The provider's answer has no code. Start the connection again.".into(),
            )
        })?;
        let conn = self.get(&ws, &flow.connection_id).await?;
        let config: Value = self.effective_config_of(&conn, &json!({}))?;
        let egress = self.egress_of(&conn.connector_id);
        let call = TokenCall {
            http: &self.http,
            oauth: &o,
            config: &config,
            client_id: &app.client_id,
            client_secret: client_secret.as_ref(),
            overrides: &overrides,
            egress: &egress,
        };
        let verifier = verifier.as_deref().map(|v| v.as_str()).filter(|_| o.pkce);
        let tokens = match call.exchange_code(code, &flow.redirect_uri, verifier).await {
            Ok((status, body)) => self.read_tokens(&entry.connector, &o, status, body).await,
            Err(e) => Err(e),
        };
        match tokens {
            Ok(t) => {
                let status = self.authorized(&flow, &conn, &t).await?;
                if status != Status::Revoked
                    && let Some(request) = &flow.request_id
                {
                    self.fulfil_request(&flow.workspace_id, request, &conn.id)
                        .await?;
                }
                if status == Status::Revoked {
                    // The account was refused (require_account_email_match): say why.
                    let reason = self
                        .get(&flow.workspace_id, &conn.id)
                        .await?
                        .status_reason
                        .unwrap_or_default();
                    return Ok(self.done(
                        &flow,
                        "revoked",
                        Some(("account_mismatch", &reason)),
                        None,
                    ));
                }
                let account = match &flow.return_to {
                    Some(_) => self.get(&flow.workspace_id, &conn.id).await?.account_name,
                    None => None,
                };
                Ok(self.done(&flow, status.as_str(), None, account.as_deref()))
            }
            Err(e) => {
                let reason =
                    format!("Could not complete the authorization: {e}. Try connecting again.");
                self.authorization_failed(&flow, &reason, &e.to_string())
                    .await?;
                Ok(self.done(
                    &flow,
                    "error",
                    Some(("token_exchange_failed", &reason)),
                    None,
                ))
            }
        }
    }

    /// The flow a callback belongs to (O1, O2): a known, unconsumed, unexpired state, opened in
    /// the browser that holds the flow's binding cookie.
    async fn callback_flow(
        &self,
        p: &CallbackParams,
        cookies: &HashMap<String, String>,
    ) -> Result<FlowRow> {
        let state = p
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::BadRequest(
                    "The provider's answer has no state. Start the connection again.".into(),
                )
            })?;
        let flow = self
            .store
            .flow_by_state(&oauth::hash(state))
            .await?
            .ok_or_else(|| {
                Error::BadRequest("Unknown authorization state. Start the connection again.".into())
            })?;
        if flow.consumed_at.is_some() {
            return Err(Error::BadRequest(
                "This authorization was already completed. Start the connection again if needed."
                    .into(),
            ));
        }
        if flow.expires_at <= now_ms() {
            return Err(Error::BadRequest(
                "This authorization expired (flows last 10 minutes). Start the connection again."
                    .into(),
            ));
        }
        // O2: the browser that launched the flow.
        let bound = match (&flow.browser_hash, cookies.get(&self.cookie_name(&flow.id))) {
            (Some(h), Some(v)) => constant_time_eq(h.as_bytes(), oauth::hash(v).as_bytes()),
            _ => false,
        };
        if !bound {
            return Err(Error::BadRequest(
                "This authorization was started in another browser (or cookies are blocked). Start the connection again from this browser.".into(),
            ));
        }
        Ok(flow)
    }

    /// Tokens received: stored, the authorization audited, then the account looked up. Returns
    /// the resulting status.
    async fn authorized(
        &self,
        flow: &FlowRow,
        conn: &ConnectionRow,
        t: &TokenSet,
    ) -> Result<Status> {
        let ws = flow.workspace_id.as_str();
        let actor = Actor("oauth-callback".into());
        let requested: Vec<String> =
            serde_json::from_str(&flow.requested_scopes).unwrap_or_default();
        self.save_tokens(ws, conn, t, &requested, true, None, None)
            .await?;
        if flow.reconnect != 0 {
            self.store
                .set_requested_scopes(ws, &conn.id, &flow.requested_scopes)
                .await?;
            self.audit(
                ws,
                Some(&conn.id),
                "connection.reconnected",
                &actor,
                json!({"scopes": requested}),
            )
            .await;
        } else {
            self.audit(
                ws,
                Some(&conn.id),
                "connection.authorized",
                &actor,
                json!({"scopes": requested}),
            )
            .await;
        }
        self.store
            .set_status(
                ws,
                &conn.id,
                if conn.account_id.is_some() {
                    conn.status
                } else {
                    Status::Pending
                },
                Some(PENDING_LOOKUP),
            )
            .await?;
        self.lookup_and_activate(ws, &conn.id).await
    }

    /// Where the browser goes after a callback: the flow's `return_to` or keyport's done page,
    /// with the connection, the status and, on failure, a fixed error code (pages show fixed
    /// texts for it) and the detail, or on success the account's name ("Connected as …"); the
    /// detail and the name go to the platform's own `return_to` page only.
    fn done(
        &self,
        flow: &FlowRow,
        status: &str,
        failure: Option<(&str, &str)>,
        account: Option<&str>,
    ) -> CallbackOutcome {
        let fallback = format!("{}/oauth/done", self.config.public_url);
        let base = flow.return_to.clone().unwrap_or_else(|| fallback.clone());
        let mut u = url::Url::parse(&base)
            .unwrap_or_else(|_| url::Url::parse(&fallback).expect("public URL"));
        u.query_pairs_mut()
            .append_pair("connection_id", &flow.connection_id)
            .append_pair("status", status);
        if let Some((code, msg)) = failure {
            u.query_pairs_mut().append_pair("error", code);
            if flow.return_to.is_some() {
                u.query_pairs_mut().append_pair("message", msg);
            }
        }
        if let Some(name) = account.filter(|_| flow.return_to.is_some()) {
            u.query_pairs_mut().append_pair("account", name);
        }
        CallbackOutcome {
            location: u.to_string(),
            clear_cookie: Some(self.cookie_name(&flow.id)),
        }
    }

    /// Records a failed authorization: a new connection stays `pending` with the reason (a
    /// reconnect leaves the working connection alone); the audit log gets the error.
    pub(super) async fn authorization_failed(
        &self,
        flow: &FlowRow,
        reason: &str,
        error: &str,
    ) -> Result<()> {
        if flow.reconnect == 0 {
            self.store
                .set_status(
                    &flow.workspace_id,
                    &flow.connection_id,
                    Status::Pending,
                    Some(reason),
                )
                .await?;
        }
        let actor = Actor("oauth-callback".into());
        self.audit(
            &flow.workspace_id,
            Some(&flow.connection_id),
            "authorization.failed",
            &actor,
            json!({"error": error}),
        )
        .await;
        Ok(())
    }

    /// Starts a reconnect: a new flow for the same connection, optionally with more scopes.
    pub async fn reconnect(
        &self,
        who: &Principal,
        id: &str,
        extra_scopes: &[String],
        browser: FlowBrowser,
    ) -> Result<Started> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        let c = self.connection_for(who, id, Need::Manage).await?;
        let entry = self.connector(&c.connector_id)?;
        let m = entry.connector.manifest();
        self.oauth_of(m)?;
        if let Some(r) = &browser.return_to {
            self.check_return_to(r)?;
        }
        let (app, _, _) = self.app(ws, &m.id).await?;
        let previous: Vec<String> = serde_json::from_str(&c.requested_scopes).unwrap_or_default();
        let scopes = self.requested_scopes(m, &app, &previous, extra_scopes)?;
        self.audit(
            ws,
            Some(id),
            "reconnect.started",
            actor,
            json!({"scopes": scopes}),
        )
        .await;
        self.new_flow(ws, id, &m.id, &scopes, true, browser).await
    }
}

/// O6: the `iss` of an authorization response must be the provider's issuer (after endpoint
/// overrides); required when the provider says so, refused when it has no issuer but sends one
/// anyway and requires it.
fn check_issuer(o: &Oauth2, overrides: &BTreeMap<String, String>, iss: Option<&str>) -> Result<()> {
    if let Some(issuer) = &o.issuer {
        let expected = oauth::apply_overrides(issuer, overrides);
        match iss {
            Some(iss) if iss == expected => Ok(()),
            Some(_) => Err(Error::BadRequest("The authorization response came from an unexpected issuer. Start the connection again.".into())),
            None if o.iss_required => Err(Error::BadRequest("The authorization response is missing its issuer (iss). Start the connection again.".into())),
            None => Ok(()),
        }
    } else if iss.is_some() && o.iss_required {
        Err(Error::BadRequest(
            "Unexpected issuer in the authorization response.".into(),
        ))
    } else {
        Ok(())
    }
}
