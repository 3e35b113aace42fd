//! The real binary against fake upstreams that speak each provider's wire format
//! (fixture bytes from the providers' API references): non-streaming, streaming, tools,
//! and translation between client and provider formats.

mod support;

use serde_json::{json, Value};
use support::{client, fixture, post_json, sse_events, Gateway, Reply, Upstream};

const OPENAI_KEY: &str = "sk-test-openai-key";
const ANTHROPIC_KEY: &str = "sk-ant-test-key";
const GEMINI_KEY: &str = "gemini-test-key";

fn gateway(kind: &str, upstream: &Upstream, model: &str) -> Gateway {
    let (base, env) = match kind {
        "openai" => (format!("{}/v1", upstream.url), "OPENAI_KEY"),
        "anthropic" => (upstream.url.clone(), "ANTHROPIC_KEY"),
        _ => (upstream.url.clone(), "GEMINI_KEY"),
    };
    let config = format!(
        "[providers.up]\nkind = \"{kind}\"\nbase_url = \"{base}\"\napi_key_env = \"{env}\"\n\
         [routes.main]\ntargets = [{{ provider = \"up\", model = \"{model}\" }}]\n"
    );
    Gateway::start_with_env(
        &config,
        &[
            ("OPENAI_KEY", OPENAI_KEY),
            ("ANTHROPIC_KEY", ANTHROPIC_KEY),
            ("GEMINI_KEY", GEMINI_KEY),
        ],
    )
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", gw.url))
        .header("authorization", "Bearer sk-client-secret-never-logged")
        .header("x-request-id", "req-test-123")
        .header("x-llmop-user", "user-42")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Folds an OpenAI SSE body into (text, tool calls as (name, args), finish, usage).
fn fold_openai(text: &str) -> (String, Vec<(String, String)>, String, Option<Value>, bool) {
    let mut out = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = String::new();
    let mut usage = None;
    let mut done = false;
    for (_, data) in sse_events(text) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            out.push_str(t);
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                calls[i].0 = n.to_string();
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (out, calls, finish, usage, done)
}

#[tokio::test]
async fn openai_upstream_whole_answer_and_passthrough() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway("openai", &up, "gpt-4.1");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "main",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Hello"}],
        "logit_bias": {"1234": -50},
        "user": "end-user-7",
        "max_completion_tokens": 64
    })).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-test-123");
    assert_eq!(resp.headers()["x-llmop-provider"], "up");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 19);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(body["model"], "gpt-4.1-2025-04-14");

    let got = up.last();
    assert_eq!(got.path, "/v1/chat/completions");
    // The provider's key, never the client's.
    assert_eq!(got.headers["authorization"], format!("Bearer {OPENAI_KEY}"));
    // llmop's request id travels upstream, for correlation with the upstream's logs.
    assert_eq!(got.headers["x-request-id"], "req-test-123");
    assert!(got.headers.get("x-llmop-user").is_none());
    assert_eq!(got.body["model"], "gpt-4.1");
    assert_eq!(
        got.body["logit_bias"]["1234"], -50,
        "unknown fields pass through"
    );
    assert_eq!(got.body["max_completion_tokens"], 64);
    assert_eq!(got.body["user"], "end-user-7");
    assert_eq!(got.body["messages"][0]["role"], "system");
    assert!(got.body.get("stream").is_none());

    // The call's metadata reaches its record; secrets reach neither the record, nor the
    // store's files, nor the logs.
    let rec = gw.record("req-test-123").await;
    assert_eq!(rec["user"], "user-42");
    assert_eq!(rec["upstream_id"], "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
    let everything = format!("{rec}{}{}", gw.store_bytes(), gw.logs());
    assert!(!everything.contains("sk-client-secret-never-logged"));
    assert!(!everything.contains(OPENAI_KEY));
}

