//! Delivery guarantees under adversity: a slow Graph API sends nothing twice, a write-back
//! that fails loses no outcome, unknown outcomes are held rather than repeated, and each
//! customer gets their messages in the order they were enqueued. These tests use the database
//! the worker serves (`wa_it`), one at a time.

use graph_sim::SimConfig;
use postgres::Client;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use wa_integration_tests::worker_env::*;
use wa_integration_tests::{connect_as, sql_error};

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

/// Accepted sends at the simulator, in arrival order: (callback = our message id, wamid).
fn accepted_sends(env: &Env) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let log = env
            .sim
            .admin(
                "GET",
                &format!("requests?since={since}&limit=10000"),
                Value::Null,
            )
            .1;
        let requests = log["requests"].as_array().cloned().unwrap_or_default();
        if requests.is_empty() {
            return out;
        }
        for r in &requests {
            if r["endpoint"] == "send"
                && r["status"] == 200
                && let (Some(cb), Some(w)) =
                    (r["biz_opaque_callback_data"].as_str(), r["wamid"].as_str())
            {
                out.push((cb.to_string(), w.to_string()));
            }
        }
        since = log["next_seq"].as_i64().unwrap_or(since + 1);
    }
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_slow_graph_api_gets_every_message_once() {
    let env = env(SimConfig::benchmark());
    env.sim
        .admin("POST", "webhook_config", json!({ "url": null }));
    let (t, _, _) = tenant(&env, "Slow");
    let mut su = env.su();
    set_system(&mut su, "wa.worker_concurrency", "4");
    reload(&mut su);
    env.sim
        .admin("POST", "faults", json!({ "latency_ms": 1000 }));
    const N: usize = 500;
    su.batch_execute("BEGIN").unwrap();
    for n in 0..N {
        send(&mut su, &t, &format!("1555{n:07}"), text("slow"));
    }
    su.batch_execute("COMMIT").unwrap();
    wait_until("every message sent", Duration::from_secs(400), || {
        count(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE status = 'queued'",
        ) == 0
    });
    let sends = accepted_sends(&env);
    let mut per_message: HashMap<&str, Vec<&str>> = HashMap::new();
    for (cb, w) in &sends {
        per_message.entry(cb).or_default().push(w);
    }
    let twice = per_message.values().filter(|w| w.len() > 1).count();
    eprintln!(
        "slow graph: {N} messages, {} accepted sends, {twice} sent twice",
        sends.len()
    );
    assert_eq!(per_message.len(), N);
    assert_eq!(twice, 0, "no message may be sent twice without a crash");
    for row in su
        .query(
            "SELECT message_id::text, status, wamid, extra_wamids IS NULL FROM wa.messages",
            &[],
        )
        .unwrap()
    {
        let id: String = row.get(0);
        let wamid: Option<String> = row.get(2);
        assert_eq!(row.get::<_, String>(1), "sent", "{id}");
        assert_eq!(
            per_message.get(id.as_str()).map(|w| w[0]),
            wamid.as_deref(),
            "{id} keeps the wamid the simulator returned"
        );
        assert!(row.get::<_, bool>(3));
    }
    let status: Value = su
        .query_one("SELECT wa.worker_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["duplicates"], 0, "{status}");
    assert_eq!(count(&mut su, "SELECT count(*) FROM wa.outbox"), 0);
}

#[test]
fn timed_out_sends_are_held_then_sent_and_each_duplicate_is_kept_on_its_message() {
    // Status webhooks flow back: they are what settles a send whose answer never came.
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Flaky");
    let mut su = env.su();
    set_system(&mut su, "wa.worker_concurrency", "4");
    set_system(&mut su, "wa.http_timeout_ms", "5000");
    reload(&mut su);
    // Half a second to three seconds per request, and one in ten never answered (the simulator
    // still takes the message: the request reached Meta, and its status webhooks follow).
    env.sim.admin(
        "POST",
        "faults",
        json!({ "latency_ms": 500, "latency_max_ms": 3000, "timeout_ratio": 0.1, "timeout_ms": 0,
                "endpoints": ["send"] }),
    );
    const N: usize = 60;
    su.batch_execute("BEGIN").unwrap();
    for n in 0..N {
        send(&mut su, &t, &format!("1666{n:07}"), text("flaky"));
    }
    su.batch_execute("COMMIT").unwrap();
    wait_until("every message sent", Duration::from_secs(300), || {
        count(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE status = 'queued'",
        ) == 0
    });
    let timed_out: i64 = env.sim.stats()["faults_injected"]["timeout"]
        .as_i64()
        .unwrap_or(0);
    let sends = accepted_sends(&env);
    let mut per_message: HashMap<&str, usize> = HashMap::new();
    for (cb, _) in &sends {
        *per_message.entry(cb).or_default() += 1;
    }
    let duplicates: i64 = per_message.values().map(|n| *n as i64 - 1).sum();
    let status: Value = su
        .query_one("SELECT wa.worker_status()", &[])
        .unwrap()
        .get(0);
    eprintln!(
        "timeouts: {N} messages, {timed_out} requests timed out, {duplicates} duplicates, \
         {} unknown outcomes held, worker counted {} duplicates",
        status["unknown_outcomes"], status["duplicates"]
    );
    assert_eq!(per_message.len(), N, "every message reached the simulator");
    assert!(timed_out > 0, "the simulator timed nothing out");
    // A request can still be waiting for its own timeout after its status settled it.
    wait_until(
        "every timeout seen by the worker",
        Duration::from_secs(15),
        || {
            let s: Value = su
                .query_one("SELECT wa.worker_status()", &[])
                .unwrap()
                .get(0);
            s["unknown_outcomes"].as_i64().unwrap_or(0) >= timed_out
        },
    );
    assert!(
        duplicates <= timed_out,
        "{duplicates} duplicates, but only {timed_out} requests timed out"
    );
    let extra = count(
        &mut su,
        "SELECT coalesce(sum(cardinality(extra_wamids)), 0)::bigint FROM wa.messages",
    );
    assert_eq!(
        extra, duplicates,
        "each second wamid is kept on its message"
    );
    assert_eq!(count(&mut su, "SELECT count(*) FROM wa.messages"), N as i64);
    assert_eq!(count(&mut su, "SELECT count(*) FROM wa.outbox"), 0);
    assert_eq!(
        count(
            &mut su,
            "SELECT count(*) FROM wa.webhook_events WHERE status <> 'processed'"
        ),
        0,
        "every status webhook applied"
    );
}

#[test]
fn a_write_back_that_fails_loses_no_outcome_and_sends_nothing_again() {
    let env = env(SimConfig::benchmark());
    env.sim
        .admin("POST", "webhook_config", json!({ "url": null }));
    let (t, _, _) = tenant(&env, "Locked");
    let mut su = env.su();
    env.sim
        .admin("POST", "faults", json!({ "latency_ms": 500 }));
    let m = send(&mut su, &t, "15550001111", text("locked out"));
    // While the request is at Meta, another session locks the message row for longer than
    // the write-back's lock timeout (5 s).
    let mut locker = connect_as(DB, "postgres");
    locker.batch_execute("BEGIN").unwrap();
    locker
        .execute(
            "SELECT 1 FROM wa.messages WHERE message_id = $1::text::uuid FOR UPDATE",
            &[&m],
        )
        .unwrap();
    wait_until(
        "the send reached the simulator",
        Duration::from_secs(10),
        || accepted_for(&env.sim, &m) == 1,
    );
    wait_until("the write-back failed", Duration::from_secs(15), || {
        let s: Value = su
            .query_one("SELECT wa.worker_status()", &[])
            .unwrap()
            .get(0);
        s["unrecorded"].as_i64().unwrap_or(0) >= 1
    });
    assert_eq!(status_of(&mut su, &m), "queued");
    locker.batch_execute("COMMIT").unwrap();
    wait_until("the outcome recorded", Duration::from_secs(15), || {
        status_of(&mut su, &m) == "sent"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(accepted_for(&env.sim, &m), 1, "nothing was sent again");
    let s: Value = su
        .query_one("SELECT wa.worker_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(s["unrecorded"], 0, "{s}");
    assert!(s["last_error"].to_string().contains("write-back"), "{s}");
}

#[test]
fn one_customer_gets_messages_in_enqueue_order_through_retries() {
    let env = env(SimConfig::benchmark());
    env.sim
        .admin("POST", "webhook_config", json!({ "url": null }));
    let (t, _, _) = tenant(&env, "Order");
    let mut su = env.su();
    // The first three sends fail with a transient error and are retried with backoff.
    env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "send", "count": 3, "code": 131000, "http_status": 500}),
    );
    su.batch_execute("BEGIN").unwrap();
    let ids: Vec<String> = (0..10)
        .map(|i| send(&mut su, &t, "15550007777", text(&format!("step {i}"))))
        .collect();
    // Another customer is not held up by this one's retries.
    let other = send(&mut su, &t, "15550008888", text("unrelated"));
    su.batch_execute("COMMIT").unwrap();
    wait_until("all sent", Duration::from_secs(60), || {
        ids.iter().all(|m| status_of(&mut su, m) == "sent")
    });
    let order: Vec<String> = accepted_sends(&env)
        .into_iter()
        .map(|(cb, _)| cb)
        .filter(|cb| ids.contains(cb))
        .collect();
    assert_eq!(order, ids, "arrival order at the simulator");
    // It may have met one of the 500s itself, and then waits for its own retry only.
    wait_until(
        "the other customer's message sent",
        Duration::from_secs(30),
        || status_of(&mut su, &other) == "sent",
    );
}

#[test]
fn a_slow_signup_blocks_nobody_and_a_cancel_ends_it_within_a_second() {
    let env = env(SimConfig::benchmark());
    let (a, phone_a, _) = tenant(&env, "Busy");
    let mut su = env.su();
    let waba: String = su
        .query_one(
            "SELECT waba_id FROM wa.wabas WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    // A re-signup of the same business whose code exchange takes ten seconds at Meta.
    let signup = env.sim.signup_with(json!({ "waba_id": waba })).unwrap();
    env.sim.admin(
        "POST",
        "faults",
        json!({ "latency_ms": 10000, "endpoints": ["oauth_access_token"] }),
    );
    let (signer_pid, call) = exchange_in_background(&env, &a, &signup.code, (None, None), false);
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile the same tenant sends and receives as usual.
    sends_and_receives(&env, &mut su, &a, &phone_a);
    assert!(!call.is_finished(), "the code exchange is still at Meta");
    cancel_within_a_second(&mut su, signer_pid, call);
    // The signup's worker was not cancelled with its caller: it records how the code exchange
    // ended (here: it timed out at 2 s), and the connection it would replace is untouched.
    wait_until(
        "the signup recorded its end",
        Duration::from_secs(15),
        || {
            count(
                &mut su,
                "SELECT count(*) FROM wa.signups WHERE last_error->>'step' = 'token_exchange'",
            ) == 1
        },
    );
    let state: String = su
        .query_one(
            "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "connected");
}

/// A tenant created (and committed) but not connected, and a business at the simulator.
fn new_tenant(env: &Env, name: &str) -> (String, graph_sim::Signup) {
    let mut su = env.su();
    let t: String = su
        .query_one("SELECT wa.create_tenant($1)::text", &[&name])
        .unwrap()
        .get(0);
    (t, env.sim.signup().unwrap())
}

fn signup_row(c: &mut Client, tenant: &str) -> Value {
    c.query_one(
        "SELECT coalesce(pg_catalog.to_jsonb(s), '{}') || jsonb_build_object(
                'tenant_state', t.state,
                'pin', EXISTS (SELECT 1 FROM wa.credentials k
                                WHERE k.tenant_id = t.tenant_id AND k.kind = 'registration_pin'),
                'token', EXISTS (SELECT 1 FROM wa.credentials k
                                  WHERE k.tenant_id = t.tenant_id AND k.kind = 'business_token'),
                'routes', (SELECT count(*) FROM wa.routes r WHERE r.tenant_id = t.tenant_id),
                'registration_status', (SELECT string_agg(registration_status, ',')
                                          FROM wa.phone_numbers p WHERE p.tenant_id = t.tenant_id))
           FROM wa.tenants t LEFT JOIN wa.signups s USING (tenant_id)
          WHERE t.tenant_id = $1::text::uuid",
        &[&tenant],
    )
    .unwrap()
    .get(0)
}

/// Requests the simulator answered at an endpoint.
fn calls(env: &Env, endpoint: &str) -> i64 {
    env.sim.stats()["per_endpoint"][endpoint]
        .as_i64()
        .unwrap_or(0)
}

fn sim_number(env: &Env, phone: &str) -> Value {
    let state = env.sim.admin("GET", "state", Value::Null).1;
    state["wabas"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["phone_numbers"].as_array().cloned().unwrap_or_default())
        .find(|n| n["id"] == phone)
        .unwrap_or(Value::Null)
}

#[test]
fn a_first_signup_commits_its_steps_holds_no_lock_over_graph_and_outlives_its_caller() {
    let env = env(SimConfig::benchmark());
    let (other, other_phone, _) = tenant(&env, "Other");
    let (t, signup) = new_tenant(&env, "New");
    let mut su = env.su();
    set_system(&mut su, "wa.http_timeout_ms", "15000");
    reload(&mut su);
    // Meta takes ten seconds to subscribe our app to the new business's WABA.
    env.sim.admin(
        "POST",
        "faults",
        json!({ "latency_ms": 10000, "endpoints": ["subscribed_apps"] }),
    );
    // In a transaction of the caller's that will not commit.
    let ids = (
        Some(signup.waba_id.clone()),
        Some(signup.phone_number_id.clone()),
    );
    let (signer_pid, call) = exchange_in_background(&env, &t, &signup.code, ids, true);
    // The token and the connection are committed before the subscribe call goes out.
    wait_until("the connection stored", Duration::from_secs(8), || {
        let s = signup_row(&mut su, &t);
        s["access_checked_at"].is_string() && s["routes"] == 2 && s["token"] == true
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile: a customer writes to the new number (Meta sends right after subscribing),
    // and it reaches the new tenant; the other tenant sends and receives as usual.
    let (status, inbound) = env.sim.admin(
        "POST",
        "inbound",
        json!({"phone_number_id": signup.phone_number_id, "from": "15550003333", "text": "first!"}),
    );
    assert_eq!(status, 200, "{inbound}");
    let wamid = inbound["wamid"].as_str().unwrap().to_string();
    wait_until("received by the new tenant", Duration::from_secs(5), || {
        count(
            &mut su,
            &format!(
                "SELECT count(*) FROM wa.messages WHERE wamid = '{wamid}' AND tenant_id = '{t}'"
            ),
        ) == 1
    });
    sends_and_receives(&env, &mut su, &other, &other_phone);
    assert!(!call.is_finished(), "the subscribe call is still at Meta");
    // The caller gives up: the call ends at once, its transaction rolls back ...
    cancel_within_a_second(&mut su, signer_pid, call);
    // ... and the signup goes on in its worker to the end, with no second call.
    wait_until("the signup completed", Duration::from_secs(20), || {
        signup_row(&mut su, &t)["tenant_state"] == "connected"
    });
    let s = signup_row(&mut su, &t);
    assert!(s["completed_at"].is_string(), "{s}");
    assert_eq!(s["pin"], true, "{s}");
    assert_eq!(s["registration_status"], "registered", "{s}");
    assert_eq!(
        sim_number(&env, &signup.phone_number_id)["registered"],
        true
    );
    let m = send(&mut su, &t, "15550003333", text("welcome"));
    wait_until("the new tenant sends", Duration::from_secs(10), || {
        status_of(&mut su, &m) == "read"
    });
    assert_eq!(accepted_for(&env.sim, &m), 1);
}

#[test]
fn a_signup_that_fails_after_register_keeps_its_pin_and_completes_when_called_again() {
    let env = env(SimConfig::benchmark());
    let (t, signup) = new_tenant(&env, "Resumed");
    let mut su = env.su();
    let call = |su: &mut Client| -> Value {
        su.query_one(
            "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
            &[&t, &signup.code, &signup.waba_id, &signup.phone_number_id],
        )
        .unwrap()
        .get(0)
    };
    // Refused before anything is asked of Meta: a snapshot that would not see the steps the
    // signup commits, and a tenant the signup's own session cannot see yet.
    su.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let (sqlstate, _) = sql_error(su.query_one(
        "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
        &[&t, &signup.code, &signup.waba_id, &signup.phone_number_id],
    ));
    assert_eq!(sqlstate, "25000");
    su.batch_execute("ROLLBACK").unwrap();
    su.batch_execute("BEGIN").unwrap();
    let uncommitted: String = su
        .query_one("SELECT wa.create_tenant('Uncommitted')::text", &[])
        .unwrap()
        .get(0);
    let (sqlstate, message) = sql_error(su.query_one(
        "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
        &[
            &uncommitted,
            &signup.code,
            &signup.waba_id,
            &signup.phone_number_id,
        ],
    ));
    assert_eq!(sqlstate, "25000", "{message}");
    su.batch_execute("ROLLBACK").unwrap();
    assert_eq!(calls(&env, "oauth_access_token"), 0);

    // Meta registers the number but answers only after our timeout (2 s here).
    env.sim.admin(
        "POST",
        "faults",
        json!({ "timeout_ratio": 1.0, "timeout_ms": 4000, "endpoints": ["register"] }),
    );
    let first = call(&mut su);
    assert_eq!(first["signup"]["last_error"]["step"], "register", "{first}");
    assert_eq!(first["state"], "error", "{first}");
    assert_eq!(
        sim_number(&env, &signup.phone_number_id)["registered"],
        true
    );
    let s = signup_row(&mut su, &t);
    assert_eq!(s["pin"], true, "the PIN was stored before register: {s}");
    assert!(s["registered_at"].is_null(), "{s}");

    // Called again, in a transaction rolled back afterwards, with the step after register
    // failing once: register goes again with the stored PIN (another PIN would get 133005).
    env.sim.admin("POST", "faults", json!({ "clear": true }));
    env.sim.admin(
        "POST",
        "fail_next",
        json!({ "endpoint": "phone_number", "code": 2, "http_status": 500 }),
    );
    su.batch_execute("BEGIN").unwrap();
    let second = call(&mut su);
    su.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        second["signup"]["last_error"]["step"], "phone_number_info",
        "{second}"
    );
    let s = signup_row(&mut su, &t);
    assert!(
        s["registered_at"].is_string(),
        "kept despite the rollback: {s}"
    );
    assert_eq!(s["registration_status"], "registered", "{s}");
    assert_eq!(calls(&env, "register"), 2);

    // Once more: it completes, without registering again.
    let third = call(&mut su);
    assert_eq!(third["state"], "connected", "{third}");
    assert!(third["signup"]["last_error"].is_null(), "{third}");
    assert_eq!(calls(&env, "register"), 2);
    let m = send(&mut su, &t, "15550004444", text("connected at last"));
    wait_until("sent", Duration::from_secs(10), || {
        status_of(&mut su, &m) == "read"
    });
}

/// Calls wa.exchange_code(tenant, code, waba, phone) on a session of its own, on another
/// thread, inside BEGIN when `in_transaction`: that session's pid, and the call.
fn exchange_in_background(
    env: &Env,
    tenant: &str,
    code: &str,
    (waba, phone): (Option<String>, Option<String>),
    in_transaction: bool,
) -> (i32, std::thread::JoinHandle<Result<(), postgres::Error>>) {
    let mut signer = env.su();
    let pid: i32 = signer
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let (tenant, code) = (tenant.to_string(), code.to_string());
    let call = std::thread::spawn(move || {
        if in_transaction {
            signer.batch_execute("BEGIN").unwrap();
        }
        signer
            .query_one(
                "SELECT wa.exchange_code($1::text::uuid, $2, $3, $4)",
                &[&tenant, &code, &waba, &phone],
            )
            .map(|_| ())
    });
    (pid, call)
}

/// A tenant sends a message that is read, and receives one.
fn sends_and_receives(env: &Env, su: &mut Client, tenant: &str, phone: &str) {
    let m = send(su, tenant, "15550001111", text("during a signup"));
    wait_until("sent during the signup", Duration::from_secs(5), || {
        status_of(su, &m) == "read"
    });
    let (status, inbound) = env.sim.admin(
        "POST",
        "inbound",
        json!({"phone_number_id": phone, "from": "15550002222", "text": "hi"}),
    );
    assert_eq!(status, 200, "{inbound}");
    let wamid = inbound["wamid"].as_str().unwrap().to_string();
    wait_until("received during the signup", Duration::from_secs(5), || {
        count_wamid(su, &wamid) == 1
    });
}

/// Cancels a signup call running on another thread: it must end with 57014 within a second.
fn cancel_within_a_second(
    su: &mut Client,
    pid: i32,
    call: std::thread::JoinHandle<Result<(), postgres::Error>>,
) {
    let cancelled = std::time::Instant::now();
    su.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let error = call.join().unwrap().expect_err("the call was cancelled");
    let ended = cancelled.elapsed();
    assert_eq!(
        error.as_db_error().map(|e| e.code().code().to_string()),
        Some("57014".to_string()),
        "{error}"
    );
    assert!(ended < Duration::from_secs(1), "the cancel took {ended:?}");
}

fn count_wamid(c: &mut Client, wamid: &str) -> i64 {
    c.query_one(
        "SELECT count(*) FROM wa.messages WHERE wamid = $1",
        &[&wamid],
    )
    .unwrap()
    .get(0)
}

fn restore_into_served_database(dump: &[u8]) {
    use std::io::Write;
    let mut su = connect_as(DB, "postgres");
    su.batch_execute(
        "DROP EXTENSION IF EXISTS whatsapp_pg CASCADE; DROP SCHEMA IF EXISTS wa CASCADE;",
    )
    .unwrap();
    drop(su);
    let mut psql = std::process::Command::new(wa_integration_tests::pg_bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &wa_integration_tests::port().to_string(),
        ])
        .args(["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-d", DB])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    psql.stdin.take().unwrap().write_all(dump).unwrap();
    assert!(psql.wait().unwrap().success(), "restore");
}

#[test]
fn sending_can_be_paused_per_tenant_or_globally_and_a_restored_copy_waits_to_be_accepted() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Paused");
    let mut su = env.su();

    // One tenant paused: its messages queue, nothing goes, until it is resumed.
    su.query_one("SELECT wa.pause_sending($1::text::uuid)", &[&t])
        .unwrap();
    let m = send(&mut su, &t, "15550001111", text("after the pause"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_of(&mut su, &m), "queued");
    assert_eq!(accepted_for(&env.sim, &m), 0);
    su.query_one("SELECT wa.resume_sending($1::text::uuid)", &[&t])
        .unwrap();
    wait_until("sent after resuming", Duration::from_secs(15), || {
        status_of(&mut su, &m) != "queued"
    });
    assert_eq!(accepted_for(&env.sim, &m), 1);

    // Every tenant at once: the wa.sending_enabled switch.
    set_system(&mut su, "wa.sending_enabled", "off");
    reload(&mut su);
    let m = send(&mut su, &t, "15550001111", text("switched off"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_of(&mut su, &m), "queued");
    su.batch_execute("ALTER SYSTEM RESET wa.sending_enabled")
        .unwrap();
    reload(&mut su);
    wait_until("sent when switched on", Duration::from_secs(15), || {
        status_of(&mut su, &m) != "queued"
    });
    assert_eq!(accepted_for(&env.sim, &m), 1);

    // Production (a database the worker does not serve) with a queued message, dumped and
    // restored under another name: the copy sends nothing until an administrator accepts it.
    let prod = wa_integration_tests::TestDb::new("prod");
    let mut p = prod.superuser();
    p.execute(
        "SELECT wa.configure_app($1, $2, 'verify', '1')",
        &[&env.sim.app_id(), &env.sim.app_secret()],
    )
    .unwrap();
    let signup = env.sim.signup_with(json!({ "token": true })).unwrap();
    let pt: String = p
        .query_one("SELECT wa.create_tenant('Prod')::text", &[])
        .unwrap()
        .get(0);
    p.execute(
        "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
        &[
            &pt,
            &signup.waba_id,
            &signup.phone_number_id,
            &signup.access_token.unwrap(),
        ],
    )
    .unwrap();
    let queued = send(&mut p, &pt, "15550002222", text("from production"));
    drop(p);
    let dump = std::process::Command::new(wa_integration_tests::pg_bin("pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &wa_integration_tests::port().to_string(),
        ])
        .args(["-U", "postgres", &prod.name])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    drop(su);
    restore_into_served_database(&dump.stdout);
    let mut su = connect_as(DB, "postgres");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(status_of(&mut su, &queued), "queued");
    assert_eq!(accepted_for(&env.sim, &queued), 0, "the copy sent nothing");
    let status: Value = su
        .query_one("SELECT wa.worker_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        status["sending"]["restored_from"],
        prod.name.as_str(),
        "{status}"
    );
    su.query_one("SELECT wa.resume_sending()", &[]).unwrap();
    wait_until("sent once accepted", Duration::from_secs(15), || {
        status_of(&mut su, &queued) != "queued"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(accepted_for(&env.sim, &queued), 1, "sent once");
}
