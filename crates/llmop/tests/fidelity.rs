//! Fidelity: what a provider gives (reasoning state, usage details, structured output,
//! its errors) survives the trip through llmop, against fake upstreams serving fixtures
//! from each provider's public API reference.

mod support;

use serde_json::{json, Value};
use support::{fixture, post_with, sse_events, Gateway, PgDb, Reply, Upstream};

const KEYS: &[(&str, &str)] = &[
    ("OPENAI_KEY", "sk-test-openai"),
    ("ANTHROPIC_KEY", "sk-ant-test"),
    ("GEMINI_KEY", "gemini-test-key"),
];

fn provider(name: &str, kind: &str, up: &Upstream) -> String {
    let (base, env) = match kind {
        "openai" => (format!("{}/v1", up.url), "OPENAI_KEY"),
        "anthropic" => (up.url.clone(), "ANTHROPIC_KEY"),
        _ => (up.url.clone(), "GEMINI_KEY"),
    };
    format!(
        "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{base}\"\napi_key_env = \"{env}\"\n"
    )
}

fn gateway(kind: &str, up: &Upstream, model: &str, extra: &str) -> Gateway {
    let config = format!(
        "{}[routes.main]\ntargets = [{{ provider = \"up\", model = \"{model}\" }}]\n{extra}",
        provider("up", kind, up)
    );
    Gateway::start_with_env(&config, KEYS)
}

async fn post(gw: &Gateway, path: &str, body: &Value, id: &str) -> reqwest::Response {
    post_with(gw, path, body, &[("x-request-id", id)]).await
}

/// The two-step answers of a tool loop: the tool call first, then the final answer.
fn two_steps(
    first: &'static str,
    second: &'static str,
    stream_first: bool,
) -> impl Fn(&support::Captured, usize) -> Reply {
    move |_, n| {
        if n == 0 && stream_first {
            Reply::sse(fixture(first))
        } else if n == 0 {
            Reply::ok(fixture(first))
        } else {
            Reply::ok(fixture(second))
        }
    }
}

