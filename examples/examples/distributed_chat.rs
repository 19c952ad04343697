//! A chat between terminals. Every line typed on one node appears on all the
//! others; nodes joining and leaving are announced.
//!
//! ```text
//! cargo run --bin epmd_server                                                  # terminal 1
//! cargo run --example distributed_chat -- --node alice --port 8001             # terminal 2
//! cargo run --example distributed_chat -- --node bob --port 8002 --connect 127.0.0.1:8001   # terminal 3
//! ```
//!
//! Nodes find each other through EPMD (`--epmd`, default 127.0.0.1:4369);
//! `--connect ADDR` joins the node listening at ADDR right away. Type `/quit`
//! (or press Ctrl-C, or close stdin) to leave.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, NodeEvent};
use joerl_examples::{ChatLine, NodeOptions, init_logging, until_stopped};
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(about = "Chat between joerl nodes")]
struct Args {
    /// Your name (and node name).
    #[arg(long)]
    node: String,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Join the node listening at this address.
    #[arg(long)]
    connect: Option<std::net::SocketAddr>,
    #[command(flatten)]
    node_opts: NodeOptions,
}

/// Prints chat lines from other nodes.
struct Room;

impl Actor for Room {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(line) = msg.downcast::<ChatLine>() {
            println!("<{}> {}", line.from, line.text);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let builder = args
        .node_opts
        .builder(args.node.clone(), args.port)?
        .auto_discovery(true)
        .discovery_interval(Duration::from_millis(500));
    let node = builder.start().await.context("cannot start the node")?;
    let room = node.spawn(Room);
    node.register("chat", room)?;
    if let Some(addr) = args.connect {
        join(&node, args.node_opts.epmd, addr).await?;
    }
    println!(
        "*** {} is in the chat; type a line and press enter, /quit to leave",
        args.node
    );
    let mut events = node.subscribe();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let stop = until_stopped(None);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let text = line.trim().to_string();
                if text == "/quit" {
                    break;
                }
                if text.is_empty() {
                    continue;
                }
                for peer in node.nodes() {
                    let msg = ChatLine { from: args.node.clone(), text: text.clone() };
                    if let Err(e) = node.send(("chat", &peer), msg).await {
                        println!("*** could not reach {peer}: {e}");
                    }
                }
            }
            ev = events.recv() => match ev {
                Some(NodeEvent::Up { node: peer, .. }) => println!("*** {} joined", short(&peer)),
                Some(NodeEvent::Down { node: peer, .. }) => println!("*** {} left", short(&peer)),
                None => break,
            },
        }
    }
    println!("*** {} leaves", args.node);
    node.shutdown().await;
    Ok(())
}

fn short(node: &str) -> &str {
    node.split('@').next().unwrap_or(node)
}

/// Connects to the node listening at `addr`, found through EPMD.
async fn join(
    node: &DistributedSystem,
    epmd: std::net::SocketAddr,
    addr: std::net::SocketAddr,
) -> Result<()> {
    let list = joerl_epmd::EpmdClient::new(epmd)
        .list()
        .await
        .context("cannot list EPMD's nodes")?;
    let peer = list
        .iter()
        .find(|n| n.port == addr.port())
        .and_then(joerl_dist::joerl_node_name)
        .with_context(|| format!("no joerl node registered in EPMD listens on {addr}"))?;
    node.connect(&peer)
        .await
        .with_context(|| format!("cannot join {peer}"))?;
    Ok(())
}
