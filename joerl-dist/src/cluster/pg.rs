//! Process groups, as Erlang's `pg`: named groups of processes across
//! nodes, in scopes. Each node runs one server per scope, registered as
//! [`scope_server_name`]; a node joins only its own processes, tells every
//! peer scope server, and keeps a view of every peer's local groups.
//!
//! - On start and on every node that comes up, the scope server sends
//!   `Discover` to the peer's server of the same scope; the peer answers
//!   with `Sync` (its local groups), monitors the sender and, if it did not
//!   know it, discovers it back.
//! - Joins and leaves go to every known peer as `Join`/`Leave`.
//! - A joined process that exits leaves every group it was in; a peer
//!   server that goes (its node down, or the server stopped) takes its
//!   members with it.
//! - Groups are never empty: a group with no member does not exist, so a
//!   merge after a partition cannot bring back a group that emptied.
//!
//! The view is eventually consistent, as Erlang's: a join is seen on another
//! node once its `Join` arrived. Reads (`members`, `local_members`,
//! `which_groups`) come from a view the server keeps in shared memory, so
//! they do not queue behind the server.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use joerl_core::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_core::{ActorContext, DownMessage, Message, MonitorRef, Pid, SpawnOptions};
use serde::{Deserialize, Serialize};

use crate::DistributedSystem;

/// The default scope's name.
pub const DEFAULT_SCOPE: &str = "default";

/// The registered name of a scope's server on every node.
pub fn scope_server_name(scope: &str) -> String {
    if scope == DEFAULT_SCOPE {
        "joerl_pg".to_string()
    } else {
        format!("joerl_pg.{scope}")
    }
}

/// A change in one group, delivered to the processes that monitor it (see
/// [`Pg::monitor`]), in the order the scope server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgEvent {
    /// Processes joined the group.
    Joined {
        /// The group.
        group: String,
        /// Who joined (as many times as they joined).
        pids: Vec<Pid>,
    },
    /// Processes left the group (by `leave`, by exiting, or with their node).
    Left {
        /// The group.
        group: String,
        /// Who left.
        pids: Vec<Pid>,
    },
}

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PgError {
    /// Only a node's own processes may join or leave its groups (Erlang's
    /// rule): join it from its own node.
    #[error("{0} is not a process of this node; join it from its own node")]
    NotLocal(Pid),
    /// The process was not in the group.
    #[error("{pid} is not in group {group:?}")]
    NotJoined {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
    },
    /// The scope server did not answer (it stopped, or the node is
    /// shutting down).
    #[error("the pg scope server did not answer: {0}")]
    Server(String),
}

#[derive(Debug, Default)]
pub(crate) struct View {
    /// Every member, this node's and its peers', by group.
    all: HashMap<String, Vec<Pid>>,
    /// This node's members, by group.
    local: HashMap<String, Vec<Pid>>,
}

/// Removes one occurrence of each of `pids` from `list`: the ones removed.
fn remove_once(list: &mut Vec<Pid>, pids: &[Pid]) -> Vec<Pid> {
    let mut removed = Vec::new();
    for p in pids {
        if let Some(i) = list.iter().position(|x| x == p) {
            list.swap_remove(i);
            removed.push(*p);
        }
    }
    removed
}

impl View {
    /// Every member of `group`, on every node.
    pub(crate) fn members(&self, group: &str) -> Vec<Pid> {
        self.all.get(group).cloned().unwrap_or_default()
    }

    fn add(map: &mut HashMap<String, Vec<Pid>>, group: &str, pids: &[Pid]) {
        map.entry(group.to_string())
            .or_default()
            .extend_from_slice(pids);
    }

    fn remove(map: &mut HashMap<String, Vec<Pid>>, group: &str, pids: &[Pid]) {
        if let Some(list) = map.get_mut(group) {
            remove_once(list, pids);
            if list.is_empty() {
                map.remove(group);
            }
        }
    }
}

// Between the scope servers of one scope.

