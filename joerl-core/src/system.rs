//! [`ActorSystem`]: spawning, sending, names, links, monitors, exits, shutdown.
//!
//! The system owns the process table (Pid -> process) and the name table. A Pid
//! of this node and this incarnation is looked up locally; a Pid of this node with
//! another creation is an old incarnation and is treated as dead (`noproc`); any
//! other Pid goes to the installed [`Router`], or fails with a clear error when
//! there is none.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::actor::{ActorContext, run_actor};
use crate::gen_server::{
    CallSet, DEFAULT_CALL_TIMEOUT, HandleCall, HandleCast, Request, ServerRef,
};
use crate::message::Envelope;
use crate::message::into_message;
use crate::process::{Process, PushError};
use crate::timer::TimerRef;
use crate::{
    Actor, CallError, Dest, ExitReason, LinkError, Message, MonitorRef, NameService, Pid,
    PlacedRoute, RegisterError, RouteError, Router, SendError, Signal, SpawnError, StartError,
    UnsentMessage,
};

/// Default capacity of a user mailbox, in messages.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// How long [`ActorSystem::shutdown`] waits for actors to stop before killing them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Options for [`ActorSystem::spawn_with`].
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    capacity: Option<usize>,
    name: Option<String>,
    trap_exit: bool,
    link: Option<Pid>,
}

impl SpawnOptions {
    /// Default options: default capacity, no name, not trapping exits, no link.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mailbox capacity in messages (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Registers the actor under `name` before it starts.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the actor with exit trapping on.
    pub fn trap_exit(mut self, on: bool) -> Self {
        self.trap_exit = on;
        self
    }

    /// Links the new actor to `pid` before it starts: a local actor, or, on
    /// a distributed node, one on another node (remote spawn's
    /// `spawn_link`).
    pub fn link_to(mut self, pid: Pid) -> Self {
        self.link = Some(pid);
        self
    }
}

/// Describes how the system identifies its node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The full node name (`name@host`).
    pub name: String,
    /// The incarnation of this node (from EPMD registration).
    pub creation: u32,
}

pub(crate) struct Inner {
    node: u32,
    creation: u32,
    node_name: Option<String>,
    next_id: AtomicU64,
    next_ref: AtomicU64,
    processes: DashMap<u64, Arc<Process>, IdHash>,
    names: DashMap<String, Pid>,
    live: AtomicUsize,
    all_stopped: Notify,
    shutting_down: AtomicBool,
    pub(crate) router: OnceLock<Arc<dyn Router>>,
    pub(crate) name_service: OnceLock<Arc<dyn NameService>>,
    runtime: tokio::runtime::Handle,
    default_capacity: usize,
}

/// A handle on an [`ActorSystem`] that does not keep it running: held by
/// services the system itself keeps, which would otherwise keep it alive.
#[derive(Clone, Debug)]
pub struct WeakActorSystem(Weak<Inner>);

impl WeakActorSystem {
    /// The system, while it exists (the handle does not keep it running).
    pub fn upgrade(&self) -> Option<ActorSystem> {
        self.0.upgrade().map(ActorSystem::internal)
    }
}

/// Stops the system when the last user handle is dropped.
struct DropGuard(Weak<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.begin_shutdown(ExitReason::Shutdown);
        }
    }
}

/// A running actor system. Cheap to clone; every clone is the same system.
///
/// Must be created inside a tokio runtime. When the last handle created by
/// [`ActorSystem::new`] (or its clones) is dropped, every actor is sent a
/// `shutdown` exit signal, so no actor outlives the system by accident. Call
/// [`shutdown`](ActorSystem::shutdown) to stop them and wait until they are gone.
#[derive(Clone)]
pub struct ActorSystem {
    pub(crate) inner: Arc<Inner>,
    _guard: Option<Arc<DropGuard>>,
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSystem")
            .field("node", &self.inner.node_name)
            .field("node_id", &self.inner.node)
            .field("creation", &self.inner.creation)
            .field("actors", &self.inner.live.load(Ordering::Relaxed))
            .finish()
    }
}

impl ActorSystem {
    /// A local-only system (node id 0). Panics outside a tokio runtime.
    pub fn new() -> Self {
        Self::build(None, DEFAULT_MAILBOX_CAPACITY)
    }

    /// A system that is a node of a cluster: its Pids carry the node id of `identity.name`
    /// and its creation. Used by `joerl-dist`.
    pub fn with_node(identity: NodeIdentity) -> Self {
        Self::build(Some(identity), DEFAULT_MAILBOX_CAPACITY)
    }

    /// A local-only system whose actors get mailboxes of `capacity` messages by default.
    pub fn with_default_capacity(capacity: usize) -> Self {
        Self::build(None, capacity)
    }

    fn build(identity: Option<NodeIdentity>, capacity: usize) -> Self {
        let (node, creation, node_name) = match identity {
            Some(id) => (crate::node_id(&id.name), id.creation, Some(id.name)),
            None => (crate::LOCAL_NODE, 0, None),
        };
        let inner = Arc::new(Inner {
            node,
            creation,
            node_name,
            next_id: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            processes: DashMap::with_hasher(IdHash::default()),
            names: DashMap::new(),
            live: AtomicUsize::new(0),
            all_stopped: Notify::new(),
            shutting_down: AtomicBool::new(false),
            router: OnceLock::new(),
            name_service: OnceLock::new(),
            runtime: tokio::runtime::Handle::current(),
            default_capacity: capacity.max(1),
        });
        let guard = Arc::new(DropGuard(Arc::downgrade(&inner)));
        ActorSystem {
            inner,
            _guard: Some(guard),
        }
    }

    /// A handle that does not keep the system running (held by actors themselves).
    pub(crate) fn internal(inner: Arc<Inner>) -> Self {
        ActorSystem {
            inner,
            _guard: None,
        }
    }

    /// This node's id (0 for a local-only system).
    pub fn node_id(&self) -> u32 {
        self.inner.node
    }

    /// This node's creation (incarnation).
    pub fn creation(&self) -> u32 {
        self.inner.creation
    }

    /// This node's full name, if it is a node of a cluster.
    pub fn node_name(&self) -> Option<&str> {
        self.inner.node_name.as_deref()
    }

    /// Installs the distribution router. Only the first call has an effect; returns
    /// false if a router was already installed.
    pub fn set_router(&self, router: Arc<dyn Router>) -> bool {
        self.inner.router.set(router).is_ok()
    }

    /// Installs the name service that resolves [`Dest::Global`] and
    /// [`Dest::Group`] (joerl-dist's cluster layer does). Only the first call
    /// has an effect; returns false if one was already installed.
    pub fn set_name_service(&self, service: Arc<dyn NameService>) -> bool {
        self.inner.name_service.set(service).is_ok()
    }

