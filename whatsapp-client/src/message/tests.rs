use super::*;
use serde_json::json;

fn err(v: Value) -> ValidationError {
    match validate_message(&v) {
        Ok(ok) => panic!("expected a validation error for {v}, got {ok:?}"),
        Err(e) => e,
    }
}

/// Asserts the error's path and that its message mentions `needle`.
fn rejects(v: Value, path: &str, needle: &str) {
    let e = err(v.clone());
    assert_eq!(e.path, path, "{v}: {e}");
    let text = e.to_string();
    assert!(
        text.contains(needle),
        "{v}: \"{text}\" should mention \"{needle}\""
    );
}

fn ok(v: Value) -> ValidatedMessage {
    match validate_message(&v) {
        Ok(m) => m,
        Err(e) => panic!("{v} should be valid: {e}"),
    }
}

fn button(id: &str, title: &str) -> Value {
    json!({"type":"reply","reply":{"id":id,"title":title}})
}

fn buttons_msg(buttons: Vec<Value>) -> Value {
    json!({"type":"interactive","interactive":{"type":"button","body":{"text":"Pick"},"action":{"buttons":buttons}}})
}

fn list_msg(sections: Value) -> Value {
    json!({"type":"interactive","interactive":{"type":"list","body":{"text":"Menu"},"action":{"button":"Open","sections":sections}}})
}

fn rows(n: usize, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id":format!("{prefix}{i}"),"title":format!("Row {i}")}))
        .collect()
}

fn template(components: Value) -> Value {
    json!({"type":"template","template":{"name":"order_update","language":{"code":"en_US"},"components":components}})
}

#[test]
fn valid_messages_are_summarised() {
    let m = ok(
        json!({"type":"text","text":{"body":"Hi","preview_url":true},"context":{"message_id":"wamid.1"}}),
    );
    assert_eq!(m.kind, MessageKind::Text);
    assert_eq!(m.reply_to.as_deref(), Some("wamid.1"));
    assert_eq!(m.preview, "Hi");

    let m = ok(json!({"type":"image","image":{"link":"https://example.com/a.png","caption":"A"}}));
    assert_eq!(
        m.media,
        Some(MediaRef::Link("https://example.com/a.png".into()))
    );
    assert!(m.kind.is_media());

    let m = ok(json!({"type":"document","document":{"id":"123","filename":"a.pdf","caption":"c"}}));
    assert_eq!(m.media, Some(MediaRef::Id("123".into())));

    let m = ok(template(
        json!([{"type":"body","parameters":[{"type":"text","text":"x"}]}]),
    ));
    assert_eq!(m.template_name.as_deref(), Some("order_update"));
    assert!(!m.kind.needs_open_window());

    // forward-compatible: unknown keys inside known objects are allowed
    ok(
        json!({"type":"text","text":{"body":"Hi","some_future_flag":1},"messaging_product":"whatsapp","recipient_type":"individual"}),
    );
    // the maximum body length is fine, counted in characters not bytes
    ok(json!({"type":"text","text":{"body":"é".repeat(4096)}}));
    ok(json!({"type":"location","location":{"latitude":"37.48","longitude":-122.14}}));
    ok(json!({"type":"reaction","reaction":{"message_id":"wamid.1","emoji":""}}));
}

#[test]
fn message_shape_rejections() {
    rejects(json!("hi"), "", "must be a JSON object");
    rejects(json!({}), "type", "is required");
    rejects(
        json!({"type":null,"text":{"body":"x"}}),
        "type",
        "is required",
    );
    rejects(json!({"type":1}), "type", "must be a string");
    rejects(
        json!({"type":"txt","text":{"body":"x"}}),
        "type",
        "unsupported type \"txt\"",
    );
    rejects(json!({"type":"text"}), "text", "is required");
    rejects(
        json!({"type":"text","text":"Hi"}),
        "text",
        "must be an object",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"image":{"id":"1"}}),
        "image",
        "another message type",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"to":"1555"}),
        "to",
        "passed separately",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"recipient":"US.1"}),
        "recipient",
        "passed separately",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"messaging_product":"sms"}),
        "messaging_product",
        "whatsapp",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"recipient_type":"group"}),
        "recipient_type",
        "individual",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"context":"wamid"}),
        "context",
        "object",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"context":{}}),
        "context.message_id",
        "required",
    );
    rejects(
        json!({"type":"text","text":{"body":"x"},"biz_opaque_callback_data":"y".repeat(513)}),
        "biz_opaque_callback_data",
        "too long",
    );
}

