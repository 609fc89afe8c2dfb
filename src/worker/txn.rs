//! Transactions in the worker that survive errors: a PostgreSQL error (or a panic) inside one
//! unit of work aborts that transaction, is logged, and the worker goes on.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// Runs `f` in its own transaction and commits it; on error, aborts it and returns the
/// error's message.
pub fn run<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    run_until(|| Ok::<R, std::convert::Infallible>(f()))
}

/// As `run`, for work that reports its own failure: an `Err` from `f` aborts the transaction
/// too (nothing of a unit of work that failed half-way is committed).
pub fn run_ok<R, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<R, E> + std::panic::UnwindSafe,
) -> Result<R, String> {
    run_until(f)
}

fn run_until<R, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<R, E> + std::panic::UnwindSafe,
) -> Result<R, String> {
    // SAFETY: the worker's main thread, outside any transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(move || f().map_err(|e| e.to_string()))
        .catch_others(|caught| {
            Err(match &caught {
                CaughtError::PostgresError(e) | CaughtError::ErrorReport(e) => {
                    e.message().to_string()
                }
                CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
            })
        })
        .execute();
    // SAFETY: end the transaction begun above, one way or the other.
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    outcome
}
