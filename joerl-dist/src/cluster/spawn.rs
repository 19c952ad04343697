//! Remote spawn: starting an actor on another node, Erlang's `spawn/4` with
//! a node. A server at the well-known name [`SPAWN_SERVER`] on each node
//! that serves remote spawns ([`serve`]; `enable_clustering` starts it)
//! takes requests by kind name, decodes the arguments, starts the actor and
//! answers with its Pid once its `started` callback has run.
//!
//! Kinds are registered at compile time, one line next to the type:
//!
//! ```
//! use joerl_dist::{Actor, ActorContext, Message, spawnable};
//! use joerl_dist::cluster::spawn::Spawnable;
//!
//! struct Worker { id: u32 }
//! impl Actor for Worker {
//!     async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
//! }
//! impl Spawnable for Worker {
//!     type Args = u32;
//!     fn from_args(id: u32) -> Self { Worker { id } }
//! }
//! spawnable!(Worker, "app::Worker");
//! ```
//!
//! Then `spawn_on::<Worker>(&node, "b@host", 7)`, `spawn_link_on` and
//! `spawn_monitor_on` from an actor. The arguments travel encoded by joerl's
//! codec, within the node's `max_message_memory`.

use std::time::Duration;

use joerl_core::gen_server::{
    CallError, CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef,
};
use joerl_core::{ActorContext, ActorSystem, ExitReason, MonitorRef, Pid, SpawnOptions};
use serde::{Deserialize, Serialize};

/// The name the spawn server is registered under on every node that serves
/// remote spawns.
pub const SPAWN_SERVER: &str = "joerl_spawn";

/// How long a remote spawn waits for its answer (the actor's `started`
/// included).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// An actor kind that other nodes may start here: made from its arguments.
/// Register it with [`spawnable!`](crate::spawnable).
pub trait Spawnable: joerl_core::Actor + Sized {
    /// What the spawning node sends (any serde type).
    type Args: Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// The actor, from its arguments.
    fn from_args(args: Self::Args) -> Self;
}

/// A registered kind (made by [`spawnable!`](crate::spawnable); not for
/// direct use).
#[doc(hidden)]
pub struct SpawnKind {
    /// The kind's name on the wire.
    pub name: &'static str,
    /// The Rust type, for conflict messages.
    pub type_name: fn() -> &'static str,
    /// Decodes the arguments and makes the actor, boxed for starting.
    pub make: MakeFn,
}

/// Decodes a kind's arguments and makes the actor (not for direct use).
#[doc(hidden)]
pub type MakeFn = fn(&[u8], usize) -> Result<Box<dyn Starter>, String>;

/// An actor starting, until its `started` has run (not for direct use).
#[doc(hidden)]
pub type StartFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Pid, joerl_core::StartError>> + Send>,
>;

inventory::collect!(SpawnKind);

/// An actor made from its arguments, ready to start (not for direct use).
#[doc(hidden)]
pub trait Starter: Send {
    /// Starts it on `system` with `opts`, waiting for `started`.
    fn start(self: Box<Self>, system: ActorSystem, opts: SpawnOptions) -> StartFuture;
}

struct Made<A>(A);

impl<A: joerl_core::Actor> Starter for Made<A> {
    fn start(self: Box<Self>, system: ActorSystem, opts: SpawnOptions) -> StartFuture {
        Box::pin(async move { system.start(self.0, opts).await })
    }
}

/// Decodes `bytes` as `K::Args` (claiming at most `max_memory`, the node's
/// `max_message_memory`) and makes the actor (used by
/// [`spawnable!`](crate::spawnable)). A `from_args` that panics is an error,
/// not a crash of the spawn server.
#[doc(hidden)]
pub fn make<K: Spawnable>(bytes: &[u8], max_memory: usize) -> Result<Box<dyn Starter>, String> {
    let args: K::Args = crate::codec::decode_exact(bytes, max_memory).map_err(|e| e.to_string())?;
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| K::from_args(args)))
        .map_err(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            format!("from_args panicked: {why}")
        })?;
    Ok(Box::new(Made(made)))
}

/// Registers `$kind` (a [`Spawnable`]) under `$name` for remote spawn.
#[macro_export]
macro_rules! spawnable {
    ($kind:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::cluster::spawn::SpawnKind {
                name: $name,
                type_name: ::std::any::type_name::<$kind>,
                make: $crate::cluster::spawn::make::<$kind>,
            }
        }
        impl $crate::cluster::spawn::Named for $kind {
            const KIND: &'static str = $name;
        }
    };
}

/// The registered name of a kind (implemented by
/// [`spawnable!`](crate::spawnable)).
pub trait Named {
    /// The kind's name on the wire.
    const KIND: &'static str;
}

fn find(kind: &str) -> Option<&'static SpawnKind> {
    inventory::iter::<SpawnKind>
        .into_iter()
        .find(|k| k.name == kind)
}

