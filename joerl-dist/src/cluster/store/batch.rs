//! Batched registration: single create-if-absent writes queue up and go to
//! the store in transactions of at most [`MAX_TXN_OPS`] operations and
//! [`MAX_TXN_BYTES`] (etcd's default limits), flushed when a batch is full
//! or a short interval after its first registration; each caller learns
//! its own outcome.
//!
//! [`BatchQueue`] is the packing, with no I/O; [`Registrations`] drives it
//! against a [`MetadataStore`] (one transaction in flight at a time: what
//! arrives meanwhile forms the next batch, as a database's group commit
//! does).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{
    CasOutcome, LeaseId, MAX_TXN_BYTES, MAX_TXN_OPS, MetadataStore, StoreError, TXN_OP_OVERHEAD,
};

/// How registrations are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Operations per transaction (at most [`MAX_TXN_OPS`]).
    pub max_ops: usize,
    /// Bytes of keys and values per transaction, counting
    /// [`TXN_OP_OVERHEAD`] per operation (at most [`MAX_TXN_BYTES`]).
    pub max_bytes: usize,
    /// How long the first registration of a batch waits for others
    /// (default 2 ms).
    pub interval: Duration,
    /// Registrations that may wait at once (default 100,000); past it,
    /// [`StoreError::Refused`] at once.
    pub max_queued: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_ops: MAX_TXN_OPS,
            max_bytes: MAX_TXN_BYTES,
            interval: Duration::from_millis(2),
            max_queued: 100_000,
        }
    }
}

/// One queued registration.
#[derive(Debug)]
struct Pending<T> {
    key: String,
    value: Vec<u8>,
    waiter: T,
}

impl<T> Pending<T> {
    fn size(&self) -> usize {
        self.key.len() + self.value.len() + TXN_OP_OVERHEAD
    }
}

/// Registrations waiting for a transaction, in arrival order (no I/O).
#[derive(Debug)]
pub struct BatchQueue<T> {
    queue: VecDeque<Pending<T>>,
    bytes: usize,
    limits: BatchLimits,
}

impl<T> BatchQueue<T> {
    /// An empty queue with `limits` (clamped to etcd's).
    pub fn new(mut limits: BatchLimits) -> BatchQueue<T> {
        limits.max_ops = limits.max_ops.clamp(1, MAX_TXN_OPS);
        limits.max_bytes = limits.max_bytes.min(MAX_TXN_BYTES);
        BatchQueue {
            queue: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// Queues a registration; gives `waiter` back with the reason if it
    /// can never fit a transaction or the queue is full.
    pub fn push(&mut self, key: String, value: Vec<u8>, waiter: T) -> Result<(), (StoreError, T)> {
        let p = Pending { key, value, waiter };
        if p.size() > self.limits.max_bytes {
            let e = StoreError::Refused(format!(
                "registration of {:?} is {} bytes; a transaction holds at most {}",
                p.key,
                p.size(),
                self.limits.max_bytes
            ));
            return Err((e, p.waiter));
        }
        if self.queue.len() >= self.limits.max_queued {
            let e = StoreError::Refused(format!(
                "{} registrations wait already (the limit)",
                self.queue.len()
            ));
            return Err((e, p.waiter));
        }
        self.bytes += p.size();
        self.queue.push_back(p);
        Ok(())
    }

    /// Registrations waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True if what waits fills a transaction (no reason to wait longer).
    pub fn full(&self) -> bool {
        self.queue.len() >= self.limits.max_ops || self.bytes >= self.limits.max_bytes
    }

    /// The next transaction's registrations: from the front, in order,
    /// within both limits, each key once (a later registration of a key
    /// already in the batch stays queued, in its place, for the next one).
    /// Stops at the first registration that would pass the byte limit.
    pub fn take(&mut self) -> Vec<(String, Vec<u8>, T)> {
        let mut out = Vec::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut bytes = 0;
        let mut kept = VecDeque::new();
        while let Some(p) = self.queue.pop_front() {
            if out.len() >= self.limits.max_ops || bytes + p.size() > self.limits.max_bytes {
                self.queue.push_front(p);
                break;
            }
            if !keys.insert(p.key.clone()) {
                kept.push_back(p);
                continue;
            }
            bytes += p.size();
            self.bytes -= p.size();
            out.push((p.key, p.value, p.waiter));
        }
        while let Some(p) = kept.pop_back() {
            self.queue.push_front(p);
        }
        out
    }
}

/// What [`Registrations`] did.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Transactions written.
    pub txns: AtomicU64,
    /// The most operations one of them held.
    pub ops_max: AtomicU64,
    /// The most bytes (as counted toward the limit) one of them held.
    pub bytes_max: AtomicU64,
    /// Keys created.
    pub created: AtomicU64,
    /// Registrations that found their key taken.
    pub conflicts: AtomicU64,
    /// Registrations whose transaction failed.
    pub failed: AtomicU64,
}

type Reply = oneshot::Sender<Result<CasOutcome, StoreError>>;

struct Request {
    key: String,
    value: Vec<u8>,
    reply: Reply,
}

/// Batched create-if-absent registrations into a store. Cheap to clone;
/// the writer ends when every clone is gone.
#[derive(Clone)]
pub struct Registrations {
    tx: mpsc::UnboundedSender<Request>,
    waiting: Arc<AtomicUsize>,
    limits: BatchLimits,
    stats: Arc<BatchStats>,
}

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrations")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .field("limits", &self.limits)
            .finish()
    }
}

