//! Shadow replay: re-evaluates every transaction in the ledger under a candidate policy, in the
//! order they were decided and with window usage rebuilt from the candidate's own approvals, and
//! reports the decisions that would change.

use rust_decimal::Decimal;
use serde::Serialize;

use std::collections::HashMap;

use crate::client::parse_pending_item;
use crate::control::Mode;
use crate::domain::{Action, ClockCheck, TxId};
use crate::ledger::{DecisionRow, TxState};
use crate::plan::{Inputs, Plan, plan};
use crate::policy::{Approval, Policy, Usage};

/// One decision that would change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Change {
    /// Transaction id.
    pub(crate) tx_id: TxId,
    /// What was decided.
    pub(crate) old: Action,
    /// What the candidate decides.
    pub(crate) new: Action,
    /// The candidate's deciding rule.
    pub(crate) rule: String,
    /// The candidate's reason.
    pub(crate) reason: String,
}

/// The replay's result.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    /// Transactions (distinct contents) re-evaluated.
    pub(crate) replayed: usize,
    /// Those whose action would differ.
    pub(crate) changes: Vec<Change>,
}

/// Usage of `policy`'s windows at `at_ms`, from the candidate's approvals up to then.
fn usage_at(policy: &Policy, approvals: &[(i64, String, Decimal)], at_ms: i64) -> Usage {
    Usage::at(
        policy,
        at_ms,
        std::time::Duration::ZERO,
        approvals
            .iter()
            .enumerate()
            .filter(|(_, (t, _, _))| *t <= at_ms)
            .map(|(i, (t, rule, amount))| Approval {
                key: i as u64,
                rule,
                amount: *amount,
                at_ms: *t,
            }),
    )
}

/// Replays a ledger's decisions, `rows` newest first (as `list` gives them), under `policy`.
pub(crate) fn replay(mut rows: Vec<DecisionRow>, policy: &Policy, max_sign_len: usize) -> Report {
    rows.reverse();
    // The latest decision about each content is what stands; replay those in decision order.
    let mut latest: std::collections::HashMap<(TxId, String), DecisionRow> = Default::default();
    for r in rows {
        latest.insert((r.tx_id, r.fingerprint.clone()), r);
    }
    let mut standing: Vec<DecisionRow> = latest.into_values().collect();
    standing.sort_by_key(|r| r.seq);
    let mut approvals: Vec<(i64, String, Decimal)> = Vec::new();
    // The candidate's own approve/reject per id: a later content under the same id is then held,
    // as the daemon would hold it.
    let mut decided: HashMap<TxId, DecisionRow> = HashMap::new();
    let mut report = Report::default();
    for row in standing {
        let Ok(tx) = parse_pending_item(&row.tx_json) else {
            continue;
        };
        report.replayed += 1;
        let usage = usage_at(policy, &approvals, row.recorded_at_ms);
        let state = TxState {
            decided_other: decided
                .get(&row.tx_id)
                .filter(|d| d.fingerprint != row.fingerprint)
                .cloned(),
            ..TxState::default()
        };
        let Plan::Decide(eval) = plan(
            &tx,
            &state,
            &Inputs {
                policy,
                mode: Mode::Normal,
                usage: &usage,
                max_sign_len,
                clock: ClockCheck::Ok,
                listed_twice: false,
                trace: false,
            },
        ) else {
            continue;
        };
        if eval.action != Action::Hold && !decided.contains_key(&row.tx_id) {
            let mut as_decided = row.clone();
            as_decided.action = eval.action;
            decided.insert(row.tx_id, as_decided);
        }
        if let (Action::Approve, Some(amount)) = (eval.action, eval.amount) {
            approvals.push((row.recorded_at_ms, eval.rule.to_string(), amount));
        }
        if eval.action != row.action {
            report.changes.push(Change {
                tx_id: row.tx_id,
                old: row.action,
                new: eval.action,
                rule: eval.rule.into_owned(),
                reason: eval.reason.to_string(),
            });
        }
    }
    report
}
