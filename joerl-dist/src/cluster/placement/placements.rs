//! Actors by identity on one node: routing a [`Dest::Placed`] to its owner,
//! activating an identity on its owner at its first message, and giving up
//! the identities a membership change gave to another member.
//!
//! The owner of `(kind, id)` is the [`Rendezvous`] choice among the
//! `Active` members (this node included) of a healthy view: every node
//! computes it alike from its own membership view, so routing needs no
//! lookup. With a metadata store ([`stored`](super::stored)), the owner is
//! the identity's assignment there instead, and the rendezvous choice only
//! says where an identity without one is tried first. A message to an
//! identity travels as a send to the name
//! [`placed_name`] on the owner; the owner starts the activation when the
//! name is looked up and nothing holds it ([`NameService::activate`]). A
//! node without a healthy majority routes and activates nothing
//! ([`SendError::NotPlaced`]) and stops the activations it runs. A node that
//! stops owning an identity (a member joined, or came back) hands its
//! activation off.
//!
//! Before an activation's actor starts, its node claims the identity from
//! every other member ([`handoff`](super::handoff)): one activation per
//! identity while views differ, and what reaches an old owner after it
//! handed off is forwarded to the new one.
//!
//! The leader's [`directives`](super::directives) take part: drained
//! members are placed on no more, a pinned identity goes to its pin, and
//! registered identities are activated eagerly on their owner.
//!
//! Routes are kept in a location cache per view generation; once the
//! [`locator`](super::locator) learnt an activation's Pid, sends go to it
//! (calls and monitors stay by name), and a message that reaches a Pid
//! whose activation ended goes on to the identity's name.
//!
//! [`Dest::Placed`]: joerl_core::Dest::Placed
//! [`NameService::activate`]: joerl_core::NameService::activate

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::SystemTime;

use dashmap::DashMap;
use joerl_core::{Dest, ExitReason, Pid, PlacedRoute, SendError, SpawnOptions, WeakActorSystem};
use serde::{Deserialize, Serialize};

use super::delivery::{DedupWindow, DeliveryError, Guarantee, Sender};
use super::directives::{DirectiveError, Op, Table};
use super::handoff::{ClaimAnswer, ClaimServer, HandOff, HandedState, Hello, PLACEMENT_SERVER};
use super::kinds::{self, NamedKind};
use super::leader::LeaderElection;
use super::rendezvous::{Candidate, Identity, Placement, Rendezvous};
use crate::DistributedSystem;
use crate::cluster::ClusterError;

/// How long a management command waits for the leader's answer.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Names of activations start with this (a kind name must not contain
/// `/`).
pub const PLACED_PREFIX: &str = "joerl.placed:";

/// The name an identity's activation is registered under on its owner.
pub fn placed_name(identity: &Identity) -> String {
    format!("{PLACED_PREFIX}{}/{}", identity.kind, identity.id)
}

/// The identity a [`placed_name`] names.
pub fn identity_of(name: &str) -> Option<Identity> {
    let rest = name.strip_prefix(PLACED_PREFIX)?;
    let (kind, id) = rest.split_once('/')?;
    Some(Identity::new(kind, id))
}

/// Tells a forwarder whose identity this node owns again to claim it back
/// (local only).
pub(crate) struct Reclaim;

/// Wakes an identity up (an eager activation): the activation takes it and
/// does not pass it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wake;
crate::remote_message!(Wake, "joerl::placement::Wake");

/// One activation on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationInfo {
    /// Its identity.
    pub identity: Identity,
    /// Its process.
    pub pid: Pid,
    /// When it started.
    pub since: SystemTime,
}

/// Counters of one node's placement.
#[derive(Debug, Default)]
pub struct PlacementStats {
    /// Activations started here.
    pub activated: AtomicU64,
    /// Activations stopped because another member owns them now.
    pub handed_off: AtomicU64,
    /// Claim rounds that some member did not grant (asked again).
    pub claim_retries: AtomicU64,
    /// Claims given up because another member became the owner meanwhile
    /// (what waited was forwarded to it).
    pub claims_moved: AtomicU64,
    /// Messages a handed-off activation forwarded to the new owner.
    pub forwarded: AtomicU64,
    /// Activations started for a message that arrived for an identity
    /// this node did not own in its view (the sender's view was newer or
    /// older): the message waits until this node's view agrees (up to
    /// [`VIEW_PATIENCE`](super::handoff::VIEW_PATIENCE)), then is handled
    /// here or forwarded to the owner.
    pub not_owner: AtomicU64,
    /// Owner lookups refused for want of a healthy majority: routings and
    /// activations, and the node's own lookups while it has none (claims
    /// waiting, view updates), so it grows while the majority is missing
    /// even with no traffic.
    pub no_majority: AtomicU64,
    /// Activations stopped because this node lost its healthy majority.
    pub stopped_no_majority: AtomicU64,
    /// Messages for kinds this binary does not register.
    pub unknown_kind: AtomicU64,
    /// Identities activated eagerly (registered, pinned here by a
    /// migration, or woken by a handoff that carried state).
    pub eager_activations: AtomicU64,
    /// Activations that started from the state their old owner handed
    /// off ([`Migrate`](super::Migrate)).
    pub state_received: AtomicU64,
    /// Handed-off states that could not be decoded (the activation started
    /// fresh).
    pub state_undecodable: AtomicU64,
    /// Directive changes dropped: older than this node's, or from a
    /// fenced leader.
    pub stale_directives: AtomicU64,
    /// Guaranteed messages dropped here as duplicates (exactly-once).
    pub duplicates_dropped: AtomicU64,
    /// Guaranteed messages whose payload did not decode here.
    pub undecodable: AtomicU64,
    /// Routes by identity answered from the location cache (sends, and
    /// the owner lookups of guaranteed deliveries and idempotent calls);
    /// not the sends a thread's own copy of a route by Pid answered.
    pub route_hits: AtomicU64,
    /// Sends by identity whose route was computed (first send, or the
    /// view changed since).
    pub route_misses: AtomicU64,
    /// Sends by identity that a sending thread's own copy of routes by Pid
    /// did not answer (not learnt yet, not seen by this thread, evicted,
    /// or made stale by a view change or a forgotten Pid); they went to
    /// the location cache.
    pub thread_copy_misses: AtomicU64,
    /// Activations' Pids the location cache learnt (sends by identity go
    /// to them).
    pub pids_learned: AtomicU64,
    /// Learnt Pids taken out of the cache again (their activation ended,
    /// or its node was lost).
    pub pids_forgotten: AtomicU64,
    /// Messages that reached a handed-out Pid after its activation ended
    /// and went on to the identity's name (activated again, or forwarded).
    pub redirected: AtomicU64,
    /// Pids not cached because the locator watched the most it may.
    pub unwatched: AtomicU64,
}

#[derive(Debug, Default)]
struct View {
    /// The `Active` members, this node included, by name.
    all: Vec<Candidate>,
    /// Those of them known to run placement (this node included).
    candidates: Vec<Candidate>,
    /// Those of them not being drained (all of them if every one is): the
    /// members identities are placed on.
    eligible: Vec<Candidate>,
    healthy: bool,
    /// The leader's directives, as this node has them.
    table: Table,
    /// Counts the changes to this view (members, health, directives): a
    /// cached route computed at an older one is computed again.
    generation: u64,
}

/// Routes kept by the location cache at most; past it the cache starts
/// again empty (the routes are computed, not looked up, so a miss costs
/// a hash per member and no round trip).
pub const ROUTE_CACHE_MAX: usize = 100_000;

/// A route the location cache keeps, and the view it was computed at.
#[derive(Debug)]
struct CachedRoute {
    generation: u64,
    kind: Arc<str>,
    id: Arc<str>,
    /// The route by name (calls and monitors go by it, and sends while
    /// there is no Pid).
    route: PlacedRoute,
    /// The activation's Pid, once learnt (see [`locator`](super::locator)):
    /// sends go to it.
    pid: Option<Pid>,
    /// When (milliseconds into this state's life, 0 for never) the Pid was
    /// last asked for.
    asked: AtomicU64,
}

/// How long a route without a Pid waits before its Pid is asked for again
/// (the identity was not running yet, or its activation ended).
pub const ASK_AGAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// How long an owner still redirects messages sent to the Pid of an
/// activation that ended (the senders' monitors take the Pid out of their
/// caches well before).
pub const HANDED_LINGER: std::time::Duration = std::time::Duration::from_secs(60);

/// Pids of activations an owner hands out at most at once (past it, its
/// identities are routed by name).
pub const MAX_HANDED: usize = 200_000;

/// The Pids of activations this node handed out as routes: a message that
/// reaches one after its activation ended goes on to the identity's name.
#[derive(Debug, Default)]
struct HandedPids {
    by_pid: std::collections::HashMap<Pid, Identity>,
    /// Those whose activation ended, oldest first (kept for
    /// [`HANDED_LINGER`]).
    ended: std::collections::VecDeque<(std::time::Instant, Pid)>,
}

impl HandedPids {
    fn expire(&mut self, now: std::time::Instant) {
        while let Some((at, pid)) = self.ended.front().copied() {
            if now.duration_since(at) < HANDED_LINGER {
                break;
            }
            self.ended.pop_front();
            self.by_pid.remove(&pid);
        }
    }
}

/// Where a local activation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Claiming the identity; its actor has not started.
    Claiming,
    /// Its actor runs.
    Active,
    /// Handed off: forwarding to the new owner.
    Forwarding,
}

