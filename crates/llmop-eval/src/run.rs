//! Eval runs: every item of a dataset (times `repeat`) through the gateway on one
//! pinned feature version, scored by the eval file's evaluators, stored.
//!
//! - **Cache**: answers are cached by (version content hash, item input hash, repeat
//!   index). Repeat `k` of an item is its own key, so `--repeat 3` makes three calls (a
//!   repeat is a new sample, never a cached copy of the first), while running the same
//!   run again reuses all of them and costs nothing.
//! - **Cost cap**: `max_usd` counts what the run's own calls cost (answers and judges,
//!   as the gateway priced them). No new item starts once the spend, plus what the items
//!   in flight are expected to cost (the most expensive item so far, each), would pass
//!   the cap (the first paid item runs alone, so that a cost is known before the others
//!   start); the run ends `partial`. A cap needs priced models: an unpriced call stops
//!   the run with an error rather than spend blind.
//! - Calls are tagged `eval_run`, `eval_item`, `eval_repeat` and made in environment
//!   `eval`, so `llmop requests`/`query` find them.

use crate::dataset::{hash_json, Item};
use crate::evaluate::{Answer, Ctx, Evaluators, Score};
use crate::gateway::{CallError, Gateway};
use crate::stats::{self, Interval};
use futures::StreamExt;
use llmop_features::{FeatureSpec, VarType};
use llmop_store::{DatasetVersion, EvalRun, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One item's result for one repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub item: String,
    pub repeat: i64,
    pub answer: Answer,
    pub scores: BTreeMap<String, Score>,
}

/// What to run.
pub struct RunSpec<'a> {
    pub feature: &'a str,
    pub version: i64,
    pub dataset: &'a DatasetVersion,
    pub repeats: i64,
    pub concurrency: usize,
    pub max_usd: Option<f64>,
    pub created_by: Option<String>,
}

/// A finished (or stopped) run with its results.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run: EvalRun,
    pub results: Vec<ItemResult>,
    pub summary: Summary,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluatorSummary {
    pub name: String,
    pub kind: String,
    /// Items with at least one score.
    pub items: usize,
    pub mean: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub pass_rate: Option<f64>,
    pub errors: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub items: usize,
    pub repeats: i64,
    pub answers: usize,
    pub cached: usize,
    pub call_errors: usize,
    pub cost_usd: f64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub evaluators: Vec<EvaluatorSummary>,
}

/// The variables of an item converted to the feature's declared types: dataset files
/// (CSV above all) carry text; `"30"` for an integer variable is sent as 30.
pub fn coerce(spec: &FeatureSpec, vars: &Map<String, Value>) -> Map<String, Value> {
    vars.iter()
        .map(|(k, v)| {
            let converted = match (spec.variables.get(k).map(|d| d.kind), v) {
                (Some(VarType::Integer), Value::String(s)) => {
                    s.trim().parse::<i64>().ok().map(Value::from)
                }
                (Some(VarType::Number), Value::String(s)) => {
                    s.trim().parse::<f64>().ok().map(Value::from)
                }
                (Some(VarType::Boolean), Value::String(s)) => match s.trim() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                (Some(VarType::Array | VarType::Object), Value::String(s)) => {
                    serde_json::from_str(s).ok()
                }
                _ => None,
            };
            (k.clone(), converted.unwrap_or_else(|| v.clone()))
        })
        .collect()
}

/// The answer cache's key for one generation.
pub fn answer_key(content_hash: &str, item: &Item, repeat: i64) -> String {
    format!(
        "answer:{}",
        hash_json(&json!({"version": content_hash, "input": item.input_hash(), "repeat": repeat}))
    )
}

struct Spend {
    spent: f64,
    /// Paid items finished (their cost is known).
    finished: usize,
    in_flight: usize,
    max_item: f64,
    stop: Option<String>,
}

