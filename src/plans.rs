//! Plans kept for the life of a backend, for statements run once per webhook part. Parsing
//! and planning them on every call cost about a tenth of the ingest path. PostgreSQL
//! re-plans a kept plan by itself when what it depends on changes.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{BuiltinOid, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiError};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    // Backends are single-threaded: a thread-local is the backend's cache.
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

pub const UUID: PgOid = PgOid::BuiltIn(BuiltinOid::UUIDOID);
pub const TEXT: PgOid = PgOid::BuiltIn(BuiltinOid::TEXTOID);
pub const JSONB: PgOid = PgOid::BuiltIn(BuiltinOid::JSONBOID);
pub const FLOAT8: PgOid = PgOid::BuiltIn(BuiltinOid::FLOAT8OID);
pub const INT8: PgOid = PgOid::BuiltIn(BuiltinOid::INT8OID);
pub const INT4: PgOid = PgOid::BuiltIn(BuiltinOid::INT4OID);
pub const INT8_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::INT8ARRAYOID);
pub const INT4_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::INT4ARRAYOID);
pub const TEXT_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::TEXTARRAYOID);
pub const FLOAT8_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::FLOAT8ARRAYOID);
pub const JSONB_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::JSONBARRAYOID);

/// A kept plan takes its arguments as the types it was prepared with: an argument of another
/// type would be read as that type, silently. Refuse the mismatch instead.
fn check_types(sql: &str, types: &[PgOid], args: &[DatumWithOid<'_>]) -> Result<(), SpiError> {
    let matches =
        types.len() == args.len() && types.iter().zip(args).all(|(t, a)| t.value() == a.oid());
    if matches {
        Ok(())
    } else {
        pgrx::error!("internal error: kept plan called with mismatched argument types: {sql}")
    }
}

/// Runs `sql` (parameter types `types`) with its kept plan and returns the first column of
/// the first row.
pub fn get_one<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Result<Option<T>, SpiError> {
    with_plan(sql, types, args, |client, plan, args| {
        let table = client.update(plan, Some(1), args)?;
        if table.is_empty() {
            Ok(None)
        } else {
            table.first().get_one::<T>()
        }
    })
}

/// Runs `f` with the kept plan of `sql` inside an SPI connection; `args` are checked against
/// `types` (pass the arguments `f` will use).
pub fn with_plan<R>(
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    f: impl FnOnce(
        &mut pgrx::spi::SpiClient<'_>,
        &OwnedPreparedStatement,
        &[DatumWithOid<'_>],
    ) -> Result<R, SpiError>,
) -> Result<R, SpiError> {
    check_types(sql, types, args)?;
    Spi::connect_mut(|client| {
        PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if !plans.contains_key(sql) {
                let plan = client.prepare_mut(sql, types)?.keep();
                plans.insert(sql, plan);
            }
            match plans.get(sql) {
                Some(plan) => f(client, plan, args),
                None => Err(SpiError::NoTupleTable),
            }
        })
    })
}
