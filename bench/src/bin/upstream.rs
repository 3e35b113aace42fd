//! A fast OpenAI-format upstream for benchmarks: answers every chat completion at once
//! with a fixed body, or a fixed SSE stream of `--chunks` chunks. What is measured is the
//! proxy in front of it, so it does as little as it can, but each answer has an id of
//! its own, random-looking like a real provider's (`chatcmpl-` and 29 letters and
//! digits): a proxy that indexes the provider's ids pays for random keys, as it would in
//! production. `--fixed-id` answers `chatcmpl-bench` every time, as this upstream did
//! before.

#[path = "../ids.rs"]
mod ids;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use clap::Parser;
use ids::fresh_id;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Chunks of content in a streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Answer with a tool call (`send_email`) instead of text, whole and streamed.
    #[arg(long)]
    tool_call: bool,
    /// Every answer's id is `chatcmpl-bench` (else each answer has its own).
    #[arg(long)]
    fixed_id: bool,
}

const ID: &str = "chatcmpl-bench";

/// The answer's parts around each occurrence of its id.
fn parts(body: &str) -> Vec<Bytes> {
    body.split(ID)
        .map(|p| Bytes::copy_from_slice(p.as_bytes()))
        .collect()
}

/// The answer with `id` in place of every occurrence of the template's.
fn with_id(parts: &[Bytes], id: &[u8]) -> Bytes {
    let len = parts.iter().map(Bytes::len).sum::<usize>() + id.len() * (parts.len() - 1);
    let mut out = Vec::with_capacity(len);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(id);
        }
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

const WHOLE_TOOL: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_bench1","type":"function","function":{"name":"send_email","arguments":"{\"to\":\"team@example.com\",\"body\":\"The weekly report is attached.\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}}"#;

fn stream_tool_body() -> String {
    let head = r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":"#;
    let mut s = String::new();
    s.push_str(&format!("{head}{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"index\":0,\"id\":\"call_bench1\",\"type\":\"function\",\"function\":{{\"name\":\"send_email\",\"arguments\":\"\"}}}}]}},\"finish_reason\":null}}]}}\n\n"));
    for piece in [
        r#"{\"to\":\"team@"#,
        r#"example.com\",\"body\":"#,
        r#"\"The weekly report.\"}"#,
    ] {
        s.push_str(&format!("{head}{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{piece}\"}}}}]}},\"finish_reason\":null}}]}}\n\n"));
    }
    s.push_str(&format!(
        "{head}{{}},\"finish_reason\":\"tool_calls\"}}]}}\n\n"
    ));
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":20,\"total_tokens\":44}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

const WHOLE: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44,"prompt_tokens_details":{"cached_tokens":0}}}"#;

fn stream_body(chunks: usize) -> String {
    let mut s = String::new();
    let head = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":"#;
    s.push_str(&format!(
        "data: {head}{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n"
    ));
    for i in 0..chunks {
        s.push_str(&format!(
            "data: {head}{{\"content\":\" word{i}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str(&format!(
        "data: {head}{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
    ));
    s.push_str(&format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[],\"usage\":{{\"prompt_tokens\":24,\"completion_tokens\":{chunks},\"total_tokens\":{}}}}}\n\n",
        24 + chunks
    ));
    s.push_str("data: [DONE]\n\n");
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args = Args::parse();
    let streamed = Bytes::from(if args.tool_call {
        stream_tool_body()
    } else {
        stream_body(args.chunks)
    });
    let whole: &'static str = if args.tool_call { WHOLE_TOOL } else { WHOLE };
    let fixed_id = args.fixed_id;
    let streamed_parts = std::sync::Arc::new(parts(std::str::from_utf8(&streamed).unwrap_or("")));
    let whole_parts = std::sync::Arc::new(parts(whole));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let streamed = streamed.clone();
        let (streamed_parts, whole_parts) = (streamed_parts.clone(), whole_parts.clone());
        let n = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let is_stream = body.windows(13).any(|w| w == b"\"stream\":true");
            let (ct, payload) = match (is_stream, fixed_id) {
                (true, true) => ("text/event-stream", streamed),
                (false, true) => ("application/json", Bytes::from_static(whole.as_bytes())),
                (true, false) => ("text/event-stream", with_id(&streamed_parts, &fresh_id(n))),
                (false, false) => ("application/json", with_id(&whole_parts, &fresh_id(n))),
            };
            let mut r = Response::new(Body::from(payload));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            r
        }
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .expect("bind");
    println!(
        "bench-upstream listening on http://{}",
        listener.local_addr().expect("addr")
    );
    axum::serve(listener, app).await.expect("serve");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_replace_every_occurrence() {
        let ids: std::collections::HashSet<[u8; 38]> = (0..10_000).map(fresh_id).collect();
        assert_eq!(ids.len(), 10_000);
        let body = stream_body(3);
        let id = fresh_id(7);
        let out = with_id(&parts(&body), &id);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.contains(ID));
        assert_eq!(
            text.matches(std::str::from_utf8(&id).unwrap()).count(),
            body.matches(ID).count()
        );
        assert_eq!(text.replace(std::str::from_utf8(&id).unwrap(), ID), body);
    }
}
