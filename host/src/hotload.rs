//! Hot-loading connectors without a restart: uploads through the admin API (stored in the
//! database, content-addressed, so every replica loads them), a watched connectors directory,
//! egress grants, rollback and unloading.
//!
//! Loading is validate (a component; the contract; `describe`; the manifest and its config
//! schema) → pre-instantiate → atomic swap of the registry map. A call in flight holds the entry
//! it started with and finishes on the old version; new calls get the new one.
//!
//! | source | egress |
//! |---|---|
//! | upload | only hosts the admin granted; a version asking for more waits (`pending_approval`) while the active one keeps serving |
//! | directory, built-in, imported | the operator's configuration: every host the manifest declares |

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::connections::{Actor, Error, Result, Service, rfc3339};
use crate::registry::Source;
use crate::runtime::{AuthScheme, Connector, Runtime};
use crate::store::{Deployment, Upload};

/// Settings key bumped on every change, so replicas reload.
const GENERATION: &str = "connector_uploads_generation";

impl Service {
    fn runtime(&self) -> Result<&Runtime> {
        self.runtime
            .get()
            .ok_or_else(|| Error::Internal("the connector runtime is not ready".into()))
    }

    /// Validates and stores an uploaded component; activates it when its egress hosts are
    /// granted (already, or by `grant` now), else keeps it waiting for approval while the active
    /// version keeps serving.
    pub async fn upload_connector(
        &self,
        actor: &Actor,
        bytes: &[u8],
        grant: &[String],
    ) -> Result<Value> {
        let connector = self
            .runtime()?
            .load(bytes)
            .await
            .map_err(|e| Error::Invalid {
                message: format!("The component was rejected: {e}"),
                fields: vec![],
            })?;
        let m = connector.manifest().clone();
        let oauth_hosts = self.oauth_endpoint_hosts(&m)?;
        if let Some(existing) = self.registry.get(&m.id)
            && matches!(existing.source, Source::Builtin | Source::Imported)
        {
            return Err(Error::Conflict(format!(
                "{} is a {} connector; an upload cannot replace it — give your connector another id",
                m.id,
                if existing.source == Source::Builtin {
                    "built-in"
                } else {
                    "imported"
                }
            )));
        }
        let hash = connector.hash().to_string();
        self.store
            .put_upload(
                &hash,
                &Upload {
                    connector_id: &m.id,
                    version: &m.version,
                    egress_hosts: &m.egress_hosts,
                },
                bytes,
                &actor.0,
            )
            .await?;
        let mut d = self.store.deployment(&m.id).await?.unwrap_or(Deployment {
            connector_id: m.id.clone(),
            active_hash: None,
            previous_hash: None,
            pending_hash: None,
            granted_hosts: "[]".into(),
            updated_at: 0,
        });
        let mut granted = d.granted();
        for h in grant {
            if !m.egress_hosts.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                return Err(Error::Invalid {
                    message: format!(
                        "{h} is not an egress host of {}; it declares {:?}",
                        m.id, m.egress_hosts
                    ),
                    fields: vec![("/grant".into(), format!("not declared: {h}"))],
                });
            }
            granted.insert(h.to_ascii_lowercase());
        }
        d.granted_hosts = serde_json::to_string(&granted).unwrap_or_default();
        let missing: Vec<String> = m
            .egress_hosts
            .iter()
            .filter(|h| !granted.contains(&h.to_ascii_lowercase()))
            .cloned()
            .collect();
        let status = if !missing.is_empty() {
            d.pending_hash = Some(hash.clone());
            self.store.put_deployment(&d).await?;
            "pending_approval"
        } else if d.active_hash.as_deref() == Some(hash.as_str()) {
            d.pending_hash = None;
            self.store.put_deployment(&d).await?;
            "active"
        } else {
            d.previous_hash = d.active_hash.take();
            d.active_hash = Some(hash.clone());
            d.pending_hash = None;
            self.store.put_deployment(&d).await?;
            self.registry.insert_granted(
                connector,
                Source::Uploaded,
                Some(granted.into_iter().collect()),
            );
            self.forget_all();
            "active"
        };
        self.bump_uploads().await?;
        self.store
            .audit(
                "default",
                None,
                "connector.uploaded",
                &actor.0,
                &json!({"connector": m.id, "version": m.version, "hash": hash, "status": status, "missing_hosts": missing}),
            )
            .await?;
        tracing::info!(connector = %m.id, version = %m.version, %hash, status, "connector uploaded");
        Ok(json!({
            "id": m.id,
            "version": m.version,
            "hash": hash,
            "status": status,
            "egress_hosts": m.egress_hosts,
            "oauth_hosts": oauth_hosts,
            "missing_grants": missing,
            "message": if missing.is_empty() {
                "Active: new calls use this version.".to_string()
            } else {
                format!(
                    "Waiting for approval of egress to {}; the active version keeps serving. Approve with POST /api/v1/admin/connectors/{}/approve {{\"hosts\": [...]}}.",
                    missing.join(", "),
                    m.id
                )
            },
        }))
    }

    /// Grants egress hosts to an uploaded connector and activates a waiting version they cover.
    pub async fn approve_connector(
        &self,
        actor: &Actor,
        id: &str,
        hosts: &[String],
    ) -> Result<Value> {
        let mut d = self
            .store
            .deployment(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no uploaded connector {id:?}")))?;
        let mut granted = d.granted();
        granted.extend(hosts.iter().map(|h| h.to_ascii_lowercase()));
        d.granted_hosts = serde_json::to_string(&granted).unwrap_or_default();
        let mut activated = None;
        if let Some(pending) = d.pending_hash.clone() {
            let c = self.load_upload(&pending, "waiting").await?;
            let missing: Vec<&String> = c
                .manifest()
                .egress_hosts
                .iter()
                .filter(|h| !granted.contains(&h.to_ascii_lowercase()))
                .collect();
            if missing.is_empty() {
                d.previous_hash = d.active_hash.take();
                d.active_hash = Some(pending.clone());
                d.pending_hash = None;
                self.registry.insert_granted(
                    c,
                    Source::Uploaded,
                    Some(granted.iter().cloned().collect()),
                );
                self.forget_all();
                activated = Some(pending);
            }
        } else if let Some(active) = self.registry.get(id) {
            // Re-insert the active version with the wider grant.
            let c = self.load_upload(active.connector.hash(), "active").await?;
            self.registry.insert_granted(
                c,
                Source::Uploaded,
                Some(granted.iter().cloned().collect()),
            );
            self.forget_all();
        }
        self.store.put_deployment(&d).await?;
        self.bump_uploads().await?;
        self.store
            .audit(
                "default",
                None,
                "connector.egress_granted",
                &actor.0,
                &json!({"connector": id, "hosts": hosts, "activated": activated}),
            )
            .await?;
        Ok(
            json!({"id": id, "granted_hosts": granted, "activated": activated,
                  "pending": d.pending_hash}),
        )
    }

    /// Makes the previous version active again.
    pub async fn rollback_connector(&self, actor: &Actor, id: &str) -> Result<Value> {
        let mut d = self
            .store
            .deployment(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no uploaded connector {id:?}")))?;
        let previous = d.previous_hash.clone().ok_or_else(|| {
            Error::Conflict(format!("{id} has no previous version to roll back to"))
        })?;
        let c = self.load_upload(&previous, "previous").await?;
        let version = c.manifest().version.clone();
        d.previous_hash = d.active_hash.take();
        d.active_hash = Some(previous.clone());
        self.registry
            .insert_granted(c, Source::Uploaded, Some(d.granted().into_iter().collect()));
        self.forget_all();
        self.store.put_deployment(&d).await?;
        self.bump_uploads().await?;
        self.store
            .audit(
                "default",
                None,
                "connector.rolled_back",
                &actor.0,
                &json!({"connector": id, "hash": previous, "version": version}),
            )
            .await?;
        Ok(json!({"id": id, "hash": previous, "version": version, "status": "active"}))
    }

    /// Unloads an uploaded connector; refused while connections use it unless `force`.
    pub async fn unload_connector(&self, actor: &Actor, id: &str, force: bool) -> Result<()> {
        if self.store.deployment(id).await?.is_none() {
            return Err(match self.registry.get(id) {
                Some(e) => Error::Conflict(format!(
                    "{id} was not uploaded (it is {:?}); only uploaded connectors can be unloaded here",
                    e.source
                )),
                None => Error::NotFound(format!("no connector {id:?}")),
            });
        }
        let using = self.store.connections_of_connector(id).await?;
        if using > 0 && !force {
            return Err(Error::Conflict(format!(
                "{using} connection(s) use {id}; delete them first, or pass ?force=true (they stop working)"
            )));
        }
        self.store.delete_deployment(id).await?;
        self.registry.remove(id);
        self.forget_all();
        self.bump_uploads().await?;
        self.store
            .audit(
                "default",
                None,
                "connector.unloaded",
                &actor.0,
                &json!({"connector": id, "forced": force && using > 0}),
            )
            .await?;
        Ok(())
    }

    /// Where an uploaded connector's OAuth endpoints send secrets: hosts its egress list must
    /// cover, over https outside test mode (422 naming each endpoint that is not).
    fn oauth_endpoint_hosts(&self, m: &crate::runtime::Manifest) -> Result<Vec<String>> {
        let AuthScheme::Oauth2(o) = &m.auth else {
            return Ok(Vec::new());
        };
        crate::runtime::egress::oauth_endpoints_covered(o, &m.egress_hosts, self.config.allow_loopback)
            .map_err(|problems| Error::Invalid {
                message: format!(
                    "The component was rejected: its OAuth endpoints must be https on hosts its egress list declares ({})",
                    problems
                        .iter()
                        .map(|(f, why)| format!("{f}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                fields: problems
                    .into_iter()
                    .map(|(f, why)| (format!("/auth/oauth2/{f}"), why))
                    .collect(),
            })
    }

    /// Every loaded connector, and uploads waiting for approval.
    pub async fn loaded_connectors(&self) -> Result<Value> {
        let deployments = self.store.deployments().await?;
        let mut out = Vec::new();
        for e in self.registry.all() {
            let m = e.connector.manifest();
            let granted = e.granted_hosts.clone();
            out.push(json!({
                "id": m.id,
                "version": m.version,
                "hash": e.connector.hash(),
                "contract": e.connector.contract(),
                "source": e.source,
                "loaded_at": rfc3339(e.loaded_at),
                "egress_hosts": m.egress_hosts.iter().map(|h| json!({
                    "host": h,
                    "granted": granted.as_ref().is_none_or(|g| g.iter().any(|x| x.eq_ignore_ascii_case(h))),
                })).collect::<Vec<_>>(),
            }));
        }
        let mut pending = Vec::new();
        for d in deployments.iter().filter(|d| d.pending_hash.is_some()) {
            let hash = d.pending_hash.clone().unwrap_or_default();
            let (version, hosts) = self.store.upload_summary(&hash).await?.unzip();
            let granted = d.granted();
            let missing: Vec<String> = hosts
                .unwrap_or_default()
                .into_iter()
                .filter(|h| !granted.contains(&h.to_ascii_lowercase()))
                .collect();
            // Where its OAuth endpoints send secrets, for the approval screen.
            let oauth_hosts = match self.load_upload(&hash, "waiting").await {
                Ok(c) => self.oauth_endpoint_hosts(c.manifest()).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            pending.push(json!({
                "id": d.connector_id,
                "hash": hash,
                "version": version,
                "granted_hosts": granted,
                "missing_grants": missing,
                "oauth_hosts": oauth_hosts,
            }));
        }
        let errors = self
            .registry
            .dir_errors()
            .into_iter()
            .map(|(file, error)| json!({"file": file, "error": error}))
            .collect::<Vec<_>>();
        Ok(json!({"connectors": out, "pending_approval": pending, "directory_errors": errors}))
    }

    /// Loads a stored upload by hash (`what` names it in errors: "previous", "waiting", …).
    async fn load_upload(&self, hash: &str, what: &str) -> Result<Connector> {
        let bytes = self.store.upload_bytes(hash).await?.ok_or_else(|| {
            Error::Internal(format!(
                "the {what} upload {hash} is missing from the database"
            ))
        })?;
        self.runtime()?
            .load(&bytes)
            .await
            .map_err(|e| Error::Internal(format!("the {what} upload {hash} no longer loads: {e}")))
    }

    async fn bump_uploads(&self) -> Result<()> {
        self.bump_generation(GENERATION).await
    }

    /// Makes the registry match the stored deployments (at start, and when another replica
    /// changed them).
    pub async fn sync_uploads(&self, last: &mut Option<String>) -> Result<bool> {
        let generation = self.store.setting(GENERATION).await?;
        if generation.is_some() && generation == *last {
            return Ok(false);
        }
        let deployments = self.store.deployments().await?;
        for d in &deployments {
            let Some(active) = &d.active_hash else {
                continue;
            };
            let current = self.registry.get(&d.connector_id);
            let granted: Vec<String> = d.granted().into_iter().collect();
            if current.as_ref().is_some_and(|e| {
                e.connector.hash() == active.as_str() && e.granted_hosts.as_ref() == Some(&granted)
            }) {
                continue;
            }
            match self.load_upload(active, "active").await {
                Ok(c) => {
                    tracing::info!(connector = %d.connector_id, %active, "loaded uploaded connector");
                    self.registry
                        .insert_granted(c, Source::Uploaded, Some(granted));
                    self.forget_all();
                }
                Err(e) => {
                    tracing::error!(connector = %d.connector_id, error = %e, "uploaded connector rejected")
                }
            }
        }
        for e in self.registry.all() {
            let id = &e.connector.manifest().id;
            if e.source == Source::Uploaded && !deployments.iter().any(|d| &d.connector_id == id) {
                self.registry.remove(id);
                self.forget_all();
            }
        }
        *last = generation;
        Ok(true)
    }

    /// Loads new or changed `*.wasm` files of the watched directory once they are stable (same
    /// size and modification time on two looks); a broken file is reported and whatever was
    /// serving keeps serving. Uploaded versions take precedence over directory files.
    pub async fn scan_dir(
        &self,
        dir: &Path,
        state: &mut DirState,
        immediate: bool,
    ) -> Result<usize> {
        let mut loaded = 0;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the connectors directory");
                return Ok(0);
            }
        };
        let mut seen = BTreeSet::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|x| x != "wasm") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (meta.len(), meta.modified().ok());
            seen.insert(path.clone());
            let file = state.files.entry(path.clone()).or_default();
            if file.loaded == Some(stamp) {
                continue;
            }
            if !immediate && file.candidate != Some(stamp) {
                // Changed since the last look: wait for it to settle.
                file.candidate = Some(stamp);
                continue;
            }
            file.loaded = Some(stamp);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = match std::fs::read(&path) {
                Ok(bytes) => self
                    .runtime()?
                    .load(&bytes)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot read it: {e}")),
            };
            match result {
                Ok(c) => {
                    let id = c.manifest().id.clone();
                    let taken = self.registry.get(&id).is_some_and(|e| {
                        matches!(
                            e.source,
                            Source::Uploaded | Source::Builtin | Source::Imported
                        )
                    });
                    if taken {
                        let why = format!(
                            "{id} is already served by a built-in, imported or uploaded connector; the file is ignored"
                        );
                        tracing::warn!(file = %path.display(), "{why}");
                        self.registry.set_dir_error(name, why);
                        continue;
                    }
                    tracing::info!(file = %path.display(), connector = %id, version = %c.manifest().version, "loaded connector from the directory");
                    file.connector = Some(id);
                    self.registry.insert(c, Source::Directory);
                    self.forget_all();
                    self.registry.clear_dir_error(&name);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "connector rejected; the previous version keeps serving");
                    self.registry.set_dir_error(name, e);
                }
            }
        }
        // Files that disappeared: unload what they served.
        let gone: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(file) = state.files.remove(&path)
                && let Some(id) = file.connector
                && self
                    .registry
                    .get(&id)
                    .is_some_and(|e| e.source == Source::Directory)
            {
                tracing::info!(file = %path.display(), connector = %id, "connector file removed; unloaded");
                self.registry.remove(&id);
                self.forget_all();
            }
            if let Some(name) = path.file_name() {
                self.registry.clear_dir_error(&name.to_string_lossy());
            }
        }
        Ok(loaded)
    }
}

/// What the directory watcher knows about each file.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Default)]
struct FileState {
    /// (size, mtime) last seen, waiting to be stable.
    candidate: Option<(u64, Option<std::time::SystemTime>)>,
    /// (size, mtime) last loaded (or rejected).
    loaded: Option<(u64, Option<std::time::SystemTime>)>,
    /// The connector it served.
    connector: Option<String>,
}
