//! One conductor for every call: each entry point's record lists the pipeline stages the
//! call went through, in the pipeline's order, and a call refused early stops where it
//! was refused.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{client, post_json, post_with, Gateway};

const CONFIG: &str = r#"
[providers.sim]
kind = "mock"
[providers.slow]
kind = "mock"
latency_ms = 50
[routes.smart]
targets = [{ provider = "sim", model = "echo" }]
"#;

/// A feature with a JSON parser (so its output is parsed).
const SUMMARY: &str = r#"name = "summary"
model = "sim/echo"
[variables]
text = { type = "string" }
[[messages]]
role = "user"
template = "Summarize: {{ text }}"
[output]
parser = "json"
schema = { type = "object", properties = { summary = { type = "string" } }, required = ["summary"] }
"#;

fn stages(record: &Value) -> Vec<String> {
    record["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {record}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn list(names: &str) -> Vec<String> {
    names.split_whitespace().map(str::to_string).collect()
}

async fn push_and_deploy(gw: &Gateway, file: &str, name: &str, shadow: Option<i64>) {
    let version = gw.push_feature(file).await;
    let mut body = json!({"env": "prod", "version": version});
    if let Some(s) = shadow {
        body["shadow"] = json!(s);
    }
    gw.admin_features(&format!("/{name}/deploy"), body).await;
}

#[tokio::test]
async fn every_entry_point_runs_every_stage_in_order() {
    let gw = Gateway::start(CONFIG);
    let plain =
        list("authenticate context parse authorize restore route check call respond record");

    // Chat completions, whole and streamed.
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-request-id", "st-chat")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(stages(&gw.record("st-chat").await), plain);
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-request-id", "st-stream")],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert_eq!(stages(&gw.record("st-stream").await), plain);

    // Messages (Anthropic's format).
    let r = post_with(
        &gw,
        "/v1/messages",
        &json!({"model": "sim/echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-request-id", "st-messages")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(stages(&gw.record("st-messages").await), plain);

    // A feature on the chat endpoint: its version rendered, its output parsed.
    push_and_deploy(&gw, SUMMARY, "summary", None).await;
    let featured = list(
        "authenticate context parse authorize feature restore route check call parse_output respond record",
    );
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "feature/summary", "metadata": {"text": "a long text"}, "messages": []}),
        &[("x-request-id", "st-feature-chat"), ("x-llmop-env", "prod")],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let rec = gw.record("st-feature-chat").await;
    assert_eq!(stages(&rec), featured);
    assert_eq!(rec["parse_status"], "ok");

    // Invoke: the same stages.
    let r = post_with(
        &gw,
        "/v1/features/summary/invoke",
        &json!({"variables": {"text": "another text"}, "env": "prod"}),
        &[("x-request-id", "st-invoke")],
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["parse_status"], "ok", "{body}");
    assert_eq!(stages(&gw.record("st-invoke").await), featured);
}

#[tokio::test]
async fn a_shadow_runs_through_the_same_stages() {
    let gw = Gateway::start(CONFIG);
    push_and_deploy(&gw, SUMMARY, "summary", None).await;
    // Version 2 differs (its provider is slower), deployed as version 1's shadow.
    let v2 = SUMMARY.replace("sim/echo", "slow/echo");
    assert_eq!(gw.push_feature(&v2).await, 2);
    gw.admin_features(
        "/summary/deploy",
        json!({"env": "prod", "version": 1, "shadow": 2}),
    )
    .await;
    let r = post_with(
        &gw,
        "/v1/features/summary/invoke",
        &json!({"variables": {"text": "shadowed"}, "env": "prod"}),
        &[("x-request-id", "st-primary")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let shadow = loop {
        let v = support::get_json(&gw, "/v1/requests?feature=summary&limit=10").await;
        let found = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["shadow_of"] == "st-primary")
            .cloned();
        match found {
            Some(s) => break s,
            None if Instant::now() > deadline => panic!("no shadow record: {v}"),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let full = gw.record(shadow["request_id"].as_str().unwrap()).await;
    assert_eq!(
        stages(&full),
        list("authenticate context parse authorize feature restore route check call parse_output respond record")
    );
    assert_eq!(full["feature_version"], 2);
}

#[tokio::test]
async fn a_refused_call_stops_where_it_was_refused() {
    let gw = Gateway::start(CONFIG);
    // Bad JSON: refused by the parse stage.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "st-bad-body")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        stages(&gw.record("st-bad-body").await),
        list("authenticate context parse respond record")
    );
    // An unknown model: refused by the route stage.
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "nowhere", "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-request-id", "st-no-route")],
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        stages(&gw.record("st-no-route").await),
        list("authenticate context parse authorize restore route respond record")
    );
    // A feature that is not deployed: refused by the feature stage.
    let r = post_json(&gw, "/v1/features/absent/invoke", &json!({"variables": {}})).await;
    assert_eq!(r.status(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        stages(&gw.record(&id).await),
        list("authenticate context parse authorize feature respond record")
    );
}
