//! `llmop cost`: spend over the recorded calls, grouped (by feature, user, model, key,
//! env or a tag), with the calls whose price is unknown counted apart.

use super::{now_ms, open, store_url, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use llmop_store::CostBy;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct CostArgs {
    /// feature, user, model, key, env, or tag:<name>.
    #[arg(long, default_value = "feature")]
    by: String,
    /// From this time: an age such as `7d`, a date, RFC 3339 or Unix ms.
    #[arg(long, default_value = "30d")]
    since: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: CostArgs) -> ExitCode {
    super::run_async(cost(config, a.store.store, &a.by, &a.since, a.json))
}

async fn cost(
    config: &Path,
    store: Option<String>,
    by: &str,
    since: &str,
    json: bool,
) -> anyhow::Result<()> {
    let by = CostBy::parse(by).map_err(|m| anyhow!("--by {m}"))?;
    let since_ms = llmop_store::parse_time(since, now_ms()).map_err(|m| anyhow!("--since: {m}"))?;
    let store = open(&store_url(config, store)?).await?;
    let rows = store.cost_by(&by, since_ms).await?;
    if json {
        return super::print_json(&rows);
    }
    let mut t = super::table();
    t.set_header([
        "group",
        "calls",
        "cost (USD)",
        "unpriced calls",
        "input tokens",
        "output tokens",
    ]);
    let (mut calls, mut cost, mut unpriced) = (0, 0.0, 0);
    for r in &rows {
        calls += r.calls;
        cost += r.cost_usd;
        unpriced += r.unpriced_calls;
        t.add_row([
            r.group.clone().unwrap_or_else(|| "(none)".into()),
            r.calls.to_string(),
            llmop_cost::format_usd(r.cost_usd),
            r.unpriced_calls.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
        ]);
    }
    t.add_row([
        "total".to_string(),
        calls.to_string(),
        llmop_cost::format_usd(cost),
        unpriced.to_string(),
        String::new(),
        String::new(),
    ]);
    write_out(format_args!("{t}"));
    if unpriced > 0 {
        write_out(format_args!(
            "{unpriced} calls have no price (their cost is unknown, not in the total): see `llmop prices` and add [prices] entries"
        ));
    }
    Ok(())
}
