//! Webhook deliveries: `{"object":"whatsapp_business_account","entry":[{"id","changes":[…]}]}`.
//!
//! Parsing is tolerant by design, because a webhook that fails to parse is a webhook lost:
//! - a delivery is rejected only when it is not JSON or not a WhatsApp Business Account
//!   envelope at all ([`WebhookError`]);
//! - every change is parsed on its own; an unknown `field` becomes [`ChangeValue::Unknown`] and
//!   a value of the wrong shape becomes [`ChangeValue::Invalid`] with the reason;
//! - inside a `messages` value every message, status, contact and preference is parsed on its
//!   own, so one ill-typed part becomes a [`PartError`] next to the parts that did parse;
//! - unknown keys are ignored by the typed view but never lost: every typed part keeps a
//!   reference to its raw JSON (`raw`), which is what the extension stores;
//! - an unknown message type is kept as [`InboundContent::Unknown`] with its raw JSON.
//!
//! The typed view borrows from the parsed JSON (no copies of message text or ids); it is
//! produced on demand by [`Delivery::changes`] or, for a `Value` the caller already has, by
//! [`changes`].

mod json;
mod management;
mod messages;

pub use management::*;
pub use messages::*;

use serde_json::Value;
use std::borrow::Cow;

/// The `object` of WhatsApp Business Account webhooks.
pub const OBJECT: &str = "whatsapp_business_account";

/// Why a delivery is not a WhatsApp webhook at all. Carries no payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook body is not valid JSON: {0}")]
    NotJson(String),
    #[error("webhook body is not a JSON object")]
    NotAnObject,
    #[error("webhook object is {0:?}, expected \"whatsapp_business_account\"")]
    WrongObject(String),
    #[error("webhook has no \"entry\" array")]
    NoEntries,
}

/// A parsed delivery. It owns the JSON; [`Delivery::changes`] borrows typed views from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    root: Value,
}

/// Parses a webhook body. Fails only if it is not JSON or not a WhatsApp webhook envelope.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, WebhookError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message says where and what kind of error, never the content
        WebhookError::NotJson(e.to_string())
    })?;
    parse_delivery_value(root)
}

/// Like [`parse_delivery`] for JSON that is already parsed (a `jsonb` argument, say).
pub fn parse_delivery_value(root: Value) -> Result<Delivery, WebhookError> {
    check_envelope(&root)?;
    Ok(Delivery { root })
}

/// Checks the envelope and returns the typed changes of an already parsed delivery.
pub fn changes(root: &Value) -> Result<Vec<Change<'_>>, WebhookError> {
    check_envelope(root)?;
    Ok(collect_changes(root))
}

fn check_envelope(root: &Value) -> Result<(), WebhookError> {
    let obj = root.as_object().ok_or(WebhookError::NotAnObject)?;
    match obj.get("object") {
        Some(Value::String(s)) if s == OBJECT => {}
        Some(Value::String(s)) => {
            return Err(WebhookError::WrongObject(s.chars().take(64).collect()));
        }
        _ => return Err(WebhookError::WrongObject(String::new())),
    }
    match obj.get("entry") {
        Some(Value::Array(_)) => Ok(()),
        _ => Err(WebhookError::NoEntries),
    }
}

impl Delivery {
    /// The whole delivery as parsed.
    pub fn value(&self) -> &Value {
        &self.root
    }

    pub fn into_value(self) -> Value {
        self.root
    }

    /// Every change of every entry, in order, each parsed independently.
    pub fn changes(&self) -> Vec<Change<'_>> {
        collect_changes(&self.root)
    }

    /// Number of changes, without parsing them.
    pub fn change_count(&self) -> usize {
        json::arr(&self.root, "entry")
            .iter()
            .map(|e| json::arr(e, "changes").len().max(1))
            .sum()
    }
}

/// One change of one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<'a> {
    pub entry_index: usize,
    pub change_index: usize,
    /// `entry[].id`: the WABA id for most fields (but see [`AccountUpdate::waba_id`]).
    pub entry_id: Option<Cow<'a, str>>,
    /// `entry[].time`, when Meta sends it.
    pub entry_time: Option<i64>,
    /// `changes[].field`; empty when missing.
    pub field: &'a str,
    /// `changes[].value` (or the malformed entry/change itself).
    pub raw: &'a Value,
    pub value: ChangeValue<'a>,
}

