#![no_main]
//! Arbitrary JSON as a host-supplied message: validation, preview and body building must never
//! panic.

use libfuzzer_sys::fuzz_target;
use whatsapp_client::Recipient;
use whatsapp_client::message::{build_send_body, preview, validate_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = validate_message(&v);
        let _ = preview(&v);
        if let Ok(to) = Recipient::parse("16505551234") {
            let _ = build_send_body(&to, &v, Some("fuzz"));
        }
    }
});
