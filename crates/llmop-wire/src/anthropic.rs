//! Anthropic Messages (`POST /v1/messages`).
//!
//! Reference: Anthropic's Messages API and its streaming events (`message_start`,
//! `content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta`,
//! `message_stop`, `ping`, `error`).

use crate::Unsupported;
use crate::{from_json, sse, TextOr, WireError};
use bytes::BytesMut;
use llmop_core::{
    AnswerDetails, CacheMark, ChatRequest, ChatResponse, FinishReason, ImageSource, MarkAt,
    Message, Part, Reasoning, ReasoningParams, ResponseFormat, Role, StreamEvent, Tool, ToolCall,
    ToolChoice, Usage, WireFormat,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Sent when a request from another format names no `max_tokens`; the Messages API
/// requires one, and every current Claude model accepts this many.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The API version llmop speaks to Anthropic (the `anthropic-version` header).
pub const API_VERSION: &str = "2023-06-01";

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct InRequest {
    model: String,
    max_tokens: u32,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<InContent>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    metadata: Option<InMetadata>,
    /// `top_k`, `thinking`, `output_config` are read from here and stay here: an
    /// Anthropic target gets them exactly as sent, and the record keeps them.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct InMetadata {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: InContent,
}

type InContent = TextOr<InBlock>;

/// A content block, flat so that each field's path survives into error messages; the
/// `type`'s rules are checked when it is converted.
#[derive(Deserialize)]
struct InBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    source: Option<InImageSource>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
    /// A prompt-cache breakpoint closing this block.
    #[serde(default)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
struct InImageSource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(default)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

fn block_err(path: &str, msg: impl Into<String>) -> WireError {
    WireError::new(msg, Some(path.to_string()))
}

/// Converts blocks into parts. Thinking blocks become reasoning parts, kept whole: the
/// API wants them back exactly as it gave them.
/// The blocks as parts; each block's `cache_control` goes to `marks` as (part index,
/// control).
fn blocks_to_parts(
    blocks: Vec<InBlock>,
    path: &str,
    marks: &mut Vec<(usize, Value)>,
) -> Result<Vec<Part>, WireError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for (i, mut b) in blocks.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(cc) = b.cache_control.take().filter(|c| !c.is_null()) {
            // Each block becomes exactly one part: this is its index.
            marks.push((parts.len(), cc));
        }
        match b.kind.as_str() {
            "text" => parts
                .push(Part::Text(b.text.ok_or_else(|| {
                    block_err(&format!("{at}.text"), "is required")
                })?)),
            "image" => {
                let s = b
                    .source
                    .ok_or_else(|| block_err(&format!("{at}.source"), "is required"))?;
                let src = match s.kind.as_str() {
                    "base64" => ImageSource::Base64 {
                        media_type: s.media_type.unwrap_or_default(),
                        data: s.data.unwrap_or_default(),
                    },
                    "url" => ImageSource::Url(s.url.unwrap_or_default()),
                    other => {
                        return Err(block_err(
                            &format!("{at}.source.type"),
                            format!("unsupported image source `{other}`"),
                        ))
                    }
                };
                parts.push(Part::Image(src));
            }
            "tool_use" => {
                let input = b.input.unwrap_or_else(|| json!({}));
                parts.push(Part::ToolCall(ToolCall {
                    id: b
                        .id
                        .ok_or_else(|| block_err(&format!("{at}.id"), "is required"))?,
                    name: b
                        .name
                        .ok_or_else(|| block_err(&format!("{at}.name"), "is required"))?,
                    arguments: serde_json::to_string(&input).unwrap_or_default(),
                }))
            }
            "tool_result" => {
                let content = match b.content {
                    None => String::new(),
                    Some(TextOr::Text(t)) => t,
                    Some(TextOr::List(bs)) => bs.into_iter().filter_map(|b| b.text).collect(),
                };
                parts.push(Part::ToolResult {
                    call_id: b
                        .tool_use_id
                        .ok_or_else(|| block_err(&format!("{at}.tool_use_id"), "is required"))?,
                    content,
                    is_error: b.is_error.unwrap_or(false),
                });
            }
            "thinking" => parts.push(Part::Reasoning(Reasoning::Thinking {
                text: b.thinking.unwrap_or_default(),
                signature: b.signature.unwrap_or_default(),
            })),
            "redacted_thinking" => parts.push(Part::Reasoning(Reasoning::Redacted {
                data: b
                    .data
                    .ok_or_else(|| block_err(&format!("{at}.data"), "is required"))?,
            })),
            other => {
                return Err(block_err(
                    &format!("{at}.type"),
                    format!("unsupported content block type `{other}`"),
                ))
            }
        }
    }
    Ok(parts)
}

