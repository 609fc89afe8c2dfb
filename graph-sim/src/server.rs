//! The HTTP server: accept loop, request parsing, dispatch to the Graph and admin handlers,
//! fault layer and request logging.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Semaphore, watch};

use crate::errors::GraphError;
use crate::stats::{LogInfo, RequestRecord};
use crate::webhooks::{Event, HttpClient};
use crate::world::{FaultDecision, World};
use crate::{admin, graph, util};

/// Largest request body accepted (media uploads).
const MAX_BODY: usize = 100 * 1024 * 1024;

/// State shared by every connection and background task.
pub struct Shared {
    world: Mutex<World>,
    pub base_url: String,
    pub events: UnboundedSender<Event>,
    pub client: HttpClient,
    pub delivery_slots: Arc<Semaphore>,
}

impl Shared {
    pub fn new(
        world: World,
        base_url: String,
        events: UnboundedSender<Event>,
        concurrency: usize,
    ) -> Self {
        Shared {
            world: Mutex::new(world),
            base_url,
            events,
            client: HttpClient::default(),
            delivery_slots: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// The world lock. A panic while holding it cannot leave it half-updated in a way that
    /// matters for a simulator, so poisoning is ignored.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues webhook events (no-op for an empty list).
    pub fn schedule(&self, events: Vec<Event>) {
        for e in events {
            let _ = self.events.send(e);
        }
    }
}

/// A parsed request, as handlers see it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub bearer: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Req {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parameters from the body (JSON or form) merged over the query string.
    pub fn params(&self) -> Result<Value, GraphError> {
        let mut obj = serde_json::Map::new();
        for (k, v) in &self.query {
            obj.insert(k.clone(), Value::String(v.clone()));
        }
        let ct = self.content_type.as_deref().unwrap_or("");
        if ct.starts_with("application/x-www-form-urlencoded") {
            let s = String::from_utf8_lossy(&self.body);
            for (k, v) in util::parse_urlencoded(&s) {
                obj.insert(k, Value::String(v));
            }
        } else if !self.body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&self.body) {
                Ok(Value::Object(m)) => obj.extend(m),
                Ok(_) => {
                    return Err(GraphError::invalid_parameter(
                        "The request body must be a JSON object.",
                    ));
                }
                Err(e) => {
                    return Err(GraphError::invalid_parameter(format!(
                        "Failed to parse the request body as JSON: {e}"
                    )));
                }
            }
        }
        Ok(Value::Object(obj))
    }
}

/// A handler's answer.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub content_type: Cow<'static, str>,
    pub info: LogInfo,
}

impl Reply {
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::raw_json(status, serde_json::to_vec(v).unwrap_or_default())
    }

    pub fn raw_json(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body: Bytes::from(body),
            content_type: Cow::Borrowed("application/json; charset=UTF-8"),
            info: LogInfo::default(),
        }
    }

    pub fn error(e: &GraphError) -> Reply {
        let mut r = Reply::json(e.http_status, &e.body());
        r.info.error_code = Some(e.code);
        r
    }

    pub fn with(mut self, info: LogInfo) -> Reply {
        let code = self.info.error_code;
        self.info = info;
        if self.info.error_code.is_none() {
            self.info.error_code = code;
        }
        self
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Binds, then serves on the given runtime until `stop` flips.
pub fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<impl Future<Output = ()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                acc = listener.accept() => {
                    let Ok((stream, _)) = acc else {
                        // EMFILE and the like: back off briefly instead of spinning.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(shared.clone(), req));
                        let _ = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    })
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            let e = GraphError::invalid_parameter("Request body too large or unreadable.");
            return Ok(to_response(Reply::error(&e)));
        }
    };
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, tok) = v.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
                .then(|| tok.trim().to_string())
        });
    let query = parts
        .uri
        .query()
        .map(util::parse_urlencoded)
        .unwrap_or_default();
    let bearer = bearer.or_else(|| {
        query
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.clone())
    });
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        bearer,
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase),
        body,
    };
    if req.path == "/_sim" || req.path.starts_with("/_sim/") {
        return Ok(to_response(admin::handle(&shared, &req).await));
    }
    let route = graph::classify(&shared, &req);
    let endpoint = route.endpoint;
    let (reply, hold) = with_faults(&shared, &req, &route).await;
    let status = reply.status;
    {
        let mut w = shared.world();
        w.stats.record(endpoint, status, &reply.info);
        let info = &reply.info;
        let rec = RequestRecord {
            seq: 0,
            ts_us: util::now_us(),
            method: method_name(&req.method),
            endpoint,
            path: req.path.as_str().into(),
            status,
            duration_us: started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
            phone_number_id: info.phone_number_id.as_deref().map(Into::into),
            recipient: info.recipient.as_deref().map(Into::into),
            callback: info.callback.as_deref().map(Into::into),
            wamid: info.wamid.as_deref().map(Into::into),
            error_code: info.error_code,
            fault: info.fault,
        };
        w.log.push(rec);
    }
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    Ok(to_response(reply))
}

/// Applies `fail_next`, latency, injected errors and timeouts around the real handler.
/// Returns the reply and how long to hold it back (a simulated timeout); the caller logs
/// before holding, so a client that gives up still leaves its trace.
async fn with_faults(
    shared: &Arc<Shared>,
    req: &Req,
    route: &graph::Route,
) -> (Reply, Option<Duration>) {
    let (decision, latency) =
        shared
            .world()
            .fault_decision(route.endpoint, method_name(&req.method), &req.path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let latency_fault = (!latency.is_zero()).then_some("latency");
    match decision {
        FaultDecision::None => {
            let mut r = graph::dispatch(shared, req, route).await;
            r.info.fault = r.info.fault.or(latency_fault);
            (r, None)
        }
        FaultDecision::Fail(err, kind) => {
            let mut r = Reply::error(&err).with(graph::log_hint(route));
            r.info.fault = Some(kind);
            (r, None)
        }
        FaultDecision::Hold { hold, processes } => {
            let hold = hold.unwrap_or(Duration::from_secs(3600));
            let mut r = if processes {
                graph::dispatch(shared, req, route).await
            } else {
                Reply::error(&GraphError::service_unavailable()).with(graph::log_hint(route))
            };
            r.info.fault = Some("timeout");
            (r, Some(hold))
        }
    }
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(r.body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let ct = HeaderValue::from_str(&r.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(CONTENT_TYPE, ct);
    resp
}
