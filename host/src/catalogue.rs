//! The provider catalogue: the definitions in `catalogue/` (one file per provider, see its
//! README), embedded in the binary and served by the custom-oauth component like imported
//! providers, under their own ids (`github`, not `custom-github`).
//!
//! Every installation lists them on its Integrations page. An entry needs no import: a workspace
//! admin saves the provider app's client id and secret (`PUT /api/v1/provider-apps/{id}`) and its
//! members can connect. An admin may hide entries the workspace does not want
//! (`PUT /api/v1/admin/catalogue/{id}`): hidden integrations are not listed to members and cannot
//! be connected there; existing connections keep working.
//!
//! A connector loaded from the connectors directory or uploaded under a catalogue id replaces
//! the entry (until the next start after it is removed).

use serde_json::{Value, json};

use crate::connections::{Error, Principal, Result, Service};
use crate::registry::Source;

/// The embedded catalogue: (id, definition text), sorted by id.
pub fn files() -> &'static [(&'static str, &'static str)] {
    crate::builtin::CATALOGUE
}

/// An entry's definition as the custom-oauth component receives it: the file, with its
/// connector id set to its own id.
pub fn definition(id: &str, text: &str) -> std::result::Result<Value, String> {
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| format!("catalogue/{id}.json is not JSON: {e}"))?;
    let Some(o) = v.as_object_mut() else {
        return Err(format!("catalogue/{id}.json is not a JSON object"));
    };
    if o.get("id").and_then(Value::as_str) != Some(id) {
        return Err(format!(
            "catalogue/{id}.json: its \"id\" must equal the file name"
        ));
    }
    o.insert("connector_id".into(), json!(id));
    Ok(v)
}

/// The catalogue facts of an entry (register URL, docs, refresh behaviour), if `id` is one.
pub fn facts_of(id: &str) -> Option<Value> {
    files()
        .iter()
        .find(|(f, _)| *f == id)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
        .map(|def| facts(&def))
}

/// The catalogue fields shown to admins beside the manifest.
fn facts(def: &Value) -> Value {
    json!({
        "register_url": def.get("register_url"),
        "docs_url": def.get("docs_url"),
        "refresh": def.get("refresh"),
        "auth": def.get("auth").and_then(Value::as_str).unwrap_or("oauth2"),
    })
}

impl Service {
    /// Loads every catalogue entry into the registry, skipping ids another connector holds.
    /// Returns the entries that failed (a release never ships one: `host/tests/catalogue.rs`).
    pub async fn load_catalogue(&self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for (id, text) in files() {
            if self.registry.get(id).is_some() {
                tracing::info!(connector = %id, "a loaded connector holds this catalogue id; the entry is not served");
                continue;
            }
            let loaded = match definition(id, text) {
                Ok(def) => self.configure_definition(&def).await.map_err(|e| match e {
                    Error::Invalid { message, fields } => format!(
                        "{message} {}",
                        fields
                            .iter()
                            .map(|(p, m)| format!("{p}: {m}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    other => other.to_string(),
                }),
                Err(e) => Err(e),
            };
            match loaded {
                Ok(c) => self.registry.insert(c, Source::Catalogue),
                Err(why) => {
                    tracing::error!(connector = %id, error = %why, "catalogue entry rejected");
                    failed.push((id.to_string(), why));
                }
            }
        }
        failed
    }

    /// The catalogue for a workspace admin: each entry's facts, whether this workspace has its
    /// provider app and whether it is hidden, and the redirect URI to register.
    pub async fn catalogue_view(&self, who: &Principal) -> Result<Value> {
        who.may_administer(true, "see the provider catalogue")?;
        let ws = who.workspace.as_str();
        let hidden = self.store.hidden_connectors(ws).await?;
        let apps = self.configured_apps(ws).await?;
        let redirect_uri = self.redirect_uri();
        let mut out = Vec::new();
        for (id, text) in files() {
            let def: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            let served = self
                .registry
                .get(id)
                .filter(|e| e.source == Source::Catalogue);
            let api_key = def["auth"] == "api_key";
            let mut v = json!({
                "id": id,
                "display_name": def["display_name"],
                "description": def["description"],
                "categories": def["categories"],
                "served": served.is_some(),
                "hidden": hidden.iter().any(|h| h == id),
                "app_configured": api_key || apps.iter().any(|a| a == id),
                "redirect_uri": (!api_key).then_some(&redirect_uri),
            });
            if let (Value::Object(o), Value::Object(f)) = (&mut v, facts(&def)) {
                o.extend(f);
            }
            out.push(v);
        }
        Ok(json!({ "redirect_uri": redirect_uri, "entries": out }))
    }

    /// The connectors with a provider app in a workspace.
    pub async fn configured_apps(&self, ws: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .provider_apps(ws)
            .await?
            .into_iter()
            .map(|a| a.connector_id)
            .collect())
    }

    /// The integrations hidden in a workspace.
    pub async fn hidden_connectors(&self, ws: &str) -> Result<Vec<String>> {
        Ok(self.store.hidden_connectors(ws).await?)
    }

    /// Hides (or shows again) an integration in the caller's workspace.
    pub async fn set_catalogue_hidden(
        &self,
        who: &Principal,
        id: &str,
        hidden: bool,
    ) -> Result<Value> {
        who.may_administer(true, "hide integrations")?;
        if self.registry.get(id).is_none() && !files().iter().any(|(f, _)| *f == id) {
            return Err(Error::NotFound(format!(
                "no integration {id:?}; GET /api/v1/admin/catalogue lists the catalogue"
            )));
        }
        let actor = who.actor();
        let changed = self
            .store
            .set_connector_hidden(&who.workspace, id, hidden, &actor.0)
            .await?;
        if changed {
            self.store
                .audit(
                    &who.workspace,
                    None,
                    if hidden {
                        "integration.hidden"
                    } else {
                        "integration.shown"
                    },
                    &actor.0,
                    &json!({"connector": id}),
                )
                .await?;
        }
        Ok(json!({"id": id, "hidden": hidden}))
    }
}
