//! The operator API, following the QbitPay conventions: HTTP Basic auth with an API key as the
//! user name (only SHA-256 digests are stored), the QbitPay error object on every failure,
//! cursor-paged lists; authentication and request counting are middleware. Also the C2C order
//! callback that 1BitPay posts, verified by its request signature.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use openssl::sha::sha256;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::client::signature::{self, SignOrder};
use crate::control::Mode;
use crate::cycle::Engine;
use crate::display::hex;
use crate::domain::{Action, TxId};
use crate::health::Health;
use crate::ledger::{DecisionRow, LedgerHandle, PageQuery};
use crate::metrics::Metrics;

/// Default operator API request budget per second.
pub(crate) const DEFAULT_RATE: u32 = 20;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every operator route, and `/metrics`.
    Operator,
    /// `/metrics` only: the key a scraper (often on another host) holds must not lift a pause.
    Metrics,
}

/// A keys file that cannot be used; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiKeysError {
    /// The file cannot be read.
    #[error("cannot read API keys file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A word after the digest that is not a scope.
    #[error("API keys file {} line {line}: {word:?} is not a scope; the only one is `metrics`", .path.display())]
    Scope {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The word.
        word: String,
    },
    /// A line that is not a digest.
    #[error(
        "API keys file {} line {line}: expected a lowercase hex SHA-256 (64 characters); \
         `cosigner apikey new` prints one",
        .path.display()
    )]
    Digest {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// The thread reading the file stopped before it finished; the keys in force are kept.
    #[error("API keys file: {0}")]
    Interrupted(String),
}

/// The accepted API keys, as SHA-256 digests with their scope.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    digests: Vec<([u8; 32], Scope)>,
}

impl ApiKeys {
    /// Reads a keys file: one lowercase hex SHA-256 per line, optionally followed by the word
    /// `metrics` for a key that may only scrape `/metrics`; `#` comments, blank lines ignored.
    pub(crate) fn load(path: &Path) -> Result<Self, ApiKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut digests: Vec<([u8; 32], Scope)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            let (l, scope) = match l.split_once(char::is_whitespace) {
                None => (l, Scope::Operator),
                Some((d, "metrics")) => (d, Scope::Metrics),
                Some((_, other)) => {
                    return Err(ApiKeysError::Scope {
                        path: path.to_owned(),
                        line: i + 1,
                        word: other.trim().to_owned(),
                    });
                }
            };
            if l.len() != 64
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ApiKeysError::Digest {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
            // 64 lowercase hex digits, checked above.
            let mut d = [0u8; 32];
            for (byte, pair) in d.iter_mut().zip(l.as_bytes().chunks(2)) {
                let nibble = |c: u8| {
                    if c.is_ascii_digit() {
                        c - b'0'
                    } else {
                        c - b'a' + 10
                    }
                };
                *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
            }
            if !digests.contains(&(d, scope)) {
                digests.push((d, scope));
            }
        }
        Ok(Self { digests })
    }

    /// Whether `key` is accepted for `scope` (an operator key is accepted for both). Every
    /// stored digest is compared, each in constant time, so the answer's timing says nothing
    /// about how close a guess came.
    #[must_use]
    pub(crate) fn accepts(&self, key: &str, scope: Scope) -> bool {
        let d = sha256(key.as_bytes());
        let mut found = false;
        for (stored, s) in &self.digests {
            let fits = *s == Scope::Operator || *s == scope;
            found |= openssl::memcmp::eq(stored, &d) & fits;
        }
        found && !key.is_empty()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// The operator API's keys, re-read from `http.api_keys_file` on every reload (SIGHUP,
/// `POST /v1/policy/reload`), so that a key added with `cosigner apikey new` works without a
/// restart. An invalid file is refused and the keys in force are kept; a file that is gone
/// revokes every key (deleting it is how an operator withdraws them all).
#[derive(Debug, Default)]
pub(crate) struct KeyStore {
    file: Option<PathBuf>,
    keys: RwLock<Option<Arc<ApiKeys>>>,
}

impl KeyStore {
    /// Keys loaded from `file` (`None`: the API refuses every call).
    pub(crate) fn new(file: Option<PathBuf>, keys: Option<ApiKeys>) -> Self {
        Self {
            file,
            keys: RwLock::new(keys.map(Arc::new)),
        }
    }

    /// The keys in force.
    pub(crate) fn current(&self) -> Option<Arc<ApiKeys>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// [`KeyStore::reload`] on a blocking thread (it reads and parses a file), for async code.
    pub(crate) async fn reload_off_runtime(
        self: &Arc<Self>,
        why: &'static str,
    ) -> Result<Option<usize>, ApiKeysError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.reload(why))
            .await
            .unwrap_or_else(|e| {
                Err(ApiKeysError::Interrupted(format!(
                    "the thread reloading the keys stopped: {e}"
                )))
            })
    }

    /// Reads the file again; returns how many keys are now in force (`None` without a file).
    pub(crate) fn reload(&self, why: &str) -> Result<Option<usize>, ApiKeysError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let loaded = match ApiKeys::load(file) {
            Err(ApiKeysError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(file = %file.display(), by = why, "the operator API keys file is gone: no key is accepted until it is back");
                Ok(ApiKeys::default())
            }
            other => other,
        };
        match loaded {
            Ok(k) => {
                let n = k.len();
                match self.keys.write() {
                    Ok(mut g) => *g = Some(Arc::new(k)),
                    Err(poisoned) => *poisoned.into_inner() = Some(Arc::new(k)),
                }
                tracing::info!(keys = n, file = %file.display(), by = why, "operator API keys reloaded");
                Ok(Some(n))
            }
            Err(e) => {
                tracing::error!(error = %e, by = why, "operator API keys reload refused; the keys in force are kept");
                Err(e)
            }
        }
    }
}

