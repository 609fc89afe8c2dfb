//! A blocking Graph API client for the WhatsApp Cloud API endpoints the extension uses.
//!
//! [`GraphClient`] is `Send + Sync` and cheap to clone (the connection pool is shared), so one
//! client serves every sender thread. The base URL and API version are per client; the access
//! token is per call, because every tenant has its own.
//!
//! Timeouts are per phase (connect, send, receive) rather than one global deadline: a global or
//! per-call deadline makes ureq resolve host names on a helper thread per request, which
//! measured about three times slower here.
//!
//! Secrets never leave this module in text: tokens travel in the `Authorization` header, and
//! every error message is scrubbed of the call's secrets and of `access_token=`,
//! `client_secret=`, `input_token=` and `code=` query values before it is built.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;
use zeroize::Zeroizing;

use crate::error::{ErrorClass, GraphError, classify};
use crate::message::{ValidationError, build_send_body, mark_read_body};
use crate::recipient::Recipient;

pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v25.0";

/// The fields `phone_number_info` asks for.
pub const PHONE_NUMBER_FIELDS: &str = "display_phone_number,verified_name,quality_rating,throughput,messaging_limit_tier,code_verification_status,name_status,platform_type,status";

/// How many pages a list call follows at most.
const MAX_PAGES: usize = 50;

/// Client settings.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// `https://graph.facebook.com`, or the simulator's URL in tests. No trailing slash needed.
    pub base_url: String,
    /// e.g. `v25.0`.
    pub api_version: String,
    pub connect_timeout: Duration,
    /// For writing the request head and body.
    pub send_timeout: Duration,
    /// For the response head and body.
    pub recv_timeout: Duration,
    /// Idle keep-alive connections kept in total and per host; set it at least to the number
    /// of threads that send concurrently, or connections are re-opened all the time.
    pub max_idle_connections: usize,
    /// The largest JSON response read (media downloads have their own limit).
    pub max_response_bytes: u64,
    pub user_agent: String,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(15),
            recv_timeout: Duration::from_secs(30),
            max_idle_connections: 16,
            max_response_bytes: 8 * 1024 * 1024,
            user_agent: concat!("whatsapp_pg/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl GraphConfig {
    pub fn new(base_url: impl Into<String>) -> GraphConfig {
        GraphConfig {
            base_url: base_url.into(),
            ..GraphConfig::default()
        }
    }

    /// Sets the send and receive timeouts to `t`, and the connect timeout to `t` capped at 5 s.
    pub fn with_timeout(mut self, t: Duration) -> GraphConfig {
        self.connect_timeout = t.min(Duration::from_secs(5));
        self.send_timeout = t;
        self.recv_timeout = t;
        self
    }

    pub fn with_api_version(mut self, v: impl Into<String>) -> GraphConfig {
        self.api_version = v.into();
        self
    }

    pub fn with_max_idle_connections(mut self, n: usize) -> GraphConfig {
        self.max_idle_connections = n;
        self
    }
}

/// A secret string (access token) that never prints and is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// What failed in a transport-level error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A configured timeout expired.
    Timeout,
    /// The connection could not be established (DNS, refused, unreachable).
    Connect,
    /// TLS handshake or certificate problem.
    Tls,
    /// The connection broke, or the server spoke broken HTTP.
    Io,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Timeout => "timeout",
            TransportKind::Connect => "connection",
            TransportKind::Tls => "TLS",
            TransportKind::Io => "I/O",
        })
    }
}

/// Why a Graph API call failed. Display and Debug never contain tokens or app secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Meta answered with an error envelope.
    #[error("Graph API error (HTTP {http_status}): {}", error.summary())]
    Graph {
        http_status: u16,
        error: Box<GraphError>,
    },
    /// An error status without a Graph error body (a proxy's HTML page, say).
    #[error("HTTP {http_status} from the Graph API without an error body: {body_snippet}")]
    Http {
        http_status: u16,
        body_snippet: String,
    },
    /// No (complete) answer. `maybe_delivered` is true when the request may have reached
    /// Meta (the timeout or break happened after it was sent), so a retried send could
    /// duplicate the message.
    #[error("{kind} error talking to the Graph API: {detail}")]
    Transport {
        kind: TransportKind,
        maybe_delivered: bool,
        detail: String,
    },
    /// A success status with a body we could not understand.
    #[error("unexpected Graph API response (HTTP {http_status}): {detail}")]
    Decode { http_status: u16, detail: String },
    #[error("response is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("invalid message: {0}")]
    Invalid(#[from] ValidationError),
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
}

