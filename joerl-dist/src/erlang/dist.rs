//! The node's Erlang side: its Erlang peers, which dialect a node speaks,
//! and the I/O of Erlang connections (dial, accept, reader, writer, ticks).
//!
//! An Erlang connection is plain TCP. The reader reads 4-byte framed
//! messages (each at most `max_frame_size`), hands them to its
//! [`wire::Reader`] and delivers what they ask; the writer writes what waits
//! in the peer's buffer in one write, and a tick (an empty frame) when it
//! wrote nothing for a quarter of the tick time. A peer silent for the
//! whole tick time (Erlang's `net_ticktime`, 60 s by default) is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use joerl_core::fxhash::FxBuildHasher;
use joerl_core::{MonitorRef, Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::handshake::{self, Action, ErlHandshakeError, ErlPeerInfo, Handshake, Status};
use super::peer::{ConnState, ErlPeer, Inbound, Local, Target};
use super::term::Atom;
use super::wire;
use crate::error::DistError;
use crate::events::{NodeDownReason, NodeEvent};
use crate::node::NodeInner;

/// The marker in the `extra` field of a joerl node's EPMD registration: a
/// node whose entry starts with it speaks joerl's dialect, any other node
/// Erlang's.
pub const JOERL_EPMD_MARK: &[u8] = b"joerl";

/// Which protocol a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// joerl's own.
    Joerl,
    /// Erlang's distribution protocol.
    Erlang,
}

/// Node names learned from pids, at most.
const MAX_LEARNED_NAMES: usize = 10_000;

/// Log lines about refused or failed Erlang connections, per second.
static ERL_LOG: joerl_epmd::log_limit::LogLimiter = joerl_epmd::log_limit::LogLimiter::new(5);

/// How an Erlang connection may be installed.
pub(crate) enum Admit {
    /// This node dialed it.
    Dialed,
    /// Accepted for a peer this node did not know yet.
    Fresh,
    /// Accepted while the peer was idle or dialing (marked pending with this id).
    Pending { peer: Arc<ErlPeer>, id: u64 },
    /// Accepted after `alive`: replaces connection `0` (the dialer said its
    /// old one is dead).
    Replace(u64),
}

/// Counters of the Erlang side.
#[derive(Default, Debug)]
pub(crate) struct SideCounters {
    /// Incoming Erlang handshakes refused (bad cookie, malformed, flags).
    pub(crate) refused: AtomicU64,
    /// Connections closed for a malformed frame.
    pub(crate) malformed: AtomicU64,
}

/// The Erlang peers of one node.
pub(crate) struct ErlangSide {
    /// This node's name as an atom (`None`: the name is too long for one,
    /// and Erlang nodes cannot talk to it).
    pub(crate) me: Option<Atom>,
    pub(crate) peers: DashMap<u32, Arc<ErlPeer>, FxBuildHasher>,
    dialects: DashMap<String, Dialect>,
    /// Names EPMD did not know when asked, and when: not asked again for a
    /// second (a joerl node that is down would otherwise cost a look-up per send).
    unknown: DashMap<String, std::time::Instant>,
    /// Names of nodes seen in pids, by node id.
    names: DashMap<u32, Atom, FxBuildHasher>,
    next_conn: AtomicU64,
    next_ref: AtomicU64,
    pub(crate) counters: SideCounters,
}

impl ErlangSide {
    /// The Erlang side of the node named `name`.
    pub(crate) fn new(name: &str) -> Self {
        ErlangSide {
            me: Atom::new(name).ok(),
            peers: DashMap::default(),
            dialects: DashMap::new(),
            unknown: DashMap::new(),
            names: DashMap::default(),
            next_conn: AtomicU64::new(1),
            // Monitor references made here for Erlang's monitors: the top
            // bit keeps them apart from those the actor system makes.
            next_ref: AtomicU64::new(1 << 63),
            counters: SideCounters::default(),
        }
    }

    /// The Erlang peer with node id `id`, if one is known.
    pub(crate) fn peer(&self, id: u32) -> Option<Arc<ErlPeer>> {
        self.peers.get(&id).map(|p| p.clone())
    }

    /// The dialect a node was found to speak, if asked before.
    pub(crate) fn known_dialect(&self, name: &str) -> Option<Dialect> {
        self.dialects.get(name).map(|d| *d)
    }

    /// Records a node name seen in a pid or a connection.
    pub(crate) fn learn_name(&self, atom: &Atom) {
        let id = joerl_core::node_id(atom.as_str());
        // Bounded: names seen in pids beyond it are not learned (their
        // nodes cannot be reached by pid until one is connected by name).
        if !self.names.contains_key(&id) && self.names.len() < MAX_LEARNED_NAMES {
            self.names.insert(id, atom.clone());
        }
    }

    /// The name of a node seen in a pid, by its id.
    pub(crate) fn seen_name(&self, id: u32) -> Option<Atom> {
        self.names.get(&id).map(|a| a.clone())
    }

