//! Webhooks in: wa.ingest_webhook / wa.ingest_signed_webhook / wa.verify_webhook, and reading
//! conversations and messages back.

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use serde_json::{Value, json};
use wa_integration_tests::webhooks::*;
use wa_integration_tests::{TestDb, sql_error, sql_error_text};

const APP_SECRET: &str = "test-app-secret-0123456789abcdef";
const VERIFY: &str = "verify-token-xyz";

/// A database with the app configured and two connected tenants (A: WABA_A/PHONE_A, B: …_B).
fn setup(label: &str) -> (TestDb, String, String) {
    let db = TestDb::new(label);
    let mut su = db.superuser();
    su.execute(
        "SELECT wa.configure_app('1234', $1, $2, '5678')",
        &[&APP_SECRET, &VERIFY],
    )
    .unwrap();
    let mut tenants = Vec::new();
    for (name, waba, phone) in [("A", WABA_A, PHONE_A), ("B", WABA_B, PHONE_B)] {
        let t: String = su
            .query_one("SELECT wa.create_tenant($1)::text", &[&name])
            .unwrap()
            .get(0);
        su.execute(
            "SELECT wa.connect_tenant($1::text::uuid, $2, $3, 'EAAGtesttoken0123456789')",
            &[&t, &waba, &phone],
        )
        .unwrap();
        su.execute(
            "UPDATE wa.phone_numbers SET display_phone_number = '+1 555-000-' || $2 WHERE tenant_id = $1::text::uuid",
            &[&t, &phone],
        )
        .unwrap();
        tenants.push(t);
    }
    (db, tenants[0].clone(), tenants[1].clone())
}

fn ingest(c: &mut Client, payload: &Value) -> Value {
    c.query_one("SELECT wa.ingest_webhook($1)", &[payload])
        .unwrap()
        .get(0)
}

fn ingest_signed(c: &mut Client, body: &str) -> Result<Value, postgres::Error> {
    let sig = whatsapp_client::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
    c.query_one("SELECT wa.ingest_signed_webhook($1, $2)", &[&body, &sig])
        .map(|r| r.get(0))
}

fn one_i64(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// An outbound message as wa.send_message leaves it: queued, no wamid yet.
fn queued_outbound(c: &mut Client, tenant: &str, phone: &str, wa_id: &str) -> String {
    c.query_one(
        "WITH ct AS (SELECT wa._upsert_contact($1::text::uuid, $3, NULL, NULL, NULL) AS id),
              cv AS (SELECT wa._conversation_for($1::text::uuid, $2, ct.id) AS id FROM ct)
         INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status)
         SELECT $1::text::uuid, cv.id, 'outbound', 'text', '{\"type\":\"text\",\"text\":{\"body\":\"hi\"}}', 'queued'
           FROM cv RETURNING message_id::text",
        &[&tenant, &phone, &wa_id],
    )
    .unwrap()
    .get(0)
}

#[test]
fn inbound_text_becomes_contact_conversation_and_message() {
    let (db, a, _) = setup("inbound");
    let mut su = db.superuser();
    let now = 1_790_000_000;
    let summary = ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.in1",
                Some("15550001111"),
                None,
                now,
                "Hello hotel",
            ),
        ),
    );
    assert_eq!(summary["messages"], 1, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    let conv = app
        .query_one("SELECT conversation_id, customer_wa_id, customer_name, status, last_message_preview, unread_count, window_expires_at = to_timestamp($1::double precision) + interval '24 hours' FROM wa.conversations($2::text::uuid)", &[&(now as f64), &a])
        .unwrap();
    let conversation: uuid::Uuid = conv.get(0);
    assert_eq!(conv.get::<_, String>(1), "15550001111");
    assert_eq!(conv.get::<_, String>(2), "Guest");
    assert_eq!(conv.get::<_, String>(3), "open");
    assert_eq!(conv.get::<_, String>(4), "Hello hotel");
    assert_eq!(conv.get::<_, i32>(5), 1);
    assert!(conv.get::<_, bool>(6), "window = message time + 24h");
    let msg = app
        .query_one(
            "SELECT direction, type, content, status, wamid FROM wa.messages($1)",
            &[&conversation],
        )
        .unwrap();
    assert_eq!(msg.get::<_, String>(0), "inbound");
    assert_eq!(msg.get::<_, String>(1), "text");
    assert_eq!(msg.get::<_, Value>(2)["text"]["body"], "Hello hotel");
    assert_eq!(msg.get::<_, String>(3), "received");
    assert_eq!(msg.get::<_, String>(4), "wamid.in1");
    // The raw delivery was stored first and marked processed.
    let stored = one_i64(
        &mut su,
        "SELECT count(*) FROM wa.webhook_events WHERE status = 'processed' AND payload IS NOT NULL",
    );
    assert_eq!(stored, 1);
}

#[test]
fn every_message_type_is_kept_with_its_content_unknown_ones_too() {
    let (db, _, _) = setup("types");
    let mut su = db.superuser();
    let kinds = [
        json!({"type":"image","image":{"id":"media-1","mime_type":"image/jpeg","sha256":"x","caption":"room"}}),
        json!({"type":"location","location":{"latitude":1.5,"longitude":2.5,"name":"Hotel"}}),
        json!({"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"yes","title":"Yes"}}}),
        json!({"type":"reaction","reaction":{"message_id":"wamid.x","emoji":"👍"}}),
        json!({"type":"button","button":{"payload":"p","text":"Book"}}),
        json!({"type":"unsupported","errors":[{"code":131051,"title":"Message type unknown"}]}),
        json!({"type":"holographic_postcard","holographic_postcard":{"depth":3}}),
    ];
    let mut messages = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let mut m = k.clone();
        m["id"] = json!(format!("wamid.t{i}"));
        m["from"] = json!("15550001111");
        m["timestamp"] = json!("1790000000");
        if i == 2 {
            m["context"] = json!({"from": "15550009999", "id": "wamid.original"});
        }
        messages.push(m);
    }
    let value = json!({"messaging_product":"whatsapp","metadata":metadata(PHONE_A),
                       "contacts":[{"wa_id":"15550001111","profile":{"name":"Guest"}}],"messages":messages});
    let summary = ingest(&mut su, &envelope(WABA_A, "messages", value));
    assert_eq!(summary["messages"], 7, "{summary}");
    let rows = su
        .query(
            "SELECT type, content, context_wamid FROM wa.messages ORDER BY wamid",
            &[],
        )
        .unwrap();
    let types: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        types,
        [
            "image",
            "location",
            "interactive",
            "reaction",
            "button",
            "unsupported",
            "holographic_postcard"
        ]
    );
    assert_eq!(
        rows[6].get::<_, Value>(1)["holographic_postcard"]["depth"],
        3
    );
    assert_eq!(
        rows[2].get::<_, Option<String>>(2).as_deref(),
        Some("wamid.original")
    );
    assert_eq!(rows[0].get::<_, Value>(1)["image"]["caption"], "room");
}

