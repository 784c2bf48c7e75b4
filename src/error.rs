//! Per-request errors and the one place that turns them into HTTP answers.
//!
//! Every error keyrelay itself produces reaches the client as the OpenAI envelope with the right
//! status; 429s carry `retry-after` (whole seconds, at most 60), `retry-after-ms`, and
//! `x-should-retry: false` when waiting cannot help, because that is what the SDKs act on.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::admission::{Exceeded, QuotaDimension};
use crate::limits::Dimension;
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
    /// No valid client key.
    #[error(
        "Invalid API key: keyrelay expects one of its client keys as `Authorization: Bearer <key>`."
    )]
    Unauthorized,
    /// The client may not use this model.
    #[error("Client `{client}` is not allowed to use model `{model}`.")]
    ModelNotAllowed {
        /// The client's name.
        client: String,
        /// The model asked for.
        model: String,
    },
    /// The request names no model, and the client's allowed models or model quotas need one.
    #[error("Client `{client}` has per-model rules: the request must name its `model`.")]
    ModelRequired {
        /// The client's name.
        client: String,
    },
    /// The client is over one of its quotas.
    #[error("{}", quota_message(.client, .exceeded))]
    QuotaExceeded {
        /// The client's name.
        client: String,
        /// Which quota and by how much.
        exceeded: Exceeded,
    },
    /// Not an OpenAI path.
    #[error("no route for {path}: keyrelay serves the OpenAI API under /v1/")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// No upstream capacity for this request: why ([`Shed`]) and when capacity is expected
    /// (`None`: not without operator action).
    #[error("{}", no_capacity_message(.model.as_deref(), *.wait, *.shed))]
    NoCapacity {
        /// The model asked for.
        model: Option<String>,
        /// When capacity is expected back.
        wait: Option<Duration>,
        /// Why the request is not waiting any longer.
        shed: Shed,
    },
    /// The request costs more than any account's limit allows at once: waiting never helps.
    #[error("Request too large for model `{}`: it needs about {needed} {} ({}), more than the largest limit of any upstream account ({limit}). Reduce max_tokens, the prompt or the audio.", .model.as_deref().unwrap_or("?"), unit(*.dimension), dimension_name(*.dimension))]
    TooLarge {
        /// The model asked for.
        model: Option<String>,
        /// The binding limit.
        dimension: Dimension,
        /// Its largest value among the accounts.
        limit: u64,
        /// What the request needs of it.
        needed: u64,
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

fn quota_message(client: &str, exceeded: &Exceeded) -> String {
    let scope = exceeded.model.as_deref().map(|m| format!(" for model `{m}`")).unwrap_or_default();
    let hint = match exceeded.wait {
        Some(wait) => format!(" Try again in {}.", crate::duration::format(wait)),
        None if exceeded.dimension == QuotaDimension::Concurrency => {
            " Try again when one of its requests has finished.".to_owned()
        }
        None => " This request is larger than the quota and can never fit.".to_owned(),
    };
    format!(
        "Client `{client}` is over its quota{scope} on {}: limit {}, used {}, requested {}.{hint}",
        exceeded.dimension.describe(),
        exceeded.limit,
        exceeded.used,
        exceeded.requested
    )
}

/// Why a request got no capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// It waited as long as it may (its deadline), or every account kept refusing it.
    Deadline,
    /// The wait queue was full.
    QueueFull,
    /// Every upstream key is disabled.
    NoUsableKey,
}

fn unit(dimension: Dimension) -> &'static str {
    if dimension.counts_tokens() {
        "tokens"
    } else if dimension.counts_audio() {
        "audio seconds"
    } else {
        "requests"
    }
}

fn dimension_name(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Rpm => "requests per minute",
        Dimension::Rpd => "requests per day",
        Dimension::Tpm => "tokens per minute",
        Dimension::Tpd => "tokens per day",
        Dimension::Ash => "audio seconds per hour",
        Dimension::Asd => "audio seconds per day",
    }
}

fn no_capacity_message(model: Option<&str>, wait: Option<Duration>, shed: Shed) -> String {
    let model = model.map(|m| format!(" for model `{m}`")).unwrap_or_default();
    let expected = match wait {
        Some(wait) => format!("capacity is expected back in {}", crate::duration::format(wait)),
        None => "no capacity is expected".to_owned(),
    };
    match shed {
        Shed::Deadline => format!(
            "All upstream accounts are at their rate limits{model} and the request waited as long as it may; {expected}."
        ),
        Shed::QueueFull => format!("The wait queue{model} is full; {expected}."),
        Shed::NoUsableKey => format!(
            "No upstream key can serve this request{model}: every key is disabled (invalid, forbidden or out of quota). Fix the keys and restart keyrelay."
        ),
    }
}

