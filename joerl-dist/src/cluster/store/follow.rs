//! Follows the assignments under a prefix in a live store: the I/O around
//! [`AssignmentView`]. It lists, then watches from the listing's revision;
//! when the watch ends (the store restarted, a compaction, a slow reader)
//! it lists again, after a backoff while the store does not answer, and
//! says so ([`FollowEvent::Resynced`]: whatever was derived from the view,
//! such as cached routes, is to be dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::MetadataStore;
use super::assignments::{Assignment, AssignmentChange, AssignmentView};

/// What [`follow`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// One identity's assignment changed.
    Change(AssignmentChange),
    /// The view was loaded again from a listing (at the start, and after
    /// every watch that ended): changes may have been missed meanwhile.
    Resynced {
        /// Assignments in the view now.
        assignments: usize,
    },
}

/// A running [`follow`]. Dropping it stops it.
#[derive(Debug)]
pub struct Following {
    view: Arc<Mutex<AssignmentView>>,
    resyncs: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Following {
    /// The owner of `(kind, id)` in the view now.
    pub fn owner(&self, kind: &str, id: &str) -> Option<Assignment> {
        self.lock().owner(kind, id).cloned()
    }

    /// Assignments in the view now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if the view holds none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Listings taken so far (the first included).
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Entries skipped because they were not assignments joerl wrote.
    pub fn malformed(&self) -> u64 {
        self.lock().malformed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AssignmentView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the assignments under `prefix` in `store`, calling `on_event`
/// for each change and each resynchronisation, until the returned handle
/// is dropped.
pub fn follow(
    store: Arc<dyn MetadataStore>,
    prefix: String,
    mut on_event: impl FnMut(FollowEvent) + Send + 'static,
) -> Following {
    let view = Arc::new(Mutex::new(AssignmentView::new(prefix.clone())));
    let resyncs = Arc::new(AtomicU64::new(0));
    let (v, r) = (view.clone(), resyncs.clone());
    let task = tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            let listed = store.list(&prefix).await;
            let (entries, revision) = match listed {
                Ok(l) => l,
                Err(error) => {
                    tracing::debug!(%error, "placement: cannot list the assignments; again soon");
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                    continue;
                }
            };
            let n = {
                let mut v = v.lock().unwrap_or_else(|e| e.into_inner());
                v.load(&entries, revision);
                v.len()
            };
            r.fetch_add(1, Ordering::Relaxed);
            on_event(FollowEvent::Resynced { assignments: n });
            let mut watch = match store.watch(&prefix, Some(revision)).await {
                Ok(w) => w,
                Err(error) => {
                    tracing::debug!(%error, "placement: cannot watch the assignments; again soon");
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                    continue;
                }
            };
            attempt = 0;
            while let Some(got) = watch.next().await {
                match got {
                    Ok(ev) => {
                        let change = v.lock().unwrap_or_else(|e| e.into_inner()).apply(&ev);
                        if let Some(c) = change {
                            on_event(FollowEvent::Change(c));
                        }
                    }
                    Err(error) => {
                        tracing::info!(%error, "placement: the assignments' watch ended; listing again");
                        break;
                    }
                }
            }
            tokio::time::sleep(pause(attempt)).await;
            attempt += 1;
        }
    });
    Following {
        view,
        resyncs,
        task,
    }
}

/// The pause before listing again: 50 ms doubling to 2 s, with jitter.
fn pause(attempt: u32) -> Duration {
    super::backoff(attempt, Duration::from_millis(50), Duration::from_secs(2))
}
