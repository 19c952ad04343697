//! Actors by identity on one node: routing a [`Dest::Placed`] to its owner,
//! activating an identity on its owner at its first message, and giving up
//! the identities a membership change gave to another member.
//!
//! The owner of `(kind, id)` is the [`Rendezvous`] choice among the
//! `Active` members (this node included) of a healthy view: every node
//! computes it alike from its own membership view, so routing needs no
//! lookup. A message to an identity travels as a send to the name
//! [`placed_name`] on the owner; the owner starts the activation when the
//! name is looked up and nothing holds it ([`NameService::activate`]). A
//! node without a healthy majority routes and activates nothing
//! ([`SendError::NotPlaced`]) and stops the activations it has. A node that
//! stops owning an identity (a member joined, or came back) stops its
//! activation.
//!
//! Not built yet (see CLUSTERING.md): the handoff that keeps one activation
//! per identity while views differ, buffering during a move, the leader's
//! coordination, migrate and drain, delivery guarantees.
//!
//! [`Dest::Placed`]: joerl_core::Dest::Placed
//! [`NameService::activate`]: joerl_core::NameService::activate

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use dashmap::DashMap;
use joerl_core::{Dest, ExitReason, Pid, SendError, SpawnOptions, WeakActorSystem};
use serde::{Deserialize, Serialize};

use super::kinds::{self, NamedKind};
use super::rendezvous::{Candidate, Identity, Placement, Rendezvous};
use crate::DistributedSystem;
use crate::cluster::ClusterError;

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
    /// Messages for identities this node does not own that arrived here
    /// (dropped: the sender's view was older or newer than this node's).
    pub not_owner: AtomicU64,
    /// Routings and activations refused for want of a healthy majority.
    pub no_majority: AtomicU64,
    /// Activations stopped because this node lost its healthy majority.
    pub stopped_no_majority: AtomicU64,
    /// Messages for kinds this binary does not register.
    pub unknown_kind: AtomicU64,
}

#[derive(Debug, Default)]
struct View {
    /// The `Active` members, this node included, by name.
    candidates: Vec<Candidate>,
    healthy: bool,
}

/// What the node's name service consults for placed identities.
pub(crate) struct PlacementState {
    me: String,
    system: WeakActorSystem,
    strategy: Rendezvous,
    view: RwLock<View>,
    activations: DashMap<Identity, ActivationInfo>,
    stats: PlacementStats,
}

impl PlacementState {
    fn owner(&self, identity: &Identity) -> Result<String, String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        if !v.healthy {
            self.stats.no_majority.fetch_add(1, Ordering::Relaxed);
            return Err("this node's membership view has no healthy majority".into());
        }
        let i = self
            .strategy
            .place(identity, &v.candidates)
            .ok_or_else(|| "no active member".to_string())?;
        Ok(v.candidates[i].node.clone())
    }

    /// See `NameService::route_placed`.
    pub(crate) fn route(&self, kind: &str, id: &str) -> Result<Dest, SendError> {
        let identity = Identity::new(kind, id);
        let owner = self
            .owner(&identity)
            .map_err(|reason| SendError::NotPlaced {
                identity: identity.to_string(),
                reason,
            })?;
        let name = placed_name(&identity);
        if owner == self.me {
            Ok(Dest::Name(name))
        } else {
            Ok(Dest::Remote { name, node: owner })
        }
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
            Ok(o) => {
                self.stats.not_owner.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%identity, owner = %o, "placement: not the owner here; dropped");
                return None;
            }
            Err(reason) => {
                tracing::debug!(%identity, %reason, "placement: not activated");
                return None;
            }
        }
        let system = self.system.upgrade()?;
        match (kind.spawn)(&system, &identity.id, SpawnOptions::new().name(name)) {
            Ok(pid) => {
                self.stats.activated.fetch_add(1, Ordering::Relaxed);
                self.activations.insert(
                    identity.clone(),
                    ActivationInfo {
                        identity,
                        pid,
                        since: SystemTime::now(),
                    },
                );
                Some(pid)
            }
            // Started by another lookup a moment ago.
            Err(_) => system.whereis_registered(name),
        }
    }

    /// A new view: the identities this node no longer owns are stopped.
    fn set_view(&self, candidates: Vec<Candidate>, healthy: bool) {
        {
            let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
            v.candidates = candidates;
            v.healthy = healthy;
        }
        let Some(system) = self.system.upgrade() else {
            return;
        };
        let mine: Vec<ActivationInfo> = self.activations.iter().map(|a| a.clone()).collect();
        for a in mine {
            if !system.is_alive(a.pid) {
                self.activations.remove(&a.identity);
                continue;
            }
            let reason = match self.owner(&a.identity) {
                Ok(owner) if owner == self.me => continue,
                Ok(owner) => {
                    self.stats.handed_off.fetch_add(1, Ordering::Relaxed);
                    format!("handoff to {owner}")
                }
                // The minority side keeps nothing running: the majority
                // side takes its identities over (as Akka's keep-majority).
                Err(_) => {
                    self.stats
                        .stopped_no_majority
                        .fetch_add(1, Ordering::Relaxed);
                    "no healthy majority".to_string()
                }
            };
            self.activations.remove(&a.identity);
            let _ = system.exit(a.pid, ExitReason::custom(reason));
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

/// Starts placement on `node` (clustering must be enabled): from then on
/// [`Dest::Placed`] addresses work here, and this
/// node activates the identities it owns. Every node that hosts or
/// addresses placed actors starts it.
pub fn start(node: &DistributedSystem) -> Result<Placements, PlacementError> {
    if let Some((name, a, b)) = kinds::conflicts().into_iter().next() {
        return Err(PlacementError::KindConflict(name, a, b));
    }
    let cluster = node.cluster()?;
    let state = Arc::new(PlacementState {
        me: node.name().to_string(),
        system: (**node).downgrade(),
        strategy: Rendezvous,
        view: RwLock::new(View::default()),
        activations: DashMap::new(),
        stats: PlacementStats::default(),
    });
    if !crate::cluster::names::ClusterNames::of(node).set_placement(state.clone()) {
        return Err(PlacementError::AlreadyStarted);
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
        state.set_view(candidates, view.healthy);
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
            kind: r.identity.kind,
            id: r.identity.id,
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
        PlacedRef {
            identity: Identity::new(kind, id),
        }
    }

    /// Activates the identity now, on its owner (Cajun's `register`),
    /// instead of at its first message.
    pub async fn register(&self, kind: &str, id: &str) -> Result<(), SendError> {
        self.system.send(self.actor_of(kind, id), Wake).await
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
        let mut v: Vec<ActivationInfo> = self
            .state
            .activations
            .iter()
            .filter(|a| self.system.is_alive(a.pid))
            .map(|a| a.clone())
            .collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        v
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
}
