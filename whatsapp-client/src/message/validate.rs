//! Validation of a raw message object as a host application passes it to `wa.send_message`.
//!
//! Policy:
//! - the message `type` must be one the Cloud API documents for sending; unknown types, unknown
//!   interactive types and unknown template parameter types are rejected (a typo is far more
//!   likely than a type Meta added yesterday, and the error names the path);
//! - every documented field that is present must have the documented JSON type, and the
//!   documented limits (lengths, counts, uniqueness) are enforced;
//! - unknown *keys* inside a known object are allowed and forwarded as they are, so a new
//!   optional field Meta adds can be used without upgrading the extension;
//! - shapes that are clearly wrong are rejected: a payload for another type next to `type`
//!   (`{"type":"text","image":{…}}`), the recipient inside the message (`to`, `recipient`),
//!   `caption` on audio or stickers, both `id` and `link` on media, and so on.

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

use super::preview::preview;
use super::{MediaRef, MessageKind, ValidatedMessage, limits};

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", if path.is_empty() { "message" } else { path.as_str() })]
pub struct ValidationError {
    /// A JSON path into the message object, e.g. `template.components[1].parameters[0].type`;
    /// empty for the message object itself.
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    WrongType {
        expected: &'static str,
    },
    Empty,
    TooLong {
        max: usize,
        len: usize,
    },
    TooMany {
        max: usize,
        len: usize,
    },
    TooFew {
        min: usize,
        len: usize,
    },
    UnknownType {
        value: String,
        expected: &'static str,
    },
    NotAllowed(&'static str),
    Invalid(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is required"),
            Problem::WrongType { expected } => write!(f, "must be {expected}"),
            Problem::Empty => f.write_str("must not be empty"),
            Problem::TooLong { max, len } => {
                write!(f, "is too long ({len} characters, at most {max})")
            }
            Problem::TooMany { max, len } => {
                write!(f, "has too many entries ({len}, at most {max})")
            }
            Problem::TooFew { min, len } => {
                write!(f, "has too few entries ({len}, at least {min})")
            }
            Problem::UnknownType { value, expected } => {
                write!(
                    f,
                    "unsupported type \"{value}\" (expected one of: {expected})"
                )
            }
            Problem::NotAllowed(why) | Problem::Invalid(why) => f.write_str(why),
        }
    }
}

/// A path built on the stack while descending; rendered only when there is an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, k: &'a str) -> Path<'a> {
        Path::Key(self, k)
    }
    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
    fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }
    fn render_into(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, k) => {
                parent.render_into(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Path::Index(parent, i) => {
                parent.render_into(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    fn err(&self, problem: Problem) -> ValidationError {
        ValidationError {
            path: self.render(),
            problem,
        }
    }
}

type Result<T> = std::result::Result<T, ValidationError>;

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn obj<'v>(v: &'v Value, p: &Path) -> Result<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        p.err(Problem::WrongType {
            expected: "an object",
        })
    })
}

fn req<'v>(m: &'v Map<String, Value>, key: &str, p: &Path) -> Result<&'v Value> {
    match m.get(key) {
        Some(Value::Null) | None => Err(p.key(key).err(Problem::Missing)),
        Some(v) => Ok(v),
    }
}

fn as_str<'v>(v: &'v Value, p: &Path) -> Result<&'v str> {
    v.as_str().ok_or_else(|| {
        p.err(Problem::WrongType {
            expected: "a string",
        })
    })
}

/// A required, non-empty string of at most `max` characters.
fn req_str<'v>(m: &'v Map<String, Value>, key: &str, max: usize, p: &Path) -> Result<&'v str> {
    let kp = p.key(key);
    let s = as_str(req(m, key, p)?, &kp)?;
    check_text(s, max, &kp)?;
    Ok(s)
}

