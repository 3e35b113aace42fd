//! `llmop budgets`: each budget's spend in its current window, its limits and burn rate.

use super::{now_ms, open, store_url, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use llmop_core::config::Config;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct BudgetsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: BudgetsArgs) -> ExitCode {
    super::run_async(budgets(config, a.store.store, a.json))
}

/// `llmop budgets`: each configured budget's spend in its current window (from the
/// records), its limits, and its burn rate projected to the window's end.
async fn budgets(config_path: &Path, store: Option<String>, json: bool) -> anyhow::Result<()> {
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
    let mut t = super::table();
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
