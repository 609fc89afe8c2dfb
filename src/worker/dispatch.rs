//! The HTTP side of the worker: a fixed pool of threads that only do HTTP (pgrx and PostgreSQL
//! calls stay on the worker's main thread). Connections are kept alive and bounded by the
//! pool size, so the worker stays far below the default 1,024 open files at any queue size.

use super::limiter::Pacer;
use crossbeam_channel::{Receiver, Sender, unbounded};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use whatsapp_client::api::{ApiError, GraphClient, Secret};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    MarkRead,
    MediaDownload,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "message" => Some(Kind::Message),
            "mark_read" => Some(Kind::MarkRead),
            "media_download" => Some(Kind::MediaDownload),
            _ => None,
        }
    }
}

pub struct Job {
    pub outbox_id: i64,
    pub tenant: String,
    pub kind: Kind,
    pub message_id: Option<String>,
    pub phone: String,
    pub payload: String,
    pub attempts: i32,
    pub token: Arc<Secret>,
    pub media_max_bytes: u64,
    /// The claim that leased this row: every write-back is conditional on it.
    pub claim: i64,
    /// The last moment this job may start: its lease must outlast the request's timeouts.
    pub deadline: Instant,
}

pub enum Outcome {
    /// Accepted by Meta; the wamid when it was a message.
    Sent(Option<String>),
    /// A media file downloaded to a spool file, its SHA-256 checked against Meta's.
    Media {
        mime: Option<String>,
        file: super::spool::Spooled,
    },
    /// A media file whose bytes are not what Meta described (its SHA-256 differs).
    MediaCorrupt(String),
    Failed(ApiError),
    /// Not sent: the lease was about to run out before an HTTP thread was free.
    Expired,
}

pub struct Done {
    pub job: Job,
    pub outcome: Outcome,
    /// How long the request took (zero when none was made).
    pub elapsed: Duration,
}

