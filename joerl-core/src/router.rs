//! The one seam between the local runtime and the distribution layer.
//!
//! The [`ActorSystem`](crate::ActorSystem) consults its [`Router`] for every Pid
//! whose node is not its own: sends, named sends to other nodes, and signals
//! (link, unlink, monitor, demonitor, exit, down). `joerl-dist` installs one;
//! without it such operations fail with [`SendError::NoRouter`](crate::SendError::NoRouter)
//! instead of vanishing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Message, Pid, Signal, UnsentMessage};

/// Why the router could not take a message or signal.
pub enum RouteError {
    /// The outgoing queue toward the node is full; the message is handed back.
    /// [`Router::ready`] resolves when there is room again.
    Full(UnsentMessage),
    /// The node is not connected and could not be reached.
    Unreachable {
        /// The node, by name or id, as text.
        node: String,
        /// Why it could not be reached.
        reason: String,
    },
    /// The router does not know the node with this id (it never talked to it);
    /// the message is handed back. An async send asks [`Router::resolve`] once
    /// and retries.
    UnknownNode {
        /// The node id.
        node: u32,
        /// The unsent message.
        msg: UnsentMessage,
    },
    /// The message cannot cross nodes (for example its type is not registered
    /// for the wire).
    NotSerializable {
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The router is shutting down.
    Closed,
}

impl fmt::Debug for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Full(_) => f.write_str("the outgoing queue to the node is full"),
            RouteError::UnknownNode { node, .. } => write!(
                f,
                "node id {node} is unknown here: no connection to it and EPMD does not list it; \
                 reach it once by name (connect or a named send)"
            ),
            RouteError::Unreachable { node, reason } => {
                write!(f, "node {node} is unreachable: {reason}")
            }
            RouteError::NotSerializable { detail } => {
                write!(f, "message cannot be sent to another node: {detail}")
            }
            RouteError::Closed => f.write_str("the distribution layer is shut down"),
        }
    }
}

impl std::error::Error for RouteError {}

/// A boxed future returned by [`Router::ready`].
pub type ReadyFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A boxed future returned by [`Router::connect`]: `Err` carries why the node
/// cannot be reached.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), Arc<dyn std::error::Error + Send + Sync>>> + Send + 'a>>;

/// A boxed future returned by [`Router::whereis`].
pub type WhereisFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Pid>, crate::CallError>> + Send + 'a>>;

/// Why a node operation ([`Router::monitor_node`], [`Router::monitor_nodes`])
/// did not happen.
#[derive(Debug, Clone)]
pub enum NodeOpError {
    /// The router does not do it (this system is not a distributed node).
    Unsupported,
    /// The distribution layer refused; the cause is its own error (with
    /// joerl-dist, a `joerl_dist::DistError`: for example a malformed node name).
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

/// Carries messages and signals to actors on other nodes.
///
/// Implementations must never drop a signal silently: when a `Link` or `Monitor`
/// cannot reach its node, the router answers the local side itself with an
/// exit or down signal carrying `NoConnection` (through
/// [`ActorSystem::refuse_signal`](crate::ActorSystem::refuse_signal)).
pub trait Router: Send + Sync + 'static {
    /// Queues `msg` for the remote actor `to`, without waiting.
    fn try_send(&self, from: Option<Pid>, to: Pid, msg: Message) -> Result<(), RouteError>;

    /// Queues `msg` for the actor registered as `name` on the node named `node`.
    fn try_send_named(
        &self,
        from: Option<Pid>,
        name: &str,
        node: &str,
        msg: Message,
    ) -> Result<(), RouteError>;

    /// Resolves when the queue toward `node` (a node id, or `None` for the node named
    /// in a named send) likely has room again, after a send returned [`RouteError::Full`].
    fn ready(&self, node: Option<u32>, node_name: Option<&str>) -> ReadyFuture<'_>;

    /// Delivers a signal to the remote actor `to`.
    fn signal(&self, to: Pid, signal: Signal) -> Result<(), RouteError>;

