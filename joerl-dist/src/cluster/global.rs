//! Global names, as Erlang's `global`: a name that means one process in the
//! whole cluster. Each node runs one server, registered as [`GLOBAL_SERVER`];
//! every server keeps the whole table (name → process), so a lookup is a
//! read of local memory.
//!
//! - **Registering** takes the name's lock on every connected global server
//!   (Erlang's `global:set_lock`): the registering server sends `Claim` to
//!   every peer; each grants it unless the name is taken (the answer names
//!   the holder) or another claim holds the lock (the claimant releases what
//!   it got and tries again after a random pause, so two claims for one
//!   name cannot both win). With every grant, the name is committed and
//!   `Registered` goes to every peer.
//! - A name **disappears** everywhere when its process exits (its node's
//!   server monitors it and tells every peer) or when its node's server is
//!   gone (node down, or left the cluster).
//! - On **node-up**, servers exchange the names their own processes hold
//!   (`Discover`, `Names`). A name two sides registered while apart (a
//!   partition, or a node that was not connected) is a **conflict**: the
//!   registration made first wins (its registering node's clock, then the
//!   smaller node name, then the smaller Pid: every node decides alike), and
//!   the [`ConflictResolver`] deals with the loser on the loser's own node.
//!
//! Only a node's own processes are registered by it (as [`pg`](super::pg)):
//! register a process from its node. Unregistering works from any node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use joerl_core::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_core::{
    ActorContext, ActorSystem, Dest, DownMessage, ExitReason, Message, MonitorRef, Pid, SendError,
    SpawnOptions,
};
use serde::{Deserialize, Serialize};

use crate::DistributedSystem;

/// The registered name of the global server on every node.
pub const GLOBAL_SERVER: &str = "joerl_global";

/// The reason a losing process exits with under
/// [`ConflictResolver::ExitLoser`]: `global_name_conflict: NAME`.
pub fn conflict_exit_reason(name: &str) -> ExitReason {
    ExitReason::custom(format!("global_name_conflict: {name}"))
}

/// One global name and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The name.
    pub name: String,
    /// The process holding it.
    pub pid: Pid,
    /// The node the process runs on (the one that registered it).
    pub node: String,
    /// When it was registered, by that node's clock (ms since the Unix
    /// epoch): the older registration wins a conflict.
    pub registered_at_ms: u64,
}

impl Registration {
    /// The deterministic order of a conflict: the smaller one wins.
    fn rank(&self) -> (u64, &str, Pid) {
        (self.registered_at_ms, self.node.as_str(), self.pid)
    }
}

/// Two registrations of one name met (after a partition healed, or when a
/// node that was apart connected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameConflict {
    /// The name.
    pub name: String,
    /// The registration that keeps the name (under
    /// [`ConflictResolver::NotifyAll`], neither does).
    pub winner: Registration,
    /// The registration that lost it.
    pub loser: Registration,
}

/// The message a process receives when it lost (or, under
/// [`ConflictResolver::NotifyAll`], shared) a global name in a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalNameConflict {
    /// The name.
    pub name: String,
    /// The other process that held it.
    pub other: Pid,
}
crate::remote_message!(GlobalNameConflict, "joerl::global::GlobalNameConflict");

/// A user's conflict resolver (see [`ConflictResolver::Custom`]).
pub type ResolveFn = Arc<dyn Fn(&NameConflict, &ActorSystem) + Send + Sync>;

/// What happens to the registrations of a conflict. Every node must use
/// the same one.
#[derive(Clone, Default)]
pub enum ConflictResolver {
    /// The winner keeps the name; the loser exits with
    /// [`conflict_exit_reason`] (Erlang's `random_exit_name`, with the loser
    /// chosen by the documented rule instead of at random).
    #[default]
    ExitLoser,
    /// The name is unregistered on both sides; both processes receive a
    /// [`GlobalNameConflict`] naming the other (Erlang's `notify_all_name`).
    NotifyAll,
    /// The winner keeps the name; this function runs on the loser's node
    /// with the conflict (it may message or stop the loser). It must not
    /// block.
    Custom(ResolveFn),
}

