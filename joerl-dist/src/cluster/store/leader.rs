//! Leader election through the metadata store: the [`LeaderElection`] seam
//! of placement on a store's election (etcd's `campaign`/`observe`/`resign`
//! recipe), instead of the embedded lowest-member rule.
//!
//! Every node that takes part campaigns with its name under one election
//! key, holding a lease of `ttl` (default 5 s) that it renews every third
//! of it. The store elects one candidate at a time; a term's epoch is the
//! store revision at which its candidate's key was created, so a later term
//! always has a greater epoch.
//!
//! **Fencing by lease and revision**: a leader counts itself leader only
//! while its lease is surely alive: until the time it *sent* its last
//! successful renewal plus the TTL that renewal returned, minus a margin
//! (a tenth of the TTL, at least 200 ms). The store expires the lease no
//! earlier than that renewal's *arrival* plus the TTL, and elects the next
//! candidate only then, so the old leader stops acting before the new one
//! starts, whatever the network or a paused process does. Members accept a
//! command only from the leader they last read from the store, at its
//! epoch ([`LeaderElection::accepts`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use joerl_core::{Actor, ActorContext, Message, Pid, SpawnOptions, WeakActorSystem};
use tokio::time::Instant;

use super::{LeaderTerm, LeaseId, MetadataStore, StoreError};
use crate::DistributedSystem;
use crate::cluster::ClusterEvent;
use crate::cluster::placement::{Leader, LeaderElection};

/// The name of the actor that marks a running store election on a node
/// (its tasks end when it does, e.g. when the node shuts down).
pub const STORE_LEADER: &str = "joerl_store_leader";

/// How the store election runs.
#[derive(Debug, Clone)]
pub struct StoreLeaderOptions {
    /// The election's key in the store (default `joerl/leader`; one per
    /// cluster sharing a store).
    pub election: String,
    /// The lease a term holds (whole seconds; default 5 s). A dead
    /// leader is replaced after at most this (plus the store's own
    /// election).
    pub ttl: Duration,
    /// How often a node reads who leads (default 250 ms): how late a
    /// member learns of a new leader, at most.
    pub poll: Duration,
}

impl Default for StoreLeaderOptions {
    fn default() -> Self {
        StoreLeaderOptions {
            election: "joerl/leader".into(),
            ttl: Duration::from_secs(5),
            poll: Duration::from_millis(250),
        }
    }
}

impl StoreLeaderOptions {
    /// The time a leader stops counting itself leader before its lease
    /// could expire.
    fn margin(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_millis(200))
    }
}

/// This node's term, while it has one.
#[derive(Debug, Clone)]
struct Term {
    term: LeaderTerm,
}

#[derive(Debug, Default)]
struct State {
    /// Who leads, as last read from the store (or as won).
    observed: Option<Leader>,
    /// The key of the observed leader's candidacy (to depose it).
    observed_key: Option<String>,
    /// This node's term.
    term: Option<Term>,
    /// The lease this node campaigns with, and until when it is surely
    /// alive.
    lease: Option<(LeaseId, Instant)>,
    /// The last leader published as `LeaderChanged`.
    published: Option<Option<Leader>>,
    /// The last malformed candidacy logged.
    warned: Option<String>,
}

struct Shared {
    me: String,
    store: Arc<dyn MetadataStore>,
    options: StoreLeaderOptions,
    state: Mutex<State>,
    /// Asks the campaign to resign this node's term.
    resign: tokio::sync::Notify,
    /// Tells the campaign its lease or its term is lost.
    lost: tokio::sync::Notify,
    system: WeakActorSystem,
    anchor: Pid,
    cluster: Option<crate::cluster::Cluster>,
    stats: StoreLeaderStats,
}

