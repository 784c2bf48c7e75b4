//! The OpenAI error envelope `{"error":{"message","type","param","code"}}`, the one shape SDKs
//! parse into `.message/.type/.param/.code`.

use bytes::Bytes;
use serde::Serialize;

#[derive(Serialize)]
struct Envelope<'a> {
    error: Details<'a>,
}

#[derive(Serialize)]
struct Details<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Serializes an error envelope.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let envelope = Envelope { error: Details { message, kind, param, code } };
    // Serializing plain strings into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// An SSE event carrying an error envelope, the form both SDKs raise as `APIError` mid-stream.
///
/// `at_boundary` says whether the bytes already sent ended an event; if not, the partial event is
/// terminated first so the error is parsed as its own event.
pub fn sse_error_event(message: &str, kind: &str, code: Option<&str>, at_boundary: bool) -> Bytes {
    let body = error_body(message, kind, None, code);
    let mut event = Vec::with_capacity(body.len() + 16);
    if !at_boundary {
        event.extend_from_slice(b"\n\n");
    }
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_fields() {
        let body = error_body("boom \"quoted\"", "server_error", None, Some("x"));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"]["message"], "boom \"quoted\"");
        assert_eq!(value["error"]["type"], "server_error");
        assert!(value["error"]["param"].is_null());
        assert_eq!(value["error"]["code"], "x");
    }

    #[test]
    fn sse_event_closes_a_partial_event_first() {
        let event = sse_error_event("m", "t", None, false);
        assert!(event.starts_with(b"\n\ndata: {\"error\""));
        assert!(event.ends_with(b"}\n\n"));
        assert!(sse_error_event("m", "t", None, true).starts_with(b"data: "));
    }
}
