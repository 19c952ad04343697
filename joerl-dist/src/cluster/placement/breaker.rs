//! Circuit breakers and retries for sends to placed actors: one breaker per
//! target node. A breaker opens after `failure_threshold` consecutive
//! failures (or timeouts), fails fast with [`CircuitOpen`] while open,
//! half-opens after `open_for` with a single probe, and closes when the
//! probe succeeds (or opens again when it fails).
//!
//! The breaker is a state machine over explicit instants (no I/O, no
//! clock of its own), so every transition is a test; [`retry`] runs an
//! idempotent operation with exponential backoff and full jitter on
//! tokio's clock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// How long it stays open before a probe is let through (default 1 s).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(1),
        }
    }
}

/// A breaker's state, as metrics and the management API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Operations go through; failures are counted.
    Closed,
    /// Operations fail fast until the instant given.
    Open {
        /// When a probe will be let through.
        until: Instant,
    },
    /// One probe is let through; its outcome closes or opens the breaker.
    HalfOpen {
        /// True while the probe is under way (others fail fast).
        probing: bool,
    },
}

/// An operation was refused because the target's breaker is open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the circuit to {target} is open: {reason}; retry in {retry_in:?}")]
pub struct CircuitOpen {
    /// The target (a node name).
    pub target: String,
    /// How long until a probe is let through (zero: a probe is under way).
    pub retry_in: Duration,
    /// Why it opened.
    pub reason: String,
}

/// One target's breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
    last_failure: String,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            failures: 0,
            last_failure: String::new(),
        }
    }

    /// The state now (an open breaker whose time is up reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                BreakerState::HalfOpen { probing: false }
            }
            s => s,
        }
    }

    /// May an operation start now? `Ok(true)` if it is the half-open probe.
    pub fn try_acquire(&mut self, target: &str, now: Instant) -> Result<bool, CircuitOpen> {
        match self.state(now) {
            BreakerState::Closed => Ok(false),
            BreakerState::Open { until } => Err(self.refusal(target, until - now)),
            BreakerState::HalfOpen { probing: true } => Err(self.refusal(target, Duration::ZERO)),
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Ok(true)
            }
        }
    }

    fn refusal(&self, target: &str, retry_in: Duration) -> CircuitOpen {
        CircuitOpen {
            target: target.to_string(),
            retry_in,
            reason: format!(
                "{} consecutive failures, the last: {}",
                self.failures, self.last_failure
            ),
        }
    }

    /// The operation succeeded: the breaker closes.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    /// The operation failed (or timed out) with `reason`.
    pub fn on_failure(&mut self, reason: &str, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = reason.to_string();
        let probe_failed = matches!(self.state, BreakerState::HalfOpen { .. });
        if probe_failed || self.failures >= self.config.failure_threshold {
            self.state = BreakerState::Open {
                until: now + self.config.open_for,
            };
        }
    }
}

/// A breaker per target, created closed on first use. Clones share the
/// breakers (give one to the metrics reporter, keep another).
#[derive(Debug, Default, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    all: std::sync::Arc<Mutex<HashMap<String, CircuitBreaker>>>,
}

impl Breakers {
    /// Breakers that open as `config` says.
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            all: Default::default(),
        }
    }

    fn with<R>(&self, target: &str, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let b = all
            .entry(target.to_string())
            .or_insert_with(|| CircuitBreaker::new(self.config));
        f(b)
    }

    /// Runs `op` through `target`'s breaker: refused at once while it is
    /// open; its outcome counts.
    pub async fn call<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
        &self,
        target: &str,
        op: F,
    ) -> Result<T, BreakerError<E>> {
        self.with(target, |b| b.try_acquire(target, Instant::now()))
            .map_err(BreakerError::Open)?;
        match op.await {
            Ok(v) => {
                self.with(target, |b| b.on_success());
                Ok(v)
            }
            Err(e) => {
                let reason = e.to_string();
                self.with(target, |b| b.on_failure(&reason, Instant::now()));
                Err(BreakerError::Failed(e))
            }
        }
    }

    /// May an operation to `target` start now? `Ok(true)` if it is the
    /// half-open probe; report its outcome with [`Self::success`] or
    /// [`Self::failure`].
    pub fn acquire(&self, target: &str) -> Result<bool, CircuitOpen> {
        self.with(target, |b| b.try_acquire(target, Instant::now()))
    }

    /// An operation to `target` succeeded.
    pub fn success(&self, target: &str) {
        self.with(target, |b| b.on_success());
    }

    /// An operation to `target` failed (or timed out) with `reason`.
    pub fn failure(&self, target: &str, reason: &str) {
        self.with(target, |b| b.on_failure(reason, Instant::now()));
    }

    /// Every target's state now, sorted by target.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let now = Instant::now();
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, BreakerState)> =
            all.iter().map(|(t, b)| (t.clone(), b.state(now))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// An operation through a breaker failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// Refused: the breaker is open.
    #[error(transparent)]
    Open(CircuitOpen),
    /// It ran and failed.
    #[error("{0}")]
    Failed(E),
}

