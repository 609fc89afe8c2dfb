//! A send request: validate → record in its conversation → enqueue → wake the worker on commit.
//!
//! Everything happens in the caller's transaction: nothing is sent if it rolls back.

pub mod wake;

use crate::error::{OrRaise, WaError, WaResult};
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

fn send(
    tenant_id: pgrx::Uuid,
    to: &str,
    message: &Value,
    phone_number_id: Option<&str>,
    idempotency_key: Option<&str>,
) -> WaResult<pgrx::Uuid> {
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant_id.into()])?;
    let recipient = Recipient::parse(to).map_err(|e| WaError::InvalidParameter {
        message: format!("to_number is not a WhatsApp recipient: {e}"),
        detail: None,
        hint: Some(
            "Pass a phone number in international format (wa_id) or a business-scoped user id such as US.13491208655302741918."
                .into(),
        ),
    })?;
    let validated = validate_message(message).map_err(|e| WaError::InvalidParameter {
        message: format!("invalid message: {e}"),
        detail: None,
        hint: Some("message is the Cloud API message object without the envelope, e.g. {\"type\":\"text\",\"text\":{\"body\":\"Hi\"}}.".into()),
    })?;
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(WaError::invalid(
            "idempotency_key must be 1 to 200 characters",
        ));
    }
    let phone = Spi::get_one_with_args::<String>(
        "SELECT wa._sending_number($1, $2)",
        &[tenant_id.into(), phone_number_id.into()],
    )?
    .ok_or_else(|| WaError::Internal("no sending number".into()))?;
    let message_id = new_message_id()?;
    let body = build_send_body(&recipient, message, Some(&message_id.to_string()))
        .map_err(|e| WaError::invalid(format!("invalid message: {e}")))?;
    let body = String::from_utf8(body)
        .map_err(|_| WaError::Internal("request body is not UTF-8".into()))?;
    let (wa_id, user_id) = match &recipient {
        Recipient::Phone(p) => (Some(p.as_str()), None),
        Recipient::Bsuid(b) => (None, Some(b.as_str())),
    };
    let context = message
        .pointer("/context/message_id")
        .and_then(Value::as_str);
    let id = Spi::get_one_with_args::<pgrx::Uuid>(
        "SELECT wa._enqueue_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            tenant_id.into(),
            phone.as_str().into(),
            wa_id.into(),
            user_id.into(),
            recipient.as_str().into(),
            validated.kind.as_str().into(),
            pgrx::JsonB(message.clone()).into(),
            validated.preview.as_str().into(),
            idempotency_key.into(),
            message_id.into(),
            body.as_str().into(),
            context.into(),
        ],
    )?
    .ok_or_else(|| WaError::Internal("message was not enqueued".into()))?;
    if id == message_id {
        wake::on_commit();
    }
    Ok(id)
}

/// Validates a Cloud API message object, records it as `queued` in its conversation and
/// enqueues it for the background worker; returns the message id. The same
/// `idempotency_key` for the same tenant returns the same id and sends once.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_message(
    tenant_id: pgrx::Uuid,
    to_number: &str,
    message: pgrx::JsonB,
    phone_number_id: default!(Option<&str>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> pgrx::Uuid {
    send(
        tenant_id,
        to_number,
        &message.0,
        phone_number_id,
        idempotency_key,
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
) -> pgrx::Uuid {
    send(
        tenant_id,
        to_number,
        &json!({ "type": "text", "text": { "body": body } }),
        None,
        idempotency_key,
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
) -> pgrx::Uuid {
    let message = json!({
        "type": "template",
        "template": { "name": name, "language": { "code": language }, "components": components.0 }
    });
    send(tenant_id, to_number, &message, None, idempotency_key).or_raise()
}

fn mark(tenant_id: pgrx::Uuid, wamid: &str, typing: bool) -> WaResult<pgrx::Uuid> {
    Spi::run_with_args("SELECT wa._authorize_tenant($1)", &[tenant_id.into()])?;
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
