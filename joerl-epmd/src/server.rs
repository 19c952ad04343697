//! The daemon: tokio listeners in front of the shared [`Registry`].
//!
//! The structure follows tokio's mini-redis: an accept loop per listening
//! address (one by default; epmd listens on several, see
//! [`ServerConfig::extra_listen_addrs`]) hands each socket to its own task; a
//! `Connection` turns the socket's bytes into frames (with the parsing itself
//! in [`crate::protocol`]); one watch channel carries the shutdown signal to
//! the accept loops, the reaper and every connection; an
//! mpsc channel whose senders are held by those tasks tells [`EpmdServer::shutdown`]
//! when the last of them has finished.
//!
//! One shortcut: a complete `PORT_PLEASE2_REQ` that is already waiting when
//! its connection is accepted is answered by the accept loop itself, without
//! registering the socket with the reactor or spawning a task. This is what
//! lets the daemon keep up with epmd's rate of connection-per-lookup clients.
//!
//! Connection handling mirrors the real epmd: one Erlang request per
//! connection, answered and then closed, except `ALIVE2_REQ`, whose connection
//! stays open and holds the registration (any further byte on it, or its close,
//! removes the node). An Erlang request that arrives together with more bytes
//! (before the daemon has read all of it) is closed without a reply, as epmd
//! does; in particular such an `ALIVE2_REQ` registers nothing. joerl requests
//! may follow each other on one connection.
//!
//! # Limits
//!
//! * **Connections**: at most [`ServerConfig::max_connections`] hold a slot. At
//!   the limit a complete `PORT_PLEASE2_REQ` is still answered at once (it needs
//!   no slot); any other new connection takes the slot of the connection that
//!   has waited longest, either blocked writing to a peer that does not read or
//!   waiting for a request, provided that connection holds no registration (it
//!   is closed). Connections holding registrations are never closed this way;
//!   when they hold every slot, the new connection is closed at once, as epmd does.
//! * **Writes**: a reply write that makes no progress for
//!   [`ServerConfig::write_timeout`] closes its connection with a reset (so the
//!   kernel drops what it still buffers for it). A connection has at most one
//!   reply in flight; the large replies (`NAMES_REQ`, `DUMP_REQ`, joerl list) are
//!   built once per state of the table and shared by every connection sending
//!   them (at most [`ServerConfig::max_reply_memory`] of such copies: beyond
//!   that a request gets the previous copy), and each connection's kernel send
//!   buffer is [`ServerConfig::send_buffer_bytes`].
//! * **Requests**: at most [`ServerConfig::max_request_bytes`]; connections that
//!   hold no registration are closed after [`ServerConfig::idle_timeout`]
//!   without a complete request.
//! * **Registrations**: at most [`ServerConfig::max_nodes`] in all,
//!   [`ServerConfig::max_registrations_per_connection`] per connection and
//!   [`ServerConfig::max_registrations_per_source`] per source address
//!   ([`RegistryError::TooManyRegistrations`]).
//!
//! Anything malformed closes that one connection; the daemon goes on serving
//! everyone else. Every line a peer can cause is rate limited per cause with a
//! [`LogLimiter`] (the first line after a dropped one carries `suppressed = N`),
//! and every cause has a counter in [`EpmdServer::stats`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

use crate::error::{ProtocolError, RegistryError, ServerError};
use crate::log_limit::LogLimiter;
use crate::protocol::{
    self, Alive2Reply, CREATION_ON_REFUSAL, EPMD_MAX_REQUEST_BYTES, JOERL_PROTOCOL_VERSION,
    JoerlReply, JoerlRequest, MAX_FRAME_BODY, NamesReply, NodeInfo, NodeKind, PORT2_MISS,
    PongReply, PortPleaseReply, RegisteredReply, Request,
};
use crate::registry::{
    self, ConnectionId, DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION,
    DEFAULT_MAX_REGISTRATIONS_PER_SOURCE, Lifetime, NewRegistration, Registry, RegistryLimits,
};

/// The port Erlang's epmd listens on.
pub const DEFAULT_EPMD_PORT: u16 = 4369;
/// Default [`ServerConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ServerConfig::send_buffer_bytes`].
pub const DEFAULT_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// Default [`ServerConfig::max_reply_memory`].
pub const DEFAULT_MAX_REPLY_MEMORY: usize = 16 * 1024 * 1024;

/// Settings of the daemon. [`ServerConfig::default`] matches the real epmd where
/// it has a setting, and the joerl defaults elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:4369`; port 0 picks a free port).
    /// It must be bound, or [`EpmdServer::bind`] fails.
    pub listen_addr: SocketAddr,
    /// More addresses to listen on (default none), all serving the same node
    /// table. Port 0 here means the port `listen_addr` was bound to. Each must
    /// be bound, except that an address whose family the system does not
    /// support (IPv6 on a kernel without it) is logged and skipped, as epmd
    /// does. With more than one address, IPv6 sockets are IPv6-only, so `::`
    /// and `0.0.0.0` can share a port (epmd's `IPV6_V6ONLY`).
    pub extra_listen_addrs: Vec<SocketAddr>,
    /// Addresses listened on when possible (default none): one that cannot
    /// be bound is logged and skipped, unless its port is in use there (which
    /// fails [`EpmdServer::bind`], as for any address). epmd treats the
    /// loopback addresses it adds to an `-address` list this way, so `::1` on
    /// a host without IPv6 costs nothing. Port 0 as in `extra_listen_addrs`.
    pub optional_listen_addrs: Vec<SocketAddr>,
    /// Most connections holding a slot (default 1000). At the limit a new
    /// connection takes the slot of the longest-waiting connection that holds no
    /// registration and is blocked writing or waiting for a request; if there is
    /// none, the new connection is closed at once, as epmd does.
    pub max_connections: usize,
    /// A connection holding no registration is closed after this long without
    /// activity (default 60 s, epmd's packet timeout); what counts as activity
    /// is [`ServerConfig::idle_activity`].
    pub idle_timeout: Duration,
    /// What restarts the [`ServerConfig::idle_timeout`] clock (default
    /// [`IdleActivity::Request`]).
    pub idle_activity: IdleActivity,
    /// A connection is closed (with a reset) when writing a reply to it makes no
    /// progress for this long, i.e. its peer does not read (default 5 s).
    pub write_timeout: Duration,
    /// Kernel send buffer of each connection (`SO_SNDBUF`, set on the listening
    /// socket and inherited by accepted ones), which bounds what a peer that
    /// does not read makes the kernel hold for it (default 64 KiB; `None`: the
    /// system default, which Linux grows up to 4 MiB per connection).
    pub send_buffer_bytes: Option<usize>,
    /// Memory for the replies built from the whole table (`NAMES_REQ`,
    /// `DUMP_REQ`, joerl list), which all connections asking while the table
    /// is unchanged share. When copies still being written to slow readers
    /// use this much, a request after a change of the table gets the previous
    /// copy instead of a new one (default 16 MiB).
    pub max_reply_memory: usize,
    /// Largest request body accepted, in bytes (default 4096; at most 65535).
    pub max_request_bytes: usize,
    /// Wait this long between a listening socket becoming ready and accepting
    /// the connection (default none), like epmd's `-delay_accept`: a way to
    /// test clients against a busy daemon. Only the accepting waits; open
    /// connections are served meanwhile.
    pub delay_accept: Option<Duration>,
    /// Wait this long before writing each reply (default none), like epmd's
    /// `-delay_write`. The wait is part of writing: the write timeout starts
    /// after it, and the connection counts as writing meanwhile.
    pub delay_write: Option<Duration>,
    /// Lease granted when a joerl client asks for the default (default 60 s).
    pub default_lease: Duration,
    /// Renewal interval the daemon asks lease holders to use (default 20 s).
    pub keepalive_interval: Duration,
    /// Shortest lease granted; shorter requests are raised to it (default 1 s).
    pub min_lease: Duration,
    /// Longest lease granted; longer requests are cut to it (default 1 h).
    pub max_lease: Duration,
    /// How often the reaper looks for expired leases (default: a quarter of
    /// the shortest lease, between 10 ms and 1 s).
    pub reap_interval: Option<Duration>,
    /// Like epmd's `-relaxed_command_check`: allow `KILL_REQ` while nodes are
    /// registered and allow `STOP_REQ` at all (default off).
    pub relaxed_command_check: bool,
    /// Accept joerl registrations from non-loopback peers (default off; Erlang
    /// `ALIVE2_REQ` is only ever accepted from loopback, as in epmd).
    pub allow_remote_register: bool,
    /// Most live registrations (Erlang and joerl together); more are refused
    /// (default 10000).
    pub max_nodes: usize,
    /// Most live registrations made on one connection (default 64). Leases
    /// count against the connection that made them until they end.
    pub max_registrations_per_connection: usize,
    /// Most live registrations from one source address, all connections
    /// together (default 256). The source is the peer's IPv4 address or the /64
    /// prefix of its IPv6 address; local nodes usually all come from
    /// `127.0.0.1`, so this also bounds the nodes of one host.
    pub max_registrations_per_source: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_EPMD_PORT),
            extra_listen_addrs: Vec::new(),
            optional_listen_addrs: Vec::new(),
            max_connections: 1000,
            idle_timeout: Duration::from_secs(60),
            idle_activity: IdleActivity::Request,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            send_buffer_bytes: Some(DEFAULT_SEND_BUFFER_BYTES),
            max_reply_memory: DEFAULT_MAX_REPLY_MEMORY,
            max_request_bytes: 4096,
            delay_accept: None,
            delay_write: None,
            default_lease: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            min_lease: Duration::from_secs(1),
            max_lease: Duration::from_secs(3600),
            reap_interval: None,
            relaxed_command_check: false,
            allow_remote_register: false,
            max_nodes: crate::registry::DEFAULT_MAX_NODES,
            max_registrations_per_connection: DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION,
            max_registrations_per_source: DEFAULT_MAX_REGISTRATIONS_PER_SOURCE,
        }
    }
}

