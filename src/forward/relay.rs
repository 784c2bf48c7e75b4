//! The upstream's response body, passed to the client chunk by chunk as it arrives.
//!
//! Nothing is buffered: each upstream frame becomes one client frame. If the upstream fails after
//! the head was sent, an SSE stream ends with one `data: {"error":…}` event (which both SDKs raise
//! as an error) instead of a silent EOF that looks like success; other bodies are aborted so the
//! client sees a truncated transfer. A [`UsageTap`] watches the bytes go by and settles the
//! request's reservation when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;

use super::usage::UsageTap;
use crate::openai::sse_error_event;

/// A relayed body stream.
pub(super) struct Relay {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    sse: bool,
    at_event_boundary: bool,
    finished: bool,
    tap: Option<UsageTap>,
}

impl Relay {
    /// Relays `upstream`; `sse` selects the error-event behaviour.
    pub(super) fn new(
        upstream: BoxStream<'static, reqwest::Result<Bytes>>,
        sse: bool,
        tap: Option<UsageTap>,
    ) -> Self {
        Self { inner: upstream, sse, at_event_boundary: true, finished: false, tap }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if !chunk.is_empty() {
                    self.at_event_boundary =
                        chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n");
                }
                if let Some(tap) = self.tap.as_mut() {
                    tap.observe(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.finished = true;
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
                self.finished = true;
                if let Some(tap) = self.tap.as_mut() {
                    tap.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
