//! Every error answer of the mock, with Groq's exact bodies (401, 403, 404, 400, 413, 429,
//! injected 5xx) and headers. The only place that turns a refusal into HTTP.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

use super::duration::{ceil_micros, format_go_duration, retry_after_secs};
use super::limiter::{DimensionState, RateSnapshot, Refusal};

const UPGRADE: &str =
    "Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing";

/// A refusal of the mock, turned into Groq's answer by `into_response`.
#[derive(Debug)]
pub(crate) enum MockError {
    /// Missing, unknown or revoked key.
    InvalidApiKey,
    /// Key in `OutOfQuota` state.
    InsufficientQuota,
    /// Key in `Restricted` state.
    Restricted,
    /// Malformed request.
    BadRequest(String),
    /// The model is not served.
    ModelNotFound(String),
    /// Injected fault.
    Injected { status: u16, rate: RateSnapshot },
    /// 429, or 413 when the request can never fit the TPM limit.
    RateLimited(Box<RateLimited>),
}

/// Details of a rate-limit refusal.
#[derive(Debug)]
pub(crate) struct RateLimited {
    pub(crate) model: String,
    pub(crate) org: String,
    pub(crate) refusal: Refusal,
    pub(crate) rate: RateSnapshot,
}

impl IntoResponse for MockError {
    fn into_response(self) -> Response {
        match self {
            Self::InvalidApiKey => error(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Invalid API Key", "type": "invalid_request_error",
                       "code": "invalid_api_key"}),
            ),
            Self::InsufficientQuota => error(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "You exceeded your current quota, please check your plan and billing details.",
                       "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}),
            ),
            Self::Restricted => error(
                StatusCode::FORBIDDEN,
                json!({"message": "Organization has been restricted. Please reach out to support if you believe this was in error.",
                       "type": "invalid_request_error", "code": "organization_restricted"}),
            ),
            Self::BadRequest(message) => error(
                StatusCode::BAD_REQUEST,
                json!({"message": message, "type": "invalid_request_error"}),
            ),
            Self::ModelNotFound(model) => error(
                StatusCode::NOT_FOUND,
                json!({"message": format!("The model `{model}` does not exist or you do not have access to it."),
                       "type": "invalid_request_error", "code": "model_not_found"}),
            ),
            Self::Injected { status, rate } => injected(status, &rate),
            Self::RateLimited(limited) => rate_limited(&limited),
        }
    }
}

fn injected(status: u16, rate: &RateSnapshot) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = json!({"message": "Internal Server Error (injected)",
                      "type": "internal_server_error", "code": null});
    let mut response = error(status, body);
    apply_rate_headers(response.headers_mut(), rate);
    response
}

fn rate_limited(limited: &RateLimited) -> Response {
    let RateLimited { model, org, refusal, rate } = limited;
    let dim = refusal.dimension;
    let scope = format!(
        "for model `{model}` in organization `{org}` service tier `on_demand` on {}",
        dim.long_name()
    );
    let (limit, used, requested) = (refusal.limit, refusal.used, refusal.requested);
    let (status, message, wait) = match refusal.wait {
        None => {
            let message = format!(
                "Request too large {scope}: Limit {limit}, Requested {requested}, \
                 please reduce your message size and try again. {UPGRADE}"
            );
            (StatusCode::PAYLOAD_TOO_LARGE, message, None)
        }
        Some(wait) => {
            let wait = ceil_micros(wait);
            let message = format!(
                "Rate limit reached {scope}: Limit {limit}, Used {used}, Requested {requested}. \
                 Please try again in {}. {UPGRADE}",
                format_go_duration(wait)
            );
            (StatusCode::TOO_MANY_REQUESTS, message, Some(wait))
        }
    };
    let body = json!({"message": message, "type": dim.kind(), "code": "rate_limit_exceeded"});
    let mut response = error(status, body);
    let headers = response.headers_mut();
    apply_rate_headers(headers, rate);
    if let Some(wait) = wait {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    }
    response
}

/// A JSON answer `{"error": details}`.
fn error(status: StatusCode, details: Value) -> Response {
    json_response(status, &json!({ "error": details }))
}

/// Serializes `value` as a JSON answer.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Adds Groq's `x-ratelimit-*` headers: `-requests` = RPD, `-tokens` = TPM; a dimension without a
/// limit gets no headers.
pub(crate) fn apply_rate_headers(headers: &mut HeaderMap, rate: &RateSnapshot) {
    let sets = [(rate.requests, "requests"), (rate.tokens, "tokens")];
    for (state, suffix) in sets {
        if let Some(state) = state {
            insert_dimension(headers, suffix, &state);
        }
    }
}

fn insert_dimension(headers: &mut HeaderMap, suffix: &str, state: &DimensionState) {
    let reset = format_go_duration(ceil_micros(state.reset));
    let values = [
        ("limit", HeaderValue::from(state.limit)),
        ("remaining", HeaderValue::from(state.remaining)),
        ("reset", HeaderValue::from_str(&reset).unwrap_or(HeaderValue::from_static("0s"))),
    ];
    for (what, value) in values {
        if let Ok(name) = HeaderName::try_from(format!("x-ratelimit-{what}-{suffix}")) {
            headers.insert(name, value);
        }
    }
}
