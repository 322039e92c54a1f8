//! What the daemon watches beside its work: SIGUSR1 (pause, hold everything) and the rest of
//! the ledger's hash chain, walked behind the decisions.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cycle::Engine;
use crate::ledger::LedgerHandle;
use crate::metrics::Metrics;

/// Who SIGUSR1's pause is recorded as made by.
const SIGNAL_ACTOR: &str = "signal SIGUSR1";

/// SIGUSR1 means "pause, hold everything". `signals` counts every one from the first thing
/// `main` does: one that came while the daemon started is acted on here, before any cycle is
/// started; later ones as they come, until `stop`.
pub(super) async fn follow_pause_signal(
    mut signals: tokio::sync::watch::Receiver<u64>,
    engine: Arc<Engine>,
    stop: CancellationToken,
) {
    if *signals.borrow_and_update() > 0 {
        hold_on_signal(&engine).await;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = signals.changed() => if changed.is_err() { return },
            }
            hold_on_signal(&engine).await;
        }
    });
}

async fn hold_on_signal(engine: &Engine) {
    warn!("SIGUSR1: holding everything");
    if let Err(e) = engine
        .control()
        .set_mode(crate::control::Mode::Hold, SIGNAL_ACTOR)
        .await
    {
        error!(error = %e, "SIGUSR1's pause");
    }
}

/// How often a pause the ledger could not take is tried again.
pub(super) const PAUSE_RETRY: Duration = Duration::from_secs(1);

/// How often the records added since the last verified point are walked, once the whole chain
/// has been.
const CHAIN_CHECK_EVERY: Duration = Duration::from_secs(600);

/// The rest of the chain, behind the daemon: at start only what the first decisions depend on
/// was verified (see `SqliteLedger::verify_at_start`). Walks the whole chain once, paced to a
/// quarter of a core (`cosigner_ledger_verified_ratio` shows how far it got), then every
/// [`CHAIN_CHECK_EVERY`] the records added since; each clean walk moves the last verified
/// point, so that the next start has little to walk. A break found puts the daemon in
/// hold-all (nothing is sent, recorded rejects included), sets `cosigner_ledger_chain_broken`,
/// and logs the command that shows where.
pub(super) async fn watch_chain(
    ledger: LedgerHandle,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    config: std::path::PathBuf,
    stop: CancellationToken,
) {
    let progress = {
        let metrics = metrics.clone();
        Arc::new(move |walked: u64, total: u64| {
            let ratio = if total == 0 {
                1.0
            } else {
                walked as f64 / total as f64
            };
            metrics.ledger_verified.set(ratio);
        })
    };
    let mut whole = true;
    loop {
        let walk = ledger.verify_beside(!whole, whole, progress.clone());
        let report = tokio::select! {
            () = stop.cancelled() => return,
            r = walk => r,
        };
        match report {
            Ok(r) if r.problems.is_empty() => {
                if whole {
                    metrics.ledger_verified.set(1.0);
                    info!(
                        records = r.records,
                        "the ledger's hash chain verified, every record"
                    );
                    whole = false;
                }
            }
            Ok(r) => {
                metrics.chain_broken.set(1);
                error!(
                    problem = %r.problems[0],
                    problems = r.problems.len(),
                    "the ledger's hash chain is broken: holding everything; `cosigner ledger verify \
                     --config {}` shows every break",
                    config.display()
                );
                // Only the deciding instance sets the mode: a standby holds as it takes the lead.
                while engine.leading().is_err() {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                if engine.control().mode() != crate::control::Mode::Hold
                    && let Err(e) = engine
                        .control()
                        .set_mode(crate::control::Mode::Hold, "the ledger chain check")
                        .await
                {
                    error!(error = %e, "hold-all after the broken chain");
                }
                // Held: every later walk would find the same break.
                return;
            }
            Err(e) => {
                warn!(error = %e, "the ledger's hash chain could not be walked; tried again later")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHAIN_CHECK_EVERY) => {}
        }
    }
}
