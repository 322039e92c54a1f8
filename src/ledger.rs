//! The decision ledger: every decision and every submission outcome, in SQLite (WAL,
//! `synchronous=FULL`), hash-chained so that an edited, removed or truncated record is detected.
//! Only one process may write a ledger; window totals are computed from it. Each kind of record
//! is a struct in `ledger/record.rs` whose column list drives its hash input, INSERT, SELECT and table;
//! `ledger/sql.rs` holds the column types (sequence numbers, transaction ids, times);
//! `ledger/handle.rs` is the async face everything outside the ledger uses.
//! `ledger/postgres.rs` is the same ledger in PostgreSQL, for an active/standby pair; the reading
//! and checking below (`DecisionRow::from_parts`, `tx_state`, `usage_of`, `page_query`, and the
//! chain walk of `ledger/verify.rs`) is shared by both back ends, so that they answer alike.

mod backup;
mod handle;
pub mod postgres;
mod record;
mod schema;
mod sql;
mod summary;
mod verify;

pub use handle::LedgerHandle;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use openssl::sha::Sha256;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use record::{CollectRecord, DecisionRecord, EventRecord, Head, OutcomeRecord, Record};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sql::{Millis, Sent, Seq, sql_count};

use crate::clock::Clock;
use crate::display::hex;
use crate::domain::{Action, TxId, Withdrawal};
use crate::policy::{Approval, Policy, Usage};

/// The schema steps this cosigner knows (see `ledger/schema.rs`).
fn known_steps() -> usize {
    schema::SQLITE.len()
}

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another process holds the ledger.
    #[error(
        "ledger {path} is in use by another cosigner process{}; only one may use a ledger",
        .pid.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The file.
        path: PathBuf,
        /// The holder's process id, when it could be read.
        pid: Option<String>,
    },
    /// The database could not be opened or set up.
    #[error("cannot open ledger {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The database file could not be created.
    #[error("cannot create ledger {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The lock file could not be created.
    #[error("cannot create lock file {path}: {source}")]
    LockFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A write did not reach the disk; nothing depending on it may be sent.
    #[error("ledger write failed: {0}")]
    Write(rusqlite::Error),
    /// A read failed.
    #[error("ledger read failed: {0}")]
    Read(rusqlite::Error),
    /// The online copy could not be written.
    #[error("cannot back up the ledger to {path}: {source}")]
    Backup {
        /// The copy.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The call stopped before it finished (its thread panicked, or the runtime is shutting
    /// down): whether a write reached the disk is unknown, so nothing depending on it is sent.
    #[error("the ledger call did not finish: {0}")]
    Interrupted(String),
    /// The file was written by a newer cosigner.
    #[error(
        "ledger {path} has schema version {found}; this cosigner understands up to {}: a newer \
         cosigner wrote it, so run that one (or a newer one)",
        known_steps()
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// Another instance took over the PostgreSQL ledger: the database refused this instance's
    /// write, and nothing of it was recorded.
    #[error(
        "fenced: this cosigner's leader epoch {mine} is older than the ledger's epoch {current}; \
         another instance leads, and nothing was recorded"
    )]
    Fenced {
        /// The epoch this instance wrote with.
        mine: i64,
        /// The epoch the database holds.
        current: i64,
    },
    /// The PostgreSQL ledger could not be reached, read or written; nothing depending on a
    /// failed write may be sent.
    #[error("ledger database: {what}: {source}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The driver's or the pool's error (never holding the password).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `[ledger] url` cannot be used.
    #[error("[ledger] url: {reason}")]
    DatabaseUrl {
        /// Why, without the password.
        reason: String,
    },
    /// The PostgreSQL ledger was set up by a newer cosigner.
    #[error(
        "the ledger database has schema version {found}; this cosigner understands up to {known}: \
         a newer cosigner upgraded it, so upgrade this one (docs/pair.md, \"Upgrading a pair\")"
    )]
    DatabaseSchema {
        /// What the database says.
        found: i32,
        /// The newest this cosigner knows.
        known: i32,
    },
    /// A ledger could not be copied into PostgreSQL.
    #[error("cannot copy the ledger: {reason}")]
    Copy {
        /// Why; nothing was copied.
        reason: String,
    },
}

