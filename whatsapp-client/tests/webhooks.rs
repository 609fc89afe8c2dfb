//! Parses every webhook fixture (written from Meta's documented payload examples) and checks
//! what the typed view exposes.

use serde_json::Value;
use std::path::PathBuf;
use whatsapp_client::webhook::*;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(format!("{name}.json"))
}

fn load(name: &str) -> Delivery {
    let body = std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    parse_delivery(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The single `messages` value of a fixture with one change.
fn with_messages<R>(name: &str, f: impl FnOnce(&MessagesValue<'_>) -> R) -> R {
    let d = load(name);
    let changes = d.changes();
    assert_eq!(changes.len(), 1, "{name}");
    assert_eq!(changes[0].field, "messages");
    match &changes[0].value {
        ChangeValue::Messages(m) => {
            assert_eq!(m.phone_number_id, Some("106540352242922"));
            assert_eq!(m.display_phone_number, Some("15550783881"));
            assert_eq!(m.error_count(), 0, "{name}");
            f(m)
        }
        other => panic!("{name}: expected messages, got {other:?}"),
    }
}

fn only_message<R>(name: &str, f: impl FnOnce(&InboundMessage<'_>) -> R) -> R {
    with_messages(name, |m| {
        assert_eq!(m.messages.len(), 1, "{name}");
        let msg = m.messages[0].as_ref().unwrap();
        assert_eq!(msg.from, Some("16505551234"));
        assert_eq!(msg.timestamp, Some(1_739_321_024));
        assert!(msg.id.starts_with("wamid."));
        f(msg)
    })
}

fn only_change<R>(name: &str, f: impl FnOnce(&Change<'_>) -> R) -> R {
    let d = load(name);
    let changes = d.changes();
    assert_eq!(changes.len(), 1, "{name}");
    assert_eq!(changes[0].entry_id.as_deref(), Some("102290129340398"));
    f(&changes[0])
}

#[test]
fn every_fixture_parses_without_invalid_parts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let d = load(&name);
        n += 1;
        if name == "ill_typed_parts" {
            continue;
        }
        for c in d.changes() {
            assert!(!c.value.is_invalid(), "{name}: {c:?}");
            if let ChangeValue::Messages(m) | ChangeValue::UserPreferences(m) = &c.value {
                assert_eq!(m.error_count(), 0, "{name}");
                for msg in m.messages.iter().flatten() {
                    assert!(
                        !matches!(msg.content, InboundContent::Malformed { .. }),
                        "{name}: {msg:?}"
                    );
                    assert!(!msg.preview().is_empty());
                }
            }
        }
    }
    assert!(n >= 45, "only {n} fixtures");
}

#[test]
fn text_message_with_bsuid_and_contact() {
    with_messages("messages_text", |m| {
        let c = m.contacts[0].as_ref().unwrap();
        assert_eq!(c.name, Some("Sheena Nelson"));
        assert_eq!(c.wa_id, Some("16505551234"));
        assert_eq!(c.user_id, Some("US.13491208655302741918"));
        let msg = m.messages[0].as_ref().unwrap();
        assert_eq!(msg.kind, "text");
        assert_eq!(msg.from_user_id, Some("US.13491208655302741918"));
        assert_eq!(
            msg.content,
            InboundContent::Text {
                body: "Does it come in another color?"
            }
        );
        assert_eq!(msg.preview(), "Does it come in another color?");
        // the raw message is the exact object from the payload
        assert_eq!(msg.raw["text"]["body"], "Does it come in another color?");
        let found = m.contact(msg.from_user_id, msg.from).unwrap();
        assert_eq!(found.name, Some("Sheena Nelson"));
    });
}

#[test]
fn username_only_sender_has_no_phone_number() {
    with_messages("messages_text_bsuid_only", |m| {
        let c = m.contacts[0].as_ref().unwrap();
        assert_eq!(c.wa_id, None);
        assert_eq!(c.username, Some("@sheena"));
        let msg = m.messages[0].as_ref().unwrap();
        assert_eq!(msg.from, None);
        assert_eq!(msg.from_user_id, Some("US.13491208655302741918"));
        assert!(m.contact(msg.from_user_id, msg.from).is_some());
    });
}

#[test]
fn media_messages() {
    for (name, kind, id) in [
        ("messages_image", MediaKind::Image, "2754859441498128"),
        ("messages_audio_voice", MediaKind::Audio, "1003383421387256"),
        ("messages_video", MediaKind::Video, "1032185825075581"),
        ("messages_document", MediaKind::Document, "1376223850470843"),
        ("messages_sticker", MediaKind::Sticker, "1229245308427574"),
    ] {
        only_message(name, |msg| {
            assert_eq!(msg.kind, kind.as_str());
            assert_eq!(msg.media_id(), Some(id), "{name}");
            let InboundContent::Media { kind: k, media } = &msg.content else {
                panic!("{name}: {:?}", msg.content);
            };
            assert_eq!(*k, kind);
            assert!(media.mime_type.is_some());
            assert!(media.sha256.is_some());
            if kind == MediaKind::Audio {
                assert!(media.voice);
            }
            if kind == MediaKind::Document {
                assert_eq!(media.filename, Some("lucky-shrub-invoice.pdf"));
            }
        });
    }
    only_message("messages_image", |m| {
        assert_eq!(m.preview(), "[image] This is a caption")
    });
    only_message("messages_audio_voice", |m| {
        assert_eq!(m.preview(), "[voice]")
    });
}

#[test]
fn location_and_contacts() {
    only_message("messages_location", |msg| {
        let InboundContent::Location {
            latitude,
            longitude,
            name,
            ..
        } = msg.content
        else {
            panic!("{:?}", msg.content)
        };
        assert!((latitude.unwrap() - 37.4832).abs() < 0.001);
        assert!((longitude.unwrap() + 122.1496).abs() < 0.001);
        assert_eq!(name, Some("Main Office"));
    });
    only_message("messages_contacts", |msg| {
        let InboundContent::Contacts { contacts } = msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0]["name"]["formatted_name"], "Barbara J. Johnson");
        assert_eq!(msg.preview(), "[contact] Barbara J. Johnson");
    });
}

#[test]
fn interactive_replies_and_buttons() {
    only_message("messages_interactive_button_reply", |msg| {
        assert_eq!(
            msg.content,
            InboundContent::Interactive(InteractiveReply::ButtonReply {
                id: "cancel-button",
                title: Some("Cancel")
            })
        );
        let ctx = msg.context.as_ref().unwrap();
        assert_eq!(ctx.from, Some("15550783881"));
        assert!(ctx.id.unwrap().starts_with("wamid."));
    });
    only_message("messages_interactive_list_reply", |msg| {
        assert_eq!(
            msg.content,
            InboundContent::Interactive(InteractiveReply::ListReply {
                id: "priority_express",
                title: Some("Priority Mail Express"),
                description: Some("Next Day to 2 Days"),
            })
        );
    });
    only_message("messages_interactive_nfm_reply", |msg| {
        let InboundContent::Interactive(InteractiveReply::NfmReply { response_json, .. }) =
            &msg.content
        else {
            panic!("{:?}", msg.content)
        };
        let inner: Value = serde_json::from_str(response_json.unwrap()).unwrap();
        assert_eq!(inner["flow_token"], "AQAAAAACS5FpgQ_cAAAAAD0QI3s.");
    });
    only_message("messages_button", |msg| {
        assert_eq!(
            msg.content,
            InboundContent::Button {
                text: Some("Stop promotions"),
                payload: Some("STOP_PROMOTIONS")
            }
        );
    });
}

#[test]
fn reactions_orders_and_system_messages() {
    only_message("messages_reaction", |msg| {
        let InboundContent::Reaction { message_id, emoji } = msg.content else {
            panic!()
        };
        assert!(message_id.unwrap().starts_with("wamid."));
        assert_eq!(emoji, Some("👍"));
    });
    only_message("messages_reaction_removed", |msg| {
        assert!(matches!(
            msg.content,
            InboundContent::Reaction { emoji: None, .. }
        ));
        assert_eq!(msg.preview(), "[reaction removed]");
    });
    only_message("messages_order", |msg| {
        let InboundContent::Order {
            catalog_id,
            product_items,
            ..
        } = msg.content
        else {
            panic!()
        };
        assert_eq!(catalog_id, Some("194836987003835"));
        assert_eq!(product_items.len(), 2);
    });
    with_messages("messages_system_user_changed_number", |m| {
        assert!(m.contacts.is_empty());
        let msg = m.messages[0].as_ref().unwrap();
        assert_eq!(
            msg.content,
            InboundContent::System {
                kind: Some("user_changed_number"),
                body: Some("User Sheena Nelson changed from 16505551234 to 12195555358"),
                wa_id: Some("12195555358"),
                user_id: None,
            }
        );
    });
}

#[test]
fn referral_and_context() {
    only_message("messages_referral", |msg| {
        let r = msg.referral.as_ref().unwrap();
        assert_eq!(r.source_type, Some("ad"));
        assert_eq!(r.source_id, Some("120226305854810726"));
        assert!(r.ctwa_clid.is_some());
        assert_eq!(r.raw["welcome_message"]["text"], "Hi! How can we help?");
    });
    only_message("messages_context_forwarded", |msg| {
        let c = msg.context.as_ref().unwrap();
        assert!(c.forwarded && c.frequently_forwarded);
        assert_eq!(c.id, None);
    });
    only_message("messages_context_referred_product", |msg| {
        let c = msg.context.as_ref().unwrap();
        assert_eq!(c.referred_catalog_id, Some("194836987003835"));
        assert_eq!(c.referred_product_retailer_id, Some("di9ozbzfi4"));
    });
}

#[test]
fn unsupported_and_unknown_types_are_kept() {
    only_message("messages_unsupported", |msg| {
        assert_eq!(msg.content, InboundContent::Unsupported);
        assert_eq!(msg.errors[0].code, Some(131051));
        assert_eq!(msg.preview(), "[unsupported]");
    });
    with_messages("messages_unknown_type", |m| {
        assert_eq!(m.messages.len(), 2);
        for msg in m.messages.iter().flatten() {
            assert_eq!(msg.content, InboundContent::Unknown);
        }
        let future = m.messages[1].as_ref().unwrap();
        assert_eq!(future.kind, "some_future_type");
        assert_eq!(future.raw["some_future_type"]["anything"][2], 3);
        assert_eq!(future.preview(), "[some_future_type]");
    });
}

#[test]
fn value_level_errors() {
    with_messages("value_errors", |m| {
        assert!(m.messages.is_empty() && m.statuses.is_empty());
        assert_eq!(m.errors.len(), 1);
        assert_eq!(m.errors[0].code, Some(131000));
        assert!(
            m.errors[0]
                .details
                .as_deref()
                .unwrap()
                .contains("unknown error")
        );
    });
}

#[test]
fn statuses() {
    with_messages("statuses_sent", |m| {
        let s = m.statuses[0].as_ref().unwrap();
        assert_eq!(s.status, StatusKind::Sent);
        assert_eq!(s.timestamp, Some(1_750_857_384));
        assert_eq!(s.recipient_id, Some("16505551234"));
        assert_eq!(s.recipient_user_id, Some("US.13491208655302741918"));
        assert_eq!(
            s.biz_opaque_callback_data,
            Some("0b9c1e7e-6a0e-4a43-9f3c-1d2f3a4b5c6d")
        );
        let c = s.conversation.as_ref().unwrap();
        assert_eq!(c.expiration_timestamp, Some(1_750_943_820));
        assert_eq!(c.origin_type, Some("service"));
        let p = s.pricing.as_ref().unwrap();
        assert_eq!(p.billable, Some(true));
        assert_eq!(p.pricing_model, Some("PMP"));
        assert_eq!(p.kind, Some("free_customer_service"));
    });
    with_messages("statuses_delivered_read", |m| {
        let kinds: Vec<_> = m
            .statuses
            .iter()
            .map(|s| s.as_ref().unwrap().status)
            .collect();
        assert_eq!(kinds, [StatusKind::Delivered, StatusKind::Read]);
        assert_eq!(
            m.statuses[0]
                .as_ref()
                .unwrap()
                .conversation
                .as_ref()
                .unwrap()
                .expiration_timestamp,
            None
        );
    });
    with_messages("statuses_failed", |m| {
        let s = m.statuses[0].as_ref().unwrap();
        assert_eq!(s.status, StatusKind::Failed);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].code, Some(131047));
        assert_eq!(s.errors[0].title.as_deref(), Some("Re-engagement message"));
        assert_eq!(
            s.errors[0].class(None),
            whatsapp_client::ErrorClass::Permanent
        );
    });
    with_messages("statuses_played_deleted", |m| {
        let kinds: Vec<_> = m
            .statuses
            .iter()
            .map(|s| s.as_ref().unwrap().status)
            .collect();
        assert_eq!(kinds, [StatusKind::Played, StatusKind::Deleted]);
    });
    with_messages("statuses_bsuid_only", |m| {
        let s = m.statuses[0].as_ref().unwrap();
        assert_eq!(s.recipient_id, None);
        assert_eq!(s.recipient_user_id, Some("US.13491208655302741918"));
        assert_eq!(
            s.recipient_parent_user_id,
            Some("US.ENT.11815799212886844830")
        );
        assert_eq!(m.contacts[0].as_ref().unwrap().wa_id, None);
    });
}

