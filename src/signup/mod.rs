//! Embedded Signup: code exchange → confirm access to the WABA → store the connection →
//! subscribe to its webhooks → register the number → fetch its details → connected.
//!
//! The steps run in a background worker of their own (runner.rs), each as a transaction
//! that commits before the next Graph API call, so no lock is held across a call and nothing
//! Meta has done is lost to a rollback: the token is stored the moment the code is exchanged,
//! the connection (routes included) before the WABA is subscribed, and the registration PIN
//! before the number is registered. Each step's completion is recorded in `wa.signups`;
//! calling `wa.exchange_code` (or `wa.complete_signup` with a new state) again after a
//! failure, a cancel or a crash resumes at the step that did not finish. The business token
//! never passes through SQL text: it comes from the Graph API into this module and goes into
//! `wa.credentials` encrypted. A failing step does not raise: it is recorded (the Graph error
//! in `wa.signups.last_error` and a `signup.failed` account event) and the connection status
//! is returned.
//!
//! A tenant that is not connected when its signup starts goes `pending`, `error` when a step
//! fails, and `connected` at the end. A re-signup of a connected (or `action_required`)
//! tenant changes nothing of the current connection until every step succeeded: the new token
//! and PIN are kept aside (`signup_token`, `signup_pin`), the WABA, numbers and routes are not
//! touched and the tenant's state stays as it is, so the worker keeps sending with the old
//! token. Only at the end are they promoted and the connection stored.

mod runner;
mod state;

pub use runner::init_shmem;

use crate::connect::{require_meta_id, seal_token};
use crate::error::{OrRaise, WaError, WaResult};
use crate::{app_config, keys, send};
use pgrx::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use whatsapp_client::api::ApiError;

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
    keeps_connection: bool,
}

/// One call's signup: the tenant, the attempt (the signup state consumed by
/// `wa.complete_signup`; none for `wa.exchange_code`) and whether the current connection is
/// kept until the signup completes.
#[derive(Clone, Copy)]
struct Run {
    tenant: pgrx::Uuid,
    attempt: Option<pgrx::Uuid>,
    keeps_connection: bool,
}

impl Run {
    /// Where the new token goes: the live credential, or aside until the signup completes.
    fn token_kind(&self) -> &'static str {
        if self.keeps_connection {
            "signup_token"
        } else {
            "business_token"
        }
    }

    fn pin_kind(&self) -> &'static str {
        if self.keeps_connection {
            "signup_pin"
        } else {
            "registration_pin"
        }
    }

    /// The detail of the account events this call writes.
    fn event_detail(&self) -> Value {
        match self.attempt {
            Some(a) => json!({ "signup_attempt_id": a.to_string() }),
            None => json!({}),
        }
    }
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
                        registered_at IS NOT NULL, info_at IS NOT NULL, completed_at IS NOT NULL,
                        keeps_connection
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
            keeps_connection: row.get(10)?.unwrap_or(false),
        })
    })
}

/// Forgets a signup's progress, so that the next step is the code exchange.
fn reset(tenant: pgrx::Uuid) -> WaResult<()> {
    Spi::run_with_args(
        "UPDATE wa.signups SET token_at = NULL, access_checked_at = NULL, subscribed_at = NULL,
                registered_at = NULL, info_at = NULL, completed_at = NULL, last_error = NULL,
                waba_id = NULL, phone_number_id = NULL
          WHERE tenant_id = $1",
        &[tenant.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM wa.credentials WHERE tenant_id = $1 AND kind IN ('signup_token', 'signup_pin')",
        &[tenant.into()],
    )?;
    Ok(())
}

fn mark(run: &Run, column: &str) -> WaResult<()> {
    // `column` is one of our own constant column names, never input.
    Spi::run_with_args(
        &format!(
            "UPDATE wa.signups SET {column} = pg_catalog.now(), updated_at = pg_catalog.now(), last_error = NULL
              WHERE tenant_id = $1"
        ),
        &[run.tenant.into()],
    )?;
    Spi::run_with_args(
        "INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES ($1, $2, $3)",
        &[
            run.tenant.into(),
            format!("signup.{column}").into(),
            pgrx::JsonB(run.event_detail()).into(),
        ],
    )?;
    Ok(())
}

/// Records a failed step with the Graph error.
fn fail(run: &Run, step: &str, e: &ApiError) -> WaResult<()> {
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
    record_failure(run, detail)
}

/// Records a failure in `wa.signups.last_error` and a `signup.failed` account event. A
/// tenant being connected goes to state `error`; a re-signup leaves the connection as it is.
fn record_failure(run: &Run, mut detail: Value) -> WaResult<()> {
    if let Some(a) = run.attempt {
        detail["signup_attempt_id"] = json!(a.to_string());
    }
    let tenant = run.tenant;
    Spi::run_with_args(
        "UPDATE wa.signups SET last_error = $2, updated_at = pg_catalog.now() WHERE tenant_id = $1",
        &[tenant.into(), pgrx::JsonB(detail.clone()).into()],
    )?;
    if run.keeps_connection {
        Spi::run_with_args(
            "INSERT INTO wa.account_events (tenant_id, kind, detail) VALUES ($1, 'signup.failed', $2)",
            &[tenant.into(), pgrx::JsonB(detail).into()],
        )?;
        // The connection did not change: nothing to notify.
        return Ok(());
    }
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
        "SELECT wa._notify_tenant($1, pg_catalog.json_build_object(
                'kind', 'connection.changed', 'state', $2::text, 'tenant_id', $1,
                'conversation_id', NULL, 'message_id', NULL)::text)",
        &[tenant.into(), state.into()],
    )?;
    Ok(())
}