impl LedgerError {
    /// True for a write that failed (so nothing depending on it was sent): SQLite's write
    /// errors, a call that did not finish, a write the database fenced, or a PostgreSQL write
    /// step that failed.
    #[must_use]
    pub(crate) fn is_write_failure(&self) -> bool {
        match self {
            // A schema newer than this cosigner's, found as a write began: refused.
            LedgerError::Write(_)
            | LedgerError::Interrupted(_)
            | LedgerError::Fenced { .. }
            | LedgerError::DatabaseSchema { .. } => true,
            LedgerError::Database { what, .. } => matches!(
                *what,
                "record"
                    | "commit a write"
                    | "begin a write"
                    | "lock the chain head"
                    | "move the chain head"
                    | "number a record"
                    | "hash a record"
                    | "fold the summary"
            ),
            _ => false,
        }
    }
}

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

/// The ledger.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    head: Head,
    /// The schema steps the file has (all this cosigner knows, once opened for writing).
    steps: usize,
    /// Times every record.
    clock: Clock,
    _lock: Option<File>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("head_seq", &self.head.seq.0)
            .finish_non_exhaustive()
    }
}

/// The time of the newest record, in either back end, from the records themselves: for a
/// ledger read before its schema has the summary (step 2).
const NEWEST_RECORD: &str = "SELECT MAX(t) FROM (SELECT MAX(recorded_at_ms) AS t FROM decisions
  UNION ALL SELECT MAX(recorded_at_ms) FROM outcomes UNION ALL SELECT MAX(recorded_at_ms) FROM collects
  UNION ALL SELECT MAX(recorded_at_ms) FROM events) AS newest";

