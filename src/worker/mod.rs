//! The background worker: claim → rate-limit → dispatch over HTTP → record outcome.
//!
//! One worker per cluster serves the database named by `wa.database`. The main thread owns all
//! PostgreSQL work (claims and write-backs, each a short transaction); a pool of HTTP threads
//! sends. Claiming the next batch and writing back the previous one overlap with sending.
//! A claim moves a row's due time forward by a lease, so rows claimed by a worker that died
//! become due again: nothing is lost, and only requests in flight at the moment of a crash
//! can be sent twice.

mod dispatch;
mod dropdb;
mod limiter;
mod txn;
mod writeback;

use crate::guc;
use crate::send::wake;
use dispatch::{Done, Job, Kind, Pool};
use limiter::Pacer;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use whatsapp_client::api::{GraphClient, GraphConfig, Secret};

/// Set in the postmaster when the library is preloaded; backends inherit it.
pub static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Registers the worker (only possible while the library is preloaded).
pub fn register() {
    PRELOADED.store(true, Ordering::Relaxed);
    wake::init_shmem();
    dropdb::install();
    BackgroundWorkerBuilder::new("whatsapp_pg worker")
        .set_type("whatsapp_pg worker")
        .set_library("whatsapp_pg")
        .set_function("wa_worker_main")
        .enable_spi_access()
        // Restarted after a crash or an error exit (not after a clean SIGTERM exit).
        .set_restart_time(Some(Duration::from_secs(2)))
        .load();
}

#[derive(Clone, PartialEq)]
struct Settings {
    url: String,
    version: String,
    batch: usize,
    concurrency: usize,
    timeout: Duration,
    max_attempts: i32,
    rate: f64,
    media_max_bytes: u64,
}

impl Settings {
    fn read() -> Settings {
        Settings {
            url: guc::string(&guc::GRAPH_API_URL)
                .unwrap_or_else(|| "https://graph.facebook.com".into()),
            version: guc::string(&guc::GRAPH_API_VERSION).unwrap_or_else(|| "v25.0".into()),
            batch: guc::WORKER_BATCH_SIZE.get().max(1) as usize,
            concurrency: guc::WORKER_CONCURRENCY.get().max(1) as usize,
            timeout: Duration::from_millis(guc::HTTP_TIMEOUT_MS.get().max(100) as u64),
            max_attempts: guc::MAX_ATTEMPTS.get().max(1),
            rate: guc::RATE_LIMIT_PER_NUMBER.get().max(1) as f64,
            media_max_bytes: guc::MEDIA_MAX_BYTES.get().max(1024) as u64,
        }
    }

    fn client(&self) -> GraphClient {
        GraphClient::new(
            GraphConfig::new(self.url.clone())
                .with_api_version(self.version.clone())
                .with_timeout(self.timeout)
                .with_max_idle_connections(self.concurrency + 2),
        )
    }

    /// How long a claim is leased: long enough for every attempt's phases to time out.
    fn lease_secs(&self) -> f64 {
        (self.timeout.as_secs_f64() * 4.0).max(30.0)
    }
}

/// Claimed jobs, and the tokens decrypted for them (tenant, credential version, token).
type Claimed = (Vec<Job>, Vec<(String, String, Arc<Secret>)>);

/// Counters reported through wa.worker_status().
#[derive(Default)]
pub struct Stats {
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
    pub media: i64,
    pub last_error: Option<serde_json::Value>,
    dirty: bool,
}

