//! Configuration: one TOML file plus `COSIGNER_<SECTION>__<KEY>` overrides, validated once at load
//! into typed settings. Secrets come inline, from `*_file` keys, or from systemd credentials.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::client::{ClientConfig, Lang, SignOrder};
use crate::signer::{KeySource, default_password};

/// Where the config is looked for when neither `--config` nor `COSIGNER_CONFIG` names it.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/cosigner/cosigner.toml";
/// Environment variable naming the config file.
pub(crate) const CONFIG_ENV: &str = "COSIGNER_CONFIG";
/// Prefix of per-key environment overrides (`COSIGNER_API__TIMEOUT=30s`).
pub(crate) const ENV_PREFIX: &str = "COSIGNER_";
/// `COSIGNER_` variables that are not key overrides: the config file, the operator API key of
/// `pause`/`resume`, and (in a build with `test-hooks` only) the test and benchmark knobs.
pub(crate) const ENV_NOT_KEYS: &[&str] = &[
    CONFIG_ENV,
    "COSIGNER_API_KEY",
    #[cfg(feature = "test-hooks")]
    "COSIGNER_FAILPOINT",
    #[cfg(feature = "test-hooks")]
    "COSIGNER_BENCH_TXS",
    #[cfg(feature = "test-hooks")]
    "COSIGNER_CRASH_KILLS",
    #[cfg(feature = "test-hooks")]
    "COSIGNER_IDLE_SECS",
];
/// Keys whose value is text to be used exactly as written, also when it comes from the
/// environment.
const TEXT_KEYS: &[&str] = &[
    "api.base_url",
    "api.ca_file",
    "api.merchant_no",
    "api.api_key",
    "api.api_secret",
    "api.api_secret_file",
    "key.pfx_file",
    "key.password_file",
    "policy.file",
    "ledger.path",
    "ledger.url",
    "ledger.password_file",
    "ledger.name",
    "http.listen",
    "http.api_keys_file",
    "control.pause_file",
    "control.socket",
];

/// Every key of the configuration, for naming the nearest one to a mistyped variable; a test
/// checks it against the keys the `Raw*` structs accept (another, that the example
/// configuration shows each of those).
const KEYS: &[&str] = &[
    "api.base_url",
    "api.ca_file",
    "api.merchant_no",
    "api.api_key",
    "api.api_secret",
    "api.api_secret_file",
    "api.lang",
    "api.timeout",
    "api.max_requests_per_second",
    "api.sign_order",
    "api.max_response_bytes",
    "api.max_retries",
    "api.max_in_flight",
    "api.max_clock_skew",
    "key.pfx_file",
    "key.password_file",
    "key.allow_insecure_permissions",
    "poll.interval",
    "poll.page_size",
    "poll.jitter",
    "poll.shutdown_timeout",
    "poll.max_items",
    "poll.max_item_bytes",
    "poll.cycle_timeout",
    "collect.enabled",
    "collect.interval",
    "collect.jitter",
    "collect.main",
    "collect.tokens",
    "policy.file",
    "policy.dry_run",
    "ledger.path",
    "ledger.url",
    "ledger.password_file",
    "ledger.name",
    "http.listen",
    "http.api_keys_file",
    "http.max_requests_per_second",
    "http.max_connections",
    "http.header_read_timeout",
    "http.metrics_auth",
    "control.pause_file",
    "control.socket",
    "callbacks.enabled",
    "log.format",
    "log.level",
];
/// Credential names looked up in `$CREDENTIALS_DIRECTORY` when a secret is not configured.
pub(crate) const CRED_API_SECRET: &str = "api_secret";
/// Credential name of the PKCS#12 file.
pub(crate) const CRED_PFX: &str = "merchant.pfx";
/// Credential name of the PKCS#12 password.
pub(crate) const CRED_PFX_PASSWORD: &str = "pfx_password";
/// Credential name of the PostgreSQL ledger's password.
pub(crate) const CRED_PG_PASSWORD: &str = "pg_password";

/// Default `api.timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `api.max_requests_per_second`.
pub(crate) const DEFAULT_MAX_RPS: u32 = 5;
/// Default `api.max_response_bytes` (1 MiB).
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Default `api.max_retries`.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default `api.max_clock_skew`: how far ahead of the server's clock approvals still go out.
pub(crate) const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Default `api.max_in_flight`.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Default `poll.interval`: the reference recommends polling every 2 minutes.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(120);
/// Default `poll.page_size`.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 20;
/// Default `collect.interval`: the reference recommends collecting every 5 minutes.
pub(crate) const DEFAULT_COLLECT_INTERVAL: Duration = Duration::from_secs(300);
/// Default `poll.jitter` and `collect.jitter`: a small random delay so that restarts do not
/// align every request of the fleet on the same second.
pub(crate) const DEFAULT_JITTER: Duration = Duration::from_millis(500);
/// Default `poll.shutdown_timeout`.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) use crate::cycle::{DEFAULT_MAX_ITEM_BYTES, DEFAULT_MAX_ITEMS};
/// Smallest `poll.max_item_bytes` accepted: a real item must always fit.
pub(crate) const MIN_MAX_ITEM_BYTES: usize = 512;
/// Default `ledger.path`.
pub(crate) const DEFAULT_LEDGER_PATH: &str = "/var/lib/cosigner/ledger.db";
/// Default `http.listen`.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9184";
/// Largest `poll.page_size` accepted.
pub(crate) const MAX_PAGE_SIZE: u32 = 500;

/// A configuration problem. Each message names the file (or variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file at the path.
    #[error("config file {path} not found (give --config, or set {CONFIG_ENV})")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Syntax, type or unknown-key errors, as figment found them.
    #[error("{0}")]
    Invalid(String),
    /// A value that parsed but is not acceptable.
    #[error("{origin}: key `{key}`: {message}")]
    Value {
        /// The file, or the environment variable.
        origin: String,
        /// The key, dotted (`api.timeout`).
        key: &'static str,
        /// What is wrong with the value.
        message: String,
    },
}

