//! Gemini `generateContent` / `streamGenerateContent?alt=sse` (Google AI Gemini API,
//! v1beta). Gemini is spoken only towards providers: llmop builds its requests and
//! reads its answers.
//!
//! Gemini's function calls may carry no id; llmop issues them ids of its own
//! ([`llmop_core::issue_call_id`], unique across conversations, never sent back to
//! Gemini) and, when a tool result comes back, finds the function's name through the id
//! of the call it answers (`functionResponse` is keyed by name, and by id when Gemini
//! gave one).
//!
//! Thought signatures (`thoughtSignature` on a part) are kept as
//! [`Reasoning::Signature`] parts just before the part that carried them, and put back
//! on that part when the conversation is sent again: Gemini 3 refuses a tool loop whose
//! function calls lost them.

use crate::{from_json, WireError};
use llmop_core::{
    is_issued_call_id, issue_call_id, AnswerDetails, ChatRequest, ChatResponse, FinishReason,
    ImageSource, Part, Reasoning, ResponseFormat, Role, StreamEvent, ToolCall, ToolChoice, Usage,
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

/// The path of Gemini's `countTokens` for `model`.
pub fn count_tokens_path(model: &str) -> String {
    format!("/v1beta/models/{model}:countTokens")
}

/// The `countTokens` body: the whole `GenerateContentRequest` the call would send
/// (system instruction and tools count too), under `generateContentRequest`.
pub fn build_count_tokens(req: &ChatRequest, model: &str) -> Vec<u8> {
    let inner: Value = serde_json::from_slice(&build_request(req, model)).unwrap_or_default();
    let mut inner = match inner {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    // Generation settings are not part of a count.
    inner.remove("generationConfig");
    inner.insert("model".into(), json!(format!("models/{model}")));
    serde_json::to_vec(&json!({ "generateContentRequest": inner })).unwrap_or_default()
}

/// Reads `{"totalTokens": n}`.
pub fn parse_count_tokens(body: &[u8]) -> Result<u64, WireError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Count {
        total_tokens: u64,
    }
    crate::from_json::<Count>(body).map(|c| c.total_tokens)
}

/// Builds a `GenerateContentRequest` for `model` (its family decides how a thinking
/// effort is said).
pub fn build_request(req: &ChatRequest, model: &str) -> Vec<u8> {
    let mut system_parts: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut names_by_call: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        if m.role == Role::System {
            // Each system text its own part: the client's boundaries are kept.
            for p in &m.parts {
                if let Part::Text(t) = p {
                    if !t.is_empty() {
                        system_parts.push(json!({"text": t}));
                    }
                }
            }
            continue;
        }
        let role = if m.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        let mut parts: Vec<Value> = Vec::with_capacity(m.parts.len());
        // A signature waiting for the part it belongs to.
        let mut signature: Option<&str> = None;
        for p in &m.parts {
            let before = parts.len();
            match p {
                Part::Reasoning(Reasoning::Signature { signature: s }) => {
                    if let Some(prev) = signature.replace(s) {
                        parts.push(json!({"text": "", "thoughtSignature": prev}));
                    }
                    continue;
                }
                Part::Reasoning(Reasoning::Thought { text, signature: s }) => {
                    let mut v = json!({"text": text, "thought": true});
                    if let Some(s) = s {
                        v["thoughtSignature"] = json!(s);
                    }
                    parts.push(v);
                    continue;
                }
                // Anthropic's thinking means nothing to Gemini.
                Part::Reasoning(_) => continue,
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
                    let mut call = json!({"name": c.name, "args": args});
                    // Gemini's own ids go back; the ones llmop issued never do.
                    if !is_issued_call_id(&c.id) {
                        call["id"] = json!(c.id);
                    }
                    parts.push(json!({"functionCall": call}));
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
                    let mut fr = json!({"name": name, "response": response});
                    if !is_issued_call_id(call_id) {
                        fr["id"] = json!(call_id);
                    }
                    parts.push(json!({"functionResponse": fr}));
                }
            }
            if parts.len() > before {
                if let Some(s) = signature.take() {
                    parts[before]["thoughtSignature"] = json!(s);
                }
            }
        }
        if let Some(s) = signature {
            parts.push(json!({"text": "", "thoughtSignature": s}));
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
    if let Some(v) = p.top_k {
        gen.insert("topK".into(), json!(v));
    }
    if let Some(v) = p.frequency_penalty {
        gen.insert("frequencyPenalty".into(), json!(v));
    }
    if let Some(v) = p.presence_penalty {
        gen.insert("presencePenalty".into(), json!(v));
    }
    if p.logprobs == Some(true) {
        gen.insert("responseLogprobs".into(), json!(true));
        if let Some(n) = p.top_logprobs {
            gen.insert("logprobs".into(), json!(n));
        }
    }
    // Thinking settings go to Gemini's thinking models only (2.5 and later); the others
    // refuse `thinkingConfig`.
    let thinks = model.starts_with("gemini-2.5") || model.starts_with("gemini-3");
    if let Some(rp) = p.reasoning.as_ref().filter(|_| thinks) {
        let mut tc = Map::new();
        // Gemini 3 takes a level; earlier thinking models a budget. A budget the client
        // gave (Anthropic's budget_tokens) goes as a budget either way.
        let gemini3 = model.starts_with("gemini-3");
        match (rp.budget_tokens, rp.effort()) {
            (Some(b), _) if !rp.disabled => {
                tc.insert("thinkingBudget".into(), json!(b));
            }
            (_, Some(e)) if gemini3 => {
                let level = match e {
                    "none" | "minimal" => "minimal",
                    "low" => "low",
                    "medium" => "medium",
                    _ => "high",
                };
                tc.insert("thinkingLevel".into(), json!(level));
            }
            _ => {
                if let Some(b) = rp.budget() {
                    tc.insert("thinkingBudget".into(), json!(b));
                }
            }
        }
        if let Some(i) = rp.include_thoughts {
            tc.insert("includeThoughts".into(), json!(i));
        }
        if !tc.is_empty() {
            gen.insert("thinkingConfig".into(), Value::Object(tc));
        }
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
                // (Gemini has no per-tool strict mode: declarations are always
                // schema-constrained.)
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
    #[serde(default)]
    thought_signature: Option<String>,
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

/// A Gemini error body (`{"error":{"code","message","status","details"}}`): also what an
/// error inside a stream looks like.
#[derive(Deserialize)]
struct InErrorBody {
    error: InError,
}

#[derive(Deserialize, Default)]
struct InError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
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
            reasoning_tokens: u.thoughts_token_count,
        }
    }
}

