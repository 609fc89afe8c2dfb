//! The worker's database being dropped (or created again).
//!
//! PostgreSQL refuses to drop a database anyone is connected to, the worker included. A
//! utility hook asks the worker to leave — but only once the drop will really happen: the
//! database exists, the caller may drop it (its owner or a superuser), it is not a template or
//! the caller's own, and no other session, prepared transaction, replication slot or
//! subscription holds it (other sessions do not count with `WITH (FORCE)`, which ends them).
//! Anything else (a role that does not own the database, a busy database) leaves the worker
//! where it is, and PostgreSQL's own error follows.
//!
//! A worker that leaves exits with status 1, so the postmaster starts it again after its
//! restart time. The new process waits, unconnected, while the drop runs (shared memory says
//! who is dropping); if the drop fails it connects at once, and if it succeeded it waits until
//! a database of that name is created again.

use crate::guc;
use crate::send::wake;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgAtomic, PgList, pg_shmem_init};
use std::sync::atomic::{AtomicU64, Ordering};

// SAFETY: the name is unique to this extension.
static DB_STATE: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"whatsapp_pg_db_state") };

const NORMAL: u64 = 0;
const DROPPING: u64 = 1;
const DROPPED: u64 = 2;

fn pack(state: u64, pid: i32) -> u64 {
    (state << 32) | u64::from(pid as u32)
}

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

/// Reserves the shared memory and installs the hook; only while the library is preloaded.
pub fn install() {
    pg_shmem_init!(DB_STATE = AtomicU64::new(NORMAL));
    // SAFETY: hooks are installed once, from _PG_init, before any query runs.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Whether the worker may connect to its database now: not while a drop of it is under way
/// (by a backend that is still alive), nor after it was dropped.
pub fn database_available() -> bool {
    let v = DB_STATE.get().load(Ordering::SeqCst);
    let (state, pid) = (v >> 32, (v & 0xffff_ffff) as u32 as i32);
    match state {
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        DROPPING if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 => false,
        DROPPING => {
            // The dropping backend is gone (a FATAL error ends a backend without unwinding).
            let _ = DB_STATE
                .get()
                .compare_exchange(v, NORMAL, Ordering::SeqCst, Ordering::SeqCst);
            true
        }
        DROPPED => false,
        _ => true,
    }
}

fn served(name: *const std::ffi::c_char) -> bool {
    if name.is_null() {
        return false;
    }
    // SAFETY: PostgreSQL passes a NUL-terminated database name.
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
    guc::string(&guc::DATABASE).is_some_and(|db| db == name)
}

fn has_force_option(options: *mut pg_sys::List) -> bool {
    // SAFETY: the options of a DropdbStmt are a list of DefElem.
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(options) };
    list.iter_ptr().any(|d| {
        // SAFETY: each element is a valid DefElem with a NUL-terminated name.
        unsafe { !(*d).defname.is_null() && std::ffi::CStr::from_ptr((*d).defname) == c"force" }
    })
}

fn drop_will_proceed(stmt: *mut pg_sys::DropdbStmt, worker: i32) -> bool {
    // SAFETY: a valid DropdbStmt; catalog lookups inside the statement's transaction.
    unsafe {
        let oid = pg_sys::get_database_oid((*stmt).dbname, true);
        if oid == pg_sys::InvalidOid || oid == pg_sys::MyDatabaseId {
            return false;
        }
        if !pg_sys::pg_database_ownercheck(oid, pg_sys::GetUserId()) {
            return false;
        }
        let force = has_force_option((*stmt).options);
        Spi::get_one_with_args::<bool>(
            super::sql::DROP_WILL_PROCEED,
            &[oid.into(), worker.into(), force.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    }
}

/// Asks the worker to exit and waits (up to five seconds) until it has.
fn stop_worker(pid: i32) {
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

#[allow(clippy::too_many_arguments)]
unsafe fn call_next(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
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
    // SAFETY: PostgreSQL passes a valid planned utility statement.
    let stmt = unsafe { (*pstmt).utilityStmt };
    let tag = if stmt.is_null() {
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { (*stmt).type_ })
    };
    let next = || {
        // SAFETY: the arguments PostgreSQL gave us, passed on unchanged.
        unsafe {
            call_next(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            )
        }
    };
    match tag {
        Some(pg_sys::NodeTag::T_DropdbStmt) => {
            let drop = stmt as *mut pg_sys::DropdbStmt;
            let worker = wake::worker_pid();
            // SAFETY: a valid DropdbStmt.
            if worker > 0 && served(unsafe { (*drop).dbname }) && drop_will_proceed(drop, worker) {
                // SAFETY: this backend's pid.
                let me = unsafe { pg_sys::MyProcPid };
                DB_STATE.get().store(pack(DROPPING, me), Ordering::SeqCst);
                stop_worker(worker);
                PgTryBuilder::new(next)
                    .catch_others(|e| {
                        // The drop failed after all: the worker comes back at once.
                        DB_STATE.get().store(NORMAL, Ordering::SeqCst);
                        e.rethrow()
                    })
                    .execute();
                DB_STATE.get().store(pack(DROPPED, 0), Ordering::SeqCst);
            } else {
                next();
            }
        }
        Some(pg_sys::NodeTag::T_CreatedbStmt) => {
            let create = stmt as *mut pg_sys::CreatedbStmt;
            next();
            // SAFETY: a valid CreatedbStmt.
            if served(unsafe { (*create).dbname }) {
                let _ = DB_STATE.get().compare_exchange(
                    pack(DROPPED, 0),
                    NORMAL,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
        _ => next(),
    }
}
