//! The four kinds of chained record (decision, outcome, collect, event): one struct each, whose
//! column list, written once, drives its hash input, its INSERT and its SELECT, in SQLite and
//! (through `ledger/postgres.rs`) in PostgreSQL alike. The tables themselves are made by the
//! schema's steps (`ledger/schema.rs`), never from these structs; a test checks they agree.

use std::convert::Infallible;

use openssl::sha::Sha256;
use rusqlite::types::{FromSql, ToSql};
use rusqlite::{Connection, Row, Transaction};
use serde::Serialize;
#[cfg(test)]
use serde_json::json;
use tokio_postgres::types as pg;

use super::sql::{Millis, Sent, Seq};
use crate::display::hex;
use crate::domain::{Action, TxId};

/// Hash that precedes the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A column's value: stored through `ToSql`/`FromSql` (rusqlite's for SQLite, `postgres-types`'
/// for PostgreSQL), hashed through `Serialize`: the hash input never depends on the back end.
pub(crate) trait Column:
    ToSql + FromSql + pg::ToSql + for<'a> pg::FromSql<'a> + Serialize + Clone + Send + Sync + 'static
{
    /// Its type and constraint in SQLite's `CREATE TABLE`.
    const SQL: &'static str;
    /// Its type and constraint in PostgreSQL's `CREATE TABLE`.
    const PG: &'static str;
}

impl Column for String {
    const SQL: &'static str = "TEXT NOT NULL";
    const PG: &'static str = "TEXT NOT NULL";
}
impl Column for Option<String> {
    const SQL: &'static str = "TEXT";
    const PG: &'static str = "TEXT";
}
impl Column for bool {
    const SQL: &'static str = "INTEGER NOT NULL";
    const PG: &'static str = "BOOLEAN NOT NULL";
}
impl Column for Seq {
    const SQL: &'static str = "INTEGER NOT NULL";
    const PG: &'static str = "BIGINT NOT NULL";
}
impl Column for TxId {
    const SQL: &'static str = "INTEGER NOT NULL";
    const PG: &'static str = "BIGINT NOT NULL";
}
impl Column for Millis {
    const SQL: &'static str = "INTEGER NOT NULL";
    const PG: &'static str = "BIGINT NOT NULL";
}
impl Column for Sent {
    const SQL: &'static str = "TEXT NOT NULL";
    const PG: &'static str = "TEXT NOT NULL";
}
impl Column for Action {
    const SQL: &'static str = "TEXT NOT NULL";
    const PG: &'static str = "TEXT NOT NULL";
}

/// Something that walks a record's columns in order: to hash, bind, read or name them.
pub(crate) trait Columns {
    /// What can go wrong with one column (reading it from a row, say).
    type Error;
    /// One column, its name as in the table.
    fn column<T: Column>(&mut self, name: &'static str, value: &mut T) -> Result<(), Self::Error>;
}

/// A column's name and its declarations in each back end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    /// Its name in the table.
    pub(crate) name: &'static str,
    /// Its type and constraint in SQLite.
    pub(crate) sqlite: &'static str,
    /// Its type and constraint in PostgreSQL.
    pub(crate) pg: &'static str,
}

/// A kind of chained record. Besides its columns each table has `seq`, `prev_hash` and `hash`.
pub(crate) trait Record: Default + Clone {
    /// Its table.
    const TABLE: &'static str;
    /// Its kind in the hash input and in `verify`'s report.
    const KIND: &'static str;

    /// Hands every column to `c`, in the order of the hash input. The one list of the record's
    /// fields; `&mut` so that the same list serves reading as well as writing.
    fn columns<C: Columns>(&mut self, c: &mut C) -> Result<(), C::Error>;

    /// The hash input of the record's content, as a JSON value (the form the hash was first
    /// defined on; [`record_hash`] writes the same text without it).
    #[cfg(test)]
    fn hash_fields(&mut self) -> Result<serde_json::Value, serde_json::Error> {
        let mut h = HashFields(Vec::new());
        self.columns(&mut h)?;
        Ok(serde_json::Value::Array(h.0))
    }