    /// The Pids a cluster-wide address (a global name or a group) reaches
    /// now, each with its copy of `msg`; never empty.
    fn cluster_deliveries(
        &self,
        dest: &Dest,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<Vec<(Pid, Message)>, SendError> {
        let service = self
            .inner
            .name_service
            .get()
            .ok_or_else(|| SendError::NoNameService(dest.to_string()))?;
        let targets = match dest {
            Dest::Global(name) => match service.whereis_global(name)? {
                Some(pid) => vec![pid],
                None => return Err(SendError::GlobalNotRegistered(name.clone())),
            },
            Dest::Group(g) => service.group_targets(g)?,
            _ => unreachable!("only global names and groups are cluster-wide"),
        };
        let Some((last, rest)) = targets.split_last() else {
            let Dest::Group(g) = dest else { unreachable!() };
            return Err(SendError::EmptyGroup {
                scope: g.scope.clone(),
                group: g.group.clone(),
            });
        };
        let mut out = Vec::with_capacity(targets.len());
        for pid in rest {
            let copy = service.copy_message(&msg).ok_or(SendError::NotCopyable(
                type_name.unwrap_or("(a boxed Message)"),
            ))?;
            out.push((*pid, copy));
        }
        out.push((*last, msg));
        Ok(out)
    }

    /// Where a placed identity's message goes now (a name, here or on its
    /// owner).
    pub(crate) fn route_placed(
        &self,
        kind: &Arc<str>,
        id: &Arc<str>,
    ) -> Result<PlacedRoute, SendError> {
        let service = self
            .inner
            .name_service
            .get()
            .ok_or_else(|| SendError::NoNameService(format!("the placed kind {kind:?}")))?;
        service.route_placed(kind, id)
    }

    /// Where a message sent to a placed identity goes now: also the
    /// activation's Pid, when the service knows it.
    fn route_placed_send(&self, kind: &Arc<str>, id: &Arc<str>) -> Result<PlacedRoute, SendError> {
        let service = self
            .inner
            .name_service
            .get()
            .ok_or_else(|| SendError::NoNameService(format!("the placed kind {kind:?}")))?;
        service.route_placed_send(kind, id)
    }

    /// The one Pid a call or a monitor to a cluster-wide address goes to.
    pub(crate) fn cluster_target(&self, dest: &Dest) -> Result<Pid, SendError> {
        let service = self
            .inner
            .name_service
            .get()
            .ok_or_else(|| SendError::NoNameService(dest.to_string()))?;
        match dest {
            Dest::Global(name) => service
                .whereis_global(name)?
                .ok_or_else(|| SendError::GlobalNotRegistered(name.clone())),
            Dest::Group(g) => {
                service
                    .group_targets(g)?
                    .first()
                    .copied()
                    .ok_or_else(|| SendError::EmptyGroup {
                        scope: g.scope.clone(),
                        group: g.group.clone(),
                    })
            }
            _ => unreachable!("only global names and groups are cluster-wide"),
        }
    }

    /// The Pid registered under `name`, without asking the name service to
    /// start anything (see [`whereis`](Self::whereis)).
    pub fn whereis_registered(&self, name: &str) -> Option<Pid> {
        self.inner.names.get(name).map(|p| *p)
    }

    /// A handle that does not keep the system running (for services the
    /// system itself holds).
    pub fn downgrade(&self) -> WeakActorSystem {
        WeakActorSystem(Arc::downgrade(&self.inner))
    }

    /// Number of running actors.
    pub fn actor_count(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Spawns an actor with default options.
    pub fn spawn<A: Actor>(&self, actor: A) -> Pid {
        self.spawn_with(actor, SpawnOptions::new())
            .expect("spawn without a name or link cannot fail")
    }

    /// Spawns an actor linked to the local actor `link_to`.
    pub fn spawn_link<A: Actor>(&self, actor: A, link_to: Pid) -> Result<Pid, SpawnError> {
        self.spawn_with(actor, SpawnOptions::new().link_to(link_to))
    }

    /// Spawns an actor with options (capacity, name, trap_exit, link).
    pub fn spawn_with<A: Actor>(&self, actor: A, opts: SpawnOptions) -> Result<Pid, SpawnError> {
        self.spawn_inner(actor, opts, None)
    }

    /// Spawns an actor and waits until its `started` callback has finished, as
    /// OTP's synchronous start does. Fails with the exit reason if the actor
    /// stopped during `started` (a panic, or `ctx.stop`).
    pub async fn start<A: Actor>(&self, actor: A, opts: SpawnOptions) -> Result<Pid, StartError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pid = self
            .spawn_inner(actor, opts, Some(tx))
            .map_err(StartError::Spawn)?;
        match rx.await {
            Ok(Ok(())) => Ok(pid),
            Ok(Err(reason)) => Err(StartError::Stopped(reason)),
            Err(_) => Err(StartError::Stopped(ExitReason::Killed)),
        }
    }

    fn spawn_inner<A: Actor>(
        &self,
        actor: A,
        opts: SpawnOptions,
        started_tx: Option<tokio::sync::oneshot::Sender<Result<(), ExitReason>>>,
    ) -> Result<Pid, SpawnError> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::new(inner.node, id, inner.creation);
        let capacity = opts.capacity.unwrap_or(inner.default_capacity);
        let process = Arc::new(Process::new(pid, capacity, opts.trap_exit));
        // The child is in the process table before the parent links to it, so an
        // exit of the parent from then on always reaches it.
        inner.processes.insert(id, process.clone());
        if let Some(parent_pid) = opts.link {
            process.lock().relations().links.insert(parent_pid);
            let linked = match inner.classify(parent_pid) {
                // An actor on another node: the link signal goes out before
                // the new actor runs, so an exit of it follows the link on
                // the same connection (a dead or unknown target answers with
                // an exit, as a link to it would).
                Target::Remote => inner
                    .send_signal(parent_pid, Signal::Link { from: pid })
                    .is_ok(),
                _ => match inner.local_process(parent_pid) {
                    Some(parent) => {
                        let mut pst = parent.lock();
                        if pst.is_closed() {
                            false
                        } else {
                            pst.relations().links.insert(pid);
                            true
                        }
                    }
                    None => false,
                },
            };
            if !linked {
                inner.processes.remove(&id);
                return Err(SpawnError::LinkTargetDead(parent_pid));
            }
        }
        if let Some(name) = &opts.name {
            if let Err(e) = inner.register_process(&process, name) {
                inner.processes.remove(&id);
                if let Some(parent) = opts.link.and_then(|p| inner.local_process(p)) {
                    if let Some(r) = parent.lock().relations_if_any() {
                        r.links.remove(&pid);
                    }
                } else if let Some(p) = opts.link
                    && matches!(inner.classify(p), Target::Remote)
                {
                    // Take back the link signal sent to the other node.
                    let _ = inner.send_signal(p, Signal::Unlink { from: pid });
                }
                return Err(match e {
                    RegisterError::NameTaken(n) => SpawnError::NameTaken(n),
                    _ => SpawnError::NameTaken(name.clone()),
                });
            }
        }
        inner.live.fetch_add(1, Ordering::AcqRel);
        if inner.shutting_down.load(Ordering::Acquire) {
            let _ = process.push_signal(Signal::Exit {
                from: inner.system_pid(),
                reason: ExitReason::Shutdown,
                link: false,
            });
        }
        let ctx = ActorContext {
            process,
            system: ActorSystem::internal(inner.clone()),
            sender: crate::message::NO_SENDER,
            stop: None,
            started_tx,
        };
        inner.runtime.spawn(run_actor(actor, ctx));
        Ok(pid)
    }

