//! Runtime configuration. `main.rs` builds it from flags and environment; tests build it
//! directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::cors::AllowedOrigins;

/// Meta caps a webhook delivery at 3 MB; 4 MiB leaves headroom.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Test hooks for the demo page `/connect`: where the Facebook SDK is loaded from and which
/// `message` origin counts as Facebook. Production leaves both unset (Meta's SDK, origins
/// ending in `facebook.com`).
#[derive(Clone, Debug, Default)]
pub struct ConnectPage {
    pub sdk_url: Option<String>,
    pub message_origin: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// libpq-style `key=value` string or `postgres://` URL.
    pub database_url: String,
    /// Served under `/assets/`; without it `/assets/*` is 404.
    pub assets_dir: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub pool_size: usize,
    /// Connect, pool-wait and recycle timeout: how long a request waits for a database
    /// connection before answering 503.
    pub db_timeout: Duration,
    pub connect_page: ConnectPage,
    /// Origins allowed to call `/signup/config` and `/signup/exchange` from a browser page
    /// served elsewhere; empty (the default): no CORS headers, same-origin only.
    pub allowed_origins: AllowedOrigins,
}

impl Config {
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            assets_dir: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pool_size: 8,
            db_timeout: Duration::from_secs(5),
            connect_page: ConnectPage::default(),
            allowed_origins: AllowedOrigins::default(),
        }
    }
}
