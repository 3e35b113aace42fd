//! The newer API surfaces against the real binary: `/v1/responses` (whole, typed event
//! stream, translated to an Anthropic upstream, continued with `previous_response_id`,
//! read back, recorded and costed), `/v1/embeddings` (OpenAI and Gemini wire formats,
//! fallback only within one embedding model, budgets, hashed inputs), Anthropic
//! `count_tokens` (the provider's count, else an estimate said so), and `/v1/models`
//! with capabilities in both list shapes.

mod support;

use serde_json::{json, Value};
use support::{client, post_json, post_with, sse_events, Gateway, Reply, Upstream};

const MOCK: &str =
    "[providers.sim]\nkind = \"mock\"\nmodels = [\"echo\"]\nembedding_models = [\"embed\"]\n\
    [prices.\"sim/*\"]\ninput = 1.0\noutput = 2.0\n";

#[tokio::test]
async fn responses_whole_and_streamed_are_recorded_and_costed() {
    let gw = Gateway::start(MOCK);
    let r = post_with(
        &gw,
        "/v1/responses",
        &json!({"model": "sim/echo", "input": "hello responses", "instructions": "brief"}),
        &[("x-request-id", "resp-whole-1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "resp_resp-whole-1");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["instructions"], "brief");
    assert!(v["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("hello responses"));
    let usage = &v["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);
    let rec = gw.record("resp-whole-1").await;
    assert_eq!(rec["endpoint"], "/v1/responses");
    assert!(rec["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(rec["request_params"]["responses"]["store"], true);

    // Streamed: typed events, every one sequenced, the text whole at the end.
    let r = post_with(
        &gw,
        "/v1/responses",
        &json!({"model": "sim/echo", "input": "stream this", "stream": true}),
        &[("x-request-id", "resp-stream-1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    let mut deltas = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let d: Value = serde_json::from_str(data).unwrap();
        assert_eq!(d["type"], name.as_str());
        assert_eq!(d["sequence_number"], i as u64);
        if name == "response.output_text.delta" {
            deltas.push_str(d["delta"].as_str().unwrap());
        }
    }
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], deltas);
    assert!(!text.contains("[DONE]"));
    let rec = gw.record("resp-stream-1").await;
    assert_eq!(rec["stream"], true);
    assert_eq!(rec["output_text"], deltas);

    // `llmop cost` counts the Responses calls with the others.
    let o = gw.cli(&["cost", "--by", "model", "--since", "1h", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "sim/echo")
        .cloned()
        .unwrap();
    assert_eq!(row["calls"], 2, "{row}");
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_responses_client_reaches_an_anthropic_upstream() {
    let up = Upstream::start(|_, _| {
        Reply::ok(
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 4}
            })
            .to_string(),
        )
    })
    .await;
    let gw = Gateway::start(&format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\n",
        up.url
    ));
    let r = post_json(
        &gw,
        "/v1/responses",
        &json!({
            "model": "claude/claude-x",
            "instructions": "You are terse.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "max_output_tokens": 100
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    // The upstream got a Messages request: instructions as `system`, tools as tools.
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "You are terse.");
    let first = &sent.body["messages"][0]["content"];
    assert!(
        first == "Weather in Oslo?" || first[0]["text"] == "Weather in Oslo?",
        "{}",
        sent.body
    );
    assert_eq!(sent.body["tools"][0]["name"], "get_weather");
    assert_eq!(sent.body["max_tokens"], 100);
    // The client got Responses items: a message, then a function call.
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["name"], "get_weather");
    assert_eq!(v["output"][1]["call_id"], "toolu_1");
    assert_eq!(
        serde_json::from_str::<Value>(v["output"][1]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 4);

    // Continued with previous_response_id: the conversation comes back from the record,
    // without the earlier instructions, and the tool result answers the call.
    let r = post_json(
        &gw,
        "/v1/responses",
        &json!({
            "model": "claude/claude-x",
            "previous_response_id": v["id"],
            "input": [{"type": "function_call_output", "call_id": "toolu_1", "output": "rain"}]
        }),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = up.last();
    assert!(sent.body.get("system").is_none(), "{}", sent.body);
    let msgs = sent.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{}", sent.body);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "toolu_1");

    // GET reads it back; another id is 404 in the OpenAI envelope.
    let got = support::get_json(&gw, &format!("/v1/responses/{}", v["id"].as_str().unwrap())).await;
    assert_eq!(got["id"], v["id"]);
    assert_eq!(got["output"][1]["call_id"], "toolu_1");
    let r = client()
        .get(format!("{}/v1/responses/resp_nope", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "response_not_found");
}

#[tokio::test]
async fn stored_responses_belong_to_their_key() {
    let gw = Gateway::start(&format!("{MOCK}[features]\nrefresh_ms = 50\n"));
    let mk = |name: &str| {
        let o = gw.cli(&["keys", "create", "--name", name, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["key"].as_str().unwrap().to_string()
    };
    let (a, b) = (mk("a"), mk("b"));
    // Keys are read from the store on refresh.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = post_with(
        &gw,
        "/v1/responses",
        &json!({"model": "sim/echo", "input": "mine"}),
        &[("authorization", &format!("Bearer {a}"))],
    )
    .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |key: String| {
        let url = format!("{}/v1/responses/{id}", gw.url);
        async move {
            client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(a.clone()).await, 200);
    assert_eq!(get(b.clone()).await, 404);
    let r = post_with(
        &gw,
        "/v1/responses",
        &json!({"model": "sim/echo", "input": "theirs", "previous_response_id": id}),
        &[("authorization", &format!("Bearer {b}"))],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "previous_response_not_found"
    );
}

fn openai_embeddings(n: usize, dims: usize) -> Reply {
    let data: Vec<Value> = (0..n)
        .rev()
        .map(
            |i| json!({"object": "embedding", "index": i, "embedding": vec![i as f32 + 0.5; dims]}),
        )
        .collect();
    Reply::ok(
        json!({"object": "list", "data": data, "model": "text-embedding-3-small",
               "usage": {"prompt_tokens": 7 * n, "total_tokens": 7 * n}})
        .to_string(),
    )
}

#[tokio::test]
async fn embeddings_through_openai_and_gemini_formats() {
    let oa = Upstream::start(|c, _| {
        let n = c.body["input"].as_array().map_or(1, Vec::len);
        let dims = c.body["dimensions"].as_u64().unwrap_or(3) as usize;
        openai_embeddings(n, dims)
    })
    .await;
    let gem = Upstream::start(|c, _| {
        let n = c.body["requests"].as_array().map_or(0, Vec::len);
        let e: Vec<Value> = (0..n).map(|i| json!({"values": [i as f32, 1.0]})).collect();
        Reply::ok(json!({ "embeddings": e }).to_string())
    })
    .await;
    let gw = Gateway::start(&format!(
        "[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nembedding_models = [\"text-embedding-3-small\"]\n\
         [providers.gem]\nkind = \"gemini\"\nbase_url = \"{}\"\n\
         [prices.\"oa/*\"]\ninput = 0.02\noutput = 0.0\n\
         [store]\nembedding_inputs = \"hash\"\n",
        oa.url, gem.url
    ));
    let r = post_with(
        &gw,
        "/v1/embeddings",
        &json!({"model": "oa/text-embedding-3-small", "input": ["first", "second"], "dimensions": 4}),
        &[("x-request-id", "emb-1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let sent = oa.last();
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.body["dimensions"], 4);
    assert_eq!(sent.body["input"], json!(["first", "second"]));
    // Answers come back in input order whatever order the upstream used.
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["embedding"], json!([0.5, 0.5, 0.5, 0.5]));
    assert_eq!(v["data"][1]["embedding"][0], 1.5);
    assert_eq!(v["usage"]["prompt_tokens"], 14);
    let rec = gw.record("emb-1").await;
    assert_eq!(rec["endpoint"], "/v1/embeddings");
    assert_eq!(rec["input_tokens"], 14);
    assert!((rec["cost_usd"].as_f64().unwrap() - 14.0 * 0.02 / 1e6).abs() < 1e-12);
    // Inputs hashed, never stored; vectors not stored.
    let inputs = rec["input_messages"].as_array().unwrap();
    assert!(inputs[0].as_str().unwrap().starts_with("sha256:"));
    assert!(!rec.to_string().contains("second"));
    assert!(rec["parsed_output"].is_null());

    // Gemini's batchEmbedContents, with its own body and no token count (estimated).
    let r = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem/text-embedding-004", "input": ["a b c", "d"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let sent = gem.last();
    assert_eq!(
        sent.path,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(sent.body["requests"][1]["content"]["parts"][0]["text"], "d");
    assert!(v["data"][1]["embedding"].is_string(), "base64 asked");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // Token ids have no Gemini form: refused, naming the field.
    let r = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem/x", "input": [1, 2, 3]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unsupported_by_target");
}

#[tokio::test]
async fn embeddings_fall_back_only_within_one_embedding_model() {
    let broken = Upstream::start(|_, _| Reply::Json(503, "{}".into(), vec![])).await;
    let same = Upstream::start(|_, _| openai_embeddings(1, 2)).await;
    let other = Upstream::start(|_, _| openai_embeddings(1, 2)).await;
    let cfg = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.b]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.c]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.vectors]\nembeddings = true\ntargets = [\n\
           {{ provider = \"a\", model = \"text-embedding-3-small\" }},\n\
           {{ provider = \"b\", model = \"my-deployment\", embedding_model = \"text-embedding-3-small\" }},\n]\n\
         [routes.mixed]\ntargets = [\n\
           {{ provider = \"a\", model = \"text-embedding-3-small\" }},\n\
           {{ provider = \"c\", model = \"text-embedding-3-large\" }},\n]\n",
        broken.url, same.url, other.url
    );
    let gw = Gateway::start(&cfg);
    let r = post_with(
        &gw,
        "/v1/embeddings",
        &json!({"model": "vectors", "input": "x"}),
        &[("x-request-id", "emb-fb")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(same.count(), 1);
    assert_eq!(same.last().body["model"], "my-deployment");
    let rec = gw.record("emb-fb").await;
    assert_eq!(rec["attempts"].as_array().unwrap().len(), 2);
    // A route whose second target embeds with another model never falls back to it.
    let r = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "mixed", "input": "x"}),
    )
    .await;
    assert_eq!(r.status(), 502);
    assert_eq!(other.count(), 0);

    // `llmop check` refuses an embeddings route that mixes models.
    let bad = cfg.replace("[routes.mixed]", "[routes.mixed]\nembeddings = true");
    let path = gw.write("bad.toml", &bad);
    let o = support::llmop(&["check", "--config", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let out = support::output_text(&o);
    assert!(
        out.contains("routes.mixed") && out.contains("embedding"),
        "{out}"
    );
}

#[tokio::test]
async fn a_budget_refuses_an_embeddings_call_before_the_upstream() {
    let up = Upstream::start(|_, _| openai_embeddings(1, 2)).await;
    let gw = Gateway::start(&format!(
        "[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [prices.\"oa/*\"]\ninput = 1000.0\noutput = 0.0\n\
         [[budgets]]\nscope = \"global\"\nwindow = \"day\"\nhard_usd = 0.01\n",
        up.url
    ));
    let body = json!({"model": "oa/e", "input": "some words to embed"});
    // 7 tokens at $1,000/M: $0.007 a call; the second does not fit in $0.01.
    let r = post_json(&gw, "/v1/embeddings", &body).await;
    assert_eq!(r.status(), 200);
    let mut answered = 1;
    let mut refused = None;
    for _ in 0..3 {
        let r = post_json(&gw, "/v1/embeddings", &body).await;
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 200);
        answered += 1;
    }
    let e = refused.expect("the budget refused a call");
    assert_eq!(e["error"]["code"], "budget_exceeded");
    // Only the answered calls reached the upstream: the refused one never did.
    assert_eq!(up.count(), answered);
    assert!(answered <= 2);
}

#[tokio::test]
async fn mock_embeddings_are_deterministic() {
    let gw = Gateway::start(MOCK);
    let body = json!({"model": "sim/embed", "input": ["the cat sat", "the cat sat", "tax law"], "dimensions": 64});
    let a: Value = post_json(&gw, "/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    let b: Value = post_json(&gw, "/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["data"], b["data"]);
    assert_eq!(a["data"][0]["embedding"].as_array().unwrap().len(), 64);
    assert_eq!(a["data"][0]["embedding"], a["data"][1]["embedding"]);
    assert_ne!(a["data"][0]["embedding"], a["data"][2]["embedding"]);
}

#[tokio::test]
async fn count_tokens_from_the_provider_or_estimated() {
    let up = Upstream::start(|_, _| Reply::ok(json!({"input_tokens": 42}).to_string())).await;
    let gw = Gateway::start(&format!(
        "{MOCK}[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\n",
        up.url
    ));
    let body = json!({
        "model": "claude/claude-x", "system": "be brief",
        "messages": [{"role": "user", "content": "count me"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]
    });
    let r = post_json(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-token-count"], "provider");
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 42);
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.body["system"], "be brief");
    assert!(sent.body.get("max_tokens").is_none(), "{}", sent.body);
    assert_eq!(sent.body["tools"][0]["name"], "f");
    // The mock offers no counting: llmop's estimate, said so.
    let mut b = body.clone();
    b["model"] = json!("sim/echo");
    let r = post_json(&gw, "/v1/messages/count_tokens", &b).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-token-count"], "estimate");
    assert!(
        r.json::<Value>().await.unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
            > 2
    );
    // Errors in Anthropic's envelope.
    let r = post_json(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "sim/echo"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "error");
}

#[tokio::test]
async fn models_list_capabilities_in_both_shapes() {
    let gw = Gateway::start(&format!(
        "{MOCK}[routes.chat]\ntargets = [{{ provider = \"sim\", model = \"echo\" }}]\n\
         [routes.vectors]\nembeddings = true\ntargets = [{{ provider = \"sim\", model = \"embed\" }}]\n"
    ));
    let v = support::get_json(&gw, "/v1/models").await;
    let find = |v: &Value, id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {v}"))
    };
    assert_eq!(find(&v, "chat")["capabilities"]["responses"], true);
    assert_eq!(find(&v, "vectors")["capabilities"]["embeddings"], true);
    assert_eq!(
        find(&v, "vectors")["capabilities"]["chat_completions"],
        false
    );
    assert_eq!(find(&v, "sim/embed")["capabilities"]["embeddings"], true);
    assert_eq!(find(&v, "sim/echo")["capabilities"]["tools"], true);
    let a: Value = client()
        .get(format!("{}/v1/models", gw.url))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(find(&a, "vectors")["type"], "model");
    assert_eq!(find(&a, "vectors")["capabilities"]["embeddings"], true);
}

/// A chat-completions client on a model offered only through the Responses API: the
/// upstream gets a stateless Responses request, the client a chat answer; the
/// reasoning item (with its encrypted content) is kept by llmop and goes back before
/// the call it preceded on the next step.
#[tokio::test]
async fn a_chat_client_reaches_a_responses_only_model() {
    let up = Upstream::start(|c, _| {
        let continued = c.body["input"]
            .as_array()
            .is_some_and(|i| i.iter().any(|it| it["type"] == "function_call_output"));
        match (c.body["stream"] == true, continued) {
            (_, true) => Reply::ok(support::fixture("openai/responses_text.json")),
            (true, false) => Reply::sse(support::fixture("openai/stream_responses.sse")),
            (false, false) => Reply::ok(support::fixture(
                "openai/responses_reasoning_tool_call.json",
            )),
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "[providers.oa]\nkind = \"openai\"\napi = \"responses\"\nbase_url = \"{}/v1\"\n",
        up.url
    ));
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]);
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    for stream in [false, true] {
        let r = post_with(
            &gw,
            "/v1/chat/completions",
            &json!({"model": "oa/o4-mini", "messages": [question], "tools": tools, "stream": stream, "reasoning_effort": "medium"}),
            &[("x-request-id", if stream { "rsp-up-s" } else { "rsp-up-w" })],
        )
        .await;
        assert_eq!(r.status(), 200);
        let sent = up.last();
        assert_eq!(sent.path, "/v1/responses");
        assert_eq!(sent.body["store"], false);
        assert_eq!(sent.body["include"], json!(["reasoning.encrypted_content"]));
        assert_eq!(sent.body["reasoning"]["effort"], "medium");
        assert_eq!(sent.body["tools"][0]["name"], "get_weather");
        assert_eq!(
            sent.body["input"][0]["content"][0]["text"],
            "Weather in Paris?"
        );
        let (call_id, args, probe) = if stream {
            let text = r.text().await.unwrap();
            let mut id = String::new();
            let mut args = String::new();
            let mut content = String::new();
            for (_, d) in sse_events(&text) {
                let Ok(v) = serde_json::from_str::<Value>(&d) else {
                    continue;
                };
                let delta = &v["choices"][0]["delta"];
                if let Some(t) = delta["content"].as_str() {
                    content.push_str(t);
                }
                if let Some(c) = delta["tool_calls"][0].as_object() {
                    if let Some(i) = c.get("id").and_then(Value::as_str) {
                        id = i.to_string();
                    }
                    if let Some(a) = c["function"]["arguments"].as_str() {
                        args.push_str(a);
                    }
                }
            }
            assert_eq!(content, "Let me check.");
            (id, args, "gAAAAABoSTREAM-ENC-PROBE")
        } else {
            let v: Value = r.json().await.unwrap();
            let c = &v["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(
                v["usage"]["completion_tokens_details"]["reasoning_tokens"],
                192
            );
            (
                c["id"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
                "PROBE",
            )
        };
        assert!(args.contains("Paris"), "{args}");
        // The client cannot carry the reasoning item: llmop issued the call's id.
        assert!(call_id.starts_with("llmop_call_"), "{call_id}");
        let rec = gw
            .record(if stream { "rsp-up-s" } else { "rsp-up-w" })
            .await;
        assert!(rec["reasoning_tokens"].as_i64().unwrap() > 0);

        let r = post_json(
            &gw,
            "/v1/chat/completions",
            &json!({"model": "oa/o4-mini", "tools": tools, "messages": [
                question,
                {"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "18C, sunny"}
            ]}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "It is 18 degrees and sunny in Paris."
        );
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 256);
        // The reasoning item went back, encrypted content and all, just before the call
        // it preceded, and the call and its output carry the provider's call id.
        let input = up.last().body["input"].as_array().unwrap().clone();
        let at = input
            .iter()
            .position(|i| i["type"] == "reasoning")
            .expect("reasoning item sent back");
        assert!(
            input[at]["encrypted_content"]
                .as_str()
                .unwrap()
                .contains(probe),
            "{:?}",
            input[at]
        );
        let call = input
            .iter()
            .position(|i| i["type"] == "function_call")
            .unwrap();
        assert!(at < call);
        assert!(input[call]["call_id"]
            .as_str()
            .unwrap()
            .starts_with("call_"));
        let out = input
            .iter()
            .find(|i| i["type"] == "function_call_output")
            .unwrap();
        assert_eq!(out["call_id"], input[call]["call_id"]);
        assert_eq!(out["output"], "18C, sunny");
    }
}

#[tokio::test]
async fn embeddings_bodies_from_the_references() {
    let oa = Upstream::start(|_, _| Reply::ok(support::fixture("openai/embeddings.json"))).await;
    let gem =
        Upstream::start(|_, _| Reply::ok(support::fixture("gemini/batch_embed_contents.json")))
            .await;
    let gw = Gateway::start(&format!(
        "[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.gem]\nkind = \"gemini\"\nbase_url = \"{}\"\n",
        oa.url, gem.url
    ));
    let v: Value = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "oa/text-embedding-3-small", "input": "The food was delicious"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["data"][0]["embedding"][1].as_f64().unwrap() as f32,
        -0.009327292f32
    );
    assert_eq!(v["usage"]["prompt_tokens"], 8);
    assert_eq!(v["model"], "text-embedding-3-small");
    let v: Value = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem/gemini-embedding-001", "input": ["a", "b"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["data"][1]["embedding"][1].as_f64().unwrap() as f32,
        0.011043437f32
    );
    // A count of vectors that does not match the inputs is the upstream's fault.
    let r = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem/gemini-embedding-001", "input": ["a", "b", "c"]}),
    )
    .await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_protocol_error"
    );
}

#[tokio::test]
async fn gemini_counts_tokens_and_embeds_in_batches_it_allows() {
    let up = Upstream::start(|c, _| {
        if c.path.ends_with(":countTokens") {
            return Reply::ok(json!({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}).to_string());
        }
        let n = c.body["requests"].as_array().map_or(0, Vec::len);
        let e: Vec<Value> = (0..n).map(|i| json!({"values": [i as f32]})).collect();
        Reply::ok(json!({ "embeddings": e }).to_string())
    })
    .await;
    let gw = Gateway::start(&format!(
        "[providers.gem]\nkind = \"gemini\"\nbase_url = \"{}\"\n",
        up.url
    ));
    let r = post_json(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "gem/gemini-2.5-flash", "system": "brief", "messages": [{"role": "user", "content": "count me"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-token-count"], "provider");
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 31);
    let sent = up.last();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:countTokens");
    let inner = &sent.body["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-flash");
    assert_eq!(inner["contents"][0]["parts"][0]["text"], "count me");
    assert_eq!(inner["systemInstruction"]["parts"][0]["text"], "brief");

    // 150 inputs: two batches (100 and 50), answered in input order.
    let before = up.count();
    let inputs: Vec<String> = (0..150).map(|i| format!("text {i}")).collect();
    let v: Value = post_json(
        &gw,
        "/v1/embeddings",
        &json!({"model": "gem/gemini-embedding-001", "input": inputs}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(up.count() - before, 2);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 150);
    assert_eq!(data[100]["index"], 100);
    assert_eq!(data[100]["embedding"][0], 0.0);
    assert_eq!(data[149]["embedding"][0], 49.0);
}
