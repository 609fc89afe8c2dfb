//! Webhooks as Meta sends them: status updates for accepted messages, inbound customer
//! messages and raw events, each POSTed to the configured URL with `X-Hub-Signature-256`.
//!
//! Flow: handlers schedule [`Event`]s (with a due time) → the scheduler task pops due events,
//! optionally shuffles them, groups them per (WABA, number, kind) into deliveries of at most
//! `batch_max` → each delivery is POSTed by its own task under a concurrency limit, retried on
//! non-2xx with exponential backoff, maybe duplicated.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::errors::GraphError;
use crate::server::Shared;
use crate::util;
use crate::world::WebhookRecord;

/// Facts about one accepted outbound message, shared by its status events.
#[derive(Debug)]
pub struct MsgMeta {
    pub waba_id: String,
    pub phone_number_id: String,
    pub display_digits: String,
    pub wamid: String,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    pub callback: Option<String>,
    /// Pricing category (`service`, `utility`, `marketing`, `authentication`).
    pub category: String,
}

#[derive(Debug)]
pub enum EventKind {
    Status {
        meta: Arc<MsgMeta>,
        status: String,
        error: Option<GraphError>,
    },
    Message {
        waba_id: String,
        phone_number_id: String,
        display_digits: String,
        contact: Value,
        message: Value,
    },
    /// A complete payload (`{"object":...,"entry":[...]}`), delivered as is.
    Raw {
        waba_id: Option<String>,
        payload: Value,
    },
}

#[derive(Debug)]
pub struct Event {
    pub due: Instant,
    pub kind: EventKind,
}

struct Queued {
    due: Instant,
    seq: u64,
    ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Reversed: BinaryHeap is a max-heap, we want the earliest due first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.due.cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// Status events for an accepted message, per the current settings (`failed` only when the
/// recipient is configured to fail asynchronously). Caller holds the world lock.
pub fn status_events(
    settings: &crate::config::WebhookSettings,
    meta: Arc<MsgMeta>,
    failure: Option<GraphError>,
) -> Vec<Event> {
    let now = Instant::now();
    let step = Duration::from_millis(settings.status_delay_ms);
    let jitter = |i: u32| {
        let base = step * i;
        if settings.reorder && settings.reorder_window_ms > 0 {
            base + Duration::from_millis(util::rand_range(0, settings.reorder_window_ms))
        } else {
            base
        }
    };
    if let Some(err) = failure {
        return vec![Event {
            due: now + jitter(1),
            kind: EventKind::Status {
                meta,
                status: "failed".into(),
                error: Some(err),
            },
        }];
    }
    settings
        .statuses
        .iter()
        .enumerate()
        .map(|(i, s)| Event {
            due: now + jitter(i as u32 + 1),
            kind: EventKind::Status {
                meta: meta.clone(),
                status: s.clone(),
                error: None,
            },
        })
        .collect()
}

fn status_json(
    meta: &MsgMeta,
    status: &str,
    error: Option<&GraphError>,
    include_user_ids: bool,
) -> Value {
    let mut s = json!({
        "id": meta.wamid,
        "status": status,
        "timestamp": util::now_secs().to_string(),
    });
    if let Some(r) = &meta.recipient_id {
        s["recipient_id"] = json!(r);
    }
    let user_id = meta.recipient_user_id.clone().or_else(|| {
        include_user_ids
            .then(|| meta.recipient_id.as_deref().map(util::derived_bsuid))
            .flatten()
    });
    if let Some(u) = user_id {
        s["recipient_user_id"] = json!(u);
    }
    if let Some(cb) = &meta.callback {
        s["biz_opaque_callback_data"] = json!(cb);
    }
    if let Some(err) = error {
        s["errors"] = json!([err.webhook_error()]);
        return s;
    }
    let counterpart = meta
        .recipient_id
        .as_deref()
        .or(meta.recipient_user_id.as_deref())
        .unwrap_or("");
    let service = meta.category == "service";
    let mut conversation = json!({
        "id": util::derived_hex_id(&[&meta.phone_number_id, counterpart, &meta.category]),
        "origin": {"type": meta.category},
    });
    if status == "sent" {
        conversation["expiration_timestamp"] = json!((util::now_secs() + 86_400).to_string());
    }
    s["conversation"] = conversation;
    s["pricing"] = json!({
        "billable": !service,
        "pricing_model": "PMP",
        "category": meta.category,
        "type": if service { "free_customer_service" } else { "regular" },
    });
    s
}

fn envelope(waba_id: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": waba_id,
            "changes": [{"value": value, "field": "messages"}],
        }],
    })
}

