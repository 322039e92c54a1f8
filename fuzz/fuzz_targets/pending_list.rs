//! Fuzzes the pending-list parser: any bytes the server sends must parse or be refused, never
//! panic; every transaction it yields must be one the policy can judge without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(page) = cosigner::client::types::parse_pending_page(text) {
        for item in page.items.into_iter().flatten() {
            if let Some(a) = &item.amount {
                let _ = cosigner::client::types::parse_decimal(a);
            }
            let _ = cosigner::ledger::fingerprint(&item);
        }
    }
});
