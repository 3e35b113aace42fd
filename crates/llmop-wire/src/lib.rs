//! llmop-wire: every wire format llmop speaks, translated to and from the chat model of
//! `llmop-core`.
//!
//! # Layout
//! - [`openai`]: OpenAI Chat Completions, spoken by clients (`/v1/chat/completions`) and
//!   by `openai`-kind providers (OpenAI and every compatible server).
//! - [`anthropic`]: Anthropic Messages, spoken by clients (`/v1/messages`) and by
//!   `anthropic`-kind providers.
//! - [`responses`]: OpenAI Responses, spoken by clients (`/v1/responses`).
//! - [`gemini`]: Gemini `generateContent`, spoken by `gemini`-kind providers.
//! - [`embeddings`]: OpenAI embeddings (clients and `openai`-kind providers) and
//!   Gemini `batchEmbedContents`.
//! - [`sse`]: writing server-sent-event frames.
//!
//! Each format module has the same shape: `parse_request`/`build_request` for requests,
//! `parse_response`/`encode_response` for whole answers, a `StreamDecoder` that turns one
//! SSE `data` payload into [`llmop_core::StreamEvent`]s, a `StreamEncoder` that does the
//! reverse, and error-body helpers.
//!
//! Invariants: this crate does no I/O and never panics on input (it is fuzzed); it is the
//! only crate that knows the field names of any wire format.

pub mod anthropic;
pub mod embeddings;
pub mod gemini;
pub mod openai;
pub mod responses;
pub mod sse;

use std::fmt;

/// An inbound body does not follow its format. `param` names the offending field, as a
/// path such as `messages[2].content`.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub message: String,
    pub param: Option<String>,
    /// Set when the answer is well-formed but the provider said it failed (a Gemini
    /// finish reason such as `MALFORMED_FUNCTION_CALL`): the reason.
    pub failed_finish: Option<String>,
}

impl WireError {
    pub fn new(message: impl Into<String>, param: Option<String>) -> Self {
        WireError {
            message: message.into(),
            param,
            failed_finish: None,
        }
    }

