//! The environment overlay: COSIGNER_<SECTION>__<KEY> overrides over the file, the known keys, and
//! errors that name the file or the variable and the nearest key.

use std::path::PathBuf;

use super::{ENV_NOT_KEYS, ENV_PREFIX};

/// Keys whose value is text to be used exactly as written, also when it comes from the
/// environment.
pub(super) const TEXT_KEYS: &[&str] = &[
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
pub(super) const KEYS: &[&str] = &[
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

/// A TOML syntax error as `file: TOML syntax error at line L, column C: what`, without the
/// source text.
pub(super) fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> String {
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

/// The error for a `COSIGNER_` variable that maps to no key (one underscore where two belong).
pub(super) fn unmapped_variable(name: &str) -> String {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let want = squash(name.trim_start_matches(ENV_PREFIX));
    let nearest = KEYS
        .iter()
        .min_by_key(|k| strsim::levenshtein(&squash(k), &want))
        .copied()
        .unwrap_or("api.timeout");
    format!(
        "environment variable {name} maps to no key: overrides are {ENV_PREFIX}<SECTION>__<KEY>, \
         with two underscores between section and key; the nearest key is `{nearest}` \
         ({ENV_PREFIX}{})",
        nearest.to_ascii_uppercase().replace('.', "__")
    )
}

pub(super) fn override_name(env: &Environment, key: &str) -> Option<String> {
    let want = format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"));
    env.overrides
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&want))
        .map(|(k, _)| k.clone())
}

pub(super) fn describe_figment(file: &str, env: &Environment, err: figment::Error) -> String {
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