#[test]
fn customer_first_seen_by_bsuid_then_with_both_is_one_contact() {
    let (db, _, _) = setup("bsuid");
    let mut su = db.superuser();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.b1",
                None,
                Some("US.13491208655302741918"),
                1_790_000_000,
                "first",
            ),
        ),
    );
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.b2",
                Some("15550003333"),
                Some("US.13491208655302741918"),
                1_790_000_100,
                "second",
            ),
        ),
    );
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.b3",
                Some("15550003333"),
                None,
                1_790_000_200,
                "third",
            ),
        ),
    );
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.contacts"), 1);
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.conversations"), 1);
    let row = su
        .query_one("SELECT wa_id, user_id FROM wa.contacts", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "15550003333");
    assert_eq!(row.get::<_, String>(1), "US.13491208655302741918");
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.messages"), 3);
}

/// The state a set of deliveries leaves, as comparable text.
fn state(c: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT format('%s:%s:%s:%s:%s:%s:%s', wamid, status, sent_at, delivered_at, read_at, failed_at, error) FROM wa.messages WHERE wamid IS NOT NULL ORDER BY 1",
        "SELECT format('%s:%s', wa_id, user_id) FROM wa.contacts ORDER BY 1",
        "SELECT format('%s:%s:%s:%s:%s', status, unread_count, last_message_at, last_message_preview, window_expires_at) FROM wa.conversations ORDER BY 1",
        "SELECT count(*)::text FROM wa.pending_statuses",
    ] {
        for r in c.query(sql, &[]).unwrap() {
            out.push(r.get(0));
        }
    }
    out
}

fn deliveries_for_replay(c: &mut Client, tenant: &str) -> Vec<Value> {
    // Two outbound messages whose statuses arrive; inbound messages from three customers.
    let m1 = queued_outbound(c, tenant, PHONE_A, "15550001111");
    let m2 = queued_outbound(c, tenant, PHONE_A, "15550002222");
    c.execute(
        "UPDATE wa.messages SET wamid = 'wamid.out1' WHERE message_id = $1::text::uuid",
        &[&m1],
    )
    .unwrap();
    let t = 1_790_000_000;
    let mut d = vec![
        envelope(
            WABA_A,
            "messages",
            inbound_text(PHONE_A, "wamid.r1", Some("15550001111"), None, t, "one"),
        ),
        envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.r2",
                Some("15550001111"),
                None,
                t + 10,
                "two",
            ),
        ),
        envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.r3",
                None,
                Some("BR.99887766554433"),
                t + 20,
                "three",
            ),
        ),
        envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.r4",
                Some("15550004444"),
                None,
                t + 30,
                "four",
            ),
        ),
    ];
    for (st, dt) in [("sent", 1), ("delivered", 2), ("read", 3)] {
        d.push(envelope(
            WABA_A,
            "messages",
            statuses(PHONE_A, vec![status("wamid.out1", st, t + dt, Some(&m1))]),
        ));
    }
    // m2 has no wamid stored yet: matched through biz_opaque_callback_data.
    d.push(envelope(
        WABA_A,
        "messages",
        statuses(
            PHONE_A,
            vec![status("wamid.out2", "sent", t + 5, Some(&m2))],
        ),
    ));
    d.push(envelope(
        WABA_A,
        "messages",
        statuses(
            PHONE_A,
            vec![status("wamid.out2", "failed", t + 6, Some(&m2))],
        ),
    ));
    d
}

#[test]
fn replayed_and_shuffled_deliveries_end_in_the_state_of_one_ordered_pass() {
    let (ordered_db, a1, _) = setup("ordered");
    let mut c1 = ordered_db.superuser();
    let deliveries = deliveries_for_replay(&mut c1, &a1);
    for d in &deliveries {
        ingest(&mut c1, d);
    }
    let expected = state(&mut c1);
    assert!(
        expected.iter().any(|s| s.starts_with("wamid.out1:read:")),
        "{expected:?}"
    );
    assert!(
        expected.iter().any(|s| s.starts_with("wamid.out2:failed:")),
        "{expected:?}"
    );

    let (shuffled_db, a2, _) = setup("shuffled");
    let mut c2 = shuffled_db.superuser();
    let deliveries2 = deliveries_for_replay(&mut c2, &a2);
    // Message ids differ per database; rebuild with this database's ids, then replay 3×
    // in a scrambled (deterministic) order.
    let mut all: Vec<&Value> = deliveries2
        .iter()
        .chain(&deliveries2)
        .chain(&deliveries2)
        .collect();
    let n = all.len();
    for i in 0..n {
        let j = (i * 7 + 3) % n;
        all.swap(i, j);
    }
    for d in all {
        ingest(&mut c2, d);
    }
    assert_eq!(state(&mut c2), expected);
    assert_eq!(one_i64(&mut c2, "SELECT count(*) FROM wa.messages"), 6);
}

#[test]
fn status_for_an_unknown_wamid_is_kept_and_applied_when_the_wamid_arrives() {
    let (db, a, _) = setup("pending");
    let mut su = db.superuser();
    let m = queued_outbound(&mut su, &a, PHONE_A, "15550001111");
    let summary = ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            statuses(
                PHONE_A,
                vec![
                    status("wamid.late", "delivered", 1_790_000_002, None),
                    status("wamid.late", "sent", 1_790_000_001, None),
                ],
            ),
        ),
    );
    assert_eq!(summary["statuses"], 2, "{summary}");
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.pending_statuses"),
        2
    );
    // The worker stores the wamid Meta returned and, in the same write-back, applies the
    // statuses that were waiting for it.
    su.execute(
        "UPDATE wa.messages SET wamid = 'wamid.late' WHERE message_id = $1::text::uuid",
        &[&m],
    )
    .unwrap();
    su.execute(
        "SELECT wa._apply_pending_statuses(ARRAY[$1::text::uuid], ARRAY['wamid.late'])",
        &[&a],
    )
    .unwrap();
    let row = su
        .query_one("SELECT status, sent_at IS NOT NULL, delivered_at IS NOT NULL FROM wa.messages WHERE message_id = $1::text::uuid", &[&m])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "delivered");
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.pending_statuses"),
        0
    );
}

