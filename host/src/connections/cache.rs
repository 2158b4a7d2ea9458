//! Short-lived caches of connections and their call envs for the proxy, cleared on every local
//! change.

use super::*;

/// How long the proxy trusts a cached connection row and credential. Changes made by this
/// process clear the entry at once; changes by another replica show within this time (a token
/// refreshed elsewhere is picked up at once when the provider answers 401).
pub const CONN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection and its call env, as the proxy uses them.
pub(crate) type CachedConn = Arc<(ConnectionRow, CallEnv)>;

impl Service {
    /// Drops a connection from the proxy's cache (after any change to it).
    pub(crate) fn forget(&self, id: &str) {
        self.conn_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Drops every cached connection (a connector was swapped: its grants may have changed).
    pub(crate) fn forget_all(&self) {
        self.conn_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A connection and its call env for the proxy, from a cache of at most `CONN_CACHE_TTL`.
    pub(crate) async fn cached_conn(&self, ws: &str, id: &str, fresh: bool) -> Result<CachedConn> {
        if !fresh
            && let Some((at, hit)) = self
                .conn_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
            && at.elapsed() < CONN_CACHE_TTL
            && hit.0.workspace_id == ws
        {
            return Ok(hit.clone());
        }
        let c = self.get(ws, id).await?;
        let entry = self.connector(&c.connector_id)?;
        let env = self.call_env(&c, entry.connector.manifest()).await?;
        let out = Arc::new((c, env));
        let mut cache = self.conn_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < CONN_CACHE_TTL);
        }
        cache.insert(id.to_string(), (std::time::Instant::now(), out.clone()));
        Ok(out)
    }
}