/// A decision with its latest outcome's status and message, read by [`row`].
fn row_select() -> String {
    format!(
        "SELECT d.seq, {},
  (SELECT o.status FROM outcomes o WHERE o.decision_seq = d.seq ORDER BY o.seq DESC LIMIT 1) AS latest_status,
  (SELECT o.message FROM outcomes o WHERE o.decision_seq = d.seq ORDER BY o.seq DESC LIMIT 1) AS latest_message
  FROM decisions d",
        DecisionRecord::names("d.")
    )
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRow> {
    Ok(DecisionRow::from_parts(
        r.get(0)?,
        DecisionRecord::from_row(r, 1)?,
        r.get("latest_status")?,
        r.get("latest_message")?,
    ))
}

impl DecisionRow {
    /// What this decision holds for: its rule and the kind of its reason (see
    /// [`crate::policy::HoldKey`]); a later hold with the same key is the same hold.
    #[must_use]
    pub fn hold_key(&self) -> crate::policy::HoldKey {
        crate::policy::HoldKey::of(&self.rule, &self.reason)
    }

    /// The row of decision `seq` whose latest outcome (if any) is `latest`, with `message`.
    fn from_parts(
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

impl OutcomeRecord {
    /// The records of `outcomes`, all at `at`.
    fn all(outcomes: &[Outcome], at: Millis) -> Vec<Self> {
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
    fn at(kind: &str, detail: &str, at: Millis) -> Self {
        Self {
            kind: kind.to_string(),
            detail: storable(detail),
            recorded_at_ms: at,
        }
    }

    /// The `resend` events of `resends`, all at one moment.
    fn resends(resends: &[ResendRecord], at: Millis) -> Vec<Self> {
        resends
            .iter()
            .map(|r| Self {
                kind: RESEND_EVENT.to_string(),
                detail: r.to_detail(),
                recorded_at_ms: at,
            })
            .collect()
    }
}

impl CollectRecord {
    /// One collection's result at `at`.
    fn at(is_main: bool, ok: bool, message: Option<&str>, at: Millis) -> Self {
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
fn storable_opt(text: Option<&String>) -> Option<String> {
    text.map(|t| storable(t))
}

impl DecisionRecord {
    /// The records of `new`, all at one moment.
    fn all(new: &[NewDecision], at: Millis) -> Vec<Self> {
        new.iter().map(|d| Self::new(d, at)).collect()
    }

    fn new(d: &NewDecision, at: Millis) -> Self {
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
fn write_head(tx: &rusqlite::Transaction<'_>, head: &Head) -> Result<(), LedgerError> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [format!("{}:{}", head.seq.0, head.hash)],
    )
    .map_err(LedgerError::Write)?;
    Ok(())
}

/// Folds the records up to `head` into the running summary (see `ledger/summary.rs`), inside
/// the transaction that appended them.
fn fold_summary(tx: &rusqlite::Transaction<'_>, head: Seq) -> rusqlite::Result<()> {
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

fn schema_error(path: &Path, found: String) -> LedgerError {
    LedgerError::Schema {
        path: path.to_owned(),
        found,
    }
}

/// The schema steps a file has: `meta.schema_version`, or 1 for the tables of a ledger made
/// before that was written, 0 for an empty file; `Err` with the text of a version that is not
/// a number.
fn applied_steps(conn: &Connection) -> rusqlite::Result<Result<usize, String>> {
    let has = |table: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    if !has("meta")? {
        return Ok(Ok(usize::from(has("decisions")?)));
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match version {
        None => Ok(usize::from(has("decisions")?)),
        Some(v) => v.parse().map_err(|_| v),
    })
}

/// Brings the file's schema up to every step this cosigner knows, in one transaction (a
/// process killed meanwhile leaves the file as it was); returns the steps it has now. A file
/// with steps this cosigner does not know is refused untouched.
fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, LedgerError> {
    let open_err = |e| LedgerError::Open {
        path: path.to_owned(),
        source: e,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found = match applied_steps(&tx).map_err(open_err)? {
        Ok(n) if n <= known_steps() => n,
        Ok(n) => return Err(schema_error(path, n.to_string())),
        Err(found) => return Err(schema_error(path, found)),
    };
    for (n, step) in schema::SQLITE.iter().enumerate().skip(found) {
        tx.execute_batch(step).map_err(open_err)?;
        if found > 0 {
            tracing::info!(step = n + 1, ledger = %path.display(), "ledger schema step applied");
        }
    }
    if found < known_steps() {
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [known_steps().to_string()],
        )
        .map_err(open_err)?;
    }
    tx.commit().map_err(open_err)?;
    Ok(known_steps())
}

/// The pid of the process holding the ledger at `path` (a running daemon), if one does; for
/// `cosigner check`. Creates nothing.
#[must_use]
pub(crate) fn held_by(path: &Path) -> Option<String> {
    let mut lock = std::fs::File::open(lock_path(path)).ok()?;
    if lock.try_lock_shared().is_ok() {
        return None;
    }
    let mut pid = String::new();
    let _ = lock.read_to_string(&mut pid);
    Some(pid.trim().to_string())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl Ledger {
    /// Opens (creating if needed) the ledger for writing, holding its lock for the life of the
    /// value. A second process gets [`LedgerError::Locked`] at once.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let lp = lock_path(path);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            .map_err(|e| LedgerError::LockFile {
                path: lp.clone(),
                source: e,
            })?;
        if lock.try_lock().is_err() {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            let pid = pid.trim().to_string();
            return Err(LedgerError::Locked {
                path: path.to_owned(),
                pid: (!pid.is_empty()).then_some(pid),
            });
        }
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", std::process::id());
        let open_err = |e| LedgerError::Open {
            path: path.to_owned(),
            source: e,
        };
        // Created private before SQLite opens it: SQLite gives the WAL and shared-memory files
        // the database file's mode, and the records hold every transaction and signed text.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(LedgerError::Create {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let steps = migrate(&mut conn, path)?;
        Self::finish_open(conn, path, steps, Some(lock))
    }

    /// Opens an existing ledger for reading only, without the lock: safe beside a running daemon.
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let open_err = |e| LedgerError::Open {
            path: path.to_owned(),
            source: e,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(open_err)?;
        // A file with nothing in it yet: the daemon created it and was stopped before its
        // first commit. It holds no records; read it as the empty ledger it is.
        let mut conn = if objects == 0 {
            Connection::open_in_memory().map_err(open_err)?
        } else {
            conn
        };
        let steps = if objects == 0 {
            migrate(&mut conn, path)?
        } else {
            match applied_steps(&conn).map_err(open_err)? {
                Ok(n) if n <= known_steps() => n,
                Ok(n) => return Err(schema_error(path, n.to_string())),
                Err(found) => return Err(schema_error(path, found)),
            }
        };
        Self::finish_open(conn, path, steps, None)
    }

    fn finish_open(
        conn: Connection,
        path: &Path,
        steps: usize,
        lock: Option<File>,
    ) -> Result<Self, LedgerError> {
        let open_err = |e| LedgerError::Open {
            path: path.to_owned(),
            source: e,
        };
        // Each table's last record by its primary key: no scan, whatever the history.
        let head: Option<(Seq, String)> = conn
            .query_row(&summary::last_record(), [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(open_err)?;
        let head = head
            .map(|(seq, hash)| Head { seq, hash })
            .unwrap_or_default();
        Ok(Self {
            conn,
            path: path.to_owned(),
            head,
            steps,
            clock: Clock::system(),
            _lock: lock,
        })
    }

    fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// Whether the file has the running summary (schema step 2): a file read before the
    /// daemon of this version migrated it has not.
    fn summarised(&self) -> bool {
        self.steps >= 2
    }

    /// The ledger file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Times records by `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock that times records.
    #[must_use]
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Appends `records` in one durable transaction; returns their sequence numbers. On `Err`
    /// nothing was recorded.
    fn append<R: Record>(&mut self, records: &mut [R]) -> Result<Vec<Seq>, LedgerError> {
        let tx = self.conn.transaction().map_err(LedgerError::Write)?;
        let mut head = self.head.clone();
        let seqs = record::append(&tx, &mut head, records).map_err(LedgerError::Write)?;
        write_head(&tx, &head)?;
        fold_summary(&tx, head.seq).map_err(LedgerError::Write)?;
        tx.commit().map_err(LedgerError::Write)?;
        self.head = head;
        Ok(seqs)
    }

    /// Records decisions in one durable transaction; returns their sequence numbers. When this
    /// returns `Err`, nothing was recorded and nothing may be sent.
    pub fn record_decisions(&mut self, new: &[NewDecision]) -> Result<Vec<u64>, LedgerError> {
        let seqs = self.append(&mut DecisionRecord::all(new, Millis(self.clock.now_ms())))?;
        Ok(seqs.into_iter().map(|s| s.0).collect())
    }

    /// Records submission outcomes in one transaction.
    pub fn record_outcomes(&mut self, outcomes: &[Outcome]) -> Result<(), LedgerError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.append(&mut OutcomeRecord::all(
            outcomes,
            Millis(self.clock.now_ms()),
        ))?;
        Ok(())
    }

    /// Every decision about `tx_id`, oldest first.
    pub fn history(&self, tx_id: TxId) -> Result<Vec<DecisionRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{} WHERE d.tx_id = ?1 ORDER BY d.seq",
                row_select()
            ))
            .map_err(LedgerError::Read)?;
        stmt.query_map([tx_id], row)
            .and_then(|rows| rows.collect())
            .map_err(LedgerError::Read)
    }

    /// One decision by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<DecisionRow>, LedgerError> {
        // No record has a sequence number SQLite cannot hold.
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        self.conn
            .query_row(&format!("{} WHERE d.seq = ?1", row_select()), [seq], row)
            .optional()
            .map_err(LedgerError::Read)
    }

    /// The newest decisions first.
    pub fn list(&self, limit: usize) -> Result<Vec<DecisionRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{} ORDER BY d.seq DESC LIMIT ?1", row_select()))
            .map_err(LedgerError::Read)?;
        stmt.query_map([sql_count(limit)], row)
            .and_then(|rows| rows.collect())
            .map_err(LedgerError::Read)
    }

    /// One page of decisions, newest first, and whether more lie beyond it in the paging
    /// direction.
    pub fn page(&self, q: &PageQuery) -> Result<(Vec<DecisionRow>, bool), LedgerError> {
        let (sql, args) = page_query(q, |n| format!("?{n}"));
        let args = args.into_iter().map(|a| match a {
            PageArg::Text(t) => rusqlite::types::Value::from(t),
            PageArg::Int(i) => rusqlite::types::Value::from(i),
        });
        let mut stmt = self.conn.prepare(&sql).map_err(LedgerError::Read)?;
        let rows: Vec<DecisionRow> = stmt
            .query_map(rusqlite::params_from_iter(args), row)
            .and_then(|r| r.collect())
            .map_err(LedgerError::Read)?;
        Ok(page_rows(q, rows))
    }

    /// The time of the newest record, if any.
    pub fn newest_record_ms(&self) -> Result<Option<i64>, LedgerError> {
        if !self.summarised() {
            return self
                .conn
                .query_row(NEWEST_RECORD, [], |r| r.get(0))
                .map_err(LedgerError::Read);
        }
        let through = self.through().map_err(LedgerError::Read)?;
        self.conn
            .prepare_cached(&summary::SQLITE.newest())
            .and_then(|mut s| s.query_row([through], |r| r.get(0)))
            .map_err(LedgerError::Read)
    }

    /// How far the running summary is folded.
    fn through(&self) -> rusqlite::Result<i64> {
        self.conn.query_row(summary::THROUGH, [], |r| r.get(0))
    }

    /// Window usage for `policy` as of `now_ms`: approvals recorded (sent or not yet, dry runs
    /// excluded) inside each window, each counted once per window, at its record and at every
    /// re-send (under the rule that approved the re-send): an approval is counted from the last
    /// time it may have left.
    pub fn usage(&self, policy: &Policy, now_ms: i64) -> Result<Usage, LedgerError> {
        self.usage_with_slack(policy, now_ms, std::time::Duration::ZERO)
    }

    /// [`Ledger::usage`] with each window reaching `slack` further back (see `Usage::at`).
    pub fn usage_with_slack(
        &self,
        policy: &Policy,
        now_ms: i64,
        slack: std::time::Duration,
    ) -> Result<Usage, LedgerError> {
        let Some(since) = window_start(policy, now_ms, slack) else {
            return Ok(usage_of(policy, now_ms, slack, Vec::new(), Vec::new()));
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, rule, amount_value, recorded_at_ms FROM decisions
                 WHERE action = 'approve' AND dry_run = 0 AND recorded_at_ms > ?1",
            )
            .map_err(LedgerError::Read)?;
        let approvals = stmt
            .query_map([Millis(since)], |r| {
                Ok(WindowApproval {
                    seq: r.get(0)?,
                    rule: r.get(1)?,
                    amount_value: r.get(2)?,
                    at: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(LedgerError::Read)?;
        let resends = self.events_since(RESEND_EVENT, since)?;
        Ok(usage_of(policy, now_ms, slack, approvals, resends))
    }

    /// The details and times of the events of `kind` recorded after `since_ms`.
    fn events_since(&self, kind: &str, since_ms: i64) -> Result<Vec<(String, i64)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT detail, recorded_at_ms FROM events WHERE kind = ?1 AND recorded_at_ms > ?2",
            )
            .map_err(LedgerError::Read)?;
        let rows = stmt
            .query_map(params![kind, Millis(since_ms)], |r| {
                Ok((r.get(0)?, r.get::<_, Millis>(1)?.0))
            })
            .map_err(LedgerError::Read)?;
        rows.collect::<Result<_, _>>().map_err(LedgerError::Read)
    }

    /// Records that the approvals `resends` are about to be sent again, in one durable commit
    /// before they leave.
    pub fn record_resends(&mut self, resends: &[ResendRecord]) -> Result<(), LedgerError> {
        if resends.is_empty() {
            return Ok(());
        }
        self.append(&mut EventRecord::resends(
            resends,
            Millis(self.clock.now_ms()),
        ))?;
        Ok(())
    }

    /// Records an operational event (mode change, policy load, order callback) in the chain.
    pub fn record_event(&mut self, kind: &str, detail: &str) -> Result<u64, LedgerError> {
        self.append(&mut [EventRecord::at(kind, detail, Millis(self.clock.now_ms()))])?;
        Ok(self.head.seq.0)
    }

    /// Records an event of `kind` with `detail` unless one with exactly that detail is
    /// recorded already; returns its sequence number when it was recorded now.
    pub(crate) fn record_event_once(
        &mut self,
        kind: &str,
        detail: &str,
    ) -> Result<Option<u64>, LedgerError> {
        if self.has_event(kind, detail)? {
            return Ok(None);
        }
        self.record_event(kind, detail).map(Some)
    }

    /// The detail of the newest event of `kind`.
    pub fn latest_event(&self, kind: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT detail FROM events WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [kind],
                |r| r.get(0),
            )
            .optional()
            .map_err(LedgerError::Read)
    }

    /// The details of every event of `kind`, oldest first.
    pub fn list_events(&self, kind: &str) -> Result<Vec<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT detail FROM events WHERE kind = ?1 ORDER BY seq")
            .map_err(LedgerError::Read)?;
        stmt.query_map([kind], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(LedgerError::Read)
    }

    /// Whether an event of `kind` with exactly `detail` is recorded.
    pub fn has_event(&self, kind: &str, detail: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT 1 FROM events WHERE kind = ?1 AND detail = ?2 LIMIT 1",
                [kind, &storable(detail)],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(LedgerError::Read)
    }

    /// Records one collection's result.
    pub fn record_collect(
        &mut self,
        is_main: bool,
        ok: bool,
        message: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.append(&mut [CollectRecord::at(
            is_main,
            ok,
            message,
            Millis(self.clock.now_ms()),
        )])?;
        Ok(())
    }

    /// Triggers and views, which no cosigner writes: one could change rows as they are written
    /// or read (hiding approvals from a window) without touching the chain.
    fn foreign_objects(&self) -> Result<Vec<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT type, name FROM sqlite_schema WHERE type IN ('trigger', 'view')")
            .map_err(LedgerError::Read)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(LedgerError::Read)?;
        rows.map(|r| {
            r.map(|(kind, name)| {
                format!("the file holds a {kind} {name:?}, which no cosigner writes (edited)")
            })
        })
        .collect::<Result<_, _>>()
        .map_err(LedgerError::Read)
    }

    /// Folds the write-ahead log into the database file (at shutdown).
    pub(crate) fn checkpoint(&self) -> Result<(), LedgerError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(LedgerError::Write)
    }

    /// Lets writes succeed again after `simulate_write_failure` (tests only).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn end_simulated_write_failure(&self) -> rusqlite::Result<()> {
        self.conn.pragma_update(None, "query_only", false)?;
        self.conn
            .query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))
    }

    /// Makes every later record of the kill-switch mode fail while every other write goes on
    /// (tests only: a pause that cannot be recorded, with nothing else stopped by the ledger).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub(crate) fn simulate_mode_write_failure(&self) -> rusqlite::Result<()> {
        // A temporary trigger: it lives in this connection only, outside the file's schema.
        self.conn.execute_batch(
            "CREATE TEMP TRIGGER IF NOT EXISTS simulated_mode_write_failure
             BEFORE INSERT ON main.events WHEN NEW.kind = 'mode'
             BEGIN SELECT RAISE(ABORT, 'simulated write failure of the mode'); END;",
        )
    }

    /// Makes every later write fail the way a read-only or full filesystem does (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub(crate) fn simulate_write_failure(&self, full: bool) -> rusqlite::Result<()> {
        if full {
            let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            self.conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        } else {
            self.conn.pragma_update(None, "query_only", true)
        }
    }
}

