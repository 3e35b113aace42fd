//! Per-call cost from real usage blocks: each provider family (cache reads and writes
//! included), config overrides, unknown prices recorded as unknown (never 0).

mod support;

use serde_json::{json, Value};
use support::{client, fixture, get_json, Gateway, Reply, Upstream};

/// A gateway with one provider of `kind` on `upstream`, priced by the built-in catalog,
/// plus a mock `sim` priced by config and a mock `free` with no price at all.
fn gateway(kind: &str, upstream: &Upstream) -> Gateway {
    let base = match kind {
        "openai" => format!("{}/v1", upstream.url),
        _ => upstream.url.clone(),
    };
    Gateway::start_with_env(
        &format!(
            "[providers.up]\nkind = \"{kind}\"\nbase_url = \"{base}\"\napi_key_env = \"UP_KEY\"\n\
             [providers.sim]\nkind = \"mock\"\n[providers.free]\nkind = \"mock\"\n\
             [prices.\"sim/*\"]\ninput = 1.0\noutput = 2.0\n\
             [prices.\"up/my-finetune\"]\ninput = 10.0\noutput = 20.0\ncached_input = 5.0\n"
        ),
        &[("UP_KEY", "k")],
    )
}

async fn call(gw: &Gateway, id: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .json(&json!({"model": model, "stream": stream, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

async fn cost_of(gw: &Gateway, resp: reqwest::Response, id: &str) -> (Option<f64>, Value) {
    assert_eq!(resp.status(), 200);
    let header = resp
        .headers()
        .get("x-llmop-cost-usd")
        .map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
    let _ = resp.bytes().await;
    (header, gw.record(id).await)
}

#[tokio::test]
async fn openai_costs_count_cached_prompt_tokens() {
    // 19 prompt tokens of which 4 cached, 10 completion tokens; gpt-4o at $2.50 / $1.25
    // cached / $10 per million.
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway("openai", &up);
    let want = (15.0 * 2.50 + 4.0 * 1.25 + 10.0 * 10.0) / 1e6;
    let (header, rec) = cost_of(
        &gw,
        call(&gw, "c-openai", "up/gpt-4o", false).await,
        "c-openai",
    )
    .await;
    assert!(close(header.unwrap(), want), "{header:?} vs {want}");
    assert!(close(rec["cost_usd"].as_f64().unwrap(), want), "{rec}");
    // A dated snapshot has its model's price.
    let (header, _) = cost_of(
        &gw,
        call(&gw, "c-dated", "up/gpt-4o-2024-08-06", false).await,
        "c-dated",
    )
    .await;
    assert!(close(header.unwrap(), want));
    // A config override prices a model the catalog does not know.
    let (header, rec) = cost_of(
        &gw,
        call(&gw, "c-ft", "up/my-finetune", false).await,
        "c-ft",
    )
    .await;
    let want = (15.0 * 10.0 + 4.0 * 5.0 + 10.0 * 20.0) / 1e6;
    assert!(close(header.unwrap(), want));
    assert!(close(rec["cost_usd"].as_f64().unwrap(), want));
}

#[tokio::test]
async fn anthropic_costs_count_cache_reads_and_writes() {
    // input 2095 + cache reads 1000 + cache writes 100, output 503; claude-sonnet-4-5 at
    // $3 / $0.30 read / $3.75 write / $15 per million.
    let up = Upstream::start(|_, _| Reply::ok(fixture("anthropic/message.json"))).await;
    let gw = gateway("anthropic", &up);
    let want = (2095.0 * 3.0 + 1000.0 * 0.30 + 100.0 * 3.75 + 503.0 * 15.0) / 1e6;
    let resp = call(&gw, "c-anthropic", "up/claude-sonnet-4-5-20250929", false).await;
    let (header, rec) = cost_of(&gw, resp, "c-anthropic").await;
    assert!(close(header.unwrap(), want), "{header:?} vs {want}");
    assert!(close(rec["cost_usd"].as_f64().unwrap(), want));
    assert_eq!(rec["input_tokens"], 3195);
    assert_eq!(rec["cached_tokens"], 1000);
}

#[tokio::test]
async fn gemini_costs_count_thinking_as_output() {
    // 8 prompt tokens, 10 candidates + 20 thoughts (billed as output); gemini-2.5-flash
    // at $0.30 / $2.50 per million.
    let up = Upstream::start(|_, _| Reply::ok(fixture("gemini/generate_content.json"))).await;
    let gw = gateway("gemini", &up);
    let want = (8.0 * 0.30 + 30.0 * 2.50) / 1e6;
    let (header, rec) = cost_of(
        &gw,
        call(&gw, "c-gemini", "up/gemini-2.5-flash", false).await,
        "c-gemini",
    )
    .await;
    assert!(close(header.unwrap(), want), "{header:?} vs {want}");
    assert!(close(rec["cost_usd"].as_f64().unwrap(), want));
}

#[tokio::test]
async fn streams_are_costed_in_the_record_and_unknown_prices_stay_unknown() {
    let up = Upstream::start(|_, _| Reply::ok(fixture("openai/chat_completion.json"))).await;
    let gw = gateway("openai", &up);
    // Priced by config ($1 in / $2 out), streamed: the record has the cost.
    let (_, rec) = cost_of(
        &gw,
        call(&gw, "c-stream", "sim/echo", true).await,
        "c-stream",
    )
    .await;
    let (i, o) = (
        rec["input_tokens"].as_f64().unwrap(),
        rec["output_tokens"].as_f64().unwrap(),
    );
    assert!(i > 0.0 && o > 0.0);
    let stream_cost = (i * 1.0 + o * 2.0) / 1e6;
    assert!(
        close(rec["cost_usd"].as_f64().unwrap(), stream_cost),
        "{rec}"
    );
    // No price anywhere: no header, NULL in the record (not 0), and a metric says so.
    let (header, rec) = cost_of(&gw, call(&gw, "c-free", "free/echo", false).await, "c-free").await;
    assert_eq!(header, None);
    assert_eq!(rec["cost_usd"], Value::Null);
    assert!(rec["input_tokens"].as_i64().unwrap() > 0);
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("llmop_cost_unknown_total{") && l.contains("provider=\"free\"")),
        "{metrics}"
    );
    // `llmop cost` sums what is known and counts what is not.
    assert_eq!(
        get_json(&gw, "/v1/requests?limit=10").await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args([
            "cost", "--by", "model", "--since", "1h", "--store", &store, "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |g: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == g)
            .cloned()
            .unwrap()
    };
    assert!(close(
        row("sim/echo")["cost_usd"].as_f64().unwrap(),
        stream_cost
    ));
    assert_eq!(row("free/echo")["unpriced_calls"], 1);
    assert_eq!(row("free/echo")["cost_usd"], 0.0);
}

#[tokio::test]
async fn bad_price_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("llmop.toml");
    std::fs::write(
        &cfg,
        "[providers.sim]\nkind = \"mock\"\n[prices.\"nobody/x\"]\ninput = 1\noutput = 1\n[prices.\"sim/*\"]\ninput = -1\noutput = 1\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        text.contains("prices.\"nobody/x\"") || text.contains("prices.nobody/x"),
        "{text}"
    );
    assert!(
        text.contains("input") && text.contains("0 or more"),
        "{text}"
    );
}

#[tokio::test]
async fn prices_lists_every_configured_model_and_says_unknown_for_the_unpriced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("llmop.toml");
    std::fs::write(
        &cfg,
        "[providers.g]\nkind = \"gemini\"\nbase_url = \"http://127.0.0.1:9\"\nmodels = [\"gemini-2.0-flash-001\", \"gemini-9-imaginary\"]\n\
         [routes.r]\ntargets = [{ provider = \"g\", model = \"gemini-2.0-flash-001\" }]\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(["prices", "--json", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |m: &str| {
        v["prices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {m}: {v}"))
    };
    // A version id resolves to its model's price.
    assert_eq!(row("gemini-2.0-flash-001")["source"], "catalog");
    assert_eq!(row("gemini-2.0-flash-001")["input"], 0.1);
    // A listed model with no price is shown, as unknown.
    assert_eq!(row("gemini-9-imaginary")["source"], "unknown");
    assert!(row("gemini-9-imaginary")["input"].is_null());
}
