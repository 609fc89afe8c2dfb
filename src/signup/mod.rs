//! Embedded Signup: code exchange → confirm access to the WABA → subscribe to its webhooks →
//! register the number → fetch its details → connected.
//!
//! Each step's completion is recorded in `wa.signups`; calling `wa.exchange_code` again after
//! a failure resumes at the step that failed. The business token never passes through SQL
//! text: it comes from the Graph API into this module and goes into `wa.credentials`
//! encrypted. A failing step does not raise: it is recorded (tenant state `error`, the Graph
//! error in `last_error`) and the connection status is returned, so the record survives.

use crate::connect::{business_token, require_meta_id, seal_token};
use crate::error::{OrRaise, WaError, WaResult};
use crate::{app_config, guc, keys, send};
use pgrx::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use whatsapp_client::api::{ApiError, GraphClient, GraphConfig};

struct Progress {
    code_sha256: Option<String>,
    waba: Option<String>,
    phone: Option<String>,
    token: bool,
    access: bool,
    subscribed: bool,
    registered: bool,
    info: bool,
    completed: bool,
}

/// A Graph API client from the `wa.*` settings, for calls made inside a SQL call.
pub(crate) fn client() -> GraphClient {
    let url =
        guc::string(&guc::GRAPH_API_URL).unwrap_or_else(|| "https://graph.facebook.com".into());
    let version = guc::string(&guc::GRAPH_API_VERSION).unwrap_or_else(|| "v25.0".into());
    let timeout = Duration::from_millis(guc::HTTP_TIMEOUT_MS.get().max(100) as u64);
    GraphClient::new(
        GraphConfig::new(url)
            .with_api_version(version)
            .with_timeout(timeout),
    )
}

fn load(tenant: pgrx::Uuid) -> WaResult<Progress> {
    Spi::run_with_args(
        "INSERT INTO wa.signups (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING",
        &[tenant.into()],
    )?;
    Spi::connect_mut(|c| {
        let row = c
            .update(
                "SELECT code_sha256, waba_id, phone_number_id, token_at IS NOT NULL,
                        access_checked_at IS NOT NULL, subscribed_at IS NOT NULL,
                        registered_at IS NOT NULL, info_at IS NOT NULL, completed_at IS NOT NULL
                   FROM wa.signups WHERE tenant_id = $1 FOR UPDATE",
                None,
                &[tenant.into()],
            )?
            .first();
        Ok(Progress {
            code_sha256: row.get(1)?,
            waba: row.get(2)?,
            phone: row.get(3)?,
            token: row.get(4)?.unwrap_or(false),
            access: row.get(5)?.unwrap_or(false),
            subscribed: row.get(6)?.unwrap_or(false),
            registered: row.get(7)?.unwrap_or(false),
            info: row.get(8)?.unwrap_or(false),
            completed: row.get(9)?.unwrap_or(false),
        })
    })
}

fn mark(tenant: pgrx::Uuid, column: &str) -> WaResult<()> {
    // `column` is one of our own constant column names, never input.
    Spi::run_with_args(
        &format!(
            "UPDATE wa.signups SET {column} = pg_catalog.now(), updated_at = pg_catalog.now(), last_error = NULL
              WHERE tenant_id = $1"
        ),
        &[tenant.into()],
    )?;
    Spi::run_with_args(
        "INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES ($1, $2, '{}')",
        &[tenant.into(), format!("signup.{column}").into()],
    )?;
    Ok(())
}

/// Records a failed step: tenant state `error` with the Graph error.
fn fail(tenant: pgrx::Uuid, step: &str, e: &ApiError) -> WaResult<()> {
    let mut detail = e.to_json();
    detail["step"] = json!(step);
    let expired = e.graph_error().is_some_and(|g| {
        g.code == Some(100) && matches!(g.error_subcode, Some(36007) | Some(36009))
    });
    detail["message"] = json!(if expired {
        "the signup code has expired or was already used (codes live about 30 seconds): start the signup again".to_string()
    } else {
        format!("{step} failed: {e}")
    });
    record_failure(tenant, detail)
}

