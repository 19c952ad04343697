//! The service registry and remote service calls, built on process groups:
//! a service is a [`pg`] group in the scope [`SERVICE_SCOPE`], its
//! instances are the group's members, and each node's registry server
//! ([`REGISTRY_SERVER`]) keeps the metadata of its own instances.
//!
//! - [`Services::register`] joins a local process to the service's group
//!   (with its metadata); it leaves with [`Services::deregister`], when it
//!   exits, or with its node.
//! - [`Services::resolve`] lists the instances with their node, metadata and
//!   health (the membership state of their node).
//! - [`Services::call`] and [`Services::cast`] pick one instance by a
//!   [`Strategy`] among those whose node membership reports neither
//!   `Suspected`, `Failed` nor `Left` (a leaving member is reported `Left`
//!   at once) and whose process is alive (known at once for this
//!   node's processes, from pg for others), then call it as a gen_server
//!   call does: [`ServiceError::Timeout`] when no reply came in time. A call
//!   marked idempotent that fails with `noproc` or `noconnection` (or whose
//!   node cannot be reached) is made again to another instance within the
//!   same timeout.
//! - [`Services::watch`] delivers [`ServiceEvent`]s to a process.
//!
//! Consistency is pg's: a registration is seen on another node once pg's
//! `Join` arrived there; a node's health is what membership reported last.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use joerl_core::gen_server::{
    CallResponse, GenServer, HandleCall, HandleCast, ReplyTo, Request, ServerRef,
};
use joerl_core::{
    Actor, ActorContext, ActorSystem, CallError, DownMessage, ExitReason, Message, MonitorRef, Pid,
    RouteError, SendError, SpawnOptions,
};
use serde::{Deserialize, Serialize};

use super::pg::{self, Pg, PgError, PgEvent};
use super::{ClusterEvent, MemberState};
use crate::DistributedSystem;

/// The pg scope services live in (apart from users' own groups).
pub const SERVICE_SCOPE: &str = "joerl_services";

/// The registered name of the registry server on every node.
pub const REGISTRY_SERVER: &str = "joerl_service_registry";

/// An instance's metadata: free-form keys and values (version, zone, ...).
pub type Metadata = BTreeMap<String, String>;

/// One instance of a service, as [`Services::resolve`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service.
    pub service: String,
    /// The node the instance runs on (empty if this node does not know the
    /// node's name).
    pub node: String,
    /// The instance's process.
    pub pid: Pid,
    /// Its metadata (empty if its node did not answer).
    pub metadata: Metadata,
    /// Its node's membership state (`None`: membership is not enabled here,
    /// or has not reported the node).
    pub health: Option<MemberState>,
}

impl ServiceInstance {
    /// True if calls may be routed to it: its node is not `Suspected`,
    /// `Failed`, `Leaving` or `Left` (membership reports a leaving member
    /// `Left` at once).
    pub fn is_healthy(&self) -> bool {
        self.health.is_none_or(healthy)
    }
}

fn healthy(state: MemberState) -> bool {
    !matches!(
        state,
        MemberState::Suspected | MemberState::Failed | MemberState::Leaving | MemberState::Left
    )
}

/// How a call or a cast picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Each instance in turn (in Pid order, so every instance is visited
    /// once per round while the set does not change).
    #[default]
    RoundRobin,
    /// Any instance, at random.
    Random,
    /// The instance with the fewest calls from this node still waiting for
    /// their reply (ties in turn): a slow instance gets fewer calls.
    LeastOutstanding,
    /// An instance on this node if there is one, else one at random.
    PreferLocal,
}

/// How [`Services::call`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// The whole call's time limit, retries included (default 5 s).
    pub timeout: Duration,
    /// How the instance is picked.
    pub strategy: Strategy,
    /// True: a call that failed with `noproc`, `noconnection` or an
    /// unreachable node is made again to another instance (the request may
    /// then have been handled twice; mark only requests for which that is
    /// harmless).
    pub idempotent: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(5),
            strategy: Strategy::default(),
            idempotent: false,
        }
    }
}

impl CallOptions {
    /// Default options with this timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout,
            ..Self::default()
        }
    }

    /// With this strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Marked idempotent: retried on another instance (see
    /// [`idempotent`](Self::idempotent)).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

