//! The one place where extension errors become PostgreSQL errors with a SQLSTATE.
//!
//! Messages follow PostgreSQL's style guide: lower case, no trailing period, specifics in
//! DETAIL, the fix in HINT. No variant ever carries a token, key or app secret.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum WaError {
    /// 22023: an argument has the wrong shape.
    #[error("{message}")]
    InvalidParameter {
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// 55000: something must be set up first (key file, Meta app, connection).
    #[error("{message}")]
    NotReady { message: String, hint: String },
    /// 28000: a signature or verify token does not match.
    #[error("{message}")]
    InvalidAuthorization {
        message: String,
        detail: String,
        hint: String,
    },
    /// F0000: the key file is unusable.
    #[error("{message}")]
    KeyFile {
        message: String,
        detail: String,
        hint: String,
    },
    /// XX001: a stored secret cannot be opened with the configured keys.
    #[error("{message}")]
    Undecryptable { message: String, detail: String },
    /// 22004: a required argument is NULL.
    #[error("{0}")]
    NullValue(&'static str),
    /// 53400: a limit of the server is reached for now (background worker slots).
    #[error("{message}")]
    Limit { message: String, hint: String },
    /// 25000: the call cannot run in the caller's transaction as it is.
    #[error("{message}")]
    TransactionState { message: String, hint: String },
    /// XX000: a bug or an unexpected SPI failure.
    #[error("{0}")]
    Internal(String),
}

impl WaError {
    pub fn invalid(message: impl Into<String>) -> Self {
        WaError::InvalidParameter {
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn invalid_with_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        WaError::InvalidParameter {
            message: message.into(),
            detail: None,
            hint: Some(hint.into()),
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            WaError::InvalidParameter { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            WaError::NullValue(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            WaError::NotReady { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            WaError::KeyFile { .. } => ERRCODE_CONFIG_FILE_ERROR,
            WaError::InvalidAuthorization { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            WaError::Undecryptable { .. } => ERRCODE_DATA_CORRUPTED,
            WaError::Limit { .. } => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            WaError::TransactionState { .. } => ERRCODE_INVALID_TRANSACTION_STATE,
            WaError::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raises this error in the current backend (does not return).
    pub fn raise(self) -> ! {
        let code = self.sqlstate();
        let mut report = ErrorReport::new(code, self.to_string(), "whatsapp_pg");
        match self {
            WaError::InvalidParameter { detail, hint, .. } => {
                if let Some(d) = detail {
                    report = report.set_detail(d);
                }
                if let Some(h) = hint {
                    report = report.set_hint(h);
                }
            }
            WaError::NotReady { hint, .. }
            | WaError::Limit { hint, .. }
            | WaError::TransactionState { hint, .. } => report = report.set_hint(hint),
            WaError::Undecryptable { detail, .. } => report = report.set_detail(detail),
            WaError::KeyFile { detail, hint, .. }
            | WaError::InvalidAuthorization { detail, hint, .. } => {
                report = report.set_detail(detail).set_hint(hint)
            }
            WaError::NullValue(_) | WaError::Internal(_) => {}
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

impl From<pgrx::spi::SpiError> for WaError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        WaError::Internal(format!("SPI failure: {e}"))
    }
}

pub type WaResult<T> = Result<T, WaError>;

/// Unwraps a result or raises its error as a PostgreSQL error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for WaResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
