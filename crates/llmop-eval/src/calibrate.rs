//! Judge calibration: how often a judge version agrees with people.
//!
//! Each item of a labels dataset holds the judge's variables (`input`, `output`,
//! `expected`, as the judge declares them) and the human verdict (its first `labels`
//! entry, else its `expected` text). The judge is asked once per item through the
//! gateway; its verdicts against the human ones give the agreement, Cohen's kappa (the
//! agreement beyond chance: 0 is a judge no better than guessing with the same label
//! frequencies, 1 is perfect) and, with the verdicts that count as a pass, the true and
//! false positive rates. The result is stored per judge version, and compares warn when a
//! judge they rely on was never calibrated or falls below the policy's kappa floor.

use crate::dataset::{hash_json, Item};
use crate::gateway::{CallError, Gateway};
use crate::stats::{self, Agreement};
use futures::StreamExt;
use llmop_features::FeatureSpec;
use llmop_store::{Calibration, DatasetVersion, Store};
use serde::Serialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub judge: String,
    pub version: i64,
    pub dataset: String,
    pub dataset_version: i64,
    pub verdict_field: String,
    pub pass_labels: Vec<String>,
    #[serde(flatten)]
    pub agreement: Agreement,
    /// Items the judge could not score (its answer did not parse, the call failed).
    pub errors: Vec<String>,
    /// Per label: (human count, judge count).
    pub labels: std::collections::BTreeMap<String, (usize, usize)>,
    pub cost_usd: f64,
}

fn human_label(item: &Item) -> Option<String> {
    item.labels
        .first()
        .cloned()
        .or_else(|| match &item.expected {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        })
}

#[allow(clippy::too_many_arguments)]
pub async fn calibrate(
    store: &Store,
    gateway: &Gateway,
    judge: &str,
    version: i64,
    dataset: &DatasetVersion,
    verdict_field: &str,
    pass_labels: Option<Vec<String>>,
    concurrency: usize,
) -> Result<CalibrationReport, String> {
    let fv = store
        .feature_version(judge, version)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("judge `{judge}` has no version {version}"))?;
    let spec: FeatureSpec = serde_json::from_value(fv.spec.clone()).map_err(|e| e.to_string())?;
    let choices: Vec<String> = spec
        .output
        .schema
        .as_ref()
        .and_then(|s| s.pointer(&format!("/properties/{verdict_field}/enum")))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if choices.is_empty() {
        return Err(format!(
            "judge `{judge}` v{version} has no enumerated `{verdict_field}` in its output schema"
        ));
    }
    // By default the judge's first choice is the pass (e.g. `correct` in [correct, wrong]).
    let pass_labels = pass_labels.unwrap_or_else(|| vec![choices[0].clone()]);
    let items: Vec<Item> =
        serde_json::from_value(dataset.items.clone()).map_err(|e| format!("dataset: {e}"))?;
    for i in &items {
        match human_label(i) {
            None => {
                return Err(format!(
                    "item `{}` has no human label (`labels` or a text `expected`)",
                    i.id
                ))
            }
            Some(l) if !choices.contains(&l) => {
                return Err(format!(
                "item `{}` is labelled `{l}`, which is not one of the judge's verdicts {choices:?}",
                i.id
            ))
            }
            _ => {}
        }
    }
    let declared: Vec<&String> = spec.variables.keys().collect();
    let run_id = format!("calibrate-{}", uuid::Uuid::now_v7());
    let futs = items.iter().map(|item| {
        let vars: Map<String, Value> = item
            .variables
            .iter()
            .filter(|(k, _)| declared.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let run_id = &run_id;
        let content_hash = &fv.content_hash;
        let choices = &choices;
        async move {
            let key = format!(
                "judge:{}",
                hash_json(&json!({"judge": content_hash, "vars": vars, "repeat": 0}))
            );
            let cached = store
                .eval_cache_get(std::slice::from_ref(&key))
                .await
                .ok()
                .and_then(|mut m| m.remove(&key));
            let (parsed, cost) = match cached {
                Some(v) => (Ok(v), 0.0),
                None => {
                    let tags = [
                        ("eval_run", run_id.clone()),
                        ("eval_judge", judge.to_string()),
                    ];
                    match gateway.invoke(judge, version, &vars, &tags).await {
                        Ok(inv) => {
                            let cost = inv.cost_usd.unwrap_or(0.0);
                            match inv.parsed.filter(Value::is_object) {
                                Some(p) => {
                                    let _ = store.eval_cache_put(&[(key, p.clone())]).await;
                                    (Ok(p), cost)
                                }
                                None => (Err("no JSON object".to_string()), cost),
                            }
                        }
                        Err(CallError::ParseFailed { message, .. }) => {
                            (Err(format!("its answer did not parse: {message}")), 0.0)
                        }
                        Err(e) => (Err(e.to_string()), 0.0),
                    }
                }
            };
            let verdict = parsed.and_then(|p| {
                p.get(verdict_field)
                    .and_then(Value::as_str)
                    .filter(|v| choices.iter().any(|c| c == v))
                    .map(str::to_string)
                    .ok_or_else(|| format!("no valid `{verdict_field}` in {p}"))
            });
            (
                item.id.clone(),
                human_label(item).unwrap_or_default(),
                verdict,
                cost,
            )
        }
    });
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    let mut cost = 0.0;
    let mut labels = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut st = futures::stream::iter(futs).buffer_unordered(concurrency.max(1));
    while let Some((id, human, verdict, c)) = st.next().await {
        cost += c;
        match verdict {
            Ok(v) => {
                labels.entry(human.clone()).or_default().0 += 1;
                labels.entry(v.clone()).or_default().1 += 1;
                pairs.push((v, human));
            }
            Err(e) => errors.push(format!("{id}: {e}")),
        }
    }
    let agreement = stats::agreement(&pairs, |l| pass_labels.iter().any(|p| p == l));
    let report = CalibrationReport {
        judge: judge.to_string(),
        version,
        dataset: dataset.name.clone(),
        dataset_version: dataset.version,
        verdict_field: verdict_field.to_string(),
        pass_labels,
        agreement,
        errors,
        labels,
        cost_usd: cost,
    };
    store
        .put_calibration(&Calibration {
            judge: judge.to_string(),
            version,
            content_hash: fv.content_hash.clone(),
            dataset: dataset.name.clone(),
            dataset_hash: dataset.content_hash.clone(),
            kappa: report.agreement.kappa,
            report: json!(report),
            created_at_ms: crate::run::now_ms(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(report)
}