/// A change of a watched service (see [`Services::watch`]), in the order
/// this node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceEvent {
    /// Instances were registered.
    Registered {
        /// The service.
        service: String,
        /// The instances' processes.
        pids: Vec<Pid>,
    },
    /// Instances went (deregistered, exited, or lost with their node).
    Deregistered {
        /// The service.
        service: String,
        /// The instances' processes.
        pids: Vec<Pid>,
    },
}
crate::remote_message!(ServiceEvent, "joerl::service::ServiceEvent");

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No healthy instance of the service is known here (none registered,
    /// all on unhealthy nodes, or every one tried failed).
    #[error("no healthy instance of service {service:?}")]
    NoInstance {
        /// The service.
        service: String,
    },
    /// No reply within the call's timeout (retries included).
    #[error("the call to service {service:?} timed out after {timeout:?}")]
    Timeout {
        /// The service.
        service: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The call to the instance failed (and was not retried: not marked
    /// idempotent, or not a failure a retry helps with).
    #[error("the call to service {service:?} at {pid} failed: {source}")]
    Call {
        /// The service.
        service: String,
        /// The instance called.
        pid: Pid,
        /// The call's error.
        source: CallError,
    },
    /// The cast could not be sent.
    #[error("the cast to service {service:?} at {pid} failed: {source}")]
    Cast {
        /// The service.
        service: String,
        /// The instance.
        pid: Pid,
        /// The send error.
        source: SendError,
    },
    /// The process is not registered as an instance of the service.
    #[error("{pid} is not an instance of service {service:?}")]
    NotRegistered {
        /// The service.
        service: String,
        /// The process.
        pid: Pid,
    },
    /// The group operation was refused (for example, the process is not
    /// this node's: register it from its node).
    #[error(transparent)]
    Group(#[from] PgError),
    /// The registry server did not answer.
    #[error("the service registry server did not answer: {0}")]
    Server(String),
}

// The registry server: this node's instances' metadata.

/// Records a local instance's metadata (sent by [`Services::register`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Describe {
    /// The service.
    pub service: String,
    /// The instance (of this node).
    pub pid: Pid,
    /// Its metadata.
    pub metadata: Metadata,
}
impl Request for Describe {
    type Reply = ();
}

/// Forgets a local instance's metadata (sent by [`Services::deregister`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Forget {
    /// The service.
    pub service: String,
    /// The instance.
    pub pid: Pid,
}
impl Request for Forget {
    type Reply = ();
}

/// Asks for the metadata of local instances.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetMetadata {
    /// The service.
    pub service: String,
    /// The instances.
    pub pids: Vec<Pid>,
}
impl Request for GetMetadata {
    type Reply = Vec<Option<Metadata>>;
}

/// Keeps the metadata of this node's instances; answers peers.
pub struct RegistryServer {
    metadata: HashMap<(String, Pid), Metadata>,
    monitors: HashMap<Pid, MonitorRef>,
}

impl GenServer for RegistryServer {
    type Calls = (Describe, Forget, GetMetadata);
    type Casts = ();

    async fn handle_info(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Some(down) = msg.downcast_ref::<DownMessage>() {
            self.monitors.remove(&down.pid);
            self.metadata.retain(|(_, p), _| *p != down.pid);
        }
    }
}

impl HandleCall<Describe> for RegistryServer {
    async fn handle_call(
        &mut self,
        req: Describe,
        _from: ReplyTo<()>,
        ctx: &mut ActorContext,
    ) -> CallResponse<()> {
        if !self.monitors.contains_key(&req.pid)
            && let Ok(m) = ctx.monitor(req.pid)
        {
            self.monitors.insert(req.pid, m);
        }
        self.metadata.insert((req.service, req.pid), req.metadata);
        CallResponse::Reply(())
    }
}

impl HandleCall<Forget> for RegistryServer {
    async fn handle_call(
        &mut self,
        req: Forget,
        _from: ReplyTo<()>,
        ctx: &mut ActorContext,
    ) -> CallResponse<()> {
        self.metadata.remove(&(req.service, req.pid));
        if !self.metadata.keys().any(|(_, p)| *p == req.pid)
            && let Some(m) = self.monitors.remove(&req.pid)
        {
            ctx.demonitor(m);
        }
        CallResponse::Reply(())
    }
}

impl HandleCall<GetMetadata> for RegistryServer {
    async fn handle_call(
        &mut self,
        req: GetMetadata,
        _from: ReplyTo<Vec<Option<Metadata>>>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Vec<Option<Metadata>>> {
        let out = req
            .pids
            .iter()
            .map(|p| self.metadata.get(&(req.service.clone(), *p)).cloned())
            .collect();
        CallResponse::Reply(out)
    }
}

crate::remote_server!(RegistryServer);

/// Node health as membership last reported it: node id → (creation, state).
type Health = Arc<RwLock<HashMap<u32, (u32, MemberState)>>>;

/// The service registry of one node: register, resolve, watch, call. Cheap
/// to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    system: ActorSystem,
    node_id: u32,
    pg: Pg,
    server: ServerRef<RegistryServer>,
    health: Health,
    outstanding: DashMap<Pid, Arc<AtomicUsize>>,
    turns: DashMap<String, AtomicUsize>,
    /// For node names, in `resolve` (held as `Pg` holds its system: a
    /// `Services` is the user's, never the node's).
    node: DistributedSystem,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("server", &self.inner.server)
            .finish()
    }
}

