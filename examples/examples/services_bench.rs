//! Cluster services, measured: N node processes on 127.0.0.1 (this one and
//! N-1 children, each with its own EPMD, joined through gossip), every
//! phase by itself, one line at the end:
//!
//! ```text
//! cargo run --release -p joerl-examples --example services_bench -- [--nodes 5]
//! services nodes=5 global_register_us_p50=.. global_visible_ms_p99=.. pg_join_visible_ms_p99=.. service_call_us_p50=.. direct_call_us_p50=.. call_ratio=.. failover_ms=.. spawn_on_us_p50=..
//! ```
//!
//! - `global_register_us_p50`: `Global::register` on this node, which takes
//!   the name's lock on every other node and commits.
//! - `global_visible_ms_p99` / `pg_join_visible_ms_p99`: from the register
//!   (the join) here until the last other node resolves it (each polls
//!   every millisecond and stamps the wall clock, which the processes of one
//!   machine share).
//! - `service_call_us_p50` / `direct_call_us_p50`: an Echo call through
//!   `Services::call` (round robin over one instance on another node) and a
//!   gen_server call to the same instance by Pid, interleaved in one run.
//! - `failover_ms`: three instances on three other nodes; idempotent calls
//!   flow from four tasks here; one node is killed (SIGKILL); the time until
//!   its instance is no longer routable. The calls that failed are printed
//!   on the `services_failover` line (the goal is none).
//! - `spawn_on_us_p50`: `spawn_on` of a worker on another node, answered
//!   once it started.
//!
//! Erlang's `spawn(Node, Fun)` round trip on the same machine, for
//! comparison: `examples/erlang/spawn_bench.sh` (prints
//! `erlang spawn_on_us_p50=..`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_dist::cluster::service::{CallOptions, Strategy};
use joerl_dist::cluster::spawn;
use joerl_dist::gen_server::ServerRef;
use joerl_examples::service_node::{
    self, ChildNode, Echo, NodeArgs, NodeSetup, ServiceActor, Worker, WorkerArgs, unix_ns,
};

#[derive(Parser, Debug)]
#[command(about = "Measures global names, pg, service calls, failover and remote spawn")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Node processes (this one included).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Samples for the register, visibility and spawn phases.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Calls for each of the two call phases.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Membership probe interval for every node, ms.
    #[arg(long, default_value_t = 500)]
    probe_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One node (started by the benchmark itself).
    #[command(hide = true)]
    Node(NodeArgs),
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

/// The wall-clock stamps in `seen_KIND NAME NS` lines from every child.
async fn seen(children: &mut [ChildNode], kind: &str, name: &str) -> Result<u128> {
    let mut last = 0;
    for c in children.iter_mut() {
        let line = c
            .expect(&format!("seen_{kind} {name} "), Duration::from_secs(60))
            .await?;
        let ns: u128 = line.rsplit(' ').next().unwrap_or("0").parse()?;
        last = last.max(ns);
    }
    Ok(last)
}