    /// Sends `msg` to `to`: a Pid (local or remote), a name registered on
    /// this node, `(name, node)` (Erlang's `{Name, Node} ! Msg`, looked up
    /// by that node), a global name or a group ([`Dest::Global`],
    /// [`Dest::Group`], looked up here in the node's name service), waiting
    /// while the mailbox (or, for another node, the outgoing queue to it) is
    /// full. To every member of a group ([`Pick::All`](crate::Pick::All)),
    /// the members are sent to one after another, each waited for as one
    /// send is; a member that is gone misses it. Pass the value itself (`send(pid,
    /// Ping(1))`); a [`Message`] (an already boxed value, for code that
    /// forwards what it received) is passed on as it is. The message has no
    /// sender; from an actor, use [`ActorContext::send`](crate::ActorContext::send).
    pub async fn send(&self, to: impl Into<Dest>, msg: impl Any + Send) -> Result<(), SendError> {
        self.send_from(None, to, msg).await
    }

    /// Sends without waiting; a full mailbox (or queue) gives
    /// [`SendError::Full`] with the message. To every member of a group
    /// ([`Pick::All`](crate::Pick::All)), a member whose mailbox is full
    /// misses it and the send is still `Ok`.
    pub fn try_send(&self, to: impl Into<Dest>, msg: impl Any + Send) -> Result<(), SendError> {
        self.try_send_from(None, to, msg)
    }

    /// Like [`send`](Self::send), with an explicit sender (what the receiver's
    /// `ctx.sender()` returns). Used by contexts and by the distribution layer.
    pub async fn send_from(
        &self,
        from: Option<Pid>,
        to: impl Into<Dest>,
        msg: impl Any + Send,
    ) -> Result<(), SendError> {
        let (msg, type_name) = into_message(msg);
        match to.into() {
            // The hot path: a small future, as if names did not exist.
            Dest::Pid(pid) => self.send_message(from, pid, msg, type_name).await,
            // A placed identity whose activation's Pid is known: as fast.
            Dest::Placed { kind, id } => match self.route_placed_send(&kind, &id)? {
                PlacedRoute::Activation(pid) => self.send_message(from, pid, msg, type_name).await,
                route => Box::pin(self.send_placed(from, route, msg, type_name)).await,
            },
            // A name is looked up, and a named send to another node has a
            // future of its own: kept out of the Pid path's.
            dest => Box::pin(self.send_dest(from, &dest, msg, type_name)).await,
        }
    }