/// The event kind that records an approval about to be sent again.
pub const RESEND_EVENT: &str = "resend";

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
    fn to_detail(&self) -> String {
        json!({"seq": self.seq, "tx_id": self.tx_id, "rule": self.rule, "amount": self.amount.to_string()})
            .to_string()
    }

    fn from_detail(detail: &str) -> Option<Self> {
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

impl Ledger {
    /// The state of `tx`'s content in the ledger.
    pub fn state(&self, tx: &Withdrawal) -> Result<TxState, LedgerError> {
        Ok(tx_state(tx, self.history(tx.id)?))
    }

    /// The states of `txs`, in their order.
    pub(crate) fn states(&self, txs: &[Withdrawal]) -> Result<Vec<TxState>, LedgerError> {
        txs.iter().map(|tx| self.state(tx)).collect()
    }

    /// Counts of real decisions (dry runs excluded) by action, for summaries.
    pub fn counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(false)
    }

    /// Counts of dry-run decisions by action.
    pub fn dry_run_counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(true)
    }

    fn counts_of(&self, dry_run: bool) -> Result<HashMap<String, u64>, LedgerError> {
        let (sql, through) = if self.summarised() {
            (
                summary::SQLITE.counts(),
                self.through().map_err(LedgerError::Read)?,
            )
        } else {
            (
                "SELECT action, COUNT(*) FROM decisions WHERE dry_run = ?1 AND seq > ?2 GROUP BY action"
                    .to_string(),
                0,
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(LedgerError::Read)?;
        let rows = stmt
            .query_map(params![dry_run, through], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
            })
            .map_err(LedgerError::Read)?;
        rows.collect::<Result<_, _>>().map_err(LedgerError::Read)
    }
}

