//! Distribution benchmarks between two OS processes over loopback, and a
//! failure-detection drill.
//!
//! ```text
//! # terminal 1: an EPMD and a node with `sink` and `echo`
//! cargo run --release --bin epmd_server -- 127.0.0.1:4369
//! cargo run --release --example dist_bench -- serve --name bench_srv --epmd 127.0.0.1:4369
//! # terminal 2
//! cargo run --release --example dist_bench -- throughput --name bench_cli --target bench_srv@127.0.0.1 --epmd 127.0.0.1:4369 --count 5000000 --size 32
//! cargo run --release --example dist_bench -- rtt --name bench_cli --target bench_srv@127.0.0.1 --epmd 127.0.0.1:4369 --count 100000
//! cargo run --release --example dist_bench -- watch --name bench_w --target bench_srv@127.0.0.1 --epmd 127.0.0.1:4369
//! cargo run --release --example dist_bench -- cuts --name bench_c --target bench_srv@127.0.0.1 --epmd 127.0.0.1:4369 --count 1000000 --cuts 10
//! # TLS: make certificates once, then add the three flags to every mode (serve too)
//! cargo run --release --example dist_bench -- gen-certs --dir certs --names srv,cli
//! cargo run --release --example dist_bench -- serve --name bench_srv --epmd 127.0.0.1:4369 --tls-cert certs/srv.pem --tls-key certs/srv.key --tls-ca certs/ca.pem
//! ```
//!
//! Each client mode prints exactly one result line, last:
//! `throughput msgs_per_s=.. mb_per_s=.. count=.. size=..`,
//! `rtt p50_us=.. p99_us=.. mean_us=.. count=..`,
//! `down reason=.. after_ms=..` (watch: the sink's down message; `after_ms` is the
//! time since the target's connection was last heard from),
//! `cuts sent=.. received=.. lost=.. duplicated=.. reordered=.. node_downs=.. cuts=..`
//! (cuts: numbered messages through a proxy the client runs itself and cuts K
//! times; the line before it, `accounting dropped_out=.. unsent=.. lost_in_flight=..`,
//! is what the client's node counted as dropped, to compare with `lost`).
//! A wrong `--cookie` makes the clients fail within seconds with "authentication failed".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use joerl_dist::{
    Actor, ActorContext, DistributedSystem, DownMessage, Message, Pid, remote_message,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Parser, Debug)]