/// An optional string of at most `max` characters (may be empty only if `allow_empty`).
fn opt_str<'v>(
    m: &'v Map<String, Value>,
    key: &str,
    max: usize,
    allow_empty: bool,
    p: &Path,
) -> Result<Option<&'v str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let kp = p.key(key);
            let s = as_str(v, &kp)?;
            if s.is_empty() && allow_empty {
                return Ok(Some(s));
            }
            check_text(s, max, &kp)?;
            Ok(Some(s))
        }
    }
}

fn check_text(s: &str, max: usize, p: &Path) -> Result<()> {
    if s.trim().is_empty() {
        return Err(p.err(Problem::Empty));
    }
    // cheap upper bound first: a string of at most `max` bytes has at most `max` chars
    if s.len() > max {
        let len = s.chars().count();
        if len > max {
            return Err(p.err(Problem::TooLong { max, len }));
        }
    }
    Ok(())
}

fn opt_bool(m: &Map<String, Value>, key: &str, p: &Path) -> Result<()> {
    match m.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(p.key(key).err(Problem::WrongType {
            expected: "true or false",
        })),
    }
}

fn arr<'v>(v: &'v Value, p: &Path) -> Result<&'v Vec<Value>> {
    v.as_array().ok_or_else(|| {
        p.err(Problem::WrongType {
            expected: "an array",
        })
    })
}

fn count(len: usize, min: usize, max: usize, p: &Path) -> Result<()> {
    if len < min {
        return Err(p.err(Problem::TooFew { min, len }));
    }
    if len > max {
        return Err(p.err(Problem::TooMany { max, len }));
    }
    Ok(())
}

fn check_url(s: &str, p: &Path) -> Result<()> {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err(p.err(Problem::Invalid("must be an http:// or https:// URL")));
    }
    if s.len() > limits::URL_MAX || s.chars().any(char::is_whitespace) {
        return Err(p.err(Problem::Invalid(
            "must be a URL without spaces of at most 2048 characters",
        )));
    }
    Ok(())
}

const MESSAGE_TYPES: &str = "text, image, audio, video, document, sticker, location, contacts, interactive, reaction, template";

/// Validates a message object (without envelope) and summarises it.
pub fn validate_message(v: &Value) -> Result<ValidatedMessage> {
    let root = Path::Root;
    let m = v.as_object().ok_or_else(|| {
        root.err(Problem::WrongType {
            expected: "a JSON object",
        })
    })?;
    let type_v = req(m, "type", &root)?;
    let type_s = as_str(type_v, &root.key("type"))?;
    let kind = MessageKind::parse(type_s).ok_or_else(|| {
        root.key("type").err(Problem::UnknownType {
            value: short(type_s),
            expected: MESSAGE_TYPES,
        })
    })?;

    for key in ["to", "recipient"] {
        if m.contains_key(key) {
            return Err(root.key(key).err(Problem::NotAllowed(
                "the recipient is passed separately, not inside the message",
            )));
        }
    }
    for other in MessageKind::ALL {
        if *other != kind && m.contains_key(other.as_str()) {
            return Err(root.key(other.as_str()).err(Problem::NotAllowed(
                "belongs to another message type than the one given in \"type\"",
            )));
        }
    }
    if let Some(mp) = m.get("messaging_product")
        && mp.as_str() != Some("whatsapp")
    {
        return Err(root
            .key("messaging_product")
            .err(Problem::Invalid("must be \"whatsapp\" when given")));
    }
    if let Some(rt) = m.get("recipient_type")
        && rt.as_str() != Some("individual")
    {
        return Err(root
            .key("recipient_type")
            .err(Problem::Invalid("must be \"individual\" when given")));
    }
    opt_str(
        m,
        "biz_opaque_callback_data",
        limits::BIZ_OPAQUE_CALLBACK_DATA_MAX,
        false,
        &root,
    )?;
    let reply_to = match m.get("context") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let cp = root.key("context");
            let cm = obj(c, &cp)?;
            Some(req_str(cm, "message_id", limits::ID_MAX, &cp)?.to_owned())
        }
    };

    let key = kind.as_str();
    let kp = root.key(key);
    let payload = req(m, key, &root)?;
    let mut media = None;
    let mut template_name = None;
    match kind {
        MessageKind::Text => {
            let t = obj(payload, &kp)?;
            req_str(t, "body", limits::TEXT_BODY_MAX, &kp)?;
            opt_bool(t, "preview_url", &kp)?;
        }
        MessageKind::Image | MessageKind::Video => {
            media = Some(validate_media(payload, &kp, MediaRules::CAPTION)?);
        }
        MessageKind::Document => {
            media = Some(validate_media(payload, &kp, MediaRules::DOCUMENT)?);
        }
        MessageKind::Audio | MessageKind::Sticker => {
            media = Some(validate_media(payload, &kp, MediaRules::BARE)?);
        }
        MessageKind::Location => validate_location(payload, &kp)?,
        MessageKind::Contacts => validate_contacts(payload, &kp)?,
        MessageKind::Interactive => validate_interactive(payload, &kp)?,
        MessageKind::Reaction => validate_reaction(payload, &kp)?,
        MessageKind::Template => {
            template_name = Some(validate_template(payload, &kp)?.to_owned());
        }
    }
    Ok(ValidatedMessage {
        kind,
        reply_to,
        template_name,
        media,
        preview: preview(v),
    })
}