impl ApiError {
    /// How a sender should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Graph { http_status, error } => {
                classify(Some(*http_status), error.code, error.error_subcode)
            }
            ApiError::Http { http_status, .. } => classify(Some(*http_status), None, None),
            ApiError::Transport { .. } => ErrorClass::Retry,
            ApiError::Decode { .. }
            | ApiError::TooLarge { .. }
            | ApiError::Invalid(_)
            | ApiError::BadArgument(_) => ErrorClass::Permanent,
        }
    }

    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            ApiError::Graph { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Graph { http_status, .. }
            | ApiError::Http { http_status, .. }
            | ApiError::Decode { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// A JSON description to store with a failed message or connection:
    /// `{"class","http_status","code","error_subcode","title","message","details","fbtrace_id"}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("class".into(), self.class().as_str().into());
        if let Some(s) = self.http_status() {
            m.insert("http_status".into(), s.into());
        }
        match self {
            ApiError::Graph { error, .. } => {
                if let Value::Object(e) = serde_json::to_value(&**error).unwrap_or(Value::Null) {
                    m.extend(e);
                }
            }
            ApiError::Transport {
                kind,
                maybe_delivered,
                ..
            } => {
                m.insert("transport".into(), kind.to_string().into());
                m.insert("maybe_delivered".into(), (*maybe_delivered).into());
                m.insert("message".into(), self.to_string().into());
            }
            _ => {
                m.insert("message".into(), self.to_string().into());
            }
        }
        Value::Object(m)
    }
}

/// `contacts[]` of a send response.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SentContact {
    /// The phone number or BSUID the request used.
    #[serde(default)]
    pub input: Option<String>,
    /// Present when the send used a phone number.
    #[serde(default)]
    pub wa_id: Option<String>,
    /// The BSUID; present when the send used one.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `messages[]` of a send response.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SentMessage {
    /// The `wamid`.
    pub id: String,
    /// e.g. `accepted`, `held_for_quality_assessment` (pacing).
    #[serde(default)]
    pub message_status: Option<String>,
}

/// The response to `POST /{phone_number_id}/messages`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SendResponse {
    #[serde(default)]
    pub messaging_product: Option<String>,
    #[serde(default)]
    pub contacts: Vec<SentContact>,
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

impl SendResponse {
    /// The `wamid` of the sent message.
    pub fn message_id(&self) -> Option<&str> {
        self.messages.first().map(|m| m.id.as_str())
    }
}

/// `GET /{media_id}`: where to download a media file (the URL expires within minutes).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct MediaInfo {
    #[serde(default)]
    pub id: Option<String>,
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub messaging_product: Option<String>,
}

/// A downloaded media file.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// The response of the OAuth code exchange.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenResponse {
    pub access_token: Secret,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds; absent for tokens that do not expire.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct GranularScope {
    pub scope: String,
    #[serde(default)]
    pub target_ids: Vec<String>,
}

/// `GET /debug_token`'s `data`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TokenInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub app_id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub data_access_expires_at: Option<i64>,
    /// 0 for tokens that never expire.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub is_valid: bool,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub issued_at: Option<i64>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub granular_scopes: Vec<GranularScope>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub user_id: Option<String>,
}

