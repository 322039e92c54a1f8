//! The `cosigner-sandbox` command line: `serve` (the local 1BitPay) and `demo`. Exit codes as
//! `cosigner`'s: 0 success, 1 runtime failure, 2 bad usage.

use clap::{Parser, Subcommand};
use cosigner::cli::CmdResult;

mod demo;
mod serve;

pub use demo::DemoArgs;
pub use serve::{ServeArgs, prepare};

/// cosigner-sandbox: a strict local 1BitPay, and the demo of cosigner against it.
#[derive(Debug, Parser)]
#[command(
    name = "cosigner-sandbox",
    version,
    about = "A strict local 1BitPay for cosigner's tests and trials, and the demo",
    long_about = "Development tools for cosigner, kept out of the production daemon. `demo` runs \
the daemon against a local 1BitPay and prints each decision (`cargo demo`); `serve` runs that \
local 1BitPay alone, for tests and trials of `cosigner` itself."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// See it work: the daemon against the sandbox, printing each decision; runs until Ctrl-C
    /// unless --duration is given.
    Demo(DemoArgs),
    /// Run a local, strict 1BitPay server for tests and trials.
    Serve(ServeArgs),
}

impl Command {
    /// The log filter used when `RUST_LOG` is unset: the server says what it serves.
    #[must_use]
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            Command::Demo(_) => "warn",
        }
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Demo(a) => demo::run(a).await,
        Command::Serve(a) => serve::run(a).await,
    }
}
