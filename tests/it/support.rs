//! Shared fixtures: the test key shard, an in-process sandbox, configs in temp directories, and
//! helpers to run the real binary.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Whether a test that needs libfaketime runs (see `crate::needs`).
pub(crate) use crate::needs::faketime_or_skip;
use cosigner::client::{ClientConfig, Lang, SignOrder};
pub(crate) use cosigner::domain::TxId;
use cosigner_sandbox::server::{self as sandbox, Sandbox, SandboxConfig, Scenario};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// The hot wallet withdrawals come from.
pub(crate) const HOT: &str = "TGGh3cGp9P21Ebvg9JitjHoeJaKqrg3bRg";
/// A treasury address the test policies allow.
pub(crate) const TREASURY: &str = "TFMQrPdFWuPzFRXb42sxB22ABCVL6xSopV";
/// A blocked address the test policies reject.
pub(crate) const BAD: &str = "TBadBun1ovFMiZzwmShhWvjr5B1bhoiKH7";
/// An address no rule mentions.
pub(crate) const STRANGER: &str = "TStrg5jgAgn9jVXqdagAmBka4A2u7n1ZXs";

/// Merchant number of the test vectors.
pub(crate) const MERCHANT: &str = "mer0test0vector0001";
/// PKCS#12 password of the test vectors.
pub(crate) const PFX_PASSWORD: &str = "1bitpaymer0test0vector0001";
/// API key the sandbox accepts.
pub(crate) const API_KEY: &str = "apikey0test";
/// API secret: a unique canary, so tests can prove it never leaks.
pub(crate) const API_SECRET: &str = "CANARY-secret-7c1f93ab55";

