//! Pieces shared by the programs that drive the background worker against graph-sim
//! (`bench-send`, `bench-loop`): the served database made fresh with N connected numbers, bulk
//! enqueues spread over them, and what `/proc` says about a process (CPU, memory, files).

use crate::{BenchResult, Target};
use graph_sim::Sim;
use postgres::Client;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Sends the simulator has accepted so far.
pub fn accepted(sim: &Sim) -> i64 {
    sim.admin("GET", "stats?detail=0", Value::Null).1["sends"]["accepted"]
        .as_i64()
        .unwrap_or(0)
}

pub fn worker_pid(c: &mut Client) -> BenchResult<i32> {
    let row = c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'whatsapp_pg worker'",
        &[],
    )?;
    Ok(row
        .ok_or("the whatsapp_pg worker is not running (is --db the cluster's wa.database?)")?
        .get(0))
}

/// A `kB` value of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, …).
pub fn proc_value(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of all the process's threads (the worker's main thread and its HTTP threads).
pub fn cpu_time(pid: i32) -> Duration {
    let ns: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Share of one core the process used over `span`.
pub fn cpu_share(pid: i32, span: Duration) -> f64 {
    let before = cpu_time(pid);
    std::thread::sleep(span);
    (cpu_time(pid) - before).as_secs_f64() / span.as_secs_f64()
}

pub fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The `p` quantile (0..1) of sorted values, NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A fresh extension in the served database, the app pointed at the simulator, `numbers`
/// tenants with one connected number each, allowed 1,000 messages/s (Meta's highest tier).
/// Returns each number's id and token.
pub fn setup_numbers(
    c: &mut Client,
    sim: &Sim,
    numbers: usize,
) -> BenchResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    c.batch_execute("DROP EXTENSION IF EXISTS whatsapp_pg CASCADE; DROP SCHEMA IF EXISTS wa CASCADE; CREATE EXTENSION whatsapp_pg")?;
    c.batch_execute(&format!(
        "ALTER SYSTEM SET wa.graph_api_url = '{}'",
        sim.base_url()
    ))?;
    c.batch_execute("SELECT pg_reload_conf()")?;
    std::thread::sleep(Duration::from_millis(500));
    c.execute(
        "SELECT wa.configure_app($1, $2, 'verify', '1')",
        &[&sim.app_id(), &sim.app_secret()],
    )?;
    for i in 0..numbers {
        let s = sim.signup_with(json!({ "token": true }))?;
        let token = s.access_token.ok_or("simulator gave no token")?;
        let t: String = c
            .query_one(
                "SELECT wa.create_tenant($1)::text",
                &[&format!("bench {i}")],
            )?
            .get(0);
        c.execute(
            "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
            &[&t, &s.waba_id, &s.phone_number_id, &token],
        )?;
        out.push((s.phone_number_id, token));
    }
    // High-throughput numbers (Meta allows up to 1,000/s); the simulator's own limits are off.
    c.batch_execute("UPDATE wa.phone_numbers SET rate_limit_per_sec = 1000")?;
    // The worker rereads per-number rates every two seconds.
    std::thread::sleep(Duration::from_secs(3));
    Ok(out)
}

/// `n` text messages to fresh customers (`offset` apart from earlier calls) spread evenly
/// over every tenant, through `wa.send_bulk`: one call per tenant, all in one transaction.
/// Returns the time it took and the message ids.
pub fn enqueue_bulk(
    c: &mut Client,
    n: usize,
    offset: usize,
) -> BenchResult<(Duration, Vec<String>)> {
    let started = Instant::now();
    let rows = c.query(
        "SELECT b.message_id::text
           FROM (SELECT tenant_id, (row_number() OVER (ORDER BY tenant_id) - 1)::int AS i,
                        count(*) OVER ()::int AS k
                   FROM wa.tenants) t
           CROSS JOIN LATERAL wa.send_bulk(
               t.tenant_id,
               ARRAY(SELECT (15550000000 + $2 + g)::text FROM generate_series(0, $1 - 1) g
                      WHERE g % t.k = t.i),
               '{\"type\": \"text\", \"text\": {\"body\": \"benchmark message\"}}') b",
        &[&(n as i32), &(offset as i64)],
    )?;
    let ids = rows.iter().map(|r| r.get(0)).collect();
    Ok((started.elapsed(), ids))
}

/// How a drain went: seconds to the last request and to an empty outbox, the worker's peak
/// RSS (kB) and open files. `VmRSS` counts the pages of PostgreSQL's shared buffers the
/// worker has touched, which belong to the whole cluster; `RssAnon` is its own memory.
pub struct Drain {
    pub requested_s: f64,
    pub recorded_s: f64,
    pub peak_rss_kb: u64,
    pub peak_fds: usize,
}

/// Waits until the simulator has accepted `target` sends and the outbox is empty.
pub fn wait_drained(c: &mut Client, sim: &Sim, target: i64, pid: i32) -> BenchResult<Drain> {
    let started = Instant::now();
    let mut d = Drain {
        requested_s: 0.0,
        recorded_s: 0.0,
        peak_rss_kb: 0,
        peak_fds: 0,
    };
    let mut all_requested = None;
    loop {
        let rss = proc_value(pid, "VmRSS:").unwrap_or(0);
        d.peak_rss_kb = d.peak_rss_kb.max(rss);
        d.peak_fds = d.peak_fds.max(open_files(pid));
        if all_requested.is_none() && accepted(sim) >= target {
            all_requested = Some(started.elapsed().as_secs_f64());
        }
        if let Some(requested_s) = all_requested {
            let left: i64 = c.query_one("SELECT count(*) FROM wa.outbox", &[])?.get(0);
            if left == 0 {
                d.requested_s = requested_s;
                d.recorded_s = started.elapsed().as_secs_f64();
                return Ok(d);
            }
        }
        if started.elapsed() > Duration::from_secs(1800) {
            return Err("the outbox did not drain within 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway as a child process, stopped on drop.
pub struct Gateway {
    child: Child,
    pub url: String,
}

impl Gateway {
    /// Starts `bin` listening on 127.0.0.1:`port`, serving `target`'s database; waits for
    /// `/healthz`.
    pub fn start(target: &Target, bin: &str, port: u16) -> BenchResult<Gateway> {
        let dsn = format!(
            "host={} port={} user={} dbname={}",
            target.host, target.port, target.user, target.db
        );
        let url = format!("http://127.0.0.1:{}", port);
        let child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{}", port)])
            .env("WA_GATEWAY_DATABASE_URL", dsn)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {bin}: {e}"))?;
        let gw = Gateway { child, url };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if ureq::get(&format!("{}/healthz", gw.url)).call().is_ok() {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                return Err("the gateway did not answer /healthz within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's (VmRSS, RssAnon) in kB, read by a thread of its own every `every`.
pub struct MemorySampler {
    samples: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl MemorySampler {
    pub fn start(pid: i32, every: Duration) -> MemorySampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = (
                        proc_value(pid, "VmRSS:").unwrap_or(0),
                        proc_value(pid, "RssAnon:").unwrap_or(0),
                    );
                    if let Ok(mut v) = samples.lock() {
                        v.push(s);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        MemorySampler {
            samples,
            stop,
            handle: Some(handle),
        }
    }

    /// Samples taken so far.
    pub fn taken(&self) -> usize {
        self.samples.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Stops the thread; every sample, oldest first.
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
