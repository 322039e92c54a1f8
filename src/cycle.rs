//! One pending cycle: read every page of the pending list, decide each transaction by the policy,
//! record the decisions durably, and only then send them; record what the server said.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::client::{ApproveRequest, Client, ClientError, Gate, MalformedItem, Refusal};
use crate::clock::Clock;
use crate::control::Control;
use crate::domain::{Action, ClockCheck, Decision, TxId, Withdrawal, decision_text};
use crate::leader::{Lead, NotLeading};
use crate::ledger::{DecisionRow, LedgerError, LedgerHandle, NewDecision, Outcome, ResendRecord};
use crate::metrics::Metrics;
use crate::plan::{Inputs, Plan, plan};
use crate::policy::{HoldKey, LATE_SEND, Policy, RULE_MALFORMED, Usage, window_slack};
use crate::signer::Signer;

/// Settings of the cycle.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Items asked per page.
    pub page_size: u32,
    /// Approve/reject requests in flight at once.
    pub max_in_flight: usize,
    /// Record decisions as dry runs and send nothing.
    pub dry_run: bool,
    /// Most distinct items one listing may hold (items without a usable id count too): beyond
    /// it the cycle decides nothing (`poll.max_items`).
    pub max_items: usize,
    /// Largest raw JSON of one item: a larger item is held as malformed, and only a bounded
    /// prefix of it is kept (`poll.max_item_bytes`).
    pub max_item_bytes: usize,
    /// How long one cycle may take before it is abandoned (`poll.cycle_timeout`).
    pub cycle_timeout: std::time::Duration,
}

/// Default `poll.max_items`: distinct items one listing may hold, far above any real backlog.
pub(crate) const DEFAULT_MAX_ITEMS: usize = 50_000;
/// Default `poll.max_item_bytes`: the raw JSON of one pending item (a real one is ~200 bytes).
pub(crate) const DEFAULT_MAX_ITEM_BYTES: usize = 4096;
/// Default deadline of a cycle: the default poll interval (`poll.cycle_timeout` defaults to the
/// configured `poll.interval`).
pub(crate) const DEFAULT_CYCLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What one cycle did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CycleOutcome {
    /// Distinct transactions listed.
    pub listed: u64,
    /// List items that could not be identified.
    pub malformed_items: u64,
    /// New decisions recorded, by action.
    pub decided: BTreeMap<String, u64>,
    /// Holds seen again with the same reason (not recorded again).
    pub holds_unchanged: u64,
    /// Transactions currently held (new or unchanged).
    pub held: u64,
    /// Earlier decisions sent again with identical `data`.
    pub resent: u64,
    /// Requests the server accepted.
    pub submitted: u64,
    /// Requests that failed (re-sent next cycle while pending).
    pub failed: u64,
    /// Pages read.
    pub pages: u32,
    /// How long the longest-held listed transaction has been held, in milliseconds.
    pub(crate) oldest_hold_ms: u64,
    /// Duration in milliseconds.
    pub(crate) duration_ms: u64,
}

/// Why a cycle could not run.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The pending list could not be read.
    #[error("cannot read the pending list: {0}")]
    List(#[source] ClientError),
    /// The ledger failed; nothing was sent.
    #[error("ledger failure, nothing sent: {0}")]
    Ledger(#[source] LedgerError),
    /// This instance of a pair does not lead (now): it decides and sends nothing.
    #[error("not leading, nothing decided: {0}")]
    NotLeading(#[source] NotLeading),
    /// The pending list holds more items than `poll.max_items`: a listing read in part cannot
    /// show an id listed twice with other fields, so nothing is decided.
    #[error(
        "the pending list holds more than {limit} items (poll.max_items; reached on page {page}): \
         nothing is decided or sent this cycle, as a partial listing cannot show an id listed twice \
         with other fields; if the backlog is real, raise poll.max_items"
    )]
    ListingTooLarge {
        /// `poll.max_items`.
        limit: usize,
        /// The page on which it was passed.
        page: u32,
    },
    /// The cycle ran past `poll.cycle_timeout` and was abandoned: decisions it recorded stay,
    /// and are sent next cycle after the usual re-check.
    #[error(
        "the cycle was abandoned after {} (poll.cycle_timeout): the server is too slow, or the \
         listing too long; decisions already recorded are sent next cycle after the usual re-check",
        humantime::format_duration(*.0)
    )]
    Deadline(std::time::Duration),
}

