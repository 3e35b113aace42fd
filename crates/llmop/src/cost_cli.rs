//! `llmop cost`: spend over the records, grouped; `llmop prices`: the price each
//! configured model gets (config override, built-in catalog, or unknown).

use crate::records_cli::{now_ms, open, store_url, write_out};
use anyhow::{anyhow, Context};
use llmop_core::config::Config;
use llmop_store::CostBy;
use std::path::Path;

pub async fn cost(
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
        write_out(format_args!("{}", serde_json::to_string(&rows)?));
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
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

pub fn prices(config: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config)
        .map_err(|e| anyhow!("{e}"))
        .context("llmop prices reads the config's providers and routes")?;
    let pricing = llmop_cost::Pricing::new(&config.prices);
    let catalog = llmop_cost::Catalog::builtin();
    // Every model a route names, and every catalog model of each configured provider.
    let mut rows: Vec<(String, String, Option<llmop_cost::Price>, &'static str)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut add = |provider: &str, kind, model: &str| {
        if !seen.insert(format!("{provider}/{model}")) {
            return;
        }
        let price = pricing.price(provider, kind, model);
        let source = if config.prices.contains_key(&format!("{provider}/{model}"))
            || config.prices.contains_key(&format!("{provider}/*"))
        {
            "config"
        } else if price.is_some() {
            "catalog"
        } else {
            "unknown"
        };
        rows.push((provider.to_string(), model.to_string(), price, source));
    };
    for route in config.routes.values() {
        for t in &route.targets {
            if let Some(p) = config.providers.get(&t.provider) {
                add(&t.provider, p.kind, &t.model);
            }
        }
    }
    // Every model a provider lists (`models = […]`): one without a price shows as
    // unknown, never as free.
    for (name, p) in &config.providers {
        if p.kind == llmop_core::config::ProviderKind::Mock {
            continue;
        }
        for model in &p.models {
            add(name, p.kind, model);
        }
    }
    for (name, p) in &config.providers {
        for (kind, model, _) in catalog.entries() {
            if kind == p.kind.as_str() {
                add(name, p.kind, model);
            }
        }
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(p, m, price, source)| {
                serde_json::json!({"provider": p, "model": m, "source": source,
                    "input": price.map(|x| x.input), "output": price.map(|x| x.output),
                    "cached_input": price.and_then(|x| x.cached_input), "cache_write": price.and_then(|x| x.cache_write)})
            })
            .collect();
        write_out(format_args!(
            "{}",
            serde_json::json!({"catalog_as_of": catalog.as_of, "prices": list})
        ));
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
    t.set_header([
        "model",
        "input",
        "cached input",
        "cache write",
        "output",
        "source",
    ]);
    let usd = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v}"));
    for (p, m, price, source) in &rows {
        t.add_row([
            format!("{p}/{m}"),
            usd(price.map(|x| x.input)),
            usd(price.and_then(|x| x.cached_input)),
            usd(price.and_then(|x| x.cache_write)),
            usd(price.map(|x| x.output)),
            source.to_string(),
        ]);
    }
    write_out(format_args!("{t}"));
    write_out(format_args!(
        "USD per million tokens; built-in catalog as of {}",
        catalog.as_of
    ));
    Ok(())
}

/// `llmop budgets`: each configured budget's spend in its current window (from the
/// records), its limits, and its burn rate projected to the window's end.
pub async fn budgets(config_path: &Path, store: Option<String>, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let store = open(&store_url(config_path, store)?).await?;
    // The config's budgets and those added through the admin API.
    let mut specs = config.budgets.clone();
    for b in store.stored_budgets().await? {
        if let Ok(spec) = serde_json::from_value(b.spec) {
            specs.push(spec);
        }
    }
    let out = llmop_gateway::limits::report(&specs, &store, now_ms()).await?;
    if json {
        write_out(format_args!("{}", serde_json::Value::Array(out)));
        return Ok(());
    }
    if out.is_empty() {
        write_out(format_args!(
            "no [[budgets]] in {} (or nothing spent yet)",
            config_path.display()
        ));
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
    t.set_header([
        "budget",
        "subject",
        "window",
        "spent",
        "soft",
        "hard",
        "used",
        "burn /h",
        "projected",
    ]);
    let usd = |v: Option<f64>| {
        v.map_or_else(
            || "-".to_string(),
            |v| format!("${}", llmop_cost::format_usd(v)),
        )
    };
    for r in &out {
        let spent = r["spent_usd"].as_f64();
        let hard = r["hard_usd"].as_f64();
        t.add_row([
            r["scope"].as_str().unwrap_or("").to_string(),
            r["subject"].as_str().unwrap_or("-").to_string(),
            r["window"].as_str().unwrap_or("").to_string(),
            usd(spent),
            usd(r["soft_usd"].as_f64()),
            usd(hard),
            match (spent, hard) {
                (Some(s), Some(h)) if h > 0.0 => format!("{:.0}%", 100.0 * s / h),
                _ => "-".into(),
            },
            usd(r["burn_usd_per_hour"].as_f64()),
            usd(r["projected_usd"].as_f64()),
        ]);
    }
    write_out(format_args!("{t}"));
    Ok(())
}
