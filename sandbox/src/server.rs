//! A strict local 1BitPay server for the co-signer and C2C endpoints: it checks every request's
//! headers and `Sign`, refuses reused nonces and stale timestamps, verifies each `data` against the
//! merchant certificate field by field, and records everything. Tests, benches and the demo run
//! against it; faults (5xx, latency, malformed bodies, shifting pages) can be switched on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openssl::x509::X509;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use cosigner::client::signature::{self, SignOrder};
use cosigner::client::{self as api, parse_pending_item};
use cosigner::domain::{Decision, TxId, Verdict, collect_text, decision_text};
use cosigner::signer::recover_text;

mod hostile;

/// Largest clock difference accepted on `TimeStamp` by default.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(300);

/// Who the sandbox accepts requests from.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Expected `MerchantNo`.
    pub merchant_no: String,
    /// Expected `ApiKey`.
    pub api_key: String,
    /// The secret `Sign` is checked with.
    pub api_secret: SecretString,
    /// The merchant certificate `data` is checked with.
    pub cert: X509,
    /// Canonical-string order the sandbox expects.
    pub sign_order: SignOrder,
    /// Largest accepted difference between `TimeStamp` and the sandbox clock.
    pub max_skew: Duration,
}

/// Faults the sandbox injects into API answers (never into its admin routes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Fraction (0..=1) of API requests answered 503 without being processed.
    pub error_rate: f64,
    /// Delay added before every API answer, e.g. `"50ms"`.
    #[serde(with = "duration_text")]
    pub latency: Duration,
    /// Fraction (0..=1) of API requests answered with a truncated JSON body, unprocessed.
    pub malformed_rate: f64,
    /// Serve each pending page after the first starting one item early, so pages overlap the way
    /// a list that shifts between requests does.
    pub shift_pages: bool,
    /// Seed of the fault generator, for reproducible runs.
    pub seed: u64,
    /// Paths the error and malformed rates apply to; every API path when empty.
    pub error_paths: Vec<String>,
    /// Pad every pending page with a junk field of this many bytes (oversized bodies).
    pub pad_bytes: usize,
    /// Report this `total` whatever the list holds (a total that never ends).
    pub total_override: Option<u64>,
    /// Serve the first page for every page number (a page that repeats forever).
    pub repeat_first_page: bool,
    /// Seconds sent as `Retry-After` with every injected 503.
    pub retry_after: Option<u64>,
    /// List this many ids never listed before on every pending page, whatever the page size (a
    /// listing that never ends, each item new).
    pub flood_ids: usize,
    /// Pad every listed item with a junk member of this many bytes.
    pub pad_items: usize,
    /// Send every pending answer in pieces spread over this long (a server that drips).
    #[serde(with = "duration_text")]
    pub drip: Duration,
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// What the sandbox starts with: pending items (raw JSON) and faults.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Pending items, each a JSON object's text.
    pub pending: Vec<String>,
    /// Faults to inject.
    pub faults: Faults,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonScenario {
    #[serde(default)]
    pending: Vec<Box<RawValue>>,
    #[serde(default)]
    faults: Faults,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlScenario {
    #[serde(default)]
    pending: Vec<toml::Table>,
    #[serde(default)]
    faults: Faults,
}

/// A scenario file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read scenario {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not a scenario.
    #[error("scenario {}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Reads a scenario file: JSON when it ends in `.json` (exact number tokens kept), else TOML.
    pub(crate) fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            error: source,
        })?;
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.to_owned(),
            message,
        };
        if path.extension().is_some_and(|e| e == "json") {
            let s: JsonScenario =
                serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            Ok(Self {
                pending: s.pending.into_iter().map(|r| r.get().to_string()).collect(),
                faults: s.faults,
            })
        } else {
            let s: TomlScenario = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            let pending = s
                .pending
                .into_iter()
                .map(|t| serde_json::to_string(&t).map_err(|e| invalid(e.to_string())))
                .collect::<Result<_, _>>()?;
            Ok(Self {
                pending,
                faults: s.faults,
            })
        }
    }
}

