//! The admin token, stored as an Argon2id hash (the `argon2` crate's defaults: 19 MiB of memory,
//! two passes, one lane, a random salt), so a copy of the database does not let anyone test
//! guesses fast. Checking costs tens of milliseconds; callers remember a checked token for a few
//! seconds ([`super::CallerCache`]) and failed attempts are limited per address
//! ([`super::limiter`]).
//!
//! Installations that stored the token as bare SHA-256 upgrade on start when
//! `KEYPORT_ADMIN_TOKEN` is set, else the first time the token is presented.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::oauth::hash;
use crate::store::{Store, StoreError};
use crate::vault::constant_time_eq;

/// Settings key of the admin token's Argon2id hash (PHC string).
pub const ADMIN_TOKEN_ARGON2: &str = "admin_token_argon2";
/// Settings key of the SHA-256 an earlier version stored; removed when upgraded.
pub const LEGACY_ADMIN_TOKEN_SHA256: &str = "admin_token_sha256";

/// The Argon2id hash of `token` with a fresh salt.
pub fn hash_token(token: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .expect("Argon2 with default parameters hashes any input")
        .to_string()
}

fn verifies(phc: &str, token: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(token.as_bytes(), &h)
            .is_ok()
    })
}

/// The last token this process checked successfully against a stored hash: that hash, and the
/// token's SHA-256. The same token against the same hash is not checked again (Argon2id costs
/// tens of milliseconds, and under load every caller-cache expiry made every concurrent request
/// pay it). Another hash (the token was changed) or another token is checked in full. Only a
/// digest is kept, and only in memory.
type Verified = std::sync::Mutex<Option<(String, String)>>;

fn verified() -> &'static Verified {
    static VERIFIED: std::sync::OnceLock<Verified> = std::sync::OnceLock::new();
    VERIFIED.get_or_init(Default::default)
}

/// [`verifies`], remembering a success.
fn verifies_remembered(phc: &str, token: &str) -> bool {
    let digest = hash(token);
    if let Some((known_phc, known)) = &*verified().lock().unwrap_or_else(|p| p.into_inner())
        && known_phc == phc
        && constant_time_eq(known.as_bytes(), digest.as_bytes())
    {
        return true;
    }
    let ok = verifies(phc, token);
    if ok {
        *verified().lock().unwrap_or_else(|p| p.into_inner()) = Some((phc.to_string(), digest));
    }
    ok
}

/// Whether `token` is the admin token (upgrading a legacy SHA-256 record when it matches).
pub async fn matches(store: &Store, token: &str) -> Result<bool, StoreError> {
    if let Some(phc) = store.setting(ADMIN_TOKEN_ARGON2).await? {
        let token = token.to_string();
        return Ok(super::off_loop(move || verifies_remembered(&phc, &token)).await);
    }
    let legacy = store.setting(LEGACY_ADMIN_TOKEN_SHA256).await?;
    if legacy.is_some_and(|h| constant_time_eq(h.as_bytes(), hash(token).as_bytes())) {
        store
            .put_setting(ADMIN_TOKEN_ARGON2, &hash_token(token))
            .await?;
        store.delete_setting(LEGACY_ADMIN_TOKEN_SHA256).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Sets up the admin token at start: `KEYPORT_ADMIN_TOKEN`, or, for the embedded default, one
/// generated and printed once. A changed token ends every web UI session.
pub async fn set_up(store: &Store, embedded: bool) -> anyhow::Result<()> {
    if let Ok(token) = std::env::var("KEYPORT_ADMIN_TOKEN") {
        if token.len() < 16 {
            anyhow::bail!("KEYPORT_ADMIN_TOKEN must be at least 16 characters");
        }
        let current = store.setting(ADMIN_TOKEN_ARGON2).await?;
        if current.is_some_and(|phc| verifies(&phc, &token)) {
            return Ok(());
        }
        let legacy = store.setting(LEGACY_ADMIN_TOKEN_SHA256).await?;
        let same_as_legacy = legacy.is_some_and(|h| h == hash(&token));
        store
            .put_setting(ADMIN_TOKEN_ARGON2, &hash_token(&token))
            .await?;
        store.delete_setting(LEGACY_ADMIN_TOKEN_SHA256).await?;
        if !same_as_legacy {
            // A new admin token signs everyone out of the web UI.
            let ended = store.purge_ui_sessions(i64::MAX).await?;
            if ended > 0 {
                tracing::info!(
                    sessions = ended,
                    "admin token changed: web UI sessions ended"
                );
            }
        }
        return Ok(());
    }
    if store.setting(ADMIN_TOKEN_ARGON2).await?.is_some()
        || store.setting(LEGACY_ADMIN_TOKEN_SHA256).await?.is_some()
    {
        return Ok(());
    }
    if !embedded {
        anyhow::bail!("set KEYPORT_ADMIN_TOKEN (at least 16 characters) to protect the API");
    }
    let token = format!("kpa_{}", crate::vault::random_hex(24));
    if store
        .init_setting(ADMIN_TOKEN_ARGON2, &hash_token(&token))
        .await?
    {
        eprintln!(
            "\n  Admin token (shown once, store it now): {token}\n  Sign in to the web UI with it, and use it as `Authorization: Bearer <token>` for the API.\n"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_is_a_salted_argon2id_hash() {
        let token = "kpa_0123456789abcdef0123456789abcdef";
        let a = hash_token(token);
        let b = hash_token(token);
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(!a.contains(&hash(token)), "not the bare SHA-256");
        assert!(verifies(&a, token));
        assert!(!verifies(&a, "kpa_wrong"));
        assert!(!verifies("not a hash", token));
    }

    #[test]
    fn a_remembered_success_holds_only_for_the_same_token_and_the_same_hash() {
        let token = "kpa_remembered_0123456789abcdef";
        let phc = hash_token(token);
        assert!(verifies_remembered(&phc, token));
        let (remembered, _) = verified().lock().unwrap().clone().unwrap();
        assert_eq!(remembered, phc, "the success is remembered");
        assert!(verifies_remembered(&phc, token), "and holds");
        assert!(!verifies_remembered(&phc, "kpa_another_token_0123456789"));
        // A changed admin token (a new hash) is checked in full: the old token no longer passes.
        let other = hash_token("kpa_the_new_token_0123456789abc");
        assert!(!verifies_remembered(&other, token));
        assert!(verifies_remembered(
            &other,
            "kpa_the_new_token_0123456789abc"
        ));
        assert!(!verifies_remembered(&other, token));
    }
}
