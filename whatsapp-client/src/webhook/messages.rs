//! The `messages` webhook value: inbound messages, statuses of outbound messages, contacts,
//! errors, and (for `user_preferences`) marketing preferences.

use serde_json::Value;

use super::json::{arr, boolean, float, int, obj, ptr, s};
use crate::error::GraphError;

/// A part of a value that could not be read. The raw JSON is kept so it can be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PartError<'a> {
    /// Position in its array (`messages[index]`, `statuses[index]`, …).
    pub index: usize,
    pub raw: &'a Value,
    pub reason: String,
}

/// A `messages` (or `user_preferences`) change value.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesValue<'a> {
    pub raw: &'a Value,
    pub messaging_product: Option<&'a str>,
    /// `metadata.phone_number_id`: the business number the change is about.
    pub phone_number_id: Option<&'a str>,
    /// `metadata.display_phone_number`
    pub display_phone_number: Option<&'a str>,
    pub contacts: Vec<Result<Contact<'a>, PartError<'a>>>,
    pub messages: Vec<Result<InboundMessage<'a>, PartError<'a>>>,
    pub statuses: Vec<Result<Status<'a>, PartError<'a>>>,
    /// Value-level `errors` (problems not tied to one message).
    pub errors: Vec<GraphError>,
    pub user_preferences: Vec<Result<UserPreference<'a>, PartError<'a>>>,
}

impl<'a> MessagesValue<'a> {
    pub(crate) fn parse(v: &'a Value) -> MessagesValue<'a> {
        let metadata = obj(v, "metadata");
        MessagesValue {
            raw: v,
            messaging_product: s(v, "messaging_product"),
            phone_number_id: metadata.and_then(|m| s(m, "phone_number_id")),
            display_phone_number: metadata.and_then(|m| s(m, "display_phone_number")),
            contacts: parts(v, "contacts", Contact::parse),
            messages: parts(v, "messages", InboundMessage::parse),
            statuses: parts(v, "statuses", Status::parse),
            errors: errors(v),
            user_preferences: parts(v, "user_preferences", UserPreference::parse),
        }
    }

    /// The contact entry for a sender or recipient, matched by BSUID first, then by `wa_id`.
    pub fn contact(&self, user_id: Option<&str>, wa_id: Option<&str>) -> Option<&Contact<'a>> {
        let mut ok = self.contacts.iter().filter_map(|c| c.as_ref().ok());
        if let Some(u) = user_id
            && let Some(c) = ok.clone().find(|c| c.user_id == Some(u))
        {
            return Some(c);
        }
        let w = wa_id?;
        ok.find(|c| c.wa_id == Some(w))
    }

    /// Number of parts that could not be read.
    pub fn error_count(&self) -> usize {
        self.contacts.iter().filter(|p| p.is_err()).count()
            + self.messages.iter().filter(|p| p.is_err()).count()
            + self.statuses.iter().filter(|p| p.is_err()).count()
            + self.user_preferences.iter().filter(|p| p.is_err()).count()
    }
}

fn parts<'a, T>(
    v: &'a Value,
    key: &str,
    parse: fn(&'a Value) -> Result<T, String>,
) -> Vec<Result<T, PartError<'a>>> {
    arr(v, key)
        .iter()
        .enumerate()
        .map(|(index, raw)| parse(raw).map_err(|reason| PartError { index, raw, reason }))
        .collect()
}

pub(crate) fn errors(v: &Value) -> Vec<GraphError> {
    arr(v, "errors")
        .iter()
        .filter(|e| e.is_object())
        .map(GraphError::from_value)
        .collect()
}

fn require_object(v: &Value, what: &str) -> Result<(), String> {
    if v.is_object() {
        Ok(())
    } else {
        Err(format!("{what} is not an object"))
    }
}

/// `contacts[]`: who sent the messages (or received the statuses). Either id may be absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact<'a> {
    pub raw: &'a Value,
    /// Phone-number id; absent for users who hide their number behind a username.
    pub wa_id: Option<&'a str>,
    /// Business-scoped user id (BSUID).
    pub user_id: Option<&'a str>,
    pub parent_user_id: Option<&'a str>,
    /// `profile.name`
    pub name: Option<&'a str>,
    /// `profile.username`
    pub username: Option<&'a str>,
    pub identity_key_hash: Option<&'a str>,
}

