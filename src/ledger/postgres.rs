//! The decision ledger in PostgreSQL, for an active/standby pair sharing one durable ledger: the
//! same records, hash chain and answers as the SQLite [`super::SqliteLedger`], plus fencing:
//! every chained row carries the writer's leader epoch, and a trigger refuses, in the writing
//! transaction, a row whose epoch is older than the one in `cosigner_leader` (see `leader.rs`),
//! except a pause (a mode record of hold or reject): any member of the pair may record one.
//!
//! Appends serialise on the `cosigner_head` row (`FOR UPDATE`), which also stores the chain head
//! so that records cut from the end are detected. The schema is applied by versioned steps under
//! an advisory lock. The password reaches only the driver: [`PgTarget::describe`] and every
//! error leave it out.
//!
//! This file holds [`PgLedger`] and its answers; `postgres/target.rs` the URL, TLS and
//! connections, `postgres/schema.rs` the schema steps and the fencing trigger,
//! `postgres/store.rs` the appends and the chain walk underneath, `postgres/import.rs` the move
//! from SQLite.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::SecretString;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::record::{CollectRecord, DecisionRecord, EventRecord, OutcomeRecord, Record};
use super::sql::{Millis, Seq, sql_count};
use super::summary;
use super::verify::{CHUNK, Checker, MODE_AT, PACE, set_verified_sql, start_plan, window_from_sql};
use super::{
    DecisionRow, EventKind, EventSql, LedgerError, NewDecision, Outcome, PageArg, PageQuery,
    ResendRecord, TxState, VerifyReport, WindowApproval, page_query, page_rows, pg_arg, row_select,
    storable, tx_state, usage_of, window_start,
};

/// The event look-ups, in PostgreSQL's placeholders.
static EVENTS: std::sync::LazyLock<EventSql> = std::sync::LazyLock::new(|| EventSql::new(pg_arg));
use crate::clock::{Clock, ClockAnchor};
use crate::domain::{TxId, Withdrawal};
use crate::policy::{Policy, Usage};

mod import;
mod schema;
mod store;
mod target;

pub use import::LedgerExport;
/// The fencing function's text, for the schema's tests.
#[cfg(test)]
pub(super) use schema::FENCE_FUNCTION;
pub(crate) use schema::SCHEMA_STEPS;
use schema::{FENCED, MIGRATION_LOCK, foreign_objects};
use store::{
    EXACT_EVENT, begin_write, chain, db, decision_row, fold_summary, head_from, insert, params,
    read_through, read_verified, set_head, snapshot, stored_head, verify_on, walk, write_error,
};
pub use target::PgTarget;

/// The decision ledger in PostgreSQL. Cheap to share (`Arc`): every method takes `&self`, and
/// appends serialise in the database.
///
/// Its records are stamped with the database's clock (`clock_timestamp()`, read inside the
/// writing transaction once it holds the chain head), and [`PgLedger::clock`] is that clock
/// carried on by this host's monotonic clock between readings: every member of a pair stamps,
/// counts windows, times its requests and judges the server's `Date` by the one clock, so a
/// member whose own clock is wrong can neither poison the ledger for the others nor be stopped
/// by it.
pub struct PgLedger {
    pool: Pool,
    target: PgTarget,
    epoch: AtomicI64,
    clock: Clock,
    anchor: ClockAnchor,
}

