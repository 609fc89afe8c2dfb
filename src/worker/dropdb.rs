//! `DROP DATABASE` of the database the worker serves must not be blocked by the worker's own
//! connection: a utility hook asks the worker to leave first (it exits cleanly and is not
//! restarted; it comes back with the next server start).

use crate::guc;
use crate::send::wake;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub fn install() {
    // SAFETY: hooks are installed once, from _PG_init, before any query runs.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

fn dropping_served_database(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: PostgreSQL passes a valid planned utility statement.
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_DropdbStmt {
            return false;
        }
        let drop = stmt as *mut pg_sys::DropdbStmt;
        let name = std::ffi::CStr::from_ptr((*drop).dbname).to_string_lossy();
        guc::string(&guc::DATABASE).is_some_and(|db| db == name)
    }
}

/// Asks the worker to exit and waits (up to five seconds) until it has.
fn stop_worker() {
    let pid = wake::WORKER_PID.get().load(Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    // SAFETY: signalling a postmaster child the way pg_terminate_backend does.
    unsafe {
        if libc::kill(pid, libc::SIGTERM) != 0 {
            return;
        }
        for _ in 0..500 {
            if pg_sys::BackendPidGetProc(pid).is_null() {
                break;
            }
            pg_sys::pg_usleep(10_000);
            pgrx::check_for_interrupts!();
        }
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    if crate::worker::PRELOADED.load(Ordering::Relaxed) && dropping_served_database(pstmt) {
        stop_worker();
    }
    // SAFETY: chaining to the previous hook or the standard implementation, as required.
    unsafe {
        match PREVIOUS {
            Some(previous) => previous(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}
