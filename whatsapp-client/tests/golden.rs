//! Each outbound message type, built with the typed model, must produce exactly the request body
//! in `tests/golden/<name>.json` (written from Meta's documented request examples), and the
//! message part of every golden file must pass the validator.

use serde_json::{Value, json};
use std::path::PathBuf;
use whatsapp_client::Recipient;
use whatsapp_client::message::*;

const PHONE: &str = "+1 650 555 1234";

fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn phone() -> Recipient {
    Recipient::parse(PHONE).unwrap()
}

fn check(name: &str, msg: OutboundMessage) {
    let body = msg.to_body().unwrap_or_else(|e| panic!("{name}: {e}"));
    // compact: no whitespace outside strings
    let reparsed: Value = serde_json::from_slice(&body).unwrap();
    // compact: re-serialising the parsed body (compact) gives the same length
    assert_eq!(
        body.len(),
        serde_json::to_vec(&reparsed).unwrap().len(),
        "{name}: not compact"
    );
    let want = golden(name);
    assert_eq!(
        reparsed, want,
        "{name}: built body differs from the golden file"
    );
    // the envelope comes first, in the documented order
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with(r#"{"messaging_product":"whatsapp","recipient_type":"individual","#),
        "{name}: {text}"
    );
    // the typed model round-trips
    let content: Content = serde_json::from_value(msg.content.to_value()).unwrap();
    assert_eq!(
        content, msg.content,
        "{name}: typed model does not round-trip"
    );
}

fn text_body(s: &str) -> BodyText {
    BodyText { text: s.into() }
}

fn footer(s: &str) -> Option<FooterText> {
    Some(FooterText { text: s.into() })
}

#[test]
fn text() {
    check(
        "text",
        OutboundMessage::new(
            phone(),
            Content::Text {
                text: Text {
                    body: "As requested, here's the link to our latest product: https://www.meta.com/quest/quest-3/".into(),
                    preview_url: Some(true),
                },
            },
        ),
    );
}

#[test]
fn text_reply_to_bsuid() {
    check(
        "text_reply_to_bsuid",
        OutboundMessage::new(
            Recipient::parse("US.13491208655302741918").unwrap(),
            Content::text("Thanks, your order ships tomorrow."),
        )
        .reply_to("wamid.HBgLMTY0NjcwNDM1OTUVAgASGBQzQTdCNTg5RjY1MEMyRjlGMjRGNgA=")
        .with_callback_data("0b9c1e7e-6a0e-4a43-9f3c-1d2f3a4b5c6d"),
    );
}

#[test]
fn media() {
    check(
        "image_id",
        OutboundMessage::new(
            phone(),
            Content::Image {
                image: Media::id("1479537139650973").with_caption("The best succulent ever?"),
            },
        ),
    );
    check(
        "image_link",
        OutboundMessage::new(
            phone(),
            Content::Image {
                image: Media::link(
                    "https://upload.wikimedia.org/wikipedia/commons/thumb/1/1e/Succulent.jpg/640px-Succulent.jpg",
                ),
            },
        ),
    );
    check(
        "audio",
        OutboundMessage::new(
            phone(),
            Content::Audio {
                audio: Media::id("1013859600285441"),
            },
        ),
    );
    check(
        "video",
        OutboundMessage::new(
            phone(),
            Content::Video {
                video: Media::link("https://example.com/media/lucky-shrub-care.mp4")
                    .with_caption("A succulent eclipse!"),
            },
        ),
    );
    check(
        "document",
        OutboundMessage::new(
            phone(),
            Content::Document {
                document: Media::id("1376223850470843")
                    .with_caption("Lucky Shrub Invoice")
                    .with_filename("lucky-shrub-invoice.pdf"),
            },
        ),
    );
    check(
        "sticker",
        OutboundMessage::new(
            phone(),
            Content::Sticker {
                sticker: Media::id("798882015472548"),
            },
        ),
    );
}

#[test]
fn location() {
    check(
        "location",
        OutboundMessage::new(
            phone(),
            Content::Location {
                location: Location {
                    latitude: 37.44216251868683,
                    longitude: -122.16153582049394,
                    name: Some("Philz Coffee".into()),
                    address: Some("101 Forest Ave, Palo Alto, CA 94301".into()),
                },
            },
        ),
    );
}

