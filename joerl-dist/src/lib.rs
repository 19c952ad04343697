//! joerl-dist: the distribution layer of joerl.
//!
//! A [`DistributedSystem`] is a node of a cluster: an
//! [`ActorSystem`] whose Pids carry the node's identity,
//! registered in EPMD, with cookie-authenticated TCP connections to other nodes.
//! `send`, named sends (`{name, node}`), links, monitors, exits and gen_server
//! calls work on remote Pids with the same calls and the same meaning as locally.
//!
//! ```no_run
//! use joerl_dist::{DistributedSystem, remote_message};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { n: u32 }
//! remote_message!(Ping, "myapp::Ping");
//!
//! # async fn f() -> anyhow::Result<()> {
//! let node = DistributedSystem::new("node_a", "127.0.0.1:5001", "127.0.0.1:4369").await?;
//! node.send(("pong", "node_b@127.0.0.1"), Ping { n: 1 }).await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`registry`] (which types may cross, collected at compile time with
//! `inventory`), `codec` (the only user of bincode), `frame` (the wire frames,
//! no I/O), [`handshake`] (cookie challenge/response, no I/O), `connection`
//! (handshake I/O, reader and writer), `wire_signal` (the wire schema of signals
//! and exit reasons, explicit tags independent of joerl-core's derives), `link` (the one owner of a peer's connection life cycle:
//! a state machine with no I/O), `peer` (one remote node: queue, link machine,
//! link/monitor bookkeeping), `accounting` (exact counts of messages lost with a
//! connection, no I/O), `node_table` (what is known of other nodes: name, id,
//! creation, address, how learned), `node` (the I/O the link machines ask
//! for: listen, dial, install, close, node events, shutdown), `router` (sends and signals toward peers),
//! `delivery` (what arrives, to local actors, with the full-mailbox policy) and
//! [`net_kernel`] (name look-ups for other nodes), [`resolve`] (where a node
//! listens: EPMD on the peer's host, a static table), [`transport`] (TCP, or
//! TLS with mutual authentication), [`erlang`] (Erlang/OTP nodes as peers:
//! terms, the External Term Format, serde between Rust types and terms,
//! Erlang's handshake and control messages).
#![warn(missing_docs)]

mod accounting;
pub mod cluster;
mod codec;
mod config;
mod connection;
pub mod cookie;
mod delivery;
pub mod erlang;
mod error;
mod events;
mod frame;
pub mod handshake;
mod link;
pub mod net_kernel;
mod node;
mod node_table;
mod outqueue;
mod peer;
pub mod registry;
pub mod resolve;
mod router;
pub mod transport;
mod wire_signal;

pub use config::DistConfig;
pub use error::{CodecError, DistError, FrameError, HandshakeError};
pub use events::{NodeDown, NodeDownReason, NodeEvent, NodeEvents, NodeStats, NodeUp, PeerStats};
pub use node::{
    DistributedSystem, NODE_NAME_KEY, NodeBuilder, StopSignal, WeakNode, joerl_node_name,
};
pub use node_table::{Learned, NodeInfo};
pub use transport::{TlsConfig, TlsError};

/// Re-exported so that [`remote_message!`] works without a direct dependency.
#[doc(hidden)]
pub use inventory;

pub use joerl_core::{
    self as core, Actor, ActorContext, ActorSystem, CallError, Dest, DownMessage, ExitMessage,
    ExitReason, GroupDest, Message, MonitorRef, Pick, Pid, SendError, SpawnOptions, gen_server,
    receive, supervisor,
};

/// A byte payload that crosses nodes as raw bytes (one copy, no per-byte
/// encoding), unlike `Vec<u8>`, which serde encodes element by element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Blob(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
