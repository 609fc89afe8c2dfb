//! A webhook delivery: store raw → parse → resolve tenant → apply messages, statuses and
//! account events → notify (NOTIFY is sent by the apply statements, delivered on commit).
//!
//! Every delivery is stored in `wa.webhook_events` before it is processed. Parsing is done by
//! `whatsapp-client`, which never fails a whole delivery for one bad part. All parts of a
//! delivery are applied in one subtransaction, the inbound messages of each business number
//! set-based (`inbound`); if PostgreSQL rejects something unexpected, the
//! parts are applied again one subtransaction each, so a bad part keeps its reason and the rest
//! still land. Subtransactions are per delivery in the normal case (never per part), so a
//! 1,000-status delivery does not overflow the backend's subtransaction cache.

pub(crate) mod inbound;
mod parts;
mod store;

use crate::error::{OrRaise, WaError, WaResult};
use crate::{app_config, subxact};
use parts::{Part, Planned};
use pgrx::prelude::*;
use serde_json::{Value, json};
use store::JsonbArg;
use whatsapp_client::signature::{self, SignatureError};

/// What processing one delivery did.
#[derive(Default)]
struct Summary {
    messages: i64,
    statuses: i64,
    events: i64,
    /// Parts kept until their WABA or number is connected.
    parked: i64,
    errors: Vec<Value>,
}

impl Summary {
    fn to_json(&self, event_id: i64, status: &str) -> Value {
        json!({
            "webhook_event_id": event_id,
            "status": status,
            "messages": self.messages,
            "statuses": self.statuses,
            "events": self.events,
            "parked": self.parked,
            "errors": self.errors.len(),
        })
    }
}

fn rejected(event_id: i64, reason: &str, raise: bool) -> WaResult<pgrx::JsonB> {
    if raise {
        return Err(WaError::InvalidParameter {
            message: "payload is not a WhatsApp webhook".into(),
            detail: Some(reason.to_string()),
            hint: Some(
                "wa.ingest_webhook takes the JSON body of a WhatsApp Business Account webhook delivery."
                    .into(),
            ),
        });
    }
    store::finish(
        event_id,
        "rejected",
        &json!({ "reason": reason }),
        &[json!({ "reason": reason })],
    )?;
    Ok(pgrx::JsonB(json!({
        "webhook_event_id": event_id,
        "status": "rejected",
        "reason": reason,
        "messages": 0, "statuses": 0, "events": 0, "errors": 1,
    })))
}

/// Parses and applies a stored delivery.
fn process(event_id: i64, body: &str, raise_on_reject: bool) -> WaResult<pgrx::JsonB> {
    let root: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return rejected(
                event_id,
                &format!("body is not valid JSON: {e}"),
                raise_on_reject,
            );
        }
    };
    let changes = match whatsapp_client::webhook::changes(&root) {
        Ok(c) => c,
        Err(e) => return rejected(event_id, &e.to_string(), raise_on_reject),
    };
    let has_nul = body.contains("\\u0000");
    let mut summary = Summary::default();
    let mut planned: Vec<Planned> = Vec::new();
    for change in &changes {
        parts::plan(change, has_nul, &mut planned, &mut summary.errors);
    }
    let missing = apply(&planned, &mut summary);
    park(event_id, &missing);
    if planned.iter().any(Planned::has_media) {
        // Inbound media is fetched by the worker right after this commits.
        crate::send::wake::on_commit();
    }
    let status = if summary.errors.is_empty() {
        "processed"
    } else {
        "partial"
    };
    let result = summary.to_json(event_id, status);
    store::finish(event_id, status, &result, &summary.errors)?;
    Ok(pgrx::JsonB(result))
}

