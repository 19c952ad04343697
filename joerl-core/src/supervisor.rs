//! Supervisors: restart children when they fail, as OTP's `supervisor` does.
//!
//! A supervisor traps exits and links to every child it starts. When a child
//! exits, its [`Restart`] type and exit reason decide whether it is restarted,
//! and the [`Strategy`] decides which siblings are restarted with it. Siblings
//! are always stopped (in reverse start order, waiting for each to be gone)
//! before they are started again, so no child ever runs twice. More than
//! `max_restarts` restarts within `period` make the supervisor stop all children
//! and exit with `shutdown`, handing the failure to its own supervisor.
//!
//! A child is started by a function that returns its Pid, so a child can live on
//! another node: the supervisor links to whatever Pid the function returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gen_server::{
    CallResponse, GenServer, GenServerActor, HandleCall, ReplyTo, Request, ServerRef,
};
use crate::{
    Actor, ActorContext, ActorSystem, ExitMessage, ExitReason, Message, Pid, SpawnOptions,
};

/// Which children are restarted when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// All children: the others are stopped, then all are started again.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (not `normal` or `shutdown`).
    Transient,
    /// Never; the child is forgotten when it exits.
    Temporary,
}

/// The future returned by a child's start function.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Pid, String>> + Send>>;

/// A function that starts one child and returns its Pid.
pub type StartFn = Arc<dyn Fn(ActorSystem) -> StartFuture + Send + Sync>;

/// Starts a local child with the spawn options the supervisor chooses (its
/// registered name).
type LocalStartFn = Arc<dyn Fn(ActorSystem, SpawnOptions) -> StartFuture + Send + Sync>;

#[derive(Clone)]
enum Start {
    Local(LocalStartFn),
    Custom(StartFn),
}

/// How to start, restart and stop one child.
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    start: Start,
    restart: Restart,
    shutdown: Duration,
    name: Option<String>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent child spawned locally from `factory` (called on every start).
    /// The supervisor waits until the child's `started` callback has finished
    /// before it starts the next child, as OTP does.
    pub fn new<A, F>(id: impl Into<String>, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let start: LocalStartFn = Arc::new(move |system: ActorSystem, opts: SpawnOptions| {
            let factory = factory.clone();
            Box::pin(async move {
                system
                    .start(factory(), opts)
                    .await
                    .map_err(|e| e.to_string())
            }) as StartFuture
        });
        ChildSpec {
            id: id.into(),
            start: Start::Local(start),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            name: None,
        }
    }

    /// A permanent gen_server child made by `factory` on every start (see
    /// [`new`](Self::new)).
    pub fn server<G, F>(id: impl Into<String>, factory: F) -> Self
    where
        G: GenServer,
        F: Fn() -> G + Send + Sync + 'static,
    {
        Self::new(id, move || GenServerActor(factory()))
    }

    /// A permanent child started by an arbitrary function returning its Pid (for
    /// example a spawn on another node). The supervisor links to the Pid.
    pub fn from_fn<F>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorSystem) -> StartFuture + Send + Sync + 'static,
    {
        ChildSpec {
            id: id.into(),
            start: Start::Custom(Arc::new(start)),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            name: None,
        }
    }

    /// Registers the child as `name` on every start, so the name (and
    /// `{name, node}` from other nodes) reaches whichever incarnation is
    /// running. A child made by [`new`](Self::new) or [`server`](Self::server)
    /// is spawned with the name, so it is never running unnamed; one started
    /// by [`from_fn`](Self::from_fn) is registered as soon as its function
    /// returns, and must be a local actor. A name another actor holds makes
    /// the start fail.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long the child gets to stop after `shutdown` before it is killed.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A supervisor's configuration.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with `strategy`, OTP's default intensity (1 restart in 5 s),
    /// and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            max_restarts: 1,
            period: Duration::from_secs(5),
            children: Vec::new(),
        }
    }

    /// At most `max_restarts` restarts within `period`; one more stops the supervisor.
    pub fn intensity(mut self, max_restarts: usize, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Adds a child; children start in the order they are added.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }
}

