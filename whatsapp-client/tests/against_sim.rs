//! The client against the Graph API simulator (`graph-sim`), over real HTTP on loopback: every
//! endpoint, and every fault class mapped to the classification a sender acts on.

use graph_sim::{Sim, SimConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use whatsapp_client::api::{ApiError, GraphClient, GraphConfig, TransportKind};
use whatsapp_client::message::{Content, OutboundMessage, build_send_body};
use whatsapp_client::{ErrorClass, Recipient, ThrottleScope};

/// A simulator without the pair rate limit (most tests send several messages to one user).
fn sim() -> Sim {
    Sim::start(SimConfig {
        pair_rate_limit: false,
        ..SimConfig::default()
    })
    .unwrap()
}

fn client(sim: &Sim) -> GraphClient {
    GraphClient::new(GraphConfig::new(sim.base_url()).with_timeout(Duration::from_secs(5)))
}

struct Tenant {
    waba_id: String,
    phone_number_id: String,
    token: String,
}

/// A business fresh out of Embedded Signup, connected the way `wa.exchange_code` does it.
fn onboard(sim: &Sim, c: &GraphClient) -> Tenant {
    let signup = sim.signup().unwrap();
    let token = c
        .exchange_code(sim.app_id(), sim.app_secret(), &signup.code, None)
        .unwrap();
    Tenant {
        waba_id: signup.waba_id,
        phone_number_id: signup.phone_number_id,
        token: token.access_token.expose().to_owned(),
    }
}

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

fn phone(n: u32) -> Recipient {
    Recipient::parse(&format!("1650555{n:04}")).unwrap()
}

fn send(c: &GraphClient, t: &Tenant, to: &Recipient) -> Result<String, ApiError> {
    c.send_message(
        &t.phone_number_id,
        &t.token,
        to,
        &text("hello"),
        Some("out-1"),
    )
    .map(|r| r.message_id().unwrap().to_owned())
}

fn admin(sim: &Sim, method: &str, path: &str, body: Value) -> Value {
    let (status, v) = sim.admin(method, path, body);
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

fn fail_next(sim: &Sim, endpoint: &str, code: u32) {
    admin(
        sim,
        "POST",
        "fail_next",
        json!({"endpoint": endpoint, "code": code, "count": 1}),
    );
}

fn assert_no_secret(e: &ApiError, secrets: &[&str]) {
    let text = format!("{e} {e:?} {}", e.to_json());
    for s in secrets {
        assert!(!text.contains(s), "error text leaks a secret: {text}");
    }
}

#[test]
fn embedded_signup_flow() {
    let sim = sim();
    let c = client(&sim);
    let signup = sim.signup().unwrap();
    let token = c
        .exchange_code(sim.app_id(), sim.app_secret(), &signup.code, None)
        .unwrap();
    assert!(!format!("{token:?}").contains(token.access_token.expose()));
    let token = token.access_token.expose().to_owned();

    let info = c
        .debug_token(sim.app_id(), sim.app_secret(), &token)
        .unwrap();
    assert!(info.is_valid);
    assert_eq!(info.app_id.as_deref(), Some(sim.app_id()));
    assert!(
        info.target_ids("whatsapp_business_management")
            .contains(&signup.waba_id.as_str()),
        "{info:?}"
    );

    c.subscribe_app(&signup.waba_id, &token).unwrap();
    c.register_phone(&signup.phone_number_id, &token, "123456")
        .unwrap();

    let number = c
        .phone_number_info(&signup.phone_number_id, &token)
        .unwrap();
    assert_eq!(
        number.verified_name.as_deref(),
        Some(signup.verified_name.as_str())
    );
    assert!(number.display_phone_number.is_some());
    assert!(number.quality_rating.is_some());

    let numbers = c.list_phone_numbers(&signup.waba_id, &token).unwrap();
    assert!(
        numbers
            .iter()
            .any(|n| n.id.as_deref() == Some(signup.phone_number_id.as_str()))
    );
    let templates = c.list_templates(&signup.waba_id, &token).unwrap();
    assert!(!templates.is_empty());
    assert!(templates.iter().all(|t| !t.name.is_empty()));

    // a code is single-use; the second exchange fails without echoing secrets
    let e = c
        .exchange_code(sim.app_id(), sim.app_secret(), &signup.code, None)
        .unwrap_err();
    assert!(matches!(e, ApiError::Graph { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert_no_secret(&e, &[sim.app_secret(), &signup.code]);
}

#[test]
fn wrong_app_secret_is_rejected_without_leaking_it() {
    let sim = sim();
    let c = client(&sim);
    let signup = sim.signup().unwrap();
    let e = c
        .exchange_code(sim.app_id(), "not-the-app-secret", &signup.code, None)
        .unwrap_err();
    assert!(e.graph_error().is_some(), "{e}");
    assert_no_secret(&e, &["not-the-app-secret", &signup.code]);
}

#[test]
fn sends_to_phone_numbers_and_bsuids() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);

    let r = c
        .send_message(
            &t.phone_number_id,
            &t.token,
            &phone(1),
            &text("hi"),
            Some("out-1"),
        )
        .unwrap();
    assert!(r.message_id().unwrap().starts_with("wamid."));
    assert_eq!(r.contacts[0].input.as_deref(), Some("16505550001"));
    assert_eq!(r.contacts[0].wa_id.as_deref(), Some("16505550001"));

    let bsuid = Recipient::parse("US.13491208655302741918").unwrap();
    let r = c
        .send_message(&t.phone_number_id, &t.token, &bsuid, &text("hi"), None)
        .unwrap();
    assert_eq!(
        r.contacts[0].user_id.as_deref(),
        Some("US.13491208655302741918")
    );
    assert_eq!(
        r.contacts[0].input.as_deref(),
        Some("US.13491208655302741918")
    );

    // the raw path the worker uses, with a typed message
    let body = OutboundMessage::new(phone(2), Content::text("typed"))
        .with_callback_data("out-2")
        .to_body()
        .unwrap();
    let r = c.send_raw(&t.phone_number_id, &t.token, &body).unwrap();
    assert!(r.message_id().is_some());

    // a template
    let tpl =
        json!({"type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}});
    let body = build_send_body(&phone(3), &tpl, None).unwrap();
    c.send_raw(&t.phone_number_id, &t.token, &body).unwrap();

    // invalid messages never reach the network
    let before = sim.stats();
    let e = c
        .send_message(
            &t.phone_number_id,
            &t.token,
            &phone(1),
            &json!({"type":"text"}),
            None,
        )
        .unwrap_err();
    assert!(matches!(e, ApiError::Invalid(_)));
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert_eq!(
        sim.stats()["endpoints"]["send"],
        before["endpoints"]["send"]
    );
}

#[test]
fn marks_messages_read_with_and_without_typing() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    let inbound = admin(
        &sim,
        "POST",
        "inbound",
        json!({"phone_number_id": t.phone_number_id, "from": "16505550009", "text": "hello"}),
    );
    let wamid = inbound["wamid"].as_str().unwrap();
    assert!(wamid.starts_with("wamid."));
    c.mark_read(&t.phone_number_id, &t.token, wamid, false)
        .unwrap();
    c.mark_read(&t.phone_number_id, &t.token, wamid, true)
        .unwrap();
}

#[test]
fn media_upload_info_download_delete() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let id = c
        .upload_media(
            &t.phone_number_id,
            &t.token,
            &data,
            "image/png",
            "photo.png",
        )
        .unwrap();
    assert!(!id.is_empty());

    let info = c
        .media_info(&id, &t.token, Some(&t.phone_number_id))
        .unwrap();
    assert_eq!(info.mime_type.as_deref(), Some("image/png"));
    if let Some(size) = info.file_size {
        assert_eq!(size, data.len() as u64);
    }
    let got = c.download_media(&info.url, &t.token, 1 << 20).unwrap();
    assert_eq!(got.bytes, data);

    // over the cap: an error, not a truncated file
    let e = c.download_media(&info.url, &t.token, 1000).unwrap_err();
    assert!(matches!(e, ApiError::TooLarge { limit: 1000 }), "{e}");
    let mut sink = Vec::new();
    let e = c
        .download_media_to(&info.url, &t.token, 10_000, &mut sink)
        .unwrap_err();
    assert!(matches!(e, ApiError::TooLarge { .. }));
    assert!(sink.len() <= 10_000);

    // the download URL needs the bearer token
    let e = c
        .download_media(&info.url, "EAAGwrongtoken", 1 << 20)
        .unwrap_err();
    assert!(e.http_status().is_some_and(|s| s >= 400), "{e}");
    assert_no_secret(&e, &["EAAGwrongtoken"]);

    c.delete_media(&id, &t.token).unwrap();
    let e = c.media_info(&id, &t.token, None).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
}

#[test]
fn inbound_media_is_fetched_by_id() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    let inbound = admin(
        &sim,
        "POST",
        "inbound",
        json!({"phone_number_id": t.phone_number_id, "from": "16505550010",
               "message": {"type": "image", "image": {"caption": "look"}}}),
    );
    let media_id = inbound["media_id"].as_str().unwrap();
    let info = c
        .media_info(media_id, &t.token, Some(&t.phone_number_id))
        .unwrap();
    let got = c.download_media(&info.url, &t.token, 10 << 20).unwrap();
    assert!(!got.bytes.is_empty());
    assert!(got.content_type.is_some());
    if let Some(sha) = &info.sha256 {
        assert_eq!(sha.len(), 64);
    }
}

#[test]
fn server_errors_are_retried() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    admin(
        &sim,
        "POST",
        "faults",
        json!({"error_ratio": 1.0, "endpoints": ["send"]}),
    );
    for _ in 0..5 {
        let e = send(&c, &t, &phone(1)).unwrap_err();
        assert!(e.http_status().is_some_and(|s| s >= 500), "{e}");
        assert_eq!(e.class(), ErrorClass::Retry, "{e}");
    }
    admin(&sim, "POST", "faults", json!({"clear": true}));
    send(&c, &t, &phone(1)).unwrap();
    for code in [1, 2, 131000] {
        fail_next(&sim, "send", code);
        let e = send(&c, &t, &phone(1)).unwrap_err();
        assert_eq!(e.graph_error().unwrap().code, Some(i64::from(code)));
        assert_eq!(e.class(), ErrorClass::Retry, "code {code}");
    }
}

#[test]
fn timeouts_are_retried_as_transport_errors() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    admin(
        &sim,
        "POST",
        "faults",
        json!({"timeout_ratio": 1.0, "timeout_ms": 0, "endpoints": ["send"]}),
    );
    let impatient =
        GraphClient::new(GraphConfig::new(sim.base_url()).with_timeout(Duration::from_millis(300)));
    let e = send(&impatient, &t, &phone(1)).unwrap_err();
    match &e {
        ApiError::Transport {
            kind,
            maybe_delivered,
            ..
        } => {
            assert_eq!(*kind, TransportKind::Timeout, "{e}");
            // the request was sent: a retry may duplicate it
            assert!(maybe_delivered);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert_eq!(e.class(), ErrorClass::Retry);
    assert_no_secret(&e, &[&t.token]);
    admin(&sim, "POST", "faults", json!({"clear": true}));
    send(&c, &t, &phone(1)).unwrap();
}

#[test]
fn connection_failures_are_retried_and_not_delivered() {
    let sim = sim();
    let url = sim.base_url();
    sim.shutdown();
    let c = GraphClient::new(GraphConfig::new(url).with_timeout(Duration::from_secs(2)));
    let e = c
        .send_message("123", "EAAGtoken", &phone(1), &text("x"), None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::Transport {
                kind: TransportKind::Connect,
                maybe_delivered: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Retry);
    assert_no_secret(&e, &["EAAGtoken"]);
}

#[test]
fn rate_limits_throttle_with_the_right_scope() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    for (code, scope) in [
        (130429, ThrottleScope::PhoneNumber),
        (131048, ThrottleScope::PhoneNumber),
        (131056, ThrottleScope::Recipient),
        (80007, ThrottleScope::BusinessAccount),
        (4, ThrottleScope::App),
    ] {
        fail_next(&sim, "send", code);
        let e = send(&c, &t, &phone(1)).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Throttle(scope), "code {code}: {e}");
    }
}

#[test]
fn pair_rate_limit_throttles_only_that_recipient() {
    let sim = Sim::start(SimConfig::default()).unwrap();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    admin(
        &sim,
        "POST",
        "limits",
        json!({"pair_rate_limit": true, "pair_burst": 1, "pair_interval_ms": 60000}),
    );
    send(&c, &t, &phone(1)).unwrap();
    let e = send(&c, &t, &phone(1)).unwrap_err();
    assert_eq!(e.graph_error().unwrap().code, Some(131056));
    assert_eq!(e.class(), ErrorClass::Throttle(ThrottleScope::Recipient));
    // another recipient is unaffected
    send(&c, &t, &phone(2)).unwrap();
}

#[test]
fn throughput_limit_throttles_the_number() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    admin(
        &sim,
        "POST",
        &format!("numbers/{}", t.phone_number_id),
        json!({"rate_limit_per_sec": 1}),
    );
    let mut throttled = None;
    for n in 0..20 {
        if let Err(e) = send(&c, &t, &phone(100 + n)) {
            throttled = Some(e);
            break;
        }
    }
    let e = throttled.expect("20 sends at 1/s must hit the throughput limit");
    assert_eq!(e.graph_error().unwrap().code, Some(130429));
    assert_eq!(e.class(), ErrorClass::Throttle(ThrottleScope::PhoneNumber));
}

