//! Secrets at rest: AES-256-GCM envelopes under a keyring read from a key file.
//!
//! The key file holds one or more 32-byte master keys, each with an id. The last key in the
//! file encrypts; every key decrypts, so a key can be rotated by appending a new one,
//! re-encrypting (`wa.rotate_key()`), and only then removing the old one.
//!
//! ```text
//! # comments and blank lines are ignored
//! 2026-01:BASE64-OF-32-RANDOM-BYTES
//! 2026-11:64-HEX-DIGITS-ALSO-ACCEPTED
//! ```
//!
//! A file whose only content is one bare key (no `id:`) is accepted too; its id is `default`.
//!
//! An envelope is `version (1 byte) | key id length (1) | key id | nonce (12) | ciphertext+tag`.
//! The header and the caller's associated data are both authenticated, so a ciphertext copied
//! to another row (different associated data) or with its key id edited fails to decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

const ENVELOPE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MAX_KEY_ID_LEN: usize = 64;

/// Why a key file could not be used. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("key file contains no key")]
    Empty,
    #[error("key file line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    #[error("key file defines key id \"{0}\" more than once")]
    DuplicateId(String),
}

/// Why an envelope could not be produced or opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext was encrypted with key id \"{0}\", which is not in the key file")]
    UnknownKeyId(String),
    #[error(
        "ciphertext failed authentication (wrong key, or it was moved from another row or altered)"
    )]
    AuthenticationFailed,
    #[error("could not obtain random bytes for a nonce")]
    Random,
}

struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

/// The master keys from a key file; the last one is active (encrypts).
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only ids: a keyring must never print its keys, even in a debug log.
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut bytes = Zeroizing::new(Vec::new());
    if text.len() == KEY_LEN * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        *bytes = hex::decode(text).ok()?;
    } else {
        *bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
    }
    if bytes.len() != KEY_LEN {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Some(key)
}

impl Keyring {
    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, material) = match line.split_once(':') {
                Some((id, material)) => (id.trim(), material.trim()),
                None => ("default", line),
            };
            if !valid_key_id(id) {
                return Err(KeyringError::BadLine {
                    line: line_no,
                    reason: "key id must be 1-64 characters of letters, digits, '-', '_' or '.'",
                });
            }
            let key = decode_key(material).ok_or(KeyringError::BadLine {
                line: line_no,
                reason: "key must be 32 bytes, as base64 or 64 hex digits",
            })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId(id.to_string()));
            }
            keys.push(MasterKey {
                id: id.to_string(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The ids of all keys, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that encrypts.
    pub fn active_key_id(&self) -> &str {
        // `parse` guarantees at least one key.
        self.keys.last().map(|k| k.id.as_str()).unwrap_or_default()
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Encrypts `plaintext` under the active key, bound to `aad` (e.g. the row it belongs to).
    pub fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.keys.last().ok_or(CryptoError::Malformed)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut envelope = header(&key.id);
        let cipher =
            Aes256Gcm::new_from_slice(key.key.as_slice()).map_err(|_| CryptoError::Malformed)?;
        let mut full_aad = envelope.clone();
        full_aad.extend_from_slice(aad);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&sealed);
        Ok(envelope)
    }

    /// Opens an envelope made by [`Keyring::encrypt`] with the same `aad`.
    pub fn decrypt(&self, aad: &[u8], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (key_id, header_len) = parse_header(envelope)?;
        let key = self
            .find(key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_string()))?;
        let nonce = &envelope[header_len..header_len + NONCE_LEN];
        let sealed = &envelope[header_len + NONCE_LEN..];
        let cipher =
            Aes256Gcm::new_from_slice(key.key.as_slice()).map_err(|_| CryptoError::Malformed)?;
        let mut full_aad = envelope[..header_len].to_vec();
        full_aad.extend_from_slice(aad);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &full_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::AuthenticationFailed)
    }

    /// A MAC of `message` under the active key, for `purpose` (each purpose has a key of its
    /// own, derived from the master key, so a MAC made for one never verifies for another).
    /// Returns the key id with the MAC (hex).
    pub fn sign(&self, purpose: &str, message: &[u8]) -> Result<(&str, String), CryptoError> {
        let key = self.keys.last().ok_or(CryptoError::Malformed)?;
        Ok((key.id.as_str(), hex::encode(mac(key, purpose, message)?)))
    }

    /// Whether `mac_hex` is [`Keyring::sign`]'s MAC of `message` for `purpose` under key
    /// `key_id` (compared in constant time). An unknown key id or malformed MAC is false.
    pub fn verify(&self, key_id: &str, purpose: &str, message: &[u8], mac_hex: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (Some(key), Ok(given)) = (self.find(key_id), hex::decode(mac_hex)) else {
            return false;
        };
        mac(key, purpose, message).is_ok_and(|m| bool::from(m.as_slice().ct_eq(&given)))
    }

    /// Decrypts with whatever key the envelope names and re-encrypts under the active key.
    /// Returns `None` when the envelope already uses the active key. Either way the envelope
    /// is opened first, so a wrong key is reported rather than passed over.
    pub fn reencrypt(&self, aad: &[u8], envelope: &[u8]) -> Result<Option<Vec<u8>>, CryptoError> {
        let mut plaintext = self.decrypt(aad, envelope)?;
        if envelope_key_id(envelope)? == self.active_key_id() {
            plaintext.zeroize();
            return Ok(None);
        }
        let fresh = self.encrypt(aad, &plaintext);
        plaintext.zeroize();
        fresh.map(Some)
    }
}