#[derive(Clone, Copy)]
struct MediaRules {
    caption: bool,
    filename: bool,
}

impl MediaRules {
    const CAPTION: MediaRules = MediaRules {
        caption: true,
        filename: false,
    };
    const DOCUMENT: MediaRules = MediaRules {
        caption: true,
        filename: true,
    };
    const BARE: MediaRules = MediaRules {
        caption: false,
        filename: false,
    };
}

fn validate_media(v: &Value, p: &Path, rules: MediaRules) -> Result<MediaRef> {
    let m = obj(v, p)?;
    let id = opt_str(m, "id", limits::ID_MAX, false, p)?;
    let link = opt_str(m, "link", limits::URL_MAX, false, p)?;
    let media = match (id, link) {
        (Some(_), Some(_)) => {
            return Err(p.err(Problem::Invalid(
                "give either a media \"id\" or a \"link\", not both",
            )));
        }
        (None, None) => {
            return Err(p.err(Problem::Invalid("needs a media \"id\" or a \"link\"")));
        }
        (Some(id), None) => MediaRef::Id(id.to_owned()),
        (None, Some(link)) => {
            check_url(link, &p.key("link"))?;
            MediaRef::Link(link.to_owned())
        }
    };
    if m.contains_key("caption") {
        if !rules.caption {
            return Err(p
                .key("caption")
                .err(Problem::NotAllowed("is not allowed for this media type")));
        }
        opt_str(m, "caption", limits::CAPTION_MAX, true, p)?;
    }
    if m.contains_key("filename") {
        if !rules.filename {
            return Err(p
                .key("filename")
                .err(Problem::NotAllowed("is only allowed for documents")));
        }
        opt_str(m, "filename", limits::FILENAME_MAX, false, p)?;
    }
    Ok(media)
}

fn coordinate(m: &Map<String, Value>, key: &str, bound: f64, p: &Path) -> Result<()> {
    let kp = p.key(key);
    let x = match req(m, key, p)? {
        Value::Number(n) => n.as_f64(),
        // older Meta examples send coordinates as strings
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        kp.err(Problem::WrongType {
            expected: "a number",
        })
    })?;
    if !x.is_finite() || x.abs() > bound {
        return Err(kp.err(Problem::Invalid("is out of range")));
    }
    Ok(())
}

fn validate_location(v: &Value, p: &Path) -> Result<()> {
    let m = obj(v, p)?;
    coordinate(m, "latitude", 90.0, p)?;
    coordinate(m, "longitude", 180.0, p)?;
    opt_str(m, "name", limits::LOCATION_TEXT_MAX, false, p)?;
    opt_str(m, "address", limits::LOCATION_TEXT_MAX, false, p)?;
    Ok(())
}

