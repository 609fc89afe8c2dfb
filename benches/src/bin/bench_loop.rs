//! bench-loop: the closed loop on one machine. The background worker sends queued messages to
//! graph-sim; graph-sim answers every accepted message with signed `sent`, `delivered` and
//! `read` status webhooks POSTed to the real webhook gateway, which ingests them into the same
//! cluster while the worker goes on sending. Prints figures; asserts nothing.
//!
//! Baseline, same run: the same burst drained with status webhooks off (sending alone).
//!
//! Needs a cluster whose `wa.database` is `--db` and the gateway's binary (`--gateway-bin`);
//! `scripts/bench-worker.sh loop` builds both and starts the cluster.

use graph_sim::{Sim, SimConfig, WebhookSettings};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wa_benches::sending::{
    Gateway, accepted, cpu_time, enqueue_bulk, percentile, setup_numbers, wait_drained, worker_pid,
};
use wa_benches::{BenchResult, Target, flag_pairs, parse_num};

struct Opts {
    target: Target,
    /// Messages of each burst.
    messages: usize,
    numbers: usize,
    /// Most statuses in one webhook delivery.
    batch: usize,
    /// graph-sim's wait before each status (three of them).
    status_delay_ms: u64,
    /// Webhook deliveries graph-sim keeps in flight.
    webhook_concurrency: usize,
    /// Paced part: messages per second, for how many seconds.
    rate: usize,
    paced_secs: u64,
    gateway_bin: String,
    gateway_port: u16,
}

const USAGE: &str = "usage: bench-loop --gateway-bin PATH [--gateway-port 55441] [--host H] [--port N] \
[--user U] [--db D] [--messages 20000] [--numbers 50] [--batch 100] [--status-delay-ms 20] \
[--webhook-concurrency 4] [--rate 1000] [--paced-secs 10]";

/// Read notifications: (message id, when it arrived).
type Reads = mpsc::Receiver<(String, Instant)>;

/// Every tenant's event channel LISTENed to on a connection of its own; each `read` status
/// notification goes to the returned channel as (message id, when it arrived).
fn listen_for_reads(
    target: &Target,
    stop: Arc<AtomicBool>,
) -> BenchResult<(Reads, std::thread::JoinHandle<()>)> {
    let mut c = target.connect(&target.db)?;
    let channels: Vec<String> = c
        .query("SELECT events_channel FROM wa.tenants", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let listen: String = channels
        .iter()
        .map(|ch| format!("LISTEN \"{}\";", ch.replace('"', "\"\"")))
        .collect();
    c.batch_execute(&listen)?;
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let mut n = c.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(100));
            while let Ok(Some(note)) = it.next() {
                let now = Instant::now();
                let v: Value = serde_json::from_str(note.payload()).unwrap_or(Value::Null);
                if v["kind"] == "message.status"
                    && v["status"] == "read"
                    && let Some(id) = v["message_id"].as_str()
                {
                    let _ = tx.send((id.to_string(), now));
                }
            }
        }
    });
    Ok((rx, handle))
}

/// Waits until every id of `ids` was notified `read` (or `wait` passes); returns when each
/// was, by id.
fn wait_read(
    reads: &Reads,
    ids: &[String],
    wait: Duration,
) -> BenchResult<HashMap<String, Instant>> {
    let mut want: HashMap<&str, ()> = ids.iter().map(|i| (i.as_str(), ())).collect();
    let mut got = HashMap::new();
    let deadline = Instant::now() + wait;
    while !want.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{} of {} messages were not read within {wait:?}",
                want.len(),
                ids.len()
            )
            .into());
        }
        if let Ok((id, at)) = reads.recv_timeout(left.min(Duration::from_millis(200)))
            && want.remove(id.as_str()).is_some()
        {
            got.insert(id, at);
        }
    }
    Ok(got)
}

/// Messages of `ids` whose three statuses are all recorded.
fn settled(c: &mut Client, ids: &[String]) -> BenchResult<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM wa.messages
          WHERE message_id = ANY($1::text[]::uuid[]) AND status = 'read'
            AND sent_at IS NOT NULL AND delivered_at IS NOT NULL AND read_at IS NOT NULL",
        &[&ids],
    )?
    .get(0))
}

/// The PostgreSQL backends serving the gateway.
fn gateway_backends(c: &mut Client) -> BenchResult<Vec<i32>> {
    Ok(c.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'whatsapp-gateway'",
        &[],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Every PostgreSQL process of this machine (`comm` is `postgres`).
fn postgres_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "postgres")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds, by part of the loop.
#[derive(Clone, Copy, Default)]
struct Cpu {
    worker: f64,
    ingest: f64,
    gateway: f64,
    other_postgres: f64,
    simulator: f64,
}

struct CpuProbe {
    worker: i32,
    gateway: i32,
    ingest: Vec<i32>,
}

impl CpuProbe {
    fn read(&self) -> Cpu {
        let secs = |pid: i32| cpu_time(pid).as_secs_f64();
        let all_pg: f64 = postgres_pids()
            .into_iter()
            .filter(|p| *p != self.worker && !self.ingest.contains(p))
            .map(secs)
            .sum();
        Cpu {
            worker: secs(self.worker),
            ingest: self.ingest.iter().copied().map(secs).sum(),
            gateway: secs(self.gateway),
            other_postgres: all_pg,
            // This process: graph-sim's threads, the listener and the driver.
            simulator: secs(std::process::id() as i32),
        }
    }
}

fn diff(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        worker: b.worker - a.worker,
        ingest: b.ingest - a.ingest,
        gateway: b.gateway - a.gateway,
        other_postgres: b.other_postgres - a.other_postgres,
        simulator: b.simulator - a.simulator,
    }
}

