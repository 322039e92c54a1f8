//! The 1BitPay API client: signed requests, envelope handling, timeouts, capped bodies, bounded
//! retries with backoff and jitter, and an outbound rate limit.

pub mod signature;
pub mod types;
mod wire;

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::clock::Clock;
use crate::domain::ClockDoubt;

pub use signature::SignOrder;
pub use types::*;
pub use wire::{Outbox, Stopped};

use wire::{BodyError, Permit, Ticket, Wire, WireError};

/// Path of the pending list.
pub const PENDING: &str = "/api/transaction/pending";
/// Path of approve/reject.
pub const APPROVE: &str = "/api/transaction/approve";
/// Path of collection.
pub const COLLECT: &str = "/api/transaction/assets/collect";
/// Path of the C2C rate.
pub const RATE: &str = "/api/otc/rate";
/// Path of C2C order creation.
pub const CREATE_ORDER: &str = "/api/otc/create";
/// Path of the C2C batch sell.
pub const BATCH_SELL: &str = "/api/otc/batch/sell";

/// The response language the server is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Chinese.
    Zh,
}

impl Lang {
    /// The header value.
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// Everything the client needs to reach and authenticate to 1BitPay.
#[derive(Clone)]
pub struct ClientConfig {
    /// Scheme, host and optional path prefix, e.g. `https://sandbox.1bitpay.io`.
    pub base_url: reqwest::Url,
    /// `MerchantNo` header.
    pub merchant_no: String,
    /// `ApiKey` header.
    pub api_key: String,
    /// Appended to the canonical string before hashing; never sent.
    pub api_secret: SecretString,
    /// `Lang` header.
    pub lang: Lang,
    /// Whole-request timeout (connect, send, and read the body).
    pub timeout: Duration,
    /// Outbound request rate limit.
    pub max_requests_per_second: NonZeroU32,
    /// Canonical-string ordering.
    pub sign_order: SignOrder,
    /// Largest response body read; a larger one is an error.
    pub max_response_bytes: usize,
    /// Attempts after the first, on network errors, 429 and 5xx.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with full jitter, capped at `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// PEM certificates of authorities to trust besides the system's (`api.ca_file`: a private
    /// CA, a TLS-inspecting proxy).
    pub ca_file: Option<std::path::PathBuf>,
    /// How far this host's clock may be off the server's `Date` either way; `Client::clock_doubt`
    /// reports a clock that may be more than [`crate::domain::clock_bound`] of it off.
    pub max_clock_skew: Duration,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("merchant_no", &self.merchant_no)
            .field("api_key", &"[REDACTED]")
            .field("api_secret", &"[REDACTED]")
            .field("lang", &self.lang)
            .field("timeout", &self.timeout)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .field("sign_order", &self.sign_order)
            .finish_non_exhaustive()
    }
}

/// Why a call failed. Carries no secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request never got an HTTP answer (connect, reset, timeout), after all retries.
    #[error("{endpoint}: no answer from the server after {attempts} attempt(s): {message}")]
    Network {
        /// The API path called.
        endpoint: &'static str,
        /// Attempts made.
        attempts: u32,
        /// What the network layer said.
        message: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{endpoint}: HTTP {status} after {attempts} attempt(s){}", hint_for(*.status, .body))]
    Http {
        /// The API path called.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The start of the answer's body.
        body: String,
    },
    /// The envelope's `code` was not 200.
    #[error("{endpoint}: the server refused the call with code {code}: {message}")]
    Api {
        /// The API path called.
        endpoint: &'static str,
        /// The envelope's `code`.
        code: i64,
        /// The envelope's `message`.
        message: String,
    },
    /// The response body exceeded the configured cap.
    #[error("{endpoint}: response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The API path called.
        endpoint: &'static str,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The response was not the JSON the endpoint documents.
    #[error("{endpoint}: unexpected response: {detail}")]
    Decode {
        /// The API path called.
        endpoint: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The request could not be built.
    #[error("{endpoint}: cannot build the request: {detail}")]
    Request {
        /// The API path called.
        endpoint: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The caller's `Gate` stopped the request before an attempt went out.
    #[error("{endpoint}: not sent after {attempts} attempt(s): {reason}")]
    Stopped {
        /// The API path called.
        endpoint: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Why the gate said no.
        reason: Refusal,
    },
}

fn hint_for(status: u16, body: &str) -> String {
    let hint = match status {
        401 => {
            " (credentials refused: check api.merchant_no, api.api_key and api.api_secret, and that \
             this host's clock is right: a stale TimeStamp is refused too)"
        }
        403 => " (is this host's IP on the API key's allow-list?)",
        404 => " (check api.base_url)",
        429 => " (rate limited; lower api.max_requests_per_second)",
        _ => "",
    };
    if body.is_empty() {
        hint.to_string()
    } else {
        format!("{hint}: {body}")
    }
}

impl ClientError {
    /// True when the error says the credentials or the source address were refused.
    #[must_use]
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::Http {
                status: 401 | 403,
                ..
            }
        ) || matches!(
            self,
            ClientError::Api {
                code: 401 | 403,
                ..
            }
        )
    }
}