#[test]
fn contacts() {
    let contact = Contact {
        name: ContactName {
            formatted_name: "Barbara J. Johnson".into(),
            first_name: Some("Barbara".into()),
            last_name: Some("Johnson".into()),
            middle_name: Some("Joana".into()),
            suffix: Some("Esq.".into()),
            prefix: Some("Dr.".into()),
        },
        addresses: vec![ContactAddress {
            street: Some("1 Lucky Shrub Way".into()),
            city: Some("Menlo Park".into()),
            state: Some("CA".into()),
            zip: Some("94025".into()),
            country: Some("United States".into()),
            country_code: Some("US".into()),
            kind: Some("WORK".into()),
        }],
        birthday: Some("1999-01-23".into()),
        emails: vec![ContactEmail {
            email: Some("bjohnson@luckyshrub.com".into()),
            kind: Some("WORK".into()),
        }],
        org: Some(ContactOrg {
            company: Some("Lucky Shrub".into()),
            department: Some("Legal".into()),
            title: Some("Lead Counsel".into()),
        }),
        phones: vec![
            ContactPhone {
                phone: Some("+16505559999".into()),
                kind: Some("HOME".into()),
                wa_id: None,
            },
            ContactPhone {
                phone: Some("+19195551112".into()),
                kind: Some("WORK".into()),
                wa_id: Some("19195551112".into()),
            },
        ],
        urls: vec![ContactUrl {
            url: Some("https://www.luckyshrub.com".into()),
            kind: Some("WORK".into()),
        }],
    };
    check(
        "contacts",
        OutboundMessage::new(
            phone(),
            Content::Contacts {
                contacts: vec![contact],
            },
        ),
    );
}

#[test]
fn interactive_button() {
    check(
        "interactive_button",
        OutboundMessage::new(
            phone(),
            Content::Interactive {
                interactive: Interactive::Button {
                    header: Some(Header::Image {
                        image: Media::id("2762702990552401"),
                    }),
                    body: text_body(
                        "Hi Pablo! Your gardening workshop is scheduled for 9am tomorrow. Use the buttons if you need to reschedule. Thank you!",
                    ),
                    footer: footer("Lucky Shrub: Your gateway to succulents!"),
                    action: ButtonAction {
                        buttons: vec![
                            ReplyButton::new("change-button", "Change"),
                            ReplyButton::new("cancel-button", "Cancel"),
                        ],
                    },
                },
            },
        ),
    );
}

#[test]
fn interactive_list() {
    let row = |id: &str, title: &str, d: &str| ListRow {
        id: id.into(),
        title: title.into(),
        description: Some(d.into()),
    };
    check(
        "interactive_list",
        OutboundMessage::new(
            phone(),
            Content::Interactive {
                interactive: Interactive::List {
                    header: Some(Header::Text {
                        text: "Choose Shipping Option".into(),
                    }),
                    body: text_body("Which shipping option do you prefer?"),
                    footer: footer("Lucky Shrub: Your gateway to succulents"),
                    action: ListAction {
                        button: "Shipping Options".into(),
                        sections: vec![
                            ListSection {
                                title: Some("I want it ASAP!".into()),
                                rows: vec![
                                    row(
                                        "priority_express",
                                        "Priority Mail Express",
                                        "Next Day to 2 Days",
                                    ),
                                    row("priority_mail", "Priority Mail", "1–3 Days"),
                                ],
                            },
                            ListSection {
                                title: Some("I can wait a bit".into()),
                                rows: vec![
                                    row(
                                        "usps_ground_advantage",
                                        "USPS Ground Advantage",
                                        "2–5 Days",
                                    ),
                                    row("media_mail", "Media Mail", "2–8 Days"),
                                ],
                            },
                        ],
                    },
                },
            },
        ),
    );
}

#[test]
fn interactive_cta_url() {
    check(
        "interactive_cta_url",
        OutboundMessage::new(
            phone(),
            Content::Interactive {
                interactive: Interactive::CtaUrl {
                    header: Some(Header::Text { text: "Available Dates".into() }),
                    body: text_body("Tap the button below to see available dates."),
                    footer: footer("Dates subject to change."),
                    action: NamedAction::CtaUrl {
                        parameters: CtaUrlParameters {
                            display_text: "See Dates".into(),
                            url: "https://www.luckyshrub.com?clickID=kqDGWd24Q5TRwoEQTICY7W1JKoXvaZOXWAS7h1P76s0R7Paec4".into(),
                        },
                    },
                },
            },
        ),
    );
}

#[test]
fn interactive_flow() {
    check(
        "interactive_flow",
        OutboundMessage::new(
            phone(),
            Content::Interactive {
                interactive: Interactive::Flow {
                    header: Some(Header::Text {
                        text: "Flow message header".into(),
                    }),
                    body: text_body("Flow message body"),
                    footer: footer("Flow message footer"),
                    action: NamedAction::Flow {
                        parameters: FlowParameters {
                            flow_message_version: "3".into(),
                            flow_token: Some("AQAAAAACS5FpgQ_cAAAAAD0QI3s.".into()),
                            flow_id: Some("1234567890".into()),
                            flow_name: None,
                            flow_cta: "Book!".into(),
                            flow_action: Some("navigate".into()),
                            flow_action_payload: Some(FlowActionPayload {
                                screen: "SCREEN_NAME".into(),
                                data: Some(
                                    json!({"product_name":"name","product_description":"description","product_price":100}),
                                ),
                            }),
                            mode: None,
                        },
                    },
                },
            },
        ),
    );
}

#[test]
fn interactive_location_request() {
    check(
        "interactive_location_request",
        OutboundMessage::new(
            phone(),
            Content::Interactive {
                interactive: Interactive::LocationRequestMessage {
                    body: text_body(
                        "Let's start with your pickup. You can either manually *enter an address* or *share your current location*.",
                    ),
                    action: NamedAction::SendLocation,
                },
            },
        ),
    );
}