#[test]
fn statuses_never_move_backwards_and_failed_is_terminal() {
    let (db, a, _) = setup("monotonic");
    let mut su = db.superuser();
    let m = queued_outbound(&mut su, &a, PHONE_A, "15550001111");
    su.execute(
        "UPDATE wa.messages SET wamid = 'wamid.m' WHERE message_id = $1::text::uuid",
        &[&m],
    )
    .unwrap();
    for st in ["read", "delivered", "sent"] {
        ingest(
            &mut su,
            &envelope(
                WABA_A,
                "messages",
                statuses(PHONE_A, vec![status("wamid.m", st, 1_790_000_000, None)]),
            ),
        );
    }
    let row = su.query_one("SELECT status, sent_at IS NOT NULL AND delivered_at IS NOT NULL AND read_at IS NOT NULL, pricing->>'category' FROM wa.messages WHERE wamid = 'wamid.m'", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "read");
    assert!(row.get::<_, bool>(1), "every status keeps its timestamp");
    assert_eq!(row.get::<_, String>(2), "service");

    let f = queued_outbound(&mut su, &a, PHONE_A, "15550002222");
    su.execute(
        "UPDATE wa.messages SET wamid = 'wamid.f' WHERE message_id = $1::text::uuid",
        &[&f],
    )
    .unwrap();
    for st in ["failed", "delivered"] {
        ingest(
            &mut su,
            &envelope(
                WABA_A,
                "messages",
                statuses(PHONE_A, vec![status("wamid.f", st, 1_790_000_000, None)]),
            ),
        );
    }
    let row = su
        .query_one(
            "SELECT status, error->0->>'code' FROM wa.messages WHERE wamid = 'wamid.f'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, String>(1), "131026");
}

#[test]
fn account_updates_move_the_connection_state() {
    let (db, a, b) = setup("account");
    let mut su = db.superuser();
    let state = |c: &mut Client, t: &str| -> String {
        c.query_one(
            "SELECT wa.connection_status($1::text::uuid)->>'state'",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    // account_update is routed by value.waba_info.waba_id, not entry.id.
    let restriction = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "9999999", "time": 1790000000, "changes": [{ "field": "account_update", "value": {
            "event": "ACCOUNT_RESTRICTION",
            "waba_info": { "waba_id": WABA_A, "owner_business_id": "555" },
            "restriction_info": [{ "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": "1790100000" }]
        }}]}]
    });
    let summary = ingest(&mut su, &restriction);
    assert_eq!(summary["events"], 1, "{summary}");
    assert_eq!(state(&mut su, &a), "action_required");
    assert_eq!(state(&mut su, &b), "connected", "only A's WABA was named");
    let removed = envelope(
        WABA_B,
        "account_update",
        json!({"event": "PARTNER_REMOVED", "waba_info": {"waba_id": WABA_B}}),
    );
    ingest(&mut su, &removed);
    assert_eq!(state(&mut su, &b), "disconnected");
    assert!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.account_events WHERE kind LIKE 'account_update.%'"
        ) >= 2
    );
}

#[test]
fn template_and_number_updates_are_applied_and_unknown_fields_logged() {
    let (db, a, _) = setup("mgmt");
    let mut su = db.superuser();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "message_template_status_update",
            json!({
        "event": "APPROVED", "message_template_id": 777, "message_template_name": "welcome",
        "message_template_language": "en_US", "reason": "NONE"}),
        ),
    );
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "message_template_status_update",
            json!({
        "event": "REJECTED", "message_template_id": 778, "message_template_name": "promo",
        "message_template_language": "en_US", "reason": "INCORRECT_CATEGORY"}),
        ),
    );
    let rows = su.query("SELECT template_id, status, coalesce(rejected_reason, '-') FROM wa.templates ORDER BY 1", &[]).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(1), "APPROVED");
    assert_eq!(rows[1].get::<_, String>(2), "INCORRECT_CATEGORY");
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "phone_number_quality_update",
            json!({
        "display_phone_number": "15550002001", "event": "FLAGGED", "current_limit": "TIER_1K"}),
        ),
    );
    let row = su.query_one("SELECT status, quality_rating, messaging_limit FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid", &[&a]).unwrap();
    assert_eq!(row.get::<_, String>(0), "flagged");
    assert_eq!(row.get::<_, String>(1), "RED");
    assert_eq!(row.get::<_, String>(2), "TIER_1K");
    let summary = ingest(
        &mut su,
        &envelope(WABA_A, "some_future_field", json!({"anything": [1, 2, 3]})),
    );
    assert_eq!(summary["events"], 1, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
}

#[test]
fn a_thousand_statuses_in_one_delivery_and_a_three_megabyte_body() {
    let (db, a, _) = setup("big");
    let mut su = db.superuser();
    su.batch_execute(&format!(
        "WITH ct AS (SELECT wa._upsert_contact('{a}', '15550001111', NULL, NULL, NULL) AS id),
              cv AS (SELECT wa._conversation_for('{a}', '{PHONE_A}', ct.id) AS id FROM ct)
         INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status, wamid)
         SELECT '{a}', cv.id, 'outbound', 'text', '{{}}', 'queued', 'wamid.bulk' || g FROM cv, generate_series(1, 1000) g"
    ))
    .unwrap();
    let items: Vec<Value> = (1..=1000)
        .map(|i| status(&format!("wamid.bulk{i}"), "delivered", 1_790_000_000, None))
        .collect();
    let summary = ingest(
        &mut su,
        &envelope(WABA_A, "messages", statuses(PHONE_A, items)),
    );
    assert_eq!(summary["statuses"], 1000, "{summary}");
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE status = 'delivered'"
        ),
        1000
    );

    let big = "x".repeat(3 * 1024 * 1024);
    let body = envelope(
        WABA_A,
        "messages",
        inbound_text(
            PHONE_A,
            "wamid.huge",
            Some("15550001111"),
            None,
            1_790_000_000,
            &big,
        ),
    )
    .to_string();
    assert!(body.len() > 3 * 1024 * 1024);
    let summary = ingest_signed(&mut su, &body).unwrap();
    assert_eq!(summary["messages"], 1, "{summary}");
    let len = one_i64(
        &mut su,
        "SELECT length(content->'text'->>'body')::bigint FROM wa.messages WHERE wamid = 'wamid.huge'",
    );
    assert_eq!(len, big.len() as i64);
}