#[test]
fn expired_or_revoked_tokens_need_reauthorization() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    let e = send(
        &c,
        &Tenant {
            token: "EAAGunknowntoken".into(),
            ..Tenant {
                waba_id: t.waba_id.clone(),
                phone_number_id: t.phone_number_id.clone(),
                token: String::new(),
            }
        },
        &phone(1),
    )
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Reauthorize, "{e}");
    assert_eq!(e.graph_error().unwrap().code, Some(190));
    assert_no_secret(&e, &["EAAGunknowntoken"]);

    fail_next(&sim, "send", 190);
    let e = send(&c, &t, &phone(1)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Reauthorize);

    admin(
        &sim,
        "POST",
        &format!("tokens/{}/revoke", t.token),
        json!({}),
    );
    let e = send(&c, &t, &phone(1)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Reauthorize, "{e}");
    assert_no_secret(&e, &[&t.token]);
    let e = c
        .phone_number_info(&t.phone_number_id, &t.token)
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Reauthorize);
}

#[test]
fn undeliverable_recipients_fail_permanently() {
    let sim = sim();
    let c = client(&sim);
    let t = onboard(&sim, &c);
    admin(
        &sim,
        "POST",
        "faults",
        json!({"failing_recipients": {
            "16505550026": {"code": 131026, "mode": "sync"},
            "16505550047": {"code": 131047, "mode": "sync"},
        }}),
    );
    for (n, code) in [(26, 131026), (47, 131047)] {
        let e = send(&c, &t, &phone(n)).unwrap_err();
        assert_eq!(e.graph_error().unwrap().code, Some(code), "{e}");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        let j = e.to_json();
        assert_eq!(j["class"], "permanent");
        assert_eq!(j["code"], code);
    }
    for code in [131026, 131047, 131051, 132001, 100, 10] {
        fail_next(&sim, "send", code);
        let e = send(&c, &t, &phone(1)).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent, "code {code}: {e}");
    }
}

#[test]
fn one_client_serves_many_threads() {
    let sim = Sim::start(SimConfig::benchmark()).unwrap();
    let c = Arc::new(GraphClient::new(
        GraphConfig::new(sim.base_url())
            .with_timeout(Duration::from_secs(5))
            .with_max_idle_connections(4),
    ));
    let t = Arc::new(onboard(&sim, &c));
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let c = Arc::clone(&c);
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| send(&c, &t, &phone(thread * 100 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every send got its own wamid");
}