/// Lowercase hex SHA-256 of a key: the line stored in the keys file.
#[must_use]
pub fn digest(key: &str) -> String {
    hex(&sha256(key.as_bytes()))
}

/// A fresh API key (`cos_` + 64 hex digits from OpenSSL's CSPRNG) and its keys-file line.
pub(crate) fn new_key() -> Result<(String, String), crate::random::RandomError> {
    let key = format!("cos_{}", hex(&crate::random::bytes::<32>()?));
    let line = digest(&key);
    Ok((key, line))
}

/// What the C2C order callback needs.
#[derive(Clone)]
pub(crate) struct Callbacks {
    /// The API secret the callback's request signature (`signature`) is made with.
    pub(crate) api_secret: SecretString,
    /// The canonical order of the string the request signature covers.
    pub(crate) sign_order: SignOrder,
}

/// Shared state of the operator routes.
#[derive(Clone)]
pub(crate) struct OperatorState {
    /// The engine (policy, mode).
    pub(crate) engine: Arc<Engine>,
    /// The ledger.
    pub(crate) ledger: LedgerHandle,
    /// Accepted keys; none when `http.api_keys_file` is not set (every route refuses).
    pub(crate) keys: Arc<KeyStore>,
    /// Request budget of authenticated calls.
    pub(crate) limiter: Arc<DefaultDirectRateLimiter>,
    /// A separate budget for failed authentications, so that a flood of them never uses up the
    /// budget an operator's `cosigner pause` needs.
    pub(crate) unauthenticated: Arc<DefaultDirectRateLimiter>,
    /// The listener's address: `Host` must name it (no DNS rebinding from a browser).
    pub(crate) listen: Option<SocketAddr>,
    /// Readiness, for `/v1/status`.
    pub(crate) health: Arc<Health>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The order callback, when enabled.
    pub(crate) callbacks: Option<Callbacks>,
    /// In a pair: the lead; a standby refuses writes (409, naming the leader).
    pub(crate) lead: Option<crate::leader::Lead>,
    /// Who a mode change is recorded as made by: "operator API", or "control socket".
    pub(crate) by: &'static str,
}

