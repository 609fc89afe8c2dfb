//! Short one-line previews of messages for conversation lists.
//!
//! Works on outbound message objects and on inbound webhook message objects alike (they share
//! the `type` + payload-under-the-type's-name shape), and never fails: anything unrecognised
//! previews as `[type]`.

use serde_json::Value;

/// The longest preview, in characters (an ellipsis marks truncation).
pub const PREVIEW_MAX_CHARS: usize = 100;

/// A short text preview: the body of a text, `[image] caption`, `[template] name`, and so on.
pub fn preview(message: &Value) -> String {
    let t = message.get("type").and_then(Value::as_str).unwrap_or("");
    let payload = message.get(t);
    let field = |key: &str| {
        payload
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let raw: String = match t {
        "text" => field("body").unwrap_or("").to_owned(),
        "image" | "video" | "sticker" | "audio" => tagged(
            if t == "audio"
                && payload
                    .and_then(|p| p.get("voice"))
                    .and_then(Value::as_bool)
                    == Some(true)
            {
                "voice"
            } else {
                t
            },
            field("caption"),
        ),
        "document" => tagged("document", field("caption").or_else(|| field("filename"))),
        "location" => tagged("location", field("name").or_else(|| field("address"))),
        "contacts" => {
            let list = message.get("contacts").and_then(Value::as_array);
            let first = list
                .and_then(|l| l.first())
                .and_then(|c| c.pointer("/name/formatted_name"))
                .and_then(Value::as_str);
            let more = list.map_or(0, |l| l.len().saturating_sub(1));
            let label = first.map(|n| {
                if more > 0 {
                    format!("{n} +{more}")
                } else {
                    n.to_owned()
                }
            });
            tagged("contact", label.as_deref())
        }
        "interactive" => interactive(payload),
        "button" => tagged("button", field("text")),
        "reaction" => match field("emoji") {
            Some(e) => format!("[reaction] {e}"),
            None => "[reaction removed]".to_owned(),
        },
        "template" => tagged("template", field("name")),
        "order" => "[order]".to_owned(),
        "system" => field("body").unwrap_or("[system]").to_owned(),
        "" => "[message]".to_owned(),
        other => format!("[{other}]"),
    };
    clip(&raw)
}

fn tagged(tag: &str, text: Option<&str>) -> String {
    match text {
        Some(t) => format!("[{tag}] {t}"),
        None => format!("[{tag}]"),
    }
}

fn interactive(payload: Option<&Value>) -> String {
    let Some(p) = payload else {
        return "[interactive]".to_owned();
    };
    let s = |ptr: &str| {
        p.pointer(ptr)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    match p.get("type").and_then(Value::as_str) {
        // inbound replies to our buttons and lists
        Some("button_reply") => s("/button_reply/title")
            .unwrap_or("[button reply]")
            .to_owned(),
        Some("list_reply") => s("/list_reply/title").unwrap_or("[list reply]").to_owned(),
        Some("nfm_reply") => tagged("flow response", s("/nfm_reply/body")),
        // outbound interactive messages: the body is what the user reads first
        _ => s("/body/text")
            .or_else(|| s("/header/text"))
            .map(str::to_owned)
            .unwrap_or_else(|| "[interactive]".to_owned()),
    }
}

/// Collapses whitespace (newlines included) and cuts to [`PREVIEW_MAX_CHARS`].
fn clip(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(PREVIEW_MAX_CHARS * 4));
    let mut n = 0;
    for word in s.split_whitespace() {
        if n > 0 {
            out.push(' ');
            n += 1;
        }
        out.push_str(word);
        n += word.chars().count();
        if n > PREVIEW_MAX_CHARS {
            break;
        }
    }
    if n > PREVIEW_MAX_CHARS {
        let cut = out
            .char_indices()
            .nth(PREVIEW_MAX_CHARS - 1)
            .map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_by_type() {
        let cases = [
            (
                json!({"type":"text","text":{"body":"Hello\n  there"}}),
                "Hello there",
            ),
            (
                json!({"type":"image","image":{"id":"1","caption":"Look"}}),
                "[image] Look",
            ),
            (json!({"type":"image","image":{"id":"1"}}), "[image]"),
            (
                json!({"type":"audio","audio":{"id":"1","voice":true}}),
                "[voice]",
            ),
            (
                json!({"type":"document","document":{"id":"1","filename":"a.pdf"}}),
                "[document] a.pdf",
            ),
            (json!({"type":"sticker","sticker":{"id":"1"}}), "[sticker]"),
            (
                json!({"type":"location","location":{"latitude":1,"longitude":2,"name":"HQ"}}),
                "[location] HQ",
            ),
            (
                json!({"type":"contacts","contacts":[{"name":{"formatted_name":"Ann"}},{"name":{"formatted_name":"Bob"}}]}),
                "[contact] Ann +1",
            ),
            (
                json!({"type":"interactive","interactive":{"type":"button","body":{"text":"Pick one"}}}),
                "Pick one",
            ),
            (
                json!({"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"y","title":"Yes"}}}),
                "Yes",
            ),
            (
                json!({"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"r","title":"Row"}}}),
                "Row",
            ),
            (
                json!({"type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"response_json":"{}"}}}),
                "[flow response]",
            ),
            (
                json!({"type":"button","button":{"text":"Stop","payload":"STOP"}}),
                "[button] Stop",
            ),
            (
                json!({"type":"reaction","reaction":{"message_id":"m","emoji":"👍"}}),
                "[reaction] 👍",
            ),
            (
                json!({"type":"reaction","reaction":{"message_id":"m","emoji":""}}),
                "[reaction removed]",
            ),
            (
                json!({"type":"template","template":{"name":"order_update","language":{"code":"en"}}}),
                "[template] order_update",
            ),
            (json!({"type":"order","order":{}}), "[order]"),
            (json!({"type":"unsupported","errors":[]}), "[unsupported]"),
            (
                json!({"type":"system","system":{"body":"User changed number"}}),
                "User changed number",
            ),
            (json!(42), "[message]"),
        ];
        for (v, want) in cases {
            assert_eq!(preview(&v), want, "{v}");
        }
    }

    #[test]
    fn long_previews_are_clipped() {
        let body = "x".repeat(500);
        let p = preview(&json!({"type":"text","text":{"body":body}}));
        assert_eq!(p.chars().count(), PREVIEW_MAX_CHARS);
        assert!(p.ends_with('…'));
        let exact = "y".repeat(PREVIEW_MAX_CHARS);
        assert_eq!(
            preview(&json!({"type":"text","text":{"body":exact.clone()}})),
            exact
        );
    }
}