#[command(about = "joerl distribution benchmarks (two OS processes over loopback)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// This node's name (`name` or `name@host`).
    #[arg(long)]
    name: String,
    #[command(flatten)]
    node: joerl_examples::NodeOptions,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Runs a node with a registered `sink` and `echo` until killed.
    Serve {
        #[command(flatten)]
        common: Common,
    },
    /// Sends COUNT messages of SIZE payload bytes to `sink` on TARGET.
    Throughput {
        #[command(flatten)]
        common: Common,
        /// The serving node, `name@host`.
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// COUNT sequential ping-pongs with `echo` on TARGET.
    Rtt {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
    },
    /// Monitors `sink` on TARGET and reports its down message.
    Watch {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        target: String,
    },
    /// Sends COUNT numbered messages to `counter` on TARGET through a proxy this
    /// process runs, cutting the connection CUTS times on the way; reports what
    /// arrived, twice, out of order, and how many node-downs were seen.
    Cuts {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 10)]
        cuts: u64,
    },
    /// Writes a CA and node certificates for the --tls-* flags:
    /// DIR/ca.pem, and DIR/NAME.pem and DIR/NAME.key for each name.
    GenCerts {
        /// Where to write them (created if missing).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Comma-separated names, one certificate each.
        #[arg(long, value_delimiter = ',', required = true)]
        names: Vec<String>,
        /// Hosts (DNS names or IPs) the certificates are valid for besides
        /// localhost, 127.0.0.1 and ::1.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

/// Writes the files of `gen-certs`.
fn gen_certs(dir: &std::path::Path, names: &[String], hosts: &[String]) -> Result<()> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let certs = joerl_dist::transport::generate_certs(&names, &hosts)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |file: &str, text: &str| {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("ca.pem", &certs.ca)?;
    for (name, cert, key) in &certs.nodes {
        write(&format!("{name}.pem"), cert)?;
        write(&format!("{name}.key"), key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(format!("{name}.key"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    println!("gen-certs dir={} names={}", dir.display(), names.join(","));
    Ok(())
}

/// A payload whose bytes are shared between sends (cloning is a reference count)
/// and that decodes with one allocation.
#[derive(Debug, Clone)]
struct Payload(Arc<[u8]>);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(Arc::from(v)))
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
                Ok(Payload(Arc::from(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(Arc::from(v)))
            }
        }
        d.deserialize_bytes(V)
    }
}
remote_message!(Payload, "dist_bench::Payload");

/// Client -> sink (or counter): expect `count` payloads (numbers), then
/// report to `reply_to`.
#[derive(Debug, Serialize, Deserialize)]
struct Start {
    count: u64,
    reply_to: Pid,
}
remote_message!(Start, "dist_bench::Start");

/// Sink -> client: ready, here is my Pid.
#[derive(Debug, Serialize, Deserialize)]
struct Ready(Pid);
remote_message!(Ready, "dist_bench::Ready");

/// Sink -> client: all payloads seen.
#[derive(Debug, Serialize, Deserialize)]
struct Done(u64);
remote_message!(Done, "dist_bench::Done");

/// Client <-> echo.
#[derive(Debug, Serialize, Deserialize)]
struct Ping(u64);
remote_message!(Ping, "dist_bench::Ping");

/// Client -> counter: one numbered message.
#[derive(Debug, Serialize, Deserialize)]
struct Numbered(u64);
remote_message!(Numbered, "dist_bench::Numbered");

/// Client -> counter: report what arrived so far to `reply_to`.
#[derive(Debug, Serialize, Deserialize)]
struct CountReport {
    reply_to: Pid,
}
remote_message!(CountReport, "dist_bench::CountReport");

/// Counter -> client.
#[derive(Debug, Serialize, Deserialize)]
struct CountResult {
    received: u64,
    duplicated: u64,
    reordered: u64,
}
remote_message!(CountResult, "dist_bench::CountResult");

/// Counts numbered messages: each number once, twice, or after a larger one.
#[derive(Default)]
struct Counter {
    seen: Vec<u64>,
    max: Option<u64>,
    received: u64,
    duplicated: u64,
    reordered: u64,
}

impl Actor for Counter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Some(n) = msg.downcast_ref::<Numbered>() {
            let n = n.0;
            let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
            if word >= self.seen.len() {
                self.seen.resize(word + 1, 0);
            }
            if self.seen[word] & bit != 0 {
                self.duplicated += 1;
                return;
            }
            self.seen[word] |= bit;
            self.received += 1;
            if self.max.is_some_and(|m| n < m) {
                self.reordered += 1;
            }
            self.max = Some(self.max.map_or(n, |m| m.max(n)));
            return;
        }
        if let Some(start) = msg.downcast_ref::<Start>() {
            *self = Counter {
                seen: vec![0; start.count.div_ceil(64) as usize],
                ..Counter::default()
            };
            let _ = ctx.send(start.reply_to, Ready(ctx.pid())).await;
        } else if let Some(report) = msg.downcast_ref::<CountReport>() {
            let result = CountResult {
                received: self.received,
                duplicated: self.duplicated,
                reordered: self.reordered,
            };
            let _ = ctx.send(report.reply_to, result).await;
        }
    }
}

struct Sink {
    expected: u64,
    seen: u64,
    reply_to: Option<Pid>,
}

impl Actor for Sink {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if msg.is::<Payload>() {
            self.seen += 1;
            if self.seen == self.expected {
                if let Some(to) = self.reply_to.take() {
                    let _ = ctx.send(to, Done(self.seen)).await;
                }
            }
            return;
        }
        if let Ok(start) = msg.downcast::<Start>() {
            self.expected = start.count;
            self.seen = 0;
            self.reply_to = Some(start.reply_to);
            let _ = ctx.send(start.reply_to, Ready(ctx.pid())).await;
        }
    }
}

