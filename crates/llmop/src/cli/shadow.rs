//! `llmop shadow report`: a feature's shadow version against what was served over a
//! window (calls, parse success, latency, cost, identical outputs).

use super::{now_ms, open, store_url, write_out, StoreArg};
use anyhow::{anyhow, bail};
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ShadowCommand {
    /// Primary vs shadow over a window: calls, parse success, latency, cost, identical
    /// outputs.
    Report {
        feature: String,
        /// From this time: an age such as `7d`, a date, RFC 3339 or Unix ms.
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub fn run(config: &Path, command: ShadowCommand) -> ExitCode {
    let ShadowCommand::Report {
        feature,
        since,
        env,
        json,
        store,
    } = command;
    super::run_async(shadow_report(
        config,
        store.store,
        &feature,
        &since,
        env.as_deref(),
        json,
    ))
}

async fn shadow_report(
    config: &Path,
    store: Option<String>,
    feature: &str,
    since: &str,
    env: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let now = now_ms();
    let since_ms = llmop_store::parse_time(since, now).map_err(|m| anyhow!("--since: {m}"))?;
    let store = open(&store_url(config, store)?).await?;
    let report = store.shadow_report(feature, since_ms, env).await?;
    if json {
        return super::print_json(&report);
    }
    if report.is_empty() {
        bail!("no shadow calls of `{feature}` since {since} (deploy one with `llmop deploy {feature} <version> --env <env> --shadow <version>`)");
    }
    let pct = |n: i64, of: i64| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * n as f64 / of as f64)
        }
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let usd = |v: Option<f64>| {
        v.map_or_else(
            || "unknown".to_string(),
            |v| format!("${}", llmop_cost::format_usd(v)),
        )
    };
    for r in &report {
        let label = |v: Option<i64>| v.map_or_else(|| "?".to_string(), |v| format!("v{v}"));
        let mut t = super::table();
        t.set_header([
            String::new(),
            format!("primary {}", label(r.primary.version)),
            format!("shadow {}", label(r.shadow.version)),
        ]);
        t.add_row([
            "calls".to_string(),
            r.pairs.to_string(),
            r.pairs.to_string(),
        ]);
        t.add_row([
            "answered".to_string(),
            pct(r.primary.succeeded, r.pairs),
            pct(r.shadow.succeeded, r.pairs),
        ]);
        t.add_row([
            "parsed".to_string(),
            pct(r.primary.parsed, r.primary.parsed_attempts),
            pct(r.shadow.parsed, r.shadow.parsed_attempts),
        ]);
        t.add_row([
            "mean latency ms".to_string(),
            ms(r.primary.mean_latency_ms),
            ms(r.shadow.mean_latency_ms),
        ]);
        t.add_row([
            "mean cost".to_string(),
            usd(r.primary.mean_cost_usd),
            usd(r.shadow.mean_cost_usd),
        ]);
        write_out(format_args!("{t}"));
        write_out(format_args!(
            "identical outputs: {} of {} ({})",
            r.identical,
            r.pairs,
            pct(r.identical, r.pairs)
        ));
    }
    Ok(())
}
