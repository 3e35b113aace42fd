//! The provider-neutral chat model.
//!
//! An inbound request in any wire format becomes a [`ChatRequest`]; a provider adapter
//! turns it into its own format and answers with a [`ChatResponse`] or a stream of
//! [`StreamEvent`]s, which the gateway encodes back into the client's format. Keeping one
//! model in the middle makes every client format work with every provider (N + M
//! translations instead of N × M).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A wire format clients speak (the origin of a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    OpenAi,
    Anthropic,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageSource {
    Url(String),
    Base64 { media_type: String, data: String },
}

/// A call of a tool (function) made by the model. `arguments` is JSON text, as the
/// model produced it; it is parsed only where a format demands an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A provider's reasoning state: opaque to llmop, and required back by the provider,
/// exactly as given, on the next step of a tool loop. Each variant belongs to one
/// provider family; a builder for another family drops it (as that provider documents
/// unknown reasoning may be), and a client format with no place for it has it kept by
/// the gateway (see `llmop-gateway`'s `reasoning` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reasoning {
    /// Anthropic `thinking` block: the (summarized) thinking and its `signature`.
    Thinking { text: String, signature: String },
    /// Anthropic `redacted_thinking` block: encrypted thinking.
    Redacted { data: String },
    /// Gemini thought part (`thought: true`): a thought summary, maybe signed.
    Thought {
        text: String,
        signature: Option<String>,
    },
    /// Gemini `thoughtSignature` of the part that follows it in the message (a
    /// function call, or text); alone at the end of a message, of an empty text part.
    Signature { signature: String },
    /// An OpenAI Responses `reasoning` item: its id, its summary texts, and the
    /// encrypted reasoning a stateless conversation sends back.
    OpenAi {
        id: String,
        summary: Vec<String>,
        encrypted_content: Option<String>,
    },
}

impl Reasoning {
    /// About the bytes this state holds (what caches weigh it by).
    pub fn byte_len(&self) -> usize {
        match self {
            Reasoning::Thinking { text, signature } => text.len() + signature.len(),
            Reasoning::Redacted { data } => data.len(),
            Reasoning::Thought { text, signature } => {
                text.len() + signature.as_ref().map_or(0, String::len)
            }
            Reasoning::Signature { signature } => signature.len(),
            Reasoning::OpenAi {
                id,
                summary,
                encrypted_content,
            } => {
                id.len()
                    + summary.iter().map(String::len).sum::<usize>()
                    + encrypted_content.as_ref().map_or(0, String::len)
            }
        }
    }

    /// Anthropic-family state (`thinking`, `redacted_thinking`).
    pub fn is_anthropic(&self) -> bool {
        matches!(
            self,
            Reasoning::Thinking { .. } | Reasoning::Redacted { .. }
        )
    }
}

/// Prefix of the tool-call ids llmop issues itself: for calls a provider gave no id,
/// and for calls whose reasoning state the gateway keeps because the client's format
/// has no place for it. Never sent upstream as a provider's id.
pub const ISSUED_CALL_PREFIX: &str = "llmop_call_";

