//! Canary analysis: while an environment serves a two-arm split (`--split 1=90,2=10`),
//! the candidate arm's online scores are compared with the baseline arm's (the larger
//! one) since the split began, per evaluator, with the same intervals as drift
//! (Newcombe for pass rates, Welch for graded scores; candidate minus baseline):
//!
//! - **regressed**: some evaluator's whole 95% interval lies below `-margin`, both arms
//!   with at least `min_calls` scores. With `on_regression = "rollback"` the gateway
//!   deploys the baseline alone, as an audited change whose reason carries the evidence;
//!   with `"alert"` it alerts.
//! - **not worse**: every evaluator's whole interval lies above `-margin`, both arms
//!   with `min_calls`: with `promote = true` the candidate is deployed alone (again
//!   audited, with the evidence).
//! - otherwise it waits; past `max_duration` without a decision it alerts once
//!   ("undecided") and keeps waiting.

use crate::drift::{self, Comparison};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[online.canary]` in an eval file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// `rollback` (deploy the baseline alone) or `alert`.
    #[serde(default = "default_on_regression")]
    pub on_regression: OnRegression,
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Scored calls each arm needs before anything is decided.
    #[serde(default = "default_min_calls")]
    pub min_calls: usize,
    /// Deploy the candidate alone once it is shown not worse.
    #[serde(default)]
    pub promote: bool,
    /// Past this without a decision: an alert (once), and the canary goes on.
    #[serde(
        default = "default_max_duration",
        with = "crate::drift::humantime_serde_str"
    )]
    pub max_duration: Duration,
    /// How often the arms are compared.
    #[serde(default = "default_every", with = "crate::drift::humantime_serde_str")]
    pub check_every: Duration,
    /// The evaluators that decide (default: the online evaluators that gate).
    #[serde(default)]
    pub evaluators: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRegression {
    Rollback,
    Alert,
}

fn default_on_regression() -> OnRegression {
    OnRegression::Rollback
}
fn default_margin() -> f64 {
    0.05
}
fn default_min_calls() -> usize {
    100
}
fn default_max_duration() -> Duration {
    Duration::from_secs(86_400)
}
fn default_every() -> Duration {
    Duration::from_secs(60)
}

impl CanarySpec {
    pub fn validate(&self, errors: &mut Vec<String>) {
        if !(0.0..1.0).contains(&self.margin) {
            errors.push("online.canary.margin: must be at least 0 and below 1".into());
        }
        if self.min_calls < 5 {
            errors.push("online.canary.min_calls: must be at least 5".into());
        }
        if self.check_every.is_zero() || self.max_duration.is_zero() {
            errors.push("online.canary: check_every and max_duration must be above 0".into());
        }
    }
}

/// One evaluator's comparison of the two arms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub evaluator: String,
    pub comparison: Comparison,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Decision {
    /// Not enough scores yet, or intervals that straddle the margin.
    Wait,
    Regressed(Vec<Finding>),
    NotWorse(Vec<Finding>),
}

/// Decides on the arms' scores per evaluator: `(evaluator, baseline arm, candidate arm)`.
pub fn decide(spec: &CanarySpec, arms: &[(String, Vec<f64>, Vec<f64>)]) -> Decision {
    let mut findings = Vec::new();
    for (name, base, cand) in arms {
        match drift::compare(base, cand, spec.margin, spec.min_calls) {
            Some(c) => findings.push(Finding {
                evaluator: name.clone(),
                comparison: c,
            }),
            None => return Decision::Wait,
        }
    }
    if findings.is_empty() {
        return Decision::Wait;
    }
    if findings.iter().any(|f| f.comparison.worse) {
        return Decision::Regressed(
            findings
                .into_iter()
                .filter(|f| f.comparison.worse)
                .collect(),
        );
    }
    if findings
        .iter()
        .all(|f| f.comparison.difference.lo > -spec.margin)
    {
        return Decision::NotWorse(findings);
    }
    Decision::Wait
}

/// The evidence in words, for the audited reason of an automatic change.
pub fn evidence(findings: &[Finding], baseline: i64, candidate: i64, margin: f64) -> String {
    findings
        .iter()
        .map(|f| {
            let c = &f.comparison;
            format!(
                "{}: v{candidate} {} {:.3} vs v{baseline} {:.3}, difference {:+.3} [{:+.3}, {:+.3}] at 95% ({} vs {} scored calls, margin {margin})",
                f.evaluator, c.measure, c.recent, c.baseline, c.difference.mean, c.difference.lo, c.difference.hi, c.recent_n, c.baseline_n
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CanarySpec {
        toml::from_str("margin = 0.1\nmin_calls = 20").unwrap()
    }

    #[test]
    fn decisions() {
        let ones = vec![1.0; 40];
        let zeros = vec![0.0; 40];
        let a = |c: &Vec<f64>| vec![("e".to_string(), ones.clone(), c.clone())];
        assert!(matches!(
            decide(&spec(), &a(&zeros)),
            Decision::Regressed(_)
        ));
        assert!(matches!(decide(&spec(), &a(&ones)), Decision::NotWorse(_)));
        assert_eq!(decide(&spec(), &a(&vec![1.0; 10])), Decision::Wait);
        let mut half = vec![1.0; 20];
        half.extend(vec![0.0; 2]);
        // 2 failures in 22 against none in 40: neither clearly worse nor clearly not.
        assert_eq!(decide(&spec(), &a(&half)), Decision::Wait);
        if let Decision::Regressed(f) = decide(&spec(), &a(&zeros)) {
            let text = evidence(&f, 1, 2, 0.1);
            assert!(
                text.starts_with("e: v2 pass_rate 0.000 vs v1 1.000"),
                "{text}"
            );
        }
    }
}
