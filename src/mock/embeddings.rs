//! `POST embeddings`: a small deterministic vector per input; costs 1 request and the estimated
//! input tokens, like chat without an output budget.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{new_request_id, parse_json, set_request_id};
use super::errors::{MockError, apply_rate_headers, json_response};
use super::limiter::Cost;
use super::state::MockState;

/// Dimension of the mock embeddings.
const DIMENSIONS: usize = 16;

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Value,
}

/// One input: its token estimate and the seed of its vector.
struct Input {
    tokens: u64,
    seed: u64,
}

/// Handler of `POST embeddings`.
pub(crate) async fn embeddings(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    embed(&state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn embed(state: &Arc<MockState>, headers: &HeaderMap, body: &[u8]) -> Result<Response, MockError> {
    let caller = state.authenticate(headers)?;
    let request: EmbeddingRequest = parse_json(body)?;
    let inputs = parse_inputs(&request.input)?;
    if !state.serves(&request.model) {
        return Err(MockError::ModelNotFound(request.model));
    }
    let tokens: u64 = inputs.iter().map(|i| i.tokens).sum();
    let ticket = state.admit(caller, &request.model, Cost { requests: 1, tokens })?;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            json!({"object": "embedding", "index": index, "embedding": vector(input.seed)})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let request_id = new_request_id();
    let mut response = json_response(StatusCode::OK, &body);
    apply_rate_headers(response.headers_mut(), &ticket.rate);
    set_request_id(&mut response, &request_id);
    Ok(response)
}

/// `input` is a string, an array of strings, a token array, or an array of token arrays.
fn parse_inputs(input: &Value) -> Result<Vec<Input>, MockError> {
    let invalid = || MockError::BadRequest("'input' must be a string or an array".to_owned());
    match input {
        Value::String(text) => Ok(vec![text_input(text)]),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(vec![tokens_input(items)]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text_input(text)),
                Value::Array(tokens) => Ok(tokens_input(tokens)),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

fn text_input(text: &str) -> Input {
    let tokens = (text.chars().count() as u64).div_ceil(4).max(1);
    Input { tokens, seed: fnv1a(text.as_bytes()) }
}

fn tokens_input(tokens: &[Value]) -> Input {
    let text: Vec<u8> = tokens.iter().flat_map(|t| t.to_string().into_bytes()).collect();
    Input { tokens: tokens.len() as u64, seed: fnv1a(&text) }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A deterministic unit vector.
fn vector(seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let raw: Vec<f64> = (0..DIMENSIONS).map(|_| rng.f64() * 2.0 - 1.0).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    raw.iter().map(|x| x / norm).collect()
}
