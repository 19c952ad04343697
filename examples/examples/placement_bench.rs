//! Placement, measured: N node processes on 127.0.0.1 (each with its own
//! EPMD, joined through gossip; this process only drives them), every
//! phase by itself, one line at the end:
//!
//! ```text
//! cargo run --release -p joerl-examples --example placement_bench -- --nodes 3
//! placement nodes=3 actors=1000 activate_us_p50=.. routed_msgs_per_s=.. direct_msgs_per_s=.. routed_ratio=.. rehome_ms=.. duplicates=.. lost=.. moved_on_join=..
//! ```
//!
//! - `activate_us_p50`: a call to a counter no node runs yet, from the
//!   first node, one after another over `actors` fresh identities: the
//!   owner's activation, its claim from every other member, the call.
//! - `routed_msgs_per_s` / `direct_msgs_per_s`: `--msgs` messages from the
//!   first node round robin to the `actors` registered counters, sent by
//!   identity (routed by placement on the sending node from its location
//!   cache: no lookup, no allocation) and by Pid, until every counter
//!   handled them; the two alternate, twice each, the best of each counts.
//!   `routed_ratio` is routed over direct (goal ≥ 0.9). Each round also
//!   sends by `{name, node}` (`named`, the route taken by hand) and stderr
//!   shows each round's sending time and the cost of computing a route
//!   (`routecost`), to tell routing from the named send.
//! - `moved_on_join`: the fraction of 10,000 identities whose owner
//!   changes when one more node joins (≈ 1/(N+1)).
//! - `rehome_ms`: SIGKILL of the node that joined, owning about 1/(N+1)
//!   of the registered counters, until every counter answered a call from its new
//!   owner (calls in rounds every 100 ms, 1 s timeout each).
//! - `duplicates` and `lost` come from a churn run with delivery
//!   guarantees, not built yet: printed as `unmeasured`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_examples::placement_node::{self, PlacementNodeArgs};
use joerl_examples::service_node::ChildNode;

#[derive(Parser, Debug)]
#[command(
    about = "Measures placement: activation, routed vs direct sends, moves on join, re-homing"
)]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Node processes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Counters.
    #[arg(long, default_value_t = 1000)]
    actors: usize,
    /// Messages per throughput round.
    #[arg(long, default_value_t = 200_000)]
    msgs: usize,
    /// Identities for `moved_on_join`.
    #[arg(long, default_value_t = 10_000)]
    join_ids: usize,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One node (started by the benchmark itself).
    #[command(hide = true)]
    Node(PlacementNodeArgs),
}

fn word<'a>(line: &'a str, key: &str) -> Result<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .with_context(|| format!("no {key}= in {line:?}"))
}

async fn hits(nodes: &mut [ChildNode]) -> Result<u64> {
    placement_node::sum_of(nodes, "hits").await
}

async fn local(nodes: &mut [ChildNode]) -> Result<usize> {
    Ok(placement_node::sum_of(nodes, "local").await? as usize)
}