/// The long-lived pieces a cycle works with; built with [`Engine::builder`].
pub struct Engine {
    /// The API client.
    pub(crate) client: Arc<Client>,
    /// The key shard.
    pub signer: Arc<Signer>,
    /// The ledger.
    ledger: LedgerHandle,
    /// The ledger's clock: windows and the check against the newest record read the time the
    /// records are written with.
    clock: Clock,
    /// Held for a whole cycle: only cycles record decisions, and never two at once (see
    /// [`Engine::decide`]).
    cycle_lock: tokio::sync::Mutex<()>,
    /// The policy in force and the kill-switch mode; a cycle evaluates on the policy it started
    /// with, and its submissions stop when either changes.
    control: Arc<Control>,
    /// Cycle settings.
    settings: PollSettings,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the process is asked to stop: no new submissions start.
    shutdown: CancellationToken,
    /// Receives every recorded decision (the demo prints them).
    events: Option<mpsc::UnboundedSender<DecisionEvent>>,
    /// In a pair: the lead, asked before every decision page and every attempt.
    lead: Option<Lead>,
    /// Whether the last listing was refused for its size (recorded once until one is accepted).
    listing_refused: AtomicBool,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    client: Arc<Client>,
    signer: Arc<Signer>,
    ledger: LedgerHandle,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    settings: PollSettings,
    shutdown: CancellationToken,
    events: Option<mpsc::UnboundedSender<DecisionEvent>>,
    lead: Option<Lead>,
    pause_file: Option<std::path::PathBuf>,
}

impl EngineBuilder {
    /// Where a pause that the ledger could not record is kept across restarts.
    #[must_use]
    pub fn pause_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.pause_file = path;
        self
    }

    /// In a pair: decide and send only while `lead` says this instance leads.
    #[must_use]
    pub(crate) fn lead(mut self, lead: Option<Lead>) -> Self {
        self.lead = lead;
        self
    }

    /// Cycle settings (default: pages of 100, 4 in flight, not a dry run).
    #[must_use]
    pub fn settings(mut self, settings: PollSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The token whose cancellation stops new submissions.
    #[must_use]
    pub(crate) fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Where every recorded decision is sent (the demo prints them).
    #[must_use]
    pub(crate) fn events(mut self, events: Option<mpsc::UnboundedSender<DecisionEvent>>) -> Self {
        self.events = events;
        self
    }

    /// The engine, in normal mode with the policy in force.
    #[must_use]
    pub fn build(self) -> Engine {
        self.metrics
            .set_policy(&self.policy.sha256, self.policy.limited_rules());
        // Every failed write through this ledger, whoever wrote (a cycle, the collector, the
        // operator API), fenced ones included, is counted here and only here.
        let failures = self.metrics.ledger_write_failures.clone();
        self.ledger.on_write_failure(move || failures.inc());
        let control = Control::new(
            self.policy,
            self.ledger.clone(),
            self.metrics.clone(),
            self.pause_file,
            self.client.outbox().clone(),
        )
        .with_lead(self.lead.clone());
        Engine {
            client: self.client,
            signer: self.signer,
            clock: self.ledger.clock().clone(),
            ledger: self.ledger,
            cycle_lock: tokio::sync::Mutex::new(()),
            control: Arc::new(control),
            settings: self.settings,
            metrics: self.metrics,
            shutdown: self.shutdown,
            events: self.events,
            lead: self.lead,
            listing_refused: AtomicBool::new(false),
        }
    }
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            max_in_flight: 4,
            dry_run: false,
            max_items: DEFAULT_MAX_ITEMS,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            cycle_timeout: DEFAULT_CYCLE_TIMEOUT,
        }
    }
}

use crate::plan::RULE_DECIDED;

/// A recorded decision, as the demo shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionEvent {
    /// Transaction id.
    pub tx_id: TxId,
    /// `chainId`.
    pub chain: Option<String>,
    /// Destination.
    pub to: Option<String>,
    /// Amount text.
    pub amount: Option<String>,
    /// What was decided.
    pub action: Action,
    /// By which rule.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Recorded only.
    pub dry_run: bool,
}

struct Listing {
    txs: Vec<Withdrawal>,
    conflicting: HashSet<TxId>,
    malformed: Vec<MalformedItem>,
    pages: u32,
}

struct Send {
    seq: u64,
    req: ApproveRequest,
    /// The policy generation the decision was checked under.
    generation: u64,
    /// For an approval: the rule approving it and its amount, to count it in windows again when
    /// it leaves late.
    approval: Option<(String, Decimal)>,
    /// No later than the moment its record (or `resend` event) was stamped: taken before the
    /// ledger was asked to write it, so a slow commit counts against [`LATE_SEND`].
    stamped: Instant,
}

impl Engine {
    /// A builder; everything not given has a default (see [`EngineBuilder`]). The engine reads
    /// the ledger's clock.
    pub fn builder(
        client: Arc<Client>,
        signer: Arc<Signer>,
        ledger: LedgerHandle,
        policy: Arc<Policy>,
        metrics: Arc<Metrics>,
    ) -> EngineBuilder {
        EngineBuilder {
            client,
            signer,
            ledger,
            policy,
            metrics,
            settings: PollSettings::default(),
            shutdown: CancellationToken::new(),
            events: None,
            lead: None,
            pause_file: None,
        }
    }

