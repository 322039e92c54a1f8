//! The command line: argument definitions, and one function per command that calls into the
//! library and reports to the operator. Exit codes: 0 success, 1 runtime failure, 2 bad usage
//! or configuration.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientError, CreateOrder, SellOrder};
use crate::config::{self, Config, LogFormat};
use crate::daemon::{self, DaemonError};
use crate::ledger::{Ledger, Status};
use crate::policy::{self, ClockCheck, Usage};
use crate::poller::Mode;
#[cfg(feature = "dev-tools")]
use crate::sandbox::{self, Sandbox, SandboxConfig, Scenario};
use crate::signer::{self, KeySource, Signer};

/// Exit code of a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

/// A command's failure: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    /// 1 (runtime) or 2 (usage or configuration).
    pub code: u8,
    /// The error and its causes.
    pub error: anyhow::Error,
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

    /// The message for stderr: one sentence, then each cause not already said.
    pub fn report(&self) -> String {
        let mut out = format!("error: {}", self.error);
        let mut said = self.error.to_string();
        for cause in self.error.chain().skip(1) {
            let c = cause.to_string();
            if said.contains(&c) {
                continue;
            }
            out.push_str(&format!("\n  caused by: {c}"));
            said.push_str(&c);
        }
        out
    }
}

type CmdResult = Result<(), Failure>;

/// cosigner: approves or rejects 1BitPay withdrawals with your key shard, by your policy.
#[derive(Debug, Parser)]
#[command(
    name = "cosigner",
    version,
    about = "Policy-driven co-signer for 1BitPay MPC withdrawals",
    long_about = "cosigner holds your 1BitPay key shard. It polls the withdrawals waiting for your \
approval, runs each through the policy you write, approves or rejects it with the key shard, and \
records every decision.\n\nStart with `cosigner check --config FILE` to validate a configuration; \
a development build also has `cosigner demo` and `cosigner sandbox` (a local 1BitPay).",
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
    /// Run a local, strict 1BitPay server for tests and trials.
    #[cfg(feature = "dev-tools")]
    Sandbox(SandboxArgs),
    /// See it work: the daemon against the built-in sandbox, printing each decision; runs until
    /// Ctrl-C unless --duration is given.
    #[cfg(feature = "dev-tools")]
    Demo(DemoArgs),
    /// Kill switch: hold every transaction (or reject with --reject) until `resume`.
    Pause(PauseArgs),
    /// Lift the kill switch: the policy decides again.
    Resume(ResumeArgs),
    /// Operator API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
}

/// Arguments of `pause` and `resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "With no daemon running, the mode is written to the ledger and applies when \
it starts. With the daemon running, the call goes to its operator API on http.listen, with the key \
from --api-key-file or $COSIGNER_API_KEY. Either way the mode is stored in the ledger, so a restart \
keeps it."
)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: ModeTarget,
    /// Reject every well-formed transaction instead of holding it
    #[arg(long)]
    pub reject: bool,
}

/// Arguments of `resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "With no daemon running, normal mode is written to the ledger and applies when \
it starts. With the daemon running, the call goes to its operator API on http.listen, with the key \
from --api-key-file or $COSIGNER_API_KEY."
)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub target: ModeTarget,
}

/// Where `pause` and `resume` apply: the configuration, and the operator API key used when the
/// daemon is running.
#[derive(Debug, Args)]
pub struct ModeTarget {
    #[command(flatten)]
    pub config: ConfigArg,
    /// File holding an operator API key (else $COSIGNER_API_KEY); needed while the daemon runs
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
}

/// `apikey` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Print a fresh operator API key, the line to append to http.api_keys_file, and the
    /// commands that append it and reload the daemon.
    New {
        /// The keys file the printed command appends to
        #[arg(long, value_name = "FILE", default_value = DEFAULT_API_KEYS_FILE)]
        keys_file: PathBuf,
        /// One JSON object (key, line, keys_file) for scripts
        #[arg(long)]
        json: bool,
    },
}

/// `http.api_keys_file` of the systemd set-up (systemd/cosigner.toml).
pub const DEFAULT_API_KEYS_FILE: &str = "/etc/cosigner/api-keys";

/// Arguments of `demo`.
#[cfg(feature = "dev-tools")]
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
    pub duration: Option<Duration>,
    /// Directory for the demo's files (default: a new one under the temp directory)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Time between pending cycles
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Keep the temporary directory (config, key, ledger) at exit
    #[arg(long)]
    pub keep: bool,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Run one pending cycle and exit: 0 when it ran, 1 when it could not
    #[arg(long)]
    pub once: bool,
    /// Record decisions as dry runs and send nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and summarise it (default: the configured policy.file).
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Policy file to check instead of the configured one
        file: Option<PathBuf>,
    },
    /// Re-evaluate every transaction in the ledger under another policy and print what would
    /// change, before switching it on.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The candidate policy
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
    /// Show each rule in order, whether it matched and why not, and the final decision.
    #[command(after_help = "Example:\n  cosigner policy explain --tx \