impl OperatorState {
    /// `Ok` unless this instance is a standby of a pair (or its lead is unconfirmed): then 409,
    /// naming the leader, for an operator write has to go to the instance that decides.
    fn refuse_on_standby(&self) -> Result<(), ApiError> {
        let Some(lead) = &self.lead else {
            return Ok(());
        };
        lead.current().map(|_| ()).map_err(|e| {
            let leader = lead.leader_name();
            error(
                StatusCode::CONFLICT,
                "standby_error",
                format!(
                    "{e}: send operator writes to the leader{}",
                    leader
                        .as_deref()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default()
                ),
                json!({"leader": leader}),
            )
        })
    }
    /// `Ok` unless this member of a pair stands by for a schema other than the one it opened
    /// (it writes nothing, so a pause here would bind nothing): then 409, naming the leader.
    fn refuse_on_other_schema(&self) -> Result<(), ApiError> {
        match &self.lead {
            Some(lead) if matches!(lead.role(), crate::leader::Role::Outdated { .. }) => {
                self.refuse_on_standby()
            }
            _ => Ok(()),
        }
    }

    /// A limiter of `per_second` requests.
    #[must_use]
    pub(crate) fn limiter(per_second: u32) -> Arc<DefaultDirectRateLimiter> {
        let q = std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Arc::new(RateLimiter::direct(Quota::per_second(q)))
    }
}

/// A failed operator call: rendered as the QbitPay error object with its status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    detail: Value,
}

impl IntoResponse for ApiError {
    // No `WWW-Authenticate` challenge on 401: a browser would prompt for the key and cache it.
    fn into_response(self) -> Response {
        let mut body = json!({"type": self.kind, "message": self.message});
        if !self.detail.is_null() {
            body["detail"] = self.detail;
        }
        (self.status, axum::Json(body)).into_response()
    }
}

fn error(
    status: StatusCode,
    kind: &'static str,
    message: impl Into<String>,
    detail: Value,
) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
        detail,
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Value::Null,
    )
}

fn internal(message: impl Into<String>) -> ApiError {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        message,
        Value::Null,
    )
}

fn too_many() -> ApiError {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "too many requests; slow down",
        Value::Null,
    )
}

/// Checks HTTP Basic auth with an API key as the user name (the password is ignored): `Ok` when
/// `keys` accept it, else why not.
pub(crate) fn authenticate(
    keys: Option<&ApiKeys>,
    scope: Scope,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let Some(keys) = keys else {
        return Err("the operator API is off: set http.api_keys_file");
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err("no API key provided: use HTTP Basic auth with the key as user name");
    };
    let decoded = value
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let key = decoded
        .as_deref()
        .map(|d| d.split_once(':').map_or(d, |(u, _)| u));
    match key {
        Some(k) if keys.accepts(k, scope) => Ok(()),
        _ => Err("invalid API key"),
    }
}

// The operator API's checks are middleware, one per concern, applied per route group in
// `router`. A request meets them in this order, and the first refusal answers:
//   count_requests  (every answer of a matched route, refusals included)
//   check_host      `Host` names the listener (no DNS rebinding)
//   require_key     an accepted API key; failures draw on their own budget
//   spend_budget    the request budget of authenticated calls
//   refuse_cross_site  state-changing routes only: no foreign `Origin`, a JSON content type
// The handlers behind them only do their job.

/// What [`require_key`] checks a call against.
#[derive(Clone)]
pub(crate) struct KeyCheck {
    keys: Arc<KeyStore>,
    /// What the route needs a key to be allowed.
    scope: Scope,
    /// The budget failed attempts draw on: once it is spent they get 429 instead of 401, and
    /// the budget of authenticated calls (which an operator's `cosigner pause` needs) is
    /// untouched. `None`: every failure is a 401.
    failures: Option<Arc<DefaultDirectRateLimiter>>,
}

