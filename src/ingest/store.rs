//! The raw webhook log, `wa.webhook_events`: every delivery is stored before it is processed.

use crate::error::{WaError, WaResult};
use pgrx::prelude::*;
use serde_json::Value;

/// Stores a delivery whose signature was verified. The body is kept as jsonb when PostgreSQL
/// can hold it as such, otherwise verbatim as text (not JSON, or JSON with `\u0000`, which
/// jsonb cannot represent) so that nothing is lost.
pub fn store_signed(body: &str) -> WaResult<i64> {
    let as_jsonb =
        !body.contains("\\u0000") && serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
    let sql = if as_jsonb {
        "INSERT INTO wa.webhook_events (signature_verified, payload) VALUES (true, $1::jsonb)
         RETURNING webhook_event_id"
    } else {
        "INSERT INTO wa.webhook_events (signature_verified, raw_body) VALUES (true, $1)
         RETURNING webhook_event_id"
    };
    Spi::get_one_with_args::<i64>(sql, &[body.into()])?
        .ok_or_else(|| WaError::Internal("webhook event was not stored".into()))
}

/// Records how processing ended.
pub fn finish(event_id: i64, status: &str, summary: &Value, errors: &[Value]) -> WaResult<()> {
    let errors = if errors.is_empty() {
        None
    } else {
        Some(pgrx::JsonB(Value::Array(errors.to_vec())))
    };
    crate::plans::get_one::<i64>(
        "UPDATE wa.webhook_events
            SET status = $2, summary = $3, errors = $4, processed_at = pg_catalog.clock_timestamp()
          WHERE webhook_event_id = $1
         RETURNING webhook_event_id",
        &[
            crate::plans::INT8,
            crate::plans::TEXT,
            crate::plans::JSONB,
            crate::plans::JSONB,
        ],
        &[
            event_id.into(),
            status.into(),
            pgrx::JsonB(summary.clone()).into(),
            errors.into(),
        ],
    )?;
    Ok(())
}