/// Why the registry did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartServicesError {
    /// The services' pg scope or the registry server could not start (one
    /// already runs on this node: keep the first [`Services`]).
    #[error("cannot start the service registry: {0}")]
    Spawn(#[from] joerl_core::SpawnError),
}

/// Starts the service registry on `node`: its pg scope ([`SERVICE_SCOPE`])
/// and its registry server ([`REGISTRY_SERVER`]). Every node that offers or
/// calls services starts it. With clustering enabled, instances on nodes
/// membership reports unhealthy are skipped.
pub fn start(node: &DistributedSystem) -> Result<Services, StartServicesError> {
    let pg = pg::start(node, SERVICE_SCOPE)?;
    let server = joerl_core::gen_server::spawn_server_with(
        node,
        RegistryServer {
            metadata: HashMap::new(),
            monitors: HashMap::new(),
        },
        SpawnOptions::new().name(REGISTRY_SERVER),
    )?;
    let health: Health = Arc::new(RwLock::new(HashMap::new()));
    if let Ok(cluster) = node.cluster() {
        let mut events = cluster.subscribe();
        let h = health.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let (m, state) = match e {
                    ClusterEvent::MemberJoined(m)
                    | ClusterEvent::MemberUp(m)
                    | ClusterEvent::MemberRecovered(m) => (m, MemberState::Active),
                    ClusterEvent::MemberSuspected(m) => (m, MemberState::Suspected),
                    ClusterEvent::MemberFailed(m) => (m, MemberState::Failed),
                    ClusterEvent::MemberLeft(m) => (m, MemberState::Left),
                    _ => continue,
                };
                let id = joerl_core::node_id(&m.name);
                let mut h = h.write().unwrap_or_else(|e| e.into_inner());
                // An older incarnation's news does not touch a newer one.
                if h.get(&id).is_none_or(|(c, _)| m.creation >= *c) {
                    h.insert(id, (m.creation, state));
                }
            }
        });
    }
    Ok(Services {
        inner: Arc::new(Inner {
            system: (**node).clone(),
            node_id: node.node_id(),
            pg,
            server,
            health,
            outstanding: DashMap::new(),
            turns: DashMap::new(),
            node: node.clone(),
        }),
    })
}

/// Counts a call as outstanding while it lives.
struct Outstanding<'a> {
    map: &'a DashMap<Pid, Arc<AtomicUsize>>,
    pid: Pid,
    count: Arc<AtomicUsize>,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.map
                .remove_if(&self.pid, |_, c| c.load(Ordering::Acquire) == 0);
        }
    }
}

impl Services {
    /// Registers this node's process `pid` as an instance of `service` with
    /// `metadata`. A process may be an instance of several services.
    pub async fn register(
        &self,
        service: &str,
        pid: Pid,
        metadata: Metadata,
    ) -> Result<(), ServiceError> {
        if pid.node() != self.inner.node_id {
            return Err(PgError::NotLocal(pid).into());
        }
        // The metadata first: a peer that sees the member can ask for it.
        self.inner
            .system
            .call(
                &self.inner.server,
                Describe {
                    service: service.to_string(),
                    pid,
                    metadata,
                },
            )
            .await
            .map_err(|e| ServiceError::Server(e.to_string()))?;
        self.inner.pg.join(service, &[pid]).await?;
        Ok(())
    }

    /// Deregisters the instance `pid` (of this node) of `service`.
    pub async fn deregister(&self, service: &str, pid: Pid) -> Result<(), ServiceError> {
        match self.inner.pg.leave(service, &[pid]).await {
            Ok(()) => {}
            Err(PgError::NotJoined { .. }) => {
                return Err(ServiceError::NotRegistered {
                    service: service.to_string(),
                    pid,
                });
            }
            Err(e) => return Err(e.into()),
        }
        if !self.inner.pg.local_members(service).contains(&pid) {
            let _ = self
                .inner
                .system
                .call(
                    &self.inner.server,
                    Forget {
                        service: service.to_string(),
                        pid,
                    },
                )
                .await;
        }
        Ok(())
    }