/// What restarts the idle clock of a connection that holds no registration
/// ([`ServerConfig::idle_timeout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdleActivity {
    /// A complete request: a peer that trickles the bytes of a request is
    /// closed after the idle timeout all the same (joerl's default).
    #[default]
    Request,
    /// Any bytes received, as epmd measures its `-packet_timeout`: it notes
    /// the time of every read that returns data and closes a connection whose
    /// last such read is older than the timeout.
    AnyBytes,
}

impl ServerConfig {
    /// Defaults, listening on `listen_addr`.
    pub fn new(listen_addr: SocketAddr) -> Self {
        Self {
            listen_addr,
            ..Self::default()
        }
    }

    /// Checks that the settings fit together.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |msg: String| Err(ServerError::InvalidConfig(msg));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.max_nodes == 0 {
            return bad("max_nodes must be at least 1".into());
        }
        if self.max_registrations_per_connection == 0 {
            return bad("max_registrations_per_connection must be at least 1".into());
        }
        if self.max_registrations_per_source == 0 {
            return bad("max_registrations_per_source must be at least 1".into());
        }
        if self.max_request_bytes == 0 || self.max_request_bytes > MAX_FRAME_BODY {
            return bad(format!(
                "max_request_bytes must be between 1 and {MAX_FRAME_BODY}, got {}",
                self.max_request_bytes
            ));
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout must be positive".into());
        }
        if self.write_timeout.is_zero() {
            return bad("write_timeout must be positive".into());
        }
        if self.max_reply_memory == 0 {
            return bad("max_reply_memory must be at least 1".into());
        }
        if let Some(bytes) = self.send_buffer_bytes {
            if bytes == 0 || u32::try_from(bytes).is_err() {
                return bad(format!(
                    "send_buffer_bytes must be between 1 and {}, got {bytes}",
                    u32::MAX
                ));
            }
        }
        if self.min_lease.is_zero() || self.min_lease > self.max_lease {
            return bad(format!(
                "need 0 < min_lease <= max_lease, got {:?} and {:?}",
                self.min_lease, self.max_lease
            ));
        }
        if self.default_lease < self.min_lease || self.default_lease > self.max_lease {
            return bad(format!(
                "default_lease {:?} must lie between min_lease {:?} and max_lease {:?}",
                self.default_lease, self.min_lease, self.max_lease
            ));
        }
        if self.keepalive_interval.is_zero() || self.keepalive_interval >= self.default_lease {
            return bad(format!(
                "keepalive_interval {:?} must be positive and shorter than default_lease {:?}",
                self.keepalive_interval, self.default_lease
            ));
        }
        if self.reap_interval.is_some_and(|d| d.is_zero()) {
            return bad("reap_interval must be positive".into());
        }
        Ok(())
    }

    /// The reaper's period in force.
    pub fn effective_reap_interval(&self) -> Duration {
        self.reap_interval.unwrap_or_else(|| {
            (self.min_lease.min(self.default_lease) / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1))
        })
    }

    /// The lease granted for a request of `requested_ms` (0: the default).
    pub fn grant_lease(&self, requested_ms: u64) -> Duration {
        if requested_ms == 0 {
            return self.default_lease;
        }
        Duration::from_millis(requested_ms).clamp(self.min_lease, self.max_lease)
    }

    /// The bounds of the node table these settings call for.
    pub fn registry_limits(&self) -> RegistryLimits {
        RegistryLimits {
            max_nodes: self.max_nodes,
            max_per_connection: self.max_registrations_per_connection,
            max_per_source: self.max_registrations_per_source,
        }
    }
}

/// What the daemon has done since it started ([`EpmdServer::stats`]): one
/// counter per cause of closed connections and refused requests, and the
/// number of open connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted (all of them: answered at once, served, refused).
    pub connections_accepted: u64,
    /// Connections holding a slot now (a gauge, not a counter).
    pub open_connections: u64,
    /// Connections holding no registration that are writing a reply now (a
    /// gauge; a peer that does not read keeps its connection here until the
    /// write timeout, or until it is closed to make room).
    pub writing_connections: u64,
    /// Connections closed as soon as accepted because every slot was held by a
    /// connection holding a registration.
    pub connections_refused: u64,
    /// Connections closed to make room for a new one at the connection limit
    /// (they were blocked writing, or waiting for a request).
    pub connections_evicted: u64,
    /// Connections closed because a reply write made no progress for
    /// [`ServerConfig::write_timeout`].
    pub write_timeouts: u64,
    /// `NAMES_REQ`, `DUMP_REQ` and joerl list requests answered with an older
    /// copy of the table because copies still being written to slow readers
    /// held [`ServerConfig::max_reply_memory`].
    pub stale_replies: u64,
    /// Connections closed after bad input: a bad length prefix, a truncated,
    /// malformed or unknown request, or an Erlang request followed by more bytes.
    pub malformed_requests: u64,
    /// Registrations refused (`ALIVE2_REQ` or joerl, for any reason: name taken,
    /// invalid, not permitted from that peer, or a limit reached).
    pub registrations_refused: u64,
    /// `DUMP_REQ`, `KILL_REQ` and `STOP_REQ` refused (non-local peer, nodes
    /// registered, or no `relaxed_command_check`).
    pub commands_refused: u64,
    /// `ALIVE2_REQ` connections closed because the node sent more bytes after
    /// the reply (its registration was removed).
    pub alive2_unexpected_data: u64,
}

/// The atomics behind [`ServerStats`].
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    write_timeouts: AtomicU64,
    stale_replies: AtomicU64,
    malformed: AtomicU64,
    registrations_refused: AtomicU64,
    commands_refused: AtomicU64,
    alive2_data: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Lines per second for each cause of lines about bad or refused input.
const BAD_INPUT_LINES_PER_SECOND: u32 = 5;
/// Lines per second for each kind of routine event (registered, removed, expired).
const EVENT_LINES_PER_SECOND: u32 = 20;

/// One [`LogLimiter`] per cause of log lines a peer can trigger.
#[derive(Debug)]
struct Limiters {
    bad_input: LogLimiter,
    refused_registration: LogLimiter,
    refused_command: LogLimiter,
    alive2_data: LogLimiter,
    connection_limit: LogLimiter,
    write_timeout: LogLimiter,
    reply_memory: LogLimiter,
    internal: LogLimiter,
    registered: LogLimiter,
    unregistered: LogLimiter,
    expired: LogLimiter,
}

impl Limiters {
    const fn new() -> Self {
        Self {
            bad_input: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            refused_registration: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            refused_command: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            alive2_data: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            connection_limit: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            write_timeout: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            reply_memory: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            internal: LogLimiter::new(BAD_INPUT_LINES_PER_SECOND),
            registered: LogLimiter::new(EVENT_LINES_PER_SECOND),
            unregistered: LogLimiter::new(EVENT_LINES_PER_SECOND),
            expired: LogLimiter::new(EVENT_LINES_PER_SECOND),
        }
    }
}

