//! Where a signup runs: a background worker of its own, started for each call.
//!
//! `wa.exchange_code` and `wa.complete_signup` check their arguments and the caller's rights
//! in the calling session, then hand the signup (tenant, code, ids) to a dynamic background
//! worker through a slot in shared memory and wait for it to exit. The worker runs each step
//! as a short transaction of its own that commits before the next Graph API call, and holds
//! no lock across a call: the token is stored the moment Meta returns it, the PIN before the
//! number is registered, and the connection (routes included) before the WABA is subscribed.
//! So a cancel, a `statement_timeout` or a rollback of the calling session loses nothing that
//! Meta has done: the caller stops waiting at once (the wait answers interrupts), the worker
//! finishes the signup on its own, and calling again resumes where it got to.
//!
//! One signup of a tenant runs at a time: a second one waits for the first to end (polling a
//! session advisory lock that only signups of that tenant take), then resumes.

use crate::error::{WaError, WaResult};
use crate::worker::PRELOADED;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus};
use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgLwLock, pg_shmem_init};
use std::sync::atomic::Ordering;
use zeroize::Zeroizing;

/// Signups that can be handed over at the same moment (a slot is free again as soon as its
/// worker has read it, within milliseconds).
const SLOTS: usize = 8;
const CODE_MAX: usize = 2048;
const ID_MAX: usize = 32;
/// A slot whose worker did not read it within this time (its start failed) is reused.
const STALE_SECS: i64 = 60;

#[derive(Copy, Clone)]
pub struct Slot {
    generation: u32,
    filled: bool,
    filled_at: i64,
    database: u32,
    tenant: [u8; 16],
    attempt: Option<[u8; 16]>,
    code: [u8; CODE_MAX],
    code_len: u16,
    waba: [u8; ID_MAX],
    waba_len: u8,
    phone: [u8; ID_MAX],
    phone_len: u8,
}

impl Slot {
    const EMPTY: Slot = Slot {
        generation: 0,
        filled: false,
        filled_at: 0,
        database: 0,
        tenant: [0; 16],
        attempt: None,
        code: [0; CODE_MAX],
        code_len: 0,
        waba: [0; ID_MAX],
        waba_len: 0,
        phone: [0; ID_MAX],
        phone_len: 0,
    };

    /// Empties the slot, the code's bytes included.
    fn clear(&mut self) {
        let generation = self.generation;
        *self = Slot::EMPTY;
        self.generation = generation;
    }
}

// SAFETY: plain old data (no pointers), copied in and out under the lock.
unsafe impl PGRXSharedMemory for Slot {}

static HANDOVER: PgLwLock<[Slot; SLOTS]> = unsafe { PgLwLock::new(c"whatsapp_pg_signup_handover") };

pub fn init_shmem() {
    pg_shmem_init!(HANDOVER = [Slot::EMPTY; SLOTS]);
}