fn opt_array_of_objects(m: &Map<String, Value>, key: &str, p: &Path) -> Result<()> {
    if let Some(v) = m.get(key) {
        let kp = p.key(key);
        for (i, item) in arr(v, &kp)?.iter().enumerate() {
            obj(item, &kp.index(i))?;
        }
    }
    Ok(())
}

fn validate_contacts(v: &Value, p: &Path) -> Result<()> {
    let list = arr(v, p)?;
    count(list.len(), 1, limits::CONTACTS_MAX, p)?;
    for (i, c) in list.iter().enumerate() {
        let cp = p.index(i);
        let cm = obj(c, &cp)?;
        let np = cp.key("name");
        let name = obj(req(cm, "name", &cp)?, &np)?;
        req_str(name, "formatted_name", limits::CONTACT_TEXT_MAX, &np)?;
        for key in ["first_name", "last_name", "middle_name", "suffix", "prefix"] {
            opt_str(name, key, limits::CONTACT_TEXT_MAX, false, &np)?;
        }
        for key in ["addresses", "emails", "phones", "urls"] {
            opt_array_of_objects(cm, key, &cp)?;
        }
        if let Some(org) = cm.get("org") {
            obj(org, &cp.key("org"))?;
        }
        if let Some(b) = opt_str(cm, "birthday", 10, false, &cp)? {
            let ok = b.len() == 10
                && b.bytes().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                });
            if !ok {
                return Err(cp
                    .key("birthday")
                    .err(Problem::Invalid("must be a date in YYYY-MM-DD format")));
            }
        }
    }
    Ok(())
}

fn validate_reaction(v: &Value, p: &Path) -> Result<()> {
    let m = obj(v, p)?;
    req_str(m, "message_id", limits::ID_MAX, p)?;
    let ep = p.key("emoji");
    let emoji = as_str(req(m, "emoji", p)?, &ep)?;
    // an empty emoji removes the reaction
    if !emoji.is_empty() && !is_single_emoji(emoji) {
        return Err(ep.err(Problem::Invalid(
            "must be a single emoji, or \"\" to remove the reaction",
        )));
    }
    Ok(())
}

/// True when `s` looks like exactly one emoji (including ZWJ sequences, skin tones, flags and
/// keycaps). A heuristic without Unicode tables: it accepts every emoji and rejects text, but
/// may accept a few non-emoji symbols.
pub fn is_single_emoji(s: &str) -> bool {
    const ZWJ: char = '\u{200D}';
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() || chars.len() > 16 {
        return false;
    }
    let is_modifier = |c: char| {
        matches!(c,
            '\u{FE0E}' | '\u{FE0F}'          // variation selectors
            | '\u{20E3}'                     // combining keycap
            | '\u{1F3FB}'..='\u{1F3FF}'      // skin tones
            | '\u{E0020}'..='\u{E007F}') // tag sequence (subdivision flags)
    };
    let is_regional = |c: char| ('\u{1F1E6}'..='\u{1F1FF}').contains(&c);
    let is_base = |c: char| {
        matches!(c,
            '\u{00A9}' | '\u{00AE}'
            | '\u{203C}'..='\u{3299}'
            | '\u{1F000}'..='\u{1FAFF}')
    };
    let mut graphemes = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let joined = i > 0 && chars[i - 1] == ZWJ;
        if c == ZWJ {
            // a joiner must sit between two parts
            if i == 0 || i + 1 == chars.len() {
                return false;
            }
        } else if is_modifier(c) {
            if i == 0 {
                return false;
            }
        } else if c.is_ascii_digit() || c == '#' || c == '*' {
            // keycap base: must be followed by an optional FE0F and U+20E3
            let next = chars.get(i + 1).copied();
            let keycap = match next {
                Some('\u{20E3}') => true,
                Some('\u{FE0F}') => chars.get(i + 2) == Some(&'\u{20E3}'),
                _ => false,
            };
            if !keycap {
                return false;
            }
            if !joined {
                graphemes += 1;
            }
        } else if is_regional(c) {
            // a flag is a pair of regional indicators
            if !chars.get(i + 1).is_some_and(|&n| is_regional(n)) {
                return false;
            }
            if !joined {
                graphemes += 1;
            }
            i += 1;
        } else if is_base(c) {
            if !joined {
                graphemes += 1;
            }
        } else {
            return false;
        }
        i += 1;
    }
    graphemes == 1
}

