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
//! The last line is
//! `etcd register_10k_ms=.. txn_ops_max=.. txns=..` (the median round's time).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use joerl_dist::cluster::store::MetadataStore;
use joerl_dist::cluster::store::batch::{BatchLimits, Registrations};
use joerl_dist::cluster::store::etcd::{EtcdOptions, EtcdStore};
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let st = regs.stats();
    println!(
        "etcd register_10k_ms={} txn_ops_max={} txns={} ids={}",
        times[times.len() / 2],
        st.ops_max.load(Ordering::Relaxed),
        st.txns.load(Ordering::Relaxed),
        args.ids
    );
    drop(etcd);
    Ok(())
}
