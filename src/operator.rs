//! The operator API, following the QbitPay conventions: HTTP Basic auth with an API key as the
//! user name (only SHA-256 digests are stored), the QbitPay error object on every failure,
//! cursor-paged lists. Also the C2C order callback that 1BitPay posts, verified by signature.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use openssl::sha::sha256;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::client::sign::{self, SignOrder, hex};
use crate::http::Health;
use crate::ledger::{DecisionRow, Ledger, PageQuery, now_ms};
use crate::metrics::Metrics;
use crate::policy::Action;
use crate::poller::{Engine, Mode};

/// Default operator API request budget per second.
pub const DEFAULT_RATE: u32 = 20;

/// The accepted API keys, as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    digests: HashSet<String>,
}

impl ApiKeys {
    /// Reads a keys file: one lowercase hex SHA-256 per line, `#` comments, blank lines ignored.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read API keys file {}: {e}", path.display()))?;
        let mut digests = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            if l.len() != 64
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "API keys file {} line {}: expected a lowercase hex SHA-256 (64 characters); \
                     `cosigner apikey new` prints one",
                    path.display(),
                    i + 1
                ));
            }
            digests.insert(l.to_string());
        }
        Ok(Self { digests })
    }

    /// Whether `key` is one of the accepted keys.
    pub fn accepts(&self, key: &str) -> bool {
        !key.is_empty() && self.digests.contains(&digest(key))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// The operator API's keys, re-read from `http.api_keys_file` on every reload (SIGHUP,
/// `POST /v1/policy/reload`), so that a key added with `cosigner apikey new` works without a
/// restart. An invalid file is refused and the keys in force are kept.
#[derive(Debug, Default)]
pub struct KeyStore {
    file: Option<PathBuf>,
    keys: RwLock<Option<Arc<ApiKeys>>>,
}

impl KeyStore {
    /// Keys loaded from `file` (`None`: the API refuses every call).
    pub fn new(file: Option<PathBuf>, keys: Option<ApiKeys>) -> Self {
        Self {
            file,
            keys: RwLock::new(keys.map(Arc::new)),
        }
    }

    /// The keys in force.
    pub fn current(&self) -> Option<Arc<ApiKeys>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the file again; returns how many keys are now in force (`None` without a file).
    pub fn reload(&self, why: &str) -> Result<Option<usize>, String> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        match ApiKeys::load(file) {
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
pub fn digest(key: &str) -> String {
    hex(&sha256(key.as_bytes()))
}

/// A fresh API key (`cos_` + 64 hex digits) and its keys-file line.
pub fn new_key() -> (String, String) {
    let a = crate::client::random_u64();
    let b = crate::client::random_u64();
    let c = crate::client::random_u64();
    let d = crate::client::random_u64();
    let key = format!("cos_{a:016x}{b:016x}{c:016x}{d:016x}");
    let line = digest(&key);
    (key, line)
}

/// What the C2C order callback needs.
#[derive(Clone)]
pub struct Callbacks {
    /// The API secret the callback's `signature` is made with.
    pub api_secret: SecretString,
    /// The canonical order of the signature string.
    pub sign_order: SignOrder,
}

/// Shared state of the operator routes.
#[derive(Clone)]
pub struct OperatorState {
    /// The engine (policy, mode).
    pub engine: Arc<Engine>,
    /// The ledger.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Accepted keys; none when `http.api_keys_file` is not set (every route refuses).
    pub keys: Arc<KeyStore>,
    /// Request budget.
    pub limiter: Arc<DefaultDirectRateLimiter>,
    /// Readiness, for `/v1/status`.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The order callback, when enabled.
    pub callbacks: Option<Callbacks>,
}

impl OperatorState {
    /// A limiter of `per_second` requests.
    pub fn limiter(per_second: u32) -> Arc<DefaultDirectRateLimiter> {
        let q = std::num::NonZeroU32::new(per_second.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Arc::new(RateLimiter::direct(Quota::per_second(q)))
    }
}

/// A failed operator call: rendered as the QbitPay error object with its status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    detail: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"type": self.kind, "message": self.message});
        if !self.detail.is_null() {
            body["detail"] = self.detail;
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"cosigner\""),
            );
        }
        r
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

/// Rate limit, then Basic auth with an API key as the user name and an empty password.
fn guard(s: &OperatorState, headers: &HeaderMap) -> Result<(), ApiError> {
    if s.limiter.check().is_err() {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "too many requests; slow down",
            Value::Null,
        ));
    }
    // `ApiError` adds the `WWW-Authenticate` challenge to every 401.
    let unauthorized = |m: &str| {
        error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            m,
            Value::Null,
        )
    };
    let keys = s.keys.current();
    let Some(keys) = keys.as_deref() else {
        return Err(unauthorized(
            "the operator API is off: set http.api_keys_file",
        ));
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized(
            "no API key provided: use HTTP Basic auth with the key as user name",
        ));
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
        Some(k) if keys.accepts(k) => Ok(()),
        _ => Err(unauthorized("invalid API key")),
    }
}

