//! `cosigner run`: the daemon until a stop signal, or one pending cycle with `--once`.

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::signals::{spawn_reload_handler, spawn_signal_handler, take_pause_signal};
use super::{CmdResult, ConfigArg, Failure, init_tracing};
use crate::daemon::{self, DaemonError};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// Run one pending cycle and exit: 0 when it ran, 1 when it could not
    #[arg(long)]
    pub(crate) once: bool,
    /// Record decisions as dry runs and send nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// A daemon error that names the configuration exits 2, any other 1.
fn daemon_failure(e: DaemonError) -> Failure {
    if e.is_configuration() {
        Failure::usage(e)
    } else {
        Failure::runtime(e)
    }
}

/// Runs `run`.
pub(crate) async fn run(a: RunArgs) -> CmdResult {
    let cfg = a.config.load()?;
    init_tracing(cfg.log.format, &cfg.log.level);
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    let opts = daemon::Options {
        dry_run: a.dry_run,
        events: None,
        reload: Some(reload.clone()),
        pause_signal: take_pause_signal(),
    };
    if !a.once {
        let shutdown = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        spawn_signal_handler(shutdown.clone(), hard_stop.clone());
        spawn_reload_handler(reload);
        return daemon::run(&cfg, opts, shutdown, hard_stop)
            .await
            .map_err(daemon_failure);
    }
    let parts = daemon::build(&cfg, opts, CancellationToken::new())
        .await
        .map_err(daemon_failure)?;
    // In a pair, one cycle runs only on the leader: this instance takes the lead, or says who
    // holds it.
    parts
        .lead_once(std::time::Duration::from_secs(15))
        .await
        .map_err(Failure::runtime)?;
    let dry_run = parts.engine.dry_run();
    let out = parts
        .engine
        .cycle_once()
        .await
        .context("the cycle could not run")
        .map_err(Failure::runtime)?;
    let decided: Vec<String> = out
        .decided
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!(
        "cycle: {} listed, decided [{}], {} held ({} unchanged), {} re-sent, {} submitted, {} failed{}",
        out.listed,
        decided.join(", "),
        out.held,
        out.holds_unchanged,
        out.resent,
        out.submitted,
        out.failed,
        if dry_run {
            " (dry run: nothing sent)"
        } else {
            ""
        }
    );
    Ok(())
}