const INTERACTIVE_TYPES: &str = "button, list, cta_url, flow, location_request_message, product, product_list, catalog_message, address_message, call_permission_request, voice_call";

fn validate_interactive(v: &Value, p: &Path) -> Result<()> {
    let m = obj(v, p)?;
    let tp = p.key("type");
    let t = as_str(req(m, "type", p)?, &tp)?;
    let ap = p.key("action");
    match t {
        "button" | "list" | "cta_url" | "flow" | "location_request_message" => {
            let bp = p.key("body");
            let body = obj(req(m, "body", p)?, &bp)?;
            req_str(body, "text", limits::INTERACTIVE_BODY_MAX, &bp)?;
        }
        "product"
        | "product_list"
        | "catalog_message"
        | "address_message"
        | "call_permission_request"
        | "voice_call" => {
            if let Some(body) = m.get("body") {
                let bp = p.key("body");
                req_str(obj(body, &bp)?, "text", limits::INTERACTIVE_BODY_MAX, &bp)?;
            }
        }
        other => {
            return Err(tp.err(Problem::UnknownType {
                value: short(other),
                expected: INTERACTIVE_TYPES,
            }));
        }
    }
    if let Some(h) = m.get("header") {
        if t == "location_request_message" {
            return Err(p
                .key("header")
                .err(Problem::NotAllowed("is not allowed for a location request")));
        }
        validate_header(h, &p.key("header"), t == "list")?;
    }
    if let Some(f) = m.get("footer") {
        let fp = p.key("footer");
        req_str(obj(f, &fp)?, "text", limits::FOOTER_MAX, &fp)?;
    }
    let action = obj(req(m, "action", p)?, &ap)?;
    match t {
        "button" => validate_buttons(action, &ap),
        "list" => validate_list(action, &ap),
        "cta_url" => {
            expect_name(action, "cta_url", &ap)?;
            let pp = ap.key("parameters");
            let params = obj(req(action, "parameters", &ap)?, &pp)?;
            req_str(params, "display_text", limits::BUTTON_TITLE_MAX, &pp)?;
            let url = req_str(params, "url", limits::URL_MAX, &pp)?;
            check_url(url, &pp.key("url"))
        }
        "flow" => validate_flow(action, &ap),
        "location_request_message" => expect_name(action, "send_location", &ap),
        _ => Ok(()),
    }
}

fn expect_name(action: &Map<String, Value>, name: &str, p: &Path) -> Result<()> {
    let np = p.key("name");
    let got = as_str(req(action, "name", p)?, &np)?;
    if got != name {
        return Err(np.err(Problem::Invalid(match name {
            "cta_url" => "must be \"cta_url\"",
            "flow" => "must be \"flow\"",
            _ => "must be \"send_location\"",
        })));
    }
    Ok(())
}

fn validate_header(v: &Value, p: &Path, text_only: bool) -> Result<()> {
    let m = obj(v, p)?;
    let tp = p.key("type");
    let t = as_str(req(m, "type", p)?, &tp)?;
    match t {
        "text" => {
            req_str(m, "text", limits::HEADER_TEXT_MAX, p)?;
        }
        "image" | "video" | "document" if !text_only => {
            let kp = p.key(t);
            let rules = if t == "document" {
                MediaRules::DOCUMENT
            } else {
                MediaRules::CAPTION
            };
            validate_media(req(m, t, p)?, &kp, rules)?;
        }
        "image" | "video" | "document" => {
            return Err(tp.err(Problem::NotAllowed("a list message header must be text")));
        }
        other => {
            return Err(tp.err(Problem::UnknownType {
                value: short(other),
                expected: "text, image, video, document",
            }));
        }
    }
    Ok(())
}

