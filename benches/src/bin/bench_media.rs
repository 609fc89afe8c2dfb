//! bench-media: a burst of large inbound videos. graph-sim delivers `--files` video messages of
//! `--mb` MB each (plus one whose bytes do not match the SHA-256 Meta reports) as signed
//! webhooks to the real gateway; the background worker downloads every file, checks its
//! SHA-256 and stores it in chunks. Prints figures; asserts nothing.
//!
//! Baselines, same run: the same files downloaded by a bare Rust client (whatsapp-client) at the
//! worker's concurrency, hashed and thrown away; the same bytes INSERTed as chunks by one
//! connection (what PostgreSQL itself takes to store them).
//!
//! Needs a cluster whose `wa.database` is `--db` and the gateway's binary (`--gateway-bin`);
//! `scripts/bench-worker.sh media` builds both and starts the cluster.

use graph_sim::{Sim, SimConfig, WebhookSettings};
use postgres::Client;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wa_benches::sending::{Gateway, MemorySampler, proc_value, setup_numbers, worker_pid};
use wa_benches::{BenchResult, Target, flag_pairs, parse_num};
use whatsapp_client::api::{GraphClient, GraphConfig};

struct Opts {
    target: Target,
    files: usize,
    mb: u64,
    gateway_bin: String,
    gateway_port: u16,
}

const USAGE: &str = "usage: bench-media --gateway-bin PATH [--gateway-port 55443] [--host H] [--port N] \
[--user U] [--db D] [--files 64] [--mb 50]";

/// Posts one inbound video of `size` bytes from a customer of its own; returns (wamid, media id).
fn inbound_video(
    sim: &Sim,
    phone: &str,
    i: usize,
    size: u64,
    corrupt: bool,
) -> BenchResult<(String, String)> {
    let (status, r) = sim.admin(
        "POST",
        "inbound",
        json!({"phone_number_id": phone, "from": format!("1556600{i:04}"),
               "message": {"type": "video", "video": {"caption": format!("video {i}")}},
               "media_size": size, "media_corrupt": corrupt}),
    );
    match (status, r["wamid"].as_str(), r["media_id"].as_str()) {
        (200, Some(w), Some(m)) => Ok((w.to_string(), m.to_string())),
        _ => Err(format!("inbound: {status} {r}").into()),
    }
}

/// Messages of `wamids` whose media is settled: stored, or failed with a reason.
fn settled(c: &mut Client, wamids: &[String]) -> BenchResult<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM wa.messages WHERE wamid = ANY($1) AND media ? 'stored'",
        &[&wamids],
    )?
    .get(0))
}

/// A sink that only hashes, as the worker does while spooling.
struct HashSink(sha2::Sha256, u64);

impl Write for HashSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        self.0.update(b);
        self.1 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bare client: `threads` threads each taking the next media id, asking for its URL and
/// downloading it into a hashing sink. Returns the seconds it took and the bytes read.
fn bare_downloads(
    sim: &Sim,
    phone: &str,
    token: &str,
    media: &[String],
    threads: usize,
) -> BenchResult<(f64, u64)> {
    let client = Arc::new(GraphClient::new(
        GraphConfig::new(sim.base_url())
            .with_timeout(Duration::from_secs(120))
            .with_max_idle_connections(threads),
    ));
    let queue = Arc::new(Mutex::new(media.to_vec()));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (client, queue) = (client.clone(), queue.clone());
            let (phone, token) = (phone.to_string(), token.to_string());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut bytes = 0;
                loop {
                    let Some(id) = queue.lock().map_err(|e| e.to_string())?.pop() else {
                        return Ok(bytes);
                    };
                    let info = client
                        .media_info(&id, &token, Some(&phone))
                        .map_err(|e| format!("media_info {id}: {e}"))?;
                    let mut sink = HashSink(Default::default(), 0);
                    client
                        .download_media_to(&info.url, &token, u64::MAX, &mut sink)
                        .map_err(|e| format!("download {id}: {e}"))?;
                    bytes += sink.1;
                }
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "a download thread panicked")??;
    }
    Ok((started.elapsed().as_secs_f64(), total))
}