#[test]
fn text_rejections() {
    rejects(json!({"type":"text","text":{}}), "text.body", "is required");
    rejects(
        json!({"type":"text","text":{"body":5}}),
        "text.body",
        "must be a string",
    );
    rejects(
        json!({"type":"text","text":{"body":"  "}}),
        "text.body",
        "must not be empty",
    );
    rejects(
        json!({"type":"text","text":{"body":"a".repeat(4097)}}),
        "text.body",
        "too long (4097 characters, at most 4096)",
    );
    rejects(
        json!({"type":"text","text":{"body":"x","preview_url":"yes"}}),
        "text.preview_url",
        "true or false",
    );
}

#[test]
fn media_rejections() {
    rejects(
        json!({"type":"image","image":{}}),
        "image",
        "id\" or a \"link",
    );
    rejects(
        json!({"type":"image","image":{"id":"1","link":"https://x/y"}}),
        "image",
        "not both",
    );
    rejects(
        json!({"type":"image","image":{"link":"ftp://x/y"}}),
        "image.link",
        "http",
    );
    rejects(
        json!({"type":"image","image":{"link":"https://x/a b"}}),
        "image.link",
        "without spaces",
    );
    rejects(
        json!({"type":"image","image":{"id":7}}),
        "image.id",
        "must be a string",
    );
    rejects(
        json!({"type":"image","image":{"id":"1","caption":"c".repeat(1025)}}),
        "image.caption",
        "at most 1024",
    );
    rejects(
        json!({"type":"audio","audio":{"id":"1","caption":"c"}}),
        "audio.caption",
        "not allowed",
    );
    rejects(
        json!({"type":"sticker","sticker":{"id":"1","caption":"c"}}),
        "sticker.caption",
        "not allowed",
    );
    rejects(
        json!({"type":"video","video":{"id":"1","filename":"v.mp4"}}),
        "video.filename",
        "only allowed for documents",
    );
}

#[test]
fn location_and_contacts_rejections() {
    rejects(
        json!({"type":"location","location":{"longitude":1}}),
        "location.latitude",
        "required",
    );
    rejects(
        json!({"type":"location","location":{"latitude":"north","longitude":1}}),
        "location.latitude",
        "a number",
    );
    rejects(
        json!({"type":"location","location":{"latitude":91,"longitude":1}}),
        "location.latitude",
        "out of range",
    );
    rejects(
        json!({"type":"location","location":{"latitude":1,"longitude":-181}}),
        "location.longitude",
        "out of range",
    );
    rejects(
        json!({"type":"contacts","contacts":[]}),
        "contacts",
        "too few",
    );
    rejects(
        json!({"type":"contacts","contacts":{}}),
        "contacts",
        "an array",
    );
    rejects(
        json!({"type":"contacts","contacts":[{}]}),
        "contacts[0].name",
        "required",
    );
    rejects(
        json!({"type":"contacts","contacts":[{"name":{"first_name":"A"}}]}),
        "contacts[0].name.formatted_name",
        "required",
    );
    rejects(
        json!({"type":"contacts","contacts":[{"name":{"formatted_name":"A"},"phones":["1"]}]}),
        "contacts[0].phones[0]",
        "an object",
    );
    rejects(
        json!({"type":"contacts","contacts":[{"name":{"formatted_name":"A"},"birthday":"1/2/2000"}]}),
        "contacts[0].birthday",
        "YYYY-MM-DD",
    );
}