impl Registrations {
    /// Starts the writer: registrations go to `store`, attached to
    /// `lease` if given (a node's assignments vanish with its lease).
    pub fn start(
        store: Arc<dyn MetadataStore>,
        lease: Option<LeaseId>,
        limits: BatchLimits,
    ) -> Registrations {
        Self::start_counting(store, lease, limits, Arc::default())
    }

    /// [`Registrations::start`], counting into `stats` (shared with an
    /// earlier writer, when one replaces another).
    pub fn start_counting(
        store: Arc<dyn MetadataStore>,
        lease: Option<LeaseId>,
        limits: BatchLimits,
        stats: Arc<BatchStats>,
    ) -> Registrations {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write(
            store,
            lease,
            BatchQueue::new(limits),
            rx,
            stats.clone(),
            limits.interval,
        ));
        Registrations {
            tx,
            waiting,
            limits,
            stats,
        }
    }

    /// Creates `key` with `value` unless it exists: `Swapped` if this
    /// call created it, `Conflict` with the entry that was there if not.
    pub async fn register(&self, key: String, value: Vec<u8>) -> Result<CasOutcome, StoreError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.limits.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Refused(format!(
                "{} registrations wait already (the limit)",
                self.limits.max_queued
            )));
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Request { key, value, reply });
        let got = match sent {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(StoreError::Protocol("the registration writer ended".into()))
            }),
            Err(_) => Err(StoreError::Protocol("the registration writer ended".into())),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        got
    }

    /// What the writer did.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

