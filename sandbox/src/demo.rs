//! `cosigner-sandbox demo`: the daemon's main job against the built-in sandbox, end to end. It makes a
//! throwaway key shard, writes a config and a policy, seeds the sandbox with a realistic mix of
//! withdrawals (and a trickle of new ones), runs the daemon with short intervals, and prints each
//! decision as it happens, then a summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::{self as sandbox, Sandbox, SandboxConfig, Scenario};
use cosigner::config::{Config, Environment};
use cosigner::cycle::DecisionEvent;
use cosigner::daemon::{self, DaemonError, Options, Timings};
use cosigner::display::{ChainNames, short_address};
use cosigner::domain::{Action, TxId};
use cosigner::ledger::SqliteLedger;

const MERCHANT: &str = "merDEMO0000000000001";
const API_KEY: &str = "demo-api-key";
const HOT: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
const TREASURY_TRON: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
const TREASURY_EVM: &str = "0x8617E340B3D01FA5F11F306F4090FD50E238070D";
const EXCHANGE_TRON: &str = "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G";
const EXCHANGE_EVM: &str = "0x28C6c06298d514Db089934071355E5743bf21d60";
const BLOCKED: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";
const STRANGER: &str = "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8";

const POLICY: &str = r#"# The demo merchant's policy.
default = "hold"

[lists]
treasury = ["TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV", "0x8617E340B3D01FA5F11F306F4090FD50E238070D"]
exchanges = ["TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G", "0x28C6c06298d514Db089934071355E5743bf21d60"]
blocked = ["TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7", "0x000000000000000000000000000000000000dEaD"]

[[rule]]
name = "blocked destinations"
action = "reject"
to = ["@blocked"]

[[rule]]
name = "treasury sweeps"
action = "approve"
chains = ["1", "56", "195"]
to = ["@treasury"]
max_amount = "50000"
window = "24h"
max_total = "100000"

[[rule]]
name = "exchange deposits"
action = "approve"
to = ["@exchanges"]
max_amount = "5000"
window = "1h"
max_count = 4

[guard]
window = "1h"
max_approvals = 50
"#;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// Files in the demo directory (one that appeared meanwhile is not overwritten either).
    #[error("demo files in {dir}: {error}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// `--dir` names a directory that already holds files.
    #[error(
        "demo directory {dir} is not empty: the demo writes a key shard, a config and a ledger \
         there and never overwrites a file; give an empty or new directory"
    )]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// Making the throwaway key.
    #[error("cannot make the demo key: {0}")]
    Key(openssl::error::ErrorStack),
    /// The configuration the demo wrote.
    #[error("demo configuration: {0}")]
    Config(cosigner::config::ConfigError),
    /// The daemon.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// No randomness for the demo's secret.
    #[error(transparent)]
    Random(#[from] cosigner::random::RandomError),
}

// By hand rather than `#[from]`, which would also make the inner error the `source`: the
// messages print it already, and a cause is said once.
impl From<openssl::error::ErrorStack> for DemoError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::Key(e)
    }
}

impl From<cosigner::config::ConfigError> for DemoError {
    fn from(e: cosigner::config::ConfigError) -> Self {
        Self::Config(e)
    }
}

/// What the demo did, for its summary (and its test).
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// Decisions printed, by action.
    pub(crate) approved: u64,
    /// Rejections.
    pub(crate) rejected: u64,
    /// Holds.
    pub(crate) held: u64,
    /// Decisions the sandbox accepted with verified `data`.
    pub(crate) accepted_by_server: usize,
    /// Requests the sandbox refused.
    pub(crate) refused_by_server: usize,
    /// Collections the sandbox accepted.
    pub(crate) collections: usize,
    /// Whether `ledger verify` passed.
    pub(crate) ledger_intact: bool,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// Stop by itself after this long (else at Ctrl-C).
    pub(crate) duration: Option<Duration>,
    /// Directory for the config, key and ledger (a fresh one under the temp dir when `None`).
    pub(crate) dir: Option<PathBuf>,
    /// Pending cycle interval.
    pub(crate) poll_interval: Duration,
    /// Keep the files of a fresh temporary directory at exit (a `dir` given is always kept).
    pub(crate) keep: bool,
}

