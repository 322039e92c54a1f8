//! The configuration as written: the file's sections and keys (unknown keys refused), before
//! validation.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::client::{Lang, SignOrder};

use super::LogFormat;

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"15s\", \"2m\" or \"24h\""
        ))
    })
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A string that also accepts a bare number (an environment override like `MERCHANT_NO=123`).
pub(super) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

pub(super) fn lenient_secret<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    Ok(lenient_string(d)?.map(SecretString::from))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) key: RawKey,
    #[serde(default)]
    pub(super) poll: RawPoll,
    #[serde(default)]
    pub(super) collect: RawCollect,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) ledger: RawLedger,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) callbacks: RawCallbacks,
    #[serde(default)]
    pub(super) control: RawControl,
    #[serde(default)]
    pub(super) log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) pause_file: Option<PathBuf>,
    pub(super) socket: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) base_url: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(super) merchant_no: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub(super) api_key: Option<String>,
    #[serde(default, deserialize_with = "lenient_secret")]
    pub(super) api_secret: Option<SecretString>,
    pub(super) api_secret_file: Option<PathBuf>,
    pub(super) lang: Option<Lang>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) timeout: Option<Duration>,
    pub(super) max_requests_per_second: Option<u32>,
    pub(super) sign_order: Option<SignOrder>,
    pub(super) max_response_bytes: Option<usize>,
    pub(super) max_retries: Option<u32>,
    pub(super) max_in_flight: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) max_clock_skew: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) pfx_file: Option<PathBuf>,
    pub(super) password_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_insecure_permissions: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoll {
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) interval: Option<Duration>,
    pub(super) page_size: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) jitter: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) max_items: Option<usize>,
    pub(super) max_item_bytes: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) cycle_timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCollect {
    pub(super) enabled: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) jitter: Option<Duration>,
    pub(super) main: Option<bool>,
    pub(super) tokens: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) dry_run: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    pub(super) path: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) api_keys_file: Option<PathBuf>,
    pub(super) max_requests_per_second: Option<u32>,
    pub(super) max_connections: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub(super) header_read_timeout: Option<Duration>,
    #[serde(default)]
    pub(super) metrics_auth: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallbacks {
    #[serde(default)]
    pub(super) enabled: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
}
