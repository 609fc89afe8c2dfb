//! Fixtures for integration tests against the cluster started by `scripts/cluster.sh`
//! (`make it` starts it on port WA_IT_PORT with the extension preloaded).
//!
//! Each test gets its own database with the extension created, dropped afterwards, so tests
//! run in parallel without seeing each other's rows. Roles are cluster-wide and shared.

pub mod forwarder;
pub mod keyfile;
pub mod webhooks;
pub mod worker_env;

use postgres::{Client, NoTls};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub const APP_ROLE: &str = "it_app";
pub const ADMIN_ROLE: &str = "it_admin";

pub fn port() -> u16 {
    std::env::var("WA_IT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(55433)
}

/// The cluster's directory (socket, key file, data).
pub fn cluster_dir() -> PathBuf {
    PathBuf::from(std::env::var("WA_IT_DIR").unwrap_or_else(|_| "/var/tmp/whatsapp_pg-it".into()))
}

pub fn connect_as(db: &str, user: &str) -> Client {
    let dsn = format!(
        "host=127.0.0.1 port={} user={} dbname={} connect_timeout=10",
        port(),
        user,
        db
    );
    Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("connect {dsn}: {e}"))
}

fn ensure_roles(c: &mut Client) {
    // Roles are cluster-wide and tests run in parallel in different databases: tolerate a
    // concurrent CREATE ROLE of the same name.
    c.batch_execute(&format!(
        "DO $$ BEGIN
           BEGIN CREATE ROLE {APP_ROLE} LOGIN IN ROLE wa_app;
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
           BEGIN CREATE ROLE {ADMIN_ROLE} LOGIN IN ROLE wa_admin;
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
         END $$;"
    ))
    .expect("create test roles");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database with whatsapp_pg installed; dropped when it goes out of scope.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        let db = Self::empty(label);
        let mut c = db.superuser();
        c.batch_execute("CREATE EXTENSION whatsapp_pg")
            .expect("create extension");
        // CREATE EXTENSION makes the roles; test login roles hang off them.
        ensure_roles(&mut c);
        c.batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {} TO {APP_ROLE}, {ADMIN_ROLE}",
            db.name
        ))
        .expect("grant connect");
        db
    }

    /// A fresh database without the extension (e.g. to restore a dump into).
    pub fn empty(label: &str) -> TestDb {
        let name = format!(
            "it_{}_{}_{}",
            label,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect_as("postgres", "postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        TestDb { name }
    }

    /// A superuser connection.
    pub fn superuser(&self) -> Client {
        connect_as(&self.name, "postgres")
    }

    /// A connection as a login role that is a member of wa_app.
    pub fn app(&self) -> Client {
        connect_as(&self.name, APP_ROLE)
    }

    /// A connection as a login role that is a member of wa_admin.
    pub fn admin(&self) -> Client {
        connect_as(&self.name, ADMIN_ROLE)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                port()
            ),
            NoTls,
        ) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The SQLSTATE and message of a failed statement.
pub fn sql_error(result: Result<impl Sized, postgres::Error>) -> (String, String) {
    match result {
        Ok(_) => panic!("statement succeeded but an error was expected"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a database error: {e}"));
            (db.code().code().to_string(), db.message().to_string())
        }
    }
}

/// The full text of a database error: message, detail and hint.
pub fn sql_error_text(result: Result<impl Sized, postgres::Error>) -> (String, String) {
    match result {
        Ok(_) => panic!("statement succeeded but an error was expected"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a database error: {e}"));
            let text = format!(
                "{} | {} | {}",
                db.message(),
                db.detail().unwrap_or(""),
                db.hint().unwrap_or("")
            );
            (db.code().code().to_string(), text)
        }
    }
}

pub fn pg_bin(tool: &str) -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin").join(tool)
}