    /// The provider ended its answer with `reason`, which means failure.
    pub fn failed_finish(reason: &str) -> Self {
        WireError {
            message: format!("the answer ended with {reason}"),
            param: None,
            failed_finish: Some(reason.to_string()),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for WireError {}

/// A request asks for something a target's format cannot express. `param` names the
/// request field (in the client's terms).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    pub param: String,
    pub message: String,
}

/// Every tool result answers a tool call made earlier in the conversation: a result
/// whose id matches no call is refused, naming the field (`path(message, part)`), as
/// the providers do (later, and less clearly).
pub(crate) fn check_tool_results(
    messages: &[llmop_core::Message],
    path: impl Fn(usize, usize) -> String,
) -> Result<(), WireError> {
    use llmop_core::{Part, Role};
    use std::collections::HashSet;
    let mut calls: HashSet<&str> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        for (j, p) in m.parts.iter().enumerate() {
            match p {
                Part::ToolCall(c) if m.role == Role::Assistant => {
                    calls.insert(&c.id);
                }
                Part::ToolResult { call_id, .. } if !calls.contains(call_id.as_str()) => {
                    return Err(WireError::new(
                        format!("`{call_id}` answers no tool call of an earlier assistant message"),
                        Some(path(i, j)),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Serializes `value` into a buffer of `capacity` bytes to start with (by
/// [`llmop_core::json`]'s fast writer). `serde_json::to_vec` starts at 128 bytes, so a
/// body of a few KiB was grown (and copied) four or five times on the request path; a
/// body's size is known well enough beforehand to allocate once.
pub(crate) fn to_vec_sized<T: serde::Serialize + ?Sized>(capacity: usize, value: &T) -> Vec<u8> {
    llmop_core::json::to_vec_with_capacity(capacity, value).unwrap_or_default()
}

/// About how many bytes `parts` take as JSON text: their strings, and a little for each
/// part's keys and escapes. A hint for [`to_vec_sized`], never a limit.
pub(crate) fn parts_json_len(parts: &[llmop_core::chat::Part]) -> usize {
    parts.iter().map(|p| 48 + p.byte_len() * 9 / 8).sum()
}

/// Deserializes JSON; on failure, the error names the path of the failing field.
///
/// The fast path is plain serde_json: path tracking costs on every field, so it runs
/// only when the plain parse has already failed (bad input is the rare case). A body
/// that is UTF-8 (every valid JSON text is) is checked once here and read as text:
/// serde_json reading bytes checks each string it reads as UTF-8 again, a call per
/// string, which was about 5% of a streamed call's instructions (a chunk holds a dozen
/// short strings). Bytes that are not UTF-8 go to serde_json as bytes, for its error.
pub(crate) fn from_json<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, WireError> {
    if let Ok(text) = std::str::from_utf8(body) {
        return from_json_str(text);
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(json_error)
}

/// [`from_json`] of text (an event's data, already known to be UTF-8).
pub(crate) fn from_json_str<'de, T: serde::Deserialize<'de>>(
    text: &'de str,
) -> Result<T, WireError> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(json_error)
}

/// A failed parse as the wire error clients see: the failing field's path, and the
/// message without serde_json's position.
fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> WireError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        // The path of a syntax error is where parsing stopped, not a field.
        return WireError::new(format!("body is not valid JSON: {inner}"), None);
    }
    let message = strip_position(&inner.to_string());
    WireError::new(
        message,
        (path != "." && path != "?" && !path.is_empty()).then_some(path),
    )
}

/// serde_json appends " at line 1 column 42" to data errors; the path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A field that is either a string or an array (`content` in both client formats,
/// `system` in Anthropic's). Deserialized in one pass, without an intermediate
/// `serde_json::Value`, and errors inside the array keep their path
/// (`messages[2].content[0].type`). `null` reads as empty text.
pub(crate) enum TextOr<T> {
    Text(String),
    List(Vec<T>),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for TextOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TextOr::Text(String::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(TextOr::List(out))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether an upstream's 4xx says that *this* model cannot take the request (its context
/// window, its content policy) rather than that the request is malformed. Reads the
/// error `code`/`type` fields of OpenAI-style and Anthropic-style bodies and, failing
/// those, the message wording each provider documents.
pub fn classify_refusal(status: u16, body: &[u8], message: &str) -> Option<llmop_core::Refusal> {
    use llmop_core::Refusal;
    if !matches!(status, 400 | 413 | 422) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let err = v.get("error");
    let field = |k: &str| {
        err.and_then(|e| e.get(k))
            .and_then(|c| c.as_str())
            .unwrap_or("")
    };
    let (code, kind) = (field("code"), field("type"));
    let m = message.to_ascii_lowercase();
    if code == "context_length_exceeded"
        || kind == "context_length_exceeded"
        || m.contains("maximum context length")
        || m.contains("context window")
        || m.contains("prompt is too long")
        || m.contains("exceeds the maximum number of tokens")
    {
        return Some(Refusal::ContextWindow);
    }
    if matches!(code, "content_policy_violation" | "content_filter")
        || m.contains("content management policy")
        || m.contains("content policy")
    {
        return Some(Refusal::ContentPolicy);
    }
    None
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use llmop_core::Refusal;

    #[test]
    fn context_window_errors_of_each_provider() {
        // OpenAI
        let b = br#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(
            classify_refusal(
                400,
                b,
                "This model's maximum context length is 128000 tokens."
            ),
            Some(Refusal::ContextWindow)
        );
        // Anthropic
        let b = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(
            classify_refusal(400, b, "prompt is too long: 210000 tokens > 200000 maximum"),
            Some(Refusal::ContextWindow)
        );
        // Gemini
        let m = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).";
        assert_eq!(
            classify_refusal(400, b"{}", m),
            Some(Refusal::ContextWindow)
        );
        // Content policy
        let b = br#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","code":"content_policy_violation"}}"#;
        assert_eq!(
            classify_refusal(400, b, "rejected"),
            Some(Refusal::ContentPolicy)
        );
        // Ordinary bad requests and other statuses are not refusals.
        assert_eq!(classify_refusal(400, b"{}", "messages: required"), None);
        assert_eq!(classify_refusal(500, b"{}", "prompt is too long"), None);
    }
}
