//! `graph_sim` — a local stand-in for Meta's Graph API (WhatsApp Cloud API).
//!
//! A real HTTP/1.1 server on loopback that speaks the Cloud API wire format (sends, media,
//! Embedded Signup code exchange, token debugging, WABA subscription, number registration,
//! account reads), enforces Meta-like limits, injects faults on demand and POSTs signed
//! webhooks the way Meta does. It shares no code with the client crate on purpose: it is an
//! independent reading of the same wire format, so it really tests the client.
//!
//! ```no_run
//! let sim = graph_sim::Sim::start(graph_sim::SimConfig::default()).expect("start");
//! let signup = sim.signup().expect("signup");
//! println!("{} {}", sim.base_url(), signup.code);
//! sim.shutdown();
//! ```
//!
//! Everything the tests need at run time goes through the admin API under `/_sim/`
//! (see README.md), also reachable in-process with [`Sim::admin`].

mod admin;
mod config;
mod errors;
mod graph;
mod multipart;
mod server;
mod stats;
mod util;
pub use util::pattern_bytes;
mod webhooks;
mod world;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use config::{
    FailMode, FaultSettings, RecipientFault, Seed, SeedBusiness, SeedMedia, SeedNumber, SimConfig,
    WebhookSettings,
};
pub use errors::GraphError;
pub use util::hub_signature;

use server::{Req, Shared};

/// What `POST /_sim/signups` returns: a business fresh out of Embedded Signup.
#[derive(Debug, Clone, Deserialize)]
pub struct Signup {
    /// The code to exchange at `/oauth/access_token` (expires after `code_ttl`).
    pub code: String,
    pub waba_id: String,
    pub phone_number_id: String,
    /// `+1 555-012-3456` style.
    pub display_phone_number: String,
    /// Digits only, as in webhook `metadata.display_phone_number`.
    pub display_phone_number_digits: String,
    pub verified_name: String,
    /// A system-user token for the WABA, when asked for (`"token": true`).
    #[serde(default)]
    pub access_token: Option<String>,
}

/// A running simulator. Dropping it stops it.
pub struct Sim {
    addr: SocketAddr,
    base_url: String,
    app_id: String,
    app_secret: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Sim {
    /// Binds `cfg.listen`, starts the runtime (its own worker threads) and returns once the
    /// socket is listening.
    pub fn start(cfg: SimConfig) -> io::Result<Sim> {
        if let Some(seed) = cfg.random_seed {
            util::set_global_seed(seed);
        }
        if let Some(url) = &cfg.webhooks.url {
            webhooks::parse_http_url(url)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let world =
            world::World::new(&cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = std::net::TcpListener::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads.max(1))
            .thread_name("graph-sim")
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            world,
            base_url.clone(),
            tx,
            cfg.webhooks.concurrency,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let server = {
            let _guard = rt.enter();
            server::serve(listener, shared.clone(), stop_rx)?
        };
        rt.spawn(server);
        rt.spawn(webhooks::run_scheduler(shared.clone(), rx));
        Ok(Sim {
            addr,
            base_url,
            app_id: cfg.app_id,
            app_secret: cfg.app_secret,
            shared,
            stop,
            rt: Some(rt),
        })
    }

    /// `http://127.0.0.1:PORT` — use as `wa.graph_api_url`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn app_secret(&self) -> &str {
        &self.app_secret
    }

    /// Calls the admin API in-process: `sim.admin("POST", "faults", json!({...}))` is
    /// `POST /_sim/faults`. Returns the HTTP status and JSON body. Call it from plain
    /// (non-async) code.
    pub fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let Some(rt) = &self.rt else {
            return (503, json!({"error": "simulator stopped"}));
        };
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, util::parse_urlencoded(q)),
            None => (path, Vec::new()),
        };
        let req = Req {
            method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            path: format!("/_sim/{}", path.trim_start_matches('/')),
            query,
            bearer: None,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        };
        let reply = rt.block_on(admin::handle(&self.shared, &req));
        let v = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        (reply.status, v)
    }

    /// A new business (WABA + number) and its signup code, with generated ids.
    pub fn signup(&self) -> Result<Signup, String> {
        self.signup_with(json!({}))
    }

    /// Like [`Sim::signup`] with `POST /_sim/signups` fields (`waba_id`, `phone_number_id`,
    /// `display_phone_number`, `verified_name`, `code_ttl_secs`, `rate_limit_per_sec`,
    /// `token`).
    pub fn signup_with(&self, spec: Value) -> Result<Signup, String> {
        let (status, v) = self.admin("POST", "signups", spec);
        if status != 200 {
            return Err(v["error"].as_str().unwrap_or("signup failed").to_string());
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// A system-user token for `waba_id` (the manual connect path).
    pub fn add_token(&self, waba_id: &str) -> Result<String, String> {
        let (status, v) = self.admin("POST", "tokens", json!({ "waba_id": waba_id }));
        match v["access_token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_string()),
            _ => Err(v["error"].as_str().unwrap_or("token failed").to_string()),
        }
    }

    /// `GET /_sim/stats`.
    pub fn stats(&self) -> Value {
        self.admin("GET", "stats", Value::Null).1
    }

    /// Stops serving and shuts the runtime down.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            // Dropping a runtime from inside another runtime panics; detach instead.
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(std::time::Duration::from_millis(500));
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop_now();
    }
}