    /// Starts monitor `monitor`, held by the local actor `from`, on whatever
    /// actor is registered as `name` on the node named `node` (Erlang's
    /// `monitor(process, {Name, Node})`): the remote node resolves the name and
    /// monitors that actor, or answers a down with `noproc` if nothing is
    /// registered. Losing the node answers a down with `noconnection`, as for
    /// any monitor. The down names the actor as [`Pid::new`]`(node_id(node), 0, 0)`
    /// unless the remote node says which actor it was. The default refuses.
    fn monitor_named(
        &self,
        from: Pid,
        monitor: crate::MonitorRef,
        name: &str,
        node: &str,
    ) -> Result<(), RouteError> {
        let _ = (from, monitor, name);
        Err(RouteError::Unreachable {
            node: node.to_string(),
            reason: "this router cannot monitor by name".into(),
        })
    }

    /// True if the router knows how to reach the node with id `node` (it has
    /// talked to it, or knows its name). Consulted before a call monitors a
    /// server; sends learn it from [`RouteError::UnknownNode`] instead. The
    /// default says yes.
    fn is_known(&self, node: u32) -> bool {
        let _ = node;
        true
    }

    /// Tries to learn how to reach the node with id `node` that this node has
    /// never talked to (for example by asking EPMD which name hashes to it).
    /// Awaited once by an async send that got [`RouteError::UnknownNode`], before
    /// it retries. The default does nothing.
    fn resolve(&self, node: u32) -> ReadyFuture<'_> {
        let _ = node;
        Box::pin(async {})
    }

    /// Learns what it needs to reach the node named `node` before the
    /// first named send to it (with joerl-dist: whether it is a joerl or an
    /// Erlang node, asked of EPMD once per name). Awaited by an async send to
    /// `{name, node}` before its first attempt; a `try_send` does without it.
    /// The default does nothing.
    fn prepare(&self, node: &str) -> ReadyFuture<'_> {
        let _ = node;
        Box::pin(async {})
    }

    /// Connects to the node named `node` if it is not connected yet, and
    /// says why it cannot be reached otherwise (the distribution layer's own
    /// error, kept as the cause). Awaited by a call to `{name, node}` before it
    /// monitors the name, so the call fails with that cause at once instead of
    /// a bare `noconnection`. The default says yes.
    fn connect(&self, node: &str) -> ConnectFuture<'_> {
        let _ = node;
        Box::pin(async { Ok(()) })
    }

    /// Names of the nodes connected now (Erlang's `nodes()`).
    fn nodes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes `owner` receive (`on`) or stop receiving every node-up and
    /// node-down, as messages (Erlang's `net_kernel:monitor_nodes/1`). The
    /// default refuses.
    fn monitor_nodes(&self, owner: Pid, on: bool) -> Result<(), NodeOpError> {
        let _ = (owner, on);
        Err(NodeOpError::Unsupported)
    }

    /// Makes `owner` receive one node-down message when the node named
    /// `node` goes down or cannot be reached (Erlang's `monitor_node/2`);
    /// connects if needed. The default refuses.
    fn monitor_node(&self, owner: Pid, node: &str) -> Result<(), NodeOpError> {
        let _ = (owner, node);
        Err(NodeOpError::Unsupported)
    }

    /// The Pid registered as `name` on the node named `node`, asked of that
    /// node (connecting if needed), waiting at most `timeout`. The default
    /// refuses.
    fn whereis(&self, name: &str, node: &str, timeout: std::time::Duration) -> WhereisFuture<'_> {
        let _ = (name, timeout);
        let node = node.to_string();
        Box::pin(async move {
            Err(crate::CallError::Send(crate::SendError::NoRouterForNode(
                node,
            )))
        })
    }

    /// True if `node` (a node id) is currently connected. Used for `is_alive` of
    /// remote Pids, which can only say whether the node is reachable.
    fn is_connected(&self, node: u32) -> bool;
}
