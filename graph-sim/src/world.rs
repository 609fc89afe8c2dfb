//! The simulated Meta: businesses (WABAs), phone numbers, tokens, signup codes, media,
//! templates, limits and faults. Guarded by one mutex in `Shared`; every operation here is
//! short and never awaits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::{
    FailNextRule, FaultSettings, RecipientFault, Seed, SimConfig, WebhookSettings,
};
use crate::errors::GraphError;
use crate::stats::{Endpoint, RequestLog, Stats};
use crate::util;

/// Token bucket (rate per second, burst capacity).
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn take(&mut self, rate_per_sec: f64, burst: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * rate_per_sec).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub language: String,
    pub status: String,
    pub category: String,
    pub components: Value,
}

impl Template {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
            "components": self.components,
            "parameter_format": "POSITIONAL",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Waba {
    pub id: String,
    pub name: String,
    pub business_id: String,
    pub phone_ids: Vec<String>,
    pub subscribed_apps: Vec<String>,
    /// Per-WABA webhook URL (`override_callback_uri` on `subscribed_apps`).
    pub override_url: Option<String>,
    pub templates: Vec<Template>,
}

#[derive(Debug, Clone)]
pub struct Number {
    pub id: String,
    pub waba_id: String,
    /// Digits only, as in webhook `metadata.display_phone_number`.
    pub display_digits: String,
    pub verified_name: String,
    pub quality_rating: String,
    pub messaging_limit_tier: String,
    pub name_status: String,
    pub code_verification_status: String,
    pub status: String,
    pub registered: bool,
    pub pin: Option<String>,
    /// Throughput override (msg/s).
    pub rate_override: Option<u32>,
    pub throughput_level: Option<String>,
    bucket: Option<Bucket>,
    pairs: HashMap<String, Bucket>,
}

impl Number {
    /// `+1 650-555-1234` style, as `GET /{phone_number_id}` shows it.
    pub fn display_formatted(&self) -> String {
        let d = &self.display_digits;
        if d.len() == 11 && d.starts_with('1') {
            format!("+1 {}-{}-{}", &d[1..4], &d[4..7], &d[7..])
        } else {
            format!("+{d}")
        }
    }

    /// Forgets limiter state (after a limit change or a reset).
    pub fn reset_limiters(&mut self) {
        self.bucket = None;
        self.pairs.clear();
    }

    pub fn effective_rate(&self, default: Option<u32>) -> Option<u32> {
        self.rate_override.or(default)
    }

