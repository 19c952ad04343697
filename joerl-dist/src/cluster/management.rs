//! The management API (Cajun's, Akka Management's): what the cluster is
//! made of and what runs where, and the leader's commands, as a Rust API
//! ([`Management`]) and over HTTP JSON ([`http`]).

pub mod http;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use joerl_core::Dest;
use joerl_core::gen_server::{CallResponse, HandleCall, ReplyTo, Request, ServerRef};
use serde::{Deserialize, Serialize};

use super::placement::handoff::{ClaimServer, PLACEMENT_SERVER};
use super::placement::{CommandError, Identity, Placements};
use super::{Cluster, ClusterError, MemberState};
use crate::DistributedSystem;

/// Most activations one member lists in an answer to [`ListActivations`].
pub const MAX_LISTED: usize = 100_000;

/// How long [`Management::actors`] waits for each member.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// One member, as [`Management::nodes`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its full name.
    pub name: String,
    /// Its membership state (`Active`, `Suspected`, `Failed`, ...).
    pub state: String,
    /// Its gossip address.
    pub gossip_addr: String,
    /// Its distribution address.
    pub dist_addr: String,
    /// True if identities are placed on it now (it runs placement, is
    /// active and is not drained).
    pub places: bool,
    /// True if it is being drained.
    pub draining: bool,
    /// True if it is the leader this node accepts.
    pub leader: bool,
}

/// One activation, as [`Management::actors`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// The identity's kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// The node it runs on.
    pub node: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
}

/// Every member's activations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActorList {
    /// The activations, by kind, id and node.
    pub actors: Vec<ActorInfo>,
    /// Members that did not answer in time (their activations are missing).
    pub unanswered: Vec<String>,
    /// Members that listed only their first [`MAX_LISTED`].
    pub truncated: Vec<String>,
}

/// The cluster's health as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    /// The node answering.
    pub node: String,
    /// True if it sees a healthy majority (identities are placed).
    pub healthy: bool,
    /// Active (or suspected) members, itself included.
    pub active: usize,
    /// The last known size.
    pub total: usize,
    /// Suspected members.
    pub suspected: usize,
    /// The leader it accepts, if any.
    pub leader: Option<String>,
    /// The leader's epoch (0: none).
    pub epoch: u64,
    /// Members being drained.
    pub draining: Vec<String>,
    /// Identities pinned by migrations.
    pub pinned: usize,
    /// Identities registered for eager activation.
    pub registered: usize,
    /// The metadata store as this node last reached it (`None`: no store
    /// is watched, as with the embedded mode).
    #[serde(default)]
    pub store: Option<StoreHealth>,
    /// True if the metadata store is unreachable: sends to identities
    /// already located go on, new placements wait for it.
    #[serde(default)]
    pub degraded: bool,
}

/// The metadata store's reachability in [`HealthInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// True if its last call got an answer.
    pub reachable: bool,
    /// Since when it does not answer (milliseconds since the Unix epoch).
    pub unreachable_since_ms: Option<u64>,
    /// Its last failure, while unreachable.
    pub error: Option<String>,
}

impl From<&super::store::retry::StoreReachability> for StoreHealth {
    fn from(r: &super::store::retry::StoreReachability) -> Self {
        use super::store::retry::StoreReachability as R;
        match r {
            R::Reachable => StoreHealth {
                reachable: true,
                unreachable_since_ms: None,
                error: None,
            },
            R::Unreachable { since, error } => StoreHealth {
                reachable: false,
                unreachable_since_ms: since
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                error: Some(error.clone()),
            },
        }
    }
}

/// Asks a member's placement server for its activations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListActivations;

/// A member's answer to [`ListActivations`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    /// Its activations (at most [`MAX_LISTED`]).
    pub actors: Vec<ActorInfo>,
    /// True if it has more.
    pub truncated: bool,
}
impl Request for ListActivations {
    type Reply = Listed;
}

