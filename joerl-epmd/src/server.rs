//! The daemon: a tokio listener in front of the shared [`Registry`].
//!
//! The structure follows tokio's mini-redis: an accept loop hands each socket
//! to its own task; a `Connection` turns the socket's bytes into frames (with
//! the parsing itself in [`crate::protocol`]); one watch channel carries the
//! shutdown signal to the accept loop, the reaper and every connection; an
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
//! removes the node). joerl requests may follow each other on one connection.
//!
//! Limits: at most [`ServerConfig::max_connections`] connections (excess ones
//! are accepted and closed at once, as epmd does), requests of at most
//! [`ServerConfig::max_request_bytes`], and connections that hold no
//! registration are closed after [`ServerConfig::idle_timeout`] without a
//! complete request. Anything malformed closes that one connection with a
//! logged reason; the daemon goes on serving everyone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::error::{ProtocolError, RegistryError, ServerError};
use crate::protocol::{
    self, Alive2Reply, CREATION_ON_REFUSAL, EPMD_MAX_REQUEST_BYTES, JOERL_PROTOCOL_VERSION,
    JoerlReply, JoerlRequest, MAX_FRAME_BODY, NamesReply, NodeInfo, NodeKind, PORT2_MISS,
    PongReply, PortPleaseReply, RegisteredReply, Request,
};
use crate::registry::{ConnectionId, Lifetime, NewRegistration, Registry};

/// The port Erlang's epmd listens on.
pub const DEFAULT_EPMD_PORT: u16 = 4369;

/// Settings of the daemon. [`ServerConfig::default`] matches the real epmd where
/// it has a setting, and the joerl defaults elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:4369`; port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Most simultaneous connections; more are closed as soon as accepted (default 1000).
    pub max_connections: usize,
    /// A connection holding no registration is closed after this long without a
    /// complete request (default 60 s, epmd's packet timeout).
    pub idle_timeout: Duration,
    /// Largest request body accepted, in bytes (default 4096; at most 65535).
    pub max_request_bytes: usize,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_EPMD_PORT),
            max_connections: 1000,
            idle_timeout: Duration::from_secs(60),
            max_request_bytes: 4096,
            default_lease: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            min_lease: Duration::from_secs(1),
            max_lease: Duration::from_secs(3600),
            reap_interval: None,
            relaxed_command_check: false,
            allow_remote_register: false,
            max_nodes: crate::registry::DEFAULT_MAX_NODES,
        }
    }
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
        if self.max_request_bytes == 0 || self.max_request_bytes > MAX_FRAME_BODY {
            return bad(format!(
                "max_request_bytes must be between 1 and {MAX_FRAME_BODY}, got {}",
                self.max_request_bytes
            ));
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout must be positive".into());
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
}

/// State shared by the accept loop, the reaper and every connection.
#[derive(Debug)]
struct Shared {
    registry: Registry,
    config: ServerConfig,
    local_addr: SocketAddr,
    started: Instant,
    next_connection: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// A running daemon. Dropping it stops the daemon (without waiting);
/// [`EpmdServer::shutdown`] stops it and waits until every connection is closed.
#[derive(Debug)]
pub struct EpmdServer {
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
}

impl EpmdServer {
    /// Binds `config.listen_addr` and starts serving in the background on the
    /// current tokio runtime. Port 0 picks a free port; [`EpmdServer::local_addr`]
    /// reports it.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let bind_error = |source| ServerError::Bind {
            addr: config.listen_addr,
            source,
        };
        let listener = listen(config.listen_addr).map_err(bind_error)?;
        let local_addr = listener.get_ref().local_addr().map_err(bind_error)?;
        let (shutdown, _) = watch::channel(false);
        let (stopped_tx, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            registry: Registry::with_max_nodes(config.max_nodes),
            config,
            local_addr,
            started: Instant::now(),
            next_connection: AtomicU64::new(1),
            shutdown,
        });
        info!(
            %local_addr,
            max_connections = shared.config.max_connections,
            default_lease = ?shared.config.default_lease,
            keepalive_interval = ?shared.config.keepalive_interval,
            "epmd listening"
        );
        tokio::spawn(run(listener, shared.clone(), stopped_tx));
        Ok(Self { shared, stopped })
    }

    /// The address the daemon listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The node table (read-only use from tests and embedding programs).
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The settings in force.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
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

