//! A send request: validate → record in its conversation → enqueue → wake the worker on commit.
//!
//! Everything happens in the caller's transaction: nothing is sent if it rolls back.

pub mod wake;

use crate::error::{OrRaise, WaError, WaResult};
use crate::plans;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use serde_json::{Value, json};
use whatsapp_client::message::{build_send_body, mark_read_body, validate_message};
use whatsapp_client::recipient::Recipient;

fn new_message_id() -> WaResult<pgrx::Uuid> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| WaError::Internal("no randomness for an id".into()))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    Ok(pgrx::Uuid::from_bytes(bytes))
}

/// A caller's `priority`: 0 (most urgent) to 9.
fn checked_priority(p: i32) -> WaResult<i16> {
    match i16::try_from(p) {
        Ok(p @ 0..=9) => Ok(p),
        _ => Err(WaError::InvalidParameter {
            message: format!("priority must be 0 (most urgent) to 9, not {p}"),
            detail: None,
            hint: Some(
                "Leave it NULL for the default: 2 for authentication templates, 3 for service replies and utility templates, 6 for marketing templates."
                    .into(),
            ),
        }),
    }
}

/// One message ready to be enqueued: validated, its request body built.
struct Outgoing {
    recipient: Recipient,
    kind: String,
    content: Value,
    preview: String,
    key: Option<String>,
    message_id: pgrx::Uuid,
    body: String,
    context: Option<String>,
}

fn bad_recipient(e: impl std::fmt::Display) -> WaError {
    WaError::InvalidParameter {
        message: format!("to_number is not a WhatsApp recipient: {e}"),
        detail: None,
        hint: Some(
            "Pass a phone number in international format (wa_id) or a business-scoped user id such as US.13491208655302741918."
                .into(),
        ),
    }
}

fn bad_message(e: impl std::fmt::Display) -> WaError {
    WaError::InvalidParameter {
        message: format!("invalid message: {e}"),
        detail: None,
        hint: Some("message is the Cloud API message object without the envelope, e.g. {\"type\":\"text\",\"text\":{\"body\":\"Hi\"}}.".into()),
    }
}

fn checked_key(key: Option<&str>) -> WaResult<Option<String>> {
    match key {
        Some(k) if k.is_empty() || k.len() > 200 => Err(WaError::invalid(
            "idempotency_key must be 1 to 200 characters",
        )),
        k => Ok(k.map(str::to_owned)),
    }
}

/// Validates one message for one recipient and builds its request body. `kind` and `preview`
/// come from an earlier validation of the same message when given.
fn prepare(
    to: &str,
    message: &Value,
    validated: Option<&(String, String)>,
    key: Option<&str>,
) -> WaResult<Outgoing> {
    let recipient = Recipient::parse(to).map_err(bad_recipient)?;
    let (kind, preview) = match validated {
        Some(v) => v.clone(),
        None => {
            let v = validate_message(message).map_err(bad_message)?;
            (v.kind.as_str().to_string(), v.preview)
        }
    };
    let key = checked_key(key)?;
    let message_id = new_message_id()?;
    let body =
        build_send_body(&recipient, message, Some(&message_id.to_string())).map_err(bad_message)?;
    let body = String::from_utf8(body)
        .map_err(|_| WaError::Internal("request body is not UTF-8".into()))?;
    let context = message
        .pointer("/context/message_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Outgoing {
        recipient,
        kind,
        content: message.clone(),
        preview,
        key,
        message_id,
        body,
        context,
    })
}

/// Records the messages in their conversations and enqueues them (`wa._enqueue_messages`, one
/// call whatever their number); returns each one's message id. Wakes the worker on commit
/// when a new message was queued.
fn enqueue(
    tenant_id: pgrx::Uuid,
    phone_number_id: Option<&str>,
    items: &[Outgoing],
    priority: Option<i16>,
    bulk: bool,
) -> WaResult<Vec<pgrx::Uuid>> {
    fn column<T>(items: &[Outgoing], f: impl Fn(&Outgoing) -> T) -> DatumWithOid<'static>
    where
        Vec<T>: IntoDatum,
    {
        items.iter().map(f).collect::<Vec<T>>().into()
    }
    let args = [
        tenant_id.into(),
        phone_number_id.into(),
        column(items, |o| match &o.recipient {
            Recipient::Phone(p) => Some(p.clone()),
            Recipient::Bsuid(_) => None,
        }),
        column(items, |o| match &o.recipient {
            Recipient::Phone(_) => None,
            Recipient::Bsuid(b) => Some(b.clone()),
        }),
        column(items, |o| o.recipient.as_str().to_string()),
        column(items, |o| o.kind.clone()),
        column(items, |o| pgrx::JsonB(o.content.clone())),
        column(items, |o| o.preview.clone()),
        column(items, |o| o.key.clone()),
        column(items, |o| o.message_id),
        column(items, |o| o.body.clone()),
        column(items, |o| o.context.clone()),
        priority.into(),
        bulk.into(),
    ];
    let ids = plans::with_plan(ENQUEUE, ENQUEUE_TYPES, &args, |client, plan, args| {
        client
            .update(plan, None, args)?
            .map(|row| row.get::<pgrx::Uuid>(2))
            .collect::<Result<Vec<Option<pgrx::Uuid>>, _>>()
    })?;
    let ids: Vec<pgrx::Uuid> = ids.into_iter().flatten().collect();
    if ids.len() != items.len() {
        return Err(WaError::Internal(format!(
            "{} messages enqueued for {} given",
            ids.len(),
            items.len()
        )));
    }
    if ids.iter().zip(items).any(|(id, o)| *id == o.message_id) {
        wake::on_commit();
    }
    Ok(ids)
}

