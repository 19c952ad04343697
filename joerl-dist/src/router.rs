//! The actor system's [`Router`]: how sends, named sends and signals for other
//! nodes become frames in a peer's queue.
//!
//! Messages are encoded straight into the peer's outgoing buffer (dialing the
//! peer first if it is not connected); a full buffer hands the message back so
//! `send` can wait. Signals are recorded in the peer's link/monitor bookkeeping
//! before they are queued, so losing the peer can answer each of them with
//! `noconnection`; a signal for a node nobody can reach is answered at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use joerl_core::{
    Message, NodeOpError, Pid, ReadyFuture, RouteError, Router, Signal, UnsentMessage,
};

use crate::codec;
use crate::frame;
use crate::node::NodeInner;
use crate::node_table::Learned;
use crate::outqueue::PushError;
use crate::peer::{Peer, PeerCounters};

/// The actor system's router: everything addressed to other nodes.
pub(crate) struct DistRouter {
    node: Weak<NodeInner>,
}

impl DistRouter {
    /// A router for `node` (weak: the actor system must not keep the node alive).
    pub(crate) fn new(node: Weak<NodeInner>) -> Self {
        DistRouter { node }
    }

    fn node(&self) -> Result<Arc<NodeInner>, RouteError> {
        self.node.upgrade().ok_or(RouteError::Closed)
    }

    fn push_message(
        &self,
        node: &Arc<NodeInner>,
        peer: &Arc<Peer>,
        msg: Message,
        header: impl FnOnce(&mut Vec<u8>) -> Result<usize, crate::error::FrameError>,
    ) -> Result<(), RouteError> {
        if node.is_shutting_down() {
            return Err(RouteError::Closed);
        }
        if !peer.is_up() {
            node.ensure_dialing(peer);
        }
        let max = node.config.max_frame_size;
        let pushed = peer.queue.push(false, true, |buf| {
            let start = header(buf).map_err(|e| e.to_string())?;
            codec::encode_message(&msg, buf).map_err(|e| e.to_string())?;
            frame::finish(buf, start, max).map_err(|e| e.to_string())
        });
        match pushed {
            Ok(direct) => {
                PeerCounters::add(&peer.counters.msgs_out, 1);
                if direct > 0 {
                    PeerCounters::add(&peer.counters.bytes_out, direct as u64);
                }
                Ok(())
            }
            Err(PushError::Full) => Err(RouteError::Full(UnsentMessage::new(msg))),
            Err(PushError::Encode(detail)) => Err(RouteError::NotSerializable { detail }),
        }
    }
}

impl Router for DistRouter {
    fn try_send(&self, from: Option<Pid>, to: Pid, msg: Message) -> Result<(), RouteError> {
        let node = self.node()?;
        if let Some(erl) = node.erlang.peer(to.node()) {
            return node.erl_send(&erl, from, Ok(to), msg);
        }
        let Some(peer) = node.peer_by_id(to.node()) else {
            return Err(RouteError::UnknownNode {
                node: to.node(),
                msg: UnsentMessage::new(msg),
            });
        };
        self.push_message(&node, &peer, msg, |buf| {
            Ok(frame::begin_send(buf, from, to))
        })
    }

    fn try_send_named(
        &self,
        from: Option<Pid>,
        name: &str,
        node_name: &str,
        msg: Message,
    ) -> Result<(), RouteError> {
        let node = self.node()?;
        if let Some(erl) = node.erl_peer_named(node_name) {
            return node.erl_send(&erl, from, Err(name), msg);
        }
        let peer =
            node.peer_by_name(node_name, Learned::Named)
                .map_err(|e| RouteError::Unreachable {
                    node: node_name.to_string(),
                    reason: e.to_string(),
                })?;
        self.push_message(&node, &peer, msg, |buf| {
            frame::begin_send_named(buf, from, name)
        })
    }