impl KeyCheck {
    /// The check of `/metrics`: operator and `metrics` keys, no budget for failures (it has no
    /// request budget).
    pub(crate) fn for_metrics(keys: Arc<KeyStore>) -> Self {
        Self {
            keys,
            scope: Scope::Metrics,
            failures: None,
        }
    }
}

/// Refuses a call whose `Host` does not name the listener (see [`check_host_header`]).
async fn check_host(
    State(listen): State<Option<SocketAddr>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_host_header(listen, request.headers())?;
    Ok(next.run(request).await)
}

/// Refuses a call without an accepted API key: 401, or 429 once the failure budget is spent.
pub(crate) async fn require_key(
    State(check): State<KeyCheck>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = check.keys.current();
    if let Err(m) = authenticate(keys.as_deref(), check.scope, request.headers()) {
        if check.failures.as_ref().is_some_and(|f| f.check().is_err()) {
            return Err(too_many());
        }
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            m,
            Value::Null,
        ));
    }
    Ok(next.run(request).await)
}

/// Draws one call from the request budget of authenticated calls: 429 when it is spent.
async fn spend_budget(
    State(budget): State<Arc<DefaultDirectRateLimiter>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if budget.check().is_err() {
        return Err(too_many());
    }
    Ok(next.run(request).await)
}

/// What a state-changing route checks once the caller is known, so that no web page a browser
/// on this host shows can make the call: no `Origin` but the listener's own, and a JSON
/// content type (a cross-site form cannot send it without a CORS preflight, which is never
/// granted).
async fn refuse_cross_site(request: Request, next: Next) -> Result<Response, ApiError> {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| format!("http://{h}"));
        if origin.to_str().ok() != own.as_deref() {
            return Err(error(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                format!(
                    "requests from another origin ({}) are refused",
                    String::from_utf8_lossy(origin.as_bytes())
                ),
                Value::Null,
            ));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "send Content-Type: application/json",
            Value::Null,
        ));
    }
    Ok(next.run(request).await)
}

/// Counts every answer of a matched route in `cosigner_operator_requests_total{route,status}`,
/// labelled with the route's pattern (`/v1/decisions/{id}`), never the raw path, so that a
/// caller cannot mint label values.
async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics
        .operator_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

/// `Host` must be the listener: its IP literal (any IP literal when it listens on all
/// addresses) or `localhost` on loopback, with its port. A DNS name is what DNS rebinding
/// would send, so none is accepted.
fn check_host_header(listen: Option<SocketAddr>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(listen) = listen else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if host.is_some_and(|h| host_names_listener(h, listen)) {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        format!(
            "the Host header must name this listener ({listen}), not {:?}",
            host.unwrap_or("")
        ),
        Value::Null,
    ))
}

