//! The process as operators run it: `check`, start-up refusals, client disconnects and
//! graceful shutdown.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{client, fixture, llmop_with_config as llmop, Gateway, Reply, Upstream};

#[test]
fn check_names_file_line_and_key() {
    let bad = "[providers.sim]\nkind = \"mock\"\n\n[routes.r]\ntargets = [\n  { provider = \"sim\", model = \"a\" },\n  { provider = \"nope\", model = \"b\" },\n]\n";
    let out = llmop(&["check"], bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("llmop.toml:7:"), "{err}");
    assert!(err.contains("routes.r.targets[1].provider"), "{err}");
    assert!(err.contains("unknown provider `nope`"), "{err}");

    let out = llmop(&["check", "--json"], "[providers.sim]\nkind = \"mock\"\n");
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);

    let out = llmop(&["check", "--json"], "[server]\nlisten = 5\n");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"][0]["key"], "server.listen");
    assert_eq!(v["errors"][0]["line"], 2);
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../llmop.toml")).unwrap();
    let out = llmop(&["check"], &text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_what_it_cannot_honour() {
    let out = llmop(
        &["serve", "--listen", "127.0.0.1:0"],
        "[providers.o]\nkind = \"openai\"\napi_key_env = \"LLMOP_TEST_UNSET_KEY\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LLMOP_TEST_UNSET_KEY"));
    // (A listener beyond loopback is served but never open: see keys.rs.)
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    // A long stream: 300 frames, 20 ms apart.
    let frame = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick \"},\"finish_reason\":null}]}\n\n";
    let long = frame.repeat(300);
    let up = Upstream::start(move |_, _| Reply::Sse(long.clone(), Duration::from_millis(20))).await;
    let gw = Gateway::start(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        up.url
    ));
    let mut resp = client().post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "disconnect-test")
        .json(&json!({"model": "up/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    drop(resp);
    let start = std::time::Instant::now();
    while !up.stream_abandoned.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the upstream stream was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the call is recorded as abandoned by its client, with what it was sent.
    let rec = gw.record("disconnect-test").await;
    assert_eq!(rec["status"], 499);
    assert_eq!(rec["client_disconnected"], true);
    assert!(rec["output_text"].as_str().unwrap().starts_with("tick "));
    assert_eq!(rec["stream"], true);
    assert_eq!(rec["provider"], "up");
    assert_eq!(rec["model"], "m");
    assert_eq!(rec["error_code"], serde_json::Value::Null);
    assert_eq!(rec["attempts"].as_array().unwrap().len(), 1);
    assert!(rec["ttft_ms"].as_i64().is_some());
    assert_eq!(rec["input_messages"][0]["content"], "x");
    assert_eq!(
        rec["input_tokens"],
        serde_json::Value::Null,
        "no usage arrived"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_a_whole_call() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let gw = Gateway::start(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        up.url
    ));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = quick
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "gone-client")
        .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up");
    let rec = gw.record("gone-client").await;
    assert_eq!(rec["status"], 499);
    assert_eq!(rec["client_disconnected"], true);
    assert_eq!(rec["input_messages"][0]["content"], "x");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start(|_, _| {
        Reply::Sse(fixture("openai/stream.sse"), Duration::from_millis(150))
    })
    .await;
    let mut gw = Gateway::start(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 700\n",
        up.url
    ));
    let url = gw.url.clone();
    let whole = tokio::spawn({
        let url = url.clone();
        async move {
            client().post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "slow/echo", "messages": [{"role": "user", "content": "still here"}]}))
                .send().await.unwrap()
        }
    });
    let streamed = tokio::spawn({
        let url = url.clone();
        async move {
            let r = client().post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "up/m", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
                .send().await.unwrap();
            r.text().await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.terminate(Duration::from_secs(10));
        (s, gw)
    });
    // While draining, the in-flight calls complete normally.
    let resp = whole.await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "still here");
    let text = streamed.await.unwrap();
    assert!(text.contains("[DONE]"), "the stream finished: {text}");
    let (exit, gw) = status.await.unwrap();
    let exit = exit.expect("the gateway exited after draining");
    assert!(exit.success(), "{exit:?}");
    assert!(gw.logs().contains("all in-flight requests finished"));
    // Nothing listens any more.
    assert!(client().get(format!("{url}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let mut gw = Gateway::start(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[server]\nshutdown_timeout_ms = 60000\n",
        up.url
    ));
    let url = gw.url.clone();
    // A call that will never finish keeps the drain waiting.
    let stuck = tokio::spawn(async move {
        client()
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exit = tokio::task::spawn_blocking(move || {
        assert!(
            gw.terminate(Duration::from_millis(500)).is_none(),
            "still draining after one signal"
        );
        let s = gw.terminate(Duration::from_secs(5));
        (s, gw)
    })
    .await
    .unwrap()
    .0
    .expect("exited after the second signal");
    assert_eq!(exit.code(), Some(130));
    stuck.abort();
}
