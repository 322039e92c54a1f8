//! Sending: each request asks its gate before every attempt, and what the server said is recorded.

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::client::{ApproveRequest, ClientError, Gate, Refusal};
use crate::domain::{Verdict, Withdrawal};
use crate::ledger::{DecisionRow, Outcome, ResendRecord};
use crate::metrics::Submission;
use crate::policy::LATE_SEND;

use super::{CycleOutcome, Engine};

pub(super) struct Send {
    pub(super) seq: u64,
    pub(super) req: ApproveRequest,
    /// The policy generation the decision was checked under.
    pub(super) generation: u64,
    /// For an approval: the rule approving it and its amount, to count it in windows again when
    /// it leaves late.
    pub(super) approval: Option<(String, Decimal)>,
    /// No later than the moment its record (or `resend` event) was stamped: taken before the
    /// ledger was asked to write it, so a slow commit counts against [`LATE_SEND`].
    pub(super) stamped: Instant,
}

pub(super) fn approve_request(tx: &Withdrawal, verdict: Verdict, data: &str) -> ApproveRequest {
    ApproveRequest {
        id: tx.id,
        from: tx.from.clone().unwrap_or_default(),
        to: tx.to.clone().unwrap_or_default(),
        value: tx.amount.clone().unwrap_or_default(),
        chain_id: tx.chain_id.clone().unwrap_or_default(),
        status: verdict,
        data: data.to_owned(),
    }
}

/// The request for a recorded decision, rebuilt from exactly what was recorded.
pub(super) fn resend_request(row: &DecisionRow) -> Option<ApproveRequest> {
    let verdict = row.action.verdict()?;
    Some(ApproveRequest {
        id: row.tx_id,
        from: row.from.clone().unwrap_or_default(),
        to: row.to.clone().unwrap_or_default(),
        value: row.amount.clone().unwrap_or_default(),
        chain_id: row.chain_id.clone().unwrap_or_default(),
        status: verdict,
        data: row.data.clone()?,
    })
}