    /// Records the node of every pid in `term` (so a pid of a third node
    /// that came from an Erlang node can be reached).
    fn learn_pids(&self, term: &crate::erlang::Term) {
        use crate::erlang::Term;
        let mut stack = vec![term];
        while let Some(t) = stack.pop() {
            match t {
                Term::Pid(p) => self.learn_name(&p.node),
                Term::Tuple(items) | Term::List(items) => stack.extend(items.iter()),
                Term::ImproperList(items, tail) => {
                    stack.extend(items.iter());
                    stack.push(tail);
                }
                Term::Map(pairs) => {
                    for (k, v) in pairs {
                        stack.push(k);
                        stack.push(v);
                    }
                }
                _ => {}
            }
        }
    }

    fn new_ref(&self) -> MonitorRef {
        MonitorRef(self.next_ref.fetch_add(1, Ordering::Relaxed))
    }

    /// The Erlang peer named `name`, created (idle) if new.
    pub(crate) fn peer_for(&self, node: &NodeInner, name: &str) -> Result<Arc<ErlPeer>, DistError> {
        let id = joerl_core::node_id(name);
        if let Some(p) = self.peers.get(&id) {
            if p.name == name {
                return Ok(p.clone());
            }
            return Err(DistError::Connect {
                node: name.to_string(),
                reason: format!("its node id collides with {}'s", p.name),
            });
        }
        let atom =
            Atom::new(name).map_err(|e| DistError::InvalidNodeName(format!("{name}: {e}")))?;
        self.learn_name(&atom);
        self.dialects.insert(name.to_string(), Dialect::Erlang);
        let peer = self
            .peers
            .entry(id)
            .or_insert_with(|| Arc::new(ErlPeer::new(name, atom, node.config.queue_bytes)))
            .clone();
        Ok(peer)
    }
}

/// The name of the node with id `id`, as an atom: this node, an Erlang
/// peer, a name seen in a pid, or a joerl peer.
fn name_of(node: &NodeInner, id: u32) -> Option<Atom> {
    if let Some(a) = node.erlang.names.get(&id) {
        return Some(a.clone());
    }
    node.node_name(id).and_then(|n| Atom::new(&n).ok())
}

