//! Configuration: one TOML file plus `COSIGNER_<SECTION>__<KEY>` overrides, validated once at load
//! into typed settings. Secrets come inline, from `*_file` keys, or from systemd credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use crate::client::ClientConfig;
use crate::signer::KeySource;

mod env;
mod raw;
mod secrets;
mod validate;

pub use env::Environment;
use env::{TEXT_KEYS, describe_figment, syntax_error, unmapped_variable};
use raw::RawConfig;
pub use secrets::SecretFileError;
pub(crate) use secrets::{SecretOrigin, read_secret_file};
use validate::Validator;
pub(crate) use validate::valid_log_filter;

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
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
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
                    error: e,
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

#[cfg(test)]
mod tests;
