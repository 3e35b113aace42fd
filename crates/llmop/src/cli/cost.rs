//! `llmop cost`: spend over the recorded calls, grouped (by feature, user, model, key,
//! env or a tag), with the calls whose price is unknown counted apart.

use super::{now_ms, open, store_url, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use llmop_core::config::Config;
use llmop_store::{CostBy, SavingsRow};
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
    /// What caching (response cache, idempotent replays, provider prompt caching) and
    /// cascade routing saved, per feature and model.
    #[arg(long)]
    savings: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: CostArgs) -> ExitCode {
    if a.savings {
        return super::run_async(savings(config, a.store.store, &a.since, a.json));
    }
    super::run_async(cost(config, a.store.store, &a.by, &a.since, a.json))
}

/// Prompt caching's saving on one row: reads at the cached rate instead of the input
/// rate, minus what writes cost above the input rate (Anthropic charges 1.25x).
fn prompt_saving(pricing: Option<&(llmop_cost::Pricing, Config)>, r: &SavingsRow) -> Option<f64> {
    let (pricing, config) = pricing?;
    let (provider, model) = (r.provider.as_deref()?, r.model.as_deref()?);
    let kind = config.providers.get(provider)?.kind;
    let p = pricing.price(provider, kind, model)?;
    let per = |t: i64, usd: f64| t as f64 * usd / 1e6;
    Some(
        per(r.cached_tokens, p.input - p.cached_input.unwrap_or(p.input))
            - per(
                r.cache_write_tokens,
                p.cache_write.unwrap_or(p.input) - p.input,
            ),
    )
}

async fn savings(
    config: &Path,
    store: Option<String>,
    since: &str,
    json: bool,
) -> anyhow::Result<()> {
    let since_ms = llmop_store::parse_time(since, now_ms()).map_err(|m| anyhow!("--since: {m}"))?;
    let store = open(&store_url(config, store)?).await?;
    let rows = store.savings(since_ms).await?;
    // Prices come from the config (its providers' kinds, its [prices]); without one,
    // prompt caching's saving is unknown.
    let pricing = Config::load(config)
        .ok()
        .map(|c| (llmop_cost::Pricing::new(&c.prices), c));
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["prompt_cache_saved_usd"] = serde_json::json!(prompt_saving(pricing.as_ref(), r));
                v
            })
            .collect();
        return super::print_json(&out);
    }
    let mut t = super::table();
    t.set_header([
        "feature",
        "model",
        "calls",
        "paid (USD)",
        "cache hits",
        "cache saved",
        "replays",
        "replays saved",
        "prompt cache read/written",
        "prompt cache saved",
        "cascade calls",
        "escalated",
        "cascade vs last target",
    ]);
    let usd = llmop_cost::format_usd;
    let (mut paid, mut saved) = (0.0, 0.0);
    for r in &rows {
        let prompt = prompt_saving(pricing.as_ref(), r);
        paid += r.cost_usd;
        saved += r.cache_saved_usd + r.replay_saved_usd + prompt.unwrap_or(0.0);
        saved += r.cascade_baseline_usd - r.cascade_cost_usd;
        t.add_row([
            r.feature.clone().unwrap_or_else(|| "(none)".into()),
            match (&r.provider, &r.model) {
                (Some(p), Some(m)) => format!("{p}/{m}"),
                _ => "(none)".into(),
            },
            r.calls.to_string(),
            usd(r.cost_usd),
            r.cache_hits.to_string(),
            usd(r.cache_saved_usd),
            r.replays.to_string(),
            usd(r.replay_saved_usd),
            format!("{}/{}", r.cached_tokens, r.cache_write_tokens),
            prompt.map_or_else(|| "unknown".into(), usd),
            r.cascade_calls.to_string(),
            if r.cascade_calls > 0 {
                format!(
                    "{} ({:.0}%)",
                    r.cascade_escalated,
                    100.0 * r.cascade_escalated as f64 / r.cascade_calls as f64
                )
            } else {
                String::new()
            },
            if r.cascade_calls > 0 {
                format!(
                    "{} vs {}",
                    usd(r.cascade_cost_usd),
                    usd(r.cascade_baseline_usd)
                )
            } else {
                String::new()
            },
        ]);
    }
    write_out(format_args!("{t}"));
    write_out(format_args!(
        "paid {} · saved {} (response cache, idempotent replays, provider prompt caching, cascade)",
        usd(paid),
        usd(saved)
    ));
    Ok(())
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
