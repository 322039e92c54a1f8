//! Walking the hash chain in constant memory, the same way on both back ends: records come in
//! sequence order across the four kinds (each table read in order of its primary key, the four
//! merged as they come), each one hashed into a reused buffer and checked against its stored
//! hash and its predecessor's, and nothing of it kept. A walk can start at the genesis, at the
//! last verified point (its hash pinned), or anywhere (the records the windows and the mode
//! read at start, before the background pass has reached them).

use std::collections::BTreeMap;

use rusqlite::{Connection, Row, Rows, Statement};

use super::record::{
    CollectRecord, DecisionRecord, EventRecord, GENESIS, OutcomeRecord, Record, Stored, Unreadable,
    record_hash, select_range,
};
use super::sql::Seq;
use super::{LedgerError, SqliteLedger, VerifyReport};

/// The most problems a report lists; beyond, it says how many more there are (a ledger edited
/// throughout must not make `verify` hold every sentence in memory).
pub(crate) const MAX_PROBLEMS: usize = 100;

/// What a walk checks each record against, fed records in sequence order.
#[derive(Debug)]
pub(crate) struct Checker {
    /// The hash the next record must follow; `None` before the first record of a walk that
    /// starts where nothing is known of the record before.
    prev: Option<String>,
    /// The sequence number the next record must have.
    expected: u64,
    /// A record that was verified before, and the hash it had then.
    pin: Option<(u64, String)>,
    records: u64,
    by_kind: BTreeMap<&'static str, u64>,
    problems: Vec<String>,
    more: u64,
}

impl Checker {
    /// A walk from the first record of the chain.
    pub(crate) fn from_genesis() -> Self {
        Self::after(0, GENESIS)
    }

    /// A walk from the record after `seq`, whose hash is `hash` (the last verified point).
    pub(crate) fn after(seq: u64, hash: &str) -> Self {
        Self {
            prev: Some(hash.to_string()),
            ..Self::starting_at(seq.saturating_add(1))
        }
    }

    /// A walk from record `seq`, the one before it unknown.
    pub(crate) fn starting_at(seq: u64) -> Self {
        Self {
            prev: None,
            expected: seq,
            pin: None,
            records: 0,
            by_kind: BTreeMap::new(),
            problems: Vec::new(),
            more: 0,
        }
    }

    /// Also checks that record `seq` still has the hash `hash` it had when it was verified.
    pub(crate) fn pinned(mut self, seq: u64, hash: &str) -> Self {
        self.pin = Some((seq, hash.to_string()));
        self
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        } else {
            self.more += 1;
        }
    }

    /// Checks the next record.
    pub(crate) fn push(&mut self, r: Stored) {
        let seq = r.seq.0;
        if seq != self.expected {
            let text = format!(
                "records {} to {} are missing",
                self.expected,
                seq.saturating_sub(1)
            );
            self.problem(text);
        }
        if self.prev.as_ref().is_some_and(|p| *p != r.prev_hash) {
            self.problem(format!(
                "record {seq}: does not follow the record before it"
            ));
        }
        match r.computed {
            Ok(h) if h == r.hash => {}
            Ok(_) => self.problem(format!(
                "record {seq} ({}): content does not match its hash (edited)",
                r.kind
            )),
            Err(e) => self.problem(format!(
                "record {seq} ({}): content cannot be read ({e}) (edited)",
                r.kind
            )),
        }
        if let Some((at, hash)) = &self.pin
            && *at == seq
            && *hash != r.hash
        {
            let text = format!(
                "record {seq} ({}): its hash is not the one it had when it was verified (edited)",
                r.kind
            );
            self.problem(text);
        }
        self.records += 1;
        *self.by_kind.entry(r.kind).or_insert(0) += 1;
        self.expected = seq.saturating_add(1);
        self.prev = Some(r.hash);
    }

    /// The last record walked: its sequence number and hash.
    pub(crate) fn last(&self) -> Option<(u64, &str)> {
        let seq = self.expected.checked_sub(1)?;
        self.prev.as_deref().map(|h| (seq, h))
    }

    /// Whether nothing was found wrong so far.
    pub(crate) fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report of a walk that ended at the end of the chain, whose stored head is `head`
    /// (`seq:hash`; `None` when none is stored).
    pub(crate) fn finish_at_head(mut self, head: Option<&str>) -> VerifyReport {
        let last = self.expected.saturating_sub(1);
        let prev = self.prev.clone().unwrap_or_else(|| GENESIS.to_string());
        match head {
            Some(h) if h != format!("{last}:{prev}") => {
                let said = h.split(':').next().unwrap_or("?").to_string();
                self.problem(format!(
                    "the ledger ends at record {last} but its head says {said}: records were removed from the end"
                ));
            }
            Some(_) => {}
            // Every write stores the head with its records: without it, records cut from the
            // end could not be noticed.
            None if last > 0 => self.problem(format!(
                "the chain head is missing while {last} records exist (removed): records cut from the end could not be detected"
            )),
            None => {}
        }
        self.finish()
    }

    /// The report of the walk so far.
    pub(crate) fn finish(mut self) -> VerifyReport {
        if self.more > 0 {
            self.problems
                .push(format!("and {} more problems", self.more));
        }
        VerifyReport {
            records: self.records,
            by_kind: self.by_kind,
            problems: self.problems,
        }
    }

    /// Adds `other`'s findings to these (a second walk of the same check).
    pub(crate) fn absorb(&mut self, other: Checker) {
        self.records += other.records;
        for (k, n) in other.by_kind {
            *self.by_kind.entry(k).or_insert(0) += n;
        }
        self.more += other.more;
        for p in other.problems {
            self.problem(p);
        }
    }
}

