//! Fixtures: a fresh database with whatsapp_pg per test, the gateway in-process on a
//! loopback port, a blocking HTTP client, and one shared graph-sim the cluster points at.
//!
//! Needs a PostgreSQL 15 cluster with the extension installed and preloaded; its DSN (in
//! `key=value` form, for a superuser) comes from `WA_GATEWAY_TEST_DSN`, e.g.
//! `host=127.0.0.1 port=55434 user=postgres dbname=postgres`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use graph_sim::{Sim, SimConfig};
use postgres::{Client, NoTls};
use serde_json::Value;
use whatsapp_gateway::{App, Config};

pub const APP_ID: &str = "1234567890123456";
pub const APP_SECRET: &str = "gw-test-app-secret";
pub const VERIFY_TOKEN: &str = "gw-test-verify-token";
pub const CONFIG_ID: &str = "987654321012345";
/// The login role the gateway runs as: a member of wa_admin, not a superuser.
pub const GATEWAY_ROLE: &str = "wa_gateway_test";

pub fn base_dsn() -> String {
    std::env::var("WA_GATEWAY_TEST_DSN")
        .unwrap_or_else(|_| "host=127.0.0.1 port=55434 user=postgres dbname=postgres".into())
}

pub fn connect(dsn: &str) -> Client {
    Client::connect(&format!("{dsn} connect_timeout=10"), NoTls).unwrap_or_else(|e| {
        panic!("cannot connect to the test cluster ({e}); start it and set WA_GATEWAY_TEST_DSN")
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database with the extension created and the Meta app configured; dropped at the
/// end of the test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        let name = format!(
            "gw_{}_{}_{}",
            label,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect(&base_dsn());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let db = TestDb { name };
        let mut c = db.superuser();
        if let Err(e) = c.batch_execute("CREATE EXTENSION whatsapp_pg") {
            panic!(
                "CREATE EXTENSION whatsapp_pg failed: {e:?}\n(the test cluster needs \
                 wa.allow_any_database = on: start it with \
                 WA_EXTRA_CONF=\"wa.allow_any_database = on\" scripts/cluster.sh start)"
            );
        }
        c.batch_execute(&format!(
            "SELECT pg_advisory_lock(4243);
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GATEWAY_ROLE}') THEN
                 CREATE ROLE {GATEWAY_ROLE} LOGIN IN ROLE wa_admin;
               END IF;
             END $$;
             SELECT pg_advisory_unlock(4243);
             GRANT CONNECT ON DATABASE {} TO {GATEWAY_ROLE};",
            db.name
        ))
        .expect("gateway role");
        c.execute(
            "SELECT wa.configure_app($1, $2, $3, $4)",
            &[&APP_ID, &APP_SECRET, &VERIFY_TOKEN, &CONFIG_ID],
        )
        .expect("configure_app");
        db
    }

    pub fn superuser(&self) -> Client {
        connect(&format!("{} dbname={}", base_dsn(), self.name))
    }

    /// What the gateway is given: the test database, as the wa_admin member role.
    pub fn gateway_dsn(&self) -> String {
        format!("{} dbname={} user={GATEWAY_ROLE}", base_dsn(), self.name)
    }

    pub fn scalar_i64(&self, sql: &str) -> i64 {
        self.superuser()
            .query_one(sql, &[])
            .expect("query")
            .get::<_, i64>(0)
    }

    pub fn create_tenant(&self, name: &str) -> uuid::Uuid {
        let row = self
            .superuser()
            .query_one("SELECT wa.create_tenant($1)::text", &[&name])
            .expect("create_tenant");
        let s: String = row.get(0);
        uuid::Uuid::parse_str(&s).expect("uuid")
    }

    /// What the host app does before showing the signup page: a one-time state for `tenant`.
    pub fn begin_signup(&self, tenant: uuid::Uuid) -> String {
        let row = self
            .superuser()
            .query_one(
                "SELECT wa.begin_signup($1::text::uuid)::text",
                &[&tenant.to_string()],
            )
            .expect("begin_signup");
        let s: String = row.get(0);
        let v: Value = serde_json::from_str(&s).expect("json");
        v["state"].as_str().expect("state").to_string()
    }

    pub fn connection_status(&self, tenant: uuid::Uuid) -> Value {
        let row = self
            .superuser()
            .query_one(
                "SELECT wa.connection_status($1::text::uuid)::text",
                &[&tenant.to_string()],
            )
            .expect("connection_status");
        let s: String = row.get(0);
        serde_json::from_str(&s).expect("json")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&base_dsn(), NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub fn config_for(database_url: String) -> Config {
    let mut cfg = Config::new(database_url);
    cfg.db_timeout = Duration::from_secs(2);
    cfg.pool_size = 4;
    cfg
}

/// The gateway on its own runtime, listening on a free loopback port.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Gateway {
    pub fn start(config: Config) -> Gateway {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let app = App::new(config).expect("app");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(whatsapp_gateway::serve(app, listener, async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            stop: Some(tx),
            rt: Some(rt),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    /// Every response header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `Access-Control-*` header is present.
    pub fn has_cors_headers(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.starts_with("access-control-"))
    }
}

pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(body).expect("request");
    let mut resp = agent.run(req).expect("http");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Resp {
        status,
        body,
        content_type,
        headers,
    }
}

pub fn get(url: &str) -> Resp {
    http("GET", url, &[], Vec::new())
}

pub fn post_json(url: &str, v: &Value) -> Resp {
    http(
        "POST",
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(v).expect("json"),
    )
}

/// One graph-sim for the whole test binary: `wa.graph_api_url` is a cluster-wide (sighup)
/// setting, so every test that reaches the Graph API shares it. Points the cluster at it on
/// first use. Only ever run this against a throwaway cluster.
pub fn sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    SIM.get_or_init(|| {
        let sim = Sim::start(SimConfig {
            app_id: APP_ID.into(),
            app_secret: APP_SECRET.into(),
            ..SimConfig::default()
        })
        .expect("graph-sim");
        let url = sim.base_url();
        let mut c = connect(&base_dsn());
        // Two statements: ALTER SYSTEM cannot run inside a (multi-statement) transaction.
        c.batch_execute(&format!("ALTER SYSTEM SET wa.graph_api_url = '{url}'"))
            .expect("point the cluster at graph-sim");
        c.batch_execute("SELECT pg_reload_conf()").expect("reload");
        // The reload reaches backends asynchronously; wait until a new session sees it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen: String = connect(&base_dsn())
                .query_one("SELECT current_setting('wa.graph_api_url', true)", &[])
                .ok()
                .and_then(|r| r.get::<_, Option<String>>(0))
                .unwrap_or_default();
            if seen == url {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wa.graph_api_url not reloaded (is {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sim
    })
}

/// A realistic inbound-message delivery (for a number no tenant owns: the extension keeps
/// it with a reason).
pub fn delivery_body() -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234", "user_id": "US.13491208655302741918"}],
                    "messages": [{
                        "from": "16505551234",
                        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                        "timestamp": "1749416383",
                        "type": "text",
                        "text": {"body": "Does it come in another color?"}
                    }]
                }
            }]
        }]
    })
    .to_string()
}

pub fn sign(body: &str) -> String {
    graph_sim::hub_signature(APP_SECRET, body.as_bytes())
}
