//! `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::App;

/// 200 when a `SELECT 1` goes through within the database timeout, else 503.
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    let check = async {
        let client = app.pool.get().await.ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    };
    match tokio::time::timeout(app.config.db_timeout, check).await {
        Ok(Some(_)) => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response(),
    }
}

/// The gateway's own metrics, then the database's (`wa.worker_status()`, within the database
/// timeout; `wa_database_up 0` when it does not answer).
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let status = async {
        let client = app.pool.get().await.ok()?;
        let row = client
            .query_one(
                "SELECT s, extract(epoch FROM now() - (s->>'heartbeat_at')::timestamptz)::float8,
                        extract(epoch FROM now() - (s->'webhooks'->>'last_received_at')::timestamptz)::float8
                   FROM wa.worker_status() s",
                &[],
            )
            .await
            .ok()?;
        Some((
            row.get::<_, serde_json::Value>(0),
            (row.get::<_, Option<f64>>(1), row.get::<_, Option<f64>>(2)),
        ))
    };
    let database = match tokio::time::timeout(app.config.db_timeout, status).await {
        Ok(Some((s, ages))) => crate::metrics::render_database(&s, ages),
        _ => crate::metrics::render_database_down(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render() + &database,
    )
        .into_response()
}
