//! Load generator for the gateway benchmarks.
//!
//! `--rate R`: open loop, one request every 1/R s for `--seconds`; each latency is
//! measured from the moment the request was *scheduled*, so a stalled server cannot
//! hide its queueing delay (no coordinated omission).
//! `--max --concurrency C`: closed loop, C requests always in flight; reports the
//! throughput reached.
//!
//! For streams, `ttfb` is the time to the first body bytes and `latency` the time to the
//! end of the stream. Prints one JSON object.

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// `model` field of the requests.
    #[arg(long, default_value = "bench")]
    model: String,
    #[arg(long)]
    stream: bool,
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long)]
    max: bool,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of warm-up traffic before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "")]
    label: String,
    /// Make each request's text unique, so that a mock provider's per-conversation
    /// draws (error_rate) vary from call to call, and nothing can be served from a
    /// cache. With --body: each `{i}` in the body is replaced by the request's number.
    #[arg(long)]
    vary: bool,
    /// Post to this path instead of /v1/chat/completions (e.g. a feature's invoke).
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Send this JSON body as is (with --path): `model` and `stream` do not apply.
    #[arg(long)]
    body: Option<String>,
    /// `NAME:VALUE` headers on every request (e.g. `x-llmop-session:s1`).
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// The `--header`s, set once at start.
static HEADERS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Stats {
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    errors: u64,
}

async fn one(
    client: &HttpClient,
    uri: &hyper::Uri,
    body: &Bytes,
    scheduled: Instant,
) -> Result<(u64, u64), String> {
    let mut req = hyper::Request::post(uri.clone()).header("content-type", "application/json");
    for (k, v) in HEADERS.get().map(Vec::as_slice).unwrap_or_default() {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut ttfb = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if ttfb.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            ttfb = Some(scheduled.elapsed());
        }
        if body.is_end_stream() {
            break;
        }
    }
    let total = scheduled.elapsed();
    Ok((
        total.as_micros() as u64,
        ttfb.unwrap_or(total).as_micros() as u64,
    ))
}

fn record(stats: &Mutex<Stats>, r: Result<(u64, u64), String>) {
    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok((total, ttfb)) => {
            let _ = s.latency.record(total.max(1));
            let _ = s.ttfb.record(ttfb.max(1));
        }
        Err(_) => s.errors += 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let _ = HEADERS.set(
        args.headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();
    let uri: hyper::Uri = format!("{}{}", args.url.trim_end_matches('/'), args.path)
        .parse()
        .expect("url");
    let body = match &args.body {
        Some(b) => Bytes::from(b.clone()),
        None => Bytes::from(
            serde_json::json!({
                "model": args.model,
                "stream": args.stream,
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Write one sentence about foxes and dogs."}
                ],
                "max_tokens": 64
            })
            .to_string(),
        ),
    };
    let new_stats = || {
        Arc::new(Mutex::new(Stats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ttfb: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            errors: 0,
        }))
    };

    let vary_body = {
        let (model, stream) = (args.model.clone(), args.stream);
        let given = args.body.clone();
        move |i: u32| {
            if let Some(b) = &given {
                return Bytes::from(b.replace("{i}", &i.to_string()));
            }
            Bytes::from(
                serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "messages": [{"role": "user", "content": format!("Write one sentence about foxes and dogs, #{i}.")}],
                    "max_tokens": 64
                })
                .to_string(),
            )
        }
    };
    let vary = args.vary;
    let run = |seconds: f64, stats: Arc<Mutex<Stats>>| {
        let (client, uri, body) = (client.clone(), uri.clone(), body.clone());
        let vary_body = vary_body.clone();
        let max = args.max;
        let (rate, conc) = (args.rate, args.concurrency);
        async move {
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(seconds);
            let mut tasks = tokio::task::JoinSet::new();
            if max {
                for worker in 0..conc as u32 {
                    let (client, uri, body, stats) =
                        (client.clone(), uri.clone(), body.clone(), stats.clone());
                    let vary_body = vary_body.clone();
                    tasks.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            let body = if vary {
                                vary_body(worker.wrapping_mul(1 << 20).wrapping_add(n as u32))
                            } else {
                                body.clone()
                            };
                            let r = one(&client, &uri, &body, Instant::now()).await;
                            record(&stats, r);
                            n += 1;
                        }
                        n
                    });
                }
            } else {
                let gap = Duration::from_secs_f64(1.0 / rate);
                let mut i: u32 = 0;
                loop {
                    let at = start + gap * i;
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    let body = if vary { vary_body(i) } else { body.clone() };
                    let (client, uri, stats) = (client.clone(), uri.clone(), stats.clone());
                    tasks.spawn(async move {
                        let r = one(&client, &uri, &body, at).await;
                        record(&stats, r);
                        1u64
                    });
                    i += 1;
                    // Reap finished tasks as we go so the set stays small.
                    while tasks.try_join_next().is_some() {}
                }
            }
            while tasks.join_next().await.is_some() {}
            start.elapsed()
        }
    };

    if args.warmup > 0.0 {
        run(args.warmup, new_stats()).await;
    }
    let stats = new_stats();
    let elapsed = run(args.seconds, stats.clone()).await;
    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |v: u64| (v as f64) / 1000.0;
    let done = s.latency.len();
    println!(
        "{}",
        serde_json::json!({
            "label": args.label,
            "mode": if args.max { "max" } else { "rate" },
            "stream": args.stream,
            "target_rps": if args.max { serde_json::Value::Null } else { args.rate.into() },
            "concurrency": if args.max { args.concurrency.into() } else { serde_json::Value::Null },
            "completed": done,
            "errors": s.errors,
            "rps": (done as f64) / elapsed.as_secs_f64(),
            "p50_ms": ms(s.latency.value_at_quantile(0.50)),
            "p99_ms": ms(s.latency.value_at_quantile(0.99)),
            "max_ms": ms(s.latency.max()),
            "ttfb_p50_ms": ms(s.ttfb.value_at_quantile(0.50)),
            "ttfb_p99_ms": ms(s.ttfb.value_at_quantile(0.99)),
        })
    );
}