fn status(tenant: pgrx::Uuid) -> WaResult<pgrx::JsonB> {
    Spi::get_one_with_args::<pgrx::JsonB>("SELECT wa.connection_status($1)", &[tenant.into()])?
        .ok_or_else(|| WaError::Internal("no connection status".into()))
}

/// The connection status with the signup's own outcome under `signup`: a re-signup that
/// failed leaves the tenant `connected`, and only `signup.last_error` says that it failed.
fn result(tenant: pgrx::Uuid) -> WaResult<pgrx::JsonB> {
    let mut s = status(tenant)?;
    let signup = Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT (SELECT pg_catalog.jsonb_build_object('signup_attempt_id', signup_attempt_id,
                        'keeps_connection', keeps_connection, 'completed', completed_at IS NOT NULL,
                        'last_error', last_error)
                   FROM wa.signups WHERE tenant_id = $1)",
        &[tenant.into()],
    )?;
    s.0["signup"] = signup.map(|j| j.0).unwrap_or(Value::Null);
    Ok(s)
}

fn random_pin() -> WaResult<String> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|_| WaError::Internal("no randomness for a PIN".into()))?;
    Ok(format!("{:06}", u32::from_le_bytes(b) % 1_000_000))
}

/// Encrypts a secret of a tenant bound to its row (`<tenant>/<kind>`).
fn seal(tenant: pgrx::Uuid, kind: &str, plain: &[u8]) -> WaResult<(Vec<u8>, String)> {
    let ring = keys::keyring()?;
    let sealed = ring
        .encrypt(&keys::credential_aad(&tenant.to_string(), kind), plain)
        .map_err(|e| WaError::Internal(e.to_string()))?;
    Ok((sealed, ring.active_key_id().to_string()))
}

/// A stored secret of a tenant in plaintext, if there is one.
fn open(tenant: pgrx::Uuid, kind: &str) -> WaResult<Option<zeroize::Zeroizing<Vec<u8>>>> {
    let Some(envelope) = Spi::get_one_with_args::<Vec<u8>>(
        // One row, NULL when there is no such secret.
        "SELECT (SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1 AND kind = $2)",
        &[tenant.into(), kind.into()],
    )?
    else {
        return Ok(None);
    };
    let ring = keys::keyring()?;
    let plain = ring
        .decrypt(&keys::credential_aad(&tenant.to_string(), kind), &envelope)
        .map_err(|e| keys::decrypt_error(&format!("the {kind} of tenant {tenant}"), e))?;
    Ok(Some(plain))
}

/// A stored secret that is text (a token, a PIN), if there is one.
fn open_text(tenant: pgrx::Uuid, kind: &str) -> WaResult<Option<zeroize::Zeroizing<String>>> {
    open(tenant, kind)?
        .map(|plain| {
            String::from_utf8(plain.to_vec())
                .map(zeroize::Zeroizing::new)
                .map_err(|_| WaError::Internal(format!("the stored {kind} is not UTF-8")))
        })
        .transpose()
}

fn open_token(run: &Run) -> WaResult<zeroize::Zeroizing<String>> {
    open_text(run.tenant, run.token_kind())?.ok_or_else(|| WaError::NotReady {
        message: format!("the signup of tenant {} has no token", run.tenant),
        hint: "Start the signup again.".into(),
    })
}