struct Worker {
    settings: Settings,
    pool: Pool,
    /// Jobs handed to the pool (waiting for their send time or being sent), not yet recorded.
    in_flight: usize,
    tokens: HashMap<String, (String, Arc<Secret>)>,
    rates_loaded: Option<Instant>,
    /// After a failed claim (e.g. the extension is not installed yet), wait before the next.
    claim_paused_until: Option<Instant>,
    /// No claims until then: only numbers at their horizon had due rows (a commit clears it).
    paced_until: Option<Instant>,
    /// Finished requests not yet recorded: written back in batches, not one by one.
    finished: Vec<Done>,
    finished_since: Option<Instant>,
    stats: Stats,
    flushed: Instant,
    started: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn wa_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = guc::string(&guc::DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // SAFETY: reading this process's pid.
    wake::publish_worker_pid(unsafe { pg_sys::MyProcPid });
    log!("whatsapp_pg worker started for database \"{database}\"");
    let settings = Settings::read();
    let mut worker = Worker {
        pool: Pool::start(
            settings.client(),
            settings.concurrency,
            Pacer::new(settings.rate),
        ),
        settings,
        in_flight: 0,
        tokens: HashMap::new(),
        rates_loaded: None,
        claim_paused_until: None,
        paced_until: None,
        finished: Vec::new(),
        finished_since: None,
        stats: Stats::default(),
        flushed: Instant::now(),
        started: false,
    };
    worker.run();
    wake::publish_worker_pid(0);
}

/// Whether our latch was set (by a committing backend) since it was last reset.
fn latch_is_set() -> bool {
    // SAFETY: MyLatch is the process latch, set up before the worker's main function runs;
    // reading its flag is what WaitLatch itself does.
    unsafe { (*pg_sys::MyLatch).is_set != 0 }
}

impl Worker {
    fn run(&mut self) {
        let mut idle_sleep = Duration::from_millis(10);
        loop {
            if BackgroundWorker::sigterm_received() {
                break;
            }
            if BackgroundWorker::sighup_received() {
                self.reload();
            }
            if self.paced_until.is_some() && latch_is_set() {
                // A commit woke us: new rows may be due for a number that can send.
                // SAFETY: resetting our own latch on the main thread; we claim right after.
                unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
                self.paced_until = None;
            }
            let claimed = if self.in_flight * 2 <= self.settings.batch {
                self.claim(self.settings.batch - self.in_flight)
            } else {
                0
            };
            let mut finished: Vec<Done> = self.pool.results.try_iter().collect();
            if finished.is_empty()
                && self.in_flight > 0
                && claimed == 0
                && let Ok(done) = self.pool.results.recv_timeout(Duration::from_millis(2))
            {
                finished.push(done);
                finished.extend(self.pool.results.try_iter());
            }
            if !finished.is_empty() {
                self.in_flight -= finished.len().min(self.in_flight);
                self.finished.extend(finished);
                self.finished_since.get_or_insert_with(Instant::now);
            }
            // Record outcomes in batches: a transaction per few hundred results, or sooner
            // when nothing else is in flight or the oldest result has waited 10 ms.
            if !self.finished.is_empty()
                && (self.finished.len() >= 512
                    || self.in_flight == 0
                    || self
                        .finished_since
                        .is_some_and(|t| t.elapsed() >= Duration::from_millis(10)))
            {
                self.flush_finished();
            }
            self.flush_stats(false);
            if claimed == 0 && self.in_flight == 0 {
                // Nothing in flight: sleep until woken by a commit, a number's next opening,
                // or the safety-net poll (retries become due by time).
                let mut wait = idle_sleep
                    .max(Duration::from_millis(200))
                    .min(Duration::from_secs(1));
                if let Some(d) = self.pool.with_pacer(|p| p.next_opening()) {
                    wait = wait.min(d);
                }
                if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(1)))) {
                    break;
                }
                // Woken by a commit or at a number's opening: look at the queue again.
                self.paced_until = None;
                idle_sleep = (idle_sleep * 2).min(Duration::from_secs(1));
            } else {
                idle_sleep = Duration::from_millis(10);
                pgrx::check_for_interrupts!();
            }
        }
        self.drain();
    }

    fn flush_finished(&mut self) {
        let done = std::mem::take(&mut self.finished);
        self.finished_since = None;
        self.write_back(done);
    }

    fn reload(&mut self) {
        // SAFETY: the main thread, outside a transaction, as PostgreSQL's own workers do.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        let fresh = Settings::read();
        if fresh != self.settings {
            self.pool.with_pacer(|p| p.set_default_rate(fresh.rate));
            self.rates_loaded = None;
            if fresh.url != self.settings.url
                || fresh.version != self.settings.version
                || fresh.concurrency != self.settings.concurrency
                || fresh.timeout != self.settings.timeout
            {
                // New connections for the new settings: the old threads finish the requests
                // they are making; jobs that had not started move to the new pool.
                let old = std::mem::replace(
                    &mut self.pool,
                    Pool::start(fresh.client(), fresh.concurrency, Pacer::new(fresh.rate)),
                );
                let (waiting, done, pacer) = old.shutdown();
                self.pool.with_pacer(|p| *p = pacer);
                self.pool.enqueue(waiting);
                self.in_flight -= done.len().min(self.in_flight);
                self.write_back(done);
            }
            self.settings = fresh;
        }
        self.tokens.clear();
    }

    fn drain(&mut self) {
        // Stop the threads; claimed jobs that never started become due again now rather than
        // after their lease.
        let old = std::mem::replace(
            &mut self.pool,
            Pool::start(self.settings.client(), 0, Pacer::new(1.0)),
        );
        let (waiting, done, _) = old.shutdown();
        self.in_flight -= (waiting.len() + done.len()).min(self.in_flight);
        self.finished.extend(done);
        self.flush_finished();
        let waiting: Vec<(i64, String)> = waiting
            .into_iter()
            .map(|job| (job.outbox_id, job.tenant))
            .collect();
        if !waiting.is_empty() {
            let (ids, tenants): (Vec<i64>, Vec<String>) = waiting.into_iter().unzip();
            let _ = txn::run(std::panic::AssertUnwindSafe(|| {
                Spi::run_with_args(
                    "UPDATE wa.outbox o SET next_attempt_at = pg_catalog.now(), attempts = GREATEST(o.attempts - 1, 0)
                       FROM unnest($1::bigint[], $2::uuid[]) AS s(outbox_id, tenant_id)
                      WHERE o.tenant_id = s.tenant_id AND o.outbox_id = s.outbox_id",
                    &[ids.into(), tenants.into()],
                )
            }));
        }
        self.flush_stats(true);
    }

    fn load_rates(&mut self) {
        if self
            .rates_loaded
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        let default = self.settings.rate;
        let rates = txn::run(|| {
            let mut rates = HashMap::new();
            Spi::connect(|client| {
                let rows = client.select(
                    "SELECT phone_number_id,
                            COALESCE(rate_limit_per_sec,
                                     CASE WHEN throughput_level = 'HIGH' THEN 1000 END)::float8
                       FROM wa.phone_numbers
                      WHERE rate_limit_per_sec IS NOT NULL OR throughput_level = 'HIGH'",
                    None,
                    &[],
                )?;
                for row in rows {
                    if let (Some(p), Some(r)) = (row.get::<String>(1)?, row.get::<f64>(2)?) {
                        rates.insert(p, r);
                    }
                }
                Ok::<_, pgrx::spi::SpiError>(())
            })
            .map(|_| rates)
            .unwrap_or_default()
        });
        if let Ok(rates) = rates {
            self.pool.with_pacer(|p| {
                p.set_default_rate(default);
                p.set_rates(rates);
            });
        }
        self.rates_loaded = Some(Instant::now());
    }

    /// Claims due rows (within each number's budget) and hands them to the HTTP threads.
    fn claim(&mut self, capacity: usize) -> usize {
        let now = Instant::now();
        if capacity == 0
            || self.claim_paused_until.is_some_and(|t| now < t)
            || self.paced_until.is_some_and(|t| now < t)
        {
            return 0;
        }
        self.load_rates();
        let (phones, budgets, exhausted, default_budget) = self.pool.with_pacer(|p| {
            let (a, b, c) = p.budgets();
            (a, b, c, p.default_budget())
        });
        let lease = self.settings.lease_secs();
        let media_max = self.settings.media_max_bytes;
        let known: HashMap<String, (String, Arc<Secret>)> = self.tokens.clone();
        let claimed = txn::run(std::panic::AssertUnwindSafe(
            || -> Result<Claimed, crate::error::WaError> {
                Spi::run("SET LOCAL synchronous_commit = off")?;
                let budgets: serde_json::Map<String, serde_json::Value> = phones
                    .iter()
                    .cloned()
                    .zip(budgets.iter().map(|b| serde_json::Value::from(*b)))
                    .collect();
                let args: [pgrx::datum::DatumWithOid<'_>; 5] = [
                    (capacity as i64).into(),
                    exhausted.clone().into(),
                    pgrx::JsonB(serde_json::Value::Object(budgets)).into(),
                    default_budget.into(),
                    lease.into(),
                ];
                let _nested =
                    crate::plans::GenericPlans::with(&crate::plans::NESTED_LOOP_PLAN_SETTINGS);
                let raw = crate::plans::with_plan(
                    CLAIM_SQL,
                    CLAIM_TYPES,
                    &args,
                    |client, plan, args| {
                        let rows = client.update(plan, None, args)?;
                        let mut raw = Vec::new();
                        for row in rows {
                            raw.push(ClaimedRow {
                                outbox_id: row.get::<i64>(1)?.unwrap_or_default(),
                                tenant: row.get::<String>(2)?.unwrap_or_default(),
                                kind: row.get::<String>(3)?.unwrap_or_default(),
                                message_id: row.get::<String>(4)?,
                                phone: row.get::<String>(5)?.unwrap_or_default(),
                                payload: row.get::<String>(7)?.unwrap_or_default(),
                                attempts: row.get::<i32>(8)?.unwrap_or_default(),
                                version: row.get::<String>(9)?.unwrap_or_default(),
                            });
                        }
                        Ok(raw)
                    },
                )?;
                let mut jobs = Vec::with_capacity(raw.len());
                let mut fresh_tokens = Vec::new();
                let mut tokens = known.clone();
                for r in raw {
                    let token = match tokens.get(&r.tenant) {
                        Some((v, t)) if *v == r.version => t.clone(),
                        _ => {
                            let t = match crate::connect::business_token(&r.tenant) {
                                Ok(t) => Arc::new(Secret::new(t.as_str())),
                                // No usable token: the write-back treats it as a revoked one.
                                Err(_) => Arc::new(Secret::new("")),
                            };
                            tokens.insert(r.tenant.clone(), (r.version.clone(), t.clone()));
                            fresh_tokens.push((r.tenant.clone(), r.version.clone(), t.clone()));
                            t
                        }
                    };
                    let Some(kind) = Kind::parse(&r.kind) else {
                        continue;
                    };
                    jobs.push(Job {
                        outbox_id: r.outbox_id,
                        tenant: r.tenant,
                        kind,
                        message_id: r.message_id,
                        phone: r.phone,
                        payload: r.payload,
                        attempts: r.attempts,
                        token,
                        media_max_bytes: media_max,
                    });
                }
                Ok((jobs, fresh_tokens))
            },
        ));
        let (jobs, fresh) = match claimed {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                self.note_error("claim", &e.to_string());
                self.claim_paused_until = Some(Instant::now() + Duration::from_secs(1));
                return 0;
            }
            Err(e) => {
                self.note_error("claim", &e);
                self.claim_paused_until = Some(Instant::now() + Duration::from_secs(1));
                return 0;
            }
        };
        for (tenant, version, token) in fresh {
            self.tokens.insert(tenant, (version, token));
        }
        let n = jobs.len();
        if n == 0 && !exhausted.is_empty() {
            // Only numbers at their horizon have due rows: claiming again before one of them
            // opens (or a commit wakes us) would read the same queue for nothing.
            let wait = self
                .pool
                .with_pacer(|p| p.next_opening())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            self.paced_until = Some(Instant::now() + wait);
        }
        let mut ready = Vec::with_capacity(n);
        for job in jobs {
            if job.token.expose().is_empty() {
                // Decided on the main thread, without a request.
                self.write_back(vec![Done {
                    outcome: dispatch::Outcome::Failed(whatsapp_client::api::ApiError::Graph {
                        http_status: 401,
                        error: Box::new(whatsapp_client::GraphError::from_value(
                            &serde_json::json!({
                                "message": "no usable business token is stored for this tenant",
                                "type": "OAuthException",
                                "code": 190
                            }),
                        )),
                    }),
                    job,
                }]);
                continue;
            }
            ready.push(job);
        }
        self.in_flight += ready.len();
        self.pool.enqueue(ready);
        n
    }

    fn write_back(&mut self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        let max_attempts = self.settings.max_attempts;
        let result = writeback::record(done, max_attempts);
        match result {
            Ok(counts) => {
                if !counts.throttled.is_empty() {
                    self.pool.with_pacer(|p| {
                        for phone in &counts.throttled {
                            p.throttled(phone, Duration::from_secs(1));
                        }
                    });
                }
                self.stats.sent += counts.sent;
                self.stats.failed += counts.failed;
                self.stats.retried += counts.retried;
                self.stats.media += counts.media;
                if let Some(e) = counts.last_error {
                    self.stats.last_error = Some(e);
                }
                for tenant in counts.reauthorize {
                    self.tokens.remove(&tenant);
                }
                self.stats.dirty = true;
            }
            Err(e) => self.note_error("write-back", &e),
        }
    }

    fn note_error(&mut self, stage: &str, message: &str) {
        warning!("whatsapp_pg worker: {stage} failed: {message}");
        self.stats.last_error = Some(serde_json::json!({ "stage": stage, "message": message }));
        self.stats.dirty = true;
    }

    /// Publishes counters and rate-limit state about once a second (and at start and exit).
    fn flush_stats(&mut self, force: bool) {
        if !force
            && self.started
            && (!self.stats.dirty || self.flushed.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let snapshot = self.pool.with_pacer(|p| p.snapshot());
        let s = &self.stats;
        let (sent, failed, retried, media, error) =
            (s.sent, s.failed, s.retried, s.media, s.last_error.clone());
        let first = !self.started;
        let ok = txn::run(std::panic::AssertUnwindSafe(|| {
            Spi::run_with_args(
                "INSERT INTO wa.worker_state AS s (singleton, pid, started_at, heartbeat_at, sent, failed, retried,
                                                   media_downloaded, last_error, last_error_at, rate_limits)
                 VALUES (true, pg_backend_pid(), now(), now(), $1, $2, $3, $4, $5,
                         CASE WHEN $5 IS NOT NULL THEN now() END, $6)
                 ON CONFLICT (singleton) DO UPDATE SET
                     pid = pg_backend_pid(),
                     started_at = CASE WHEN $7 THEN now() ELSE s.started_at END,
                     heartbeat_at = now(),
                     sent = CASE WHEN $7 THEN 0 ELSE s.sent END + $1,
                     failed = CASE WHEN $7 THEN 0 ELSE s.failed END + $2,
                     retried = CASE WHEN $7 THEN 0 ELSE s.retried END + $3,
                     media_downloaded = CASE WHEN $7 THEN 0 ELSE s.media_downloaded END + $4,
                     last_error = COALESCE($5, s.last_error),
                     last_error_at = CASE WHEN $5 IS NOT NULL THEN now() ELSE s.last_error_at END,
                     rate_limits = $6",
                &[
                    sent.into(),
                    failed.into(),
                    retried.into(),
                    media.into(),
                    error.map(pgrx::JsonB).into(),
                    pgrx::JsonB(snapshot).into(),
                    first.into(),
                ],
            )
        }));
        if let Ok(Ok(())) = ok {
            // Counters are deltas since the last flush.
            self.stats = Stats::default();
            self.started = true;
            self.flushed = Instant::now();
        } else {
            // The extension may not be installed yet; try again later.
            self.flushed = Instant::now();
        }
    }
}

