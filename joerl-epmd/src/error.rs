//! Typed errors of the port mapper.
//!
//! Each layer has its own enum so a caller can tell *where* something went
//! wrong: [`ProtocolError`] for bytes that do not parse (no I/O involved),
//! [`RegistryError`] for a request the node table refuses, [`ServerError`] for
//! starting the daemon, and [`ClientError`] for everything an [`EpmdClient`]
//! call can run into.
//!
//! [`EpmdClient`]: crate::EpmdClient

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Bytes that are not a valid EPMD request or reply.
///
/// Produced by the pure parsing code in [`crate::protocol`]; the server answers
/// such input by closing the one connection that sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The 2-byte length prefix was zero; every request needs at least a tag byte.
    #[error("empty request: the length prefix is 0 but every request starts with a tag byte")]
    EmptyRequest,
    /// The length prefix announces more bytes than this daemon accepts.
    #[error("request of {len} bytes exceeds the limit of {max} bytes")]
    RequestTooLarge {
        /// Announced length of the request.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A message ended before a field it announced.
    #[error("truncated {what}: {needed} bytes needed but only {got} present")]
    Truncated {
        /// What was being parsed.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first byte of a request is not a tag this daemon knows.
    #[error("unknown request tag {0} ({0:#04x})")]
    UnknownTag(u8),
    /// A reply started with a tag other than the one the request calls for.
    #[error("unexpected reply tag {got} ({got:#04x}), expected {expected}")]
    UnexpectedReplyTag {
        /// Tag the reply should have had.
        expected: u8,
        /// Tag it had.
        got: u8,
    },
    /// A field has a value the protocol does not allow.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A joerl request or reply carries a payload version this build does not speak.
    #[error(
        "joerl payload version {got} is not supported (this build speaks version {supported}); upgrade the older side"
    )]
    UnsupportedVersion {
        /// Version found in the message.
        got: u8,
        /// Version this build speaks.
        supported: u8,
    },
    /// A joerl bincode payload could not be decoded.
    #[error("joerl {what} payload does not decode: {reason}")]
    Payload {
        /// Which payload.
        what: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// A value is too large to be encoded in the protocol's length fields.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it could not be encoded.
        reason: String,
    },
}

/// A registration, renewal or removal the node table refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RegistryError {
    /// Another live registration already uses this name.
    #[error(
        "node name {0:?} is already registered by a live node; pick another name or stop that node"
    )]
    NameTaken(String),
    /// The name is empty, too long or not UTF-8.
    #[error("invalid node name: {0}")]
    InvalidName(String),
    /// Another field of the registration is out of range.
    #[error("invalid registration: {0}")]
    InvalidRegistration(String),
    /// No registration holds this token (it expired, was removed, or the daemon restarted).
    #[error(
        "no registration holds this token (it expired, was removed, or the daemon restarted); register again"
    )]
    UnknownToken,
    /// The request is not allowed from this peer.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The daemon already holds as many registrations as it is configured to.
    #[error(
        "the daemon already holds its maximum of {max} registrations; raise --max-nodes or unregister nodes"
    )]
    TableFull {
        /// The configured maximum.
        max: usize,
    },
    /// One connection, or one source address, already holds as many live
    /// registrations as the daemon allows it.
    #[error(
        "{scope} already holds its maximum of {max} live registrations; unregister some, or start the daemon with a higher {}",
        .scope.flag()
    )]
    TooManyRegistrations {
        /// Which limit was reached.
        scope: RegistrationScope,
        /// The configured maximum for that scope.
        max: usize,
    },
}

/// Which per-client bound a [`RegistryError::TooManyRegistrations`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RegistrationScope {
    /// The connection the registration was sent on
    /// (`ServerConfig::max_registrations_per_connection`).
    Connection,
    /// The peer's address: an IPv4 address, or the /64 prefix of an IPv6 address
    /// (`ServerConfig::max_registrations_per_source`).
    Source(IpAddr),
}

impl RegistrationScope {
    /// The `epmd_server` flag that raises this limit.
    pub fn flag(&self) -> &'static str {
        match self {
            RegistrationScope::Connection => "--max-registrations-per-connection",
            RegistrationScope::Source(_) => "--max-registrations-per-source",
        }
    }
}

impl fmt::Display for RegistrationScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationScope::Connection => f.write_str("this connection"),
            RegistrationScope::Source(ip @ IpAddr::V6(_)) if !ip.is_loopback() => {
                write!(f, "source address range {ip}/64")
            }
            RegistrationScope::Source(ip) => write!(f, "source address {ip}"),
        }
    }
}

/// Starting the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source} (is another epmd already running there?)")]
    Bind {
        /// Address we tried to bind.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid server configuration: {0}")]
    InvalidConfig(String),
}

/// An [`EpmdClient`](crate::EpmdClient) call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made to the daemon.
    #[error("cannot connect to epmd at {addr}: {source} (is the daemon running?)")]
    Connect {
        /// Daemon address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The call did not finish within the client's timeout.
    #[error("epmd at {addr} did not answer {operation} within {after:?}")]
    Timeout {
        /// Daemon address.
        addr: SocketAddr,
        /// Which call.
        operation: &'static str,
        /// Timeout that elapsed.
        after: Duration,
    },
    /// Reading or writing the connection failed.
    #[error("i/o error talking to epmd at {addr}: {source}")]
    Io {
        /// Daemon address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The daemon closed the connection before a complete reply.
    #[error("epmd at {addr} closed the connection before replying to {operation}")]
    ClosedEarly {
        /// Daemon address.
        addr: SocketAddr,
        /// Which call.
        operation: &'static str,
    },
    /// The reply is larger than the client accepts.
    #[error("reply from epmd at {addr} exceeds the limit of {max} bytes")]
    ReplyTooLarge {
        /// Daemon address.
        addr: SocketAddr,
        /// Configured maximum.
        max: usize,
    },
    /// The reply (or our own request) does not follow the protocol.
    #[error("protocol error with epmd at {addr}: {source}")]
    Protocol {
        /// Daemon address.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: ProtocolError,
    },
    /// The daemon refused the request.
    #[error("epmd at {addr} refused the request: {source}")]
    Refused {
        /// Daemon address.
        addr: SocketAddr,
        /// The daemon's reason.
        #[source]
        source: RegistryError,
    },
    /// An Erlang ALIVE2 registration was refused (the real epmd gives no reason;
    /// usually the name is taken).
    #[error(
        "epmd at {addr} refused to register {name:?} (result code {result}); the name is probably taken"
    )]
    Alive2Refused {
        /// Daemon address.
        addr: SocketAddr,
        /// Requested name.
        name: String,
        /// Result byte of the reply.
        result: u8,
    },
    /// The daemon answered with a reply that does not fit the request.
    #[error("epmd at {addr} answered {operation} with an unexpected reply: {detail}")]
    UnexpectedReply {
        /// Daemon address.
        addr: SocketAddr,
        /// Which call.
        operation: &'static str,
        /// What came back.
        detail: String,
    },
}