/// `n` messages at `rate` per second, `rate / 20` every 50 ms, each tick one statement of
/// `wa.send_text` calls over every tenant; returns each message's commit time.
fn paced(
    c: &mut Client,
    rate: usize,
    secs: u64,
    offset: usize,
) -> BenchResult<HashMap<String, Instant>> {
    let per_tick = (rate / 20).max(1);
    let ticks = secs * 20;
    let mut committed = HashMap::new();
    let started = Instant::now();
    for tick in 0..ticks {
        let due = started + Duration::from_millis(50 * tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let rows = c.query(
            "SELECT wa.send_text(t.tenant_id, (15590000000 + $2::bigint + g)::text, 'Your room is ready')::text
               FROM generate_series(0, $1::int - 1) g
               JOIN (SELECT tenant_id, (row_number() OVER (ORDER BY tenant_id) - 1)::int AS i,
                            count(*) OVER ()::int AS k
                       FROM wa.tenants) t
                 ON t.i = (g + $2::bigint) % t.k",
            &[&(per_tick as i32), &((offset + tick as usize * per_tick) as i64)],
        )?;
        let at = Instant::now();
        for r in rows {
            committed.insert(r.get::<_, String>(0), at);
        }
    }
    Ok(committed)
}

fn webhooks(sim: &Sim, url: Option<&str>) -> BenchResult<()> {
    let (status, v) = sim.admin("POST", "webhook_config", json!({ "url": url }));
    if status != 200 {
        return Err(format!("webhook_config: {v}").into());
    }
    Ok(())
}

fn run(o: Opts) -> BenchResult<()> {
    let hook = format!("http://127.0.0.1:{}/webhook", o.gateway_port);
    let sim = Sim::start(SimConfig {
        webhooks: WebhookSettings {
            url: Some(hook.clone()),
            batch_max: o.batch,
            status_delay_ms: o.status_delay_ms,
            concurrency: o.webhook_concurrency,
            ..WebhookSettings::default()
        },
        ..SimConfig::benchmark()
    })?;
    let mut c = o.target.connect(&o.target.db)?;
    setup_numbers(&mut c, &sim, o.numbers)?;
    let worker = worker_pid(&mut c)?;
    let gateway = Gateway::start(&o.target, &o.gateway_bin, o.gateway_port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, listener) = listen_for_reads(&o.target, stop.clone())?;
    println!(
        "bench-loop: {} numbers at 1,000 msg/s each; graph-sim sends sent/delivered/read {} ms apart, up to {} statuses per signed delivery, {} deliveries in flight, to the gateway (pid {}) at {}; worker pid {worker}",
        o.numbers,
        o.status_delay_ms,
        o.batch,
        o.webhook_concurrency,
        gateway.pid(),
        gateway.url
    );

    // Warm-up: the gateway's pool and every plan, with the loop closed.
    let (_, warm) = enqueue_bulk(&mut c, 2_000, 0)?;
    wait_read(&reads, &warm, Duration::from_secs(120))?;

    eprintln!("bench-loop: warm-up done");
    // Baseline: the same burst, sending only.
    webhooks(&sim, None)?;
    let base = accepted(&sim);
    let (_, ids) = enqueue_bulk(&mut c, o.messages, 100_000)?;
    let send_only_s = wait_drained(&mut c, &sim, base + ids.len() as i64, worker)?.recorded_s;
    webhooks(&sim, Some(&hook))?;

    eprintln!("bench-loop: baseline done");
    // The loop: a burst, settled by webhooks while the worker sends.
    let probe = CpuProbe {
        worker,
        gateway: gateway.pid(),
        ingest: gateway_backends(&mut c)?,
    };
    let cpu_before = probe.read();
    let (_, ids) = enqueue_bulk(&mut c, o.messages, 200_000)?;
    let t0 = Instant::now();
    let read_at = wait_read(&reads, &ids, Duration::from_secs(600))?;
    let last = read_at.values().max().copied().unwrap_or(t0);
    let loop_s = last.duration_since(t0).as_secs_f64();
    let cpu = diff(cpu_before, probe.read());
    let settled_burst = settled(&mut c, &ids)?;
    let mut burst_ms: Vec<f64> = read_at
        .values()
        .map(|at| at.duration_since(t0).as_secs_f64() * 1000.0)
        .collect();
    burst_ms.sort_by(f64::total_cmp);

    eprintln!("bench-loop: burst done");
    // Paced: a steady rate well under capacity, enqueue → read per message.
    let committed = paced(&mut c, o.rate, o.paced_secs, 300_000)?;
    let paced_ids: Vec<String> = committed.keys().cloned().collect();
    let paced_read = wait_read(&reads, &paced_ids, Duration::from_secs(300))?;
    let mut paced_ms: Vec<f64> = paced_read
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*committed.get(id)?).as_secs_f64() * 1000.0))
        .collect();
    paced_ms.sort_by(f64::total_cmp);
    let settled_paced = settled(&mut c, &paced_ids)?;
    let hooks = sim.admin("GET", "stats?detail=0", Value::Null).1["webhooks"].clone();
    stop.store(true, Ordering::Relaxed);
    let _ = listener.join();

    let n = o.messages as f64;
    let total = cpu.worker + cpu.ingest + cpu.gateway + cpu.other_postgres + cpu.simulator;
    let share = |x: f64| 100.0 * x / loop_s;
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| baseline: {} messages sent, status webhooks off (commit → outbox empty) | {send_only_s:.2} s = {:.0} msg/s |",
        o.messages,
        n / send_only_s
    );
    println!(
        "| loop: the same burst fully settled (sent, delivered, read applied; {settled_burst} of {} checked) | {loop_s:.2} s = **{:.0} msg/s** = **{:.2}×** sending alone |",
        o.messages,
        n / loop_s,
        send_only_s / loop_s
    );
    println!("| loop: statuses applied | **{:.0}/s** |", 3.0 * n / loop_s);
    println!(
        "| loop burst: commit → read p50 / p99 (queueing included) | {:.0} / {:.0} ms |",
        percentile(&burst_ms, 0.5),
        percentile(&burst_ms, 0.99)
    );
    println!(
        "| paced at {}/s for {} s ({} messages, {settled_paced} settled): enqueue → read p50 / p99 / max | **{:.0}** / **{:.0}** / {:.0} ms (graph-sim waits {} ms of it) |",
        o.rate,
        o.paced_secs,
        committed.len(),
        percentile(&paced_ms, 0.5),
        percentile(&paced_ms, 0.99),
        paced_ms.last().copied().unwrap_or(f64::NAN),
        3 * o.status_delay_ms
    );
    println!(
        "| CPU during the loop burst, share of one core: worker / ingest backends / gateway / other PostgreSQL / graph-sim + bench | {:.0}% / {:.0}% / {:.0}% / {:.0}% / {:.0}% (of {:.0}% on 2 cores) |",
        share(cpu.worker),
        share(cpu.ingest),
        share(cpu.gateway),
        share(cpu.other_postgres),
        share(cpu.simulator),
        share(total)
    );
    println!(
        "| CPU per settled message: worker / ingest / gateway | {:.0} / {:.0} / {:.0} µs |",
        1e6 * cpu.worker / n,
        1e6 * cpu.ingest / n,
        1e6 * cpu.gateway / n
    );
    println!(
        "| webhook deliveries (all parts) / failed attempts / gave up | {} / {} / {} |",
        hooks["deliveries"], hooks["failed_attempts"], hooks["gave_up"]
    );
    Ok(())
}

