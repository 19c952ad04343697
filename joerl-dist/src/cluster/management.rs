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
}

impl Management {
    /// The management API of `node`, with its placement.
    pub fn new(node: &DistributedSystem, placements: &Placements) -> Result<Self, ClusterError> {
        Ok(Management {
            node: node.clone(),
            cluster: node.cluster()?,
            placements: placements.clone(),
        })
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
