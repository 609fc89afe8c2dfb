//! Waking the background worker when a transaction that enqueued work commits.
//!
//! The worker publishes its pid in shared memory. A transaction that enqueues marks itself; a
//! transaction callback (registered once per backend) sets the worker's latch at commit — once
//! per transaction, never on abort — so an enqueue reaches the worker in well under a
//! millisecond instead of waiting for a poll.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgAtomic, pg_shmem_init};
use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

// SAFETY: the name is unique to this extension.
pub static WORKER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"whatsapp_pg_worker_pid") };

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Reserves the shared memory; only possible while the library is being preloaded.
pub fn init_shmem() {
    pg_shmem_init!(WORKER_PID = AtomicI32::new(0));
}

fn shmem_ready() -> bool {
    // Shared memory exists only when the library was preloaded (backends inherit the flag).
    crate::worker::PRELOADED.load(Ordering::Relaxed)
}

/// The running worker's pid, 0 when none is connected.
pub fn worker_pid() -> i32 {
    if shmem_ready() {
        WORKER_PID.get().load(Ordering::SeqCst)
    } else {
        0
    }
}

pub fn publish_worker_pid(pid: i32) {
    if shmem_ready() {
        WORKER_PID.get().store(pid, Ordering::SeqCst);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            if PENDING.with(|p| p.replace(false)) =>
        {
            wake_now();
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PENDING.with(|p| p.set(false));
        }
        _ => {}
    }
}

/// Sets the worker's latch now.
pub fn wake_now() {
    if !shmem_ready() {
        return;
    }
    let pid = WORKER_PID.get().load(Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc looks the pid up in the proc array; SetLatch on a PGPROC's
    // latch is how PostgreSQL itself wakes other processes.
    unsafe {
        let proc = pg_sys::BackendPidGetProc(pid);
        if !proc.is_null() {
            pg_sys::SetLatch(&raw mut (*proc).procLatch);
        }
    }
}

/// Asks for the worker to be woken when the current transaction commits.
pub fn on_commit() {
    if !REGISTERED.with(|r| r.replace(true)) {
        // SAFETY: registering a static callback; it lives as long as the backend.
        unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
    }
    PENDING.with(|p| p.set(true));
}

/// The pid of the running worker (from shared memory: whoever asks, whatever pg_stat_activity
/// lets them see), or NULL when none is connected.
#[pg_extern(volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _worker_pid() -> Option<i32> {
    let pid = worker_pid();
    // SAFETY: BackendPidGetProc only looks the pid up in the proc array.
    (pid > 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }).then_some(pid)
}

/// Wakes the worker when the current transaction commits (for SQL-language callers).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _wake_worker_on_commit() {
    on_commit()
}