/// One row a claim returned.
struct ClaimedRow {
    outbox_id: i64,
    tenant: String,
    kind: String,
    message_id: Option<String>,
    phone: String,
    payload: String,
    attempts: i32,
    version: String,
}

const CLAIM_TYPES: &[pgrx::pg_sys::PgOid] = &[
    crate::plans::INT8,
    crate::plans::TEXT_ARRAY,
    crate::plans::JSONB,
    crate::plans::INT4,
    crate::plans::FLOAT8,
];

/// Claims due outbox rows, at most `$4` (or the number's budget in the `$3` object) per number
/// and none for exhausted numbers (`$2`), and leases them for `$5` seconds. It runs with
/// `NESTED_LOOP_PLAN_SETTINGS`: the picked rows are updated by primary-key probes (left to
/// choose, the planner hash-joined them with a scan of the whole outbox, 61 ms a claim with
/// 100,000 rows queued), and the budgets are a jsonb lookup rather than a join.
const CLAIM_SQL: &str = "
WITH due AS (
    SELECT o.tenant_id, o.outbox_id, o.phone_number_id,
           row_number() OVER (PARTITION BY o.phone_number_id
                              ORDER BY o.next_attempt_at, o.outbox_id) AS rn
      FROM (SELECT o.tenant_id, o.outbox_id, o.phone_number_id, o.next_attempt_at
              FROM wa.outbox o
             WHERE o.next_attempt_at <= pg_catalog.now()
               AND o.phone_number_id <> ALL ($2::text[])
             ORDER BY o.next_attempt_at, o.outbox_id
             LIMIT $1 * 2) o
), pick AS (
    SELECT d.tenant_id, d.outbox_id
      FROM due d
     WHERE d.rn <= COALESCE(($3 ->> d.phone_number_id)::int, $4)
     ORDER BY d.outbox_id
     LIMIT $1
)
UPDATE wa.outbox o
   SET next_attempt_at = pg_catalog.now() + $5 * interval '1 second',
       attempts = o.attempts + 1
  FROM pick p
 WHERE o.tenant_id = p.tenant_id AND o.outbox_id = p.outbox_id
   AND o.next_attempt_at <= pg_catalog.now()
RETURNING o.outbox_id, o.tenant_id::text, o.kind, o.message_id::text, o.phone_number_id,
          o.recipient, o.payload, o.attempts,
          COALESCE((SELECT c.updated_at::text FROM wa.credentials c
                     WHERE c.tenant_id = o.tenant_id AND c.kind = 'business_token'), '')";
