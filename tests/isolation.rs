//! Tenant isolation that does not depend on each function remembering its check: objects are
//! owned by wa_owner (NOBYPASSRLS), whose row-level security policies bound every SECURITY
//! DEFINER function to the caller's tenant; connecting a WABA or number is atomic; a
//! disconnect releases the routes without losing late statuses; deleting a tenant leaves
//! nothing of it; every table has its place on a Citus cluster, with keys that distribute.

use postgres::Client;
use serde_json::Value;
use std::time::{Duration, Instant};
use wa_integration_tests::webhooks::*;
use wa_integration_tests::{TestDb, sql_error, sql_error_text};

const TOKEN: &str = "EAAGisolationtoken0123456789";

fn one_i64(c: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    c.query_one(sql, params).unwrap().get(0)
}

/// A tenant with an external reference (`ref-<name>`), so that wa.tenant_refs has its row.
fn create_tenant(c: &mut Client, name: &str) -> String {
    c.query_one("SELECT wa.create_tenant($1, 'ref-' || $1)::text", &[&name])
        .unwrap()
        .get(0)
}

fn connect(c: &mut Client, tenant: &str, waba: &str, phone: &str) -> Result<u64, postgres::Error> {
    c.execute(
        "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
        &[&tenant, &waba, &phone, &TOKEN],
    )
}

fn ingest(c: &mut Client, payload: &Value) -> Value {
    c.query_one("SELECT wa.ingest_webhook($1)", &[payload])
        .unwrap()
        .get(0)
}

/// An outbound message of `tenant` on `phone`, as wa.send_message leaves it (queued).
fn outbound(c: &mut Client, tenant: &str, phone: &str) -> String {
    c.query_one(
        "WITH ct AS (SELECT wa._upsert_contact($1::text::uuid, '15550001111', NULL, NULL, NULL) AS id),
              cv AS (SELECT wa._conversation_for($1::text::uuid, $2, ct.id) AS id FROM ct)
         INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status)
         SELECT $1::text::uuid, cv.id, 'outbound', 'text', '{\"type\":\"text\"}', 'queued'
           FROM cv RETURNING message_id::text",
        &[&tenant, &phone],
    )
    .unwrap()
    .get(0)
}

