//! Counters and the in-memory request log (compact records, bounded).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Map, Value, json};

/// Graph endpoints, as named in stats, the request log, `fail_next` and `faults.endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Send,
    MarkRead,
    MediaGet,
    MediaUpload,
    MediaDelete,
    MediaDownload,
    OauthAccessToken,
    DebugToken,
    SubscribedApps,
    Register,
    Deregister,
    PhoneNumber,
    PhoneNumbers,
    MessageTemplates,
    Waba,
    Unknown,
}

impl Endpoint {
    pub const ALL: [Endpoint; 16] = [
        Endpoint::Send,
        Endpoint::MarkRead,
        Endpoint::MediaGet,
        Endpoint::MediaUpload,
        Endpoint::MediaDelete,
        Endpoint::MediaDownload,
        Endpoint::OauthAccessToken,
        Endpoint::DebugToken,
        Endpoint::SubscribedApps,
        Endpoint::Register,
        Endpoint::Deregister,
        Endpoint::PhoneNumber,
        Endpoint::PhoneNumbers,
        Endpoint::MessageTemplates,
        Endpoint::Waba,
        Endpoint::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Send => "send",
            Endpoint::MarkRead => "mark_read",
            Endpoint::MediaGet => "media_get",
            Endpoint::MediaUpload => "media_upload",
            Endpoint::MediaDelete => "media_delete",
            Endpoint::MediaDownload => "media_download",
            Endpoint::OauthAccessToken => "oauth_access_token",
            Endpoint::DebugToken => "debug_token",
            Endpoint::SubscribedApps => "subscribed_apps",
            Endpoint::Register => "register",
            Endpoint::Deregister => "deregister",
            Endpoint::PhoneNumber => "phone_number",
            Endpoint::PhoneNumbers => "phone_numbers",
            Endpoint::MessageTemplates => "message_templates",
            Endpoint::Waba => "waba",
            Endpoint::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `messages` matches both uses of `POST /{phone}/messages`.
    pub fn matches(self, name: &str) -> bool {
        name == self.name()
            || (name == "messages" && matches!(self, Endpoint::Send | Endpoint::MarkRead))
    }
}

/// What a handler tells the logger about one request.
#[derive(Debug, Default, Clone)]
pub struct LogInfo {
    pub phone_number_id: Option<String>,
    pub recipient: Option<String>,
    pub callback: Option<String>,
    pub wamid: Option<String>,
    pub error_code: Option<u32>,
    /// Set by the fault layer: `latency`, `error`, `timeout`, `fail_next`.
    pub fault: Option<&'static str>,
}

/// One request-log record.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub seq: u64,
    pub ts_us: u64,
    pub method: &'static str,
    pub endpoint: Endpoint,
    pub path: Box<str>,
    pub status: u16,
    pub duration_us: u32,
    pub phone_number_id: Option<Box<str>>,
    pub recipient: Option<Box<str>>,
    pub callback: Option<Box<str>>,
    pub wamid: Option<Box<str>>,
    pub error_code: Option<u32>,
    pub fault: Option<&'static str>,
}

impl RequestRecord {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("seq".into(), json!(self.seq));
        m.insert("ts_us".into(), json!(self.ts_us));
        m.insert("method".into(), json!(self.method));
        m.insert("endpoint".into(), json!(self.endpoint.name()));
        m.insert("path".into(), json!(&*self.path));
        m.insert("status".into(), json!(self.status));
        m.insert("duration_us".into(), json!(self.duration_us));
        let opt = |v: &Option<Box<str>>| v.as_deref().map_or(Value::Null, |s| json!(s));
        m.insert("phone_number_id".into(), opt(&self.phone_number_id));
        m.insert("recipient".into(), opt(&self.recipient));
        m.insert("biz_opaque_callback_data".into(), opt(&self.callback));
        m.insert("wamid".into(), opt(&self.wamid));
        m.insert("error_code".into(), json!(self.error_code));
        m.insert("fault".into(), json!(self.fault));
        Value::Object(m)
    }
}

/// Webhook delivery counters.
#[derive(Debug, Default, Clone)]
pub struct WebhookStats {
    pub statuses_scheduled: u64,
    pub messages_scheduled: u64,
    pub raw_scheduled: u64,
    /// Events waiting for their due time (not yet in a delivery).
    pub pending_events: u64,
    /// Distinct deliveries (POST bodies) built, duplicates excluded.
    pub deliveries: u64,
    pub duplicates: u64,
    /// Deliveries (incl. duplicates) not yet finished.
    pub in_flight: u64,
    pub attempts: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    pub gave_up: u64,
    /// Events dropped because no webhook URL was configured when they fell due.
    pub dropped_no_url: u64,
}