#[test]
fn account_updates() {
    let cases = [
        ("account_update_partner_added", "PARTNER_ADDED"),
        (
            "account_update_partner_app_installed",
            "PARTNER_APP_INSTALLED",
        ),
        ("account_update_partner_removed", "PARTNER_REMOVED"),
        ("account_update_account_deleted", "ACCOUNT_DELETED"),
        ("account_update_account_offboarded", "ACCOUNT_OFFBOARDED"),
    ];
    for (name, event) in cases {
        only_change(name, |c| {
            let ChangeValue::AccountUpdate(u) = &c.value else {
                panic!("{name}: {:?}", c.value)
            };
            assert_eq!(u.event, Some(event));
            // the customer's WABA comes from waba_info, not entry.id
            assert_eq!(u.waba_id.as_deref(), Some("495709166956424"), "{name}");
            assert_eq!(
                u.waba_id_or_entry(c.entry_id.as_deref()).as_deref(),
                Some("495709166956424")
            );
            assert_eq!(u.owner_business_id.as_deref(), Some("2729063490586005"));
        });
    }
    only_change("account_update_partner_app_installed", |c| {
        let ChangeValue::AccountUpdate(u) = &c.value else {
            panic!()
        };
        assert_eq!(u.partner_app_id.as_deref(), Some("1181180133009281"));
    });
    only_change("account_update_account_offboarded", |c| {
        let ChangeValue::AccountUpdate(u) = &c.value else {
            panic!()
        };
        assert_eq!(u.phone_number.as_deref(), Some("15550783881"));
    });
    only_change("account_update_account_violation", |c| {
        let ChangeValue::AccountUpdate(u) = &c.value else {
            panic!()
        };
        assert_eq!(u.event, Some("ACCOUNT_VIOLATION"));
        assert_eq!(u.violation_type, Some("SCAM"));
        assert_eq!(u.waba_id, None);
        // not a PARTNER_* event: the entry id is the account
        assert_eq!(
            u.waba_id_or_entry(c.entry_id.as_deref()).as_deref(),
            Some("102290129340398")
        );
    });
    only_change("account_update_account_restriction", |c| {
        let ChangeValue::AccountUpdate(u) = &c.value else {
            panic!()
        };
        assert_eq!(u.restrictions.len(), 1);
        assert_eq!(
            u.restrictions[0].restriction_type,
            Some("RESTRICTED_BIZ_INITIATED_MESSAGING")
        );
        assert_eq!(u.restrictions[0].expiration.as_deref(), Some("1750943820"));
    });
    only_change("account_update_disabled_update", |c| {
        let ChangeValue::AccountUpdate(u) = &c.value else {
            panic!()
        };
        assert_eq!(u.ban_state, Some("DISABLE"));
        assert_eq!(u.ban_date, Some("October 9, 2025"));
        assert_eq!(c.entry_time, Some(1_739_321_024));
    });
}

