//! The client: [`EpmdClient`] and the [`RegistrationGuard`] that keeps a
//! registration alive.
//!
//! Every call opens its own connection (as Erlang's clients do), is bounded by
//! the client's timeout, and reads at most [`EpmdClient::max_reply_bytes`] of
//! reply. The Erlang calls ([`EpmdClient::port_please`], [`EpmdClient::names`],
//! [`EpmdClient::alive2`]) work against the real epmd as well as ours; the
//! joerl calls need a joerl daemon.
//!
//! [`EpmdClient::register`] returns a guard owning a background task that
//! renews the lease on one long-lived connection, notices when that connection
//! drops or the daemon forgets the registration (a restart, an expiry), and then
//! registers again by itself, publishing the new creation. Dropping the guard
//! unregisters.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{ClientError, RegistryError};
use crate::protocol::{
    self, Alive2Reply, Alive2Request, DistInfo, JoerlReply, JoerlRequest, KeepAliveRequest,
    ListRequest, LookupRequest, NamesReply, NodeInfo, PingRequest, PongReply, PortPleaseReply,
    RegisterRequest, RegisteredReply, RegistrationToken, Request, UnregisterRequest,
};

/// Default timeout of every client call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on the size of one reply.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// A client of one port mapper daemon (ours or Erlang's).
#[derive(Debug, Clone)]
pub struct EpmdClient {
    addr: SocketAddr,
    timeout: Duration,
    max_reply_bytes: usize,
}

/// How long a joerl registration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationLifetime {
    /// As long as the guard's connection to the daemon stays open.
    Connection,
    /// A lease the guard renews; `None` asks for the daemon's default length.
    Lease(Option<Duration>),
}

/// What to register: build with [`Registration::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Node name (1 to 255 characters, no NUL).
    pub name: String,
    /// Host where the node listens; empty means "the daemon's host".
    pub host: String,
    /// Port where the node listens.
    pub port: u16,
    /// Free-form metadata returned by lookups.
    pub metadata: BTreeMap<String, String>,
    /// Connection-held or leased (default: a lease of the daemon's default length).
    pub lifetime: RegistrationLifetime,
    /// What Erlang's `PORT_PLEASE2_REQ` returns for the node.
    pub dist: DistInfo,
}

impl Registration {
    /// A leased registration of `name` listening on `port`, no metadata.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            host: String::new(),
            port,
            metadata: BTreeMap::new(),
            lifetime: RegistrationLifetime::Lease(None),
            dist: DistInfo::default(),
        }
    }

    /// Sets the host where the node listens.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Asks for a lease of `ttl` (the daemon clamps it to its bounds).
    pub fn lease(mut self, ttl: Duration) -> Self {
        self.lifetime = RegistrationLifetime::Lease(Some(ttl));
        self
    }

    /// Ties the registration to the guard's connection instead of a lease.
    pub fn connection_bound(mut self) -> Self {
        self.lifetime = RegistrationLifetime::Connection;
        self
    }

    /// Sets what Erlang peers see (node type, versions, extra bytes).
    pub fn dist(mut self, dist: DistInfo) -> Self {
        self.dist = dist;
        self
    }

    fn to_request(&self) -> RegisterRequest {
        RegisterRequest {
            name: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            metadata: self.metadata.clone(),
            lease_ms: match self.lifetime {
                RegistrationLifetime::Connection => None,
                RegistrationLifetime::Lease(None) => Some(0),
                RegistrationLifetime::Lease(Some(ttl)) => Some((ttl.as_millis() as u64).max(1)),
            },
            dist: self.dist.clone(),
        }
    }
}

/// One connection speaking joerl requests.
struct JoerlConnection {
    stream: TcpStream,
    addr: SocketAddr,
    max_reply_bytes: usize,
}

impl JoerlConnection {
    async fn connect(client: &EpmdClient) -> Result<Self, ClientError> {
        let stream = client.connect().await?;
        Ok(Self {
            stream,
            addr: client.addr,
            max_reply_bytes: client.max_reply_bytes,
        })
    }

    async fn call(
        &mut self,
        operation: &'static str,
        request: JoerlRequest,
    ) -> Result<JoerlReply, ClientError> {
        let addr = self.addr;
        let io = |source| ClientError::Io { addr, source };
        let frame = Request::Joerl(request)
            .encode()
            .map_err(|source| ClientError::Protocol { addr, source })?;
        self.stream.write_all(&frame).await.map_err(io)?;
        let mut header = [0u8; 4];
        read_exact_or_closed(&mut self.stream, &mut header, addr, operation).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_reply_bytes {
            return Err(ClientError::ReplyTooLarge {
                addr,
                max: self.max_reply_bytes,
            });
        }
        let mut body = vec![0u8; len];
        read_exact_or_closed(&mut self.stream, &mut body, addr, operation).await?;
        JoerlReply::decode_body(&body).map_err(|source| ClientError::Protocol { addr, source })
    }