/// How the operator runs the demo again, and `cosigner` on its ledger: the names `PATH` finds
/// (`cosigner-sandbox demo`, `cosigner`); for a cargo build, as after the README's `cargo demo`,
/// `cargo demo` and `cargo run --release --` (`cargo run --` for a debug build); else the
/// binaries' full paths.
#[must_use]
pub(crate) fn commands() -> (String, String) {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
    };
    let Some(exe) = exe else {
        return ("cosigner-sandbox demo".into(), "cosigner".into());
    };
    let same_on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|d| d.join("cosigner-sandbox").canonicalize().ok().as_ref() == Some(&exe))
    });
    let mut parts = exe.iter().rev().skip(1);
    let profile = match (
        parts.next().and_then(|p| p.to_str()),
        parts.next().and_then(|p| p.to_str()),
    ) {
        (Some(p @ ("release" | "debug")), Some("target")) => Some(p),
        _ => None,
    };
    let demo = match (same_on_path, profile) {
        (true, _) => "cosigner-sandbox demo".to_string(),
        (false, Some(_)) => "cargo demo".to_string(),
        (false, None) => format!("{} demo", exe.display()),
    };
    let cosigner = match (on_path("cosigner"), profile) {
        (true, _) => "cosigner".to_string(),
        (false, Some("release")) => "cargo run --release --".to_string(),
        (false, Some(_)) => "cargo run --".to_string(),
        (false, None) => exe.with_file_name("cosigner").display().to_string(),
    };
    (demo, cosigner)
}

/// Removes the demo's temporary directory when dropped, however the demo ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn item(id: TxId, to: &str, amount: &str, chain: &str) -> String {
    json!({"id": id, "fromAddress": HOT, "toAddress": to, "amount": amount, "chainId": chain})
        .to_string()
}

/// The opening mix: something for every rule and every reason to hold.
fn opening_mix() -> Vec<String> {
    vec![
        item(TxId::new(1001), TREASURY_TRON, "1250.00", "195"),
        item(TxId::new(1002), EXCHANGE_TRON, "800", "195"),
        item(TxId::new(1003), BLOCKED, "75.5", "195"),
        item(TxId::new(1004), STRANGER, "20", "195"),
        item(TxId::new(1005), &TREASURY_EVM.to_lowercase(), "2.5", "1"),
        item(TxId::new(1006), EXCHANGE_EVM, "9000", "56"),
        item(
            TxId::new(1007),
            &TREASURY_TRON.replace('o', "\u{043e}"),
            "500",
            "195",
        ),
        item(TxId::new(1008), EXCHANGE_TRON, "1e3", "195"),
        item(TxId::new(1009), TREASURY_TRON, "60000", "195"),
        item(TxId::new(1010), EXCHANGE_EVM, "150", "56"),
    ]
}

/// New withdrawals arriving during the demo.
fn trickle(n: u64) -> String {
    let id = TxId::new(2000 + n);
    match n % 4 {
        0 => item(id, EXCHANGE_TRON, &format!("{}.25", 100 + n * 7), "195"),
        1 => item(id, TREASURY_TRON, &format!("{}", 300 + n * 11), "195"),
        2 => item(id, STRANGER, "42", "195"),
        _ => item(id, EXCHANGE_EVM, &format!("{}", 50 + n), "56"),
    }
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        dir: dir.to_owned(),
        error: source,
    }
}

/// Makes an RSA-2048 key shard like 1BitPay's: PKCS#12, alias `1BitPay`, the default password.
fn make_key(dir: &Path) -> Result<(PathBuf, X509), DemoError> {
    let pkey = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "cosigner demo merchant")?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = BigNum::from_u32(1)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&pkey)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(30)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(&pkey, MessageDigest::sha256())?;
    let cert = b.build();
    let p12 = Pkcs12::builder()
        .name("1BitPay")
        .pkey(&pkey)
        .cert(&cert)
        .build2(&format!("1bitpay{MERCHANT}"))?;
    let path = dir.join("merchant.pfx");
    write_private(&path, &p12.to_der()?).map_err(io_err(dir))?;
    Ok((path, cert))
}

