//! The metadata store seam: a small, strongly consistent key-value store
//! with leases, watches, locks and elections, for cluster metadata that must
//! survive partitions of the membership (assignments of identities, the
//! leader).
//!
//! [`MetadataStore`] is the trait the cluster layer uses; `etcd::EtcdStore`
//! is its implementation on a real etcd cluster (v3 API, through the
//! `etcd-client` crate), and `local_etcd::LocalEtcd` starts a one-member
//! etcd for development and tests. Both are behind joerl-dist's `etcd`
//! feature (the etcd client needs `protoc` to build). CLUSTERING.md's *Metadata store* section
//! gives the key layout, the value formats and the consistency each call
//! gives.
//!
//! Keys are UTF-8 text (joerl's layout is textual); values are bytes. Every
//! call is bounded by the store's request timeout and fails with a typed
//! [`StoreError`] that says what to do.

pub mod assignments;
pub mod batch;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod follow;
pub mod leader;
#[cfg(feature = "etcd")]
pub mod local_etcd;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A store call's future (boxed, so the trait can be used as
/// `Arc<dyn MetadataStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Operations one transaction may hold (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Bytes of keys and values one transaction may hold: below etcd's default
/// `--max-request-bytes` (1.5 MiB) by room for the request's framing (32
/// bytes per operation are counted on top of its key and value).
pub const MAX_TXN_BYTES: usize = 1536 * 1024 - 16 * 1024;

/// Framing counted per operation toward [`MAX_TXN_BYTES`].
pub const TXN_OP_OVERHEAD: usize = 32;

/// A store revision: a number that grows with every change of the whole
/// store (etcd's `mod_revision` space), so it orders all writes.
pub type Revision = i64;

/// A lease: keys written with it vanish when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key and its value as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the key's last change: what
    /// [`Expect::ModRevision`] compares.
    pub mod_revision: Revision,
    /// Changes of the key since it was created (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// What a compare-and-swap expects of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (create-if-absent).
    Absent,
    /// The key exists and its last change was at this revision.
    ModRevision(Revision),
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expectation held and the value was written at `revision`.
    Swapped {
        /// The revision of the write.
        revision: Revision,
    },
    /// The expectation did not hold; nothing was written. `current` is the
    /// key as it is now (`None`: absent).
    Conflict {
        /// The key now.
        current: Option<Entry>,
    },
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written; `entry` is its new value.
    Put(Entry),
    /// The key was deleted (by a call, or because its lease ended) at
    /// `revision`.
    Deleted {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(e) => &e.key,
            WatchEvent::Deleted { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(e) => e.mod_revision,
            WatchEvent::Deleted { revision, .. } => *revision,
        }
    }
}

/// The changes under a prefix, in revision order, as a stream: see
/// [`MetadataStore::watch`]. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    events: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

/// Events a watch buffers for a slow reader; past it the watch ends with
/// [`StoreError::WatchLagged`] (start again from the last revision seen).
pub const WATCH_BUFFER: usize = 4096;

impl Watch {
    /// A watch fed by `task` through `events` (for implementations of
    /// [`MetadataStore`]).
    pub fn new(
        events: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Watch {
        Watch { events, task }
    }

    /// The next change; `None` once the watch has ended (after an error,
    /// which comes first). Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.events.recv().await
    }

    /// Sends every change to `to` as a [`WatchEvent`] message (an error
    /// ends the watch with a [`WatchEnded`] message), until `to` ends or
    /// the watch does. `WatchEvent` is not a remote message: `to` is an
    /// actor of this node.
    pub fn forward_to(
        mut self,
        system: joerl_core::ActorSystem,
        to: joerl_core::Pid,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(got) = self.next().await {
                match got {
                    Ok(ev) => {
                        if system.send(to, ev).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = system.send(to, WatchEnded { error }).await;
                        return;
                    }
                }
            }
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The last message [`Watch::forward_to`] sends: why the watch ended.
#[derive(Debug)]
pub struct WatchEnded {
    /// What ended it.
    pub error: StoreError,
}

/// A held lock: pass it to [`MetadataStore::unlock`]. It is also released
/// when the lease it was taken with ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKey {
    /// The store's key for this holder of the lock.
    pub key: String,
    /// The lease it is held with.
    pub lease: LeaseId,
}

/// This node's term as the leader of an election: pass it to
/// [`MetadataStore::resign`] or [`MetadataStore::proclaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTerm {
    /// The election's name.
    pub election: String,
    /// The store's key for this candidate.
    pub key: String,
    /// The revision at which this candidate's key was created: it orders
    /// terms (a later term has a greater revision), so it fences a stale
    /// leader.
    pub revision: Revision,
    /// The lease that holds the term.
    pub lease: LeaseId,
}