fn record_failure(tenant: pgrx::Uuid, detail: Value) -> WaResult<()> {
    Spi::run_with_args(
        "UPDATE wa.signups SET last_error = $2, updated_at = pg_catalog.now() WHERE tenant_id = $1",
        &[tenant.into(), pgrx::JsonB(detail.clone()).into()],
    )?;
    Spi::run_with_args(
        "WITH t AS (UPDATE wa.tenants SET state = 'error', last_error = $2, updated_at = pg_catalog.now()
                     WHERE tenant_id = $1 RETURNING tenant_id)
         INSERT INTO wa.account_events (tenant_id, kind, detail) SELECT tenant_id, 'signup.failed', $2 FROM t",
        &[tenant.into(), pgrx::JsonB(detail).into()],
    )?;
    notify(tenant, "error")
}

fn notify(tenant: pgrx::Uuid, state: &str) -> WaResult<()> {
    Spi::run_with_args(
        "SELECT pg_catalog.pg_notify('wa_events', json_build_object('kind', 'connection.changed',
                'state', $2::text, 'tenant_id', $1, 'conversation_id', NULL, 'message_id', NULL)::text)",
        &[tenant.into(), state.into()],
    )?;
    Ok(())
}

fn status(tenant: pgrx::Uuid) -> WaResult<pgrx::JsonB> {
    Spi::get_one_with_args::<pgrx::JsonB>("SELECT wa.connection_status($1)", &[tenant.into()])?
        .ok_or_else(|| WaError::Internal("no connection status".into()))
}

fn random_pin() -> WaResult<String> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|_| WaError::Internal("no randomness for a PIN".into()))?;
    Ok(format!("{:06}", u32::from_le_bytes(b) % 1_000_000))
}

