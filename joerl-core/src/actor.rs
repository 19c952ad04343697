//! The [`Actor`] trait, the [`ActorContext`] handed to its callbacks, and the
//! loop that runs one actor.
//!
//! Each actor is one tokio task. The loop takes user messages from the mailbox in
//! small batches (one lock per batch, not per message) and checks the signal
//! queue between messages and whenever a handler is suspended at an `.await`.
//! So an exit signal, a kill or a down notification is seen promptly even while a
//! handler waits on something that never comes, and a panicking handler becomes
//! an exit with [`ExitReason::Panic`] instead of taking the runtime down.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::gen_server::{DEFAULT_CALL_TIMEOUT, HandleCall, HandleCast, Request, ServerRef};
use crate::message::{Envelope, NO_SENDER};
use crate::process::{Process, Ready};
use crate::system::ActorSystem;
use crate::timer::TimerRef;
use crate::{
    CallError, Dest, DownMessage, ExitMessage, ExitReason, LinkError, Message, MonitorRef,
    NodeError, Pid, SendError, Signal, SpawnOptions,
};

/// How many user messages the loop moves out of the mailbox per lock.
const BATCH: usize = 1024;

/// An actor: state plus callbacks, driven by its own mailbox.
///
/// Only [`handle_message`](Actor::handle_message) is required. The callbacks are
/// `async`; implement them with `async fn`.
///
/// ```
/// use joerl_core::{Actor, ActorContext, Message};
///
/// struct Counter(u64);
///
/// impl Actor for Counter {
///     async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
///         if let Ok(n) = msg.downcast::<u64>() {
///             self.0 += *n;
///         }
///     }
/// }
/// ```
///
/// Trapped exits arrive in `handle_message` as [`ExitMessage`], monitor
/// notifications as [`DownMessage`].
pub trait Actor: Send + 'static {
    /// Runs once, before the first message. A panic here is an exit with a panic reason.
    fn started(&mut self, ctx: &mut ActorContext) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Handles one message. `ctx.sender()` tells who sent it.
    fn handle_message(
        &mut self,
        msg: Message,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = ()> + Send;

    /// Runs once when the actor stops, with the reason, before its links and
    /// monitors are notified. Only an untrappable kill interrupts it.
    fn stopped(
        &mut self,
        reason: &ExitReason,
        ctx: &mut ActorContext,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// What an actor's callbacks use to act on the world: its own Pid, the sender of
/// the current message, sending, spawning, links, monitors, timers.
pub struct ActorContext {
    pub(crate) process: Arc<Process>,
    pub(crate) system: ActorSystem,
    pub(crate) sender: Pid,
    pub(crate) stop: Option<ExitReason>,
    /// Told when `started` finished (for [`ActorSystem::start`]).
    pub(crate) started_tx: Option<tokio::sync::oneshot::Sender<Result<(), ExitReason>>>,
}

impl ActorContext {
    /// This actor's Pid.
    pub fn pid(&self) -> Pid {
        self.process.pid
    }

    /// The sender of the message being handled, if it was sent by an actor.
    /// For messages from another node, this is the remote sender's Pid.
    pub fn sender(&self) -> Option<Pid> {
        if self.sender == NO_SENDER {
            None
        } else {
            Some(self.sender)
        }
    }

    /// The system this actor runs in.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// Sends `msg` to `to` (a Pid, a name registered on this node, or
    /// `(name, node)`), waiting while its mailbox is full. Pass the value
    /// itself; a [`Message`] is passed on as it is. The receiver sees this
    /// actor as the sender.
    pub async fn send(&self, to: impl Into<Dest>, msg: impl Any + Send) -> Result<(), SendError> {
        self.system.send_from(Some(self.pid()), to, msg).await
    }

    /// Sends without waiting; a full mailbox gives [`SendError::Full`].
    pub fn try_send(&self, to: impl Into<Dest>, msg: impl Any + Send) -> Result<(), SendError> {
        self.system.try_send_from(Some(self.pid()), to, msg)
    }

    /// This node's full name (`name@host`), or `None` on a system that is
    /// not a distributed node (Erlang's `node()`, which says `nonode@nohost`).
    pub fn node(&self) -> Option<&str> {
        self.system.node_name()
    }

    /// Names of the nodes connected now, sorted (Erlang's `nodes()`); empty
    /// on a system that is not a distributed node.
    pub fn nodes(&self) -> Vec<String> {
        self.system
            .inner
            .router
            .get()
            .map(|r| r.nodes())
            .unwrap_or_default()
    }

    /// Erlang's `net_kernel:monitor_nodes(true)` (`on`) or `(false)`: this
    /// actor receives a `NodeUp` message for every connection that comes up
    /// and a `NodeDown` for every one that goes down (joerl-dist's types), in
    /// order, exactly one down per up, even into a full mailbox.
    pub fn monitor_nodes(&self, on: bool) -> Result<(), NodeError> {
        let router = self.system.inner.router.get().ok_or(NodeError::NotANode)?;
        Ok(router.monitor_nodes(self.pid(), on)?)
    }

    /// Erlang's `monitor_node(Node, true)`: this actor receives one
    /// `NodeDown` message when `node` goes down or cannot be reached.
    /// Connects if needed.
    pub fn monitor_node(&self, node: &str) -> Result<(), NodeError> {
        let router = self.system.inner.router.get().ok_or(NodeError::NotANode)?;
        Ok(router.monitor_node(self.pid(), node)?)
    }

    /// The Pid registered as `name` on the node named `node` (on this node's
    /// own name, the local registry), asked of that node in one round trip,
    /// waiting at most 5 s.
    pub async fn whereis(&self, name: &str, node: &str) -> Result<Option<Pid>, CallError> {
        if self.node() == Some(node) {
            return Ok(self.system.whereis(name));
        }
        match self.system.inner.router.get() {
            Some(router) => router.whereis(name, node, DEFAULT_CALL_TIMEOUT).await,
            None => Err(CallError::Send(SendError::NoRouterForNode(
                node.to_string(),
            ))),
        }
    }

    /// Spawns an actor that is not linked to this one.
    pub fn spawn<A: Actor>(&self, actor: A) -> Pid {
        self.system.spawn(actor)
    }

    /// Spawns an actor linked to this one: if either exits abnormally, the other
    /// gets the exit signal.
    pub fn spawn_link<A: Actor>(&self, actor: A) -> Pid {
        // An actor's process is only closed after its last callback returned, and
        // no name is requested, so this spawn cannot fail.
        self.system
            .spawn_with(actor, SpawnOptions::new().link_to(self.pid()))
            .expect("spawn_link from a running actor")
    }

    /// Links this actor to `pid` (local or remote). If `pid` does not exist, this
    /// actor gets an exit signal with reason `noproc`.
    pub fn link(&self, pid: Pid) -> Result<(), LinkError> {
        self.system.inner.link(&self.process, pid)
    }

    /// Removes the link to `pid`, if any.
    pub fn unlink(&self, pid: Pid) -> Result<(), LinkError> {
        self.system.inner.unlink(&self.process, pid)
    }

    /// Monitors `target` (a Pid, a name registered on this node, `(name,
    /// node)`, a global name or a group's member): when it exits, this actor receives a [`DownMessage`] with the
    /// returned reference. An unknown or dead Pid, or a name nothing is
    /// registered under, gives a down with `noproc` at once. A name is
    /// resolved once, when the monitor is set (by the named node for `(name,
    /// node)`, in the same step): the monitor then follows that actor, as
    /// Erlang's `monitor(process, {Name, Node})` does; the down names it, and
    /// comes with `noconnection` if its node is lost.
    pub fn monitor(&self, target: impl Into<Dest>) -> Result<MonitorRef, LinkError> {
        match target.into() {
            Dest::Pid(pid) => self.system.inner.monitor(&self.process, pid),
            Dest::Name(name) => self.system.inner.monitor_local_name(&self.process, &name),
            Dest::Remote { name, node } => {
                self.system.inner.monitor_named(&self.process, &name, &node)
            }
            // Resolved here, once: the monitor follows the process the name
            // or group gave.
            Dest::Placed { kind, id } => match self.system.route_placed(&kind, &id) {
                Ok(to) => self.monitor(Dest::from(to)),
                Err(_) => Ok(self.system.inner.monitor_nobody(&self.process)),
            },
            dest @ (Dest::Global(_) | Dest::Group(_)) => match self.system.cluster_target(&dest) {
                Ok(pid) => self.system.inner.monitor(&self.process, pid),
                Err(_) => Ok(self.system.inner.monitor_nobody(&self.process)),
            },
        }
    }

    /// Removes a monitor. A down message for it that has not reached the actor's
    /// signal processing yet is discarded; one already turned into a message
    /// (between two callbacks) may still be delivered, as with Erlang's
    /// `demonitor/1` without the `flush` option.
    pub fn demonitor(&self, monitor: MonitorRef) {
        self.system.inner.demonitor(&self.process, monitor)
    }

    /// Turns exit trapping on or off. While on, exit signals (except `kill`) arrive
    /// as [`ExitMessage`]s instead of stopping the actor.
    pub fn trap_exit(&self, on: bool) {
        self.process.lock().trap_exit = on;
    }

    /// Sends an exit signal with `reason` to `pid` (Erlang's `exit(Pid, Reason)`).
    pub fn exit(&self, pid: Pid, reason: ExitReason) -> Result<(), LinkError> {
        self.system.exit_from(self.pid(), pid, reason)
    }

    /// Stops this actor with `reason` once the current callback returns.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop = Some(reason);
    }

    /// Sends `msg` to `to` after `delay`, as if this actor sent it then.
    pub fn send_after(
        &self,
        to: impl Into<Dest>,
        msg: impl Any + Send,
        delay: Duration,
    ) -> TimerRef {
        self.system
            .send_after_from(Some(self.pid()), to.into(), msg, delay)
    }

    /// Calls the gen_server `server` (see [`crate::gen_server`]) and waits up
    /// to 5 s for its reply, of the request's reply type; the server sees this
    /// actor as its caller.
    pub async fn call<S, Q>(&self, server: &ServerRef<S>, request: Q) -> Result<Q::Reply, CallError>
    where
        S: HandleCall<Q>,
        Q: Request,
    {
        self.system
            .call_from(Some(self.pid()), server, request, DEFAULT_CALL_TIMEOUT)
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
        self.system
            .call_from(Some(self.pid()), server, request, timeout)
            .await
    }

    /// Sends a cast to the gen_server `server`, from this actor.
    pub async fn cast<S, C>(&self, server: &ServerRef<S>, msg: C) -> Result<(), SendError>
    where
        S: HandleCast<C>,
        C: Send + 'static,
    {
        self.system.cast_from(Some(self.pid()), server, msg).await
    }
}

/// The parts of the loop's state that signal processing writes while a handler
/// (which borrows the actor and the context) is suspended.
pub(crate) struct LoopCell {
    /// User messages taken from the mailbox, plus trapped exits and downs.
    pub(crate) local: VecDeque<Envelope>,
    /// Signals taken from the queue and not yet applied.
    pub(crate) signals: VecDeque<Signal>,
}

/// Runs one actor from `started` to the notification of its links and monitors.
///
/// One `async fn` with no nested `async fn` calls on the hot path, so the task
/// of an idle actor stays small (see the `idle_actor_task_is_small` test). The
/// `stopped` hook is boxed: it runs once, so its state stays out of the
/// long-lived future.
pub(crate) async fn run_actor<A: Actor>(mut actor: A, mut ctx: ActorContext) {
    let process = ctx.process.clone();
    let mut cell = LoopCell {
        local: VecDeque::new(),
        signals: VecDeque::new(),
    };
    let started = guarded(&process, &mut cell, false, actor.started(&mut ctx)).await;
    let started = match (started, ctx.stop.take()) {
        (Err(reason), _) | (Ok(()), Some(reason)) => Err(reason),
        (Ok(()), None) => Ok(()),
    };
    if let Some(tx) = ctx.started_tx.take() {
        let _ = tx.send(started.clone());
    }
    let reason = match started {
        Err(reason) => reason,
        Ok(()) => loop {
            if process.has_signals() {
                if let Some(reason) = process_signals(&process, &mut cell) {
                    break reason;
                }
                continue;
            }
            if let Some(env) = cell.local.pop_front() {
                ctx.sender = env.from;
                let handled = guarded(
                    &process,
                    &mut cell,
                    false,
                    actor.handle_message(env.msg, &mut ctx),
                )
                .await;
                if let Err(reason) = handled {
                    break reason;
                }
                if let Some(reason) = ctx.stop.take() {
                    break reason;
                }
                continue;
            }
            let local = &mut cell.local;
            let _ready: Ready =
                std::future::poll_fn(|cx| process.poll_ready(cx, local, BATCH)).await;
        },
    };
    ctx.sender = NO_SENDER;
    // A kill that arrived together with the signal that ended the loop wins.
    let reason = if cell.signals.iter().any(is_kill) {
        ExitReason::Killed
    } else {
        reason
    };
    let reason = if reason == ExitReason::Killed {
        reason
    } else {
        match Box::pin(guarded(
            &process,
            &mut cell,
            true,
            actor.stopped(&reason, &mut ctx),
        ))
        .await
        {
            Ok(()) => reason,
            Err(ExitReason::Killed) => ExitReason::Killed,
            Err(other) => {
                tracing::warn!(pid = %process.pid, reason = %other, "stopped hook failed");
                reason
            }
        }
    };
    drop(actor);
    let inner = ctx.system.inner.clone();
    drop(ctx);
    inner.finish(&process, reason, std::mem::take(&mut cell.signals), true);
}

/// Polls `fut` (a callback) while applying signals that arrive when it is
/// suspended. Resolves to the exit reason if a signal, or a panic, ends the actor.
/// With `kill_only`, only an untrappable kill is acted on; other signals stay queued.
///
/// A hand-written future rather than an `async fn`, so the callback's future is
/// stored once (an `async fn` keeps both its argument and the pinned copy), which
/// keeps every idle actor's task small.
pub(crate) fn guarded<'a, F: Future<Output = ()>>(
    process: &'a Process,
    cell: &'a mut LoopCell,
    kill_only: bool,
    fut: F,
) -> Guarded<'a, F> {
    Guarded {
        process,
        cell,
        kill_only,
        fut,
    }
}

