//! Circuit breakers and fallbacks against upstreams that fail on purpose.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{client, fixture, Gateway, Reply, Upstream};

fn overloaded() -> Reply {
    Reply::Json(
        503,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
        vec![],
    )
}

fn gateway(primary: &Upstream, secondary: &Upstream, breaker: &str) -> Gateway {
    Gateway::start(&format!(
        "[providers.primary]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.secondary]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\ntargets = [{{ provider = \"primary\", model = \"m\" }}, {{ provider = \"secondary\", model = \"m\" }}]\n\
         circuit_breaker = {breaker}\n",
        primary.url, secondary.url
    ))
}

async fn call(gw: &Gateway) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
}

async fn circuits(gw: &Gateway) -> Value {
    client()
        .get(format!("{}/admin/circuits", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_thirty_percent_failing_primary_costs_no_call() {
    // Every third-ish call of the primary fails (30%); the secondary is healthy.
    let primary = Upstream::start(|_, n| {
        if n % 10 < 3 {
            overloaded()
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway(
        &primary,
        &secondary,
        "{ failure_rate = 0.5, min_calls = 10, open_ms = 60000 }",
    );
    let mut ok = 0;
    for _ in 0..100 {
        if call(&gw).await.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 100, "success rate");
    assert_eq!(
        primary.count(),
        100,
        "30% failing stays under the threshold"
    );
    assert_eq!(
        secondary.count(),
        30,
        "the secondary answered the primary's failures"
    );
    let c = circuits(&gw).await;
    assert_eq!(c["circuits"][0]["provider"], "primary");
    assert_eq!(c["circuits"][0]["state"], "closed");
}

#[tokio::test]
async fn a_dead_primary_opens_its_circuit_and_is_skipped_then_probed() {
    let primary = Upstream::start(|_, _| overloaded()).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway(
        &primary,
        &secondary,
        "{ failure_rate = 0.5, min_calls = 5, open_ms = 1500 }",
    );
    for _ in 0..20 {
        assert_eq!(call(&gw).await.status(), 200);
    }
    assert_eq!(
        primary.count(),
        5,
        "opened after min_calls failures, then skipped"
    );
    let c = circuits(&gw).await;
    let p = &c["circuits"][0];
    assert_eq!(p["state"], "open");
    assert_eq!(p["opened"], 1);
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"llmop_circuit_state{route="r",provider="primary",model="m"} 2"#),
        "{m}"
    );
    // The record of a call that skipped the primary says so.
    let r = call(&gw).await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let rec = gw.record(&id).await;
    assert_eq!(rec["attempts"][0]["error"], "circuit_open");
    assert_eq!(rec["attempts"][0]["retry_reason"], "fallback");
    assert_eq!(rec["attempts"][1]["provider"], "secondary");
    // After open_ms one probe goes to the primary; it fails, the circuit opens again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(call(&gw).await.status(), 200);
    assert_eq!(primary.count(), 6, "one probe");
    assert_eq!(circuits(&gw).await["circuits"][0]["opened"], 2);
}

#[tokio::test]
async fn every_circuit_open_is_a_503_circuit_open() {
    let primary = Upstream::start(|_, _| overloaded()).await;
    let secondary = Upstream::start(|_, _| overloaded()).await;
    let gw = gateway(
        &primary,
        &secondary,
        "{ failure_rate = 0.5, min_calls = 3, open_ms = 60000 }",
    );
    for _ in 0..3 {
        assert_eq!(call(&gw).await.status(), 502);
    }
    let r = call(&gw).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!((primary.count(), secondary.count()), (3, 3));
}

#[tokio::test]
async fn a_recovered_primary_closes_its_circuit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let primary = Upstream::start(move |_, _| {
        if h.load(Ordering::SeqCst) {
            Reply::ok(fixture("openai/chat_completion.json"))
        } else {
            overloaded()
        }
    })
    .await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway(
        &primary,
        &secondary,
        "{ failure_rate = 0.5, min_calls = 3, open_ms = 300 }",
    );
    for _ in 0..3 {
        call(&gw).await;
    }
    assert_eq!(circuits(&gw).await["circuits"][0]["state"], "open");
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = call(&gw).await;
    assert_eq!(
        r.headers()["x-llmop-provider"],
        "primary",
        "the probe succeeded"
    );
    assert_eq!(circuits(&gw).await["circuits"][0]["state"], "closed");
}

fn fallback_gateway(primary: &Upstream, secondary: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[providers.primary]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.secondary]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\ntargets = [{{ provider = \"primary\", model = \"m\" }}, {{ provider = \"secondary\", model = \"m\" }}]\n{extra}\n",
        primary.url, secondary.url
    ))
}

#[tokio::test]
async fn every_target_failing_ends_in_the_degraded_answer() {
    let primary = Upstream::start(|_, _| overloaded()).await;
    let secondary = Upstream::start(|_, _| Reply::Hang).await;
    let gw = fallback_gateway(
        &primary,
        &secondary,
        "timeout_ms = 500\nfallback_response = { text = \"Our assistant is busy; a human will answer shortly.\" }",
    );
    // Whole.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "degraded-whole")
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-degraded"], "true");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Our assistant is busy; a human will answer shortly."
    );
    let rec = gw.record("degraded-whole").await;
    assert_eq!(rec["degraded"], true);
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["error_code"], "upstream_timeout");
    assert_eq!(rec["attempts"].as_array().unwrap().len(), 2);
    // Streamed, in the Anthropic format.
    let r = client()
        .post(format!("{}/v1/messages", gw.url))
        .json(&json!({"model": "r", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-degraded"], "true");
    let text = r.text().await.unwrap();
    assert!(text.contains("a human will answer shortly"), "{text}");
    assert!(text.contains("message_stop"), "{text}");
}

#[tokio::test]
async fn a_request_error_is_not_hidden_by_the_degraded_answer() {
    let primary = Upstream::start(|_, _| {
        Reply::Json(400, fixture("openai/error_400_invalid_value.json"), vec![])
    })
    .await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = fallback_gateway(
        &primary,
        &secondary,
        "fallback_response = { text = \"sorry\" }",
    );
    assert_eq!(call(&gw).await.status(), 400);
    assert_eq!(secondary.count(), 0);
}

#[tokio::test]
async fn a_hanging_primary_is_answered_by_the_secondary_within_the_deadline() {
    let primary = Upstream::start(|c, _| {
        // Hangs for whole calls; for streams, sends headers and then only SSE comments
        // (keep-alives), a second apart: no first token.
        if c.body["stream"] == true {
            Reply::Sse(": keep-alive\n\n".repeat(60), Duration::from_secs(1))
        } else {
            Reply::Hang
        }
    })
    .await;
    let secondary = Upstream::start(|c, _| {
        if c.body["stream"] == true {
            Reply::sse(fixture("openai/stream.sse"))
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let gw = fallback_gateway(
        &primary,
        &secondary,
        "timeout_ms = 5000\nfirst_token_timeout_ms = 300",
    );
    for stream in [false, true] {
        let started = std::time::Instant::now();
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", format!("hang-{stream}"))
            .json(&json!({"model": "r", "stream": stream, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-llmop-provider"], "secondary");
        let _ = r.text().await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
            "stream={stream}: {took:?}"
        );
        let rec = gw.record(&format!("hang-{stream}")).await;
        assert_eq!(rec["attempts"][0]["error"], "upstream_timeout");
        assert_eq!(rec["attempts"][0]["retry_reason"], "fallback");
    }
}

#[tokio::test]
async fn the_client_can_shorten_the_deadline() {
    let primary = Upstream::start(|_, _| Reply::Hang).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = fallback_gateway(&primary, &secondary, "timeout_ms = 20000");
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-llmop-timeout-ms", "800")
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    // The hanging primary used the client's whole 800 ms: 504, not 20 s.
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A bad header is refused, naming it.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-llmop-timeout-ms", "soon")
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "x-llmop-timeout-ms");
}

#[tokio::test]
async fn least_latency_prefers_the_faster_target() {
    let gw = Gateway::start(
        "[providers.slow]\nkind = \"mock\"\nlatency_ms = 120\n\
         [providers.fast]\nkind = \"mock\"\nlatency_ms = 5\n\
         [routes.r]\nstrategy = \"least_latency\"\n\
         targets = [{ provider = \"slow\", model = \"echo\" }, { provider = \"fast\", model = \"echo\" }]\n",
    );
    let mut fast = 0;
    for _ in 0..60 {
        let r = call(&gw).await;
        assert_eq!(r.status(), 200);
        if r.headers()["x-llmop-provider"] == "fast" {
            fast += 1;
        }
    }
    // The slow one is tried first while untried, then only when explored (5%).
    assert!(fast >= 50, "fast answered {fast} of 60");
}

const POLICY: &str = r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;

#[tokio::test]
async fn a_context_window_refusal_moves_on_to_the_next_target() {
    // OpenAI's context-length error, as its API reference shows it.
    let primary =
        Upstream::start(|_, _| Reply::Json(400, fixture("openai/error_400.json"), vec![])).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = fallback_gateway(
        &primary,
        &secondary,
        "retry = { attempts = 2, backoff_ms = 10 }",
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "ctx-window")
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-provider"], "secondary");
    assert_eq!(
        primary.count(),
        1,
        "not retried: the same window would refuse again"
    );
    let rec = gw.record("ctx-window").await;
    assert_eq!(rec["attempts"][0]["error"], "context_window_exceeded");
    assert_eq!(rec["attempts"][0]["retry_reason"], "context_window");
}

#[tokio::test]
async fn content_policy_refusals_move_on_only_when_configured() {
    let primary = Upstream::start(|_, _| Reply::Json(400, POLICY.into(), vec![])).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = fallback_gateway(&primary, &secondary, "fallback_response = { text = \"x\" }");
    let r = call(&gw).await;
    assert_eq!(
        r.status(),
        400,
        "off by default, and never hidden by the degraded answer"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert_eq!(secondary.count(), 0);
    let gw = fallback_gateway(&primary, &secondary, "fallback_on_content_policy = true");
    let r = call(&gw).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-provider"], "secondary");
}

#[tokio::test]
async fn refused_connections_and_broken_bodies_fall_back() {
    // A port with nothing listening (connection refused) and an upstream whose answer is
    // not its format: both hand over to the healthy secondary, on every call.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let broken =
        Upstream::start(|_, _| Reply::Raw(200, "application/json", "{\"choices\": 7".into())).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = Gateway::start(&format!(
        "[providers.refused]\nkind = \"openai\"\nbase_url = \"http://{closed}/v1\"\n\
         [providers.broken]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.secondary]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\ntargets = [{{ provider = \"refused\", model = \"m\" }}, {{ provider = \"broken\", model = \"m\" }}, {{ provider = \"secondary\", model = \"m\" }}]\n",
        broken.url, secondary.url
    ));
    for i in 0..10 {
        let id = format!("broken-{i}");
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .header("x-request-id", &id)
            .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-llmop-attempts"], "3");
        if i == 0 {
            let rec = gw.record(&id).await;
            assert_eq!(rec["attempts"][0]["error"], "upstream_unreachable");
            assert_eq!(rec["attempts"][1]["error"], "upstream_protocol_error");
            assert_eq!(rec["attempts"][2]["error"], Value::Null);
        }
    }
}