/// Stores a secret of a tenant encrypted (replacing the one of that kind), with an expiry in
/// seconds when `expires_in` is positive.
fn store_secret(tenant: pgrx::Uuid, kind: &str, plain: &[u8], expires_in: i64) -> WaResult<()> {
    let (sealed, key_id) = seal(tenant, kind, plain)?;
    Spi::run_with_args(
        "INSERT INTO wa.credentials (tenant_id, kind, ciphertext, key_id, source, expires_at)
         VALUES ($1, $2, $3, $4, 'embedded_signup',
                 CASE WHEN $5::bigint > 0 THEN pg_catalog.now() + $5::bigint * interval '1 second' END)
         ON CONFLICT (tenant_id, kind) DO UPDATE
            SET ciphertext = EXCLUDED.ciphertext, key_id = EXCLUDED.key_id,
                source = EXCLUDED.source, expires_at = EXCLUDED.expires_at,
                updated_at = pg_catalog.now()",
        &[
            tenant.into(),
            kind.into(),
            sealed.into(),
            key_id.into(),
            expires_in.into(),
        ],
    )?;
    Ok(())
}

/// The number is registered for Cloud API (with the PIN stored for it).
fn mark_registered(tenant: pgrx::Uuid, phone: &str) -> WaResult<()> {
    Spi::run_with_args(
        "UPDATE wa.phone_numbers SET registration_status = 'registered', registered_at = pg_catalog.now(),
                updated_at = pg_catalog.now()
          WHERE tenant_id = $1 AND phone_number_id = $2",
        &[tenant.into(), phone.into()],
    )?;
    Ok(())
}

fn has_credential(tenant: pgrx::Uuid, kind: &str) -> WaResult<bool> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM wa.credentials WHERE tenant_id = $1 AND kind = $2)",
        &[tenant.into(), kind.into()],
    )?
    .unwrap_or(false))
}

/// The shape of an Embedded Signup call's arguments, checked before anything is spent.
fn validate(code: &str, waba: Option<&str>, phone: Option<&str>) -> WaResult<()> {
    if code.trim().is_empty() || code.len() > 2048 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WaError::invalid("code is not an Embedded Signup code"));
    }
    if let Some(w) = waba {
        require_meta_id("waba_id", w)?;
    }
    if let Some(p) = phone {
        require_meta_id("phone_number_id", p)?;
    }
    Ok(())
}

/// Stores the connection (token, WABA, number, routes) in `state`, applying parked webhooks.
fn store_connection(
    tenant: pgrx::Uuid,
    waba: &str,
    phone: Option<&str>,
    token: &str,
    state: &str,
) -> WaResult<()> {
    let (sealed, key_id) = seal_token(&tenant.to_string(), token)?;
    Spi::run_with_args(
        "SELECT wa._store_connection($1, $2, $3, $4, $5, 'embedded_signup', $6)",
        &[
            tenant.into(),
            waba.into(),
            phone.into(),
            sealed.into(),
            key_id.into(),
            state.into(),
        ],
    )?;
    Ok(())
}

/// The end of a re-signup: the new token becomes the business token, the WABA, number and
/// routes are stored (state `connected`), the new PIN becomes the registration PIN.
fn promote(run: &Run, waba: &str, phone: Option<&str>) -> WaResult<()> {
    let tenant = run.tenant;
    let token = open_token(run)?;
    store_connection(tenant, waba, phone, &token, "connected")?;
    Spi::run_with_args(
        "UPDATE wa.credentials b SET expires_at = s.expires_at
           FROM wa.credentials s
          WHERE b.tenant_id = $1 AND b.kind = 'business_token'
            AND s.tenant_id = $1 AND s.kind = 'signup_token'",
        &[tenant.into()],
    )?;
    Spi::run_with_args(
        "UPDATE wa.wabas SET subscribed_at = pg_catalog.now() WHERE tenant_id = $1 AND waba_id = $2",
        &[tenant.into(), waba.into()],
    )?;
    if let Some(phone) = phone
        && let Some(pin) = open(tenant, "signup_pin")?
    {
        store_secret(tenant, "registration_pin", &pin, 0)?;
        mark_registered(tenant, phone)?;
    }
    Spi::run_with_args(
        "DELETE FROM wa.credentials WHERE tenant_id = $1 AND kind IN ('signup_token', 'signup_pin')",
        &[tenant.into()],
    )?;
    Ok(())
}

