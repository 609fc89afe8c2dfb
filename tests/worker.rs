//! Outbound: wa.send_message and the background worker against graph-sim over loopback.
//!
//! The worker serves the cluster's wa.database (`wa_it`), so these tests share that database
//! and run one at a time; each starts from a freshly created extension and its own simulator.

use graph_sim::{Sim, SimConfig};
use postgres::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wa_integration_tests::worker_env::*;
use wa_integration_tests::{connect_as, sql_error_text};

#[test]
fn every_message_type_reaches_the_simulator_once_and_ends_read() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Hotel");
    let mut su = env.su();
    let to = "15550001111";
    let messages = [
        json!({"type": "text", "text": {"body": "Your room is ready", "preview_url": false}}),
        json!({"type": "image", "image": {"link": "https://example.com/room.jpg", "caption": "Room 12"}}),
        json!({"type": "document", "document": {"link": "https://example.com/invoice.pdf", "filename": "invoice.pdf"}}),
        json!({"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
        json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Late checkout?"},
               "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]}}}),
        json!({"type": "location", "location": {"latitude": 41.38, "longitude": 2.17, "name": "Hotel"}}),
        json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Front desk", "first_name": "Front"},
               "phones": [{"phone": "+15550009999", "type": "WORK"}]}]}),
    ];
    let ids: Vec<String> = messages
        .iter()
        .map(|m| send(&mut su, &t, to, m.clone()))
        .collect();
    let bsuid_id = send(
        &mut su,
        &t,
        "US.13491208655302741918",
        json!({"type": "text", "text": {"body": "hi"}}),
    );
    for id in ids.iter().chain(std::iter::once(&bsuid_id)) {
        wait_until("status read", Duration::from_secs(20), || {
            status_of(&mut su, id) == "read"
        });
        assert_eq!(
            accepted_for(&env.sim, id),
            1,
            "message {id} sent exactly once"
        );
    }
    let row = su
        .query_one("SELECT wamid IS NOT NULL, sent_at IS NOT NULL, delivered_at IS NOT NULL, read_at IS NOT NULL FROM wa.messages WHERE message_id = $1::text::uuid", &[&ids[0]])
        .unwrap();
    assert!(
        row.get::<_, bool>(0)
            && row.get::<_, bool>(1)
            && row.get::<_, bool>(2)
            && row.get::<_, bool>(3)
    );
    assert_eq!(
        su.query_one("SELECT count(*) FROM wa.outbox", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    // The request log shows each send carried our message id as biz_opaque_callback_data.
    let log = env
        .sim
        .admin("GET", "requests?since=0&limit=1000", Value::Null)
        .1;
    let callbacks: Vec<&str> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["biz_opaque_callback_data"].as_str())
        .collect();
    for id in &ids {
        assert!(
            callbacks.contains(&id.as_str()),
            "{id} not in the simulator's log"
        );
    }
    // Idempotency: the same key returns the same message and sends once.
    let k1: String = su
        .query_one("SELECT wa.send_message($1::text::uuid, $2, '{\"type\":\"text\",\"text\":{\"body\":\"once\"}}', NULL, 'order-42')::text", &[&t, &to])
        .unwrap()
        .get(0);
    let k2: String = su
        .query_one("SELECT wa.send_message($1::text::uuid, $2, '{\"type\":\"text\",\"text\":{\"body\":\"once\"}}', NULL, 'order-42')::text", &[&t, &to])
        .unwrap()
        .get(0);
    assert_eq!(k1, k2);
    wait_until("idempotent send", Duration::from_secs(10), || {
        accepted_for(&env.sim, &k1) == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted_for(&env.sim, &k1), 1);
    // Nothing is sent when the caller rolls back.
    su.batch_execute("BEGIN").unwrap();
    let rolled = send(
        &mut su,
        &t,
        to,
        json!({"type": "text", "text": {"body": "never"}}),
    );
    su.batch_execute("ROLLBACK").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(accepted_for(&env.sim, &rolled), 0);
    // mark_read goes to Graph too.
    let inbound = env
        .sim
        .admin(
            "POST",
            "inbound",
            json!({"phone_number_id": tenant_phone(&mut su, &t), "from": to, "text": "hello"}),
        )
        .1;
    let wamid = inbound["wamid"].as_str().unwrap().to_string();
    wait_until("inbound stored", Duration::from_secs(10), || {
        su.query_one(
            "SELECT count(*) FROM wa.messages WHERE wamid = $1",
            &[&wamid],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
    su.query_one(
        "SELECT wa.mark_read($1::text::uuid, $2, true)",
        &[&t, &wamid],
    )
    .unwrap();
    wait_until("read receipt sent", Duration::from_secs(10), || {
        env.sim.stats()["per_endpoint"]["mark_read"]
            .as_i64()
            .unwrap_or(0)
            >= 1
            || su
                .query_one("SELECT count(*) FROM wa.outbox", &[])
                .unwrap()
                .get::<_, i64>(0)
                == 0
    });
}

#[test]
fn bad_sends_are_refused_before_anything_is_queued() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Hotel");
    let mut su = env.su();
    for (to, message, needle) in [
        (
            "not a number",
            json!({"type": "text", "text": {"body": "x"}}),
            "to_number",
        ),
        ("15550001111", json!({"type": "text"}), "text"),
        (
            "15550001111",
            json!({"type": "text", "text": {"body": "x".repeat(5000)}}),
            "text.body",
        ),
        (
            "15550001111",
            json!({"type": "teleport", "teleport": {}}),
            "type",
        ),
    ] {
        let (code, text) = sql_error_text(su.query_one(
            "SELECT wa.send_message($1::text::uuid, $2, $3)",
            &[&t, &to, &message],
        ));
        assert_eq!(code, "22023", "{text}");
        assert!(text.contains(needle), "{text}");
    }
    assert_eq!(
        su.query_one("SELECT count(*) FROM wa.outbox", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    assert_eq!(
        su.query_one("SELECT count(*) FROM wa.messages", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
}

#[test]
fn faults_are_retried_throttled_failed_or_held_as_documented() {
    let env = env(SimConfig::benchmark());
    let (a, _, token_a) = tenant(&env, "A");
    let (b, _, _) = tenant(&env, "B");
    let mut su = env.su();
    let text = |body: &str| json!({"type": "text", "text": {"body": body}});

    // 5xx: retried with backoff, then sent.
    env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "messages", "count": 1, "code": 131000, "http_status": 500}),
    );
    let m = send(&mut su, &a, "15550001111", text("after a 500"));
    wait_until("sent after 5xx", Duration::from_secs(20), || {
        status_of(&mut su, &m) != "queued"
    });
    assert_ne!(status_of(&mut su, &m), "failed");
    assert_eq!(
        env.sim.stats()["attempts_per_callback"][&m].as_i64(),
        Some(2)
    );

    // 130429: throttled, then sent.
    env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "messages", "count": 1, "code": 130429}),
    );
    let m = send(&mut su, &a, "15550001111", text("after a 130429"));
    wait_until("sent after 130429", Duration::from_secs(20), || {
        status_of(&mut su, &m) != "queued"
    });
    assert_ne!(status_of(&mut su, &m), "failed");

    // 131056: paced; the next attempt waits at least 6 s.
    env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "messages", "count": 1, "code": 131056}),
    );
    let m = send(&mut su, &a, "15550002222", text("pair rate"));
    wait_until("131056 recorded", Duration::from_secs(10), || {
        su.query_one("SELECT count(*) FROM wa.outbox WHERE message_id = $1::text::uuid AND last_error->>'code' = '131056'", &[&m])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    let wait: f64 = su
        .query_one("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM wa.outbox WHERE message_id = $1::text::uuid", &[&m])
        .unwrap()
        .get(0);
    assert!(
        wait > 4.0,
        "131056 must pace the recipient (next attempt in {wait:.1}s)"
    );

    // Timeout after the request went out (Meta took it, the answer came too late): the outcome
    // is unknown, so it is not sent again; the status webhook settles it.
    set_system(&mut su, "wa.http_timeout_ms", "300");
    reload(&mut su);
    env.sim.admin(
        "POST",
        "faults",
        json!({"timeout_ratio": 1.0, "timeout_ms": 1500, "endpoints": ["messages"]}),
    );
    let m = send(&mut su, &b, "15550003333", text("after a timeout"));
    wait_until("settled by its status", Duration::from_secs(20), || {
        status_of(&mut su, &m) == "read"
    });
    env.sim.admin("POST", "faults", json!({"clear": true}));
    wait_until(
        "the timeout seen by the worker",
        Duration::from_secs(10),
        || {
            let s: Value = su
                .query_one("SELECT wa.worker_status()", &[])
                .unwrap()
                .get(0);
            s["unknown_outcomes"].as_i64().unwrap_or(0) >= 1
        },
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(accepted_for(&env.sim, &m), 1, "not sent again");
    set_system(&mut su, "wa.http_timeout_ms", "2000");
    reload(&mut su);

    // Permanent errors: failed with the Graph error, no retries.
    env.sim.admin("POST", "faults", json!({"failing_recipients": {
        "15550004444": {"code": 131026, "mode": "sync"}, "15550005555": {"code": 131047, "mode": "sync"}}}));
    let undeliverable = send(&mut su, &a, "15550004444", text("x"));
    let outside_window = send(&mut su, &a, "15550005555", text("y"));
    for (m, code) in [(&undeliverable, "131026"), (&outside_window, "131047")] {
        wait_until("failed", Duration::from_secs(10), || {
            status_of(&mut su, m) == "failed"
        });
        let err: Value = su
            .query_one(
                "SELECT error FROM wa.messages WHERE message_id = $1::text::uuid",
                &[m],
            )
            .unwrap()
            .get(0);
        assert_eq!(err["code"].to_string(), code, "{err}");
        assert_eq!(
            env.sim.stats()["attempts_per_callback"][m.as_str()].as_i64(),
            Some(1),
            "no retry of a permanent error"
        );
    }
    // A failure reported later as a `failed` status ends the same way.
    env.sim.admin(
        "POST",
        "faults",
        json!({"failing_recipients": {"15550006666": {"code": 131026, "mode": "async"}}}),
    );
    let later = send(&mut su, &a, "15550006666", text("z"));
    wait_until("async failure", Duration::from_secs(10), || {
        status_of(&mut su, &later) == "failed"
    });

    // 190: the tenant needs to reconnect; only its queue is held.
    env.sim
        .admin("POST", &format!("tokens/{token_a}/revoke"), Value::Null);
    let held = send(&mut su, &a, "15550001111", text("held"));
    wait_until("tenant A action_required", Duration::from_secs(10), || {
        su.query_one(
            "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get::<_, String>(0)
            == "action_required"
    });
    let more = send(&mut su, &a, "15550001111", text("also held"));
    let other = send(&mut su, &b, "15550001111", text("B goes on"));
    wait_until("B sent", Duration::from_secs(10), || {
        status_of(&mut su, &other) != "queued"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_of(&mut su, &held), "queued");
    assert_eq!(status_of(&mut su, &more), "queued");
    let attempts_190 = env.sim.stats()["attempts_per_callback"][&more]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(attempts_190, 0, "a held queue is not retried into a storm");
    // Reconnecting releases the queue.
    let (waba, phone): (String, String) = {
        let r = su.query_one("SELECT waba_id, phone_number_id FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid", &[&a]).unwrap();
        (r.get(0), r.get(1))
    };
    let fresh = env.sim.add_token(&waba).unwrap();
    su.execute(
        "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
        &[&a, &waba, &phone, &fresh],
    )
    .unwrap();
    for m in [&held, &more] {
        wait_until("released and sent", Duration::from_secs(20), || {
            status_of(&mut su, m) != "queued"
        });
    }
    let status: Value = su
        .query_one("SELECT wa.worker_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["running"], true, "{status}");
    assert!(
        status["retried"].as_i64().unwrap_or(0) + status["sent"].as_i64().unwrap_or(0) > 0,
        "{status}"
    );
    // Claim and write-back latency (summed durations and counts, as /metrics exports them).
    wait_until(
        "claim and write-back latency",
        Duration::from_secs(5),
        || {
            let l: Value = su
                .query_one("SELECT wa.worker_status()->'latency'", &[])
                .unwrap()
                .get(0);
            let positive = |k: &str| l[k].as_f64().unwrap_or(0.0) > 0.0;
            positive("claims")
                && positive("claim_seconds")
                && positive("write_backs")
                && positive("write_back_seconds")
        },
    );
}

#[test]
fn one_number_is_held_to_its_rate_while_others_run_at_full_speed() {
    let env = env(SimConfig::benchmark());
    // No status webhooks back: ingesting ~3,000 of them a second would compete with the worker
    // for this machine's two cores, and a starved worker thread shows as a second a few
    // messages short, which says nothing about the limiter.
    let (code, _) = env
        .sim
        .admin("POST", "webhook_config", json!({ "statuses": [] }));
    assert_eq!(code, 200);
    let (slow, slow_phone, _) = tenant(&env, "Slow");
    let (fast, fast_phone, _) = tenant(&env, "Fast");
    // The fast number sends for several seconds, overlapping the measured ones.
    const FAST: usize = 8000;
    let mut su = env.su();
    su.execute(
        "UPDATE wa.phone_numbers SET rate_limit_per_sec = 1000 WHERE tenant_id = $1::text::uuid",
        &[&fast],
    )
    .unwrap();
    // Give the worker time to reread per-number rates.
    std::thread::sleep(Duration::from_secs(3));
    su.batch_execute("BEGIN").unwrap();
    for i in 0..1200 {
        send(
            &mut su,
            &slow,
            &format!("1555100{i:04}"),
            json!({"type": "text", "text": {"body": "s"}}),
        );
    }
    for i in 0..FAST {
        send(
            &mut su,
            &fast,
            &format!("1555200{i:04}"),
            json!({"type": "text", "text": {"body": "f"}}),
        );
    }
    su.batch_execute("COMMIT").unwrap();
    std::thread::sleep(Duration::from_secs(18));
    let log = env
        .sim
        .admin("GET", "requests?since=0&limit=100000", Value::Null)
        .1;
    let reqs = log["requests"].as_array().unwrap();
    let times = |phone: &str| -> Vec<u64> {
        reqs.iter()
            .filter(|r| r["phone_number_id"] == phone && r["status"] == 200)
            .filter_map(|r| r["ts_us"].as_u64())
            .collect()
    };
    let slow_t = times(&slow_phone);
    let fast_t = times(&fast_phone);
    assert_eq!(
        fast_t.len(),
        FAST,
        "the other number sent everything meanwhile"
    );
    let fast_span = (fast_t.iter().max().unwrap() - fast_t.iter().min().unwrap()) as f64 / 1e6;
    assert!(
        fast_span < 20.0,
        "{FAST} messages of the fast number took {fast_span:.1}s"
    );
    let start = *slow_t.iter().min().unwrap();
    let mut per_second = [0u32; 10];
    for t in &slow_t {
        // Skip the first four seconds (the lanes start while the whole queue is being claimed
        // for the first time), then count ten whole seconds, while the other number still runs.
        let s = ((t - start) / 1_000_000) as i64 - 4;
        if (0..10).contains(&s) {
            per_second[s as usize] += 1;
        }
    }
    eprintln!("messages per second of the number limited to 80/s: {per_second:?}");
    for (i, n) in per_second.iter().enumerate() {
        assert!(
            (76..=84).contains(n),
            "second {i}: {n} messages (80 ± 5% expected): {per_second:?}"
        );
    }
}

#[test]
fn a_worker_crash_and_an_immediate_restart_lose_nothing() {
    let env = env(SimConfig::benchmark());
    // Statuses are not needed here; keep the machine for sending.
    env.sim
        .admin("POST", "webhook_config", json!({ "url": null }));
    env.sim.admin("POST", "faults", json!({ "latency_ms": 50 }));
    let tenants: Vec<String> = (0..5).map(|i| tenant(&env, &format!("T{i}")).0).collect();
    let mut su = env.su();
    su.batch_execute("UPDATE wa.phone_numbers SET rate_limit_per_sec = 1000")
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    const TOTAL: usize = 10_000;
    // One transaction: the whole queue is there before the worker sees any of it.
    su.batch_execute("BEGIN").unwrap();
    for n in 0..TOTAL {
        let t = &tenants[n % tenants.len()];
        su.execute(
            "SELECT wa.send_text($1::text::uuid, $2, 'crash test')",
            &[t, &format!("1555{n:07}")],
        )
        .unwrap();
    }
    su.batch_execute("COMMIT").unwrap();
    drop(su);
    wait_until("a fifth sent", Duration::from_secs(60), || {
        accepted_total(&env.sim) >= (TOTAL / 5) as i64
    });
    let mut c = reconnect();
    let pid = worker_pid(&mut c).expect("worker running");
    drop(c);
    let at_kill = accepted_total(&env.sim);
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The postmaster reinitialises after a crashed child; the worker comes back.
    wait_until("half sent after the crash", Duration::from_secs(90), || {
        accepted_total(&env.sim) >= (TOTAL / 2) as i64
    });
    let at_restart = accepted_total(&env.sim);
    restart_cluster("immediate");
    let mut c = reconnect();
    wait_until("every message sent", Duration::from_secs(120), || {
        c.query_one(
            "SELECT count(*) FROM wa.messages WHERE status = 'queued'",
            &[],
        )
        .map(|r| r.get::<_, i64>(0) == 0)
        .unwrap_or(false)
    });
    let remaining: i64 = c
        .query_one("SELECT count(*) FROM wa.outbox", &[])
        .unwrap()
        .get(0);
    assert_eq!(remaining, 0);
    let sent: i64 = c
        .query_one(
            "SELECT count(*) FROM wa.messages WHERE status = 'sent' AND wamid IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sent, TOTAL as i64, "every message sent and recorded");
    let stats = env.sim.stats();
    let per_callback = stats["sends_per_callback"].as_object().unwrap();
    assert_eq!(
        per_callback.len(),
        TOTAL,
        "every message reached the simulator"
    );
    let duplicates: i64 = per_callback
        .values()
        .map(|v| (v.as_i64().unwrap_or(1) - 1).max(0))
        .sum();
    let concurrency: i64 = c
        .query_one(
            "SELECT current_setting('wa.worker_concurrency')::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    // At a crash, a send can have reached Meta without its outcome being recorded only while
    // it is in flight (at most one per HTTP thread) or answered but not yet written back (the
    // worker records answers in batches of at most 512, or after 10 ms).
    let bound = 2 * (concurrency + 512);
    let recorded: i64 = c
        .query_one(
            "SELECT coalesce(sum(cardinality(extra_wamids)), 0)::bigint FROM wa.messages",
            &[],
        )
        .unwrap()
        .get(0);
    eprintln!(
        "crash test: {TOTAL} messages; accepted at kill -9: {at_kill}, at immediate restart: {at_restart}; \
         sent twice: {duplicates}, recorded as extra wamids: {recorded} (bound: sends in flight or unrecorded at two crashes, {bound})"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed what can be in flight at two crashes"
    );
    // Without status webhooks (off here) the first wamid of a send lost at a crash is never
    // learnt, so a second send cannot be told from a first: at most what the simulator saw.
    assert!(
        recorded <= duplicates,
        "{recorded} extra wamids, {duplicates} duplicates"
    );
}

fn endpoint_calls(sim: &Sim, endpoint: &str) -> i64 {
    sim.admin("GET", "stats?detail=0", Value::Null).1["per_endpoint"][endpoint]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn embedded_signup_resumes_at_the_step_that_failed() {
    let env = env(SimConfig::benchmark());
    let mut su = env.su();
    let steps = [
        ("oauth_access_token", "token_exchange"),
        ("subscribed_apps", "subscribe"),
        ("register", "register"),
    ];
    for (i, (endpoint, step)) in steps.iter().enumerate() {
        let t: String = su
            .query_one(
                "SELECT wa.create_tenant($1)::text",
                &[&format!("Signup {i}")],
            )
            .unwrap()
            .get(0);
        let s = env.sim.signup().unwrap();
        let (code, _) = env.sim.admin(
            "POST",
            "fail_next",
            json!({"endpoint": endpoint, "count": 1, "code": 2, "http_status": 503}),
        );
        assert_eq!(code, 200);
        let exchange = |c: &mut Client| -> Value {
            c.query_one(
                "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
                &[&t, &s.code, &s.waba_id, &s.phone_number_id],
            )
            .unwrap()
            .get(0)
        };
        let failed = exchange(&mut su);
        assert_eq!(failed["state"], "error", "{failed}");
        assert_eq!(failed["last_error"]["step"], *step, "{failed}");
        let before: Vec<i64> = steps
            .iter()
            .map(|(e, _)| endpoint_calls(&env.sim, e))
            .collect();
        let done = exchange(&mut su);
        assert_eq!(done["state"], "connected", "{done}");
        assert_eq!(
            done["phone_numbers"][0]["display_phone_number"],
            s.display_phone_number.as_str(),
            "{done}"
        );
        assert_eq!(
            done["phone_numbers"][0]["registration_status"], "registered",
            "{done}"
        );
        let after: Vec<i64> = steps
            .iter()
            .map(|(e, _)| endpoint_calls(&env.sim, e))
            .collect();
        for (j, (e, _)) in steps.iter().enumerate() {
            let calls = after[j] - before[j];
            let expected = if j < i { 0 } else { 1 };
            assert_eq!(
                calls, expected,
                "after a failed {step}, the retry called {e} {calls} times"
            );
        }
        // The token came from Meta into the credentials table encrypted; never into SQL text.
        let source: String = su
            .query_one("SELECT source FROM wa.credentials WHERE tenant_id = $1::text::uuid AND kind = 'business_token'", &[&t])
            .unwrap()
            .get(0);
        assert_eq!(source, "embedded_signup");
        let pin: i64 = su
            .query_one("SELECT count(*) FROM wa.credentials WHERE tenant_id = $1::text::uuid AND kind = 'registration_pin'", &[&t])
            .unwrap()
            .get(0);
        assert_eq!(pin, 1, "the registration PIN is kept, encrypted");
    }
    // A connected tenant sends at once.
    let t: String = su
        .query_one(
            "SELECT tenant_id::text FROM wa.tenants WHERE name = 'Signup 0'",
            &[],
        )
        .unwrap()
        .get(0);
    let m = send(
        &mut su,
        &t,
        "15550007777",
        json!({"type": "text", "text": {"body": "welcome"}}),
    );
    wait_until(
        "first message after signup",
        Duration::from_secs(10),
        || status_of(&mut su, &m) != "queued",
    );
}

#[test]
fn an_expired_signup_code_is_a_clear_error_and_state_error() {
    let env = env(SimConfig::benchmark());
    let mut su = env.su();
    let t: String = su
        .query_one("SELECT wa.create_tenant('Late')::text", &[])
        .unwrap()
        .get(0);
    let s = env.sim.signup_with(json!({"code_ttl_secs": 0.05})).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status: Value = su
        .query_one(
            "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
            &[&t, &s.code, &s.waba_id, &s.phone_number_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(status["state"], "error", "{status}");
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{status}"
    );
    assert_eq!(status["last_error"]["code"], 100, "{status}");
    // Without a phone number id (FINISH_ONLY_WABA) the WABA is linked; its only number, if
    // it has one, is adopted.
    let t2: String = su
        .query_one("SELECT wa.create_tenant('Only WABA')::text", &[])
        .unwrap()
        .get(0);
    let s2 = env.sim.signup().unwrap();
    let status: Value = su
        .query_one(
            "SELECT wa.exchange_code($1::text::uuid, $2, $3, NULL)",
            &[&t2, &s2.code, &s2.waba_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["waba_id"], s2.waba_id.as_str(), "{status}");
    assert_eq!(
        status["phone_numbers"][0]["phone_number_id"],
        s2.phone_number_id.as_str(),
        "{status}"
    );
}

#[test]
fn dropping_the_served_database_is_not_blocked_by_the_worker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = connect_as("postgres", "postgres");
    wait_for_worker(&mut admin);
    // Other tests' client sessions may linger; only the worker must not block the drop.
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{DB}' AND backend_type = 'client backend'"
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    admin.batch_execute(&format!("DROP DATABASE {DB}")).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "DROP DATABASE took {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        worker_pid(&mut admin),
        None,
        "the worker stays away while its database does not exist"
    );
    // Created again: the worker comes back by itself, without a server restart.
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .unwrap();
    wait_for_worker(&mut admin);
}

#[test]
fn connect_tenant_verifies_the_number_and_subscribes_the_app_where_graph_is_reachable() {
    let env = env(SimConfig::benchmark());
    let mut su = env.su();
    let new_tenant = |c: &mut Client, name: &str| -> String {
        c.query_one("SELECT wa.create_tenant($1)::text", &[&name])
            .unwrap()
            .get(0)
    };
    let connect = |c: &mut Client, t: &str, waba: &str, phone: &str, token: &str| {
        c.query_one(
            "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
            &[&t, &waba, &phone, &token],
        )
        .map(|r| r.get::<_, Value>(0))
    };
    let stored = |c: &mut Client, t: &str| -> (String, i64) {
        let r = c
            .query_one(
                "SELECT state, (SELECT count(*) FROM wa.credentials c WHERE c.tenant_id = t.tenant_id)
                   FROM wa.tenants t WHERE tenant_id = $1::text::uuid",
                &[&t],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let a = env.sim.signup_with(json!({ "token": true })).unwrap();
    let token_a = a.access_token.clone().unwrap();
    let b = env.sim.signup_with(json!({ "token": true })).unwrap();

    // Reachable and right: verified, the number's details stored, the app subscribed.
    let t = new_tenant(&mut su, "Verified");
    let status = connect(&mut su, &t, &a.waba_id, &a.phone_number_id, &token_a).unwrap();
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["verification"]["graph"], "verified", "{status}");
    assert_eq!(
        status["phone_numbers"][0]["display_phone_number"], a.display_phone_number,
        "{status}"
    );
    let subscribed: bool = su
        .query_one(
            "SELECT subscribed_at IS NOT NULL FROM wa.wabas WHERE tenant_id = $1::text::uuid",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert!(subscribed);
    let state = env.sim.admin("GET", "state", Value::Null).1;
    let waba = state["wabas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == a.waba_id.as_str())
        .unwrap();
    assert_eq!(waba["subscribed_apps"], json!([env.sim.app_id()]), "{waba}");

    // With another business's token (C): a number of another WABA is refused, nothing stored.
    let c = env.sim.signup_with(json!({ "token": true })).unwrap();
    let token_c = c.access_token.clone().unwrap();
    let t = new_tenant(&mut su, "Wrong number");
    let (code, text) = sql_error_text(connect(
        &mut su,
        &t,
        &c.waba_id,
        &b.phone_number_id,
        &token_c,
    ));
    assert_eq!(code, "22023", "{text}");
    assert!(
        text.contains(&format!(
            "phone number {} is not in WABA {}",
            b.phone_number_id, c.waba_id
        )),
        "{text}"
    );
    assert_eq!(stored(&mut su, &t), ("not_connected".to_string(), 0));

    // A WABA the token has no access to: refused with Graph's reason.
    let (code, text) = sql_error_text(connect(
        &mut su,
        &t,
        &b.waba_id,
        &b.phone_number_id,
        &token_c,
    ));
    assert_eq!(code, "22023", "{text}");
    assert!(
        text.contains("the Graph API refused to read the WABA's phone numbers"),
        "{text}"
    );
    assert_eq!(stored(&mut su, &t), ("not_connected".to_string(), 0));

    // A revoked token: refused as an authorization error, and never echoed.
    let (status_code, _) = env
        .sim
        .admin("POST", &format!("tokens/{token_c}/revoke"), Value::Null);
    assert_eq!(status_code, 200);
    let (code, text) = sql_error_text(connect(
        &mut su,
        &t,
        &c.waba_id,
        &c.phone_number_id,
        &token_c,
    ));
    assert_eq!(code, "28000", "{text}");
    assert!(text.contains("refused the access token"), "{text}");
    assert!(
        !text.contains(&token_c),
        "the token must not appear in the error"
    );
    assert_eq!(stored(&mut su, &t), ("not_connected".to_string(), 0));

    // Graph unavailable: the connection stands and says it is unverified.
    let token_b = b.access_token.clone().unwrap();
    let (c, _) = env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "phone_numbers", "count": 1, "code": 2, "http_status": 503}),
    );
    assert_eq!(c, 200);
    let status = connect(&mut su, &t, &b.waba_id, &b.phone_number_id, &token_b).unwrap();
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["verification"]["graph"], "unreachable", "{status}");
    assert_eq!(status["verification"]["subscribed"], false, "{status}");
    let events: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.account_events WHERE tenant_id = $1::text::uuid AND kind = 'connect.verification'",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[test]
fn bulk_send_gives_each_bad_recipient_its_reason_and_sends_the_rest_once() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Hotel");
    let mut su = env.su();
    su.execute("SELECT wa.pause_sending($1::text::uuid)", &[&t])
        .unwrap();
    let recipients: Vec<Option<&str>> = vec![
        Some("15550002001"),
        Some("not a number"),
        Some("15550002002"),
        None,
        Some("US.13491208655302741918"),
        Some("15550002001"),
    ];
    let template = json!({"type": "template", "template": {"name": "checkin_reminder", "language": {"code": "en"}}});
    let components: Vec<Value> = (0..recipients.len())
        .map(|i| json!([{"type": "body", "parameters": [{"type": "text", "text": format!("Guest {i}")}]}]))
        .collect();
    let keys: Vec<Option<String>> = (0..recipients.len())
        .map(|i| (i != 5).then(|| format!("reminder-{i}")))
        .collect();
    let call = |su: &mut Client| -> Vec<(i32, Option<String>, Option<String>)> {
        su.query(
            "SELECT position, message_id::text, error
               FROM wa.send_bulk($1::text::uuid, $2, $3, components => $4, idempotency_keys => $5)",
            &[
                &t,
                &recipients,
                &template,
                &Value::Array(components.clone()),
                &keys,
            ],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let rows = call(&mut su);
    assert_eq!(rows.len(), 6);
    for (i, (position, id, error)) in rows.iter().enumerate() {
        assert_eq!(*position, i as i32 + 1);
        let bad = i == 1 || i == 3;
        assert_eq!(id.is_none(), bad, "{rows:?}");
        assert_eq!(error.is_some(), bad, "{rows:?}");
    }
    assert!(
        rows[1].2.as_deref().unwrap().contains("to_number"),
        "{rows:?}"
    );
    assert!(rows[3].2.as_deref().unwrap().contains("NULL"), "{rows:?}");
    let ids: Vec<String> = rows.iter().filter_map(|r| r.1.clone()).collect();
    // Two messages to the same customer (no key on the second) are two messages.
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        4
    );
    // Each got its own parameters, and the bulk rows queue behind service replies.
    let reply = send(
        &mut su,
        &t,
        "15550002009",
        json!({"type": "text", "text": {"body": "Your room is ready"}}),
    );
    for (i, id) in rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.1.as_ref().map(|id| (i, id)))
    {
        let row = su
            .query_one(
                "SELECT m.content #>> '{template,components,0,parameters,0,text}', o.priority::int
                   FROM wa.messages m JOIN wa.outbox o USING (tenant_id, message_id)
                  WHERE m.message_id = $1::text::uuid",
                &[id],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), format!("Guest {i}"));
        assert!(
            row.get::<_, i32>(1) >= 5,
            "bulk priority {}",
            row.get::<_, i32>(1)
        );
    }
    let reply_priority: i32 = su
        .query_one(
            "SELECT priority::int FROM wa.outbox WHERE message_id = $1::text::uuid",
            &[&reply],
        )
        .unwrap()
        .get(0);
    assert_eq!(reply_priority, 3);

    // The same call again: the keyed rows are the same messages, the unkeyed one is new.
    let again = call(&mut su);
    for i in [0, 2, 4] {
        assert_eq!(again[i].1, rows[i].1, "{again:?}");
    }
    assert_ne!(again[5].1, rows[5].1);
    let queued = |su: &mut Client| -> i64 {
        su.query_one("SELECT count(*) FROM wa.messages", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(queued(&mut su), 6);

    // all_or_nothing: one bad recipient fails the call and queues nothing.
    let (code, text) = sql_error_text(su.query(
        "SELECT * FROM wa.send_bulk($1::text::uuid, $2, $3, all_or_nothing => true)",
        &[
            &t,
            &vec![Some("15550002003"), Some("bad")],
            &json!({"type": "text", "text": {"body": "Hi"}}),
        ],
    ));
    assert_eq!(code, "22023", "{text}");
    assert!(text.contains("position 2"), "{text}");
    assert_eq!(queued(&mut su), 6);
    // Mismatched per-recipient arrays are refused whole.
    let (code, _) = sql_error_text(su.query(
        "SELECT * FROM wa.send_bulk($1::text::uuid, $2, $3, components => '[[]]')",
        &[
            &t,
            &vec![Some("15550002003"), Some("15550002004")],
            &template,
        ],
    ));
    assert_eq!(code, "22023");

    // Sent once each when sending resumes.
    su.execute("SELECT wa.resume_sending($1::text::uuid)", &[&t])
        .unwrap();
    let mut all: Vec<String> = ids.clone();
    all.push(reply);
    all.extend(again[5].1.clone());
    wait_until("bulk sent", Duration::from_secs(20), || {
        all.iter().all(|id| accepted_for(&env.sim, id) == 1)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(all.iter().all(|id| accepted_for(&env.sim, id) == 1));
}

/// A campaign on one number: a message of another tenant, and a service reply on the
/// campaign's own number, leave within a second or two instead of after the campaign.
#[test]
fn a_campaign_delays_neither_another_tenant_nor_a_reply_on_its_own_number() {
    let env = env(SimConfig::benchmark());
    let (a, _, _) = tenant(&env, "Campaign");
    let (b, _, _) = tenant(&env, "Hotel");
    let mut su = env.su();
    // 20 messages per second per number: the campaign below takes 50 s.
    set_system(&mut su, "wa.rate_limit_per_number", "20");
    reload(&mut su);
    let recipients: Vec<String> = (0..1000).map(|i| format!("1555300{i:04}")).collect();
    let n: i64 = su
        .query_one(
            "SELECT count(message_id) FROM wa.send_bulk($1::text::uuid, $2, $3)",
            &[
                &a,
                &recipients,
                &json!({"type": "text", "text": {"body": "Spring offer"}}),
            ],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    wait_until("the campaign is sending", Duration::from_secs(10), || {
        env.sim.stats()["sends"]["accepted"].as_i64().unwrap_or(0) >= 20
    });
    let text = json!({"type": "text", "text": {"body": "Your room is ready"}});
    let other = send(&mut su, &b, "15550004001", text.clone());
    let reply = send(&mut su, &a, "15550004002", text);
    let start = Instant::now();
    wait_until("both sent", Duration::from_secs(5), || {
        accepted_for(&env.sim, &other) == 1 && accepted_for(&env.sim, &reply) == 1
    });
    let waited = start.elapsed();
    let left: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.outbox WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert!(
        left > 800,
        "the campaign had drained ({left} left): nothing was shown"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

fn rss_anon_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A burst of large inbound videos: each is streamed to disk and stored a chunk at a time,
/// so the worker's own memory stays flat; every file is stored with its SHA-256 checked, and
/// one whose bytes do not match Meta's SHA-256 fails with that reason.
#[test]
fn a_burst_of_large_videos_is_stored_checked_without_holding_them_in_memory() {
    const FILES: usize = 16;
    const SIZE: u64 = 16 << 20;
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Hotel");
    let mut su = env.su();
    let phone = tenant_phone(&mut su, &t);
    let pid = worker_pid(&mut su).expect("worker running");
    let before = rss_anon_kib(pid);
    let mut wamids = Vec::new();
    for i in 0..=FILES {
        let corrupt = i == FILES;
        let r = env
            .sim
            .admin(
                "POST",
                "inbound",
                json!({"phone_number_id": phone, "from": format!("1555500{i:04}"),
                       "message": {"type": "video", "video": {"caption": format!("video {i}")}},
                       "media_size": SIZE, "media_corrupt": corrupt}),
            )
            .1;
        wamids.push(r["wamid"].as_str().unwrap().to_string());
    }
    let mut peak = before;
    let mut settled = || {
        peak = peak.max(rss_anon_kib(pid));
        su.query_one(
            "SELECT count(*) FROM wa.messages WHERE wamid = ANY($1) AND media ? 'stored'",
            &[&wamids],
        )
        .unwrap()
        .get::<_, i64>(0)
            == wamids.len() as i64
    };
    wait_until(
        "every video settled",
        Duration::from_secs(120),
        &mut settled,
    );
    let mut su = env.su();
    let stored: Vec<(String, i64, i32, bool, String)> = su
        .query(
            "SELECT m.wamid, f.size_bytes, f.chunks,
                    encode(sha256(wa.media_content(f.tenant_id, f.media_id)), 'hex') = f.sha256,
                    f.sha256
               FROM wa.messages m
               JOIN wa.media f ON f.tenant_id = m.tenant_id AND f.media_id = m.media->>'media_id'
              WHERE m.wamid = ANY($1)",
            &[&wamids[..FILES].to_vec()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(stored.len(), FILES, "{stored:?}");
    for (wamid, size, chunks, intact, sha) in &stored {
        assert_eq!(*size, SIZE as i64, "{wamid}");
        assert_eq!(*chunks, 16, "{wamid}");
        assert!(intact, "{wamid}: stored bytes do not hash to {sha}");
    }
    // The corrupted one: not stored, with the reason.
    let (stored_flag, details): (bool, String) = {
        let r = su
            .query_one(
                "SELECT (media->>'stored')::boolean, media->'error'->>'details' FROM wa.messages WHERE wamid = $1",
                &[&wamids[FILES]],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!stored_flag);
    assert!(details.contains("SHA-256"), "{details}");
    assert_eq!(
        su.query_one(
            "SELECT count(*) FROM wa.media WHERE sha256 IS NULL OR size_bytes <> $1",
            &[&(SIZE as i64)]
        )
        .unwrap()
        .get::<_, i64>(0),
        0
    );
    // No spool file is left behind.
    let data_dir: String = su
        .query_one("SELECT current_setting('data_directory')", &[])
        .unwrap()
        .get(0);
    let left = std::fs::read_dir(format!("{data_dir}/base/pgsql_tmp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains("wa_media"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0);
    // 272 MB went through 32 HTTP threads; the worker's private memory (heap and stacks,
    // not shared buffers) stays under 64 MiB: buffers per thread, not whole files.
    eprintln!(
        "worker RssAnon {} MiB before, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < 64 * 1024,
        "the worker's private memory peaked at {} MiB",
        peak / 1024
    );
}
