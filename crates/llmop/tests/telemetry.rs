//! OpenTelemetry export: a test collector decodes the OTLP/HTTP protobuf llmop posts
//! and checks every span: the GenAI attributes, llmop's own, the caller's trace
//! joined through `traceparent`, content only when configured, sampling, retries of a
//! failing collector, and a collector that never answers: calls are unaffected and the
//! spans past the queue are dropped and counted.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, Span};
use prost::Message;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Gateway;

#[derive(Default)]
struct Collector {
    batches: Mutex<Vec<ResourceSpans>>,
    /// Answer 503 to this many requests first.
    fail_first: AtomicUsize,
    requests: AtomicUsize,
}

async fn traces(
    State(c): State<Arc<Collector>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    c.requests.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["x-tenant"], "acme");
    assert_eq!(headers["authorization"], "Basic c2VjcmV0");
    if c.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    c.batches.lock().unwrap().extend(req.resource_spans);
    StatusCode::OK
}

async fn collector(fail_first: usize) -> (String, Arc<Collector>) {
    let c = Arc::new(Collector::default());
    c.fail_first.store(fail_first, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .with_state(c.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, c)
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        let b = self.batches.lock().unwrap();
        b.iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter().cloned()))
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Span> {
        for _ in 0..300 {
            let s = self.spans();
            if s.len() >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the collector got {} spans, not {n}", self.spans().len());
    }
}