impl TokenInfo {
    /// The ids a scope (e.g. `whatsapp_business_management`) is granted for: the WABAs shared
    /// with the app during Embedded Signup.
    pub fn target_ids(&self, scope: &str) -> Vec<&str> {
        self.granular_scopes
            .iter()
            .filter(|g| g.scope == scope)
            .flat_map(|g| g.target_ids.iter().map(String::as_str))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Throughput {
    #[serde(default)]
    pub level: Option<String>,
}

/// A business phone number (`GET /{phone_number_id}` or an entry of `/{waba_id}/phone_numbers`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct PhoneNumberInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(default)]
    pub display_phone_number: Option<String>,
    #[serde(default)]
    pub verified_name: Option<String>,
    /// `GREEN`, `YELLOW`, `RED`, `UNKNOWN`.
    #[serde(default)]
    pub quality_rating: Option<String>,
    #[serde(default)]
    pub throughput: Option<Throughput>,
    /// `TIER_250`, `TIER_2K`, …
    #[serde(default)]
    pub messaging_limit_tier: Option<String>,
    #[serde(default)]
    pub code_verification_status: Option<String>,
    #[serde(default)]
    pub name_status: Option<String>,
    /// `CLOUD_API`, `ON_PREMISE`, `NOT_APPLICABLE`.
    #[serde(default)]
    pub platform_type: Option<String>,
    /// `CONNECTED`, `PENDING`, `DISCONNECTED`, …
    #[serde(default)]
    pub status: Option<String>,
    /// Any other fields Meta returned.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message template (`/{waba_id}/message_templates`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TemplateInfo {
    #[serde(default, deserialize_with = "lenient_string")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub components: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Cursors {
    #[serde(default)]
    after: Option<String>,
}

#[derive(Deserialize)]
struct DebugTokenEnvelope {
    data: TokenInfo,
}

#[derive(Deserialize)]
struct IdResponse {
    #[serde(deserialize_with = "lenient_string_required")]
    id: String,
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_string_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    lenient_string(d)?.ok_or_else(|| serde::de::Error::custom("expected a string or number id"))
}

/// The Graph API client. Clone it freely; clones share the connection pool.
#[derive(Clone)]
pub struct GraphClient {
    agent: ureq::Agent,
    /// `{base_url}/{api_version}`
    root: String,
    /// Plain-http base URLs are only for tests; they also allow plain-http media URLs.
    insecure_ok: bool,
    max_response_bytes: u64,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("root", &self.root)
            .finish()
    }
}

/// Secrets of one call, scrubbed from any text that leaves it.
#[derive(Clone, Copy, Default)]
struct Secrets<'a> {
    items: [Option<&'a str>; 2],
}

impl<'a> Secrets<'a> {
    fn one(s: &'a str) -> Secrets<'a> {
        Secrets {
            items: [Some(s), None],
        }
    }
    fn two(a: &'a str, b: &'a str) -> Secrets<'a> {
        Secrets {
            items: [Some(a), Some(b)],
        }
    }
    fn scrub(&self, text: &str) -> String {
        let mut out = redact_query_secrets(text);
        for s in self.items.iter().flatten() {
            if s.len() >= 4 {
                out = out.replace(s, "[redacted]");
            }
        }
        out
    }
}