/// Parses an inbound Messages body.
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
    let mut messages = Vec::with_capacity(r.messages.len() + 1);
    let mut cache_marks: Vec<CacheMark> = Vec::new();
    let mut block_marks: Vec<(usize, Value)> = Vec::new();
    let has_system = r.system.is_some();
    match r.system {
        None => {}
        Some(TextOr::Text(t)) => messages.push(Message::text(Role::System, t)),
        Some(TextOr::List(bs)) => {
            let parts = blocks_to_parts(bs, "system", &mut block_marks)?;
            cache_marks.extend(block_marks.drain(..).map(|(part, control)| CacheMark {
                at: MarkAt::Part { message: 0, part },
                control,
            }));
            messages.push(Message {
                role: Role::System,
                parts,
                name: None,
            })
        }
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(WireError::new(
                    format!("unknown role `{other}` (expected user or assistant)"),
                    Some(format!("messages[{i}].role")),
                ))
            }
        };
        let parts = match m.content {
            TextOr::Text(t) => vec![Part::Text(t)],
            TextOr::List(bs) => {
                blocks_to_parts(bs, &format!("messages[{i}].content"), &mut block_marks)?
            }
        };
        let message = messages.len();
        cache_marks.extend(block_marks.drain(..).map(|(part, control)| CacheMark {
            at: MarkAt::Part { message, part },
            control,
        }));
        messages.push(Message {
            role,
            parts,
            name: None,
        });
    }
    let mut req = ChatRequest::new(r.model, messages, WireFormat::Anthropic);
    req.params.max_tokens = Some(r.max_tokens);
    req.params.temperature = r.temperature;
    req.params.top_p = r.top_p;
    req.params.stop = r.stop_sequences.unwrap_or_default();
    let extra = r.extra;
    if let Some(k) = extra.get("top_k") {
        req.params.top_k = Some(
            k.as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| WireError::new("must be a whole number", Some("top_k".into())))?,
        );
    }
    if let Some(t) = extra.get("thinking") {
        // A thinking mode this code does not know is passed through (to Anthropic only).
        req.params.reasoning = parse_thinking(t)?;
    }
    // Structured output: `output_config.format` (and the older beta `output_format`).
    // Both stay in `extra` too, so an Anthropic target gets them exactly as sent.
    let format = extra
        .get("output_config")
        .and_then(|c| c.get("format"))
        .map(|f| ("output_config.format", f))
        .or_else(|| extra.get("output_format").map(|f| ("output_format", f)));
    if let Some((at, f)) = format {
        req.response_format = Some(parse_output_format(f, at)?);
    }
    if let Some(effort) = extra
        .get("output_config")
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str)
    {
        let rp = req.params.reasoning.get_or_insert_with(Default::default);
        rp.effort = Some(effort.to_string());
    }
    req.tools = r
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if let Some(cc) = t.cache_control.take().filter(|c| !c.is_null()) {
                cache_marks.push(CacheMark {
                    at: MarkAt::Tool(i),
                    control: cc,
                });
            }
            t
        })
        .map(|t| Tool {
            name: t.name,
            description: t.description,
            parameters: t
                .input_schema
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t.strict,
        })
        .collect();
    if let Some(tc) = r.tool_choice {
        req.tool_choice = Some(match tc.kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Named(tc.name.ok_or_else(|| {
                WireError::new(
                    "is required when type is `tool`",
                    Some("tool_choice.name".into()),
                )
            })?),
            other => {
                return Err(WireError::new(
                    format!(
                        "unknown tool_choice type `{other}` (expected auto, any, tool or none)"
                    ),
                    Some("tool_choice.type".into()),
                ))
            }
        });
        if let Some(d) = tc.disable_parallel_tool_use {
            req.params.parallel_tool_calls = Some(!d);
        }
    }
    req.stream = r.stream.unwrap_or(false);
    // Anthropic streams always report usage.
    req.include_usage = true;
    if let Some(m) = r.metadata {
        req.user = m.user_id;
        req.metadata = m.other;
    }
    req.extra = extra;
    req.prompt_cache.marks = cache_marks;
    crate::check_tool_results(&req.messages, |m, p| {
        format!(
            "messages[{}].content[{p}].tool_use_id",
            m - usize::from(has_system)
        )
    })?;
    Ok(req)
}

/// `thinking`: `{"type":"enabled","budget_tokens":N}` or `{"type":"disabled"}`. `None`
/// for a type this code does not know (passed through to Anthropic as sent).
fn parse_thinking(t: &Value) -> Result<Option<ReasoningParams>, WireError> {
    let kind = t
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| WireError::new("is required", Some("thinking.type".into())))?;
    Ok(match kind {
        "enabled" => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    WireError::new(
                        "is required when type is `enabled`",
                        Some("thinking.budget_tokens".into()),
                    )
                })?;
            Some(ReasoningParams {
                budget_tokens: Some(budget.min(u64::from(u32::MAX)) as u32),
                ..ReasoningParams::default()
            })
        }
        "disabled" => Some(ReasoningParams {
            disabled: true,
            ..ReasoningParams::default()
        }),
        _ => None,
    })
}

/// `{"type":"json_schema","schema":{…}}`.
fn parse_output_format(f: &Value, at: &str) -> Result<ResponseFormat, WireError> {
    match f.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = f
                .get("schema")
                .cloned()
                .ok_or_else(|| WireError::new("is required", Some(format!("{at}.schema"))))?;
            Ok(ResponseFormat::JsonSchema {
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("output")
                    .to_string(),
                schema,
                strict: Some(true),
            })
        }
        other => Err(WireError::new(
            format!(
                "unsupported format type `{}` (expected json_schema)",
                other.unwrap_or("")
            ),
            Some(format!("{at}.type")),
        )),
    }
}

