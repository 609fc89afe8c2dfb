//! Swapping the cluster's master key file in tests (wa.key_file is a reloadable setting).

use crate::{cluster_dir, connect_as};
use std::path::PathBuf;

pub fn random_key_line(id: &str) -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
    format!("{id}:{}\n", base64(&bytes))
}

pub fn rand_byte() -> u8 {
    // uuid v4 is backed by the OS RNG; enough for test keys.
    uuid::Uuid::new_v4().as_bytes()[0]
}

pub fn base64(bytes: &[u8]) -> String {
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
pub struct KeyFileSwap {
    original: String,
}

impl KeyFileSwap {
    pub fn original() -> String {
        let mut c = connect_as("postgres", "postgres");
        c.query_one("SHOW wa.key_file", &[]).unwrap().get(0)
    }

    pub fn point_at(path: &str) -> KeyFileSwap {
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

pub fn set_key_file(path: &str) {
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

pub fn write_key_file(name: &str, contents: &str, mode: u32) -> String {
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

pub fn current_key_text() -> String {
    std::fs::read_to_string(KeyFileSwap::original()).unwrap()
}
