//! The gateway over real HTTP against a real cluster with whatsapp_pg (see common/mod.rs for
//! what it needs). Each test has its own database, so they run in parallel.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn gateway_for(db: &TestDb) -> Gateway {
    Gateway::start(config_for(db.gateway_dsn()))
}

fn handshake_url(gw: &Gateway, token: &str, challenge: &str) -> String {
    gw.url(&format!(
        "/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge={challenge}"
    ))
}

fn post_delivery(gw: &Gateway, body: &str, signature: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = signature {
        headers.push(("x-hub-signature-256", s));
    }
    http(
        "POST",
        &gw.url("/webhook"),
        &headers,
        body.as_bytes().to_vec(),
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---- webhook handshake ----------------------------------------------------------------

#[test]
fn handshake_with_the_verify_token_echoes_the_challenge() {
    let db = TestDb::new("hs_ok");
    let gw = gateway_for(&db);
    let r = get(&handshake_url(&gw, VERIFY_TOKEN, "1158201444"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "1158201444");
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
}

#[test]
fn handshake_with_a_wrong_token_is_403() {
    let db = TestDb::new("hs_bad");
    let gw = gateway_for(&db);
    let r = get(&handshake_url(&gw, "not-the-token", "1158201444"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("1158201444"));
}

// ---- webhook deliveries ---------------------------------------------------------------

#[test]
fn signed_delivery_is_committed_as_verified() {
    let db = TestDb::new("wh_ok");
    let gw = gateway_for(&db);
    let body = delivery_body();
    let r = post_delivery(&gw, &body, Some(&sign(&body)));
    assert_eq!(r.status, 200, "{}", r.body);
    // 200 means committed: a fresh session sees the row.
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM wa.webhook_events WHERE signature_verified"),
        1
    );
    let m = get(&gw.url("/metrics")).body;
    assert!(m.contains("wa_gateway_webhook_deliveries_total 1"), "{m}");
}

#[test]
fn badly_signed_delivery_is_401_and_nothing_is_trusted() {
    let db = TestDb::new("wh_badsig");
    let gw = gateway_for(&db);
    let body = delivery_body();
    let forged = graph_sim::hub_signature("some-other-secret", body.as_bytes());
    let r = post_delivery(&gw, &body, Some(&forged));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["sqlstate"], "28000");
    let tampered = body.replace("another color", "a discount");
    let r = post_delivery(&gw, &tampered, Some(&sign(&body)));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM wa.webhook_events WHERE signature_verified"),
        0
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM wa.messages"), 0);
    let m = get(&gw.url("/metrics")).body;
    assert!(
        m.contains("wa_gateway_webhook_ingest_errors_total{reason=\"bad_signature\"} 2"),
        "{m}"
    );
}

#[test]
fn unsigned_delivery_is_401() {
    let db = TestDb::new("wh_nosig");
    let gw = gateway_for(&db);
    let r = post_delivery(&gw, &delivery_body(), None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM wa.webhook_events WHERE signature_verified"),
        0
    );
}

#[test]
fn signed_delivery_that_is_not_a_whatsapp_webhook_is_kept_and_not_retried() {
    // The extension keeps what it cannot process, with the reason; either way Meta must not
    // be told to retry (no 5xx) and nothing is applied.
    let db = TestDb::new("wh_notwa");
    let gw = gateway_for(&db);
    for body in [r#"{"object":"page","entry":[]}"#, "this is not json"] {
        let r = post_delivery(&gw, body, Some(&sign(body)));
        assert!(
            r.status == 200 || r.status == 400,
            "{body}: {} {}",
            r.status,
            r.body
        );
        if r.status == 200 {
            assert_eq!(r.json()["status"], "rejected", "{}", r.body);
        }
    }
    assert_eq!(db.scalar_i64("SELECT count(*) FROM wa.messages"), 0);
}

#[test]
fn non_utf8_body_is_400_without_touching_the_database() {
    // The database is unreachable: a 400 proves the body was refused before any SQL.
    let gw = Gateway::start(config_for(format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        closed_port()
    )));
    let body = vec![b'{', 0xff, 0xfe, b'}'];
    let r = http(
        "POST",
        &gw.url("/webhook"),
        &[("x-hub-signature-256", "sha256=00")],
        body,
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn body_over_the_limit_is_413_and_meta_sized_bodies_pass() {
    // The database is unreachable: anything that passes the size check gets 503.
    let gw = Gateway::start(config_for(format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        closed_port()
    )));
    let over = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = http(
        "POST",
        &gw.url("/webhook"),
        &[("x-hub-signature-256", "sha256=00")],
        over,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    // Meta's largest delivery (3 MB) is not refused for its size.
    let meta_max = vec![b' '; 3 * 1024 * 1024];
    let r = http(
        "POST",
        &gw.url("/webhook"),
        &[("x-hub-signature-256", "sha256=00")],
        meta_max,
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let m = get(&gw.url("/metrics")).body;
    assert!(
        m.contains("wa_gateway_webhook_ingest_errors_total{reason=\"too_large\"} 1"),
        "{m}"
    );
}

#[test]
fn database_down_is_503_so_meta_retries() {
    let mut cfg = config_for(format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        closed_port()
    ));
    cfg.db_timeout = Duration::from_secs(1);
    let gw = Gateway::start(cfg);
    let body = delivery_body();
    let r = post_delivery(&gw, &body, Some(&sign(&body)));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(get(&handshake_url(&gw, VERIFY_TOKEN, "42")).status, 503);
    assert_eq!(get(&gw.url("/healthz")).status, 503);
    assert_eq!(get(&gw.url("/signup/config")).status, 503);
    let m = get(&gw.url("/metrics")).body;
    assert!(m.lines().any(|l| l == "wa_database_up 0"), "{m}");
    assert!(
        m.contains("wa_gateway_webhook_ingest_errors_total{reason=\"unavailable\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "wa_gateway_requests_total{route=\"/webhook\",method=\"POST\",status=\"503\"} 1"
        ),
        "{m}"
    );
}

// ---- operations -----------------------------------------------------------------------

#[test]
fn healthz_is_200_with_a_database_and_metrics_count_requests() {
    let db = TestDb::new("ops");
    let gw = gateway_for(&db);
    let r = get(&gw.url("/healthz"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(&gw.url("/nope")).status, 404);
    let m = get(&gw.url("/metrics"));
    assert!(m.content_type.starts_with("text/plain"));
    assert!(
        m.body.contains(
            "wa_gateway_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("wa_gateway_requests_total{route=\"other\",method=\"GET\",status=\"404\"} 1")
    );
    assert!(
        m.body
            .contains("wa_gateway_request_duration_seconds_count{route=\"/healthz\"} 1")
    );
    // The database's side: the queue as wa.worker_status() sees it.
    let mut su = db.superuser();
    let t: String = su
        .query_one("SELECT wa.create_tenant('Metrics')::text", &[])
        .unwrap()
        .get(0);
    su.execute("SELECT wa.pause_sending($1::text::uuid)", &[&t])
        .unwrap();
    let m = get(&gw.url("/metrics")).body;
    for line in [
        "wa_database_up 1",
        "wa_sending_paused_tenants 1",
        "wa_queue_depth 0",
        "wa_key_problem 0",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
}

#[test]
fn assets_are_served_and_nothing_outside() {
    let dir = std::env::temp_dir().join(format!("wa-gw-assets-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("whatsapp-connect.js"), "export const x = 1;\n").expect("write");
    std::fs::write(dir.join("sub/a.css"), "a{}").expect("write");
    std::fs::write(dir.join(".secret.js"), "no").expect("write");
    std::fs::write(dir.join("notes.txt"), "no").expect("write");
    let mut cfg = config_for("host=127.0.0.1 port=1 user=x dbname=x".into());
    cfg.assets_dir = Some(dir.clone());
    let gw = Gateway::start(cfg);
    let r = get(&gw.url("/assets/whatsapp-connect.js"));
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/javascript"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body, "export const x = 1;\n");
    assert_eq!(get(&gw.url("/assets/sub/a.css")).status, 200);
    for bad in [
        "/assets/.secret.js",
        "/assets/notes.txt",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/sub/..%2f..%2fetc/passwd",
        "/assets/missing.js",
    ] {
        assert_eq!(get(&gw.url(bad)).status, 404, "{bad}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn connect_page_embeds_the_component_with_the_state() {
    let cfg = config_for("host=127.0.0.1 port=1 user=x dbname=x".into());
    let gw = Gateway::start(cfg);
    let state = "wss1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let r = get(&gw.url(&format!("/connect?state={state}")));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<whatsapp-connect"), "{}", r.body);
    assert!(r.body.contains(&format!("state=\"{state}\"")));
    assert!(r.body.contains("assets/whatsapp-connect.js"));
    assert_eq!(
        get(&gw.url("/connect?state=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")).status,
        400
    );
}

// ---- signup ---------------------------------------------------------------------------

#[test]
fn signup_config_has_the_public_values_only() {
    let db = TestDb::new("su_cfg");
    let gw = gateway_for(&db);
    let r = get(&gw.url("/signup/config"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["app_id"], APP_ID);
    assert_eq!(v["config_id"], CONFIG_ID);
    assert!(!r.body.contains(APP_SECRET) && !r.body.contains(VERIFY_TOKEN));
}

fn exchange(gw: &Gateway, state: &str, s: &graph_sim::Signup) -> Resp {
    post_json(
        &gw.url("/signup/exchange"),
        &json!({"state": state, "code": s.code, "waba_id": s.waba_id, "phone_number_id": s.phone_number_id}),
    )
}

fn signup_events(db: &TestDb) -> i64 {
    db.scalar_i64(
        "SELECT count(*) FROM wa.account_events
          WHERE kind LIKE 'signup.%' AND kind <> 'signup.started'",
    )
}

#[test]
fn exchange_with_an_unknown_or_expired_state_is_403_and_changes_nothing() {
    let sim = sim();
    let db = TestDb::new("su_badstate");
    let gw = gateway_for(&db);
    let tenant = db.create_tenant("Refused Florist");
    let expired = db.begin_signup(tenant);
    db.superuser()
        .batch_execute(
            "UPDATE wa.signup_states SET created_at = now() - interval '11 minutes',
                    expires_at = now() - interval '1 second'",
        )
        .expect("expire the state");
    let s = sim.signup().expect("sim signup");
    // The old HMAC-signed format is no authority either: states live in the database only.
    let old_format = format!("v1.{tenant}.4000000000.{}", "ab".repeat(32));
    let unknown = format!("wss1.{}", "0".repeat(64));
    for state in [expired.as_str(), unknown.as_str(), old_format.as_str(), ""] {
        let r = exchange(&gw, state, &s);
        assert_eq!(r.status, 403, "{state:?}: {}", r.body);
        let err = &r.json()["error"];
        assert_eq!(err["sqlstate"], "28000", "{err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap_or("")
                .contains("invalid, expired or already used"),
            "{err}"
        );
        assert!(state.is_empty() || !r.body.contains(state), "{}", r.body);
    }
    assert_eq!(db.connection_status(tenant)["state"], "not_connected");
    assert_eq!(signup_events(&db), 0);
    let m = get(&gw.url("/metrics")).body;
    assert!(
        m.contains("wa_gateway_signup_exchanges_total{outcome=\"rejected_state\"} 4"),
        "{m}"
    );
    // A tenant id from the browser is ignored: only the state names the tenant.
    let r = post_json(
        &gw.url("/signup/exchange"),
        &json!({"tenant_id": tenant.to_string(), "code": "AQBx"}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
}

#[test]
fn a_state_is_refused_the_second_time_and_changes_nothing() {
    let sim = sim();
    let db = TestDb::new("su_replay");
    let gw = gateway_for(&db);
    let tenant = db.create_tenant("Once Only Bakery");
    let state = db.begin_signup(tenant);
    let s = sim.signup().expect("sim signup");
    let r = exchange(&gw, &state, &s);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "connected");
    let before = db.connection_status(tenant);
    let events = signup_events(&db);
    let tokens = db.scalar_i64(
        "SELECT count(*) FROM wa.credentials WHERE kind IN ('business_token', 'signup_token')",
    );
    // Replayed with another business's valid code: refused before anything is exchanged.
    let other = sim.signup().expect("sim signup");
    let r = exchange(&gw, &state, &other);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["sqlstate"], "28000");
    assert_eq!(db.connection_status(tenant), before);
    assert_eq!(signup_events(&db), events);
    assert_eq!(
        db.scalar_i64(
            "SELECT count(*) FROM wa.credentials WHERE kind IN ('business_token', 'signup_token')"
        ),
        tokens
    );
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM wa.routes WHERE external_id IN ('{}', '{}')",
            other.waba_id, other.phone_number_id
        )),
        0
    );
}

#[test]
fn a_state_connects_the_tenant_it_was_minted_for_only() {
    let sim = sim();
    let db = TestDb::new("su_bound");
    let gw = gateway_for(&db);
    let a = db.create_tenant("Tenant A");
    let b = db.create_tenant("Tenant B");
    let state = db.begin_signup(a);
    let s = sim.signup().expect("sim signup");
    // Whatever else the browser sends, the state decides the tenant.
    let r = post_json(
        &gw.url("/signup/exchange"),
        &json!({"state": state, "code": s.code, "waba_id": s.waba_id,
                "phone_number_id": s.phone_number_id, "tenant_id": b.to_string()}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tenant_id"], a.to_string());
    assert_eq!(db.connection_status(a)["state"], "connected");
    assert_eq!(db.connection_status(b)["state"], "not_connected");
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT count(*) FROM wa.routes WHERE tenant_id = '{b}'"
        )),
        0
    );
}

#[test]
fn exchange_against_graph_sim_connects_the_tenant() {
    let sim = sim();
    let db = TestDb::new("su_ok");
    let gw = gateway_for(&db);
    let tenant = db.create_tenant("Acme Flowers");
    let s = sim.signup().expect("sim signup");
    let state = db.begin_signup(tenant);
    let r = post_json(
        &gw.url("/signup/exchange"),
        &json!({"state": state, "code": s.code, "waba_id": s.waba_id, "phone_number_id": s.phone_number_id}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["state"], "connected", "{v}");
    assert_eq!(v["waba_id"], s.waba_id.as_str());
    let text = v.to_string();
    assert!(text.contains(&s.display_phone_number), "{text}");
    assert_eq!(db.connection_status(tenant)["state"], "connected");
    // The business token never comes back to the browser.
    assert!(!text.contains("EAAG"), "{text}");
}

#[test]
fn exchange_with_an_expired_code_is_a_clear_4xx_and_state_error() {
    let sim = sim();
    let db = TestDb::new("su_exp");
    let gw = gateway_for(&db);
    let tenant = db.create_tenant("Late Bakery");
    let s = sim
        .signup_with(json!({"code_ttl_secs": 0.05}))
        .expect("sim signup");
    std::thread::sleep(Duration::from_millis(200));
    let state = db.begin_signup(tenant);
    let r = post_json(
        &gw.url("/signup/exchange"),
        &json!({"state": state, "code": s.code, "waba_id": s.waba_id, "phone_number_id": s.phone_number_id}),
    );
    assert!(
        (400..500).contains(&r.status) || r.status == 502,
        "{}: {}",
        r.status,
        r.body
    );
    // The Graph step failed: wa.complete_signup recorded it and the gateway reports it as a
    // bad gateway answer with the recorded message (there is no SQL error to report).
    assert_eq!(r.status, 502, "{}", r.body);
    let err = &r.json()["error"];
    assert!(
        err["message"].as_str().unwrap_or("").contains("expired"),
        "{err}"
    );
    let status: Value = db.connection_status(tenant);
    assert_eq!(status["state"], "error", "{status}");
}

// ---- CORS (opt-in, signup API only) ---------------------------------------------------

const APP_ORIGIN: &str = "https://app.example.com";

fn cors_gateway(database_url: String) -> Gateway {
    let mut cfg = config_for(database_url);
    cfg.allowed_origins =
        whatsapp_gateway::AllowedOrigins::parse(&format!("{APP_ORIGIN}, http://localhost:3000"))
            .expect("origins");
    Gateway::start(cfg)
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str) -> Resp {
    http(
        "OPTIONS",
        &gw.url(path),
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "content-type"),
        ],
        Vec::new(),
    )
}

#[test]
fn cors_preflight_from_a_listed_origin_is_204_with_the_headers() {
    // No database needed: the preflight is answered before any handler.
    let gw = cors_gateway("host=127.0.0.1 port=1 user=x dbname=x".into());
    for (path, method) in [("/signup/exchange", "POST"), ("/signup/config", "GET")] {
        let r = preflight(&gw, path, APP_ORIGIN, method);
        assert_eq!(r.status, 204, "{path}: {}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(APP_ORIGIN));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert!(
            r.header("vary")
                .is_some_and(|v| v.eq_ignore_ascii_case("origin")),
            "{:?}",
            r.headers
        );
        assert!(r.header("access-control-allow-credentials").is_none());
    }
    // The second listed origin answers with itself, never a wildcard.
    let r = preflight(&gw, "/signup/exchange", "http://localhost:3000", "POST");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

#[test]
fn cors_preflight_from_an_unlisted_origin_gets_no_cors_headers() {
    let gw = cors_gateway("host=127.0.0.1 port=1 user=x dbname=x".into());
    for origin in [
        "https://evil.example.net",
        "https://app.example.com.evil.test",
        "http://app.example.com",
        "null",
    ] {
        let r = preflight(&gw, "/signup/exchange", origin, "POST");
        assert_ne!(r.status, 204, "{origin}");
        assert!(!r.has_cors_headers(), "{origin}: {:?}", r.headers);
    }
    // Without --allowed-origins nothing changes: no CORS headers for anyone.
    let plain = Gateway::start(config_for("host=127.0.0.1 port=1 user=x dbname=x".into()));
    let r = preflight(&plain, "/signup/exchange", APP_ORIGIN, "POST");
    assert_ne!(r.status, 204);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    assert!(r.header("vary").is_none(), "{:?}", r.headers);
}

#[test]
fn cors_exchange_and_config_from_a_listed_origin_carry_the_header() {
    let db = TestDb::new("cors_su");
    let gw = cors_gateway(db.gateway_dsn());
    // A refused state still carries the header, so the page can read the error.
    let r = http(
        "POST",
        &gw.url("/signup/exchange"),
        &[("content-type", "application/json"), ("origin", APP_ORIGIN)],
        serde_json::to_vec(&json!({"state": "wss1.garbage", "code": "AQBx"})).expect("json"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP_ORIGIN));
    assert!(r.header("vary").is_some());
    assert!(r.header("access-control-allow-credentials").is_none());
    assert!(r.json()["error"]["message"].is_string());

    let r = http(
        "GET",
        &gw.url("/signup/config"),
        &[("origin", APP_ORIGIN)],
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP_ORIGIN));
    assert_eq!(r.json()["app_id"], APP_ID);

    // The same call from an unlisted origin is answered (the browser blocks it) but
    // without the header.
    let r = http(
        "GET",
        &gw.url("/signup/config"),
        &[("origin", "https://evil.example.net")],
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
}

#[test]
fn cors_exchange_against_graph_sim_from_a_listed_origin() {
    let sim = sim();
    let db = TestDb::new("cors_ok");
    let gw = cors_gateway(db.gateway_dsn());
    let tenant = db.create_tenant("Cross Origin Cafe");
    let s = sim.signup().expect("sim signup");
    let state = db.begin_signup(tenant);
    let r = http(
        "POST",
        &gw.url("/signup/exchange"),
        &[("content-type", "application/json"), ("origin", APP_ORIGIN)],
        serde_json::to_vec(&json!({"state": state, "code": s.code, "waba_id": s.waba_id, "phone_number_id": s.phone_number_id}))
            .expect("json"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP_ORIGIN));
    assert_eq!(r.json()["state"], "connected");
}

#[test]
fn cors_never_applies_to_the_webhook() {
    let db = TestDb::new("cors_wh");
    let gw = cors_gateway(db.gateway_dsn());
    let body = delivery_body();
    let r = http(
        "POST",
        &gw.url("/webhook"),
        &[
            ("content-type", "application/json"),
            ("x-hub-signature-256", &sign(&body)),
            ("origin", APP_ORIGIN),
        ],
        body.into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    let r = http(
        "GET",
        &handshake_url(&gw, VERIFY_TOKEN, "42"),
        &[("origin", APP_ORIGIN)],
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    let r = preflight(&gw, "/webhook", APP_ORIGIN, "POST");
    assert_ne!(r.status, 204);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    // Nor to the other routes.
    for path in ["/healthz", "/metrics", "/connect"] {
        let r = preflight(&gw, path, APP_ORIGIN, "GET");
        assert!(!r.has_cors_headers(), "{path}: {:?}", r.headers);
    }
}
