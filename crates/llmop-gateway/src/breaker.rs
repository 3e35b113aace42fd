//! Circuit breakers, one per route target: a target that keeps failing is skipped for a
//! while instead of making every call wait for its failure.
//!
//! ```text
//!            failure rate >= threshold over the window (and >= min_calls calls)
//!   Closed ───────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                    │ open_ms passed
//!     │ probe succeeded              probe failed                          ▼
//!     └──────────────────── HalfOpen ◀──────────────────────────────── (one probe)
//!                              └──────────────────────────────────────────▶ Open
//! ```
//!
//! What counts: failures that say the target cannot serve (connection errors, timeouts,
//! 408, 409, 429, 5xx: the retryable ones). A 4xx that blames the request counts as a
//! success: the target answered. Each replica keeps its own breakers: a breaker reacts to what this replica sees,
//! in microseconds and without a network round trip; N replicas need at most N times
//! `min_calls` failed calls to all open, which is small next to the traffic of an outage.
//!
//! Written by hand: the state machine is small, and it must never hold its lock across
//! an `.await` (it is only touched between awaits, for a few arithmetic operations).

use llmop_core::config::BreakerConfig;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets in the failure-rate window.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// For the `llmop_circuit_state` gauge.
    pub fn as_number(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    buckets: [Bucket; BUCKETS],
    /// Open: when the target may be probed. HalfOpen: when a probe that never reported
    /// back (its call was abandoned) stops blocking the next one.
    until: Instant,
    probe_out: bool,
    opened: u64,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    /// `route:provider/model`, for logs.
    name: String,
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// A breaker's state for `/admin/circuits` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub state: State,
    pub calls: u32,
    pub failures: u32,
    /// Times this breaker opened since start.
    pub opened: u64,
    /// For an open breaker: milliseconds until it lets a probe through.
    pub retry_in_ms: Option<u64>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, name: String) -> Self {
        let now = Instant::now();
        Breaker {
            cfg,
            name,
            epoch: now,
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: [Bucket::default(); BUCKETS],
                until: now,
                probe_out: false,
                opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn bucket_index(&self, now: Instant) -> u64 {
        let width = (self.cfg.window_ms / BUCKETS as u64).max(1);
        now.duration_since(self.epoch).as_millis() as u64 / width
    }

    /// May a call go to this target now? In half-open state only one probe at a time.
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.state {
            State::Closed => true,
            State::Open if now >= s.until => {
                s.state = State::HalfOpen;
                s.probe_out = true;
                s.until = now + Duration::from_millis(self.cfg.open_ms);
                true
            }
            State::Open => false,
            State::HalfOpen if !s.probe_out || now >= s.until => {
                s.probe_out = true;
                s.until = now + Duration::from_millis(self.cfg.open_ms);
                true
            }
            State::HalfOpen => false,
        }
    }

    /// The outcome of a call that `allow` let through.
    pub fn record(&self, now: Instant, failed: bool) {
        let idx = self.bucket_index(now);
        let mut s = self.lock();
        match s.state {
            State::HalfOpen => {
                s.probe_out = false;
                if failed {
                    self.open(&mut s, now);
                } else {
                    s.state = State::Closed;
                    s.buckets = [Bucket::default(); BUCKETS];
                }
            }
            // A late result of a call let through before the breaker opened.
            State::Open => {}
            State::Closed => {
                let b = &mut s.buckets[(idx % BUCKETS as u64) as usize];
                if b.index != idx {
                    *b = Bucket {
                        index: idx,
                        calls: 0,
                        failures: 0,
                    };
                }
                b.calls += 1;
                b.failures += failed as u32;
                let (calls, failures) = window(&s.buckets, idx);
                if failed
                    && calls >= self.cfg.min_calls
                    && failures as f64 >= self.cfg.failure_rate * calls as f64
                {
                    self.open(&mut s, now);
                }
            }
        }
    }

    fn open(&self, s: &mut Inner, now: Instant) {
        s.state = State::Open;
        s.until = now + Duration::from_millis(self.cfg.open_ms);
        s.opened += 1;
        tracing::warn!(target_name = %self.name, open_ms = self.cfg.open_ms, "circuit opened");
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let idx = self.bucket_index(now);
        let s = self.lock();
        let (calls, failures) = window(&s.buckets, idx);
        Snapshot {
            state: s.state,
            calls,
            failures,
            opened: s.opened,
            retry_in_ms: (s.state == State::Open)
                .then(|| s.until.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

/// Calls and failures in the buckets of the window ending at bucket `idx`.
fn window(buckets: &[Bucket; BUCKETS], idx: u64) -> (u32, u32) {
    buckets
        .iter()
        .filter(|b| b.index + BUCKETS as u64 > idx && b.index <= idx)
        .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            min_calls: 4,
            open_ms: 1_000,
            window_ms: 10_000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let b = Breaker::new(cfg(), "t".into());
        let t0 = Instant::now();
        // Below min_calls nothing opens, whatever the rate.
        for _ in 0..3 {
            assert!(b.allow(t0));
            b.record(t0, true);
        }
        assert_eq!(b.snapshot(t0).state, State::Closed);
        assert!(b.allow(t0));
        b.record(t0, true);
        assert_eq!(b.snapshot(t0).state, State::Open);
        assert!(!b.allow(t0 + Duration::from_millis(999)));
        // After open_ms: one probe, not two.
        let t1 = t0 + Duration::from_millis(1_000);
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        assert_eq!(b.snapshot(t1).state, State::HalfOpen);
        // The probe fails: open again.
        b.record(t1, true);
        assert_eq!(b.snapshot(t1).state, State::Open);
        let t2 = t1 + Duration::from_millis(1_000);
        assert!(b.allow(t2));
        b.record(t2, false);
        let s = b.snapshot(t2);
        assert_eq!((s.state, s.calls, s.opened), (State::Closed, 0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_does_not_block_forever() {
        let b = Breaker::new(
            BreakerConfig {
                min_calls: 1,
                ..cfg()
            },
            "t".into(),
        );
        let t0 = Instant::now();
        b.record(t0, true);
        let t1 = t0 + Duration::from_millis(1_000);
        assert!(b.allow(t1), "the probe");
        // …never reports back.
        assert!(!b.allow(t1 + Duration::from_millis(500)));
        assert!(b.allow(t1 + Duration::from_millis(1_000)), "a new probe");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = Breaker::new(cfg(), "t".into());
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(t0, true);
        }
        // 11 s later those three are gone: one more failure is 1 call of 1, under min_calls.
        let t1 = t0 + Duration::from_secs(11);
        b.record(t1, true);
        assert_eq!(b.snapshot(t1).state, State::Closed);
        assert_eq!(b.snapshot(t1).calls, 1);
    }

    proptest! {
        /// Whatever the outcomes, a closed breaker opens exactly when the window's failure
        /// rate reaches the threshold with enough calls, and never lets two probes out.
        #[test]
        fn state_machine_invariants(outcomes in proptest::collection::vec((0u64..30_000, any::<bool>()), 1..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let b = Breaker::new(cfg(), "t".into());
                let t0 = Instant::now();
                let mut outcomes = outcomes;
                outcomes.sort_by_key(|o| o.0);
                for (ms, failed) in outcomes {
                    let now = t0 + Duration::from_millis(ms);
                    let before = b.snapshot(now).state;
                    if b.allow(now) {
                        if before == State::Open || before == State::HalfOpen {
                            prop_assert!(!b.allow(now), "a second probe at once");
                        }
                        b.record(now, failed);
                        let s = b.snapshot(now);
                        if before == State::Closed && s.state == State::Closed {
                            prop_assert!(
                                s.calls < 4 || !failed || (s.failures as f64) < 0.5 * s.calls as f64
                            );
                        }
                    } else {
                        prop_assert!(before != State::Closed);
                    }
                }
                Ok(())
            })?;
        }
    }
}