/// Exponential backoff with full jitter, for idempotent operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4).
    pub attempts: u32,
    /// The first pause's cap (default 20 ms).
    pub initial: Duration,
    /// The longest pause's cap (default 1 s).
    pub max: Duration,
    /// How much each pause's cap grows (default 2).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial: Duration::from_millis(20),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The cap of the pause before attempt `n + 1` (n from 1): the pause is
    /// drawn uniformly below it (full jitter).
    pub fn cap(&self, n: u32) -> Duration {
        let f = self.multiplier.powi(n.saturating_sub(1) as i32);
        self.initial.mul_f64(f.min(1e6)).min(self.max)
    }
}

/// Runs `op` until it succeeds, `retryable` says its error is not worth
/// another attempt, or `policy.attempts` are spent; pauses between attempts
/// as [`RetryPolicy`] says. Only for idempotent operations.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut n = 1;
    loop {
        match op(n).await {
            Ok(v) => return Ok(v),
            Err(e) if n >= policy.attempts.max(1) || !retryable(&e) => return Err(e),
            Err(_) => {
                let cap = policy.cap(n);
                let pause = cap.mul_f64(rand::random::<f64>());
                tokio::time::sleep(pause).await;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_breaker_opens_fails_fast_half_opens_with_one_probe_and_closes() {
        let config = BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
        };
        let mut b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.try_acquire("n", t0), Ok(false));
            b.on_failure("noconnection", t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        // A success in between resets the count.
        b.on_success();
        for _ in 0..3 {
            assert_eq!(b.try_acquire("n", t0), Ok(false));
            b.on_failure("timeout", t0);
        }
        let open = b.try_acquire("n", t0).unwrap_err();
        assert_eq!(open.retry_in, Duration::from_secs(2));
        assert!(
            open.reason
                .contains("3 consecutive failures, the last: timeout")
        );
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(b.try_acquire("n", Instant::now()).is_err(), "still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = Instant::now();
        assert_eq!(b.state(now), BreakerState::HalfOpen { probing: false });
        // One probe; the others fail fast while it runs.
        assert_eq!(b.try_acquire("n", now), Ok(true));
        let busy = b.try_acquire("n", now).unwrap_err();
        assert_eq!(busy.retry_in, Duration::ZERO);
        // The probe fails: open again for the whole period.
        b.on_failure("noconnection", now);
        assert_eq!(
            b.state(now),
            BreakerState::Open {
                until: now + Duration::from_secs(2)
            }
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.try_acquire("n", Instant::now()), Ok(true));
        b.on_success();
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        assert_eq!(b.try_acquire("n", Instant::now()), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_are_per_target_and_count_the_outcomes_of_calls() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(500),
        });
        for _ in 0..2 {
            let r: Result<(), _> = breakers.call("a", async { Err::<(), _>("down") }).await;
            assert!(matches!(r, Err(BreakerError::Failed("down"))));
        }
        let r = breakers.call("a", async { Ok::<_, &str>(1) }).await;
        assert!(matches!(r, Err(BreakerError::Open(o)) if o.target == "a"));
        // Another target is not affected.
        assert_eq!(
            breakers
                .call("b", async { Ok::<_, &str>(2) })
                .await
                .unwrap(),
            2
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            breakers
                .call("a", async { Ok::<_, &str>(3) })
                .await
                .unwrap(),
            3
        );
        let states = breakers.states();
        assert_eq!(
            states,
            [
                ("a".to_string(), BreakerState::Closed),
                ("b".to_string(), BreakerState::Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_within_growing_caps_and_stops_on_a_final_error() {
        let policy = RetryPolicy {
            attempts: 4,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
            multiplier: 2.0,
        };
        assert_eq!(policy.cap(1), Duration::from_millis(100));
        assert_eq!(policy.cap(2), Duration::from_millis(200));
        assert_eq!(policy.cap(3), Duration::from_millis(300));
        assert_eq!(policy.cap(9), Duration::from_millis(300));
        let start = Instant::now();
        let mut at = Vec::new();
        let r: Result<(), u32> = retry(
            policy,
            |_| true,
            |n| {
                at.push(start.elapsed());
                async move { Err(n) }
            },
        )
        .await;
        assert_eq!(r, Err(4));
        assert_eq!(at.len(), 4);
        for (i, pair) in at.windows(2).enumerate() {
            let pause = pair[1] - pair[0];
            assert!(pause <= policy.cap(i as u32 + 1), "pause {i}: {pause:?}");
        }
        // A success ends it; an error not worth retrying ends it at once.
        let r = retry(
            policy,
            |_| true,
            |n| async move { if n == 2 { Ok(n) } else { Err(n) } },
        )
        .await;
        assert_eq!(r, Ok(2));
        let mut tries = 0;
        let r: Result<(), &str> = retry(
            policy,
            |e| *e != "bad request",
            |_| {
                tries += 1;
                async { Err("bad request") }
            },
        )
        .await;
        assert_eq!((r, tries), (Err("bad request"), 1));
    }
}
