//! Webhook signatures: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, keyed
//! with the Meta app secret.
//!
//! The MAC is computed over the exact bytes Meta sent; a body that was parsed and re-serialised
//! (different spacing, key order or escapes) will not verify, so callers must keep the raw body.
//! Meta sends lower-case hex; upper-case hex is accepted too, because hex case carries no
//! information and the comparison is on the decoded bytes (still constant-time).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";
const MAC_LEN: usize = 32;

/// Why a signature did not verify. Never carries the secret, the body or the expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook signature is missing")]
    Missing,
    #[error("webhook signature must start with \"sha256=\"")]
    BadPrefix,
    #[error("webhook signature is not 64 hexadecimal digits")]
    BadHex,
    #[error("webhook signature does not match the body")]
    Mismatch,
    #[error("app secret is empty")]
    EmptySecret,
}

/// Verifies `header` (the `X-Hub-Signature-256` value; `None` or blank when absent) for `body`.
pub fn verify(app_secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    if app_secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let hex_part = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::BadPrefix)?;
    if hex_part.len() != MAC_LEN * 2 {
        return Err(SignatureError::BadHex);
    }
    let mut given = [0u8; MAC_LEN];
    hex::decode_to_slice(hex_part, &mut given).map_err(|_| SignatureError::BadHex)?;
    let mut mac =
        HmacSha256::new_from_slice(app_secret).map_err(|_| SignatureError::EmptySecret)?;
    mac.update(body);
    // verify_slice compares in constant time
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body`: `sha256=` + lower-case hex.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, including empty, so this cannot fail
    let mut mac = match HmacSha256::new_from_slice(app_secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + MAC_LEN * 2);
    out.push_str(PREFIX);
    out.push_str(&hex::encode(tag));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret-123";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signed_body_verifies() {
        let sig = sign(SECRET, BODY);
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert_eq!(verify(SECRET, BODY, Some(&sig)), Ok(()));
        // surrounding whitespace from a header value is tolerated
        assert_eq!(verify(SECRET, BODY, Some(&format!(" {sig} "))), Ok(()));
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let sig = sign(SECRET, BODY);
        let upper = format!("sha256={}", sig[7..].to_uppercase());
        assert_eq!(verify(SECRET, BODY, Some(&upper)), Ok(()));
    }

    #[test]
    fn reserialised_body_fails() {
        let sig = sign(SECRET, BODY);
        let spaced = br#"{"object": "whatsapp_business_account", "entry": []}"#;
        assert_eq!(
            verify(SECRET, spaced, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        let v: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_eq!(
            verify(SECRET, &pretty, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn flipped_byte_fails() {
        let sig = sign(SECRET, BODY);
        let mut body = BODY.to_vec();
        body[10] ^= 0x01;
        assert_eq!(
            verify(SECRET, &body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        // and a flipped digit in the signature
        let mut bad = sig.into_bytes();
        bad[20] = if bad[20] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(
            verify(SECRET, BODY, Some(&bad)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_secret_fails() {
        let sig = sign(b"other-secret", BODY);
        assert_eq!(
            verify(SECRET, BODY, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_body_signs_and_verifies() {
        let sig = sign(SECRET, b"");
        assert_eq!(verify(SECRET, b"", Some(&sig)), Ok(()));
        assert_eq!(
            verify(SECRET, b" ", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_classified() {
        let sig = sign(SECRET, BODY);
        assert_eq!(verify(SECRET, BODY, None), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, BODY, Some("")), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, BODY, Some("  ")),
            Err(SignatureError::Missing)
        );
        let sha1 = format!("sha1={}", &sig[7..47]);
        assert_eq!(
            verify(SECRET, BODY, Some(&sha1)),
            Err(SignatureError::BadPrefix)
        );
        assert_eq!(
            verify(SECRET, BODY, Some(&sig[7..])),
            Err(SignatureError::BadPrefix)
        );
        assert_eq!(
            verify(SECRET, BODY, Some(&format!("SHA256={}", &sig[7..]))),
            Err(SignatureError::BadPrefix)
        );
        assert_eq!(
            verify(SECRET, BODY, Some("sha256=abc")),
            Err(SignatureError::BadHex)
        );
        let not_hex = format!("sha256={}", "zz".repeat(32));
        assert_eq!(
            verify(SECRET, BODY, Some(&not_hex)),
            Err(SignatureError::BadHex)
        );
        let too_long = format!("{sig}00");
        assert_eq!(
            verify(SECRET, BODY, Some(&too_long)),
            Err(SignatureError::BadHex)
        );
        assert_eq!(
            verify(b"", BODY, Some(&sig)),
            Err(SignatureError::EmptySecret)
        );
    }

    #[test]
    fn errors_never_contain_the_secret_or_mac() {
        let sig = sign(SECRET, BODY);
        for e in [
            verify(SECRET, b"x", Some(&sig)).unwrap_err(),
            verify(SECRET, BODY, Some("sha256=zz")).unwrap_err(),
        ] {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("app-secret"));
            assert!(!text.contains(&sig[7..]));
        }
    }
}