/// Replaces the values of secret-bearing query parameters and bearer credentials in `text`.
pub fn redact_query_secrets(text: &str) -> String {
    const KEYS: [&str; 5] = [
        "access_token=",
        "client_secret=",
        "input_token=",
        "code=",
        "Bearer ",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for key in KEYS {
            if let Some(tail) = rest.strip_prefix(key) {
                // only treat `code=` as a parameter at a parameter boundary
                let at_boundary =
                    key != "code=" || out.is_empty() || out.ends_with(['?', '&', ' ', '"', '\'']);
                if at_boundary {
                    out.push_str(key);
                    out.push_str("[redacted]");
                    let end = tail
                        .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
                        .unwrap_or(tail.len());
                    rest = &tail[end..];
                    continue 'outer;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Ids that go into URL paths (phone number, WABA and media ids) must be plain tokens, so a
/// hostile value can never change the path or query.
fn path_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        || id.starts_with('.')
    {
        return Err(ApiError::BadArgument(
            "ids in Graph API paths must be 1-128 letters, digits, '_', '-' or '.'",
        ));
    }
    Ok(id)
}

fn bearer(token: &str) -> Result<String, ApiError> {
    if token.is_empty() || token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ApiError::BadArgument("access token is empty or malformed"));
    }
    Ok(format!("Bearer {token}"))
}

impl GraphClient {
    pub fn new(config: GraphConfig) -> GraphClient {
        let idle = config.max_idle_connections.max(1);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_send_request(Some(config.send_timeout))
            .timeout_send_body(Some(config.send_timeout))
            .timeout_recv_response(Some(config.recv_timeout))
            .timeout_recv_body(Some(config.recv_timeout))
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            .user_agent(config.user_agent.as_str())
            .build()
            .into();
        let base = config.base_url.trim_end_matches('/');
        let version = config.api_version.trim_matches('/');
        GraphClient {
            agent,
            root: format!("{base}/{version}"),
            insecure_ok: base.starts_with("http://"),
            max_response_bytes: config.max_response_bytes,
        }
    }

    /// `{base_url}/{api_version}`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Sends a message: validates it, builds the body and POSTs it.
    pub fn send_message(
        &self,
        phone_number_id: &str,
        token: &str,
        to: &Recipient,
        message: &Value,
        biz_opaque_callback_data: Option<&str>,
    ) -> Result<SendResponse, ApiError> {
        let body = build_send_body(to, message, biz_opaque_callback_data)?;
        self.send_raw(phone_number_id, token, &body)
    }

    /// POSTs an already built request body (see [`build_send_body`]) to
    /// `/{phone_number_id}/messages`.
    pub fn send_raw(
        &self,
        phone_number_id: &str,
        token: &str,
        body: &[u8],
    ) -> Result<SendResponse, ApiError> {
        let url = format!("{}/{}/messages", self.root, path_id(phone_number_id)?);
        let (status, bytes) = self.post_json(&url, token, body)?;
        decode(status, &bytes)
    }

    /// Marks an inbound message as read, optionally showing a typing indicator.
    pub fn mark_read(
        &self,
        phone_number_id: &str,
        token: &str,
        message_id: &str,
        typing: bool,
    ) -> Result<(), ApiError> {
        let url = format!("{}/{}/messages", self.root, path_id(phone_number_id)?);
        let (status, bytes) = self.post_json(&url, token, &mark_read_body(message_id, typing))?;
        expect_success(status, &bytes)
    }

    /// `GET /{media_id}`: the short-lived download URL and metadata of a media file.
    pub fn media_info(
        &self,
        media_id: &str,
        token: &str,
        phone_number_id: Option<&str>,
    ) -> Result<MediaInfo, ApiError> {
        let url = format!("{}/{}", self.root, path_id(media_id)?);
        let mut req = self.agent.get(&url).header("Authorization", bearer(token)?);
        if let Some(p) = phone_number_id {
            req = req.query("phone_number_id", path_id(p)?);
        }
        let secrets = Secrets::one(token);
        let resp = req.call().map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        decode(status, &bytes)
    }

    /// Downloads a media file from the URL [`GraphClient::media_info`] returned, into memory.
    /// Fails with [`ApiError::TooLarge`] as soon as more than `max_bytes` arrive.
    pub fn download_media(
        &self,
        url: &str,
        token: &str,
        max_bytes: u64,
    ) -> Result<Download, ApiError> {
        let mut bytes = Vec::new();
        let content_type = self.download_media_to(url, token, max_bytes, &mut bytes)?;
        Ok(Download {
            bytes,
            content_type,
        })
    }

    /// Streams a media file into `out` (at most `max_bytes`), returning its content type.
    pub fn download_media_to(
        &self,
        url: &str,
        token: &str,
        max_bytes: u64,
        out: &mut dyn Write,
    ) -> Result<Option<String>, ApiError> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if !(https || (self.insecure_ok && lower.starts_with("http://"))) {
            // the bearer token goes with the request: never over plain http in production
            return Err(ApiError::BadArgument("media URL must be https"));
        }
        let secrets = Secrets::one(token);
        let resp = self
            .agent
            .get(url)
            .header("Authorization", bearer(token)?)
            .call()
            .map_err(|e| transport(e, secrets))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
            return Err(error_from(status, &bytes, secrets));
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let declared = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(ApiError::TooLarge { limit: max_bytes });
        }
        let mut body = resp.into_body();
        let mut reader = body.as_reader();
        copy_limited(&mut reader, out, max_bytes, secrets)?;
        Ok(content_type)
    }

    /// Uploads a media file (`multipart/form-data` with `messaging_product`, `type`, `file`)
    /// and returns its media id.
    pub fn upload_media(
        &self,
        phone_number_id: &str,
        token: &str,
        bytes: &[u8],
        mime_type: &str,
        filename: &str,
    ) -> Result<String, ApiError> {
        let url = format!("{}/{}/media", self.root, path_id(phone_number_id)?);
        let safe = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c == '"');
        if !safe(mime_type) || !safe(filename) {
            return Err(ApiError::BadArgument(
                "mime type and file name must be non-empty, without quotes or control characters",
            ));
        }
        let (content_type, body) = multipart_body(bytes, mime_type, filename);
        let secrets = Secrets::one(token);
        let resp = self
            .agent
            .post(&url)
            .header("Authorization", bearer(token)?)
            .content_type(content_type)
            .send(&body[..])
            .map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        decode::<IdResponse>(status, &bytes).map(|r| r.id)
    }

    /// Deletes an uploaded media file.
    pub fn delete_media(&self, media_id: &str, token: &str) -> Result<(), ApiError> {
        let url = format!("{}/{}", self.root, path_id(media_id)?);
        let secrets = Secrets::one(token);
        let resp = self
            .agent
            .delete(&url)
            .header("Authorization", bearer(token)?)
            .call()
            .map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        expect_success(status, &bytes)
    }

    /// Exchanges an Embedded Signup code for a business token
    /// (`GET /oauth/access_token?client_id&client_secret&code`).
    pub fn exchange_code(
        &self,
        app_id: &str,
        app_secret: &str,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<TokenResponse, ApiError> {
        let url = format!("{}/oauth/access_token", self.root);
        let mut req = self
            .agent
            .get(&url)
            .query("client_id", app_id)
            .query("client_secret", app_secret)
            .query("code", code);
        if let Some(r) = redirect_uri {
            req = req.query("redirect_uri", r);
        }
        let secrets = Secrets::two(app_secret, code);
        let resp = req.call().map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        decode_scrubbed(status, &bytes, secrets)
    }

    /// Inspects a token with the app token `app_id|app_secret` (`GET /debug_token`).
    pub fn debug_token(
        &self,
        app_id: &str,
        app_secret: &str,
        input_token: &str,
    ) -> Result<TokenInfo, ApiError> {
        let url = format!("{}/debug_token", self.root);
        let app_token = Zeroizing::new(format!("{app_id}|{app_secret}"));
        let secrets = Secrets::two(app_secret, input_token);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", bearer(&app_token)?)
            .query("input_token", input_token)
            .call()
            .map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        decode_scrubbed::<DebugTokenEnvelope>(status, &bytes, secrets).map(|e| e.data)
    }

    /// Subscribes the app to a WABA's webhooks (`POST /{waba_id}/subscribed_apps`).
    pub fn subscribe_app(&self, waba_id: &str, token: &str) -> Result<(), ApiError> {
        let url = format!("{}/{}/subscribed_apps", self.root, path_id(waba_id)?);
        let (status, bytes) = self.post_json(&url, token, b"{}")?;
        expect_success(status, &bytes)
    }

    /// Registers a phone number for Cloud API use with its two-step verification PIN.
    pub fn register_phone(
        &self,
        phone_number_id: &str,
        token: &str,
        pin: &str,
    ) -> Result<(), ApiError> {
        if pin.len() != 6 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadArgument(
                "the registration PIN must be 6 digits",
            ));
        }
        let url = format!("{}/{}/register", self.root, path_id(phone_number_id)?);
        let body = serde_json::to_vec(&serde_json::json!({
            "messaging_product": "whatsapp",
            "pin": pin,
        }))
        .unwrap_or_default();
        let (status, bytes) = self.post_json(&url, token, &body)?;
        expect_success(status, &bytes)
    }

    /// `GET /{phone_number_id}?fields=…` (see [`PHONE_NUMBER_FIELDS`]).
    pub fn phone_number_info(
        &self,
        phone_number_id: &str,
        token: &str,
    ) -> Result<PhoneNumberInfo, ApiError> {
        let url = format!("{}/{}", self.root, path_id(phone_number_id)?);
        self.get_json(&url, token, &[("fields", PHONE_NUMBER_FIELDS)])
    }

    /// All phone numbers of a WABA (follows paging).
    pub fn list_phone_numbers(
        &self,
        waba_id: &str,
        token: &str,
    ) -> Result<Vec<PhoneNumberInfo>, ApiError> {
        let url = format!("{}/{}/phone_numbers", self.root, path_id(waba_id)?);
        let fields = format!("id,{PHONE_NUMBER_FIELDS}");
        self.get_all(&url, token, &[("fields", fields.as_str())])
    }

    /// All message templates of a WABA (follows paging).
    pub fn list_templates(
        &self,
        waba_id: &str,
        token: &str,
    ) -> Result<Vec<TemplateInfo>, ApiError> {
        let url = format!("{}/{}/message_templates", self.root, path_id(waba_id)?);
        self.get_all(
            &url,
            token,
            &[
                ("fields", "id,name,language,status,category,components"),
                ("limit", "100"),
            ],
        )
    }

    fn post_json(&self, url: &str, token: &str, body: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
        let secrets = Secrets::one(token);
        let resp = self
            .agent
            .post(url)
            .header("Authorization", bearer(token)?)
            .content_type("application/json")
            .send(body)
            .map_err(|e| transport(e, secrets))?;
        self.read_body(resp, self.max_response_bytes, secrets)
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        token: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let secrets = Secrets::one(token);
        let mut req = self.agent.get(url).header("Authorization", bearer(token)?);
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let resp = req.call().map_err(|e| transport(e, secrets))?;
        let (status, bytes) = self.read_body(resp, self.max_response_bytes, secrets)?;
        decode(status, &bytes)
    }

    fn get_all<T: DeserializeOwned>(
        &self,
        url: &str,
        token: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(a) = after.as_deref() {
                q.push(("after", a));
            }
            let page: Page<T> = self.get_json(url, token, &q)?;
            let got = page.data.len();
            all.extend(page.data);
            // only follow a cursor when Meta says there is a next page
            after = page
                .paging
                .filter(|p| p.next.is_some())
                .and_then(|p| p.cursors)
                .and_then(|c| c.after);
            if after.is_none() || got == 0 {
                break;
            }
        }
        Ok(all)
    }

    fn read_body(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        limit: u64,
        secrets: Secrets,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        copy_limited(&mut body.as_reader(), &mut bytes, limit, secrets)?;
        Ok((status, bytes))
    }
}

