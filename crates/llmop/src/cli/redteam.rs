//! `llmop redteam <feature|route>`: the built-in attack corpus (`llmop_eval::redteam`)
//! through a running gateway, each answer judged; prints which attacks got through,
//! stores the run, and exits 1 when more got through than `--max-got-through` (0 by
//! default), 3 when the run could not tell (every call failed). `--runs` lists stored
//! runs, `--show <id>` one run's results.

use super::{open, print_json, store_url, table, time, StoreArg};
use anyhow::anyhow;
use clap::Args;
use llmop_eval::redteam::{self, Plan, Report};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct RedteamArgs {
    /// The target: a feature (`feature/<name>` or a registered feature's name) or a
    /// route (or `<provider>/<model>`).
    target: Option<String>,
    /// The running gateway (default: the config's `[server] listen`). A client key, if
    /// the gateway needs one, comes from LLMOP_API_KEY.
    #[arg(long, env = "LLMOP_GATEWAY_URL")]
    gateway: Option<String>,
    /// Seeds the variations (the same seed sends the same attacks).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Versions of each attack (the first is the attack as written).
    #[arg(long, default_value_t = 2)]
    variations: usize,
    /// The canary planted in a feature's system prompt (default: any
    /// `LLMOP-CANARY-…` token; a route gets one planted by the run).
    #[arg(long)]
    canary: Option<String>,
    /// `NAME=VALUE` headers on every call (an end-user token, `x-llmop-env`…).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Attacks that may get through before the exit code says so.
    #[arg(long, default_value_t = 0)]
    max_got_through: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// List stored runs (of the target, if given).
    #[arg(long)]
    runs: bool,
    /// Show a stored run's results.
    #[arg(long)]
    show: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: RedteamArgs) -> ExitCode {
    let code = std::sync::Mutex::new(ExitCode::SUCCESS);
    let done = super::run_async(async {
        let c = work(config, a).await?;
        *code.lock().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    });
    if done != ExitCode::SUCCESS {
        return ExitCode::from(3);
    }
    code.into_inner().unwrap_or_else(|p| p.into_inner())
}

async fn work(config: &Path, a: RedteamArgs) -> anyhow::Result<ExitCode> {
    if a.runs {
        let store = open(&store_url(config, a.store.store.clone())?).await?;
        let runs = store.redteam_runs(a.target.as_deref(), 50).await?;
        if a.json {
            let brief: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    serde_json::json!({"id": r.id, "target": r.target, "corpus_version": r.corpus_version, "seed": r.seed, "attacks": r.attacks, "got_through": r.got_through, "blocked": r.blocked, "resisted": r.resisted, "errors": r.errors, "started_at_ms": r.started_at_ms})
                })
                .collect();
            print_json(&brief)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = table();
        t.set_header([
            "run",
            "target",
            "corpus",
            "attacks",
            "got through",
            "blocked",
            "resisted",
            "errors",
            "at (UTC)",
        ]);
        for r in &runs {
            t.add_row([
                r.id.clone(),
                r.target.clone(),
                r.corpus_version.clone(),
                r.attacks.to_string(),
                r.got_through.to_string(),
                r.blocked.to_string(),
                r.resisted.to_string(),
                r.errors.to_string(),
                time(r.started_at_ms),
            ]);
        }
        out!("{t}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = &a.show {
        let store = open(&store_url(config, a.store.store.clone())?).await?;
        let run = store
            .redteam_run(id)
            .await?
            .ok_or_else(|| anyhow!("no red-team run `{id}`"))?;
        let report: Report = serde_json::from_value(run.report)?;
        return Ok(print_report(&report, a.json, a.max_got_through));
    }
    let target = a
        .target
        .as_deref()
        .ok_or_else(|| anyhow!("name the feature or route to attack"))?;
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| anyhow!("--header {h}: expected NAME=VALUE"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let plan = Plan {
        // The chat endpoint's `model`: a route's name, or `feature/<name>`; the
        // gateway says if it is neither.
        target: target.to_string(),
        seed: a.seed,
        variations: a.variations.clamp(1, 20),
        canary: a.canary.clone(),
        headers,
        concurrency: a.concurrency.clamp(1, 64),
    };
    let gw = super::eval::gateway(config, a.gateway.clone())?;
    let key = std::env::var("LLMOP_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    if !a.json {
        eprintln!(
            "red-teaming {} with corpus {} ({} attacks x {} variations, seed {})",
            plan.target,
            redteam::CORPUS_VERSION,
            redteam::corpus_len(),
            plan.variations,
            plan.seed
        );
    }
    let report = redteam::run(gw.base(), key.as_deref(), &plan).await;
    // Stored like eval runs, when the store is reachable from here.
    match store_url(config, a.store.store.clone()) {
        Ok(url) => match open(&url).await {
            Ok(store) => {
                let run = llmop_store::RedteamRun {
                    id: report.id.clone(),
                    target: report.target.clone(),
                    corpus_version: report.corpus_version.clone(),
                    seed: i64::try_from(report.seed).unwrap_or(i64::MAX),
                    attacks: report.attacks as i64,
                    got_through: report.got_through as i64,
                    blocked: report.blocked as i64,
                    resisted: report.resisted as i64,
                    errors: report.errors as i64,
                    started_at_ms: report.started_at_ms,
                    finished_at_ms: report.finished_at_ms,
                    report: serde_json::to_value(&report)?,
                };
                store.insert_redteam_run(&run).await?;
            }
            Err(e) => eprintln!("llmop: the run was not stored: {e:#}"),
        },
        Err(e) => eprintln!("llmop: the run was not stored: {e:#}"),
    }
    Ok(print_report(&report, a.json, a.max_got_through))
}

fn print_report(r: &Report, json: bool, max: usize) -> ExitCode {
    if json {
        if print_json(r).is_err() {
            return ExitCode::from(3);
        }
    } else {
        let mut t = table();
        t.set_header([
            "attack",
            "var",
            "category",
            "outcome",
            "detail",
            "request id",
        ]);
        for o in &r.results {
            t.add_row([
                o.attack.clone(),
                o.variation.to_string(),
                serde_json::to_value(o.category)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                o.outcome.clone(),
                o.detail.clone(),
                o.request_id.clone().unwrap_or_default(),
            ]);
        }
        out!("{t}");
        out!(
            "run {}: {} attacks on {}: {} got through, {} blocked, {} resisted, {} errors",
            r.id,
            r.attacks,
            r.target,
            r.got_through,
            r.blocked,
            r.resisted,
            r.errors
        );
    }
    if r.errors == r.attacks {
        ExitCode::from(3)
    } else if r.got_through > max {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
