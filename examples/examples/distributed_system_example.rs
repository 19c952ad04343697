//! A node that registers in EPMD, lists the other nodes it finds, connects to
//! them, greets each once, and prints everything it receives.
//!
//! ```text
//! cargo run --bin epmd_server                                   # terminal 1
//! cargo run --example distributed_system_example -- node_a 5001 # terminal 2
//! cargo run --example distributed_system_example -- node_b 5002 # terminal 3
//! ```
//!
//! Options: `--epmd ADDR` (default 127.0.0.1:4369), `--cookie C`, `--duration SECS`
//! (stop after that long; default: run until Ctrl-C).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, NodeEvent};
use joerl_examples::{Greeting, NodeOptions, init_logging, until_stopped};

#[derive(Parser, Debug)]
#[command(about = "A joerl node that finds its peers through EPMD and greets them")]
struct Args {
    /// Node name (the node is NAME@127.0.0.1).
    name: String,
    /// Port to listen on.
    port: u16,
    #[command(flatten)]
    node_opts: NodeOptions,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
}

/// Prints what it receives.
struct Printer;

impl Actor for Printer {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        match msg.downcast::<Greeting>() {
            Ok(g) => println!(
                "received from {}: {} (sender {:?})",
                g.from_node,
                g.text,
                ctx.sender()
            ),
            Err(_) => println!("received a message of another type"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let builder = args.node_opts.builder(args.name.clone(), args.port)?;
    let node = builder.start().await.context("cannot start the node")?;
    let printer = node.spawn(Printer);
    node.register("printer", printer)?;
    println!(
        "node {} up on {} (creation {})",
        node.name(),
        node.local_addr(),
        node.creation()
    );
    let mut events = node.subscribe();
    let stop = until_stopped(args.duration.map(Duration::from_secs));
    tokio::pin!(stop);
    let mut greeted = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => greet_new_peers(&node, &args.node_opts.epmd, &mut greeted).await,
            ev = events.recv() => match ev {
                Some(NodeEvent::Up { node: peer, .. }) => println!("connected to {peer}"),
                Some(NodeEvent::Down { node: peer, reason }) => {
                    println!("lost {peer}: {reason}");
                    greeted.remove(&peer);
                }
                None => break,
            },
        }
    }
    println!("{} shutting down", node.name());
    node.shutdown().await;
    Ok(())
}

/// Lists EPMD's nodes; greets each joerl node not greeted yet.
async fn greet_new_peers(
    node: &DistributedSystem,
    epmd: &std::net::SocketAddr,
    greeted: &mut HashSet<String>,
) {
    let Ok(list) = joerl_epmd::EpmdClient::new(*epmd).list().await else {
        return;
    };
    for info in list {
        let Some(peer) = joerl_dist::joerl_node_name(&info) else {
            continue;
        };
        if peer == node.name() || greeted.contains(&peer) {
            continue;
        }
        println!("found {peer} at {}:{}", info.host, info.port);
        let hello = Greeting {
            from_node: node.name().to_string(),
            text: format!("hello from {}", node.name()),
        };
        if node.send(("printer", &peer), hello).await.is_ok() {
            greeted.insert(peer);
        }
    }
}
