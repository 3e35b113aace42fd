//! A recorded call as one OpenTelemetry span, following the GenAI semantic
//! conventions. The conventions are still moving: every attribute llmop sets is in
//! [`ATTRIBUTES`], with the conventions' version in [`SEMCONV_VERSION`]; a test checks
//! that table against what the spans carry and against docs/telemetry.md.

use llmop_core::context::TraceParent;
use llmop_store::Record;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use serde_json::{json, Value};

/// The GenAI semantic conventions these spans follow.
pub const SEMCONV_VERSION: &str = "1.37.0";
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

/// Every attribute a span may carry, and where its value comes from.
pub const ATTRIBUTES: &[(&str, &str)] = &[
    (
        "gen_ai.operation.name",
        "`chat` (chat completions, messages, feature calls)",
    ),
    (
        "gen_ai.provider.name",
        "the serving target's provider kind: `openai`, `anthropic`, `gcp.gemini`, `llmop.mock`",
    ),
    (
        "gen_ai.request.model",
        "the model, route or `feature/<name>` the client asked for",
    ),
    (
        "gen_ai.response.model",
        "the model the provider named in its answer, else the target's model",
    ),
    (
        "gen_ai.response.id",
        "the provider's answer id (`chatcmpl-…`, `msg_…`)",
    ),
    ("gen_ai.request.temperature", "the request's `temperature`"),
    ("gen_ai.request.top_p", "the request's `top_p`"),
    (
        "gen_ai.request.max_tokens",
        "the request's `max_tokens` / `max_completion_tokens`",
    ),
    (
        "gen_ai.usage.input_tokens",
        "input tokens, as the provider counted them",
    ),
    (
        "gen_ai.usage.output_tokens",
        "output tokens (reasoning included)",
    ),
    (
        "gen_ai.usage.cache_read.input_tokens",
        "input tokens read from the provider's prompt cache",
    ),
    ("gen_ai.conversation.id", "the session (`x-llmop-session`)"),
    ("error.type", "llmop's error code, when the call failed"),
    (
        "gen_ai.input.messages",
        "the messages sent (only with `content = true`)",
    ),
    (
        "gen_ai.output.messages",
        "the answer (only with `content = true`)",
    ),
    (
        "llmop.request_id",
        "llmop's request id (find the call: `llmop requests <id>`, `/ui/requests/<id>`)",
    ),
    (
        "llmop.endpoint",
        "the endpoint called (`/v1/chat/completions`, `/v1/messages`, …)",
    ),
    ("llmop.route", "the route that served the call"),
    ("llmop.feature", "the feature"),
    (
        "llmop.feature.version",
        "the feature version that served the call",
    ),
    ("llmop.feature.arm", "the split arm"),
    ("llmop.env", "the environment (`x-llmop-env`)"),
    ("llmop.user", "the end user (`x-llmop-user`)"),
    ("llmop.key_id", "the client key's id (never the key)"),
    ("llmop.http.status_code", "the HTTP status the client got"),
    ("llmop.cost_usd", "the call's cost in USD, when priced"),
    (
        "llmop.degraded",
        "answered by the route's fallback response",
    ),
    ("llmop.stream", "streamed"),
    (
        "llmop.attempts",
        "attempts made (retries and fallbacks included)",
    ),
    (
        "llmop.time_to_first_chunk_ms",
        "time to the first streamed chunk",
    ),
    (
        "llmop.usage.reasoning_tokens",
        "the part of the output tokens spent reasoning",
    ),
    ("llmop.parse_status", "the feature's output parse status"),
    ("llmop.shadow_of", "for a shadow call: the call it copied"),
    ("llmop.replay_of", "for a replay: the call it replayed"),
    (
        "llmop.cache",
        "what caching did: hit, miss, bypass, replay (an idempotent retry)",
    ),
    (
        "llmop.cache.saved_usd",
        "for a served call: what its answer cost when it was made",
    ),
];

/// The `gen_ai.provider.name` of a provider kind.
pub fn provider_name(kind: &str) -> &'static str {
    match kind {
        "openai" => "openai",
        "anthropic" => "anthropic",
        "gemini" => "gcp.gemini",
        "mock" => "llmop.mock",
        _ => "llmop.unknown",
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}

/// The text of a message's content (a string, or the text parts of a list).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(t) => Some(t.clone()),
        Value::Array(parts) => {
            let t: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!t.is_empty()).then(|| t.join("\n"))
        }
        _ => None,
    }
}