/// The fast path: every part of the delivery in one go, the inbound messages of each business
/// number set-based. Raises if PostgreSQL rejects anything.
fn apply_all(planned: &[Planned]) -> (Vec<Result<(), String>>, parts::Router) {
    let mut router = parts::Router::default();
    let mut outcomes: Vec<Result<(), String>> = vec![Ok(()); planned.len()];
    // Inbound messages and statuses by business number, in delivery order.
    let mut inbound: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut statuses: Vec<(&str, Vec<usize>)> = Vec::new();
    fn add<'a>(groups: &mut Vec<(&'a str, Vec<usize>)>, phone: &'a str, i: usize) {
        match groups.iter_mut().find(|(p, _)| *p == phone) {
            Some((_, list)) => list.push(i),
            None => groups.push((phone, vec![i])),
        }
    }
    for (i, p) in planned.iter().enumerate() {
        match &p.part {
            Part::Inbound(m) => add(&mut inbound, &m.phone, i),
            Part::Status(s) => add(&mut statuses, &s.phone, i),
            _ => outcomes[i] = parts::apply(p, &mut router),
        }
    }
    for (phone, list) in statuses {
        let group: Vec<&parts::Status> = list
            .iter()
            .filter_map(|&i| match &planned[i].part {
                Part::Status(s) => Some(s),
                _ => None,
            })
            .collect();
        match parts::apply_statuses(&mut router, phone, &group) {
            Ok(each) => {
                for (i, outcome) in list.into_iter().zip(each) {
                    outcomes[i] = outcome;
                }
            }
            Err(reason) => {
                for i in list {
                    outcomes[i] = Err(reason.clone());
                }
            }
        }
    }
    for (phone, list) in inbound {
        match router.require("phone_number", phone) {
            Ok(tenant) => {
                let msgs: Vec<&inbound::Message> = list
                    .iter()
                    .filter_map(|&i| match &planned[i].part {
                        Part::Inbound(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                inbound::apply(tenant, phone, &msgs);
            }
            Err(reason) => {
                for i in list {
                    outcomes[i] = Err(reason.clone());
                }
            }
        }
    }
    (outcomes, router)
}

/// The key of the advisory lock that orders parking a part for a WABA or number against
/// connecting it (`wa._store_connection` takes the same lock after it inserts the route).
const ROUTE_LOCK: &str = "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(
     'wa.route/' OPERATOR(pg_catalog.||) $1 OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) $2, 0))";

/// Parks the delivery for each WABA or number it named that no tenant is connected to yet:
/// it is applied again when that one is connected (`wa._apply_parked`). Under the route's
/// advisory lock, the route is looked up once more: a connection that committed meanwhile
/// makes the delivery fail with a serialization error, so that Meta sends it again.
fn park(event_id: i64, missing: &std::collections::BTreeSet<(&'static str, String)>) {
    for (kind, id) in missing {
        let routed = subxact::run(std::panic::AssertUnwindSafe(|| {
            Spi::run_with_args(ROUTE_LOCK, &[(*kind).into(), id.as_str().into()])?;
            let routed = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM wa.routes r
                                 WHERE r.kind OPERATOR(pg_catalog.=) $1
                                   AND r.external_id OPERATOR(pg_catalog.=) $2)",
                &[(*kind).into(), id.as_str().into()],
            )?
            .unwrap_or(false);
            if !routed {
                Spi::run_with_args(
                    "INSERT INTO wa.parked_parts (kind, external_id, webhook_event_id)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[(*kind).into(), id.as_str().into(), event_id.into()],
                )?;
            }
            Ok::<bool, pgrx::spi::SpiError>(routed)
        }));
        match routed {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => subxact::Failure {
                message: format!(
                    "{kind} {id} was connected while this delivery was applied; send it again"
                ),
                code: PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
            }
            .raise(),
            Ok(Err(e)) => WaError::Internal(format!("parking a webhook part: {e}")).raise(),
            Err(f) => f.raise(),
        }
    }
}

