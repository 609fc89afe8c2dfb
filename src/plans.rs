//! Plans kept for the life of a backend, for statements run once per webhook part or worker
//! batch. Parsing and planning them on every call cost about a tenth of the ingest path.
//! PostgreSQL re-plans a kept plan by itself when what it depends on changes.
//!
//! Under `GenericPlans`, kept plans run with `plan_cache_mode = force_generic_plan` and without
//! sequential or bitmap scans, for statements over `unnest()`ed array parameters written as
//! index probes (LATERAL … LIMIT 1, joins on keys):
//! - Left to choose, PostgreSQL compares the generic plan's estimate with those of plans made
//!   for the actual parameters, and the custom plan, which knows the arrays' length, always
//!   looks cheaper: every execution is planned again, which cost single-message deliveries
//!   about 40% of their time.
//! - The generic plan guesses ten to a hundred array elements. Against a table of a few hundred
//!   rows, a hash join over a sequential or bitmap scan then looks cheaper than that many index
//!   probes, and every delivery would read all of the table or of the tenant's rows. Probes
//!   are right for one element and for a thousand (`pg_tests` checks the plans).

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
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
pub const INT2: PgOid = PgOid::BuiltIn(BuiltinOid::INT2OID);
pub const BOOL: PgOid = PgOid::BuiltIn(BuiltinOid::BOOLOID);
pub const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(BuiltinOid::TIMESTAMPTZOID);
pub const UUID_ARRAY: PgOid = PgOid::BuiltIn(BuiltinOid::UUIDARRAYOID);
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
        let declared: Vec<u32> = types.iter().map(|t| t.value().to_u32()).collect();
        let given: Vec<u32> = args.iter().map(|a| a.oid().to_u32()).collect();
        pgrx::error!(
            "internal error: kept plan called with argument types {given:?} instead of {declared:?}: {sql}"
        )
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

/// Settings for a kept plan: a list of (GUC, value).
pub type Settings = [(&'static std::ffi::CStr, &'static std::ffi::CStr)];

/// Generic plans that probe indexes (see the module's comment).
/// JIT is off too: a generic plan's estimates over arrays of unknown size can pass
/// `jit_above_cost`, and compiling costs far more than running these probes.
pub const GENERIC_PLAN_SETTINGS: [(&std::ffi::CStr, &std::ffi::CStr); 4] = [
    (c"plan_cache_mode", c"force_generic_plan"),
    (c"enable_seqscan", c"off"),
    (c"enable_bitmapscan", c"off"),
    (c"jit", c"off"),
];

/// As `GENERIC_PLAN_SETTINGS`, and every join a nested loop: for a statement whose only
/// joins are probes of a table by key from a small set of rows.
pub const NESTED_LOOP_PLAN_SETTINGS: [(&std::ffi::CStr, &std::ffi::CStr); 6] = [
    (c"plan_cache_mode", c"force_generic_plan"),
    (c"enable_seqscan", c"off"),
    (c"enable_bitmapscan", c"off"),
    (c"jit", c"off"),
    (c"enable_hashjoin", c"off"),
    (c"enable_mergejoin", c"off"),
];

/// Planner settings until dropped, as a function's `SET` clause does it: hold one while
/// running such statements with `with_plan`.
pub struct GenericPlans {
    nest_level: i32,
}

impl GenericPlans {
    /// `GENERIC_PLAN_SETTINGS`.
    pub fn enter() -> GenericPlans {
        GenericPlans::with(&GENERIC_PLAN_SETTINGS)
    }

    pub fn with(settings: &Settings) -> GenericPlans {
        // Generic plans except where Citus is loaded (src/citus.rs).
        let plan_cache_mode = crate::citus::probe_plan_cache_mode();
        // SAFETY: the GUC nest-level protocol of fmgr_security_definer: a new level, a
        // GUC_ACTION_SAVE setting at it, and AtEOXact_GUC to pop it (in Drop). An error in
        // between aborts the (sub)transaction, which pops the level as well.
        unsafe {
            let nest_level = pg_sys::NewGUCNestLevel();
            for (name, value) in settings {
                let value = if *name == c"plan_cache_mode" {
                    plan_cache_mode
                } else {
                    value
                };
                pg_sys::set_config_option(
                    name.as_ptr(),
                    value.as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    0,
                    false,
                );
            }
            GenericPlans { nest_level }
        }
    }
}

impl Drop for GenericPlans {
    fn drop(&mut self) {
        // SAFETY: pops exactly the level pushed in enter().
        unsafe { pg_sys::AtEOXact_GUC(true, self.nest_level) }
    }
}

/// Runs `sql` (parameter types `types`) with its kept plan, for its effect.
pub fn run(sql: &'static str, types: &[PgOid], args: &[DatumWithOid<'_>]) -> Result<(), SpiError> {
    with_plan(sql, types, args, |client, plan, args| {
        client.update(plan, None, args).map(|_| ())
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