fn main() {
    let mut o = Opts {
        target: Target::from_env(),
        messages: 20_000,
        numbers: 50,
        batch: 100,
        status_delay_ms: 20,
        webhook_concurrency: 4,
        rate: 1_000,
        paced_secs: 10,
        gateway_bin: String::new(),
        gateway_port: 55441,
    };
    let parsed = (|| -> BenchResult<()> {
        for (flag, value) in flag_pairs(std::env::args().skip(1))? {
            if o.target.apply_flag(&flag, &value)? {
                continue;
            }
            match flag.as_str() {
                "--messages" => o.messages = parse_num(&flag, &value)?,
                "--numbers" => o.numbers = parse_num(&flag, &value)?,
                "--batch" => o.batch = parse_num(&flag, &value)?,
                "--status-delay-ms" => o.status_delay_ms = parse_num(&flag, &value)?,
                "--webhook-concurrency" => o.webhook_concurrency = parse_num(&flag, &value)?,
                "--rate" => o.rate = parse_num(&flag, &value)?,
                "--paced-secs" => o.paced_secs = parse_num(&flag, &value)?,
                "--gateway-bin" => o.gateway_bin = value,
                "--gateway-port" => o.gateway_port = parse_num(&flag, &value)?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
            }
        }
        if o.gateway_bin.is_empty() || o.numbers == 0 || o.messages == 0 {
            return Err(USAGE.into());
        }
        Ok(())
    })();
    if let Err(e) = parsed.and_then(|()| run(o)) {
        eprintln!("bench-loop: {}", wa_benches::describe(e.as_ref()));
        std::process::exit(1);
    }
}