#[test]
fn reaction_rejections_and_emoji_heuristic() {
    rejects(
        json!({"type":"reaction","reaction":{"emoji":"👍"}}),
        "reaction.message_id",
        "required",
    );
    rejects(
        json!({"type":"reaction","reaction":{"message_id":"m"}}),
        "reaction.emoji",
        "required",
    );
    for bad in [
        "ok",
        "👍👍",
        "a👍",
        "👍 ",
        "1",
        "中",
        "\u{200D}👍",
        "👍\u{200D}",
        "🇺",
    ] {
        rejects(
            json!({"type":"reaction","reaction":{"message_id":"m","emoji":bad}}),
            "reaction.emoji",
            "single emoji",
        );
    }
    for good in [
        "👍",
        "❤️",
        "😀",
        "👍🏽",
        "🇺🇸",
        "1️⃣",
        "#️⃣",
        "👨‍👩‍👧‍👦",
        "🏴󠁧󠁢󠁥󠁮󠁧󠁿",
        "™️",
        "✅",
        "🫠",
    ] {
        assert!(is_single_emoji(good), "{good} should be a single emoji");
    }
}

#[test]
fn interactive_button_rejections() {
    ok(buttons_msg(vec![
        button("a", "Yes"),
        button("b", "No"),
        button("c", "Maybe"),
    ]));
    rejects(buttons_msg(vec![]), "interactive.action.buttons", "too few");
    rejects(
        buttons_msg(vec![
            button("a", "1"),
            button("b", "2"),
            button("c", "3"),
            button("d", "4"),
        ]),
        "interactive.action.buttons",
        "too many entries (4, at most 3)",
    );
    rejects(
        buttons_msg(vec![button("a", "This title is far too long")]),
        "interactive.action.buttons[0].reply.title",
        "at most 20",
    );
    rejects(
        buttons_msg(vec![button("a", "Yes"), button("a", "No")]),
        "interactive.action.buttons[1].reply.id",
        "unique",
    );
    rejects(
        buttons_msg(vec![button("a", "Yes"), button("b", "Yes")]),
        "interactive.action.buttons[1].reply.title",
        "unique",
    );
    rejects(
        buttons_msg(vec![json!({"type":"url","reply":{"id":"a","title":"b"}})]),
        "interactive.action.buttons[0].type",
        "reply",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","action":{"buttons":[button("a","b")]}}}),
        "interactive.body",
        "required",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","body":{"text":"b".repeat(1025)},"action":{"buttons":[button("a","b")]}}}),
        "interactive.body.text",
        "at most 1024",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","body":{"text":"b"},"footer":{"text":"f".repeat(61)},"action":{"buttons":[button("a","b")]}}}),
        "interactive.footer.text",
        "at most 60",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","header":{"type":"text","text":"h".repeat(61)},"body":{"text":"b"},"action":{"buttons":[button("a","b")]}}}),
        "interactive.header.text",
        "at most 60",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","header":{"type":"gif"},"body":{"text":"b"},"action":{"buttons":[button("a","b")]}}}),
        "interactive.header.type",
        "unsupported type",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"carousel","body":{"text":"b"},"action":{}}}),
        "interactive.type",
        "unsupported type \"carousel\"",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"button","body":{"text":"b"}}}),
        "interactive.action",
        "required",
    );
}