/// The finish of an answer. `Err` for a reason that means the answer failed
/// (`MALFORMED_FUNCTION_CALL`, `OTHER`, `UNEXPECTED_TOOL_CALL`, `TOO_MANY_TOOL_CALLS`,
/// `MISSING_THOUGHT_SIGNATURE`, `LANGUAGE`, `FINISH_REASON_UNSPECIFIED`, and any reason
/// added after this was written): never a clean stop.
fn finish_from(s: Option<&str>, has_calls: bool) -> Result<FinishReason, WireError> {
    Ok(match s {
        None | Some("STOP") if has_calls => FinishReason::ToolCalls,
        None | Some("STOP") => FinishReason::Stop,
        Some("MAX_TOKENS") => FinishReason::Length,
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => FinishReason::ContentFilter,
        Some(other) => return Err(WireError::failed_finish(other)),
    })
}

/// The parts of one candidate as chat-model parts. Calls without an id get one llmop
/// issues (`issue`).
fn candidate_parts(parts: Vec<InPart>, out: &mut Vec<Part>) -> usize {
    let mut calls = 0;
    for p in parts {
        if p.thought == Some(true) {
            out.push(Part::Reasoning(Reasoning::Thought {
                text: p.text.unwrap_or_default(),
                signature: p.thought_signature,
            }));
            continue;
        }
        if let Some(sig) = p.thought_signature {
            out.push(Part::Reasoning(Reasoning::Signature { signature: sig }));
        }
        if let Some(t) = p.text.filter(|t| !t.is_empty()) {
            out.push(Part::Text(t));
        }
        if let Some(fc) = p.function_call {
            let args = call_args(&fc);
            out.push(Part::ToolCall(ToolCall {
                id: fc
                    .id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(issue_call_id),
                name: fc.name,
                arguments: args,
            }));
            calls += 1;
        }
    }
    calls
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
        n_calls = candidate_parts(c.content.map(|c| c.parts).unwrap_or_default(), &mut parts);
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
        finish_reason: finish_from(finish.as_deref(), n_calls > 0)?,
        usage: r.usage_metadata.map(Usage::from),
        details: AnswerDetails::default(),
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
        if let Some(e) = stream_error(data) {
            return Err(e);
        }
        let r: InResponse = crate::from_json_str(data)?;
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: r.response_id.clone().unwrap_or_default(),
                model: r.model_version.clone().unwrap_or_default(),
            });
        }
        // Usage is cumulative and comes with every chunk: passed on as it comes, so a
        // stream cut short keeps what was already counted.
        if let Some(u) = r.usage_metadata {
            let u: Usage = u.into();
            if self.usage != Some(u) {
                self.usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
        if let Some(c) = r.candidates.into_iter().next() {
            let mut parts = Vec::new();
            candidate_parts(c.content.map(|c| c.parts).unwrap_or_default(), &mut parts);
            for p in parts {
                llmop_core::push_part_events(p, &mut self.calls, out);
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

    /// Emits the final `Finish` once the stream has ended; `Err` when the finish
    /// reason means the answer failed.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        out.push(StreamEvent::Finish(finish_from(
            self.finish.as_deref(),
            self.calls > 0,
        )?));
        Ok(())
    }
}

