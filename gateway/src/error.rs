//! The JSON error body every non-webhook-handshake route answers with:
//! `{"error": {"sqlstate"?, "message", "detail"?, "hint"?}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::db::{DbFailure, SqlError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub sqlstate: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            sqlstate: None,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn from_sql(status: StatusCode, e: SqlError) -> ApiError {
        ApiError {
            status,
            sqlstate: Some(e.sqlstate),
            message: e.message,
            detail: e.detail,
            hint: e.hint,
        }
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable, try again",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The common mapping of a database failure; `sql_status` decides for refused statements.
    pub fn from_db(f: DbFailure, sql_status: impl FnOnce(&SqlError) -> StatusCode) -> ApiError {
        match f {
            DbFailure::Unavailable => ApiError::unavailable(),
            DbFailure::Internal(msg) => {
                tracing::error!(error = %msg, "internal database client error");
                ApiError::internal()
            }
            DbFailure::Sql(e) => {
                let status = sql_status(&e);
                if status.is_server_error() {
                    tracing::error!(sqlstate = %e.sqlstate, message = %e.message, "statement failed");
                } else {
                    tracing::info!(sqlstate = %e.sqlstate, message = %e.message, "statement refused");
                }
                ApiError::from_sql(status, e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = Map::new();
        if let Some(s) = self.sqlstate {
            err.insert("sqlstate".into(), Value::String(s));
        }
        err.insert("message".into(), Value::String(self.message));
        if let Some(d) = self.detail {
            err.insert("detail".into(), Value::String(d));
        }
        if let Some(h) = self.hint {
            err.insert("hint".into(), Value::String(h));
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}
