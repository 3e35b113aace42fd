//! OpenAI Chat Completions (`POST /v1/chat/completions`).
//!
//! Reference: the OpenAI API reference for Chat Completions and its streaming chunk
//! object. Unknown top-level request fields are kept in `ChatRequest::extra` and sent on
//! unchanged to OpenAI-format providers.

use crate::{from_json, sse, unix_now, TextOr, WireError};
use bytes::BytesMut;
use llmop_core::{
    AnswerDetails, ChatRequest, ChatResponse, FinishReason, ImageSource, Message, Part,
    ReasoningParams, ResponseFormat, Role, StreamEvent, Tool, ToolCall, ToolChoice, Usage,
    WireFormat,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct InRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<InStreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<InStop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    response_format: Option<InResponseFormat>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct InStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InStop {
    One(String),
    Many(Vec<String>),
}

/// One message. A flat struct rather than an enum tagged by `role`, so that a bad field
/// is reported with its full path (`messages[2].content`); the role's rules are checked
/// after parsing.
#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

type InContent = TextOr<InPart>;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart {
    Text { text: String },
    ImageUrl { image_url: InImageUrl },
    Refusal { refusal: String },
}

#[derive(Deserialize)]
struct InImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct InToolCall {
    id: String,
    function: InFunctionCall,
}

#[derive(Deserialize)]
struct InFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Named { function: InNamed },
}

#[derive(Deserialize)]
struct InNamed {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: InJsonSchema },
}

#[derive(Deserialize)]
struct InJsonSchema {
    name: String,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

fn content_parts(c: InContent) -> Vec<Part> {
    match c {
        TextOr::Text(t) => vec![Part::Text(t)],
        TextOr::List(ps) => ps
            .into_iter()
            .map(|p| match p {
                InPart::Text { text } | InPart::Refusal { refusal: text } => Part::Text(text),
                InPart::ImageUrl { image_url } => Part::Image(parse_image_url(image_url.url)),
            })
            .collect(),
    }
}

/// `data:<media>;base64,<data>` URLs become inline images so that providers which take
/// only inline data (Anthropic, Gemini) can use them.
pub(crate) fn parse_image_url(url: String) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((media, data)) = rest.split_once(";base64,") {
            return ImageSource::Base64 {
                media_type: media.to_string(),
                data: data.to_string(),
            };
        }
    }
    ImageSource::Url(url)
}

