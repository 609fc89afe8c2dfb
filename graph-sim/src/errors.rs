//! Graph API error envelopes, with the codes, messages and HTTP statuses the Cloud API uses.
//!
//! `{"error":{"message","type","code","error_subcode"?,"error_data":{"messaging_product":
//! "whatsapp","details"}?,"fbtrace_id"}}`

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::util::fbtrace_id;

/// One Graph error, ready to be rendered as the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    /// HTTP status of the response carrying it.
    pub http_status: u16,
    pub code: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcode: Option<u32>,
    pub message: String,
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// `error_data.details` (WhatsApp errors carry it; OAuth ones do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

fn default_type() -> String {
    "OAuthException".into()
}

impl GraphError {
    pub fn new(http_status: u16, code: u32, message: impl Into<String>) -> Self {
        GraphError {
            http_status,
            code,
            subcode: None,
            message: message.into(),
            kind: default_type(),
            details: None,
        }
    }

    pub fn subcode(mut self, s: u32) -> Self {
        self.subcode = Some(s);
        self
    }

    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }

    pub fn kind(mut self, k: impl Into<String>) -> Self {
        self.kind = k.into();
        self
    }

    /// The error for `code` as the Cloud API words it (used by fault injection and `fail_next`,
    /// where a test names only the code).
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::unknown(),
            2 => Self::service_unavailable(),
            4 => Self::new(400, 4, "(#4) Application request limit reached")
                .details("Too many API calls from this app."),
            10 => Self::new(403, 10, "(#10) Application does not have permission for this action")
                .details("Permission denied."),
            80007 => Self::new(400, 80007, "(#80007) Rate limit issues")
                .details("The WhatsApp Business Account has reached its rate limit."),
            100 => Self::invalid_parameter("Invalid parameter"),
            130429 => Self::throughput(),
            131000 => Self::something_went_wrong(),
            131026 => Self::undeliverable(),
            131047 => Self::reengagement(),
            131048 => Self::new(400, 131048, "(#131048) Spam rate limit hit").details(
                "Message failed to send because there are restrictions on how many messages can be sent from this phone number.",
            ),
            131056 => Self::pair_rate(),
            132001 => Self::new(404, 132001, "(#132001) Template name does not exist in the translation")
                .details("template name does not exist in the translation"),
            133005 => Self::new(400, 133005, "(#133005) Two step verification PIN Mismatch")
                .details("Two-step verification PIN incorrect."),
            190 => Self::token_invalid(),
            368 => Self::new(403, 368, "(#368) Temporarily blocked for policies violations"),
            c => Self::new(400, c, format!("(#{c}) Simulated error")).details("Simulated error."),
        }
    }

    pub fn unknown() -> Self {
        Self::new(500, 1, "An unknown error occurred").details("An unknown error occurred.")
    }

    pub fn service_unavailable() -> Self {
        Self::new(503, 2, "Service temporarily unavailable")
            .details("The service is temporarily unavailable. Please retry.")
    }

    pub fn something_went_wrong() -> Self {
        Self::new(500, 131000, "(#131000) Something went wrong")
            .details("Message failed to send due to an unknown error.")
    }

    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self::new(400, 100, "(#100) Invalid parameter").details(details)
    }

    /// Object missing or not visible to the token (Graph's "code 100, subcode 33").
    pub fn no_such_object(method: &str, id: &str) -> Self {
        Self::new(
            400,
            100,
            format!(
                "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
                method.to_ascii_lowercase()
            ),
        )
        .kind("GraphMethodException")
        .subcode(33)
    }

    pub fn unknown_path(path: &str) -> Self {
        Self::new(400, 2500, format!("Unknown path components: {path}"))
    }

    pub fn token_missing() -> Self {
        Self::new(
            401,
            190,
            "An active access token must be used to query information about the current user.",
        )
    }

    pub fn token_invalid() -> Self {
        Self::new(
            401,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }

    pub fn token_revoked() -> Self {
        Self::new(
            401,
            190,
            "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
        )
        .subcode(460)
    }

    pub fn throughput() -> Self {
        Self::new(400, 130429, "(#130429) Rate limit hit")
            .details("Cloud API message throughput has been reached.")
    }

    pub fn pair_rate() -> Self {
        Self::new(
            400,
            131056,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        )
        .details(
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        )
    }

    pub fn undeliverable() -> Self {
        Self::new(400, 131026, "(#131026) Message undeliverable").details(
            "Message Undeliverable. The recipient may not be a WhatsApp user, or has not accepted the latest terms of service.",
        )
    }

    pub fn reengagement() -> Self {
        Self::new(400, 131047, "(#131047) Re-engagement message").details(
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        )
    }

    /// Title as used in `failed` status webhooks (`errors[].title`).
    pub fn title(&self) -> String {
        let m = self.message.as_str();
        match m.strip_prefix('(').and_then(|r| r.split_once(") ")) {
            Some((_, rest)) => rest.to_string(),
            None => m.to_string(),
        }
    }

    /// The response body: `{"error":{...}}`.
    pub fn body(&self) -> Value {
        let mut e = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "fbtrace_id": fbtrace_id(),
        });
        if let Some(s) = self.subcode {
            e["error_subcode"] = json!(s);
        }
        if let Some(d) = &self.details {
            e["error_data"] = json!({"messaging_product": "whatsapp", "details": d});
        }
        json!({ "error": e })
    }

    /// The `errors[]` item of a `failed` status webhook.
    pub fn webhook_error(&self) -> Value {
        json!({
            "code": self.code,
            "title": self.title(),
            "message": self.title(),
            "error_data": {"details": self.details.clone().unwrap_or_else(|| self.title())},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let b = GraphError::pair_rate().body();
        assert_eq!(b["error"]["code"], 131056);
        assert_eq!(b["error"]["type"], "OAuthException");
        assert_eq!(b["error"]["error_data"]["messaging_product"], "whatsapp");
        assert!(
            b["error"]["fbtrace_id"]
                .as_str()
                .is_some_and(|s| s.len() > 10)
        );
        assert!(b["error"].get("error_subcode").is_none());
        let r = GraphError::token_revoked().body();
        assert_eq!(r["error"]["error_subcode"], 460);
        assert!(r["error"].get("error_data").is_none());
    }

    #[test]
    fn titles_strip_code_prefix() {
        assert_eq!(GraphError::undeliverable().title(), "Message undeliverable");
        assert_eq!(GraphError::unknown().title(), "An unknown error occurred");
    }
}
