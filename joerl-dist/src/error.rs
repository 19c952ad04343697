//! Errors of the distribution layer.

use std::any::TypeId;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    /// The message's type is not registered for the wire.
    #[error(
        "message type {0:?} is not registered for sending to other nodes; add joerl_dist::remote_message!(YourType, \"your::Name\") next to the type"
    )]
    Unregistered(TypeId),
    /// A call's request, a call's reply or a cast (whose Rust type is named)
    /// is not registered for the wire.
    #[error(
        "{0} is not registered for sending to other nodes; add joerl_dist::remote_message!({0}, \"your::Name\") next to the type, or joerl_dist::remote_server!(YourServer) for all of a server's calls, replies and casts"
    )]
    UnregisteredNamed(&'static str),
    /// The registry entry was asked to encode a value of another type.
    #[error("internal error: registry entry for {0} got a value of another type")]
    TypeMismatch(&'static str),
    /// The peer sent a type this node does not know.
    #[error("unknown message wire id {0:#018x}: the type is not registered on this node")]
    UnknownWireId(u64),
    /// An unknown message envelope kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The input ended early.
    #[error("truncated input")]
    Truncated,
    /// bincode could not encode the value.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// bincode could not decode the value.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// Decoding the value would claim more memory than this node allows for one
    /// message.
    #[error(
        "decoding needs more than {limit} bytes of memory (DistConfig::max_message_memory, at most 64 times the message's size on the wire, rounded down to a power of two); raise it with NodeBuilder::max_message_memory on the receiving node"
    )]
    MemoryLimit {
        /// The limit in force, in bytes.
        limit: usize,
    },
}

/// Why a frame could not be parsed or built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    /// The frame's length exceeds the configured maximum frame size.
    #[error(
        "frame of {len} bytes exceeds the maximum frame size of {max} bytes (DistConfig::max_frame_size)"
    )]
    TooLarge {
        /// The claimed or actual length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// A tag this version does not know.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// A registered name that is not UTF-8 or longer than 255 bytes.
    #[error("registered names on the wire must be UTF-8 and at most 255 bytes")]
    BadName,
    /// The frame's content is malformed.
    #[error("{0}")]
    Codec(#[from] CodecError),
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer does not know our cookie, or we do not know theirs.
    #[error("authentication failed: the peer's cookie does not match this node's cookie")]
    AuthenticationFailed,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The peer is not the node we dialed.
    #[error("dialed {expected} but the peer says it is {actual}")]
    WrongPeer {
        /// The node we wanted.
        expected: String,
        /// The node that answered.
        actual: String,
    },
    /// The peer's node id collides with another node's (or does not match its name).
    #[error("node id collision: {0}")]
    NodeIdCollision(String),
    /// The peer refused for a reason it stated.
    #[error("the peer refused the connection: {0}")]
    Refused(String),
    /// Both nodes dialed at once and the other connection won; not a failure.
    #[error("simultaneous connect: the other direction's connection is used")]
    Simultaneous,
    /// The peer is already connected (its old connection is still up here).
    #[error("already connected to this peer")]
    AlreadyConnected,
    /// The peer sent something that is not a valid handshake step.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer did not finish the handshake in time.
    #[error("handshake timed out")]
    Timeout,
    /// The connection failed during the handshake.
    #[error("i/o error during handshake: {0}")]
    Io(String),
    /// TLS failed: a certificate the CA did not sign, or a peer that speaks
    /// TLS when this node does not (or the other way round).
    #[error("TLS: {0}")]
    Tls(String),
}

/// Errors of [`DistributedSystem`](crate::DistributedSystem) operations.
/// Cheap to clone (I/O causes are shared), so the failure of one dial attempt
/// can be handed to everyone waiting for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DistError {
    /// A node name is not of the form `name@host`.
    #[error("invalid node name {0:?}: expected name@host, e.g. node_a@127.0.0.1")]
    InvalidNodeName(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::sync::Arc<std::io::Error>,
    },
    /// EPMD could not be reached or refused the registration.
    #[error("EPMD at {addr}: {message}")]
    Epmd {
        /// EPMD's address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// The cookie could not be read or created.
    #[error("cookie: {0}")]
    Cookie(String),
    /// Two message types claim the same wire name.
    #[error("{0}")]
    RegistryConflict(String),
    /// No resolver knows the node: it is not in the static table, nor
    /// registered in this node's EPMD or the EPMD on its host.
    #[error(
        "node {0} is not known: not in the static table, nor registered in EPMD (this node's, or the one on its host)"
    )]
    UnknownNode(String),
    /// The node's address did not take a TCP connection.
    #[error("cannot reach {node} at {addr}: {source}")]
    Unreachable {
        /// The node.
        node: String,
        /// The address dialed, `host:port`.
        addr: String,
        /// The I/O error (`ConnectionRefused`: nothing listens there).
        source: std::sync::Arc<std::io::Error>,
    },
    /// A connection attempt failed.
    #[error("cannot connect to {node}: {reason}")]
    Connect {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The handshake with a node failed.
    #[error("handshake with {node} failed: {source}")]
    Handshake {
        /// The node.
        node: String,
        /// Why.
        source: HandshakeError,
    },
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The peer's connection was lost, or the node gave up dialing it, while
    /// waiting for a connection.
    #[error("{node} went down: {reason}")]
    NodeDown {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
}