/// A new tool-call id, unique across conversations.
pub fn issue_call_id() -> String {
    format!("{ISSUED_CALL_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `id` is one llmop issued ([`issue_call_id`]).
pub fn is_issued_call_id(id: &str) -> bool {
    id.starts_with(ISSUED_CALL_PREFIX)
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Part {
    Text(String),
    Image(ImageSource),
    ToolCall(ToolCall),
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
    Reasoning(Reasoning),
}

impl Part {
    /// About the bytes this part holds: its strings' lengths. What caches weigh a part
    /// by, and what a JSON writer sizes its buffer from.
    pub fn byte_len(&self) -> usize {
        match self {
            Part::Text(t) => t.len(),
            Part::Image(ImageSource::Url(u)) => u.len(),
            Part::Image(ImageSource::Base64 { media_type, data }) => media_type.len() + data.len(),
            Part::ToolCall(c) => c.id.len() + c.name.len() + c.arguments.len(),
            Part::ToolResult {
                call_id, content, ..
            } => call_id.len() + content.len(),
            Part::Reasoning(r) => r.byte_len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    pub name: Option<String>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            parts: vec![Part::Text(text.into())],
            name: None,
        }
    }

    /// All text parts joined, without tool calls or results.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            if let Part::Text(t) = p {
                out.push_str(t);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// How much a reasoning model may think. Each format states it its own way: OpenAI
/// `reasoning_effort`, Anthropic `thinking.budget_tokens`, Gemini
/// `thinkingConfig.thinkingBudget`/`thinkingLevel`; a builder uses what the client
/// gave when its format says it the same way, else the equivalent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasoningParams {
    /// `none`, `minimal`, `low`, `medium`, `high` (OpenAI's words).
    pub effort: Option<String>,
    /// Thinking tokens allowed (Anthropic `budget_tokens`, Gemini `thinkingBudget`).
    pub budget_tokens: Option<u32>,
    /// Thinking switched off explicitly (Anthropic `type: disabled`, budget 0).
    pub disabled: bool,
    /// Ask for thought summaries (Gemini `includeThoughts`).
    pub include_thoughts: Option<bool>,
}

impl ReasoningParams {
    /// The budget in tokens, from the budget or the effort.
    pub fn budget(&self) -> Option<u32> {
        if self.disabled {
            return Some(0);
        }
        self.budget_tokens
            .or_else(|| self.effort.as_deref().and_then(budget_of_effort))
    }

    /// The effort, from the effort or the budget.
    pub fn effort(&self) -> Option<&'static str> {
        if self.disabled {
            return Some("none");
        }
        if let Some(e) = self.effort.as_deref() {
            return ["none", "minimal", "low", "medium", "high"]
                .into_iter()
                .find(|x| *x == e);
        }
        self.budget_tokens.map(|b| match b {
            0 => "none",
            1..=1024 => "minimal",
            1025..=4096 => "low",
            4097..=16384 => "medium",
            _ => "high",
        })
    }
}

/// Thinking tokens for an OpenAI effort: the budgets are the ones LiteLLM and
/// Anthropic's own guidance use for low/medium/high (1,024 is Anthropic's minimum).
pub fn budget_of_effort(effort: &str) -> Option<u32> {
    match effort {
        "none" => Some(0),
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        _ => None,
    }
}

/// Sampling and length parameters common to all providers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Log probabilities of the output tokens, and how many alternatives per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningParams>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// What the client asked for, before resolution (`provider/model`, a route name…).
    pub model: String,
    pub messages: Vec<Message>,
    pub params: Params,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`; Anthropic streams always carry usage.
    pub include_usage: bool,
    pub user: Option<String>,
    /// Fields of the inbound body that this model does not know. They are passed
    /// through to a provider that speaks the same format as the client (`origin`), and
    /// dropped for any other, since they mean nothing there.
    pub extra: Map<String, Value>,
    /// The request's metadata as llmop reads it (feature variables): OpenAI's
    /// `metadata` object (also still in `extra`, passed through), Anthropic's
    /// `metadata` keys other than `user_id` (not sent upstream: Anthropic allows no
    /// others).
    pub metadata: Map<String, Value>,
    pub origin: WireFormat,
    /// Provider prompt caching: the client's own breakpoints, and llmop's.
    #[serde(default, skip_serializing_if = "PromptCache::is_empty")]
    pub prompt_cache: PromptCache,
}

/// Provider prompt caching for one request. Anthropic caches a prefix up to each
/// `cache_control` breakpoint (at most 4 per request); OpenAI caches prefixes by
/// itself, routed by `prompt_cache_key`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptCache {
    /// Breakpoints the client set (an Anthropic request's `cache_control`), or a
    /// feature's templates marked: kept wherever the request goes.
    pub marks: Vec<CacheMark>,
    /// llmop places breakpoints on the stable prefix (tools, the system prompt, the
    /// conversation so far) where the client placed none.
    pub auto: bool,
    /// OpenAI `prompt_cache_key` (a client's own, in `extra`, wins).
    pub key: Option<String>,
}

impl PromptCache {
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty() && !self.auto && self.key.is_none()
    }
}

/// One breakpoint: the block it closes, and its `cache_control` object as the client
/// gave it (`{"type":"ephemeral","ttl":"1h"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheMark {
    pub at: MarkAt,
    pub control: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkAt {
    /// Part `part` of message `message` (in `ChatRequest::messages`).
    Part { message: usize, part: usize },
    /// The tool definition at this index.
    Tool(usize),
}

impl ChatRequest {
    pub fn new(model: impl Into<String>, messages: Vec<Message>, origin: WireFormat) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            params: Params::default(),
            tools: Vec::new(),
            tool_choice: None,
            response_format: None,
            stream: false,
            include_usage: false,
            user: None,
            extra: Map::new(),
            metadata: Map::new(),
            origin,
            prompt_cache: PromptCache::default(),
        }
    }

    /// Bytes of text in the messages (texts, tool-call arguments, tool results): what
    /// scanning or hashing the request costs, roughly.
    pub fn text_bytes(&self) -> usize {
        self.messages
            .iter()
            .flat_map(|m| &m.parts)
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::ToolCall(c) => c.arguments.len(),
                Part::ToolResult { content, .. } => content.len(),
                _ => 0,
            })
            .sum()
    }

    /// Text of the last user message, if any.
    pub fn last_user_text(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::joined_text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// Token usage as the provider reported it. `input_tokens` counts the whole prompt,
/// including tokens read from or written to a prompt cache (OpenAI semantics); the cache
/// counts say how many of them were.
/// `reasoning_tokens` are the part of `output_tokens` spent thinking (all providers
/// bill them as output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// The model that answered, as the provider named it.
    pub model: String,
    pub created: i64,
    /// Text and tool-call parts, in order.
    pub parts: Vec<Part>,
    pub finish_reason: FinishReason,
    /// `None` when the provider sent no usage (never invented).
    pub usage: Option<Usage>,
    pub details: AnswerDetails,
}

/// What a provider says about the system that answered, beside the answer: how a
/// silent provider-side change shows up in the records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnswerDetails {
    /// OpenAI `system_fingerprint`: the backend configuration that answered.
    pub system_fingerprint: Option<String>,
    /// OpenAI and Anthropic `service_tier`: the tier the call was served on.
    pub service_tier: Option<String>,
}

