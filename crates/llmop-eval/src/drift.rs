//! Drift: is the recent window of a feature version's scores worse than its baseline
//! window, by more than a margin, beyond what chance explains?
//!
//! The recent window (`window`, e.g. the last hour) is compared with the window just
//! before it (`baseline`, e.g. the 7 days before that), per feature × version ×
//! evaluator × provider model. The test follows the score type:
//!
//! - **pass rates** (scores that are all 0 or 1): the difference of two proportions with
//!   Newcombe's hybrid score interval (built from each window's Wilson interval; it
//!   keeps its coverage for small samples and rates near 0 or 1, where the textbook
//!   normal interval does not);
//! - **numeric scores** (judges with graded choices, similarity, commands): Welch's t
//!   interval for the difference of means (no equal-variance assumption).
//!
//! The alert condition is one-sided and conservative: the whole 95% interval of
//! `recent - baseline` lies below `-margin` — the recent window is worse, by more than
//! the margin, with 97.5% confidence — and both windows hold at least `min_samples`
//! scores. An episode opens on the first check that meets the condition, and keeps the
//! baseline level it was opened against: it closes only when the recent estimate is
//! back within the margin of *that* level (quality came back), not when the moving
//! baseline has filled with the worse scores. One alert per episode.

use crate::stats::Interval;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::time::Duration;

/// `[online.drift]` in an eval file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// The recent window (`1h`).
    #[serde(default = "default_window", with = "humantime_serde_str")]
    pub window: Duration,
    /// The baseline: the span just before the recent window (`7d`).
    #[serde(default = "default_baseline", with = "humantime_serde_str")]
    pub baseline: Duration,
    /// How much worse (in score units: 0.05 = 5 points of pass rate) counts as drift.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// Scores each window needs before anything is concluded.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// How often the windows are compared.
    #[serde(default = "default_every", with = "humantime_serde_str")]
    pub check_every: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_baseline() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_margin() -> f64 {
    0.05
}
fn default_min_samples() -> usize {
    50
}
fn default_every() -> Duration {
    Duration::from_secs(60)
}

/// Durations written as `90s`, `1h`, `7d` (humantime); shared with `crate::canary`.
pub(crate) mod humantime_serde_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 90s, 1h, 7d: {e}"))
        })
    }
}

impl DriftSpec {
    pub fn validate(&self, errors: &mut Vec<String>) {
        if self.window.is_zero() || self.baseline.is_zero() || self.check_every.is_zero() {
            errors.push("online.drift: window, baseline and check_every must be above 0".into());
        }
        if !(0.0..1.0).contains(&self.margin) {
            errors.push("online.drift.margin: must be at least 0 and below 1".into());
        }
        if self.min_samples < 5 {
            errors.push("online.drift.min_samples: must be at least 5".into());
        }
    }
}

/// One comparison of the two windows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// `pass_rate` or `mean`.
    pub measure: &'static str,
    pub baseline_n: usize,
    pub recent_n: usize,
    pub baseline: f64,
    pub recent: f64,
    /// recent - baseline, 95%.
    pub difference: Interval,
    /// The alert condition: significantly worse by more than the margin.
    pub worse: bool,
}

/// Whether an open episode ends: the recent level is back within the margin of the
/// baseline level the episode was opened against.
pub fn recovered(recent: f64, episode_baseline: f64, margin: f64) -> bool {
    recent >= episode_baseline - margin
}

/// Wilson score interval of a proportion `k / n`, 95%.
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 {
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v)
}