fn validate_buttons(action: &Map<String, Value>, p: &Path) -> Result<()> {
    let bp = p.key("buttons");
    let buttons = arr(req(action, "buttons", p)?, &bp)?;
    count(buttons.len(), 1, limits::REPLY_BUTTONS_MAX, &bp)?;
    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    for (i, b) in buttons.iter().enumerate() {
        let ip = bp.index(i);
        let bm = obj(b, &ip)?;
        let tp = ip.key("type");
        if as_str(req(bm, "type", &ip)?, &tp)? != "reply" {
            return Err(tp.err(Problem::Invalid("must be \"reply\"")));
        }
        let rp = ip.key("reply");
        let reply = obj(req(bm, "reply", &ip)?, &rp)?;
        let id = req_str(reply, "id", limits::BUTTON_ID_MAX, &rp)?;
        let title = req_str(reply, "title", limits::BUTTON_TITLE_MAX, &rp)?;
        if !ids.insert(id) {
            return Err(rp
                .key("id")
                .err(Problem::Invalid("must be unique among the buttons")));
        }
        if !titles.insert(title) {
            return Err(rp
                .key("title")
                .err(Problem::Invalid("must be unique among the buttons")));
        }
    }
    Ok(())
}

fn validate_list(action: &Map<String, Value>, p: &Path) -> Result<()> {
    req_str(action, "button", limits::BUTTON_TITLE_MAX, p)?;
    let sp = p.key("sections");
    let sections = arr(req(action, "sections", p)?, &sp)?;
    count(sections.len(), 1, limits::LIST_SECTIONS_MAX, &sp)?;
    let mut ids = HashSet::new();
    let mut total_rows = 0;
    for (i, s) in sections.iter().enumerate() {
        let ip = sp.index(i);
        let sm = obj(s, &ip)?;
        if sections.len() > 1 {
            req_str(sm, "title", limits::LIST_SECTION_TITLE_MAX, &ip)?;
        } else {
            opt_str(sm, "title", limits::LIST_SECTION_TITLE_MAX, false, &ip)?;
        }
        let rp = ip.key("rows");
        let rows = arr(req(sm, "rows", &ip)?, &rp)?;
        count(rows.len(), 1, limits::LIST_ROWS_MAX, &rp)?;
        total_rows += rows.len();
        if total_rows > limits::LIST_ROWS_MAX {
            return Err(sp.err(Problem::Invalid(
                "has more than 10 rows in total across its sections",
            )));
        }
        for (j, r) in rows.iter().enumerate() {
            let jp = rp.index(j);
            let rm = obj(r, &jp)?;
            let id = req_str(rm, "id", limits::LIST_ROW_ID_MAX, &jp)?;
            req_str(rm, "title", limits::LIST_ROW_TITLE_MAX, &jp)?;
            opt_str(
                rm,
                "description",
                limits::LIST_ROW_DESCRIPTION_MAX,
                false,
                &jp,
            )?;
            if !ids.insert(id) {
                return Err(jp
                    .key("id")
                    .err(Problem::Invalid("must be unique among the rows")));
            }
        }
    }
    Ok(())
}

