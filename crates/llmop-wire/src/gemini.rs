//! Gemini `generateContent` / `streamGenerateContent?alt=sse` (Google AI Gemini API,
//! v1beta). Gemini is spoken only towards providers: llmop builds its requests and
//! reads its answers.
//!
//! Gemini's function calls may carry no id; llmop gives them `call_<n>` ids and, when a
//! tool result comes back, finds the function's name through the id of the call it
//! answers (Gemini's `functionResponse` is keyed by name).

use crate::{from_json, WireError};
use llmop_core::{
    ChatRequest, ChatResponse, FinishReason, ImageSource, Part, ResponseFormat, Role, StreamEvent,
    ToolCall, ToolChoice, Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Path of the call for `model`, below the provider's base URL.
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    }
}

/// Builds a `GenerateContentRequest`.
pub fn build_request(req: &ChatRequest) -> Vec<u8> {
    let mut system_parts: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut names_by_call: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        if m.role == Role::System {
            let t = m.joined_text();
            if !t.is_empty() {
                system_parts.push(json!({"text": t}));
            }
            continue;
        }
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let mut parts = Vec::with_capacity(m.parts.len());
        for p in &m.parts {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => parts.push(json!({"text": t})),
                Part::Image(ImageSource::Base64 { media_type, data }) => {
                    parts.push(json!({"inlineData": {"mimeType": media_type, "data": data}}))
                }
                Part::Image(ImageSource::Url(u)) => parts.push(json!({"fileData": {"fileUri": u}})),
                Part::ToolCall(c) => {
                    names_by_call.insert(&c.id, &c.name);
                    let args: Value = serde_json::from_str(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    parts.push(json!({"functionCall": {"name": c.name, "args": args}}));
                }
                Part::ToolResult {
                    call_id, content, ..
                } => {
                    let name = names_by_call
                        .get(call_id.as_str())
                        .copied()
                        .unwrap_or(call_id);
                    // `response` must be an object; a JSON object result is sent as is.
                    let response = serde_json::from_str::<Value>(content)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({"result": content}));
                    parts.push(json!({"functionResponse": {"name": name, "response": response}}));
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((r, ps)) if *r == role => ps.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        ),
    );
    if !system_parts.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system_parts}));
    }
    let mut gen = Map::new();
    let p = &req.params;
    if let Some(v) = p.max_tokens {
        gen.insert("maxOutputTokens".into(), json!(v));
    }
    if let Some(v) = p.temperature {
        gen.insert("temperature".into(), json!(v));
    }
    if let Some(v) = p.top_p {
        gen.insert("topP".into(), json!(v));
    }
    if !p.stop.is_empty() {
        gen.insert("stopSequences".into(), json!(p.stop));
    }
    if let Some(v) = p.seed {
        gen.insert("seed".into(), json!(v));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            gen.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            gen.insert("responseMimeType".into(), json!("application/json"));
            gen.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => {}
    }
    if !gen.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(tc) = &req.tool_choice {
            let cfg = match tc {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            body.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
        }
    }
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InResponse {
    #[serde(default)]
    candidates: Vec<InCandidate>,
    #[serde(default)]
    usage_metadata: Option<InUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<InPromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InCandidate {
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InContent {
    #[serde(default)]
    parts: Vec<InPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<InFunctionCall>,
}

#[derive(Deserialize)]
struct InFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct InUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl From<InUsage> for Usage {
    /// `promptTokenCount` already includes cached content. Thinking tokens are billed as
    /// output, so they count as output here.
    fn from(u: InUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_token_count,
            output_tokens: u.candidates_token_count + u.thoughts_token_count,
            cached_input_tokens: u.cached_content_token_count,
            cache_write_tokens: 0,
        }
    }
}

fn finish_from(s: Option<&str>, has_calls: bool) -> FinishReason {
    match s {
        Some("MAX_TOKENS") => FinishReason::Length,
        Some("SAFETY")
        | Some("RECITATION")
        | Some("BLOCKLIST")
        | Some("PROHIBITED_CONTENT")
        | Some("SPII")
        | Some("IMAGE_SAFETY") => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn call_args(c: &InFunctionCall) -> String {
    c.args
        .as_ref()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "{}".to_string())
}

/// Parses a non-streaming `GenerateContentResponse`.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, WireError> {
    let r: InResponse = from_json(body)?;
    let mut parts = Vec::new();
    let mut finish = None;
    let mut n_calls = 0;
    if let Some(c) = r.candidates.into_iter().next() {
        finish = c.finish_reason;
        for p in c.content.map(|c| c.parts).unwrap_or_default() {
            if p.thought == Some(true) {
                continue;
            }
            if let Some(t) = p.text {
                parts.push(Part::Text(t));
            }
            if let Some(fc) = p.function_call {
                let args = call_args(&fc);
                parts.push(Part::ToolCall(ToolCall {
                    id: fc.id.unwrap_or_else(|| format!("call_{n_calls}")),
                    name: fc.name,
                    arguments: args,
                }));
                n_calls += 1;
            }
        }
    } else if r
        .prompt_feedback
        .as_ref()
        .is_some_and(|f| f.block_reason.is_some())
    {
        // The prompt itself was blocked: no candidate at all.
        finish = Some("PROHIBITED_CONTENT".into());
    }
    Ok(ChatResponse {
        id: r.response_id.unwrap_or_default(),
        model: r.model_version.unwrap_or_default(),
        created: crate::unix_now(),
        parts,
        finish_reason: finish_from(finish.as_deref(), n_calls > 0),
        usage: r.usage_metadata.map(Usage::from),
    })
}

/// Turns the `data` payloads of `streamGenerateContent?alt=sse` into events. Each
/// payload is a whole `GenerateContentResponse` holding the next piece of the answer;
/// usage is cumulative and reported in [`StreamDecoder::finish`].
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    calls: u32,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn decode(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if data.trim().is_empty() {
            return Ok(());
        }
        let r: InResponse = from_json(data.as_bytes())?;
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: r.response_id.clone().unwrap_or_default(),
                model: r.model_version.clone().unwrap_or_default(),
            });
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u.into());
        }
        if let Some(c) = r.candidates.into_iter().next() {
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                if p.thought == Some(true) {
                    continue;
                }
                if let Some(t) = p.text {
                    if !t.is_empty() {
                        out.push(StreamEvent::Text(t));
                    }
                }
                if let Some(fc) = p.function_call {
                    let index = self.calls;
                    self.calls += 1;
                    let args = call_args(&fc);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: fc.id.unwrap_or_else(|| format!("call_{index}")),
                        name: fc.name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: args,
                    });
                }
            }
            if c.finish_reason.is_some() {
                self.finish = c.finish_reason;
            }
        } else if let Some(reason) = r.prompt_feedback.and_then(|f| f.block_reason) {
            self.finish = Some(if reason == "SAFETY" {
                reason
            } else {
                "PROHIBITED_CONTENT".into()
            });
        }
        Ok(())
    }

    /// Whether the stream has said how it finished.
    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Emits the final `Finish` and `Usage` once the stream has ended.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Finish(finish_from(
            self.finish.as_deref(),
            self.calls > 0,
        )));
        if let Some(u) = self.usage.take() {
            out.push(StreamEvent::Usage(u));
        }
    }
}