struct Echo;

impl Actor for Echo {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Some(from) = ctx.sender() {
            let _ = ctx.send(from, msg).await;
        }
    }
}

/// Forwards what it receives to a oneshot-per-message channel for the client code.
struct Inbox(tokio::sync::mpsc::UnboundedSender<(Message, Option<Pid>)>);

impl Actor for Inbox {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let _ = self.0.send((msg, ctx.sender()));
    }
}

async fn start_node(c: &Common) -> Result<DistributedSystem> {
    c.node
        .builder_on(c.name.clone(), c.listen)?
        .start()
        .await
        .context("cannot start the node")
}

fn full_name(target: &str) -> String {
    if target.contains('@') {
        target.to_string()
    } else {
        format!("{target}@127.0.0.1")
    }
}

async fn connect(node: &DistributedSystem, target: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(10), node.connect(target))
        .await
        .context("connecting took longer than 10 s")?
        .with_context(|| format!("cannot connect to {target}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match args.mode {
        Mode::Serve { common } => serve(common).await,
        Mode::Throughput {
            common,
            target,
            count,
            size,
        } => throughput(common, &full_name(&target), count, size).await,
        Mode::Rtt {
            common,
            target,
            count,
        } => rtt(common, &full_name(&target), count).await,
        Mode::Watch { common, target } => watch(common, &full_name(&target)).await,
        Mode::Cuts {
            common,
            target,
            count,
            cuts,
        } => cut_run(common, &full_name(&target), count, cuts).await,
        Mode::GenCerts { dir, names, hosts } => gen_certs(&dir, &names, &hosts),
    }
}

async fn serve(c: Common) -> Result<()> {
    let node = start_node(&c).await?;
    let sink = node.spawn_with(
        Sink {
            expected: 0,
            seen: 0,
            reply_to: None,
        },
        joerl_dist::SpawnOptions::new().capacity(
            std::env::var("SINK_CAP")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024),
        ),
    )?;
    node.register("sink", sink)?;
    let echo = node.spawn(Echo);
    node.register("echo", echo)?;
    let counter = node.spawn(Counter::default());
    node.register("counter", counter)?;
    println!(
        "serving {} on {} (sink {sink}, echo {echo}, counter {counter})",
        node.name(),
        node.local_addr()
    );
    joerl_examples::until_stopped(None).await;
    let t = node.stats().total;
    println!(
        "served msgs_in={} dropped_in={} unknown_types={} reconnects={}",
        t.msgs_in, t.dropped_in, t.unknown_types, t.reconnects
    );
    node.shutdown().await;
    Ok(())
}

/// Tells `sink` on `target` to expect `count` payloads and report to a new
/// local inbox; returns the sink's Pid, the inbox and the inbox's receiver.
async fn start_run(
    node: &DistributedSystem,
    target: &str,
    count: u64,
) -> Result<(
    Pid,
    Pid,
    tokio::sync::mpsc::UnboundedReceiver<(Message, Option<Pid>)>,
)> {
    start_named(node, "sink", target, |reply_to| {
        Box::new(Start { count, reply_to })
    })
    .await
}

/// Sends the message `start(inbox)` to `name` on `target`, where `inbox` is a
/// new local inbox, and waits for its `Ready`; returns the Pid it names, the
/// inbox and the inbox's receiver.
async fn start_named(
    node: &DistributedSystem,
    name: &str,
    target: &str,
    start: impl FnOnce(Pid) -> Message,
) -> Result<(
    Pid,
    Pid,
    tokio::sync::mpsc::UnboundedReceiver<(Message, Option<Pid>)>,
)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let inbox = node.spawn(Inbox(tx));
    node.send((name, target), start(inbox)).await?;
    let (msg, _) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .with_context(|| format!("{name} did not answer within 10 s"))?
        .context("inbox closed")?;
    let ready = msg
        .downcast::<Ready>()
        .map_err(|_| anyhow::anyhow!("unexpected reply"))?
        .0;
    Ok((ready, inbox, rx))
}