#[test]
fn template_and_phone_number_updates() {
    only_change("message_template_status_update_approved", |c| {
        let ChangeValue::TemplateStatus(t) = &c.value else {
            panic!("{:?}", c.value)
        };
        assert_eq!(t.event, Some("APPROVED"));
        // numeric ids are read as strings
        assert_eq!(t.template_id.as_deref(), Some("1689556908129832"));
        assert_eq!(t.template_name, Some("order_confirmation"));
        assert_eq!(t.language, Some("en-US"));
        assert_eq!(t.category, Some("UTILITY"));
    });
    only_change("message_template_status_update_paused", |c| {
        let ChangeValue::TemplateStatus(t) = &c.value else {
            panic!()
        };
        assert_eq!(t.event, Some("PAUSED"));
        assert_eq!(t.other_title, Some("FIRST_PAUSE"));
    });
    only_change("message_template_quality_update", |c| {
        let ChangeValue::TemplateQuality(t) = &c.value else {
            panic!()
        };
        assert_eq!(t.previous_quality_score, Some("GREEN"));
        assert_eq!(t.new_quality_score, Some("YELLOW"));
        assert_eq!(t.template_id.as_deref(), Some("806312974732579"));
    });
    only_change("template_category_update", |c| {
        let ChangeValue::TemplateCategory(t) = &c.value else {
            panic!()
        };
        assert_eq!(t.previous_category, Some("UTILITY"));
        assert_eq!(t.new_category, Some("MARKETING"));
    });
    only_change("phone_number_quality_update", |c| {
        let ChangeValue::PhoneNumberQuality(p) = &c.value else {
            panic!()
        };
        assert_eq!(p.display_phone_number.as_deref(), Some("15550783881"));
        assert_eq!(p.event, Some("UPGRADE"));
        assert_eq!(p.current_limit, Some("TIER_10K"));
        assert_eq!(p.old_limit, Some("TIER_2K"));
        assert_eq!(
            p.max_daily_conversations_per_business.as_deref(),
            Some("TIER_10K")
        );
    });
    only_change("phone_number_quality_update_flagged", |c| {
        let ChangeValue::PhoneNumberQuality(p) = &c.value else {
            panic!()
        };
        assert_eq!(p.event, Some("FLAGGED"));
        assert_eq!(p.max_daily_conversation_per_phone, Some(1000));
    });
    only_change("phone_number_name_update", |c| {
        let ChangeValue::PhoneNumberName(p) = &c.value else {
            panic!()
        };
        assert_eq!(p.decision, Some("APPROVED"));
        assert_eq!(p.requested_verified_name, Some("Lucky Shrub"));
    });
    only_change("business_capability_update", |c| {
        let ChangeValue::BusinessCapability(b) = &c.value else {
            panic!()
        };
        assert_eq!(b.max_daily_conversation_per_phone, Some(2000));
        assert_eq!(
            b.max_daily_conversations_per_business.as_deref(),
            Some("2000")
        );
        assert_eq!(b.max_phone_numbers_per_waba, Some(25));
        assert_eq!(b.max_phone_numbers_per_business, None);
    });
}

