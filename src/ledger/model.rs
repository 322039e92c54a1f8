//! What the ledger holds and answers, as both back ends give it: decisions, outcomes, re-sends, a
//! transaction's recorded state, a page's query and a verify report.

use openssl::sha::Sha256;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;

use crate::display::hex;
use crate::domain::{Action, TxId, Withdrawal};

use super::record::DecisionRecord;
use super::sql::{Sent, Seq};

/// The identity of a transaction's content: SHA-256 over its id and the four signed fields.
#[must_use]
pub fn fingerprint(tx: &Withdrawal) -> String {
    let text = json!([tx.id, tx.from, tx.to, tx.amount, tx.chain_id]).to_string();
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    hex(&h.finish())
}

/// A decision about to be recorded.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// The transaction as received.
    pub tx: Withdrawal,
    /// What was decided.
    pub action: Action,
    /// The deciding rule or pseudo-rule.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// The policy version.
    pub policy_sha256: String,
    /// Recorded only, never sent.
    pub dry_run: bool,
    /// The approved amount, counted in window totals (approvals only).
    pub amount: Option<Decimal>,
    /// The exact signed text (approve/reject).
    pub signed_text: Option<String>,
    /// The `data` sent (approve/reject).
    pub data: Option<String>,
}

/// Where a decision's submission stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Written, not (yet) confirmed by the server.
    Recorded,
    /// The server accepted it.
    Submitted,
    /// The server refused it or could not be reached; it is re-sent while pending.
    Failed,
    /// Holds and dry runs: nothing to send.
    NotSent,
}

/// A recorded decision with its latest submission status.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    /// Position in the ledger.
    pub(crate) seq: u64,
    /// Transaction id.
    pub tx_id: TxId,
    /// Content fingerprint.
    pub fingerprint: String,
    /// The item's JSON as received.
    pub tx_json: String,
    /// `fromAddress`.
    pub(crate) from: Option<String>,
    /// `toAddress`.
    pub to: Option<String>,
    /// `amount` text.
    pub amount: Option<String>,
    /// `chainId`.
    pub(crate) chain_id: Option<String>,
    /// approve, reject or hold.
    pub action: Action,
    /// Deciding rule.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Policy version.
    pub policy_sha256: String,
    /// Recorded only.
    pub dry_run: bool,
    /// Signed text.
    pub signed_text: Option<String>,
    /// `data`.
    pub data: Option<String>,
    /// When it was recorded (ms since the epoch).
    pub recorded_at_ms: i64,
    /// Latest submission status.
    pub status: Status,
    /// The latest outcome's message (error text for failures).
    pub status_message: Option<String>,
}

/// A submission result to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decision it belongs to.
    pub decision_seq: u64,
    /// Accepted by the server.
    pub ok: bool,
    /// Error text when not.
    pub message: Option<String>,
}

/// Filters and cursor of a page of decisions.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Only this action.
    pub action: Option<Action>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this transaction.
    pub tx_id: Option<TxId>,
    /// Decisions older than this sequence number.
    pub starting_after: Option<u64>,
    /// Decisions newer than this sequence number.
    pub ending_before: Option<u64>,
    /// Page size.
    pub limit: usize,
}

/// What `ledger verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Of those, how many of each kind (`decision`, `outcome`, `collect`, `event`).
    pub(crate) by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Problems found; empty means the chain is intact.
    pub problems: Vec<String>,
}

impl DecisionRow {
    /// What this decision holds for: its rule and the kind of its reason (see
    /// [`crate::policy::HoldKey`]); a later hold with the same key is the same hold.
    #[must_use]
    pub fn hold_key(&self) -> crate::policy::HoldKey {
        crate::policy::HoldKey::of(&self.rule, &self.reason)
    }

    /// The row of decision `seq` whose latest outcome (if any) is `latest`, with `message`.
    pub(super) fn from_parts(
        seq: Seq,
        d: DecisionRecord,
        latest: Option<Sent>,
        message: Option<String>,
    ) -> Self {
        let status = match (d.action, d.dry_run, latest) {
            (Action::Hold, _, _) | (_, true, _) => Status::NotSent,
            (_, _, Some(Sent::Submitted)) => Status::Submitted,
            (_, _, Some(Sent::Failed)) => Status::Failed,
            (_, _, None) => Status::Recorded,
        };
        Self {
            seq: seq.0,
            tx_id: d.tx_id,
            fingerprint: d.fingerprint,
            tx_json: d.tx_json,
            from: d.from_addr,
            to: d.to_addr,
            amount: d.amount,
            chain_id: d.chain_id,
            action: d.action,
            rule: d.rule,
            reason: d.reason,
            policy_sha256: d.policy_sha256,
            dry_run: d.dry_run,
            signed_text: d.signed_text,
            data: d.data,
            recorded_at_ms: d.recorded_at_ms.0,
            status,
            status_message: message,
        }
    }
}

/// What an operational event records: its name is the `kind` column of the `events` table, so
/// a name never changes once a ledger holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The kill switch's mode was set (`{"mode", "by"}`); the newest one is the mode in force.
    Mode,
    /// A policy was put in force (its digest, its file and why it was loaded).
    Policy,
    /// A pending listing was refused (more items than `poll.max_items`).
    Listing,
    /// A withdrawal waits without a new decision (once per kind of reason).
    Waiting,
    /// A signed order callback arrived at the operator API.
    Order,
    /// An approval about to be sent again, and the rule that approves it now.
    Resend,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [Self; 6] = [
        Self::Mode,
        Self::Policy,
        Self::Listing,
        Self::Waiting,
        Self::Order,
        Self::Resend,
    ];

    /// The name stored in the ledger.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mode => "mode",
            Self::Policy => "policy",
            Self::Listing => "listing",
            Self::Waiting => "waiting",
            Self::Order => "order",
            Self::Resend => "resend",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approval about to be sent again, and the rule that approves it now: its windows count it
/// from this moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendRecord {
    /// The recorded decision.
    pub seq: u64,
    /// Its transaction.
    pub tx_id: TxId,
    /// The rule of the policy in force that approves it now.
    pub rule: String,
    /// Its amount.
    pub amount: Decimal,
}

impl ResendRecord {
    pub(super) fn to_detail(&self) -> String {
        json!({"seq": self.seq, "tx_id": self.tx_id, "rule": self.rule, "amount": self.amount.to_string()})
            .to_string()
    }

    pub(super) fn from_detail(detail: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(detail).ok()?;
        Some(Self {
            seq: v.get("seq")?.as_u64()?,
            tx_id: TxId::new(v.get("tx_id")?.as_u64()?),
            rule: v.get("rule")?.as_str()?.to_string(),
            amount: v.get("amount")?.as_str()?.parse().ok()?,
        })
    }
}

/// Latest decision state of one transaction content, as the cycle needs it.
#[derive(Debug, Clone, Default)]
pub struct TxState {
    /// The latest approve/reject that was (or is to be) sent, not a dry run.
    pub live: Option<DecisionRow>,
    /// The latest hold or dry-run record for this content.
    pub last_unsent: Option<DecisionRow>,
    /// Other contents seen under the same id.
    pub other_contents: usize,
    /// The latest approve or reject (not a dry run) recorded for this id with other content:
    /// once set, the id is never signed again with anything else.
    pub decided_other: Option<DecisionRow>,
    /// When this content was first held, if it ever was.
    pub first_hold_ms: Option<i64>,
}