    async fn send_message(
        &self,
        from: Option<Pid>,
        to: Pid,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<(), SendError> {
        match self.inner.classify(to) {
            Target::Local => {
                let env = Envelope::new(from, msg);
                let env = match self.inner.local_process(to) {
                    Some(process) => match push_waiting(&process, env).await {
                        Ok(()) => return Ok(()),
                        Err(env) => env,
                    },
                    None => env,
                };
                // Gone: a placed activation's message goes on to its next one.
                let Some(next) = self.inner.moved(to) else {
                    return Err(SendError::NoProc(to));
                };
                push_waiting(&next, env)
                    .await
                    .map_err(|_| SendError::NoProc(to))
            }
            Target::Stale => Err(SendError::NoProc(to)),
            Target::Remote => {
                let router = self.inner.router.get().ok_or(SendError::NoRouter(to))?;
                let mut msg = msg;
                let mut resolved = false;
                loop {
                    match router.try_send(from, to, msg) {
                        Ok(()) => return Ok(()),
                        Err(RouteError::Full(m)) => {
                            msg = m.into_inner();
                            router.ready(Some(to.node()), None).await;
                        }
                        Err(RouteError::UnknownNode { msg: m, .. }) if !resolved => {
                            // A Pid of a node never talked to: learn how to reach it, once.
                            msg = m.into_inner();
                            resolved = true;
                            router.resolve(to.node()).await;
                        }
                        Err(e) => return Err(route_error(e, type_name)),
                    }
                }
            }
        }
    }

    /// Like [`try_send`](Self::try_send), with an explicit sender.
    pub fn try_send_from(
        &self,
        from: Option<Pid>,
        to: impl Into<Dest>,
        msg: impl Any + Send,
    ) -> Result<(), SendError> {
        let (msg, type_name) = into_message(msg);
        match to.into() {
            Dest::Pid(pid) => self.try_send_pid(from, pid, msg, type_name),
            Dest::Name(name) => {
                let pid = self
                    .whereis(&name)
                    .ok_or(SendError::NameNotRegistered(name))?;
                self.try_send_pid(from, pid, msg, type_name)
            }
            Dest::Remote { name, node } => {
                if self.inner.node_name.as_deref() == Some(node.as_str()) {
                    let pid = self
                        .whereis(&name)
                        .ok_or(SendError::NameNotRegistered(name))?;
                    return self.try_send_pid(from, pid, msg, type_name);
                }
                let router = self
                    .inner
                    .router
                    .get()
                    .ok_or(SendError::NoRouterForNode(node.clone()))?;
                match router.try_send_named(from, &name, &node, msg) {
                    Ok(()) => Ok(()),
                    Err(RouteError::Full(m)) => Err(SendError::Full(m)),
                    Err(e) => Err(route_error(e, type_name)),
                }
            }
            Dest::Placed { kind, id } => match self.route_placed_send(&kind, &id)? {
                PlacedRoute::Activation(pid) => self.try_send_pid(from, pid, msg, type_name),
                PlacedRoute::Here(name) => {
                    let pid = self
                        .whereis(&name)
                        .ok_or_else(|| SendError::NameNotRegistered(name.to_string()))?;
                    self.try_send_pid(from, pid, msg, type_name)
                }
                PlacedRoute::There { name, node } => {
                    let router = self
                        .inner
                        .router
                        .get()
                        .ok_or_else(|| SendError::NoRouterForNode(node.to_string()))?;
                    match router.try_send_named(from, &name, &node, msg) {
                        Ok(()) => Ok(()),
                        Err(RouteError::Full(m)) => Err(SendError::Full(m)),
                        Err(e) => Err(route_error(e, type_name)),
                    }
                }
            },
            dest @ (Dest::Global(_) | Dest::Group(_)) => {
                let mut sends = self.cluster_deliveries(&dest, msg, type_name)?;
                if sends.len() == 1 {
                    let (pid, msg) = sends.pop().expect("one");
                    return self.try_send_pid(from, pid, msg, type_name);
                }
                // To every member: one that is gone or full misses it, as a
                // send to a dead Pid is lost in Erlang.
                for (pid, msg) in sends {
                    let _ = self.try_send_pid(from, pid, msg, type_name);
                }
                Ok(())
            }
        }
    }

    fn try_send_pid(
        &self,
        from: Option<Pid>,
        to: Pid,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<(), SendError> {
        match self.inner.classify(to) {
            Target::Local => self.try_push_local(to, Envelope::new(from, msg), 0),
            Target::Stale => Err(SendError::NoProc(to)),
            Target::Remote => {
                let router = self.inner.router.get().ok_or(SendError::NoRouter(to))?;
                match router.try_send(from, to, msg) {
                    Ok(()) => Ok(()),
                    Err(RouteError::Full(m)) => Err(SendError::Full(m)),
                    Err(e) => Err(route_error(e, type_name)),
                }
            }
        }
    }

    /// For the distribution layer: delivers a message that arrived from another
    /// node to the local actor `to`, accepting it while the mailbox holds fewer
    /// than its capacity plus `overflow` messages. Messages from the network
    /// cannot be pushed back to their sender one by one, so a connection lets a
    /// busy actor's mailbox run over by a bounded amount instead of stalling the
    /// delivery to every other actor. Fails with [`SendError::Full`] beyond that.
    pub fn try_deliver(
        &self,
        from: Option<Pid>,
        to: Pid,
        msg: Message,
        overflow: usize,
    ) -> Result<(), SendError> {
        if !matches!(self.inner.classify(to), Target::Local) {
            return Err(SendError::NoProc(to));
        }
        // A full mailbox where it was redirected is `Full`: parked under
        // `to`, and redirected again when it is delivered.
        self.try_push_local(to, Envelope::new(from, msg), overflow)
    }

    /// Pushes to the local process `to` (classified local) while its
    /// mailbox holds fewer than its capacity plus `extra`; if it is gone, a
    /// placed activation's message goes on to its next one
    /// ([`NameService::moved`]).
    fn try_push_local(&self, to: Pid, env: Envelope, extra: usize) -> Result<(), SendError> {
        let env = match self.inner.processes.get(&to.id()) {
            Some(process) => match process.try_push_beyond(env, extra) {
                Ok(()) => return Ok(()),
                Err(PushError::Full(env)) => {
                    return Err(SendError::Full(UnsentMessage::new(env.msg)));
                }
                Err(PushError::Closed(env)) => env,
            },
            None => env,
        };
        let Some(next) = self.inner.moved(to) else {
            return Err(SendError::NoProc(to));
        };
        match next.try_push_beyond(env, extra) {
            Ok(()) => Ok(()),
            Err(PushError::Full(env)) => Err(SendError::Full(UnsentMessage::new(env.msg))),
            Err(PushError::Closed(_)) => Err(SendError::NoProc(to)),
        }
    }

    /// Sends to the actor registered as `name` on the node named `node`.
    async fn send_to_node_from(
        &self,
        from: Option<Pid>,
        name: &str,
        node: &str,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<(), SendError> {
        if self.inner.node_name.as_deref() == Some(node) {
            let pid = self
                .whereis(name)
                .ok_or_else(|| SendError::NameNotRegistered(name.to_string()))?;
            return self.send_message(from, pid, msg, type_name).await;
        }
        let router = self
            .inner
            .router
            .get()
            .ok_or_else(|| SendError::NoRouterForNode(node.to_string()))?;
        router.prepare(node).await;
        let mut msg = msg;
        loop {
            match router.try_send_named(from, name, node, msg) {
                Ok(()) => return Ok(()),
                Err(RouteError::Full(m)) => {
                    msg = m.into_inner();
                    router.ready(None, Some(node)).await;
                }
                Err(e) => return Err(route_error(e, type_name)),
            }
        }
    }

    /// Sends an exit signal with `reason` to `pid`, from no particular actor (the
    /// signal's sender is this node's system Pid `<node.0.creation>`).
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> Result<(), LinkError> {
        self.exit_from(self.inner.system_pid(), pid, reason)
    }

    /// Sends an exit signal to `pid` as if `from` sent it.
    pub fn exit_from(&self, from: Pid, pid: Pid, reason: ExitReason) -> Result<(), LinkError> {
        self.inner.send_signal(
            pid,
            Signal::Exit {
                from,
                reason,
                link: false,
            },
        )
    }

    /// True if `pid` is a live local actor. For a remote Pid: true if its node is
    /// connected (whether that actor lives is only known to its node).
    pub fn is_alive(&self, pid: Pid) -> bool {
        match self.inner.classify(pid) {
            Target::Local => self
                .inner
                .local_process(pid)
                .is_some_and(|p| !p.is_closed()),
            Target::Stale => false,
            Target::Remote => self
                .inner
                .router
                .get()
                .is_some_and(|r| r.is_connected(pid.node())),
        }
    }

    /// Registers the local actor `pid` under `name`. Names are removed when the actor exits.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        let process = self
            .inner
            .local_process(pid)
            .ok_or(RegisterError::NoProc(pid))?;
        self.inner.register_process(&process, name)
    }

    /// Removes a name. Returns the Pid it named, if any.
    pub fn unregister(&self, name: &str) -> Option<Pid> {
        let (_, pid) = self.inner.names.remove(name)?;
        if let Some(process) = self.inner.local_process(pid) {
            let mut st = process.lock();
            if st.name.as_deref() == Some(name) {
                st.name = None;
            }
        }
        Some(pid)
    }

    /// The Pid registered under `name` on this node. A name the node's
    /// name service starts on demand (a placed identity's, on its owner) is
    /// started by the lookup.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.whereis(name)
    }

    /// Every registered name with its Pid.
    pub fn registered(&self) -> Vec<(String, Pid)> {
        self.inner
            .names
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// Number of user messages waiting in the mailbox of local actor `pid`.
    pub fn mailbox_len(&self, pid: Pid) -> Option<usize> {
        self.inner.local_process(pid).map(|p| p.queue_len())
    }

    /// Number of links and monitors held by or on the local actor `pid`
    /// (links, monitors on it, monitors it holds). For tests and diagnostics.
    pub fn relation_counts(&self, pid: Pid) -> Option<(usize, usize, usize)> {
        let process = self.inner.local_process(pid)?;
        let mut st = process.lock();
        Some(match st.relations_if_any() {
            Some(r) => (r.links.len(), r.monitored_by.len(), r.monitoring.len()),
            None => (0, 0, 0),
        })
    }

    /// Hands a signal that arrived from another node (or from the router itself,
    /// e.g. `noconnection`) to its target. A signal for an actor that does not exist
    /// is answered as Erlang does: a link gets an exit with `noproc`, a monitor a
    /// down with `noproc`; anything else is dropped.
    pub fn deliver_signal(&self, to: Pid, signal: Signal) {
        if let Err(e) = self.inner.send_signal(to, signal) {
            tracing::debug!(%to, error = %e, "signal could not be delivered");
        }
    }

    /// For the distribution layer: answers a signal that cannot reach `target`
    /// (its node is unreachable, say) as Erlang does, with `reason`: a link gets
    /// an exit signal, a monitor a down; other signals need no answer.
    pub fn refuse_signal(&self, target: Pid, signal: Signal, reason: ExitReason) {
        self.inner.refuse_signal(target, signal, reason)
    }

    /// Sends `msg` to `to` after `delay`. Timers run on the tokio timer wheel (no
    /// thread per timer). Cancel with [`TimerRef::cancel`].
    pub fn send_after(
        &self,
        to: impl Into<Dest>,
        msg: impl Any + Send,
        delay: Duration,
    ) -> TimerRef {
        self.send_after_from(None, to.into(), msg, delay)
    }

    pub(crate) fn send_after_from(
        &self,
        from: Option<Pid>,
        to: Dest,
        msg: impl Any + Send,
        delay: Duration,
    ) -> TimerRef {
        let (msg, type_name) = into_message(msg);
        let weak = Arc::downgrade(&self.inner);
        TimerRef::start(&self.inner.runtime, delay, async move {
            if let Some(inner) = weak.upgrade() {
                let system = ActorSystem::internal(inner);
                if let Err(e) = system.send_dest(from, &to, msg, type_name).await {
                    tracing::debug!(%to, error = %e, "timer message not delivered");
                }
            }
        })
    }

    /// Calls the gen_server `server` with `request` and waits up to
    /// [`DEFAULT_CALL_TIMEOUT`](crate::gen_server::DEFAULT_CALL_TIMEOUT) (5 s)
    /// for its reply, of the request's reply type. Built like Erlang's
    /// gen_server:call: a monitor on the server, a request message carrying a
    /// reply address, and a timeout; so it works the same when `server` is on
    /// another node or named (`{name, node}` is resolved by that node, in the
    /// same round trip). The server sees the call's reply address as its
    /// caller; call from an actor ([`ActorContext::call`](crate::ActorContext::call))
    /// for the server to see the actor.
    pub async fn call<S, Q>(&self, server: &ServerRef<S>, request: Q) -> Result<Q::Reply, CallError>
    where
        S: HandleCall<Q>,
        Q: Request,
    {
        self.call_from(None, server, request, DEFAULT_CALL_TIMEOUT)
            .await
    }

    /// [`call`](Self::call) with a timeout of its own.
    pub async fn call_timeout<S, Q>(
        &self,
        server: &ServerRef<S>,
        request: Q,
        timeout: Duration,
    ) -> Result<Q::Reply, CallError>
    where
        S: HandleCall<Q>,
        Q: Request,
    {
        self.call_from(None, server, request, timeout).await
    }

    /// A typed call whose server sees `caller` as the calling actor.
    pub(crate) async fn call_from<S, Q>(
        &self,
        caller: Option<Pid>,
        server: &ServerRef<S>,
        request: Q,
        timeout: Duration,
    ) -> Result<Q::Reply, CallError>
    where
        S: HandleCall<Q>,
        Q: Request,
    {
        if !<S::Calls as CallSet<S>>::accepts(TypeId::of::<Q>()) {
            return Err(CallError::NotInCalls {
                server: std::any::type_name::<S>(),
                request: std::any::type_name::<Q>(),
            });
        }
        let target = self.call_target(server.dest());
        let started = std::time::Instant::now();
        let reply = self
            .call_dest(caller, server.dest(), request, timeout)
            .await
            .and_then(typed_reply);
        crate::metrics::call_done(target, started.elapsed(), reply.as_ref().err());
        reply
    }

    /// Where a call to `dest` goes, for its metrics.
    fn call_target(&self, dest: &Dest) -> &'static str {
        match dest {
            Dest::Pid(p) if p.node() == self.inner.node => "local",
            Dest::Pid(_) => "remote",
            Dest::Name(_) => "local",
            Dest::Remote { node, .. } if self.inner.node_name.as_deref() == Some(node.as_str()) => {
                "local"
            }
            Dest::Remote { .. } => "remote",
            Dest::Placed { .. } => "placed",
            Dest::Global(_) => "global",
            Dest::Group(_) => "group",
        }
    }

    /// An untyped call: `request` (a value, or a [`Message`] as it is) to the
    /// server at `server` (any [`Dest`]), and the reply as
    /// a [`Message`], for code that forwards requests it does not know the type
    /// of. Prefer [`call`](Self::call).
    pub async fn call_raw(
        &self,
        server: impl Into<Dest>,
        request: impl Any + Send,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        self.call_dest(None, &server.into(), request, timeout).await
    }

    /// A call to `dest` on behalf of `caller`.
    pub(crate) async fn call_dest<Q: Any + Send>(
        &self,
        caller: Option<Pid>,
        dest: &Dest,
        request: Q,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        let (name, node) = match dest {
            Dest::Pid(pid) => return self.call_pid(caller, *pid, request, timeout).await,
            Dest::Name(name) => {
                let pid = self.whereis(name).ok_or(CallError::NoProc)?;
                return self.call_pid(caller, pid, request, timeout).await;
            }
            Dest::Remote { name, node } => (name, node),
            Dest::Placed { kind, id } => {
                let to = self.route_placed(kind, id).map_err(CallError::Send)?;
                return Box::pin(self.call_dest(caller, &to.into(), request, timeout)).await;
            }
            Dest::Global(_) | Dest::Group(_) => {
                // Nothing registered is `noproc`, as for a local name (and
                // Erlang's call to `{global, Name}`).
                let pid = self.cluster_target(dest).map_err(|e| match e {
                    SendError::GlobalNotRegistered(_) | SendError::EmptyGroup { .. } => {
                        CallError::NoProc
                    }
                    other => CallError::Send(other),
                })?;
                return self.call_pid(caller, pid, request, timeout).await;
            }
        };
        if self.inner.node_name.as_deref() == Some(node.as_str()) {
            let pid = self.whereis(name).ok_or(CallError::NoProc)?;
            return self.call_pid(caller, pid, request, timeout).await;
        }
        let started = tokio::time::Instant::now();
        if let Some(router) = self.inner.router.get() {
            match tokio::time::timeout(timeout, router.connect(node)).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(Err(cause)) => return Err(CallError::Unreachable(cause)),
                Ok(Ok(())) => {}
            }
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        // In one round trip: a monitor by name and the request travel
        // together, the remote node resolves the name for both, and the reply
        // (or a down: noproc if nothing is registered under the name,
        // noconnection if the node is lost) comes back.
        let slot = ReplySlot::new(self.inner.clone());
        let monitor = self
            .inner
            .monitor_named(&slot.process, name, node)
            .map_err(CallError::from_link)?;
        let call = slot.request(caller, monitor, request);
        let sent = self
            .send_to_node_from(Some(slot.process.pid), name, node, call, None)
            .await;
        slot.sent_then_finish(sent, monitor, timeout).await
    }

    async fn call_pid<Q: Any + Send>(
        &self,
        caller: Option<Pid>,
        server: Pid,
        request: Q,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        if let (Target::Remote, Some(router)) =
            (self.inner.classify(server), self.inner.router.get())
        {
            if !router.is_known(server.node()) {
                // Learn how to reach the server's node before monitoring it, or
                // the monitor would answer noconnection at once.
                router.resolve(server.node()).await;
            }
        }
        let slot = ReplySlot::new(self.inner.clone());
        let monitor = self
            .inner
            .monitor(&slot.process, server)
            .map_err(CallError::from_link)?;
        let call = slot.request(caller, monitor, request);
        let sent = self.send_from(Some(slot.process.pid), server, call).await;
        slot.sent_then_finish(sent, monitor, timeout).await
    }

    /// Sends a cast (an asynchronous request without reply) to the gen_server
    /// `server`.
    pub async fn cast<S, C>(&self, server: &ServerRef<S>, msg: C) -> Result<(), SendError>
    where
        S: HandleCast<C>,
        C: Send + 'static,
    {
        self.cast_from(None, server, msg).await
    }

    pub(crate) async fn cast_from<S, C>(
        &self,
        from: Option<Pid>,
        server: &ServerRef<S>,
        msg: C,
    ) -> Result<(), SendError>
    where
        S: HandleCast<C>,
        C: Send + 'static,
    {
        let cast = crate::gen_server::cast_request(msg);
        self.send_dest(from, server.dest(), cast, None).await
    }

    /// Sends `msg` to `dest` (a Pid, a local name, or `{name, node}`).
    pub(crate) async fn send_dest(
        &self,
        from: Option<Pid>,
        dest: &Dest,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<(), SendError> {
        match dest {
            Dest::Pid(pid) => self.send_message(from, *pid, msg, type_name).await,
            Dest::Name(name) => {
                let pid = self
                    .whereis(name)
                    .ok_or_else(|| SendError::NameNotRegistered(name.clone()))?;
                self.send_message(from, pid, msg, type_name).await
            }
            Dest::Remote { name, node } => {
                self.send_to_node_from(from, name, node, msg, type_name)
                    .await
            }
            Dest::Placed { kind, id } => {
                let route = self.route_placed_send(kind, id)?;
                self.send_placed(from, route, msg, type_name).await
            }
            Dest::Global(_) | Dest::Group(_) => {
                let mut sends = self.cluster_deliveries(dest, msg, type_name)?;
                if sends.len() == 1 {
                    let (pid, msg) = sends.pop().expect("one");
                    return self.send_message(from, pid, msg, type_name).await;
                }
                // To every member: one that is gone misses it, as a send to a
                // dead Pid is lost in Erlang.
                for (pid, msg) in sends {
                    let _ = self.send_message(from, pid, msg, type_name).await;
                }
                Ok(())
            }
        }
    }

    /// Sends to where a placed identity's route leads.
    async fn send_placed(
        &self,
        from: Option<Pid>,
        route: PlacedRoute,
        msg: Message,
        type_name: Option<&'static str>,
    ) -> Result<(), SendError> {
        match route {
            PlacedRoute::Activation(pid) => self.send_message(from, pid, msg, type_name).await,
            PlacedRoute::Here(name) => {
                let pid = self
                    .whereis(&name)
                    .ok_or_else(|| SendError::NameNotRegistered(name.to_string()))?;
                self.send_message(from, pid, msg, type_name).await
            }
            PlacedRoute::There { name, node } => {
                self.send_to_node_from(from, &name, &node, msg, type_name)
                    .await
            }
        }
    }

    /// Stops every actor and waits until all are gone: each gets a `shutdown` exit
    /// signal; actors still running after [`DEFAULT_SHUTDOWN_GRACE`] are killed.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(DEFAULT_SHUTDOWN_GRACE).await
    }

    /// [`shutdown`](Self::shutdown) with a chosen grace period before kills.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        self.inner.begin_shutdown(ExitReason::Shutdown);
        if tokio::time::timeout(grace, self.inner.wait_all_stopped())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.actor_count(),
                "actors did not stop within the shutdown grace period; killing them"
            );
            self.inner.begin_shutdown(ExitReason::Kill);
            self.inner.wait_all_stopped().await;
        }
    }

    /// Waits until no actor is running.
    pub async fn wait_all_stopped(&self) {
        self.inner.wait_all_stopped().await
    }
}

