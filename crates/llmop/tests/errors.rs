//! Bad input and upstream failures, through the real binary: every error is the
//! documented envelope with the right status and stable code, and nothing panics.

mod support;

use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{client, fixture, post_json, Gateway, Reply, Upstream};

fn one_provider(kind: &str, url: &str, extra: &str) -> String {
    let base = if kind == "openai" {
        format!("{url}/v1")
    } else {
        url.to_string()
    };
    format!("[providers.up]\nkind = \"{kind}\"\nbase_url = \"{base}\"\n[routes.main]\ntargets = [{{ provider = \"up\", model = \"m\" }}]\n{extra}")
}

async fn chat(gw: &Gateway, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = post_json(gw, "/v1/chat/completions", &body).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn assert_envelope(body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(e["request_id"].is_string(), "{body}");
}

const MOCK: &str = "[providers.sim]\nkind = \"mock\"\n[server]\nmax_body_bytes = 2000\n";

#[tokio::test]
async fn malformed_and_invalid_bodies_get_400_naming_the_field() {
    let gw = Gateway::start(MOCK);
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("{not json", None),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, None),
        (r#"{"model":"sim/x"}"#, None),
        (r#"{"model":"sim/x","messages":[]}"#, Some("messages")),
        (
            r#"{"model":"sim/x","messages":[{"role":"user","content":5}]}"#,
            Some("messages[0].content"),
        ),
        (
            r#"{"model":"sim/x","messages":[{"role":"robot","content":"x"}]}"#,
            Some("messages[0].role"),
        ),
        (
            r#"{"model":"sim/x","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            Some("temperature"),
        ),
        (
            r#"{"model":"sim/x","messages":[{"role":"tool","content":"x"}]}"#,
            Some("messages[0].tool_call_id"),
        ),
        (
            r#"{"model":"sim/x","messages":[{"role":"user","content":"x"}],"n":3}"#,
            Some("n"),
        ),
        (r#"[1,2,3]"#, None),
        ("", None),
    ];
    for (body, param) in cases {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert!(r.headers().contains_key("x-request-id"));
        let v: Value = r.json().await.unwrap();
        assert_envelope(&v, "invalid_request");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{body}: {v}");
        }
    }
    // The fields' names are in the messages.
    let (_, _, v) = chat(&gw, json!({"messages": []})).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model"),
        "{v}"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_not() {
    let gw = Gateway::start(MOCK);
    let big =
        json!({"model": "sim/x", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let (status, _, v) = chat(&gw, big.clone()).await;
    assert_eq!(status, 413);
    assert_envelope(&v, "payload_too_large");
    // Chunked, with no Content-Length.
    let bytes = serde_json::to_vec(&big).unwrap();
    let stream = futures::stream::iter(
        bytes
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408() {
    let gw = Gateway::start("[providers.sim]\nkind = \"mock\"\n[server]\nbody_timeout_ms = 300\n");
    // Half a body, then silence.
    let stream =
        futures::stream::once(async { Ok::<_, std::io::Error>(b"{\"model\":\"sim/x\",".to_vec()) })
            .chain(futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, std::io::Error>(b"}".to_vec())
            }));
    let start = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_envelope(&r.json().await.unwrap(), "request_timeout");
}

#[tokio::test]
async fn unknown_model_is_404_in_each_format() {
    let gw = Gateway::start(MOCK);
    let (status, headers, v) = chat(&gw, hi("no-such-route")).await;
    assert_eq!(status, 404);
    assert_envelope(&v, "model_not_found");
    assert_eq!(
        v["error"]["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    let (status, _, v) = chat(&gw, hi("nobody/gpt")).await;
    assert_eq!(status, 404);
    assert_envelope(&v, "model_not_found");
    let r = post_json(
        &gw,
        "/v1/messages",
        &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn other_paths_methods_and_headers() {
    let gw = Gateway::start(MOCK);
    let r = client()
        .get(format!("{}/v1/chat/completions", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_envelope(&r.json().await.unwrap(), "method_not_allowed");
    let r = client()
        .get(format!("{}/nope", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_envelope(&r.json().await.unwrap(), "not_found");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-llmop-tags", "no-equals-sign")
        .json(&hi("sim/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["param"],
        "x-llmop-tags"
    );
    // A bad client request id is replaced, a good one echoed.
    let r = client()
        .get(format!("{}/healthz", gw.url))
        .header("x-request-id", "bad id!")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "bad id!");
    assert_eq!(uuid_version(&id), Some('7'));
    let r = client()
        .get(format!("{}/readyz", gw.url))
        .header("x-request-id", "ok-id_1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "ok-id_1");
}

fn uuid_version(id: &str) -> Option<char> {
    (id.len() == 36).then(|| id.chars().nth(14)).flatten()
}

#[tokio::test]
async fn garbage_never_gets_a_500() {
    let gw = Gateway::start(MOCK);
    let bodies: Vec<Vec<u8>> = vec![
        b"\x00\xff\xfe".to_vec(),
        b"null".to_vec(),
        br#"{"model":null,"messages":null}"#.to_vec(),
        br#"{"model":"sim/x","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#.to_vec(),
        br#"{"model":"sim/x","messages":[{"role":"user","content":[{"type":"nope","x":1}]}]}"#.to_vec(),
        br#"{"model":"sim/x","messages":[{"role":"assistant","tool_calls":[{"id":1}]}]}"#.to_vec(),
        br#"{"model":"sim/x","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function"}}"#.to_vec(),
        br#"{"model":"sim/x","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#.to_vec(),
        "{\"model\":\"sim/x\",\"messages\":[{\"role\":\"user\",\"content\":\"\u{1F600}\"}],\"max_tokens\":-1}".as_bytes().to_vec(),
    ];
    for b in bodies {
        for path in ["/v1/chat/completions", "/v1/messages"] {
            let r = client()
                .post(format!("{}{path}", gw.url))
                .body(b.clone())
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_client_error(),
                "{path} {:?}: {}",
                String::from_utf8_lossy(&b),
                r.status()
            );
            let v: Value = r.json().await.expect("a JSON error body");
            assert!(v["error"]["message"].is_string());
        }
    }
    assert_eq!(
        client()
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn upstream_429_keeps_retry_after() {
    let up = Upstream::start(|_, _| {
        Reply::Json(
            429,
            fixture("openai/error_429.json"),
            vec![("retry-after", "7".into())],
        )
    })
    .await;
    let gw = Gateway::start(&one_provider("openai", &up.url, ""));
    let (status, headers, v) = chat(&gw, hi("main")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_envelope(&v, "upstream_rate_limited");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Rate limit reached"));
    // A 429 moves on to the next target; with none left, one upstream call was made.
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn upstream_errors_are_mapped_not_leaked() {
    let up = Upstream::start(|_, n| match n {
        0 => Reply::Raw(
            500,
            "text/html",
            "<html>Internal Server Error stack trace at foo.py:12</html>".into(),
        ),
        1 => Reply::Json(400, fixture("openai/error_400_invalid_value.json"), vec![]),
        _ => Reply::Raw(
            200,
            "application/json",
            "{\"not\": \"a completion\"}".into(),
        ),
    })
    .await;
    let gw = Gateway::start(&one_provider("openai", &up.url, ""));
    let (status, _, v) = chat(&gw, hi("main")).await;
    assert_eq!(status, 502);
    assert_envelope(&v, "upstream_error");
    assert!(
        !v.to_string().contains("stack trace"),
        "raw upstream body must not leak: {v}"
    );
    let (status, _, v) = chat(&gw, hi("main")).await;
    assert_eq!(status, 400);
    assert_envelope(&v, "upstream_bad_request");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid value for 'temperature'"));
    let (status, _, v) = chat(&gw, hi("main")).await;
    assert_eq!(status, 502);
    assert_envelope(&v, "upstream_protocol_error");
}

#[tokio::test]
async fn anthropic_overload_in_anthropic_shape() {
    let up =
        Upstream::start(|_, _| Reply::Json(529, fixture("anthropic/error_529.json"), vec![])).await;
    let gw = Gateway::start(&one_provider("anthropic", &up.url, ""));
    let r = post_json(
        &gw,
        "/v1/messages",
        &json!({"model": "main", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));
    assert!(v["request_id"].is_string());
}

#[tokio::test]
async fn hanging_upstream_times_out_at_the_route_deadline() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let config = one_provider("openai", &up.url, "")
        .replace("[routes.main]\n", "[routes.main]\ntimeout_ms = 400\n");
    let gw = Gateway::start(&config);
    let start = Instant::now();
    let (status, _, v) = chat(&gw, hi("main")).await;
    let took = start.elapsed();
    assert_eq!(status, 504);
    assert_envelope(&v, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn stream_cut_midway_ends_with_an_error_event() {
    let up = Upstream::start(|_, _| Reply::SseCut(fixture("openai/stream.sse"), 3)).await;
    let gw = Gateway::start(&one_provider("openai", &up.url, ""));
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("Hello"), "{text}");
    let events = support::sse_events(&text);
    let (_, last) = events.last().unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["error"]["code"], "upstream_stream_error", "{text}");
    assert!(!text.contains("[DONE]"));
    // Bytes had reached the client: no second attempt anywhere.
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_reaches_the_client() {
    let up = Upstream::start(|_, _| Reply::sse(fixture("anthropic/stream_overloaded.sse"))).await;
    let gw = Gateway::start(&one_provider("anthropic", &up.url, ""));
    let r = post_json(&gw, "/v1/messages", &json!({"model": "main", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})).await;
    let events = support::sse_events(&r.text().await.unwrap());
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert!(data.contains("Overloaded"));
    assert!(
        data.contains("\"code\":\"upstream_stream_error\""),
        "{data}"
    );
}

#[tokio::test]
async fn fallback_moves_on_for_server_errors_only() {
    let bad = Upstream::start(|_, n| {
        if n == 0 {
            Reply::Raw(503, "text/plain", "busy".into())
        } else {
            Reply::Json(400, fixture("openai/error_400_invalid_value.json"), vec![])
        }
    })
    .await;
    let good = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let config = format!(
        "[providers.bad]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.good]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.main]\ntargets = [{{ provider = \"bad\", model = \"a\" }}, {{ provider = \"good\", model = \"b\" }}]\n",
        bad.url, good.url
    );
    let gw = Gateway::start(&config);
    let (status, headers, _) = chat(&gw, hi("main")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llmop-attempts"], "2");
    assert_eq!(headers["x-llmop-provider"], "good");
    assert_eq!(good.count(), 1);
    // A 400 says the request itself is wrong: no other target is tried.
    let (status, _, _) = chat(&gw, hi("main")).await;
    assert_eq!(status, 400);
    assert_eq!(good.count(), 1);
}

#[tokio::test]
async fn stream_falls_back_before_the_first_byte() {
    let bad = Upstream::start(|_, _| {
        Reply::Raw(
            503,
            "application/json",
            "{\"error\":{\"message\":\"down\"}}".into(),
        )
    })
    .await;
    let good = Upstream::start(|_, _| Reply::sse(fixture("openai/stream.sse"))).await;
    let config = format!(
        "[providers.bad]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[providers.good]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.main]\ntargets = [{{ provider = \"bad\", model = \"a\" }}, {{ provider = \"good\", model = \"b\" }}]\n",
        bad.url, good.url
    );
    let gw = Gateway::start(&config);
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "main", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmop-provider"], "good");
    assert!(r.text().await.unwrap().contains("[DONE]"));
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = Gateway::start(&one_provider(
        "openai",
        &format!("http://127.0.0.1:{port}"),
        "",
    ));
    let (status, _, v) = chat(&gw, hi("main")).await;
    assert_eq!(status, 502);
    assert_envelope(&v, "upstream_unreachable");
}
