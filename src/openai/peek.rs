//! A look into a request body for the fields routing and pacing need, without building a JSON tree.
//!
//! JSON bodies are deserialized into a struct of borrowed fields; serde skips every other field
//! without allocating. Multipart bodies (audio) are scanned for their `model` part. The original
//! bytes are what gets forwarded.

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;

/// What keyrelay needs to know about a request before choosing an upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestPeek {
    /// The `model` field, when the body has one.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// `n`, the number of choices (1 when absent).
    pub n: u32,
    /// `max_completion_tokens`, else the deprecated `max_tokens`.
    pub max_output_tokens: Option<u64>,
}

/// The body claims to be JSON but is not the object an OpenAI endpoint expects.
#[derive(Debug, thiserror::Error)]
#[error("the request body is not a valid JSON object: {0}")]
pub struct PeekError(String);

#[derive(Deserialize)]
struct JsonFields<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

impl RequestPeek {
    /// Peeks at `body` according to its `content-type`.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Self, PeekError> {
        let content_type = content_type.unwrap_or_default().trim_start();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("multipart/form-data") {
            return Ok(Self {
                model: multipart_field(content_type, body, "model"),
                n: 1,
                ..Self::default()
            });
        }
        let looks_json = media_type.eq_ignore_ascii_case("application/json")
            || (media_type.is_empty() && body.first() == Some(&b'{'));
        if !looks_json || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { n: 1, ..Self::default() });
        }
        let fields: JsonFields<'_> =
            serde_json::from_slice(body).map_err(|e| PeekError(e.to_string()))?;
        Ok(Self {
            model: fields.model.map(Cow::into_owned),
            stream: fields.stream.unwrap_or(false),
            n: fields.n.unwrap_or(1),
            max_output_tokens: fields.max_completion_tokens.or(fields.max_tokens),
        })
    }
}

/// The text value of form field `name` in a multipart body, if present.
fn multipart_field(content_type: &str, body: &[u8], name: &str) -> Option<String> {
    let boundary = content_type.split(';').find_map(|param| {
        let value = param.trim().strip_prefix("boundary=")?;
        Some(value.trim_matches('"'))
    })?;
    let delimiter = format!("--{boundary}");
    let needle = format!("name=\"{name}\"");
    for part in memmem::find_iter(body, delimiter.as_bytes()) {
        let part = &body[part + delimiter.len()..];
        let headers_end = memmem::find(part, b"\r\n\r\n")?;
        if memmem::find(&part[..headers_end], needle.as_bytes()).is_none() {
            continue;
        }
        let value = &part[headers_end + 4..];
        let end = memmem::find(value, format!("\r\n{delimiter}").as_bytes())?;
        return std::str::from_utf8(&value[..end]).ok().map(|v| v.trim().to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_routing_fields_from_json() {
        let body = br#"{"messages":[{"role":"user","content":"hi \"model\": x"}],"model":"llama-3.1-8b-instant","stream":true,"n":2,"max_tokens":50,"tools":[{"a":[1,2,{"b":null}]}]}"#;
        let peek = RequestPeek::from_body(Some("application/json"), body).unwrap();
        assert_eq!(peek.model.as_deref(), Some("llama-3.1-8b-instant"));
        assert!(peek.stream);
        assert_eq!(peek.n, 2);
        assert_eq!(peek.max_output_tokens, Some(50));
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let body = br#"{"model":"m","max_tokens":10,"max_completion_tokens":20}"#;
        let peek = RequestPeek::from_body(None, body).unwrap();
        assert_eq!(peek.max_output_tokens, Some(20));
        assert!(!peek.stream);
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        let peek =
            RequestPeek::from_body(Some("application/json"), br#"{"model":"a\/b"}"#).unwrap();
        assert_eq!(peek.model.as_deref(), Some("a/b"));
    }

    #[test]
    fn invalid_json_is_an_error_and_empty_bodies_are_not() {
        assert!(RequestPeek::from_body(Some("application/json"), b"{\"model\":").is_err());
        assert!(RequestPeek::from_body(Some("application/json"), br#"{"model":5}"#).is_err());
        assert!(RequestPeek::from_body(Some("application/json"), b"[1]").is_err());
        assert_eq!(RequestPeek::from_body(Some("application/json"), b"").unwrap().model, None);
        assert_eq!(RequestPeek::from_body(Some("text/plain"), b"{oops").unwrap().model, None);
    }

    #[test]
    fn finds_the_model_part_of_a_multipart_body() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01model\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-large-v3\r\n--XyZ--\r\n";
        let peek = RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), body).unwrap();
        assert_eq!(peek.model.as_deref(), Some("whisper-large-v3"));
        let none = RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), b"--XyZ--");
        assert_eq!(none.unwrap().model, None);
    }
}