/// Counts of a store election on one node.
#[derive(Debug, Default)]
pub struct StoreLeaderStats {
    /// Terms this node won.
    pub terms_won: std::sync::atomic::AtomicU64,
    /// Terms this node ended because its lease could not be renewed in
    /// time (fenced before the store expired it).
    pub terms_lapsed: std::sync::atomic::AtomicU64,
    /// Store calls that failed (each retried).
    pub store_errors: std::sync::atomic::AtomicU64,
    /// Reads that found a candidacy no node made at the head of the
    /// election (see [`StoreError::Malformed`] in the log).
    pub malformed: std::sync::atomic::AtomicU64,
}

/// Why the election's head is not a node's candidacy, if it is not.
fn malformed(i: &super::LeaderInfo) -> Option<&'static str> {
    if i.lease.0 == 0 {
        Some("a key without a lease (written by hand?)")
    } else if i.value.is_empty() || std::str::from_utf8(&i.value).is_err() {
        Some("its value is not a node name")
    } else {
        None
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> bool {
        self.system
            .upgrade()
            .is_some_and(|s| s.is_alive(self.anchor))
    }

    /// The leader this node accepts now (see the module's fencing rule).
    fn current(&self, s: &State) -> Option<Leader> {
        let observed = s.observed.clone()?;
        if observed.node != self.me {
            return Some(observed);
        }
        let term = s.term.as_ref()?;
        let (lease, until) = s.lease?;
        (term.term.lease == lease
            && observed.epoch == epoch_of(term.term.revision)
            && Instant::now() < until)
            .then_some(observed)
    }

    /// Publishes `LeaderChanged` if the accepted leader changed.
    fn publish_if_changed(&self) {
        let changed = {
            let mut s = self.lock();
            let now = self.current(&s);
            if s.published.as_ref() == Some(&now) {
                None
            } else {
                s.published = Some(now.clone());
                Some(now)
            }
        };
        if let Some(leader) = changed {
            tracing::info!(?leader, "placement: leader changed (store election)");
            if let Some(c) = &self.cluster {
                c.publish(ClusterEvent::LeaderChanged {
                    epoch: leader.as_ref().map_or(0, |l| l.epoch),
                    leader: leader.map(|l| l.node),
                });
            }
        }
    }

    /// A candidacy no node made heads the election: nobody leads until
    /// it is deleted. Logged once per key, counted every time seen.
    fn malformed(&self, key: &str, reason: &str) {
        self.stats
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.lock();
        if s.warned.as_deref() != Some(key) {
            s.warned = Some(key.to_string());
            let error = StoreError::Malformed {
                key: key.to_string(),
                reason: format!("{reason}; no node leads until it is deleted"),
            };
            tracing::error!(%error, "store election: the head of the election is not a node's candidacy");
        }
    }

    fn failed(&self, what: &str, error: &StoreError) {
        self.stats
            .store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%error, what, "store election: call failed; retrying");
    }
}

fn epoch_of(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

/// The store election of one node ([`LeaderElection`]). Cheap to clone.
#[derive(Clone)]
pub struct StoreLeader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StoreLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLeader")
            .field("me", &self.shared.me)
            .field("leader", &self.leader())
            .finish()
    }
}

/// Marks a running store election (see [`STORE_LEADER`]).
struct Anchor;

impl Actor for Anchor {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

/// Why the store election did not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreLeaderError {
    /// It runs already on this node ([`STORE_LEADER`] is taken).
    #[error("the store election cannot start: {0}")]
    Spawn(#[from] joerl_core::SpawnError),
    /// The TTL is under a second (the store counts leases in seconds).
    #[error("the election's TTL must be at least 1 s, not {0:?}")]
    Ttl(Duration),
}

impl StoreLeader {
    /// Starts this node's part in the election `options.election` of
    /// `store`: it campaigns at once and keeps campaigning while the node
    /// runs. `LeaderChanged` goes to the cluster's subscribers if
    /// clustering is enabled. Pass it to
    /// [`placement::start_with`](crate::cluster::placement::start_with).
    pub fn start(
        node: &DistributedSystem,
        store: Arc<dyn MetadataStore>,
        options: StoreLeaderOptions,
    ) -> Result<StoreLeader, StoreLeaderError> {
        if options.ttl < Duration::from_secs(1) {
            return Err(StoreLeaderError::Ttl(options.ttl));
        }
        let anchor = node.spawn_with(Anchor, SpawnOptions::new().name(STORE_LEADER))?;
        let shared = Arc::new(Shared {
            me: node.name().to_string(),
            store,
            options,
            state: Mutex::default(),
            resign: tokio::sync::Notify::new(),
            lost: tokio::sync::Notify::new(),
            system: (**node).downgrade(),
            anchor,
            cluster: node.cluster().ok(),
            stats: StoreLeaderStats::default(),
        });
        tokio::spawn(campaign(shared.clone()));
        tokio::spawn(observe(shared.clone()));
        Ok(StoreLeader { shared })
    }