/// The database's clock in ms since the epoch (`clock_timestamp()`: the time as it is read, not
/// the transaction's start).
const DATABASE_NOW: &str = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Reads the database's clock on `c` and notes it in `anchor`: it read that at some moment
/// between asking and the answer.
async fn read_database_now<C: GenericClient + Sync>(
    c: &C,
    anchor: &ClockAnchor,
) -> Result<i64, LedgerError> {
    let what = "read the database's clock";
    let asked = std::time::Instant::now();
    let now: i64 = c
        .query_one(DATABASE_NOW, &[])
        .await
        .map_err(db(what))?
        .try_get(0)
        .map_err(db(what))?;
    anchor.observe(now, asked, std::time::Instant::now());
    Ok(now)
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.target.described)
            .field("epoch", &self.epoch.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connects to the ledger at `url` (see [`PgTarget::parse`]) and brings its schema up to
    /// date. Writes carry epoch 0 until [`PgLedger::set_epoch`].
    pub async fn connect(url: &str, password: Option<SecretString>) -> Result<Self, LedgerError> {
        Self::open(PgTarget::parse(url, password)?).await
    }

    /// Connects to `target` and brings its schema up to date.
    pub(crate) async fn open(target: PgTarget) -> Result<Self, LedgerError> {
        let ledger = Self::connected(target).await?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// Connects to `target` and reads the database's clock; the schema is not looked at.
    async fn connected(target: PgTarget) -> Result<Self, LedgerError> {
        let pool = Self::pool(&target)?;
        let (clock, anchor) = Clock::anchored(0);
        let first = pool
            .get()
            .await
            .map_err(db("take a connection from the pool"))?;
        read_database_now(&**first, &anchor).await?;
        drop(first);
        let ledger = Self {
            pool,
            target,
            epoch: AtomicI64::new(0),
            clock,
            anchor,
        };
        Ok(ledger)
    }

    /// The connection pool of `target`; no connection is made until one is taken.
    fn pool(target: &PgTarget) -> Result<Pool, LedgerError> {
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(db("set up the connection pool"))
    }

    /// The ledger at `target` without a connection made, on this host's clock: for tests of
    /// what only reads the epoch.
    #[cfg(test)]
    pub(crate) fn unconnected(target: PgTarget) -> Result<Self, LedgerError> {
        let (clock, anchor) = Clock::anchored(Clock::system().now_ms());
        Ok(Self {
            pool: Self::pool(&target)?,
            target,
            epoch: AtomicI64::new(0),
            clock,
            anchor,
        })
    }

    /// The database's clock, carried on by this host's monotonic clock between readings (every
    /// write, and every read of the newest record, reads it again).
    #[must_use]
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Reads the database's clock on `c`, notes it in [`PgLedger::clock`], and returns it.
    async fn database_now<C: GenericClient + Sync>(&self, c: &C) -> Result<Millis, LedgerError> {
        read_database_now(c, &self.anchor).await.map(Millis)
    }

    /// Where the ledger is.
    #[must_use]
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The URL without the password.
    #[must_use]
    pub fn describe(&self) -> &str {
        self.target.describe()
    }

    /// The leader epoch every later write carries (from [`crate::leader::Role::Leader`]); the
    /// database refuses the writes once a newer epoch exists.
    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The epoch writes carry.
    #[must_use]
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        self.pool
            .get()
            .await
            .map_err(db("take a connection from the pool"))
    }

    /// Connects to `target` for a member of a pair: as [`PgLedger::open`], except that a
    /// schema newer than this cosigner's is not an error but `Some(version found)`, with
    /// nothing changed. Such a member stands by and writes nothing (every write checks the
    /// version, see [`begin_write`]) until it is upgraded.
    pub(crate) async fn open_member(target: PgTarget) -> Result<(Self, Option<i32>), LedgerError> {
        let ledger = Self::connected(target).await?;
        match ledger.migrate().await {
            Ok(()) => Ok((ledger, None)),
            Err(LedgerError::DatabaseSchema { found, known }) if found > known => {
                Ok((ledger, Some(found)))
            }
            Err(e) => Err(e),
        }
    }

    /// Appends the records `make` builds for the time they are stamped with (the database's
    /// clock once the transaction holds the chain head), in one transaction at this instance's
    /// epoch; returns their sequence numbers. On `Err` nothing may be sent; when the commit's
    /// answer was lost the records may be there, and are then found (and re-sent identically)
    /// by the next cycle.
    async fn append<R: Record>(
        &self,
        make: impl FnOnce(Millis) -> Vec<R>,
    ) -> Result<Vec<Seq>, LedgerError> {
        let epoch = self.epoch();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("begin a write"))?;
        let mut head = begin_write(&*tx).await?;
        let mut records = make(self.database_now(&*tx).await?);
        let mut rows = chain(&mut head, &mut records)?;
        insert(&*tx, &mut rows, epoch).await?;
        set_head(&*tx, &head).await?;
        fold_summary(&*tx, &head).await?;
        tx.commit()
            .await
            .map_err(write_error("commit a write", epoch))?;
        Ok(rows.into_iter().map(|r| r.seq).collect())
    }

    /// Records decisions in one transaction; returns their sequence numbers. When this returns
    /// `Err`, nothing may be sent.
    pub async fn record_decisions(&self, new: &[NewDecision]) -> Result<Vec<u64>, LedgerError> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self.append(|now| DecisionRecord::all(new, now)).await?;
        Ok(seqs.into_iter().map(|s| s.0).collect())
    }

    /// Records submission outcomes in one transaction.
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<(), LedgerError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.append(|now| OutcomeRecord::all(outcomes, now)).await?;
        Ok(())
    }

    /// Records that the approvals `resends` are about to be sent again, before they leave.
    pub async fn record_resends(&self, resends: &[ResendRecord]) -> Result<(), LedgerError> {
        if resends.is_empty() {
            return Ok(());
        }
        self.append(|now| EventRecord::resends(resends, now))
            .await?;
        Ok(())
    }

    /// Records an operational event; returns its sequence number.
    pub async fn record_event(&self, kind: EventKind, detail: &str) -> Result<u64, LedgerError> {
        let seqs = self
            .append(|now| vec![EventRecord::at(kind, detail, now)])
            .await?;
        Ok(seqs.last().map_or(0, |s| s.0))
    }

    /// Records one collection's result.
    pub async fn record_collect(
        &self,
        is_main: bool,
        ok: bool,
        message: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.append(|now| vec![CollectRecord::at(is_main, ok, message, now)])
            .await?;
        Ok(())
    }

    /// The rows of `sql` with `args`, each read by `read`.
    async fn query_map<T>(
        &self,
        what: &'static str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Vec<T>, LedgerError> {
        let rows = self
            .client()
            .await?
            .query(sql, args)
            .await
            .map_err(db(what))?;
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(db(what))
    }

    async fn decisions(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<DecisionRow>, LedgerError> {
        self.query_map("read decisions", sql, args, decision_row)
            .await
    }

    /// Every decision about `tx_id`, oldest first.
    pub async fn history(&self, tx_id: TxId) -> Result<Vec<DecisionRow>, LedgerError> {
        self.decisions(
            &format!("{} WHERE d.tx_id = $1 ORDER BY d.seq", row_select()),
            &[&tx_id],
        )
        .await
    }

    /// One decision by sequence number.
    pub async fn get(&self, seq: u64) -> Result<Option<DecisionRow>, LedgerError> {
        // No record has a sequence number a bigint cannot hold.
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let rows = self
            .decisions(&format!("{} WHERE d.seq = $1", row_select()), &[&seq])
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The newest decisions first.
    pub async fn list(&self, limit: usize) -> Result<Vec<DecisionRow>, LedgerError> {
        self.decisions(
            &format!("{} ORDER BY d.seq DESC LIMIT $1", row_select()),
            &[&sql_count(limit)],
        )
        .await
    }

    /// One page of decisions, newest first, and whether more lie beyond it in the paging
    /// direction.
    pub async fn page(&self, q: &PageQuery) -> Result<(Vec<DecisionRow>, bool), LedgerError> {
        let (sql, args) = page_query(q, pg_arg);
        let args: Vec<Box<dyn ToSql + Sync + Send>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync + Send> {
                match a {
                    PageArg::Text(t) => Box::new(t),
                    PageArg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let rows = self.decisions(&sql, &params(&args)).await?;
        Ok(page_rows(q, rows))
    }

    /// The time of the newest record, if any. The database's clock is read again after it, so
    /// that [`PgLedger::clock`] reads no earlier than any record stamped before.
    pub async fn newest_record_ms(&self) -> Result<Option<i64>, LedgerError> {
        let what = "read the newest record";
        let client = self.client().await?;
        let through = read_through(&**client, what).await?;
        let newest = client
            .query_one(summary::POSTGRES.newest().as_str(), &[&through])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        self.database_now(&**client).await?;
        Ok(newest)
    }

    /// [`SqliteLedger::usage_with_slack`]: window usage as of `now_ms`, windows reaching `slack`
    /// further back.
    pub async fn usage_with_slack(
        &self,
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
    ) -> Result<Usage, LedgerError> {
        let Some(since) = window_start(policy, now_ms, slack) else {
            return Ok(usage_of(policy, now_ms, slack, Vec::new(), Vec::new()));
        };
        let what = "read the window totals";
        let approvals = self
            .query_map(
                what,
                "SELECT seq, rule, amount_value, recorded_at_ms FROM decisions
                 WHERE action = 'approve' AND dry_run = false AND recorded_at_ms > $1",
                &[&Millis(since)],
                |r| {
                    Ok(WindowApproval {
                        seq: r.try_get(0)?,
                        rule: r.try_get(1)?,
                        amount_value: r.try_get(2)?,
                        at: r.try_get(3)?,
                    })
                },
            )
            .await?;
        let resends = self
            .query_map(
                what,
                &EVENTS.since,
                &[&EventKind::Resend.as_str(), &Millis(since)],
                |r| Ok((r.try_get(0)?, r.try_get::<_, Millis>(1)?.0)),
            )
            .await?;
        Ok(usage_of(policy, now_ms, slack, approvals, resends))
    }

    /// [`PgLedger::usage_with_slack`] with no slack.
    pub async fn usage(&self, policy: &Policy, now_ms: i64) -> Result<Usage, LedgerError> {
        self.usage_with_slack(policy, now_ms, Duration::ZERO).await
    }

    async fn event_details(
        &self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<String>, LedgerError> {
        self.query_map("read events", sql, args, |r| r.try_get(0))
            .await
    }

    /// The detail of the newest event of `kind`.
    pub async fn latest_event(&self, kind: EventKind) -> Result<Option<String>, LedgerError> {
        let details = self
            .event_details(&EVENTS.latest, &[&kind.as_str()])
            .await?;
        Ok(details.into_iter().next())
    }

    /// The details of every event of `kind`, oldest first.
    pub async fn list_events(&self, kind: EventKind) -> Result<Vec<String>, LedgerError> {
        self.event_details(&EVENTS.all, &[&kind.as_str()]).await
    }

    /// Whether an event of `kind` with exactly `detail` is recorded.
    pub async fn has_event(&self, kind: EventKind, detail: &str) -> Result<bool, LedgerError> {
        let found = self
            .event_details(EXACT_EVENT, &[&kind.as_str(), &storable(detail)])
            .await?;
        Ok(!found.is_empty())
    }

    /// The state of `tx`'s content in the ledger.
    pub async fn state(&self, tx: &Withdrawal) -> Result<TxState, LedgerError> {
        Ok(tx_state(tx, self.history(tx.id).await?))
    }

    /// The states of `txs`, in their order, from one query (a page at a time).
    pub async fn states(&self, txs: &[Withdrawal]) -> Result<Vec<TxState>, LedgerError> {
        if txs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<TxId> = txs.iter().map(|t| t.id).collect();
        let rows = self
            .decisions(
                &format!("{} WHERE d.tx_id = ANY($1) ORDER BY d.seq", row_select()),
                &[&ids],
            )
            .await?;
        let mut by_id: HashMap<TxId, Vec<DecisionRow>> = HashMap::new();
        for r in rows {
            by_id.entry(r.tx_id).or_default().push(r);
        }
        Ok(txs
            .iter()
            .map(|tx| tx_state(tx, by_id.get(&tx.id).cloned().unwrap_or_default()))
            .collect())
    }

    /// Records an event unless one of `kind` with exactly `detail` is recorded already; the
    /// check and the write are one transaction under the chain head's lock, so two callers
    /// racing (in this process or another) record it once. Returns its sequence number when it
    /// was recorded now.
    pub async fn record_event_once(
        &self,
        kind: EventKind,
        detail: &str,
    ) -> Result<Option<u64>, LedgerError> {
        let epoch = self.epoch();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db("begin a write"))?;
        let mut head = begin_write(&*tx).await?;
        let found = tx
            .query_opt(EXACT_EVENT, &[&kind.as_str(), &storable(detail)])
            .await
            .map_err(db("read events"))?;
        if found.is_some() {
            return Ok(None);
        }
        let now = self.database_now(&*tx).await?;
        let mut rows = chain(&mut head, &mut [EventRecord::at(kind, detail, now)])?;
        insert(&*tx, &mut rows, epoch).await?;
        set_head(&*tx, &head).await?;
        fold_summary(&*tx, &head).await?;
        tx.commit()
            .await
            .map_err(write_error("commit a write", epoch))?;
        Ok(rows.last().map(|r| r.seq.0))
    }

    /// Walks the whole chain and reports every break, and every object in the database that
    /// could change or hide rows.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let mut client = self.client().await?;
        // One snapshot for the records and the head: read beside a leader that is writing, they
        // would otherwise disagree ("ends at record 21 but its head says 41").
        let tx = snapshot(&mut client).await?;
        let report = verify_on(&tx).await;
        tx.rollback().await.map_err(db("verify the chain"))?;
        report
    }

    /// The check the daemon makes before its first decision, as [`SqliteLedger::verify_at_start`]
    /// does on SQLite, in one snapshot: every record since the last verified point, those the
    /// windows and the latest mode record read, and the head; a clean walk that extends the
    /// last verified point makes the head the new one.
    pub async fn verify_at_start(
        &self,
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
    ) -> Result<VerifyReport, LedgerError> {
        let what = "verify the chain";
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let foreign = foreign_objects(&tx).await?;
        let verified = read_verified(&tx).await?;
        let window_from: Option<i64> = match super::window_start(policy, now_ms, slack) {
            Some(since) => tx
                .query_one(window_from_sql("$1", "$2").as_str(), &[&since, &false])
                .await
                .map_err(db(what))?
                .try_get(0)
                .map_err(db(what))?,
            None => None,
        };
        let mode_at: Option<i64> = tx
            .query_one(MODE_AT, &[])
            .await
            .map_err(db(what))?
            .try_get(0)
            .map_err(db(what))?;
        let head = tx
            .query_one("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
            .await
            .map_err(db("read the chain head"))?;
        let head = head_from(&head)?;
        let plan = start_plan(
            verified,
            window_from.and_then(|w| u64::try_from(w).ok()),
            mode_at.and_then(|m| u64::try_from(m).ok()),
            head.seq.0,
        );
        let mut checker = plan.checker;
        if head.seq.0 > 0 {
            // To the last record there is: records beyond the stored head are an edit too.
            walk(&tx, plan.from, u64::MAX, &mut checker).await?;
        }
        if let Some(m) = plan.mode {
            let mut alone = Checker::starting_at(m);
            walk(&tx, m, m.saturating_add(1), &mut alone).await?;
            checker.absorb(alone);
        }
        let reached = checker.last().map(|(s, h)| (s, h.to_string()));
        let mut report = checker.finish_at_head(stored_head(&tx).await?.as_deref());
        tx.rollback().await.map_err(db(what))?;
        report.problems.splice(0..0, foreign);
        if report.problems.is_empty()
            && plan.extends_verified
            && let Some((seq, hash)) = reached
        {
            self.set_verified(seq, &hash).await?;
        }
        Ok(report)
    }

    /// Moves the last verified point forward to record `seq` with hash `hash`.
    pub(crate) async fn set_verified(&self, seq: u64, hash: &str) -> Result<(), LedgerError> {
        let what = "record the verified point";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db(what))?;
        // A write like any other: never on a schema this cosigner does not know.
        begin_write(&*tx).await?;
        tx.execute(
            set_verified_sql("$1", "$2").as_str(),
            &[&Seq(seq).bound(), &hash],
        )
        .await
        .map_err(db(what))?;
        tx.commit().await.map_err(db(what))
    }

    /// A walk of the chain a chunk of records per snapshot, as `ledger::verify::walk_beside`
    /// does on SQLite: `since_verified`, from the last verified point to the head; else the
    /// whole chain to the head as the walk began; `paced`, it sleeps as long as `PACE` times
    /// each chunk. Returns the report and, when clean, the record it reached.
    pub(crate) async fn walk_beside(
        &self,
        since_verified: bool,
        paced: bool,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(VerifyReport, Option<(u64, String)>), LedgerError> {
        let what = "verify the chain";
        let mut client = self.client().await?;
        let (foreign, verified, target) = {
            let tx = snapshot(&mut client).await?;
            let foreign = foreign_objects(&tx).await?;
            let verified = read_verified(&tx).await?;
            let head = tx
                .query_one("SELECT seq, hash FROM cosigner_head WHERE id = 1", &[])
                .await
                .map_err(db("read the chain head"))?;
            let target = head_from(&head)?.seq.0;
            tx.rollback().await.map_err(db(what))?;
            (foreign, verified, target)
        };
        let (mut checker, mut from) = if since_verified {
            match verified {
                Some((seq, hash)) => (Checker::after(seq, &hash), seq + 1),
                None => return Ok((Checker::starting_at(1).finish(), None)),
            }
        } else {
            (Checker::from_genesis(), 1)
        };
        while from <= target {
            let to = from.saturating_add(CHUNK - 1).min(target);
            let started = std::time::Instant::now();
            let tx = snapshot(&mut client).await?;
            walk(&tx, from, to, &mut checker).await?;
            tx.rollback().await.map_err(db(what))?;
            progress(to, target);
            if paced {
                tokio::time::sleep(started.elapsed() * PACE).await;
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

    /// Counts of real decisions (dry runs excluded) by action.
    pub async fn counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(false).await
    }

    /// Counts of dry-run decisions by action.
    pub async fn dry_run_counts(&self) -> Result<HashMap<String, u64>, LedgerError> {
        self.counts_of(true).await
    }

    async fn counts_of(&self, dry_run: bool) -> Result<HashMap<String, u64>, LedgerError> {
        let through = read_through(&**self.client().await?, "count decisions").await?;
        let counts = self
            .query_map(
                "count decisions",
                summary::POSTGRES.counts().as_str(),
                &[&dry_run, &through],
                |r| {
                    let n: i64 = r.try_get(1)?;
                    Ok((r.try_get(0)?, u64::try_from(n).unwrap_or(0)))
                },
            )
            .await?;
        Ok(counts.into_iter().collect())
    }
}