/// Asks a peer scope server for its local groups.
#[derive(Debug, Serialize, Deserialize)]
struct Discover {
    from: Pid,
}
crate::remote_message!(Discover, "joerl::pg::Discover");

/// A scope server's local groups, in answer to `Discover`.
#[derive(Debug, Serialize, Deserialize)]
struct Sync {
    from: Pid,
    groups: Vec<(String, Vec<Pid>)>,
}
crate::remote_message!(Sync, "joerl::pg::Sync");

/// Local processes joined a group.
#[derive(Debug, Serialize, Deserialize)]
struct PeerJoin {
    from: Pid,
    group: String,
    pids: Vec<Pid>,
}
crate::remote_message!(PeerJoin, "joerl::pg::Join");

/// Local processes left groups.
#[derive(Debug, Serialize, Deserialize)]
struct PeerLeave {
    from: Pid,
    groups: Vec<String>,
    pids: Vec<Pid>,
}
crate::remote_message!(PeerLeave, "joerl::pg::Leave");

crate::remote_message!(PgEvent, "joerl::pg::PgEvent");

// Calls from this node's users.

/// Joins local processes to a group.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinGroup {
    /// The group.
    pub group: String,
    /// The processes (of this node).
    pub pids: Vec<Pid>,
}
impl Request for JoinGroup {
    type Reply = Result<(), PgError>;
}

/// Makes local processes leave a group.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaveGroup {
    /// The group.
    pub group: String,
    /// The processes (of this node).
    pub pids: Vec<Pid>,
}
impl Request for LeaveGroup {
    type Reply = Result<(), PgError>;
}

/// Makes `watcher` receive the group's changes (`PgEvent`), and gives the
/// members now.
#[derive(Debug, Serialize, Deserialize)]
pub struct MonitorGroup {
    /// The group.
    pub group: String,
    /// Who receives the changes.
    pub watcher: Pid,
}
impl Request for MonitorGroup {
    type Reply = Vec<Pid>;
}

/// One scope's server on one node.
pub struct PgServer {
    scope: String,
    view: Arc<RwLock<View>>,
    /// Monitors on local members.
    members: HashMap<Pid, MonitorRef>,
    /// Peer scope servers: their monitor and their local groups.
    peers: HashMap<Pid, (MonitorRef, HashMap<String, Vec<Pid>>)>,
    /// Who watches which group.
    watchers: HashMap<String, Vec<Pid>>,
}

impl PgServer {
    fn view(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn notify(&mut self, ctx: &ActorContext, event: PgEvent) {
        let group = match &event {
            PgEvent::Joined { group, .. } | PgEvent::Left { group, .. } => group.clone(),
        };
        if let Some(ws) = self.watchers.get(&group) {
            // Not awaited: a watcher with a full mailbox misses the change
            // (logged) rather than stopping the scope.
            for w in ws {
                if ctx.try_send(*w, event.clone()).is_err() {
                    tracing::warn!(watcher = %w, %group, "pg: a watcher could not take a group change");
                }
            }
        }
    }

    async fn to_peers(&self, ctx: &ActorContext, msg: impl Fn() -> Message) {
        for peer in self.peers.keys() {
            let _ = ctx.send(*peer, msg()).await;
        }
    }

    async fn discover(&self, ctx: &ActorContext, node: &str) {
        let me = ctx.pid();
        let _ = ctx
            .send(
                (scope_server_name(&self.scope), node),
                Discover { from: me },
            )
            .await;
    }

    fn local_groups(&self) -> Vec<(String, Vec<Pid>)> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.local
            .iter()
            .map(|(g, p)| (g.clone(), p.clone()))
            .collect()
    }

