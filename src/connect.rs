//! The manual connection path: `wa.connect_tenant` for a business that already has a
//! system-user token, and the decryption of a tenant's token for the extension's own use.

use crate::error::{OrRaise, WaError, WaResult};
use crate::keys;
use pgrx::prelude::*;

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
    Spi::get_one_with_args::<pgrx::JsonB>("SELECT wa.connection_status($1)", &[tenant_id.into()])?
        .ok_or_else(|| WaError::Internal("connection status missing after connect".into()))
}

/// Connects a tenant with an existing system-user token (no Embedded Signup): stores the
/// token encrypted, links the WABA and the number, and returns the connection status.
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