#[test]
fn malformed_input_gets_a_clear_error_or_a_kept_reason_and_the_backend_lives() {
    let (db, _, _) = setup("malformed");
    let mut su = db.superuser();
    // Unsigned path: not a webhook at all is an error and stores nothing.
    for bad in [
        json!([1, 2]),
        json!({"object": "page", "entry": []}),
        json!({"object": "whatsapp_business_account"}),
        json!("text"),
    ] {
        let (code, text) = sql_error_text(su.query_one("SELECT wa.ingest_webhook($1)", &[&bad]));
        assert_eq!(code, "22023", "{bad}: {text}");
        assert!(text.contains("payload is not a WhatsApp webhook"), "{text}");
    }
    let (code, _) = sql_error(su.query_one("SELECT wa.ingest_webhook(NULL)", &[]));
    assert_eq!(code, "22004");
    let mut deep = json!("bottom");
    for _ in 0..300 {
        deep = json!([deep]);
    }
    let (code, text) = sql_error_text(su.query_one(
        "SELECT wa.ingest_webhook($1)",
        &[&json!({"object": "whatsapp_business_account", "entry": deep})],
    ));
    assert_eq!(code, "22023", "{text}");
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.webhook_events"),
        0
    );

    // Parts that cannot be applied are kept with their reasons; the rest lands.
    let mixed = json!({
        "object": "whatsapp_business_account",
        "entry": [
            { "id": WABA_A, "changes": [
                { "field": "messages", "value": {
                    "messaging_product": "whatsapp", "metadata": metadata(PHONE_A),
                    "messages": [
                        { "id": "wamid.ok", "from": "15550001111", "timestamp": "1790000000", "type": "text", "text": { "body": "fine" } },
                        { "from": "15550001111", "type": "text" },
                        { "id": 42, "from": "15550001111" },
                        "not an object",
                        { "id": "wamid.nul", "from": "15550001111", "timestamp": "1790000000", "type": "text", "text": { "body": "a\u{0000}b" } }
                    ],
                    "statuses": [ { "id": "wamid.x" }, { "status": "read" } ]
                }},
                { "field": "messages", "value": { "messaging_product": "whatsapp", "metadata": metadata("9999999"),
                    "messages": [ { "id": "wamid.nobody", "from": "15550001111", "type": "text", "text": { "body": "?" } } ] } },
                { "field": "messages", "value": "not an object" },
                { "nofield": true }
            ]},
            "not an entry",
            { "id": WABA_A }
        ]
    });
    let body = mixed.to_string();
    assert!(body.contains("\\u0000"));
    let summary = ingest_signed(&mut su, &body).unwrap();
    assert_eq!(summary["messages"], 2, "{summary}");
    assert!(summary["errors"].as_i64().unwrap() >= 8, "{summary}");
    assert_eq!(summary["status"], "partial");
    let reasons: Value = su
        .query_one(
            "SELECT errors FROM wa.webhook_events ORDER BY webhook_event_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let text = reasons.to_string();
    // The message for a number no tenant has is not an error: it is parked until the number
    // is connected.
    assert_eq!(summary["parked"], 1, "{summary}");
    assert!(!text.contains("9999999"), "{text}");
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.parked_parts WHERE kind = 'phone_number' AND external_id = '9999999'"
        ),
        1
    );
    assert!(text.contains("message has no \\\"id\\\""), "{text}");
    let nul: String = su
        .query_one(
            "SELECT content->'text'->>'body' FROM wa.messages WHERE wamid = 'wamid.nul'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nul, "a\u{FFFD}b");
    // Signed path: a signed body that is not JSON is kept as rejected, with its reason.
    let summary = ingest_signed(&mut su, "this is not json").unwrap();
    assert_eq!(summary["status"], "rejected");
    let kept = su
        .query_one(
            "SELECT raw_body, status FROM wa.webhook_events ORDER BY webhook_event_id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!(kept.get::<_, String>(0), "this is not json");
    assert_eq!(kept.get::<_, String>(1), "rejected");
    assert_eq!(su.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn signatures_are_checked_over_the_raw_body() {
    let (db, _, _) = setup("signature");
    let mut su = db.superuser();
    let body = envelope(
        WABA_A,
        "messages",
        inbound_text(
            PHONE_A,
            "wamid.sig",
            Some("15550001111"),
            None,
            1_790_000_000,
            "signed",
        ),
    )
    .to_string();
    let good = whatsapp_client::signature::sign(APP_SECRET.as_bytes(), body.as_bytes());
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    let sha1 = format!("sha1={}", &good[7..47]);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (&body, Some(flipped), "does not match"),
        (&body, Some(good[7..].to_string()), "does not start with"),
        (&body, Some(String::new()), ""),
        (&body, None, "missing"),
        (&body, Some(sha1), "does not start with"),
        (&reserialised, Some(good.clone()), "does not match"),
    ];
    for (b, sig, needle) in cases {
        let (code, text) =
            sql_error_text(su.query_one("SELECT wa.ingest_signed_webhook($1, $2)", &[&b, &sig]));
        assert_eq!(code, "28000", "{sig:?}: {text}");
        assert!(text.contains(needle), "{sig:?}: {text}");
        assert!(!text.contains(APP_SECRET));
    }
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.webhook_events"),
        0,
        "nothing stored for bad signatures"
    );
    let ok: Value = su
        .query_one("SELECT wa.ingest_signed_webhook($1, $2)", &[&body, &good])
        .unwrap()
        .get(0);
    assert_eq!(ok["messages"], 1);
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.webhook_events WHERE signature_verified"
        ),
        1
    );
    // The GET handshake.
    let challenge: String = su
        .query_one(
            "SELECT wa.verify_webhook('subscribe', $1, 'ch4ll3nge')",
            &[&VERIFY],
        )
        .unwrap()
        .get(0);
    assert_eq!(challenge, "ch4ll3nge");
    let (code, _) =
        sql_error(su.query_one("SELECT wa.verify_webhook('subscribe', 'wrong', 'x')", &[]));
    assert_eq!(code, "28000");
    let (code, _) = sql_error(su.query_one(
        "SELECT wa.verify_webhook('unsubscribe', $1, 'x')",
        &[&VERIFY],
    ));
    assert_eq!(code, "22023");
}

#[test]
fn tenants_only_see_their_own_conversations_and_messages() {
    let (db, a, b) = setup("isolation");
    let mut su = db.superuser();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.ia",
                Some("15550001111"),
                None,
                1_790_000_000,
                "for A",
            ),
        ),
    );
    ingest(
        &mut su,
        &envelope(
            WABA_B,
            "messages",
            inbound_text(
                PHONE_B,
                "wamid.ib",
                Some("15550001111"),
                None,
                1_790_000_000,
                "for B",
            ),
        ),
    );
    let conv_a: uuid::Uuid = su
        .query_one(
            "SELECT conversation_id FROM wa.conversations WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{b}'"))
        .unwrap();
    let (code, _) = sql_error(app.query("SELECT * FROM wa.conversations($1::text::uuid)", &[&a]));
    assert_eq!(code, "42501");
    let (code, _) = sql_error(app.query("SELECT * FROM wa.messages($1)", &[&conv_a]));
    assert_eq!(code, "42501");
    let (code, _) = sql_error(app.query("SELECT wa.close_conversation($1)", &[&conv_a]));
    assert_eq!(code, "42501");
    let (code, _) = sql_error(app.query("SELECT wa.ingest_webhook('{}')", &[]));
    assert_eq!(code, "42501", "wa_app cannot inject webhooks");
    let mine = app
        .query(
            "SELECT last_message_preview FROM wa.conversations($1::text::uuid)",
            &[&b],
        )
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].get::<_, String>(0), "for B");
    assert_eq!(one_i64(&mut app, "SELECT count(*) FROM wa.messages"), 1);
    let (code, _) = sql_error(app.query("SELECT count(*) FROM wa.webhook_events", &[]));
    assert_eq!(code, "42501", "the raw webhook log is admin-only");
}