    /// A peer's groups: monitor it if new, and take its groups in place of
    /// what it had (watchers see only what changed).
    async fn sync(&mut self, ctx: &mut ActorContext, from: Pid, groups: Vec<(String, Vec<Pid>)>) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.peers.entry(from) {
            let Ok(m) = ctx.monitor(from) else { return };
            e.insert((m, HashMap::new()));
        }
        let new: HashMap<String, Vec<Pid>> =
            groups.into_iter().filter(|(_, p)| !p.is_empty()).collect();
        let Some((_, old)) = self.peers.get_mut(&from) else {
            return;
        };
        let old = std::mem::replace(old, new.clone());
        let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
        names.sort();
        names.dedup();
        let mut changes = Vec::new();
        for g in names {
            let (was, now) = (
                old.get(g).cloned().unwrap_or_default(),
                new.get(g).cloned().unwrap_or_default(),
            );
            let mut gone = was.clone();
            remove_once(&mut gone, &now);
            let mut came = now;
            remove_once(&mut came, &was);
            if !gone.is_empty() {
                View::remove(&mut self.view().all, g, &gone);
                changes.push(PgEvent::Left {
                    group: g.clone(),
                    pids: gone,
                });
            }
            if !came.is_empty() {
                View::add(&mut self.view().all, g, &came);
                changes.push(PgEvent::Joined {
                    group: g.clone(),
                    pids: came,
                });
            }
        }
        for e in changes {
            self.notify(ctx, e).await;
        }
    }

    /// Local `pids` leave `groups` (all their groups if `None`).
    async fn leave_local(&mut self, ctx: &ActorContext, pids: &[Pid], only: Option<&str>) {
        let mut left: Vec<(String, Vec<Pid>)> = Vec::new();
        {
            let mut v = self.view();
            let groups: Vec<String> = match only {
                Some(g) => vec![g.to_string()],
                None => v.local.keys().cloned().collect(),
            };
            for g in groups {
                let Some(list) = v.local.get(&g) else {
                    continue;
                };
                let gone: Vec<Pid> = if only.is_some() {
                    // `leave`: once each, as Erlang's.
                    remove_once(&mut list.clone(), pids)
                } else {
                    // An exit: every occurrence.
                    list.iter().filter(|p| pids.contains(p)).copied().collect()
                };
                if gone.is_empty() {
                    continue;
                }
                View::remove(&mut v.local, &g, &gone);
                View::remove(&mut v.all, &g, &gone);
                left.push((g, gone));
            }
        }
        // A process in no group any more is not watched any more.
        {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            let idle: Vec<Pid> = pids
                .iter()
                .filter(|p| !v.local.values().any(|l| l.contains(p)))
                .copied()
                .collect();
            drop(v);
            for p in idle {
                if let Some(m) = self.members.remove(&p) {
                    ctx.demonitor(m);
                }
            }
        }
        for (g, gone) in left {
            let from = ctx.pid();
            let (groups, ps) = (vec![g.clone()], gone.clone());
            self.to_peers(ctx, || {
                Box::new(PeerLeave {
                    from,
                    groups: groups.clone(),
                    pids: ps.clone(),
                })
            })
            .await;
            self.notify(
                ctx,
                PgEvent::Left {
                    group: g,
                    pids: gone,
                },
            )
            .await;
        }
    }
}

impl GenServer for PgServer {
    type Calls = (JoinGroup, LeaveGroup, MonitorGroup);
    type Casts = ();

    async fn init(&mut self, ctx: &mut ActorContext) {
        // Every node that comes up is asked for its groups; so is every one
        // connected now.
        let _ = ctx.monitor_nodes(true);
        for node in ctx.nodes() {
            self.discover(ctx, &node).await;
        }
    }

