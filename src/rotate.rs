//! `wa.rotate_key()`: re-encrypts every stored secret under the newest key in the key file.

use crate::error::{OrRaise, WaResult};
use crate::keys;
use pgrx::prelude::*;

fn rotate() -> WaResult<pgrx::JsonB> {
    let ring = keys::keyring_fresh()?;
    let mut rotated = 0i64;
    let mut current = 0i64;
    Spi::connect_mut(|client| -> WaResult<()> {
        // `update` because FOR UPDATE needs a read-write SPI call.
        let rows = client.update(
            "SELECT tenant_id::text, kind, ciphertext FROM wa.credentials FOR UPDATE",
            None,
            &[],
        )?;
        let mut updates = Vec::new();
        for row in rows {
            let tenant: String = row.get(1)?.unwrap_or_default();
            let kind: String = row.get(2)?.unwrap_or_default();
            let envelope: Vec<u8> = row.get(3)?.unwrap_or_default();
            let aad = keys::credential_aad(&tenant, &kind);
            match ring.reencrypt(&aad, &envelope) {
                Ok(Some(fresh)) => updates.push((tenant, kind, fresh)),
                Ok(None) => current += 1,
                Err(e) => {
                    return Err(keys::decrypt_error(
                        &format!("the {kind} of tenant {tenant}"),
                        e,
                    ));
                }
            }
        }
        for (tenant, kind, fresh) in updates {
            client.update(
                "UPDATE wa.credentials SET ciphertext = $3, key_id = $4, updated_at = pg_catalog.now()
                  WHERE tenant_id = $1::uuid AND kind = $2",
                None,
                &[tenant.into(), kind.into(), fresh.into(), ring.active_key_id().into()],
            )?;
            rotated += 1;
        }
        let app = client.update(
            "SELECT app_secret_enc, verify_token_enc FROM wa.app_config FOR UPDATE",
            None,
            &[],
        )?;
        if let Some(row) = app.into_iter().next() {
            let mut fresh_cols: Vec<Vec<u8>> = Vec::new();
            for (ordinal, column) in [(1usize, "app_secret"), (2usize, "verify_token")] {
                let envelope: Vec<u8> = row.get(ordinal)?.unwrap_or_default();
                let aad = keys::app_config_aad(column);
                match ring.reencrypt(&aad, &envelope) {
                    Ok(Some(fresh)) => {
                        fresh_cols.push(fresh);
                        rotated += 1;
                    }
                    Ok(None) => {
                        fresh_cols.push(envelope);
                        current += 1;
                    }
                    Err(e) => return Err(keys::decrypt_error(&format!("the app's {column}"), e)),
                }
            }
            if let [secret, token] = fresh_cols.as_slice() {
                client.update(
                    "UPDATE wa.app_config SET app_secret_enc = $1, verify_token_enc = $2",
                    None,
                    &[secret.clone().into(), token.clone().into()],
                )?;
            }
        }
        Ok(())
    })?;
    Ok(pgrx::JsonB(serde_json::json!({
        "key_id": ring.active_key_id(),
        "reencrypted": rotated,
        "already_current": current,
    })))
}

/// Re-encrypts every secret under the newest key of `wa.key_file`, after which older keys can
/// be removed from the file. Returns counts; safe to run again.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_key() -> pgrx::JsonB {
    rotate().or_raise()
}
