//! The admin API under `/_sim/` (JSON in, JSON out). Not part of Meta's API: it is how tests,
//! the demo and the benchmarks set the scene and read what happened.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{FailNextRule, FaultSettings, WebhookSettings};
use crate::errors::GraphError;
use crate::graph;
use crate::server::{Reply, Req, Shared};
use crate::util;
use crate::webhooks::{self, Event, EventKind};

type AResult = Result<Reply, (u16, String)>;

fn ok(v: Value) -> AResult {
    Ok(Reply::json(200, &v))
}

fn bad(msg: impl Into<String>) -> (u16, String) {
    (400, msg.into())
}

fn not_found(msg: impl Into<String>) -> (u16, String) {
    (404, msg.into())
}

pub async fn handle(shared: &Arc<Shared>, req: &Req) -> Reply {
    match route(shared, req).await {
        Ok(r) => r,
        Err((status, msg)) => Reply::json(status, &json!({ "error": msg })),
    }
}

fn body(req: &Req) -> Result<Value, (u16, String)> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad("body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON body: {e}"))),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}

/// Overlays the keys of `patch` on `current` (serde round trip): partial updates.
fn merge<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Result<T, (u16, String)> {
    let mut base = serde_json::to_value(current).map_err(|e| bad(e.to_string()))?;
    if let (Value::Object(b), Value::Object(p)) = (&mut base, patch) {
        for (k, v) in p {
            if b.contains_key(k) {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(base).map_err(|e| bad(format!("invalid settings: {e}")))
}

async fn route(shared: &Arc<Shared>, req: &Req) -> AResult {
    let path = req.path.trim_start_matches("/_sim").trim_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let m = &req.method;
    match (m.as_str(), segs.as_slice()) {
        ("GET", [] | ["health"]) => ok(json!({"ok": true, "base_url": shared.base_url})),
        ("POST", ["signups"]) => signup(shared, &body(req)?),
        ("POST", ["tokens"]) => add_token(shared, &body(req)?),
        ("POST", ["tokens", token, "revoke"]) => {
            let token = util::percent_decode(token);
            shared.world().revoke(&token);
            ok(json!({"revoked": true}))
        }
        ("POST", ["numbers", id]) => update_number(shared, id, &body(req)?),
        ("POST", ["templates"]) => add_template(shared, &body(req)?),
        ("POST", ["media"]) => add_media(shared, &body(req)?),
        ("GET", ["faults"]) => ok(json!(shared.world().faults)),
        ("POST", ["faults"]) => set_faults(shared, &body(req)?),
        ("GET", ["fail_next"]) => ok(json!(shared.world().fail_next)),
        ("POST", ["fail_next"]) => fail_next(shared, &body(req)?),
        ("DELETE", ["fail_next"]) => {
            shared.world().fail_next.clear();
            ok(json!({"cleared": true}))
        }
        ("GET", ["limits"]) => ok(limits_json(shared)),
        ("POST", ["limits"]) => set_limits(shared, &body(req)?),
        ("POST", ["reset"]) => {
            shared.world().reset_counters();
            ok(json!({"reset": true}))
        }
        ("GET", ["stats"]) => {
            let detail = req.query("detail").is_none_or(|d| d != "0" && d != "false");
            let w = shared.world();
            ok(w.stats.to_json(detail, w.log.next_seq()))
        }
        ("GET", ["requests"]) => {
            let since = req.query("since").and_then(|v| v.parse().ok()).unwrap_or(0);
            let limit = req
                .query("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000usize);
            // `callback=ID`: only the requests of that message (biz_opaque_callback_data).
            let callback = req.query("callback");
            let w = shared.world();
            let recs: Vec<Value> = w
                .log
                .since(since, usize::MAX)
                .filter(|r| callback.is_none_or(|c| r.callback.as_deref() == Some(c)))
                .take(limit)
                .map(|r| r.to_json())
                .collect();
            ok(json!({"requests": recs, "next_seq": w.log.next_seq()}))
        }
        ("POST", ["inbound"]) => inbound(shared, &body(req)?),
        ("GET", ["webhook_config"]) => ok(json!(shared.world().webhooks)),
        ("POST", ["webhook_config"]) => webhook_config(shared, &body(req)?),
        ("POST", ["webhooks", "raw"]) => raw_webhook(shared, &body(req)?),
        ("GET", ["webhook_log"]) => {
            let since = req
                .query("since")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0u64);
            let limit = req
                .query("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000usize);
            let w = shared.world();
            let recs: Vec<Value> = w
                .webhook_log
                .iter()
                .filter(|r| r.seq > since)
                .take(limit)
                .map(|r| {
                    json!({
                        "seq": r.seq, "ts_us": r.ts_us, "url": r.url, "attempt": r.attempt,
                        "duplicate": r.duplicate, "events": r.events, "status": r.status,
                        "error": r.error,
                        "body": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
                    })
                })
                .collect();
            ok(json!({"deliveries": recs, "next_seq": w.webhook_log_seq}))
        }
        ("GET" | "POST", ["webhooks", "wait_idle"]) => {
            let ms = req
                .query("timeout_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5_000);
            wait_idle(shared, Duration::from_millis(ms)).await
        }
        ("POST", ["webhook_verify"]) => webhook_verify(shared, &body(req)?).await,
        ("GET", ["state"]) => ok(state(shared)),
        _ => Err(not_found(format!(
            "no admin endpoint {} /_sim/{path}",
            m.as_str()
        ))),
    }
}

fn signup(shared: &Arc<Shared>, b: &Value) -> AResult {
    let mut w = shared.world();
    if let Some(p) = s(b, "phone_number_id")
        && let (Some(n), Some(wid)) = (w.numbers.get(p), s(b, "waba_id"))
        && n.waba_id != wid
    {
        return Err(bad(format!(
            "phone number {p} belongs to WABA {}",
            n.waba_id
        )));
    }
    // An existing number implies its WABA.
    let waba_hint = s(b, "waba_id").map(str::to_string).or_else(|| {
        s(b, "phone_number_id")
            .and_then(|p| w.numbers.get(p))
            .map(|n| n.waba_id.clone())
    });
    let waba_id = w.ensure_waba(waba_hint, s(b, "business_name").map(str::to_string));
    let phone_id = w
        .add_number(
            &waba_id,
            s(b, "phone_number_id").map(str::to_string),
            s(b, "display_phone_number").map(str::to_string),
            s(b, "verified_name").map(str::to_string),
        )
        .map_err(bad)?;
    if let Some(r) = u(b, "rate_limit_per_sec")
        && let Some(n) = w.numbers.get_mut(&phone_id)
    {
        n.rate_override = Some(r.min(u64::from(u32::MAX)) as u32);
    }
    let ttl = b
        .get("code_ttl_secs")
        .and_then(Value::as_f64)
        .map(|t| Duration::from_secs_f64(t.max(0.0)));
    let code = w.issue_code(&waba_id, &phone_id, ttl);
    let ttl_secs = ttl.unwrap_or(w.code_ttl).as_secs_f64();
    let token = if b.get("token").and_then(Value::as_bool) == Some(true) {
        Some(w.add_token(None, vec![waba_id.clone()], "admin"))
    } else {
        None
    };
    let (display, verified) = w
        .numbers
        .get(&phone_id)
        .map(|n| (n.display_formatted(), n.verified_name.clone()))
        .unwrap_or_default();
    let digits = w
        .numbers
        .get(&phone_id)
        .map(|n| n.display_digits.clone())
        .unwrap_or_default();
    let mut out = json!({
        "code": code,
        "waba_id": waba_id,
        "phone_number_id": phone_id,
        "display_phone_number": display,
        "display_phone_number_digits": digits,
        "verified_name": verified,
        "code_expires_in_secs": ttl_secs,
        "app_id": w.app_id,
    });
    if let Some(t) = token {
        out["access_token"] = json!(t);
    }
    ok(out)
}

fn add_token(shared: &Arc<Shared>, b: &Value) -> AResult {
    let mut wabas: Vec<String> = b
        .get("waba_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(w) = s(b, "waba_id") {
        wabas.push(w.to_string());
    }
    if wabas.is_empty() {
        return Err(bad("waba_id (or waba_ids) is required"));
    }
    let mut w = shared.world();
    for id in &wabas {
        if !w.wabas.contains_key(id) {
            if b.get("create").and_then(Value::as_bool) == Some(true) {
                w.ensure_waba(Some(id.clone()), None);
            } else {
                return Err(not_found(format!("unknown WABA {id}")));
            }
        }
    }
    let token = w.add_token(s(b, "token").map(str::to_string), wabas.clone(), "admin");
    ok(json!({"access_token": token, "waba_ids": wabas}))
}

fn update_number(shared: &Arc<Shared>, id: &str, b: &Value) -> AResult {
    let mut w = shared.world();
    let Some(n) = w.numbers.get_mut(id) else {
        return Err(not_found(format!("unknown phone number {id}")));
    };
    if let Some(v) = b.get("rate_limit_per_sec") {
        n.rate_override = v.as_u64().map(|r| r.min(u64::from(u32::MAX)) as u32);
        n.reset_limiters();
    }
    let set = |field: &mut String, key: &str| {
        if let Some(v) = s(b, key) {
            *field = v.to_string();
        }
    };
    set(&mut n.quality_rating, "quality_rating");
    set(&mut n.messaging_limit_tier, "messaging_limit_tier");
    set(&mut n.status, "status");
    set(&mut n.name_status, "name_status");
    set(&mut n.code_verification_status, "code_verification_status");
    set(&mut n.verified_name, "verified_name");
    if let Some(v) = b.get("throughput_level") {
        n.throughput_level = v.as_str().map(str::to_string);
    }
    if let Some(d) = s(b, "display_phone_number") {
        n.display_digits =
            util::normalize_phone(d).ok_or_else(|| bad(format!("{d:?} is not a phone number")))?;
    }
    let default_rate = w.rate_limit_per_number;
    let out = w.numbers.get(id).map(|n| n.to_json(default_rate));
    ok(out.unwrap_or(Value::Null))
}

fn add_template(shared: &Arc<Shared>, b: &Value) -> AResult {
    let waba = s(b, "waba_id").ok_or_else(|| bad("waba_id is required"))?;
    let t = shared.world().add_template(waba, b).map_err(bad)?;
    ok(t)
}

fn add_media(shared: &Arc<Shared>, b: &Value) -> AResult {
    let data = match (s(b, "data_base64"), s(b, "text")) {
        (Some(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("bad base64: {e}")))?,
        (None, Some(t)) => t.as_bytes().to_vec(),
        (None, None) => b"simulated media".to_vec(),
    };
    let mime = s(b, "mime_type").unwrap_or("application/octet-stream");
    let id = shared.world().add_media(
        s(b, "id").map(str::to_string),
        mime,
        Bytes::from(data),
        s(b, "waba_id").map(str::to_string),
    );
    ok(json!({"id": id}))
}

fn set_faults(shared: &Arc<Shared>, b: &Value) -> AResult {
    let mut w = shared.world();
    if b.get("clear").and_then(Value::as_bool) == Some(true) {
        w.faults = FaultSettings::default();
        w.fail_next.clear();
        w.revoked.clear();
        for t in w.tokens.values_mut() {
            t.revoked = false;
        }
    }
    let next: FaultSettings = merge(&w.faults, b)?;
    for r in [next.error_ratio, next.timeout_ratio] {
        if !(0.0..=1.0).contains(&r) {
            return Err(bad("ratios must be within 0..1"));
        }
    }
    for t in &next.revoked_tokens {
        w.revoked.insert(t.clone());
    }
    w.faults = next;
    ok(json!(w.faults))
}

fn fail_next(shared: &Arc<Shared>, b: &Value) -> AResult {
    let endpoint = s(b, "endpoint").map(str::to_string);
    let path_contains = s(b, "path_contains").map(str::to_string);
    if endpoint.is_none() && path_contains.is_none() {
        return Err(bad("endpoint or path_contains is required"));
    }
    let code = u(b, "code").unwrap_or(1) as u32;
    let mut error = GraphError::from_code(code);
    if let Some(st) = u(b, "http_status") {
        error.http_status = st as u16;
    }
    if let Some(sc) = u(b, "subcode") {
        error.subcode = Some(sc as u32);
    }
    if let Some(msg) = s(b, "message") {
        error.message = msg.to_string();
    }
    if let Some(t) = s(b, "type") {
        error.kind = t.to_string();
    }
    if let Some(d) = s(b, "details") {
        error.details = Some(d.to_string());
    }
    let rule = FailNextRule {
        endpoint,
        path_contains,
        method: s(b, "method").map(str::to_string),
        count: u(b, "count").unwrap_or(1).max(1) as u32,
        error,
    };
    let mut w = shared.world();
    w.fail_next.push(rule);
    ok(json!({"queued": w.fail_next.len()}))
}

fn limits_json(shared: &Arc<Shared>) -> Value {
    let w = shared.world();
    json!({
        "rate_limit_per_number": w.rate_limit_per_number,
        "pair_rate_limit": w.pair_rate_limit,
        "pair_interval_ms": w.pair_interval.as_millis() as u64,
        "pair_burst": w.pair_burst,
        "strict_templates": w.strict_templates,
        "code_ttl_secs": w.code_ttl.as_secs_f64(),
    })
}

fn set_limits(shared: &Arc<Shared>, b: &Value) -> AResult {
    {
        let mut w = shared.world();
        match b.get("rate_limit_per_number") {
            None => {}
            Some(Value::Null) => w.rate_limit_per_number = None,
            Some(Value::String(s)) if s == "off" => w.rate_limit_per_number = None,
            Some(v) => {
                let r = v.as_u64().filter(|r| *r > 0).ok_or_else(|| {
                    bad("rate_limit_per_number: positive integer, null or \"off\"")
                })?;
                w.rate_limit_per_number = Some(r.min(u64::from(u32::MAX)) as u32);
            }
        }
        if let Some(v) = b.get("pair_rate_limit").and_then(Value::as_bool) {
            w.pair_rate_limit = v;
        }
        if let Some(v) = u(b, "pair_interval_ms") {
            w.pair_interval = Duration::from_millis(v.max(1));
        }
        if let Some(v) = u(b, "pair_burst") {
            w.pair_burst = v.clamp(1, u64::from(u32::MAX)) as u32;
        }
        if let Some(v) = b.get("strict_templates").and_then(Value::as_bool) {
            w.strict_templates = v;
        }
        if let Some(v) = b.get("code_ttl_secs").and_then(Value::as_f64) {
            w.code_ttl = Duration::from_secs_f64(v.max(0.0));
        }
        for n in w.numbers.values_mut() {
            n.reset_limiters();
        }
    }
    ok(limits_json(shared))
}

const MEDIA_TYPES: [(&str, &str, &str); 6] = [
    ("image", "image/jpeg", "1000000000000001"),
    ("sticker", "image/webp", "1000000000000001"),
    ("audio", "audio/ogg", "1000000000000002"),
    ("voice", "audio/ogg", "1000000000000002"),
    ("document", "application/pdf", "1000000000000003"),
    ("video", "video/mp4", "1000000000000004"),
];

fn inbound(shared: &Arc<Shared>, b: &Value) -> AResult {
    let phone = s(b, "phone_number_id").ok_or_else(|| bad("phone_number_id is required"))?;
    let from = match s(b, "from") {
        Some(f) => Some(
            util::normalize_phone(f)
                .ok_or_else(|| bad(format!("from {f:?} is not a phone number")))?,
        ),
        None => None,
    };
    let mut user_id = s(b, "user_id").map(str::to_string);
    if let Some(uid) = &user_id
        && !util::is_bsuid(uid)
    {
        return Err(bad(format!(
            "user_id {uid:?} is not a business-scoped user id"
        )));
    }
    if from.is_none() && user_id.is_none() {
        return Err(bad("from (wa_id) or user_id (BSUID) is required"));
    }
    let name = s(b, "name").unwrap_or("Simulated Customer").to_string();
    let mut w = shared.world();
    let Some(num) = w.numbers.get(phone) else {
        return Err(not_found(format!("unknown phone number {phone}")));
    };
    let waba_id = num.waba_id.clone();
    let display = num.display_digits.clone();
    if user_id.is_none()
        && let Some(f) = &from
        && w.webhooks.include_user_ids
    {
        user_id = Some(
            w.bsuid_of
                .get(f)
                .cloned()
                .unwrap_or_else(|| util::derived_bsuid(f)),
        );
    }
    if let (Some(f), Some(uid)) = (&from, &user_id) {
        w.learn_contact(f, uid);
    }
    let wamid = util::new_wamid(from.as_deref().or(user_id.as_deref()).unwrap_or(""));
    let mut message = b
        .get("message")
        .cloned()
        .or_else(|| s(b, "text").map(|t| json!({"type": "text", "text": {"body": t}})));
    // Media messages without an id get a fresh media object the business can download.
    let mut media_id = None;
    if let Some(Value::Object(msg)) = &mut message
        && let Some(ty) = msg.get("type").and_then(Value::as_str).map(str::to_string)
        && let Some((_, mime, seeded)) = MEDIA_TYPES.iter().find(|(t, _, _)| *t == ty)
    {
        let obj = msg.entry(ty.clone()).or_insert_with(|| json!({}));
        if let Value::Object(o) = obj {
            let id = match o.get("id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => {
                    // `media_size`: a file of that many bytes (a deterministic pattern) instead
                    // of the seeded one; `media_corrupt`: the sha256 Meta reports does not
                    // match the bytes it serves.
                    let data = match u(b, "media_size") {
                        Some(n) => Bytes::from(util::pattern_bytes(n)),
                        None => w
                            .media
                            .get(*seeded)
                            .map(|m| m.data.clone())
                            .unwrap_or_else(|| Bytes::from_static(b"simulated media")),
                    };
                    let id = w.add_media(None, mime, data, Some(waba_id.clone()));
                    if b.get("media_corrupt").and_then(Value::as_bool) == Some(true)
                        && let Some(m) = w.media.get_mut(&id)
                    {
                        m.sha256 = crate::util::sha256_hex(b"not these bytes");
                    }
                    id
                }
            };
            if let Some(m) = w.media.get(&id) {
                o.entry("mime_type").or_insert_with(|| json!(m.mime_type));
                o.entry("sha256").or_insert_with(|| json!(m.sha256));
            }
            o.insert("id".into(), json!(id));
            media_id = Some(id);
        }
    }
    let (contact, msg) = graph::inbound_message(
        from.as_deref(),
        user_id.as_deref(),
        &name,
        &wamid,
        message.as_ref(),
    )
    .map_err(bad)?;
    let delay = Duration::from_millis(u(b, "delay_ms").unwrap_or(0));
    w.stats.webhooks.messages_scheduled += 1;
    w.stats.webhooks.pending_events += 1;
    let has_url = w.webhooks.url.is_some()
        || w.wabas
            .get(&waba_id)
            .is_some_and(|x| x.override_url.is_some());
    drop(w);
    shared.schedule(vec![Event {
        due: tokio::time::Instant::now() + delay,
        kind: EventKind::Message {
            waba_id: waba_id.clone(),
            phone_number_id: phone.to_string(),
            display_digits: display,
            contact,
            message: msg,
        },
    }]);
    let mut out = json!({"wamid": wamid, "waba_id": waba_id, "webhook_configured": has_url});
    if let Some(uid) = user_id {
        out["user_id"] = json!(uid);
    }
    if let Some(f) = from {
        out["wa_id"] = json!(f);
    }
    if let Some(m) = media_id {
        out["media_id"] = json!(m);
    }
    ok(out)
}

fn webhook_config(shared: &Arc<Shared>, b: &Value) -> AResult {
    let mut w = shared.world();
    let next: WebhookSettings = merge(&w.webhooks, b)?;
    if let Some(url) = &next.url {
        webhooks::parse_http_url(url).map_err(bad)?;
    }
    if !(0.0..=1.0).contains(&next.duplicate_ratio) {
        return Err(bad("duplicate_ratio must be within 0..1"));
    }
    for st in &next.statuses {
        if !matches!(
            st.as_str(),
            "sent" | "delivered" | "read" | "failed" | "deleted" | "played"
        ) {
            return Err(bad(format!("unknown status {st:?}")));
        }
    }
    w.webhooks = next;
    ok(json!(w.webhooks))
}

fn raw_webhook(shared: &Arc<Shared>, b: &Value) -> AResult {
    let payload = b
        .get("payload")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| bad("payload (object) is required"))?;
    let waba_id = s(b, "waba_id").map(str::to_string).or_else(|| {
        payload
            .pointer("/entry/0/id")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let delay = Duration::from_millis(u(b, "delay_ms").unwrap_or(0));
    {
        let mut w = shared.world();
        w.stats.webhooks.raw_scheduled += 1;
        w.stats.webhooks.pending_events += 1;
    }
    shared.schedule(vec![Event {
        due: tokio::time::Instant::now() + delay,
        kind: EventKind::Raw { waba_id, payload },
    }]);
    ok(json!({"scheduled": true}))
}

async fn wait_idle(shared: &Arc<Shared>, timeout: Duration) -> AResult {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (idle, stats) = {
            let w = shared.world();
            let wh = &w.stats.webhooks;
            (
                wh.pending_events == 0 && wh.in_flight == 0,
                w.stats.to_json(false, 0)["webhooks"].clone(),
            )
        };
        if idle || tokio::time::Instant::now() >= deadline {
            return ok(json!({"idle": idle, "webhooks": stats}));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Performs Meta's GET verification handshake against the webhook URL.
async fn webhook_verify(shared: &Arc<Shared>, b: &Value) -> AResult {
    let url = match s(b, "url") {
        Some(u) => u.to_string(),
        None => shared
            .world()
            .webhooks
            .url
            .clone()
            .ok_or_else(|| bad("no url given and no webhook URL configured"))?,
    };
    let token = s(b, "verify_token").ok_or_else(|| bad("verify_token is required"))?;
    let challenge = s(b, "challenge")
        .map(str::to_string)
        .unwrap_or_else(|| util::rand_u64().to_string());
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = format!(
        "{url}{sep}hub.mode=subscribe&hub.challenge={}&hub.verify_token={}",
        util::percent_encode(&challenge),
        util::percent_encode(token)
    );
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        shared.client.request(Method::GET, &full, &[], Bytes::new()),
    )
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    match res {
        Ok((status, body)) => {
            let body = String::from_utf8_lossy(&body).to_string();
            ok(json!({
                "ok": status == 200 && body.trim() == challenge,
                "status": status,
                "body": body,
                "challenge": challenge,
            }))
        }
        Err(e) => ok(json!({"ok": false, "error": e, "challenge": challenge})),
    }
}

fn state(shared: &Arc<Shared>) -> Value {
    let w = shared.world();
    let mut wabas: Vec<Value> = w
        .wabas
        .values()
        .map(|wb| {
            json!({
                "id": wb.id,
                "name": wb.name,
                "phone_numbers": wb.phone_ids.iter().filter_map(|p| w.numbers.get(p)).map(|n| {
                    let mut v = n.to_json(w.rate_limit_per_number);
                    v["registered"] = json!(n.registered);
                    v["display_phone_number_digits"] = json!(n.display_digits);
                    v["rate_limit_per_sec"] = json!(n.effective_rate(w.rate_limit_per_number));
                    v
                }).collect::<Vec<_>>(),
                "subscribed_apps": wb.subscribed_apps,
                "override_callback_uri": wb.override_url,
                "templates": wb.templates.len(),
            })
        })
        .collect();
    wabas.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json!({
        "app_id": w.app_id,
        "wabas": wabas,
        "tokens": {
            "seed": w.tokens.values().filter(|t| t.source == "seed").count(),
            "admin": w.tokens.values().filter(|t| t.source == "admin").count(),
            "code_exchange": w.tokens.values().filter(|t| t.source == "code_exchange").count(),
        },
        "codes": w.codes.values().map(|c| json!({
            "waba_id": c.waba_id,
            "phone_number_id": c.phone_number_id,
            "used": c.used,
            "expired": c.expires <= std::time::Instant::now(),
        })).collect::<Vec<_>>(),
        "revoked_tokens": w.revoked.len(),
        "media": w.media.len(),
    })
}
