//! The raw webhook log, `wa.webhook_events`: every delivery is stored before it is processed.

use crate::error::{WaError, WaResult};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
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

/// Stores a delivery given as jsonb by a caller who vouches for its origin.
pub fn store_unsigned(payload: JsonbArg) -> WaResult<i64> {
    crate::plans::get_one::<i64>(
        "INSERT INTO wa.webhook_events (signature_verified, payload) VALUES (false, $1)
         RETURNING webhook_event_id",
        &[crate::plans::JSONB],
        &[payload.into()],
    )?
    .ok_or_else(|| WaError::Internal("webhook event was not stored".into()))
}

/// A jsonb argument as PostgreSQL passed it: stored as it is and read as text once, rather
/// than decoded and encoded again as `pgrx::JsonB` would (for a 3 MB body that is two more
/// passes over it).
#[derive(Clone, Copy)]
pub struct JsonbArg(pg_sys::Datum);

impl JsonbArg {
    /// The payload as JSON text (`jsonb_out`).
    pub fn text(self) -> WaResult<String> {
        // SAFETY: the datum is a jsonb argument of the running function call, valid for its
        // duration; jsonb_out detoasts it and returns a palloc'd C string.
        let text = unsafe {
            pgrx::fcinfo::direct_function_call::<&std::ffi::CStr>(
                pg_sys::jsonb_out,
                &[Some(self.0)],
            )
        }
        .ok_or_else(|| WaError::Internal("jsonb_out returned NULL".into()))?;
        text.to_str()
            .map(str::to_owned)
            .map_err(|_| WaError::invalid("the payload is not valid UTF-8"))
    }
}

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(JsonbArg(datum))
    }
}

impl IntoDatum for JsonbArg {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: a jsonb argument is unboxed as its datum, through FromDatum, nulls included.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) passes an argument of this function.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| pgrx::error!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: as above.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

pgrx::impl_sql_translatable!(JsonbArg, arg_only = "jsonb");

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
