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

/// The database's side, from `wa.worker_status()` (read at each scrape): the worker, the
/// queue, sending switches, key problems, webhooks and per-number throttling. `ages` are
/// seconds since the worker's heartbeat and since the last webhook delivery, when known.
pub fn render_database(status: &serde_json::Value, ages: (Option<f64>, Option<f64>)) -> String {
    let mut out = String::new();
    let num = |v: &serde_json::Value| -> f64 {
        v.as_f64()
            .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
            .unwrap_or(0.0)
    };
    database_up(&mut out, 1.0);
    let mut metric =
        |name: &str, kind: &str, help: &str, value: f64| one(&mut out, name, kind, help, value);
    metric(
        "wa_worker_running",
        "gauge",
        "1 while the background worker runs.",
        num(&status["running"]),
    );
    if let Some(age) = ages.0 {
        metric(
            "wa_worker_heartbeat_age_seconds",
            "gauge",
            "Seconds since the worker last reported (about every second while it works).",
            age,
        );
    }
    for (name, key, help) in [
        (
            "wa_queue_depth",
            "queue_depth",
            "Outbox rows waiting to be sent (not held).",
        ),
        ("wa_queue_due", "due", "Outbox rows due now."),
        (
            "wa_queue_held",
            "held",
            "Outbox rows held (a tenant's token revoked or its connection gone).",
        ),
        (
            "wa_queue_failed",
            "failed_in_queue",
            "Outbox rows that failed for good.",
        ),
        (
            "wa_queue_unknown_outcome",
            "unknown_in_queue",
            "Sends whose outcome is unknown, waiting for Meta's status.",
        ),
        (
            "wa_worker_unrecorded",
            "unrecorded",
            "Outcomes waiting to be recorded again (a write-back failed).",
        ),
    ] {
        metric(name, "gauge", help, num(&status[key]));
    }
    for (name, key, help) in [
        (
            "wa_worker_sent_total",
            "sent",
            "Messages Meta accepted, since the worker started.",
        ),
        (
            "wa_worker_failed_total",
            "failed",
            "Messages that failed for good, since the worker started.",
        ),
        (
            "wa_worker_retried_total",
            "retried",
            "Sends retried after a transient failure, since the worker started.",
        ),
        (
            "wa_worker_media_downloaded_total",
            "media_downloaded",
            "Inbound media downloaded, since the worker started.",
        ),
        (
            "wa_worker_unknown_outcomes_total",
            "unknown_outcomes",
            "Sends whose outcome was unknown, since the worker started.",
        ),
        (
            "wa_worker_duplicates_total",
            "duplicates",
            "Messages Meta accepted twice, since the worker started.",
        ),
    ] {
        metric(name, "counter", help, num(&status[key]));
    }
    let latency = &status["latency"];
    let mut summaries = String::new();
    for (name, help, sum, count) in [
        (
            "wa_worker_claim_duration_seconds",
            "Time the worker's claims took (one transaction each: pick due rows, lease them).",
            "claim_seconds",
            "claims",
        ),
        (
            "wa_worker_write_back_duration_seconds",
            "Time the worker's write-backs took (one transaction per batch of outcomes).",
            "write_back_seconds",
            "write_backs",
        ),
    ] {
        summary(
            &mut summaries,
            name,
            help,
            num(&latency[sum]),
            num(&latency[count]),
        );
    }
    metric(
        "wa_key_problem",
        "gauge",
        "1 while sending is held back for a key file problem (worker_status()->'paused').",
        f64::from(u8::from(!status["paused"].is_null())),
    );
    let sending = &status["sending"];
    metric(
        "wa_sending_enabled",
        "gauge",
        "The wa.sending_enabled switch.",
        num(&sending["enabled"]),
    );
    metric(
        "wa_sending_restored_copy",
        "gauge",
        "1 in a copy restored under another name that was not accepted with wa.resume_sending().",
        f64::from(u8::from(!sending["restored_from"].is_null())),
    );
    metric(
        "wa_sending_paused_tenants",
        "gauge",
        "Tenants whose sending is paused.",
        num(&sending["paused_tenants"]),
    );
    metric(
        "wa_webhooks_parked",
        "gauge",
        "Webhook parts waiting for their number or WABA to be connected.",
        num(&status["webhooks"]["parked_waiting"]),
    );
    if let Some(age) = ages.1 {
        metric(
            "wa_webhook_last_received_age_seconds",
            "gauge",
            "Seconds since the last webhook delivery was stored.",
            age,
        );
    }
    // Per number: the phone number id is a Meta id the database stored (digits only).
    let lanes: Vec<(&String, &serde_json::Value)> = status["rate_limits"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    for (name, key, kind, help) in [
        (
            "wa_number_rate_per_second",
            "rate_per_sec",
            "gauge",
            "The send rate a number is held to.",
        ),
        (
            "wa_number_scheduled_ahead_seconds",
            "scheduled_ahead_ms",
            "gauge",
            "How far ahead a number's sends are scheduled.",
        ),
        (
            "wa_number_sent_total",
            "sent",
            "counter",
            "Sends of a number, since the worker started.",
        ),
        (
            "wa_number_throttled_total",
            "throttled",
            "counter",
            "Sends of a number that waited for its rate, since the worker started.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (phone, lane) in &lanes {
            let mut v = num(&lane[key]);
            if key == "scheduled_ahead_ms" {
                v /= 1000.0;
            }
            let _ = writeln!(out, "{name}{{phone_number_id=\"{phone}\"}} {v}");
        }
    }
    out.push_str(&summaries);
    out
}

/// What `/metrics` says when the database did not answer.
pub fn render_database_down() -> String {
    let mut out = String::new();
    database_up(&mut out, 0.0);
    out
}

fn database_up(out: &mut String, value: f64) {
    one(
        out,
        "wa_database_up",
        "gauge",
        "1: wa.worker_status() answered.",
        value,
    );
}

/// A summary without quantiles: `rate(name_sum) / rate(name_count)` is the mean.
fn summary(out: &mut String, name: &str, help: &str, sum: f64, count: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {sum}\n{name}_count {count}"
    );
}

