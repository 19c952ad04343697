//! [`DistributedSystem`]: a node of a cluster, and the machinery behind it.
//!
//! The node owns an [`ActorSystem`] whose Pids carry this node's id and creation,
//! a TCP listener, its EPMD registration, and a table of [`Peer`]s keyed by node id.
//! It installs a router (`router.rs`) in the actor system, so every send, link,
//! monitor and exit aimed at a Pid of another node reaches a peer's queue, and
//! hands what arrives on each connection to a dispatcher (`delivery.rs`). Each
//! peer's connection life cycle is decided by its link machine (`link.rs`):
//! this module feeds it events (see [`NodeInner::drive`]) and does the I/O it
//! asks for: listening, dialing, the handshake, installing and closing
//! connections, node events and shutdown.
//!
//! Connections are made on demand: the first message to a node asks the
//! resolver (`resolve.rs`: a static table, then the EPMD on the node's own host)
//! where it listens and dials it, and the message waits in the peer's queue meanwhile. A lost
//! connection is re-dialed with exponential backoff and jitter; after
//! `reconnect_attempts` failures in a row the node stops trying until the next
//! send. When both nodes dial each other at once, the connection dialed by the
//! node with the greater name wins (Erlang's rule; the other side refuses with `Simultaneous`),
//! so there is exactly one connection per pair.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use joerl_core::fxhash::FxBuildHasher;
use joerl_core::gen_server::ServerRef;
use joerl_core::{ActorSystem, CallError, NodeIdentity, Pid, SendError};
use joerl_epmd::{EpmdClient, NodeKind, Registration, RegistrationGuard};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::DistConfig;
use crate::connection::{self, EndReason, LocalIdentity};
use crate::error::{DistError, HandshakeError};
use crate::events::{
    NodeDown, NodeDownReason, NodeEvent, NodeEvents, NodeStats, NodeUp, PeerStats,
};
use crate::frame::{self};
use crate::link::{self, Action, Installed, LinkMachine, Next, Status};
use crate::node_table::{Learned, NodeInfo};
use crate::peer::{Peer, PeerCounters};

/// A dialed and authenticated connection: the stream, the peer's
/// introduction, and where the peer stands in the session with this node.
type Dialed = (crate::transport::Stream, connection::Shook);

/// A machine action to carry out after its lock, with what was taken for it
/// under the lock.
enum Later {
    /// `Action::Lost`: the queue was dropped (`dropped` frames); deliver the
    /// failed relations' `signals` and tell the `monitor_node` `owners`.
    Lost {
        reason: NodeDownReason,
        dropped: usize,
        signals: Vec<(Pid, joerl_core::Signal)>,
        owners: Vec<Pid>,
    },
    /// Any other action.
    Do(Action),
}

/// Builds a [`DistributedSystem`] with settings other than the defaults.
///
/// ```no_run
/// # async fn f() -> Result<(), joerl_dist::DistError> {
/// use std::time::Duration;
/// let node = joerl_dist::NodeBuilder::new("node_a", "127.0.0.1:5001".parse().unwrap(), "127.0.0.1:4369".parse().unwrap())
///     .cookie("secret")
///     .tick_timeout(Duration::from_secs(2))
///     .auto_discovery(true)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    listen: SocketAddr,
    epmd: SocketAddr,
    host: Option<String>,
    config: DistConfig,
    resolver: ResolverSlot,
    first_resolvers: crate::resolve::ChainResolver,
    static_peers: crate::resolve::StaticResolver,
    peer_epmd_port: Option<u16>,
    transport: crate::transport::Transport,
}

/// A resolver set on the builder (opaque in `Debug`).
#[derive(Clone, Default)]
struct ResolverSlot(Option<Arc<dyn crate::resolve::Resolver>>);

impl std::fmt::Debug for ResolverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl NodeBuilder {
    /// A node named `name` (`name` or `name@host`) listening on `listen`,
    /// registered in the EPMD at `epmd`.
    pub fn new(name: impl Into<String>, listen: SocketAddr, epmd: SocketAddr) -> Self {
        NodeBuilder {
            name: name.into(),
            listen,
            epmd,
            host: None,
            config: DistConfig::default(),
            resolver: ResolverSlot::default(),
            first_resolvers: crate::resolve::ChainResolver::new(),
            static_peers: crate::resolve::StaticResolver::new(),
            peer_epmd_port: None,
            transport: crate::transport::Transport::Tcp,
        }
    }

    /// Where to find other nodes, instead of the default: the static peers
    /// given with [`static_peer`](Self::static_peer), then the EPMD on each
    /// peer's own host (at [`peer_epmd_port`](Self::peer_epmd_port)).
    pub fn resolver(mut self, resolver: Arc<dyn crate::resolve::Resolver>) -> Self {
        self.resolver = ResolverSlot(Some(resolver));
        self
    }

    /// Asks `resolver` first, before the static peers and EPMD (or before the
    /// resolver given with [`resolver`](Self::resolver)): for example the
    /// cluster layer's member directory, which knows members' addresses from
    /// gossip. Several are asked in the order given.
    pub fn first_resolver(mut self, resolver: Arc<dyn crate::resolve::Resolver>) -> Self {
        self.first_resolvers = std::mem::take(&mut self.first_resolvers).then(resolver);
        self
    }

    /// `node` (`name@host`) listens at `addr`: dial it there without asking
    /// any EPMD.
    pub fn static_peer(mut self, node: impl Into<String>, addr: SocketAddr) -> Self {
        self.static_peers = std::mem::take(&mut self.static_peers).with(node, addr);
        self
    }

    /// The EPMD port asked on a peer's host, as Erlang asks port 4369 of the
    /// host in `name@host`. Default: the port of this node's own EPMD.
    pub fn peer_epmd_port(mut self, port: u16) -> Self {
        self.peer_epmd_port = Some(port);
        self
    }

    /// Connections travel over TLS with mutual authentication (see
    /// [`TlsConfig`](crate::TlsConfig)); the cookie handshake still runs
    /// inside. Such a node refuses plain-TCP peers, and plain nodes refuse it.
    /// Default: plain TCP.
    pub fn tls(mut self, tls: crate::TlsConfig) -> Self {
        self.transport = crate::transport::Transport::Tls(tls);
        self
    }

    /// The cookie (shared secret). Default: `JOERL_COOKIE`, else `~/.joerl.cookie`.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.config.cookie = Some(cookie.into());
        self
    }

    /// The host part of the node name and the address peers dial. Default: the
    /// host in `name@host`, else the listen address's IP.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// How long a silent peer is tolerated before it is declared down.
    pub fn tick_timeout(mut self, timeout: Duration) -> Self {
        self.config.tick_timeout = timeout;
        self
    }

    /// Bytes that may wait toward one peer before `send` waits.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.config.queue_bytes = bytes;
        self
    }

    /// The largest frame this node sends or accepts.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.config.max_frame_size = bytes;
        self
    }

    /// The most memory decoding one incoming message may claim (see
    /// [`DistConfig::max_message_memory`]).
    pub fn max_message_memory(mut self, bytes: usize) -> Self {
        self.config.max_message_memory = bytes;
        self
    }

    /// Incoming messages parked per connection for full mailboxes before the
    /// connection stops reading.
    pub fn max_parked(mut self, messages: usize) -> Self {
        self.config.max_parked = messages;
        self
    }

    /// Lists EPMD's nodes periodically and connects to new ones.
    pub fn auto_discovery(mut self, on: bool) -> Self {
        self.config.auto_discovery = on;
        self
    }

    /// How often discovery lists EPMD.
    pub fn discovery_interval(mut self, every: Duration) -> Self {
        self.config.discovery_interval = every;
        self
    }

    /// Backoff between dial attempts: first delay and cap.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.reconnect_initial = initial;
        self.config.reconnect_max = max;
        self
    }

    /// Failed dials in a row after which the node stops trying until the next send.
    pub fn reconnect_attempts(mut self, attempts: u32) -> Self {
        self.config.reconnect_attempts = attempts.max(1);
        self
    }

    /// Time allowed for one TCP connect plus handshake.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// EPMD lease for this node's registration.
    pub fn epmd_lease(mut self, lease: Duration) -> Self {
        self.config.epmd_lease = Some(lease);
        self
    }

    /// How often down and unused peers are looked for and forgotten (see
    /// [`DistConfig::peer_sweep_interval`]).
    pub fn peer_sweep_interval(mut self, every: Duration) -> Self {
        self.config.peer_sweep_interval = every;
        self
    }

    /// How long a cut connection to a live peer may take to be re-made
    /// before the node is reported down (see [`DistConfig::grace_period`]).
    /// `Duration::ZERO`: at once, as in Erlang. Default: the tick timeout.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace_period = Some(grace);
        self
    }

    /// Bytes kept for resending toward one peer until acknowledged (see
    /// [`DistConfig::resend_window`]).
    pub fn resend_window(mut self, bytes: usize) -> Self {
        self.config.resend_window = bytes;
        self
    }

    /// Connect to Erlang nodes as a hidden node (`true`, the default) or as
    /// a normal one (see [`DistConfig::erlang_hidden`]).
    pub fn erlang_hidden(mut self, hidden: bool) -> Self {
        self.config.erlang_hidden = hidden;
        self
    }

    /// Erlang's `net_ticktime` toward Erlang nodes (see
    /// [`DistConfig::erlang_net_ticktime`]); at least 4 ms.
    pub fn erlang_net_ticktime(mut self, ticktime: Duration) -> Self {
        self.config.erlang_net_ticktime = ticktime.max(Duration::from_millis(4));
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: DistConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the node: resolves the cookie, binds the listener, registers in
    /// EPMD, and starts accepting connections. Must run inside a tokio runtime.
    pub async fn start(self) -> Result<DistributedSystem, DistError> {
        NodeInner::start(self).await
    }
}