impl std::fmt::Debug for ConflictResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictResolver::ExitLoser => "ExitLoser",
            ConflictResolver::NotifyAll => "NotifyAll",
            ConflictResolver::Custom(_) => "Custom(..)",
        })
    }
}

/// How a node's global server behaves.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    /// What a conflict does to its loser.
    pub resolver: ConflictResolver,
    /// How long a registration may wait for the name's lock before it
    /// fails with [`GlobalError::Busy`] (default 5 s).
    pub lock_timeout: Duration,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            resolver: ConflictResolver::default(),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a global name operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GlobalError {
    /// The name is held by another process.
    #[error("the global name {name:?} is taken by {holder} on {node}")]
    Taken {
        /// The name.
        name: String,
        /// Who holds it.
        holder: Pid,
        /// Its node.
        node: String,
    },
    /// Only a node's own processes are registered by it: register the
    /// process from its own node.
    #[error("{0} is not a process of this node; register it from its own node")]
    NotLocal(Pid),
    /// No process is registered under the name.
    #[error("no process is registered globally as {0:?}")]
    NotRegistered(String),
    /// The name's lock stayed held by other claims for the whole lock
    /// timeout: another registration of the same name is under way; try
    /// again.
    #[error("the global name {0:?} stayed locked by other registrations; try again")]
    Busy(String),
    /// Peer servers did not answer the claim within the lock timeout (they
    /// are overloaded, or their node is about to be reported down); nothing
    /// was registered.
    #[error("the global servers of {nodes:?} did not answer the claim for {name:?}")]
    NoAnswer {
        /// The name.
        name: String,
        /// The nodes that did not answer.
        nodes: Vec<String>,
    },
    /// The process to register is not alive.
    #[error("{0} is not alive")]
    NoProc(Pid),
    /// The global server did not answer (it is not started on this node or
    /// on the name's node, or the node is shutting down).
    #[error("the global server did not answer: {0}")]
    Server(String),
}

/// Every name this node knows, shared between the server and readers.
#[derive(Debug, Default)]
pub(crate) struct Table {
    names: HashMap<String, Registration>,
}

impl Table {
    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        self.names.get(name).map(|r| r.pid)
    }
}

/// Who holds a name's lock: a claim of one node incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Ticket {
    node: String,
    creation: u32,
    seq: u64,
}

// Between the global servers.

/// Asks a peer server for its own registrations.
#[derive(Debug, Serialize, Deserialize)]
struct Discover {
    from: Pid,
    node: String,
}
crate::remote_message!(Discover, "joerl::global::Discover");

/// A server's own registrations, in answer to `Discover`.
#[derive(Debug, Serialize, Deserialize)]
struct Names {
    from: Pid,
    node: String,
    names: Vec<Registration>,
}
crate::remote_message!(Names, "joerl::global::Names");

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    from: Pid,
    ticket: Ticket,
    /// The claim's round: answers to an earlier one are not counted.
    round: u32,
    name: String,
}
crate::remote_message!(Claim, "joerl::global::Claim");

#[derive(Debug, Serialize, Deserialize)]
enum ClaimAnswer {
    Granted,
    Taken(Registration),
    Busy,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClaimReply {
    from: Pid,
    ticket: Ticket,
    round: u32,
    answer: ClaimAnswer,
}
crate::remote_message!(ClaimReply, "joerl::global::ClaimReply");

#[derive(Debug, Serialize, Deserialize)]
struct Release {
    ticket: Ticket,
    name: String,
}
crate::remote_message!(Release, "joerl::global::Release");

#[derive(Debug, Serialize, Deserialize)]
struct Registered {
    from: Pid,
    ticket: Ticket,
    reg: Registration,
}
crate::remote_message!(Registered, "joerl::global::Registered");

#[derive(Debug, Serialize, Deserialize)]
struct Unregistered {
    from: Pid,
    name: String,
    pid: Pid,
}
crate::remote_message!(Unregistered, "joerl::global::Unregistered");

/// A claim's next round (local only).
struct Retry(u64);
/// A claim's deadline (local only).
struct GiveUp(u64);

// Calls from users.

/// Registers a local process under a global name.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterName {
    /// The name.
    pub name: String,
    /// The process (of this node).
    pub pid: Pid,
}
impl Request for RegisterName {
    type Reply = Result<(), GlobalError>;
}

