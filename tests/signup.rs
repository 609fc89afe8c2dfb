//! Embedded Signup with one-time signup states (wa.begin_signup / wa.complete_signup), and a
//! re-signup of a connected tenant that changes nothing until it has fully succeeded.
//!
//! Uses the worker's database (`wa_it`) and its simulator, so messages really go out: these
//! tests run one at a time with the worker tests (`env()` holds the serial lock).

use graph_sim::SimConfig;
use postgres::Client;
use serde_json::{Value, json};
use std::time::Duration;
use wa_integration_tests::sql_error_text;
use wa_integration_tests::worker_env::*;

/// Everything of a tenant's connection a failed re-signup must leave as it was.
#[derive(Debug, PartialEq)]
struct Connection {
    state: String,
    last_error: Option<Value>,
    business_token: Vec<u8>,
    credentials: Vec<String>,
    routes: Vec<String>,
    wabas: Vec<String>,
    numbers: Vec<String>,
}

fn connection(c: &mut Client, tenant: &str) -> Connection {
    let row = c
        .query_one(
            "SELECT state, last_error FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&tenant],
        )
        .unwrap();
    let strings = |c: &mut Client, sql: &str| -> Vec<String> {
        c.query(sql, &[&tenant])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    Connection {
        state: row.get(0),
        last_error: row.get(1),
        business_token: c
            .query_one(
                "SELECT ciphertext FROM wa.credentials
                  WHERE tenant_id = $1::text::uuid AND kind = 'business_token'",
                &[&tenant],
            )
            .unwrap()
            .get(0),
        credentials: strings(
            c,
            "SELECT kind || ' ' || updated_at::text FROM wa.credentials
              WHERE tenant_id = $1::text::uuid AND kind NOT LIKE 'signup%' ORDER BY kind",
        ),
        routes: strings(
            c,
            "SELECT kind || ' ' || external_id FROM wa.routes
              WHERE tenant_id = $1::text::uuid ORDER BY 1",
        ),
        wabas: strings(
            c,
            "SELECT waba_id || ' ' || status || ' ' || coalesce(subscribed_at::text, '-') || ' ' || updated_at::text
               FROM wa.wabas WHERE tenant_id = $1::text::uuid ORDER BY 1",
        ),
        numbers: strings(
            c,
            "SELECT phone_number_id || ' ' || waba_id || ' ' || status || ' ' || registration_status
                    || ' ' || updated_at::text
               FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid ORDER BY 1",
        ),
    }
}

fn begin(c: &mut Client, tenant: &str) -> (String, String) {
    let v: Value = c
        .query_one("SELECT wa.begin_signup($1::text::uuid)", &[&tenant])
        .unwrap()
        .get(0);
    (
        v["state"].as_str().unwrap().to_string(),
        v["signup_attempt_id"].as_str().unwrap().to_string(),
    )
}

fn complete(c: &mut Client, state: &str, s: &graph_sim::Signup) -> Result<Value, postgres::Error> {
    c.query_one(
        "SELECT wa.complete_signup($1, $2, $3, $4)",
        &[&state, &s.code, &s.waba_id, &s.phone_number_id],
    )
    .map(|r| r.get(0))
}

fn credential_kinds(c: &mut Client, tenant: &str) -> Vec<String> {
    c.query(
        "SELECT kind FROM wa.credentials WHERE tenant_id = $1::text::uuid ORDER BY kind",
        &[&tenant],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn sends_once(env: &Env, c: &mut Client, tenant: &str, phone: Option<&str>, body: &str) {
    let m: String = c
        .query_one(
            "SELECT wa.send_message($1::text::uuid, '15550002222', $2, $3)::text",
            &[
                &tenant,
                &json!({"type": "text", "text": {"body": body}}),
                &phone,
            ],
        )
        .unwrap()
        .get(0);
    wait_until(
        &format!("{body:?} accepted"),
        Duration::from_secs(15),
        || accepted_for(&env.sim, &m) == 1,
    );
    wait_until(&format!("{body:?} sent"), Duration::from_secs(5), || {
        status_of(c, &m) != "queued"
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        accepted_for(&env.sim, &m),
        1,
        "{body:?} sent more than once"
    );
    assert_ne!(status_of(c, &m), "failed", "{body:?}");
}

#[test]
fn a_failed_re_signup_changes_nothing_and_a_successful_one_switches() {
    let env = env(SimConfig::benchmark());
    let (t, old_phone, _) = tenant(&env, "Resignup Hotel");
    let mut su = env.su();
    sends_once(&env, &mut su, &t, None, "before the re-signup");
    let before = connection(&mut su, &t);
    assert_eq!(before.state, "connected");
    let waba: String = su
        .query_one(
            "SELECT waba_id FROM wa.wabas WHERE tenant_id = $1::text::uuid",
            &[&t],
        )
        .unwrap()
        .get(0);

    // The business adds a second number to its WABA and signs up again; registering it fails.
    let s = env.sim.signup_with(json!({ "waba_id": waba })).unwrap();
    assert_ne!(s.phone_number_id, old_phone);
    let (state, attempt) = begin(&mut su, &t);
    let (code, _) = env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "register", "count": 1, "code": 2, "http_status": 503}),
    );
    assert_eq!(code, 200);
    let failed = complete(&mut su, &state, &s).unwrap();
    assert_eq!(failed["state"], "connected", "{failed}");
    assert_eq!(failed["signup"]["completed"], false, "{failed}");
    assert_eq!(failed["signup"]["keeps_connection"], true, "{failed}");
    assert_eq!(failed["signup"]["signup_attempt_id"], attempt.as_str());
    assert_eq!(
        failed["signup"]["last_error"]["step"], "register",
        "{failed}"
    );

    // Token, routes, WABA, numbers, state: all as they were.
    assert_eq!(connection(&mut su, &t), before);
    let recorded: Value = su
        .query_one(
            "SELECT last_error FROM wa.signups WHERE tenant_id = $1::text::uuid",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded["step"], "register", "{recorded}");
    assert_eq!(
        recorded["signup_attempt_id"],
        attempt.as_str(),
        "{recorded}"
    );
    let events: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.account_events
              WHERE tenant_id = $1::text::uuid AND kind = 'signup.failed'
                AND detail->>'signup_attempt_id' = $2 AND detail->>'step' = 'register'",
            &[&t, &attempt],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
    // The tenant's state never left `connected` during the attempt.
    let changes: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.account_events
              WHERE tenant_id = $1::text::uuid AND kind LIKE 'connection.%'
                AND detail->>'state' IS DISTINCT FROM 'connected'",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert_eq!(changes, 0);
    // The new token, and the PIN stored before register was called, wait aside, encrypted.
    assert_eq!(
        credential_kinds(&mut su, &t),
        ["business_token", "signup_pin", "signup_token"]
    );
    // The worker keeps sending with the old token, from the old number.
    sends_once(&env, &mut su, &t, None, "after the failed re-signup");

    // The state was spent: the same one again is refused and changes nothing.
    let (sqlstate, text) = sql_error_text(complete(&mut su, &state, &s));
    assert_eq!(sqlstate, "28000", "{text}");
    assert!(text.contains("invalid, expired or already used"), "{text}");
    assert!(!text.contains(&state), "{text}");
    assert_eq!(connection(&mut su, &t), before);

    // A new state: the signup resumes at the number's registration and switches.
    let (state2, attempt2) = begin(&mut su, &t);
    assert_ne!(attempt2, attempt);
    let done = complete(&mut su, &state2, &s).unwrap();
    assert_eq!(done["state"], "connected", "{done}");
    assert_eq!(done["signup"]["completed"], true, "{done}");
    assert_eq!(done["signup"]["last_error"], Value::Null, "{done}");
    assert_eq!(done["signup"]["signup_attempt_id"], attempt2.as_str());
    let new_number = done["phone_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["phone_number_id"] == s.phone_number_id.as_str())
        .unwrap_or_else(|| panic!("the new number is not connected: {done}"));
    assert_eq!(new_number["registration_status"], "registered", "{done}");
    assert_eq!(
        new_number["display_phone_number"],
        s.display_phone_number.as_str()
    );
    let after = connection(&mut su, &t);
    assert_ne!(after.business_token, before.business_token);
    assert!(
        after
            .routes
            .contains(&format!("phone_number {}", s.phone_number_id)),
        "{after:?}"
    );
    assert_eq!(
        credential_kinds(&mut su, &t),
        ["business_token", "registration_pin"]
    );
    let completed: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.account_events
              WHERE tenant_id = $1::text::uuid AND kind = 'signup.completed_at'
                AND detail->>'signup_attempt_id' = $2",
            &[&t, &attempt2],
        )
        .unwrap()
        .get(0);
    assert_eq!(completed, 1);
    // The new token sends from both numbers of the WABA.
    sends_once(
        &env,
        &mut su,
        &t,
        Some(&s.phone_number_id),
        "from the new number",
    );
    sends_once(&env, &mut su, &t, Some(&old_phone), "from the old number");
}

#[test]
fn a_re_signup_with_an_expired_code_leaves_the_tenant_connected() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Late Re-signup");
    let mut su = env.su();
    let before = connection(&mut su, &t);
    let s = env.sim.signup_with(json!({"code_ttl_secs": 0.05})).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (state, attempt) = begin(&mut su, &t);
    let failed = complete(&mut su, &state, &s).unwrap();
    assert_eq!(failed["state"], "connected", "{failed}");
    let err = &failed["signup"]["last_error"];
    assert_eq!(err["step"], "token_exchange", "{failed}");
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{failed}"
    );
    assert_eq!(err["signup_attempt_id"], attempt.as_str());
    assert_eq!(connection(&mut su, &t), before);
    assert_eq!(credential_kinds(&mut su, &t), ["business_token"]);
    sends_once(&env, &mut su, &t, None, "still connected");
}

