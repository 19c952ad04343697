//! Placement through a metadata store: who runs an identity is what the
//! store says, not what each node's membership view computes.
//!
//! With a [`StorePlacement`] (see [`start_with_store`](super::start_with_store)),
//! the owner of `(kind, id)` is the node named by its assignment under the
//! store's prefix ([`assignments`](crate::cluster::store::assignments)):
//!
//! - **One activation per identity by a transaction.** Before an
//!   activation's actor starts, its node creates the assignment if absent
//!   (batched, [`Registrations`]): the node whose create wins runs it; any
//!   other forwards what came to the winner. Membership views may differ
//!   (a partition of the membership, a node that has not heard of a join):
//!   the store does not.
//! - **Assignments live with their owner's lease.** Each node holds one
//!   lease (TTL [`StorePlacementOptions::lease_ttl`], renewed every third
//!   of it); its assignments are attached to it, so a dead node's
//!   assignments vanish when its lease runs out and the identities are
//!   placed again at their next message. The leader re-places the
//!   registered ones at once. A node that stops revokes its lease.
//! - **Sticky.** An assignment stays while its owner lives, also when the
//!   identity passivates and when members join: a new member takes new
//!   identities only. (The rendezvous choice decides only where an
//!   identity without an assignment is tried first.)
//! - **A location cache fed by a watch.** Every node follows the
//!   assignments ([`follow`]): routes come from that view with no store
//!   round trip, and a change of an identity's assignment drops its cached
//!   route and Pid (a new listing drops them all).
//! - **Degraded mode.** While the store does not answer, routes already
//!   known keep working (the view keeps its last state), a new placement
//!   falls back to the rendezvous choice and is marked provisional, a
//!   warning and [`ClusterEvent::MetadataStore`] say so, and the node's
//!   health is degraded. When the store answers again, every provisional
//!   activation (every activation, if the node's lease ran out meanwhile)
//!   registers again: the store's assignment wins, and an activation that
//!   lost hands off to the winner. An activation whose assignment ends
//!   while it runs (its node's lease ran out, the key was deleted) stops:
//!   another node may be given the identity now.
//! - **Not through the store yet**: a kind's `Migrate` state and the
//!   exactly-once deduplication window do not travel with a hand-off the
//!   store causes, and `migrate`/`drain` are refused.
//!
//! [`ClusterEvent::MetadataStore`]: crate::cluster::ClusterEvent::MetadataStore

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::handoff::{CLAIM_RETRY, Claimed};
use super::placements::{Phase, PlacementState};
use super::rendezvous::Identity;
use crate::DistributedSystem;
use crate::cluster::ClusterEvent;
use crate::cluster::store::assignments::{Assignment, assignment_key};
use crate::cluster::store::batch::{BatchLimits, BatchStats, Registrations};
use crate::cluster::store::follow::{FollowEvent, Following, follow};
use crate::cluster::store::retry::{RetryingStore, StoreReachability};
use crate::cluster::store::{CasOutcome, LeaseId, MetadataStore, StoreError};

/// The default prefix of placement's keys.
pub const DEFAULT_PREFIX: &str = "joerl/placement";

/// The default TTL of a node's placement lease.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// What [`StorePlacement::start`] may change.
#[derive(Debug, Clone)]
pub struct StorePlacementOptions {
    /// The key prefix of placement's keys (one per cluster: two clusters
    /// sharing a store use two prefixes): assignments under
    /// `PREFIX/assignments/`, the nodes holding a lease under
    /// `PREFIX/nodes/`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// The TTL of this node's lease: its assignments vanish this long
    /// after it dies. At least 1 s; default [`DEFAULT_LEASE_TTL`].
    pub lease_ttl: Duration,
    /// How registrations are batched.
    pub batch: BatchLimits,
}

impl Default for StorePlacementOptions {
    fn default() -> Self {
        StorePlacementOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
            batch: BatchLimits::default(),
        }
    }
}