impl Default for ActorSystem {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds the message's type name, when known, to a router's refusal.
fn route_error(e: RouteError, type_name: Option<&'static str>) -> SendError {
    match (e, type_name) {
        (RouteError::NotSerializable { detail }, Some(t)) => {
            SendError::Route(RouteError::NotSerializable {
                detail: format!("{t}: {detail}"),
            })
        }
        (e, _) => SendError::Route(e),
    }
}

/// Sends `env` to a local process, waiting while its mailbox is full;
/// hands it back if the process is gone.
async fn push_waiting(process: &Process, env: Envelope) -> Result<(), Envelope> {
    let env = match process.try_push(env) {
        Ok(()) => return Ok(()),
        Err(PushError::Closed(env)) => return Err(env),
        Err(PushError::Full(env)) => env,
    };
    let mut pending = Some(env);
    std::future::poll_fn(|cx| {
        let env = pending.take().expect("polled after completion");
        match process.poll_push(env, cx) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(PushError::Closed(env)) => Poll::Ready(Err(env)),
            Err(PushError::Full(env)) => {
                pending = Some(env);
                Poll::Pending
            }
        }
    })
    .await
}

/// Process ids are chosen by this node, never by peers, so a fast unkeyed hash is safe.
type IdHash = crate::fxhash::FxBuildHasher;