fn host_names_listener(host: &str, listen: SocketAddr) -> bool {
    let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    if authority.port_u16() != Some(listen.port()) {
        return false;
    }
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match name.parse::<IpAddr>() {
        Ok(ip) => listen.ip().is_unspecified() || ip == listen.ip(),
        Err(_) => name.eq_ignore_ascii_case("localhost") && listen.ip().is_loopback(),
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A decision as the API shows it.
#[must_use]
pub(crate) fn decision_json(r: &DecisionRow) -> Value {
    json!({
        "id": r.seq,
        "object": "decision",
        "tx_id": r.tx_id,
        "action": r.action,
        "rule": r.rule,
        "reason": r.reason,
        "status": r.status,
        "status_message": r.status_message,
        "dry_run": r.dry_run,
        "policy_sha256": r.policy_sha256,
        "recorded_at": ms_to_rfc3339(r.recorded_at_ms),
        "transaction": {
            "from": r.from, "to": r.to, "amount": r.amount, "chain_id": r.chain_id, "raw": r.tx_json,
        },
        "signed_text": r.signed_text,
        "data": r.data,
    })
}

/// The routes: `/v1/*` and, when enabled, `/callbacks/order`, each group behind its checks.
pub(crate) fn router(state: OperatorState) -> Router {
    let key_check = KeyCheck {
        keys: state.keys.clone(),
        scope: Scope::Operator,
        failures: Some(state.unauthenticated.clone()),
    };
    let changes = Router::new()
        .route("/v1/policy/reload", post(reload))
        .route("/v1/resume", post(resume))
        .route_layer(middleware::from_fn(refuse_cross_site));
    // The kill switch spends no budget: however busy other authenticated clients keep the API,
    // an operator's pause is never answered 429.
    let kill_switch = Router::new()
        .route("/v1/pause", post(pause))
        .route_layer(middleware::from_fn(refuse_cross_site));
    // A route layer wraps the routes already there, so the layer added last runs first.
    let mut r = Router::new()
        .route("/v1/decisions", get(list_decisions))
        .route("/v1/decisions/{id}", get(get_decision))
        .route("/v1/status", get(status))
        .route("/v1/policy", get(policy))
        .merge(changes)
        .route_layer(middleware::from_fn_with_state(
            state.limiter.clone(),
            spend_budget,
        ))
        .merge(kill_switch)
        .route_layer(middleware::from_fn_with_state(key_check, require_key))
        .route_layer(middleware::from_fn_with_state(state.listen, check_host));
    // The callback is authenticated by its request signature, not by an operator key.
    if state.callbacks.is_some() {
        r = r.route("/callbacks/order", post(order_callback));
    }
    r.route_layer(middleware::from_fn_with_state(
        state.metrics.clone(),
        count_requests,
    ))
    .fallback(not_found)
    .with_state(state)
}

/// The control socket's routes: pause, resume and status, with no key and no budget (the
/// socket's file permissions, owner and group only, are its authentication; a TCP flood cannot
/// reach it).
pub(crate) fn control_router(state: OperatorState) -> Router {
    Router::new()
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such route",
        Value::Null,
    )
}

/// The query parameter `name`'s value `v` as a whole number (a `u64`, or a [`TxId`]: the same
/// digits).
fn whole<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse::<T>()
        .map_err(|_| bad_request(format!("{name} must be a whole number, not {v:?}")))
}

