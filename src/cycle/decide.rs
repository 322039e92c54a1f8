//! Deciding a page: each listed transaction planned from the policy, mode and ledger, the page's
//! decisions recorded before anything leaves.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::domain::{Action, ClockCheck, Decision, TxId, Withdrawal, decision_text};
use crate::ledger::{DecisionRow, EventKind, NewDecision, ResendRecord};
use crate::plan::RULE_DECIDED;
use crate::plan::{Inputs, Plan, plan};
use crate::policy::{HoldKey, Policy, Usage, window_slack};

use super::{CycleError, CycleOutcome, DecisionEvent, Engine, Send, resend_request};

/// True when a hold or dry run decides what the last unsent record for this content decided:
/// the same action by the same rule for the same kind of reason ([`HoldKey`]), whatever the
/// numbers in its sentence (a window count that moves is not a new decision).
pub(super) fn unchanged(last: Option<&DecisionRow>, d: &NewDecision) -> bool {
    let Some(last) = last else { return false };
    if !(d.action == Action::Hold || d.dry_run) {
        return false;
    }
    last.action == d.action
        && last.dry_run == d.dry_run
        && last.hold_key() == HoldKey::of(&d.rule, &d.reason)
}

impl Engine {
    /// Window usage and clock state at the start of a cycle (after the listing, whose answers
    /// carried the server's clock).
    pub(super) async fn prepare(
        &self,
        policy: &Arc<Policy>,
        since: std::time::Instant,
    ) -> Result<(Usage, ClockCheck), CycleError> {
        let newest = self
            .ledger
            .newest_record_ms()
            .await
            .map_err(CycleError::Ledger)?;
        let now = self.clock.now_ms();
        let behind = newest.is_some_and(|t| t > now);
        let mut clock = ClockCheck::Ok;
        if behind {
            warn!(
                newest_record_ms = newest,
                now_ms = now,
                "the clock is behind the newest ledger record; approvals wait"
            );
            clock = ClockCheck::BehindLedger;
        } else if let Some(doubt) = self.client.clock_doubt(Some(since)) {
            warn!(
                doubt = %doubt,
                allowed_s = self.client.config().max_clock_skew.as_secs(),
                "the clock cannot be trusted against the server's; approvals wait"
            );
            clock = ClockCheck::OffServer(doubt);
        }
        let slack = window_slack(self.client.config().max_clock_skew);
        let usage = self
            .ledger
            .usage_with_slack(policy.clone(), now, slack)
            .await
            .map_err(CycleError::Ledger)?;
        Ok((usage, clock))
    }