/// A record as read, not yet hashed: what the reading half of a walk hands the hashing half.
struct Read {
    seq: Seq,
    kind: &'static str,
    prev_hash: String,
    hash: String,
    content: Result<Content, Unreadable>,
}

/// The columns of a record of one of the four kinds.
// Held unboxed: a batch holds BATCH of them for a moment, and a box would cost an allocation
// per decision record.
#[allow(clippy::large_enum_variant)]
enum Content {
    Decision(DecisionRecord),
    Outcome(OutcomeRecord),
    Collect(CollectRecord),
    Event(EventRecord),
}

impl From<DecisionRecord> for Content {
    fn from(r: DecisionRecord) -> Self {
        Self::Decision(r)
    }
}

impl From<OutcomeRecord> for Content {
    fn from(r: OutcomeRecord) -> Self {
        Self::Outcome(r)
    }
}

impl From<CollectRecord> for Content {
    fn from(r: CollectRecord) -> Self {
        Self::Collect(r)
    }
}

impl From<EventRecord> for Content {
    fn from(r: EventRecord) -> Self {
        Self::Event(r)
    }
}

impl Read {
    /// The record with its hash recomputed (in `buf`, reused).
    fn hashed(self, buf: &mut Vec<u8>) -> Stored {
        let (prev, seq) = (self.prev_hash.as_str(), self.seq);
        let computed = self.content.and_then(|content| {
            match content {
                Content::Decision(mut r) => record_hash(prev, seq, &mut r, buf),
                Content::Outcome(mut r) => record_hash(prev, seq, &mut r, buf),
                Content::Collect(mut r) => record_hash(prev, seq, &mut r, buf),
                Content::Event(mut r) => record_hash(prev, seq, &mut r, buf),
            }
            .map_err(Unreadable::from)
        });
        Stored {
            seq,
            kind: self.kind,
            computed,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// Reads a record of kind `R` from a row of `select_range`.
fn read<R: Record + Into<Content>>(row: &Row<'_>) -> rusqlite::Result<Read> {
    Ok(Read {
        seq: row.get(0)?,
        kind: R::KIND,
        prev_hash: row.get(1)?,
        hash: row.get(2)?,
        content: R::from_row(row, 3)
            .map(Into::into)
            .map_err(Unreadable::from),
    })
}

/// One table's rows, with the next record read ahead.
struct Cursor<'s> {
    rows: Rows<'s>,
    read: fn(&Row<'_>) -> rusqlite::Result<Read>,
    next: Option<Read>,
}

impl Cursor<'_> {
    fn advance(&mut self) -> rusqlite::Result<()> {
        self.next = match self.rows.next()? {
            Some(row) => Some((self.read)(row)?),
            None => None,
        };
        Ok(())
    }
}

/// Hands `emit` the records `from..=to` in sequence order across the four tables, until it
/// says stop (false).
fn merge(
    conn: &Connection,
    from: u64,
    to: u64,
    emit: &mut dyn FnMut(Read) -> bool,
) -> rusqlite::Result<()> {
    let bounds = [Seq(from).bound(), Seq(to).bound()];
    let prepare = |sql: String| -> rusqlite::Result<Statement<'_>> { conn.prepare(&sql) };
    let mut d = prepare(select_range::<DecisionRecord>("?1", "?2"))?;
    let mut o = prepare(select_range::<OutcomeRecord>("?1", "?2"))?;
    let mut c = prepare(select_range::<CollectRecord>("?1", "?2"))?;
    let mut e = prepare(select_range::<EventRecord>("?1", "?2"))?;
    let mut cursors = [
        Cursor {
            rows: d.query(bounds)?,
            read: read::<DecisionRecord>,
            next: None,
        },
        Cursor {
            rows: o.query(bounds)?,
            read: read::<OutcomeRecord>,
            next: None,
        },
        Cursor {
            rows: c.query(bounds)?,
            read: read::<CollectRecord>,
            next: None,
        },
        Cursor {
            rows: e.query(bounds)?,
            read: read::<EventRecord>,
            next: None,
        },
    ];
    for cursor in &mut cursors {
        cursor.advance()?;
    }
    loop {
        let lowest = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next.as_ref().map(|r| (r.seq, i)))
            .min();
        let Some((_, i)) = lowest else {
            return Ok(());
        };
        if let Some(record) = cursors[i].next.take()
            && !emit(record)
        {
            return Ok(());
        }
        cursors[i].advance()?;
    }
}

/// Walks the records `from..=to` on `conn` into `checker`, on this thread.
pub(crate) fn walk(
    conn: &Connection,
    from: u64,
    to: u64,
    checker: &mut Checker,
) -> rusqlite::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    merge(conn, from, to, &mut |r| {
        checker.push(r.hashed(&mut buf));
        true
    })
}