/// Who leads an election now, as [`MetadataStore::leader`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The store's key for the leader's candidacy (deleting it deposes
    /// the leader).
    pub key: String,
    /// The value the leader campaigned (or last proclaimed) with.
    pub value: Vec<u8>,
    /// The revision at which its term began (see [`LeaderTerm::revision`]).
    pub revision: Revision,
    /// The lease that holds its term.
    pub lease: LeaseId,
}

/// A failed store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No endpoint of the store answered (down, unreachable, or no leader
    /// among its members). Check the endpoints and the store's health; the
    /// node keeps what it knows and retries.
    #[error("the metadata store is unavailable ({endpoints}): {source}")]
    Unavailable {
        /// The endpoints tried.
        endpoints: String,
        /// What the client said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The call did not finish within the request timeout.
    #[error("the metadata store did not answer within {0:?}")]
    Timeout(Duration),
    /// The lease does not exist (expired or revoked): keys and locks held
    /// with it are gone. Grant a new one.
    #[error("lease {0} does not exist (expired or revoked)")]
    LeaseGone(LeaseId),
    /// A key or value in the store is not what joerl wrote (written by
    /// hand, or by another program). The entry is skipped; fix or delete it.
    #[error("malformed entry {key:?} in the metadata store: {reason}")]
    Malformed {
        /// The key (lossily decoded if not UTF-8).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A watch asked for history the store has compacted away: read the
    /// current state again and watch from its revision.
    #[error("revision {requested} is compacted (the oldest kept is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision the store still has.
        compacted: Revision,
    },
    /// A watch's reader fell more than [`WATCH_BUFFER`] events behind.
    #[error(
        "the watch reader fell {WATCH_BUFFER} events behind; watch again from the last revision seen"
    )]
    WatchLagged,
    /// The store refused the call (permission, a limit such as the
    /// number of operations per transaction, a bad argument).
    #[error("the metadata store refused the call: {0}")]
    Refused(String),
    /// The store answered with something this client did not expect.
    #[error("unexpected answer from the metadata store: {0}")]
    Protocol(String),
}

impl StoreError {
    /// The same error for another caller (the cause kept as text where it
    /// cannot be shared).
    pub fn copy(&self) -> StoreError {
        match self {
            StoreError::Unavailable { endpoints, source } => StoreError::Unavailable {
                endpoints: endpoints.clone(),
                source: source.to_string().into(),
            },
            StoreError::Timeout(d) => StoreError::Timeout(*d),
            StoreError::LeaseGone(l) => StoreError::LeaseGone(*l),
            StoreError::Malformed { key, reason } => StoreError::Malformed {
                key: key.clone(),
                reason: reason.clone(),
            },
            StoreError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested: *requested,
                compacted: *compacted,
            },
            StoreError::WatchLagged => StoreError::WatchLagged,
            StoreError::Refused(m) => StoreError::Refused(m.clone()),
            StoreError::Protocol(m) => StoreError::Protocol(m.clone()),
        }
    }

    /// True if the call may succeed when tried again (the store was
    /// unreachable or slow); false if trying again gives the same answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout(_)
        )
    }
}

