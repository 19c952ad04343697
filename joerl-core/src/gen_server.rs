//! gen_server: request/reply servers built on plain messages.
//!
//! A call is three ordinary things, as in Erlang: the caller monitors the server,
//! sends a [`CallRequest`] carrying a reply address and a tag, and waits for the
//! [`CallReply`] with that tag, for a down message, or for its timeout. Nothing
//! here knows whether the server is local, so calls to servers on other nodes use
//! the same code (the distribution layer carries these envelopes).
//!
//! Each request is its own type, and says what its reply is ([`Request`]). A
//! server lists the requests it answers (`type Calls`, a tuple) and answers each
//! with one [`HandleCall`] impl; casts likewise ([`HandleCast`]). A
//! [`ServerRef`] is typed by its server, so a call returns the request's reply
//! type, and calling a server with a request it does not answer does not compile:
//!
//! ```
//! use joerl_core::gen_server::{spawn_server, CallResponse, GenServer, HandleCall, ReplyTo, Request};
//! use joerl_core::{ActorContext, ActorSystem};
//!
//! struct Adder(i64);
//! struct Add(i64);
//! impl Request for Add { type Reply = i64; }
//! struct Total;
//! impl Request for Total { type Reply = i64; }
//!
//! impl GenServer for Adder {
//!     type Calls = (Add, Total);
//!     type Casts = ();
//! }
//! impl HandleCall<Add> for Adder {
//!     async fn handle_call(&mut self, Add(n): Add, _from: ReplyTo<i64>, _ctx: &mut ActorContext) -> CallResponse<i64> {
//!         self.0 += n;
//!         CallResponse::Reply(self.0)
//!     }
//! }
//! impl HandleCall<Total> for Adder {
//!     async fn handle_call(&mut self, _: Total, _from: ReplyTo<i64>, _ctx: &mut ActorContext) -> CallResponse<i64> {
//!         CallResponse::Reply(self.0)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let system = ActorSystem::new();
//! let adder = spawn_server(&system, Adder(0));
//! let total: i64 = system.call(&adder, Add(5)).await.unwrap();
//! assert_eq!(total, 5);
//! assert_eq!(system.call(&adder, Total).await.unwrap(), 5);
//! # }
//! ```
//!
//! A request the server does not answer is a compile error:
//!
//! ```compile_fail,E0277
//! # use joerl_core::gen_server::{spawn_server, CallResponse, GenServer, HandleCall, ReplyTo, Request};
//! # use joerl_core::{ActorContext, ActorSystem};
//! # struct Adder(i64);
//! # struct Add(i64);
//! # impl Request for Add { type Reply = i64; }
//! # impl GenServer for Adder { type Calls = (Add,); type Casts = (); }
//! # impl HandleCall<Add> for Adder {
//! #     async fn handle_call(&mut self, Add(n): Add, _f: ReplyTo<i64>, _c: &mut ActorContext) -> CallResponse<i64> {
//! #         CallResponse::Reply(n)
//! #     }
//! # }
//! struct Reset;
//! impl Request for Reset { type Reply = (); }
//! # async fn f(system: ActorSystem) {
//! let adder = spawn_server(&system, Adder(0));
//! system.call(&adder, Reset).await; // Adder has no HandleCall<Reset>
//! # }
//! ```
//!
//! and so is expecting another reply type than the request's:
//!
//! ```compile_fail,E0308
//! # use joerl_core::gen_server::{spawn_server, CallResponse, GenServer, HandleCall, ReplyTo, Request};
//! # use joerl_core::{ActorContext, ActorSystem};
//! # struct Adder(i64);
//! # struct Add(i64);
//! # impl Request for Add { type Reply = i64; }
//! # impl GenServer for Adder { type Calls = (Add,); type Casts = (); }
//! # impl HandleCall<Add> for Adder {
//! #     async fn handle_call(&mut self, Add(n): Add, _f: ReplyTo<i64>, _c: &mut ActorContext) -> CallResponse<i64> {
//! #         CallResponse::Reply(n)
//! #     }
//! # }
//! # async fn f(system: ActorSystem) {
//! let adder = spawn_server(&system, Adder(0));
//! let text: String = system.call(&adder, Add(1)).await.unwrap(); // the reply is an i64
//! # }
//! ```

