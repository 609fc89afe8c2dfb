//! Running on a Citus cluster (docs/SCALING.md, sql/citus.sql).

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Whether Citus is loaded in this backend (preloaded, it defines its settings).
pub fn loaded() -> bool {
    // SAFETY: a read-only lookup of a setting by name on the backend's main thread.
    unsafe {
        !pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false).is_null()
    }
}

/// The plan cache mode of the statements written as index probes over array parameters
/// (src/plans.rs): generic plans, made once per session, on a single node; PostgreSQL's own
/// choice where Citus is loaded, which cannot plan a distributed statement generically (the
/// shard is known only from the parameter's value). The functions that run such statements
/// set it first thing; their `SET plan_cache_mode` clause restores the caller's on return.
/// src/plans.rs applies the same rule to the kept plans.
pub fn probe_plan_cache_mode() -> &'static std::ffi::CStr {
    if loaded() {
        c"auto"
    } else {
        c"force_generic_plan"
    }
}

#[pg_extern(stable, parallel_safe)]
fn _probe_plan_cache_mode() -> &'static str {
    probe_plan_cache_mode().to_str().unwrap_or("auto")
}
