//! Who is calling: the role outside any SECURITY DEFINER function.

use crate::error::OrRaise;
use pgrx::prelude::*;

/// True when the calling role (after SET ROLE, ignoring SECURITY DEFINER switches) is a
/// superuser or has the privileges of wa_admin. SQL functions use it to let administrators
/// act for any tenant while wa_app must name its tenant in `wa.tenant_id`.
///
/// No `SET search_path`: it runs no SQL, and a SET clause would make each call save and restore
/// the setting, once per row in the row-level security policies that call it.
#[pg_extern(stable, parallel_safe)]
fn _caller_is_admin() -> bool {
    caller_is_admin()
}

pub fn caller_is_admin() -> bool {
    // SAFETY: plain catalog lookups on the backend's main thread.
    unsafe {
        let outer = pg_sys::GetOuterUserId();
        if pg_sys::superuser_arg(outer) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"wa_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(outer, admin)
    }
}

// ---------------------------------------------------------------------------------------------
// Who the caller is, on the shards of a Citus cluster (docs/SCALING.md).
//
// Citus runs a statement's shard queries on the worker nodes over connections of the
// statement's current role: inside the extension's SECURITY DEFINER functions, wa_owner. The
// row-level security policies of those shards see neither the calling role nor its
// wa.tenant_id. So a function that acts for a tenant states it in `wa.acting`, set with SET
// LOCAL (which Citus propagates to every node of the transaction): the scope (a tenant, or `*`
// for an administrator), an expiry, and a MAC under the master key (the same key file on every
// node). Only these functions can make one: a value set by hand does not verify, and one read
// back from a session names no more than that session's caller may reach.

/// The purpose the MACs of `wa.acting` are made for.
const ACTING: &str = "acting";
/// How long a statement of scope stays valid (a transaction's API calls refresh it).
const ACTING_SECS: u64 = 600;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The 32 hex digits of a uuid as PostgreSQL prints or accepts it (braces and hyphens off);
/// `*` (every tenant) as it is.
fn scope_key(text: &str) -> Option<String> {
    if text == "*" {
        return Some(text.to_string());
    }
    let hex: String = text
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// A `wa.acting` value: `scope|expires|key id|mac`.
fn acting_value(scope: &str) -> crate::error::WaResult<String> {
    let expires = unix_now() + ACTING_SECS;
    let ring = crate::keys::keyring()?;
    let message = format!("{scope}|{expires}");
    let (key_id, mac) = ring
        .sign(ACTING, message.as_bytes())
        .map_err(|e| crate::error::WaError::Internal(format!("signing wa.acting: {e}")))?;
    Ok(format!("{message}|{key_id}|{mac}"))
}

/// The scope a verified `wa.acting` value grants, if it is valid now: `*`, or the tenant as
/// [`scope_key`] writes it.
fn acting_scope(value: &str) -> Option<String> {
    thread_local! {
        // The last value verified (a transaction repeats the same one on every row).
        static LAST: std::cell::RefCell<Option<(String, String, u64)>> =
            const { std::cell::RefCell::new(None) };
    }
    let now = unix_now();
    if let Some(scope) = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(v, _, expires)| v == value && *expires > now)
            .map(|(_, s, _)| s.clone())
    }) {
        return Some(scope);
    }
    let mut parts = value.splitn(4, '|');
    let (scope, expires, key_id, mac) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let until: u64 = expires.parse().ok()?;
    if until <= now {
        return None;
    }
    let ring = crate::keys::keyring().ok()?;
    if !ring.verify(key_id, ACTING, format!("{scope}|{expires}").as_bytes(), mac) {
        return None;
    }
    let scope = scope_key(scope)?;
    LAST.with(|l| *l.borrow_mut() = Some((value.to_string(), scope.clone(), until)));
    Some(scope)
}

/// True when this session's `wa.acting` verifies and covers `tenant_id`: the third way, after
/// an administrator caller and the session's own `wa.tenant_id`, that the owner's row-level
/// security policies let a row through. Only matters where the caller is not known (a Citus
/// worker node serving a SECURITY DEFINER function's shard queries).
#[pg_extern(stable, parallel_safe)]
fn _acting_for(tenant_id: pgrx::Uuid) -> bool {
    let Some(value) = pgrx::guc::GucSetting::get(&crate::guc::ACTING) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    if value.is_empty() {
        return false;
    }
    acting_scope(value).is_some_and(|scope| scope == "*" || scope == hex::encode(*tenant_id))
}

/// States, for the shards of a Citus cluster, that the rest of the transaction acts for
/// `tenant_id` (or, for an administrator caller, for every tenant; NULL: only then). Does
/// nothing without Citus. Called by wa._authorize_tenant and at the start of ingest, after
/// their checks.
#[pg_extern(volatile, parallel_unsafe)]
fn _act_for(tenant_id: Option<pgrx::Uuid>) {
    act_for(tenant_id).or_raise()
}

pub fn act_for(tenant_id: Option<pgrx::Uuid>) -> crate::error::WaResult<()> {
    if !crate::citus::loaded() {
        return Ok(());
    }
    let scope = if caller_is_admin() {
        "*".to_string()
    } else if let Some(t) = tenant_id {
        t.to_string()
    } else {
        return Ok(());
    };
    let value = acting_value(&scope)?;
    // SET LOCAL, as statements, so that Citus sends them to every node of the transaction
    // (set_config() would not be propagated), and inside a DO block: Citus propagates a SET
    // only where it takes the transaction for a multi-statement one, which a function called
    // as a plain expression is not. The value holds only [0-9a-z*|.:_-].
    Spi::run(&format!(
        "DO $act$ BEGIN SET LOCAL citus.propagate_set_commands = 'local'; \
         SET LOCAL wa.acting = '{value}'; END $act$"
    ))?;
    // Citus sends the propagated settings with the BEGIN of each node's part of the
    // transaction, and a read outside BEGIN … COMMIT opens none unless the transaction is
    // already a coordinated one: a locking read of no row (one shard, one round trip) makes
    // it one, so that every later statement's shard queries carry the setting.
    Spi::run(
        "SELECT 1 FROM wa.tenants t \
          WHERE t.tenant_id OPERATOR(pg_catalog.=) '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid \
            FOR KEY SHARE",
    )?;
    Ok(())
}