    /// `Ok` unless this instance is part of a pair and does not lead (now).
    pub(crate) fn leading(&self) -> Result<(), NotLeading> {
        match &self.lead {
            Some(lead) => lead.current().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Waits until no write of a request is under way, and wakes every submission waiting to
    /// retry or to connect, so that it asks its gate again at once (the lead changed).
    pub(crate) fn wake_submissions(&self) {
        let _ = self.control.fence();
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> &LedgerHandle {
        &self.ledger
    }

    /// Whether decisions are recorded as dry runs and nothing is sent.
    #[must_use]
    pub(crate) fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        self.control.policy()
    }

    /// What an operator steers: the policy in force and the kill-switch mode (reload, pause,
    /// resume and restore go through it).
    #[must_use]
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Reads every page, de-duplicating by id, stopping at `total` or when paging goes nowhere.
    /// Memory is bounded whatever the server sends: one page (`api.max_response_bytes`), at most
    /// `max_items` items kept, each at most `max_item_bytes` of JSON (a larger one is kept as a
    /// bounded prefix). A listing with more items than `max_items` is refused as a whole: a
    /// partial listing cannot show an id listed twice with other fields.
    async fn list_all(&self) -> Result<Listing, CycleError> {
        let size = self.settings.page_size;
        let max_items = self.settings.max_items;
        let mut seen: HashMap<TxId, usize> = HashMap::new();
        let mut txs: Vec<Withdrawal> = Vec::new();
        let mut conflicting = HashSet::new();
        let mut malformed = Vec::new();
        let mut page = 1u32;
        let mut idle_pages = 0;
        loop {
            let p = self
                .client
                .pending_within(page, size, self.settings.max_item_bytes)
                .await
                .map_err(CycleError::List)?;
            let mut new = 0;
            let n = p.items.len();
            for item in p.items {
                match item {
                    Ok(tx) => match seen.get(&tx.id) {
                        Some(&i) => {
                            let prev = &txs[i];
                            // A copy with a problem (a member twice, say) may mean other fields
                            // to another parser: that is a conflict too.
                            if (&prev.from, &prev.to, &prev.amount, &prev.chain_id)
                                != (&tx.from, &tx.to, &tx.amount, &tx.chain_id)
                                || !prev.problems.is_empty()
                                || !tx.problems.is_empty()
                            {
                                conflicting.insert(tx.id);
                            }
                        }
                        None => {
                            seen.insert(tx.id, txs.len());
                            txs.push(tx);
                            new += 1;
                        }
                    },
                    // Items without a usable id cannot be told apart: each counts.
                    Err(m) => malformed.push(m),
                }
                if txs.len() + malformed.len() > max_items {
                    return Err(CycleError::ListingTooLarge {
                        limit: max_items,
                        page,
                    });
                }
            }
            idle_pages = if new == 0 { idle_pages + 1 } else { 0 };
            let expected_pages = p.total.div_ceil(u64::from(size)).max(1);
            if n == 0 || txs.len() as u64 >= p.total || u64::from(page) > expected_pages {
                break;
            }
            if idle_pages >= 2 {
                warn!(
                    page,
                    total = p.total,
                    "pending pages bring nothing new; stopping this listing"
                );
                break;
            }
            // Every page that goes on brings a new item, so `max_items` bounds the pages too.
            page = page.saturating_add(1);
        }
        Ok(Listing {
            txs,
            conflicting,
            malformed,
            pages: page,
        })
    }

    /// Runs one cycle: list every page, then page by page decide, record durably, and send;
    /// record what the server said. Stops starting submissions once shutdown is requested.
    #[instrument(skip_all, name = "cycle")]
    pub async fn cycle_once(&self) -> Result<CycleOutcome, CycleError> {
        let _only_cycle = self.cycle_lock.lock().await;
        crate::failpoint::wedge(crate::failpoint::WEDGE_CYCLE).await;
        let started = Instant::now();
        // Past the deadline the cycle is dropped where it stands: what it recorded stays (and is
        // sent next cycle after the re-check), attempts in flight are dropped with it, and a
        // ledger write already handed to the database finishes before the next cycle reads.
        let deadline = self.settings.cycle_timeout;
        let result = tokio::time::timeout(deadline, self.cycle_inner(started))
            .await
            .unwrap_or(Err(CycleError::Deadline(deadline)));
        let m = &self.metrics;
        m.poll_duration.observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(out) => {
                m.poll_runs.with_label_values(&["ok"]).inc();
                m.last_poll.set(self.clock.now_ms() as f64 / 1000.0);
                m.pending.set(i64::try_from(out.listed).unwrap_or(i64::MAX));
                m.held.set(i64::try_from(out.held).unwrap_or(i64::MAX));
                m.oldest_hold.set(out.oldest_hold_ms as f64 / 1000.0);
            }
            Err(CycleError::Deadline(_)) => {
                m.poll_runs.with_label_values(&["timeout"]).inc();
            }
            // A ledger write that failed was counted by the handle (see `EngineBuilder::build`).
            Err(_) => {
                m.poll_runs.with_label_values(&["error"]).inc();
            }
        }
        result
    }

    /// Notes a listing refused for its size: counted every time, and recorded in the ledger
    /// once until a listing is accepted again (a server stuck that way writes one event, not
    /// one a cycle).
    async fn note_listing_refused(&self, limit: usize) {
        self.metrics.listings_refused.inc();
        if self.listing_refused.swap(true, Ordering::SeqCst) {
            return;
        }
        let detail = serde_json::json!({
            "refused": "the pending list holds more items than poll.max_items",
            "max_items": limit,
        })
        .to_string();
        if let Err(e) = self.ledger.record_event("listing", &detail).await {
            // Recorded next time instead.
            self.listing_refused.store(false, Ordering::SeqCst);
            warn!(error = %e, "cannot record the refused listing in the ledger");
        }
    }

    async fn cycle_inner(&self, started: Instant) -> Result<CycleOutcome, CycleError> {
        self.leading().map_err(CycleError::NotLeading)?;
        if self.lead.is_some() {
            // A pause another member of the pair recorded binds this cycle (the lead's
            // confirmations adopt it too, every 500 ms).
            let latest = self
                .ledger
                .latest_event("mode")
                .await
                .map_err(CycleError::Ledger)?;
            self.control.adopt_recorded(latest.as_deref());
        }
        let listing = match self.list_all().await {
            Ok(l) => l,
            Err(e) => {
                if let CycleError::ListingTooLarge { limit, .. } = &e {
                    tracing::error!(error = %e, "pending list refused");
                    self.note_listing_refused(*limit).await;
                }
                return Err(e);
            }
        };
        self.listing_refused.store(false, Ordering::SeqCst);
        let mut out = CycleOutcome {
            listed: listing.txs.len() as u64,
            malformed_items: listing.malformed.len() as u64,
            pages: listing.pages,
            ..Default::default()
        };
        self.metrics.malformed_items.inc_by(out.malformed_items);
        for m in &listing.malformed {
            warn!(reason = %m.reason, item = %m.raw, "pending item cannot be identified; nothing can be done with it");
        }
        let (policy, generation) = self.control.snapshot();
        let (mut usage, clock) = self.prepare(&policy, started).await?;
        let permits = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let mut inflight: JoinSet<Option<Outcome>> = JoinSet::new();
        let mut outcomes = Vec::new();
        let mut failure = None;
        for chunk in listing.txs.chunks(self.settings.page_size.max(1) as usize) {
            if self.shutdown.is_cancelled() {
                info!("shutdown requested: no further transactions are decided this cycle");
                break;
            }
            if let Err(e) = self.leading() {
                warn!(reason = %e, "the lead is lost: no further transactions are decided this cycle");
                failure = Some(CycleError::NotLeading(e));
                break;
            }
            // Planning runs at most two pages ahead of sending: an approval sent long after its
            // record must be recorded again first (see `LATE_SEND`), and a record that old
            // misstates when the decision was made.
            while inflight.len() >= 2 * self.settings.page_size.max(1) as usize {
                match inflight.join_next().await {
                    Some(done) => outcomes.extend(done.ok().flatten()),
                    None => break,
                }
            }
            let (mut batch, mut sends) = match self
                .decide(
                    &policy,
                    generation,
                    clock,
                    chunk,
                    &listing.conflicting,
                    &mut usage,
                    &mut out,
                )
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            self.sign_page(&mut batch, &mut out).await;
            // A pause in force is recorded before any decision is.
            if let Err(e) = self.control.record_pause().await {
                failure = Some(CycleError::Ledger(e));
                break;
            }
            // The records are stamped after this: their sends are timed from here.
            let stamped = Instant::now();
            let seqs = match self.ledger.record_decisions(batch.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot record decisions; sending nothing for them");
                    failure = Some(CycleError::Ledger(e));
                    break;
                }
            };
            if !seqs.is_empty() {
                crate::failpoint::hit(crate::failpoint::AFTER_RECORD);
            }
            for (d, seq) in batch.iter().zip(&seqs) {
                self.note_decision(d, *seq, &mut out);
                if d.action != Action::Hold
                    && !d.dry_run
                    && let (Some(data), Some(verdict)) = (&d.data, d.action.verdict())
                {
                    sends.push(Send {
                        seq: *seq,
                        req: approve_request(&d.tx, verdict.status(), data),
                        generation,
                        approval: d.amount.map(|a| (d.rule.clone(), a)),
                        stamped,
                    });
                }
            }
            for s in sends {
                self.spawn_send(&mut inflight, &permits, s);
            }
            while let Some(done) = inflight.try_join_next() {
                outcomes.extend(done.ok().flatten());
            }
            if outcomes.len() >= self.settings.page_size as usize {
                self.record_outcomes(&mut outcomes, &mut out).await;
            }
            // Let submissions progress between pages on a single-threaded runtime too.
            tokio::task::yield_now().await;
        }
        while let Some(done) = inflight.join_next().await {
            outcomes.extend(done.ok().flatten());
        }
        self.record_outcomes(&mut outcomes, &mut out).await;
        self.metrics.set_window_usage(policy.window_used(&usage));
        if let Some(e) = failure {
            return Err(e);
        }
        out.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            listed = out.listed,
            decided = %out.decided.iter().map(|(a, n)| format!("{a}:{n}")).collect::<Vec<_>>().join(","),
            held = out.held,
            resent = out.resent,
            submitted = out.submitted,
            failed = out.failed,
            duration_ms = out.duration_ms,
            "cycle done"
        );
        Ok(out)
    }

    /// Window usage and clock state at the start of a cycle (after the listing, whose answers
    /// carried the server's clock).
    async fn prepare(
        &self,
        policy: &Arc<Policy>,
        since: std::time::Instant,
    ) -> Result<(Usage, ClockCheck), CycleError> {
        let newest = self
            .ledger
            .newest_record_ms()
            .await
            .map_err(CycleError::Ledger)?;
        let now = self.clock.now_ms();
        let behind = newest.is_some_and(|t| t > now);
        let mut clock = ClockCheck::Ok;
        if behind {
            warn!(
                newest_record_ms = newest,
                now_ms = now,
                "the clock is behind the newest ledger record; approvals wait"
            );
            clock = ClockCheck::BehindLedger;
        } else if let Some(doubt) = self.client.clock_doubt(Some(since)) {
            warn!(
                doubt = %doubt,
                allowed_s = self.client.config().max_clock_skew.as_secs(),
                "the clock cannot be trusted against the server's; approvals wait"
            );
            clock = ClockCheck::OffServer(doubt);
        }
        let slack = window_slack(self.client.config().max_clock_skew);
        let usage = self
            .ledger
            .usage_with_slack(policy.clone(), now, slack)
            .await
            .map_err(CycleError::Ledger)?;
        Ok((usage, clock))
    }

    fn note_decision(&self, d: &NewDecision, seq: u64, out: &mut CycleOutcome) {
        *out.decided
            .entry(d.action.as_str().to_string())
            .or_default() += 1;
        self.metrics
            .decisions
            .with_label_values(&[d.action.as_str(), &d.rule])
            .inc();
        info!(
            tx_id = d.tx.id.get(),
            chain = d.tx.chain_id.as_deref().unwrap_or("?"),
            to = d.tx.to.as_deref().unwrap_or("?"),
            amount = d.tx.amount.as_deref().unwrap_or("?"),
            action = d.action.as_str(),
            rule = %d.rule,
            reason = %d.reason,
            dry_run = d.dry_run,
            seq,
            "decision"
        );
        if let Some(tx) = &self.events {
            let _ = tx.send(DecisionEvent {
                tx_id: d.tx.id,
                chain: d.tx.chain_id.clone(),
                to: d.tx.to.clone(),
                amount: d.tx.amount.clone(),
                action: d.action,
                rule: d.rule.clone(),
                reason: d.reason.clone(),
                dry_run: d.dry_run,
            });
        }
    }

    /// The gate a submission asks before every attempt: shutdown, the kill switch, and for an
    /// approval the policy generation it was checked under, the clock (as it reads now, against
    /// the server's `Date` and the newest record), and how recently the record it leaves on was
    /// stamped.
    fn gate(&self, s: &Send) -> Gate {
        let (status, generation) = (s.req.status, s.generation);
        let control = self.control.clone();
        let shutdown = self.shutdown.clone();
        let client = self.client.clone();
        let lead = self.lead.clone();
        // Weak: a submission never keeps the ledger (and its lock) alive past the engine.
        let ledger = self.ledger.downgrade();
        let clock = self.clock.clone();
        let permit = move || -> Result<(), Refusal> {
            if shutdown.is_cancelled() {
                return Err("shutting down; it is sent after the restart".into());
            }
            // In a pair, only the confirmed leader sends, at the epoch its ledger writes with:
            // whoever leads next re-sends this record's identical data.
            if let Some(lead) = &lead
                && let Err(e) = lead.current()
            {
                return Err(format!("{e}; the leader sends it").into());
            }
            let mode = control.mode();
            if !mode.lets_out(status) {
                return Err(format!("{}-all mode set by an operator", mode.as_str()).into());
            }
            if status == 1 {
                if control.generation() != generation {
                    return Err("the policy changed since this approval was checked; it is \
                                checked again next cycle"
                        .into());
                }
                if let Some(doubt) = client.clock_doubt(None) {
                    return Err(doubt.to_string().into());
                }
                // The newest known first, then the clock: a clock reading earlier went back.
                let newest = ledger
                    .upgrade()
                    .ok_or("the ledger is closed, so the attempt is not made")?
                    .newest_known_ms();
                if newest.is_some_and(|t| t > clock.now_ms()) {
                    return Err("the clock is behind the newest ledger record".into());
                }
            }
            Ok(())
        };
        let gate = Gate::new(permit, self.control.subscribe()).with_cancel(self.shutdown.clone());
        let Some((rule, amount)) = s.approval.clone() else {
            return gate;
        };
        // An approval leaving later than `LATE_SEND` after its record was stamped (a retry, a
        // wait for a slot, a slow commit) is written down again first, so that windows count it
        // from when it may have left; a write that is itself slow is made once more, and then
        // the attempt waits for the next cycle rather than leave on a stale stamp.
        let stamp = Arc::new(std::sync::Mutex::new(s.stamped));
        let stamped = {
            let stamp = stamp.clone();
            move || {
                *stamp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
        };
        let on_time = {
            let stamped = stamped.clone();
            move || -> Result<(), Refusal> {
                let age = stamped().elapsed();
                if age < LATE_SEND {
                    return Ok(());
                }
                Err(format!(
                    "its record was stamped {} ms ago, more than the {} ms an approval may leave \
                     after it; it is checked again next cycle",
                    age.as_millis(),
                    LATE_SEND.as_millis()
                )
                .into())
            }
        };
        let ledger = self.ledger.downgrade();
        let (seq, tx_id) = (s.seq, s.req.id);
        gate.with_before_attempt(move |attempts| {
            // Half of `LATE_SEND` left for what follows (the checks, the connection).
            let fresh = attempts == 0 && stamped().elapsed() < LATE_SEND / 2;
            let (ledger, stamp) = (ledger.clone(), stamp.clone());
            let record = ResendRecord {
                seq,
                tx_id,
                rule: rule.clone(),
                amount,
            };
            async move {
                if fresh {
                    return Ok(());
                }
                let ledger = ledger
                    .upgrade()
                    .ok_or("the ledger is closed, so the attempt is not made")?;
                let mut took = std::time::Duration::ZERO;
                for _ in 0..2 {
                    let before = Instant::now();
                    ledger
                        .record_resends(vec![record.clone()])
                        .await
                        .map_err(|e| {
                            Refusal::from(format!(
                                "cannot record the attempt, so it is not made: {e}"
                            ))
                        })?;
                    took = before.elapsed();
                    if took < LATE_SEND / 2 {
                        *stamp
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = before;
                        return Ok(());
                    }
                }
                Err(format!(
                    "recording the attempt took {} ms, so it would leave on a stale record; it is \
                     checked again next cycle",
                    took.as_millis()
                )
                .into())
            }
        })
        .with_leaving_check(on_time)
    }

    fn spawn_send(&self, set: &mut JoinSet<Option<Outcome>>, permits: &Arc<Semaphore>, s: Send) {
        let client = self.client.clone();
        let permits = permits.clone();
        let metrics = self.metrics.clone();
        let mut gate = self.gate(&s);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            crate::failpoint::hit(crate::failpoint::BEFORE_REQUEST);
            let result = client.approve_gated(&s.req, Some(&mut gate)).await;
            crate::failpoint::hit(crate::failpoint::AFTER_REQUEST);
            if let Err(ClientError::Stopped {
                attempts, reason, ..
            }) = &result
            {
                info!(tx_id = s.req.id.get(), seq = s.seq, attempts, reason = %reason, "submission stopped before its next attempt");
                if *attempts == 0 {
                    // Recorded, never sent: it waits for the next cycle, which checks it again.
                    return None;
                }
            }
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics.submissions.with_label_values(&["approve", outcome]).inc();
            Some(match result {
                Ok(()) => Outcome {
                    decision_seq: s.seq,
                    ok: true,
                    message: None,
                },
                Err(e) => {
                    warn!(tx_id = s.req.id.get(), seq = s.seq, error = %e, "submission failed; it is re-sent next cycle while pending");
                    Outcome {
                        decision_seq: s.seq,
                        ok: false,
                        message: Some(e.to_string()),
                    }
                }
            })
        });
    }

    /// Records and clears `outcomes`. A failure here loses nothing: the decisions are durable
    /// and are re-sent, identically, next cycle.
    async fn record_outcomes(&self, outcomes: &mut Vec<Outcome>, out: &mut CycleOutcome) {
        if outcomes.is_empty() {
            return;
        }
        let ok = outcomes.iter().filter(|o| o.ok).count() as u64;
        out.submitted += ok;
        out.failed += outcomes.len() as u64 - ok;
        if let Err(e) = self.ledger.record_outcomes(std::mem::take(outcomes)).await {
            tracing::error!(error = %e, "cannot record submission outcomes; they are re-sent next cycle");
        }
    }

    /// Plans every transaction of one page (see [`crate::plan::plan`]); returns the new records
    /// and the re-sends, having recorded the re-sends and the waits.
    ///
    /// The page's states are read in one ledger call, and its decisions recorded in another
    /// after signing, with no lock held in between. That is enough for one decision per id:
    /// decisions are recorded only by a cycle, never by two at once (`cycle_lock`, and one
    /// process per ledger), and each id comes once in a listing; what else writes meanwhile
    /// (the operator API's and the submissions' events, outcomes of earlier pages' sends, the
    /// collector) never touches the decisions of this page's ids.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        policy: &Policy,
        generation: u64,
        clock: ClockCheck,
        txs: &[Withdrawal],
        conflicting: &HashSet<TxId>,
        usage: &mut Usage,
        out: &mut CycleOutcome,
    ) -> Result<(Vec<NewDecision>, Vec<Send>), CycleError> {
        let states = self
            .ledger
            .states(txs.to_vec())
            .await
            .map_err(CycleError::Ledger)?;
        let mode = self.control.mode();
        let max_sign_len = self.signer.max_text_len();
        let now = self.clock.now_ms();
        let mut batch = Vec::new();
        let mut sends = Vec::new();
        let mut resends = Vec::new();
        let mut waits = Vec::new();
        for (tx, state) in txs.iter().zip(&states) {
            let planned = plan(
                tx,
                state,
                &Inputs {
                    policy,
                    mode,
                    usage,
                    max_sign_len,
                    clock,
                    listed_twice: conflicting.contains(&tx.id),
                    trace: false,
                },
            );
            let eval = match planned {
                Plan::Decide(eval) => eval,
                Plan::Done { seq } => {
                    info!(
                        tx_id = tx.id.get(),
                        seq, "still listed after the server accepted our decision"
                    );
                    continue;
                }
                Plan::Resend { seq, approval } => {
                    let Some(live) = state.live.as_ref() else {
                        continue;
                    };
                    if self.settings.dry_run {
                        info!(
                            tx_id = tx.id.get(),
                            seq,
                            "dry run: the recorded decision would be sent again; nothing is sent"
                        );
                        continue;
                    }
                    if let Some(req) = resend_request(live) {
                        if let Some((rule, amount)) = &approval {
                            // Counted from now, under the rule that approves it now, in this
                            // cycle and (through the event recorded before it leaves) after.
                            usage.count_recorded(seq, *amount, Some(rule), true);
                            resends.push(ResendRecord {
                                seq,
                                tx_id: tx.id,
                                rule: rule.clone(),
                                amount: *amount,
                            });
                        }
                        out.resent += 1;
                        info!(
                            tx_id = tx.id.get(),
                            seq,
                            action = live.action.as_str(),
                            "re-sending the recorded decision"
                        );
                        sends.push(Send {
                            seq,
                            req,
                            generation,
                            approval,
                            // Set to before the page's `resend` events are written, below.
                            stamped: Instant::now(),
                        });
                    }
                    continue;
                }
                Plan::Wait { seq, reason } => {
                    out.held += 1;
                    info!(tx_id = tx.id.get(), seq, reason = %reason, "recorded decision not sent");
                    // Once per kind of reason: its numbers (a window count) move every cycle,
                    // and are in the log line above and in `policy explain`.
                    let kind = HoldKey::of("", &reason).kind;
                    waits.push(
                        serde_json::json!({"tx_id": tx.id, "seq": seq, "reason": kind}).to_string(),
                    );
                    continue;
                }
            };
            if state.other_contents > 0 && state.decided_other.is_none() {
                warn!(
                    tx_id = tx.id.get(),
                    "the server shows this id with different fields than before; deciding it anew"
                );
            }
            let mut d = NewDecision {
                tx: tx.clone(),
                action: eval.action,
                rule: eval.rule.into_owned(),
                // The sentence is written here, as the decision is about to be recorded.
                reason: eval.reason.to_string(),
                policy_sha256: policy.sha256.clone(),
                dry_run: self.settings.dry_run,
                amount: eval.amount.filter(|_| eval.action == Action::Approve),
                signed_text: None,
                data: None,
            };
            if let Some(verdict) = d.action.verdict() {
                let text = decision_text(&Decision {
                    id: tx.id,
                    from: tx.from.as_deref().unwrap_or_default(),
                    to: tx.to.as_deref().unwrap_or_default(),
                    value: tx.amount.as_deref().unwrap_or_default(),
                    chain_id: tx.chain_id.as_deref().unwrap_or_default(),
                    verdict,
                });
                // Signed below, the whole page at once.
                d.signed_text = Some(text);
            }
            if d.action == Action::Hold {
                out.held += 1;
                let since = state.first_hold_ms.unwrap_or(now);
                out.oldest_hold_ms = out
                    .oldest_hold_ms
                    .max(u64::try_from(now.saturating_sub(since)).unwrap_or(0));
            }
            if unchanged(state.last_unsent.as_ref(), &d) {
                if d.action == Action::Hold {
                    out.holds_unchanged += 1;
                }
                continue;
            }
            if d.rule == RULE_DECIDED {
                warn!(
                    tx_id = tx.id.get(),
                    reason = %d.reason,
                    "an id already decided is listed again with other fields; held, never signed again"
                );
                self.metrics.id_reuse.inc();
            }
            if let (Action::Approve, Some(amount)) = (d.action, d.amount) {
                usage.add_approval(&d.rule, amount);
            }
            batch.push(d);
        }
        // A wait is an event, never a new decision; once per kind of reason.
        for detail in waits {
            self.ledger
                .record_event_once("waiting", &detail)
                .await
                .map_err(CycleError::Ledger)?;
        }
        // Written before any of them leaves; if it cannot be, none does. Each leaves on the
        // stamp of this write, so they are timed from before it.
        let stamped = Instant::now();
        for s in &mut sends {
            s.stamped = stamped;
        }
        self.ledger
            .record_resends(resends)
            .await
            .map_err(CycleError::Ledger)?;
        Ok((batch, sends))
    }

    /// Signs every approve/reject of a page off the async runtime, spread over the cores (each
    /// signature is one RSA private-key operation, the cycle's dominant cost). A text that cannot
    /// be signed turns its decision into a hold; the approval it may have added to the window
    /// stays counted, which over-counts (safe) rather than under-counts.
    async fn sign_page(&self, batch: &mut [NewDecision], out: &mut CycleOutcome) {
        let todo: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].signed_text.is_some() && batch[i].data.is_none())
            .collect();
        if todo.is_empty() {
            return;
        }
        let texts: Vec<String> = todo
            .iter()
            .map(|&i| batch[i].signed_text.clone().unwrap_or_default())
            .collect();
        let n = texts.len();
        let signer = self.signer.clone();
        let results = tokio::task::spawn_blocking(move || sign_texts(&signer, &texts))
            .await
            .unwrap_or_else(|_| {
                // The signing task stopped: nothing of this page is signed; all become holds.
                (0..n)
                    .map(|_| Err(crate::signer::SignerError::Interrupted))
                    .collect()
            });
        for (&i, result) in todo.iter().zip(results) {
            let d = &mut batch[i];
            match result {
                Ok(data) => d.data = Some(data),
                Err(e) => {
                    d.action = Action::Hold;
                    d.amount = None;
                    d.signed_text = None;
                    d.rule = RULE_MALFORMED.into();
                    d.reason = format!("cannot sign: {e}");
                    out.held += 1;
                }
            }
        }
    }
}

