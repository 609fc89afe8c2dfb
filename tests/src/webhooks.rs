//! Builders for webhook deliveries in Meta's shapes.

use serde_json::{Value, json};

pub const WABA_A: &str = "1001";
pub const PHONE_A: &str = "2001";
pub const WABA_B: &str = "1002";
pub const PHONE_B: &str = "2002";

pub fn envelope(waba: &str, field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": waba, "changes": [{ "field": field, "value": value }] }]
    })
}

pub fn metadata(phone: &str) -> Value {
    json!({ "display_phone_number": "15550009999", "phone_number_id": phone })
}

/// An inbound text from a customer identified by phone number and/or BSUID.
pub fn inbound_text(
    phone: &str,
    wamid: &str,
    wa_id: Option<&str>,
    user_id: Option<&str>,
    ts: i64,
    body: &str,
) -> Value {
    let mut contact = json!({ "profile": { "name": "Guest" } });
    let mut message = json!({
        "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": { "body": body }
    });
    if let Some(w) = wa_id {
        contact["wa_id"] = json!(w);
        message["from"] = json!(w);
    }
    if let Some(u) = user_id {
        contact["user_id"] = json!(u);
        message["from_user_id"] = json!(u);
    }
    json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(phone),
        "contacts": [contact],
        "messages": [message]
    })
}

pub fn status(wamid: &str, status: &str, ts: i64, callback: Option<&str>) -> Value {
    let mut s = json!({
        "id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": "15550001111",
        "conversation": { "id": "conv-1", "origin": { "type": "service" } },
        "pricing": { "billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service" }
    });
    if let Some(c) = callback {
        s["biz_opaque_callback_data"] = json!(c);
    }
    if status == "failed" {
        s["errors"] = json!([{ "code": 131026, "title": "Message undeliverable",
                               "error_data": { "details": "Message Undeliverable." } }]);
    }
    s
}

pub fn statuses(phone: &str, items: Vec<Value>) -> Value {
    json!({ "messaging_product": "whatsapp", "metadata": metadata(phone), "statuses": items })
}

/// One `messages` value holding the messages (and contacts) of several single-message values
/// such as `inbound_text` builds, in order: a batched delivery.
pub fn batch(phone: &str, items: &[Value]) -> Value {
    let pick = |key: &str| -> Vec<Value> {
        items
            .iter()
            .flat_map(|v| v[key].as_array().cloned().unwrap_or_default())
            .collect()
    };
    json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(phone),
        "contacts": pick("contacts"),
        "messages": pick("messages")
    })
}
