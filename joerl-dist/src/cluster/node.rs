//! Membership attached to a node, through the node's public API only: the
//! node's name, dist address and creation make its member identity, a key
//! derived from its cookie keys the gossip, members' dist addresses feed a
//! [`MemberDirectory`] the node resolves names with, and a member SWIM
//! declares down is disconnected (`noconnection` to every link and monitor,
//! once) even if its TCP connection still looks open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use super::config::ClusterConfig;
use super::gossip::{Gossip, SwimEvent, SwimMember};
use super::member::MemberId;
use super::packet::{PacketKey, key_context};
use crate::DistributedSystem;
use crate::resolve::{ResolveFuture, Resolver};

/// The dist addresses of the members gossip knows: a [`Resolver`] for the
/// node (give it to `NodeBuilder::first_resolver` before the node starts, and
/// to [`ClusterNode::start`] after).
#[derive(Debug, Default)]
pub struct MemberDirectory {
    table: RwLock<HashMap<String, SocketAddr>>,
}

impl MemberDirectory {
    /// An empty directory.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The dist address of `node`, if it is a member.
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

/// A membership change, delivered to the actors that asked with
/// [`ClusterNode::monitor_members`], in order, none dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A member became active (its node can be reached from now on).
    MemberUp(MemberId),
    /// A member was declared failed (it is `noconnection` from now on).
    MemberFailed(MemberId),
    /// A member left gracefully.
    MemberLeft(MemberId),
    /// Whether the active members are a strict majority changed.
    HealthChanged(ClusterHealth),
}

/// Whether the cluster, as this node sees it, keeps a majority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The active members (this node included) are more than half of
    /// `total`: SNGO's rule and Akka's keep-majority test.
    pub healthy: bool,
    /// Active members, this node included.
    pub active: usize,
    /// The last known size: active and failed members, this node included
    /// (members that left do not count).
    pub total: usize,
}

impl ClusterHealth {
    fn of(active: usize, failed: usize) -> Self {
        let total = active + failed;
        ClusterHealth {
            healthy: active * 2 > total,
            active,
            total,
        }
    }
}

/// Why membership could not start or join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The gossip socket could not be bound.
    #[error("cannot bind the gossip socket at {addr}: {source}")]
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
    /// No seed could be resolved to an address (each with its reason).
    #[error("no seed could be reached: {}", .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
    JoinFailed(Vec<(String, String)>),
}

/// A node's membership: its gossip member, kept in step with the node.
#[derive(Debug)]
pub struct ClusterNode {
    gossip: Gossip,
    follow: tokio::task::JoinHandle<()>,
    watchers: tokio::sync::mpsc::UnboundedSender<joerl_core::Pid>,
    health: Arc<std::sync::Mutex<ClusterHealth>>,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.follow.abort();
    }
}

