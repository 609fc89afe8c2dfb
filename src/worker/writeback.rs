//! Recording what the HTTP threads report, in one short transaction per batch, with set-based
//! statements (`unnest` of arrays) rather than a statement per message.

use super::dispatch::{Done, Kind, Outcome};
use super::{sql, txn};
use pgrx::prelude::*;
use serde_json::{Value, json};
use whatsapp_client::api::ApiError;
use whatsapp_client::{ErrorClass, ThrottleScope};

#[derive(Default)]
pub struct Counts {
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
    pub media: i64,
    /// Sends whose outcome is unknown, held for the grace period.
    pub unknown: i64,
    /// Messages Meta accepted twice (a second wamid arrived for one of ours).
    pub duplicates: i64,
    pub last_error: Option<Value>,
    pub reauthorize: Vec<String>,
    /// Numbers Meta throttled (130429 …): their lanes pause.
    pub throttled: Vec<String>,
}

/// A downloaded media file: outbox id, tenant, message id, media id, mime, the spool file.
type Media<'a> = (
    i64,
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    &'a super::spool::Spooled,
);

/// Accepted messages: outbox id, tenant, message id, wamid.
type SentRows<'a> = (Vec<i64>, Vec<&'a str>, Vec<&'a str>, Vec<Option<&'a str>>);
/// Retry later: outbox id, tenant, delay (s), error, claim.
type RetryRows<'a> = (Vec<i64>, Vec<&'a str>, Vec<f64>, Vec<pgrx::JsonB>, Vec<i64>);

/// Rows by outbox id, tenant and the claim that leased them.
type Claimed<'a> = (Vec<i64>, Vec<&'a str>, Vec<i64>);