fn counted(s: &OperatorState, route: &str, r: Response) -> Response {
    s.metrics
        .operator_requests
        .with_label_values(&[route, r.status().as_str()])
        .inc();
    r
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A decision as the API shows it.
pub fn decision_json(r: &DecisionRow) -> Value {
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

/// The routes: `/v1/*` and, when enabled, `/callbacks/order`.
pub fn router(state: OperatorState) -> Router {
    let mut r = Router::new()
        .route("/v1/decisions", get(list_decisions))
        .route("/v1/decisions/{id}", get(get_decision))
        .route("/v1/status", get(status))
        .route("/v1/policy", get(policy))
        .route("/v1/policy/reload", post(reload))
        .route("/v1/pause", post(pause))
        .route("/v1/resume", post(resume));
    if state.callbacks.is_some() {
        r = r.route("/callbacks/order", post(order_callback));
    }
    r.fallback(not_found).with_state(state)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such route",
        Value::Null,
    )
    .into_response()
}

fn parse_query(pairs: Vec<(String, String)>) -> Result<PageQuery, ApiError> {
    let mut q = PageQuery {
        limit: 10,
        ..PageQuery::default()
    };
    for (k, v) in pairs {
        let num = |name: &str| -> Result<u64, ApiError> {
            v.parse::<u64>()
                .map_err(|_| bad_request(format!("{name} must be a whole number, not {v:?}")))
        };
        match k.as_str() {
            "limit" => {
                let n = num("limit")?;
                if !(1..=100).contains(&n) {
                    return Err(bad_request("limit must be between 1 and 100"));
                }
                q.limit = n as usize;
            }
            "starting_after" => q.starting_after = Some(num("starting_after")?),
            "ending_before" => q.ending_before = Some(num("ending_before")?),
            "tx_id" => q.tx_id = Some(num("tx_id")?),
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
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let r = (|| {
        guard(&s, &headers)?;
        let q = parse_query(pairs)?;
        let (rows, more) = s
            .ledger
            .lock()
            .map_err(|_| internal("ledger unavailable"))?
            .page(&q)
            .map_err(|e| internal(e.to_string()))?;
        Ok::<_, ApiError>(
            axum::Json(json!({
                "object": "list",
                "url": "/v1/decisions",
                "has_more": more,
                "data": rows.iter().map(decision_json).collect::<Vec<_>>(),
            }))
            .into_response(),
        )
    })()
    .unwrap_or_else(IntoResponse::into_response);
    counted(&s, "/v1/decisions", r)
}

async fn get_decision(
    State(s): State<OperatorState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let r = (|| {
        guard(&s, &headers)?;
        let seq: u64 = id
            .parse()
            .map_err(|_| bad_request(format!("decision id must be a whole number, not {id:?}")))?;
        let row = s
            .ledger
            .lock()
            .map_err(|_| internal("ledger unavailable"))?
            .get(seq)
            .map_err(|e| internal(e.to_string()))?;
        match row {
            Some(r) => Ok(axum::Json(decision_json(&r)).into_response()),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("no decision {seq}"),
                Value::Null,
            )),
        }
    })()
    .unwrap_or_else(IntoResponse::into_response);
    counted(&s, "/v1/decisions/{id}", r)
}

async fn status(State(s): State<OperatorState>, headers: HeaderMap) -> Response {
    let r = (|| {
        guard(&s, &headers)?;
        let policy = s.engine.policy();
        let ledger = s
            .ledger
            .lock()
            .map_err(|_| internal("ledger unavailable"))?;
        let usage = ledger
            .usage(&policy, now_ms())
            .map_err(|e| internal(e.to_string()))?;
        let counts = ledger.counts().map_err(|e| internal(e.to_string()))?;
        let dry_runs = ledger
            .dry_run_counts()
            .map_err(|e| internal(e.to_string()))?;
        drop(ledger);
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
        Ok::<_, ApiError>(
            axum::Json(json!({
                "object": "status",
                "mode": s.engine.mode().as_str(),
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
            }))
            .into_response(),
        )
    })()
    .unwrap_or_else(IntoResponse::into_response);
    counted(&s, "/v1/status", r)
}

async fn policy(State(s): State<OperatorState>, headers: HeaderMap) -> Response {
    let r = guard(&s, &headers).map(|()| {
        let p = s.engine.policy();
        let rules: Vec<Value> = p
            .rules
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "action": r.action,
                    "chains": r.chains,
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
        axum::Json(json!({
            "object": "policy",
            "sha256": p.sha256,
            "file": p.source,
            "default": p.default,
            "rules": rules,
            "guard": p.guard.as_ref().map(|g| json!({"window": crate::display::window(g.window), "max_approvals": g.max_approvals})),
            "warnings": p.warnings(),
        }))
        .into_response()
    });
    counted(
        &s,
        "/v1/policy",
        r.unwrap_or_else(IntoResponse::into_response),
    )
}

async fn reload(State(s): State<OperatorState>, headers: HeaderMap) -> Response {
    let r = guard(&s, &headers).map(|()| {
        let previous = s.engine.policy().sha256.clone();
        let keys = s.keys.reload("operator API");
        match s.engine.reload_policy("operator API") {
            Ok(p) => match keys {
                Ok(n) => axum::Json(json!({
                    "object": "policy_reload", "sha256": p.sha256, "previous": previous, "api_keys": n,
                }))
                .into_response(),
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("the policy was reloaded, but not the API keys: {e}"),
                    json!({"sha256": p.sha256, "previous": previous, "api_keys_kept": true}),
                )
                .into_response(),
            },
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.to_string(),
                json!({"kept": previous}),
            )
            .into_response(),
        }
    });
    counted(
        &s,
        "/v1/policy/reload",
        r.unwrap_or_else(IntoResponse::into_response),
    )
}

