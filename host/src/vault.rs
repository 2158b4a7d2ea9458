//! The vault: envelope encryption of every secret keyport stores.
//!
//! Format of one sealed secret (all lengths in bytes):
//!
//! | field | length | value |
//! |---|---|---|
//! | version | 1 | `1` |
//! | kid length | 1 | 1..=64 |
//! | kid | kid length | the master key's id (ASCII) |
//! | salt | 32 | random, per secret |
//! | nonce | 12 | random, per secret |
//! | ciphertext + tag | n + 16 | AES-256-GCM |
//!
//! The data key is `HKDF-SHA256(ikm = master[kid], salt, info = "keyport/v1/data-key")`, so every
//! secret has its own key and the 2^32 random-nonce limit per key is never approached. The
//! associated data is the header (version, kid) followed by the secret's context — workspace, row
//! id and field name — so a ciphertext copied to another row or field, or relabelled with another
//! kid, fails to decrypt.
//!
//! The vault refuses: unknown key ids (it names the missing one), tampered or moved ciphertexts,
//! and master keys that are not exactly 32 bytes. It never stores plaintext.

use std::collections::BTreeMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const INFO: &[u8] = b"keyport/v1/data-key";

/// Vault failures. None of them carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The ciphertext names a key id that is not loaded.
    #[error("master key {0:?} is not loaded; add it to KEYPORT_MASTER_KEYS or the key file")]
    UnknownKey(String),
    /// Authentication failed: tampered, truncated, or moved to another row or field.
    #[error("a stored secret failed authentication (tampered, or copied from another record)")]
    Tampered,
    /// Not a sealed secret of a known version.
    #[error("a stored secret has an unknown format (version {0})")]
    Format(u8),
    /// A key configuration problem.
    #[error("{0}")]
    Config(String),
}

/// Where a secret belongs: bound into the associated data.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The owning workspace.
    pub workspace: &'a str,
    /// The row the secret belongs to (e.g. a connection id).
    pub row: &'a str,
    /// The field name (e.g. `access_token`).
    pub field: &'a str,
}

/// Master keys by id, one active for writes.
pub struct KeyRing {
    keys: BTreeMap<String, Zeroizing<[u8; 32]>>,
    active: String,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl KeyRing {
    /// A ring from `(kid, key)` pairs; `active` must be among them.
    pub fn new(keys: Vec<(String, [u8; 32])>, active: &str) -> Result<Self, VaultError> {
        let mut map = BTreeMap::new();
        for (kid, key) in keys {
            if !valid_kid(&kid) {
                return Err(VaultError::Config(format!(
                    "key id {kid:?} must be 1-64 characters of A-Z a-z 0-9 - _ ."
                )));
            }
            map.insert(kid, Zeroizing::new(key));
        }
        if !map.contains_key(active) {
            return Err(VaultError::Config(format!(
                "the active key {active:?} is not among the loaded keys"
            )));
        }
        Ok(KeyRing {
            keys: map,
            active: active.to_string(),
        })
    }

    /// Parses `kid:base64key[,kid:base64key…]` (standard or URL-safe base64 of 32 bytes). The
    /// active key is `active`, or the first listed.
    pub fn parse(spec: &str, active: Option<&str>) -> Result<Self, VaultError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, b64) = part.split_once(':').ok_or_else(|| {
                VaultError::Config(
                    "KEYPORT_MASTER_KEYS must be kid:base64key pairs separated by commas, e.g. k1:<32 bytes in base64>"
                        .into(),
                )
            })?;
            keys.push((kid.trim().to_string(), decode_key(kid, b64.trim())?));
        }
        let first = keys
            .first()
            .map(|(k, _)| k.clone())
            .ok_or_else(|| VaultError::Config("KEYPORT_MASTER_KEYS names no key".into()))?;
        Self::new(keys, active.unwrap_or(&first))
    }

    /// Reads a key file: JSON `{"active": "kid", "keys": {"kid": "base64"}}`.
    pub fn read_file(path: &Path) -> Result<Self, VaultError> {
        #[derive(serde::Deserialize)]
        struct File {
            active: String,
            keys: BTreeMap<String, String>,
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            VaultError::Config(format!("cannot read the key file {}: {e}", path.display()))
        })?);
        let file: File = serde_json::from_str(&text).map_err(|e| {
            VaultError::Config(format!(
                "the key file {} is not {{\"active\": \"kid\", \"keys\": {{\"kid\": \"base64\"}}}}: {e}",
                path.display()
            ))
        })?;
        let keys = file
            .keys
            .iter()
            .map(|(kid, b64)| Ok((kid.clone(), decode_key(kid, b64)?)))
            .collect::<Result<Vec<_>, VaultError>>()?;
        Self::new(keys, &file.active)
    }

    /// Creates a key file with one new random key, readable by the owner only.
    pub fn generate_file(path: &Path) -> Result<Self, VaultError> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let kid = format!("dev-{}", random_hex(4));
        let json = Zeroizing::new(
            serde_json::json!({
                "active": kid,
                "keys": { kid.clone(): base64::engine::general_purpose::STANDARD.encode(key) }
            })
            .to_string(),
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| VaultError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        write_private(path, json.as_bytes()).map_err(|e| {
            VaultError::Config(format!("cannot write the key file {}: {e}", path.display()))
        })?;
        let ring = Self::new(vec![(kid.clone(), key)], &kid);
        key.iter_mut().for_each(|b| *b = 0);
        ring
    }

    /// The id of the key used for new secrets.
    pub fn active(&self) -> &str {
        &self.active
    }

    /// Whether a key id is loaded.
    pub fn has(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Encrypts `plaintext` for `ctx` under the active key.
    pub fn seal(&self, plaintext: &[u8], ctx: Context<'_>) -> Vec<u8> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with(&self.active, salt, nonce, plaintext, ctx)
            .expect("the active key is loaded")
    }

    /// Encryption with explicit salt and nonce (known-answer tests only use this directly).
    fn seal_with(
        &self,
        kid: &str,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        ctx: Context<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let master = self
            .keys
            .get(kid)
            .ok_or_else(|| VaultError::UnknownKey(kid.to_string()))?;
        let mut out =
            Vec::with_capacity(2 + kid.len() + SALT_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.push(kid.len() as u8);
        out.extend_from_slice(kid.as_bytes());
        let aad = aad(&out, ctx);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&nonce);
        let cipher = data_cipher(master, &salt);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Config("encryption failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a sealed secret for `ctx`.
    pub fn open(&self, sealed: &[u8], ctx: Context<'_>) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (kid, rest, header_len) = parse_header(sealed)?;
        let master = self
            .keys
            .get(kid)
            .ok_or_else(|| VaultError::UnknownKey(kid.to_string()))?;
        if rest.len() < SALT_LEN + NONCE_LEN + TAG_LEN {
            return Err(VaultError::Tampered);
        }
        let (salt, rest) = rest.split_at(SALT_LEN);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let aad = aad(&sealed[..header_len], ctx);
        let cipher = data_cipher(master, salt);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Tampered)
    }

    /// Decrypts a sealed UTF-8 secret.
    pub fn open_string(
        &self,
        sealed: &[u8],
        ctx: Context<'_>,
    ) -> Result<Zeroizing<String>, VaultError> {
        let bytes = self.open(sealed, ctx)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Tampered)
    }
}