fn parse_query(pairs: Vec<(String, String)>) -> Result<PageQuery, ApiError> {
    let mut q = PageQuery {
        limit: 10,
        ..PageQuery::default()
    };
    for (k, v) in pairs {
        let num = |name: &str| whole::<u64>(name, &v);
        match k.as_str() {
            "limit" => {
                let n = num("limit")?;
                if !(1..=100).contains(&n) {
                    return Err(bad_request("limit must be between 1 and 100"));
                }
                q.limit = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "starting_after" => q.starting_after = Some(num("starting_after")?),
            "ending_before" => q.ending_before = Some(num("ending_before")?),
            "tx_id" => q.tx_id = Some(whole::<TxId>("tx_id", &v)?),
            "rule" => q.rule = Some(v),
            "action" => {
                q.action = Some(
                    v.parse::<Action>()
                        .map_err(|m| bad_request(format!("action: {m}")))?,
                )
            }
            other => return Err(bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    if q.starting_after.is_some() && q.ending_before.is_some() {
        return Err(bad_request(
            "give starting_after or ending_before, not both",
        ));
    }
    Ok(q)
}

async fn list_decisions(
    State(s): State<OperatorState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(pairs)?;
    let (rows, more) = s
        .ledger
        .page(q)
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(Json(json!({
        "object": "list",
        "url": "/v1/decisions",
        "has_more": more,
        "data": rows.iter().map(decision_json).collect::<Vec<_>>(),
    })))
}

async fn get_decision(
    State(s): State<OperatorState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    // An id that is not a number names no decision either: 404, like any unknown id.
    let no_such = || {
        error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no decision {id:?}"),
            Value::Null,
        )
    };
    let seq: u64 = id.parse().map_err(|_| no_such())?;
    let row = s
        .ledger
        .get(seq)
        .await
        .map_err(|e| internal(e.to_string()))?;
    row.map(|r| Json(decision_json(&r))).ok_or_else(no_such)
}

async fn status(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    let policy = s.engine.policy();
    let ledger = &s.ledger;
    let usage = ledger
        .usage(policy.clone(), ledger.clock().now_ms())
        .await
        .map_err(|e| internal(e.to_string()))?;
    let counts = ledger.counts().await.map_err(|e| internal(e.to_string()))?;
    let dry_runs = ledger
        .dry_run_counts()
        .await
        .map_err(|e| internal(e.to_string()))?;
    let windows: Vec<Value> = policy
        .rules
        .iter()
        .filter_map(|r| {
            let l = r.limit.as_ref()?;
            let u = usage.rules.get(&r.name).copied().unwrap_or_default();
            Some(json!({
                "rule": r.name,
                "window": crate::display::window(l.window),
                "used_total": u.total.to_string(),
                "max_total": l.max_total.map(|t| t.to_string()),
                "used_count": u.count,
                "max_count": l.max_count,
            }))
        })
        .collect();
    let last = s
        .health
        .last_poll_ok_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let ready = s.health.readiness();
    let leadership = s.lead.as_ref().map(|lead| {
        let (role, epoch) = match lead.role() {
            crate::leader::Role::Leader { epoch } => ("leader", Some(epoch)),
            crate::leader::Role::Standby { .. } | crate::leader::Role::Outdated { .. } => {
                ("standby", None)
            }
        };
        let current = lead.current();
        json!({
            "role": role,
            "epoch": epoch,
            "leader": lead.leader_name(),
            "current": current.is_ok(),
            // Why this instance may not decide now (a standby, an unconfirmed lead, a ledger
            // schema newer than this cosigner's).
            "not_leading": current.err().map(|e| e.to_string()),
        })
    });
    Ok(Json(json!({
        "object": "status",
        "ledger": {"backend": ledger.backend_name(), "location": ledger.describe()},
        "leadership": leadership,
        "mode": s.engine.control().mode().as_str(),
        // False while a pause is in force that the ledger has not recorded yet.
        "mode_recorded": !s.engine.control().unrecorded(),
        "policy": {"sha256": policy.sha256, "file": policy.source},
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "last_successful_poll": (last > 0).then(|| ms_to_rfc3339(last)),
        "decisions": counts,
        "dry_run_decisions": dry_runs,
        "guard": policy.guard.as_ref().map(|g| json!({
            "window": crate::display::window(g.window),
            "used": usage.guard_approvals,
            "max_approvals": g.max_approvals,
        })),
        "windows": windows,
    })))
}

async fn policy(State(s): State<OperatorState>) -> Json<Value> {
    let p = s.engine.policy();
    let rules: Vec<Value> = p
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "action": r.action,
                // As text, as the policy writes them (and as JSON numbers cannot hold them all).
                "chains": r.chains.as_ref().map(|c| c.iter().map(u128::to_string).collect::<Vec<_>>()),
                "from_addresses": r.from.as_ref().map(|f| f.len()),
                "to_addresses": r.to.as_ref().map(|t| t.len()),
                "min_amount": r.min_amount.map(|a| a.to_string()),
                "max_amount": r.max_amount.map(|a| a.to_string()),
                "window": r.limit.as_ref().map(|l| crate::display::window(l.window)),
                "max_total": r.limit.as_ref().and_then(|l| l.max_total).map(|a| a.to_string()),
                "max_count": r.limit.as_ref().and_then(|l| l.max_count),
            })
        })
        .collect();
    Json(json!({
        "object": "policy",
        "sha256": p.sha256,
        "file": p.source,
        "default": p.default,
        "rules": rules,
        "guard": p.guard.as_ref().map(|g| json!({"window": crate::display::window(g.window), "max_approvals": g.max_approvals})),
        "warnings": p.warnings(),
    }))
}