/// Runs `f` with this node as Erlang sees it.
pub(crate) fn with_local<R>(node: &NodeInner, f: impl FnOnce(&Local<'_>) -> R) -> Option<R> {
    let atom = node.erlang.me.as_ref()?;
    let lookup = |id: u32| name_of(node, id);
    let local = Local {
        atom,
        node_id: node.me.node_id,
        creation: node.me.creation,
        name_of: &lookup,
    };
    Some(f(&local))
}

impl NodeInner {
    /// True if [`dialect_of`](Self::dialect_of) would answer without asking
    /// EPMD (a connected joerl peer, or an answer remembered).
    pub(crate) fn dialect_known(&self, name: &str) -> bool {
        self.peers
            .get(&joerl_core::node_id(name))
            .is_some_and(|p| p.name == name && p.is_up())
            || self.erlang.known_dialect(name).is_some()
    }

    /// Which dialect `name` speaks: asked once of EPMD (joerl's daemon says
    /// how the node registered; in either daemon the `extra` mark says
    /// joerl), then remembered. A node EPMD does not know, or an EPMD that
    /// cannot be asked, counts as joerl (whose dial then reports why).
    pub(crate) async fn dialect_of(&self, name: &str) -> Dialect {
        // A joerl peer that is connected decides; one that is only queued
        // (a sync send got there first) does not.
        if self
            .peers
            .get(&joerl_core::node_id(name))
            .is_some_and(|p| p.name == name && p.is_up())
        {
            return Dialect::Joerl;
        }
        if let Some(d) = self.erlang.known_dialect(name) {
            return d;
        }
        let Ok((short, host)) = crate::node::split_node_name(name) else {
            return Dialect::Joerl;
        };
        if self
            .erlang
            .unknown
            .get(name)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Dialect::Joerl;
        }
        let mut daemons = vec![self.epmd.addr()];
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            let theirs = SocketAddr::new(ip, self.peer_epmd_port());
            if theirs != self.epmd.addr() {
                daemons.push(theirs);
            }
        }
        for daemon in daemons {
            let client = joerl_epmd::EpmdClient::new(daemon);
            // joerl's daemon says how the node registered; Erlang's own epmd
            // only what PORT_PLEASE2 returns (the mark in `extra`).
            let found = match client.lookup(short).await {
                Ok(Some(info)) => Some(
                    info.kind == joerl_epmd::NodeKind::Joerl
                        || info.dist.extra.starts_with(JOERL_EPMD_MARK),
                ),
                Ok(None) => None,
                Err(_) => match client.port_please(short).await {
                    Ok(Some(entry)) => Some(entry.dist.extra.starts_with(JOERL_EPMD_MARK)),
                    Ok(None) | Err(_) => None,
                },
            };
            if let Some(joerl) = found {
                let d = if joerl {
                    Dialect::Joerl
                } else {
                    Dialect::Erlang
                };
                self.erlang.dialects.insert(name.to_string(), d);
                return d;
            }
        }
        if self.erlang.unknown.len() > 10_000 {
            self.erlang.unknown.clear();
        }
        self.erlang
            .unknown
            .insert(name.to_string(), std::time::Instant::now());
        Dialect::Joerl
    }

    /// Makes sure `peer` is connected or being dialed.
    pub(crate) fn erl_ensure_dialing(self: &Arc<Self>, peer: &Arc<ErlPeer>) {
        {
            let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
            if *st != ConnState::Idle || self.is_shutting_down() {
                return;
            }
            *st = ConnState::Dialing(self.erlang.next_conn.fetch_add(1, Ordering::Relaxed));
        }
        let ConnState::Dialing(dial) = peer.conn_state() else {
            return;
        };
        let node = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(node.config.connect_timeout, node.erl_dial(&peer)).await;
            let error = match outcome {
                Ok(Ok((stream, info))) => {
                    if node.erl_install(&peer, stream, info, Admit::Dialed) {
                        return;
                    }
                    // Another connection came up meanwhile: it is used.
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => DistError::Timeout(format!(
                    "connect and handshake with {} took longer than {:?}",
                    peer.name, node.config.connect_timeout
                )),
            };
            let simultaneous = matches!(
                error,
                DistError::Handshake {
                    source: crate::HandshakeError::Simultaneous,
                    ..
                }
            );
            if simultaneous {
                // Lost a simultaneous connect: the peer's own dial is coming.
                // Wait for it as for a pending accept; if it does not come
                // within the connect timeout, the node is unreachable.
                let pending = node.erlang.next_conn.fetch_add(1, Ordering::Relaxed);
                if peer.swap_state(ConnState::Dialing(dial), ConnState::Awaiting(pending)) {
                    tokio::time::sleep(node.config.connect_timeout).await;
                    node.erl_fail(
                        &peer,
                        ConnState::Awaiting(pending),
                        "the peer won a simultaneous connect but its own connection never came",
                    );
                }
                return;
            }
            if matches!(
                error,
                DistError::Handshake {
                    source: crate::HandshakeError::AlreadyConnected,
                    ..
                }
            ) {
                // Told `alive` while a connection came up here: that one is used.
                return;
            }
            if let Some(suppressed) = ERL_LOG.check() {
                tracing::warn!(node = %node.me.name, peer = %peer.name, error = %error, suppressed, "cannot connect to the Erlang node");
            }
            node.erl_fail(&peer, ConnState::Dialing(dial), &error.to_string());
        });
    }

    /// A dial or a pending accept of `peer` failed: if its state is still
    /// `expected`, the peer is idle again, what waited for it is dropped and
    /// its links and monitors answer `noconnection`.
    fn erl_fail(&self, peer: &Arc<ErlPeer>, expected: ConnState, why: &str) {
        if !peer.swap_state(expected, ConnState::Idle) {
            return;
        }
        for (to, signal) in peer.lost() {
            self.system.deliver_signal(to, signal);
        }
        self.tell_node_monitors(peer, &NodeDownReason::Unreachable(why.to_string()));
        peer.changed.send_modify(|n| *n += 1);
    }

    /// One dial of an Erlang node: resolve, connect, handshake.
    async fn erl_dial(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
    ) -> Result<(TcpStream, ErlPeerInfo), DistError> {
        let addrs = self.resolve_node(&peer.name).await?;
        let mut last = DistError::UnknownNode(peer.name.clone());
        for addr in addrs {
            let tcp = match TcpStream::connect(addr).await {
                Ok(t) => t,
                Err(source) => {
                    last = DistError::Unreachable {
                        node: peer.name.clone(),
                        addr: addr.to_string(),
                        source: Arc::new(source),
                    };
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let mut tcp = tcp;
            let me = self
                .erlang
                .me
                .clone()
                .ok_or_else(|| DistError::InvalidNodeName(self.me.name.clone()))?;
            let (mut hs, first) = Handshake::dial(
                me.as_str(),
                handshake::offered_flags(self.config.erlang_hidden),
                self.me.creation,
                self.cookie(),
                &peer.name,
                rand::random(),
            );
            let result = async {
                write_packet(&mut tcp, &first).await?;
                loop {
                    let packet = read_packet(&mut tcp).await?;
                    let mut actions = hs.handle(&packet)?;
                    while !actions.is_empty() {
                        let mut next = Vec::new();
                        for action in actions {
                            match action {
                                Action::Send(p) => write_packet(&mut tcp, &p).await?,
                                Action::Done(info) => return Ok::<_, HsIoError>(info),
                                // The acceptor has a connection to this node:
                                // dead if this node has none (then it is
                                // replaced), else this dial is not needed.
                                Action::AskAlive => {
                                    let go_on = !peer.is_up();
                                    next.extend(hs.answer_alive(go_on));
                                    if !go_on {
                                        for a in next.drain(..) {
                                            if let Action::Send(p) = a {
                                                write_packet(&mut tcp, &p).await?;
                                            }
                                        }
                                        return Err(HsIoError::Hs(
                                            ErlHandshakeError::AlreadyConnected,
                                        ));
                                    }
                                }
                                Action::Decide(_) => {}
                            }
                        }
                        actions = next;
                    }
                }
            }
            .await;
            return match result {
                Ok(info) => Ok((tcp, info)),
                Err(e) => Err(DistError::Handshake {
                    node: peer.name.clone(),
                    source: e.into(),
                }),
            };
        }
        Err(last)
    }

    /// Accepts a connection whose first bytes are Erlang's name message.
    pub(crate) async fn erl_accept(self: Arc<Self>, mut tcp: TcpStream, addr: SocketAddr) {
        let Some(me) = self.erlang.me.clone() else {
            return;
        };
        let mut hs = Handshake::accept(
            me.as_str(),
            handshake::offered_flags(self.config.erlang_hidden),
            self.me.creation,
            self.cookie(),
            rand::random(),
        );
        let node = self.clone();
        let mut admit: Option<Admit> = None;
        let result = tokio::time::timeout(self.config.connect_timeout, async {
            loop {
                let packet = read_packet(&mut tcp).await?;
                let mut actions = hs.handle(&packet)?;
                while !actions.is_empty() {
                    let mut next = Vec::new();
                    for action in actions {
                        match action {
                            Action::Send(p) => write_packet(&mut tcp, &p).await?,
                            Action::Done(info) => return Ok::<_, HsIoError>(info),
                            Action::AskAlive => {}
                            Action::Decide(info) => {
                                let (status, how) = node.erl_decide(&info);
                                admit = how;
                                next.extend(hs.decide(status));
                                if matches!(status, Status::Nok | Status::NotAllowed) {
                                    for a in next.drain(..) {
                                        if let Action::Send(p) = a {
                                            write_packet(&mut tcp, &p).await?;
                                        }
                                    }
                                    return Err(HsIoError::Hs(if status == Status::Nok {
                                        ErlHandshakeError::Simultaneous
                                    } else {
                                        ErlHandshakeError::Refused("not_allowed".into())
                                    }));
                                }
                            }
                        }
                    }
                    actions = next;
                }
            }
        })
        .await;
        let failed = match result {
            Ok(Ok(info)) => {
                let Some(how) = admit else { return };
                // Only now, with the cookie proven, does the peer exist here.
                match self.erlang.peer_for(&self, &info.name) {
                    Ok(peer) => {
                        if !self.erl_install(&peer, tcp, info, how) {
                            tracing::debug!(node = %self.me.name, peer = %peer.name, "incoming Erlang connection dropped: another took its place");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.me.name, %addr, error = %e, "incoming Erlang connection dropped")
                    }
                }
                return;
            }
            Ok(Err(HsIoError::Hs(ErlHandshakeError::Simultaneous))) => return,
            Ok(Err(e)) => {
                self.erlang.counters.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = ERL_LOG.check() {
                    tracing::warn!(node = %self.me.name, %addr, error = %e, suppressed, "incoming Erlang connection refused");
                }
                e.to_string()
            }
            Err(_) => {
                self.erlang.counters.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = ERL_LOG.check() {
                    tracing::warn!(node = %self.me.name, %addr, suppressed, "incoming Erlang handshake timed out");
                }
                "the handshake timed out".to_string()
            }
        };
        // A pending accept that failed (perhaps before the dialer proved
        // anything): the peer is as it was, not down; a dial starts if
        // something waits for the node.
        if let Some(Admit::Pending { peer, id }) = admit {
            if peer.swap_state(ConnState::Pending(id), ConnState::Idle) {
                tracing::debug!(peer = %peer.name, reason = %failed, "a pending Erlang accept failed");
                if !peer.is_flushed() || peer.changed.receiver_count() > 0 {
                    self.erl_ensure_dialing(&peer);
                }
            }
        }
    }

    /// The acceptor's status for a dialer: Erlang's rules for a connection
    /// that is up (`alive`) and for simultaneous dials (the greater name's
    /// dial wins).
    ///
    /// Runs before the dialer has proven the cookie, so it creates nothing:
    /// a peer that does not exist yet is created once the handshake is done.
    fn erl_decide(&self, info: &ErlPeerInfo) -> (Status, Option<Admit>) {
        if self.is_shutting_down() {
            return (Status::NotAllowed, None);
        }
        let id = joerl_core::node_id(&info.name);
        if id == self.me.node_id
            || self
                .peers
                .get(&id)
                .is_some_and(|p| p.name != info.name || p.is_up())
        {
            // Our own id, or a joerl node of that id: not an Erlang node to admit.
            return (Status::NotAllowed, None);
        }
        let Some(peer) = self.erlang.peer(id) else {
            return (Status::Ok, Some(Admit::Fresh));
        };
        if peer.name != info.name {
            return (Status::NotAllowed, None);
        }
        let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
        match *st {
            ConnState::Up { conn, .. } => (Status::Alive, Some(Admit::Replace(conn))),
            ConnState::Dialing(_) if self.me.name.as_str() > info.name.as_str() => {
                (Status::Nok, None)
            }
            // Another accept is under way: this dialer waits for it.
            ConnState::Pending(_) => (Status::Nok, None),
            ConnState::Dialing(_) | ConnState::Idle | ConnState::Awaiting(_) => {
                let simultaneous = matches!(*st, ConnState::Dialing(_));
                let pending = self.erlang.next_conn.fetch_add(1, Ordering::Relaxed);
                *st = ConnState::Pending(pending);
                drop(st);
                let status = if simultaneous {
                    Status::OkSimultaneous
                } else {
                    Status::Ok
                };
                (
                    status,
                    Some(Admit::Pending {
                        peer: peer.clone(),
                        id: pending,
                    }),
                )
            }
        }
    }

    /// Makes `tcp` the connection of `peer`; `false` if another connection
    /// took its place first.
    fn erl_install(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
        tcp: TcpStream,
        info: ErlPeerInfo,
        how: Admit,
    ) -> bool {
        let conn = self.erlang.next_conn.fetch_add(1, Ordering::Relaxed);
        // Held until the connection's tasks are recorded: a loss that comes
        // meanwhile (`erl_lost` takes it after the state) then stops them.
        let mut tasks = peer.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let replaced = {
            let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
            let ok = match (&how, *st) {
                // Up meanwhile through the other direction: that one stays.
                (_, ConnState::Up { conn: old, .. }) => {
                    matches!(how, Admit::Replace(c) if c == old)
                }
                (Admit::Dialed, _) => true,
                (Admit::Pending { id, .. }, ConnState::Pending(p)) => *id == p,
                (Admit::Pending { .. }, _) => false,
                (
                    Admit::Fresh,
                    ConnState::Idle | ConnState::Dialing(_) | ConnState::Awaiting(_),
                ) => true,
                (Admit::Fresh, ConnState::Pending(_)) => false,
                (Admit::Replace(_), _) => true,
            };
            if self.is_shutting_down() {
                return false;
            }
            if !ok {
                return false;
            }
            let replaced = matches!(*st, ConnState::Up { .. });
            *st = ConnState::Up {
                conn,
                creation: info.creation,
                flags: info.flags,
            };
            peer.current.store(conn, Ordering::Release);
            replaced
        };
        if replaced {
            // The dialer said its old connection is dead: what crossed it is lost.
            for (to, signal) in peer.lost() {
                self.system.deliver_signal(to, signal);
            }
            self.tell_node_monitors(
                peer,
                &NodeDownReason::Replaced("the Erlang node connected again".into()),
            );
            self.emit(NodeEvent::Down {
                node: peer.name.clone(),
                reason: NodeDownReason::Replaced("the Erlang node connected again".into()),
            });
        }
        peer.overflowed.store(false, Ordering::Release);
        let (read, write) = tcp.into_split();
        let write = Arc::new(write);
        peer.set_socket(Some(write.clone()));
        let writer = tokio::spawn(write_loop(self.clone(), peer.clone(), conn, write));
        let node = self.clone();
        let owner = peer.clone();
        let writer_abort = writer.abort_handle();
        let reader = tokio::spawn(async move {
            let reason = read_loop(&node, &owner, conn, read).await;
            writer.abort();
            node.erl_lost(&owner, conn, reason);
        });
        for old in tasks.1.drain(..) {
            old.abort();
        }
        tasks.0 = conn;
        tasks.1.push(writer_abort);
        tasks.1.push(reader.abort_handle());
        drop(tasks);
        peer.counters.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.me.name, peer = %peer.name, creation = info.creation, dialed = matches!(how, Admit::Dialed), "connected to the Erlang node");
        self.emit(NodeEvent::Up {
            node: peer.name.clone(),
            creation: info.creation,
        });
        peer.changed.send_modify(|n| *n += 1);
        true
    }

    /// Connection `conn` of `peer` ended.
    pub(crate) fn erl_lost(&self, peer: &Arc<ErlPeer>, conn: u64, reason: NodeDownReason) {
        {
            let mut st = peer.state.lock().unwrap_or_else(|e| e.into_inner());
            match *st {
                ConnState::Up { conn: c, .. } if c == conn => *st = ConnState::Idle,
                _ => return,
            }
            peer.current.store(0, Ordering::Release);
        }
        peer.set_socket(None);
        // The connection's reader and writer stop here (whichever of them
        // is calling goes on to its end).
        {
            let mut tasks = peer.tasks.lock().unwrap_or_else(|e| e.into_inner());
            if tasks.0 == conn {
                for t in tasks.1.drain(..) {
                    t.abort();
                }
            }
        }
        tracing::info!(node = %self.me.name, peer = %peer.name, %reason, "Erlang node down");
        for (to, signal) in peer.lost() {
            self.system.deliver_signal(to, signal);
        }
        self.tell_node_monitors(peer, &reason);
        self.emit(NodeEvent::Down {
            node: peer.name.clone(),
            reason,
        });
        peer.changed.send_modify(|n| *n += 1);
    }

    /// Tells every `monitor_node` owner of `peer` that it is down (once).
    fn tell_node_monitors(&self, peer: &ErlPeer, reason: &NodeDownReason) {
        let owners =
            std::mem::take(&mut *peer.node_monitors.lock().unwrap_or_else(|e| e.into_inner()));
        for owner in owners {
            let msg = crate::events::NodeDown {
                node: peer.name.clone(),
                reason: reason.clone(),
            };
            // Past any mailbox bound: never dropped while the owner lives.
            let _ = self
                .system
                .try_deliver(None, owner, Box::new(msg), usize::MAX);
        }
    }

    /// Closes the connection to `peer` on purpose (`disconnect`, shutdown):
    /// the node is down at once with `reason`. `false` if it was not up.
    pub(crate) fn erl_close(&self, peer: &Arc<ErlPeer>, reason: NodeDownReason) -> bool {
        let ConnState::Up { conn, .. } = peer.conn_state() else {
            return false;
        };
        self.erl_lost(peer, conn, reason);
        true
    }

    /// `monitor_node` for an Erlang node: `owner` is told once when it goes
    /// down or cannot be reached; connects if needed.
    pub(crate) fn erl_monitor_node(self: &Arc<Self>, peer: &Arc<ErlPeer>, owner: Pid) {
        peer.node_monitors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(owner);
        if !peer.is_up() {
            self.erl_ensure_dialing(peer);
        }
    }

    /// Waits until `peer` is up; `Err` when its dial fails.
    pub(crate) async fn erl_connected(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
    ) -> Result<(), DistError> {
        if self.is_shutting_down() {
            return Err(DistError::ShuttingDown);
        }
        let mut changed = peer.changed.subscribe();
        self.erl_ensure_dialing(peer);
        let wait = async {
            // A dial that lost a simultaneous connect leaves the peer idle
            // without a change (the peer's own dial comes); a failed dial
            // changes it.
            let mut saw_change = false;
            loop {
                match peer.conn_state() {
                    ConnState::Up { .. } => return Ok(()),
                    ConnState::Idle if saw_change => {
                        return Err(DistError::Connect {
                            node: peer.name.clone(),
                            reason: "the Erlang node cannot be reached (the log says why)".into(),
                        });
                    }
                    _ => {}
                }
                if changed.changed().await.is_err() {
                    return Err(DistError::ShuttingDown);
                }
                saw_change = true;
            }
        };
        tokio::time::timeout(self.config.connect_timeout * 2, wait)
            .await
            .unwrap_or_else(|_| {
                Err(DistError::Timeout(format!(
                    "no connection to the Erlang node {} within {:?}",
                    peer.name,
                    self.config.connect_timeout * 2
                )))
            })
    }
}