/// Unregisters a global name held by a process of this node.
#[derive(Debug, Serialize, Deserialize)]
pub struct UnregisterName {
    /// The name.
    pub name: String,
}
impl Request for UnregisterName {
    type Reply = Result<(), GlobalError>;
}

/// A registration under way.
struct Pending {
    name: String,
    pid: Pid,
    /// Peers whose grant is still missing.
    waiting: HashSet<Pid>,
    /// Peers asked in this round (released on abort).
    asked: Vec<Pid>,
    reply: Option<ReplyTo<Result<(), GlobalError>>>,
    round: u32,
}

/// The global server of one node.
pub struct GlobalServer {
    node: String,
    options: GlobalOptions,
    table: Arc<RwLock<Table>>,
    /// Local processes holding names: their monitor and names.
    holders: HashMap<Pid, (MonitorRef, Vec<String>)>,
    /// Peer global servers: their monitor and node name.
    peers: HashMap<Pid, (MonitorRef, String)>,
    /// Name locks: who holds each.
    locks: HashMap<String, Ticket>,
    pending: HashMap<u64, Pending>,
    next_seq: u64,
    /// This incarnation's creation (in its tickets).
    creation: u32,
    /// Nodes that came up whose server has not answered yet, and since
    /// when: claims wait for them (at most [`DISCOVER_WAIT`]), so two nodes
    /// that just met do not both register one name alone.
    discovering: HashMap<String, std::time::Instant>,
}

