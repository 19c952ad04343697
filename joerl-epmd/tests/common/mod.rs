//! Helpers shared by the integration tests: servers on port 0, polling with
//! deadlines, raw protocol calls, and child processes that are always killed.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use joerl_epmd::protocol::{JoerlReply, JoerlRequest, RegisterRequest, Request};
use joerl_epmd::{DistInfo, EpmdClient, EpmdServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous deadline for anything on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for things that wait on `erl` starting up.
pub const ERL_DEADLINE: Duration = Duration::from_secs(60);

pub fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Our daemon on 127.0.0.1 with a free port, with `tweak` applied to the defaults.
pub async fn start_server(tweak: impl FnOnce(&mut ServerConfig)) -> EpmdServer {
    let mut config = ServerConfig::new(loopback0());
    tweak(&mut config);
    EpmdServer::bind(config).await.expect("server starts")
}

/// Short leases for tests: 300 ms default lease, renewals every 100 ms.
pub fn short_leases(config: &mut ServerConfig) {
    config.default_lease = Duration::from_millis(300);
    config.keepalive_interval = Duration::from_millis(100);
    config.min_lease = Duration::from_millis(50);
    config.reap_interval = Some(Duration::from_millis(25));
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `client`'s daemon no longer knows `name`, asked with joerl's
/// lookup (`joerl == true`) or Erlang's PORT_PLEASE2 (which the real epmd answers too).
pub async fn wait_until_unregistered(what: &str, client: &EpmdClient, name: &str, joerl: bool) {
    wait_for(what, DEADLINE, || {
        let client = client.clone();
        async move {
            let gone = if joerl {
                client.lookup(name).await.unwrap().is_none()
            } else {
                client.port_please(name).await.unwrap().is_none()
            };
            gone.then_some(())
        }
    })
    .await
}

/// A port on 127.0.0.1 that was free a moment ago (for programs that need a port number).
pub fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().unwrap().port()
}

/// Sends raw bytes, then reads until the peer closes (or `DEADLINE` passes, which fails).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    read_until_closed(&mut stream).await
}

pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("peer closes the connection in time")
        .map(|_| out)
        .unwrap_or_default()
}

/// Sends one framed request body (a 2-byte length is prepended).
pub async fn raw_request(addr: SocketAddr, body: &[u8]) -> Vec<u8> {
    let mut framed = (body.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(body);
    raw_exchange(addr, &framed).await
}

/// A connection speaking joerl requests, for tests that need raw control.
pub struct RawJoerl {
    pub stream: TcpStream,
}

impl RawJoerl {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// Connects from the local address `from` (e.g. another loopback address).
    pub async fn connect_from(from: &str, addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{from}:0").parse().unwrap())
            .expect("bind the client's address");
        Self {
            stream: socket.connect(addr).await.expect("connect"),
        }
    }

    pub async fn call(&mut self, request: JoerlRequest) -> JoerlReply {
        let frame = Request::Joerl(request).encode().unwrap();
        self.stream.write_all(&frame).await.unwrap();
        self.read_reply().await
    }

    /// Reads one joerl reply.
    pub async fn read_reply(&mut self) -> JoerlReply {
        let mut header = [0u8; 4];
        tokio::time::timeout(DEADLINE, self.stream.read_exact(&mut header))
            .await
            .expect("reply in time")
            .expect("reply header");
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream.read_exact(&mut body).await.expect("reply body");
        JoerlReply::decode_body(&body).expect("reply decodes")
    }
}

/// A joerl registration request for `name` (connection-held if `lease_ms` is `None`).
pub fn register_request(name: &str, port: u16, lease_ms: Option<u64>) -> JoerlRequest {
    JoerlRequest::Register(RegisterRequest {
        name: name.into(),
        host: String::new(),
        port,
        metadata: Default::default(),
        lease_ms,
        dist: DistInfo::default(),
    })
}

/// Registers `count` joerl nodes `{prefix}{i}` with leases of the daemon's
/// default length and `metadata_bytes` of metadata each, pipelining the
/// requests in batches on one connection (the daemon must allow that many
/// registrations per connection and per source).
pub async fn register_many(addr: SocketAddr, prefix: &str, count: usize, metadata_bytes: usize) {
    let mut conn = RawJoerl::connect(addr).await;
    let names: Vec<(String, u16)> = (0..count)
        .map(|i| (format!("{prefix}{i}"), 1000 + (i % 60_000) as u16))
        .collect();
    for batch in names.chunks(200) {
        let mut frames = Vec::new();
        for (name, port) in batch {
            let mut request = register_request(name, *port, Some(0));
            if let JoerlRequest::Register(r) = &mut request {
                r.metadata.insert("pad".into(), "x".repeat(metadata_bytes));
            }
            frames.extend(Request::Joerl(request).encode().unwrap());
        }
        conn.stream.write_all(&frames).await.unwrap();
        for (name, _) in batch {
            let reply = conn.read_reply().await;
            assert!(
                matches!(reply, JoerlReply::Registered(_)),
                "registering {name}: {reply:?}"
            );
        }
    }
}

/// A client with a small receive buffer that sends `request` and never reads.
pub async fn never_reading_client(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    stream
}

/// Reads (and discards) until the peer closes or resets the connection;
/// panics if that does not happen within `DEADLINE`.
pub async fn drain_until_closed(stream: &mut TcpStream) {
    let mut chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the daemon closes the connection in time");
}

/// `VmRSS` (or another `/proc/PID/status` field given in kB) of process `pid`, in KiB.
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub what: String,
}