/// Logs a line at `$level` if `$limiter` lets it pass, adding
/// `suppressed = N` when lines of that cause were dropped since the last one.
macro_rules! limited {
    ($level:ident, $limiter:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limiter.check() {
            if suppressed > 0 {
                ::tracing::$level!(suppressed, $($arg)+);
            } else {
                ::tracing::$level!($($arg)+);
            }
        }
    };
}

// What a connection is doing, for the choice of whom to close at the limit.
/// Reading or handling a request (never closed to make room).
const SLOT_BUSY: u8 = 0;
/// Waiting for a request, holding no registration.
const SLOT_IDLE: u8 = 1;
/// Writing a reply, holding no registration.
const SLOT_WRITING: u8 = 2;
/// Holding a registration (never closed to make room).
const SLOT_HOLDING: u8 = 3;
/// Chosen to make room: the connection closes at its next step.
const SLOT_EVICTED: u8 = 4;

/// A connection's claim on one of the `max_connections` slots.
#[derive(Debug)]
struct Slot {
    state: AtomicU8,
    /// When the current state began (milliseconds since the daemon started).
    since_ms: AtomicU64,
    /// Woken when the slot is taken away.
    evicted: Notify,
}

impl Slot {
    fn new(now_ms: u64) -> Self {
        Self {
            state: AtomicU8::new(SLOT_BUSY),
            since_ms: AtomicU64::new(now_ms),
            evicted: Notify::new(),
        }
    }

    /// Moves to `state`; `false` if the slot was taken away (the connection must close).
    fn enter(&self, state: u8, now_ms: u64) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current == SLOT_EVICTED {
                return false;
            }
            if current == state {
                return true;
            }
            self.since_ms.store(now_ms, Ordering::Relaxed);
            match self.state.compare_exchange_weak(
                current,
                state,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The connection closed to make room for a new one.
struct Eviction {
    victim: ConnectionId,
    was_writing: bool,
    waited: Duration,
}

/// The table of connections holding slots.
#[derive(Debug)]
struct Slots {
    max: usize,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Slots {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // The map stays consistent whatever panicked while holding the lock.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections holding a slot, and how many of them are writing.
    fn occupancy(&self) -> (usize, usize) {
        let open = self.lock();
        let writing = open
            .values()
            .filter(|slot| slot.state.load(Ordering::Relaxed) == SLOT_WRITING)
            .count();
        (open.len(), writing)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// A slot for connection `id`, if one is free or can be taken from the
    /// longest-waiting idle or blocked-writing connection.
    fn admit(&self, id: ConnectionId, now_ms: u64) -> Option<(Arc<Slot>, Option<Eviction>)> {
        let mut open = self.lock();
        let mut eviction = None;
        if open.len() >= self.max {
            // A candidate may change state while we look; then look again.
            for _ in 0..4 {
                let candidate = open
                    .iter()
                    .filter_map(|(id, slot)| {
                        let state = slot.state.load(Ordering::Acquire);
                        matches!(state, SLOT_IDLE | SLOT_WRITING)
                            .then(|| (slot.since_ms.load(Ordering::Relaxed), *id, state))
                    })
                    .min();
                let Some((since, victim, state)) = candidate else {
                    break;
                };
                let slot = open[&victim].clone();
                if slot
                    .state
                    .compare_exchange(state, SLOT_EVICTED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    open.remove(&victim);
                    slot.evicted.notify_one();
                    eviction = Some(Eviction {
                        victim: ConnectionId(victim),
                        was_writing: state == SLOT_WRITING,
                        waited: Duration::from_millis(now_ms.saturating_sub(since)),
                    });
                    break;
                }
            }
            eviction.as_ref()?;
        }
        let slot = Arc::new(Slot::new(now_ms));
        open.insert(id.0, slot.clone());
        Some((slot, eviction))
    }

    fn release(&self, id: ConnectionId) {
        self.lock().remove(&id.0);
    }
}

/// Gives the slot back when the connection's task ends (or unwinds).
struct SlotGuard {
    shared: Arc<Shared>,
    id: ConnectionId,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.slots.release(self.id);
    }
}

/// The replies that are built from the whole table and shared between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SharedReply {
    Names,
    Dump,
    /// The joerl list, whose empty hosts are filled with the daemon's address
    /// as the client reached it.
    List(Option<IpAddr>),
}

/// A reply shared between connections. While it lives (in the cache or in
/// connections still writing it), its size counts against
/// [`ServerConfig::max_reply_memory`].
#[derive(Debug)]
struct ReplyBytes {
    bytes: Vec<u8>,
    in_use: Arc<AtomicUsize>,
}

impl ReplyBytes {
    fn new(bytes: Vec<u8>, in_use: &Arc<AtomicUsize>) -> Arc<Self> {
        in_use.fetch_add(bytes.len(), Ordering::Relaxed);
        Arc::new(Self {
            bytes,
            in_use: in_use.clone(),
        })
    }
}

impl Drop for ReplyBytes {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct CachedReply {
    kind: SharedReply,
    generation: u64,
    valid_until: Option<Instant>,
    bytes: Arc<ReplyBytes>,
}

/// How many shared replies are kept (one per kind and daemon address).
const REPLY_CACHE_ENTRIES: usize = 8;

/// State shared by the accept loop, the reaper and every connection.
#[derive(Debug)]
struct Shared {
    registry: Registry,
    config: ServerConfig,
    local_addr: SocketAddr,
    /// Every listening address, `local_addr` first.
    local_addrs: Vec<SocketAddr>,
    started: Instant,
    next_connection: AtomicU64,
    shutdown: watch::Sender<bool>,
    slots: Slots,
    counters: Counters,
    logs: Limiters,
    replies: Mutex<Vec<CachedReply>>,
    /// Bytes of all live shared replies.
    reply_memory: Arc<AtomicUsize>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The reply of `kind` for the table as it is now: the cached copy if the
    /// table has not changed since it was built, otherwise a new one from
    /// `build`; but the cached copy even if the table has changed when
    /// connections still writing older copies hold
    /// [`ServerConfig::max_reply_memory`] already.
    fn shared_reply(
        &self,
        kind: SharedReply,
        build: impl FnOnce(Instant) -> Result<Vec<u8>, ProtocolError>,
    ) -> Result<Arc<ReplyBytes>, ProtocolError> {
        let now = Instant::now();
        // Read before building: a change made meanwhile makes the copy stale, never wrong.
        let generation = self.registry.generation();
        let (previous, only_cached) = {
            let cache = self.replies.lock().unwrap_or_else(|e| e.into_inner());
            match cache.iter().find(|c| c.kind == kind) {
                Some(hit)
                    if hit.generation == generation
                        && hit.valid_until.is_none_or(|until| now < until) =>
                {
                    return Ok(hit.bytes.clone());
                }
                Some(old) => (Some(old.bytes.clone()), Arc::strong_count(&old.bytes) == 1),
                None => (None, false),
            }
        };
        if let Some(previous) = previous {
            // Replacing a copy that only the cache holds frees it; otherwise
            // the new copy comes on top of it.
            let in_use = self.reply_memory.load(Ordering::Relaxed);
            if !only_cached && in_use + previous.bytes.len() > self.config.max_reply_memory {
                count(&self.counters.stale_replies);
                limited!(
                    warn,
                    self.logs.reply_memory,
                    in_use,
                    max_reply_memory = self.config.max_reply_memory,
                    "shared replies use their memory limit (peers are slow to read them); answering with the previous copy of the table"
                );
                return Ok(previous);
            }
        }
        let valid_until = self.registry.next_expiry(now);
        let bytes = ReplyBytes::new(build(now)?, &self.reply_memory);
        let mut cache = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|c| c.kind != kind);
        if cache.len() >= REPLY_CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push(CachedReply {
            kind,
            generation,
            valid_until,
            bytes: bytes.clone(),
        });
        Ok(bytes)
    }

    fn stats(&self) -> ServerStats {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (open, writing) = self.slots.occupancy();
        ServerStats {
            connections_accepted: get(&c.accepted),
            open_connections: open as u64,
            writing_connections: writing as u64,
            connections_refused: get(&c.refused),
            connections_evicted: get(&c.evicted),
            write_timeouts: get(&c.write_timeouts),
            stale_replies: get(&c.stale_replies),
            malformed_requests: get(&c.malformed),
            registrations_refused: get(&c.registrations_refused),
            commands_refused: get(&c.commands_refused),
            alive2_unexpected_data: get(&c.alive2_data),
        }
    }
}

/// A running daemon. Dropping it stops the daemon (without waiting);
/// [`EpmdServer::shutdown`] stops it and waits until every connection is closed.
#[derive(Debug)]
pub struct EpmdServer {
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
}

impl EpmdServer {
    /// Binds `config.listen_addr` (and the extra and optional addresses) and
    /// starts serving in the background on the current tokio runtime. Port 0
    /// picks a free port; [`EpmdServer::local_addr`] reports it.
    ///
    /// Fails with [`ServerError::Bind`] when `listen_addr` or an extra address
    /// cannot be bound, or when the port of any address is in use (another
    /// daemon has it); see [`ServerConfig::optional_listen_addrs`] for the
    /// addresses that may be skipped.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let bind_error = |addr, source| ServerError::Bind { addr, source };
        // IPv6 sockets are IPv6-only when IPv4 ones may share their port.
        let several =
            !config.extra_listen_addrs.is_empty() || !config.optional_listen_addrs.is_empty();
        let first = listen(config.listen_addr, config.send_buffer_bytes, several)
            .map_err(|e| bind_error(config.listen_addr, e.into_io()))?;
        let local_addr = first
            .get_ref()
            .local_addr()
            .map_err(|e| bind_error(config.listen_addr, e))?;
        let mut listeners = vec![first];
        let mut local_addrs = vec![local_addr];
        // The order of epmd: the loopback addresses it adds, then the listed ones.
        let others = config
            .optional_listen_addrs
            .iter()
            .map(|addr| (*addr, true))
            .chain(config.extra_listen_addrs.iter().map(|addr| (*addr, false)));
        for (mut addr, optional) in others {
            if addr.port() == 0 {
                addr.set_port(local_addr.port());
            }
            match listen(addr, config.send_buffer_bytes, several) {
                Ok(listener) => {
                    let bound = listener
                        .get_ref()
                        .local_addr()
                        .map_err(|e| bind_error(addr, e))?;
                    listeners.push(listener);
                    local_addrs.push(bound);
                }
                Err(err) if err.in_use() => return Err(bind_error(addr, err.into_io())),
                Err(err) if optional || err.unsupported_family() => {
                    warn!(%addr, error = %err, "cannot listen on this address; skipping it");
                }
                Err(err) => return Err(bind_error(addr, err.into_io())),
            }
        }
        let (shutdown, _) = watch::channel(false);
        let (stopped_tx, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            registry: Registry::with_limits(config.registry_limits()),
            slots: Slots::new(config.max_connections),
            config,
            local_addr,
            local_addrs,
            started: Instant::now(),
            next_connection: AtomicU64::new(1),
            shutdown,
            counters: Counters::default(),
            logs: Limiters::new(),
            replies: Mutex::new(Vec::new()),
            reply_memory: Arc::new(AtomicUsize::new(0)),
        });
        info!(
            local_addrs = ?shared.local_addrs,
            max_connections = shared.config.max_connections,
            write_timeout = ?shared.config.write_timeout,
            max_registrations_per_connection = shared.config.max_registrations_per_connection,
            max_registrations_per_source = shared.config.max_registrations_per_source,
            default_lease = ?shared.config.default_lease,
            keepalive_interval = ?shared.config.keepalive_interval,
            "epmd listening"
        );
        tokio::spawn(run(listeners, shared.clone(), stopped_tx));
        Ok(Self { shared, stopped })
    }

