//! Webhooks: subscriptions, transition events, signed deliveries with retries.
//!
//! Events are written to an outbox table in the same transaction as the status change they
//! report ([`crate::store::Store::transition_status`]), one row per subscription, so a delivery
//! survives restarts and each transition produces exactly one event. A worker in every
//! `keyport serve` process claims due rows (disjoint across replicas), POSTs them and retries
//! failures with exponential backoff; the rows are the subscription's delivery log.
//!
//! ## Signature
//!
//! Every delivery carries
//!
//! | header | value |
//! |---|---|
//! | `Keyport-Signature` | `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` |
//! | `Keyport-Event-Id` | `evt_…`, the same for every subscription and every retry |
//! | `Keyport-Event-Type` | e.g. `connection.revoked` |
//! | `Keyport-Delivery-Id` | this event for this subscription |
//!
//! Receivers recompute the HMAC over the timestamp, a dot and the raw body with the subscription's
//! secret (shown once at creation), compare in constant time, reject timestamps more than five
//! minutes old, and de-duplicate by `Keyport-Event-Id` (a delivery whose answer was lost is sent
//! again).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::connections::{Error, Principal, Result, Service, rfc3339};
use crate::events::EVENT_TYPES;
use crate::runtime::error_chain;
use crate::store::{DeliveryRow, Journal, WebhookRow, now_ms};

/// How long a claim on deliveries lasts without renewal: the longest a crashed process delays
/// the redelivery of what it was sending.
const DELIVERY_CLAIM_MS: i64 = 6_000;

/// `t=…,v1=…` for a body sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Why a `Keyport-Signature` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<64 hex digits>[,v1=…]`.
    #[error("the signature header is malformed: expected t=<unix seconds>,v1=<hex HMAC-SHA256>")]
    Malformed,
    /// The timestamp is further from now than the tolerance (a replay, or a skewed clock).
    #[error("the signature's timestamp is {0} s away from now, beyond the tolerance")]
    Stale(i64),
    /// No `v1` value matches the body under the secret.
    #[error("no signature matches the body under this secret")]
    Mismatch,
}