fn out_block(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Reasoning(Reasoning::Thinking { text, signature }) => {
            json!({"type": "thinking", "thinking": text, "signature": signature})
        }
        Part::Reasoning(Reasoning::Redacted { data }) => {
            json!({"type": "redacted_thinking", "data": data})
        }
        // Gemini's state means nothing to Anthropic.
        Part::Reasoning(_) => return None,
        Part::Image(ImageSource::Base64 { media_type, data }) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        Part::Image(ImageSource::Url(u)) => {
            json!({"type": "image", "source": {"type": "url", "url": u}})
        }
        Part::ToolCall(c) => {
            let input: Value = serde_json::from_str(&c.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
        }
        Part::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let mut b = json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
            if *is_error {
                b["is_error"] = json!(true);
            }
            b
        }
    })
}

/// Anthropic allows at most this many `cache_control` breakpoints in one request.
const MAX_BREAKPOINTS: usize = 4;

/// The `cache_control` breakpoints of one request: the client's own (and a feature's
/// marked templates), then, when llmop places them (`prompt_cache.auto`), one after the
/// tools, one after the system prompt and one after the conversation so far, each where
/// the client put none, while fewer than [`MAX_BREAKPOINTS`] are set. Anthropic caches
/// the prefix up to a breakpoint; the next turn of an agent loop reads the conversation
/// prefix the previous turn wrote.
struct Breakpoints<'a> {
    marks: Vec<(MarkAt, std::borrow::Cow<'a, Value>)>,
}

impl<'a> Breakpoints<'a> {
    fn of(req: &'a ChatRequest) -> Self {
        use std::borrow::Cow;
        let pc = &req.prompt_cache;
        let mut marks: Vec<(MarkAt, Cow<'a, Value>)> = pc
            .marks
            .iter()
            .map(|m| (m.at, Cow::Borrowed(&m.control)))
            .collect();
        if !pc.auto {
            return Breakpoints { marks };
        }
        let ephemeral = || Cow::Owned(json!({"type": "ephemeral"}));
        let is_system = |at: &MarkAt| match at {
            MarkAt::Part { message, .. } => req
                .messages
                .get(*message)
                .is_some_and(|m| m.role == Role::System),
            MarkAt::Tool(_) => false,
        };
        // A block that can carry a breakpoint (thinking blocks cannot).
        let markable = |p: &Part| match p {
            Part::Text(t) => !t.is_empty(),
            Part::Reasoning(_) => false,
            _ => true,
        };
        let mut wanted: Vec<MarkAt> = Vec::new();
        if !req.tools.is_empty() && !marks.iter().any(|(a, _)| matches!(a, MarkAt::Tool(_))) {
            wanted.push(MarkAt::Tool(req.tools.len() - 1));
        }
        if !marks.iter().any(|(a, _)| is_system(a)) {
            let last_system = req.messages.iter().enumerate().rev().find_map(|(mi, m)| {
                (m.role == Role::System)
                    .then(|| m.parts.iter().rposition(markable).map(|pi| (mi, pi)))
                    .flatten()
            });
            if let Some((message, part)) = last_system {
                wanted.push(MarkAt::Part { message, part });
            }
        }
        let last_turn = req.messages.iter().enumerate().rev().find_map(|(mi, m)| {
            (m.role != Role::System)
                .then(|| m.parts.iter().rposition(markable).map(|pi| (mi, pi)))
                .flatten()
        });
        if let Some((message, part)) = last_turn {
            let at = MarkAt::Part { message, part };
            if !marks.iter().any(|(a, _)| *a == at) {
                wanted.push(at);
            }
        }
        for at in wanted {
            if marks.len() >= MAX_BREAKPOINTS {
                break;
            }
            marks.push((at, ephemeral()));
        }
        Breakpoints { marks }
    }

    fn close_part(&self, message: usize, part: usize, block: &mut Value) {
        self.close(MarkAt::Part { message, part }, block);
    }

    fn close_tool(&self, i: usize, tool: &mut Value) {
        self.close(MarkAt::Tool(i), tool);
    }

    fn close(&self, at: MarkAt, v: &mut Value) {
        if let Some((_, c)) = self.marks.iter().find(|(a, _)| *a == at) {
            if let Some(o) = v.as_object_mut() {
                o.insert("cache_control".into(), c.as_ref().clone());
            }
        }
    }
}

/// Builds the body sent to Anthropic for `model`. Fails when the request asks for
/// something the Messages API cannot express.
pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Result<Vec<u8>, Unsupported> {
    let mut body = Map::new();
    let same_family = req.origin == WireFormat::Anthropic;
    if same_family {
        for (k, v) in &req.extra {
            body.insert(k.clone(), v.clone());
        }
    }
    // System text blocks, each kept apart (their boundaries are the client's: cache
    // breakpoints and instructions of different origins).
    let mut system: Vec<Value> = Vec::new();
    // Alternating user/assistant turns; tool results travel in user turns, and
    // consecutive turns of one role are merged (the API refuses two in a row).
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let marks = Breakpoints::of(req);
    for (mi, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::System => {
                for (pi, p) in m.parts.iter().enumerate() {
                    if let Part::Text(t) = p {
                        if !t.is_empty() {
                            let mut b = json!({"type": "text", "text": t});
                            marks.close_part(mi, pi, &mut b);
                            system.push(b);
                        }
                    }
                }
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = m
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| !matches!(p, Part::Text(t) if t.is_empty()))
            .filter_map(|(pi, p)| {
                let mut b = out_block(p)?;
                marks.close_part(mi, pi, &mut b);
                Some(b)
            })
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, bs)) if *r == role => bs.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // Structured output: Anthropic's own `output_config.format`. A client of this
    // format already sent it (passed through above).
    let has_format = body
        .get("output_config")
        .is_some_and(|c| c.get("format").is_some())
        || body.contains_key("output_format");
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) if !has_format => {
            let cfg = body
                .entry("output_config")
                .or_insert_with(|| json!({}));
            if let Some(c) = cfg.as_object_mut() {
                c.insert("format".into(), json!({"type": "json_schema", "schema": schema}));
            }
        }
        Some(ResponseFormat::JsonObject) => {
            return Err(Unsupported {
                param: "response_format".into(),
                message: "Anthropic has no JSON mode without a schema; send response_format of type json_schema".into(),
            })
        }
        _ => {}
    }
    let mut max_tokens = req.params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("model".into(), json!(model));
    match system.as_slice() {
        [] => {}
        [one] if one.get("cache_control").is_none() => {
            body.insert("system".into(), one["text"].clone());
        }
        _ => {
            body.insert("system".into(), Value::Array(system));
        }
    }
    if let Some(rp) = &req.params.reasoning {
        if !body.contains_key("thinking") {
            match rp.budget() {
                Some(0) => {
                    body.insert("thinking".into(), json!({"type": "disabled"}));
                }
                // Thinking counts within max_tokens and must leave room for the answer;
                // Anthropic's smallest budget is 1,024.
                Some(b) => {
                    let b = b.max(1024);
                    // A client that named no max_tokens gets room for the answer
                    // beyond the budget; one that did keeps its cap.
                    if req.params.max_tokens.is_none() && b >= max_tokens {
                        max_tokens = b.saturating_add(DEFAULT_MAX_TOKENS);
                    }
                    if b < max_tokens {
                        body.insert(
                            "thinking".into(),
                            json!({"type": "enabled", "budget_tokens": b}),
                        );
                    } else {
                        return Err(Unsupported {
                            param: "max_tokens".into(),
                            message: format!(
                                "a thinking budget of {b} tokens needs max_tokens above it (it is {max_tokens})"
                            ),
                        });
                    }
                }
                None => {}
            }
        }
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| match blocks.as_slice() {
            [b] if b["type"] == "text" && b.get("cache_control").is_none() => {
                json!({"role": role, "content": b["text"]})
            }
            _ => json!({"role": role, "content": blocks}),
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    let p = &req.params;
    if let Some(v) = p.temperature {
        body.insert("temperature".into(), json!(v));
    }
    if let Some(v) = p.top_p {
        body.insert("top_p".into(), json!(v));
    }
    if !p.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(p.stop));
    }
    if let Some(k) = p.top_k {
        body.insert("top_k".into(), json!(k));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                if let Some(s) = t.strict {
                    v["strict"] = json!(s);
                }
                marks.close_tool(i, &mut v);
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = req.tool_choice.as_ref().map(|tc| match tc {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Named(n) => json!({"type": "tool", "name": n}),
    });
    if p.parallel_tool_calls == Some(false) && !req.tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    if let Some(c) = choice {
        if !req.tools.is_empty() {
            body.insert("tool_choice".into(), c);
        }
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    } else {
        body.remove("stream");
    }
    Ok(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
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
    content: Vec<InBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize, Default, Clone)]