    pub fn to_json(&self, default_rate: Option<u32>) -> Value {
        let level = self.throughput_level.clone().unwrap_or_else(|| {
            match self.effective_rate(default_rate) {
                Some(r) if r >= 1000 => "HIGH".into(),
                _ => "STANDARD".into(),
            }
        });
        json!({
            "id": self.id,
            "display_phone_number": self.display_formatted(),
            "verified_name": self.verified_name,
            "quality_rating": self.quality_rating,
            "throughput": {"level": level},
            "messaging_limit_tier": self.messaging_limit_tier,
            "code_verification_status": self.code_verification_status,
            "name_status": self.name_status,
            "platform_type": "CLOUD_API",
            "status": self.status,
            "is_official_business_account": false,
            "account_mode": "LIVE",
        })
    }
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub wabas: Vec<String>,
    pub source: &'static str,
    pub issued_at: u64,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct SignupCode {
    pub waba_id: String,
    pub phone_number_id: String,
    pub expires: Instant,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct Media {
    pub mime_type: String,
    pub sha256: String,
    pub data: Bytes,
    /// WABA whose tokens may read it; `None` = any valid token (pre-seeded inbound media).
    pub owner_waba: Option<String>,
}

/// A recorded webhook delivery attempt (`GET /_sim/webhook_log`).
#[derive(Debug, Clone)]
pub struct WebhookRecord {
    pub seq: u64,
    pub ts_us: u64,
    pub url: String,
    pub attempt: u32,
    pub duplicate: bool,
    pub events: usize,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body: std::sync::Arc<str>,
}

/// Result of a send accepted by the world (under the lock).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub wamid: String,
    pub waba_id: String,
    pub display_digits: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub async_failure: Option<GraphError>,
}

/// Who a message is addressed to.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipient {
    WaId(String),
    UserId(String),
}

impl Recipient {
    pub fn key(&self) -> &str {
        match self {
            Recipient::WaId(s) | Recipient::UserId(s) => s,
        }
    }
}

/// What to do with a request before it reaches its handler.
#[derive(Debug)]
pub enum FaultDecision {
    None,
    Fail(GraphError, &'static str),
    Hold {
        hold: Option<Duration>,
        processes: bool,
    },
}

pub struct World {
    pub app_id: String,
    pub app_secret: String,
    pub app_name: String,
    pub rate_limit_per_number: Option<u32>,
    pub pair_rate_limit: bool,
    pub pair_interval: Duration,
    pub pair_burst: u32,
    pub code_ttl: Duration,
    pub media_url_ttl: Duration,
    pub strict_templates: bool,
    pub faults: FaultSettings,
    pub revoked: HashSet<String>,
    pub fail_next: Vec<FailNextRule>,
    pub webhooks: WebhookSettings,
    pub wabas: HashMap<String, Waba>,
    pub numbers: HashMap<String, Number>,
    pub tokens: HashMap<String, TokenInfo>,
    pub codes: HashMap<String, SignupCode>,
    pub media: HashMap<String, Media>,
    pub media_urls: HashMap<String, (String, Instant)>,
    /// wa_id → BSUID learnt from inbound messages (and the reverse).
    pub bsuid_of: HashMap<String, String>,
    pub wa_id_of: HashMap<String, String>,
    pub stats: Stats,
    pub log: RequestLog,
    pub webhook_log: VecDeque<WebhookRecord>,
    pub webhook_log_seq: u64,
}

pub const WEBHOOK_LOG_CAP: usize = 2_000;

/// Media ids present in every simulator, for inbound media messages.
pub const SEEDED_MEDIA: [(&str, &str, &[u8]); 4] = [
    (
        "1000000000000001",
        "image/jpeg",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00simulated jpeg\xff\xd9",
    ),
    (
        "1000000000000002",
        "audio/ogg",
        b"OggS\x00simulated voice note",
    ),
    (
        "1000000000000003",
        "application/pdf",
        b"%PDF-1.4\n% simulated document\n%%EOF\n",
    ),
    (
        "1000000000000004",
        "video/mp4",
        b"\x00\x00\x00\x18ftypmp42simulated video",
    ),
];

impl World {
    pub fn new(cfg: &SimConfig) -> Result<World, String> {
        let mut w = World {
            app_id: cfg.app_id.clone(),
            app_secret: cfg.app_secret.clone(),
            app_name: cfg.app_name.clone(),
            rate_limit_per_number: cfg.rate_limit_per_number,
            pair_rate_limit: cfg.pair_rate_limit,
            pair_interval: cfg.pair_interval,
            pair_burst: cfg.pair_burst,
            code_ttl: cfg.code_ttl,
            media_url_ttl: cfg.media_url_ttl,
            strict_templates: cfg.strict_templates,
            revoked: cfg.faults.revoked_tokens.iter().cloned().collect(),
            faults: cfg.faults.clone(),
            fail_next: Vec::new(),
            webhooks: cfg.webhooks.clone(),
            wabas: HashMap::new(),
            numbers: HashMap::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            media: HashMap::new(),
            media_urls: HashMap::new(),
            bsuid_of: HashMap::new(),
            wa_id_of: HashMap::new(),
            stats: Stats::default(),
            log: RequestLog::new(cfg.max_log_records),
            webhook_log: VecDeque::new(),
            webhook_log_seq: 1,
        };
        for (id, mime, data) in SEEDED_MEDIA {
            w.add_media(Some(id.to_string()), mime, Bytes::from_static(data), None);
        }
        w.apply_seed(&cfg.seed)?;
        Ok(w)
    }

