//! Routing, the request-metrics/log middleware and the server loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use deadpool_postgres::Pool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::{Metrics, route_label};
use crate::{assets, cors, db, ops, signup, webhook};

/// What every handler shares.
pub struct App {
    pub config: Config,
    pub pool: Pool,
    pub metrics: Metrics,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<App>, String> {
        let pool = db::pool(&config.database_url, config.pool_size, config.db_timeout)?;
        Ok(Arc::new(App {
            config,
            pool,
            metrics: Metrics::default(),
        }))
    }
}

pub fn router(app: Arc<App>) -> Router {
    // The only routes a page on another origin may call (when --allowed-origins lists it).
    let signup_api = Router::new()
        .route("/signup/config", get(signup::config))
        .route("/signup/exchange", post(signup::exchange))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            cors::signup_cors,
        ));
    Router::new()
        .route("/webhook", get(webhook::verify).post(webhook::receive))
        .merge(signup_api)
        .route("/connect", get(signup::connect_page))
        .route("/assets/{*path}", get(assets::serve))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Counts a request as in flight until it is answered or dropped.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.request_dropped();
    }
}

/// Metrics and one log line per request. Logs carry the route label, never the URI: query
/// strings hold the webhook verify token and the signup state.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    app.metrics.request_started();
    let guard = InFlight(&app.metrics);
    let resp = next.run(req).await;
    std::mem::forget(guard);
    let took = start.elapsed();
    let status = resp.status().as_u16();
    app.metrics.request_finished(route, &method, status, took);
    tracing::info!(
        method = %method,
        route,
        status,
        latency_ms = (took.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        "request"
    );
    resp
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}