pub(crate) enum Target {
    Local,
    Stale,
    Remote,
}

impl Inner {
    pub(crate) fn classify(&self, pid: Pid) -> Target {
        if pid.node() != self.node {
            Target::Remote
        } else if pid.creation() != self.creation {
            Target::Stale
        } else {
            Target::Local
        }
    }

    /// The Pid used as the sender of signals from the system itself.
    pub(crate) fn system_pid(&self) -> Pid {
        Pid::new(self.node, 0, self.creation)
    }

    /// Like `local_process`, without cloning the Arc (holds a table shard's read lock).
    pub(crate) fn local_process(&self, pid: Pid) -> Option<Arc<Process>> {
        match self.classify(pid) {
            Target::Local => self.processes.get(&pid.id()).map(|p| p.clone()),
            _ => None,
        }
    }

    pub(crate) fn new_ref(&self) -> MonitorRef {
        MonitorRef(self.next_ref.fetch_add(1, Ordering::Relaxed))
    }

    fn register_process(&self, process: &Process, name: &str) -> Result<(), RegisterError> {
        let mut st = process.lock();
        if st.is_closed() {
            return Err(RegisterError::NoProc(process.pid));
        }
        if let Some(existing) = &st.name {
            return Err(RegisterError::AlreadyNamed {
                pid: process.pid,
                name: existing.to_string(),
            });
        }
        match self.names.entry(name.to_string()) {
            dashmap::Entry::Occupied(_) => Err(RegisterError::NameTaken(name.to_string())),
            dashmap::Entry::Vacant(v) => {
                v.insert(process.pid);
                st.name = Some(name.into());
                Ok(())
            }
        }
    }