fn attr(span: &Span, k: &str) -> Option<Av> {
    span.attributes
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

fn text(span: &Span, k: &str) -> String {
    match attr(span, k) {
        Some(Av::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    }
}

fn int(span: &Span, k: &str) -> i64 {
    match attr(span, k) {
        Some(Av::IntValue(v)) => v,
        other => panic!("{k}: {other:?}"),
    }
}

fn config(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[providers.sim]
kind = "mock"
[prices."sim/*"]
input = 1.0
output = 2.0
[telemetry]
endpoint = "{endpoint}"
headers = {{ x-tenant = "acme" }}
headers_env = {{ authorization = "OTEL_AUTH" }}
flush_ms = 50
{extra}
"#
    )
}

async fn call(gw: &Gateway, id: &str, traceparent: Option<&str>) -> u16 {
    let mut r = support::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .header("x-llmop-user", "ada")
        .header("x-llmop-session", "sess-9");
    if let Some(t) = traceparent {
        r = r.header("traceparent", t);
    }
    r.json(
        &json!({"model": "sim/echo", "temperature": 0.3, "max_tokens": 50,
        "messages": [{"role": "user", "content": "what is my order status?"}]}),
    )
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn spans_follow_the_genai_conventions_and_join_the_callers_trace() {
    // The collector fails its first request: the batch is retried, not lost.
    let (url, c) = collector(1).await;
    let gw = Gateway::start_with_env(
        &config(&url, "content = true"),
        &[("OTEL_AUTH", "Basic c2VjcmV0")],
    );
    assert_eq!(call(&gw, "otel-1", Some(PARENT)).await, 200);
    assert_eq!(call(&gw, "otel-2", None).await, 200);
    let spans = c.wait_for(2).await;
    assert!(
        c.requests.load(Ordering::SeqCst) >= 2,
        "retried after the 503"
    );
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| text(s, "llmop.request_id") == id)
            .unwrap_or_else(|| panic!("no span of {id}"))
            .clone()
    };
    let s = by_id("otel-1");
    assert_eq!(s.name, "chat sim/echo");
    assert_eq!(s.kind, SpanKind::Client as i32);
    // The caller's trace: same trace id, its span as parent.
    assert_eq!(hex(&s.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(s.span_id.len(), 8);
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    assert_eq!(text(&s, "gen_ai.operation.name"), "chat");
    assert_eq!(text(&s, "gen_ai.provider.name"), "llmop.mock");
    assert_eq!(text(&s, "gen_ai.request.model"), "sim/echo");
    assert_eq!(text(&s, "gen_ai.response.model"), "echo");
    assert!(!text(&s, "gen_ai.response.id").is_empty());
    assert_eq!(
        attr(&s, "gen_ai.request.temperature"),
        Some(Av::DoubleValue(0.3))
    );
    assert_eq!(int(&s, "gen_ai.request.max_tokens"), 50);
    assert!(int(&s, "gen_ai.usage.input_tokens") > 0);
    assert!(int(&s, "gen_ai.usage.output_tokens") > 0);
    assert_eq!(text(&s, "gen_ai.conversation.id"), "sess-9");
    assert_eq!(text(&s, "llmop.user"), "ada");
    assert_eq!(text(&s, "llmop.endpoint"), "/v1/chat/completions");
    assert_eq!(int(&s, "llmop.http.status_code"), 200);
    assert_eq!(int(&s, "llmop.attempts"), 1);
    assert!(matches!(attr(&s, "llmop.cost_usd"), Some(Av::DoubleValue(c)) if c > 0.0));
    assert_eq!(attr(&s, "llmop.stream"), Some(Av::BoolValue(false)));
    assert!(attr(&s, "error.type").is_none());
    let input: Value = serde_json::from_str(&text(&s, "gen_ai.input.messages")).unwrap();
    assert_eq!(input[0]["parts"][0]["content"], "what is my order status?");
    let output: Value = serde_json::from_str(&text(&s, "gen_ai.output.messages")).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    // A call without a traceparent starts its own trace.
    let s2 = by_id("otel-2");
    assert_ne!(hex(&s2.trace_id), hex(&s.trace_id));
    assert!(s2.parent_span_id.is_empty());
    // The resource names the service; the scope the conventions' schema.
    let b = c.batches.lock().unwrap().clone();
    let res = b[0].resource.as_ref().unwrap();
    assert!(res.attributes.iter().any(|a| a.key == "service.name"
        && a.value.as_ref().and_then(|v| v.value.clone())
            == Some(Av::StringValue("llmop".into()))));
    assert!(b[0].scope_spans[0]
        .schema_url
        .contains("opentelemetry.io/schemas/"));
    // Metrics under the conventions' names, and the span counter.
    let m = gw.metrics().await;
    assert!(m.contains("gen_ai_client_token_usage_bucket"), "{m}");
    assert!(m.contains("gen_ai_token_type=\"input\""), "{m}");
    assert!(
        m.contains("gen_ai_client_operation_duration_seconds_bucket"),
        "{m}"
    );
    assert!(
        m.contains("llmop_telemetry_spans_total{outcome=\"exported\"} 2"),
        "{m}"
    );
    // No secret in any span: the collector's credential and the message text only
    // where content was asked for.
    let all = format!("{spans:?}");
    assert!(!all.contains("c2VjcmV0"));
}

#[tokio::test]
async fn content_is_off_by_default_and_sampling_follows_the_callers_trace() {
    let (url, c) = collector(0).await;
    let gw = Gateway::start_with_env(
        &config(&url, "sample_ratio = 0.0"),
        &[("OTEL_AUTH", "Basic c2VjcmV0")],
    );
    // Ratio 0: only a trace the caller sampled is exported.
    assert_eq!(call(&gw, "s-1", None).await, 200);
    assert_eq!(call(&gw, "s-2", Some(PARENT)).await, 200);
    assert_eq!(
        call(
            &gw,
            "s-3",
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        )
        .await,
        200
    );
    let spans = c.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = if c.spans().len() > spans.len() {
        c.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 1, "only the sampled trace");
    assert_eq!(text(&spans[0], "llmop.request_id"), "s-2");
    assert!(
        attr(&spans[0], "gen_ai.input.messages").is_none(),
        "content is off by default"
    );
    assert!(attr(&spans[0], "gen_ai.output.messages").is_none());
    let all = format!("{spans:?}");
    assert!(
        !all.contains("order status"),
        "no message text without content = true"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("llmop_telemetry_spans_total{outcome=\"not_sampled\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_does_not_hold_up_calls() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let gw = Gateway::start_with_env(
        &config(
            &url,
            "queue_spans = 4\nbatch_spans = 1\ntimeout_ms = 30000\nmax_retries = 5",
        ),
        &[("OTEL_AUTH", "Basic c2VjcmV0")],
    );
    let started = std::time::Instant::now();
    for i in 0..40 {
        assert_eq!(call(&gw, &format!("bh-{i}"), None).await, 200);
    }
    let took = started.elapsed();
    // Every call was recorded (the writer was not held up either)…
    let store = llmop_store::Store::open(&gw.store_url()).await.unwrap();
    for _ in 0..100 {
        if store.count().await.unwrap() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.count().await.unwrap(), 40);
    // …and what did not fit the queue was dropped and counted.
    let m = gw.metrics().await;
    let dropped: u64 = m
        .lines()
        .find(|l| l.starts_with("llmop_telemetry_spans_total{outcome=\"dropped_queue_full\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter: {m}"));
    assert!(dropped >= 30, "{dropped} dropped of 40");
    // Not a timing assertion (benchmarks measure speed): printed for the record.
    eprintln!("40 calls with a silent collector: {took:?}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
