//! `make bench-parse`: webhook deliveries per second through `whatsapp-client`'s parser
//! (`parse_delivery`, then every change's typed view) next to the baseline of decoding the same
//! bytes into a `serde_json::Value` alone, measured in this process, with the ratio.
//!
//! Prints figures; asserts nothing.
//!
//!   bench-parse [--iterations 20000] [--reps 5]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wa_benches::{BenchResult, Samples, flag_pairs, parse_num};
use whatsapp_client::webhook::{ChangeValue, parse_delivery};

const FIXTURES: [&str; 3] = ["messages_text", "messages_image", "statuses_delivered_read"];

fn fixture(name: &str) -> BenchResult<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../whatsapp-client/tests/fixtures/webhooks")
        .join(format!("{name}.json"));
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// A delivery of `n` text messages, as Meta batches them under load.
fn batch(n: usize) -> Vec<u8> {
    let messages: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "from": format!("1555{:07}", i % 500), "id": format!("wamid.bench.{i}"),
                "timestamp": (1_790_000_000 + i).to_string(), "type": "text",
                "text": { "body": format!("Hello, this is message {i}") }
            })
        })
        .collect();
    let contacts: Vec<serde_json::Value> = (0..n.min(500))
        .map(|i| serde_json::json!({ "profile": { "name": format!("Guest {i}") }, "wa_id": format!("1555{i:07}") }))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "1001", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550009999", "phone_number_id": "2001" },
            "contacts": contacts, "messages": messages,
        }}]}]
    }))
    .unwrap_or_default()
}

/// Parses `body` `iterations` times with the typed parser; returns the parts seen (so the
/// work cannot be optimised away) and the time taken.
fn typed(body: &[u8], iterations: usize) -> BenchResult<(usize, Duration)> {
    let start = Instant::now();
    let mut parts = 0;
    for _ in 0..iterations {
        let delivery = parse_delivery(black_box(body)).map_err(|e| e.to_string())?;
        for change in delivery.changes() {
            parts += match &change.value {
                ChangeValue::Messages(m) => m.messages.len() + m.statuses.len(),
                _ => 1,
            };
        }
    }
    Ok((black_box(parts), start.elapsed()))
}

/// The baseline: the same bytes decoded into a `serde_json::Value` and nothing else.
fn untyped(body: &[u8], iterations: usize) -> BenchResult<Duration> {
    let start = Instant::now();
    for _ in 0..iterations {
        let v: serde_json::Value = serde_json::from_slice(black_box(body))?;
        black_box(v);
    }
    Ok(start.elapsed())
}

fn main() -> BenchResult<()> {
    let (mut iterations, mut reps) = (20_000usize, 5usize);
    for (flag, value) in flag_pairs(std::env::args().skip(1))? {
        match flag.as_str() {
            "--iterations" => iterations = parse_num(&flag, &value)?,
            "--reps" => reps = parse_num(&flag, &value)?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: bench-parse [--iterations N] [--reps N]"
                )
                .into());
            }
        }
    }
    let mut cases: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for name in FIXTURES {
        cases.push((name.to_string(), fixture(name)?, iterations));
    }
    cases.push(("100 text messages".into(), batch(100), iterations / 50));
    cases.push(("1000 text messages".into(), batch(1000), iterations / 500));
    println!(
        "whatsapp-client webhook parser: deliveries/s, median of {reps} repetitions (min..max)"
    );
    println!(
        "{:<24} {:>9} {:>24} {:>24} {:>7}",
        "delivery", "bytes", "parse_delivery", "serde_json::Value only", "ratio"
    );
    for (name, body, n) in &cases {
        let n = (*n).max(1);
        let (mut t, mut b) = (Samples::default(), Samples::default());
        for _ in 0..reps {
            // Interleaved, so both see the same machine.
            let (_, took) = typed(body, n)?;
            t.push(n as u64, took);
            b.push(n as u64, untyped(body, n)?);
        }
        let ((tm, tlo, thi), (bm, blo, bhi)) = (t.rates(), b.rates());
        println!(
            "{name:<24} {:>9} {:>9.0} ({:.0}..{:.0}) {:>9.0} ({:.0}..{:.0}) {:>6.2}x",
            body.len(),
            tm,
            tlo,
            thi,
            bm,
            blo,
            bhi,
            tm / bm
        );
    }
    Ok(())
}
