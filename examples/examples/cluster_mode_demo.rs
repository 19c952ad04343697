//! Cluster mode, end to end: three node processes on 127.0.0.1 (each with
//! its own EPMD, joined through gossip), 1,000 counters addressed by
//! identity, one node killed (SIGKILL) and its counters re-homed, a
//! migration and a drain through the management API over HTTP, then a
//! summary line:
//!
//! ```text
//! cargo run --release -p joerl-examples --example cluster_mode_demo
//! summary: cluster_mode_demo nodes=3 counters=1000 rehome_ms=.. failover_failed_calls=.. migrate=ok drain=ok elapsed_ms=..
//! ```
//!
//! It exits non-zero if any step does not do what it says.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_dist::cluster::management::http;
use joerl_examples::placement_node::{self, COUNTER, PlacementNodeArgs};
use joerl_examples::service_node::ChildNode;

#[derive(Parser, Debug)]
#[command(about = "Three nodes, 1,000 counters by identity, a kill, a migrate and a drain")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Counters.
    #[arg(long, default_value_t = 1000)]
    counters: usize,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One node (started by the demo itself).
    #[command(hide = true)]
    Node(PlacementNodeArgs),
}

const COOKIE: &str = "cluster-mode-demo";

/// What a `calls` line said.
#[derive(Debug, Default)]
struct Calls {
    ok: u64,
    err: u64,
    sum: u64,
    nodes: BTreeMap<String, u64>,
}

fn parse_calls(line: &str) -> Result<Calls> {
    let mut c = Calls::default();
    for w in line.split_whitespace().skip(1) {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "ok" => c.ok = v.parse()?,
            "err" => c.err = v.parse()?,
            "sum" => c.sum = v.parse()?,
            "nodes" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let (n, count) = part.rsplit_once(':').context("node:count")?;
                    c.nodes.insert(n.to_string(), count.parse()?);
                }
            }
            _ => {}
        }
    }
    Ok(c)
}

async fn calls(node: &mut ChildNode, n: usize, timeout_ms: u64) -> Result<Calls> {
    let line = node
        .ask(&format!("calls c {n} 64 {timeout_ms}"), "calls ")
        .await?;
    parse_calls(&line)
}

async fn local(node: &mut ChildNode) -> Result<usize> {
    Ok(placement_node::ask_number(node, "local").await? as usize)
}

