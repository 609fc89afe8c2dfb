//! The signup `state`: a short-lived token the host app mints for one tenant, so the browser
//! never chooses which tenant a signup code is exchanged for.
//!
//! Format: `v1.<tenant uuid>.<expiry unix seconds>.<hex HMAC-SHA256(secret, "v1.<tenant>.<expiry>")>`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("malformed signup state")]
    Malformed,
    #[error("signup state signature does not match")]
    BadSignature,
    #[error("signup state has expired")]
    Expired,
    #[error("signup state lives longer than allowed")]
    TooLongLived,
}

fn mac(secret: &[u8], payload: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(payload.as_bytes());
    m
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A state for `tenant` that expires `ttl` from now.
pub fn mint_state(secret: &[u8], tenant: Uuid, ttl: Duration) -> String {
    mint_state_at(secret, tenant, now_unix().saturating_add(ttl.as_secs()))
}

/// A state for `tenant` expiring at `expiry` (unix seconds).
pub fn mint_state_at(secret: &[u8], tenant: Uuid, expiry: u64) -> String {
    let payload = format!("v1.{}.{}", tenant.hyphenated(), expiry);
    let tag = hex::encode(mac(secret, &payload).finalize().into_bytes());
    format!("{payload}.{tag}")
}

/// The tenant a state was minted for, if it is authentic, unexpired and not longer-lived
/// than `max_ttl`.
pub fn verify_state(secret: &[u8], state: &str, max_ttl: Duration) -> Result<Uuid, StateError> {
    verify_state_at(secret, state, max_ttl, now_unix())
}

pub fn verify_state_at(
    secret: &[u8],
    state: &str,
    max_ttl: Duration,
    now: u64,
) -> Result<Uuid, StateError> {
    if state.len() > 256 {
        return Err(StateError::Malformed);
    }
    let mut parts = state.split('.');
    let (Some(version), Some(tenant), Some(expiry), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(StateError::Malformed);
    };
    if version != "v1" {
        return Err(StateError::Malformed);
    }
    let tag = hex::decode(tag).map_err(|_| StateError::Malformed)?;
    let Some((payload, _)) = state.rsplit_once('.') else {
        return Err(StateError::Malformed);
    };
    // Check the MAC before trusting anything else in the token.
    mac(secret, payload)
        .verify_slice(&tag)
        .map_err(|_| StateError::BadSignature)?;
    let tenant = Uuid::parse_str(tenant).map_err(|_| StateError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| StateError::Malformed)?;
    if expiry <= now {
        return Err(StateError::Expired);
    }
    if expiry - now > max_ttl.as_secs() {
        return Err(StateError::TooLongLived);
    }
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const DAY: Duration = Duration::from_secs(86_400);

    fn tenant() -> Uuid {
        Uuid::parse_str("6f1c2a4e-93b1-4d0e-a7f2-2b8c1d9e0f11").expect("uuid")
    }

    #[test]
    fn minted_state_verifies_to_its_tenant() {
        let s = mint_state_at(SECRET, tenant(), 1_000_600);
        assert!(s.starts_with("v1.6f1c2a4e-93b1-4d0e-a7f2-2b8c1d9e0f11.1000600."));
        assert_eq!(verify_state_at(SECRET, &s, DAY, 1_000_000), Ok(tenant()));
    }

    #[test]
    fn documented_formula_matches() {
        // The README's shell recipe: printf %s "v1.$T.$E" | openssl dgst -sha256 -hmac "$S"
        let s = mint_state_at(b"secret-secret-secret", tenant(), 2_000_000_000);
        assert_eq!(
            s,
            "v1.6f1c2a4e-93b1-4d0e-a7f2-2b8c1d9e0f11.2000000000.2e8542c8b0ba7bc3480640452d92f8bee4c4a63a54a519945c1440c8431131b7"
        );
    }

    #[test]
    fn expired_state_is_refused() {
        let s = mint_state_at(SECRET, tenant(), 1_000_000);
        assert_eq!(
            verify_state_at(SECRET, &s, DAY, 1_000_000),
            Err(StateError::Expired)
        );
    }

    #[test]
    fn state_for_another_tenant_is_forged() {
        let s = mint_state_at(SECRET, tenant(), 1_000_600);
        let forged = s.replace("6f1c2a4e", "7f1c2a4e");
        assert_eq!(
            verify_state_at(SECRET, &forged, DAY, 1_000_000),
            Err(StateError::BadSignature)
        );
    }

    #[test]
    fn extended_expiry_is_forged() {
        let s = mint_state_at(SECRET, tenant(), 1_000_600);
        let forged = s.replace(".1000600.", ".9000600.");
        assert_eq!(
            verify_state_at(SECRET, &forged, DAY, 1_000_000),
            Err(StateError::BadSignature)
        );
    }

    #[test]
    fn other_secret_is_refused() {
        let s = mint_state_at(b"another secret, also long", tenant(), 1_000_600);
        assert_eq!(
            verify_state_at(SECRET, &s, DAY, 1_000_000),
            Err(StateError::BadSignature)
        );
    }

    #[test]
    fn too_long_lived_state_is_refused() {
        let s = mint_state_at(SECRET, tenant(), 1_000_000 + 2 * 86_400);
        assert_eq!(
            verify_state_at(SECRET, &s, DAY, 1_000_000),
            Err(StateError::TooLongLived)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for s in [
            "",
            "v1",
            "v1.a.b.c",
            "v2.x.1.00",
            "v1.6f1c2a4e-93b1-4d0e-a7f2-2b8c1d9e0f11.1.zz",
            "v1.a.b.c.d",
        ] {
            assert_eq!(
                verify_state_at(SECRET, s, DAY, 0),
                Err(StateError::Malformed),
                "{s:?}"
            );
        }
    }
}
