//! Online evaluation: which production calls each evaluator scores.
//!
//! The eval files' `[online]` sections (read once at the gateway's start) become a
//! [`Sampler`]. When a call's record is built (on the record writer's task, off the
//! request path) the sampler names the evaluators that will score it: a call of a
//! feature with online evaluators, answered (status 200), in an allowed environment,
//! carrying the required tags, is scored by each evaluator with that evaluator's
//! probability. The draw is a hash of the request id and the evaluator's name, so it is
//! the same on every replica and on a replay of the record, and independent between
//! evaluators. Deterministic checks score the answer right there
//! ([`Sampler::score_inline`]) and their scores are stored in the record's transaction;
//! the names of the others (judges, commands) are queued in that transaction, and the
//! gateway's online worker scores them later (see `llmop-gateway::online`).

use crate::dataset::Item;
use crate::evaluate::{Answer, Evaluators, Score};
use crate::spec::{EvalFile, Kind, Online};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The default share of calls an evaluator scores: deterministic checks cost nothing,
/// judges and commands cost calls and processes.
pub fn default_rate(kind: &Kind) -> f64 {
    match kind {
        Kind::Judge { .. } | Kind::Command { .. } => 0.1,
        _ => 1.0,
    }
}

/// One feature's online plan: its evaluators with their rates, and its filters.
#[derive(Debug, Clone)]
pub struct FeaturePlan {
    pub evaluators: Vec<(String, f64)>,
    pub online: Online,
}

impl FeaturePlan {
    pub fn from_file(file: &EvalFile) -> Option<FeaturePlan> {
        let online = file.online.clone()?;
        // By default: every evaluator that can score a production call alone (not
        // pairwise ones, not those that need an expected output).
        let names: Vec<&str> = if online.evaluators.is_empty() {
            file.evaluators
                .iter()
                .filter(|e| {
                    !matches!(e.kind, Kind::Pairwise { .. })
                        && !crate::spec::needs_expected(&e.kind)
                })
                .map(|e| e.name.as_str())
                .collect()
        } else {
            online.evaluators.iter().map(String::as_str).collect()
        };
        let evaluators = names
            .into_iter()
            .filter_map(|n| {
                let e = file.evaluators.iter().find(|e| e.name == n)?;
                let rate = online
                    .sample
                    .get(n)
                    .copied()
                    .unwrap_or_else(|| default_rate(&e.kind));
                Some((n.to_string(), rate))
            })
            .collect();
        Some(FeaturePlan { evaluators, online })
    }
}

/// Every eval file (`*.toml`) in `dir` with an `[online]` section, and the problems of
/// those that could not be read (a missing directory is no problem: no online evals).
pub fn load_dir(dir: &std::path::Path) -> (Vec<EvalFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (files, problems);
    };
    let mut paths: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        match EvalFile::parse(&text) {
            Ok(f) if f.online.is_some() => files.push(f),
            Ok(_) => {}
            Err(errs) => problems.push(format!("{}: {}", path.display(), errs.join("; "))),
        }
    }
    (files, problems)
}

/// What a record offers the sampler.
pub struct Call<'a> {
    pub request_id: &'a str,
    pub feature: Option<&'a str>,
    pub env: Option<&'a str>,
    pub status: u16,
    pub tags: &'a std::collections::BTreeMap<String, String>,
}

/// Every feature's online plan, and its evaluators compiled for scoring in place.
#[derive(Clone, Default)]
pub struct Sampler {
    plans: HashMap<String, FeaturePlan>,
    compiled: HashMap<String, Arc<Evaluators>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("plans", &self.plans)
            .finish()
    }
}

impl Sampler {
    pub fn new(files: &[EvalFile]) -> Sampler {
        let plans: HashMap<String, FeaturePlan> = files
            .iter()
            .filter_map(|f| Some((f.feature.clone(), FeaturePlan::from_file(f)?)))
            .collect();
        // A file whose checks do not compile scores nothing in place: its evaluators
        // are queued, and the worker reports why they cannot run.
        let compiled = files
            .iter()
            .filter(|f| plans.contains_key(&f.feature))
            .filter_map(|f| {
                Some((
                    f.feature.clone(),
                    Arc::new(Evaluators::compile(f.clone()).ok()?),
                ))
            })
            .collect();
        Sampler { plans, compiled }
    }