/// The longest a claim waits for a node that came up to be discovered.
const DISCOVER_WAIT: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl GlobalServer {
    fn table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn ticket(&self, seq: u64) -> Ticket {
        Ticket {
            node: self.node.clone(),
            creation: self.creation,
            seq,
        }
    }

    /// A peer server is known from now on: claims under way ask it too.
    async fn add_peer(&mut self, ctx: &ActorContext, peer: Pid, node: String) -> bool {
        let Ok(m) = ctx.monitor(peer) else {
            return false;
        };
        self.discovering.remove(&node);
        self.peers.insert(peer, (m, node));
        let from = ctx.pid();
        let open: Vec<(u64, u32, String)> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.asked.is_empty())
            .map(|(s, p)| {
                p.asked.push(peer);
                p.waiting.insert(peer);
                (*s, p.round, p.name.clone())
            })
            .collect();
        for (seq, round, name) in open {
            let ticket = self.ticket(seq);
            let _ = ctx
                .send(
                    peer,
                    Claim {
                        from,
                        ticket,
                        round,
                        name,
                    },
                )
                .await;
        }
        true
    }

    async fn to_peers(&self, ctx: &ActorContext, msg: impl Fn() -> Message) {
        for peer in self.peers.keys() {
            let _ = ctx.send(*peer, msg()).await;
        }
    }

    async fn discover(&mut self, ctx: &ActorContext, node: &str) {
        if !self.peers.values().any(|(_, n)| n == node) {
            self.discovering
                .entry(node.to_string())
                .or_insert_with(std::time::Instant::now);
        }
        let (from, me) = (ctx.pid(), self.node.clone());
        let _ = ctx
            .send((GLOBAL_SERVER, node), Discover { from, node: me })
            .await;
    }

    fn own_names(&self) -> Vec<Registration> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.names
            .values()
            .filter(|r| r.node == self.node)
            .cloned()
            .collect()
    }

    /// Adds a peer's registration, resolving a conflict with what is there.
    async fn learn(&mut self, ctx: &mut ActorContext, reg: Registration) {
        let existing = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            t.names.get(&reg.name).cloned()
        };
        match existing {
            None => {
                self.table().names.insert(reg.name.clone(), reg);
            }
            Some(e) if e.pid == reg.pid => {}
            // A node is the authority on its own names.
            Some(e) if e.node == reg.node => {
                self.table().names.insert(reg.name.clone(), reg);
            }
            Some(e) => self.conflict(ctx, e, reg).await,
        }
    }

    /// Two registrations of one name: the documented rule picks the winner,
    /// the resolver deals with the loser on its node.
    async fn conflict(&mut self, ctx: &mut ActorContext, a: Registration, b: Registration) {
        let (winner, loser) = if a.rank() <= b.rank() { (a, b) } else { (b, a) };
        let name = winner.name.clone();
        tracing::warn!(
            %name, winner = %winner.pid, loser = %loser.pid,
            resolver = ?self.options.resolver, "global: name conflict"
        );
        let notify_all = matches!(self.options.resolver, ConflictResolver::NotifyAll);
        if notify_all {
            self.table().names.remove(&name);
        } else {
            self.table().names.insert(name.clone(), winner.clone());
        }
        let conflict = NameConflict {
            name: name.clone(),
            winner: winner.clone(),
            loser: loser.clone(),
        };
        let mut local = Vec::new();
        if loser.node == self.node {
            local.push((loser.pid, winner.pid));
        }
        if notify_all && winner.node == self.node {
            local.push((winner.pid, loser.pid));
        }
        for (pid, other) in local {
            self.drop_holder(ctx, pid, &name);
            let (n, p) = (name.clone(), pid);
            let from = ctx.pid();
            self.to_peers(ctx, || {
                Box::new(Unregistered {
                    from,
                    name: n.clone(),
                    pid: p,
                })
            })
            .await;
            match &self.options.resolver {
                ConflictResolver::ExitLoser => {
                    let _ = ctx.exit(pid, conflict_exit_reason(&name));
                }
                ConflictResolver::NotifyAll => {
                    let _ = ctx
                        .send(
                            pid,
                            GlobalNameConflict {
                                name: name.clone(),
                                other,
                            },
                        )
                        .await;
                }
                ConflictResolver::Custom(f) => f(&conflict, ctx.system()),
            }
        }
    }

    /// A local holder no longer holds `name`; unwatched when it holds none.
    fn drop_holder(&mut self, ctx: &ActorContext, pid: Pid, name: &str) {
        if let Some((m, names)) = self.holders.get_mut(&pid) {
            names.retain(|n| n != name);
            if names.is_empty() {
                let m = *m;
                self.holders.remove(&pid);
                ctx.demonitor(m);
            }
        }
    }

    /// Starts (or restarts) a round of claims for `seq`.
    async fn claim_round(&mut self, ctx: &mut ActorContext, seq: u64) {
        let Some(p) = self.pending.get(&seq) else {
            return;
        };
        let name = p.name.clone();
        // Taken meanwhile (learned from a peer)?
        let held = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            t.names.get(&name).cloned()
        };
        if let Some(reg) = held {
            let result = if reg.pid == p.pid {
                Ok(())
            } else {
                Err(taken(&reg))
            };
            self.finish(ctx, seq, result);
            return;
        }
        self.discovering
            .retain(|_, since| since.elapsed() < DISCOVER_WAIT);
        if !self.discovering.is_empty()
            || self
                .locks
                .get(&name)
                .is_some_and(|t| *t != self.ticket(seq))
        {
            self.retry_later(ctx, seq);
            return;
        }
        self.locks.insert(name.clone(), self.ticket(seq));
        let peers: Vec<Pid> = self.peers.keys().copied().collect();
        let from = ctx.pid();
        let ticket = self.ticket(seq);
        let mut round = 0;
        if let Some(p) = self.pending.get_mut(&seq) {
            p.waiting = peers.iter().copied().collect();
            p.asked = peers.clone();
            round = p.round;
        }
        for peer in &peers {
            let _ = ctx
                .send(
                    *peer,
                    Claim {
                        from,
                        ticket: ticket.clone(),
                        round,
                        name: name.clone(),
                    },
                )
                .await;
        }
        self.maybe_commit(ctx, seq).await;
    }

    fn retry_later(&mut self, ctx: &ActorContext, seq: u64) {
        let Some(p) = self.pending.get_mut(&seq) else {
            return;
        };
        p.round += 1;
        // A random pause that grows, so two claimants stop meeting.
        let cap = 2u64.saturating_pow(p.round.min(6)).min(64);
        let pause = rand::random_range(1..=cap.max(2));
        ctx.send_after(ctx.pid(), Retry(seq), Duration::from_millis(pause));
    }

    /// Gives up this round: the locks taken are released.
    async fn abort_round(&mut self, ctx: &ActorContext, seq: u64) {
        let Some(p) = self.pending.get_mut(&seq) else {
            return;
        };
        let asked = std::mem::take(&mut p.asked);
        p.waiting.clear();
        let name = p.name.clone();
        let ticket = self.ticket(seq);
        if self.locks.get(&name) == Some(&ticket) {
            self.locks.remove(&name);
        }
        for peer in asked {
            let _ = ctx
                .send(
                    peer,
                    Release {
                        ticket: ticket.clone(),
                        name: name.clone(),
                    },
                )
                .await;
        }
    }

    async fn maybe_commit(&mut self, ctx: &mut ActorContext, seq: u64) {
        let Some(p) = self.pending.get(&seq) else {
            return;
        };
        if !p.waiting.is_empty() {
            return;
        }
        let reg = Registration {
            name: p.name.clone(),
            pid: p.pid,
            node: self.node.clone(),
            registered_at_ms: now_ms(),
        };
        let ticket = self.ticket(seq);
        if !ctx.system().is_alive(reg.pid) {
            // It exited during the claim: its name would only be removed again.
            self.abort_round(ctx, seq).await;
            self.finish(ctx, seq, Err(GlobalError::NoProc(reg.pid)));
            return;
        }
        // A holder learned during the round (a merge) keeps the name.
        let held = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            t.names.get(&reg.name).cloned()
        };
        if let Some(h) = held.filter(|h| h.pid != reg.pid) {
            self.abort_round(ctx, seq).await;
            self.finish(ctx, seq, Err(taken(&h)));
            return;
        }
        self.locks.remove(&reg.name);
        match self.holders.get_mut(&reg.pid) {
            Some((_, names)) => names.push(reg.name.clone()),
            None => {
                if let Ok(m) = ctx.monitor(reg.pid) {
                    self.holders.insert(reg.pid, (m, vec![reg.name.clone()]));
                }
            }
        }
        self.table().names.insert(reg.name.clone(), reg.clone());
        let from = ctx.pid();
        self.to_peers(ctx, || {
            Box::new(Registered {
                from,
                ticket: ticket.clone(),
                reg: reg.clone(),
            })
        })
        .await;
        self.finish(ctx, seq, Ok(()));
    }

    fn finish(&mut self, ctx: &ActorContext, seq: u64, result: Result<(), GlobalError>) {
        if let Some(mut p) = self.pending.remove(&seq) {
            if self.locks.get(&p.name) == Some(&self.ticket(seq)) {
                self.locks.remove(&p.name);
            }
            if let Some(r) = p.reply.take() {
                r.reply(ctx.system(), result);
            }
        }
    }

    /// A peer server is gone: its incarnation's names and locks, and its
    /// part in claims (a newer incarnation of its node keeps its own).
    async fn peer_gone(&mut self, ctx: &mut ActorContext, peer: Pid, node: String) {
        let creation = peer.creation();
        self.table()
            .names
            .retain(|_, r| !(r.node == node && r.pid.creation() == creation));
        self.locks
            .retain(|_, t| !(t.node == node && t.creation == creation));
        let seqs: Vec<u64> = self
            .pending
            .iter_mut()
            .filter_map(|(s, p)| p.waiting.remove(&peer).then_some(*s))
            .collect();
        for s in seqs {
            self.maybe_commit(ctx, s).await;
        }
    }
}

