//! The connection pool and the one question every route asks about a failure: did the
//! database refuse this request (a SQLSTATE we can map), or could it not be asked at all?

use std::error::Error as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// Builds the pool; no connection is opened until the first request.
pub fn pool(database_url: &str, max_size: usize, timeout: Duration) -> Result<Pool, String> {
    let mut cfg: tokio_postgres::Config = database_url
        .parse()
        .map_err(|_| "invalid database URL / connection string".to_string())?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(timeout);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("whatsapp-gateway");
    }
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// Where a connection string points, for logs: host(s), port(s) and database, never the
/// password.
pub fn describe(database_url: &str) -> String {
    match database_url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
            format!(
                "host={} port={} dbname={} user={}",
                hosts.join(","),
                ports.join(","),
                c.get_dbname().unwrap_or("-"),
                c.get_user().unwrap_or("-")
            )
        }
        Err(_) => "<unparsable>".into(),
    }
}

/// An error the server raised for our statement. Its texts follow the extension's rule of
/// never containing a secret, so they may be shown to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn class(&self) -> &str {
        self.sqlstate.get(..2).unwrap_or("")
    }

    /// States that mean "the database cannot take this right now" rather than "this request
    /// is wrong": connection loss, resource limits, shutdown or cancel, serialization
    /// failures and deadlocks, lock timeouts, system errors.
    pub fn is_transient(&self) -> bool {
        matches!(self.class(), "08" | "40" | "53" | "57" | "58") || self.sqlstate == "55P03"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbFailure {
    /// No connection could be had or it broke: 503, so the caller (Meta) retries.
    Unavailable,
    /// The server refused the statement.
    Sql(SqlError),
    /// A bug on our side (e.g. an unexpected result type): 500.
    Internal(String),
}

impl From<PoolError> for DbFailure {
    fn from(e: PoolError) -> Self {
        // Whatever stops us from getting a connection, including a refused login, is the
        // gateway's problem, never the caller's: don't map it as if a query had failed.
        tracing::warn!(error = %e, "database connection unavailable");
        DbFailure::Unavailable
    }
}

impl From<tokio_postgres::Error> for DbFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return DbFailure::Sql(SqlError {
                sqlstate: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
            });
        }
        if e.is_closed()
            || e.source()
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        {
            tracing::warn!(error = %e, "database connection lost");
            return DbFailure::Unavailable;
        }
        DbFailure::Internal(e.to_string())
    }
}

/// A SQL error with just a SQLSTATE, for tests of the SQLSTATE → HTTP status mappings.
#[cfg(test)]
pub(crate) fn sql_error_with_code(code: &str) -> SqlError {
    SqlError {
        sqlstate: code.into(),
        message: "m".into(),
        detail: None,
        hint: None,
    }
}
