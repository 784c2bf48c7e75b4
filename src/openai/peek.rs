//! A look into a request body for the fields routing and pacing need, without building a JSON tree.
//!
//! JSON bodies are deserialized into a struct of borrowed fields; serde skips every other field
//! without allocating. Multipart bodies (audio) are scanned for their `model` part. The original
//! bytes are what gets forwarded.

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;

use super::audio;
use crate::tokens;

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
    /// Estimated prompt tokens (messages, prompt, input and tools), uncorrected.
    pub prompt_tokens: u64,
    /// `stream_options.include_usage` was asked for.
    pub include_usage: bool,
    /// The body has a `stream_options` object at all.
    pub has_stream_options: bool,
    /// Estimated seconds of an uploaded audio file (multipart `file` part).
    pub audio_seconds: u64,
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
    #[serde(default)]
    messages: Option<PromptText>,
    #[serde(default)]
    prompt: Option<PromptText>,
    #[serde(default)]
    input: Option<PromptText>,
    #[serde(default)]
    tools: Option<PromptText>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Token estimate of every string in a JSON value, counted while serde walks it (no tree is
/// built). `items` is the number of top-level array elements (chat messages).
#[derive(Default)]
struct PromptText {
    tokens: u64,
    items: u64,
}

impl<'de> Deserialize<'de> for PromptText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PromptTextVisitor)
    }
}

struct PromptTextVisitor;

impl<'de> serde::de::Visitor<'de> for PromptTextVisitor {
    type Value = PromptText;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<PromptText, E> {
        Ok(PromptText { tokens: tokens::count(text), items: 0 })
    }

    fn visit_u64<E>(self, _: u64) -> Result<PromptText, E> {
        // Token-id arrays (embeddings, completions) count one token per number.
        Ok(PromptText { tokens: 1, items: 0 })
    }

    fn visit_i64<E>(self, _: i64) -> Result<PromptText, E> {
        Ok(PromptText { tokens: 1, items: 0 })
    }

    fn visit_f64<E>(self, _: f64) -> Result<PromptText, E> {
        Ok(PromptText { tokens: 1, items: 0 })
    }

    fn visit_bool<E>(self, _: bool) -> Result<PromptText, E> {
        Ok(PromptText::default())
    }

    fn visit_unit<E>(self) -> Result<PromptText, E> {
        Ok(PromptText::default())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<PromptText, A::Error> {
        let mut total = PromptText::default();
        while let Some(item) = seq.next_element::<PromptText>()? {
            total.tokens += item.tokens;
            total.items += 1;
        }
        Ok(total)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PromptText, A::Error> {
        let mut total = PromptText::default();
        while let Some((_, value)) = map.next_entry::<serde::de::IgnoredAny, PromptText>()? {
            total.tokens += value.tokens;
        }
        Ok(total)
    }
}

impl RequestPeek {
    /// Peeks at `body` according to its `content-type`.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Self, PeekError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { n: 1, ..Self::default() });
        }
        let content_type = content_type.unwrap_or_default().trim_start();
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("multipart/form-data") {
            return Ok(Self {
                model: multipart_field(content_type, body, "model")?,
                audio_seconds: multipart_part(content_type, body, "file").map_or(0, audio::seconds),
                n: 1,
                ..Self::default()
            });
        }
        let declared_json = media_type.eq_ignore_ascii_case("application/json")
            || media_type.to_ascii_lowercase().ends_with("+json");
        let starts_like_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !(declared_json || starts_like_json) {
            return Ok(Self { n: 1, ..Self::default() });
        }
        let fields: JsonFields<'_> = match tokens::with_budget(|| serde_json::from_slice(body)) {
            Ok(fields) => fields,
            // Under another content type a body that merely starts with `{` may be anything.
            Err(_) if !declared_json => return Ok(Self { n: 1, ..Self::default() }),
            Err(e) => return Err(PeekError(e.to_string())),
        };
        let messages = fields
            .messages
            .map_or(0, |m| m.tokens + m.items * tokens::PER_MESSAGE + tokens::PER_REQUEST);
        let text = |field: Option<PromptText>| field.map_or(0, |f| f.tokens);
        Ok(Self {
            model: fields.model.map(Cow::into_owned),
            stream: fields.stream.unwrap_or(false),
            n: fields.n.unwrap_or(1),
            max_output_tokens: fields.max_completion_tokens.or(fields.max_tokens),
            prompt_tokens: messages + text(fields.prompt) + text(fields.input) + text(fields.tools),
            has_stream_options: fields.stream_options.is_some(),
            include_usage: fields.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            audio_seconds: 0,
        })
    }
}

