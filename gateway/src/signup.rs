//! Embedded Signup: the public config the button needs, the code exchange (authorised by the
//! one-time state the host app minted with `wa.begin_signup`, never by a tenant id from the
//! browser) and a demo page embedding the `<whatsapp-connect>` component.

use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::db::{DbFailure, SqlError};
use crate::error::ApiError;
use crate::server::App;

/// HTTP status for a refused signup statement.
pub fn signup_status(e: &SqlError) -> StatusCode {
    match e.sqlstate.as_str() {
        _ if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        // Function missing: the installed extension predates the gateway.
        "42883" => StatusCode::NOT_IMPLEMENTED,
        "42501" => StatusCode::FORBIDDEN,
        "02000" | "P0002" | "42704" => StatusCode::NOT_FOUND,
        _ if e.class() == "28" => StatusCode::FORBIDDEN,
        _ if e.class() == "22" => StatusCode::BAD_REQUEST,
        // object_not_in_prerequisite_state and friends: e.g. the app is not configured,
        // or the tenant is in a state that does not allow this.
        _ if e.class() == "55" => StatusCode::CONFLICT,
        // External routine / Graph failure reported by the extension.
        _ if matches!(e.class(), "38" | "39" | "HV") => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn one_json(
    app: &App,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Value>, DbFailure> {
    let client = app.pool.get().await?;
    let stmt = client.prepare_cached(sql).await?;
    let row = client.query_one(&stmt, params).await?;
    Ok(row.try_get(0)?)
}

/// `GET /signup/config` → `wa.signup_config()`: app id, config id, Graph version.
pub async fn config(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let v = one_json(&app, "SELECT wa.signup_config()", &[])
        .await
        .map_err(|f| {
            ApiError::from_db(f, |e| {
                // Not configured yet is an outage of this endpoint, not a client error.
                if e.class() == "55" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    signup_status(e)
                }
            })
        })?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(v.unwrap_or(Value::Null)),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ExchangeRequest {
    state: String,
    code: String,
    #[serde(default)]
    waba_id: Option<String>,
    #[serde(default)]
    phone_number_id: Option<String>,
}

impl fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("state", &"<redacted>")
            .field("code", &"<redacted>")
            .field("waba_id", &self.waba_id)
            .field("phone_number_id", &self.phone_number_id)
            .finish()
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Why a signup that returned normally did not succeed: a Graph step failed and the extension
/// recorded it (a tenant being connected goes to state `error`; a re-signup of a connected
/// tenant stays `connected` and only `signup.last_error` has the failure).
fn failure_message(status: &Value) -> Option<String> {
    let signup_error = status
        .pointer("/signup/last_error")
        .filter(|e| !e.is_null());
    let failed =
        signup_error.is_some() || status.get("state").and_then(Value::as_str) == Some("error");
    if !failed {
        return None;
    }
    let message = signup_error
        .or_else(|| status.get("last_error"))
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("signup failed");
    Some(message.to_string())
}

/// `POST /signup/exchange` → `wa.complete_signup(state, code, waba, phone)`: the database
/// consumes the state (one use, for the tenant it was minted for) and runs the signup.
pub async fn exchange(
    State(app): State<Arc<App>>,
    body: Result<Json<ExchangeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|r| {
        ApiError::new(
            r.status(),
            "expected a JSON body {\"state\", \"code\", \"waba_id\", \"phone_number_id\"}",
        )
    })?;
    let code = req.code.trim();
    if code.is_empty() {
        app.metrics.exchange("error");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "code is required"));
    }
    let waba = non_empty(req.waba_id);
    let phone = non_empty(req.phone_number_id);
    let result = one_json(
        &app,
        "SELECT wa.complete_signup($1::text, $2::text, $3::text, $4::text)",
        &[&req.state, &code, &waba, &phone],
    )
    .await;
    match result {
        Ok(status) => {
            let status = status.unwrap_or(Value::Null);
            let tenant = status
                .get("tenant_id")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string();
            if let Some(message) = failure_message(&status) {
                // wa.complete_signup recorded the failure and returned normally so that the
                // record was committed.
                app.metrics.exchange("error");
                tracing::info!(tenant = %tenant, "signup exchange failed at Meta");
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, message));
            }
            let state = status
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            app.metrics.exchange("ok");
            tracing::info!(tenant = %tenant, waba_id = ?waba, phone_number_id = ?phone, state, "signup exchange done");
            Ok(Json(status).into_response())
        }
        Err(f) => {
            let refused_state = matches!(&f, DbFailure::Sql(e) if e.sqlstate == "28000");
            app.metrics.exchange(if refused_state {
                "rejected_state"
            } else {
                "error"
            });
            tracing::info!(refused_state, "signup exchange failed");
            Err(ApiError::from_db(f, signup_status))
        }
    }
}

