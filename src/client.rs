//! The 1BitPay API client: signed requests, envelope handling, timeouts, capped bodies, bounded
//! retries with backoff and jitter, and an outbound rate limit.

mod error;
mod gate;
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

pub use error::ClientError;
pub use gate::{Gate, Refusal};
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

/// A successful call: the envelope's `data` text, and the server's `Date` header.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// `data` as raw JSON (`None` when absent or null).
    pub(crate) data: Option<String>,
    /// The response `Date`, for clock-skew checks.
    pub(crate) server_date: Option<SystemTime>,
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
mod tests;
