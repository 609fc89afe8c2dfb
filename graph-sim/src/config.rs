//! Configuration: what the simulator starts with. Most of it can be changed at run time through
//! the admin API (`/_sim/...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::errors::GraphError;

/// Everything the simulator starts with. `SimConfig::default()` is a realistic Meta: 80 msg/s
/// per number, the pair rate limit on, signup codes valid 30 s, no webhooks.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The Technology Provider's Meta app (`client_id` for `/oauth/access_token`).
    pub app_id: String,
    /// The app secret: checked on code exchange, signs webhooks (unless
    /// `webhooks.app_secret` overrides it).
    pub app_secret: String,
    pub app_name: String,
    /// Tokio worker threads serving requests (1–2 is right for a 2-core box).
    pub worker_threads: usize,
    /// Throughput limit per phone number in msg/s (token bucket, burst = one second's worth);
    /// `None` turns it off. Numbers can override it (admin API, seed).
    pub rate_limit_per_number: Option<u32>,
    /// Per (number, recipient) pair limit, error 131056.
    pub pair_rate_limit: bool,
    /// One message per this interval per pair, on average (Meta: about 6 s).
    pub pair_interval: Duration,
    /// Burst allowed per pair before the interval applies.
    pub pair_burst: u32,
    /// How long a signup code stays exchangeable.
    pub code_ttl: Duration,
    /// How long a media download URL stays valid (Meta: 5 minutes).
    pub media_url_ttl: Duration,
    /// Template sends must name an APPROVED template of the WABA (else 132001).
    pub strict_templates: bool,
    /// Request log capacity (oldest records are dropped beyond it; counters keep counting).
    pub max_log_records: usize,
    /// Seed for the fault dice / jitter (repeatable runs). `None` = random.
    pub random_seed: Option<u64>,
    pub faults: FaultSettings,
    pub webhooks: WebhookSettings,
    /// Businesses, tokens and media present from the start.
    pub seed: Seed,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            app_id: "1234567890123456".into(),
            app_secret: "sim-app-secret".into(),
            app_name: "whatsapp_pg (simulated app)".into(),
            worker_threads: 2,
            rate_limit_per_number: Some(80),
            pair_rate_limit: true,
            pair_interval: Duration::from_secs(6),
            pair_burst: 45,
            code_ttl: Duration::from_secs(30),
            media_url_ttl: Duration::from_secs(300),
            strict_templates: false,
            max_log_records: 200_000,
            random_seed: None,
            faults: FaultSettings::default(),
            webhooks: WebhookSettings::default(),
            seed: Seed::default(),
        }
    }
}

impl SimConfig {
    /// Everything switched off that could slow or reject a benchmark: no rate limits, no
    /// webhooks, no faults.
    pub fn benchmark() -> Self {
        SimConfig {
            rate_limit_per_number: None,
            pair_rate_limit: false,
            ..SimConfig::default()
        }
    }
}

/// Fault injection for Graph endpoints (not `/_sim/`). Settable at start and via
/// `POST /_sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultSettings {
    /// Added latency in ms; with `latency_max_ms` > `latency_ms` it is uniform in the range.
    pub latency_ms: u64,
    pub latency_max_ms: u64,
    /// Share (0..1) of requests answered with a 5xx Graph error (500 code 1, 503 code 2 or
    /// 500 code 131000, chosen at random).
    pub error_ratio: f64,
    /// Share (0..1) of requests held for `timeout_ms` before the answer.
    pub timeout_ratio: f64,
    /// How long a "timed out" request is held; 0 = never answered (until the client hangs up).
    pub timeout_ms: u64,
    /// `true`: the held request still takes effect (message accepted, answer late) — the
    /// case that tests idempotency. `false`: nothing happens, the late answer is a 503.
    pub timeout_processes: bool,
    /// Restrict latency/errors/timeouts to these endpoints (names as in `/_sim/stats`);
    /// empty = every Graph endpoint.
    pub endpoints: Vec<String>,
    /// Recipients (wa_id or BSUID) whose messages fail permanently.
    pub failing_recipients: BTreeMap<String, RecipientFault>,
    /// Tokens answered with 190 (also `POST /_sim/tokens/{token}/revoke`).
    pub revoked_tokens: Vec<String>,
}

