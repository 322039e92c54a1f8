//! Fuzzes the request signer's canonical string: any body must give a canonical string (or a
//! JSON error), deterministically, in both orders, never panic; and the string never contains a
//! key whose value was empty or null.
#![no_main]

use cosigner::client::signature::{SignOrder, body_params, canonical_string, request_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = body_params(text) else {
        return;
    };
    for order in [SignOrder::CaseInsensitive, SignOrder::Ascii] {
        let a = canonical_string(params.iter().map(|(k, v)| (k.as_str(), v.as_str())), order);
        let b = canonical_string(
            params.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())),
            order,
        );
        assert_eq!(a, b, "the canonical string must not depend on field order");
        assert_eq!(request_signature(&a, "s").len(), 32);
    }
    for (_, v) in &params {
        assert!(!v.is_empty());
    }
});