/// Tables of schema wa with a tenant_id column.
fn tenant_tables(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
         WHERE c.relnamespace = 'wa'::regnamespace AND c.relkind = 'r' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Two connected tenants with at least one row in every tenant table.
fn two_tenants(db: &TestDb) -> (String, String) {
    let mut su = db.superuser();
    let mut ids = Vec::new();
    for (name, waba, phone) in [("A", WABA_A, PHONE_A), ("B", WABA_B, PHONE_B)] {
        let t = create_tenant(&mut su, name);
        connect(&mut su, &t, waba, phone).unwrap();
        let m = outbound(&mut su, &t, phone);
        su.batch_execute(&format!(
            "INSERT INTO wa.outbox (tenant_id, kind, message_id, phone_number_id, payload)
             VALUES ('{t}', 'message', '{m}', '{phone}', '{{}}');
             INSERT INTO wa.templates (tenant_id, waba_id, template_id, name, language)
             VALUES ('{t}', '{waba}', 'tpl-{waba}', 'welcome', 'en_US');
             INSERT INTO wa.pending_statuses (tenant_id, wamid, status, status_payload)
             VALUES ('{t}', 'wamid.unknown.{t}', 'delivered', '{{}}');
             INSERT INTO wa.media (tenant_id, media_id, mime_type, size_bytes, content)
             VALUES ('{t}', 'media-{phone}', 'image/jpeg', 3, '\\x010203');
             INSERT INTO wa.media (tenant_id, media_id, mime_type, size_bytes, chunks)
             VALUES ('{t}', 'video-{phone}', 'video/mp4', 3, 1);
             INSERT INTO wa.media_chunks (tenant_id, media_id, seq, data)
             VALUES ('{t}', 'video-{phone}', 0, '\\x010203');
             INSERT INTO wa.signups (tenant_id, waba_id) VALUES ('{t}', '{waba}');
             SELECT wa.begin_signup('{t}');
             INSERT INTO wa.released_routes (kind, external_id, tenant_id)
             VALUES ('waba', '9{waba}', '{t}');"
        ))
        .unwrap();
        ids.push(t);
    }
    (ids[0].clone(), ids[1].clone())
}

/// A SECURITY DEFINER function that checks nothing: runs any statement and returns its row
/// count. Owned by wa_owner like the extension's own functions, callable by wa_app.
fn install_forgetful_functions(su: &mut Client) {
    su.batch_execute(
        "CREATE FUNCTION wa.forgetful_exec(p_sql text) RETURNS bigint
             LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
         AS $$ DECLARE n bigint; BEGIN EXECUTE p_sql; GET DIAGNOSTICS n = ROW_COUNT; RETURN n; END $$;
         CREATE FUNCTION wa.forgetful_count(p_table text, p_tenant uuid) RETURNS bigint
             LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
         AS $$ DECLARE n bigint; BEGIN
             EXECUTE pg_catalog.format('SELECT count(*) FROM wa.%I WHERE tenant_id = $1', p_table)
                INTO n USING p_tenant;
             RETURN n; END $$;
         REVOKE ALL ON FUNCTION wa.forgetful_exec(text), wa.forgetful_count(text, uuid) FROM PUBLIC;
         ALTER FUNCTION wa.forgetful_exec(text) OWNER TO wa_owner;
         ALTER FUNCTION wa.forgetful_count(text, uuid) OWNER TO wa_owner;
         GRANT EXECUTE ON FUNCTION wa.forgetful_exec(text), wa.forgetful_count(text, uuid)
             TO wa_app, wa_admin;",
    )
    .unwrap();
}

fn count_via(c: &mut Client, table: &str, tenant: &str) -> i64 {
    one_i64(
        c,
        "SELECT wa.forgetful_count($1, $2::text::uuid)",
        &[&table, &tenant],
    )
}

fn exec_via(c: &mut Client, sql: &str) -> Result<i64, postgres::Error> {
    c.query_one("SELECT wa.forgetful_exec($1)", &[&sql])
        .map(|r| r.get(0))
}

#[test]
fn a_definer_function_that_forgets_its_check_still_acts_only_for_the_callers_tenant() {
    let db = TestDb::new("forgetful");
    let (a, b) = two_tenants(&db);
    let mut su = db.superuser();
    install_forgetful_functions(&mut su);
    let tables = tenant_tables(&mut su);
    assert!(tables.len() >= 15, "{tables:?}");
    let counts_of_b = |su: &mut Client| -> Vec<i64> {
        tables
            .iter()
            .map(|t| {
                one_i64(
                    su,
                    &format!("SELECT count(*) FROM wa.{t} WHERE tenant_id = $1::text::uuid"),
                    &[&b],
                )
            })
            .collect()
    };
    let before = counts_of_b(&mut su);
    assert!(before.iter().all(|&n| n > 0), "{tables:?} {before:?}");

    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    for table in &tables {
        assert!(
            count_via(&mut app, table, &a) > 0,
            "A's own rows of wa.{table}"
        );
        assert_eq!(count_via(&mut app, table, &b), 0, "B's rows of wa.{table}");
        let all = exec_via(&mut app, &format!("SELECT 1 FROM wa.{table}")).unwrap();
        assert_eq!(
            all,
            count_via(&mut app, table, &a),
            "an unfiltered read of wa.{table} returns A's rows only"
        );
        let updated = exec_via(
            &mut app,
            &format!("UPDATE wa.{table} SET tenant_id = tenant_id WHERE tenant_id = '{b}'"),
        )
        .unwrap();
        assert_eq!(updated, 0, "UPDATE of B's rows of wa.{table}");
        let deleted = exec_via(
            &mut app,
            &format!("DELETE FROM wa.{table} WHERE tenant_id = '{b}'"),
        )
        .unwrap();
        assert_eq!(deleted, 0, "DELETE of B's rows of wa.{table}");
    }
    // The same statements on A's own rows do work: the zeros above are the policies.
    assert!(
        exec_via(
            &mut app,
            &format!("UPDATE wa.account_events SET detail = detail WHERE tenant_id = '{a}'")
        )
        .unwrap()
            > 0
    );
    // Unfiltered writes touch A's rows only.
    let touched = exec_via(&mut app, "UPDATE wa.messages SET type = 'tampered'").unwrap();
    assert_eq!(touched, count_via(&mut app, "messages", &a));
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.messages WHERE type = 'tampered' AND tenant_id = $1::text::uuid",
            &[&b]
        ),
        0
    );
    // Writing a row for B, or moving A's row to B, is refused.
    for sql in [
        format!("INSERT INTO wa.account_events (tenant_id, kind) VALUES ('{b}', 'intrusion')"),
        format!("INSERT INTO wa.contacts (tenant_id, wa_id) VALUES ('{b}', '15559990000')"),
        format!(
            "INSERT INTO wa.routes (kind, external_id, tenant_id) VALUES ('waba', '777', '{b}')"
        ),
        format!("UPDATE wa.account_events SET tenant_id = '{b}' WHERE tenant_id = '{a}'"),
    ] {
        let (code, msg) = sql_error(exec_via(&mut app, &sql));
        assert_eq!(code, "42501", "{sql}: {msg}");
        assert!(msg.contains("row-level security"), "{sql}: {msg}");
    }
    assert_eq!(counts_of_b(&mut su), before, "B's rows are untouched");

    // Without a tenant, wa_app sees nothing; administrators see every tenant.
    let mut app = db.app();
    assert_eq!(count_via(&mut app, "messages", &a), 0);
    assert_eq!(exec_via(&mut app, "SELECT 1 FROM wa.tenants").unwrap(), 0);
    let mut admin = db.admin();
    assert!(count_via(&mut admin, "messages", &a) > 0);
    assert!(count_via(&mut admin, "messages", &b) > 0);
    // An administrator acting for A still acts for every tenant (as wa._authorize_tenant allows).
    admin
        .batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    assert!(count_via(&mut admin, "credentials", &b) > 0);
}

