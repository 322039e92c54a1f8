//! `cosigner check`: prints the findings of the library's [`crate::check::preflight`], one line
//! each, and maps them to the exit code (2 for a problem on this host, 1 for a failed online
//! call).

use clap::Args;

use super::{CmdResult, ConfigArg, Failure};
use crate::check::{self, Level};
use crate::config::{self, Environment};

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// Also make one authenticated call (pending, page size 1) to test credentials, the IP
    /// allow-list and the clock.
    #[arg(long)]
    pub(crate) online: bool,
}

/// Runs `check`.
pub(crate) async fn run(a: CheckArgs) -> CmdResult {
    let path = config::resolve_path(a.config.config.as_deref());
    let report = check::preflight(&path, &Environment::from_process(), a.online).await;
    for f in report.findings() {
        let level = match f.level {
            Level::Ok => "ok   ",
            Level::Warn => "warn ",
            Level::Fail => "FAIL ",
        };
        println!("{level} {}: {}", f.what, f.detail);
    }
    if !report.config_loaded {
        Err(Failure::usage(anyhow::anyhow!(
            "configuration {} is not valid",
            path.display()
        )))
    } else if report.local_failed() {
        Err(Failure::usage(anyhow::anyhow!(
            "configuration {} has problems (see FAIL lines)",
            path.display()
        )))
    } else if report.online_failed() {
        Err(Failure::runtime(anyhow::anyhow!(
            "the online check failed (see FAIL lines)"
        )))
    } else {
        Ok(())
    }
}