fn taken(reg: &Registration) -> GlobalError {
    GlobalError::Taken {
        name: reg.name.clone(),
        holder: reg.pid,
        node: reg.node.clone(),
    }
}

impl GenServer for GlobalServer {
    type Calls = (RegisterName, UnregisterName);
    type Casts = ();

    async fn init(&mut self, ctx: &mut ActorContext) {
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
                let new = !self.peers.contains_key(&d.from);
                if new && !self.add_peer(ctx, d.from, d.node).await {
                    return;
                }
                let me = ctx.pid();
                let names = self.own_names();
                let node = self.node.clone();
                let _ = ctx.send(d.from, Names { from: me, node: node.clone(), names }).await;
                if new {
                    let _ = ctx.send(d.from, Discover { from: me, node }).await;
                }
            },
            Names as s => {
                if !self.peers.contains_key(&s.from) && !self.add_peer(ctx, s.from, s.node.clone()).await {
                    return;
                }
                // The peer's names in place of what it had.
                let keep: HashSet<&str> = s.names.iter().map(|r| r.name.as_str()).collect();
                self.table()
                    .names
                    .retain(|n, r| r.node != s.node || keep.contains(n.as_str()));
                for reg in s.names {
                    // A peer speaks for its own node's processes only.
                    if reg.node == s.node && reg.pid.node() == s.from.node() {
                        self.learn(ctx, reg).await;
                    }
                }
            },
            Claim as c => {
                let held = {
                    let t = self.table.read().unwrap_or_else(|e| e.into_inner());
                    t.names.get(&c.name).cloned()
                };
                let answer = match (held, self.locks.get(&c.name)) {
                    (Some(reg), _) => ClaimAnswer::Taken(reg),
                    // A lock goes only to a peer whose end would release it.
                    _ if !self.peers.contains_key(&c.from) => ClaimAnswer::Busy,
                    (None, Some(t)) if *t != c.ticket => ClaimAnswer::Busy,
                    _ => {
                        self.locks.insert(c.name.clone(), c.ticket.clone());
                        ClaimAnswer::Granted
                    }
                };
                let from = ctx.pid();
                let reply = ClaimReply { from, ticket: c.ticket, round: c.round, answer };
                let _ = ctx.send(c.from, reply).await;
            },
            ClaimReply as r => {
                if r.ticket != self.ticket(r.ticket.seq) {
                    return;
                }
                let seq = r.ticket.seq;
                let Some(p) = self.pending.get_mut(&seq) else { return };
                if r.round != p.round || !p.waiting.remove(&r.from) {
                    return;
                }
                match r.answer {
                    ClaimAnswer::Granted => self.maybe_commit(ctx, seq).await,
                    ClaimAnswer::Taken(reg) => {
                        self.abort_round(ctx, seq).await;
                        let result = if reg.pid == self.pending[&seq].pid { Ok(()) } else { Err(taken(&reg)) };
                        self.finish(ctx, seq, result);
                    }
                    ClaimAnswer::Busy => {
                        self.abort_round(ctx, seq).await;
                        self.retry_later(ctx, seq);
                    }
                }
            },
            Release as r => {
                if self.locks.get(&r.name) == Some(&r.ticket) {
                    self.locks.remove(&r.name);
                }
            },
            Registered as r => {
                if self.locks.get(&r.reg.name) == Some(&r.ticket) {
                    self.locks.remove(&r.reg.name);
                }
                let Some((_, node)) = self.peers.get(&r.from) else { return };
                if r.reg.node == *node && r.reg.pid.node() == r.from.node() {
                    self.learn(ctx, r.reg).await;
                }
            },
            Unregistered as u => {
                let Some((_, node)) = self.peers.get(&u.from) else { return };
                let node = node.clone();
                let mut t = self.table();
                if t.names.get(&u.name).is_some_and(|r| r.pid == u.pid && r.node == node) {
                    t.names.remove(&u.name);
                }
            },
            Retry as r => self.claim_round(ctx, r.0).await,
            GiveUp as g => {
                if let Some(p) = self.pending.get(&g.0) {
                    let name = p.name.clone();
                    let mut silent: Vec<String> = p
                        .waiting
                        .iter()
                        .filter_map(|w| self.peers.get(w).map(|(_, n)| n.clone()))
                        .collect();
                    silent.sort();
                    let error = if silent.is_empty() {
                        GlobalError::Busy(name)
                    } else {
                        GlobalError::NoAnswer { name, nodes: silent }
                    };
                    self.abort_round(ctx, g.0).await;
                    self.finish(ctx, g.0, Err(error));
                }
            },
            DownMessage as down => {
                if let Some((_, node)) = self.peers.remove(&down.pid) {
                    self.peer_gone(ctx, down.pid, node).await;
                } else if let Some((_, names)) = self.holders.remove(&down.pid) {
                    let from = ctx.pid();
                    for name in names {
                        {
                            let mut t = self.table();
                            if t.names.get(&name).is_some_and(|r| r.pid == down.pid) {
                                t.names.remove(&name);
                            }
                        }
                        let (n, p) = (name.clone(), down.pid);
                        self.to_peers(ctx, || Box::new(Unregistered { from, name: n.clone(), pid: p })).await;
                    }
                }
            },
            else _other => {},
        })
    }
}

