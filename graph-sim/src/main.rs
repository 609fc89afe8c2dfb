//! `graph-sim` — run the Graph API simulator as a process (demo, benchmarks, manual tests).
//! See `graph-sim --help` and README.md.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use graph_sim::{Seed, Sim, SimConfig};

const HELP: &str = "\
graph-sim — a local stand-in for Meta's Graph API (WhatsApp Cloud API)

USAGE: graph-sim [FLAGS]

Server
  --listen ADDR                 listen address (default 127.0.0.1:18080; port 0 = any)
  --worker-threads N            tokio worker threads (default 2)
  --app-id ID                   Meta app id (client_id) (default 1234567890123456)
  --app-secret SECRET           app secret: code exchange + webhook signatures (default sim-app-secret)
  --seed FILE                   JSON seed: {\"businesses\":[{\"waba_id\",\"phone_numbers\":[{\"id\",
                                \"display_phone_number\",\"verified_name\",\"rate_limit_per_sec\"}],
                                \"tokens\":[..],\"templates\":[..]}],\"media\":[{\"id\",\"mime_type\",\"text\"}]}
  --signup                      create one business at start and print it (code, ids, token)
  --max-log N                   request-log capacity (default 200000)
  --random-seed N               seed the fault dice (repeatable runs)

Limits
  --rate-limit-per-number N|off per-number throughput, msg/s (default 80) -> 130429
  --pair-rate-limit on|off      per (number, recipient) limit (default on) -> 131056
  --pair-interval-ms N          one message per N ms per pair on average (default 6000)
  --pair-burst N                pair burst (default 45)
  --strict-templates            template sends must name an APPROVED template (else 132001)
  --code-ttl-secs S             signup code lifetime (default 30)
  --media-url-ttl-secs S        media download URL lifetime (default 300)
  --benchmark                   all limits off (same as --rate-limit-per-number off --pair-rate-limit off)

Faults (also at run time: POST /_sim/faults, /_sim/fail_next)
  --latency-ms N | A-B          added latency, fixed or uniform range
  --error-ratio R               share (0..1) of 5xx answers (500/1, 503/2, 500/131000)
  --timeout-ratio R             share (0..1) of requests held --timeout-ms
  --timeout-ms N                hold time; 0 = never answer (default 0)
  --timeout-no-process          held requests take no effect (default: they do, answer late)
  --fault-endpoints a,b         limit the above to these endpoints (e.g. send)

Webhooks (also at run time: POST /_sim/webhook_config)
  --webhook-url URL             POST webhooks here (http:// only)
  --no-webhooks                 generate no webhooks (the default without --webhook-url)
  --webhook-secret S            signing secret (default: the app secret)
  --statuses a,b,c              statuses per accepted message (default sent,delivered,read)
  --status-delay-ms N           delay before/between statuses (default 50)
  --duplicate-webhooks RATIO    share (0..1) of deliveries POSTed twice
  --reorder-webhooks            shuffle events within --reorder-window-ms (default 200)
  --reorder-window-ms N
  --webhook-batch N             most events per delivery (default 10)
  --webhook-retries N           retries on non-2xx (default 3)
  --webhook-concurrency N       deliveries in flight (default 4)

Prints `graph-sim listening on http://ADDR` when ready; Ctrl-C stops it.
";

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("graph-sim: {e}");
            std::process::exit(2);
        }
    }
}

fn parse_ratio(v: &str, flag: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{flag}: expected a ratio within 0..1, got {v:?}")),
    }
}

fn parse_num<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("{flag}: expected a number, got {v:?}"))
}

fn parse_on_off(v: &str, flag: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{flag}: expected on|off, got {v:?}")),
    }
}