fn set_mode(
    s: &OperatorState,
    headers: &HeaderMap,
    body: &str,
    route: &str,
    resume: bool,
) -> Response {
    let r = (|| {
        guard(s, headers)?;
        let mode = if resume {
            Mode::Normal
        } else if body.trim().is_empty() {
            Mode::Hold
        } else {
            let v: Value =
                serde_json::from_str(body).map_err(|e| bad_request(format!("body: {e}")))?;
            match v.get("mode").and_then(|m| m.as_str()) {
                None | Some("hold") => Mode::Hold,
                Some("reject") => Mode::Reject,
                Some(other) => {
                    return Err(bad_request(format!(
                        "mode must be \"hold\" or \"reject\", not {other:?}"
                    )));
                }
            }
        };
        s.engine.set_mode(mode, "operator API").map_err(|e| {
            internal(format!(
                "the mode could not be recorded, so it was not changed: {e}"
            ))
        })?;
        Ok(axum::Json(json!({"object": "mode", "mode": mode.as_str()})).into_response())
    })()
    .unwrap_or_else(IntoResponse::into_response);
    counted(s, route, r)
}

async fn pause(State(s): State<OperatorState>, headers: HeaderMap, body: String) -> Response {
    set_mode(&s, &headers, &body, "/v1/pause", false)
}

async fn resume(State(s): State<OperatorState>, headers: HeaderMap, body: String) -> Response {
    set_mode(&s, &headers, &body, "/v1/resume", true)
}

/// The reference's success envelope.
fn envelope(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

async fn order_callback(State(s): State<OperatorState>, body: String) -> Response {
    let Some(cb) = &s.callbacks else {
        return not_found().await;
    };
    let r = (|| {
        let fields: serde_json::Map<String, Value> = serde_json::from_str(&body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                envelope(400, &format!("body is not a JSON object: {e}")),
            )
        })?;
        let given = fields.get("signature").and_then(|v| v.as_str()).ok_or((
            StatusCode::BAD_REQUEST,
            envelope(400, "signature is missing"),
        ))?;
        for required in [
            "status",
            "dealAmount",
            "merchantOrderNo",
            "orderNo",
            "orderType",
        ] {
            if fields.get(required).is_none_or(|v| v.is_null()) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    envelope(400, &format!("{required} is missing")),
                ));
            }
        }
        let params = sign::body_params(&body)
            .map_err(|e| (StatusCode::BAD_REQUEST, envelope(400, &e.to_string())))?;
        let canonical = sign::canonical_string(
            params
                .iter()
                .filter(|(k, _)| k != "signature")
                .map(|(k, v)| (k.as_str(), v.as_str())),
            cb.sign_order,
        );
        if sign::sign(&canonical, cb.api_secret.expose_secret()) != given.to_ascii_lowercase() {
            tracing::warn!("order callback refused: the signature does not verify");
            return Err((
                StatusCode::UNAUTHORIZED,
                envelope(401, "signature does not verify"),
            ));
        }
        let detail = canonical;
        let mut ledger = s.ledger.lock().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                envelope(500, "ledger unavailable"),
            )
        })?;
        let seen = ledger.has_event("order", &detail).map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                envelope(500, "ledger unavailable"),
            )
        })?;
        if !seen {
            ledger.record_event("order", &detail).map_err(|_| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    envelope(500, "cannot record"),
                )
            })?;
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
    })();
    let (status, body) = r.unwrap_or_else(|e| e);
    counted(
        &s,
        "/callbacks/order",
        (status, axum::Json(body)).into_response(),
    )
}