/// Records a batch of a pipelined walk holds; [`PIPELINE_DEPTH`] batches at most are in flight,
/// so the walk's memory does not grow with the chain.
const BATCH: usize = 1024;
/// Batches read ahead of the hashing thread.
const PIPELINE_DEPTH: usize = 4;

/// Walks the records `from..=to` on `conn` into `checker` as [`walk`] does, reading on this
/// thread and hashing on a second one (each record's hash depends only on what it stores, so
/// the two halves overlap): what a whole-chain walk that nobody paces takes, `ledger verify`
/// and the check at start.
pub(crate) fn walk_pipelined(
    conn: &Connection,
    from: u64,
    to: u64,
    checker: &mut Checker,
) -> rusqlite::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Read>>(PIPELINE_DEPTH);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut buf = Vec::with_capacity(4096);
            for batch in rx {
                for r in batch {
                    checker.push(r.hashed(&mut buf));
                }
            }
        });
        let mut batch = Vec::with_capacity(BATCH);
        let read = merge(conn, from, to, &mut |r| {
            batch.push(r);
            if batch.len() < BATCH {
                return true;
            }
            // A send fails only once the hashing thread is gone (it panicked): the scope
            // passes its panic on.
            tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .is_ok()
        });
        if read.is_ok() && !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        read
    })
}

/// Where the start-up walk of the main chain begins, and what it knows of the record before.
#[derive(Debug)]
pub(crate) struct StartPlan {
    /// The first record walked.
    pub(crate) from: u64,
    /// The checker, anchored at the last verified point when the walk starts right after it.
    pub(crate) checker: Checker,
    /// Whether a clean walk verifies the whole chain up to the head (it extends the last
    /// verified point), so that the head becomes the new verified point.
    pub(crate) extends_verified: bool,
    /// The latest mode record, when the main walk does not reach it: walked alone, with the
    /// link to the record after it.
    pub(crate) mode: Option<u64>,
}

/// What the daemon verifies before its first decision: every record since the last verified
/// point (all of them on a new ledger), every record from the first one the longest window
/// (with its slack) reads (`window_from`), the latest mode record (`mode_at`), and the head.
/// On a ledger upgraded from before the verified point was kept, the window, the mode record
/// and the head: the background pass verifies the rest.
pub(crate) fn start_plan(
    verified: Option<(u64, String)>,
    window_from: Option<u64>,
    mode_at: Option<u64>,
    head: u64,
) -> StartPlan {
    let from = match (&verified, window_from) {
        (Some((v, _)), Some(w)) => w.min(v + 1),
        (Some((v, _)), None) => v + 1,
        (None, Some(w)) => w,
        (None, None) => head,
    }
    .clamp(1, head.max(1));
    let (checker, extends_verified) = match &verified {
        Some((v, hash)) if from == v + 1 => (Checker::after(*v, hash), true),
        // Here `from <= v`: it is at most `v + 1` before the clamp, which only lowers it (to
        // the head) or raises a 0 to 1 (and `v + 1 >= 1`).
        Some((v, hash)) => (Checker::starting_at(from).pinned(*v, hash), true),
        None => (Checker::starting_at(from), false),
    };
    StartPlan {
        from,
        checker,
        extends_verified,
        mode: mode_at.filter(|&m| m < from),
    }
}