/// Which config file to load: the flag, then the environment, then the absolute default.
#[must_use]
pub(crate) fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"15s\", \"2m\" or \"24h\""
        ))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A string that also accepts a bare number (an environment override like `MERCHANT_NO=123`).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    Ok(Some(match Scalar::deserialize(d)? {
        Scalar::Text(s) => s,
        Scalar::Signed(i) => i.to_string(),
        Scalar::Unsigned(u) => u.to_string(),
    }))
}

fn lenient_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(lenient_string(d)?.map(SecretString::from))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    key: RawKey,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    collect: RawCollect,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    callbacks: RawCallbacks,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    pause_file: Option<PathBuf>,
    socket: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient_string")]
    merchant_no: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    api_key: Option<String>,
    #[serde(default, deserialize_with = "lenient_secret")]
    api_secret: Option<SecretString>,
    api_secret_file: Option<PathBuf>,
    lang: Option<Lang>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
    max_requests_per_second: Option<u32>,
    sign_order: Option<SignOrder>,
    max_response_bytes: Option<usize>,
    max_retries: Option<u32>,
    max_in_flight: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    max_clock_skew: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKey {
    pfx_file: Option<PathBuf>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    allow_insecure_permissions: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    #[serde(default, deserialize_with = "opt_duration")]
    interval: Option<Duration>,
    page_size: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    jitter: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    shutdown_timeout: Option<Duration>,
    max_items: Option<usize>,
    max_item_bytes: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    cycle_timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCollect {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    jitter: Option<Duration>,
    main: Option<bool>,
    tokens: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<PathBuf>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    path: Option<PathBuf>,
    url: Option<String>,
    password_file: Option<PathBuf>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    api_keys_file: Option<PathBuf>,
    max_requests_per_second: Option<u32>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    header_read_timeout: Option<Duration>,
    #[serde(default)]
    metrics_auth: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCallbacks {
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a secret was found, for `cosigner check` (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretOrigin {
    /// Written in the config file (or an environment override).
    Inline,
    /// Read from a file named by a `*_file` key.
    File(PathBuf),
    /// Read from `$CREDENTIALS_DIRECTORY`.
    Credential(PathBuf),
    /// The protocol's default (the PKCS#12 password).
    Default,
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Inline => write!(f, "inline"),
            SecretOrigin::File(p) => write!(f, "file {}", p.display()),
            SecretOrigin::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretOrigin::Default => write!(f, "default (\"1bitpay\" + merchant_no)"),
        }
    }
}

/// `[api]`: how to reach and authenticate to 1BitPay.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The client settings, secret included.
    pub client: ClientConfig,
    /// Approve/reject requests in flight at once.
    pub(crate) max_in_flight: usize,
    /// Where the API secret came from.
    pub(crate) secret_origin: SecretOrigin,
}

/// `[key]`: the key shard.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// How to open the PKCS#12.
    pub source: KeySource,
    /// Where the password came from.
    pub(crate) password_origin: SecretOrigin,
}

/// `[poll]`: the pending cycle.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time between cycles.
    pub interval: Duration,
    /// Items asked per page.
    pub(crate) page_size: u32,
    /// Up to this much random delay before each cycle.
    pub(crate) jitter: Duration,
    /// How long in-flight submissions may take to finish after a stop signal.
    pub(crate) shutdown_timeout: Duration,
    /// Most distinct items one listing may hold; beyond, the cycle decides nothing.
    pub(crate) max_items: usize,
    /// Largest raw JSON of one item; a larger item is held as malformed.
    pub(crate) max_item_bytes: usize,
    /// How long one cycle may take before it is abandoned.
    pub(crate) cycle_timeout: Duration,
}

/// `[collect]`: the sweep.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    /// Whether the daemon collects at all.
    pub(crate) enabled: bool,
    /// Time between sweeps.
    pub interval: Duration,
    /// Up to this much random delay before each sweep.
    pub(crate) jitter: Duration,
    /// Sweep main coins (`isMain` 1).
    pub(crate) main: bool,
    /// Sweep tokens (`isMain` 0).
    pub(crate) tokens: bool,
}

/// `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The policy file.
    pub(crate) file: PathBuf,
    /// Record decisions as dry runs and send nothing.
    pub(crate) dry_run: bool,
}

/// `[ledger]`.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The SQLite database holding every decision (unused when `postgres` is set).
    pub path: PathBuf,
    /// `ledger.url`: a PostgreSQL ledger shared by a pair instead of the SQLite file.
    pub postgres: Option<PostgresLedger>,
}

/// `ledger.url` with its password and this instance's name.
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    /// Where the database is, how to reach it, and the password (never shown).
    pub target: crate::ledger::postgres::PgTarget,
    /// This instance's name, shown to the others as the leader's (`ledger.name`).
    pub name: String,
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address of the metrics, health and operator listener.
    pub listen: SocketAddr,
    /// The operator API's keys (SHA-256 digests); the API refuses every call without it.
    pub api_keys: Option<crate::operator::ApiKeys>,
    /// Where the keys came from.
    pub api_keys_file: Option<PathBuf>,
    /// Operator API request budget.
    pub(crate) max_requests_per_second: u32,
    /// Serve `POST /callbacks/order`.
    pub(crate) callbacks: bool,
    /// `/metrics` needs an operator API key too.
    pub(crate) metrics_auth: bool,
    /// The listener's connection cap and header-read timeout.
    pub(crate) limits: crate::listener::Limits,
}