use std::any::{Any, TypeId};
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Actor, ActorContext, ActorSystem, Dest, ExitReason, Message, Pid, RouteError, SendError,
    SpawnError, SpawnOptions,
};

/// How long a call waits for its reply unless told otherwise (Erlang's
/// default for `gen_server:call/2`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A request a server answers, and the type of its answer.
///
/// ```
/// struct GetJob;
/// impl joerl_core::gen_server::Request for GetJob {
///     type Reply = Option<u64>;
/// }
/// ```
pub trait Request: Send + 'static {
    /// What the server replies.
    type Reply: Send + 'static;
}

/// A call in flight: the request plus who called and where to send the reply.
pub struct CallRequest {
    /// The calling actor (or, for a call made outside any actor, the call's
    /// reply address): what the server sees as its caller.
    pub caller: Pid,
    /// Where the reply goes (the caller's reply slot).
    pub reply_to: Pid,
    /// Identifies this call; the reply carries it back.
    pub tag: u64,
    /// The request value.
    pub request: Message,
    /// `std::any::type_name` of the request, for error messages (not sent to
    /// other nodes).
    pub request_type: &'static str,
}

/// The reply to a call.
pub struct CallReply {
    /// The tag of the [`CallRequest`].
    pub tag: u64,
    /// The reply value.
    pub reply: Message,
    /// `std::any::type_name` of the reply, for error messages (not sent to
    /// other nodes).
    pub reply_type: &'static str,
}

/// An asynchronous request to a gen_server (Erlang's `'$gen_cast'`).
pub struct CastRequest {
    /// The request value.
    pub request: Message,
    /// `std::any::type_name` of the request, for error messages (not sent to
    /// other nodes).
    pub request_type: &'static str,
}

/// The reply sent when a server receives a request of a type it does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRequest;

/// Delivered in place of a reply that reached the caller's node but could not be
/// handed to the caller (for example, a remote reply that failed to decode), or
/// sent back by the server's node for a request it could not decode, or by the
/// server for a reply it could not send (a type not registered for other
/// nodes); `call` turns it into [`CallError::ReplyLost`] instead of waiting for
/// its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLost {
    /// Why the reply was lost.
    pub reason: String,
}

/// Who called, and where the reply of one call goes: Erlang's `From`. Keep it
/// to reply later (a deferred reply); it can be sent to another actor, even on
/// another node, which may then reply in the server's place.
pub struct ReplyTo<R> {
    caller: Pid,
    reply_to: Pid,
    tag: u64,
    _reply: PhantomData<fn(R)>,
}

impl<R> Clone for ReplyTo<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ReplyTo<R> {}

impl<R> std::fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyTo")
            .field("caller", &self.caller)
            .field("reply_to", &self.reply_to)
            .field("tag", &self.tag)
            .finish()
    }
}

impl<R> PartialEq for ReplyTo<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.caller, self.reply_to, self.tag) == (other.caller, other.reply_to, other.tag)
    }
}

impl<R> Eq for ReplyTo<R> {}

/// The wire form of a [`ReplyTo`] (its reply type is the receiver's to know).
#[derive(Serialize, Deserialize)]
struct ReplyToWire {
    caller: Pid,
    reply_to: Pid,
    tag: u64,
}

impl<R> Serialize for ReplyTo<R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReplyToWire {
            caller: self.caller,
            reply_to: self.reply_to,
            tag: self.tag,
        }
        .serialize(s)
    }
}

impl<'de, R> Deserialize<'de> for ReplyTo<R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = ReplyToWire::deserialize(d)?;
        Ok(ReplyTo {
            caller: w.caller,
            reply_to: w.reply_to,
            tag: w.tag,
            _reply: PhantomData,
        })
    }
}

