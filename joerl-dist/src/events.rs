//! Node events: connections coming up and going down.

/// A change in the set of connected nodes, as delivered by
/// [`DistributedSystem::subscribe`](crate::DistributedSystem::subscribe) (and, as
/// [`NodeUp`] and [`NodeDown`] messages, to actors that called
/// [`DistributedSystem::monitor_nodes`](crate::DistributedSystem::monitor_nodes)).
/// Exactly one `Down` follows each `Up`, and there is none for a node that was
/// never up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A connection to `node` (incarnation `creation`) is up.
    Up {
        /// The node's full name.
        node: String,
        /// Its creation.
        creation: u32,
    },
    /// The connection to `node` is gone.
    Down {
        /// The node's full name.
        node: String,
        /// Why.
        reason: NodeDownReason,
    },
}

/// Why a node went down (or, for `monitor_node`, could not be reached).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeDownReason {
    /// The peer shut down gracefully (it said goodbye).
    Goodbye,
    /// The peer closed the connection without a goodbye: it crashed, or the
    /// connection was cut.
    ConnectionClosed,
    /// Nothing arrived from the peer for this long.
    TickTimeout(std::time::Duration),
    /// Reading from or writing to the connection failed.
    Io(String),
    /// The peer sent a frame that is not valid; this node closed the connection.
    Malformed(String),
    /// A new connection (or a new incarnation of the peer) took this one's place.
    Replaced(String),
    /// The peer stopped reading: the outgoing queue reached its hard limit.
    NotReading,
    /// The node could not be reached (dialing failed and this node gave up).
    Unreachable(String),
    /// This node is shutting down.
    ShuttingDown,
    /// This node disconnected it on purpose (why): `DistributedSystem::disconnect`,
    /// or the cluster layer for a member declared failed.
    Disconnected(String),
}

impl std::fmt::Display for NodeDownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeDownReason::Goodbye => f.write_str("the peer shut down"),
            NodeDownReason::ConnectionClosed => f.write_str("connection closed by the peer"),
            NodeDownReason::TickTimeout(d) => {
                write!(f, "no data or tick from the peer for {d:?} (tick timeout)")
            }
            NodeDownReason::Io(e) => write!(f, "i/o error: {e}"),
            NodeDownReason::Malformed(e) => write!(f, "malformed frame: {e}"),
            NodeDownReason::Replaced(why) => write!(f, "replaced: {why}"),
            NodeDownReason::NotReading => {
                f.write_str("the peer stopped reading (outgoing queue over its hard limit)")
            }
            NodeDownReason::Unreachable(why) => write!(f, "unreachable: {why}"),
            NodeDownReason::ShuttingDown => f.write_str("this node is shutting down"),
            NodeDownReason::Disconnected(why) => write!(f, "disconnected by this node: {why}"),
        }
    }
}

/// The message [`DistributedSystem::monitor_node`](crate::DistributedSystem::monitor_node)
/// delivers when the node goes down or cannot be reached (Erlang's
/// `{nodedown, Node}`), and that [`monitor_nodes`](crate::DistributedSystem::monitor_nodes)
/// delivers for every node that goes down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDown {
    /// The node's full name.
    pub node: String,
    /// Why.
    pub reason: NodeDownReason,
}

/// The message [`monitor_nodes`](crate::DistributedSystem::monitor_nodes)
/// delivers when a connection to a node comes up (Erlang's `{nodeup, Node}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUp {
    /// The node's full name.
    pub node: String,
    /// Its creation.
    pub creation: u32,
}

/// The node events of one subscriber, from
/// [`DistributedSystem::subscribe`](crate::DistributedSystem::subscribe):
/// unbounded and lossless, in the order the node saw them.
#[derive(Debug)]
pub struct NodeEvents {
    pub(crate) rx: tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
}

impl NodeEvents {
    /// The next event; `None` once the node has shut down (or every handle to
    /// it is dropped).
    pub async fn recv(&mut self) -> Option<NodeEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<NodeEvent> {
        self.rx.try_recv().ok()
    }
}

/// Statistics of one peer connection, from [`DistributedSystem::stats`](crate::DistributedSystem::stats).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// The peer's full name.
    pub node: String,
    /// True while connected.
    pub connected: bool,
    /// Messages queued for the peer.
    pub msgs_out: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Messages received from the peer.
    pub msgs_in: u64,
    /// Bytes read from the peer.
    pub bytes_in: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
    /// Frames waiting in the outgoing queue now.
    pub queue_depth: usize,
    /// Messages that `send` accepted for the peer and that never reached it:
    /// `dropped_out_unsent + dropped_out_lost`. Exact once every connection
    /// loss is settled (see `unacked_out`), so it equals the messages sent minus
    /// the messages the peer read.
    pub dropped_out: u64,
    /// Of those, messages never written: still queued when the connection was
    /// lost (or never came up).
    pub dropped_out_unsent: u64,
    /// Of those, messages written but never read by the peer (lost in the
    /// writer's hands, a socket buffer or the network), as the peer's count
    /// said when the next connection came up, or lost with its incarnation.
    pub dropped_out_lost: u64,
    /// Data frames (messages and signals) written whose arrival the peer has
    /// not acknowledged yet. After the node went down this is what the next
    /// connection's handshake will settle (into read or `dropped_out_lost`);
    /// while connected (or within the grace period of a cut) it is what is in
    /// flight, kept in the resend buffer.
    pub unacked_out: u64,
    /// Bytes kept in the resend buffer (written, not yet acknowledged).
    pub resend_bytes: u64,
    /// Incoming messages dropped because the target did not exist or the body
    /// could not be decoded.
    pub dropped_in: u64,
    /// Incoming messages of a type this node has not registered.
    pub unknown_types: u64,
}

/// Statistics of the whole node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// One entry per known peer.
    pub peers: Vec<PeerStats>,
    /// Sums over all peers (its `node` field is empty).
    pub total: PeerStats,
    /// Incoming connections refused during the handshake (bad cookie, malformed
    /// handshake, timeout, ...).
    pub refused_incoming: u64,
    /// Incoming dials refused because both nodes dialed each other at once and
    /// this node's own dial won (the greater name's dial wins).
    pub simultaneous_refused: u64,
    /// Incoming Erlang handshakes refused (wrong cookie, malformed, missing
    /// capabilities, timeout).
    pub erlang_refused: u64,
    /// Erlang connections closed because the peer sent a malformed frame.
    pub erlang_malformed: u64,
}
