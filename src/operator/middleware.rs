//! The operator API's middleware: the QbitPay error object, authentication by key and scope, the
//! Host check, the request budget, cross-site refusal and request counting.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use governor::DefaultDirectRateLimiter;
use serde_json::{Value, json};

use crate::metrics::Metrics;

use super::{ApiKeys, KeyStore, Scope};

/// A failed operator call: rendered as the QbitPay error object with its status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) detail: Value,
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

pub(super) fn error(
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

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Value::Null,
    )
}

pub(super) fn internal(message: impl Into<String>) -> ApiError {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        message,
        Value::Null,
    )
}

pub(super) fn too_many() -> ApiError {
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

/// What [`require_key`] checks a call against.
#[derive(Clone)]
pub(crate) struct KeyCheck {
    pub(super) keys: Arc<KeyStore>,
    /// What the route needs a key to be allowed.
    pub(super) scope: Scope,
    /// The budget failed attempts draw on: once it is spent they get 429 instead of 401, and
    /// the budget of authenticated calls (which an operator's `cosigner pause` needs) is
    /// untouched. `None`: every failure is a 401.
    pub(super) failures: Option<Arc<DefaultDirectRateLimiter>>,
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
pub(super) async fn check_host(
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
pub(super) async fn spend_budget(
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
pub(super) async fn refuse_cross_site(request: Request, next: Next) -> Result<Response, ApiError> {
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
pub(super) async fn count_requests(
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
pub(super) fn check_host_header(
    listen: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
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

pub(super) fn host_names_listener(host: &str, listen: SocketAddr) -> bool {
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
