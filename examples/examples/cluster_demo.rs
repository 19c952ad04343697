//! The main demo: a three-node cluster on this machine, start to finish.
//!
//! ```text
//! cargo run --example cluster_demo
//! ```
//!
//! With no arguments it starts its own EPMD in the background on a free port,
//! starts two more nodes as child processes (`alpha` and `beta`) beside its own
//! node (`demo`), sends location-transparent messages, makes remote calls, then
//! kills `beta` with SIGKILL and shows the monitors on `demo` and on `alpha`
//! firing with `noconnection`. It prints a summary and exits 0, well within 30 s.
//! Ctrl-C stops it cleanly at any point.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_dist::gen_server::{ServerRef, spawn_server_with};
use joerl_dist::{
    Actor, ActorContext, DistributedSystem, DownMessage, ExitReason, Message, NodeBuilder,
    NodeEvent, Pid, SpawnOptions, receive, remote_message,
};
use joerl_epmd::{EpmdServer, ServerConfig};
use joerl_examples::{Greeting, Reply, Request, Service, init_logging_at, until_stopped};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

const COOKIE: &str = "cluster-demo";

#[derive(Parser, Debug)]
#[command(about = "joerl's main demo: a small cluster that starts its own EPMD")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Runs one member node (started by the demo itself).
    #[command(hide = true)]
    Node {
        #[arg(long)]
        name: String,
        #[arg(long)]
        epmd: std::net::SocketAddr,
    },
}

/// Asks a member's watcher to monitor the `service` of another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WatchService {
    node: String,
}
remote_message!(WatchService, "cluster_demo::WatchService");

/// A member's watcher reports what it saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saw(String);
remote_message!(Saw, "cluster_demo::Saw");

/// Answers greetings with a greeting to the sender.
struct Greeter {
    node: String,
}

impl Actor for Greeter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let (Ok(g), Some(from)) = (msg.downcast::<Greeting>(), ctx.sender()) {
            let reply = Greeting {
                from_node: self.node.clone(),
                text: format!("hi {}, {} here", g.from_node, self.node),
            };
            let _ = ctx.send(from, reply).await;
        }
    }
}

/// On a member: monitors other nodes' services on request, reports downs.
/// It uses its context alone for the distributed part (no node handle held).
struct Watcher {
    report_to: Option<Pid>,
}

impl Actor for Watcher {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let me = ctx.node().unwrap_or("?").to_string();
        receive!(msg, {
            WatchService as w => {
                self.report_to = ctx.sender();
                match ctx.whereis("service", &w.node).await {
                    Ok(Some(pid)) => {
                        ctx.monitor(pid).expect("distributed node");
                        let text = format!("{me} monitors {{service, {}}} = {pid}", w.node);
                        self.report(ctx, text).await;
                    }
                    other => {
                        let text = format!("cannot find service on {}: {other:?}", w.node);
                        self.report(ctx, text).await;
                    }
                }
            },
            DownMessage as down => {
                let text = format!("{me} saw {} go down: {}", down.pid, down.reason);
                println!("{text}");
                self.report(ctx, text).await;
            },
            else _other => {},
        })
    }
}

impl Watcher {
    async fn report(&self, ctx: &ActorContext, text: String) {
        if let Some(to) = self.report_to {
            let _ = ctx.send(to, Saw(text)).await;
        }
    }
}

/// Forwards what it receives to the demo's main task.
struct Inbox(mpsc::UnboundedSender<Message>);

impl Actor for Inbox {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let _ = self.0.send(msg);
    }
}

async fn start_node(name: &str, epmd: std::net::SocketAddr) -> Result<DistributedSystem> {
    NodeBuilder::new(name, "127.0.0.1:0".parse()?, epmd)
        .cookie(COOKIE)
        .start()
        .await
        .with_context(|| format!("cannot start node {name}"))
}

/// A member node: service, greeter, watcher; runs until stopped.
async fn member(name: String, epmd: std::net::SocketAddr) -> Result<()> {
    let node = start_node(&name, epmd).await?;
    spawn_server_with(
        &node,
        Service {
            node: node.name().to_string(),
        },
        SpawnOptions::new().name("service"),
    )?;
    let greeter = node.spawn(Greeter {
        node: node.name().to_string(),
    });
    node.register("greeter", greeter)?;
    let watcher = node.spawn(Watcher { report_to: None });
    node.register("watcher", watcher)?;
    println!("ready {}", node.name());
    until_stopped(None).await;
    node.shutdown().await;
    Ok(())
}

/// A member started as a child process; killed with SIGKILL when dropped.
struct Member {
    name: String,
    child: tokio::process::Child,
}

async fn spawn_member(short: &str, epmd: std::net::SocketAddr) -> Result<Member> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["node", "--name", short, "--epmd", &epmd.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a member process")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let name = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(name) = line.strip_prefix("ready ") {
                return Some(name.to_string());
            }
        }
        None
    })
    .await
    .context("member did not start within 15 s")?
    .context("member exited before it was ready")?;
    // Keep echoing what the member prints, prefixed with its name.
    let tag = short.to_string();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("    [{tag}] {line}");
        }
    });
    Ok(Member { name, child })
}

#[tokio::main]
async fn main() -> Result<()> {
    // The demo kills a node on purpose: keep the expected warnings about it quiet.
    init_logging_at("error");
    let args = Args::parse();
    if let Some(Role::Node { name, epmd }) = args.role {
        return member(name, epmd).await;
    }
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), demo()) => r.context("the demo took longer than 30 s")?,
        _ = until_stopped(None) => {
            println!("interrupted");
            Ok(())
        }
    }
}

