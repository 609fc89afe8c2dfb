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
    pub last_error: Option<Value>,
    pub reauthorize: Vec<String>,
    /// Numbers Meta throttled (130429 …): their lanes pause.
    pub throttled: Vec<String>,
}

/// A downloaded media file: outbox id, tenant, message id, media id, mime, sha256, bytes.
type Media = (
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Vec<u8>,
);

#[derive(Default)]
struct Batch {
    // Accepted messages: outbox id, tenant, message id, wamid.
    sent: (Vec<i64>, Vec<String>, Vec<String>, Vec<Option<String>>),
    // Other accepted requests (mark read): outbox id, tenant.
    done: (Vec<i64>, Vec<String>),
    // Retry later: outbox id, tenant, delay (s), error.
    retry: (Vec<i64>, Vec<String>, Vec<f64>, Vec<pgrx::JsonB>),
    // Failed for good: outbox id, tenant, error.
    failed: (Vec<i64>, Vec<String>, Vec<pgrx::JsonB>),
    // Tenants whose token Meta refused, with the error.
    reauth: Vec<(String, Value)>,
    // Media that could not be downloaded for good: outbox id, tenant, message id, error.
    media_failed: Vec<(i64, String, Option<String>, Value)>,
    // Downloaded media: outbox id, tenant, message id, media id, mime, sha256, bytes.
    media: Vec<Media>,
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

pub fn record(done: Vec<Done>, max_attempts: i32) -> Result<Counts, String> {
    let mut b = Batch::default();
    let mut counts = Counts::default();
    for d in done {
        let job = d.job;
        match d.outcome {
            Outcome::Sent(wamid) => match (job.kind, job.message_id) {
                (Kind::Message, Some(message_id)) => {
                    b.sent.0.push(job.outbox_id);
                    b.sent.1.push(job.tenant);
                    b.sent.2.push(message_id);
                    b.sent.3.push(wamid);
                    counts.sent += 1;
                }
                _ => {
                    b.done.0.push(job.outbox_id);
                    b.done.1.push(job.tenant);
                }
            },
            Outcome::Media {
                mime,
                bytes,
                sha256,
            } => {
                b.media.push((
                    job.outbox_id,
                    job.tenant,
                    job.message_id,
                    job.payload,
                    mime,
                    sha256,
                    bytes,
                ));
                counts.media += 1;
            }
            Outcome::Failed(e) => {
                let err = error_json(&e);
                counts.last_error = Some(err.clone());
                let class = e.class();
                let out_of_attempts = job.attempts >= max_attempts;
                let give_up = out_of_attempts
                    || matches!(e, ApiError::TooLarge { .. })
                    || class == ErrorClass::Permanent;
                if job.kind == Kind::MediaDownload && give_up {
                    b.media_failed
                        .push((job.outbox_id, job.tenant, job.message_id, err));
                    counts.failed += 1;
                    continue;
                }
                match class {
                    ErrorClass::Reauthorize => {
                        b.reauth.push((job.tenant.clone(), err));
                        counts.reauthorize.push(job.tenant);
                    }
                    ErrorClass::Permanent => {
                        b.failed.0.push(job.outbox_id);
                        b.failed.1.push(job.tenant);
                        b.failed.2.push(pgrx::JsonB(err));
                        counts.failed += 1;
                    }
                    _ if out_of_attempts || matches!(e, ApiError::TooLarge { .. }) => {
                        let mut err = err;
                        err["gave_up_after_attempts"] = json!(job.attempts);
                        b.failed.0.push(job.outbox_id);
                        b.failed.1.push(job.tenant);
                        b.failed.2.push(pgrx::JsonB(err));
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
                        b.retry.1.push(job.tenant);
                        b.retry.2.push(delay);
                        b.retry.3.push(pgrx::JsonB(err));
                        counts.retried += 1;
                    }
                    ErrorClass::Retry => {
                        b.retry.0.push(job.outbox_id);
                        b.retry.1.push(job.tenant);
                        b.retry.2.push(backoff(job.attempts, 1.0, 300.0));
                        b.retry.3.push(pgrx::JsonB(err));
                        counts.retried += 1;
                    }
                }
            }
        }
    }
    txn::run_ok(std::panic::AssertUnwindSafe(|| apply(b)))?;
    Ok(counts)
}

fn apply(b: Batch) -> Result<(), pgrx::spi::SpiError> {
    use crate::plans::{FLOAT8_ARRAY, INT8_ARRAY, JSONB_ARRAY, TEXT_ARRAY};
    if !b.sent.0.is_empty() {
        let (tenants, wamids) = (b.sent.1.clone(), b.sent.3.clone());
        crate::plans::run(
            sql::SENT,
            &[INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
            &[
                b.sent.0.into(),
                b.sent.1.into(),
                b.sent.2.into(),
                b.sent.3.into(),
            ],
        )?;
        // Statuses Meta sent before we knew these wamids (rare: most are matched through
        // biz_opaque_callback_data) apply now.
        crate::plans::run(
            sql::PENDING_STATUSES,
            &[TEXT_ARRAY, TEXT_ARRAY],
            &[tenants.into(), wamids.into()],
        )?;
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
            &[INT8_ARRAY, TEXT_ARRAY, FLOAT8_ARRAY, JSONB_ARRAY],
            &[
                b.retry.0.into(),
                b.retry.1.into(),
                b.retry.2.into(),
                b.retry.3.into(),
            ],
        )?;
    }
    if !b.failed.0.is_empty() {
        crate::plans::run(
            sql::FAILED,
            &[INT8_ARRAY, TEXT_ARRAY, JSONB_ARRAY],
            &[b.failed.0.into(), b.failed.1.into(), b.failed.2.into()],
        )?;
    }
    let mut seen = std::collections::HashSet::new();
    for (tenant, error) in b.reauth {
        if !seen.insert(tenant.clone()) {
            continue;
        }
        Spi::run_with_args(
            sql::HOLD_TENANT,
            &[tenant.into(), pgrx::JsonB(error).into()],
        )?;
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
    for (outbox_id, tenant, message_id, media_id, mime, sha256, bytes) in b.media {
        Spi::run_with_args(
            sql::MEDIA_STORED,
            &[
                outbox_id.into(),
                tenant.into(),
                message_id.into(),
                media_id.into(),
                mime.into(),
                sha256.into(),
                bytes.into(),
            ],
        )?;
    }
    Ok(())
}
