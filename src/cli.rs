//! The command line: the argument definitions, the dispatch to one module per command under
//! `cli/`, the exit codes and the logging set-up. Each command prints what library functions
//! return. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::config::{self, Config, LogFormat};

mod apikey;
mod c2c;
mod check;
mod ledger;
mod mode;
mod pending;
mod policy;
mod run;
mod sign;
mod signals;

pub(crate) use apikey::ApikeyCommand;
pub(crate) use c2c::{OrderFileArgs, RateArgs};
pub(crate) use check::CheckArgs;
pub(crate) use ledger::LedgerCommand;
pub(crate) use mode::{PauseArgs, ResumeArgs};
pub(crate) use pending::PendingArgs;
pub(crate) use policy::PolicyCommand;
pub(crate) use run::RunArgs;
pub(crate) use sign::SignArgs;
pub use sign::{key_source, read_password};
pub use signals::{install_pause_signal, shutdown_signal, spawn_signal_handler};

/// Exit code of a runtime failure.
pub(crate) const EXIT_RUNTIME: u8 = 1;
/// Exit code of bad usage or configuration.
pub(crate) const EXIT_USAGE: u8 = 2;

/// A command's failure: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    /// 1 (runtime) or 2 (usage or configuration).
    pub code: u8,
    /// The error and its causes.
    pub(crate) error: anyhow::Error,
}

impl Failure {
    /// Bad usage or configuration (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// A failure while doing the work (exit 1).
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_RUNTIME,
            error: error.into(),
        }
    }

    /// The message for stderr: one sentence, then each cause. No cause is said twice, because
    /// no error of the crate both prints its inner error and returns it as its source
    /// (`tests/it/module_map.rs` holds every `#[error]` to that).
    #[must_use]
    pub fn report(&self) -> String {
        let mut out = format!("error: {}", self.error);
        for cause in self.error.chain().skip(1) {
            out.push_str(&format!("\n  caused by: {cause}"));
        }
        out
    }
}

/// What a command returns.
pub type CmdResult = Result<(), Failure>;

/// cosigner: approves or rejects 1BitPay withdrawals with your key shard, by your policy.
#[derive(Debug, Parser)]
#[command(
    name = "cosigner",
    version,
    about = "Policy-driven co-signer for 1BitPay MPC withdrawals",
    long_about = "cosigner holds your 1BitPay key shard. It polls the withdrawals waiting for your \
approval, runs each through the policy you write, approves or rejects it with the key shard, and \
records every decision.\n\nStart with `cosigner check --config FILE` to validate a configuration. \
The demo and the local 1BitPay (the sandbox) are in the cosigner-sandbox crate: `cargo demo`.",
    after_help = "The config file is the --config flag, else $COSIGNER_CONFIG, else \
/etc/cosigner/cosigner.toml. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, key shard and paths, one line per check.
    Check(CheckArgs),
    /// Print the `data` field for a text, signed with the key shard.
    Sign(SignArgs),
    /// Show one page of the withdrawals waiting for approval (read-only).
    Pending(PendingArgs),
    /// C2C: show the platform's buy and sell rates for a currency pair.
    Rate(RateArgs),
    /// C2C: create an order from a JSON file (the reference's field names).
    CreateOrder(OrderFileArgs),
    /// C2C: create a batch of sell orders from a JSON array file.
    BatchSell(OrderFileArgs),
    /// Run the co-signer: poll, decide, record, submit, collect; until SIGTERM or SIGINT.
    #[command(
        after_help = "The pending cycle runs every poll.interval and collection every \
collect.interval, both at start-up too. Metrics and health are served on http.listen \
(/metrics, /healthz, /readyz). SIGTERM or SIGINT stops new work and lets in-flight submissions \
finish (poll.shutdown_timeout); a second signal exits at once. Nothing recorded is lost either way."
    )]
    Run(RunArgs),
    /// Validate a policy, or explain how it decides a transaction.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read or verify the decision ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Kill switch: hold every transaction (or reject with --reject) until `resume`.
    Pause(PauseArgs),
    /// Lift the kill switch: the policy decides again.
    Resume(ResumeArgs),
    /// Operator API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
}

/// The `--config` flag shared by commands that read the configuration.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Configuration file [default: $COSIGNER_CONFIG, else /etc/cosigner/cosigner.toml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<Config, Failure> {
        let path = config::resolve_path(self.config.as_deref());
        Config::load(&path).map_err(Failure::usage)
    }
}

impl Command {
    /// True when the command sets up logging from the configuration itself.
    #[must_use]
    pub fn logs_from_config(&self) -> bool {
        matches!(self, Command::Run(_))
    }
}

/// Sets up tracing to stderr: `RUST_LOG` wins over `level`; colour only on a terminal.
///
/// A filter is a level or comma-separated `target=level` directives, the target a module path
/// (`Targets`: `EnvFilter`'s syntax without its span and field filters, and without the regex
/// engine that those pull into the binary); a `RUST_LOG` that is not one is ignored.
pub fn init_tracing(format: LogFormat, level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| crate::config::valid_log_filter(v))
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry.with(layer.fmt_fields(text_fields())).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

/// Text-log fields as `key=value`, a value with spaces or quotes in double quotes
/// (`reason="no rule matched"`); the message as is.
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{text}")
        } else if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
            // A string recorded as `&str` or with `?` comes quoted and escaped: keep the quotes
            // only when the value needs them.
            let inner = &text[1..text.len() - 1];
            if crate::display::log_value(inner) == inner && !inner.contains('\\') {
                write!(w, "{}={inner}", field.name())
            } else {
                write!(w, "{}={text}", field.name())
            }
        } else {
            write!(w, "{}={}", field.name(), crate::display::log_value(&text))
        }
    })
    .delimited(" ")
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::Check(a) => check::run(a).await,
        Command::Sign(a) => sign::run(a),
        Command::Pending(a) => pending::run(a).await,
        Command::Rate(a) => c2c::rate(a).await,
        Command::CreateOrder(a) => c2c::create_order(a).await,
        Command::BatchSell(a) => c2c::batch_sell(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Policy(c) => policy::run(c).await,
        Command::Ledger(c) => ledger::run(c).await,
        Command::Pause(a) => mode::pause(a).await,
        Command::Resume(a) => mode::resume(a).await,
        Command::Apikey(c) => apikey::run(c),
    }
}

/// A client for the configured 1BitPay API.
fn client_for(cfg: &Config) -> Result<Client, Failure> {
    Client::new(cfg.api.client.clone()).map_err(Failure::runtime)
}

/// Prints `v` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(v: &T) -> CmdResult {
    let text = serde_json::to_string_pretty(v).map_err(Failure::runtime)?;
    println!("{text}");
    Ok(())
}
