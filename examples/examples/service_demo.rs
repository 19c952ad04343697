//! Cluster services on three nodes: an Echo and a Counter service with an
//! instance on every node, remote calls balanced across them, a global
//! name, service events as they happen, and a health summary.
//!
//! ```text
//! cargo run -p joerl-examples --example service_demo
//! ```
//!
//! This process is the first node; it starts the two others as child
//! processes (`service_demo node --name ... --seed ...`), which join it
//! through gossip on 127.0.0.1, each with its own EPMD. It exits with a
//! summary and status 0 when every step worked. `service_demo node --name N
//! [--seed HOST:PORT]` runs one node that takes commands on stdin (see
//! `joerl_examples::service_node`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_dist::cluster::service::{CallOptions, ServiceEvent, Strategy};
use joerl_dist::gen_server::ServerRef;
use joerl_dist::{Actor, ActorContext, Dest, Message};
use joerl_examples::service_node::{
    self, Add, Behaviour, ChildNode, Echo, NodeArgs, NodeSetup, ServiceActor,
};

#[derive(Parser, Debug)]
#[command(about = "Echo and Counter services on three nodes")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One node taking commands on stdin (the demo starts two).
    Node(NodeArgs),
}

/// Prints the service events this node sees.
struct Events;
impl Actor for Events {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(e) = msg.downcast::<ServiceEvent>() {
            match *e {
                ServiceEvent::Registered { service, pids } => {
                    for p in pids {
                        println!("Event: {service} instance {p} registered");
                    }
                }
                ServiceEvent::Deregistered { service, pids } => {
                    for p in pids {
                        println!("Event: {service} instance {p} deregistered");
                    }
                }
            }
        }
    }
}

