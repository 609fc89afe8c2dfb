//! Runtime configuration. `main.rs` builds it from flags and environment; tests build it
//! directly.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::cors::AllowedOrigins;

/// Meta caps a webhook delivery at 3 MB; 4 MiB leaves headroom.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The HMAC key for signup state. Debug output never shows it.
#[derive(Clone)]
pub struct StateSecret(Vec<u8>);

impl StateSecret {
    /// Shortest secret accepted: 16 bytes (a 32-byte random value is recommended).
    pub const MIN_LEN: usize = 16;

    pub fn new(secret: impl Into<Vec<u8>>) -> Result<StateSecret, String> {
        let bytes = secret.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "the state secret must be at least {} bytes long",
                Self::MIN_LEN
            ));
        }
        Ok(StateSecret(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for StateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateSecret(<redacted>)")
    }
}

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
    /// Without it `POST /signup/exchange` answers 503.
    pub state_secret: Option<StateSecret>,
    /// Served under `/assets/`; without it `/assets/*` is 404.
    pub assets_dir: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub pool_size: usize,
    /// Connect, pool-wait and recycle timeout: how long a request waits for a database
    /// connection before answering 503.
    pub db_timeout: Duration,
    /// States whose expiry lies further ahead than this are refused (a mis-minted,
    /// long-lived state is as good as a password).
    pub state_max_ttl: Duration,
    pub connect_page: ConnectPage,
    /// Origins allowed to call `/signup/config` and `/signup/exchange` from a browser page
    /// served elsewhere; empty (the default): no CORS headers, same-origin only.
    pub allowed_origins: AllowedOrigins,
}

impl Config {
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            state_secret: None,
            assets_dir: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            pool_size: 8,
            db_timeout: Duration::from_secs(5),
            state_max_ttl: Duration::from_secs(24 * 3600),
            connect_page: ConnectPage::default(),
            allowed_origins: AllowedOrigins::default(),
        }
    }
}
