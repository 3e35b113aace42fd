//! Versioned features served by the real gateway: deploy and rollback change the very
//! next request, splits are proportional and sticky, shadows never touch the primary,
//! parse failures follow each policy, template errors name the variable, and a change
//! made on one replica is served by another within a second.

mod support;

use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{client, get_json, llmop, output_text as out, Gateway, PgDb, Reply, Upstream};

/// A feature whose answer (with the echoing mock) names the version that served it.
fn greet(tag: &str, model: &str) -> String {
    format!(
        r#"name = "greet"
model = "{model}"
[variables]
who = {{ type = "string" }}
punct = {{ type = "string", default = "!" }}
[[messages]]
role = "system"
template = "Greet people."
[[messages]]
role = "user"
template = "{tag} hello {{{{ who }}}}{{{{ punct }}}}"
"#
    )
}

const MOCK: &str =
    "[providers.sim]\nkind = \"mock\"\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 1500\n";

/// One call of `feature/greet`; returns (status, headers, body).
async fn greet_call(
    gw: &Gateway,
    extra_headers: &[(&str, &str)],
    who: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "feature/greet", "metadata": {"who": who}, "messages": []}));
    for (k, v) in extra_headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn deploy_then_rollback_changes_the_very_next_request() {
    let gw = Gateway::start(MOCK);
    let v1 = gw.push_feature(&greet("V1", "sim/echo")).await;
    let v2 = gw.push_feature(&greet("V2", "sim/echo")).await;
    assert_eq!((v1, v2), (1, 2));
    // Pushing identical content again returns the existing version.
    assert_eq!(gw.push_feature(&greet("V1", "sim/echo")).await, 1);

    // A version whose target this gateway does not have cannot be deployed here.
    gw.push_feature(&greet("V9", "nowhere/echo")).await;
    let r = client()
        .post(format!("{}/admin/features/greet/deploy", gw.url))
        .json(&json!({"env": "prod", "version": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere/echo"),
        "{v}"
    );

    // Not deployed yet.
    let (status, _, body) = greet_call(&gw, &[], "Ann").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "feature_not_found");

    gw.admin_features(
        "/greet/deploy",
        json!({"env": "prod", "version": 1, "reason": "launch"}),
    )
    .await;
    let (status, h, body) = greet_call(&gw, &[("x-request-id", "feat-1")], "Ann").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content(&body), "V1 hello Ann!");
    assert_eq!(h["x-llmop-feature-version"], "1");

    gw.admin_features(
        "/greet/deploy",
        json!({"env": "prod", "version": 2, "reason": "better"}),
    )
    .await;
    let (_, h, body) = greet_call(&gw, &[], "Ann").await;
    assert_eq!(content(&body), "V2 hello Ann!");
    assert_eq!(h["x-llmop-feature-version"], "2");

    let rb = gw
        .admin_features(
            "/greet/rollback",
            json!({"env": "prod", "reason": "complaints"}),
        )
        .await;
    assert_eq!(rb["kind"], "rollback");
    let (_, h, body) = greet_call(&gw, &[], "Ann").await;
    assert_eq!(content(&body), "V1 hello Ann!");
    assert_eq!(h["x-llmop-feature-version"], "1");

    // Another environment is independent; an unknown one is a clear 404.
    let (status, _, body) = greet_call(&gw, &[("x-llmop-env", "staging")], "Ann").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "feature_not_deployed");
    assert!(body["error"]["message"].as_str().unwrap().contains("prod"));

    // The record answers "which version served this customer?".
    let r = gw.record("feat-1").await;
    assert_eq!(r["feature"], "greet");
    assert_eq!(r["feature_version"], 1);
    assert_eq!(r["env"], "prod");
    assert!(r["content_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r["variables"], json!({"who": "Ann", "punct": "!"}));
    assert_eq!(
        r["rendered_prompt"],
        "[system]\nGreet people.\n\n[user]\nV1 hello Ann!"
    );
    assert_eq!(r["input_messages"][1]["content"], "V1 hello Ann!");

    // The audit trail: who, when, from, to, why; newest first.
    let h: Value = get_json(&gw, "/admin/features/greet/history?env=prod").await;
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["kind"], "rollback");
    assert_eq!(events[0]["reason"], "complaints");
    assert_eq!(events[0]["actor"], "admin-api:tester");
    assert_eq!(events[0]["from"]["arms"][0]["version"], 2);
    assert_eq!(events[0]["to"]["arms"][0]["version"], 1);
    assert_eq!(events[2]["from"], Value::Null);

    // The native invoke endpoint, and the Anthropic endpoint, serve the same version.
    let r = client()
        .post(format!("{}/v1/features/greet/invoke", gw.url))
        .json(&json!({"variables": {"who": "Bo", "punct": "?"}, "user": "u-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-llmop-feature-version"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["output"]["text"], "V1 hello Bo?");
    assert_eq!(
        (v["feature"].clone(), v["version"].clone(), v["env"].clone()),
        (json!("greet"), json!(1), json!("prod"))
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(v["request_id"].as_str().is_some());
    let r = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "feature/greet", "max_tokens": 50, "metadata": {"who": "Cy"}, "messages": [{"role": "user", "content": "ignored"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-llmop-feature-version"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "V1 hello Cy!");

    // Streams serve the deployed version too.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "feature/greet", "stream": true, "metadata": {"who": "Di"}, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-llmop-feature-version"], "1");
    let text = r.text().await.unwrap();
    let mut out = String::new();
    for (_, data) in support::sse_events(&text) {
        if let Ok(v) = serde_json::from_str::<Value>(&data) {
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                out.push_str(t);
            }
        }
    }
    assert_eq!(out, "V1 hello Di!");

    // Deployed features are listed as models.
    let models: Value = get_json(&gw, "/v1/models").await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "feature/greet" && m["owned_by"] == "llmop-feature"));
}

#[tokio::test]
async fn a_streamed_feature_answer_is_parsed_into_its_record() {
    let gw = Gateway::start(MOCK);
    // The mock answers JSON generated from the requested schema, which the feature's
    // JSON parser asks for.
    gw.push_feature(&json_feature("facts", "model = \"sim/echo\"", ""))
        .await;
    gw.admin_features("/facts/deploy", json!({"env": "prod", "version": 1}))
        .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "stream-parse")
        .json(&json!({"model": "feature/facts", "stream": true, "metadata": {"text": "t"}, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let rec = gw.record("stream-parse").await;
    assert_eq!(rec["parse_status"], "ok", "{rec}");
    assert!(rec["parsed_output"]["summary"].is_string(), "{rec}");
    assert_eq!(rec["stream"], true);
}

#[tokio::test]
async fn template_errors_name_the_variable() {
    let gw = Gateway::start(MOCK);
    let two_vars = r#"name = "pair"
model = "sim/echo"
[variables]
a = { type = "string" }
n = { type = "integer" }
[[messages]]
role = "user"
template = "{{ a }} x{{ n }}"
"#;
    gw.push_feature(two_vars).await;
    gw.admin_features("/pair/deploy", json!({"env": "prod", "version": 1}))
        .await;
    let call = |body: Value| {
        let url = format!("{}/v1/chat/completions", gw.url);
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // `n` missing: the message names it and where it was expected.
    let (s, v) = call(json!({"model": "feature/pair", "metadata": {"a": "hi"}, "messages": [{"role": "user", "content": "x"}]})).await;
    // The last user message fills the one required variable still missing ("x" is not
    // an integer), so the error is about its type.
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "metadata.n");
    let (s, v) =
        call(json!({"model": "feature/pair", "metadata": {"a": "hi"}, "messages": []})).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "missing_variable");
    assert_eq!(v["error"]["param"], "metadata.n");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`n`"),
        "{v}"
    );
    // Metadata strings convert to the declared type.
    let (s, v) =
        call(json!({"model": "feature/pair", "metadata": {"a": "hi", "n": "3"}, "messages": []}))
            .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(content(&v), "hi x3");

    let invoke = |body: Value| {
        let url = format!("{}/v1/features/pair/invoke", gw.url);
        async move {
            let r = client()
                .post(url)
                .header("x-request-id", "inv-bad")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = invoke(json!({"variables": {"a": "hi"}})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("missing_variable"))
    );
    assert_eq!(v["error"]["param"], "variables.n");
    let (s, v) = invoke(json!({"variables": {"a": "hi", "n": 1, "typo": 2}})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("unknown_variable"))
    );
    assert_eq!(v["error"]["param"], "variables.typo");
    let (s, v) = invoke(json!({"variables": {"a": 1, "n": 1}})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_variable"))
    );
    let (s, v) = invoke(json!({"variabls": {}})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = invoke(json!({"variables": {"a": "x", "n": 1}, "version": 9})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("feature_version_not_found"))
    );
    // Refused calls are recorded too (the first call with this request id).
    let r = gw.record("inv-bad").await;
    assert_eq!(r["status"], 400);
    assert_eq!(r["error_code"], "missing_variable");
    assert_eq!(r["feature"], "pair");
}

#[tokio::test]
async fn splits_are_proportional_and_sticky() {
    let gw = Gateway::start(MOCK);
    gw.push_feature(&greet("V1", "sim/echo")).await;
    gw.push_feature(&greet("V2", "sim/echo")).await;
    gw.admin_features(
        "/greet/deploy",
        json!({"env": "prod", "split": "1=90,2=10"}),
    )
    .await;

    // 2,000 calls from 2,000 users.
    let results: Vec<(String, String)> = futures::stream::iter(0..2000)
        .map(|i| {
            let gw = &gw;
            async move {
                let user = format!("user-{i}");
                let (s, h, body) = greet_call(gw, &[("x-llmop-user", &user)], "x").await;
                assert_eq!(s, 200, "{body}");
                assert_eq!(
                    content(&body).starts_with("V2"),
                    h["x-llmop-feature-version"] == "2"
                );
                (user, h["x-llmop-feature-arm"].to_str().unwrap().to_string())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let v2 = results.iter().filter(|(_, arm)| arm == "v2").count();
    // 10% of 2,000 = 200; binomial sd ≈ 13.4: ±60 is 4.5 sd.
    assert!((140..=260).contains(&v2), "v2 served {v2} of 2000 calls");

    // Sticky: each user gets the arm they got before, every time.
    let first: HashMap<_, _> = results.into_iter().collect();
    for i in (0..2000).step_by(40) {
        let user = format!("user-{i}");
        for _ in 0..3 {
            let (_, h, _) = greet_call(&gw, &[("x-llmop-user", &user)], "x").await;
            assert_eq!(h["x-llmop-feature-arm"].to_str().unwrap(), first[&user]);
        }
    }
    // Without a user, the session is sticky.
    let (_, h, _) = greet_call(
        &gw,
        &[("x-llmop-session", "s-1"), ("x-request-id", "split-rec")],
        "x",
    )
    .await;
    let arm = h["x-llmop-feature-arm"].to_str().unwrap().to_string();
    for _ in 0..10 {
        let (_, h, _) = greet_call(&gw, &[("x-llmop-session", "s-1")], "x").await;
        assert_eq!(h["x-llmop-feature-arm"].to_str().unwrap(), arm);
    }
    // The arm is recorded.
    assert_eq!(gw.record("split-rec").await["arm"], arm.as_str());
}

#[tokio::test]
async fn shadow_never_alters_the_primary() {
    let gw = Gateway::start(MOCK);
    gw.push_feature(&greet("V1", "sim/echo")).await;
    // The candidate runs on a provider that takes 1.5 s.
    gw.push_feature(&greet("V2", "slow/echo")).await;
    gw.admin_features(
        "/greet/deploy",
        json!({"env": "prod", "version": 1, "shadow": 2}),
    )
    .await;

    let mut primaries = Vec::new();
    for i in 0..5 {
        let id = format!("shadowed-{i}");
        let started = Instant::now();
        let (s, h, body) = greet_call(
            &gw,
            &[("x-request-id", &id), ("x-llmop-timeout-ms", "1000")],
            "Ann",
        )
        .await;
        let took = started.elapsed();
        assert_eq!(s, 200, "{body}");
        // What the client gets is the primary's answer, within the primary's budget:
        // a 1.5 s shadow would blow the 1 s deadline if it were in the way.
        assert_eq!(content(&body), "V1 hello Ann!");
        assert_eq!(h["x-llmop-feature-version"], "1");
        assert!(took < Duration::from_millis(1000), "primary took {took:?}");
        primaries.push(id);
    }
    // Each shadow leaves its own record, linked to its primary, never returned.
    let deadline = Instant::now() + Duration::from_secs(10);
    let shadows = loop {
        let v: Value = get_json(&gw, "/v1/requests?feature=greet&limit=100").await;
        let shadows: Vec<Value> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["shadow"] == true)
            .cloned()
            .collect();
        if shadows.len() == 5 || Instant::now() > deadline {
            break shadows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shadows.len(), 5, "{shadows:?}");
    for s in &shadows {
        assert_eq!(s["feature_version"], 2);
        assert_eq!(s["status"], 200);
        assert_eq!(s["output_text"], "V2 hello Ann!");
        assert!(primaries.contains(&s["shadow_of"].as_str().unwrap().to_string()));
        assert!(s["latency_ms"].as_i64().unwrap() >= 1400);
    }
    let primary = gw.record("shadowed-0").await;
    assert_eq!(primary["shadow"], false);
    assert_eq!(primary["output_text"], "V1 hello Ann!");

    // The shadow report compares the two.
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    let o = Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(["shadow", "report", "greet", "--store", &store, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["pairs"], 5);
    assert_eq!(report[0]["primary"]["version"], 1);
    assert_eq!(report[0]["shadow"]["version"], 2);
    assert_eq!(report[0]["identical"], 0);
    assert!(
        report[0]["shadow"]["mean_latency_ms"].as_f64().unwrap()
            > report[0]["primary"]["mean_latency_ms"].as_f64().unwrap()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(["shadow", "report", "greet", "--store", &store])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("identical outputs: 0 of 5"), "{text}");
}

/// An OpenAI chat completion whose message content is `text`.
fn completion(text: &str) -> Reply {
    Reply::ok(
        json!({
            "id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        })
        .to_string(),
    )
}

fn json_feature(name: &str, target: &str, policy: &str) -> String {
    format!(
        r#"name = "{name}"
{target}
[variables]
text = {{ type = "string" }}
[[messages]]
role = "user"
template = "Summarize: {{{{ text }}}}"
[output]
parser = "json"
schema = {{ type = "object", properties = {{ summary = {{ type = "string" }} }}, required = ["summary"] }}
{policy}
"#
    )
}

#[tokio::test]
async fn parse_failures_follow_each_policy() {
    const GOOD: &str = r#"{"summary": "fine"}"#;
    // Answers badly the first time, correctly when shown its mistake (a repair), and
    // never for "hopeless" texts.
    let learner = Upstream::start(|c, _| {
        let msgs = c.body["messages"].as_array().cloned().unwrap_or_default();
        let hopeless = msgs.iter().any(|m| {
            m["content"]
                .as_str()
                .is_some_and(|t| t.contains("hopeless"))
        });
        let repairing = msgs.iter().any(|m| m["role"] == "assistant");
        if repairing && !hopeless {
            completion(GOOD)
        } else {
            completion("Sure! The summary is: fine")
        }
    })
    .await;
    let bad = Upstream::start(|_, _| completion(r#"{"summary": 42}"#)).await;
    let good = Upstream::start(|_, _| completion(&format!("```json\n{GOOD}\n```"))).await;
    let gw = Gateway::start(&format!(
        "[providers.learner]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.bad]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [providers.good]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.bad-then-good]\ntargets = [{{ provider = \"bad\", model = \"m\" }}, {{ provider = \"good\", model = \"m\" }}]\n",
        learner.url, bad.url, good.url
    ));
    for (name, target, policy) in [
        (
            "fix",
            "model = \"learner/m\"",
            "on_parse_failure = \"repair\"",
        ),
        (
            "next",
            "route = \"bad-then-good\"",
            "on_parse_failure = \"next_target\"",
        ),
        (
            "canned",
            "model = \"bad/m\"",
            "on_parse_failure = \"static\"\nstatic_response = { summary = \"unavailable\" }",
        ),
        (
            "strict",
            "model = \"bad/m\"",
            "on_parse_failure = \"error\"",
        ),
    ] {
        gw.push_feature(&json_feature(name, target, policy)).await;
        gw.admin_features(
            &format!("/{name}/deploy"),
            json!({"env": "prod", "version": 1}),
        )
        .await;
    }
    let invoke = |name: &'static str, text: &'static str| {
        let url = format!("{}/v1/features/{name}/invoke", gw.url);
        async move {
            let r = client()
                .post(url)
                .header("x-request-id", format!("parse-{name}-{text}"))
                .json(&json!({"variables": {"text": text}}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // repair: one more call showing the model its output and the schema.
    let (s, v) = invoke("fix", "ok").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["parse_status"].as_str(), &v["output"]["parsed"]),
        (Some("repaired"), &json!({"summary": "fine"}))
    );
    assert_eq!(learner.count(), 2);
    let repair = learner.last().body;
    let msgs = repair["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"], "Sure! The summary is: fine");
    assert!(
        msgs[2]["content"]
            .as_str()
            .unwrap()
            .contains("\"required\""),
        "{repair}"
    );
    // JSON parsers ask the provider for JSON.
    assert_eq!(repair["response_format"]["type"], "json_schema");
    let r = gw.record("parse-fix-ok").await;
    assert_eq!(r["parse_status"], "repaired");
    assert_eq!(r["parsed_output"], json!({"summary": "fine"}));
    assert_eq!(r["attempts"][0]["retry_reason"], "parse_repair");
    // Both answers were paid for: the record counts the discarded one's tokens too.
    assert_eq!(
        (r["input_tokens"].as_i64(), r["output_tokens"].as_i64()),
        (Some(10), Some(6))
    );
    // …and only one: a repair that fails again is a 422.
    let (s, v) = invoke("fix", "hopeless").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("output_parse_failed")),
        "{v}"
    );
    assert_eq!(learner.count(), 4);
    let r = gw.record("parse-fix-hopeless").await;
    assert_eq!(
        (r["status"].as_i64(), r["parse_status"].as_str()),
        (Some(422), Some("failed"))
    );
    assert_eq!(r["output_text"], "Sure! The summary is: fine");

    // next_target: the route's next target answers (a fenced JSON block is accepted).
    let (s, v) = invoke("next", "ok").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["parse_status"], "next_target");
    assert_eq!(v["output"]["parsed"], json!({"summary": "fine"}));
    assert_eq!(v["provider"], "good");
    let r = gw.record("parse-next-ok").await;
    assert_eq!(r["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(r["attempts"][0]["retry_reason"], "parse_failure");

    // static: the configured answer, marked as such.
    let (s, v) = invoke("canned", "ok").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["parse_status"], "static");
    assert_eq!(v["output"]["parsed"], json!({"summary": "unavailable"}));
    assert_eq!(v["output"]["text"], r#"{"summary":"unavailable"}"#);

    // error: surfaced as 422 with the reason.
    let (s, v) = invoke("strict", "ok").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("output_parse_failed"))
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/summary"),
        "{v}"
    );

    // The same policies apply on the chat endpoint.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": "feature/canned", "messages": [{"role": "user", "content": "anything"}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(content(&v), r#"{"summary":"unavailable"}"#);
}

/// Waits (bounded) until `feature/greet` is served by `version` on `gw`.
async fn until_served(gw: &Gateway, version: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (s, h, _) = greet_call(gw, &[], "x").await;
        if s == 200 && h["x-llmop-feature-version"] == version {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "v{version} not served within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_rolls_back_and_replays_without_restart() {
    let gw = Gateway::start(MOCK);
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    let dir = tempfile::tempdir().unwrap();
    for (tag, file) in [("V1", "v1.toml"), ("V2", "v2.toml")] {
        let path = dir.path().join(file);
        std::fs::write(&path, greet(tag, "sim/echo")).unwrap();
        let o = llmop(&["feature", "push", path.to_str().unwrap(), "--store", &store]);
        assert!(o.status.success(), "{}", out(&o));
    }
    let o = llmop(&[
        "deploy", "greet", "1", "--env", "prod", "--reason", "launch", "--store", &store,
    ]);
    assert!(
        out(&o).contains("greet deployed in prod: nothing -> v1"),
        "{}",
        out(&o)
    );
    until_served(&gw, "1", Duration::from_secs(2)).await;
    let o = llmop(&["deploy", "greet", "2", "--env", "prod", "--store", &store]);
    assert!(o.status.success(), "{}", out(&o));
    until_served(&gw, "2", Duration::from_secs(2)).await;

    // A customer's call on v2…
    let (_, h, _) = greet_call(&gw, &[("x-request-id", "cust-1")], "Eve").await;
    assert_eq!(h["x-llmop-feature-version"], "2");
    gw.record("cust-1").await;
    // …replayed on v1 with the recorded variables.
    let o = llmop(&[
        "replay",
        "cust-1",
        "--version",
        "1",
        "--gateway",
        &gw.url,
        "--store",
        &store,
        "--json",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["original"]["output_text"], "V2 hello Eve!");
    assert_eq!(v["replay"]["output_text"], "V1 hello Eve!");
    assert_eq!(v["replay"]["feature_version"], 1);
    assert_eq!(v["replay"]["replay_of"], "cust-1");
    let o = llmop(&["replay", "cust-1", "--gateway", &gw.url, "--store", &store]);
    assert!(out(&o).contains("outputs are identical"), "{}", out(&o));

    let o = llmop(&[
        "rollback", "greet", "--env", "prod", "--reason", "bad tone", "--store", &store,
    ]);
    assert!(
        out(&o).contains("greet rolled back in prod: v2 -> v1"),
        "{}",
        out(&o)
    );
    until_served(&gw, "1", Duration::from_secs(2)).await;
    let o = llmop(&["rollback", "greet", "--env", "prod", "--store", &store]);
    assert!(!o.status.success());
    assert!(out(&o).contains("no earlier deployment"), "{}", out(&o));

    let o = llmop(&["deploy", "history", "greet", "--store", &store]);
    let t = out(&o);
    assert!(
        t.contains("rollback") && t.contains("bad tone") && t.contains("cli:"),
        "{t}"
    );
    let o = llmop(&["feature", "versions", "greet", "--store", &store]);
    assert!(out(&o).contains("prod"), "{}", out(&o));
    // Refusals are clear and change nothing.
    let o = llmop(&["deploy", "greet", "7", "--env", "prod", "--store", &store]);
    assert!(out(&o).contains("has no version 7"), "{}", out(&o));
    let o = llmop(&[
        "deploy",
        "greet",
        "--split",
        "1=50,2=40",
        "--env",
        "prod",
        "--store",
        &store,
    ]);
    assert!(out(&o).contains("sum to 100"), "{}", out(&o));
    let o = llmop(&["deploy", "greet", "1", "--store", &store]);
    assert!(out(&o).contains("--env"), "{}", out(&o));
}

#[tokio::test]
async fn a_rollback_on_one_replica_is_served_by_the_other_within_a_second() {
    let db = PgDb::create().await;
    let config = format!("{MOCK}[store]\nurl = \"{}\"\n", db.url);
    let a = Gateway::start(&config);
    let b = Gateway::start(&config);
    a.push_feature(&greet("V1", "sim/echo")).await;
    a.push_feature(&greet("V2", "sim/echo")).await;
    a.admin_features("/greet/deploy", json!({"env": "prod", "version": 1}))
        .await;
    a.admin_features("/greet/deploy", json!({"env": "prod", "version": 2}))
        .await;
    until_served(&a, "2", Duration::from_millis(100)).await;
    until_served(&b, "2", Duration::from_secs(1)).await;

    a.admin_features(
        "/greet/rollback",
        json!({"env": "prod", "reason": "incident"}),
    )
    .await;
    // This replica: the very next request.
    let (_, h, _) = greet_call(&a, &[], "x").await;
    assert_eq!(h["x-llmop-feature-version"], "1");
    // The other replica: within a second, no restart.
    let took = until_served(&b, "1", Duration::from_secs(1)).await;
    eprintln!("rollback served by the other replica after {took:?}");
    drop((a, b));
    db.drop_db().await;
}