/// Verifies a delivery the way a receiver should: `header` is the `Keyport-Signature` value,
/// `body` the raw request body, `now` the receiver's clock (Unix seconds), `tolerance` how far
/// the timestamp may be from it (300 s is a good default). Comparison is constant-time; several
/// `v1` values are accepted (any one may match).
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> std::result::Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => {
                if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            Some(("v1", v)) => {
                let bytes = hex::decode(v).map_err(|_| SignatureError::Malformed)?;
                if bytes.len() != 32 {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(bytes);
            }
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(t), false) = (timestamp, signatures.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let skew = now.saturating_sub(t);
    if skew.saturating_abs() > tolerance {
        return Err(SignatureError::Stale(skew));
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if signatures
        .iter()
        .any(|s| crate::vault::constant_time_eq(s, &expected))
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `POST /api/v1/webhooks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

fn webhook_view(w: &WebhookRow) -> Value {
    json!({
        "id": w.id,
        "url": w.url,
        "events": w.events.trim_matches(',').split(',').filter(|e| !e.is_empty()).collect::<Vec<_>>(),
        "description": w.description,
        "created_at": rfc3339(w.created_at),
    })
}

fn delivery_view(d: &DeliveryRow) -> Value {
    let state = if d.delivered_at.is_some() {
        "delivered"
    } else if d.failed_at.is_some() {
        "failed"
    } else {
        "pending"
    };
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "state": state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
        "delivered_at": d.delivered_at.map(rfc3339),
        "next_attempt_at": d.next_attempt_at.filter(|_| state == "pending").map(rfc3339),
    })
}

fn owner(id: &str) -> String {
    format!("webhook:{id}")
}

impl Service {
    /// Adds a subscription; the answer carries the signing secret, shown this once.
    pub async fn create_webhook(&self, who: &Principal, req: NewWebhook) -> Result<Value> {
        who.may_administer(true, "subscribing to webhooks")?;
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        let mut fields = Vec::new();
        match url::Url::parse(&req.url) {
            Ok(u)
                if u.scheme() == "https"
                    || (u.scheme() == "http" && self.config.allow_loopback) =>
            {
                if let Err(denied) = crate::runtime::check_literal(&u, self.config.allow_loopback) {
                    fields.push(("/url".to_string(), denied.to_string()));
                }
            }
            Ok(_) => fields.push((
                "/url".to_string(),
                "use an https:// URL (plain http only in test mode)".to_string(),
            )),
            Err(e) => fields.push(("/url".to_string(), format!("not a URL: {e}"))),
        }
        if req.events.is_empty() {
            fields.push((
                "/events".into(),
                format!(
                    "name at least one event, or \"*\" for all: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        for (i, e) in req.events.iter().enumerate() {
            if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
                fields.push((
                    format!("/events/{i}"),
                    format!("unknown event {e:?}; known: {}", EVENT_TYPES.join(", ")),
                ));
            }
        }
        if !fields.is_empty() {
            return Err(Error::Invalid {
                message: "The webhook subscription is invalid.".into(),
                fields,
            });
        }
        let id = format!("wh_{}", crate::vault::random_hex(8));
        let secret = format!("whsec_{}", crate::vault::random_hex(24));
        let row = WebhookRow {
            id: id.clone(),
            workspace_id: ws.to_string(),
            url: req.url,
            events: format!(",{},", req.events.join(",")),
            description: req.description,
            created_at: now_ms(),
        };
        let sealed = self.seal_field(ws, &owner(&id), "signing_secret", &secret);
        let journal = Journal::new().audit(
            None,
            "webhook.created",
            &actor.0,
            &json!({"webhook": id, "url": row.url}),
        );
        self.store
            .insert_webhook(&row, &owner(&id), &sealed, &journal)
            .await?;
        let mut v = webhook_view(&row);
        v["secret"] = json!(secret);
        Ok(v)
    }

    /// The workspace's subscriptions.
    pub async fn list_webhooks(&self, who: &Principal) -> Result<Value> {
        who.may_administer(true, "listing webhooks")?;
        let ws = who.workspace.as_str();
        let rows = self.store.webhooks(ws, None).await?;
        Ok(json!({ "webhooks": rows.iter().map(webhook_view).collect::<Vec<_>>() }))
    }

    /// Removes a subscription and its pending deliveries.
    pub async fn delete_webhook(&self, who: &Principal, id: &str) -> Result<()> {
        who.may_administer(true, "deleting a webhook")?;
        let (ws, actor) = (who.workspace.as_str(), &who.actor());
        let journal =
            Journal::new().audit(None, "webhook.deleted", &actor.0, &json!({"webhook": id}));
        if !self
            .store
            .delete_webhook(ws, id, &owner(id), &journal)
            .await?
        {
            return Err(Error::NotFound(format!(
                "no webhook {id:?} in this workspace"
            )));
        }
        Ok(())
    }

    /// A subscription's delivery log, newest first.
    pub async fn webhook_deliveries(&self, who: &Principal, id: &str, limit: i64) -> Result<Value> {
        who.may_administer(true, "reading webhook deliveries")?;
        let ws = who.workspace.as_str();
        if self.store.webhooks(ws, Some(id)).await?.is_empty() {
            return Err(Error::NotFound(format!(
                "no webhook {id:?} in this workspace"
            )));
        }
        let rows = self.store.deliveries(ws, id, limit.clamp(1, 500)).await?;
        Ok(json!({ "deliveries": rows.iter().map(delivery_view).collect::<Vec<_>>() }))
    }

    /// Sends due deliveries; returns how many were attempted.
    pub async fn run_webhook_deliveries(&self) -> Result<usize> {
        // A few at a time, under a short claim that a heartbeat renews while they are being sent
        // (each may take up to its 15 s timeout): after a crash, another process (or this one,
        // restarted) retries them within seconds.
        let due = self.store.claim_deliveries(4, DELIVERY_CLAIM_MS).await?;
        let claimed: Vec<(String, i64)> = due.iter().map(|d| (d.id.clone(), d.attempts)).collect();
        let store = self.store.clone();
        let _heartbeat = crate::store::Heartbeat::start(
            std::time::Duration::from_millis(DELIVERY_CLAIM_MS as u64 / 3),
            move || {
                let (store, claimed) = (store.clone(), claimed.clone());
                async move {
                    match store
                        .extend_delivery_claims(&claimed, now_ms() + DELIVERY_CLAIM_MS)
                        .await
                    {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not renew a webhook delivery claim");
                            false
                        }
                    }
                }
            },
        );
        let mut hooks: std::collections::HashMap<String, Option<(WebhookRow, String)>> =
            Default::default();
        for d in &due {
            if !hooks.contains_key(&d.webhook_id) {
                let hook = self
                    .store
                    .webhooks(&d.workspace_id, Some(&d.webhook_id))
                    .await?
                    .into_iter()
                    .next();
                let entry = match hook {
                    Some(h) => self
                        .open_secret(&d.workspace_id, &owner(&h.id), "signing_secret")
                        .await?
                        .map(|s| (h, s.to_string())),
                    None => None,
                };
                hooks.insert(d.webhook_id.clone(), entry);
            }
            let Some(Some((hook, secret))) = hooks.get(&d.webhook_id) else {
                self.store
                    .delivery_attempted(&d.id, None, Some("the subscription is gone"), false, None)
                    .await?;
                continue;
            };
            self.deliver(hook, secret, d).await?;
        }
        Ok(due.len())
    }

    async fn deliver(&self, hook: &WebhookRow, secret: &str, d: &DeliveryRow) -> Result<()> {
        let ts = now_ms() / 1000;
        let request = match self
            .webhook_http
            .request_str(reqwest::Method::POST, &hook.url)
        {
            Ok(r) => r,
            Err(denied) => {
                // Never sent: the address is refused (a subscription made before the rule, or
                // under another setting). Recorded as a failure, without retries.
                self.store
                    .delivery_attempted(&d.id, None, Some(&denied.to_string()), false, None)
                    .await?;
                return Ok(());
            }
        };
        let sent = request
            .header("content-type", "application/json")
            .header("user-agent", concat!("keyport/", env!("CARGO_PKG_VERSION")))
            .header("keyport-signature", sign(secret, ts, &d.payload))
            .header("keyport-event-id", &d.event_id)
            .header("keyport-event-type", &d.event_type)
            .header("keyport-delivery-id", &d.id)
            .body(d.payload.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(r) if r.status().is_success() => {
                self.store
                    .delivery_attempted(&d.id, Some(r.status().as_u16() as i64), None, true, None)
                    .await?;
                return Ok(());
            }
            Ok(r) => (
                Some(r.status().as_u16() as i64),
                format!("the receiver answered HTTP {}", r.status().as_u16()),
            ),
            Err(e) => (
                None,
                format!(
                    "could not reach the receiver: {}",
                    error_chain(&e.without_url())
                ),
            ),
        };
        let attempts = d.attempts + 1;
        let next = (attempts < self.config.webhook_max_attempts).then(|| {
            let delay = self
                .config
                .webhook_backoff_ms
                .saturating_mul(1 << (attempts - 1).min(16))
                .min(3_600_000);
            now_ms() + delay + (rand::random::<u64>() % (delay as u64 / 5 + 1)) as i64
        });
        if next.is_none() {
            tracing::warn!(webhook = %hook.id, event = %d.event_id, "webhook delivery given up after {attempts} attempts");
        }
        self.store
            .delivery_attempted(&d.id, status, Some(&error), false, next)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Known answer, from Python: hmac.new(b"whsec_test", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            sign("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn verify_accepts_what_sign_made_and_refuses_everything_else() {
        let (secret, t, body) = ("whsec_test", 1_700_000_000, r#"{"a":1}"#);
        let header = sign(secret, t, body);
        assert_eq!(
            verify(secret, &header, body.as_bytes(), t + 10, 300),
            Ok(())
        );
        assert_eq!(
            verify("whsec_other", &header, body.as_bytes(), t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, b"{\"a\":2}", t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, body.as_bytes(), t + 301, 300),
            Err(SignatureError::Stale(301))
        );
        // Rotation: any of several v1 values may match.
        let two = format!("{header},v1={}", "0".repeat(64));
        assert_eq!(verify(secret, &two, body.as_bytes(), t, 300), Ok(()));
        for bad in [
            "",
            "t=1700000000",
            "v1=00",
            "t=,v1=00",
            "t=-5,v1=00",
            "t=1700000000,v1=zz",
            "t=1700000000,v2=00",
            "t=99999999999999999999,v1=00",
        ] {
            assert_eq!(
                verify(secret, bad, body.as_bytes(), t, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
