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

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