'{\"id\":1,\"fromAddress\":\"TGGh...\",\"toAddress\":\"TFMQ...\",\"amount\":\"4.1\",\"chainId\":\"195\"}'\n\n\
Window usage is read from the ledger when it exists (read-only; safe beside a running daemon).")]
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// A pending item as JSON, with the field names of the pending list
        #[arg(long, value_name = "JSON")]
        tx: String,
    },
}

/// `ledger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List recorded decisions, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// How many to show
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON array instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain: detects edited, removed or truncated records (exit 1 if broken).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The `--config` flag shared by commands that read the configuration.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Configuration file [default: $COSIGNER_CONFIG, else /etc/cosigner/cosigner.toml]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<Config, Failure> {
        let path = config::resolve_path(self.config.as_deref());
        Config::load(&path).map_err(Failure::usage)
    }
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also make one authenticated call (pending, page size 1) to test credentials, the IP
    /// allow-list and the clock.
    #[arg(long)]
    pub online: bool,
}

/// Arguments of `sign`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cosigner sign --config /etc/cosigner/cosigner.toml '{\"isMain\":1}'\n  \
cosigner sign --pfx merchant.pfx --merchant-no mer123 < text.json\n\nThe text is signed byte for \
byte; from standard input, one trailing newline is dropped."
)]
pub struct SignArgs {
    /// Configuration file to take the key from [default: $COSIGNER_CONFIG, else /etc/cosigner/cosigner.toml]
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["pfx", "merchant_no", "password_file"])]
    pub config: Option<PathBuf>,
    /// PKCS#12 key file, instead of a configuration
    #[arg(long, value_name = "FILE")]
    pub pfx: Option<PathBuf>,
    /// Merchant number; the default key password is "1bitpay" followed by it
    #[arg(long, value_name = "M", requires = "pfx")]
    pub merchant_no: Option<String>,
    /// File holding the key password, when it is not the default
    #[arg(long, value_name = "FILE", requires = "pfx")]
    pub password_file: Option<PathBuf>,
    /// Accept a key file that group or others can read
    #[arg(long)]
    pub allow_insecure_permissions: bool,
    /// Sign a text shaped like an approve/reject decision (one with a `status` field): such a
    /// signature approves or rejects a withdrawal without the policy or the ledger
    #[arg(long = "i-know-this-bypasses-the-policy")]
    pub bypass_policy: bool,
    /// The text to sign; read from standard input when absent
    pub text: Option<String>,
}

/// Arguments of `pending`.
#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Page number, from 1
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    /// Items per page [default: poll.page_size]
    #[arg(long)]
    pub page_size: Option<u32>,
}

/// Arguments of `rate`.
#[derive(Debug, Args)]
pub struct RateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The crypto currency, e.g. USDT
    #[arg(long, value_name = "CODE")]
    pub crypto: String,
    /// The fiat currency, e.g. CNY
    #[arg(long, value_name = "CODE")]
    pub legal: String,
}

/// Arguments of `create-order` and `batch-sell`.
#[derive(Debug, Args)]
pub struct OrderFileArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// JSON file with the order(s), field names as in the 1BitPay reference; - for stdin
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `sandbox`.
#[cfg(feature = "dev-tools")]
#[derive(Debug, Args)]
#[command(
    after_help = "The certificate that verifies `data` is the one in the merchant's PKCS#12 key \
shard (downloaded from the merchant console): give the file itself with --pfx (and --merchant-no \
for its default password), or its certificate as PEM with --cert, extracted with `openssl pkcs12 \
-in merchant.pfx -clcerts -nokeys -out merchant-cert.pem` (add -legacy for an RC2/3DES file).\n\n\
The sandbox prints `listening on http://ADDR` once it accepts connections (use \
port 0 for any free port). Admin routes for tests: GET/POST /_sandbox/pending, GET \
/_sandbox/decisions, /_sandbox/collects, /_sandbox/orders, /_sandbox/rejections, /_sandbox/stats, \
GET/PUT /_sandbox/faults."
)]
pub struct SandboxArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Merchant certificate (PEM) that `data` is verified with
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pfx",
        conflicts_with = "pfx"
    )]
    pub cert: Option<PathBuf>,
    /// The merchant's PKCS#12 key shard: its certificate verifies `data` (instead of --cert)
    #[arg(long, value_name = "FILE")]
    pub pfx: Option<PathBuf>,
    /// File holding the PKCS#12 password, when it is not "1bitpay" + --merchant-no
    #[arg(long, value_name = "FILE", requires = "pfx")]
    pub password_file: Option<PathBuf>,
    /// Merchant number to accept (and, with --pfx, the default key password's suffix)
    #[arg(long, value_name = "M")]
    pub merchant_no: String,
    /// API key to accept
    #[arg(long, value_name = "K")]
    pub api_key: String,
    /// API secret to check `Sign` with
    #[arg(
        long,
        value_name = "S",
        required_unless_present = "api_secret_file",
        conflicts_with = "api_secret_file"
    )]
    pub api_secret: Option<String>,
    /// File holding the API secret
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,
    /// Scenario file (TOML, or JSON when it ends in .json): pending items and faults
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Canonical order the sandbox expects for `Sign`: case-insensitive or ascii
    #[arg(long, default_value = "case-insensitive")]
    pub sign_order: crate::client::SignOrder,
    /// Largest accepted clock difference of `TimeStamp`
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_skew: Duration,
}