/// What placement through the store did on this node.
#[derive(Debug, Default)]
pub struct StorePlacementStats {
    /// Claims decided through the store (an activation about to start).
    pub claims: AtomicU64,
    /// Assignments this node created.
    pub created: AtomicU64,
    /// Claims that found the identity assigned to another node (what came
    /// was forwarded there).
    pub moved: AtomicU64,
    /// Activations started provisionally (the store did not answer).
    pub provisional: AtomicU64,
    /// Provisional activations the store confirmed later.
    pub confirmed: AtomicU64,
    /// Local activations that lost their assignment: handed off to the
    /// node the store names (a reconciliation, a rewritten key), or
    /// stopped because it ended.
    pub lost: AtomicU64,
    /// Cached routes dropped because an assignment changed.
    pub invalidated: AtomicU64,
    /// Times the whole location cache was dropped after a new listing.
    pub resyncs: AtomicU64,
    /// Leases this node had to take again (its lease ran out while the
    /// store did not hear from it).
    pub new_leases: AtomicU64,
    /// Registered identities re-placed by this node as the leader after
    /// their assignment vanished.
    pub replaced: AtomicU64,
    /// Assignments found malformed when a claim read them.
    pub malformed: AtomicU64,
}

/// Why placement through the store did not start.
#[derive(Debug, thiserror::Error)]
pub enum StorePlacementError {
    /// The lease TTL is under a second (the store counts leases in
    /// seconds).
    #[error("the placement lease's TTL must be at least 1 s, not {0:?}")]
    Ttl(Duration),
    /// The store refused or did not answer the lease: check that it runs
    /// and that this node may reach it.
    #[error("the placement lease was not granted: {0}")]
    Lease(#[source] StoreError),
}

/// The lease this node's assignments are attached to, and the writer that
/// attaches them.
struct Held {
    lease: LeaseId,
    registrations: Registrations,
}

/// Placement through a metadata store on one node (see the module). Start
/// it with [`StorePlacement::start`] and pass it to
/// [`start_with_store`](super::start_with_store).
pub struct StorePlacement {
    store: RetryingStore,
    options: StorePlacementOptions,
    me: String,
    creation: u32,
    held: Mutex<Held>,
    /// What the registration writers (one per lease) did.
    batch_stats: Arc<BatchStats>,
    following: OnceLock<Following>,
    /// The nodes whose lease is alive (their presence keys).
    presence: OnceLock<Following>,
    /// Local activations started while the store did not answer.
    provisional: Mutex<HashSet<Identity>>,
    /// The node's lease ran out while the store was unreachable: every
    /// local activation registers again.
    lease_lost: AtomicBool,
    stats: StorePlacementStats,
    /// The placement state this one serves (set when placement starts).
    state: OnceLock<Weak<PlacementState>>,
    /// The node and the actor whose life is this one's
    /// ([`STORE_PLACEMENT`]): the tasks end when it stops.
    anchor: OnceLock<(joerl_core::WeakActorSystem, joerl_core::Pid)>,
}

/// The name of the actor that marks placement through the store on a node;
/// when it stops (the node shuts down), the node's lease is revoked.
pub const STORE_PLACEMENT: &str = "joerl_store_placement";

/// Marks placement through the store ([`STORE_PLACEMENT`]).
struct Anchor(Arc<StorePlacement>);

impl joerl_core::Actor for Anchor {
    async fn handle_message(
        &mut self,
        _msg: joerl_core::Message,
        _ctx: &mut joerl_core::ActorContext,
    ) {
    }

    async fn stopped(
        &mut self,
        _reason: &joerl_core::ExitReason,
        _ctx: &mut joerl_core::ActorContext,
    ) {
        let lease = self.0.held.lock().unwrap_or_else(|e| e.into_inner()).lease;
        let revoke = self.0.store.revoke_lease(lease);
        match tokio::time::timeout(Duration::from_secs(2), revoke).await {
            Ok(Ok(())) => {
                tracing::debug!("placement: lease revoked; this node's assignments are gone")
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "placement: lease not revoked; it runs out by itself")
            }
            Err(_) => tracing::debug!(
                "placement: the lease's revocation timed out; it runs out by itself"
            ),
        }
    }
}