    /// The address the daemon listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Every address the daemon listens on: [`EpmdServer::local_addr`] first,
    /// then the optional and the extra addresses that were bound, in that order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.local_addrs
    }

    /// The node table (read-only use from tests and embedding programs).
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The settings in force.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Counters of closed connections and refused requests since the daemon started.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Whether the daemon has stopped (after [`EpmdServer::shutdown`], a drop, or a `KILL_REQ`).
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Waits until the daemon has stopped, e.g. because a client sent `KILL_REQ`.
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        // An error means the run task is gone, i.e. stopped as well.
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// Stops accepting, closes every connection (removing connection-held
    /// registrations) and waits until all of that is done.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        self.stopped().await;
    }
}

impl Drop for EpmdServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// The listening socket. It is watched through [`AsyncFd`] rather than
/// `tokio::net::TcpListener` so accepted sockets arrive as plain std sockets:
/// a `PORT_PLEASE2_REQ` that is already complete when its connection is accepted
/// is answered at once, without registering the socket with the reactor or
/// spawning a task (see [`answer_at_once`]).
type Listener = AsyncFd<std::net::TcpListener>;

/// Why a listening socket could not be set up.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    /// The socket could not be created (e.g. the address family is not supported).
    #[error("cannot create the socket: {0}")]
    Socket(std::io::Error),
    /// Setting it up, binding or listening failed.
    #[error("{0}")]
    Setup(std::io::Error),
}

impl ListenError {
    fn into_io(self) -> std::io::Error {
        match self {
            Self::Socket(err) | Self::Setup(err) => err,
        }
    }

    fn in_use(&self) -> bool {
        matches!(self, Self::Setup(err) if err.kind() == std::io::ErrorKind::AddrInUse)
    }

    /// epmd skips an address whose socket cannot be created for these reasons.
    fn unsupported_family(&self) -> bool {
        matches!(
            self,
            Self::Socket(err)
                if matches!(err.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT))
        )
    }
}

/// A non-blocking listening socket on `addr`; IPv6-only if `v6_only` (otherwise
/// the system's default for IPv6 sockets).
fn listen(
    addr: SocketAddr,
    send_buffer: Option<usize>,
    v6_only: bool,
) -> Result<Listener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ListenError::Socket)?;
    let setup = |socket: &Socket| -> std::io::Result<()> {
        if addr.is_ipv6() && v6_only {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        if let Some(bytes) = send_buffer {
            // Accepted sockets inherit it.
            socket.set_send_buffer_size(bytes)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)
    };
    setup(&socket).map_err(ListenError::Setup)?;
    let listener: std::net::TcpListener = socket.into();
    // `AsyncFd::new` is deprecated in recent tokio in favour of an `unsafe`
    // constructor (older tokio, which the workspace allows, has only this one).
    // It is sound here: the listener owns its descriptor for the AsyncFd's lifetime.
    #[allow(deprecated)]
    AsyncFd::new(listener).map_err(ListenError::Setup)
}

/// The next connection; with a `delay` (epmd's `-delay_accept`), the wait
/// comes between the listener becoming ready and the `accept` call.
async fn accept(
    listener: &Listener,
    delay: Option<Duration>,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Ok(accepted) = ready.try_io(|inner| inner.get_ref().accept()) {
            return accepted;
        }
    }
}

/// What the accept loop could do with a new connection by itself.
enum AcceptedConnection {
    /// Fully handled (answered and closed, or closed by the peer).
    Done,
    /// Needs a task; carries the bytes already read.
    Serve(std::net::TcpStream, BytesMut),
}

/// Non-blocking read: `Some(0)` if nothing is there yet, `None` if the peer
/// closed or the socket failed.
fn read_now(stream: &mut std::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    use std::io::Read;
    match stream.read(buf) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Some(0),
        Err(_) => None,
    }
}

/// Bytes read from a connection before its request's length is known (the
/// accept loop's first read, and a connection task's reads until the 2-byte
/// length has arrived). Once the length is known, exactly the rest of the
/// request is read, so only bytes that came with its first part can follow it
/// in the buffer (epmd reads the same way).
const FIRST_READ_BYTES: usize = 512;