impl ChildGuard {
    pub fn spawn(what: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child: Some(child),
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (up to `deadline`) for the process to exit by itself; returns its stdout.
    pub fn wait_output(mut self, deadline: Duration) -> String {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            match child.try_wait().expect("try_wait") {
                Some(_) => break,
                None if started.elapsed() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not finish within {deadline:?}", self.what);
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let output = child.wait_with_output().expect("collect output");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Path of an Erlang program, or a panic that says how to install it.
pub fn erlang_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed, so the Erlang interop tests cannot run; \
             install Erlang/OTP (Debian: `apt-get install erlang-base`)"
        )
    })
}

/// Starts the real epmd in the foreground on 127.0.0.1:`port`.
pub fn start_real_epmd(port: u16, relaxed: bool) -> ChildGuard {
    let mut command = Command::new(erlang_tool("epmd"));
    command
        .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if relaxed {
        command.arg("-relaxed_command_check");
    }
    ChildGuard::spawn("epmd", &mut command)
}

/// Starts the real epmd on a free port and waits until it answers NAMES_REQ.
pub async fn real_epmd(relaxed: bool) -> (ChildGuard, SocketAddr) {
    for _ in 0..5 {
        let port = free_port();
        let mut guard = start_real_epmd(port, relaxed);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = joerl_epmd::EpmdClient::new(addr).with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if let Some(Some(status)) = guard.child.as_mut().map(|c| c.try_wait().unwrap()) {
                // Port taken in the meantime: try another one.
                eprintln!("epmd on port {port} exited early ({status}); retrying");
                break;
            }
            if client.names().await.is_ok() {
                return (guard, addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("could not start the real epmd on a free loopback port");
}

/// An `erl` node `name@localhost` using the epmd on `epmd_port`, running `eval`
/// (or staying up if `eval` is `None`).
pub fn start_erl(name: &str, epmd_port: u16, eval: Option<&str>) -> ChildGuard {
    let mut command = Command::new(erlang_tool("erl"));
    command
        .args([
            "-sname",
            &format!("{name}@localhost"),
            "-setcookie",
            "joerl_test_cookie",
            "-noshell",
            "-start_epmd",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
        ])
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdin(Stdio::null());
    // Only short-lived nodes have their output collected; a long-running node
    // must not block on a full pipe.
    if eval.is_some() {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    if let Some(eval) = eval {
        command.args(["-eval", eval]);
    }
    ChildGuard::spawn(&format!("erl node {name}"), &mut command)
}
