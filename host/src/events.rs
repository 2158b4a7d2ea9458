//! Events: the audit log and the webhook outbox, written below the lifecycle.
//!
//! The lifecycle decides what happened; this module names it. Every event and the audit row of
//! the change it describes travel in a [`crate::store::Journal`] that the store writes in the
//! change's own transaction (creates, status changes, deletes, expiring-soon flags), so a change
//! cannot commit without its record, nor a record without its change, even under `kill -9`. [`crate::webhooks`] only delivers what the outbox
//! holds; nothing here knows about HTTP.
//!
//! | event | when |
//! |---|---|
//! | `connection.created` | a connection was created (OAuth start, API key) |
//! | `connection.active` | it became `active` |
//! | `connection.recovered` | it became `active` again after `error` |
//! | `connection.error`, `.expired`, `.revoked` | it entered that status |
//! | `connection.deleted` | it was deleted |
//! | `connection.expiring_soon` | its refresh token expires soon, or refreshes keep failing |
//! | `connection_request.fulfilled`, `.expired`, `.cancelled` | a connection request was completed by the client, ran out, or was cancelled |

use serde_json::{Value, json};

use crate::model::{Status, now_ms, rfc3339};
use crate::store::{OutEvent, Store, StoreError};

/// Every event type a subscription can ask for.
pub const EVENT_TYPES: &[&str] = &[
    "connection.created",
    "connection.active",
    "connection.recovered",
    "connection.error",
    "connection.expired",
    "connection.revoked",
    "connection.deleted",
    "connection.expiring_soon",
    "connection_request.fulfilled",
    "connection_request.expired",
    "connection_request.cancelled",
];

/// The event a status change produces, if any.
pub fn status_event(from: Status, to: Status) -> Option<&'static str> {
    match to {
        Status::Active if from == Status::Error => Some("connection.recovered"),
        Status::Active => Some("connection.active"),
        Status::Error => Some("connection.error"),
        Status::Expired => Some("connection.expired"),
        Status::Revoked => Some("connection.revoked"),
        Status::Pending => None,
    }
}

/// An event about a connection in `workspace`, whose JSON view is `connection`: the body every
/// subscription receives, with `extra` merged into its `data`.
pub fn connection_event(kind: &str, workspace: &str, connection: Value, extra: Value) -> OutEvent {
    let mut data = json!({ "connection": connection });
    if let (Value::Object(d), Value::Object(x)) = (&mut data, extra) {
        d.extend(x);
    }
    event(kind, workspace, data)
}

/// An event about a connection request (its JSON view in `data.connection_request`).
pub fn request_event(kind: &str, workspace: &str, request: Value) -> OutEvent {
    event(kind, workspace, json!({"connection_request": request}))
}

/// The body every subscription receives: id, type, time, workspace and `data`.
fn event(kind: &str, workspace: &str, data: Value) -> OutEvent {
    let id = format!("evt_{}", crate::vault::random_hex(12));
    let payload = json!({
        "id": id,
        "type": kind,
        "created_at": rfc3339(now_ms()),
        "workspace": workspace,
        "data": data,
    });
    OutEvent {
        id,
        event_type: kind.to_string(),
        payload: payload.to_string(),
    }
}

/// Writes one audit row.
pub async fn audit(
    store: &Store,
    workspace: &str,
    connection: Option<&str>,
    action: &str,
    actor: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    store
        .audit(workspace, connection, action, actor, detail)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_map_to_events() {
        use Status::*;
        assert_eq!(status_event(Error, Active), Some("connection.recovered"));
        assert_eq!(status_event(Pending, Active), Some("connection.active"));
        assert_eq!(status_event(Active, Revoked), Some("connection.revoked"));
        assert_eq!(status_event(Active, Pending), None);
    }
}
