//! whatsapp_pg: multi-tenant WhatsApp Business messaging inside PostgreSQL.
//!
//! This crate is the thin PostgreSQL layer: SQL functions, SPI, GUCs and (later) the
//! background worker. Everything that can be tested without a backend lives in the
//! `whatsapp-client` crate.

use pgrx::prelude::*;

mod app_config;
mod authz;
mod citus;
mod connect;
mod error;
mod graph;
mod guc;
mod ingest;
mod keys;
mod notify;
mod plans;
mod rotate;
mod send;
mod signup;
mod subxact;
mod worker;

::pgrx::pg_module_magic!(name, version);

// Tables, roles, row-level security and dump configuration, before any function.
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
// SQL-language API; needs the Rust helpers it calls to exist first.
extension_sql_file!(
    "../sql/api.sql",
    name = "api",
    requires = ["schema", authz::_caller_is_admin]
);
// Webhooks in: applying the parts src/ingest does not apply set-based.
extension_sql_file!("../sql/ingest.sql", name = "ingest", requires = ["schema"]);
// Sending and operations.
extension_sql_file!(
    "../sql/send.sql",
    name = "send",
    requires = ["read", "ingest", send::wake::_worker_pid]
);
// Reading conversations and messages.
extension_sql_file!("../sql/read.sql", name = "read", requires = ["api"]);
extension_sql_file!(
    "../sql/prune.sql",
    name = "prune",
    requires = ["schema", authz::_caller_is_admin]
);
// Where each table goes on a Citus cluster, and wa.distribute().
extension_sql_file!("../sql/citus.sql", name = "citus", requires = ["schema"]);
// Row-level security, policies and grants last, when every table and function exists.
extension_sql_file!("../sql/grants.sql", name = "grants", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Errors raised through pgrx carry a Rust backtrace in their DETAIL whenever the server was
    // started with RUST_BACKTRACE set (common on build machines): file paths and internals no
    // client should see. Backtraces are captured only when the standard library is told to,
    // and RUST_LIB_BACKTRACE takes precedence over RUST_BACKTRACE for that.
    // SAFETY: _PG_init runs on the main thread before this library starts any thread.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    guc::register();
    // SAFETY: reading flags PostgreSQL sets before it loads shared_preload_libraries.
    // Not under pg_upgrade (binary-upgrade mode): the old cluster's data is being moved, and
    // nothing may be sent from it (pg_cron does the same).
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress && !pg_sys::IsBinaryUpgrade } {
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'whatsapp_pg'",
            // Created by `make pgtest` before the test cluster starts.
            "wa.key_file = '/var/tmp/whatsapp_pg-pgtest/master.key'",
            "wa.database = 'pgrx_tests'",
            // No Graph API here: the worker's requests fail fast and are retried.
            "wa.graph_api_url = 'http://127.0.0.1:9'",
        ]
    }
}