/// The caller's side of a signup: checks the caller's rights and the arguments, hands the
/// signup to its worker (runner.rs), waits for it, and returns the status it left.
fn exchange(
    tenant: pgrx::Uuid,
    code: &str,
    waba: Option<&str>,
    phone: Option<&str>,
    attempt: Option<pgrx::Uuid>,
) -> WaResult<pgrx::JsonB> {
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant.into()])?;
    validate(code, waba, phone)?;
    preflight(tenant)?;
    runner::run(&runner::Request {
        // SAFETY: reading this backend's database.
        database: unsafe { pg_sys::MyDatabaseId },
        tenant,
        attempt,
        code: zeroize::Zeroizing::new(code.to_string()),
        waba: waba.map(str::to_owned),
        phone: phone.map(str::to_owned),
    })?;
    // What the worker committed: a statement snapshot taken now, not when the call started.
    // SAFETY: a snapshot pushed and popped around the one read; an error pops it with the
    // transaction.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let out = result(tenant);
    unsafe { pg_sys::PopActiveSnapshot() };
    out
}

/// What the signup worker cannot see or do for the caller, refused before it starts.
fn preflight(tenant: pgrx::Uuid) -> WaResult<()> {
    // SAFETY: reading the transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return Err(WaError::TransactionState {
            message: "a signup cannot run in a REPEATABLE READ or SERIALIZABLE transaction".into(),
            hint: "Its steps commit on their own, and this transaction's snapshot would not see them: call it in READ COMMITTED.".into(),
        });
    }
    // The tenant row's xmin, as text (xid has no integer cast): one of this transaction's
    // own (sub)transactions means the signup's session cannot see the tenant.
    let xmin = Spi::get_one_with_args::<String>(
        "SELECT (SELECT t.xmin::pg_catalog.text FROM wa.tenants t WHERE t.tenant_id = $1)",
        &[tenant.into()],
    )?
    .and_then(|x| x.parse::<u32>().ok());
    // SAFETY: a lookup of this backend's transaction state.
    let created_here = xmin.is_some_and(|x| unsafe {
        pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from_inner(x))
    });
    if created_here {
        return Err(WaError::TransactionState {
            message: format!("tenant {tenant} was created in this transaction, which has not committed"),
            hint: "Commit the transaction that creates the tenant before its signup: the signup's steps run and commit in a session of their own.".into(),
        });
    }
    app_config::app_id()?;
    // The key must open before Meta is asked for anything: the token has to be stored.
    keys::keyring()?;
    Ok(())
}

/// A step's SQL: a transaction of its own, committed before the next Graph call. An error
/// rolls back only this step.
fn sql<R>(f: impl FnOnce() -> WaResult<R>) -> Result<R, String> {
    crate::worker::txn::run_ok(std::panic::AssertUnwindSafe(f))
}

/// As `sql`, for a step that must not be lost once Meta has done its part (the token, the
/// PIN): tried again a few times when it fails (a lock timeout, say).
fn sql_must<R>(mut f: impl FnMut() -> WaResult<R>) -> Result<R, String> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
            pgrx::check_for_interrupts!();
        }
        match sql(&mut f) {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Where a signup starts: what is done already, and what its steps need.
struct Start {
    run: Run,
    p: Progress,
    app_id: String,
    secret: zeroize::Zeroizing<String>,
    waba: Option<String>,
    phone: Option<String>,
}

/// The signup worker's side (runner.rs): waits for any other signup of the tenant to end,
/// then runs the steps that are not done yet. A failure is recorded in `wa.signups` (and the
/// tenant's state) by the step that met it; an error of our own is recorded the same way.
fn drive(req: &runner::Request) {
    let tenant = req.tenant;
    loop {
        let locked = sql(|| {
            Ok(Spi::get_one_with_args::<bool>(
                "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended(
                        'whatsapp_pg signup ' OPERATOR(pg_catalog.||) $1::pg_catalog.text, 0))",
                &[tenant.into()],
            )?
            .unwrap_or(false))
        });
        match locked {
            Ok(true) => break,
            Ok(false) => {
                std::thread::sleep(std::time::Duration::from_millis(200));
                pgrx::check_for_interrupts!();
            }
            Err(e) => {
                pgrx::log!("whatsapp_pg signup of tenant {tenant}: {e}");
                return;
            }
        }
    }
    let mut at: (Option<Run>, &'static str) = (None, "start");
    if let Err(message) = steps(req, &mut at) {
        let (run, step) = at;
        pgrx::log!("whatsapp_pg signup of tenant {tenant}: {step} failed: {message}");
        let run = run.unwrap_or(Run {
            tenant,
            attempt: req.attempt,
            keeps_connection: false,
        });
        let detail = json!({"step": step, "message": format!("{step} failed: {message}")});
        if let Err(e) = sql(|| record_failure(&run, detail.clone())) {
            pgrx::log!("whatsapp_pg signup of tenant {tenant}: cannot record the failure: {e}");
        }
    }
}

