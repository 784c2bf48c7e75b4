//! The mock's HTTP surface: the OpenAI-compatible routes under both `/openai/v1` and `/v1`, the
//! `/mock/*` introspection routes, and the recording middleware (latency and first-byte faults,
//! request log, counters, common headers) wrapped around the API routes.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::audio::transcriptions;
use super::chat::{chat_completions, new_request_id, unix_now};
use super::embeddings::embeddings;
use super::errors::{MockError, json_response};
use super::state::{MockState, lock};
use super::stats::{RECORDED_BODY_BYTES, RecordedRequest};

/// Largest request body accepted (audio uploads included).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The whole app.
pub(crate) fn router(state: Arc<MockState>) -> Router {
    let api = Router::new()
        .route("/chat/completions", post(chat_completions))
        .route("/embeddings", post(embeddings))
        .route("/audio/transcriptions", post(transcriptions))
        .route("/models", get(list_models))
        .route("/models/{*id}", get(get_model));
    Router::new()
        .nest("/openai/v1", api.clone())
        .nest("/v1", api)
        .route("/mock/stats", get(stats))
        .route("/mock/requests", get(requests))
        .fallback(unknown_route)
        // Outermost: the middleware sees the full (un-nested) path.
        .layer(from_fn_with_state(Arc::clone(&state), record))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Applies `latency` and `first_byte_delay`, records the request and its status, and adds
/// `x-request-id` and `x-groq-region`. `/mock/*` routes pass through untouched.
async fn record(State(state): State<Arc<MockState>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/mock/") {
        return next.run(request).await;
    }
    let received_at_ms = u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let faults = state.faults();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        let error = MockError::BadRequest("request body too large or unreadable".to_owned());
        return error.into_response();
    };
    let mut recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        key: MockState::bearer(&parts.headers).map(str::to_owned),
        headers: header_pairs(&parts.headers),
        body: body.slice(..body.len().min(RECORDED_BODY_BYTES)),
        status: 0,
        received_at_ms,
    };
    let mut response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if !faults.first_byte_delay.is_zero() {
        tokio::time::sleep(faults.first_byte_delay).await;
    }
    let headers = response.headers_mut();
    if !headers.contains_key("x-request-id")
        && let Ok(id) = HeaderValue::from_str(&new_request_id())
    {
        headers.insert("x-request-id", id);
    }
    headers.insert("x-groq-region", HeaderValue::from_static("mock"));
    recorded.status = response.status().as_u16();
    let org = recorded.key.as_deref().and_then(|key| state.org_of(key));
    lock(&state.recorder).record(recorded, org);
    response
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

fn model_object(id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": unix_now(),
        "owned_by": "keyrelay-mock",
        "active": true,
        "context_window": 131_072,
    })
}

async fn list_models(State(state): State<Arc<MockState>>, headers: HeaderMap) -> Response {
    if let Err(error) = state.authenticate(&headers) {
        return error.into_response();
    }
    let data: Vec<Value> = state.config.models.iter().map(|m| model_object(m)).collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn get_model(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = state.authenticate(&headers) {
        return error.into_response();
    }
    let id = id.trim_start_matches('/');
    if !state.serves(id) {
        return MockError::ModelNotFound(id.to_owned()).into_response();
    }
    json_response(StatusCode::OK, &model_object(id))
}

async fn stats(State(state): State<Arc<MockState>>) -> Response {
    let stats = lock(&state.recorder).stats();
    axum::Json(stats).into_response()
}

async fn requests(State(state): State<Arc<MockState>>) -> Response {
    let requests = lock(&state.recorder).requests();
    axum::Json(requests).into_response()
}

async fn unknown_route(request: Request) -> Response {
    let message = format!("Unknown request URL: {} {}", request.method(), request.uri().path());
    let body = json!({"error": {"message": message, "type": "invalid_request_error",
                                "code": "unknown_url"}});
    json_response(StatusCode::NOT_FOUND, &body)
}