/// The hot path: if a complete `PORT_PLEASE2_REQ` is already waiting on a
/// freshly accepted socket (after at most one `sched_yield` to let a client on
/// the same core send it), answer it right here with non-blocking calls (read,
/// write, close: the same work epmd does, minus its second `select`). Anything
/// else, or anything that would block, goes to a task with the bytes read so far.
fn answer_at_once(shared: &Shared, mut stream: std::net::TcpStream) -> AcceptedConnection {
    use std::io::Write;
    let mut bytes = [0u8; FIRST_READ_BYTES];
    if stream.set_nonblocking(true).is_err() {
        return AcceptedConnection::Done;
    }
    if shared.config.delay_write.is_some() {
        // The reply must wait, which only a task can do.
        return AcceptedConnection::Serve(stream, BytesMut::new());
    }
    let mut read = match read_now(&mut stream, &mut bytes) {
        Some(n) => n,
        None => return AcceptedConnection::Done,
    };
    if read == 0 {
        // The handshake woke us before the client's request arrived, typically
        // because the client runs on this very core and was preempted between
        // connect() and write(). Give it the core once, then look again: this
        // is cheaper than registering the socket and waiting for readiness.
        std::thread::yield_now();
        read = match read_now(&mut stream, &mut bytes) {
            Some(n) => n,
            None => return AcceptedConnection::Done,
        };
    }
    let received = &bytes[..read];
    // Only a request with nothing after it: trailing bytes close the connection
    // without a reply, which the connection task does (as epmd).
    let complete_port_please = matches!(
        protocol::check_frame(received, shared.config.max_request_bytes),
        Ok(Some(len)) if len + 2 == read && received[2] == protocol::PORT_PLEASE2_REQ
    );
    if complete_port_please {
        if let Ok(Request::PortPlease2 { name }) = protocol::decode_request(&received[2..]) {
            let mut reply = Vec::with_capacity(64);
            let found = shared.registry.with_node(&name, Instant::now(), |node| {
                PortPleaseReply::encode_into(node.port, &node.name, &node.dist, &mut reply)
            });
            if found.is_none() {
                reply.extend_from_slice(&PORT2_MISS);
            }
            debug!(%name, found = found.is_some(), "PORT_PLEASE2_REQ answered at accept");
            match stream.write(&reply) {
                Ok(n) if n == reply.len() => return AcceptedConnection::Done,
                Ok(n) => {
                    // The send buffer of a fresh socket was full: finish in a
                    // task, bounded by the write timeout like any other write.
                    let rest = reply[n..].to_vec();
                    let write_timeout = shared.config.write_timeout;
                    if let Ok(mut stream) = TcpStream::from_std(stream) {
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(write_timeout, stream.write_all(&rest)).await;
                        });
                    }
                    return AcceptedConnection::Done;
                }
                Err(_) => return AcceptedConnection::Done,
            }
        }
    }
    AcceptedConnection::Serve(stream, BytesMut::from(received))
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs the reaper and one accept loop per listening socket, all on the same
/// [`Shared`] state; reports the stop once every task has finished.
async fn run(listeners: Vec<Listener>, shared: Arc<Shared>, stopped: watch::Sender<bool>) {
    let (tasks_alive, mut all_tasks_done) = mpsc::channel::<()>(1);
    tokio::spawn(reaper(shared.clone(), tasks_alive.clone()));
    for listener in listeners {
        tokio::spawn(accept_loop(listener, shared.clone(), tasks_alive.clone()));
    }
    drop(tasks_alive);
    let _ = all_tasks_done.recv().await;
    info!(local_addrs = ?shared.local_addrs, "epmd stopped");
    stopped.send_replace(true);
}

/// Accepts connections on one listening socket until shutdown.
async fn accept_loop(listener: Listener, shared: Arc<Shared>, tasks_alive: mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.subscribe();
    let delay_accept = shared.config.delay_accept;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown_signalled(&mut shutdown) => break,
            accepted = accept(&listener, delay_accept) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                limited!(error, shared.logs.internal, error = %err, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        count(&shared.counters.accepted);
        // A lookup answered at once needs no slot, even at the limit.
        let (stream, already_read) = match answer_at_once(&shared, stream) {
            AcceptedConnection::Done => continue,
            AcceptedConnection::Serve(stream, already_read) => (stream, already_read),
        };
        let id = ConnectionId(shared.next_connection.fetch_add(1, Ordering::Relaxed));
        let Some((slot, eviction)) = shared.slots.admit(id, shared.now_ms()) else {
            count(&shared.counters.refused);
            limited!(
                warn,
                shared.logs.connection_limit,
                %peer,
                max_connections = shared.config.max_connections,
                refused = shared.counters.refused.load(Ordering::Relaxed),
                "connection limit reached and every connection holds a registration; closing new connection"
            );
            drop(stream);
            continue;
        };
        if let Some(eviction) = eviction {
            count(&shared.counters.evicted);
            let closed_was = if eviction.was_writing {
                "blocked writing"
            } else {
                "waiting for a request"
            };
            limited!(
                warn,
                shared.logs.connection_limit,
                %peer,
                max_connections = shared.config.max_connections,
                closed_connection = eviction.victim.0,
                closed_was,
                waited = ?eviction.waited,
                evicted = shared.counters.evicted.load(Ordering::Relaxed),
                "connection limit reached; closed the longest-waiting connection to make room"
            );
        }
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => {
                limited!(warn, shared.logs.internal, %peer, error = %err, "cannot register connection; closing it");
                shared.slots.release(id);
                continue;
            }
        };
        let guard = SlotGuard {
            shared: shared.clone(),
            id,
        };
        let alive = tasks_alive.clone();
        tokio::spawn(async move {
            serve_connection(&guard.shared, stream, already_read, peer, id, slot).await;
            drop(guard);
            drop(alive);
        });
    }
    drop(listener);
    drop(tasks_alive);
}

async fn reaper(shared: Arc<Shared>, _alive: mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(shared.config.effective_reap_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        for node in shared.registry.reap_expired(Instant::now()) {
            limited!(
                info,
                shared.logs.expired,
                name = %node.name,
                port = node.port,
                lease_ms = node.lease_ms,
                "lease expired without keep-alive; registration removed"
            );
        }
    }
}

/// Whether `peer` may use the loopback-only requests: 127.0.0.0/8, ::1, or the
/// daemon's own address (epmd's rule).
fn is_local_peer(peer: SocketAddr, local: Option<SocketAddr>) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    ip.is_loopback() || local.is_some_and(|l| l.ip() == peer.ip())
}

/// Whether requests with this tag may be followed by more requests on the same
/// connection (joerl's); Erlang requests are one per connection.
fn is_joerl_tag(tag: u8) -> bool {
    (protocol::JOERL_REGISTER_REQ..=protocol::JOERL_PING_REQ).contains(&tag)
}

/// Why a connection's read side ended with an error.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a request ({0} bytes received)")]
    TruncatedAtEof(usize),
    #[error(
        "request with tag {tag} arrived together with {extra} more byte(s); closing without a reply (as epmd)"
    )]
    TrailingBytes { tag: u8, extra: usize },
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why writing a reply did not finish.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("no progress writing the reply for {0:?} (the peer does not read)")]
    TimedOut(Duration),
    #[error("closed to make room for a new connection")]
    Evicted,
    #[error("the daemon is shutting down")]
    Shutdown,
    #[error("the reply could not be encoded: {0}")]
    Unencodable(ProtocolError),
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A client socket with its read buffer: turns bytes into request frames, and
/// writes replies within the write timeout.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    slot: Arc<Slot>,
    shutdown: watch::Receiver<bool>,
    write_timeout: Duration,
    /// epmd's `-delay_write`: a wait before each reply.
    delay_write: Option<Duration>,
    clock: Instant,
    /// When bytes last arrived (or the connection opened), for
    /// [`IdleActivity::AnyBytes`].
    last_read: tokio::time::Instant,
}

