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
    /// Messages written whose arrival the peer has not acknowledged yet. After
    /// a connection loss this is what the next connection's RESUME will settle
    /// (into read or `dropped_out_lost`); while connected it is what is in flight.
    pub unacked_out: u64,
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
}

pub(crate) fn since(start: Instant) -> u128 {
    start.elapsed().as_millis()
}
