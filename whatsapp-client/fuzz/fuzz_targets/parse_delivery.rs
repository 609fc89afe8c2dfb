#![no_main]
//! Arbitrary bytes as a webhook body: parsing must never panic, and every change and part must
//! be reachable through the typed view.

use libfuzzer_sys::fuzz_target;
use whatsapp_client::webhook::{ChangeValue, parse_delivery};

fuzz_target!(|data: &[u8]| {
    let _ = whatsapp_client::signature::verify(b"fuzz-secret", data, Some("sha256=00"));
    if let Ok(delivery) = parse_delivery(data) {
        for change in delivery.changes() {
            if let ChangeValue::Messages(m) | ChangeValue::UserPreferences(m) = &change.value {
                for msg in m.messages.iter().flatten() {
                    let _ = msg.preview();
                    let _ = msg.media_id();
                }
                for status in m.statuses.iter().flatten() {
                    let _ = status.status.as_str();
                }
                let _ = m.error_count();
            }
        }
    }
});
