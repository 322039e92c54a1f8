//! One pending cycle: read every page of the pending list, decide each transaction by the policy,
//! record the decisions durably, and only then send them; record what the server said.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, instrument, warn};

use crate::client::{ApproveRequest, Client, ClientError, MalformedItem, PendingTx};
use crate::ledger::{DecisionRow, Ledger, LedgerError, NewDecision, Outcome, Status, now_ms};
use crate::policy::{Action, Context, Evaluation, Policy, RULE_MALFORMED};
use crate::signer::{Decision, Signer, decision_text};

/// Settings of the cycle.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Items asked per page.
    pub page_size: u32,
    /// Approve/reject requests in flight at once.
    pub max_in_flight: usize,
    /// Record decisions as dry runs and send nothing.
    pub dry_run: bool,
    /// Most pages read in one cycle, whatever `total` says.
    pub max_pages: u32,
}

/// Default cap on pages per cycle.
pub const DEFAULT_MAX_PAGES: u32 = 1000;

/// What one cycle did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CycleOutcome {
    /// Distinct transactions listed.
    pub listed: u64,
    /// List items that could not be identified.
    pub malformed_items: u64,
    /// New decisions recorded, by action.
    pub decided: BTreeMap<String, u64>,
    /// Holds seen again with the same reason (not recorded again).
    pub holds_unchanged: u64,
    /// Transactions currently held (new or unchanged).
    pub held: u64,
    /// Earlier decisions sent again with identical `data`.
    pub resent: u64,
    /// Requests the server accepted.
    pub submitted: u64,
    /// Requests that failed (re-sent next cycle while pending).
    pub failed: u64,
    /// Pages read.
    pub pages: u32,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// Why a cycle could not run.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The pending list could not be read.
    #[error("cannot read the pending list: {0}")]
    List(#[source] ClientError),
    /// The ledger failed; nothing was sent.
    #[error("ledger failure, nothing sent: {0}")]
    Ledger(#[source] LedgerError),
}

/// The long-lived pieces a cycle works with.
pub struct Engine {
    /// The API client.
    pub client: Arc<Client>,
    /// The key shard.
    pub signer: Arc<Signer>,
    /// The ledger (rusqlite is synchronous; calls are short).
    pub ledger: Arc<Mutex<Ledger>>,
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// Cycle settings.
    pub settings: PollSettings,
}

struct Listing {
    txs: Vec<PendingTx>,
    conflicting: HashSet<u64>,
    malformed: Vec<MalformedItem>,
    pages: u32,
}

struct Send {
    seq: u64,
    req: ApproveRequest,
}

impl Engine {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every page, de-duplicating by id, stopping at `total` or when paging goes nowhere.
    async fn list_all(&self) -> Result<Listing, CycleError> {
        let size = self.settings.page_size;
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let mut txs: Vec<PendingTx> = Vec::new();
        let mut conflicting = HashSet::new();
        let mut malformed = Vec::new();
        let mut page = 1u32;
        let mut idle_pages = 0;
        loop {
            let p = self
                .client
                .pending(page, size)
                .await
                .map_err(CycleError::List)?;
            let mut new = 0;
            let n = p.items.len();
            for item in p.items {
                match item {
                    Ok(tx) => match seen.get(&tx.id) {
                        Some(&i) => {
                            let prev = &txs[i];
                            if (&prev.from, &prev.to, &prev.amount, &prev.chain_id)
                                != (&tx.from, &tx.to, &tx.amount, &tx.chain_id)
                            {
                                conflicting.insert(tx.id);
                            }
                        }
                        None => {
                            seen.insert(tx.id, txs.len());
                            txs.push(tx);
                            new += 1;
                        }
                    },
                    Err(m) => malformed.push(m),
                }
            }
            idle_pages = if new == 0 { idle_pages + 1 } else { 0 };
            let expected_pages = p.total.div_ceil(u64::from(size)).max(1);
            if n == 0 || txs.len() as u64 >= p.total || u64::from(page) > expected_pages {
                break;
            }
            if idle_pages >= 2 {
                warn!(
                    page,
                    total = p.total,
                    "pending pages bring nothing new; stopping this listing"
                );
                break;
            }
            if page >= self.settings.max_pages {
                warn!(
                    page,
                    total = p.total,
                    "page limit reached; the rest waits for the next cycle"
                );
                break;
            }
            page += 1;
        }
        Ok(Listing {
            txs,
            conflicting,
            malformed,
            pages: page,
        })
    }

    /// Runs one cycle: list, decide, record, send, record outcomes.
    #[instrument(skip_all, name = "cycle")]
    pub async fn cycle_once(&self) -> Result<CycleOutcome, CycleError> {
        let started = Instant::now();
        let listing = self.list_all().await?;
        let mut out = CycleOutcome {
            listed: listing.txs.len() as u64,
            malformed_items: listing.malformed.len() as u64,
            pages: listing.pages,
            ..Default::default()
        };
        for m in &listing.malformed {
            warn!(reason = %m.reason, item = %m.raw, "pending item cannot be identified; nothing can be done with it");
        }

        let (batch, mut sends) = self.decide(&listing, &mut out)?;

        let seqs = if batch.is_empty() {
            Vec::new()
        } else {
            self.ledger().record_decisions(&batch).map_err(|e| {
                tracing::error!(error = %e, "cannot record decisions; sending nothing");
                CycleError::Ledger(e)
            })?
        };
        for (d, seq) in batch.iter().zip(&seqs) {
            *out.decided
                .entry(d.action.as_str().to_string())
                .or_default() += 1;
            info!(
                tx_id = d.tx.id,
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
            if d.action != Action::Hold
                && !d.dry_run
                && let (Some(data), Some(verdict)) = (&d.data, d.action.verdict())
            {
                sends.push(Send {
                    seq: *seq,
                    req: approve_request(&d.tx, verdict.status(), data),
                });
            }
        }

        let outcomes = self.send_all(sends).await;
        out.submitted = outcomes.iter().filter(|o| o.ok).count() as u64;
        out.failed = outcomes.len() as u64 - out.submitted;
        if let Err(e) = self.ledger().record_outcomes(&outcomes) {
            // The decisions are durable; they are re-sent (identically) next cycle.
            tracing::error!(error = %e, "cannot record submission outcomes");
            return Err(CycleError::Ledger(e));
        }
        out.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            listed = out.listed,
            decided = ?out.decided,
            held = out.held,
            resent = out.resent,
            submitted = out.submitted,
            failed = out.failed,
            duration_ms = out.duration_ms,
            "cycle done"
        );
        Ok(out)
    }

    /// Evaluates what has no live decision; returns new records and re-sends.
    fn decide(
        &self,
        listing: &Listing,
        out: &mut CycleOutcome,
    ) -> Result<(Vec<NewDecision>, Vec<Send>), CycleError> {
        let ledger = self.ledger();
        let now = now_ms();
        let newest = ledger.newest_record_ms().map_err(CycleError::Ledger)?;
        let clock_behind = newest.is_some_and(|t| t > now);
        if clock_behind {
            warn!(
                newest_record_ms = newest,
                now_ms = now,
                "the clock is behind the newest ledger record; approvals wait"
            );
        }
        let mut usage = ledger
            .usage(&self.policy, now)
            .map_err(CycleError::Ledger)?;
        let max_sign_len = self.signer.max_text_len();
        let mut batch = Vec::new();
        let mut sends = Vec::new();
        for tx in &listing.txs {
            let state = ledger.state(tx).map_err(CycleError::Ledger)?;
            if state.other_contents > 0 && state.live.is_none() && state.last_unsent.is_none() {
                warn!(
                    tx_id = tx.id,
                    "the server shows this id with different fields than before; deciding it anew"
                );
            }
            if let Some(live) = state.live {
                if live.status != Status::Submitted {
                    if let Some(req) = resend_request(&live) {
                        out.resent += 1;
                        info!(
                            tx_id = tx.id,
                            seq = live.seq,
                            action = live.action.as_str(),
                            "re-sending the recorded decision"
                        );
                        sends.push(Send { seq: live.seq, req });
                    }
                } else {
                    info!(
                        tx_id = tx.id,
                        seq = live.seq,
                        "still listed after the server accepted our decision"
                    );
                }
                continue;
            }
            let eval = if listing.conflicting.contains(&tx.id) {
                Evaluation {
                    action: Action::Hold,
                    rule: RULE_MALFORMED.into(),
                    reason: "the listing showed this id twice with different fields".into(),
                    amount: None,
                    trace: Vec::new(),
                }
            } else {
                self.policy.evaluate(
                    tx,
                    Context {
                        usage: &usage,
                        max_sign_len,
                        clock_behind,
                    },
                )
            };
            let mut d = NewDecision {
                tx: tx.clone(),
                action: eval.action,
                rule: eval.rule,
                reason: eval.reason,
                policy_sha256: self.policy.sha256.clone(),
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
                match self.signer.sign(&text) {
                    Ok(data) => {
                        d.signed_text = Some(text);
                        d.data = Some(data);
                    }
                    Err(e) => {
                        d.action = Action::Hold;
                        d.amount = None;
                        d.rule = RULE_MALFORMED.into();
                        d.reason = format!("cannot sign: {e}");
                    }
                }
            }
            if d.action == Action::Hold {
                out.held += 1;
            }
            if unchanged(state.last_unsent.as_ref(), &d) {
                if d.action == Action::Hold {
                    out.holds_unchanged += 1;
                }
                continue;
            }
            if let (Action::Approve, Some(amount)) = (d.action, d.amount) {
                usage.add_approval(&d.rule, amount);
            }
            batch.push(d);
        }
        Ok((batch, sends))
    }

    /// Sends every request with at most `max_in_flight` at once.
    async fn send_all(&self, sends: Vec<Send>) -> Vec<Outcome> {
        let permits = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let mut set = JoinSet::new();
        for s in sends {
            let client = self.client.clone();
            let permits = permits.clone();
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = client.approve(&s.req).await;
                (s.seq, s.req.id, result)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((seq, tx_id, result)) = joined else {
                continue;
            };
            match result {
                Ok(()) => outcomes.push(Outcome {
                    decision_seq: seq,
                    ok: true,
                    message: None,
                }),
                Err(e) => {
                    warn!(tx_id, seq, error = %e, "submission failed; it is re-sent next cycle while pending");
                    outcomes.push(Outcome {
                        decision_seq: seq,
                        ok: false,
                        message: Some(e.to_string()),
                    });
                }
            }
        }
        outcomes
    }
}

/// True when a hold or dry run says what the last unsent record for this content said.
fn unchanged(last: Option<&DecisionRow>, d: &NewDecision) -> bool {
    let Some(last) = last else { return false };
    if !(d.action == Action::Hold || d.dry_run) {
        return false;
    }
    last.action == d.action
        && last.dry_run == d.dry_run
        && last.rule == d.rule
        && last.reason == d.reason
}

fn approve_request(tx: &PendingTx, status: u8, data: &str) -> ApproveRequest {
    ApproveRequest {
        id: tx.id,
        from: tx.from.clone().unwrap_or_default(),
        to: tx.to.clone().unwrap_or_default(),
        value: tx.amount.clone().unwrap_or_default(),
        chain_id: tx.chain_id.clone().unwrap_or_default(),
        status,
        data: data.to_owned(),
    }
}

/// The request for a recorded decision, rebuilt from exactly what was recorded.
fn resend_request(row: &DecisionRow) -> Option<ApproveRequest> {
    let verdict = row.action.verdict()?;
    Some(ApproveRequest {
        id: row.tx_id,
        from: row.from.clone().unwrap_or_default(),
        to: row.to.clone().unwrap_or_default(),
        value: row.amount.clone().unwrap_or_default(),
        chain_id: row.chain_id.clone().unwrap_or_default(),
        status: verdict.status(),
        data: row.data.clone()?,
    })
}
