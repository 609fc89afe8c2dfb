//! Signup states: the one-time, short-lived authority for one Embedded Signup.
//!
//! The host app, after authenticating its user, mints a state for that user's tenant with
//! `wa.begin_signup(tenant)` and puts it in the page; the browser posts it with the signup
//! code to the gateway, which calls `wa.complete_signup(state, code, …)`. The state is 32
//! random bytes; only its SHA-256 is stored, and completing a signup consumes it, so a state
//! works once, for its tenant only, and not after it expired.

use crate::error::{OrRaise, WaError, WaResult};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};

/// What a state looks like before the random part (hex of 32 bytes).
const PREFIX: &str = "wss1.";

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

fn begin(tenant: pgrx::Uuid, valid_for: Interval) -> WaResult<pgrx::JsonB> {
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant.into()])?;
    let in_range = Spi::get_one_with_args::<bool>(
        "SELECT $1::interval >= interval '1 minute' AND $1::interval <= interval '30 minutes'",
        &[valid_for.into()],
    )?
    .unwrap_or(false);
    if !in_range {
        return Err(WaError::InvalidParameter {
            message: "valid_for must be between 1 minute and 30 minutes".into(),
            detail: None,
            hint: Some(
                "A signup state only has to outlive one visit of the signup page; the default is 10 minutes."
                    .into(),
            ),
        });
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|_| WaError::Internal("no randomness for a signup state".into()))?;
    let state = zeroize::Zeroizing::new(format!("{PREFIX}{}", hex::encode(random)));
    // States of this tenant that ended more than a day ago are of no more use.
    Spi::run_with_args(
        "DELETE FROM wa.signup_states
          WHERE tenant_id = $1 AND expires_at < pg_catalog.now() - interval '1 day'",
        &[tenant.into()],
    )?;
    let mut out = Spi::get_one_with_args::<pgrx::JsonB>(
        "WITH s AS (
             INSERT INTO wa.signup_states (tenant_id, state_sha256, expires_at)
             VALUES ($1, $2, pg_catalog.now() + $3::interval)
             RETURNING tenant_id, signup_attempt_id, expires_at),
         e AS (
             INSERT INTO wa.account_events (tenant_id, kind, detail)
             SELECT tenant_id, 'signup.started',
                    pg_catalog.jsonb_build_object('signup_attempt_id', signup_attempt_id,
                                                  'expires_at', expires_at)
               FROM s)
         SELECT pg_catalog.jsonb_build_object('expires_at', expires_at,
                                              'signup_attempt_id', signup_attempt_id)
           FROM s",
        &[tenant.into(), state_hash(&state).into(), valid_for.into()],
    )?
    .ok_or_else(|| WaError::Internal("signup state not stored".into()))?;
    out.0["state"] = serde_json::Value::String(state.to_string());
    Ok(out)
}

/// Consumes a state: the tenant and attempt it was minted for, or 28000 when it is unknown,
/// expired or already used (never saying which, never echoing it).
fn consume(state: &str) -> WaResult<(pgrx::Uuid, pgrx::Uuid)> {
    let refused = || {
        WaError::InvalidAuthorization {
        message: "signup state is invalid, expired or already used".into(),
        detail: "A signup state is good for one signup, for a few minutes.".into(),
        hint: "Reload the signup page: the host application mints a new state with wa.begin_signup(tenant).".into(),
    }
    };
    if state.is_empty() || state.len() > 256 {
        return Err(refused());
    }
    let row = Spi::connect_mut(|c| -> WaResult<Option<(pgrx::Uuid, pgrx::Uuid)>> {
        let t = c.update(
            "UPDATE wa.signup_states SET consumed_at = pg_catalog.now()
              WHERE state_sha256 = $1 AND consumed_at IS NULL AND expires_at > pg_catalog.now()
              RETURNING tenant_id, signup_attempt_id",
            None,
            &[state_hash(state).into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let (tenant, attempt) = t.first().get_two::<pgrx::Uuid, pgrx::Uuid>()?;
        Ok(tenant.zip(attempt))
    })?;
    row.ok_or_else(refused)
}

fn complete(
    state: &str,
    code: &str,
    waba: Option<&str>,
    phone: Option<&str>,
) -> WaResult<pgrx::JsonB> {
    // Arguments of the wrong shape are refused before the state is spent.
    super::validate(code, waba, phone)?;
    let (tenant, attempt) = consume(state)?;
    super::exchange(tenant, code, waba, phone, Some(attempt))
}

/// Mints a one-time signup state for a tenant: what the host app hands to
/// `<whatsapp-connect state="…">`. Returns `{state, expires_at, signup_attempt_id}`; only the
/// state's SHA-256 is stored. `valid_for` is between 1 and 30 minutes.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn begin_signup(
    tenant_id: pgrx::Uuid,
    valid_for: default!(Interval, "'10 minutes'"),
) -> pgrx::JsonB {
    begin(tenant_id, valid_for).or_raise()
}

/// Completes Embedded Signup with the state the host app minted (consumed: it works once) and
/// the code the browser received, for the state's tenant: the steps of `wa.exchange_code`,
/// with the attempt recorded in `wa.signups` and the account events. SQLSTATE 28000 when the
/// state is invalid, expired or already used. For the gateway (a wa_admin member).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn complete_signup(
    state: &str,
    code: &str,
    waba_id: default!(Option<&str>, "NULL"),
    phone_number_id: default!(Option<&str>, "NULL"),
) -> pgrx::JsonB {
    complete(state, code, waba_id, phone_number_id).or_raise()
}
