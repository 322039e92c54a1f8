//! The PostgreSQL store underneath: errors that keep the driver's chain, records bound as
//! parameters and read back, appends on the locked head, and the chain walk in batches.

use std::convert::Infallible;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, SimpleQueryMessage, SimpleQueryRow};

use crate::ledger::record::{
    self, Chained, CollectRecord, Column, Columns, DecisionRecord, EventRecord, Head,
    OutcomeRecord, Record, Stored,
};
use crate::ledger::sql::{Sent, Seq};
use crate::ledger::verify::{Checker, VERIFIED};
use crate::ledger::{DecisionRow, LedgerError, VerifyReport};
use crate::ledger::{chain, summary};

use super::{FENCED, MIGRATION_LOCK, SCHEMA_STEPS, foreign_objects};

/// A driver or pool error with its causes spelled out: the driver's own text names only the
/// kind ("db error"), its causes say what happened. Neither ever holds the password.
#[derive(Debug)]
pub(super) struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// `e` and each of its causes, joined by `: `. The driver says what happened only in its
/// causes ("db error", then the server's message); the pool quotes its cause in its own text
/// and returns it as its source too (deadpool's `PoolError::Backend`), so a cause its parent
/// already ends with is said once. The crate's own errors never do that (`tests/it/module_map.rs`).
pub(super) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let t = cause.to_string();
        if !text.ends_with(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        next = cause.source();
    }
    text.replace('\n', "; ")
}

/// Maps a driver error to [`LedgerError::Database`] naming `what` was being done.
pub(super) fn db<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> LedgerError {
    move |e| LedgerError::Database {
        what,
        error: Box::new(Failure(chain_text(&e))),
    }
}

/// Maps a write's error: the fencing trigger's to [`LedgerError::Fenced`], others as [`db`].
pub(super) fn write_error(
    what: &'static str,
    mine: i64,
) -> impl FnOnce(tokio_postgres::Error) -> LedgerError {
    move |e| {
        if e.code().map(|c| c.code()) == Some(FENCED) {
            let current = e
                .as_db_error()
                .and_then(|d| d.detail())
                .and_then(|d| d.split_once(' '))
                .and_then(|(_, c)| c.parse().ok());
            if let Some(current) = current {
                return LedgerError::Fenced { mine, current };
            }
        }
        db(what)(e)
    }
}

/// Binds a record's columns as PostgreSQL parameters.
pub(super) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Columns for Params {
    type Error = Infallible;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Infallible> {
        self.0.push(Box::new(value.clone()));
        Ok(())
    }
}

/// Reads a record's columns from a PostgreSQL row.
pub(super) struct Reader<'a> {
    row: &'a Row,
    next: usize,
}

impl Columns for Reader<'_> {
    type Error = tokio_postgres::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Self::Error> {
        *value = self.row.try_get(self.next)?;
        self.next += 1;
        Ok(())
    }
}

/// Reads record `R` from `row`, whose columns from `first` on are [`Record::names`].
pub(super) fn from_row<R: Record>(row: &Row, first: usize) -> Result<R, tokio_postgres::Error> {
    let mut record = R::default();
    record.columns(&mut Reader { row, next: first })?;
    Ok(record)
}

pub(super) fn decision_row(r: &Row) -> Result<DecisionRow, tokio_postgres::Error> {
    Ok(DecisionRow::from_parts(
        r.try_get(0)?,
        from_row::<DecisionRecord>(r, 1)?,
        r.try_get::<_, Option<Sent>>("latest_status")?,
        r.try_get("latest_message")?,
    ))
}

