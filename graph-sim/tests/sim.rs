//! End-to-end tests: the simulator in-process on port 0, exercised over real HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graph_sim::{Sim, SimConfig, hub_signature};
use serde_json::{Value, json};

const V: &str = "/v23.0";

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(sim: &Sim) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Http {
            agent,
            base: sim.base_url(),
        }
    }

    fn raw(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>, String) {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            b = b.header("Content-Type", ct);
        }
        let req = b.body(body).expect("request");
        let mut resp = self.agent.run(req).expect("http");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp.body_mut().read_to_vec().expect("body");
        (status, bytes, ct)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (ct, bytes) = match body {
            Some(b) => (
                Some("application/json"),
                serde_json::to_vec(&b).expect("json"),
            ),
            None => (None, Vec::new()),
        };
        let (status, bytes, _) = self.raw(method, path, token, ct, bytes);
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    fn send_text(
        &self,
        phone: &str,
        token: &str,
        to: &str,
        callback: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": "hello"},
        });
        if let Some(cb) = callback {
            body["biz_opaque_callback_data"] = json!(cb);
        }
        self.call(
            "POST",
            &format!("{V}/{phone}/messages"),
            Some(token),
            Some(body),
        )
    }
}

fn start(cfg: SimConfig) -> (Sim, Http) {
    let sim = Sim::start(cfg).expect("start sim");
    let http = Http::new(&sim);
    (sim, http)
}

/// A business with a system-user token, via the admin API.
fn business(sim: &Sim) -> (graph_sim::Signup, String) {
    let s = sim.signup_with(json!({"token": true})).expect("signup");
    let t = s.access_token.clone().expect("token");
    (s, t)
}