/// Applies the parts; returns the WABAs and numbers they named that no tenant has.
fn apply(
    planned: &[Planned],
    summary: &mut Summary,
) -> std::collections::BTreeSet<(&'static str, String)> {
    if planned.is_empty() {
        return Default::default();
    }
    let all = subxact::run(std::panic::AssertUnwindSafe(|| apply_all(planned)));
    let (outcomes, missing) = match all {
        Ok((outcomes, router)) => (outcomes, router.missing),
        // A lock timeout, a deadlock, a cancel: nothing is wrong with the delivery, it just
        // cannot be applied now. Fail it whole (the gateway answers 503, Meta sends it again)
        // rather than record its parts as failed.
        Err(f) if f.is_transient() => f.raise(),
        Err(_) => {
            // Something in the delivery made PostgreSQL raise: isolate it part by part.
            let mut router = parts::Router::default();
            let outcomes = planned
                .iter()
                .map(|p| {
                    match subxact::run(std::panic::AssertUnwindSafe(|| {
                        parts::apply(p, &mut router)
                    })) {
                        Ok(outcome) => outcome,
                        Err(f) if f.is_transient() => f.raise(),
                        Err(f) => Err(f.to_string()),
                    }
                })
                .collect();
            (outcomes, router.missing)
        }
    };
    for (p, outcome) in planned.iter().zip(outcomes) {
        match outcome {
            Ok(()) => match p.part {
                Part::Inbound(_) => summary.messages += 1,
                Part::Status(_) => summary.statuses += 1,
                _ => summary.events += 1,
            },
            Err(reason) if reason.starts_with(parts::UNROUTED) => summary.parked += 1,
            Err(reason) => summary.errors.push(json!({ "at": p.at, "reason": reason })),
        }
    }
    missing
}

/// Applies again the deliveries parked for a WABA or number that was just connected (called
/// by `wa._store_connection` under the route's advisory lock). Idempotent: a delivery applied
/// twice leaves the state of one pass.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _apply_parked(kind: &str, external_id: &str) -> i64 {
    reapply(
        "SELECT e.webhook_event_id, COALESCE(e.payload::pg_catalog.text, e.raw_body)
           FROM wa.parked_parts p
           JOIN wa.webhook_events e ON e.webhook_event_id OPERATOR(pg_catalog.=) p.webhook_event_id
          WHERE p.kind OPERATOR(pg_catalog.=) $1 AND p.external_id OPERATOR(pg_catalog.=) $2
            AND p.applied_at IS NULL AND p.expires_at OPERATOR(pg_catalog.>) pg_catalog.now()
          ORDER BY e.webhook_event_id",
        &[kind.into(), external_id.into()],
    )
    .and_then(|n| {
        Spi::run_with_args(
            "UPDATE wa.parked_parts p SET applied_at = pg_catalog.now()
              WHERE p.kind OPERATOR(pg_catalog.=) $1 AND p.external_id OPERATOR(pg_catalog.=) $2
                AND p.applied_at IS NULL",
            &[kind.into(), external_id.into()],
        )?;
        Ok(n)
    })
    .or_raise()
}

