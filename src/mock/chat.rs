//! `POST chat/completions`: parses the request, estimates its cost (prompt estimate + n × max
//! tokens), admits it, and answers with a `chat.completion` object, or hands over to
//! [`super::stream`] for `"stream": true`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::MockConfig;
use super::errors::{MockError, apply_rate_headers, json_response};
use super::limiter::Cost;
use super::state::MockState;
use super::stream;

const WORDS: [&str; 8] = ["This ", "is ", "a ", "mock ", "answer ", "from ", "keyrelay", ". "];
/// Largest `n` accepted.
const MAX_CHOICES: u64 = 128;

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    max_completion_tokens: Option<u64>,
    max_tokens: Option<u64>,
    n: Option<u64>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// What a chat request asks for and costs.
#[derive(Clone, Debug)]
pub(crate) struct ChatPlan {
    pub(crate) model: String,
    pub(crate) prompt_tokens: u64,
    /// Output budget per choice (reserved).
    pub(crate) max_tokens: u64,
    /// Tokens generated per choice.
    pub(crate) completion_per_choice: u64,
    pub(crate) choices: u64,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

impl ChatPlan {
    fn new(request: &ChatRequest, config: &MockConfig) -> Result<Self, MockError> {
        let choices = request.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&choices) {
            return Err(MockError::BadRequest(format!("'n' must be between 1 and {MAX_CHOICES}")));
        }
        let max_tokens = request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(config.default_max_tokens);
        Ok(Self {
            model: request.model.clone(),
            prompt_tokens: estimate_prompt(&request.messages),
            max_tokens,
            completion_per_choice: config.completion_tokens.min(max_tokens),
            choices,
            stream: request.stream.unwrap_or(false),
            include_usage: request
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }

    /// Admission cost: 1 request, prompt + n × max tokens.
    pub(crate) fn cost(&self) -> Cost {
        let output = self.choices.saturating_mul(self.max_tokens);
        Cost { requests: 1, tokens: self.prompt_tokens.saturating_add(output) }
    }

    /// Completion tokens of the whole answer.
    pub(crate) fn completion_tokens(&self) -> u64 {
        self.choices * self.completion_per_choice
    }

    /// Groq's `usage` object for `completion_tokens` generated tokens.
    pub(crate) fn usage(&self, completion_tokens: u64) -> Value {
        // Rounded to microseconds so the JSON shows `7e-5`, not float noise.
        let micros = |secs: f64| (secs * 1e6).round() / 1e6;
        let prompt_time = micros(self.prompt_tokens as f64 * 1e-5);
        let completion_time = micros(completion_tokens as f64 * 1e-3);
        json!({
            "queue_time": 0.0001,
            "prompt_tokens": self.prompt_tokens,
            "prompt_time": prompt_time,
            "completion_tokens": completion_tokens,
            "completion_time": completion_time,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "total_time": micros(prompt_time + completion_time),
        })
    }
}

/// Prompt estimate: Σ (4 + ⌈chars/4⌉) over messages, + 2.
fn estimate_prompt(messages: &[Message]) -> u64 {
    let per_message = messages.iter().map(|m| 4 + content_chars(&m.content).div_ceil(4));
    per_message.sum::<u64>() + 2
}

/// Characters of a message's content: a string, or the text parts of an array.
fn content_chars(content: &Value) -> u64 {
    let chars = |s: &str| s.chars().count() as u64;
    match content {
        Value::String(text) => chars(text),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(chars)
            .sum(),
        _ => 0,
    }
}

/// Text of generated token `index`.
pub(crate) fn token_text(index: u64) -> &'static str {
    WORDS[(index % WORDS.len() as u64) as usize]
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A Groq-style request id, `req_` + 26 random characters.
pub(crate) fn new_request_id() -> String {
    let tail: String = std::iter::repeat_with(fastrand::lowercase).take(26).collect();
    format!("req_{tail}")
}

/// Parses a JSON body or answers 400.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, MockError> {
    serde_json::from_slice(body)
        .map_err(|e| MockError::BadRequest(format!("Failed to parse request body: {e}")))
}

/// Sets `x-request-id`.
pub(crate) fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
}

/// Handler of `POST chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    chat(&state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn chat(state: &Arc<MockState>, headers: &HeaderMap, body: &[u8]) -> Result<Response, MockError> {
    let caller = state.authenticate(headers)?;
    let request: ChatRequest = parse_json(body)?;
    let plan = ChatPlan::new(&request, &state.config)?;
    if !state.serves(&plan.model) {
        return Err(MockError::ModelNotFound(plan.model));
    }
    let mut ticket = state.admit(caller, &plan.model, plan.cost())?;
    let request_id = new_request_id();
    if plan.stream {
        let reset_after = state.take_stream_reset();
        let interval = state.config.stream_chunk_interval;
        return Ok(stream::sse_response(plan, ticket, request_id, interval, reset_after));
    }
    let completion_tokens = plan.completion_tokens();
    ticket.set_actual(plan.prompt_tokens + completion_tokens);
    ticket.settle();
    let mut response = json_response(StatusCode::OK, &completion_body(&plan, &request_id));
    apply_rate_headers(response.headers_mut(), &ticket.rate);
    set_request_id(&mut response, &request_id);
    Ok(response)
}

fn completion_body(plan: &ChatPlan, request_id: &str) -> Value {
    let content: String = (0..plan.completion_per_choice).map(token_text).collect();
    let choices: Vec<Value> = (0..plan.choices)
        .map(|index| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content},
                "logprobs": null,
                "finish_reason": "stop",
            })
        })
        .collect();
    json!({
        "id": format!("chatcmpl-{}", request_id.trim_start_matches("req_")),
        "object": "chat.completion",
        "created": unix_now(),
        "model": plan.model,
        "choices": choices,
        "usage": plan.usage(plan.completion_tokens()),
        "system_fingerprint": "fp_mock",
        "service_tier": "on_demand",
        "x_groq": {"id": request_id},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_estimate() -> Result<(), serde_json::Error> {
        let messages: Vec<Message> = serde_json::from_str(
            r#"[{"role":"system","content":"12345"},
                {"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url"}]},
                {"role":"assistant","content":null}]"#,
        )?;
        // (4 + 2) + (4 + 1) + (4 + 0) + 2
        assert_eq!(estimate_prompt(&messages), 17);
        Ok(())
    }

    #[test]
    fn request_ids_look_like_groq() {
        let id = new_request_id();
        assert!(id.starts_with("req_"));
        assert_eq!(id.len(), 30);
    }
}