#[test]
fn reaction() {
    check(
        "reaction",
        OutboundMessage::new(
            phone(),
            Content::Reaction {
                reaction: Reaction {
                    message_id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
                        .into(),
                    emoji: "😀".into(),
                },
            },
        ),
    );
}

#[test]
fn template_positional() {
    check(
        "template_positional",
        OutboundMessage::new(
            phone(),
            Content::Template {
                template: Template {
                    name: "order_delivery_update".into(),
                    language: TemplateLanguage {
                        code: "en_US".into(),
                        policy: Some("deterministic".into()),
                    },
                    components: vec![
                        TemplateComponent::Header {
                            parameters: vec![Parameter::positional(ParameterValue::Image {
                                image: Media::link("https://example.com/media/order.png"),
                            })],
                        },
                        TemplateComponent::Body {
                            parameters: vec![
                                Parameter::text("Pablo"),
                                Parameter::positional(ParameterValue::Currency {
                                    currency: Currency {
                                        fallback_value: "$100.99".into(),
                                        code: "USD".into(),
                                        amount_1000: 100_990,
                                    },
                                }),
                                Parameter::positional(ParameterValue::DateTime {
                                    date_time: DateTime {
                                        fallback_value: "February 25, 1977".into(),
                                    },
                                }),
                            ],
                        },
                        TemplateComponent::Button {
                            sub_type: "quick_reply".into(),
                            index: "0".into(),
                            parameters: vec![Parameter::positional(ParameterValue::Payload {
                                payload: "STOP_PROMOTIONS".into(),
                            })],
                        },
                        TemplateComponent::Button {
                            sub_type: "url".into(),
                            index: "1".into(),
                            parameters: vec![Parameter::text("order/12345")],
                        },
                    ],
                },
            },
        ),
    );
}

#[test]
fn template_named() {
    check(
        "template_named",
        OutboundMessage::new(
            phone(),
            Content::Template {
                template: Template {
                    name: "order_confirmation".into(),
                    language: TemplateLanguage {
                        code: "en_US".into(),
                        policy: None,
                    },
                    components: vec![
                        TemplateComponent::Header {
                            parameters: vec![Parameter::named(
                                "receipt",
                                ParameterValue::Document {
                                    document: Media::id("1376223850470843")
                                        .with_filename("receipt.pdf"),
                                },
                            )],
                        },
                        TemplateComponent::Body {
                            parameters: vec![
                                Parameter::named(
                                    "customer_name",
                                    ParameterValue::Text {
                                        text: "Jessica".into(),
                                    },
                                ),
                                Parameter::named(
                                    "order_number",
                                    ParameterValue::Text {
                                        text: "SKBUP2-4CPIG9".into(),
                                    },
                                ),
                            ],
                        },
                    ],
                },
            },
        ),
    );
}

#[test]
fn template_buttons() {
    check(
        "template_buttons",
        OutboundMessage::new(
            phone(),
            Content::Template {
                template: Template {
                    name: "spring_sale".into(),
                    language: TemplateLanguage {
                        code: "en".into(),
                        policy: None,
                    },
                    components: vec![
                        TemplateComponent::Header {
                            parameters: vec![Parameter::positional(ParameterValue::Location {
                                location: Location {
                                    latitude: 37.483307,
                                    longitude: 122.148981,
                                    name: Some("Pablo Morales".into()),
                                    address: Some("1 Hacker Way, Menlo Park, CA 94025".into()),
                                },
                            })],
                        },
                        TemplateComponent::Button {
                            sub_type: "copy_code".into(),
                            index: "0".into(),
                            parameters: vec![Parameter::positional(ParameterValue::CouponCode {
                                coupon_code: "SPRING25".into(),
                            })],
                        },
                        TemplateComponent::Button {
                            sub_type: "flow".into(),
                            index: "1".into(),
                            parameters: vec![Parameter::positional(ParameterValue::Action {
                                action: json!({"flow_token":"FLOW_TOKEN","flow_action_data":{"campaign":"spring"}}),
                            })],
                        },
                    ],
                },
            },
        ),
    );
}

/// Every golden file's message part (the body minus the envelope) is accepted by the validator,
/// and `build_send_body` turns it back into the same body.
#[test]
fn golden_messages_validate_and_rebuild() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let full = golden(&name);
        let mut message = full.clone();
        let map = message.as_object_mut().unwrap();
        map.remove("messaging_product");
        map.remove("recipient_type");
        let to = map
            .remove("to")
            .or_else(|| map.remove("recipient"))
            .unwrap();
        let biz = map.remove("biz_opaque_callback_data");
        let validated = validate_message(&message).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!validated.preview.is_empty());
        let to = Recipient::parse(to.as_str().unwrap()).unwrap();
        let body = build_send_body(&to, &message, biz.as_ref().and_then(Value::as_str)).unwrap();
        let rebuilt: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(rebuilt, full, "{name}");
        n += 1;
    }
    assert!(
        n >= 18,
        "expected a golden file per message type, found {n}"
    );
}
