//! A client for Meta's WhatsApp Cloud API (the Graph API) that knows nothing about PostgreSQL.
//!
//! It holds everything the `whatsapp_pg` extension needs that can be tested with plain
//! `cargo test`: the secret envelope used to keep tokens encrypted at rest, the Graph API
//! request/response model, webhook parsing and signature verification.

pub mod crypto;
