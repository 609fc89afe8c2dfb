//! Small helpers: randomness, ids, time, JSON string escaping, URL-encoded parsing, signatures.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed_from_os());
}

static GLOBAL_SEED: AtomicU64 = AtomicU64::new(0);
static THREAD_NO: AtomicU64 = AtomicU64::new(1);

/// Makes the generators of threads started from now on derive from `seed` (repeatable runs,
/// as far as thread scheduling allows).
pub fn set_global_seed(seed: u64) {
    GLOBAL_SEED.store(seed | 1, Ordering::Relaxed);
    reseed(seed);
}

/// A fresh random seed from std's per-process random hash keys (no extra dependency), unless
/// a global seed was set.
fn seed_from_os() -> u64 {
    let global = GLOBAL_SEED.load(Ordering::Relaxed);
    if global != 0 {
        let n = THREAD_NO.fetch_add(1, Ordering::Relaxed);
        return (global ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_us());
    h.finish() | 1
}

/// Fast non-cryptographic randomness (xorshift64*), per thread. Good enough for ids, jitter and
/// fault dice; nothing here guards a secret.
pub fn rand_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Reseeds this thread's generator (used by `--random-seed` for repeatable fault dice).
pub fn reseed(seed: u64) {
    RNG.with(|c| c.set(seed | 1));
}

/// Uniform float in [0, 1).
pub fn rand_f64() -> f64 {
    (rand_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform integer in [lo, hi] (inclusive); `lo` when the range is empty.
pub fn rand_range(lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        lo + rand_u64() % (hi - lo + 1)
    }
}

/// True with probability `p`.
pub fn chance(p: f64) -> bool {
    p > 0.0 && rand_f64() < p
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (rand_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random alphanumeric string of `n` characters.
pub fn rand_alnum(n: usize) -> String {
    (0..n)
        .map(|_| ALNUM[(rand_u64() % ALNUM.len() as u64) as usize] as char)
        .collect()
}

/// Random numeric id of `digits` digits (first digit non-zero), like Graph object ids.
pub fn rand_numeric_id(digits: usize) -> String {
    let mut s = String::with_capacity(digits);
    s.push(char::from(b'1' + (rand_u64() % 9) as u8));
    for _ in 1..digits {
        s.push(char::from(b'0' + (rand_u64() % 10) as u8));
    }
    s
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_us() / 1_000_000
}

static WAMID_SEQ: AtomicU64 = AtomicU64::new(1);

/// A message id in the shape Meta uses: `wamid.` + base64 of a small binary record that embeds
/// the counterpart's id and a unique 18-hex-digit key. Unique within the process.
pub fn new_wamid(counterpart: &str) -> String {
    let seq = WAMID_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut raw = Vec::with_capacity(48 + counterpart.len());
    raw.extend_from_slice(&[0x1c, 0x18]);
    let who = &counterpart.as_bytes()[..counterpart.len().min(40)];
    raw.push(who.len() as u8);
    raw.extend_from_slice(who);
    raw.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, 0x12]);
    let key = format!(
        "{:06X}{:012X}",
        rand_u64() & 0xFF_FFFF,
        seq & 0xFFFF_FFFF_FFFF
    );
    raw.extend_from_slice(key.as_bytes());
    raw.push(0x00);
    let mut out = String::with_capacity(6 + raw.len() * 4 / 3 + 4);
    out.push_str("wamid.");
    base64::engine::general_purpose::STANDARD.encode_string(&raw, &mut out);
    out
}

/// A trace id in the shape of Graph's `fbtrace_id`.
pub fn fbtrace_id() -> String {
    let mut s = String::with_capacity(23);
    s.push('A');
    s.push_str(&rand_alnum(22));
    s
}

/// Appends `s` to `out` as a JSON string literal (with quotes).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
pub fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

/// Percent-decoding with `+` as space; invalid escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a query component (unreserved characters kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize].to_ascii_uppercase() as char);
            out.push(HEX[(b & 0xf) as usize].to_ascii_uppercase() as char);
        }
    }
    out
}

/// `sha256=<hex>` — the `X-Hub-Signature-256` header Meta puts on webhook deliveries.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::from("sha256="),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `n` bytes of a deterministic pattern (byte `i` is `31 i mod 251`): the content of a media
/// file made to a size (the admin API's `media_size`). The pattern repeats every 251 bytes, so
/// a large file is one period copied over, not computed byte by byte.
pub fn pattern_bytes(n: u64) -> Vec<u8> {
    let period: Vec<u8> = (0..251u32).map(|i| (i * 31 % 251) as u8).collect();
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let take = period.len().min(n - out.len());
        out.extend_from_slice(&period[..take]);
    }
    out
}