impl std::fmt::Debug for StorePlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePlacement")
            .field("me", &self.me)
            .field("prefix", &self.options.prefix)
            .field("assignments", &self.assignments())
            .field("provisional", &self.provisional())
            .finish()
    }
}

/// How a claim through the store ended.
enum StoreClaim {
    /// Run it.
    Owner,
    /// Another node owns it: forward there.
    Moved(String),
    /// An earlier incarnation of this node holds it: wait for its lease.
    Wait,
    /// Do not run it.
    Refused(String),
}

impl StorePlacement {
    /// Takes this node's placement lease in `store` (through the retrying
    /// wrapper, whose reachability becomes the node's degraded mode).
    pub async fn start(
        node: &DistributedSystem,
        store: RetryingStore,
        options: StorePlacementOptions,
    ) -> Result<Arc<StorePlacement>, StorePlacementError> {
        if options.lease_ttl < Duration::from_secs(1) {
            return Err(StorePlacementError::Ttl(options.lease_ttl));
        }
        let lease = store
            .grant_lease(options.lease_ttl)
            .await
            .map_err(StorePlacementError::Lease)?;
        let batch_stats = Arc::new(BatchStats::default());
        let registrations = Registrations::start_counting(
            Arc::new(store.clone()),
            Some(lease),
            options.batch,
            batch_stats.clone(),
        );
        let me = Assignment {
            node: node.name().to_string(),
            creation: node.creation(),
        };
        store
            .put(
                &presence_key(&options.prefix, &me.node),
                me.encode(),
                Some(lease),
            )
            .await
            .map_err(StorePlacementError::Lease)?;
        Ok(Arc::new(StorePlacement {
            store,
            me: node.name().to_string(),
            creation: node.creation(),
            options,
            held: Mutex::new(Held {
                lease,
                registrations,
            }),
            batch_stats,
            following: OnceLock::new(),
            presence: OnceLock::new(),
            provisional: Mutex::default(),
            lease_lost: AtomicBool::new(false),
            stats: StorePlacementStats::default(),
            state: OnceLock::new(),
            anchor: OnceLock::new(),
        }))
    }

