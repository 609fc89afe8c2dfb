//! Who the worker is while it runs SQL.
//!
//! PostgreSQL 15 lets a background worker connect only as a role that can log in (the option
//! to skip that check, `BGWORKER_BYPASS_ROLELOGINCHECK`, came with PostgreSQL 17), so the
//! worker connects as the bootstrap superuser, as every extension worker on 15 does. It stops
//! acting as it at once: before its first statement it pins its settings over whatever the
//! database or a role set, and makes the role `wa_worker` (NOLOGIN, owns nothing, only the
//! grants it needs) its current user for the rest of the session, the way PostgreSQL runs a
//! SECURITY DEFINER function: with `SECURITY_LOCAL_USERID_CHANGE`, under which `SET ROLE` and
//! `SET SESSION AUTHORIZATION` are refused, so nothing it runs can take the superuser back.
//! A transaction that aborts restores the user it started with, which is `wa_worker` too.

use super::{sql, txn};
use pgrx::pg_sys;

/// Pins the worker's session settings (search_path first); called right after connecting.
pub fn pin_settings() {
    for (name, value) in sql::PINNED_SETTINGS {
        pin(name, value);
    }
}

/// Sets one setting for the rest of the session, over database and role settings.
fn pin(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: the main thread; PGC_S_OVERRIDE outranks database and role settings and
    // becomes the session's reset value.
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
}

/// Pins a signup worker's settings: the worker's, with a lock timeout, so that a step that
/// meets a lock held elsewhere (by the very session waiting for the signup, say) fails and is
/// recorded instead of waiting for ever.
pub fn pin_signup_session() {
    pin_settings();
    pin(c"lock_timeout", c"5s");
}

/// Becomes `wa_worker` for good. False while the role does not exist yet (CREATE EXTENSION
/// creates it): the worker then runs nothing but this lookup, and asks again later.
pub fn become_wa_worker() -> bool {
    become_role(c"wa_worker")
}

/// Becomes `role` (NOLOGIN) for the rest of the session, as described above; false when it
/// does not exist. The signup worker becomes `wa_owner`, whose rights the SECURITY DEFINER
/// signup functions had.
pub fn become_role(role: &std::ffi::CStr) -> bool {
    // SAFETY: a catalog lookup inside the transaction txn::run opens.
    let oid = txn::run(|| unsafe { pg_sys::get_role_oid(role.as_ptr(), true) });
    match oid {
        Ok(oid) if oid != pg_sys::InvalidOid => {
            // SAFETY: outside any transaction, on the main thread: every transaction started
            // from now on saves and restores this user and context.
            unsafe {
                pg_sys::SetUserIdAndSecContext(oid, pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32)
            };
            true
        }
        _ => false,
    }
}