impl ProxyError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable | Self::InvalidJson(_) | Self::ModelRequired { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::NoCapacity { .. } | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
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
            Self::Unauthorized => "invalid_api_key",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::ModelRequired { .. } => "model_required",
            Self::QuotaExceeded { .. } => "client_quota_exceeded",
            Self::NoCapacity { shed: Shed::Deadline, .. } => "queue_timeout",
            Self::NoCapacity { shed: Shed::QueueFull, .. } => "queue_full",
            Self::NoCapacity { shed: Shed::NoUsableKey, .. } => "no_usable_upstream_key",
            Self::TooLarge { .. } => "over_account_limit",
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
            | Self::NotFound { .. }
            | Self::Unauthorized
            | Self::ModelNotAllowed { .. }
            | Self::ModelRequired { .. } => "invalid_request_error",
            Self::QuotaExceeded { exceeded, .. } => match exceeded.dimension {
                QuotaDimension::Rate(d) if d.counts_tokens() => "tokens",
                _ => "requests",
            },
            Self::NoCapacity { shed: Shed::NoUsableKey, .. } => "server_error",
            Self::NoCapacity { .. } => "requests",
            Self::TooLarge { dimension, .. } if dimension.counts_tokens() => "tokens",
            Self::TooLarge { .. } => "requests",
            _ => "server_error",
        }
    }

    /// The envelope's `code`: what SDKs and people match on.
    fn code(&self) -> &'static str {
        match self {
            Self::NoCapacity { shed: Shed::NoUsableKey, .. } => "no_usable_upstream_key",
            Self::NoCapacity { .. } | Self::TooLarge { .. } | Self::QuotaExceeded { .. } => {
                "rate_limit_exceeded"
            }
            other => other.kind(),
        }
    }
}

impl ProxyError {
    /// For 429s: when to come back (`Some(None)`: waiting will not help).
    fn retry_wait(&self) -> Option<Option<Duration>> {
        match self {
            Self::NoCapacity { wait, .. } => Some(*wait),
            Self::QuotaExceeded { exceeded, .. } => Some(match exceeded.dimension {
                // Another request of the client will finish soon; a second is a fair guess.
                QuotaDimension::Concurrency => {
                    Some(exceeded.wait.unwrap_or(Duration::from_secs(1)))
                }
                QuotaDimension::Rate(_) => exceeded.wait,
            }),
            _ => None,
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = error_body(&self.to_string(), self.error_type(), None, Some(self.code()));
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Self::TooLarge { .. } = self {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(wait) = self.retry_wait() {
            let advertised = wait.unwrap_or(MAX_ADVERTISED_WAIT).min(MAX_ADVERTISED_WAIT);
            let seconds = advertised.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
            headers.insert("retry-after-ms", HeaderValue::from(advertised.as_millis() as u64));
            // Waiting cannot help when nothing will change it, or when the wait is longer than
            // SDKs are willing to honour.
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
            shed: Shed::Deadline,
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
        let long = ProxyError::NoCapacity {
            model: None,
            wait: Some(Duration::from_secs(600)),
            shed: Shed::QueueFull,
        };
        let (_, headers, _) = parts(long).await;
        assert_eq!(headers["retry-after"], "60");
        assert_eq!(headers["x-should-retry"], "false");

        let (status, headers, body) =
            parts(ProxyError::NoCapacity { model: None, wait: None, shed: Shed::NoUsableKey })
                .await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(body["error"]["code"], "no_usable_upstream_key");
    }

    #[tokio::test]
    async fn a_quota_429_names_the_limit_and_is_final_when_the_wait_is_long() {
        let exceeded = Exceeded {
            dimension: QuotaDimension::Rate(Dimension::Tpd),
            model: None,
            limit: 100_000,
            used: 99_500,
            requested: 900,
            wait: Some(Duration::from_secs(3600)),
        };
        let error = ProxyError::QuotaExceeded { client: "batch".into(), exceeded };
        let (status, headers, body) = parts(error).await;
        assert_eq!(status, 429);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(headers["retry-after"], "60");
        assert_eq!(body["error"]["type"], "tokens");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("tokens per day: limit 100000, used 99500, requested 900"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_request_over_every_limit_is_a_final_413() {
        let error = ProxyError::TooLarge {
            model: Some("m".into()),
            dimension: Dimension::Tpm,
            limit: 6000,
            needed: 9000,
        };
        let (status, headers, body) = parts(error).await;
        assert_eq!(status, 413);
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(body["error"]["type"], "tokens");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("9000 tokens") && message.contains("6000"), "{message}");
    }
}