/// Processes the stored deliveries the query names (id, body) again, in order.
fn reapply(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> WaResult<i64> {
    let deliveries: Vec<(i64, String)> = Spi::connect(|client| {
        client
            .select(sql, None, args)?
            .map(|row| {
                Ok((
                    row.get::<i64>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })?;
    let n = deliveries.len() as i64;
    for (event_id, body) in deliveries {
        process(event_id, &body, false)?;
    }
    Ok(n)
}

/// Processes again the stored deliveries received since `since` whose processing left parts
/// unapplied (status `partial` or `failed`), e.g. after fixing what made them fail. Safe to
/// run any number of times: deliveries are idempotent.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn reprocess_webhooks(since: pgrx::datum::TimestampWithTimeZone) -> pgrx::JsonB {
    crate::authz::act_for(None).or_raise();
    reapply(
        "SELECT e.webhook_event_id, COALESCE(e.payload::pg_catalog.text, e.raw_body)
           FROM wa.webhook_events e
          WHERE e.received_at OPERATOR(pg_catalog.>=) $1
            AND e.status OPERATOR(pg_catalog.=) ANY ('{partial,failed}'::pg_catalog.text[])
          ORDER BY e.webhook_event_id",
        &[since.into()],
    )
    .map(|n| pgrx::JsonB(json!({ "reprocessed": n })))
    .or_raise()
}

fn ingest_unsigned(payload: Option<JsonbArg>) -> WaResult<pgrx::JsonB> {
    let payload = payload.ok_or(WaError::NullValue("payload must not be null"))?;
    let event_id = store::store_unsigned(payload)?;
    process(event_id, &payload.text()?, true)
}

/// Stores a delivery whose origin the caller vouches for (e.g. already verified) and processes
/// it. Processing errors of single parts are kept with it; a payload that is not a WhatsApp
/// webhook is an error (SQLSTATE 22023) and stores nothing.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn ingest_webhook(payload: Option<JsonbArg>) -> pgrx::JsonB {
    crate::authz::act_for(None)
        .and_then(|()| ingest_unsigned(payload))
        .or_raise()
}

fn signature_reason(e: &SignatureError) -> &'static str {
    match e {
        SignatureError::Missing => "the X-Hub-Signature-256 header is missing",
        SignatureError::BadPrefix => "the signature does not start with \"sha256=\"",
        SignatureError::BadHex => "the signature is not hexadecimal",
        SignatureError::Mismatch => "the signature does not match the body",
        SignatureError::EmptySecret => "the app secret is empty",
    }
}

fn ingest_signed(body: &str, signature_header: Option<&str>) -> WaResult<pgrx::JsonB> {
    let secret = app_config::app_secret("app_secret")?;
    if let Err(e) = signature::verify(&secret, body.as_bytes(), signature_header) {
        // Nothing is stored: an unauthenticated caller must not be able to fill the log.
        return Err(WaError::InvalidAuthorization {
            message: "invalid webhook signature".into(),
            detail: signature_reason(&e).into(),
            hint: "Meta signs the raw request body with the app secret; pass the body exactly as received."
                .into(),
        });
    }
    let event_id = store::store_signed(body)?;
    process(event_id, body, false)
}

/// Verifies `X-Hub-Signature-256` over the raw body with the app secret, stores the delivery
/// as trusted and processes it. A bad signature is an error (SQLSTATE 28000) and stores
/// nothing; a signed body that is not a WhatsApp webhook is kept as `rejected` with its reason.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn ingest_signed_webhook(body: &str, signature: Option<&str>) -> pgrx::JsonB {
    crate::authz::act_for(None)
        .and_then(|()| ingest_signed(body, signature))
        .or_raise()
}

fn verify(mode: Option<&str>, token: Option<&str>, challenge: Option<&str>) -> WaResult<String> {
    if mode != Some("subscribe") {
        return Err(WaError::invalid("hub.mode must be \"subscribe\""));
    }
    let challenge = challenge
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or_else(|| WaError::invalid("hub.challenge must be 1 to 512 characters"))?;
    let expected = app_config::app_secret("verify_token")?;
    let given = token.unwrap_or("").as_bytes();
    use subtle::ConstantTimeEq;
    if expected.len() != given.len() || !bool::from(expected.as_slice().ct_eq(given)) {
        return Err(WaError::InvalidAuthorization {
            message: "webhook verify token does not match".into(),
            detail: "The hub.verify_token sent by Meta differs from the one in wa.configure_app."
                .into(),
            hint: "Use the same verify token in the Meta app dashboard and wa.configure_app."
                .into(),
        });
    }
    Ok(challenge.to_string())
}

/// The webhook subscription handshake (GET): returns the challenge when the verify token
/// matches the app's, an error (SQLSTATE 28000) otherwise.
#[pg_extern(security_definer, stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn verify_webhook(
    mode: Option<&str>,
    verify_token: Option<&str>,
    challenge: Option<&str>,
) -> String {
    verify(mode, verify_token, challenge).or_raise()
}