/// The first record the windows read: the first approval (not a dry run) or `resend` event
/// recorded after the first parameter (ms), the second being `false` for `dry_run`.
pub(crate) fn window_from_sql(p1: &str, p2: &str) -> String {
    format!(
        "SELECT MIN(s) FROM (
  SELECT MIN(seq) AS s FROM decisions WHERE action = 'approve' AND dry_run = {p2} AND recorded_at_ms > {p1}
  UNION ALL SELECT MIN(seq) FROM events WHERE kind = 'resend' AND recorded_at_ms > {p1}) AS w"
    )
}

/// The latest mode record's sequence number.
pub(crate) const MODE_AT: &str = "SELECT MAX(seq) FROM events WHERE kind = 'mode'";

/// The last verified point: `verified_seq`, `verified_hash` (both NULL on a ledger upgraded
/// to step 2 and not verified since).
pub(crate) const VERIFIED: &str =
    "SELECT verified_seq, verified_hash FROM ledger_summary WHERE id = 1";

/// Moves the last verified point forward (never back) to the first parameter (a sequence
/// number) and the second (that record's hash).
pub(crate) fn set_verified_sql(p1: &str, p2: &str) -> String {
    format!(
        "UPDATE ledger_summary SET verified_seq = {p1}, verified_hash = {p2}
  WHERE id = 1 AND (verified_seq IS NULL OR verified_seq < {p1})"
    )
}

/// How many records a chunk of the background pass walks in one read transaction (so that a
/// snapshot is never held for long), and how much of one core it may use.
pub(crate) const CHUNK: u64 = 20_000;

/// The pass sleeps this many times as long as each chunk took: at most a quarter of a core.
pub(crate) const PACE: u32 = 3;

impl SqliteLedger {
    /// Runs `f` inside one read transaction, so that everything it reads is one snapshot
    /// (beside a daemon that writes meanwhile, the records and the head would disagree).
    fn in_snapshot<T>(
        &self,
        f: impl FnOnce(&Self) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        self.conn
            .execute_batch("BEGIN")
            .map_err(LedgerError::Read)?;
        let out = f(self);
        let end = self
            .conn
            .execute_batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let out = out.map_err(LedgerError::Read)?;
        end.map_err(LedgerError::Read)?;
        Ok(out)
    }

    /// Walks the whole chain, from its first record to its head, in one snapshot and constant
    /// memory, and reports every break (and every object in the file no cosigner writes).
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let foreign = self.foreign_objects()?;
        let mut report = self.in_snapshot(|l| {
            let mut checker = Checker::from_genesis();
            walk_pipelined(&l.conn, 1, u64::MAX, &mut checker)?;
            Ok(checker.finish_at_head(l.meta("head")?.as_deref()))
        })?;
        report.problems.splice(0..0, foreign);
        Ok(report)
    }

    /// The check the daemon makes before its first decision (see [`start_plan`]): every record
    /// since the last verified point, those the windows of `policy` (reaching `slack` further
    /// back, as of `now_ms`) and the latest mode record read, and the head. When it extends the
    /// last verified point cleanly, the head becomes the new one.
    pub fn verify_at_start(
        &mut self,
        policy: &crate::policy::Policy,
        now_ms: i64,
        slack: std::time::Duration,
    ) -> Result<VerifyReport, LedgerError> {
        let foreign = self.foreign_objects()?;
        let head = self.head.clone();
        let since = super::window_start(policy, now_ms, slack);
        let summarised = self.summarised();
        let (mut report, extends) = self.in_snapshot(|l| {
            let verified = if summarised {
                let (seq, hash): (Option<i64>, Option<String>) =
                    l.conn
                        .query_row(VERIFIED, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
                seq.and_then(|s| u64::try_from(s).ok()).zip(hash)
            } else {
                None
            };
            let window_from: Option<i64> = match since {
                Some(since) => l.conn.query_row(
                    &window_from_sql("?1", "?2"),
                    rusqlite::params![since, false],
                    |r| r.get(0),
                )?,
                None => None,
            };
            let mode_at: Option<i64> = l.conn.query_row(MODE_AT, [], |r| r.get(0))?;
            let plan = start_plan(
                verified,
                window_from.and_then(|w| u64::try_from(w).ok()),
                mode_at.and_then(|m| u64::try_from(m).ok()),
                head.seq.0,
            );
            let mut checker = plan.checker;
            // On an empty ledger this walks 1..=0: nothing.
            walk_pipelined(&l.conn, plan.from, head.seq.0, &mut checker)?;
            if let Some(m) = plan.mode {
                let mut alone = Checker::starting_at(m);
                walk(&l.conn, m, m.saturating_add(1), &mut alone)?;
                checker.absorb(alone);
            }
            Ok((
                checker.finish_at_head(l.meta("head")?.as_deref()),
                plan.extends_verified,
            ))
        })?;
        report.problems.splice(0..0, foreign);
        // On an empty ledger this sets record 0, the point a new ledger starts at: nothing moves.
        if report.problems.is_empty() && extends {
            self.set_verified(head.seq.0, &head.hash)?;
        }
        Ok(report)
    }

    /// Moves the last verified point forward to record `seq` with hash `hash`.
    pub(crate) fn set_verified(&self, seq: u64, hash: &str) -> Result<(), LedgerError> {
        if !self.summarised() {
            return Ok(());
        }
        self.conn
            .execute(
                &set_verified_sql("?1", "?2"),
                rusqlite::params![Seq(seq).bound(), hash],
            )
            .map(|_| ())
            .map_err(LedgerError::Write)
    }

    /// The last verified point, when there is one.
    fn verified(&self) -> rusqlite::Result<Option<(u64, String)>> {
        if !self.summarised() {
            return Ok(None);
        }
        let (seq, hash): (Option<i64>, Option<String>) =
            self.conn
                .query_row(VERIFIED, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).zip(hash))
    }
}

