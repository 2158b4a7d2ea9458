//! Use of a connection's credential (proxied calls): audit rows and `last_used_at`, buffered and
//! written in batches about once a second by the `keyport serve` loop. Callers report each use
//! with [`Service::record_use`]; nothing here knows how the call was made.

use super::*;

use crate::store::AuditRow;

/// Use not yet written to the database.
#[derive(Default)]
pub struct Usage {
    /// Audit rows of uses.
    pub audit: Vec<AuditRow>,
    /// Connection id → (workspace, last use).
    pub last_used: HashMap<String, (String, i64)>,
}

impl Service {
    /// Records one use of `c`'s credential: an audit row `action` with `detail`, and the
    /// connection's last use, written by the next [`Service::flush_usage`].
    pub(crate) fn record_use(
        &self,
        c: &ConnectionRow,
        actor: &Actor,
        action: &str,
        detail: impl Serialize,
    ) {
        let now = now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.audit.push(AuditRow {
            id: 0,
            workspace_id: c.workspace_id.clone(),
            connection_id: Some(c.id.clone()),
            action: action.into(),
            actor: actor.0.clone(),
            detail: serde_json::to_string(&detail).unwrap_or_else(|_| "{}".into()),
            created_at: now,
        });
        usage
            .last_used
            .insert(c.id.clone(), (c.workspace_id.clone(), now));
    }

    /// Writes buffered audit rows of use and last-used times.
    pub async fn flush_usage(&self) -> Result<()> {
        let (audit, used) = {
            let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut usage.audit),
                std::mem::take(&mut usage.last_used),
            )
        };
        if !audit.is_empty() {
            self.store.audit_batch(&audit).await?;
        }
        if !used.is_empty() {
            let used: Vec<(String, String, i64)> = used
                .into_iter()
                .map(|(id, (ws, at))| (ws, id, at))
                .collect();
            self.store.touch_last_used(&used).await?;
        }
        Ok(())
    }
}
