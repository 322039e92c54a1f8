//! The one place a listed transaction's fate is decided: the kill switch, one decision per id for
//! ever, the re-check before a recorded approval is sent again, malformed input, and the policy.
//! Pure: the cycle, `policy explain` and `policy replay` all call `plan`, so what explain says
//! is what the daemon does.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::control::Mode;
use crate::domain::{Action, ClockCheck, Withdrawal};
use crate::ledger::{DecisionRow, Status, TxState};
use crate::policy::{Context, Evaluation, Policy, RULE_MALFORMED, Reason, Usage};

/// Pseudo-rule recorded when the kill switch decided.
pub(crate) const RULE_PAUSED: &str = "(paused)";
/// Pseudo-rule recorded when an id that was already approved or rejected is listed again with
/// other fields.
pub(crate) const RULE_DECIDED: &str = "(decided)";

/// Everything besides the transaction and its recorded state that a plan depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    /// The policy in force.
    pub(crate) policy: &'a Policy,
    /// The kill-switch mode in force.
    pub(crate) mode: Mode,
    /// Window usage, recorded approvals included.
    pub(crate) usage: &'a Usage,
    /// Longest text the key can sign.
    pub(crate) max_sign_len: usize,
    /// Whether the wall clock can be trusted for windows.
    pub(crate) clock: ClockCheck,
    /// The listing showed this id twice with different fields.
    pub(crate) listed_twice: bool,
    /// Keep every rule's trace in the evaluation (for `policy explain`; the cycle does not).
    pub(crate) trace: bool,
}

/// What to do about one listed transaction.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum Plan {
    /// Record a new decision (approve, reject or hold); approvals and rejections are then signed
    /// and sent.
    Decide(Evaluation),
    /// Send the recorded decision `seq` again, with its identical `data`.
    Resend {
        /// The recorded decision.
        seq: u64,
        /// For an approval: the rule that approves it now and its amount, to count in windows.
        approval: Option<(String, Decimal)>,
    },
    /// The recorded decision `seq` is not sent now; nothing new is decided either.
    Wait {
        /// The recorded decision.
        seq: u64,
        /// Why it waits.
        reason: String,
    },
    /// The server already accepted the recorded decision `seq`.
    Done {
        /// The recorded decision.
        seq: u64,
    },
}

impl Plan {
    /// What the plan amounts to, for summaries: a `Wait` is a hold.
    #[must_use]
    pub fn action(&self, recorded: Option<&DecisionRow>) -> Action {
        match self {
            Plan::Decide(e) => e.action,
            Plan::Wait { .. } => Action::Hold,
            Plan::Resend { .. } | Plan::Done { .. } => recorded.map_or(Action::Hold, |r| r.action),
        }
    }
}

fn held(rule: &'static str, reason: String) -> Evaluation {
    Evaluation {
        action: Action::Hold,
        rule: rule.into(),
        reason: Reason::Text(reason),
        amount: None,
        trace: Vec::new(),
    }
}

/// When `ms` was, for reasons a person reads.
#[must_use]
pub(crate) fn format_time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Decides what to do with `tx`, given what the ledger holds about its id. The rules, in order:
///
/// 1. This very content has a recorded approve/reject (not a dry run): it is never decided
///    again. Accepted by the server: nothing to do. While the listing shows the id twice with
///    different fields, or the ledger (written before this rule) also holds a decision for other
///    fields, it waits. A reject is re-sent identically (unless the kill switch holds
///    everything). An approval is re-sent identically only if the mode is normal and the policy
///    in force would approve the same content now (its own earlier approval not counted in the
///    windows); otherwise it waits, and is never turned into another decision.
/// 2. The id has a recorded approve/reject for other content: held, never signed again.
/// 3. The listing showed the id twice with different fields: held.
/// 4. The policy evaluates it (malformed input is held before any rule).
/// 5. The kill switch turns whatever the policy said (malformed holds excepted) into a hold, or
///    into a reject.
#[must_use]
pub(crate) fn plan(tx: &Withdrawal, state: &TxState, inp: &Inputs<'_>) -> Plan {
    if let Some(live) = &state.live {
        if live.status == Status::Submitted {
            return Plan::Done { seq: live.seq };
        }
        if inp.listed_twice {
            return Plan::Wait {
                seq: live.seq,
                reason: "the listing shows this id twice with different fields: the recorded \
                         decision waits"
                    .into(),
            };
        }
        if let Some(other) = &state.decided_other {
            // Only a ledger written before one-decision-per-id holds both: send neither again.
            return Plan::Wait {
                seq: live.seq,
                reason: format!(
                    "this id also has a recorded {} for other fields (record {}): nothing more \
                     is sent for it",
                    other.action.as_str(),
                    other.seq
                ),
            };
        }
        return recorded(tx, live, inp);
    }
    if let Some(other) = &state.decided_other {
        return Plan::Decide(held(
            RULE_DECIDED,
            format!(
                "already decided ({} at {}, record {}); listed again with other fields",
                other.action.as_str(),
                format_time(other.recorded_at_ms),
                other.seq
            ),
        ));
    }
    if inp.listed_twice {
        return Plan::Decide(held(
            RULE_MALFORMED,
            "the listing showed this id twice with different fields".into(),
        ));
    }
    let mut eval = evaluate(tx, inp, inp.usage);
    if inp.mode != Mode::Normal && eval.rule != RULE_MALFORMED {
        let (action, what) = match inp.mode {
            Mode::Reject => (Action::Reject, "reject-all"),
            _ => (Action::Hold, "hold-all"),
        };
        eval.reason = Reason::Text(format!(
            "{what} mode set by an operator (the policy said: {} by {})",
            eval.action, eval.rule
        ));
        eval.action = action;
        eval.rule = RULE_PAUSED.into();
    }
    Plan::Decide(eval)
}

fn evaluate(tx: &Withdrawal, inp: &Inputs<'_>, usage: &Usage) -> Evaluation {
    let ctx = Context {
        usage,
        max_sign_len: inp.max_sign_len,
        clock: inp.clock,
    };
    if inp.trace {
        inp.policy.evaluate(tx, ctx)
    } else {
        inp.policy.decide(tx, ctx)
    }
}

/// Rule 1: a recorded approve/reject for this very content.
fn recorded(tx: &Withdrawal, live: &DecisionRow, inp: &Inputs<'_>) -> Plan {
    let seq = live.seq;
    match live.action {
        Action::Reject if inp.mode == Mode::Hold => Plan::Wait {
            seq,
            reason: "hold-all mode set by an operator: the recorded reject waits".into(),
        },
        Action::Reject | Action::Hold => Plan::Resend {
            seq,
            approval: None,
        },
        Action::Approve if inp.mode != Mode::Normal => Plan::Wait {
            seq,
            reason: format!(
                "{}-all mode set by an operator: the recorded approval waits",
                inp.mode.as_str()
            ),
        },
        Action::Approve => {
            let usage = inp.usage.without(live.seq);
            let now = evaluate(tx, inp, &usage);
            match (now.action, now.amount) {
                (Action::Approve, Some(amount)) => Plan::Resend {
                    seq,
                    approval: Some((now.rule.into_owned(), amount)),
                },
                _ => Plan::Wait {
                    seq,
                    reason: format!(
                        "the recorded approval is not sent again: the policy in force now says \
                         {} by {} ({})",
                        now.action.as_str(),
                        now.rule,
                        now.reason
                    ),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