pub(crate) fn image_url(src: &ImageSource) -> String {
    match src {
        ImageSource::Url(u) => u.clone(),
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

/// Parses an inbound Chat Completions body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, WireError> {
    let r: InRequest = from_json(body)?;
    if r.model.is_empty() {
        return Err(WireError::new("must not be empty", Some("model".into())));
    }
    // A feature renders its own messages: the caller may send none.
    if r.messages.is_empty() && !r.model.starts_with("feature/") {
        return Err(WireError::new(
            "at least one message is required",
            Some("messages".into()),
        ));
    }
    if let Some(n) = r.n {
        if n != 1 {
            return Err(WireError::new("only n = 1 is supported", Some("n".into())));
        }
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let required = |field: &str| {
            WireError::new(
                format!("is required for role `{}`", m.role),
                Some(format!("messages[{i}].{field}")),
            )
        };
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(WireError::new(
                    format!(
                    "unknown role `{other}` (expected system, developer, user, assistant or tool)"
                ),
                    Some(format!("messages[{i}].role")),
                ))
            }
        };
        let message = match role {
            Role::System | Role::User => Message {
                role,
                parts: content_parts(m.content.ok_or_else(|| required("content"))?),
                name: m.name,
            },
            Role::Assistant => {
                let mut parts = m.content.map(content_parts).unwrap_or_default();
                parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
                if let Some(r) = m.refusal {
                    parts.push(Part::Text(r));
                }
                for c in m.tool_calls.unwrap_or_default() {
                    parts.push(Part::ToolCall(ToolCall {
                        id: c.id,
                        name: c.function.name,
                        arguments: c.function.arguments,
                    }));
                }
                Message {
                    role,
                    parts,
                    name: m.name,
                }
            }
            Role::Tool => {
                let call_id = m.tool_call_id.ok_or_else(|| required("tool_call_id"))?;
                let text: String = content_parts(m.content.ok_or_else(|| required("content"))?)
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                Message {
                    role,
                    parts: vec![Part::ToolResult {
                        call_id,
                        content: text,
                        is_error: false,
                    }],
                    name: None,
                }
            }
        };
        messages.push(message);
    }
    let mut extra = r.extra;
    let max_tokens = match r.max_completion_tokens {
        Some(v) => {
            // Remembered so that an OpenAI upstream gets the field the client chose:
            // newer OpenAI models refuse `max_tokens`, older compatible servers ignore
            // `max_completion_tokens`.
            extra.insert("max_completion_tokens".into(), json!(v));
            Some(v)
        }
        None => r.max_tokens,
    };
    let mut req = ChatRequest::new(r.model, messages, WireFormat::OpenAi);
    req.params.max_tokens = max_tokens;
    req.params.temperature = r.temperature;
    req.params.top_p = r.top_p;
    req.params.stop = match r.stop {
        None => Vec::new(),
        Some(InStop::One(s)) => vec![s],
        Some(InStop::Many(v)) => v,
    };
    req.params.seed = r.seed;
    req.params.parallel_tool_calls = r.parallel_tool_calls;
    req.params.frequency_penalty = r.frequency_penalty;
    req.params.presence_penalty = r.presence_penalty;
    req.params.logprobs = r.logprobs;
    req.params.top_logprobs = r.top_logprobs;
    if let Some(e) = r.reasoning_effort {
        // Any value goes to an OpenAI target as sent (OpenAI decides what it accepts);
        // the known ones also map to other providers' budgets.
        req.params.reasoning = Some(ReasoningParams {
            effort: Some(e),
            ..ReasoningParams::default()
        });
    }
    req.tools = r
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t.function.strict,
        })
        .collect();
    req.tool_choice = match r.tool_choice {
        None => None,
        Some(InToolChoice::Mode(m)) => Some(match m.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(WireError::new(
                    format!(
                    "unknown tool_choice `{other}` (expected auto, none, required or a function)"
                ),
                    Some("tool_choice".into()),
                ))
            }
        }),
        Some(InToolChoice::Named { function }) => Some(ToolChoice::Named(function.name)),
    };
    req.response_format = r.response_format.map(|f| match f {
        InResponseFormat::Text => ResponseFormat::Text,
        InResponseFormat::JsonObject => ResponseFormat::JsonObject,
        InResponseFormat::JsonSchema { json_schema } => ResponseFormat::JsonSchema {
            name: json_schema.name,
            schema: json_schema.schema.unwrap_or_else(|| json!({})),
            strict: json_schema.strict,
        },
    });
    req.stream = r.stream.unwrap_or(false);
    req.include_usage = r
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    req.user = r.user;
    if let Some(Value::Object(m)) = extra.get("metadata") {
        req.metadata = m.clone();
    }
    req.extra = extra;
    crate::check_tool_results(&req.messages, |m, _| format!("messages[{m}].tool_call_id"))?;
    Ok(req)
}

// Outbound requests are serialized from borrowed views of the chat model: no
// intermediate JSON tree, no copy of any message text.

/// Content parts of a message as the API takes them: a plain string when the message is
/// one text part, else an array of text and image parts.
struct OutContent<'a>(&'a [Part]);

