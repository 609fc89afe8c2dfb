//! The background worker: claim → rate-limit → dispatch over HTTP → record outcome.
//!
//! One worker per cluster serves the database named by `wa.database`. The main thread owns all
//! PostgreSQL work (claims and write-backs, each a short transaction); a pool of HTTP threads
//! sends. Claiming the next batch and writing back the previous one overlap with sending.
//! A claim moves a row's due time forward by a lease, so rows claimed by a worker that died
//! become due again: nothing is lost, and only requests in flight at the moment of a crash
//! can be sent twice.

mod dispatch;
pub(crate) use dispatch::with_signals_blocked;
mod dropdb;
mod identity;
pub(crate) use identity::{become_role, pin_signup_session};
mod limiter;
mod spool;
pub(crate) mod sql;
mod tokens;
pub(crate) mod txn;
mod writeback;

use crate::guc;
use crate::send::wake;
use dispatch::{Done, Job, Kind, Pool};
use limiter::Pacer;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use whatsapp_client::api::{GraphClient, GraphConfig};

/// Set in the postmaster when the library is preloaded; backends inherit it.
pub static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Registers the worker (only possible while the library is preloaded).
pub fn register() {
    PRELOADED.store(true, Ordering::Relaxed);
    wake::init_shmem();
    crate::signup::init_shmem();
    dropdb::install();
    BackgroundWorkerBuilder::new("whatsapp_pg worker")
        .set_type("whatsapp_pg worker")
        .set_library("whatsapp_pg")
        .set_function("wa_worker_main")
        .enable_spi_access()
        // Restarted after a crash or an exit with status 1, which is how it always exits
        // (SIGTERM included) except at server shutdown, when the postmaster restarts nothing.
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
    grace_secs: f64,
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
            grace_secs: f64::from(guc::OUTCOME_GRACE_MS.get().max(0)) / 1000.0,
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

    /// How long a claim is leased (and renewed for while a job waits for an HTTP thread).
    fn lease_secs(&self) -> f64 {
        (self.timeout.as_secs_f64() * 6.0).max(60.0)
    }

    /// How much of its lease a job must have left to be sent: every phase of the request may
    /// run to its timeout, and the outcome must still be recorded before the lease runs out.
    fn start_margin(&self) -> Duration {
        self.timeout * 3 + Duration::from_secs(2)
    }

    /// How long after its claim (or renewal) a job may still start.
    fn start_window(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs()).saturating_sub(self.start_margin())
    }
}

/// A random, positive claim id: write-backs and releases are conditional on it.
fn new_claim_id() -> i64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: the time still makes ids distinct from any earlier claim.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        b = t.to_le_bytes();
    }
    (u64::from_le_bytes(b) >> 1).max(1) as i64
}

/// What a claim hands to the HTTP threads, and key problems it met (to log once each).
#[derive(Default)]
struct Claimed {
    /// This database is a restored copy that was not accepted yet: nothing was claimed.
    restored: bool,
    jobs: Vec<Job>,
    reports: Vec<String>,
    /// Rows found orphaned by a worker that died, held as unknown outcomes.
    unknown: i64,
}

/// Outbox rows by id and tenant, as the set-based statements take them.
type Rows = (Vec<i64>, Vec<String>);

/// Counters reported through wa.worker_status().
#[derive(Default)]
pub struct Stats {
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
    pub media: i64,
    pub unknown: i64,
    pub duplicates: i64,
    pub last_error: Option<serde_json::Value>,
    /// Claims and write-backs that committed, and the time they took (summed, in seconds):
    /// exported as Prometheus summaries, so `rate(sum) / rate(count)` is their mean latency.
    pub claims: i64,
    pub claim_seconds: f64,
    pub write_backs: i64,
    pub write_back_seconds: f64,
    dirty: bool,
}

