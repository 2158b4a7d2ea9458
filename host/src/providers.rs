//! Custom OAuth providers imported at runtime: definitions (see `connectors/custom-oauth`) turned
//! into connectors by the custom-oauth component, persisted in the database so every replica
//! serves them, usable at once without a restart.
//!
//! An import is either a full definition, or an `issuer` from which the rest is discovered
//! (RFC 8414 `/.well-known/oauth-authorization-server`, then OpenID Connect discovery): the
//! document's `issuer` must equal the configured one, it is fetched without following redirects
//! and over https outside test mode. Fields given next to `issuer` win over discovered ones. The
//! `client_id` and `client_secret` of an import become the workspace's provider app (the secret
//! encrypted); they are never part of the stored definition or of an export.

use serde_json::{Map, Value, json};

use crate::connections::{Error, Principal, ProviderAppInput, Result, Service, rfc3339};
use crate::registry::Source;
use crate::runtime::ConfigureError;
use crate::store::now_ms;

/// The template connector that serves every imported provider.
pub const TEMPLATE: &str = "custom-oauth";

/// Settings key bumped on every change, so replicas reload.
const GENERATION: &str = "custom_providers_generation";

fn invalid(path: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        message: "The provider definition is invalid.".into(),
        fields: vec![(path.into(), message.into())],
    }
}

/// Largest discovery document read; a larger one is refused as it streams in.
const DISCOVERY_MAX: usize = 256 * 1024;

fn connector_id(slug: &str) -> String {
    format!("custom-{slug}")
}