impl Serialize for OutContent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let visible = || {
            self.0
                .iter()
                .filter(|p| matches!(p, Part::Text(_) | Part::Image(_)))
        };
        let mut it = visible();
        if let (Some(Part::Text(t)), None) = (it.next(), it.next()) {
            return s.serialize_str(t);
        }
        let mut seq = s.serialize_seq(None)?;
        for p in visible() {
            match p {
                Part::Text(t) => seq.serialize_element(&OutTextPart {
                    kind: "text",
                    text: t,
                })?,
                Part::Image(src) => seq.serialize_element(&OutImagePart {
                    kind: "image_url",
                    image_url: OutImageUrl {
                        url: image_url(src),
                    },
                })?,
                _ => {}
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct OutTextPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct OutImagePart {
    #[serde(rename = "type")]
    kind: &'static str,
    image_url: OutImageUrl,
}

#[derive(Serialize)]
struct OutImageUrl {
    url: String,
}

#[derive(Serialize)]
struct OutToolMessage<'a> {
    role: &'static str,
    tool_call_id: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: OutContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// An assistant turn: its text (or `null` beside tool calls) and its tool calls.
struct OutAssistant<'a>(&'a Message);

impl Serialize for OutAssistant<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.0;
        let calls: Vec<OutToolCall<'_>> = m
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall(c) => Some(OutToolCall {
                    id: &c.id,
                    kind: "function",
                    function: OutFunctionCall {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                }),
                _ => None,
            })
            .collect();
        let mut texts = m.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        });
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", "assistant")?;
        match (texts.next(), texts.next()) {
            (None, _) if !calls.is_empty() => map.serialize_entry("content", &Value::Null)?,
            (None, _) => map.serialize_entry("content", "")?,
            (Some(t), None) => map.serialize_entry("content", t)?,
            (Some(_), Some(_)) => map.serialize_entry("content", &m.joined_text())?,
        }
        if !calls.is_empty() {
            map.serialize_entry("tool_calls", &calls)?;
        }
        if let Some(n) = &m.name {
            map.serialize_entry("name", n)?;
        }
        map.end()
    }
}

/// The message list. One chat-model message may become several API messages: tool
/// results travel as `tool` messages (Anthropic clients put them in user turns), placed
/// before the turn's own text.
struct OutMessages<'a>(&'a [Message]);

impl Serialize for OutMessages<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        for m in self.0 {
            if m.role == Role::Assistant {
                seq.serialize_element(&OutAssistant(m))?;
                continue;
            }
            for p in &m.parts {
                if let Part::ToolResult {
                    call_id, content, ..
                } = p
                {
                    seq.serialize_element(&OutToolMessage {
                        role: "tool",
                        tool_call_id: call_id,
                        content,
                    })?;
                }
            }
            let has_content = m
                .parts
                .iter()
                .any(|p| matches!(p, Part::Text(_) | Part::Image(_)));
            if has_content && m.role != Role::Tool {
                seq.serialize_element(&OutMessage {
                    role: if m.role == Role::System {
                        "system"
                    } else {
                        "user"
                    },
                    content: OutContent(&m.parts),
                    name: m.name.as_deref(),
                })?;
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OutNamed<'a>,
    },
}

#[derive(Serialize)]
struct OutNamed<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: OutJsonSchema<'a> },
}

#[derive(Serialize)]
struct OutJsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct OutStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OutRequest<'a> {
    /// The client's fields this model does not know (same-format passthrough). They
    /// come first and can never collide with the fields below: parsing consumed those.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a Map<String, Value>>,
    model: &'a str,
    messages: OutMessages<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    /// Routes requests sharing a prefix to the same cache (`[cache]` `prompt = true`);
    /// a client's own key (in `extra`) wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    /// Always asked for on streams: the gateway needs usage even when the client did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions>,
}

/// `reasoning_effort` for `model`: the client's own word when it spoke OpenAI; else
/// the equivalent of its thinking budget, only for OpenAI's reasoning models (the others
/// refuse the field) and only when thinking was asked for (an Anthropic client's
/// `disabled` is every other model's default).
pub(crate) fn reasoning_effort<'a>(req: &'a ChatRequest, model: &str) -> Option<&'a str> {
    let rp = req.params.reasoning.as_ref()?;
    if matches!(req.origin, WireFormat::OpenAi | WireFormat::Responses) {
        return rp.effort.as_deref();
    }
    let reasons = model.starts_with("gpt-5")
        || (model.starts_with('o') && model[1..].starts_with(|c: char| c.is_ascii_digit()));
    (reasons && !rp.disabled).then(|| rp.effort()).flatten()
}

/// Builds the body sent to an OpenAI-format provider for `model`.
pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Vec<u8> {
    let hint = 256
        + req
            .messages
            .iter()
            .map(|m| 32 + crate::parts_json_len(&m.parts))
            .sum::<usize>()
        + req
            .tools
            .iter()
            .map(|t| 128 + t.name.len() + t.description.as_ref().map_or(0, String::len))
            .sum::<usize>();
    crate::to_vec_sized(hint, &out_request(req, model, stream))
}

/// The request as [`build_request`] would send it, as a JSON value (what a record
/// keeps), built without writing and re-reading its text.
pub fn request_value(req: &ChatRequest) -> Value {
    serde_json::to_value(out_request(req, &req.model, req.stream)).unwrap_or(Value::Null)
}