fn assert_graph_error(v: &Value, code: u64) {
    let e = &v["error"];
    assert_eq!(e["code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some(), "{v}");
    assert!(e["fbtrace_id"].as_str().is_some(), "{v}");
}

// ----- a tiny webhook receiver -----

#[derive(Clone, Debug)]
struct Delivery {
    signature: String,
    body: Vec<u8>,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    /// Answers the first `fail_first` requests with 500, then 200.
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let g = g.clone();
                let seen = seen.clone();
                std::thread::spawn(move || serve_conn(stream, g, seen, fail_first));
            }
        });
        Receiver { url, got }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn wait_for(&self, n: usize, within: Duration) -> Vec<Delivery> {
        let t0 = Instant::now();
        loop {
            let d = self.deliveries();
            if d.len() >= n || t0.elapsed() > within {
                return d;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve_conn(
    stream: TcpStream,
    got: Arc<Mutex<Vec<Delivery>>>,
    seen: Arc<AtomicUsize>,
    fail_first: usize,
) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        let mut sig = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                } else if k == "x-hub-signature-256" {
                    sig = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let status = if n < fail_first {
            "500 Internal Server Error"
        } else {
            if let Ok(mut g) = got.lock() {
                g.push(Delivery {
                    signature: sig,
                    body,
                });
            }
            "200 OK"
        };
        let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn statuses_of(d: &[Delivery]) -> Vec<Value> {
    d.iter()
        .filter_map(|x| serde_json::from_slice::<Value>(&x.body).ok())
        .flat_map(|p| {
            p["entry"][0]["changes"][0]["value"]["statuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

// ----- tests -----

#[test]
fn send_returns_unique_wamids_and_meta_shape() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let mut ids = std::collections::HashSet::new();
    for i in 0..20 {
        let (st, v) = http.send_text(
            &s.phone_number_id,
            &token,
            &format!("+1 650 555 {:04}", i),
            None,
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["messaging_product"], "whatsapp");
        assert_eq!(v["contacts"][0]["wa_id"], format!("1650555{:04}", i));
        assert_eq!(v["contacts"][0]["input"], format!("+1 650 555 {:04}", i));
        let id = v["messages"][0]["id"].as_str().expect("wamid").to_string();
        assert!(id.starts_with("wamid."));
        assert!(ids.insert(id));
    }
    // BSUID recipient and template send.
    let (st, v) = http.call(
        "POST",
        &format!("/v24.0/{}/messages", s.phone_number_id),
        Some(&token),
        Some(json!({"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"template",
                    "template":{"name":"hello_world","language":{"code":"en_US"}}})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["contacts"][0]["user_id"], "US.13491208655302741918");
    assert_eq!(v["messages"][0]["message_status"], "accepted");
    let stats = sim.stats();
    assert_eq!(stats["sends"]["accepted"], 21);
    assert_eq!(stats["per_endpoint"]["send"], 21);
}

#[test]
fn bad_tokens_get_190_and_foreign_tokens_cannot_see_numbers() {
    let (sim, http) = start(SimConfig::default());
    let (a, token_a) = business(&sim);
    let (b, _) = business(&sim);
    let (st, v) = http.send_text(&a.phone_number_id, "EAAGnope", "16505551234", None);
    assert_eq!(st, 401);
    assert_graph_error(&v, 190);
    assert_eq!(v["error"]["type"], "OAuthException");
    let (st, v) = http.call(
        "POST",
        &format!("{V}/{}/messages", a.phone_number_id),
        None,
        Some(json!({"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"x"}})),
    );
    assert_eq!(st, 401);
    assert_graph_error(&v, 190);
    let (st, v) = http.send_text(&b.phone_number_id, &token_a, "16505551234", None);
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    assert_eq!(v["error"]["error_subcode"], 33);
}

#[test]
fn malformed_sends_are_invalid_parameter() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let path = format!("{V}/{}/messages", s.phone_number_id);
    for body in [
        json!({"to":"16505551234","type":"text","text":{"body":"x"}}),
        json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}),
        json!({"messaging_product":"whatsapp","to":"16505551234","type":"image"}),
        json!({"messaging_product":"whatsapp","to":"16505551234","type":"template","template":{"name":"x"}}),
    ] {
        let (st, v) = http.call("POST", &path, Some(&token), Some(body));
        assert_eq!(st, 400, "{v}");
        assert_graph_error(&v, 100);
        assert_eq!(v["error"]["error_data"]["messaging_product"], "whatsapp");
        assert!(v["error"]["error_data"]["details"].as_str().is_some());
    }
    let (st, bytes, _) = http.raw(
        "POST",
        &path,
        Some(&token),
        Some("application/json"),
        b"{not json".to_vec(),
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(sim.stats()["sends"]["rejected"], 5);
}

#[test]
fn per_number_throughput_limit_answers_130429() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let mut ok = 0;
    let mut limited = 0;
    // At least 200 sends, more only if the box is so slow that none was limited yet.
    for i in 0..2000 {
        if i >= 200 && limited > 0 {
            break;
        }
        let (st, v) = http.send_text(&s.phone_number_id, &token, &format!("1650555{i:04}"), None);
        match st {
            200 => ok += 1,
            400 => {
                assert_graph_error(&v, 130429);
                assert!(v["error"]["error_data"]["details"].as_str().is_some());
                limited += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(ok >= 80, "accepted {ok}");
    assert!(
        limited > 0,
        "no 130429 among 200 fast sends (accepted {ok})"
    );
    assert_eq!(sim.stats()["errors_by_code"]["130429"], limited);

    // A HIGH-throughput number (override 1000/s) takes the same burst.
    let (st, v) = sim.admin(
        "POST",
        &format!("numbers/{}", s.phone_number_id),
        json!({"rate_limit_per_sec": 1000}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["throughput"]["level"], "HIGH");
    let (_, v) = http.call(
        "GET",
        &format!("{V}/{}?fields=throughput", s.phone_number_id),
        Some(&token),
        None,
    );
    assert_eq!(v["throughput"]["level"], "HIGH");
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..200 {
        let (st, v) = http.send_text(&s.phone_number_id, &token, &format!("1650666{i:04}"), None);
        assert_eq!(st, 200, "{v}");
    }
}

#[test]
fn pair_rate_limit_answers_131056() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let (st, _) = sim.admin("POST", "limits", json!({"pair_burst": 3}));
    assert_eq!(st, 200);
    for _ in 0..3 {
        let (st, v) = http.send_text(&s.phone_number_id, &token, "16505550001", None);
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = http.send_text(&s.phone_number_id, &token, "16505550001", None);
    assert_eq!(st, 400);
    assert_graph_error(&v, 131056);
    // Another recipient is unaffected.
    let (st, _) = http.send_text(&s.phone_number_id, &token, "16505550002", None);
    assert_eq!(st, 200);
    // Off switch.
    sim.admin("POST", "limits", json!({"pair_rate_limit": false}));
    let (st, _) = http.send_text(&s.phone_number_id, &token, "16505550001", None);
    assert_eq!(st, 200);
}

#[test]
fn signup_flow_code_exchange_subscribe_register_and_reads() {
    let (sim, http) = start(SimConfig::default());
    let app = sim.app_id().to_string();
    let secret = sim.app_secret().to_string();
    let (st, s) = http.call(
        "POST",
        "/_sim/signups",
        None,
        Some(json!({"verified_name": "Acme"})),
    );
    assert_eq!(st, 200, "{s}");
    let code = s["code"].as_str().expect("code");
    let waba = s["waba_id"].as_str().expect("waba");
    let phone = s["phone_number_id"].as_str().expect("phone");
    let ex = |client_id: &str, secret: &str, code: &str| {
        http.call(
            "GET",
            &format!(
                "{V}/oauth/access_token?client_id={client_id}&client_secret={secret}&code={code}"
            ),
            None,
            None,
        )
    };
    let (st, v) = ex("42", &secret, code);
    assert_eq!(st, 400);
    assert_graph_error(&v, 101);
    let (st, v) = ex(&app, "wrong", code);
    assert_eq!(st, 400);
    assert_graph_error(&v, 1);
    let (st, v) = ex(&app, &secret, code);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    let token = v["access_token"].as_str().expect("token").to_string();
    assert!(token.starts_with("EAAG"));
    let (st, v) = ex(&app, &secret, code);
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    assert_eq!(v["error"]["error_subcode"], 36009);

    // debug_token with the app token shows the WABA in granular scopes.
    let (st, v) = http.call(
        "GET",
        &format!("{V}/debug_token?input_token={token}&access_token={app}%7C{secret}"),
        None,
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["is_valid"], true);
    assert_eq!(v["data"]["type"], "SYSTEM_USER");
    assert_eq!(v["data"]["app_id"], app.as_str());
    assert_eq!(v["data"]["granular_scopes"][0]["target_ids"][0], waba);

    let (st, v) = http.call(
        "POST",
        &format!("{V}/{waba}/subscribed_apps"),
        Some(&token),
        None,
    );
    assert_eq!((st, v.clone()), (200, json!({"success": true})));
    let (_, v) = http.call(
        "GET",
        &format!("{V}/{waba}/subscribed_apps"),
        Some(&token),
        None,
    );
    assert_eq!(
        v["data"][0]["whatsapp_business_api_data"]["id"],
        app.as_str()
    );

    let reg = |pin: &str| {
        http.call(
            "POST",
            &format!("{V}/{phone}/register"),
            Some(&token),
            Some(json!({"messaging_product": "whatsapp", "pin": pin})),
        )
    };
    let (st, v) = reg("12ab");
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    let (st, v) = reg("123456");
    assert_eq!((st, v), (200, json!({"success": true})));

    let (st, v) = http.call(
        "GET",
        &format!("{V}/{phone}?fields=display_phone_number,verified_name,quality_rating,throughput"),
        Some(&token),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["verified_name"], "Acme");
    assert_eq!(v["quality_rating"], "GREEN");
    assert_eq!(v["throughput"]["level"], "STANDARD");
    assert_eq!(v["id"], phone);
    assert!(v.get("platform_type").is_none());
    let (_, v) = http.call("GET", &format!("{V}/{phone}"), Some(&token), None);
    assert_eq!(v["platform_type"], "CLOUD_API");
    assert_eq!(v["status"], "CONNECTED");
    let (_, v) = http.call(
        "GET",
        &format!("{V}/{waba}/phone_numbers"),
        Some(&token),
        None,
    );
    assert_eq!(v["data"][0]["id"], phone);
    assert!(v["paging"]["cursors"]["after"].is_string());
    let (_, v) = http.call(
        "GET",
        &format!("{V}/{waba}/message_templates?name=hello_world"),
        Some(&token),
        None,
    );
    assert_eq!(v["data"][0]["status"], "APPROVED");
    assert_eq!(v["data"][0]["language"], "en_US");
    assert!(v["data"][0]["components"].is_array());

    // Codes expire.
    let (_, s2) = http.call(
        "POST",
        "/_sim/signups",
        None,
        Some(json!({"code_ttl_secs": 0.05})),
    );
    std::thread::sleep(Duration::from_millis(120));
    let (st, v) = ex(&app, &secret, s2["code"].as_str().expect("code"));
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    assert_eq!(v["error"]["error_subcode"], 36007);
}

#[test]
fn fail_next_fails_each_signup_step_once() {
    let (sim, http) = start(SimConfig::default());
    let s = sim.signup().expect("signup");
    for (endpoint, code, status) in [
        ("oauth_access_token", 2, 503),
        ("subscribed_apps", 1, 500),
        ("register", 131000, 500),
    ] {
        let (st, v) = sim.admin(
            "POST",
            "fail_next",
            json!({"endpoint": endpoint, "count": 1, "code": code, "http_status": status}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let url = format!(
        "{V}/oauth/access_token?client_id={}&client_secret={}&code={}",
        sim.app_id(),
        sim.app_secret(),
        s.code
    );
    let (st, v) = http.call("GET", &url, None, None);
    assert_eq!(st, 503);
    assert_graph_error(&v, 2);
    let (st, v) = http.call("GET", &url, None, None);
    assert_eq!(st, 200, "{v}");
    let token = v["access_token"].as_str().expect("token").to_string();
    let sub = format!("{V}/{}/subscribed_apps", s.waba_id);
    let (st, v) = http.call("POST", &sub, Some(&token), None);
    assert_eq!(st, 500);
    assert_graph_error(&v, 1);
    assert_eq!(http.call("POST", &sub, Some(&token), None).0, 200);
    let reg = format!("{V}/{}/register", s.phone_number_id);
    let body = json!({"messaging_product": "whatsapp", "pin": "000111"});
    let (st, v) = http.call("POST", &reg, Some(&token), Some(body.clone()));
    assert_eq!(st, 500);
    assert_graph_error(&v, 131000);
    assert_eq!(http.call("POST", &reg, Some(&token), Some(body)).0, 200);
    // path_contains form, applied to sends.
    sim.admin(
        "POST",
        "fail_next",
        json!({"path_contains": "/messages", "code": 131026, "count": 2}),
    );
    for _ in 0..2 {
        let (st, v) = http.send_text(&s.phone_number_id, &token, "16505551234", None);
        assert_eq!(st, 400);
        assert_graph_error(&v, 131026);
    }
    assert_eq!(
        http.send_text(&s.phone_number_id, &token, "16505551234", None)
            .0,
        200
    );
    assert_eq!(sim.stats()["faults_injected"]["fail_next"], 5);
}

#[test]
fn revoked_tokens_get_190() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    assert_eq!(
        http.send_text(&s.phone_number_id, &token, "16505551234", None)
            .0,
        200
    );
    let (st, _) = http.call("POST", &format!("/_sim/tokens/{token}/revoke"), None, None);
    assert_eq!(st, 200);
    let (st, v) = http.send_text(&s.phone_number_id, &token, "16505551234", None);
    assert_eq!(st, 401);
    assert_graph_error(&v, 190);
    assert!(v["error"]["error_subcode"].is_u64());
    // Faults `clear` lifts revocations.
    sim.admin("POST", "faults", json!({"clear": true}));
    assert_eq!(
        http.send_text(&s.phone_number_id, &token, "16505551234", None)
            .0,
        200
    );
}

#[test]
fn stats_count_sends_per_callback_and_recipient() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    http.send_text(&s.phone_number_id, &token, "16505550001", Some("msg-1"));
    http.send_text(&s.phone_number_id, &token, "16505550002", Some("msg-2"));
    http.send_text(&s.phone_number_id, &token, "16505550002", Some("msg-2"));
    sim.admin("POST", "fail_next", json!({"endpoint": "send", "code": 2}));
    http.send_text(&s.phone_number_id, &token, "16505550003", Some("msg-3"));
    let (_, st) = http.call("GET", "/_sim/stats", None, None);
    assert_eq!(st["sends_per_callback"]["msg-1"], 1);
    assert_eq!(st["sends_per_callback"]["msg-2"], 2);
    assert!(st["sends_per_callback"].get("msg-3").is_none());
    assert_eq!(st["attempts_per_callback"]["msg-3"], 1);
    assert_eq!(st["sends_per_recipient"]["16505550002"], 2);
    assert_eq!(st["sends"]["accepted"], 3);
    assert_eq!(st["sends"]["rejected"], 1);
    let (_, log) = http.call("GET", "/_sim/requests?since=0", None, None);
    let recs = log["requests"].as_array().expect("requests");
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["biz_opaque_callback_data"], "msg-1");
    assert!(
        recs[0]["wamid"]
            .as_str()
            .is_some_and(|w| w.starts_with("wamid."))
    );
    assert_eq!(recs[3]["status"], 503);
    let since = recs[1]["seq"].as_u64().expect("seq");
    let (_, log) = http.call("GET", &format!("/_sim/requests?since={since}"), None, None);
    assert_eq!(log["requests"].as_array().map(Vec::len), Some(2));
    sim.admin("POST", "reset", json!({}));
    assert_eq!(sim.stats()["total_requests"], 0);
}

#[test]
fn status_webhooks_are_signed_and_can_be_duplicated() {
    let rx = Receiver::start(0);
    let cfg = SimConfig {
        webhooks: graph_sim::WebhookSettings {
            url: Some(rx.url.clone()),
            status_delay_ms: 5,
            duplicate_ratio: 1.0,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let (sim, http) = start(cfg);
    let (s, token) = business(&sim);
    let mut wamids = Vec::new();
    for i in 0..3 {
        let (st, v) = http.send_text(
            &s.phone_number_id,
            &token,
            &format!("1650555000{i}"),
            Some(&format!("cb-{i}")),
        );
        assert_eq!(st, 200);
        wamids.push(v["messages"][0]["id"].as_str().expect("wamid").to_string());
    }
    let (_, idle) = sim.admin("GET", "webhooks/wait_idle?timeout_ms=5000", Value::Null);
    assert_eq!(idle["idle"], true, "{idle}");
    let got = rx.deliveries();
    assert!(!got.is_empty());
    for d in &got {
        assert_eq!(d.signature, hub_signature(sim.app_secret(), &d.body));
        let p: Value = serde_json::from_slice(&d.body).expect("json");
        assert_eq!(p["object"], "whatsapp_business_account");
        assert_eq!(p["entry"][0]["id"], s.waba_id.as_str());
        let v = &p["entry"][0]["changes"][0]["value"];
        assert_eq!(p["entry"][0]["changes"][0]["field"], "messages");
        assert_eq!(v["metadata"]["phone_number_id"], s.phone_number_id.as_str());
        assert_eq!(
            v["metadata"]["display_phone_number"],
            s.display_phone_number_digits.as_str()
        );
    }
    // Every delivery arrives twice; every message gets sent, delivered, read (each twice).
    let statuses = statuses_of(&got);
    for (i, w) in wamids.iter().enumerate() {
        for st in ["sent", "delivered", "read"] {
            let n = statuses
                .iter()
                .filter(|x| x["id"] == w.as_str() && x["status"] == st)
                .count();
            assert_eq!(n, 2, "{w} {st}");
        }
        let one = statuses
            .iter()
            .find(|x| x["id"] == w.as_str())
            .expect("status");
        assert_eq!(one["biz_opaque_callback_data"], format!("cb-{i}"));
        assert_eq!(one["recipient_id"], format!("1650555000{i}"));
        assert_eq!(one["pricing"]["pricing_model"], "PMP");
        assert!(
            one["timestamp"]
                .as_str()
                .is_some_and(|t| t.parse::<u64>().is_ok())
        );
    }
    let st = sim.stats();
    assert_eq!(st["webhooks"]["duplicates"], st["webhooks"]["deliveries"]);
    assert_eq!(st["webhooks"]["statuses_scheduled"], 9);
}

#[test]
fn webhook_deliveries_are_retried_on_non_2xx() {
    let rx = Receiver::start(2);
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let (st, v) = sim.admin(
        "POST",
        "webhook_config",
        json!({"url": rx.url, "statuses": ["sent"], "status_delay_ms": 1, "retry_backoff_ms": 5}),
    );
    assert_eq!(st, 200, "{v}");
    http.send_text(&s.phone_number_id, &token, "16505551234", None);
    let got = rx.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    sim.admin("GET", "webhooks/wait_idle", Value::Null);
    let st = sim.stats();
    assert_eq!(st["webhooks"]["attempts"], 3);
    assert_eq!(st["webhooks"]["failed_attempts"], 2);
    assert_eq!(st["webhooks"]["succeeded"], 1);
    let (_, log) = sim.admin("GET", "webhook_log", Value::Null);
    assert_eq!(log["deliveries"][0]["status"], 500);
    assert_eq!(log["deliveries"][2]["status"], 200);
}

#[test]
fn inbound_messages_and_failing_recipients_reach_the_webhook() {
    let rx = Receiver::start(0);
    let cfg = SimConfig {
        webhooks: graph_sim::WebhookSettings {
            url: Some(rx.url.clone()),
            app_secret: Some("hook-secret".into()),
            status_delay_ms: 1,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let (sim, http) = start(cfg);
    let (s, token) = business(&sim);
    let (st, v) = http.call(
        "POST",
        "/_sim/inbound",
        None,
        Some(
            json!({"phone_number_id": s.phone_number_id, "from": "16505551234",
                    "user_id": "US.13491208655302741918", "name": "Ana",
                    "message": {"type": "text", "text": {"body": "hola"}}}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let wamid = v["wamid"].as_str().expect("wamid").to_string();
    let got = rx.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].signature, hub_signature("hook-secret", &got[0].body));
    let p: Value = serde_json::from_slice(&got[0].body).expect("json");
    let val = &p["entry"][0]["changes"][0]["value"];
    assert_eq!(val["contacts"][0]["profile"]["name"], "Ana");
    assert_eq!(val["contacts"][0]["wa_id"], "16505551234");
    assert_eq!(val["contacts"][0]["user_id"], "US.13491208655302741918");
    assert_eq!(val["messages"][0]["id"], wamid.as_str());
    assert_eq!(val["messages"][0]["from"], "16505551234");
    assert_eq!(val["messages"][0]["text"]["body"], "hola");

    // Sync failure: rejected at once. Async failure: accepted, then a `failed` status.
    sim.admin(
        "POST",
        "faults",
        json!({"failing_recipients": {
            "16505550666": {"code": 131026, "mode": "sync"},
            "16505550777": {"code": 131047, "mode": "async"}}}),
    );
    let (st, v) = http.send_text(&s.phone_number_id, &token, "16505550666", None);
    assert_eq!(st, 400);
    assert_graph_error(&v, 131026);
    let (st, v) = http.send_text(&s.phone_number_id, &token, "16505550777", Some("will-fail"));
    assert_eq!(st, 200);
    let w = v["messages"][0]["id"].as_str().expect("wamid").to_string();
    let got = rx.wait_for(2, Duration::from_secs(5));
    let statuses = statuses_of(&got);
    let failed = statuses
        .iter()
        .find(|x| x["id"] == w.as_str())
        .expect("failed status");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["errors"][0]["code"], 131047);
    assert_eq!(failed["biz_opaque_callback_data"], "will-fail");
}

#[test]
fn media_requires_a_bearer_token() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let (st, v) = http.call("GET", &format!("{V}/1000000000000001"), None, None);
    assert_eq!(st, 401);
    assert_graph_error(&v, 190);
    let (st, v) = http.call("GET", &format!("{V}/1000000000000001"), Some(&token), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["mime_type"], "image/jpeg");
    let url = v["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&sim.base_url()));
    let (st, _, _) = http.raw("GET", &url, None, None, Vec::new());
    assert_eq!(st, 401);
    let (st, bytes, ct) = http.raw("GET", &url, Some(&token), None, Vec::new());
    assert_eq!(st, 200);
    assert_eq!(ct, "image/jpeg");
    assert_eq!(
        v["sha256"].as_str().expect("sha"),
        sha256_hex(&bytes),
        "sha256 matches the bytes"
    );
    assert_eq!(v["file_size"], bytes.len());

    // Upload, read back, delete.
    let boundary = "simboundary42";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\napplication/pdf\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 test\r\n--{boundary}--\r\n").as_bytes(),
    );
    let (st, bytes, _) = http.raw(
        "POST",
        &format!("{V}/{}/media", s.phone_number_id),
        Some(&token),
        Some(&format!("multipart/form-data; boundary={boundary}")),
        body,
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&bytes));
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    let id = v["id"].as_str().expect("id").to_string();
    let (_, v) = http.call("GET", &format!("{V}/{id}"), Some(&token), None);
    let (_, bytes, _) = http.raw(
        "GET",
        v["url"].as_str().expect("url"),
        Some(&token),
        None,
        Vec::new(),
    );
    assert_eq!(bytes, b"%PDF-1.4 test");
    // Another business cannot see it.
    let (_, other) = business(&sim);
    let (st, v) = http.call("GET", &format!("{V}/{id}"), Some(&other), None);
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    let (st, v) = http.call("DELETE", &format!("{V}/{id}"), Some(&token), None);
    assert_eq!((st, v), (200, json!({"success": true})));
    assert_eq!(
        http.call("GET", &format!("{V}/{id}"), Some(&token), None).0,
        400
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn mark_read_and_typing_indicator() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    let path = format!("{V}/{}/messages", s.phone_number_id);
    let (st, v) = http.call(
        "POST",
        &path,
        Some(&token),
        Some(
            json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.ABC",
                    "typing_indicator":{"type":"text"}}),
        ),
    );
    assert_eq!((st, v), (200, json!({"success": true})));
    let (st, v) = http.call(
        "POST",
        &path,
        Some(&token),
        Some(json!({"messaging_product":"whatsapp","status":"read"})),
    );
    assert_eq!(st, 400);
    assert_graph_error(&v, 100);
    assert_eq!(sim.stats()["per_endpoint"]["mark_read"], 2);
}

#[test]
fn injected_errors_latency_and_timeouts() {
    let (sim, http) = start(SimConfig::default());
    let (s, token) = business(&sim);
    sim.admin(
        "POST",
        "faults",
        json!({"error_ratio": 1.0, "endpoints": ["send"]}),
    );
    let (st, v) = http.send_text(&s.phone_number_id, &token, "16505551234", None);
    assert!(st == 500 || st == 503, "{st} {v}");
    assert!(
        [1, 2, 131000].contains(&v["error"]["code"].as_u64().unwrap_or(0)),
        "{v}"
    );
    // Other endpoints are not affected.
    let (st, _) = http.call(
        "GET",
        &format!("{V}/{}", s.phone_number_id),
        Some(&token),
        None,
    );
    assert_eq!(st, 200);
    sim.admin("POST", "faults", json!({"clear": true, "latency_ms": 120}));
    let t0 = Instant::now();
    assert_eq!(
        http.send_text(&s.phone_number_id, &token, "16505551234", None)
            .0,
        200
    );
    assert!(t0.elapsed() >= Duration::from_millis(110));
    // A held request that still takes effect: the client gives up, the message was sent.
    sim.admin(
        "POST",
        "faults",
        json!({"clear": true, "timeout_ratio": 1.0, "timeout_ms": 2000}),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(200)))
        .build()
        .into();
    let res = agent
        .post(format!("{}{V}/{}/messages", sim.base_url(), s.phone_number_id))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(r#"{"messaging_product":"whatsapp","to":"16505559999","text":{"body":"x"},"biz_opaque_callback_data":"held"}"#);
    assert!(res.is_err(), "expected a client timeout");
    let t0 = Instant::now();
    while sim.stats()["sends_per_callback"]["held"] != 1 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sim.stats()["sends_per_callback"]["held"], 1);
}

#[test]
fn binary_style_defaults_and_unknown_paths() {
    let (sim, http) = start(SimConfig::benchmark());
    let (s, token) = business(&sim);
    for _ in 0..100 {
        assert_eq!(
            http.send_text(&s.phone_number_id, &token, "16505551234", None)
                .0,
            200
        );
    }
    let (st, v) = http.call(
        "GET",
        &format!("{V}/{}/nonsense/deeper", s.phone_number_id),
        Some(&token),
        None,
    );
    assert_eq!(st, 400);
    assert!(v["error"]["code"].is_u64());
    let (st, v) = http.call("GET", "/_sim/nope", None, None);
    assert_eq!(st, 404);
    assert!(v["error"].is_string());
    let (st, v) = http.call("GET", "/_sim/state", None, None);
    assert_eq!(st, 200);
    assert_eq!(v["wabas"][0]["id"], s.waba_id.as_str());
}

#[test]
fn reordered_webhooks_still_deliver_every_status() {
    let rx = Receiver::start(0);
    let cfg = SimConfig {
        webhooks: graph_sim::WebhookSettings {
            url: Some(rx.url.clone()),
            status_delay_ms: 1,
            reorder: true,
            reorder_window_ms: 50,
            batch_max: 1,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let (sim, http) = start(cfg);
    let (s, token) = business(&sim);
    for i in 0..10 {
        assert_eq!(
            http.send_text(
                &s.phone_number_id,
                &token,
                &format!("165055510{i:02}"),
                None
            )
            .0,
            200
        );
    }
    let (_, idle) = sim.admin("GET", "webhooks/wait_idle?timeout_ms=5000", Value::Null);
    assert_eq!(idle["idle"], true, "{idle}");
    let got = rx.deliveries();
    assert_eq!(got.len(), 30, "one status per delivery with batch_max 1");
    assert_eq!(statuses_of(&got).len(), 30);
}

#[test]
fn binary_prints_its_url_and_serves() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--signup",
            "--rate-limit-per-number",
            "off",
            "--pair-rate-limit",
            "off",
            "--latency-ms",
            "0-1",
            "--code-ttl-secs",
            "30",
            "--no-webhooks",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn graph-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let second = lines.next().and_then(Result::ok).unwrap_or_default();
    let url = first
        .strip_prefix("graph-sim listening on ")
        .map(str::to_string);
    let result = std::panic::catch_unwind(|| {
        let url = url.clone().expect("listening line");
        let signup: Value = serde_json::from_str(second.trim_start_matches("graph-sim signup "))
            .expect("signup line");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("{url}/_sim/health"))
            .call()
            .expect("health");
        assert_eq!(r.status().as_u16(), 200);
        let body = r.body_mut().read_to_string().expect("body");
        assert!(body.contains("\"ok\":true"));
        let mut r = agent
            .get(format!(
                "{url}/v23.0/{}",
                signup["phone_number_id"].as_str().expect("id")
            ))
            .header(
                "Authorization",
                format!("Bearer {}", signup["access_token"].as_str().expect("token")),
            )
            .call()
            .expect("phone");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.body_mut().read_to_string().unwrap_or_default()
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_graph-sim"))
        .arg("--help")
        .output()
        .expect("help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--rate-limit-per-number"));
    let out = Command::new(env!("CARGO_BIN_EXE_graph-sim"))
        .args(["--error-ratio", "2"])
        .output()
        .expect("bad flag");
    assert_eq!(out.status.code(), Some(2));
}
