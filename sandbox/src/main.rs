//! The `cosigner-sandbox` binary: parse the command line, set up logging, run the command, map
//! the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use cosigner::config::LogFormat;
use cosigner_sandbox::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    cosigner::cli::init_tracing(LogFormat::Text, args.command.default_log_level());
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.report());
            ExitCode::from(failure.code)
        }
    }
}
