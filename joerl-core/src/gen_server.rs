//! gen_server: request/reply servers built on plain messages.
//!
//! A call is three ordinary things, as in Erlang: the caller monitors the server,
//! sends a [`CallRequest`] carrying a reply address and a tag, and waits for the
//! [`CallReply`] with that tag, for a down message, or for its timeout. Nothing
//! here knows whether the server is local, so calls to servers on other nodes use
//! the same code (the distribution layer carries these envelopes).
//!
//! Implement [`GenServer`] and spawn it with [`spawn_server`]:
//!
//! ```
//! use joerl_core::gen_server::{spawn_server, CallResponse, GenServer, ReplyTo};
//! use joerl_core::{ActorContext, ActorSystem};
//! use std::time::Duration;
//!
//! struct Adder(i64);
//!
//! impl GenServer for Adder {
//!     type Call = i64;
//!     type Reply = i64;
//!     type Cast = ();
//!     async fn handle_call(&mut self, n: i64, _from: ReplyTo, _ctx: &mut ActorContext) -> CallResponse<i64> {
//!         self.0 += n;
//!         CallResponse::Reply(self.0)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let system = ActorSystem::new();
//! let server = spawn_server(&system, Adder(0));
//! let total: i64 = system.call(server, 5i64, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(total, 5);
//! # }
//! ```

use std::any::Any;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::{Actor, ActorContext, ActorSystem, ExitReason, Message, Pid, SendError};

/// A call in flight: the request plus where to send the reply.
pub struct CallRequest {
    /// Where the reply goes (the caller's reply slot).
    pub reply_to: Pid,
    /// Identifies this call; the reply carries it back.
    pub tag: u64,
    /// The request value.
    pub request: Message,
}

/// The reply to a call.
pub struct CallReply {
    /// The tag of the [`CallRequest`].
    pub tag: u64,
    /// The reply value.
    pub reply: Message,
}

/// An asynchronous request to a gen_server (Erlang's `'$gen_cast'`).
pub struct CastRequest {
    /// The request value.
    pub request: Message,
}

/// The reply sent when a server receives a request of a type it does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRequest;

/// Delivered in place of a reply that reached the caller's node but could not be
/// handed to the caller (for example, a remote reply that failed to decode), or
/// sent back by the server's node for a request it could not decode; `call`
/// turns it into [`CallError::ReplyLost`] instead of waiting for its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLost {
    /// Why the reply was lost.
    pub reason: String,
}

/// Where to send the reply of one call; keep it to reply later (a deferred reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The caller's reply address.
    pub pid: Pid,
    /// The call's tag.
    pub tag: u64,
}

impl ReplyTo {
    /// Sends `reply` to the caller. Like Erlang's `gen_server:reply/2`, this never
    /// fails loudly: a caller that gave up (timeout) or died simply gets nothing.
    pub fn reply<R: Any + Send>(self, system: &ActorSystem, reply: R) {
        self.reply_as(system, None, reply)
    }

    /// Like [`reply`](Self::reply), with `server` as the reply's sender.
    pub fn reply_as<R: Any + Send>(self, system: &ActorSystem, server: Option<Pid>, reply: R) {
        let msg: Message = Box::new(CallReply {
            tag: self.tag,
            reply: Box::new(reply),
        });
        match system.try_send_from(server, self.pid, msg) {
            Ok(()) => {}
            Err(SendError::Full(unsent)) => {
                // A full queue toward the caller: wait for room off this thread.
                let system = system.clone();
                let to = self.pid;
                tokio::spawn(async move {
                    if let Err(e) = system.send_from(server, to, unsent.into_inner()).await {
                        tracing::debug!(%to, error = %e, "reply not delivered");
                    }
                });
            }
            Err(e) => tracing::debug!(to = %self.pid, error = %e, "reply not delivered"),
        }
    }
}