impl Engine {
    /// The gate a submission asks before every attempt: shutdown, the kill switch, and for an
    /// approval the policy generation it was checked under, the clock (as it reads now, against
    /// the server's `Date` and the newest record), and how recently the record it leaves on was
    /// stamped.
    pub(super) fn gate(&self, s: &Send) -> Gate {
        let (verdict, generation) = (s.req.status, s.generation);
        let control = self.control.clone();
        let shutdown = self.shutdown.clone();
        let client = self.client.clone();
        let lead = self.lead.clone();
        // Weak: a submission never keeps the ledger (and its lock) alive past the engine.
        let ledger = self.ledger.downgrade();
        let clock = self.clock.clone();
        let permit = move || -> Result<(), Refusal> {
            if shutdown.is_cancelled() {
                return Err("shutting down; it is sent after the restart".into());
            }
            // In a pair, only the confirmed leader sends, at the epoch its ledger writes with:
            // whoever leads next re-sends this record's identical data.
            if let Some(lead) = &lead
                && let Err(e) = lead.current()
            {
                return Err(format!("{e}; the leader sends it").into());
            }
            let mode = control.mode();
            if !mode.lets_out(verdict) {
                return Err(format!("{}-all mode set by an operator", mode.as_str()).into());
            }
            if verdict == Verdict::Approve {
                if control.generation() != generation {
                    return Err("the policy changed since this approval was checked; it is \
                                checked again next cycle"
                        .into());
                }
                if let Some(doubt) = client.clock_doubt(None) {
                    return Err(doubt.to_string().into());
                }
                // The newest known first, then the clock: a clock reading earlier went back.
                let newest = ledger
                    .upgrade()
                    .ok_or("the ledger is closed, so the attempt is not made")?
                    .newest_known_ms();
                if newest.is_some_and(|t| t > clock.now_ms()) {
                    return Err("the clock is behind the newest ledger record".into());
                }
            }
            Ok(())
        };
        let gate = Gate::new(permit, self.control.subscribe()).with_cancel(self.shutdown.clone());
        let Some((rule, amount)) = s.approval.clone() else {
            return gate;
        };
        // An approval leaving later than `LATE_SEND` after its record was stamped (a retry, a
        // wait for a slot, a slow commit) is written down again first, so that windows count it
        // from when it may have left; a write that is itself slow is made once more, and then
        // the attempt waits for the next cycle rather than leave on a stale stamp.
        let stamp = Arc::new(std::sync::Mutex::new(s.stamped));
        let stamped = {
            let stamp = stamp.clone();
            move || {
                *stamp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        };
        let on_time = {
            let stamped = stamped.clone();
            move || -> Result<(), Refusal> {
                let age = stamped().elapsed();
                if age < LATE_SEND {
                    return Ok(());
                }
                Err(format!(
                    "its record was stamped {} ms ago, more than the {} ms an approval may leave \
                     after it; it is checked again next cycle",
                    age.as_millis(),
                    LATE_SEND.as_millis()
                )
                .into())
            }
        };
        let ledger = self.ledger.downgrade();
        let (seq, tx_id) = (s.seq, s.req.id);
        gate.with_before_attempt(move |attempts| {
            // Half of `LATE_SEND` left for what follows (the checks, the connection).
            let fresh = attempts == 0 && stamped().elapsed() < LATE_SEND / 2;
            let (ledger, stamp) = (ledger.clone(), stamp.clone());
            let record = ResendRecord {
                seq,
                tx_id,
                rule: rule.clone(),
                amount,
            };
            async move {
                if fresh {
                    return Ok(());
                }
                let ledger = ledger
                    .upgrade()
                    .ok_or("the ledger is closed, so the attempt is not made")?;
                let mut took = std::time::Duration::ZERO;
                for _ in 0..2 {
                    let before = Instant::now();
                    ledger
                        .record_resends(vec![record.clone()])
                        .await
                        .map_err(|e| {
                            Refusal::from(format!(
                                "cannot record the attempt, so it is not made: {e}"
                            ))
                        })?;
                    took = before.elapsed();
                    if took < LATE_SEND / 2 {
                        *stamp
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = before;
                        return Ok(());
                    }
                }
                Err(format!(
                    "recording the attempt took {} ms, so it would leave on a stale record; it is \
                     checked again next cycle",
                    took.as_millis()
                )
                .into())
            }
        })
        .with_leaving_check(on_time)
    }

    pub(super) fn spawn_send(
        &self,
        set: &mut JoinSet<Option<Outcome>>,
        permits: &Arc<Semaphore>,
        s: Send,
    ) {
        let client = self.client.clone();
        let permits = permits.clone();
        let metrics = self.metrics.clone();
        let mut gate = self.gate(&s);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            crate::failpoint::hit(crate::failpoint::BEFORE_REQUEST);
            let result = client.approve_gated(&s.req, Some(&mut gate)).await;
            crate::failpoint::hit(crate::failpoint::AFTER_REQUEST);
            if let Err(ClientError::Stopped {
                attempts, reason, ..
            }) = &result
            {
                info!(tx_id = s.req.id.get(), seq = s.seq, attempts, reason = %reason, "submission stopped before its next attempt");
                if *attempts == 0 {
                    // Recorded, never sent: it waits for the next cycle, which checks it again.
                    return None;
                }
            }
            metrics.count_submission(Submission::Approve, result.is_ok());
            Some(match result {
                Ok(()) => Outcome {
                    decision_seq: s.seq,
                    ok: true,
                    message: None,
                },
                Err(e) => {
                    warn!(tx_id = s.req.id.get(), seq = s.seq, error = %e, "submission failed; it is re-sent next cycle while pending");
                    Outcome {
                        decision_seq: s.seq,
                        ok: false,
                        message: Some(e.to_string()),
                    }
                }
            })
        });
    }

    /// Records and clears `outcomes`. A failure here loses nothing: the decisions are durable
    /// and are re-sent, identically, next cycle.
    pub(super) async fn record_outcomes(
        &self,
        outcomes: &mut Vec<Outcome>,
        out: &mut CycleOutcome,
    ) {
        if outcomes.is_empty() {
            return;
        }
        let ok = outcomes.iter().filter(|o| o.ok).count() as u64;
        out.submitted += ok;
        out.failed += outcomes.len() as u64 - ok;
        if let Err(e) = self.ledger.record_outcomes(std::mem::take(outcomes)).await {
            tracing::error!(error = %e, "cannot record submission outcomes; they are re-sent next cycle");
        }
    }
}