#[test]
fn nothing_in_schema_wa_is_owned_by_a_superuser_or_granted_to_public() {
    let db = TestDb::new("owners");
    let mut su = db.superuser();
    let role: (bool, bool, bool, bool) = su
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolinherit, rolcanlogin FROM pg_roles WHERE rolname = 'wa_owner'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    assert_eq!(role, (false, false, false, false), "wa_owner's attributes");
    let functions = one_i64(
        &mut su,
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'wa'::regnamespace",
        &[],
    );
    assert!(functions > 30, "{functions} functions");
    let not_owned: Vec<String> = su
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
              WHERE p.pronamespace = 'wa'::regnamespace AND (r.rolsuper OR r.rolname <> 'wa_owner')
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
              WHERE c.relnamespace = 'wa'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'c', 'm')
                AND (r.rolsuper OR r.rolname <> 'wa_owner')
             UNION ALL
             SELECT t.oid::regtype::text FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner
              WHERE t.typnamespace = 'wa'::regnamespace AND (r.rolsuper OR r.rolname <> 'wa_owner')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(not_owned.is_empty(), "not owned by wa_owner: {not_owned:?}");
    let public: Vec<String> = su
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p,
                    aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a
              WHERE p.pronamespace = 'wa'::regnamespace AND a.grantee = 0
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_class c,
                    aclexplode(COALESCE(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a
              WHERE c.relnamespace = 'wa'::regnamespace AND a.grantee = 0
             UNION ALL
             SELECT t.oid::regtype::text FROM pg_type t,
                    aclexplode(COALESCE(t.typacl, acldefault('T', t.typowner))) a
              WHERE t.typnamespace = 'wa'::regnamespace AND t.typtype = 'c' AND a.grantee = 0
                AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(public.is_empty(), "granted to PUBLIC: {public:?}");
    // Every table forces row-level security and has a policy for wa_owner and for wa_worker.
    let unguarded: Vec<String> = su
        .query(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.relnamespace = 'wa'::regnamespace AND c.relkind = 'r'
                AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                         AND EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'wa'
                                      AND p.tablename = c.relname AND 'wa_owner' = ANY (p.roles))
                         AND EXISTS (SELECT 1 FROM pg_policies p WHERE p.schemaname = 'wa'
                                      AND p.tablename = c.relname AND 'wa_worker' = ANY (p.roles)))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unguarded.is_empty(), "{unguarded:?}");
}

