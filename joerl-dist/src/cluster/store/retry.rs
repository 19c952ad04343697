//! A [`MetadataStore`] that retries transient failures and keeps the
//! store's reachability, for a node's health and events.
//!
//! [`RetryingStore`] wraps another store. The calls that may safely run
//! twice (`get`, `put`, `delete`, `list`, leases, `watch`, `leader`) are
//! tried again on [`StoreError::is_transient`] errors, with exponential
//! backoff and full jitter, a bounded number of times
//! ([`RetryPolicy`]); the others (`compare_and_swap`, `create_many`, locks
//! and elections) run once, because a lost answer to a write that did
//! happen would come back as a conflict with itself: their callers decide.
//! Every call's outcome updates [`StoreReachability`], which
//! [`RetryingStore::subscribe`] streams.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{
    CasOutcome, Entry, Expect, LeaderInfo, LeaderTerm, LeaseId, LockKey, MetadataStore, Revision,
    StoreError, StoreFuture, Watch,
};
use crate::cluster::placement::RetryPolicy;
use crate::cluster::placement::breaker::retry;

/// Whether the store answered lately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreReachability {
    /// The last call got an answer (an error the store gave counts too).
    Reachable,
    /// The last call found no store to answer it (after its retries).
    Unreachable {
        /// When calls started failing.
        since: SystemTime,
        /// The last such failure.
        error: String,
    },
}

/// A store with retries and reachability (see the module).
#[derive(Clone)]
pub struct RetryingStore {
    inner: Arc<dyn MetadataStore>,
    policy: RetryPolicy,
    state: Arc<watch::Sender<StoreReachability>>,
}

impl std::fmt::Debug for RetryingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingStore")
            .field("policy", &self.policy)
            .field("reachability", &*self.state.borrow())
            .finish()
    }
}

/// The default policy for store calls: 5 attempts, pauses capped at
/// 100 ms doubling to 2 s.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        multiplier: 2.0,
    }
}

impl RetryingStore {
    /// Wraps `inner` with `policy` (see [`default_policy`]).
    pub fn new(inner: Arc<dyn MetadataStore>, policy: RetryPolicy) -> RetryingStore {
        RetryingStore {
            inner,
            policy,
            state: Arc::new(watch::channel(StoreReachability::Reachable).0),
        }
    }

    /// Whether the store answered the last call.
    pub fn reachability(&self) -> StoreReachability {
        self.state.borrow().clone()
    }

    /// Every change of [`RetryingStore::reachability`].
    pub fn subscribe(&self) -> watch::Receiver<StoreReachability> {
        self.state.subscribe()
    }

    fn note<T>(&self, r: &Result<T, StoreError>) {
        match r {
            Err(e) if e.is_transient() => {
                let error = e.to_string();
                self.state.send_if_modified(|s| match s {
                    StoreReachability::Reachable => {
                        tracing::warn!(%error, "metadata store unreachable");
                        *s = StoreReachability::Unreachable {
                            since: SystemTime::now(),
                            error,
                        };
                        true
                    }
                    StoreReachability::Unreachable { error: last, .. } => {
                        *last = error;
                        false
                    }
                });
            }
            _ => {
                self.state.send_if_modified(|s| {
                    if *s == StoreReachability::Reachable {
                        false
                    } else {
                        tracing::info!("metadata store reachable again");
                        *s = StoreReachability::Reachable;
                        true
                    }
                });
            }
        }
    }

    /// Runs an idempotent call with retries.
    async fn again<'a, T, F>(&'a self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> StoreFuture<'a, T>,
    {
        let r = retry(self.policy, StoreError::is_transient, |_| {
            let f = op();
            async move {
                let r = f.await;
                self.note(&r);
                r
            }
        })
        .await;
        self.note(&r);
        r
    }

    /// Runs a call once.
    async fn once<T>(&self, f: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let r = f.await;
        self.note(&r);
        r
    }
}

impl MetadataStore for RetryingStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(self.again(move || self.inner.get(key)))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Revision> {
        Box::pin(self.again(move || self.inner.put(key, value.clone(), lease)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.again(move || self.inner.delete(key)))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(self.once(self.inner.compare_and_swap(key, expect, value, lease)))
    }

    fn create_many<'a>(
        &'a self,
        items: &'a [(String, Vec<u8>)],
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Vec<CasOutcome>> {
        Box::pin(self.once(self.inner.create_many(items, lease)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<Entry>, Revision)> {
        Box::pin(self.again(move || self.inner.list(prefix)))
    }

    fn grant_lease(&self, ttl: Duration) -> StoreFuture<'_, LeaseId> {
        // A lease granted by an attempt whose answer was lost expires
        // unused.
        Box::pin(self.again(move || self.inner.grant_lease(ttl)))
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, Duration> {
        Box::pin(self.again(move || self.inner.keep_alive(lease)))
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            match self.again(move || self.inner.revoke_lease(lease)).await {
                // An attempt that did revoke it, and lost its answer.
                Err(StoreError::LeaseGone(_)) => Ok(()),
                r => r,
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Option<Revision>) -> StoreFuture<'a, Watch> {
        Box::pin(self.again(move || self.inner.watch(prefix, after)))
    }

    fn lock<'a>(&'a self, name: &'a str, lease: LeaseId) -> StoreFuture<'a, LockKey> {
        Box::pin(self.once(self.inner.lock(name, lease)))
    }

    fn unlock<'a>(&'a self, lock: &'a LockKey) -> StoreFuture<'a, ()> {
        Box::pin(self.once(self.inner.unlock(lock)))
    }

    fn campaign<'a>(
        &'a self,
        name: &'a str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> StoreFuture<'a, LeaderTerm> {
        Box::pin(self.once(self.inner.campaign(name, value, lease)))
    }

    fn proclaim<'a>(&'a self, term: &'a LeaderTerm, value: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(self.once(self.inner.proclaim(term, value)))
    }

    fn leader<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<LeaderInfo>> {
        Box::pin(self.again(move || self.inner.leader(name)))
    }

    fn resign<'a>(&'a self, term: &'a LeaderTerm) -> StoreFuture<'a, ()> {
        Box::pin(self.once(self.inner.resign(term)))
    }
}
