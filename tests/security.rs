//! The security boundary around the background worker: a database owner cannot take it over,
//! no unprivileged role can stop it, and a key-file problem is the operator's, not the
//! tenants'. These tests use the database the worker serves (`wa_it`), one at a time.

use graph_sim::SimConfig;
use postgres::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wa_integration_tests::keyfile::{
    KeyFileSwap, current_key_text, random_key_line, write_key_file,
};
use wa_integration_tests::worker_env::*;
use wa_integration_tests::{connect_as, sql_error};

const OWNER: &str = "it_db_owner";
const NOBODY: &str = "it_nobody";

/// A superuser session that ignores whatever search_path the database sets (the tests' own
/// statements must not run the shadow objects either).
fn pinned_su() -> Client {
    let mut c = connect_as(DB, "postgres");
    c.batch_execute("SET search_path = pg_catalog, public")
        .unwrap();
    c
}

fn ensure_login_role(name: &str) {
    let mut c = connect_as("postgres", "postgres");
    c.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {name} LOGIN NOSUPERUSER;
           EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         ALTER ROLE {name} NOSUPERUSER"
    ))
    .unwrap();
}

fn text(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

fn worker_pid_changes_from(c: &mut Client, old: Option<i32>, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(pid) = worker_pid(c)
            && Some(pid) != old
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no new worker within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Undoes the database owner's set-up, whatever the test's outcome.
struct HostileOwner;

impl Drop for HostileOwner {
    fn drop(&mut self) {
        let mut c = pinned_su();
        let _ = c.batch_execute(&format!(
            "ALTER DATABASE {DB} RESET search_path;
             DROP SCHEMA IF EXISTS evil CASCADE;
             ALTER DATABASE {DB} OWNER TO postgres;
             ALTER ROLE {OWNER} NOSUPERUSER;"
        ));
    }
}

/// Shadows, in schema `evil`, of the functions and operators the worker's statements use (and
/// many more): each one, if it ever ran, would count itself in `evil.ran` and try to make the
/// database owner a superuser.
const SHADOWS: &str = r#"
CREATE SCHEMA evil;
CREATE SEQUENCE evil.ran;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE evil.ran TO PUBLIC;
CREATE FUNCTION evil.hijack() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.nextval('evil.ran');
    BEGIN
        EXECUTE 'ALTER ROLE it_db_owner SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $$;
CREATE TABLE evil.made (what text);
DO $$
DECLARE
    r record;
    n integer := 0;
    types text[] := ARRAY['uuid', 'text', 'bigint', 'integer', 'double precision',
                          'timestamp with time zone', 'interval', 'jsonb', 'json', 'boolean',
                          'name', 'oid', 'bytea', 'smallint', 'numeric', 'text[]', 'uuid[]',
                          'bigint[]'];
BEGIN
    FOR r IN
        SELECT o.oprname, o.oprleft::regtype::text AS l, o.oprright::regtype::text AS rr,
               o.oprresult::regtype::text AS res
          FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace = 'pg_catalog'::regnamespace
           AND o.oprleft <> 0 AND o.oprright <> 0
           AND o.oprleft::regtype::text = ANY (types)
           AND o.oprright::regtype::text = ANY (types)
    LOOP
        n := n + 1;
        BEGIN
            EXECUTE format('CREATE FUNCTION evil.op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS '
                           '$f$ BEGIN PERFORM evil.hijack(); RETURN NULL; END $f$',
                           n, r.l, r.rr, r.res);
            EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op_%s)',
                           r.oprname, r.l, r.rr, n);
            INSERT INTO evil.made VALUES ('operator ' || r.oprname);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
    FOR r IN
        SELECT p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_result(p.oid) AS res, p.proretset
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
           AND p.proname IN ('now', 'pg_notify', 'json_build_object', 'jsonb_build_object',
                             'to_timestamp', 'unnest', 'length', 'pg_backend_pid', 'replace',
                             'gen_random_uuid', 'clock_timestamp', 'current_setting',
                             'jsonb_agg', 'row_to_json', 'to_json', 'to_jsonb',
                             'statement_timestamp', 'transaction_timestamp', 'lower',
                             'upper', 'btrim', 'regexp_replace', 'encode', 'decode',
                             'sha256', 'format', 'array_length', 'cardinality')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proargtypes) t
                            WHERE t IN ('"any"'::regtype, 'internal'::regtype, 'cstring'::regtype))
    LOOP
        BEGIN
            EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS '
                           '$f$ BEGIN PERFORM evil.hijack(); RETURN%s; END $f$',
                           r.proname, r.args, r.res,
                           CASE WHEN r.proretset THEN '' ELSE ' NULL' END);
            INSERT INTO evil.made VALUES ('function ' || r.proname);
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
END $$;
-- The attack that worked on 0.1: the exact argument types of the worker's notification.
CREATE FUNCTION evil.json_build_object(text, text, text, text, text, uuid, text, uuid, text, uuid)
    RETURNS json LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.hijack(); RETURN NULL; END $$;