#[test]
fn two_tenants_connecting_the_same_number_at_once_one_wins() {
    let db = TestDb::new("race");
    let mut s1 = db.superuser();
    let a = create_tenant(&mut s1, "A");
    let b = create_tenant(&mut s1, "B");
    s1.batch_execute("BEGIN").unwrap();
    connect(&mut s1, &a, WABA_A, PHONE_A).unwrap();
    // Session 2 connects B to the same WABA and number while A's transaction is open.
    let name = db.name.clone();
    let b2 = b.clone();
    let second = std::thread::spawn(move || {
        let mut s2 = wa_integration_tests::connect_as(&name, "postgres");
        sql_error_text(connect(&mut s2, &b2, WABA_A, PHONE_A))
    });
    // Until session 2 is waiting for session 1's route, then commit.
    let mut watch = db.superuser();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = one_i64(
            &mut watch,
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE '%connect_tenant%'",
            &[],
        );
        if waiting == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session 2 never waited for session 1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s1.batch_execute("COMMIT").unwrap();
    let (code, text) = second.join().unwrap();
    assert_eq!(code, "23505", "{text}");
    assert!(
        text.contains("already connected to another tenant"),
        "{text}"
    );

    let routes: Vec<(String, String)> = s1
        .query(
            "SELECT kind, tenant_id::text FROM wa.routes ORDER BY kind",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("phone_number".into(), a.clone()),
            ("waba".into(), a.clone())
        ]
    );
    assert_eq!(
        one_i64(
            &mut s1,
            "SELECT (SELECT count(*) FROM wa.wabas WHERE tenant_id = $1::text::uuid)
                  + (SELECT count(*) FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid)
                  + (SELECT count(*) FROM wa.credentials WHERE tenant_id = $1::text::uuid)",
            &[&b]
        ),
        0,
        "the loser keeps nothing"
    );
    let summary = ingest(
        &mut s1,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.race",
                Some("15550001111"),
                None,
                1_790_000_000,
                "hi",
            ),
        ),
    );
    assert_eq!(summary["messages"], 1, "{summary}");
    let landed: Vec<String> = s1
        .query("SELECT tenant_id::text FROM wa.messages", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(landed, vec![a]);
}