async fn reload(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    s.refuse_on_standby()?;
    let previous = s.engine.policy().sha256.clone();
    let keys = s.keys.reload_off_runtime("operator API").await;
    let p = s
        .engine
        .control()
        .reload_policy("operator API")
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
                json!({"kept": previous}),
            )
        })?;
    match keys {
        Ok(n) => Ok(Json(json!({
            "object": "policy_reload", "sha256": p.sha256, "previous": previous, "api_keys": n,
        }))),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the policy was reloaded, but not the API keys: {e}"),
            json!({"sha256": p.sha256, "previous": previous, "api_keys_kept": true}),
        )),
    }
}

/// The mode `POST /v1/pause` asks for: `hold` unless the body says `{"mode": "reject"}`.
/// The body is read as bytes, so that even one that is not UTF-8 gets the QbitPay error object.
fn requested_pause(body: &[u8]) -> Result<Mode, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Mode::Hold);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad_request(format!("body: {e}")))?;
    match v.get("mode").and_then(|m| m.as_str()) {
        None | Some("hold") => Ok(Mode::Hold),
        Some("reject") => Ok(Mode::Reject),
        Some(other) => Err(bad_request(format!(
            "mode must be \"hold\" or \"reject\", not {other:?}"
        ))),
    }
}

async fn set_mode(s: &OperatorState, mode: Mode) -> Result<Json<Value>, ApiError> {
    if mode == Mode::Normal {
        // A resume only from the confirmed leader (the database refuses one from any other).
        s.refuse_on_standby()?;
    } else {
        s.refuse_on_other_schema()?;
    }
    let stopped = s
        .engine
        .control()
        .set_mode(mode, s.by)
        .await
        .map_err(|e| match e {
            // In force here, not recorded: the other members of a pair do not know of it.
            crate::control::ModeError::NotRecorded {
                mode,
                ref stopped,
                ref source,
            } => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                e.to_string(),
                json!({
                    "mode": mode.as_str(),
                    "in_force": true,
                    "recorded": false,
                    "error": source.to_string(),
                    "stopped": stopped.stopped,
                    "already_written": stopped.already_written,
                }),
            ),
            other => internal(other.to_string()),
        })?;
    Ok(Json(json!({
        "object": "mode",
        "mode": mode.as_str(),
        "recorded": true,
        // Attempts the change stopped before a byte of them was written, and requests it
        // forbids that were already written whole (they left before it).
        "stopped": stopped.stopped,
        "already_written": stopped.already_written,
    })))
}

/// Any member of a pair, leader or standby, confirmed or not, takes a pause: in force here at
/// once, recorded in the shared ledger as soon as it can be, and binding the pair once it is
/// (the answer waits for that; see `Control::set_mode`).
async fn pause(State(s): State<OperatorState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    set_mode(&s, requested_pause(&body)?).await
}

async fn resume(State(s): State<OperatorState>) -> Result<Json<Value>, ApiError> {
    set_mode(&s, Mode::Normal).await
}