async fn throughput(c: Common, target: &str, count: u64, size: usize) -> Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let node = start_node(&c).await?;
    connect(&node, target).await?;
    let (sink, inbox, mut rx) = start_run(&node, target, count).await?;
    let payload = Payload(Arc::from(vec![0xAB; size]));
    let start = Instant::now();
    let sender = node.system().clone();
    let producer = tokio::spawn(async move {
        for _ in 0..count {
            sender.send_from(Some(inbox), sink, payload.clone()).await?;
        }
        anyhow::Ok(())
    });
    let (msg, _) = rx.recv().await.context("inbox closed")?;
    let elapsed = start.elapsed();
    producer.await??;
    let done = msg
        .downcast::<Done>()
        .map_err(|_| anyhow::anyhow!("unexpected reply"))?;
    anyhow::ensure!(done.0 == count, "sink saw {} of {count}", done.0);
    node.shutdown().await;
    let secs = elapsed.as_secs_f64();
    println!(
        "throughput msgs_per_s={:.1} mb_per_s={:.1} count={count} size={size}",
        count as f64 / secs,
        (count as f64 * size as f64) / secs / 1e6
    );
    Ok(())
}

struct Pinger {
    target: String,
    echo: Option<Pid>,
    warmup: u64,
    remaining: u64,
    sent_at: Instant,
    samples: Vec<u32>,
    done: Option<oneshot::Sender<Vec<u32>>>,
}

impl Actor for Pinger {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.sent_at = Instant::now();
        let _ = ctx.send(("echo", &self.target), Ping(0)).await;
    }

    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        let rtt = self.sent_at.elapsed();
        if self.echo.is_none() {
            self.echo = ctx.sender();
        }
        if self.warmup > 0 {
            self.warmup -= 1;
        } else {
            self.samples
                .push(rtt.as_nanos().min(u32::MAX as u128) as u32);
            self.remaining -= 1;
            if self.remaining == 0 {
                if let Some(done) = self.done.take() {
                    let _ = done.send(std::mem::take(&mut self.samples));
                }
                return;
            }
        }
        let echo = self.echo.expect("echo replied");
        self.sent_at = Instant::now();
        let _ = ctx.send(echo, Ping(self.remaining)).await;
    }
}

async fn rtt(c: Common, target: &str, count: u64) -> Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let node = start_node(&c).await?;
    connect(&node, target).await?;
    let (tx, rx) = oneshot::channel();
    node.spawn(Pinger {
        target: target.to_string(),
        echo: None,
        warmup: 1000,
        remaining: count,
        sent_at: Instant::now(),
        samples: Vec::with_capacity(count as usize),
        done: Some(tx),
    });
    let mut samples = rx.await.context("the pinger stopped early")?;
    node.shutdown().await;
    let l = joerl_examples::latency(&mut samples);
    println!(
        "rtt p50_us={:.2} p99_us={:.2} mean_us={:.2} count={count}",
        l.p50_us, l.p99_us, l.mean_us
    );
    Ok(())
}

/// Monitors a Pid and hands the down message to the client code.
struct Watcher {
    target: Pid,
    tx: Option<oneshot::Sender<DownMessage>>,
}

impl Actor for Watcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.target)
            .expect("distribution router installed");
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(down) = msg.downcast::<DownMessage>() {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(*down);
            }
        }
    }
}

async fn watch(c: Common, target: &str) -> Result<()> {
    let node = start_node(&c).await?;
    connect(&node, target).await?;
    // Learn the sink's Pid: it answers a zero-length run with Ready.
    let (sink, _inbox, _rx) = start_run(&node, target, 0).await?;
    let (dtx, drx) = oneshot::channel();
    node.spawn(Watcher {
        target: sink,
        tx: Some(dtx),
    });
    println!("watching sink {sink} on {target}");
    let down = drx.await.context("the watcher stopped")?;
    let after = node.last_heard(target).unwrap_or_default();
    node.shutdown().await;
    println!("down reason={} after_ms={}", down.reason, after.as_millis());
    Ok(())
}