impl HandleCall<RegisterName> for GlobalServer {
    async fn handle_call(
        &mut self,
        req: RegisterName,
        from: ReplyTo<Result<(), GlobalError>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Result<(), GlobalError>> {
        if req.pid.node() != ctx.pid().node() {
            return CallResponse::Reply(Err(GlobalError::NotLocal(req.pid)));
        }
        if !ctx.system().is_alive(req.pid) {
            return CallResponse::Reply(Err(GlobalError::NoProc(req.pid)));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Pending {
                name: req.name,
                pid: req.pid,
                waiting: HashSet::new(),
                asked: Vec::new(),
                reply: Some(from),
                round: 0,
            },
        );
        ctx.send_after(ctx.pid(), GiveUp(seq), self.options.lock_timeout);
        self.claim_round(ctx, seq).await;
        CallResponse::NoReply
    }
}

impl HandleCall<UnregisterName> for GlobalServer {
    async fn handle_call(
        &mut self,
        req: UnregisterName,
        _from: ReplyTo<Result<(), GlobalError>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Result<(), GlobalError>> {
        let held = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            t.names.get(&req.name).cloned()
        };
        let Some(reg) = held.filter(|r| r.node == self.node) else {
            return CallResponse::Reply(Err(GlobalError::NotRegistered(req.name)));
        };
        self.table().names.remove(&req.name);
        self.drop_holder(ctx, reg.pid, &req.name);
        let from = ctx.pid();
        self.to_peers(ctx, || {
            Box::new(Unregistered {
                from,
                name: reg.name.clone(),
                pid: reg.pid,
            })
        })
        .await;
        CallResponse::Reply(Ok(()))
    }
}

crate::remote_server!(GlobalServer);

/// The handle to this node's global server and its table. Cheap to clone.
#[derive(Clone)]
pub struct Global {
    server: ServerRef<GlobalServer>,
    table: Arc<RwLock<Table>>,
    system: ActorSystem,
    /// A registration's limit: the lock timeout and a margin.
    call_timeout: Duration,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Global")
            .field("server", &self.server)
            .finish()
    }
}

