//! Fuzzes the pending-list parser: any bytes the server sends must parse or be refused, never
//! panic; every transaction it yields must be one the policy can judge without panicking.
#![no_main]

use std::sync::OnceLock;

use cosigner::domain::ClockCheck;
use cosigner::policy::{Context, Policy, Usage};
use libfuzzer_sys::fuzz_target;

/// A policy with every kind of condition: chains, lists, amounts, a window, a guard.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        cosigner::policy::parse(
            "default = \"hold\"\n[lists]\nok = [\"TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV\", \"0x8617E340B3D01FA5F11F306F4090FD50E238070D\"]\n\
             [[rule]]\nname = \"bad\"\naction = \"reject\"\nto = [\"TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7\"]\n\
             [[rule]]\nname = \"ok\"\naction = \"approve\"\nchains = [\"1\", \"195\"]\nto = [\"@ok\"]\nmin_amount = \"0.01\"\nmax_amount = \"1000\"\nwindow = \"1h\"\nmax_total = \"5000\"\nmax_count = 10\n\
             [guard]\nwindow = \"1h\"\nmax_approvals = 100\n",
            std::path::Path::new("fuzz.toml"),
            &|_| unreachable!(),
        )
        .expect("the fuzz policy parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = cosigner::client::types::parse_pending_page(text) {
        let usage = Usage::default();
        let ctx = Context {
            usage: &usage,
            max_sign_len: 245,
            clock: ClockCheck::Ok,
        };
        for item in page.items.into_iter().flatten() {
            if let Some(a) = &item.amount {
                let _ = cosigner::domain::parse_decimal(a);
            }
            let _ = cosigner::ledger::fingerprint(&item);
            let _ = policy().evaluate(&item, ctx);
        }
    }
});