impl Command {
    /// True when the command sets up logging from the configuration itself.
    pub fn logs_from_config(&self) -> bool {
        matches!(self, Command::Run(_))
    }

    /// The log filter used when `RUST_LOG` is unset.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            #[cfg(feature = "dev-tools")]
            Command::Sandbox(_) => "info",
            _ => "warn",
        }
    }
}

/// Sets up tracing to stderr: `RUST_LOG` wins over `level`; colour only on a terminal.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
        LogFormat::Json => builder.json().try_init(),
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
        Command::Check(a) => check(a).await,
        Command::Sign(a) => sign(a),
        Command::Pending(a) => pending(a).await,
        Command::Rate(a) => rate(a).await,
        Command::CreateOrder(a) => create_order(a).await,
        Command::BatchSell(a) => batch_sell(a).await,
        Command::Run(a) => run_command(a).await,
        Command::Policy(PolicyCommand::Check { config, file }) => policy_check(config, file),
        Command::Policy(PolicyCommand::Explain { config, tx }) => policy_explain(config, &tx),
        Command::Policy(PolicyCommand::Replay { config, policy }) => policy_replay(config, &policy),
        Command::Ledger(LedgerCommand::List {
            config,
            limit,
            json,
        }) => ledger_list(config, limit, json),
        Command::Ledger(LedgerCommand::Verify { config }) => ledger_verify(config),
        #[cfg(feature = "dev-tools")]
        Command::Sandbox(a) => run_sandbox(a).await,
        #[cfg(feature = "dev-tools")]
        Command::Demo(a) => run_demo(a).await,
        Command::Pause(a) => {
            let mode = if a.reject { Mode::Reject } else { Mode::Hold };
            set_mode(a.target, mode).await
        }
        Command::Resume(a) => set_mode(a.target, Mode::Normal).await,
        Command::Apikey(ApikeyCommand::New { keys_file, json }) => apikey_new(&keys_file, json),
    }
}

fn apikey_new(keys_file: &Path, json: bool) -> CmdResult {
    let (key, line) = crate::operator::new_key().map_err(Failure::runtime)?;
    if json {
        return print_json(&serde_json::json!({
            "key": key,
            "line": line,
            "keys_file": keys_file,
        }));
    }
    let file = shell_quote(&keys_file.display().to_string());
    println!("key:  {key}");
    println!("line: {line}");
    println!();
    println!("Keep the key secret: it is shown once, and only the line (its SHA-256) is stored.");
    println!("Append the line to http.api_keys_file and reload the running daemon:");
    println!("  echo '{line}' | sudo tee -a {file} >/dev/null");
    println!(
        "  sudo systemctl reload cosigner    # or: kill -HUP <pid>, or POST /v1/policy/reload"
    );
    Ok(())
}

/// `text` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn client_for(cfg: &Config) -> Result<Client, Failure> {
    Client::new(cfg.api.client.clone()).map_err(Failure::runtime)
}

fn print_json<T: serde::Serialize>(v: &T) -> CmdResult {
    let text = serde_json::to_string_pretty(v).map_err(Failure::runtime)?;
    println!("{text}");
    Ok(())
}

/// One line of `check` output.
struct Report {
    failed_usage: bool,
    failed_runtime: bool,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&self, what: &str, detail: impl std::fmt::Display) {
        println!("warn  {what}: {detail}");
    }
    fn finding(&mut self, f: crate::check::Finding) {
        match f.level {
            crate::check::Level::Ok => self.ok(f.what, f.detail),
            crate::check::Level::Warn => self.warn(f.what, f.detail),
            crate::check::Level::Fail => self.fail(f.what, f.detail, false),
        }
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, runtime: bool) {
        println!("FAIL  {what}: {detail}");
        if runtime {
            self.failed_runtime = true;
        } else {
            self.failed_usage = true;
        }
    }
}

/// Largest server-clock difference `check --online` accepts without a warning.
const CLOCK_WARN: Duration = Duration::from_secs(10);

