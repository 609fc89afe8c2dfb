//! The foundation's contract over real connections: secrets at rest, tenant isolation,
//! privileges, pg_dump round trips and errors for bad input.

use wa_integration_tests::{TestDb, pg_bin, sql_error, sql_error_text};

const TOKEN_A: &str = "EAAGtokenForTenantA0123456789";
const TOKEN_B: &str = "EAAGtokenForTenantB9876543210";
const APP_SECRET: &str = "appsecret-5f4dcc3b5aa765d61d8327deb882cf99";
const VERIFY_TOKEN: &str = "verify-me-7c4a8d09ca3762af61e59520943dc264";

/// Two connected tenants, each with a contact, a conversation and a message.
fn two_tenants(db: &TestDb) -> (String, String) {
    let mut su = db.superuser();
    let mut ids = Vec::new();
    for (name, waba, phone, token, wa_id) in [
        ("Hotel A", "1001", "2001", TOKEN_A, "15550001111"),
        ("Hotel B", "1002", "2002", TOKEN_B, "15550002222"),
    ] {
        let row = su
            .query_one(
                "SELECT wa.create_tenant($1, $2)::text",
                &[&name, &format!("ext-{name}")],
            )
            .unwrap();
        let tenant: String = row.get(0);
        su.execute(
            "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
            &[&tenant, &waba, &phone, &token],
        )
        .unwrap();
        // Conversation rows come from webhooks and sends (later modules); insert them directly
        // so every tenant table has rows for the isolation checks.
        su.batch_execute(&format!(
            "WITH c AS (INSERT INTO wa.contacts (tenant_id, wa_id, profile_name)
                        VALUES ('{tenant}', '{wa_id}', 'Guest') RETURNING contact_id),
                  v AS (INSERT INTO wa.conversations (tenant_id, phone_number_id, contact_id)
                        SELECT '{tenant}', '{phone}', contact_id FROM c RETURNING conversation_id),
                  m AS (INSERT INTO wa.messages (tenant_id, conversation_id, direction, type, content, status, wamid)
                        SELECT '{tenant}', conversation_id, 'inbound', 'text', '{{\"body\":\"hi\"}}', 'received', 'wamid.{tenant}'
                          FROM v RETURNING message_id)
             INSERT INTO wa.templates (tenant_id, waba_id, template_id, name, language)
             VALUES ('{tenant}', '{waba}', 'tpl-{waba}', 'welcome', 'en_US');
             INSERT INTO wa.pending_statuses (tenant_id, wamid, status, status_payload)
             VALUES ('{tenant}', 'wamid.unknown.{tenant}', 'delivered', '{{}}');
             INSERT INTO wa.media (tenant_id, media_id, mime_type, size_bytes, content)
             VALUES ('{tenant}', 'media-{phone}', 'image/jpeg', 3, '\\x010203');
             INSERT INTO wa.media (tenant_id, media_id, mime_type, size_bytes, chunks)
             VALUES ('{tenant}', 'video-{phone}', 'video/mp4', 3, 1);
             INSERT INTO wa.media_chunks (tenant_id, media_id, seq, data)
             VALUES ('{tenant}', 'video-{phone}', 0, '\\x010203');
             INSERT INTO wa.signups (tenant_id, waba_id) VALUES ('{tenant}', '{waba}');"
        ))
        .unwrap();
        ids.push(tenant);
    }
    (ids[0].clone(), ids[1].clone())
}

