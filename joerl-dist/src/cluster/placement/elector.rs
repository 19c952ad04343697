//! The embedded leader election running on a node: an actor registered as
//! [`LEADER_SERVER`] that feeds [`Election`] the membership view and its
//! peers' announcements and refusals, sends what it asks, and publishes
//! `ClusterEvent::LeaderChanged` to the cluster's subscribers. The
//! leader announces itself again every [`ANNOUNCE_AGAIN`], so a member
//! that missed an announcement learns it.

use std::sync::{Arc, Mutex};

use joerl_core::{Actor, ActorContext, Message, Pid, SpawnOptions, WeakActorSystem};
use serde::{Deserialize, Serialize};

use super::leader::{Election, ElectionEffect, Leader, LeaderElection};
use super::view::{self, View};
use crate::DistributedSystem;
use crate::cluster::{Cluster, ClusterError, ClusterEvent};

/// The registered name of the leader election's actor on every node.
pub const LEADER_SERVER: &str = "joerl_leader";

/// `node` leads at `epoch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Announce {
    node: String,
    epoch: u64,
}
crate::remote_message!(Announce, "joerl::leader::Announce");

/// The announcement was below the receiver's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refuse {
    epoch: u64,
}
crate::remote_message!(Refuse, "joerl::leader::Refuse");

/// Start a new term (sent to the leader).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ForceElection;
crate::remote_message!(ForceElection, "joerl::leader::ForceElection");

/// A new membership view is in the slot (local only).
struct NewView;

/// The leader's timer to announce itself again (local only).
struct AnnounceAgain;

/// How often a leader announces itself again to every member (an
/// announcement lost to a connection that was not up yet is repaired).
pub const ANNOUNCE_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);

struct ElectorActor {
    me: String,
    election: Arc<Mutex<Election>>,
    active: Vec<String>,
    cluster: Cluster,
    /// The latest view, left by the membership follower: taken at every
    /// message, so a wake-up lost to a full mailbox loses no view.
    latest: Arc<Mutex<Option<View>>>,
}

impl ElectorActor {
    async fn carry_out(&mut self, ctx: &ActorContext, effects: Vec<ElectionEffect>) {
        for e in effects {
            match e {
                ElectionEffect::Announce { epoch } => {
                    for n in self.active.iter().filter(|n| **n != self.me) {
                        let a = Announce {
                            node: self.me.clone(),
                            epoch,
                        };
                        let _ = ctx.send((LEADER_SERVER, n.as_str()), a).await;
                    }
                }
                ElectionEffect::Refuse { to, epoch } => {
                    let _ = ctx
                        .send((LEADER_SERVER, to.as_str()), Refuse { epoch })
                        .await;
                }
                ElectionEffect::Changed(leader) => {
                    let epoch = self.lock().epoch();
                    tracing::info!(?leader, epoch, "placement: leader changed");
                    self.cluster.publish(ClusterEvent::LeaderChanged {
                        leader: leader.map(|l| l.node),
                        epoch,
                    });
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Election> {
        self.election.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Actor for ElectorActor {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.send_after(ctx.pid(), AnnounceAgain, ANNOUNCE_AGAIN);
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(v) = latest {
            self.active = v.active.iter().map(|(n, _)| n.clone()).collect();
            let active = self.active.clone();
            let effects = self.lock().on_view(&active, v.healthy);
            self.carry_out(ctx, effects).await;
        }
        let effects = joerl_core::receive!(msg, {
            NewView as _v => Vec::new(),
            AnnounceAgain as _a => {
                ctx.send_after(ctx.pid(), AnnounceAgain, ANNOUNCE_AGAIN);
                let e = self.lock();
                if e.is_leader() {
                    vec![ElectionEffect::Announce { epoch: e.epoch() }]
                } else {
                    Vec::new()
                }
            },
            Announce as a => self.lock().on_announce(&a.node, a.epoch),
            Refuse as r => self.lock().on_refused(r.epoch),
            ForceElection as _f => {
                let (mine, leader) = {
                    let e = self.lock();
                    (e.is_leader(), e.leader().cloned())
                };
                if mine {
                    self.lock().force()
                } else {
                    // Passed on to the leader, which starts the term.
                    if let Some(l) = leader {
                        let _ = ctx.send((LEADER_SERVER, l.node.as_str()), ForceElection).await;
                    }
                    Vec::new()
                }
            },
            else _other => Vec::new(),
        });
        self.carry_out(ctx, effects).await;
    }
}

/// The embedded leader election of one node (the default
/// [`LeaderElection`]). Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLeader {
    election: Arc<Mutex<Election>>,
    server: Pid,
    system: WeakActorSystem,
}

impl std::fmt::Debug for EmbeddedLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLeader")
            .field("leader", &self.leader())
            .finish()
    }
}

impl EmbeddedLeader {
    fn lock(&self) -> std::sync::MutexGuard<'_, Election> {
        self.election.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if this node leads now.
    pub fn is_leader(&self) -> bool {
        self.lock().is_leader()
    }
}

impl LeaderElection for EmbeddedLeader {
    fn leader(&self) -> Option<Leader> {
        self.lock().leader().cloned()
    }

    fn force_election(&self) {
        if let Some(system) = self.system.upgrade() {
            let _ = system.try_send(self.server, ForceElection);
        }
    }

    fn accepts(&self, node: &str, epoch: u64) -> bool {
        self.lock().accepts(node, epoch)
    }
}

/// Why the election did not start.
#[derive(Debug, thiserror::Error)]
pub enum ElectorError {
    /// It needs membership: enable clustering first.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Its name is taken (it runs already).
    #[error("the leader election cannot start: {0}")]
    Spawn(#[from] joerl_core::SpawnError),
}

/// Starts the embedded leader election on `node` (clustering enabled
/// first); every member that takes part starts it.
pub fn start(node: &DistributedSystem) -> Result<EmbeddedLeader, ElectorError> {
    let cluster = node.cluster()?;
    let me = node.name().to_string();
    let election = Arc::new(Mutex::new(Election::new(me.clone())));
    let latest: Arc<Mutex<Option<View>>> = Arc::default();
    let server = node.spawn_with(
        ElectorActor {
            me,
            election: election.clone(),
            active: Vec::new(),
            cluster: cluster.clone(),
            latest: latest.clone(),
        },
        SpawnOptions::new().name(LEADER_SERVER),
    )?;
    let system = (**node).downgrade();
    let s = system.clone();
    view::follow(cluster, move |v| {
        let Some(sys) = s.upgrade() else { return false };
        *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        let _ = sys.try_send(server, NewView);
        sys.is_alive(server)
    });
    Ok(EmbeddedLeader {
        election,
        server,
        system,
    })
}