struct InUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    service_tier: Option<String>,
}

impl InUsage {
    /// Anthropic's `input_tokens` excludes cache reads and writes; llmop's includes them.
    fn to_usage(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + read + write,
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: read,
            cache_write_tokens: write,
            // Anthropic bills thinking as output and does not count it apart.
            reasoning_tokens: 0,
        }
    }

    fn details(&self) -> AnswerDetails {
        AnswerDetails {
            system_fingerprint: None,
            service_tier: self.service_tier.clone(),
        }
    }
}

fn finish_from(s: Option<&str>) -> FinishReason {
    match s {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// The fields of a Messages request that `POST /v1/messages/count_tokens` takes.
const COUNT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
];

/// Parses an inbound `count_tokens` body: a Messages request without `max_tokens`.
pub fn parse_count_request(body: &[u8]) -> Result<ChatRequest, WireError> {
    let mut v: Map<String, Value> = from_json(body)?;
    // Counted as the request would be sent: `max_tokens` is not part of the count.
    v.entry("max_tokens").or_insert(json!(1));
    let bytes = serde_json::to_vec(&v).map_err(|e| WireError::new(e.to_string(), None))?;
    parse_request(&bytes)
}

/// The `count_tokens` body for `model`: the Messages request, only the fields the
/// endpoint takes.
pub fn build_count_tokens(req: &ChatRequest, model: &str) -> Result<Vec<u8>, Unsupported> {
    let body = build_request(req, model, false)?;
    let mut v: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
    v.retain(|k, _| COUNT_FIELDS.contains(&k.as_str()));
    Ok(serde_json::to_vec(&v).unwrap_or_default())
}

/// Reads `{"input_tokens": n}`.
pub fn parse_count_tokens(body: &[u8]) -> Result<u64, WireError> {
    #[derive(Deserialize)]
    struct Count {
        input_tokens: u64,
    }
    from_json::<Count>(body).map(|c| c.input_tokens)
}

pub fn stop_reason_str(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Parses Anthropic's non-streaming answer.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, WireError> {
    let r: InResponse = from_json(body)?;
    let mut parts = Vec::with_capacity(r.content.len());
    for b in r.content {
        match b.kind.as_str() {
            "text" => parts.push(Part::Text(b.text.unwrap_or_default())),
            "thinking" => parts.push(Part::Reasoning(Reasoning::Thinking {
                text: b.thinking.unwrap_or_default(),
                signature: b.signature.unwrap_or_default(),
            })),
            "redacted_thinking" => parts.push(Part::Reasoning(Reasoning::Redacted {
                data: b.data.unwrap_or_default(),
            })),
            "tool_use" => parts.push(Part::ToolCall(ToolCall {
                id: b.id.unwrap_or_default(),
                name: b.name.unwrap_or_default(),
                arguments: serde_json::to_string(&b.input.unwrap_or_else(|| json!({})))
                    .unwrap_or_default(),
            })),
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: r.id,
        model: r.model,
        created: crate::unix_now(),
        parts,
        finish_reason: finish_from(r.stop_reason.as_deref()),
        details: r.usage.as_ref().map(InUsage::details).unwrap_or_default(),
        usage: r.usage.as_ref().map(InUsage::to_usage),
    })
}

#[derive(Serialize, Clone, Copy)]
struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

fn out_usage(u: &Usage) -> OutUsage {
    OutUsage {
        input_tokens: u
            .input_tokens
            .saturating_sub(u.cached_input_tokens + u.cache_write_tokens),
        output_tokens: u.output_tokens,
        cache_creation_input_tokens: u.cache_write_tokens,
        cache_read_input_tokens: u.cached_input_tokens,
    }
}

/// Encodes a whole answer for an Anthropic-format client.
pub fn encode_response(resp: &ChatResponse) -> Vec<u8> {
    let content: Vec<Value> = resp.parts.iter().filter_map(out_block).collect();
    let mut usage =
        serde_json::to_value(out_usage(&resp.usage.unwrap_or_default())).unwrap_or_default();
    if let Some(t) = &resp.details.service_tier {
        usage["service_tier"] = json!(t);
    }
    serde_json::to_vec(&json!({
        "id": resp.id,
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason_str(&resp.finish_reason),
        "stop_sequence": Value::Null,
        "usage": usage,
    }))
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// An event's type names are borrowed from its text (an event per token; they only
/// choose a branch).
#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    message: Option<InStartMessage>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<InBlock>,
    #[serde(default)]
    #[serde(borrow)]
    delta: Option<InDelta<'a>>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct InStartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// Turns the `data` payloads of an Anthropic stream into events.
#[derive(Default)]
pub struct StreamDecoder {
    usage: InUsage,
    /// Tool index of each content block index that is a tool_use block.
    tool_of_block: Vec<Option<u32>>,
    tools: u32,
    done: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `message_stop` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn decode(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if data.trim().is_empty() {
            return Ok(());
        }
        let ev: InEvent = crate::from_json_str(data)?;
        match &*ev.kind {
            "message_start" => {
                let m = ev
                    .message
                    .ok_or_else(|| WireError::new("message_start without message", None))?;
                out.push(StreamEvent::Start {
                    id: m.id,
                    model: m.model,
                });
                if let Some(u) = m.usage {
                    if u.service_tier.is_some() {
                        out.push(StreamEvent::Details(u.details()));
                    }
                    self.usage = u;
                    // Known from the start: a stream cut short keeps its input tokens.
                    out.push(StreamEvent::Usage(self.usage.to_usage()));
                }
            }
            "content_block_start" => {
                let idx = ev.index.unwrap_or(0) as usize;
                if idx > 4096 {
                    return Err(WireError::new("content block index out of range", None));
                }
                let b = ev
                    .content_block
                    .ok_or_else(|| WireError::new("content_block_start without block", None))?;
                if self.tool_of_block.len() <= idx {
                    self.tool_of_block.resize(idx + 1, None);
                }
                match b.kind.as_str() {
                    "tool_use" => {
                        let t = self.tools;
                        self.tools += 1;
                        self.tool_of_block[idx] = Some(t);
                        out.push(StreamEvent::ToolCallStart {
                            index: t,
                            id: b.id.unwrap_or_default(),
                            name: b.name.unwrap_or_default(),
                        });
                    }
                    "text" => {
                        if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    "thinking" => {
                        out.push(StreamEvent::ThinkingStart);
                        if let Some(t) = b.thinking.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::ThinkingDelta(t));
                        }
                        if let Some(sig) = b.signature.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::SignatureDelta(sig));
                        }
                    }
                    "redacted_thinking" => {
                        out.push(StreamEvent::Reasoning(Reasoning::Redacted {
                            data: b.data.unwrap_or_default(),
                        }));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let idx = ev.index.unwrap_or(0) as usize;
                if let Some(d) = ev.delta {
                    match d.kind.as_deref() {
                        Some("text_delta") => {
                            if let Some(t) = d.text {
                                out.push(StreamEvent::Text(t));
                            }
                        }
                        Some("thinking_delta") => {
                            if let Some(t) = d.thinking {
                                out.push(StreamEvent::ThinkingDelta(t));
                            }
                        }
                        Some("signature_delta") => {
                            if let Some(sig) = d.signature {
                                out.push(StreamEvent::SignatureDelta(sig));
                            }
                        }
                        Some("input_json_delta") => {
                            if let (Some(Some(t)), Some(j)) =
                                (self.tool_of_block.get(idx), d.partial_json)
                            {
                                if !j.is_empty() {
                                    out.push(StreamEvent::ToolCallDelta {
                                        index: *t,
                                        arguments: j,
                                    });
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    // message_delta usage is cumulative; fields it omits keep their
                    // message_start values.
                    let cur = &mut self.usage;
                    cur.output_tokens = u.output_tokens.or(cur.output_tokens);
                    cur.input_tokens = u.input_tokens.or(cur.input_tokens);
                    cur.cache_read_input_tokens =
                        u.cache_read_input_tokens.or(cur.cache_read_input_tokens);
                    cur.cache_creation_input_tokens = u
                        .cache_creation_input_tokens
                        .or(cur.cache_creation_input_tokens);
                }
                let stop = ev.delta.and_then(|d| d.stop_reason);
                out.push(StreamEvent::Finish(finish_from(stop.as_deref())));
                out.push(StreamEvent::Usage(self.usage.to_usage()));
            }
            "message_stop" => self.done = true,
            "error" => {
                // The error's type says what happened (`overloaded_error`…): kept with
                // its message.
                let e = ev.error.as_ref();
                let msg = e
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("stream error");
                let msg = match e.and_then(|e| e.get("type")).and_then(Value::as_str) {
                    Some(kind) => format!("{kind}: {msg}"),
                    None => msg.to_string(),
                };
                return Err(WireError::new(msg, None));
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => {}
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum OpenBlock {
    None,
    Text,
    Tool(u32),
    Thinking,
}

/// What a `content_block_delta` carries: its `delta`'s type and the field its text is in.
#[derive(Clone, Copy, Debug)]
enum Delta {
    Text,
    InputJson,
    Thinking,
    Signature,
}

impl Delta {
    fn kind_and_field(self) -> (&'static str, &'static str) {
        match self {
            Delta::Text => ("text_delta", "text"),
            Delta::InputJson => ("input_json_delta", "partial_json"),
            Delta::Thinking => ("thinking_delta", "thinking"),
            Delta::Signature => ("signature_delta", "signature"),
        }
    }
}

/// One `content_block_delta` event:
/// `{"type":"content_block_delta","index":N,"delta":{"type":KIND,FIELD:TEXT}}`.
///
/// Written by hand because a stream writes one per token. Built as two `json!` maps (an
/// index map each, with the text copied in) and serialized, it took about 5.3k
/// instructions a token, a fifth of a streamed call. A property test holds it byte for
/// byte to that form.
fn delta(out: &mut BytesMut, index: u32, kind: Delta, text: &str) {
    use std::fmt::Write as _;
    let (kind, field) = kind.kind_and_field();
    out.reserve(112 + text.len());
    out.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    // Into memory: cannot fail.
    let _ = write!(out, "{index}");
    out.extend_from_slice(b",\"delta\":{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(b"\":");
    sse::put_json_str(out, text);
    out.extend_from_slice(b"}}\n\n");
}

/// Writes events as an Anthropic SSE stream.
pub struct StreamEncoder {
    id: String,
    model: String,
    next_block: u32,
    open: OpenBlock,
    open_index: u32,
    /// Content block index of each tool call index.
    tool_blocks: Vec<u32>,
    stop: Option<FinishReason>,
    usage: Option<Usage>,
    service_tier: Option<String>,
    started: bool,
}

impl StreamEncoder {
    pub fn new(id: String, model: String) -> Self {
        StreamEncoder {
            id,
            model,
            next_block: 0,
            open: OpenBlock::None,
            open_index: 0,
            tool_blocks: Vec::new(),
            stop: None,
            usage: None,
            service_tier: None,
            started: false,
        }
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open != OpenBlock::None {
            sse::write_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.open_index}),
            );
            self.open = OpenBlock::None;
        }
    }

    fn open_block(&mut self, out: &mut BytesMut, kind: OpenBlock, block: Value) {
        self.close_block(out);
        self.open = kind;
        self.open_index = self.next_block;
        self.next_block += 1;
        sse::write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.open_index, "content_block": block}),
        );
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        sse::write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "content": [],
                "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}
            }}),
        );
    }

    pub fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        match ev {
            StreamEvent::Start { model, .. } => {
                if self.model.is_empty() {
                    self.model.clone_from(model);
                }
                self.start(out);
            }
            StreamEvent::Text(t) => {
                self.start(out);
                if self.open != OpenBlock::Text {
                    self.open_block(out, OpenBlock::Text, json!({"type": "text", "text": ""}));
                }
                delta(out, self.open_index, Delta::Text, t);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                self.open_block(
                    out,
                    OpenBlock::Tool(*index),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                let i = *index as usize;
                if i < 4096 {
                    if self.tool_blocks.len() <= i {
                        self.tool_blocks.resize(i + 1, 0);
                    }
                    self.tool_blocks[i] = self.open_index;
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let block = self
                    .tool_blocks
                    .get(*index as usize)
                    .copied()
                    .unwrap_or(self.open_index);
                delta(out, block, Delta::InputJson, arguments);
            }
            StreamEvent::ThinkingStart => {
                self.start(out);
                self.open_block(
                    out,
                    OpenBlock::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
            }
            StreamEvent::ThinkingDelta(t) => {
                if self.open == OpenBlock::Thinking {
                    delta(out, self.open_index, Delta::Thinking, t);
                }
            }
            StreamEvent::SignatureDelta(sig) => {
                if self.open == OpenBlock::Thinking {
                    delta(out, self.open_index, Delta::Signature, sig);
                }
            }
            StreamEvent::Reasoning(Reasoning::Redacted { data }) => {
                self.start(out);
                self.open_block(
                    out,
                    OpenBlock::Thinking,
                    json!({"type": "redacted_thinking", "data": data}),
                );
                self.close_block(out);
            }
            // Gemini's state has no place here; the gateway keeps it.
            StreamEvent::Reasoning(_) => {}
            StreamEvent::Details(d) => {
                if d.service_tier.is_some() {
                    self.service_tier.clone_from(&d.service_tier);
                }
            }
            StreamEvent::Finish(f) => self.stop = Some(f.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    /// Ends a stream that completed: closes the open block, then `message_delta` with
    /// the stop reason and usage, then `message_stop`.
    pub fn finish(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close_block(out);
        let stop = self.stop.clone().unwrap_or(FinishReason::Stop);
        let mut usage =
            serde_json::to_value(out_usage(&self.usage.unwrap_or_default())).unwrap_or_default();
        if let Some(t) = &self.service_tier {
            usage["service_tier"] = json!(t);
        }
        sse::write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason_str(&stop), "stop_sequence": null},
                    "usage": usage}),
        );
        sse::write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// Ends a stream that failed after it started, with an `error` event.
    pub fn error(&mut self, out: &mut BytesMut, code: &str, message: &str) {
        sse::write_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message, "code": code}}),
        );
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Extracts the message of an Anthropic error body.
pub fn parse_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("message")?.as_str().map(str::to_string)
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// An Anthropic-format error body. llmop's stable `code` travels beside the message.
pub fn error_body(kind: &str, code: &str, message: &str, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "error",
        "error": {"type": kind, "message": message, "code": code},
        "request_id": request_id,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event types are borrowed from the event's text where they can be; one written
    /// with escapes is read as well.
    #[test]
    fn escaped_event_types_are_read() {
        let mut d = StreamDecoder::new();
        let mut out = Vec::new();
        for data in [
            r#"{"type":"message\u005fstart","message":{"id":"msg_1","model":"m","usage":{"input_tokens":3}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text\u005fdelta","text":"hi"}}"#,
        ] {
            d.decode(data, &mut out).unwrap();
        }
        assert!(out.contains(&StreamEvent::Text("hi".into())), "{out:?}");
        assert!(matches!(out.first(), Some(StreamEvent::Start { id, .. }) if id == "msg_1"));
    }

    proptest::proptest! {
        /// A `content_block_delta` written by hand is the event serde writes for it,
        /// for every kind, index and text.
        #[test]
        fn deltas_are_what_serde_writes(
            index in proptest::prelude::any::<u32>(),
            kind in proptest::sample::select(vec![
                Delta::Text, Delta::InputJson, Delta::Thinking, Delta::Signature,
            ]),
            text in "\\PC{0,24}|[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é😀]{1,8}",
        ) {
            let mut fast = BytesMut::new();
            delta(&mut fast, index, kind, &text);
            let (k, field) = kind.kind_and_field();
            let mut inner = serde_json::Map::new();
            inner.insert("type".into(), json!(k));
            inner.insert(field.into(), json!(text));
            let mut slow = BytesMut::new();
            sse::write_event(
                &mut slow,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": inner}),
            );
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow)
            );
        }
    }

    #[test]
    fn parses_a_request_with_tools_and_results() {
        let body = br#"{
          "model":"claude","max_tokens":100,"system":"be brief",
          "messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":[{"type":"text","text":"checking"},{"type":"tool_use","id":"toolu_1","name":"get","input":{"city":"Paris"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"}]}
          ],
          "tools":[{"name":"get","input_schema":{"type":"object"}}],
          "tool_choice":{"type":"any"},
          "metadata":{"user_id":"u1"},
          "top_k": 5
        }"#;
        let r = parse_request(body).unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        assert_eq!(r.params.top_k, Some(5));
        // To OpenAI: the tool result becomes a `tool` message.
        let o: Value =
            serde_json::from_slice(&crate::openai::build_request(&r, "gpt", false)).unwrap();
        assert_eq!(
            o["messages"][2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(o["messages"][3]["role"], "tool");
        assert!(
            o.get("top_k").is_none(),
            "anthropic-only fields stay behind"
        );
        // Back to Anthropic: same shape, top_k passed through.
        let a: Value =
            serde_json::from_slice(&build_request(&r, "claude-x", true).unwrap()).unwrap();
        assert_eq!(a["system"], "be brief");
        assert_eq!(a["messages"][1]["content"][1]["input"]["city"], "Paris");
        assert_eq!(a["top_k"], 5);
        assert_eq!(a["stream"], true);
    }

    #[test]
    fn merges_consecutive_tool_results_into_one_user_turn() {
        let o = br#"{"model":"m","messages":[
          {"role":"user","content":"hi"},
          {"role":"assistant","content":null,"tool_calls":[
             {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
             {"id":"b","type":"function","function":{"name":"f","arguments":"{}"}}]},
          {"role":"tool","tool_call_id":"a","content":"1"},
          {"role":"tool","tool_call_id":"b","content":"2"}]}"#;
        let r = crate::openai::parse_request(o).unwrap();
        let a: Value = serde_json::from_slice(&build_request(&r, "c", false).unwrap()).unwrap();
        let msgs = a["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(a["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_request(br#"{"model":"c","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap_err();
        assert!(e.message.contains("max_tokens"), "{e}");
        let e = parse_request(br#"{"model":"c","max_tokens":1,"messages":[{"role":"user","content":[{"type":"video"}]}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
    }

    #[test]
    fn usage_counts_cache_into_input() {
        let r = parse_response(br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":90,"cache_creation_input_tokens":5}}"#).unwrap();
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens),
            (105, 90, 5)
        );
        let back: Value = serde_json::from_slice(&encode_response(&r)).unwrap();
        assert_eq!(back["usage"]["input_tokens"], 10);
        assert_eq!(back["usage"]["cache_read_input_tokens"], 90);
    }

    #[test]
    fn encoder_output_decodes_to_the_same_events() {
        let evs = vec![
            StreamEvent::Start {
                id: "msg".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"a\":1}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 7,
                output_tokens: 2,
                ..Usage::default()
            }),
        ];
        let mut enc = StreamEncoder::new("msg".into(), "m".into());
        let mut buf = BytesMut::new();
        for e in &evs {
            enc.encode(e, &mut buf);
        }
        enc.finish(&mut buf);
        let text = String::from_utf8(buf.to_vec()).unwrap();
        let mut d = StreamDecoder::new();
        let mut back = Vec::new();
        for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            d.decode(data, &mut back).unwrap();
        }
        assert!(d.is_done());
        // message_start's usage (what is known at the start) comes right after Start.
        assert_eq!(back.remove(1), StreamEvent::Usage(Usage::default()));
        assert_eq!(back, evs);
    }
}

#[cfg(test)]
mod breakpoint_tests {
    use super::*;
    use proptest::prelude::*;

    fn count(v: &Value) -> usize {
        match v {
            Value::Object(o) => {
                usize::from(o.contains_key("cache_control")) + o.values().map(count).sum::<usize>()
            }
            Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }

    fn part(kind: u8, i: usize) -> Part {
        match kind % 4 {
            0 => Part::Text(format!("text {i}")),
            1 => Part::Text(String::new()),
            2 => Part::Reasoning(Reasoning::Thinking {
                text: "t".into(),
                signature: "s".into(),
            }),
            _ => Part::ToolResult {
                call_id: format!("c{i}"),
                content: "r".into(),
                is_error: false,
            },
        }
    }

    proptest! {
        /// Whatever the conversation, llmop's breakpoints stay within Anthropic's limit of
        /// four, never sit on a thinking block or an empty text, and a client's own are
        /// kept.
        #[test]
        fn breakpoints_stay_within_the_limit(
            shape in proptest::collection::vec((0u8..3, proptest::collection::vec(0u8..4, 1..4)), 1..8),
            tools in 0usize..3,
            client_marks in 0usize..3,
        ) {
            let messages: Vec<Message> = shape.iter().enumerate().map(|(i, (role, kinds))| Message {
                role: match role { 0 => Role::System, 1 => Role::User, _ => Role::Assistant },
                parts: kinds.iter().enumerate().map(|(j, k)| part(*k, i * 10 + j)).collect(),
                name: None,
            }).collect();
            let mut req = ChatRequest::new("m", messages, WireFormat::OpenAi);
            for t in 0..tools {
                req.tools.push(Tool { name: format!("t{t}"), description: None, parameters: json!({"type": "object"}), strict: None });
            }
            // The client's own marks on text parts.
            let mut marked = 0;
            for (mi, m) in req.messages.iter().enumerate() {
                for (pi, p) in m.parts.iter().enumerate() {
                    if marked < client_marks && matches!(p, Part::Text(t) if !t.is_empty()) {
                        req.prompt_cache.marks.push(CacheMark { at: MarkAt::Part { message: mi, part: pi }, control: json!({"type": "ephemeral", "ttl": "1h"}) });
                        marked += 1;
                    }
                }
            }
            req.prompt_cache.auto = true;
            let body: Value = match build_request(&req, "claude", false) {
                Ok(b) => serde_json::from_slice(&b).unwrap(),
                Err(_) => return Ok(()),
            };
            let n = count(&body);
            prop_assert!(n <= MAX_BREAKPOINTS, "{n} breakpoints: {body}");
            prop_assert!(n >= marked, "the client's marks are kept: {body}");
            let text = body.to_string();
            prop_assert_eq!(text.matches("\"ttl\":\"1h\"").count(), marked);
            for m in body["messages"].as_array().unwrap() {
                if let Some(blocks) = m["content"].as_array() {
                    for b in blocks {
                        if b.get("cache_control").is_some() {
                            prop_assert!(b["type"] != "thinking", "{b}");
                            prop_assert!(b["type"] != "text" || b["text"] != "", "{b}");
                        }
                    }
                }
            }
        }
    }
}