/// Where the signup stands, and the reset of a new signup (its first transaction).
fn begin(req: &runner::Request, code_hash: &str) -> WaResult<Option<Start>> {
    let tenant = req.tenant;
    let mut p = load(tenant)?;
    let token_kind = if p.keeps_connection {
        "signup_token"
    } else {
        "business_token"
    };
    if (p.completed && p.code_sha256.as_deref() != Some(code_hash))
        || (p.token && !p.completed && !has_credential(tenant, token_kind)?)
    {
        // A new signup for an already connected tenant (another number, a reconnect), or
        // one whose token is gone (the tenant was disconnected meanwhile): from the start.
        reset(tenant)?;
        p = load(tenant)?;
    }
    if p.completed && p.keeps_connection {
        // This re-signup is done and promoted; the same code again changes nothing.
        return Ok(None);
    }
    if !p.token {
        // The signup starts here: a connected tenant stays connected until it completes.
        let keeps = Spi::get_one_with_args::<bool>(
            "SELECT state IN ('connected', 'action_required') FROM wa.tenants WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .unwrap_or(false);
        Spi::run_with_args(
            "UPDATE wa.signups SET keeps_connection = $2 WHERE tenant_id = $1",
            &[tenant.into(), keeps.into()],
        )?;
        p.keeps_connection = keeps;
        if p.code_sha256.as_deref() != Some(code_hash) {
            Spi::run_with_args(
                "UPDATE wa.signups SET code_sha256 = $2 WHERE tenant_id = $1",
                &[tenant.into(), code_hash.into()],
            )?;
        }
    }
    if let Some(a) = req.attempt {
        Spi::run_with_args(
            "UPDATE wa.signups SET signup_attempt_id = $2 WHERE tenant_id = $1",
            &[tenant.into(), a.into()],
        )?;
    }
    let run = Run {
        tenant,
        attempt: req.attempt,
        keeps_connection: p.keeps_connection,
    };
    // The browser's session info names the WABA and number; keep what we learn.
    let waba = req.waba.clone().or(p.waba.clone());
    let phone = req.phone.clone().or(p.phone.clone());
    Spi::run_with_args(
        "UPDATE wa.signups SET waba_id = $2, phone_number_id = $3, updated_at = pg_catalog.now() WHERE tenant_id = $1",
        &[tenant.into(), waba.clone().into(), phone.clone().into()],
    )?;
    if !run.keeps_connection {
        Spi::run_with_args(
            "UPDATE wa.tenants SET state = 'pending', updated_at = pg_catalog.now()
              WHERE tenant_id = $1 AND state IN ('not_connected', 'disconnected', 'error')",
            &[tenant.into()],
        )?;
    }
    let app_id = app_config::app_id()?;
    let secret = app_config::app_secret("app_secret")?;
    let secret = String::from_utf8(secret.to_vec())
        .map_err(|_| WaError::Internal("app secret is not UTF-8".into()))?;
    Ok(Some(Start {
        run,
        p,
        app_id,
        secret: zeroize::Zeroizing::new(secret),
        waba,
        phone,
    }))
}

/// Stores the business token (the live one, or aside for a re-signup) the moment Meta gave it.
fn store_token(run: &Run, t: &whatsapp_client::api::TokenResponse) -> WaResult<()> {
    store_secret(
        run.tenant,
        run.token_kind(),
        t.access_token.expose().as_bytes(),
        t.expires_in.unwrap_or(0),
    )?;
    mark(run, "token_at")
}

/// Access confirmed: a new tenant's connection (WABA, number, routes) is stored and committed
/// now, before the WABA is subscribed, so that webhooks Meta sends from then on find their
/// tenant. A re-signup stores nothing yet, but a WABA or number of another tenant fails now.
/// False when the step failed (recorded).
fn store_access(run: &Run, waba: &str, phone: Option<&str>, token: &str) -> WaResult<bool> {
    let tenant = run.tenant;
    if run.keeps_connection {
        let taken = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM wa.routes r
                             WHERE (r.kind, r.external_id) IN (('waba', $2), ('phone_number', $3))
                               AND r.tenant_id <> $1)",
            &[tenant.into(), waba.into(), phone.into()],
        )?
        .unwrap_or(false);
        if taken {
            record_failure(
                run,
                json!({"step": "access", "message": format!("WABA {waba} or its phone number is already connected to another tenant")}),
            )?;
            return Ok(false);
        }
    } else {
        store_connection(tenant, waba, phone, token, "pending")?;
    }
    Spi::run_with_args(
        "UPDATE wa.signups SET waba_id = $2, phone_number_id = $3 WHERE tenant_id = $1",
        &[tenant.into(), waba.into(), phone.into()],
    )?;
    mark(run, "access_checked_at")?;
    Ok(true)
}

