//! Rate limits for log lines that peers can trigger.
//!
//! A daemon that logs every bad request lets anyone who can reach it fill the
//! disk: 220,000 fuzz inputs at about 200 bytes each are 44 MB of log. Each
//! cause of such lines gets its own [`LogLimiter`]; at most a fixed number of
//! lines per one-second window pass, and the first line logged after some were
//! dropped says how many:
//!
//! ```
//! use joerl_epmd::log_limit::LogLimiter;
//!
//! static BAD_INPUT: LogLimiter = LogLimiter::new(5);
//!
//! fn on_bad_input(reason: &str) {
//!     if let Some(suppressed) = BAD_INPUT.check() {
//!         tracing::warn!(%reason, suppressed, "closing connection after bad input");
//!     }
//! }
//! # on_bad_input("demo");
//! ```
//!
//! The limiter holds only atomics (no lock, no allocation), so it can live in a
//! `static` and be checked from any thread. Windows are fixed one-second slots
//! of a monotonic clock (not sliding), so a burst that straddles a window
//! boundary can log up to twice `per_second` lines within one second of wall
//! time, and never more than `per_second` within one window.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Rate limit for one cause of log lines: at most `per_second` lines pass per
/// one-second window; the rest are counted and reported by the next line that passes.
///
/// Lock-free (atomics only) and constructible in a `static`.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    /// Window number (seconds of the monotonic clock) in the high 32 bits,
    /// lines logged in that window in the low 32 bits.
    state: AtomicU64,
    /// Lines dropped since the last line that passed.
    suppressed: AtomicU64,
}

/// Milliseconds of a process-wide monotonic clock (starting near 0 at first use).
fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

const COUNT_MASK: u64 = u32::MAX as u64;

impl LogLimiter {
    /// At most `per_second` lines per one-second window (0 drops every line,
    /// still counting them).
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` if a line may be logged now, where `suppressed` is how
    /// many lines were suppressed since the last one logged (log it as a field,
    /// e.g. `suppressed = n`, so the first line of a new window says "N more
    /// suppressed"); `None` if this line must be dropped.
    pub fn check(&self) -> Option<u64> {
        self.check_at(monotonic_ms())
    }

    /// [`LogLimiter::check`] at a given time of the monotonic clock, in
    /// milliseconds. A time earlier than one already seen counts as the
    /// latest window (clocks read on different threads may be slightly out of order).
    pub(crate) fn check_at(&self, now_ms: u64) -> Option<u64> {
        // u32 seconds cover 136 years of uptime.
        let window = (now_ms / 1000).min(u64::from(u32::MAX));
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let current_window = current >> 32;
            let count = if window > current_window {
                0
            } else {
                current & COUNT_MASK
            };
            if count >= u64::from(self.per_second) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let next = (window.max(current_window) << 32) | (count + 1);
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_per_second_lines_pass_per_window_and_the_next_reports_the_rest() {
        let limiter = LogLimiter::new(3);
        // Window 0: three lines pass, seven are dropped.
        let passed: Vec<Option<u64>> = (0..10).map(|i| limiter.check_at(i * 10)).collect();
        assert_eq!(passed[..3], [Some(0), Some(0), Some(0)]);
        assert!(passed[3..].iter().all(Option::is_none));
        // Still window 0 at 999 ms.
        assert_eq!(limiter.check_at(999), None);
        // Window 1: the first line reports the 8 dropped ones.
        assert_eq!(limiter.check_at(1000), Some(8));
        assert_eq!(limiter.check_at(1500), Some(0));
        assert_eq!(limiter.check_at(1600), Some(0));
        assert_eq!(limiter.check_at(1700), None);
        // A reading from an earlier window (another thread's clock) counts as the latest one.
        assert_eq!(limiter.check_at(900), None);
        // A gap of several windows starts afresh.
        assert_eq!(limiter.check_at(60_000), Some(2));
        assert_eq!(limiter.check_at(60_001), Some(0));
    }

    #[test]
    fn zero_per_second_drops_everything() {
        let limiter = LogLimiter::new(0);
        assert_eq!(limiter.check_at(0), None);
        assert_eq!(limiter.check_at(5000), None);
        assert_eq!(limiter.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn usable_in_a_static_from_many_threads() {
        static LIMITER: LogLimiter = LogLimiter::new(5);
        let now = 42_000;
        let passed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..1000)
                            .filter(|_| LIMITER.check_at(now).is_some())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(passed, 5);
        assert_eq!(LIMITER.check_at(now + 1000), Some(3995));
        // check() itself uses the monotonic clock and works too.
        assert!(LogLimiter::new(1).check().is_some());
    }
}