/// What `handle_call` returns.
#[derive(Debug)]
pub enum CallResponse<R> {
    /// Reply now.
    Reply(R),
    /// Reply later through the [`ReplyTo`] (or never, and the caller times out).
    NoReply,
    /// Reply, then stop the server with the reason.
    Stop(R, ExitReason),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No reply within the timeout. The server may still be working on it.
    #[error("call timed out waiting for the reply")]
    Timeout,
    /// The server did not exist (or belonged to an old incarnation of its node).
    #[error("the server does not exist (noproc)")]
    NoProc,
    /// The connection to the server's node was lost during the call.
    #[error("the server's node is not connected (noconnection)")]
    NoConnection,
    /// The server's node could not be reached before the call was made; the
    /// cause is the distribution layer's error (with joerl-dist, a
    /// `joerl_dist::DistError`: wrong cookie, not registered, unreachable
    /// with the I/O error, refused, bad name, ...), found with
    /// `std::error::Error::source` or by downcasting it.
    #[error("the server's node cannot be reached: {0}")]
    Unreachable(std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The server exited during the call with this reason.
    #[error("the server exited during the call: {0}")]
    Exit(ExitReason),
    /// The reply was not of the type the caller asked for.
    #[error("the server replied with a value that is not a {expected}")]
    UnexpectedReply {
        /// The type the caller expected.
        expected: &'static str,
    },
    /// The server does not handle requests of this type.
    #[error("the server does not handle requests of this type")]
    BadRequest,
    /// The request or the reply could not be delivered (for example, it
    /// arrived at the other node and could not be decoded there); the reason
    /// says which and why.
    #[error("the call's request or reply was lost on the way: {0}")]
    ReplyLost(String),
    /// The request could not be sent.
    #[error("the request could not be sent: {0}")]
    Send(SendError),
}

impl CallError {
    /// The call could not monitor its server.
    pub(crate) fn from_link(e: crate::LinkError) -> Self {
        match e {
            crate::LinkError::NoRouter(pid) => CallError::Send(SendError::NoRouter(pid)),
            crate::LinkError::Route(r) => CallError::Send(SendError::Route(r)),
        }
    }

    pub(crate) fn from_down(reason: ExitReason) -> Self {
        match reason {
            ExitReason::NoProc => CallError::NoProc,
            ExitReason::NoConnection => CallError::NoConnection,
            other => CallError::Exit(other),
        }
    }
}

/// A request/reply server: Erlang's gen_server behaviour.
pub trait GenServer: Send + 'static {
    /// The type of call requests.
    type Call: Send + 'static;
    /// The type of replies.
    type Reply: Send + 'static;
    /// The type of casts.
    type Cast: Send + 'static;

    /// Runs once before the first request.
    fn init(&mut self, ctx: &mut ActorContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Handles a call. Return [`CallResponse::NoReply`] to reply later through `from`.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = CallResponse<Self::Reply>> + Send;

    /// Handles a cast.
    fn handle_cast(
        &mut self,
        msg: Self::Cast,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        async {}
    }

    /// Handles any other message (timers, trapped exits, downs, plain sends).
    fn handle_info(
        &mut self,
        msg: Message,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        async {}
    }

    /// Runs once when the server stops.
    fn terminate(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// Adapts a [`GenServer`] to an [`Actor`].
pub struct GenServerActor<G>(pub G);

impl<G: GenServer> Actor for GenServerActor<G> {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.0.init(ctx).await
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<CallRequest>() {
            Ok(call) => {
                let CallRequest {
                    reply_to,
                    tag,
                    request,
                } = *call;
                let from = ReplyTo { pid: reply_to, tag };
                match request.downcast::<G::Call>() {
                    Ok(req) => match self.0.handle_call(*req, from, ctx).await {
                        CallResponse::Reply(r) => from.reply_as(ctx.system(), Some(ctx.pid()), r),
                        CallResponse::NoReply => {}
                        CallResponse::Stop(r, reason) => {
                            from.reply_as(ctx.system(), Some(ctx.pid()), r);
                            ctx.stop(reason);
                        }
                    },
                    Err(_) => {
                        tracing::warn!(
                            server = %ctx.pid(),
                            expected = std::any::type_name::<G::Call>(),
                            "call with a request of the wrong type"
                        );
                        from.reply_as(ctx.system(), Some(ctx.pid()), BadRequest);
                    }
                }
                return;
            }
            Err(other) => other,
        };
        let msg = match msg.downcast::<CastRequest>() {
            Ok(cast) => {
                match cast.request.downcast::<G::Cast>() {
                    Ok(c) => self.0.handle_cast(*c, ctx).await,
                    Err(_) => tracing::warn!(
                        server = %ctx.pid(),
                        expected = std::any::type_name::<G::Cast>(),
                        "cast of the wrong type ignored"
                    ),
                }
                return;
            }
            Err(other) => other,
        };
        self.0.handle_info(msg, ctx).await
    }

    async fn stopped(&mut self, reason: &ExitReason, ctx: &mut ActorContext) {
        self.0.terminate(reason, ctx).await
    }
}

/// Spawns a gen_server with default options.
pub fn spawn_server<G: GenServer>(system: &ActorSystem, server: G) -> Pid {
    system.spawn(GenServerActor(server))
}

/// Sends `reply` to the caller of a deferred call (Erlang's `gen_server:reply/2`).
pub fn reply<R: Any + Send>(system: &ActorSystem, to: ReplyTo, reply: R) {
    to.reply(system, reply)
}
