//! `whatsapp-gateway` — the HTTP service in front of whatsapp_pg.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use whatsapp_gateway::config::DEFAULT_MAX_BODY_BYTES;
use whatsapp_gateway::{AllowedOrigins, App, Config, ConnectPage, db, serve};

#[derive(Parser)]
#[command(
    name = "whatsapp-gateway",
    version,
    about = "The HTTP gateway Meta calls (webhooks, Embedded Signup) in front of whatsapp_pg"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "WA_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Database connection string (`host=… dbname=…` or `postgres://…`). Prefer the
    /// environment variable: flags are visible in the process list.
    #[arg(long, env = "WA_GATEWAY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Directory served under /assets/ (the frontend/ directory).
    #[arg(long, env = "WA_GATEWAY_ASSETS_DIR")]
    assets_dir: Option<PathBuf>,

    /// Largest accepted request body; Meta's webhook deliveries are at most 3 MB.
    #[arg(long, env = "WA_GATEWAY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Database connections in the pool.
    #[arg(long, env = "WA_GATEWAY_POOL_SIZE", default_value_t = 8)]
    pool_size: usize,

    /// Seconds to wait for a database connection before answering 503.
    #[arg(long, env = "WA_GATEWAY_DB_TIMEOUT_SECS", default_value_t = 5)]
    db_timeout_secs: u64,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, env = "WA_GATEWAY_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    shutdown_timeout_secs: u64,

    /// Comma-separated origins (`https://app.example.com`) whose pages may call
    /// /signup/config and /signup/exchange cross-origin. Empty: same-origin only.
    #[arg(long, env = "WA_GATEWAY_ALLOWED_ORIGINS", default_value = "")]
    allowed_origins: String,

    /// Log format: text or json.
    #[arg(long, env = "WA_GATEWAY_LOG_FORMAT", default_value = "text")]
    log_format: String,

    /// Tests only: Facebook SDK URL the /connect demo page loads instead of Meta's.
    #[arg(long, hide = true)]
    connect_sdk_url: Option<String>,

    /// Tests only: `message` origin the /connect demo page accepts instead of *.facebook.com.
    #[arg(long, hide = true)]
    connect_message_origin: Option<String>,
}

fn init_logs(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let allowed_origins = match AllowedOrigins::parse(&cli.allowed_origins) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("whatsapp-gateway: --allowed-origins: {e}");
            return ExitCode::from(2);
        }
    };

    init_logs(&cli.log_format);
    let Some(database_url) = cli.database_url.clone() else {
        eprintln!("whatsapp-gateway: --database-url or WA_GATEWAY_DATABASE_URL is required");
        return ExitCode::from(2);
    };
    let config = Config {
        database_url,
        assets_dir: cli.assets_dir.clone(),
        max_body_bytes: cli.max_body_bytes,
        pool_size: cli.pool_size,
        db_timeout: Duration::from_secs(cli.db_timeout_secs.max(1)),
        connect_page: ConnectPage {
            sdk_url: cli.connect_sdk_url.clone(),
            message_origin: cli.connect_message_origin.clone(),
        },
        allowed_origins,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whatsapp-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, config))
}

async fn run(cli: Cli, config: Config) -> ExitCode {
    if !config.allowed_origins.is_empty() {
        tracing::info!(origins = ?config.allowed_origins, "CORS enabled for /signup/config and /signup/exchange");
    }
    let target = db::describe(&config.database_url);
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %cli.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %addr, database = %target, "whatsapp-gateway listening");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(app, listener, async move {
        let _ = stop_rx.await;
    }));
    let finished = tokio::select! {
        res = &mut server => Some(res),
        _ = shutdown_signal() => None,
    };
    let outcome = match finished {
        Some(res) => Ok(res),
        None => {
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(());
            tokio::time::timeout(Duration::from_secs(cli.shutdown_timeout_secs), server).await
        }
    };
    match outcome {
        Ok(Ok(Ok(()))) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "server task failed");
            ExitCode::FAILURE
        }
        Err(_) => {
            tracing::warn!("shutdown timeout: dropping requests still in flight");
            ExitCode::SUCCESS
        }
    }
}