    /// The prefix placement's keys are under.
    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }

    /// The prefix the assignments are under (`PREFIX/assignments`).
    pub fn assignments_prefix(&self) -> String {
        assignments_prefix(&self.options.prefix)
    }

    /// True if `node` holds a placement lease in this node's view of the
    /// store (`None` before the first listing).
    pub fn is_present(&self, node: &str) -> Option<bool> {
        let p = self.presence.get()?;
        if p.resyncs() == 0 {
            return None;
        }
        Some(p.owner(PRESENCE_KIND, node).is_some_and(|a| a.node == node))
    }

    /// This node's counts.
    pub fn stats(&self) -> &StorePlacementStats {
        &self.stats
    }

    /// What this node's batched registrations did (transactions, the most
    /// operations in one, creates, conflicts).
    pub fn batch_stats(&self) -> &BatchStats {
        &self.batch_stats
    }

    /// Assignments in this node's view of the store.
    pub fn assignments(&self) -> usize {
        self.following.get().map_or(0, Following::len)
    }

    /// The owner of `(kind, id)` in this node's view of the store.
    pub fn owner(&self, kind: &str, id: &str) -> Option<Assignment> {
        self.following.get()?.owner(kind, id)
    }

    /// Local activations running provisionally now.
    pub fn provisional(&self) -> usize {
        self.lock_provisional().len()
    }

    /// True if `identity` runs here provisionally.
    pub fn is_provisional(&self, identity: &Identity) -> bool {
        self.lock_provisional().contains(identity)
    }

    /// True while the store does not answer.
    pub fn is_degraded(&self) -> bool {
        matches!(
            self.store.reachability(),
            StoreReachability::Unreachable { .. }
        )
    }

    /// Times this node listed the assignments (the first included).
    pub fn listings(&self) -> u64 {
        self.following.get().map_or(0, Following::resyncs)
    }

    /// The store, with its retries and reachability.
    pub fn store(&self) -> &RetryingStore {
        &self.store
    }

    fn lock_provisional(&self) -> std::sync::MutexGuard<'_, HashSet<Identity>> {
        self.provisional.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registrations(&self) -> Registrations {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .registrations
            .clone()
    }

    /// This node, as an assignment names it.
    fn me_assignment(&self) -> Assignment {
        Assignment {
            node: self.me.clone(),
            creation: self.creation,
        }
    }

    fn mine(&self, a: &Assignment) -> bool {
        a.node == self.me && a.creation == self.creation
    }

    fn key(&self, identity: &Identity) -> String {
        assignment_key(
            &assignments_prefix(&self.options.prefix),
            &identity.kind,
            &identity.id,
        )
    }

    /// The node `identity` is assigned to in the view, if any.
    pub(crate) fn assigned_node(&self, identity: &Identity) -> Option<String> {
        self.owner(&identity.kind, &identity.id).map(|a| a.node)
    }

    /// Creates `identity`'s assignment to this node unless it has one.
    async fn register(&self, identity: &Identity) -> Result<StoreClaim, StoreError> {
        let key = self.key(identity);
        let value = self.me_assignment().encode();
        match self.registrations().register(key.clone(), value).await? {
            CasOutcome::Swapped { .. } => {
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                Ok(StoreClaim::Owner)
            }
            CasOutcome::Conflict {
                current: Some(entry),
            } => match Assignment::decode(&key, &entry.value) {
                Ok(a) if self.mine(&a) => Ok(StoreClaim::Owner),
                Ok(a) if a.node == self.me => Ok(StoreClaim::Wait),
                Ok(a) => Ok(StoreClaim::Moved(a.node)),
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%identity, error = %e, "placement: the identity's assignment in the store is malformed; not activated");
                    Ok(StoreClaim::Refused(e.to_string()))
                }
            },
            // Gone between the create and its read: try again.
            CasOutcome::Conflict { current: None } => Ok(StoreClaim::Wait),
        }
    }

    /// Decides a claim of `identity` through the store (`preferred`: the
    /// rendezvous choice, for degraded mode).
    async fn decide(&self, identity: &Identity, preferred: Result<String, String>) -> StoreClaim {
        match self.owner(&identity.kind, &identity.id) {
            Some(a) if self.mine(&a) => return StoreClaim::Owner,
            Some(a) if a.node == self.me => return StoreClaim::Wait,
            Some(a) => return StoreClaim::Moved(a.node),
            None => {}
        }
        match self.register(identity).await {
            Ok(c) => c,
            // The writer's lease just ended (a new one is being taken), or
            // etcd gave up on a contended batch: again, with patience.
            Err(StoreError::LeaseGone(_) | StoreError::Protocol(_)) => StoreClaim::Wait,
            // One write without an answer does not mean the store is gone:
            // a read (with retries) decides, and only if it fails too is
            // the activation provisional.
            Err(e) if e.is_transient() && self.store.get(&self.key(identity)).await.is_ok() => {
                tracing::debug!(%identity, error = %e, "placement: a registration went unanswered; claiming again");
                StoreClaim::Wait
            }
            Err(e) if e.is_transient() => match preferred {
                Ok(p) if p == self.me => {
                    self.stats.provisional.fetch_add(1, Ordering::Relaxed);
                    self.lock_provisional().insert(identity.clone());
                    // One warning says degraded mode began (the
                    // reachability watcher); each identity is a debug line.
                    tracing::debug!(%identity, error = %e, "placement: the metadata store does not answer; activated provisionally");
                    StoreClaim::Owner
                }
                Ok(p) => StoreClaim::Moved(p),
                Err(reason) => StoreClaim::Refused(reason),
            },
            Err(e) => StoreClaim::Refused(e.to_string()),
        }
    }

    /// `identity`'s activation here ended.
    pub(crate) fn ended(&self, identity: &Identity) {
        self.lock_provisional().remove(identity);
    }

    /// Starts following the assignments and keeping the lease, for `state`.
    pub(crate) fn attach(
        self: &Arc<Self>,
        node: &DistributedSystem,
        state: &Arc<PlacementState>,
    ) -> Result<(), joerl_core::SpawnError> {
        let anchor = node.spawn_with(
            Anchor(self.clone()),
            joerl_core::SpawnOptions::new().name(STORE_PLACEMENT),
        )?;
        let _ = self.anchor.set(((**node).downgrade(), anchor));
        let _ = self.state.set(Arc::downgrade(state));
        let this = Arc::downgrade(self);
        // Nodes coming and going in the store change where identities
        // without an assignment are tried first.
        let weak = Arc::downgrade(state);
        let presence = follow(
            Arc::new(self.store.clone()),
            nodes_prefix(&self.options.prefix),
            move |_| {
                if let Some(state) = weak.upgrade() {
                    state.update(None);
                }
            },
        );
        let _ = self.presence.set(presence);
        let weak = Arc::downgrade(state);
        let following = follow(
            Arc::new(self.store.clone()),
            assignments_prefix(&self.options.prefix),
            move |event| {
                let (Some(state), Some(this)) = (weak.upgrade(), this.upgrade()) else {
                    return;
                };
                match event {
                    FollowEvent::Change(change) => {
                        use crate::cluster::store::assignments::AssignmentChange;
                        if state.assignment_changed(&change) {
                            this.stats.invalidated.fetch_add(1, Ordering::Relaxed);
                        }
                        let (identity, owner) = match change {
                            AssignmentChange::Assigned { kind, id, to, .. } => {
                                (Identity::new(kind, id), Some(to))
                            }
                            AssignmentChange::Released { kind, id, .. } => {
                                (Identity::new(kind, id), None)
                            }
                        };
                        match (state.local_phase(&identity), owner) {
                            // Assigned elsewhere while it runs here: the
                            // store's assignment wins.
                            (Some((Phase::Active, pid)), Some(to)) if !this.mine(&to) => {
                                this.stats.lost.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%identity, owner = %to.node, "placement: the store assigned a local activation's identity to another node; handing off");
                                state.hand_off_to(&identity, pid, to.node);
                            }
                            // Its assignment ended while it runs here (this
                            // node's lease ran out, or the key was deleted):
                            // another node may be given it now, so it stops;
                            // the next message places it again.
                            (Some((Phase::Active, pid)), None) => {
                                this.stats.lost.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%identity, "placement: a local activation's assignment ended in the store; stopped");
                                state.stop_activation(
                                    pid,
                                    "its assignment in the metadata store ended",
                                );
                            }
                            // A forwarder follows the store: to the new
                            // owner, or it claims again (its owner's
                            // assignment vanished, or names this node).
                            (Some((Phase::Forwarding, pid)), Some(to)) if !this.mine(&to) => {
                                state.hand_off_to(&identity, pid, to.node);
                            }
                            (Some((Phase::Forwarding, pid)), _) => state.reclaim(pid),
                            _ => {}
                        }
                        // Released: the leader places it again if it is
                        // registered.
                        if this.owner(&identity.kind, &identity.id).is_none()
                            && state.replace_if_leader(&identity)
                        {
                            this.stats.replaced.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    FollowEvent::Resynced { .. } => {
                        this.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        state.update(None);
                    }
                }
            },
        );
        let _ = self.following.set(following);
        tokio::spawn(keep_lease(self.clone()));
        tokio::spawn(watch_reachability(self.clone(), node.cluster().ok()));
        Ok(())
    }

    /// True while the node runs (and placement with it).
    fn running(&self) -> bool {
        self.anchor
            .get()
            .is_some_and(|(system, pid)| system.upgrade().is_some_and(|s| s.is_alive(*pid)))
    }

    /// Registers again the activations whose assignment is not known to
    /// be this node's (all of them if the lease was lost): confirmed, or
    /// handed off to the store's owner.
    async fn reconcile(self: &Arc<Self>) {
        let Some(state) = self.state.get().and_then(Weak::upgrade) else {
            return;
        };
        let all = self.lease_lost.swap(false, Ordering::AcqRel);
        let local = state.active_identities();
        let todo: Vec<(Identity, joerl_core::Pid)> = {
            let provisional = self.lock_provisional();
            local
                .into_iter()
                .filter(|(i, _)| all || provisional.contains(i))
                .collect()
        };
        if todo.is_empty() {
            return;
        }
        tracing::info!(
            activations = todo.len(),
            "placement: the metadata store answers again; reconciling"
        );
        let mut again = false;
        let mut calls = tokio::task::JoinSet::new();
        for (identity, pid) in todo {
            let this = self.clone();
            calls.spawn(async move {
                let got = this.register(&identity).await;
                (identity, pid, got)
            });
        }
        while let Some(done) = calls.join_next().await {
            let Ok((identity, pid, got)) = done else {
                continue;
            };
            match got {
                Ok(StoreClaim::Owner) => self.confirm(&identity),
                Ok(StoreClaim::Moved(owner)) => {
                    self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    self.lock_provisional().remove(&identity);
                    tracing::warn!(%identity, %owner, "placement: the store assigned the identity to another node; handing off");
                    state.hand_off_to(&identity, pid, owner);
                }
                // Malformed (logged and counted by `register`), no answer,
                // or not decided yet: it stays to be reconciled.
                Ok(StoreClaim::Refused(_) | StoreClaim::Wait) | Err(_) => {
                    again = true;
                    self.lock_provisional().insert(identity);
                }
            }
        }
        if again {
            tracing::debug!("placement: some activations are reconciled later");
        }
    }

    fn confirm(&self, identity: &Identity) {
        if self.lock_provisional().remove(identity) {
            self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The kind under which nodes' presence keys are kept (`PREFIX/nodes/node/NAME`).
const PRESENCE_KIND: &str = "node";

fn assignments_prefix(prefix: &str) -> String {
    format!("{prefix}/assignments")
}

fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}/nodes")
}

