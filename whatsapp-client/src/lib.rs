//! A client for Meta's WhatsApp Cloud API (the Graph API) that knows nothing about PostgreSQL.
//!
//! It holds everything the `whatsapp_pg` extension needs that can be tested with plain
//! `cargo test`: the secret envelope used to keep tokens encrypted at rest, the Graph API
//! request/response model, webhook parsing and signature verification.
//!
//! - [`recipient`]: phone numbers and business-scoped user ids (BSUIDs);
//! - [`message`]: the outbound message model, the validator for host-supplied message JSON,
//!   the exact request body to POST, and short previews;
//! - [`error`]: the Graph error envelope and how each error is handled (retry, throttle, …);
//! - [`api`]: a blocking, thread-safe HTTP client for the Graph API endpoints we use;
//! - [`webhook`]: tolerant parsing of webhook deliveries;
//! - [`signature`]: `X-Hub-Signature-256` verification;
//! - [`crypto`]: secrets at rest.

pub mod api;
pub mod crypto;
pub mod error;
pub mod message;
pub mod recipient;
pub mod signature;
pub mod webhook;

pub use api::{ApiError, GraphClient, GraphConfig, TransportKind};
pub use error::{ErrorClass, GraphError, ThrottleScope, classify};
pub use message::{ValidatedMessage, ValidationError, build_send_body, preview, validate_message};
pub use recipient::{Recipient, RecipientError};
pub use webhook::{Delivery, WebhookError, parse_delivery, parse_delivery_value};