/// Path of a file in `tests/fixtures`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies a fixture key file into `dir` with mode 0600 (git keeps it 0644).
pub(crate) fn key_copy(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(fixture(name), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

/// Writes a file holding a secret, readable by its owner only (as secret files must be).
pub(crate) fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The merchant certificate of the fixtures.
pub(crate) fn cert() -> openssl::x509::X509 {
    openssl::x509::X509::from_pem(&std::fs::read(fixture("merchant-cert.pem")).unwrap()).unwrap()
}

/// The sandbox settings matching the fixtures.
pub(crate) fn sandbox_config() -> SandboxConfig {
    SandboxConfig {
        merchant_no: MERCHANT.into(),
        api_key: API_KEY.into(),
        api_secret: SecretString::from(API_SECRET),
        cert: cert(),
        sign_order: SignOrder::CaseInsensitive,
        max_skew: sandbox::DEFAULT_MAX_SKEW,
    }
}

/// An in-process sandbox on a free loopback port; cancel the token to stop it.
pub(crate) struct RunningSandbox {
    pub sandbox: Sandbox,
    pub url: String,
    pub stop: CancellationToken,
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a sandbox with `scenario` (and the default fixture credentials).
pub(crate) async fn start_sandbox(scenario: Scenario) -> RunningSandbox {
    start_sandbox_with(sandbox_config(), scenario).await
}

/// Starts a sandbox with explicit settings.
pub(crate) async fn start_sandbox_with(cfg: SandboxConfig, scenario: Scenario) -> RunningSandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sb = Sandbox::new(cfg, scenario);
    let stop = CancellationToken::new();
    tokio::spawn(sandbox::serve(listener, sb.clone(), stop.clone()));
    RunningSandbox {
        sandbox: sb,
        url,
        stop,
    }
}

/// Client settings for `url` with the fixture credentials and fast retries.
pub(crate) fn client_config(url: &str) -> ClientConfig {
    ClientConfig {
        base_url: reqwest::Url::parse(&format!("{url}/")).unwrap(),
        merchant_no: MERCHANT.into(),
        api_key: API_KEY.into(),
        api_secret: SecretString::from(API_SECRET),
        lang: Lang::En,
        timeout: Duration::from_secs(5),
        max_requests_per_second: std::num::NonZeroU32::new(1000).unwrap(),
        sign_order: SignOrder::CaseInsensitive,
        max_response_bytes: 1 << 20,
        max_retries: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_clock_skew: Duration::from_secs(30),
        ca_file: None,
    }
}

/// A pending item's JSON text.
pub(crate) fn item(id: TxId, from: &str, to: &str, amount: &str, chain: &str) -> String {
    serde_json::json!({"id": id, "fromAddress": from, "toAddress": to, "amount": amount, "chainId": chain})
        .to_string()
}

/// Writes a complete config into `dir` pointing at `base_url`, with `extra` TOML appended to the
/// sections by key replacement; returns its path. The key file is copied beside it.
pub(crate) fn write_config(dir: &Path, base_url: &str) -> PathBuf {
    key_copy(dir, "keytool-aes.pfx");
    std::fs::write(dir.join("policy.toml"), "default = \"hold\"\n").unwrap();
    let text = format!(
        r#"[api]
base_url = "{base_url}"
merchant_no = "{MERCHANT}"
api_key = "{API_KEY}"
api_secret = "{API_SECRET}"
timeout = "5s"
max_requests_per_second = 50

[key]
pfx_file = "keytool-aes.pfx"

[policy]
file = "policy.toml"

[ledger]
path = "ledger.db"
"#
    );
    let p = dir.join("cosigner.toml");
    std::fs::write(&p, text).unwrap();
    // It holds the API secret inline: `check` fails a config others can read.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The real binary.
pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cosigner"));
    c.env_remove("COSIGNER_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG");
    c
}

/// Runs the binary with `args` off the async runtime, and returns its output.
pub(crate) async fn run_bin(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap())
        .await
        .unwrap()
}

/// stdout and stderr together, for assertions.
pub(crate) fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A sandbox on a thread of its own (what `cosigner-sandbox serve` runs), stopped on drop: a
/// server the daemon under test reaches over TCP, that a test can cut as it would kill a process.
pub(crate) type SandboxProcess = cosigner_sandbox::Background;

/// Starts a sandbox (on port 0 unless `extra` has `--listen`) and waits for its
/// `listening on` line.
pub(crate) fn spawn_sandbox(extra: &[&str]) -> SandboxProcess {
    spawn_sandbox_with(API_SECRET, extra)
}

/// Starts a sandbox with a given API secret.
pub(crate) fn spawn_sandbox_with_secret(secret: &str) -> SandboxProcess {
    spawn_sandbox_with(secret, &[])
}

fn spawn_sandbox_with(secret: &str, extra: &[&str]) -> SandboxProcess {
    let cert = fixture("merchant-cert.pem");
    let mut args = vec!["--merchant-no", MERCHANT, "--api-key", API_KEY];
    args.extend(["--api-secret", secret, "--cert", cert.to_str().unwrap()]);
    args.extend(extra);
    spawn_sandbox_args(&args)
}

/// Starts a sandbox from `cosigner-sandbox serve` arguments (plus `--listen 127.0.0.1:0` unless
/// given) and returns once it accepts connections.
pub(crate) fn spawn_sandbox_args(args: &[&str]) -> SandboxProcess {
    cosigner_sandbox::Background::start(args)
        .unwrap_or_else(|e| panic!("sandbox did not start: {e}"))
}

/// A loopback port free at the moment of asking, for a listener that must keep its port across
/// restarts (port 0 picks another each time).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces the first `from` in the file at `path` with `to`; `from` must be there.
pub(crate) fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub(crate) async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Short, jitter-free timings for in-process daemons.
pub(crate) fn timings(poll_ms: u64, collect_ms: u64) -> cosigner::daemon::Timings {
    cosigner::daemon::Timings {
        poll_interval: Duration::from_millis(poll_ms),
        poll_jitter: Duration::ZERO,
        collect_interval: Duration::from_millis(collect_ms),
        collect_jitter: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(5),
    }
}

/// A daemon running in this process on a free loopback port.
pub(crate) struct InProcessDaemon {
    /// `http://127.0.0.1:PORT` of its listener.
    pub base: String,
    /// Cancel to stop it.
    pub stop: CancellationToken,
    /// Its task.
    pub task: tokio::task::JoinHandle<()>,
}

impl InProcessDaemon {
    /// Stops it and waits for it to finish.
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Loads `cfg_path` and runs the daemon it describes with `timings`.
pub(crate) async fn run_daemon(
    cfg_path: &Path,
    timings: cosigner::daemon::Timings,
) -> InProcessDaemon {
    let cfg =
        cosigner::config::Config::load_with(cfg_path, &cosigner::config::Environment::default())
            .unwrap();
    let stop = CancellationToken::new();
    let parts = cosigner::daemon::build(&cfg, cosigner::daemon::Options::default(), stop.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(cosigner::daemon::run_with(
        parts,
        listener,
        timings,
        stop.clone(),
        CancellationToken::new(),
    ));
    InProcessDaemon { base, stop, task }
}

/// An engine over `dir` (key, policy written from `policy_text`, ledger) talking to `url`.
pub(crate) fn engine_for(
    dir: &Path,
    url: &str,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
) -> cosigner::cycle::Engine {
    engine_with_client(dir, client_config(url), policy_text, settings)
}

/// [`engine_for`] with client settings of the test's own.
pub(crate) fn engine_with_client(
    dir: &Path,
    client: ClientConfig,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
) -> cosigner::cycle::Engine {
    engine_with_clock(
        dir,
        client,
        policy_text,
        settings,
        cosigner::clock::Clock::system(),
    )
}

/// [`engine_with_client`] whose ledger (and so whose cycle) reads `clock`; the client, which
/// the sandbox checks against its own clock, keeps the system's.
pub(crate) fn engine_with_clock(
    dir: &Path,
    client: ClientConfig,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
    clock: cosigner::clock::Clock,
) -> cosigner::cycle::Engine {
    let ledger = cosigner::ledger::LedgerHandle::sqlite(
        open_ledger(&dir.join("ledger.db")).with_clock(clock),
    );
    engine_on(dir, client, policy_text, settings, ledger)
}

/// An engine over `ledger` (either back end), with the policy `policy_text` written into `dir`
/// and the test key.
pub(crate) fn engine_on(
    dir: &Path,
    client: ClientConfig,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
    ledger: cosigner::ledger::LedgerHandle,
) -> cosigner::cycle::Engine {
    engine_built(dir, client, policy_text, settings, ledger, |b| b)
}

/// [`engine_on`], with `more` applied to the builder last.
pub(crate) fn engine_built(
    dir: &Path,
    client: ClientConfig,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
    ledger: cosigner::ledger::LedgerHandle,
    more: impl FnOnce(cosigner::cycle::EngineBuilder) -> cosigner::cycle::EngineBuilder,
) -> cosigner::cycle::Engine {
    let client = cosigner::client::Client::new(client).unwrap();
    engine_from(dir, client, policy_text, settings, ledger, more)
}

/// [`engine_on`] whose client reads the ledger's clock too (its requests' `TimeStamp`, its
/// judgement of the server's `Date`), as the daemon's does.
pub(crate) fn engine_on_ledger_clock(
    dir: &Path,
    client: ClientConfig,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
    ledger: cosigner::ledger::LedgerHandle,
) -> cosigner::cycle::Engine {
    let client = cosigner::client::Client::new(client)
        .unwrap()
        .with_clock(ledger.clock().clone());
    engine_from(dir, client, policy_text, settings, ledger, |b| b)
}

fn engine_from(
    dir: &Path,
    client: cosigner::client::Client,
    policy_text: &str,
    settings: cosigner::cycle::PollSettings,
    ledger: cosigner::ledger::LedgerHandle,
    more: impl FnOnce(cosigner::cycle::EngineBuilder) -> cosigner::cycle::EngineBuilder,
) -> cosigner::cycle::Engine {
    use std::sync::Arc;
    let ppath = dir.join("policy.toml");
    std::fs::write(&ppath, policy_text).unwrap();
    let pfx = dir.join("keytool-aes.pfx");
    if !pfx.exists() {
        key_copy(dir, "keytool-aes.pfx");
    }
    let builder = cosigner::cycle::Engine::builder(
        Arc::new(client),
        Arc::new(
            cosigner::signer::Signer::load(&cosigner::signer::KeySource {
                pfx_file: pfx,
                password: SecretString::from(PFX_PASSWORD),
                allow_insecure_permissions: false,
            })
            .unwrap(),
        ),
        ledger,
        Arc::new(cosigner::policy::load(&ppath).unwrap()),
        Arc::new(cosigner::metrics::Metrics::new().unwrap()),
    )
    .settings(settings);
    more(builder).build()
}

/// Opens the ledger at `path` for writing. A test that drops an engine mid-cycle (a crash) and
/// starts another at once may find the file still held for a moment: a ledger call already on
/// the blocking pool finishes, and closes the file, after the engine is gone. So a held file is
/// waited for, up to 10 s.
pub(crate) fn open_ledger(path: &Path) -> cosigner::ledger::SqliteLedger {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match cosigner::ledger::SqliteLedger::open(path) {
            Err(cosigner::ledger::LedgerError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other.unwrap(),
        }
    }
}

/// Cycle settings for in-process engines: small pages, so that paging is exercised.
pub(crate) fn small_pages() -> cosigner::cycle::PollSettings {
    cosigner::cycle::PollSettings {
        page_size: 10,
        max_in_flight: 4,
        dry_run: false,
        ..cosigner::cycle::PollSettings::default()
    }
}

/// A scenario of `items` with no faults.
pub(crate) fn scenario(items: Vec<String>) -> Scenario {
    Scenario {
        pending: items,
        faults: cosigner_sandbox::server::Faults::default(),
    }
}

/// Every decision in `e`'s ledger, oldest first.
pub(crate) async fn rows(e: &cosigner::cycle::Engine) -> Vec<cosigner::ledger::DecisionRow> {
    let mut r = e.ledger().list(10_000).await.unwrap();
    r.reverse();
    r
}

/// The ids the sandbox took an approval for, in order.
pub(crate) fn approved_ids(sb: &RunningSandbox) -> Vec<TxId> {
    let mut v: Vec<TxId> = sb
        .sandbox
        .decisions()
        .iter()
        .filter(|d| d.status == 1)
        .map(|d| d.id)
        .collect();
    v.sort_unstable();
    v
}

/// Approve/reject requests that reached the sandbox, faulted ones included.
pub(crate) fn approve_requests(sb: &RunningSandbox) -> u64 {
    sb.sandbox
        .stats()
        .requests
        .get(cosigner::client::APPROVE)
        .copied()
        .unwrap_or(0)
}

/// `cosigner run --once --config CFG` with the wall clock moved by `offset` (libfaketime, e.g.
/// `"-1h"`, `"+25s"`; the monotonic clock is left alone), off the async runtime.
pub(crate) async fn run_once_at(offset: &str, cfg: &str) -> Output {
    let (offset, cfg) = (offset.to_string(), cfg.to_string());
    tokio::task::spawn_blocking(move || {
        Command::new("faketime")
            .args(["-f", &offset, env!("CARGO_BIN_EXE_cosigner")])
            .args(["run", "--once", "--config", &cfg])
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Adds pending items (their JSON texts) to the sandbox process at `url`.
pub(crate) async fn post_pending(url: &str, items: Vec<String>) {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|i| serde_json::from_str(i).unwrap())
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{url}/_sandbox/pending"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
}

/// The decisions the sandbox process at `url` accepted.
pub(crate) async fn sandbox_decisions(url: &str) -> Vec<serde_json::Value> {
    reqwest::get(format!("{url}/_sandbox/decisions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A TCP proxy to `upstream` that passes requests through and rewrites every answer (its headers
/// gathered whole first) with `rewrite(text, date_at)`, where `date_at` is the byte range of its `Date` header
/// line (the `\r\n` before it included), if the chunk has one; returns its `http://` URL.
pub(crate) async fn date_rewriting_proxy(
    upstream: String,
    rewrite: fn(&str, Option<std::ops::Range<usize>>) -> String,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&up).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 1 << 16];
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    // A response's headers may arrive in pieces: rewrite them whole.
                    if pending.starts_with(b"HTTP/")
                        && !pending.windows(4).any(|w| w == b"\r\n\r\n")
                    {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    pending.clear();
                    let lower = text.to_ascii_lowercase();
                    let date_at = lower.find("\r\ndate:").map(|i| {
                        let end = lower[i + 2..]
                            .find("\r\n")
                            .map_or(text.len(), |j| i + 2 + j);
                        i..end
                    });
                    if cw
                        .write_all(rewrite(&text, date_at).as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    url
}

/// Transaction ids from their numbers, in order: what a test expects to see.
pub(crate) fn ids(numbers: impl IntoIterator<Item = u64>) -> Vec<TxId> {
    numbers.into_iter().map(TxId::new).collect()
}

/// Asserts that `e`'s ledger holds exactly these decisions, oldest first: (id, action, rule,
/// reason), each exactly as recorded.
pub(crate) async fn assert_decisions(
    e: &cosigner::cycle::Engine,
    expected: &[(u64, cosigner::domain::Action, &str, &str)],
) {
    let recorded = rows(e).await;
    let got: Vec<(u64, cosigner::domain::Action, &str, &str)> = recorded
        .iter()
        .map(|r| (r.tx_id.get(), r.action, r.rule.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(got, expected);
}

/// The value of the metric line `name` (exactly, labels included) at `base`/metrics.
pub(crate) async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
