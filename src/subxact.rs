//! Running a piece of work in an internal subtransaction, so that a PostgreSQL error inside it
//! rolls back only that work (as a PL/pgSQL EXCEPTION block does) and becomes a Rust error.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// What made a subtransaction fail: the error's message and SQLSTATE.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: PgSqlErrorCode,
}

impl Failure {
    /// Errors that say nothing about the work itself, only about the moment: serialization
    /// failures and deadlocks (class 40), resources (53), cancels, timeouts and shutdown (57),
    /// lost connections (08) and lock timeouts (55P03). The whole unit of work must fail with
    /// them, so that it is tried again as a whole (a webhook: Meta retries after a 5xx).
    pub fn is_transient(&self) -> bool {
        let state = sqlstate(self.code);
        matches!(&state[..2], "40" | "53" | "57" | "08") || state == "55P03"
    }

    /// Raises this error again in the surrounding (sub)transaction.
    pub fn raise(&self) -> ! {
        pgrx::pg_sys::panic::ErrorReport::new(self.code, self.message.clone(), "whatsapp_pg")
            .report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, sqlstate(self.code))
    }
}

/// Runs `f` in a subtransaction. On a PostgreSQL error or a panic the subtransaction is rolled
/// back and the error is returned; the surrounding transaction goes on.
pub fn run<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, Failure> {
    // SAFETY: the standard internal-subtransaction protocol (as PL/pgSQL uses): remember the
    // memory context and resource owner, begin, and on exit release or roll back and restore.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        PgTryBuilder::new(move || {
            let value = f();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Ok(value)
        })
        .catch_others(move |caught| {
            pg_sys::MemoryContextSwitchTo(context);
            let failure = match &caught {
                CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => Failure {
                    message: e.message().to_string(),
                    code: e.sql_error_code(),
                },
                CaughtError::RustPanic { ereport, .. } => Failure {
                    message: ereport.message().to_string(),
                    code: ereport.sql_error_code(),
                },
            };
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Err(failure)
        })
        .execute()
    }
}

fn sqlstate(code: PgSqlErrorCode) -> String {
    // SQLSTATEs are packed 6 bits per character, lowest first.
    let mut n = code as i32;
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        out.push((((n & 0x3F) as u8) + b'0') as char);
        n >>= 6;
    }
    out
}