    /// Reads the record from `row`, whose columns from `first` on are [`Record::names`].
    fn from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<Self> {
        let mut record = Self::default();
        record.columns(&mut Reader { row, next: first })?;
        Ok(record)
    }

    /// The column names, in order, each prefixed by `prefix` (`d.`), comma-separated.
    fn names(prefix: &str) -> String {
        Self::declared()
            .iter()
            .map(|c| format!("{prefix}{}", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The number of columns.
    fn count() -> usize {
        Self::declared().len()
    }

    /// Every column's name and declarations, in order.
    fn declared() -> Vec<Declared> {
        let mut n = Names(Vec::new());
        match Self::default().columns(&mut n) {
            Ok(()) => n.0,
        }
    }
}

#[cfg(test)]
struct HashFields(Vec<serde_json::Value>);

#[cfg(test)]
impl Columns for HashFields {
    type Error = serde_json::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Self::Error> {
        self.0.push(serde_json::to_value(&*value)?);
        Ok(())
    }
}

struct Names(Vec<Declared>);

impl Columns for Names {
    type Error = Infallible;
    fn column<T: Column>(&mut self, name: &'static str, _: &mut T) -> Result<(), Infallible> {
        self.0.push(Declared {
            name,
            sqlite: T::SQL,
            pg: T::PG,
        });
        Ok(())
    }
}

struct Reader<'a, 'r> {
    row: &'a Row<'r>,
    next: usize,
}

impl Columns for Reader<'_, '_> {
    type Error = rusqlite::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> rusqlite::Result<()> {
        *value = self.row.get(self.next)?;
        self.next += 1;
        Ok(())
    }
}

struct Binder<'a, 's> {
    stmt: &'a mut rusqlite::CachedStatement<'s>,
    next: usize,
}

impl Columns for Binder<'_, '_> {
    type Error = rusqlite::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> rusqlite::Result<()> {
        self.stmt.raw_bind_parameter(self.next, &*value)?;
        self.next += 1;
        Ok(())
    }
}

/// The hash of a record: SHA-256 over the previous hash and `[seq, kind, fields]` as JSON.
#[cfg(test)]
pub(crate) fn chain_hash(prev: &str, seq: Seq, kind: &str, fields: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(json!([seq, kind, fields]).to_string().as_bytes());
    hex(&h.finish())
}

/// Writes each column as compact JSON, comma-separated: the hash input's field list.
struct HashWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Columns for HashWriter<'_> {
    type Error = serde_json::Error;
    fn column<T: Column>(&mut self, _: &'static str, value: &mut T) -> Result<(), Self::Error> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(b',');
        }
        serde_json::to_writer(&mut *self.out, &*value)
    }
}

/// The hash of `record` at `seq` after the record whose hash is `prev`: SHA-256 over `prev` and
/// `[seq,"kind",[fields…]]` as compact JSON, written straight into `buf` (reused from record
/// to record) without building a JSON value: byte for byte the text [`chain_hash`] hashes
/// (`json!([seq, kind, fields]).to_string()`), which every ledger was written with.
pub(crate) fn record_hash<R: Record>(
    prev: &str,
    seq: Seq,
    record: &mut R,
    buf: &mut Vec<u8>,
) -> Result<String, serde_json::Error> {
    buf.clear();
    buf.push(b'[');
    serde_json::to_writer(&mut *buf, &seq)?;
    buf.push(b',');
    serde_json::to_writer(&mut *buf, R::KIND)?;
    buf.extend_from_slice(b",[");
    record.columns(&mut HashWriter {
        out: buf,
        first: true,
    })?;
    buf.extend_from_slice(b"]]");
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(buf);
    Ok(hex(&h.finish()))
}

/// The newest record of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Its sequence number (0 before the first record).
    pub(crate) seq: Seq,
    /// Its hash ([`GENESIS`] before the first record).
    pub(crate) hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: Seq(0),
            hash: GENESIS.to_string(),
        }
    }
}