impl<'a> Contact<'a> {
    fn parse(v: &'a Value) -> Result<Contact<'a>, String> {
        require_object(v, "contact")?;
        let profile = obj(v, "profile");
        Ok(Contact {
            raw: v,
            wa_id: s(v, "wa_id"),
            user_id: s(v, "user_id"),
            parent_user_id: s(v, "parent_user_id"),
            name: profile.and_then(|p| s(p, "name")),
            username: profile.and_then(|p| s(p, "username")),
            identity_key_hash: s(v, "identity_key_hash"),
        })
    }
}

/// An inbound message (`messages[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage<'a> {
    /// The full message object, as the extension stores it.
    pub raw: &'a Value,
    /// The `wamid`.
    pub id: &'a str,
    /// The sender's phone number (`wa_id`); absent for username-only users.
    pub from: Option<&'a str>,
    /// The sender's BSUID.
    pub from_user_id: Option<&'a str>,
    pub from_parent_user_id: Option<&'a str>,
    /// Unix seconds.
    pub timestamp: Option<i64>,
    /// The `type` string (`text`, `image`, …, or one this crate does not know).
    pub kind: &'a str,
    pub context: Option<MessageContext<'a>>,
    pub referral: Option<Referral<'a>>,
    pub content: InboundContent<'a>,
    /// Errors attached to the message (e.g. for `unsupported`).
    pub errors: Vec<GraphError>,
    /// Set for messages in a group.
    pub group_id: Option<&'a str>,
}

impl<'a> InboundMessage<'a> {
    fn parse(v: &'a Value) -> Result<InboundMessage<'a>, String> {
        require_object(v, "message")?;
        let id = match v.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err("message \"id\" is not a non-empty string".into()),
            None => return Err("message has no \"id\"".into()),
        };
        let from = s(v, "from");
        let from_user_id = s(v, "from_user_id");
        if from.is_none() && from_user_id.is_none() {
            return Err("message has neither \"from\" nor \"from_user_id\"".into());
        }
        let kind = s(v, "type").unwrap_or("");
        Ok(InboundMessage {
            raw: v,
            id,
            from,
            from_user_id,
            from_parent_user_id: s(v, "from_parent_user_id"),
            timestamp: int(v, "timestamp"),
            kind,
            context: obj(v, "context").map(MessageContext::parse),
            referral: obj(v, "referral").map(Referral::parse),
            content: InboundContent::parse(kind, v),
            errors: super::messages::errors(v),
            group_id: s(v, "group_id"),
        })
    }

    /// A short preview for conversation lists (see [`crate::message::preview`]).
    pub fn preview(&self) -> String {
        crate::message::preview(self.raw)
    }

    /// The media id to fetch, for image/audio/video/document/sticker messages.
    pub fn media_id(&self) -> Option<&'a str> {
        match &self.content {
            InboundContent::Media { media, .. } => Some(media.id),
            _ => None,
        }
    }
}

/// `context`: what the message replies to or was forwarded from.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageContext<'a> {
    pub from: Option<&'a str>,
    /// The `wamid` replied to (often one of ours).
    pub id: Option<&'a str>,
    pub forwarded: bool,
    pub frequently_forwarded: bool,
    /// `referred_product.catalog_id`, for questions about a product.
    pub referred_catalog_id: Option<&'a str>,
    pub referred_product_retailer_id: Option<&'a str>,
}