/// Why a remote spawn failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteSpawnError {
    /// The target node has no kind of that name: register it there with
    /// `spawnable!` (the same name on both nodes).
    #[error("node {node} has no spawnable kind {kind:?}; register it there with spawnable!")]
    UnknownKind {
        /// The node asked.
        node: String,
        /// The kind asked for.
        kind: String,
    },
    /// The arguments did not decode as the kind's `Args` on the target node
    /// (the two nodes disagree on the type).
    #[error("the arguments for {kind:?} did not decode on {node}: {reason}")]
    BadArgs {
        /// The node asked.
        node: String,
        /// The kind.
        kind: String,
        /// The decoder's reason.
        reason: String,
    },
    /// The actor stopped while starting (a panic in `started`, or
    /// `ctx.stop`), with this reason.
    #[error("{kind:?} stopped while starting on {node}: {reason}")]
    StartFailed {
        /// The node asked.
        node: String,
        /// The kind.
        kind: String,
        /// Its exit reason.
        reason: ExitReason,
    },
    /// The link to the caller could not be sent (no route to the caller's
    /// node). A caller that is gone is answered by its node later, as any
    /// link to a dead process: the new actor then exits with `noproc`.
    #[error("the new {kind:?} could not be linked to {caller}: no route to it")]
    LinkFailed {
        /// The kind.
        kind: String,
        /// The caller.
        caller: Pid,
    },
    /// The node runs no spawn server: enable clustering there, or call
    /// `joerl_dist::cluster::spawn::serve`.
    #[error(
        "node {0} does not serve remote spawns: enable clustering there, or call cluster::spawn::serve"
    )]
    NotServing(String),
    /// The node could not be reached, or was lost during the spawn (the
    /// call's error, as text).
    #[error("node {node} could not be reached for the spawn: {reason}")]
    NodeDown {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// No answer within [`SPAWN_TIMEOUT`].
    #[error("no answer from {0} within the spawn timeout")]
    Timeout(String),
    /// The arguments could not be encoded here.
    #[error("the arguments could not be encoded: {0}")]
    Encode(String),
}

/// A request to start an actor of `kind`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The kind's registered name.
    pub kind: String,
    /// Its arguments, encoded by joerl's codec.
    pub args: Vec<u8>,
    /// Link the new actor to this one before it starts.
    pub link: Option<Pid>,
}

impl Request for SpawnRequest {
    type Reply = Result<Pid, RemoteSpawnError>;
}

/// The spawn server of one node.
#[derive(Debug)]
pub struct SpawnServer {
    /// The node's `max_message_memory`: the most decoding arguments may claim.
    max_memory: usize,
}

impl GenServer for SpawnServer {
    type Calls = (SpawnRequest,);
    type Casts = ();
}

impl HandleCall<SpawnRequest> for SpawnServer {
    async fn handle_call(
        &mut self,
        req: SpawnRequest,
        from: ReplyTo<Result<Pid, RemoteSpawnError>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Result<Pid, RemoteSpawnError>> {
        let node = ctx.node().unwrap_or_default().to_string();
        let Some(kind) = find(&req.kind) else {
            return CallResponse::Reply(Err(RemoteSpawnError::UnknownKind {
                node,
                kind: req.kind,
            }));
        };
        let starter = match (kind.make)(&req.args, self.max_memory) {
            Ok(s) => s,
            Err(reason) => {
                return CallResponse::Reply(Err(RemoteSpawnError::BadArgs {
                    node,
                    kind: req.kind,
                    reason,
                }));
            }
        };
        // Started beside the server, which answers the next request while
        // this actor's `started` runs.
        let system = ctx.system().clone();
        tokio::spawn(async move {
            let mut opts = SpawnOptions::new();
            if let Some(p) = req.link {
                opts = opts.link_to(p);
            }
            let result = match starter.start(system.clone(), opts).await {
                Ok(pid) => Ok(pid),
                Err(joerl_core::StartError::Stopped(reason)) => {
                    Err(RemoteSpawnError::StartFailed {
                        node,
                        kind: req.kind,
                        reason,
                    })
                }
                Err(joerl_core::StartError::Spawn(_)) => Err(RemoteSpawnError::LinkFailed {
                    kind: req.kind,
                    caller: req.link.unwrap_or(from.caller()),
                }),
            };
            from.reply(&system, result);
        });
        CallResponse::NoReply
    }
}

crate::remote_server!(SpawnServer);

/// Two kinds registered under one name (the binary links both).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spawnable kind {name:?} is registered twice, by {first} and {second}; give each its own name"
)]
pub struct KindConflict {
    /// The name.
    pub name: &'static str,
    /// One type.
    pub first: &'static str,
    /// The other.
    pub second: &'static str,
}