/// One local activation and its phase.
#[derive(Debug, Clone)]
struct Entry {
    info: ActivationInfo,
    phase: Phase,
    /// The state a handed-off activation keeps for the next owner's claim,
    /// and whether a claim took it from here.
    carried: Option<(HandedState, bool)>,
    /// While claiming: this node answered `Free` to another member's claim
    /// (its view made that member the owner), so this claim must not end
    /// in running the actor without asking again.
    yielded: bool,
}

/// A membership view held back: its members and health.
type HeldView = (Vec<Candidate>, bool);

/// What the node's name service consults for placed identities.
pub(crate) struct PlacementState {
    me: String,
    system: WeakActorSystem,
    strategy: Rendezvous,
    view: RwLock<View>,
    /// The location cache: routes by a hash of the identity (the identity
    /// is kept and compared), valid while the view's generation is theirs.
    /// The hash is seeded ([`Self::route_key`]), so the map's own hash of it
    /// can be the cheapest.
    routes: DashMap<u64, CachedRoute, joerl_core::fxhash::FxBuildHasher>,
    /// The seed of the location cache's hash (ids may come from outside:
    /// chosen keys must not pile up in one place of the map).
    route_seed: foldhash::fast::RandomState,
    /// The view's generation, also readable without its lock: a cache hit
    /// reads only this (stored under the view's write lock, after the
    /// change).
    generation: AtomicU64,
    activations: DashMap<Identity, Entry>,
    stats: PlacementStats,
    /// This state, for the activations it starts.
    this: Weak<PlacementState>,
    /// Members whose placement server said hello (they run placement).
    ready: std::sync::Mutex<BTreeSet<String>>,
    /// Fault injection: membership views are held back (the latest waits
    /// here) while set.
    held: std::sync::Mutex<Option<Option<HeldView>>>,
    /// The leader election the directives are fenced by.
    election: Option<Arc<dyn LeaderElection>>,
    /// The leader epoch at which this node, leading, adopted the newest
    /// table of a majority (see `coordinate`).
    pub(crate) gathered: AtomicU64,
    /// Guaranteed deliveries sent from here.
    outbox: super::outbox::Outbox,
    /// The deduplication windows of identities handled here (exactly-once).
    dedup: DashMap<Identity, DedupWindow>,
    /// The Pids of activations handed out as routes.
    handed: std::sync::Mutex<HandedPids>,
    /// The locator, which learns where identities run on other members.
    pub(crate) locator: std::sync::OnceLock<Pid>,
    /// This node's id (the node part of its Pids).
    me_id: u32,
    /// The clock of [`CachedRoute::asked`].
    started: std::time::Instant,
    /// Counts the Pids the cache forgot: threads' copies of Pids made at an
    /// older count are not used.
    pid_epoch: AtomicU64,
    /// Tells this state's routes in the threads' copies from other states'
    /// (several nodes may run in one process).
    state_id: u64,
    /// The node's `max_message_memory`: the payload of a guaranteed
    /// message is decoded within it, as the frame that brought it was.
    max_message_memory: usize,
    /// Placement through a metadata store, if the node uses one: owners
    /// are its assignments (see [`stored`](super::stored)).
    store: Option<Arc<super::stored::StorePlacement>>,
    /// Counts the assignments' changes the location cache saw: a route
    /// computed across one is not kept.
    assign_seq: AtomicU64,
}

/// Slots of each thread's copy of the routes it sent by Pid last.
const THREAD_ROUTE_SLOTS: usize = 8192;

/// Slots per set of a thread's copy. With two, a thread sending in turn
/// to 1,000 identities missed 7 % of its sends: every set that three of
/// them share misses on each of them, as round-robin sends evict the one
/// needed next. Four ways and a rotating victim make that rare.
const THREAD_ROUTE_WAYS: usize = 4;

/// A thread's copy of a route by Pid, matched by the destination's own
/// strings (kept, so their addresses are not reused while here).
struct ThreadRoute {
    state: u64,
    kind: Arc<str>,
    id: Arc<str>,
    generation: u64,
    epoch: u64,
    pid: Pid,
}

thread_local! {
    /// The routes by Pid this thread used last, by the address of the
    /// destination's strings: a send through the same `PlacedRef` (or a
    /// clone) finds its Pid with no hash of the text and no shared lock.
    static THREAD_ROUTES: std::cell::RefCell<ThreadRoutes> =
        const { std::cell::RefCell::new(ThreadRoutes { slots: Vec::new(), victim: 0 }) };
}

/// A thread's copy of routes: [`THREAD_ROUTE_SLOTS`] slots in sets of
/// [`THREAD_ROUTE_WAYS`].
struct ThreadRoutes {
    slots: Vec<Option<ThreadRoute>>,
    /// Turns the way a full set gives up (round-robin sends over more
    /// routes than a set holds then still hit on most of them, where
    /// evicting the oldest would miss on every one).
    victim: usize,
}

/// The first slot of the set of `(kind, id)` in a thread's copy, from
/// their addresses.
fn thread_slot(kind: &Arc<str>, id: &Arc<str>) -> usize {
    let a = Arc::as_ptr(id) as *const u8 as usize;
    let b = Arc::as_ptr(kind) as *const u8 as usize;
    let h = (a ^ b.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 40) % THREAD_ROUTE_SLOTS) & !(THREAD_ROUTE_WAYS - 1)
}

/// Tells placement states apart (see `PlacementState::state_id`).
static NEXT_STATE_ID: AtomicU64 = AtomicU64::new(1);

/// Identities whose deduplication window a node keeps at most (past it,
/// the windows start again empty, logged).
pub const MAX_DEDUP_IDENTITIES: usize = 100_000;

impl PlacementState {
    /// The activations whose actor runs on this node, by identity.
    pub(crate) fn local_activations(&self) -> Vec<ActivationInfo> {
        let Some(system) = self.system.upgrade() else {
            return Vec::new();
        };
        let mut v: Vec<ActivationInfo> = self
            .activations
            .iter()
            .filter(|a| a.phase == Phase::Active && system.is_alive(a.info.pid))
            .map(|a| a.info.clone())
            .collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        v
    }

    /// This node's name.
    pub(crate) fn outbox(&self) -> &super::outbox::Outbox {
        &self.outbox
    }

    /// True if `seq` from `sender` was handled here already for `identity`.
    pub(crate) fn seen(&self, identity: &Identity, sender: &Sender, seq: u64) -> bool {
        self.dedup
            .get(identity)
            .is_some_and(|w| w.seen(sender, seq))
    }

    /// A claim's answer that lets the claimant go: with `state` and this
    /// node's deduplication window of `identity`, if there is one.
    pub(crate) fn handed_answer(
        &self,
        identity: &Identity,
        state: Option<HandedState>,
    ) -> ClaimAnswer {
        let seen = self
            .dedup
            .get(identity)
            .map(|w| w.export())
            .unwrap_or_default();
        match (state, seen.is_empty()) {
            (None, true) => ClaimAnswer::Free,
            (Some(s), true) => ClaimAnswer::State(s),
            (state, false) => ClaimAnswer::Handed { state, seen },
        }
    }

    /// Adds the window another node's activation of `identity` left (see
    /// [`ClaimAnswer::Handed`]).
    pub(crate) fn merge_seen(&self, identity: &Identity, seen: &[super::delivery::SeenBy]) {
        if seen.is_empty() {
            return;
        }
        if !self.dedup.contains_key(identity) && self.dedup.len() >= MAX_DEDUP_IDENTITIES {
            tracing::warn!(
                limit = MAX_DEDUP_IDENTITIES,
                "placement: deduplication windows full; they start again empty"
            );
            self.dedup.clear();
        }
        self.dedup.entry(identity.clone()).or_default().merge(seen);
    }

    /// `seq` from `sender` was handled here for `identity`.
    pub(crate) fn mark_seen(&self, identity: &Identity, sender: &Sender, seq: u64) {
        if !self.dedup.contains_key(identity) && self.dedup.len() >= MAX_DEDUP_IDENTITIES {
            tracing::warn!(
                limit = MAX_DEDUP_IDENTITIES,
                "placement: deduplication windows full; they start again empty"
            );
            self.dedup.clear();
        }
        self.dedup
            .entry(identity.clone())
            .or_default()
            .mark(sender, seq);
    }

    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// The most memory decoding a guaranteed message's payload may take
    /// (the node's `max_message_memory`).
    pub(crate) fn max_message_memory(&self) -> usize {
        self.max_message_memory
    }

    /// The node's actor system, while it runs.
    pub(crate) fn system(&self) -> Option<joerl_core::ActorSystem> {
        self.system.upgrade()
    }