impl Connection {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Reads the next request body. `Ok(None)` on a clean close between requests.
    /// Cancel-safe: bytes already read stay in the buffer.
    async fn read_frame(&mut self, max_body: usize) -> Result<Option<BytesMut>, ReadError> {
        loop {
            if let Some(len) = protocol::check_frame(&self.buffer, max_body)? {
                let extra = self.buffer.len() - 2 - len;
                let tag = self.buffer[2];
                if extra > 0 && !is_joerl_tag(tag) {
                    return Err(ReadError::TrailingBytes { tag, extra });
                }
                self.buffer.advance(2);
                return Ok(Some(self.buffer.split_to(len)));
            }
            // The header (if present) has been checked against the limit, so
            // the buffer never grows beyond one maximal frame.
            let read = if self.buffer.len() >= 2 {
                let wanted = 2 + usize::from(u16::from_be_bytes([self.buffer[0], self.buffer[1]]))
                    - self.buffer.len();
                self.buffer.reserve(wanted);
                let mut rest = (&mut self.buffer).limit(wanted);
                self.stream.read_buf(&mut rest).await?
            } else {
                self.buffer.reserve(FIRST_READ_BYTES);
                self.stream.read_buf(&mut self.buffer).await?
            };
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::TruncatedAtEof(self.buffer.len()))
                };
            }
            self.last_read = tokio::time::Instant::now();
        }
    }

    /// On a connection that holds an `ALIVE2` registration: resolves when the
    /// peer sends anything at all or closes (both end the registration, as in epmd).
    async fn read_anything(&mut self) -> std::io::Result<usize> {
        if !self.buffer.is_empty() {
            return Ok(self.buffer.len());
        }
        self.buffer.reserve(64);
        self.stream.read_buf(&mut self.buffer).await
    }

    /// Writes one reply, in slot state `state` ([`SLOT_WRITING`], or
    /// [`SLOT_HOLDING`] for a connection holding registrations). Gives up when a
    /// write makes no progress for the write timeout, when the slot is taken
    /// away, or at shutdown.
    async fn write(&mut self, bytes: &[u8], state: u8) -> Result<(), WriteError> {
        if !self.slot.enter(state, self.now_ms()) {
            return Err(WriteError::Evicted);
        }
        if let Some(delay) = self.delay_write {
            tokio::select! {
                biased;
                _ = shutdown_signalled(&mut self.shutdown) => return Err(WriteError::Shutdown),
                _ = self.slot.evicted.notified() => return Err(WriteError::Evicted),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let mut written = 0;
        while written < bytes.len() {
            let step = tokio::select! {
                biased;
                _ = shutdown_signalled(&mut self.shutdown) => return Err(WriteError::Shutdown),
                _ = self.slot.evicted.notified() => return Err(WriteError::Evicted),
                step = tokio::time::timeout(self.write_timeout, self.stream.write(&bytes[written..])) => step,
            };
            match step {
                Err(_) => return Err(WriteError::TimedOut(self.write_timeout)),
                Ok(Ok(0)) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                Ok(Ok(n)) => written += n,
                Ok(Err(err)) => return Err(err.into()),
            }
        }
        if !self.slot.enter(SLOT_BUSY, self.now_ms()) {
            return Err(WriteError::Evicted);
        }
        Ok(())
    }

    /// Makes the coming close a reset: the kernel drops whatever it still
    /// buffers for a peer that does not read, instead of keeping it (and
    /// retrying) after the daemon has let go of the socket.
    fn reset_on_close(&self) {
        #[allow(deprecated)] // deprecated only for non-zero values, which can block
        let _ = self.stream.set_linger(Some(Duration::ZERO));
    }
}

/// What to do with the connection after a request.
enum Next {
    /// Wait for another request.
    Continue,
    /// From now on the connection holds an Erlang registration: any byte ends it.
    HoldAlive,
    /// Close it.
    Close,
}

/// Per-connection state.
struct Session<'a> {
    shared: &'a Shared,
    id: ConnectionId,
    peer: SocketAddr,
    /// The daemon's address on this connection, looked up only when needed
    /// (one system call saved on the hot `PORT_PLEASE2_REQ` path).
    local: Option<Option<SocketAddr>>,
    kick: Arc<Notify>,
    /// Connection-held registrations made on this connection.
    held: Vec<String>,
}

async fn serve_connection(
    shared: &Shared,
    stream: TcpStream,
    already_read: BytesMut,
    peer: SocketAddr,
    id: ConnectionId,
    slot: Arc<Slot>,
) {
    let mut conn = Connection {
        stream,
        buffer: already_read,
        slot,
        shutdown: shared.shutdown.subscribe(),
        write_timeout: shared.config.write_timeout,
        delay_write: shared.config.delay_write,
        clock: shared.started,
        last_read: tokio::time::Instant::now(),
    };
    let mut session = Session {
        shared,
        id,
        peer,
        local: None,
        kick: Arc::new(Notify::new()),
        held: Vec::new(),
    };
    let mut shutdown = shared.shutdown.subscribe();
    let idle_timeout = shared.config.idle_timeout;
    let any_bytes_count = shared.config.idle_activity == IdleActivity::AnyBytes;
    let max_body = shared.config.max_request_bytes;
    let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
    let mut holding_alive = false;
    let slot = conn.slot.clone();
    debug!(%peer, connection = id.0, "connection opened");
    loop {
        let holds_registration = !session.held.is_empty();
        let waiting = if holds_registration {
            SLOT_HOLDING
        } else {
            SLOT_IDLE
        };
        if !slot.enter(waiting, conn.now_ms()) {
            debug!(%peer, connection = id.0, "closed to make room for a new connection");
            break;
        }
        let kick = session.kick.clone();
        if holding_alive {
            tokio::select! {
                _ = shutdown_signalled(&mut shutdown) => break,
                _ = kick.notified() => {
                    debug!(%peer, connection = id.0, "registration removed by STOP_REQ; closing");
                    break;
                }
                _ = slot.evicted.notified() => {
                    debug!(%peer, connection = id.0, "closed to make room for a new connection");
                    break;
                }
                _ = tokio::time::sleep_until(idle_deadline), if !holds_registration => {
                    debug!(%peer, connection = id.0, "idle timeout after a refused ALIVE2_REQ");
                    break;
                }
                read = conn.read_anything() => {
                    match read {
                        Ok(0) => debug!(%peer, connection = id.0, "registered node closed its connection"),
                        Ok(n) => {
                            count(&shared.counters.alive2_data);
                            limited!(warn, shared.logs.alive2_data, %peer, connection = id.0, bytes = n, "unexpected data on an ALIVE2 connection; closing it and removing its registration");
                        }
                        Err(err) => debug!(%peer, connection = id.0, error = %err, "ALIVE2 connection failed"),
                    }
                    break;
                }
            }
        }
        let frame = tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            _ = kick.notified() => {
                debug!(%peer, connection = id.0, "registration removed by STOP_REQ; closing");
                break;
            }
            _ = slot.evicted.notified() => {
                debug!(%peer, connection = id.0, "closed to make room for a new connection");
                break;
            }
            _ = tokio::time::sleep_until(idle_deadline), if !holds_registration => {
                if any_bytes_count && conn.last_read + idle_timeout > idle_deadline {
                    // Bytes of a request arrived meanwhile: the clock runs from
                    // them (reading goes on where it stopped).
                    idle_deadline = conn.last_read + idle_timeout;
                    continue;
                }
                debug!(%peer, connection = id.0, timeout = ?idle_timeout, "idle connection closed");
                break;
            }
            frame = conn.read_frame(max_body) => frame,
        };
        let body = match frame {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(ReadError::Io(err)) => {
                debug!(%peer, connection = id.0, error = %err, "read failed; closing");
                break;
            }
            Err(err) => {
                count(&shared.counters.malformed);
                limited!(warn, shared.logs.bad_input, %peer, connection = id.0, reason = %err, "closing connection after bad input");
                break;
            }
        };
        if !slot.enter(SLOT_BUSY, conn.now_ms()) {
            debug!(%peer, connection = id.0, "closed to make room for a new connection");
            break;
        }
        idle_deadline = tokio::time::Instant::now() + idle_timeout;
        let request = match protocol::decode_request(&body) {
            Ok(request) => request,
            Err(err) => {
                count(&shared.counters.malformed);
                limited!(warn, shared.logs.bad_input, %peer, connection = id.0, reason = %err, "closing connection after malformed request");
                if let ProtocolError::UnsupportedVersion { .. } = err {
                    let state = session.writing_state();
                    let _ = conn.write(&protocol::encode_version_reply(), state).await;
                }
                break;
            }
        };
        drop(body);
        match session.handle(request, &mut conn).await {
            Ok(Next::Continue) => {}
            Ok(Next::HoldAlive) => holding_alive = true,
            Ok(Next::Close) => break,
            Err(WriteError::TimedOut(after)) => {
                count(&shared.counters.write_timeouts);
                limited!(
                    warn,
                    shared.logs.write_timeout,
                    %peer,
                    connection = id.0,
                    timeout = ?after,
                    write_timeouts = shared.counters.write_timeouts.load(Ordering::Relaxed),
                    "peer does not read its reply; closing the connection"
                );
                conn.reset_on_close();
                break;
            }
            Err(WriteError::Evicted) => {
                debug!(%peer, connection = id.0, "closed while writing to make room for a new connection");
                conn.reset_on_close();
                break;
            }
            Err(WriteError::Shutdown) => break,
            Err(err) => {
                debug!(%peer, connection = id.0, error = %err, "write failed; closing");
                break;
            }
        }
    }
    for name in session.held.drain(..) {
        if shared.registry.unregister_connection(&name, id) {
            limited!(info, shared.logs.unregistered, %name, %peer, "node unregistered: its connection closed");
        }
    }
    debug!(%peer, connection = id.0, "connection closed");
}

