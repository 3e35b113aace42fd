//! `llmop scores`: scores of recorded calls (online evaluators and people's feedback),
//! aggregated by feature, version, evaluator and source over a time window, or every
//! score of one call.

use super::{now_ms, open, print_json, store_url, table, time, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct ScoresArgs {
    #[arg(long)]
    feature: Option<String>,
    #[arg(long)]
    evaluator: Option<String>,
    /// `online` (online evaluators) or `human` (feedback).
    #[arg(long)]
    source: Option<String>,
    /// The window: `7d`, `24h`, or a time.
    #[arg(long, default_value = "7d")]
    since: String,
    /// One row per UTC day.
    #[arg(long)]
    by_day: bool,
    /// Every score of this call instead.
    #[arg(long)]
    request: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

pub fn run(config: &Path, a: ScoresArgs) -> ExitCode {
    super::run_async(async move {
        let store = open(&store_url(config, a.store.store)?).await?;
        if let Some(id) = &a.request {
            let scores = store.scores_of(id).await?;
            if a.json {
                return print_json(&scores);
            }
            if scores.is_empty() {
                out!("no scores for request `{id}`");
                return Ok(());
            }
            let mut t = table();
            t.set_header([
                "evaluator",
                "source",
                "value",
                "pass",
                "detail / label",
                "judge",
                "error",
                "at (UTC)",
            ]);
            for s in &scores {
                t.add_row([
                    s.evaluator.clone(),
                    s.source.clone(),
                    num(s.value),
                    s.pass.map_or(
                        "-".into(),
                        |p| if p { "pass".into() } else { "fail".into() },
                    ),
                    s.detail.clone().or(s.label.clone()).unwrap_or_default(),
                    s.judge.clone().unwrap_or_default(),
                    s.error.clone().unwrap_or_default(),
                    time(s.created_at_ms),
                ]);
            }
            write_out(format_args!("{t}"));
            return Ok(());
        }
        let since_ms =
            llmop_store::parse_time(&a.since, now_ms()).map_err(|m| anyhow!("--since: {m}"))?;
        let groups = store
            .score_groups(&llmop_store::ScoreFilter {
                feature: a.feature.clone(),
                evaluator: a.evaluator.clone(),
                source: a.source.clone(),
                since_ms: Some(since_ms),
                by_day: a.by_day,
            })
            .await?;
        if a.json {
            return print_json(&groups);
        }
        if groups.is_empty() {
            out!("no scores since {} (online evaluators: docs/quality.md; feedback: POST /v1/requests/{{id}}/feedback)", a.since);
            return Ok(());
        }
        let mut t = table();
        let mut header = vec!["feature", "version", "evaluator", "source"];
        if a.by_day {
            header.push("day (UTC)");
        }
        header.extend(["scores", "mean", "pass rate", "errors"]);
        t.set_header(header);
        for g in &groups {
            let mut row = vec![
                g.feature.clone().unwrap_or_else(|| "-".into()),
                g.feature_version.map_or("-".into(), |v| format!("v{v}")),
                g.evaluator.clone(),
                g.source.clone(),
            ];
            if a.by_day {
                row.push(g.day_ms.map_or("-".into(), |d| time(d)[..10].to_string()));
            }
            row.extend([
                g.count.to_string(),
                num(g.mean),
                g.pass_rate
                    .map_or("-".into(), |p| format!("{:.1}%", p * 100.0)),
                g.errors.to_string(),
            ]);
            t.add_row(row);
        }
        write_out(format_args!("{t}"));
        Ok(())
    })
}