    fn apply_seed(&mut self, seed: &Seed) -> Result<(), String> {
        for b in &seed.businesses {
            let waba_id = self.ensure_waba(b.waba_id.clone(), b.name.clone());
            for n in &b.phone_numbers {
                let id = self.add_number(
                    &waba_id,
                    n.id.clone(),
                    n.display_phone_number.clone(),
                    n.verified_name.clone(),
                )?;
                if let Some(r) = n.rate_limit_per_sec
                    && let Some(num) = self.numbers.get_mut(&id)
                {
                    num.rate_override = Some(r);
                }
            }
            for t in &b.tokens {
                self.add_token(Some(t.clone()), vec![waba_id.clone()], "seed");
            }
            for t in &b.templates {
                self.add_template(&waba_id, t)?;
            }
        }
        for m in &seed.media {
            let data = match (&m.text, &m.data_base64) {
                (_, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("seed media: bad base64: {e}"))?,
                (Some(t), None) => t.clone().into_bytes(),
                (None, None) => b"simulated media".to_vec(),
            };
            let mime = m.mime_type.as_deref().unwrap_or("application/octet-stream");
            self.add_media(m.id.clone(), mime, Bytes::from(data), None);
        }
        Ok(())
    }

    // ----- businesses -----

    pub fn ensure_waba(&mut self, id: Option<String>, name: Option<String>) -> String {
        let id = id.unwrap_or_else(|| self.fresh_id(15));
        if !self.wabas.contains_key(&id) {
            let name = name.unwrap_or_else(|| {
                format!("Simulated Business {}", &id[id.len().saturating_sub(4)..])
            });
            let templates = default_templates(&id);
            self.wabas.insert(
                id.clone(),
                Waba {
                    id: id.clone(),
                    name,
                    business_id: self.fresh_id(15),
                    phone_ids: Vec::new(),
                    subscribed_apps: Vec::new(),
                    override_url: None,
                    templates,
                },
            );
        }
        id
    }

    /// Adds a number to a WABA (or returns it if it already belongs there).
    pub fn add_number(
        &mut self,
        waba_id: &str,
        id: Option<String>,
        display: Option<String>,
        verified_name: Option<String>,
    ) -> Result<String, String> {
        if let Some(existing) = id.as_ref().and_then(|i| self.numbers.get(i)) {
            if existing.waba_id != waba_id {
                return Err(format!(
                    "phone number {} already belongs to WABA {}",
                    existing.id, existing.waba_id
                ));
            }
            return Ok(existing.id.clone());
        }
        let id = id.unwrap_or_else(|| self.fresh_id(15));
        let display_digits = match display {
            Some(d) => util::normalize_phone(&d)
                .ok_or_else(|| format!("display_phone_number {d:?} is not a phone number"))?,
            None => format!("1555{}", &util::rand_numeric_id(8)[1..]),
        };
        let verified_name = verified_name.unwrap_or_else(|| {
            self.wabas
                .get(waba_id)
                .map(|w| w.name.clone())
                .unwrap_or_else(|| "Simulated Business".into())
        });
        self.numbers.insert(
            id.clone(),
            Number {
                id: id.clone(),
                waba_id: waba_id.to_string(),
                display_digits,
                verified_name,
                quality_rating: "GREEN".into(),
                messaging_limit_tier: "TIER_1K".into(),
                name_status: "APPROVED".into(),
                code_verification_status: "VERIFIED".into(),
                status: "CONNECTED".into(),
                registered: false,
                pin: None,
                rate_override: None,
                throughput_level: None,
                bucket: None,
                pairs: HashMap::new(),
            },
        );
        if let Some(w) = self.wabas.get_mut(waba_id) {
            w.phone_ids.push(id.clone());
        }
        Ok(id)
    }

    pub fn add_template(&mut self, waba_id: &str, t: &Value) -> Result<Value, String> {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or("template needs a name")?
            .to_string();
        let tpl = Template {
            id: self.fresh_id(15),
            name,
            language: str_or(t, "language", "en_US"),
            status: str_or(t, "status", "APPROVED"),
            category: str_or(t, "category", "UTILITY"),
            components: t.get("components").cloned().unwrap_or_else(|| json!([])),
        };
        let out = tpl.to_json();
        let waba = self
            .wabas
            .get_mut(waba_id)
            .ok_or_else(|| format!("unknown WABA {waba_id}"))?;
        waba.templates
            .retain(|x| !(x.name == tpl.name && x.language == tpl.language));
        waba.templates.push(tpl);
        Ok(out)
    }

