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
        who: &Principal,
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
        let filter = ConnectionFilter {
            visible: who.visible(),
            ..filter.clone()
        };
        let mut rows = self
            .store
            .connections(&who.workspace, &filter, after, limit + 1)
            .await?;
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
        who: &Principal,
        filter: &ConnectionFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ConnectionRow>, i64)> {
        let filter = ConnectionFilter {
            visible: who.visible(),
            ..filter.clone()
        };
        Ok(self
            .store
            .connections_page(&who.workspace, &filter, offset, limit)
            .await?)
    }

    /// How many of the connections `who` sees match `filter`.
    pub async fn count_connections(
        &self,
        who: &Principal,
        filter: &ConnectionFilter,
    ) -> Result<i64> {
        let filter = ConnectionFilter {
            visible: who.visible(),
            ..filter.clone()
        };
        Ok(self
            .store
            .count_connections(&who.workspace, &filter)
            .await?)
    }

    /// A connection's dependents: (ref, registered at).
    pub async fn dependents(&self, who: &Principal, id: &str) -> Result<Vec<(String, i64)>> {
        self.connection_for(who, id, Need::See).await?;
        Ok(self.store.dependents(&who.workspace, id).await?)
    }

    /// A connection's audit trail, oldest first. A deleted connection's trail outlives it; only
    /// workspace owners and admins read that one (nobody else can tell whose it was).
    pub async fn connection_audit(
        &self,
        who: &Principal,
        id: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        match self.connection_for(who, id, Need::See).await {
            Ok(_) => Ok(self
                .store
                .audit_events(&who.workspace, Some(id), limit)
                .await?),
            Err(Error::NotFound(m)) if who.is_workspace_admin() => {
                let rows = self
                    .store
                    .audit_events(&who.workspace, Some(id), limit)
                    .await?;
                if rows.is_empty() {
                    Err(Error::NotFound(m))
                } else {
                    Ok(rows)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// One page of the workspace's audit log that `who` may read, newest first, before the
    /// `cursor` event id: everything for owners and admins, else the rows about connections they
    /// see.
    pub async fn audit_page(
        &self,
        who: &Principal,
        connection: Option<&str>,
        action: Option<&str>,
        since: Option<i64>,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        Ok(self
            .store
            .audit_page(
                &who.workspace,
                &who.visible(),
                &crate::store::AuditFilter {
                    connection,
                    action,
                    since,
                    before_id: cursor,
                },
                limit,
            )
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

    /// How a connection was used: proxied calls per day over the last 30 days (for those who
    /// see it), and whether it still holds a token keyport can refresh.
    pub async fn connection_usage(&self, who: &Principal, id: &str) -> Result<Value> {
        let c = self.connection_for(who, id, Need::See).await?;
        let since = now_ms() - 30 * 86_400_000;
        let days = self.store.daily_calls(&who.workspace, id, since).await?;
        let token = c.auth_kind == "oauth2"
            && self
                .store
                .secret(&who.workspace, id, "access_token")
                .await?
                .is_some();
        Ok(json!({
            "last_used_at": c.last_used_at.map(rfc3339),
            "calls_per_day": days.iter().map(|(d, n)| json!({"day": rfc3339(*d)[..10].to_string(), "calls": n})).collect::<Vec<_>>(),
            "refreshable": token,
        }))
    }
}