/// The future returned by [`guarded`].
pub(crate) struct Guarded<'a, F> {
    process: &'a Process,
    cell: &'a mut LoopCell,
    kill_only: bool,
    fut: F,
}

impl<F: Future<Output = ()>> Future for Guarded<'_, F> {
    type Output = Result<(), ExitReason>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `self`
        // and `Guarded` has no Drop impl; the other fields are plain references
        // and a bool, which are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let mut fut = unsafe { std::pin::Pin::new_unchecked(&mut this.fut) };
        loop {
            if this.kill_only {
                if let Some(reason) = kill_pending(this.process, &this.cell.signals) {
                    return Poll::Ready(Err(reason));
                }
            } else if this.process.has_signals() {
                let exit = process_signals(this.process, this.cell);
                if let Some(reason) = exit {
                    return Poll::Ready(Err(reason));
                }
            }
            match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Ready(())) => return Poll::Ready(Ok(())),
                Ok(Poll::Pending) => {}
                Err(payload) => return Poll::Ready(Err(ExitReason::Panic(panic_text(&*payload)))),
            }
            if this.process.register_for_signals(cx, this.kill_only) {
                return Poll::Pending;
            }
        }
    }
}

/// Turns a panic payload into text.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

fn is_kill(s: &Signal) -> bool {
    matches!(
        s,
        Signal::Exit {
            reason: ExitReason::Kill,
            link: false,
            ..
        }
    )
}