#[test]
fn user_preferences() {
    only_change("user_preferences", |c| {
        let ChangeValue::UserPreferences(v) = &c.value else {
            panic!("{:?}", c.value)
        };
        let p = v.user_preferences[0].as_ref().unwrap();
        assert_eq!(p.wa_id, Some("16505551234"));
        assert_eq!(p.category, Some("marketing_messages"));
        assert_eq!(p.value, Some("stop"));
        assert_eq!(p.timestamp, Some(1_731_705_721));
    });
}

#[test]
fn unknown_fields_are_kept_raw() {
    only_change("unknown_field", |c| {
        let ChangeValue::Unknown { field, value } = &c.value else {
            panic!("{:?}", c.value)
        };
        assert_eq!(*field, "security");
        assert_eq!(value["event"], "PIN_CHANGED");
    });
}

#[test]
fn batched_deliveries_keep_entry_and_change_positions() {
    let d = load("multi_entry_batch");
    assert_eq!(d.change_count(), 3);
    let changes = d.changes();
    assert_eq!(changes.len(), 3);
    assert_eq!((changes[0].entry_index, changes[0].change_index), (0, 0));
    assert_eq!((changes[1].entry_index, changes[1].change_index), (0, 1));
    assert_eq!((changes[2].entry_index, changes[2].change_index), (1, 0));
    let ChangeValue::Messages(m) = &changes[0].value else {
        panic!()
    };
    let ids: Vec<_> = m.messages.iter().map(|m| m.as_ref().unwrap().id).collect();
    assert_eq!(ids, ["wamid.A", "wamid.B"]);
    let ChangeValue::Messages(m) = &changes[1].value else {
        panic!()
    };
    assert_eq!(m.statuses[0].as_ref().unwrap().id, "wamid.C");
    assert_eq!(changes[2].entry_id.as_deref(), Some("200000000000001"));
    assert!(matches!(changes[2].value, ChangeValue::TemplateStatus(_)));
}

