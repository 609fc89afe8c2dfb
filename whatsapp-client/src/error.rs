//! Graph API errors: the error envelope Meta returns (and embeds in webhooks), and how each
//! error should be handled by a sender.
//!
//! The classification follows Meta's "WhatsApp error codes" reference: Meta recommends keying
//! error handling on `code` (and `error_data.details`), never on the human-readable title.

use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// One Graph API error, as found under `"error"` in an API response or in the `errors` arrays
/// of webhooks. Parsing is tolerant: every field is optional, numbers sent as strings are
/// accepted, and an ill-typed field is simply absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GraphError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Graph `type`, e.g. `OAuthException`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    /// `error_data.details`: the most specific explanation Meta gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Webhook errors carry a `title` instead of a `type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_user_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_user_msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_transient: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

impl GraphError {
    /// Reads the error object itself (`{"message":…,"code":…}`), tolerantly.
    pub fn from_value(v: &Value) -> GraphError {
        let error_data = v.get("error_data");
        GraphError {
            message: string_field(v, "message"),
            kind: string_field(v, "type"),
            code: int_field(v, "code"),
            error_subcode: int_field(v, "error_subcode"),
            details: error_data.and_then(|d| match d {
                // error_data is usually an object, but older APIs sent it as a JSON string
                Value::Object(_) => string_field(d, "details"),
                Value::String(s) => Some(s.clone()),
                _ => None,
            }),
            title: string_field(v, "title"),
            error_user_title: string_field(v, "error_user_title"),
            error_user_msg: string_field(v, "error_user_msg"),
            is_transient: v.get("is_transient").and_then(Value::as_bool),
            fbtrace_id: string_field(v, "fbtrace_id"),
            href: string_field(v, "href"),
        }
    }

    /// Reads a response body of the form `{"error":{…}}`. `None` when the body is not JSON or
    /// has no `error` object (an HTML page from a proxy, say).
    pub fn from_response_body(body: &[u8]) -> Option<GraphError> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let e = v.get("error")?;
        e.is_object().then(|| GraphError::from_value(e))
    }

    /// How a sender should react to this error when it came with `http_status`.
    pub fn class(&self, http_status: Option<u16>) -> ErrorClass {
        classify(http_status, self.code, self.error_subcode)
    }

    /// A one-line summary for logs and stored errors: `(#131047) Re-engagement message: details`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(code) = self.code {
            s.push_str(&format!("(#{code}) "));
        }
        let text = self
            .title
            .as_deref()
            .or(self.message.as_deref())
            .unwrap_or("unknown Graph API error");
        // Graph messages repeat the code as a "(#123) " prefix
        let text = match text.strip_prefix("(#") {
            Some(rest) => match rest.split_once(") ") {
                Some((digits, tail)) if digits.bytes().all(|b| b.is_ascii_digit()) => tail,
                _ => text,
            },
            None => text,
        };
        s.push_str(text);
        if let Some(d) = self
            .details
            .as_deref()
            .filter(|d| !d.is_empty() && *d != text)
        {
            s.push_str(": ");
            s.push_str(d);
        }
        s
    }
}

fn string_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// An integer that may have been sent as a JSON number or a numeric string.
pub(crate) fn int_field(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What a sender should do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// A transient failure (server error, timeout, connection failure): retry with backoff.
    Retry,
    /// A rate limit: slow down and retry later. The scope says what to pace.
    Throttle(ThrottleScope),
    /// Retrying the same request will not help: record the failure.
    Permanent,
    /// The access token is expired, revoked or invalid: hold the tenant's queue until it
    /// reconnects instead of burning retries.
    Reauthorize,
}

/// What a rate limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleScope {
    /// The app's Graph API call rate (code 4).
    App,
    /// The WhatsApp Business Account's call rate (code 80007).
    BusinessAccount,
    /// The business phone number's throughput or quality-based limits (130429, 131048, 133016).
    PhoneNumber,
    /// The (business number, user) pair (131056): pace messages to this one recipient; other
    /// recipients are unaffected.
    Recipient,
}

