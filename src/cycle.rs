//! One pending cycle: read every page of the pending list, decide each transaction by the policy,
//! record the decisions durably, and only then send them; record what the server said.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::client::{Client, ClientError};
use crate::clock::Clock;
use crate::control::Control;
use crate::domain::{Action, TxId};
use crate::leader::{Lead, NotLeading};
use crate::ledger::{EventKind, LedgerError, LedgerHandle, Outcome};
use crate::metrics::{Metrics, PollOutcome};
use crate::policy::Policy;
use crate::signer::Signer;

mod decide;
mod listing;
mod sign;
mod submit;

use submit::{Send, approve_request, resend_request};

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
    List(ClientError),
    /// The ledger failed; nothing was sent.
    #[error("ledger failure, nothing sent: {0}")]
    Ledger(LedgerError),
    /// This instance of a pair does not lead (now): it decides and sends nothing.
    #[error("not leading, nothing decided: {0}")]
    NotLeading(NotLeading),
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
                m.count_poll(PollOutcome::Ok);
                m.last_poll.set(self.clock.now_ms() as f64 / 1000.0);
                m.pending.set(i64::try_from(out.listed).unwrap_or(i64::MAX));
                m.held.set(i64::try_from(out.held).unwrap_or(i64::MAX));
                m.oldest_hold.set(out.oldest_hold_ms as f64 / 1000.0);
            }
            Err(CycleError::Deadline(_)) => {
                m.count_poll(PollOutcome::Timeout);
            }
            // A ledger write that failed was counted by the handle (see `EngineBuilder::build`).
            Err(_) => {
                m.count_poll(PollOutcome::Error);
            }
        }
        result
    }

    async fn cycle_inner(&self, started: Instant) -> Result<CycleOutcome, CycleError> {
        self.leading().map_err(CycleError::NotLeading)?;
        if self.lead.is_some() {
            // A pause another member of the pair recorded binds this cycle (the lead's
            // confirmations adopt it too, every 500 ms).
            let latest = self
                .ledger
                .latest_event(EventKind::Mode)
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
                        req: approve_request(&d.tx, verdict, data),
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
}
