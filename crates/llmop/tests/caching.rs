//! Caching, seen from outside: the response cache (each part of its key, per-key
//! scopes, `cache-control`, streamed hits in both formats, Redis shared by two
//! replicas), idempotency keys (sequential and concurrent duplicates cost one upstream
//! call, another body is 409, a stream's replay is the same content), and provider prompt
//! caching (the fields each provider gets, cached tokens priced).

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{client, fixture, sse_events, Gateway, Reply, Upstream};

/// A gateway whose route `main` goes to an OpenAI-format upstream (gpt-4o prices), and
/// whose route `claude` goes to an Anthropic-format one; `extra` adds to the config.
fn gateway(openai: &Upstream, anthropic: &Upstream, extra: &str) -> Gateway {
    Gateway::start_with_env(
        &format!(
            "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
             [providers.an]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\n\
             [routes.main]\ntargets = [{{ provider = \"up\", model = \"gpt-4o\" }}]\n\
             [routes.claude]\ntargets = [{{ provider = \"an\", model = \"claude-sonnet-4-20250514\" }}]\n\
             [routes.plain]\ntargets = [{{ provider = \"up\", model = \"gpt-4o\" }}]\n\
             {extra}",
            openai.url, anthropic.url
        ),
        &[("UP_KEY", "k")],
    )
}

const CACHED: &str = "[cache.routes.main]\nresponse = true\nttl_s = 60\n";

async fn openai_up() -> Upstream {
    Upstream::start(|c, _| {
        if c.body["stream"] == true {
            Reply::sse(fixture("openai/stream.sse"))
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await
}

async fn anthropic_up() -> Upstream {
    Upstream::start(|_, _| Reply::ok(fixture("anthropic/message.json"))).await
}

fn body(text: &str) -> Value {
    json!({"model": "main", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn chat(gw: &Gateway, id: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn cache_header(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-llmop-cache")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn identical_requests_hit_and_every_input_misses() {
    let (up, an) = (openai_up().await, anthropic_up().await);
    let gw = gateway(&up, &an, CACHED);
    let r = chat(&gw, "c-1", &body("hello"), &[]).await;
    assert_eq!(cache_header(&r), "miss");
    let first: Value = r.json().await.unwrap();
    let r = chat(&gw, "c-2", &body("hello"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_header(&r), "hit");
    assert_eq!(r.headers()["x-llmop-cache-source"], "c-1");
    assert_eq!(r.headers()["x-llmop-cost-usd"], "0");
    let second: Value = r.json().await.unwrap();
    assert_eq!(first["choices"], second["choices"], "the same answer");
    assert_eq!(up.count(), 1, "the hit called no provider");

    // The hit is a recorded call: no tokens, no cost, what it saved, where it came from.
    let rec = gw.record("c-2").await;
    assert_eq!(rec["cache"], "hit");
    assert_eq!(rec["cost_usd"], 0.0);
    assert_eq!(rec["input_tokens"], 0);
    assert_eq!(rec["cache_source"], "c-1");
    let made = gw.record("c-1").await;
    assert_eq!(made["cache"], "miss");
    assert_eq!(rec["saved_usd"], made["cost_usd"]);
    assert!(made["cost_usd"].as_f64().unwrap() > 0.0);
    // The console's page of the call says so (an open gateway's console needs no login).
    let page = client()
        .get(format!("{}/ui/requests/c-2", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<dt>Cache</dt><dd>hit · answer made by"),
        "{html}"
    );
    assert!(html.contains("saved $"), "{html}");

    // Each input of the answer is part of the key.
    let variants = [
        json!({"model": "main", "temperature": 0, "messages": [{"role": "user", "content": "hello!"}]}),
        json!({"model": "main", "temperature": 0, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hello"}]}),
        json!({"model": "main", "temperature": 0, "max_tokens": 7, "messages": [{"role": "user", "content": "hello"}]}),
        json!({"model": "main", "temperature": 0, "seed": 3, "messages": [{"role": "user", "content": "hello"}]}),
        json!({"model": "main", "temperature": 0, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "messages": [{"role": "user", "content": "hello"}]}),
        json!({"model": "main", "temperature": 0, "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hello"}]}),
    ];
    for (i, v) in variants.iter().enumerate() {
        let r = chat(&gw, &format!("v-{i}"), v, &[]).await;
        assert_eq!(cache_header(&r), "miss", "variant {i} is another request");
    }
    assert_eq!(up.count(), 1 + variants.len());
    // Labels are not inputs: `user` and `metadata` do not change the key.
    let mut labelled = body("hello");
    labelled["user"] = json!("someone");
    labelled["metadata"] = json!({"trace": "t-9"});
    let r = chat(&gw, "c-3", &labelled, &[]).await;
    assert_eq!(cache_header(&r), "hit");

    // A route without a rule is not cached (no header at all); sampling is bypassed.
    let r = chat(&gw, "p-1", &json!({"model": "plain", "temperature": 0, "messages": [{"role": "user", "content": "hello"}]}), &[]).await;
    assert_eq!(cache_header(&r), "");
    let hot = json!({"model": "main", "temperature": 0.7, "messages": [{"role": "user", "content": "hello"}]});
    let unset = json!({"model": "main", "messages": [{"role": "user", "content": "hello"}]});
    for (i, b) in [hot, unset].iter().enumerate() {
        let r = chat(&gw, &format!("t-{i}"), b, &[]).await;
        assert_eq!(
            cache_header(&r),
            "bypass",
            "temperature > 0 (or unset) samples"
        );
    }
    let before = up.count();
    let r = chat(&gw, "t-2", &json!({"model": "main", "temperature": 0.7, "messages": [{"role": "user", "content": "hello"}]}), &[]).await;
    assert_eq!(cache_header(&r), "bypass");
    assert_eq!(up.count(), before + 1);

    // cache-control: no-cache reads nothing (but keeps the new answer); no-store neither.
    let r = chat(&gw, "n-1", &body("hello"), &[("cache-control", "no-cache")]).await;
    assert_eq!(cache_header(&r), "bypass");
    assert_eq!(up.count(), before + 2);
    let r = chat(&gw, "n-2", &body("fresh"), &[("cache-control", "no-store")]).await;
    assert_eq!(cache_header(&r), "bypass");
    let r = chat(&gw, "n-3", &body("fresh"), &[]).await;
    assert_eq!(cache_header(&r), "miss", "no-store kept nothing");

    let m = gw.metrics().await;
    assert!(
        m.contains("llmop_cache_lookups_total{outcome=\"hit\""),
        "{m}"
    );
}

#[tokio::test]
async fn streamed_hits_replay_in_both_formats() {
    let (up, an) = (openai_up().await, anthropic_up().await);
    let gw = gateway(&up, &an, CACHED);
    // Made by a whole call, served as a stream to an OpenAI client and an Anthropic one.
    let made: Value = chat(&gw, "s-0", &body("stream me"), &[])
        .await
        .json()
        .await
        .unwrap();
    let text = made["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = body("stream me");
    b["stream"] = json!(true);
    let r = chat(&gw, "s-1", &b, &[]).await;
    assert_eq!(cache_header(&r), "hit");
    let sse = r.text().await.unwrap();
    let events = sse_events(&sse);
    assert_eq!(support::openai_stream_text(&sse), text);
    assert_eq!(events.last().unwrap().1, "[DONE]");

    // The Anthropic format is another request (its own key): made once, then replayed.
    let ab = json!({"model": "main", "max_tokens": 100, "temperature": 0, "stream": true,
                    "messages": [{"role": "user", "content": "stream me"}]});
    let send = |id: &'static str| {
        client()
            .post(format!("{}/v1/messages", gw.url))
            .header("x-request-id", id)
            .header("anthropic-version", "2023-06-01")
            .json(&ab)
            .send()
    };
    let first = send("a-1").await.unwrap();
    assert_eq!(cache_header(&first), "miss");
    let first_text = anthropic_text(&first.text().await.unwrap());
    let second = send("a-2").await.unwrap();
    assert_eq!(cache_header(&second), "hit");
    let body = second.text().await.unwrap();
    assert_eq!(anthropic_text(&body), first_text);
    let names: Vec<String> = sse_events(&body).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(up.count(), 2, "one upstream call per format");
}

fn anthropic_text(sse: &str) -> String {
    sse_events(sse)
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn api_keys_have_their_own_cache_unless_it_is_shared() {
    let (up, an) = (openai_up().await, anthropic_up().await);
    let gw = gateway(
        &up,
        &an,
        "[cache.routes.main]\nresponse = true\n[cache.routes.plain]\nresponse = true\nshared = true\n",
    );
    let mut keys = Vec::new();
    for name in ["tenant-a", "tenant-b"] {
        let o = gw.cli(&[
            "keys",
            "create",
            "--name",
            name,
            "--store",
            &gw.store_url(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    // Once the gateway enforces keys.
    for _ in 0..100 {
        if chat(&gw, "probe", &body("x"), &[]).await.status() == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with = |k: &str| format!("Bearer {k}");
    let (a, b) = (with(&keys[0]), with(&keys[1]));
    let r = chat(&gw, "k-1", &body("secret plan"), &[("authorization", &a)]).await;
    assert_eq!(cache_header(&r), "miss");
    let r = chat(&gw, "k-2", &body("secret plan"), &[("authorization", &b)]).await;
    assert_eq!(
        cache_header(&r),
        "miss",
        "another key never sees tenant a's answer"
    );
    let r = chat(&gw, "k-3", &body("secret plan"), &[("authorization", &a)]).await;
    assert_eq!(cache_header(&r), "hit");
    // A shared rule is one cache for every key.
    let mut shared = body("public faq");
    shared["model"] = json!("plain");
    let r = chat(&gw, "k-4", &shared, &[("authorization", &a)]).await;
    assert_eq!(cache_header(&r), "miss");
    let r = chat(&gw, "k-5", &shared, &[("authorization", &b)]).await;
    assert_eq!(cache_header(&r), "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cache_is_seen_by_two_replicas() {
    let prefix = format!("llmop-test-{}:", std::process::id());
    let (up, an) = (openai_up().await, anthropic_up().await);
    let cfg = format!(
        "{CACHED}[cache]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"{prefix}\"\n"
    );
    let one = gateway(&up, &an, &cfg);
    let two = gateway(&up, &an, &cfg);
    let r = chat(&one, "r-1", &body("shared across replicas"), &[]).await;
    assert_eq!(cache_header(&r), "miss");
    // The write is detached from the call: the other replica sees it within moments.
    let mut seen = String::new();
    for i in 0..50 {
        let r = chat(
            &two,
            &format!("r-2-{i}"),
            &body("shared across replicas"),
            &[],
        )
        .await;
        seen = cache_header(&r);
        if seen == "hit" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "hit");
    // Idempotency across replicas: the key used on one is replayed by the other.
    let h = [("idempotency-key", "wf-42-step-3")];
    let r = chat(&one, "ri-1", &body("durable step"), &h).await;
    assert_eq!(r.status(), 200);
    let n = up.count();
    let mut replayed = false;
    for i in 0..50 {
        let r = chat(&two, &format!("ri-2-{i}"), &body("durable step"), &h).await;
        if r.headers().get("idempotent-replayed").is_some() {
            replayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replayed);
    assert_eq!(up.count(), n, "the replay called no provider");
    support::redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_cost_one_upstream_call() {
    // A slow upstream, so that duplicates arrive while the first call runs.
    let up = Upstream::start(|c, _| {
        if c.body["stream"] == true {
            Reply::Sse(fixture("openai/stream.sse"), Duration::from_millis(40))
        } else {
            std::thread::sleep(Duration::from_millis(300));
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let an = anthropic_up().await;
    let gw = gateway(&up, &an, "");
    let h = [("idempotency-key", "order-7-summary")];
    // Sampling does not matter to idempotency: the retry gets the same answer.
    let b = json!({"model": "plain", "temperature": 1.0, "messages": [{"role": "user", "content": "summarize order 7"}]});
    let (r1, r2, r3) = tokio::join!(
        chat(&gw, "i-1", &b, &h),
        chat(&gw, "i-2", &b, &h),
        chat(&gw, "i-3", &b, &h)
    );
    let mut answers = Vec::new();
    let mut replays = 0;
    for r in [r1, r2, r3] {
        assert_eq!(r.status(), 200);
        replays += usize::from(r.headers().get("idempotent-replayed").is_some());
        answers.push(r.json::<Value>().await.unwrap()["choices"].clone());
    }
    assert_eq!(up.count(), 1, "concurrent duplicates waited for the first");
    assert_eq!(replays, 2);
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    // Later, sequentially: replayed again.
    let r = chat(&gw, "i-4", &b, &h).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(up.count(), 1);
    let rec = gw.record("i-4").await;
    assert_eq!(rec["cache"], "replay");
    assert_eq!(rec["cost_usd"], 0.0);
    // The same key with another body is a conflict.
    let other =
        json!({"model": "plain", "messages": [{"role": "user", "content": "summarize order 8"}]});
    let r = chat(&gw, "i-5", &other, &h).await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    // A malformed key is refused before anything runs.
    let r = chat(&gw, "i-6", &b, &[("idempotency-key", "")]).await;
    assert_eq!(r.status(), 400);

    // A stream: the first is relayed as it comes, the retry replays the same content.
    let mut s = b.clone();
    s["stream"] = json!(true);
    let hs = [("idempotency-key", "order-7-stream")];
    let first = chat(&gw, "is-1", &s, &hs).await.text().await.unwrap();
    let n = up.count();
    let again = chat(&gw, "is-2", &s, &hs).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = again.text().await.unwrap();
    assert_eq!(up.count(), n);
    let content = support::openai_stream_text;
    assert!(!content(&first).is_empty());
    assert_eq!(
        content(&first),
        content(&again),
        "the replay is the same content"
    );
}

#[tokio::test]
async fn a_failed_idempotent_call_runs_again_on_retry() {
    let up = Upstream::start(|_, n| {
        if n == 0 {
            Reply::Json(
                400,
                r#"{"error":{"message":"bad","type":"invalid_request_error"}}"#.into(),
                vec![],
            )
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let an = anthropic_up().await;
    let gw = gateway(&up, &an, "");
    let h = [("idempotency-key", "retry-me")];
    let b = json!({"model": "plain", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(chat(&gw, "f-1", &b, &h).await.status(), 400);
    let r = chat(&gw, "f-2", &b, &h).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn prompt_caching_fields_reach_each_provider_and_are_priced() {
    let (up, an) = (openai_up().await, anthropic_up().await);
    let gw = gateway(
        &up,
        &an,
        "[cache.routes.claude]\nprompt = true\n[cache.routes.main]\nprompt = true\nprompt_cache_key = \"support-bot\"\n",
    );
    // Anthropic: breakpoints after the tools, the system prompt and the conversation.
    let r = chat(&gw, "pc-1", &json!({"model": "claude", "max_tokens": 100, "messages": [
        {"role": "system", "content": "You are a support agent. <long policy text>"},
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "Order 7."}],
        "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]}), &[]).await;
    assert_eq!(r.status(), 200);
    let sent = an.last().body;
    let eph = json!({"type": "ephemeral"});
    assert_eq!(sent["tools"][1]["cache_control"], eph);
    assert!(sent["tools"][0].get("cache_control").is_none());
    assert_eq!(sent["system"][0]["cache_control"], eph);
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.last().unwrap()["content"][0]["cache_control"], eph);
    assert!(
        msgs[0]["content"].is_string(),
        "earlier turns are left alone: {sent}"
    );

    // An Anthropic client's own breakpoints are kept (with their ttl), and llmop adds
    // none where the client placed one.
    let r = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-request-id", "pc-2")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "plain", "max_tokens": 10,
            "system": [{"type": "text", "text": "static", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": "Hi"}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    // (to an OpenAI target the breakpoints mean nothing: not sent)
    assert!(!up.last().body.to_string().contains("cache_control"));

    // OpenAI: the configured prompt_cache_key.
    let r = chat(&gw, "pc-3", &body("hello"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body["prompt_cache_key"], "support-bot");
    // The fixture's usage has 4 cached prompt tokens of 19: priced at the cached rate.
    let rec = gw.record("pc-3").await;
    assert_eq!(rec["cached_tokens"], 4);
    let want = (15.0 * 2.50 + 4.0 * 1.25 + 10.0 * 10.0) / 1e6;
    assert!((rec["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12);
    // Anthropic's fixture: 1,000 read and 100 written; the write is recorded.
    let rec = gw.record("pc-1").await;
    assert_eq!(rec["cached_tokens"], 1000);
    assert_eq!(rec["cache_write_tokens"], 100);
}

#[tokio::test]
async fn an_anthropic_clients_own_breakpoints_reach_anthropic() {
    let an = anthropic_up().await;
    let up = openai_up().await;
    let gw = gateway(&up, &an, "");
    let r = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude", "max_tokens": 10,
            "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "system": [{"type": "text", "text": "static", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "question"}]}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sent = an.last().body;
    assert_eq!(sent["system"][0]["cache_control"]["ttl"], "1h");
    assert_eq!(sent["tools"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert!(
        sent["messages"][0]["content"][1]
            .get("cache_control")
            .is_none(),
        "no rule: llmop adds none"
    );
}

fn completion(text: &str) -> String {
    json!({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
    .to_string()
}

#[tokio::test]
async fn a_cascade_escalates_exactly_when_acceptance_fails() {
    // The cheap model knows the easy questions; on the others it hedges.
    let cheap = Upstream::start(|c, _| {
        let q = c.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Reply::ok(completion(if q.contains("easy") {
            r#"{"answer": "cheap"}"#
        } else if q.contains("prose") {
            "Here you go: answer"
        } else {
            "I am not sure."
        }))
    })
    .await;
    let big = Upstream::start(|_, _| Reply::ok(completion(r#"{"answer": "big"}"#))).await;
    let gw = Gateway::start_with_env(
        &format!(
            "[providers.cheap]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
             [providers.big]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
             [prices.\"cheap/*\"]\ninput = 0.1\noutput = 0.4\n[prices.\"big/*\"]\ninput = 10.0\noutput = 40.0\n\
             [routes.tiered]\nstrategy = \"cascade\"\ntimeout_ms = 5000\n\
             targets = [{{ provider = \"cheap\", model = \"small\" }}, {{ provider = \"big\", model = \"large\" }}]\n\
             accept = {{ json = true, reject_patterns = [\"not sure\"] }}\n",
            cheap.url, big.url
        ),
        &[("UP_KEY", "k")],
    );
    let ask = |id: &'static str, q: &'static str, stream: bool| {
        chat_owned(
            &gw,
            id,
            json!({"model": "tiered", "stream": stream, "messages": [{"role": "user", "content": q}]}),
        )
    };
    let r = ask("x-easy", "an easy one", false).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        r#"{"answer": "cheap"}"#
    );
    let r = ask("x-hard", "a hard one", false).await;
    assert_eq!(r.headers()["x-llmop-provider"], "big");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        r#"{"answer": "big"}"#
    );
    let r = ask("x-prose", "prose please", false).await;
    assert_eq!(
        r.headers()["x-llmop-provider"],
        "big",
        "not JSON: escalated"
    );
    // A stream is checked whole, then relayed.
    let r = ask("x-stream", "a hard one", true).await;
    let text = support::openai_stream_text(&r.text().await.unwrap());
    assert_eq!(text, r#"{"answer": "big"}"#);
    assert_eq!(cheap.count(), 4);
    assert_eq!(big.count(), 3, "only the rejected answers escalated");

    // Each escalation is an attempt with its reason; both answers are paid for.
    let rec = gw.record("x-hard").await;
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["retry_reason"], "cascade_rejected_pattern");
    assert_eq!(
        gw.record("x-prose").await["attempts"][0]["retry_reason"],
        "cascade_not_json"
    );
    let cheap_cost = (100.0 * 0.1 + 20.0 * 0.4) / 1e6;
    let big_cost = (100.0 * 10.0 + 20.0 * 40.0) / 1e6;
    assert!((rec["cost_usd"].as_f64().unwrap() - (cheap_cost + big_cost)).abs() < 1e-12);
    assert!((rec["baseline_usd"].as_f64().unwrap() - big_cost).abs() < 1e-12);
    let easy = gw.record("x-easy").await;
    assert_eq!(easy["attempts"].as_array().unwrap().len(), 1);
    assert!((easy["baseline_usd"].as_f64().unwrap() - big_cost).abs() < 1e-12);

    // `llmop cost --savings` reports the cascade against the last target.
    let o = gw.cli(&["cost", "--savings", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let calls: i64 = rows
        .iter()
        .map(|r| r["cascade_calls"].as_i64().unwrap())
        .sum();
    let escalated: i64 = rows
        .iter()
        .map(|r| r["cascade_escalated"].as_i64().unwrap())
        .sum();
    assert_eq!((calls, escalated), (4, 3));
    let o = gw.cli(&["cost", "--savings"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("escalated") && text.contains("saved"),
        "{text}"
    );
}

async fn chat_owned(gw: &Gateway, id: &'static str, body: Value) -> reqwest::Response {
    chat(gw, id, &body, &[]).await
}

#[tokio::test]
async fn a_session_shows_its_input_growth_and_what_the_prompt_cache_served() {
    // Anthropic reports the input apart from what its cache read and wrote: each turn
    // re-sends the history, of which all but the newest part is read from the cache.
    let an = Upstream::start(|c, _| {
        let turns = c.body["messages"].as_array().map_or(0, Vec::len) as u64;
        Reply::ok(
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
                   "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 50, "cache_read_input_tokens": 400 * (turns - 1),
                             "cache_creation_input_tokens": 400, "output_tokens": 20}})
            .to_string(),
        )
    })
    .await;
    let up = openai_up().await;
    let gw = gateway(&up, &an, "[cache.routes.claude]\nprompt = true\n");
    let mut messages = vec![json!({"role": "user", "content": "step 1"})];
    for turn in 1..=3 {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-llmop-session", "agent-run-1")
            .header("x-request-id", format!("turn-{turn}"))
            .json(&json!({"model": "claude", "max_tokens": 50, "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        messages.push(json!({"role": "assistant", "content": "ok"}));
        messages.push(json!({"role": "user", "content": format!("step {}", turn + 1)}));
    }
    // Wait for the last record, then read the session.
    gw.record("turn-3").await;
    let o = gw.cli(&["sessions", "agent-run-1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let turns: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let input: Vec<i64> = turns
        .iter()
        .map(|t| t["input_tokens"].as_i64().unwrap())
        .collect();
    let cached: Vec<i64> = turns
        .iter()
        .map(|t| t["cached_tokens"].as_i64().unwrap())
        .collect();
    assert_eq!(
        input,
        vec![450, 1250, 2050],
        "the input grows with the history"
    );
    assert_eq!(
        cached,
        vec![0, 800, 1600],
        "and the cache serves the repeated prefix"
    );
    let o = gw.cli(&["sessions", "agent-run-1"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("+800") && text.contains("read from the provider's prompt cache"),
        "{text}"
    );
    let o = gw.cli(&["sessions", "--json"]);
    let list: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["session"], "agent-run-1");
    assert_eq!(list[0]["calls"], 3);
}

/// A cheap upstream that hedges on everything, an expensive one that answers JSON; each
/// waits `delay` before answering.
async fn tiers(delay: Duration) -> (Upstream, Upstream) {
    let cheap = Upstream::start(move |_, _| {
        std::thread::sleep(delay);
        Reply::ok(completion("I am not sure."))
    })
    .await;
    let big = Upstream::start(move |_, _| {
        std::thread::sleep(delay);
        Reply::ok(completion(r#"{"summary": "big", "urgent": false}"#))
    })
    .await;
    (cheap, big)
}

fn tiered_config(cheap: &Upstream, big: &Upstream, timeout_ms: u64, extra: &str) -> String {
    format!(
        "[providers.cheap]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
         [providers.big]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
         [routes.tiered]\nstrategy = \"cascade\"\ntimeout_ms = {timeout_ms}\n\
         targets = [{{ provider = \"cheap\", model = \"small\" }}, {{ provider = \"big\", model = \"large\" }}]\n\
         [features]\nrefresh_ms = 50\n{extra}",
        cheap.url, big.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_stays_within_the_routes_deadline() {
    // Each answer takes 400 ms; the route allows 600: the escalation cannot finish.
    let (cheap, big) = tiers(Duration::from_millis(400)).await;
    let gw = Gateway::start_with_env(
        &tiered_config(
            &cheap,
            &big,
            600,
            "[routes.tiered.accept]\nreject_patterns = [\"not sure\"]\n",
        ),
        &[("UP_KEY", "k")],
    );
    let r = chat(
        &gw,
        "d-1",
        &json!({"model": "tiered", "messages": [{"role": "user", "content": "q"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 504, "{:?}", r.text().await);
    // The escalation was cut by the deadline (the gateway's own account of it).
    let rec = gw.record("d-1").await;
    assert_eq!(rec["error_code"], "upstream_timeout", "{rec}");
    assert_eq!(
        rec["attempts"][0]["retry_reason"],
        "cascade_rejected_pattern"
    );
    assert_eq!(rec["attempts"][1]["provider"], "big", "{rec}");
    assert_eq!(rec["attempts"][1]["error"], "upstream_timeout", "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_on_a_cascade_route_escalates_when_its_parser_refuses_and_is_cached() {
    let (cheap, big) = tiers(Duration::ZERO).await;
    let gw = Gateway::start_with_env(
        &tiered_config(
            &cheap,
            &big,
            5000,
            "[cache.features.triage]\nresponse = true\n",
        ),
        &[("UP_KEY", "k")],
    );
    let v = gw
        .push_feature(
            "name = \"triage\"\nroute = \"tiered\"\n[variables]\nticket = { type = \"string\" }\n\
             [params]\ntemperature = 0\n\
             [[messages]]\nrole = \"system\"\ntemplate = \"Long static policy text.\"\ncache = true\n\
             [[messages]]\nrole = \"user\"\ntemplate = \"{{ ticket }}\"\n\
             [output]\nparser = \"json\"\n\
             schema = { type = \"object\", required = [\"summary\", \"urgent\"] }\n\
             on_parse_failure = \"error\"\n",
        )
        .await;
    gw.admin_features(
        "/triage/deploy",
        json!({"env": "prod", "version": v, "reason": "t"}),
    )
    .await;
    let invoke = |id: &'static str| {
        client()
            .post(format!("{}/v1/features/triage/invoke", gw.url))
            .header("x-request-id", id)
            .json(&json!({"variables": {"ticket": "the box is damaged"}}))
            .send()
    };
    let r = invoke("f-1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-provider"], "big");
    assert_eq!(cache_header(&r), "miss");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["output"]["parsed"]["summary"], "big");
    let rec = gw.record("f-1").await;
    assert_eq!(rec["attempts"][0]["retry_reason"], "cascade_parse_failed");
    // The system message the feature marked carries a breakpoint only to Anthropic;
    // an OpenAI target never sees cache_control.
    assert!(!big.last().body.to_string().contains("cache_control"));
    // The same invoke again: served from the cache, parsed as before, nothing called.
    let (nc, nb) = (cheap.count(), big.count());
    let r = invoke("f-2").await.unwrap();
    assert_eq!(cache_header(&r), "hit");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["output"]["parsed"]["summary"], "big");
    assert_eq!(body["parse_status"], "ok");
    assert_eq!((cheap.count(), big.count()), (nc, nb));
}

#[test]
fn check_warns_about_a_cascade_not_ordered_cheapest_first() {
    let o = support::llmop_with_config(
        &["check"],
        "[providers.oa]\nkind = \"openai\"\napi_key_env = \"NOT_SET_HERE\"\n\
         [routes.tiered]\nstrategy = \"cascade\"\n\
         targets = [{ provider = \"oa\", model = \"gpt-4o\" }, { provider = \"oa\", model = \"gpt-4o-mini\" }]\n",
    );
    let text = support::output_text(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("list cascade targets cheapest first"),
        "{text}"
    );
    let o = support::llmop_with_config(
        &["check"],
        "[providers.oa]\nkind = \"openai\"\napi_key_env = \"NOT_SET_HERE\"\n\
         [routes.tiered]\nstrategy = \"cascade\"\ntargets = [{ provider = \"oa\", model = \"gpt-4o\" }]\n",
    );
    assert!(!o.status.success());
    assert!(support::output_text(&o).contains("a cascade needs at least two targets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_single_token_run_is_cached_and_idempotent_like_any_request() {
    let (up, an) = (openai_up().await, anthropic_up().await);
    let gw = gateway(&up, &an, CACHED);
    // 4 MB of one character: hashed off the runtime's hot thread, keyed like any other.
    let huge = body(&"x".repeat(4 << 20));
    let h = [("idempotency-key", "huge-1")];
    let r = chat(&gw, "h-1", &huge, &h).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_header(&r), "miss");
    let r = chat(&gw, "h-2", &huge, &h).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let r = chat(&gw, "h-3", &huge, &[]).await;
    assert_eq!(cache_header(&r), "hit");
    assert_eq!(up.count(), 1);
}