    /// Scores `answer` now with the sampled evaluators `names` of `feature` that score
    /// in place (deterministic checks), leaving in `names` those the worker must run
    /// (judges, commands). See [`Evaluators::score_inline`].
    pub fn score_inline(
        &self,
        feature: &str,
        answer: &Answer,
        names: &mut Vec<String>,
    ) -> Vec<(String, Score)> {
        match self.compiled.get(feature) {
            Some(e) => e.score_inline(&Item::default(), answer, names),
            None => Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    pub fn plan(&self, feature: &str) -> Option<&FeaturePlan> {
        self.plans.get(feature)
    }

    /// The evaluators that score this call (often none).
    pub fn sample(&self, c: &Call<'_>) -> Vec<String> {
        let Some(plan) = c.feature.and_then(|f| self.plans.get(f)) else {
            return Vec::new();
        };
        if c.status != 200 {
            return Vec::new();
        }
        let env = c.env.unwrap_or("");
        let env_ok = if plan.online.envs.is_empty() {
            env != "eval"
        } else {
            plan.online.envs.iter().any(|e| e == env)
        };
        let tags_ok = plan.online.tags.iter().all(|t| match t.split_once('=') {
            Some((k, v)) => c.tags.get(k).is_some_and(|have| have == v),
            None => false,
        });
        if !env_ok || !tags_ok {
            return Vec::new();
        }
        plan.evaluators
            .iter()
            .filter(|(name, rate)| draw(c.request_id, name) < *rate)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// A uniform draw in 0..1 from the request id and the evaluator's name (SipHash with
/// fixed keys: the same on every replica of one build).
pub fn draw(request_id: &str, evaluator: &str) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request_id.hash(&mut h);
    evaluator.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const FILE: &str = r#"
feature = "qa"
[[evaluators]]
name = "exact"
kind = "regex"
pattern = "^\\w+$"
[[evaluators]]
name = "reference"
kind = "exact"
[[evaluators]]
name = "judge"
kind = "judge"
feature = "j"
version = 1
choices = { ok = 1.0, bad = 0.0 }
[[evaluators]]
name = "pair"
kind = "pairwise"
feature = "p"
version = 1
[online]
sample = { exact = 0.5 }
envs = ["prod"]
tags = ["team=a"]
"#;

    #[test]
    fn rates_filters_and_defaults() {
        let f = EvalFile::parse(FILE).unwrap();
        let s = Sampler::new(&[f]);
        let plan = s.plan("qa").unwrap();
        assert_eq!(
            plan.evaluators,
            vec![("exact".to_string(), 0.5), ("judge".to_string(), 0.1)]
        );
        let tags: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let none = BTreeMap::new();
        let (mut exact, mut judge) = (0, 0);
        let n = 20_000;
        for i in 0..n {
            let id = format!("req-{i}");
            let c = Call {
                request_id: &id,
                feature: Some("qa"),
                env: Some("prod"),
                status: 200,
                tags: &tags,
            };
            let got = s.sample(&c);
            exact += got.iter().filter(|e| *e == "exact").count();
            judge += got.iter().filter(|e| *e == "judge").count();
            // Filters: other environments, missing tags, failed calls, other features.
            for (env, t, status, feature) in [
                ("staging", &tags, 200, "qa"),
                ("prod", &none, 200, "qa"),
                ("prod", &tags, 500, "qa"),
                ("prod", &tags, 200, "other"),
            ] {
                let c = Call {
                    request_id: &id,
                    feature: Some(feature),
                    env: Some(env),
                    status,
                    tags: t,
                };
                assert!(s.sample(&c).is_empty());
            }
        }
        // Within 4 standard deviations of the configured rates.
        let sd = |p: f64| (p * (1.0 - p) / n as f64).sqrt();
        let e = exact as f64 / n as f64;
        let j = judge as f64 / n as f64;
        assert!((e - 0.5).abs() < 4.0 * sd(0.5), "{e}");
        assert!((j - 0.1).abs() < 4.0 * sd(0.1), "{j}");
    }

    #[test]
    fn bad_online_sections_are_named() {
        let bad = FILE.replace(
            "sample = { exact = 0.5 }",
            "sample = { exact = 1.5, nope = 0.1 }\nevaluators = [\"pair\"]",
        );
        let errs = EvalFile::parse(&bad).unwrap_err().join("\n");
        assert!(errs.contains("online.sample.exact"), "{errs}");
        assert!(errs.contains("online.sample.nope"), "{errs}");
        assert!(
            errs.contains("online.evaluators[0]: `pair` is pairwise"),
            "{errs}"
        );
        let bad = FILE.replace(
            "envs = [\"prod\"]",
            "envs = [\"prod\"]\nevaluators = [\"reference\"]",
        );
        let errs = EvalFile::parse(&bad).unwrap_err().join("\n");
        assert!(
            errs.contains("`reference` compares with an item's expected output"),
            "{errs}"
        );
    }
}