    /// A numeric id not used by any object.
    pub fn fresh_id(&self, digits: usize) -> String {
        loop {
            let id = util::rand_numeric_id(digits);
            if !self.wabas.contains_key(&id)
                && !self.numbers.contains_key(&id)
                && !self.media.contains_key(&id)
            {
                return id;
            }
        }
    }

    // ----- tokens and codes -----

    pub fn add_token(
        &mut self,
        token: Option<String>,
        wabas: Vec<String>,
        source: &'static str,
    ) -> String {
        let token = token.unwrap_or_else(|| format!("EAAG{}", util::rand_alnum(120)));
        let entry = self.tokens.entry(token.clone()).or_insert(TokenInfo {
            wabas: Vec::new(),
            source,
            issued_at: util::now_secs(),
            revoked: false,
        });
        for w in wabas {
            if !entry.wabas.contains(&w) {
                entry.wabas.push(w);
            }
        }
        token
    }

    pub fn issue_code(
        &mut self,
        waba_id: &str,
        phone_number_id: &str,
        ttl: Option<Duration>,
    ) -> String {
        let code = format!("AQ{}", util::rand_alnum(150));
        self.codes.insert(
            code.clone(),
            SignupCode {
                waba_id: waba_id.to_string(),
                phone_number_id: phone_number_id.to_string(),
                expires: Instant::now() + ttl.unwrap_or(self.code_ttl),
                used: false,
            },
        );
        code
    }

    /// `/oauth/access_token`: validates the app, then the code (single use, expiring).
    pub fn exchange_code(
        &mut self,
        client_id: Option<&str>,
        secret: Option<&str>,
        code: Option<&str>,
    ) -> Result<String, GraphError> {
        match client_id {
            None => {
                return Err(GraphError::new(400, 101, "Missing client_id parameter."));
            }
            Some(id) if id != self.app_id => {
                return Err(GraphError::new(
                    400,
                    101,
                    "Error validating application. Invalid application ID.",
                ));
            }
            Some(_) => {}
        }
        match secret {
            Some(s) if s == self.app_secret => {}
            _ => return Err(GraphError::new(400, 1, "Error validating client secret.")),
        }
        let code = code.ok_or_else(|| GraphError::new(400, 100, "Missing authorization code"))?;
        let now = Instant::now();
        let entry = self.codes.get_mut(code).ok_or_else(|| {
            GraphError::new(400, 100, "Invalid verification code format.").subcode(36008)
        })?;
        if entry.used {
            return Err(
                GraphError::new(400, 100, "This authorization code has been used.").subcode(36009),
            );
        }
        if now >= entry.expires {
            return Err(
                GraphError::new(400, 100, "This authorization code has expired.").subcode(36007),
            );
        }
        entry.used = true;
        let waba = entry.waba_id.clone();
        Ok(self.add_token(None, vec![waba], "code_exchange"))
    }

    /// The token's WABAs, or the 190 error for a missing/unknown/revoked token.
    pub fn token_wabas(&self, bearer: Option<&str>) -> Result<&[String], GraphError> {
        let token = bearer.ok_or_else(GraphError::token_missing)?;
        if self.revoked.contains(token) {
            return Err(GraphError::token_revoked());
        }
        match self.tokens.get(token) {
            Some(t) if t.revoked => Err(GraphError::token_revoked()),
            Some(t) => Ok(&t.wabas),
            None if self.is_app_token(token) => Ok(&[]),
            None => Err(GraphError::token_invalid()),
        }
    }

    pub fn is_app_token(&self, token: &str) -> bool {
        token
            .split_once('|')
            .is_some_and(|(id, secret)| id == self.app_id && secret == self.app_secret)
    }

