//! Configuration parameters, all under the reserved `wa.` prefix.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub static KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static GRAPH_API_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"https://graph.facebook.com"));
pub static GRAPH_API_VERSION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"v25.0"));
pub static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ACTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ALLOW_ANY_DATABASE: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static WORKER_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4000);
pub static WORKER_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static RATE_LIMIT_PER_NUMBER: GucSetting<i32> = GucSetting::<i32>::new(80);
pub static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(15_000);
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static MEDIA_MAX_BYTES: GucSetting<i32> = GucSetting::<i32>::new(100 * 1024 * 1024);
pub static SENDING_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static OUTCOME_GRACE_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);

pub fn register() {
    GucRegistry::define_string_guc(
        c"wa.key_file",
        c"Path of the file holding the master keys that encrypt stored secrets.",
        c"One key per line as id:base64 (32 bytes); the last encrypts, all decrypt. The file must be readable only by the server's OS user. It is never stored in the database.",
        &KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"wa.database",
        c"Database whose outbound queue the background worker serves.",
        c"The extension can only be created in this database.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"wa.allow_any_database",
        c"Allows CREATE EXTENSION in databases other than wa.database (test clusters).",
        c"Only the database named by wa.database is served by the background worker.",
        &ALLOW_ANY_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"wa.graph_api_url",
        c"Base URL of Meta's Graph API.",
        c"Point it at a simulator for tests.",
        &GRAPH_API_URL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"wa.graph_api_version",
        c"Graph API version used in request paths, e.g. v25.0.",
        c"",
        &GRAPH_API_VERSION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"wa.tenant_id",
        c"The tenant this session acts for; row-level security shows wa_app only its rows.",
        c"Set per session or per transaction (SET LOCAL) by the host application.",
        &TENANT_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"wa.acting",
        c"Set by whatsapp_pg's functions: the tenant the transaction acts for, signed (Citus).",
        c"Carries the caller's scope to the shards on Citus worker nodes; a value set by hand does not verify.",
        &ACTING,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    int(
        c"wa.worker_batch_size",
        c"Outbox rows the worker claims per batch.",
        &WORKER_BATCH_SIZE,
        1,
        100_000,
    );
    int(
        c"wa.worker_concurrency",
        c"HTTP requests the worker keeps in flight.",
        &WORKER_CONCURRENCY,
        1,
        512,
    );
    int(
        c"wa.rate_limit_per_number",
        c"Default messages per second per business phone number.",
        &RATE_LIMIT_PER_NUMBER,
        1,
        10_000,
    );
    int(
        c"wa.http_timeout_ms",
        c"Timeout of each Graph API request phase, in milliseconds.",
        &HTTP_TIMEOUT_MS,
        100,
        600_000,
    );
    int(
        c"wa.max_attempts",
        c"Attempts before a transiently failing message is marked failed.",
        &MAX_ATTEMPTS,
        1,
        1000,
    );
    int(
        c"wa.media_max_bytes",
        c"Largest inbound media file the worker downloads.",
        &MEDIA_MAX_BYTES,
        1024,
        i32::MAX,
    );
    GucRegistry::define_bool_guc(
        c"wa.sending_enabled",
        c"Whether the background worker sends anything at all.",
        c"Switch it off (ALTER SYSTEM + pg_reload_conf()) to stop every tenant's sending at once; messages keep queuing.",
        &SENDING_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"wa.outcome_grace_ms",
        c"How long a send whose outcome is unknown waits for Meta's status webhook before it is sent again.",
        &OUTCOME_GRACE_MS,
        0,
        86_400_000,
    );
    // Makes `SET wa.typo = ...` an error instead of a silently ignored placeholder.
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17", feature = "pg18"))]
    // SAFETY: called from _PG_init on the main thread with a static C string.
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"wa".as_ptr())
    };
}

fn int(
    name: &'static std::ffi::CStr,
    short: &'static std::ffi::CStr,
    setting: &'static GucSetting<i32>,
    min: i32,
    max: i32,
) {
    GucRegistry::define_int_guc(
        name,
        short,
        c"",
        setting,
        min,
        max,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

pub fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.is_empty())
}