/// A node of a cluster: an actor system whose sends, links, monitors and calls
/// reach actors on other nodes exactly as they reach local ones.
///
/// Dereferences to its [`ActorSystem`]. Cheap to clone. Dropping the last handle
/// closes every connection and stops every actor; [`shutdown`](Self::shutdown) does
/// the same gracefully and waits for it. A handle kept inside one of the node's
/// own actors keeps the node alive: such programs end with `shutdown`.
#[derive(Clone)]
pub struct DistributedSystem {
    inner: Arc<NodeInner>,
    _guard: Arc<NodeGuard>,
}

struct NodeGuard(Arc<NodeInner>);

/// A handle on a node that does not keep it alive (see
/// [`DistributedSystem::downgrade`]).
#[derive(Clone)]
pub struct WeakNode {
    inner: Weak<NodeInner>,
    guard: Weak<NodeGuard>,
}

impl WeakNode {
    /// The node, while some [`DistributedSystem`] handle still holds it.
    pub fn upgrade(&self) -> Option<DistributedSystem> {
        Some(DistributedSystem {
            inner: self.inner.upgrade()?,
            _guard: self.guard.upgrade()?,
        })
    }
}

impl std::fmt::Debug for WeakNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakNode")
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.0.stop_now();
    }
}

impl std::ops::Deref for DistributedSystem {
    type Target = ActorSystem;
    fn deref(&self) -> &ActorSystem {
        &self.inner.system
    }
}

impl std::fmt::Debug for DistributedSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedSystem")
            .field("node", &self.inner.me.name)
            .field("listen", &self.inner.local_addr)
            .finish()
    }
}

