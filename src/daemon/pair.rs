//! A member of a pair: opening the PostgreSQL ledger and contending for the lead, taking
//! over, and running the periodic work only while this instance leads.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::collector::Collector;
use crate::config::{Config, PostgresLedger};
use crate::cycle::Engine;
use crate::health::Health;
use crate::leader::{Lead, Leadership, Role};
use crate::ledger::postgres::PgLedger;
use crate::ledger::{LedgerError, LedgerHandle};
use crate::metrics::Metrics;
use crate::policy;

use super::{DaemonError, Timings, periodic};

/// Connects to the PostgreSQL ledger of a pair, verifies its chain as the SQLite one is, and
/// starts contending for the lead; a write the database fences counts and stands this
/// instance down at once. On a schema newer than this cosigner's (a newer member upgraded the
/// pair's ledger) it starts as a standby that never leads nor writes, and says why; the third
/// value is then true.
pub(super) async fn open_pair(
    cfg: &Config,
    pg: &PostgresLedger,
    policy: &policy::Policy,
    metrics: &Arc<Metrics>,
) -> Result<(LedgerHandle, Lead, bool), DaemonError> {
    // Timed by the database's clock (see `PgLedger`), not this host's.
    let (ledger, ahead) = PgLedger::open_member(pg.target.clone()).await?;
    let ledger = Arc::new(ledger);
    if let Some(found) = ahead {
        error!(
            found,
            known = crate::ledger::postgres::SCHEMA_STEPS,
            ledger = %ledger.describe(),
            "starting as a standby that writes nothing: {}",
            crate::leader::outdated_text(found)
        );
        let leadership = Arc::new(Leadership::start_on(
            pg.target.clone(),
            pg.name.clone(),
            None,
        ));
        let lead = Lead::new(leadership, ledger.clone());
        return Ok((LedgerHandle::postgres(ledger), lead, true));
    }
    let host_ahead_ms = Clock::system().now_ms() - ledger.clock().now_ms();
    if Duration::from_millis(host_ahead_ms.unsigned_abs()) > cfg.api.client.max_clock_skew {
        warn!(
            host_ahead_ms,
            "this host's clock is off the database's; the pair stamps its records and counts its \
             windows by the database's, but this host's own still times its log lines and its TLS \
             certificate checks: set it right (NTP)"
        );
    }
    let report = ledger
        .verify_at_start(
            policy,
            ledger.clock().now_ms(),
            policy::window_slack(cfg.api.client.max_clock_skew),
        )
        .await?;
    if let Some(problem) = report.problems.first() {
        return Err(DaemonError::BrokenLedger {
            location: ledger.describe().to_string(),
            problem: problem.clone(),
            more: report.problems.len() - 1,
            config: cfg.path.clone(),
        });
    }
    let leadership = Arc::new(Leadership::start(pg.target.clone(), pg.name.clone()));
    let lead = Lead::new(leadership, ledger.clone());
    let handle = LedgerHandle::postgres(ledger);
    {
        let (metrics, lead) = (metrics.clone(), lead.clone());
        handle.on_fenced(move |mine, current| {
            // Counted as a write failure by the engine's hook on the handle, once.
            metrics.fenced.inc();
            warn!(
                mine,
                current, "the database refused a write: another instance leads; standing down"
            );
            lead.stand_down();
        });
    }
    info!(ledger = %handle.describe(), name = %pg.name, "PostgreSQL ledger open; contending for the lead");
    Ok((handle, lead, false))
}

/// What a new leader does before its first cycle: its writes carry `epoch`, and it takes the
/// mode and records the policy as the shared ledger holds them now (the old leader may have
/// changed the mode), or the pause this instance holds unrecorded when that is stricter, which
/// it records first. When the recorded mode cannot be read, or a pause it holds cannot be
/// recorded, this instance does not lead (an old leader's pause, or its own, would be lost
/// to the pair): it stands down, and takes the lead again, reading the mode afresh, once the
/// database answers. Then it waits out the longest an old leader may still count itself current
/// ([`crate::leader::TAKEOVER_WAIT`] from the epoch's move) before it records the policy and
/// makes its first attempt.
pub(super) async fn take_over(engine: &Engine, lead: &Lead, epoch: i64) -> Result<(), LedgerError> {
    lead.set_epoch(epoch);
    engine.wake_submissions();
    match engine.control().restore().await {
        Err(e) => {
            warn!(error = %e, epoch, "cannot read the recorded kill-switch mode at takeover; standing down rather than deciding on a mode the ledger may have changed");
            lead.stand_down();
            return Err(e);
        }
        Ok((mode, false)) => {
            warn!(
                epoch,
                mode = mode.as_str(),
                "a pause this instance holds could not be recorded at takeover; standing down until it is"
            );
            lead.stand_down();
            return Err(LedgerError::Interrupted(
                "a pause this instance holds is not recorded".into(),
            ));
        }
        Ok(_) => {}
    }
    // Before the policy's record: only a leader past the wait counts as leading.
    lead.settle(epoch).await;
    if let Err(e) = engine.control().note_policy_loaded("takeover").await {
        warn!(error = %e, "the policy in force could not be recorded at takeover");
    }
    Ok(())
}