/// The reference's success envelope.
fn envelope(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// The order callback's fields besides `signature`: exactly these, no more, no fewer.
const CALLBACK_FIELDS: [&str; 5] = [
    "dealAmount",
    "merchantOrderNo",
    "orderNo",
    "orderType",
    "status",
];

/// The signed string is `key=value` pairs joined by `&`: a value holding `&` or `=` could
/// re-cut it into other fields under the same signature, and an extra or empty field changes
/// what was signed. So the field set is exact, and every value a non-empty string or a number
/// without either character.
fn check_callback_fields(
    fields: &serde_json::Map<String, Value>,
) -> Result<(), CallbackFieldError> {
    if let Some(extra) = fields
        .keys()
        .find(|k| *k != "signature" && !CALLBACK_FIELDS.contains(&k.as_str()))
    {
        return Err(CallbackFieldError::Unexpected(extra.clone()));
    }
    for name in CALLBACK_FIELDS {
        let text = match fields.get(name) {
            None | Some(Value::Null) => return Err(CallbackFieldError::Missing(name)),
            Some(Value::String(t)) => t.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(CallbackFieldError::Type(name)),
        };
        if text.is_empty() {
            return Err(CallbackFieldError::Empty(name));
        }
        if text.contains(['&', '=']) {
            return Err(CallbackFieldError::Separator(name));
        }
    }
    Ok(())
}

/// Why a callback's field set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CallbackFieldError {
    #[error("unexpected field {0:?}")]
    Unexpected(String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} must be a string or a number")]
    Type(&'static str),
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{0} must not contain '&' or '='")]
    Separator(&'static str),
}

/// A refused callback: its status code and the reference's envelope.
type CallbackRefusal = (StatusCode, Value);

fn refuse(status: StatusCode, message: &str) -> CallbackRefusal {
    (status, envelope(i64::from(status.as_u16()), message))
}

/// Checks an order callback's request signature (the MD5 `signature` field over the other
/// fields in canonical order plus the API secret, compared in constant time). Returns the
/// fields and the canonical string, which is what the ledger records.
fn verify_request_signature(
    cb: &Callbacks,
    body: &str,
) -> Result<(serde_json::Map<String, Value>, String), CallbackRefusal> {
    let fields: serde_json::Map<String, Value> = serde_json::from_str(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            &format!("body is not a JSON object: {e}"),
        )
    })?;
    let given = fields
        .get("signature")
        .and_then(|v| v.as_str())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "signature is missing"))?
        .to_ascii_lowercase();
    check_callback_fields(&fields).map_err(|e| refuse(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let params = signature::body_params(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let canonical = signature::canonical_string(
        params
            .iter()
            .filter(|(k, _)| k != "signature")
            .map(|(k, v)| (k.as_str(), v.as_str())),
        cb.sign_order,
    );
    let expected = signature::request_signature(&canonical, cb.api_secret.expose_secret());
    if expected.len() != given.len() || !openssl::memcmp::eq(expected.as_bytes(), given.as_bytes())
    {
        tracing::warn!("order callback refused: the request signature does not verify");
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "signature does not verify",
        ));
    }
    Ok((fields, canonical))
}

async fn order_callback(State(s): State<OperatorState>, body: Bytes) -> Response {
    let Some(cb) = &s.callbacks else {
        return not_found().await.into_response();
    };
    let r = async {
        let body = std::str::from_utf8(&body)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "body is not UTF-8"))?;
        let (fields, detail) = verify_request_signature(cb, body)?;
        if let Err(e) = s.refuse_on_standby() {
            return Err(refuse(StatusCode::CONFLICT, &e.message));
        }
        // Checked and recorded in one ledger call: the same callback delivered twice at once is
        // recorded once.
        let recorded = s
            .ledger
            .record_event_once("order", &detail)
            .await
            .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot record"))?;
        if recorded.is_some() {
            tracing::info!(
                order_no = fields
                    .get("orderNo")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                status = fields
                    .get("status")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                "order callback recorded"
            );
        }
        Ok((StatusCode::OK, envelope(200, "Success")))
    }
    .await;
    let (status, body) = r.unwrap_or_else(|e: CallbackRefusal| e);
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<PageQuery, ApiError> {
        parse_query(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_tx_id_filter_takes_what_a_u64_takes_and_refuses_the_rest_as_before() {
        for (text, id) in [
            ("7", 7),
            ("007", 7),
            ("+7", 7),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(
                query(&[("tx_id", text)]).unwrap().tx_id,
                Some(TxId::new(id))
            );
        }
        for bad in ["", "-1", " 7", "7 ", "abc", "1.0", "18446744073709551616"] {
            let e = query(&[("tx_id", bad)]).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(
                e.message,
                format!("tx_id must be a whole number, not {bad:?}")
            );
        }
        // The other numbers keep their own names in the message.
        let e = query(&[("starting_after", "x")]).unwrap_err();
        assert_eq!(
            e.message,
            "starting_after must be a whole number, not \"x\""
        );
    }
}