pub(super) fn params(p: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Rows per INSERT statement: far below PostgreSQL's 65,535 parameters.
pub(super) const ROWS_PER_INSERT: usize = 500;

/// Inserts `rows` (records with their place in the chain) of kind `R` at `epoch`.
pub(super) async fn insert<R: Record, C: GenericClient + Sync>(
    c: &C,
    rows: &mut [Chained<R>],
    epoch: i64,
) -> Result<(), LedgerError> {
    let width = R::count() + 4;
    for chunk in rows.chunks_mut(ROWS_PER_INSERT) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut bound = Params(Vec::with_capacity(chunk.len() * width));
        for row in chunk.iter_mut() {
            let first = bound.0.len();
            values.push(format!(
                "({})",
                (first + 1..=first + width)
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            bound.0.push(Box::new(row.seq));
            match row.record.columns(&mut bound) {
                Ok(()) => {}
            }
            bound.0.push(Box::new(row.prev_hash.clone()));
            bound.0.push(Box::new(row.hash.clone()));
            bound.0.push(Box::new(epoch));
        }
        let sql = format!(
            "INSERT INTO {} (seq, {}, prev_hash, hash, epoch) VALUES {}",
            R::TABLE,
            R::names(""),
            values.join(", ")
        );
        c.execute(sql.as_str(), &params(&bound.0))
            .await
            .map_err(write_error("record", epoch))?;
    }
    Ok(())
}

/// An event of a kind with exactly a detail, found through the index on the detail's digest
/// (PostgreSQL's index entries are bounded in size, details are not).
pub(super) const EXACT_EVENT: &str =
    "SELECT detail FROM events WHERE kind = $1 AND md5(detail) = md5($2) AND detail = $2 LIMIT 1";

/// Folds the records up to `head` into the running summary (see `ledger/summary.rs`), inside
/// the transaction that appended them, records an older cosigner appended since included.
pub(super) async fn fold_summary<C: GenericClient + Sync>(
    c: &C,
    head: &Head,
) -> Result<(), LedgerError> {
    let what = "fold the summary";
    let through = read_through(c, what).await?;
    let head = head.seq.bound();
    if through >= head {
        return Ok(());
    }
    c.execute(summary::POSTGRES.fold_counts().as_str(), &[&through])
        .await
        .map_err(db(what))?;
    c.execute(summary::POSTGRES.fold_newest().as_str(), &[&through, &head])
        .await
        .map_err(db(what))?;
    Ok(())
}

/// How far the running summary is folded (`what` names the read for errors).
pub(super) async fn read_through<C: GenericClient + Sync>(
    c: &C,
    what: &'static str,
) -> Result<i64, LedgerError> {
    c.query_one(summary::THROUGH, &[])
        .await
        .map_err(db(what))?
        .try_get(0)
        .map_err(db(what))
}

/// The start of every write, in the transaction `c` is in: waits for a schema step being
/// applied (the migration lock, shared), refuses to write on a schema other than the one this
/// cosigner knows ([`LedgerError::DatabaseSchema`]: a newer cosigner applied a step; this one
/// never writes on it, whatever it is doing when that happens), and returns the chain head,
/// locked until the end of the transaction. One round trip of three statements in the simple
/// protocol, run one after the other, each in a snapshot of its own: the version is read once
/// the lock is held (in the extended protocol a pipelined statement may be bound, and so take
/// its snapshot, before the one ahead of it has waited).
pub(super) async fn begin_write<C: GenericClient + Sync>(c: &C) -> Result<Head, LedgerError> {
    let what = "lock the chain head";
    let edited = |why: &str| LedgerError::Database {
        what,
        error: format!("{why}: the ledger database was edited").into(),
    };
    let sql = format!(
        "SELECT pg_advisory_xact_lock_shared({MIGRATION_LOCK});
         SELECT max(version) FROM cosigner_schema;
         SELECT seq, hash FROM cosigner_head WHERE id = 1 FOR UPDATE"
    );
    let rows: Vec<SimpleQueryRow> = c
        .simple_query(&sql)
        .await
        .map_err(db(what))?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    // One row for the lock, one for the version, then the head's (none: no head row).
    let found: i32 = match rows.get(1).map(|r| r.get(0)) {
        Some(Some(v)) => v.parse().map_err(|_| edited("cosigner_schema"))?,
        Some(None) => 0,
        None => return Err(edited("cosigner_schema")),
    };
    if found != SCHEMA_STEPS {
        return Err(LedgerError::DatabaseSchema {
            found,
            known: SCHEMA_STEPS,
        });
    }
    let head = rows
        .get(2)
        .ok_or_else(|| edited("cosigner_head has no row"))?;
    let seq = head
        .get(0)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| edited("cosigner_head"))?;
    let hash = head.get(1).ok_or_else(|| edited("cosigner_head"))?;
    Ok(Head {
        seq: Seq(seq),
        hash: hash.to_string(),
    })
}

/// The chain head in `row` (`seq, hash`); seq 0 is the head of an empty ledger.
pub(super) fn head_from(row: &Row) -> Result<Head, LedgerError> {
    let what = "read the chain head";
    let seq: i64 = row.try_get(0).map_err(db(what))?;
    Ok(Head {
        seq: Seq(u64::try_from(seq).map_err(db(what))?),
        hash: row.try_get(1).map_err(db(what))?,
    })
}

/// Chains `records` after `head`, moving `head` to the last.
pub(super) fn chain<R: Record>(
    head: &mut Head,
    records: &mut [R],
) -> Result<Vec<Chained<R>>, LedgerError> {
    let mut out = Vec::with_capacity(records.len());
    let mut buf = Vec::new();
    for r in records.iter_mut() {
        let link = chain::link(head, r, &mut buf).map_err(db("chain a record"))?;
        out.push(Chained {
            seq: link.seq,
            record: r.clone(),
            prev_hash: link.prev_hash,
            hash: link.hash,
        });
    }
    Ok(out)
}

pub(super) async fn set_head<C: GenericClient + Sync>(
    c: &C,
    head: &Head,
) -> Result<(), LedgerError> {
    c.execute(
        "UPDATE cosigner_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&head.seq, &head.hash],
    )
    .await
    .map_err(db("move the chain head"))?;
    Ok(())
}

/// The stored record `row` of kind `R` (`seq, prev_hash, hash, <columns>`), its hash
/// recomputed into `buf`.
pub(super) fn stored<R: Record>(row: &Row, buf: &mut Vec<u8>) -> Result<Stored, LedgerError> {
    let what = "read the chain";
    let seq: Seq = row.try_get(0).map_err(db(what))?;
    let prev_hash: String = row.try_get(1).map_err(db(what))?;
    let computed = from_row::<R>(row, 3)
        .map_err(|e| record::Unreadable::Postgres(chain_text(&e)))
        .and_then(|mut r| {
            record::record_hash(&prev_hash, seq, &mut r, buf).map_err(record::Unreadable::from)
        });
    Ok(Stored {
        seq,
        kind: R::KIND,
        computed,
        prev_hash,
        hash: row.try_get(2).map_err(db(what))?,
    })
}

/// Reads one stored record from its row, hashing into the buffer given.
pub(super) type ReadStored = fn(&Row, &mut Vec<u8>) -> Result<Stored, LedgerError>;

/// Rows fetched from a portal at a time: a few hundred KiB of a table at most.
pub(super) const BATCH: i32 = 500;

/// One table's records in order, read from a portal a batch at a time.
pub(super) struct Cursor {
    portal: tokio_postgres::Portal,
    read: ReadStored,
    rows: std::collections::VecDeque<Row>,
    exhausted: bool,
    next: Option<Stored>,
}

impl Cursor {
    async fn advance(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LedgerError> {
        if self.rows.is_empty() && !self.exhausted {
            let batch = tx
                .query_portal(&self.portal, BATCH)
                .await
                .map_err(db("read the chain"))?;
            self.exhausted = batch.len() < usize::try_from(BATCH).unwrap_or(0);
            self.rows.extend(batch);
        }
        self.next = match self.rows.pop_front() {
            Some(row) => Some((self.read)(&row, buf)?),
            None => None,
        };
        Ok(())
    }
}

/// Feeds `checker` every record from `from` to `to` (inclusive) as `tx` sees them, in
/// sequence order: one portal per table, a batch of each held at a time, merged.
pub(super) async fn walk(
    tx: &tokio_postgres::Transaction<'_>,
    from: u64,
    to: u64,
    checker: &mut Checker,
) -> Result<(), LedgerError> {
    let what = "read the chain";
    let (from, to) = (Seq(from).bound(), Seq(to).bound());
    let tables: [(String, ReadStored); 4] = [
        (
            record::select_range::<DecisionRecord>("$1", "$2"),
            stored::<DecisionRecord>,
        ),
        (
            record::select_range::<OutcomeRecord>("$1", "$2"),
            stored::<OutcomeRecord>,
        ),
        (
            record::select_range::<CollectRecord>("$1", "$2"),
            stored::<CollectRecord>,
        ),
        (
            record::select_range::<EventRecord>("$1", "$2"),
            stored::<EventRecord>,
        ),
    ];
    let mut cursors = Vec::with_capacity(4);
    for (sql, read) in tables {
        let statement = tx.prepare(&sql).await.map_err(db(what))?;
        let portal = tx.bind(&statement, &[&from, &to]).await.map_err(db(what))?;
        cursors.push(Cursor {
            portal,
            read,
            rows: std::collections::VecDeque::new(),
            exhausted: false,
            next: None,
        });
    }
    let mut buf = Vec::with_capacity(4096);
    for c in &mut cursors {
        c.advance(tx, &mut buf).await?;
    }
    loop {
        let lowest = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next.as_ref().map(|s| (s.seq, i)))
            .min();
        let Some((_, i)) = lowest else {
            return Ok(());
        };
        if let Some(record) = cursors[i].next.take() {
            checker.push(record);
        }
        cursors[i].advance(tx, &mut buf).await?;
    }
}

/// The chain head as stored (`seq:hash`), `None` for the head of an empty ledger (with records
/// present it says nothing of them).
pub(super) async fn stored_head<C: GenericClient + Sync>(
    c: &C,
) -> Result<Option<String>, LedgerError> {
    let head = c
        .query_opt("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
        .await
        .map_err(db("read the chain head"))?;
    Ok(match head {
        Some(r) => Some(head_from(&r)?).filter(|h| h.seq.0 != 0),
        None => None,
    }
    .map(|h| format!("{}:{}", h.seq.0, h.hash)))
}

/// A read-only transaction whose reads are one snapshot.
pub(super) async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, LedgerError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("begin a read"))
}

/// The last verified point, when there is one.
pub(super) async fn read_verified<C: GenericClient + Sync>(
    c: &C,
) -> Result<Option<(u64, String)>, LedgerError> {
    let what = "read the verified point";
    let row = c.query_one(VERIFIED, &[]).await.map_err(db(what))?;
    let seq: Option<i64> = row.try_get(0).map_err(db(what))?;
    let hash: Option<String> = row.try_get(1).map_err(db(what))?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()).zip(hash))
}

/// Walks the whole chain as `tx` sees it, in constant memory.
pub(super) async fn verify_on(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<VerifyReport, LedgerError> {
    let foreign = foreign_objects(tx).await?;
    let mut checker = Checker::from_genesis();
    walk(tx, 1, u64::MAX, &mut checker).await?;
    let mut report = checker.finish_at_head(stored_head(tx).await?.as_deref());
    report.problems.splice(0..0, foreign);
    Ok(report)
}