fn exchange(
    tenant: pgrx::Uuid,
    code: &str,
    waba: Option<&str>,
    phone: Option<&str>,
) -> WaResult<pgrx::JsonB> {
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant.into()])?;
    if code.trim().is_empty() || code.len() > 2048 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WaError::invalid("code is not an Embedded Signup code"));
    }
    if let Some(w) = waba {
        require_meta_id("waba_id", w)?;
    }
    if let Some(p) = phone {
        require_meta_id("phone_number_id", p)?;
    }
    let code_hash = hex::encode(Sha256::digest(code.as_bytes()));
    let mut p = load(tenant)?;
    if p.completed && p.code_sha256.as_deref() != Some(&code_hash) {
        // A new signup for an already connected tenant (another number, a reconnect).
        Spi::run_with_args(
            "UPDATE wa.signups SET token_at = NULL, access_checked_at = NULL, subscribed_at = NULL,
                    registered_at = NULL, info_at = NULL, completed_at = NULL, last_error = NULL,
                    waba_id = NULL, phone_number_id = NULL
              WHERE tenant_id = $1",
            &[tenant.into()],
        )?;
        p = load(tenant)?;
    }
    if !p.token && p.code_sha256.as_deref() != Some(&code_hash) {
        Spi::run_with_args(
            "UPDATE wa.signups SET code_sha256 = $2 WHERE tenant_id = $1",
            &[tenant.into(), code_hash.as_str().into()],
        )?;
    }
    // The browser's session info names the WABA and number; keep what we learn.
    let waba = waba.map(str::to_owned).or(p.waba.clone());
    let phone = phone.map(str::to_owned).or(p.phone.clone());
    Spi::run_with_args(
        "UPDATE wa.signups SET waba_id = $2, phone_number_id = $3, updated_at = pg_catalog.now() WHERE tenant_id = $1",
        &[tenant.into(), waba.clone().into(), phone.clone().into()],
    )?;
    Spi::run_with_args(
        "UPDATE wa.tenants SET state = 'pending', updated_at = pg_catalog.now()
          WHERE tenant_id = $1 AND state IN ('not_connected', 'disconnected', 'error')",
        &[tenant.into()],
    )?;
    let graph = client();
    let app_id = Spi::get_one::<String>("SELECT app_id FROM wa.app_config")?.ok_or_else(|| WaError::NotReady {
        message: "the Meta app is not configured".into(),
        hint: "An administrator must call wa.configure_app(app_id, app_secret, webhook_verify_token, config_id).".into(),
    })?;
    let secret = app_config::app_secret("app_secret")?;
    let secret = String::from_utf8(secret.to_vec())
        .map_err(|_| WaError::Internal("app secret is not UTF-8".into()))?;

    // 1. The code (valid for about 30 s) for the business token.
    if !p.token {
        match graph.exchange_code(&app_id, &secret, code, None) {
            Ok(t) => {
                let (sealed, key_id) = seal_token(&tenant.to_string(), t.access_token.expose())?;
                Spi::run_with_args(
                    "INSERT INTO wa.credentials (tenant_id, kind, ciphertext, key_id, source, expires_at)
                     VALUES ($1, 'business_token', $2, $3, 'embedded_signup',
                             CASE WHEN $4::bigint > 0 THEN pg_catalog.now() + $4::bigint * interval '1 second' END)
                     ON CONFLICT (tenant_id, kind) DO UPDATE
                        SET ciphertext = EXCLUDED.ciphertext, key_id = EXCLUDED.key_id,
                            source = EXCLUDED.source, expires_at = EXCLUDED.expires_at,
                            updated_at = pg_catalog.now()",
                    &[tenant.into(), sealed.into(), key_id.into(), t.expires_in.unwrap_or(0).into()],
                )?;
                mark(tenant, "token_at")?;
            }
            Err(e) => {
                fail(tenant, "token_exchange", &e)?;
                return status(tenant);
            }
        }
    }
    let token = business_token(&tenant.to_string())?;

    // 2. Confirm the token reaches the WABA (and find it and the number if not given).
    let mut waba = waba;
    let mut phone = phone;
    if !p.access {
        if waba.is_none() {
            match graph.debug_token(&app_id, &secret, &token) {
                Ok(info) => {
                    waba = info
                        .target_ids("whatsapp_business_management")
                        .first()
                        .map(|s| s.to_string())
                }
                Err(e) => {
                    fail(tenant, "debug_token", &e)?;
                    return status(tenant);
                }
            }
        }
        let Some(w) = waba.clone() else {
            record_failure(
                tenant,
                json!({"step": "access", "message": "the token grants access to no WhatsApp Business Account"}),
            )?;
            return status(tenant);
        };
        match graph.list_phone_numbers(&w, &token) {
            Ok(numbers) => {
                let ids: Vec<String> = numbers.iter().filter_map(|n| n.id.clone()).collect();
                if let Some(p) = &phone
                    && !ids.contains(p)
                {
                    record_failure(
                        tenant,
                        json!({"step": "access", "message": format!("phone number {p} is not in WABA {w}")}),
                    )?;
                    return status(tenant);
                }
                if phone.is_none() && ids.len() == 1 {
                    phone = ids.first().cloned();
                }
            }
            Err(e) => {
                fail(tenant, "access", &e)?;
                return status(tenant);
            }
        }
        let (sealed, key_id) = seal_token(&tenant.to_string(), &token)?;
        Spi::run_with_args(
            "SELECT wa._store_connection($1, $2, $3, $4, $5, 'embedded_signup', 'pending')",
            &[
                tenant.into(),
                w.as_str().into(),
                phone.clone().into(),
                sealed.into(),
                key_id.into(),
            ],
        )?;
        Spi::run_with_args(
            "UPDATE wa.signups SET waba_id = $2, phone_number_id = $3 WHERE tenant_id = $1",
            &[tenant.into(), w.as_str().into(), phone.clone().into()],
        )?;
        mark(tenant, "access_checked_at")?;
    }
    let Some(waba) = waba else {
        return Err(WaError::Internal("signup lost its WABA".into()));
    };

    // 3. Webhooks of the WABA to our app.
    if !p.subscribed {
        match graph.subscribe_app(&waba, &token) {
            Ok(()) => {
                Spi::run_with_args(
                    "UPDATE wa.wabas SET subscribed_at = pg_catalog.now() WHERE tenant_id = $1 AND waba_id = $2",
                    &[tenant.into(), waba.as_str().into()],
                )?;
                mark(tenant, "subscribed_at")?;
            }
            Err(e) => {
                fail(tenant, "subscribe", &e)?;
                return status(tenant);
            }
        }
    }

    // FINISH_ONLY_WABA: connected as far as it goes; the number comes later.
    let Some(phone) = phone else {
        Spi::run_with_args(
            "UPDATE wa.tenants SET state = 'pending', last_error = NULL, updated_at = pg_catalog.now() WHERE tenant_id = $1",
            &[tenant.into()],
        )?;
        mark(tenant, "completed_at")?;
        notify(tenant, "pending")?;
        return status(tenant);
    };

    // 4. Register the number for Cloud API with a two-step verification PIN we keep.
    if !p.registered {
        let pin = random_pin()?;
        let ring = keys::keyring()?;
        let sealed = ring
            .encrypt(
                &keys::credential_aad(&tenant.to_string(), "registration_pin"),
                pin.as_bytes(),
            )
            .map_err(|e| WaError::Internal(e.to_string()))?;
        match graph.register_phone(&phone, &token, &pin) {
            Ok(()) => {
                Spi::run_with_args(
                    "INSERT INTO wa.credentials (tenant_id, kind, ciphertext, key_id, source)
                     VALUES ($1, 'registration_pin', $2, $3, 'embedded_signup')
                     ON CONFLICT (tenant_id, kind) DO UPDATE
                        SET ciphertext = EXCLUDED.ciphertext, key_id = EXCLUDED.key_id, updated_at = pg_catalog.now()",
                    &[tenant.into(), sealed.into(), ring.active_key_id().into()],
                )?;
                Spi::run_with_args(
                    "UPDATE wa.phone_numbers SET registration_status = 'registered', registered_at = pg_catalog.now(),
                            updated_at = pg_catalog.now()
                      WHERE tenant_id = $1 AND phone_number_id = $2",
                    &[tenant.into(), phone.as_str().into()],
                )?;
                mark(tenant, "registered_at")?;
            }
            Err(e) => {
                fail(tenant, "register", &e)?;
                return status(tenant);
            }
        }
    }

    // 5. What the number looks like now.
    if !p.info {
        match graph.phone_number_info(&phone, &token) {
            Ok(n) => {
                store_number_info(tenant, &phone, &n)?;
                mark(tenant, "info_at")?;
            }
            Err(e) => {
                fail(tenant, "phone_number_info", &e)?;
                return status(tenant);
            }
        }
    }

    Spi::run_with_args(
        "UPDATE wa.tenants SET state = 'connected', last_error = NULL, updated_at = pg_catalog.now() WHERE tenant_id = $1",
        &[tenant.into()],
    )?;
    Spi::run_with_args("SELECT wa._release_held($1)", &[tenant.into()])?;
    send::wake::on_commit();
    mark(tenant, "completed_at")?;
    notify(tenant, "connected")?;
    status(tenant)
}