#[test]
fn interactive_list_rejections() {
    ok(list_msg(
        json!([{"title":"A","rows":rows(5,"a")},{"title":"B","rows":rows(5,"b")}]),
    ));
    rejects(
        list_msg(json!([])),
        "interactive.action.sections",
        "too few",
    );
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"title":format!("S{i}"),"rows":[{"id":format!("r{i}"),"title":"t"}]}))
        .collect();
    rejects(
        list_msg(json!(eleven)),
        "interactive.action.sections",
        "at most 10",
    );
    rejects(
        list_msg(json!([{"rows":rows(11,"a")}])),
        "interactive.action.sections[0].rows",
        "too many entries (11, at most 10)",
    );
    rejects(
        list_msg(json!([{"title":"A","rows":rows(6,"a")},{"title":"B","rows":rows(5,"b")}])),
        "interactive.action.sections",
        "more than 10 rows in total",
    );
    rejects(
        list_msg(json!([{"rows":rows(1,"a")},{"title":"B","rows":rows(1,"b")}])),
        "interactive.action.sections[0].title",
        "required",
    );
    rejects(
        list_msg(json!([{"rows":[{"id":"a","title":"t".repeat(25)}]}])),
        "interactive.action.sections[0].rows[0].title",
        "at most 24",
    );
    rejects(
        list_msg(json!([{"rows":[{"id":"a","title":"t","description":"d".repeat(73)}]}])),
        "interactive.action.sections[0].rows[0].description",
        "at most 72",
    );
    rejects(
        list_msg(json!([{"title":"A","rows":rows(1,"x")},{"title":"B","rows":rows(1,"x")}])),
        "interactive.action.sections[1].rows[0].id",
        "unique",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"list","body":{"text":"Menu"},"action":{"sections":[{"rows":rows(1,"a")}]}}}),
        "interactive.action.button",
        "required",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"list","header":{"type":"image","image":{"id":"1"}},"body":{"text":"Menu"},"action":{"button":"b","sections":[{"rows":rows(1,"a")}]}}}),
        "interactive.header.type",
        "must be text",
    );
}

#[test]
fn interactive_cta_flow_location_rejections() {
    let cta = |params: Value, name: &str| json!({"type":"interactive","interactive":{"type":"cta_url","body":{"text":"Go"},"action":{"name":name,"parameters":params}}});
    ok(cta(
        json!({"display_text":"Open","url":"https://example.com"}),
        "cta_url",
    ));
    rejects(
        cta(
            json!({"display_text":"Open","url":"https://example.com"}),
            "url",
        ),
        "interactive.action.name",
        "cta_url",
    );
    rejects(
        cta(
            json!({"display_text":"Open","url":"example.com"}),
            "cta_url",
        ),
        "interactive.action.parameters.url",
        "http",
    );
    rejects(
        cta(
            json!({"display_text":"x".repeat(21),"url":"https://e.com"}),
            "cta_url",
        ),
        "interactive.action.parameters.display_text",
        "at most 20",
    );

    let flow = |params: Value| json!({"type":"interactive","interactive":{"type":"flow","body":{"text":"Sign up"},"action":{"name":"flow","parameters":params}}});
    ok(flow(
        json!({"flow_message_version":"3","flow_id":"123","flow_cta":"Start","flow_action":"navigate","flow_action_payload":{"screen":"WELCOME","data":{"a":1}}}),
    ));
    rejects(
        flow(json!({"flow_message_version":"3","flow_cta":"Start"})),
        "interactive.action.parameters",
        "flow_id",
    );
    rejects(
        flow(
            json!({"flow_message_version":"3","flow_id":"1","flow_cta":"Start","flow_action":"jump"}),
        ),
        "interactive.action.parameters.flow_action",
        "navigate",
    );
    rejects(
        flow(json!({"flow_id":"1","flow_cta":"Start"})),
        "interactive.action.parameters.flow_message_version",
        "required",
    );
    rejects(
        flow(
            json!({"flow_message_version":"3","flow_id":"1","flow_cta":"Start","flow_action_payload":{"data":{}}}),
        ),
        "interactive.action.parameters.flow_action_payload.screen",
        "required",
    );

    ok(
        json!({"type":"interactive","interactive":{"type":"location_request_message","body":{"text":"Where are you?"},"action":{"name":"send_location"}}}),
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"location_request_message","body":{"text":"Where?"},"action":{"name":"location"}}}),
        "interactive.action.name",
        "send_location",
    );
    rejects(
        json!({"type":"interactive","interactive":{"type":"location_request_message","header":{"type":"text","text":"h"},"body":{"text":"Where?"},"action":{"name":"send_location"}}}),
        "interactive.header",
        "not allowed",
    );
}