    fn ready(&self, node_id: Option<u32>, node_name: Option<&str>) -> ReadyFuture<'_> {
        let erl = self
            .node
            .upgrade()
            .and_then(|n| match (node_id, node_name) {
                (Some(id), _) => n.erlang.peer(id),
                (None, Some(name)) => n.erl_peer_named(name),
                _ => None,
            });
        if let Some(erl) = erl {
            return Box::pin(async move { erl.ready().await });
        }
        let peer = self
            .node
            .upgrade()
            .and_then(|n| match (node_id, node_name) {
                (Some(id), _) => n.peer_by_id(id),
                (None, Some(name)) => n.peer_by_name(name, Learned::ByPid).ok(),
                _ => None,
            });
        Box::pin(async move {
            if let Some(p) = peer {
                p.queue.ready().await
            }
        })
    }

    fn is_known(&self, node_id: u32) -> bool {
        self.node
            .upgrade()
            .is_some_and(|n| n.erlang.peer(node_id).is_some() || n.peer_by_id(node_id).is_some())
    }

    fn resolve(&self, node_id: u32) -> ReadyFuture<'_> {
        let node = self.node.upgrade();
        Box::pin(async move {
            let Some(n) = node else { return };
            if n.erl_peer_for_id(node_id).is_some() {
                return;
            }
            // A node seen in a pid an Erlang node sent: EPMD says which dialect.
            if let Some(name) = n.erlang.seen_name(node_id) {
                if n.dialect_of(name.as_str()).await == crate::erlang::Dialect::Erlang {
                    let _ = n.erlang.peer_for(&n, name.as_str());
                } else {
                    let _ = n.peer_by_name(name.as_str(), Learned::ByPid);
                }
                return;
            }
            // Ask EPMD which registered node's full name hashes to this id.
            let Ok(list) = n.epmd.list().await else {
                return;
            };
            for info in list {
                let Some(full) = crate::node::joerl_node_name(&info) else {
                    continue;
                };
                if joerl_core::node_id(&full) == node_id {
                    let _ = n.peer_by_name(&full, Learned::ByPid);
                    return;
                }
            }
        })
    }

    fn signal(&self, to: Pid, signal: Signal) -> Result<(), RouteError> {
        let node = self.node()?;
        if let Some(erl) = node.erl_peer_for_id(to.node()) {
            return node.erl_signal(&erl, to, signal);
        }
        let Some(peer) = node.peer_by_id(to.node()) else {
            // Nothing to carry it: answer as if the node were down.
            node.system
                .refuse_signal(to, signal, joerl_core::ExitReason::NoConnection);
            return Ok(());
        };
        if node.is_shutting_down() && !peer.is_up() {
            node.system
                .refuse_signal(to, signal, joerl_core::ExitReason::NoConnection);
            return Ok(());
        }
        peer.book().outgoing(to, &signal);
        if !peer.is_up() {
            node.ensure_dialing(&peer);
        }
        let max = node.config.max_frame_size;
        match peer
            .queue
            .push(true, true, |buf| frame::put_signal(buf, to, &signal, max))
        {
            Ok(direct) => {
                PeerCounters::add(&peer.counters.bytes_out, direct as u64);
                Ok(())
            }
            Err(PushError::Full) => {
                // The peer has not read for a long while: drop the connection
                // (which fires noconnection for every link and monitor to it,
                // this one included) rather than grow the buffer further.
                tracing::warn!(peer = %peer.name, "outgoing queue over its hard limit; closing the connection");
                // Up: the connection closes (and redials); not up: what waits
                // is dropped. Either way links and monitors to the peer (this
                // one included) fire noconnection.
                node.drive(&peer, |m| m.queue_overflow(std::time::Instant::now()));
                Ok(())
            }
            Err(PushError::Encode(e)) => Err(RouteError::NotSerializable {
                detail: e.to_string(),
            }),
        }
    }

    fn monitor_named(
        &self,
        from: Pid,
        monitor: joerl_core::MonitorRef,
        name: &str,
        node_name: &str,
    ) -> Result<(), RouteError> {
        let node = self.node()?;
        let unreachable = |reason: String| RouteError::Unreachable {
            node: node_name.to_string(),
            reason,
        };
        if let Some(erl) = node.erl_peer_named(node_name) {
            return node.erl_monitor_named(&erl, from, monitor, name);
        }
        let peer = node
            .peer_by_name(node_name, Learned::Named)
            .map_err(|e| unreachable(e.to_string()))?;
        if node.is_shutting_down() {
            return Err(RouteError::Closed);
        }
        // Recorded like any monitor toward the peer (so losing it answers
        // noconnection), with the node's placeholder Pid as the target.
        let target = Pid::new(joerl_core::node_id(node_name), 0, 0);
        peer.book()
            .outgoing(target, &Signal::Monitor { from, monitor });
        if !peer.is_up() {
            node.ensure_dialing(&peer);
        }
        peer.queue
            .push(true, true, |buf| {
                frame::put_monitor_named(buf, from, monitor.0, name)
            })
            .map(|_| ())
            .map_err(|e| match e {
                PushError::Full => unreachable("outgoing queue over its hard limit".into()),
                PushError::Encode(e) => unreachable(e.to_string()),
            })
    }

    fn is_connected(&self, node_id: u32) -> bool {
        self.node
            .upgrade()
            .is_some_and(|n| match n.erlang.peer(node_id) {
                Some(erl) => erl.is_up(),
                None => n.peer_by_id(node_id).is_some_and(|p| p.is_up()),
            })
    }

    fn nodes(&self) -> Vec<String> {
        self.node.upgrade().map(|n| n.nodes()).unwrap_or_default()
    }

    fn monitor_nodes(&self, owner: Pid, on: bool) -> Result<(), NodeOpError> {
        let node = self.node.upgrade().ok_or_else(shut_down)?;
        node.monitor_nodes(owner, on);
        Ok(())
    }

    fn monitor_node(&self, owner: Pid, name: &str) -> Result<(), NodeOpError> {
        let node = self.node.upgrade().ok_or_else(shut_down)?;
        node.monitor_node(owner, name)
            .map_err(|e| NodeOpError::Failed(Arc::new(e)))
    }

    fn whereis(&self, name: &str, node: &str, timeout: Duration) -> joerl_core::WhereisFuture<'_> {
        let inner = self.node.upgrade();
        let (name, node) = (name.to_string(), node.to_string());
        Box::pin(async move {
            match inner {
                Some(inner) => inner.whereis_remote(&name, &node, timeout).await,
                None => Err(joerl_core::CallError::Unreachable(Arc::new(
                    crate::DistError::ShuttingDown,
                ))),
            }
        })
    }

    fn prepare(&self, node: &str) -> ReadyFuture<'_> {
        let Some(inner) = self.node.upgrade() else {
            return Box::pin(async {});
        };
        // The common case, every named send to a node already known: no
        // allocation, no await.
        if inner.dialect_known(node) {
            return Box::pin(async {});
        }
        let node = node.to_string();
        Box::pin(async move {
            // Asks EPMD once per new name which dialect it speaks.
            let _ = inner.dialect_of(&node).await;
        })
    }

    fn connect(&self, node: &str) -> joerl_core::ConnectFuture<'_> {
        let inner = self.node.upgrade();
        let node = node.to_string();
        Box::pin(async move {
            let Some(inner) = inner else {
                return Err(Arc::new(crate::DistError::ShuttingDown) as Arc<_>);
            };
            inner
                .connect(&node)
                .await
                .map_err(|e| Arc::new(e) as Arc<dyn std::error::Error + Send + Sync>)
        })
    }
}

/// The node behind a router is gone.
fn shut_down() -> NodeOpError {
    NodeOpError::Failed(Arc::new(crate::DistError::ShuttingDown))
}