/// The key that says `node` holds a lease: its value is an [`Assignment`]
/// of the node to itself, attached to its lease.
fn presence_key(prefix: &str, node: &str) -> String {
    assignment_key(&nodes_prefix(prefix), PRESENCE_KIND, node)
}

/// Decides a claim of `identity` for the activation about to run it (see
/// [`handoff`](super::handoff)'s embedded claim for the other mode).
pub(crate) async fn claim(
    state: &Weak<PlacementState>,
    store: &Arc<StorePlacement>,
    identity: &Identity,
) -> Claimed {
    store.stats.claims.fetch_add(1, Ordering::Relaxed);
    // An earlier incarnation's assignment vanishes with its lease; a busy
    // store or a new lease answers within it too.
    let patience = tokio::time::Instant::now() + store.options.lease_ttl * 3;
    loop {
        let preferred = match state.upgrade() {
            // Placement is starting: the store's part is attached next.
            Some(_) if store.anchor.get().is_none() => {
                if tokio::time::Instant::now() >= patience {
                    return Claimed::Refused("placement through the store did not start".into());
                }
                tokio::time::sleep(CLAIM_RETRY).await;
                continue;
            }
            Some(s) if store.running() => s.preferred_owner(identity),
            _ => return Claimed::Refused("placement stopped".into()),
        };
        match store.decide(identity, preferred).await {
            StoreClaim::Owner => return Claimed::Owner(None),
            StoreClaim::Moved(to) => {
                store.stats.moved.fetch_add(1, Ordering::Relaxed);
                return Claimed::Moved(to, None);
            }
            StoreClaim::Refused(reason) => return Claimed::Refused(reason),
            StoreClaim::Wait if tokio::time::Instant::now() < patience => {
                tokio::time::sleep(CLAIM_RETRY).await;
            }
            StoreClaim::Wait => {
                return Claimed::Refused(
                    "no decision from the store within three lease TTLs (an earlier incarnation of this node holds the identity's assignment, or the store stays busy)"
                        .into(),
                );
            }
        }
    }
}