/// A successful call: the envelope's `data` text, and the server's `Date` header.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// `data` as raw JSON (`None` when absent or null).
    pub(crate) data: Option<String>,
    /// The response `Date`, for clock-skew checks.
    pub(crate) server_date: Option<SystemTime>,
}

/// Why a `Gate` stopped a request: a sentence for the log and the outcome record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

/// What a [`Gate`] writes down before an attempt (with the number of attempts made so far):
/// `Err` says why the request must not go out.
type BeforeAttempt = Box<
    dyn Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>
        + Send
        + Sync,
>;

/// Asked before every attempt of a request, retries included, and again at every write of its
/// bytes, whether it may still go out: the kill switch, a policy reload or a shutdown must stop a
/// request that is waiting to be retried, connecting or handshaking, not only one that has not
/// started.
pub struct Gate {
    permit: Permit,
    changes: tokio::sync::watch::Receiver<u64>,
    cancel: Option<tokio_util::sync::CancellationToken>,
    /// Run once the permit is given, right before an attempt: what must be written down before
    /// it leaves.
    before_attempt: Option<BeforeAttempt>,
    /// Asked with the permit once `before_attempt` is done, as the attempt leaves: whether what
    /// it wrote down still holds (an approval's record was stamped recently enough).
    on_leaving: Option<Permit>,
}

impl Gate {
    /// A gate that asks `permit` (an `Err` says why not) and is woken from backoff sleeps by any
    /// change sent on `changes`.
    pub fn new(
        permit: impl Fn() -> Result<(), Refusal> + Send + Sync + 'static,
        changes: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Self {
            permit: std::sync::Arc::new(permit),
            changes,
            cancel: None,
            before_attempt: None,
            on_leaving: None,
        }
    }

    /// Runs `f` (given the number of attempts made so far) and awaits it right before every
    /// attempt, once it is permitted; an `Err` stops the request. The permit is asked again
    /// after it, so that the answer is the one in force when the request leaves.
    pub fn with_before_attempt<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Refusal>> + Send + 'static,
    {
        self.before_attempt = Some(Box::new(move |attempts| Box::pin(f(attempts))));
        self
    }

    /// Also asks `check` (an `Err` says why not) with the permit as each attempt leaves, after
    /// what `with_before_attempt` writes down, but not before it.
    #[must_use]
    pub(crate) fn with_leaving_check(
        mut self,
        check: impl Fn() -> Result<(), Refusal> + Send + Sync + 'static,
    ) -> Self {
        self.on_leaving = Some(std::sync::Arc::new(check));
        self
    }