/// Lists a supervisor's children (OTP's `which_children`); see
/// [`which_children`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhichChildren;

impl Request for WhichChildren {
    type Reply = Vec<ChildInfo>;
}

/// One child as reported by [`WhichChildren`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's id.
    pub id: String,
    /// Its Pid if running.
    pub pid: Option<Pid>,
}

struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
}

/// The supervisor process. Spawn it with [`spawn_supervisor`].
pub struct Supervisor {
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    parent: Option<Pid>,
}

/// Spawns a supervisor and starts its children (in order) before it handles
/// anything else.
pub fn spawn_supervisor(system: &ActorSystem, spec: SupervisorSpec) -> Pid {
    spawn_supervisor_with(system, spec, SpawnOptions::new())
        .expect("spawn without a name or link cannot fail")
}

/// Spawns a supervisor with spawn options (name, link to a parent supervisor).
/// An exit signal from the linked parent makes it stop its children and exit.
pub fn spawn_supervisor_with(
    system: &ActorSystem,
    spec: SupervisorSpec,
    opts: SpawnOptions,
) -> Result<Pid, crate::SpawnError> {
    let parent = opts.link_target();
    let sup = Supervisor {
        strategy: spec.strategy,
        max_restarts: spec.max_restarts,
        period: spec.period,
        children: spec
            .children
            .into_iter()
            .map(|spec| Child { spec, pid: None })
            .collect(),
        restarts: VecDeque::new(),
        parent,
    };
    system.spawn_with(GenServerActor(sup), opts.trap_exit(true))
}

/// Lists a supervisor's children.
pub async fn which_children(
    system: &ActorSystem,
    supervisor: Pid,
) -> Result<Vec<ChildInfo>, crate::CallError> {
    system
        .call(&ServerRef::<Supervisor>::new(supervisor), WhichChildren)
        .await
}

impl Supervisor {
    async fn start_child(&mut self, index: usize, ctx: &mut ActorContext) -> Result<(), String> {
        let spec = self.children[index].spec.clone();
        let failed = |e: String| format!("child {:?} failed to start: {e}", spec.id);
        let pid = match &spec.start {
            Start::Local(start) => {
                let mut opts = SpawnOptions::new();
                if let Some(name) = &spec.name {
                    opts = opts.name(name.clone());
                }
                start(ctx.system().clone(), opts).await.map_err(failed)?
            }
            Start::Custom(start) => {
                let pid = start(ctx.system().clone()).await.map_err(failed)?;
                if let Some(name) = &spec.name {
                    if let Err(e) = ctx.system().register(name, pid) {
                        ctx.system().stop_and_wait(pid, spec.shutdown).await;
                        return Err(failed(e.to_string()));
                    }
                }
                pid
            }
        };
        ctx.link(pid)
            .map_err(|e| format!("cannot link child {:?}: {e}", spec.id))?;
        self.children[index].pid = Some(pid);
        tracing::debug!(supervisor = %ctx.pid(), child = %spec.id, %pid, "child started");
        Ok(())
    }

    /// Stops one child: unlink, `shutdown`, wait for it to be gone, `kill` after
    /// its shutdown timeout.
    async fn terminate_child(&mut self, index: usize, ctx: &mut ActorContext) {
        let Some(pid) = self.children[index].pid.take() else {
            return;
        };
        let timeout = self.children[index].spec.shutdown;
        let _ = ctx.unlink(pid);
        ctx.system().stop_and_wait(pid, timeout).await;
    }

