//! Why a call to 1BitPay failed, with a hint for the operator; never a secret.

use super::Refusal;

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