impl<'a> MessageContext<'a> {
    fn parse(v: &'a Value) -> MessageContext<'a> {
        MessageContext {
            from: s(v, "from"),
            id: s(v, "id"),
            forwarded: boolean(v, "forwarded").unwrap_or(false),
            frequently_forwarded: boolean(v, "frequently_forwarded").unwrap_or(false),
            referred_catalog_id: ptr(v, "/referred_product/catalog_id"),
            referred_product_retailer_id: ptr(v, "/referred_product/product_retailer_id"),
        }
    }
}

/// `referral`: the ad or post a click-to-WhatsApp message came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Referral<'a> {
    pub raw: &'a Value,
    pub source_url: Option<&'a str>,
    pub source_id: Option<&'a str>,
    /// `ad` or `post`
    pub source_type: Option<&'a str>,
    pub headline: Option<&'a str>,
    pub body: Option<&'a str>,
    pub ctwa_clid: Option<&'a str>,
}

impl<'a> Referral<'a> {
    fn parse(v: &'a Value) -> Referral<'a> {
        Referral {
            raw: v,
            source_url: s(v, "source_url"),
            source_id: s(v, "source_id"),
            source_type: s(v, "source_type"),
            headline: s(v, "headline"),
            body: s(v, "body"),
            ctwa_clid: s(v, "ctwa_clid"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

/// Inbound media: fetch it by `id` promptly (the download URL expires within minutes).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMedia<'a> {
    pub id: &'a str,
    pub mime_type: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub caption: Option<&'a str>,
    pub filename: Option<&'a str>,
    /// Audio recorded as a voice note.
    pub voice: bool,
    /// Animated sticker.
    pub animated: bool,
}

/// `interactive` replies.
#[derive(Debug, Clone, PartialEq)]
pub enum InteractiveReply<'a> {
    ButtonReply {
        id: &'a str,
        title: Option<&'a str>,
    },
    ListReply {
        id: &'a str,
        title: Option<&'a str>,
        description: Option<&'a str>,
    },
    /// A Flow's response: `response_json` is a JSON document in a string.
    NfmReply {
        name: Option<&'a str>,
        body: Option<&'a str>,
        response_json: Option<&'a str>,
    },
    /// Another interactive reply type; see the message's `raw`.
    Other {
        kind: &'a str,
    },
}

/// The content of an inbound message, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundContent<'a> {
    Text {
        body: &'a str,
    },
    Media {
        kind: MediaKind,
        media: InboundMedia<'a>,
    },
    Location {
        latitude: Option<f64>,
        longitude: Option<f64>,
        name: Option<&'a str>,
        address: Option<&'a str>,
        url: Option<&'a str>,
    },
    /// Shared contact cards (vCard-like objects), kept as JSON.
    Contacts {
        contacts: &'a [Value],
    },
    Interactive(InteractiveReply<'a>),
    /// A tap on a template's quick-reply button.
    Button {
        text: Option<&'a str>,
        payload: Option<&'a str>,
    },
    /// A reaction to `message_id`; `emoji` is absent when a reaction was removed.
    Reaction {
        message_id: Option<&'a str>,
        emoji: Option<&'a str>,
    },
    Order {
        catalog_id: Option<&'a str>,
        text: Option<&'a str>,
        product_items: &'a [Value],
    },
    /// `system`: e.g. `user_changed_number` (with the new `wa_id`) or `user_changed_user_id`.
    System {
        kind: Option<&'a str>,
        body: Option<&'a str>,
        wa_id: Option<&'a str>,
        user_id: Option<&'a str>,
    },
    /// `unsupported` (Meta could not deliver the content; see the message's errors).
    Unsupported,
    /// A type this crate does not model (the raw message keeps everything).
    Unknown,
    /// A known type whose payload could not be read.
    Malformed {
        reason: String,
    },
}

impl<'a> InboundContent<'a> {
    fn parse(kind: &'a str, msg: &'a Value) -> InboundContent<'a> {
        let payload = msg.get(kind).filter(|p| p.is_object());
        let malformed = |reason: &str| InboundContent::Malformed {
            reason: reason.to_owned(),
        };
        let media_kind = match kind {
            "image" => Some(MediaKind::Image),
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            "document" => Some(MediaKind::Document),
            "sticker" => Some(MediaKind::Sticker),
            _ => None,
        };
        if let Some(mk) = media_kind {
            let Some(p) = payload else {
                return malformed("media payload is missing or not an object");
            };
            let Some(id) = s(p, "id").filter(|i| !i.is_empty()) else {
                return malformed("media has no \"id\"");
            };
            return InboundContent::Media {
                kind: mk,
                media: InboundMedia {
                    id,
                    mime_type: s(p, "mime_type"),
                    sha256: s(p, "sha256"),
                    caption: s(p, "caption"),
                    filename: s(p, "filename"),
                    voice: boolean(p, "voice").unwrap_or(false),
                    animated: boolean(p, "animated").unwrap_or(false),
                },
            };
        }
        match kind {
            "text" => match payload.and_then(|p| s(p, "body")) {
                Some(body) => InboundContent::Text { body },
                None => malformed("text has no \"body\""),
            },
            "location" => match payload {
                Some(p) => InboundContent::Location {
                    latitude: float(p, "latitude"),
                    longitude: float(p, "longitude"),
                    name: s(p, "name"),
                    address: s(p, "address"),
                    url: s(p, "url"),
                },
                None => malformed("location payload is missing"),
            },
            "contacts" => match msg.get("contacts").and_then(Value::as_array) {
                Some(list) => InboundContent::Contacts { contacts: list },
                None => malformed("contacts is not an array"),
            },
            "interactive" => match payload {
                Some(p) => InboundContent::Interactive(interactive(p)),
                None => malformed("interactive payload is missing"),
            },
            "button" => match payload {
                Some(p) => InboundContent::Button {
                    text: s(p, "text"),
                    payload: s(p, "payload"),
                },
                None => malformed("button payload is missing"),
            },
            "reaction" => match payload {
                Some(p) => InboundContent::Reaction {
                    message_id: s(p, "message_id"),
                    emoji: s(p, "emoji").filter(|e| !e.is_empty()),
                },
                None => malformed("reaction payload is missing"),
            },
            "order" => match payload {
                Some(p) => InboundContent::Order {
                    catalog_id: s(p, "catalog_id"),
                    text: s(p, "text"),
                    product_items: arr(p, "product_items"),
                },
                None => malformed("order payload is missing"),
            },
            "system" => match payload {
                Some(p) => InboundContent::System {
                    kind: s(p, "type"),
                    body: s(p, "body"),
                    wa_id: s(p, "wa_id").or_else(|| s(p, "new_wa_id")),
                    user_id: s(p, "user_id"),
                },
                None => malformed("system payload is missing"),
            },
            "unsupported" => InboundContent::Unsupported,
            _ => InboundContent::Unknown,
        }
    }
}

fn interactive(p: &Value) -> InteractiveReply<'_> {
    let kind = s(p, "type").unwrap_or("");
    let sub = obj(p, kind);
    match (kind, sub) {
        ("button_reply", Some(r)) => match s(r, "id") {
            Some(id) => InteractiveReply::ButtonReply {
                id,
                title: s(r, "title"),
            },
            None => InteractiveReply::Other { kind },
        },
        ("list_reply", Some(r)) => match s(r, "id") {
            Some(id) => InteractiveReply::ListReply {
                id,
                title: s(r, "title"),
                description: s(r, "description"),
            },
            None => InteractiveReply::Other { kind },
        },
        ("nfm_reply", Some(r)) => InteractiveReply::NfmReply {
            name: s(r, "name"),
            body: s(r, "body"),
            response_json: s(r, "response_json"),
        },
        _ => InteractiveReply::Other { kind },
    }
}

/// The delivery status of an outbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind<'a> {
    Sent,
    Delivered,
    Read,
    /// Voice message played.
    Played,
    Failed,
    Deleted,
    Other(&'a str),
}

impl<'a> StatusKind<'a> {
    pub fn parse(s: &'a str) -> StatusKind<'a> {
        match s {
            "sent" => StatusKind::Sent,
            "delivered" => StatusKind::Delivered,
            "read" => StatusKind::Read,
            "played" => StatusKind::Played,
            "failed" => StatusKind::Failed,
            "deleted" => StatusKind::Deleted,
            other => StatusKind::Other(other),
        }
    }

    /// Position in the forward-only progression sent → delivered → read → played, so a
    /// late or replayed webhook never moves a message backwards. `None` for `failed` (terminal),
    /// `deleted` and unknown statuses, which are not part of the progression.
    pub fn rank(&self) -> Option<u8> {
        match self {
            StatusKind::Sent => Some(1),
            StatusKind::Delivered => Some(2),
            StatusKind::Read => Some(3),
            StatusKind::Played => Some(4),
            StatusKind::Failed | StatusKind::Deleted | StatusKind::Other(_) => None,
        }
    }

    pub fn as_str(&self) -> &'a str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
            StatusKind::Played => "played",
            StatusKind::Failed => "failed",
            StatusKind::Deleted => "deleted",
            StatusKind::Other(s) => s,
        }
    }
}

