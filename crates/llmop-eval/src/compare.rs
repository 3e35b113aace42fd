//! Compares: a candidate version against a baseline on the same items, per evaluator a
//! paired difference with its 95% interval, the items that flipped, and a verdict under
//! the eval file's policy. Stored, so the deploy gate can ask for it.
//!
//! Both sides run through [`crate::run`] unless a complete stored run of the same
//! version (content hash), dataset version, evaluators and repeats exists: then it is
//! reused as it is (its answers are exactly what the new run would read from the cache).

use crate::evaluate::{Ctx, Evaluators};
use crate::gateway::Gateway;
use crate::run::{self, per_item, ItemResult, RunSpec};
use crate::spec::Kind;
use crate::stats::{self, Interval};
use llmop_store::{DatasetVersion, EvalCompare, EvalRun, Store};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub version: i64,
    pub content_hash: String,
    pub run_id: String,
    /// A stored run was reused.
    pub reused: bool,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluatorCompare {
    pub name: String,
    pub kind: String,
    /// Part of the verdict.
    pub gate: bool,
    pub margin: f64,
    /// Items scored on both sides.
    pub items: usize,
    pub baseline_mean: Option<f64>,
    pub candidate_mean: Option<f64>,
    /// Candidate minus baseline (pairwise: the candidate's preference minus 0.5).
    pub difference: Option<Interval>,
    /// `pass`, `fail`, `inconclusive`, or `error` (too many evaluator errors).
    pub verdict: String,
    pub reason: String,
    pub flipped_to_fail: Vec<String>,
    pub flipped_to_pass: Vec<String>,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub feature: String,
    pub dataset: String,
    pub dataset_version: i64,
    pub dataset_hash: String,
    pub evals_hash: String,
    pub repeats: i64,
    pub baseline: Side,
    pub candidate: Side,
    pub method: String,
    pub evaluators: Vec<EvaluatorCompare>,
    /// `pass`, `fail`, `inconclusive`, `error`.
    pub verdict: String,
    pub warnings: Vec<String>,
}

impl Report {
    /// The exit code CI reads: 0 pass, 1 fail, 2 inconclusive, 3 error.
    pub fn exit_code(&self) -> u8 {
        match self.verdict.as_str() {
            "pass" => 0,
            "fail" => 1,
            "inconclusive" => 2,
            _ => 3,
        }
    }
}

pub struct CompareSpec<'a> {
    pub feature: &'a str,
    pub baseline: i64,
    pub candidate: i64,
    pub dataset: &'a DatasetVersion,
    pub repeats: i64,
    pub concurrency: usize,
    pub max_usd: Option<f64>,
    pub created_by: Option<String>,
}

/// A run of one side: reused when a complete stored run matches, else made now.
async fn side(
    store: &Store,
    gateway: &Gateway,
    evals: &Evaluators,
    spec: &CompareSpec<'_>,
    version: i64,
    max_usd: Option<f64>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(EvalRun, Vec<ItemResult>, bool, Option<String>), String> {
    let fv = store
        .feature_version(spec.feature, version)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("feature `{}` has no version {version}", spec.feature))?;
    let reusable = store
        .reusable_eval_run(
            spec.feature,
            &fv.content_hash,
            &spec.dataset.content_hash,
            &evals.file.evaluators_hash(),
            spec.repeats,
        )
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = reusable {
        let results = run::load_results(store, &r.id).await?;
        return Ok((r, results, true, None));
    }
    let label = format!("v{version}");
    let out = run::run(
        store,
        gateway,
        evals,
        RunSpec {
            feature: spec.feature,
            version,
            dataset: spec.dataset,
            repeats: spec.repeats,
            concurrency: spec.concurrency,
            max_usd,
            created_by: spec.created_by.clone(),
        },
        &|d, t| progress(&label, d, t),
    )
    .await?;
    Ok((out.run, out.results, false, out.stopped))
}