CREATE FUNCTION evil.json_build_object(text, text, text, text, text, uuid, text, text, text, text)
    RETURNS json LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.hijack(); RETURN NULL; END $$;
CREATE FUNCTION evil.jsonb_build_object(text, text, text, text, text, text, text, bigint, text, boolean)
    RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN PERFORM evil.hijack(); RETURN NULL; END $$;
"#;

#[test]
fn a_database_owner_cannot_take_over_the_worker() {
    let env = env(SimConfig::benchmark());
    let (a, phone_a, _) = tenant(&env, "Hotel A");
    let (b, _, token_b) = tenant(&env, "Hotel B");
    ensure_login_role(OWNER);
    let _cleanup = HostileOwner;
    let mut su = pinned_su();
    su.batch_execute(&format!("ALTER DATABASE {DB} OWNER TO {OWNER}"))
        .unwrap();

    // The owner plants its shadows and puts them first for every new session.
    let mut owner = connect_as(DB, OWNER);
    owner.batch_execute(SHADOWS).unwrap();
    let made: i64 = owner
        .query_one("SELECT count(*) FROM evil.made", &[])
        .unwrap()
        .get(0);
    assert!(made > 150, "only {made} shadow objects could be made");
    owner
        .batch_execute(&format!(
            "ALTER DATABASE {DB} SET search_path = evil, pg_catalog"
        ))
        .unwrap();
    // A session that does not pin its search_path now runs the shadows (the attack is real).
    {
        let mut naive = connect_as(DB, OWNER);
        let _ = naive.query("SELECT now()", &[]);
        let ran: bool = su
            .query_one("SELECT is_called FROM evil.ran", &[])
            .unwrap()
            .get(0);
        assert!(ran, "the shadows are reachable from an unpinned session");
        su.batch_execute("SELECT pg_catalog.setval('evil.ran', 1, false)")
            .unwrap();
    }

    // The worker reconnects and so inherits the database's settings.
    let old = worker_pid(&mut su);
    su.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE backend_type = 'whatsapp_pg worker'",
    )
    .unwrap();
    worker_pid_changes_from(&mut su, old, Duration::from_secs(15));

    // Sends with status webhooks, a retry, a media download and a revoked token.
    let first = send(&mut su, &a, "15550001111", text("Your room is ready"));
    env.sim.admin(
        "POST",
        "fail_next",
        json!({"endpoint": "messages", "count": 1, "code": 131000, "http_status": 500}),
    );
    let retried = send(&mut su, &a, "15550002222", text("after a 500"));
    let (status, inbound) = env.sim.admin(
        "POST",
        "inbound",
        json!({"phone_number_id": phone_a, "from": "15550003333",
               "message": {"type": "image", "image": {"caption": "the view"}}}),
    );
    assert_eq!(status, 200, "{inbound}");
    env.sim
        .admin("POST", &format!("tokens/{token_b}/revoke"), Value::Null);
    let refused = send(&mut su, &b, "15550004444", text("never accepted"));

    for m in [&first, &retried] {
        wait_until("status read", Duration::from_secs(30), || {
            status_of(&mut su, m) == "read"
        });
        assert_eq!(accepted_for(&env.sim, m), 1, "{m} accepted once");
    }
    // One of the two met the 500 and was sent again.
    let stats = env.sim.stats();
    let attempts = |m: &str| stats["attempts_per_callback"][m].as_i64().unwrap_or(0);
    assert_eq!(attempts(&first) + attempts(&retried), 3);
    let wamid = inbound["wamid"].as_str().unwrap().to_string();
    wait_until("media stored", Duration::from_secs(30), || {
        su.query_one(
            "SELECT count(*) FROM wa.messages m JOIN wa.media f
                 ON f.tenant_id = m.tenant_id AND f.media_id = m.media->>'media_id'
              WHERE m.wamid = $1 AND (m.media->>'stored')::boolean",
            &[&wamid],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
    wait_until("tenant B held", Duration::from_secs(30), || {
        su.query_one(
            "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
            &[&b],
        )
        .unwrap()
        .get::<_, String>(0)
            == "action_required"
    });
    assert_eq!(status_of(&mut su, &refused), "queued");

    let row = su
        .query_one(
            "SELECT r.rolsuper, (SELECT is_called FROM evil.ran)
               FROM pg_roles r WHERE r.rolname = $1",
            &[&OWNER],
        )
        .unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "the database owner became superuser"
    );
    assert!(!row.get::<_, bool>(1), "a shadow object ran");
    let worker = su
        .query_one(
            "SELECT rolsuper, rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname = 'wa_worker'",
            &[],
        )
        .unwrap();
    assert!(!worker.get::<_, bool>(0) && !worker.get::<_, bool>(1) && !worker.get::<_, bool>(2));
}

#[test]
fn no_unprivileged_role_can_stop_the_worker() {
    let env = env(SimConfig::benchmark());
    let (t, _, _) = tenant(&env, "Hotel");
    ensure_login_role(NOBODY);
    let mut su = pinned_su();
    let before = worker_pid(&mut su).expect("worker running");

    // Not the owner: refused, and the worker never left.
    let mut nobody = connect_as("postgres", NOBODY);
    let (code, message) = sql_error(nobody.batch_execute(&format!("DROP DATABASE {DB}")));
    assert_eq!(code, "42501", "{message}");
    // The owner (a superuser here) while another session uses the database: refused too.
    let _busy = connect_as(DB, "postgres");
    let mut admin = connect_as("postgres", "postgres");
    let (code, message) = sql_error(admin.batch_execute(&format!("DROP DATABASE {DB}")));
    assert_eq!(code, "55006", "{message}");

    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(worker_pid(&mut su), Some(before), "the worker stayed");
    let m = send(&mut su, &t, "15550001111", text("still sending"));
    wait_until(
        "sent after the failed drops",
        Duration::from_secs(20),
        || status_of(&mut su, &m) == "read",
    );
    assert_eq!(accepted_for(&env.sim, &m), 1);

    // Ended by a superuser, it is back within seconds.
    su.batch_execute(&format!("SELECT pg_terminate_backend({before})"))
        .unwrap();
    worker_pid_changes_from(&mut su, Some(before), Duration::from_secs(10));
    let m = send(&mut su, &t, "15550001111", text("after a restart"));
    wait_until("sent after the restart", Duration::from_secs(20), || {
        status_of(&mut su, &m) == "read"
    });

    // Dropping another database with the extension is not held up by anything of ours.
    let other = wa_integration_tests::TestDb::new("dropme");
    let started = Instant::now();
    admin
        .batch_execute(&format!("DROP DATABASE {}", other.name))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

fn paused(c: &mut Client) -> Value {
    c.query_one("SELECT wa.worker_status()->'paused'", &[])
        .unwrap()
        .get::<_, Option<Value>>(0)
        .unwrap_or(Value::Null)
}

fn tenant_state(c: &mut Client, tenant: &str) -> String {
    c.query_one(
        "SELECT state FROM wa.tenants WHERE tenant_id = $1::text::uuid",
        &[&tenant],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_key_file_problem_holds_sending_and_touches_no_tenant() {
    let env = env(SimConfig::benchmark());
    let (t, _, token) = tenant(&env, "Keys");
    let mut su = pinned_su();

    // A file with another key under the same id: the stored token does not open.
    let wrong = write_key_file("wrong.key", &random_key_line("k1"), 0o600);
    let m = {
        let _swap = KeyFileSwap::point_at(&wrong);
        reload(&mut su);
        let m = send(&mut su, &t, "15550001111", text("waits for the key"));
        wait_until("the key problem reported", Duration::from_secs(15), || {
            paused(&mut su)["reason"] == "undecryptable_tokens"
        });
        std::thread::sleep(Duration::from_secs(2));
        let p = paused(&mut su);
        assert_eq!(p["key_ids"], json!(["k1"]), "{p}");
        assert_eq!(status_of(&mut su, &m), "queued");
        assert_eq!(accepted_for(&env.sim, &m), 0);
        assert_eq!(tenant_state(&mut su, &t), "connected");
        let status: Value = su
            .query_one("SELECT wa.worker_status()", &[])
            .unwrap()
            .get(0);
        let error = status["last_error"].to_string();
        assert!(
            error.contains("\\\"k1\\\"") || error.contains("\"k1\""),
            "{status}"
        );
        assert!(
            !status.to_string().contains(&token),
            "the token leaked: {status}"
        );
        m
    };
    // The right file back and reloaded: the message goes, and the pause is lifted.
    reload(&mut su);
    wait_until("sent with the right key", Duration::from_secs(30), || {
        status_of(&mut su, &m) == "read"
    });
    assert_eq!(accepted_for(&env.sim, &m), 1);
    wait_until("pause lifted", Duration::from_secs(10), || {
        paused(&mut su).is_null()
    });

    // The right key in a file other users can read: refused, nothing is sent.
    let exposed = write_key_file("exposed.key", &current_key_text(), 0o644);
    let m = {
        let _swap = KeyFileSwap::point_at(&exposed);
        reload(&mut su);
        let m = send(&mut su, &t, "15550001111", text("waits for the file mode"));
        wait_until(
            "the key file problem reported",
            Duration::from_secs(15),
            || paused(&mut su)["reason"] == "key_file",
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(status_of(&mut su, &m), "queued");
        assert_eq!(accepted_for(&env.sim, &m), 0);
        assert_eq!(tenant_state(&mut su, &t), "connected");
        m
    };
    reload(&mut su);
    wait_until(
        "sent once the file is fixed",
        Duration::from_secs(30),
        || status_of(&mut su, &m) == "read",
    );
    assert_eq!(accepted_for(&env.sim, &m), 1);
    assert_eq!(tenant_state(&mut su, &t), "connected");
    let events: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.account_events WHERE kind = 'connection.token_rejected'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "no tenant was treated as revoked");
}