/// One signup call's input, as the worker receives it.
pub struct Request {
    pub database: pg_sys::Oid,
    pub tenant: pgrx::Uuid,
    pub attempt: Option<pgrx::Uuid>,
    pub code: Zeroizing<String>,
    pub waba: Option<String>,
    pub phone: Option<String>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn copy_into<const N: usize>(dst: &mut [u8; N], src: &str) -> WaResult<usize> {
    let b = src.as_bytes();
    if b.len() > N {
        return Err(WaError::invalid("signup argument too long"));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(b.len())
}

/// Puts a request into a free slot: its index and generation, which the worker checks.
fn put(req: &Request) -> WaResult<(usize, u32)> {
    let mut slots = HANDOVER.exclusive();
    let now = now_secs();
    let Some(i) = slots
        .iter()
        .position(|s| !s.filled || now - s.filled_at > STALE_SECS)
    else {
        return Err(WaError::Limit {
            message: "too many signups are starting at this moment".into(),
            hint: "Try again in a second.".into(),
        });
    };
    let s = &mut slots[i];
    s.clear();
    s.generation = s.generation.wrapping_add(1);
    s.filled = true;
    s.filled_at = now;
    s.database = req.database.to_u32();
    s.tenant = *req.tenant.as_bytes();
    s.attempt = req.attempt.map(|a| *a.as_bytes());
    let code = copy_into(&mut s.code, &req.code);
    let waba = copy_into(&mut s.waba, req.waba.as_deref().unwrap_or(""));
    let phone = copy_into(&mut s.phone, req.phone.as_deref().unwrap_or(""));
    match (code, waba, phone) {
        (Ok(c), Ok(w), Ok(p)) => {
            s.code_len = c as u16;
            s.waba_len = w as u8;
            s.phone_len = p as u8;
            Ok((i, s.generation))
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            s.clear();
            Err(e)
        }
    }
}

/// Empties a slot that its worker never read; true if it was still there.
fn withdraw(index: usize, generation: u32) -> bool {
    let mut slots = HANDOVER.exclusive();
    let s = &mut slots[index];
    if s.filled && s.generation == generation {
        s.clear();
        true
    } else {
        false
    }
}

/// The worker's side: takes its request out of the slot (emptying it at once).
fn take(arg: u64) -> Option<Request> {
    let index = (arg & 0xff) as usize;
    let generation = (arg >> 8) as u32;
    if index >= SLOTS {
        return None;
    }
    let mut slots = HANDOVER.exclusive();
    let s = &mut slots[index];
    if !s.filled || s.generation != generation {
        return None;
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let code = Zeroizing::new(text(&s.code[..s.code_len as usize]).unwrap_or_default());
    let waba = text(&s.waba[..s.waba_len as usize]).filter(|w| !w.is_empty());
    let phone = text(&s.phone[..s.phone_len as usize]).filter(|p| !p.is_empty());
    let req = Request {
        database: pg_sys::Oid::from(s.database),
        tenant: pgrx::Uuid::from_bytes(s.tenant),
        attempt: s.attempt.map(pgrx::Uuid::from_bytes),
        code,
        waba,
        phone,
    };
    s.clear();
    Some(req)
}

/// The caller's side: starts the worker for `req` and waits until it has exited. An interrupt
/// (cancel, statement_timeout) ends the wait at once with its error; the worker goes on.
pub fn run(req: &Request) -> WaResult<()> {
    if !PRELOADED.load(Ordering::Relaxed) {
        return Err(WaError::NotReady {
            message: "whatsapp_pg is not preloaded".into(),
            hint: "Add whatsapp_pg to shared_preload_libraries and restart the server.".into(),
        });
    }
    let (index, generation) = put(req)?;
    let arg = (u64::from(generation) << 8) | index as u64;
    // SAFETY: reading this backend's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let started = BackgroundWorkerBuilder::new("whatsapp_pg signup")
        .set_type("whatsapp_pg signup")
        .set_library("whatsapp_pg")
        .set_function("wa_signup_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(arg)))
        .set_notify_pid(me)
        .set_restart_time(None)
        .load_dynamic();
    let worker = match started {
        Ok(w) => w,
        Err(_) => {
            withdraw(index, generation);
            return Err(WaError::Limit {
                message: "no background worker is free to run the signup".into(),
                hint: "Raise max_worker_processes, or try again when fewer workers run.".into(),
            });
        }
    };
    let ended = worker.wait_for_shutdown();
    if withdraw(index, generation) {
        return Err(WaError::Internal(
            "the signup worker did not start (see the server log)".into(),
        ));
    }
    match ended {
        Ok(()) => Ok(()),
        Err(BackgroundWorkerStatus::PostmasterDied) => Err(WaError::Internal(
            "the server stopped during the signup".into(),
        )),
        Err(_) => Err(WaError::Internal("lost track of the signup worker".into())),
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (sets ProcDiePending and the latch); the
    /// symbol itself, as a signal handler, not pgrx's guarded wrapper.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// The signup worker's entry point (started by `run`).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn wa_signup_main(arg: pg_sys::Datum) {
    // SAFETY: installing PostgreSQL's own handler before signals are unblocked: SIGTERM
    // (pg_terminate_backend, shutdown) ends the worker at its next interrupt check, which
    // every Graph call makes ten times a second.
    unsafe {
        pg_sys::pqsignal(libc::SIGTERM, Some(postgres_die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let Some(req) = take(arg.value() as u64) else {
        pgrx::log!("whatsapp_pg signup: nothing to do (the call was withdrawn)");
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(req.database), None);
    crate::worker::pin_signup_session();
    if !crate::worker::become_role(c"wa_owner") {
        pgrx::log!("whatsapp_pg signup: the extension is not installed in this database");
        return;
    }
    super::drive(&req);
}