    async fn terminate_all(&mut self, ctx: &mut ActorContext) {
        for i in (0..self.children.len()).rev() {
            self.terminate_child(i, ctx).await;
        }
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary);
    }

    /// Records a restart; false when the intensity is exceeded.
    fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(first) = self.restarts.front() {
            if now.duration_since(*first) > self.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.len() <= self.max_restarts
    }

    async fn child_exited(&mut self, index: usize, reason: ExitReason, ctx: &mut ActorContext) {
        self.children[index].pid = None;
        let restart = match self.children[index].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal_or_shutdown(),
            Restart::Temporary => false,
        };
        tracing::debug!(
            supervisor = %ctx.pid(),
            child = %self.children[index].spec.id,
            %reason,
            restart,
            "child exited"
        );
        if self.children[index].spec.restart == Restart::Temporary {
            self.children.remove(index);
            return;
        }
        if !restart {
            return;
        }
        let mut first = index;
        loop {
            if !self.allow_restart() {
                tracing::error!(
                    supervisor = %ctx.pid(),
                    max_restarts = self.max_restarts,
                    period = ?self.period,
                    "restart intensity exceeded; shutting down"
                );
                self.terminate_all(ctx).await;
                ctx.stop(ExitReason::Shutdown);
                return;
            }
            // Stop the siblings the strategy restarts, newest first.
            let range: Vec<usize> = match self.strategy {
                Strategy::OneForOne => vec![first],
                Strategy::OneForAll => (0..self.children.len()).collect(),
                Strategy::RestForOne => (first..self.children.len()).collect(),
            };
            for &i in range.iter().rev() {
                self.terminate_child(i, ctx).await;
            }
            // Temporary siblings that were stopped are not started again.
            let mut to_start = Vec::new();
            let mut kept = Vec::new();
            for (i, child) in std::mem::take(&mut self.children).into_iter().enumerate() {
                let in_range = range.contains(&i);
                if in_range && child.spec.restart == Restart::Temporary {
                    continue;
                }
                if in_range {
                    to_start.push(kept.len());
                }
                kept.push(child);
            }
            self.children = kept;
            let mut failed = None;
            for i in to_start {
                if let Err(e) = self.start_child(i, ctx).await {
                    tracing::warn!(supervisor = %ctx.pid(), error = %e, "restart failed");
                    failed = Some(i);
                    break;
                }
            }
            match failed {
                None => return,
                Some(i) => first = i,
            }
        }
    }
}

impl GenServer for Supervisor {
    type Calls = (WhichChildren,);
    type Casts = ();

    async fn init(&mut self, ctx: &mut ActorContext) {
        for i in 0..self.children.len() {
            if let Err(e) = self.start_child(i, ctx).await {
                tracing::error!(supervisor = %ctx.pid(), error = %e, "supervisor failed to start");
                self.terminate_all(ctx).await;
                ctx.stop(ExitReason::Custom(e));
                return;
            }
        }
    }

    async fn handle_info(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Ok(exit) = msg.downcast::<ExitMessage>() else {
            return;
        };
        let ExitMessage { from, reason } = *exit;
        if let Some(index) = self.children.iter().position(|c| c.pid == Some(from)) {
            self.child_exited(index, reason, ctx).await;
        } else if Some(from) == self.parent || from.id() == 0 {
            // The parent (or the system shutting down) tells us to stop.
            self.terminate_all(ctx).await;
            ctx.stop(reason);
        } else {
            tracing::debug!(supervisor = %ctx.pid(), %from, %reason, "exit from a former child ignored");
        }
    }

    async fn terminate(&mut self, _reason: &ExitReason, ctx: &mut ActorContext) {
        self.terminate_all(ctx).await;
    }
}

impl HandleCall<WhichChildren> for Supervisor {
    async fn handle_call(
        &mut self,
        _request: WhichChildren,
        _from: ReplyTo<Vec<ChildInfo>>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Vec<ChildInfo>> {
        CallResponse::Reply(
            self.children
                .iter()
                .map(|c| ChildInfo {
                    id: c.spec.id.clone(),
                    pid: c.pid,
                })
                .collect(),
        )
    }
}