    async fn handle_info(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Some(node) = super::came_up(&msg) {
            return self.discover(ctx, &node).await;
        }
        joerl_core::receive!(msg, {
            Discover as d => {
                let groups = self.local_groups();
                let me = ctx.pid();
                let new = !self.peers.contains_key(&d.from);
                if new {
                    // Known from now on (as OTP's pg does): joins and leaves
                    // from here reach it even before its own groups arrive.
                    let Ok(m) = ctx.monitor(d.from) else { return };
                    self.peers.insert(d.from, (m, HashMap::new()));
                }
                let _ = ctx.send(d.from, Sync { from: me, groups }).await;
                if new {
                    // Discover it back: this node gets its groups.
                    let _ = ctx.send(d.from, Discover { from: me }).await;
                }
            },
            Sync as s => self.sync(ctx, s.from, s.groups).await,
            PeerJoin as j => {
                // A peer joins only its own node's processes.
                let pids: Vec<Pid> =
                    j.pids.into_iter().filter(|p| p.node() == j.from.node()).collect();
                let Some((_, theirs)) = self.peers.get_mut(&j.from) else { return };
                if pids.is_empty() {
                    return;
                }
                View::add(theirs, &j.group, &pids);
                View::add(&mut self.view().all, &j.group, &pids);
                self.notify(ctx, PgEvent::Joined { group: j.group, pids }).await;
            },
            PeerLeave as l => {
                let Some((_, theirs)) = self.peers.get_mut(&l.from) else { return };
                let mut left = Vec::new();
                for g in l.groups {
                    // Only what was there: one occurrence per pid.
                    let Some(list) = theirs.get_mut(&g) else { continue };
                    let gone = remove_once(list, &l.pids);
                    if list.is_empty() {
                        theirs.remove(&g);
                    }
                    if !gone.is_empty() {
                        left.push((g, gone));
                    }
                }
                for (g, gone) in left {
                    View::remove(&mut self.view().all, &g, &gone);
                    self.notify(ctx, PgEvent::Left { group: g, pids: gone }).await;
                }
            },
            DownMessage as down => {
                if let Some((_, theirs)) = self.peers.remove(&down.pid) {
                    // A peer server (or its node) is gone: so are its members.
                    for (g, pids) in theirs {
                        View::remove(&mut self.view().all, &g, &pids);
                        self.notify(ctx, PgEvent::Left { group: g, pids }).await;
                    }
                } else if self.members.remove(&down.pid).is_some() {
                    self.leave_local(ctx, &[down.pid], None).await;
                } else {
                    for ws in self.watchers.values_mut() {
                        ws.retain(|w| *w != down.pid);
                    }
                    self.watchers.retain(|_, ws| !ws.is_empty());
                }
            },
            else _other => {},
        })
    }
}

