//! Shared pieces of the benchmark programs (`bench-ingest`, `bench-send`, `bench-loop`): where the
//! cluster is, a throwaway database with the extension, timing work spread over several client
//! connections, and summarising repetitions.
//!
//! Benchmarks print figures; they assert nothing and are never part of `make test`.

use postgres::{Client, NoTls};
use std::error::Error;
use std::sync::Barrier;
use std::time::{Duration, Instant};

pub type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Where the cluster is. Defaults come from PGHOST/PGPORT/PGUSER/PGDATABASE, then from the
/// bench cluster of `scripts/bench-ingest.sh` (127.0.0.1:55436, postgres, postgres); the
/// `--host/--port/--user/--db` flags override both. `db` is the maintenance database the
/// bench database is created from.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub db: String,
}

impl Target {
    pub fn from_env() -> Target {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Target {
            host: var("PGHOST", "127.0.0.1"),
            port: var("PGPORT", "55436").parse().unwrap_or(55436),
            user: var("PGUSER", "postgres"),
            db: var("PGDATABASE", "postgres"),
        }
    }

    /// Takes `--host/--port/--user/--db`; returns false for any other flag.
    pub fn apply_flag(&mut self, flag: &str, value: &str) -> BenchResult<bool> {
        match flag {
            "--host" => self.host = value.to_string(),
            "--port" => self.port = value.parse().map_err(|e| format!("--port {value}: {e}"))?,
            "--user" => self.user = value.to_string(),
            "--db" => self.db = value.to_string(),
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn connect(&self, db: &str) -> BenchResult<Client> {
        let dsn = format!(
            "host={} port={} user={} dbname={} connect_timeout=10 application_name=wa-bench",
            self.host, self.port, self.user, db
        );
        Client::connect(&dsn, NoTls).map_err(|e| format!("connect {dsn}: {e}").into())
    }
}

/// Splits `--flag value` pairs (also `--flag=value`); a flag without a value gets "".
pub fn flag_pairs(args: impl Iterator<Item = String>) -> BenchResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        if !a.starts_with("--") {
            return Err(format!("unexpected argument {a:?}").into());
        }
        if let Some((k, v)) = a.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        } else if args.peek().is_some_and(|n| !n.starts_with("--")) {
            let v = args.next().unwrap_or_default();
            out.push((a, v));
        } else {
            out.push((a, String::new()));
        }
    }
    Ok(out)
}

pub fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> BenchResult<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{flag} {value:?}: {e}").into())
}

/// A fresh database (`<prefix>_<pid>`) with whatsapp_pg created in it; dropped on drop
/// unless `keep` is set.
pub struct BenchDb {
    pub target: Target,
    pub name: String,
    pub keep: bool,
}

impl BenchDb {
    pub fn create(target: &Target, prefix: &str, keep: bool) -> BenchResult<BenchDb> {
        let name = format!("{prefix}_{}", std::process::id());
        let mut admin = target.connect(&target.db)?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let db = BenchDb {
            target: target.clone(),
            name,
            keep,
        };
        db.connect()?
            .batch_execute("CREATE EXTENSION whatsapp_pg")
            .map_err(|e| format!("CREATE EXTENSION whatsapp_pg in {}: {e}", db.name))?;
        Ok(db)
    }

    pub fn connect(&self) -> BenchResult<Client> {
        self.target.connect(&self.name)
    }

    /// `n` connections to the bench database.
    pub fn clients(&self, n: usize) -> BenchResult<Vec<Client>> {
        (0..n).map(|_| self.connect()).collect()
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept database {}", self.name);
            return;
        }
        let dropped = self.target.connect(&self.target.db).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .map_err(Into::into)
        });
        if let Err(e) = dropped {
            eprintln!("could not drop database {}: {e}", self.name);
        }
    }
}

/// Runs `work(i, client)` on every client at once, each on its own thread, and returns the
/// wall time from the common start until the last one finished. The first error wins.
pub fn run_concurrently<F>(clients: &mut [Client], work: F) -> BenchResult<Duration>
where
    F: Fn(usize, &mut Client) -> BenchResult<()> + Sync,
{
    let barrier = Barrier::new(clients.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    work(i, c)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut first_error = None;
        for h in handles {
            let outcome = h
                .join()
                .unwrap_or_else(|_| Err("a client thread panicked".into()));
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        let elapsed = start.elapsed();
        first_error.map_or(Ok(elapsed), Err)
    })
}

/// Repetitions of one measurement: how many items each took how long.
#[derive(Default, Clone, Debug)]
pub struct Samples {
    pub items: u64,
    pub times: Vec<Duration>,
}

impl Samples {
    pub fn push(&mut self, items: u64, took: Duration) {
        self.items = items;
        self.times.push(took);
    }

    fn sorted_secs(&self) -> Vec<f64> {
        let mut s: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        s
    }

    pub fn median_secs(&self) -> f64 {
        let s = self.sorted_secs();
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }

    /// Items per second: (median, slowest run, fastest run).
    pub fn rates(&self) -> (f64, f64, f64) {
        let s = self.sorted_secs();
        let rate = |secs: f64| self.items as f64 / secs;
        match (s.first(), s.last()) {
            (Some(&fast), Some(&slow)) => (rate(self.median_secs()), rate(slow), rate(fast)),
            _ => (f64::NAN, f64::NAN, f64::NAN),
        }
    }
}

/// The server settings that decide what a write costs, for the report header.
pub fn durability_settings(c: &mut Client) -> BenchResult<String> {
    let row = c.query_one(
        "SELECT current_setting('server_version'), current_setting('fsync'),
                current_setting('synchronous_commit'), current_setting('full_page_writes'),
                current_setting('shared_buffers')",
        &[],
    )?;
    Ok(format!(
        "PostgreSQL {}, fsync={} synchronous_commit={} full_page_writes={} shared_buffers={}",
        row.get::<_, String>(0),
        row.get::<_, String>(1),
        row.get::<_, String>(2),
        row.get::<_, String>(3),
        row.get::<_, String>(4),
    ))
}

pub mod sending;

/// An error with its causes (a `postgres::Error` says only "db error"; its source has the
/// server's message).
pub fn describe(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
