//! The ledger in SQLite (WAL, synchronous=FULL): opening and migrating it, the one writer's lock,
//! writes and queries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::clock::Clock;
use crate::domain::{TxId, Withdrawal};
use crate::policy::{Policy, Usage};

use super::record::{CollectRecord, DecisionRecord, EventRecord, Head, OutcomeRecord, Record};
use super::sql::{Millis, Seq, sql_count};
use super::{
    DecisionRow, EventKind, EventSql, LedgerError, NEWEST_RECORD, NewDecision, Outcome, PageArg,
    PageQuery, ResendRecord, TxState, WindowApproval, fold_summary, page_query, page_rows, record,
    row, row_select, schema, sqlite_arg, storable, summary, tx_state, usage_of, window_start,
    write_head,
};

/// The event look-ups, in SQLite's placeholders.
static EVENTS: std::sync::LazyLock<EventSql> =
    std::sync::LazyLock::new(|| EventSql::new(sqlite_arg));

/// The schema steps this cosigner knows (see `ledger/schema.rs`).
pub(super) fn known_steps() -> usize {
    schema::SQLITE.len()
}

/// The ledger.
pub struct SqliteLedger {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) head: Head,
    /// The schema steps the file has (all this cosigner knows, once opened for writing).
    pub(super) steps: usize,
    /// Times every record.
    pub(super) clock: Clock,
    pub(super) _lock: Option<File>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.path)
            .field("head_seq", &self.head.seq.0)
            .finish_non_exhaustive()
    }
}

pub(super) fn schema_error(path: &Path, found: String) -> LedgerError {
    LedgerError::Schema {
        path: path.to_owned(),
        found,
    }
}

/// The schema steps a file has: `meta.schema_version`, or 1 for the tables of a ledger made
/// before that was written, 0 for an empty file; `Err` with the text of a version that is not
/// a number.
pub(super) fn applied_steps(conn: &Connection) -> rusqlite::Result<Result<usize, String>> {
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
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, LedgerError> {
    let open_err = |e| LedgerError::Open {
        path: path.to_owned(),
        error: e,
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

pub(super) fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl SqliteLedger {
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
                error: e,
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
            error: e,
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
                    error: source,
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
            error: e,
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

    pub(super) fn finish_open(
        conn: Connection,
        path: &Path,
        steps: usize,
        lock: Option<File>,
    ) -> Result<Self, LedgerError> {
        let open_err = |e| LedgerError::Open {
            path: path.to_owned(),
            error: e,
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

    pub(super) fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    /// Whether the file has the running summary (schema step 2): a file read before the
    /// daemon of this version migrated it has not.
    pub(super) fn summarised(&self) -> bool {
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
    pub(super) fn append<R: Record>(&mut self, records: &mut [R]) -> Result<Vec<Seq>, LedgerError> {
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
        let (sql, args) = page_query(q, sqlite_arg);
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
    pub(super) fn through(&self) -> rusqlite::Result<i64> {
        self.conn.query_row(summary::THROUGH, [], |r| r.get(0))
    }

    /// Window usage for `policy` as of `now_ms`: approvals recorded (sent or not yet, dry runs
    /// excluded) inside each window, each counted once per window, at its record and at every
    /// re-send (under the rule that approved the re-send): an approval is counted from the last
    /// time it may have left.
    pub fn usage(&self, policy: &Policy, now_ms: i64) -> Result<Usage, LedgerError> {
        self.usage_with_slack(policy, now_ms, std::time::Duration::ZERO)
    }

    /// [`SqliteLedger::usage`] with each window reaching `slack` further back (see `Usage::at`).
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
        let resends = self.events_since(EventKind::Resend, since)?;
        Ok(usage_of(policy, now_ms, slack, approvals, resends))
    }

    /// The details and times of the events of `kind` recorded after `since_ms`.
    pub(super) fn events_since(
        &self,
        kind: EventKind,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&EVENTS.since)
            .map_err(LedgerError::Read)?;
        let rows = stmt
            .query_map(params![kind.as_str(), Millis(since_ms)], |r| {
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
    pub fn record_event(&mut self, kind: EventKind, detail: &str) -> Result<u64, LedgerError> {
        self.append(&mut [EventRecord::at(kind, detail, Millis(self.clock.now_ms()))])?;
        Ok(self.head.seq.0)
    }

    /// Records an event of `kind` with `detail` unless one with exactly that detail is
    /// recorded already; returns its sequence number when it was recorded now.
    pub(crate) fn record_event_once(
        &mut self,
        kind: EventKind,
        detail: &str,
    ) -> Result<Option<u64>, LedgerError> {
        if self.has_event(kind, detail)? {
            return Ok(None);
        }
        self.record_event(kind, detail).map(Some)
    }

    /// The detail of the newest event of `kind`.
    pub fn latest_event(&self, kind: EventKind) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(&EVENTS.latest, [kind.as_str()], |r| r.get(0))
            .optional()
            .map_err(LedgerError::Read)
    }

    /// The details of every event of `kind`, oldest first.
    pub fn list_events(&self, kind: EventKind) -> Result<Vec<String>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&EVENTS.all)
            .map_err(LedgerError::Read)?;
        stmt.query_map([kind.as_str()], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(LedgerError::Read)
    }

    /// Whether an event of `kind` with exactly `detail` is recorded.
    pub fn has_event(&self, kind: EventKind, detail: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT 1 FROM events WHERE kind = ?1 AND detail = ?2 LIMIT 1",
                [kind.as_str(), &storable(detail)],
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
    pub(super) fn foreign_objects(&self) -> Result<Vec<String>, LedgerError> {
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

impl SqliteLedger {
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

    pub(super) fn counts_of(&self, dry_run: bool) -> Result<HashMap<String, u64>, LedgerError> {
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