/// A value bound in [`page_query`]'s SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PageArg {
    Text(String),
    Int(i64),
}

/// The SQL of one page of decisions (one more than `q.limit`, to tell whether more lie beyond)
/// and its arguments, with `placeholder(n)` for the n-th argument (`?n` in SQLite, `$n` in
/// PostgreSQL). Rows come newest first, or oldest first when paging backwards
/// (`ending_before`): [`page_rows`] puts them in order.
fn page_query(q: &PageQuery, placeholder: fn(usize) -> String) -> (String, Vec<PageArg>) {
    let mut sql = format!("{} WHERE 1=1", row_select());
    let mut args = Vec::new();
    let mut push = |sql: &mut String, clause: &str, arg: PageArg| {
        args.push(arg);
        sql.push_str(clause);
        sql.push_str(&placeholder(args.len()));
    };
    if let Some(a) = q.action {
        push(
            &mut sql,
            " AND d.action = ",
            PageArg::Text(a.as_str().to_string()),
        );
    }
    if let Some(r) = &q.rule {
        push(&mut sql, " AND d.rule = ", PageArg::Text(r.clone()));
    }
    if let Some(t) = q.tx_id {
        push(&mut sql, " AND d.tx_id = ", PageArg::Int(sql::stored(t)));
    }
    if let Some(s) = q.starting_after {
        push(&mut sql, " AND d.seq < ", PageArg::Int(Seq(s).bound()));
    }
    if let Some(s) = q.ending_before {
        push(&mut sql, " AND d.seq > ", PageArg::Int(Seq(s).bound()));
    }
    sql.push_str(if q.ending_before.is_some() {
        " ORDER BY d.seq ASC"
    } else {
        " ORDER BY d.seq DESC"
    });
    push(
        &mut sql,
        " LIMIT ",
        PageArg::Int(sql_count(q.limit.saturating_add(1))),
    );
    (sql, args)
}

