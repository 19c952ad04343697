//! Shared helpers for joerl-dist integration tests: an in-process EPMD, nodes on
//! loopback port 0, a forwarding actor, and a TCP proxy that can cut or freeze
//! connections.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, NodeBuilder, Pid};
use joerl_epmd::{EpmdServer, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `etcdctl` (v3 API) against `endpoint` with `args` (raw bytes, so
/// keys need not be UTF-8), as an operator would; panics with its output
/// if it fails.
pub fn etcdctl(endpoint: &str, args: &[&[u8]]) {
    use std::os::unix::ffi::OsStrExt;
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
        .output()
        .expect("etcdctl runs (Debian: etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub async fn epmd() -> EpmdServer {
    EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("epmd binds")
}

pub fn builder(name: &str, epmd: SocketAddr) -> NodeBuilder {
    NodeBuilder::new(name, "127.0.0.1:0".parse().unwrap(), epmd).cookie("test-cookie")
}

pub async fn node(name: &str, epmd: SocketAddr) -> DistributedSystem {
    builder(name, epmd).start().await.expect("node starts")
}

/// Forwards every message it receives (with its sender) to the test.
pub struct Forward(pub mpsc::UnboundedSender<(Message, Option<Pid>)>);

impl Actor for Forward {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let _ = self.0.send((msg, ctx.sender()));
    }
}

pub fn forward() -> (Forward, mpsc::UnboundedReceiver<(Message, Option<Pid>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Forward(tx), rx)
}

pub async fn recv<T: 'static>(
    rx: &mut mpsc::UnboundedReceiver<(Message, Option<Pid>)>,
) -> (T, Option<Pid>) {
    let (msg, from) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("message within the deadline")
        .expect("channel open");
    match msg.downcast::<T>() {
        Ok(v) => (*v, from),
        Err(_) => panic!("message is not a {}", std::any::type_name::<T>()),
    }
}

pub async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy in front of `target` that can cut all its connections or
/// freeze them (stop forwarding while keeping the sockets open).
pub struct Proxy {
    pub addr: SocketAddr,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// A second handle on each target-side socket, so that `cut_half` can close
    /// the client side while the target side stays open.
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// Target-side sockets left open by `cut_half`, silent until the proxy drops.
    zombies: Mutex<Vec<std::net::TcpStream>>,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p2, f2, h2) = (pipes.clone(), frozen.clone(), held.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let Ok(std_out) = outbound.into_std() else {
                    continue;
                };
                let Ok(dup) = std_out.try_clone() else {
                    continue;
                };
                h2.lock().unwrap().push(dup);
                let Ok(outbound) = TcpStream::from_std(std_out) else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let a = tokio::spawn(pump(ri, wo, f2.clone()));
                let b = tokio::spawn(pump(ro, wi, f2.clone()));
                p2.lock().unwrap().extend([a, b]);
            }
        });
        Proxy {
            addr,
            pipes,
            held,
            zombies: Mutex::new(Vec::new()),
            frozen,
            accept,
        }
    }

    /// Closes every proxied connection (both sides see the connection drop).
    pub fn cut(&self) {
        self.held.lock().unwrap().clear();
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    /// Resets every proxied connection: the target side gets an RST (the
    /// socket is closed with a zero linger), the client side a FIN.
    pub fn cut_reset(&self) {
        for s in self.held.lock().unwrap().drain(..) {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    /// A half-open cut: the client side of every proxied connection is closed,
    /// the target side stays open and silent (as if the client's host vanished
    /// and only the client noticed).
    pub fn cut_half(&self) {
        let held: Vec<_> = self.held.lock().unwrap().drain(..).collect();
        self.zombies.lock().unwrap().extend(held);
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    /// Stops forwarding bytes without closing anything.
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy that holds every connection it accepts (reading nothing) until
/// `release` is called, then forwards both ways. Two of them make two nodes'
/// dials to each other meet in the middle of their handshakes.
pub struct GateProxy {
    pub addr: SocketAddr,
    /// Connections accepted and held so far.
    pub held: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections being forwarded now (released and not yet closed).
    pub open: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
    accept: JoinHandle<()>,
}

impl GateProxy {
    pub async fn start(target: SocketAddr) -> GateProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (h2, g2, o2) = (held.clone(), gate.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let gate = g2.clone();
                let open = o2.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = gate.acquire().await else {
                        return;
                    };
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    // Done when either side closes.
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                    }
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        GateProxy {
            addr,
            held,
            open,
            gate,
            accept,
        }
    }

    /// Lets every held (and every later) connection through.
    pub fn release(&self) {
        self.gate.add_permits(1 << 20);
    }
}

impl Drop for GateProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Nodes a and b, each with its own EPMD; a finds b in its EPMD at a proxy's
/// port (b cannot find a), so every connection between them goes through the
/// proxy, which a test can cut.
pub struct Pair {
    pub a: DistributedSystem,
    pub b: DistributedSystem,
    pub proxy: Proxy,
    _epmd_a: joerl_epmd::EpmdServer,
    _epmd_b: joerl_epmd::EpmdServer,
    _registration: joerl_epmd::RegistrationGuard,
}

/// A [`Pair`] named `PREFIX_a` and `PREFIX_b`, their builders tuned.
pub async fn pair(
    prefix: &str,
    tune_a: impl FnOnce(NodeBuilder) -> NodeBuilder,
    tune_b: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Pair {
    let epmd_a = epmd().await;
    let epmd_b = epmd().await;
    let a = tune_a(builder(&format!("{prefix}_a"), epmd_a.local_addr()))
        .start()
        .await
        .unwrap();
    let b_name = format!("{prefix}_b");
    let b = tune_b(builder(&b_name, epmd_b.local_addr()))
        .start()
        .await
        .unwrap();
    let proxy = Proxy::start(b.local_addr()).await;
    let registration = joerl_epmd::EpmdClient::new(epmd_a.local_addr())
        .register(
            joerl_epmd::Registration::new(&b_name, proxy.addr.port())
                .host("127.0.0.1")
                .metadata(joerl_dist::NODE_NAME_KEY, b.name()),
        )
        .await
        .unwrap();
    Pair {
        a,
        b,
        proxy,
        _epmd_a: epmd_a,
        _epmd_b: epmd_b,
        _registration: registration,
    }
}

/// Membership timings fast enough for tests, on 127.0.0.1 and a port of its
/// own, joining through `seed` if given.
pub fn cluster_config(
    cluster_name: &str,
    seed: Option<SocketAddr>,
) -> joerl_dist::cluster::ClusterConfig {
    let mut b = joerl_dist::cluster::ClusterConfig::builder()
        .cluster_name(cluster_name)
        .bind_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .port(0)
        .probe(Duration::from_millis(200), Duration::from_millis(80))
        .gossip_interval(Duration::from_millis(50))
        .announce_interval(Duration::from_millis(500));
    if let Some(s) = seed {
        b = b.seeds([s.to_string()]);
    }
    b.build().unwrap()
}

/// A clustered node with an EPMD of its own (only gossip tells the nodes
/// where the others are); the EPMD lives as long as the handle returned.
pub async fn clustered(
    name: &str,
    cluster_name: &str,
    seed: Option<SocketAddr>,
) -> (DistributedSystem, EpmdServer) {
    let e = epmd().await;
    let node = builder(name, e.local_addr()).start().await.unwrap();
    node.enable_clustering(cluster_config(cluster_name, seed))
        .await
        .unwrap();
    (node, e)
}

/// A clustered node running placement, its placement, and its EPMD.
pub type PlacedMember = (
    DistributedSystem,
    joerl_dist::cluster::placement::Placements,
    EpmdServer,
);

/// A clustered node running placement (embedded leader election).
pub async fn placed_member(
    name: &str,
    cluster_name: &str,
    seed: Option<SocketAddr>,
) -> PlacedMember {
    let (node, e) = clustered(name, cluster_name, seed).await;
    let p = joerl_dist::cluster::placement::start(&node).unwrap();
    (node, p, e)
}

/// Three members `PREFIX_a`, `_b`, `_c` that all place on the three and
/// accept the first as leader.
pub async fn placed_three(prefix: &str, cluster_name: &str) -> Vec<PlacedMember> {
    let first = placed_member(&format!("{prefix}_a"), cluster_name, None).await;
    let seed = first.0.cluster().unwrap().gossip_addr();
    let b = placed_member(&format!("{prefix}_b"), cluster_name, Some(seed)).await;
    let c = placed_member(&format!("{prefix}_c"), cluster_name, Some(seed)).await;
    let all = vec![first, b, c];
    let names: std::collections::BTreeSet<String> =
        all.iter().map(|m| m.0.name().to_string()).collect();
    for (_, p, _) in &all {
        wait_until(&format!("{p:?} places on {names:?}"), || {
            p.members() == names
        })
        .await;
    }
    let leader = all[0].0.name().to_string();
    for (_, p, _) in &all {
        wait_until(&format!("{p:?} accepts {leader} as leader"), || {
            p.leader().is_some_and(|l| l.node == leader)
        })
        .await;
    }
    all
}
