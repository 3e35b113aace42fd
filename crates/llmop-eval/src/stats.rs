//! Paired statistics for compares.
//!
//! The unit is the **item**: for each item both versions were asked the same thing, so
//! the comparison is over per-item differences `candidate - baseline` (repeats of an
//! item are averaged first: repeats make each item's score more precise, they are not
//! extra items). The interval is for the mean difference, at 95%:
//!
//! - `t`: the paired t interval, `mean ± t(0.975, n-1) · sd / √n`;
//! - `bootstrap`: the percentile interval of the mean over 10,000 resamples of the items
//!   (fixed seed, so the same data give the same interval).
//!
//! When every item's difference is the same (no variance: e.g. an identical candidate),
//! both methods would give an interval of width zero, claiming certainty that n items
//! cannot give. For scores in 0..1 the interval is then widened to the "rule of three"
//! bound: no discordant item among n rules out, at 95%, a discordance rate above 3/n.
//!
//! The verdict is a non-inferiority test: `pass` when the whole interval lies above
//! `-margin` (the candidate is at worst `margin` worse), `fail` when the whole interval
//! lies below `-margin` (it is worse by more than the margin), otherwise `inconclusive`,
//! and `inconclusive` with fewer than `min_items` items whatever the interval says. The
//! test `coverage_is_close_to_95_percent` checks by simulation that the interval covers
//! the true difference at close to its stated rate.

use crate::spec::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

pub const CONFIDENCE: f64 = 0.95;
const RESAMPLES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn sd(x: &[f64], m: f64) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// The 95% interval of the mean of `x` (per-item differences, or per-item scores).
/// `None` with fewer than 2 values. `bounded`: values are differences of 0..1 scores
/// (or 0..1 scores), which allows the zero-variance bound.
pub fn interval(x: &[f64], method: Method, bounded: bool) -> Option<Interval> {
    let n = x.len();
    if n < 2 || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let m = mean(x);
    let s = sd(x, m);
    if s == 0.0 {
        let w = if bounded {
            (3.0 / n as f64).min(1.0)
        } else {
            0.0
        };
        return Some(Interval {
            n,
            mean: m,
            lo: m - w,
            hi: m + w,
        });
    }
    let (lo, hi) = match method {
        Method::T => {
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
                .ok()?
                .inverse_cdf(0.5 + CONFIDENCE / 2.0);
            let half = t * s / (n as f64).sqrt();
            (m - half, m + half)
        }
        Method::Bootstrap => bootstrap(x),
    };
    Some(Interval { n, mean: m, lo, hi })
}

