//! The loaded connectors, by id.
//!
//! Readers take a snapshot ([`Registry::get`]) without locking; a load replaces the whole map
//! atomically, so a call in flight keeps the version it started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::runtime::{Connector, LoadError, Runtime};

/// Where a connector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Shipped inside the binary.
    Builtin,
    /// Loaded from the connectors directory.
    Directory,
    /// Uploaded through the admin API.
    Uploaded,
    /// A custom OAuth provider imported through the admin API (served by custom-oauth).
    Imported,
    /// An entry of the provider catalogue shipped in the binary (served by custom-oauth).
    Catalogue,
}

/// A connector and where it came from.
#[derive(Debug)]
pub struct Entry {
    /// The loaded component.
    pub connector: Connector,
    /// Its origin.
    pub source: Source,
    /// Egress hosts the admin granted, for uploaded connectors; `None`: every host the manifest
    /// declares (built-in, directory and imported connectors are the operator's configuration).
    pub granted_hosts: Option<Vec<String>>,
    /// When it was loaded (Unix ms).
    pub loaded_at: i64,
}

/// Loaded connectors by id.
#[derive(Default)]
pub struct Registry {
    map: ArcSwap<BTreeMap<String, Arc<Entry>>>,
    /// Files in the watched connectors directory that failed to load, by file name, with why.
    dir_errors: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records why a file in the connectors directory did not load.
    pub fn set_dir_error(&self, file: String, why: String) {
        self.dir_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file, why);
    }

    /// Clears a directory file's load error (it loaded, or it is gone).
    pub fn clear_dir_error(&self, file: &str) {
        self.dir_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(file);
    }

    /// Files in the connectors directory that failed to load: (file, why), by file name.
    pub fn dir_errors(&self) -> Vec<(String, String)> {
        self.dir_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect()
    }

    /// Loads the connectors shipped in the binary.
    pub async fn load_builtins(&self, runtime: &Runtime) -> Result<(), (String, LoadError)> {
        for (name, bytes) in crate::builtin::BUILTIN {
            let connector = runtime
                .load(bytes)
                .await
                .map_err(|e| (name.to_string(), e))?;
            tracing::info!(connector = %connector.manifest().id, version = %connector.manifest().version, "loaded built-in connector");
            self.insert(connector, Source::Builtin);
        }
        Ok(())
    }

    /// Loads every `*.wasm` in a directory (sorted by name). A broken file is reported with its
    /// reason and skipped; the others still load.
    pub async fn load_dir(
        &self,
        runtime: &Runtime,
        dir: &std::path::Path,
    ) -> anyhow::Result<usize> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the connectors directory {}: {e}",
                    dir.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        let mut loaded = 0;
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read connector");
                    continue;
                }
            };
            match runtime.load(&bytes).await {
                Ok(c) => {
                    tracing::info!(file = %path.display(), connector = %c.manifest().id, "loaded connector");
                    self.insert(c, Source::Directory);
                    loaded += 1;
                }
                Err(e) => tracing::error!(file = %path.display(), error = %e, "connector rejected"),
            }
        }
        Ok(loaded)
    }

    /// Adds or replaces a connector (atomic swap).
    pub fn insert(&self, connector: Connector, source: Source) {
        self.insert_granted(connector, source, None);
    }

    /// Adds or replaces a connector whose egress is limited to `granted` hosts.
    pub fn insert_granted(
        &self,
        connector: Connector,
        source: Source,
        granted_hosts: Option<Vec<String>>,
    ) {
        let id = connector.manifest().id.clone();
        let entry = Arc::new(Entry {
            connector,
            source,
            granted_hosts,
            loaded_at: crate::model::now_ms(),
        });
        self.map.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.insert(id.clone(), entry.clone());
            m
        });
    }

    /// Removes a connector (atomic swap); calls in flight finish on it.
    pub fn remove(&self, id: &str) {
        self.map.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(id);
            m
        });
    }

    /// The connector with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.map.load().get(id).cloned()
    }

    /// A connector's display name, or its id when it is not loaded.
    pub fn display_name(&self, id: &str) -> String {
        self.get(id)
            .map(|e| e.connector.manifest().display_name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// All connectors, ordered by id.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.map.load().values().cloned().collect()
    }
}
