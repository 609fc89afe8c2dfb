//! Who is calling: the role outside any SECURITY DEFINER function.

use pgrx::prelude::*;

/// True when the calling role (after SET ROLE, ignoring SECURITY DEFINER switches) is a
/// superuser or has the privileges of wa_admin. SQL functions use it to let administrators
/// act for any tenant while wa_app must name its tenant in `wa.tenant_id`.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
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