async fn check(a: CheckArgs) -> CmdResult {
    let path = config::resolve_path(a.config.config.as_deref());
    let mut r = Report {
        failed_usage: false,
        failed_runtime: false,
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            r.fail("config", &e, false);
            return Err(Failure::usage(anyhow::anyhow!(
                "configuration {} is not valid",
                path.display()
            )));
        }
    };
    r.ok(
        "config",
        format!(
            "{} (merchant {}, {})",
            path.display(),
            cfg.api.client.merchant_no,
            cfg.api.client.base_url
        ),
    );
    let secret_from_env = std::env::var_os("COSIGNER_API__API_SECRET").is_some();
    let mut findings = crate::check::placeholders(&cfg);
    findings.extend(crate::check::transport(&cfg));
    findings.extend(crate::check::secret_files(&cfg, secret_from_env));
    for f in findings {
        r.finding(f);
    }
    match Signer::load(&cfg.key.source) {
        Ok(s) => r.ok(
            "key",
            format!(
                "{} ({}-bit RSA, alias {}, certificate matches; password from {})",
                cfg.key.source.pfx_file.display(),
                s.bits(),
                s.alias().unwrap_or("none"),
                cfg.key.password_origin
            ),
        ),
        Err(e) => r.fail("key", e, false),
    }
    match policy::load(&cfg.policy.file) {
        Ok(p) => {
            r.ok(
                "policy",
                format!(
                    "{} ({} rules, default {}, sha256 {})",
                    cfg.policy.file.display(),
                    p.rules.len(),
                    p.default,
                    &p.sha256[..12]
                ),
            );
            for w in p.warnings() {
                r.warn("policy", w);
            }
        }
        Err(e) => r.fail("policy", e, false),
    }
    r.finding(crate::check::ledger_dir(&cfg.ledger.path));
    let running = crate::ledger::held_by(&cfg.ledger.path);
    r.finding(crate::check::listen(cfg.http.listen, running.as_deref()));
    if let Some(w) = config::listen_warning(cfg.http.listen) {
        r.warn("http.listen", w);
    }
    if a.online {
        check_online(&cfg, &mut r).await;
    }
    if r.failed_usage {
        Err(Failure::usage(anyhow::anyhow!(
            "configuration {} has problems (see FAIL lines)",
            path.display()
        )))
    } else if r.failed_runtime {
        Err(Failure::runtime(anyhow::anyhow!(
            "the online check failed (see FAIL lines)"
        )))
    } else {
        Ok(())
    }
}

async fn check_online(cfg: &Config, r: &mut Report) {
    let client = match Client::new(cfg.api.client.clone()) {
        Ok(c) => c,
        Err(e) => return r.fail("online", e, true),
    };
    match client.pending_with_reply(1, 1).await {
        Ok((page, reply)) => {
            r.ok(
                "online",
                format!(
                    "authenticated to {} as {}; {} transaction(s) pending",
                    cfg.api.client.base_url, cfg.api.client.merchant_no, page.total
                ),
            );
            match reply.server_date {
                Some(date) => {
                    let (ahead, d) = match date.duration_since(SystemTime::now()) {
                        Ok(d) => (true, d),
                        Err(e) => (false, e.duration()),
                    };
                    let msg = format!(
                        "server clock is {}s {} this host's",
                        d.as_secs(),
                        if ahead { "ahead of" } else { "behind" }
                    );
                    if d > CLOCK_WARN {
                        r.warn(
                            "clock",
                            format!("{msg}: requests may be refused as stale; check NTP"),
                        );
                    } else {
                        r.ok("clock", msg);
                    }
                }
                None => r.warn("clock", "the server sent no Date header; skew not checked"),
            }
        }
        Err(e) => {
            // An HTTP 401/403 carries its hint already (`ClientError`'s message): say it once.
            let hint = match &e {
                ClientError::Api { code: 401, .. } => {
                    " — credentials refused: check api.merchant_no, api.api_key and api.api_secret, \
                     and that the clock is right (a stale TimeStamp is refused too)"
                }
                ClientError::Api { code: 403, .. } => {
                    " — forbidden: is this host's public IP on the API key's allow-list?"
                }
                ClientError::Network { .. } => " — check api.base_url, DNS and outbound firewall",
                _ => "",
            };
            r.fail("online", format!("{e}{hint}"), true);
        }
    }
}