impl DistributedSystem {
    /// Starts a node with default settings: `name` (or `name@host`) listening on
    /// `listen_addr`, registered in the EPMD at `epmd_addr`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), joerl_dist::DistError> {
    /// let node = joerl_dist::DistributedSystem::new("node_a", "127.0.0.1:5001", "127.0.0.1:4369").await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(name: &str, listen_addr: &str, epmd_addr: &str) -> Result<Self, DistError> {
        let listen = parse_addr(listen_addr)?;
        let epmd = parse_addr(epmd_addr)?;
        NodeBuilder::new(name, listen, epmd).start().await
    }

    /// A builder for everything else.
    pub fn builder(name: impl Into<String>, listen: SocketAddr, epmd: SocketAddr) -> NodeBuilder {
        NodeBuilder::new(name, listen, epmd)
    }

    /// The actor system of this node.
    pub fn system(&self) -> &ActorSystem {
        &self.inner.system
    }

    /// This node's full name, `name@host`.
    pub fn name(&self) -> &str {
        &self.inner.me.name
    }

    /// The address the node listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's creation (from its EPMD registration).
    pub fn creation(&self) -> u32 {
        self.inner.me.creation
    }

    /// The configuration in force.
    pub fn config(&self) -> &DistConfig {
        &self.inner.config
    }

    /// Connects to `node` (`name@host`) now and waits until the connection is up
    /// or the first attempt fails (for example with an authentication error).
    pub async fn connect(&self, node: &str) -> Result<(), DistError> {
        self.inner.connect(node).await
    }

    /// A handle that does not keep the node alive: for tasks and services
    /// that follow the node but must not outlive its last user.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode {
            inner: Arc::downgrade(&self.inner),
            guard: Arc::downgrade(&self._guard),
        }
    }

    /// A 32-byte key derived from this node's cookie for `context`
    /// (HMAC-SHA256 keyed by the cookie): what the cluster layer keys its
    /// gossip with, so that it never holds the cookie itself. Nodes with the
    /// same cookie derive the same key for the same context.
    pub fn derive_key(&self, context: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.inner.cookie)
            .expect("HMAC takes any key length");
        mac.update(context);
        mac.finalize().into_bytes().into()
    }

    /// Drops the connection to `node` on purpose (Erlang's
    /// `disconnect_node/1`): the node is reported down at once, exactly once,
    /// with [`NodeDownReason::Disconnected`](crate::NodeDownReason::Disconnected)
    /// carrying `why`; every link and monitor to it gets `noconnection`; what
    /// was queued or unacknowledged for it is dropped and counted. A cut being
    /// mended ends the same way. The connection is not redialed; a later send
    /// dials again. False if this node knows no peer of that name.
    pub fn disconnect(&self, node: &str, why: &str) -> bool {
        self.inner.disconnect(node, why)
    }

    /// Asks `resolver` first from now on, before every resolver the node
    /// had (what `NodeBuilder::first_resolver` does before the start): how a
    /// service started on a running node, such as the cluster layer's member
    /// directory, becomes a source of node addresses. Dials already under
    /// way keep the resolver they started with.
    pub fn prepend_resolver(&self, resolver: Arc<dyn crate::resolve::Resolver>) {
        let mut slot = self
            .inner
            .resolver
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let chain = crate::resolve::ChainResolver::new()
            .then(resolver)
            .then(slot.clone());
        *slot = Arc::new(chain);
    }

    /// Attaches `service` to the node as its one extension of type `T` (as
    /// an Akka extension is attached to its actor system): found again with
    /// [`extension`](Self::extension) from any handle of the node, kept until
    /// the node is dropped. If one of type `T` is attached already, that one
    /// stays and `service` is given back.
    pub fn set_extension<T: std::any::Any + Send + Sync>(
        &self,
        service: Arc<T>,
    ) -> Result<(), Arc<T>> {
        let mut all = self
            .inner
            .extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if all.iter().any(|e| e.is::<T>()) {
            return Err(service);
        }
        all.push(service);
        Ok(())
    }

    /// The extension of type `T` attached with
    /// [`set_extension`](Self::set_extension), if any.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner
            .extensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find_map(|e| e.clone().downcast::<T>().ok())
    }

    /// A signal that fires once the node starts shutting down (or is
    /// dropped): for services attached to the node that must stop with it.
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.inner.shutdown_tx.subscribe())
    }

    /// Names of the nodes connected now.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes()
    }

    /// What this node knows of the other nodes it has a peer for now (name,
    /// id, creation, the address it dialed them at, how it learned of them,
    /// whether connected), sorted by name. Nodes that went down and are used
    /// by nothing are forgotten after a while (see
    /// [`peer_sweep_interval`](NodeBuilder::peer_sweep_interval)).
    pub fn known_nodes(&self) -> Vec<NodeInfo> {
        let mut known = self.inner.table.known();
        for n in &mut known {
            n.connected = self.inner.peers.get(&n.node_id).is_some_and(|p| p.is_up());
        }
        known
    }

    /// What this node knows of `node` (see [`known_nodes`](Self::known_nodes)).
    pub fn node_info(&self, node: &str) -> Option<NodeInfo> {
        self.known_nodes().into_iter().find(|n| n.name == node)
    }

    /// Subscribes to node-up and node-down events (for code outside actors;
    /// actors use [`monitor_nodes`](Self::monitor_nodes)). Lossless: a slow
    /// subscriber misses nothing (the queue is unbounded, so keep reading it).
    pub fn subscribe(&self) -> NodeEvents {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        NodeEvents { rx }
    }

    /// Erlang's `net_kernel:monitor_nodes(true)`: `owner` receives a [`NodeUp`]
    /// message for every connection that comes up and a [`NodeDown`] for every
    /// one that goes down, in order, exactly one `NodeDown` per `NodeUp`. They
    /// are delivered even to a full mailbox, so none is ever dropped while the
    /// actor lives. Calling it twice has no further effect.
    pub fn monitor_nodes(&self, owner: Pid) {
        self.inner.monitor_nodes(owner, true)
    }

    /// Undoes [`monitor_nodes`](Self::monitor_nodes) for `owner`.
    pub fn demonitor_nodes(&self, owner: Pid) {
        self.inner.monitor_nodes(owner, false)
    }

    /// Erlang's `monitor_node(Node, true)`: when `node` goes down (or cannot be
    /// reached), `owner` receives one [`NodeDown`] message. Connects if needed.
    pub fn monitor_node(&self, owner: Pid, node: &str) -> Result<(), DistError> {
        self.inner.monitor_node(owner, node)
    }

    /// The Pid registered as `name` on `node` (Erlang's `rpc:call(Node, erlang,
    /// whereis, [Name])`), asked of that node's net kernel (the server every
    /// node registers as `net_kernel`) in one round trip. Connects if needed.
    pub async fn whereis_remote(
        &self,
        name: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<Option<Pid>, CallError> {
        self.inner.whereis_remote(name, node, timeout).await
    }

    /// Statistics per peer and in total.
    pub fn stats(&self) -> NodeStats {
        let mut stats = NodeStats::default();
        // Held while the table is read: a sweep moves peers from the table to
        // `retired` under this lock, so each peer counts exactly once.
        let retired_guard = self.inner.retired.lock().unwrap_or_else(|e| e.into_inner());
        for p in self.inner.peers.iter() {
            let s = peer_stats(&p);
            add_stats(&mut stats.total, &s);
            stats.peers.push(s);
        }
        // Peers forgotten since (see `forget_idle_peers`) still count in the totals.
        let retired = retired_guard.clone();
        drop(retired_guard);
        let connected = stats.total.connected;
        add_stats(&mut stats.total, &retired);
        stats.total.connected = connected;
        stats.peers.sort_by(|a, b| a.node.cmp(&b.node));
        stats.refused_incoming = self.inner.refused_incoming.load(Ordering::Relaxed);
        stats.simultaneous_refused = self.inner.simultaneous_refused.load(Ordering::Relaxed);
        stats.erlang_refused = self.inner.erlang.counters.refused.load(Ordering::Relaxed);
        stats.erlang_malformed = self.inner.erlang.counters.malformed.load(Ordering::Relaxed);
        stats
    }

    /// Links and monitors this node tracks toward `node`: (links, monitors held
    /// by local actors, monitors held by the peer's actors). For tests and diagnostics.
    pub fn remote_relations(&self, node: &str) -> Option<(usize, usize, usize)> {
        let id = joerl_core::node_id(node);
        self.inner.peers.get(&id).map(|p| p.book().sizes())
    }

    /// How long ago anything (data or a tick) last arrived from `node`; `None` if
    /// nothing ever did, or the node has been forgotten. After a node is lost,
    /// this tells how long it had been silent.
    pub fn last_heard(&self, node: &str) -> Option<Duration> {
        let id = joerl_core::node_id(node);
        self.inner.peers.get(&id).and_then(|p| p.last_heard())
    }

    /// Stops the node gracefully: stops every actor (their links and monitors fire
    /// with `shutdown` on every node), says goodbye on every connection so peers see
    /// node-down at once, closes the connections, and unregisters from EPMD.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

/// Fires once its node starts shutting down or is dropped (see
/// [`DistributedSystem::stop_signal`]).
#[derive(Debug)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Waits until the node starts shutting down, or is gone.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// The statistics of one peer now.
fn peer_stats(p: &Peer) -> PeerStats {
    let c = &p.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let loss = p.accounting().counts(p.queue.pushed_msgs());
    PeerStats {
        node: p.name.clone(),
        connected: p.is_up(),
        msgs_out: get(&c.msgs_out),
        bytes_out: get(&c.bytes_out),
        msgs_in: get(&c.msgs_in),
        bytes_in: get(&c.bytes_in),
        reconnects: get(&c.connects).saturating_sub(1),
        queue_depth: p.queue.depth(),
        dropped_out: loss.unsent + loss.lost,
        dropped_out_unsent: loss.unsent,
        dropped_out_lost: loss.lost,
        unacked_out: loss.unacked,
        resend_bytes: p.queue.unacknowledged_bytes() as u64,
        dropped_in: get(&c.dropped_in),
        unknown_types: get(&c.unknown_types),
    }
}

/// Adds `s` to the totals `t`.
fn add_stats(t: &mut PeerStats, s: &PeerStats) {
    t.connected |= s.connected;
    t.msgs_out += s.msgs_out;
    t.bytes_out += s.bytes_out;
    t.msgs_in += s.msgs_in;
    t.bytes_in += s.bytes_in;
    t.reconnects += s.reconnects;
    t.queue_depth += s.queue_depth;
    t.dropped_out += s.dropped_out;
    t.dropped_out_unsent += s.dropped_out_unsent;
    t.dropped_out_lost += s.dropped_out_lost;
    t.unacked_out += s.unacked_out;
    t.resend_bytes += s.resend_bytes;
    t.dropped_in += s.dropped_in;
    t.unknown_types += s.unknown_types;
}

fn parse_addr(s: &str) -> Result<SocketAddr, DistError> {
    s.parse().map_err(|_| DistError::Connect {
        node: s.to_string(),
        reason: "not a socket address such as 127.0.0.1:4369".into(),
    })
}

/// The EPMD metadata key under which a joerl node registers its full name.
pub const NODE_NAME_KEY: &str = "node";

/// The full name (`name@host`) of a joerl node listed by EPMD, or `None` for an
/// Erlang node. Nodes that registered without their full name get `name@host`
/// from the daemon's record.
pub fn joerl_node_name(info: &joerl_epmd::NodeInfo) -> Option<String> {
    if info.kind != NodeKind::Joerl {
        return None;
    }
    Some(
        info.metadata
            .get(NODE_NAME_KEY)
            .cloned()
            .unwrap_or_else(|| format!("{}@{}", info.name, info.host)),
    )
}

/// Splits `name@host`, checking both parts: the name is 1 to 255 of
/// `[A-Za-z0-9_.-]`; the host is an IP address or a host name (dot-separated
/// labels of `[A-Za-z0-9_-]`, 1 to 63 bytes each, not starting or ending with
/// `-`, 253 bytes in all).
pub(crate) fn split_node_name(full: &str) -> Result<(&str, &str), DistError> {
    let (name, host) = full
        .split_once('@')
        .ok_or_else(|| DistError::InvalidNodeName(full.to_string()))?;
    let ok_name = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !ok_name || !valid_host(host) {
        return Err(DistError::InvalidNodeName(full.to_string()));
    }
    Ok((name, host))
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// This node's entry in EPMD: a joerl registration, or (in Erlang's own
/// epmd, which speaks no joerl requests) an Erlang one; either ends with it.
enum EpmdEntry {
    Joerl(RegistrationGuard),
    Erlang(joerl_epmd::ErlangRegistration),
}

impl EpmdEntry {
    fn creation(&self) -> u32 {
        match self {
            EpmdEntry::Joerl(g) => g.creation(),
            EpmdEntry::Erlang(r) => r.creation(),
        }
    }
}

pub(crate) struct NodeInner {
    pub(crate) system: ActorSystem,
    pub(crate) me: LocalIdentity,
    short_name: String,
    cookie: Vec<u8>,
    pub(crate) config: DistConfig,
    pub(crate) epmd: EpmdClient,
    /// Where peers listen (see `resolve.rs`); `prepend_resolver` puts
    /// another in front.
    resolver: std::sync::RwLock<Arc<dyn crate::resolve::Resolver>>,
    /// Services attached to the node by type (`set_extension`).
    extensions: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    /// TCP or TLS (see `transport.rs`).
    transport: crate::transport::Transport,
    local_addr: SocketAddr,
    pub(crate) peers: DashMap<u32, Arc<Peer>, FxBuildHasher>,
    registration: Mutex<Option<EpmdEntry>>,
    /// Subscribers of `subscribe` (lossless, unbounded).
    subscribers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<NodeEvent>>>,
    /// Actors that called `monitor_nodes`.
    node_watchers: Mutex<Vec<Pid>>,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    next_id: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Incoming connections refused or timed out in the handshake.
    refused_incoming: AtomicU64,
    /// Summed statistics of the peers forgotten so far.
    retired: Mutex<PeerStats>,
    /// What is known of other nodes, apart from queues and sockets; keeps
    /// the names of forgotten peers, so a Pid of one still finds it.
    table: crate::node_table::NodeTable,
    /// Incoming dials refused because this node was dialing the same peer
    /// and its own dial wins.
    simultaneous_refused: AtomicU64,
    /// Erlang nodes as peers (see `erlang/`).
    pub(crate) erlang: crate::erlang::dist::ErlangSide,
    /// The EPMD port on other hosts (Erlang's rule: a node's EPMD is on its host).
    peer_epmd_port: u16,
}

/// Log lines about refused incoming connections, per second.
static REFUSED_LOG: joerl_epmd::log_limit::LogLimiter = joerl_epmd::log_limit::LogLimiter::new(5);
/// Log lines about connections closed for a malformed frame, per second.
static MALFORMED_LOG: joerl_epmd::log_limit::LogLimiter = joerl_epmd::log_limit::LogLimiter::new(5);
/// Warnings about failed connects and nodes given up on, per second: every
/// send to a node that is gone starts an attempt again, and a sender that
/// keeps sending (thousands a second) must not flood the log.
static UNREACHABLE_LOG: joerl_epmd::log_limit::LogLimiter =
    joerl_epmd::log_limit::LogLimiter::new(5);

impl NodeInner {
    async fn start(b: NodeBuilder) -> Result<DistributedSystem, DistError> {
        if let Some(c) = crate::registry::conflicts().first() {
            return Err(DistError::RegistryConflict(c.to_string()));
        }
        let (short, host) = if b.name.contains('@') {
            let (s, h) = split_node_name(&b.name)?;
            (
                s.to_string(),
                b.host.clone().unwrap_or_else(|| h.to_string()),
            )
        } else {
            let host = b.host.clone().unwrap_or_else(|| b.listen.ip().to_string());
            split_node_name(&format!("{}@{host}", b.name))?;
            (b.name.clone(), host)
        };
        let full = format!("{short}@{host}");
        // With `.host(..)` the host part comes from there: check the result.
        split_node_name(&full)?;
        let cookie = crate::cookie::resolve(b.config.cookie.as_deref())?;
        let listener = TcpListener::bind(b.listen)
            .await
            .map_err(|source| DistError::Bind {
                addr: b.listen,
                source: Arc::new(source),
            })?;
        let local_addr = listener.local_addr().map_err(|source| DistError::Bind {
            addr: b.listen,
            source: Arc::new(source),
        })?;
        let epmd = EpmdClient::new(b.epmd);
        // Default: the static table, then this node's own EPMD (one daemon
        // for a host, or for several with --allow-remote-register), then the
        // EPMD on the peer's own host.
        let chosen: Arc<dyn crate::resolve::Resolver> = match b.resolver.0.clone() {
            Some(r) => r,
            None => Arc::new(
                crate::resolve::ChainResolver::new()
                    .then(Arc::new(b.static_peers.clone()))
                    .then(Arc::new(crate::resolve::EpmdResolver::at(b.epmd)))
                    .then(Arc::new(crate::resolve::EpmdResolver::on_hosts(
                        b.peer_epmd_port.unwrap_or(b.epmd.port()),
                    ))),
            ),
        };
        let resolver: Arc<dyn crate::resolve::Resolver> = if b.first_resolvers.is_empty() {
            chosen
        } else {
            Arc::new(b.first_resolvers.clone().then(chosen))
        };
        // The mark in `extra` tells joerl nodes that look this node up to
        // speak joerl's dialect; Erlang nodes ignore it and speak theirs,
        // which this node also answers on the same port.
        let dist = joerl_epmd::DistInfo {
            node_type: if b.config.erlang_hidden {
                joerl_epmd::protocol::NODE_TYPE_HIDDEN
            } else {
                joerl_epmd::protocol::NODE_TYPE_NORMAL
            },
            extra: crate::erlang::dist::JOERL_EPMD_MARK.to_vec(),
            ..joerl_epmd::DistInfo::default()
        };
        let mut reg = Registration::new(short.clone(), local_addr.port())
            .dist(dist.clone())
            .host(host.clone())
            .metadata("joerl", env!("CARGO_PKG_VERSION"))
            .metadata(NODE_NAME_KEY, full.clone());
        // By default the registration lives with the guard's connection to EPMD,
        // as an Erlang node's does: a node that dies (even by kill -9) frees its
        // name at once, so it can restart under the same name. A lease is opt-in.
        reg = match b.config.epmd_lease {
            Some(lease) => reg.lease(lease),
            None => reg.connection_bound(),
        };
        let guard = match epmd.register(reg).await {
            Ok(guard) => EpmdEntry::Joerl(guard),
            // Erlang's own epmd does not speak joerl's requests (it closes the
            // connection): register the way an Erlang node does, with the mark.
            Err(e) if epmd.ping().await.is_err() => {
                if b.config.epmd_lease.is_some() {
                    tracing::warn!(epmd = %b.epmd, "Erlang's epmd grants no leases; the registration lives with its connection");
                }
                let erlang = epmd
                    .alive2(joerl_epmd::Alive2Request {
                        port: local_addr.port(),
                        name: short.clone(),
                        dist,
                    })
                    .await
                    .map_err(|e2| DistError::Epmd {
                        addr: b.epmd,
                        message: format!("{e}; as an Erlang registration: {e2}"),
                    })?;
                EpmdEntry::Erlang(erlang)
            }
            Err(e) => {
                return Err(DistError::Epmd {
                    addr: b.epmd,
                    message: e.to_string(),
                });
            }
        };
        let creation = guard.creation();
        let system = ActorSystem::with_node(NodeIdentity {
            name: full.clone(),
            creation,
        });
        let (shutdown_tx, _) = watch::channel(false);
        let full_for_erlang = full.clone();
        let inner = Arc::new(NodeInner {
            system,
            me: LocalIdentity {
                node_id: joerl_core::node_id(&full),
                name: full,
                creation,
            },
            short_name: short,
            cookie: cookie.into_bytes(),
            config: b.config,
            epmd,
            resolver: std::sync::RwLock::new(resolver),
            extensions: Mutex::new(Vec::new()),
            transport: b.transport.clone(),
            local_addr,
            peers: DashMap::with_hasher(FxBuildHasher::default()),
            registration: Mutex::new(Some(guard)),
            subscribers: Mutex::new(Vec::new()),
            node_watchers: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            next_id: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            refused_incoming: AtomicU64::new(0),
            retired: Mutex::new(PeerStats::default()),
            table: crate::node_table::NodeTable::default(),
            simultaneous_refused: AtomicU64::new(0),
            erlang: crate::erlang::dist::ErlangSide::new(&full_for_erlang),
            peer_epmd_port: b.peer_epmd_port.unwrap_or(b.epmd.port()),
        });
        inner
            .system
            .set_router(Arc::new(crate::router::DistRouter::new(Arc::downgrade(
                &inner,
            ))));
        // Peers reach the net kernel by its registered name.
        let _ = joerl_core::gen_server::spawn_server_with(
            &inner.system,
            crate::net_kernel::NetKernel,
            joerl_core::SpawnOptions::new().name(crate::net_kernel::NET_KERNEL_NAME),
        );
        let accept = tokio::spawn(accept_loop(inner.clone(), listener));
        inner.track(accept.abort_handle());
        if inner.config.auto_discovery {
            let discovery = tokio::spawn(discovery_loop(Arc::downgrade(&inner)));
            inner.track(discovery.abort_handle());
        }
        let sweep = tokio::spawn(peer_sweep_loop(Arc::downgrade(&inner)));
        inner.track(sweep.abort_handle());
        tracing::info!(node = %inner.me.name, listen = %local_addr, creation, "node started");
        Ok(DistributedSystem {
            _guard: Arc::new(NodeGuard(inner.clone())),
            inner,
        })
    }

    /// Hands a node event to every subscriber and node watcher, in the order
    /// of calls. Called while the peer's connection state is locked, so each
    /// peer's Up and Down come out in the order they happened.
    pub(crate) fn emit(&self, event: NodeEvent) {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tx| tx.send(event.clone()).is_ok());
        let mut watchers = self.node_watchers.lock().unwrap_or_else(|e| e.into_inner());
        if watchers.is_empty() {
            return;
        }
        watchers.retain(|owner| {
            let msg: joerl_core::Message = match &event {
                NodeEvent::Up { node, creation } => Box::new(NodeUp {
                    node: node.clone(),
                    creation: *creation,
                }),
                NodeEvent::Down { node, reason } => Box::new(NodeDown {
                    node: node.clone(),
                    reason: reason.clone(),
                }),
            };
            // Past any mailbox bound: a node event is never dropped.
            !matches!(
                self.system.try_deliver(None, *owner, msg, usize::MAX),
                Err(SendError::NoProc(_))
            )
        });
    }

    fn track(&self, handle: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// The cookie, as its bytes.
    pub(crate) fn cookie(&self) -> &[u8] {
        &self.cookie
    }

    /// The EPMD port on other hosts.
    pub(crate) fn peer_epmd_port(&self) -> u16 {
        self.peer_epmd_port
    }

    /// The full name of the joerl node with id `id`, if this node knows it.
    pub(crate) fn node_name(&self, id: u32) -> Option<String> {
        if id == self.me.node_id {
            return Some(self.me.name.clone());
        }
        if let Some(p) = self.peers.get(&id) {
            return Some(p.name.clone());
        }
        self.table.forgotten_name(id)
    }

    /// Where `node` listens, as the resolvers say.
    pub(crate) async fn resolve_node(&self, node: &str) -> Result<Vec<SocketAddr>, DistError> {
        split_node_name(node)?;
        let resolver = self
            .resolver
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        resolver
            .resolve(node)
            .await?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| DistError::UnknownNode(node.to_string()))
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The peer for a full node name, created if new (then entered in the
    /// node table as learned `how`).
    pub(crate) fn peer_by_name(&self, node: &str, how: Learned) -> Result<Arc<Peer>, DistError> {
        let id = joerl_core::node_id(node);
        // The hot path (every named send): a known peer, read-locked.
        if let Some(p) = self.peers.get(&id) {
            if p.name == node {
                return Ok(p.clone());
            }
        }
        split_node_name(node)?;
        if node == self.me.name {
            return Err(DistError::Connect {
                node: node.into(),
                reason: "that is this node".into(),
            });
        }
        let peer = match self.peers.entry(id) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(e) => {
                let peer = Arc::new(Peer::new(node.to_string(), &self.me.name, &self.config));
                // Under the table's entry lock: a sweep cannot forget it first.
                self.table.learn(id, node, how);
                e.insert(peer).clone()
            }
        };
        if peer.name != node {
            return Err(DistError::Handshake {
                node: node.into(),
                source: HandshakeError::NodeIdCollision(format!(
                    "{node} and {} have the same node id {id}",
                    peer.name
                )),
            });
        }
        Ok(peer)
    }

    /// The peer with node id `id`; a forgotten one is known again by its name.
    pub(crate) fn peer_by_id(&self, id: u32) -> Option<Arc<Peer>> {
        if let Some(p) = self.peers.get(&id) {
            return Some(p.clone());
        }
        let name = self.table.forgotten_name(id)?;
        self.peer_by_name(&name, Learned::ByPid).ok()
    }

    /// Asks the peer's link for a dial (it starts one if idle).
    pub(crate) fn ensure_dialing(self: &Arc<Self>, peer: &Arc<Peer>) {
        if self.is_shutting_down() {
            return;
        }
        self.drive(peer, |m| m.want(false));
    }

    /// Runs one event of `peer`'s link machine (`event` calls it) and carries
    /// out the actions it asks for: under the machine's lock those that must
    /// keep its order (publishing the state for the send path, node events,
    /// dropping the queue, taking the relations that fail), then the rest.
    pub(crate) fn drive<R>(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        event: impl FnOnce(&mut LinkMachine) -> R,
    ) -> R {
        let mut link = peer.link();
        let r = event(&mut link);
        let later = self.act_locked(peer, &mut link);
        drop(link);
        self.act(peer, later);
        r
    }

    /// The part of the machine's actions carried out under its lock.
    fn act_locked(&self, peer: &Peer, link: &mut LinkMachine) -> Vec<Later> {
        let mut later = Vec::new();
        for action in link.drain() {
            match action {
                Action::Publish { up, conn } => peer.publish(up, conn),
                Action::Emit(event) => self.emit(match event {
                    link::Event::Up(creation) => NodeEvent::Up {
                        node: peer.name.clone(),
                        creation,
                    },
                    link::Event::Down(reason) => NodeEvent::Down {
                        node: peer.name.clone(),
                        reason,
                    },
                }),
                Action::Lost(reason) => {
                    // Under the lock, so a connection installed next keeps
                    // what is queued for it.
                    let dropped = self.clear_queue(peer);
                    let signals = peer.book().node_lost();
                    let owners = std::mem::take(
                        &mut *peer.node_monitors.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    later.push(Later::Lost {
                        reason,
                        dropped,
                        signals,
                        owners,
                    });
                }
                Action::Close { .. } => {
                    // Under the lock: a connection installed next attaches
                    // after this.
                    peer.queue.detach();
                    later.push(Later::Do(action));
                }
                other => later.push(Later::Do(other)),
            }
        }
        later
    }

    /// The part of the machine's actions carried out after its lock.
    fn act(self: &Arc<Self>, peer: &Arc<Peer>, later: Vec<Later>) {
        for l in later {
            match l {
                Later::Lost {
                    reason,
                    dropped,
                    signals,
                    owners,
                } => {
                    if let NodeDownReason::Unreachable(why) = &reason {
                        match UNREACHABLE_LOG.check() {
                            Some(suppressed) => {
                                tracing::warn!(node = %self.me.name, peer = %peer.name, reason = %why, dropped, suppressed, "giving up on the node until the next send")
                            }
                            None => {
                                tracing::debug!(node = %self.me.name, peer = %peer.name, reason = %why, dropped, "giving up on the node until the next send")
                            }
                        }
                    } else if dropped > 0 && !self.is_shutting_down() {
                        tracing::warn!(peer = %peer.name, dropped, %reason, "queued frames dropped: no connection will carry them");
                    }
                    for (to, sig) in signals {
                        self.system.deliver_signal(to, sig);
                    }
                    for owner in owners {
                        let msg = NodeDown {
                            node: peer.name.clone(),
                            reason: reason.clone(),
                        };
                        // Past any mailbox bound: never dropped while the owner lives.
                        let _ = self
                            .system
                            .try_deliver(None, owner, Box::new(msg), usize::MAX);
                    }
                }
                Later::Do(Action::Close {
                    conn,
                    reason,
                    up_for,
                }) => {
                    let tasks = {
                        let mut t = peer.tasks.lock().unwrap_or_else(|e| e.into_inner());
                        match t.take() {
                            Some((id, tasks)) if id == conn => tasks,
                            other => {
                                *t = other;
                                Vec::new()
                            }
                        }
                    };
                    for t in tasks {
                        t.abort();
                    }
                    self.log_closed(peer, &reason, up_for);
                }
                Later::Do(Action::Status { seq, status }) => {
                    peer.status.send_if_modified(|cur| {
                        if cur.0 >= seq {
                            return false;
                        }
                        *cur = (seq, status);
                        true
                    });
                }
                Later::Do(Action::StartDialer { dial, delay }) => {
                    tokio::spawn(dial_loop(self.clone(), peer.clone(), dial, delay));
                }
                Later::Do(Action::WakeDialer) => peer.dial_now.notify_one(),
                Later::Do(Action::GraceTimer { grace, after }) => {
                    let node = Arc::downgrade(self);
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        if let Some(node) = node.upgrade() {
                            node.drive(&peer, |m| m.grace_over(grace));
                        }
                    });
                }
                Later::Do(Action::Publish { .. } | Action::Emit(_) | Action::Lost(_)) => {
                    unreachable!("carried out under the lock")
                }
            }
        }
    }

    /// Where this node stands in the session with incarnation `creation` of
    /// `peer`, for the end of a handshake: whether it kept the session (its
    /// link is mending a cut to that incarnation) and how many of the peer's
    /// data frames it has read, with the link's epoch at that moment (the
    /// install is refused if it changed since). Waits first for the readers
    /// of earlier connections to stop, so the count is final; if they do not
    /// stop in time, the epoch returned matches none and the install is refused.
    async fn resume_point(
        &self,
        peer: &Peer,
        creation: u32,
    ) -> (crate::handshake::ResumePoint, u64) {
        let mut readers = peer.readers.subscribe();
        let stopped =
            tokio::time::timeout(self.config.connect_timeout, readers.wait_for(|n| *n == 0))
                .await
                .is_ok_and(|r| r.is_ok());
        let counted = *peer.rx_creation.lock().unwrap_or_else(|e| e.into_inner()) == Some(creation);
        let (kept, epoch) = {
            let link = peer.link();
            (link.keeps_session(creation), link.epoch())
        };
        let point = crate::handshake::ResumePoint {
            kept: stopped && kept,
            received: if counted {
                peer.received.load(Ordering::Relaxed)
            } else {
                0
            },
        };
        (point, if stopped { epoch } else { u64::MAX })
    }

    fn log_closed(&self, peer: &Peer, reason: &EndReason, up_for: Duration) {
        match reason {
            EndReason::Goodbye => {
                tracing::info!(node = %self.me.name, peer = %peer.name, "connection closed: goodbye")
            }
            EndReason::Malformed(_) => {
                if let Some(suppressed) = MALFORMED_LOG.check() {
                    tracing::warn!(node = %self.me.name, peer = %peer.name, reason = %reason, suppressed, "closing connection")
                }
            }
            EndReason::Superseded => {}
            // Asked for: said at info, not as a fault.
            EndReason::Disconnected(_) => tracing::info!(
                node = %self.me.name,
                peer = %peer.name,
                reason = %reason,
                up_for_ms = up_for.as_millis() as u64,
                "connection closed"
            ),
            _ if self.is_shutting_down() => {}
            _ => tracing::warn!(
                node = %self.me.name,
                peer = %peer.name,
                reason = %reason,
                up_for_ms = up_for.as_millis() as u64,
                "connection lost"
            ),
        }
    }

    /// Connects (if needed) before a call, with the call's errors.
    /// See [`DistributedSystem::disconnect`].
    pub(crate) fn disconnect(self: &Arc<Self>, node: &str, why: &str) -> bool {
        if let Some(erl) = self.erlang.peer(joerl_core::node_id(node)) {
            if erl.name == node {
                return self.erl_close(&erl, NodeDownReason::Disconnected(why.to_string()));
            }
        }
        let Some(peer) = self.peer_by_id(joerl_core::node_id(node)) else {
            return false;
        };
        if peer.name != node {
            return false;
        }
        let now = Instant::now();
        self.drive(&peer, |m| m.disconnect(why.to_string(), now));
        true
    }

    /// Names of the nodes connected now, sorted.
    pub(crate) fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .peers
            .iter()
            .filter(|p| p.is_up())
            .map(|p| p.name.clone())
            .chain(
                self.erlang
                    .peers
                    .iter()
                    .filter(|p| p.is_up())
                    .map(|p| p.name.clone()),
            )
            .collect();
        v.sort();
        v
    }

    /// Adds (`on`) or removes `owner` as a receiver of every node event.
    pub(crate) fn monitor_nodes(&self, owner: Pid, on: bool) {
        let mut watchers = self.node_watchers.lock().unwrap_or_else(|e| e.into_inner());
        if !on {
            watchers.retain(|p| *p != owner);
        } else if !watchers.contains(&owner) {
            watchers.push(owner);
        }
    }

    /// See [`DistributedSystem::monitor_node`].
    pub(crate) fn monitor_node(self: &Arc<Self>, owner: Pid, node: &str) -> Result<(), DistError> {
        if let Some(erl) = self.erl_peer_named(node) {
            self.erl_monitor_node(&erl, owner);
            return Ok(());
        }
        let peer = self.peer_by_name(node, Learned::Named)?;
        peer.node_monitors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(owner);
        if !peer.is_up() {
            self.ensure_dialing(&peer);
        }
        Ok(())
    }

    /// See [`DistributedSystem::whereis_remote`].
    pub(crate) async fn whereis_remote(
        &self,
        name: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<Option<Pid>, CallError> {
        if node == self.me.name {
            return Ok(self.system.whereis(name));
        }
        let kernel = ServerRef::<crate::net_kernel::NetKernel>::new((
            crate::net_kernel::NET_KERNEL_NAME,
            node,
        ));
        let reply = self
            .system
            .call_timeout(
                &kernel,
                crate::net_kernel::WhereIs(name.to_string()),
                timeout,
            )
            .await?;
        Ok(reply.0)
    }

    pub(crate) async fn connect(self: &Arc<Self>, node: &str) -> Result<(), DistError> {
        split_node_name(node)?;
        if self.dialect_of(node).await == crate::erlang::Dialect::Erlang {
            let erl = self.erlang.peer_for(self, node)?;
            return self.erl_connected(&erl).await;
        }
        let peer = self.peer_by_name(node, Learned::Named)?;
        if peer.is_up() {
            return Ok(());
        }
        if self.is_shutting_down() {
            return Err(DistError::ShuttingDown);
        }
        // Only an attempt that starts after this call counts, never the stale
        // result of an earlier one; and a dial waiting out its backoff dials now.
        let mut status = peer.status.subscribe();
        let before = self.drive(&peer, |m| {
            let before = m.attempts();
            m.want(true);
            before
        });
        let wait = status.wait_for(|(_, s)| match s {
            Status::Up | Status::Down { .. } => true,
            Status::Failed { attempt, .. } => *attempt > before,
            Status::Connecting => false,
        });
        let limit = self.config.connect_timeout * 2 + Duration::from_secs(1);
        let outcome = match tokio::time::timeout(limit, wait).await {
            Err(_) => return Err(DistError::Timeout(format!("connecting to {node}"))),
            Ok(Err(_)) => return Err(DistError::ShuttingDown),
            Ok(Ok(s)) => s.1.clone(),
        };
        match outcome {
            Status::Up => Ok(()),
            Status::Failed { error, .. }
            | Status::Down {
                error: Some(error), ..
            } => Err(error),
            Status::Down { reason, .. } => Err(DistError::NodeDown {
                node: node.into(),
                reason: reason.to_string(),
            }),
            Status::Connecting => unreachable!("waited for a final status"),
        }
    }

    /// Decides whether an incoming connection from `intro` may proceed (the
    /// peer's link decides).
    fn decide_incoming(
        self: &Arc<Self>,
        intro: &crate::handshake::Intro,
    ) -> Result<(Arc<Peer>, connection::Admit), crate::handshake::RefuseReason> {
        use crate::handshake::RefuseReason;
        if self.is_shutting_down() {
            return Err(RefuseReason::ShuttingDown);
        }
        let peer = self
            .peer_by_name(&intro.name, Learned::Accepted)
            .map_err(|e| match e {
                DistError::Handshake {
                    source: HandshakeError::NodeIdCollision(s),
                    ..
                } => RefuseReason::NodeIdCollision(s),
                other => RefuseReason::Other(other.to_string()),
            })?;
        let admit = self.drive(&peer, |m| m.incoming(intro.creation, Instant::now()));
        if matches!(admit, Err(RefuseReason::Simultaneous)) {
            PeerCounters::add(&self.simultaneous_refused, 1);
        }
        admit.map(|a| (peer, a))
    }

    /// Installs an authenticated connection to the peer, with what each side
    /// said of their session in the handshake (`shook`). Returns
    /// false (and drops the stream) if the peer's link refuses it (one is up
    /// already). Waits first for the reader of the peer's previous connection
    /// to stop, so nothing it read is delivered after what the new connection
    /// brings. A resumed session first replays what the peer has not read.
    async fn install(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        stream: crate::transport::Stream,
        shook: &connection::Shook,
    ) -> bool {
        let creation = shook.peer.creation;
        let theirs = shook.theirs;
        let _installing = peer.install_lock.lock().await;
        if peer.current_conn.load(Ordering::Acquire) != 0 || self.is_shutting_down() {
            return false;
        }
        let old_reader = peer.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old_reader {
            old.abort();
            let _ = old.await;
        }
        let (read, write) = stream.split();
        let sink = match &write {
            crate::transport::WriteSide::Tcp(w) => crate::outqueue::Sink::Direct(w.clone()),
            crate::transport::WriteSide::Tls(_) => crate::outqueue::Sink::writer(),
        };
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut link = peer.link();
        let kind = match link.install(
            conn_id,
            creation,
            shook.mine.kept && theirs.kept,
            shook.said_at,
            Instant::now(),
        ) {
            Ok(kind) => kind,
            Err(why) => {
                tracing::debug!(node = %self.me.name, peer = %peer.name, ?why, "connection not installed");
                return false;
            }
        };
        // Publishes this connection as the current one and reports the node
        // up, or down and up (under the lock, so it precedes this
        // connection's down).
        let later = self.act_locked(peer, &mut link);
        // The count of the peer's data frames read restarts with a new
        // incarnation.
        {
            let mut rx = peer.rx_creation.lock().unwrap_or_else(|e| e.into_inner());
            if *rx != Some(creation) {
                *rx = Some(creation);
                peer.received.store(0, Ordering::Relaxed);
            }
        }
        self.table
            .connected(joerl_core::node_id(&peer.name), creation);
        let replayed = {
            let mut accounting = peer.accounting();
            accounting.connection_up(creation, peer.queue.pushed_msgs());
            match kind {
                Installed::Resumed => {
                    accounting.acked(theirs.received);
                    peer.queue.replay(accounting.seq(theirs.received))
                }
                Installed::Fresh => {
                    accounting.resumed(theirs.received);
                    accounting.map_counts(peer.queue.taken_seq(), theirs.received);
                    0
                }
            }
        };
        peer.queue.attach(sink.clone());
        let w = {
            let node = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let tick = node.config.tick_interval();
                let counters = &peer.counters;
                let end = connection::write_loop(
                    write,
                    sink,
                    &peer.queue,
                    tick,
                    || peer.received.load(Ordering::Relaxed),
                    |n| PeerCounters::add(&counters.bytes_out, n as u64),
                )
                .await;
                node.connection_lost(&peer, conn_id, end);
            })
        };
        let r = {
            let node = self.clone();
            let peer = peer.clone();
            let guard = crate::peer::ReaderGuard::new(peer.clone());
            tokio::spawn(async move {
                let _running = guard;
                let mut sink =
                    crate::delivery::Dispatcher::new(node.clone(), peer.clone(), conn_id);
                let counters = &peer.counters;
                let end = connection::read_loop(
                    read,
                    node.config.max_frame_size,
                    node.config.tick_timeout,
                    &mut sink,
                    |n| {
                        PeerCounters::add(&counters.bytes_in, n as u64);
                        peer.heard();
                    },
                )
                .await;
                node.connection_lost(&peer, conn_id, end);
            })
        };
        *peer.tasks.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((conn_id, vec![w.abort_handle(), r.abort_handle()]));
        *peer.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        peer.heard();
        drop(link);
        self.act(peer, later);
        PeerCounters::add(&peer.counters.connects, 1);
        peer.queue.wake_writer();
        match kind {
            Installed::Fresh => {
                tracing::info!(node = %self.me.name, peer = %peer.name, creation, "connection up")
            }
            Installed::Resumed => {
                tracing::info!(node = %self.me.name, peer = %peer.name, creation, replayed, "connection resumed")
            }
        }
        true
    }

    /// Forgets peers that are down and used by nothing: not connected or
    /// dialing, nothing queued or parked, no link, monitor or `monitor_node`
    /// toward them, and no task or call holding them (the table's reference is
    /// the only one, checked while the table's entry is locked, so no new user
    /// can appear meanwhile). A peer must be found unused by two sweeps in a row.
    /// Their statistics move to the node's totals. Returns how many were forgotten.
    fn forget_idle_peers(&self) -> usize {
        let mut forgotten = Vec::new();
        // Held across the removal (see `stats`).
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids = Vec::new();
        self.peers.retain(|id, peer| {
            let unused = Arc::strong_count(peer) == 1
                && peer.link().is_idle()
                && peer.queue.depth() == 0
                && peer.parked.is_empty()
                && peer.book().sizes() == (0, 0, 0)
                && peer
                    .node_monitors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty();
            if !unused {
                peer.idle_sweeps.store(0, Ordering::Relaxed);
                return true;
            }
            if peer.idle_sweeps.fetch_add(1, Ordering::Relaxed) == 0 {
                return true;
            }
            forgotten.push(peer_stats(peer));
            ids.push(*id);
            false
        });
        self.table.forget(&ids);
        if !forgotten.is_empty() {
            for s in &forgotten {
                add_stats(&mut retired, s);
            }
            retired.connected = false;
            retired.queue_depth = 0;
            tracing::debug!(node = %self.me.name, count = forgotten.len(), "forgot idle peers");
        }
        forgotten.len()
    }

    /// Drops what is queued for `peer` (no connection will carry it) and
    /// records it for the loss accounting. Returns the frames dropped.
    pub(crate) fn clear_queue(&self, peer: &Peer) -> usize {
        // Under the accounting lock (taken before the queue's, as everywhere),
        // so no connection_up or RESUME settles in between.
        let mut accounting = peer.accounting();
        let cleared = peer.queue.clear();
        accounting.connection_lost(cleared.pushed_msgs, cleared.msgs);
        cleared.frames
    }

    /// Connection `conn_id` of `peer` ended with `reason` (its link decides
    /// what follows: node down, redial).
    pub(crate) fn connection_lost(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn_id: u64,
        reason: EndReason,
    ) {
        self.drive(peer, |m| {
            m.connection_closed(conn_id, reason, Instant::now())
        });
    }

    async fn dial_once(self: &Arc<Self>, peer: &Arc<Peer>, dial: u64) -> Result<Dialed, DistError> {
        split_node_name(&peer.name)?;
        let resolver = self
            .resolver
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let addrs = resolver
            .resolve(&peer.name)
            .await?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| DistError::UnknownNode(peer.name.clone()))?;
        // From here to the end of the attempt the simultaneous-connect rule
        // sees this dial.
        self.drive(peer, |m| m.handshake_started(dial));
        let mut result = Err(DistError::UnknownNode(peer.name.clone()));
        for addr in addrs {
            result = self.connect_and_handshake(peer, addr).await;
            // Another address only when this one took no TCP connection.
            if !matches!(result, Err(DistError::Unreachable { .. })) {
                break;
            }
        }
        result
    }

    async fn connect_and_handshake(
        &self,
        peer: &Peer,
        addr: SocketAddr,
    ) -> Result<Dialed, DistError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| DistError::Unreachable {
                node: peer.name.clone(),
                addr: addr.to_string(),
                source: Arc::new(source),
            })?;
        let _ = tcp.set_nodelay(true);
        let handshake_error = |source| DistError::Handshake {
            node: peer.name.clone(),
            source,
        };
        let mut stream = self
            .transport
            .connect(tcp, &peer.name)
            .await
            .map_err(handshake_error)?;
        let shook = connection::dial(
            &mut stream,
            &self.me,
            &self.cookie,
            &peer.name,
            || peer.link().wants_dialed_connection(),
            async |creation| self.resume_point(peer, creation).await,
        )
        .await
        .map_err(handshake_error)?;
        self.table.dialed(joerl_core::node_id(&peer.name), addr);
        Ok((stream, shook))
    }

    async fn shutdown(self: &Arc<Self>) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(node = %self.me.name, "node shutting down");
        let _ = self.shutdown_tx.send(true);
        // No link dials or admits from now on, nor redials what ends.
        let peers: Vec<Arc<Peer>> = self.peers.iter().map(|p| p.clone()).collect();
        for p in &peers {
            self.drive(p, |m| m.begin_stop());
        }
        // Actors first: their links and monitors to other nodes fire with `shutdown`.
        self.system
            .shutdown_with_grace(self.config.shutdown_grace)
            .await;
        // Erlang nodes have no goodbye: once what the actors' exits sent is
        // written, their connections close.
        let erlang: Vec<_> = self.erlang.peers.iter().map(|p| p.clone()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for p in &erlang {
            while p.is_up() && !p.is_flushed() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.erl_close(p, NodeDownReason::ShuttingDown);
        }
        // Then say goodbye on every connection and let the writers flush.
        for p in &peers {
            if p.is_up() {
                let received = p.received.load(Ordering::Relaxed);
                let _ = p.queue.push::<()>(true, false, |b| {
                    frame::put_goodbye(b, received);
                    Ok(())
                });
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for p in &peers {
            while p.is_up() && !p.queue.is_flushed() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        for p in &peers {
            self.drive(p, |m| m.stop(Instant::now()));
        }
        let guard = self
            .registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match guard {
            Some(EpmdEntry::Joerl(guard)) => {
                if let Err(e) = guard.unregister().await {
                    tracing::warn!(node = %self.me.name, error = %e, "could not unregister from EPMD");
                }
            }
            Some(EpmdEntry::Erlang(reg)) => reg.close().await,
            None => {}
        }
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        // Subscribers' streams end.
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::info!(node = %self.me.name, "node stopped");
    }

    /// Best-effort synchronous stop, used when the last handle is dropped.
    fn stop_now(self: &Arc<Self>) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.shutdown_tx.send(true);
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        // One down per up, also when the node stops this way.
        let peers: Vec<Arc<Peer>> = self.peers.iter().map(|p| p.clone()).collect();
        for p in &peers {
            self.drive(p, |m| m.stop(Instant::now()));
        }
        let erlang: Vec<_> = self.erlang.peers.iter().map(|p| p.clone()).collect();
        for p in &erlang {
            self.erl_close(p, NodeDownReason::ShuttingDown);
        }
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Dropping the guard unregisters from EPMD in the background.
        drop(
            self.registration
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

async fn accept_loop(node: Arc<NodeInner>, listener: TcpListener) {
    let mut stop = node.shutdown_tx.subscribe();
    loop {
        let (stream, addr) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(node = %node.me.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // Erlang's handshake starts with a 2-byte length and 'N'; joerl's
            // with a 4-byte length. Plain TCP only: Erlang over TLS is not
            // spoken.
            if node.transport.is_tcp() && node.erlang.me.is_some() {
                let mut first = [0u8; 3];
                let peeked = tokio::time::timeout(node.config.connect_timeout, async {
                    loop {
                        match stream.peek(&mut first).await {
                            Ok(n) if n >= 3 => return true,
                            Ok(0) | Err(_) => return false,
                            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                })
                .await;
                if matches!(peeked, Ok(true)) && crate::erlang::dist::looks_like_erlang(&first) {
                    node.erl_accept(stream, addr).await;
                    return;
                }
            }
            let chosen = Mutex::new(None);
            let handshake = async {
                let mut stream = node.transport.accept(stream).await?;
                let shook = connection::accept(
                    &mut stream,
                    &node.me,
                    &node.cookie,
                    |intro| {
                        let (peer, admit) = node.decide_incoming(intro)?;
                        *chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
                        Ok(admit)
                    },
                    |old| {
                        let peer = chosen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        match peer {
                            Some(peer) => {
                                node.drive(&peer, |m| m.half_open_confirmed(old, Instant::now()))
                            }
                            None => Ok(()),
                        }
                    },
                    async |creation| {
                        let peer = chosen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        match peer {
                            Some(peer) => node.resume_point(&peer, creation).await,
                            None => (
                                crate::handshake::ResumePoint {
                                    kept: false,
                                    received: 0,
                                },
                                u64::MAX,
                            ),
                        }
                    },
                )
                .await?;
                Ok::<_, HandshakeError>((stream, shook))
            };
            let outcome = tokio::time::timeout(node.config.connect_timeout, handshake).await;
            let peer = chosen.lock().unwrap_or_else(|e| e.into_inner()).take();
            let installed = match (outcome, peer.as_ref()) {
                (Ok(Ok((stream, shook))), Some(peer)) => {
                    let installed = node.install(peer, stream, &shook).await;
                    if !installed {
                        tracing::debug!(peer = %shook.peer.name, "incoming connection dropped");
                    }
                    installed
                }
                (Ok(Ok(_)), None) => false,
                (Ok(Err(HandshakeError::Simultaneous)), _)
                | (Ok(Err(HandshakeError::AlreadyConnected)), _) => false,
                (Ok(Err(e)), _) => {
                    PeerCounters::add(&node.refused_incoming, 1);
                    if let Some(suppressed) = REFUSED_LOG.check() {
                        tracing::warn!(node = %node.me.name, %addr, error = %e, suppressed, "incoming connection refused");
                    }
                    false
                }
                (Err(_), _) => {
                    PeerCounters::add(&node.refused_incoming, 1);
                    if let Some(suppressed) = REFUSED_LOG.check() {
                        tracing::warn!(node = %node.me.name, %addr, suppressed, "incoming handshake timed out");
                    }
                    false
                }
            };
            // Admitted by the link (which counted it): it ends here.
            if let Some(peer) = &peer {
                node.drive(peer, |m| m.accept_ended(installed));
            }
        });
    }
}

fn jitter(d: Duration) -> Duration {
    // 50% to 150% of the delay.
    let f = 0.5 + rand::random::<f64>();
    d.mul_f64(f)
}

/// Dial number `dial` of `peer`: attempts until connected, as its link
/// says (backoff, give up). `delay`: wait this long first (`connect` cuts it
/// short, as it cuts every backoff short).
async fn dial_loop(node: Arc<NodeInner>, peer: Arc<Peer>, dial: u64, delay: Option<Duration>) {
    if let Some(delay) = delay {
        tokio::select! {
            _ = tokio::time::sleep(jitter(delay)) => {}
            _ = peer.dial_now.notified() => {}
        }
    }
    let mut failures = 0u32;
    loop {
        // Numbered as it starts: `connect` waits for an attempt that started
        // after it was called.
        let Some(attempt) = node.drive(&peer, |m| m.attempt_started(dial)) else {
            return;
        };
        let result =
            tokio::time::timeout(node.config.connect_timeout, node.dial_once(&peer, dial)).await;
        let failure: DistError = match result {
            Ok(Ok((stream, shook))) => {
                if node.install(&peer, stream, &shook).await {
                    return;
                }
                // Not installed: another connection is up (then this dial
                // is over), or what the handshake said is stale (then it
                // counts as a failed attempt, and the dial goes on).
                DistError::Connect {
                    node: peer.name.clone(),
                    reason: "the new connection was not installed: another came up, or the session changed during the handshake".into(),
                }
            }
            Ok(Err(e)) => e,
            Err(_) => DistError::Timeout(format!(
                "connect and handshake with {} took longer than {:?}",
                peer.name, node.config.connect_timeout
            )),
        };
        failures += 1;
        let auth = matches!(
            failure,
            DistError::Handshake {
                source: HandshakeError::AuthenticationFailed,
                ..
            }
        );
        // Losing a simultaneous connect is the rule working, not a fault.
        let simultaneous = matches!(
            failure,
            DistError::Handshake {
                source: HandshakeError::Simultaneous,
                ..
            }
        );
        let warn = (failures == 1 || auth) && !simultaneous;
        if let Some(suppressed) = warn.then(|| UNREACHABLE_LOG.check()).flatten() {
            tracing::warn!(node = %node.me.name, peer = %peer.name, reason = %failure, suppressed, "cannot connect");
        } else {
            tracing::debug!(node = %node.me.name, peer = %peer.name, reason = %failure, failures, "cannot connect");
        }
        match node.drive(&peer, |m| m.attempt_failed(dial, attempt, failure)) {
            Next::Stop => return,
            Next::Retry(wait) => {
                // Back off, unless `connect` asks for an attempt now.
                tokio::select! {
                    _ = tokio::time::sleep(jitter(wait)) => {}
                    _ = peer.dial_now.notified() => {}
                }
            }
        }
    }
}

/// Runs [`NodeInner::forget_idle_peers`] every `peer_sweep_interval`.
async fn peer_sweep_loop(node: Weak<NodeInner>) {
    loop {
        let every = match node.upgrade() {
            Some(n) if !n.is_shutting_down() => n.config.peer_sweep_interval,
            _ => return,
        };
        tokio::time::sleep(every).await;
        match node.upgrade() {
            Some(n) if !n.is_shutting_down() => {
                n.forget_idle_peers();
            }
            _ => return,
        }
    }
}

async fn discovery_loop(node: Weak<NodeInner>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        if n.is_shutting_down() {
            return;
        }
        match n.epmd.list().await {
            Ok(list) => {
                for info in list {
                    if info.name == n.short_name {
                        continue;
                    }
                    let Some(full) = joerl_node_name(&info) else {
                        continue;
                    };
                    match n.peer_by_name(&full, Learned::Discovered) {
                        Ok(peer) => {
                            if !peer.is_up() {
                                n.ensure_dialing(&peer);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(node = %full, error = %e, "discovered node skipped")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "discovery: EPMD list failed"),
        }
        let every = n.config.discovery_interval;
        drop(n);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod name_tests {
    use super::split_node_name;
    use crate::error::DistError;

    #[test]
    fn node_names_are_checked_in_both_parts() {
        for good in [
            "a@localhost",
            "node_a@127.0.0.1",
            "n-1.x@host.example.com",
            "n@::1",
            "n@fe80::1",
            "n@my_host",
        ] {
            assert!(split_node_name(good).is_ok(), "{good}");
        }
        for bad in [
            "pz@not a host",
            "no-at-sign",
            "@host",
            "n@",
            "n@a@b",
            "n@-host",
            "n@host-",
            "n@a..b",
            "n@host/path",
            "na me@host",
            "n@ä.example",
        ] {
            assert!(
                matches!(split_node_name(bad), Err(DistError::InvalidNodeName(_))),
                "{bad}"
            );
        }
        let long_label = format!("n@{}.com", "a".repeat(64));
        assert!(split_node_name(&long_label).is_err());
    }
}

#[cfg(test)]
mod tests {
    //! Bad frames on an authenticated connection: a fake peer that passed the
    //! handshake sends what no joerl node would.

    use super::*;
    use crate::{codec, frame};
    use joerl_core::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DEADLINE: Duration = Duration::from_secs(20);

    async fn epmd() -> joerl_epmd::EpmdServer {
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
        ))
        .await
        .unwrap()
    }

    async fn node(name: &str, epmd: SocketAddr) -> DistributedSystem {
        NodeBuilder::new(name, "127.0.0.1:0".parse().unwrap(), epmd)
            .cookie("k")
            .start()
            .await
            .unwrap()
    }

    /// An authenticated raw connection to `node`, as the fake node `name`.
    async fn fake_peer(node: &DistributedSystem, name: &str) -> TcpStream {
        let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
        let me = LocalIdentity {
            name: name.to_string(),
            node_id: joerl_core::node_id(name),
            creation: 7,
        };
        connection::dial(
            &mut stream,
            &me,
            b"k",
            node.name(),
            || true,
            async |_| {
                (
                    crate::handshake::ResumePoint {
                        kept: false,
                        received: 0,
                    },
                    0,
                )
            },
        )
        .await
        .expect("handshake");
        stream
    }

    /// True once the other side has closed the connection.
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 256];
        tokio::time::timeout(DEADLINE, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue, // ticks
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    struct Forward(tokio::sync::mpsc::UnboundedSender<Message>);
    impl joerl_core::Actor for Forward {
        async fn handle_message(&mut self, msg: Message, _ctx: &mut joerl_core::ActorContext) {
            let _ = self.0.send(msg);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_and_malformed_frames_close_only_that_connection() {
        let epmd = epmd().await;
        let a = node("victim", epmd.local_addr()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = a.spawn(Forward(tx));
        a.register("sink", sink).unwrap();

        // A frame claiming 4 GiB: refused before anything is allocated for it.
        let mut s = fake_peer(&a, "fake1@127.0.0.1").await;
        s.write_all(&[0xff, 0xff, 0xff, 0xff, frame::tag::SEND])
            .await
            .unwrap();
        assert!(
            closed_by_peer(&mut s).await,
            "oversized frame closes the connection"
        );

        // An unknown frame tag.
        let mut s = fake_peer(&a, "fake2@127.0.0.1").await;
        s.write_all(&[0, 0, 0, 1, 99]).await.unwrap();
        assert!(
            closed_by_peer(&mut s).await,
            "unknown tag closes the connection"
        );

        // A message of a type this node does not know: counted, connection stays.
        let mut s = fake_peer(&a, "fake3@127.0.0.1").await;
        let mut out = Vec::new();
        let start = frame::begin_send(&mut out, None, sink);
        out.push(0); // plain
        out.extend_from_slice(&0xdead_beef_u64.to_be_bytes());
        frame::finish(&mut out, start, 1 << 20).unwrap();
        // Then a valid one, which must still arrive.
        let start = frame::begin_send_named(&mut out, None, "sink").unwrap();
        codec::encode_message(&(Box::new("still up".to_string()) as Message), &mut out).unwrap();
        frame::finish(&mut out, start, 1 << 20).unwrap();
        s.write_all(&out).await.unwrap();
        let got = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*got.downcast::<String>().unwrap(), "still up");
        let stats = a.stats();
        let p = stats
            .peers
            .iter()
            .find(|p| p.node == "fake3@127.0.0.1")
            .unwrap();
        assert_eq!(p.unknown_types, 1);
        assert!(p.connected);

        // And the node keeps serving real peers.
        let b = node("bystander", epmd.local_addr()).await;
        b.send(("sink", a.name()), "from b".to_string())
            .await
            .unwrap();
        let got = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*got.downcast::<String>().unwrap(), "from b");
        drop(s);
        a.shutdown().await;
        b.shutdown().await;
    }
}
