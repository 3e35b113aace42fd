//! `llmop replay`: a recorded request sent through a running gateway again (so the new
//! call is recorded like any other), on the recorded model, another route or model, or
//! for a feature call another version; both answers side by side.

use super::requests::{served_by, status};
use super::{open, opt, store_url, table, StoreArg};
use anyhow::{anyhow, Context};
use clap::Args;
use llmop_core::config::Config;
use llmop_store::{Record, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ReplayArgs {
    request_id: String,
    /// Replay on this route instead of the recorded model.
    #[arg(long, conflicts_with = "model")]
    route: Option<String>,
    /// Replay on this `provider/model` instead of the recorded model.
    #[arg(long)]
    model: Option<String>,
    /// Re-run a recorded feature call on this version, with the recorded variables
    /// (default for feature calls: the recorded version).
    #[arg(long)]
    version: Option<i64>,
    /// The running gateway (default: the config's `[server] listen`).
    #[arg(long, env = "LLMOP_GATEWAY_URL")]
    gateway: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: ReplayArgs) -> ExitCode {
    super::run_async(async {
        let store = open(&store_url(config, a.store.store)?).await?;
        let gateway = match a.gateway {
            Some(g) => g,
            None => {
                let config = Config::load(config).map_err(|e| {
                    anyhow!("cannot find the gateway's address (pass --gateway):\n{e}")
                })?;
                format!("http://{}", config.server.listen)
            }
        };
        replay(
            &store,
            &a.request_id,
            a.route.or(a.model).as_deref(),
            a.version,
            &gateway,
            a.json,
        )
        .await
    })
}

async fn replay(
    store: &Store,
    id: &str,
    model: Option<&str>,
    version: Option<i64>,
    gateway: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let original = store
        .get(id)
        .await?
        .ok_or_else(|| anyhow!("no record of request `{id}`"))?;
    let new_id = format!("replay-{}", uuid::Uuid::now_v7());
    let base = gateway.trim_end_matches('/');
    let client = reqwest::Client::new();
    let call = llmop_store::replay::replay_call(&original, model, version, &new_id)
        .map_err(|e| anyhow!(e))?;
    let mut req = client
        .post(format!("{base}{}", call.path))
        .json(&call.body)
        .timeout(Duration::from_secs(600));
    for (h, v) in &call.headers {
        req = req.header(*h, v);
    }
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the gateway at {gateway} (is it running? --gateway sets its URL)")
    })?;
    let http_status = resp.status();
    let _ = resp.bytes().await;
    // The replay's own record holds its tokens, cost and latency as the gateway saw them.
    let mut replayed = None;
    for _ in 0..100 {
        if let Some(r) = store.get(&new_id).await? {
            replayed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = replayed.ok_or_else(|| {
        anyhow!("the gateway answered {http_status} but its record {new_id} did not reach the store within 5 s: is the gateway using the same store?")
    })?;
    if as_json {
        out!("{}", json!({"original": original, "replay": replayed}));
        return Ok(());
    }
    let mut t = table();
    t.set_header(["", "original", "replay"]);
    let row = |name: &str, f: &dyn Fn(&Record) -> String| {
        vec![name.to_string(), f(&original), f(&replayed)]
    };
    t.add_row(row("request id", &|r| r.request_id.clone()));
    if original.feature_version.is_some() {
        t.add_row(row("feature version", &|r| {
            r.feature_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "-".into())
        }));
        t.add_row(row("parse", &|r| {
            r.parse_status.clone().unwrap_or_else(|| "-".into())
        }));
    }
    t.add_row(row("served by", &served_by));
    t.add_row(row("status", &status));
    t.add_row(row("latency ms", &|r| r.latency_ms.to_string()));
    t.add_row(row("tokens in/out", &|r| {
        format!("{}/{}", opt(&r.input_tokens), opt(&r.output_tokens))
    }));
    t.add_row(row("cost", &|r| {
        r.cost_usd
            .map(|c| format!("${}", llmop_cost::format_usd(c)))
            .unwrap_or_else(|| "unknown".into())
    }));
    t.add_row(row("output", &|r| {
        let mut s = r.output_text.clone().unwrap_or_default();
        if let Value::Array(calls) = &r.output_tool_calls {
            for c in calls {
                s.push_str(&format!(
                    "\ntool call {}({})",
                    c.get("name").and_then(Value::as_str).unwrap_or("?"),
                    c.get("arguments").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        s
    }));
    out!("{t}");
    if original.output_text == replayed.output_text
        && original.output_tool_calls == replayed.output_tool_calls
    {
        out!("outputs are identical");
    } else {
        out!("outputs differ");
    }
    Ok(())
}
