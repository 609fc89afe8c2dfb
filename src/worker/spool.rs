//! Inbound media downloads go to a file, not to memory: an HTTP thread streams the body to a
//! spool file while hashing it, and the write-back copies the file into the database a chunk
//! at a time (`wa.media_chunks`). A burst of large videos then costs a few buffers per thread,
//! whatever `wa.media_max_bytes` is.
//!
//! Spool files live in the data directory's `base/pgsql_tmp`, named `pgsql_tmp…`: PostgreSQL
//! removes such files when it starts, so a crash leaves none behind. Each is removed as soon
//! as its download is recorded or fails.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use whatsapp_client::api::{ApiError, GraphClient};

/// The size of a stored chunk, and of what the write-back holds at a time.
pub const CHUNK: usize = 1 << 20;

static DIR: OnceLock<PathBuf> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Called on the worker's main thread at start: where spool files go.
pub fn init() {
    // SAFETY: DataDir is set by the postmaster before any background worker starts and never
    // changes afterwards.
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::DataDir) };
    let dir = PathBuf::from(data_dir.to_string_lossy().into_owned()).join("base/pgsql_tmp");
    let _ = DIR.set(dir);
}

/// A downloaded file on disk, removed when dropped.
pub struct Spooled {
    path: PathBuf,
    pub size: u64,
    /// The SHA-256 of the bytes, hex.
    pub sha256: String,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spooled {
    /// The file's bytes, `CHUNK` at a time.
    pub fn chunks(&self) -> std::io::Result<Chunks> {
        Ok(Chunks {
            file: File::open(&self.path)?,
        })
    }
}

pub struct Chunks {
    file: File,
}

impl Chunks {
    /// The next chunk (empty at the end).
    pub fn next_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = self.file.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

/// Writes to the spool file and the hash at once, counting bytes.
struct Hashing {
    out: BufWriter<File>,
    hash: Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn io_error(what: &str, e: std::io::Error) -> ApiError {
    ApiError::Transport {
        kind: whatsapp_client::api::TransportKind::Io,
        maybe_delivered: false,
        detail: format!("{what}: {e}"),
    }
}

/// Downloads `url` into a new spool file; returns it and its content type.
pub fn download(
    client: &GraphClient,
    url: &str,
    token: &str,
    max_bytes: u64,
) -> Result<(Spooled, Option<String>), ApiError> {
    let dir = DIR
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("base/pgsql_tmp"));
    std::fs::create_dir_all(&dir).map_err(|e| io_error("creating the media spool directory", e))?;
    let path = dir.join(format!(
        "pgsql_tmp_wa_media.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::create(&path).map_err(|e| io_error("creating a media spool file", e))?;
    // From here on the file is removed whatever happens.
    let mut spooled = Spooled {
        path,
        size: 0,
        sha256: String::new(),
    };
    let mut out = Hashing {
        out: BufWriter::with_capacity(64 * 1024, file),
        hash: Sha256::new(),
        size: 0,
    };
    let content_type = client.download_media_to(url, token, max_bytes, &mut out)?;
    out.flush()
        .map_err(|e| io_error("writing a media spool file", e))?;
    spooled.size = out.size;
    spooled.sha256 = hex::encode(out.hash.finalize());
    Ok((spooled, content_type))
}

/// Whether the SHA-256 Meta gave (hex, or base64 as in some webhooks) is the one of the bytes.
pub fn matches(given: &str, hex_digest: &str) -> bool {
    use base64::Engine;
    let given = given.trim();
    if given.eq_ignore_ascii_case(hex_digest) {
        return true;
    }
    hex::decode(hex_digest).is_ok_and(|raw| {
        base64::engine::general_purpose::STANDARD.encode(&raw) == given
            || base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw)
                == given.trim_end_matches('=')
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_matches_hex_and_base64() {
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(super::matches(hex, hex));
        assert!(super::matches(&hex.to_uppercase(), hex));
        assert!(super::matches(
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=",
            hex
        ));
        assert!(!super::matches(
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEN=",
            hex
        ));
        assert!(!super::matches(&hex.replace('5', "6"), hex));
    }
}
