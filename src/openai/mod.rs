//! The OpenAI wire format as keyrelay needs it: a cheap look into request bodies, the error
//! envelope, and SSE framing for errors that happen mid-stream.

mod audio;
mod envelope;
mod peek;

pub use envelope::{error_body, sse_error_event};
pub use peek::{PeekError, RequestPeek};
