//! Reads the token usage of an answer as it streams past, without holding the body: SSE lines
//! that mention `usage` are parsed (`usage` from `include_usage`, or Groq's `x_groq.usage` on the
//! final chunk); for a JSON body only the tail is kept, where `usage` sits.
//!
//! When the answer ends the reservation is settled with that usage; without one (an error, or a
//! provider that reports none) the estimate stands.
//!
//! OpenAI-style providers report a stream's usage only when asked (`stream_options.include_usage`),
//! so keyrelay asks for it on streams whose client did not, and the relay removes the extra usage
//! chunk again ([`ask_for_stream_usage`]).

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;

use super::Completion;
use crate::config::ProviderKind;
use crate::openai::RequestPeek;
use crate::scheduler::{Reservation, Usage};

/// The body to send upstream, and whether `include_usage` was added to it (so the client, which
/// did not ask, must not see the extra usage chunk). Groq reports `x_groq.usage` on every
/// stream's final chunk, so only OpenAI-style providers are asked.
pub(super) fn ask_for_stream_usage(
    kind: ProviderKind,
    path: &str,
    peek: &RequestPeek,
    body: &Bytes,
) -> (Bytes, bool) {
    let chat = path.ends_with("/chat/completions") || path.ends_with("/completions");
    if kind != ProviderKind::OpenAi || !chat || !peek.stream || peek.has_stream_options {
        return (body.clone(), false);
    }
    let Some(open) =
        body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body[i] == b'{')
    else {
        return (body.clone(), false);
    };
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let mut rewritten = Vec::with_capacity(body.len() + FIELD.len());
    rewritten.extend_from_slice(&body[..=open]);
    rewritten.extend_from_slice(FIELD);
    rewritten.extend_from_slice(&body[open + 1..]);
    (Bytes::from(rewritten), true)
}

/// Whether an SSE event is the usage-only chunk `include_usage` adds (`choices: []`, a usage
/// object).
pub(super) fn is_usage_only_event(event: &[u8]) -> bool {
    memmem::find(event, b"\"choices\":[]").is_some()
        && memmem::find(event, b"\"usage\":{").is_some()
}

/// How much of a JSON body's end is kept to find `usage` in.
const TAIL: usize = 16 * 1024;
/// Longest SSE line kept while waiting for its end.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Deserialize)]
struct UsageFields {
    /// `input_tokens` in the Responses API.
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    /// `output_tokens` in the Responses API.
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

impl UsageFields {
    fn usage(&self) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: self.prompt_tokens?,
            completion_tokens: self.completion_tokens.unwrap_or(0),
        })
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    usage: Option<UsageFields>,
    #[serde(default)]
    x_groq: Option<Nested>,
    /// The Responses API's `response.completed` event.
    #[serde(default)]
    response: Option<Nested>,
}

#[derive(Deserialize)]
struct Nested {
    #[serde(default)]
    usage: Option<UsageFields>,
}

/// Watches a body for usage; at the end settles its reservation and records the request.
pub(super) struct UsageTap {
    reservation: Option<Reservation>,
    completion: Option<Completion>,
    sse: bool,
    buffer: Vec<u8>,
    usage: Option<Usage>,
}

impl UsageTap {
    pub(super) fn new(reservation: Reservation, completion: Option<Completion>) -> Self {
        Self {
            reservation: Some(reservation),
            completion,
            sse: false,
            buffer: Vec::new(),
            usage: None,
        }
    }

    /// Whether the body is an SSE stream (else JSON).
    pub(super) fn sse(mut self, sse: bool) -> Self {
        self.sse = sse;
        self
    }

    /// A tap that settles nothing, for tests of what carries it.
    #[cfg(test)]
    pub(super) fn detached(sse: bool) -> Self {
        Self { reservation: None, completion: None, sse, buffer: Vec::new(), usage: None }
    }

