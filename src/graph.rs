//! The Graph API from inside a SQL call (`wa.connect_tenant`, `wa.exchange_code`).
//!
//! Each request runs on a helper thread while the backend waits for it in steps of 100 ms and
//! checks for interrupts between them, so `pg_cancel_backend()` and `statement_timeout` end
//! the SQL call within about a tenth of a second, whatever the Graph API does (the helper
//! thread finishes its request on its own, and its answer is dropped). The helper thread only
//! does HTTP: no PostgreSQL call is made off the backend's main thread.

use crate::guc;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;
use whatsapp_client::api::{
    ApiError, GraphClient, GraphConfig, PhoneNumberInfo, TokenInfo, TokenResponse,
};

/// A Graph API client from the `wa.*` settings whose calls can be cancelled.
pub struct Graph {
    client: GraphClient,
}

pub fn client() -> Graph {
    let url =
        guc::string(&guc::GRAPH_API_URL).unwrap_or_else(|| "https://graph.facebook.com".into());
    let version = guc::string(&guc::GRAPH_API_VERSION).unwrap_or_else(|| "v25.0".into());
    let timeout = Duration::from_millis(guc::HTTP_TIMEOUT_MS.get().max(100) as u64);
    Graph {
        client: GraphClient::new(
            GraphConfig::new(url)
                .with_api_version(version)
                .with_timeout(timeout),
        ),
    }
}

impl Graph {
    /// Runs `f` on a helper thread; waits for it, answering interrupts meanwhile.
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&GraphClient) -> T + Send + 'static) -> T {
        let client = self.client.clone();
        let (tx, rx) = sync_channel(1);
        let spawned = crate::worker::with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("wa-graph".into())
                .spawn(move || {
                    let _ = tx.send(f(&client));
                })
        });
        if let Err(e) = spawned {
            pgrx::error!("cannot start a thread for a Graph API call: {e}");
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(value) => return value,
                Err(RecvTimeoutError::Timeout) => {
                    pgrx::check_for_interrupts!();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    pgrx::error!("a Graph API call ended without an answer")
                }
            }
        }
    }

    pub fn exchange_code(
        &self,
        app_id: &str,
        app_secret: &str,
        code: &str,
    ) -> Result<TokenResponse, ApiError> {
        let (a, s, c) = (
            app_id.to_string(),
            zeroize::Zeroizing::new(app_secret.to_string()),
            zeroize::Zeroizing::new(code.to_string()),
        );
        self.call(move |g| g.exchange_code(&a, &s, &c, None))
    }

    pub fn debug_token(
        &self,
        app_id: &str,
        app_secret: &str,
        token: &str,
    ) -> Result<TokenInfo, ApiError> {
        let (a, s, t) = (
            app_id.to_string(),
            zeroize::Zeroizing::new(app_secret.to_string()),
            zeroize::Zeroizing::new(token.to_string()),
        );
        self.call(move |g| g.debug_token(&a, &s, &t))
    }

    pub fn list_phone_numbers(
        &self,
        waba: &str,
        token: &str,
    ) -> Result<Vec<PhoneNumberInfo>, ApiError> {
        let (w, t) = (waba.to_string(), zeroize::Zeroizing::new(token.to_string()));
        self.call(move |g| g.list_phone_numbers(&w, &t))
    }

    pub fn subscribe_app(&self, waba: &str, token: &str) -> Result<(), ApiError> {
        let (w, t) = (waba.to_string(), zeroize::Zeroizing::new(token.to_string()));
        self.call(move |g| g.subscribe_app(&w, &t))
    }

    pub fn register_phone(&self, phone: &str, token: &str, pin: &str) -> Result<(), ApiError> {
        let (p, t, n) = (
            phone.to_string(),
            zeroize::Zeroizing::new(token.to_string()),
            zeroize::Zeroizing::new(pin.to_string()),
        );
        self.call(move |g| g.register_phone(&p, &t, &n))
    }

    pub fn phone_number_info(&self, phone: &str, token: &str) -> Result<PhoneNumberInfo, ApiError> {
        let (p, t) = (
            phone.to_string(),
            zeroize::Zeroizing::new(token.to_string()),
        );
        self.call(move |g| g.phone_number_info(&p, &t))
    }
}
