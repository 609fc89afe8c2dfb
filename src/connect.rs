//! The manual connection path: `wa.connect_tenant` for a business that already has a
//! system-user token, and the decryption of a tenant's token for the extension's own use.

use crate::error::{OrRaise, WaError, WaResult};
use crate::keys;
use pgrx::prelude::*;
use serde_json::{Value, json};
use whatsapp_client::api::ApiError;
use whatsapp_client::error::ErrorClass;

pub fn require_meta_id(name: &str, value: &str) -> WaResult<()> {
    if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WaError::InvalidParameter {
            message: format!("{name} must be a numeric Meta id"),
            detail: Some(format!("got {} characters", value.chars().count())),
            hint: Some(format!(
                "{name} is the id shown in WhatsApp Manager, digits only."
            )),
        });
    }
    Ok(())
}

fn require_token(token: &str) -> WaResult<()> {
    // A Graph access token: printable ASCII, no spaces. Never echoed.
    if token.len() < 16 || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WaError::invalid(
            "access_token is not a Graph API access token",
        ));
    }
    Ok(())
}

/// Encrypts a tenant's business token bound to its row.
pub fn seal_token(tenant_id: &str, token: &str) -> WaResult<(Vec<u8>, String)> {
    let ring = keys::keyring()?;
    let sealed = ring
        .encrypt(
            &keys::credential_aad(tenant_id, "business_token"),
            token.as_bytes(),
        )
        .map_err(|e| WaError::Internal(e.to_string()))?;
    Ok((sealed, ring.active_key_id().to_string()))
}

/// The tenant's business token in plaintext, for Graph API calls made by the extension.
#[allow(dead_code)]
pub fn business_token(tenant_id: &str) -> WaResult<zeroize::Zeroizing<String>> {
    let envelope = Spi::get_one_with_args::<Vec<u8>>(
        "SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1::uuid AND kind = 'business_token'",
        &[tenant_id.into()],
    )
    .ok()
    .flatten()
    .ok_or_else(|| WaError::NotReady {
        message: format!("tenant {tenant_id} is not connected"),
        hint: "Connect it with wa.exchange_code() or wa.connect_tenant().".into(),
    })?;
    let ring = keys::keyring()?;
    let plain = ring
        .decrypt(
            &keys::credential_aad(tenant_id, "business_token"),
            &envelope,
        )
        .map_err(|e| {
            keys::decrypt_error(&format!("the business token of tenant {tenant_id}"), e)
        })?;
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| WaError::Internal("stored token is not UTF-8".into()))?;
    Ok(zeroize::Zeroizing::new(text))
}

fn connect(
    tenant_id: pgrx::Uuid,
    waba_id: &str,
    phone_number_id: &str,
    token: &str,
) -> WaResult<pgrx::JsonB> {
    require_meta_id("waba_id", waba_id)?;
    require_meta_id("phone_number_id", phone_number_id)?;
    require_token(token)?;
    let tenant = tenant_id.to_string();
    let (sealed, key_id) = seal_token(&tenant, token)?;
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant_id.into()])?;
    // The Graph API first, while this call holds no lock (nothing is written yet): a slow or
    // unreachable Graph never keeps the tenant's rows locked, and a cancel ends the call.
    let probe = probe(waba_id, phone_number_id, token)?;
    Spi::run_with_args(
        "SELECT wa._store_connection($1, $2, $3, $4, $5, 'manual', 'connected')",
        &[
            tenant_id.into(),
            waba_id.into(),
            phone_number_id.into(),
            sealed.into(),
            key_id.into(),
        ],
    )?;
    if let Some(info) = &probe.info {
        crate::signup::store_number_info(tenant_id, phone_number_id, info)?;
    }
    if probe.verification["subscribed"] == json!(true) {
        Spi::run_with_args(
            "UPDATE wa.wabas SET subscribed_at = pg_catalog.now()
              WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND waba_id OPERATOR(pg_catalog.=) $2",
            &[tenant_id.into(), waba_id.into()],
        )?;
    }
    let verification = probe.verification;
    Spi::run_with_args(
        "INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES ($1, 'connect.verification', $2)",
        &[tenant_id.into(), pgrx::JsonB(verification.clone()).into()],
    )?;
    let mut status = Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT wa.connection_status($1)",
        &[tenant_id.into()],
    )?
    .ok_or_else(|| WaError::Internal("connection status missing after connect".into()))?;
    status.0["verification"] = verification;
    Ok(status)
}

/// What the Graph API says about a connection: the number's details, and the verification.
struct Probe {
    info: Option<whatsapp_client::api::PhoneNumberInfo>,
    verification: Value,
}

/// Checks the connection against the Graph API where it is reachable: the token reaches the
/// WABA and the number is one of its numbers, and the app is subscribed to the WABA's
/// webhooks. What Graph refuses is an error, and nothing is stored; when Graph cannot be
/// reached the connection stands, and the result says so.
fn probe(waba: &str, phone: &str, token: &str) -> WaResult<Probe> {
    let graph = crate::graph::client();
    let numbers = match graph.list_phone_numbers(waba, token) {
        Ok(numbers) => numbers,
        Err(e) => {
            return Ok(Probe {
                info: None,
                verification: unreachable_or_refused("read the WABA's phone numbers", &e)?,
            });
        }
    };
    let mut numbers = numbers;
    let Some(at) = numbers.iter().position(|n| n.id.as_deref() == Some(phone)) else {
        let ids: Vec<&str> = numbers.iter().filter_map(|n| n.id.as_deref()).collect();
        return Err(WaError::InvalidParameter {
            message: format!("phone number {phone} is not in WABA {waba}"),
            detail: Some(format!("The WABA's numbers are: {}.", ids.join(", "))),
            hint: Some(
                "Pass the phone number id (not the phone number) of a number of this WABA.".into(),
            ),
        });
    };
    let info = numbers.swap_remove(at);
    let verification = match graph.subscribe_app(waba, token) {
        Ok(()) => json!({ "graph": "verified", "subscribed": true }),
        Err(e) => unreachable_or_refused("subscribe the app to the WABA's webhooks", &e)?,
    };
    Ok(Probe {
        info: Some(info),
        verification,
    })
}

fn unreachable_or_refused(step: &str, e: &ApiError) -> WaResult<Value> {
    match e.class() {
        ErrorClass::Retry | ErrorClass::Throttle(_) => Ok(json!({
            "graph": "unreachable",
            "subscribed": false,
            "step": step,
            "reason": e.to_string(),
        })),
        ErrorClass::Reauthorize => Err(WaError::InvalidAuthorization {
            message: "the Graph API refused the access token".into(),
            detail: format!("While trying to {step}: {e}"),
            hint: "Use a system-user token of the business with the whatsapp_business_management and whatsapp_business_messaging permissions.".into(),
        }),
        ErrorClass::Permanent => Err(WaError::InvalidParameter {
            message: format!("the Graph API refused to {step}"),
            detail: Some(e.to_string()),
            hint: Some("Check that the WABA id is right and that the token has access to it.".into()),
        }),
    }
}

/// Connects a tenant with an existing system-user token (no Embedded Signup): stores the
/// token encrypted, links the WABA and the number, verifies them and subscribes the app to the
/// WABA's webhooks where the Graph API is reachable, and returns the connection status with
/// `verification`.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn connect_tenant(
    tenant_id: pgrx::Uuid,
    waba_id: &str,
    phone_number_id: &str,
    access_token: &str,
) -> pgrx::JsonB {
    connect(tenant_id, waba_id, phone_number_id, access_token).or_raise()
}