/// Hex SHA-256 of `data` (media `sha256` fields).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Stable 32-hex-digit id derived from parts (conversation ids).
pub fn derived_hex_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A business-scoped user id derived from a phone number, stable for one simulator instance's
/// lifetime and across instances (so tests can predict it): `CC.` + 20 digits.
pub fn derived_bsuid(wa_id: &str) -> String {
    let d = Sha256::digest(wa_id.as_bytes());
    let mut n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    let mut digits = String::with_capacity(20);
    for _ in 0..20 {
        digits.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
        if n == 0 {
            n = u64::from(d[8]) * 7919 + 104_729;
        }
    }
    format!("{}.{digits}", country_of(wa_id))
}

/// Rough ISO country for a phone number's calling code (enough for realistic BSUID prefixes).
fn country_of(wa_id: &str) -> &'static str {
    const CODES: &[(&str, &str)] = &[
        ("1", "US"),
        ("44", "GB"),
        ("49", "DE"),
        ("33", "FR"),
        ("34", "ES"),
        ("39", "IT"),
        ("31", "NL"),
        ("55", "BR"),
        ("52", "MX"),
        ("54", "AR"),
        ("57", "CO"),
        ("91", "IN"),
        ("62", "ID"),
        ("63", "PH"),
        ("65", "SG"),
        ("81", "JP"),
        ("82", "KR"),
        ("86", "CN"),
        ("852", "HK"),
        ("27", "ZA"),
        ("234", "NG"),
        ("254", "KE"),
        ("971", "AE"),
        ("966", "SA"),
        ("90", "TR"),
        ("61", "AU"),
    ];
    let mut best: Option<(&str, &str)> = None;
    for &(code, cc) in CODES {
        if wa_id.starts_with(code) && best.is_none_or(|(b, _)| code.len() > b.len()) {
            best = Some((code, cc));
        }
    }
    best.map(|(_, cc)| cc).unwrap_or("US")
}

/// Whether `s` has the shape of a business-scoped user id: `CC.` + alphanumerics, or the parent
/// form `CC.ENT.` + alphanumerics.
pub fn is_bsuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 4 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_uppercase() || b[2] != b'.' {
        return false;
    }
    let rest = &s[3..];
    let rest = rest.strip_prefix("ENT.").unwrap_or(rest);
    !rest.is_empty() && rest.len() <= 128 && rest.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Normalises a phone number as WhatsApp does for `wa_id`: digits only. `None` if it cannot be
/// a phone number (too short/long or stray letters).
pub fn normalize_phone(s: &str) -> Option<String> {
    let mut digits = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    (6..=15).contains(&digits.len()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_bytes_are_31_i_mod_251_at_any_size() {
        for n in [0u64, 1, 250, 251, 252, 1000] {
            let b = pattern_bytes(n);
            assert_eq!(b.len() as u64, n);
            assert!(
                b.iter()
                    .enumerate()
                    .all(|(i, &x)| x as usize == i * 31 % 251)
            );
        }
    }

    #[test]
    fn wamids_are_unique_and_prefixed() {
        let a = new_wamid("16505551234");
        let b = new_wamid("16505551234");
        assert!(a.starts_with("wamid.HBg"));
        assert_ne!(a, b);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut v = Vec::new();
        push_json_str(&mut v, "a\"b\\c\n\u{1}é");
        let s = String::from_utf8(v).unwrap_or_default();
        let back: String = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }

    #[test]
    fn urlencoded_round_trip() {
        let q = parse_urlencoded("a=1&b=x%20y+z&c&d=%zz");
        assert_eq!(q[0], ("a".into(), "1".into()));
        assert_eq!(q[1], ("b".into(), "x y z".into()));
        assert_eq!(q[2], ("c".into(), "".into()));
        assert_eq!(q[3], ("d".into(), "%zz".into()));
        assert_eq!(percent_decode(&percent_encode("a|b c")), "a|b c");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn bsuid_shapes() {
        assert!(is_bsuid("US.13491208655302741918"));
        assert!(is_bsuid("US.ENT.11815799212886844830"));
        assert!(!is_bsuid("13491208655302741918"));
        assert!(!is_bsuid("us.123"));
        assert!(!is_bsuid("US."));
        assert!(is_bsuid(&derived_bsuid("4915112345678")));
        assert!(derived_bsuid("4915112345678").starts_with("DE."));
    }

    #[test]
    fn phones_normalise() {
        assert_eq!(
            normalize_phone("+1 (650) 555-1234").as_deref(),
            Some("16505551234")
        );
        assert_eq!(normalize_phone("abc"), None);
        assert_eq!(normalize_phone("123"), None);
    }

    #[test]
    fn signature_matches_known_vector() {
        // RFC 4231 test case 2.
        let sig = hub_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