#[tokio::test]
async fn openai_upstream_stream_with_tool_call() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("openai/stream_tool_call.sse"))).await;
    let gw = gateway("openai", &up, "gpt-4o");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "main", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
        "tool_choice": "auto"
    })).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let (_, calls, finish, usage, done) = fold_openai(&text);
    assert!(done, "ends with [DONE]");
    assert_eq!(
        calls,
        vec![(
            "get_weather".to_string(),
            r#"{"location":"Paris, France"}"#.to_string()
        )]
    );
    assert_eq!(finish, "tool_calls");
    assert_eq!(usage.unwrap()["prompt_tokens"], 68);
    let got = up.last();
    assert_eq!(got.body["stream"], true);
    assert_eq!(got.body["stream_options"]["include_usage"], true);
    assert_eq!(got.body["tools"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn stream_without_include_usage_sends_no_usage_chunk() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("openai/stream.sse"))).await;
    let gw = gateway("openai", &up, "gpt-4o-mini");
    let resp = post(
        &gw,
        "/v1/chat/completions",
        json!({
            "model": "main", "stream": true, "messages": [{"role": "user", "content": "hi"}]
        }),
    )
    .await;
    let text = resp.text().await.unwrap();
    let (out, _, finish, usage, done) = fold_openai(&text);
    assert_eq!(out, "Hello from OpenAI!");
    assert_eq!(finish, "stop");
    assert!(usage.is_none(), "the client did not ask for usage");
    assert!(done);
    // The gateway still asked the upstream for usage, for its own accounting.
    assert_eq!(up.last().body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn openai_client_to_anthropic_upstream_with_tools() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/tool_use.json"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-20250514");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "main",
        "messages": [{"role": "system", "content": "You are a weather bot."}, {"role": "user", "content": "Weather in SF?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
        "tool_choice": "required", "temperature": 0.2
    })).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(
        msg["content"],
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(msg["tool_calls"][0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(
        msg["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"location": "San Francisco, CA"}));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 472);
    assert_eq!(body["usage"]["completion_tokens"], 89);

    let got = up.last();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(got.body["system"], "You are a weather bot.");
    assert_eq!(got.body["max_tokens"], 4096);
    assert_eq!(
        got.body["tools"][0]["input_schema"]["required"][0],
        "location"
    );
    assert_eq!(got.body["tool_choice"]["type"], "any");
    assert_eq!(got.body["temperature"], 0.2);
    assert_eq!(got.body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn openai_client_streams_from_anthropic_upstream() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("anthropic/stream_tool_use.sse"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-20250514");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "main", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    })).await;
    assert_eq!(resp.status(), 200);
    let (text, calls, finish, usage, done) = fold_openai(&resp.text().await.unwrap());
    assert_eq!(text, "Okay, let's check the weather.");
    assert_eq!(calls[0].0, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].1).unwrap(),
        json!({"location": "San Francisco, CA"})
    );
    assert_eq!(finish, "tool_calls");
    let usage = usage.unwrap();
    assert_eq!(usage["prompt_tokens"], 472);
    assert_eq!(usage["completion_tokens"], 89);
    assert!(done);
    assert_eq!(up.last().body["stream"], true);
}

#[tokio::test]
async fn anthropic_client_to_anthropic_upstream_keeps_its_fields() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/message.json"))).await;
    let gw = gateway("anthropic", &up, "claude-sonnet-4-20250514");
    let resp = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", "client-key")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "main", "max_tokens": 256, "top_k": 5,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Hi"}],
            "metadata": {"user_id": "anthropic-user"}
        }))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hi! My name is Claude.");
    assert_eq!(body["stop_reason"], "end_turn");
    // Usage comes back in Anthropic's own split.
    assert_eq!(body["usage"]["input_tokens"], 2095);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 1000);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 100);
    assert_eq!(body["usage"]["output_tokens"], 503);
    let got = up.last();
    assert_eq!(got.body["top_k"], 5);
    assert_eq!(got.body["max_tokens"], 256);
    assert_eq!(got.body["metadata"]["user_id"], "anthropic-user");
    assert_eq!(
        got.headers["x-api-key"], ANTHROPIC_KEY,
        "the client's key is not forwarded"
    );
}