pub async fn compare(
    store: &Store,
    gateway: &Gateway,
    evals: &Evaluators,
    spec: CompareSpec<'_>,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Report, String> {
    let (brun, bres, breused, bstop) = side(
        store,
        gateway,
        evals,
        &spec,
        spec.baseline,
        spec.max_usd,
        progress,
    )
    .await?;
    let left = spec
        .max_usd
        .map(|m| (m - brun.cost_usd.unwrap_or(0.0)).max(0.0));
    let (crun, cres, creused, cstop) =
        side(store, gateway, evals, &spec, spec.candidate, left, progress).await?;
    let mut warnings = Vec::new();
    let policy = &evals.file.policy;
    let mut rows = Vec::new();
    let total = (bres.len() + cres.len()).max(1);
    let stopped = bstop.or(cstop);
    for e in evals.specs() {
        if matches!(e.kind, Kind::Pairwise { .. }) {
            continue;
        }
        let b = per_item(&bres, &e.name);
        let c = per_item(&cres, &e.name);
        let mut diffs = Vec::new();
        let (mut to_fail, mut to_pass) = (Vec::new(), Vec::new());
        for (item, (cv, cp)) in &c {
            if let Some((bv, bp)) = b.get(item) {
                diffs.push(cv - bv);
                if *bp >= 0.5 && *cp < 0.5 {
                    to_fail.push(item.clone());
                } else if *bp < 0.5 && *cp >= 0.5 {
                    to_pass.push(item.clone());
                }
            }
        }
        let errors = bres
            .iter()
            .chain(&cres)
            .filter(|r| r.scores.get(&e.name).is_some_and(|s| s.error.is_some()))
            .count();
        let mean = |m: &BTreeMap<String, (f64, f64)>| {
            (!m.is_empty()).then(|| m.values().map(|(v, _)| v).sum::<f64>() / m.len() as f64)
        };
        rows.push(decide_row(
            e.name.clone(),
            e.kind.name(),
            e.gate,
            evals.file.margin(e),
            &diffs,
            (mean(&b), mean(&c)),
            (to_fail, to_pass),
            errors,
            total,
            policy,
        ));
    }
    if evals.has_pairwise() {
        let items: Vec<crate::dataset::Item> = serde_json::from_value(spec.dataset.items.clone())
            .map_err(|e| format!("dataset: {e}"))?;
        let by_id: BTreeMap<&str, &crate::dataset::Item> =
            items.iter().map(|i| (i.id.as_str(), i)).collect();
        let base: BTreeMap<(&str, i64), &ItemResult> = bres
            .iter()
            .map(|r| ((r.item.as_str(), r.repeat), r))
            .collect();
        let pending = std::sync::Mutex::new(std::collections::HashMap::new());
        let ctx = Ctx {
            gateway,
            store,
            run_id: &crun.id,
            pending: Some(&pending),
        };
        let mut scored: Vec<ItemResult> = Vec::new();
        let pairs: Vec<(&ItemResult, &ItemResult)> = cres
            .iter()
            .filter_map(|c| base.get(&(c.item.as_str(), c.repeat)).map(|b| (c, *b)))
            .collect();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let n = pairs.len();
        let futs = pairs.into_iter().map(|(c, b)| {
            let ctx = &ctx;
            let by_id = &by_id;
            let done = &done;
            async move {
                let item = by_id.get(c.item.as_str())?;
                let s = evals
                    .pairwise(ctx, item, &c.answer, &b.answer, c.repeat)
                    .await;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress("pairwise", d, n);
                Some(ItemResult {
                    item: c.item.clone(),
                    repeat: c.repeat,
                    answer: c.answer.clone(),
                    scores: s.into_iter().collect(),
                })
            }
        });
        use futures::StreamExt;
        let mut st = futures::stream::iter(futs).buffer_unordered(spec.concurrency.max(1));
        while let Some(r) = st.next().await {
            scored.extend(r);
        }
        drop(st);
        let judged: Vec<(String, serde_json::Value)> = pending
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect();
        store
            .eval_cache_put(&judged)
            .await
            .map_err(|e| e.to_string())?;
        for e in evals.specs() {
            if !matches!(e.kind, Kind::Pairwise { .. }) {
                continue;
            }
            let prefs = per_item(&scored, &e.name);
            let diffs: Vec<f64> = prefs.values().map(|(v, _)| v - 0.5).collect();
            let errors = scored
                .iter()
                .filter(|r| r.scores.get(&e.name).is_some_and(|s| s.error.is_some()))
                .count();
            let mean = (!prefs.is_empty())
                .then(|| prefs.values().map(|(v, _)| v).sum::<f64>() / prefs.len() as f64);
            rows.push(decide_row(
                e.name.clone(),
                "pairwise",
                e.gate,
                evals.file.margin(e),
                &diffs,
                (Some(0.5), mean),
                (vec![], vec![]),
                errors,
                scored.len().max(1),
                policy,
            ));
        }
    }
    for (judge, version) in evals.judges() {
        match store
            .calibration(&judge, version)
            .await
            .map_err(|e| e.to_string())?
        {
            None => warnings.push(format!(
                "judge {judge} v{version} was never calibrated against human labels (llmop eval calibrate {judge} --version {version} --labels <dataset>)"
            )),
            Some(c) => match c.kappa {
                Some(k) if k >= policy.min_judge_kappa => {}
                k => warnings.push(format!(
                    "judge {judge} v{version} agrees with people at kappa {} on `{}`, below the policy's floor {}: its scores are weak evidence",
                    k.map_or("undefined".to_string(), |k| format!("{k:.2}")),
                    c.dataset,
                    policy.min_judge_kappa
                )),
            },
        }
    }
    let gated: Vec<&EvaluatorCompare> = rows.iter().filter(|r| r.gate).collect();
    let mut verdict = if gated.iter().any(|r| r.verdict == "error") {
        "error"
    } else if gated.iter().any(|r| r.verdict == "fail") {
        "fail"
    } else if gated.is_empty() || gated.iter().any(|r| r.verdict == "inconclusive") {
        "inconclusive"
    } else {
        "pass"
    };
    if let Some(why) = &stopped {
        warnings.push(format!("a run did not complete: {why}"));
        verdict = "error";
    }
    let report = Report {
        id: format!("cmp-{}", uuid::Uuid::now_v7()),
        feature: spec.feature.to_string(),
        dataset: spec.dataset.name.clone(),
        dataset_version: spec.dataset.version,
        dataset_hash: spec.dataset.content_hash.clone(),
        evals_hash: evals.file.evals_hash(),
        repeats: spec.repeats,
        baseline: Side {
            version: spec.baseline,
            content_hash: brun.content_hash.clone(),
            run_id: brun.id.clone(),
            reused: breused,
            cost_usd: if breused {
                0.0
            } else {
                brun.cost_usd.unwrap_or(0.0)
            },
        },
        candidate: Side {
            version: spec.candidate,
            content_hash: crun.content_hash.clone(),
            run_id: crun.id.clone(),
            reused: creused,
            cost_usd: if creused {
                0.0
            } else {
                crun.cost_usd.unwrap_or(0.0)
            },
        },
        method: format!("{:?}", policy.method).to_lowercase(),
        evaluators: rows,
        verdict: verdict.to_string(),
        warnings,
    };
    store
        .insert_eval_compare(&EvalCompare {
            id: report.id.clone(),
            feature: report.feature.clone(),
            baseline_version: spec.baseline,
            baseline_hash: report.baseline.content_hash.clone(),
            candidate_version: spec.candidate,
            candidate_hash: report.candidate.content_hash.clone(),
            dataset: report.dataset.clone(),
            dataset_hash: report.dataset_hash.clone(),
            evals_hash: report.evals_hash.clone(),
            verdict: report.verdict.clone(),
            report: json!(report),
            created_at_ms: run::now_ms(),
            created_by: spec.created_by.clone(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn decide_row(
    name: String,
    kind: &str,
    gate: bool,
    margin: f64,
    diffs: &[f64],
    (baseline_mean, candidate_mean): (Option<f64>, Option<f64>),
    (flipped_to_fail, flipped_to_pass): (Vec<String>, Vec<String>),
    errors: usize,
    scored: usize,
    policy: &crate::spec::Policy,
) -> EvaluatorCompare {
    let iv = stats::interval(diffs, policy.method, true);
    let rate = errors as f64 / scored as f64;
    let (verdict, reason) = if rate > policy.max_error_rate {
        (
            "error".to_string(),
            format!(
                "{errors} evaluator errors ({:.1}%), above the policy's max_error_rate {}",
                rate * 100.0,
                policy.max_error_rate
            ),
        )
    } else {
        let (v, r) = stats::decide(iv.as_ref(), margin, policy.min_items);
        (v.as_str().to_string(), r)
    };
    EvaluatorCompare {
        name,
        kind: kind.to_string(),
        gate,
        margin,
        items: diffs.len(),
        baseline_mean,
        candidate_mean,
        difference: iv,
        verdict,
        reason,
        flipped_to_fail,
        flipped_to_pass,
        errors,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn interval_text(iv: &Option<Interval>) -> String {
    iv.map_or("-".into(), |i| {
        format!("{:+.3} [{:+.3}, {:+.3}]", i.mean, i.lo, i.hi)
    })
}

/// Rows for a table: evaluator, baseline, candidate, difference (95% CI), verdict,
/// flipped, errors.
pub fn rows(r: &Report) -> Vec<[String; 7]> {
    r.evaluators
        .iter()
        .map(|e| {
            [
                if e.gate {
                    e.name.clone()
                } else {
                    format!("{} (report only)", e.name)
                },
                pct(e.baseline_mean),
                pct(e.candidate_mean),
                interval_text(&e.difference),
                e.verdict.clone(),
                format!("{} / {}", e.flipped_to_fail.len(), e.flipped_to_pass.len()),
                e.errors.to_string(),
            ]
        })
        .collect()
}

/// The report as Markdown, for a pull request comment.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "### llmop eval: `{}` v{} vs v{} — **{}**\n\nDataset `{}` v{} ({} repeat{} per item), {} interval at 95%.\n\n",
        r.feature,
        r.candidate.version,
        r.baseline.version,
        r.verdict,
        r.dataset,
        r.dataset_version,
        r.repeats,
        if r.repeats == 1 { "" } else { "s" },
        r.method
    );
    s.push_str("| evaluator | baseline | candidate | difference [95% CI] | verdict | pass→fail / fail→pass | errors |\n|---|---|---|---|---|---|---|\n");
    for row in rows(r) {
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    for e in &r.evaluators {
        if !e.flipped_to_fail.is_empty() {
            let shown: Vec<String> = e
                .flipped_to_fail
                .iter()
                .take(20)
                .map(|i| format!("`{i}`"))
                .collect();
            s.push_str(&format!(
                "\n**{}**: {} items went from pass to fail: {}{}\n",
                e.name,
                e.flipped_to_fail.len(),
                shown.join(", "),
                if e.flipped_to_fail.len() > 20 {
                    ", …"
                } else {
                    ""
                }
            ));
        }
    }
    for e in &r.evaluators {
        s.push_str(&format!("\n- {}: {}", e.name, e.reason));
    }
    s.push('\n');
    for w in &r.warnings {
        s.push_str(&format!("\n> ⚠ {w}\n"));
    }
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as JUnit XML: one test case per evaluator; a fail, an inconclusive or an
/// error verdict is a failure (its type says which).
pub fn junit(r: &Report) -> String {
    let failures = r.evaluators.iter().filter(|e| e.verdict != "pass").count();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"llmop eval {} v{} vs v{}\" tests=\"{}\" failures=\"{failures}\">\n",
        xml(&r.feature),
        r.candidate.version,
        r.baseline.version,
        r.evaluators.len()
    );
    for e in &r.evaluators {
        s.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\">",
            xml(&r.feature),
            xml(&e.name)
        ));
        if e.verdict != "pass" {
            s.push_str(&format!(
                "<failure type=\"{}\" message=\"{}\">difference {}; flipped to fail: {}</failure>",
                xml(&e.verdict),
                xml(&e.reason),
                xml(&interval_text(&e.difference)),
                xml(&e.flipped_to_fail.join(", "))
            ));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}