#[test]
fn listeners_are_notified_after_commit_and_never_after_rollback() {
    let (db, a, b) = setup("notify");
    let mut su = db.superuser();
    let channel = |c: &mut Client, tenant: &str| -> String {
        c.query_one("SELECT wa.events_channel($1::text::uuid)", &[&tenant])
            .unwrap()
            .get(0)
    };
    let channel_a = channel(&mut su, &a);
    let channel_b = channel(&mut su, &b);
    assert_ne!(channel_a, channel_b);
    assert!(
        channel_a.starts_with("wa_") && channel_a.len() == 35,
        "{channel_a}"
    );
    let mut listener = db.superuser();
    listener
        .batch_execute(&format!("LISTEN {channel_a}"))
        .unwrap();
    // Nothing goes to the old global channel, nor to another tenant's.
    let mut global = db.superuser();
    global.batch_execute("LISTEN wa_events").unwrap();
    let mut other = db.superuser();
    other.batch_execute(&format!("LISTEN {channel_b}")).unwrap();
    su.batch_execute("BEGIN").unwrap();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.rb",
                Some("15550001111"),
                None,
                1_790_000_000,
                "rolled back",
            ),
        ),
    );
    su.batch_execute("ROLLBACK").unwrap();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.cm",
                Some("15550001111"),
                None,
                1_790_000_000,
                "committed",
            ),
        ),
    );
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got.is_empty() && std::time::Instant::now() < deadline {
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(std::time::Duration::from_millis(500));
        while let Ok(Some(note)) = it.next() {
            got.push(serde_json::from_str::<Value>(note.payload()).unwrap());
        }
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["kind"], "message.received");
    assert_eq!(got[0]["tenant_id"], a);
    let message: String = su
        .query_one(
            "SELECT message_id::text FROM wa.messages WHERE wamid = 'wamid.cm'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(got[0]["message_id"], message);
    assert!(got[0]["conversation_id"].is_string());
    for (name, c) in [("wa_events", &mut global), ("B's channel", &mut other)] {
        // A round trip delivers whatever notifications are pending on this connection.
        c.batch_execute("SELECT 1").unwrap();
        let mut n = c.notifications();
        let mut it = n.timeout_iter(std::time::Duration::from_millis(300));
        let leaked: Vec<String> = std::iter::from_fn(|| it.next().ok().flatten())
            .map(|note| note.payload().to_string())
            .collect();
        assert!(leaked.is_empty(), "{name} received {leaked:?}");
    }
}

#[test]
fn closed_conversations_reopen_on_the_next_message_and_mark_read_resets_unread() {
    let (db, a, _) = setup("close");
    let mut su = db.superuser();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.c1",
                Some("15550001111"),
                None,
                1_790_000_000,
                "one",
            ),
        ),
    );
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.c2",
                Some("15550001111"),
                None,
                1_790_000_010,
                "two",
            ),
        ),
    );
    let conv: uuid::Uuid = su
        .query_one("SELECT conversation_id FROM wa.conversations", &[])
        .unwrap()
        .get(0);
    assert!(
        su.query_one("SELECT wa.close_conversation($1)", &[&conv])
            .unwrap()
            .get::<_, bool>(0)
    );
    let closed = su
        .query(
            "SELECT 1 FROM wa.conversations($1::text::uuid, 'closed')",
            &[&a],
        )
        .unwrap();
    assert_eq!(closed.len(), 1);
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.c3",
                Some("15550001111"),
                None,
                1_790_000_020,
                "three",
            ),
        ),
    );
    let row = su
        .query_one(
            "SELECT status, unread_count FROM wa.conversations($1::text::uuid)",
            &[&a],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "open");
    assert_eq!(row.get::<_, i32>(1), 3);
    su.query_one(
        "SELECT wa._mark_read_local($1::text::uuid, 'wamid.c2')",
        &[&a],
    )
    .unwrap();
    let row = su
        .query_one(
            "SELECT unread_count FROM wa.conversations($1::text::uuid)",
            &[&a],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1, "c1 and c2 read, c3 still unread");
}

#[test]
fn paging_with_before_and_before_id_skips_nothing_when_timestamps_tie() {
    let (db, _, _) = setup("paging");
    let mut su = db.superuser();
    // Seven messages with one timestamp (Meta's timestamps have one-second resolution).
    let messages: Vec<Value> = (0..7)
        .map(|i| {
            json!({"id": format!("wamid.p{i}"), "from": "15550001111", "timestamp": "1790000000",
                        "type": "text", "text": {"body": format!("m{i}")}})
        })
        .collect();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            json!({"messaging_product": "whatsapp",
        "metadata": metadata(PHONE_A), "messages": messages}),
        ),
    );
    let conv: uuid::Uuid = su
        .query_one("SELECT conversation_id FROM wa.conversations", &[])
        .unwrap()
        .get(0);
    let mut seen = Vec::new();
    let mut cursor: Option<(std::time::SystemTime, uuid::Uuid)> = None;
    loop {
        let rows = su
            .query(
                "SELECT wamid, created_at, message_id FROM wa.messages($1, 3, $2, $3)",
                &[&conv, &cursor.map(|c| c.0), &cursor.map(|c| c.1)],
            )
            .unwrap();
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            seen.push(r.get::<_, String>(0));
        }
        let last = rows.last().unwrap();
        cursor = Some((last.get(1), last.get(2)));
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..7).map(|i| format!("wamid.p{i}")).collect::<Vec<_>>()
    );
}

/// The messages of `batched_delivery_*`: repeat customers, a customer first seen by BSUID and
/// then with both ids, a message listed twice, an older message after a newer one, a media
/// message, a tie of timestamps, and a replay of an earlier delivery.
fn batch_items(t: i64) -> Vec<Value> {
    let x = Some("15550001111");
    let bsuid = Some("US.1234567890");
    let z = Some("15550003333");
    let mut image = inbound_text(PHONE_A, "wamid.m6", z, None, t + 4, "");
    image["messages"][0]["type"] = json!("image");
    image["messages"][0]["image"] = json!({ "id": "media-6", "mime_type": "image/jpeg" });
    vec![
        inbound_text(PHONE_A, "wamid.m1", x, None, t, "x one"),
        inbound_text(PHONE_A, "wamid.m2", None, bsuid, t + 1, "y one"),
        inbound_text(PHONE_A, "wamid.m3", x, None, t + 5, "x latest"),
        inbound_text(
            PHONE_A,
            "wamid.m4",
            Some("15550002222"),
            bsuid,
            t + 2,
            "y two",
        ),
        inbound_text(PHONE_A, "wamid.m3", x, None, t + 5, "x latest"),
        inbound_text(PHONE_A, "wamid.m5", x, None, t + 3, "x older"),
        image,
        inbound_text(PHONE_A, "wamid.m7", z, None, t + 4, "z tie"),
        inbound_text(
            PHONE_A,
            "wamid.pre",
            Some("15550004444"),
            None,
            t,
            "earlier",
        ),
    ]
}