    /// Resolves when the daemon closes the connection (or sends something unasked).
    async fn closed(&mut self) -> Result<(), ClientError> {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte).await {
            Ok(0) => Ok(()),
            Ok(_) => Err(ClientError::UnexpectedReply {
                addr: self.addr,
                operation: "keep-alive",
                detail: "data arrived without a request".into(),
            }),
            Err(source) => Err(ClientError::Io {
                addr: self.addr,
                source,
            }),
        }
    }
}

async fn read_exact_or_closed(
    stream: &mut TcpStream,
    buf: &mut [u8],
    addr: SocketAddr,
    operation: &'static str,
) -> Result<(), ClientError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ClientError::ClosedEarly { addr, operation })
        }
        Err(source) => Err(ClientError::Io { addr, source }),
    }
}

fn unexpected(addr: SocketAddr, operation: &'static str, reply: JoerlReply) -> ClientError {
    match reply {
        JoerlReply::Refused(source) => ClientError::Refused { addr, source },
        other => ClientError::UnexpectedReply {
            addr,
            operation,
            detail: format!("{other:?}"),
        },
    }
}

impl EpmdClient {
    /// A client of the daemon at `addr`, with [`DEFAULT_TIMEOUT`] and [`DEFAULT_MAX_REPLY_BYTES`].
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: DEFAULT_TIMEOUT,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }

    /// Sets the timeout of every call (connect, request and reply together).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest reply accepted, in bytes.
    pub fn with_max_reply_bytes(mut self, max: usize) -> Self {
        self.max_reply_bytes = max;
        self
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The timeout of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest reply accepted, in bytes.
    pub fn max_reply_bytes(&self) -> usize {
        self.max_reply_bytes
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                addr: self.addr,
                operation,
                after: self.timeout,
            }))
    }

    async fn connect(&self) -> Result<TcpStream, ClientError> {
        let stream =
            TcpStream::connect(self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr,
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn joerl_call(
        &self,
        operation: &'static str,
        request: JoerlRequest,
    ) -> Result<JoerlReply, ClientError> {
        self.timed(operation, async {
            let mut conn = JoerlConnection::connect(self).await?;
            conn.call(operation, request).await
        })
        .await
    }

    /// Sends one Erlang request and reads the reply until the daemon closes the connection.
    async fn erlang_call(
        &self,
        operation: &'static str,
        request: Request,
    ) -> Result<Vec<u8>, ClientError> {
        let addr = self.addr;
        let frame = request
            .encode()
            .map_err(|source| ClientError::Protocol { addr, source })?;
        self.timed(operation, async {
            let mut stream = self.connect().await?;
            stream
                .write_all(&frame)
                .await
                .map_err(|source| ClientError::Io { addr, source })?;
            let mut reply = Vec::new();
            (&mut stream)
                .take(self.max_reply_bytes as u64 + 1)
                .read_to_end(&mut reply)
                .await
                .map_err(|source| ClientError::Io { addr, source })?;
            if reply.len() > self.max_reply_bytes {
                return Err(ClientError::ReplyTooLarge {
                    addr,
                    max: self.max_reply_bytes,
                });
            }
            Ok(reply)
        })
        .await
    }

    /// Looks up one node, with its metadata (joerl daemons only).
    pub async fn lookup(&self, name: &str) -> Result<Option<NodeInfo>, ClientError> {
        let request = JoerlRequest::Lookup(LookupRequest { name: name.into() });
        match self.joerl_call("lookup", request).await? {
            JoerlReply::Lookup(node) => Ok(node),
            other => Err(unexpected(self.addr, "lookup", other)),
        }
    }

    /// Lists all registered nodes, most recently registered first (joerl daemons only).
    pub async fn list(&self) -> Result<Vec<NodeInfo>, ClientError> {
        match self
            .joerl_call("list", JoerlRequest::List(ListRequest {}))
            .await?
        {
            JoerlReply::List(nodes) => Ok(nodes),
            other => Err(unexpected(self.addr, "list", other)),
        }
    }

    /// Checks that a joerl daemon answers; returns what it says about itself.
    pub async fn ping(&self) -> Result<PongReply, ClientError> {
        match self
            .joerl_call("ping", JoerlRequest::Ping(PingRequest {}))
            .await?
        {
            JoerlReply::Pong(pong) => Ok(pong),
            other => Err(unexpected(self.addr, "ping", other)),
        }
    }

    /// Erlang's `PORT_PLEASE2_REQ`: where does node `name` listen? `Ok(None)` if
    /// the daemon does not know it. Works against the real epmd.
    pub async fn port_please(&self, name: &str) -> Result<Option<PortPleaseReply>, ClientError> {
        let reply = self
            .erlang_call(
                "PORT_PLEASE2_REQ",
                Request::PortPlease2 { name: name.into() },
            )
            .await?;
        if reply.is_empty() {
            return Err(ClientError::ClosedEarly {
                addr: self.addr,
                operation: "PORT_PLEASE2_REQ",
            });
        }
        PortPleaseReply::decode(&reply).map_err(|source| ClientError::Protocol {
            addr: self.addr,
            source,
        })
    }

    /// Erlang's `NAMES_REQ`: the daemon's port and every registered `(name, port)`.
    /// Works against the real epmd.
    pub async fn names(&self) -> Result<NamesReply, ClientError> {
        let reply = self.erlang_call("NAMES_REQ", Request::Names).await?;
        NamesReply::decode(&reply).map_err(|source| ClientError::Protocol {
            addr: self.addr,
            source,
        })
    }

    /// Erlang's `ALIVE2_REQ`: registers like an Erlang node does. The
    /// registration lives as long as the returned value. Works against the real epmd.
    pub async fn alive2(&self, request: Alive2Request) -> Result<ErlangRegistration, ClientError> {
        let addr = self.addr;
        let name = request.name.clone();
        let frame = Request::Alive2(request)
            .encode()
            .map_err(|source| ClientError::Protocol { addr, source })?;
        self.timed("ALIVE2_REQ", async {
            let mut stream = self.connect().await?;
            stream
                .write_all(&frame)
                .await
                .map_err(|source| ClientError::Io { addr, source })?;
            let mut buf = Vec::with_capacity(6);
            loop {
                match Alive2Reply::decode(&buf)
                    .map_err(|source| ClientError::Protocol { addr, source })?
                {
                    Some((reply, _)) if reply.result == 0 => {
                        return Ok(ErlangRegistration {
                            stream,
                            creation: reply.creation,
                            extended: reply.extended,
                        });
                    }
                    Some((reply, _)) => {
                        return Err(ClientError::Alive2Refused {
                            addr,
                            name: name.clone(),
                            result: reply.result,
                        });
                    }
                    None => {
                        let mut chunk = [0u8; 8];
                        let n = stream
                            .read(&mut chunk)
                            .await
                            .map_err(|source| ClientError::Io { addr, source })?;
                        if n == 0 {
                            return Err(ClientError::ClosedEarly {
                                addr,
                                operation: "ALIVE2_REQ",
                            });
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        })
        .await
    }

    async fn register_on(
        &self,
        conn: &mut JoerlConnection,
        registration: &Registration,
    ) -> Result<RegisteredReply, ClientError> {
        let request = JoerlRequest::Register(registration.to_request());
        match self
            .timed("register", conn.call("register", request))
            .await?
        {
            JoerlReply::Registered(done) => Ok(done),
            other => Err(unexpected(self.addr, "register", other)),
        }
    }

    /// Registers a node (joerl daemons only). The returned guard keeps the
    /// registration alive in the background, registers again after the daemon
    /// restarts or the connection drops, and unregisters when dropped.
    ///
    /// Must be called inside a tokio runtime (the guard spawns a task).
    pub async fn register(
        &self,
        registration: Registration,
    ) -> Result<RegistrationGuard, ClientError> {
        protocol::validate_name(&registration.name).map_err(|reason| ClientError::Refused {
            addr: self.addr,
            source: RegistryError::InvalidName(reason),
        })?;
        let mut conn = self
            .timed("register", JoerlConnection::connect(self))
            .await?;
        let done = self.register_on(&mut conn, &registration).await?;
        let state = RegistrationState {
            creation: done.creation,
            generation: 1,
            registered: true,
        };
        let (state_tx, state_rx) = watch::channel(state);
        let (stop_tx, stop_rx) = oneshot::channel();
        let lease = done.lease_ms.map(Duration::from_millis);
        let keeper = Keeper {
            client: self.clone(),
            registration: registration.clone(),
            token: done.token,
            renew_every: renew_interval(&done),
            state: state_tx,
        };
        let task = tokio::spawn(keeper.run(conn, stop_rx));
        Ok(RegistrationGuard {
            name: registration.name,
            lease,
            state: state_rx,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// How often to renew: the daemon's advice, but at least three times per lease.
fn renew_interval(done: &RegisteredReply) -> Duration {
    let advised = Duration::from_millis(done.keepalive_ms.max(1));
    match done.lease_ms {
        Some(lease) => advised.min(Duration::from_millis((lease / 3).max(1))),
        None => advised,
    }
}

/// An Erlang-style registration made with [`EpmdClient::alive2`]: the daemon
/// keeps the node registered while this value (its connection) lives.
#[derive(Debug)]
pub struct ErlangRegistration {
    stream: TcpStream,
    creation: u32,
    extended: bool,
}

impl ErlangRegistration {
    /// The creation the daemon assigned.
    pub fn creation(&self) -> u32 {
        self.creation
    }

    /// Whether the reply was `ALIVE2_X_RESP` (32-bit creation).
    pub fn extended(&self) -> bool {
        self.extended
    }

    /// Resolves when the daemon closes the connection, i.e. the registration
    /// ended on the daemon's side (`STOP_REQ`, daemon exit, or a network failure).
    pub async fn closed(&mut self) {
        let mut buf = [0u8; 16];
        loop {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    /// Closes the connection, which unregisters the node.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Where a guarded registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationState {
    /// Creation of the current (or last) registration.
    pub creation: u32,
    /// How many times the node has been registered (1 after [`EpmdClient::register`]).
    pub generation: u64,
    /// Whether the daemon currently holds the registration, as far as the guard knows.
    pub registered: bool,
}

/// Keeps a joerl registration alive; unregisters when dropped.
///
/// Created by [`EpmdClient::register`]. Dropping the guard asks its background
/// task to unregister; if the tokio runtime shuts down right after, that may
/// not happen (a lease then simply runs out). Call
/// [`RegistrationGuard::unregister`] to be sure.
#[derive(Debug)]
pub struct RegistrationGuard {
    name: String,
    lease: Option<Duration>,
    state: watch::Receiver<RegistrationState>,
    stop: Option<oneshot::Sender<Stop>>,
    task: Option<JoinHandle<Result<(), ClientError>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Unregister,
    Abandon,
}

impl RegistrationGuard {
    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease the daemon granted at the first registration (`None`: connection-held).
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// The creation of the current registration (it changes when the guard
    /// registers again, e.g. after a daemon restart).
    pub fn creation(&self) -> u32 {
        self.state.borrow().creation
    }

    /// The full current state.
    pub fn state(&self) -> RegistrationState {
        *self.state.borrow()
    }

    /// A receiver that sees every change of state (new creation, lost registration).
    pub fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Unregisters and waits for the daemon's answer.
    pub async fn unregister(mut self) -> Result<(), ClientError> {
        self.finish(Stop::Unregister).await
    }

    /// Stops renewing without unregistering: a leased registration stays until
    /// its lease runs out (as if this process had died); a connection-held one
    /// ends when the connection closes.
    pub async fn abandon(mut self) {
        let _ = self.finish(Stop::Abandon).await;
    }

    async fn finish(&mut self, how: Stop) -> Result<(), ClientError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        // The background task unregisters on its own when told to.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Stop::Unregister);
        }
    }
}

/// The guard's background task.
struct Keeper {
    client: EpmdClient,
    registration: Registration,
    token: RegistrationToken,
    renew_every: Duration,
    state: watch::Sender<RegistrationState>,
}

impl Keeper {
    fn set_registered(&self, registered: bool) {
        self.state.send_if_modified(|s| {
            let changed = s.registered != registered;
            s.registered = registered;
            changed
        });
    }

    fn adopt(&mut self, done: RegisteredReply) {
        self.token = done.token;
        self.renew_every = renew_interval(&done);
        self.state.send_modify(|s| {
            s.creation = done.creation;
            s.generation += 1;
            s.registered = true;
        });
        info!(name = %self.registration.name, creation = done.creation, "registered again with epmd");
    }

    async fn run(
        mut self,
        first: JoerlConnection,
        mut stop: oneshot::Receiver<Stop>,
    ) -> Result<(), ClientError> {
        let name = self.registration.name.clone();
        let addr = self.client.addr;
        let mut conn = Some(first);
        let max_backoff = self.renew_every.min(Duration::from_secs(2));
        let mut backoff = Duration::from_millis(50);
        loop {
            match conn.as_mut() {
                Some(c) => {
                    tokio::select! {
                        how = &mut stop => {
                            let how = how.unwrap_or(Stop::Unregister);
                            if how == Stop::Abandon {
                                return Ok(());
                            }
                            let request = JoerlRequest::Unregister(UnregisterRequest { token: self.token });
                            let reply = self.client.timed("unregister", c.call("unregister", request)).await?;
                            return match reply {
                                JoerlReply::Unregistered => {
                                    debug!(%name, "unregistered");
                                    Ok(())
                                }
                                other => Err(unexpected(addr, "unregister", other)),
                            };
                        }
                        _ = tokio::time::sleep(self.renew_every) => {
                            let request = JoerlRequest::KeepAlive(KeepAliveRequest { token: self.token });
                            match self.client.timed("keep-alive", c.call("keep-alive", request)).await {
                                Ok(JoerlReply::KeptAlive { .. }) => {}
                                Ok(JoerlReply::Refused(RegistryError::UnknownToken)) => {
                                    warn!(%name, "epmd no longer holds the registration; registering again");
                                    self.set_registered(false);
                                    match self.client.register_on(c, &self.registration).await {
                                        Ok(done) => self.adopt(done),
                                        Err(err) => {
                                            warn!(%name, error = %err, "registering again failed; will retry");
                                            conn = None;
                                        }
                                    }
                                }
                                Ok(other) => {
                                    warn!(%name, reply = ?other, "unexpected keep-alive reply; reconnecting");
                                    conn = None;
                                }
                                Err(err) => {
                                    warn!(%name, error = %err, "keep-alive failed; reconnecting");
                                    conn = None;
                                }
                            }
                        }
                        closed = c.closed() => {
                            match closed {
                                Ok(()) => warn!(%name, %addr, "epmd closed the connection; reconnecting"),
                                Err(err) => warn!(%name, error = %err, "connection to epmd failed; reconnecting"),
                            }
                            conn = None;
                        }
                    }
                    if conn.is_none() {
                        if self.registration.lifetime == RegistrationLifetime::Connection {
                            self.set_registered(false);
                        }
                        backoff = Duration::from_millis(50);
                    }
                }
                None => {
                    tokio::select! {
                        how = &mut stop => {
                            if how.unwrap_or(Stop::Unregister) == Stop::Abandon {
                                return Ok(());
                            }
                            // Not connected: one attempt to remove the lease now;
                            // if the daemon is unreachable the lease runs out by itself.
                            let request = JoerlRequest::Unregister(UnregisterRequest { token: self.token });
                            let reply = self.client.joerl_call("unregister", request).await?;
                            return match reply {
                                JoerlReply::Unregistered => Ok(()),
                                other => Err(unexpected(addr, "unregister", other)),
                            };
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                    match self.reconnect().await {
                        Ok(c) => {
                            conn = Some(c);
                            backoff = Duration::from_millis(50);
                        }
                        Err(err) => debug!(%name, error = %err, "epmd not reachable yet"),
                    }
                }
            }
        }
    }

    /// Opens a new connection and either renews the existing registration on it
    /// or, if the daemon forgot it, registers again.
    async fn reconnect(&mut self) -> Result<JoerlConnection, ClientError> {
        let client = self.client.clone();
        let mut conn = client
            .timed("register", JoerlConnection::connect(&client))
            .await?;
        let request = JoerlRequest::KeepAlive(KeepAliveRequest { token: self.token });
        let still_held = match client
            .timed("keep-alive", conn.call("keep-alive", request))
            .await?
        {
            // A connection-held registration ended with the old connection;
            // the daemon may not have noticed yet, so it is not "still held".
            JoerlReply::KeptAlive { lease_ms: Some(_) } => true,
            JoerlReply::KeptAlive { lease_ms: None } => false,
            JoerlReply::Refused(RegistryError::UnknownToken) => false,
            other => return Err(unexpected(client.addr, "keep-alive", other)),
        };
        if still_held {
            self.set_registered(true);
            debug!(name = %self.registration.name, "lease still held; renewed on a new connection");
            return Ok(conn);
        }
        self.set_registered(false);
        match client.register_on(&mut conn, &self.registration).await {
            Ok(done) => {
                self.adopt(done);
                Ok(conn)
            }
            Err(ClientError::Refused {
                source: RegistryError::NameTaken(_),
                addr,
            }) => {
                // Possibly our own connection-held registration that the daemon
                // has not dropped yet; retried after the backoff.
                Err(ClientError::Refused {
                    addr,
                    source: RegistryError::NameTaken(self.registration.name.clone()),
                })
            }
            Err(err) => Err(err),
        }
    }
}