impl HandleCall<ListActivations> for ClaimServer {
    async fn handle_call(
        &mut self,
        _req: ListActivations,
        _from: ReplyTo<Listed>,
        ctx: &mut joerl_core::ActorContext,
    ) -> CallResponse<Listed> {
        let node = ctx.node().unwrap_or("").to_string();
        let all = self.activations();
        let truncated = all.len() > MAX_LISTED;
        let actors = all
            .into_iter()
            .take(MAX_LISTED)
            .map(|a| ActorInfo {
                kind: a.identity.kind,
                id: a.identity.id,
                node: node.clone(),
                since_unix_ms: unix_ms(a.since),
            })
            .collect();
        CallResponse::Reply(Listed { actors, truncated })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The management API of one node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Management {
    node: DistributedSystem,
    cluster: Cluster,
    placements: Placements,
    store: Option<tokio::sync::watch::Receiver<super::store::retry::StoreReachability>>,
}

impl Management {
    /// The management API of `node`, with its placement.
    pub fn new(node: &DistributedSystem, placements: &Placements) -> Result<Self, ClusterError> {
        Ok(Management {
            node: node.clone(),
            cluster: node.cluster()?,
            placements: placements.clone(),
            // Placement through a store: its reachability is the node's.
            store: placements.store().map(|s| s.store().subscribe()),
        })
    }

    /// Reports `store`'s reachability in [`Management::health`] (and
    /// `degraded` while it is unreachable).
    pub fn with_store(mut self, store: &super::store::retry::RetryingStore) -> Self {
        self.store = Some(store.subscribe());
        self
    }

    /// The node it manages.
    pub fn node(&self) -> &DistributedSystem {
        &self.node
    }

    /// The placement it manages.
    pub fn placements(&self) -> &Placements {
        &self.placements
    }

    /// Every member this node knows (itself included), by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let table = self.placements.directives();
        let placed = self.placements.members();
        let leader = self.placements.leader().map(|l| l.node);
        let mut members = self.cluster.members();
        if !members.iter().any(|m| m.name == self.node.name()) {
            members.push(self.cluster.self_member());
        }
        let mut v: Vec<NodeInfo> = members
            .into_iter()
            .map(|m| {
                let draining = table.draining.contains(&m.name);
                NodeInfo {
                    places: placed.contains(&m.name) && !draining,
                    draining,
                    leader: leader.as_deref() == Some(m.name.as_str()),
                    state: format!("{:?}", m.state),
                    gossip_addr: m.gossip_addr.to_string(),
                    dist_addr: m.dist_addr.to_string(),
                    name: m.name,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every activation in the cluster: asked of every active member's
    /// placement server at once ([`LIST_TIMEOUT`] each).
    pub async fn actors(&self) -> ActorList {
        let mut members: Vec<String> = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Active || m.state == MemberState::Suspected)
            .map(|m| m.name)
            .collect();
        if !members.iter().any(|m| m == self.node.name()) {
            members.push(self.node.name().to_string());
        }
        let mut calls = tokio::task::JoinSet::new();
        for name in members {
            let node = self.node.clone();
            calls.spawn(async move {
                let server: ServerRef<ClaimServer> = ServerRef::new(Dest::Remote {
                    name: PLACEMENT_SERVER.to_string(),
                    node: name.clone(),
                });
                (
                    name,
                    node.call_timeout(&server, ListActivations, LIST_TIMEOUT)
                        .await,
                )
            });
        }
        let mut out = ActorList::default();
        while let Some(r) = calls.join_next().await {
            let Ok((name, answer)) = r else { continue };
            match answer {
                Ok(listed) => {
                    if listed.truncated {
                        out.truncated.push(name);
                    }
                    out.actors.extend(listed.actors);
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "management: no list of activations");
                    out.unanswered.push(name);
                }
            }
        }
        out.actors
            .sort_by(|a, b| (&a.kind, &a.id, &a.node).cmp(&(&b.kind, &b.id, &b.node)));
        out.unanswered.sort();
        out.truncated.sort();
        out
    }

    /// The cluster's health as this node sees it.
    pub fn health(&self) -> HealthInfo {
        let h = self.cluster.health();
        let table = self.placements.directives();
        let leader = self.placements.leader();
        HealthInfo {
            node: self.node.name().to_string(),
            healthy: h.healthy,
            active: h.active,
            total: h.total,
            suspected: h.suspected,
            epoch: leader.as_ref().map_or(0, |l| l.epoch),
            leader: leader.map(|l| l.node),
            draining: table.draining.into_iter().collect(),
            pinned: table.pins.len(),
            registered: table.registered.len(),
            store: self.store.as_ref().map(|r| StoreHealth::from(&*r.borrow())),
            degraded: self.store.as_ref().is_some_and(|r| {
                !matches!(
                    *r.borrow(),
                    super::store::retry::StoreReachability::Reachable
                )
            }),
        }
    }

    /// Moves `(kind, id)` to `node` (see [`Placements::migrate`]).
    pub async fn migrate(&self, kind: &str, id: &str, node: &str) -> Result<(), CommandError> {
        self.placements
            .migrate(&Identity::new(kind, id), node)
            .await
    }

    /// Drains `node` (see [`Placements::drain`]).
    pub async fn drain(&self, node: &str) -> Result<(), CommandError> {
        self.placements.drain(node).await
    }

    /// Places on `node` again (see [`Placements::undrain`]).
    pub async fn undrain(&self, node: &str) -> Result<(), CommandError> {
        self.placements.undrain(node).await
    }

    /// Starts a new leader term (see [`Placements::force_election`]).
    pub fn force_election(&self) {
        self.placements.force_election();
    }
}