fn copy_limited(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    limit: u64,
    secrets: Secrets,
) -> Result<u64, ApiError> {
    let mut buf = [0u8; 16 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(&e, true, secrets)),
        };
        total += n as u64;
        if total > limit {
            return Err(ApiError::TooLarge { limit });
        }
        out.write_all(&buf[..n])
            .map_err(|e| io_error(&e, true, secrets))?;
    }
}

fn io_error(e: &std::io::Error, after_send: bool, secrets: Secrets) -> ApiError {
    use std::io::ErrorKind as K;
    // ureq reports its per-phase timeouts wrapped in io errors while reading bodies
    let text = secrets.scrub(&e.to_string());
    let kind = match e.kind() {
        K::TimedOut | K::WouldBlock => TransportKind::Timeout,
        K::ConnectionRefused | K::NotConnected | K::AddrNotAvailable => TransportKind::Connect,
        _ if text.contains("timeout") || text.contains("timed out") => TransportKind::Timeout,
        _ => TransportKind::Io,
    };
    ApiError::Transport {
        kind,
        maybe_delivered: after_send && kind != TransportKind::Connect,
        detail: text,
    }
}

fn transport(e: ureq::Error, secrets: Secrets) -> ApiError {
    use ureq::Timeout as T;
    let (kind, maybe_delivered) = match &e {
        ureq::Error::Timeout(t) => (
            TransportKind::Timeout,
            // the request may have been processed once it was fully sent
            !matches!(t, T::Resolve | T::Connect | T::SendRequest),
        ),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            (TransportKind::Connect, false)
        }
        ureq::Error::Tls(_) => (TransportKind::Tls, false),
        ureq::Error::Io(io) => {
            return io_error(io, !is_connect_error(io), secrets);
        }
        ureq::Error::BodyExceedsLimit(limit) => return ApiError::TooLarge { limit: *limit },
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            return ApiError::BadArgument("the request URL is malformed");
        }
        _ => (TransportKind::Io, true),
    };
    ApiError::Transport {
        kind,
        maybe_delivered,
        detail: secrets.scrub(&e.to_string()),
    }
}