#[tokio::test]
async fn anthropic_client_streams_from_openai_upstream() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("openai/stream.sse"))).await;
    let gw = gateway("openai", &up, "gpt-4o-mini");
    let resp = post_json(
        &gw,
        "/v1/messages",
        &json!({"model": "main", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_start") && names.contains(&"content_block_stop"));
    let text: String = events
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["delta"]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(text, "Hello from OpenAI!");
    let delta: Value =
        serde_json::from_str(&events.iter().find(|(e, _)| e == "message_delta").unwrap().1)
            .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
    assert_eq!(delta["usage"]["input_tokens"], 12);
    assert_eq!(up.last().body["max_tokens"], 100);
}

#[tokio::test]
async fn anthropic_client_tool_round_trip_through_openai_upstream() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/tool_call.json"))).await;
    let gw = gateway("openai", &up, "gpt-4o-mini");
    let resp = post_json(&gw, "/v1/messages", &json!({
            "model": "main", "max_tokens": 100,
            "tools": [{"name": "get_current_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}],
            "messages": [
                {"role": "user", "content": "Weather in Boston?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_current_weather", "input": {"location": "Boston"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "72F"}, {"type": "text", "text": "And tomorrow?"}]}
            ]
        })).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["id"], "call_abc123");
    assert_eq!(block["input"], json!({"location": "Boston, MA"}));
    // Upstream saw OpenAI's shape: assistant tool_calls, a `tool` message, then the text.
    let msgs = up.last().body["messages"].as_array().unwrap().clone();
    assert_eq!(msgs[1]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], "toolu_1");
    assert_eq!(msgs[2]["content"], "72F");
    assert_eq!(msgs[3]["role"], "user");
    assert_eq!(msgs[3]["content"], "And tomorrow?");
}

#[tokio::test]
async fn gemini_upstream_whole_answer() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/generate_content.json"))).await;
    let gw = gateway("gemini", &up, "gemini-2.5-flash");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "main", "max_tokens": 50, "stop": ["END"],
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Explain AI"}]
    })).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "AI learns patterns from data to make predictions."
    );
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    assert_eq!(
        body["usage"]["completion_tokens"], 30,
        "thinking tokens are billed as output"
    );
    let got = up.last();
    assert_eq!(got.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(got.headers["x-goog-api-key"], GEMINI_KEY);
    assert_eq!(got.body["systemInstruction"]["parts"][0]["text"], "sys");
    assert_eq!(got.body["contents"][0]["role"], "user");
    assert_eq!(got.body["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(got.body["generationConfig"]["stopSequences"][0], "END");
}

#[tokio::test]
async fn gemini_upstream_stream_with_crlf_framing() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("gemini/stream.sse"))).await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash");
    let resp = post(
        &gw,
        "/v1/chat/completions",
        json!({
            "model": "main", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, _, finish, usage, done) = fold_openai(&resp.text().await.unwrap());
    assert_eq!(text, "The sky is blue because of Rayleigh scattering.");
    assert_eq!(finish, "stop");
    assert_eq!(usage.unwrap()["completion_tokens"], 11);
    assert!(done);
    assert_eq!(
        up.last().path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );
}

#[tokio::test]
async fn gemini_function_call_to_anthropic_client() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/function_call.json"))).await;
    let gw = gateway("gemini", &up, "gemini-2.0-flash");
    let resp = post_json(&gw, "/v1/messages", &json!({"model": "main", "max_tokens": 100,
            "tools": [{"name": "get_current_temperature", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_current_temperature"},
            "messages": [{"role": "user", "content": "Temperature in London?"}]})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["content"][0]["name"], "get_current_temperature");
    assert_eq!(body["content"][0]["input"], json!({"location": "London"}));
    let got = up.last();
    assert_eq!(
        got.body["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY"
    );
    assert_eq!(
        got.body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0],
        "get_current_temperature"
    );
    assert_eq!(
        got.body["tools"][0]["functionDeclarations"][0]["name"],
        "get_current_temperature"
    );
}

#[tokio::test]
async fn mock_provider_answers_json_schema_and_lists_models() {
    let gw = Gateway::start("[providers.sim]\nkind = \"mock\"\nmodels = [\"echo\"]\n[routes.r]\ntargets = [{ provider = \"sim\", model = \"echo\" }]\n");
    let resp = post(&gw, "/v1/chat/completions", json!({
        "model": "sim/echo",
        "messages": [{"role": "user", "content": "extract"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
            "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}}}
    })).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content["name"].is_string());
    assert!((0..=120).contains(&content["age"].as_i64().unwrap()));

    let models: Value = client()
        .get(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["r", "sim/echo"]);
    let anthropic: Value = client()
        .get(format!("{}/v1/models", gw.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["has_more"], false);
}