/// Compares the windows; `None` while either has fewer than `min_samples` scores.
pub fn compare(
    baseline: &[f64],
    recent: &[f64],
    margin: f64,
    min_samples: usize,
) -> Option<Comparison> {
    if baseline.len() < min_samples.max(2) || recent.len() < min_samples.max(2) {
        return None;
    }
    let binary = baseline
        .iter()
        .chain(recent)
        .all(|v| *v == 0.0 || *v == 1.0);
    let (nb, nr) = (baseline.len() as f64, recent.len() as f64);
    let (measure, b, r, lo, hi) = if binary {
        let (kb, kr) = (baseline.iter().sum::<f64>(), recent.iter().sum::<f64>());
        let (pb, pr) = (kb / nb, kr / nr);
        let (lb, ub) = wilson(kb, nb);
        let (lr, ur) = wilson(kr, nr);
        let d = pr - pb;
        // Newcombe's hybrid score interval for pr - pb.
        let lo = d - ((pr - lr).powi(2) + (ub - pb).powi(2)).sqrt();
        let hi = d + ((ur - pr).powi(2) + (pb - lb).powi(2)).sqrt();
        ("pass_rate", pb, pr, lo, hi)
    } else {
        let (mb, vb) = mean_var(baseline);
        let (mr, vr) = mean_var(recent);
        let se2 = vb / nb + vr / nr;
        let d = mr - mb;
        if se2 == 0.0 {
            ("mean", mb, mr, d, d)
        } else {
            let df =
                se2.powi(2) / ((vb / nb).powi(2) / (nb - 1.0) + (vr / nr).powi(2) / (nr - 1.0));
            let t = StudentsT::new(0.0, 1.0, df.max(1.0))
                .ok()?
                .inverse_cdf(0.975);
            let half = t * se2.sqrt();
            ("mean", mb, mr, d - half, d + half)
        }
    };
    Some(Comparison {
        measure,
        baseline_n: baseline.len(),
        recent_n: recent.len(),
        baseline: b,
        recent: r,
        difference: Interval {
            n: recent.len(),
            mean: r - b,
            lo,
            hi,
        },
        worse: hi < -margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn bern(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Vec<f64> {
        (0..n)
            .map(|_| if rng.gen_bool(p) { 1.0 } else { 0.0 })
            .collect()
    }

    #[test]
    fn a_clear_drop_is_worse_a_small_one_is_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let base = bern(&mut rng, 1000, 0.9);
        let dropped = bern(&mut rng, 200, 0.7);
        let c = compare(&base, &dropped, 0.05, 50).unwrap();
        assert_eq!(c.measure, "pass_rate");
        assert!(c.worse, "{c:?}");
        let same = bern(&mut rng, 200, 0.9);
        let c = compare(&base, &same, 0.05, 50).unwrap();
        assert!(!c.worse && recovered(c.recent, c.baseline, 0.05), "{c:?}");
        // Too few scores: nothing concluded.
        assert!(compare(&base, &dropped[..20], 0.05, 50).is_none());
        // Numeric scores: Welch.
        let b: Vec<f64> = (0..300).map(|_| rng.gen_range(0.6..1.0)).collect();
        let r: Vec<f64> = (0..100).map(|_| rng.gen_range(0.3..0.7)).collect();
        let c = compare(&b, &r, 0.05, 50).unwrap();
        assert_eq!(c.measure, "mean");
        assert!(c.worse, "{c:?}");
    }

    /// A stream of calls checked every `step` calls: the recent `window` calls against
    /// the `baseline` calls before them, with episodes. Returns the calls (after the
    /// drop at `drop_at`) until the first alert, and the number of alert episodes.
    #[allow(clippy::too_many_arguments)]
    fn run_stream(
        seed: u64,
        calls: usize,
        drop_at: usize,
        before: f64,
        after: f64,
        window: usize,
        baseline: usize,
        step: usize,
    ) -> (Option<usize>, usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scores: Vec<f64> = (0..calls)
            .map(|i| {
                let p = if i < drop_at { before } else { after };
                if rng.gen_bool(p) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let (mut open, mut episodes, mut first) = (None::<f64>, 0, None);
        let mut t = window + baseline;
        while t <= calls {
            let recent = &scores[t - window..t];
            let base = &scores[t - window - baseline..t - window];
            if let Some(c) = compare(base, recent, 0.05, 50) {
                match open {
                    None if c.worse => {
                        open = Some(c.baseline);
                        episodes += 1;
                        if first.is_none() && t > drop_at {
                            first = Some(t - drop_at);
                        }
                    }
                    Some(level) if recovered(c.recent, level, 0.05) => open = None,
                    _ => {}
                }
            }
            t += step;
        }
        (first, episodes)
    }

    /// A stable process (90% pass rate) checked 10,000 times: no alert. The margin (5
    /// points) and the one-sided 97.5% condition make a false alarm need a recent
    /// window worse by more than the margin beyond its own noise.
    #[test]
    fn no_false_alarms_on_a_stable_stream() {
        for seed in 0..5 {
            let (_, episodes) = run_stream(seed, 200_000, usize::MAX, 0.9, 0.9, 200, 2000, 20);
            assert_eq!(episodes, 0, "seed {seed}");
        }
    }

    /// A drop of 20 points is caught once, within two windows of calls.
    #[test]
    fn a_drop_is_caught_once() {
        let (first, episodes) = run_stream(9, 20_000, 10_000, 0.9, 0.7, 200, 2000, 20);
        assert_eq!(episodes, 1);
        assert!(first.is_some_and(|c| c <= 400), "{first:?}");
    }

    /// The table in docs/quality.md: `cargo test -p llmop-eval drift_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn drift_table() {
        println!("| drop (points) | calls until the alert (median of 20) | alerted |");
        println!("|---|---:|---:|");
        for drop in [0.05, 0.08, 0.1, 0.15, 0.2, 0.3] {
            let mut delays = Vec::new();
            for seed in 0..20 {
                let (first, _) = run_stream(seed, 20_000, 10_000, 0.9, 0.9 - drop, 200, 2000, 20);
                if let Some(d) = first {
                    delays.push(d);
                }
            }
            delays.sort_unstable();
            let median = delays
                .get(delays.len() / 2)
                .map_or("-".to_string(), |d| d.to_string());
            println!("| {:.0} | {median} | {}/20 |", drop * 100.0, delays.len());
        }
        let mut alarms = 0;
        for seed in 0..20 {
            alarms += run_stream(100 + seed, 200_000, usize::MAX, 0.9, 0.9, 200, 2000, 20).1;
        }
        println!("false alarms over 20 x 200,000 stable calls (199,000 checks): {alarms}");
    }
}