/// Evaluates `cond` every 100 ms until it holds, for up to `limit`.
macro_rules! wait_for {
    ($what:expr, $limit:expr, $cond:expr) => {{
        let start = Instant::now();
        loop {
            if $cond {
                break;
            }
            if start.elapsed() > $limit {
                bail!("timed out waiting until {}", $what);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn mgmt_addr(node: &ChildNode) -> Result<SocketAddr> {
    node.ready_rest
        .first()
        .context("no management address in the ready line")?
        .parse()
        .context("management address")
}

async fn admin(addr: SocketAddr, path: &str, body: Option<String>) -> Result<()> {
    let token = http::token(COOKIE);
    let r = http::request(
        addr,
        "POST",
        path,
        Some(&token),
        body,
        Duration::from_secs(30),
    )
    .await?;
    ensure!(r.status == 200, "POST {path}: {} {}", r.status, r.body);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging();
    let args = Args::parse();
    if let Some(Role::Node(a)) = args.role {
        return placement_node::run(a).await;
    }
    placement_node::prepare_children(COOKIE);
    let started = Instant::now();
    let n = args.counters;
    let mut a = ChildNode::start("cm_a", None, &[]).await?;
    let seed = a.gossip.clone();
    let mut b = ChildNode::start("cm_b", Some(&seed), &[]).await?;
    let mut c = ChildNode::start("cm_c", Some(&seed), &[]).await?;
    let names = [a.name.clone(), b.name.clone(), c.name.clone()];
    let all = names.join(",");
    let limit = Duration::from_secs(30);
    for node in [&mut a, &mut b, &mut c] {
        let want = format!("members {all}");
        wait_for!(
            "every node places on the three",
            limit,
            node.ask("members", "members ").await? == want
        );
        let leader = format!("leader {} ", names[0]);
        wait_for!(
            "every node accepts the leader",
            limit,
            node.ask("leader", "leader ").await?.starts_with(&leader)
        );
    }
    println!("cluster: {all} (leader {})", names[0]);

    // 1,000 counters, registered (activated now, kept, re-homed at once).
    let line = a.ask(&format!("register c {n}"), "register ").await?;
    ensure!(line.starts_with("register ok"), "{line}");
    wait_for!(
        "every counter runs",
        limit,
        local(&mut a).await? + local(&mut b).await? + local(&mut c).await? == n
    );
    let first = calls(&mut b, n, 5000).await?;
    ensure!(
        first.ok == n as u64 && first.sum == n as u64,
        "first round: {first:?}"
    );
    println!(
        "placement: {n} counters by identity, one call each from cm_b: {:?}",
        first.nodes
    );

    // Kill cm_c: its counters come back on the survivors.
    let on_c = first.nodes.get(&names[2]).copied().unwrap_or(0);
    c.kill().await?;
    let killed = Instant::now();
    let mut calls_failed = 0;
    let mut second;
    loop {
        second = calls(&mut b, n, 1000).await?;
        if second.ok == n as u64 {
            break;
        }
        calls_failed += second.err;
        ensure!(
            killed.elapsed() < Duration::from_secs(30),
            "counters not re-homed after 30 s: {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rehome_ms = killed.elapsed().as_millis();
    ensure!(
        !second.nodes.contains_key(&names[2]),
        "a counter answered from the killed node: {second:?}"
    );
    // Those of cm_c started from zero (their count died with it); the
    // others went on (plus the calls that counted before failing rounds
    // ended, none for the survivors: their calls all answered).
    println!(
        "failover: cm_c killed with {on_c} counters; every counter answered again after {rehome_ms} ms, on the survivors ({calls_failed} calls to its counters failed meanwhile, in rounds every 100 ms)"
    );
    wait_for!(
        "the re-homed counters run on the survivors",
        limit,
        local(&mut a).await? + local(&mut b).await? == n
    );

    // A migration through the HTTP API: the count moves with the counter.
    let api = mgmt_addr(&a)?;
    let owner_line = b.ask("owner c7", "owner ").await?;
    let owner = owner_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let target = if owner == names[0] {
        &names[1]
    } else {
        &names[0]
    };
    let before = placement_node::ask_number(&mut b, "count c7").await?;
    admin(
        api,
        &format!("/cluster/actors/{COUNTER}/c7/migrate"),
        Some(format!(r#"{{"node":"{target}"}}"#)),
    )
    .await?;
    let want = format!("owner {target}");
    wait_for!(
        "cm_b routes c7 to its target",
        limit,
        b.ask("owner c7", "owner ").await? == want
    );
    let after = b.ask("count c7", "count ").await?;
    let mut w = after.split_whitespace().skip(1);
    let (count, on) = (
        w.next().unwrap_or("0").parse::<u64>()?,
        w.next().unwrap_or(""),
    );
    ensure!(
        count == before + 1 && on == target,
        "c7 after migrating to {target}: {after} (was {before})"
    );
    println!(
        "migrate: c7 moved from {owner} to {target} over HTTP; its count went on ({before} -> {count})"
    );

    // A drain through the HTTP API: every counter moves to cm_a, counts kept.
    let sum_before = calls(&mut b, n, 5000).await?;
    ensure!(sum_before.ok == n as u64, "{sum_before:?}");
    admin(api, &format!("/cluster/nodes/{}/drain", names[1]), None).await?;
    wait_for!("cm_b runs nothing", limit, local(&mut b).await? == 0);
    let drained = calls(&mut b, n, 5000).await?;
    ensure!(
        drained.ok == n as u64 && drained.nodes.keys().all(|k| *k == names[0]),
        "after the drain: {drained:?}"
    );
    ensure!(
        drained.sum == sum_before.sum + n as u64,
        "every count went on across the drain: {} then {}",
        sum_before.sum,
        drained.sum
    );
    println!("drain: cm_b drained over HTTP; all {n} counters on cm_a, every count kept");

    a.quit().await?;
    b.quit().await?;
    println!(
        "summary: cluster_mode_demo nodes=3 counters={n} rehome_ms={rehome_ms} failover_failed_calls={calls_failed} migrate=ok drain=ok elapsed_ms={}",
        started.elapsed().as_millis()
    );
    Ok(())
}