/// The text value of form field `name` in a multipart body, if present; two such fields are an
/// error (servers disagree on which one counts).
fn multipart_field(
    content_type: &str,
    body: &[u8],
    name: &str,
) -> Result<Option<String>, PeekError> {
    let parts = multipart_parts(content_type, body, name);
    if parts.len() > 1 {
        return Err(PeekError(format!("the multipart body has more than one `{name}` field")));
    }
    Ok(parts.first().and_then(|v| std::str::from_utf8(v).ok()).map(|v| v.trim().to_owned()))
}

/// The bytes of the first multipart part named `name`.
fn multipart_part<'a>(content_type: &str, body: &'a [u8], name: &str) -> Option<&'a [u8]> {
    multipart_parts(content_type, body, name).into_iter().next()
}

/// The values of every multipart part named exactly `name`.
fn multipart_parts<'a>(content_type: &str, body: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    let Some(boundary) = content_type.split(';').find_map(|param| {
        let value = param.trim().strip_prefix("boundary=")?;
        Some(value.trim_matches('"'))
    }) else {
        return Vec::new();
    };
    let delimiter = format!("--{boundary}");
    let closing = format!("\r\n{delimiter}");
    let needle = format!("name=\"{name}\"");
    let mut found = Vec::new();
    for start in memmem::find_iter(body, delimiter.as_bytes()) {
        let part = &body[start + delimiter.len()..];
        let Some(headers_end) = memmem::find(part, b"\r\n\r\n") else { continue };
        let headers = &part[..headers_end];
        // `name="model"` as its own parameter, not the tail of `filename="model"`.
        let named = memmem::find_iter(headers, needle.as_bytes())
            .any(|at| at > 0 && matches!(headers[at - 1], b' ' | b';' | b'\t'));
        if !named {
            continue;
        }
        let value = &part[headers_end + 4..];
        if let Some(end) = memmem::find(value, closing.as_bytes()) {
            found.push(&value[..end]);
        }
    }
    found
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
        assert!(peek.prompt_tokens > 2 * tokens::PER_MESSAGE, "{}", peek.prompt_tokens);
    }

    #[test]
    fn estimates_prompt_tokens_from_every_text_part() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":[{"type":"text","text":"hello world"}]}],"stream_options":{"include_usage":true}}"#;
        let peek = RequestPeek::from_body(None, chat).unwrap();
        let words = tokens::count("system")
            + tokens::count("You are terse.")
            + tokens::count("user")
            + tokens::count("text")
            + tokens::count("hello world");
        assert_eq!(peek.prompt_tokens, words + 2 * tokens::PER_MESSAGE + tokens::PER_REQUEST);
        assert!(peek.include_usage);

        let embeddings = br#"{"model":"e","input":["one two", [1, 2, 3]]}"#;
        let peek = RequestPeek::from_body(None, embeddings).unwrap();
        assert_eq!(peek.prompt_tokens, tokens::count("one two") + 3);
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
        let padded = RequestPeek::from_body(Some("text/plain"), b"  \n {\"model\":\"m\"}").unwrap();
        assert_eq!(
            padded.model.as_deref(),
            Some("m"),
            "leading whitespace and another type still count"
        );
        let vendor = RequestPeek::from_body(Some("application/vnd.api+json"), br#"{"model":"v"}"#);
        assert_eq!(vendor.unwrap().model.as_deref(), Some("v"));
    }

    #[test]
    fn finds_the_model_part_of_a_multipart_body() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01model\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-large-v3\r\n--XyZ--\r\n";
        let peek = RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), body).unwrap();
        assert_eq!(peek.model.as_deref(), Some("whisper-large-v3"));
        let none = RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), b"--XyZ--");
        assert_eq!(none.unwrap().model, None);
        let file_named_model = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n\r\nRIFF\r\n--XyZ--\r\n";
        let peek =
            RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), file_named_model);
        assert_eq!(peek.unwrap().model, None, "a file called model is not the model field");
        let twice = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\na\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nb\r\n--XyZ--\r\n";
        assert!(RequestPeek::from_body(Some("multipart/form-data; boundary=XyZ"), twice).is_err());
    }
}
