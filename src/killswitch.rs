//! Throwing and lifting the kill switch from outside the daemon (`cosigner pause`/`resume`):
//! written to the ledger when no daemon holds it, else asked of the running daemon through its
//! operator API. Either way the mode ends up in the ledger, so a restart keeps it.
//!
//! The daemon is asked through its control socket first when there is one (a TCP flood cannot
//! fill it, and it needs no key), else through the operator API; every call has a timeout and
//! an error names what did not answer.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{self, Config};
use crate::control::Mode;
use crate::ledger::{EventKind, LedgerError, SqliteLedger};

/// Who set the mode in the ledger event written when no daemon runs.
const RECORDED_BY: &str = "cosigner cli";

/// The environment variable holding an operator API key when no key file is given.
pub(crate) const API_KEY_ENV: &str = "COSIGNER_API_KEY";

/// Default `--timeout` of the commands that talk to the daemon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How `pause` and `resume` reach a running daemon.
#[derive(Debug, Clone)]
pub struct Reach {
    /// `--socket`: this control socket, and no other way.
    pub socket: Option<PathBuf>,
    /// Every call to the daemon gives up after this long.
    pub timeout: Duration,
}

impl Default for Reach {
    fn default() -> Self {
        Self {
            socket: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

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
    /// The running daemon put the mode in force, asked through its control socket.
    Socket {
        /// The socket.
        path: PathBuf,
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
    /// The operator API accepted the call but did not answer in time.
    #[error(
        "no answer from the daemon's operator API at {url} (http.listen) within {}",
        humantime::format_duration(*.after)
    )]
    Timeout {
        /// The URL called.
        url: String,
        /// The timeout (`--timeout`).
        after: Duration,
    },
    /// The control socket cannot be connected to.
    #[error("cannot reach the daemon's control socket {}", .path.display())]
    SocketUnreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket did not answer, or not in HTTP.
    #[error("no answer from the daemon's control socket {}: {detail}", .path.display())]
    SocketFailed {
        /// The socket.
        path: PathBuf,
        /// What went wrong (a timeout names its length).
        detail: String,
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
    reach: &Reach,
) -> Result<Switched, SwitchError> {
    if let Some(path) = &reach.socket {
        return call_socket(path, mode, reach.timeout).await;
    }
    if let Some(path) = default_socket(cfg) {
        match call_socket(&path, mode, reach.timeout).await {
            // No daemon behind it (gone, or a leftover file): the other ways below.
            Err(SwitchError::SocketUnreachable { .. }) => {}
            done => return done,
        }
    }
    let timeout = reach.timeout;
    if cfg.ledger.postgres.is_some() {
        // The running leader decides by the mode it holds in memory: a mode written beside it
        // would be in the ledger and not in force. So a pair is always switched live; a
        // standby answers 409 naming the leader.
        let key = api_key(api_key_file)?;
        let addr = operator_addr(cfg.http.listen)?;
        return match call_operator_api(addr, mode, &key, timeout).await {
            Ok(()) => Ok(Switched::Live { addr }),
            Err(SwitchError::Unreachable { url, .. }) => Err(SwitchError::NoDaemon { url }),
            Err(e) => Err(e),
        };
    }
    match SqliteLedger::open(&cfg.ledger.path) {
        Ok(mut ledger) => {
            ledger
                .record_event(EventKind::Mode, &mode.event_detail(RECORDED_BY))
                .map_err(SwitchError::Record)?;
            Ok(Switched::Recorded {
                ledger: cfg.ledger.path.clone(),
            })
        }
        Err(LedgerError::Locked { .. }) => {
            let key = api_key(api_key_file)?;
            let addr = operator_addr(cfg.http.listen)?;
            call_operator_api(addr, mode, &key, timeout).await?;
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

/// The control socket `pause` tries when `--socket` is not given, if the file is there:
/// `control.socket`, else `control.socket` in `$RUNTIME_DIRECTORY`, else in systemd's
/// `/run/cosigner` (an operator's shell has no `$RUNTIME_DIRECTORY`).
fn default_socket(cfg: &Config) -> Option<PathBuf> {
    let runtime_dir = std::env::var_os("RUNTIME_DIRECTORY");
    let path = cfg
        .control
        .socket_target(runtime_dir.as_deref())
        .map(|t| t.path)
        .unwrap_or_else(|| {
            Path::new(config::SYSTEMD_RUNTIME_DIRECTORY).join(config::CONTROL_SOCKET_NAME)
        });
    path.exists().then_some(path)
}

/// The path and body of the call that puts `mode` in force.
fn mode_call(mode: Mode) -> (&'static str, String) {
    match mode {
        Mode::Normal => ("/v1/resume", String::new()),
        m => (
            "/v1/pause",
            serde_json::json!({"mode": m.as_str()}).to_string(),
        ),
    }
}

/// Asks the daemon on the control socket at `path` to put `mode` in force, within `timeout`.
async fn call_socket(path: &Path, mode: Mode, timeout: Duration) -> Result<Switched, SwitchError> {
    let failed = |detail: String| SwitchError::SocketFailed {
        path: path.to_owned(),
        detail,
    };
    let call = async {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| SwitchError::SocketUnreachable {
                path: path.to_owned(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(conn);
        let (route, body) = mode_call(mode);
        let request = hyper::Request::post(route)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .map_err(|e| failed(e.to_string()))?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 64 * 1024)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(SwitchError::Refused {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(Switched::Socket {
            path: path.to_owned(),
        })
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        failed(format!(
            "nothing within {} (--timeout)",
            humantime::format_duration(timeout)
        ))
    })?
}

async fn call_operator_api(
    addr: SocketAddr,
    mode: Mode,
    key: &SecretString,
    timeout: Duration,
) -> Result<(), SwitchError> {
    let (route, body) = mode_call(mode);
    let url = format!("http://{addr}{route}");
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|source| SwitchError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let resp = client
        .post(&url)
        .basic_auth(key.expose_secret(), Some(""))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| {
            if source.is_timeout() {
                SwitchError::Timeout {
                    url: url.clone(),
                    after: timeout,
                }
            } else {
                SwitchError::Unreachable {
                    url: url.clone(),
                    source,
                }
            }
        })?;
    let status = resp.status();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => {
            return Err(SwitchError::Timeout {
                url,
                after: timeout,
            });
        }
        Err(_) => String::new(),
    };
    if !status.is_success() {
        return Err(SwitchError::Refused { status, body });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