    /// True if this node leads now (and its lease is surely alive).
    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|l| l.node == self.shared.me)
    }

    /// This node's counts.
    pub fn stats(&self) -> &StoreLeaderStats {
        &self.shared.stats
    }

    /// Ends this node's part: resigns its term (if it has one) and revokes
    /// its lease, so the next candidate takes over at once.
    pub async fn stop(&self) {
        let lease = {
            let mut s = self.shared.lock();
            s.term = None;
            s.lease.take()
        };
        if let Some(system) = self.shared.system.upgrade() {
            let _ = system.exit(self.shared.anchor, joerl_core::ExitReason::Shutdown);
        }
        if let Some((lease, _)) = lease {
            let _ = self.shared.store.revoke_lease(lease).await;
        }
        self.shared.lost.notify_one();
        self.shared.publish_if_changed();
    }
}

impl LeaderElection for StoreLeader {
    fn leader(&self) -> Option<Leader> {
        let s = self.shared.lock();
        self.shared.current(&s)
    }

    /// The leader resigns (if this node leads), or this node deposes the
    /// leader it sees by deleting its candidacy (the store then elects the
    /// next candidate, which may be the same node campaigning again).
    fn force_election(&self) {
        if self.is_leader() {
            self.shared.resign.notify_one();
            return;
        }
        let key = self.shared.lock().observed_key.clone();
        if let Some(key) = key {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.store.delete(&key).await {
                    shared.failed("depose", &e);
                }
            });
        }
    }

    fn accepts(&self, node: &str, epoch: u64) -> bool {
        self.leader()
            .is_some_and(|l| l.node == node && l.epoch == epoch)
    }
}

/// Backoff after a failed store call: 100 ms doubling to 2 s, with jitter.
fn backoff(attempt: u32) -> Duration {
    super::backoff(attempt, Duration::from_millis(100), Duration::from_secs(2))
}

