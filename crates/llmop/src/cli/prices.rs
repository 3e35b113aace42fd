//! `llmop prices`: the price each configured model gets (config override, built-in
//! catalog, or unknown). Reads the config only.

use super::write_out;
use anyhow::{anyhow, Context};
use clap::Args;
use llmop_core::config::Config;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct PricesArgs {
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Path, a: PricesArgs) -> ExitCode {
    match prices(config, a.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmop: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn prices(config: &Path, json: bool) -> anyhow::Result<()> {
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
    let mut t = super::table();
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
