//! `cosigner pause` and `resume`: the kill switch thrown or lifted through the library's
//! [`crate::killswitch::switch`], and what it did printed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CmdResult, ConfigArg, Failure};
use crate::control::Mode;
use crate::killswitch::{self, Reach, Switched};

/// Arguments of `pause` and `resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "With no daemon running, the mode is written to the ledger and applies when \
it starts. With the daemon running, the call goes to its control socket when there is one (no key \
needed; a TCP flood cannot block it), else to its operator API on http.listen, with the key from \
--api-key-file or $COSIGNER_API_KEY. Either way the mode is stored in the ledger, so a restart \
keeps it. Without a shell on the host's cosigner group: `systemctl kill --kill-whom=main -s SIGUSR1 \
cosigner` holds everything too."
)]
pub struct PauseArgs {
    #[command(flatten)]
    /// Where the mode is switched: the ledger, or the running daemon's API.
    pub(crate) target: ModeTarget,
    /// Reject every well-formed transaction instead of holding it
    #[arg(long)]
    pub(crate) reject: bool,
}

/// Arguments of `resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "With no daemon running, normal mode is written to the ledger and applies when \
it starts. With the daemon running, the call goes to its control socket when there is one, else to \
its operator API on http.listen, with the key from --api-key-file or $COSIGNER_API_KEY."
)]
pub struct ResumeArgs {
    #[command(flatten)]
    /// Where the mode is switched: the ledger, or the running daemon's API.
    pub(crate) target: ModeTarget,
}

/// Where `pause` and `resume` apply: the configuration, and the operator API key used when the
/// daemon is running.
#[derive(Debug, Args)]
pub(crate) struct ModeTarget {
    #[command(flatten)]
    /// Which configuration file.
    pub(crate) config: ConfigArg,
    /// File holding an operator API key (else $COSIGNER_API_KEY); needed while the daemon runs
    /// and no control socket answers
    #[arg(long, value_name = "FILE")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// The daemon's control socket, and no other way [default: control.socket, else
    /// $RUNTIME_DIRECTORY/control.socket, else /run/cosigner/control.socket, when it is there]
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Give up on the daemon after this long, saying what did not answer
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// Runs `pause`: hold, or reject with --reject.
pub(crate) async fn pause(a: PauseArgs) -> CmdResult {
    let mode = if a.reject { Mode::Reject } else { Mode::Hold };
    set_mode(a.target, mode).await
}

/// Runs `resume`.
pub(crate) async fn resume(a: ResumeArgs) -> CmdResult {
    set_mode(a.target, Mode::Normal).await
}

async fn set_mode(a: ModeTarget, mode: Mode) -> CmdResult {
    let cfg = a.config.load()?;
    let reach = Reach {
        socket: a.socket,
        timeout: a.timeout,
    };
    let switched = killswitch::switch(&cfg, mode, a.api_key_file.as_deref(), &reach)
        .await
        .map_err(|e| {
            if e.is_usage() {
                Failure::usage(e)
            } else {
                Failure::runtime(e)
            }
        })?;
    match switched {
        Switched::Recorded { ledger } => println!(
            "mode {} recorded in {}; it applies when the daemon starts",
            mode.as_str(),
            ledger.display()
        ),
        Switched::Live { addr } => println!(
            "mode {} in force now (running daemon on {addr})",
            mode.as_str()
        ),
        Switched::Socket { path } => println!(
            "mode {} in force now (running daemon, control socket {})",
            mode.as_str(),
            path.display()
        ),
    }
    Ok(())
}