#[test]
fn a_batched_delivery_leaves_the_state_of_one_message_per_delivery() {
    let t = 1_790_000_000;
    let items = batch_items(t);
    let earlier = envelope(WABA_A, "messages", items[8].clone());
    let mut states = Vec::new();
    for (label, batched) in [("batch_one", true), ("batch_each", false)] {
        let (db, _, _) = setup(label);
        let mut su = db.superuser();
        ingest(&mut su, &earlier);
        if batched {
            let summary = ingest(
                &mut su,
                &envelope(WABA_A, "messages", batch(PHONE_A, &items)),
            );
            assert_eq!(summary["messages"], 9, "{summary}");
            assert_eq!(summary["errors"], 0, "{summary}");
        } else {
            for item in &items {
                let summary = ingest(&mut su, &envelope(WABA_A, "messages", item.clone()));
                assert_eq!(summary["errors"], 0, "{summary}");
            }
        }
        let mut state = state(&mut su);
        for sql in [
            "SELECT format('%s:%s:%s', m.wamid, m.type, c.wa_id) FROM wa.messages m
               JOIN wa.conversations v USING (tenant_id, conversation_id)
               JOIN wa.contacts c USING (tenant_id, contact_id) ORDER BY 1",
            "SELECT format('%s:%s', kind, payload) FROM wa.outbox ORDER BY 1",
        ] {
            for r in su.query(sql, &[]).unwrap() {
                state.push(r.get(0));
            }
        }
        states.push(state);
    }
    assert_eq!(states[0], states[1]);
    let state = &states[0];
    // Spot checks of what both ways must give.
    let has = |s: &str| state.iter().any(|line| line == s);
    assert!(has("wamid.m4:text:15550002222"), "{state:#?}");
    assert!(
        has("15550002222:US.1234567890"),
        "one contact for the BSUID and phone: {state:#?}"
    );
    assert!(has("media_download:media-6"), "{state:#?}");
    let conversations: Vec<&String> = state.iter().filter(|l| l.starts_with("open:")).collect();
    assert_eq!(conversations.len(), 4, "{state:#?}");
    assert!(
        conversations
            .iter()
            .any(|l| l.starts_with("open:3:") && l.contains(":x latest:")),
        "three unread from x, the newest previewed: {conversations:#?}"
    );
    assert!(
        conversations
            .iter()
            .any(|l| l.starts_with("open:2:") && l.contains(":z tie:")),
        "equal times: the later listed is previewed: {conversations:#?}"
    );
    assert_eq!(
        state.iter().filter(|l| l.starts_with("wamid.m3:")).count(),
        2
    );
}

#[test]
fn a_message_postgres_rejects_is_isolated_and_the_rest_of_the_batch_lands() {
    let (db, _, _) = setup("batch_isolate");
    let mut su = db.superuser();
    let t = 1_790_000_000;
    let items = [
        inbound_text(
            PHONE_A,
            "wamid.g1",
            Some("15550001111"),
            None,
            t,
            "good one",
        ),
        // Not a phone number: the contact's CHECK rejects it.
        inbound_text(PHONE_A, "wamid.bad", Some("12"), None, t + 1, "bad"),
        inbound_text(
            PHONE_A,
            "wamid.g2",
            Some("15550001111"),
            None,
            t + 2,
            "good two",
        ),
    ];
    let summary = ingest(
        &mut su,
        &envelope(WABA_A, "messages", batch(PHONE_A, &items)),
    );
    assert_eq!(summary["messages"], 2, "{summary}");
    assert_eq!(summary["errors"], 1, "{summary}");
    assert_eq!(summary["status"], "partial", "{summary}");
    let errors: Value = su
        .query_one("SELECT errors FROM wa.webhook_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        errors[0]["at"], "entry[0].changes[0].messages[1]",
        "{errors}"
    );
    assert!(
        errors[0]["reason"].as_str().unwrap().contains("23514"),
        "the check violation's SQLSTATE: {errors}"
    );
    let row = su
        .query_one(
            "SELECT unread_count, last_message_preview FROM wa.conversations",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, String>(1), "good two");
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.messages"), 2);
}

#[test]
fn a_message_for_a_number_connected_later_is_applied_on_connect_once() {
    let (db, _, _) = setup("parked");
    let mut su = db.superuser();
    let late: String = su
        .query_one("SELECT wa.create_tenant('Late')::text", &[])
        .unwrap()
        .get(0);
    let delivery = envelope(
        "1003",
        "messages",
        inbound_text(
            "2003",
            "wamid.early1",
            Some("15550009999"),
            None,
            1_700_000_000,
            "are you open?",
        ),
    );
    // Meta sends as soon as the WABA is subscribed, before the connection has committed.
    let result = ingest(&mut su, &delivery);
    assert_eq!(result["status"], "processed", "{result}");
    assert_eq!(result["parked"], 1, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.early1'"
        ),
        0
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    su.execute(
        "SELECT wa.connect_tenant($1::text::uuid, '1003', '2003', 'EAAGtesttoken0123456789')",
        &[&late],
    )
    .unwrap();
    let stored: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.early1' AND tenant_id = $1::text::uuid",
            &[&late],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "applied on connect");
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.parked_parts WHERE applied_at IS NULL"
        ),
        0
    );
    // Meta's retry of the same delivery, and an operator's reprocessing, change nothing.
    let again = ingest(&mut su, &delivery);
    assert_eq!(again["parked"], 0, "{again}");
    su.query_one(
        "SELECT wa.reprocess_webhooks(now() - interval '1 hour')",
        &[],
    )
    .unwrap();
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.early1'"
        ),
        1
    );
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT unread_count::bigint FROM wa.conversations v JOIN wa.contacts c USING (tenant_id, contact_id) WHERE c.wa_id = '15550009999'"
        ),
        1
    );
}

#[test]
fn a_lock_timeout_fails_the_whole_delivery_and_the_retry_stores_it_once() {
    let (db, a, _) = setup("locktimeout");
    // Another session holds the tenant's row, as a connection being stored does.
    let mut holder = db.superuser();
    holder.batch_execute("BEGIN").unwrap();
    holder
        .execute(
            "SELECT 1 FROM wa.tenants WHERE tenant_id = $1::text::uuid FOR UPDATE",
            &[&a],
        )
        .unwrap();
    let mut gw = db.admin();
    gw.batch_execute("SET lock_timeout = '1s'").unwrap();
    // A customer seen for the first time: storing the contact must lock the tenant's row.
    let delivery = envelope(
        WABA_A,
        "messages",
        inbound_text(
            PHONE_A,
            "wamid.newcustomer",
            Some("15550004242"),
            None,
            1_700_000_000,
            "hello",
        ),
    );
    let (code, message) = sql_error(gw.query_one("SELECT wa.ingest_webhook($1)", &[&delivery]));
    assert_eq!(code, "55P03", "{message}");
    // Nothing of the failed attempt was kept: the gateway answers 503, and Meta retries.
    assert_eq!(
        one_i64(
            &mut holder,
            "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.newcustomer'"
        ),
        0
    );
    holder.batch_execute("COMMIT").unwrap();
    let result = ingest(&mut gw, &delivery);
    assert_eq!(result["status"], "processed", "{result}");
    ingest(&mut gw, &delivery);
    let mut su = db.superuser();
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.newcustomer'"
        ),
        1
    );
}