    /// Also wakes from backoff sleeps when `token` is cancelled (`permit` then says no).
    #[must_use]
    pub(crate) fn with_cancel(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Marks the changes seen so far, then asks: a change after this wakes [`Gate::sleep`].
    fn check(&mut self) -> Result<(), Refusal> {
        self.changes.borrow_and_update();
        (self.permit)()
    }

    /// Runs `attempt` (of `ticket`'s call) to its end, asking again at every change: once the
    /// answer is no and nothing of the attempt is written yet (it is connecting, handshaking,
    /// or waiting for its turn on a connection), it is dropped, and `Err` says why. An attempt
    /// already being written is left to finish: its remaining writes are refused by the
    /// transport, so no server can act on it.
    async fn race<T>(
        &mut self,
        attempt: impl Future<Output = Result<T, AttemptError>>,
        ticket: &Ticket,
    ) -> Result<T, AttemptError> {
        tokio::pin!(attempt);
        let cancel = self.cancel.clone().unwrap_or_default();
        let mut cancel_seen = false;
        let mut changes_open = true;
        loop {
            tokio::select! {
                r = &mut attempt => return r,
                () = cancel.cancelled(), if !cancel_seen => cancel_seen = true,
                changed = self.changes.changed(), if changes_open => {
                    changes_open = changed.is_ok();
                }
            }
            if let Err(r) = (self.permit)()
                && !ticket.started()
            {
                return Err(AttemptError::Stopped(r));
            }
        }
    }

    /// Everything that must hold as an attempt leaves: the permit, and the check of what
    /// `before_attempt` wrote down. Asked last thing before the request goes on the wire.
    fn check_leaving(&mut self) -> Result<(), Refusal> {
        self.check()?;
        match &self.on_leaving {
            Some(f) => f(),
            None => Ok(()),
        }
    }

    /// Sleeps `wait`, re-asking at every change; `Err` as soon as the answer is no.
    async fn sleep(&mut self, wait: Duration) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        let cancel = self.cancel.clone().unwrap_or_default();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                () = cancel.cancelled() => {
                    (self.permit)()?;
                    tokio::time::sleep_until(deadline).await;
                    return Ok(());
                }
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // Nobody can announce changes any more: the attempt re-asks anyway.
                        tokio::time::sleep_until(deadline).await;
                        return Ok(());
                    }
                    (self.permit)()?;
                }
            }
        }
    }
}

/// The 1BitPay API client. Cheap to share behind an `Arc`.
pub struct Client {
    /// The transport: its own connections, every write of a request gated.
    wire: Wire,
    cfg: ClientConfig,
    limiter: DefaultDirectRateLimiter,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The last response that carried a `Date`.
    last_date: std::sync::Mutex<Option<DateReading>>,
    /// The wall clock: request timestamps, and this host's time against the server's `Date`.
    clock: Clock,
    /// Asked before every attempt of every call, listings and collections included (in a pair:
    /// whether this instance still leads), so that a process resumed after a pause retries
    /// nothing once it has lost the lead.
    permit: Option<AttemptPermit>,
}

/// One server `Date`, as this host's clock read it.
#[derive(Debug, Clone, Copy)]
struct DateReading {
    /// When its answer came, on the monotonic clock.
    at: std::time::Instant,
    /// The `Date`, in ms since the epoch.
    date_ms: i64,
    /// How long the request took from leaving to its answer's headers, in ms.
    took_ms: i64,
}

/// A check made before every HTTP attempt of every call.
pub(crate) type AttemptPermit = std::sync::Arc<dyn Fn() -> Result<(), Refusal> + Send + Sync>;

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish()
    }
}