/// The first name registered by two kinds, if any.
pub fn kind_conflict() -> Option<KindConflict> {
    let mut seen: std::collections::HashMap<&'static str, &'static str> = Default::default();
    for k in inventory::iter::<SpawnKind> {
        let ty = (k.type_name)();
        if let Some(first) = seen.insert(k.name, ty)
            && first != ty
        {
            return Some(KindConflict {
                name: k.name,
                first,
                second: ty,
            });
        }
    }
    None
}

/// Starts this node's spawn server (once; later calls do nothing), so other
/// nodes may start registered kinds here. Refused if two kinds share a name.
pub fn serve(node: &crate::DistributedSystem) -> Result<(), KindConflict> {
    if let Some(c) = kind_conflict() {
        return Err(c);
    }
    if node.whereis(SPAWN_SERVER).is_none() {
        let _ = joerl_core::gen_server::spawn_server_with(
            node,
            SpawnServer {
                max_memory: node.config().max_message_memory,
            },
            SpawnOptions::new().name(SPAWN_SERVER),
        );
    }
    Ok(())
}

/// The request for kind `K` with `args`, linked to `link` if given.
fn request_for<K: Spawnable + Named>(
    args: &K::Args,
    link: Option<Pid>,
) -> Result<SpawnRequest, RemoteSpawnError> {
    let mut bytes = Vec::new();
    crate::codec::encode_into(args, &mut bytes)
        .map_err(|e| RemoteSpawnError::Encode(e.to_string()))?;
    Ok(SpawnRequest {
        kind: K::KIND.to_string(),
        args: bytes,
        link,
    })
}

fn call_error(node: &str, e: CallError) -> RemoteSpawnError {
    match e {
        CallError::NoProc => RemoteSpawnError::NotServing(node.to_string()),
        CallError::Timeout => RemoteSpawnError::Timeout(node.to_string()),
        other => RemoteSpawnError::NodeDown {
            node: node.to_string(),
            reason: other.to_string(),
        },
    }
}

async fn request(
    system: &ActorSystem,
    caller: Option<&ActorContext>,
    node: &str,
    req: SpawnRequest,
) -> Result<Pid, RemoteSpawnError> {
    let server: ServerRef<SpawnServer> = ServerRef::new((SPAWN_SERVER, node));
    let reply = match caller {
        Some(ctx) => ctx.call_timeout(&server, req, SPAWN_TIMEOUT).await,
        None => system.call_timeout(&server, req, SPAWN_TIMEOUT).await,
    };
    reply.map_err(|e| call_error(node, e))?
}

/// Starts an actor of kind `K` on `node` with `args`: its Pid once its
/// `started` has run there.
pub async fn spawn_on<K: Spawnable + Named>(
    system: &ActorSystem,
    node: &str,
    args: K::Args,
) -> Result<Pid, RemoteSpawnError> {
    request(system, None, node, request_for::<K>(&args, None)?).await
}

/// Starts an actor of the kind named `kind` on `node` with arguments already
/// encoded by joerl's codec (for kinds this node does not link in).
pub async fn spawn_on_kind(
    system: &ActorSystem,
    node: &str,
    kind: &str,
    args: Vec<u8>,
) -> Result<Pid, RemoteSpawnError> {
    let req = SpawnRequest {
        kind: kind.to_string(),
        args,
        link: None,
    };
    request(system, None, node, req).await
}

/// [`spawn_on`], linked to the calling actor before the new one runs (as
/// Erlang's `spawn_link/4`): either's exit reaches the other, and a lost
/// node is `noconnection` to both. A new actor that fails in `started`
/// sends its exit over the link too: a caller that does not trap exits
/// stops with it rather than seeing `StartFailed`. After a `Timeout` the
/// actor may still have started, linked to the caller.
pub async fn spawn_link_on<K: Spawnable + Named>(
    ctx: &ActorContext,
    node: &str,
    args: K::Args,
) -> Result<Pid, RemoteSpawnError> {
    let req = request_for::<K>(&args, Some(ctx.pid()))?;
    // The new actor's link signal travels ahead of the answer on the same
    // connection, so the caller's side is set when the answer arrives (and
    // already gone again if the actor stopped normally before that).
    request(ctx.system(), Some(ctx), node, req).await
}

/// [`spawn_on`], then the calling actor monitors the new one. Unlike
/// Erlang's `spawn_monitor/4`, the monitor is set when the answer arrives:
/// an actor that exits before that is reported `noproc`, not with its own
/// reason.
pub async fn spawn_monitor_on<K: Spawnable + Named>(
    ctx: &ActorContext,
    node: &str,
    args: K::Args,
) -> Result<(Pid, MonitorRef), RemoteSpawnError> {
    let req = request_for::<K>(&args, None)?;
    let pid = request(ctx.system(), Some(ctx), node, req).await?;
    let monitor = ctx.monitor(pid).map_err(|e| RemoteSpawnError::NodeDown {
        node: node.to_string(),
        reason: e.to_string(),
    })?;
    Ok((pid, monitor))
}
