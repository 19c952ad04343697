//! A cluster of nodes that find each other through gossip, one per terminal:
//!
//! ```text
//! cargo run --example cluster_example -- node1
//! cargo run --example cluster_example -- node2 localhost:7946
//! CLUSTER_PORT=7948 cargo run --example cluster_example -- node3 localhost:7946
//! ```
//!
//! Each prints `Node started: NAME at ADDR:PORT` (its gossip address, the one
//! others join through), then on every membership change the event, the
//! members with their status and the cluster's health. Each member greets
//! every member that comes up with a message to `{greeter, Node}`, whose dist
//! address it learned from gossip (each process has its own EPMD, so EPMD
//! could not have told it). Ctrl-C leaves the cluster gracefully; the others
//! print the member as `Left`.
//!
//! The gossip port comes from `--config FILE` (YAML or JSON), then
//! `CLUSTER_PORT`, then `--port`; with none of them it is 7946, or the next
//! free one if 7946 is taken (so the second command line above gets 7947).
//! `CLUSTER_NAME` and `CLUSTER_SEEDS` work too. `--run-for SECS` leaves and
//! exits after that long, for scripts and tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use joerl_dist::cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterEvent, DEFAULT_GOSSIP_PORT, Member,
};
use joerl_dist::{Actor, ActorContext, DownMessage, Message, NodeBuilder, remote_message};
use joerl_epmd::{EpmdServer, ServerConfig};
use joerl_examples::{init_logging, until_stopped};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "One member of a joerl cluster that finds its members through gossip")]
struct Args {
    /// The node's name (`node1` becomes `node1@127.0.0.1`).
    name: String,
    /// Members to join through, as `host:port` of their gossip sockets.
    seeds: Vec<String>,
    /// The gossip port (over `CLUSTER_PORT` and the file).
    #[arg(long)]
    port: Option<u16>,
    /// A YAML or JSON cluster configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The cookie (default: `JOERL_COOKIE`, else `cluster-example`).
    #[arg(long)]
    cookie: Option<String>,
    /// Use this EPMD instead of starting one inside the process.
    #[arg(long)]
    epmd: Option<SocketAddr>,
    /// Leave and exit after this many seconds.
    #[arg(long)]
    run_for: Option<u64>,
}

/// A greeting from one member to another's `greeter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    from: String,
}
remote_message!(Hello, "cluster_example::Hello");

/// Prints the greetings it receives.
struct Greeter;

impl Actor for Greeter {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(h) = msg.downcast::<Hello>() {
            println!("Greeting from {}", h.from);
        }
    }
}

/// Prints every membership change, greets members that come up and
/// monitors their greeter (a member that fails is `noconnection`).
struct Watcher {
    cluster: Cluster,
    /// Whose greeter each monitor watches.
    monitors: std::collections::HashMap<joerl_dist::MonitorRef, String>,
}

/// `name`, with its incarnation when it is not the first.
fn who(m: &Member) -> String {
    if m.incarnation == 0 {
        m.name.clone()
    } else {
        format!("{} (incarnation {})", m.name, m.incarnation)
    }
}

impl Actor for Watcher {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<DownMessage>() {
            Ok(down) => {
                if let Some(node) = self.monitors.remove(&down.monitor) {
                    println!("Monitor: greeter on {node} down: {}", down.reason);
                }
                return;
            }
            Err(msg) => msg,
        };
        let Ok(event) = msg.downcast::<ClusterEvent>() else {
            return;
        };
        match *event {
            // `MemberUp` follows at once: the members are printed then.
            ClusterEvent::MemberJoined(m) => {
                println!("Event: MemberJoined {}", m.name);
                return;
            }
            ClusterEvent::MemberUp(m) => {
                println!("Event: MemberUp {}", who(&m));
                match ctx.monitor(("greeter", m.name.as_str())) {
                    Ok(r) => {
                        self.monitors.insert(r, m.name.clone());
                    }
                    Err(e) => println!("cannot monitor {}: {e}", m.name),
                }
                let hello = Hello {
                    from: self.cluster.self_member().name,
                };
                if let Err(e) = ctx.send(("greeter", m.name.as_str()), hello).await {
                    println!("cannot greet {}: {e}", m.name);
                }
            }
            ClusterEvent::MemberSuspected(m) => println!("Event: MemberSuspected {}", m.name),
            ClusterEvent::MemberRecovered(m) => println!("Event: MemberRecovered {}", m.name),
            ClusterEvent::MemberFailed(m) => println!("Event: MemberFailed {}", who(&m)),
            ClusterEvent::MemberLeft(m) => println!("Event: MemberLeft {}", m.name),
            ClusterEvent::HealthChanged(h) => println!(
                "Event: HealthChanged {}",
                if h.healthy { "healthy" } else { "unhealthy" }
            ),
            ClusterEvent::LeaderChanged { leader, epoch } => {
                println!("Event: LeaderChanged {leader:?} (epoch {epoch})")
            }
            ClusterEvent::MetadataStore { reachable, error } => {
                println!("Event: MetadataStore reachable={reachable} {error:?}")
            }
        }
        print_members(&self.cluster);
    }
}