/// HMAC-SHA256 of `message` under a key derived for `purpose`: HMAC(master, "mac/" purpose).
fn mac(key: &MasterKey, purpose: &str, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use hmac::{Hmac, Mac};
    type H = Hmac<sha2::Sha256>;
    let mut derive =
        <H as Mac>::new_from_slice(key.key.as_slice()).map_err(|_| CryptoError::Malformed)?;
    derive.update(b"mac/");
    derive.update(purpose.as_bytes());
    let derived = Zeroizing::new(derive.finalize().into_bytes().to_vec());
    let mut m =
        <H as Mac>::new_from_slice(derived.as_slice()).map_err(|_| CryptoError::Malformed)?;
    m.update(message);
    Ok(m.finalize().into_bytes().to_vec())
}

fn header(key_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key_id.len() + NONCE_LEN + TAG_LEN + 64);
    out.push(ENVELOPE_VERSION);
    // Key ids are validated to at most 64 bytes when the key file is parsed.
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out
}

fn parse_header(envelope: &[u8]) -> Result<(&str, usize), CryptoError> {
    if envelope.len() < 2 || envelope[0] != ENVELOPE_VERSION {
        return Err(CryptoError::Malformed);
    }
    let id_len = envelope[1] as usize;
    let header_len = 2 + id_len;
    if id_len == 0 || envelope.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let key_id =
        std::str::from_utf8(&envelope[2..header_len]).map_err(|_| CryptoError::Malformed)?;
    Ok((key_id, header_len))
}