/// Renews the node's lease every third of its TTL, each renewal bounded by
/// that; takes a new one if it ran out (then `tend`, which it starts,
/// registers every activation again).
async fn keep_lease(this: Arc<StorePlacement>) {
    let every = this.options.lease_ttl / 3;
    tokio::spawn(tend(this.clone()));
    while this.running() {
        tokio::time::sleep(every).await;
        if !this.running() {
            break;
        }
        let lease = this.held.lock().unwrap_or_else(|e| e.into_inner()).lease;
        // A renewal that hangs must not hold the next one back past the
        // lease's end.
        let renewed = match tokio::time::timeout(every, this.store.keep_alive(lease)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(every)),
        };
        match renewed {
            Ok(_) => {}
            Err(StoreError::LeaseGone(_)) => {
                tracing::warn!(
                    "placement: this node's lease ran out; taking a new one and registering its activations again"
                );
                match this.store.grant_lease(this.options.lease_ttl).await {
                    Ok(lease) => {
                        let me = this.me_assignment();
                        let key = presence_key(&this.options.prefix, &this.me);
                        if let Err(e) = this.store.put(&key, me.encode(), Some(lease)).await {
                            tracing::debug!(error = %e, "placement: presence not written yet");
                            let _ = this.store.revoke_lease(lease).await;
                            continue;
                        }
                        let registrations = Registrations::start_counting(
                            Arc::new(this.store.clone()),
                            Some(lease),
                            this.options.batch,
                            this.batch_stats.clone(),
                        );
                        *this.held.lock().unwrap_or_else(|e| e.into_inner()) = Held {
                            lease,
                            registrations,
                        };
                        this.stats.new_leases.fetch_add(1, Ordering::Relaxed);
                        this.lease_lost.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "placement: no new lease yet");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "placement: lease not renewed; again soon");
                continue;
            }
        }
    }
}