impl HandleCall<JoinGroup> for PgServer {
    async fn handle_call(
        &mut self,
        req: JoinGroup,
        _from: ReplyTo<Result<(), PgError>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Result<(), PgError>> {
        let me = ctx.pid().node();
        if let Some(p) = req.pids.iter().find(|p| p.node() != me) {
            return CallResponse::Reply(Err(PgError::NotLocal(*p)));
        }
        if req.pids.is_empty() {
            return CallResponse::Reply(Ok(()));
        }
        for p in &req.pids {
            if !self.members.contains_key(p)
                && let Ok(m) = ctx.monitor(*p)
            {
                self.members.insert(*p, m);
            }
        }
        {
            let mut v = self.view();
            View::add(&mut v.local, &req.group, &req.pids);
            View::add(&mut v.all, &req.group, &req.pids);
        }
        let from = ctx.pid();
        let (group, pids) = (req.group.clone(), req.pids.clone());
        self.to_peers(ctx, || {
            Box::new(PeerJoin {
                from,
                group: group.clone(),
                pids: pids.clone(),
            })
        })
        .await;
        self.notify(
            ctx,
            PgEvent::Joined {
                group: req.group,
                pids: req.pids,
            },
        )
        .await;
        CallResponse::Reply(Ok(()))
    }
}

impl HandleCall<LeaveGroup> for PgServer {
    async fn handle_call(
        &mut self,
        req: LeaveGroup,
        _from: ReplyTo<Result<(), PgError>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Result<(), PgError>> {
        let me = ctx.pid().node();
        if let Some(p) = req.pids.iter().find(|p| p.node() != me) {
            return CallResponse::Reply(Err(PgError::NotLocal(*p)));
        }
        let missing = {
            let v = self.view.read().unwrap_or_else(|e| e.into_inner());
            let list = v.local.get(&req.group);
            req.pids
                .iter()
                .find(|p| !list.is_some_and(|l| l.contains(p)))
                .copied()
        };
        if let Some(pid) = missing {
            return CallResponse::Reply(Err(PgError::NotJoined {
                group: req.group,
                pid,
            }));
        }
        self.leave_local(ctx, &req.pids, Some(&req.group)).await;
        CallResponse::Reply(Ok(()))
    }
}

impl HandleCall<MonitorGroup> for PgServer {
    async fn handle_call(
        &mut self,
        req: MonitorGroup,
        _from: ReplyTo<Vec<Pid>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Vec<Pid>> {
        let ws = self.watchers.entry(req.group.clone()).or_default();
        if !ws.contains(&req.watcher) {
            ws.push(req.watcher);
            // A watcher that exits is dropped.
            let _ = ctx.monitor(req.watcher);
        }
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        CallResponse::Reply(v.all.get(&req.group).cloned().unwrap_or_default())
    }
}

/// One scope of process groups on one node: the handle to its server and
/// its view. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    server: ServerRef<PgServer>,
    view: Arc<RwLock<View>>,
    system: joerl_core::ActorSystem,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("server", &self.server).finish()
    }
}

/// Starts the scope `scope` on `node` (its server registered as
/// [`scope_server_name`]): every node that uses the scope starts it, after
/// enabling clustering if it does (the scope then finds every member, not
/// only the nodes connected). From
/// then on, [`GroupDest`](joerl_core::GroupDest) addresses of the scope work
/// on this node.
pub fn start(node: &DistributedSystem, scope: &str) -> Result<Pg, joerl_core::SpawnError> {
    let view = Arc::new(RwLock::new(View::default()));
    let server = PgServer {
        scope: scope.to_string(),
        view: view.clone(),
        members: HashMap::new(),
        peers: HashMap::new(),
        watchers: HashMap::new(),
    };
    let server = joerl_core::gen_server::spawn_server_with(
        node,
        server,
        SpawnOptions::new().name(scope_server_name(scope)),
    )?;
    // From now on, `Dest::Group` addresses of this scope work on this node.
    super::names::ClusterNames::of(node).add_scope(scope, view.clone());
    // With membership, every member that comes up is discovered (connected
    // to at the first message), not only nodes already connected.
    super::watch_members(node, server.pid());
    Ok(Pg {
        server,
        view,
        system: (**node).clone(),
    })
}

crate::remote_server!(PgServer);

impl Pg {
    async fn call<Q>(&self, req: Q) -> Result<Q::Reply, PgError>
    where
        PgServer: HandleCall<Q>,
        Q: Request,
    {
        self.system
            .call(&self.server, req)
            .await
            .map_err(|e| PgError::Server(e.to_string()))
    }

    /// Joins this node's `pids` to `group` (a process may join a group more
    /// than once, and is then a member as many times).
    pub async fn join(&self, group: &str, pids: &[Pid]) -> Result<(), PgError> {
        self.call(JoinGroup {
            group: group.to_string(),
            pids: pids.to_vec(),
        })
        .await?
    }

    /// Makes this node's `pids` leave `group` once each.
    pub async fn leave(&self, group: &str, pids: &[Pid]) -> Result<(), PgError> {
        self.call(LeaveGroup {
            group: group.to_string(),
            pids: pids.to_vec(),
        })
        .await?
    }

    /// Every member of `group`, on every node, as this node knows it now.
    pub fn members(&self, group: &str) -> Vec<Pid> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .members(group)
    }

    /// The members of `group` on this node.
    pub fn local_members(&self, group: &str) -> Vec<Pid> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.local.get(group).cloned().unwrap_or_default()
    }

    /// The groups with at least one member, sorted.
    pub fn which_groups(&self) -> Vec<String> {
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        let mut g: Vec<String> = v.all.keys().cloned().collect();
        g.sort();
        g
    }

    /// Makes `watcher` receive a [`PgEvent`] for every change of `group`
    /// from now on, in order; gives the members now.
    pub async fn monitor(&self, group: &str, watcher: Pid) -> Result<Vec<Pid>, PgError> {
        self.call(MonitorGroup {
            group: group.to_string(),
            watcher,
        })
        .await
    }
}