/// Stores what the Graph API says about a number (display number, name, quality, limits).
pub(crate) fn store_number_info(
    tenant: pgrx::Uuid,
    phone: &str,
    n: &whatsapp_client::api::PhoneNumberInfo,
) -> WaResult<()> {
    let level = n.throughput.as_ref().and_then(|t| t.level.clone());
    Spi::run_with_args(
        "UPDATE wa.phone_numbers
            SET display_phone_number = $3, verified_name = $4,
                quality_rating = CASE WHEN $5 IN ('GREEN','YELLOW','RED','UNKNOWN','NA') THEN $5 END,
                messaging_limit = $6, throughput_level = $7,
                rate_limit_per_sec = CASE WHEN $7 = 'HIGH' THEN 1000 ELSE rate_limit_per_sec END,
                name_status = $8, code_verification_status = $9, updated_at = pg_catalog.now()
          WHERE tenant_id = $1 AND phone_number_id = $2",
        &[
            tenant.into(),
            phone.into(),
            n.display_phone_number.clone().into(),
            n.verified_name.clone().into(),
            n.quality_rating.clone().into(),
            n.messaging_limit_tier.clone().into(),
            level.into(),
            n.name_status.clone().into(),
            n.code_verification_status.clone().into(),
        ],
    )?;
    Ok(())
}

/// Completes Embedded Signup for a tenant with the code the front end received: exchanges it
/// for the business token (stored encrypted), checks access to the WABA, subscribes the app to
/// its webhooks, registers the number and fetches its details. Safe to call again: finished
/// steps are not redone. Returns the connection status (state `error` and `last_error` when a
/// step failed).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn exchange_code(
    tenant_id: pgrx::Uuid,
    code: &str,
    waba_id: default!(Option<&str>, "NULL"),
    phone_number_id: default!(Option<&str>, "NULL"),
) -> pgrx::JsonB {
    exchange(tenant_id, code, waba_id, phone_number_id).or_raise()
}