struct Worker {
    settings: Settings,
    pool: Pool,
    /// Jobs handed to the pool (waiting for their send time or being sent), not yet recorded.
    in_flight: usize,
    tokens: tokens::Tokens,
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
    /// The key pause last written to wa.worker_state (a change is written at once).
    published_pause: Option<serde_json::Value>,
    /// Outcomes a write-back could not record (a lock timeout, a deadlock): kept, never
    /// dropped, and recorded again after a short wait. Their rows are not claimed meanwhile.
    unrecorded: Vec<Done>,
    unrecorded_retry: Option<Instant>,
    unrecorded_failures: u32,
    /// Average request duration (seconds): bounds what is claimed to what can be sent well
    /// within a lease.
    latency: f64,
    leases_checked: Instant,
    /// When the installed extension version was last compared with this library's.
    version_checked: Instant,
    /// Claims made (Citus: which due tenant is claimed for first).
    claim_round: usize,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn wa_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    spool::init();
    let database = guc::string(&guc::DATABASE).unwrap_or_else(|| "postgres".into());
    // Not while the database is being dropped, nor after it was (until it is created again).
    while !dropdb::database_available() {
        if BackgroundWorker::sigterm_received()
            || !BackgroundWorker::wait_latch(Some(Duration::from_millis(250)))
        {
            return;
        }
    }
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    identity::pin_settings();
    let mut told = None;
    loop {
        // Nothing runs before the extension exists at this library's version: not created
        // yet, or installed at another version (a new library waits for ALTER EXTENSION
        // UPDATE; after a downgrade of the library, for the library it was updated to).
        let version = installed_version().ok().flatten();
        if version.as_deref() == Some(LIBRARY_VERSION) {
            if citus_worker_node() {
                // The coordinator's worker sends for every shard (docs/SCALING.md).
                if told.as_deref() != Some("citus worker node") {
                    log!(
                        "whatsapp_pg worker for database \"{database}\" stays idle: this is a \
                         Citus worker node, and the coordinator's worker sends"
                    );
                    told = Some("citus worker node".into());
                }
            } else if identity::become_wa_worker() {
                break;
            }
        } else if let Some(v) = version
            && told.as_deref() != Some(v.as_str())
        {
            warning!(
                "whatsapp_pg worker for database \"{database}\" waits: the extension is \
                 installed at version {v} and this library is version {LIBRARY_VERSION}; \
                 run ALTER EXTENSION whatsapp_pg UPDATE there"
            );
            told = Some(v);
        }
        if BackgroundWorker::sigterm_received()
            || !BackgroundWorker::wait_latch(Some(Duration::from_secs(1)))
        {
            exit_for_restart();
        }
    }
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
        tokens: tokens::Tokens::default(),
        rates_loaded: None,
        claim_paused_until: None,
        paced_until: None,
        finished: Vec::new(),
        finished_since: None,
        stats: Stats::default(),
        flushed: Instant::now(),
        started: false,
        published_pause: None,
        unrecorded: Vec::new(),
        unrecorded_retry: None,
        unrecorded_failures: 0,
        latency: 0.05,
        leases_checked: Instant::now(),
        version_checked: Instant::now(),
        claim_round: 0,
    };
    worker.run();
    wake::publish_worker_pid(0);
    exit_for_restart();
}

/// The version of this library; the worker serves a database whose extension is at it.
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the extension installed in the worker's database (`Ok(None)`: not created,
/// or dropped); `Err` when the lookup itself failed.
fn installed_version() -> Result<Option<String>, String> {
    txn::run(|| Spi::get_one::<String>(sql::INSTALLED_VERSION))?.map_err(|e| e.to_string())
}

/// Whether this database is on a Citus worker node, where the worker must not send: the
/// coordinator's claims cover every shard. False when the lookup fails (no Citus).
fn citus_worker_node() -> bool {
    if !crate::citus::loaded() {
        return false;
    }
    txn::run(|| {
        let present = Spi::get_one::<bool>(sql::CITUS_PRESENT)?.unwrap_or(false);
        if !present {
            return Ok(false);
        }
        Spi::get_one::<bool>(sql::CITUS_WORKER_NODE).map(|w| w.unwrap_or(false))
    })
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false)
}