#[test]
fn template_rejections() {
    rejects(
        json!({"type":"template","template":{"language":{"code":"en"}}}),
        "template.name",
        "required",
    );
    rejects(
        json!({"type":"template","template":{"name":"t"}}),
        "template.language",
        "required",
    );
    rejects(
        json!({"type":"template","template":{"name":"t","language":"en"}}),
        "template.language",
        "an object",
    );
    rejects(
        json!({"type":"template","template":{"name":"t","language":{"code":"en","policy":"fallback"}}}),
        "template.language.policy",
        "deterministic",
    );
    rejects(template(json!({})), "template.components", "an array");
    rejects(
        template(json!([{"parameters":[]}])),
        "template.components[0].type",
        "required",
    );
    rejects(
        template(json!([{"type":"footer_x"}])),
        "template.components[0].type",
        "unsupported type",
    );
    rejects(
        template(json!([{"type":"body"},{"type":"body","parameters":[{"type":"txt","text":"x"}]}])),
        "template.components[1].parameters[0].type",
        "unsupported type \"txt\"",
    );
    rejects(
        template(json!([{"type":"body","parameters":[{"text":"x"}]}])),
        "template.components[0].parameters[0].type",
        "required",
    );
    rejects(
        template(json!([{"type":"body","parameters":[{"type":"text"}]}])),
        "template.components[0].parameters[0].text",
        "required",
    );
    rejects(
        template(json!([{"type":"header","parameters":[{"type":"text","text":"h".repeat(61)}]}])),
        "template.components[0].parameters[0].text",
        "at most 60",
    );
    rejects(
        template(
            json!([{"type":"body","parameters":[{"type":"currency","currency":{"fallback_value":"$1","code":"DOLLAR","amount_1000":1000}}]}]),
        ),
        "template.components[0].parameters[0].currency.code",
        "at most 3",
    );
    rejects(
        template(
            json!([{"type":"body","parameters":[{"type":"currency","currency":{"fallback_value":"$1","code":"USD","amount_1000":"1000"}}]}]),
        ),
        "template.components[0].parameters[0].currency.amount_1000",
        "an integer",
    );
    rejects(
        template(json!([{"type":"body","parameters":[{"type":"date_time","date_time":{}}]}])),
        "template.components[0].parameters[0].date_time.fallback_value",
        "required",
    );
    rejects(
        template(json!([{"type":"header","parameters":[{"type":"image","image":{}}]}])),
        "template.components[0].parameters[0].image",
        "link",
    );
    rejects(
        template(
            json!([{"type":"header","parameters":[{"type":"location","location":{"latitude":1}}]}]),
        ),
        "template.components[0].parameters[0].location.longitude",
        "required",
    );
    rejects(
        template(
            json!([{"type":"button","index":"0","parameters":[{"type":"payload","payload":"x"}]}]),
        ),
        "template.components[0].sub_type",
        "required",
    );
    rejects(
        template(json!([{"type":"button","sub_type":"link","index":"0"}])),
        "template.components[0].sub_type",
        "unsupported type",
    );
    rejects(
        template(json!([{"type":"button","sub_type":"quick_reply","index":"10"}])),
        "template.components[0].index",
        "0 to 9",
    );
    rejects(
        template(
            json!([{"type":"button","sub_type":"copy_code","index":0,"parameters":[{"type":"coupon_code","coupon_code":"TOO-LONG-A-COUPON"}]}]),
        ),
        "template.components[0].parameters[0].coupon_code",
        "at most 15",
    );
    rejects(
        template(
            json!([{"type":"button","sub_type":"flow","index":0,"parameters":[{"type":"action","action":"x"}]}]),
        ),
        "template.components[0].parameters[0].action",
        "an object",
    );
    rejects(
        template(
            json!([{"type":"body","parameters":[{"type":"text","text":"a","parameter_name":"first"},{"type":"text","text":"b"}]}]),
        ),
        "template.components[0].parameters[1]",
        "mixes named",
    );
    rejects(
        template(
            json!([{"type":"body","parameters":[{"type":"text","text":"a","parameter_name":"First Name"}]}]),
        ),
        "template.components[0].parameters[0].parameter_name",
        "lower-case",
    );
    rejects(
        template(
            json!([{"type":"body","parameters":[{"type":"text","text":"a","parameter_name":"n"},{"type":"text","text":"b","parameter_name":"n"}]}]),
        ),
        "template.components[0].parameters[1].parameter_name",
        "unique",
    );
    rejects(
        template(
            json!([{"type":"carousel","cards":[{"card_index":0,"components":[{"type":"body","parameters":[{"type":"txt"}]}]}]}]),
        ),
        "template.components[0].cards[0].components[0].parameters[0].type",
        "unsupported type",
    );
}

