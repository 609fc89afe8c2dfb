//! Load check for the send path: `cargo run --release -p graph-sim --example load -- [N] [THREADS] [URL]`.
//! Without URL it starts a simulator in-process (limits off, no webhooks). Prints msg/s.
//! Requests go to 127.0.0.1 only and stop after N sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use graph_sim::{Sim, SimConfig};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let external = args.next();
    let sim = match &external {
        Some(_) => None,
        None => Some(Sim::start(SimConfig::benchmark()).expect("start")),
    };
    let base = external.unwrap_or_else(|| sim.as_ref().map(Sim::base_url).unwrap_or_default());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let signup: serde_json::Value = agent
        .post(format!("{base}/_sim/signups"))
        .header("Content-Type", "application/json")
        .send(r#"{"token":true}"#)
        .expect("signup")
        .body_mut()
        .read_json_free();
    let phone = signup["phone_number_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let token = signup["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (base, phone, token, next) =
                (base.clone(), phone.clone(), token.clone(), next.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let url = format!("{base}/v23.0/{phone}/messages");
                let auth = format!("Bearer {token}");
                let mut worst = Duration::ZERO;
                let mut errors = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return (worst, errors);
                    }
                    let body = json!({
                        "messaging_product": "whatsapp",
                        "to": format!("1650{:07}", i),
                        "type": "text",
                        "text": {"body": "benchmark message"},
                        "biz_opaque_callback_data": format!("m-{i}"),
                    })
                    .to_string();
                    let t = Instant::now();
                    let status = agent
                        .post(&url)
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/json")
                        .send(&body)
                        .map(|mut r| {
                            let _ = r.body_mut().read_to_vec();
                            r.status().as_u16()
                        })
                        .unwrap_or(0);
                    worst = worst.max(t.elapsed());
                    if status != 200 {
                        errors += 1;
                    }
                }
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut errors = 0;
    for h in handles {
        if let Ok((w, e)) = h.join() {
            worst = worst.max(w);
            errors += e;
        }
    }
    let dt = t0.elapsed();
    println!(
        "{total} sends in {:.3}s = {:.0} msg/s ({threads} client threads), worst {:.1} ms, errors {errors}",
        dt.as_secs_f64(),
        total as f64 / dt.as_secs_f64(),
        worst.as_secs_f64() * 1e3
    );
}

trait ReadJsonFree {
    fn read_json_free(&mut self) -> serde_json::Value;
}

impl ReadJsonFree for ureq::Body {
    fn read_json_free(&mut self) -> serde_json::Value {
        self.read_to_vec()
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}