/// Folds an Anthropic SSE body into its content blocks, as the SDK's accumulator does.
fn fold_anthropic(text: &str) -> Vec<Value> {
    let mut blocks: Vec<Value> = Vec::new();
    let mut json_parts: Vec<String> = Vec::new();
    for (event, data) in sse_events(text) {
        let v: Value = serde_json::from_str(&data).unwrap();
        match event.as_str() {
            "content_block_start" => {
                blocks.push(v["content_block"].clone());
                json_parts.push(String::new());
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap() as usize;
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = blocks[i]["text"].as_str().unwrap().to_string();
                        blocks[i]["text"] = json!(t + d["text"].as_str().unwrap());
                    }
                    "thinking_delta" => {
                        let t = blocks[i]["thinking"].as_str().unwrap().to_string();
                        blocks[i]["thinking"] = json!(t + d["thinking"].as_str().unwrap());
                    }
                    "signature_delta" => {
                        let t = blocks[i]["signature"].as_str().unwrap_or("").to_string();
                        blocks[i]["signature"] = json!(t + d["signature"].as_str().unwrap());
                    }
                    "input_json_delta" => {
                        json_parts[i].push_str(d["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = v["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" && !json_parts[i].is_empty() {
                    blocks[i]["input"] = serde_json::from_str(&json_parts[i]).unwrap();
                }
            }
            _ => {}
        }
    }
    blocks
}

const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2sxjBqp0QovB8Mg0ZBC0FnMLwK1jmTuEXp9cZsbpp3M5m3vRHBNl1hGwmEAnsyhAqMtM7t4AG2nu8yJ3RbG7h3XeHvYaHG6p4Kp5jb6VkZx3wmTz";

fn weather_tool_anthropic() -> Value {
    json!([{"name": "get_weather", "description": "Weather of a place",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}])
}

#[tokio::test]
async fn anthropic_thinking_tool_loop_returns_the_signed_thinking_first() {
    for stream in [false, true] {
        let up = Upstream::start(two_steps(
            if stream {
                "anthropic/stream_thinking_tool_use.sse"
            } else {
                "anthropic/thinking_tool_use.json"
            },
            "anthropic/final_answer.json",
            stream,
        ))
        .await;
        let gw = gateway("anthropic", &up, "claude-sonnet-4-5", "");
        let mut body = json!({
            "model": "main", "max_tokens": 4096, "stream": stream,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": weather_tool_anthropic(),
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]
        });
        let r = post(&gw, "/v1/messages", &body, &format!("think-{stream}")).await;
        assert_eq!(r.status(), 200);
        let content: Vec<Value> = if stream {
            fold_anthropic(&r.text().await.unwrap())
        } else {
            r.json::<Value>().await.unwrap()["content"]
                .as_array()
                .unwrap()
                .clone()
        };
        // The client sees the thinking with its signature, first.
        assert_eq!(content[0]["type"], "thinking");
        assert_eq!(content[0]["signature"], SIGNATURE);
        if !stream {
            assert_eq!(content[1]["type"], "redacted_thinking");
        }
        let tool = content.iter().find(|b| b["type"] == "tool_use").unwrap();
        assert_eq!(
            tool["id"], "toolu_01CswdEQBMshySk6Y9DFKrfq",
            "Anthropic's own ids reach an Anthropic client"
        );
        assert_eq!(tool["input"]["location"], "Paris");
        // The upstream was asked for thinking as the client asked.
        assert_eq!(
            up.last().body["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );

        // Step two: the assistant turn goes back as the client got it.
        body["stream"] = json!(false);
        body["messages"] = json!([
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": content.clone()},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": "sunny, 22°C"}]}
        ]);
        let r = post(&gw, "/v1/messages", &body, &format!("think2-{stream}")).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let sent = up.last().body;
        let turn = &sent["messages"][1]["content"];
        assert_eq!(turn[0]["type"], "thinking", "{sent}");
        assert_eq!(turn[0]["signature"], SIGNATURE);
        assert_eq!(turn[0]["thinking"], content[0]["thinking"]);
        assert_eq!(turn.as_array().unwrap().last().unwrap()["id"], tool["id"]);
        assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], tool["id"]);
    }
}

#[tokio::test]
async fn anthropic_thinking_from_an_openai_client_is_kept_by_llmop_and_put_back() {
    let up = Upstream::start(two_steps(
        "anthropic/thinking_tool_use.json",
        "anthropic/final_answer.json",
        false,
    ))
    .await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-5", "");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let mut body = json!({"model": "main", "max_tokens": 8000, "reasoning_effort": "medium", "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let r: Value = post(&gw, "/v1/chat/completions", &body, "oa-think-1")
        .await
        .json()
        .await
        .unwrap();
    // reasoning_effort became Anthropic's thinking budget.
    assert_eq!(
        up.last().body["thinking"],
        json!({"type": "enabled", "budget_tokens": 4096})
    );
    let msg = r["choices"][0]["message"].clone();
    let id = msg["tool_calls"][0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("llmop_call_"), "{id}");
    body["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        msg,
        {"role": "tool", "tool_call_id": id, "content": "sunny"}
    ]);
    let r = post(&gw, "/v1/chat/completions", &body, "oa-think-2").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = up.last().body;
    let turn = &sent["messages"][1]["content"];
    assert_eq!(turn[0]["type"], "thinking", "{sent}");
    assert_eq!(turn[0]["signature"], SIGNATURE);
    assert_eq!(turn[1]["type"], "redacted_thinking");
    assert_eq!(turn[2]["id"], "toolu_01CswdEQBMshySk6Y9DFKrfq");
    assert_eq!(
        sent["messages"][2]["content"][0]["tool_use_id"],
        "toolu_01CswdEQBMshySk6Y9DFKrfq"
    );
    // Recorded: the state is stored with the first call's record.
    let rec = gw.record("oa-think-1").await;
    assert_eq!(rec["output_tool_calls"][0]["id"], id);
}

