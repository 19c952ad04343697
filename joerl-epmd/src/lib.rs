//! joerl-epmd: a port mapper daemon and client, wire-compatible with Erlang/OTP's `epmd`.
//!
//! Erlang nodes find each other through EPMD: each node registers its name and
//! distribution port with the daemon on its host, and peers ask that daemon for
//! the port before connecting. This crate provides
//!
//! * [`protocol`]: the wire format (Erlang's requests and replies, plus joerl's
//!   own requests with bincode payloads), as pure functions on bytes;
//! * [`registry`]: the node table with Erlang's creation rules, leases and the
//!   reaper's work;
//! * [`server`]: the tokio daemon ([`EpmdServer`]), which real `erl` nodes and
//!   Erlang's `epmd -names` can use as if it were epmd;
//! * [`client`]: [`EpmdClient`], which speaks to our daemon and to the real epmd,
//!   and [`RegistrationGuard`], which keeps a registration alive;
//! * [`error`]: the typed errors;
//! * [`log_limit`]: [`log_limit::LogLimiter`], the per-cause rate limit for log
//!   lines that peers can trigger (also used by `joerl-dist`).
//!
//! The binary `epmd_server` runs the daemon and offers `list`, `lookup` and
//! `ping` commands for operators; installed as `epmd`, it takes Erlang's
//! `epmd` command line instead. The wire format is described in
//! `CLUSTERING.md` at the root of the repository.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use joerl_epmd::{EpmdClient, EpmdServer, Registration, ServerConfig};
//!
//! let server = EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse()?)).await?;
//! let client = EpmdClient::new(server.local_addr());
//! let guard = client
//!     .register(Registration::new("worker1", 9100).metadata("role", "worker"))
//!     .await?;
//! let found = client.lookup("worker1").await?.expect("registered");
//! assert_eq!(found.creation, guard.creation());
//! drop(guard); // unregisters
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod log_limit;
pub mod protocol;
pub mod registry;
pub mod server;

pub use client::{
    EpmdClient, ErlangRegistration, Registration, RegistrationGuard, RegistrationLifetime,
    RegistrationState,
};
pub use error::{ClientError, ProtocolError, RegistrationScope, RegistryError, ServerError};
pub use protocol::{
    Alive2Request, DistInfo, NamesReply, NodeInfo, NodeKind, PongReply, PortPleaseReply,
};
pub use server::{DEFAULT_EPMD_PORT, EpmdServer, IdleActivity, ServerConfig, ServerStats};
