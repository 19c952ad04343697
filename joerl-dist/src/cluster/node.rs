//! Membership attached to a node, through the node's public API only: the
//! node's name, dist address and creation make its member identity, a key
//! derived from its cookie keys the gossip, members' dist addresses feed a
//! [`MemberDirectory`] put in front of the node's resolvers, and a member
//! declared failed is disconnected (`noconnection` to every link and
//! monitor, once) even if its TCP connection still looks open. The decisions
//! are [`Membership`]'s (no I/O); this module carries them out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::config::{ClusterConfig, ConfigError};
use super::gossip::{Gossip, GossipStats, SwimEvent};
use super::member::MemberId;
use super::packet::{PacketKey, key_context};
use super::state::{ClusterEvent, ClusterHealth, Effect, Member, MemberState, Membership};
use crate::resolve::{ResolveFuture, Resolver};
use crate::{DistError, DistributedSystem, NodeBuilder};

/// The dist addresses of the active members gossip knows: a [`Resolver`]
/// the cluster puts in front of the node's own.
#[derive(Debug, Default)]
pub struct MemberDirectory {
    table: RwLock<HashMap<String, SocketAddr>>,
}

impl MemberDirectory {
    /// An empty directory.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The dist address of `node`, if it is an active member.
    pub fn get(&self, node: &str) -> Option<SocketAddr> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied()
    }

    fn set(&self, node: &str, addr: Option<SocketAddr>) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        match addr {
            Some(a) => t.insert(node.to_string(), a),
            None => t.remove(node),
        };
    }
}

impl Resolver for MemberDirectory {
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a> {
        let found = self.get(node).map(|a| vec![a]);
        Box::pin(async move { Ok(found) })
    }
}

/// What went wrong with clustering, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node has no cluster: start one with
    /// `DistributedSystem::enable_clustering` or `NodeBuilder::start_clustered`.
    #[error(
        "clustering is not enabled on this node: call enable_clustering(config) or start it with start_clustered"
    )]
    NotEnabled,
    /// The node has a cluster already: use `DistributedSystem::cluster`.
    #[error("clustering is already enabled on this node: use node.cluster()")]
    AlreadyEnabled,
    /// The configuration is invalid (which field, and why).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node could not start.
    #[error("the node could not start: {0}")]
    Node(#[source] DistError),
    /// The gossip socket could not be bound.
    #[error("cannot bind the gossip socket at {addr}: {source} (is another member on this port?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node listens on an unspecified address (`0.0.0.0` or `::`), which
    /// other members could not dial: start it on an address they reach.
    #[error(
        "the node listens on {0}, which other members cannot dial; listen on an address they reach"
    )]
    UnspecifiedDistAddress(SocketAddr),
    /// No seed answered (each with its reason). The seeds are still
    /// announced to in the background: the node joins when one comes up.
    #[error("no seed answered: {}", .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
    JoinFailed(Vec<(String, String)>),
    /// No member of that name is known.
    #[error("no member named {0} is known to this node")]
    NodeNotFound(String),
    /// This node has left the cluster; start a new node to join again.
    #[error("this node has left the cluster")]
    Left,
    /// Two remote-spawn kinds share a name, so the spawn server would not
    /// know which to start.
    #[error(transparent)]
    KindConflict(#[from] super::spawn::KindConflict),
}

/// Lossless, ordered cluster events for code that is not an actor (see
/// [`Cluster::subscribe`]).
#[derive(Debug)]
pub struct ClusterEvents {
    rx: mpsc::UnboundedReceiver<ClusterEvent>,
}

impl ClusterEvents {
    /// The next event; `None` once the cluster is stopped.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ClusterEvent> {
        self.rx.try_recv().ok()
    }
}

struct Shared {
    membership: Membership,
    subscribers: Vec<mpsc::UnboundedSender<ClusterEvent>>,
}

struct Inner {
    gossip: Gossip,
    directory: Arc<MemberDirectory>,
    shared: Mutex<Shared>,
    config: ClusterConfig,
    follow: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.follow.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// A node's cluster membership (cheap to clone: all clones are one member).
/// It lives as long as its node: the node's `shutdown` (or its drop) leaves
/// the cluster gracefully first, as [`leave`](Self::leave) does.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self", &self.self_member().name)
            .field("gossip", &self.inner.gossip.local_addr())
            .finish_non_exhaustive()
    }
}