    /// Checks the token may act on `waba_id`; `object_id` names the object in the error.
    pub fn authorize(
        &self,
        bearer: Option<&str>,
        waba_id: &str,
        method: &str,
        object_id: &str,
    ) -> Result<(), GraphError> {
        let wabas = self.token_wabas(bearer)?;
        if wabas.iter().any(|w| w == waba_id) {
            Ok(())
        } else {
            Err(GraphError::no_such_object(method, object_id))
        }
    }

    pub fn revoke(&mut self, token: &str) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.revoked = true;
        }
        self.revoked.insert(token.to_string());
    }

    // ----- media -----

    pub fn add_media(
        &mut self,
        id: Option<String>,
        mime: &str,
        data: Bytes,
        owner_waba: Option<String>,
    ) -> String {
        let id = id.unwrap_or_else(|| self.fresh_id(16));
        self.media.insert(
            id.clone(),
            Media {
                mime_type: mime.to_string(),
                sha256: util::sha256_hex(&data),
                data,
                owner_waba,
            },
        );
        id
    }

    pub fn media_visible(
        &self,
        bearer: Option<&str>,
        media_id: &str,
        method: &str,
    ) -> Result<&Media, GraphError> {
        let wabas = self.token_wabas(bearer)?;
        let m = self
            .media
            .get(media_id)
            .ok_or_else(|| GraphError::no_such_object(method, media_id))?;
        match &m.owner_waba {
            Some(owner) if !wabas.iter().any(|w| w == owner) => {
                Err(GraphError::no_such_object(method, media_id))
            }
            _ => Ok(m),
        }
    }

    /// A fresh, expiring download key for `media_id`.
    pub fn media_url_key(&mut self, media_id: &str) -> String {
        let now = Instant::now();
        self.media_urls.retain(|_, (_, exp)| *exp > now);
        let key = util::rand_alnum(32);
        self.media_urls.insert(
            key.clone(),
            (media_id.to_string(), now + self.media_url_ttl),
        );
        key
    }

    // ----- faults -----

    /// Consumes a matching `fail_next` rule, else rolls the fault dice.
    pub fn fault_decision(
        &mut self,
        endpoint: Endpoint,
        method: &str,
        path: &str,
    ) -> (FaultDecision, Duration) {
        if let Some(pos) = self.fail_next.iter().position(|r| {
            r.endpoint.as_deref().is_none_or(|e| endpoint.matches(e))
                && r.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        }) {
            let rule = &mut self.fail_next[pos];
            let err = rule.error.clone();
            rule.count = rule.count.saturating_sub(1);
            if rule.count == 0 {
                self.fail_next.remove(pos);
            }
            return (FaultDecision::Fail(err, "fail_next"), Duration::ZERO);
        }
        let f = &self.faults;
        if !f.endpoints.is_empty() && !f.endpoints.iter().any(|e| endpoint.matches(e)) {
            return (FaultDecision::None, Duration::ZERO);
        }
        let latency = if f.latency_max_ms > f.latency_ms {
            Duration::from_millis(util::rand_range(f.latency_ms, f.latency_max_ms))
        } else {
            Duration::from_millis(f.latency_ms)
        };
        if util::chance(f.error_ratio) {
            let err = match util::rand_u64() % 3 {
                0 => GraphError::unknown(),
                1 => GraphError::service_unavailable(),
                _ => GraphError::something_went_wrong(),
            };
            return (FaultDecision::Fail(err, "error"), latency);
        }
        if util::chance(f.timeout_ratio) {
            let hold = (f.timeout_ms > 0).then(|| Duration::from_millis(f.timeout_ms));
            return (
                FaultDecision::Hold {
                    hold,
                    processes: f.timeout_processes,
                },
                latency,
            );
        }
        (FaultDecision::None, latency)
    }

    pub fn recipient_fault(&self, r: &Recipient) -> Option<&RecipientFault> {
        if self.faults.failing_recipients.is_empty() {
            return None;
        }
        self.faults
            .failing_recipients
            .get(r.key())
            .or_else(|| match r {
                Recipient::WaId(w) => self
                    .bsuid_of
                    .get(w)
                    .and_then(|b| self.faults.failing_recipients.get(b)),
                Recipient::UserId(u) => self
                    .wa_id_of
                    .get(u)
                    .and_then(|w| self.faults.failing_recipients.get(w)),
            })
    }