impl Service {
    /// Imports (or, with `replace`, updates) a custom provider; returns its view.
    pub async fn import_provider(
        &self,
        who: &Principal,
        mut body: Map<String, Value>,
        replace: Option<&str>,
    ) -> Result<Value> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        if body.contains_key("connector_id") {
            return Err(invalid(
                "/connector_id",
                "connector_id is set by keyport (imported providers are custom-<id>); remove it",
            ));
        }
        let client_id = match body.remove("client_id") {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => return Err(invalid("/client_id", "client_id must be a string")),
        };
        let client_secret = match body.remove("client_secret") {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => return Err(invalid("/client_secret", "client_secret must be a string")),
        };
        let api_key = body.get("auth").and_then(Value::as_str) == Some("api_key");
        if !api_key && !body.contains_key("authorization_url") {
            match body.get("issuer").and_then(Value::as_str) {
                Some(issuer) => {
                    let discovered = self.discover(issuer).await?;
                    for (k, v) in discovered {
                        body.entry(k).or_insert(v);
                    }
                }
                None => {
                    return Err(invalid(
                        "/authorization_url",
                        "give either a full definition (authorization_url, token_url, …) or an issuer URL to discover it from",
                    ));
                }
            }
        }
        let slug = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("/id", "id is required: a slug such as \"acme\" ([a-z0-9-])"))?
            .to_string();
        let id = connector_id(&slug);
        if let Some(existing) = replace
            && existing != id
        {
            return Err(invalid(
                "/id",
                format!("the id of {existing} cannot change; import a new provider instead"),
            ));
        }
        let issuer = body
            .get("issuer")
            .and_then(Value::as_str)
            .map(|s| s.to_string());
        self.check_import_target(&id, issuer.as_deref(), replace.is_some())
            .await?;
        let definition = Value::Object(body);
        let connector = self.configure_definition(&definition).await?;
        if connector.manifest().id != id {
            return Err(Error::Internal(format!(
                "the custom-oauth component named the provider {:?}, expected {id:?}",
                connector.manifest().id
            )));
        }
        self.store
            .put_custom_provider(&id, issuer.as_deref(), &definition.to_string())
            .await?;
        self.registry.insert(connector, Source::Imported);
        self.bump_generation(GENERATION).await?;
        if let Some(client_id) = client_id {
            self.put_provider_app(
                who,
                &id,
                ProviderAppInput {
                    client_id,
                    client_secret,
                    scopes: None,
                    endpoint_overrides: None,
                    require_account_email_match: None,
                },
            )
            .await?;
        }
        self.store
            .audit(
                ws,
                None,
                if replace.is_some() {
                    "provider.updated"
                } else {
                    "provider.imported"
                },
                &actor.0,
                &json!({"provider": id, "issuer": issuer}),
            )
            .await?;
        self.provider_view(&id).await
    }

    /// Whether `id` may be imported (`replace`: updated): it exists exactly when replacing, no
    /// other connector holds the id, and no other provider holds the issuer.
    async fn check_import_target(
        &self,
        id: &str,
        issuer: Option<&str>,
        replace: bool,
    ) -> Result<()> {
        let exists = self.store.custom_provider(id).await?.is_some();
        match (replace, exists) {
            (true, false) => {
                return Err(Error::NotFound(format!("no imported provider {id:?}")));
            }
            (false, true) => {
                return Err(Error::Conflict(format!(
                    "a provider {id:?} is already imported; update it with PUT /api/v1/admin/providers/{id}"
                )));
            }
            _ => {}
        }
        if self
            .registry
            .get(id)
            .is_some_and(|e| e.source != Source::Imported)
        {
            return Err(invalid(
                "/id",
                format!("{id} is taken by another connector"),
            ));
        }
        if let Some(iss) = issuer
            && let Some(other) = self.store.provider_with_issuer(iss).await?
            && other != id
        {
            return Err(Error::Conflict(format!(
                "the issuer {iss} already belongs to {other}; two providers cannot share an issuer"
            )));
        }
        Ok(())
    }

    pub(crate) async fn configure_definition(
        &self,
        definition: &Value,
    ) -> Result<crate::runtime::Connector> {
        let template = self
            .registry
            .get(TEMPLATE)
            .ok_or_else(|| Error::Internal("the custom-oauth connector is not loaded".into()))?;
        template
            .connector
            .configure(&definition.to_string())
            .await
            .map_err(|e| match e {
                ConfigureError::Invalid(fields) => Error::Invalid {
                    message: "The provider definition is invalid.".into(),
                    fields: fields.into_iter().map(|f| (f.path, f.message)).collect(),
                },
                other => Error::Invalid {
                    message: other.to_string(),
                    fields: vec![],
                },
            })
    }

    /// RFC 8414 (then OpenID Connect) discovery, as definition fields.
    async fn discover(&self, issuer: &str) -> Result<Map<String, Value>> {
        let url =
            url::Url::parse(issuer).map_err(|e| invalid("/issuer", format!("not a URL: {e}")))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && self.config.allow_loopback) {
            return Err(invalid("/issuer", "the issuer must be an https:// URL"));
        }
        let path = url.path().trim_end_matches('/');
        let origin = url.origin().ascii_serialization();
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
        ];
        let mut last = String::new();
        let mut doc = None;
        for candidate in &candidates {
            let request = self
                .http
                .request_str(reqwest::Method::GET, candidate)
                .map_err(|d| invalid("/issuer", format!("the issuer is refused: {d}")))?;
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let bytes = crate::runtime::body_capped(r, DISCOVERY_MAX)
                        .await
                        .map_err(|e| match e {
                            crate::runtime::BodyError::TooLarge => invalid(
                                "/issuer",
                                format!("{candidate} answered more than 256 KiB: not a discovery document"),
                            ),
                            crate::runtime::BodyError::Transport(e) => invalid(
                                "/issuer",
                                format!("could not read {candidate}: {}", e.without_url()),
                            ),
                        })?;
                    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                        invalid(
                            "/issuer",
                            format!("the discovery document is not JSON: {e}"),
                        )
                    })?;
                    doc = Some(v);
                    break;
                }
                Ok(r) if r.status().is_redirection() => {
                    last =
                        format!("{candidate} answered a redirect, which keyport does not follow");
                }
                Ok(r) => last = format!("{candidate} answered HTTP {}", r.status().as_u16()),
                Err(e) => last = format!("could not fetch {candidate}: {}", e.without_url()),
            }
        }
        let doc = doc.ok_or_else(|| invalid("/issuer", format!("discovery failed: {last}")))?;
        if doc["issuer"].as_str() != Some(issuer) {
            return Err(invalid(
                "/issuer",
                format!(
                    "the discovery document names the issuer {}, not {issuer}; they must be identical",
                    doc["issuer"]
                ),
            ));
        }
        let mut out = Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                out.insert(k.to_string(), v);
            }
        };
        put("authorization_url", doc["authorization_endpoint"].clone());
        put("token_url", doc["token_endpoint"].clone());
        put("revocation_url", doc["revocation_endpoint"].clone());
        if let Some(userinfo) = doc["userinfo_endpoint"].as_str() {
            put(
                "userinfo",
                json!({"url": userinfo, "id": "sub", "name": "name", "email": "email"}),
            );
        }
        if let Some(supported) = doc["scopes_supported"].as_array() {
            put("scopes", Value::Array(supported.clone()));
            let defaults: Vec<Value> = ["openid", "offline_access"]
                .iter()
                .filter(|s| supported.iter().any(|x| x == *s))
                .map(|s| json!(s))
                .collect();
            put("default_scopes", Value::Array(defaults));
        }
        if let Some(methods) = doc["code_challenge_methods_supported"].as_array() {
            put("pkce", json!(methods.iter().any(|m| m == "S256")));
        }
        let auth = doc["token_endpoint_auth_methods_supported"].as_array();
        let basic = auth.is_none_or(|m| m.iter().any(|x| x == "client_secret_basic"));
        put("client_auth", json!(if basic { "basic" } else { "body" }));
        if doc["authorization_response_iss_parameter_supported"] == json!(true) {
            put("iss_required", json!(true));
        }
        put("api_base_url", json!(issuer));
        if let Some(host) = url.host_str() {
            put("display_name", json!(host));
        }
        Ok(out)
    }

    /// Bumps a settings key so replicas notice a change and reload.
    pub(crate) async fn bump_generation(&self, key: &str) -> Result<()> {
        self.store
            .put_setting(
                key,
                &format!("{}-{}", now_ms(), crate::vault::random_hex(4)),
            )
            .await?;
        Ok(())
    }

    /// One imported provider: its definition and manifest summary.
    pub async fn provider_view(&self, id: &str) -> Result<Value> {
        let row = self
            .store
            .custom_provider(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no imported provider {id:?}")))?;
        let definition: Value = serde_json::from_str(&row.definition).unwrap_or(Value::Null);
        let manifest = self
            .registry
            .get(id)
            .map(|e| crate::runtime::manifest_json(&e.connector));
        Ok(json!({
            "id": id,
            "issuer": row.issuer,
            "definition": definition,
            "manifest": manifest,
            "created_at": rfc3339(row.created_at),
            "updated_at": rfc3339(row.updated_at),
        }))
    }

    /// Every imported provider.
    pub async fn list_providers(&self) -> Result<Value> {
        let mut out = Vec::new();
        for row in self.store.custom_providers().await? {
            out.push(self.provider_view(&row.id).await?);
        }
        Ok(json!({ "providers": out }))
    }

    /// Removes an imported provider; refused while connections use it unless `force`.
    pub async fn delete_provider(&self, who: &Principal, id: &str, force: bool) -> Result<()> {
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        if self.store.custom_provider(id).await?.is_none() {
            return Err(Error::NotFound(format!("no imported provider {id:?}")));
        }
        let using = self.store.connections_of_connector(id).await?;
        if using > 0 && !force {
            return Err(Error::Conflict(format!(
                "{using} connection(s) use {id}; delete them first, or pass ?force=true (they stop working)"
            )));
        }
        self.store.delete_custom_provider(id).await?;
        self.registry.remove(id);
        self.bump_generation(GENERATION).await?;
        self.store
            .audit(
                ws,
                None,
                "provider.deleted",
                &actor.0,
                &json!({"provider": id, "forced": force && using > 0}),
            )
            .await?;
        Ok(())
    }

    /// All definitions as one JSON document (no client credentials), for another installation.
    pub async fn export_providers(&self) -> Result<Value> {
        let rows = self.store.custom_providers().await?;
        let defs: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.definition).unwrap_or(Value::Null))
            .collect();
        Ok(
            json!({"format": "keyport-providers/1", "exported_at": rfc3339(now_ms()), "providers": defs}),
        )
    }

    /// Imports an export document; existing providers are updated. Client credentials are not
    /// part of an export: set them afterwards with `PUT /api/v1/provider-apps/{id}`.
    pub async fn import_provider_file(&self, who: &Principal, file: Value) -> Result<Value> {
        if file["format"] != "keyport-providers/1" {
            return Err(invalid(
                "/format",
                "not a keyport providers export (format \"keyport-providers/1\")",
            ));
        }
        let defs = file["providers"]
            .as_array()
            .ok_or_else(|| invalid("/providers", "providers must be a list of definitions"))?;
        // Each entry stands alone: a bad or duplicate one is reported and skipped, and the others
        // are imported whole (an entry is stored in one step, after all its checks).
        let mut report = Vec::new();
        let mut seen: Vec<(String, usize)> = Vec::new();
        let (mut created, mut updated, mut rejected) = (0, 0, 0);
        for (i, def) in defs.iter().enumerate() {
            let id = def
                .get("id")
                .and_then(Value::as_str)
                .map(connector_id)
                .unwrap_or_default();
            let reject = |field: String, reason: String| json!({"index": i, "id": (!id.is_empty()).then_some(&id), "outcome": "rejected", "field": field, "reason": reason});
            let Value::Object(body) = def.clone() else {
                rejected += 1;
                report.push(reject(
                    format!("/providers/{i}"),
                    "a definition must be an object".into(),
                ));
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(s, _)| !id.is_empty() && *s == id) {
                rejected += 1;
                report.push(reject(
                    format!("/providers/{i}/id"),
                    format!("{id} is defined twice in this file (first at entry {first}); only the first is imported"),
                ));
                continue;
            }
            seen.push((id.clone(), i));
            let existing = self.store.custom_provider(&id).await?.is_some();
            let replace = existing.then_some(id.as_str());
            match self.import_provider(who, body, replace).await {
                Ok(_) => {
                    if existing {
                        updated += 1;
                    } else {
                        created += 1;
                    }
                    report.push(json!({"index": i, "id": id, "outcome": if existing { "updated" } else { "created" }}));
                }
                Err(Error::Invalid { message, fields }) => {
                    rejected += 1;
                    let (field, reason) = fields
                        .into_iter()
                        .next()
                        .map(|(p, m)| (format!("/providers/{i}{p}"), m))
                        .unwrap_or((format!("/providers/{i}"), message));
                    report.push(reject(field, reason));
                }
                Err(Error::BadRequest(m) | Error::Conflict(m) | Error::NotFound(m)) => {
                    rejected += 1;
                    report.push(reject(format!("/providers/{i}"), m));
                }
                Err(e) => return Err(e),
            }
        }
        let imported: Vec<&Value> = report
            .iter()
            .filter(|r| r["outcome"] != "rejected")
            .map(|r| &r["id"])
            .collect();
        Ok(json!({
            "imported": imported,
            "created": created,
            "updated": updated,
            "rejected": rejected,
            "report": report,
            "note": "set each provider's client id and secret with PUT /api/v1/provider-apps/{id}",
        }))
    }

    /// Makes the registry match the stored providers (at start, and when another replica changed
    /// them); returns whether anything changed.
    pub async fn sync_custom_providers(&self, last: &mut Option<String>) -> Result<bool> {
        let generation = self.store.setting(GENERATION).await?;
        if generation.is_some() && generation == *last {
            return Ok(false);
        }
        let rows = self.store.custom_providers().await?;
        for row in &rows {
            let current = self.registry.get(&row.id);
            if current
                .as_ref()
                .is_some_and(|e| e.connector.definition() == Some(row.definition.as_str()))
            {
                continue;
            }
            let def: Value = serde_json::from_str(&row.definition).unwrap_or(Value::Null);
            match self.configure_definition(&def).await {
                Ok(c) => {
                    tracing::info!(provider = %row.id, "loaded imported provider");
                    self.registry.insert(c, Source::Imported);
                }
                Err(e) => {
                    tracing::error!(provider = %row.id, error = %e, "imported provider rejected")
                }
            }
        }
        for e in self.registry.all() {
            let id = &e.connector.manifest().id;
            if e.source == Source::Imported && !rows.iter().any(|r| &r.id == id) {
                self.registry.remove(id);
            }
        }
        *last = generation;
        Ok(true)
    }
}