async fn bench(args: Args) -> Result<()> {
    ensure!(args.nodes >= 5, "the failover phase needs at least 5 nodes");
    let probe = args.probe_ms.to_string();
    let me = service_node::start(&NodeSetup {
        name: "sb1".into(),
        seed: None,
        gossip_port: 0,
        resolver: "exit".into(),
        probe_ms: Some(args.probe_ms),
    })
    .await?;
    let seed = me.cluster.gossip_addr().to_string();
    let mut children = Vec::new();
    for i in 2..=args.nodes {
        children
            .push(ChildNode::start(&format!("sb{i}"), Some(&seed), &["--probe-ms", &probe]).await?);
    }
    // Everyone is a member, and every node's servers know each other: a
    // probe name and a probe group are seen everywhere.
    let deadline = Instant::now() + Duration::from_secs(60);
    while me.cluster.members().len() < args.nodes - 1 {
        ensure!(Instant::now() < deadline, "the members did not all join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = me.node.spawn(Idle);
    for c in children.iter_mut() {
        c.tell("await_global probe").await?;
        c.tell("await_pg probe").await?;
    }
    me.global.register("probe", idle).await?;
    me.pg.join("probe", &[idle]).await?;
    seen(&mut children, "global", "probe").await?;
    seen(&mut children, "pg", "probe").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Global names: register latency here, visibility everywhere.
    let mut register_us = Vec::new();
    let mut visible_ms = Vec::new();
    for i in 0..args.samples {
        let name = format!("g{i}");
        for c in children.iter_mut() {
            c.tell(&format!("await_global {name}")).await?;
        }
        // The children's pollers are running before the register starts.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pid = me.node.spawn(Idle);
        let t0 = unix_ns();
        let started = Instant::now();
        me.global.register(&name, pid).await?;
        register_us.push(started.elapsed().as_secs_f64() * 1e6);
        let last = seen(&mut children, "global", &name).await?;
        visible_ms.push(last.saturating_sub(t0) as f64 / 1e6);
    }
    let global_register_us_p50 = pct(&mut register_us, 0.5);
    let global_visible_ms_p99 = pct(&mut visible_ms, 0.99);

    // pg: join here, visible everywhere.
    let mut pg_ms = Vec::new();
    for i in 0..args.samples {
        let group = format!("p{i}");
        for c in children.iter_mut() {
            c.tell(&format!("await_pg {group}")).await?;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let pid = me.node.spawn(Idle);
        let t0 = unix_ns();
        me.pg.join(&group, &[pid]).await?;
        let last = seen(&mut children, "pg", &group).await?;
        pg_ms.push(last.saturating_sub(t0) as f64 / 1e6);
    }
    let pg_join_visible_ms_p99 = pct(&mut pg_ms, 0.99);

    // A service call and a direct call to the same instance, interleaved.
    children[0].ask("actor one echo", "actor one ").await?;
    children[0]
        .ask("service_register one one", "service_register one")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let instance = loop {
        if let Some(p) = me.services.routable("one").first() {
            break *p;
        }
        ensure!(Instant::now() < deadline, "the instance did not show up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let direct: ServerRef<ServiceActor> = ServerRef::new(instance);
    let opts = CallOptions::timeout(Duration::from_secs(5)).strategy(Strategy::RoundRobin);
    let (mut via_service, mut via_pid) = (Vec::new(), Vec::new());
    for i in 0..args.calls + 500 {
        let t = Instant::now();
        me.services
            .call::<ServiceActor, _>("one", Echo(String::new()), opts)
            .await?;
        let s = t.elapsed();
        let t = Instant::now();
        me.node.call(&direct, Echo(String::new())).await?;
        let d = t.elapsed();
        if i >= 500 {
            // The first calls warm the connection up.
            via_service.push(s.as_secs_f64() * 1e6);
            via_pid.push(d.as_secs_f64() * 1e6);
        }
    }
    let service_call_us_p50 = pct(&mut via_service, 0.5);
    let direct_call_us_p50 = pct(&mut via_pid, 0.5);
    let call_ratio = service_call_us_p50 / direct_call_us_p50;

    // Remote spawn round trips.
    let target = children[1].name.clone();
    let mut spawn_us = Vec::new();
    let mut spawned = Vec::new();
    for i in 0..args.samples {
        let t = Instant::now();
        let pid = spawn::spawn_on::<Worker>(&me.node, &target, WorkerArgs::Stay(i as u32)).await?;
        spawn_us.push(t.elapsed().as_secs_f64() * 1e6);
        spawned.push(pid);
    }
    for p in spawned {
        let _ = me.node.exit(p, joerl_dist::ExitReason::Kill);
    }
    let spawn_on_us_p50 = pct(&mut spawn_us, 0.5);

    // Failover: three instances on three other nodes, idempotent calls
    // flowing, one node killed.
    let mut fo = Vec::new();
    for c in children.iter_mut().skip(1).take(3) {
        let a = c.ask("actor fo echo", "actor fo ").await?;
        fo.push(a.rsplit(' ').next().unwrap_or("").to_string());
        c.ask("service_register fo fo", "service_register fo")
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while me.services.routable("fo").len() < 3 {
        ensure!(
            Instant::now() < deadline,
            "the failover instances did not show up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flows = Vec::new();
    for _ in 0..4 {
        let services = me.services.clone();
        let stop = stop.clone();
        flows.push(tokio::spawn(async move {
            let opts = CallOptions::timeout(Duration::from_secs(10))
                .strategy(Strategy::RoundRobin)
                .idempotent();
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut by: HashMap<String, u64> = HashMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match services
                    .call::<ServiceActor, _>("fo", Echo(String::new()), opts)
                    .await
                {
                    Ok(r) => {
                        ok += 1;
                        *by.entry(r.pid.to_string()).or_default() += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("failover call failed: {e}");
                    }
                }
            }
            (ok, failed, by)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim_pid = me
        .services
        .routable("fo")
        .into_iter()
        .find(|p| p.to_string() == fo[0])
        .context("the victim's instance")?;
    let mut victim = children.remove(1);
    let killed = Instant::now();
    victim.kill().await?;
    let failover = loop {
        if !me.services.routable("fo").contains(&victim_pid) {
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("the killed node's instance stayed routable");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let failover_ms = failover.as_secs_f64() * 1e3;
    // Calls in flight to the killed node end (retried) once it is detected failed.
    let detect_deadline = Instant::now() + Duration::from_secs(60);
    while me
        .cluster
        .member(&victim.name)
        .is_ok_and(|m| m.state != joerl_dist::cluster::MemberState::Failed)
    {
        ensure!(
            Instant::now() < detect_deadline,
            "the killed node was not detected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let detect_ms = killed.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for f in flows {
        let (o, x, _) = f.await?;
        ok += o;
        failed += x;
    }

    println!(
        "services_failover calls={ok} failed_calls={failed} detect_ms={detect_ms:.0} \
         failover_ms={failover_ms:.0}"
    );
    println!(
        "services nodes={} global_register_us_p50={global_register_us_p50:.0} \
         global_visible_ms_p99={global_visible_ms_p99:.1} \
         pg_join_visible_ms_p99={pg_join_visible_ms_p99:.1} \
         service_call_us_p50={service_call_us_p50:.1} direct_call_us_p50={direct_call_us_p50:.1} \
         call_ratio={call_ratio:.2} failover_ms={failover_ms:.0} spawn_on_us_p50={spawn_on_us_p50:.0}",
        args.nodes
    );
    for c in children {
        c.quit().await?;
    }
    me.node.shutdown().await;
    Ok(())
}

struct Idle;
impl joerl_dist::Actor for Idle {
    async fn handle_message(
        &mut self,
        _msg: joerl_dist::Message,
        _ctx: &mut joerl_dist::ActorContext,
    ) {
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging_at("error");
    let args = Args::parse();
    match args.role {
        Some(Role::Node(n)) => service_node::run(n.setup()).await,
        None => bench(args).await,
    }
}