fn out_request<'a>(req: &'a ChatRequest, model: &'a str, stream: bool) -> OutRequest<'a> {
    let extra = (req.origin == WireFormat::OpenAi && !req.extra.is_empty()).then_some(&req.extra);
    let p = &req.params;
    OutRequest {
        extra,
        model,
        messages: OutMessages(&req.messages),
        // A client that sent `max_completion_tokens` has it passed through in `extra`.
        max_tokens: p
            .max_tokens
            .filter(|_| !extra.is_some_and(|e| e.contains_key("max_completion_tokens"))),
        temperature: p.temperature,
        top_p: p.top_p,
        stop: &p.stop,
        seed: p.seed,
        tools: req
            .tools
            .iter()
            .map(|t| OutTool {
                kind: "function",
                function: OutFunction {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters: &t.parameters,
                    strict: t.strict,
                },
            })
            .collect(),
        parallel_tool_calls: p.parallel_tool_calls.filter(|_| !req.tools.is_empty()),
        tool_choice: req.tool_choice.as_ref().map(|tc| match tc {
            ToolChoice::Auto => OutToolChoice::Mode("auto"),
            ToolChoice::None => OutToolChoice::Mode("none"),
            ToolChoice::Required => OutToolChoice::Mode("required"),
            ToolChoice::Named(n) => OutToolChoice::Named {
                kind: "function",
                function: OutNamed { name: n },
            },
        }),
        response_format: req.response_format.as_ref().map(|rf| match rf {
            ResponseFormat::Text => OutResponseFormat::Text,
            ResponseFormat::JsonObject => OutResponseFormat::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => OutResponseFormat::JsonSchema {
                json_schema: OutJsonSchema {
                    name,
                    schema,
                    strict: *strict,
                },
            },
        }),
        user: req.user.as_deref(),
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
        logprobs: p.logprobs,
        top_logprobs: p.top_logprobs,
        reasoning_effort: reasoning_effort(req, model),
        prompt_cache_key: req
            .prompt_cache
            .key
            .as_deref()
            .filter(|_| !extra.is_some_and(|e| e.contains_key("prompt_cache_key"))),
        stream: stream.then_some(true),
        stream_options: stream.then_some(OutStreamOptions {
            include_usage: true,
        }),
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct InResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: Option<i64>,
    choices: Vec<InChoice>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct InChoice {
    message: InRespMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InRespMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
struct InUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<InPromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<InCompletionDetails>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
struct InPromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
struct InCompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<InUsage> for Usage {
    fn from(u: InUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

fn finish_from(s: Option<&str>) -> FinishReason {
    match s {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub fn finish_str(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Parses a provider's non-streaming answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, WireError> {
    let r: InResponse = from_json(body)?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| WireError::new("no choices in response", Some("choices".into())))?;
    let mut parts = Vec::new();
    match (choice.message.content, choice.message.refusal) {
        (Some(t), _) if !t.is_empty() => parts.push(Part::Text(t)),
        (_, Some(r)) => parts.push(Part::Text(r)),
        _ => {}
    }
    for c in choice.message.tool_calls.unwrap_or_default() {
        parts.push(Part::ToolCall(ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        }));
    }
    Ok(ChatResponse {
        id: r.id,
        model: r.model,
        created: r.created.unwrap_or_else(unix_now),
        parts,
        finish_reason: finish_from(choice.finish_reason.as_deref()),
        usage: r.usage.map(Usage::from),
        details: AnswerDetails {
            system_fingerprint: r.system_fingerprint,
            service_tier: r.service_tier,
        },
    })
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: OutPromptDetails,
    completion_tokens_details: OutCompletionDetails,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u64,
}

fn out_usage(u: &Usage) -> OutUsage {
    OutUsage {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
        total_tokens: u.total(),
        prompt_tokens_details: OutPromptDetails {
            cached_tokens: u.cached_input_tokens,
        },
        completion_tokens_details: OutCompletionDetails {
            reasoning_tokens: u.reasoning_tokens,
        },
    }
}

/// Encodes a whole answer for an OpenAI-format client. `id` is the id shown to the
/// client (`chatcmpl-…`).
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    // Typed and borrowed: no `Value` tree is built for an answer on the request path.
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
        object: &'static str,
        created: i64,
        model: &'a str,
        choices: [Choice<'a>; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<OutUsage>,
        #[serde(skip_serializing_if = "Option::is_none")]
        system_fingerprint: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        service_tier: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u32,
        message: Msg<'a>,
        logprobs: Option<()>,
        finish_reason: &'static str,
    }
    #[derive(Serialize)]
    struct Msg<'a> {
        role: &'static str,
        content: Option<std::borrow::Cow<'a, str>>,
        refusal: Option<()>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<Call<'a>>,
    }
    #[derive(Serialize)]
    struct Call<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        function: CallFn<'a>,
    }
    #[derive(Serialize)]
    struct CallFn<'a> {
        name: &'a str,
        arguments: &'a str,
    }
    let tool_calls: Vec<Call<'_>> = resp
        .tool_calls()
        .map(|c| Call {
            id: &c.id,
            kind: "function",
            function: CallFn {
                name: &c.name,
                arguments: &c.arguments,
            },
        })
        .collect();
    // One text part (the common answer) is borrowed, not copied.
    let mut texts = resp.parts.iter().filter_map(|p| match p {
        Part::Text(t) => Some(t.as_str()),
        _ => None,
    });
    let text: std::borrow::Cow<'_, str> = match (texts.next(), texts.next()) {
        (None, _) => std::borrow::Cow::Borrowed(""),
        (Some(one), None) => std::borrow::Cow::Borrowed(one),
        (Some(_), Some(_)) => std::borrow::Cow::Owned(resp.text()),
    };
    let content = if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let body = Body {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created,
        model: &resp.model,
        choices: [Choice {
            index: 0,
            message: Msg {
                role: "assistant",
                content,
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish_str(&resp.finish_reason),
        }],
        usage: resp.usage.as_ref().map(out_usage),
        system_fingerprint: resp.details.system_fingerprint.as_deref(),
        service_tier: resp.details.service_tier.as_deref(),
    };
    crate::to_vec_sized(512 + crate::parts_json_len(&resp.parts), &body)
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// A chunk's `id` and `model` are borrowed: every chunk repeats them and only the
/// first one's are kept, so they are not copied out of each chunk's text.
#[derive(Deserialize)]
struct InChunk<'a> {
    #[serde(default, borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(default)]
    choices: Vec<InChunkChoice>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct InChunkChoice {
    #[serde(default)]
    delta: Option<InDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InDeltaToolCall>>,
}

#[derive(Deserialize)]
struct InDeltaToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<InDeltaFunction>,
}

#[derive(Deserialize)]
struct InDeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Turns the `data` payloads of an OpenAI-format stream into events.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
    tool_started: Vec<bool>,
    details: AnswerDetails,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `[DONE]` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes one `data` payload, appending events to `out`.
    pub fn decode(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let c: InChunk = crate::from_json_str(data)?;
        if let Some(e) = c.error {
            return Err(WireError::new(error_message_of(&e), None));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: c.id.into_owned(),
                model: c.model.into_owned(),
            });
        }
        if (c.system_fingerprint.is_some()
            && c.system_fingerprint != self.details.system_fingerprint)
            || (c.service_tier.is_some() && c.service_tier != self.details.service_tier)
        {
            if c.system_fingerprint.is_some() {
                self.details.system_fingerprint = c.system_fingerprint;
            }
            if c.service_tier.is_some() {
                self.details.service_tier = c.service_tier;
            }
            out.push(StreamEvent::Details(self.details.clone()));
        }
        if let Some(choice) = c.choices.into_iter().next() {
            if let Some(d) = choice.delta {
                if let Some(t) = d.content.or(d.refusal) {
                    if !t.is_empty() {
                        out.push(StreamEvent::Text(t));
                    }
                }
                for tc in d.tool_calls.unwrap_or_default() {
                    let i = tc.index as usize;
                    if i > 1024 {
                        return Err(WireError::new("tool call index out of range", None));
                    }
                    if self.tool_started.len() <= i {
                        self.tool_started.resize(i + 1, false);
                    }
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    if !self.tool_started[i] && (tc.id.is_some() || name.is_some()) {
                        self.tool_started[i] = true;
                        out.push(StreamEvent::ToolCallStart {
                            index: tc.index,
                            id: tc.id.unwrap_or_default(),
                            name: name.unwrap_or_default(),
                        });
                    }
                    if let Some(a) = args {
                        if !a.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                index: tc.index,
                                arguments: a,
                            });
                        }
                    }
                }
            }
            if let Some(f) = choice.finish_reason {
                out.push(StreamEvent::Finish(finish_from(Some(&f))));
            }
        }
        if let Some(u) = c.usage {
            out.push(StreamEvent::Usage(u.into()));
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [OutChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OutUsage>>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutDeltaToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct OutDeltaToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutDeltaFunction<'a>,
}

#[derive(Serialize)]
struct OutDeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Writes events as an OpenAI-format SSE stream (`chat.completion.chunk`s, then
/// `[DONE]`).
pub struct StreamEncoder {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    details: AnswerDetails,
    /// The last usage seen; written once, just before `[DONE]`, as OpenAI does.
    usage: Option<Usage>,
    /// A text delta's chunk around its content: made on the first text delta and
    /// again after the model or the details change (see [`StreamEncoder::text`]).
    text_frame: Option<TextFrame>,
}

/// The bytes of a text delta's chunk before and after its content's JSON string.
struct TextFrame {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl StreamEncoder {
    /// `id` and `model` are what the client sees; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(id: String, model: String, include_usage: bool) -> Self {
        StreamEncoder {
            id,
            model,
            created: unix_now(),
            include_usage,
            details: AnswerDetails::default(),
            usage: None,
            text_frame: None,
        }
    }

    /// Writes a text delta's chunk: the chunk [`StreamEncoder::chunk`] writes for it,
    /// byte for byte (a property test compares the two), from its parts made once.
    ///
    /// Written by hand because a stream writes one such chunk per token: through
    /// serde, each one's eleven keys and four strings were escaped again (about 2.5k
    /// instructions a chunk, a tenth of a streamed call), where only the content
    /// differs from one chunk to the next.
    fn text(&mut self, out: &mut BytesMut, content: &str) {
        let frame = self.text_frame.get_or_insert_with(|| {
            let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
            let mut head = String::with_capacity(160);
            head.push_str("data: {\"id\":");
            head.push_str(&json(&self.id));
            head.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
            head.push_str(&self.created.to_string());
            head.push_str(",\"model\":");
            head.push_str(&json(&self.model));
            head.push_str(",\"choices\":[{\"index\":0,\"delta\":{\"content\":");
            let mut tail = String::from("},\"logprobs\":null,\"finish_reason\":null}]");
            if let Some(f) = &self.details.system_fingerprint {
                tail.push_str(",\"system_fingerprint\":");
                tail.push_str(&json(f));
            }
            if let Some(t) = &self.details.service_tier {
                tail.push_str(",\"service_tier\":");
                tail.push_str(&json(t));
            }
            if self.include_usage {
                tail.push_str(",\"usage\":null");
            }
            tail.push_str("}\n\n");
            TextFrame {
                head: head.into_bytes(),
                tail: tail.into_bytes(),
            }
        });
        out.reserve(frame.head.len() + content.len() + 2 + frame.tail.len());
        out.extend_from_slice(&frame.head);
        sse::put_json_str(out, content);
        out.extend_from_slice(&frame.tail);
    }

    /// Writes one `chat.completion.chunk`. With `include_usage`, every chunk carries a
    /// `usage` key (null until the final usage chunk), as OpenAI's stream does.
    fn write(&self, out: &mut BytesMut, choices: &[OutChunkChoice<'_>], usage: Option<OutUsage>) {
        sse::write_data(
            out,
            &OutChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices,
                system_fingerprint: self.details.system_fingerprint.as_deref(),
                service_tier: self.details.service_tier.as_deref(),
                usage: self.include_usage.then_some(usage),
            },
        );
    }

    fn chunk(&self, out: &mut BytesMut, delta: OutDelta<'_>, finish: Option<&'static str>) {
        let choices = [OutChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        self.write(out, &choices, None);
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        match ev {
            StreamEvent::Start { model, .. } => {
                if self.model.is_empty() {
                    self.model.clone_from(model);
                    self.text_frame = None;
                }
                self.chunk(
                    out,
                    OutDelta {
                        role: Some("assistant"),
                        content: Some(""),
                        tool_calls: None,
                    },
                    None,
                );
            }
            StreamEvent::Text(t) => self.text(out, t),
            StreamEvent::ToolCallStart { index, id, name } => self.chunk(
                out,
                OutDelta {
                    tool_calls: Some([OutDeltaToolCall {
                        index: *index,
                        id: Some(id),
                        kind: Some("function"),
                        function: OutDeltaFunction {
                            name: Some(name),
                            arguments: "",
                        },
                    }]),
                    ..OutDelta::default()
                },
                None,
            ),
            StreamEvent::ToolCallDelta { index, arguments } => self.chunk(
                out,
                OutDelta {
                    tool_calls: Some([OutDeltaToolCall {
                        index: *index,
                        id: None,
                        kind: None,
                        function: OutDeltaFunction {
                            name: None,
                            arguments,
                        },
                    }]),
                    ..OutDelta::default()
                },
                None,
            ),
            StreamEvent::Finish(f) => self.chunk(out, OutDelta::default(), Some(finish_str(f))),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Details(d) => {
                self.details.merge(d);
                self.text_frame = None;
            }
            // Chat Completions has no place for reasoning state: the gateway keeps it.
            StreamEvent::ThinkingStart
            | StreamEvent::ThinkingDelta(_)
            | StreamEvent::SignatureDelta(_)
            | StreamEvent::Reasoning(_) => {}
        }
    }

    /// Ends a stream that completed: the usage chunk (when asked for), then `[DONE]`.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.include_usage {
            if let Some(u) = self.usage.take() {
                self.write(out, &[], Some(out_usage(&u)));
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// Ends a stream that failed after it started: an `error` payload, which the
    /// official SDKs raise as an API error, and no `[DONE]`.
    pub fn error(&mut self, out: &mut BytesMut, code: &str, message: &str) {
        sse::write_data(
            out,
            &json!({"error": {"type": "api_error", "code": code, "message": message, "param": null}}),
        );
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn error_message_of(v: &Value) -> String {
    v.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown error".to_string())
}

/// Extracts the message of an OpenAI-format error body
/// (`{"error":{"message":…}}`), or `None` when the body is not one.
pub fn parse_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    Some(error_message_of(e))
}

/// The `error.code` of an OpenAI-format error body (`insufficient_quota`, …).
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_str().map(str::to_string)
}

/// The OpenAI error envelope, as llmop's contract defines it.
pub fn error_body(
    kind: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
    request_id: &str,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "error": {"type": kind, "code": code, "message": message, "param": param, "request_id": request_id}
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_request() {
        let body = br#"{
            "model": "sim/echo",
            "messages": [
              {"role":"system","content":"be brief"},
              {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
              {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
              {"role":"tool","tool_call_id":"c1","content":"42"}
            ],
            "stream": true, "stream_options": {"include_usage": true},
            "max_completion_tokens": 20, "stop": "END",
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice": {"type":"function","function":{"name":"f"}},
            "response_format": {"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
            "logit_bias": {"50256": -100}
        }"#;
        let r = parse_request(body).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.params.max_tokens, Some(20));
        assert_eq!(r.params.stop, vec!["END"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("f".into())));
        assert!(matches!(
            r.messages[1].parts[1],
            Part::Image(ImageSource::Base64 { .. })
        ));
        assert!(r.extra.contains_key("logit_bias"));
        let out: Value = serde_json::from_slice(&build_request(&r, "gpt-x", true)).unwrap();
        assert_eq!(out["model"], "gpt-x");
        assert_eq!(out["logit_bias"]["50256"], -100);
        assert_eq!(out["max_completion_tokens"], 20);
        assert!(out.get("max_tokens").is_none());
        assert_eq!(out["messages"][3]["role"], "tool");
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_request(br#"{"model":"m"}"#).unwrap_err();
        assert!(e.message.contains("messages"), "{e}");
        let e = parse_request(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"), "{e:?}");
        let e = parse_request(br#"{"model":"m","messages":[],"temperature":"hot"}"#).unwrap_err();
        assert!(
            e.param.as_deref() == Some("temperature") || e.param.as_deref() == Some("messages"),
            "{e:?}"
        );
        let e = parse_request(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"));
        let e = parse_request(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#)
            .unwrap_err();
        assert!(e.message.contains("wizard"), "{e}");
    }

    /// A chunk's id and model are borrowed from its text where they can be; written with
    /// escapes (which a borrow cannot hold) they are read as well.
    #[test]
    fn escaped_chunk_ids_and_models_are_read() {
        let mut d = StreamDecoder::new();
        let mut evs = Vec::new();
        d.decode(
            r#"{"id":"chatcmpl-\u0041\"1","model":"gpt\u002d4o","choices":[{"index":0,"delta":{"content":"a\nb"},"finish_reason":null}]}"#,
            &mut evs,
        )
        .unwrap();
        assert!(
            matches!(evs.first(), Some(StreamEvent::Start { id, model }) if id == "chatcmpl-A\"1" && model == "gpt-4o"),
            "{evs:?}"
        );
        assert!(evs.contains(&StreamEvent::Text("a\nb".into())), "{evs:?}");
    }

    #[test]
    fn decodes_a_stream_with_tool_calls() {
        let mut d = StreamDecoder::new();
        let mut evs = Vec::new();
        for data in [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            "[DONE]",
        ] {
            d.decode(data, &mut evs).unwrap();
        }
        assert!(d.is_done());
        let mut acc = llmop_core::StreamAccumulator::default();
        evs.iter().for_each(|e| acc.push(e));
        let r = acc.finish(0);
        let c: Vec<_> = r.tool_calls().collect();
        assert_eq!(c[0].name, "get_weather");
        assert_eq!(c[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(r.usage.unwrap().cached_input_tokens, 4);
    }

    proptest::proptest! {
        /// A text delta's chunk written from its kept parts is the chunk serde writes
        /// for it, whatever the id, model, details, usage option and text, and after
        /// the model or the details change mid-stream.
        #[test]
        fn text_chunks_are_what_serde_writes(
            id in "\\PC{0,12}",
            model in "[a-z\"\\\\/\u{1}-\u{1f}é😀-]{0,12}",
            created in proptest::prelude::any::<i64>(),
            fingerprint in proptest::option::of("\\PC{0,8}"),
            tier in proptest::option::of("[a-z]{0,8}"),
            include_usage in proptest::prelude::any::<bool>(),
            texts in proptest::collection::vec("\\PC{0,24}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}]{1,6}", 1..4),
            start_model in proptest::option::of("[a-z]{1,6}"),
        ) {
            let mut enc = StreamEncoder::new(id, String::new(), include_usage);
            enc.created = created;
            enc.model = model;
            let check = |enc: &mut StreamEncoder| {
                for t in &texts {
                    let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
                    enc.encode(&StreamEvent::Text(t.clone()), &mut fast);
                    let delta = OutDelta { content: Some(t), ..OutDelta::default() };
                    enc.chunk(&mut slow, delta, None);
                    proptest::prop_assert_eq!(
                        String::from_utf8_lossy(&fast),
                        String::from_utf8_lossy(&slow)
                    );
                }
                Ok(())
            };
            check(&mut enc)?;
            // A model named by the stream's start (when the encoder had none).
            if let Some(m) = start_model {
                enc.model.clear();
                enc.encode(&StreamEvent::Start { id: String::new(), model: m }, &mut BytesMut::new());
                check(&mut enc)?;
            }
            enc.encode(
                &StreamEvent::Details(AnswerDetails {
                    system_fingerprint: fingerprint,
                    service_tier: tier,
                }),
                &mut BytesMut::new(),
            );
            check(&mut enc)?;
        }
    }

    #[test]
    fn encoder_output_decodes_to_the_same_events() {
        let evs = vec![
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
        ];
        let mut enc = StreamEncoder::new("chatcmpl-x".into(), "m".into(), true);
        let mut buf = BytesMut::new();
        for e in &evs {
            enc.encode(e, &mut buf);
        }
        enc.finish(&mut buf);
        let text = String::from_utf8(buf.to_vec()).unwrap();
        let mut d = StreamDecoder::new();
        let mut back = Vec::new();
        for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
            d.decode(frame.strip_prefix("data: ").unwrap(), &mut back)
                .unwrap();
        }
        assert!(d.is_done());
        assert_eq!(&back[1..], &evs[1..]);
    }
}