#[test]
fn prune_removes_what_is_no_longer_needed_in_batches_and_keeps_what_still_is() {
    let (db, a, _) = setup("prune");
    let mut su = db.superuser();
    let text = |waba: &str, phone: &str, wamid: &str| {
        envelope(
            waba,
            "messages",
            inbound_text(
                phone,
                wamid,
                Some("15550001111"),
                None,
                1_700_000_000,
                "hello",
            ),
        )
    };
    for wamid in ["wamid.old0", "wamid.old1", "wamid.old2", "wamid.recent"] {
        assert_eq!(
            ingest(&mut su, &text(WABA_A, PHONE_A, wamid))["status"],
            "processed"
        );
    }
    // Two parts parked for numbers nobody has: one still waits, one has expired.
    assert_eq!(
        ingest(&mut su, &text("1009", "9999001", "wamid.waiting"))["parked"],
        1
    );
    assert_eq!(
        ingest(&mut su, &text("1008", "9999002", "wamid.expired"))["parked"],
        1
    );
    su.batch_execute(
        "UPDATE wa.webhook_events SET received_at = now() - interval '100 days'
          WHERE payload::text NOT LIKE '%wamid.recent%';
         UPDATE wa.parked_parts SET expires_at = now() - interval '1 hour'
          WHERE webhook_event_id IN (SELECT webhook_event_id FROM wa.webhook_events
                                      WHERE payload::text LIKE '%wamid.expired%');",
    )
    .unwrap();
    // A permanent failure, a status whose message never came, media old and new.
    let failed = queued_outbound(&mut su, &a, PHONE_A, "15550001111");
    su.execute(
        "UPDATE wa.messages SET status = 'failed' WHERE message_id = $1::text::uuid",
        &[&failed],
    )
    .unwrap();
    su.execute(
        "INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, recipient, payload,
                                next_attempt_at, failed_at)
         VALUES ($1::text::uuid, 'message', $2::text::uuid, $3, '15550001111', '{}', 'infinity',
                 now() - interval '100 days')",
        &[&a, &failed, &PHONE_A],
    )
    .unwrap();
    su.execute(
        "INSERT INTO wa.pending_statuses (tenant_id, wamid, status, status_payload, received_at)
         VALUES ($1::text::uuid, 'wamid.never', 'delivered', '{}', now() - interval '100 days');
        ",
        &[&a],
    )
    .unwrap();
    su.execute(
        "INSERT INTO wa.media (tenant_id, media_id, mime_type, sha256, size_bytes, content, downloaded_at)
         VALUES ($1::text::uuid, 'm.old', 'image/jpeg', 'aa', 3, '\\x010203', now() - interval '100 days'),
                ($1::text::uuid, 'm.new', 'image/jpeg', 'bb', 3, '\\x040506', now())",
        &[&a],
    )
    .unwrap();

    // Refused: a retention under a day, a batch out of range, a caller that is not wa_admin.
    let prune = |c: &mut Client, older: &str, batch: i32| {
        c.query_one("SELECT wa.prune($1::text::interval, $2)", &[&older, &batch])
            .map(|r| r.get::<_, Value>(0))
    };
    assert_eq!(sql_error(prune(&mut su, "1 hour", 10)).0, "22023");
    assert_eq!(sql_error(prune(&mut su, "30 days", 0)).0, "22023");
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    assert_eq!(sql_error(prune(&mut app, "30 days", 10)).0, "42501");

    // Two rows of a kind per call, until it says it is done.
    let first = prune(&mut su, "30 days", 2).unwrap();
    assert_eq!(first["webhook_payloads"], 2, "{first}");
    assert_eq!(first["done"], false, "{first}");
    let mut payloads = first["webhook_payloads"].as_i64().unwrap();
    let mut calls = 1;
    loop {
        let r = prune(&mut su, "30 days", 2).unwrap();
        payloads += r["webhook_payloads"].as_i64().unwrap();
        calls += 1;
        if r["done"] == true {
            break;
        }
        assert!(calls < 10, "{r}");
    }
    // The three old deliveries and the one whose parked part expired; not the one whose
    // part still waits, nor the recent one.
    assert_eq!(payloads, 4);
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.webhook_events
              WHERE pruned_at IS NOT NULL AND payload IS NULL AND raw_body IS NULL
                AND summary IS NOT NULL AND status = 'processed'"
        ),
        4
    );
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.webhook_events WHERE payload IS NOT NULL
                AND (payload::text LIKE '%wamid.recent%' OR payload::text LIKE '%wamid.waiting%')"
        ),
        2
    );
    // What the deliveries applied stays.
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE wamid LIKE 'wamid.old%' OR wamid = 'wamid.recent'"
        ),
        4
    );
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.outbox"),
        0,
        "the permanent failure's outbox row"
    );
    assert_eq!(
        one_i64(
            &mut su,
            &format!(
                "SELECT count(*) FROM wa.messages WHERE message_id = '{failed}' AND status = 'failed'"
            )
        ),
        1
    );
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.pending_statuses"),
        0
    );
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.parked_parts p JOIN wa.webhook_events e USING (webhook_event_id)
              WHERE p.applied_at IS NULL AND e.payload::text LIKE '%wamid.waiting%'"
        ),
        1
    );
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.parked_parts"), 1);
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.media
              WHERE (media_id = 'm.old' AND content IS NULL AND size_bytes = 3 AND sha256 = 'aa')
                 OR (media_id = 'm.new' AND content = '\\x040506')"
        ),
        2
    );
    // Nothing left to do: a call changes nothing.
    let again = prune(&mut su, "30 days", 2).unwrap();
    assert_eq!(
        again,
        json!({"webhook_payloads": 0, "failed_outbox": 0, "pending_statuses": 0,
               "parked_parts": 0, "media_content": 0, "signup_states": 0, "done": true})
    );
    // The part that still waited kept its delivery: connecting its number applies it.
    let late: String = su
        .query_one("SELECT wa.create_tenant('Late')::text", &[])
        .unwrap()
        .get(0);
    su.execute(
        "SELECT wa.connect_tenant($1::text::uuid, '1009', '9999001', 'EAAGtesttoken0123456789')",
        &[&late],
    )
    .unwrap();
    assert_eq!(
        one_i64(
            &mut su,
            &format!(
                "SELECT count(*) FROM wa.messages WHERE wamid = 'wamid.waiting' AND tenant_id = '{late}'"
            )
        ),
        1
    );
}