/// One accepted approve/reject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Transaction id.
    pub id: TxId,
    /// 1 approve, 2 reject.
    pub status: u8,
    /// The `data` as received.
    pub data: String,
    /// The text recovered from `data`.
    pub text: String,
    /// How many identical re-sends followed the first.
    pub replays: u32,
    /// Milliseconds since the epoch of the first acceptance.
    pub at_ms: u64,
}

/// One approve/reject request as it arrived, before any fault or check: what left the client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// Milliseconds since the epoch of its arrival.
    pub(crate) at_ms: u64,
    /// The request body as received.
    pub body: String,
}

/// One accepted collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectRecord {
    /// 1 main coin, 0 tokens.
    pub is_main: u8,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
}

/// One refused request, with the reason the sandbox gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejection {
    /// Path called.
    pub(crate) endpoint: String,
    /// Envelope code answered.
    pub(crate) code: i64,
    /// Why.
    pub(crate) reason: String,
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<TxId, String>,
    unkeyed: Vec<String>,
    decisions: Vec<DecisionRecord>,
    decided: HashMap<TxId, usize>,
    conflicts: u64,
    attempts: Vec<Attempt>,
    collects: Vec<CollectRecord>,
    orders: Vec<serde_json::Value>,
    order_nos: HashMap<String, String>,
    rejections: Vec<Rejection>,
    nonces: HashMap<String, u64>,
    requests: BTreeMap<String, u64>,
    in_flight: BTreeMap<String, u64>,
    max_in_flight: BTreeMap<String, u64>,
    faults: Faults,
    rng: u64,
    next_order: u64,
    /// The next id a flood lists.
    next_flood: u64,
}