    /// The instances of `service` this node knows now, on every node, with
    /// their metadata (asked of their nodes) and health, in Pid order.
    pub async fn resolve(&self, service: &str) -> Vec<ServiceInstance> {
        let mut pids = self.inner.pg.members(service);
        pids.sort();
        pids.dedup();
        let mut by_node: BTreeMap<u32, Vec<Pid>> = BTreeMap::new();
        for p in &pids {
            by_node.entry(p.node()).or_default().push(*p);
        }
        let mut out = Vec::with_capacity(pids.len());
        for (id, ps) in by_node {
            let node = self.node_name(id).unwrap_or_default();
            let server: ServerRef<RegistryServer> = if id == self.inner.node_id {
                self.inner.server.clone()
            } else {
                ServerRef::new((REGISTRY_SERVER, node.as_str()))
            };
            let metadata = if node.is_empty() {
                vec![None; ps.len()]
            } else {
                self.inner
                    .system
                    .call(
                        &server,
                        GetMetadata {
                            service: service.to_string(),
                            pids: ps.clone(),
                        },
                    )
                    .await
                    .unwrap_or_else(|_| vec![None; ps.len()])
            };
            let health = self.health_of(id);
            for (pid, md) in ps.into_iter().zip(metadata) {
                out.push(ServiceInstance {
                    service: service.to_string(),
                    node: node.clone(),
                    pid,
                    metadata: md.unwrap_or_default(),
                    health,
                });
            }
        }
        out.sort_by_key(|i| i.pid);
        out
    }

    fn node_name(&self, id: u32) -> Option<String> {
        let node = &self.inner.node;
        if id == self.inner.node_id {
            return Some(node.name().to_string());
        }
        node.known_nodes()
            .into_iter()
            .find(|n| n.node_id == id)
            .map(|n| n.name)
    }

    fn health_of(&self, node: u32) -> Option<MemberState> {
        if node == self.inner.node_id {
            return Some(MemberState::Active);
        }
        let h = self.inner.health.read().unwrap_or_else(|e| e.into_inner());
        h.get(&node).map(|(_, s)| *s)
    }

    /// The instances calls may go to now, in Pid order.
    fn candidates(&self, service: &str, skip: &[Pid]) -> Vec<Pid> {
        let mut pids = self.inner.pg.members(service);
        pids.sort();
        pids.dedup();
        let h = self.inner.health.read().unwrap_or_else(|e| e.into_inner());
        pids.retain(|p| {
            !skip.contains(p)
                && if p.node() == self.inner.node_id {
                    self.inner.system.is_alive(*p)
                } else {
                    h.get(&p.node()).is_none_or(|(_, s)| healthy(*s))
                }
        });
        pids
    }

    /// The instances a call or a cast to `service` may go to now (healthy
    /// node, live process as far as this node knows), in Pid order.
    pub fn routable(&self, service: &str) -> Vec<Pid> {
        self.candidates(service, &[])
    }

    fn turn(&self, service: &str) -> usize {
        if let Some(t) = self.inner.turns.get(service) {
            return t.fetch_add(1, Ordering::Relaxed);
        }
        self.inner
            .turns
            .entry(service.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
    }

    /// The instance `strategy` picks among the healthy ones not in `skip`.
    pub fn pick(&self, service: &str, strategy: Strategy, skip: &[Pid]) -> Option<Pid> {
        let c = self.candidates(service, skip);
        if c.is_empty() {
            return None;
        }
        Some(match strategy {
            Strategy::RoundRobin => c[self.turn(service) % c.len()],
            Strategy::Random => c[rand::random_range(0..c.len())],
            Strategy::PreferLocal => {
                let local: Vec<Pid> = c
                    .iter()
                    .copied()
                    .filter(|p| p.node() == self.inner.node_id)
                    .collect();
                let from = if local.is_empty() { &c } else { &local };
                from[rand::random_range(0..from.len())]
            }
            Strategy::LeastOutstanding => {
                // One reading of each count: calls that start or end
                // meanwhile do not change the choice half-way.
                let loads: Vec<(Pid, usize)> = c
                    .iter()
                    .map(|p| {
                        let n = self
                            .inner
                            .outstanding
                            .get(p)
                            .map_or(0, |c| c.load(Ordering::Acquire));
                        (*p, n)
                    })
                    .collect();
                let least = loads.iter().map(|(_, n)| *n).min().unwrap_or(0);
                let tied: Vec<Pid> = loads
                    .iter()
                    .filter(|(_, n)| *n == least)
                    .map(|(p, _)| *p)
                    .collect();
                tied[self.turn(service) % tied.len()]
            }
        })
    }

    fn outstanding(&self, pid: Pid) -> Outstanding<'_> {
        // Counted while the entry is held, so a call ending meanwhile cannot
        // remove the entry this one is counted in.
        let entry = self.inner.outstanding.entry(pid).or_default();
        entry.fetch_add(1, Ordering::AcqRel);
        let count = entry.value().clone();
        drop(entry);
        Outstanding {
            map: &self.inner.outstanding,
            pid,
            count,
        }
    }