/// One series without labels, with its HELP and TYPE lines.
fn one(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod database_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_database_section_names_every_figure_and_only_numeric_phone_ids() {
        let status = json!({
            "running": true, "queue_depth": 12, "due": 3, "held": 2, "failed_in_queue": 1,
            "unknown_in_queue": 0, "unrecorded": 0, "sent": 40, "failed": 1, "retried": 5,
            "media_downloaded": 0, "unknown_outcomes": 2, "duplicates": 1,
            "paused": {"reason": "key_file"},
            "sending": {"enabled": true, "restored_from": null, "paused_tenants": 1},
            "webhooks": {"parked_waiting": 4},
            "latency": {"claims": 9, "claim_seconds": 0.25, "write_backs": 4, "write_back_seconds": 0.5},
            "rate_limits": {
                "2001": {"rate_per_sec": 80.0, "scheduled_ahead_ms": 1500, "sent": 40, "throttled": 7},
                "x\"}evil": {"rate_per_sec": 1.0}
            }
        });
        let text = render_database(&status, (Some(0.5), Some(30.0)));
        for line in [
            "wa_database_up 1",
            "wa_worker_running 1",
            "wa_worker_heartbeat_age_seconds 0.5",
            "wa_queue_depth 12",
            "wa_queue_held 2",
            "wa_worker_sent_total 40",
            "wa_worker_duplicates_total 1",
            "wa_key_problem 1",
            "wa_sending_enabled 1",
            "wa_sending_restored_copy 0",
            "wa_sending_paused_tenants 1",
            "wa_webhooks_parked 4",
            "# TYPE wa_worker_claim_duration_seconds summary",
            "wa_worker_claim_duration_seconds_sum 0.25",
            "wa_worker_claim_duration_seconds_count 9",
            "wa_worker_write_back_duration_seconds_sum 0.5",
            "wa_worker_write_back_duration_seconds_count 4",
            "wa_webhook_last_received_age_seconds 30",
            "wa_number_rate_per_second{phone_number_id=\"2001\"} 80",
            "wa_number_scheduled_ahead_seconds{phone_number_id=\"2001\"} 1.5",
            "wa_number_throttled_total{phone_number_id=\"2001\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("evil"), "{text}");
        assert!(render_database_down().contains("wa_database_up 0"));
    }
}
