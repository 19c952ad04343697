//! Measures cluster membership across OS processes on this machine:
//!
//! ```text
//! cargo run --release --example cluster_bench -- --nodes 5
//! ```
//!
//! It starts N member processes on 127.0.0.1 (free ports, each with its own
//! EPMD inside, so only gossip tells members where the others are), runs
//! each phase, stops them and prints one line:
//!
//! ```text
//! membership nodes=N converge_ms=.. leave_ms=.. detect_ms=.. false_failures=.. gossip_bytes_per_node_s=..
//! ```
//!
//! - `converge_ms`: the first member is the seed; the others start and join
//!   through it; from the moment the last one is up until every member sees
//!   all N active.
//! - `gossip_bytes_per_node_s`: gossip bytes sent per member per second over
//!   `--idle-secs` of idle cluster.
//! - `false_failures`: members marked failed by anyone during
//!   `--traffic-secs` of full-speed traffic from the second member to the
//!   third (nobody is stopped, so every failure is false).
//! - `leave_ms`: the last member leaves gracefully; until every other member
//!   sees it `Left`.
//! - `detect_ms`: the next member is killed with SIGKILL; until every
//!   survivor has it `Failed` and every survivor's monitor on it fired
//!   `noconnection`.
//!
//! Times are taken by this process as it reads the members' reports from
//! their pipes. The membership timings are the defaults of
//! `ClusterConfig`, or `--probe-ms`, `--probe-timeout-ms`,
//! `--suspicion-multiplier`, `--gossip-ms`.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use joerl_dist::cluster::{ClusterConfig, ClusterEvent, MemberState};
use joerl_dist::{Actor, ActorContext, DownMessage, Message, NodeBuilder, remote_message};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Cluster membership benchmark: convergence, leave, failure detection")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// Members to start.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of full-speed traffic while failures are counted.
    #[arg(long, default_value_t = 60)]
    traffic_secs: u64,
    /// Seconds of idle cluster over which gossip bytes are counted.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Print every report with its time (to stderr).
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    timing: Timing,
}

/// Membership timings, given to every member.
#[derive(clap::Args, Debug, Clone)]
struct Timing {
    /// Probe interval (ms).
    #[arg(long)]
    probe_ms: Option<u64>,
    /// Probe timeout (ms).
    #[arg(long)]
    probe_timeout_ms: Option<u64>,
    /// Suspicion multiplier.
    #[arg(long)]
    suspicion_multiplier: Option<u32>,
    /// Gossip interval (ms).
    #[arg(long)]
    gossip_ms: Option<u64>,
}

impl Timing {
    fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut put = |k: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push(k.to_string());
                v.push(val);
            }
        };
        put("--probe-ms", self.probe_ms.map(|x| x.to_string()));
        put(
            "--probe-timeout-ms",
            self.probe_timeout_ms.map(|x| x.to_string()),
        );
        put(
            "--suspicion-multiplier",
            self.suspicion_multiplier.map(|x| x.to_string()),
        );
        put("--gossip-ms", self.gossip_ms.map(|x| x.to_string()));
        v
    }

    fn config(&self, seed: Option<String>) -> Result<ClusterConfig> {
        let d = ClusterConfig::default();
        let mut b = ClusterConfig::builder()
            .cluster_name("cluster-bench")
            .port(0)
            .probe(
                self.probe_ms
                    .map(Duration::from_millis)
                    .unwrap_or(d.probe_interval),
                self.probe_timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(d.probe_timeout),
            )
            .gossip_interval(
                self.gossip_ms
                    .map(Duration::from_millis)
                    .unwrap_or(d.gossip_interval),
            )
            .suspicion_multiplier(self.suspicion_multiplier.unwrap_or(d.suspicion_multiplier));
        if let Some(s) = seed {
            b = b.seeds([s]);
        }
        Ok(b.build()?)
    }
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One member (started by the benchmark itself).
    #[command(hide = true)]
    Member {
        #[arg(long)]
        name: String,
        #[arg(long)]
        seed: Option<String>,
        #[command(flatten)]
        timing: Timing,
    },
}

/// Traffic between members.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blast(u64);
remote_message!(Blast, "cluster_bench::Blast");

/// Counts traffic.
struct Sink;
impl Actor for Sink {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

/// A member's reporter: turns cluster events and downs into lines.
struct Reporter {
    cluster: joerl_dist::cluster::Cluster,
    out: mpsc::UnboundedSender<String>,
    monitors: HashMap<joerl_dist::MonitorRef, String>,
}

impl Actor for Reporter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<DownMessage>() {
            Ok(d) => {
                if let Some(n) = self.monitors.remove(&d.monitor) {
                    let _ = self.out.send(format!("down {n} {}", d.reason));
                }
                return;
            }
            Err(m) => m,
        };
        let Ok(e) = msg.downcast::<ClusterEvent>() else {
            return;
        };
        match *e {
            ClusterEvent::MemberUp(m) => {
                if let Ok(r) = ctx.monitor(("sink", m.name.as_str())) {
                    self.monitors.insert(r, m.name.clone());
                }
            }
            ClusterEvent::MemberFailed(m) => {
                let _ = self.out.send(format!("failed {}", m.name));
            }
            ClusterEvent::MemberLeft(m) => {
                let _ = self.out.send(format!("left {}", m.name));
            }
            _ => {}
        }
        let active = self
            .cluster
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .count()
            + 1;
        let _ = self.out.send(format!("view {active}"));
    }
}