impl Client {
    /// Builds a client; fails only if the HTTP stack cannot be set up.
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let wire = Wire::new(
            &cfg.base_url,
            cfg.timeout.min(Duration::from_secs(10)),
            cfg.ca_file.as_deref(),
        )
        .map_err(|detail| ClientError::Request {
            endpoint: "client",
            detail,
        })?;
        let limiter = RateLimiter::direct(Quota::per_second(cfg.max_requests_per_second));
        Ok(Self {
            wire,
            cfg,
            limiter,
            metrics: None,
            last_date: std::sync::Mutex::new(None),
            clock: Clock::system(),
            permit: None,
        })
    }

    /// Why this host's clock cannot be trusted for windows, judged now by the last `Date` seen
    /// after `since` (any, when `None`): none seen, or possibly more than
    /// [`crate::domain::clock_bound`] off either way. The reading is carried to now on the
    /// monotonic clock, so a wall clock stepped since the answer came is judged as it is now.
    pub(crate) fn clock_doubt(&self, since: Option<std::time::Instant>) -> Option<ClockDoubt> {
        let last = *self.last_date.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = last.filter(|r| since.is_none_or(|s| r.at >= s)) else {
            return Some(ClockDoubt::Unknown);
        };
        let since_ms = i64::try_from(r.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        // What the wall clock would read minus the Date, had it moved only as time passed.
        let ahead_ms = self
            .clock
            .now_ms()
            .saturating_sub(since_ms)
            .saturating_sub(r.date_ms);
        crate::domain::judge_clock(ahead_ms, r.took_ms, self.cfg.max_clock_skew)
    }

    /// Notes the server's `Date` on an answer that took `took` from leaving to arriving.
    fn note_server_date(&self, date: SystemTime, took: Duration) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let date_ms = match date.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => ms(d),
            Err(_) => 0,
        };
        *self.last_date.lock().unwrap_or_else(|p| p.into_inner()) = Some(DateReading {
            at: std::time::Instant::now(),
            date_ms,
            took_ms: ms(took),
        });
    }

    /// Asks `permit` before every attempt of every call.
    #[must_use]
    pub(crate) fn with_attempt_permit(mut self, permit: Option<AttemptPermit>) -> Self {
        self.permit = permit;
        self
    }

    /// Reads `clock` instead of the system clock (it should be the ledger's).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Observes every call's duration in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The configuration this client was built with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Every request on its way out: a change of what may be sent goes through it (see
    /// [`Outbox::change`]).
    #[must_use]
    pub fn outbox(&self) -> &std::sync::Arc<Outbox> {
        self.wire.outbox()
    }

    /// The signed public headers for one attempt of a request with `body`.
    fn headers(&self, endpoint: &'static str, body: &str) -> Result<HeaderMap, ClientError> {
        let nonce = crate::random::nonce().map_err(|e| ClientError::Request {
            endpoint,
            detail: e.to_string(),
        })?;
        let ts = self.clock.now_ms().to_string();
        let public = [
            ("Nonce", nonce.as_str()),
            ("TimeStamp", ts.as_str()),
            ("MerchantNo", self.cfg.merchant_no.as_str()),
            ("SignType", "1"),
            ("Lang", self.cfg.lang.as_str()),
            ("ApiKey", self.cfg.api_key.as_str()),
        ];
        let body_fields = signature::body_params(body).map_err(|e| ClientError::Request {
            endpoint,
            detail: e.to_string(),
        })?;
        let canonical = signature::canonical_string(
            public
                .iter()
                .copied()
                .chain(body_fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            self.cfg.sign_order,
        );
        let signature =
            signature::request_signature(&canonical, self.cfg.api_secret.expose_secret());
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in public
            .iter()
            .chain(std::iter::once(&("Sign", signature.as_str())))
        {
            let v = HeaderValue::from_str(value).map_err(|_| ClientError::Request {
                endpoint,
                detail: format!("header {name} has characters HTTP does not allow"),
            })?;
            h.insert(*name, v);
        }
        Ok(h)
    }

    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.cfg.max_backoff);
        let jittered = exp.mul_f64(crate::random::unit_fraction());
        match retry_after {
            Some(ra) => ra.min(self.cfg.max_backoff).max(jittered),
            None => jittered,
        }
    }

    /// One attempt of `ticket`'s call: sign, send (every write asked of the ticket), read,
    /// check the envelope. The caller waits for the rate limiter.
    async fn attempt(
        &self,
        endpoint: &'static str,
        body: &str,
        ticket: &std::sync::Arc<Ticket>,
    ) -> Result<Reply, AttemptError> {
        let url = self
            .cfg
            .base_url
            .join(endpoint.trim_start_matches('/'))
            .map_err(|e| {
                AttemptError::Final(ClientError::Request {
                    endpoint,
                    detail: e.to_string(),
                })
            })?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let named = self.wire.url_of(url.path());
        let headers = self.headers(endpoint, body).map_err(AttemptError::Final)?;
        tracing::trace!(endpoint, url = %named, body_bytes = body.len(), "sending");
        let sent = std::time::Instant::now();
        let answer = tokio::time::timeout(
            self.cfg.timeout,
            self.wire.post(
                ticket,
                &path,
                headers,
                body.to_owned(),
                self.cfg.max_response_bytes,
            ),
        )
        .await
        .map_err(|_| AttemptError::Retry(format!("timed out to {named}"), None))?
        .map_err(|e| match e {
            WireError::Stopped(r) => AttemptError::Stopped(r),
            WireError::Connect(m) => {
                AttemptError::Retry(format!("cannot connect to {named}: {m}"), None)
            }
            WireError::Transport(m) => {
                AttemptError::Retry(format!("transport error to {named}: {m}"), None)
            }
        })?;
        let status = answer.status;
        tracing::trace!(
            endpoint,
            status,
            took_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX),
            "answered"
        );
        let server_date = answer
            .headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        if let Some(date) = server_date {
            self.note_server_date(date, sent.elapsed());
        }
        let retry_after = answer
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match answer.body {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(AttemptError::Final(ClientError::BodyTooLarge {
                    endpoint,
                    limit: self.cfg.max_response_bytes,
                }));
            }
            Err(BodyError::Transport(m)) => {
                return Err(AttemptError::Retry(
                    format!("transport error to {named}: {m}"),
                    None,
                ));
            }
        };
        if status == 429 || (500..600).contains(&status) {
            return Err(AttemptError::RetryStatus(
                status,
                snippet(&bytes),
                retry_after,
            ));
        }
        if !(200..300).contains(&status) {
            return Err(AttemptError::Status(status, snippet(&bytes)));
        }
        decode_envelope(endpoint, &bytes, server_date).map_err(AttemptError::Final)
    }

    /// Sends `body` (already JSON) to `endpoint` with retries, and returns the envelope's data.
    #[tracing::instrument(skip_all, fields(endpoint))]
    pub(crate) async fn call_raw(
        &self,
        endpoint: &'static str,
        body: &str,
    ) -> Result<Reply, ClientError> {
        self.call_gated(endpoint, body, None).await
    }

    /// [`Client::call_raw`], asking `gate` before every attempt and waking from backoff sleeps
    /// when it says no.
    async fn call_gated(
        &self,
        endpoint: &'static str,
        body: &str,
        gate: Option<&mut Gate>,
    ) -> Result<Reply, ClientError> {
        let started = std::time::Instant::now();
        let result = self.call_with_retries(endpoint, body, gate).await;
        if let Some(m) = &self.metrics {
            m.observe_api(endpoint_label(endpoint), started.elapsed());
        }
        result
    }

    async fn call_with_retries(
        &self,
        endpoint: &'static str,
        body: &str,
        mut gate: Option<&mut Gate>,
    ) -> Result<Reply, ClientError> {
        let mut attempts = 0;
        let stopped = |attempts, reason| ClientError::Stopped {
            endpoint,
            attempts,
            reason,
        };
        // What every write of every attempt asks, as the bytes leave: whether this instance may
        // send at all (in a pair: it leads), the caller's gate, and whether what the gate wrote
        // down before the attempt still holds.
        let permit: Permit = {
            let client = self.permit.clone();
            let leaving = gate.as_ref().and_then(|g| g.on_leaving.clone());
            let gate = gate.as_ref().map(|g| g.permit.clone());
            std::sync::Arc::new(move || {
                for check in [&client, &gate, &leaving].into_iter().flatten() {
                    check()?;
                }
                Ok(())
            })
        };
        let ticket = self.wire.outbox().ticket(permit);
        loop {
            self.limiter.until_ready().await;
            if let Some(permit) = &self.permit {
                permit().map_err(|r| stopped(attempts, r))?;
            }
            if let Some(g) = gate.as_deref_mut() {
                g.check().map_err(|r| stopped(attempts, r))?;
                if let Some(f) = &g.before_attempt {
                    f(attempts).await.map_err(|r| stopped(attempts, r))?;
                }
                // The write took time: what is in force may have changed meanwhile.
                g.check_leaving().map_err(|r| stopped(attempts, r))?;
            }
            let attempt = self.attempt(endpoint, body, &ticket);
            let result = match gate.as_deref_mut() {
                Some(g) => g.race(attempt, &ticket).await,
                None => attempt.await,
            };
            let err = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            attempts += 1;
            let (retry_after, final_err) = match err {
                // Refused before (or while) it was written: it never reached the server whole,
                // and is not counted as an attempt.
                AttemptError::Stopped(r) => return Err(stopped(attempts - 1, r)),
                AttemptError::Final(e) => return Err(e),
                AttemptError::Status(status, body) => {
                    return Err(ClientError::Http {
                        endpoint,
                        status,
                        attempts,
                        body,
                    });
                }
                AttemptError::Retry(message, ra) => (
                    ra,
                    ClientError::Network {
                        endpoint,
                        attempts,
                        message,
                    },
                ),
                AttemptError::RetryStatus(status, body, ra) => (
                    ra,
                    ClientError::Http {
                        endpoint,
                        status,
                        attempts,
                        body,
                    },
                ),
            };
            if attempts > self.cfg.max_retries {
                return Err(final_err);
            }
            let wait = self.backoff(attempts - 1, retry_after);
            tracing::debug!(endpoint, attempt = attempts, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %final_err, "retrying");
            match gate.as_deref_mut() {
                Some(g) => g.sleep(wait).await.map_err(|r| stopped(attempts, r))?,
                None => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Serializes `body`, calls `endpoint`, and decodes `data` as `T`.
    pub(crate) async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &B,
    ) -> Result<T, ClientError> {
        let text = serde_json::to_string(body).map_err(|e| ClientError::Request {
            endpoint,
            detail: e.to_string(),
        })?;
        let reply = self.call_raw(endpoint, &text).await?;
        let data = reply.data.as_deref().unwrap_or("null");
        serde_json::from_str(data).map_err(|e| ClientError::Decode {
            endpoint,
            detail: e.to_string(),
        })
    }

    /// One page of pending transactions (`page_num` from 1).
    pub async fn pending(&self, page_num: u32, page_size: u32) -> Result<PendingPage, ClientError> {
        Ok(self
            .pending_with_reply(page_num, page_size, usize::MAX)
            .await?
            .0)
    }

    /// One page of pending transactions, each item's JSON at most `max_item_bytes` (a larger one
    /// is kept as a bounded prefix and held: see [`parse_pending_page_within`]).
    pub(crate) async fn pending_within(
        &self,
        page_num: u32,
        page_size: u32,
        max_item_bytes: usize,
    ) -> Result<PendingPage, ClientError> {
        Ok(self
            .pending_with_reply(page_num, page_size, max_item_bytes)
            .await?
            .0)
    }

    /// One page of pending transactions, with the reply's metadata (server clock).
    pub(crate) async fn pending_with_reply(
        &self,
        page_num: u32,
        page_size: u32,
        max_item_bytes: usize,
    ) -> Result<(PendingPage, Reply), ClientError> {
        let body = serde_json::to_string(&PendingRequest {
            page_num,
            page_size,
        })
        .map_err(|e| ClientError::Request {
            endpoint: PENDING,
            detail: e.to_string(),
        })?;
        let reply = self.call_raw(PENDING, &body).await?;
        let data = reply.data.as_deref().ok_or(ClientError::Decode {
            endpoint: PENDING,
            detail: "no data in the envelope".into(),
        })?;
        let page =
            parse_pending_page_within(data, max_item_bytes).map_err(|e| ClientError::Decode {
                endpoint: PENDING,
                detail: e.to_string(),
            })?;
        Ok((page, reply))
    }

    /// Approves or rejects one transaction.
    pub async fn approve(&self, req: &ApproveRequest) -> Result<(), ClientError> {
        self.approve_gated(req, None).await
    }

    /// Approves or rejects one transaction, asking `gate` before every attempt.
    pub async fn approve_gated(
        &self,
        req: &ApproveRequest,
        gate: Option<&mut Gate>,
    ) -> Result<(), ClientError> {
        let text = serde_json::to_string(req).map_err(|e| ClientError::Request {
            endpoint: APPROVE,
            detail: e.to_string(),
        })?;
        self.call_gated(APPROVE, &text, gate).await.map(|_| ())
    }

    /// Sweeps main coins (`is_main`) or tokens, with `data` signed over the collect text.
    pub async fn collect(&self, is_main: bool, data: &str) -> Result<(), ClientError> {
        self.collect_with(is_main, data, None).await
    }

    /// [`Client::collect`], asking `gate` before every attempt (the kill switch).
    pub(crate) async fn collect_gated(
        &self,
        is_main: bool,
        data: &str,
        gate: &mut Gate,
    ) -> Result<(), ClientError> {
        self.collect_with(is_main, data, Some(gate)).await
    }

    async fn collect_with(
        &self,
        is_main: bool,
        data: &str,
        gate: Option<&mut Gate>,
    ) -> Result<(), ClientError> {
        let req = CollectRequest {
            is_main: u8::from(is_main),
            data: data.to_owned(),
        };
        let text = serde_json::to_string(&req).map_err(|e| ClientError::Request {
            endpoint: COLLECT,
            detail: e.to_string(),
        })?;
        self.call_gated(COLLECT, &text, gate).await.map(|_| ())
    }

    /// The platform's C2C buy and sell rates.
    pub async fn rate(&self, crypto: &str, legal: &str) -> Result<Rate, ClientError> {
        self.call(
            RATE,
            &RateRequest {
                crypto_currency: crypto.to_owned(),
                legal_currency: legal.to_owned(),
            },
        )
        .await
    }

    /// Creates a C2C order.
    pub async fn create_order(&self, order: &CreateOrder) -> Result<OrderCreated, ClientError> {
        self.call(CREATE_ORDER, order).await
    }

    /// Creates a batch of C2C sell orders (an array body: it contributes no fields to `Sign`).
    pub async fn batch_sell(&self, orders: &[SellOrder]) -> Result<BatchSold, ClientError> {
        self.call(BATCH_SELL, orders).await
    }
}

/// A short, bounded metric label for an endpoint path.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        PENDING => "pending",
        APPROVE => "approve",
        COLLECT => "collect",
        RATE => "rate",
        CREATE_ORDER => "create_order",
        BATCH_SELL => "batch_sell",
        _ => "other",
    }
}