/// Every table in schema wa that has a tenant_id column.
fn tenant_tables(db: &TestDb) -> Vec<String> {
    let mut su = db.superuser();
    su.query(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
         WHERE n.nspname = 'wa' AND c.relkind = 'r' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn token_is_stored_encrypted_under_the_current_key() {
    let db = TestDb::new("enc");
    let (a, _) = two_tenants(&db);
    let mut su = db.superuser();
    let row = su
        .query_one(
            "SELECT ciphertext, key_id, source FROM wa.credentials WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap();
    let ciphertext: Vec<u8> = row.get(0);
    let key_id: String = row.get(1);
    let source: String = row.get(2);
    assert!(
        !ciphertext
            .windows(TOKEN_A.len())
            .any(|w| w == TOKEN_A.as_bytes())
    );
    assert!(ciphertext.len() > TOKEN_A.len() + 12 + 16);
    assert_eq!(key_id, "k1");
    assert_eq!(source, "manual");
    // Nothing in the table's text rendering holds the token either.
    let text: String = su
        .query_one("SELECT string_agg(c::text, ',') FROM wa.credentials c", &[])
        .unwrap()
        .get(0);
    assert!(!text.contains(TOKEN_A) && !text.contains(TOKEN_B));
    let status: serde_json::Value = su
        .query_one("SELECT wa.connection_status($1::text::uuid)", &[&a])
        .unwrap()
        .get(0);
    assert_eq!(status["state"], "connected");
    assert_eq!(status["waba_id"], "1001");
    assert_eq!(status["phone_numbers"][0]["phone_number_id"], "2001");
}

#[test]
fn wa_app_sees_only_the_tenant_it_acts_for() {
    let db = TestDb::new("rls");
    let (a, b) = two_tenants(&db);
    let tables = tenant_tables(&db);
    assert!(
        tables.len() >= 10,
        "expected the tenant tables, got {tables:?}"
    );
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{b}'"))
        .unwrap();
    let mut readable = 0;
    for table in &tables {
        let visible = app.query_one(
            &format!("SELECT count(*) FILTER (WHERE tenant_id = '{a}'), count(*) FILTER (WHERE tenant_id = '{b}') FROM wa.{table}"),
            &[],
        );
        match visible {
            Ok(row) => {
                let (of_a, of_b): (i64, i64) = (row.get(0), row.get(1));
                assert_eq!(of_a, 0, "wa_app acting for B sees A's rows in wa.{table}");
                assert!(
                    of_b > 0,
                    "wa_app acting for B sees none of B's rows in wa.{table}"
                );
                readable += 1;
            }
            Err(e) => {
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                assert_eq!(code.as_deref(), Some("42501"), "wa.{table}: {e}");
            }
        }
    }
    assert!(
        readable >= 6,
        "wa_app should read its own conversations, messages, ..."
    );
    // The API refuses the other tenant outright.
    let (code, msg) =
        sql_error(app.query_one("SELECT wa.connection_status($1::text::uuid)", &[&a]));
    assert_eq!(code, "42501", "{msg}");
    // Its own tenant works, and the dashboard view shows just it.
    app.query_one("SELECT wa.connection_status($1::text::uuid)", &[&b])
        .unwrap();
    let rows = app
        .query("SELECT tenant_id::text FROM wa.tenant_connections", &[])
        .unwrap();
    let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(seen, vec![b.clone()]);
}

#[test]
fn wa_app_without_a_tenant_sees_nothing() {
    let db = TestDb::new("notenant");
    let (a, _) = two_tenants(&db);
    let mut app = db.app();
    for table in tenant_tables(&db) {
        if let Ok(row) = app.query_one(&format!("SELECT count(*) FROM wa.{table}"), &[]) {
            assert_eq!(
                row.get::<_, i64>(0),
                0,
                "wa.{table} visible without wa.tenant_id"
            );
        }
    }
    assert_eq!(
        app.query_one("SELECT count(*) FROM wa.tenant_connections", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    let (code, text) =
        sql_error_text(app.query_one("SELECT wa.connection_status($1::text::uuid)", &[&a]));
    assert_eq!(code, "42501");
    assert!(text.contains("wa.tenant_id is not set"), "{text}");
    // An ill-formed tenant id is an error, not "no tenant".
    app.batch_execute("SET wa.tenant_id = 'not-a-uuid'")
        .unwrap();
    let (code, _) = sql_error(app.query_one("SELECT count(*) FROM wa.conversations", &[]));
    assert_eq!(code, "22P02");
}

#[test]
fn secrets_are_out_of_reach_of_wa_app_and_plaintext_of_everyone() {
    let db = TestDb::new("priv");
    let (_, b) = two_tenants(&db);
    db.superuser()
        .execute(
            "SELECT wa.configure_app('123456789', $1, $2, '987654321')",
            &[&APP_SECRET, &VERIFY_TOKEN],
        )
        .unwrap();
    let mut app = db.app();
    app.batch_execute(&format!("SET wa.tenant_id = '{b}'"))
        .unwrap();
    for sql in [
        "SELECT ciphertext FROM wa.credentials",
        "SELECT count(*) FROM wa.credentials",
        "SELECT app_secret_enc FROM wa.app_config",
        "SELECT count(*) FROM wa.webhook_events",
        "SELECT count(*) FROM wa.outbox",
        "SELECT wa.configure_app('1', 'x', 'y', '2')",
        "SELECT wa.create_tenant('intruder')",
        "SELECT wa.rotate_key()",
    ] {
        let (code, msg) = sql_error(app.query(sql, &[]));
        assert_eq!(code, "42501", "{sql}: {msg}");
    }
    // Signup config is public: app id, config id, version, and nothing secret.
    let config: String = app
        .query_one("SELECT wa.signup_config()::text", &[])
        .unwrap()
        .get(0);
    assert!(
        config.contains("123456789") && config.contains("987654321"),
        "{config}"
    );
    assert!(!config.contains(APP_SECRET) && !config.contains(VERIFY_TOKEN));
    // Admins see which key protects a secret, never the ciphertext, let alone plaintext.
    let mut admin = db.admin();
    admin
        .query("SELECT tenant_id, kind, key_id FROM wa.credentials", &[])
        .unwrap();
    let (code, _) = sql_error(admin.query("SELECT ciphertext FROM wa.credentials", &[]));
    assert_eq!(code, "42501");
    let (code, _) = sql_error(admin.query("SELECT app_secret_enc FROM wa.app_config", &[]));
    assert_eq!(code, "42501");
    // Nothing is granted to PUBLIC.
    let mut su = db.superuser();
    let public_grants: i64 = su
        .query_one(
            "SELECT (SELECT count(*) FROM information_schema.role_table_grants
                      WHERE table_schema = 'wa' AND grantee = 'PUBLIC')
                  + (SELECT count(*) FROM information_schema.role_routine_grants
                      WHERE routine_schema = 'wa' AND grantee = 'PUBLIC')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(public_grants, 0);
    // Every SECURITY DEFINER function pins its search_path.
    let unpinned: Vec<String> = su
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'wa' AND p.prosecdef
                AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER without search_path: {unpinned:?}"
    );
}

#[test]
fn pg_dump_round_trip_keeps_rows_and_leaks_no_secret() {
    let db = TestDb::new("dump");
    let (a, _) = two_tenants(&db);
    let mut su = db.superuser();
    su.execute(
        "SELECT wa.configure_app('123456789', $1, $2, '987654321')",
        &[&APP_SECRET, &VERIFY_TOKEN],
    )
    .unwrap();
    let counts = |c: &mut postgres::Client| -> Vec<i64> {
        [
            "tenants",
            "wabas",
            "phone_numbers",
            "routes",
            "credentials",
            "contacts",
            "conversations",
            "messages",
            "templates",
            "pending_statuses",
            "account_events",
            "app_config",
            "media",
            "signups",
        ]
        .iter()
        .map(|t| {
            c.query_one(&format!("SELECT count(*) FROM wa.{t}"), &[])
                .unwrap()
                .get(0)
        })
        .collect()
    };
    let before = counts(&mut su);
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    let dump = std::process::Command::new(pg_bin("pg_dump"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &wa_integration_tests::port().to_string(),
            "-U",
            "postgres",
            &db.name,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    for secret in [TOKEN_A, TOKEN_B, APP_SECRET, VERIFY_TOKEN] {
        assert!(
            !text.contains(secret),
            "pg_dump output contains a plaintext secret"
        );
    }
    assert!(text.contains("CREATE EXTENSION IF NOT EXISTS whatsapp_pg"));

    let restored = TestDb::empty("restored");
    let restore = std::process::Command::new(pg_bin("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &wa_integration_tests::port().to_string(),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-d",
            &restored.name,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&dump.stdout)?;
            child.wait_with_output()
        })
        .expect("run psql");
    assert!(
        restore.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let mut r = restored.superuser();
    assert_eq!(counts(&mut r), before);
    // The restored secrets still decrypt with the key file (rotation opens every one).
    let rotated: String = r
        .query_one("SELECT wa.rotate_key()::text", &[])
        .unwrap()
        .get(0);
    assert!(rotated.contains("\"already_current\": 4"), "{rotated}");
    let state: String = r
        .query_one(
            "SELECT wa.connection_status($1::text::uuid)->>'state'",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "connected");
}

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let db = TestDb::new("badinput");
    let mut su = db.superuser();
    let tenant: String = su
        .query_one("SELECT wa.create_tenant('Hotel', 'ref-1')::text", &[])
        .unwrap()
        .get(0);
    let snapshot = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT (SELECT count(*) FROM wa.tenants) * 1000000 + (SELECT count(*) FROM wa.credentials) * 10000
                  + (SELECT count(*) FROM wa.routes) * 100 + (SELECT count(*) FROM wa.account_events)",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = snapshot(&mut su);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "SELECT wa.connection_status('not-a-uuid')".into(),
            "22P02",
            "invalid input syntax for type uuid",
        ),
        (
            "SELECT wa.create_tenant('')".into(),
            "22023",
            "tenant name must not be empty",
        ),
        (
            "SELECT wa.create_tenant(NULL)".into(),
            "22023",
            "tenant name must not be empty",
        ),
        (
            "SELECT wa.create_tenant('Other', 'ref-1')".into(),
            "23505",
            "external_ref 'ref-1' already exists",
        ),
        (
            "SELECT wa.create_tenant('Other', '')".into(),
            "22023",
            "external_ref must not be empty",
        ),
        (
            format!("SELECT wa.create_tenant('{}')", "x".repeat(201)),
            "22023",
            "tenant name is too long",
        ),
        (
            format!(
                "SELECT wa.connect_tenant('{}', '1001', '2001', '{TOKEN_A}')",
                uuid::Uuid::new_v4()
            ),
            "42704",
            "does not exist",
        ),
        (
            format!("SELECT wa.connect_tenant('{tenant}', 'waba', '2001', '{TOKEN_A}')"),
            "22023",
            "waba_id must be a numeric Meta id",
        ),
        (
            format!("SELECT wa.connect_tenant('{tenant}', '1001', '', '{TOKEN_A}')"),
            "22023",
            "phone_number_id must be a numeric Meta id",
        ),
        (
            format!("SELECT wa.connect_tenant('{tenant}', '1001', '2001', 'short')"),
            "22023",
            "access_token is not a Graph API access token",
        ),
        (
            format!("SELECT wa.connect_tenant('{tenant}', '1001', '2001', 'has space {TOKEN_A}')"),
            "22023",
            "access_token is not a Graph API access token",
        ),
        (
            "SELECT wa.configure_app('app', 'secret', 'verify', '1')".into(),
            "22023",
            "app_id must be a numeric Meta id",
        ),
        (
            "SELECT wa.configure_app('1', '', 'verify', '1')".into(),
            "22023",
            "app_secret must be a non-empty string",
        ),
        (
            "SELECT wa.connection_status(NULL)".into(),
            "22004",
            "tenant_id must not be null",
        ),
        (
            "SELECT wa.signup_config()".into(),
            "55000",
            "the Meta app is not configured",
        ),
        (
            "SET wa.no_such_setting = 1".into(),
            "42602",
            "invalid configuration parameter name",
        ),
    ];
    for (sql, code, needle) in cases {
        let (got_code, text) = sql_error_text(su.query(sql.as_str(), &[]));
        assert_eq!(got_code, code, "{sql}: {text}");
        assert!(text.contains(needle), "{sql}: {text}");
        assert!(
            !text.contains(TOKEN_A) && !text.contains("secret'"),
            "{sql} echoes a secret: {text}"
        );
    }
    assert_eq!(snapshot(&mut su), before, "a failed call left rows behind");
    // A number connected to one tenant cannot be taken by another. (This cluster's Graph API
    // URL is a closed port: the connection stands, unverified, and says so.)
    let status: serde_json::Value = su
        .query_one(
            "SELECT wa.connect_tenant($1::text::uuid, '1001', '2001', $2)",
            &[&tenant, &TOKEN_A],
        )
        .unwrap()
        .get(0);
    assert_eq!(status["state"], "connected", "{status}");
    assert_eq!(status["verification"]["graph"], "unreachable", "{status}");
    assert!(
        !status.to_string().contains(TOKEN_A),
        "the status echoes the token: {status}"
    );
    let other: String = su
        .query_one("SELECT wa.create_tenant('Other')::text", &[])
        .unwrap()
        .get(0);
    let before = snapshot(&mut su);
    let (code, text) = sql_error_text(su.query(
        "SELECT wa.connect_tenant($1::text::uuid, '1001', '2001', $2)",
        &[&other, &TOKEN_B],
    ));
    assert_eq!(code, "23505", "{text}");
    assert!(
        text.contains("already connected to another tenant"),
        "{text}"
    );
    assert_eq!(snapshot(&mut su), before);
    // The backend survived all of it.
    assert_eq!(su.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn disconnect_forgets_the_token_and_keeps_history() {
    let db = TestDb::new("disconnect");
    let (a, b) = two_tenants(&db);
    let mut su = db.superuser();
    let status: String = su
        .query_one(
            "SELECT wa.disconnect_tenant($1::text::uuid)->>'state'",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "disconnected");
    let creds: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.credentials WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(creds, 0);
    let other: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.credentials WHERE tenant_id = $1::text::uuid",
            &[&b],
        )
        .unwrap()
        .get(0);
    assert_eq!(other, 1, "disconnecting A must not touch B");
    let messages: i64 = su
        .query_one(
            "SELECT count(*) FROM wa.messages WHERE tenant_id = $1::text::uuid",
            &[&a],
        )
        .unwrap()
        .get(0);
    assert_eq!(messages, 1, "history stays");
}

/// The environment of the cluster's postmaster, from /proc.
fn postmaster_environment() -> String {
    let pid =
        std::fs::read_to_string(wa_integration_tests::cluster_dir().join("data/postmaster.pid"))
            .unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

#[test]
fn errors_never_carry_a_rust_backtrace_even_with_rust_backtrace_set() {
    assert!(
        postmaster_environment()
            .lines()
            .any(|l| l == "RUST_BACKTRACE=1"),
        "the test cluster runs with RUST_BACKTRACE=1 (make it sets it)"
    );
    let db = TestDb::new("errtext");
    let mut su = db.superuser();
    let t: String = su
        .query_one("SELECT wa.create_tenant('Backtrace')::text", &[])
        .unwrap()
        .get(0);
    let mut c = wa_integration_tests::connect_as("postgres", "postgres");
    c.batch_execute(
        "DO $$ BEGIN CREATE ROLE it_nobody LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    .unwrap();
    let mut nobody = wa_integration_tests::connect_as("postgres", "it_nobody");
    let failures = [
        // A Rust function's own error.
        su.query_one(
            "SELECT wa.send_message($1::text::uuid, 'not a number', '{}')",
            &[&t],
        )
        .map(|_| ()),
        // A PostgreSQL error raised beneath Rust code (the utility hook).
        nobody
            .batch_execute(&format!("DROP DATABASE {}", db.name))
            .map(|_| ()),
        // A PostgreSQL error inside a Rust function's SPI call.
        su.query_one(
            "SELECT wa.exchange_code('00000000-0000-0000-0000-000000000000', 'x')",
            &[],
        )
        .map(|_| ()),
        su.query_one("SELECT wa.ingest_webhook('[1]'::jsonb)", &[])
            .map(|_| ()),
    ];
    for failure in failures {
        let error = failure.expect_err("the statement fails");
        let db_error = error.as_db_error().expect("a database error");
        let text = format!(
            "{} | {} | {}",
            db_error.message(),
            db_error.detail().unwrap_or(""),
            db_error.hint().unwrap_or("")
        );
        for needle in ["backtrace", ".rs:", "rust_begin_unwind", "pgrx"] {
            assert!(!text.contains(needle), "{needle:?} in the error: {text}");
        }
    }
}