    /// The other `Active` members of this node's view (whether or not
    /// they said hello yet: a claim asks every one).
    pub(crate) fn others(&self) -> Vec<String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.all
            .iter()
            .filter(|c| c.node != self.me)
            .map(|c| c.node.clone())
            .collect()
    }

    pub(crate) fn count_claim_retry(&self) {
        self.stats.claim_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_duplicate(&self) {
        self.stats
            .duplicates_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_undecodable(&self) {
        self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_forwarded(&self) {
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_stale_directive(&self) {
        self.stats.stale_directives.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_state(&self, decoded: bool) {
        if decoded {
            self.stats.state_received.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.state_undecodable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The leader election, if placement follows one.
    pub(crate) fn election(&self) -> Option<&Arc<dyn LeaderElection>> {
        self.election.as_ref()
    }

    /// Runs `f` on the directives and the members placed on now, under
    /// the view's lock.
    pub(crate) fn with_table<R, E>(
        &self,
        f: impl FnOnce(&mut Table, &BTreeSet<String>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
        v.generation += 1;
        let members: BTreeSet<String> = v.candidates.iter().map(|c| c.node.clone()).collect();
        let out = f(&mut v.table, &members);
        self.generation.store(v.generation, Ordering::Release);
        out
    }

    /// The directives as this node has them.
    pub(crate) fn table(&self) -> Table {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .table
            .clone()
    }

    /// True if this node's directives are behind `(epoch, seq)`.
    pub(crate) fn table_behind(&self, epoch: u64, seq: u64, leader_epoch: u64, fence: u64) -> bool {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.table.behind(epoch, seq, leader_epoch, fence)
    }

    /// True if `identity` is registered for eager activation (it is not
    /// passivated).
    pub(crate) fn is_registered(&self, identity: &Identity) -> bool {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.table.registered.contains(identity)
    }

    /// What a directive change asks of this node beyond a new view: an
    /// identity pinned here is activated now (its state comes with its
    /// claim). Registered ones are activated by [`Self::update`].
    pub(crate) fn after_op(&self, op: &Op) {
        match op {
            Op::Pin(identity, node) if *node == self.me => self.wake(identity),
            _ => {}
        }
    }

    /// Activates `identity` here now, if this node owns it and runs none.
    pub(crate) fn wake(&self, identity: &Identity) {
        if self.activations.contains_key(identity) {
            return;
        }
        if self.activate(&placed_name(identity)).is_some() {
            self.stats.eager_activations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The activation `pid` of `identity` is in `phase` now.
    /// (Handing off goes through [`Self::set_forwarding`], which counts it.)
    pub(crate) fn set_phase(&self, identity: &Identity, pid: Pid, phase: Phase) {
        if let Some(mut e) = self.activations.get_mut(identity) {
            if e.info.pid == pid {
                e.phase = phase;
            }
        }
    }

    /// The activation `pid` of `identity` hands off: it forwards from now
    /// on, and keeps `carried` (the state, and whether a claim has it
    /// already) for the next owner's claim, in one step (a claim answered
    /// between the two would find a forwarder without its state). A copy is
    /// kept also when a claim's answer carries it: that answer may come
    /// after the claimant stopped waiting, and its next claim finds it here.
    pub(crate) fn set_forwarding(
        &self,
        identity: &Identity,
        pid: Pid,
        carried: Option<(HandedState, bool)>,
    ) {
        if let Some(mut e) = self.activations.get_mut(identity) {
            if e.info.pid == pid {
                if e.phase == Phase::Active {
                    self.stats.handed_off.fetch_add(1, Ordering::Relaxed);
                }
                if e.phase == Phase::Claiming {
                    self.stats.claims_moved.fetch_add(1, Ordering::Relaxed);
                }
                e.phase = Phase::Forwarding;
                if carried.is_some() {
                    e.carried = carried;
                }
            }
        }
    }

    /// The claiming activation `pid` of `identity` may run its actor now:
    /// false (and the mark cleared) if this node answered another member's
    /// claim with `Free` since, so it must claim again.
    pub(crate) fn begin_active(&self, identity: &Identity, pid: Pid) -> bool {
        let Some(mut e) = self.activations.get_mut(identity) else {
            return false;
        };
        if e.info.pid != pid {
            return false;
        }
        if std::mem::take(&mut e.yielded) {
            return false;
        }
        e.phase = Phase::Active;
        true
    }

    /// Takes the state the activation `pid` of `identity` kept itself (a
    /// forwarder that claims its identity back).
    pub(crate) fn take_own_carried(&self, identity: &Identity, pid: Pid) -> Option<HandedState> {
        let mut e = self.activations.get_mut(identity)?;
        if e.info.pid != pid {
            return None;
        }
        e.carried.take().map(|(s, _)| s)
    }

    /// The state the forwarder `pid` of `identity` keeps, if any (a copy:
    /// a claimant given it again keeps the highest generation).
    pub(crate) fn take_carried(&self, identity: &Identity, pid: Pid) -> Option<HandedState> {
        let mut e = self.activations.get_mut(identity)?;
        if e.info.pid != pid {
            return None;
        }
        let (state, taken) = e.carried.as_mut()?;
        *taken = true;
        Some(state.clone())
    }

    /// True while the forwarder of `identity` keeps a state no claim took
    /// from it.
    pub(crate) fn carries(&self, identity: &Identity) -> bool {
        self.activations
            .get(identity)
            .is_some_and(|e| e.carried.as_ref().is_some_and(|(_, taken)| !taken))
    }

    /// The activation `pid` of `identity` stopped.
    pub(crate) fn forget(&self, identity: &Identity, pid: Pid) {
        let removed = self
            .activations
            .remove_if(identity, |_, e| e.info.pid == pid);
        if let (Some(store), Some(_)) = (&self.store, removed) {
            store.ended(identity);
        }
        self.ended(pid);
        self.unlearn(identity, pid);
    }

    /// Answers `claimant`'s claim of `identity` (see
    /// [`handoff`](super::handoff)).
    pub(crate) fn answer_claim(
        &self,
        identity: &Identity,
        claimant: &str,
        from: joerl_core::gen_server::ReplyTo<ClaimAnswer>,
    ) -> joerl_core::gen_server::CallResponse<ClaimAnswer> {
        use joerl_core::gen_server::CallResponse::{NoReply, Reply};
        let Some(system) = self.system.upgrade() else {
            return Reply(ClaimAnswer::Free);
        };
        // A claimant this node does not count as a member yet may not know
        // of this node's activation either: it waits until the views agree.
        if !self.others().iter().any(|n| n == claimant) {
            return Reply(ClaimAnswer::Busy);
        }
        let entry = self.activations.get(identity).map(|e| e.clone());
        match entry {
            // Nothing runs here (any more): free, with the window an
            // earlier activation here left.
            None => Reply(self.handed_answer(identity, None)),
            Some(e) if !system.is_alive(e.info.pid) => Reply(self.handed_answer(identity, None)),
            // A forwarder hands the state it carries to the claimant.
            Some(Entry {
                phase: Phase::Forwarding,
                info,
                ..
            }) => {
                let state = self.take_carried(identity, info.pid);
                Reply(self.handed_answer(identity, state))
            }
            // Claiming as the owner in this node's view: the views must
            // agree first. Waiting for its view to make it the owner (a
            // message came early), it runs nothing yet: free to the member
            // this node's view says owns it.
            Some(Entry {
                phase: Phase::Claiming,
                ..
            }) => {
                // Under the entry's lock, so that the claim in progress here
                // sees the mark before it runs the actor.
                let Some(mut e) = self.activations.get_mut(identity) else {
                    return Reply(self.handed_answer(identity, None));
                };
                match (&e.phase, self.owner(identity)) {
                    (Phase::Claiming, Ok(owner)) if owner == claimant => {
                        e.yielded = true;
                        Reply(self.handed_answer(identity, None))
                    }
                    _ => Reply(ClaimAnswer::Busy),
                }
            }
            Some(Entry {
                info,
                phase: Phase::Active,
                ..
            }) => match self.owner(identity) {
                Ok(owner) if owner == claimant => {
                    let handoff = HandOff {
                        to: owner,
                        reply: Some(from),
                    };
                    // Past the mailbox bound: a handoff is never dropped
                    // while the activation lives.
                    match system.try_deliver(None, info.pid, Box::new(handoff), usize::MAX) {
                        Ok(()) => NoReply,
                        Err(_) => Reply(ClaimAnswer::Busy),
                    }
                }
                _ => Reply(ClaimAnswer::Busy),
            },
        }
    }

    /// The owner of `identity` in this node's view, or why there is none.
    pub(crate) fn owner_of(&self, identity: &Identity) -> Result<String, String> {
        self.owner(identity)
    }

    /// The member other than this node that owns `identity`, from the
    /// location cache (`None` if this node owns it or none does): the
    /// target whose circuit breaker a send to `identity` goes through.
    pub(crate) fn remote_owner(&self, identity: &Identity) -> Option<Arc<str>> {
        match self.route(&identity.kind, &identity.id) {
            Ok(PlacedRoute::There { node, .. }) => Some(node),
            _ => None,
        }
    }

    fn owner(&self, identity: &Identity) -> Result<String, String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        self.owner_in(&v, identity)
    }

    fn owner_in(&self, v: &View, identity: &Identity) -> Result<String, String> {
        if let Some(store) = &self.store {
            if let Some(node) = store.assigned_node(identity) {
                return Ok(node);
            }
        }
        self.placed_in(v, identity)
    }

    /// Placement through the store, if the node uses it.
    pub(crate) fn store_placement(&self) -> Option<&Arc<super::stored::StorePlacement>> {
        self.store.as_ref()
    }

    /// The member the rendezvous choice (and the directives) give
    /// `identity` in this view, whatever the store says: where an identity
    /// without an assignment is tried first.
    pub(crate) fn preferred_owner(&self, identity: &Identity) -> Result<String, String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        self.placed_in(&v, identity)
    }

    fn placed_in(&self, v: &View, identity: &Identity) -> Result<String, String> {
        // With a store, one activation per identity is the store's
        // transaction, not the majority's: a minority side places too.
        if !v.healthy && self.store.is_none() {
            self.stats.no_majority.fetch_add(1, Ordering::Relaxed);
            return Err("this node's membership view has no healthy majority".into());
        }
        if !v.table.pins.is_empty() {
            if let Some(pinned) = v.table.pins.get(identity) {
                if v.eligible.iter().any(|c| c.node == *pinned) {
                    return Ok(pinned.clone());
                }
            }
        }
        // With a store, among the members whose lease is alive in it (all
        // of them if it knows none yet).
        if let Some(store) = &self.store {
            let present: Vec<Candidate> = v
                .eligible
                .iter()
                .filter(|c| store.is_present(&c.node) != Some(false))
                .cloned()
                .collect();
            if !present.is_empty() {
                let i = self
                    .strategy
                    .place(identity, &present)
                    .ok_or_else(|| "no active member".to_string())?;
                return Ok(present[i].node.clone());
            }
        }
        let i = self
            .strategy
            .place(identity, &v.eligible)
            .ok_or_else(|| "no active member".to_string())?;
        Ok(v.eligible[i].node.clone())
    }

    /// See `NameService::route_placed`.
    ///
    /// From the location cache when the view has not changed since the
    /// route was computed: a hit costs a hash of the identity and no
    /// allocation.
    pub(crate) fn route(&self, kind: &str, id: &str) -> Result<PlacedRoute, SendError> {
        self.route_in(kind, id, None, false)
    }

    /// See `NameService::route_placed_send`: [`Self::route_shared`], or the
    /// activation's Pid once this node learnt it (asked for on a route
    /// without one, at most every [`ASK_AGAIN`]).
    pub(crate) fn route_send_shared(
        &self,
        kind: &Arc<str>,
        id: &Arc<str>,
    ) -> Result<PlacedRoute, SendError> {
        // Read before the route: a Pid forgotten after this bumps it, so
        // the thread's copy made below is not used.
        let epoch = self.pid_epoch.load(Ordering::Acquire);
        let generation = self.generation.load(Ordering::Acquire);
        let set = thread_slot(kind, id);
        let same = |r: &ThreadRoute| {
            r.state == self.state_id && Arc::ptr_eq(&r.id, id) && Arc::ptr_eq(&r.kind, kind)
        };
        let hit = THREAD_ROUTES.with_borrow(|t| {
            t.slots
                .get(set..set + THREAD_ROUTE_WAYS)?
                .iter()
                .flatten()
                .find(|r| same(r))
                .filter(|r| r.generation == generation && r.epoch == epoch)
                .map(|r| r.pid)
        });
        // A hit is not counted: a shared counter would cost this path
        // more than the rest of it. A miss is (it takes the slower path).
        if let Some(pid) = hit {
            return Ok(PlacedRoute::Activation(pid));
        }
        self.stats
            .thread_copy_misses
            .fetch_add(1, Ordering::Relaxed);
        let route = self.route_in(kind, id, Some((kind, id)), true)?;
        if let PlacedRoute::Activation(pid) = route {
            THREAD_ROUTES.with_borrow_mut(|t| {
                if t.slots.is_empty() {
                    t.slots.resize_with(THREAD_ROUTE_SLOTS, || None);
                }
                let ways = &t.slots[set..set + THREAD_ROUTE_WAYS];
                // This route's own (stale) slot, else a free one, else the
                // way whose turn it is.
                let way = ways
                    .iter()
                    .position(|s| s.as_ref().is_some_and(&same))
                    .or_else(|| ways.iter().position(Option::is_none))
                    .unwrap_or_else(|| {
                        t.victim = t.victim.wrapping_add(1);
                        t.victim % THREAD_ROUTE_WAYS
                    });
                t.slots[set + way] = Some(ThreadRoute {
                    state: self.state_id,
                    kind: kind.clone(),
                    id: id.clone(),
                    generation,
                    epoch,
                    pid,
                });
            });
        }
        Ok(route)
    }

    /// [`Self::route`] for a destination's shared strings: the cache keeps
    /// them, so the next send through the same reference (or a clone of
    /// it) is matched by pointer, without reading the text again.
    pub(crate) fn route_shared(
        &self,
        kind: &Arc<str>,
        id: &Arc<str>,
    ) -> Result<PlacedRoute, SendError> {
        self.route_in(kind, id, Some((kind, id)), false)
    }

    fn route_in(
        &self,
        kind: &str,
        id: &str,
        shared: Option<(&Arc<str>, &Arc<str>)>,
        send: bool,
    ) -> Result<PlacedRoute, SendError> {
        let key = self.route_key(kind, id);
        // A hit reads no lock of the view: a route cached at the
        // generation read here is the route of a view at least that new.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(c) = self.routes.get(&key) {
            let same = |cached: &Arc<str>, s: &str| {
                std::ptr::eq(cached.as_ptr(), s.as_ptr()) && cached.len() == s.len()
                    || **cached == *s
            };
            if c.generation == generation && same(&c.kind, kind) && same(&c.id, id) {
                self.stats.route_hits.fetch_add(1, Ordering::Relaxed);
                if !send {
                    return Ok(c.route.clone());
                }
                if let Some(pid) = c.pid {
                    return Ok(PlacedRoute::Activation(pid));
                }
                let route = c.route.clone();
                let ask = self.due(&c.asked).then(|| (c.kind.clone(), c.id.clone()));
                drop(c);
                if let Some((kind, id)) = ask {
                    self.ask(&kind, &id, &route, generation);
                }
                return Ok(route);
            }
        }
        let seq = self.assign_seq.load(Ordering::Acquire);
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        let identity = Identity::new(kind, id);
        let owner = self
            .owner_in(&v, &identity)
            .map_err(|reason| SendError::NotPlaced {
                identity: identity.to_string(),
                reason,
            })?;
        let generation = v.generation;
        drop(v);
        let name: Arc<str> = placed_name(&identity).into();
        let route = if owner == self.me {
            PlacedRoute::Here(name)
        } else {
            PlacedRoute::There {
                name,
                node: owner.into(),
            }
        };
        self.stats.route_misses.fetch_add(1, Ordering::Relaxed);
        if self.routes.len() >= ROUTE_CACHE_MAX {
            self.routes.clear();
            // The Pids go with their routes, threads' copies too.
            self.pid_epoch.fetch_add(1, Ordering::Release);
        }
        let kind: Arc<str> = shared.map_or_else(|| kind.into(), |(k, _)| k.clone());
        let id: Arc<str> = shared.map_or_else(|| id.into(), |(_, i)| i.clone());
        self.routes.insert(
            key,
            CachedRoute {
                generation,
                kind: kind.clone(),
                id: id.clone(),
                route: route.clone(),
                pid: None,
                asked: AtomicU64::new(if send { self.now_ms() } else { 0 }),
            },
        );
        // An assignment changed while the route was computed: it may be
        // the one before; not kept.
        if self.assign_seq.load(Ordering::Acquire) != seq {
            if let Some((_, c)) = self.routes.remove(&key) {
                if c.pid.is_some() {
                    self.pid_epoch.fetch_add(1, Ordering::Release);
                }
            }
        }
        if send {
            self.ask(&kind, &id, &route, generation);
        }
        Ok(route)
    }

    /// The location cache's key of `(kind, id)`: a fast hash with this
    /// node's random seed.
    fn route_key(&self, kind: &str, id: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.route_seed.build_hasher();
        h.write(kind.as_bytes());
        h.write_u8(0xff);
        h.write(id.as_bytes());
        h.finish()
    }

    /// Milliseconds into this state's life, at least 1.
    fn now_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64).max(1)
    }

    /// True (and marked asked now) if a route's Pid is due to be asked for.
    fn due(&self, asked: &AtomicU64) -> bool {
        let now = self.now_ms();
        let last = asked.load(Ordering::Relaxed);
        if last != 0 && now < last + ASK_AGAIN.as_millis() as u64 {
            return false;
        }
        asked
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Asks for the Pid of the activation `route` leads to: here, from the
    /// activations; on another member, through the locator.
    fn ask(&self, kind: &Arc<str>, id: &Arc<str>, route: &PlacedRoute, generation: u64) {
        match route {
            PlacedRoute::Here(_) => {
                let identity = Identity::new(&**kind, &**id);
                if let Some(pid) = self.hand_out(&identity) {
                    self.learn(&identity, generation, pid);
                }
            }
            PlacedRoute::There { node, .. } => {
                let (Some(system), Some(locator)) = (self.system.upgrade(), self.locator.get())
                else {
                    return;
                };
                let learn = super::locator::Learn {
                    kind: kind.clone(),
                    id: id.clone(),
                    node: node.clone(),
                    generation,
                };
                let _ = system.try_send(*locator, learn);
            }
            PlacedRoute::Activation(_) => {}
        }
    }

    /// The Pid of `identity`'s running activation here, recorded as handed
    /// out (a message that reaches it after it ends goes on by name); `None`
    /// if it is not running here (or too many are handed out).
    pub(crate) fn hand_out(&self, identity: &Identity) -> Option<Pid> {
        let system = self.system.upgrade()?;
        let pid = {
            let e = self.activations.get(identity)?;
            if e.phase != Phase::Active {
                return None;
            }
            e.info.pid
        };
        if !system.is_alive(pid) {
            return None;
        }
        {
            let mut h = self.handed.lock().unwrap_or_else(|e| e.into_inner());
            h.expire(std::time::Instant::now());
            if !h.by_pid.contains_key(&pid) {
                if h.by_pid.len() >= MAX_HANDED {
                    return None;
                }
                h.by_pid.insert(pid, identity.clone());
            }
        }
        // Ended meanwhile (its `forget` did not see it handed out): it
        // lingers as one that ended.
        if self
            .activations
            .get(identity)
            .is_none_or(|e| e.info.pid != pid)
        {
            self.ended(pid);
        }
        Some(pid)
    }

    /// The handed-out `pid`'s activation ended: redirected for
    /// [`HANDED_LINGER`] more.
    fn ended(&self, pid: Pid) {
        let now = std::time::Instant::now();
        let mut h = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        if h.by_pid.contains_key(&pid) {
            h.ended.push_back((now, pid));
        }
        h.expire(now);
    }

    /// See `NameService::moved`: the name a message for the handed-out
    /// `pid`, whose activation is gone, goes on to.
    pub(crate) fn moved(&self, pid: Pid) -> Option<String> {
        let h = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        let identity = h.by_pid.get(&pid)?;
        self.stats.redirected.fetch_add(1, Ordering::Relaxed);
        Some(placed_name(identity))
    }

    /// `pid` runs `identity` (its owner said so, or it runs here): cached
    /// with the route if that is still the one computed at `generation`
    /// and leads to `pid`'s node.
    pub(crate) fn learn(&self, identity: &Identity, generation: u64, pid: Pid) {
        let key = self.route_key(&identity.kind, &identity.id);
        let Some(mut c) = self.routes.get_mut(&key) else {
            return;
        };
        if c.generation != generation || *c.kind != *identity.kind || *c.id != *identity.id {
            return;
        }
        let node_matches = match &c.route {
            PlacedRoute::Here(_) => pid.node() == self.me_id,
            PlacedRoute::There { node, .. } => pid.node() == joerl_core::node_id(node),
            PlacedRoute::Activation(_) => false,
        };
        if node_matches {
            c.pid = Some(pid);
            self.stats.pids_learned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `pid`, which ran `identity`, is gone: out of the cache (asked for
    /// again after [`ASK_AGAIN`]).
    pub(crate) fn unlearn(&self, identity: &Identity, pid: Pid) {
        let key = self.route_key(&identity.kind, &identity.id);
        if let Some(mut c) = self.routes.get_mut(&key) {
            if c.pid == Some(pid) {
                c.pid = None;
                c.asked.store(self.now_ms(), Ordering::Relaxed);
                self.stats.pids_forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Whatever the cache held (a colliding identity may have replaced
        // the entry): no thread's copy of a Pid outlives this.
        self.pid_epoch.fetch_add(1, Ordering::Release);
    }

    /// An identity's assignment in the store changed: its cached route
    /// and Pid are dropped unless they lead where the assignment does
    /// (the identity was placed on the member the route already named).
    /// True if something was dropped.
    pub(crate) fn assignment_changed(
        &self,
        change: &crate::cluster::store::assignments::AssignmentChange,
    ) -> bool {
        use crate::cluster::store::assignments::AssignmentChange;
        self.assign_seq.fetch_add(1, Ordering::AcqRel);
        let (kind, id, kept) = match change {
            AssignmentChange::Assigned {
                kind,
                id,
                from: None,
                to,
            } => (kind, id, Some(to.node.as_str())),
            AssignmentChange::Assigned { kind, id, .. }
            | AssignmentChange::Released { kind, id, .. } => (kind, id, None),
        };
        let key = self.route_key(kind, id);
        let dropped = self.routes.remove_if(&key, |_, c| {
            *c.kind == **kind
                && *c.id == **id
                && match (&c.route, kept) {
                    (PlacedRoute::Here(_), Some(node)) => node != self.me,
                    (PlacedRoute::There { node: at, .. }, Some(node)) => **at != *node,
                    _ => true,
                }
        });
        match dropped {
            Some((_, c)) => {
                if c.pid.is_some() {
                    self.pid_epoch.fetch_add(1, Ordering::Release);
                }
                true
            }
            None => false,
        }
    }

    /// A registered identity's assignment vanished (its owner's lease
    /// ended): the leader wakes it on the member the rendezvous choice
    /// gives it, where it is assigned again. True if this node did.
    pub(crate) fn replace_if_leader(&self, identity: &Identity) -> bool {
        let leads = self
            .election
            .as_ref()
            .and_then(|e| e.leader())
            .is_some_and(|l| l.node == self.me);
        if !leads || !self.is_registered(identity) || self.activations.contains_key(identity) {
            return false;
        }
        let Ok(to) = self.preferred_owner(identity) else {
            return false;
        };
        if to == self.me {
            self.wake(identity);
        } else if let Some(system) = self.system.upgrade() {
            let wake = Dest::Remote {
                name: placed_name(identity),
                node: to.clone(),
            };
            if let Err(e) = system.try_send(wake, Wake) {
                tracing::debug!(%identity, %to, error = %e, "placement: a registered identity not re-placed");
                return false;
            }
        }
        true
    }

    /// Leading with a store: wakes every registered identity that has no
    /// assignment and does not run here on the member the rendezvous
    /// choice gives it. Returns how many.
    pub(crate) fn replace_unassigned(&self) -> u64 {
        let Some(store) = &self.store else {
            return 0;
        };
        let registered: Vec<Identity> = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            v.table.registered.iter().cloned().collect()
        };
        let mut n = 0;
        for identity in registered {
            if store.assigned_node(&identity).is_none()
                && !self.activations.contains_key(&identity)
                && self.replace_if_leader(&identity)
            {
                n += 1;
            }
        }
        n
    }

    /// The phase and Pid of `identity`'s local activation, if there is one.
    pub(crate) fn local_phase(&self, identity: &Identity) -> Option<(Phase, Pid)> {
        self.activations
            .get(identity)
            .map(|e| (e.phase.clone(), e.info.pid))
    }

    /// The forwarder `pid` claims its identity again (see [`Reclaim`]).
    pub(crate) fn reclaim(&self, pid: Pid) {
        if let Some(system) = self.system.upgrade() {
            let _ = system.try_deliver(None, pid, Box::new(Reclaim), usize::MAX);
        }
    }

    /// With a store: every local forwarder whose identity has no
    /// assignment any more, or one naming this node, claims it again (a
    /// forwarder made from a view that had not seen its target's
    /// assignment vanish yet). Returns how many.
    pub(crate) fn reclaim_stale_forwarders(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        let stale: Vec<Pid> = self
            .activations
            .iter()
            .filter(|e| e.phase == Phase::Forwarding)
            .filter(|e| store.assigned_node(e.key()).is_none_or(|n| n == self.me))
            .map(|e| e.info.pid)
            .collect();
        for pid in &stale {
            self.reclaim(*pid);
        }
        stale.len()
    }

    /// [`Self::active_identities`] that run since before `since`.
    pub(crate) fn active_identities_since(&self, since: SystemTime) -> Vec<(Identity, Pid)> {
        self.activations
            .iter()
            .filter(|e| e.phase == Phase::Active && e.info.since < since)
            .map(|e| (e.key().clone(), e.info.pid))
            .collect()
    }

    /// Stops the activation `pid` (it may no longer run here).
    pub(crate) fn stop_activation(&self, pid: Pid, why: &str) {
        if let Some(system) = self.system.upgrade() {
            let _ = system.exit(pid, ExitReason::custom(why));
        }
    }

    /// The identities whose actor runs here, and their activations.
    pub(crate) fn active_identities(&self) -> Vec<(Identity, Pid)> {
        self.activations
            .iter()
            .filter(|e| e.phase == Phase::Active)
            .map(|e| (e.key().clone(), e.info.pid))
            .collect()
    }

    /// The activation `pid` of `identity` hands off to `to` (the store
    /// assigned the identity there).
    pub(crate) fn hand_off_to(&self, identity: &Identity, pid: Pid, to: String) {
        let Some(system) = self.system.upgrade() else {
            return;
        };
        let handoff = HandOff { to, reply: None };
        if system
            .try_deliver(None, pid, Box::new(handoff), usize::MAX)
            .is_err()
        {
            tracing::debug!(%identity, "placement: the activation that lost ended already");
        }
    }

    /// A locator did not watch a Pid: it watches [`MAX_WATCHED`](super::locator::MAX_WATCHED) already.
    pub(crate) fn count_unwatched(&self) {
        self.stats.unwatched.fetch_add(1, Ordering::Relaxed);
    }

    /// See `NameService::activate`.
    pub(crate) fn activate(&self, name: &str) -> Option<Pid> {
        let identity = identity_of(name)?;
        let Some(kind) = kinds::kind(&identity.kind) else {
            self.stats.unknown_kind.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%identity, "placement: a message for a kind this node does not register");
            return None;
        };
        match self.owner(&identity) {
            Ok(o) if o == self.me => {}
            // The sender's view is newer (this node is about to own it) or
            // older (the owner moved): the activation's claim waits for the
            // views to agree, and runs it or forwards what came.
            Ok(o) => {
                self.stats.not_owner.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%identity, owner = %o, "placement: not the owner here yet; held");
            }
            Err(reason) => {
                tracing::debug!(%identity, %reason, "placement: not activated");
                return None;
            }
        }
        let system = self.system.upgrade()?;
        // The entry is written under its lock before a claim can be answered
        // for it, so the claimant counts as claiming from its first moment.
        let entry = self.activations.entry(identity.clone());
        if let dashmap::Entry::Occupied(o) = &entry {
            if system.is_alive(o.get().info.pid) {
                return system.whereis_registered(name);
            }
        }
        let hooks = kinds::Hooks {
            state: self.this.clone(),
            identity: identity.clone(),
        };
        match (kind.spawn)(
            &system,
            &identity.id,
            SpawnOptions::new().name(name),
            Some(hooks),
        ) {
            Ok(pid) => {
                self.stats.activated.fetch_add(1, Ordering::Relaxed);
                entry.insert(Entry {
                    info: ActivationInfo {
                        identity,
                        pid,
                        since: SystemTime::now(),
                    },
                    phase: Phase::Claiming,
                    carried: None,
                    yielded: false,
                });
                Some(pid)
            }
            // Started by another lookup a moment ago.
            Err(_) => {
                drop(entry);
                system.whereis_registered(name)
            }
        }
    }

    /// The placement server of `node` said hello: it runs placement. A
    /// hello that is not itself an answer is answered (a restarted member
    /// learns this node again).
    pub(crate) fn hello_from(&self, node: &str, answer: bool) {
        let new = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string());
        if !answer {
            if let Some(system) = self.system.upgrade() {
                send_hello(&system, &self.me, node, true);
            }
        }
        if new {
            self.update(None);
        }
    }

    /// Says hello again to the members in the view that have not said it
    /// (a hello may have been lost; run every second).
    pub(crate) fn hello_again(&self) {
        let Some(system) = self.system.upgrade() else {
            return;
        };
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        for c in v
            .all
            .iter()
            .filter(|c| c.node != self.me && !ready.contains(&c.node))
        {
            send_hello(&system, &self.me, &c.node, false);
        }
    }

    /// A view from membership: applied, unless views are held back.
    fn new_view(&self, all: Vec<Candidate>, healthy: bool) {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(latest) = held.as_mut() {
                *latest = Some((all, healthy));
                return;
            }
        }
        self.update(Some((all, healthy)));
    }

    /// Applies a new view of the `Active` members (`None`: recomputes the
    /// one there is, after a hello): placed on those known to run
    /// placement; the identities this node no longer owns are handed off.
    /// One lock orders every update, so an older view never lands over a
    /// newer one.
    pub(crate) fn update(&self, view: Option<HeldView>) {
        let Some(system) = self.system.upgrade() else {
            return;
        };
        {
            let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
            v.generation += 1;
            if let Some((all, healthy)) = view {
                // A member that left the view says hello again when it is
                // back (a new incarnation may not run placement yet).
                for gone in v
                    .all
                    .iter()
                    .filter(|c| !all.iter().any(|n| n.node == c.node))
                {
                    ready.remove(&gone.node);
                }
                for c in all
                    .iter()
                    .filter(|c| c.node != self.me && !ready.contains(&c.node))
                {
                    send_hello(&system, &self.me, &c.node, false);
                }
                v.all = all;
                v.healthy = healthy;
            }
            v.candidates = v
                .all
                .iter()
                .filter(|c| c.node == self.me || ready.contains(&c.node))
                .cloned()
                .collect();
            v.eligible = v
                .candidates
                .iter()
                .filter(|c| !v.table.draining.contains(&c.node))
                .cloned()
                .collect();
            // Better a drained member than none.
            if v.eligible.is_empty() {
                v.eligible = v.candidates.clone();
            }
            self.generation.store(v.generation, Ordering::Release);
        }
        let mine: Vec<Entry> = self.activations.iter().map(|a| a.clone()).collect();
        for e in mine {
            let a = e.info;
            if !system.is_alive(a.pid) {
                self.forget(&a.identity, a.pid);
                continue;
            }
            // With a store, only the store moves an identity: an activation
            // hands off when its assignment names another node (membership
            // changes do not move it, and a minority side keeps running).
            if let Some(store) = &self.store {
                match (store.assigned_node(&a.identity), &e.phase) {
                    // Its owner's assignment vanished, or names this node:
                    // a forwarder claims the identity again.
                    (None, Phase::Forwarding) => self.reclaim(a.pid),
                    (Some(owner), Phase::Forwarding) if owner == self.me => self.reclaim(a.pid),
                    (Some(owner), Phase::Active | Phase::Forwarding) if owner != self.me => {
                        self.hand_off_to(&a.identity, a.pid, owner);
                    }
                    _ => {}
                }
                continue;
            }
            match (self.owner(&a.identity), &e.phase) {
                // Owned here again while forwarding: the forwarder claims the
                // identity back and runs it (what waits in its mailbox is
                // handled then, its state kept).
                (Ok(owner), Phase::Forwarding) if owner == self.me => self.reclaim(a.pid),
                (Ok(owner), _) if owner == self.me => {}
                // Handed off: the actor stops, what comes later goes on to
                // the new owner (a forwarder is pointed at it; a claiming
                // activation finds out itself).
                (Ok(owner), Phase::Active | Phase::Forwarding) => {
                    self.hand_off_to(&a.identity, a.pid, owner);
                }
                (Ok(_), Phase::Claiming) => {}
                // The minority side runs nothing: the majority side takes
                // its identities over (as Akka's keep-majority). Claims
                // wait for a majority; forwarders run no actor.
                (Err(_), Phase::Active) => {
                    self.stats
                        .stopped_no_majority
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = system.exit(a.pid, ExitReason::custom("no healthy majority"));
                }
                (Err(_), _) => {}
            }
        }
        // Registered identities this node owns now run here (re-homed
        // after their owner failed, or moved by a change).
        let registered: Vec<Identity> = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            if !v.healthy && self.store.is_none() {
                return;
            }
            v.table.registered.iter().cloned().collect()
        };
        for identity in registered {
            if !self.activations.contains_key(&identity)
                && matches!(self.owner(&identity), Ok(o) if o == self.me)
            {
                self.wake(&identity);
            }
        }
    }
}

/// Why placement did not start.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// Placement needs membership: enable clustering first.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Two types are registered under one kind name.
    #[error("the placed kind {0:?} is registered by both {1} and {2}")]
    KindConflict(&'static str, &'static str, &'static str),
    /// It runs on this node already.
    #[error("placement already runs on this node")]
    AlreadyStarted,
    /// The placement server did not start (the name `joerl_placement` is
    /// taken by another process, or the node is stopping).
    #[error("the placement server did not start: {0}")]
    Spawn(#[source] joerl_core::SpawnError),
    /// The embedded leader election did not start (it runs already on
    /// this node: pass it to [`start_with`]).
    #[error("the leader election did not start: {0}")]
    Leader(#[from] super::elector::ElectorError),
    /// The cluster config says `metadata_store: etcd`, and this build has
    /// no etcd client: build joerl-dist with its `etcd` feature.
    #[error(
        "the cluster config says metadata_store: etcd; build joerl-dist with the `etcd` feature"
    )]
    NoEtcdSupport,
    /// The metadata store's client did not start (an endpoint is not a
    /// URL; TLS material is wrong).
    #[error("the metadata store's client did not start: {0}")]
    Store(#[source] crate::cluster::store::StoreError),
    /// The store's leader election did not start.
    #[error("the store's leader election did not start: {0}")]
    StoreLeader(#[from] crate::cluster::store::leader::StoreLeaderError),
    /// Placement through the store did not start (its lease).
    #[error(transparent)]
    StorePlacement(#[from] super::stored::StorePlacementError),
}

/// Why a management command (drain, migrate, register) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The leader refused it, or there is none.
    #[error(transparent)]
    Directive(#[from] DirectiveError),
    /// The identity could not be reached to activate it.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Placement goes through a metadata store, where identities stay on
    /// the node their assignment names: moving them by hand (`migrate`,
    /// `drain`) is not supported there yet. Use the embedded placement
    /// for it, or stop the node (its assignments go with its lease).
    #[error("{0} is not supported with placement through a metadata store")]
    NotWithStore(&'static str),
}

/// This node's placement: references to identities, its activations, its
/// counters. Cheap to clone.
#[derive(Clone)]
pub struct Placements {
    state: Arc<PlacementState>,
    system: joerl_core::ActorSystem,
}

impl std::fmt::Debug for Placements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placements")
            .field("node", &self.state.me)
            .finish()
    }
}

/// Starts placement on `node` (clustering must be enabled), with the
/// embedded leader election ([`elector`](super::elector)): from then on
/// [`Dest::Placed`] addresses work here, and this node activates the
/// identities it owns. Every node that hosts or addresses placed actors
/// starts it.
pub fn start(node: &DistributedSystem) -> Result<Placements, PlacementError> {
    if let Some((name, a, b)) = kinds::conflicts().into_iter().next() {
        return Err(PlacementError::KindConflict(name, a, b));
    }
    node.cluster()?;
    let leader = super::elector::start(node)?;
    start_with(node, Arc::new(leader))
}

/// Starts placement on `node` with another [`LeaderElection`] (a
/// metadata-store lease, or an embedded election started already).
pub fn start_with(
    node: &DistributedSystem,
    election: Arc<dyn LeaderElection>,
) -> Result<Placements, PlacementError> {
    start_with_options(node, election, PlacementOptions::default())
}

/// What [`start_with_options`] may change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacementOptions {
    /// When the circuit to an owner node opens for the sends and calls to
    /// placed actors ([`Placements::deliver`], [`Placements::tell`],
    /// [`Placements::call_idempotent`]).
    pub breaker: super::BreakerConfig,
}

/// [`start_with`], with options.
pub fn start_with_options(
    node: &DistributedSystem,
    election: Arc<dyn LeaderElection>,
    options: PlacementOptions,
) -> Result<Placements, PlacementError> {
    start_placement(node, election, options, None)
}

/// Starts placement on `node` as its cluster config says
/// (`metadata_store`): embedded ([`start`]), or through etcd at
/// `etcd_endpoints` ([`start_with_store`], with the store's leader
/// election; keys under `joerl/CLUSTER_NAME/placement` and
/// `joerl/CLUSTER_NAME/leader`, leases of 5 s, retries as
/// [`default_policy`](crate::cluster::store::retry::default_policy)).
pub async fn start_configured(node: &DistributedSystem) -> Result<Placements, PlacementError> {
    let config = node.cluster()?.config().clone();
    match config.metadata_store {
        crate::cluster::MetadataStoreKind::Embedded => start(node),
        #[cfg(not(feature = "etcd"))]
        crate::cluster::MetadataStoreKind::Etcd => Err(PlacementError::NoEtcdSupport),
        #[cfg(feature = "etcd")]
        crate::cluster::MetadataStoreKind::Etcd => {
            use crate::cluster::store::etcd::{EtcdOptions, EtcdStore};
            use crate::cluster::store::leader::{StoreLeader, StoreLeaderOptions};
            use crate::cluster::store::retry::{RetryingStore, default_policy};
            let options = EtcdOptions::from_config(&config).ok_or(PlacementError::NoEtcdSupport)?;
            let etcd = EtcdStore::connect(options)
                .await
                .map_err(PlacementError::Store)?;
            let store = RetryingStore::new(Arc::new(etcd), default_policy());
            let root = format!("joerl/{}", config.cluster_name);
            let leader = StoreLeader::start(
                node,
                Arc::new(store.clone()),
                StoreLeaderOptions {
                    election: format!("{root}/leader"),
                    ..StoreLeaderOptions::default()
                },
            )?;
            let placement = super::stored::StorePlacement::start(
                node,
                store,
                super::stored::StorePlacementOptions {
                    prefix: format!("{root}/placement"),
                    ..Default::default()
                },
            )
            .await?;
            start_with_store(
                node,
                Arc::new(leader),
                PlacementOptions::default(),
                placement,
            )
        }
    }
}

/// Starts placement on `node` through a metadata store: the owners of
/// identities are the store's assignments (see
/// [`stored`](super::stored)). `election` is usually the store's own
/// ([`StoreLeader`](crate::cluster::store::leader::StoreLeader)); every
/// member of the cluster must place through the same store and prefix.
pub fn start_with_store(
    node: &DistributedSystem,
    election: Arc<dyn LeaderElection>,
    options: PlacementOptions,
    store: Arc<super::stored::StorePlacement>,
) -> Result<Placements, PlacementError> {
    start_placement(node, election, options, Some(store))
}

fn start_placement(
    node: &DistributedSystem,
    election: Arc<dyn LeaderElection>,
    options: PlacementOptions,
    store: Option<Arc<super::stored::StorePlacement>>,
) -> Result<Placements, PlacementError> {
    if let Some((name, a, b)) = kinds::conflicts().into_iter().next() {
        return Err(PlacementError::KindConflict(name, a, b));
    }
    let cluster = node.cluster()?;
    let state = Arc::new_cyclic(|this| PlacementState {
        me: node.name().to_string(),
        system: (**node).downgrade(),
        strategy: Rendezvous,
        view: RwLock::new(View::default()),
        routes: DashMap::default(),
        route_seed: foldhash::fast::RandomState::default(),
        generation: AtomicU64::new(0),
        activations: DashMap::new(),
        stats: PlacementStats::default(),
        this: this.clone(),
        ready: Default::default(),
        held: Default::default(),
        election: Some(election),
        gathered: AtomicU64::new(0),
        outbox: super::outbox::Outbox::new(node.name(), super::Breakers::new(options.breaker)),
        dedup: DashMap::new(),
        handed: Default::default(),
        locator: Default::default(),
        me_id: joerl_core::node_id(node.name()),
        started: std::time::Instant::now(),
        pid_epoch: AtomicU64::new(0),
        state_id: NEXT_STATE_ID.fetch_add(1, Ordering::Relaxed),
        max_message_memory: node.config().max_message_memory,
        store,
        assign_seq: AtomicU64::new(0),
    });
    if !crate::cluster::names::ClusterNames::of(node).set_placement(state.clone()) {
        return Err(PlacementError::AlreadyStarted);
    }
    joerl_core::gen_server::spawn_server_with(
        node,
        ClaimServer {
            state: Arc::downgrade(&state),
        },
        SpawnOptions::new().name(PLACEMENT_SERVER),
    )
    .map_err(PlacementError::Spawn)?;
    super::outbox::start(node, &state).map_err(PlacementError::Spawn)?;
    let locator = super::locator::start(node, &state).map_err(PlacementError::Spawn)?;
    let _ = state.locator.set(locator);
    if let Some(store) = &state.store {
        store.attach(node, &state).map_err(PlacementError::Spawn)?;
    }
    // The view follows membership, in the order of its events.
    let follow = Arc::downgrade(&state);
    super::view::follow(cluster, move |view| {
        let Some(state) = follow.upgrade() else {
            return false;
        };
        let candidates = view
            .active
            .into_iter()
            .map(|(node, weight)| Candidate {
                local: node == state.me,
                node,
                weight,
                load: 0,
            })
            .collect();
        state.new_view(candidates, view.healthy);
        true
    });
    Ok(Placements {
        state,
        system: (**node).clone(),
    })
}

/// A reference to a placed identity: a [`Dest`] (send, cast and typed call
/// it from anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlacedRef {
    identity: Identity,
    /// The same, shared: the `Dest` is made without allocating.
    kind: Arc<str>,
    id: Arc<str>,
}

impl PlacedRef {
    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl From<PlacedRef> for Dest {
    fn from(r: PlacedRef) -> Dest {
        Dest::Placed {
            kind: r.kind,
            id: r.id,
        }
    }
}

impl From<&PlacedRef> for Dest {
    fn from(r: &PlacedRef) -> Dest {
        r.clone().into()
    }
}

impl Placements {
    /// A reference to the actor of kind `K` with this id.
    pub fn actor<K: NamedKind>(&self, id: impl Into<String>) -> PlacedRef {
        self.actor_of(K::KIND, id)
    }

    /// A reference to the actor of the kind named `kind` with this id.
    pub fn actor_of(&self, kind: &str, id: impl Into<String>) -> PlacedRef {
        let identity = Identity::new(kind, id);
        PlacedRef {
            kind: identity.kind.as_str().into(),
            id: identity.id.as_str().into(),
            identity,
        }
    }

    /// Activates the identity now, on its owner (Cajun's `register`),
    /// instead of at its first message; it is not passivated, and after its
    /// owner fails it is activated on the new owner at once. Recorded by
    /// the leader.
    pub async fn register(&self, kind: &str, id: &str) -> Result<(), CommandError> {
        self.register_many(kind, [id.to_string()]).await
    }

    /// [`Self::register`] for many ids of one kind (sent to the leader in
    /// batches of [`MAX_BATCH`](super::directives::MAX_BATCH)).
    pub async fn register_many(
        &self,
        kind: &str,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<(), CommandError> {
        let ids: Vec<Identity> = ids.into_iter().map(|id| Identity::new(kind, id)).collect();
        for batch in ids.chunks(super::directives::MAX_BATCH) {
            self.command(Op::Register(batch.to_vec())).await?;
            for identity in batch {
                let r = self.actor_of(&identity.kind, identity.id.clone());
                self.system.send(r, Wake).await?;
            }
        }
        Ok(())
    }

    /// Undoes [`Self::register`]: the identity is activated at its first
    /// message again, and passivated when idle.
    pub async fn unregister(&self, kind: &str, id: &str) -> Result<(), CommandError> {
        let op = Op::Unregister(vec![Identity::new(kind, id)]);
        self.command(op).await?;
        Ok(())
    }

    /// Moves `identity` to `node` (Cajun's migrate): the leader pins it
    /// there, its activation is handed off (its state travels if its kind
    /// implements [`Migrate`](super::Migrate)) and started on `node` at
    /// once; what is sent meanwhile is forwarded in order. The pin lasts
    /// until [`Self::unpin`], a drain of `node`, or `node` leaving.
    /// Returns once every member was told; the move itself follows.
    pub async fn migrate(&self, identity: &Identity, node: &str) -> Result<(), CommandError> {
        if self.state.store.is_some() {
            return Err(CommandError::NotWithStore("migrate"));
        }
        let op = Op::Pin(identity.clone(), node.to_string());
        self.command(op).await?;
        Ok(())
    }

    /// Places `identity` by the placement function again.
    pub async fn unpin(&self, identity: &Identity) -> Result<(), CommandError> {
        self.command(Op::Unpin(identity.clone())).await?;
        Ok(())
    }

    /// Drains `node`: nothing is placed on it any more, and its
    /// activations are handed off to the members that own them now (what
    /// is sent meanwhile is forwarded in order), so it can leave without
    /// losing a message. Refused for the last member not drained.
    pub async fn drain(&self, node: &str) -> Result<(), CommandError> {
        if self.state.store.is_some() {
            return Err(CommandError::NotWithStore("drain"));
        }
        self.command(Op::Drain(node.to_string())).await?;
        Ok(())
    }

    /// Places on `node` again after a [`Self::drain`].
    pub async fn undrain(&self, node: &str) -> Result<(), CommandError> {
        self.command(Op::Undrain(node.to_string())).await?;
        Ok(())
    }

    /// Placement through a metadata store, if this node places through
    /// one ([`start_with_store`]): its assignments' view, stats and
    /// degraded mode.
    pub fn store(&self) -> Option<&Arc<super::stored::StorePlacement>> {
        self.state.store.as_ref()
    }

    /// The leader this node accepts now, if any.
    pub fn leader(&self) -> Option<super::Leader> {
        self.state.election().and_then(|e| e.leader())
    }

    /// Starts a new leader term (see [`LeaderElection::force_election`]).
    pub fn force_election(&self) {
        if let Some(e) = self.state.election() {
            e.force_election();
        }
    }

    /// The leader's directives as this node has them: drained members,
    /// pins, registered identities.
    pub fn directives(&self) -> Table {
        self.state.table()
    }

    /// Sends `op` to the leader (this node's own, if it leads) and waits
    /// for its answer; a member that does not lead names the leader, which
    /// is asked then.
    async fn command(&self, op: Op) -> Result<u64, DirectiveError> {
        let mut leader = self
            .leader()
            .map(|l| l.node)
            .ok_or(DirectiveError::NoLeader)?;
        for _ in 0..3 {
            let answer = if leader == self.state.me {
                self.state.command(op.clone()).await
            } else {
                let server: joerl_core::gen_server::ServerRef<ClaimServer> =
                    joerl_core::gen_server::ServerRef::new(Dest::Remote {
                        name: PLACEMENT_SERVER.to_string(),
                        node: leader.clone(),
                    });
                let command = super::coordinate::Command { op: op.clone() };
                self.system
                    .call_timeout(&server, command, COMMAND_TIMEOUT)
                    .await
                    .map_err(|e| DirectiveError::Unreachable(e.to_string()))?
            };
            match answer {
                Err(DirectiveError::NotLeader { leader: Some(l) }) if l != leader => leader = l,
                other => return other,
            }
        }
        Err(DirectiveError::NoLeader)
    }

    /// The node that owns `identity` in this node's view now.
    pub fn owner(&self, identity: &Identity) -> Result<String, SendError> {
        self.state
            .owner(identity)
            .map_err(|reason| SendError::NotPlaced {
                identity: identity.to_string(),
                reason,
            })
    }

    /// The activations alive on this node, by identity.
    pub fn local_activations(&self) -> Vec<ActivationInfo> {
        self.state.local_activations()
    }

    /// The members identities are placed on now, by name.
    pub fn members(&self) -> BTreeSet<String> {
        let v = self.state.view.read().unwrap_or_else(|e| e.into_inner());
        v.candidates.iter().map(|c| c.node.clone()).collect()
    }

    /// This node's counters.
    pub fn stats(&self) -> &PlacementStats {
        &self.state.stats
    }

    /// A typed call to the placed gen_server `to` (of kind `S`:
    /// `p.call_idempotent::<Account, _>(&r, Balance, ..)`) for a request that is
    /// safe to repeat: through the owner node's circuit breaker (fails fast
    /// with [`BreakerError::Open`](super::BreakerError::Open) while it is
    /// open), retried as `policy` says (exponential backoff, full jitter)
    /// when the failure may pass: a timeout, a lost connection, an
    /// unreachable node, no activation (`noproc`, as during a handoff), an
    /// exit during the call, or no placement (no healthy majority yet).
    /// Each attempt is routed again, so a retry reaches the new owner after
    /// a failure. A refused attempt (open circuit) is retried too while
    /// attempts remain.
    pub async fn call_idempotent<S, Q>(
        &self,
        to: &PlacedRef,
        request: Q,
        timeout: std::time::Duration,
        policy: super::RetryPolicy,
    ) -> Result<Q::Reply, super::BreakerError<joerl_core::CallError>>
    where
        S: joerl_core::gen_server::HandleCall<Q>,
        Q: joerl_core::gen_server::Request + Clone,
    {
        use joerl_core::CallError;
        let breakers = &self.state.outbox.breakers;
        let server = joerl_core::gen_server::ServerRef::<S>::new(to.clone());
        let server = &server;
        let retryable = |e: &super::BreakerError<CallError>| match e {
            super::BreakerError::Open(_) => true,
            super::BreakerError::Failed(e) => matches!(
                e,
                CallError::Timeout
                    | CallError::NoProc
                    | CallError::NoConnection
                    | CallError::Unreachable(_)
                    | CallError::Exit(_)
                    | CallError::Send(SendError::NotPlaced { .. })
            ),
        };
        super::breaker::retry(policy, retryable, |_| {
            let request = request.clone();
            let owner = self.state.remote_owner(&to.identity);
            async move {
                let Some(owner) = owner else {
                    return self
                        .system
                        .call_timeout(server, request, timeout)
                        .await
                        .map_err(super::BreakerError::Failed);
                };
                breakers
                    .call(&owner, self.system.call_timeout(server, request, timeout))
                    .await
            }
        })
        .await
    }

    /// This node's counters of guaranteed deliveries.
    pub fn delivery_stats(&self) -> &super::OutboxStats {
        &self.state.outbox.stats
    }

    /// Messages sent from here with a guarantee and not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.state.outbox.pending()
    }

    /// The circuit breakers of the sends to placed actors, by owner node
    /// (a clone shares them: give it to the metrics reporter).
    pub fn breakers(&self) -> super::Breakers {
        self.state.outbox.breakers.clone()
    }

    /// Sends `msg` to `to` at most once, as `node.send(to, msg)` does
    /// (Erlang's `!`: no breaker, no acknowledgement), without copying the
    /// reference: by the activation's Pid once this node learnt it, else by
    /// name to its owner. Waits while the target's queue is full.
    pub async fn send<M: std::any::Any + Send>(
        &self,
        to: &PlacedRef,
        msg: M,
    ) -> Result<(), SendError> {
        match self.state.route_send_shared(&to.kind, &to.id) {
            Ok(PlacedRoute::Activation(pid)) => self.system.send(pid, msg).await,
            _ => self.system.send(to, msg).await,
        }
    }

    /// [`Self::send`] without waiting: a full queue gives
    /// [`SendError::Full`] with the message.
    pub fn try_send<M: std::any::Any + Send>(
        &self,
        to: &PlacedRef,
        msg: M,
    ) -> Result<(), SendError> {
        match self.state.route_send_shared(&to.kind, &to.id) {
            Ok(PlacedRoute::Activation(pid)) => self.system.try_send(pid, msg),
            _ => self.system.try_send(to, msg),
        }
    }

    /// Sends `msg` to `to` with the kind's guarantee
    /// ([`PlacedActor::guarantee`](super::PlacedActor::guarantee); at-most-once
    /// unless the kind says otherwise) and the default deadline.
    pub async fn tell<M: std::any::Any + Send>(
        &self,
        to: &PlacedRef,
        msg: M,
    ) -> Result<(), DeliveryError> {
        let guarantee = kinds::kind(&to.identity.kind)
            .map(|k| (k.guarantee)())
            .unwrap_or_default();
        self.deliver(to, msg, guarantee).await
    }

    /// Sends `msg` to `to` with `guarantee` and the default deadline
    /// ([`DEFAULT_DEADLINE`](super::delivery::DEFAULT_DEADLINE)); see
    /// [`Self::deliver_within`].
    pub async fn deliver<M: std::any::Any + Send>(
        &self,
        to: &PlacedRef,
        msg: M,
        guarantee: Guarantee,
    ) -> Result<(), DeliveryError> {
        self.deliver_within(to, msg, guarantee, super::delivery::DEFAULT_DEADLINE)
            .await
    }

    /// Sends `msg` to `to` with `guarantee`. At-most-once returns once the
    /// message is on its way, failing fast with
    /// [`DeliveryError::CircuitOpen`] while the owner node's circuit is
    /// open. At-least-once and exactly-once return once the activation has
    /// handled the message (its handler returned) and said so, or with
    /// [`DeliveryError::DeadlinePassed`] after `within`; meanwhile the
    /// message is sent again to whichever member owns the identity then.
    /// A guaranteed message's type must be a `remote_message!` (its bytes
    /// are kept); its handler sees no sender (`ctx.sender()` is `None`).
    pub async fn deliver_within<M: std::any::Any + Send>(
        &self,
        to: &PlacedRef,
        msg: M,
        guarantee: Guarantee,
        within: std::time::Duration,
    ) -> Result<(), DeliveryError> {
        let outbox = &self.state.outbox;
        let owner = self.state.remote_owner(&to.identity);
        if guarantee == Guarantee::AtMostOnce {
            if let Some(o) = &owner {
                outbox.breakers.acquire(o)?;
            }
            return match self.system.send(to, msg).await {
                Ok(()) => {
                    if let Some(o) = &owner {
                        outbox.breakers.success(o);
                    }
                    Ok(())
                }
                Err(e) => {
                    if let Some(o) = &owner {
                        outbox.breakers.failure(o, &e.to_string());
                    }
                    Err(DeliveryError::Send(e.to_string()))
                }
            };
        }
        let (ty, wire) = crate::registry::tables()
            .by_type(std::any::TypeId::of::<M>())
            .ok_or(DeliveryError::NotRemote {
                type_name: std::any::type_name::<M>(),
            })?;
        let mut bytes = Vec::new();
        (ty.encode)(&msg, &mut bytes).map_err(|e| DeliveryError::Encode(e.to_string()))?;
        let (reliable, outcome) = outbox.keep(
            to.identity.clone(),
            wire,
            bytes,
            guarantee == Guarantee::ExactlyOnce,
            within,
        )?;
        let seq = reliable.seq;
        // An open circuit skips the first send: the resends try again.
        match owner.as_deref().map(|o| outbox.breakers.acquire(o)) {
            Some(Err(open)) => {
                outbox.stats.circuit_open.fetch_add(1, Ordering::Relaxed);
                outbox.failed(seq, open.to_string());
            }
            _ => {
                if let Err(e) = self.system.send(to, reliable).await {
                    outbox.failed(seq, e.to_string());
                }
            }
        }
        outcome.await.unwrap_or(Err(DeliveryError::Stopped))
    }

    /// Fault injection, for tests and drills: while `hold` is true this
    /// node keeps placing by the membership view it has, as a node whose
    /// membership events lag would; `false` applies the latest view.
    pub fn hold_view(&self, hold: bool) {
        // Under the lock: a view that comes meanwhile waits for this one.
        let mut held = self.state.held.lock().unwrap_or_else(|e| e.into_inner());
        if hold {
            held.get_or_insert(None);
            return;
        }
        if let Some(latest) = held.take().flatten() {
            self.state.update(Some(latest));
        }
    }
}

/// Tells `node`'s placement server that this node runs placement.
fn send_hello(system: &joerl_core::ActorSystem, me: &str, node: &str, answer: bool) {
    let hello = Hello {
        node: me.to_string(),
        answer,
    };
    let to = Dest::Remote {
        name: PLACEMENT_SERVER.to_string(),
        node: node.to_string(),
    };
    if let Err(e) = system.try_send(to, hello) {
        tracing::debug!(%node, error = %e, "placement: hello not sent");
    }
}
