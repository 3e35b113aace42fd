//! Property tests: translating a conversation between formats keeps its content.

use llmop_wire::{anthropic, openai};
use proptest::prelude::*;
use serde_json::{json, Value};

fn text() -> impl Strategy<Value = String> {
    // Any printable text, including quotes, backslashes and non-ASCII.
    "[a-zA-Z0-9 ,.!?'\"\\\\éü漢😀]{1,40}"
}

fn args() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,8}",
        prop_oneof![
            text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from)
        ],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A conversation as an OpenAI client sends it: optional system prompt, then turns of
/// user text and assistant answers that are text or tool calls followed by their results.
fn conversation() -> impl Strategy<Value = Value> {
    let turn = prop_oneof![
        text().prop_map(|t| vec![json!({"role": "user", "content": t})]),
        (text(), text()).prop_map(|(u, a)| vec![
            json!({"role": "user", "content": u}),
            json!({"role": "assistant", "content": a}),
        ]),
        (text(), prop::collection::vec(("[a-z_]{1,10}", args()), 1..3)).prop_map(|(u, calls)| {
            let mut msgs = vec![json!({"role": "user", "content": u})];
            let tc: Vec<Value> = calls.iter().enumerate().map(|(i, (name, a))| json!({
                "id": format!("call_{i}"), "type": "function",
                "function": {"name": name, "arguments": a.to_string()}
            })).collect();
            msgs.push(json!({"role": "assistant", "content": null, "tool_calls": tc}));
            for (i, _) in calls.iter().enumerate() {
                msgs.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": format!("result {i}")}));
            }
            msgs
        }),
    ];
    (
        proptest::option::of(text()),
        prop::collection::vec(turn, 1..5),
        proptest::option::of(1u32..4000),
        proptest::option::of(0.0f64..2.0),
    )
        .prop_map(|(sys, turns, max_tokens, temperature)| {
            let mut messages = Vec::new();
            if let Some(s) = sys {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.extend(turns.into_iter().flatten());
            let mut body = json!({"model": "m", "messages": messages});
            if let Some(m) = max_tokens {
                body["max_tokens"] = json!(m);
            }
            if let Some(t) = temperature {
                body["temperature"] = json!(t);
            }
            body
        })
}

/// The content of an OpenAI message list with consecutive user turns merged (the
/// Anthropic format requires alternating turns, so a merge is the one change a trip
/// through it may make) and string content written as a text part.
fn normalized(messages: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages.as_array().unwrap() {
        let role = m["role"].as_str().unwrap().to_string();
        let mut parts = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => vec![],
        };
        for k in ["tool_calls", "tool_call_id"] {
            if let Some(v) = m.get(k) {
                parts.push(json!({k: v}));
            }
        }
        match out.last_mut() {
            Some((r, ps)) if *r == role && role == "user" => ps.extend(parts),
            _ => out.push((role, parts)),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn openai_to_anthropic_to_openai_keeps_the_conversation(body in conversation()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let req = openai::parse_request(&bytes).unwrap();
        let first: Value = serde_json::from_slice(&openai::build_request(&req, "m", false)).unwrap();

        // Through Anthropic's format and back.
        let a = anthropic::build_request(&req, "m", false);
        let via = anthropic::parse_request(&a).unwrap();
        let second: Value = serde_json::from_slice(&openai::build_request(&via, "m", false)).unwrap();

        prop_assert_eq!(normalized(&first["messages"]), normalized(&second["messages"]));
        prop_assert_eq!(&first["temperature"], &second["temperature"]);
        if body.get("max_tokens").is_some() {
            prop_assert_eq!(&first["max_tokens"], &second["max_tokens"]);
        }
    }

    #[test]
    fn responses_survive_both_encoders(t in text(), calls in prop::collection::vec(("[a-z]{1,6}", args()), 0..3), input in 0u64..100000, output in 0u64..100000, cached in 0u64..1000) {
        let mut parts = vec![llmop_core::Part::Text(t)];
        for (i, (name, a)) in calls.iter().enumerate() {
            parts.push(llmop_core::Part::ToolCall(llmop_core::ToolCall { id: format!("c{i}"), name: name.clone(), arguments: a.to_string() }));
        }
        let resp = llmop_core::ChatResponse {
            id: "x".into(), model: "m".into(), created: 1, parts,
            finish_reason: if calls.is_empty() { llmop_core::FinishReason::Stop } else { llmop_core::FinishReason::ToolCalls },
            usage: Some(llmop_core::Usage { input_tokens: input + cached, output_tokens: output, cached_input_tokens: cached, cache_write_tokens: 0 }),
        };
        let via_openai = openai::parse_response(&openai::encode_response(&resp)).unwrap();
        let via_anthropic = anthropic::parse_response(&anthropic::encode_response(&resp)).unwrap();
        for back in [via_openai, via_anthropic] {
            prop_assert_eq!(back.text(), resp.text());
            prop_assert_eq!(back.tool_calls().collect::<Vec<_>>(), resp.tool_calls().collect::<Vec<_>>());
            prop_assert_eq!(back.usage, resp.usage);
            prop_assert_eq!(&back.finish_reason, &resp.finish_reason);
        }
    }

    /// Parsers of outside input never panic, whatever the bytes.
    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = openai::parse_request(&bytes);
        let _ = anthropic::parse_request(&bytes);
        let _ = openai::parse_response(&bytes);
        let _ = anthropic::parse_response(&bytes);
        let _ = llmop_wire::gemini::parse_response(&bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let mut out = Vec::new();
            let _ = openai::StreamDecoder::new().decode(s, &mut out);
            let _ = anthropic::StreamDecoder::new().decode(s, &mut out);
            let _ = llmop_wire::gemini::StreamDecoder::new().decode(s, &mut out);
        }
    }
}
