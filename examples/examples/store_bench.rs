//! The metadata store's batched registration against a real etcd that this
//! program starts (Debian's `etcd-server`, on free ports of 127.0.0.1 with a
//! temporary data directory, stopped by its PID at the end).
//!
//! ```text
//! cargo run --release -p joerl-examples --features etcd --example store_bench
//! cargo run --release -p joerl-examples --features etcd --example store_bench -- --ids 10000 --rounds 3
//! ```
//!
//! Each round registers `--ids` fresh identities' keys at once through
//! `store::batch::Registrations` (create-if-absent, batched into
//! transactions of at most 128 operations and 1.5 MiB) and waits until every
//! caller has its answer, then checks with one `list` that all are in etcd.
//! Then the leader failover: this program started again as a child process
//! (`--serve-leader ENDPOINT`) runs a node that wins the store election
//! (`StoreLeader`, TTL 5 s); a node here campaigns too; the child is
//! SIGKILLed and the time until the node here leads is `leader_failover_ms`
//! (goal: the TTL plus 1,000 ms at most), over `--failovers` kills (the
//! median counts).
//! The last line is
//! `etcd register_10k_ms=.. txn_ops_max=.. txns=.. ids=.. leader_failover_ms=..`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use joerl_dist::cluster::placement::LeaderElection;
use joerl_dist::cluster::store::MetadataStore;
use joerl_dist::cluster::store::batch::{BatchLimits, Registrations};
use joerl_dist::cluster::store::etcd::{EtcdOptions, EtcdStore};
use joerl_dist::cluster::store::leader::{StoreLeader, StoreLeaderOptions};
use joerl_dist::cluster::store::local_etcd::LocalEtcd;

#[derive(Parser, Debug)]
#[command(about = "Batched registration into a real etcd")]
struct Args {
    /// Keys registered per round.
    #[arg(long, default_value_t = 10_000)]
    ids: usize,
    /// Rounds (the median counts).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leader kills (the median counts).
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Internal: run the child node that leads, against this etcd.
    #[arg(long, hide = true)]
    serve_leader: Option<String>,
}

/// A node of its own (with an EPMD of its own) on 127.0.0.1.
async fn node(
    name: &str,
) -> anyhow::Result<(joerl_dist::DistributedSystem, joerl_epmd::EpmdServer)> {
    let epmd =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let node = joerl_dist::NodeBuilder::new(name, "127.0.0.1:0".parse()?, epmd.local_addr())
        .cookie("store-bench")
        .start()
        .await?;
    Ok((node, epmd))
}

async fn connect(endpoint: &str) -> anyhow::Result<Arc<dyn MetadataStore>> {
    Ok(Arc::new(
        EtcdStore::connect(EtcdOptions::new([endpoint])).await?,
    ))
}

/// The child: leads when it can, says `leading` once it does.
async fn serve_leader(endpoint: &str) -> anyhow::Result<()> {
    let (n, _epmd) = node("sb_child").await?;
    let l = StoreLeader::start(&n, connect(endpoint).await?, StoreLeaderOptions::default())?;
    let mut said = false;
    loop {
        if l.is_leader() && !said {
            println!("leading");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One kill of a leading child; the milliseconds until `me` leads.
async fn failover(endpoint: &str, me: &StoreLeader) -> anyhow::Result<u128> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--serve-leader", endpoint])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the child runs")?;
    // `me` steps down if it leads, so the child can win.
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("piped")?).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if me.is_leader() {
            me.force_election();
        }
        let line = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
        if let Ok(Ok(Some(l))) = line
            && l == "leading"
        {
            break;
        }
        ensure!(Instant::now() < deadline, "the child never led");
    }
    while !me.leader().is_some_and(|l| l.node.starts_with("sb_child")) {
        ensure!(
            Instant::now() < deadline,
            "this node never saw the child lead"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?
        .success();
    ensure!(ok, "kill -KILL {pid}");
    let _ = child.wait().await;
    while !me.is_leader() {
        ensure!(Instant::now() < deadline, "no takeover after the kill");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(killed.elapsed().as_millis())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(endpoint) = &args.serve_leader {
        return serve_leader(endpoint).await;
    }
    let etcd = LocalEtcd::start().await.context("starting etcd")?;
    let store: Arc<dyn MetadataStore> =
        Arc::new(EtcdStore::connect(EtcdOptions::new([etcd.endpoint()])).await?);
    let regs = Registrations::start(store.clone(), None, BatchLimits::default());
    let mut times = Vec::new();
    for round in 0..args.rounds.max(1) {
        let prefix = format!("bench/{round}/");
        let t = Instant::now();
        let tasks: Vec<_> = (0..args.ids)
            .map(|i| {
                let regs = regs.clone();
                let key = format!("{prefix}counter/{i}");
                tokio::spawn(async move { regs.register(key, b"node-a".to_vec()).await })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let ms = t.elapsed().as_millis();
        let (all, _) = store.list(&prefix).await?;
        ensure!(
            all.len() == args.ids,
            "{} of {} keys in etcd",
            all.len(),
            args.ids
        );
        eprintln!("round {round}: {} keys registered in {ms} ms", args.ids);
        times.push(ms);
    }
    times.sort_unstable();

    let (n, _epmd) = node("sb_main").await?;
    let me = StoreLeader::start(
        &n,
        connect(&etcd.endpoint()).await?,
        StoreLeaderOptions::default(),
    )?;
    let mut failovers = Vec::new();
    for k in 0..args.failovers.max(1) {
        let ms = failover(&etcd.endpoint(), &me).await?;
        eprintln!("failover {k}: this node led {ms} ms after the leader's SIGKILL");
        failovers.push(ms);
    }
    failovers.sort_unstable();
    n.shutdown().await;

    let st = regs.stats();
    println!(
        "etcd register_10k_ms={} txn_ops_max={} txns={} ids={} leader_failover_ms={}",
        times[times.len() / 2],
        st.ops_max.load(Ordering::Relaxed),
        st.txns.load(Ordering::Relaxed),
        args.ids,
        failovers[failovers.len() / 2]
    );
    drop(etcd);
    Ok(())
}