#[test]
fn ill_typed_parts_become_part_errors_not_failures() {
    let d = load("ill_typed_parts");
    let changes = d.changes();
    // 4 changes in the first entry, then a non-object entry and an entry without a changes array
    assert_eq!(changes.len(), 6);
    let ChangeValue::Messages(m) = &changes[0].value else {
        panic!("{:?}", changes[0].value)
    };
    assert!(m.contacts[0].is_ok());
    assert!(m.contacts[1].is_err());
    let msgs = &m.messages;
    assert_eq!(msgs.len(), 6);
    assert_eq!(msgs[0].as_ref().unwrap().id, "wamid.ok");
    let e = msgs[1].as_ref().unwrap_err();
    assert_eq!(e.index, 1);
    assert!(e.reason.contains("\"id\""), "{}", e.reason);
    assert_eq!(e.raw["text"]["body"], "no id");
    assert!(msgs[2].as_ref().unwrap_err().reason.contains("from"));
    // a known type with a broken payload keeps the message, marked malformed
    let bad_text = msgs[3].as_ref().unwrap();
    assert!(matches!(bad_text.content, InboundContent::Malformed { .. }));
    let bad_image = msgs[4].as_ref().unwrap();
    assert!(matches!(
        bad_image.content,
        InboundContent::Malformed { .. }
    ));
    assert!(msgs[5].is_err());
    assert!(m.statuses[0].is_ok());
    assert!(m.statuses[1].is_err());
    assert!(m.statuses[2].is_err());
    assert_eq!(m.error_count(), 6);

    assert!(matches!(
        &changes[1].value,
        ChangeValue::Invalid { field: "messages", reason, .. } if reason.contains("not an object")
    ));
    assert!(matches!(
        &changes[2].value,
        ChangeValue::Invalid { field: "account_update", reason, .. } if reason.contains("value")
    ));
    // management updates with missing fields still parse
    assert!(matches!(&changes[3].value, ChangeValue::TemplateStatus(t) if t.template_id.is_none()));
    assert!(
        matches!(&changes[4].value, ChangeValue::Invalid { reason, .. } if reason.contains("entry"))
    );
    assert!(
        matches!(&changes[5].value, ChangeValue::Invalid { reason, .. } if reason.contains("changes"))
    );
    assert_eq!(changes[5].entry_id.as_deref(), Some("123"));
}

