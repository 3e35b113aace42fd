//! Retry policy: how long to wait before retrying a target, and whether retrying is
//! still allowed at all.
//!
//! - **Backoff**: exponential with full jitter (AWS Architecture Blog, "Exponential
//!   Backoff And Jitter"): the n-th retry waits a uniformly random time in
//!   `0..=min(max_backoff, backoff * 2^(n-1))`, so clients that failed together do not
//!   retry together. A `Retry-After` from the provider is a floor on that wait.
//! - **Budget**: a target may be retried only while retries stay under `budget_ratio` of
//!   its calls over the last 10 s, plus `budget_min` per window (Finagle's retry budget).
//!   When a provider is down for everyone, retries cannot multiply the load on it: at
//!   most 1 + ratio calls per request on average.
//!
//! Both are small state machines written by hand: the policy is a few lines, and its
//! exact shape is what the tests pin down.

use llmop_core::config::RetryConfig;
use rand::Rng;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Seconds in the budget's window, one bucket per second.
const WINDOW_SECS: usize = 10;

/// The wait before the `retry`-th retry (1-based), before any `Retry-After`.
pub fn backoff(cfg: &RetryConfig, retry: u32, rng: &mut impl Rng) -> Duration {
    let exp = retry.saturating_sub(1).min(30);
    let cap = cfg
        .backoff_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.max_backoff_ms);
    Duration::from_millis(rng.gen_range(0..=cap))
}

/// The wait before the `retry`-th retry, honouring the provider's `Retry-After`.
pub fn delay(
    cfg: &RetryConfig,
    retry: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let jitter = backoff(cfg, retry, rng);
    match retry_after {
        Some(ra) => ra.max(jitter),
        None => jitter,
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    second: u64,
    calls: u32,
    retries: u32,
}

/// Retries allowed per window: `ratio` of the calls in it plus `min`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min: u32,
    epoch: Instant,
    /// Held only for a few arithmetic operations, never across an `.await`.
    buckets: Mutex<[Bucket; WINDOW_SECS]>,
}

impl RetryBudget {
    pub fn new(ratio: f64, min: u32) -> Self {
        RetryBudget {
            ratio,
            min,
            epoch: Instant::now(),
            buckets: Mutex::new([Bucket::default(); WINDOW_SECS]),
        }
    }

    fn now_s(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// A first try of this target.
    pub fn on_call(&self) {
        self.on_call_at(self.now_s());
    }

    /// Takes a retry from the budget if there is one.
    pub fn try_retry(&self) -> bool {
        self.try_retry_at(self.now_s())
    }

    fn with_bucket<R>(
        &self,
        now_s: u64,
        f: impl FnOnce(&mut [Bucket; WINDOW_SECS], usize) -> R,
    ) -> R {
        let mut b = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let i = (now_s % WINDOW_SECS as u64) as usize;
        if b[i].second != now_s {
            b[i] = Bucket {
                second: now_s,
                calls: 0,
                retries: 0,
            };
        }
        f(&mut b, i)
    }

    pub(crate) fn on_call_at(&self, now_s: u64) {
        self.with_bucket(now_s, |b, i| b[i].calls = b[i].calls.saturating_add(1));
    }

    pub(crate) fn try_retry_at(&self, now_s: u64) -> bool {
        let (ratio, min) = (self.ratio, self.min);
        self.with_bucket(now_s, |b, i| {
            let live = |x: &&Bucket| x.second + (WINDOW_SECS as u64) > now_s && x.second <= now_s;
            let calls: u64 = b.iter().filter(live).map(|x| x.calls as u64).sum();
            let retries: u64 = b.iter().filter(live).map(|x| x.retries as u64).sum();
            let allowed = (calls as f64 * ratio).floor() as u64 + min as u64;
            if retries < allowed {
                b[i].retries = b[i].retries.saturating_add(1);
                true
            } else {
                false
            }
        })
    }
}

/// A decaying estimate of one target's latency and error rate, for `least_latency`.
/// Each observation moves the averages by `ALPHA` of the difference, so old behaviour
/// fades after a few dozen calls.
#[derive(Debug, Default)]
pub struct LatencyStats {
    inner: Mutex<(f64, f64, u64)>,
}

const ALPHA: f64 = 0.2;
/// How much a 100% error rate multiplies a target's score.
const ERROR_PENALTY: f64 = 4.0;

impl LatencyStats {
    /// One attempt's outcome: its latency (successes only) and whether it failed.
    pub fn observe(&self, latency: Duration, failed: bool) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (ref mut ms, ref mut err, ref mut n) = *g;
        let e = if failed { 1.0 } else { 0.0 };
        if *n == 0 {
            *err = e;
            if !failed {
                *ms = latency.as_secs_f64() * 1000.0;
            }
        } else {
            *err += ALPHA * (e - *err);
            if !failed {
                let l = latency.as_secs_f64() * 1000.0;
                *ms = if *ms == 0.0 {
                    l
                } else {
                    *ms + ALPHA * (l - *ms)
                };
            }
        }
        *n += 1;
    }

