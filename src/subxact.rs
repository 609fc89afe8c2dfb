//! Running a piece of work in an internal subtransaction, so that a PostgreSQL error inside it
//! rolls back only that work (as a PL/pgSQL EXCEPTION block does) and becomes a Rust error.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// Runs `f` in a subtransaction. On a PostgreSQL error or a panic the subtransaction is rolled
/// back and the error's message is returned; the surrounding transaction goes on.
pub fn run<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
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
            let message = match &caught {
                CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => {
                    format!(
                        "{} (SQLSTATE {})",
                        e.message(),
                        sqlstate(e.sql_error_code())
                    )
                }
                CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            };
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Err(message)
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
