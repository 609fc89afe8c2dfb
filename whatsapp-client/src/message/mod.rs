//! Outbound messages: the typed model, the validator for host-supplied message JSON, the exact
//! request body to POST to `/{phone_number_id}/messages`, and short previews.

mod model;
mod preview;
mod validate;

pub use model::*;
pub use preview::{PREVIEW_MAX_CHARS, preview};
pub use validate::{Problem, ValidationError, is_single_emoji, validate_message};

use serde::Serializer;
use serde::ser::SerializeMap;
use serde_json::Value;

use crate::recipient::Recipient;

/// Documented Cloud API limits, in characters (Unicode scalar values) or entries.
pub mod limits {
    pub const TEXT_BODY_MAX: usize = 4096;
    pub const CAPTION_MAX: usize = 1024;
    pub const FILENAME_MAX: usize = 240;
    pub const URL_MAX: usize = 2048;
    pub const ID_MAX: usize = 512;
    pub const BIZ_OPAQUE_CALLBACK_DATA_MAX: usize = 512;
    pub const LOCATION_TEXT_MAX: usize = 1000;
    pub const CONTACTS_MAX: usize = 257;
    pub const CONTACT_TEXT_MAX: usize = 1000;
    pub const INTERACTIVE_BODY_MAX: usize = 1024;
    pub const HEADER_TEXT_MAX: usize = 60;
    pub const FOOTER_MAX: usize = 60;
    pub const REPLY_BUTTONS_MAX: usize = 3;
    pub const BUTTON_ID_MAX: usize = 256;
    pub const BUTTON_TITLE_MAX: usize = 20;
    pub const LIST_SECTIONS_MAX: usize = 10;
    /// Rows per list message, across all sections.
    pub const LIST_ROWS_MAX: usize = 10;
    pub const LIST_SECTION_TITLE_MAX: usize = 24;
    pub const LIST_ROW_ID_MAX: usize = 200;
    pub const LIST_ROW_TITLE_MAX: usize = 24;
    pub const LIST_ROW_DESCRIPTION_MAX: usize = 72;
    pub const FLOW_CTA_MAX: usize = 30;
    pub const TEMPLATE_NAME_MAX: usize = 512;
    pub const TEMPLATE_COMPONENTS_MAX: usize = 20;
    pub const TEMPLATE_PARAMETERS_MAX: usize = 100;
    pub const CAROUSEL_CARDS_MAX: usize = 10;
    pub const PARAMETER_NAME_MAX: usize = 100;
    pub const PARAMETER_TEXT_MAX: usize = 32768;
    pub const PAYLOAD_MAX: usize = 1024;
    pub const COUPON_CODE_MAX: usize = 15;
}

/// The message types the Cloud API can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    Location,
    Contacts,
    Interactive,
    Reaction,
    Template,
}

impl MessageKind {
    pub const ALL: &'static [MessageKind] = &[
        MessageKind::Text,
        MessageKind::Image,
        MessageKind::Audio,
        MessageKind::Video,
        MessageKind::Document,
        MessageKind::Sticker,
        MessageKind::Location,
        MessageKind::Contacts,
        MessageKind::Interactive,
        MessageKind::Reaction,
        MessageKind::Template,
    ];

    /// The `type` value, which is also the key of the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Audio => "audio",
            MessageKind::Video => "video",
            MessageKind::Document => "document",
            MessageKind::Sticker => "sticker",
            MessageKind::Location => "location",
            MessageKind::Contacts => "contacts",
            MessageKind::Interactive => "interactive",
            MessageKind::Reaction => "reaction",
            MessageKind::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// Whether the message carries media (by id or link).
    pub fn is_media(self) -> bool {
        matches!(
            self,
            MessageKind::Image
                | MessageKind::Audio
                | MessageKind::Video
                | MessageKind::Document
                | MessageKind::Sticker
        )
    }

    /// Only templates may be sent outside the 24-hour customer service window.
    pub fn needs_open_window(self) -> bool {
        self != MessageKind::Template
    }
}

/// Where a media message's file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRef {
    /// A media id returned by an upload.
    Id(String),
    /// A public URL Meta downloads the file from.
    Link(String),
}

/// What the validator learned about a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedMessage {
    pub kind: MessageKind,
    /// `context.message_id`: the message this one replies to.
    pub reply_to: Option<String>,
    pub template_name: Option<String>,
    /// For image, audio, video, document and sticker messages.
    pub media: Option<MediaRef>,
    /// See [`preview`].
    pub preview: String,
}

/// Validates `message` (the object without envelope) and returns the exact, compact bytes to
/// POST to `/{phone_number_id}/messages`:
/// `{"messaging_product":"whatsapp","recipient_type":"individual","to":…,"type":…,…}`.
///
/// A phone number goes to `to`, a BSUID to `recipient`. `biz_opaque_callback_data`, when given,
/// replaces any value inside `message`. `messaging_product`/`recipient_type` inside `message`
/// are accepted (they must have their only valid values) and written once.
pub fn build_send_body(
    to: &Recipient,
    message: &Value,
    biz_opaque_callback_data: Option<&str>,
) -> Result<Vec<u8>, ValidationError> {
    validate_message(message)?;
    if let Some(data) = biz_opaque_callback_data
        && data.chars().count() > limits::BIZ_OPAQUE_CALLBACK_DATA_MAX
    {
        return Err(ValidationError {
            path: "biz_opaque_callback_data".into(),
            problem: Problem::TooLong {
                max: limits::BIZ_OPAQUE_CALLBACK_DATA_MAX,
                len: data.chars().count(),
            },
        });
    }
    let Value::Object(map) = message else {
        // validate_message only accepts objects
        return Err(ValidationError {
            path: String::new(),
            problem: Problem::WrongType {
                expected: "a JSON object",
            },
        });
    };
    let mut out = Vec::with_capacity(256);
    write_envelope(&mut out, to, map, biz_opaque_callback_data).map_err(|_| ValidationError {
        path: String::new(),
        problem: Problem::Invalid("could not be serialised"),
    })?;
    Ok(out)
}

fn write_envelope(
    out: &mut Vec<u8>,
    to: &Recipient,
    map: &serde_json::Map<String, Value>,
    biz_opaque_callback_data: Option<&str>,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::new(out);
    let mut m = ser.serialize_map(None)?;
    m.serialize_entry("messaging_product", "whatsapp")?;
    m.serialize_entry("recipient_type", "individual")?;
    m.serialize_entry(to.json_field(), to.as_str())?;
    if let Some(t) = map.get("type") {
        m.serialize_entry("type", t)?;
    }
    for (k, v) in map {
        match k.as_str() {
            "type" | "messaging_product" | "recipient_type" => {}
            "biz_opaque_callback_data" if biz_opaque_callback_data.is_some() => {}
            _ => m.serialize_entry(k, v)?,
        }
    }
    if let Some(data) = biz_opaque_callback_data {
        m.serialize_entry("biz_opaque_callback_data", data)?;
    }
    m.end()
}

/// `{"messaging_product":"whatsapp","status":"read","message_id":…}` plus, when `typing`, the
/// typing indicator (shown until the reply is sent or for at most 25 seconds).
pub fn mark_read_body(message_id: &str, typing: bool) -> Vec<u8> {
    let v = if typing {
        serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
            "typing_indicator": {"type": "text"},
        })
    } else {
        serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        })
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests;