impl Inner {
    fn next_rand(&mut self) -> f64 {
        // xorshift64*: a reproducible stream for fault injection, not for anything secret.
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The sandbox's state, shared by its handlers and by in-process tests.
#[derive(Clone)]
pub struct Sandbox {
    cfg: Arc<SandboxConfig>,
    inner: Arc<Mutex<Inner>>,
}

/// Counts of what the sandbox has seen, for `/_sandbox/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// API requests per path, faulted ones included.
    pub requests: BTreeMap<String, u64>,
    /// Transactions still pending.
    pub(crate) pending: usize,
    /// Distinct transactions decided.
    pub(crate) decided: usize,
    /// Attempts to decide a transaction a second, different way.
    pub conflicts: u64,
    /// Refused requests.
    pub(crate) rejections: usize,
    /// Most requests to one path the sandbox was answering at the same moment.
    pub max_in_flight: BTreeMap<String, u64>,
}

/// Counts a request as in flight until dropped (also when its future is cancelled).
struct InFlight {
    sandbox: Sandbox,
    path: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.sandbox.lock().in_flight.get_mut(&self.path) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The server's own clock (the host's: the sandbox runs beside the daemon, not inside it).
fn now_ms() -> u64 {
    u64::try_from(cosigner::clock::Clock::system().now_ms()).unwrap_or(0)
}

type Refusal = (StatusCode, i64, String);

fn refuse(status: StatusCode, code: i64, reason: impl Into<String>) -> Refusal {
    (status, code, reason.into())
}

impl Sandbox {
    /// A sandbox seeded with `scenario`.
    #[must_use]
    pub fn new(cfg: SandboxConfig, scenario: Scenario) -> Self {
        let sb = Self {
            cfg: Arc::new(cfg),
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        sb.set_faults(scenario.faults);
        sb.add_pending(scenario.pending);
        sb
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A handler that panicked mid-update leaves data a test should still be able to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds pending items (JSON objects' texts); returns how many were added.
    pub fn add_pending<I: IntoIterator<Item = String>>(&self, items: I) -> usize {
        let mut g = self.lock();
        let mut n = 0;
        for raw in items {
            match parse_pending_item(&raw) {
                Ok(tx) => {
                    g.pending.insert(tx.id, raw);
                }
                Err(_) => g.unkeyed.push(raw),
            }
            n += 1;
        }
        n
    }

    /// Adds items served after the keyed ones without de-duplication by id (to serve a hostile
    /// listing that repeats an id with other fields).
    pub fn add_unkeyed<I: IntoIterator<Item = String>>(&self, items: I) {
        self.lock().unkeyed.extend(items);
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        let mut g = self.lock();
        g.rng = faults.seed ^ 0x9E37_79B9_7F4A_7C15;
        g.faults = faults;
    }

    /// The current faults.
    #[must_use]
    pub(crate) fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Items still pending, in the order they are served.
    #[must_use]
    pub(crate) fn pending(&self) -> Vec<String> {
        let g = self.lock();
        g.pending
            .values()
            .chain(g.unkeyed.iter())
            .cloned()
            .collect()
    }

    /// Every accepted decision, in order of arrival.
    #[must_use]
    pub fn decisions(&self) -> Vec<DecisionRecord> {
        self.lock().decisions.clone()
    }

    /// Every accepted collection.
    #[must_use]
    pub fn collects(&self) -> Vec<CollectRecord> {
        self.lock().collects.clone()
    }

    /// Every approve/reject request that arrived, faulted and refused ones included.
    #[must_use]
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().attempts.clone()
    }

    /// Every refused request.
    #[must_use]
    pub fn rejections(&self) -> Vec<Rejection> {
        self.lock().rejections.clone()
    }

    /// Every accepted C2C order body.
    #[must_use]
    pub fn orders(&self) -> Vec<serde_json::Value> {
        self.lock().orders.clone()
    }

    /// Request and outcome counts.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let g = self.lock();
        Stats {
            requests: g.requests.clone(),
            pending: g.pending.len() + g.unkeyed.len(),
            decided: g.decided.len(),
            conflicts: g.conflicts,
            rejections: g.rejections.len(),
            max_in_flight: g.max_in_flight.clone(),
        }
    }

    /// The HTTP routes: the 1BitPay API plus `/_sandbox/*` admin routes.
    pub(crate) fn router(&self) -> Router {
        let apis = [
            api::PENDING,
            api::APPROVE,
            api::COLLECT,
            api::RATE,
            api::CREATE_ORDER,
            api::BATCH_SELL,
        ];
        let mut r = Router::new();
        for path in apis {
            r = r.route(path, post(handle_api));
        }
        r.route(
            "/_sandbox/pending",
            get(admin_pending).post(admin_add_pending),
        )
        .route("/_sandbox/decisions", get(admin_decisions))
        .route("/_sandbox/collects", get(admin_collects))
        .route("/_sandbox/orders", get(admin_orders))
        .route("/_sandbox/rejections", get(admin_rejections))
        .route("/_sandbox/stats", get(admin_stats))
        .route("/_sandbox/faults", get(admin_faults).put(admin_set_faults))
        .with_state(self.clone())
    }

    /// Checks the public headers and `Sign` of one request.
    fn authenticate(&self, headers: &HeaderMap, body: &str) -> Result<(), Refusal> {
        let header = |name: &str| -> Result<String, Refusal> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        400,
                        format!("missing header {name}"),
                    )
                })
        };
        let ctype = header("Content-Type")?;
        if !ctype.starts_with("application/json") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "Content-Type must be application/json",
            ));
        }
        let nonce = header("Nonce")?;
        let ts = header("TimeStamp")?;
        let merchant = header("MerchantNo")?;
        let sign_type = header("SignType")?;
        let lang = header("Lang")?;
        let key = header("ApiKey")?;
        let given = header("Sign")?;
        if nonce.len() < 6 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "Nonce must be at least 6 letters or digits",
            ));
        }
        if ts.len() != 13 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "TimeStamp must be 13-digit milliseconds",
            ));
        }
        if sign_type != "1" {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "SignType must be 1 (MD5)",
            ));
        }
        if lang != "en" && lang != "zh" {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                400,
                "Lang must be en or zh",
            ));
        }
        if merchant != self.cfg.merchant_no || key != self.cfg.api_key {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                401,
                "unknown MerchantNo or ApiKey",
            ));
        }
        let ts_ms: u64 = ts.parse().unwrap_or(0);
        let now = now_ms();
        let skew = u64::try_from(self.cfg.max_skew.as_millis()).unwrap_or(u64::MAX);
        if ts_ms.abs_diff(now) > skew {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                401,
                format!(
                    "stale TimeStamp: {} ms from the server clock",
                    i128::from(ts_ms) - i128::from(now)
                ),
            ));
        }
        let fields = signature::body_params(body).map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                400,
                format!("body is not JSON: {e}"),
            )
        })?;
        let public = [
            ("Nonce", nonce.as_str()),
            ("TimeStamp", ts.as_str()),
            ("MerchantNo", merchant.as_str()),
            ("SignType", sign_type.as_str()),
            ("Lang", lang.as_str()),
            ("ApiKey", key.as_str()),
        ];
        let canonical = signature::canonical_string(
            public
                .iter()
                .copied()
                .chain(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            self.cfg.sign_order,
        );
        let want = signature::request_signature(&canonical, self.cfg.api_secret.expose_secret());
        if want != given {
            return Err(refuse(StatusCode::UNAUTHORIZED, 401, "Sign does not match"));
        }
        let mut g = self.lock();
        g.nonces
            .retain(|_, seen| now.saturating_sub(*seen) <= 2 * skew);
        if g.nonces.insert(nonce, now).is_some() {
            return Err(refuse(StatusCode::UNAUTHORIZED, 401, "Nonce already used"));
        }
        Ok(())
    }

    /// One page as JSON text, items byte for byte as stored (a `Value` would turn the number
    /// token `12.50` into `12.5`).
    fn pending_page(&self, body: &str) -> Result<String, Refusal> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Req {
            page_num: u64,
            page_size: u64,
        }
        let r: Req = serde_json::from_str(body).map_err(|e| {
            refuse(
                StatusCode::OK,
                400,
                format!("pageNum and pageSize required: {e}"),
            )
        })?;
        if r.page_num == 0 || r.page_size == 0 || r.page_size > 1000 {
            return Err(refuse(
                StatusCode::OK,
                400,
                "pageNum from 1, pageSize from 1 to 1000",
            ));
        }
        let mut g = self.lock();
        let flood = if g.faults.flood_ids > 0 {
            let n = g.faults.flood_ids;
            let mut next = g.next_flood.max(hostile::FLOOD_FIRST_ID);
            let items = hostile::flood(&mut next, n);
            g.next_flood = next;
            items
        } else {
            Vec::new()
        };
        let all: Vec<&String> = g.pending.values().chain(g.unkeyed.iter()).collect();
        let mut start = usize::try_from((r.page_num - 1) * r.page_size).unwrap_or(usize::MAX);
        if g.faults.shift_pages && r.page_num > 1 {
            start -= 1;
        }
        if g.faults.repeat_first_page {
            start = 0;
        }
        let mut items: Vec<String> = all
            .iter()
            .skip(start)
            .take(usize::try_from(r.page_size).unwrap_or(usize::MAX))
            .map(|s| s.to_string())
            .chain(flood)
            .collect();
        if g.faults.pad_items > 0 {
            for item in &mut items {
                *item = hostile::padded(item, g.faults.pad_items);
            }
        }
        let total = g.faults.total_override.unwrap_or(all.len() as u64);
        let padding = if g.faults.pad_bytes > 0 {
            format!(",\"padding\":\"{}\"", "x".repeat(g.faults.pad_bytes))
        } else {
            String::new()
        };
        Ok(format!(
            "{{\"total\":{total},\"list\":[{}]{padding}}}",
            items.join(",")
        ))
    }

    fn approve(&self, body: &str) -> Result<(), Refusal> {
        #[derive(Deserialize)]
        struct Req {
            id: TxId,
            from: Option<String>,
            to: Option<String>,
            value: Option<String>,
            #[serde(rename = "chainId")]
            chain_id: Option<String>,
            status: u64,
            data: String,
        }
        let bad = |m: String| refuse(StatusCode::OK, 400, m);
        let r: Req =
            serde_json::from_str(body).map_err(|e| bad(format!("invalid approve body: {e}")))?;
        let verdict =
            Verdict::from_status(r.status).ok_or_else(|| bad("status must be 1 or 2".into()))?;
        let recovered = recover_text(&self.cfg.cert, &r.data)
            .map_err(|e| refuse(StatusCode::OK, 401, e.to_string()))?;
        let (from, to, value, chain) = (
            r.from.unwrap_or_default(),
            r.to.unwrap_or_default(),
            r.value.unwrap_or_default(),
            r.chain_id.unwrap_or_default(),
        );
        let expected = decision_text(&Decision {
            id: r.id,
            from: &from,
            to: &to,
            value: &value,
            chain_id: &chain,
            verdict,
        });
        if recovered != expected {
            return Err(refuse(
                StatusCode::OK,
                401,
                field_mismatch(&recovered, &expected),
            ));
        }
        let mut g = self.lock();
        if let Some(&i) = g.decided.get(&r.id) {
            let prior_status = g.decisions[i].status;
            if prior_status == verdict.status() && g.decisions[i].data == r.data {
                g.decisions[i].replays += 1;
                return Ok(());
            }
            g.conflicts += 1;
            return Err(refuse(
                StatusCode::OK,
                409,
                format!(
                    "transaction {} was already decided with status {prior_status}",
                    r.id
                ),
            ));
        }
        let Some(raw) = g.pending.get(&r.id) else {
            return Err(refuse(
                StatusCode::OK,
                404,
                format!("transaction {} is not pending", r.id),
            ));
        };
        let tx = parse_pending_item(raw).map_err(|e| bad(e.reason))?;
        let checks = [
            ("from", tx.from.as_deref(), from.as_str()),
            ("to", tx.to.as_deref(), to.as_str()),
            ("value", tx.amount.as_deref(), value.as_str()),
            ("chainId", tx.chain_id.as_deref(), chain.as_str()),
        ];
        for (field, want, got) in checks {
            if want != Some(got) {
                return Err(bad(format!(
                    "{field} {got:?} differs from the pending transaction's {:?}",
                    want.unwrap_or("")
                )));
            }
        }
        g.pending.remove(&r.id);
        let rec = DecisionRecord {
            id: r.id,
            status: verdict.status(),
            data: r.data,
            text: recovered,
            replays: 0,
            at_ms: now_ms(),
        };
        let idx = g.decisions.len();
        g.decisions.push(rec);
        g.decided.insert(r.id, idx);
        Ok(())
    }

    fn collect(&self, body: &str) -> Result<(), Refusal> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Req {
            is_main: u8,
            data: String,
        }
        let r: Req = serde_json::from_str(body)
            .map_err(|e| refuse(StatusCode::OK, 400, format!("invalid collect body: {e}")))?;
        if r.is_main > 1 {
            return Err(refuse(StatusCode::OK, 400, "isMain must be 0 or 1"));
        }
        let recovered = recover_text(&self.cfg.cert, &r.data)
            .map_err(|e| refuse(StatusCode::OK, 401, e.to_string()))?;
        let expected = collect_text(r.is_main == 1);
        if recovered != expected {
            return Err(refuse(
                StatusCode::OK,
                401,
                field_mismatch(&recovered, &expected),
            ));
        }
        self.lock().collects.push(CollectRecord {
            is_main: r.is_main,
            at_ms: now_ms(),
        });
        Ok(())
    }

    fn create_order(&self, body: &str) -> Result<serde_json::Value, Refusal> {
        let order: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| refuse(StatusCode::OK, 400, format!("invalid order: {e}")))?;
        check_order(&order, CREATE_REQUIRED)?;
        let merchant_order = order["merchantOrderNo"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut g = self.lock();
        let (order_no, is_new) = match g.order_nos.get(&merchant_order) {
            Some(o) => (o.clone(), false),
            None => {
                g.next_order += 1;
                let o = format!("3357934496535{:05}", g.next_order);
                g.order_nos.insert(merchant_order, o.clone());
                g.orders.push(order);
                (o, true)
            }
        };
        Ok(json!({
            "url": format!("http://sandbox.invalid/otc.html?o={order_no}"),
            "isNew": is_new,
            "orderNo": order_no,
        }))
    }

    fn batch_sell(&self, body: &str) -> Result<serde_json::Value, Refusal> {
        let orders: Vec<serde_json::Value> = serde_json::from_str(body).map_err(|e| {
            refuse(
                StatusCode::OK,
                400,
                format!("batch sell body must be an array: {e}"),
            )
        })?;
        if orders.is_empty() {
            return Err(refuse(
                StatusCode::OK,
                400,
                "batch sell needs at least one order",
            ));
        }
        for o in &orders {
            check_order(o, SELL_REQUIRED)?;
        }
        let mut g = self.lock();
        g.next_order += 1;
        let batch = format!("76181{:06}", g.next_order);
        let nos: Vec<String> = orders
            .iter()
            .map(|o| {
                o["merchantOrderNo"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        g.orders.extend(orders);
        Ok(json!({ "batchNo": batch, "merchantOrderNos": nos }))
    }

    async fn dispatch(&self, path: &str, headers: &HeaderMap, body: &str) -> Response {
        let _in_flight = InFlight {
            sandbox: self.clone(),
            path: path.to_string(),
        };
        let (latency, fault, retry_after, drip) = {
            let mut g = self.lock();
            *g.requests.entry(path.to_string()).or_default() += 1;
            if path == api::APPROVE {
                g.attempts.push(Attempt {
                    at_ms: now_ms(),
                    body: body.to_string(),
                });
            }
            let now = {
                let n = g.in_flight.entry(path.to_string()).or_default();
                *n += 1;
                *n
            };
            let max = g.max_in_flight.entry(path.to_string()).or_default();
            *max = (*max).max(now);
            let f = g.faults.clone();
            let roll = g.next_rand();
            let retry_after = f.retry_after;
            let targeted = f.error_paths.is_empty() || f.error_paths.iter().any(|p| p == path);
            let fault = if !targeted {
                None
            } else if roll < f.error_rate {
                Some(true)
            } else if roll < f.error_rate + f.malformed_rate {
                Some(false)
            } else {
                None
            };
            (f.latency, fault, retry_after, f.drip)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(true) => {
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("Content-Type", "application/json")],
                    r#"{"code":503,"message":"Service Unavailable"}"#,
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert("Retry-After", axum::http::HeaderValue::from(secs));
                }
                return r;
            }
            Some(false) => {
                return (
                    StatusCode::OK,
                    [("Content-Type", "application/json")],
                    r#"{"code":200,"message":"Succ"#,
                )
                    .into_response();
            }
            None => {}
        }
        let text = |v: serde_json::Value| Some(v.to_string());
        let result = self.authenticate(headers, body).and_then(|()| match path {
            api::PENDING => self.pending_page(body).map(Some),
            api::APPROVE => self.approve(body).map(|()| None),
            api::COLLECT => self.collect(body).map(|()| None),
            api::RATE => rate(body).map(text),
            api::CREATE_ORDER => self.create_order(body).map(text),
            api::BATCH_SELL => self.batch_sell(body).map(text),
            _ => Err(refuse(StatusCode::NOT_FOUND, 404, "no such endpoint")),
        });
        match result {
            Ok(data) => {
                let env = match data {
                    Some(d) => format!("{{\"code\":200,\"message\":\"Success\",\"data\":{d}}}"),
                    None => r#"{"code":200,"message":"Success"}"#.to_string(),
                };
                let headers = [("Content-Type", "application/json")];
                if path == api::PENDING && !drip.is_zero() {
                    return (StatusCode::OK, headers, hostile::dripped(env, drip)).into_response();
                }
                (StatusCode::OK, headers, env).into_response()
            }
            Err((status, code, reason)) => {
                tracing::debug!(path, code, %reason, "sandbox refused a request");
                self.lock().rejections.push(Rejection {
                    endpoint: path.to_string(),
                    code,
                    reason: reason.clone(),
                });
                (status, axum::Json(json!({"code": code, "message": reason}))).into_response()
            }
        }
    }
}

