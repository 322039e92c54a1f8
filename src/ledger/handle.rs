//! The async face of the ledger: [`LedgerHandle`], which everything outside `ledger` (the cycle,
//! the collector, the operator API, the daemon) uses instead of a locked [`SqliteLedger`]. A SQLite
//! call runs on tokio's blocking pool with the ledger's mutex held only inside it, so no lock is
//! ever held across an `.await` and an fsync never stalls the runtime's threads. Each method is
//! one `match` over the back ends: adding one is one arm per method.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::postgres::PgLedger;
use super::{
    DecisionRow, EventKind, LedgerError, NewDecision, Outcome, PageQuery, ResendRecord,
    SqliteLedger, TxState, VerifyReport,
};
use crate::clock::Clock;
use crate::domain::{TxId, Withdrawal};
use crate::policy::{Policy, Usage};

/// The ledger, shared: cheap to clone, every call `async`.
#[derive(Clone)]
pub struct LedgerHandle(Arc<Inner>);

struct Inner {
    backend: Backend,
    /// The clock that times the records, so that the cycle reads the same time.
    clock: Clock,
    /// For logs and status: the file, or a URL without its password.
    description: String,
    /// Told of every write the database refused as fenced (the daemon stands down).
    on_fenced: std::sync::OnceLock<OnFenced>,
    /// Told of every write that failed, fenced ones included, once each (the metric).
    on_write_failure: std::sync::OnceLock<OnWriteFailure>,
    /// The newest record time this process knows of (ms since the epoch): the newest record
    /// read from the ledger, or the clock's reading once one of its own writes returned (never
    /// earlier than that write's stamp). See [`LedgerHandle::newest_known_ms`].
    newest_ms: AtomicI64,
    /// Tests only: how long each write waits, once done, before it returns (a slow commit).
    #[cfg(feature = "test-hooks")]
    write_delay: std::sync::OnceLock<WriteDelay>,
}

/// Tests only: the delay of each write (see [`LedgerHandle::delay_writes`]).
#[cfg(feature = "test-hooks")]
type WriteDelay = Box<dyn Fn() -> Duration + Send + Sync>;

/// Where the records live.
enum Backend {
    /// An embedded SQLite file; rusqlite is synchronous, so calls go to the blocking pool.
    Sqlite(Arc<Mutex<SqliteLedger>>),
    /// A PostgreSQL database shared by a pair; the driver is async.
    Postgres(Arc<PgLedger>),
}

/// Called with `(mine, current)` when the database refuses a write as fenced.
type OnFenced = Box<dyn Fn(i64, i64) + Send + Sync>;

/// Called once for every write that failed.
type OnWriteFailure = Box<dyn Fn() + Send + Sync>;

/// A [`LedgerHandle`] that does not keep the ledger (and its lock) open.
#[derive(Clone)]
pub(crate) struct WeakLedgerHandle(Weak<Inner>);

impl WeakLedgerHandle {
    /// The handle, while anyone else still holds one.
    pub(crate) fn upgrade(&self) -> Option<LedgerHandle> {
        self.0.upgrade().map(LedgerHandle)
    }
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LedgerHandle")
            .field(&self.0.description)
            .finish()
    }
}

/// Runs `f` on the blocking pool with the ledger locked. A call whose thread stopped (a panic, a
/// runtime shutting down) is an error: whether a write reached the disk is then unknown, and
/// nothing depending on it may be sent.
async fn blocking<T, F>(ledger: &Arc<Mutex<SqliteLedger>>, f: F) -> Result<T, LedgerError>
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteLedger) -> Result<T, LedgerError> + Send + 'static,
{
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || {
        // A panic inside a call cannot leave the ledger half-updated: the chain head in memory
        // moves only after its transaction committed.
        let mut l = ledger.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut l)
    })
    .await
    .map_err(|e| LedgerError::Interrupted(e.to_string()))?
}

impl LedgerHandle {
    /// A handle on an open SQLite ledger (timed by the ledger's clock).
    #[must_use]
    pub fn sqlite(ledger: SqliteLedger) -> Self {
        Self(Arc::new(Inner {
            clock: ledger.clock().clone(),
            description: ledger.path().display().to_string(),
            backend: Backend::Sqlite(Arc::new(Mutex::new(ledger))),
            on_fenced: std::sync::OnceLock::new(),
            on_write_failure: std::sync::OnceLock::new(),
            newest_ms: AtomicI64::new(i64::MIN),
            #[cfg(feature = "test-hooks")]
            write_delay: std::sync::OnceLock::new(),
        }))
    }

