//! `POST audio/transcriptions`: reads the `model` and `file` fields of a multipart/form-data body
//! (a minimal parser over `memchr`), counts one request against RPM/RPD, and answers
//! `{"text": "mock transcription of N bytes"}`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use memchr::memmem;
use serde_json::json;

use super::chat::{new_request_id, set_request_id};
use super::errors::{MockError, apply_rate_headers, json_response};
use super::limiter::Cost;
use super::state::MockState;

/// One form field.
#[derive(Debug, PartialEq, Eq)]
struct Part<'a> {
    name: &'a [u8],
    data: &'a [u8],
}

/// Handler of `POST audio/transcriptions`.
pub(crate) async fn transcriptions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    transcribe(&state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn transcribe(
    state: &Arc<MockState>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, MockError> {
    let caller = state.authenticate(headers)?;
    let boundary = boundary(headers)
        .ok_or_else(|| MockError::BadRequest("expected a multipart/form-data body".to_owned()))?;
    let parts = parse_multipart(body, boundary.as_bytes());
    let field = |name: &str| parts.iter().find(|p| p.name == name.as_bytes()).map(|p| p.data);
    let model = field("model")
        .map(|m| String::from_utf8_lossy(m).trim().to_owned())
        .ok_or_else(|| MockError::BadRequest("missing form field 'model'".to_owned()))?;
    let file = field("file")
        .ok_or_else(|| MockError::BadRequest("missing form field 'file'".to_owned()))?;
    if !state.serves(&model) {
        return Err(MockError::ModelNotFound(model));
    }
    let ticket = state.admit(caller, &model, Cost { requests: 1, tokens: 0 })?;
    let request_id = new_request_id();
    let body = json!({
        "text": format!("mock transcription of {} bytes", file.len()),
        "x_groq": {"id": request_id},
    });
    let mut response = json_response(StatusCode::OK, &body);
    apply_rate_headers(response.headers_mut(), &ticket.rate);
    set_request_id(&mut response, &request_id);
    Ok(response)
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let (mime, params) = value.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        let value = value.trim().trim_matches('"');
        (name.trim().eq_ignore_ascii_case("boundary") && !value.is_empty())
            .then(|| value.to_owned())
    })
}

/// Splits a multipart body into named parts (parts without a name are skipped).
fn parse_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<Part<'a>> {
    let delimiter = [b"--", boundary].concat();
    let starts: Vec<usize> = memmem::find_iter(body, &delimiter).collect();
    starts
        .windows(2)
        .filter_map(|pair| {
            let part = body.get(pair[0] + delimiter.len()..pair[1])?;
            let part = part.strip_prefix(b"\r\n")?;
            let part = part.strip_suffix(b"\r\n").unwrap_or(part);
            let header_end = memmem::find(part, b"\r\n\r\n")?;
            let name = field_name(part.get(..header_end)?)?;
            Some(Part { name, data: part.get(header_end + 4..)? })
        })
        .collect()
}

/// The `name="…"` parameter of a part's headers (not `filename="…"`).
fn field_name(headers: &[u8]) -> Option<&[u8]> {
    memmem::find_iter(headers, b"name=\"").find_map(|at| {
        let standalone = at == 0 || matches!(headers.get(at - 1), Some(b' ' | b';' | b'\t'));
        let rest = headers.get(at + 6..)?;
        let end = memchr::memchr(b'"', rest)?;
        standalone.then(|| rest.get(..end)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
Content-Type: audio/wav\r\n\r\nRIFF\r\n1234\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
whisper-large-v3\r\n--XyZ--\r\n";
        let parts = parse_multipart(body, b"XyZ");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Part { name: b"file", data: b"RIFF\r\n1234" });
        assert_eq!(parts[1], Part { name: b"model", data: b"whisper-large-v3" });
    }

    #[test]
    fn reads_boundary() {
        let mut headers = HeaderMap::new();
        let value = http::HeaderValue::from_static("multipart/form-data; boundary=\"abc\"");
        headers.insert(CONTENT_TYPE, value);
        assert_eq!(boundary(&headers).as_deref(), Some("abc"));
        headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        assert_eq!(boundary(&headers), None);
    }
}
