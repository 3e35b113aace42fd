//! `llmop eval run|compare|calibrate|runs`: a feature version on a dataset through a
//! running gateway, scored by the feature's eval file; a candidate against a baseline
//! with a verdict CI can use; a judge against human labels.
//!
//! Exit codes: `run` 0 complete, 2 stopped at `--max-usd` (partial), 1 error; `compare`
//! 0 pass, 1 fail, 2 inconclusive, 3 error; `calibrate` 0, or 1 on error.

use super::{actor, open, print_json, store_url, table, when, write_out, StoreArg};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use llmop_core::config::Config;
use llmop_eval::compare::{self, CompareSpec, Report};
use llmop_eval::evaluate::Evaluators;
use llmop_eval::gateway::Gateway;
use llmop_eval::run::{self as evalrun, RunSpec, Summary};
use llmop_eval::spec::EvalFile;
use llmop_store::{DatasetVersion, Store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Args)]
pub struct Common {
    /// The eval file (default: evals/<feature>.toml next to the config).
    #[arg(long)]
    evals: Option<PathBuf>,
    /// The dataset (default: the eval file's `dataset`).
    #[arg(long)]
    dataset: Option<String>,
    /// A version of the dataset (default: the latest).
    #[arg(long)]
    dataset_version: Option<i64>,
    /// Answers per item: each repeat is a new sample.
    #[arg(long = "repeat", default_value_t = 1)]
    repeat: i64,
    /// Items in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stop starting items once the run's calls would cost more (USD); the run is
    /// stored as partial.
    #[arg(long)]
    max_usd: Option<f64>,
    /// The running gateway (default: the config's `[server] listen`). A client key, if
    /// the gateway needs one, comes from LLMOP_API_KEY.
    #[arg(long, env = "LLMOP_GATEWAY_URL")]
    gateway: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Run a feature version over a dataset and score every answer.
    Run {
        feature: String,
        #[arg(long)]
        version: i64,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Compare a candidate version with a baseline (a version, or `env:<env>` for what
    /// an environment serves) on the same items: a paired difference per evaluator with
    /// its 95% interval, and a verdict (exit 0 pass, 1 fail, 2 inconclusive, 3 error).
    Compare {
        feature: String,
        #[arg(long)]
        baseline: String,
        #[arg(long)]
        candidate: i64,
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Measure a judge version against human labels: agreement, Cohen's kappa, true and
    /// false positive rates; stored for compares to check.
    Calibrate {
        judge: String,
        #[arg(long)]
        version: i64,
        /// A dataset whose items hold the judge's variables and a human label
        /// (`labels`, or a text `expected`).
        #[arg(long)]
        labels: String,
        /// The judge's verdict field.
        #[arg(long, default_value = "verdict")]
        verdict_field: String,
        /// Verdicts that count as a pass (default: the judge's first choice).
        #[arg(long, value_delimiter = ',')]
        pass: Option<Vec<String>>,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, env = "LLMOP_GATEWAY_URL")]
        gateway: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Stored runs of a feature, newest first.
    Runs {
        feature: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Junit,
    Markdown,
}

pub fn run(config: &Path, c: EvalCommand) -> ExitCode {
    // The exit code of a compare is its verdict; errors of any command are 1, except a
    // compare's, which are 3 (CI tells "could not decide" from "decided: no").
    let code = Mutex::new(0u8);
    let failure = if matches!(c, EvalCommand::Compare { .. }) {
        3
    } else {
        1
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(2);
    let status = super::block_on(
        rt,
        async {
            let c2 = match c {
                EvalCommand::Run {
                    feature,
                    version,
                    common,
                    json,
                } => run_cmd(config, &feature, version, common, json).await?,
                EvalCommand::Compare {
                    feature,
                    baseline,
                    candidate,
                    common,
                    format,
                } => compare_cmd(config, &feature, &baseline, candidate, common, format).await?,
                EvalCommand::Calibrate {
                    judge,
                    version,
                    labels,
                    verdict_field,
                    pass,
                    concurrency,
                    gateway,
                    json,
                    store,
                } => {
                    calibrate_cmd(
                        config,
                        &judge,
                        version,
                        &labels,
                        &verdict_field,
                        pass,
                        concurrency,
                        gateway,
                        json,
                        store,
                    )
                    .await?
                }
                EvalCommand::Runs {
                    feature,
                    limit,
                    json,
                    store,
                } => runs_cmd(config, &feature, limit, json, store).await?,
            };
            *code.lock().unwrap_or_else(|p| p.into_inner()) = c2;
            Ok(())
        },
        failure,
    );
    if status != ExitCode::SUCCESS {
        return status;
    }
    ExitCode::from(code.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn gateway_url(config: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(g) = given {
        return Ok(g);
    }
    let c = Config::load(config)
        .map_err(|e| anyhow!("cannot find the gateway's address (pass --gateway):\n{e}"))?;
    Ok(format!("http://{}", c.server.listen))
}

pub(super) fn gateway(config: &Path, given: Option<String>) -> anyhow::Result<Gateway> {
    Ok(Gateway::new(
        &gateway_url(config, given)?,
        std::env::var("LLMOP_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    ))
}

/// The eval file: `--evals`, else `evals/<feature>.toml` in the config's directory.
pub(super) fn eval_file(
    config: &Path,
    feature: &str,
    given: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, EvalFile)> {
    let path = given.unwrap_or_else(|| {
        config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("evals")
            .join(format!("{feature}.toml"))
    });
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the eval file {} (--evals sets it)",
            path.display()
        )
    })?;
    let file = EvalFile::parse(&text)
        .map_err(|e| anyhow!("{} has problems:\n  {}", path.display(), e.join("\n  ")))?;
    if file.feature != feature {
        bail!(
            "{} is the eval file of `{}`, not of `{feature}`",
            path.display(),
            file.feature
        );
    }
    Ok((path, file))
}

struct Setup {
    store: Store,
    gateway: Gateway,
    evals: Evaluators,
    dataset: DatasetVersion,
}

async fn setup(config: &Path, feature: &str, c: &Common) -> anyhow::Result<Setup> {
    if c.repeat < 1 || c.repeat > 100 {
        bail!("--repeat must be between 1 and 100");
    }
    if let Some(m) = c.max_usd {
        if m.is_nan() || m <= 0.0 {
            bail!("--max-usd must be above 0");
        }
    }
    let (_, file) = eval_file(config, feature, c.evals.clone())?;
    let store = open(&store_url(config, c.store.store.clone())?).await?;
    let name = c
        .dataset
        .clone()
        .or_else(|| file.dataset.clone())
        .ok_or_else(|| {
            anyhow!("which dataset? pass --dataset, or set `dataset` in the eval file")
        })?;
    let dataset = store
        .dataset_version(&name, c.dataset_version)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "no dataset `{name}`{} (llmop dataset push)",
                c.dataset_version
                    .map(|v| format!(" v{v}"))
                    .unwrap_or_default()
            )
        })?;
    let evals = Evaluators::load(file, &store)
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(Setup {
        store,
        gateway: gateway(config, c.gateway.clone())?,
        evals,
        dataset,
    })
}

fn bar() -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn summary_table(s: &Summary) -> String {
    let mut t = table();
    t.set_header([
        "evaluator",
        "kind",
        "items",
        "mean",
        "95% CI",
        "pass rate",
        "errors",
    ]);
    for e in &s.evaluators {
        t.add_row([
            e.name.clone(),
            e.kind.clone(),
            e.items.to_string(),
            num(e.mean),
            match (e.ci_low, e.ci_high) {
                (Some(l), Some(h)) => format!("[{l:.3}, {h:.3}]"),
                _ => "-".into(),
            },
            e.pass_rate
                .map_or("-".into(), |p| format!("{:.1}%", p * 100.0)),
            e.errors.to_string(),
        ]);
    }
    t.to_string()
}

async fn run_cmd(
    config: &Path,
    feature: &str,
    version: i64,
    c: Common,
    json: bool,
) -> anyhow::Result<u8> {
    let s = setup(config, feature, &c).await?;
    let pb = bar();
    pb.set_prefix(format!("v{version}"));
    let out = evalrun::run(
        &s.store,
        &s.gateway,
        &s.evals,
        RunSpec {
            feature,
            version,
            dataset: &s.dataset,
            repeats: c.repeat,
            concurrency: c.concurrency,
            max_usd: c.max_usd,
            created_by: Some(actor()),
        },
        &|d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        },
    )
    .await
    .map_err(|e| anyhow!(e))?;
    pb.finish_and_clear();
    let code = if out.run.status == "complete" { 0 } else { 2 };
    if json {
        print_json(
            &serde_json::json!({"run": out.run, "summary": out.summary, "stopped": out.stopped}),
        )?;
        return Ok(code);
    }
    let sm = &out.summary;
    out!(
        "run {}: {feature} v{version} on {} v{} — {} items × {} repeat{}, {} answers ({} from the cache), {} call errors",
        out.run.id,
        s.dataset.name,
        s.dataset.version,
        sm.items,
        sm.repeats,
        if sm.repeats == 1 { "" } else { "s" },
        sm.answers,
        sm.cached,
        sm.call_errors
    );
    write_out(format_args!("{}", summary_table(sm)));
    out!(
        "cost ${} · latency p50 {} ms, p95 {} ms{}",
        llmop_cost::format_usd(sm.cost_usd),
        sm.latency_p50_ms.map_or("-".into(), |v| v.to_string()),
        sm.latency_p95_ms.map_or("-".into(), |v| v.to_string()),
        if sm.cached == sm.answers && sm.answers > 0 {
            " (all cached)"
        } else {
            ""
        }
    );
    if let Some(why) = &out.stopped {
        out!("PARTIAL: {why}");
    }
    Ok(code)
}

/// `env:<env>` → the version the environment mainly serves; a number → itself.
async fn resolve_baseline(store: &Store, feature: &str, baseline: &str) -> anyhow::Result<i64> {
    if let Some(env) = baseline.strip_prefix("env:") {
        let cur = store
            .current_deployment(feature, env)
            .await?
            .ok_or_else(|| anyhow!("`{feature}` is not deployed in `{env}`"))?;
        return llmop_eval::gate::primary(&cur.to)
            .ok_or_else(|| anyhow!("`{feature}` serves nothing in `{env}`"));
    }
    baseline
        .trim_start_matches('v')
        .parse()
        .map_err(|_| anyhow!("--baseline `{baseline}`: a version number, or env:<environment>"))
}

async fn compare_cmd(
    config: &Path,
    feature: &str,
    baseline: &str,
    candidate: i64,
    c: Common,
    format: Format,
) -> anyhow::Result<u8> {
    let s = setup(config, feature, &c).await?;
    let baseline = resolve_baseline(&s.store, feature, baseline).await?;
    if baseline == candidate {
        bail!("the baseline and the candidate are both v{candidate}");
    }
    let pb = bar();
    let report = compare::compare(
        &s.store,
        &s.gateway,
        &s.evals,
        CompareSpec {
            feature,
            baseline,
            candidate,
            dataset: &s.dataset,
            repeats: c.repeat,
            concurrency: c.concurrency,
            max_usd: c.max_usd,
            created_by: Some(actor()),
        },
        &|label, d, t| {
            pb.set_prefix(label.to_string());
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        },
    )
    .await
    .map_err(|e| anyhow!(e))?;
    pb.finish_and_clear();
    match format {
        Format::Json => print_json(&report)?,
        Format::Junit => out!("{}", compare::junit(&report)),
        Format::Markdown => out!("{}", compare::markdown(&report)),
        Format::Table => print_report(&report),
    }
    Ok(report.exit_code())
}

fn print_report(r: &Report) {
    let side = |s: &compare::Side| {
        format!(
            "v{} ({}{})",
            s.version,
            s.run_id,
            if s.reused { ", reused" } else { "" }
        )
    };
    out!(
        "{}: candidate {} vs baseline {} on {} v{} ({} repeat{} per item, {} interval, 95%)",
        r.feature,
        side(&r.candidate),
        side(&r.baseline),
        r.dataset,
        r.dataset_version,
        r.repeats,
        if r.repeats == 1 { "" } else { "s" },
        r.method
    );
    let mut t = table();
    t.set_header([
        "evaluator",
        "baseline",
        "candidate",
        "difference [95% CI]",
        "verdict",
        "pass→fail / fail→pass",
        "errors",
    ]);
    for row in compare::rows(r) {
        t.add_row(row);
    }
    write_out(format_args!("{t}"));
    for e in &r.evaluators {
        out!("  {}: {}", e.name, e.reason);
        if !e.flipped_to_fail.is_empty() {
            let shown: Vec<&str> = e
                .flipped_to_fail
                .iter()
                .take(10)
                .map(String::as_str)
                .collect();
            out!(
                "    pass→fail: {}{}",
                shown.join(", "),
                if e.flipped_to_fail.len() > 10 {
                    ", …"
                } else {
                    ""
                }
            );
        }
    }
    for w in &r.warnings {
        out!("warning: {w}");
    }
    out!(
        "verdict: {} (compare {}; cost ${})",
        r.verdict.to_uppercase(),
        r.id,
        llmop_cost::format_usd(r.baseline.cost_usd + r.candidate.cost_usd)
    );
}

#[allow(clippy::too_many_arguments)]
async fn calibrate_cmd(
    config: &Path,
    judge: &str,
    version: i64,
    labels: &str,
    verdict_field: &str,
    pass: Option<Vec<String>>,
    concurrency: usize,
    gw: Option<String>,
    json: bool,
    store: StoreArg,
) -> anyhow::Result<u8> {
    let store = open(&store_url(config, store.store)?).await?;
    let dataset = store.dataset_version(labels, None).await?.ok_or_else(|| {
        anyhow!("no dataset `{labels}` (llmop dataset push, or dataset add --feedback-labels)")
    })?;
    let r = llmop_eval::calibrate::calibrate(
        &store,
        &gateway(config, gw)?,
        judge,
        version,
        &dataset,
        verdict_field,
        pass,
        concurrency,
    )
    .await
    .map_err(|e| anyhow!(e))?;
    if json {
        print_json(&r)?;
        return Ok(0);
    }
    let a = &r.agreement;
    let pctf = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
    out!(
        "judge {judge} v{version} on {} v{}: {} items scored, {} errors",
        r.dataset,
        r.dataset_version,
        a.n,
        r.errors.len()
    );
    let mut t = table();
    t.set_header(["measure", "value"]);
    t.add_row(["agreement".to_string(), pctf(Some(a.agreement))]);
    t.add_row([
        "Cohen's kappa".to_string(),
        a.kappa.map_or("undefined".into(), |k| format!("{k:.3}")),
    ]);
    t.add_row([
        format!("true positive rate ({})", r.pass_labels.join("|")),
        pctf(a.true_positive_rate),
    ]);
    t.add_row([
        "false positive rate".to_string(),
        pctf(a.false_positive_rate),
    ]);
    write_out(format_args!("{t}"));
    for e in r.errors.iter().take(10) {
        out!("error: {e}");
    }
    Ok(0)
}

async fn runs_cmd(
    config: &Path,
    feature: &str,
    limit: u32,
    json: bool,
    store: StoreArg,
) -> anyhow::Result<u8> {
    let store = open(&store_url(config, store.store)?).await?;
    let runs = store.eval_runs(feature, limit).await?;
    if json {
        print_json(&runs)?;
        return Ok(0);
    }
    let mut t = table();
    t.set_header([
        "run",
        "started (UTC)",
        "version",
        "dataset",
        "repeats",
        "status",
        "cost",
    ]);
    for r in &runs {
        t.add_row([
            r.id.clone(),
            when(r.started_at_ms),
            format!("v{}", r.version),
            format!("{} v{}", r.dataset, r.dataset_version),
            r.repeats.to_string(),
            r.status.clone(),
            r.cost_usd
                .map_or("-".into(), |c| format!("${}", llmop_cost::format_usd(c))),
        ]);
    }
    write_out(format_args!("{t}"));
    Ok(0)
}