impl AnswerDetails {
    /// Takes what `newer` says; what it leaves out stays as it was.
    pub fn merge(&mut self, newer: &AnswerDetails) {
        if newer.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&newer.system_fingerprint);
        }
        if newer.service_tier.is_some() {
            self.service_tier.clone_from(&newer.service_tier);
        }
    }
}

impl ChatResponse {
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            if let Part::Text(t) = p {
                out.push_str(t);
            }
        }
        out
    }

    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.parts.iter().filter_map(|p| match p {
            Part::ToolCall(c) => Some(c),
            _ => None,
        })
    }
}

impl ChatResponse {
    /// The events a stream of this answer carries (what [`StreamAccumulator`] folds
    /// back into it): how a whole answer is served to a streaming client.
    pub fn into_events(self) -> Vec<StreamEvent> {
        let mut out = Vec::with_capacity(self.parts.len() * 2 + 4);
        out.push(StreamEvent::Start {
            id: self.id,
            model: self.model,
        });
        if self.details != AnswerDetails::default() {
            out.push(StreamEvent::Details(self.details));
        }
        let mut calls = 0;
        for p in self.parts {
            push_part_events(p, &mut calls, &mut out);
        }
        out.push(StreamEvent::Finish(self.finish_reason));
        if let Some(u) = self.usage {
            out.push(StreamEvent::Usage(u));
        }
        out
    }
}

/// Appends the events that carry one answer part. A tool call takes index `*calls`
/// (then counted); images and tool results are not parts of answers.
pub fn push_part_events(p: Part, calls: &mut u32, out: &mut Vec<StreamEvent>) {
    match p {
        Part::Text(t) if t.is_empty() => {}
        Part::Text(t) => out.push(StreamEvent::Text(t)),
        Part::ToolCall(c) => {
            let index = *calls;
            *calls += 1;
            out.push(StreamEvent::ToolCallStart {
                index,
                id: c.id,
                name: c.name,
            });
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: c.arguments,
            });
        }
        Part::Reasoning(Reasoning::Thinking { text, signature }) => {
            out.push(StreamEvent::ThinkingStart);
            if !text.is_empty() {
                out.push(StreamEvent::ThinkingDelta(text));
            }
            if !signature.is_empty() {
                out.push(StreamEvent::SignatureDelta(signature));
            }
        }
        Part::Reasoning(r) => out.push(StreamEvent::Reasoning(r)),
        Part::Image(_) | Part::ToolResult { .. } => {}
    }
}

