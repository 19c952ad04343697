//! joerl-core: an Erlang-style actor runtime with node-qualified Pids.
//!
//! - [`ActorSystem`] spawns [`Actor`]s, each with a bounded mailbox and a separate
//!   signal path for exits, kills and downs.
//! - Links, monitors, `trap_exit` and [`ExitReason`]s have Erlang's meaning.
//! - [`supervisor`] restarts children (one_for_one, one_for_all, rest_for_one).
//! - [`gen_server`] gives call/cast/info; `call` is a monitor plus a message plus
//!   a timeout, so it works unchanged across nodes.
//! - A [`Router`] is the seam the distribution layer (`joerl-dist`) plugs into,
//!   and a [`NameService`] the one its cluster layer fills (global names and
//!   process groups as addresses).
//!
//! ```
//! use joerl_core::{Actor, ActorContext, ActorSystem, Message};
//!
//! struct Echo;
//! impl Actor for Echo {
//!     async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
//!         if let Some(from) = ctx.sender() {
//!             let _ = ctx.send(from, msg).await;
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let system = ActorSystem::new();
//! let echo = system.spawn(Echo);
//! system.send(echo, "hello").await.unwrap();
//! system.shutdown().await;
//! # }
//! ```
#![warn(missing_docs)]

mod actor;
mod dest;
mod error;
pub mod fxhash;
pub mod gen_server;
mod message;
pub mod metrics;
mod name_service;
mod pid;
mod process;
mod reason;
mod router;
mod signal;
pub mod supervisor;
mod system;
mod timer;

pub use actor::{Actor, ActorContext};
pub use dest::{Dest, GroupDest, Pick};
pub use error::{LinkError, NodeError, RegisterError, SendError, SpawnError, StartError};
pub use gen_server::CallError;
pub use message::{DownMessage, ExitMessage, Message, MonitorRef, UnsentMessage};
pub use name_service::{NameService, PlacedRoute};
pub use pid::{LOCAL_NODE, ParsePidError, Pid, node_id};
pub use reason::ExitReason;
pub use router::{ConnectFuture, NodeOpError, ReadyFuture, RouteError, Router, WhereisFuture};
pub use signal::Signal;
pub use system::{
    ActorSystem, DEFAULT_MAILBOX_CAPACITY, DEFAULT_SHUTDOWN_GRACE, NodeIdentity, SpawnOptions,
    WeakActorSystem,
};
pub use timer::TimerRef;
