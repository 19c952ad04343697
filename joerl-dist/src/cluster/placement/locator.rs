//! The location cache's Pids: how a node learns the Pid of an identity's
//! activation on another member, so its sends by identity go by Pid (as
//! fast as a send to a Pid) instead of by name, and how it forgets it.
//!
//! Every node runs a locator ([`LOCATOR`]). When a send by identity finds
//! a cached route to another member without a Pid, the sender's node asks
//! that member's locator once ([`Locate`], again at most every
//! [`ASK_AGAIN`](super::placements::ASK_AGAIN) while there is none): the
//! owner answers the Pid of the identity's running activation
//! ([`Located`]), and records that it handed it out. The asking locator
//! monitors that Pid and caches it with the route; the down (the
//! activation passivated or stopped, or its node was lost) takes it out
//! of the cache again. Until the down arrives, a message sent to the gone
//! activation is not lost: the owner's name service answers
//! [`NameService::moved`](joerl_core::NameService::moved) for every Pid it
//! handed out, and the message goes on to the identity's name there (the
//! next activation, or the forwarder of one that handed off), as a send by
//! name would have. A change of the membership view or of the leader's
//! directives drops every cached Pid with its route.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use joerl_core::{Actor, ActorContext, Dest, DownMessage, Message, MonitorRef, Pid, SpawnOptions};
use serde::{Deserialize, Serialize};

use super::placements::PlacementState;
use super::rendezvous::Identity;

/// The registered name of every node's locator.
pub const LOCATOR: &str = "joerl_placement_locator";

/// Pids a locator monitors at most (past it, routes to more activations
/// stay routes by name).
pub const MAX_WATCHED: usize = super::placements::ROUTE_CACHE_MAX;

/// Asks the locator of the member that owns `identity` for the Pid of its
/// activation; the answer goes to `reply_to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Locate {
    /// The identity's kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// The asking node's view generation, returned with the answer.
    pub generation: u64,
    /// The asking node's locator.
    pub reply_to: Pid,
}
crate::remote_message!(Locate, "joerl::placement::Locate");

/// The answer to a [`Locate`]: the Pid of the identity's running
/// activation on the answering member, or none (not running there, or
/// still claiming).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Located {
    /// The identity's kind.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// The generation the question carried.
    pub generation: u64,
    /// The activation.
    pub pid: Option<Pid>,
}
crate::remote_message!(Located, "joerl::placement::Located");

/// Asks the local locator to learn where an identity runs on `node`
/// (local only).
pub(crate) struct Learn {
    pub(crate) kind: Arc<str>,
    pub(crate) id: Arc<str>,
    pub(crate) node: Arc<str>,
    pub(crate) generation: u64,
}

/// A node's locator: asks owners, answers askers, watches what it cached.
struct Locator {
    state: Weak<PlacementState>,
    /// The Pids it monitors, with the identity each one runs.
    watched: HashMap<Pid, (MonitorRef, Identity)>,
    /// The same, by monitor.
    by_monitor: HashMap<MonitorRef, Pid>,
}

impl Actor for Locator {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let msg = match msg.downcast::<Learn>() {
            Ok(learn) => {
                let ask = Locate {
                    kind: learn.kind.to_string(),
                    id: learn.id.to_string(),
                    generation: learn.generation,
                    reply_to: ctx.pid(),
                };
                let to = Dest::Remote {
                    name: LOCATOR.to_string(),
                    node: learn.node.to_string(),
                };
                if let Err(e) = ctx.try_send(to, ask) {
                    tracing::debug!(node = %learn.node, error = %e, "placement: could not ask where an activation runs");
                }
                return;
            }
            Err(m) => m,
        };
        let msg = match msg.downcast::<Locate>() {
            Ok(ask) => {
                let identity = Identity::new(ask.kind, ask.id);
                let pid = state.hand_out(&identity);
                let answer = Located {
                    kind: identity.kind,
                    id: identity.id,
                    generation: ask.generation,
                    pid,
                };
                if let Err(e) = ctx.try_send(ask.reply_to, answer) {
                    tracing::debug!(to = %ask.reply_to, error = %e, "placement: could not say where an activation runs");
                }
                return;
            }
            Err(m) => m,
        };
        let msg = match msg.downcast::<Located>() {
            Ok(answer) => {
                let Some(pid) = answer.pid else { return };
                let identity = Identity::new(answer.kind, answer.id);
                match self.watched.get(&pid) {
                    Some((_, watched)) if *watched == identity => {}
                    // One Pid runs one identity: an answer that says
                    // otherwise is not believed.
                    Some(_) => return,
                    None => {
                        if self.watched.len() >= MAX_WATCHED {
                            state.count_unwatched();
                            return;
                        }
                        let Ok(monitor) = ctx.monitor(pid) else {
                            return;
                        };
                        self.watched.insert(pid, (monitor, identity.clone()));
                        self.by_monitor.insert(monitor, pid);
                    }
                }
                // Learnt after the monitor is set: its down, if the
                // activation is gone already, comes after this and unlearns.
                state.learn(&identity, answer.generation, pid);
                return;
            }
            Err(m) => m,
        };
        if let Ok(down) = msg.downcast::<DownMessage>() {
            if let Some(pid) = self.by_monitor.remove(&down.monitor) {
                if let Some((_, identity)) = self.watched.remove(&pid) {
                    state.unlearn(&identity, pid);
                }
            }
        }
    }
}

/// Starts the locator of `state`.
pub(crate) fn start(
    system: &joerl_core::ActorSystem,
    state: &Arc<PlacementState>,
) -> Result<Pid, joerl_core::SpawnError> {
    system.spawn_with(
        Locator {
            state: Arc::downgrade(state),
            watched: HashMap::new(),
            by_monitor: HashMap::new(),
        },
        SpawnOptions::new().name(LOCATOR),
    )
}