#[test]
fn envelope_errors() {
    assert!(matches!(
        parse_delivery(b"not json"),
        Err(WebhookError::NotJson(_))
    ));
    assert!(matches!(parse_delivery(b""), Err(WebhookError::NotJson(_))));
    assert_eq!(parse_delivery(b"[]"), Err(WebhookError::NotAnObject));
    assert_eq!(
        parse_delivery(br#"{"object":"page","entry":[]}"#),
        Err(WebhookError::WrongObject("page".into()))
    );
    assert_eq!(
        parse_delivery(br#"{"entry":[]}"#),
        Err(WebhookError::WrongObject(String::new()))
    );
    assert_eq!(
        parse_delivery(br#"{"object":"whatsapp_business_account"}"#),
        Err(WebhookError::NoEntries)
    );
    let d = parse_delivery(br#"{"object":"whatsapp_business_account","entry":[]}"#).unwrap();
    assert!(d.changes().is_empty());
}

#[test]
fn already_parsed_values_are_accepted() {
    let body = std::fs::read(fixture_path("messages_text")).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let borrowed = changes(&v).unwrap();
    assert_eq!(borrowed.len(), 1);
    let owned = parse_delivery_value(v.clone()).unwrap();
    assert_eq!(owned.changes(), borrowed);
    assert_eq!(owned.into_value(), v);
}