const ENQUEUE: &str = "SELECT out_position, out_message_id
   FROM wa._enqueue_messages($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const ENQUEUE_TYPES: &[PgOid] = &[
    plans::UUID,
    plans::TEXT,
    plans::TEXT_ARRAY,
    plans::TEXT_ARRAY,
    plans::TEXT_ARRAY,
    plans::TEXT_ARRAY,
    plans::JSONB_ARRAY,
    plans::TEXT_ARRAY,
    plans::TEXT_ARRAY,
    plans::UUID_ARRAY,
    plans::TEXT_ARRAY,
    plans::TEXT_ARRAY,
    plans::INT2,
    plans::BOOL,
];

fn authorize(tenant_id: pgrx::Uuid) -> WaResult<()> {
    plans::run(
        "SELECT wa._authorize_tenant($1)",
        &[plans::UUID],
        &[tenant_id.into()],
    )?;
    Ok(())
}

fn send(
    tenant_id: pgrx::Uuid,
    to: &str,
    message: &Value,
    phone_number_id: Option<&str>,
    idempotency_key: Option<&str>,
    priority: Option<i32>,
) -> WaResult<pgrx::Uuid> {
    authorize(tenant_id)?;
    let priority = priority.map(checked_priority).transpose()?;
    let item = prepare(to, message, None, idempotency_key)?;
    let ids = enqueue(tenant_id, phone_number_id, &[item], priority, false)?;
    ids.into_iter()
        .next()
        .ok_or_else(|| WaError::Internal("message was not enqueued".into()))
}

/// At most this many recipients per `wa.send_bulk` call (its arrays are held in memory).
const BULK_MAX: usize = 100_000;

type BulkRow = (i32, Option<String>, Option<pgrx::Uuid>, Option<String>);

/// Sends one message to many recipients, set-based (a campaign, a reminder to every guest).
/// `components`, when given, is a JSON array with one element per recipient: that
/// recipient's template `components` (their parameters), replacing those of `message`.
/// `idempotency_keys`, when given, has one key (or NULL) per recipient. A recipient that is
/// not valid, or whose message is not, gets its reason in `error` and no message, and the
/// others are sent; with `all_or_nothing` the call fails instead (22023, naming the first
/// bad positions). Returns one row per recipient, in order. `priority` defaults to 5 or less
/// urgent (marketing 6), so bulk sends go after the number's service replies.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_bulk(
    tenant_id: pgrx::Uuid,
    recipients: Vec<Option<String>>,
    message: pgrx::JsonB,
    components: default!(Option<pgrx::JsonB>, "NULL"),
    idempotency_keys: default!(Option<Vec<Option<String>>>, "NULL"),
    phone_number_id: default!(Option<&str>, "NULL"),
    priority: default!(Option<i32>, "NULL"),
    all_or_nothing: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(recipient, Option<String>),
        name!(message_id, Option<pgrx::Uuid>),
        name!(error, Option<String>),
    ),
> {
    let rows = bulk(
        tenant_id,
        &recipients,
        &message.0,
        components.as_ref().map(|c| &c.0),
        idempotency_keys.as_deref(),
        phone_number_id,
        priority,
        all_or_nothing,
    )
    .or_raise();
    TableIterator::new(rows)
}

