//! The worker's test environment: the cluster's wa.database (`wa_it`) is served by the
//! background worker, so tests that need the worker share that database and run one at a
//! time; each starts from a freshly created extension and its own simulator.

use crate::connect_as;
use crate::forwarder::Forwarder;
use graph_sim::{Sim, SimConfig};
use postgres::Client;
use serde_json::{Value, json};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const DB: &str = "wa_it";
pub static SERIAL: Mutex<()> = Mutex::new(());

pub struct Env {
    pub _serial: MutexGuard<'static, ()>,
    pub sim: Sim,
    pub _forwarder: Forwarder,
}

impl Env {
    pub fn su(&self) -> Client {
        connect_as(DB, "postgres")
    }
}

pub fn set_system(c: &mut Client, name: &str, value: &str) {
    c.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
        .unwrap();
}

pub fn reload(c: &mut Client) {
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The worker reloads on its next loop; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
}

/// A fresh extension in wa_it, a simulator, webhooks flowing back through a forwarder.
pub fn env(cfg: SimConfig) -> Env {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sim = Sim::start(cfg).expect("start graph-sim");
    let mut su = connect_as(DB, "postgres");
    su.batch_execute(
        "DROP EXTENSION IF EXISTS whatsapp_pg CASCADE; DROP SCHEMA IF EXISTS wa CASCADE;
         CREATE EXTENSION whatsapp_pg;",
    )
    .unwrap();
    set_system(&mut su, "wa.graph_api_url", &sim.base_url());
    set_system(&mut su, "wa.http_timeout_ms", "2000");
    for setting in ["wa.rate_limit_per_number", "wa.worker_concurrency"] {
        su.batch_execute(&format!("ALTER SYSTEM RESET {setting}"))
            .unwrap();
    }
    // Sends whose outcome is unknown are tried again after 3 s here (60 s by default).
    set_system(&mut su, "wa.outcome_grace_ms", "3000");
    reload(&mut su);
    su.execute(
        "SELECT wa.configure_app($1, $2, 'verify', '1')",
        &[&sim.app_id(), &sim.app_secret()],
    )
    .unwrap();
    let forwarder = Forwarder::start(DB, "postgres");
    let (status, _) = sim.admin(
        "POST",
        "webhook_config",
        json!({ "url": forwarder.url, "status_delay_ms": 20 }),
    );
    assert_eq!(status, 200);
    wait_for_worker(&mut su);
    Env {
        _serial: serial,
        sim,
        _forwarder: forwarder,
    }
}

pub fn wait_for_worker(c: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let up: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'whatsapp_pg worker')", &[])
            .unwrap()
            .get(0);
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the whatsapp_pg worker is not running");
}

/// A tenant connected to a fresh simulated business; returns (tenant, phone, token).
pub fn tenant(env: &Env, name: &str) -> (String, String, String) {
    let signup = env.sim.signup_with(json!({ "token": true })).unwrap();
    let token = signup.access_token.unwrap();
    let mut su = env.su();
    let t: String = su
        .query_one("SELECT wa.create_tenant($1)::text", &[&name])
        .unwrap()
        .get(0);
    su.execute(
        "SELECT wa.connect_tenant($1::text::uuid, $2, $3, $4)",
        &[&t, &signup.waba_id, &signup.phone_number_id, &token],
    )
    .unwrap();
    (t, signup.phone_number_id, token)
}

pub fn send(c: &mut Client, tenant: &str, to: &str, message: Value) -> String {
    c.query_one(
        "SELECT wa.send_message($1::text::uuid, $2, $3)::text",
        &[&tenant, &to, &message],
    )
    .unwrap()
    .get(0)
}

pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

pub fn status_of(c: &mut Client, message: &str) -> String {
    c.query_one(
        "SELECT status FROM wa.messages WHERE message_id = $1::text::uuid",
        &[&message],
    )
    .unwrap()
    .get(0)
}

pub fn accepted_for(sim: &Sim, callback: &str) -> i64 {
    sim.stats()["sends_per_callback"][callback]
        .as_i64()
        .unwrap_or(0)
}

pub fn tenant_phone(c: &mut Client, tenant: &str) -> String {
    c.query_one(
        "SELECT phone_number_id FROM wa.phone_numbers WHERE tenant_id = $1::text::uuid",
        &[&tenant],
    )
    .unwrap()
    .get(0)
}

pub fn worker_pid(c: &mut Client) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'whatsapp_pg worker'",
        &[],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Connects, retrying while the server restarts.
pub fn reconnect() -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname={DB}",
            crate::port()
        );
        match Client::connect(&dsn, postgres::NoTls) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("server did not come back: {e}"),
        }
    }
}

/// `pg_ctl restart` of the test cluster in the given shutdown mode.
pub fn restart_cluster(mode: &str) {
    let data = crate::cluster_dir().join("data");
    let restart = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-D",
        ])
        .arg(&data)
        .args(["-m", mode, "-w", "-t", "60", "restart"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(restart.success(), "pg_ctl restart -m {mode}");
}

pub fn accepted_total(sim: &Sim) -> i64 {
    sim.admin("GET", "stats?detail=0", Value::Null).1["sends"]["accepted"]
        .as_i64()
        .unwrap_or(0)
}
