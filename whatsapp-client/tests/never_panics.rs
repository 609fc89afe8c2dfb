//! Property tests: no input makes the webhook parser, the message validator, the preview or the
//! error parser panic. The JSON generator is biased towards the keys and shapes of real
//! webhooks so that deep code paths are reached, not just the envelope check.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use whatsapp_client::webhook::{ChangeValue, parse_delivery, parse_delivery_value};

const KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "changes",
    "field",
    "value",
    "messaging_product",
    "metadata",
    "phone_number_id",
    "display_phone_number",
    "contacts",
    "profile",
    "name",
    "wa_id",
    "user_id",
    "messages",
    "statuses",
    "errors",
    "from",
    "from_user_id",
    "timestamp",
    "type",
    "text",
    "body",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "caption",
    "location",
    "latitude",
    "longitude",
    "interactive",
    "button_reply",
    "list_reply",
    "nfm_reply",
    "title",
    "button",
    "payload",
    "reaction",
    "emoji",
    "message_id",
    "order",
    "product_items",
    "system",
    "context",
    "referral",
    "status",
    "recipient_id",
    "pricing",
    "conversation",
    "origin",
    "code",
    "error_data",
    "details",
    "event",
    "waba_info",
    "waba_id",
    "ban_info",
    "restriction_info",
    "user_preferences",
    "template",
    "components",
    "parameters",
    "sub_type",
    "index",
    "action",
    "buttons",
    "sections",
    "rows",
    "reply",
    "header",
    "language",
];

const STRINGS: &[&str] = &[
    "whatsapp_business_account",
    "messages",
    "account_update",
    "message_template_status_update",
    "phone_number_quality_update",
    "user_preferences",
    "text",
    "image",
    "interactive",
    "button_reply",
    "list_reply",
    "nfm_reply",
    "reaction",
    "system",
    "order",
    "template",
    "button",
    "list",
    "cta_url",
    "flow",
    "body",
    "header",
    "quick_reply",
    "sent",
    "failed",
    "1739321024",
    "wamid.X",
    "US.1",
    "",
    "👍",
    "\u{200D}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.to_owned())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.to_owned(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

/// A webhook envelope around arbitrary changes, so the parser gets past the envelope check.
fn envelope() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(STRINGS), json_value()), 0..4).prop_map(|changes| {
        let changes: Vec<Value> = changes
            .into_iter()
            .map(|(field, value)| json!({"field": field, "value": value}))
            .collect();
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": changes}]})
    })
}

fn exercise(v: &Value) {
    let _ = whatsapp_client::message::validate_message(v);
    let _ = whatsapp_client::message::preview(v);
    let _ = whatsapp_client::GraphError::from_value(v);
    if let Ok(d) = parse_delivery_value(v.clone()) {
        for c in d.changes() {
            if let ChangeValue::Messages(m) = &c.value {
                for msg in m.messages.iter().flatten() {
                    let _ = msg.preview();
                }
                let _ = m.error_count();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_delivery(&bytes);
        let _ = whatsapp_client::GraphError::from_response_body(&bytes);
        let _ = whatsapp_client::signature::verify(b"secret", &bytes, std::str::from_utf8(&bytes).ok());
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        exercise(&v);
        let bytes = serde_json::to_vec(&v).unwrap();
        let _ = parse_delivery(&bytes);
    }

    #[test]
    fn arbitrary_changes_never_panic(v in envelope()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let d = parse_delivery(&bytes).unwrap();
        // every change is reported, whatever its content
        prop_assert_eq!(d.changes().len(), v["entry"][0]["changes"].as_array().unwrap().len());
        exercise(&v);
    }

    #[test]
    fn arbitrary_message_objects_never_panic(kind in prop::sample::select(STRINGS), payload in json_value(), extra in json_value()) {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(kind.to_owned()));
        m.insert(kind.to_owned(), payload);
        m.insert("context".into(), extra);
        let v = Value::Object(m);
        exercise(&v);
        if let Ok(to) = whatsapp_client::Recipient::parse("16505551234") {
            let _ = whatsapp_client::message::build_send_body(&to, &v, Some("x"));
        }
    }
}