    // ----- sending -----

    /// Rate limits, recipient faults and template checks for an authorised send; on success the
    /// message is accepted and gets its wamid.
    pub fn accept_send(
        &mut self,
        phone_id: &str,
        to: &Recipient,
        template: Option<(&str, &str)>,
    ) -> Result<Accepted, GraphError> {
        let now = Instant::now();
        let default_rate = self.rate_limit_per_number;
        let pair_on = self.pair_rate_limit;
        let pair_rate = 1.0 / self.pair_interval.as_secs_f64().max(1e-6);
        let pair_burst = f64::from(self.pair_burst.max(1));
        let strict = self.strict_templates;
        let fault = self.recipient_fault(to).cloned();
        let num = self
            .numbers
            .get_mut(phone_id)
            .ok_or_else(|| GraphError::no_such_object("POST", phone_id))?;
        let waba_id = num.waba_id.clone();
        if strict && let Some((name, lang)) = template {
            let ok = self.wabas.get(&waba_id).is_some_and(|w| {
                w.templates
                    .iter()
                    .any(|t| t.name == name && t.language == lang && t.status == "APPROVED")
            });
            if !ok {
                return Err(GraphError::from_code(132001));
            }
        }
        let num = self
            .numbers
            .get_mut(phone_id)
            .ok_or_else(|| GraphError::no_such_object("POST", phone_id))?;
        if let Some(rate) = num.effective_rate(default_rate) {
            let rate = f64::from(rate.max(1));
            let bucket = num.bucket.get_or_insert_with(|| Bucket::full(rate, now));
            if !bucket.take(rate, rate, now) {
                return Err(GraphError::throughput());
            }
        }
        if pair_on {
            let key = to.key();
            let ok = match num.pairs.get_mut(key) {
                Some(b) => b.take(pair_rate, pair_burst, now),
                None => {
                    let mut b = Bucket::full(pair_burst, now);
                    let ok = b.take(pair_rate, pair_burst, now);
                    num.pairs.insert(key.to_string(), b);
                    ok
                }
            };
            if !ok {
                return Err(GraphError::pair_rate());
            }
        }
        let display_digits = num.display_digits.clone();
        let mut async_failure = None;
        if let Some(f) = fault {
            let err = GraphError::from_code(f.code);
            match f.mode {
                crate::config::FailMode::Sync => return Err(err),
                crate::config::FailMode::Async => async_failure = Some(err),
            }
        }
        let (wa_id, user_id) = match to {
            Recipient::WaId(w) => (Some(w.clone()), self.bsuid_of.get(w).cloned()),
            Recipient::UserId(u) => (self.wa_id_of.get(u).cloned(), Some(u.clone())),
        };
        let wamid = util::new_wamid(to.key());
        Ok(Accepted {
            wamid,
            waba_id,
            display_digits,
            wa_id,
            user_id,
            async_failure,
        })
    }

    /// Clears counters, logs and limiter state (not businesses, tokens or faults).
    pub fn reset_counters(&mut self) {
        let pending = self.stats.webhooks.pending_events;
        let in_flight = self.stats.webhooks.in_flight;
        self.stats = Stats::default();
        self.stats.webhooks.pending_events = pending;
        self.stats.webhooks.in_flight = in_flight;
        self.log.clear();
        self.webhook_log.clear();
        for n in self.numbers.values_mut() {
            n.reset_limiters();
        }
    }

    pub fn push_webhook_record(&mut self, mut r: WebhookRecord) {
        r.seq = self.webhook_log_seq;
        self.webhook_log_seq += 1;
        if self.webhook_log.len() >= WEBHOOK_LOG_CAP {
            self.webhook_log.pop_front();
        }
        self.webhook_log.push_back(r);
    }