/// `statuses[]`: a status change of one outbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct Status<'a> {
    pub raw: &'a Value,
    /// The `wamid`.
    pub id: &'a str,
    pub status: StatusKind<'a>,
    pub timestamp: Option<i64>,
    /// The recipient's phone number; absent when sent to a BSUID with no phone available.
    pub recipient_id: Option<&'a str>,
    pub recipient_user_id: Option<&'a str>,
    pub recipient_parent_user_id: Option<&'a str>,
    /// What the send request carried as `biz_opaque_callback_data` (our outbound id).
    pub biz_opaque_callback_data: Option<&'a str>,
    pub conversation: Option<Conversation<'a>>,
    pub pricing: Option<Pricing<'a>>,
    /// Why a `failed` status failed.
    pub errors: Vec<GraphError>,
}

impl<'a> Status<'a> {
    fn parse(v: &'a Value) -> Result<Status<'a>, String> {
        require_object(v, "status")?;
        let id = match v.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Err("status has no string \"id\"".into()),
        };
        let status = match v.get("status") {
            Some(Value::String(s)) => StatusKind::parse(s),
            _ => return Err("status has no string \"status\"".into()),
        };
        let conversation = obj(v, "conversation").map(|c| Conversation {
            id: s(c, "id"),
            expiration_timestamp: int(c, "expiration_timestamp"),
            origin_type: ptr(c, "/origin/type"),
        });
        let pricing = obj(v, "pricing").map(|p| Pricing {
            billable: boolean(p, "billable"),
            pricing_model: s(p, "pricing_model"),
            category: s(p, "category"),
            kind: s(p, "type"),
        });
        Ok(Status {
            raw: v,
            id,
            status,
            timestamp: int(v, "timestamp"),
            recipient_id: s(v, "recipient_id"),
            recipient_user_id: s(v, "recipient_user_id"),
            recipient_parent_user_id: s(v, "recipient_parent_user_id"),
            biz_opaque_callback_data: s(v, "biz_opaque_callback_data"),
            conversation,
            pricing,
            errors: errors(v),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation<'a> {
    pub id: Option<&'a str>,
    pub expiration_timestamp: Option<i64>,
    /// `origin.type`: `service`, `marketing`, `utility`, `authentication`, …
    pub origin_type: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pricing<'a> {
    pub billable: Option<bool>,
    /// `CBP` or `PMP`
    pub pricing_model: Option<&'a str>,
    pub category: Option<&'a str>,
    /// `regular`, `free_customer_service`, `free_entry_point`, …
    pub kind: Option<&'a str>,
}

/// `user_preferences[]`: a user stopped or resumed marketing messages.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPreference<'a> {
    pub raw: &'a Value,
    pub wa_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    /// `marketing_messages`
    pub category: Option<&'a str>,
    /// `stop` or `resume`
    pub value: Option<&'a str>,
    pub timestamp: Option<i64>,
}

impl<'a> UserPreference<'a> {
    fn parse(v: &'a Value) -> Result<UserPreference<'a>, String> {
        require_object(v, "user preference")?;
        Ok(UserPreference {
            raw: v,
            wa_id: s(v, "wa_id"),
            user_id: s(v, "user_id"),
            detail: s(v, "detail"),
            category: s(v, "category"),
            value: s(v, "value"),
            timestamp: int(v, "timestamp"),
        })
    }
}