impl Session<'_> {
    fn local_addr(&mut self, conn: &Connection) -> Option<SocketAddr> {
        *self
            .local
            .get_or_insert_with(|| conn.stream.local_addr().ok())
    }

    fn is_local_peer(&mut self, conn: &Connection) -> bool {
        // Loopback peers need no further look-up.
        is_local_peer(self.peer, None) || is_local_peer(self.peer, self.local_addr(conn))
    }

    /// The slot state while writing a reply: connections holding registrations
    /// are never closed to make room (the write timeout still applies to them).
    fn writing_state(&self) -> u8 {
        if self.held.is_empty() {
            SLOT_WRITING
        } else {
            SLOT_HOLDING
        }
    }

    /// Host reported for nodes that registered without one: the daemon's
    /// address as this client reached it.
    fn fill_host(local: Option<SocketAddr>, mut node: NodeInfo) -> NodeInfo {
        if node.host.is_empty() {
            if let Some(local) = local {
                node.host = local.ip().to_string();
            }
        }
        node
    }

    fn refuse_command(&self, what: &'static str, why: &'static str) {
        count(&self.shared.counters.commands_refused);
        let peer = self.peer;
        limited!(warn, self.shared.logs.refused_command, %peer, request = what, "{why}");
    }

    async fn handle(
        &mut self,
        request: Request,
        conn: &mut Connection,
    ) -> Result<Next, WriteError> {
        let shared = self.shared;
        let registry = &shared.registry;
        let peer = self.peer;
        match request {
            Request::Alive2(req) => {
                if !self.is_local_peer(conn) {
                    count(&shared.counters.registrations_refused);
                    limited!(warn, shared.logs.refused_registration, %peer, name = %req.name, "ALIVE2_REQ from a non-local peer; closing without reply (as epmd)");
                    return Ok(Next::Close);
                }
                let highest_version = req.dist.highest_version;
                let registration = NewRegistration {
                    name: req.name.clone(),
                    host: String::new(),
                    port: req.port,
                    metadata: Default::default(),
                    dist: req.dist,
                    kind: NodeKind::Erlang,
                    lifetime: Lifetime::Connection,
                    owner: self.id,
                    source: Some(registry::source_key(peer.ip())),
                    with_token: false,
                    kick: Some(self.kick.clone()),
                };
                let reply = match registry.register(registration, Instant::now()) {
                    Ok(done) => {
                        limited!(info, shared.logs.registered, name = %req.name, port = req.port, creation = done.creation, %peer, "Erlang node registered");
                        self.held.push(req.name);
                        Alive2Reply::for_version(highest_version, 0, done.creation)
                    }
                    Err(err) => {
                        count(&shared.counters.registrations_refused);
                        limited!(warn, shared.logs.refused_registration, name = %req.name, %peer, reason = %err, "ALIVE2_REQ refused");
                        Alive2Reply::for_version(highest_version, 1, CREATION_ON_REFUSAL)
                    }
                };
                conn.write(&reply.encode(), self.writing_state()).await?;
                Ok(Next::HoldAlive)
            }
            Request::Alive2Rejected {
                highest_version,
                reason,
            } => {
                count(&shared.counters.registrations_refused);
                limited!(warn, shared.logs.refused_registration, %peer, %reason, "ALIVE2_REQ refused");
                let reply = Alive2Reply::for_version(highest_version, 1, CREATION_ON_REFUSAL);
                conn.write(&reply.encode(), self.writing_state()).await?;
                Ok(Next::HoldAlive)
            }
            Request::PortPlease2 { name } => {
                let mut out = Vec::with_capacity(64);
                let found = registry.with_node(&name, Instant::now(), |node| {
                    PortPleaseReply::encode_into(node.port, &node.name, &node.dist, &mut out)
                });
                if found.is_none() {
                    out.extend_from_slice(&PORT2_MISS);
                }
                debug!(%peer, %name, found = found.is_some(), "PORT_PLEASE2_REQ");
                conn.write(&out, self.writing_state()).await?;
                Ok(Next::Close)
            }
            Request::Names => {
                let port = u32::from(shared.local_addr.port());
                let reply = shared.shared_reply(SharedReply::Names, |now| {
                    let nodes = registry.list(now);
                    let mut out = Vec::with_capacity(4 + nodes.len() * 32);
                    NamesReply::encode_header(port, &mut out);
                    for node in &nodes {
                        NamesReply::encode_line(&node.name, node.port, &mut out);
                    }
                    Ok(out)
                });
                self.write_shared(reply, conn).await?;
                Ok(Next::Close)
            }
            Request::Dump => {
                if !self.is_local_peer(conn) {
                    self.refuse_command(
                        "DUMP_REQ",
                        "DUMP_REQ from a non-local peer; closing without reply",
                    );
                    return Ok(Next::Close);
                }
                let port = u32::from(shared.local_addr.port());
                let reply = shared.shared_reply(SharedReply::Dump, |now| {
                    let (live, old) = registry.dump(now);
                    let mut out = Vec::with_capacity(4 + (live.len() + old.len()) * 64);
                    NamesReply::encode_header(port, &mut out);
                    for line in live {
                        protocol::encode_dump_active(
                            &line.name,
                            line.port,
                            line.connection.0,
                            &mut out,
                        );
                    }
                    for line in old {
                        protocol::encode_dump_old(
                            &line.name,
                            line.port,
                            line.connection.0,
                            &mut out,
                        );
                    }
                    Ok(out)
                });
                self.write_shared(reply, conn).await?;
                Ok(Next::Close)
            }
            Request::Kill => {
                if !self.is_local_peer(conn) {
                    self.refuse_command(
                        "KILL_REQ",
                        "KILL_REQ from a non-local peer; closing without reply",
                    );
                    return Ok(Next::Close);
                }
                if !shared.config.relaxed_command_check && !registry.is_empty(Instant::now()) {
                    self.refuse_command(
                        "KILL_REQ",
                        "KILL_REQ refused: nodes are registered (--relaxed-command-check, or epmd's -relaxed_command_check, allows it)",
                    );
                    conn.write(protocol::KILL_REFUSED, self.writing_state())
                        .await?;
                    return Ok(Next::Close);
                }
                conn.write(protocol::KILL_OK, self.writing_state()).await?;
                info!(%peer, "KILL_REQ: stopping the daemon");
                shared.shutdown.send_replace(true);
                Ok(Next::Close)
            }
            Request::Stop { name } => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                if !self.is_local_peer(conn) {
                    self.refuse_command(
                        "STOP_REQ",
                        "STOP_REQ from a non-local peer; closing without reply",
                    );
                    return Ok(Next::Close);
                }
                if !shared.config.relaxed_command_check {
                    self.refuse_command(
                        "STOP_REQ",
                        "STOP_REQ refused without --relaxed-command-check (epmd's -relaxed_command_check); closing without reply (as epmd)",
                    );
                    return Ok(Next::Close);
                }
                match registry.stop(&name) {
                    Some(kick) => {
                        limited!(info, shared.logs.unregistered, %peer, name = %shown, "STOP_REQ: registration removed");
                        if let Some(kick) = kick {
                            kick.notify_one();
                        }
                        conn.write(protocol::STOP_OK, self.writing_state()).await?;
                    }
                    None => {
                        conn.write(protocol::STOP_NOEXIST, self.writing_state())
                            .await?
                    }
                }
                Ok(Next::Close)
            }
            Request::Joerl(JoerlRequest::List(_)) => {
                let local = self.local_addr(conn);
                let host = local.map(|l| l.ip());
                let reply = shared.shared_reply(SharedReply::List(host), |now| {
                    JoerlReply::List(
                        registry
                            .list(now)
                            .into_iter()
                            .map(|n| Self::fill_host(local, n))
                            .collect(),
                    )
                    .encode()
                });
                self.write_shared(reply, conn).await?;
                Ok(Next::Continue)
            }
            Request::Joerl(req) => {
                let is_local = self.is_local_peer(conn);
                let local = self.local_addr(conn);
                let reply = self.handle_joerl(req, is_local, local);
                match reply.encode() {
                    Ok(bytes) => conn.write(&bytes, self.writing_state()).await?,
                    Err(err) => {
                        limited!(error, shared.logs.internal, %peer, error = %err, "cannot encode reply; closing");
                        return Ok(Next::Close);
                    }
                }
                Ok(Next::Continue)
            }
        }
    }

    /// Writes a reply shared with other connections (or closes the connection
    /// if it could not be built).
    async fn write_shared(
        &mut self,
        reply: Result<Arc<ReplyBytes>, ProtocolError>,
        conn: &mut Connection,
    ) -> Result<(), WriteError> {
        match reply {
            Ok(reply) => conn.write(&reply.bytes, self.writing_state()).await,
            Err(err) => {
                let peer = self.peer;
                limited!(error, self.shared.logs.internal, %peer, error = %err, "cannot encode reply; closing");
                Err(WriteError::Unencodable(err))
            }
        }
    }

    fn handle_joerl(
        &mut self,
        request: JoerlRequest,
        is_local_peer: bool,
        local: Option<SocketAddr>,
    ) -> JoerlReply {
        let shared = self.shared;
        let registry = &shared.registry;
        let peer = self.peer;
        let now = Instant::now();
        match request {
            JoerlRequest::Register(req) => {
                if !is_local_peer && !shared.config.allow_remote_register {
                    count(&shared.counters.registrations_refused);
                    limited!(warn, shared.logs.refused_registration, %peer, name = %req.name, "joerl registration from a non-local peer refused");
                    return JoerlReply::Refused(RegistryError::NotPermitted(
                        "this daemon accepts registrations only from loopback peers; start it with --allow-remote-register to change that".into(),
                    ));
                }
                let lifetime = match req.lease_ms {
                    None => Lifetime::Connection,
                    Some(ms) => Lifetime::Lease(shared.config.grant_lease(ms)),
                };
                let registration = NewRegistration {
                    name: req.name.clone(),
                    host: req.host,
                    port: req.port,
                    metadata: req.metadata,
                    dist: req.dist,
                    kind: NodeKind::Joerl,
                    lifetime,
                    owner: self.id,
                    source: Some(registry::source_key(peer.ip())),
                    with_token: true,
                    kick: None,
                };
                match registry.register(registration, now) {
                    Ok(done) => {
                        let lease_ms = match lifetime {
                            Lifetime::Connection => {
                                self.held.push(req.name.clone());
                                None
                            }
                            Lifetime::Lease(ttl) => Some(ttl.as_millis() as u64),
                        };
                        limited!(info, shared.logs.registered, name = %req.name, port = req.port, creation = done.creation, lease_ms, %peer, "joerl node registered");
                        JoerlReply::Registered(RegisteredReply {
                            token: done.token.expect("joerl registrations carry a token"),
                            creation: done.creation,
                            lease_ms,
                            keepalive_ms: shared.config.keepalive_interval.as_millis() as u64,
                        })
                    }
                    Err(err) => {
                        count(&shared.counters.registrations_refused);
                        limited!(warn, shared.logs.refused_registration, name = %req.name, %peer, reason = %err, "joerl registration refused");
                        JoerlReply::Refused(err)
                    }
                }
            }
            JoerlRequest::KeepAlive(req) => match registry.keep_alive(&req.token, now) {
                Ok(lease) => {
                    debug!(%peer, token = %req.token, "keep-alive");
                    JoerlReply::KeptAlive {
                        lease_ms: lease.map(|d| d.as_millis() as u64),
                    }
                }
                Err(err) => {
                    debug!(%peer, token = %req.token, reason = %err, "keep-alive refused");
                    JoerlReply::Refused(err)
                }
            },
            JoerlRequest::Unregister(req) => match registry.unregister_by_token(&req.token) {
                Ok(node) => {
                    limited!(info, shared.logs.unregistered, name = %node.name, %peer, "joerl node unregistered");
                    self.held.retain(|n| n != &node.name);
                    JoerlReply::Unregistered
                }
                Err(err) => {
                    // Typical after a daemon restart; the client registers again.
                    debug!(%peer, reason = %err, "unregister refused");
                    JoerlReply::Refused(err)
                }
            },
            JoerlRequest::Lookup(req) => JoerlReply::Lookup(
                registry
                    .lookup(&req.name, now)
                    .map(|n| Self::fill_host(local, n)),
            ),
            JoerlRequest::List(_) => JoerlReply::List(
                registry
                    .list(now)
                    .into_iter()
                    .map(|n| Self::fill_host(local, n))
                    .collect(),
            ),
            JoerlRequest::Ping(_) => JoerlReply::Pong(PongReply {
                daemon: concat!("joerl-epmd ", env!("CARGO_PKG_VERSION")).to_string(),
                protocol_version: JOERL_PROTOCOL_VERSION,
                nodes: registry.len(now) as u64,
                uptime_secs: shared.started.elapsed().as_secs(),
            }),
        }
    }
}