#[allow(clippy::too_many_arguments)]
fn bulk(
    tenant_id: pgrx::Uuid,
    recipients: &[Option<String>],
    message: &Value,
    components: Option<&Value>,
    keys: Option<&[Option<String>]>,
    phone_number_id: Option<&str>,
    priority: Option<i32>,
    all_or_nothing: bool,
) -> WaResult<Vec<BulkRow>> {
    authorize(tenant_id)?;
    let priority = priority.map(checked_priority).transpose()?;
    if recipients.len() > BULK_MAX {
        return Err(WaError::invalid(format!(
            "send_bulk takes at most {BULK_MAX} recipients per call, not {}",
            recipients.len()
        )));
    }
    if let Some(k) = keys
        && k.len() != recipients.len()
    {
        return Err(WaError::invalid(format!(
            "idempotency_keys has {} elements for {} recipients",
            k.len(),
            recipients.len()
        )));
    }
    let per_recipient = match components {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.len() == recipients.len() => {
            if message.get("type").and_then(Value::as_str) != Some("template") {
                return Err(WaError::invalid(
                    "components are per-recipient template parameters: message must be a template",
                ));
            }
            Some(list)
        }
        Some(Value::Array(list)) => {
            return Err(WaError::invalid(format!(
                "components has {} elements for {} recipients",
                list.len(),
                recipients.len()
            )));
        }
        Some(_) => {
            return Err(WaError::invalid(
                "components must be a JSON array with one element per recipient",
            ));
        }
    };
    // The same message for everyone is validated once.
    let shared = match per_recipient {
        None => {
            let v = validate_message(message).map_err(bad_message)?;
            Some((v.kind.as_str().to_string(), v.preview))
        }
        Some(_) => None,
    };
    let mut rows: Vec<BulkRow> = Vec::with_capacity(recipients.len());
    let mut items = Vec::with_capacity(recipients.len());
    let mut slots = Vec::with_capacity(recipients.len());
    for (i, to) in recipients.iter().enumerate() {
        let key = keys.and_then(|k| k[i].as_deref());
        let prepared = match (to.as_deref(), per_recipient) {
            (None, _) => Err(bad_recipient("it is NULL")),
            (Some(to), None) => prepare(to, message, shared.as_ref(), key),
            (Some(to), Some(list)) => {
                let mut m = message.clone();
                m["template"]["components"] = list[i].clone();
                prepare(to, &m, None, key)
            }
        };
        match prepared {
            Ok(item) => {
                slots.push(rows.len());
                items.push(item);
                rows.push(((i + 1) as i32, to.clone(), None, None));
            }
            Err(e) => rows.push(((i + 1) as i32, to.clone(), None, Some(e.to_string()))),
        }
    }
    if all_or_nothing && items.len() < recipients.len() {
        let bad: Vec<String> = rows
            .iter()
            .filter_map(|(p, _, _, e)| e.as_ref().map(|e| format!("position {p}: {e}")))
            .take(5)
            .collect();
        return Err(WaError::InvalidParameter {
            message: format!(
                "{} of {} recipients cannot be sent to; nothing was queued",
                recipients.len() - items.len(),
                recipients.len()
            ),
            detail: Some(bad.join("; ")),
            hint: Some(
                "Without all_or_nothing, the others are sent and each bad one gets its reason."
                    .into(),
            ),
        });
    }
    if !items.is_empty() {
        let ids = enqueue(tenant_id, phone_number_id, &items, priority, true)?;
        for (slot, id) in slots.into_iter().zip(ids) {
            rows[slot].2 = Some(id);
        }
    }
    Ok(rows)
}

/// Validates a Cloud API message object, records it as `queued` in its conversation and
/// enqueues it for the background worker; returns the message id. The same
/// `idempotency_key` for the same tenant returns the same id and sends once. `priority`
/// (0 most urgent … 9) orders the number's queue; NULL takes the message's default.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_message(
    tenant_id: pgrx::Uuid,
    to_number: &str,
    message: pgrx::JsonB,
    phone_number_id: default!(Option<&str>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
    priority: default!(Option<i32>, "NULL"),
) -> pgrx::Uuid {
    send(
        tenant_id,
        to_number,
        &message.0,
        phone_number_id,
        idempotency_key,
        priority,
    )
    .or_raise()
}

/// A text message.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_text(
    tenant_id: pgrx::Uuid,
    to_number: &str,
    body: &str,
    idempotency_key: default!(Option<&str>, "NULL"),
    priority: default!(Option<i32>, "NULL"),
) -> pgrx::Uuid {
    send(
        tenant_id,
        to_number,
        &json!({ "type": "text", "text": { "body": body } }),
        None,
        idempotency_key,
        priority,
    )
    .or_raise()
}

/// A template message (the only kind allowed outside the 24-hour customer service window).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_template(
    tenant_id: pgrx::Uuid,
    to_number: &str,
    name: &str,
    language: &str,
    components: default!(pgrx::JsonB, "'[]'"),
    idempotency_key: default!(Option<&str>, "NULL"),
    priority: default!(Option<i32>, "NULL"),
) -> pgrx::Uuid {
    let message = json!({
        "type": "template",
        "template": { "name": name, "language": { "code": language }, "components": components.0 }
    });
    send(
        tenant_id,
        to_number,
        &message,
        None,
        idempotency_key,
        priority,
    )
    .or_raise()
}

fn mark(tenant_id: pgrx::Uuid, wamid: &str, typing: bool) -> WaResult<pgrx::Uuid> {
    authorize(tenant_id)?;
    let body = String::from_utf8(mark_read_body(wamid, typing))
        .map_err(|_| WaError::Internal("request body is not UTF-8".into()))?;
    let id = Spi::get_one_with_args::<pgrx::Uuid>(
        "SELECT wa._enqueue_mark_read($1, $2, $3)",
        &[tenant_id.into(), wamid.into(), body.as_str().into()],
    )?
    .ok_or_else(|| WaError::Internal("mark_read enqueued nothing".into()))?;
    wake::on_commit();
    Ok(id)
}

/// Marks an inbound message (and the earlier ones of its conversation) read, resets the unread
/// count and tells WhatsApp (blue ticks), optionally showing a typing indicator.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn mark_read(tenant_id: pgrx::Uuid, wamid: &str, typing: default!(bool, false)) -> pgrx::Uuid {
    mark(tenant_id, wamid, typing).or_raise()
}