#[test]
fn signup_states_are_one_time_short_lived_and_bound_to_their_tenant() {
    let env = env(SimConfig::benchmark());
    let mut su = env.su();
    let new_tenant = |c: &mut Client, name: &str| -> String {
        c.query_one("SELECT wa.create_tenant($1)::text", &[&name])
            .unwrap()
            .get(0)
    };
    let a = new_tenant(&mut su, "State A");
    let b = new_tenant(&mut su, "State B");

    // 32 random bytes, stored only as their SHA-256, expiring in ten minutes by default.
    let v: Value = su
        .query_one("SELECT wa.begin_signup($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    let state = v["state"].as_str().unwrap().to_string();
    assert!(
        state.len() == 69
            && state.starts_with("wss1.")
            && state[5..].bytes().all(|c| c.is_ascii_hexdigit()),
        "{state}"
    );
    let (stored_plain, lifetime_ok): (i64, bool) = {
        let r = su
            .query_one(
                "SELECT count(*) FILTER (WHERE state_sha256 = $1),
                        bool_and(expires_at - created_at = interval '10 minutes')
                   FROM wa.signup_states WHERE tenant_id = $2::text::uuid",
                &[&state, &a],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(stored_plain, 0);
    assert!(lifetime_ok);
    let (sqlstate, _) = sql_error_text(su.query_one(
        "SELECT wa.begin_signup($1::text::uuid, interval '30 seconds')",
        &[&a],
    ));
    assert_eq!(sqlstate, "22023");
    let (sqlstate, _) = sql_error_text(su.query_one(
        "SELECT wa.begin_signup($1::text::uuid, interval '31 minutes')",
        &[&a],
    ));
    assert_eq!(sqlstate, "22023");

    // The state minted for A connects A, never B.
    let s = env.sim.signup().unwrap();
    let done = complete(&mut su, &state, &s).unwrap();
    assert_eq!(done["tenant_id"], a.as_str(), "{done}");
    assert_eq!(done["state"], "connected", "{done}");
    let b_state: String = su
        .query_one(
            "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&b],
        )
        .unwrap()
        .get(0);
    assert_eq!(b_state, "not_connected");

    // Replayed, expired or unknown: 28000, and nothing happens.
    let events = |c: &mut Client| -> i64 {
        c.query_one("SELECT count(*) FROM wa.account_events", &[])
            .unwrap()
            .get(0)
    };
    let before = events(&mut su);
    let s2 = env.sim.signup().unwrap();
    let (expired, _) = begin(&mut su, &b);
    su.execute(
        "UPDATE wa.signup_states SET created_at = now() - interval '11 minutes',
                expires_at = now() - interval '1 minute'
          WHERE tenant_id = $1::text::uuid",
        &[&b],
    )
    .unwrap();
    let before = before + 1; // signup.started of the expired state
    for refused in [
        state.as_str(),
        expired.as_str(),
        "wss1.0000000000000000000000000000000000000000000000000000000000000000",
        "",
    ] {
        let (sqlstate, text) = sql_error_text(complete(&mut su, refused, &s2));
        assert_eq!(sqlstate, "28000", "{refused:?}: {text}");
        assert!(
            refused.is_empty() || !text.contains(refused),
            "{refused:?}: {text}"
        );
    }
    assert_eq!(events(&mut su), before);
    let b_state: String = su
        .query_one(
            "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&b],
        )
        .unwrap()
        .get(0);
    assert_eq!(b_state, "not_connected");

    // wa_app mints states for its own tenant only, and cannot read them.
    su.batch_execute(&format!("SET ROLE wa_app; SET wa.tenant_id = '{a}'"))
        .unwrap();
    let own: Value = su
        .query_one("SELECT wa.begin_signup($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    assert!(own["state"].is_string());
    let (sqlstate, _) =
        sql_error_text(su.query_one("SELECT wa.begin_signup($1::text::uuid)", &[&b]));
    assert_eq!(sqlstate, "42501");
    let (sqlstate, _) = sql_error_text(su.query_one("SELECT count(*) FROM wa.signup_states", &[]));
    assert_eq!(sqlstate, "42501");
    let (sqlstate, _) = sql_error_text(complete(&mut su, own["state"].as_str().unwrap(), &s2));
    assert_eq!(sqlstate, "42501", "wa_app cannot complete a signup");
    su.batch_execute("RESET ROLE; RESET wa.tenant_id").unwrap();
}
