//! Node configuration and its defaults.

use std::time::Duration;

/// Default maximum frame size: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;
/// Default limit of memory decoding one incoming message may claim: 256 MiB.
pub const DEFAULT_MAX_MESSAGE_MEMORY: usize = 256 * 1024 * 1024;
/// Default limit of bytes queued toward one peer before `send` waits: 8 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default size of the resend buffer toward one peer: 16 MiB.
pub const DEFAULT_RESEND_WINDOW: usize = 16 * 1024 * 1024;
/// Default tick timeout: a peer silent this long is declared down.
pub const DEFAULT_TICK_TIMEOUT: Duration = Duration::from_secs(4);
/// Default number of messages from other nodes a full mailbox accepts beyond its capacity.
pub const DEFAULT_MAILBOX_OVERFLOW: usize = 65_536;
/// Default limit of incoming messages parked for full local mailboxes, per connection.
pub const DEFAULT_MAX_PARKED: usize = 100_000;

/// Everything about a node that has a default. Build it with
/// [`NodeBuilder`](crate::NodeBuilder).
#[derive(Debug, Clone)]
pub struct DistConfig {
    /// The shared secret; `None` resolves it from `JOERL_COOKIE` or `~/.joerl.cookie`.
    pub cookie: Option<String>,
    /// A peer silent for this long is declared down and disconnected. Ticks are sent
    /// on idle connections every quarter of it.
    pub tick_timeout: Duration,
    /// Bytes that may wait in the outgoing queue toward one peer before `send`
    /// waits (and `try_send` fails with `Full`).
    pub queue_bytes: usize,
    /// Largest frame accepted or sent, checked before anything is allocated.
    pub max_frame_size: usize,
    /// Most memory decoding one incoming message may claim, in bytes, as bincode
    /// counts it: the size of each decoded primitive (8 bytes per `u64` however
    /// short its varint) and the length of each string before it is allocated,
    /// not the message's size on the wire, so compact encodings of many small
    /// values are not refused. A message may also claim at most 64 times its
    /// size on the wire (more can only come from a forged length). Rounded down
    /// to a power of two, between 64 KiB and 2 GiB. A message over it is dropped
    /// and counted in `dropped_in`; the connection stays up. What the decoded
    /// value then takes in memory can be a few times more (container overhead
    /// is not counted: a `Vec<String>` of one-letter strings uses about 4 times
    /// what it claims).
    pub max_message_memory: usize,
    /// Messages from other nodes a full mailbox still accepts beyond its
    /// capacity (per mailbox), so a burst to one busy actor does not hold up the
    /// rest of the connection.
    pub mailbox_overflow: usize,
    /// Incoming messages that may be parked per connection while their target
    /// mailboxes are full even beyond `mailbox_overflow`; past it the connection
    /// stops reading (TCP back-pressure to the sending node).
    pub max_parked: usize,
    /// Periodically list EPMD's nodes and connect to new ones.
    pub auto_discovery: bool,
    /// How often the discovery loop lists EPMD.
    pub discovery_interval: Duration,
    /// First delay before re-dialing a lost or failed peer.
    pub reconnect_initial: Duration,
    /// Longest delay between dial attempts.
    pub reconnect_max: Duration,
    /// Consecutive failed dials after which the node stops trying until the next send.
    pub reconnect_attempts: u32,
    /// Time allowed for a TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// EPMD lease for this node's registration. `None` (the default): the
    /// registration lives with the node's connection to EPMD, so a node that dies
    /// frees its name at once, as Erlang's do. With a lease, the name stays taken
    /// until the lease runs out after a crash.
    pub epmd_lease: Option<Duration>,
    /// How long a graceful shutdown waits for actors before killing them.
    pub shutdown_grace: Duration,
    /// How often peers that are down and used by nothing are looked for; one
    /// found unused by two sweeps in a row is forgotten (its statistics stay in
    /// the node's totals), so the peer table does not grow with churn.
    pub peer_sweep_interval: Duration,
    /// How long a cut connection to a live peer may take to be re-made before
    /// the node is reported down. Within it nothing is lost, duplicated or
    /// reordered, and no node-down, `noconnection` exit or down is raised (see
    /// CLUSTERING.md, *Guarantees*). `None` (the default): the tick timeout.
    /// `Some(Duration::ZERO)`: a cut is a node-down at once, as in Erlang.
    pub grace_period: Option<Duration>,
    /// Bytes written to one peer and not yet acknowledged that are kept to be
    /// replayed after a cut (the resend buffer). When it is full the writer
    /// waits for the peer's acknowledgements, and senders then wait as for a
    /// full queue. At least 4 MiB.
    pub resend_window: usize,
    /// Connect to Erlang nodes as a hidden node (the default), so Erlang's
    /// `global` does not try to synchronise with this node and `nodes()` on
    /// the Erlang side lists it only under `nodes(hidden)`; `false` makes it
    /// a normal node. Also the node type EPMD shows for this node.
    pub erlang_hidden: bool,
    /// Erlang's `net_ticktime` for connections with Erlang nodes: a tick is
    /// sent on a quiet connection every quarter of it, and an Erlang peer
    /// silent for all of it is down. Keep it equal to the Erlang nodes'
    /// (60 s by default there and here).
    pub erlang_net_ticktime: Duration,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            cookie: None,
            tick_timeout: DEFAULT_TICK_TIMEOUT,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_frame_size: DEFAULT_MAX_FRAME,
            max_message_memory: DEFAULT_MAX_MESSAGE_MEMORY,
            mailbox_overflow: DEFAULT_MAILBOX_OVERFLOW,
            max_parked: DEFAULT_MAX_PARKED,
            auto_discovery: false,
            discovery_interval: Duration::from_secs(2),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            reconnect_attempts: 10,
            connect_timeout: Duration::from_secs(5),
            epmd_lease: None,
            shutdown_grace: Duration::from_secs(5),
            peer_sweep_interval: Duration::from_secs(30),
            grace_period: None,
            resend_window: DEFAULT_RESEND_WINDOW,
            erlang_hidden: true,
            erlang_net_ticktime: Duration::from_secs(60),
        }
    }
}

impl DistConfig {
    /// The interval between ticks on an idle connection.
    pub fn tick_interval(&self) -> Duration {
        (self.tick_timeout / 4).max(Duration::from_millis(10))
    }

    /// The grace period in force (see [`grace_period`](Self::grace_period)).
    pub fn grace(&self) -> Duration {
        self.grace_period.unwrap_or(self.tick_timeout)
    }
}