fn metadata(display: &str, phone_id: &str) -> Value {
    json!({"display_phone_number": display, "phone_number_id": phone_id})
}

/// Builds the body of one delivery from events of one group.
fn build_payload(events: &[Event], include_user_ids: bool) -> Option<(Option<String>, Value)> {
    let first = events.first()?;
    match &first.kind {
        EventKind::Raw { waba_id, payload } => Some((waba_id.clone(), payload.clone())),
        EventKind::Status { meta, .. } => {
            let statuses: Vec<Value> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::Status {
                        meta,
                        status,
                        error,
                    } => Some(status_json(meta, status, error.as_ref(), include_user_ids)),
                    _ => None,
                })
                .collect();
            let value = json!({
                "messaging_product": "whatsapp",
                "metadata": metadata(&meta.display_digits, &meta.phone_number_id),
                "statuses": statuses,
            });
            Some((Some(meta.waba_id.clone()), envelope(&meta.waba_id, value)))
        }
        EventKind::Message {
            waba_id,
            phone_number_id,
            display_digits,
            ..
        } => {
            let mut contacts = Vec::new();
            let mut messages = Vec::new();
            for e in events {
                if let EventKind::Message {
                    contact, message, ..
                } = &e.kind
                {
                    if !contacts.contains(contact) {
                        contacts.push(contact.clone());
                    }
                    messages.push(message.clone());
                }
            }
            let value = json!({
                "messaging_product": "whatsapp",
                "metadata": metadata(display_digits, phone_number_id),
                "contacts": contacts,
                "messages": messages,
            });
            Some((Some(waba_id.clone()), envelope(waba_id, value)))
        }
    }
}

/// Group key: events sharing it may travel in one delivery.
fn group_key(e: &Event) -> Option<(&str, &str, u8)> {
    match &e.kind {
        EventKind::Status { meta, .. } => Some((&meta.waba_id, &meta.phone_number_id, 0)),
        EventKind::Message {
            waba_id,
            phone_number_id,
            ..
        } => Some((waba_id, phone_number_id, 1)),
        EventKind::Raw { .. } => None,
    }
}