/// The key id a sealed secret was written with.
pub fn key_id(sealed: &[u8]) -> Result<&str, VaultError> {
    parse_header(sealed).map(|(kid, _, _)| kid)
}

fn parse_header(sealed: &[u8]) -> Result<(&str, &[u8], usize), VaultError> {
    let (&version, rest) = sealed.split_first().ok_or(VaultError::Format(0))?;
    if version != VERSION {
        return Err(VaultError::Format(version));
    }
    let (&len, rest) = rest.split_first().ok_or(VaultError::Tampered)?;
    let len = len as usize;
    if len == 0 || rest.len() < len {
        return Err(VaultError::Tampered);
    }
    let kid = std::str::from_utf8(&rest[..len]).map_err(|_| VaultError::Tampered)?;
    Ok((kid, &rest[len..], 2 + len))
}

fn aad(header: &[u8], ctx: Context<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        header.len() + ctx.workspace.len() + ctx.row.len() + ctx.field.len() + 16,
    );
    aad.extend_from_slice(header);
    for part in [ctx.workspace, ctx.row, ctx.field] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn data_cipher(master: &[u8; 32], salt: &[u8]) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(salt), master);
    let mut dek = Zeroizing::new([0u8; 32]);
    hk.expand(INFO, dek.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Aes256Gcm::new_from_slice(dek.as_ref()).expect("32-byte key")
}

fn decode_key(kid: &str, b64: &str) -> Result<[u8; 32], VaultError> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
            .map_err(|_| VaultError::Config(format!("master key {kid:?} is not base64")))?,
    );
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        VaultError::Config(format!(
            "master key {kid:?} must be 32 bytes (got {}); generate one with `openssl rand -base64 32`",
            bytes.len()
        ))
    })
}