/// A handshake failed in I/O or in the protocol.
#[derive(Debug)]
enum HsIoError {
    Io(std::io::Error),
    Hs(ErlHandshakeError),
}

impl std::fmt::Display for HsIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HsIoError::Io(e) => write!(f, "i/o error during the Erlang handshake: {e}"),
            HsIoError::Hs(e) => e.fmt(f),
        }
    }
}

impl From<std::io::Error> for HsIoError {
    fn from(e: std::io::Error) -> Self {
        HsIoError::Io(e)
    }
}

impl From<ErlHandshakeError> for HsIoError {
    fn from(e: ErlHandshakeError) -> Self {
        HsIoError::Hs(e)
    }
}

impl From<HsIoError> for crate::HandshakeError {
    fn from(e: HsIoError) -> Self {
        use crate::HandshakeError as H;
        match e {
            HsIoError::Io(e) => H::Io(e.to_string()),
            HsIoError::Hs(ErlHandshakeError::AuthenticationFailed) => H::AuthenticationFailed,
            HsIoError::Hs(ErlHandshakeError::Simultaneous) => H::Simultaneous,
            HsIoError::Hs(ErlHandshakeError::AlreadyConnected) => H::AlreadyConnected,
            HsIoError::Hs(ErlHandshakeError::WrongPeer { expected, actual }) => {
                H::WrongPeer { expected, actual }
            }
            HsIoError::Hs(ErlHandshakeError::Refused(s)) => H::Refused(s),
            HsIoError::Hs(other) => H::Malformed(other.to_string()),
        }
    }
}