fn is_connect_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::NotConnected
            | K::AddrNotAvailable
            | K::HostUnreachable
            | K::NetworkUnreachable
    )
}

/// Turns a non-2xx answer into an error.
fn error_from(status: u16, bytes: &[u8], secrets: Secrets) -> ApiError {
    match GraphError::from_response_body(bytes) {
        Some(mut error) => {
            for field in [
                &mut error.message,
                &mut error.details,
                &mut error.error_user_msg,
                &mut error.error_user_title,
                &mut error.title,
            ] {
                if let Some(text) = field.as_mut() {
                    *text = secrets.scrub(text);
                }
            }
            ApiError::Graph {
                http_status: status,
                error: Box::new(error),
            }
        }
        None => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
            ApiError::Http {
                http_status: status,
                body_snippet: secrets.scrub(text.trim()),
            }
        }
    }
}

fn decode<T: DeserializeOwned>(status: u16, bytes: &[u8]) -> Result<T, ApiError> {
    decode_scrubbed(status, bytes, Secrets::default())
}

fn decode_scrubbed<T: DeserializeOwned>(
    status: u16,
    bytes: &[u8],
    secrets: Secrets,
) -> Result<T, ApiError> {
    if !(200..300).contains(&status) {
        return Err(error_from(status, bytes, secrets));
    }
    // a 200 can still carry an error envelope
    if GraphError::from_response_body(bytes).is_some_and(|e| e.code.is_some()) {
        return Err(error_from(status, bytes, secrets));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
        http_status: status,
        // serde's message names the field and position, never the value
        detail: e.to_string(),
    })
}

