//! The master key file: wrong keys, missing keys, loose permissions and rotation. These tests
//! change the cluster's wa.key_file, so they run one at a time in their own test binary.

use std::path::PathBuf;
use std::sync::Mutex;
use wa_integration_tests::{TestDb, cluster_dir, connect_as, sql_error_text};

const TOKEN: &str = "EAAGtokenForRotation0123456789";
static SERIAL: Mutex<()> = Mutex::new(());

fn random_key_line(id: &str) -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
    format!("{id}:{}\n", base64(&bytes))
}

fn rand_byte() -> u8 {
    // uuid v4 is backed by the OS RNG; enough for test keys.
    uuid::Uuid::new_v4().as_bytes()[0]
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Points wa.key_file at another file for the duration of a test, then restores it.
struct KeyFileSwap {
    original: String,
}

impl KeyFileSwap {
    fn original() -> String {
        let mut c = connect_as("postgres", "postgres");
        c.query_one("SHOW wa.key_file", &[]).unwrap().get(0)
    }

    fn point_at(path: &str) -> KeyFileSwap {
        let original = Self::original();
        set_key_file(path);
        KeyFileSwap { original }
    }
}

impl Drop for KeyFileSwap {
    fn drop(&mut self) {
        set_key_file(&self.original);
    }
}

fn set_key_file(path: &str) {
    let mut c = connect_as("postgres", "postgres");
    c.batch_execute(&format!("ALTER SYSTEM SET wa.key_file = '{path}'"))
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // New connections read the reloaded configuration; give the postmaster a moment.
    for _ in 0..50 {
        let mut probe = connect_as("postgres", "postgres");
        let now: String = probe.query_one("SHOW wa.key_file", &[]).unwrap().get(0);
        if now == path {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("wa.key_file did not change to {path}");
}

fn write_key_file(name: &str, contents: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path: PathBuf = cluster_dir().join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let status = std::process::Command::new("chown")
        .args(["postgres:postgres", path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    path.to_string_lossy().into_owned()
}

fn current_key_text() -> String {
    std::fs::read_to_string(KeyFileSwap::original()).unwrap()
}

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