    /// Delivers a signal to a local or remote process; answers for dead targets.
    pub(crate) fn send_signal(&self, to: Pid, sig: Signal) -> Result<(), LinkError> {
        match self.classify(to) {
            Target::Remote => {
                let router = self.router.get().ok_or(LinkError::NoRouter(to))?;
                router.signal(to, sig).map_err(LinkError::Route)
            }
            Target::Stale => {
                self.refuse_signal(to, sig, ExitReason::NoProc);
                Ok(())
            }
            Target::Local => {
                let rejected = match self.processes.get(&to.id()) {
                    Some(p) => p.push_signal(sig).err(),
                    None => Some(sig),
                };
                if let Some(sig) = rejected {
                    self.refuse_signal(to, sig, ExitReason::NoProc);
                }
                Ok(())
            }
        }
    }

    /// Answers a signal that cannot reach `target`, with `reason`: a link gets an
    /// exit, a monitor a down; other signals need no answer.
    pub(crate) fn refuse_signal(&self, target: Pid, sig: Signal, reason: ExitReason) {
        let answer = match sig {
            Signal::Link { from } => Some((
                from,
                Signal::Exit {
                    from: target,
                    reason,
                    link: true,
                },
            )),
            Signal::Monitor { from, monitor } => Some((
                from,
                Signal::Down {
                    monitor,
                    pid: target,
                    reason,
                },
            )),
            _ => None,
        };
        if let Some((to, sig)) = answer {
            if let Err(e) = self.send_signal(to, sig) {
                tracing::debug!(%to, error = %e, "answer to an undeliverable signal not delivered");
            }
        }
    }

    pub(crate) fn link(&self, me: &Process, pid: Pid) -> Result<(), LinkError> {
        if pid == me.pid {
            return Ok(());
        }
        if matches!(self.classify(pid), Target::Remote) && self.router.get().is_none() {
            return Err(LinkError::NoRouter(pid));
        }
        let newly = me.lock().relations().links.insert(pid);
        if newly {
            self.send_signal(pid, Signal::Link { from: me.pid })?;
        }
        Ok(())
    }

    pub(crate) fn unlink(&self, me: &Process, pid: Pid) -> Result<(), LinkError> {
        let was = me
            .lock()
            .relations_if_any()
            .is_some_and(|r| r.links.remove(&pid));
        if was {
            self.send_signal(pid, Signal::Unlink { from: me.pid })?;
        }
        Ok(())
    }

    pub(crate) fn monitor(&self, me: &Process, pid: Pid) -> Result<MonitorRef, LinkError> {
        if matches!(self.classify(pid), Target::Remote) && self.router.get().is_none() {
            return Err(LinkError::NoRouter(pid));
        }
        let monitor = self.new_ref();
        me.lock().relations().monitoring.insert(monitor, pid);
        self.send_signal(
            pid,
            Signal::Monitor {
                from: me.pid,
                monitor,
            },
        )?;
        Ok(monitor)
    }