impl<R: Send + 'static> ReplyTo<R> {
    fn new(call: &CallHeader) -> Self {
        ReplyTo {
            caller: call.caller,
            reply_to: call.reply_to,
            tag: call.tag,
            _reply: PhantomData,
        }
    }

    /// The calling actor: monitor or link it to learn when it goes away. For
    /// a call made outside any actor (from `ActorSystem::call`), the call's
    /// own reply address, which exists while the call waits.
    pub fn caller(&self) -> Pid {
        self.caller
    }

    /// Sends `reply` to the caller. Like Erlang's `gen_server:reply/2`, this never
    /// fails loudly: a caller that gave up (timeout) or died simply gets nothing.
    pub fn reply(self, system: &ActorSystem, reply: R) {
        self.reply_as(system, None, reply)
    }

    /// Like [`reply`](Self::reply), with `server` as the reply's sender.
    pub fn reply_as(self, system: &ActorSystem, server: Option<Pid>, reply: R) {
        let msg: Message = Box::new(CallReply {
            tag: self.tag,
            reply: Box::new(reply),
            reply_type: std::any::type_name::<R>(),
        });
        send_reply(system, server, self.reply_to, self.tag, msg);
    }
}

/// Sends a reply, waiting off this thread if the queue toward the caller is
/// full. A reply that cannot cross to the caller's node (its type is not
/// registered there) becomes a [`ReplyLost`] that says why, so the caller
/// fails at once instead of timing out.
fn send_reply(system: &ActorSystem, server: Option<Pid>, to: Pid, tag: u64, msg: Message) {
    match system.try_send_from(server, to, msg) {
        Ok(()) => {}
        Err(SendError::Full(unsent)) => {
            let system = system.clone();
            tokio::spawn(async move {
                if let Err(e) = system.send_from(server, to, unsent.into_inner()).await {
                    tracing::debug!(%to, error = %e, "reply not delivered");
                }
            });
        }
        Err(SendError::Route(RouteError::NotSerializable { detail })) => {
            tracing::warn!(%to, %detail, "the reply cannot be sent to the caller's node");
            let lost: Message = Box::new(CallReply {
                tag,
                reply: Box::new(ReplyLost {
                    reason: format!("the server's reply could not be sent: {detail}"),
                }),
                reply_type: std::any::type_name::<ReplyLost>(),
            });
            if let Err(e) = system.try_send_from(server, to, lost) {
                tracing::debug!(%to, error = %e, "reply not delivered");
            }
        }
        Err(e) => tracing::debug!(%to, error = %e, "reply not delivered"),
    }
}

/// What a server needs of a call to answer it (taken from its [`CallRequest`]).
pub struct CallHeader {
    caller: Pid,
    reply_to: Pid,
    tag: u64,
}

/// A handle on a gen_server of type `S`: a Pid, a local name or `{name, node}`
/// ([`Dest`]), typed by the server, so [`ActorSystem::call`] and
/// [`ActorContext::call`] return each request's reply type and refuse, at
/// compile time, a request the server does not answer. It is plain data: clone
/// it, put it in a message, build it from a name on another node.
pub struct ServerRef<S> {
    dest: Dest,
    _server: PhantomData<fn() -> S>,
}

impl<S> ServerRef<S> {
    /// A handle on the server at `dest` (a Pid, a name, or `(name, node)`).
    /// Nothing checks here that the server there is an `S`: a request it does
    /// not answer gets [`CallError::BadRequest`].
    pub fn new(dest: impl Into<Dest>) -> Self {
        ServerRef {
            dest: dest.into(),
            _server: PhantomData,
        }
    }

    /// The server's address.
    pub fn dest(&self) -> &Dest {
        &self.dest
    }

    /// The server's Pid, if the handle was made from one (as
    /// [`spawn_server`]'s is).
    pub fn pid(&self) -> Option<Pid> {
        self.dest.pid()
    }
}

impl<S> Clone for ServerRef<S> {
    fn clone(&self) -> Self {
        ServerRef::new(self.dest.clone())
    }
}

impl<S> std::fmt::Debug for ServerRef<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServerRef<{}>({})",
            std::any::type_name::<S>(),
            self.dest
        )
    }
}

impl<S> PartialEq for ServerRef<S> {
    fn eq(&self, other: &Self) -> bool {
        self.dest == other.dest
    }
}

impl<S> Eq for ServerRef<S> {}

impl<S> Serialize for ServerRef<S> {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        self.dest.serialize(s)
    }
}

impl<'de, S> Deserialize<'de> for ServerRef<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ServerRef::new(Dest::deserialize(d)?))
    }
}