fn expect_success(status: u16, bytes: &[u8]) -> Result<(), ApiError> {
    let v: Value = decode(status, bytes)?;
    match v.get("success") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(ApiError::Decode {
            http_status: status,
            detail: "the response did not report success".into(),
        }),
    }
}

fn multipart_body(bytes: &[u8], mime_type: &str, filename: &str) -> (String, Vec<u8>) {
    let mut seed = [0u8; 12];
    // uniqueness only matters for not colliding with the file content; fall back to a fixed
    // boundary (checked below) if the OS has no randomness to give
    let _ = getrandom::fill(&mut seed);
    let mut boundary = format!("----whatsapp-pg-{}", hex::encode(seed));
    while memchr_find(bytes, boundary.as_bytes()) {
        boundary.push('x');
    }
    let mut body = Vec::with_capacity(bytes.len() + 512);
    let mut field = |name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    field("messaging_product", "whatsapp");
    field("type", mime_type);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {mime_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<GraphClient>();
        let c = GraphClient::new(GraphConfig::new("http://127.0.0.1:1/"));
        assert_eq!(c.root(), "http://127.0.0.1:1/v25.0");
    }

    #[test]
    fn query_secrets_are_redacted() {
        let text = "GET https://graph.facebook.com/v25.0/oauth/access_token?client_id=1&client_secret=s3cr3t&code=AQDx&redirect_uri=x failed; Authorization: Bearer EAAGtoken";
        let r = redact_query_secrets(text);
        assert!(
            !r.contains("s3cr3t") && !r.contains("AQDx") && !r.contains("EAAGtoken"),
            "{r}"
        );
        assert!(r.contains("client_id=1"));
        assert!(r.contains("redirect_uri=x"));
        // "code=" inside another word is not a parameter
        assert_eq!(redact_query_secrets("zipcode=123"), "zipcode=123");
        assert_eq!(
            redact_query_secrets("x?input_token=abc&access_token=def"),
            "x?input_token=[redacted]&access_token=[redacted]"
        );
    }

    #[test]
    fn secrets_are_scrubbed_and_debug_is_redacted() {
        let s = Secrets::two("EAAGsecret", "appsecret");
        assert_eq!(
            s.scrub("bad EAAGsecret and appsecret"),
            "bad [redacted] and [redacted]"
        );
        let t = TokenResponse {
            access_token: Secret::new("EAAGsecret"),
            token_type: Some("bearer".into()),
            expires_in: None,
        };
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("EAAGsecret"), "{dbg}");
    }

    #[test]
    fn path_ids_are_checked() {
        assert!(path_id("1234567890").is_ok());
        assert!(path_id("wamid.ABC-_=").is_err());
        for bad in ["", "1/2", "1?x=1", "..", "1 2", "a#b", "%2e"] {
            assert!(path_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_rejects_malformed_tokens() {
        assert!(bearer("").is_err());
        assert!(bearer("a b").is_err());
        assert!(bearer("a\r\nX: y").is_err());
        assert_eq!(bearer("EAAG").unwrap(), "Bearer EAAG");
    }

    #[test]
    fn decode_and_errors() {
        let r: SendResponse = decode(
            200,
            br#"{"messaging_product":"whatsapp","contacts":[{"input":"US.1","user_id":"US.1"}],"messages":[{"id":"wamid.X","message_status":"accepted"}]}"#,
        )
        .unwrap();
        assert_eq!(r.message_id(), Some("wamid.X"));
        assert_eq!(r.contacts[0].user_id.as_deref(), Some("US.1"));

        let e = decode::<SendResponse>(
            400,
            br#"{"error":{"code":131047,"message":"Re-engagement"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.graph_error().unwrap().code, Some(131047));
        let e = decode::<SendResponse>(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(matches!(
            e,
            ApiError::Http {
                http_status: 502,
                ..
            }
        ));
        assert_eq!(e.class(), ErrorClass::Retry);
        let e = decode::<SendResponse>(200, b"not json").unwrap_err();
        assert!(matches!(e, ApiError::Decode { .. }));
        let e = decode::<SendResponse>(200, br#"{"error":{"code":190,"message":"expired"}}"#)
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Reauthorize);
        let j = e.to_json();
        assert_eq!(j["class"], "reauthorize");
        assert_eq!(j["code"], 190);

        let m: MediaInfo = decode(
            200,
            br#"{"url":"https://x","file_size":"303833","mime_type":"image/jpeg"}"#,
        )
        .unwrap();
        assert_eq!(m.file_size, Some(303_833));

        assert!(expect_success(200, br#"{"success":true}"#).is_ok());
        assert!(expect_success(200, br#"{"success":false}"#).is_err());
    }

    #[test]
    fn graph_error_messages_are_scrubbed() {
        let e = error_from(
            400,
            br#"{"error":{"code":100,"message":"bad token EAAGsecret","error_data":{"details":"client_secret=abc"}}}"#,
            Secrets::one("EAAGsecret"),
        );
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("EAAGsecret") && !text.contains("abc\""),
            "{text}"
        );
    }

    #[test]
    fn multipart_body_has_all_fields() {
        let (ct, body) = multipart_body(b"\x89PNG data", "image/png", "a.png");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("name=\"messaging_product\"\r\n\r\nwhatsapp\r\n"));
        assert!(text.contains("name=\"type\"\r\n\r\nimage/png\r\n"));
        assert!(
            text.contains("name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n")
        );
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }

    #[test]
    fn connection_refused_is_a_connect_error_that_was_not_delivered() {
        // port 9 (discard) on loopback is closed on this machine's test setup; if something
        // listens there the call fails differently but still as a transport or HTTP error
        let c = GraphClient::new(
            GraphConfig::new("http://127.0.0.1:9").with_timeout(Duration::from_millis(500)),
        );
        let e = c
            .send_message(
                "123",
                "EAAGtoken",
                &Recipient::parse("16505551234").unwrap(),
                &serde_json::json!({"type":"text","text":{"body":"hi"}}),
                None,
            )
            .unwrap_err();
        if let ApiError::Transport {
            kind,
            maybe_delivered,
            ..
        } = &e
        {
            assert_eq!(*kind, TransportKind::Connect, "{e}");
            assert!(!maybe_delivered);
        }
        assert!(!format!("{e} {e:?}").contains("EAAGtoken"));
    }
}