impl DistributedSystem {
    /// Makes this node a cluster member with `config`: binds its gossip
    /// socket, puts the members' addresses in front of its resolvers, and
    /// announces it to `config.seeds` in the background (retried until one
    /// answers; call [`Cluster::join`] to wait for it). The cluster stays
    /// attached to the node: [`cluster`](Self::cluster) finds it again.
    pub async fn enable_clustering(&self, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        if self.extension::<Cluster>().is_some() {
            return Err(ClusterError::AlreadyEnabled);
        }
        // The cluster services every member serves.
        super::spawn::serve(self)?;
        let cluster = Cluster::start(self, config).await?;
        // Two at once: the first attached wins, the other stops (its gossip
        // with it) before it touched the node's resolvers.
        self.set_extension(Arc::new(cluster.clone()))
            .map_err(|_| ClusterError::AlreadyEnabled)?;
        self.prepend_resolver(cluster.inner.directory.clone());
        let seeds = cluster.inner.config.seeds.clone();
        if !seeds.is_empty() {
            let c = cluster.clone();
            tokio::spawn(async move {
                if let Err(e) = c.join(&seeds).await {
                    tracing::warn!(error = %e, "cluster: seeds did not answer yet; still announcing to them");
                }
            });
        }
        Ok(cluster)
    }

    /// This node's cluster, if clustering is enabled.
    pub fn cluster(&self) -> Result<Cluster, ClusterError> {
        self.extension::<Cluster>()
            .map(|c| (*c).clone())
            .ok_or(ClusterError::NotEnabled)
    }
}

impl NodeBuilder {
    /// Starts the node, then enables clustering on it with `config` (see
    /// [`DistributedSystem::enable_clustering`]).
    pub async fn start_clustered(
        self,
        config: ClusterConfig,
    ) -> Result<(DistributedSystem, Cluster), ClusterError> {
        config.validate()?;
        let node = self.start().await.map_err(ClusterError::Node)?;
        let cluster = node.enable_clustering(config).await?;
        Ok((node, cluster))
    }
}

