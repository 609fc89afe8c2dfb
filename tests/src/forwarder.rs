//! A minimal stand-in for the webhook gateway: receives the simulator's signed webhooks over
//! HTTP and passes each raw body and signature to wa.ingest_signed_webhook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Forwarder {
    pub url: String,
    pub received: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on 127.0.0.1 (random port) and forwards into `db` as `user`.
    pub fn start(db: &str, user: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
        let received = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (db, user) = (db.to_string(), user.to_string());
        let (r, f, s) = (received.clone(), failed.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (db, user, r, f) = (db.clone(), user.clone(), r.clone(), f.clone());
                std::thread::spawn(move || serve(stream, &db, &user, &r, &f));
            }
        });
        Forwarder {
            url,
            received,
            failed,
            stop,
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: std::net::TcpStream,
    db: &str,
    user: &str,
    received: &AtomicU64,
    failed: &AtomicU64,
) {
    let mut client = crate::connect_as(db, user);
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut signature: Option<String> = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    length = value.trim().parse().unwrap_or(0);
                } else if name == "x-hub-signature-256" {
                    signature = Some(value.trim().to_string());
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let status = match client.query_one(
            "SELECT wa.ingest_signed_webhook($1, $2)",
            &[&body, &signature],
        ) {
            Ok(_) => {
                received.fetch_add(1, Ordering::Relaxed);
                "200 OK"
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("forwarder: {e}");
                "500 Internal Server Error"
            }
        };
        let reply =
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
