//! `whatsapp-gateway` — the thin HTTP service Meta calls, in front of the `whatsapp_pg`
//! extension. It owns no business logic: every request becomes one SQL call
//! (`wa.verify_webhook`, `wa.ingest_signed_webhook`, `wa.signup_config`, `wa.complete_signup`)
//! and the SQLSTATE of a failure decides the HTTP status, so Meta retries what the database
//! could not take and stops retrying what it will never take.
//!
//! The flow of a request: `server` (routing, metrics, logs) → `webhook` / `signup` /
//! `assets` / `ops` → `db` (pool, error classification); `cors` wraps the two signup API
//! routes only. The signup state the browser brings is the database's (`wa.begin_signup`):
//! the gateway passes it on and holds no secret of its own.

pub mod assets;
pub mod config;
pub mod cors;
pub mod db;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod signup;
pub mod webhook;

pub use config::{Config, ConnectPage};
pub use cors::AllowedOrigins;
pub use server::{App, router, serve};