fn run(client: &GraphClient, job: &Job) -> Outcome {
    match job.kind {
        Kind::Message | Kind::MarkRead => {
            match client.send_raw(&job.phone, job.token.expose(), job.payload.as_bytes()) {
                Ok(resp) => Outcome::Sent(resp.message_id().map(str::to_owned)),
                Err(e) => Outcome::Failed(e),
            }
        }
        Kind::MediaDownload => {
            let info = match client.media_info(&job.payload, job.token.expose(), Some(&job.phone)) {
                Ok(info) => info,
                Err(e) => return Outcome::Failed(e),
            };
            match super::spool::download(client, &info.url, job.token.expose(), job.media_max_bytes)
            {
                Ok((file, content_type)) => match info.sha256.as_deref() {
                    Some(given) if !super::spool::matches(given, &file.sha256) => {
                        Outcome::MediaCorrupt(format!(
                            "the downloaded file ({} bytes) has SHA-256 {}, not the {given} Meta gave: it was corrupted on the way",
                            file.size, file.sha256
                        ))
                    }
                    _ => Outcome::Media {
                        mime: info.mime_type.clone().or(content_type),
                        file,
                    },
                },
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

/// A claimed job waiting for its send time.
struct Scheduled {
    at: Instant,
    job: Job,
}

/// Claimed jobs waiting per business number, each number's in send-time order.
#[derive(Default)]
struct Waiting {
    lanes: HashMap<String, VecDeque<Scheduled>>,
    order: Vec<String>,
    turn: usize,
    len: usize,
}

impl Waiting {
    fn push(&mut self, s: Scheduled) {
        let phone = s.job.phone.clone();
        let lane = self.lanes.entry(phone.clone()).or_default();
        if lane.is_empty() && !self.order.contains(&phone) {
            self.order.push(phone);
        }
        lane.push_back(s);
        self.len += 1;
    }

    /// The next job that may be sent now: numbers take turns, and a number only when its
    /// next message is due and its pacing allows.
    fn take_due(&mut self, pacer: &mut Pacer, now: Instant) -> Option<Job> {
        let n = self.order.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let phone = &self.order[i];
            let Some(lane) = self.lanes.get_mut(phone) else {
                continue;
            };
            if lane.front().is_none_or(|s| s.at > now) || pacer.try_release(phone, now).is_err() {
                continue;
            }
            let job = lane.pop_front().map(|s| s.job);
            self.len -= 1;
            self.turn = (i + 1) % n;
            if lane.is_empty() {
                let phone = phone.clone();
                self.lanes.remove(&phone);
                self.order.retain(|p| *p != phone);
                self.turn = if self.order.is_empty() {
                    0
                } else {
                    self.turn % self.order.len()
                };
            }
            return job;
        }
        None
    }

    /// When the next waiting job can go (none waiting: None).
    fn next_opening(&self, pacer: &mut Pacer, now: Instant) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|(phone, lane)| {
                lane.front().map(|s| s.at.max(pacer.release_at(phone, now)))
            })
            .min()
    }

    fn drain_all(&mut self) -> Vec<Job> {
        self.order.clear();
        self.len = 0;
        self.lanes
            .drain()
            .flat_map(|(_, l)| l.into_iter().map(|s| s.job))
            .collect()
    }
}

struct State {
    waiting: Waiting,
    pacer: Pacer,
    open: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The HTTP threads and the jobs waiting for them. Threads take the next due job themselves,
/// so pacing holds at the moment of sending and no number queues behind another.
pub struct Pool {
    shared: Arc<Shared>,
    pub results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(shared: &Shared, client: &GraphClient, done: &Sender<Done>) {
    let mut state = lock(shared);
    loop {
        if !state.open {
            return;
        }
        let now = Instant::now();
        let State { waiting, pacer, .. } = &mut *state;
        if let Some(job) = waiting.take_due(pacer, now) {
            drop(state);
            let started = Instant::now();
            let (outcome, elapsed) = if job.deadline <= started {
                (Outcome::Expired, Duration::ZERO)
            } else {
                (run(client, &job), started.elapsed())
            };
            if done
                .send(Done {
                    job,
                    outcome,
                    elapsed,
                })
                .is_err()
            {
                return;
            }
            state = lock(shared);
            continue;
        }
        let wait = waiting
            .next_opening(pacer, now)
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(100))
            .clamp(Duration::from_micros(200), Duration::from_millis(100));
        state = shared
            .wake
            .wait_timeout(state, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

impl Pool {
    pub fn start(client: GraphClient, threads: usize, pacer: Pacer) -> Pool {
        let (done_tx, done_rx) = unbounded::<Done>();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: Waiting::default(),
                pacer,
                open: true,
            }),
            wake: Condvar::new(),
        });
        let client = Arc::new(client);
        // Block every signal while spawning, so that the threads inherit a full mask and
        // PostgreSQL's signal handlers only ever run on the main thread.
        let handles = with_signals_blocked(|| {
            (0..threads.max(1))
                .filter_map(|i| {
                    let shared = shared.clone();
                    let tx = done_tx.clone();
                    let client = client.clone();
                    std::thread::Builder::new()
                        .name(format!("wa-http-{i}"))
                        .spawn(move || serve(&shared, &client, &tx))
                        .ok()
                })
                .collect()
        });
        Pool {
            shared,
            results: done_rx,
            threads: handles,
        }
    }

    /// Schedules claimed jobs on their numbers' lanes and wakes the threads.
    pub fn enqueue(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut state = lock(&self.shared);
        for job in jobs {
            let at = state.pacer.schedule(&job.phone);
            state.waiting.push(Scheduled { at, job });
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// The jobs waiting for an HTTP thread whose deadline comes before `before`: outbox id,
    /// tenant, claim.
    pub fn expiring(&self, before: Instant) -> Vec<(i64, String, i64)> {
        let state = lock(&self.shared);
        state
            .waiting
            .lanes
            .values()
            .flatten()
            .filter(|s| s.job.deadline < before)
            .map(|s| (s.job.outbox_id, s.job.tenant.clone(), s.job.claim))
            .collect()
    }

    /// Moves the deadline of the waiting jobs whose leases were renewed.
    pub fn extend(&self, renewed: &std::collections::HashSet<i64>, deadline: Instant) {
        let mut state = lock(&self.shared);
        for s in state.waiting.lanes.values_mut().flatten() {
            if renewed.contains(&s.job.outbox_id) {
                s.job.deadline = deadline;
            }
        }
    }

    /// Runs `f` with the pacer (claim budgets, rates, throttling, snapshots).
    pub fn with_pacer<R>(&self, f: impl FnOnce(&mut Pacer) -> R) -> R {
        f(&mut lock(&self.shared).pacer)
    }

    /// Stops the threads (each finishes the request it is making) and returns the jobs that
    /// never started, the results not yet collected, and the pacer.
    pub fn shutdown(mut self) -> (Vec<Job>, Vec<Done>, Pacer) {
        let waiting = {
            let mut state = lock(&self.shared);
            state.open = false;
            state.waiting.drain_all()
        };
        self.shared.wake.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        let pacer = std::mem::replace(&mut lock(&self.shared).pacer, Pacer::new(1.0));
        (waiting, self.results.try_iter().collect(), pacer)
    }
}

/// Runs `f` (which starts threads) with every signal blocked, so that the threads inherit a
/// full mask and PostgreSQL's signal handlers only ever run on the main thread.
pub(crate) fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain POSIX signal mask manipulation on the calling thread.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}
