//! Graph API endpoints (WhatsApp Cloud API subset), any version prefix `/vNN.N/`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::errors::GraphError;
use crate::multipart;
use crate::server::{Reply, Req, Shared};
use crate::stats::{Endpoint, LogInfo};
use crate::util;
use crate::webhooks::{self, MsgMeta};
use crate::world::Recipient;

/// A request resolved to an endpoint, with the object id from the path and (for
/// `/messages`) the already-parsed JSON body.
pub struct Route {
    pub endpoint: Endpoint,
    pub id: Option<String>,
    pub json: Option<Result<Value, GraphError>>,
}

fn segments(path: &str) -> Vec<&str> {
    let mut segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(first) = segs.first()
        && is_version(first)
    {
        segs.remove(0);
    }
    segs
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.splitn(2, '.');
    let major = parts.next().unwrap_or("");
    let minor = parts.next().unwrap_or("0");
    !major.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves method + path to an endpoint.
pub fn classify(shared: &Shared, req: &Req) -> Route {
    let m = &req.method;
    if let Some(id) = req.path.strip_prefix("/_media/") {
        return Route {
            endpoint: Endpoint::MediaDownload,
            id: Some(id.trim_end_matches('/').to_string()),
            json: None,
        };
    }
    let segs = segments(&req.path);
    let id = segs.first().map(|s| s.to_string());
    let endpoint = match (m.as_str(), segs.as_slice()) {
        (_, ["oauth", "access_token"]) => Endpoint::OauthAccessToken,
        ("GET", ["debug_token"]) => Endpoint::DebugToken,
        ("POST", [_, "messages"]) => {
            let parsed = parse_json_body(req);
            let read = parsed
                .as_ref()
                .is_ok_and(|v| v.get("status").is_some() && v.get("type").is_none());
            return Route {
                endpoint: if read {
                    Endpoint::MarkRead
                } else {
                    Endpoint::Send
                },
                id,
                json: Some(parsed),
            };
        }
        ("POST", [_, "media"]) => Endpoint::MediaUpload,
        (_, [_, "subscribed_apps"]) => Endpoint::SubscribedApps,
        ("POST", [_, "register"]) => Endpoint::Register,
        ("POST", [_, "deregister"]) => Endpoint::Deregister,
        ("GET", [_, "phone_numbers"]) => Endpoint::PhoneNumbers,
        ("GET" | "POST", [_, "message_templates"]) => Endpoint::MessageTemplates,
        ("DELETE", [_]) => Endpoint::MediaDelete,
        ("GET", [oid]) => {
            let w = shared.world();
            if w.media.contains_key(*oid) {
                Endpoint::MediaGet
            } else if w.numbers.contains_key(*oid) {
                Endpoint::PhoneNumber
            } else if w.wabas.contains_key(*oid) {
                Endpoint::Waba
            } else {
                Endpoint::Unknown
            }
        }
        _ => Endpoint::Unknown,
    };
    Route {
        endpoint,
        id,
        json: None,
    }
}

fn parse_json_body(req: &Req) -> Result<Value, GraphError> {
    req.params()
}

/// What the log should know about a request that never reached its handler (injected
/// faults): number, recipient and callback data, so per-callback attempt counts stay right.
pub fn log_hint(route: &Route) -> LogInfo {
    let phone_number_id = match route.endpoint {
        Endpoint::Send
        | Endpoint::MarkRead
        | Endpoint::MediaUpload
        | Endpoint::Register
        | Endpoint::Deregister
        | Endpoint::PhoneNumber => route.id.clone(),
        _ => None,
    };
    let body = route.json.as_ref().and_then(|r| r.as_ref().ok());
    let get = |k: &str| body.and_then(|b| b.get(k)).and_then(Value::as_str);
    let recipient = get("to").or_else(|| get("recipient")).map(|r| {
        if util::is_bsuid(r) {
            r.to_string()
        } else {
            util::normalize_phone(r).unwrap_or_else(|| r.to_string())
        }
    });
    LogInfo {
        phone_number_id,
        recipient,
        callback: get("biz_opaque_callback_data").map(str::to_string),
        ..LogInfo::default()
    }
}

pub async fn dispatch(shared: &Arc<Shared>, req: &Req, route: &Route) -> Reply {
    let id = route.id.as_deref().unwrap_or("");
    let res = match route.endpoint {
        Endpoint::Send => send(shared, req, route, id),
        Endpoint::MarkRead => mark_read(shared, req, route, id),
        Endpoint::MediaGet => media_get(shared, req, id),
        Endpoint::MediaUpload => media_upload(shared, req, id),
        Endpoint::MediaDelete => media_delete(shared, req, id),
        Endpoint::MediaDownload => media_download(shared, req, id),
        Endpoint::OauthAccessToken => oauth_access_token(shared, req),
        Endpoint::DebugToken => debug_token(shared, req),
        Endpoint::SubscribedApps => subscribed_apps(shared, req, id),
        Endpoint::Register => register(shared, req, id, true),
        Endpoint::Deregister => register(shared, req, id, false),
        Endpoint::PhoneNumber => phone_number(shared, req, id),
        Endpoint::PhoneNumbers => phone_numbers(shared, req, id),
        Endpoint::MessageTemplates => message_templates(shared, req, id),
        Endpoint::Waba => waba(shared, req, id),
        Endpoint::Unknown => unknown(shared, req),
    };
    match res {
        Ok(r) => r,
        Err(f) => {
            let (e, info) = *f;
            Reply::error(&e).with(info)
        }
    }
}

/// A handler's failure: the Graph error and what to log (boxed: it is large).
type Failure = Box<(GraphError, LogInfo)>;
type HResult = Result<Reply, Failure>;

fn fail(e: GraphError, info: &LogInfo) -> Failure {
    Box::new((e, info.clone()))
}

fn plain(e: GraphError) -> Failure {
    Box::new((e, LogInfo::default()))
}

fn success() -> Reply {
    Reply::raw_json(200, br#"{"success":true}"#.to_vec())
}

fn str_param<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Keeps only the requested `fields` (plus `id`) of an object, as Graph does.
fn filter_fields(mut obj: Value, fields: Option<&str>) -> Value {
    let Some(fields) = fields.filter(|f| !f.trim().is_empty()) else {
        return obj;
    };
    let wanted: Vec<&str> = fields
        .split(',')
        .map(|f| f.trim().split(['{', '.']).next().unwrap_or(""))
        .collect();
    if let Value::Object(m) = &mut obj {
        m.retain(|k, _| k == "id" || wanted.contains(&k.as_str()));
    }
    obj
}

// ----- messages -----

/// A validated `/messages` send.
#[derive(Debug)]
pub struct SendRequest {
    pub recipient: Recipient,
    pub input: String,
    pub callback: Option<String>,
    pub template: Option<(String, String)>,
}

const MESSAGE_TYPES: [&str; 12] = [
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
    "order_details",
];

/// Validates the send envelope and the message object for its type.
pub fn validate_send(v: &Value) -> Result<SendRequest, GraphError> {
    fn bad(d: impl Into<String>) -> GraphError {
        GraphError::invalid_parameter(d)
    }
    match v.get("messaging_product") {
        None => return Err(bad("The parameter messaging_product is required.")),
        Some(Value::String(p)) if p == "whatsapp" => {}
        Some(_) => {
            return Err(bad(
                "Param messaging_product must be one of {WHATSAPP} - got an invalid value.",
            ));
        }
    }
    if let Some(rt) = v.get("recipient_type")
        && rt.as_str() != Some("individual")
    {
        return Err(bad(
            "Param recipient_type must be one of {INDIVIDUAL} - got an invalid value.",
        ));
    }
    let raw_to = match (v.get("to"), v.get("recipient")) {
        (Some(Value::String(t)), _) => t.as_str(),
        (None, Some(Value::String(r))) => r.as_str(),
        (None, None) => return Err(bad("The parameter to is required.")),
        _ => return Err(bad("Param to must be a string.")),
    };
    let recipient = if util::is_bsuid(raw_to) {
        Recipient::UserId(raw_to.to_string())
    } else {
        match util::normalize_phone(raw_to) {
            Some(w) => Recipient::WaId(w),
            None => {
                return Err(bad(format!(
                    "Param to {raw_to:?} is not a valid WhatsApp phone number or business-scoped user id."
                )));
            }
        }
    };
    let ty = match v.get("type") {
        None => "text",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(bad("Param type must be a string.")),
    };
    if !MESSAGE_TYPES.contains(&ty) {
        return Err(bad(format!(
            "Param type must be one of {{{}}} - got \"{ty}\".",
            MESSAGE_TYPES.join(", ").to_ascii_uppercase()
        )));
    }
    if ty == "contacts" {
        if v.get(ty)
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            return Err(bad("Param contacts must be a non-empty array."));
        }
    } else if !v.get(ty).is_some_and(Value::is_object) {
        return Err(bad(format!("The parameter {ty} is required.")));
    }
    let empty = Map::new();
    let obj = v.get(ty).and_then(Value::as_object).unwrap_or(&empty);
    let mut template = None;
    match ty {
        "text" => match obj.get("body").and_then(Value::as_str) {
            None => return Err(bad("The parameter text['body'] is required.")),
            Some("") => return Err(bad("Param text['body'] must not be empty.")),
            Some(b) if b.chars().count() > 4096 => {
                return Err(bad(
                    "Param text['body'] must be at most 4096 characters long.",
                ));
            }
            Some(_) => {}
        },
        "image" | "audio" | "video" | "document" | "sticker" => {
            let id = obj.get("id").and_then(Value::as_str);
            let link = obj.get("link").and_then(Value::as_str);
            match (id, link) {
                (None, None) => {
                    return Err(bad(format!("Param {ty} must contain either id or link.")));
                }
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "Param {ty} must contain either id or link, not both."
                    )));
                }
                (None, Some(l)) if !(l.starts_with("http://") || l.starts_with("https://")) => {
                    return Err(bad(format!("Param {ty}['link'] must be a valid URL.")));
                }
                _ => {}
            }
        }
        "location" => {
            let num = |k: &str| {
                obj.get(k).is_some_and(|x| {
                    x.is_number() || x.as_str().is_some_and(|s| s.parse::<f64>().is_ok())
                })
            };
            if !num("latitude") || !num("longitude") {
                return Err(bad(
                    "Param location requires numeric latitude and longitude.",
                ));
            }
        }
        "contacts" => {}
        "interactive" => {
            if obj.get("type").and_then(Value::as_str).is_none() {
                return Err(bad("The parameter interactive['type'] is required."));
            }
            if !obj.get("action").is_some_and(Value::is_object) {
                return Err(bad("The parameter interactive['action'] is required."));
            }
        }
        "reaction" => {
            if obj.get("message_id").and_then(Value::as_str).is_none() {
                return Err(bad("The parameter reaction['message_id'] is required."));
            }
            if obj.get("emoji").and_then(Value::as_str).is_none() {
                return Err(bad("The parameter reaction['emoji'] is required."));
            }
        }
        "template" => {
            let Some(name) = obj.get("name").and_then(Value::as_str) else {
                return Err(bad("The parameter template['name'] is required."));
            };
            let Some(lang) = obj
                .get("language")
                .and_then(|l| l.get("code"))
                .and_then(Value::as_str)
            else {
                return Err(bad(
                    "The parameter template['language']['code'] is required.",
                ));
            };
            if obj.get("components").is_some_and(|c| !c.is_array()) {
                return Err(bad("Param template['components'] must be an array."));
            }
            template = Some((name.to_string(), lang.to_string()));
        }
        _ => {}
    }
    let callback = match v.get("biz_opaque_callback_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 512 => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(bad(
                "Param biz_opaque_callback_data must be at most 512 characters long.",
            ));
        }
        Some(_) => return Err(bad("Param biz_opaque_callback_data must be a string.")),
    };
    Ok(SendRequest {
        recipient,
        input: raw_to.to_string(),
        callback,
        template,
    })
}