async fn demo() -> Result<()> {
    let started = Instant::now();
    let epmd = EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let epmd_addr = epmd.local_addr();
    println!("1. EPMD running in the background on {epmd_addr}");

    let (alpha, mut beta) = tokio::try_join!(
        spawn_member("alpha", epmd_addr),
        spawn_member("beta", epmd_addr)
    )?;
    let node = start_node("demo", epmd_addr).await?;
    let mut events = node.subscribe();
    println!(
        "2. three nodes up: {}, {}, {}",
        node.name(),
        alpha.name,
        beta.name
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let inbox = node.spawn(Inbox(tx));
    let local_greeter = node.spawn(Greeter {
        node: node.name().to_string(),
    });
    node.register("greeter", local_greeter)?;

    // Location transparency: the same send to a local and to remote actors.
    for target in [node.name(), alpha.name.as_str(), beta.name.as_str()] {
        let hello = Greeting {
            from_node: node.name().to_string(),
            text: "hello".into(),
        };
        node.send_from(
            Some(inbox),
            node.whereis_or_remote("greeter", target).await?,
            hello,
        )
        .await?;
    }
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .context("inbox closed")?;
        if let Ok(g) = msg.downcast::<Greeting>() {
            println!("3. reply from {}: {}", g.from_node, g.text);
        }
    }

    // Remote calls, by {name, node}.
    let t = Duration::from_secs(5);
    let on_alpha = ServerRef::<Service>::new(("service", alpha.name.as_str()));
    let on_beta = ServerRef::<Service>::new(("service", beta.name.as_str()));
    let sum = node
        .call_timeout(&on_alpha, Request::SumSquares(100), t)
        .await?;
    let echo = node
        .call_timeout(&on_beta, Request::Echo("ping".into()), t)
        .await?;
    println!("4. remote calls: sum of squares on alpha = {sum:?}, echo on beta = {echo:?}");
    ensure!(sum == Reply::Number(338_350));

    // Monitors on demo and on alpha watch beta's service.
    let beta_service = node
        .whereis_remote("service", &beta.name, t)
        .await?
        .context("beta's service is registered")?;
    let (dtx, mut drx) = mpsc::unbounded_channel();
    node.spawn(DemoWatcher {
        target: beta_service,
        tx: dtx,
    });
    // The watcher on alpha reports to whoever asked: our inbox.
    node.send_from(
        Some(inbox),
        node.whereis_or_remote("watcher", &alpha.name).await?,
        WatchService {
            node: beta.name.clone(),
        },
    )
    .await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await?
        .context("inbox")?;
    if let Ok(saw) = msg.downcast::<Saw>() {
        println!("5. {}", saw.0);
    }

    println!("6. killing {} with SIGKILL", beta.name);
    let killed_at = Instant::now();
    beta.child.start_kill()?;
    let down = tokio::time::timeout(Duration::from_secs(10), drx.recv())
        .await?
        .context("watcher gone")?;
    println!(
        "7. demo's monitor fired after {} ms: {} went down with reason {}",
        killed_at.elapsed().as_millis(),
        down.pid,
        down.reason
    );
    ensure!(
        down.reason == ExitReason::NoConnection,
        "expected noconnection, got {}",
        down.reason
    );
    let mut alpha_saw = None;
    while alpha_saw.is_none() {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .context("inbox")?;
        if let Ok(saw) = msg.downcast::<Saw>() {
            if saw.0.contains("go down") {
                alpha_saw = Some(saw.0);
            }
        }
    }
    let alpha_saw = alpha_saw.unwrap_or_default();
    println!("8. alpha's monitor fired too: {alpha_saw}");
    ensure!(alpha_saw.contains("noconnection"), "alpha saw: {alpha_saw}");
    let mut downs = Vec::new();
    while let Some(ev) = events.try_recv() {
        if let NodeEvent::Down { node: n, reason } = ev {
            downs.push(format!("{n} ({reason})"));
        }
    }

    let stats = node.stats();
    node.shutdown().await;
    drop(alpha);
    let _ = beta.child.wait().await;
    epmd.shutdown().await;
    println!(
        "summary: 3 nodes, 3 greetings answered, 2 remote calls, node-down events [{}], \
         monitors on demo and alpha fired with noconnection; {} messages out, {} in; {} ms",
        downs.join(", "),
        stats.total.msgs_out,
        stats.total.msgs_in,
        started.elapsed().as_millis()
    );
    if downs.is_empty() {
        bail!("no node-down event was seen");
    }
    Ok(())
}

/// On the demo node: monitors one Pid and passes the down message on.
struct DemoWatcher {
    target: Pid,
    tx: mpsc::UnboundedSender<DownMessage>,
}

impl Actor for DemoWatcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.target).expect("distributed node");
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(d) = msg.downcast::<DownMessage>() {
            let _ = self.tx.send(*d);
        }
    }
}

/// Looks a name up locally or on another node.
trait WhereIsAnywhere {
    async fn whereis_or_remote(&self, name: &str, node: &str) -> Result<Pid>;
}

impl WhereIsAnywhere for DistributedSystem {
    async fn whereis_or_remote(&self, name: &str, node: &str) -> Result<Pid> {
        self.whereis_remote(name, node, Duration::from_secs(5))
            .await?
            .with_context(|| format!("{name} is not registered on {node}"))
    }
}
