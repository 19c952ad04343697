//! Ping-pong across two terminals. The server registers a `pong` actor; the
//! client finds it by its registered name (`{pong, server@127.0.0.1}`), never by
//! guessing a Pid, prints each round trip and a summary.
//!
//! ```text
//! cargo run --bin epmd_server                          # terminal 1
//! cargo run --example remote_ping_pong -- server       # terminal 2
//! cargo run --example remote_ping_pong -- client       # terminal 3
//! ```
//!
//! Options: `--epmd ADDR`, `--cookie C`, `--rounds N` (client), `--duration SECS` (server).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use joerl_dist::{Actor, ActorContext, Message};
use joerl_examples::{NodeOptions, Ping, Pong, init_logging, until_stopped};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Server,
    Client,
}

#[derive(Parser, Debug)]
#[command(about = "Ping-pong between two joerl nodes")]
struct Args {
    role: Role,
    #[command(flatten)]
    node_opts: NodeOptions,
    /// Round trips the client makes.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// The server stops after this many seconds (default: at Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
}

/// Answers every Ping with a Pong to its sender.
struct PongActor;

impl Actor for PongActor {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let (Ok(ping), Some(from)) = (msg.downcast::<Ping>(), ctx.sender()) {
            println!("ping {} from {from}", ping.0);
            let _ = ctx.send(from, Pong(ping.0)).await;
        }
    }
}

/// Sends pings one at a time and reports the round trips.
struct PingActor {
    rounds: u64,
    sent_at: Instant,
    times: Vec<Duration>,
    done: Option<tokio::sync::oneshot::Sender<Vec<Duration>>>,
}

impl Actor for PingActor {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.sent_at = Instant::now();
        if let Err(e) = ctx.send(("pong", "pong_server@127.0.0.1"), Ping(1)).await {
            println!("cannot reach the server: {e}");
            ctx.stop(joerl_dist::ExitReason::custom("server unreachable"));
        }
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Ok(pong) = msg.downcast::<Pong>() else {
            return;
        };
        let rtt = self.sent_at.elapsed();
        println!("pong {} in {:.1} µs", pong.0, rtt.as_secs_f64() * 1e6);
        self.times.push(rtt);
        if pong.0 >= self.rounds {
            if let Some(done) = self.done.take() {
                let _ = done.send(std::mem::take(&mut self.times));
            }
            return;
        }
        self.sent_at = Instant::now();
        // After the first answer we know the server's Pid: it is the sender.
        let server = ctx.sender().expect("pong has a sender");
        let _ = ctx.send(server, Ping(pong.0 + 1)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let (name, port) = match args.role {
        Role::Server => ("pong_server", 0),
        Role::Client => ("ping_client", 0),
    };
    let builder = args.node_opts.builder(name, port)?;
    let node = builder.start().await.context("cannot start the node")?;
    match args.role {
        Role::Server => {
            let pong = node.spawn(PongActor);
            node.register("pong", pong)?;
            println!("server {} ready: pong is {pong}", node.name());
            until_stopped(args.duration.map(Duration::from_secs)).await;
        }
        Role::Client => {
            if args.rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            node.connect("pong_server@127.0.0.1")
                .await
                .context("cannot reach pong_server@127.0.0.1 (is the server running?)")?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            node.spawn(PingActor {
                rounds: args.rounds,
                sent_at: Instant::now(),
                times: Vec::new(),
                done: Some(tx),
            });
            let times = tokio::select! {
                r = rx => r.context("the pinger stopped")?,
                _ = until_stopped(None) => bail!("interrupted"),
            };
            let total: Duration = times.iter().sum();
            let min = times.iter().min().copied().unwrap_or_default();
            let max = times.iter().max().copied().unwrap_or_default();
            println!(
                "summary: {} round trips, mean {:.1} µs, min {:.1} µs, max {:.1} µs",
                times.len(),
                total.as_secs_f64() * 1e6 / times.len() as f64,
                min.as_secs_f64() * 1e6,
                max.as_secs_f64() * 1e6
            );
        }
    }
    node.shutdown().await;
    Ok(())
}