fn run() -> Result<(), String> {
    let mut cfg = SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 18080)),
        ..SimConfig::default()
    };
    let mut no_webhooks = false;
    let mut signup = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            "--listen" => {
                let v = value()?;
                cfg.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: expected HOST:PORT, got {v:?}"))?;
            }
            "--worker-threads" => cfg.worker_threads = parse_num(&value()?, &flag)?,
            "--app-id" => cfg.app_id = value()?,
            "--app-secret" => cfg.app_secret = value()?,
            "--seed" => {
                let path = value()?;
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("--seed {path}: {e}"))?;
                cfg.seed = serde_json::from_str::<Seed>(&text)
                    .map_err(|e| format!("--seed {path}: {e}"))?;
            }
            "--signup" => signup = true,
            "--max-log" => cfg.max_log_records = parse_num(&value()?, &flag)?,
            "--random-seed" => cfg.random_seed = Some(parse_num(&value()?, &flag)?),
            "--rate-limit-per-number" => {
                let v = value()?;
                cfg.rate_limit_per_number = if v == "off" {
                    None
                } else {
                    Some(parse_num(&v, &flag)?)
                };
            }
            "--pair-rate-limit" => cfg.pair_rate_limit = parse_on_off(&value()?, &flag)?,
            "--pair-interval-ms" => {
                cfg.pair_interval = Duration::from_millis(parse_num(&value()?, &flag)?);
            }
            "--pair-burst" => cfg.pair_burst = parse_num(&value()?, &flag)?,
            "--strict-templates" => cfg.strict_templates = true,
            "--code-ttl-secs" => {
                let s: f64 = parse_num(&value()?, &flag)?;
                cfg.code_ttl = Duration::from_secs_f64(s.max(0.0));
            }
            "--media-url-ttl-secs" => {
                let s: f64 = parse_num(&value()?, &flag)?;
                cfg.media_url_ttl = Duration::from_secs_f64(s.max(0.0));
            }
            "--benchmark" => {
                cfg.rate_limit_per_number = None;
                cfg.pair_rate_limit = false;
            }
            "--latency-ms" => {
                let v = value()?;
                match v.split_once('-') {
                    Some((a, b)) => {
                        cfg.faults.latency_ms = parse_num(a, &flag)?;
                        cfg.faults.latency_max_ms = parse_num(b, &flag)?;
                    }
                    None => cfg.faults.latency_ms = parse_num(&v, &flag)?,
                }
            }
            "--error-ratio" => cfg.faults.error_ratio = parse_ratio(&value()?, &flag)?,
            "--timeout-ratio" => cfg.faults.timeout_ratio = parse_ratio(&value()?, &flag)?,
            "--timeout-ms" => cfg.faults.timeout_ms = parse_num(&value()?, &flag)?,
            "--timeout-no-process" => cfg.faults.timeout_processes = false,
            "--fault-endpoints" => {
                cfg.faults.endpoints = value()?.split(',').map(str::to_string).collect();
            }
            "--webhook-url" => cfg.webhooks.url = Some(value()?),
            "--no-webhooks" => no_webhooks = true,
            "--webhook-secret" => cfg.webhooks.app_secret = Some(value()?),
            "--statuses" => {
                cfg.webhooks.statuses = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "--status-delay-ms" => cfg.webhooks.status_delay_ms = parse_num(&value()?, &flag)?,
            "--duplicate-webhooks" => {
                cfg.webhooks.duplicate_ratio = parse_ratio(&value()?, &flag)?;
            }
            "--reorder-webhooks" => cfg.webhooks.reorder = true,
            "--reorder-window-ms" => {
                cfg.webhooks.reorder_window_ms = parse_num(&value()?, &flag)?;
            }
            "--webhook-batch" => cfg.webhooks.batch_max = parse_num(&value()?, &flag)?,
            "--webhook-retries" => cfg.webhooks.retries = parse_num(&value()?, &flag)?,
            "--webhook-concurrency" => {
                cfg.webhooks.concurrency = parse_num(&value()?, &flag)?;
            }
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    if no_webhooks {
        cfg.webhooks.url = None;
    }
    let sim = Sim::start(cfg).map_err(|e| format!("cannot start: {e}"))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "graph-sim listening on {}", sim.base_url());
    if signup {
        let s = sim
            .signup_with(serde_json::json!({"token": true}))
            .map_err(|e| format!("--signup: {e}"))?;
        let line = serde_json::json!({
            "code": s.code,
            "waba_id": s.waba_id,
            "phone_number_id": s.phone_number_id,
            "display_phone_number": s.display_phone_number,
            "access_token": s.access_token,
        });
        let _ = writeln!(out, "graph-sim signup {line}");
    }
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::park();
    }
}