const GEMINI_SIG: &str = "CiQB0e2Kb7Xv3Gm6lq0sRk3h8d1vQ5jJvYt2kQ9Qm4pZ1Jk=";

/// Runs a Gemini tool loop from an OpenAI client: `first` answers step one, `second`
/// step two (possibly another replica). Returns the body the upstream got in step two.
async fn gemini_loop_openai(
    first: &Gateway,
    second: &Gateway,
    up: &Upstream,
    stream: bool,
    tag: &str,
) -> Value {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ]);
    let mut body = json!({"model": "main", "tools": tools, "stream": stream,
        "messages": [{"role": "user", "content": "Weather and time in Paris?"}]});
    let r = post(first, "/v1/chat/completions", &body, &format!("{tag}-1")).await;
    assert_eq!(r.status(), 200);
    let calls: Vec<Value> = if stream {
        let text = r.text().await.unwrap();
        let mut calls: Vec<Value> = Vec::new();
        for (_, data) in sse_events(&text) {
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(&data).unwrap();
            for tc in v["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = tc["index"].as_u64().unwrap() as usize;
                if calls.len() <= i {
                    calls.push(json!({"id": tc["id"], "type": "function", "function": {"name": tc["function"]["name"], "arguments": ""}}));
                }
                let a = calls[i]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string();
                calls[i]["function"]["arguments"] =
                    json!(a + tc["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        calls
    } else {
        let v: Value = r.json().await.unwrap();
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(!calls.is_empty());
    let mut messages = vec![
        json!({"role": "user", "content": "Weather and time in Paris?"}),
        json!({"role": "assistant", "content": null, "tool_calls": calls.clone()}),
    ];
    for c in &calls {
        messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": "{\"ok\":true}"}));
    }
    body["messages"] = Value::Array(messages);
    body["stream"] = json!(false);
    let r = post(second, "/v1/chat/completions", &body, &format!("{tag}-2")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let a: Value = r.json().await.unwrap();
    assert!(a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("sunny"));
    up.last().body
}

fn assert_signature_in_place(sent: &Value) {
    let model_turn = &sent["contents"][1];
    assert_eq!(model_turn["role"], "model", "{sent}");
    let parts = model_turn["parts"].as_array().unwrap();
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather", "{sent}");
    assert_eq!(parts[0]["thoughtSignature"], GEMINI_SIG, "{sent}");
    // Ids llmop issued never reach Gemini.
    assert!(parts[0]["functionCall"].get("id").is_none(), "{sent}");
    if let Some(p) = parts.get(1) {
        assert_eq!(p["functionCall"]["name"], "get_time");
        assert!(
            p.get("thoughtSignature").is_none(),
            "only the part that had one: {sent}"
        );
    }
    let responses = sent["contents"][2]["parts"].as_array().unwrap();
    assert_eq!(responses[0]["functionResponse"]["name"], "get_weather");
}

#[tokio::test]
async fn gemini3_tool_loop_from_openai_and_anthropic_clients_keeps_thought_signatures() {
    // OpenAI client, whole and streamed.
    for stream in [false, true] {
        let up = Upstream::start(two_steps(
            if stream {
                "gemini/stream_function_call_signature.sse"
            } else {
                "gemini/function_call_signature.json"
            },
            "gemini/final_answer.json",
            stream,
        ))
        .await;
        let gw = gateway("gemini", &up, "gemini-3-pro-preview", "");
        let sent = gemini_loop_openai(&gw, &gw, &up, stream, &format!("g3-{stream}")).await;
        assert_signature_in_place(&sent);
    }
    // Anthropic client.
    let up = Upstream::start(two_steps(
        "gemini/function_call_signature.json",
        "gemini/final_answer.json",
        false,
    ))
    .await;
    let gw = gateway("gemini", &up, "gemini-3-pro-preview", "");
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}}, {"name": "get_time", "input_schema": {"type": "object"}}]);
    let mut body = json!({"model": "main", "max_tokens": 1024, "tools": tools,
        "messages": [{"role": "user", "content": "Weather and time in Paris?"}]});
    let r: Value = post(&gw, "/v1/messages", &body, "g3-anthropic-1")
        .await
        .json()
        .await
        .unwrap();
    let content = r["content"].as_array().unwrap().clone();
    // Gemini's state is not Anthropic's to see: only the tool calls.
    assert!(content.iter().all(|b| b["type"] == "tool_use"), "{r}");
    let results: Vec<Value> = content
        .iter()
        .map(|b| json!({"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}))
        .collect();
    body["messages"] = json!([
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": results}
    ]);
    let r = post(&gw, "/v1/messages", &body, "g3-anthropic-2").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_signature_in_place(&up.last().body);
}

#[tokio::test]
async fn gemini3_tool_loop_across_two_replicas_sharing_postgresql() {
    let db = PgDb::create().await;
    let up = Upstream::start(two_steps(
        "gemini/function_call_signature.json",
        "gemini/final_answer.json",
        false,
    ))
    .await;
    let store = format!("[store]\nurl = \"{}\"\n", db.url);
    let a = gateway("gemini", &up, "gemini-3-pro-preview", &store);
    let b = gateway("gemini", &up, "gemini-3-pro-preview", &store);
    let sent = gemini_loop_openai(&a, &b, &up, false, "replicas").await;
    assert_signature_in_place(&sent);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn tool_call_ids_are_unique_over_three_turns_and_results_must_answer_a_call() {
    // Gemini gives its calls no id: each turn's call still gets its own.
    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/function_call.json"))).await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash", "");
    let tools = json!([{"type": "function", "function": {"name": "get_current_temperature", "parameters": {"type": "object"}}}]);
    let mut messages = vec![json!({"role": "user", "content": "Temperature in London?"})];
    let mut ids = Vec::new();
    for turn in 0..3 {
        let body = json!({"model": "main", "tools": tools, "messages": messages});
        let r = post(&gw, "/v1/chat/completions", &body, &format!("ids-{turn}")).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let msg: Value = r.json::<Value>().await.unwrap()["choices"][0]["message"].clone();
        let id = msg["tool_calls"][0]["id"].as_str().unwrap().to_string();
        messages.push(msg);
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "12°C"}));
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
    // A result that answers no call is the client's error, naming the field.
    let body = json!({"model": "main", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}
    ]});
    let r = post(&gw, "/v1/chat/completions", &body, "ids-bad").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "messages[1].tool_call_id", "{e}");
    let body = json!({"model": "main", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "x"}]}
    ]});
    let r = post(&gw, "/v1/messages", &body, "ids-bad-2").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content[0].tool_use_id"),
        "{e}"
    );
}

