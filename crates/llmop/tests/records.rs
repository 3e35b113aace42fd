//! Every call leaves a whole record, read back through the gateway's own API and CLI:
//! each field checked for a whole call, a stream, a tool call, an upstream error, calls
//! refused before any upstream call; listing, paging, feedback, strict durability,
//! draining at SIGTERM, retention and replay.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{client, fixture, get_json, llmop, post_with, Gateway, PgDb, Reply, Upstream};

const KEY: &str = "sk-upstream-secret-for-records";

fn config(upstream: &Upstream, extra: &str) -> String {
    format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"UP_KEY\"\n\
         [providers.ant]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"UP_KEY\"\n\
         [routes.main]\ntargets = [{{ provider = \"up\", model = \"gpt-4.1\" }}]\n{extra}",
        upstream.url, upstream.url
    )
}

fn start(upstream: &Upstream, extra: &str) -> Gateway {
    Gateway::start_with_env(&config(upstream, extra), &[("UP_KEY", KEY)])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_whole_call_is_recorded_field_by_field() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = start(&up, "");
    let before = now_ms();
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("authorization", "Bearer sk-client-key-never-stored")
        .header("x-request-id", "rec-whole")
        .header("x-llmop-env", "prod")
        .header("x-llmop-user", "u-1")
        .header("x-llmop-session", "s-1")
        .header("x-llmop-feature", "greeter")
        .header("x-llmop-tags", "team=growth,tier=free")
        .json(&json!({
            "model": "main",
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hello?"}
            ],
            "temperature": 0.3,
            "max_tokens": 50,
            "stop": ["\n\n"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = gw.record("rec-whole").await;

    assert_eq!(r["request_id"], "rec-whole");
    let created = r["created_at_ms"].as_i64().unwrap();
    assert!(created >= before - 5 && created <= now_ms(), "{created}");
    assert_eq!(r["endpoint"], "/v1/chat/completions");
    assert_eq!(r["env"], "prod");
    assert_eq!(r["key_id"], Value::Null, "no API keys yet");
    assert_eq!(r["user"], "u-1");
    assert_eq!(r["session"], "s-1");
    assert_eq!(r["feature"], "greeter");
    for empty in [
        "feature_version",
        "content_hash",
        "arm",
        "replay_of",
        "parse_status",
        "ttft_ms",
        "rendered_prompt",
        "parsed_output",
        "feedback",
        "error_code",
    ] {
        assert_eq!(r[empty], Value::Null, "{empty}");
    }
    assert_eq!(r["shadow"], false);
    // gpt-4.1 from the built-in catalog: 15 plain + 4 cached prompt tokens, 10 output.
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (15.0 * 2.0 + 4.0 * 0.5 + 10.0 * 8.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(r["route"], "main");
    assert_eq!(r["stream"], false);
    assert_eq!(r["provider"], "up");
    assert_eq!(r["model"], "gpt-4.1");
    assert_eq!(r["upstream_id"], "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT");
    assert_eq!(r["status"], 200);
    assert_eq!(r["client_disconnected"], false);
    assert_eq!(
        (&r["input_tokens"], &r["output_tokens"], &r["cached_tokens"]),
        (&json!(19), &json!(10), &json!(4))
    );
    assert!(r["latency_ms"].as_i64().unwrap() >= 0);
    assert_eq!(r["tags"], json!({"team": "growth", "tier": "free"}));
    let attempts = r["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["provider"], "up");
    assert_eq!(attempts[0]["model"], "gpt-4.1");
    assert_eq!(attempts[0]["error"], Value::Null);
    assert_eq!(attempts[0]["retry_reason"], Value::Null);
    assert_eq!(r["request_params"]["model"], "main");
    assert_eq!(r["request_params"]["temperature"], 0.3);
    assert_eq!(r["request_params"]["max_tokens"], 50);
    assert_eq!(r["request_params"]["stop"], json!(["\n\n"]));
    assert_eq!(
        r["input_messages"],
        json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"}])
    );
    assert_eq!(r["output_text"], "Hello! How can I assist you today?");
    assert_eq!(r["output_tool_calls"], json!([]));
    let text = format!("{r}{}", gw.store_bytes());
    assert!(!text.contains("sk-client-key-never-stored"));
    assert!(!text.contains(KEY));

    // Feedback lands on the record.
    let fb = client()
        .post(format!("{}/v1/requests/rec-whole/feedback", gw.url))
        .json(&json!({"score": 0.5, "label": "helpful", "comment": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fb.status(), 200);
    let r = gw.record("rec-whole").await;
    assert_eq!(r["feedback"]["score"], 0.5);
    assert_eq!(r["feedback"]["label"], "helpful");
    assert_eq!(r["feedback"]["comment"], "fine");
    // Feedback on an unknown record, or without content, is refused.
    let fb = client()
        .post(format!("{}/v1/requests/nope/feedback", gw.url))
        .json(&json!({"score": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(fb.status(), 404);
    let body: Value = fb.json().await.unwrap();
    assert_eq!(body["error"]["code"], "record_not_found");
    let fb = client()
        .post(format!("{}/v1/requests/rec-whole/feedback", gw.url))
        .json(&json!({"stars": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(fb.status(), 400);
}

#[tokio::test]
async fn a_stream_after_a_fallback_is_recorded_with_both_attempts() {
    // The first target fails with 503; the second streams a text and a tool call in
    // Anthropic's format, to a client speaking OpenAI's.
    let up = Upstream::start(|c, _| {
        if c.path.starts_with("/v1/chat/completions") {
            Reply::Json(
                503,
                r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
                vec![],
            )
        } else {
            Reply::sse(fixture("anthropic/stream_tool_use.sse"))
        }
    })
    .await;
    let gw = start(
        &up,
        "[routes.fb]\ntargets = [{ provider = \"up\", model = \"gpt-4.1\" }, { provider = \"ant\", model = \"claude-sonnet-4-20250514\" }]\n",
    );
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "rec-stream")
        .json(&json!({
            "model": "fb",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather in SF?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.text().await.unwrap();
    let r = gw.record("rec-stream").await;
    assert_eq!(r["stream"], true);
    assert_eq!(r["status"], 200);
    assert_eq!(r["route"], "fb");
    assert_eq!(r["provider"], "ant");
    assert_eq!(r["model"], "claude-sonnet-4-20250514");
    assert_eq!(r["upstream_id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
    let a = r["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0]["provider"], "up");
    assert_eq!(a[0]["error"], "upstream_error");
    assert_eq!(a[0]["upstream_status"], 503);
    assert_eq!(a[0]["retry_reason"], "fallback");
    assert_eq!(a[1]["provider"], "ant");
    assert_eq!(a[1]["error"], Value::Null);
    assert!(r["ttft_ms"].as_i64().is_some());
    assert!(r["ttft_ms"].as_i64() <= r["latency_ms"].as_i64());
    assert_eq!(r["output_text"], "Okay, let's check the weather.");
    assert_eq!(
        r["output_tool_calls"],
        json!([{"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "arguments": "{\"location\": \"San Francisco, CA\"}"}])
    );
    assert_eq!(r["input_tokens"], 472);
    assert!(r["output_tokens"].as_i64().unwrap() > 2);
    assert_eq!(
        r["request_params"]["tools"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(r["request_params"]["stream"], true);
}

#[tokio::test]
async fn a_whole_tool_call_is_recorded_without_output_text() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/tool_call.json"))).await;
    let gw = start(&up, "");
    let resp = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-request-id", "rec-tool")
        .json(&json!({
            "model": "main",
            "max_tokens": 100,
            "metadata": {"user_id": "anthropic-user"},
            "messages": [{"role": "user", "content": "Weather in Boston?"}],
            "tools": [{"name": "get_current_weather", "input_schema": {"type": "object"}}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = gw.record("rec-tool").await;
    assert_eq!(r["endpoint"], "/v1/messages");
    assert_eq!(r["user"], "anthropic-user");
    assert_eq!(r["output_text"], Value::Null);
    let calls = r["output_tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["name"], "get_current_weather");
    assert!(calls[0]["arguments"].as_str().unwrap().contains("Boston"));
    // Recorded in the one documented shape whatever the client spoke.
    assert_eq!(r["input_messages"][0]["role"], "user");
    assert_eq!(r["request_params"]["max_tokens"], 100);
}

#[tokio::test]
async fn an_upstream_error_is_recorded() {
    let up = Upstream::start(|_, _| {
        Reply::Json(400, fixture("openai/error_400_invalid_value.json"), vec![])
    })
    .await;
    let gw = start(&up, "");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "rec-upstream-err")
        .json(&json!({"model": "up/gpt-4.1", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    let r = gw.record("rec-upstream-err").await;
    assert_eq!(r["status"], status);
    assert_eq!(r["error_code"], body["error"]["code"]);
    assert_eq!(r["route"], Value::Null);
    assert_eq!(r["provider"], Value::Null, "no target answered");
    let a = r["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["upstream_status"], 400);
    assert_eq!(a[0]["error"], "upstream_bad_request");
    assert_eq!(r["output_text"], Value::Null);
    assert_eq!(r["input_tokens"], Value::Null, "unknown, not zero");
    assert_eq!(r["input_messages"][0]["content"], "x");
}

#[tokio::test]
async fn calls_refused_before_any_upstream_call_are_recorded() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = start(&up, "");
    let bad = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "rec-bad-json")
        .header("x-llmop-user", "u-bad")
        .body("{\"model\": \"main\", \"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "rec-unknown-model")
        .json(&json!({"model": "nobody/knows", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let r = gw.record("rec-bad-json").await;
    assert_eq!(r["status"], 400);
    assert_eq!(r["error_code"], "invalid_request");
    assert_eq!(r["user"], "u-bad");
    assert_eq!(r["attempts"], json!([]));
    assert_eq!(r["provider"], Value::Null);
    assert_eq!(
        r["request_params"]["invalid_body"],
        "{\"model\": \"main\", \"messages\": ["
    );
    assert_eq!(r["input_messages"], json!([]));

    let r = gw.record("rec-unknown-model").await;
    assert_eq!(r["status"], 404);
    assert_eq!(r["error_code"], "model_not_found");
    assert_eq!(r["attempts"], json!([]));
    assert_eq!(r["request_params"]["model"], "nobody/knows");
    assert_eq!(r["input_messages"][0]["content"], "x");
    assert_eq!(up.count(), 0, "no upstream call was made");
}

#[tokio::test]
async fn list_filters_pages_and_refuses_bad_parameters() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = start(&up, "[store]\ndurability = \"strict\"\n");
    for i in 0..7 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        let model = if i == 6 { "nope/x" } else { "main" };
        client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", format!("list-{i}"))
            .header("x-llmop-user", user)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
    }
    let get = |q: &'static str| {
        let url = format!("{}/v1/requests?{q}", gw.url);
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = get("user=even").await;
    assert_eq!(s, 200);
    assert_eq!(
        ids(&v),
        ["list-6", "list-4", "list-2", "list-0"],
        "newest first"
    );
    let (_, v) = get("status=error").await;
    assert_eq!(ids(&v), ["list-6"]);
    let (_, v) = get("status=200&user=odd").await;
    assert_eq!(ids(&v), ["list-5", "list-3", "list-1"]);
    let (_, v) = get("since=1h&until=2999-01-01").await;
    assert_eq!(ids(&v).len(), 7);

    // Paging: three pages of 3, 3 and 1, no record twice, none missed.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/v1/requests?limit=3&cursor={c}", gw.url),
            None => format!("{}/v1/requests?limit=3", gw.url),
        };
        let v: Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(ids(&v));
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(v["has_more"], true);
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7)
            .rev()
            .map(|i| format!("list-{i}"))
            .collect::<Vec<_>>()
    );

    for q in [
        "limit=0",
        "users=x",
        "status=great",
        "cursor=garbage",
        "since=soon",
    ] {
        let (s, v) = get(q).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let r = client()
        .get(format!("{}/v1/requests/does-not-exist", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
}

/// A search by any id finds a call by its provider's answer id with the provider-id
/// index (`index_provider_ids = true`) and without it (the default: by a scan), and by
/// its request id and session either way; an id of no call finds nothing.
#[tokio::test]
async fn a_search_finds_the_providers_id_with_or_without_its_index() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    for extra in [
        "[store]\ndurability = \"strict\"\n",
        "[store]\ndurability = \"strict\"\nindex_provider_ids = true\n",
    ] {
        let gw = start(&up, extra);
        let resp = post_with(
            &gw,
            "/v1/chat/completions",
            &json!({"model": "main", "messages": [{"role": "user", "content": "x"}]}),
            &[
                ("x-request-id", "search-me"),
                ("x-llmop-session", "search-session"),
            ],
        )
        .await;
        assert_eq!(resp.status(), 200);
        let found = |q: &'static str| {
            let gw = &gw;
            async move {
                get_json(gw, &format!("/v1/requests?q={q}")).await["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["request_id"].as_str().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
            }
        };
        let one = vec!["search-me".to_string()];
        assert_eq!(
            found("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT").await,
            one,
            "{extra}"
        );
        assert_eq!(found("search-me").await, one, "{extra}");
        assert_eq!(found("search-session").await, one, "{extra}");
        assert!(found("chatcmpl-of-no-call").await.is_empty(), "{extra}");
    }
}

#[tokio::test]
async fn strict_durability_answers_only_after_the_commit() {
    let up = Upstream::start(|c, _| {
        if c.body["stream"] == true {
            Reply::sse(fixture("openai/stream.sse"))
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let gw = start(&up, "[store]\ndurability = \"strict\"\n");
    for i in 0..10 {
        let id = format!("strict-{i}");
        let stream = i % 2 == 1;
        let resp = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", &id)
            .json(&json!({"model": "main", "stream": stream, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
        // No waiting: the record was committed before the answer (or the stream's last
        // event) was sent.
        let r = client()
            .get(format!("{}/v1/requests/{id}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id} not committed when answered");
    }
    // The writer's counters are on /metrics.
    let m = gw.metrics().await;
    assert!(m.contains("llmop_records_written_total 10"), "{m}");
    assert!(m.contains("llmop_records_lost_total 0"), "{m}");
    assert!(m.contains("llmop_records_queue_depth 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_every_queued_record_before_exit() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let mut gw = start(&up, "");
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/v1/chat/completions", gw.url);
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("x-request-id", format!("drain-{i:03}"))
                .json(&json!({"model": "main", "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let status = gw.terminate(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    let out = llmop(&[
        "query",
        "--store",
        &gw.store_url(),
        "--json",
        "SELECT COUNT(*) AS n FROM records WHERE request_id LIKE 'drain-%'",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0][0], n);
}

#[tokio::test]
async fn retention_purges_old_records_in_the_background() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    // A store that already holds a record from 40 days ago.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let store = llmop_store::Store::open(&url).await.unwrap();
        let mut old = llmop_store::Record::new("ancient", now_ms() - 40 * 86_400_000, "/x");
        old.status = 200;
        let mut recent = llmop_store::Record::new("recent", now_ms() - 86_400_000, "/x");
        recent.status = 200;
        store.insert_batch(&[old, recent]).await.unwrap();
        store.close().await;
    }
    let gw = start(
        &up,
        &format!("[store]\nurl = \"{url}\"\nretention_days = 30\n"),
    );
    let start = std::time::Instant::now();
    loop {
        let r = client()
            .get(format!("{}/v1/requests/ancient", gw.url))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "not purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.record("recent").await;
}

// Multi-threaded: the CLI runs as a blocking child process while the fake upstream,
// on this test's runtime, must keep answering the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_shows_lists_queries_and_replays() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = start(&up, "[store]\ndurability = \"strict\"\n");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "cli-orig")
        .header("x-llmop-user", "carol")
        .json(&json!({"model": "main", "temperature": 0.1, "messages": [{"role": "user", "content": "Say hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let store = gw.store_url();

    let out = llmop(&["requests", "show", "cli-orig", "--store", &store]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "cli-orig",
        "status    200",
        "up/gpt-4.1",
        "1. up/gpt-4.1   ok",
        "[user] Say hi",
        "Hello! How can I assist you today?",
        "in 19 (cached 4)   out 10",
        "user carol",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let out = llmop(&["requests", "show", "cli-orig", "--json", "--store", &store]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["request_id"], "cli-orig");
    let out = llmop(&["requests", "show", "missing", "--store", &store]);
    assert_eq!(out.status.code(), Some(1));

    let out = llmop(&[
        "requests", "list", "--user", "carol", "--json", "--store", &store,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);

    // Read-only SQL: answers reads, refuses writes and changes nothing.
    let out = llmop(&[
        "query",
        "--store",
        &store,
        "SELECT user_id, status FROM records",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("carol"));
    let out = llmop(&["query", "--store", &store, "DELETE FROM records"]);
    assert_eq!(out.status.code(), Some(1));
    let out = llmop(&[
        "query",
        "--store",
        &store,
        "--json",
        "SELECT COUNT(*) FROM records",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0][0], 1);

    // Replay on another model: a new call, recorded and linked to the original.
    let out = llmop(&[
        "replay",
        "cli-orig",
        "--model",
        "up/gpt-4o-mini",
        "--gateway",
        &gw.url,
        "--store",
        &store,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["original"]["request_id"], "cli-orig");
    assert_eq!(v["replay"]["replay_of"], "cli-orig");
    assert_eq!(v["replay"]["model"], "gpt-4o-mini");
    assert_eq!(v["replay"]["user"], "carol");
    let sent = up.last();
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    assert_eq!(sent.body["temperature"], 0.1);
    assert_eq!(sent.body["messages"][0]["content"], "Say hi");
    // The human view prints both answers side by side.
    let out = llmop(&[
        "replay",
        "cli-orig",
        "--gateway",
        &gw.url,
        "--store",
        &store,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("original") && text.contains("replay"),
        "{text}"
    );
    assert!(text.contains("outputs are identical"), "{text}");
}

#[tokio::test]
async fn two_replicas_share_a_postgres_store() {
    let db = PgDb::create().await;
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let extra = format!("[store]\nurl = \"{}\"\ndurability = \"strict\"\n", db.url);
    let a = start(&up, &extra);
    let b = start(&up, &extra);
    for (gw, id) in [(&a, "pg-a"), (&b, "pg-b")] {
        let resp = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", id)
            .json(&json!({"model": "main", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Each replica finds the other's record at once (strict: committed before answering).
    for (gw, id) in [(&a, "pg-b"), (&b, "pg-a")] {
        let r: Value = client()
            .get(format!("{}/v1/requests/{id}", gw.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["output_text"], "Hello! How can I assist you today?");
        assert_eq!(r["input_tokens"], 19);
    }
    let v: Value = client()
        .get(format!("{}/v1/requests", a.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn a_stream_cut_mid_way_is_recorded_with_its_partial_output() {
    // Three frames (role, "Hello", " from"), then the connection breaks.
    let up = Upstream::start(|_, _| Reply::SseCut(fixture("openai/stream.sse"), 3)).await;
    let gw = start(&up, "");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "rec-cut")
        .json(&json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the stream had started");
    let body = resp.text().await.unwrap();
    assert!(body.contains("error"), "{body}");
    let r = gw.record("rec-cut").await;
    assert_eq!(r["status"], 200);
    assert!(
        r["error_code"].as_str().unwrap().starts_with("upstream_"),
        "{r}"
    );
    assert_eq!(r["client_disconnected"], false);
    assert_eq!(r["output_text"], "Hello from");
    assert_eq!(r["output_tokens"], Value::Null);
}

/// A client reads its own call's record, or sends feedback on it, the moment it has the
/// answer: the record is still in the writer's batch then (committed moments later), and
/// the read waits for it rather than answering 404. An id that never was is still 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_record_and_sends_feedback_at_once() {
    let gw = Gateway::start("[providers.sim]\nkind = \"mock\"\n");
    let body = json!({"model": "sim/echo", "messages": [{"role": "user", "content": "hi"}]});
    for i in 0..10 {
        let id = format!("at-once-{i}");
        let r = post_with(&gw, "/v1/chat/completions", &body, &[("x-request-id", &id)]).await;
        assert_eq!(r.status(), 200);
        let r = client()
            .get(format!("{}/v1/requests/{id}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
        let rec: Value = r.json().await.unwrap();
        assert_eq!(rec["request_id"], id.as_str());

        let id = format!("feedback-at-once-{i}");
        let r = post_with(&gw, "/v1/chat/completions", &body, &[("x-request-id", &id)]).await;
        assert_eq!(r.status(), 200);
        let r = client()
            .post(format!("{}/v1/requests/{id}/feedback", gw.url))
            .json(&json!({"score": 1, "label": "thumbs_up"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}: {}", r.text().await.unwrap());
    }
    assert_eq!(
        gw.record("feedback-at-once-9").await["feedback"]["label"],
        "thumbs_up"
    );
    let r = client()
        .get(format!("{}/v1/requests/never-made", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "record_not_found");
}