/// Exits so that the postmaster starts the worker again after its restart time: whoever
/// stopped it (a superuser's pg_terminate_backend, a drop of its database that then failed)
/// must not leave every tenant without sending. At shutdown nothing is restarted anyway.
fn exit_for_restart() -> ! {
    // SAFETY: the worker's main thread; proc_exit runs the exit callbacks and never returns.
    unsafe { pg_sys::proc_exit(1) }
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
            if self.version_checked.elapsed() >= Duration::from_secs(2) {
                self.version_checked = Instant::now();
                if let Ok(v) = installed_version()
                    && v.as_deref() != Some(LIBRARY_VERSION)
                {
                    // Updated, downgraded or dropped under us: stop claiming, record what is
                    // in flight, and start again (waiting for the matching version).
                    warning!(
                        "whatsapp_pg worker stops: the extension is now at version {} and this \
                         library is version {LIBRARY_VERSION}",
                        v.as_deref().unwrap_or("(none)")
                    );
                    break;
                }
            }
            if self.paced_until.is_some() && latch_is_set() {
                // A commit woke us: new rows may be due for a number that can send.
                // SAFETY: resetting our own latch on the main thread; we claim right after.
                unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
                self.paced_until = None;
            }
            let limit = self.max_in_flight();
            let claimed = if self.in_flight * 2 <= limit {
                self.claim(limit - self.in_flight)
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
                for d in finished.iter().filter(|d| !d.elapsed.is_zero()) {
                    self.latency = 0.9 * self.latency + 0.1 * d.elapsed.as_secs_f64();
                }
                self.in_flight -= finished.len().min(self.in_flight);
                self.finished.extend(finished);
                self.finished_since.get_or_insert_with(Instant::now);
            }
            // Record outcomes in batches: a transaction per few hundred results, or sooner
            // when nothing else is in flight or the oldest result has waited 10 ms.
            let recorded = !self.finished.is_empty()
                && (self.finished.len() >= 512
                    || self.in_flight == 0
                    || self
                        .finished_since
                        .is_some_and(|t| t.elapsed() >= Duration::from_millis(10)));
            if recorded {
                self.flush_finished();
            }
            if !self.unrecorded.is_empty()
                && self.unrecorded_retry.is_none_or(|t| Instant::now() >= t)
            {
                let again = std::mem::take(&mut self.unrecorded);
                self.write_back(again);
            }
            self.renew_leases();
            self.flush_stats(false);
            // Not after recording outcomes: they may have made rows claimable (the next message
            // to a customer waits for the one before it).
            if claimed == 0 && self.in_flight == 0 && !recorded {
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

    /// How many claimed jobs may wait in memory: no more than the HTTP threads can send in
    /// half a start window at the observed request duration (so that a slow Graph API does
    /// not leave claimed rows waiting until their lease runs out), and never more than a batch.
    fn max_in_flight(&self) -> usize {
        let window = self.settings.start_window().as_secs_f64() / 2.0;
        let sendable =
            (self.settings.concurrency as f64 * window / self.latency.max(0.001)) as usize;
        sendable
            .max(self.settings.concurrency)
            .min(self.settings.batch)
    }

    /// Renews the leases of claimed jobs that still wait for an HTTP thread and would soon
    /// be too close to their lease's end to be sent; a job whose row was held or claimed anew
    /// meanwhile keeps its deadline and is put back unsent when it comes up.
    fn renew_leases(&mut self) {
        if self.leases_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.leases_checked = Instant::now();
        let window = self.settings.start_window();
        let expiring = self.pool.expiring(Instant::now() + window / 2);
        if expiring.is_empty() {
            return;
        }
        let lease = self.settings.lease_secs();
        let started = Instant::now();
        let mut ids = Vec::with_capacity(expiring.len());
        let mut tenants = Vec::with_capacity(expiring.len());
        let mut claims = Vec::with_capacity(expiring.len());
        for (id, tenant, claim) in expiring {
            ids.push(id);
            tenants.push(tenant);
            claims.push(claim);
        }
        let renewed = txn::run_ok(std::panic::AssertUnwindSafe(|| {
            Spi::connect_mut(|client| {
                let rows = client.update(
                    sql::RENEW,
                    None,
                    &[ids.into(), tenants.into(), lease.into(), claims.into()],
                )?;
                let mut renewed = std::collections::HashSet::new();
                for row in rows {
                    if let Some(id) = row.get::<i64>(1)? {
                        renewed.insert(id);
                    }
                }
                Ok::<_, pgrx::spi::SpiError>(renewed)
            })
        }));
        match renewed {
            Ok(renewed) => self.pool.extend(&renewed, started + window),
            Err(e) => self.note_error("lease renewal", &e),
        }
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
        self.claim_paused_until = None;
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
        if !self.unrecorded.is_empty() {
            let again = std::mem::take(&mut self.unrecorded);
            self.write_back(again);
        }
        if !waiting.is_empty() {
            let mut ids = Vec::with_capacity(waiting.len());
            let mut tenants = Vec::with_capacity(waiting.len());
            let mut claims = Vec::with_capacity(waiting.len());
            for job in waiting {
                ids.push(job.outbox_id);
                tenants.push(job.tenant);
                claims.push(job.claim);
            }
            let _ = txn::run_ok(std::panic::AssertUnwindSafe(|| {
                Spi::run_with_args(
                    sql::RELEASE,
                    &[ids.into(), tenants.into(), 0.0f64.into(), claims.into()],
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
                let rows = client.select(sql::RATES, None, &[])?;
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
        if !guc::SENDING_ENABLED.get() {
            return 0;
        }
        if let Err(report) = self.tokens.check_keyring() {
            // No key, no token: nothing is claimed (no row changes) until the file is fixed.
            if let Some(line) = report {
                self.note_error("key", &line);
            }
            self.stats.dirty = true;
            self.claim_paused_until = Some(now + Duration::from_secs(1));
            return 0;
        }
        self.load_rates();
        let (phones, budgets, exhausted, default_budget) = self.pool.with_pacer(|p| {
            let (a, b, c) = p.budgets();
            (a, b, c, p.default_budget())
        });
        let mut blocked = self.tokens.blocked();
        let held: Vec<i64> = self.unrecorded.iter().map(|d| d.job.outbox_id).collect();
        let claim_id = new_claim_id();
        let deadline = Instant::now() + self.settings.start_window();
        let grace = self.settings.grace_secs;
        let lease = self.settings.lease_secs();
        let media_max = self.settings.media_max_bytes;
        let tokens = &mut self.tokens;
        let round = self.claim_round;
        self.claim_round = self.claim_round.wrapping_add(1);
        let claim_started = Instant::now();
        let claimed = txn::run_ok(std::panic::AssertUnwindSafe(
            || -> Result<Claimed, crate::error::WaError> {
                Spi::run("SET LOCAL synchronous_commit = off")?;
                // A kept plan: it runs before every claim.
                let (restored, paused) =
                    crate::plans::with_plan(sql::PAUSES, &[], &[], |client, plan, args| {
                        let row = client.update(plan, Some(1), args)?.first();
                        Ok((
                            row.get::<bool>(1)?.unwrap_or(false),
                            row.get::<Vec<String>>(2)?.unwrap_or_default(),
                        ))
                    })?;
                if restored {
                    return Ok(Claimed {
                        restored: true,
                        ..Claimed::default()
                    });
                }
                blocked.extend(paused);
                // The numbers of paused or blocked tenants are not scanned at all: their
                // queues may be long, and every claim would read them through.
                let mut skipped = exhausted.clone();
                if !blocked.is_empty() {
                    skipped.extend(
                        Spi::get_one_with_args::<Vec<String>>(
                            sql::BLOCKED_NUMBERS,
                            &[blocked.clone().into()],
                        )?
                        .unwrap_or_default(),
                    );
                }
                let budgets: serde_json::Map<String, serde_json::Value> = phones
                    .iter()
                    .cloned()
                    .zip(budgets.iter().map(|b| serde_json::Value::from(*b)))
                    .collect();
                let budgets = serde_json::Value::Object(budgets);
                let raw = if crate::citus::loaded() {
                    // Citus: shard by shard, each claim routed to the shard of its tenants;
                    // the shards in turn (a different one first each time), each up to its
                    // share of what is left.
                    let mut groups = Spi::connect(|client| {
                        let mut due = Vec::new();
                        for row in client.select(
                            sql::DUE_TENANTS,
                            None,
                            &[skipped.clone().into(), blocked.clone().into()],
                        )? {
                            if let Some(t) = row.get::<String>(1)? {
                                due.push(t);
                            }
                        }
                        let mut groups: Vec<Vec<String>> = Vec::new();
                        if !due.is_empty() {
                            for row in client.select(sql::SHARD_GROUPS, None, &[due.into()])? {
                                if let Some(g) = row.get::<Vec<String>>(1)? {
                                    groups.push(g);
                                }
                            }
                        }
                        Ok::<_, pgrx::spi::SpiError>(groups)
                    })?;
                    if !groups.is_empty() {
                        groups.sort();
                        let first = round % groups.len();
                        groups.rotate_left(first);
                    }
                    let mut raw = Vec::new();
                    let n = groups.len();
                    for (i, tenants) in groups.into_iter().enumerate() {
                        let left = capacity.saturating_sub(raw.len());
                        if left == 0 {
                            break;
                        }
                        let share = left.div_ceil(n - i).max(1);
                        let args: [pgrx::datum::DatumWithOid<'_>; 9] = [
                            (share as i64).into(),
                            skipped.clone().into(),
                            pgrx::JsonB(budgets.clone()).into(),
                            default_budget.into(),
                            lease.into(),
                            blocked.clone().into(),
                            held.clone().into(),
                            claim_id.into(),
                            tenants.into(),
                        ];
                        raw.extend(Spi::connect_mut(|client| {
                            claimed_rows(client.update(sql::CLAIM_TENANT, None, &args)?)
                        })?);
                    }
                    raw
                } else {
                    let args: [pgrx::datum::DatumWithOid<'_>; 8] = [
                        (capacity as i64).into(),
                        skipped.into(),
                        pgrx::JsonB(budgets).into(),
                        default_budget.into(),
                        lease.into(),
                        blocked.clone().into(),
                        held.clone().into(),
                        claim_id.into(),
                    ];
                    let _nested =
                        crate::plans::GenericPlans::with(&crate::plans::NESTED_LOOP_PLAN_SETTINGS);
                    crate::plans::with_plan(
                        sql::CLAIM,
                        CLAIM_TYPES,
                        &args,
                        |client, plan, args| claimed_rows(client.update(plan, None, args)?),
                    )?
                };
                let mut claim = Claimed::default();
                // Rows whose token does not open go back unsent; rows of a tenant without a
                // token wait for it to be connected again.
                let (mut release, mut hold, mut orphans): (Rows, Rows, Rows) = Default::default();
                for r in raw {
                    let Some(kind) = Kind::parse(&r.kind) else {
                        continue;
                    };
                    if r.orphan && kind == Kind::Message {
                        // An earlier claim never reported back (the worker died): Meta may
                        // have the message. Wait for its status webhook before sending again.
                        orphans.0.push(r.outbox_id);
                        orphans.1.push(r.tenant);
                        continue;
                    }
                    let token = match tokens.get(&r.tenant, &r.version) {
                        Ok(token) => token,
                        Err(tokens::TokenError::Key { key_id, reason }) => {
                            claim
                                .reports
                                .extend(tokens.block(&r.tenant, &key_id, &reason));
                            release.0.push(r.outbox_id);
                            release.1.push(r.tenant);
                            continue;
                        }
                        Err(tokens::TokenError::Missing) => {
                            hold.0.push(r.outbox_id);
                            hold.1.push(r.tenant);
                            continue;
                        }
                    };
                    claim.jobs.push(Job {
                        outbox_id: r.outbox_id,
                        tenant: r.tenant,
                        kind,
                        message_id: r.message_id,
                        phone: r.phone,
                        payload: r.payload,
                        attempts: r.attempts,
                        token,
                        media_max_bytes: media_max,
                        claim: claim_id,
                        deadline,
                    });
                }
                if !orphans.0.is_empty() {
                    claim.unknown = orphans.0.len() as i64;
                    let n = orphans.0.len();
                    let error = serde_json::json!({
                        "title": "outcome unknown",
                        "details": "The worker stopped while this message was in flight."
                    });
                    let errors: Vec<pgrx::JsonB> =
                        (0..n).map(|_| pgrx::JsonB(error.clone())).collect();
                    Spi::run_with_args(
                        sql::UNKNOWN,
                        &[
                            orphans.0.into(),
                            orphans.1.into(),
                            grace.into(),
                            vec![claim_id; n].into(),
                            vec![1i32; n].into(),
                            errors.into(),
                        ],
                    )?;
                }
                if !release.0.is_empty() {
                    let claims = vec![claim_id; release.0.len()];
                    Spi::run_with_args(
                        sql::RELEASE,
                        &[
                            release.0.into(),
                            release.1.into(),
                            5.0f64.into(),
                            claims.into(),
                        ],
                    )?;
                }
                if !hold.0.is_empty() {
                    let reason = serde_json::json!({
                        "title": "no business token",
                        "details": "No business token is stored for this tenant; its messages wait until it is connected again."
                    });
                    let claims = vec![claim_id; hold.0.len()];
                    Spi::run_with_args(
                        sql::HOLD_ROWS,
                        &[
                            hold.0.into(),
                            hold.1.into(),
                            pgrx::JsonB(reason).into(),
                            claims.into(),
                        ],
                    )?;
                }
                Ok(claim)
            },
        ));
        let claim = match claimed {
            Ok(claim) => {
                self.stats.claims += 1;
                self.stats.claim_seconds += claim_started.elapsed().as_secs_f64();
                claim
            }
            Err(e) => {
                self.note_error("claim", &e);
                self.claim_paused_until = Some(Instant::now() + Duration::from_secs(1));
                return 0;
            }
        };
        if claim.restored {
            // Look again now and then (wa.resume_sending() also wakes the worker).
            self.claim_paused_until = Some(Instant::now() + Duration::from_secs(1));
            return 0;
        }
        for line in &claim.reports {
            self.note_error("key", line);
        }
        if claim.unknown > 0 {
            self.stats.unknown += claim.unknown;
            self.stats.dirty = true;
        }
        if !claim.reports.is_empty() || !blocked.is_empty() {
            self.stats.dirty = true;
        }
        let n = claim.jobs.len();
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
        self.in_flight += n;
        self.pool.enqueue(claim.jobs);
        n
    }

    fn write_back(&mut self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        let (max_attempts, grace) = (self.settings.max_attempts, self.settings.grace_secs);
        let started = Instant::now();
        match writeback::record(&done, max_attempts, grace) {
            Ok(counts) => {
                self.stats.write_backs += 1;
                self.stats.write_back_seconds += started.elapsed().as_secs_f64();
                self.unrecorded_failures = 0;
                self.unrecorded_retry = None;
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
                self.stats.unknown += counts.unknown;
                self.stats.duplicates += counts.duplicates;
                if let Some(e) = counts.last_error {
                    self.stats.last_error = Some(e);
                }
                for tenant in counts.reauthorize {
                    self.tokens.forget(&tenant);
                }
                self.stats.dirty = true;
            }
            Err(e) => {
                // Nothing of the batch was recorded: keep every outcome (sends Meta accepted
                // included) and record them again shortly.
                self.note_error("write-back", &e);
                self.unrecorded_failures = (self.unrecorded_failures + 1).min(6);
                let wait = Duration::from_millis(100 << self.unrecorded_failures);
                self.unrecorded_retry = Some(Instant::now() + wait);
                self.unrecorded.extend(done);
            }
        }
    }

    fn note_error(&mut self, stage: &str, message: &str) {
        warning!("whatsapp_pg worker: {stage} failed: {message}");
        self.stats.last_error = Some(serde_json::json!({ "stage": stage, "message": message }));
        self.stats.dirty = true;
    }

    /// Publishes counters and rate-limit state about once a second (and at start and exit).
    fn flush_stats(&mut self, force: bool) {
        let paused = self.tokens.pause();
        if !force
            && self.started
            && paused == self.published_pause
            && (!self.stats.dirty || self.flushed.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let snapshot = self.pool.with_pacer(|p| p.snapshot());
        let s = &self.stats;
        let (sent, failed, retried, media, error) =
            (s.sent, s.failed, s.retried, s.media, s.last_error.clone());
        let (unknown, duplicates) = (s.unknown, s.duplicates);
        let (claims, claim_seconds) = (s.claims, s.claim_seconds);
        let (write_backs, write_back_seconds) = (s.write_backs, s.write_back_seconds);
        let unrecorded = self.unrecorded.len() as i32;
        let first = !self.started;
        let published = paused.clone();
        let ok = txn::run_ok(std::panic::AssertUnwindSafe(|| {
            Spi::run_with_args(
                sql::HEARTBEAT,
                &[
                    sent.into(),
                    failed.into(),
                    retried.into(),
                    media.into(),
                    error.map(pgrx::JsonB).into(),
                    pgrx::JsonB(snapshot).into(),
                    first.into(),
                    paused.map(pgrx::JsonB).into(),
                    unknown.into(),
                    duplicates.into(),
                    unrecorded.into(),
                    claims.into(),
                    claim_seconds.into(),
                    write_backs.into(),
                    write_back_seconds.into(),
                ],
            )
        }));
        if ok.is_ok() {
            self.published_pause = published;
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
    orphan: bool,
}

/// The rows a claim returned (`sql::CLAIM`, `sql::CLAIM_TENANT`).
fn claimed_rows(
    rows: pgrx::spi::SpiTupleTable<'_>,
) -> Result<Vec<ClaimedRow>, pgrx::spi::SpiError> {
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
            orphan: row.get::<bool>(10)?.unwrap_or(false),
        });
    }
    Ok(raw)
}

const CLAIM_TYPES: &[pgrx::pg_sys::PgOid] = &[
    crate::plans::INT8,
    crate::plans::TEXT_ARRAY,
    crate::plans::JSONB,
    crate::plans::INT4,
    crate::plans::FLOAT8,
    crate::plans::TEXT_ARRAY,
    crate::plans::INT8_ARRAY,
    crate::plans::INT8,
];
