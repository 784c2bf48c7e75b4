//! Streaming chat answers: one SSE `chat.completion.chunk` per generated token, a final chunk
//! with `finish_reason` and `x_groq.usage`, the optional `include_usage` chunk, then `[DONE]`.
//! Each event is its own body frame; an injected reset makes the body fail mid-stream.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream;
use http::HeaderValue;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{Value, json};

use super::chat::{ChatPlan, set_request_id, token_text, unix_now};
use super::errors::apply_rate_headers;
use super::state::Ticket;

/// One SSE event of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Generated token number `n` (choices interleaved).
    Token(u64),
    /// `finish_reason` and `x_groq.usage`.
    Final,
    /// `choices: []` and top-level `usage` (`stream_options.include_usage`).
    Usage,
    /// `data: [DONE]`.
    Done,
}

/// The generator behind the body stream.
struct Sse {
    plan: ChatPlan,
    ticket: Ticket,
    request_id: String,
    created: u64,
    interval: Duration,
    /// Abort after this many data chunks.
    reset_after: Option<u32>,
    position: u64,
    chunks_sent: u32,
    finished: bool,
}

/// Builds the `text/event-stream` answer. The ticket is settled when the final chunk is produced,
/// or on drop with the tokens generated so far.
pub(crate) fn sse_response(
    plan: ChatPlan,
    mut ticket: Ticket,
    request_id: String,
    interval: Duration,
    reset_after: Option<u32>,
) -> Response {
    ticket.set_actual(plan.prompt_tokens);
    let rate = ticket.rate;
    let sse = Sse {
        plan,
        ticket,
        request_id: request_id.clone(),
        created: unix_now(),
        interval,
        reset_after,
        position: 0,
        chunks_sent: 0,
        finished: false,
    };
    let body = stream::unfold(sse, |mut sse| async move {
        let item = sse.next_frame().await?;
        Some((item, sse))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    apply_rate_headers(headers, &rate);
    set_request_id(&mut response, &request_id);
    response
}

impl Sse {
    fn event_at(&self, position: u64) -> Option<Event> {
        let tokens = self.plan.completion_tokens();
        let after_tokens = position.checked_sub(tokens);
        match (after_tokens, self.plan.include_usage) {
            (None, _) => Some(Event::Token(position)),
            (Some(0), _) => Some(Event::Final),
            (Some(1), true) => Some(Event::Usage),
            (Some(1), false) | (Some(2), true) => Some(Event::Done),
            _ => None,
        }
    }

    async fn next_frame(&mut self) -> Option<Result<Bytes, io::Error>> {
        if self.finished {
            return None;
        }
        let Some(event) = self.event_at(self.position) else {
            self.finished = true;
            return None;
        };
        if self.reset_after.is_some_and(|after| self.chunks_sent >= after) {
            self.finished = true;
            // Let hyper flush the chunks already produced, so the client sees them before the
            // abort instead of losing the whole response.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected stream reset",
            )));
        }
        if self.position > 0 && !self.interval.is_zero() {
            tokio::time::sleep(self.interval).await;
        }
        self.position += 1;
        if event == Event::Done {
            return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        self.chunks_sent += 1;
        let chunk = self.chunk(event);
        Some(Ok(Bytes::from(format!("data: {chunk}\n\n"))))
    }

    fn chunk(&mut self, event: Event) -> Value {
        let choices = self.plan.choices;
        let mut chunk = json!({
            "id": format!("chatcmpl-{}", self.request_id.trim_start_matches("req_")),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.plan.model,
            "system_fingerprint": "fp_mock",
        });
        let (choice_list, usage) = match event {
            Event::Token(n) => {
                if n == 0 {
                    chunk["x_groq"] = json!({"id": self.request_id});
                }
                (vec![self.token_choice(n)], Value::Null)
            }
            Event::Final => {
                let generated = self.plan.completion_tokens();
                self.ticket.set_actual(self.plan.prompt_tokens + generated);
                self.ticket.settle();
                let x_groq = json!({"id": self.request_id, "usage": self.plan.usage(generated)});
                chunk["x_groq"] = x_groq;
                let finals = (0..choices).map(|index| {
                    json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": "stop"})
                });
                (finals.collect(), Value::Null)
            }
            Event::Usage | Event::Done => {
                (Vec::new(), self.plan.usage(self.plan.completion_tokens()))
            }
        };
        chunk["choices"] = Value::Array(choice_list);
        if self.plan.include_usage {
            chunk["usage"] = usage;
        }
        chunk
    }

    fn token_choice(&mut self, n: u64) -> Value {
        let choices = self.plan.choices;
        let (index, token) = (n % choices, n / choices);
        self.ticket.set_actual(self.plan.prompt_tokens + n + 1);
        let delta = if token == 0 {
            json!({"role": "assistant", "content": token_text(token)})
        } else {
            json!({"content": token_text(token)})
        };
        json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null})
    }
}