#[tokio::test]
async fn structured_output_from_an_anthropic_client_reaches_openai_and_gemini_targets() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let body = json!({"model": "main", "max_tokens": 200,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
        "messages": [{"role": "user", "content": "Capital of France as JSON"}]});
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway("openai", &up, "gpt-4o-mini", "");
    assert_eq!(
        post(&gw, "/v1/messages", &body, "so-openai").await.status(),
        200
    );
    let sent = up.last().body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
    assert!(
        sent.get("output_config").is_none(),
        "Anthropic's field is not passed to OpenAI"
    );

    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/generate_content.json"))).await;
    let gw = gateway("gemini", &up, "gemini-2.5-flash", "");
    assert_eq!(
        post(&gw, "/v1/messages", &body, "so-gemini").await.status(),
        200
    );
    let gen = &up.last().body["generationConfig"];
    assert_eq!(gen["responseMimeType"], "application/json");
    assert_eq!(gen["responseJsonSchema"], schema);

    // OpenAI's response_format becomes Anthropic's output_config.format.
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/message.json"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-5", "");
    let oa = json!({"model": "main", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}});
    assert_eq!(
        post(&gw, "/v1/chat/completions", &oa, "so-anthropic")
            .await
            .status(),
        200
    );
    assert_eq!(
        up.last().body["output_config"]["format"],
        json!({"type": "json_schema", "schema": schema})
    );
    // JSON mode without a schema has no Anthropic equivalent: a clear 400, not a
    // silent plain-text answer, and nothing was sent.
    let before = up.count();
    let oa = json!({"model": "main", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}});
    let r = post(&gw, "/v1/chat/completions", &oa, "so-anthropic-bad").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unsupported_by_target");
    assert_eq!(e["error"]["param"], "response_format");
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn reasoning_tokens_fingerprint_and_tier_whole_and_streamed_and_recorded() {
    for stream in [false, true] {
        let up = Upstream::start(move |_, _| {
            if stream {
                Reply::sse(fixture("openai/stream_reasoning_usage.sse"))
            } else {
                Reply::ok(fixture("openai/reasoning_usage.json"))
            }
        })
        .await;
        let gw = gateway("openai", &up, "o3", "");
        let body = json!({"model": "main", "stream": stream, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Capital of France?"}]});
        let id = format!("reason-{stream}");
        let r = post(&gw, "/v1/chat/completions", &body, &id).await;
        assert_eq!(r.status(), 200);
        let (usage, fingerprint, tier) = if stream {
            let text = r.text().await.unwrap();
            let mut usage = Value::Null;
            let mut fp = Value::Null;
            let mut tier = Value::Null;
            for (_, data) in sse_events(&text) {
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).unwrap();
                if !v["usage"].is_null() {
                    usage = v["usage"].clone();
                }
                if !v["system_fingerprint"].is_null() {
                    fp = v["system_fingerprint"].clone();
                }
                if !v["service_tier"].is_null() {
                    tier = v["service_tier"].clone();
                }
            }
            (usage, fp, tier)
        } else {
            let v: Value = r.json().await.unwrap();
            (
                v["usage"].clone(),
                v["system_fingerprint"].clone(),
                v["service_tier"].clone(),
            )
        };
        assert_eq!(
            usage["completion_tokens_details"]["reasoning_tokens"], 192,
            "{usage}"
        );
        assert_eq!(usage["completion_tokens"], 210);
        assert_eq!(fingerprint, "fp_a1b2c3d4e5");
        assert_eq!(tier, "default");
        let rec = gw.record(&id).await;
        assert_eq!(rec["reasoning_tokens"], 192);
        assert_eq!(rec["system_fingerprint"], "fp_a1b2c3d4e5");
        assert_eq!(rec["service_tier"], "default");
        assert_eq!(rec["upstream_model"], "o3-2025-04-16");
        // What the client sent, not what llmop asked of the upstream for itself.
        if stream {
            assert_eq!(
                rec["request_params"]["stream_options"]["include_usage"],
                true
            );
        }
    }
    // Gemini's thoughtsTokenCount is the reasoning share of the output.
    let up =
        Upstream::start(|_, _| Reply::ok(fixture("gemini/function_call_signature.json"))).await;
    let gw = gateway("gemini", &up, "gemini-3-pro-preview", "");
    let body = json!({"model": "main", "messages": [{"role": "user", "content": "x"}]});
    let v: Value = post(&gw, "/v1/chat/completions", &body, "reason-gemini")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        78
    );
    assert_eq!(v["usage"]["completion_tokens"], 24 + 78);
}