/// In `kill_only` mode: `Killed` if an untrappable kill is queued, either still in
/// the process's queue or already taken into the loop's (`taken`).
fn kill_pending(process: &Process, taken: &VecDeque<Signal>) -> Option<ExitReason> {
    if taken.iter().any(is_kill) {
        return Some(ExitReason::Killed);
    }
    if !process.has_signals() {
        return None;
    }
    process
        .lock()
        .signals_iter()
        .any(is_kill)
        .then_some(ExitReason::Killed)
}

/// Applies every queued signal. Returns the exit reason if one ends the actor;
/// signals after it stay in `cell.signals` for the exit path to answer.
pub(crate) fn process_signals(process: &Process, cell: &mut LoopCell) -> Option<ExitReason> {
    process.take_signals(&mut cell.signals);
    while let Some(sig) = cell.signals.pop_front() {
        if let Some(reason) = apply_signal(process, sig, &mut cell.local) {
            return Some(reason);
        }
    }
    None
}

fn apply_signal(
    process: &Process,
    sig: Signal,
    local: &mut VecDeque<Envelope>,
) -> Option<ExitReason> {
    match sig {
        Signal::Exit { from, reason, link } => {
            let mut st = process.lock();
            if link {
                let was_linked = st.relations_if_any().is_some_and(|r| r.links.remove(&from));
                if !was_linked {
                    // The link was removed before the signal arrived: ignore it.
                    return None;
                }
            } else if reason == ExitReason::Kill {
                return Some(ExitReason::Killed);
            }
            if st.trap_exit {
                drop(st);
                local.push_back(Envelope {
                    from,
                    msg: Box::new(ExitMessage { from, reason }),
                });
                return None;
            }
            drop(st);
            if reason == ExitReason::Normal {
                // A normal exit signal only stops an actor that sends it to itself.
                return (!link && from == process.pid).then_some(ExitReason::Normal);
            }
            Some(reason)
        }
        Signal::Link { from } => {
            process.lock().relations().links.insert(from);
            None
        }
        Signal::Unlink { from } => {
            if let Some(r) = process.lock().relations_if_any() {
                r.links.remove(&from);
            }
            None
        }
        Signal::Monitor { from, monitor } => {
            process
                .lock()
                .relations()
                .monitored_by
                .insert((from, monitor));
            None
        }
        Signal::Demonitor { from, monitor } => {
            if let Some(r) = process.lock().relations_if_any() {
                r.monitored_by.remove(&(from, monitor));
            }
            None
        }
        Signal::Down {
            monitor,
            pid,
            reason,
        } => {
            let active = process
                .lock()
                .relations_if_any()
                .is_some_and(|r| r.monitoring.remove(&monitor).is_some());
            if active {
                local.push_back(Envelope {
                    from: pid,
                    msg: Box::new(DownMessage {
                        monitor,
                        pid,
                        reason,
                    }),
                });
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Idle;
    impl Actor for Idle {
        async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
    }

    /// A million idle actors must fit in about a gigabyte: the task of an idle
    /// actor (its future) and its process record must stay small.
    #[test]
    fn idle_actor_task_is_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let system = ActorSystem::new();
            let process = Arc::new(Process::new(Pid::new(0, 1, 0), 4, false));
            let ctx = ActorContext {
                process,
                system: system.clone(),
                sender: NO_SENDER,
                stop: None,
                started_tx: None,
            };
            let fut = run_actor(Idle, ctx);
            let future_size = std::mem::size_of_val(&fut);
            assert!(
                future_size <= 512,
                "idle actor future is {future_size} bytes"
            );
            let process_size = std::mem::size_of::<Process>();
            assert!(
                process_size <= 192,
                "process record is {process_size} bytes"
            );
        });
    }
}
