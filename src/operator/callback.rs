//! The C2C order callback 1BitPay posts: its fields checked, its request signature verified,
//! answered in the envelope 1BitPay expects.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::client::signature::{self};
use crate::ledger::EventKind;

use super::{Callbacks, OperatorState, not_found};

/// The reference's success envelope.
pub(super) fn envelope(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// The order callback's fields besides `signature`: exactly these, no more, no fewer.
pub(super) const CALLBACK_FIELDS: [&str; 5] = [
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
pub(super) fn check_callback_fields(
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
pub(super) enum CallbackFieldError {
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
pub(super) type CallbackRefusal = (StatusCode, Value);

pub(super) fn refuse(status: StatusCode, message: &str) -> CallbackRefusal {
    (status, envelope(i64::from(status.as_u16()), message))
}

/// Checks an order callback's request signature (the MD5 `signature` field over the other
/// fields in canonical order plus the API secret, compared in constant time). Returns the
/// fields and the canonical string, which is what the ledger records.
pub(super) fn verify_request_signature(
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

pub(super) async fn order_callback(State(s): State<OperatorState>, body: Bytes) -> Response {
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
            .record_event_once(EventKind::Order, &detail)
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
