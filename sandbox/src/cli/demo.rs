//! `cosigner-sandbox demo`: the daemon against the built-in sandbox, each decision printed as it is made.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use cosigner::cli::{CmdResult, Failure, spawn_signal_handler};

/// Arguments of `demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "The demo runs until Ctrl-C (or for --duration), then prints a summary. It \
makes a throwaway key shard, writes a config and a policy into a temporary directory, starts the \
sandbox with a mix of withdrawals, and runs the daemon. The temporary directory is removed at exit \
unless --keep is given; a --dir is always kept, so you can run `cosigner ledger list` on it."
)]
pub struct DemoArgs {
    /// Stop by itself after this long, e.g. 30s (default: run until Ctrl-C)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Directory for the demo's files (default: a new one under the temp directory)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Time between pending cycles
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) poll_interval: Duration,
    /// Keep the temporary directory (config, key, ledger) at exit
    #[arg(long)]
    pub(crate) keep: bool,
}

/// Runs `demo`: exit 1 when the ledger did not verify or the server refused a decision.
pub(crate) async fn run(a: DemoArgs) -> CmdResult {
    let stop = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    spawn_signal_handler(stop.clone(), hard_stop.clone());
    let opts = crate::demo::DemoOptions {
        duration: a.duration,
        dir: a.dir,
        poll_interval: a.poll_interval,
        keep: a.keep,
    };
    let mut out = std::io::stdout();
    let summary = crate::demo::run(opts, stop, hard_stop, &mut out)
        .await
        .context("the demo could not run")
        .map_err(Failure::runtime)?;
    if !summary.ledger_intact || summary.refused_by_server > 0 {
        return Err(Failure::runtime(anyhow::anyhow!(
            "the demo ended with problems (see the summary)"
        )));
    }
    Ok(())
}