impl Default for FaultSettings {
    fn default() -> Self {
        FaultSettings {
            latency_ms: 0,
            latency_max_ms: 0,
            error_ratio: 0.0,
            timeout_ratio: 0.0,
            timeout_ms: 0,
            timeout_processes: true,
            endpoints: Vec::new(),
            failing_recipients: BTreeMap::new(),
            revoked_tokens: Vec::new(),
        }
    }
}

/// How a failing recipient fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientFault {
    /// 131026 (undeliverable), 131047 (24 h window), or any other code.
    pub code: u32,
    /// `sync`: the send is rejected (HTTP 400). `async`: the send is accepted and a `failed`
    /// status webhook follows.
    #[serde(default)]
    pub mode: FailMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Sync,
    Async,
}

/// Scripted failure: the next `count` matching requests get `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailNextRule {
    /// Endpoint name (`send`, `oauth_access_token`, `subscribed_apps`, `register`, ...).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_contains: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    pub count: u32,
    pub error: GraphError,
}

/// Status webhooks and their delivery. Settable at start and via `POST /_sim/webhook_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Where webhooks are POSTed (`http://` only). `None`: no webhooks are generated at all.
    pub url: Option<String>,
    /// Signing secret; `None` = the app secret.
    pub app_secret: Option<String>,
    /// Statuses emitted for every accepted message, in order.
    pub statuses: Vec<String>,
    /// Delay before the first status and between successive ones.
    pub status_delay_ms: u64,
    /// Share (0..1) of deliveries POSTed twice (Meta delivers at least once).
    pub duplicate_ratio: f64,
    /// Shuffle events within `reorder_window_ms`.
    pub reorder: bool,
    pub reorder_window_ms: u64,
    /// Most events (statuses or messages) in one delivery.
    pub batch_max: usize,
    /// Retries of a delivery answered non-2xx (or not at all).
    pub retries: u32,
    /// First retry delay; doubles each time.
    pub retry_backoff_ms: u64,
    /// Deliveries in flight at once (fixed at start).
    pub concurrency: usize,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Include `recipient_user_id` (BSUID) in statuses also for sends addressed to a phone
    /// number (derived if not learnt from an inbound message).
    pub include_user_ids: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            url: None,
            app_secret: None,
            statuses: vec!["sent".into(), "delivered".into(), "read".into()],
            status_delay_ms: 50,
            duplicate_ratio: 0.0,
            reorder: false,
            reorder_window_ms: 200,
            batch_max: 10,
            retries: 3,
            retry_backoff_ms: 100,
            concurrency: 4,
            timeout_ms: 5_000,
            include_user_ids: true,
        }
    }
}

/// Initial world, e.g. from `--seed FILE` (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seed {
    pub businesses: Vec<SeedBusiness>,
    pub media: Vec<SeedMedia>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedBusiness {
    pub waba_id: Option<String>,
    pub name: Option<String>,
    pub phone_numbers: Vec<SeedNumber>,
    /// System-user tokens valid for this WABA (the manual `connect_tenant` path).
    pub tokens: Vec<String>,
    /// Extra templates (the defaults `hello_world` etc. are always there).
    pub templates: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedNumber {
    pub id: Option<String>,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    /// Per-number throughput override (msg/s); ≥ 1000 shows as `throughput.level` HIGH.
    pub rate_limit_per_sec: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedMedia {
    pub id: Option<String>,
    pub mime_type: Option<String>,
    /// Content as text (UTF-8).
    pub text: Option<String>,
    /// Content as base64.
    pub data_base64: Option<String>,
}
