//! The upstream's response body, passed to the client chunk by chunk as it arrives.
//!
//! Nothing is buffered: each upstream frame becomes one client frame. If the upstream fails after
//! the head was sent, an SSE stream ends with one `data: {"error":…}` event (which both SDKs raise
//! as an error) instead of a silent EOF that looks like success; other bodies are aborted so the
//! client sees a truncated transfer. A [`UsageTap`] watches the bytes go by and settles the
//! request's reservation when the body ends. When keyrelay asked for stream usage on the client's
//! behalf, events are re-framed so the extra usage-only chunk can be dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;

use super::usage::{UsageTap, is_usage_only_event};
use crate::openai::sse_error_event;

/// Longest stretch held back while looking for the end of an SSE event.
const MAX_PENDING: usize = 1024 * 1024;

/// A relayed body stream.
pub(super) struct Relay {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    sse: bool,
    at_event_boundary: bool,
    finished: bool,
    tap: UsageTap,
    /// Set when usage-only events must be dropped: bytes not yet known to end an event.
    pending: Option<BytesMut>,
}

impl Relay {
    /// Relays `upstream`; `sse` selects the error-event behaviour.
    pub(super) fn new(
        upstream: BoxStream<'static, reqwest::Result<Bytes>>,
        sse: bool,
        tap: UsageTap,
        drop_usage_events: bool,
    ) -> Self {
        let pending = drop_usage_events.then(BytesMut::new);
        Self { inner: upstream, sse, at_event_boundary: true, finished: false, tap, pending }
    }

    /// With event filtering on: the complete events received so far, minus usage-only ones.
    fn filter(&mut self, chunk: Bytes) -> Bytes {
        let Some(pending) = self.pending.as_mut() else { return chunk };
        pending.extend_from_slice(&chunk);
        let end = match last_event_end(pending) {
            Some(end) => end,
            // Not SSE as expected: pass everything on rather than hold it.
            None if pending.len() > MAX_PENDING => pending.len(),
            None => return Bytes::new(),
        };
        let complete = pending.split_to(end).freeze();
        if !is_usage_only_event(&complete) {
            return complete;
        }
        let mut out = BytesMut::with_capacity(complete.len());
        let mut rest = &complete[..];
        while !rest.is_empty() {
            let event_end = first_event_end(rest).unwrap_or(rest.len());
            let event = &rest[..event_end];
            if !is_usage_only_event(event) {
                out.extend_from_slice(event);
            }
            rest = &rest[event_end..];
        }
        out.freeze()
    }

    /// What is still held back when the upstream body ends.
    fn flush(&mut self) -> Option<Bytes> {
        let pending = self.pending.as_mut()?;
        (!pending.is_empty()).then(|| pending.split().freeze())
    }
}

/// Where the first SSE event of `bytes` ends (after its blank line, `\n\n` or `\r\n\r\n`).
fn first_event_end(bytes: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|at| at + 2);
    let crlf = memchr::memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4);
    lf.into_iter().chain(crlf).min()
}

/// Where the last complete SSE event of `bytes` ends.
fn last_event_end(bytes: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::rfind(bytes, b"\n\n").map(|at| at + 2);
    let crlf = memchr::memmem::rfind(bytes, b"\r\n\r\n").map(|at| at + 4);
    lf.into_iter().chain(crlf).max()
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.tap.observe(&chunk);
                let chunk = self.filter(chunk);
                if !chunk.is_empty() {
                    self.at_event_boundary =
                        chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n");
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.finished = true;
                self.pending = None;
                tracing::warn!(sse = self.sse, error = %error.without_url(), "Upstream failed mid-response");
                if self.sse {
                    let event = sse_error_event(
                        "The upstream connection failed mid-stream; the answer is incomplete.",
                        "server_error",
                        Some("upstream_stream_error"),
                        self.at_event_boundary,
                    );
                    Poll::Ready(Some(Ok(event)))
                } else {
                    Poll::Ready(Some(Err(std::io::Error::other("upstream body failed"))))
                }
            }
            Poll::Ready(None) => {
                if let Some(rest) = self.flush() {
                    return Poll::Ready(Some(Ok(rest)));
                }
                self.finished = true;
                self.tap.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn relay_all(chunks: Vec<&'static [u8]>, drop_usage: bool) -> String {
        let upstream =
            futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let relay = Relay::new(upstream.boxed(), true, UsageTap::detached(true), drop_usage);
        let parts: Vec<Bytes> = relay.map(|r| r.unwrap()).collect().await;
        String::from_utf8(parts.concat()).unwrap()
    }

    #[tokio::test]
    async fn the_usage_only_event_is_dropped_wherever_the_chunks_split() {
        let events: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n";
        let expected = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        for split in [1, 5, 40, events.len()] {
            let chunks: Vec<&'static [u8]> = events.chunks(split).collect();
            assert_eq!(relay_all(chunks, true).await, expected, "{split}");
        }
        let untouched: Vec<&'static [u8]> = events.chunks(7).collect();
        assert_eq!(relay_all(untouched, false).await.as_bytes(), events);
        let crlf: &[u8] = b"data: {\"choices\":[{}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\r\n\r\n";
        assert_eq!(relay_all(vec![crlf], true).await, "data: {\"choices\":[{}]}\r\n\r\n");
    }
}
