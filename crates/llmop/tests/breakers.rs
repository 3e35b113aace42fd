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
    let m = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