fn send(shared: &Arc<Shared>, req: &Req, route: &Route, phone: &str) -> HResult {
    let mut info = LogInfo {
        phone_number_id: Some(phone.to_string()),
        ..LogInfo::default()
    };
    // Auth first (as Graph does), then the body.
    {
        let w = shared.world();
        let waba = match w.numbers.get(phone) {
            Some(n) => n.waba_id.as_str(),
            None => {
                w.token_wabas(req.bearer.as_deref())
                    .map_err(|e| fail(e, &info))?;
                return Err(fail(GraphError::no_such_object("POST", phone), &info));
            }
        };
        w.authorize(req.bearer.as_deref(), waba, "POST", phone)
            .map_err(|e| fail(e, &info))?;
    }
    let body = match &route.json {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(fail(e.clone(), &info)),
        None => return Err(fail(GraphError::invalid_parameter("Missing body."), &info)),
    };
    if let Some(cb) = body.get("biz_opaque_callback_data").and_then(Value::as_str) {
        info.callback = Some(cb.to_string());
    }
    let sr = match validate_send(body) {
        Ok(s) => s,
        Err(e) => {
            info.recipient = body
                .get("to")
                .or_else(|| body.get("recipient"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Err(fail(e, &info));
        }
    };
    info.recipient = Some(sr.recipient.key().to_string());
    let tpl = sr.template.as_ref().map(|(n, l)| (n.as_str(), l.as_str()));
    let (acc, events) = {
        let mut w = shared.world();
        let acc = w
            .accept_send(phone, &sr.recipient, tpl)
            .map_err(|e| fail(e, &info))?;
        let wants_webhooks = w.webhooks.url.is_some()
            || w.wabas
                .get(&acc.waba_id)
                .is_some_and(|x| x.override_url.is_some());
        let events = if wants_webhooks {
            let category = match &sr.template {
                Some((name, lang)) => w
                    .wabas
                    .get(&acc.waba_id)
                    .and_then(|x| {
                        x.templates
                            .iter()
                            .find(|t| &t.name == name && &t.language == lang)
                            .or_else(|| x.templates.iter().find(|t| &t.name == name))
                    })
                    .map(|t| t.category.to_ascii_lowercase())
                    .unwrap_or_else(|| "utility".into()),
                None => "service".into(),
            };
            let meta = Arc::new(MsgMeta {
                waba_id: acc.waba_id.clone(),
                phone_number_id: phone.to_string(),
                display_digits: acc.display_digits.clone(),
                wamid: acc.wamid.clone(),
                recipient_id: acc.wa_id.clone(),
                recipient_user_id: acc.user_id.clone(),
                callback: sr.callback.clone(),
                category,
            });
            let evs = webhooks::status_events(&w.webhooks, meta, acc.async_failure.clone());
            w.stats.webhooks.statuses_scheduled += evs.len() as u64;
            w.stats.webhooks.pending_events += evs.len() as u64;
            evs
        } else {
            Vec::new()
        };
        (acc, events)
    };
    shared.schedule(events);
    let mut out = Vec::with_capacity(160 + acc.wamid.len());
    out.extend_from_slice(br#"{"messaging_product":"whatsapp","contacts":[{"input":"#);
    util::push_json_str(&mut out, &sr.input);
    if let Some(w) = &acc.wa_id {
        out.extend_from_slice(br#","wa_id":"#);
        util::push_json_str(&mut out, w);
    }
    if let Recipient::UserId(u) = &sr.recipient {
        out.extend_from_slice(br#","user_id":"#);
        util::push_json_str(&mut out, u);
    }
    out.extend_from_slice(br#"}],"messages":[{"id":"#);
    util::push_json_str(&mut out, &acc.wamid);
    if sr.template.is_some() {
        out.extend_from_slice(br#","message_status":"accepted""#);
    }
    out.extend_from_slice(b"}]}");
    info.wamid = Some(acc.wamid);
    Ok(Reply::raw_json(200, out).with(info))
}

fn mark_read(shared: &Arc<Shared>, req: &Req, route: &Route, phone: &str) -> HResult {
    let info = LogInfo {
        phone_number_id: Some(phone.to_string()),
        ..LogInfo::default()
    };
    {
        let w = shared.world();
        let Some(n) = w.numbers.get(phone) else {
            w.token_wabas(req.bearer.as_deref())
                .map_err(|e| fail(e, &info))?;
            return Err(fail(GraphError::no_such_object("POST", phone), &info));
        };
        w.authorize(req.bearer.as_deref(), &n.waba_id, "POST", phone)
            .map_err(|e| fail(e, &info))?;
    }
    let body = match &route.json {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(fail(e.clone(), &info)),
        None => return Err(fail(GraphError::invalid_parameter("Missing body."), &info)),
    };
    let bad = |d: &str| fail(GraphError::invalid_parameter(d), &info);
    if str_param(body, "messaging_product") != Some("whatsapp") {
        return Err(bad(
            "Param messaging_product must be one of {WHATSAPP} - got an invalid value.",
        ));
    }
    if str_param(body, "status") != Some("read") {
        return Err(bad(
            "Param status must be one of {READ} - got an invalid value.",
        ));
    }
    match str_param(body, "message_id") {
        Some(m) if m.starts_with("wamid.") => {}
        Some(_) => return Err(bad("Param message_id is not a valid WhatsApp message id.")),
        None => return Err(bad("The parameter message_id is required.")),
    }
    if let Some(t) = body.get("typing_indicator")
        && t.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(bad("Param typing_indicator['type'] must be one of {TEXT}."));
    }
    Ok(success().with(info))
}

// ----- media -----

fn media_get(shared: &Arc<Shared>, req: &Req, id: &str) -> HResult {
    let mut w = shared.world();
    let (mime, sha, size) = {
        let m = w
            .media_visible(req.bearer.as_deref(), id, "GET")
            .map_err(plain)?;
        (m.mime_type.clone(), m.sha256.clone(), m.data.len())
    };
    let key = w.media_url_key(id);
    drop(w);
    let url = format!("{}/_media/{id}?hash={key}", shared.base_url);
    Ok(Reply::json(
        200,
        &json!({
            "messaging_product": "whatsapp",
            "url": url,
            "mime_type": mime,
            "sha256": sha,
            "file_size": size,
            "id": id,
        }),
    ))
}

fn media_download(shared: &Arc<Shared>, req: &Req, id: &str) -> HResult {
    let w = shared.world();
    // The bearer is checked before the URL signature, like the real lookaside host.
    let m = w
        .media_visible(req.bearer.as_deref(), id, "GET")
        .map_err(plain)?;
    let now = std::time::Instant::now();
    let key_ok = req
        .query("hash")
        .and_then(|k| w.media_urls.get(k))
        .is_some_and(|(mid, exp)| mid == id && *exp > now);
    if !key_ok {
        return Err(plain(
            GraphError::new(404, 100, "URL signature expired or invalid").subcode(2494055),
        ));
    }
    Ok(Reply {
        status: 200,
        body: m.data.clone(),
        content_type: m.mime_type.clone().into(),
        info: LogInfo::default(),
    })
}

fn media_upload(shared: &Arc<Shared>, req: &Req, phone: &str) -> HResult {
    let info = LogInfo {
        phone_number_id: Some(phone.to_string()),
        ..LogInfo::default()
    };
    let waba = {
        let w = shared.world();
        let Some(n) = w.numbers.get(phone) else {
            w.token_wabas(req.bearer.as_deref())
                .map_err(|e| fail(e, &info))?;
            return Err(fail(GraphError::no_such_object("POST", phone), &info));
        };
        w.authorize(req.bearer.as_deref(), &n.waba_id, "POST", phone)
            .map_err(|e| fail(e, &info))?;
        n.waba_id.clone()
    };
    let bad = |d: String| fail(GraphError::invalid_parameter(d), &info);
    let Some(boundary) = req.content_type.as_deref().and_then(multipart::boundary) else {
        return Err(bad("Media upload must be multipart/form-data.".into()));
    };
    let parts = multipart::parse(&req.body, &boundary).map_err(|e| bad(e.to_string()))?;
    let field = |n: &str| parts.iter().find(|p| p.name == n);
    if field("messaging_product").map(|p| &p.data[..]) != Some(b"whatsapp") {
        return Err(bad(
            "The parameter messaging_product is required and must be whatsapp.".into(),
        ));
    }
    let Some(file) = field("file") else {
        return Err(bad("The parameter file is required.".into()));
    };
    let mime = field("type")
        .map(|p| String::from_utf8_lossy(&p.data).trim().to_string())
        .or_else(|| file.content_type.clone())
        .filter(|m| m.contains('/'));
    let Some(mime) = mime else {
        return Err(bad("The parameter type is required.".into()));
    };
    let id = shared
        .world()
        .add_media(None, &mime, file.data.clone(), Some(waba));
    Ok(Reply::json(200, &json!({ "id": id })).with(info))
}

fn media_delete(shared: &Arc<Shared>, req: &Req, id: &str) -> HResult {
    let mut w = shared.world();
    w.media_visible(req.bearer.as_deref(), id, "DELETE")
        .map_err(plain)?;
    w.media.remove(id);
    Ok(success())
}

// ----- signup / tokens -----

fn oauth_access_token(shared: &Arc<Shared>, req: &Req) -> HResult {
    let p = req.params().map_err(plain)?;
    let token = shared
        .world()
        .exchange_code(
            str_param(&p, "client_id"),
            str_param(&p, "client_secret"),
            str_param(&p, "code"),
        )
        .map_err(plain)?;
    Ok(Reply::json(
        200,
        &json!({"access_token": token, "token_type": "bearer"}),
    ))
}

fn debug_token(shared: &Arc<Shared>, req: &Req) -> HResult {
    let w = shared.world();
    // The caller authenticates with an app token (`app_id|app_secret`) or a valid token.
    let caller = req.bearer.as_deref();
    match caller {
        Some(t) if w.is_app_token(t) => {}
        _ => {
            w.token_wabas(caller).map_err(plain)?;
        }
    }
    let Some(input) = req.query("input_token") else {
        return Err(plain(GraphError::invalid_parameter(
            "The parameter input_token is required",
        )));
    };
    let data = match w.token_wabas(Some(input)) {
        Ok(wabas) if !w.is_app_token(input) => {
            let issued = w.tokens.get(input).map(|t| t.issued_at).unwrap_or(0);
            json!({
                "app_id": w.app_id,
                "type": "SYSTEM_USER",
                "application": w.app_name,
                "data_access_expires_at": 0,
                "expires_at": 0,
                "is_valid": true,
                "issued_at": issued,
                "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
                "granular_scopes": [
                    {"scope": "whatsapp_business_management", "target_ids": wabas},
                    {"scope": "whatsapp_business_messaging", "target_ids": wabas},
                ],
                "user_id": util::derived_hex_id(&[input])[..15]
                    .bytes()
                    .map(|b| char::from(b'0' + b % 10))
                    .collect::<String>(),
            })
        }
        Ok(_) => json!({
            "app_id": w.app_id,
            "type": "APP",
            "application": w.app_name,
            "is_valid": true,
            "scopes": [],
        }),
        Err(e) => json!({
            "app_id": w.app_id,
            "type": "USER",
            "application": w.app_name,
            "error": {"code": e.code, "message": e.message, "subcode": e.subcode},
            "is_valid": false,
            "scopes": [],
        }),
    };
    Ok(Reply::json(200, &json!({ "data": data })))
}

fn subscribed_apps(shared: &Arc<Shared>, req: &Req, waba_id: &str) -> HResult {
    let method = req.method.as_str();
    let mut w = shared.world();
    if !w.wabas.contains_key(waba_id) {
        w.token_wabas(req.bearer.as_deref()).map_err(plain)?;
        return Err(plain(GraphError::no_such_object(method, waba_id)));
    }
    w.authorize(req.bearer.as_deref(), waba_id, method, waba_id)
        .map_err(plain)?;
    let app_id = w.app_id.clone();
    let app_name = w.app_name.clone();
    let params = req.params().map_err(plain)?;
    let Some(waba) = w.wabas.get_mut(waba_id) else {
        return Err(plain(GraphError::no_such_object(method, waba_id)));
    };
    match method {
        "POST" => {
            if let Some(uri) = str_param(&params, "override_callback_uri") {
                webhooks::parse_http_url(uri)
                    .map_err(|e| plain(GraphError::invalid_parameter(e)))?;
                if str_param(&params, "verify_token").is_none() {
                    return Err(plain(GraphError::invalid_parameter(
                        "The parameter verify_token is required with override_callback_uri.",
                    )));
                }
                waba.override_url = Some(uri.to_string());
            }
            if !waba.subscribed_apps.contains(&app_id) {
                waba.subscribed_apps.push(app_id);
            }
            Ok(success())
        }
        "DELETE" => {
            waba.subscribed_apps.retain(|a| a != &app_id);
            waba.override_url = None;
            Ok(success())
        }
        "GET" => {
            let data: Vec<Value> = waba
                .subscribed_apps
                .iter()
                .map(|a| {
                    let mut o = json!({"whatsapp_business_api_data": {
                        "id": a,
                        "link": format!("https://www.facebook.com/games/?app_id={a}"),
                        "name": app_name,
                    }});
                    if let Some(u) = &waba.override_url {
                        o["override_callback_uri"] = json!(u);
                    }
                    o
                })
                .collect();
            Ok(Reply::json(200, &json!({ "data": data })))
        }
        _ => Err(plain(GraphError::unknown_path(&req.path))),
    }
}

fn register(shared: &Arc<Shared>, req: &Req, phone: &str, on: bool) -> HResult {
    let info = LogInfo {
        phone_number_id: Some(phone.to_string()),
        ..LogInfo::default()
    };
    let params = req.params().map_err(|e| fail(e, &info))?;
    let mut w = shared.world();
    let Some(waba) = w.numbers.get(phone).map(|n| n.waba_id.clone()) else {
        w.token_wabas(req.bearer.as_deref())
            .map_err(|e| fail(e, &info))?;
        return Err(fail(GraphError::no_such_object("POST", phone), &info));
    };
    w.authorize(req.bearer.as_deref(), &waba, "POST", phone)
        .map_err(|e| fail(e, &info))?;
    let bad = |d: &str| fail(GraphError::invalid_parameter(d), &info);
    if on {
        if str_param(&params, "messaging_product") != Some("whatsapp") {
            return Err(bad(
                "The parameter messaging_product is required and must be whatsapp.",
            ));
        }
        let pin = match params.get("pin") {
            Some(Value::String(p)) => p.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(bad("The parameter pin is required.")),
        };
        if pin.len() != 6 || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("Param pin must be a 6-digit number."));
        }
        if let Some(n) = w.numbers.get_mut(phone) {
            // Once a number has a two-step verification PIN, registering it again takes
            // that PIN (Meta answers 133005 to any other).
            if n.pin.as_ref().is_some_and(|p| *p != pin) {
                return Err(fail(GraphError::from_code(133005), &info));
            }
            n.registered = true;
            n.pin = Some(pin);
        }
    } else if let Some(n) = w.numbers.get_mut(phone) {
        n.registered = false;
    }
    Ok(success().with(info))
}

// ----- account reads -----

fn phone_number(shared: &Arc<Shared>, req: &Req, phone: &str) -> HResult {
    let info = LogInfo {
        phone_number_id: Some(phone.to_string()),
        ..LogInfo::default()
    };
    let w = shared.world();
    let Some(n) = w.numbers.get(phone) else {
        return Err(fail(GraphError::no_such_object("GET", phone), &info));
    };
    w.authorize(req.bearer.as_deref(), &n.waba_id, "GET", phone)
        .map_err(|e| fail(e, &info))?;
    let v = filter_fields(n.to_json(w.rate_limit_per_number), req.query("fields"));
    Ok(Reply::json(200, &v).with(info))
}

fn paging(data: Vec<Value>) -> Value {
    let cursor = |i: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("cursor{i}"))
    };
    let after = data.len().saturating_sub(1);
    json!({"data": data, "paging": {"cursors": {"before": cursor(0), "after": cursor(after)}}})
}

fn require_waba(shared: &Shared, req: &Req, waba_id: &str) -> Result<(), Failure> {
    let w = shared.world();
    if !w.wabas.contains_key(waba_id) {
        w.token_wabas(req.bearer.as_deref()).map_err(plain)?;
        return Err(plain(GraphError::no_such_object(
            req.method.as_str(),
            waba_id,
        )));
    }
    w.authorize(req.bearer.as_deref(), waba_id, req.method.as_str(), waba_id)
        .map_err(plain)
}

fn phone_numbers(shared: &Arc<Shared>, req: &Req, waba_id: &str) -> HResult {
    require_waba(shared, req, waba_id)?;
    let w = shared.world();
    let fields = req.query("fields");
    let data: Vec<Value> = w
        .wabas
        .get(waba_id)
        .map(|wb| {
            wb.phone_ids
                .iter()
                .filter_map(|id| w.numbers.get(id))
                .map(|n| filter_fields(n.to_json(w.rate_limit_per_number), fields))
                .collect()
        })
        .unwrap_or_default();
    Ok(Reply::json(200, &paging(data)))
}

fn message_templates(shared: &Arc<Shared>, req: &Req, waba_id: &str) -> HResult {
    require_waba(shared, req, waba_id)?;
    let mut w = shared.world();
    if req.method == hyper::Method::POST {
        let p = req.params().map_err(plain)?;
        for k in ["name", "language", "category"] {
            if str_param(&p, k).is_none() {
                return Err(plain(GraphError::invalid_parameter(format!(
                    "The parameter {k} is required."
                ))));
            }
        }
        let t = w
            .add_template(waba_id, &p)
            .map_err(|e| plain(GraphError::invalid_parameter(e)))?;
        return Ok(Reply::json(
            200,
            &json!({"id": t["id"], "status": t["status"], "category": t["category"]}),
        ));
    }
    let want = |k: &str, actual: &str| req.query(k).is_none_or(|q| q.eq_ignore_ascii_case(actual));
    let limit: usize = req
        .query("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25);
    let data: Vec<Value> = w
        .wabas
        .get(waba_id)
        .map(|wb| {
            wb.templates
                .iter()
                .filter(|t| {
                    want("name", &t.name)
                        && want("status", &t.status)
                        && want("language", &t.language)
                        && want("category", &t.category)
                })
                .take(limit)
                .map(|t| filter_fields(t.to_json(), req.query("fields")))
                .collect()
        })
        .unwrap_or_default();
    Ok(Reply::json(200, &paging(data)))
}

fn waba(shared: &Arc<Shared>, req: &Req, waba_id: &str) -> HResult {
    require_waba(shared, req, waba_id)?;
    let w = shared.world();
    let Some(wb) = w.wabas.get(waba_id) else {
        return Err(plain(GraphError::no_such_object("GET", waba_id)));
    };
    let v = json!({
        "id": wb.id,
        "name": wb.name,
        "timezone_id": "1",
        "message_template_namespace": util::derived_hex_id(&[&wb.id]).replace(|c: char| c.is_ascii_digit() && c > '7', "a"),
        "currency": "USD",
        "account_review_status": "APPROVED",
        "business_verification_status": "verified",
        "ownership_type": "CLIENT_OWNED",
        "owner_business_info": {"id": wb.business_id, "name": wb.name},
    });
    Ok(Reply::json(200, &filter_fields(v, req.query("fields"))))
}

fn unknown(shared: &Arc<Shared>, req: &Req) -> HResult {
    let segs = segments(&req.path);
    match segs.as_slice() {
        [id] => {
            let w = shared.world();
            w.token_wabas(req.bearer.as_deref()).map_err(plain)?;
            Err(plain(GraphError::no_such_object(req.method.as_str(), id)))
        }
        _ => Err(plain(GraphError::unknown_path(&req.path))),
    }
}

/// Inbound message (customer → business) as the `messages[]` item plus its contact.
pub fn inbound_message(
    from: Option<&str>,
    user_id: Option<&str>,
    name: &str,
    wamid: &str,
    message: Option<&Value>,
) -> Result<(Value, Value), String> {
    let mut msg = match message {
        None => json!({"type": "text", "text": {"body": "hi"}}),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => return Err("message must be an object".into()),
    };
    let ty = msg
        .get("type")
        .and_then(Value::as_str)
        .ok_or("message.type is required")?
        .to_string();
    if msg.get(&ty).is_none() && ty != "unsupported" {
        return Err(format!("message.{ty} is required"));
    }
    let obj = msg.as_object_mut().ok_or("message must be an object")?;
    if let Some(f) = from {
        obj.insert("from".into(), json!(f));
    }
    if let Some(u) = user_id {
        obj.insert("from_user_id".into(), json!(u));
    }
    obj.insert("id".into(), json!(wamid));
    obj.insert("timestamp".into(), json!(util::now_secs().to_string()));
    let mut contact = Map::new();
    contact.insert("profile".into(), json!({ "name": name }));
    if let Some(f) = from {
        contact.insert("wa_id".into(), json!(f));
    }
    if let Some(u) = user_id {
        contact.insert("user_id".into(), json!(u));
    }
    Ok((Value::Object(contact), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value) -> SendRequest {
        validate_send(&v).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn err(v: Value) -> GraphError {
        match validate_send(&v) {
            Ok(s) => panic!("accepted {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn versions() {
        assert!(is_version("v23.0"));
        assert!(is_version("v9"));
        assert!(!is_version("vx"));
        assert!(!is_version("123"));
        assert_eq!(segments("/v23.0/123/messages"), vec!["123", "messages"]);
        assert_eq!(segments("/123/messages"), vec!["123", "messages"]);
    }

    #[test]
    fn valid_sends() {
        let s = ok(
            json!({"messaging_product":"whatsapp","to":"+1 650 555 1234","type":"text","text":{"body":"hi"}}),
        );
        assert_eq!(s.recipient, Recipient::WaId("16505551234".into()));
        let s = ok(
            json!({"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"image","image":{"id":"1"},"biz_opaque_callback_data":"m-1"}),
        );
        assert_eq!(
            s.recipient,
            Recipient::UserId("US.13491208655302741918".into())
        );
        assert_eq!(s.callback.as_deref(), Some("m-1"));
        let s = ok(
            json!({"messaging_product":"whatsapp","to":"15550001","type":"template","template":{"name":"hello_world","language":{"code":"en_US"}}}),
        );
        assert_eq!(s.template, Some(("hello_world".into(), "en_US".into())));
        ok(
            json!({"messaging_product":"whatsapp","to":"15550001","text":{"body":"default type is text"}}),
        );
    }

    #[test]
    fn invalid_sends() {
        assert_eq!(
            err(json!({"to":"1555000111","type":"text","text":{"body":"x"}})).code,
            100
        );
        assert_eq!(err(json!({"messaging_product":"sms","to":"1555000111","type":"text","text":{"body":"x"}})).code, 100);
        assert_eq!(
            err(json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}})).code,
            100
        );
        assert_eq!(
            err(json!({"messaging_product":"whatsapp","to":"1555000111","type":"text"})).code,
            100
        );
        assert_eq!(err(json!({"messaging_product":"whatsapp","to":"1555000111","type":"telepathy","telepathy":{}})).code, 100);
        assert_eq!(
            err(
                json!({"messaging_product":"whatsapp","to":"1555000111","type":"image","image":{}})
            )
            .code,
            100
        );
        assert_eq!(err(json!({"messaging_product":"whatsapp","to":"not a number","type":"text","text":{"body":"x"}})).code, 100);
        let e = err(
            json!({"messaging_product":"whatsapp","to":"1555000111","type":"template","template":{"name":"x"}}),
        );
        assert_eq!(e.http_status, 400);
        assert!(e.details.is_some());
    }

    #[test]
    fn fields_filter_keeps_id() {
        let v = filter_fields(json!({"id":"1","a":1,"b":2}), Some("a"));
        assert_eq!(v, json!({"id":"1","a":1}));
    }

    #[test]
    fn inbound_shapes() {
        let (c, m) = inbound_message(Some("16505551234"), Some("US.1"), "Ana", "wamid.X", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c["profile"]["name"], "Ana");
        assert_eq!(c["user_id"], "US.1");
        assert_eq!(m["from"], "16505551234");
        assert_eq!(m["text"]["body"], "hi");
        assert!(inbound_message(None, None, "x", "w", Some(&json!({"type":"image"}))).is_err());
    }
}