    pub(super) fn observe(&mut self, chunk: &[u8]) {
        if !self.sse {
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() > 2 * TAIL {
                self.buffer.drain(..self.buffer.len() - TAIL);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.buffer.is_empty() {
                self.line(&rest[..end]);
            } else {
                self.buffer.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.buffer);
                self.line(&line);
            }
            rest = &rest[end + 1..];
        }
        if self.buffer.len() + rest.len() <= MAX_LINE {
            self.buffer.extend_from_slice(rest);
        } else {
            self.buffer.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else { return };
        // Most chunks carry `"usage":null` (or nothing): parse only those with a usage object.
        if memmem::find(data, b"\"usage\":{").is_none()
            && memmem::find(data, b"\"usage\": {").is_none()
        {
            return;
        }
        if let Ok(chunk) = serde_json::from_slice::<Chunk>(data.trim_ascii()) {
            let nested = |n: &Option<Nested>| n.as_ref()?.usage.as_ref()?.usage();
            let found = chunk
                .usage
                .as_ref()
                .and_then(UsageFields::usage)
                .or_else(|| nested(&chunk.x_groq))
                .or_else(|| nested(&chunk.response));
            self.usage = found.or(self.usage);
        }
    }

    /// The body ended (or was dropped: hyper stops polling a body once its content-length is
    /// written, and a client may disconnect): settle with what was seen.
    pub(super) fn finish(&mut self) {
        if !self.sse {
            self.usage = json_tail_usage(&self.buffer);
        }
        if let Some(completion) = self.completion.take() {
            completion.done(self.usage, true);
        }
        let Some(reservation) = self.reservation.take() else { return };
        match self.usage {
            Some(usage) => reservation.settle(usage),
            // No usage reported: the estimate stands, so pacing stays on the safe side.
            None => drop(reservation),
        }
    }
}

impl Drop for UsageTap {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The last `"usage": {…}` object in the tail of a JSON body.
fn json_tail_usage(tail: &[u8]) -> Option<Usage> {
    let at = memmem::rfind(tail, b"\"usage\"")?;
    let after = &tail[at + b"\"usage\"".len()..];
    let colon = memchr::memchr(b':', after)?;
    let value = &after[colon + 1..];
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<UsageFields>();
    values.next()?.ok()?.usage()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(sse: bool) -> UsageTap {
        UsageTap::detached(sse)
    }

    #[test]
    fn finds_groq_usage_on_the_final_chunk_split_across_reads() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":23,\"completion_tokens\":19,\"total_tokens\":42}}}\n\ndata: [DONE]\n\n";
        for split in [1, 7, 60, 100, stream.len()] {
            let mut tap = tap(true);
            for piece in stream.chunks(split) {
                tap.observe(piece);
            }
            assert_eq!(
                tap.usage,
                Some(Usage { prompt_tokens: 23, completion_tokens: 19 }),
                "{split}"
            );
        }
    }

    #[test]
    fn include_usage_chunks_win_and_null_usage_is_ignored() {
        let mut tap = tap(true);
        tap.observe(b"data: {\"usage\":null,\"choices\":[]}\n\n");
        assert_eq!(tap.usage, None);
        tap.observe(
            b"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7},\"choices\":[]}\n\n",
        );
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 5, completion_tokens: 7 }));
    }

    #[test]
    fn asks_openai_providers_for_stream_usage_only_when_the_client_did_not() {
        let body = Bytes::from_static(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#);
        let peek = RequestPeek::from_body(None, &body).unwrap();
        let (sent, asked) =
            ask_for_stream_usage(ProviderKind::OpenAi, "/chat/completions", &peek, &body);
        assert!(asked);
        let value: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["model"], "gpt-4o");

        let (same, asked) =
            ask_for_stream_usage(ProviderKind::Groq, "/chat/completions", &peek, &body);
        assert!(!asked && same == body);
        let own =
            Bytes::from_static(br#"{"stream":true,"stream_options":{"include_usage":false}}"#);
        let peek = RequestPeek::from_body(None, &own).unwrap();
        assert!(!ask_for_stream_usage(ProviderKind::OpenAi, "/chat/completions", &peek, &own).1);
    }

    #[test]
    fn reads_responses_api_usage() {
        let mut tap = tap(true);
        tap.observe(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":9,\"output_tokens\":4,\"total_tokens\":13}}}\n\n");
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 9, completion_tokens: 4 }));
    }

    #[test]
    fn recognises_the_usage_only_chunk() {
        assert!(is_usage_only_event(
            br#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_event(br#"data: {"choices":[{"delta":{}}],"usage":null}"#));
    }

    #[test]
    fn finds_usage_at_the_end_of_a_large_json_body() {
        let mut body = br#"{"choices":[{"message":{"content":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 100_000));
        body.extend_from_slice(br#"usage"}}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14},"x_groq":{"id":"r"}}"#);
        let mut tap = tap(false);
        for piece in body.chunks(4096) {
            tap.observe(piece);
        }
        assert!(tap.buffer.len() <= 2 * TAIL);
        tap.finish();
        assert_eq!(tap.usage, Some(Usage { prompt_tokens: 11, completion_tokens: 3 }));
    }
}
