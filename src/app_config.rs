//! The Technology Provider's Meta app: `wa.configure_app`.

use crate::error::{OrRaise, WaError, WaResult};
use crate::keys;
use pgrx::prelude::*;

fn require_digits(name: &str, value: &str) -> WaResult<()> {
    if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WaError::invalid_with_hint(
            format!("{name} must be a numeric Meta id"),
            format!("Copy {name} from the Meta app dashboard."),
        ));
    }
    Ok(())
}

fn require_secret(name: &str, value: &str) -> WaResult<()> {
    // The value itself is never echoed: it is a secret.
    if value.trim().is_empty() || value.len() > 512 {
        return Err(WaError::invalid(format!(
            "{name} must be a non-empty string of at most 512 characters"
        )));
    }
    Ok(())
}

fn configure(app_id: &str, app_secret: &str, verify_token: &str, config_id: &str) -> WaResult<()> {
    require_digits("app_id", app_id)?;
    require_secret("app_secret", app_secret)?;
    require_secret("webhook_verify_token", verify_token)?;
    require_digits("config_id", config_id)?;
    let ring = keys::keyring()?;
    let secret = ring
        .encrypt(&keys::app_config_aad("app_secret"), app_secret.as_bytes())
        .map_err(|e| WaError::Internal(e.to_string()))?;
    let token = ring
        .encrypt(
            &keys::app_config_aad("verify_token"),
            verify_token.as_bytes(),
        )
        .map_err(|e| WaError::Internal(e.to_string()))?;
    Spi::run_with_args(
        "INSERT INTO wa.app_config (app_id, app_secret_enc, verify_token_enc, config_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (singleton) DO UPDATE
            SET app_id = EXCLUDED.app_id, app_secret_enc = EXCLUDED.app_secret_enc,
                verify_token_enc = EXCLUDED.verify_token_enc, config_id = EXCLUDED.config_id,
                database_name = COALESCE(wa.app_config.database_name, EXCLUDED.database_name),
                updated_at = pg_catalog.now()",
        &[app_id.into(), secret.into(), token.into(), config_id.into()],
    )?;
    Ok(())
}

/// Stores the Meta app's id, secret, webhook verify token and Embedded Signup configuration
/// id. The secret and the verify token are encrypted before they reach the table.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn configure_app(app_id: &str, app_secret: &str, webhook_verify_token: &str, config_id: &str) {
    configure(app_id, app_secret, webhook_verify_token, config_id).or_raise()
}

fn not_configured() -> WaError {
    WaError::NotReady {
        message: "the Meta app is not configured".into(),
        hint: "An administrator must call wa.configure_app(app_id, app_secret, webhook_verify_token, config_id).".into(),
    }
}

/// The Meta app's id, or 55000 when the app is not configured.
pub fn app_id() -> WaResult<String> {
    Spi::get_one::<String>("SELECT app_id FROM wa.app_config")
        .ok()
        .flatten()
        .ok_or_else(not_configured)
}

/// Decrypts one of the app's secrets. Only for use inside the extension: never exposed to SQL.
#[allow(dead_code)]
pub fn app_secret(column: &str) -> WaResult<zeroize::Zeroizing<Vec<u8>>> {
    let sql = match column {
        "app_secret" => "SELECT app_secret_enc FROM wa.app_config",
        "verify_token" => "SELECT verify_token_enc FROM wa.app_config",
        _ => return Err(WaError::Internal(format!("unknown app secret {column}"))),
    };
    let envelope: Vec<u8> = Spi::get_one::<Vec<u8>>(sql)
        .ok()
        .flatten()
        .ok_or_else(not_configured)?;
    let ring = keys::keyring()?;
    ring.decrypt(&keys::app_config_aad(column), &envelope)
        .map_err(|e| keys::decrypt_error(&format!("the app's {column}"), e))
}
