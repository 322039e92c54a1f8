//! Throwing and lifting the kill switch from outside the daemon (`cosigner pause`/`resume`):
//! written to the ledger when no daemon holds it, else asked of the running daemon through its
//! operator API. Either way the mode ends up in the ledger, so a restart keeps it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::config::{self, Config};
use crate::ledger::{Ledger, LedgerError};
use crate::plan::Mode;

/// Who set the mode in the ledger event written when no daemon runs.
const RECORDED_BY: &str = "cosigner cli";

/// The environment variable holding an operator API key when no key file is given.
pub(crate) const API_KEY_ENV: &str = "COSIGNER_API_KEY";

/// What [`switch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switched {
    /// No daemon held the ledger: the mode is recorded in it and applies when the daemon starts.
    Recorded {
        /// The ledger written.
        ledger: PathBuf,
    },
    /// The running daemon put the mode in force through its operator API.
    Live {
        /// Where its operator API answered.
        addr: SocketAddr,
    },
}

/// Why [`switch`] did not change the mode. [`SwitchError::is_usage`] tells configuration and
/// usage problems (exit 2) from failures while doing it (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The ledger could not be opened for another reason than a running daemon.
    #[error(transparent)]
    Open(LedgerError),
    /// The ledger was open but the mode event could not be written.
    #[error(transparent)]
    Record(LedgerError),
    /// The operator API key file could not be read (the message names the file).
    #[error(transparent)]
    KeyFile(config::SecretFileError),
    /// The daemon runs and no operator API key was given.
    #[error(
        "the daemon is running: give an operator API key with --api-key-file or {API_KEY_ENV} \
         (`cosigner apikey new` makes one)"
    )]
    NoKey,
    /// The daemon runs but its operator API's port is not known.
    #[error(
        "the daemon is running, but http.listen ({addr}) has port 0, so its operator API cannot \
         be found: set a fixed port (or COSIGNER_HTTP__LISTEN to the address it logged at start)"
    )]
    NoPort {
        /// http.listen as configured (unspecified IP replaced by loopback).
        addr: SocketAddr,
    },
    /// The operator API did not answer.
    #[error("cannot reach the daemon's operator API at {url} (http.listen)")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// A pair's PostgreSQL ledger is switched only through a running daemon, and none answered.
    #[error(
        "with a PostgreSQL ledger (ledger.url), pause and resume go through the leader's operator \
         API, and no daemon answered at {url} (http.listen): run this on the leader's host, or \
         start the daemon"
    )]
    NoDaemon {
        /// The URL called.
        url: String,
    },
    /// The operator API answered with an error.
    #[error("the daemon refused: HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The answer's body, as the daemon wrote it.
        body: String,
    },
}

impl SwitchError {
    /// True for bad usage or configuration (exit 2); false for a failure while switching (exit 1).
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SwitchError::Open(_)
                | SwitchError::KeyFile(_)
                | SwitchError::NoKey
                | SwitchError::NoPort { .. }
        )
    }
}

/// Puts `mode` in force for the daemon configured by `cfg`. With no daemon running the ledger is
/// written directly; with one running, its operator API is called with the key read from
/// `api_key_file` (which group or others must not be able to read), else from
/// `$COSIGNER_API_KEY`. The key is read only when a daemon runs.
pub async fn switch(
    cfg: &Config,
    mode: Mode,
    api_key_file: Option<&Path>,
) -> Result<Switched, SwitchError> {
    if cfg.ledger.postgres.is_some() {
        // The running leader decides by the mode it holds in memory: a mode written beside it
        // would be in the ledger and not in force. So a pair is always switched live; a
        // standby answers 409 naming the leader.
        let key = api_key(api_key_file)?;
        let addr = operator_addr(cfg.http.listen)?;
        return match call_operator_api(addr, mode, &key).await {
            Ok(()) => Ok(Switched::Live { addr }),
            Err(SwitchError::Unreachable { url, .. }) => Err(SwitchError::NoDaemon { url }),
            Err(e) => Err(e),
        };
    }
    match Ledger::open(&cfg.ledger.path) {
        Ok(mut ledger) => {
            ledger
                .record_event("mode", &mode.event_detail(RECORDED_BY))
                .map_err(SwitchError::Record)?;
            Ok(Switched::Recorded {
                ledger: cfg.ledger.path.clone(),
            })
        }
        Err(LedgerError::Locked { .. }) => {
            let key = api_key(api_key_file)?;
            let addr = operator_addr(cfg.http.listen)?;
            call_operator_api(addr, mode, &key).await?;
            Ok(Switched::Live { addr })
        }
        Err(e) => Err(SwitchError::Open(e)),
    }
}

fn api_key(file: Option<&Path>) -> Result<SecretString, SwitchError> {
    match file {
        Some(f) => config::read_secret_file(f, true).map_err(SwitchError::KeyFile),
        None => std::env::var(API_KEY_ENV)
            .map(SecretString::from)
            .map_err(|_| SwitchError::NoKey),
    }
}

/// Where the running daemon's operator API listens: http.listen, its loopback address when it
/// listens on all of them.
fn operator_addr(listen: SocketAddr) -> Result<SocketAddr, SwitchError> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    if addr.port() == 0 {
        return Err(SwitchError::NoPort { addr });
    }
    Ok(addr)
}

async fn call_operator_api(
    addr: SocketAddr,
    mode: Mode,
    key: &SecretString,
) -> Result<(), SwitchError> {
    let (path, body) = match mode {
        Mode::Normal => ("resume", String::new()),
        m => ("pause", serde_json::json!({"mode": m.as_str()}).to_string()),
    };
    let url = format!("http://{addr}/v1/{path}");
    let resp = reqwest::Client::new()
        .post(&url)
        .basic_auth(key.expose_secret(), Some(""))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| SwitchError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SwitchError::Refused { status, body });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_api_is_reached_on_loopback_and_never_on_port_0() {
        assert_eq!(
            operator_addr("0.0.0.0:9464".parse().unwrap()).unwrap(),
            "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            operator_addr("10.1.2.3:9464".parse().unwrap()).unwrap(),
            "10.1.2.3:9464".parse::<SocketAddr>().unwrap()
        );
        let e = operator_addr("0.0.0.0:0".parse().unwrap()).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("(127.0.0.1:0) has port 0"),
            "{e}"
        );
    }
}