#[tokio::test]
async fn a_gemini_stream_cut_midway_keeps_the_usage_already_sent() {
    let up = Upstream::start(|_, _| Reply::SseCut(fixture("gemini/stream.sse"), 1)).await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash", "");
    let body =
        json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let r = post(&gw, "/v1/chat/completions", &body, "gem-cut").await;
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    let rec = gw.record("gem-cut").await;
    assert!(rec["input_tokens"].as_i64().unwrap() > 0, "{rec}");
    assert!(
        rec["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "cost known, not $0: {rec}"
    );
    assert_eq!(
        rec["attempts"][0]["error"], "upstream_stream_error",
        "{rec}"
    );
}

#[tokio::test]
async fn provider_errors_map_to_their_meaning() {
    let chat = json!({"model": "main", "messages": [{"role": "user", "content": "x"}]});
    // Gemini 429 with RetryInfo in the body: Retry-After for the client.
    let up =
        Upstream::start(|_, _| Reply::Json(429, fixture("gemini/error_429_retry.json"), vec![]))
            .await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash", "");
    let r = post(&gw, "/v1/chat/completions", &chat, "err-retry").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");

    // Gemini's invalid key is the operator's credentials, not the client's request.
    let up = Upstream::start(|_, _| {
        Reply::Json(400, fixture("gemini/error_api_key_invalid.json"), vec![])
    })
    .await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash", "");
    let r = post(&gw, "/v1/chat/completions", &chat, "err-key").await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_auth_failed");

    // An error event inside a Gemini stream keeps its status and message.
    let up = Upstream::start(|_, _| Reply::sse(fixture("gemini/stream_error.sse"))).await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash", "");
    let mut s = chat.clone();
    s["stream"] = json!(true);
    let text = post(&gw, "/v1/chat/completions", &s, "err-stream")
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("The weather in Paris"), "{text}");
    assert!(
        text.contains("UNAVAILABLE (503): The model is overloaded"),
        "{text}"
    );

    // A finish reason that means failure is not a clean stop: retried, then an error.
    let up =
        Upstream::start(|_, _| Reply::ok(fixture("gemini/malformed_function_call.json"))).await;
    let gw = gateway("gemini", &up, "gemini-2.5-flash", "");
    let r = post(&gw, "/v1/chat/completions", &chat, "err-finish").await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_incomplete_answer");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MALFORMED_FUNCTION_CALL"));

    // OpenAI insufficient_quota: no retry on that target, no Retry-After; the next
    // target answers.
    let broke = Upstream::start(|_, _| {
        Reply::Json(
            429,
            fixture("openai/error_429_insufficient_quota.json"),
            vec![],
        )
    })
    .await;
    let fine = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let config = format!(
        "{}{}[routes.main]\ntargets = [{{ provider = \"broke\", model = \"gpt-4o\" }}, {{ provider = \"fine\", model = \"gpt-4o\" }}]\nretry = {{ attempts = 2, backoff_ms = 1 }}\n",
        provider("broke", "openai", &broke),
        provider("fine", "openai", &fine)
    );
    let gw = Gateway::start_with_env(&config, KEYS);
    let r = post(&gw, "/v1/chat/completions", &chat, "err-quota").await;
    assert_eq!(r.status(), 200);
    assert_eq!(broke.count(), 1, "out of quota is not retried");
    let rec = gw.record("err-quota").await;
    assert_eq!(rec["attempts"][0]["error"], "upstream_quota_exhausted");
    assert_eq!(rec["attempts"][0]["retry_reason"], "quota_exhausted");
    assert!(rec["attempts"][1]["retry_reason"].is_null());
    // Alone on its route: 502, the operator's problem, without Retry-After.
    let config = format!(
        "{}[routes.main]\ntargets = [{{ provider = \"broke\", model = \"gpt-4o\" }}]\n",
        provider("broke", "openai", &broke)
    );
    let gw = Gateway::start_with_env(&config, KEYS);
    let r = post(&gw, "/v1/chat/completions", &chat, "err-quota-2").await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("retry-after").is_none());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_quota_exhausted");
    let rec = gw.record("err-quota-2").await;
    assert!(
        rec["attempts"][0]["retry_reason"].is_null(),
        "no attempt followed: {rec}"
    );
}