    /// Remembers a wa_id ↔ BSUID pair (from an inbound message).
    pub fn learn_contact(&mut self, wa_id: &str, user_id: &str) {
        self.bsuid_of.insert(wa_id.to_string(), user_id.to_string());
        self.wa_id_of.insert(user_id.to_string(), wa_id.to_string());
    }
}

fn str_or(v: &Value, key: &str, default: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

fn default_templates(waba_id: &str) -> Vec<Template> {
    let id = |n: u64| format!("{}{n:03}", &waba_id[..waba_id.len().min(12)]);
    vec![
        Template {
            id: id(1),
            name: "hello_world".into(),
            language: "en_US".into(),
            status: "APPROVED".into(),
            category: "UTILITY".into(),
            components: json!([
                {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                {"type": "BODY", "text": "Welcome and congratulations!! This message demonstrates your ability to send a WhatsApp message notification from the Cloud API, hosted by Meta."},
                {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"}
            ]),
        },
        Template {
            id: id(2),
            name: "order_update".into(),
            language: "en".into(),
            status: "APPROVED".into(),
            category: "UTILITY".into(),
            components: json!([
                {"type": "BODY", "text": "Hi {{1}}, your order {{2}} has shipped.",
                 "example": {"body_text": [["Ana", "#1234"]]}}
            ]),
        },
        Template {
            id: id(3),
            name: "spring_sale".into(),
            language: "en".into(),
            status: "APPROVED".into(),
            category: "MARKETING".into(),
            components: json!([
                {"type": "BODY", "text": "Our spring sale starts today: {{1}} off everything.",
                 "example": {"body_text": [["20%"]]}}
            ]),
        },
        Template {
            id: id(4),
            name: "verification_code".into(),
            language: "en".into(),
            status: "APPROVED".into(),
            category: "AUTHENTICATION".into(),
            components: json!([
                {"type": "BODY", "add_security_recommendation": true},
                {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}]}
            ]),
        },
        Template {
            id: id(5),
            name: "rejected_promo".into(),
            language: "en".into(),
            status: "REJECTED".into(),
            category: "MARKETING".into(),
            components: json!([{"type": "BODY", "text": "Buy now!!!"}]),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2.0, t0);
        assert!(b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0));
        assert!(!b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn code_exchange_is_single_use_and_checks_app() {
        let mut w = World::new(&SimConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let waba = w.ensure_waba(None, None);
        let phone = w.add_number(&waba, None, None, None).unwrap_or_default();
        let code = w.issue_code(&waba, &phone, None);
        let app = w.app_id.clone();
        let bad = w.exchange_code(Some("999"), Some("sim-app-secret"), Some(&code));
        assert_eq!(bad.map_err(|e| e.code), Err(101));
        let bad = w.exchange_code(Some(&app), Some("nope"), Some(&code));
        assert_eq!(bad.map_err(|e| e.code), Err(1));
        let tok = w.exchange_code(Some(&app), Some("sim-app-secret"), Some(&code));
        assert!(tok.as_ref().is_ok_and(|t| t.starts_with("EAAG")));
        let again = w.exchange_code(Some(&app), Some("sim-app-secret"), Some(&code));
        assert_eq!(
            again.map_err(|e| (e.code, e.subcode)),
            Err((100, Some(36009)))
        );
        let tok = tok.unwrap_or_default();
        assert!(w.authorize(Some(&tok), &waba, "POST", &phone).is_ok());
        w.revoke(&tok);
        assert_eq!(
            w.authorize(Some(&tok), &waba, "POST", &phone)
                .map_err(|e| e.code),
            Err(190)
        );
    }

    #[test]
    fn foreign_token_cannot_see_waba() {
        let mut w = World::new(&SimConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let a = w.ensure_waba(None, None);
        let b = w.ensure_waba(None, None);
        let tok = w.add_token(None, vec![a.clone()], "admin");
        let err = w.authorize(Some(&tok), &b, "POST", "x").err();
        assert_eq!(err.map(|e| (e.code, e.subcode)), Some((100, Some(33))));
        assert_eq!(
            w.authorize(None, &a, "POST", "x")
                .err()
                .map(|e| e.http_status),
            Some(401)
        );
    }
}