impl Cluster {
    async fn start(
        node: &DistributedSystem,
        config: ClusterConfig,
    ) -> Result<Cluster, ClusterError> {
        config.validate()?;
        if node.local_addr().ip().is_unspecified() {
            return Err(ClusterError::UnspecifiedDistAddress(node.local_addr()));
        }
        let identity = MemberId {
            node: node.name().to_string(),
            gossip: SocketAddr::new(config.bind_addr, config.port),
            dist: node.local_addr(),
            creation: node.creation(),
            rejoin: 0,
            metadata: config.metadata.clone(),
        };
        let key = PacketKey::from_key(
            &node.derive_key(&key_context(&config.cluster_name)),
            &config.cluster_name,
            config.max_packet_size,
        );
        let (gossip, events) = Gossip::start_with_events(&config, key, identity.clone())
            .await
            .map_err(|source| ClusterError::Bind {
                addr: SocketAddr::new(config.bind_addr, config.port),
                source,
            })?;
        let identity = MemberId {
            gossip: gossip.local_addr(),
            ..identity
        };
        let directory = MemberDirectory::new();
        let membership = Membership::new(&identity, !config.seeds.is_empty(), config.connect_all);
        let inner = Arc::new(Inner {
            gossip,
            directory: directory.clone(),
            shared: Mutex::new(Shared {
                membership,
                subscribers: Vec::new(),
            }),
            config,
            follow: Mutex::new(None),
        });
        let follow = tokio::spawn(follow(
            Arc::downgrade(&inner),
            node.downgrade(),
            node.stop_signal(),
            events,
        ));
        *inner.follow.lock().unwrap_or_else(|e| e.into_inner()) = Some(follow);
        Ok(Cluster { inner })
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins through `seeds` (`host:port` of their gossip sockets): how many
    /// answered within the configured `join_timeout` (once one answered,
    /// the others get a probe timeout more). If none did, the error gives
    /// each seed's reason; the seeds are still announced to in the
    /// background, so the node joins when one comes up. Membership then
    /// converges in the background: watch [`members`](Self::members) or the
    /// events.
    pub async fn join<S: AsRef<str>>(&self, seeds: &[S]) -> Result<usize, ClusterError> {
        if self.self_member().state == MemberState::Left {
            return Err(ClusterError::Left);
        }
        let mut addrs = Vec::new();
        let mut failed = Vec::new();
        let me = self.gossip_addr();
        for seed in seeds {
            let seed = seed.as_ref();
            match tokio::net::lookup_host(seed).await {
                Ok(found) => {
                    // The seed's address of the gossip socket's family.
                    let want_v4 = self.inner.config.bind_addr.is_ipv4();
                    let found: Vec<SocketAddr> = found.collect();
                    match found
                        .iter()
                        .find(|a| a.is_ipv4() == want_v4)
                        .or(found.first())
                    {
                        // Itself: one seed list is often given to every member.
                        Some(a) if *a == me => {}
                        Some(a) => addrs.push((seed.to_string(), *a)),
                        None => failed.push((seed.to_string(), "no address".to_string())),
                    }
                }
                Err(e) => {
                    failed.push((seed.to_string(), format!("cannot resolve: {e}")));
                    self.resolve_later(seed.to_string());
                }
            }
        }
        if addrs.is_empty() {
            if failed.is_empty() {
                return Ok(0);
            }
            return Err(ClusterError::JoinFailed(failed));
        }
        self.shared().membership.joining();
        let wait = self.inner.config.join_timeout;
        let reached = self
            .inner
            .gossip
            .join(addrs.iter().map(|(_, a)| *a).collect(), wait)
            .await;
        if reached.reached.is_empty() && !reached.joined {
            for (seed, addr) in addrs {
                failed.push((
                    seed,
                    format!(
                        "no authenticated answer from {addr} within {} ms (down, another cookie or cluster name, or not a joerl member)",
                        wait.as_millis()
                    ),
                ));
            }
            return Err(ClusterError::JoinFailed(failed));
        }
        // A seed answered: joined, whether or not gossip's own word of it
        // was applied yet.
        let _ = self.shared().membership.apply(SwimEvent::Joined);
        // A seed that answered from another of its addresses (NAT, several
        // interfaces) still counts: SWIM says this node joined.
        Ok(reached.reached.len().max(1))
    }

    /// Resolves `seed` again in the background (from 1 s up to the announce
    /// interval between tries) and announces to it once it resolves: DNS
    /// that is not ready when the node starts (a container's peers) does
    /// not keep it out.
    fn resolve_later(&self, seed: String) {
        let weak = Arc::downgrade(&self.inner);
        let most = self.inner.config.announce_interval;
        let family_v4 = self.inner.config.bind_addr.is_ipv4();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_secs(1).min(most);
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(most);
                let Some(inner) = weak.upgrade() else { return };
                if inner.self_state() == MemberState::Left {
                    return;
                }
                if let Ok(found) = tokio::net::lookup_host(seed.as_str()).await {
                    let found: Vec<SocketAddr> = found.collect();
                    if let Some(a) = found
                        .iter()
                        .find(|a| a.is_ipv4() == family_v4)
                        .or(found.first())
                    {
                        tracing::info!(%seed, addr = %a, "cluster: a seed resolves now; announcing to it");
                        inner.gossip.join(vec![*a], std::time::Duration::ZERO).await;
                        return;
                    }
                }
            }
        });
    }

    /// The other members known now, by name (failed and departed ones
    /// included until they are replaced or forgotten).
    pub fn members(&self) -> Vec<Member> {
        self.shared().membership.members()
    }

    /// The member named `name` (this node included).
    pub fn member(&self, name: &str) -> Result<Member, ClusterError> {
        self.shared()
            .membership
            .member(name)
            .ok_or_else(|| ClusterError::NodeNotFound(name.to_string()))
    }

    /// This node as a member.
    pub fn self_member(&self) -> Member {
        self.shared().membership.self_member()
    }

    /// Whether the active members are a strict majority of the last known
    /// size, as this node sees it now.
    pub fn health(&self) -> ClusterHealth {
        self.shared().membership.health()
    }

    /// Every [`ClusterEvent`] from now on, in order, none dropped, as a
    /// stream for code that is not an actor. It starts with the state as
    /// events (a `MemberUp` for each active member, a `MemberSuspected`
    /// after it for each suspected one), so nothing falls between a look
    /// at [`members`](Self::members) and the subscription.
    pub fn subscribe(&self) -> ClusterEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = self.shared();
        for m in shared.membership.members() {
            if m.state.is_active() {
                let suspected = m.state == MemberState::Suspected;
                let _ = tx.send(ClusterEvent::MemberUp(Member {
                    state: MemberState::Active,
                    ..m.clone()
                }));
                if suspected {
                    let _ = tx.send(ClusterEvent::MemberSuspected(m));
                }
            }
        }
        shared.subscribers.push(tx);
        ClusterEvents { rx }
    }

    /// Makes `actor` receive every [`ClusterEvent`] as messages, in order,
    /// none dropped, starting with the state as events (as
    /// [`subscribe`](Self::subscribe)). A full mailbox makes its own queue
    /// wait, nobody else's; the queue ends when the actor does.
    pub fn monitor_members(&self, node: &DistributedSystem, actor: joerl_core::Pid) {
        let mut events = self.subscribe();
        let system: joerl_core::ActorSystem = (**node).clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if system.send(actor, e).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Leaves the cluster gracefully: this node is `Leaving` while it tells
    /// the members, then `Left`, and gossip stops; the others see it `Left`
    /// (not `Failed`) and disconnect it. The node itself keeps running.
    pub async fn leave(&self) {
        self.shared().membership.leaving();
        self.inner.gossip.leave().await;
        self.inner.stopped();
    }

    /// The gossip socket's address.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.inner.gossip.local_addr()
    }

    /// The gossip socket's counters (packets, bytes, and refusals by reason).
    pub fn gossip_stats(&self) -> &GossipStats {
        self.inner.gossip.stats()
    }

    /// The configuration the cluster runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Tells every subscriber `event` (for the layers above membership:
    /// the placement leader's `LeaderChanged`).
    pub(crate) fn publish(&self, event: ClusterEvent) {
        self.shared()
            .subscribers
            .retain(|s| s.send(event.clone()).is_ok());
    }

    /// Fault injection, for tests and drills: drops gossip to and from these
    /// gossip addresses, as a partition would (an empty list heals it).
    pub fn block_gossip(&self, addrs: Vec<SocketAddr>) {
        self.inner.gossip.block(addrs);
    }
}

