//! Record-store benchmark: sustained records/s through the record writer (group commit)
//! into a store, then the time of a cost-by-feature aggregate over all of them through
//! the read-only query path, and of searches by any id (`q`): a request id, a provider's
//! answer id of a call in the middle of the store, and one of no call (the whole time
//! index walked when the provider-id index is off). Each record has a random-looking
//! provider id, as a real provider's.
//!
//! `bench-store --url sqlite:///tmp/x.db --records 1000000 [--index-provider-ids]`

#[path = "../ids.rs"]
mod ids;
use clap::Parser;
use llmop_store::{Record, RecordWriter, Store, WriterConfig};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Concurrent submitters (request handlers).
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// Keep the index on the provider's answer id (`[store] index_provider_ids`).
    #[arg(long)]
    index_provider_ids: bool,
}

fn provider_id(i: usize) -> String {
    String::from_utf8_lossy(&ids::fresh_id(i as u64)).into_owned()
}

fn record(i: usize) -> Record {
    let mut r = Record::new(
        format!("bench-{i:09}"),
        1_700_000_000_000 + i as i64,
        "/v1/chat/completions",
    );
    r.feature = Some(format!("feature-{}", i % 20));
    r.user = Some(format!("user-{}", i % 5000));
    r.session = Some(format!("session-{}", i % 50_000));
    r.provider = Some("openai".into());
    r.model = Some(
        if i.is_multiple_of(3) {
            "gpt-4o-mini"
        } else {
            "gpt-4o"
        }
        .into(),
    );
    r.route = Some("smart".into());
    r.upstream_id = Some(provider_id(i));
    r.status = if i.is_multiple_of(50) { 502 } else { 200 };
    r.input_tokens = Some(120 + (i % 400) as i64);
    r.output_tokens = Some(30 + (i % 90) as i64);
    r.cost_usd = Some(0.0001 * (1 + i % 17) as f64);
    r.latency_ms = 200 + (i % 1500) as i64;
    r.input_messages = serde_json::json!([
        {"role": "system", "content": "You summarize support tickets in two sentences."},
        {"role": "user", "content": format!("Ticket {i}: the export button does nothing since the last update.")}
    ]);
    r.output_text = Some(
        "The export button stopped working after the update. Engineering is investigating.".into(),
    );
    r
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let store = Store::open(&args.url).await.expect("open store");
    store
        .index_provider_ids(args.index_provider_ids)
        .await
        .expect("provider-id index");
    let writer = std::sync::Arc::new(
        RecordWriter::<Record>::start(store.clone(), WriterConfig::default())
            .await
            .expect("writer"),
    );
    let start = Instant::now();
    let per = args.records / args.submitters;
    let mut tasks = Vec::new();
    for s in 0..args.submitters {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                w.submit(record(s * per + i)).await.expect("submit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("submitter");
    }
    let writer = std::sync::Arc::try_unwrap(writer).ok().expect("sole owner");
    let stats = writer.stats().clone();
    writer.shutdown(Duration::from_secs(600)).await;
    let write_secs = start.elapsed().as_secs_f64();
    let n = store.count().await.expect("count");
    let s = stats.snapshot();

    let q = "SELECT feature, SUM(cost_usd) AS usd, COUNT(*) AS calls FROM records GROUP BY feature ORDER BY usd DESC";
    let qstart = Instant::now();
    let result = store
        .query_readonly(q, 1000, Duration::from_secs(300))
        .await
        .expect("query");
    let query_ms = qstart.elapsed().as_secs_f64() * 1000.0;
    let search_ms = |q: String| {
        let store = store.clone();
        async move {
            let t = Instant::now();
            let page = store
                .list(&llmop_store::ListFilter {
                    q: Some(q),
                    ..Default::default()
                })
                .await
                .expect("search");
            (t.elapsed().as_secs_f64() * 1000.0, page.records.len())
        }
    };
    let middle = n as usize / 2;
    let by_request_id = search_ms(format!("bench-{middle:09}")).await;
    let by_provider_id = search_ms(provider_id(middle)).await;
    let by_unknown_id = search_ms("chatcmpl-of-no-call".into()).await;
    assert_eq!(
        (by_request_id.1, by_provider_id.1, by_unknown_id.1),
        (1, 1, 0)
    );
    println!(
        "{}",
        serde_json::json!({
            "url_kind": args.url.split(':').next(),
            "records": n,
            "write_seconds": write_secs,
            "records_per_second": (n as f64) / write_secs,
            "delayed_submits": s.delayed,
            "failed_commits": s.failed_commits,
            "cost_by_feature_query_ms": query_ms,
            "groups": result.rows.len(),
            "index_provider_ids": args.index_provider_ids,
            "search_by_request_id_ms": by_request_id.0,
            "search_by_provider_id_ms": by_provider_id.0,
            "search_by_unknown_id_ms": by_unknown_id.0,
        })
    );
}
