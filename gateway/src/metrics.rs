//! Prometheus text metrics, kept in process: request counts by route/method/status, a
//! latency histogram per route, webhook ingest failures by reason and signup outcomes.
//! Labels come from a fixed set of route names, never from the raw path, so a scanner
//! cannot grow the series without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    ingest_errors: BTreeMap<&'static str, u64>,
    ingest_parts_failed: u64,
    ingested: u64,
    exchanges: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

/// The route label for a request path.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/webhook" => "/webhook",
        "/signup/config" => "/signup/config",
        "/signup/exchange" => "/signup/exchange",
        "/connect" => "/connect",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        p if p.starts_with("/assets/") => "/assets/*",
        _ => "other",
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters; keep counting.
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request whose handler was dropped (the client went away) before it answered.
    pub fn request_dropped(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        self.with(|m| {
            *m.requests
                .entry((route, method.to_string(), status))
                .or_default() += 1;
            let h = m.latency.entry(route).or_default();
            h.count += 1;
            h.sum += secs;
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.counts[i] += 1;
                }
            }
        });
    }

    /// A webhook delivery that was not accepted (`reason`: bad_signature, malformed,
    /// too_large, unavailable, internal).
    pub fn ingest_error(&self, reason: &'static str) {
        self.with(|m| *m.ingest_errors.entry(reason).or_default() += 1);
    }

    /// A delivery the database took; `failed_parts` is its summary's `errors`.
    pub fn ingested(&self, failed_parts: u64) {
        self.with(|m| {
            m.ingested += 1;
            m.ingest_parts_failed += failed_parts;
        });
    }

    pub fn exchange(&self, outcome: &'static str) {
        self.with(|m| *m.exchanges.entry(outcome).or_default() += 1);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        self.with(|m| {
            let _ = writeln!(
                out,
                "# HELP wa_gateway_requests_total HTTP requests answered, by route, method and status.\n\
                 # TYPE wa_gateway_requests_total counter"
            );
            for ((route, method, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "wa_gateway_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP wa_gateway_request_duration_seconds Time to answer a request, by route.\n\
                 # TYPE wa_gateway_request_duration_seconds histogram"
            );
            for (route, h) in &m.latency {
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "wa_gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "wa_gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                     wa_gateway_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                     wa_gateway_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
            let _ = writeln!(
                out,
                "# HELP wa_gateway_requests_in_flight Requests being answered now.\n\
                 # TYPE wa_gateway_requests_in_flight gauge\n\
                 wa_gateway_requests_in_flight {in_flight}"
            );
            let _ = writeln!(
                out,
                "# HELP wa_gateway_webhook_deliveries_total Webhook deliveries committed to the database.\n\
                 # TYPE wa_gateway_webhook_deliveries_total counter\n\
                 wa_gateway_webhook_deliveries_total {}",
                m.ingested
            );
            let _ = writeln!(
                out,
                "# HELP wa_gateway_webhook_ingest_errors_total Webhook deliveries not accepted, by reason.\n\
                 # TYPE wa_gateway_webhook_ingest_errors_total counter"
            );
            for reason in [
                "bad_signature",
                "malformed",
                "too_large",
                "unavailable",
                "internal",
            ] {
                let n = m.ingest_errors.get(reason).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "wa_gateway_webhook_ingest_errors_total{{reason=\"{reason}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP wa_gateway_webhook_parts_failed_total Parts of accepted deliveries kept but not applied (summary errors).\n\
                 # TYPE wa_gateway_webhook_parts_failed_total counter\n\
                 wa_gateway_webhook_parts_failed_total {}",
                m.ingest_parts_failed
            );
            let _ = writeln!(
                out,
                "# HELP wa_gateway_signup_exchanges_total Signup code exchanges, by outcome.\n\
                 # TYPE wa_gateway_signup_exchanges_total counter"
            );
            for (outcome, n) in &m.exchanges {
                let _ = writeln!(
                    out,
                    "wa_gateway_signup_exchanges_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(route_label("/wp-admin/x.php"), "other");
        assert_eq!(route_label("/assets/whatsapp-connect.js"), "/assets/*");
    }

    #[test]
    fn render_counts_and_buckets() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/webhook", "POST", 200, Duration::from_millis(3));
        m.ingest_error("bad_signature");
        let text = m.render();
        assert!(text.contains(
            "wa_gateway_requests_total{route=\"/webhook\",method=\"POST\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "wa_gateway_request_duration_seconds_bucket{route=\"/webhook\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "wa_gateway_request_duration_seconds_bucket{route=\"/webhook\",le=\"0.0025\"} 0"
        ));
        assert!(
            text.contains("wa_gateway_webhook_ingest_errors_total{reason=\"bad_signature\"} 1")
        );
        assert!(text.contains("wa_gateway_requests_in_flight 0"));
    }
}