const CREATE_REQUIRED: &[&str] = &[
    "userName",
    "areaCode",
    "phone",
    "cryptoCurrency",
    "legalCurrency",
    "idCardType",
    "idCard",
    "kyc",
    "merchantOrderNo",
    "orderType",
    "payWay",
    "h5",
];

const SELL_REQUIRED: &[&str] = &[
    "userName",
    "areaCode",
    "phone",
    "cryptoCurrency",
    "legalCurrency",
    "idCardType",
    "idCard",
    "merchantOrderNo",
    "bank",
    "bankAccount",
    "bankBranch",
];

fn check_order(order: &serde_json::Value, required: &[&str]) -> Result<(), Refusal> {
    let obj = order
        .as_object()
        .ok_or_else(|| refuse(StatusCode::OK, 400, "an order must be a JSON object"))?;
    for f in required {
        match obj.get(*f) {
            None | Some(serde_json::Value::Null) => {
                return Err(refuse(StatusCode::OK, 400, format!("{f} is required")));
            }
            Some(serde_json::Value::String(s)) if s.is_empty() => {
                return Err(refuse(StatusCode::OK, 400, format!("{f} is required")));
            }
            _ => {}
        }
    }
    if obj.get("cryptoAmount").is_none() && obj.get("legalAmount").is_none() {
        return Err(refuse(
            StatusCode::OK,
            400,
            "cryptoAmount or legalAmount is required",
        ));
    }
    Ok(())
}