    /// A handle on a PostgreSQL ledger (timed by the ledger's clock).
    #[must_use]
    pub fn postgres(ledger: Arc<PgLedger>) -> Self {
        Self(Arc::new(Inner {
            clock: ledger.clock().clone(),
            description: ledger.describe().to_string(),
            backend: Backend::Postgres(ledger),
            on_fenced: std::sync::OnceLock::new(),
            on_write_failure: std::sync::OnceLock::new(),
            newest_ms: AtomicI64::new(i64::MIN),
            #[cfg(feature = "test-hooks")]
            write_delay: std::sync::OnceLock::new(),
        }))
    }

    /// `"sqlite"` or `"postgres"`, for status.
    #[must_use]
    pub(crate) fn backend_name(&self) -> &'static str {
        match &self.0.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Calls `f(mine, current)` on every write the database refuses as fenced, before the error
    /// reaches the writer. Set once; a second call is ignored.
    pub(crate) fn on_fenced(&self, f: impl Fn(i64, i64) + Send + Sync + 'static) {
        let _ = self.0.on_fenced.set(Box::new(f));
    }

    /// Calls `f` once for every write call that returns an error, whatever step failed (taking
    /// a connection, a read inside the write, the commit) and fenced ones included: what a
    /// write call returns as an error was not recorded, so nothing depending on it is sent. The
    /// one place write failures are counted, whoever wrote. Set once; a second call is ignored.
    pub(crate) fn on_write_failure(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.0.on_write_failure.set(Box::new(f));
    }

    /// Passes a write's result through once it is done: tells `on_write_failure` of a failed
    /// one and `on_fenced` of a fenced one, and
    /// notes the clock's reading after a successful one as the newest record time known (the
    /// write's stamp was taken before it).
    async fn written<T>(&self, r: Result<T, LedgerError>) -> Result<T, LedgerError> {
        if r.is_err()
            && let Some(f) = self.0.on_write_failure.get()
        {
            f();
        }
        if let Err(LedgerError::Fenced { mine, current }) = &r
            && let Some(f) = self.0.on_fenced.get()
        {
            f(*mine, *current);
        }
        #[cfg(feature = "test-hooks")]
        if let Some(delay) = self.0.write_delay.get() {
            tokio::time::sleep(delay()).await;
        }
        if r.is_ok() {
            self.note_newest(self.0.clock.now_ms());
        }
        r
    }

    /// Raises the newest record time known to `ms`.
    fn note_newest(&self, ms: i64) {
        self.0.newest_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// The newest record time this process knows of: no earlier than any record it read or
    /// wrote. Read it before the clock: a clock that reads earlier than it has gone back.
    #[must_use]
    pub(crate) fn newest_known_ms(&self) -> Option<i64> {
        Some(self.0.newest_ms.load(Ordering::SeqCst)).filter(|&t| t != i64::MIN)
    }

    /// Tests only: every write waits `delay()` once done, before it returns, as a commit whose
    /// answer is slow does (the records keep the time they were stamped with). Set once.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn delay_writes(&self, delay: impl Fn() -> Duration + Send + Sync + 'static) {
        let _ = self.0.write_delay.set(Box::new(delay));
    }

    /// Where the ledger is, for logs and status (never a password).
    #[must_use]
    pub(crate) fn describe(&self) -> String {
        self.0.description.clone()
    }

    /// The clock that times the records.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// A handle that does not keep the ledger open.
    pub(crate) fn downgrade(&self) -> WeakLedgerHandle {
        WeakLedgerHandle(Arc::downgrade(&self.0))
    }

