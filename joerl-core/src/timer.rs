//! Timers: a message delivered after a delay, cancellable.
//!
//! Each timer is a tokio task sleeping on tokio's timer wheel, so a million
//! pending timers cost a million small tasks, not a million threads.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::AbortHandle;

/// A pending timer started by `send_after`. Dropping it does not cancel it.
#[derive(Debug, Clone)]
pub struct TimerRef {
    abort: AbortHandle,
    fired: Arc<AtomicBool>,
}

impl TimerRef {
    pub(crate) fn start<F>(runtime: &tokio::runtime::Handle, delay: Duration, deliver: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let handle = runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            if flag
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                deliver.await;
            }
        });
        TimerRef {
            abort: handle.abort_handle(),
            fired,
        }
    }

    /// Cancels the timer. Returns true if it had not fired yet (the message will
    /// not be sent), false if it already fired or was already cancelled.
    pub fn cancel(&self) -> bool {
        let cancelled = self
            .fired
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.abort.abort();
        cancelled
    }

    /// True once the timer fired or was cancelled.
    pub fn is_done(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}