#[test]
fn disconnect_releases_the_routes_and_late_statuses_still_reach_the_former_tenant() {
    let db = TestDb::new("release");
    let mut su = db.superuser();
    let a = create_tenant(&mut su, "A");
    let b = create_tenant(&mut su, "B");
    connect(&mut su, &a, WABA_A, PHONE_A).unwrap();
    let (code, _) = sql_error(connect(&mut su, &b, WABA_A, PHONE_A));
    assert_eq!(code, "23505", "taken while A is connected");
    // Two messages A sent: one the worker stored the wamid of, one it had not yet.
    let sent = outbound(&mut su, &a, PHONE_A);
    su.execute(
        "UPDATE wa.messages SET wamid = 'wamid.out.a', status = 'sent' WHERE message_id = $1::text::uuid",
        &[&sent],
    )
    .unwrap();
    let unstored = outbound(&mut su, &a, PHONE_A);
    su.execute(
        "UPDATE wa.messages SET status = 'sent' WHERE message_id = $1::text::uuid",
        &[&unstored],
    )
    .unwrap();

    let state: String = su
        .query_one(
            "SELECT wa.disconnect_tenant($1::text::uuid)->>'state'",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "disconnected");
    assert_eq!(one_i64(&mut su, "SELECT count(*) FROM wa.routes", &[]), 0);
    let released: Vec<(String, String, String)> = su
        .query(
            "SELECT kind, external_id, tenant_id::text FROM wa.released_routes ORDER BY kind",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        released,
        vec![
            ("phone_number".into(), PHONE_A.into(), a.clone()),
            ("waba".into(), WABA_A.into(), a.clone())
        ]
    );
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT (SELECT count(*) FROM wa.wabas WHERE status <> 'removed')
                  + (SELECT count(*) FROM wa.phone_numbers WHERE status <> 'removed')",
            &[]
        ),
        0
    );
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.messages", &[]),
        2,
        "history stays"
    );
    let status_of = |su: &mut Client, m: &str| -> String {
        su.query_one(
            "SELECT status FROM wa.messages WHERE message_id = $1::text::uuid",
            &[&m],
        )
        .unwrap()
        .get(0)
    };
    // A status while the number has no tenant at all reaches A.
    let summary = ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            statuses(
                PHONE_A,
                vec![status("wamid.out.a", "delivered", 1_790_000_010, None)],
            ),
        ),
    );
    assert_eq!(summary["statuses"], 1, "{summary}");
    assert_eq!(status_of(&mut su, &sent), "delivered");

    // The number moves to B.
    connect(&mut su, &b, WABA_A, PHONE_A).unwrap();
    let summary = ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.in.b",
                Some("15550001111"),
                None,
                1_790_000_020,
                "to B",
            ),
        ),
    );
    assert_eq!(summary["messages"], 1, "{summary}");
    let inbound: Vec<String> = su
        .query(
            "SELECT tenant_id::text FROM wa.messages WHERE direction = 'inbound'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(inbound, vec![b.clone()]);

    // Late statuses of A's messages still reach A: by wamid, and by our message id.
    let mut listener = db.superuser();
    let channel_a: String = su
        .query_one("SELECT wa.events_channel($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    listener
        .batch_execute(&format!("LISTEN {channel_a}"))
        .unwrap();
    let summary = ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            statuses(
                PHONE_A,
                vec![
                    status("wamid.out.a", "read", 1_790_000_030, None),
                    status("wamid.out.a2", "delivered", 1_790_000_031, Some(&unstored)),
                ],
            ),
        ),
    );
    assert_eq!(summary["statuses"], 2, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(status_of(&mut su, &sent), "read");
    assert_eq!(status_of(&mut su, &unstored), "delivered");
    let wamid: String = su
        .query_one(
            "SELECT wamid FROM wa.messages WHERE message_id = $1::text::uuid",
            &[&unstored],
        )
        .unwrap()
        .get(0);
    assert_eq!(wamid, "wamid.out.a2");
    assert_eq!(
        one_i64(&mut su, "SELECT count(*) FROM wa.pending_statuses", &[]),
        0,
        "nothing left pending for B"
    );
    let mut notes = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.timeout_iter(Duration::from_millis(500));
    while let Ok(Some(note)) = postgres::fallible_iterator::FallibleIterator::next(&mut it) {
        notes.push(serde_json::from_str::<Value>(note.payload()).unwrap());
    }
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().all(|n| n["tenant_id"] == a.as_str()),
        "{notes:?}"
    );
    // A status of a message nobody has is kept pending for the current tenant, as before.
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            statuses(
                PHONE_A,
                vec![status("wamid.nobody", "sent", 1_790_000_040, None)],
            ),
        ),
    );
    let pending: Vec<String> = su
        .query("SELECT tenant_id::text FROM wa.pending_statuses", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pending, vec![b.clone()]);

    // B lets go, A comes back: A's routes are created again and it is no longer "former".
    su.query_one("SELECT wa.disconnect_tenant($1::text::uuid)", &[&b])
        .unwrap();
    connect(&mut su, &a, WABA_A, PHONE_A).unwrap();
    let routes: Vec<String> = su
        .query("SELECT DISTINCT tenant_id::text FROM wa.routes", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(routes, vec![a.clone()]);
    let former: Vec<String> = su
        .query(
            "SELECT DISTINCT tenant_id::text FROM wa.released_routes",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(former, vec![b]);
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid AND status = 'active'",
            &[&a]
        ),
        1
    );
}