/// The id of the key an envelope was encrypted with (without decrypting it).
pub fn envelope_key_id(envelope: &[u8]) -> Result<&str, CryptoError> {
    parse_header(envelope).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2_HEX: &str = "k2:1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn round_trip_binds_to_associated_data() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring
            .encrypt(b"tenant-a/business_token", b"EAAG-secret")
            .unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"EAAG-secret"));
        let opened = ring.decrypt(b"tenant-a/business_token", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"EAAG-secret");
        assert_eq!(
            ring.decrypt(b"tenant-b/business_token", &sealed),
            Err(CryptoError::AuthenticationFailed)
        );
    }

    #[test]
    fn macs_verify_only_for_their_key_purpose_and_message() {
        let both = Keyring::parse(&format!("{K1}\n{K2_HEX}")).unwrap();
        let (id, mac) = both.sign("acting", b"tenant-a|1790000000").unwrap();
        assert_eq!(id, "k2", "the active key signs");
        assert!(both.verify(id, "acting", b"tenant-a|1790000000", &mac));
        assert!(!both.verify(id, "acting", b"tenant-b|1790000000", &mac));
        assert!(!both.verify(id, "other", b"tenant-a|1790000000", &mac));
        assert!(!both.verify("k1", "acting", b"tenant-a|1790000000", &mac));
        assert!(!both.verify("k9", "acting", b"tenant-a|1790000000", &mac));
        assert!(!both.verify(id, "acting", b"tenant-a|1790000000", "zz"));
        // A ring that still holds the old key verifies what it signed.
        let old = Keyring::parse(K1).unwrap();
        let (id1, mac1) = old.sign("acting", b"m").unwrap();
        assert!(both.verify(id1, "acting", b"m", &mac1));
        assert!(
            !Keyring::parse(K2_HEX)
                .unwrap()
                .verify(id1, "acting", b"m", &mac1)
        );
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let ring = Keyring::parse(K1).unwrap();
        let a = ring.encrypt(b"x", b"same").unwrap();
        let b = ring.encrypt(b"x", b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.encrypt(b"row", b"secret").unwrap();
        let other = Keyring::parse("k1:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(
            other.decrypt(b"row", &sealed),
            Err(CryptoError::AuthenticationFailed)
        );
        let unrelated = Keyring::parse(K2_HEX).unwrap();
        assert_eq!(
            unrelated.decrypt(b"row", &sealed),
            Err(CryptoError::UnknownKeyId("k1".into()))
        );
    }

    #[test]
    fn tampered_header_or_body_fails() {
        let ring = Keyring::parse(&format!("{K1}\n{K2_HEX}")).unwrap();
        let mut sealed = ring.encrypt(b"row", b"secret").unwrap();
        assert_eq!(envelope_key_id(&sealed).unwrap(), "k2");
        // Relabel as k1: the header is authenticated, so this must not open.
        sealed[3] = b'1';
        assert_eq!(
            ring.decrypt(b"row", &sealed),
            Err(CryptoError::AuthenticationFailed)
        );
        let mut sealed = ring.encrypt(b"row", b"secret").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            ring.decrypt(b"row", &sealed),
            Err(CryptoError::AuthenticationFailed)
        );
        assert_eq!(
            ring.decrypt(b"row", &[1, 2, 3]),
            Err(CryptoError::Malformed)
        );
        assert_eq!(ring.decrypt(b"row", b""), Err(CryptoError::Malformed));
    }

    #[test]
    fn newest_key_encrypts_and_all_decrypt() {
        let old = Keyring::parse(K1).unwrap();
        let sealed_old = old.encrypt(b"row", b"secret").unwrap();
        let both = Keyring::parse(&format!("# rotated\n{K1}\n\n{K2_HEX}\n")).unwrap();
        assert_eq!(both.active_key_id(), "k2");
        assert_eq!(
            both.decrypt(b"row", &sealed_old).unwrap().as_slice(),
            b"secret"
        );
        let rotated = both.reencrypt(b"row", &sealed_old).unwrap().unwrap();
        assert_eq!(envelope_key_id(&rotated).unwrap(), "k2");
        assert!(both.reencrypt(b"row", &rotated).unwrap().is_none());
        // A wrong key with the active id is reported, not skipped as "already current".
        let impostor = Keyring::parse("k2:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(
            impostor.reencrypt(b"row", &rotated),
            Err(CryptoError::AuthenticationFailed)
        );
        let only_new = Keyring::parse(K2_HEX).unwrap();
        assert_eq!(
            only_new.decrypt(b"row", &rotated).unwrap().as_slice(),
            b"secret"
        );
    }

    #[test]
    fn key_file_errors_are_specific_and_never_echo_keys() {
        assert_eq!(
            Keyring::parse("# nothing\n\n").unwrap_err(),
            KeyringError::Empty
        );
        let short = Keyring::parse("k:c2hvcnQ=").unwrap_err();
        assert_eq!(
            short,
            KeyringError::BadLine {
                line: 1,
                reason: "key must be 32 bytes, as base64 or 64 hex digits"
            }
        );
        assert!(!short.to_string().contains("c2hvcnQ"));
        assert!(matches!(
            Keyring::parse("bad id:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap_err(),
            KeyringError::BadLine { line: 1, .. }
        ));
        assert_eq!(
            Keyring::parse(&format!("{K1}\n{K1}")).unwrap_err(),
            KeyringError::DuplicateId("k1".into())
        );
        let bare = Keyring::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        assert_eq!(bare.active_key_id(), "default");
        let debug = format!("{bare:?}");
        assert!(debug.contains("default") && !debug.contains("AAEC"));
    }
}