async fn read_packet(tcp: &mut TcpStream) -> Result<Vec<u8>, HsIoError> {
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > handshake::MAX_HANDSHAKE_PACKET {
        return Err(HsIoError::Hs(ErlHandshakeError::Malformed(format!(
            "handshake packet of {len} bytes exceeds {}",
            handshake::MAX_HANDSHAKE_PACKET
        ))));
    }
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_packet(tcp: &mut TcpStream, body: &[u8]) -> Result<(), HsIoError> {
    let mut packet = Vec::with_capacity(2 + body.len());
    packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
    packet.extend_from_slice(body);
    tcp.write_all(&packet).await?;
    Ok(())
}

/// True if the first three bytes of an accepted connection are Erlang's:
/// a 2-byte length that is not zero, then the `'N'` (or old `'n'`) of its
/// name message. joerl's frames start with a 4-byte length whose first two
/// bytes are zero for any handshake record.
pub(crate) fn looks_like_erlang(first: &[u8; 3]) -> bool {
    (first[0], first[1]) != (0, 0) && (first[2] == b'N' || first[2] == b'n')
}

/// How long a quiet connection waits between ticks.
fn tick_every(node: &NodeInner) -> Duration {
    node.config.erlang_net_ticktime / 4
}

async fn write_loop(node: Arc<NodeInner>, peer: Arc<ErlPeer>, conn: u64, w: Arc<OwnedWriteHalf>) {
    let mut batch = Vec::new();
    let every = tick_every(&node);
    let reason = loop {
        if peer.overflowed.load(Ordering::Acquire) {
            break NodeDownReason::NotReading;
        }
        if !peer.take_out(conn, &mut batch) {
            break NodeDownReason::Replaced("a newer connection took its place".into());
        }
        if batch.is_empty() {
            tokio::select! {
                _ = peer.wake.notified() => continue,
                _ = tokio::time::sleep(every) => {
                    // Nothing to send for a quarter of the tick time: a tick.
                    batch.extend_from_slice(&[0, 0, 0, 0]);
                }
            }
        }
        // A peer that does not read for a whole tick time is gone.
        let written =
            tokio::time::timeout(node.config.erlang_net_ticktime, write_all(&w, &batch)).await;
        peer.in_flight.store(0, Ordering::Release);
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break NodeDownReason::Io(e.to_string()),
            Err(_) => break NodeDownReason::NotReading,
        }
        peer.counters
            .bytes_out
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    };
    node.erl_lost(&peer, conn, reason);
}