/// The scheduler task: owns the timer heap until the channel closes.
pub async fn run_scheduler(shared: Arc<Shared>, mut rx: UnboundedReceiver<Event>) {
    let mut heap: BinaryHeap<Queued> = BinaryHeap::new();
    let mut seq: u64 = 0;
    loop {
        let next_due = heap.peek().map(|q| q.due);
        tokio::select! {
            got = rx.recv() => match got {
                Some(ev) => {
                    seq += 1;
                    heap.push(Queued { due: ev.due, seq, ev });
                }
                None => return,
            },
            _ = sleep_until_opt(next_due) => {}
        }
        while let Ok(ev) = rx.try_recv() {
            seq += 1;
            heap.push(Queued {
                due: ev.due,
                seq,
                ev,
            });
        }
        let now = Instant::now();
        let mut ready = Vec::new();
        while heap.peek().is_some_and(|q| q.due <= now) {
            if let Some(q) = heap.pop() {
                ready.push(q.ev);
            }
        }
        if !ready.is_empty() {
            dispatch(&shared, ready);
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Target {
    url: String,
    secret: String,
}

fn dispatch(shared: &Arc<Shared>, mut ready: Vec<Event>) {
    let (settings, default_secret) = {
        let w = shared.world();
        (w.webhooks.clone(), w.app_secret.clone())
    };
    // The events stay counted as pending until each delivery is counted in flight (at the
    // end), so `wait_idle` never sees an instant where an event is in neither count.
    let ready_events = ready.len() as u64;
    if settings.reorder {
        util::shuffle(&mut ready);
    }
    // Group preserving first-appearance order.
    let mut groups: Vec<Vec<Event>> = Vec::new();
    for ev in ready {
        let key = group_key(&ev).map(|(a, b, c)| (a.to_string(), b.to_string(), c));
        let slot = key.as_ref().and_then(|k| {
            groups.iter().position(|g| {
                g.len() < settings.batch_max.max(1)
                    && g.first()
                        .and_then(group_key)
                        .is_some_and(|(a, b, c)| (a, b, c) == (k.0.as_str(), k.1.as_str(), k.2))
            })
        });
        match slot {
            Some(i) => groups[i].push(ev),
            None => groups.push(vec![ev]),
        }
    }
    let secret = settings.app_secret.clone().unwrap_or(default_secret);
    for g in groups {
        let Some((waba, payload)) = build_payload(&g, settings.include_user_ids) else {
            continue;
        };
        let url = {
            let w = shared.world();
            waba.as_ref()
                .and_then(|id| w.wabas.get(id))
                .and_then(|wb| wb.override_url.clone())
                .or_else(|| settings.url.clone())
        };
        let Some(url) = url else {
            shared.world().stats.webhooks.dropped_no_url += g.len() as u64;
            continue;
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(b) => Bytes::from(b),
            Err(_) => continue,
        };
        let target = Arc::new(Target {
            url,
            secret: secret.clone(),
        });
        let dup = util::chance(settings.duplicate_ratio);
        {
            let mut w = shared.world();
            w.stats.webhooks.deliveries += 1;
            w.stats.webhooks.in_flight += 1 + u64::from(dup);
            if dup {
                w.stats.webhooks.duplicates += 1;
            }
        }
        let events = g.len();
        spawn_delivery(
            shared,
            target.clone(),
            body.clone(),
            events,
            false,
            Duration::ZERO,
            &settings,
        );
        if dup {
            let later = Duration::from_millis(util::rand_range(0, 200));
            spawn_delivery(shared, target, body, events, true, later, &settings);
        }
    }
    let mut w = shared.world();
    w.stats.webhooks.pending_events = w.stats.webhooks.pending_events.saturating_sub(ready_events);
}

fn spawn_delivery(
    shared: &Arc<Shared>,
    target: Arc<Target>,
    body: Bytes,
    events: usize,
    duplicate: bool,
    delay: Duration,
    settings: &crate::config::WebhookSettings,
) {
    let shared = shared.clone();
    let retries = settings.retries;
    let backoff = Duration::from_millis(settings.retry_backoff_ms.max(1));
    let timeout = Duration::from_millis(settings.timeout_ms.max(1));
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _permit = shared.delivery_slots.clone().acquire_owned().await;
        let signature = util::hub_signature(&target.secret, &body);
        let logged_body: Arc<str> = Arc::from(String::from_utf8_lossy(&body).as_ref());
        let mut wait = backoff;
        let mut delivered = false;
        for attempt in 1..=retries + 1 {
            let headers = [
                ("content-type", "application/json"),
                ("x-hub-signature-256", signature.as_str()),
                ("user-agent", "facebookexternalua"),
            ];
            let res = tokio::time::timeout(
                timeout,
                shared
                    .client
                    .request(Method::POST, &target.url, &headers, body.clone()),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            let (status, error) = match &res {
                Ok((s, _)) => (Some(*s), None),
                Err(e) => (None, Some(e.clone())),
            };
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            {
                let mut w = shared.world();
                w.stats.webhooks.attempts += 1;
                if ok {
                    w.stats.webhooks.succeeded += 1;
                } else {
                    w.stats.webhooks.failed_attempts += 1;
                }
                w.push_webhook_record(WebhookRecord {
                    seq: 0,
                    ts_us: util::now_us(),
                    url: target.url.clone(),
                    attempt,
                    duplicate,
                    events,
                    status,
                    error,
                    body: logged_body.clone(),
                });
            }
            if ok {
                delivered = true;
                break;
            }
            if attempt <= retries {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        let mut w = shared.world();
        w.stats.webhooks.in_flight = w.stats.webhooks.in_flight.saturating_sub(1);
        if !delivered {
            w.stats.webhooks.gave_up += 1;
        }
    });
}

/// `http://host:port/path?query` split for a plain HTTP/1.1 request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUrl {
    pub authority: String,
    pub path_and_query: String,
}

pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// webhook URLs are supported, got {url:?}"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(HttpUrl {
        authority,
        path_and_query: path,
    })
}