/// The typed value of a change, by `field`.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeValue<'a> {
    /// `messages`: inbound messages, statuses, errors.
    Messages(MessagesValue<'a>),
    /// `user_preferences`: marketing message opt-outs (same shape as `messages` values).
    UserPreferences(MessagesValue<'a>),
    AccountUpdate(AccountUpdate<'a>),
    /// `message_template_status_update`
    TemplateStatus(TemplateStatusUpdate<'a>),
    /// `message_template_quality_update`
    TemplateQuality(TemplateQualityUpdate<'a>),
    /// `template_category_update`
    TemplateCategory(TemplateCategoryUpdate<'a>),
    /// `phone_number_quality_update`
    PhoneNumberQuality(PhoneNumberQualityUpdate<'a>),
    /// `phone_number_name_update`
    PhoneNumberName(PhoneNumberNameUpdate<'a>),
    /// `business_capability_update`
    BusinessCapability(BusinessCapabilityUpdate<'a>),
    /// A field this crate does not model; kept as it came.
    Unknown {
        field: &'a str,
        value: &'a Value,
    },
    /// A known field (or a malformed entry/change) whose value could not be read.
    Invalid {
        field: &'a str,
        reason: String,
        value: &'a Value,
    },
}

impl ChangeValue<'_> {
    /// Whether this change could not be read (to count and report it).
    pub fn is_invalid(&self) -> bool {
        matches!(self, ChangeValue::Invalid { .. })
    }
}

fn collect_changes(root: &Value) -> Vec<Change<'_>> {
    let entries = json::arr(root, "entry");
    let mut out = Vec::with_capacity(entries.len());
    for (ei, entry) in entries.iter().enumerate() {
        let invalid = |reason: &str| Change {
            entry_index: ei,
            change_index: 0,
            entry_id: json::id(entry, "id"),
            entry_time: json::int(entry, "time"),
            field: "",
            raw: entry,
            value: ChangeValue::Invalid {
                field: "",
                reason: reason.to_owned(),
                value: entry,
            },
        };
        if !entry.is_object() {
            out.push(invalid("entry is not an object"));
            continue;
        }
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            out.push(invalid("entry has no \"changes\" array"));
            continue;
        };
        let entry_id = json::id(entry, "id");
        let entry_time = json::int(entry, "time");
        for (ci, change) in changes.iter().enumerate() {
            let field = json::s(change, "field").unwrap_or("");
            let (raw, value) = match change.get("value") {
                Some(v) if change.is_object() => (v, parse_value(field, v)),
                _ => (
                    change,
                    ChangeValue::Invalid {
                        field,
                        reason: "change has no \"value\"".to_owned(),
                        value: change,
                    },
                ),
            };
            out.push(Change {
                entry_index: ei,
                change_index: ci,
                entry_id: entry_id.clone(),
                entry_time,
                field,
                raw,
                value,
            });
        }
    }
    out
}

fn parse_value<'a>(field: &'a str, v: &'a Value) -> ChangeValue<'a> {
    let known = matches!(
        field,
        "messages"
            | "user_preferences"
            | "account_update"
            | "message_template_status_update"
            | "message_template_quality_update"
            | "template_category_update"
            | "phone_number_quality_update"
            | "phone_number_name_update"
            | "business_capability_update"
    );
    if !known {
        return ChangeValue::Unknown { field, value: v };
    }
    if !v.is_object() {
        return ChangeValue::Invalid {
            field,
            reason: "value is not an object".to_owned(),
            value: v,
        };
    }
    match field {
        "messages" => ChangeValue::Messages(MessagesValue::parse(v)),
        "user_preferences" => ChangeValue::UserPreferences(MessagesValue::parse(v)),
        "account_update" => ChangeValue::AccountUpdate(AccountUpdate::parse(v)),
        "message_template_status_update" => {
            ChangeValue::TemplateStatus(TemplateStatusUpdate::parse(v))
        }
        "message_template_quality_update" => {
            ChangeValue::TemplateQuality(TemplateQualityUpdate::parse(v))
        }
        "template_category_update" => {
            ChangeValue::TemplateCategory(TemplateCategoryUpdate::parse(v))
        }
        "phone_number_quality_update" => {
            ChangeValue::PhoneNumberQuality(PhoneNumberQualityUpdate::parse(v))
        }
        "phone_number_name_update" => ChangeValue::PhoneNumberName(PhoneNumberNameUpdate::parse(v)),
        _ => ChangeValue::BusinessCapability(BusinessCapabilityUpdate::parse(v)),
    }
}