fn rate(body: &str) -> Result<serde_json::Value, Refusal> {
    let r: api::RateRequest = serde_json::from_str(body).map_err(|e| {
        refuse(
            StatusCode::OK,
            400,
            format!("cryptoCurrency and legalCurrency required: {e}"),
        )
    })?;
    let (buy, sell) = match (r.crypto_currency.as_str(), r.legal_currency.as_str()) {
        ("USDT", "CNY") => ("6.47", "6.9"),
        ("USDT", "USD") => ("0.998", "1.002"),
        _ => return Err(refuse(StatusCode::OK, 400, "unsupported currency pair")),
    };
    Ok(json!({"buyRate": buy, "sellRate": sell}))
}

/// Names the fields in which a recovered text differs from the expected one.
fn field_mismatch(recovered: &str, expected: &str) -> String {
    let parse = |s: &str| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(s).ok();
    match (parse(recovered), parse(expected)) {
        (Some(r), Some(e)) => {
            let mut diffs: Vec<String> = e
                .iter()
                .filter(|(k, v)| r.get(*k) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k} (signed {}, body {v})",
                        r.get(k).map_or("nothing".into(), |x| x.to_string())
                    )
                })
                .collect();
            diffs.extend(
                r.keys()
                    .filter(|k| !e.contains_key(*k))
                    .map(|k| format!("{k} (signed, not in body)")),
            );
            if diffs.is_empty() {
                "signed text has the right fields but not the exact layout".into()
            } else {
                format!("signed data differs from the body in {}", diffs.join(", "))
            }
        }
        _ => "signed data is not the expected JSON text".into(),
    }
}

