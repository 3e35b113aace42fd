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
        /// Also ask the eval file's pairwise judge which answer is better, shadow or
        /// primary, in both orders, over the latest `--pairs` pairs: win/tie/loss with a
        /// 95% interval (needs a running gateway: --gateway, LLMOP_GATEWAY_URL).
        #[arg(long)]
        pairwise: bool,
        #[arg(long, default_value_t = 200)]
        pairs: i64,
        /// The eval file (default: evals/<feature>.toml next to the config).
        #[arg(long)]
        evals: Option<std::path::PathBuf>,
        #[arg(long, env = "LLMOP_GATEWAY_URL")]
        gateway: Option<String>,
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
        pairwise,
        pairs,
        evals,
        gateway,
        json,
        store,
    } = command;
    if pairwise {
        return super::run_async(pairwise_report(
            config,
            store.store,
            &feature,
            &since,
            pairs,
            evals,
            gateway,
            json,
        ));
    }
    super::run_async(shadow_report(
        config,
        store.store,
        &feature,
        &since,
        env.as_deref(),
        json,
    ))
}

/// The shadow against its primary, judged pairwise in both orders: win (the shadow
/// preferred in both), loss (the primary in both), tie (otherwise); the preference's
/// 95% interval (t over pairs, the preference minus one half).
#[allow(clippy::too_many_arguments)]
async fn pairwise_report(
    config: &Path,
    store: Option<String>,
    feature: &str,
    since: &str,
    pairs: i64,
    evals: Option<std::path::PathBuf>,
    gateway: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    use llmop_eval::evaluate::{Answer, Ctx, Evaluators};
    let since_ms = llmop_store::parse_time(since, now_ms()).map_err(|m| anyhow!("--since: {m}"))?;
    let store = open(&store_url(config, store)?).await?;
    let (_, file) = super::eval::eval_file(config, feature, evals)?;
    let evaluators = Evaluators::load(file, &store)
        .await
        .map_err(|e| anyhow!(e))?;
    if !evaluators.has_pairwise() {
        bail!("the eval file of `{feature}` has no pairwise evaluator (kind = \"pairwise\")");
    }
    let gw = super::eval::gateway(config, gateway)?;
    let ids = store
        .shadow_pairs(feature, since_ms, pairs.clamp(1, 10_000))
        .await?;
    if ids.is_empty() {
        bail!("no answered shadow calls of `{feature}` since {since}");
    }
    let ctx = Ctx {
        gateway: &gw,
        store: &store,
        run_id: "shadow-report",
        pending: None,
    };
    // evaluator -> preference of the shadow per pair (1 win, 0.5 tie, 0 loss).
    let mut prefs: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut errors = 0;
    let mut versions = None;
    for (p, s) in &ids {
        let (Some(pr), Some(sr)) = (store.get(p).await?, store.get(s).await?) else {
            continue;
        };
        versions.get_or_insert((pr.feature_version, sr.feature_version));
        let item = llmop_eval::dataset::Item::from_record(&pr);
        for (name, score) in evaluators
            .pairwise(
                &ctx,
                &item,
                &Answer::from_record(&sr),
                &Answer::from_record(&pr),
                0,
            )
            .await
        {
            match score.value {
                Some(v) => prefs.entry(name).or_default().push(v),
                None => errors += 1,
            }
        }
    }
    let rows: Vec<serde_json::Value> = prefs
        .iter()
        .map(|(name, v)| {
            let n = v.len();
            let count = |x: f64| v.iter().filter(|p| **p == x).count();
            let centered: Vec<f64> = v.iter().map(|p| p - 0.5).collect();
            let iv = llmop_eval::stats::interval(&centered, llmop_eval::spec::Method::T, true);
            serde_json::json!({
                "evaluator": name, "pairs": n,
                "shadow_wins": count(1.0), "ties": count(0.5), "primary_wins": count(0.0),
                "preference": v.iter().sum::<f64>() / n.max(1) as f64,
                "preference_minus_half": iv,
            })
        })
        .collect();
    if json {
        return super::print_json(
            &serde_json::json!({"feature": feature, "evaluators": rows, "errors": errors}),
        );
    }
    let (pv, sv) = versions.unwrap_or((None, None));
    let label = |v: Option<i64>| v.map_or_else(|| "?".to_string(), |v| format!("v{v}"));
    out!(
        "{feature}: shadow {} against primary {}, judged pairwise in both orders",
        label(sv),
        label(pv)
    );
    let mut t = super::table();
    t.set_header([
        "evaluator",
        "pairs",
        "shadow wins",
        "ties",
        "primary wins",
        "shadow preference - 0.5 [95% CI]",
    ]);
    for r in &rows {
        let iv = &r["preference_minus_half"];
        t.add_row([
            r["evaluator"].as_str().unwrap_or("").to_string(),
            r["pairs"].to_string(),
            r["shadow_wins"].to_string(),
            r["ties"].to_string(),
            r["primary_wins"].to_string(),
            if iv.is_null() {
                "-".to_string()
            } else {
                format!(
                    "{:+.3} [{:+.3}, {:+.3}]",
                    iv["mean"].as_f64().unwrap_or(0.0),
                    iv["lo"].as_f64().unwrap_or(0.0),
                    iv["hi"].as_f64().unwrap_or(0.0)
                )
            },
        ]);
    }
    write_out(format_args!("{t}"));
    if errors > 0 {
        out!("{errors} judgements failed (left out)");
    }
    Ok(())
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
