//! `llmop guard eval <labeled.jsonl>`: each guardrail detector's precision and recall on
//! a labeled set (see `llmop_guard::eval` for the format); exit 1 when a category or rule
//! given with `--min` falls below it.

use super::{print_json, table, write_out};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum GuardCommand {
    /// Precision and recall per detector on a labeled set (JSON lines).
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct EvalArgs {
    /// The labeled set: `{"text": …, "expect": [{"rule": "pii.email", "value": …}]}` per line.
    file: PathBuf,
    /// Locales for national formats (phone numbers without `+`, national ids).
    #[arg(long, value_delimiter = ',', default_value = "us")]
    locales: Vec<String>,
    /// `NAME=P,R`: the lowest precision and recall accepted for a category (`pii`,
    /// `secret`, `injection`) or a rule (`pii.email`); repeatable. Exit 1 below any.
    #[arg(long = "min")]
    min: Vec<String>,
    #[arg(long)]
    json: bool,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

pub fn run(command: GuardCommand) -> ExitCode {
    let GuardCommand::Eval(a) = command;
    match eval(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let set = llmop_guard::eval::read_set(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let guard = llmop_guard::Guard::new(&llmop_guard::GuardSpec {
        pii: Some(llmop_guard::pii::PiiSpec {
            kinds: vec![],
            locales: a.locales.clone(),
        }),
        ..llmop_guard::GuardSpec::default()
    })?;
    let report = llmop_guard::eval::evaluate(&guard, &set);
    let mut failed = Vec::new();
    for m in &a.min {
        let (name, bounds) = m
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--min {m}: expected NAME=PRECISION,RECALL"))?;
        let (p, r) = bounds
            .split_once(',')
            .and_then(|(p, r)| Some((p.parse::<f64>().ok()?, r.parse::<f64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--min {m}: expected NAME=PRECISION,RECALL"))?;
        let c = report.counts(name);
        let (cp, cr) = (c.precision().unwrap_or(0.0), c.recall().unwrap_or(0.0));
        if cp < p || cr < r {
            failed.push(format!(
                "{name}: precision {cp:.3} (min {p}), recall {cr:.3} (min {r})"
            ));
        }
    }
    if a.json {
        print_json(&serde_json::json!({
            "items": report.items,
            "categories": report.categories,
            "rules": report.rules,
            "below_min": failed,
        }))?;
    } else {
        let mut t = table();
        t.set_header([
            "detector",
            "found",
            "false alarms",
            "missed",
            "precision",
            "recall",
        ]);
        for (name, c) in report.categories.iter().chain(report.rules.iter()) {
            t.add_row([
                name.clone(),
                c.tp.to_string(),
                c.fp.to_string(),
                c.fn_.to_string(),
                pct(c.precision()),
                pct(c.recall()),
            ]);
        }
        write_out(format_args!("{} labeled items\n{t}", report.items));
        for f in &failed {
            write_out(format_args!("below the minimum: {f}"));
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