/// Signs `texts` in order, on as many threads as there are cores (at least 8 texts a thread).
fn sign_texts(
    signer: &Signer,
    texts: &[String],
) -> Vec<Result<String, crate::signer::SignerError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(texts.len().div_ceil(8))
        .max(1);
    if threads == 1 {
        return texts.iter().map(|t| signer.sign(t)).collect();
    }
    let per = texts.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(per)
            .map(|chunk| {
                let h =
                    scope.spawn(move || chunk.iter().map(|t| signer.sign(t)).collect::<Vec<_>>());
                (chunk.len(), h)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                // A thread that stopped signs nothing: its decisions become holds.
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Err(crate::signer::SignerError::Interrupted))
                        .collect()
                })
            })
            .collect()
    })
}

/// True when a hold or dry run decides what the last unsent record for this content decided:
/// the same action by the same rule for the same kind of reason ([`HoldKey`]), whatever the
/// numbers in its sentence (a window count that moves is not a new decision).
fn unchanged(last: Option<&DecisionRow>, d: &NewDecision) -> bool {
    let Some(last) = last else { return false };
    if !(d.action == Action::Hold || d.dry_run) {
        return false;
    }
    last.action == d.action
        && last.dry_run == d.dry_run
        && last.hold_key() == HoldKey::of(&d.rule, &d.reason)
}

fn approve_request(tx: &Withdrawal, status: u8, data: &str) -> ApproveRequest {
    ApproveRequest {
        id: tx.id,
        from: tx.from.clone().unwrap_or_default(),
        to: tx.to.clone().unwrap_or_default(),
        value: tx.amount.clone().unwrap_or_default(),
        chain_id: tx.chain_id.clone().unwrap_or_default(),
        status,
        data: data.to_owned(),
    }
}

/// The request for a recorded decision, rebuilt from exactly what was recorded.
fn resend_request(row: &DecisionRow) -> Option<ApproveRequest> {
    let verdict = row.action.verdict()?;
    Some(ApproveRequest {
        id: row.tx_id,
        from: row.from.clone().unwrap_or_default(),
        to: row.to.clone().unwrap_or_default(),
        value: row.amount.clone().unwrap_or_default(),
        chain_id: row.chain_id.clone().unwrap_or_default(),
        status: verdict.status(),
        data: row.data.clone()?,
    })
}
