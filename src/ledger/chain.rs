//! The records a write appends, each stamped with its time: decisions, outcomes, events,
//! collections; the stored head and the summary it folds.

use super::record::{
    CollectRecord, DecisionRecord, EventRecord, Head, OutcomeRecord, Record, record_hash,
};
use super::sql::{Millis, RangeError, Sent, Seq};
use super::{EventKind, LedgerError, NewDecision, Outcome, ResendRecord, fingerprint, summary};

/// Where a record goes in the chain: its number and the two hashes it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its sequence number: the head's, plus one.
    pub(crate) seq: Seq,
    /// The hash of the record before it (the head's).
    pub(crate) prev_hash: String,
    /// Its own hash, over `prev_hash`, `seq` and its content.
    pub(crate) hash: String,
}

/// Why a record could not be chained (nothing was written).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The head is the last sequence number a ledger can hold.
    #[error("{0}")]
    Number(RangeError),
    /// The content could not be put in its hashed form.
    #[error("cannot hash the record: {0}")]
    Hash(serde_json::Error),
}

/// The one chain step both back ends take: numbers `record` after `head`, hashes it over the
/// head's hash, and moves `head` to it. `buf` is scratch space reused across a batch.
pub(crate) fn link<R: Record>(
    head: &mut Head,
    record: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Link, LinkError> {
    let seq = head.seq.next().map_err(LinkError::Number)?;
    let hash = record_hash(&head.hash, seq, record, buf).map_err(LinkError::Hash)?;
    let prev_hash = std::mem::replace(&mut head.hash, hash.clone());
    head.seq = seq;
    Ok(Link {
        seq,
        prev_hash,
        hash,
    })
}

impl OutcomeRecord {
    /// The records of `outcomes`, all at `at`.
    pub(super) fn all(outcomes: &[Outcome], at: Millis) -> Vec<Self> {
        outcomes
            .iter()
            .map(|o| Self {
                decision_seq: Seq(o.decision_seq),
                status: if o.ok { Sent::Submitted } else { Sent::Failed },
                message: o.message.as_deref().map(storable),
                recorded_at_ms: at,
            })
            .collect()
    }
}

impl EventRecord {
    /// An event of `kind` at `at`.
    pub(super) fn at(kind: EventKind, detail: &str, at: Millis) -> Self {
        Self {
            kind: kind.as_str().to_string(),
            detail: storable(detail),
            recorded_at_ms: at,
        }
    }

    /// The `resend` events of `resends`, all at one moment.
    pub(super) fn resends(resends: &[ResendRecord], at: Millis) -> Vec<Self> {
        resends
            .iter()
            .map(|r| Self {
                kind: EventKind::Resend.as_str().to_string(),
                detail: r.to_detail(),
                recorded_at_ms: at,
            })
            .collect()
    }
}

impl CollectRecord {
    /// One collection's result at `at`.
    pub(super) fn at(is_main: bool, ok: bool, message: Option<&str>, at: Millis) -> Self {
        Self {
            is_main,
            ok,
            message: message.map(storable),
            recorded_at_ms: at,
        }
    }
}

/// `text` as both back ends store it: PostgreSQL's `text` cannot hold U+0000, so it becomes
/// U+FFFD REPLACEMENT CHARACTER, on SQLite too, so that one record hashes alike on both. Only
/// hostile input carries a NUL; a field holding one is never canonical, so it is never approved
/// (and never counted in a window), and the item's exact JSON, in `tx_json`, keeps it escaped.
pub(crate) fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// [`storable`] for an optional field.
pub(super) fn storable_opt(text: Option<&String>) -> Option<String> {
    text.map(|t| storable(t))
}

impl DecisionRecord {
    /// The records of `new`, all at one moment.
    pub(super) fn all(new: &[NewDecision], at: Millis) -> Vec<Self> {
        new.iter().map(|d| Self::new(d, at)).collect()
    }

    pub(super) fn new(d: &NewDecision, at: Millis) -> Self {
        Self {
            tx_id: d.tx.id,
            fingerprint: fingerprint(&d.tx),
            tx_json: storable(&d.tx.raw),
            from_addr: storable_opt(d.tx.from.as_ref()),
            to_addr: storable_opt(d.tx.to.as_ref()),
            amount: storable_opt(d.tx.amount.as_ref()),
            chain_id: storable_opt(d.tx.chain_id.as_ref()),
            amount_value: d.amount.map(|a| a.normalize().to_string()),
            action: d.action,
            rule: storable(&d.rule),
            reason: storable(&d.reason),
            policy_sha256: d.policy_sha256.clone(),
            dry_run: d.dry_run,
            signed_text: d.signed_text.clone(),
            data: d.data.clone(),
            recorded_at_ms: at,
        }
    }
}

/// Stores the chain head beside the records, in the same transaction, so that removing records
/// from the end is detected.
pub(super) fn write_head(tx: &rusqlite::Transaction<'_>, head: &Head) -> Result<(), LedgerError> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [format!("{}:{}", head.seq.0, head.hash)],
    )
    .map_err(LedgerError::Write)?;
    Ok(())
}

/// Folds the records up to `head` into the running summary (see `ledger/summary.rs`), inside
/// the transaction that appended them.
pub(super) fn fold_summary(tx: &rusqlite::Transaction<'_>, head: Seq) -> rusqlite::Result<()> {
    // 0 when nothing is folded yet (an empty ledger), which is no sequence number.
    let through: i64 = tx.query_row(summary::THROUGH, [], |r| r.get(0))?;
    if through >= head.bound() {
        return Ok(());
    }
    tx.prepare_cached(&summary::SQLITE.fold_counts())?
        .execute([through])?;
    tx.prepare_cached(&summary::SQLITE.fold_newest())?
        .execute([through, head.bound()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::GENESIS;

    #[test]
    fn a_link_follows_the_head_stores_its_hash_and_moves_it_and_the_last_number_is_refused() {
        let mut head = Head {
            seq: Seq(0),
            hash: GENESIS.to_string(),
        };
        let mut buf = Vec::new();
        let mut first = EventRecord::at(EventKind::Order, "a", Millis(1));
        let one = link(&mut head, &mut first, &mut buf).unwrap();
        assert_eq!((one.seq, one.prev_hash.as_str()), (Seq(1), GENESIS));
        assert_eq!(
            head,
            Head {
                seq: Seq(1),
                hash: one.hash.clone()
            }
        );
        let mut second = EventRecord::at(EventKind::Order, "a", Millis(1));
        let two = link(&mut head, &mut second, &mut buf).unwrap();
        assert_eq!((two.seq, &two.prev_hash), (Seq(2), &one.hash));
        assert_ne!(
            two.hash, one.hash,
            "the same content at another place hashes apart"
        );
        assert_eq!(
            two.hash,
            record_hash(&one.hash, Seq(2), &mut second, &mut Vec::new()).unwrap()
        );
        let mut last = Head {
            seq: Seq(i64::MAX as u64),
            hash: two.hash.clone(),
        };
        let before = last.clone();
        assert!(matches!(
            link(&mut last, &mut second, &mut buf),
            Err(LinkError::Number(_))
        ));
        assert_eq!(last, before, "a refused link leaves the head where it was");
    }
}