fn sign(a: SignArgs) -> CmdResult {
    let source = match &a.pfx {
        Some(pfx) => key_source(
            pfx,
            a.merchant_no.as_deref(),
            a.password_file.as_deref(),
            a.allow_insecure_permissions,
        )?,
        None => {
            let mut cfg = ConfigArg {
                config: a.config.clone(),
            }
            .load()?;
            cfg.key.source.allow_insecure_permissions |= a.allow_insecure_permissions;
            cfg.key.source
        }
    };
    let signer = Signer::load(&source).map_err(Failure::usage)?;
    let text = match a.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("cannot read the text from standard input")
                .map_err(Failure::usage)?;
            if t.ends_with('\n') {
                t.pop();
                if t.ends_with('\r') {
                    t.pop();
                }
            }
            t
        }
    };
    if signer::looks_like_decision(&text) && !a.bypass_policy {
        return Err(Failure::usage(anyhow::anyhow!(
            "the text is shaped like an approve/reject decision (it has a `status` field): its \
             signature would decide a withdrawal without the policy or the ledger. The daemon \
             makes decisions; to sign this by hand anyway, add --i-know-this-bypasses-the-policy"
        )));
    }
    let data = signer.sign(&text).map_err(Failure::usage)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{data}").map_err(Failure::runtime)?;
    Ok(())
}

/// A PKCS#12 named on the command line: the password from `password_file`, else the default
/// "1bitpay" + `merchant_no`.
fn key_source(
    pfx: &Path,
    merchant_no: Option<&str>,
    password_file: Option<&Path>,
    allow_insecure_permissions: bool,
) -> Result<KeySource, Failure> {
    let password = match (password_file, merchant_no) {
        (Some(f), _) => read_password(f, !allow_insecure_permissions)?,
        (None, Some(m)) => signer::default_password(m),
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--pfx needs --merchant-no (for the default password) or --password-file"
            )));
        }
    };
    Ok(KeySource {
        pfx_file: pfx.to_owned(),
        password,
        allow_insecure_permissions,
    })
}

/// A secret from a file named on the command line; `private` refuses one group or others may
/// read, as the key file is refused.
fn read_password(path: &Path, private: bool) -> Result<SecretString, Failure> {
    config::read_secret_file(path, private).map_err(|m| Failure::usage(anyhow::anyhow!(m)))
}

async fn pending(a: PendingArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let client = client_for(&cfg)?;
    if a.page == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--page starts at 1")));
    }
    let size = a.page_size.unwrap_or(cfg.poll.page_size);
    let page = client
        .pending(a.page, size)
        .await
        .map_err(Failure::runtime)?;
    println!(
        "{} pending in all; page {} (size {}):",
        page.total, a.page, size
    );
    println!(
        "{:>12}  {:>8}  {:>24}  {:<44}  {:<44}",
        "ID", "CHAIN", "AMOUNT", "FROM", "TO"
    );
    for item in &page.items {
        match item {
            Ok(tx) => {
                let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
                println!(
                    "{:>12}  {:>8}  {:>24}  {:<44}  {:<44}{}",
                    tx.id,
                    show(&tx.chain_id),
                    show(&tx.amount),
                    show(&tx.from),
                    show(&tx.to),
                    if tx.problems.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", tx.problems.join("; "))
                    }
                );
            }
            Err(m) => println!("{:>12}  malformed item: {} ({})", "-", m.reason, m.raw),
        }
    }
    Ok(())
}

async fn rate(a: RateArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let rate = client_for(&cfg)?
        .rate(&a.crypto, &a.legal)
        .await
        .map_err(Failure::runtime)?;
    print_json(&rate)
}

fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let text = if path == Path::new("-") {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("cannot read standard input")
            .map_err(Failure::usage)?;
        t
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::usage)?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid order file", path.display()))
        .map_err(Failure::usage)
}

async fn create_order(a: OrderFileArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let order: CreateOrder = read_json_file(&a.file)?;
    let created = client_for(&cfg)?
        .create_order(&order)
        .await
        .map_err(Failure::runtime)?;
    print_json(&created)
}

async fn batch_sell(a: OrderFileArgs) -> CmdResult {
    let cfg = a.config.load()?;
    let orders: Vec<SellOrder> = read_json_file(&a.file)?;
    if orders.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} holds no orders",
            a.file.display()
        )));
    }
    let sold = client_for(&cfg)?
        .batch_sell(&orders)
        .await
        .map_err(Failure::runtime)?;
    print_json(&sold)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(feature = "dev-tools")]
async fn run_sandbox(a: SandboxArgs) -> CmdResult {
    let cert = match (&a.cert, &a.pfx) {
        (Some(path), _) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read certificate {}", path.display()))
                .map_err(Failure::usage)?;
            openssl::x509::X509::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))
                .map_err(Failure::usage)?
        }
        (None, Some(pfx)) => {
            let source = key_source(pfx, Some(&a.merchant_no), a.password_file.as_deref(), false)?;
            let pem = Signer::load(&source)
                .and_then(|s| s.certificate_pem())
                .map_err(Failure::usage)?;
            openssl::x509::X509::from_pem(&pem).map_err(Failure::usage)?
        }
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--cert or --pfx is required: the merchant certificate verifies `data`"
            )));
        }
    };
    let secret = match (&a.api_secret, &a.api_secret_file) {
        (Some(s), _) => SecretString::from(s.clone()),
        // The sandbox's secret is a test value.
        (None, Some(f)) => read_password(f, false)?,
        (None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--api-secret or --api-secret-file is required"
            )));
        }
    };
    let scenario = match &a.scenario {
        Some(p) => Scenario::load(p).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?,
        None => Scenario::default(),
    };
    let sb = Sandbox::new(
        SandboxConfig {
            merchant_no: a.merchant_no,
            api_key: a.api_key,
            api_secret: secret,
            cert,
            sign_order: a.sign_order,
            max_skew: a.max_skew,
        },
        scenario,
    );
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))
        .map_err(Failure::runtime)?;
    let addr = listener.local_addr().map_err(Failure::runtime)?;
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, pending = sb.stats().pending, "sandbox ready");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    sandbox::serve(listener, sb, shutdown)
        .await
        .context("sandbox server failed")
        .map_err(Failure::runtime)
}