/// Extracts the message of a Gemini error body (`{"error":{"code","message","status"}}`).
pub fn parse_error_message(body: &[u8]) -> Option<String> {
    crate::openai::parse_error_message(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::WireFormat;

    #[test]
    fn builds_contents_with_function_round_trip() {
        let r = crate::openai::parse_request(br#"{"model":"g","messages":[
          {"role":"system","content":"sys"},
          {"role":"user","content":"weather in Paris?"},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
          {"role":"tool","tool_call_id":"call_0","content":"sunny"}],
          "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],
          "tool_choice":"required","max_tokens":50,
          "response_format":{"type":"json_schema","json_schema":{"name":"w","schema":{"type":"object"}}}}"#).unwrap();
        assert_eq!(r.origin, WireFormat::OpenAi);
        let b: Value = serde_json::from_slice(&build_request(&r)).unwrap();
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "sys");
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(
            b["contents"][1]["parts"][0]["functionCall"]["args"]["city"],
            "Paris"
        );
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"]["response"]["result"],
            "sunny"
        );
        assert_eq!(b["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert_eq!(b["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(
            b["generationConfig"]["responseMimeType"],
            "application/json"
        );
    }

    #[test]
    fn parses_usage_and_calls() {
        let r = parse_response(br#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{"a":1}}}]},"finishReason":"STOP","index":0}],
          "usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":5,"totalTokenCount":25,"cachedContentTokenCount":8},"modelVersion":"gemini-2.0-flash","responseId":"abc"}"#).unwrap();
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (20, 5, 8)
        );
        assert_eq!(r.tool_calls().next().unwrap().arguments, r#"{"a":1}"#);
    }
}