/// The recorded (OpenAI-shaped) messages in the conventions' shape:
/// `[{role, parts: [{type: text|tool_call|tool_call_response, …}]}]`.
fn input_messages(messages: &Value) -> Value {
    let Some(list) = messages.as_array() else {
        return json!([]);
    };
    let out: Vec<Value> = list
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let mut parts = Vec::new();
            if role == "tool" {
                parts.push(json!({
                    "type": "tool_call_response",
                    "id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "response": m.get("content").and_then(text_of).unwrap_or_default(),
                }));
            } else if let Some(t) = m.get("content").and_then(text_of) {
                parts.push(json!({"type": "text", "content": t}));
            }
            for c in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.push(json!({
                    "type": "tool_call",
                    "id": c.get("id").cloned().unwrap_or(Value::Null),
                    "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                    "arguments": c.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
                }));
            }
            json!({"role": role, "parts": parts})
        })
        .collect();
    Value::Array(out)
}

fn output_messages(r: &Record) -> Value {
    let mut parts = Vec::new();
    if let Some(t) = &r.output_text {
        parts.push(json!({"type": "text", "content": t}));
    }
    for c in r.output_tool_calls.as_array().into_iter().flatten() {
        parts.push(json!({
            "type": "tool_call",
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "name": c.get("name").cloned().unwrap_or(Value::Null),
            "arguments": c.get("arguments").cloned().unwrap_or(Value::Null),
        }));
    }
    json!([{"role": "assistant", "parts": parts}])
}

/// The span of one recorded call. `provider_kind` is the serving provider's kind
/// (`openai`, …); `ids` the trace id, span id and parent span id it gets.
pub fn span_of(
    r: &Record,
    provider_kind: Option<&str>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<&TraceParent>,
    content: bool,
) -> Span {
    let asked = r
        .request_params
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| r.feature.as_ref().map(|f| format!("feature/{f}")))
        .or_else(|| r.route.clone())
        .or_else(|| r.model.clone());
    let op = operation(r);
    let mut a = vec![s("gen_ai.operation.name", op)];
    if let Some(k) = provider_kind {
        a.push(s("gen_ai.provider.name", provider_name(k)));
    }
    if let Some(m) = &asked {
        a.push(s("gen_ai.request.model", m.clone()));
    }
    if let Some(m) = r.upstream_model.as_ref().or(r.model.as_ref()) {
        a.push(s("gen_ai.response.model", m.clone()));
    }
    if let Some(id) = &r.upstream_id {
        a.push(s("gen_ai.response.id", id.clone()));
    }
    let p = &r.request_params;
    if let Some(t) = p.get("temperature").and_then(Value::as_f64) {
        a.push(f("gen_ai.request.temperature", t));
    }
    if let Some(t) = p.get("top_p").and_then(Value::as_f64) {
        a.push(f("gen_ai.request.top_p", t));
    }
    if let Some(t) = p
        .get("max_tokens")
        .or_else(|| p.get("max_completion_tokens"))
        .and_then(Value::as_i64)
    {
        a.push(i("gen_ai.request.max_tokens", t));
    }
    for (k, v) in [
        ("gen_ai.usage.input_tokens", r.input_tokens),
        ("gen_ai.usage.output_tokens", r.output_tokens),
        ("gen_ai.usage.cache_read.input_tokens", r.cached_tokens),
        ("llmop.usage.reasoning_tokens", r.reasoning_tokens),
        ("llmop.time_to_first_chunk_ms", r.ttft_ms),
        ("llmop.feature.version", r.feature_version),
    ] {
        if let Some(v) = v {
            a.push(i(k, v));
        }
    }
    for (k, v) in [
        ("gen_ai.conversation.id", &r.session),
        ("error.type", &r.error_code),
        ("llmop.route", &r.route),
        ("llmop.feature", &r.feature),
        ("llmop.feature.arm", &r.arm),
        ("llmop.env", &r.env),
        ("llmop.user", &r.user),
        ("llmop.key_id", &r.key_id),
        ("llmop.parse_status", &r.parse_status),
        ("llmop.shadow_of", &r.shadow_of),
        ("llmop.replay_of", &r.replay_of),
        ("llmop.cache", &r.cache),
    ] {
        if let Some(v) = v {
            a.push(s(k, v.clone()));
        }
    }
    let failed = r.status >= 400 || r.error_code.is_some();
    if failed && r.error_code.is_none() {
        a.push(s("error.type", r.status.to_string()));
    }
    a.push(s("llmop.request_id", r.request_id.clone()));
    a.push(s("llmop.endpoint", r.endpoint.clone()));
    a.push(i("llmop.http.status_code", i64::from(r.status)));
    if let Some(c) = r.cost_usd {
        a.push(f("llmop.cost_usd", c));
    }
    if let Some(v) = r.saved_usd {
        a.push(f("llmop.cache.saved_usd", v));
    }
    a.push(b("llmop.degraded", r.degraded));
    a.push(b("llmop.stream", r.stream));
    a.push(i("llmop.attempts", r.attempts.len() as i64));
    if content {
        a.push(s(
            "gen_ai.input.messages",
            input_messages(&r.input_messages).to_string(),
        ));
        a.push(s("gen_ai.output.messages", output_messages(r).to_string()));
    }
    let start = u64::try_from(r.created_at_ms).unwrap_or(0) * 1_000_000;
    let end = start + u64::try_from(r.latency_ms).unwrap_or(0) * 1_000_000;
    let name = match asked.as_deref().or(r.model.as_deref()) {
        Some(m) => format!("{op} {m}"),
        None => op.to_string(),
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: parent.map(|p| p.parent_id.to_vec()).unwrap_or_default(),
        // Sampled; whether the parent is remote is known (0x100), and it is when the
        // client sent one (0x200).
        flags: 1 | 0x100 | if parent.is_some() { 0x200 } else { 0 },
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: a,
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(if failed {
            Status {
                message: r
                    .error_code
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", r.status)),
                code: StatusCode::Error as i32,
            }
        } else {
            Status {
                message: String::new(),
                code: StatusCode::Unset as i32,
            }
        }),
    }
}