/// Starts the global server on `node` (registered as [`GLOBAL_SERVER`]);
/// every node that uses global names starts it, with the same resolver,
/// after enabling clustering if it does (the server then finds every
/// member, not only the nodes connected).
/// From then on [`Dest::Global`] addresses work on this node.
pub fn start(node: &DistributedSystem, options: GlobalOptions) -> Result<Global, StartGlobalError> {
    let table = Arc::new(RwLock::new(Table::default()));
    let call_timeout = options.lock_timeout + Duration::from_secs(5);
    let server = GlobalServer {
        node: node.name().to_string(),
        options,
        table: table.clone(),
        holders: HashMap::new(),
        peers: HashMap::new(),
        locks: HashMap::new(),
        pending: HashMap::new(),
        next_seq: 0,
        creation: node.creation(),
        discovering: HashMap::new(),
    };
    let server = joerl_core::gen_server::spawn_server_with(
        node,
        server,
        SpawnOptions::new().name(GLOBAL_SERVER),
    )
    .map_err(|e| match e {
        joerl_core::SpawnError::NameTaken(_) => StartGlobalError::AlreadyStarted,
        other => StartGlobalError::Spawn(other),
    })?;
    // Only a server that runs answers for `Dest::Global` (a restarted one
    // replaces the table of the one before).
    super::names::ClusterNames::of(node).set_global(table.clone());
    // With membership, every member that comes up is discovered (connected
    // to at the first message), not only nodes already connected.
    super::watch_members(node, server.pid());
    // The node keeps the parts, not a `Global`: that holds a handle to the
    // node, and the node must not hold itself alive.
    let parts = node.extension::<GlobalSlot>().unwrap_or_else(|| {
        let slot = Arc::new(GlobalSlot::default());
        match node.set_extension(slot.clone()) {
            Ok(()) => slot,
            Err(_) => node.extension::<GlobalSlot>().expect("set"),
        }
    });
    *parts.0.write().unwrap_or_else(|e| e.into_inner()) = Some(GlobalParts {
        server: server.clone(),
        table: table.clone(),
        call_timeout,
    });
    Ok(Global {
        server,
        table,
        system: (**node).clone(),
        call_timeout,
    })
}