/// Appends `records` after `head` inside `tx`, moving `head` to the last; returns their sequence
/// numbers.
pub(crate) fn append<R: Record>(
    tx: &Transaction<'_>,
    head: &mut Head,
    records: &mut [R],
) -> rusqlite::Result<Vec<Seq>> {
    let sql = format!(
        "INSERT INTO {} (seq, {}, prev_hash, hash) VALUES (?1, {}, ?{}, ?{})",
        R::TABLE,
        R::names(""),
        (0..R::count())
            .map(|i| format!("?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", "),
        R::count() + 2,
        R::count() + 3,
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut seqs = Vec::with_capacity(records.len());
    let mut buf = Vec::new();
    for r in records {
        let link = super::chain::link(head, r, &mut buf)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        stmt.raw_bind_parameter(1, link.seq)?;
        r.columns(&mut Binder {
            stmt: &mut stmt,
            next: 2,
        })?;
        stmt.raw_bind_parameter(R::count() + 2, &link.prev_hash)?;
        stmt.raw_bind_parameter(R::count() + 3, &link.hash)?;
        stmt.raw_execute()?;
        seqs.push(link.seq);
    }
    Ok(seqs)
}

/// A record as stored, for `verify`: what it says of itself, and the hash recomputed from it.
#[derive(Debug)]
pub(crate) struct Stored {
    /// Its sequence number.
    pub(crate) seq: Seq,
    /// Its kind.
    pub(crate) kind: &'static str,
    /// The hash recomputed from its columns and the previous hash it stores, or why its columns
    /// cannot be read.
    pub(crate) computed: Result<String, Unreadable>,
    /// The previous hash it stores.
    pub(crate) prev_hash: String,
    /// The hash it stores.
    pub(crate) hash: String,
}

/// Why a stored record's columns cannot be read back into its hash input (an edit `verify`
/// reports).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreadable {
    /// SQLite refused a column's value.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a column's value (the error with its causes).
    #[error("{0}")]
    Postgres(String),
    /// The values do not make a hash input.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// A record with its place in the chain, read whole (to copy a ledger).
#[derive(Debug, Clone)]
pub(crate) struct Chained<R> {
    /// Its sequence number.
    pub(crate) seq: Seq,
    /// Its content.
    pub(crate) record: R,
    /// The previous hash it stores.
    pub(crate) prev_hash: String,
    /// The hash it stores.
    pub(crate) hash: String,
}

/// Every record of kind `R` as `SELECT seq, prev_hash, hash, <columns>`, in either back end.
pub(crate) fn select_all<R: Record>() -> String {
    format!(
        "SELECT seq, prev_hash, hash, {} FROM {}",
        R::names(""),
        R::TABLE
    )
}

/// The records of kind `R` from the first placeholder's sequence number to the second's
/// (inclusive), in sequence order, as [`select_all`] reads them.
pub(crate) fn select_range<R: Record>(from: &str, to: &str) -> String {
    format!(
        "{} WHERE seq >= {from} AND seq <= {to} ORDER BY seq",
        select_all::<R>()
    )
}

/// Every record of kind `R` whole, in chain order; an unreadable column is an error.
pub(crate) fn chained<R: Record>(conn: &Connection) -> rusqlite::Result<Vec<Chained<R>>> {
    let mut stmt = conn.prepare(&format!("{} ORDER BY seq", select_all::<R>()))?;
    let rows = stmt.query_map([], |r| {
        Ok(Chained {
            seq: r.get(0)?,
            record: R::from_row(r, 3)?,
            prev_hash: r.get(1)?,
            hash: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// A decision about one transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecisionRecord {
    pub(crate) tx_id: TxId,
    pub(crate) fingerprint: String,
    pub(crate) tx_json: String,
    pub(crate) from_addr: Option<String>,
    pub(crate) to_addr: Option<String>,
    pub(crate) amount: Option<String>,
    pub(crate) chain_id: Option<String>,
    /// The approved amount, normalised, as counted in windows.
    pub(crate) amount_value: Option<String>,
    pub(crate) action: Action,
    pub(crate) rule: String,
    pub(crate) reason: String,
    pub(crate) policy_sha256: String,
    pub(crate) dry_run: bool,
    pub(crate) signed_text: Option<String>,
    pub data: Option<String>,
    pub(crate) recorded_at_ms: Millis,
}

// By hand: `Action` and `TxId` have no default; a blank record is only ever a target to read
// into.
impl Default for DecisionRecord {
    fn default() -> Self {
        Self {
            tx_id: TxId::new(0),
            fingerprint: String::new(),
            tx_json: String::new(),
            from_addr: None,
            to_addr: None,
            amount: None,
            chain_id: None,
            amount_value: None,
            action: Action::Hold,
            rule: String::new(),
            reason: String::new(),
            policy_sha256: String::new(),
            dry_run: false,
            signed_text: None,
            data: None,
            recorded_at_ms: Millis::default(),
        }
    }
}

impl Record for DecisionRecord {
    const TABLE: &'static str = "decisions";
    const KIND: &'static str = "decision";

    fn columns<C: Columns>(&mut self, c: &mut C) -> Result<(), C::Error> {
        c.column("tx_id", &mut self.tx_id)?;
        c.column("fingerprint", &mut self.fingerprint)?;
        c.column("tx_json", &mut self.tx_json)?;
        c.column("from_addr", &mut self.from_addr)?;
        c.column("to_addr", &mut self.to_addr)?;
        c.column("amount", &mut self.amount)?;
        c.column("chain_id", &mut self.chain_id)?;
        c.column("amount_value", &mut self.amount_value)?;
        c.column("action", &mut self.action)?;
        c.column("rule", &mut self.rule)?;
        c.column("reason", &mut self.reason)?;
        c.column("policy_sha256", &mut self.policy_sha256)?;
        c.column("dry_run", &mut self.dry_run)?;
        c.column("signed_text", &mut self.signed_text)?;
        c.column("data", &mut self.data)?;
        c.column("recorded_at_ms", &mut self.recorded_at_ms)
    }
}

/// A submission's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OutcomeRecord {
    pub(crate) decision_seq: Seq,
    pub(crate) status: Sent,
    pub(crate) message: Option<String>,
    pub(crate) recorded_at_ms: Millis,
}

impl Record for OutcomeRecord {
    const TABLE: &'static str = "outcomes";
    const KIND: &'static str = "outcome";

    fn columns<C: Columns>(&mut self, c: &mut C) -> Result<(), C::Error> {
        c.column("decision_seq", &mut self.decision_seq)?;
        c.column("status", &mut self.status)?;
        c.column("message", &mut self.message)?;
        c.column("recorded_at_ms", &mut self.recorded_at_ms)
    }
}

/// A collection's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CollectRecord {
    pub is_main: bool,
    pub(crate) ok: bool,
    pub(crate) message: Option<String>,
    pub(crate) recorded_at_ms: Millis,
}

impl Record for CollectRecord {
    const TABLE: &'static str = "collects";
    const KIND: &'static str = "collect";

    fn columns<C: Columns>(&mut self, c: &mut C) -> Result<(), C::Error> {
        c.column("is_main", &mut self.is_main)?;
        c.column("ok", &mut self.ok)?;
        c.column("message", &mut self.message)?;
        c.column("recorded_at_ms", &mut self.recorded_at_ms)
    }
}

/// An operational event (mode change, policy load, re-send).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventRecord {
    pub(crate) kind: String,
    pub(crate) detail: String,
    pub(crate) recorded_at_ms: Millis,
}

impl Record for EventRecord {
    const TABLE: &'static str = "events";
    const KIND: &'static str = "event";

    fn columns<C: Columns>(&mut self, c: &mut C) -> Result<(), C::Error> {
        c.column("kind", &mut self.kind)?;
        c.column("detail", &mut self.detail)?;
        c.column("recorded_at_ms", &mut self.recorded_at_ms)
    }
}