#[test]
fn send_body_is_compact_and_uses_the_right_recipient_field() {
    let msg = json!({"type":"text","text":{"body":"Hi"}});
    let phone = Recipient::parse("+16505551234").unwrap();
    let body = build_send_body(&phone, &msg, Some("out-1")).unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.starts_with(r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"16505551234","type":"text","#),
        "{text}"
    );
    assert!(
        text.ends_with(r#","biz_opaque_callback_data":"out-1"}"#),
        "{text}"
    );
    assert!(!text.contains(' ') && !text.contains('\n'));

    let bsuid = Recipient::parse("US.13491208655302741918").unwrap();
    let body = build_send_body(&bsuid, &msg, None).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["recipient"], "US.13491208655302741918");
    assert!(v.get("to").is_none());
    assert!(v.get("biz_opaque_callback_data").is_none());

    // the argument replaces callback data inside the message; envelope keys are written once
    let msg = json!({"type":"text","text":{"body":"Hi"},"biz_opaque_callback_data":"old","messaging_product":"whatsapp"});
    let body = build_send_body(&phone, &msg, Some("new")).unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    assert_eq!(text.matches("biz_opaque_callback_data").count(), 1);
    assert_eq!(text.matches("messaging_product").count(), 1);
    assert!(text.contains(r#""biz_opaque_callback_data":"new""#));
    // kept from the message when no argument is given
    let body = build_send_body(&phone, &msg, None).unwrap();
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains(r#""biz_opaque_callback_data":"old""#)
    );

    let e = build_send_body(&phone, &json!({"type":"text"}), None).unwrap_err();
    assert_eq!(e.to_string(), "text: is required");
    let e = build_send_body(
        &phone,
        &json!({"type":"text","text":{"body":"x"}}),
        Some(&"x".repeat(600)),
    )
    .unwrap_err();
    assert_eq!(e.path, "biz_opaque_callback_data");
}

#[test]
fn mark_read_bodies() {
    let v: Value = serde_json::from_slice(&mark_read_body("wamid.X", false)).unwrap();
    assert_eq!(
        v,
        json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.X"})
    );
    let v: Value = serde_json::from_slice(&mark_read_body("wamid.X", true)).unwrap();
    assert_eq!(v["typing_indicator"], json!({"type":"text"}));
}

#[test]
fn error_display_names_the_path() {
    let e = err(template(
        json!([{"type":"body"},{"type":"body","parameters":[{"type":7}]}]),
    ));
    assert_eq!(
        e.to_string(),
        "template.components[1].parameters[0].type: must be a string"
    );
    let e = err(json!([]));
    assert_eq!(e.to_string(), "message: must be a JSON object");
}