/// Beside the renewals, every third of the TTL: reconciles what is
/// provisional (everything after a new lease), and sweeps what a missed
/// event may have left: registered identities without an assignment (the
/// leader places them), forwarders whose target's assignment vanished, and
/// activations running here whose assignment the view does not have.
async fn tend(this: Arc<StorePlacement>) {
    let every = this.options.lease_ttl / 3;
    while this.running() {
        tokio::time::sleep(every).await;
        let Some(state) = this.state.get().and_then(Weak::upgrade) else {
            continue;
        };
        // Running here for a while with no assignment in the view (its
        // claim won on a lease that ended before it ran): registered again.
        let settled = std::time::SystemTime::now() - this.options.lease_ttl;
        for (identity, _) in state.active_identities_since(settled) {
            if this.owner(&identity.kind, &identity.id).is_none() {
                this.lock_provisional().insert(identity);
            }
        }
        if this.lease_lost.load(Ordering::Acquire) || this.provisional() > 0 {
            this.reconcile().await;
        }
        let n = state.replace_unassigned();
        this.stats.replaced.fetch_add(n, Ordering::Relaxed);
        state.reclaim_stale_forwarders();
    }
}

/// Tells the node's subscribers and log when the store stops or starts
/// answering, and reconciles when it answers again.
async fn watch_reachability(this: Arc<StorePlacement>, cluster: Option<crate::cluster::Cluster>) {
    let mut changes = this.store.subscribe();
    while this.running() {
        let changed = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        match changed {
            Err(_) => continue,
            Ok(Err(_)) => break,
            Ok(Ok(())) => {}
        }
        let now = changes.borrow_and_update().clone();
        let event = match &now {
            StoreReachability::Reachable => {
                tracing::info!("placement: the metadata store answers again");
                ClusterEvent::MetadataStore {
                    reachable: true,
                    error: None,
                }
            }
            StoreReachability::Unreachable { error, .. } => {
                tracing::warn!(%error, "placement: the metadata store does not answer; degraded mode (known routes keep working, new placements are provisional)");
                ClusterEvent::MetadataStore {
                    reachable: false,
                    error: Some(error.clone()),
                }
            }
        };
        if let Some(c) = &cluster {
            c.publish(event);
        }
        if now == StoreReachability::Reachable {
            this.reconcile().await;
        }
    }
}
