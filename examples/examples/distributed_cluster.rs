//! Nodes that discover each other through EPMD and exchange periodic messages;
//! each prints its view of the cluster as nodes come and go.
//!
//! ```text
//! cargo run --bin epmd_server                            # terminal 1
//! cargo run --example distributed_cluster -- node_a 5001 # terminal 2
//! cargo run --example distributed_cluster -- node_b 5002 # terminal 3
//! cargo run --example distributed_cluster -- node_c 5003 # terminal 4
//! ```
//!
//! Options: `--epmd ADDR`, `--cookie C`, `--interval-ms N` (between heartbeats),
//! `--duration SECS`.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use joerl_dist::{Actor, ActorContext, Message, NodeEvent};
use joerl_examples::{Greeting, NodeOptions, init_logging, until_stopped};

#[derive(Parser, Debug)]
#[command(about = "A joerl cluster member with EPMD discovery")]
struct Args {
    /// Node name (the node is NAME@127.0.0.1).
    name: String,
    /// Port to listen on.
    port: u16,
    #[command(flatten)]
    node_opts: NodeOptions,
    /// Milliseconds between heartbeats to every member.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
}

/// Counts and prints heartbeats from other members.
struct Member;

impl Actor for Member {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(g) = msg.downcast::<Greeting>() {
            println!("heartbeat from {}: {}", g.from_node, g.text);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let builder = args
        .node_opts
        .builder(args.name.clone(), args.port)?
        .auto_discovery(true)
        .discovery_interval(Duration::from_millis(500));
    let node = builder.start().await.context("cannot start the node")?;
    let member = node.spawn(Member);
    node.register("member", member)?;
    println!("node {} joined the cluster", node.name());
    let mut events = node.subscribe();
    let stop = until_stopped(args.duration.map(Duration::from_secs));
    tokio::pin!(stop);
    let mut beat = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = beat.tick() => {
                n += 1;
                for peer in node.nodes() {
                    let g = Greeting { from_node: node.name().to_string(), text: format!("beat {n}") };
                    let _ = node.send(("member", &peer), g).await;
                }
            }
            ev = events.recv() => {
                match ev {
                    Some(NodeEvent::Up { node: peer, .. }) => println!("node up: {peer}"),
                    Some(NodeEvent::Down { node: peer, reason }) => println!("node down: {peer} ({reason})"),
                    None => break,
                }
                let mut view = node.nodes();
                view.push(node.name().to_string());
                view.sort();
                println!("cluster view: [{}]", view.join(", "));
            }
        }
    }
    println!("{} leaving the cluster", node.name());
    node.shutdown().await;
    Ok(())
}