/// A member process: reports on stdout, takes commands on stdin.
async fn member(name: String, seed: Option<String>, timing: Timing) -> Result<()> {
    let epmd =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let node = NodeBuilder::new(&name, "127.0.0.1:0".parse()?, epmd.local_addr())
        .cookie("cluster-bench")
        .start()
        .await?;
    node.register("sink", node.spawn(Sink))?;
    let cluster = node.enable_clustering(timing.config(seed)?).await?;
    let (out, mut lines) = mpsc::unbounded_channel::<String>();
    let reporter = node.spawn(Reporter {
        cluster: cluster.clone(),
        out: out.clone(),
        monitors: HashMap::new(),
    });
    cluster.monitor_members(&node, reporter);
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(l) = lines.recv().await {
            let _ = stdout.write_all(format!("{l}\n").as_bytes()).await;
            let _ = stdout.flush().await;
        }
    });
    let _ = out.send(format!("ready {}", cluster.gossip_addr()));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stats"] => {
                let s = cluster.gossip_stats();
                let n =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                let _ = out.send(format!(
                    "stats {} accepted={} refused={} malformed={}",
                    n(&s.bytes_out),
                    n(&s.accepted),
                    s.refused_total(),
                    n(&s.malformed)
                ));
            }
            ["blast", to, secs] => {
                let until = Instant::now() + Duration::from_secs(secs.parse()?);
                let to = to.to_string();
                let mut n = 0u64;
                while Instant::now() < until {
                    for _ in 0..1000 {
                        if node.send(("sink", to.as_str()), Blast(n)).await.is_err() {
                            break;
                        }
                        n += 1;
                    }
                }
                let _ = out.send(format!("blasted {n}"));
            }
            ["leave"] => {
                cluster.leave().await;
                let _ = out.send("gone".to_string());
            }
            ["quit"] => break,
            _ => {}
        }
    }
    node.shutdown().await;
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    Ok(())
}

struct Child {
    name: String,
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

/// Reads every member's lines, stamped as they arrive.
type Reports = mpsc::UnboundedReceiver<(usize, String, Instant)>;

async fn spawn(
    i: usize,
    seed: Option<&str>,
    timing: &Timing,
    tx: &mpsc::UnboundedSender<(usize, String, Instant)>,
) -> Result<Child> {
    let name = format!("b{}", i + 1);
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("member").arg("--name").arg(&name);
    if let Some(s) = seed {
        cmd.arg("--seed").arg(s);
    }
    cmd.args(timing.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut proc = cmd.spawn().context("cannot start a member")?;
    let stdin = proc.stdin.take().expect("piped");
    let stdout = proc.stdout.take().expect("piped");
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send((i, l, Instant::now())).is_err() {
                return;
            }
        }
    });
    Ok(Child { name, proc, stdin })
}

async fn tell(c: &mut Child, line: &str) -> Result<()> {
    c.stdin.write_all(format!("{line}\n").as_bytes()).await?;
    c.stdin.flush().await?;
    Ok(())
}

/// Reads reports until `done` says so (it sees each one), within `limit`.
async fn until(
    rx: &mut Reports,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(usize, &str, Instant) -> bool,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(got) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            bail!("{what}: not within {limit:?}");
        };
        let Some((i, line, at)) = got else {
            bail!("{what}: the members stopped");
        };
        if done(i, &line, at) {
            return Ok(at);
        }
    }
}

/// The gossip bytes all members sent so far, and when the last answered.
async fn gossip_bytes(children: &mut [Child], rx: &mut Reports) -> Result<(u64, Instant)> {
    for c in children.iter_mut() {
        tell(c, "stats").await?;
    }
    let n = children.len();
    let mut got: HashMap<usize, u64> = HashMap::new();
    let at = until(rx, Duration::from_secs(60), "stats", |i, l, _| {
        if let Some(b) = l.strip_prefix("stats ") {
            if std::env::var_os("CLUSTER_BENCH_STATS").is_some() {
                eprintln!("b{} {l}", i + 1);
            }
            let mut words = b.split(' ');
            got.insert(i, words.next().and_then(|w| w.parse().ok()).unwrap_or(0));
        }
        got.len() == n
    })
    .await?;
    Ok((got.values().sum(), at))
}

