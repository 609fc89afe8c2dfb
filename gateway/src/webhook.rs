//! `GET /webhook` (Meta's subscription handshake) and `POST /webhook` (deliveries).
//!
//! A delivery is answered 200 only after the transaction that stored it committed, so a
//! delivery we could not store is one Meta sends again.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::db::{DbFailure, SqlError};
use crate::error::ApiError;
use crate::server::App;

#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

pub async fn verify(State(app): State<Arc<App>>, Query(q): Query<Handshake>) -> Response {
    let result = async {
        let client = app.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT wa.verify_webhook($1::text, $2::text, $3::text)")
            .await?;
        let row = client
            .query_one(&stmt, &[&q.mode, &q.verify_token, &q.challenge])
            .await?;
        Ok::<Option<String>, DbFailure>(row.try_get(0)?)
    }
    .await;
    match result {
        Ok(Some(challenge)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge,
        )
            .into_response(),
        Ok(None) => forbidden(),
        Err(DbFailure::Sql(e)) if !unavailable_sql(&e) => {
            tracing::info!(sqlstate = %e.sqlstate, message = %e.message, "webhook handshake refused");
            forbidden()
        }
        Err(f) => ApiError::from_db(f, |_| StatusCode::SERVICE_UNAVAILABLE).into_response(),
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "forbidden",
    )
        .into_response()
}

/// Failures that say nothing about the request: the database (or the extension in it) can't
/// take it now. Answering 5xx makes Meta retry later.
fn unavailable_sql(e: &SqlError) -> bool {
    e.is_transient()
        // The extension is installed but not configured yet (no app secret / verify token).
        || e.sqlstate == "55000"
        // The extension is older than the gateway (function missing).
        || e.sqlstate == "42883"
        || e.sqlstate == "3F000"
}

/// HTTP status for a refused delivery.
fn ingest_status(e: &SqlError) -> StatusCode {
    if unavailable_sql(e) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if e.class() == "28" {
        StatusCode::UNAUTHORIZED
    } else if e.class() == "22" {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

fn reason_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "bad_signature",
        StatusCode::BAD_REQUEST => "malformed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal",
    }
}

pub async fn receive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            app.metrics.ingest_error(reason_for(status));
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "webhook body larger than {} bytes",
                    app.config.max_body_bytes
                )
            } else {
                "could not read the request body".to_string()
            };
            return ApiError::new(status, msg).into_response();
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        app.metrics.ingest_error("malformed");
        return ApiError::new(StatusCode::BAD_REQUEST, "webhook body is not UTF-8 text")
            .into_response();
    };
    // A missing or unreadable header still goes to SQL (as an empty signature): the
    // extension decides, and keeps its own record of the rejected delivery.
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");

    let result = async {
        let mut client = app.pool.get().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("SELECT wa.ingest_signed_webhook($1::text, $2::text)")
            .await?;
        let row = tx.query_one(&stmt, &[&text, &signature]).await?;
        let summary: Option<Value> = row.try_get(0)?;
        // COMMIT explicitly: its success, not the function's, is what makes the 200 true.
        tx.commit().await?;
        Ok::<Option<Value>, DbFailure>(summary)
    }
    .await;

    match result {
        Ok(summary) => {
            let failed = summary
                .as_ref()
                .and_then(|s| s.get("errors"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            app.metrics.ingested(failed);
            tracing::info!(
                bytes = body.len(),
                failed_parts = failed,
                "webhook delivery stored"
            );
            (StatusCode::OK, Json(summary.unwrap_or(Value::Null))).into_response()
        }
        Err(f) => {
            let err = ApiError::from_db(f, ingest_status);
            app.metrics.ingest_error(reason_for(err.status));
            err.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::sql_error_with_code as sql;

    #[test]
    fn bad_signature_is_401_malformed_is_400_outage_is_503() {
        assert_eq!(ingest_status(&sql("28000")), StatusCode::UNAUTHORIZED);
        assert_eq!(ingest_status(&sql("22023")), StatusCode::BAD_REQUEST);
        assert_eq!(ingest_status(&sql("22P02")), StatusCode::BAD_REQUEST);
        assert_eq!(
            ingest_status(&sql("57P01")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ingest_status(&sql("40001")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ingest_status(&sql("55000")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A lock timeout (the tenant's row held by another session): Meta retries.
        assert_eq!(
            ingest_status(&sql("55P03")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ingest_status(&sql("40P01")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ingest_status(&sql("XX000")),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