/// Writes all of `buf` to a socket shared with direct writers.
async fn write_all(w: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        w.writable().await?;
        match w.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_loop(
    node: &Arc<NodeInner>,
    peer: &Arc<ErlPeer>,
    conn: u64,
    mut r: OwnedReadHalf,
) -> NodeDownReason {
    let max = node.config.max_frame_size;
    let timeout = node.config.erlang_net_ticktime;
    let mut reader = wire::Reader::new(max, node.config.max_message_memory);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut start = 0usize;
    loop {
        // Every whole frame in the buffer.
        loop {
            let avail = &buf[start..];
            if avail.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
            if len > max {
                node.erlang
                    .counters
                    .malformed
                    .fetch_add(1, Ordering::Relaxed);
                return NodeDownReason::Malformed(format!(
                    "frame of {len} bytes exceeds the maximum of {max} (DistConfig::max_frame_size)"
                ));
            }
            if avail.len() < 4 + len {
                break;
            }
            if peer.current.load(Ordering::Acquire) != conn {
                // Replaced or lost: this reader's connection is over.
                return NodeDownReason::Replaced("a newer connection took its place".into());
            }
            let body = &avail[4..4 + len];
            peer.counters
                .bytes_in
                .fetch_add(4 + len as u64, Ordering::Relaxed);
            let incoming = match reader.frame(body) {
                Ok(m) => m,
                Err(e) => {
                    node.erlang
                        .counters
                        .malformed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %node.me.name, peer = %peer.name, error = %e, "closing the Erlang connection: malformed message");
                    return NodeDownReason::Malformed(e.to_string());
                }
            };
            start += 4 + len;
            if let Some(m) = incoming {
                act(node, peer, conn, m).await;
            }
        }
        // Keep what is left at the front, then read more.
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        let read = tokio::time::timeout(timeout, r.read_buf(&mut buf)).await;
        match read {
            Err(_) => return NodeDownReason::TickTimeout(timeout),
            Ok(Ok(0)) => return NodeDownReason::ConnectionClosed,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return NodeDownReason::Io(e.to_string()),
        }
    }
}