async fn handle_api(
    State(sb): State<Sandbox>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    sb.dispatch(uri.path(), &headers, &body).await
}

async fn admin_pending(State(sb): State<Sandbox>) -> Response {
    let items: Vec<Box<RawValue>> = sb
        .pending()
        .into_iter()
        .filter_map(|s| RawValue::from_string(s).ok())
        .collect();
    axum::Json(items).into_response()
}

async fn admin_add_pending(State(sb): State<Sandbox>, body: String) -> Response {
    match serde_json::from_str::<Vec<Box<RawValue>>>(&body) {
        Ok(items) => {
            let n = sb.add_pending(items.into_iter().map(|r| r.get().to_string()));
            axum::Json(json!({ "added": n })).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected a JSON array of items: {e}"),
        )
            .into_response(),
    }
}

async fn admin_decisions(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.decisions()).into_response()
}

async fn admin_collects(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.collects()).into_response()
}

async fn admin_orders(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.orders()).into_response()
}

async fn admin_rejections(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.rejections()).into_response()
}

async fn admin_stats(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.stats()).into_response()
}

async fn admin_faults(State(sb): State<Sandbox>) -> Response {
    axum::Json(sb.faults()).into_response()
}

async fn admin_set_faults(State(sb): State<Sandbox>, body: String) -> Response {
    match serde_json::from_str::<Faults>(&body) {
        Ok(f) => {
            sb.set_faults(f);
            axum::Json(sb.faults()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid faults: {e}")).into_response(),
    }
}

/// Serves the sandbox on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Sandbox,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, sandbox.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