fn line(m: &Member) -> String {
    format!("  - {} at {} (Status: {})", m.name, m.gossip_addr, m.state)
}

fn print_members(cluster: &Cluster) {
    let me = cluster.self_member();
    let others = cluster.members();
    let mut out = format!("Cluster members ({}):\n{}\n", others.len() + 1, line(&me));
    for m in &others {
        out.push_str(&line(m));
        out.push('\n');
    }
    let h = cluster.health();
    out.push_str(&format!(
        "Health: {} ({} of {} active)",
        if h.healthy { "healthy" } else { "unhealthy" },
        h.active,
        h.total
    ));
    println!("{out}");
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let cookie = args
        .cookie
        .clone()
        .or_else(|| std::env::var("JOERL_COOKIE").ok())
        .unwrap_or_else(|| "cluster-example".into());
    // This process's own EPMD: members find each other through gossip.
    let own_epmd = match args.epmd {
        Some(_) => None,
        None => Some(EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse()?)).await?),
    };
    let epmd = args
        .epmd
        .or(own_epmd.as_ref().map(|e| e.local_addr()))
        .expect("one of the two");
    let node = NodeBuilder::new(&args.name, "127.0.0.1:0".parse()?, epmd)
        .cookie(cookie)
        .start()
        .await
        .context("starting the node")?;
    node.register("greeter", node.spawn(Greeter))?;

    let port_given =
        args.port.is_some() || args.config.is_some() || std::env::var_os("CLUSTER_PORT").is_some();
    let mut port = None;
    let (cluster, seeds) = loop {
        let mut b = ClusterConfig::builder().env();
        if let Some(f) = &args.config {
            b = b.file(f);
        }
        if !args.seeds.is_empty() {
            b = b.seeds(args.seeds.clone());
        }
        if let Some(p) = args.port.or(port) {
            b = b.port(p);
        }
        let mut config = b.bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).build()?;
        // Joined below, to print how it went.
        let seeds = std::mem::take(&mut config.seeds);
        let tried = config.port;
        match node.enable_clustering(config).await {
            Ok(c) => break (c, seeds),
            // The default port is taken (another member on this host):
            // take the next one.
            Err(ClusterError::Bind { .. })
                if !port_given && tried < DEFAULT_GOSSIP_PORT + 20 && tried != 0 =>
            {
                port = Some(tried + 1);
            }
            Err(e) => return Err(e).context("enabling clustering"),
        }
    };
    println!("Node started: {} at {}", node.name(), cluster.gossip_addr());
    print_members(&cluster);
    let watcher = node.spawn(Watcher {
        cluster: cluster.clone(),
        monitors: Default::default(),
    });
    cluster.monitor_members(&node, watcher);
    if !seeds.is_empty() {
        match cluster.join(&seeds).await {
            Ok(n) => println!("Joined through {n} of {} seed(s)", seeds.len()),
            // Still announced to in the background: the node joins when a
            // seed comes up.
            Err(e) => println!("Join failed: {e}"),
        }
    }

    until_stopped(args.run_for.map(Duration::from_secs)).await;
    println!("Shutting down...");
    cluster.leave().await;
    let s = cluster.gossip_stats();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "Gossip: sent={} accepted={} refused={} (truncated={} oversized={} not_gossip={} wrong_cluster={} bad_tag={} malformed={})",
        n(&s.sent),
        n(&s.accepted),
        s.refused_total(),
        n(&s.truncated),
        n(&s.oversized),
        n(&s.not_gossip),
        n(&s.wrong_cluster),
        n(&s.bad_tag),
        n(&s.malformed)
    );
    node.shutdown().await;
    drop(own_epmd);
    println!("Node stopped");
    Ok(())
}