/// A walk of the ledger at `path` on a connection of its own, beside the daemon, a chunk of
/// records per read transaction; `paced`, it sleeps [`PACE`] times as long as each chunk took.
/// `since_verified`: from the last verified point to the head (nothing when there is none);
/// else the whole chain from its first record to the head as the walk began. Tells `progress`
/// (records walked, records to walk) after each chunk. Returns the report and, when clean, the
/// record it reached, to become the last verified point.
pub(crate) fn walk_beside(
    path: &std::path::Path,
    since_verified: bool,
    paced: bool,
    progress: &dyn Fn(u64, u64),
) -> Result<(VerifyReport, Option<(u64, String)>), LedgerError> {
    let l = SqliteLedger::open_read_only(path)?;
    let foreign = l.foreign_objects()?;
    let (mut checker, first) = if since_verified {
        match l.verified().map_err(LedgerError::Read)? {
            Some((seq, hash)) => (Checker::after(seq, &hash), seq + 1),
            None => return Ok((Checker::starting_at(1).finish(), None)),
        }
    } else {
        (Checker::from_genesis(), 1)
    };
    let target = l.head.seq.0;
    let mut from = first;
    while from <= target {
        let to = from.saturating_add(CHUNK - 1).min(target);
        let started = std::time::Instant::now();
        l.in_snapshot(|l| walk(&l.conn, from, to, &mut checker))?;
        progress(to, target);
        if paced {
            std::thread::sleep(started.elapsed() * PACE);
        }
        from = to + 1;
    }
    let reached = checker
        .last()
        .filter(|_| checker.clean() && foreign.is_empty())
        .map(|(s, h)| (s, h.to_string()));
    let mut report = checker.finish();
    report.problems.splice(0..0, foreign);
    Ok((report, reached))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(v: Option<u64>, w: Option<u64>, m: Option<u64>, head: u64) -> (u64, bool, Option<u64>) {
        let p = start_plan(v.map(|s| (s, "h".to_string())), w, m, head);
        assert_eq!(
            p.checker.expected, p.from,
            "the checker starts where the walk does"
        );
        (p.from, p.extends_verified, p.mode)
    }

    /// What the start plan's checker knows of the record before the walk, and what it pins.
    fn anchors(v: Option<u64>, w: Option<u64>, head: u64) -> (Option<String>, Option<u64>) {
        let p = start_plan(v.map(|s| (s, "h".to_string())), w, None, head);
        (p.checker.prev, p.checker.pin.map(|(seq, _)| seq))
    }

    #[test]
    fn the_start_links_to_the_verified_record_right_before_it_and_pins_one_it_walks_over() {
        // From 91, right after the verified 90: the first record must follow 90's hash.
        assert_eq!(anchors(Some(90), Some(95), 100), (Some("h".into()), None));
        assert_eq!(anchors(Some(90), None, 100), (Some("h".into()), None));
        // From the window's 40: nothing known before it, and 90 must still have its hash.
        assert_eq!(anchors(Some(90), Some(40), 100), (None, Some(90)));
        // Nothing verified: nothing known, nothing pinned.
        assert_eq!(anchors(None, Some(40), 100), (None, None));
    }

    fn stored(seq: u64, kind: &'static str, prev: &str, hash: &str) -> Stored {
        Stored {
            seq: Seq(seq),
            kind,
            computed: Ok(hash.to_string()),
            prev_hash: prev.to_string(),
            hash: hash.to_string(),
        }
    }

    #[test]
    fn a_second_walk_absorbed_adds_its_records_kinds_and_problems_to_the_first() {
        // The start check walks the latest mode record alone and absorbs that walk.
        let mut main = Checker::from_genesis();
        main.push(stored(1, "event", GENESIS, "a"));
        main.push(stored(2, "decision", "a", "b"));
        let mut alone = Checker::starting_at(7);
        alone.push(stored(7, "event", "x", "g"));
        for seq in 8..=(8 + MAX_PROBLEMS as u64 + 2) {
            // Each follows nothing it should: one problem apiece, past the list's bound.
            alone.push(stored(seq, "event", "wrong", &format!("h{seq}")));
        }
        main.absorb(alone);
        let report = main.finish();
        assert_eq!(report.records, 2 + 1 + MAX_PROBLEMS as u64 + 3);
        assert_eq!(
            report.by_kind.into_iter().collect::<Vec<_>>(),
            vec![("decision", 1), ("event", 1 + 1 + MAX_PROBLEMS as u64 + 3)]
        );
        assert_eq!(report.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            report.problems[0],
            "record 8: does not follow the record before it"
        );
        assert_eq!(report.problems[MAX_PROBLEMS], "and 3 more problems");
    }

    #[test]
    fn the_start_walks_from_the_last_verified_point_or_the_window_whichever_is_first() {
        // Verified up to 90 of 100, the window from 95: from 91, extending the verified point.
        assert_eq!(plan(Some(90), Some(95), Some(3), 100), (91, true, Some(3)));
        assert_eq!(plan(Some(90), None, None, 100), (91, true, None));
        // The window reaches before the verified point: from it, the verified record pinned.
        assert_eq!(plan(Some(90), Some(40), Some(50), 100), (40, true, None));
        // Nothing verified yet (a ledger from before): the window and the mode record only.
        assert_eq!(plan(None, Some(95), Some(3), 100), (95, false, Some(3)));
        // Nothing verified, no window: the head record alone (truncation shows there).
        assert_eq!(plan(None, None, None, 100), (100, false, None));
        // Verified to the head: the head record alone.
        assert_eq!(plan(Some(100), None, Some(100), 100), (100, true, None));
        // A new ledger: everything, from the first record.
        assert_eq!(plan(Some(0), None, None, 7), (1, true, None));
        assert_eq!(plan(Some(0), None, None, 0), (1, true, None));
    }

    #[test]
    fn a_walk_pinned_at_a_verified_record_finds_it_changed() {
        let stored = |seq, prev: &str, hash: &str| Stored {
            seq: Seq(seq),
            kind: "event",
            computed: Ok(hash.to_string()),
            prev_hash: prev.to_string(),
            hash: hash.to_string(),
        };
        let mut c = Checker::starting_at(4).pinned(5, "was");
        c.push(stored(4, "x", "a"));
        c.push(stored(5, "a", "now"));
        c.push(stored(6, "now", "b"));
        let report = c.finish();
        assert_eq!(report.records, 3);
        assert_eq!(
            report.problems,
            vec!["record 5 (event): its hash is not the one it had when it was verified (edited)"]
        );
    }

    #[test]
    fn a_chain_broken_everywhere_reports_a_bounded_list_of_problems() {
        let mut c = Checker::from_genesis();
        for seq in 1..=1000 {
            c.push(Stored {
                seq: Seq(seq),
                kind: "event",
                computed: Ok("other".into()),
                prev_hash: "x".into(),
                hash: "y".into(),
            });
        }
        let report = c.finish();
        assert_eq!(report.records, 1000);
        assert_eq!(report.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(report.problems[MAX_PROBLEMS], "and 1900 more problems");
    }
}