/// `[control]`: how the kill switch is kept.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where a pause the ledger could not record is kept (fsynced) across restarts.
    pub pause_file: PathBuf,
    /// The control socket as configured (`control.socket`); when unset, the daemon serves one
    /// only under `$RUNTIME_DIRECTORY` (see [`ControlConfig::socket_target`]).
    pub socket: Option<PathBuf>,
}

/// Where the control socket is served, and whether it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketTarget {
    /// The socket's path.
    pub path: PathBuf,
    /// Set by `control.socket`: a socket that cannot be bound is then a start error. The
    /// default one never stops the daemon from starting.
    pub configured: bool,
}

/// The control socket's file name in the runtime directory.
pub(crate) const CONTROL_SOCKET_NAME: &str = "control.socket";
/// Where systemd puts the unit's `RuntimeDirectory=cosigner`: where `cosigner pause` looks for the
/// daemon's control socket when neither `--socket`, `control.socket` nor `$RUNTIME_DIRECTORY`
/// names one.
pub(crate) const SYSTEMD_RUNTIME_DIRECTORY: &str = "/run/cosigner";

impl ControlConfig {
    /// The daemon's control socket: `control.socket`, else `control.socket` in
    /// `runtime_directory` (systemd's `$RUNTIME_DIRECTORY`, its first entry), else none. Never
    /// a default beside the ledger: a directory the daemon shares (a pair's test directory, a
    /// read-only state directory) must not stop it from starting.
    #[must_use]
    pub fn socket_target(
        &self,
        runtime_directory: Option<&std::ffi::OsStr>,
    ) -> Option<SocketTarget> {
        if let Some(path) = &self.socket {
            return Some(SocketTarget {
                path: path.clone(),
                configured: true,
            });
        }
        let dir = runtime_directory?.to_str()?.split(':').next()?;
        (!dir.is_empty()).then(|| SocketTarget {
            path: Path::new(dir).join(CONTROL_SOCKET_NAME),
            configured: false,
        })
    }
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub(crate) format: LogFormat,
    /// A tracing filter such as `info` or `cosigner=debug`; `RUST_LOG` overrides it.
    pub(crate) level: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[key]`.
    pub key: KeyConfig,
    /// `[poll]`.
    pub poll: PollConfig,
    /// `[collect]`.
    pub collect: CollectConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[ledger]`.
    pub ledger: LedgerConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[control]`.
    pub control: ControlConfig,
    /// `[log]`.
    pub log: LogConfig,
}

/// This host's name (the default `ledger.name`); `cosigner` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cosigner".to_string())
}

/// Reads the environment the loader consults; a struct so tests need not touch process state.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `COSIGNER_<SECTION>__<KEY>` overrides, as `(name, value)`.
    pub overrides: Vec<(String, String)>,
    /// `$CREDENTIALS_DIRECTORY`, set by systemd's `LoadCredential=`.
    pub credentials_directory: Option<PathBuf>,
}

impl Environment {
    /// The process environment.
    pub(crate) fn from_process() -> Self {
        Self {
            overrides: std::env::vars()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
                .collect(),
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

impl Config {
    /// Loads and validates the file at `path` with the process environment.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &Environment::from_process())
    }

    /// Loads and validates the file at `path` with the given environment.
    pub fn load_with(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source: e,
                });
            }
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let file_name = path.display().to_string();
        // Syntax first, on our own: figment's (toml's) message quotes the offending source line,
        // which may hold an inline secret with the typo. Line and column only.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Invalid(syntax_error(&file_name, &text, &e)));
        }
        let mut figment = Figment::new().merge(Toml::string(&text));
        for (name, _) in &env.overrides {
            if !name.contains("__") {
                return Err(ConfigError::Invalid(unmapped_variable(name)));
            }
        }
        for (name, value) in &env.overrides {
            let key = name
                .trim_start_matches(ENV_PREFIX)
                .to_ascii_lowercase()
                .replace("__", ".");
            // Text keys (secrets, ids, paths, addresses) take the value exactly as given: as a
            // TOML scalar, `0731` would lose its zero. Other values parse like TOML scalars: `5`
            // is a number, `true` a bool, `30s` a string.
            let value: figment::value::Value = if TEXT_KEYS.contains(&key.as_str()) {
                figment::value::Value::from(value.clone())
            } else {
                value
                    .parse()
                    .unwrap_or_else(|_| figment::value::Value::from(value.clone()))
            };
            figment = figment.merge(figment::providers::Serialized::global(&key, value));
        }
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment(&file_name, env, e)))?;
        Validator {
            file: file_name,
            dir,
            env,
        }
        .validate(raw, path)
    }
}

/// A TOML syntax error as `file: TOML syntax error at line L, column C: what`, without the
/// source text.
fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> String {
    let at = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    // The message names what was expected; keep its first line only, as later lines can
    // echo parts of the input.
    let what = e.message().lines().next().unwrap_or("invalid TOML");
    format!("config file {file}: TOML syntax error{at}: {what}")
}

/// True for `localhost` and loopback IP literals (bracketed IPv6 included).
#[must_use]
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The warning for an `http.listen` reachable from other hosts, if it is one: the operator
/// API and the metrics then face the network, guarded by keys alone.
#[must_use]
pub(crate) fn listen_warning(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "http.listen {listen} is reachable from other hosts: the operator API and the \
             metrics face the network; keep it on 127.0.0.1 unless a firewall guards it"
        )
    })
}

/// The error for a `COSIGNER_` variable that maps to no key (one underscore where two belong).
fn unmapped_variable(name: &str) -> String {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let want = squash(name.trim_start_matches(ENV_PREFIX));
    let nearest = KEYS
        .iter()
        .min_by_key(|k| edit_distance(&squash(k), &want))
        .copied()
        .unwrap_or("api.timeout");
    format!(
        "environment variable {name} maps to no key: overrides are {ENV_PREFIX}<SECTION>__<KEY>, \
         with two underscores between section and key; the nearest key is `{nearest}` \
         ({ENV_PREFIX}{})",
        nearest.to_ascii_uppercase().replace('.', "__")
    )
}

/// Levenshtein distance, for naming the nearest key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn override_name(env: &Environment, key: &str) -> Option<String> {
    let want = format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"));
    env.overrides
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&want))
        .map(|(k, _)| k.clone())
}

fn describe_figment(file: &str, env: &Environment, err: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in err {
        let key = e.path.join(".");
        // An unknown section or key is reported at its first wrong part (`pol` for
        // COSIGNER_POL__INTERVAL): find the variable that put it there.
        let from_env = override_name(env, &key).or_else(|| {
            let prefix = format!("{ENV_PREFIX}{}__", key.to_uppercase().replace('.', "__"));
            env.overrides
                .iter()
                .find(|(k, _)| !key.is_empty() && k.to_uppercase().starts_with(&prefix))
                .map(|(k, _)| k.clone())
        });
        let origin = match from_env {
            Some(var) => format!("environment variable {var}"),
            None => format!("config file {file}"),
        };
        if key.is_empty() {
            lines.push(format!("{origin}: {}", e.kind));
        } else {
            lines.push(format!("{origin}: key `{key}`: {}", e.kind));
        }
    }
    lines.join("; ")
}

struct Validator<'a> {
    file: String,
    dir: PathBuf,
    env: &'a Environment,
}

impl Validator<'_> {
    fn err(&self, key: &'static str, message: impl Into<String>) -> ConfigError {
        let origin = match override_name(self.env, key) {
            Some(var) => format!("environment variable {var}"),
            None => format!("config file {}", self.file),
        };
        ConfigError::Value {
            origin,
            key,
            message: message.into(),
        }
    }

    fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() { p } else { self.dir.join(p) }
    }

    fn credential(&self, name: &str) -> Option<PathBuf> {
        let p = self.env.credentials_directory.as_ref()?.join(name);
        p.exists().then_some(p)
    }

    /// A secret from a file the configuration names: private unless
    /// `key.allow_insecure_permissions`.
    fn read_secret_file(
        &self,
        key: &'static str,
        p: &Path,
        allow_insecure: bool,
    ) -> Result<SecretString, ConfigError> {
        read_secret_file(p, !allow_insecure).map_err(|e| self.err(key, e.to_string()))
    }

    /// A secret from `$CREDENTIALS_DIRECTORY`: systemd already makes it private to the service.
    fn read_credential(&self, key: &'static str, p: &Path) -> Result<SecretString, ConfigError> {
        read_secret_file(p, false).map_err(|e| self.err(key, e.to_string()))
    }

    /// The whole configuration, one section after the other (the first error wins).
    fn validate(self, raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let api = self.api(raw.api, raw.key.allow_insecure_permissions)?;
        let allow_insecure = raw.key.allow_insecure_permissions;
        let key = self.key(raw.key, &api.client.merchant_no)?;
        let ledger = self.ledger(raw.ledger, allow_insecure)?;
        Ok(Config {
            path: path.to_owned(),
            key,
            api,
            poll: self.poll(raw.poll)?,
            collect: self.collect(raw.collect)?,
            policy: self.policy(raw.policy),
            http: self.http(raw.http, raw.callbacks)?,
            control: self.control(raw.control, &ledger),
            ledger,
            log: self.log(raw.log)?,
        })
    }

    /// `[control]`: the pause file (default in the state directory, beside the SQLite ledger).
    fn control(&self, raw: RawControl, ledger: &LedgerConfig) -> ControlConfig {
        let state_dir = ledger
            .path
            .parent()
            .map_or_else(|| self.dir.clone(), Path::to_path_buf);
        ControlConfig {
            pause_file: raw
                .pause_file
                .map_or_else(|| state_dir.join("pause"), |p| self.resolve(p)),
            socket: raw
                .socket
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| self.resolve(p)),
        }
    }

    /// `[api]`; `allow_insecure` is `key.allow_insecure_permissions` (for `api.api_secret_file`).
    fn api(&self, api: RawApi, allow_insecure: bool) -> Result<ApiConfig, ConfigError> {
        let base_url = self.base_url(api.base_url)?;
        let merchant_no = nonempty(api.merchant_no).ok_or_else(|| {
            self.err(
                "api.merchant_no",
                "is required (your 1BitPay merchant number)",
            )
        })?;
        if !merchant_no.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(self.err("api.merchant_no", "must be letters and digits only"));
        }
        let api_key = nonempty(api.api_key).ok_or_else(|| {
            self.err(
                "api.api_key",
                "is required (create one under ApiKey in the merchant console)",
            )
        })?;
        if api_key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(self.err(
                "api.api_key",
                "must not contain spaces or control characters",
            ));
        }
        let (api_secret, secret_origin) =
            self.api_secret(api.api_secret, api.api_secret_file, allow_insecure)?;
        let timeout = api.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(self.err("api.timeout", "must be more than zero"));
        }
        let rps = NonZeroU32::new(api.max_requests_per_second.unwrap_or(DEFAULT_MAX_RPS))
            .ok_or_else(|| self.err("api.max_requests_per_second", "must be at least 1"))?;
        let max_response_bytes = api.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes < 1024 {
            return Err(self.err("api.max_response_bytes", "must be at least 1024"));
        }
        let max_in_flight = api.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 || max_in_flight > 64 {
            return Err(self.err("api.max_in_flight", "must be between 1 and 64"));
        }
        let max_retries = api.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        if max_retries > 10 {
            return Err(self.err("api.max_retries", "must be at most 10"));
        }
        let ca_file = match api.ca_file {
            Some(p) => {
                let p = self.resolve(p);
                let pem = std::fs::read(&p)
                    .map_err(|e| self.err("api.ca_file", format!("{}: {e}", p.display())))?;
                openssl::x509::X509::stack_from_pem(&pem)
                    .ok()
                    .filter(|certs| !certs.is_empty())
                    .ok_or_else(|| {
                        self.err(
                            "api.ca_file",
                            format!("{} holds no PEM certificate", p.display()),
                        )
                    })?;
                Some(p)
            }
            None => None,
        };
        let max_clock_skew = api.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW);
        if max_clock_skew < Duration::from_secs(1) {
            return Err(self.err("api.max_clock_skew", "must be at least 1s"));
        }
        let client = ClientConfig {
            base_url,
            merchant_no: merchant_no.clone(),
            api_key,
            api_secret,
            lang: api.lang.unwrap_or_default(),
            timeout,
            max_requests_per_second: rps,
            sign_order: api.sign_order.unwrap_or_default(),
            max_response_bytes,
            max_retries,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            max_clock_skew,
            ca_file,
        };
        Ok(ApiConfig {
            client,
            max_in_flight,
            secret_origin,
        })
    }

    /// `api.base_url`: an https:// URL (http:// to a loopback host only), as a directory.
    fn base_url(&self, base_url: Option<String>) -> Result<reqwest::Url, ConfigError> {
        // No default: a forgotten key must not send real approvals to the sandbox, or the
        // reverse.
        let base = base_url.ok_or_else(|| {
            self.err(
                "api.base_url",
                "is required (production: https://api.1bitpay.io)",
            )
        })?;
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| self.err("api.base_url", format!("{base:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.err(
                "api.base_url",
                format!("{base:?} must be an http:// or https:// URL with a host"),
            ));
        }
        if url.scheme() == "http" && !url.host_str().is_some_and(is_loopback_host) {
            return Err(self.err(
                "api.base_url",
                format!(
                    "{base:?} is plain http:// to another host: requests and approvals would \
                     cross the network unencrypted; use https:// (http:// is for a loopback \
                     host such as the sandbox)"
                ),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.err("api.base_url", "must not have a query or fragment"));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(url)
    }

    /// The API secret: inline, from `api.api_secret_file`, or from a systemd credential.
    fn api_secret(
        &self,
        inline: Option<SecretString>,
        file: Option<PathBuf>,
        allow_insecure: bool,
    ) -> Result<(SecretString, SecretOrigin), ConfigError> {
        Ok(match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "api.api_secret",
                    "give either api.api_secret or api.api_secret_file, not both",
                ));
            }
            (Some(s), None) => {
                if secrecy::ExposeSecret::expose_secret(&s).is_empty() {
                    return Err(self.err("api.api_secret", "is empty"));
                }
                (s, SecretOrigin::Inline)
            }
            (None, Some(f)) => {
                let f = self.resolve(f);
                (
                    self.read_secret_file("api.api_secret_file", &f, allow_insecure)?,
                    SecretOrigin::File(f),
                )
            }
            (None, None) => match self.credential(CRED_API_SECRET) {
                Some(p) => (
                    self.read_credential("api.api_secret", &p)?,
                    SecretOrigin::Credential(p),
                ),
                None => {
                    return Err(self.err(
                        "api.api_secret",
                        format!(
                            "is required: set api.api_secret, api.api_secret_file, or a systemd \
                             credential named {CRED_API_SECRET}"
                        ),
                    ));
                }
            },
        })
    }

    /// `[key]`; without a password, the default one of `merchant_no`.
    fn key(&self, key: RawKey, merchant_no: &str) -> Result<KeyConfig, ConfigError> {
        let pfx_file = match key.pfx_file {
            Some(p) => self.resolve(p),
            None => self.credential(CRED_PFX).ok_or_else(|| {
                self.err(
                    "key.pfx_file",
                    format!("is required (or a systemd credential named {CRED_PFX})"),
                )
            })?,
        };
        let (password, password_origin) = match key.password_file {
            Some(p) => {
                let p = self.resolve(p);
                (
                    self.read_secret_file("key.password_file", &p, key.allow_insecure_permissions)?,
                    SecretOrigin::File(p),
                )
            }
            None => match self.credential(CRED_PFX_PASSWORD) {
                Some(p) => (
                    self.read_credential("key.password_file", &p)?,
                    SecretOrigin::Credential(p),
                ),
                None => (default_password(merchant_no), SecretOrigin::Default),
            },
        };
        Ok(KeyConfig {
            source: KeySource {
                pfx_file,
                password,
                allow_insecure_permissions: key.allow_insecure_permissions,
            },
            password_origin,
        })
    }

    /// `[poll]`.
    fn poll(&self, raw: RawPoll) -> Result<PollConfig, ConfigError> {
        let poll = PollConfig {
            interval: raw.interval.unwrap_or(DEFAULT_POLL_INTERVAL),
            page_size: raw.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
            jitter: raw.jitter.unwrap_or(DEFAULT_JITTER),
            shutdown_timeout: raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            max_items: raw.max_items.unwrap_or(DEFAULT_MAX_ITEMS),
            max_item_bytes: raw.max_item_bytes.unwrap_or(DEFAULT_MAX_ITEM_BYTES),
            // A cycle should end before the next is due.
            cycle_timeout: raw
                .cycle_timeout
                .unwrap_or(raw.interval.unwrap_or(DEFAULT_POLL_INTERVAL)),
        };
        if poll.jitter >= poll.interval {
            return Err(self.err("poll.jitter", "must be shorter than poll.interval"));
        }
        if poll.interval < Duration::from_secs(1) {
            return Err(self.err("poll.interval", "must be at least 1s"));
        }
        if poll.page_size == 0 || poll.page_size > MAX_PAGE_SIZE {
            return Err(self.err(
                "poll.page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        if poll.max_items == 0 {
            return Err(self.err("poll.max_items", "must be at least 1"));
        }
        if poll.max_item_bytes < MIN_MAX_ITEM_BYTES {
            return Err(self.err(
                "poll.max_item_bytes",
                format!("must be at least {MIN_MAX_ITEM_BYTES}"),
            ));
        }
        if poll.cycle_timeout < Duration::from_secs(1) {
            return Err(self.err("poll.cycle_timeout", "must be at least 1s"));
        }
        // The watchdog is fed while the scheduler beat within one interval plus its budget: a
        // cycle allowed to run longer would be taken for a wedged scheduler.
        let wedged = poll.interval + crate::health::SCHEDULER_BUDGET;
        if poll.cycle_timeout >= wedged {
            return Err(self.err(
                "poll.cycle_timeout",
                format!(
                    "must be shorter than poll.interval plus {} ({}), or the watchdog takes a \
                     slow cycle for a wedged daemon",
                    humantime::format_duration(crate::health::SCHEDULER_BUDGET),
                    humantime::format_duration(wedged)
                ),
            ));
        }
        Ok(poll)
    }

    /// `[collect]`.
    fn collect(&self, raw: RawCollect) -> Result<CollectConfig, ConfigError> {
        let collect = CollectConfig {
            enabled: raw.enabled.unwrap_or(true),
            interval: raw.interval.unwrap_or(DEFAULT_COLLECT_INTERVAL),
            jitter: raw.jitter.unwrap_or(DEFAULT_JITTER),
            main: raw.main.unwrap_or(true),
            tokens: raw.tokens.unwrap_or(true),
        };
        if collect.interval < Duration::from_secs(1) {
            return Err(self.err("collect.interval", "must be at least 1s"));
        }
        if collect.jitter >= collect.interval {
            return Err(self.err("collect.jitter", "must be shorter than collect.interval"));
        }
        if collect.enabled && !collect.main && !collect.tokens {
            return Err(self.err(
                "collect.main",
                "collection is enabled but both collect.main and collect.tokens are false",
            ));
        }
        Ok(collect)
    }

    /// `[policy]`.
    fn policy(&self, raw: RawPolicy) -> PolicyConfig {
        PolicyConfig {
            file: self.resolve(raw.file.unwrap_or_else(|| PathBuf::from("policy.toml"))),
            dry_run: raw.dry_run,
        }
    }

    /// `[ledger]`: `path` (SQLite, the default) or `url` (PostgreSQL), never both; the URL
    /// parsed and its password read now, so that a bad one stops the load. `allow_insecure`
    /// is `key.allow_insecure_permissions` (for `ledger.password_file`).
    fn ledger(&self, raw: RawLedger, allow_insecure: bool) -> Result<LedgerConfig, ConfigError> {
        let url = nonempty(raw.url);
        if url.is_some() && raw.path.is_some() {
            return Err(self.err(
                "ledger.url",
                "cannot be set together with ledger.path: use path for an SQLite file on this \
                 host, or url for a PostgreSQL ledger shared by a pair",
            ));
        }
        let path = self.resolve(
            raw.path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER_PATH)),
        );
        let Some(url) = url else {
            if raw.password_file.is_some() {
                return Err(self.err(
                    "ledger.password_file",
                    "is for a PostgreSQL ledger: set ledger.url too, or remove it",
                ));
            }
            if raw.name.is_some() {
                return Err(self.err(
                    "ledger.name",
                    "names an instance of a pair sharing a PostgreSQL ledger: set ledger.url \
                     too, or remove it",
                ));
            }
            return Ok(LedgerConfig {
                path,
                postgres: None,
            });
        };
        let password = match raw.password_file {
            Some(p) => {
                let p = self.resolve(p);
                Some(self.read_secret_file("ledger.password_file", &p, allow_insecure)?)
            }
            None => match self.credential(CRED_PG_PASSWORD) {
                Some(p) => Some(self.read_credential("ledger.password_file", &p)?),
                None => None,
            },
        };
        let target =
            crate::ledger::postgres::PgTarget::parse(&url, password).map_err(|e| match e {
                crate::ledger::LedgerError::DatabaseUrl { reason } => {
                    self.err("ledger.url", reason)
                }
                other => self.err("ledger.url", other.to_string()),
            })?;
        let name = match nonempty(raw.name) {
            Some(n) => n,
            None => host_name(),
        };
        if name.len() > 63 || name.chars().any(|c| c.is_control()) {
            return Err(self.err(
                "ledger.name",
                "must be at most 63 characters, without control characters",
            ));
        }
        Ok(LedgerConfig {
            path,
            postgres: Some(PostgresLedger { target, name }),
        })
    }

    /// `[http]`, with `[callbacks]` (served on the same listener).
    fn http(&self, raw: RawHttp, callbacks: RawCallbacks) -> Result<HttpConfig, ConfigError> {
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            self.err(
                "http.listen",
                format!("{listen_text:?} is not an address such as 127.0.0.1:9184"),
            )
        })?;
        let api_keys_file = raw.api_keys_file.map(|p| self.resolve(p));
        let api_keys = match &api_keys_file {
            Some(p) => Some(
                crate::operator::ApiKeys::load(p)
                    .map_err(|e| self.err("http.api_keys_file", e.to_string()))?,
            ),
            None => None,
        };
        if raw.metrics_auth && api_keys.is_none() {
            return Err(self.err(
                "http.metrics_auth",
                "needs http.api_keys_file: the keys /metrics would accept",
            ));
        }
        let operator_rps = raw
            .max_requests_per_second
            .unwrap_or(crate::operator::DEFAULT_RATE);
        if operator_rps == 0 {
            return Err(self.err("http.max_requests_per_second", "must be at least 1"));
        }
        let max_connections = raw
            .max_connections
            .unwrap_or(crate::listener::DEFAULT_MAX_CONNECTIONS);
        if !(crate::listener::MIN_MAX_CONNECTIONS..=crate::listener::MAX_MAX_CONNECTIONS)
            .contains(&max_connections)
        {
            return Err(self.err(
                "http.max_connections",
                format!(
                    "must be from {} to {}: room for an operator beside the scrapers, and fewer \
                     descriptors than the unit's LimitNOFILE",
                    crate::listener::MIN_MAX_CONNECTIONS,
                    crate::listener::MAX_MAX_CONNECTIONS
                ),
            ));
        }
        let header_read_timeout = raw
            .header_read_timeout
            .unwrap_or(crate::listener::DEFAULT_HEADER_READ_TIMEOUT);
        if header_read_timeout.is_zero() || header_read_timeout > Duration::from_secs(60) {
            return Err(self.err(
                "http.header_read_timeout",
                "must be more than 0 and at most 60s",
            ));
        }
        Ok(HttpConfig {
            listen,
            api_keys,
            api_keys_file,
            max_requests_per_second: operator_rps,
            callbacks: callbacks.enabled,
            metrics_auth: raw.metrics_auth,
            limits: crate::listener::Limits {
                max_connections,
                header_read_timeout,
            },
        })
    }

    /// `[log]`.
    fn log(&self, raw: RawLog) -> Result<LogConfig, ConfigError> {
        let level = raw.level.unwrap_or_else(|| "info".to_string());
        if !valid_log_filter(&level)
            || level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            return Err(self.err(
                "log.level",
                format!("{level:?} is not a level (error, warn, info, debug, trace) or filter"),
            ));
        }
        Ok(LogConfig {
            format: raw.format.unwrap_or_default(),
            level,
        })
    }
}

/// A level, or comma-separated `target=level` directives. A bare word that is not a level is
/// refused: tracing would read it as a target name and silently log nothing else.
pub(crate) fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    // A module path (`cosigner`, `cosigner::cycle`): anything else matches no target, and a
    // filter of such directives alone would log nothing at all.
    let is_target = |t: &str| {
        let t = t.trim();
        !t.is_empty()
            && t.split("::").all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
    };
    !filter.trim().is_empty()
        && filter.split(',').all(|d| match d.rsplit_once('=') {
            Some((target, level)) => is_target(target) && is_level(level),
            None => is_level(d),
        })
}

/// Reads a file holding one secret (an API secret, a PKCS#12 password, an API key). One trailing
/// newline is dropped, as `echo` and systemd credentials leave one; an empty file is an error.
/// With `private`, a file group or others may read is refused as the key file is (checked on
/// the opened file). The error names the file, never its content.
pub(crate) fn read_secret_file(
    path: &Path,
    private: bool,
) -> Result<SecretString, SecretFileError> {
    let cannot = |source: std::io::Error| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    if private && let Some(mode) = crate::signer::shared_mode(&file.metadata().map_err(cannot)?) {
        return Err(SecretFileError::Shared {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot)?;
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// A file that should hold one secret and does not; the message names the file, never its
/// content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error(
        "{} has mode {mode:04o}: a file holding a secret must not be readable by group or \
         others (chmod 600 it, or set key.allow_insecure_permissions = true)",
        .path.display()
    )]
    Shared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds nothing.
    #[error("{} is empty", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::BTreeSet;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
[api]
base_url = "https://api.1bitpay.io"
merchant_no = "mer1"
api_key = "key1"
api_secret = "s3cr3t"
[key]
pfx_file = "merchant.pfx"
"#;

    /// The fields `RawConfig` accepts at the place `toml_text` puts `not_a_key`, as serde's
    /// `deny_unknown_fields` lists them when it refuses it: "unknown field `not_a_key`,
    /// expected one of `a`, `b`" (or "expected `a`", "expected `a` or `b`").
    fn accepted_fields(toml_text: &str) -> Vec<String> {
        let err = match toml::from_str::<RawConfig>(toml_text) {
            Ok(_) => panic!("`not_a_key` was accepted in {toml_text:?}"),
            Err(e) => e.to_string(),
        };
        let (_, expected) = err
            .split_once("unknown field `not_a_key`, expected")
            .unwrap_or_else(|| panic!("not an unknown-field error: {err}"));
        let expected = expected.lines().next().unwrap_or("");
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// Every `section.key` the configuration's structs accept.
    fn keys_the_structs_accept() -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for section in accepted_fields("not_a_key = 1") {
            for field in accepted_fields(&format!("[{section}]\nnot_a_key = 1")) {
                keys.insert(format!("{section}.{field}"));
            }
        }
        keys
    }

    #[test]
    fn the_known_keys_are_exactly_the_keys_the_configuration_accepts() {
        let accepted = keys_the_structs_accept();
        assert!(accepted.contains("api.timeout"), "{accepted:?}");
        assert!(accepted.contains("callbacks.enabled"), "{accepted:?}");
        let known: BTreeSet<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
        assert_eq!(KEYS.len(), known.len(), "KEYS names a key twice");
        let missing: Vec<&String> = accepted.difference(&known).collect();
        let extra: Vec<&String> = known.difference(&accepted).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "config.rs's KEYS lacks {missing:?} and names {extra:?}, which no struct accepts"
        );
        let not_keys: Vec<&&str> = TEXT_KEYS.iter().filter(|k| !known.contains(**k)).collect();
        assert!(not_keys.is_empty(), "TEXT_KEYS names no key: {not_keys:?}");
    }

    #[test]
    fn the_example_configuration_shows_every_key_set_or_commented_under_its_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cosigner.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut shown = BTreeSet::new();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim_start_matches(['#', ' ']);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    shown.insert(format!("{section}.{key}"));
                }
            }
        }
        let accepted = keys_the_structs_accept();
        let missing: Vec<&String> = accepted.difference(&shown).collect();
        let unknown: Vec<&String> = shown.difference(&accepted).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{} lacks {missing:?} and shows {unknown:?}, which are no keys",
            path.display()
        );
    }

    #[test]
    fn a_variable_with_one_underscore_is_pointed_at_the_key_it_misspells() {
        for (name, key) in [
            ("COSIGNER_API_MAX_CLOCK_SKEW", "api.max_clock_skew"),
            ("COSIGNER_HTTP_METRICS_AUTH", "http.metrics_auth"),
            ("COSIGNER_POLL_INTERVAL", "poll.interval"),
        ] {
            let text = unmapped_variable(name);
            assert!(
                text.contains(&format!("the nearest key is `{key}`")),
                "{text}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "c.toml", MINIMAL);
        let c = Config::load_with(&p, &Environment::default()).unwrap();
        assert_eq!(c.key.source.pfx_file, d.path().join("merchant.pfx"));
        assert_eq!(c.policy.file, d.path().join("policy.toml"));
        assert_eq!(c.poll.interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(c.key.password_origin, SecretOrigin::Default);
        assert_eq!(c.key.source.password.expose_secret(), "1bitpaymer1");
    }

    #[test]
    fn an_environment_override_replaces_a_file_value_and_is_named_in_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "c.toml", MINIMAL);
        let env = Environment {
            overrides: vec![("COSIGNER_API__TIMEOUT".into(), "30s".into())],
            credentials_directory: None,
        };
        let c = Config::load_with(&p, &env).unwrap();
        assert_eq!(c.api.client.timeout, Duration::from_secs(30));
        let env = Environment {
            overrides: vec![("COSIGNER_API__TIMEOUT".into(), "soon".into())],
            credentials_directory: None,
        };
        let e = Config::load_with(&p, &env).unwrap_err().to_string();
        assert!(
            e.contains("COSIGNER_API__TIMEOUT") && e.contains("api.timeout"),
            "{e}"
        );
    }

    #[test]
    fn a_numeric_merchant_number_from_the_environment_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "c.toml", MINIMAL);
        let env = Environment {
            overrides: vec![("COSIGNER_API__MERCHANT_NO".into(), "12345".into())],
            credentials_directory: None,
        };
        let c = Config::load_with(&p, &env).unwrap();
        assert_eq!(c.api.client.merchant_no, "12345");
    }

    #[test]
    fn secrets_are_found_in_the_systemd_credentials_directory() {
        let d = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        write(creds.path(), CRED_API_SECRET, "from-creds\n");
        write(creds.path(), CRED_PFX, "x");
        write(creds.path(), CRED_PFX_PASSWORD, "pw\n");
        let p = write(
            d.path(),
            "c.toml",
            "[api]\nbase_url = \"https://api.1bitpay.io\"\nmerchant_no = \"m\"\napi_key = \"k\"\n",
        );
        let env = Environment {
            overrides: vec![],
            credentials_directory: Some(creds.path().to_owned()),
        };
        let c = Config::load_with(&p, &env).unwrap();
        assert_eq!(c.api.client.api_secret.expose_secret(), "from-creds");
        assert_eq!(c.key.source.pfx_file, creds.path().join(CRED_PFX));
        assert_eq!(c.key.source.password.expose_secret(), "pw");
    }

    #[test]
    fn both_inline_secret_and_secret_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "c.toml",
            &format!("{MINIMAL}\n").replace(
                "api_secret = \"s3cr3t\"",
                "api_secret = \"a\"\napi_secret_file = \"f\"",
            ),
        );
        let e = Config::load_with(&p, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.api_secret"), "{e}");
    }

    #[test]
    fn log_filters_are_levels_or_target_directives() {
        for ok in [
            "info",
            "warn",
            "cosigner=debug,info",
            "cosigner::cycle=trace",
            "OFF",
        ] {
            assert!(valid_log_filter(ok), "{ok}");
        }
        for bad in ["infoo", "loud!!", "", "cosigner=loud", "=debug"] {
            assert!(!valid_log_filter(bad), "{bad}");
        }
    }

    #[test]
    fn a_listing_has_bounds_and_a_cycle_a_deadline_each_checked_at_load() {
        let d = tempfile::tempdir().unwrap();
        let load = |poll: &str| {
            let p = write(d.path(), "c.toml", &format!("{MINIMAL}[poll]\n{poll}\n"));
            Config::load_with(&p, &Environment::default()).map(|c| c.poll)
        };
        let c = load("interval = \"30s\"").unwrap();
        assert_eq!(
            (c.max_items, c.max_item_bytes, c.cycle_timeout),
            (50_000, 4096, Duration::from_secs(30)),
            "the deadline defaults to the interval"
        );
        let c = load("max_items = 7\nmax_item_bytes = 512\ncycle_timeout = \"90s\"").unwrap();
        assert_eq!(
            (c.max_items, c.max_item_bytes, c.cycle_timeout),
            (7, 512, Duration::from_secs(90))
        );
        for (bad, key) in [
            ("max_items = 0", "poll.max_items"),
            ("max_item_bytes = 511", "poll.max_item_bytes"),
            ("cycle_timeout = \"500ms\"", "poll.cycle_timeout"),
            (
                "interval = \"1m\"\ncycle_timeout = \"11m\"",
                "poll.cycle_timeout",
            ),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(load("interval = \"1m\"\ncycle_timeout = \"10m 59s\"").is_ok());
    }

    #[test]
    fn the_config_path_comes_from_the_flag_first() {
        assert_eq!(
            resolve_path(Some(Path::new("/x.toml"))),
            PathBuf::from("/x.toml")
        );
    }
}