/// Waits until `cond` holds, checking every 10 ms, for at most `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn cut_run(c: Common, target: &str, count: u64, cuts: u64) -> Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    // The target as the shared EPMD lists it; this node finds it instead in a
    // private EPMD of its own, at the proxy's port, so every connection between
    // the two goes through the proxy. (The target cannot dial this node: only
    // connections this node makes exist.)
    let (short, _) = target
        .split_once('@')
        .context("--target must be name@host")?;
    let info = joerl_epmd::EpmdClient::new(c.node.epmd)
        .lookup(short)
        .await
        .context("EPMD lookup of the target")?
        .with_context(|| format!("{target} is not registered in EPMD at {}", c.node.epmd))?;
    let host = if info.host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        info.host.clone()
    };
    let target_addr = tokio::net::lookup_host((host.as_str(), info.port))
        .await?
        .next()
        .context("the target's host does not resolve")?;
    let proxy = joerl_examples::CutProxy::start(target_addr).await?;
    let private = joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
    ))
    .await?;
    let _entry = joerl_epmd::EpmdClient::new(private.local_addr())
        .register(
            joerl_epmd::Registration::new(short, proxy.addr.port())
                .host("127.0.0.1")
                .metadata(joerl_dist::NODE_NAME_KEY, target),
        )
        .await?;
    // Redial at once after a cut, and keep the queue small so the producer
    // is paced by the connection (not far ahead of it): then K cuts, each on a
    // live connection, fit into one run.
    let builder = joerl_dist::NodeBuilder::new(c.name.clone(), c.listen, private.local_addr())
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .queue_bytes(1024 * 1024);
    let node = c
        .node
        .apply(builder)?
        .start()
        .await
        .context("cannot start the node")?;
    connect(&node, target).await?;
    let mut events = node.subscribe();
    let downs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let down_counter = {
        let downs = downs.clone();
        let target = target.to_string();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if matches!(&ev, joerl_dist::NodeEvent::Down { node, .. } if *node == target) {
                    downs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let (counter, inbox, mut rx) = start_named(&node, "counter", target, |reply_to| {
        Box::new(Start { count, reply_to })
    })
    .await?;
    let stats = {
        let node = node.clone();
        let target = target.to_string();
        move || {
            node.stats()
                .peers
                .into_iter()
                .find(|p| p.node == target)
                .unwrap_or_default()
        }
    };
    let producer = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 0..count {
                node.send(counter, Numbered(i)).await?;
            }
            anyhow::Ok(())
        })
    };
    let base = stats().reconnects;
    for k in 1..=cuts {
        let at = count * k / (cuts + 1);
        wait_for(
            "the stream reached the next cut",
            Duration::from_secs(120),
            || {
                let s = stats();
                s.connected && s.msgs_out >= at
            },
        )
        .await?;
        if producer.is_finished() {
            break;
        }
        proxy.cut();
        wait_for("the connection came back", Duration::from_secs(60), || {
            stats().reconnects >= base + k
        })
        .await?;
    }
    let done_cuts = stats().reconnects - base;
    producer.await??;
    wait_for(
        "every message acknowledged or counted as lost",
        Duration::from_secs(120),
        || {
            let s = stats();
            s.connected && s.unacked_out == 0
        },
    )
    .await?;
    node.send(counter, CountReport { reply_to: inbox }).await?;
    let (msg, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .context("the counter did not report within 60 s")?
        .context("inbox closed")?;
    let result = msg
        .downcast::<CountResult>()
        .map_err(|_| anyhow::anyhow!("unexpected reply"))?;
    let s = stats();
    down_counter.abort();
    node.shutdown().await;
    println!(
        "accounting dropped_out={} unsent={} lost_in_flight={}",
        s.dropped_out, s.dropped_out_unsent, s.dropped_out_lost
    );
    println!(
        "cuts sent={count} received={} lost={} duplicated={} reordered={} node_downs={} cuts={done_cuts}",
        result.received,
        count - result.received,
        result.duplicated,
        result.reordered,
        downs.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}
