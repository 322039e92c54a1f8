//! Replays every input kept under `fuzz/regressions/<target>/` through the same code as the fuzz
//! target: crash inputs the fuzzers find are kept there, and hostile shapes (deep nesting, huge
//! numbers) are seeded by hand. Each must be handled without a panic or a stack overflow.

use std::path::Path;

use cosigner::client::signature::{SignOrder, body_params, canonical_string};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no inputs in {}", dir.display());
    v
}

/// Runs `f` on a thread with the stack a daemon worker has (2 MiB), so a recursion blow-up
/// shows as a failure here rather than in production.
fn on_small_stack(name: &str, f: impl FnOnce() + Send + 'static) {
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join();
    assert!(r.is_ok(), "{name} panicked");
}

#[test]
fn kept_pending_list_inputs_are_handled() {
    for (name, bytes) in inputs("pending_list") {
        on_small_stack(&name.clone(), move || {
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Ok(page) = cosigner::client::types::parse_pending_page(text)
            {
                for item in page.items.into_iter().flatten() {
                    if let Some(a) = &item.amount {
                        let _ = cosigner::domain::parse_decimal(a);
                    }
                    let _ = cosigner::ledger::fingerprint(&item);
                }
            }
        });
    }
}

#[test]
fn kept_policy_inputs_are_handled() {
    for (name, bytes) in inputs("policy_parser") {
        on_small_stack(&name.clone(), move || {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let r =
                    cosigner::policy::parse(text, Path::new("fuzz.toml"), &|_| Ok(String::new()));
                assert!(r.is_err(), "hostile input accepted as a policy");
            }
        });
    }
}

#[test]
fn kept_sign_inputs_are_handled() {
    for (name, bytes) in inputs("sign_canonical") {
        on_small_stack(&name.clone(), move || {
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Ok(params) = body_params(text)
            {
                for order in [SignOrder::CaseInsensitive, SignOrder::Ascii] {
                    let a = canonical_string(
                        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        order,
                    );
                    let b = canonical_string(
                        params.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())),
                        order,
                    );
                    assert_eq!(a, b);
                }
            }
        });
    }
}
