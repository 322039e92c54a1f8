//! The `cosigner` binary: parse the command line, set up logging, run the command, map the
//! outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use cosigner::cli::{self, Cli};
use cosigner::config::LogFormat;

#[tokio::main]
async fn main() -> ExitCode {
    // First of all: SIGUSR1 means "pause, hold everything", and its default action would kill
    // the process; from here on one that arrives is kept for the daemon to act on.
    cli::install_pause_signal();
    // Before any secret is read: no core file, whatever LimitCORE says.
    let dumpable = cosigner::systemd::disable_core_dumps();
    let args = Cli::parse();
    if !args.command.logs_from_config() {
        cli::init_tracing(LogFormat::Text, "warn");
    }
    if let Err(e) = dumpable {
        eprintln!(
            "warning: cannot make the process non-dumpable ({e}); a core dump may hold the key"
        );
    }
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.report());
            ExitCode::from(failure.code)
        }
    }
}
