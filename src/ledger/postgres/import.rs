//! Moving a SQLite ledger into PostgreSQL: its verified export, and the import that keeps every
//! record, hash and link.

use crate::ledger::record::{
    self, Chained, CollectRecord, DecisionRecord, EventRecord, Head, OutcomeRecord,
};
use crate::ledger::{LedgerError, SqliteLedger, VerifyReport};

use super::{PgLedger, begin_write, db, fold_summary, insert, set_head, verify_on};

/// A ledger's every record read whole from SQLite, with its head, checked before it is copied:
/// what [`PgLedger::import`] writes.
pub struct LedgerExport {
    decisions: Vec<Chained<DecisionRecord>>,
    outcomes: Vec<Chained<OutcomeRecord>>,
    collects: Vec<Chained<CollectRecord>>,
    events: Vec<Chained<EventRecord>>,
    head: Head,
    report: VerifyReport,
}

impl std::fmt::Debug for LedgerExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerExport")
            .field("records", &self.report.records)
            .field("head_seq", &self.head.seq.0)
            .finish_non_exhaustive()
    }
}

impl LedgerExport {
    /// What `verify` said of the source.
    #[must_use]
    pub(crate) fn report(&self) -> &VerifyReport {
        &self.report
    }
}

impl SqliteLedger {
    /// Reads every record to copy the ledger elsewhere; refuses a ledger whose chain does not
    /// verify (a copy must not launder an edit).
    pub fn export(&self) -> Result<LedgerExport, LedgerError> {
        let report = self.verify()?;
        if let Some(first) = report.problems.first() {
            return Err(LedgerError::Copy {
                reason: format!(
                    "{} does not verify ({} problems; the first: {first})",
                    self.path().display(),
                    report.problems.len()
                ),
            });
        }
        let read = |e| LedgerError::Read(e);
        Ok(LedgerExport {
            decisions: record::chained(&self.conn).map_err(read)?,
            outcomes: record::chained(&self.conn).map_err(read)?,
            collects: record::chained(&self.conn).map_err(read)?,
            events: record::chained(&self.conn).map_err(read)?,
            head: self.head.clone(),
            report,
        })
    }
}

impl PgLedger {
    /// Copies `export` (an SQLite ledger's records) into this ledger, which must hold no
    /// records: every record keeps its sequence number and hash. The copy is verified inside
    /// the copying transaction and committed only if it verifies exactly as the source did;
    /// returns that report.
    pub async fn import(&self, export: &LedgerExport) -> Result<VerifyReport, LedgerError> {
        let what = "copy the ledger";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        let head = begin_write(&*tx).await?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM outcomes)
                 + (SELECT count(*) FROM collects) + (SELECT count(*) FROM events)",
                &[],
            )
            .await
            .map_err(db(what))?
            .get(0);
        if head.seq.0 != 0 || held != 0 {
            return Err(LedgerError::Copy {
                reason: format!(
                    "{} already holds {held} records (up to record {}): a ledger is copied only into an empty one",
                    self.describe(),
                    head.seq.0
                ),
            });
        }
        let epoch: i64 = tx
            .query_one(
                "SELECT epoch FROM cosigner_leader WHERE id = 1 FOR SHARE",
                &[],
            )
            .await
            .map_err(db(what))?
            .get(0);
        insert(&*tx, &mut export.decisions.clone(), epoch).await?;
        insert(&*tx, &mut export.outcomes.clone(), epoch).await?;
        insert(&*tx, &mut export.collects.clone(), epoch).await?;
        insert(&*tx, &mut export.events.clone(), epoch).await?;
        set_head(&*tx, &export.head).await?;
        fold_summary(&*tx, &export.head).await?;
        let report = verify_on(&tx).await?;
        if !report.problems.is_empty()
            || report.records != export.report.records
            || report.by_kind != export.report.by_kind
        {
            return Err(LedgerError::Copy {
                reason: format!(
                    "the copy does not verify as the source does ({} records, {:?}; problems: {:?}); nothing was copied",
                    report.records, report.by_kind, report.problems
                ),
            });
        }
        tx.commit().await.map_err(db(what))?;
        tracing::info!(records = report.records, url = %self.describe(), "ledger copied");
        // Tables filled in one transaction have no statistics until autovacuum gets round to
        // them (a minute or more): until then the planner guesses a third of the rows for
        // `seq > $1`, and a cycle's reads scan the whole copy (a first cycle on a 1,000,000-
        // record copy took 59 s). The copy is committed either way.
        if let Err(e) = client
            .batch_execute("ANALYZE decisions, outcomes, collects, events, ledger_summary")
            .await
        {
            tracing::warn!(error = %e, "could not ANALYZE the copied tables; the first cycles may be slow until autovacuum does");
        }
        Ok(report)
    }
}