/// The writer: one transaction at a time.
async fn write(
    store: Arc<dyn MetadataStore>,
    lease: Option<LeaseId>,
    mut queue: BatchQueue<Reply>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<BatchStats>,
    interval: Duration,
) {
    let push = |queue: &mut BatchQueue<Reply>, r: Request| {
        if let Err((e, reply)) = queue.push(r.key, r.value, r.reply) {
            let _ = reply.send(Err(e));
        }
    };
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(r) => push(&mut queue, r),
                None => return,
            }
        }
        // Gather what comes within the interval, or until a batch is full.
        let deadline = tokio::time::Instant::now() + interval;
        while !queue.full() {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => push(&mut queue, r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        while !queue.full() {
            match rx.try_recv() {
                Ok(r) => push(&mut queue, r),
                Err(_) => break,
            }
        }
        let batch = queue.take();
        if batch.is_empty() {
            continue;
        }
        let (items, replies): (Vec<(String, Vec<u8>)>, Vec<Reply>) =
            batch.into_iter().map(|(k, v, r)| ((k, v), r)).unzip();
        let bytes: usize = items
            .iter()
            .map(|(k, v)| k.len() + v.len() + TXN_OP_OVERHEAD)
            .sum();
        stats.txns.fetch_add(1, Ordering::Relaxed);
        stats
            .ops_max
            .fetch_max(items.len() as u64, Ordering::Relaxed);
        stats.bytes_max.fetch_max(bytes as u64, Ordering::Relaxed);
        match store.create_many(&items, lease).await {
            Ok(outcomes) => {
                for (o, reply) in outcomes.into_iter().zip(replies) {
                    match &o {
                        CasOutcome::Swapped { .. } => stats.created.fetch_add(1, Ordering::Relaxed),
                        CasOutcome::Conflict { .. } => {
                            stats.conflicts.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    let _ = reply.send(Ok(o));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = items.len(), "metadata store: a registration batch failed");
                stats
                    .failed
                    .fetch_add(replies.len() as u64, Ordering::Relaxed);
                for reply in replies {
                    let _ = reply.send(Err(e.copy()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ops: usize, bytes: usize) -> BatchLimits {
        BatchLimits {
            max_ops: ops,
            max_bytes: bytes,
            interval: Duration::from_millis(2),
            max_queued: 1000,
        }
    }

    fn keys(b: &[(String, Vec<u8>, u32)]) -> Vec<u32> {
        b.iter().map(|(_, _, w)| *w).collect()
    }

    #[test]
    fn batches_keep_to_the_operation_limit_in_order() {
        let mut q = BatchQueue::new(limits(128, MAX_TXN_BYTES));
        for i in 0..300u32 {
            q.push(format!("k{i}"), vec![0; 10], i).unwrap();
        }
        assert!(q.full());
        let a = q.take();
        assert_eq!(keys(&a), (0..128).collect::<Vec<_>>());
        let b = q.take();
        assert_eq!(keys(&b), (128..256).collect::<Vec<_>>());
        assert!(!q.full());
        assert_eq!(keys(&q.take()), (256..300).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn batches_keep_to_the_byte_limit() {
        // 100 KiB values: 15 fit in 1.5 MiB less the margin, not 16.
        let mut q = BatchQueue::new(BatchLimits::default());
        for i in 0..40u32 {
            q.push(format!("big{i}"), vec![7; 100 * 1024], i).unwrap();
        }
        let mut seen = 0;
        while !q.is_empty() {
            let b = q.take();
            let bytes: usize = b
                .iter()
                .map(|(k, v, _)| k.len() + v.len() + TXN_OP_OVERHEAD)
                .sum();
            assert!(bytes <= MAX_TXN_BYTES, "{bytes}");
            assert_eq!(b.len(), 15.min(40 - seen));
            seen += b.len();
        }
        assert_eq!(seen, 40);
    }

    #[test]
    fn a_key_twice_goes_in_two_batches_in_order() {
        let mut q = BatchQueue::new(limits(128, MAX_TXN_BYTES));
        q.push("a".into(), vec![], 1).unwrap();
        q.push("b".into(), vec![], 2).unwrap();
        q.push("a".into(), vec![], 3).unwrap();
        q.push("c".into(), vec![], 4).unwrap();
        q.push("a".into(), vec![], 5).unwrap();
        assert_eq!(keys(&q.take()), [1, 2, 4]);
        assert_eq!(keys(&q.take()), [3]);
        assert_eq!(keys(&q.take()), [5]);
    }

    #[test]
    fn what_can_never_fit_and_a_full_queue_are_refused() {
        let mut q = BatchQueue::new(limits(128, 1000));
        let (e, w) = q.push("huge".into(), vec![0; 2000], 9).unwrap_err();
        assert_eq!(w, 9);
        assert!(matches!(e, StoreError::Refused(_)));
        let mut q = BatchQueue::new(BatchLimits {
            max_queued: 2,
            ..limits(128, 1000)
        });
        q.push("a".into(), vec![], 1).unwrap();
        q.push("b".into(), vec![], 2).unwrap();
        assert!(q.push("c".into(), vec![], 3).is_err());
    }
}