/// The longest a node's shutdown waits for its leave notices to go out.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Inner {
    fn self_state(&self) -> MemberState {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.membership.self_member().state
    }

    fn set_leaving(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.membership.leaving();
    }

    /// This node is out of the cluster (it left, or its node stopped):
    /// `Left`, no member known, no route, streams ended.
    fn stopped(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for effect in shared.membership.left() {
            if let Effect::Route { node, dist } = effect {
                self.directory.set(&node, dist);
            }
        }
        shared.subscribers.clear();
    }
}

/// Carries out membership's decisions, in the order of the gossip events;
/// stops gossip when the node stops.
async fn follow(
    cluster: std::sync::Weak<Inner>,
    node: crate::node::WeakNode,
    mut stop: crate::StopSignal,
    mut events: mpsc::UnboundedReceiver<SwimEvent>,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.wait() => None,
        };
        let Some(inner) = cluster.upgrade() else {
            return;
        };
        let (Some(event), Some(node)) = (event, node.upgrade()) else {
            // The node stops (or the driver did): it leaves the cluster, as
            // Akka's coordinated shutdown does, so the others see it Left at
            // once rather than Failed after the suspicion time.
            if inner.self_state() != MemberState::Left {
                inner.set_leaving();
                let left = tokio::time::timeout(LEAVE_WAIT, inner.gossip.leave()).await;
                if left.is_err() {
                    inner.gossip.stop();
                }
            }
            inner.stopped();
            return;
        };
        let mut connect = Vec::new();
        {
            let mut shared = inner.shared.lock().unwrap_or_else(|e| e.into_inner());
            if shared.membership.self_member().state == MemberState::Left {
                // Left: what gossip still reports is not applied.
                continue;
            }
            let effects = shared.membership.apply(event);
            for effect in effects {
                match effect {
                    Effect::Route { node, dist } => inner.directory.set(&node, dist),
                    Effect::Disconnect {
                        node: name,
                        creation,
                        reason,
                    } => {
                        // Not a newer incarnation that is connected already.
                        let connected = node.node_info(&name).and_then(|i| i.creation);
                        if connected.is_none_or(|c| c == creation) {
                            node.disconnect(&name, reason);
                        }
                    }
                    Effect::Connect(name) => connect.push(name),
                    Effect::Event(e) => shared.subscribers.retain(|s| s.send(e.clone()).is_ok()),
                }
            }
        }
        for name in connect {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = node.connect(&name).await {
                    tracing::debug!(%name, error = %e, "cluster: eager connect failed");
                }
            });
        }
    }
}