/// The request size the real epmd accepts, for configurations that want its exact limit.
pub const EPMD_COMPATIBLE_MAX_REQUEST_BYTES: usize = EPMD_MAX_REQUEST_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_peer_rule_matches_epmd() {
        let l: SocketAddr = "10.1.2.3:4369".parse().unwrap();
        assert!(is_local_peer("127.0.0.1:5".parse().unwrap(), Some(l)));
        assert!(is_local_peer("127.9.9.9:5".parse().unwrap(), Some(l)));
        assert!(is_local_peer("[::1]:5".parse().unwrap(), Some(l)));
        assert!(is_local_peer(
            "[::ffff:127.0.0.1]:5".parse().unwrap(),
            Some(l)
        ));
        assert!(is_local_peer("10.1.2.3:5".parse().unwrap(), Some(l)));
        assert!(!is_local_peer("10.1.2.4:5".parse().unwrap(), Some(l)));
        assert!(!is_local_peer("10.1.2.4:5".parse().unwrap(), None));
    }

    #[test]
    fn config_validation_and_lease_grants() {
        assert!(ServerConfig::default().validate().is_ok());
        let c = ServerConfig {
            keepalive_interval: Duration::from_secs(60),
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        let c = ServerConfig {
            max_request_bytes: 70_000,
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        for c in [
            ServerConfig {
                write_timeout: Duration::ZERO,
                ..ServerConfig::default()
            },
            ServerConfig {
                max_registrations_per_connection: 0,
                ..ServerConfig::default()
            },
            ServerConfig {
                max_registrations_per_source: 0,
                ..ServerConfig::default()
            },
            ServerConfig {
                send_buffer_bytes: Some(0),
                ..ServerConfig::default()
            },
            ServerConfig {
                max_reply_memory: 0,
                ..ServerConfig::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
        let c = ServerConfig::default();
        assert_eq!(c.grant_lease(0), Duration::from_secs(60));
        assert_eq!(c.grant_lease(1), Duration::from_secs(1));
        assert_eq!(c.grant_lease(u64::MAX), Duration::from_secs(3600));
        assert_eq!(c.effective_reap_interval(), Duration::from_millis(250));
        assert!(EPMD_COMPATIBLE_MAX_REQUEST_BYTES < c.max_request_bytes);
        assert_eq!(c.write_timeout, Duration::from_secs(5));
        assert_eq!(
            c.registry_limits(),
            RegistryLimits {
                max_nodes: 10_000,
                max_per_connection: 64,
                max_per_source: 256,
            }
        );
    }

    #[test]
    fn the_longest_waiting_idle_or_writing_connection_makes_room() {
        let slots = Slots::new(3);
        let (a, _) = slots.admit(ConnectionId(1), 0).unwrap();
        let (b, _) = slots.admit(ConnectionId(2), 0).unwrap();
        let (c, _) = slots.admit(ConnectionId(3), 0).unwrap();
        // a holds a registration; b waits for a request since 10; c writes since 5.
        assert!(a.enter(SLOT_HOLDING, 1));
        assert!(b.enter(SLOT_IDLE, 10));
        assert!(c.enter(SLOT_WRITING, 5));
        let (_d, eviction) = slots.admit(ConnectionId(4), 20).unwrap();
        let eviction = eviction.unwrap();
        assert_eq!(eviction.victim, ConnectionId(3));
        assert!(eviction.was_writing);
        assert_eq!(eviction.waited, Duration::from_millis(15));
        assert!(!c.enter(SLOT_BUSY, 21), "the evicted connection learns it");
        let (_e, eviction) = slots.admit(ConnectionId(5), 30).unwrap();
        assert_eq!(eviction.unwrap().victim, ConnectionId(2));
        // Now a holds a registration and d, e are busy: nobody can make room.
        assert!(slots.admit(ConnectionId(6), 40).is_none());
        assert_eq!(slots.len(), 3);
        slots.release(ConnectionId(1));
        assert!(slots.admit(ConnectionId(6), 50).unwrap().1.is_none());
        // Releasing an evicted connection's id changes nothing.
        slots.release(ConnectionId(3));
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn joerl_tags_are_the_pipelined_ones() {
        assert!(is_joerl_tag(protocol::JOERL_LIST_REQ));
        assert!(!is_joerl_tag(protocol::ALIVE2_REQ));
        assert!(!is_joerl_tag(protocol::NAMES_REQ));
    }
}