/// An error event inside a stream (`{"error":{…}}`), with its status and message kept.
fn stream_error(data: &str) -> Option<WireError> {
    if !data.contains("\"error\"") {
        return None;
    }
    let e = serde_json::from_str::<InErrorBody>(data).ok()?.error;
    let status = e.status.unwrap_or_else(|| "ERROR".into());
    let msg = e.message.unwrap_or_default();
    Some(WireError::new(
        match e.code {
            Some(code) => format!("{status} ({code}): {msg}"),
            None => format!("{status}: {msg}"),
        },
        None,
    ))
}

/// What a Gemini error body says beyond its message.
#[derive(Debug, Default, PartialEq)]
pub struct ErrorInfo {
    pub message: Option<String>,
    /// `RetryInfo.retryDelay` (Gemini sends no `Retry-After` header).
    pub retry_delay: Option<std::time::Duration>,
    /// `ErrorInfo.reason` (`API_KEY_INVALID`, …).
    pub reason: Option<String>,
    /// The RPC status (`RESOURCE_EXHAUSTED`, …).
    pub status: Option<String>,
}

/// Reads a Gemini error body (`{"error":{"code","message","status","details"}}`).
pub fn error_info(body: &[u8]) -> ErrorInfo {
    let Ok(b) = serde_json::from_slice::<InErrorBody>(body) else {
        return ErrorInfo::default();
    };
    let e = b.error;
    let mut info = ErrorInfo {
        message: e.message,
        status: e.status,
        ..ErrorInfo::default()
    };
    for d in &e.details {
        let kind = d.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("google.rpc.RetryInfo") {
            info.retry_delay = d
                .get("retryDelay")
                .and_then(Value::as_str)
                .and_then(parse_duration);
        } else if kind.ends_with("google.rpc.ErrorInfo") {
            info.reason = d.get("reason").and_then(Value::as_str).map(str::to_string);
        }
    }
    info
}

/// A protobuf `Duration` in its JSON form (`"37s"`, `"1.5s"`), at most a day.
fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let secs: f64 = s.strip_suffix('s')?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| std::time::Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Extracts the message of a Gemini error body.
pub fn parse_error_message(body: &[u8]) -> Option<String> {
    error_info(body)
        .message
        .or_else(|| crate::openai::parse_error_message(body))
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
        let b: Value = serde_json::from_slice(&build_request(&r, "gemini-2.0-flash")).unwrap();
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
