//! What the API and the pages read: connection listings and counts, dependents, the audit trail,
//! workspaces and the refresh backlog. Handlers read through these, never the store, so every
//! rule the lifecycle applies to a read is applied here once.

use super::*;

use crate::store::{AuditRow, ConnectionFilter};

impl Service {
    /// A workspace's connections matching `filter`, newest first, in pages: at most `limit`
    /// after `cursor` (the `next_cursor` of the previous page), and the next page's cursor when
    /// there is one.
    pub async fn list_connections(
        &self,
        ws: &str,
        filter: &ConnectionFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<ConnectionRow>, Option<String>)> {
        let after = match cursor {
            None => None,
            Some(c) => Some(
                c.split_once(':')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
                    .ok_or_else(|| {
                        Error::BadRequest(
                            "cursor: pass back the next_cursor of the previous page".into(),
                        )
                    })?,
            ),
        };
        let mut rows = self.store.connections(ws, filter, after, limit + 1).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|c| format!("{}:{}", c.created_at, c.id))
        } else {
            None
        };
        Ok((rows, next))
    }

    /// One page of a workspace's connections matching `filter`, and how many match in all.
    pub async fn connections_page(
        &self,
        ws: &str,
        filter: &ConnectionFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ConnectionRow>, i64)> {
        Ok(self
            .store
            .connections_page(ws, filter, offset, limit)
            .await?)
    }

    /// How many of a workspace's connections match `filter`.
    pub async fn count_connections(&self, ws: &str, filter: &ConnectionFilter) -> Result<i64> {
        Ok(self.store.count_connections(ws, filter).await?)
    }

    /// A connection's dependents: (ref, registered at); 404 for an unknown connection.
    pub async fn dependents(&self, ws: &str, id: &str) -> Result<Vec<(String, i64)>> {
        self.get(ws, id).await?;
        Ok(self.store.dependents(ws, id).await?)
    }

    /// The newest audit events of a workspace, or of one connection (which may be deleted: its
    /// trail outlives it).
    pub async fn audit_events(
        &self,
        ws: &str,
        connection: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(self.store.audit_events(ws, connection, limit).await?)
    }

    /// One page of a workspace's audit log, newest first, before the `cursor` event id.
    pub async fn audit_page(
        &self,
        ws: &str,
        connection: Option<&str>,
        action: Option<&str>,
        since: Option<i64>,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(self
            .store
            .audit_page(ws, connection, action, since, cursor, limit)
            .await?)
    }

    /// Refreshes due now across all workspaces, and when the oldest of them came due.
    pub async fn refresh_backlog(&self, now: i64) -> Result<(i64, Option<i64>)> {
        Ok(self.store.refresh_backlog(now).await?)
    }

    /// Every workspace: (id, name, created at).
    pub async fn workspaces(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(self.store.workspaces().await?)
    }

    /// Creates a workspace; 400 for an id that is not 1-64 letters, digits, `-` and `_`, 409 when
    /// it exists.
    pub async fn create_workspace(&self, id: &str, name: &str) -> Result<()> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(Error::BadRequest(
                "workspace id: 1-64 characters of letters, digits, '-' and '_'".into(),
            ));
        }
        if self.store.workspace_exists(id).await? {
            return Err(Error::Conflict(format!("workspace {id:?} already exists")));
        }
        Ok(self.store.ensure_workspace(id, name).await?)
    }
}
