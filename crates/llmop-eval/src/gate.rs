//! The deploy gate: an environment with `[eval_gates] <env> = { dataset = "…" }` serves a
//! new version only with evidence: a stored compare, verdict `pass`, of that version
//! (by content hash) against what the environment serves now (by content hash), on the
//! latest version of the gate's dataset, under the feature's eval file as it is now
//! (by its hash). The CLI and the admin API ask the same question here.
//!
//! Not gated: rollbacks (they restore what was served, and must take seconds), a deploy
//! that serves no new version (a shadow, a narrower split), and the first deploy of an
//! environment (there is nothing to compare against).

use crate::spec::EvalFile;
use llmop_core::config::EvalGate;
use llmop_store::{DeploymentState, Store};
use std::path::Path;

/// A deploy the gate let through: how (for the audited history), and the change number
/// it was checked against (the deploy must still apply on top of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Passed {
    pub note: String,
    pub expect_seq: i64,
}

/// Why the gate refused, with the command that would produce the evidence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The version an environment mainly serves: its single version, or a split's largest
/// arm (the lowest version among equals).
pub fn primary(state: &DeploymentState) -> Option<i64> {
    state
        .arms
        .iter()
        .max_by(|a, b| a.weight.cmp(&b.weight).then(b.version.cmp(&a.version)))
        .map(|a| a.version)
}

/// The versions an environment answers with (its shadow is not served).
fn served(state: &DeploymentState) -> Vec<i64> {
    state.arms.iter().map(|a| a.version).collect()
}

pub async fn check(
    store: &Store,
    gate: &EvalGate,
    config_dir: &Path,
    feature: &str,
    env: &str,
    to: &DeploymentState,
) -> Result<Passed, Refused> {
    let db =
        |e: llmop_store::StoreError| Refused(format!("the eval gate cannot read the store: {e}"));
    let current = store.current_deployment(feature, env).await.map_err(db)?;
    let expect_seq = current.as_ref().map_or(0, |c| c.seq);
    let Some(current) = current else {
        return Ok(Passed {
            note: "first deploy (nothing to compare against)".into(),
            expect_seq,
        });
    };
    let now_served = served(&current.to);
    let new: Vec<i64> = served(to)
        .into_iter()
        .filter(|v| !now_served.contains(v))
        .collect();
    if new.is_empty() {
        return Ok(Passed {
            note: "no new version served".into(),
            expect_seq,
        });
    }
    let Some(baseline) = primary(&current.to) else {
        return Ok(Passed {
            note: "nothing served (nothing to compare against)".into(),
            expect_seq,
        });
    };
    let path = gate.eval_file(config_dir, feature);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Refused(format!(
            "`{env}` is gated by evals, and `{feature}` has no eval file at {} ({e}); write one, or deploy with --force --reason",
            path.display()
        ))
    })?;
    let file = EvalFile::parse(&text).map_err(|errs| {
        Refused(format!(
            "the eval file {} is invalid: {}",
            path.display(),
            errs.join("; ")
        ))
    })?;
    let dataset = store
        .dataset_version(&gate.dataset, None)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Refused(format!(
                "`{env}` is gated on dataset `{}`, which was never pushed (llmop dataset push)",
                gate.dataset
            ))
        })?;
    let base = store
        .feature_version(feature, baseline)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            Refused(format!(
                "`{feature}` v{baseline} is served but not registered"
            ))
        })?;
    let mut notes = Vec::new();
    for v in new {
        let cand = store
            .feature_version(feature, v)
            .await
            .map_err(db)?
            .ok_or_else(|| Refused(format!("feature `{feature}` has no version {v}")))?;
        let run_it = format!(
            "llmop eval compare {feature} --baseline {baseline} --candidate {v} --dataset {}",
            gate.dataset
        );
        let found = store
            .latest_eval_compare(
                feature,
                &cand.content_hash,
                &base.content_hash,
                &dataset.content_hash,
                &file.evals_hash(),
            )
            .await
            .map_err(db)?;
        match found {
            Some(c) if c.verdict == "pass" => notes.push(format!("compare {} (v{v} vs v{baseline})", c.id)),
            Some(c) => {
                return Err(Refused(format!(
                    "`{env}` is gated by evals: the latest compare of v{v} against v{baseline} (what `{env}` serves) on `{}` v{} is `{}` ({}); fix the version, or deploy with --force --reason",
                    gate.dataset, dataset.version, c.verdict, c.id
                )))
            }
            None => {
                return Err(Refused(format!(
                    "`{env}` is gated by evals: v{v} has no passing compare against v{baseline} (what `{env}` serves) on `{}` v{} under {} as it is now; run: {run_it}",
                    gate.dataset,
                    dataset.version,
                    path.display()
                )))
            }
        }
    }
    Ok(Passed {
        note: notes.join(", "),
        expect_seq,
    })
}