/// Does what one incoming message asks.
/// A call from Erlang that will never be delivered: its entry goes.
fn forget_if_call(peer: &ErlPeer, msg: &joerl_core::Message) {
    if let Some(call) = msg.downcast_ref::<joerl_core::gen_server::CallRequest>() {
        peer.forget_call(call.tag);
    }
}

async fn act(node: &Arc<NodeInner>, peer: &Arc<ErlPeer>, conn: u64, m: wire::Incoming) {
    tracing::trace!(peer = %peer.name, control = ?m.control, payload = ?m.payload.as_ref().map(|p| p.to_string()), "from Erlang");
    if let Some(p) = &m.payload {
        node.erlang.learn_pids(p);
    }
    let new_ref = || node.erlang.new_ref();
    let Some(inbound) = with_local(node, |local| {
        peer.incoming(local, conn, m.control, m.payload, &new_ref)
    }) else {
        return;
    };
    match inbound {
        Inbound::Deliver { from, to, msg } => {
            let to = match to {
                Target::Pid(p) => p,
                Target::Name(name) => match node.system.whereis(name.as_str()) {
                    Some(p) => p,
                    None => {
                        peer.counters.dropped_in.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %peer.name, name = %name, "message to an unregistered name dropped");
                        forget_if_call(peer, &msg);
                        return;
                    }
                },
            };
            if to.node() != node.me.node_id {
                peer.counters.dropped_in.fetch_add(1, Ordering::Relaxed);
                forget_if_call(peer, &msg);
                return;
            }
            let call = msg
                .downcast_ref::<joerl_core::gen_server::CallRequest>()
                .map(|c| c.tag);
            // A full mailbox takes up to `mailbox_overflow` more from other
            // nodes; past that this connection waits for room (TCP pushes
            // back on the Erlang node), as for a slow receiver.
            let delivered =
                match node
                    .system
                    .try_deliver(from, to, msg, node.config.mailbox_overflow)
                {
                    Err(joerl_core::SendError::Full(unsent)) => node
                        .system
                        .send_from(from, to, unsent.into_inner())
                        .await
                        .is_ok(),
                    other => other.is_ok(),
                };
            // Nobody there: dropped, as Erlang drops it (a caller's monitor
            // says noproc); the call is not waited for.
            if !delivered {
                if let Some(tag) = call {
                    peer.forget_call(tag);
                }
            }
        }
        Inbound::Signal { to, signal } => {
            if to.node() == node.me.node_id {
                node.system.deliver_signal(to, signal);
            }
        }
        Inbound::MonitorName {
            name,
            from,
            monitor,
            noproc,
        } => match node.system.whereis(name.as_str()) {
            // `rex` is answered by the connection itself: it exists (its
            // monitor fires only with the connection).
            None if name.as_str() == "rex" => {
                let _ = peer.name_resolved(monitor, Pid::new(node.me.node_id, 0, node.me.creation));
            }
            Some(target) if peer.name_resolved(monitor, target) => {
                let signal = Signal::Monitor { from, monitor };
                peer.book().incoming(target, &signal);
                node.system.deliver_signal(target, signal);
            }
            Some(_) => {}
            None => {
                peer.name_missing(monitor);
                peer.push_raw(&noproc);
            }
        },
        Inbound::Reply(frame) => {
            peer.push_raw(&frame);
        }
        Inbound::Nothing => {}
    }
}