/// Minimal keep-alive HTTP/1.1 client for webhook deliveries (plain HTTP, loopback).
#[derive(Default)]
pub struct HttpClient {
    pool: std::sync::Mutex<Vec<(String, SendRequest<Full<Bytes>>)>>,
}

impl HttpClient {
    fn take(&self, authority: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.retain(|(_, s)| !s.is_closed());
        let i = pool
            .iter()
            .position(|(a, s)| a == authority && s.is_ready())?;
        Some(pool.swap_remove(i).1)
    }

    fn put(&self, authority: &str, s: SendRequest<Full<Bytes>>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 64 {
            pool.push((authority.to_string(), s));
        }
    }

    async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One request; returns status and body. Reuses pooled connections; a stale pooled
    /// connection is retried once on a fresh one.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let u = parse_http_url(url)?;
        for fresh in [false, true] {
            let mut sender = match (fresh, self.take(&u.authority)) {
                (false, Some(s)) => s,
                (false, None) => continue,
                (true, _) => Self::connect(&u.authority).await?,
            };
            let mut req = Request::builder()
                .method(method.clone())
                .uri(u.path_and_query.as_str())
                .header("host", u.authority.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| format!("request: {e}"))?;
            if sender.ready().await.is_err() {
                if fresh {
                    return Err("connection closed".into());
                }
                continue;
            }
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .map_err(|e| format!("reading response: {e}"))?;
                    self.put(&u.authority, sender);
                    return Ok((status, body));
                }
                Err(e) if !fresh => {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(format!("request failed: {e}")),
            }
        }
        Err("no connection".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = parse_http_url("http://127.0.0.1:8080/hook?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path_and_query, "/hook?x=1");
        let u = parse_http_url("http://localhost").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.authority, "localhost:80");
        assert_eq!(u.path_and_query, "/");
        let u = parse_http_url("http://h:1?a").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.path_and_query, "/?a");
        assert!(parse_http_url("https://x").is_err());
    }

    fn meta(cat: &str) -> Arc<MsgMeta> {
        Arc::new(MsgMeta {
            waba_id: "w1".into(),
            phone_number_id: "p1".into(),
            display_digits: "15550001111".into(),
            wamid: "wamid.A".into(),
            recipient_id: Some("16505551234".into()),
            recipient_user_id: None,
            callback: Some("cb-1".into()),
            category: cat.into(),
        })
    }

    #[test]
    fn status_payload_has_meta_shape() {
        let settings = crate::config::WebhookSettings::default();
        let evs = status_events(&settings, meta("service"), None);
        assert_eq!(evs.len(), 3);
        let (waba, p) = build_payload(&evs, true).unwrap_or((None, Value::Null));
        assert_eq!(waba.as_deref(), Some("w1"));
        assert_eq!(p["object"], "whatsapp_business_account");
        let v = &p["entry"][0]["changes"][0]["value"];
        assert_eq!(p["entry"][0]["changes"][0]["field"], "messages");
        assert_eq!(v["metadata"]["phone_number_id"], "p1");
        let s = &v["statuses"][0];
        assert_eq!(s["status"], "sent");
        assert_eq!(s["biz_opaque_callback_data"], "cb-1");
        assert_eq!(s["recipient_id"], "16505551234");
        assert!(
            s["recipient_user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("US."))
        );
        assert_eq!(s["pricing"]["pricing_model"], "PMP");
        assert_eq!(s["pricing"]["billable"], false);
        assert_eq!(s["conversation"]["origin"]["type"], "service");
        assert_eq!(v["statuses"][2]["status"], "read");
    }

    #[test]
    fn failed_status_carries_errors() {
        let settings = crate::config::WebhookSettings::default();
        let evs = status_events(
            &settings,
            meta("marketing"),
            Some(GraphError::reengagement()),
        );
        assert_eq!(evs.len(), 1);
        let (_, p) = build_payload(&evs, false).unwrap_or((None, Value::Null));
        let s = &p["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(s["status"], "failed");
        assert_eq!(s["errors"][0]["code"], 131047);
        assert!(s.get("pricing").is_none());
        assert!(s.get("recipient_user_id").is_none());
    }
}