/// The page out of the rows [`page_query`] selected, newest first, and whether more lie beyond
/// it in the paging direction.
fn page_rows(q: &PageQuery, mut rows: Vec<DecisionRow>) -> (Vec<DecisionRow>, bool) {
    let more = rows.len() > q.limit;
    rows.truncate(q.limit);
    if q.ending_before.is_some() {
        rows.reverse();
    }
    (rows, more)
}

/// The time the longest window of `policy`, reaching `slack` further back, starts at; `None`
/// when the policy has no window.
fn window_start(policy: &Policy, now_ms: i64, slack: std::time::Duration) -> Option<i64> {
    let longest = policy.longest_window()?;
    Some(now_ms.saturating_sub(
        i64::try_from(longest.saturating_add(slack).as_millis()).unwrap_or(i64::MAX),
    ))
}

/// A live approval recorded inside the longest window.
struct WindowApproval {
    seq: Seq,
    rule: String,
    amount_value: Option<String>,
    at: Millis,
}

/// Window usage from the approvals and the `resend` events (detail, time) recorded since
/// [`window_start`]: each approval counted from its record and from every re-send.
fn usage_of(
    policy: &Policy,
    now_ms: i64,
    slack: std::time::Duration,
    approvals: Vec<WindowApproval>,
    resends: Vec<(String, i64)>,
) -> Usage {
    // An amount that cannot be read back counts as the largest possible: over-counting is
    // safe, under-counting is not.
    let amount = |t: Option<&str>| {
        t.and_then(|t| t.parse::<Decimal>().ok())
            .unwrap_or(Decimal::MAX)
    };
    let mut seen: Vec<(u64, String, Decimal, i64)> = approvals
        .into_iter()
        .map(|a| (a.seq.0, a.rule, amount(a.amount_value.as_deref()), a.at.0))
        .collect();
    for (detail, at) in resends {
        // A re-send event that cannot be read counts the largest amount under no rule but the
        // guard's window: it can only make limits tighter.
        match ResendRecord::from_detail(&detail) {
            Some(r) => seen.push((r.seq, r.rule, r.amount, at)),
            None => seen.push((u64::MAX, String::new(), Decimal::MAX, at)),
        }
    }
    Usage::at(
        policy,
        now_ms,
        slack,
        seen.iter().map(|(seq, rule, amount, at)| Approval {
            key: *seq,
            rule,
            amount: *amount,
            at_ms: *at,
        }),
    )
}

/// The state of `tx`'s content from every decision about its id (`history`, oldest first).
fn tx_state(tx: &Withdrawal, history: Vec<DecisionRow>) -> TxState {
    let fp = fingerprint(tx);
    let mut st = TxState::default();
    let mut others = std::collections::HashSet::new();
    for row in history {
        if row.fingerprint != fp {
            others.insert(row.fingerprint.clone());
            if row.action != Action::Hold && !row.dry_run {
                st.decided_other = Some(row);
            }
            continue;
        }
        if row.action == Action::Hold && st.first_hold_ms.is_none() {
            st.first_hold_ms = Some(row.recorded_at_ms);
        }
        if row.action != Action::Hold && !row.dry_run {
            st.live = Some(row);
        } else {
            st.last_unsent = Some(row);
        }
    }
    st.other_contents = others.len();
    st
}

#[cfg(test)]
mod tests;
