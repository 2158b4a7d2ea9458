//! The vocabulary every layer shares: a connection's [`Status`] and its transitions, and times.
//!
//! Statuses are an enum everywhere inside keyport; their string form (`"active"`, …) exists only
//! at the edges: SQL, JSON and HTML.

use std::fmt;
use std::str::FromStr;

/// A connection's health (ARCHITECTURE.md "Status model").
///
/// | from | event | to |
/// |---|---|---|
/// | — | OAuth start | `pending` |
/// | — | API key verified | `active` |
/// | `pending` | callback + account lookup | `active` |
/// | `pending` | transient lookup failure | `pending` (lookup retried with backoff) |
/// | `pending` | access denied / flow error | `pending`, with the reason |
/// | `pending` | definitive lookup failure | `error` |
/// | any | refresh succeeds, or a probe or call succeeds after failures | `active` ("recovered" from `error`) |
/// | `active` | a run of transient refresh failures | `error` (retries go on) |
/// | `active`, `error` | `invalid_grant`, or the provider rejects the credential | `revoked` |
/// | `active`, `error` | expired and no refresh token | `expired` |
/// | any | revoke | `revoked` (secrets deleted) |
///
/// `expired` and `revoked` leave only through a reconnect (a new grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Status {
    /// Authorization started, or the account lookup is not finished.
    Pending,
    /// The credential works.
    Active,
    /// The access token expired and cannot be refreshed.
    Expired,
    /// The last refresh or call hit a provider error; `status_reason` says what to do.
    Error,
    /// Revoked by keyport or at the provider.
    Revoked,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Active,
        Status::Expired,
        Status::Error,
        Status::Revoked,
    ];

    /// The string form used in SQL, JSON and HTML.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Error => "error",
            Status::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a status; use one of pending, active, expired, error, revoked")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl TryFrom<String> for Status {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, UnknownStatus> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The longest lifetime keyport believes a provider gives a token: ten years. Larger values
/// (`expires_in`, `refresh_token_expires_in`, `Retry-After`, anything read into a time) are
/// clamped to it, so no provider answer can push a time past what can be stored and shown.
pub const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// The latest time keyport formats: 9999-12-31T23:59:59.999Z.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A lifetime in seconds from a provider, in milliseconds, clamped to [`MAX_LIFETIME_SECS`].
pub fn lifetime_ms(secs: u64) -> i64 {
    secs.min(MAX_LIFETIME_SECS) as i64 * 1000
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Unix milliseconds as RFC 3339, for every value: times before 1970 show as the epoch, times
/// past year 9999 as its last millisecond.
pub fn rfc3339(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_TIME_MS);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_string_form() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(Status::try_from(s.to_string()), Ok(s));
        }
        assert!("Active".parse::<Status>().is_err());
        assert!("".parse::<Status>().is_err());
    }

    #[test]
    fn every_time_formats_and_lifetimes_are_clamped() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(MAX_TIME_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(lifetime_ms(3600), 3_600_000);
        assert_eq!(
            lifetime_ms(300_000_000_000),
            MAX_LIFETIME_SECS as i64 * 1000
        );
        assert_eq!(lifetime_ms(u64::MAX), MAX_LIFETIME_SECS as i64 * 1000);
        // Now plus the longest lifetime still formats.
        assert!(rfc3339(now_ms() + lifetime_ms(u64::MAX)).starts_with("20"));
    }
}