fn validate_flow(action: &Map<String, Value>, p: &Path) -> Result<()> {
    expect_name(action, "flow", p)?;
    let pp = p.key("parameters");
    let params = obj(req(action, "parameters", p)?, &pp)?;
    req_str(params, "flow_message_version", 8, &pp)?;
    req_str(params, "flow_cta", limits::FLOW_CTA_MAX, &pp)?;
    let id = opt_str(params, "flow_id", limits::ID_MAX, false, &pp)?;
    let name = opt_str(params, "flow_name", limits::ID_MAX, false, &pp)?;
    if id.is_none() && name.is_none() {
        return Err(pp.err(Problem::Invalid("needs a \"flow_id\" or a \"flow_name\"")));
    }
    opt_str(params, "flow_token", limits::ID_MAX, false, &pp)?;
    if let Some(a) = opt_str(params, "flow_action", 32, false, &pp)?
        && a != "navigate"
        && a != "data_exchange"
    {
        return Err(pp.key("flow_action").err(Problem::Invalid(
            "must be \"navigate\" or \"data_exchange\"",
        )));
    }
    if let Some(mode) = opt_str(params, "mode", 32, false, &pp)?
        && mode != "draft"
        && mode != "published"
    {
        return Err(pp
            .key("mode")
            .err(Problem::Invalid("must be \"draft\" or \"published\"")));
    }
    if let Some(payload) = params.get("flow_action_payload") {
        let fp = pp.key("flow_action_payload");
        let fm = obj(payload, &fp)?;
        req_str(fm, "screen", limits::ID_MAX, &fp)?;
        if let Some(d) = fm.get("data") {
            obj(d, &fp.key("data"))?;
        }
    }
    Ok(())
}

const COMPONENT_TYPES: &str = "header, body, button, carousel, limited_time_offer";
const BUTTON_SUB_TYPES: &[&str] = &[
    "quick_reply",
    "url",
    "copy_code",
    "flow",
    "catalog",
    "mpm",
    "voice_call",
    "order_details",
    "spm",
];
const PARAMETER_TYPES: &str = "text, currency, date_time, image, document, video, location, payload, coupon_code, action, limited_time_offer, product, order_status, tap_target_configuration";

fn validate_template<'v>(v: &'v Value, p: &Path) -> Result<&'v str> {
    let m = obj(v, p)?;
    let name = req_str(m, "name", limits::TEMPLATE_NAME_MAX, p)?;
    let lp = p.key("language");
    let lang = obj(req(m, "language", p)?, &lp)?;
    req_str(lang, "code", 16, &lp)?;
    if let Some(policy) = opt_str(lang, "policy", 32, false, &lp)?
        && policy != "deterministic"
    {
        return Err(lp
            .key("policy")
            .err(Problem::Invalid("must be \"deterministic\" when given")));
    }
    if let Some(c) = m.get("components") {
        validate_components(c, &p.key("components"))?;
    }
    Ok(name)
}

fn validate_components(v: &Value, p: &Path) -> Result<()> {
    let comps = arr(v, p)?;
    count(comps.len(), 0, limits::TEMPLATE_COMPONENTS_MAX, p)?;
    for (i, c) in comps.iter().enumerate() {
        let ip = p.index(i);
        let cm = obj(c, &ip)?;
        let tp = ip.key("type");
        // Meta accepts the component type in any case ("BODY" as well as "body")
        let t = as_str(req(cm, "type", &ip)?, &tp)?.to_ascii_lowercase();
        match t.as_str() {
            "header" | "body" | "limited_time_offer" => {}
            "button" => {
                let sp = ip.key("sub_type");
                let sub = as_str(req(cm, "sub_type", &ip)?, &sp)?.to_ascii_lowercase();
                if !BUTTON_SUB_TYPES.contains(&sub.as_str()) {
                    return Err(sp.err(Problem::UnknownType {
                        value: short(&sub),
                        expected: "quick_reply, url, copy_code, flow, catalog, mpm, voice_call, order_details, spm",
                    }));
                }
                let xp = ip.key("index");
                let index = match req(cm, "index", &ip)? {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match index {
                    Some(n) if n <= 9 => {}
                    _ => {
                        return Err(
                            xp.err(Problem::Invalid("must be a button position from 0 to 9"))
                        );
                    }
                }
            }
            "carousel" => {
                let cp = ip.key("cards");
                let cards = arr(req(cm, "cards", &ip)?, &cp)?;
                count(cards.len(), 1, limits::CAROUSEL_CARDS_MAX, &cp)?;
                for (j, card) in cards.iter().enumerate() {
                    let jp = cp.index(j);
                    let card = obj(card, &jp)?;
                    if let Some(inner) = card.get("components") {
                        validate_components(inner, &jp.key("components"))?;
                    }
                }
                continue;
            }
            other => {
                return Err(tp.err(Problem::UnknownType {
                    value: short(other),
                    expected: COMPONENT_TYPES,
                }));
            }
        }
        if let Some(params) = cm.get("parameters") {
            validate_parameters(params, &ip.key("parameters"), t == "header")?;
        }
    }
    Ok(())
}

fn validate_parameters(v: &Value, p: &Path, in_header: bool) -> Result<()> {
    let params = arr(v, p)?;
    count(params.len(), 0, limits::TEMPLATE_PARAMETERS_MAX, p)?;
    let mut named = None;
    let mut names = HashSet::new();
    for (i, param) in params.iter().enumerate() {
        let ip = p.index(i);
        let pm = obj(param, &ip)?;
        let is_named = match pm.get("parameter_name") {
            None | Some(Value::Null) => false,
            Some(n) => {
                let np = ip.key("parameter_name");
                let name = as_str(n, &np)?;
                check_text(name, limits::PARAMETER_NAME_MAX, &np)?;
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(np.err(Problem::Invalid(
                        "may only contain lower-case letters, digits and underscores",
                    )));
                }
                if !names.insert(name) {
                    return Err(np.err(Problem::Invalid("must be unique within the component")));
                }
                true
            }
        };
        match named {
            None => named = Some(is_named),
            Some(prev) if prev != is_named => {
                return Err(ip.err(Problem::Invalid(
                    "mixes named (parameter_name) and positional parameters in one component",
                )));
            }
            Some(_) => {}
        }
        validate_parameter(pm, &ip, in_header)?;
    }
    Ok(())
}

