//! The operator API, following the QbitPay conventions: HTTP Basic auth with an API key as the
//! user name (only SHA-256 digests are stored), the QbitPay error object on every failure,
//! cursor-paged lists; authentication and request counting are middleware. Also the C2C order
//! callback that 1BitPay posts, verified by its request signature.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::client::signature::SignOrder;
use crate::cycle::Engine;
use crate::health::Health;
use crate::ledger::LedgerHandle;
use crate::metrics::Metrics;

mod callback;
use callback::order_callback;

mod keys;
pub use keys::{ApiKeys, digest};
pub(crate) use keys::{KeyStore, Scope, new_key};

mod middleware;
pub(crate) use middleware::{ApiError, KeyCheck, require_key};
use middleware::{
    bad_request, check_host, count_requests, error, internal, refuse_cross_site, spend_budget,
};

mod routes;
use routes::{get_decision, list_decisions, pause, policy, reload, resume, status};

/// Default operator API request budget per second.
pub(crate) const DEFAULT_RATE: u32 = 20;

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

// The operator API's checks are middleware, one per concern, applied per route group in
// `router`. A request meets them in this order, and the first refusal answers:
//   count_requests  (every answer of a matched route, refusals included)
//   check_host      `Host` names the listener (no DNS rebinding)
//   require_key     an accepted API key; failures draw on their own budget
//   spend_budget    the request budget of authenticated calls
//   refuse_cross_site  state-changing routes only: no foreign `Origin`, a JSON content type
// The handlers behind them only do their job.

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
        .route_layer(axum::middleware::from_fn(refuse_cross_site));
    // The kill switch spends no budget: however busy other authenticated clients keep the API,
    // an operator's pause is never answered 429.
    let kill_switch = Router::new()
        .route("/v1/pause", post(pause))
        .route_layer(axum::middleware::from_fn(refuse_cross_site));
    // A route layer wraps the routes already there, so the layer added last runs first.
    let mut r = Router::new()
        .route("/v1/decisions", get(list_decisions))
        .route("/v1/decisions/{id}", get(get_decision))
        .route("/v1/status", get(status))
        .route("/v1/policy", get(policy))
        .merge(changes)
        .route_layer(axum::middleware::from_fn_with_state(
            state.limiter.clone(),
            spend_budget,
        ))
        .merge(kill_switch)
        .route_layer(axum::middleware::from_fn_with_state(key_check, require_key))
        .route_layer(axum::middleware::from_fn_with_state(
            state.listen,
            check_host,
        ));
    // The callback is authenticated by its request signature, not by an operator key.
    if state.callbacks.is_some() {
        r = r.route("/callbacks/order", post(order_callback));
    }
    r.route_layer(axum::middleware::from_fn_with_state(
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
        .route_layer(axum::middleware::from_fn_with_state(
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
