//! Errors of the runtime's public operations.

use std::fmt;

use crate::{Message, Pid, RouteError, UnsentMessage};

/// Why a message could not be sent.
pub enum SendError {
    /// No live actor has this Pid (it exited, never existed, or belongs to an
    /// older incarnation of this node).
    NoProc(Pid),
    /// No actor is registered under this name.
    NameNotRegistered(String),
    /// The mailbox is full (only from `try_send`); the message is handed back.
    Full(UnsentMessage),
    /// The Pid belongs to another node and no distribution router is installed.
    /// Start the node through `joerl-dist` to talk to other nodes.
    NoRouter(Pid),
    /// A named send to another node, but no distribution router is installed.
    NoRouterForNode(String),
    /// The distribution layer refused the message.
    Route(RouteError),
    /// No process is registered in the cluster under this global name.
    GlobalNotRegistered(String),
    /// The process group has no member (as far as this node knows now).
    EmptyGroup {
        /// The scope.
        scope: String,
        /// The group.
        group: String,
    },
    /// A global name or a group was the address, but this node runs no
    /// name service for it: start joerl-dist's `cluster::global` (for global
    /// names) or the `cluster::pg` scope (for groups) on this node.
    NoNameService(String),
    /// A message to every member of a group could not be copied: register
    /// its type with `joerl_dist::remote_message!` (registered types are
    /// copied through their encoding).
    NotCopyable(&'static str),
    /// A placed identity cannot be routed now (no healthy majority, no
    /// active member, or its kind is not registered); the reason says which.
    NotPlaced {
        /// The identity, `kind/id`.
        identity: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoProc(pid) => write!(f, "no process {pid}: it exited or never existed"),
            SendError::NameNotRegistered(name) => {
                write!(f, "no process is registered as {name:?}")
            }
            SendError::Full(_) => f.write_str("mailbox full"),
            SendError::NoRouter(pid) => write!(
                f,
                "{pid} lives on another node and this system has no distribution router; \
                 start it as a node with joerl-dist"
            ),
            SendError::NoRouterForNode(node) => write!(
                f,
                "node {node:?} is another node and this system has no distribution router; \
                 start it as a node with joerl-dist"
            ),
            SendError::Route(e) => write!(f, "{e}"),
            SendError::GlobalNotRegistered(name) => {
                write!(f, "no process is registered globally as {name:?}")
            }
            SendError::EmptyGroup { scope, group } => {
                write!(f, "process group {group:?} (scope {scope:?}) has no member")
            }
            SendError::NoNameService(what) => write!(
                f,
                "{what} needs a cluster name service on this node; start joerl-dist's \
                 cluster::global or the cluster::pg scope"
            ),
            SendError::NotPlaced { identity, reason } => {
                write!(f, "{identity} cannot be placed now: {reason}")
            }
            SendError::NotCopyable(ty) => write!(
                f,
                "a message of type {ty} cannot be copied for every member of a group; \
                 register it with joerl_dist::remote_message!"
            ),
        }
    }
}

impl std::error::Error for SendError {}

impl SendError {
    /// Takes back the unsent message, where the error carries it.
    pub fn into_message(self) -> Option<Message> {
        match self {
            SendError::Full(m)
            | SendError::Route(RouteError::Full(m))
            | SendError::Route(RouteError::UnknownNode { msg: m, .. }) => Some(m.into_inner()),
            _ => None,
        }
    }
}

/// Why a spawn with options failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The requested name is already registered to another actor.
    #[error("the name {0:?} is already registered to another actor")]
    NameTaken(String),
    /// The actor to link to is not alive.
    #[error("cannot link the new actor to {0}: no such process")]
    LinkTargetDead(Pid),
}

/// Why `register` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is already registered.
    #[error("the name {0:?} is already registered to another actor")]
    NameTaken(String),
    /// The actor already has a name (an actor has at most one, as in Erlang).
    #[error("{pid} is already registered as {name:?}")]
    AlreadyNamed {
        /// The actor.
        pid: Pid,
        /// Its current name.
        name: String,
    },
    /// The actor is not alive (or is not a local actor).
    #[error("cannot register {0}: no such local process")]
    NoProc(Pid),
}

/// Why a link or monitor request failed before any signal was sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The target lives on another node and no distribution router is installed.
    #[error(
        "{0} lives on another node and this system has no distribution router; start it as a node with joerl-dist"
    )]
    NoRouter(Pid),
    /// The distribution layer refused the signal.
    #[error("{0}")]
    Route(RouteError),
}

/// Why a node operation of an actor (`monitor_node`, `monitor_nodes`) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// This actor system is not a distributed node: start it with joerl-dist
    /// (`NodeBuilder`) to watch other nodes.
    #[error(
        "this actor system is not a distributed node; start it with joerl-dist's NodeBuilder to watch other nodes"
    )]
    NotANode,
    /// The distribution layer refused; the cause is its error (with
    /// joerl-dist, a `joerl_dist::DistError`, found by downcasting).
    #[error("{0}")]
    Dist(std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

impl From<crate::NodeOpError> for NodeError {
    fn from(e: crate::NodeOpError) -> Self {
        match e {
            crate::NodeOpError::Unsupported => NodeError::NotANode,
            crate::NodeOpError::Failed(cause) => NodeError::Dist(cause),
        }
    }
}

/// Why [`ActorSystem::start`](crate::ActorSystem::start) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The actor could not be spawned.
    #[error("{0}")]
    Spawn(SpawnError),
    /// The actor stopped before its `started` callback finished.
    #[error("the actor stopped while starting: {0}")]
    Stopped(crate::ExitReason),
}