/// Writes a new file, private to this user; an existing file is an error, never overwritten
/// (`--dir` could name where a real key shard lives).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn print_event(out: &mut impl Write, e: &DecisionEvent, chains: &ChainNames) {
    let now = humantime::format_rfc3339_seconds(cosigner::clock::Clock::system().now()).to_string();
    let time = now.get(11..19).unwrap_or(&now);
    let _ = writeln!(
        out,
        "{time}  {:>6}  {:<12}  {:>12}  {:<16}  {:<8}  {:<22}  {}",
        e.tx_id,
        e.chain.as_deref().map_or("?".into(), |c| chains.label(c)),
        e.amount.as_deref().unwrap_or("?"),
        short_address(e.to.as_deref().unwrap_or("?")),
        e.action.as_str().to_uppercase(),
        e.rule,
        e.reason
    );
    let _ = out.flush();
}

/// Runs the demo until `stop` (or the duration), printing to `out`.
pub(crate) async fn run(
    opts: DemoOptions,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    out: &mut (impl Write + Send),
) -> Result<Summary, DemoError> {
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "cosigner-demo-{}-{}",
            cosigner::clock::Clock::system().now_ms(),
            std::process::id()
        )),
    };
    let has_files = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if has_files {
        return Err(DemoError::NotEmpty { dir });
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let removal = RemoveOnDrop((opts.dir.is_none() && !opts.keep).then(|| dir.clone()));
    let (pfx, cert) = make_key(&dir)?;
    let secret = format!("demo-secret-{:016x}", cosigner::random::u64()?);

    let sb = Sandbox::new(
        SandboxConfig {
            merchant_no: MERCHANT.into(),
            api_key: API_KEY.into(),
            api_secret: SecretString::from(secret.clone()),
            cert,
            sign_order: Default::default(),
            max_skew: sandbox::DEFAULT_MAX_SKEW,
        },
        Scenario {
            pending: opening_mix(),
            faults: Default::default(),
        },
    );
    let sb_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err(&dir))?;
    let sb_addr = sb_listener.local_addr().map_err(io_err(&dir))?;
    let sb_stop = CancellationToken::new();
    tokio::spawn(sandbox::serve(sb_listener, sb.clone(), sb_stop.clone()));

    write_private(&dir.join("api_secret"), secret.as_bytes()).map_err(io_err(&dir))?;
    write_private(&dir.join("policy.toml"), POLICY.as_bytes()).map_err(io_err(&dir))?;
    let config_path = dir.join("cosigner.toml");
    let config = format!(
        "# Written by `cosigner-sandbox demo`.\n[api]\nbase_url = \"http://{sb_addr}\"\nmerchant_no = \"{MERCHANT}\"\n\
         api_key = \"{API_KEY}\"\napi_secret_file = \"api_secret\"\nmax_requests_per_second = 50\n\n\
         [key]\npfx_file = \"{}\"\n\n[poll]\ninterval = \"{}ms\"\njitter = \"0s\"\n\n[collect]\n\
         interval = \"5s\"\njitter = \"0s\"\n\n[policy]\nfile = \"policy.toml\"\n\n[ledger]\n\
         path = \"ledger.db\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        pfx.display(),
        opts.poll_interval.as_millis()
    );
    write_private(&config_path, config.as_bytes()).map_err(io_err(&dir))?;
    let cfg = Config::load_with(&config_path, &Environment::default())?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let parts = daemon::build(
        &cfg,
        Options {
            dry_run: false,
            events: Some(tx),
            reload: None,
            pause_signal: None,
        },
        shutdown.clone(),
    )
    .await?;
    let chains = parts.engine().policy().chains.clone();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err(&dir))?;
    let metrics_addr = metrics_listener.local_addr().map_err(io_err(&dir))?;

    let _ = writeln!(out, "cosigner demo");
    let _ = writeln!(out, "  sandbox (a strict local 1BitPay)  http://{sb_addr}");
    let _ = writeln!(
        out,
        "  metrics and health                 http://{metrics_addr}/metrics  /readyz"
    );
    let _ = writeln!(
        out,
        "  config, policy, key and ledger     {}",
        dir.display()
    );
    let _ = writeln!(
        out,
        "  polling every {}, collecting every 5s; new withdrawals arrive every few seconds. {}\n",
        humantime::format_duration(opts.poll_interval),
        match opts.duration {
            Some(d) => format!(
                "Stops after {} (or at Ctrl-C).",
                humantime::format_duration(d)
            ),
            None => "Runs until Ctrl-C.".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "{:<8}  {:>6}  {:<12}  {:>12}  {:<16}  {:<8}  {:<22}  REASON",
        "TIME", "TX", "CHAIN", "AMOUNT", "TO", "DECISION", "RULE"
    );

    let timings = Timings {
        poll_interval: opts.poll_interval,
        poll_jitter: Duration::ZERO,
        collect_interval: Duration::from_secs(5),
        collect_jitter: Duration::ZERO,
        ..Timings::from_config(&cfg)
    };
    let ledger_path = cfg.ledger.path.clone();
    let daemon_task = tokio::spawn(daemon::run_with(
        parts,
        metrics_listener,
        timings,
        shutdown.clone(),
        hard_stop,
    ));

    // New withdrawals keep arriving, a couple every few seconds.
    let feeder = {
        let sb = sb.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut every = tokio::time::interval(Duration::from_secs(3));
            every.tick().await;
            while n < 40 {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                sb.add_pending([trickle(n), trickle(n + 1)]);
                n += 2;
            }
        })
    };

    let mut summary = Summary::default();
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(e) = rx.recv() => {
                match e.action {
                    Action::Approve => summary.approved += 1,
                    Action::Reject => summary.rejected += 1,
                    Action::Hold => summary.held += 1,
                }
                print_event(out, &e, &chains);
            }
            _ = stop.cancelled() => break,
            _ = &mut deadline => break,
        }
    }
    shutdown.cancel();
    let _ = feeder.await;
    let _ = daemon_task.await;
    while let Ok(e) = rx.try_recv() {
        print_event(out, &e, &chains);
    }
    sb_stop.cancel();

    summary.accepted_by_server = sb.decisions().len();
    summary.refused_by_server = sb.rejections().len();
    summary.collections = sb.collects().len();
    summary.ledger_intact = SqliteLedger::open_read_only(&ledger_path)
        .and_then(|l| l.verify())
        .map(|r| r.problems.is_empty())
        .unwrap_or(false);
    let _ = writeln!(
        out,
        "\nsummary: {} approved, {} rejected, {} held for a person",
        summary.approved, summary.rejected, summary.held
    );
    let _ = writeln!(
        out,
        "  the sandbox accepted {} signed decisions and {} collections, each `data` verified against \
         the merchant certificate; it refused {} request(s)",
        summary.accepted_by_server, summary.collections, summary.refused_by_server
    );
    let _ = writeln!(
        out,
        "  ledger {}: hash chain {}",
        ledger_path.display(),
        if summary.ledger_intact {
            "intact"
        } else {
            "BROKEN"
        }
    );
    let (demo, cmd) = commands();
    if removal.0.is_some() {
        let _ = writeln!(
            out,
            "  removed {} (run `{demo} --keep` to keep the files and look closer with \
             `{cmd} ledger list --config <dir>/cosigner.toml`)",
            dir.display()
        );
    } else {
        let _ = writeln!(
            out,
            "  look closer: {cmd} ledger list --config {}",
            config_path.display()
        );
        let _ = writeln!(
            out,
            "               {cmd} ledger verify --config {}",
            config_path.display()
        );
    }
    Ok(summary)
}