impl ThrottleScope {
    /// A reasonable first pause before retrying. Meta publishes no exact windows; these are
    /// conservative starting points for exponential backoff.
    pub fn suggested_pause(self) -> Duration {
        match self {
            // Graph app and WABA limits are computed over rolling windows of minutes
            ThrottleScope::App | ThrottleScope::BusinessAccount => Duration::from_secs(60),
            // throughput is per second
            ThrottleScope::PhoneNumber => Duration::from_secs(1),
            // the documented pair rate is about one message every 6 seconds
            ThrottleScope::Recipient => Duration::from_secs(6),
        }
    }
}

impl ErrorClass {
    /// Whether the same request may be tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Retry | ErrorClass::Throttle(_))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::Throttle(ThrottleScope::Recipient) => "throttle_recipient",
            ErrorClass::Throttle(_) => "throttle",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Reauthorize => "reauthorize",
        }
    }
}

/// Classifies a failure from the HTTP status and the Graph error code/subcode.
///
/// A known Graph `code` decides; otherwise the HTTP status does (5xx and 429 are transient,
/// 401 means the token is bad, other 4xx are permanent). With neither (the request never got
/// an answer) the failure is treated as transient.
pub fn classify(http_status: Option<u16>, code: Option<i64>, subcode: Option<i64>) -> ErrorClass {
    if let Some(class) = code.and_then(|c| classify_code(c, subcode)) {
        return class;
    }
    match http_status {
        Some(401) => ErrorClass::Reauthorize,
        Some(429) => ErrorClass::Throttle(ThrottleScope::App),
        Some(408) => ErrorClass::Retry,
        Some(s) if s >= 500 => ErrorClass::Retry,
        Some(s) if s >= 400 => ErrorClass::Permanent,
        // a 2xx/3xx with an error code we don't know: don't loop on it
        Some(_) => ErrorClass::Permanent,
        None if code.is_some() => ErrorClass::Permanent,
        None => ErrorClass::Retry,
    }
}