fn load_policy(path: &Path) -> Result<policy::Policy, Failure> {
    policy::load(path).map_err(Failure::usage)
}

fn daemon_failure(e: DaemonError) -> Failure {
    if e.is_configuration() {
        Failure::usage(e)
    } else {
        Failure::runtime(e)
    }
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT and `hard_stop` on the second.
pub fn spawn_signal_handler(shutdown: CancellationToken, hard_stop: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop signal received; a second one exits at once");
        shutdown.cancel();
        shutdown_signal().await;
        hard_stop.cancel();
    });
}

/// Notifies `reload` on every SIGHUP.
pub fn spawn_reload_handler(reload: std::sync::Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; reload the policy and the API keys through the operator API"
            );
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy and the operator API keys");
            reload.notify_one();
        }
    });
}

async fn run_command(a: RunArgs) -> CmdResult {
    let cfg = a.config.load()?;
    init_tracing(cfg.log.format, &cfg.log.level);
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    let opts = daemon::Options {
        dry_run: a.dry_run,
        events: None,
        reload: Some(reload.clone()),
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
    let parts = daemon::build(&cfg, opts, CancellationToken::new()).map_err(daemon_failure)?;
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

fn policy_check(config: ConfigArg, file: Option<PathBuf>) -> CmdResult {
    let path = match file {
        Some(f) => f,
        None => config.load()?.policy.file,
    };
    let p = load_policy(&path)?;
    println!("policy  {}", path.display());
    println!("sha256  {}", p.sha256);
    println!("default {}", p.default);
    for (i, r) in p.rules.iter().enumerate() {
        let mut conds = Vec::new();
        if let Some(c) = &r.chains {
            conds.push(format!("chains {}", c.join(",")));
        }
        if let Some(f) = &r.from {
            conds.push(format!("from {} address(es)", f.len()));
        }
        if let Some(t) = &r.to {
            conds.push(format!("to {} address(es)", t.len()));
        }
        if let Some(m) = r.min_amount {
            conds.push(format!("amount >= {m}"));
        }
        if let Some(m) = r.max_amount {
            conds.push(format!("amount <= {m}"));
        }
        if let Some(l) = &r.limit {
            let w = crate::display::window(l.window);
            if let Some(t) = l.max_total {
                conds.push(format!("total <= {t} per {w}"));
            }
            if let Some(c) = l.max_count {
                conds.push(format!("count <= {c} per {w}"));
            }
        }
        let conds = if conds.is_empty() {
            "any transaction".to_string()
        } else {
            conds.join("; ")
        };
        println!("rule {:>2} {:<8} {:?}: {conds}", i + 1, r.action, r.name);
    }
    if let Some(g) = &p.guard {
        println!(
            "guard   at most {} approvals per {}",
            g.max_approvals,
            crate::display::window(g.window)
        );
    }
    for w in p.warnings() {
        println!("warn    {w}");
    }
    Ok(())
}

fn policy_explain(config: ConfigArg, tx_json: &str) -> CmdResult {
    let cfg = config.load()?;
    let p = load_policy(&cfg.policy.file)?;
    let signer = Signer::load(&cfg.key.source).map_err(Failure::usage)?;
    let tx = crate::client::parse_pending_item(tx_json)
        .map_err(|m| Failure::usage(anyhow::anyhow!("--tx: {} ({})", m.reason, m.raw)))?;
    let now = crate::ledger::now_ms();
    let mut state = crate::ledger::TxState::default();
    let (usage, clock, mode, source) = if cfg.ledger.path.exists() {
        let l = Ledger::open_read_only(&cfg.ledger.path).map_err(Failure::runtime)?;
        let slack = cfg.api.client.max_clock_skew.saturating_mul(2);
        let u = l
            .usage_with_slack(&p, now, slack)
            .map_err(Failure::runtime)?;
        let behind = l
            .newest_record_ms()
            .map_err(Failure::runtime)?
            .is_some_and(|t| t > now);
        let mode = l.latest_event("mode").map_err(Failure::runtime)?;
        let mode = Mode::from_latest_event(mode.as_deref());
        state = l.state(&tx).map_err(Failure::runtime)?;
        (
            u,
            if behind {
                ClockCheck::BehindLedger
            } else {
                ClockCheck::Ok
            },
            mode,
            format!(
                "window usage, mode and this id's records from {}",
                cfg.ledger.path.display()
            ),
        )
    } else {
        (
            Usage::default(),
            ClockCheck::Ok,
            Mode::Normal,
            "no ledger yet: window usage is zero".to_string(),
        )
    };
    let planned = crate::plan::plan(
        &tx,
        &state,
        &crate::plan::Inputs {
            policy: &p,
            mode,
            usage: &usage,
            max_sign_len: signer.max_text_len(),
            clock,
            now_ms: now,
            listed_twice: false,
            trace: true,
        },
    );
    println!(
        "policy {} (sha256 {}); {source}",
        cfg.policy.file.display(),
        &p.sha256[..12]
    );
    if mode != Mode::Normal {
        println!("mode {}: the kill switch is thrown", mode.as_str());
    }
    match planned {
        crate::plan::Plan::Decide(eval) => {
            for (i, t) in eval.trace.iter().enumerate() {
                let window = t
                    .window
                    .map(|w| format!(" [window: {} approved, total {}]", w.count, w.total))
                    .unwrap_or_default();
                match &t.why_not {
                    None => println!("rule {:>2} {:?}: matched{window}", i + 1, t.rule),
                    Some(why) => println!("rule {:>2} {:?}: no — {why}{window}", i + 1, t.rule),
                }
            }
            println!(
                "decision: {} by {} — {}",
                eval.action, eval.rule, eval.reason
            );
        }
        crate::plan::Plan::Resend { seq, .. } => {
            let action = state.live.as_ref().map_or("?", |l| l.action.as_str());
            println!(
                "decision: {action}, already recorded (record {seq}, not yet confirmed) — sent \
                 again with its identical data"
            );
        }
        crate::plan::Plan::Wait { seq, reason } => {
            println!("decision: hold — record {seq} waits: {reason}");
        }
        crate::plan::Plan::Done { seq } => {
            let action = state.live.as_ref().map_or("?", |l| l.action.as_str());
            println!(
                "decision: {action}, already accepted by the server (record {seq}) — nothing to send"
            );
        }
    }
    Ok(())
}

/// What `ledger list` and `ledger verify` say when the daemon has not run yet.
fn no_ledger_yet(path: &Path) -> String {
    format!(
        "no ledger yet at {}: the daemon creates it when it first starts (`cosigner run`, or \
         `systemctl start cosigner`) and records decisions from its first cycle",
        path.display()
    )
}

fn open_ledger_read_only(cfg: &Config) -> Result<Ledger, Failure> {
    if !cfg.ledger.path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(no_ledger_yet(
            &cfg.ledger.path
        ))));
    }
    Ledger::open_read_only(&cfg.ledger.path).map_err(Failure::runtime)
}

fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ledger_list(config: ConfigArg, limit: usize, json: bool) -> CmdResult {
    let cfg = config.load()?;
    if !cfg.ledger.path.exists() {
        // Nothing recorded yet is not an error: say why the list is empty.
        eprintln!("{}", no_ledger_yet(&cfg.ledger.path));
        if json {
            println!("[]");
        }
        return Ok(());
    }
    let ledger = open_ledger_read_only(&cfg)?;
    let rows = ledger.list(limit).map_err(Failure::runtime)?;
    if json {
        return print_json(&rows);
    }
    // Chain names from the policy's [chains] table when it loads, else the built-in ones.
    let chains = policy::load(&cfg.policy.file)
        .map(|p| p.chains)
        .unwrap_or_default();
    println!(
        "{:>6}  {:<20}  {:>10}  {:<14}  {:<16}  {:>14}  {:<7}  {:<9}  {:<24}  REASON",
        "SEQ", "RECORDED", "TX", "CHAIN", "TO", "AMOUNT", "ACTION", "STATUS", "RULE"
    );
    let shown = rows.len();
    for r in rows {
        let status = match r.status {
            Status::Recorded => "recorded",
            Status::Submitted => "submitted",
            Status::Failed => "failed",
            Status::NotSent if r.dry_run => "dry-run",
            Status::NotSent => "-",
        };
        println!(
            "{:>6}  {:<20}  {:>10}  {:<14}  {:<16}  {:>14}  {:<7}  {:<9}  {:<24}  {}",
            r.seq,
            format_ms(r.recorded_at_ms),
            r.tx_id,
            r.chain_id
                .as_deref()
                .map_or("?".into(), |c| chains.label(c)),
            r.to.as_deref()
                .map_or("?".into(), crate::display::short_address),
            r.amount.as_deref().unwrap_or("?"),
            r.action,
            status,
            r.rule,
            r.status_message
                .as_deref()
                .map_or(r.reason.clone(), |m| format!("{} ({m})", r.reason))
        );
    }
    if shown > 0 {
        println!(
            "\nSEQ numbers every ledger record: decisions (listed here), submission outcomes, \
             collections and events (mode, policy) share one sequence, so the decisions skip the \
             others' numbers. `--json` shows full addresses."
        );
    }
    Ok(())
}