/// One step of a streamed answer. A stream is `Start`, then any mix of text and tool-call
/// events, then `Finish`, then (when the provider reports it) `Usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A new tool call. `index` counts tool calls within this answer, from 0.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    /// A new Anthropic thinking block begins.
    ThinkingStart,
    /// More text of the open thinking block.
    ThinkingDelta(String),
    /// The signature of the open thinking block.
    SignatureDelta(String),
    /// A whole piece of reasoning state (redacted thinking, a Gemini thought or
    /// signature).
    Reasoning(Reasoning),
    /// Details of the answering system; may come more than once (the last wins).
    Details(AnswerDetails),
    Finish(FinishReason),
    /// Usage so far. Providers that report it as they go (Gemini) send it more than
    /// once; the last one is the answer's, and a stream cut short keeps the last seen.
    Usage(Usage),
}

/// Folds stream events into a whole response: what the gateway records for a stream
/// and how non-streaming clients can be served from a streaming upstream. Parts keep
/// the order they arrived in (reasoning, text, tool calls interleaved as the model
/// produced them).
#[derive(Debug, Default, Clone)]
pub struct StreamAccumulator {
    id: String,
    model: String,
    parts: Vec<Part>,
    /// Position in `parts` of each tool call index.
    call_at: Vec<usize>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    details: AnswerDetails,
}

