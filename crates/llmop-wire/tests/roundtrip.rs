//! Property tests: translating a conversation between formats keeps its content.

use llmop_wire::{anthropic, openai, responses};
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

/// The same conversation as a Responses client sends it: the system prompt as
/// `instructions`, each message or tool call or tool result its own input item.
fn as_responses(body: &Value) -> Value {
    let mut items = Vec::new();
    let mut instructions = None;
    for m in body["messages"].as_array().unwrap() {
        match m["role"].as_str().unwrap() {
            "system" => instructions = Some(m["content"].clone()),
            "user" => items.push(json!({"role": "user", "content": [{"type": "input_text", "text": m["content"]}]})),
            "assistant" => {
                if let Some(t) = m["content"].as_str() {
                    items.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t}]}));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    items.push(json!({"type": "function_call", "call_id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}));
                }
            }
            _ => items.push(json!({"type": "function_call_output", "call_id": m["tool_call_id"], "output": m["content"]})),
        }
    }
    let mut r = json!({"model": "m", "input": items});
    if let Some(i) = instructions {
        r["instructions"] = i;
    }
    for k in ["max_tokens", "temperature"] {
        if let Some(v) = body.get(k) {
            r[if k == "max_tokens" {
                "max_output_tokens"
            } else {
                k
            }] = v.clone();
        }
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A Responses conversation means the same as its Chat Completions twin, directly
    /// and through Anthropic's format.
    #[test]
    fn responses_to_chat_and_anthropic_keep_the_conversation(body in conversation()) {
        let req = openai::parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let first: Value = serde_json::from_slice(&openai::build_request(&req, "m", false)).unwrap();
        let (r, _) = responses::parse_request(&serde_json::to_vec(&as_responses(&body)).unwrap()).unwrap();
        let direct: Value = serde_json::from_slice(&openai::build_request(&r, "m", false)).unwrap();
        prop_assert_eq!(normalized(&first["messages"]), normalized(&direct["messages"]));
        prop_assert_eq!(&first["temperature"], &direct["temperature"]);
        let a = anthropic::build_request(&r, "m", false).unwrap();
        let via = anthropic::parse_request(&a).unwrap();
        let back: Value = serde_json::from_slice(&openai::build_request(&via, "m", false)).unwrap();
        prop_assert_eq!(normalized(&first["messages"]), normalized(&back["messages"]));
    }

    /// A response's output items, sent back as input, are the answer's turn again.
    #[test]
    fn responses_output_items_come_back_as_the_turn(t in text(), calls in prop::collection::vec(("[a-z]{1,6}", args()), 0..3)) {
        let mut parts = vec![llmop_core::Part::Text(t)];
        for (i, (name, a)) in calls.iter().enumerate() {
            parts.push(llmop_core::Part::ToolCall(llmop_core::ToolCall { id: format!("call_{i}"), name: name.clone(), arguments: a.to_string() }));
        }
        let resp = llmop_core::ChatResponse {
            id: "x".into(), model: "m".into(), created: 1, parts: parts.clone(),
            finish_reason: llmop_core::FinishReason::Stop, usage: None, details: Default::default(),
        };
        let out: Value = serde_json::from_slice(&responses::encode_response(&resp, "resp_x", &Default::default())).unwrap();
        let mut input = vec![json!({"role": "user", "content": "q"})];
        input.extend(out["output"].as_array().unwrap().iter().cloned());
        let (req, _) = responses::parse_request(&serde_json::to_vec(&json!({"model": "m", "input": input})).unwrap()).unwrap();
        prop_assert_eq!(req.messages.len(), 2);
        prop_assert_eq!(&req.messages[1].parts, &parts);
    }

    #[test]
    fn openai_to_anthropic_to_openai_keeps_the_conversation(body in conversation()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let req = openai::parse_request(&bytes).unwrap();
        let first: Value = serde_json::from_slice(&openai::build_request(&req, "m", false)).unwrap();

        // Through Anthropic's format and back.
        let a = anthropic::build_request(&req, "m", false).unwrap();
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
            usage: Some(llmop_core::Usage { input_tokens: input + cached, output_tokens: output, cached_input_tokens: cached, cache_write_tokens: 0, reasoning_tokens: 0 }),
            details: Default::default(),
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

    /// Anthropic to Anthropic: thinking and redacted thinking blocks come back out
    /// exactly as they came in, in their place at the start of the assistant turn.
    #[test]
    fn anthropic_reasoning_survives_same_family(
        thoughts in prop::collection::vec((text(), "[A-Za-z0-9+/=]{8,64}", any::<bool>()), 1..3),
        answer in proptest::option::of(text()),
        name in "[a-z_]{1,10}",
        a in args(),
    ) {
        let mut blocks: Vec<Value> = thoughts.iter().map(|(t, sig, redacted)| if *redacted {
            json!({"type": "redacted_thinking", "data": sig})
        } else {
            json!({"type": "thinking", "thinking": t, "signature": sig})
        }).collect();
        if let Some(t) = &answer {
            blocks.push(json!({"type": "text", "text": t}));
        }
        blocks.push(json!({"type": "tool_use", "id": "toolu_01", "name": name, "input": a}));
        let body = json!({"model": "claude", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": blocks.clone()},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "r"}]},
            ]});
        let req = anthropic::parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let out: Value = serde_json::from_slice(&anthropic::build_request(&req, "claude", false).unwrap()).unwrap();
        prop_assert_eq!(&out["messages"][1]["content"], &Value::Array(blocks));
        prop_assert_eq!(&out["thinking"], &json!({"type": "enabled", "budget_tokens": 1024}));
        // Streamed: the encoder's events decode to the same parts.
        let resp = anthropic::parse_response(&serde_json::to_vec(&json!({
            "id": "m", "model": "claude", "stop_reason": "tool_use",
            "content": out["messages"][1]["content"].clone(),
            "usage": {"input_tokens": 1, "output_tokens": 2}})).unwrap()).unwrap();
        let mut enc = anthropic::StreamEncoder::new("m".into(), "claude".into());
        let mut bytes = bytes::BytesMut::new();
        for ev in resp.clone().into_events() {
            enc.encode(&ev, &mut bytes);
        }
        enc.finish(&mut bytes);
        let mut parser = llmop_wire::sse::SseParser::new();
        parser.push(&bytes);
        let mut dec = anthropic::StreamDecoder::new();
        let mut acc = llmop_core::StreamAccumulator::default();
        while let Ok(Some(e)) = parser.next_event() {
            let mut evs = Vec::new();
            dec.decode(&e.data, &mut evs).unwrap();
            for ev in &evs { acc.push(ev); }
        }
        prop_assert_eq!(acc.finish(0).parts, resp.parts);
    }

    /// Gemini: every thoughtSignature goes back on the part that carried it.
    #[test]
    fn gemini_signatures_return_to_their_parts(
        sigs in prop::collection::vec(proptest::option::of("[A-Za-z0-9+/=]{8,64}"), 1..4),
        t in text(),
    ) {
        let mut parts: Vec<Value> = vec![json!({"text": t})];
        for (i, s) in sigs.iter().enumerate() {
            let mut p = json!({"functionCall": {"id": format!("fc{i}"), "name": format!("f{i}"), "args": {"i": i}}});
            if let Some(s) = s {
                p["thoughtSignature"] = json!(s);
            }
            parts.push(p);
        }
        let body = json!({"candidates": [{"content": {"role": "model", "parts": parts.clone()}, "finishReason": "STOP"}]});
        let resp = llmop_wire::gemini::parse_response(&serde_json::to_vec(&body).unwrap()).unwrap();
        let mut msgs = vec![llmop_core::Message::text(llmop_core::Role::User, "q"),
            llmop_core::Message { role: llmop_core::Role::Assistant, parts: resp.parts.clone(), name: None }];
        for c in resp.tool_calls() {
            msgs.push(llmop_core::Message { role: llmop_core::Role::Tool, parts: vec![llmop_core::Part::ToolResult { call_id: c.id.clone(), content: "{}".into(), is_error: false }], name: None });
        }
        let req = llmop_core::ChatRequest::new("g", msgs, llmop_core::WireFormat::OpenAi);
        let out: Value = serde_json::from_slice(&llmop_wire::gemini::build_request(&req, "gemini-3-pro-preview")).unwrap();
        prop_assert_eq!(&out["contents"][1]["parts"], &Value::Array(parts));
        let responses = out["contents"][2]["parts"].as_array().unwrap();
        for (i, r) in responses.iter().enumerate() {
            prop_assert_eq!(&r["functionResponse"]["id"], &json!(format!("fc{i}")));
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
        let _ = responses::parse_request(&bytes);
        let _ = responses::parse_response(&bytes);
        let _ = llmop_wire::embeddings::parse_request(&bytes);
        let _ = llmop_wire::embeddings::parse_openai(&bytes, 2);
        let _ = llmop_wire::embeddings::parse_gemini(&bytes, 2, "m");
        let _ = anthropic::parse_count_request(&bytes);
        let _ = anthropic::parse_count_tokens(&bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let mut out = Vec::new();
            let _ = openai::StreamDecoder::new().decode(s, &mut out);
            let _ = anthropic::StreamDecoder::new().decode(s, &mut out);
            let _ = llmop_wire::gemini::StreamDecoder::new().decode(s, &mut out);
            let _ = responses::StreamDecoder::new().decode(s, &mut out);
        }
    }
}

/// Thinking settings cross formats only where the target model takes them.
#[test]
fn thinking_settings_reach_only_models_that_think() {
    let anthropic_client = |thinking: Value| {
        anthropic::parse_request(
            &serde_json::to_vec(
                &json!({"model": "m", "max_tokens": 5000, "thinking": thinking,
                "messages": [{"role": "user", "content": "x"}]}),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let enabled = anthropic_client(json!({"type": "enabled", "budget_tokens": 3000}));
    let out = |req: &llmop_core::ChatRequest, model: &str| -> Value {
        serde_json::from_slice(&openai::build_request(req, model, false)).unwrap()
    };
    assert_eq!(out(&enabled, "o3")["reasoning_effort"], "low");
    assert_eq!(out(&enabled, "gpt-5-mini")["reasoning_effort"], "low");
    assert!(out(&enabled, "gpt-4o").get("reasoning_effort").is_none());
    let disabled = anthropic_client(json!({"type": "disabled"}));
    assert!(out(&disabled, "o3").get("reasoning_effort").is_none());
    // Gemini: only its thinking models get thinkingConfig.
    let g = |model: &str| -> Value {
        serde_json::from_slice(&llmop_wire::gemini::build_request(&enabled, model)).unwrap()
    };
    assert_eq!(
        g("gemini-2.5-flash")["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        3000
    );
    assert!(g("gemini-2.0-flash")
        .get("generationConfig")
        .is_none_or(|c| c.get("thinkingConfig").is_none()));
    // Anthropic to Anthropic: `thinking` and `top_k` go as sent.
    let a: Value =
        serde_json::from_slice(&anthropic::build_request(&enabled, "claude", false).unwrap())
            .unwrap();
    assert_eq!(
        a["thinking"],
        json!({"type": "enabled", "budget_tokens": 3000})
    );
}

/// An OpenAI client's effort: as sent to OpenAI (values OpenAI adds later included);
/// as a budget to Anthropic, with room for the answer when the client set no cap.
#[test]
fn openai_efforts_pass_through_and_map_to_budgets() {
    let req = |body: Value| openai::parse_request(&serde_json::to_vec(&body).unwrap()).unwrap();
    let future = req(
        json!({"model": "m", "reasoning_effort": "xhigh", "messages": [{"role": "user", "content": "x"}]}),
    );
    let o: Value = serde_json::from_slice(&openai::build_request(&future, "gpt-5", false)).unwrap();
    assert_eq!(o["reasoning_effort"], "xhigh");
    let high = req(
        json!({"model": "m", "reasoning_effort": "high", "messages": [{"role": "user", "content": "x"}]}),
    );
    let a: Value =
        serde_json::from_slice(&anthropic::build_request(&high, "claude", false).unwrap()).unwrap();
    assert_eq!(a["thinking"]["budget_tokens"], 16384);
    assert!(a["max_tokens"].as_u64().unwrap() > 16384, "{a}");
    let capped = req(
        json!({"model": "m", "reasoning_effort": "high", "max_tokens": 8000, "messages": [{"role": "user", "content": "x"}]}),
    );
    let e = anthropic::build_request(&capped, "claude", false).unwrap_err();
    assert_eq!(e.param, "max_tokens");
}