/// The classification of a known Graph error code, `None` for codes we don't know.
fn classify_code(code: i64, subcode: Option<i64>) -> Option<ErrorClass> {
    use ErrorClass::*;
    use ThrottleScope as T;
    Some(match code {
        // AuthException: the token can't be used (expired, invalidated, app access blocked)
        0 => Reauthorize,
        // API Unknown: "invalid request or possible server error"
        1 => Retry,
        // API Service: temporary downtime or overload
        2 => Retry,
        // API Method: capability or permission issue of the app
        3 => Permanent,
        // API Too Many Calls (app-level rate limit)
        4 => Throttle(T::App),
        // Permission denied: permission not granted or removed; needs an operator, not a retry
        10 => Permanent,
        // Parameter value is not valid (e.g. the business phone number was deleted)
        33 => Permanent,
        // Invalid parameter
        100 => Permanent,
        // Access token expired / invalid. Subcodes: 458 app not installed, 459 user
        // checkpointed, 460 password changed, 463 expired, 464 unconfirmed user, 467 invalid
        // token, 492 invalid session. All need a new token.
        190 => {
            let _ = subcode;
            Reauthorize
        }
        // API Permission (200–299): permission missing or revoked
        200..=299 => Permanent,
        // Temporarily blocked for policy violations
        368 => Permanent,
        // WABA rate limit
        80007 => Throttle(T::BusinessAccount),
        // Cloud API throughput of the business number reached
        130429 => Throttle(T::PhoneNumber),
        // User's number is part of an experiment
        130472 => Permanent,
        // Business account restricted from messaging users in this country
        130497 => Permanent,
        // Something went wrong (transient on Meta's side)
        131000 => Retry,
        // Access denied
        131005 => Permanent,
        // Required parameter missing / parameter value not valid
        131008 | 131009 => Permanent,
        // Service unavailable
        131016 => Retry,
        // Recipient cannot be sender
        131021 => Permanent,
        // Message undeliverable (not on WhatsApp, old app, terms not accepted, …)
        131026 => Permanent,
        // Recipient not in the allowed list (test numbers)
        131030 => Permanent,
        // Business account locked
        131031 => Permanent,
        // Display name approval needed
        131037 => Permanent,
        // Business eligibility / payment issue
        131042 => Permanent,
        // Incorrect certificate
        131045 => Permanent,
        // Re-engagement: more than 24 hours since the user last replied; needs a template
        131047 => Permanent,
        // Spam rate limit hit: quality-based limit of the business number
        131048 => Throttle(T::PhoneNumber),
        // Per-user marketing limit ("healthy ecosystem engagement"). Meta advises not to
        // retry immediately; a resend minutes later fails the same way, so this is recorded as
        // a failure and left to the application to resend much later if it wants.
        131049 => Permanent,
        // User stopped marketing messages
        131050 => Permanent,
        // Unsupported message type
        131051 => Permanent,
        // Media download error (the user's media could not be downloaded)
        131052 => Permanent,
        // Media upload error (the media in the message could not be used)
        131053 => Permanent,
        // Method not allowed
        131055 => Permanent,
        // (Business, consumer) pair rate limit: pace this recipient only
        131056 => Throttle(T::Recipient),
        // Account in maintenance mode (e.g. a throughput upgrade): temporary
        131057 => Retry,
        // Business-scoped user id recipients not supported for this message
        131062 => Permanent,
        // Template errors: parameter count mismatch, template missing, hydrated text too
        // long, format policy, parameter format mismatch, paused, disabled
        132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 => Permanent,
        // Flow is blocked / throttled
        132068 => Permanent,
        132069 => Throttle(T::PhoneNumber),
        // Registration: incomplete deregistration
        133000 => Permanent,
        // Server temporarily unavailable
        133004 => Retry,
        // Two-step PIN mismatch, re-verification needed
        133005 | 133006 => Permanent,
        // Too many two-step PIN guesses / guessed too fast
        133008 | 133009 => Throttle(T::PhoneNumber),
        // Phone number not registered
        133010 => Permanent,
        // Wait a few minutes before registering again
        133015 => Throttle(T::PhoneNumber),
        // Register/deregister rate limit exceeded
        133016 => Throttle(T::PhoneNumber),
        // Generic user error / business not eligible
        134011 | 135000 => Permanent,
        // Identity key mismatch (identity change check enabled)
        137000 => Permanent,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;
    use ThrottleScope as T;

    #[test]
    fn every_documented_code_is_classified() {
        let table: &[(i64, Option<i64>, ErrorClass)] = &[
            (0, None, Reauthorize),
            (1, None, Retry),
            (2, None, Retry),
            (3, None, Permanent),
            (4, None, Throttle(T::App)),
            (10, None, Permanent),
            (33, None, Permanent),
            (100, None, Permanent),
            (190, None, Reauthorize),
            (190, Some(463), Reauthorize),
            (190, Some(460), Reauthorize),
            (190, Some(467), Reauthorize),
            (200, None, Permanent),
            (250, None, Permanent),
            (299, None, Permanent),
            (368, None, Permanent),
            (80007, None, Throttle(T::BusinessAccount)),
            (130429, None, Throttle(T::PhoneNumber)),
            (130472, None, Permanent),
            (130497, None, Permanent),
            (131000, None, Retry),
            (131005, None, Permanent),
            (131008, None, Permanent),
            (131009, None, Permanent),
            (131016, None, Retry),
            (131021, None, Permanent),
            (131026, None, Permanent),
            (131030, None, Permanent),
            (131031, None, Permanent),
            (131037, None, Permanent),
            (131042, None, Permanent),
            (131045, None, Permanent),
            (131047, None, Permanent),
            (131048, None, Throttle(T::PhoneNumber)),
            (131049, None, Permanent),
            (131050, None, Permanent),
            (131051, None, Permanent),
            (131052, None, Permanent),
            (131053, None, Permanent),
            (131055, None, Permanent),
            (131056, None, Throttle(T::Recipient)),
            (131057, None, Retry),
            (131062, None, Permanent),
            (132000, None, Permanent),
            (132001, None, Permanent),
            (132005, None, Permanent),
            (132007, None, Permanent),
            (132012, None, Permanent),
            (132015, None, Permanent),
            (132016, None, Permanent),
            (132068, None, Permanent),
            (132069, None, Throttle(T::PhoneNumber)),
            (133000, None, Permanent),
            (133004, None, Retry),
            (133005, None, Permanent),
            (133006, None, Permanent),
            (133008, None, Throttle(T::PhoneNumber)),
            (133009, None, Throttle(T::PhoneNumber)),
            (133010, None, Permanent),
            (133015, None, Throttle(T::PhoneNumber)),
            (133016, None, Throttle(T::PhoneNumber)),
            (134011, None, Permanent),
            (135000, None, Permanent),
            (137000, None, Permanent),
        ];
        for &(code, sub, want) in table {
            // the code decides whatever the HTTP status was
            for status in [None, Some(400), Some(403), Some(429), Some(500)] {
                assert_eq!(
                    classify(status, Some(code), sub),
                    want,
                    "code {code} status {status:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_codes_fall_back_to_the_http_status() {
        assert_eq!(classify(Some(500), Some(999_999), None), Retry);
        assert_eq!(classify(Some(502), None, None), Retry);
        assert_eq!(classify(Some(503), None, None), Retry);
        assert_eq!(classify(Some(504), None, None), Retry);
        assert_eq!(classify(Some(408), None, None), Retry);
        assert_eq!(classify(Some(429), None, None), Throttle(T::App));
        assert_eq!(classify(Some(401), Some(999_999), None), Reauthorize);
        assert_eq!(classify(Some(400), Some(999_999), None), Permanent);
        assert_eq!(classify(Some(404), None, None), Permanent);
        assert_eq!(classify(Some(200), Some(999_999), None), Permanent);
        assert_eq!(classify(None, Some(999_999), None), Permanent);
        // no answer at all: timeout or connection failure
        assert_eq!(classify(None, None, None), Retry);
    }

    #[test]
    fn error_envelope_is_parsed_tolerantly() {
        let body = br#"{"error":{"message":"(#131056) (Business Account, Consumer Account) pair rate limit hit","type":"OAuthException","code":131056,"error_data":{"messaging_product":"whatsapp","details":"Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."},"error_user_title":"t","error_user_msg":"m","fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#;
        let e = GraphError::from_response_body(body).unwrap();
        assert_eq!(e.code, Some(131056));
        assert_eq!(e.kind.as_deref(), Some("OAuthException"));
        assert!(e.details.as_deref().unwrap().starts_with("Message failed"));
        assert_eq!(e.fbtrace_id.as_deref(), Some("Az8or2yhqkZfEZ-_4Qn_Bam"));
        assert_eq!(e.class(Some(400)), Throttle(T::Recipient));
        assert!(
            e.summary().starts_with(
                "(#131056) (Business Account, Consumer Account) pair rate limit hit: Message failed"
            ),
            "{}",
            e.summary()
        );

        // codes as strings, ill-typed fields ignored
        let e = GraphError::from_response_body(
            br#"{"error":{"code":"190","error_subcode":"463","message":5,"error_data":"x"}}"#,
        )
        .unwrap();
        assert_eq!((e.code, e.error_subcode), (Some(190), Some(463)));
        assert_eq!(e.message, None);
        assert_eq!(e.details.as_deref(), Some("x"));

        assert_eq!(
            GraphError::from_response_body(b"<html>bad gateway</html>"),
            None
        );
        assert_eq!(GraphError::from_response_body(br#"{"error":"nope"}"#), None);
        assert_eq!(GraphError::from_response_body(br#"{"data":[]}"#), None);
    }

    #[test]
    fn webhook_error_objects_are_parsed() {
        let v: Value = serde_json::from_str(
            r#"{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"Message failed to send because more than 24 hours have passed since the customer last replied to this number."},"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}"#,
        )
        .unwrap();
        let e = GraphError::from_value(&v);
        assert_eq!(e.code, Some(131047));
        assert_eq!(e.title.as_deref(), Some("Re-engagement message"));
        assert_eq!(e.class(None), Permanent);
        assert!(
            e.summary()
                .starts_with("(#131047) Re-engagement message: Message failed")
        );
    }

    #[test]
    fn throttle_scopes_suggest_pauses() {
        assert_eq!(T::Recipient.suggested_pause(), Duration::from_secs(6));
        assert!(Throttle(T::App).is_retryable());
        assert!(Retry.is_retryable());
        assert!(!Permanent.is_retryable());
        assert!(!Reauthorize.is_retryable());
        assert_eq!(Throttle(T::Recipient).as_str(), "throttle_recipient");
    }
}