impl<S> From<&ServerRef<S>> for Dest {
    fn from(server: &ServerRef<S>) -> Self {
        server.dest.clone()
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
    /// The server implements `HandleCall` for the request but does not list
    /// it in its `type Calls`, so it could not be dispatched; nothing was sent.
    /// Add the request to the tuple.
    #[error("{server} has no {request} in its `type Calls`; add it to the tuple")]
    NotInCalls {
        /// The server type.
        server: &'static str,
        /// The request type.
        request: &'static str,
    },
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
///
/// List the requests it answers in `Calls` and its casts in `Casts` (tuples of
/// types, `()` for none), and implement [`HandleCall`] for each request and
/// [`HandleCast`] for each cast. Everything else that reaches the server
/// (timers, trapped exits, downs, plain sends) goes to `handle_info`.
pub trait GenServer: Send + Sized + 'static {
    /// The requests this server answers: a tuple such as `(GetJob, JobDone)`,
    /// each with its [`HandleCall`] impl.
    type Calls: CallSet<Self>;
    /// The casts this server takes: a tuple of types, each with its
    /// [`HandleCast`] impl.
    type Casts: CastSet<Self>;

    /// Runs once before the first request.
    fn init(&mut self, ctx: &mut ActorContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
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

/// Answers one kind of request. Return [`CallResponse::NoReply`] to reply
/// later through `from`; `from.caller()` is the calling actor.
pub trait HandleCall<Q: Request>: GenServer {
    /// Handles one call of `Q`.
    fn handle_call(
        &mut self,
        request: Q,
        from: ReplyTo<Q::Reply>,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = CallResponse<Q::Reply>> + Send;
}

/// Takes one kind of cast.
pub trait HandleCast<C: Send + 'static>: GenServer {
    /// Handles one cast of `C`.
    fn handle_cast(&mut self, msg: C, ctx: &mut ActorContext) -> impl Future<Output = ()> + Send;
}

/// The requests a server answers (a tuple of [`Request`] types, each with a
/// [`HandleCall`] impl on `S`), and how a call is handed to the right impl.
/// Implemented for tuples of up to twelve; not meant to be implemented by hand.
pub trait CallSet<S>: 'static {
    /// True if `request` (a `TypeId`) is one of the set.
    fn accepts(request: TypeId) -> bool;

    /// Hands `request` to its [`HandleCall`] impl and sends the reply;
    /// `Err(request)` if its type is not one of the set.
    fn dispatch(
        server: &mut S,
        request: Message,
        call: CallHeader,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = Result<(), Message>> + Send;
}

/// The casts a server takes (a tuple of types, each with a [`HandleCast`]
/// impl on `S`). Implemented for tuples of up to twelve.
pub trait CastSet<S>: 'static {
    /// True if `msg` (a `TypeId`) is one of the set.
    fn accepts(msg: TypeId) -> bool;

    /// Hands `msg` to its [`HandleCast`] impl; `Err(msg)` if its type is not
    /// one of the set.
    fn dispatch(
        server: &mut S,
        msg: Message,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = Result<(), Message>> + Send;
}

/// Runs one call of `Q` and sends its reply.
async fn run_call<S: HandleCall<Q>, Q: Request>(
    server: &mut S,
    request: Q,
    call: CallHeader,
    ctx: &mut ActorContext,
) {
    let from = ReplyTo::<Q::Reply>::new(&call);
    match server.handle_call(request, from, ctx).await {
        CallResponse::Reply(r) => from.reply_as(ctx.system(), Some(ctx.pid()), r),
        CallResponse::NoReply => {}
        CallResponse::Stop(r, reason) => {
            from.reply_as(ctx.system(), Some(ctx.pid()), r);
            ctx.stop(reason);
        }
    }
}

macro_rules! sets {
    ($($t:ident),*) => {
        impl<S: GenServer $(+ HandleCall<$t>)*, $($t: Request),*> CallSet<S> for ($($t,)*) {
            fn accepts(request: TypeId) -> bool {
                let _ = request;
                false $(|| request == TypeId::of::<$t>())*
            }

            #[allow(unused_variables)]
            async fn dispatch(
                server: &mut S,
                request: Message,
                call: CallHeader,
                ctx: &mut ActorContext,
            ) -> Result<(), Message> {
                $(
                    let request = match request.downcast::<$t>() {
                        Ok(q) => {
                            run_call::<S, $t>(server, *q, call, ctx).await;
                            return Ok(());
                        }
                        Err(other) => other,
                    };
                )*
                Err(request)
            }
        }

        impl<S: GenServer $(+ HandleCast<$t>)*, $($t: Send + 'static),*> CastSet<S> for ($($t,)*) {
            fn accepts(msg: TypeId) -> bool {
                let _ = msg;
                false $(|| msg == TypeId::of::<$t>())*
            }

            #[allow(unused_variables)]
            async fn dispatch(
                server: &mut S,
                msg: Message,
                ctx: &mut ActorContext,
            ) -> Result<(), Message> {
                $(
                    let msg = match msg.downcast::<$t>() {
                        Ok(c) => {
                            <S as HandleCast<$t>>::handle_cast(server, *c, ctx).await;
                            return Ok(());
                        }
                        Err(other) => other,
                    };
                )*
                Err(msg)
            }
        }
    };
}

sets!();
sets!(A);
sets!(A, B);
sets!(A, B, C);
sets!(A, B, C, D);
sets!(A, B, C, D, E);
sets!(A, B, C, D, E, F);
sets!(A, B, C, D, E, F, G);
sets!(A, B, C, D, E, F, G, H);
sets!(A, B, C, D, E, F, G, H, I);
sets!(A, B, C, D, E, F, G, H, I, J);
sets!(A, B, C, D, E, F, G, H, I, J, K);
sets!(A, B, C, D, E, F, G, H, I, J, K, L);

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
                    caller,
                    reply_to,
                    tag,
                    request,
                    request_type,
                } = *call;
                let header = CallHeader {
                    caller,
                    reply_to,
                    tag,
                };
                if G::Calls::dispatch(&mut self.0, request, header, ctx)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        server = %ctx.pid(),
                        server_type = std::any::type_name::<G>(),
                        request = request_type,
                        "call with a request this server does not answer (not in its `type Calls`)"
                    );
                    let bad: Message = Box::new(CallReply {
                        tag,
                        reply: Box::new(BadRequest),
                        reply_type: std::any::type_name::<BadRequest>(),
                    });
                    send_reply(ctx.system(), Some(ctx.pid()), reply_to, tag, bad);
                }
                return;
            }
            Err(other) => other,
        };
        let msg = match msg.downcast::<CastRequest>() {
            Ok(cast) => {
                let CastRequest {
                    request,
                    request_type,
                } = *cast;
                if G::Casts::dispatch(&mut self.0, request, ctx).await.is_err() {
                    tracing::warn!(
                        server = %ctx.pid(),
                        server_type = std::any::type_name::<G>(),
                        cast = request_type,
                        "cast this server does not take (not in its `type Casts`) ignored"
                    );
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
pub fn spawn_server<G: GenServer>(system: &ActorSystem, server: G) -> ServerRef<G> {
    ServerRef::new(system.spawn(GenServerActor(server)))
}

/// Spawns a gen_server with spawn options (a registered name, a link, a
/// mailbox capacity).
pub fn spawn_server_with<G: GenServer>(
    system: &ActorSystem,
    server: G,
    opts: SpawnOptions,
) -> Result<ServerRef<G>, SpawnError> {
    Ok(ServerRef::new(
        system.spawn_with(GenServerActor(server), opts)?,
    ))
}

/// Builds the call request for `request`, answered to `reply_to` under `tag`.
pub(crate) fn call_request<Q: Any + Send>(
    caller: Pid,
    reply_to: Pid,
    tag: u64,
    request: Q,
) -> Message {
    let (request, request_type) = crate::message::into_message(request);
    Box::new(CallRequest {
        caller,
        reply_to,
        tag,
        request,
        request_type: request_type.unwrap_or("a message of unknown type"),
    })
}

/// The cast envelope for `msg`.
pub(crate) fn cast_request<C: Any + Send>(msg: C) -> Message {
    let (request, request_type) = crate::message::into_message(msg);
    Box::new(CastRequest {
        request,
        request_type: request_type.unwrap_or("a message of unknown type"),
    })
}