/// The PIN the number is registered with: the one stored by an earlier attempt (Meta may
/// have taken it even if that attempt never heard back), the tenant's registration PIN when
/// a re-signup registers a number it already registered (Meta refuses another PIN), or a new
/// one. It is stored and committed before `register` is called.
fn pin_for(run: &Run, phone: &str) -> WaResult<zeroize::Zeroizing<String>> {
    if let Some(pin) = open_text(run.tenant, run.pin_kind())? {
        return Ok(pin);
    }
    let ours = run.keeps_connection
        && Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM wa.phone_numbers
                             WHERE tenant_id = $1 AND phone_number_id = $2
                               AND registration_status = 'registered')",
            &[run.tenant.into(), phone.into()],
        )?
        .unwrap_or(false);
    let pin = match open_text(run.tenant, "registration_pin")? {
        Some(current) if ours => current,
        _ => zeroize::Zeroizing::new(random_pin()?),
    };
    store_secret(run.tenant, run.pin_kind(), pin.as_bytes(), 0)?;
    Ok(pin)
}

/// The end of the signup: the tenant is connected (or a re-signup's connection promoted).
fn finish(run: &Run, waba: &str, phone: Option<&str>, promote_now: bool) -> WaResult<()> {
    let tenant = run.tenant;
    if run.keeps_connection {
        if promote_now {
            promote(run, waba, phone)?;
        }
    } else if phone.is_none() {
        // FINISH_ONLY_WABA: connected as far as it goes; the number comes later.
        Spi::run_with_args(
            "UPDATE wa.tenants SET state = 'pending', last_error = NULL, updated_at = pg_catalog.now() WHERE tenant_id = $1",
            &[tenant.into()],
        )?;
        mark(run, "completed_at")?;
        return notify(tenant, "pending");
    } else {
        Spi::run_with_args(
            "UPDATE wa.tenants SET state = 'connected', last_error = NULL, updated_at = pg_catalog.now() WHERE tenant_id = $1",
            &[tenant.into()],
        )?;
        Spi::run_with_args("SELECT wa._release_held($1)", &[tenant.into()])?;
        send::wake::on_commit();
    }
    mark(run, "completed_at")?;
    notify(tenant, "connected")
}