fn bootstrap(x: &[f64]) -> (f64, f64) {
    let n = x.len();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| x[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| means[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    (at(tail), at(1.0 - tail))
}

/// Non-inferiority against `margin`; fewer than `min_items` items cannot decide.
pub fn decide(iv: Option<&Interval>, margin: f64, min_items: usize) -> (Verdict, String) {
    let Some(iv) = iv else {
        return (
            Verdict::Inconclusive,
            "fewer than 2 items were scored on both sides".into(),
        );
    };
    if iv.n < min_items {
        return (
            Verdict::Inconclusive,
            format!("{} items; the policy asks for at least {min_items}", iv.n),
        );
    }
    if iv.lo > -margin {
        (
            Verdict::Pass,
            format!(
                "the whole interval is above -{margin}: at worst {:.3} worse",
                (-iv.lo).max(0.0)
            ),
        )
    } else if iv.hi < -margin {
        (
            Verdict::Fail,
            format!("the whole interval is below -{margin}: worse by more than the margin"),
        )
    } else {
        (
            Verdict::Inconclusive,
            format!(
                "the interval [{:.3}, {:.3}] straddles -{margin}: more items (or repeats) would decide",
                iv.lo, iv.hi
            ),
        )
    }
}

/// Cohen's kappa, agreement and rates for a judge against human labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub n: usize,
    pub agreement: f64,
    /// `None` when chance agreement is total (every label the same on both sides).
    pub kappa: Option<f64>,
    /// Of the items people passed, the share the judge passed.
    pub true_positive_rate: Option<f64>,
    /// Of the items people failed, the share the judge passed.
    pub false_positive_rate: Option<f64>,
}

/// `pairs`: (judge's verdict, human's label), and whether each verdict counts as a pass.
pub fn agreement(pairs: &[(String, String)], passes: impl Fn(&str) -> bool) -> Agreement {
    let n = pairs.len();
    if n == 0 {
        return Agreement {
            n,
            agreement: 0.0,
            kappa: None,
            true_positive_rate: None,
            false_positive_rate: None,
        };
    }
    let agree = pairs.iter().filter(|(j, h)| j == h).count() as f64 / n as f64;
    let mut labels: Vec<&str> = pairs
        .iter()
        .flat_map(|(j, h)| [j.as_str(), h.as_str()])
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let chance: f64 = labels
        .iter()
        .map(|l| {
            let pj = pairs.iter().filter(|(j, _)| j == l).count() as f64 / n as f64;
            let ph = pairs.iter().filter(|(_, h)| h == l).count() as f64 / n as f64;
            pj * ph
        })
        .sum();
    let kappa = (chance < 1.0).then(|| (agree - chance) / (1.0 - chance));
    let pos: Vec<&(String, String)> = pairs.iter().filter(|(_, h)| passes(h)).collect();
    let neg: Vec<&(String, String)> = pairs.iter().filter(|(_, h)| !passes(h)).collect();
    let rate = |set: &[&(String, String)]| {
        (!set.is_empty())
            .then(|| set.iter().filter(|(j, _)| passes(j)).count() as f64 / set.len() as f64)
    };
    Agreement {
        n,
        agreement: agree,
        kappa,
        true_positive_rate: rate(&pos),
        false_positive_rate: rate(&neg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paired 0/1 outcomes: baseline passes with probability `pb`; the candidate keeps
    /// the baseline's outcome with probability `keep`, else draws its own with `pc`.
    fn simulate(rng: &mut ChaCha8Rng, n: usize, pb: f64, pc: f64, keep: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let b = rng.gen_bool(pb) as u8 as f64;
                let c = if rng.gen_bool(keep) {
                    b
                } else {
                    rng.gen_bool(pc) as u8 as f64
                };
                c - b
            })
            .collect()
    }

    /// The true mean difference of `simulate`: (1 - keep) * (pc - pb).
    fn truth(pb: f64, pc: f64, keep: f64) -> f64 {
        (1.0 - keep) * (pc - pb)
    }

    fn coverage(method: Method, n: usize, pb: f64, pc: f64, keep: f64, trials: usize) -> f64 {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let t = truth(pb, pc, keep);
        let mut covered = 0;
        for _ in 0..trials {
            let d = simulate(&mut rng, n, pb, pc, keep);
            let iv = interval(&d, method, true).unwrap();
            if iv.lo <= t && t <= iv.hi {
                covered += 1;
            }
        }
        covered as f64 / trials as f64
    }

    /// The stated 95% must be what the interval delivers: over many simulated datasets
    /// of paired pass/fail outcomes and of continuous scores, the interval covers the
    /// true difference 93-97% of the time.
    #[test]
    fn coverage_is_close_to_95_percent() {
        for (n, pb, pc, keep) in [
            (100, 0.7, 0.6, 0.5),
            (200, 0.8, 0.8, 0.7),
            (60, 0.5, 0.4, 0.3),
        ] {
            let c = coverage(Method::T, n, pb, pc, keep, 2000);
            assert!((0.93..=0.97).contains(&c), "t n={n} pb={pb} pc={pc}: {c}");
        }
        let c = coverage(Method::Bootstrap, 100, 0.7, 0.6, 0.5, 300);
        assert!((0.91..=0.98).contains(&c), "bootstrap: {c}");
        // Continuous judge-like scores: the difference of two correlated uniforms.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut covered = 0;
        let trials = 2000;
        for _ in 0..trials {
            let d: Vec<f64> = (0..50)
                .map(|_| {
                    let b: f64 = rng.gen();
                    let c: f64 = (0.8 * b + 0.2 * rng.gen::<f64>() - 0.05).clamp(0.0, 1.0);
                    c - b
                })
                .collect();
            // True mean of c - b, computed from a large sample once below.
            let iv = interval(&d, Method::T, true).unwrap();
            if iv.lo <= TRUE_CONTINUOUS && TRUE_CONTINUOUS <= iv.hi {
                covered += 1;
            }
        }
        let c = covered as f64 / trials as f64;
        assert!((0.93..=0.97).contains(&c), "continuous: {c}");
    }

    /// E[clamp(0.8b + 0.2u - 0.05, 0, 1) - b] for b, u uniform on 0..1, by a 4M-draw
    /// Monte Carlo (checked in `true_continuous_mean`).
    const TRUE_CONTINUOUS: f64 = -0.0498;

    #[test]
    fn true_continuous_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 4_000_000;
        let s: f64 = (0..n)
            .map(|_| {
                let b: f64 = rng.gen();
                (0.8 * b + 0.2 * rng.gen::<f64>() - 0.05).clamp(0.0, 1.0) - b
            })
            .sum();
        assert!(
            (s / n as f64 - TRUE_CONTINUOUS).abs() < 0.001,
            "{}",
            s / n as f64
        );
    }

    #[test]
    fn verdicts() {
        // Identical on 200 items: no variance, the rule-of-three bound is ±0.015.
        let same = vec![0.0; 200];
        let iv = interval(&same, Method::T, true).unwrap();
        assert!((iv.hi - 0.015).abs() < 1e-12);
        assert_eq!(decide(Some(&iv), 0.05, 20).0, Verdict::Pass);
        // ...but 30 identical items cannot rule out a 5% regression.
        let iv = interval(&same[..30], Method::T, true).unwrap();
        assert_eq!(decide(Some(&iv), 0.05, 20).0, Verdict::Inconclusive);
        // Worse on 20% of 100 items.
        let mut worse = vec![0.0; 100];
        worse[..20].fill(-1.0);
        let iv = interval(&worse, Method::T, true).unwrap();
        assert!(iv.hi < -0.05, "{iv:?}");
        assert_eq!(decide(Some(&iv), 0.05, 20).0, Verdict::Fail);
        // Three items: too few, whatever they say.
        let iv = interval(&[0.0, 0.0, 0.0], Method::T, true).unwrap();
        assert_eq!(decide(Some(&iv), 0.05, 20).0, Verdict::Inconclusive);
        assert_eq!(decide(None, 0.05, 20).0, Verdict::Inconclusive);
        // Bootstrap agrees on the clear cases.
        let iv = interval(&worse, Method::Bootstrap, true).unwrap();
        assert_eq!(decide(Some(&iv), 0.05, 20).0, Verdict::Fail);
    }

    #[test]
    fn kappa() {
        let p = |j: &str, h: &str| (j.to_string(), h.to_string());
        let perfect = vec![
            p("good", "good"),
            p("bad", "bad"),
            p("good", "good"),
            p("bad", "bad"),
        ];
        let a = agreement(&perfect, |l| l == "good");
        assert_eq!(a.kappa, Some(1.0));
        assert_eq!(a.true_positive_rate, Some(1.0));
        assert_eq!(a.false_positive_rate, Some(0.0));
        // A judge that always says "good": agreement 50%, kappa 0.
        let lazy = vec![
            p("good", "good"),
            p("good", "bad"),
            p("good", "good"),
            p("good", "bad"),
        ];
        let a = agreement(&lazy, |l| l == "good");
        assert_eq!(a.agreement, 0.5);
        assert_eq!(a.kappa, Some(0.0));
        assert_eq!(a.false_positive_rate, Some(1.0));
    }
}