/// The GenAI operation a record is: `embeddings` for `/v1/embeddings`, else `chat`.
pub fn operation(r: &Record) -> &'static str {
    if r.endpoint == "/v1/embeddings" {
        "embeddings"
    } else {
        "chat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_store::Attempt;

    fn full() -> Record {
        let mut r = Record::new("req-1", 1_800_000_000_000, "/v1/chat/completions");
        r.env = Some("prod".into());
        r.key_id = Some("key_ab12".into());
        r.user = Some("ada".into());
        r.session = Some("sess-1".into());
        r.feature = Some("summarize".into());
        r.feature_version = Some(3);
        r.arm = Some("3".into());
        r.route = Some("smart".into());
        r.provider = Some("oa".into());
        r.model = Some("gpt-4o".into());
        r.upstream_model = Some("gpt-4o-2024-08-06".into());
        r.upstream_id = Some("chatcmpl-9".into());
        r.status = 502;
        r.error_code = Some("upstream_error".into());
        r.parse_status = Some("ok".into());
        r.input_tokens = Some(120);
        r.output_tokens = Some(30);
        r.cached_tokens = Some(100);
        r.reasoning_tokens = Some(10);
        r.cost_usd = Some(0.00123);
        r.latency_ms = 812;
        r.ttft_ms = Some(95);
        r.stream = true;
        r.shadow_of = Some("p-1".into());
        r.replay_of = Some("o-1".into());
        r.cache = Some("hit".into());
        r.saved_usd = Some(0.002);
        r.request_params =
            json!({"model": "smart", "temperature": 0.2, "top_p": 0.9, "max_tokens": 64});
        r.input_messages = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ]);
        r.output_text = Some("hello".into());
        r.attempts = vec![Attempt {
            provider: "oa".into(),
            model: "gpt-4o".into(),
            error: Some("upstream_error".into()),
            upstream_status: Some(502),
            latency_ms: 800,
            retry_reason: None,
        }];
        r
    }

    fn attr<'a>(span: &'a Span, k: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn a_full_record_sets_every_attribute_of_the_table_and_no_other() {
        let span = span_of(&full(), Some("openai"), [1; 16], [2; 8], None, true);
        let keys: Vec<&str> = span.attributes.iter().map(|a| a.key.as_str()).collect();
        for (k, _) in ATTRIBUTES {
            assert!(keys.contains(k), "{k} is in the table but not set");
        }
        for k in &keys {
            assert!(
                ATTRIBUTES.iter().any(|(a, _)| a == k),
                "{k} is set but not in the table"
            );
        }
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "no attribute twice");
        assert_eq!(span.name, "chat smart");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            812_000_000
        );
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        assert_eq!(
            attr(&span, "gen_ai.provider.name"),
            Some(&any_value::Value::StringValue("openai".into()))
        );
        let Some(any_value::Value::StringValue(input)) = attr(&span, "gen_ai.input.messages")
        else {
            panic!("no input messages")
        };
        let input: Value = serde_json::from_str(input).unwrap_or_default();
        assert_eq!(input[1]["parts"][0]["type"], "tool_call");
        assert_eq!(input[2]["parts"][0]["type"], "tool_call_response");
    }

    #[test]
    fn content_only_when_asked_and_the_parent_is_kept() {
        let parent = TraceParent {
            trace_id: [7; 16],
            parent_id: [9; 8],
            sampled: true,
        };
        let span = span_of(&full(), None, [7; 16], [2; 8], Some(&parent), false);
        assert!(attr(&span, "gen_ai.input.messages").is_none());
        assert!(attr(&span, "gen_ai.output.messages").is_none());
        assert_eq!(span.parent_span_id, vec![9; 8]);
    }

    #[test]
    fn the_docs_list_every_attribute() {
        let doc = include_str!("../../../docs/telemetry.md");
        for (k, _) in ATTRIBUTES {
            assert!(
                doc.contains(&format!("`{k}`")),
                "docs/telemetry.md does not list {k}"
            );
        }
        assert!(doc.contains(SEMCONV_VERSION));
    }
}