/// One throughput round: messages per second until all were handled.
async fn round(nodes: &mut [ChildNode], mode: &str, actors: usize, msgs: usize) -> Result<f64> {
    let before = hits(nodes).await?;
    let t = Instant::now();
    let line = nodes[0]
        .ask(&format!("blast {mode} r {actors} {msgs}"), "blast ")
        .await?;
    ensure!(line.starts_with("blast sent="), "{line}");
    eprintln!("phase throughput: {mode} {line}");
    let want = before + msgs as u64;
    loop {
        let now = hits(nodes).await?;
        if now >= want {
            break;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "{mode}: {} of {msgs} handled after 120 s",
            now - before
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(msgs as f64 / t.elapsed().as_secs_f64())
}

async fn wait_members(nodes: &mut [ChildNode], names: &[String]) -> Result<()> {
    let want = format!("members {}", names.join(","));
    let start = Instant::now();
    for n in nodes.iter_mut() {
        while n.ask("members", "members ").await? != want {
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "{} does not place on {want}",
                n.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging();
    let args = Args::parse();
    if let Some(Role::Node(a)) = args.role {
        return placement_node::run(a).await;
    }
    ensure!(args.nodes >= 2, "--nodes must be at least 2");
    placement_node::prepare_children("placement-bench");
    let (n, actors) = (args.nodes, args.actors);
    let mut nodes: Vec<ChildNode> = Vec::new();
    nodes.push(ChildNode::start("pb_1", None, &[]).await?);
    let seed = nodes[0].gossip.clone();
    for i in 2..=n {
        nodes.push(ChildNode::start(&format!("pb_{i}"), Some(&seed), &[]).await?);
    }
    let mut names: Vec<String> = nodes.iter().map(|c| c.name.clone()).collect();
    names.sort();
    wait_members(&mut nodes, &names).await?;

    // Activation of fresh identities.
    let line = nodes[0]
        .ask(&format!("activate a {actors}"), "activate ")
        .await?;
    let activate_us_p50: u64 = word(&line, "p50_us")?.parse()?;
    eprintln!("phase activate: {line}");

    // Registered counters for throughput and re-homing.
    let line = nodes[0]
        .ask(&format!("register r {actors}"), "register ")
        .await?;
    ensure!(line.starts_with("register ok"), "{line}");
    let start = Instant::now();
    // The fresh `a` counters run too.
    while local(&mut nodes).await? < 2 * actors {
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "counters do not all run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("phase register: every counter runs");
    let line = nodes[0].ask(&format!("pids r {actors}"), "pids ").await?;
    ensure!(line.starts_with("pids ok"), "{line}");
    let line = nodes[0]
        .ask(&format!("routecost r {actors} 200000"), "routecost ")
        .await?;
    eprintln!("phase throughput: {line}");
    let (mut routed, mut direct) = (0f64, 0f64);
    for _ in 0..2 {
        routed = routed.max(round(&mut nodes, "routed", actors, args.msgs).await?);
        direct = direct.max(round(&mut nodes, "direct", actors, args.msgs).await?);
        round(&mut nodes, "named", actors, args.msgs).await?;
    }

    eprintln!("phase throughput: routed {routed:.0}/s, direct {direct:.0}/s");
    // Moves when one node joins.
    let before = nodes[0]
        .ask(&format!("owners m {}", args.join_ids), "owners ")
        .await?;
    let mut extra = ChildNode::start(&format!("pb_{}", n + 1), Some(&seed), &[]).await?;
    let mut with_extra = names.clone();
    with_extra.push(extra.name.clone());
    with_extra.sort();
    wait_members(&mut nodes[..1], &with_extra).await?;
    let after = nodes[0]
        .ask(&format!("owners m {}", args.join_ids), "owners ")
        .await?;
    let (b, a): (Vec<&str>, Vec<&str>) = (
        before
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split(',')
            .collect(),
        after
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .split(',')
            .collect(),
    );
    ensure!(
        b.len() == args.join_ids && a.len() == args.join_ids,
        "owner lists"
    );
    let moved = b.iter().zip(&a).filter(|(x, y)| x != y).count();
    ensure!(
        b.iter().zip(&a).all(|(x, y)| x == y || *y == extra.name),
        "an identity moved to a member other than the new one"
    );
    let moved_on_join = moved as f64 / args.join_ids as f64;
    // The joined node stays: it is the one killed next (a graceful leave
    // followed by a kill left a member without a majority in some runs:
    // see the closing note of issue 14).
    wait_members(&mut nodes, &with_extra).await?;

    eprintln!("phase join: {moved_on_join:.3} moved");
    // Re-homing after a SIGKILL of the node that joined.
    let victim = &mut extra;
    victim.kill().await?;
    let killed = Instant::now();
    loop {
        let line = nodes[0]
            .ask(&format!("calls r {actors} 64 1000"), "calls ")
            .await?;
        if word(&line, "ok")?.parse::<usize>()? == actors {
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("not re-homed after 60 s: {line}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rehome_ms = killed.elapsed().as_millis();

    for c in nodes {
        c.quit().await?;
    }
    println!(
        "placement nodes={n} actors={actors} activate_us_p50={activate_us_p50} routed_msgs_per_s={routed:.0} direct_msgs_per_s={direct:.0} routed_ratio={:.2} rehome_ms={rehome_ms} duplicates=unmeasured lost=unmeasured moved_on_join={moved_on_join:.3}",
        routed / direct
    );
    Ok(())
}