    /// Records decisions in one durable transaction; returns their sequence numbers. When this
    /// returns `Err`, nothing was recorded and nothing may be sent.
    pub async fn record_decisions(&self, new: Vec<NewDecision>) -> Result<Vec<u64>, LedgerError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let r = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.record_decisions(&new)).await,
            Backend::Postgres(p) => p.record_decisions(&new).await,
        };
        self.written(r).await
    }

    /// Records submission outcomes in one transaction.
    pub async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> Result<(), LedgerError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let r = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.record_outcomes(&outcomes)).await,
            Backend::Postgres(p) => p.record_outcomes(&outcomes).await,
        };
        self.written(r).await
    }

    /// Records that the approvals `resends` are about to be sent again, in one durable commit
    /// before they leave.
    pub(crate) async fn record_resends(
        &self,
        resends: Vec<ResendRecord>,
    ) -> Result<(), LedgerError> {
        if resends.is_empty() {
            return Ok(());
        }
        let r = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.record_resends(&resends)).await,
            Backend::Postgres(p) => p.record_resends(&resends).await,
        };
        self.written(r).await
    }

    /// Records an operational event; returns its sequence number.
    pub async fn record_event(&self, kind: EventKind, detail: &str) -> Result<u64, LedgerError> {
        let detail = detail.to_owned();
        let r = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.record_event(kind, &detail)).await,
            Backend::Postgres(p) => p.record_event(kind, &detail).await,
        };
        self.written(r).await
    }

    /// Records an event unless one of `kind` with exactly `detail` is recorded already, in one
    /// call (two callers racing with the same detail record it once); returns its sequence
    /// number when it was recorded now.
    pub(crate) async fn record_event_once(
        &self,
        kind: EventKind,
        detail: &str,
    ) -> Result<Option<u64>, LedgerError> {
        let detail = detail.to_owned();
        let r = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.record_event_once(kind, &detail)).await,
            Backend::Postgres(p) => p.record_event_once(kind, &detail).await,
        };
        self.written(r).await
    }

    /// Records one collection's result.
    pub(crate) async fn record_collect(
        &self,
        is_main: bool,
        ok: bool,
        message: Option<String>,
    ) -> Result<(), LedgerError> {
        let r = match &self.0.backend {
            Backend::Sqlite(l) => {
                blocking(l, move |l| {
                    l.record_collect(is_main, ok, message.as_deref())
                })
                .await
            }
            Backend::Postgres(p) => p.record_collect(is_main, ok, message.as_deref()).await,
        };
        self.written(r).await
    }

    /// The state of `tx`'s content in the ledger.
    #[allow(
        dead_code,
        reason = "the agreed LedgerHandle interface (HA design); nothing outside tests asks it yet"
    )]
    pub(crate) async fn state(&self, tx: Withdrawal) -> Result<TxState, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.state(&tx)).await,
            Backend::Postgres(p) => p.state(&tx).await,
        }
    }

    /// The states of `txs`, in their order, in one call (a page at a time).
    pub(crate) async fn states(&self, txs: Vec<Withdrawal>) -> Result<Vec<TxState>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.states(&txs)).await,
            Backend::Postgres(p) => p.states(&txs).await,
        }
    }

    /// Window usage for `policy` as of `now_ms` (see [`SqliteLedger::usage`]).
    pub(crate) async fn usage(
        &self,
        policy: Arc<Policy>,
        now_ms: i64,
    ) -> Result<Usage, LedgerError> {
        self.usage_with_slack(policy, now_ms, Duration::ZERO).await
    }

    /// Window usage with each window reaching `slack` further back (see
    /// [`SqliteLedger::usage_with_slack`]).
    pub(crate) async fn usage_with_slack(
        &self,
        policy: Arc<Policy>,
        now_ms: i64,
        slack: Duration,
    ) -> Result<Usage, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => {
                blocking(l, move |l| l.usage_with_slack(&policy, now_ms, slack)).await
            }
            Backend::Postgres(p) => p.usage_with_slack(&policy, now_ms, slack).await,
        }
    }

    /// Every decision about `tx_id`, oldest first.
    pub async fn history(&self, tx_id: TxId) -> Result<Vec<DecisionRow>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.history(tx_id)).await,
            Backend::Postgres(p) => p.history(tx_id).await,
        }
    }

    /// One decision by sequence number.
    pub(crate) async fn get(&self, seq: u64) -> Result<Option<DecisionRow>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.get(seq)).await,
            Backend::Postgres(p) => p.get(seq).await,
        }
    }

    /// The newest decisions first.
    pub async fn list(&self, limit: usize) -> Result<Vec<DecisionRow>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.list(limit)).await,
            Backend::Postgres(p) => p.list(limit).await,
        }
    }

    /// One page of decisions and whether more lie beyond it (see [`SqliteLedger::page`]).
    pub(crate) async fn page(&self, q: PageQuery) -> Result<(Vec<DecisionRow>, bool), LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.page(&q)).await,
            Backend::Postgres(p) => p.page(&q).await,
        }
    }

    /// The time of the newest record, if any (also kept as the newest known, see
    /// [`LedgerHandle::newest_known_ms`]).
    pub(crate) async fn newest_record_ms(&self) -> Result<Option<i64>, LedgerError> {
        let newest = match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, |l| l.newest_record_ms()).await,
            Backend::Postgres(p) => p.newest_record_ms().await,
        }?;
        if let Some(t) = newest {
            self.note_newest(t);
        }
        Ok(newest)
    }

    /// The detail of the newest event of `kind`.
    pub(crate) async fn latest_event(
        &self,
        kind: EventKind,
    ) -> Result<Option<String>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.latest_event(kind)).await,
            Backend::Postgres(p) => p.latest_event(kind).await,
        }
    }

    /// The details of every event of `kind`, oldest first.
    pub async fn list_events(&self, kind: EventKind) -> Result<Vec<String>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.list_events(kind)).await,
            Backend::Postgres(p) => p.list_events(kind).await,
        }
    }

    /// Whether an event of `kind` with exactly `detail` is recorded.
    #[allow(
        dead_code,
        reason = "the agreed LedgerHandle interface (HA design); nothing outside tests asks it yet"
    )]
    pub(crate) async fn has_event(
        &self,
        kind: EventKind,
        detail: &str,
    ) -> Result<bool, LedgerError> {
        let detail = detail.to_owned();
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, move |l| l.has_event(kind, &detail)).await,
            Backend::Postgres(p) => p.has_event(kind, &detail).await,
        }
    }

    /// Walks the whole chain and reports every break.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, |l| l.verify()).await,
            Backend::Postgres(p) => p.verify().await,
        }
    }

    /// Walks the chain beside the daemon's own work, a chunk at a time (see
    /// `ledger::verify::walk_beside`): `since_verified`, the records after the last verified
    /// point (nothing when there is none yet); else the whole chain, `paced` to a quarter of a
    /// core. Tells `progress` (records walked, records to walk) as it goes. A clean walk makes
    /// the record it reached the last verified point.
    pub(crate) async fn verify_beside(
        &self,
        since_verified: bool,
        paced: bool,
        progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
    ) -> Result<VerifyReport, LedgerError> {
        let (report, reached) = match &self.0.backend {
            Backend::Sqlite(l) => {
                let path = l
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .path()
                    .to_owned();
                // A connection of its own, off the runtime: the daemon's writes go on meanwhile.
                tokio::task::spawn_blocking(move || {
                    super::verify::walk_beside(&path, since_verified, paced, &*progress)
                })
                .await
                .map_err(|e| LedgerError::Interrupted(e.to_string()))??
            }
            Backend::Postgres(p) => p.walk_beside(since_verified, paced, &*progress).await?,
        };
        if let Some((seq, hash)) = reached {
            match &self.0.backend {
                Backend::Sqlite(l) => blocking(l, move |l| l.set_verified(seq, &hash)).await?,
                Backend::Postgres(p) => p.set_verified(seq, &hash).await?,
            }
        }
        Ok(report)
    }

    /// Counts of real decisions (dry runs excluded) by action.
    pub async fn counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, |l| l.counts()).await,
            Backend::Postgres(p) => p.counts().await,
        }
    }

    /// Counts of dry-run decisions by action.
    pub(crate) async fn dry_run_counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, |l| l.dry_run_counts()).await,
            Backend::Postgres(p) => p.dry_run_counts().await,
        }
    }

    /// Makes the ledger durable in its main form (at shutdown; SQLite folds its write-ahead
    /// log into the file).
    pub(crate) async fn checkpoint(&self) -> Result<(), LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => blocking(l, |l| l.checkpoint()).await,
            // Every PostgreSQL commit is durable when acknowledged (synchronous_commit = on).
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Makes every later record of the kill-switch mode fail, and nothing else (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn simulate_mode_write_failure(&self) -> Result<(), LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => {
                blocking(l, move |l| {
                    l.simulate_mode_write_failure().map_err(LedgerError::Write)
                })
                .await
            }
            Backend::Postgres(_) => Err(LedgerError::Interrupted(
                "simulated write failures are for the SQLite ledger".into(),
            )),
        }
    }

    /// Makes every later write fail the way a read-only (`full`: a full) filesystem does (tests
    /// only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn simulate_write_failure(&self, full: bool) -> Result<(), LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => {
                blocking(l, move |l| {
                    l.simulate_write_failure(full).map_err(LedgerError::Write)
                })
                .await
            }
            Backend::Postgres(_) => Err(LedgerError::Interrupted(
                "simulated write failures are for the SQLite ledger".into(),
            )),
        }
    }

    /// Ends [`LedgerHandle::simulate_write_failure`]: writes work again (tests only).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub async fn end_simulated_write_failure(&self) -> Result<(), LedgerError> {
        match &self.0.backend {
            Backend::Sqlite(l) => {
                blocking(l, |l| {
                    l.end_simulated_write_failure().map_err(LedgerError::Write)
                })
                .await
            }
            Backend::Postgres(_) => Err(LedgerError::Interrupted(
                "simulated write failures are for the SQLite ledger".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{hold, tx};

    #[tokio::test]
    async fn records_are_timed_by_the_ledgers_clock_and_read_back_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, hand) = Clock::manual(1_700_000_000_000);
        let h = LedgerHandle::sqlite(
            SqliteLedger::open(&dir.path().join("ledger.db"))
                .unwrap()
                .with_clock(clock),
        );
        assert_eq!(h.clock().now_ms(), 1_700_000_000_000);
        let seqs = h
            .record_decisions(vec![hold(TxId::new(1)), hold(TxId::new(2))])
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        hand.advance(Duration::from_secs(5));
        assert_eq!(h.record_event(EventKind::Mode, "x").await.unwrap(), 3);
        assert_eq!(h.newest_record_ms().await.unwrap(), Some(1_700_000_005_000));
        let states = h
            .states(vec![tx(TxId::new(2)), tx(TxId::new(1)), tx(TxId::new(3))])
            .await
            .unwrap();
        assert_eq!(
            states
                .iter()
                .map(|s| s.last_unsent.as_ref().map(|r| r.seq))
                .collect::<Vec<_>>(),
            vec![Some(2), Some(1), None]
        );
        assert_eq!(
            h.history(TxId::new(1)).await.unwrap()[0].recorded_at_ms,
            1_700_000_000_000
        );
        assert!(h.verify().await.unwrap().problems.is_empty());
        assert!(h.describe().ends_with("ledger.db"));
    }

    /// Which step of a write failed does not decide whether it is counted (before: only errors
    /// whose message named a known write step were, so a read inside a write, or a connection
    /// the pool could not give, was not).
    #[tokio::test]
    async fn every_error_a_write_call_returns_is_counted_once_as_a_write_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let h = LedgerHandle::sqlite(SqliteLedger::open(&path).unwrap());
        let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = failures.clone();
        h.on_write_failure(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        h.record_event_once(EventKind::Order, "a").await.unwrap();
        assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The read that comes first in a write finds no table: a read error, from a write call.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("ALTER TABLE events RENAME TO events_gone")
            .unwrap();
        let e = h
            .record_event_once(EventKind::Order, "b")
            .await
            .unwrap_err();
        assert!(matches!(e, LedgerError::Read(_)), "{e}");
        assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A read call that fails is not a write failure.
        assert!(h.list_events(EventKind::Order).await.is_err());
        assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_event_recorded_once_is_not_recorded_again_even_by_callers_racing() {
        let dir = tempfile::tempdir().unwrap();
        let h = LedgerHandle::sqlite(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.record_event_once(EventKind::Order, "same").await })
            })
            .collect();
        let mut recorded = 0;
        for c in calls {
            if c.await.unwrap().unwrap().is_some() {
                recorded += 1;
            }
        }
        assert_eq!(recorded, 1);
        assert_eq!(h.list_events(EventKind::Order).await.unwrap(), vec!["same"]);
        // A NUL is stored as U+FFFD, and the same detail is still found once recorded.
        assert!(
            h.record_event_once(EventKind::Order, "a\0b")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            h.record_event_once(EventKind::Order, "a\0b")
                .await
                .unwrap()
                .is_none()
        );
        assert!(h.has_event(EventKind::Order, "a\0b").await.unwrap());
    }

    #[tokio::test]
    async fn a_write_that_fails_is_an_error_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = LedgerHandle::sqlite(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        h.record_decisions(vec![hold(TxId::new(1))]).await.unwrap();
        {
            let Backend::Sqlite(l) = &h.0.backend else {
                unreachable!("an SQLite handle")
            };
            l.lock()
                .unwrap()
                .conn
                .pragma_update(None, "query_only", true)
                .unwrap();
        }
        let err = h
            .record_decisions(vec![hold(TxId::new(2))])
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Write(_)), "{err}");
        assert!(h.history(TxId::new(2)).await.unwrap().is_empty());
        assert!(h.verify().await.unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn a_weak_handle_does_not_keep_the_ledger_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let h = LedgerHandle::sqlite(SqliteLedger::open(&path).unwrap());
        let weak = h.downgrade();
        assert!(weak.upgrade().is_some());
        drop(h);
        assert!(weak.upgrade().is_none());
        // The lock went with it: the file opens again.
        drop(SqliteLedger::open(&path).unwrap());
    }
}