/// The steps, each Graph call outside any transaction and each outcome committed at once.
/// `at` says which step is running, for the record of an error of our own.
fn steps(req: &runner::Request, at: &mut (Option<Run>, &'static str)) -> Result<(), String> {
    let tenant = req.tenant;
    let code_hash = hex::encode(Sha256::digest(req.code.as_bytes()));
    let Some(start) = sql(|| begin(req, &code_hash))? else {
        return Ok(());
    };
    let Start {
        run,
        p,
        app_id,
        secret,
        mut waba,
        mut phone,
    } = start;
    at.0 = Some(run);
    let graph = crate::graph::client();

    // 1. The code (valid for about 30 s) for the business token, stored as soon as it comes.
    if !p.token {
        at.1 = "token_exchange";
        match graph.exchange_code(&app_id, &secret, &req.code) {
            Ok(t) => sql_must(|| store_token(&run, &t))?,
            Err(e) => return sql(|| fail(&run, "token_exchange", &e)),
        }
    }
    at.1 = "token";
    let token = sql(|| open_token(&run))?;

    // 2. Confirm the token reaches the WABA (and find it and the number if not given).
    if !p.access {
        at.1 = "access";
        if waba.is_none() {
            match graph.debug_token(&app_id, &secret, &token) {
                Ok(info) => {
                    waba = info
                        .target_ids("whatsapp_business_management")
                        .first()
                        .map(|s| s.to_string())
                }
                Err(e) => return sql(|| fail(&run, "debug_token", &e)),
            }
        }
        let Some(w) = waba.clone() else {
            return sql(|| {
                record_failure(
                    &run,
                    json!({"step": "access", "message": "the token grants access to no WhatsApp Business Account"}),
                )
            });
        };
        match graph.list_phone_numbers(&w, &token) {
            Ok(numbers) => {
                let ids: Vec<String> = numbers.iter().filter_map(|n| n.id.clone()).collect();
                if let Some(p) = &phone
                    && !ids.contains(p)
                {
                    let detail = json!({"step": "access", "message": format!("phone number {p} is not in WABA {w}")});
                    return sql(|| record_failure(&run, detail.clone()));
                }
                if phone.is_none() && ids.len() == 1 {
                    phone = ids.first().cloned();
                }
            }
            Err(e) => return sql(|| fail(&run, "access", &e)),
        }
        if !sql(|| store_access(&run, &w, phone.as_deref(), &token))? {
            return Ok(());
        }
    }
    let Some(waba) = waba else {
        return Err("the signup lost its WABA".into());
    };

    // 3. Webhooks of the WABA to our app (the connection is committed: they find it).
    if !p.subscribed {
        at.1 = "subscribe";
        match graph.subscribe_app(&waba, &token) {
            Ok(()) => sql(|| {
                if !run.keeps_connection {
                    Spi::run_with_args(
                        "UPDATE wa.wabas SET subscribed_at = pg_catalog.now() WHERE tenant_id = $1 AND waba_id = $2",
                        &[tenant.into(), waba.as_str().into()],
                    )?;
                }
                mark(&run, "subscribed_at")
            })?,
            Err(e) => return sql(|| fail(&run, "subscribe", &e)),
        }
    }

    // FINISH_ONLY_WABA: as far as it goes; the number comes later.
    let Some(phone) = phone else {
        at.1 = "complete";
        return sql(|| finish(&run, &waba, None, true));
    };

    // 4. Register the number for Cloud API with a two-step verification PIN that is stored
    //    (committed) before Meta hears of it.
    if !p.registered {
        at.1 = "register";
        let pin = sql_must(|| pin_for(&run, &phone))?;
        match graph.register_phone(&phone, &token, &pin) {
            Ok(()) => sql(|| {
                if !run.keeps_connection {
                    mark_registered(tenant, &phone)?;
                }
                mark(&run, "registered_at")
            })?,
            Err(e) => return sql(|| fail(&run, "register", &e)),
        }
    }

    // 5. What the number looks like now. (A re-signup stores the connection first: the
    //    number may be new to this tenant.)
    let mut promoted = false;
    if !p.info {
        at.1 = "phone_number_info";
        match graph.phone_number_info(&phone, &token) {
            Ok(n) => sql(|| {
                if run.keeps_connection {
                    promote(&run, &waba, Some(&phone))?;
                }
                store_number_info(tenant, &phone, &n)?;
                mark(&run, "info_at")
            })?,
            Err(e) => return sql(|| fail(&run, "phone_number_info", &e)),
        }
        promoted = run.keeps_connection;
    }
    at.1 = "complete";
    sql(|| finish(&run, &waba, Some(&phone), !promoted))
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
/// its webhooks, registers the number and fetches its details. The steps run and commit in a
/// background worker while the call waits: a cancel ends the wait at once and the signup
/// goes on; call it in READ COMMITTED, outside the transaction that created the tenant. Safe
/// to call again: finished steps are not redone. Returns the connection status with the signup's outcome under
/// `signup` (for a tenant not connected yet, state `error` and `last_error` when a step
/// failed; a re-signup of a connected tenant stays `connected` and reports the failure in
/// `signup.last_error`). For administrators; the gateway calls `wa.complete_signup`.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn exchange_code(
    tenant_id: pgrx::Uuid,
    code: &str,
    waba_id: default!(Option<&str>, "NULL"),
    phone_number_id: default!(Option<&str>, "NULL"),
) -> pgrx::JsonB {
    exchange(tenant_id, code, waba_id, phone_number_id, None).or_raise()
}