fn ledger_verify(config: ConfigArg) -> CmdResult {
    let cfg = config.load()?;
    let ledger = open_ledger_read_only(&cfg)?;
    let report = ledger.verify().map_err(Failure::runtime)?;
    let kinds = [
        ("decision", "decisions"),
        ("outcome", "submission outcomes"),
        ("collect", "collections"),
        ("event", "mode and policy events"),
    ]
    .iter()
    .map(|(k, words)| format!("{words} {}", report.by_kind.get(k).copied().unwrap_or(0)))
    .collect::<Vec<_>>()
    .join(", ");
    if report.problems.is_empty() {
        println!(
            "ledger {}: {} records ({kinds}), hash chain intact",
            ledger.path().display(),
            report.records
        );
        Ok(())
    } else {
        for p in &report.problems {
            println!("FAIL  {p}");
        }
        Err(Failure::runtime(anyhow::anyhow!(
            "ledger {} failed verification: {} problem(s) in {} records ({kinds})",
            ledger.path().display(),
            report.problems.len(),
            report.records
        )))
    }
}

#[cfg(feature = "dev-tools")]
async fn run_demo(a: DemoArgs) -> CmdResult {
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

async fn set_mode(a: ModeTarget, mode: Mode) -> CmdResult {
    let cfg = a.config.load()?;
    match Ledger::open(&cfg.ledger.path) {
        Ok(mut ledger) => {
            let detail = mode.event_detail("cosigner cli");
            ledger
                .record_event("mode", &detail)
                .map_err(Failure::runtime)?;
            println!(
                "mode {} recorded in {}; it applies when the daemon starts",
                mode.as_str(),
                cfg.ledger.path.display()
            );
            Ok(())
        }
        Err(crate::ledger::LedgerError::Locked { .. }) => {
            let key = match &a.api_key_file {
                Some(f) => read_password(f, true).map(|s| secrecy::ExposeSecret::expose_secret(&s).to_string())?,
                None => std::env::var("COSIGNER_API_KEY").map_err(|_| {
                    Failure::usage(anyhow::anyhow!(
                        "the daemon is running: give an operator API key with --api-key-file or COSIGNER_API_KEY \
                         (`cosigner apikey new` makes one)"
                    ))
                })?,
            };
            let mut addr = cfg.http.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let (path, body) = match mode {
                Mode::Normal => ("resume", String::new()),
                m => ("pause", serde_json::json!({"mode": m.as_str()}).to_string()),
            };
            if addr.port() == 0 {
                return Err(Failure::usage(anyhow::anyhow!(
                    "the daemon is running, but http.listen ({addr}) has port 0, so its operator \
                     API cannot be found: set a fixed port (or COSIGNER_HTTP__LISTEN to the \
                     address it logged at start)"
                )));
            }
            let url = format!("http://{addr}/v1/{path}");
            let resp = reqwest::Client::new()
                .post(&url)
                .basic_auth(key, Some(""))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .with_context(|| {
                    format!("cannot reach the daemon's operator API at {url} (http.listen)")
                })
                .map_err(Failure::runtime)?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "the daemon refused: HTTP {status}: {text}"
                )));
            }
            println!(
                "mode {} in force now (running daemon on {addr})",
                mode.as_str()
            );
            Ok(())
        }
        Err(e) => Err(Failure::usage(e)),
    }
}

fn policy_replay(config: ConfigArg, candidate: &Path) -> CmdResult {
    let cfg = config.load()?;
    let new = load_policy(candidate)?;
    let signer = Signer::load(&cfg.key.source).map_err(Failure::usage)?;
    let ledger = open_ledger_read_only(&cfg)?;
    let report =
        crate::replay::replay(&ledger, &new, signer.max_text_len()).map_err(Failure::runtime)?;
    println!(
        "replayed {} transaction(s) from {} under {} (sha256 {})",
        report.replayed,
        cfg.ledger.path.display(),
        candidate.display(),
        &new.sha256[..12]
    );
    if report.changes.is_empty() {
        println!("no decision would change");
        return Ok(());
    }
    println!(
        "{:>10}  {:<8}  {:<8}  {:<24}  REASON",
        "TX", "OLD", "NEW", "RULE"
    );
    for c in &report.changes {
        println!(
            "{:>10}  {:<8}  {:<8}  {:<24}  {}",
            c.tx_id, c.old, c.new, c.rule, c.reason
        );
    }
    println!("{} decision(s) would change", report.changes.len());
    Ok(())
}