#[derive(Default)]
struct Batch<'a> {
    sent: SentRows<'a>,
    // Other accepted requests (mark read): outbox id, tenant.
    done: (Vec<i64>, Vec<&'a str>),
    retry: RetryRows<'a>,
    // Failed for good: outbox id, tenant, error, claim.
    failed: (Vec<i64>, Vec<&'a str>, Vec<pgrx::JsonB>, Vec<i64>),
    // Not sent: the lease ran short before a thread was free.
    expired: Claimed<'a>,
    // Outcome unknown: outbox id, tenant, claim, error.
    unknown: (Vec<i64>, Vec<&'a str>, Vec<i64>, Vec<pgrx::JsonB>),
    // Tenants whose token Meta refused, with the error.
    reauth: Vec<(&'a str, Value)>,
    // Media that could not be downloaded for good: outbox id, tenant, message id, error.
    media_failed: Vec<(i64, &'a str, Option<&'a str>, Value)>,
    // Downloaded media.
    media: Vec<Media<'a>>,
}

impl<'a> Batch<'a> {
    /// A message that failed for good.
    fn fail(&mut self, job: &'a super::dispatch::Job, err: Value) {
        self.failed.0.push(job.outbox_id);
        self.failed.1.push(job.tenant.as_str());
        self.failed.2.push(pgrx::JsonB(err));
        self.failed.3.push(job.claim);
    }
}

/// Exponential backoff with full jitter between half and all of the step.
fn backoff(attempts: i32, base: f64, cap: f64) -> f64 {
    let step = (base * 2f64.powi((attempts - 1).clamp(0, 20))).min(cap);
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as f64 / 65535.0
    } else {
        0.5
    };
    step * (0.5 + 0.5 * r)
}

fn error_json(e: &ApiError) -> Value {
    let mut v = e.to_json();
    if let Some(g) = e.graph_error() {
        // The contract's shape for message errors: code, title, details.
        v["code"] = json!(g.code);
        v["title"] = json!(g.summary());
        if let Some(d) = g.details.as_deref() {
            v["details"] = json!(d);
        }
    }
    v
}

/// Whether a failed send may have reached Meta: the request went out and no (readable)
/// answer came back. Such a send is not blindly repeated.
fn outcome_unknown(e: &ApiError) -> bool {
    match e {
        ApiError::Transport {
            maybe_delivered, ..
        } => *maybe_delivered,
        ApiError::Decode { http_status, .. } => (200..300).contains(http_status),
        _ => false,
    }
}

/// Records a batch of outcomes in one transaction. On error nothing is recorded and the
/// caller keeps the outcomes to try again.
pub fn record(done: &[Done], max_attempts: i32, grace_secs: f64) -> Result<Counts, String> {
    let mut b = Batch::default();
    let mut counts = Counts::default();
    for d in done {
        let job = &d.job;
        let tenant = job.tenant.as_str();
        match &d.outcome {
            Outcome::Sent(wamid) => match (job.kind, job.message_id.as_deref()) {
                (Kind::Message, Some(message_id)) => {
                    b.sent.0.push(job.outbox_id);
                    b.sent.1.push(tenant);
                    b.sent.2.push(message_id);
                    b.sent.3.push(wamid.as_deref());
                    counts.sent += 1;
                }
                _ => {
                    b.done.0.push(job.outbox_id);
                    b.done.1.push(tenant);
                }
            },
            Outcome::Expired => {
                b.expired.0.push(job.outbox_id);
                b.expired.1.push(tenant);
                b.expired.2.push(job.claim);
            }
            Outcome::Media { mime, file } => {
                b.media.push((
                    job.outbox_id,
                    tenant,
                    job.message_id.as_deref(),
                    job.payload.as_str(),
                    mime.as_deref(),
                    file,
                ));
                counts.media += 1;
            }
            Outcome::MediaCorrupt(reason) => {
                let err = json!({ "title": "media file corrupted", "details": reason, "class": "permanent" });
                counts.last_error = Some(err.clone());
                b.media_failed
                    .push((job.outbox_id, tenant, job.message_id.as_deref(), err));
                counts.failed += 1;
            }
            Outcome::Failed(e) => {
                let err = error_json(e);
                counts.last_error = Some(err.clone());
                if job.kind == Kind::Message && outcome_unknown(e) {
                    b.unknown.0.push(job.outbox_id);
                    b.unknown.1.push(tenant);
                    b.unknown.2.push(job.claim);
                    b.unknown.3.push(pgrx::JsonB(err));
                    counts.unknown += 1;
                    continue;
                }
                let class = e.class();
                let out_of_attempts = job.attempts >= max_attempts;
                let give_up = out_of_attempts
                    || matches!(e, ApiError::TooLarge { .. })
                    || class == ErrorClass::Permanent;
                if job.kind == Kind::MediaDownload && give_up {
                    b.media_failed
                        .push((job.outbox_id, tenant, job.message_id.as_deref(), err));
                    counts.failed += 1;
                    continue;
                }
                match class {
                    ErrorClass::Reauthorize => {
                        b.reauth.push((tenant, err));
                        counts.reauthorize.push(job.tenant.clone());
                    }
                    ErrorClass::Permanent => {
                        b.fail(job, err);
                        counts.failed += 1;
                    }
                    _ if out_of_attempts || matches!(e, ApiError::TooLarge { .. }) => {
                        let mut err = err;
                        err["gave_up_after_attempts"] = json!(job.attempts);
                        b.fail(job, err);
                        counts.failed += 1;
                    }
                    ErrorClass::Throttle(scope) => {
                        let delay = match scope {
                            // Pair rate limit: about one message per 6 s to the same user.
                            ThrottleScope::Recipient => 6.0 + backoff(job.attempts, 6.0, 300.0),
                            ThrottleScope::PhoneNumber => {
                                counts.throttled.push(job.phone.clone());
                                backoff(job.attempts, 1.0, 60.0)
                            }
                            ThrottleScope::App | ThrottleScope::BusinessAccount => {
                                backoff(job.attempts, 5.0, 600.0)
                            }
                        };
                        b.retry.0.push(job.outbox_id);
                        b.retry.1.push(tenant);
                        b.retry.2.push(delay);
                        b.retry.3.push(pgrx::JsonB(err));
                        b.retry.4.push(job.claim);
                        counts.retried += 1;
                    }
                    ErrorClass::Retry => {
                        b.retry.0.push(job.outbox_id);
                        b.retry.1.push(tenant);
                        b.retry.2.push(backoff(job.attempts, 1.0, 300.0));
                        b.retry.3.push(pgrx::JsonB(err));
                        b.retry.4.push(job.claim);
                        counts.retried += 1;
                    }
                }
            }
        }
    }
    counts.duplicates = txn::run_ok(std::panic::AssertUnwindSafe(|| apply(b, grace_secs)))?;
    Ok(counts)
}

/// The statements of one batch; returns how many messages turned out to be sent twice.
fn apply(b: Batch<'_>, grace_secs: f64) -> Result<i64, pgrx::spi::SpiError> {
    use crate::plans::{
        FLOAT8_ARRAY, INT4_ARRAY, INT8_ARRAY, JSONB_ARRAY, TEXT_ARRAY, TIMESTAMPTZ,
    };
    let mut duplicates = 0;
    Spi::run("SET LOCAL lock_timeout = '5s'")?;
    if !b.sent.0.is_empty() {
        let (tenants, wamids) = (b.sent.1.clone(), b.sent.3.clone());
        let (twice, channels, payloads) = crate::plans::with_plan(
            sql::SENT,
            &[INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TIMESTAMPTZ],
            &[
                b.sent.0.into(),
                b.sent.1.into(),
                b.sent.2.into(),
                b.sent.3.into(),
                pgrx::datum::now().into(),
            ],
            |client, plan, args| {
                let row = client.update(plan, Some(1), args)?.first();
                Ok((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<Vec<String>>(2)?.unwrap_or_default(),
                    row.get::<Vec<String>>(3)?.unwrap_or_default(),
                ))
            },
        )?;
        crate::notify::send_each(&channels, &payloads);
        duplicates = twice;
        // Statuses Meta sent before we knew these wamids (rare: most are matched through
        // biz_opaque_callback_data) apply now. In a subtransaction: a pending status that
        // cannot be applied must not keep the sends themselves from being recorded.
        let applied = crate::subxact::run(std::panic::AssertUnwindSafe(|| {
            crate::plans::run(
                sql::PENDING_STATUSES,
                &[TEXT_ARRAY, TEXT_ARRAY],
                &[tenants.into(), wamids.into()],
            )
            .map_err(|e| e.to_string())
        }));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => pgrx::warning!("whatsapp_pg worker: pending statuses not applied: {e}"),
            Err(e) => pgrx::warning!("whatsapp_pg worker: pending statuses not applied: {e}"),
        }
    }
    if !b.done.0.is_empty() {
        crate::plans::run(
            sql::DONE,
            &[INT8_ARRAY, TEXT_ARRAY],
            &[b.done.0.into(), b.done.1.into()],
        )?;
    }
    if !b.retry.0.is_empty() {
        crate::plans::run(
            sql::RETRY,
            &[
                INT8_ARRAY,
                TEXT_ARRAY,
                FLOAT8_ARRAY,
                JSONB_ARRAY,
                INT8_ARRAY,
            ],
            &[
                b.retry.0.into(),
                b.retry.1.into(),
                b.retry.2.into(),
                b.retry.3.into(),
                b.retry.4.into(),
            ],
        )?;
    }
    if !b.failed.0.is_empty() {
        let (channels, payloads) = crate::plans::with_plan(
            sql::FAILED,
            &[INT8_ARRAY, TEXT_ARRAY, JSONB_ARRAY, INT8_ARRAY],
            &[
                b.failed.0.into(),
                b.failed.1.into(),
                b.failed.2.into(),
                b.failed.3.into(),
            ],
            |client, plan, args| {
                let row = client.update(plan, Some(1), args)?.first();
                Ok((
                    row.get::<Vec<String>>(1)?.unwrap_or_default(),
                    row.get::<Vec<String>>(2)?.unwrap_or_default(),
                ))
            },
        )?;
        crate::notify::send_each(&channels, &payloads);
    }
    if !b.expired.0.is_empty() {
        Spi::run_with_args(
            sql::RELEASE,
            &[
                b.expired.0.into(),
                b.expired.1.into(),
                0.0f64.into(),
                b.expired.2.into(),
            ],
        )?;
    }
    if !b.unknown.0.is_empty() {
        let uncounted = vec![0i32; b.unknown.0.len()];
        crate::plans::run(
            sql::UNKNOWN,
            &[
                INT8_ARRAY,
                TEXT_ARRAY,
                crate::plans::FLOAT8,
                INT8_ARRAY,
                INT4_ARRAY,
                JSONB_ARRAY,
            ],
            &[
                b.unknown.0.into(),
                b.unknown.1.into(),
                grace_secs.into(),
                b.unknown.2.into(),
                uncounted.into(),
                b.unknown.3.into(),
            ],
        )?;
    }
    let mut seen = std::collections::HashSet::new();
    for (tenant, error) in b.reauth {
        if !seen.insert(tenant) {
            continue;
        }
        let moved = Spi::connect_mut(|client| {
            let rows = client.update(
                sql::HOLD_TENANT,
                None,
                &[tenant.into(), pgrx::JsonB(error).into()],
            )?;
            let mut moved = Vec::new();
            for row in rows {
                if let (Some(channel), Some(payload)) =
                    (row.get::<String>(1)?, row.get::<String>(2)?)
                {
                    moved.push((channel, payload));
                }
            }
            Ok::<_, pgrx::spi::SpiError>(moved)
        })?;
        // None when the tenant was already action_required: nothing changed to notify.
        for (channel, payload) in moved {
            crate::notify::send(&channel, &[payload]);
        }
    }
    for (outbox_id, tenant, message_id, error) in b.media_failed {
        Spi::run_with_args(
            sql::MEDIA_FAILED,
            &[
                outbox_id.into(),
                tenant.into(),
                message_id.into(),
                pgrx::JsonB(error).into(),
            ],
        )?;
    }
    // The bytes of each chunk are copied into a datum for its statement; those copies live in
    // a context of their own, emptied after each statement, not in the transaction's, which
    // would hold every file of the batch until the commit (the test with a burst of large
    // videos saw 69 MiB for four of them).
    let mut scratch = pgrx::PgMemoryContexts::new("whatsapp_pg media write");
    let mut scratch_run = |f: &mut dyn FnMut() -> Result<Option<bool>, pgrx::spi::SpiError>| {
        // SAFETY: nothing allocated in `scratch` outlives its reset: the statements'
        // arguments are made inside `f`, and its result is a plain Rust value.
        unsafe {
            let result = scratch.switch_to(|_| f());
            scratch.reset();
            result
        }
    };
    for (outbox_id, tenant, message_id, media_id, mime, file) in b.media {
        // A file of one chunk is stored in its row; a larger one a chunk at a time.
        // Our own file gone unreadable: the batch is not recorded (and is tried again).
        let io = |e: std::io::Error| -> pgrx::spi::SpiError {
            pgrx::error!("whatsapp_pg worker: reading a media spool file: {e}")
        };
        let mut chunks = file.chunks().map_err(io)?;
        let first = chunks.next_chunk().map_err(io)?;
        let inline = file.size as usize <= super::spool::CHUNK;
        let n_chunks = if inline {
            0
        } else {
            file.size.div_ceil(super::spool::CHUNK as u64) as i32
        };
        let stored = scratch_run(&mut || {
            Spi::get_one_with_args::<bool>(
                sql::MEDIA_STORED,
                &[
                    outbox_id.into(),
                    tenant.into(),
                    message_id.into(),
                    media_id.into(),
                    mime.into(),
                    file.sha256.as_str().into(),
                    (file.size as i64).into(),
                    inline.then_some(first.as_slice()).into(),
                    n_chunks.into(),
                ],
            )
        })?
        .unwrap_or(false);
        if stored && !inline {
            let mut seq = 0i32;
            let mut chunk = first;
            while !chunk.is_empty() {
                scratch_run(&mut || {
                    Spi::run_with_args(
                        sql::MEDIA_CHUNK,
                        &[
                            tenant.into(),
                            media_id.into(),
                            seq.into(),
                            chunk.as_slice().into(),
                        ],
                    )
                    .map(|()| None)
                })?;
                seq += 1;
                chunk = chunks.next_chunk().map_err(io)?;
            }
        }
    }
    Ok(duplicates)
}