    /// See [`ActorContext::monitor`](crate::ActorContext::monitor) with `(name, node)`.
    /// Monitors whatever actor is registered here as `name`; nothing
    /// registered gives a down with `noproc` at once (Erlang's
    /// `monitor(process, Name)`).
    /// The Pid registered as `name`, or the one the name service starts
    /// for it.
    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        if let Some(p) = self.names.get(name) {
            return Some(*p);
        }
        self.name_service.get()?.activate(name)
    }

    /// A message came for the local `to`, which is gone: the process it
    /// goes to instead, if the name service names one (the next activation
    /// of a placed identity, see [`NameService::moved`]).
    pub(crate) fn moved(&self, to: Pid) -> Option<Arc<Process>> {
        let name = self.name_service.get()?.moved(to)?;
        let next = self.whereis(&name)?;
        if next == to {
            return None;
        }
        self.local_process(next)
    }

    pub(crate) fn monitor_local_name(
        &self,
        me: &Process,
        name: &str,
    ) -> Result<MonitorRef, LinkError> {
        match self.whereis(name) {
            Some(pid) => self.monitor(me, pid),
            None => Ok(self.monitor_nobody(me)),
        }
    }

    /// A monitor on an address that names no process: a down with `noproc`
    /// at once.
    pub(crate) fn monitor_nobody(&self, me: &Process) -> MonitorRef {
        let monitor = self.new_ref();
        let nobody = Pid::new(self.node, 0, 0);
        me.lock().relations().monitoring.insert(monitor, nobody);
        self.refuse_signal(
            nobody,
            Signal::Monitor {
                from: me.pid,
                monitor,
            },
            ExitReason::NoProc,
        );
        monitor
    }

    pub(crate) fn monitor_named(
        &self,
        me: &Process,
        name: &str,
        node: &str,
    ) -> Result<MonitorRef, LinkError> {
        if self.node_name.as_deref() == Some(node) {
            return self.monitor_local_name(me, name);
        }
        let placeholder = Pid::new(crate::node_id(node), 0, 0);
        let Some(router) = self.router.get() else {
            return Err(LinkError::NoRouter(placeholder));
        };
        let monitor = self.new_ref();
        me.lock()
            .relations()
            .monitoring
            .insert(monitor, placeholder);
        if let Err(e) = router.monitor_named(me.pid, monitor, name, node) {
            if let Some(r) = me.lock().relations_if_any() {
                r.monitoring.remove(&monitor);
            }
            return Err(LinkError::Route(e));
        }
        Ok(monitor)
    }

    pub(crate) fn demonitor(&self, me: &Process, monitor: MonitorRef) {
        let target = me
            .lock()
            .relations_if_any()
            .and_then(|r| r.monitoring.remove(&monitor));
        if let Some(pid) = target {
            let _ = self.send_signal(
                pid,
                Signal::Demonitor {
                    from: me.pid,
                    monitor,
                },
            );
        }
    }

    /// The exit path of a process: close it, forget it, answer what was queued,
    /// and notify links and monitors.
    pub(crate) fn finish(
        &self,
        process: &Process,
        reason: ExitReason,
        mut pending: VecDeque<Signal>,
        actor: bool,
    ) {
        let me = process.pid;
        let remains = process.close();
        pending.extend(remains.signals);
        self.processes.remove(&me.id());
        if let Some(name) = remains.name {
            self.names.remove_if(&*name, |_, p| *p == me);
        }
        let mut rel = remains.relations.map(|b| *b).unwrap_or_default();
        let mut answers = Vec::new();
        for sig in pending {
            match sig {
                Signal::Unlink { from } => {
                    rel.links.remove(&from);
                }
                Signal::Demonitor { from, monitor } => {
                    rel.monitored_by.remove(&(from, monitor));
                }
                Signal::Link { from } => {
                    if !rel.links.contains(&from) {
                        answers.push((
                            from,
                            Signal::Exit {
                                from: me,
                                reason: ExitReason::NoProc,
                                link: true,
                            },
                        ));
                    }
                }
                Signal::Monitor { from, monitor } => answers.push((
                    from,
                    Signal::Down {
                        monitor,
                        pid: me,
                        reason: ExitReason::NoProc,
                    },
                )),
                Signal::Exit { .. } | Signal::Down { .. } => {}
            }
        }
        for link in rel.links {
            answers.push((
                link,
                Signal::Exit {
                    from: me,
                    reason: reason.clone(),
                    link: true,
                },
            ));
        }
        for (owner, monitor) in rel.monitored_by {
            answers.push((
                owner,
                Signal::Down {
                    monitor,
                    pid: me,
                    reason: reason.clone(),
                },
            ));
        }
        for (monitor, target) in rel.monitoring {
            answers.push((target, Signal::Demonitor { from: me, monitor }));
        }
        for (to, sig) in answers {
            if let Err(e) = self.send_signal(to, sig) {
                tracing::debug!(pid = %me, %to, error = %e, "exit notification not delivered");
            }
        }
        if actor && self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_stopped.notify_waiters();
        }
    }

    /// Sends `reason` as an exit signal to every running actor.
    pub(crate) fn begin_shutdown(&self, reason: ExitReason) {
        self.shutting_down.store(true, Ordering::Release);
        let from = self.system_pid();
        let targets: Vec<Arc<Process>> = self.processes.iter().map(|e| e.value().clone()).collect();
        for p in targets {
            let _ = p.push_signal(Signal::Exit {
                from,
                reason: reason.clone(),
                link: false,
            });
        }
    }

    async fn wait_all_stopped(&self) {
        loop {
            let notified = self.all_stopped.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A temporary process that receives the reply of one call. It has a Pid (so a
/// reply can be addressed to it from any node) but no task; the caller waits on
/// its mailbox directly. Dropping it removes the monitor and the process, so a
/// late reply finds no process and is discarded.
struct ReplySlot {
    inner: Arc<Inner>,
    process: Arc<Process>,
}

impl ReplySlot {
    /// The call request carrying `request`, answered to this slot under
    /// `monitor`'s tag; the server sees `caller` (or this slot) as its caller.
    fn request<Q: Any + Send>(
        &self,
        caller: Option<Pid>,
        monitor: MonitorRef,
        request: Q,
    ) -> Message {
        let pid = self.process.pid;
        crate::gen_server::call_request(caller.unwrap_or(pid), pid, monitor.0, request)
    }

    /// After the request was sent (`sent`): waits for the reply or the down.
    /// A server that does not exist is not an error here: the monitor's down
    /// (`noproc`) answers the call.
    async fn sent_then_finish(
        &self,
        sent: Result<(), SendError>,
        monitor: MonitorRef,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        match sent {
            Ok(()) | Err(SendError::NoProc(_)) => self.finish_call(monitor, timeout).await,
            Err(e) => Err(CallError::Send(e)),
        }
    }

    fn new(inner: Arc<Inner>) -> Self {
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::new(inner.node, id, inner.creation);
        let process = Arc::new(Process::new(pid, 16, true));
        inner.processes.insert(id, process.clone());
        ReplySlot { inner, process }
    }

    /// Waits up to `timeout` for the reply of the call under `monitor`; a
    /// [`ReplyLost`](crate::gen_server::ReplyLost) in its place is the error it names.
    async fn finish_call(
        &self,
        monitor: MonitorRef,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        match tokio::time::timeout(timeout, self.wait_reply(monitor)).await {
            Ok(Ok(reply)) => match reply.downcast::<crate::gen_server::ReplyLost>() {
                Ok(lost) => Err(CallError::ReplyLost(lost.reason)),
                Err(reply) if reply.is::<crate::gen_server::BadRequest>() => {
                    Err(CallError::BadRequest)
                }
                Err(reply) => Ok(reply),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Timeout),
        }
    }

    async fn wait_reply(&self, monitor: MonitorRef) -> Result<Message, CallError> {
        let mut local = VecDeque::new();
        let mut signals = VecDeque::new();
        let process = &self.process;
        let tag = monitor.0;
        std::future::poll_fn(|cx| {
            loop {
                if let Some(reply) = take_reply(&mut local, tag) {
                    return Poll::Ready(Ok(reply));
                }
                match process.poll_ready(cx, &mut local, usize::MAX) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(crate::process::Ready::Messages) => continue,
                    Poll::Ready(crate::process::Ready::Signals) => {
                        process.take_signals(&mut signals);
                        while let Some(sig) = signals.pop_front() {
                            if let Signal::Down {
                                monitor: m, reason, ..
                            } = sig
                            {
                                if m == monitor {
                                    // A reply sent before the server exited is already queued.
                                    process.take_messages(&mut local);
                                    if let Some(reply) = take_reply(&mut local, tag) {
                                        return Poll::Ready(Ok(reply));
                                    }
                                    if let Some(r) = process.lock().relations_if_any() {
                                        r.monitoring.remove(&monitor);
                                    }
                                    return Poll::Ready(Err(CallError::from_down(reason)));
                                }
                            }
                        }
                    }
                }
            }
        })
        .await
    }
}

fn take_reply(local: &mut VecDeque<Envelope>, tag: u64) -> Option<Message> {
    while let Some(env) = local.pop_front() {
        match env.msg.downcast::<crate::gen_server::CallReply>() {
            Ok(reply) if reply.tag == tag => return Some(reply.reply),
            _ => continue,
        }
    }
    None
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        self.inner
            .finish(&self.process, ExitReason::Normal, VecDeque::new(), false);
    }
}

/// A call's reply as the type the caller asked for.
fn typed_reply<R: Any + Send>(reply: Message) -> Result<R, CallError> {
    match reply.downcast::<R>() {
        Ok(r) => Ok(*r),
        Err(_) => Err(CallError::UnexpectedReply {
            expected: std::any::type_name::<R>(),
        }),
    }
}

impl SpawnOptions {
    pub(crate) fn link_target(&self) -> Option<Pid> {
        self.link
    }
}

impl ActorSystem {
    /// Stops `pid` the way a supervisor does: a `shutdown` exit signal, then, if it
    /// is still alive after `timeout`, a `kill`. Returns once it is gone (for a
    /// remote Pid: once its node reported it down or was lost).
    pub async fn stop_and_wait(&self, pid: Pid, timeout: Duration) {
        let slot = ReplySlot::new(self.inner.clone());
        let Ok(monitor) = self.inner.monitor(&slot.process, pid) else {
            return;
        };
        let _ = self.exit_from(slot.process.pid, pid, ExitReason::Shutdown);
        if tokio::time::timeout(timeout, slot.wait_reply(monitor))
            .await
            .is_err()
        {
            let _ = self.exit_from(slot.process.pid, pid, ExitReason::Kill);
            // A kill always ends a local actor; a remote one ends or its node is lost.
            let _ = slot.wait_reply(monitor).await;
        }
    }
}