    /// Lower is better; a target never tried scores 0 so that it gets tried.
    pub fn score(&self) -> f64 {
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (ms, err, n) = *g;
        if n == 0 {
            return 0.0;
        }
        // A target that only failed has no latency yet: rank it by its errors alone.
        ms.max(1.0) * (1.0 + ERROR_PENALTY * err)
    }
}

/// A route's retry settings with the budget of one of its targets.
#[derive(Debug)]
pub struct RetryPolicy {
    pub config: RetryConfig,
    pub budget: RetryBudget,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        RetryPolicy {
            config,
            budget: RetryBudget::new(config.budget_ratio, config.budget_min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn cfg(backoff_ms: u64, max_backoff_ms: u64) -> RetryConfig {
        RetryConfig {
            attempts: 3,
            backoff_ms,
            max_backoff_ms,
            budget_ratio: 0.2,
            budget_min: 10,
        }
    }

    #[test]
    fn latency_estimate_decays_and_penalizes_errors() {
        let fast = LatencyStats::default();
        let slow = LatencyStats::default();
        assert_eq!(fast.score(), 0.0, "untried first");
        for _ in 0..20 {
            fast.observe(Duration::from_millis(10), false);
            slow.observe(Duration::from_millis(100), false);
        }
        assert!(fast.score() < slow.score());
        // The fast one starts failing half its calls: 10 ms x (1 + 4 x ~0.5) = ~30 ms,
        // still ahead of 100 ms; failing every call puts it behind.
        for i in 0..20 {
            fast.observe(Duration::from_millis(10), i % 2 == 0);
        }
        assert!(fast.score() < slow.score());
        for _ in 0..40 {
            fast.observe(Duration::from_millis(10), true);
        }
        assert!(fast.score() > 45.0);
        // And the slow one recovers: its estimate follows.
        for _ in 0..40 {
            slow.observe(Duration::from_millis(5), false);
        }
        assert!(slow.score() < 10.0);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let c = cfg(100, 1_000);
        for n in 1..6 {
            let d = delay(&c, n, Some(Duration::from_secs(2)), &mut rng);
            assert_eq!(
                d,
                Duration::from_secs(2),
                "jitter never exceeds the 1 s cap"
            );
        }
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let c = cfg(100, 10_000);
        let waits: Vec<u64> = (0..2_000)
            .map(|_| backoff(&c, 3, &mut rng).as_millis() as u64)
            .collect();
        // Retry 3 waits within 0..=400 ms; full jitter uses all of it.
        assert!(waits.iter().all(|w| *w <= 400));
        assert!(waits.iter().any(|w| *w < 40));
        assert!(waits.iter().any(|w| *w > 360));
    }

    #[test]
    fn budget_allows_the_minimum_then_the_ratio() {
        let b = RetryBudget::new(0.2, 2);
        // No traffic: the minimum only.
        assert!(b.try_retry_at(0));
        assert!(b.try_retry_at(0));
        assert!(!b.try_retry_at(0));
        // 100 calls: 20 more.
        for _ in 0..100 {
            b.on_call_at(1);
        }
        let granted = (0..100).filter(|_| b.try_retry_at(1)).count();
        assert_eq!(granted, 20);
        // The window moves on: old calls and retries expire.
        assert!(b.try_retry_at(20));
    }

    proptest! {
        #[test]
        fn backoff_stays_under_its_caps(base in 1u64..5_000, max in 1u64..60_000, n in 1u32..64, seed: u64) {
            let max = max.max(base);
            let c = cfg(base, max);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let d = backoff(&c, n, &mut rng).as_millis() as u64;
            prop_assert!(d <= max);
            prop_assert!(d <= base.saturating_mul(1u64 << (n - 1).min(30)));
        }

        /// No retry storm: over any traffic, the retries granted in the 10 s up to any
        /// granted retry stay within ratio x the calls of those 10 s, + min.
        #[test]
        fn budget_bounds_retries(events in proptest::collection::vec((0u64..40, any::<bool>()), 1..2_000)) {
            let b = RetryBudget::new(0.2, 5);
            let mut events = events;
            events.sort_by_key(|e| e.0);
            let mut calls = vec![0u64; 41];
            let mut retries = vec![0u64; 41];
            for (t, is_call) in events {
                if is_call {
                    b.on_call_at(t);
                    calls[t as usize] += 1;
                } else if b.try_retry_at(t) {
                    retries[t as usize] += 1;
                }
            }
            for end in (0..41usize).filter(|t| retries[*t] > 0) {
                let start = end.saturating_sub(WINDOW_SECS - 1);
                let c: u64 = calls[start..=end].iter().sum();
                let r: u64 = retries[start..=end].iter().sum();
                prop_assert!(r <= (c as f64 * 0.2).floor() as u64 + 5, "window ending {end}: {r} retries for {c} calls");
            }
        }
    }
}
