//! Local runtime benchmarks: message throughput, ping-pong latency, spawn rate
//! and memory per actor.
//!
//! ```text
//! cargo run --release --example local_bench -- throughput --count 10000000
//! cargo run --release --example local_bench -- rtt --count 1000000
//! cargo run --release --example local_bench -- spawn --count 1000000 [--spawners N]
//! ```
//!
//! Each mode prints exactly one result line, last:
//! `local_throughput msgs_per_s=.. count=..`, `local_rtt p50_us=.. p99_us=.. mean_us=.. count=..`,
//! `spawn per_s=.. bytes_per_actor=.. count=..`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use joerl_core::{Actor, ActorContext, ActorSystem, Message, Pid};
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// One sender, one receiver, N small messages.
    Throughput,
    /// N sequential ping-pongs between two actors.
    Rtt,
    /// Spawn N idle actors and keep them alive.
    Spawn,
}

#[derive(Parser, Debug)]
#[command(about = "joerl local runtime benchmarks")]
struct Args {
    /// What to measure.
    mode: Mode,
    /// How many messages, round trips or actors.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// spawn mode: how many tasks spawn in parallel (default: one per core).
    #[arg(long)]
    spawners: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let bench = async move {
            match args.mode {
                Mode::Throughput => throughput(args.count).await,
                Mode::Rtt => rtt(args.count).await,
                Mode::Spawn => {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
                    spawn(args.count, args.spawners.unwrap_or(cores).max(1)).await
                }
            }
        };
        tokio::select! {
            r = bench => r,
            _ = joerl_examples::until_stopped(None) => {
                println!("interrupted");
                Ok(())
            }
        }
    })
}

/// Counts messages and reports when it has seen `expected`.
struct Sink {
    seen: u64,
    expected: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Sink {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {
        self.seen += 1;
        if self.seen == self.expected {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

async fn throughput(count: u64) -> Result<()> {
    let system = ActorSystem::new();
    let (tx, rx) = oneshot::channel();
    let sink = system.spawn(Sink {
        seen: 0,
        expected: count,
        done: Some(tx),
    });
    let sender = system.clone();
    let start = Instant::now();
    // The sender runs as a task on the runtime, like an actor would.
    let producer = tokio::spawn(async move {
        for i in 0..count {
            sender.send(sink, i).await.expect("sink alive");
        }
    });
    rx.await.context("sink stopped early")?;
    let elapsed = start.elapsed();
    producer.await?;
    system.shutdown().await;
    println!(
        "local_throughput msgs_per_s={:.1} count={count}",
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Replies to every message with a unit message.
struct Ponger;

impl Actor for Ponger {
    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        if let Some(from) = ctx.sender() {
            let _ = ctx.send(from, ()).await;
        }
    }
}

/// Sends a ping, waits for the pong, records the round trip, repeats.
struct Pinger {
    ponger: Pid,
    remaining: u64,
    sent_at: Instant,
    samples: Vec<u32>,
    done: Option<oneshot::Sender<Vec<u32>>>,
}

impl Actor for Pinger {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.sent_at = Instant::now();
        let _ = ctx.send(self.ponger, ()).await;
    }

    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        let rtt = self.sent_at.elapsed();
        self.samples
            .push(rtt.as_nanos().min(u32::MAX as u128) as u32);
        self.remaining -= 1;
        if self.remaining == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(std::mem::take(&mut self.samples));
            }
            return;
        }
        self.sent_at = Instant::now();
        let _ = ctx.send(self.ponger, ()).await;
    }
}

async fn rtt(count: u64) -> Result<()> {
    anyhow::ensure!(count > 0, "--count must be at least 1");
    let system = ActorSystem::new();
    let ponger = system.spawn(Ponger);
    let (tx, rx) = oneshot::channel();
    system.spawn(Pinger {
        ponger,
        remaining: count,
        sent_at: Instant::now(),
        samples: Vec::with_capacity(count as usize),
        done: Some(tx),
    });
    let mut samples = rx.await.context("pinger stopped early")?;
    system.shutdown().await;
    let l = joerl_examples::latency(&mut samples);
    println!(
        "local_rtt p50_us={:.3} p99_us={:.3} mean_us={:.3} count={count}",
        l.p50_us, l.p99_us, l.mean_us
    );
    Ok(())
}

/// An actor that does nothing until it is stopped.
struct Idle;

impl Actor for Idle {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

fn rss_bytes() -> Result<u64> {
    let statm =
        std::fs::read_to_string("/proc/self/statm").context("cannot read /proc/self/statm")?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("unexpected /proc/self/statm format")?
        .parse()?;
    Ok(resident * 4096)
}

async fn spawn(count: u64, workers: u64) -> Result<()> {
    let system = ActorSystem::new();
    let before = rss_bytes()?;
    let start = Instant::now();
    let spawner = system.clone();
    // `workers` spawners (by default one per worker thread, as that many actors
    // spawning at once would), each a runtime task yielding now and then as a
    // cooperative task does, so the new actors' first runs stay on its worker.
    let mut spawners = Vec::new();
    for w in 0..workers {
        let system = spawner.clone();
        let share = count / workers + u64::from(w < count % workers);
        spawners.push(tokio::spawn(async move {
            for i in 0..share {
                system.spawn(Idle);
                if i % 128 == 127 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for s in spawners {
        s.await?;
    }
    let elapsed = start.elapsed();
    // Let every actor run its start-up and park, then measure memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes()?;
    anyhow::ensure!(
        system.actor_count() as u64 == count,
        "expected {count} live actors, found {}",
        system.actor_count()
    );
    let per_actor = after.saturating_sub(before) as f64 / count as f64;
    system.shutdown().await;
    println!(
        "spawn per_s={:.1} bytes_per_actor={per_actor:.1} count={count}",
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
