//! The daemon's HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process is alive)
//! and `/readyz` (config, key and ledger loaded, and the last poll succeeded recently).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use serde_json::json;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::operator::{KeyCheck, require_key};

/// Shared state of the routes.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// Metrics to render.
    pub(crate) metrics: Arc<Metrics>,
    /// Readiness.
    pub(crate) health: Arc<Health>,
    /// When set (`http.metrics_auth`), `/metrics` needs one of these operator API keys.
    pub(crate) metrics_keys: Option<Arc<crate::operator::KeyStore>>,
}

/// The routes. With `http.metrics_auth`, `/metrics` sits behind the operator API's key check.
pub(crate) fn router(state: HttpState) -> Router {
    let mut metrics_route = get(metrics);
    if let Some(keys) = &state.metrics_keys {
        metrics_route = metrics_route.route_layer(middleware::from_fn_with_state(
            KeyCheck::for_metrics(keys.clone()),
            require_key,
        ));
    }
    Router::new()
        .route("/metrics", metrics_route)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.health.readiness() {
        Ok(()) => axum::Json(json!({"ready": true})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}