impl StreamAccumulator {
    pub fn push(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            StreamEvent::Text(t) => match self.parts.last_mut() {
                Some(Part::Text(s)) => s.push_str(t),
                _ => self.parts.push(Part::Text(t.clone())),
            },
            StreamEvent::ToolCallStart { index, id, name } => {
                let i = *index as usize;
                if i > 4096 {
                    return;
                }
                if self.call_at.len() <= i {
                    self.call_at.resize(i + 1, usize::MAX);
                }
                let call = ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                match self.parts.get_mut(self.call_at[i]) {
                    Some(Part::ToolCall(c)) => *c = call,
                    _ => {
                        self.call_at[i] = self.parts.len();
                        self.parts.push(Part::ToolCall(call));
                    }
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                let at = self.call_at.get(*index as usize).copied();
                if let Some(Part::ToolCall(c)) = at.and_then(|a| self.parts.get_mut(a)) {
                    c.arguments.push_str(arguments);
                }
            }
            StreamEvent::ThinkingStart => self.parts.push(Part::Reasoning(Reasoning::Thinking {
                text: String::new(),
                signature: String::new(),
            })),
            StreamEvent::ThinkingDelta(t) => {
                if let Some(Part::Reasoning(Reasoning::Thinking { text, .. })) =
                    self.parts.last_mut()
                {
                    text.push_str(t);
                }
            }
            StreamEvent::SignatureDelta(s) => {
                if let Some(Part::Reasoning(Reasoning::Thinking { signature, .. })) =
                    self.parts.last_mut()
                {
                    signature.push_str(s);
                }
            }
            StreamEvent::Reasoning(r) => self.parts.push(Part::Reasoning(r.clone())),
            StreamEvent::Details(d) => self.details.merge(d),
            StreamEvent::Finish(f) => self.finish = Some(f.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    /// Whether the stream ended with a finish reason (a whole answer).
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn details(&self) -> &AnswerDetails {
        &self.details
    }

    pub fn finish(self, created: i64) -> ChatResponse {
        let has_calls = !self.call_at.is_empty();
        ChatResponse {
            id: self.id,
            model: self.model,
            created,
            parts: self.parts,
            finish_reason: self.finish.unwrap_or(if has_calls {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }),
            usage: self.usage,
            details: self.details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part's size counts every string it carries, an inline image's data included
    /// (a cache weighs an answer by it).
    #[test]
    fn a_parts_size_counts_every_string_it_carries() {
        let parts = [
            Part::Text("hello".into()),
            Part::Image(ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "A".repeat(1000),
            }),
            Part::ToolCall(ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }),
            Part::ToolResult {
                call_id: "c1".into(),
                content: "ok".into(),
                is_error: false,
            },
        ];
        let sizes: Vec<usize> = parts.iter().map(Part::byte_len).collect();
        assert_eq!(sizes, [5, 1009, 5, 4]);
    }

    #[test]
    fn accumulator_keeps_reasoning_text_and_calls_in_their_order() {
        let mut acc = StreamAccumulator::default();
        for ev in [
            StreamEvent::ThinkingStart,
            StreamEvent::ThinkingDelta("pl".into()),
            StreamEvent::ThinkingDelta("an".into()),
            StreamEvent::SignatureDelta("sig".into()),
            StreamEvent::Text("Let me ".into()),
            StreamEvent::Text("check.".into()),
            StreamEvent::Reasoning(Reasoning::Signature {
                signature: "g".into(),
            }),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::Details(AnswerDetails {
                system_fingerprint: Some("fp".into()),
                service_tier: None,
            }),
            StreamEvent::Details(AnswerDetails {
                system_fingerprint: None,
                service_tier: Some("default".into()),
            }),
        ] {
            acc.push(&ev);
        }
        let r = acc.finish(0);
        assert_eq!(
            r.parts,
            vec![
                Part::Reasoning(Reasoning::Thinking {
                    text: "plan".into(),
                    signature: "sig".into()
                }),
                Part::Text("Let me check.".into()),
                Part::Reasoning(Reasoning::Signature {
                    signature: "g".into()
                }),
                Part::ToolCall(ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{}".into()
                }),
            ]
        );
        assert_eq!(r.details.system_fingerprint.as_deref(), Some("fp"));
        assert_eq!(r.details.service_tier.as_deref(), Some("default"));
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    }

    #[test]
    fn a_whole_answer_as_events_folds_back_into_itself() {
        let resp = ChatResponse {
            id: "r".into(),
            model: "m".into(),
            created: 0,
            parts: vec![
                Part::Reasoning(Reasoning::Thinking {
                    text: "t".into(),
                    signature: "s".into(),
                }),
                Part::Reasoning(Reasoning::Redacted { data: "d".into() }),
                Part::Text("hi".into()),
                Part::Reasoning(Reasoning::Signature {
                    signature: "g".into(),
                }),
                Part::ToolCall(ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }),
            ],
            finish_reason: FinishReason::ToolCalls,
            usage: Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                reasoning_tokens: 1,
                ..Usage::default()
            }),
            details: AnswerDetails {
                system_fingerprint: Some("fp".into()),
                service_tier: None,
            },
        };
        let mut acc = StreamAccumulator::default();
        for ev in resp.clone().into_events() {
            acc.push(&ev);
        }
        assert_eq!(acc.finish(0), resp);
    }

    #[test]
    fn efforts_and_budgets_map_both_ways() {
        let effort = |e: &str| ReasoningParams {
            effort: Some(e.into()),
            ..ReasoningParams::default()
        };
        assert_eq!(effort("medium").budget(), Some(4096));
        assert_eq!(effort("none").budget(), Some(0));
        let budget = |b: u32| ReasoningParams {
            budget_tokens: Some(b),
            ..ReasoningParams::default()
        };
        assert_eq!(budget(3000).effort(), Some("low"));
        assert_eq!(budget(32000).effort(), Some("high"));
        let off = ReasoningParams {
            disabled: true,
            ..ReasoningParams::default()
        };
        assert_eq!((off.budget(), off.effort()), (Some(0), Some("none")));
    }

    #[test]
    fn accumulator_rebuilds_text_and_calls() {
        let mut acc = StreamAccumulator::default();
        for ev in [
            StreamEvent::Start {
                id: "r1".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"a\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            }),
        ] {
            acc.push(&ev);
        }
        let r = acc.finish(0);
        assert_eq!(r.text(), "Hello");
        let calls: Vec<_> = r.tool_calls().collect();
        assert_eq!(calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.map(|u| u.total()), Some(5));
    }
}