/// How often a standby shows life to the watchdog (it runs no cycles, and is healthy).
const STANDBY_BEAT: Duration = Duration::from_secs(1);

/// The periodic work only the deciding instance does: pending cycles and collections.
pub(super) struct Work {
    pub(super) engine: Arc<Engine>,
    pub(super) collector: Option<Arc<Collector>>,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) timings: Timings,
}

impl Work {
    /// Runs the cycles and the collections on their intervals until `stop`, in `tracker`.
    pub(super) fn spawn(&self, stop: &CancellationToken, tracker: &TaskTracker) {
        let t = &self.timings;
        let (engine, health) = (self.engine.clone(), self.health.clone());
        tracker.spawn(periodic(
            t.poll_interval,
            t.poll_jitter,
            stop.clone(),
            move || {
                let engine = engine.clone();
                let health = health.clone();
                async move {
                    // Beats on both sides of every cycle, failed ones too: the watchdog is for a
                    // wedged scheduler, and a restart does not fix an upstream outage.
                    health.beat();
                    match engine.cycle_once().await {
                        Ok(_) => health.poll_succeeded(),
                        Err(e) => error!(error = %e, "cycle failed; the next one runs on schedule"),
                    }
                    health.beat();
                }
            },
        ));
        if let Some(collector) = self.collector.clone() {
            tracker.spawn(periodic(
                t.collect_interval,
                t.collect_jitter,
                stop.clone(),
                move || {
                    let collector = collector.clone();
                    async move {
                        collector.collect_once().await;
                    }
                },
            ));
        }
    }
}

/// In a pair: runs the work while this instance leads and stops it the moment the lead is
/// lost (its submissions' gates refuse from then on, so no further attempt leaves), until
/// `shutdown`. A standby beats for the watchdog and says so in readiness.
pub(super) async fn follow_lead(lead: Lead, work: Work, shutdown: CancellationToken) {
    let mut roles = lead.subscribe();
    loop {
        let role = roles.borrow_and_update().clone();
        match role {
            Role::Leader { epoch } => {
                if take_over(&work.engine, &lead, epoch).await.is_err() {
                    // Stood down: the role has changed, and the loop follows it.
                    continue;
                }
                work.metrics.leader.set(1);
                work.metrics.leader_epoch.set(epoch);
                work.health.set_standby(None);
                info!(epoch, "leading: cycles and collections run");
                let term = shutdown.child_token();
                let tasks = TaskTracker::new();
                work.spawn(&term, &tasks);
                tasks.close();
                tokio::select! {
                    changed = roles.changed() => {
                        if changed.is_err() {
                            shutdown.cancelled().await;
                        }
                    }
                    () = shutdown.cancelled() => {}
                }
                term.cancel();
                work.engine.wake_submissions();
                work.metrics.leader.set(0);
                work.metrics.leader_epoch.set(0);
                tasks.wait().await;
                if shutdown.is_cancelled() {
                    return;
                }
                info!(epoch, "lead lost: cycles and collections stopped");
            }
            Role::Standby { .. } | Role::Outdated { .. } => {
                work.metrics.leader.set(0);
                work.metrics.leader_epoch.set(0);
                match role {
                    Role::Outdated { found, leader } => work.health.set_outdated(found, leader),
                    Role::Standby { leader } => work.health.set_standby(Some(leader)),
                    Role::Leader { .. } => {}
                }
                work.health.beat();
                tokio::select! {
                    changed = roles.changed() => {
                        if changed.is_err() {
                            shutdown.cancelled().await;
                            return;
                        }
                    }
                    () = tokio::time::sleep(STANDBY_BEAT) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}
