//! The master key file: wrong keys, missing keys, loose permissions and rotation. These tests
//! change the cluster's wa.key_file, so they run one at a time in their own test binary.

use std::sync::Mutex;
use wa_integration_tests::keyfile::*;
use wa_integration_tests::{TestDb, sql_error_text};

const TOKEN: &str = "EAAGtokenForRotation0123456789";
static SERIAL: Mutex<()> = Mutex::new(());

fn connected_tenant(db: &TestDb) -> String {
    let mut su = db.superuser();
    let tenant: String = su
        .query_one("SELECT wa.create_tenant('Keys')::text", &[])
        .unwrap()
        .get(0);
    su.execute(
        "SELECT wa.connect_tenant($1::text::uuid, '1001', '2001', $2)",
        &[&tenant, &TOKEN],
    )
    .unwrap();
    tenant
}

#[test]
fn a_wrong_key_is_a_clear_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new("wrongkey");
    connected_tenant(&db);
    // Same key id, different bytes: authentication fails.
    let path = write_key_file("wrong.key", &random_key_line("k1"), 0o600);
    let _swap = KeyFileSwap::point_at(&path);
    let (code, text) = sql_error_text(db.superuser().query("SELECT wa.rotate_key()", &[]));
    assert_eq!(code, "XX001", "{text}");
    assert!(
        text.contains("cannot decrypt the business_token of tenant"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    // A key file without the key id the secret names says so.
    let path = write_key_file("other-id.key", &random_key_line("k9"), 0o600);
    set_key_file(&path);
    let (code, text) = sql_error_text(db.superuser().query("SELECT wa.rotate_key()", &[]));
    assert_eq!(code, "F0000", "{text}");
    assert!(
        text.contains("key id \"k1\", which is not in wa.key_file"),
        "{text}"
    );
}

#[test]
fn missing_or_exposed_key_file_is_refused_without_crashing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new("nokey");
    let tenant: String = db
        .superuser()
        .query_one("SELECT wa.create_tenant('NoKey')::text", &[])
        .unwrap()
        .get(0);
    let connect = |c: &mut postgres::Client| {
        c.query(
            "SELECT wa.connect_tenant($1::text::uuid, '1001', '2001', $2)",
            &[&tenant, &TOKEN],
        )
    };
    {
        let _swap = KeyFileSwap::point_at("");
        let mut su = db.superuser();
        let (code, text) = sql_error_text(connect(&mut su));
        assert_eq!(code, "55000", "{text}");
        assert!(text.contains("wa.key_file is not set"), "{text}");
        assert_eq!(su.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
    }
    {
        let path = write_key_file("loose.key", &current_key_text(), 0o644);
        let _swap = KeyFileSwap::point_at(&path);
        let (code, text) = sql_error_text(connect(&mut db.superuser()));
        assert_eq!(code, "F0000", "{text}");
        assert!(
            text.contains("other users could read the master key"),
            "{text}"
        );
    }
    {
        let _swap = KeyFileSwap::point_at("/nonexistent/master.key");
        let (code, text) = sql_error_text(connect(&mut db.superuser()));
        assert_eq!(code, "F0000", "{text}");
    }
    {
        let path = write_key_file("garbage.key", "k1:not-base64!\n", 0o600);
        let _swap = KeyFileSwap::point_at(&path);
        let (code, text) = sql_error_text(connect(&mut db.superuser()));
        assert_eq!(code, "F0000", "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(!text.contains("not-base64"), "key material echoed: {text}");
    }
    let rows: i64 = db
        .superuser()
        .query_one("SELECT count(*) FROM wa.credentials", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing stored without a usable key");
}

#[test]
fn rotation_moves_every_secret_to_the_newest_key() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new("rotate");
    connected_tenant(&db);
    db.superuser()
        .execute(
            "SELECT wa.configure_app('1234', 'app-secret-value', 'verify-value', '5678')",
            &[],
        )
        .unwrap();
    let old = current_key_text();
    let new_line = random_key_line("k2");
    let both = write_key_file("both.key", &format!("{old}{new_line}"), 0o600);
    let _swap = KeyFileSwap::point_at(&both);
    let result: serde_json::Value = db
        .superuser()
        .query_one("SELECT wa.rotate_key()", &[])
        .unwrap()
        .get(0);
    assert_eq!(result["key_id"], "k2");
    assert_eq!(result["reencrypted"], 3, "{result}");
    let key_ids: Vec<String> = db
        .superuser()
        .query("SELECT DISTINCT key_id FROM wa.credentials", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(key_ids, vec!["k2".to_string()]);
    // The old key can now go: everything opens with the new one alone.
    let only_new = write_key_file("new-only.key", &new_line, 0o600);
    set_key_file(&only_new);
    let again: serde_json::Value = db
        .superuser()
        .query_one("SELECT wa.rotate_key()", &[])
        .unwrap()
        .get(0);
    assert_eq!(again["reencrypted"], 0, "{again}");
    assert_eq!(again["already_current"], 3, "{again}");
}