    /// Plans every transaction of one page (see [`crate::plan::plan`]); returns the new records
    /// and the re-sends, having recorded the re-sends and the waits.
    ///
    /// The page's states are read in one ledger call, and its decisions recorded in another
    /// after signing, with no lock held in between. That is enough for one decision per id:
    /// decisions are recorded only by a cycle, never by two at once (`cycle_lock`, and one
    /// process per ledger), and each id comes once in a listing; what else writes meanwhile
    /// (the operator API's and the submissions' events, outcomes of earlier pages' sends, the
    /// collector) never touches the decisions of this page's ids.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn decide(
        &self,
        policy: &Policy,
        generation: u64,
        clock: ClockCheck,
        txs: &[Withdrawal],
        conflicting: &HashSet<TxId>,
        usage: &mut Usage,
        out: &mut CycleOutcome,
    ) -> Result<(Vec<NewDecision>, Vec<Send>), CycleError> {
        let states = self
            .ledger
            .states(txs.to_vec())
            .await
            .map_err(CycleError::Ledger)?;
        let mode = self.control.mode();
        let max_sign_len = self.signer.max_text_len();
        let now = self.clock.now_ms();
        let mut batch = Vec::new();
        let mut sends = Vec::new();
        let mut resends = Vec::new();
        let mut waits = Vec::new();
        for (tx, state) in txs.iter().zip(&states) {
            let planned = plan(
                tx,
                state,
                &Inputs {
                    policy,
                    mode,
                    usage,
                    max_sign_len,
                    clock,
                    listed_twice: conflicting.contains(&tx.id),
                    trace: false,
                },
            );
            let eval = match planned {
                Plan::Decide(eval) => eval,
                Plan::Done { seq } => {
                    info!(
                        tx_id = tx.id.get(),
                        seq, "still listed after the server accepted our decision"
                    );
                    continue;
                }
                Plan::Resend { seq, approval } => {
                    let Some(live) = state.live.as_ref() else {
                        continue;
                    };
                    if self.settings.dry_run {
                        info!(
                            tx_id = tx.id.get(),
                            seq,
                            "dry run: the recorded decision would be sent again; nothing is sent"
                        );
                        continue;
                    }
                    if let Some(req) = resend_request(live) {
                        if let Some((rule, amount)) = &approval {
                            // Counted from now, under the rule that approves it now, in this
                            // cycle and (through the event recorded before it leaves) after.
                            usage.count_recorded(seq, *amount, Some(rule), true);
                            resends.push(ResendRecord {
                                seq,
                                tx_id: tx.id,
                                rule: rule.clone(),
                                amount: *amount,
                            });
                        }
                        out.resent += 1;
                        info!(
                            tx_id = tx.id.get(),
                            seq,
                            action = live.action.as_str(),
                            "re-sending the recorded decision"
                        );
                        sends.push(Send {
                            seq,
                            req,
                            generation,
                            approval,
                            // Set to before the page's `resend` events are written, below.
                            stamped: Instant::now(),
                        });
                    }
                    continue;
                }
                Plan::Wait { seq, reason } => {
                    out.held += 1;
                    info!(tx_id = tx.id.get(), seq, reason = %reason, "recorded decision not sent");
                    // Once per kind of reason: its numbers (a window count) move every cycle,
                    // and are in the log line above and in `policy explain`.
                    let kind = HoldKey::of("", &reason).kind;
                    waits.push(
                        serde_json::json!({"tx_id": tx.id, "seq": seq, "reason": kind}).to_string(),
                    );
                    continue;
                }
            };
            if state.other_contents > 0 && state.decided_other.is_none() {
                warn!(
                    tx_id = tx.id.get(),
                    "the server shows this id with different fields than before; deciding it anew"
                );
            }
            let mut d = NewDecision {
                tx: tx.clone(),
                action: eval.action,
                rule: eval.rule.into_owned(),
                // The sentence is written here, as the decision is about to be recorded.
                reason: eval.reason.to_string(),
                policy_sha256: policy.sha256.clone(),
                dry_run: self.settings.dry_run,
                amount: eval.amount.filter(|_| eval.action == Action::Approve),
                signed_text: None,
                data: None,
            };
            if let Some(verdict) = d.action.verdict() {
                let text = decision_text(&Decision {
                    id: tx.id,
                    from: tx.from.as_deref().unwrap_or_default(),
                    to: tx.to.as_deref().unwrap_or_default(),
                    value: tx.amount.as_deref().unwrap_or_default(),
                    chain_id: tx.chain_id.as_deref().unwrap_or_default(),
                    verdict,
                });
                // Signed below, the whole page at once.
                d.signed_text = Some(text);
            }
            if d.action == Action::Hold {
                out.held += 1;
                let since = state.first_hold_ms.unwrap_or(now);
                out.oldest_hold_ms = out
                    .oldest_hold_ms
                    .max(u64::try_from(now.saturating_sub(since)).unwrap_or(0));
            }
            if unchanged(state.last_unsent.as_ref(), &d) {
                if d.action == Action::Hold {
                    out.holds_unchanged += 1;
                }
                continue;
            }
            if d.rule == RULE_DECIDED {
                warn!(
                    tx_id = tx.id.get(),
                    reason = %d.reason,
                    "an id already decided is listed again with other fields; held, never signed again"
                );
                self.metrics.id_reuse.inc();
            }
            if let (Action::Approve, Some(amount)) = (d.action, d.amount) {
                usage.add_approval(&d.rule, amount);
            }
            batch.push(d);
        }
        // A wait is an event, never a new decision; once per kind of reason.
        for detail in waits {
            self.ledger
                .record_event_once(EventKind::Waiting, &detail)
                .await
                .map_err(CycleError::Ledger)?;
        }
        // Written before any of them leaves; if it cannot be, none does. Each leaves on the
        // stamp of this write, so they are timed from before it.
        let stamped = Instant::now();
        for s in &mut sends {
            s.stamped = stamped;
        }
        self.ledger
            .record_resends(resends)
            .await
            .map_err(CycleError::Ledger)?;
        Ok((batch, sends))
    }

    pub(super) fn note_decision(&self, d: &NewDecision, seq: u64, out: &mut CycleOutcome) {
        *out.decided
            .entry(d.action.as_str().to_string())
            .or_default() += 1;
        self.metrics
            .decisions
            .with_label_values(&[d.action.as_str(), &d.rule])
            .inc();
        info!(
            tx_id = d.tx.id.get(),
            chain = d.tx.chain_id.as_deref().unwrap_or("?"),
            to = d.tx.to.as_deref().unwrap_or("?"),
            amount = d.tx.amount.as_deref().unwrap_or("?"),
            action = d.action.as_str(),
            rule = %d.rule,
            reason = %d.reason,
            dry_run = d.dry_run,
            seq,
            "decision"
        );
        if let Some(tx) = &self.events {
            let _ = tx.send(DecisionEvent {
                tx_id: d.tx.id,
                chain: d.tx.chain_id.clone(),
                to: d.tx.to.clone(),
                amount: d.tx.amount.clone(),
                action: d.action,
                rule: d.rule.clone(),
                reason: d.reason.clone(),
                dry_run: d.dry_run,
            });
        }
    }
}