async fn demo() -> Result<()> {
    let me = service_node::start(&NodeSetup {
        name: "svc1".into(),
        seed: None,
        gossip_port: 0,
        resolver: "exit".into(),
        probe_ms: None,
    })
    .await?;
    let seed = me.cluster.gossip_addr().to_string();
    println!("Node started: {} (gossip {seed})", me.node.name());
    let events = me.node.spawn(Events);
    me.services.watch("echo", events).await?;
    me.services.watch("counter", events).await?;

    // This node's instances.
    for (name, behaviour) in [("echo", Behaviour::Echo), ("counter", Behaviour::Echo)] {
        let server =
            joerl_dist::gen_server::spawn_server(&me.node, ServiceActor::new(name, behaviour));
        let pid = server.pid().expect("by Pid");
        let md = BTreeMap::from([("zone".to_string(), "z1".to_string())]);
        me.services.register(name, pid, md).await?;
    }

    // Two more nodes, each with an instance of both services.
    let mut children = Vec::new();
    for (i, zone) in [(2, "z2"), (3, "z3")] {
        let mut c = ChildNode::start(&format!("svc{i}"), Some(&seed), &[]).await?;
        println!("Node started: {} (gossip {})", c.name, c.gossip);
        for s in ["echo", "counter"] {
            c.ask(&format!("actor {s} echo"), "actor ").await?;
            let ok = c
                .ask(
                    &format!("service_register {s} {s} zone={zone}"),
                    "service_register",
                )
                .await?;
            ensure!(ok.ends_with("ok"), "{}: {ok}", c.name);
        }
        children.push(c);
    }

    // Everyone sees three instances of each.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while me.services.resolve("echo").await.len() < 3
        || me.services.resolve("counter").await.len() < 3
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the instances did not all show up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("Service echo:");
    for i in me.services.resolve("echo").await {
        println!(
            "  - {} on {} (zone {}, health {:?})",
            i.pid,
            i.node,
            i.metadata.get("zone").map_or("?", |z| z.as_str()),
            i.health
                .map(|h| format!("{h:?}"))
                .unwrap_or("unknown".into())
        );
    }

    // Round robin visits every instance.
    let mut answered = BTreeSet::new();
    for n in 0..6 {
        let r = me
            .services
            .call::<ServiceActor, _>(
                "echo",
                Echo(format!("hello {n}")),
                CallOptions::timeout(Duration::from_secs(5)).strategy(Strategy::RoundRobin),
            )
            .await?;
        println!("Echo reply from {}: {}", r.node, r.text);
        answered.insert(r.node);
    }
    ensure!(answered.len() == 3, "round robin reached {answered:?}");

    // The counter: prefer-local stays here; least-outstanding spreads.
    let local = CallOptions::default().strategy(Strategy::PreferLocal);
    let mut total = 0;
    for _ in 0..5 {
        total = me
            .services
            .call::<ServiceActor, _>("counter", Add(1), local)
            .await?;
    }
    println!("Counter (prefer local) on {}: {total}", me.node.name());
    ensure!(total == 5, "the local counter is at {total}, not 5");
    let spread = CallOptions::default()
        .strategy(Strategy::LeastOutstanding)
        .idempotent();
    let mut totals = Vec::new();
    for _ in 0..3 {
        totals.push(
            me.services
                .call::<ServiceActor, _>("counter", Add(10), spread)
                .await?,
        );
    }
    println!("Counter (least outstanding) totals: {totals:?}");

    // A global name: one process in the whole cluster, called from another node.
    let coordinator = joerl_dist::gen_server::spawn_server(
        &me.node,
        ServiceActor::new("coordinator", Behaviour::Echo),
    );
    let cpid = coordinator.pid().expect("by Pid");
    me.global.register("coordinator", cpid).await?;
    // Registered on every node this one knew; seen on the others once the
    // news arrives (eventually consistent, as Erlang's global is).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while children[0]
        .ask("global_whereis coordinator", "global_whereis")
        .await?
        .ends_with("none")
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the global name did not reach {}",
            children[0].name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = children[0]
        .ask("global_call coordinator ping", "global_call")
        .await?;
    println!("Global call from {}: {line}", children[0].name);
    ensure!(line.contains(me.node.name()), "{line}");
    children[1].ask("actor other echo", "actor ").await?;
    let refused = children[1]
        .ask("global_register coordinator other", "global_register")
        .await?;
    println!("Second registration: {refused}");
    ensure!(refused.contains("taken"), "{refused}");
    let r = me
        .node
        .call(
            &ServerRef::<ServiceActor>::new(Dest::global("coordinator")),
            Echo("by name".into()),
        )
        .await?;
    ensure!(r.pid == cpid, "the global name went to {}", r.pid);

    // One node leaves: its instances are deregistered everywhere.
    let gone = children.pop().context("a child")?;
    let gone_name = gone.name.clone();
    gone.quit().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while me.services.resolve("echo").await.len() != 2 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{gone_name}'s instance did not go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the events print before the summary.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let health = me.cluster.health();
    println!(
        "Health: {} of {} members active, {} suspected, {}",
        health.active,
        health.total,
        health.suspected,
        if health.healthy {
            "healthy"
        } else {
            "no majority"
        }
    );
    let mut members: Vec<String> = me
        .cluster
        .members()
        .iter()
        .map(|m| format!("{} ({:?})", m.name, m.state))
        .collect();
    members.sort();
    println!("Members: {}", members.join(", "));
    for c in children {
        c.quit().await?;
    }
    println!(
        "Summary: 3 nodes, echo and counter services, 6 balanced calls reached 3 nodes, \
         counter at {total}, global name held by {}, {gone_name} left and its instances went",
        me.node.name()
    );
    me.node.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging();
    let args = Args::parse();
    match args.role {
        Some(Role::Node(n)) => service_node::run(n.setup()).await,
        None => match tokio::time::timeout(Duration::from_secs(300), demo()).await {
            Ok(r) => r,
            Err(_) => bail!("the demo did not finish within 5 minutes"),
        },
    }
}