async fn bench(args: Args) -> Result<()> {
    let n = args.nodes;
    if n < 4 {
        bail!("--nodes must be at least 4 (one leaves, one is killed, two exchange traffic)");
    }
    let limit = Duration::from_secs(60);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut children = vec![spawn(0, None, &args.timing, &tx).await?];
    let seed = {
        let mut addr = String::new();
        until(&mut rx, limit, "the seed starts", |_, l, _| {
            if let Some(a) = l.strip_prefix("ready ") {
                addr = a.to_string();
                true
            } else {
                false
            }
        })
        .await?;
        addr
    };
    for i in 1..n {
        children.push(spawn(i, Some(&seed), &args.timing, &tx).await?);
    }
    // Converge: from the last member up until all see N active.
    let mut ready = HashSet::from([0usize]);
    let mut views: HashMap<usize, usize> = HashMap::new();
    let mut last_up = None;
    let t = Instant::now();
    let verbose = args.verbose;
    let at = until(
        &mut rx,
        limit,
        "every member sees all active",
        |i, l, at| {
            if verbose {
                eprintln!("converge +{} ms: b{} {l}", (at - t).as_millis(), i + 1);
            }
            if l.starts_with("ready ") {
                ready.insert(i);
                if ready.len() == n {
                    last_up = Some(at);
                }
            } else if let Some(v) = l.strip_prefix("view ") {
                views.insert(i, v.parse().unwrap_or(0));
            }
            ready.len() == n && (0..n).all(|i| views.get(&i) == Some(&n))
        },
    )
    .await?;
    let converge_ms = (at - last_up.expect("every member is up")).as_millis();

    // Idle gossip bytes.
    let (before, t0) = gossip_bytes(&mut children, &mut rx).await?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (after, t1) = gossip_bytes(&mut children, &mut rx).await?;
    let bytes_per_node_s = (after - before) as f64 / n as f64 / (t1 - t0).as_secs_f64();

    // False failures under traffic from b2 to b3.
    let to = format!("{}@127.0.0.1", children[2].name);
    tell(
        &mut children[1],
        &format!("blast {to} {}", args.traffic_secs),
    )
    .await?;
    let mut falsely_failed = HashSet::new();
    let mut blasted = 0u64;
    until(
        &mut rx,
        Duration::from_secs(args.traffic_secs) + limit,
        "the traffic ends",
        |_, l, _| {
            if let Some(who) = l.strip_prefix("failed ") {
                falsely_failed.insert(who.to_string());
            }
            if let Some(c) = l.strip_prefix("blasted ") {
                blasted = c.parse().unwrap_or(0);
                return true;
            }
            false
        },
    )
    .await?;
    eprintln!(
        "traffic: {blasted} messages in {} s from {} to {to}",
        args.traffic_secs, children[1].name
    );

    // Leave: the last member.
    let mut leaver = children.pop().expect("n >= 4");
    let leaver_name = format!("{}@127.0.0.1", leaver.name);
    let t = Instant::now();
    tell(&mut leaver, "leave").await?;
    let mut saw_left = HashSet::new();
    let at = until(&mut rx, limit, "every member sees the leave", |i, l, at| {
        if args.verbose {
            eprintln!("leave +{} ms: b{} {l}", (at - t).as_millis(), i + 1);
        }
        if l.strip_prefix("left ") == Some(leaver_name.as_str()) {
            saw_left.insert(i);
        }
        if let Some(who) = l.strip_prefix("failed ") {
            falsely_failed.insert(who.to_string());
        }
        saw_left.len() == children.len()
    })
    .await?;
    let leave_ms = (at - t).as_millis();
    tell(&mut leaver, "quit").await?;
    let _ = leaver.proc.wait().await;

    // Detect: SIGKILL the next member.
    let mut victim = children.pop().expect("n >= 4");
    let victim_name = format!("{}@127.0.0.1", victim.name);
    let victim_idx = children.len();
    let t = Instant::now();
    victim.proc.start_kill()?;
    let mut failed_at = HashSet::new();
    let mut down_at = HashSet::new();
    let at = until(
        &mut rx,
        limit,
        "every survivor detects the kill",
        |i, l, at| {
            // Only survivors count (not the victim, nor the member that left).
            if i >= victim_idx {
                return false;
            }
            if args.verbose {
                eprintln!("detect +{} ms: b{} {l}", (at - t).as_millis(), i + 1);
            }
            if l.strip_prefix("failed ") == Some(victim_name.as_str()) {
                failed_at.insert(i);
            } else if let Some(who) = l.strip_prefix("failed ") {
                falsely_failed.insert(who.to_string());
            }
            if let Some(rest) = l.strip_prefix("down ")
                && rest.starts_with(&format!("{victim_name} "))
            {
                down_at.insert(i);
            }
            failed_at.len() == children.len() && down_at.len() == children.len()
        },
    )
    .await?;
    let detect_ms = (at - t).as_millis();
    let _ = victim.proc.wait().await;
    for c in children.iter_mut() {
        tell(c, "quit").await?;
    }
    for mut c in children {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.proc.wait()).await;
    }
    println!(
        "membership nodes={n} converge_ms={converge_ms} leave_ms={leave_ms} detect_ms={detect_ms} false_failures={} gossip_bytes_per_node_s={bytes_per_node_s:.0}",
        falsely_failed.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging_at("error");
    let args = Args::parse();
    match args.role {
        Some(Role::Member { name, seed, timing }) => member(name, seed, timing).await,
        None => bench(args).await,
    }
}
