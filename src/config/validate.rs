//! Validation: the raw configuration checked key by key into typed settings, each error naming its
//! key.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::ClientConfig;
use crate::signer::{KeySource, default_password};

use super::env::override_name;
use super::raw::{
    RawApi, RawCallbacks, RawCollect, RawControl, RawHttp, RawKey, RawLedger, RawLog, RawPolicy,
    RawPoll,
};
use super::{
    ApiConfig, CRED_PFX, CRED_PFX_PASSWORD, CRED_PG_PASSWORD, CollectConfig, Config, ConfigError,
    ControlConfig, DEFAULT_COLLECT_INTERVAL, DEFAULT_JITTER, DEFAULT_LEDGER_PATH, DEFAULT_LISTEN,
    DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_ITEM_BYTES, DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RPS, DEFAULT_PAGE_SIZE,
    DEFAULT_POLL_INTERVAL, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TIMEOUT, Environment, HttpConfig,
    KeyConfig, LedgerConfig, LogConfig, MAX_PAGE_SIZE, MIN_MAX_ITEM_BYTES, PolicyConfig,
    PollConfig, PostgresLedger, RawConfig, SecretOrigin, is_loopback_host,
};

pub(super) struct Validator<'a> {
    pub(super) file: String,
    pub(super) dir: PathBuf,
    pub(super) env: &'a Environment,
}

impl Validator<'_> {
    pub(super) fn err(&self, key: &'static str, message: impl Into<String>) -> ConfigError {
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

    pub(super) fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() { p } else { self.dir.join(p) }
    }

    /// The whole configuration, one section after the other (the first error wins).
    pub(super) fn validate(self, raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
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
    pub(super) fn control(&self, raw: RawControl, ledger: &LedgerConfig) -> ControlConfig {
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
    pub(super) fn api(&self, api: RawApi, allow_insecure: bool) -> Result<ApiConfig, ConfigError> {
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
    pub(super) fn base_url(&self, base_url: Option<String>) -> Result<reqwest::Url, ConfigError> {
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

    /// `[key]`; without a password, the default one of `merchant_no`.
    pub(super) fn key(&self, key: RawKey, merchant_no: &str) -> Result<KeyConfig, ConfigError> {
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
    pub(super) fn poll(&self, raw: RawPoll) -> Result<PollConfig, ConfigError> {
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
    pub(super) fn collect(&self, raw: RawCollect) -> Result<CollectConfig, ConfigError> {
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
    pub(super) fn policy(&self, raw: RawPolicy) -> PolicyConfig {
        PolicyConfig {
            file: self.resolve(raw.file.unwrap_or_else(|| PathBuf::from("policy.toml"))),
            dry_run: raw.dry_run,
        }
    }

    /// `[ledger]`: `path` (SQLite, the default) or `url` (PostgreSQL), never both; the URL
    /// parsed and its password read now, so that a bad one stops the load. `allow_insecure`
    /// is `key.allow_insecure_permissions` (for `ledger.password_file`).
    pub(super) fn ledger(
        &self,
        raw: RawLedger,
        allow_insecure: bool,
    ) -> Result<LedgerConfig, ConfigError> {
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
    pub(super) fn http(
        &self,
        raw: RawHttp,
        callbacks: RawCallbacks,
    ) -> Result<HttpConfig, ConfigError> {
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
    pub(super) fn log(&self, raw: RawLog) -> Result<LogConfig, ConfigError> {
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

/// This host's name (the default `ledger.name`); `cosigner` when it cannot be read.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cosigner".to_string())
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

pub(super) fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