/// A strongly consistent metadata store.
///
/// Consistency, as implemented by `etcd::EtcdStore` (and required of any
/// other implementation):
/// - `get`, `list`, `put`, `delete` and `compare_and_swap` are
///   linearizable: a read sees every write that finished before it began,
///   from any node.
/// - `compare_and_swap` is atomic: of two racing swaps with the same
///   expectation, exactly one succeeds.
/// - A watch delivers every change under its prefix after its start
///   revision, each once, in revision order, with no gaps (or ends with an
///   error: then read and watch again).
/// - A lease's keys vanish together, once the lease is revoked or its TTL
///   passes without a keep-alive; the store, not the client's clock,
///   decides expiry.
/// - A lock is held by at most one holder at a time; an election has at
///   most one leader at a time, and terms are ordered by revision.
pub trait MetadataStore: Send + Sync + 'static {
    /// The value of `key`, if it exists.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>>;

    /// Writes `value` at `key` (attached to `lease` if given; a key put
    /// without a lease stays until deleted). Returns the revision of the
    /// write.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Revision>;

    /// Deletes `key`; true if it existed.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;

    /// Writes `value` at `key` only if `expect` holds, atomically.
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, CasOutcome>;

    /// Creates each `(key, value)` that does not exist yet, each with its
    /// own outcome (in the order given): `Swapped` if created, `Conflict`
    /// with the existing entry if not. Each create is create-if-absent;
    /// the keys created are created together in one transaction (etcd:
    /// one round if none existed, a second for the rest if some did).
    /// The keys must differ; at most [`MAX_TXN_OPS`] of them and
    /// [`MAX_TXN_BYTES`] of keys and values (etcd's defaults), else
    /// [`StoreError::Refused`]. [`batch::Registrations`] packs single
    /// registrations into such calls.
    fn create_many<'a>(
        &'a self,
        items: &'a [(String, Vec<u8>)],
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Vec<CasOutcome>>;

    /// Every key under `prefix`, in key order, and the store's revision at
    /// the read (watch from the revision after it to miss nothing).
    /// Entries whose key is not UTF-8 are skipped with a logged warning.
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<Entry>, Revision)>;

    /// Grants a lease of `ttl` (whole seconds, at least 1; the store may
    /// raise it to its minimum).
    fn grant_lease(&self, ttl: Duration) -> StoreFuture<'_, LeaseId>;

    /// Renews `lease` once; returns the TTL it has again.
    /// [`StoreError::LeaseGone`] if it expired or was revoked.
    fn keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, Duration>;

    /// Revokes `lease`: its keys, locks and terms end now.
    fn revoke_lease(&self, lease: LeaseId) -> StoreFuture<'_, ()>;

    /// The changes under `prefix` after revision `after` (`None`: from now).
    fn watch<'a>(&'a self, prefix: &'a str, after: Option<Revision>) -> StoreFuture<'a, Watch>;

    /// Takes the lock `name`, waiting while another holder has it; held
    /// until [`MetadataStore::unlock`] or the end of `lease`.
    fn lock<'a>(&'a self, name: &'a str, lease: LeaseId) -> StoreFuture<'a, LockKey>;

    /// Releases a lock taken with [`MetadataStore::lock`].
    fn unlock<'a>(&'a self, lock: &'a LockKey) -> StoreFuture<'a, ()>;

    /// Campaigns in election `name` with `value`, waiting until this
    /// candidate leads; the term lasts until [`MetadataStore::resign`] or
    /// the end of `lease`.
    fn campaign<'a>(
        &'a self,
        name: &'a str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> StoreFuture<'a, LeaderTerm>;

    /// Changes the leader's value without a new election (only the
    /// holder of `term` may; a term that ended gives an error).
    fn proclaim<'a>(&'a self, term: &'a LeaderTerm, value: Vec<u8>) -> StoreFuture<'a, ()>;

    /// Who leads election `name` now (`None`: nobody).
    fn leader<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<LeaderInfo>>;

    /// Ends `term`: the next candidate takes over.
    fn resign<'a>(&'a self, term: &'a LeaderTerm) -> StoreFuture<'a, ()>;
}

/// Checks a [`MetadataStore::create_many`] batch against the limits and
/// for repeated keys (for implementations).
pub fn check_batch(items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
    if items.len() > MAX_TXN_OPS {
        return Err(StoreError::Refused(format!(
            "{} operations in one transaction; at most {MAX_TXN_OPS}",
            items.len()
        )));
    }
    let bytes: usize = items
        .iter()
        .map(|(k, v)| k.len() + v.len() + TXN_OP_OVERHEAD)
        .sum();
    if bytes > MAX_TXN_BYTES {
        return Err(StoreError::Refused(format!(
            "{bytes} bytes in one transaction; at most {MAX_TXN_BYTES}"
        )));
    }
    let mut keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(StoreError::Refused(format!(
            "key {:?} twice in one transaction",
            w[0]
        )));
    }
    Ok(())
}

/// The pause before attempt `attempt + 1` of a store call that runs until
/// it succeeds (a campaign, a listing to follow): `initial` doubling per
/// attempt up to `max`, the upper half of it drawn at random (so retries
/// of many nodes spread out, and none comes back at once).
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let cap = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    cap / 2 + cap.mul_f64(rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_keeps_to_the_upper_half() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for (attempt, cap) in [
            (0, 100),
            (1, 200),
            (3, 800),
            (4, 1600),
            (5, 2000),
            (40, 2000),
        ] {
            let cap = Duration::from_millis(cap);
            for _ in 0..100 {
                let p = backoff(attempt, i, m);
                assert!(
                    p >= cap / 2 && p <= cap,
                    "attempt {attempt}: {p:?} of {cap:?}"
                );
            }
        }
    }
}