#[derive(Deserialize)]
pub struct ConnectQuery {
    state: Option<String>,
}

fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn plausible_state(s: &str) -> bool {
    s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `GET /connect?state=…` — a minimal page with the component, for the demo and the browser
/// test. A host app embeds `<whatsapp-connect>` in its own page instead.
pub async fn connect_page(State(app): State<Arc<App>>, Query(q): Query<ConnectQuery>) -> Response {
    let state = q.state.unwrap_or_default();
    if !plausible_state(&state) {
        return (StatusCode::BAD_REQUEST, "malformed state").into_response();
    }
    let mut extra = String::new();
    if let Some(url) = &app.config.connect_page.sdk_url {
        extra.push_str(&format!(" sdk-url=\"{}\"", escape_attr(url)));
    }
    if let Some(origin) = &app.config.connect_page.message_origin {
        extra.push_str(&format!(" message-origin=\"{}\"", escape_attr(origin)));
    }
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Connect WhatsApp</title>
<style>
  body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; color: #1f2933; }}
  h1 {{ font-size: 1.5rem; }}
</style>
<script type="module" src="assets/whatsapp-connect.js"></script>
</head>
<body>
<main>
<h1>Connect your WhatsApp Business account</h1>
<p>Sign in with Facebook, pick or create your WhatsApp Business account and phone number, and you are ready to message your customers.</p>
<whatsapp-connect config-url="signup/config" exchange-url="signup/exchange" state="{state}"{extra}></whatsapp-connect>
</main>
</body>
</html>
"#,
        state = escape_attr(&state),
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::sql_error_with_code as sql;

    #[test]
    fn sqlstates_map_to_http() {
        assert_eq!(signup_status(&sql("22023")), StatusCode::BAD_REQUEST);
        assert_eq!(signup_status(&sql("42501")), StatusCode::FORBIDDEN);
        assert_eq!(signup_status(&sql("55000")), StatusCode::CONFLICT);
        assert_eq!(signup_status(&sql("P0002")), StatusCode::NOT_FOUND);
        assert_eq!(
            signup_status(&sql("08006")),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(signup_status(&sql("38000")), StatusCode::BAD_GATEWAY);
        assert_eq!(signup_status(&sql("42883")), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            signup_status(&sql("XX000")),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_recorded_failure_is_a_failure_even_while_connected() {
        let ok = serde_json::json!({"state": "connected", "last_error": null,
                                    "signup": {"completed": true, "last_error": null}});
        assert_eq!(failure_message(&ok), None);
        let resignup = serde_json::json!({"state": "connected", "last_error": null,
            "signup": {"completed": false, "last_error": {"step": "register", "message": "register failed: 503"}}});
        assert_eq!(
            failure_message(&resignup).as_deref(),
            Some("register failed: 503")
        );
        let first = serde_json::json!({"state": "error", "last_error": {"message": "expired"}});
        assert_eq!(failure_message(&first).as_deref(), Some("expired"));
    }

    #[test]
    fn attributes_are_escaped() {
        assert_eq!(escape_attr(r#"a"><script>"#), "a&quot;&gt;&lt;script&gt;");
        assert!(!plausible_state("v1.x\"onload=alert(1)"));
        assert!(plausible_state(
            "wss1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
    }

    #[test]
    fn exchange_request_debug_hides_code_and_state() {
        let r = ExchangeRequest {
            state: "wss1.secret".into(),
            code: "AQB-code".into(),
            waba_id: Some("1".into()),
            phone_number_id: None,
        };
        let s = format!("{r:?}");
        assert!(!s.contains("AQB-code") && !s.contains("wss1.secret"));
    }
}