impl ClusterNode {
    /// Starts membership for `node` with `config`, filling `directory` with
    /// members' dist addresses (the node should resolve through it: see
    /// [`MemberDirectory`]).
    pub async fn start(
        node: &DistributedSystem,
        config: &ClusterConfig,
        directory: Arc<MemberDirectory>,
    ) -> Result<ClusterNode, ClusterError> {
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
        let gossip = Gossip::start_keyed(config, key, identity)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: SocketAddr::new(config.bind_addr, config.port),
                source,
            })?;
        let mut events = gossip.subscribe();
        let (watchers, mut new_watchers) = tokio::sync::mpsc::unbounded_channel();
        let health = Arc::new(std::sync::Mutex::new(ClusterHealth::of(1, 0)));
        let shared_health = health.clone();
        // Held weakly: membership does not keep the node alive.
        let weak = node.downgrade();
        let follow = tokio::spawn(async move {
            // One queue per watching actor, drained by its own task with an
            // awaited send: none is dropped, order is kept, and a slow actor
            // delays nobody else.
            let mut queues: Vec<tokio::sync::mpsc::UnboundedSender<ClusterEvent>> = Vec::new();
            let mut active = std::collections::HashSet::new();
            let mut failed = std::collections::HashSet::new();
            loop {
                let event = tokio::select! {
                    // Watchers first: one registered before a change sees it.
                    biased;
                    Some(pid) = new_watchers.recv() => {
                        let Some(node) = weak.upgrade() else { return };
                        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ClusterEvent>();
                        let system: joerl_core::ActorSystem = (*node).clone();
                        tokio::spawn(async move {
                            while let Some(e) = rx.recv().await {
                                if system.send(pid, e).await.is_err() {
                                    return;
                                }
                            }
                        });
                        queues.push(tx);
                        continue;
                    }
                    e = events.recv() => match e { Some(e) => e, None => return },
                };
                let Some(node) = weak.upgrade() else { return };
                let out = match event {
                    SwimEvent::Up(id) => {
                        directory.set(&id.node, Some(id.dist));
                        failed.remove(&id.node);
                        active.insert(id.node.clone());
                        Some(ClusterEvent::MemberUp(id))
                    }
                    SwimEvent::Renamed { new, .. } => {
                        directory.set(&new.node, Some(new.dist));
                        None
                    }
                    SwimEvent::Down(id) => {
                        directory.set(&id.node, None);
                        node.disconnect(&id.node, "declared failed by cluster membership");
                        active.remove(&id.node);
                        failed.insert(id.node.clone());
                        Some(ClusterEvent::MemberFailed(id))
                    }
                    SwimEvent::Left(id) => {
                        directory.set(&id.node, None);
                        node.disconnect(&id.node, "left the cluster");
                        active.remove(&id.node);
                        failed.remove(&id.node);
                        Some(ClusterEvent::MemberLeft(id))
                    }
                };
                let now = ClusterHealth::of(active.len() + 1, failed.len());
                let changed = {
                    let mut h = shared_health.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = h.healthy != now.healthy;
                    *h = now;
                    changed
                };
                let mut send = |e: ClusterEvent| queues.retain(|q| q.send(e.clone()).is_ok());
                if let Some(e) = out {
                    send(e);
                }
                if changed {
                    send(ClusterEvent::HealthChanged(now));
                }
            }
        });
        Ok(ClusterNode {
            gossip,
            follow,
            watchers,
            health,
        })
    }

    /// Joins through `seeds` (`host:port` of their gossip sockets): how many
    /// resolved to an address and were announced to. Membership converges in
    /// the background; watch [`members`](Self::members).
    pub async fn join(&self, seeds: &[String]) -> Result<usize, ClusterError> {
        let mut addrs = Vec::new();
        let mut failed = Vec::new();
        for seed in seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(mut found) => match found.next() {
                    Some(a) => addrs.push(a),
                    None => failed.push((seed.clone(), "no address".to_string())),
                },
                Err(e) => failed.push((seed.clone(), e.to_string())),
            }
        }
        if addrs.is_empty() && !seeds.is_empty() {
            return Err(ClusterError::JoinFailed(failed));
        }
        let n = addrs.len();
        self.gossip.join(addrs);
        Ok(n)
    }

    /// The members known now (this node excluded).
    pub async fn members(&self) -> Vec<SwimMember> {
        self.gossip.members().await
    }

    /// Makes `actor` receive every [`ClusterEvent`] from now on, as
    /// messages, in order, none dropped (a full mailbox makes its queue wait,
    /// not anyone else's).
    pub fn monitor_members(&self, actor: joerl_core::Pid) {
        let _ = self.watchers.send(actor);
    }

    /// Whether the active members are a strict majority of the last known
    /// size, as this node sees it now.
    pub fn health(&self) -> ClusterHealth {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gossip member underneath (its address and counters).
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Leaves the cluster gracefully.
    pub async fn leave(self) {
        self.gossip.leave().await;
    }
}