#[test]
fn wa_app_and_wa_admin_still_use_the_api_through_the_owner() {
    let db = TestDb::new("api_roles");
    let mut su = db.superuser();
    let a = create_tenant(&mut su, "A");
    connect(&mut su, &a, WABA_A, PHONE_A).unwrap();
    ingest(
        &mut su,
        &envelope(
            WABA_A,
            "messages",
            inbound_text(
                PHONE_A,
                "wamid.api",
                Some("15550001111"),
                None,
                1_790_000_000,
                "hi",
            ),
        ),
    );
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    let conversation: uuid::Uuid = app
        .query_one(
            "SELECT conversation_id FROM wa.conversations($1::text::uuid)",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        app.query("SELECT * FROM wa.messages($1)", &[&conversation])
            .unwrap()
            .len(),
        1
    );
    app.query_one(
        "SELECT wa.send_text($1::text::uuid, '15550001111', 'hello')",
        &[&a],
    )
    .unwrap();
    app.query_one("SELECT wa.mark_read($1::text::uuid, 'wamid.api')", &[&a])
        .unwrap();
    let closed: bool = app
        .query_one("SELECT wa.close_conversation($1)", &[&conversation])
        .unwrap()
        .get(0);
    assert!(closed);
    app.query_one("SELECT wa.retry_failed($1::text::uuid)", &[&a])
        .unwrap();
    let channel: String = app
        .query_one("SELECT wa.events_channel($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    assert!(channel.starts_with("wa_"));
    assert_eq!(
        one_i64(
            &mut app,
            "SELECT count(*) FROM wa.tenants WHERE events_channel = $1",
            &[&channel]
        ),
        1
    );
    // Another tenant's channel is neither readable nor obtainable.
    let other = create_tenant(&mut su, "Other");
    let (code, _) = sql_error(app.query_one("SELECT wa.events_channel($1::text::uuid)", &[&other]));
    assert_eq!(code, "42501");
    // Administrators, with no tenant set, manage every tenant.
    let mut admin = db.admin();
    let t = create_tenant(&mut admin, "By admin");
    connect(&mut admin, &t, WABA_B, PHONE_B).unwrap();
    admin
        .query_one("SELECT wa.events_channel($1::text::uuid)", &[&a])
        .unwrap();
    admin.query_one("SELECT wa.retry_failed()", &[]).unwrap();
    admin
        .query_one("SELECT wa.disconnect_tenant($1::text::uuid)", &[&t])
        .unwrap();
    assert_eq!(
        one_i64(
            &mut su,
            "SELECT count(*) FROM wa.released_routes WHERE tenant_id = $1::text::uuid",
            &[&t]
        ),
        2
    );
}

#[test]
fn deleting_a_tenant_leaves_nothing_of_it_in_any_table_and_frees_its_numbers() {
    let db = TestDb::new("delete_tenant");
    let (a, b) = two_tenants(&db);
    let mut su = db.superuser();
    let tables = tenant_tables(&mut su);
    // The tables without a foreign key to wa.tenants (reference tables on Citus) are among them.
    for t in ["routes", "released_routes", "signup_states", "tenant_refs"] {
        assert!(tables.iter().any(|x| x == t), "{t} not in {tables:?}");
    }
    let counts = |su: &mut Client, tenant: &str| -> Vec<(String, i64)> {
        tables
            .iter()
            .map(|t| {
                let n = one_i64(
                    su,
                    &format!("SELECT count(*) FROM wa.{t} WHERE tenant_id = $1::text::uuid"),
                    &[&tenant],
                );
                (t.clone(), n)
            })
            .collect()
    };
    assert!(counts(&mut su, &a).iter().all(|(_, n)| *n > 0));
    let of_b = counts(&mut su, &b);

    // Not for the tenant's own application, even acting for it.
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{a}'"))
        .unwrap();
    let (code, msg) = sql_error(app.query_one("SELECT wa.delete_tenant($1::text::uuid)", &[&a]));
    assert_eq!(code, "42501", "{msg}");

    let mut admin = db.admin();
    let deleted: bool = admin
        .query_one("SELECT wa.delete_tenant($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    assert!(deleted);
    let left: Vec<(String, i64)> = counts(&mut su, &a)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(left.is_empty(), "rows of the deleted tenant left: {left:?}");
    assert_eq!(counts(&mut su, &b), of_b, "the other tenant is untouched");
    let again: bool = admin
        .query_one("SELECT wa.delete_tenant($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    assert!(!again, "a second delete finds nothing");

    // Its number and external reference are free for another tenant.
    let c: String = su
        .query_one("SELECT wa.create_tenant('C', 'ref-A')::text", &[])
        .unwrap()
        .get(0);
    connect(&mut su, &c, WABA_A, PHONE_A).unwrap();
    let routed = one_i64(
        &mut su,
        "SELECT count(*) FROM wa.routes WHERE tenant_id = $1::text::uuid",
        &[&c],
    );
    assert_eq!(routed, 2, "the WABA and the number route to the new tenant");
    // External references stay unique across tenants.
    let (code, msg) = sql_error(su.query_one("SELECT wa.create_tenant('D', 'ref-B')", &[]));
    assert_eq!(code, "23505", "{msg}");
    assert!(msg.contains("ref-B"), "{msg}");
}

/// Every table of schema wa has its place on a Citus cluster (wa.citus_layout(), read by
/// wa.distribute()), and each place's rules hold in the schema itself, so that a new table or
/// key that would not distribute fails here, on a plain PostgreSQL.
#[test]
fn every_table_has_a_citus_placement_whose_rules_the_schema_keeps() {
    let db = TestDb::new("citus_audit");
    let mut su = db.superuser();
    let rows = |su: &mut Client, sql: &str| -> Vec<String> {
        su.query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let unplaced = rows(
        &mut su,
        "SELECT c.relname::text FROM pg_class c
          WHERE c.relnamespace = 'wa'::regnamespace AND c.relkind IN ('r', 'p')
            AND c.oid NOT IN (SELECT relation FROM wa.citus_layout())",
    );
    assert!(
        unplaced.is_empty(),
        "tables without a placement: {unplaced:?}"
    );
    let places = rows(
        &mut su,
        "SELECT DISTINCT placement FROM wa.citus_layout() ORDER BY 1",
    );
    assert_eq!(places, ["distributed", "local", "reference"]);
    // Distributed tables: tenant_id NOT NULL, and every primary key, unique constraint and
    // unique index leads with it (Citus enforces uniqueness per shard only).
    let bad_keys = rows(
        &mut su,
        "SELECT l.relation::text || ': ' || i.indexrelid::regclass::text
           FROM wa.citus_layout() l JOIN pg_index i ON i.indrelid = l.relation
          WHERE l.placement = 'distributed' AND i.indisunique
            AND (SELECT a.attname FROM pg_attribute a
                  WHERE a.attrelid = l.relation AND a.attnum = i.indkey[0]) IS DISTINCT FROM 'tenant_id'",
    );
    assert!(
        bad_keys.is_empty(),
        "unique keys not led by tenant_id: {bad_keys:?}"
    );
    let nullable = rows(
        &mut su,
        "SELECT l.relation::text FROM wa.citus_layout() l
          WHERE l.placement = 'distributed'
            AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = l.relation
                             AND a.attname = 'tenant_id' AND a.attnotnull)",
    );
    assert!(
        nullable.is_empty(),
        "without tenant_id NOT NULL: {nullable:?}"
    );
    // Foreign keys, with the placements of both ends: a reference or local table never points
    // at a distributed one; a distributed table points only at distributed tables, tenant_id
    // first on both sides (colocated joins), never at a local one.
    let fks = |su: &mut Client, label: &str, condition: &str| -> Vec<String> {
        rows(
            su,
            &format!(
                "SELECT k.conrelid::regclass::text || ' {label} ' || k.confrelid::regclass::text
                   FROM pg_constraint k
                   JOIN wa.citus_layout() f ON f.relation = k.conrelid
                   JOIN wa.citus_layout() t ON t.relation = k.confrelid
                  WHERE k.contype = 'f' AND ({condition})"
            ),
        )
    };
    let bad_fks = fks(
        &mut su,
        "->",
        "(f.placement <> 'distributed' AND t.placement = 'distributed')
         OR (f.placement = 'distributed' AND t.placement = 'local')
         OR (f.placement = 'distributed' AND t.placement = 'distributed'
             AND ((SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = k.conrelid AND a.attnum = k.conkey[1]) <> 'tenant_id'
               OR (SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = k.confrelid AND a.attnum = k.confkey[1]) <> 'tenant_id'))",
    );
    assert!(
        bad_fks.is_empty(),
        "foreign keys that cannot distribute: {bad_fks:?}"
    );
    // Parents are placed before the tables that point at them.
    let misordered = fks(
        &mut su,
        "before",
        "k.conrelid <> k.confrelid AND f.step <= t.step",
    );
    assert!(misordered.is_empty(), "{misordered:?}");
    // Local tables name no tenant: one that did would belong on the shards.
    let local_with_tenant = rows(
        &mut su,
        "SELECT l.relation::text FROM wa.citus_layout() l
          WHERE l.placement = 'local'
            AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = l.relation
                         AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
    );
    assert!(local_with_tenant.is_empty(), "{local_with_tenant:?}");
    // Row-level security policies hold no subqueries (Citus refuses them on its tables).
    let subqueries = rows(
        &mut su,
        "SELECT p.tablename::text || '.' || p.policyname::text
           FROM pg_policies p JOIN wa.citus_layout() l ON l.relation = ('wa.' || p.tablename)::regclass
          WHERE p.schemaname = 'wa' AND l.placement <> 'local'
            AND (p.qual ~* 'select' OR p.with_check ~* 'select')",
    );
    assert!(
        subqueries.is_empty(),
        "policies with subqueries: {subqueries:?}"
    );

    // Without Citus, wa.distribute() says so and changes nothing; it is not for wa_admin.
    let (code, msg) = sql_error_text(su.query("SELECT * FROM wa.distribute()", &[]));
    assert_eq!(code, "0A000", "{msg}");
    assert!(msg.contains("needs Citus"), "{msg}");
    let mut admin = db.admin();
    let (code, _) = sql_error(admin.query("SELECT * FROM wa.distribute()", &[]));
    assert_eq!(code, "42501");
    let placed: i64 = admin
        .query_one("SELECT count(*) FROM wa.citus_layout()", &[])
        .unwrap()
        .get(0);
    assert!(placed >= 20, "{placed}");
}
