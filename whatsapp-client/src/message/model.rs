//! A typed model of the Cloud API's outbound message objects.
//!
//! Each type serialises to exactly the JSON the Cloud API documents (absent options are
//! omitted, never `null`). [`Content`] is the message object without the envelope — what a host
//! application passes to `wa.send_message` — and [`OutboundMessage`] adds the recipient, reply
//! context and callback data to produce the request body.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ValidationError, build_send_body};
use crate::recipient::Recipient;

/// A message object without the envelope: `{"type":"text","text":{…}}`.
// Messages are built once and serialised; boxing the larger variants would only make them
// clumsier to construct and match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: Text },
    Image { image: Media },
    Audio { audio: Media },
    Video { video: Media },
    Document { document: Media },
    Sticker { sticker: Media },
    Location { location: Location },
    Contacts { contacts: Vec<Contact> },
    Interactive { interactive: Interactive },
    Reaction { reaction: Reaction },
    Template { template: Template },
}

impl Content {
    pub fn text(body: impl Into<String>) -> Content {
        Content::Text {
            text: Text {
                body: body.into(),
                preview_url: None,
            },
        }
    }

    /// The message object as JSON (what `wa.send_message` takes).
    pub fn to_value(&self) -> Value {
        // serialising these plain data types to a Value cannot fail
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
    /// Render a link preview for the first URL in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<bool>,
}

/// Media by uploaded media `id` or by public `link` (exactly one of them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Image, video and document only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Document only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl Media {
    pub fn id(id: impl Into<String>) -> Media {
        Media {
            id: Some(id.into()),
            ..Media::default()
        }
    }
    pub fn link(url: impl Into<String>) -> Media {
        Media {
            link: Some(url.into()),
            ..Media::default()
        }
    }
    pub fn with_caption(mut self, caption: impl Into<String>) -> Media {
        self.caption = Some(caption.into());
        self
    }
    pub fn with_filename(mut self, filename: impl Into<String>) -> Media {
        self.filename = Some(filename.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    pub name: ContactName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<ContactAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<ContactEmail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<ContactOrg>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<ContactPhone>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<ContactUrl>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactName {
    pub formatted_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// `HOME` or `WORK`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactEmail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactOrg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactPhone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// `CELL`, `MAIN`, `IPHONE`, `HOME` or `WORK`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactUrl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Interactive messages, tagged by their `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Interactive {
    /// Up to three reply buttons.
    Button {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        body: BodyText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<FooterText>,
        action: ButtonAction,
    },
    /// A menu of up to ten rows in up to ten sections.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        body: BodyText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<FooterText>,
        action: ListAction,
    },
    /// A call-to-action URL button.
    CtaUrl {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        body: BodyText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<FooterText>,
        action: NamedAction,
    },
    /// A WhatsApp Flow.
    Flow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<Header>,
        body: BodyText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        footer: Option<FooterText>,
        action: NamedAction,
    },
    /// Asks the user to share their location.
    LocationRequestMessage { body: BodyText, action: NamedAction },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Header {
    Text { text: String },
    Image { image: Media },
    Video { video: Media },
    Document { document: Media },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BodyText {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FooterText {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButtonAction {
    pub buttons: Vec<ReplyButton>,
}

/// `{"type":"reply","reply":{"id":…,"title":…}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyButton {
    Reply { reply: ButtonReply },
}

impl ReplyButton {
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> ReplyButton {
        ReplyButton::Reply {
            reply: ButtonReply {
                id: id.into(),
                title: title.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButtonReply {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListAction {
    /// The label of the button that opens the list.
    pub button: String,
    pub sections: Vec<ListSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListSection {
    /// Required when there is more than one section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Actions identified by `name`: `cta_url`, `flow`, `send_location`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum NamedAction {
    #[serde(rename = "cta_url")]
    CtaUrl { parameters: CtaUrlParameters },
    #[serde(rename = "flow")]
    Flow { parameters: FlowParameters },
    #[serde(rename = "send_location")]
    SendLocation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtaUrlParameters {
    pub display_text: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FlowParameters {
    /// Currently `"3"`.
    pub flow_message_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_name: Option<String>,
    pub flow_cta: String,
    /// `navigate` (default) or `data_exchange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_action_payload: Option<FlowActionPayload>,
    /// `draft` or `published`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowActionPayload {
    pub screen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A reaction to a message; an empty `emoji` removes a previous reaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub message_id: String,
    pub emoji: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: TemplateLanguage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateLanguage {
    /// e.g. `en_US`.
    pub code: String,
    /// `deterministic` (the only documented value) when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TemplateComponent {
    Header {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<Parameter>,
    },
    Body {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<Parameter>,
    },
    Button {
        /// `quick_reply`, `url`, `copy_code`, `flow`, `catalog`, `mpm`, `voice_call`, …
        sub_type: String,
        /// The button's position, 0–9 (sent as a string, as in Meta's examples).
        index: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parameters: Vec<Parameter>,
    },
}

/// A template parameter; `parameter_name` is set for templates with named parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_name: Option<String>,
    #[serde(flatten)]
    pub value: ParameterValue,
}

impl Parameter {
    pub fn positional(value: ParameterValue) -> Parameter {
        Parameter {
            parameter_name: None,
            value,
        }
    }
    pub fn named(name: impl Into<String>, value: ParameterValue) -> Parameter {
        Parameter {
            parameter_name: Some(name.into()),
            value,
        }
    }
    pub fn text(text: impl Into<String>) -> Parameter {
        Parameter::positional(ParameterValue::Text { text: text.into() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParameterValue {
    Text {
        text: String,
    },
    Currency {
        currency: Currency,
    },
    DateTime {
        date_time: DateTime,
    },
    Image {
        image: Media,
    },
    Document {
        document: Media,
    },
    Video {
        video: Media,
    },
    Location {
        location: Location,
    },
    /// Quick-reply button payload.
    Payload {
        payload: String,
    },
    /// Copy-code button.
    CouponCode {
        coupon_code: String,
    },
    /// Flow / catalog / MPM buttons.
    Action {
        action: Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Currency {
    pub fallback_value: String,
    /// ISO 4217 code.
    pub code: String,
    /// The amount multiplied by 1000.
    pub amount_1000: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateTime {
    pub fallback_value: String,
}

/// `context`: makes the message a reply to `message_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub message_id: String,
}

/// A complete send request: recipient, content and the optional envelope fields.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub to: Recipient,
    pub content: Content,
    pub context: Option<Context>,
    pub biz_opaque_callback_data: Option<String>,
}

impl OutboundMessage {
    pub fn new(to: Recipient, content: Content) -> OutboundMessage {
        OutboundMessage {
            to,
            content,
            context: None,
            biz_opaque_callback_data: None,
        }
    }

    pub fn reply_to(mut self, message_id: impl Into<String>) -> OutboundMessage {
        self.context = Some(Context {
            message_id: message_id.into(),
        });
        self
    }

    pub fn with_callback_data(mut self, data: impl Into<String>) -> OutboundMessage {
        self.biz_opaque_callback_data = Some(data.into());
        self
    }

    /// The message object without envelope (content plus `context`).
    pub fn message_value(&self) -> Value {
        let mut v = self.content.to_value();
        if let (Some(ctx), Value::Object(map)) = (&self.context, &mut v) {
            map.insert(
                "context".into(),
                serde_json::json!({ "message_id": ctx.message_id }),
            );
        }
        v
    }

    /// The exact bytes to POST, after validating the content.
    pub fn to_body(&self) -> Result<Vec<u8>, ValidationError> {
        build_send_body(
            &self.to,
            &self.message_value(),
            self.biz_opaque_callback_data.as_deref(),
        )
    }
}