/// What the node keeps of its global server, for [`get`].
#[derive(Clone)]
struct GlobalParts {
    server: ServerRef<GlobalServer>,
    table: Arc<RwLock<Table>>,
    call_timeout: Duration,
}

/// The node's global server, replaced when it is started again.
#[derive(Default)]
struct GlobalSlot(RwLock<Option<GlobalParts>>);

/// Why the global server did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartGlobalError {
    /// It runs on this node already (its name is taken): use [`get`].
    #[error("the global server already runs on this node")]
    AlreadyStarted,
    /// Its name was taken on this node.
    #[error("cannot start the global server: {0}")]
    Spawn(joerl_core::SpawnError),
}

/// The global server started on `node`, if any.
pub fn get(node: &DistributedSystem) -> Option<Global> {
    let slot = node.extension::<GlobalSlot>()?;
    let parts = slot.0.read().unwrap_or_else(|e| e.into_inner()).clone()?;
    Some(Global {
        server: parts.server,
        table: parts.table,
        system: (**node).clone(),
        call_timeout: parts.call_timeout,
    })
}

impl Global {
    /// Registers this node's process `pid` as `name` in the whole cluster:
    /// fails with [`GlobalError::Taken`] (naming the holder) if another
    /// process holds it. Registering a process under a name it holds is a
    /// success.
    pub async fn register(&self, name: &str, pid: Pid) -> Result<(), GlobalError> {
        self.system
            .call_timeout(
                &self.server,
                RegisterName {
                    name: name.to_string(),
                    pid,
                },
                self.call_timeout,
            )
            .await
            .map_err(|e| GlobalError::Server(e.to_string()))?
    }

    /// Unregisters `name`, from any node (the name's own node does it).
    pub async fn unregister(&self, name: &str) -> Result<(), GlobalError> {
        let node = {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            t.names.get(name).map(|r| r.node.clone())
        };
        let Some(node) = node else {
            return Err(GlobalError::NotRegistered(name.to_string()));
        };
        let server = if Some(node.as_str()) == self.system.node_name() {
            self.server.clone()
        } else {
            ServerRef::new((GLOBAL_SERVER, node))
        };
        self.system
            .call(
                &server,
                UnregisterName {
                    name: name.to_string(),
                },
            )
            .await
            .map_err(|e| GlobalError::Server(e.to_string()))?
    }

    /// The process registered as `name`, as this node knows it now.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.whereis(name)
    }

    /// Every registration this node knows, sorted by name.
    pub fn registered(&self) -> Vec<Registration> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Registration> = t.names.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Sends `msg` to the process registered as `name` (the same as sending
    /// to [`Dest::Global`]).
    pub async fn send(&self, name: &str, msg: impl std::any::Any + Send) -> Result<(), SendError> {
        self.system.send(Dest::global(name), msg).await
    }
}
