//! The master keyring, loaded from the file named by `wa.key_file`.
//!
//! The key never enters the database: it is read from a file the server's OS user owns. Each
//! backend reads it on first use and again only when the file changes (a key added for
//! rotation, then `SELECT pg_reload_conf()`), so steady-state use costs one `stat`.

use crate::error::{WaError, WaResult};
use crate::guc;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use whatsapp_client::crypto::{CryptoError, Keyring};

#[derive(PartialEq, Eq, Clone)]
struct FileStamp {
    path: String,
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

// Backends are single-threaded; the mutex only satisfies `static` and is never contended.
static CACHE: Mutex<Option<(FileStamp, Arc<Keyring>)>> = Mutex::new(None);

fn key_file_path() -> WaResult<String> {
    guc::string(&guc::KEY_FILE).ok_or_else(|| WaError::NotReady {
        message: "wa.key_file is not set".into(),
        hint: "Create a key file readable only by the server's OS user (one line: \"k1:\" followed by 32 random bytes in base64), set wa.key_file in postgresql.conf and reload.".into(),
    })
}

fn key_file_error(path: &str, detail: impl Into<String>, hint: &str) -> WaError {
    WaError::KeyFile {
        message: format!("cannot use key file \"{path}\""),
        detail: detail.into(),
        hint: hint.into(),
    }
}

fn stamp(path: &str) -> WaResult<(FileStamp, std::fs::Metadata)> {
    let meta = std::fs::metadata(path).map_err(|e| {
        key_file_error(
            path,
            e.to_string(),
            "Check wa.key_file and the file's owner.",
        )
    })?;
    if !meta.is_file() {
        return Err(key_file_error(
            path,
            "not a regular file",
            "Point wa.key_file at a file.",
        ));
    }
    let stamp = FileStamp {
        path: path.to_string(),
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        len: meta.len(),
    };
    Ok((stamp, meta))
}

/// Same rule as PostgreSQL's ssl_key_file: no access for others, and group read only when the
/// file is owned by root.
fn check_permissions(path: &str, meta: &std::fs::Metadata) -> WaResult<()> {
    let mode = meta.mode() & 0o777;
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(key_file_error(
            path,
            format!("file has mode {mode:04o}; other users could read the master key"),
            "chmod 0600 the file (0640 if owned by root), owned by the server's OS user.",
        ));
    }
    Ok(())
}

fn load(path: &str, stamp: &FileStamp, meta: &std::fs::Metadata) -> WaResult<Arc<Keyring>> {
    check_permissions(path, meta)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        key_file_error(
            path,
            e.to_string(),
            "Check the file's owner and permissions.",
        )
    })?);
    let ring = Keyring::parse(&text).map_err(|e| {
        key_file_error(
            path,
            e.to_string(),
            "Each line must be id:base64 of 32 random bytes, e.g. from `openssl rand -base64 32`.",
        )
    })?;
    let ring = Arc::new(ring);
    if let Ok(mut cache) = CACHE.lock() {
        *cache = Some((stamp.clone(), ring.clone()));
    }
    Ok(ring)
}

/// The keyring, reloaded if the key file changed since it was last read.
pub fn keyring() -> WaResult<Arc<Keyring>> {
    let path = key_file_path()?;
    let (stamp, meta) = stamp(&path)?;
    if let Ok(cache) = CACHE.lock()
        && let Some((cached, ring)) = cache.as_ref()
        && *cached == stamp
    {
        return Ok(ring.clone());
    }
    load(&path, &stamp, &meta)
}

/// The keyring read afresh from disk (key rotation must see the newest file).
pub fn keyring_fresh() -> WaResult<Arc<Keyring>> {
    let path = key_file_path()?;
    let (stamp, meta) = stamp(&path)?;
    load(&path, &stamp, &meta)
}

/// Maps a failure to open a stored secret to a clear error naming what it was.
pub fn decrypt_error(what: &str, e: CryptoError) -> WaError {
    match e {
        CryptoError::UnknownKeyId(id) => WaError::KeyFile {
            message: format!("cannot decrypt {what}"),
            detail: format!("it was encrypted with key id \"{id}\", which is not in wa.key_file"),
            hint:
                "Restore that key to the key file (keys may only be removed after wa.rotate_key())."
                    .into(),
        },
        other => WaError::Undecryptable {
            message: format!("cannot decrypt {what}"),
            detail: other.to_string(),
        },
    }
}

/// Associated data binding a tenant secret to its row.
pub fn credential_aad(tenant_id: &str, kind: &str) -> Vec<u8> {
    format!("wa.credentials/{tenant_id}/{kind}").into_bytes()
}

/// Associated data binding an app secret to its column.
pub fn app_config_aad(column: &str) -> Vec<u8> {
    format!("wa.app_config/{column}").into_bytes()
}