/// All counters. `POST /_sim/reset` clears them.
#[derive(Debug, Default)]
pub struct Stats {
    pub total_requests: u64,
    pub per_endpoint: [u64; 16],
    pub sends_accepted: u64,
    pub sends_rejected: u64,
    pub errors_by_code: BTreeMap<u32, u64>,
    pub faults_injected: BTreeMap<&'static str, u64>,
    pub sends_per_recipient: HashMap<String, u64>,
    pub sends_per_callback: HashMap<String, u64>,
    pub attempts_per_callback: HashMap<String, u64>,
    pub webhooks: WebhookStats,
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

impl Stats {
    pub fn record(&mut self, endpoint: Endpoint, status: u16, info: &LogInfo) {
        self.total_requests += 1;
        self.per_endpoint[endpoint.index()] += 1;
        if let Some(code) = info.error_code {
            *self.errors_by_code.entry(code).or_insert(0) += 1;
        }
        if let Some(f) = info.fault {
            *self.faults_injected.entry(f).or_insert(0) += 1;
        }
        if endpoint == Endpoint::Send {
            let ok = status == 200 && info.wamid.is_some();
            if let Some(cb) = &info.callback {
                bump(&mut self.attempts_per_callback, cb);
                if ok {
                    bump(&mut self.sends_per_callback, cb);
                }
            }
            if ok {
                self.sends_accepted += 1;
                if let Some(r) = &info.recipient {
                    bump(&mut self.sends_per_recipient, r);
                }
            } else {
                self.sends_rejected += 1;
            }
        }
    }

    pub fn to_json(&self, detail: bool, log_next_seq: u64) -> Value {
        let mut per_endpoint = Map::new();
        for e in Endpoint::ALL {
            let n = self.per_endpoint[e.index()];
            if n > 0 {
                per_endpoint.insert(e.name().into(), json!(n));
            }
        }
        let codes: Map<String, Value> = self
            .errors_by_code
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let w = &self.webhooks;
        let mut out = json!({
            "total_requests": self.total_requests,
            "per_endpoint": per_endpoint,
            "sends": {
                "accepted": self.sends_accepted,
                "rejected": self.sends_rejected,
                "distinct_recipients": self.sends_per_recipient.len(),
                "distinct_callbacks": self.sends_per_callback.len(),
            },
            "errors_by_code": codes,
            "faults_injected": self.faults_injected,
            "webhooks": {
                "statuses_scheduled": w.statuses_scheduled,
                "messages_scheduled": w.messages_scheduled,
                "raw_scheduled": w.raw_scheduled,
                "pending_events": w.pending_events,
                "deliveries": w.deliveries,
                "duplicates": w.duplicates,
                "in_flight": w.in_flight,
                "attempts": w.attempts,
                "succeeded": w.succeeded,
                "failed_attempts": w.failed_attempts,
                "gave_up": w.gave_up,
                "dropped_no_url": w.dropped_no_url,
            },
            "log_next_seq": log_next_seq,
        });
        if detail {
            out["sends_per_recipient"] = json!(self.sends_per_recipient);
            out["sends_per_callback"] = json!(self.sends_per_callback);
            out["attempts_per_callback"] = json!(self.attempts_per_callback);
        }
        out
    }
}

/// Bounded request log; `seq` keeps growing so `?since=N` works across drops.
#[derive(Debug)]
pub struct RequestLog {
    records: VecDeque<RequestRecord>,
    cap: usize,
    next_seq: u64,
}

impl RequestLog {
    pub fn new(cap: usize) -> Self {
        RequestLog {
            records: VecDeque::with_capacity(cap.min(16_384)),
            cap: cap.max(1),
            next_seq: 1,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn push(&mut self, mut r: RequestRecord) {
        r.seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() >= self.cap {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Records with `seq > since`, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> impl Iterator<Item = &RequestRecord> {
        let start = self.records.partition_point(|r| r.seq <= since);
        self.records.range(start..).take(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RequestRecord {
        RequestRecord {
            seq: 0,
            ts_us: 0,
            method: "POST",
            endpoint: Endpoint::Send,
            path: "/v23.0/1/messages".into(),
            status: 200,
            duration_us: 0,
            phone_number_id: None,
            recipient: None,
            callback: None,
            wamid: None,
            error_code: None,
            fault: None,
        }
    }

    #[test]
    fn log_is_bounded_and_sequenced() {
        let mut log = RequestLog::new(3);
        for _ in 0..5 {
            log.push(rec());
        }
        let seqs: Vec<u64> = log.since(0, 100).map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        let seqs: Vec<u64> = log.since(4, 100).map(|r| r.seq).collect();
        assert_eq!(seqs, vec![5]);
        assert_eq!(log.next_seq(), 6);
    }

    #[test]
    fn stats_count_callbacks_once_per_accepted_send() {
        let mut s = Stats::default();
        let ok = LogInfo {
            recipient: Some("1555".into()),
            callback: Some("m1".into()),
            wamid: Some("wamid.x".into()),
            ..LogInfo::default()
        };
        let bad = LogInfo {
            callback: Some("m1".into()),
            error_code: Some(130429),
            ..LogInfo::default()
        };
        s.record(Endpoint::Send, 400, &bad);
        s.record(Endpoint::Send, 200, &ok);
        assert_eq!(s.sends_per_callback.get("m1"), Some(&1));
        assert_eq!(s.attempts_per_callback.get("m1"), Some(&2));
        assert_eq!(s.sends_accepted, 1);
        assert_eq!(s.sends_rejected, 1);
        assert_eq!(s.errors_by_code.get(&130429), Some(&1));
    }
}