#[tokio::test]
async fn parameters_with_equivalents_are_mapped() {
    // OpenAI client to Gemini: penalties, logprobs, effort on Gemini 3 as a level.
    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/generate_content.json"))).await;
    let gw = gateway("gemini", &up, "gemini-3-pro-preview", "");
    let body = json!({"model": "main", "messages": [{"role": "user", "content": "x"}],
        "frequency_penalty": 0.5, "presence_penalty": 0.25, "logprobs": true, "top_logprobs": 3,
        "reasoning_effort": "low"});
    assert_eq!(
        post(&gw, "/v1/chat/completions", &body, "p-gemini")
            .await
            .status(),
        200
    );
    let g = &up.last().body["generationConfig"];
    assert_eq!(g["frequencyPenalty"], 0.5);
    assert_eq!(g["presencePenalty"], 0.25);
    assert_eq!(g["responseLogprobs"], true);
    assert_eq!(g["logprobs"], 3);
    assert_eq!(g["thinkingConfig"]["thinkingLevel"], "low");
    // Anthropic client to Gemini: top_k, thinking budget, multi-block system.
    let body = json!({"model": "main", "max_tokens": 5000, "top_k": 40,
        "thinking": {"type": "enabled", "budget_tokens": 3000},
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}],
        "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        post(&gw, "/v1/messages", &body, "p-gemini-2")
            .await
            .status(),
        200
    );
    let sent = up.last().body;
    assert_eq!(sent["generationConfig"]["topK"], 40);
    assert_eq!(
        sent["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        3000
    );
    assert_eq!(
        sent["systemInstruction"]["parts"].as_array().unwrap().len(),
        2,
        "{sent}"
    );
    // Anthropic to Anthropic: the system blocks keep their boundaries.
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/message.json"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-5", "");
    assert_eq!(
        post(&gw, "/v1/messages", &body, "p-anthropic")
            .await
            .status(),
        200
    );
    let sent = up.last().body;
    assert_eq!(sent["system"][1]["text"], "Answer in French.", "{sent}");
    assert_eq!(sent["top_k"], 40);
    // Anthropic thinking budget to an OpenAI reasoning model: the effort.
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway("openai", &up, "o3", "");
    assert_eq!(
        post(&gw, "/v1/messages", &body, "p-openai").await.status(),
        200
    );
    assert_eq!(up.last().body["reasoning_effort"], "low");
}