enum AttemptError {
    /// Refused by the caller's gate or this instance's permit before it was (wholly) written.
    Stopped(Refusal),
    /// Not worth retrying.
    Final(ClientError),
    /// A non-retryable HTTP status.
    Status(u16, String),
    /// Network failure: retry.
    Retry(String, Option<Duration>),
    /// 429 or 5xx: retry.
    RetryStatus(u16, String, Option<Duration>),
}

fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.trim().chars().filter(|c| !c.is_control()).collect()
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(default)]
    message: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

fn decode_envelope(
    endpoint: &'static str,
    bytes: &[u8],
    server_date: Option<SystemTime>,
) -> Result<Reply, ClientError> {
    let env: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        endpoint,
        detail: format!("not a JSON envelope ({e}): {}", snippet(bytes)),
    })?;
    let code_text = env.code.map(|c| c.get().trim_matches('"').to_string());
    let code = code_text
        .as_deref()
        .and_then(|c| c.parse::<i64>().ok())
        .ok_or_else(|| ClientError::Decode {
            endpoint,
            detail: format!("envelope has no numeric code: {}", snippet(bytes)),
        })?;
    if code != 200 {
        return Err(ClientError::Api {
            endpoint,
            code,
            message: env.message.unwrap_or_default(),
        });
    }
    let data = env
        .data
        .map(|d| d.get().to_string())
        .filter(|d| d != "null");
    Ok(Reply { data, server_date })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_with_code_other_than_200_is_an_error_even_over_http_200() {
        let e = decode_envelope(PENDING, br#"{"code":500,"message":"busy"}"#, None).unwrap_err();
        assert!(matches!(e, ClientError::Api { code: 500, .. }), "{e}");
        assert!(e.to_string().contains("busy"));
    }

    fn client_at(clock: Clock) -> Client {
        Client::new(ClientConfig {
            base_url: reqwest::Url::parse("http://127.0.0.1:9/").unwrap(),
            merchant_no: "m".into(),
            api_key: "k".into(),
            api_secret: SecretString::from("s"),
            lang: Lang::En,
            timeout: Duration::from_secs(5),
            max_requests_per_second: NonZeroU32::new(10).unwrap(),
            sign_order: SignOrder::CaseInsensitive,
            max_response_bytes: 1 << 20,
            max_retries: 0,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            max_clock_skew: Duration::from_secs(30),
            ca_file: None,
        })
        .unwrap()
        .with_clock(clock)
    }

    #[test]
    fn a_clock_stepped_after_the_last_date_is_judged_as_it_reads_now() {
        // The injected clock stands still while real time passes: the reading is carried to
        // now on the monotonic clock, so the margins below leave a second for the test itself.
        let date = 1_700_000_000_000;
        let (clock, hand) = Clock::manual(date);
        let c = client_at(clock);
        assert_eq!(c.clock_doubt(None), Some(ClockDoubt::Unknown));
        // The server's Date names the second the clock reads: in step.
        let took = Duration::from_millis(5);
        c.note_server_date(
            std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            took,
        );
        assert_eq!(c.clock_doubt(None), None);
        // Stepped ahead since: within 30 s + 1 s + 1 s, then beyond.
        hand.set_ms(date + 31_000);
        assert_eq!(c.clock_doubt(None), None);
        hand.set_ms(date + 33_000);
        assert!(matches!(
            c.clock_doubt(None),
            Some(ClockDoubt::Off { ahead: true, .. })
        ));
        // Stepped back: the Date's second and the answer's 5 ms count against it.
        hand.set_ms(date - 30_000);
        assert_eq!(c.clock_doubt(None), None);
        hand.set_ms(date - 32_000);
        assert!(matches!(
            c.clock_doubt(None),
            Some(ClockDoubt::Off { ahead: false, .. })
        ));
        // A Date that came before `since` does not count.
        let later = std::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(c.clock_doubt(Some(later)), Some(ClockDoubt::Unknown));
    }

    #[test]
    fn a_retrys_wait_is_drawn_under_a_bound_that_doubles_with_each_retry_up_to_the_maximum() {
        let mut c = client_at(Clock::system());
        c.cfg.initial_backoff = Duration::from_millis(10);
        c.cfg.max_backoff = Duration::from_secs(1);
        let ms = Duration::from_millis;
        for (retry, bound) in [(0, ms(10)), (1, ms(20)), (3, ms(80)), (12, ms(1000))] {
            let waits: Vec<Duration> = (0..200).map(|_| c.backoff(retry, None)).collect();
            // Uniform under the bound: 200 draws all in its lower half would be a 2^-200 chance.
            assert!(waits.iter().all(|w| *w < bound), "retry {retry}: {waits:?}");
            assert!(
                waits.iter().any(|w| *w >= bound / 2),
                "retry {retry}: {waits:?}"
            );
        }
        // A server's Retry-After is waited out, up to the maximum.
        assert!(c.backoff(0, Some(ms(500))) >= ms(500));
        assert_eq!(c.backoff(0, Some(Duration::from_secs(30))), ms(1000));
    }

    #[test]
    fn a_string_code_200_is_success() {
        let r = decode_envelope(APPROVE, br#"{"code":"200","message":"Success"}"#, None).unwrap();
        assert!(r.data.is_none());
    }
}
