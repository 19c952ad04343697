//! Node events: connections coming up and going down.

use std::time::Instant;

/// A change in the set of connected nodes, as delivered by
/// [`DistributedSystem::subscribe`](crate::DistributedSystem::subscribe).
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
        /// Why, as text.
        reason: String,
    },
}

/// The message [`DistributedSystem::monitor_node`](crate::DistributedSystem::monitor_node)
/// delivers when the node goes down (Erlang's `{nodedown, Node}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDown {
    /// The node's full name.
    pub node: String,
    /// Why, as text.
    pub reason: String,
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
    /// Outgoing frames dropped because the connection was lost or never came up.
    pub dropped_out: u64,
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
}

pub(crate) fn since(start: Instant) -> u128 {
    start.elapsed().as_millis()
}
