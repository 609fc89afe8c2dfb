//! Opt-in CORS for the signup endpoints, so a host app can serve `<whatsapp-connect>` from
//! its own domain while the gateway runs on another origin. Exact origins only: never `*`,
//! never credentials; an origin that is not listed gets no CORS headers and the browser
//! blocks the call. `/webhook` and the other routes never see this middleware.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::server::App;

/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_SECS: u32 = 600;

/// The origins allowed to call `/signup/config` and `/signup/exchange` cross-origin, in
/// their serialised form (`https://app.example.com`, `http://localhost:3000`). Empty: no
/// CORS headers at all (same-origin only).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses a comma-separated list; blanks between commas are ignored.
    pub fn parse(list: &str) -> Result<AllowedOrigins, String> {
        AllowedOrigins::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// Each entry must be `http(s)://host[:port]`: no path, query, user info or wildcard. The
    /// scheme and host are lower-cased (browsers send them so); one trailing `/` is dropped.
    pub fn new<S: AsRef<str>>(
        origins: impl IntoIterator<Item = S>,
    ) -> Result<AllowedOrigins, String> {
        let mut out: Vec<String> = Vec::new();
        for raw in origins {
            let o = normalise(raw.as_ref())?;
            if !out.contains(&o) {
                out.push(o);
            }
        }
        Ok(AllowedOrigins(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request's `Origin` if it is listed (exact match).
    fn allows<'a>(&self, origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
        let o = origin?;
        let s = o.to_str().ok()?;
        self.0.iter().any(|a| a == s).then_some(o)
    }
}

impl fmt::Debug for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

fn normalise(raw: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "bad allowed origin {raw:?}: {why} (expected e.g. https://app.example.com)"
        ))
    };
    let s = raw.trim();
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.contains('*') {
        return bad("wildcards are not supported; list each origin");
    }
    let lower = s.to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return bad("no scheme");
    };
    if scheme != "https" && scheme != "http" {
        return bad("the scheme must be https or http");
    }
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return bad("an origin is scheme://host[:port] only, without path, query or user info");
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(rest) => match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, tail)) => match tail.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return bad("junk after the IPv6 literal"),
            },
            None => return bad("unclosed IPv6 literal"),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || (!authority.starts_with('[') && host.contains(':')) {
        return bad("no host, or a malformed one");
    }
    match port {
        None => {}
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return bad("the port must be a number"),
    }
    if HeaderValue::from_str(&lower).is_err() {
        return bad("not a valid header value");
    }
    Ok(lower)
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn add_vary_origin(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The CORS middleware for the signup routes. With an empty list it does nothing. Otherwise
/// a preflight from a listed origin is answered here (204); every other request goes on, and
/// its response carries `Access-Control-Allow-Origin` when the origin is listed. `Vary:
/// Origin` is added to all these responses, since they differ by origin. A preflight from an
/// unlisted origin goes on to the router too (405, no CORS headers).
pub async fn signup_cors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let origins = &app.config.allowed_origins;
    if origins.is_empty() {
        return next.run(req).await;
    }
    let allowed = origins.allows(req.headers().get(header::ORIGIN)).cloned();
    if let Some(origin) = &allowed
        && is_preflight(&req)
    {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECS),
        );
        add_vary_origin(h);
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    add_vary_origin(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_a_list() {
        let a = AllowedOrigins::parse(
            " https://App.Example.com/ , http://localhost:3000,,https://app.example.com",
        )
        .expect("parse");
        assert_eq!(a.0, ["https://app.example.com", "http://localhost:3000"]);
        assert!(AllowedOrigins::parse("").expect("empty").is_empty());
        assert!(AllowedOrigins::parse(" , ").expect("blank").is_empty());
        assert!(AllowedOrigins::parse("http://[::1]:8080").is_ok());
    }

    #[test]
    fn refuses_what_is_not_an_origin() {
        for bad in [
            "*",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://*.example.com",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "https://user@app.example.com",
            "https://app.example.com:port",
            "https://",
            "https://app.example.com:",
            "https://[::1",
            "https://a:b:443",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_exact_origins_only() {
        let a = AllowedOrigins::parse("https://app.example.com").expect("parse");
        let ok = HeaderValue::from_static("https://app.example.com");
        assert!(a.allows(Some(&ok)).is_some());
        for other in [
            "https://app.example.com.evil.test",
            "http://app.example.com",
            "https://app.example.com:8443",
            "null",
        ] {
            assert!(a.allows(Some(&HeaderValue::from_static(other))).is_none());
        }
        assert!(a.allows(None).is_none());
    }
}