impl NodeInner {
    /// The Erlang peer named `name`, if EPMD (or a connection) said it is
    /// an Erlang node.
    pub(crate) fn erl_peer_named(&self, name: &str) -> Option<Arc<ErlPeer>> {
        if self.erlang.known_dialect(name) != Some(Dialect::Erlang) {
            return None;
        }
        self.erlang.peer_for(self, name).ok()
    }

    /// The Erlang peer with node id `id`, if known.
    pub(crate) fn erl_peer_for_id(&self, id: u32) -> Option<Arc<ErlPeer>> {
        self.erlang.peer(id)
    }

    /// A message for an Erlang process (Pid) or name: buffered, and the
    /// peer dialed if it is not connected.
    pub(crate) fn erl_send(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
        from: Option<Pid>,
        to: Result<Pid, &str>,
        msg: joerl_core::Message,
    ) -> Result<(), joerl_core::RouteError> {
        if self.is_shutting_down() {
            return Err(joerl_core::RouteError::Closed);
        }
        let sent = with_local(self, |l| peer.send(l, from, to, msg)).unwrap_or_else(|| {
            Err(joerl_core::RouteError::NotSerializable {
                detail: "this node's name is too long for an Erlang atom".into(),
            })
        });
        // Also when the buffer is full: what fills it goes out once connected.
        if !peer.is_up() {
            self.erl_ensure_dialing(peer);
        }
        sent
    }

    /// A signal for an Erlang process. One that cannot reach it is answered
    /// here with `noconnection`.
    pub(crate) fn erl_signal(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
        to: Pid,
        signal: Signal,
    ) -> Result<(), joerl_core::RouteError> {
        if self.is_shutting_down() && !peer.is_up() {
            self.system
                .refuse_signal(to, signal, joerl_core::ExitReason::NoConnection);
            return Ok(());
        }
        let sent = with_local(self, |l| peer.signal(l, to, signal.clone()))
            .unwrap_or(Err(joerl_core::RouteError::Closed));
        if let Err(e) = sent {
            tracing::debug!(peer = %peer.name, error = %e, "signal for an Erlang process refused");
            self.system
                .refuse_signal(to, signal, joerl_core::ExitReason::NoConnection);
            return Ok(());
        }
        if !peer.is_up() {
            self.erl_ensure_dialing(peer);
        }
        Ok(())
    }

    /// A monitor by name on an Erlang node.
    pub(crate) fn erl_monitor_named(
        self: &Arc<Self>,
        peer: &Arc<ErlPeer>,
        from: Pid,
        monitor: MonitorRef,
        name: &str,
    ) -> Result<(), joerl_core::RouteError> {
        let r = with_local(self, |l| peer.monitor_named(l, from, monitor, name))
            .unwrap_or(Err(joerl_core::RouteError::Closed));
        if r.is_ok() && !peer.is_up() {
            self.erl_ensure_dialing(peer);
        }
        r
    }
}