/// Runs the dataset through the gateway and stores the run. `progress(done, total)` is
/// called as items finish.
pub async fn run(
    store: &Store,
    gateway: &Gateway,
    evals: &Evaluators,
    spec: RunSpec<'_>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<RunOutcome, String> {
    let version = store
        .feature_version(spec.feature, spec.version)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "feature `{}` has no version {} (llmop feature versions {})",
                spec.feature, spec.version, spec.feature
            )
        })?;
    let fspec: FeatureSpec =
        serde_json::from_value(version.spec.clone()).map_err(|e| e.to_string())?;
    let items: Vec<Item> =
        serde_json::from_value(spec.dataset.items.clone()).map_err(|e| format!("dataset: {e}"))?;
    if let Some(i) = items.iter().find(|i| i.variables.is_empty()) {
        return Err(format!(
            "item `{}` has no variables: a feature is evaluated on items with variables (messages items are for routes)",
            i.id
        ));
    }
    let run_id = format!("run-{}", uuid::Uuid::now_v7());
    let started = now_ms();
    let mut run = EvalRun {
        id: run_id.clone(),
        feature: spec.feature.to_string(),
        version: spec.version,
        content_hash: version.content_hash.clone(),
        dataset: spec.dataset.name.clone(),
        dataset_version: spec.dataset.version,
        dataset_hash: spec.dataset.content_hash.clone(),
        evaluators_hash: evals.file.evaluators_hash(),
        repeats: spec.repeats,
        status: "running".into(),
        started_at_ms: started,
        finished_at_ms: None,
        cost_usd: None,
        summary: None,
        created_by: spec.created_by.clone(),
    };
    store
        .insert_eval_run(&run)
        .await
        .map_err(|e| e.to_string())?;

    // Every cached answer of this run, read in one pass.
    let work: Vec<(usize, i64)> = (0..items.len())
        .flat_map(|i| (0..spec.repeats).map(move |r| (i, r)))
        .collect();
    let keys: Vec<String> = work
        .iter()
        .map(|(i, r)| answer_key(&version.content_hash, &items[*i], *r))
        .collect();
    let cached = store
        .eval_cache_get(&keys)
        .await
        .map_err(|e| e.to_string())?;
    let pending = Mutex::new(std::collections::HashMap::new());
    let ctx = Ctx {
        gateway,
        store,
        run_id: &run_id,
        pending: Some(&pending),
    };
    let spend = Mutex::new(Spend {
        spent: 0.0,
        finished: 0,
        in_flight: 0,
        max_item: 0.0,
        stop: None,
    });
    let total = work.len();
    let one = |(idx, (i, r)): (usize, (usize, i64))| {
        let item = &items[i];
        let key = &keys[idx];
        let hit = cached.get(key).cloned();
        let ctx = &ctx;
        let spend = &spend;
        let fspec = &fspec;
        let run_id = &run_id;
        let feature = spec.feature;
        let version_n = spec.version;
        let max_usd = spec.max_usd;
        async move {
            // Cached answers cost nothing; anything else must fit under the cap. Under a
            // cap, the first paid item runs alone: until one cost is known, no projection
            // can keep the items in flight under it.
            if hit.is_none() && max_usd.is_some() {
                loop {
                    let first_pending = {
                        let s = spend.lock().unwrap_or_else(|p| p.into_inner());
                        s.finished == 0 && s.in_flight > 0 && s.stop.is_none()
                    };
                    if !first_pending {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            if hit.is_none() {
                let mut s = spend.lock().unwrap_or_else(|p| p.into_inner());
                if s.stop.is_some() {
                    return None;
                }
                if let Some(max) = max_usd {
                    let projected = s.spent + (s.in_flight as f64 + 1.0) * s.max_item;
                    if s.spent >= max || projected > max {
                        s.stop = Some(format!(
                            "stopped at the cost cap: ${:.6} spent of ${max} (items in flight finished)",
                            s.spent
                        ));
                        return None;
                    }
                }
                s.in_flight += 1;
            }
            let (answer, fresh) = match hit.and_then(|v| serde_json::from_value::<Answer>(v).ok()) {
                Some(mut a) => {
                    a.cached = true;
                    (a, None)
                }
                None => {
                    let vars = coerce(fspec, &item.variables);
                    let tags = [
                        ("eval_run", run_id.to_string()),
                        ("eval_item", item.id.clone()),
                        ("eval_repeat", r.to_string()),
                    ];
                    let a = match ctx.gateway.invoke(feature, version_n, &vars, &tags).await {
                        Ok(inv) => Answer {
                            request_id: Some(inv.request_id),
                            text: inv.text,
                            parsed: inv.parsed,
                            parse_status: inv.parse_status,
                            latency_ms: inv.latency_ms,
                            cost_usd: inv.cost_usd,
                            ..Answer::default()
                        },
                        // The version's output did not parse: a failed answer, not an error.
                        Err(CallError::ParseFailed {
                            request_id,
                            message,
                        }) => Answer {
                            request_id: Some(request_id),
                            parse_status: Some("failed".into()),
                            parse_error: Some(message),
                            ..Answer::default()
                        },
                        Err(e) => Answer {
                            error: Some(e.to_string()),
                            ..Answer::default()
                        },
                    };
                    // Failed calls are not cached: the next run asks again.
                    let keep = a.error.is_none().then(|| (key.clone(), json!(a)));
                    (a, keep)
                }
            };
            let scores = evals.score(ctx, item, &answer, r).await;
            let cost: f64 = (if answer.cached {
                0.0
            } else {
                answer.cost_usd.unwrap_or(0.0)
            }) + scores.iter().filter_map(|(_, s)| s.cost_usd).sum::<f64>();
            if !answer.cached {
                let mut s = spend.lock().unwrap_or_else(|p| p.into_inner());
                s.in_flight = s.in_flight.saturating_sub(1);
                s.finished += 1;
                s.spent += cost;
                s.max_item = s.max_item.max(cost);
                let unpriced = answer.error.is_none() && answer.cost_usd.is_none();
                if max_usd.is_some() && unpriced && s.stop.is_none() {
                    s.stop = Some(
                        "the gateway reported no cost for this feature's model: --max-usd needs a price ([prices] in the config)".into(),
                    );
                }
            }
            Some((
                ItemResult {
                    item: item.id.clone(),
                    repeat: r,
                    answer,
                    scores: scores.into_iter().collect(),
                },
                fresh,
            ))
        }
    };
    // Results and cache entries are written by a task of their own, in batches, while
    // the items go on: the loop below never waits on the database, so an item paused
    // inside a transaction cannot block a batch's commit (and the run behind it).
    let (batches, mut to_write) =
        tokio::sync::mpsc::unbounded_channel::<(Vec<(String, i64, Value)>, Vec<(String, Value)>)>();
    let writer = {
        let store = store.clone();
        let run_id = run_id.clone();
        tokio::spawn(async move {
            while let Some((results, cache)) = to_write.recv().await {
                store
                    .insert_eval_results(&run_id, &results)
                    .await
                    .map_err(|e| e.to_string())?;
                store
                    .eval_cache_put(&cache)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
    };
    let mut results = Vec::with_capacity(total);
    let mut pending_results: Vec<(String, i64, Value)> = Vec::new();
    let mut pending_cache: Vec<(String, Value)> = Vec::new();
    let mut stream = futures::stream::iter(work.iter().copied().enumerate())
        .map(one)
        .buffer_unordered(spec.concurrency.max(1));
    let mut done = 0;
    let take_judged = || -> Vec<(String, Value)> {
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    };
    while let Some(r) = stream.next().await {
        done += 1;
        progress(done, total);
        let Some((res, fresh)) = r else { continue };
        pending_results.push((res.item.clone(), res.repeat, json!(res)));
        pending_cache.extend(fresh);
        results.push(res);
        if pending_results.len() >= 100 {
            pending_cache.extend(take_judged());
            let _ = batches.send((
                std::mem::take(&mut pending_results),
                std::mem::take(&mut pending_cache),
            ));
        }
    }
    drop(stream);
    pending_cache.extend(take_judged());
    let _ = batches.send((pending_results, pending_cache));
    drop(batches);
    writer
        .await
        .map_err(|e| format!("the result writer stopped: {e}"))??;
    results.sort_by(|a, b| (a.item.as_str(), a.repeat).cmp(&(b.item.as_str(), b.repeat)));
    let s = spend.into_inner().unwrap_or_else(|p| p.into_inner());
    let complete = results.len() == total;
    let summary = summarize(evals, &results, items.len(), spec.repeats, s.spent);
    run.status = if complete { "complete" } else { "partial" }.into();
    run.cost_usd = Some(s.spent);
    run.finished_at_ms = Some(now_ms());
    run.summary = Some(json!(summary));
    store
        .finish_eval_run(&run.id, &run.status, s.spent, &json!(summary))
        .await
        .map_err(|e| e.to_string())?;
    Ok(RunOutcome {
        run,
        results,
        summary,
        stopped: if complete { None } else { s.stop },
    })
}

/// Per item: the mean of its repeats' values (errors left out), and its pass rate.
pub fn per_item(results: &[ItemResult], evaluator: &str) -> BTreeMap<String, (f64, f64)> {
    let mut acc: BTreeMap<&str, (f64, f64, usize)> = BTreeMap::new();
    for r in results {
        if let Some(s) = r.scores.get(evaluator) {
            if let (Some(v), Some(p)) = (s.value, s.pass) {
                let e = acc.entry(&r.item).or_default();
                e.0 += v;
                e.1 += if p { 1.0 } else { 0.0 };
                e.2 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|(k, (v, p, n))| (k.to_string(), (v / n as f64, p / n as f64)))
        .collect()
}

pub fn summarize(
    evals: &Evaluators,
    results: &[ItemResult],
    items: usize,
    repeats: i64,
    cost: f64,
) -> Summary {
    let mut lat: Vec<u64> = results
        .iter()
        .filter(|r| r.answer.error.is_none() && !r.answer.cached)
        .map(|r| r.answer.latency_ms)
        .collect();
    lat.sort_unstable();
    let pct = |q: f64| -> Option<u64> {
        (!lat.is_empty())
            .then(|| lat[((q * (lat.len() - 1) as f64).round() as usize).min(lat.len() - 1)])
    };
    let evaluators = evals
        .specs()
        .iter()
        .filter(|e| !matches!(e.kind, crate::spec::Kind::Pairwise { .. }))
        .map(|e| evaluator_summary(&e.name, e.kind.name(), results))
        .collect();
    Summary {
        items,
        repeats,
        answers: results.len(),
        cached: results.iter().filter(|r| r.answer.cached).count(),
        call_errors: results.iter().filter(|r| r.answer.error.is_some()).count(),
        cost_usd: cost,
        latency_p50_ms: pct(0.5),
        latency_p95_ms: pct(0.95),
        evaluators,
    }
}

pub fn evaluator_summary(name: &str, kind: &str, results: &[ItemResult]) -> EvaluatorSummary {
    let items = per_item(results, name);
    let means: Vec<f64> = items.values().map(|(v, _)| *v).collect();
    let iv: Option<Interval> = stats::interval(&means, crate::spec::Method::T, true);
    let errors: Vec<&String> = results
        .iter()
        .filter_map(|r| r.scores.get(name).and_then(|s| s.error.as_ref()))
        .collect();
    EvaluatorSummary {
        name: name.to_string(),
        kind: kind.to_string(),
        items: items.len(),
        mean: (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64),
        ci_low: iv.map(|i| i.lo.max(0.0)),
        ci_high: iv.map(|i| i.hi.min(1.0)),
        pass_rate: (!items.is_empty())
            .then(|| items.values().map(|(_, p)| p).sum::<f64>() / items.len() as f64),
        errors: errors.len(),
        first_error: errors.first().map(|e| e.to_string()),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads a stored run's results back.
pub async fn load_results(store: &Store, run_id: &str) -> Result<Vec<ItemResult>, String> {
    store
        .eval_results(run_id)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, _, v)| serde_json::from_value(v).map_err(|e| format!("run {run_id}: {e}")))
        .collect()
}