/// What PostgreSQL takes to store the same bytes: one connection INSERTing each file's 1 MiB
/// chunks, one transaction per file, into a table shaped like `wa.media_chunks` (its columns,
/// key and checks; no foreign key). Returns the seconds it took.
fn plain_inserts(c: &mut Client, files: usize, size: u64, chunk: usize) -> BenchResult<f64> {
    c.batch_execute(
        "DROP TABLE IF EXISTS public.bench_media_chunks;
         CREATE TABLE public.bench_media_chunks (LIKE wa.media_chunks INCLUDING ALL);
         CHECKPOINT",
    )?;
    let bytes = graph_sim::pattern_bytes(size);
    let tenant = uuid::Uuid::from_u128(0x5eed);
    let started = Instant::now();
    for f in 0..files {
        let mut tx = c.transaction()?;
        let insert = tx.prepare(
            "INSERT INTO public.bench_media_chunks (tenant_id, media_id, seq, data) VALUES ($1, $2, $3, $4)",
        )?;
        let media_id = format!("bench-{f}");
        for (seq, part) in bytes.chunks(chunk).enumerate() {
            tx.execute(&insert, &[&tenant, &media_id, &(seq as i32), &part])?;
        }
        tx.commit()?;
    }
    let s = started.elapsed().as_secs_f64();
    c.batch_execute("DROP TABLE public.bench_media_chunks")?;
    Ok(s)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn run(o: Opts) -> BenchResult<()> {
    let hook = format!("http://127.0.0.1:{}/webhook", o.gateway_port);
    let sim = Sim::start(SimConfig {
        webhooks: WebhookSettings {
            url: Some(hook),
            ..WebhookSettings::default()
        },
        ..SimConfig::benchmark()
    })?;
    let mut c = o.target.connect(&o.target.db)?;
    let numbers = setup_numbers(&mut c, &sim, 1)?;
    let (phone, token) = numbers.first().ok_or("no number")?.clone();
    let worker = worker_pid(&mut c)?;
    let gateway = Gateway::start(&o.target, &o.gateway_bin, o.gateway_port)?;
    let threads: usize = c
        .query_one("SELECT current_setting('wa.worker_concurrency')::int", &[])?
        .get::<_, i32>(0)
        .max(1) as usize;
    let limit: i64 = c
        .query_one("SELECT current_setting('wa.media_max_bytes')::bigint", &[])?
        .get(0);
    let size = o.mb * 1_000_000;
    println!(
        "bench-media: {} inbound videos of {} MB (+1 corrupted) in one burst, through the gateway (pid {}) at {}; worker pid {worker}, {threads} HTTP threads, wa.media_max_bytes {limit}",
        o.files,
        o.mb,
        gateway.pid(),
        gateway.url
    );

    // Warm-up: one small video through the whole path.
    let (w, _) = inbound_video(&sim, &phone, 9_999, 1 << 20, false)?;
    let warm = [w];
    let deadline = Instant::now() + Duration::from_secs(60);
    while settled(&mut c, &warm)? < 1 {
        if Instant::now() > deadline {
            return Err("the warm-up video was not stored within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.batch_execute("CHECKPOINT")?;
    let anon_before = proc_value(worker, "RssAnon:").unwrap_or(0);

    // The burst: every webhook posted at once (graph-sim generates each file first).
    let sampler = MemorySampler::start(worker, Duration::from_millis(100));
    let mut wamids = Vec::new();
    let mut media = Vec::new();
    let t0 = Instant::now();
    for i in 0..=o.files {
        let (w, m) = inbound_video(&sim, &phone, i, size, i == o.files)?;
        wamids.push(w);
        if i < o.files {
            media.push(m);
        }
    }
    let posted_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while settled(&mut c, &wamids)? < wamids.len() as i64 {
        if Instant::now() > deadline {
            return Err("the burst was not settled within 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let burst_s = t0.elapsed().as_secs_f64();
    let samples = sampler.finish();

    // What was stored: every file whole, its bytes hashing to Meta's SHA-256.
    let row = c.query_one(
        "SELECT count(*), count(*) FILTER (WHERE f.size_bytes = $2 AND f.chunks > 0
                       AND encode(sha256(wa.media_content(f.tenant_id, f.media_id)), 'hex') = f.sha256),
                coalesce(max(f.chunks), 0)
           FROM wa.messages m
           JOIN wa.media f ON f.tenant_id = m.tenant_id AND f.media_id = m.media->>'media_id'
          WHERE m.wamid = ANY($1)",
        &[&wamids[..o.files].to_vec(), &(size as i64)],
    )?;
    let (stored, intact, chunks): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    let corrupt = c.query_one(
        "SELECT coalesce((media->>'stored')::boolean, true), coalesce(media->'error'->>'details', '')
           FROM wa.messages WHERE wamid = $1",
        &[&wamids[o.files]],
    )?;
    let (corrupt_stored, reason): (bool, String) = (corrupt.get(0), corrupt.get(1));

    // Baselines: the same files, bare client, same concurrency; the same bytes INSERTed.
    let (bare_s, bare_bytes) = bare_downloads(&sim, &phone, &token, &media, threads)?;
    let chunk = usize::try_from(size.div_ceil(chunks.max(1) as u64))?.next_power_of_two();
    let insert_s = plain_inserts(&mut c, o.files, size, chunk)?;

    let total_mb = (o.files as u64 * size) as f64 / 1e6;
    let peak_anon = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let peak_rss = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let last_anon = samples.last().map(|s| s.1).unwrap_or(0);
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| baseline: bare client downloads the same {} files ({:.0} MB read), {threads} threads, SHA-256 only | {bare_s:.1} s = {:.0} MB/s |",
        o.files,
        bare_bytes as f64 / 1e6,
        bare_bytes as f64 / 1e6 / bare_s
    );
    println!(
        "| baseline: the same bytes INSERTed by one connection as {} KiB chunks into a table like wa.media_chunks, a transaction per file | {insert_s:.1} s = {:.0} MB/s |",
        chunk / 1024,
        total_mb / insert_s
    );
    println!(
        "| burst: first webhook posted → every file stored or failed ({posted_s:.1} s of it graph-sim making the files and posting) | {burst_s:.1} s = **{:.0} MB/s** = **{:.2}×** the bare client, **{:.2}×** the plain INSERTs |",
        total_mb / burst_s,
        bare_s / burst_s,
        insert_s / burst_s
    );
    println!(
        "| files stored whole with their SHA-256 checked again from the table / chunks each | **{intact} of {}** ({stored} rows) / {chunks} |",
        o.files
    );
    println!("| the corrupted file | stored: {corrupt_stored}; reason: {reason} |");
    println!(
        "| worker own memory (RssAnon), sampled every 100 ms ({} samples): before / peak / after | {:.1} / **{:.1}** / {:.1} MiB |",
        samples.len(),
        mib(anon_before),
        mib(peak_anon),
        mib(last_anon)
    );
    println!(
        "| worker VmRSS peak (its own memory and the shared buffers it touched) | {:.1} MiB |",
        mib(peak_rss)
    );
    let step = (samples.len() / 30).max(1);
    let series: Vec<String> = samples
        .iter()
        .step_by(step)
        .map(|s| format!("{:.0}", mib(s.1)))
        .collect();
    println!(
        "| RssAnon every {:.1} s (MiB) | {} |",
        step as f64 / 10.0,
        series.join(" ")
    );
    Ok(())
}

fn main() {
    let mut o = Opts {
        target: Target::from_env(),
        files: 64,
        mb: 50,
        gateway_bin: String::new(),
        gateway_port: 55443,
    };
    let parsed = (|| -> BenchResult<()> {
        for (flag, value) in flag_pairs(std::env::args().skip(1))? {
            if o.target.apply_flag(&flag, &value)? {
                continue;
            }
            match flag.as_str() {
                "--files" => o.files = parse_num(&flag, &value)?,
                "--mb" => o.mb = parse_num(&flag, &value)?,
                "--gateway-bin" => o.gateway_bin = value,
                "--gateway-port" => o.gateway_port = parse_num(&flag, &value)?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
            }
        }
        if o.gateway_bin.is_empty() || o.files == 0 || o.mb == 0 {
            return Err(USAGE.into());
        }
        Ok(())
    })();
    if let Err(e) = parsed.and_then(|()| run(o)) {
        eprintln!("bench-media: {}", wa_benches::describe(e.as_ref()));
        std::process::exit(1);
    }
}
