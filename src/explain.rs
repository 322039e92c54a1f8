//! `policy explain` as data: one transaction planned with the very code the daemon plans with,
//! against the window usage, the kill-switch mode and the id's own records read (read-only, so
//! safe beside a running daemon) from the ledger when there is one.

use std::path::{Path, PathBuf};

use crate::domain::{ClockCheck, Withdrawal};
use crate::ledger::{Ledger, LedgerError, TxState};
use crate::plan::{Inputs, Mode, Plan, plan};
use crate::policy::{Policy, Usage};

/// How the daemon would handle one transaction now.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The ledger the usage, mode and records came from; `None` when there is none yet (usage
    /// zero, mode normal, no records).
    pub ledger: Option<PathBuf>,
    /// The kill-switch mode last recorded.
    pub mode: Mode,
    /// What the ledger holds for this transaction.
    pub state: TxState,
    /// What the daemon would do; a fresh decision carries the rule-by-rule trace.
    pub plan: Plan,
}

/// Plans `tx` under `policy` as the daemon would at `now_ms`, with what the ledger at
/// `ledger_path` holds (opened read-only, and only when it exists). `max_sign_len` is the key
/// shard's longest signable text; `max_clock_skew` is `api.max_clock_skew` (windows reach twice
/// it further back, as the daemon's do).
pub fn explain(
    policy: &Policy,
    ledger_path: &Path,
    max_sign_len: usize,
    max_clock_skew: std::time::Duration,
    tx: &Withdrawal,
    now_ms: i64,
) -> Result<Explanation, LedgerError> {
    let mut state = TxState::default();
    let (usage, clock, mode, ledger) = if ledger_path.exists() {
        let l = Ledger::open_read_only(ledger_path)?;
        let usage = l.usage_with_slack(policy, now_ms, max_clock_skew.saturating_mul(2))?;
        // A ledger with records from the future means this clock went back: the daemon holds.
        let behind = l.newest_record_ms()?.is_some_and(|t| t > now_ms);
        let mode = Mode::from_latest_event(l.latest_event("mode")?.as_deref());
        state = l.state(tx)?;
        let clock = if behind {
            ClockCheck::BehindLedger
        } else {
            ClockCheck::Ok
        };
        (usage, clock, mode, Some(ledger_path.to_owned()))
    } else {
        (Usage::default(), ClockCheck::Ok, Mode::Normal, None)
    };
    let plan = plan(
        tx,
        &state,
        &Inputs {
            policy,
            mode,
            usage: &usage,
            max_sign_len,
            clock,
            listed_twice: false,
            trace: true,
        },
    );
    Ok(Explanation {
        ledger,
        mode,
        state,
        plan,
    })
}