fn validate_parameter(pm: &Map<String, Value>, p: &Path, in_header: bool) -> Result<()> {
    let tp = p.key("type");
    let t = as_str(req(pm, "type", p)?, &tp)?;
    let t = t.to_ascii_lowercase();
    match t.as_str() {
        "text" => {
            let max = if in_header {
                limits::HEADER_TEXT_MAX
            } else {
                limits::PARAMETER_TEXT_MAX
            };
            req_str(pm, "text", max, p)?;
        }
        "currency" => {
            let cp = p.key("currency");
            let c = obj(req(pm, "currency", p)?, &cp)?;
            req_str(c, "fallback_value", limits::PARAMETER_TEXT_MAX, &cp)?;
            let code = req_str(c, "code", 3, &cp)?;
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(cp.key("code").err(Problem::Invalid(
                    "must be a 3-letter ISO 4217 currency code",
                )));
            }
            let ap = cp.key("amount_1000");
            if !req(c, "amount_1000", &cp)?.is_i64() {
                return Err(ap.err(Problem::WrongType {
                    expected: "an integer (the amount times 1000)",
                }));
            }
        }
        "date_time" => {
            let dp = p.key("date_time");
            let d = obj(req(pm, "date_time", p)?, &dp)?;
            req_str(d, "fallback_value", limits::PARAMETER_TEXT_MAX, &dp)?;
        }
        "image" | "video" => {
            validate_media(req(pm, &t, p)?, &p.key(&t), MediaRules::CAPTION)?;
        }
        "document" => {
            validate_media(
                req(pm, "document", p)?,
                &p.key("document"),
                MediaRules::DOCUMENT,
            )?;
        }
        "location" => validate_location(req(pm, "location", p)?, &p.key("location"))?,
        "payload" => {
            req_str(pm, "payload", limits::PAYLOAD_MAX, p)?;
        }
        "coupon_code" => {
            req_str(pm, "coupon_code", limits::COUPON_CODE_MAX, p)?;
        }
        "action" => {
            obj(req(pm, "action", p)?, &p.key("action"))?;
        }
        // newer parameter types: only their presence is checked
        "limited_time_offer" | "product" | "order_status" | "tap_target_configuration" => {
            req(pm, &t, p)?;
        }
        other => {
            return Err(tp.err(Problem::UnknownType {
                value: short(other),
                expected: PARAMETER_TYPES,
            }));
        }
    }
    Ok(())
}
