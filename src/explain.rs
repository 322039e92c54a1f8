//! `policy explain` as data: one transaction planned with the very code the daemon plans with,
//! against the window usage, the kill-switch mode and the id's own records read (read-only, so
//! safe beside a running daemon) from the ledger when there is one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::control::Mode;
use crate::domain::{ClockCheck, Withdrawal};
use crate::ledger::{EventKind, LedgerError, LedgerHandle, SqliteLedger, TxState};
use crate::plan::{Inputs, Plan, plan};
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
/// shard's longest signable text; `max_clock_skew` is `api.max_clock_skew` (windows reach
/// [`crate::policy::window_slack`] further back, as the daemon's do).
pub fn explain(
    policy: &Policy,
    ledger_path: &Path,
    max_sign_len: usize,
    max_clock_skew: std::time::Duration,
    tx: &Withdrawal,
    now_ms: i64,
) -> Result<Explanation, LedgerError> {
    let recorded = if ledger_path.exists() {
        let l = SqliteLedger::open_read_only(ledger_path)?;
        Some(Recorded {
            usage: l.usage_with_slack(
                policy,
                now_ms,
                crate::policy::window_slack(max_clock_skew),
            )?,
            newest_ms: l.newest_record_ms()?,
            mode: l.latest_event(EventKind::Mode)?,
            state: l.state(tx)?,
        })
    } else {
        None
    };
    let mut e = plan_from(policy, recorded, max_sign_len, tx, now_ms);
    e.ledger = ledger_path.exists().then(|| ledger_path.to_owned());
    Ok(e)
}

/// [`explain`] against a ledger already open (the PostgreSQL one of a pair), as of now by the
/// ledger's clock (the database's, as the daemon reads it); `ledger` in the answer is `None`,
/// the caller knows where it read.
pub(crate) async fn explain_from(
    policy: &Arc<Policy>,
    ledger: &LedgerHandle,
    max_sign_len: usize,
    max_clock_skew: std::time::Duration,
    tx: &Withdrawal,
) -> Result<Explanation, LedgerError> {
    // The newest record first: reading it brings the ledger's clock up to date.
    let newest_ms = ledger.newest_record_ms().await?;
    let now_ms = ledger.clock().now_ms();
    let recorded = Recorded {
        usage: ledger
            .usage_with_slack(
                policy.clone(),
                now_ms,
                crate::policy::window_slack(max_clock_skew),
            )
            .await?,
        newest_ms,
        mode: ledger.latest_event(EventKind::Mode).await?,
        state: ledger
            .states(vec![tx.clone()])
            .await?
            .pop()
            .unwrap_or_default(),
    };
    Ok(plan_from(policy, Some(recorded), max_sign_len, tx, now_ms))
}

/// What a ledger holds that a plan depends on.
struct Recorded {
    usage: Usage,
    newest_ms: Option<i64>,
    mode: Option<String>,
    state: TxState,
}

/// Plans `tx` with what the ledger holds (`None`: no ledger yet: usage zero, mode normal).
fn plan_from(
    policy: &Policy,
    recorded: Option<Recorded>,
    max_sign_len: usize,
    tx: &Withdrawal,
    now_ms: i64,
) -> Explanation {
    let (usage, clock, mode, state) = match recorded {
        Some(r) => {
            // A ledger with records from the future means this clock went back: the daemon
            // holds.
            let clock = if r.newest_ms.is_some_and(|t| t > now_ms) {
                ClockCheck::BehindLedger
            } else {
                ClockCheck::Ok
            };
            (
                r.usage,
                clock,
                Mode::from_latest_event(r.mode.as_deref()),
                r.state,
            )
        }
        None => (
            Usage::default(),
            ClockCheck::Ok,
            Mode::Normal,
            TxState::default(),
        ),
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
    Explanation {
        ledger: None,
        mode,
        state,
        plan,
    }
}