/// Grants leases, renews them, campaigns, and holds terms, while the node
/// runs.
async fn campaign(shared: Arc<Shared>) {
    let ttl = shared.options.ttl;
    let margin = shared.options.margin();
    let mut attempt = 0u32;
    while shared.running() {
        let sent = Instant::now();
        let lease = match shared.store.grant_lease(ttl).await {
            Ok(l) => l,
            Err(e) => {
                shared.failed("grant a lease", &e);
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        shared.lock().lease = Some((lease, sent + ttl.saturating_sub(margin)));
        let keeper = tokio::spawn(keep_alive(shared.clone(), lease));
        let name = shared.options.election.clone();
        let won = tokio::select! {
            t = shared.store.campaign(&name, shared.me.clone().into_bytes(), lease) => Some(t),
            _ = shared.lost.notified() => None,
        };
        match won {
            Some(Ok(term)) => {
                attempt = 0;
                shared
                    .stats
                    .terms_won
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                {
                    let mut s = shared.lock();
                    s.observed = Some(Leader {
                        node: shared.me.clone(),
                        epoch: epoch_of(term.revision),
                    });
                    s.observed_key = Some(term.key.clone());
                    s.term = Some(Term { term: term.clone() });
                }
                shared.publish_if_changed();
                tokio::select! {
                    _ = shared.lost.notified() => {}
                    _ = shared.resign.notified() => {
                        if let Err(e) = shared.store.resign(&term).await {
                            shared.failed("resign", &e);
                        }
                    }
                }
            }
            Some(Err(e)) => {
                shared.failed("campaign", &e);
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            None => {}
        }
        keeper.abort();
        {
            let mut s = shared.lock();
            s.term = None;
            if s.lease.is_some_and(|(l, _)| l == lease) {
                s.lease = None;
            }
        }
        shared.publish_if_changed();
        // Best effort: a lease that lapsed here may still be alive in the
        // store; revoking it lets the next candidate in at once.
        let _ = shared.store.revoke_lease(lease).await;
    }
}

/// Renews `lease` every third of the TTL; says when it is lost (gone, or
/// not surely alive any more).
async fn keep_alive(shared: Arc<Shared>, lease: LeaseId) {
    let ttl = shared.options.ttl;
    let margin = shared.options.margin();
    let until = |shared: &Shared| {
        shared
            .lock()
            .lease
            .filter(|(l, _)| *l == lease)
            .map_or_else(Instant::now, |(_, u)| u)
    };
    loop {
        // Wakes for the next renewal, or when the lease stops being surely
        // alive (a renewal that hangs must not keep this node leading).
        let lapsed = tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => false,
            _ = tokio::time::sleep_until(until(&shared)) => true,
        };
        if !shared.running() {
            // The node stops: the campaign revokes the lease.
            shared.lost.notify_one();
            return;
        }
        let sent = Instant::now();
        let renewed = if lapsed {
            None
        } else {
            tokio::select! {
                r = shared.store.keep_alive(lease) => Some(r),
                _ = tokio::time::sleep_until(until(&shared)) => None,
            }
        };
        match renewed {
            None => {}
            Some(Ok(left)) => {
                let mut s = shared.lock();
                if let Some((l, until)) = &mut s.lease
                    && *l == lease
                {
                    *until = (*until).max(sent + left.saturating_sub(margin));
                }
            }
            Some(Err(StoreError::LeaseGone(_))) => {
                tracing::warn!(%lease, "store election: the lease is gone; campaigning again");
                shared.lost.notify_one();
                return;
            }
            Some(Err(e)) => shared.failed("renew the lease", &e),
        }
        let lapsed = shared
            .lock()
            .lease
            .is_none_or(|(l, until)| l != lease || Instant::now() >= until);
        if lapsed {
            if shared.lock().term.is_some() {
                shared
                    .stats
                    .terms_lapsed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    %lease,
                    "store election: the lease could not be renewed in time; this node stops leading"
                );
            }
            shared.lost.notify_one();
            return;
        }
    }
}

/// Reads who leads every `poll`; deposes this node's own term if the store
/// says someone else leads; publishes changes.
async fn observe(shared: Arc<Shared>) {
    let name = shared.options.election.clone();
    while shared.running() {
        match shared.store.leader(&name).await {
            Ok(info) => {
                // The head of the election's queue must be a candidacy a
                // node made: a lease, and a node name for its value.
                let info = info.filter(|i| match malformed(i) {
                    None => true,
                    Some(reason) => {
                        shared.malformed(&i.key, reason);
                        false
                    }
                });
                let observed = info.as_ref().map(|i| Leader {
                    node: String::from_utf8_lossy(&i.value).into_owned(),
                    epoch: epoch_of(i.revision),
                });
                let deposed = {
                    let mut s = shared.lock();
                    s.observed_key = info.map(|i| i.key);
                    s.observed = observed.clone();
                    s.term.as_ref().is_some_and(|t| {
                        observed.as_ref().is_none_or(|o| {
                            o.node != shared.me || o.epoch != epoch_of(t.term.revision)
                        })
                    })
                };
                if deposed {
                    shared.lost.notify_one();
                }
            }
            Err(e) => shared.failed("read the leader", &e),
        }
        // A lapsed lease changes what `current` says without an event.
        shared.publish_if_changed();
        tokio::time::sleep(shared.options.poll).await;
    }
    shared.publish_if_changed();
}