/// The statuses of a storm: for each of `n` outbound messages, sent → delivered → read (or
/// failed), each twice, plus statuses of messages never seen; shuffled deterministically.
/// A third of the messages have no wamid yet (the worker's answer is still on the way): their
/// statuses find them through our id when they carry it, and wait in pending_statuses when
/// they do not. Some of those come back under a second wamid (Meta took the message twice;
/// every status of those carries our id, as Meta's do).
/// Every status carries a pricing and a conversation of its own, so that which one is kept
/// depends on the order.
fn status_storm(ids: &[String]) -> Vec<Value> {
    let mut items = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let known = i % 3 != 0;
        let wamid = format!("wamid.storm.{i}");
        let t = 1_790_000_000 + i as i64 * 10;
        let steps: &[&str] = if i % 10 == 7 {
            &["sent", "failed"]
        } else {
            &["sent", "delivered", "read"]
        };
        let twice = !known && i % 11 == 5;
        for (j, st) in steps.iter().enumerate() {
            let callback = (known || twice || (i + j) % 2 == 0).then_some(id.as_str());
            let w = if twice && j == 1 {
                format!("{wamid}.twice")
            } else {
                wamid.clone()
            };
            let mut s = status(&w, st, t + j as i64, callback);
            s["pricing"]["category"] = json!(format!("{st}-{i}"));
            s["conversation"]["id"] = json!(format!("conv-{st}-{i}"));
            items.push(s.clone());
            items.push(s);
        }
    }
    for k in 0..10 {
        items.push(status(
            &format!("wamid.ghost.{k}"),
            "delivered",
            1_790_000_000,
            None,
        ));
        items.push(status(
            &format!("wamid.ghost.{k}"),
            "read",
            1_790_000_001,
            None,
        ));
    }
    // A deterministic shuffle (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
    items
}

/// A database with `n` outbound messages for tenant A (their ids, in order) and a listener on
/// A's events channel.
fn storm_setup(label: &str, n: usize) -> (TestDb, Vec<String>, Client) {
    let (db, a, _) = setup(label);
    let mut su = db.superuser();
    let ids: Vec<String> = (0..n)
        .map(|i| queued_outbound(&mut su, &a, PHONE_A, &format!("1555100{i:04}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 3 != 0 {
            su.execute(
                "UPDATE wa.messages SET wamid = $2, status = 'sent' WHERE message_id = $1::text::uuid",
                &[id, &format!("wamid.storm.{i}")],
            )
            .unwrap();
        } else {
            su.execute(
                "INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, recipient, payload)
                 SELECT tenant_id, 'message', message_id, $2, 'r', '{}' FROM wa.messages
                  WHERE message_id = $1::text::uuid",
                &[id, &PHONE_A],
            )
            .unwrap();
        }
    }
    let channel: String = su
        .query_one(
            "SELECT events_channel FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    let mut listener = db.superuser();
    listener
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .unwrap();
    (db, ids, listener)
}

/// Every message's status columns, named by its position; the pending statuses; the outbox.
fn storm_state(c: &mut Client, ids: &[String]) -> Vec<String> {
    let index = |id: &str| ids.iter().position(|x| x == id).unwrap();
    let mut out: Vec<String> = c
        .query(
            "SELECT message_id::text, format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', status, wamid,
                    extra_wamids, sent_at, delivered_at, read_at, played_at, failed_at, error,
                    pricing, meta_conversation)
               FROM wa.messages",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", index(r.get(0)), r.get::<_, String>(1)))
        .collect();
    out.sort();
    for sql in [
        "SELECT wamid || ':' || status FROM wa.pending_statuses ORDER BY 1",
        "SELECT 'outbox ' || count(*) FROM wa.outbox",
    ] {
        out.extend(c.query(sql, &[]).unwrap().iter().map(|r| r.get(0)));
    }
    out
}

/// The message.status notifications received, as (position, status), sorted.
fn storm_notifications(listener: &mut Client, ids: &[String]) -> Vec<(usize, String)> {
    let mut got: Vec<(usize, String)> = listener
        .notifications()
        .timeout_iter(std::time::Duration::from_millis(500))
        .iterator()
        .map(|n| {
            let v: Value = serde_json::from_str(n.unwrap().payload()).unwrap();
            let id = v["message_id"].as_str().unwrap();
            (
                ids.iter().position(|x| x == id).unwrap(),
                v["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    got
}

#[test]
fn a_shuffled_replayed_status_storm_leaves_the_same_state_batched_as_one_by_one() {
    const N: usize = 120;
    let (one_db, one_ids, mut one_listener) = storm_setup("storm_one", N);
    let (batch_db, batch_ids, mut batch_listener) = storm_setup("storm_batch", N);
    let mut one = one_db.superuser();
    let mut batched = batch_db.superuser();
    let one_storm = status_storm(&one_ids);
    let batch_storm = status_storm(&batch_ids);
    assert_eq!(one_storm.len(), N / 10 * 58 + 20);
    // One status per delivery, in the storm's order…
    for s in &one_storm {
        let summary = ingest(
            &mut one,
            &envelope(WABA_A, "messages", statuses(PHONE_A, vec![s.clone()])),
        );
        assert_eq!(summary["statuses"], 1, "{summary}");
    }
    // …and the same order in deliveries of 100.
    for chunk in batch_storm.chunks(100) {
        let summary = ingest(
            &mut batched,
            &envelope(WABA_A, "messages", statuses(PHONE_A, chunk.to_vec())),
        );
        assert_eq!(summary["statuses"], chunk.len(), "{summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
    }
    let expected = storm_state(&mut one, &one_ids);
    assert_eq!(storm_state(&mut batched, &batch_ids), expected);

    // The state itself is the one the statuses describe.
    assert!(
        expected.contains(&"wamid.ghost.3:read".to_string()),
        "{expected:?}"
    );
    assert!(expected.contains(&"outbox 0".to_string()), "{expected:?}");
    let mut by_status = |s: &str| {
        one.query_one("SELECT count(*) FROM wa.messages WHERE status = $1", &[&s])
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(by_status("read"), (N - N / 10) as i64);
    assert_eq!(by_status("failed"), (N / 10) as i64);
    assert_eq!(
        one_i64(
            &mut one,
            "SELECT count(*) FROM wa.messages WHERE wamid IS NULL OR sent_at IS NULL OR pricing IS NULL"
        ),
        0
    );
    // Messages that came back under a second wamid keep it, whichever came first.
    let twice = (0..N).filter(|i| i % 3 == 0 && i % 11 == 5).count() as i64;
    assert!(twice > 0);
    assert_eq!(
        one_i64(
            &mut one,
            "SELECT count(*) FROM wa.messages WHERE cardinality(extra_wamids) = 1"
        ),
        twice
    );
    assert_eq!(
        one_i64(
            &mut one,
            "SELECT count(*) FROM wa.messages WHERE error->0->>'code' = '131026'"
        ),
        (N / 10) as i64
    );

    // One notification for each status that moved a message forward, in both: every message
    // was notified, its final status among them.
    let notified = storm_notifications(&mut one_listener, &one_ids);
    for i in 0..N {
        let last = if i % 10 == 7 { "failed" } else { "read" };
        assert!(
            notified.contains(&(i, last.to_string())),
            "message {i}: {notified:?}"
        );
    }
    assert_eq!(
        storm_notifications(&mut batch_listener, &batch_ids),
        notified
    );
}
