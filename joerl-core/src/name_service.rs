//! The seam for cluster-wide addresses: [`Dest::Global`], [`Dest::Group`]
//! and [`Dest::Placed`] are looked up in the node's [`NameService`], which
//! the cluster layer (joerl-dist's `cluster::global`, `cluster::pg` and
//! `cluster::placement`) installs, as the [`Router`](crate::Router) is the
//! seam for other nodes' Pids. A name looked up here and not registered may
//! be started on the spot by the service ([`NameService::activate`]: a
//! placed identity's first message).
//!
//! [`Dest::Global`]: crate::Dest::Global
//! [`Dest::Group`]: crate::Dest::Group
//! [`Dest::Placed`]: crate::Dest::Placed

use std::sync::Arc;

use crate::{Dest, GroupDest, Message, Pid, SendError};

/// Where a message to a placed identity goes now: the name its activation
/// is registered under, on this node or on its owner, or (for a send, see
/// [`NameService::route_placed_send`]) the activation's Pid. Shared
/// strings, so a service that caches routes hands out copies without
/// allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacedRoute {
    /// The activation itself, for a send: the service learnt its Pid and
    /// answers [`NameService::moved`] for it once it is gone, so a message
    /// that reaches it too late goes on to the identity's next activation.
    /// Never the answer for a call or a monitor (those go by name, which
    /// activates the identity again).
    Activation(Pid),
    /// Registered (or activated on its first message) here.
    Here(Arc<str>),
    /// Registered (or activated on its first message) on `node`.
    There {
        /// The registered name.
        name: Arc<str>,
        /// The owner node's full name.
        node: Arc<str>,
    },
}

impl From<PlacedRoute> for Dest {
    fn from(r: PlacedRoute) -> Dest {
        match r {
            PlacedRoute::Activation(pid) => Dest::Pid(pid),
            PlacedRoute::Here(name) => Dest::Name(name.to_string()),
            PlacedRoute::There { name, node } => Dest::Remote {
                name: name.to_string(),
                node: node.to_string(),
            },
        }
    }
}

/// Looks cluster-wide addresses up, without waiting: from a view the
/// cluster layer keeps in memory.
pub trait NameService: Send + Sync + 'static {
    /// The process registered in the whole cluster as `name` now.
    fn whereis_global(&self, name: &str) -> Result<Option<Pid>, SendError>;

    /// The members a message to `dest` goes to now: every member for
    /// [`Pick::All`](crate::Pick::All), else the one picked. Empty when the
    /// group has no member; an error when the scope does not run here.
    fn group_targets(&self, dest: &GroupDest) -> Result<Vec<Pid>, SendError>;

    /// A copy of `msg`, for the second and later members of a group send;
    /// `None` if the message's type cannot be copied.
    fn copy_message(&self, msg: &Message) -> Option<Message>;

    /// Where a message to the placed identity `(kind, id)` goes now: a name
    /// on this node or on its owner node. Called for every send by identity:
    /// keep it cheap (a cached route). `kind` and `id` are the
    /// destination's own shared strings: a cache may keep them and compare
    /// by pointer before comparing the text.
    fn route_placed(&self, kind: &Arc<str>, id: &Arc<str>) -> Result<PlacedRoute, SendError> {
        let _ = id;
        Err(SendError::NoNameService(format!(
            "the placed kind {kind:?}"
        )))
    }

    /// Like [`route_placed`](Self::route_placed), for a send (not a call or
    /// a monitor): may answer [`PlacedRoute::Activation`] with the Pid of
    /// the identity's activation, which the service must then answer
    /// [`moved`](Self::moved) for after it ends (for as long as senders
    /// may still hold it), so that no message is lost that its name would
    /// have delivered. By default, the route by name.
    fn route_placed_send(&self, kind: &Arc<str>, id: &Arc<str>) -> Result<PlacedRoute, SendError> {
        self.route_placed(kind, id)
    }

    /// A message (from this node or another) came for the local `pid`,
    /// which is gone: the name it goes to instead, looked up (and
    /// activated) as a named send would be. The service answers it for
    /// the Pids it handed out as [`PlacedRoute::Activation`]; `None` (the
    /// default) drops the message, as a send to a dead Pid is lost in
    /// Erlang. Called only when a delivery fails: it may take a lock.
    fn moved(&self, pid: Pid) -> Option<String> {
        let _ = pid;
        None
    }

    /// Nothing is registered here as `name`, which something is sent to,
    /// called or monitored by: the process that takes it now, if the
    /// service starts one (a placed identity's activation on its owner).
    fn activate(&self, name: &str) -> Option<Pid> {
        let _ = name;
        None
    }
}