fn listen(addr: SocketAddr) -> std::io::Result<Listener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?.into_std()?;
    listener.set_nonblocking(true)?;
    // `AsyncFd::new` is deprecated in recent tokio in favour of an `unsafe`
    // constructor (older tokio, which the workspace allows, has only this one).
    // It is sound here: the listener owns its descriptor for the AsyncFd's lifetime.
    #[allow(deprecated)]
    AsyncFd::new(listener)
}

async fn accept(listener: &Listener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
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

/// The hot path: if a complete `PORT_PLEASE2_REQ` is already waiting on a
/// freshly accepted socket (after at most one `sched_yield` to let a client on
/// the same core send it), answer it right here with non-blocking calls (read,
/// write, close: the same work epmd does, minus its second `select`). Anything
/// else, or anything that would block, goes to a task with the bytes read so far.
fn answer_at_once(shared: &Shared, mut stream: std::net::TcpStream) -> AcceptedConnection {
    use std::io::Write;
    let mut bytes = [0u8; 512];
    if stream.set_nonblocking(true).is_err() {
        return AcceptedConnection::Done;
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
                    // The send buffer of a fresh socket was full: finish in a task.
                    let rest = reply[n..].to_vec();
                    if let Ok(mut stream) = TcpStream::from_std(stream) {
                        tokio::spawn(async move {
                            let _ = stream.write_all(&rest).await;
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

async fn run(listener: Listener, shared: Arc<Shared>, stopped: watch::Sender<bool>) {
    let mut shutdown = shared.shutdown.subscribe();
    let (tasks_alive, mut all_tasks_done) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    tokio::spawn(reaper(shared.clone(), tasks_alive.clone()));
    let mut refused_since_log = 0u64;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown_signalled(&mut shutdown) => break,
            accepted = accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                error!(error = %err, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refused_since_log += 1;
            if refused_since_log == 1 || refused_since_log % 1000 == 0 {
                warn!(
                    %peer,
                    max_connections = shared.config.max_connections,
                    refused = refused_since_log,
                    "connection limit reached; closing new connection"
                );
            }
            drop(stream);
            continue;
        };
        refused_since_log = 0;
        let (stream, already_read) = match answer_at_once(&shared, stream) {
            AcceptedConnection::Done => continue,
            AcceptedConnection::Serve(stream, already_read) => (stream, already_read),
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%peer, error = %err, "cannot register connection; closing it");
                continue;
            }
        };
        let id = ConnectionId(shared.next_connection.fetch_add(1, Ordering::Relaxed));
        let shared = shared.clone();
        let alive = tasks_alive.clone();
        tokio::spawn(async move {
            serve_connection(&shared, stream, already_read, peer, id).await;
            drop(permit);
            drop(alive);
        });
    }
    drop(listener);
    drop(tasks_alive);
    let _ = all_tasks_done.recv().await;
    info!(local_addr = %shared.local_addr, "epmd stopped");
    stopped.send_replace(true);
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
            info!(
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

/// Why a connection's read side ended with an error.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed in the middle of a request ({0} bytes received)")]
    TruncatedAtEof(usize),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A client socket with its read buffer: turns bytes into request frames.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    fn new(stream: TcpStream, already_read: BytesMut) -> Self {
        Self {
            stream,
            buffer: already_read,
        }
    }

    /// Reads the next request body. `Ok(None)` on a clean close between requests.
    /// Cancel-safe: bytes already read stay in the buffer.
    async fn read_frame(&mut self, max_body: usize) -> Result<Option<BytesMut>, ReadError> {
        loop {
            if let Some(len) = protocol::check_frame(&self.buffer, max_body)? {
                self.buffer.advance(2);
                return Ok(Some(self.buffer.split_to(len)));
            }
            // The header (if present) has been checked against the limit, so
            // the buffer never grows beyond one maximal frame.
            let wanted = if self.buffer.len() >= 2 {
                2 + usize::from(u16::from_be_bytes([self.buffer[0], self.buffer[1]]))
            } else {
                64
            };
            self.buffer
                .reserve(wanted.saturating_sub(self.buffer.len()));
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::TruncatedAtEof(self.buffer.len()))
                };
            }
        }
    }

    /// On a connection that holds an `ALIVE2` registration: resolves when the
    /// peer sends anything at all or closes (both end the registration, as in epmd).
    async fn read_anything(&mut self) -> std::io::Result<usize> {
        self.buffer.clear();
        self.buffer.reserve(64);
        self.stream.read_buf(&mut self.buffer).await
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
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
) {
    let mut conn = Connection::new(stream, already_read);
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
    let max_body = shared.config.max_request_bytes;
    let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
    let mut holding_alive = false;
    debug!(%peer, connection = id.0, "connection opened");
    loop {
        let holds_registration = !session.held.is_empty();
        let kick = session.kick.clone();
        if holding_alive {
            tokio::select! {
                _ = shutdown_signalled(&mut shutdown) => break,
                _ = kick.notified() => {
                    debug!(%peer, connection = id.0, "registration removed by STOP_REQ; closing");
                    break;
                }
                _ = tokio::time::sleep_until(idle_deadline), if !holds_registration => {
                    debug!(%peer, connection = id.0, "idle timeout after a refused ALIVE2_REQ");
                    break;
                }
                read = conn.read_anything() => {
                    match read {
                        Ok(0) => debug!(%peer, connection = id.0, "registered node closed its connection"),
                        Ok(n) => warn!(%peer, connection = id.0, bytes = n, "unexpected data on an ALIVE2 connection; closing it and removing its registration"),
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
            _ = tokio::time::sleep_until(idle_deadline), if !holds_registration => {
                debug!(%peer, connection = id.0, timeout = ?idle_timeout, "idle connection closed");
                break;
            }
            frame = conn.read_frame(max_body) => frame,
        };
        let body = match frame {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(err) => {
                warn!(%peer, connection = id.0, reason = %err, "closing connection after bad input");
                break;
            }
        };
        idle_deadline = tokio::time::Instant::now() + idle_timeout;
        let request = match protocol::decode_request(&body) {
            Ok(request) => request,
            Err(err) => {
                warn!(%peer, connection = id.0, reason = %err, "closing connection after malformed request");
                if let ProtocolError::UnsupportedVersion { .. } = err {
                    let _ = conn.write(&protocol::encode_version_reply()).await;
                }
                break;
            }
        };
        match session.handle(request, &mut conn).await {
            Ok(Next::Continue) => {}
            Ok(Next::HoldAlive) => holding_alive = true,
            Ok(Next::Close) => break,
            Err(err) => {
                debug!(%peer, connection = id.0, error = %err, "write failed; closing");
                break;
            }
        }
    }
    for name in session.held.drain(..) {
        if shared.registry.unregister_connection(&name, id) {
            info!(%name, %peer, "node unregistered: its connection closed");
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

    async fn handle(&mut self, request: Request, conn: &mut Connection) -> std::io::Result<Next> {
        let registry = &self.shared.registry;
        let peer = self.peer;
        match request {
            Request::Alive2(req) => {
                if !self.is_local_peer(conn) {
                    warn!(%peer, name = %req.name, "ALIVE2_REQ from a non-local peer; closing without reply (as epmd)");
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
                    with_token: false,
                    kick: Some(self.kick.clone()),
                };
                let reply = match registry.register(registration, Instant::now()) {
                    Ok(done) => {
                        info!(name = %req.name, port = req.port, creation = done.creation, %peer, "Erlang node registered");
                        self.held.push(req.name);
                        Alive2Reply::for_version(highest_version, 0, done.creation)
                    }
                    Err(err) => {
                        warn!(name = %req.name, %peer, reason = %err, "ALIVE2_REQ refused");
                        Alive2Reply::for_version(highest_version, 1, CREATION_ON_REFUSAL)
                    }
                };
                conn.write(&reply.encode()).await?;
                Ok(Next::HoldAlive)
            }
            Request::Alive2Rejected {
                highest_version,
                reason,
            } => {
                warn!(%peer, %reason, "ALIVE2_REQ refused");
                let reply = Alive2Reply::for_version(highest_version, 1, CREATION_ON_REFUSAL);
                conn.write(&reply.encode()).await?;
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
                conn.write(&out).await?;
                Ok(Next::Close)
            }
            Request::Names => {
                let mut out = Vec::with_capacity(256);
                NamesReply::encode_header(u32::from(self.shared.local_addr.port()), &mut out);
                for node in registry.list(Instant::now()) {
                    NamesReply::encode_line(&node.name, node.port, &mut out);
                }
                conn.write(&out).await?;
                Ok(Next::Close)
            }
            Request::Dump => {
                if !self.is_local_peer(conn) {
                    warn!(%peer, "DUMP_REQ from a non-local peer; closing without reply");
                    return Ok(Next::Close);
                }
                let mut out = Vec::with_capacity(256);
                NamesReply::encode_header(u32::from(self.shared.local_addr.port()), &mut out);
                let (live, old) = registry.dump(Instant::now());
                for line in live {
                    protocol::encode_dump_active(
                        &line.name,
                        line.port,
                        line.connection.0,
                        &mut out,
                    );
                }
                for line in old {
                    protocol::encode_dump_old(&line.name, line.port, line.connection.0, &mut out);
                }
                conn.write(&out).await?;
                Ok(Next::Close)
            }
            Request::Kill => {
                if !self.is_local_peer(conn) {
                    warn!(%peer, "KILL_REQ from a non-local peer; closing without reply");
                    return Ok(Next::Close);
                }
                if !self.shared.config.relaxed_command_check && !registry.is_empty(Instant::now()) {
                    warn!(%peer, "KILL_REQ refused: nodes are registered (use --relaxed-command-check to allow)");
                    conn.write(protocol::KILL_REFUSED).await?;
                    return Ok(Next::Close);
                }
                conn.write(protocol::KILL_OK).await?;
                info!(%peer, "KILL_REQ: stopping the daemon");
                self.shared.shutdown.send_replace(true);
                Ok(Next::Close)
            }
            Request::Stop { name } => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                if !self.is_local_peer(conn) {
                    warn!(%peer, name = %shown, "STOP_REQ from a non-local peer; closing without reply");
                    return Ok(Next::Close);
                }
                if !self.shared.config.relaxed_command_check {
                    warn!(%peer, name = %shown, "STOP_REQ refused without --relaxed-command-check; closing without reply (as epmd)");
                    return Ok(Next::Close);
                }
                match registry.stop(&name) {
                    Some(kick) => {
                        info!(%peer, name = %shown, "STOP_REQ: registration removed");
                        if let Some(kick) = kick {
                            kick.notify_one();
                        }
                        conn.write(protocol::STOP_OK).await?;
                    }
                    None => conn.write(protocol::STOP_NOEXIST).await?,
                }
                Ok(Next::Close)
            }
            Request::Joerl(req) => {
                let is_local = self.is_local_peer(conn);
                let local = self.local_addr(conn);
                let reply = self.handle_joerl(req, is_local, local);
                match reply.encode() {
                    Ok(bytes) => conn.write(&bytes).await?,
                    Err(err) => {
                        error!(%peer, error = %err, "cannot encode reply; closing");
                        return Ok(Next::Close);
                    }
                }
                Ok(Next::Continue)
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
                    warn!(%peer, name = %req.name, "joerl registration from a non-local peer refused");
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
                        info!(name = %req.name, port = req.port, creation = done.creation, lease_ms, %peer, "joerl node registered");
                        JoerlReply::Registered(RegisteredReply {
                            token: done.token.expect("joerl registrations carry a token"),
                            creation: done.creation,
                            lease_ms,
                            keepalive_ms: shared.config.keepalive_interval.as_millis() as u64,
                        })
                    }
                    Err(err) => {
                        warn!(name = %req.name, %peer, reason = %err, "joerl registration refused");
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
                    info!(name = %node.name, %peer, "joerl node unregistered");
                    self.held.retain(|n| n != &node.name);
                    JoerlReply::Unregistered
                }
                Err(err) => {
                    warn!(%peer, reason = %err, "unregister refused");
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
        let c = ServerConfig::default();
        assert_eq!(c.grant_lease(0), Duration::from_secs(60));
        assert_eq!(c.grant_lease(1), Duration::from_secs(1));
        assert_eq!(c.grant_lease(u64::MAX), Duration::from_secs(3600));
        assert_eq!(c.effective_reap_interval(), Duration::from_millis(250));
        assert!(EPMD_COMPATIBLE_MAX_REQUEST_BYTES < c.max_request_bytes);
    }
}