/// Whether two byte strings are equal, in time that depends on their length only (for comparing
/// secrets and their hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context<'static> = Context {
        workspace: "ws1",
        row: "conn-1",
        field: "access_token",
    };

    fn ring() -> KeyRing {
        KeyRing::new(
            vec![("k1".into(), [7u8; 32]), ("k2".into(), [9u8; 32])],
            "k2",
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let r = ring();
        let sealed = r.seal(b"xoxb-secret", CTX);
        assert_eq!(key_id(&sealed).unwrap(), "k2");
        assert_eq!(&r.open(&sealed, CTX).unwrap()[..], b"xoxb-secret");
        assert!(
            !sealed.windows(11).any(|w| w == b"xoxb-secret"),
            "no plaintext in the ciphertext"
        );
        assert_ne!(
            r.seal(b"xoxb-secret", CTX),
            sealed,
            "fresh salt and nonce each time"
        );
    }

    #[test]
    fn every_flipped_byte_fails() {
        let r = ring();
        let sealed = r.seal(b"refresh-token-value", CTX);
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                assert!(
                    r.open(&bad, CTX).is_err(),
                    "flipping bit {bit:#x} of byte {i} must fail"
                );
            }
        }
        assert!(
            r.open(&sealed[..sealed.len() - 1], CTX).is_err(),
            "truncation fails"
        );
    }

    #[test]
    fn row_or_field_swap_fails() {
        let r = ring();
        let sealed = r.seal(b"token", CTX);
        for other in [
            Context {
                row: "conn-2",
                ..CTX
            },
            Context {
                field: "refresh_token",
                ..CTX
            },
            Context {
                workspace: "ws2",
                ..CTX
            },
            // Length-prefixing keeps boundaries: "ws1"+"conn-1" must differ from "ws1c"+"onn-1".
            Context {
                workspace: "ws1c",
                row: "onn-1",
                field: "access_token",
            },
        ] {
            assert_eq!(
                r.open(&sealed, other),
                Err(VaultError::Tampered),
                "{other:?}"
            );
        }
    }

    #[test]
    fn unknown_kid_is_a_typed_error() {
        let sealed = ring().seal(b"x", CTX);
        let other = KeyRing::new(vec![("k1".into(), [7u8; 32])], "k1").unwrap();
        assert_eq!(
            other.open(&sealed, CTX),
            Err(VaultError::UnknownKey("k2".into()))
        );
        assert!(
            VaultError::UnknownKey("k2".into())
                .to_string()
                .contains("\"k2\"")
        );
    }

    #[test]
    fn relabelled_kid_fails() {
        // Same key material under two ids: swapping the id in the header must still fail.
        let r = KeyRing::new(
            vec![("ka".into(), [1u8; 32]), ("kb".into(), [1u8; 32])],
            "ka",
        )
        .unwrap();
        let mut sealed = r.seal(b"x", CTX);
        sealed[3] = b'b';
        assert_eq!(key_id(&sealed).unwrap(), "kb");
        assert_eq!(r.open(&sealed, CTX), Err(VaultError::Tampered));
    }

    #[test]
    fn known_answer_vector_pins_the_format() {
        let r = KeyRing::new(vec![("kat".into(), [0x42u8; 32])], "kat").unwrap();
        let sealed = r
            .seal_with(
                "kat",
                [0x11; SALT_LEN],
                [0x22; NONCE_LEN],
                b"keyport",
                Context {
                    workspace: "w",
                    row: "r",
                    field: "f",
                },
            )
            .unwrap();
        assert_eq!(
            hex::encode(&sealed),
            KAT,
            "the sealed format changed: existing databases would no longer decrypt"
        );
        assert_eq!(
            &r.open(
                &sealed,
                Context {
                    workspace: "w",
                    row: "r",
                    field: "f"
                }
            )
            .unwrap()[..],
            b"keyport"
        );
    }

    // Cross-checked with an independent implementation (Python `cryptography`: HKDF-SHA256 + AESGCM).
    const KAT: &str = "01036b61741111111111111111111111111111111111111111111111111111111111111111222222222222222222222222078d11f8889d00ef7b985d30688a5c07b340e810ceb4f8";

    #[test]
    fn key_specs() {
        let k = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let r = KeyRing::parse(&format!("old:{k}, new:{k}"), Some("new")).unwrap();
        assert_eq!(r.active(), "new");
        assert!(r.has("old"));
        assert_eq!(
            KeyRing::parse(&format!("a:{k}"), None).unwrap().active(),
            "a"
        );
        assert!(
            KeyRing::parse("a:c2hvcnQ=", None)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(KeyRing::parse("nocolon", None).is_err());
        assert!(KeyRing::parse(&format!("a:{k}"), Some("b")).is_err());
    }

    #[test]
    fn generated_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let r = KeyRing::generate_file(&path).unwrap();
        let again = KeyRing::read_file(&path).unwrap();
        assert_eq!(r.active(), again.active());
        let sealed = r.seal(b"x", CTX);
        assert_eq!(&again.open(&sealed, CTX).unwrap()[..], b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(
            KeyRing::generate_file(&path).is_err(),
            "never overwrites an existing key file"
        );
    }
}
