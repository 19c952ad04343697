//! Several nodes in one process, each with its own listener, all registered in an
//! EPMD this program starts on a free port: request/reply, echo and compute
//! across nodes, with the same calls as locally.
//!
//! ```text
//! cargo run --example remote_actors
//! ```

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use joerl_dist::gen_server::{ServerRef, spawn_server_with};
use joerl_dist::{DistributedSystem, NodeBuilder, SpawnOptions};
use joerl_epmd::{EpmdServer, ServerConfig};
use joerl_examples::{Reply, Request, Service, init_logging, until_stopped};

#[derive(Parser)]
#[command(about = "Request/reply, echo and compute across joerl nodes in one process")]
struct Args {}

async fn start(name: &str, epmd: std::net::SocketAddr) -> Result<DistributedSystem> {
    NodeBuilder::new(name, "127.0.0.1:0".parse()?, epmd)
        .cookie("remote-actors-demo")
        .start()
        .await
        .with_context(|| format!("cannot start {name}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let Args {} = Args::parse();
    tokio::select! {
        r = demo() => r,
        _ = until_stopped(None) => {
            println!("interrupted");
            Ok(())
        }
    }
}

async fn demo() -> Result<()> {
    let epmd = EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    println!("EPMD on {}", epmd.local_addr());
    let client = start("client", epmd.local_addr()).await?;
    let echo_node = start("echo_node", epmd.local_addr()).await?;
    let compute_node = start("compute_node", epmd.local_addr()).await?;
    for n in [&echo_node, &compute_node] {
        spawn_server_with(
            n,
            Service {
                node: n.name().to_string(),
            },
            SpawnOptions::new().name("service"),
        )?;
    }
    let t = Duration::from_secs(5);

    // Find the servers by name, then call them by Pid like local gen_servers.
    let echo = whereis(&client, echo_node.name()).await?;
    let compute = whereis(&client, compute_node.name()).await?;
    println!(
        "service on {} is {echo}, on {} is {compute}",
        echo_node.name(),
        compute_node.name()
    );

    let (echo, compute) = (ServerRef::<Service>::new(echo), ServerRef::new(compute));
    let r = client
        .call_timeout(&echo, Request::Echo("hello across nodes".into()), t)
        .await?;
    // Or by {name, node}, like gen_server:call({service, Node}, Request):
    let by_name = ServerRef::<Service>::new(("service", compute_node.name()));
    let who = client.call_timeout(&by_name, Request::WhoAreYou, t).await?;
    println!(
        "{{service, {}}} says it runs on {who:?}",
        compute_node.name()
    );
    println!("echo reply: {r:?}");
    ensure!(r == Reply::Echo("hello across nodes".into()));

    let r = client
        .call_timeout(&compute, Request::SumSquares(1000), t)
        .await?;
    println!("compute reply: sum of squares 1..=1000 = {r:?}");
    ensure!(r == Reply::Number(333_833_500));

    // Many requests in flight at once, to both nodes.
    let mut calls = Vec::new();
    for i in 1..=20u64 {
        let c = client.clone();
        let target = if i % 2 == 0 { &echo } else { &compute }.clone();
        calls.push(tokio::spawn(async move {
            c.call_timeout(&target, Request::SumSquares(i), t).await
        }));
    }
    let mut total = 0;
    for call in calls {
        if let Reply::Number(n) = call.await?? {
            total += n;
        }
    }
    println!("20 concurrent requests answered, total {total}");
    ensure!(
        total
            == (1..=20u64)
                .map(|i| (1..=i).map(|k| k * k).sum::<u64>())
                .sum::<u64>()
    );

    let stats = client.stats();
    println!(
        "summary: client sent {} and received {} messages over {} connections",
        stats.total.msgs_out,
        stats.total.msgs_in,
        stats.peers.iter().filter(|p| p.connected).count()
    );
    for n in [&client, &echo_node, &compute_node] {
        n.shutdown().await;
    }
    epmd.shutdown().await;
    Ok(())
}

/// The Pid of `service` on `node`, asked of that node's net kernel.
async fn whereis(client: &DistributedSystem, node: &str) -> Result<joerl_dist::Pid> {
    client
        .whereis_remote("service", node, Duration::from_secs(5))
        .await?
        .with_context(|| format!("no service registered on {node}"))
}