#[tokio::test]
async fn forged_issued_ids_are_bounded_and_never_fail_the_call() {
    // A client (or a conversation whose state expired) sends ids llmop never issued:
    // the call goes out without state, at most 1,024 lookups, counted.
    let gw = Gateway::start(
        "[providers.sim]\nkind = \"mock\"\n[routes.main]\ntargets = [{ provider = \"sim\", model = \"echo\" }]\n",
    );
    let calls: Vec<Value> = (0..2_000)
        .map(|i| json!({"id": format!("llmop_call_forged{i}"), "type": "function", "function": {"name": "f", "arguments": "{}"}}))
        .collect();
    let body = json!({"model": "main", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "user", "content": "and now?"}
    ]});
    let r = post(&gw, "/v1/chat/completions", &body, "forged").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let m = gw.metrics().await;
    assert!(
        m.contains("llmop_reasoning_state_missing_total 1024"),
        "{m}"
    );
}

#[tokio::test]
async fn a_whole_answer_to_a_stream_request_keeps_its_thinking() {
    // An upstream that ignores `stream` and answers whole is served as a stream: its
    // reasoning state is in that stream too.
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/thinking_tool_use.json"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-5", "");
    let body = json!({"model": "main", "max_tokens": 4096, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": weather_tool_anthropic(),
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
    let r = post(&gw, "/v1/messages", &body, "whole-as-stream").await;
    assert_eq!(r.status(), 200);
    let blocks = fold_anthropic(&r.text().await.unwrap());
    assert_eq!(blocks[0]["type"], "thinking");
    assert_eq!(blocks[0]["signature"], SIGNATURE);
    assert_eq!(blocks[1]["type"], "redacted_thinking");
    assert_eq!(blocks[2]["type"], "tool_use");
}
