//! Retries against upstreams that fail on purpose: retryable errors are retried with
//! backoff and recorded attempt by attempt, `Retry-After` is honoured when it fits the
//! deadline, 4xx is never retried, and the retry budget caps retries when a target
//! fails every call.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{client, fixture, Gateway, Reply, Upstream};

fn gateway(up: &Upstream, route: &str) -> Gateway {
    Gateway::start(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n{route}\n",
        up.url
    ))
}

async fn call(gw: &Gateway, id: &str) -> (u16, Duration) {
    let started = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .json(&json!({"model": "r", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, started.elapsed())
}

fn overloaded() -> Reply {
    Reply::Json(
        503,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#.into(),
        vec![],
    )
}

#[tokio::test]
async fn retryable_errors_are_retried_on_the_same_target() {
    let up = Upstream::start(|_, n| {
        if n < 2 {
            overloaded()
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    let gw = gateway(
        &up,
        "retry = { attempts = 2, backoff_ms = 20, max_backoff_ms = 50 }",
    );
    let (status, _) = call(&gw, "retry-ok").await;
    assert_eq!(status, 200);
    assert_eq!(up.count(), 3);
    let r = gw.record("retry-ok").await;
    let a = r["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a[0]["upstream_status"], 503);
    assert_eq!(a[0]["retry_reason"], "retry");
    assert_eq!(a[1]["retry_reason"], "retry");
    assert_eq!(a[2]["error"], serde_json::Value::Null);
    assert_eq!(a[2]["retry_reason"], serde_json::Value::Null);
}

#[tokio::test]
async fn exhausted_retries_return_the_last_error() {
    let up = Upstream::start(|_, _| overloaded()).await;
    let gw = gateway(
        &up,
        "retry = { attempts = 2, backoff_ms = 10, max_backoff_ms = 20 }",
    );
    let (status, _) = call(&gw, "retry-exhausted").await;
    assert_eq!(status, 502);
    assert_eq!(up.count(), 3, "one try and two retries");
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let up = Upstream::start(|_, _| {
        Reply::Json(400, fixture("openai/error_400_invalid_value.json"), vec![])
    })
    .await;
    let gw = gateway(&up, "retry = { attempts = 3, backoff_ms = 10 }");
    let (status, _) = call(&gw, "retry-400").await;
    assert_eq!(status, 400);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_when_it_fits_the_deadline() {
    let up = Upstream::start(|_, n| {
        if n == 0 {
            Reply::Json(
                429,
                fixture("openai/error_429.json"),
                vec![("retry-after", "1".into())],
            )
        } else {
            Reply::ok(fixture("openai/chat_completion.json"))
        }
    })
    .await;
    // Backoff alone would retry within 20 ms; Retry-After asks for a second.
    let gw = gateway(
        &up,
        "retry = { attempts = 1, backoff_ms = 10, max_backoff_ms = 20 }",
    );
    let (status, took) = call(&gw, "retry-after").await;
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_is_not_waited_for() {
    let up = Upstream::start(|_, _| {
        Reply::Json(
            429,
            fixture("openai/error_429.json"),
            vec![("retry-after", "30".into())],
        )
    })
    .await;
    let gw = gateway(
        &up,
        "timeout_ms = 2000\nretry = { attempts = 3, backoff_ms = 10 }",
    );
    let (status, took) = call(&gw, "retry-after-too-long").await;
    assert_eq!(status, 429, "the provider's answer, at once");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_retry_budget_caps_retries_when_a_target_always_fails() {
    let up = Upstream::start(|_, _| overloaded()).await;
    // 3 retries per call allowed, but the budget grants 2 per window plus 0% of calls.
    let gw = gateway(
        &up,
        "retry = { attempts = 3, backoff_ms = 1, max_backoff_ms = 2, budget_ratio = 0.0, budget_min = 2 }",
    );
    for i in 0..10 {
        let (status, _) = call(&gw, &format!("budget-{i}")).await;
        assert_eq!(status, 502);
    }
    // Without a budget: 40 upstream calls. With it: 10 first tries + 2 retries.
    assert_eq!(up.count(), 12);
}

#[tokio::test]
async fn a_target_sets_its_own_parameters() {
    let primary = Upstream::start(|_, _| overloaded()).await;
    let secondary = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = Gateway::start(&format!(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.s]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.r]\ntargets = [{{ provider = \"p\", model = \"big\" }}, \
         {{ provider = \"s\", model = \"small\", params = {{ max_tokens = 16, temperature = 0.0 }} }}]\n",
        primary.url, secondary.url
    ));
    let (status, _) = call(&gw, "params").await;
    assert_eq!(status, 200);
    // The first target got what the client asked; the second its own settings.
    assert_eq!(primary.last().body["messages"][0]["content"], "x");
    assert!(primary.last().body.get("max_tokens").is_none());
    let sent = secondary.last().body;
    assert_eq!(sent["max_tokens"], 16);
    assert_eq!(sent["temperature"], 0.0);
}
