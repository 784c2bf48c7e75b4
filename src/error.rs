//! Per-request errors and the one place that turns them into HTTP answers.
//!
//! Every error keyrelay itself produces reaches the client as the OpenAI envelope with the right
//! status; 429s carry `retry-after` (whole seconds, at most 60), `retry-after-ms`, and
//! `x-should-retry: false` when waiting cannot help, because that is what the SDKs act on.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::openai::{PeekError, error_body};

/// The longest wait keyrelay advertises: every SDK version honours `retry-after` up to 60 s.
pub const MAX_ADVERTISED_WAIT: Duration = Duration::from_secs(60);

/// Everything that can go wrong with one proxied request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent more than `server.max_body_bytes`.
    #[error("the request body is larger than the {limit}-byte limit")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client's body could not be read (it disconnected or sent a malformed stream).
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// The body claims to be JSON but is not.
    #[error(transparent)]
    InvalidJson(#[from] PeekError),
    /// Not an OpenAI path.
    #[error("no route for {path}: keyrelay serves the OpenAI API under /v1/")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// Every account is cooling for this model (`wait` is when the first is back), or every key is
    /// disabled (`wait` is `None`).
    #[error("{}", no_capacity_message(.model.as_deref(), *.wait))]
    NoCapacity {
        /// The model asked for.
        model: Option<String>,
        /// When capacity is expected back; `None` when it never will without operator action.
        wait: Option<Duration>,
    },
    /// The upstream could not be reached after all retries.
    #[error("the upstream API could not be reached after {attempts} attempt(s)")]
    UpstreamUnreachable {
        /// Attempts made.
        attempts: u32,
    },
    /// The upstream did not answer in time after all retries.
    #[error("the upstream API did not answer in time after {attempts} attempt(s)")]
    UpstreamTimeout {
        /// Attempts made.
        attempts: u32,
    },
    /// A bug in keyrelay.
    #[error("internal error in keyrelay")]
    Internal,
}

fn no_capacity_message(model: Option<&str>, wait: Option<Duration>) -> String {
    let model = model.map(|m| format!(" for model `{m}`")).unwrap_or_default();
    match wait {
        Some(wait) => format!(
            "All upstream accounts are rate-limited{model}; capacity is expected back in {}.",
            crate::duration::format(wait)
        ),
        None => format!(
            "No upstream key can serve this request{model}: every key is disabled (invalid, forbidden or out of quota). Fix the keys and restart keyrelay."
        ),
    }
}

impl ProxyError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable | Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::NoCapacity { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A bounded label for logs and metrics (also the envelope's `code`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotFound { .. } => "unknown_url",
            Self::NoCapacity { wait: Some(_), .. } => "rate_limit_exceeded",
            Self::NoCapacity { wait: None, .. } => "no_usable_upstream_key",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::Internal => "internal_error",
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. }
            | Self::BodyUnreadable
            | Self::InvalidJson(_)
            | Self::NotFound { .. } => "invalid_request_error",
            Self::NoCapacity { wait: Some(_), .. } => "requests",
            _ => "server_error",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = error_body(&self.to_string(), self.error_type(), None, Some(self.kind()));
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Self::NoCapacity { wait, .. } = self {
            let advertised = wait.unwrap_or(MAX_ADVERTISED_WAIT).min(MAX_ADVERTISED_WAIT);
            let seconds = advertised.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
            headers.insert("retry-after-ms", HeaderValue::from(advertised.as_millis() as u64));
            // Waiting cannot help when no key is usable, or when capacity returns later than
            // SDKs are willing to wait.
            let hopeless = wait.is_none_or(|w| w > MAX_ADVERTISED_WAIT);
            if hopeless {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(error: ProxyError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn cooling_answer_is_an_honest_retryable_429() {
        let error = ProxyError::NoCapacity {
            model: Some("m".into()),
            wait: Some(Duration::from_millis(2300)),
        };
        let (status, headers, body) = parts(error).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(headers["retry-after-ms"], "2300");
        assert!(headers.get("x-should-retry").is_none());
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(body["error"]["message"].as_str().unwrap().contains("2.300s"));
        assert!(body["error"]["param"].is_null());
    }

    #[tokio::test]
    async fn long_or_hopeless_waits_tell_sdks_not_to_retry() {
        let long = ProxyError::NoCapacity { model: None, wait: Some(Duration::from_secs(600)) };
        let (_, headers, _) = parts(long).await;
        assert_eq!(headers["retry-after"], "60");
        assert_eq!(headers["x-should-retry"], "false");

        let (status, headers, body) =
            parts(ProxyError::NoCapacity { model: None, wait: None }).await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(body["error"]["code"], "no_usable_upstream_key");
    }
}
