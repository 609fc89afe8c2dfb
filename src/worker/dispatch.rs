//! The HTTP side of the worker: a fixed pool of threads that only do HTTP (pgrx and PostgreSQL
//! calls stay on the worker's main thread). Connections are kept alive and bounded by the
//! pool size, so the worker stays far below the default 1,024 open files at any queue size.

use crossbeam_channel::{Receiver, Sender, unbounded};
use std::sync::Arc;
use std::thread::JoinHandle;
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
}

pub enum Outcome {
    /// Accepted by Meta; the wamid when it was a message.
    Sent(Option<String>),
    /// A media file downloaded: (mime type, bytes, sha256 Meta gave).
    Media {
        mime: Option<String>,
        bytes: Vec<u8>,
        sha256: Option<String>,
    },
    Failed(ApiError),
}

pub struct Done {
    pub job: Job,
    pub outcome: Outcome,
}

pub struct Pool {
    jobs: Option<Sender<Job>>,
    pub results: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
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
            match client.download_media(&info.url, job.token.expose(), job.media_max_bytes) {
                Ok(d) => Outcome::Media {
                    mime: info.mime_type.clone().or(d.content_type),
                    bytes: d.bytes,
                    sha256: info.sha256.clone(),
                },
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

impl Pool {
    pub fn start(client: GraphClient, threads: usize) -> Pool {
        let (jobs_tx, jobs_rx) = unbounded::<Job>();
        let (done_tx, done_rx) = unbounded::<Done>();
        let client = Arc::new(client);
        // Block every signal while spawning, so that the threads inherit a full mask and
        // PostgreSQL's signal handlers only ever run on the main thread.
        let handles = with_signals_blocked(|| {
            (0..threads.max(1))
                .filter_map(|i| {
                    let rx = jobs_rx.clone();
                    let tx = done_tx.clone();
                    let client = client.clone();
                    std::thread::Builder::new()
                        .name(format!("wa-http-{i}"))
                        .spawn(move || {
                            while let Ok(job) = rx.recv() {
                                let outcome = run(&client, &job);
                                if tx.send(Done { job, outcome }).is_err() {
                                    break;
                                }
                            }
                        })
                        .ok()
                })
                .collect()
        });
        Pool {
            jobs: Some(jobs_tx),
            results: done_rx,
            threads: handles,
        }
    }

    /// Hands a job to the HTTP threads; false when the pool is shut down.
    pub fn submit(&self, job: Job) -> bool {
        match &self.jobs {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Stops taking jobs and waits for the threads to finish what they hold.
    pub fn shutdown(mut self) -> Vec<Done> {
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.results.try_iter().collect()
    }
}

fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
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