    /// Calls an instance of `service` (a gen_server of type `S`) with
    /// `request`, picked by `options.strategy`; see [`CallOptions`] for the
    /// timeout and retries.
    pub async fn call<S, Q>(
        &self,
        service: &str,
        request: Q,
        options: CallOptions,
    ) -> Result<Q::Reply, ServiceError>
    where
        S: HandleCall<Q>,
        Q: Request + Clone,
    {
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut tried: Vec<Pid> = Vec::new();
        loop {
            let Some(pid) = self.pick(service, options.strategy, &tried) else {
                return Err(ServiceError::NoInstance {
                    service: service.to_string(),
                });
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ServiceError::Timeout {
                    service: service.to_string(),
                    timeout: options.timeout,
                });
            }
            let server: ServerRef<S> = ServerRef::new(pid);
            let result = {
                let _busy = self.outstanding(pid);
                self.inner
                    .system
                    .call_timeout(&server, request.clone(), left)
                    .await
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(CallError::Timeout) => {
                    return Err(ServiceError::Timeout {
                        service: service.to_string(),
                        timeout: options.timeout,
                    });
                }
                Err(
                    CallError::NoProc
                    | CallError::NoConnection
                    | CallError::Unreachable(_)
                    | CallError::Exit(ExitReason::NoProc | ExitReason::NoConnection)
                    | CallError::Send(SendError::Route(
                        RouteError::Unreachable { .. } | RouteError::UnknownNode { .. },
                    )),
                ) if options.idempotent => {
                    tracing::debug!(%service, %pid, "service call failed; trying another instance");
                    tried.push(pid);
                }
                Err(source) => {
                    return Err(ServiceError::Call {
                        service: service.to_string(),
                        pid,
                        source,
                    });
                }
            }
        }
    }

    /// Casts `msg` to one instance of `service` (a gen_server of type `S`),
    /// picked by `strategy`.
    pub async fn cast<S, C>(
        &self,
        service: &str,
        msg: C,
        strategy: Strategy,
    ) -> Result<Pid, ServiceError>
    where
        S: HandleCast<C>,
        C: Send + 'static,
    {
        let Some(pid) = self.pick(service, strategy, &[]) else {
            return Err(ServiceError::NoInstance {
                service: service.to_string(),
            });
        };
        let server: ServerRef<S> = ServerRef::new(pid);
        self.inner
            .system
            .cast(&server, msg)
            .await
            .map_err(|source| ServiceError::Cast {
                service: service.to_string(),
                pid,
                source,
            })?;
        Ok(pid)
    }

    /// Makes `watcher` receive a [`ServiceEvent`] for every change of
    /// `service`'s instances from now on, in order, until it exits; gives
    /// the instances' processes now.
    pub async fn watch(&self, service: &str, watcher: Pid) -> Result<Vec<Pid>, ServiceError> {
        let relay = self.inner.system.spawn(Relay {
            watcher,
            service: service.to_string(),
        });
        match self.inner.pg.monitor(service, relay).await {
            Ok(now) => Ok(now),
            Err(e) => {
                let _ = self.inner.system.exit(relay, ExitReason::Kill);
                Err(e.into())
            }
        }
    }
}

/// Turns a service group's pg events into service events for one watcher.
struct Relay {
    watcher: Pid,
    service: String,
}

impl Actor for Relay {
    async fn started(&mut self, ctx: &mut ActorContext) {
        if ctx.monitor(self.watcher).is_err() {
            ctx.stop(ExitReason::Normal);
        }
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let event = match msg.downcast::<PgEvent>() {
            Ok(e) => match *e {
                PgEvent::Joined { pids, .. } => ServiceEvent::Registered {
                    service: self.service.clone(),
                    pids,
                },
                PgEvent::Left { pids, .. } => ServiceEvent::Deregistered {
                    service: self.service.clone(),
                    pids,
                },
            },
            Err(other) => {
                if other.is::<DownMessage>() {
                    // The watcher is gone.
                    ctx.stop(ExitReason::Normal);
                }
                return;
            }
        };
        if ctx.send(self.watcher, event).await.is_err() {
            ctx.stop(ExitReason::Normal);
        }
    }
}
