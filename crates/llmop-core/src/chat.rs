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

/// Sampling and length parameters common to all providers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub parallel_tool_calls: Option<bool>,
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
        }
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
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
    Finish(FinishReason),
    Usage(Usage),
}

/// Folds stream events into a whole response: what the gateway records for a stream
/// and how non-streaming clients can be served from a streaming upstream.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: String,
    model: String,
    text: String,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl StreamAccumulator {
    pub fn push(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            StreamEvent::Text(t) => self.text.push_str(t),
            StreamEvent::ToolCallStart { index, id, name } => {
                let i = *index as usize;
                if self.calls.len() <= i {
                    self.calls.resize_with(i + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.calls[i].id.clone_from(id);
                self.calls[i].name.clone_from(name);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(c) = self.calls.get_mut(*index as usize) {
                    c.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish(f) => self.finish = Some(f.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn finish(self, created: i64) -> ChatResponse {
        let mut parts = Vec::with_capacity(1 + self.calls.len());
        if !self.text.is_empty() {
            parts.push(Part::Text(self.text));
        }
        let has_calls = !self.calls.is_empty();
        parts.extend(self.calls.into_iter().map(Part::ToolCall));
        ChatResponse {
            id: self.id,
            model: self.model,
            created,
            parts,
            finish_reason: self.finish.unwrap_or(if has_calls {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }),
            usage: self.usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
