//! A cluster node with placement, the management API and metrics, driven
//! by lines on stdin: the node processes of `cluster_mode_demo`,
//! `placement_bench` and the cross-process placement tests.
//!
//! It hosts one placed kind, [`Counter`] (a gen_server whose count moves
//! with it: `placed!(server migrate ..)`), and serves the management API on
//! 127.0.0.1 (mutations allowed, metrics on). Commands, one per line, each
//! answered with one line starting with the command's name:
//!
//! ```text
//! register PREFIX N          registers counters PREFIX0..PREFIX{N-1}  -> register ok N MS
//! calls PREFIX N PAR MS      one Incr call to each, PAR at a time, MS timeout
//!                            -> calls ok=.. err=.. sum=.. ms=.. nodes=NODE:COUNT,..
//! local                      -> local N (activations running here)
//! members                    -> members NODE,.. (the members placed on)
//! leader                     -> leader NODE EPOCH | leader none
//! owner ID                   -> owner NODE (of counter ID, in this node's view)
//! count ID                   -> count N NODE (an Incr call to counter ID)
//! activate PREFIX N          one call to each of N fresh counters, one after another
//!                            -> activate p50_us=.. p99_us=..
//! pids PREFIX N              learns the Pids of counters PREFIX0.. (for `blast direct`)
//!                            -> pids ok N
//! blast routed|routed-dest|direct|named PREFIX N K
//!                            K `Hit` messages round robin to the N counters, by
//!                            identity (`Placements::send`, or `node.send` of a
//!                            `Dest` copy), by the Pids `pids` learned, or by their
//!                            {name, owner} -> blast sent=K ms=.. route_hits=..
//!                            route_misses=.. thread_copy_misses=.. pids_learned=..
//! routecost PREFIX N K       K owner computations over N identities -> routecost ns=..
//! churn start PREFIX N SECS  numbered ticks for SECS s to three streams of N counters each
//!                            (at-least-once, exactly-once, at-most-once), in the background
//! churn report               waits for the run's end -> churn alo_sent=.. alo_failed=..
//!                            alo_lost=.. alo_dup=.. eo_sent=.. .. amo_lost=.. resent=..
//! actives PREFIX             -> actives NOW_US ID:SINCE_US,.. (activations running here)
//! hits                       -> hits H (Hit messages handled by this process's counters)
//! owners PREFIX N            -> owners NODE,NODE,.. (the owner of each, in order)
//! quit
//! ```
//!
//! It prints `ready NAME GOSSIP_ADDR MANAGEMENT_ADDR` once it runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use joerl_dist::cluster::management::{Management, http};
use joerl_dist::cluster::placement::{self, Migrate, PlacedServer, Placements};
use joerl_dist::cluster::{ClusterConfig, metrics};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::{ActorContext, Dest, DistributedSystem, NodeBuilder, Pid, placed};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// The kind name of [`Counter`].
pub const COUNTER: &str = "joerl_examples::Counter";

/// A counter placed by identity; its count moves with it.
pub struct Counter {
    count: u64,
}

/// Adds one; the answer is the new count and the node that counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incr;

/// The answer to [`Incr`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counted {
    /// The count after this one.
    pub count: u64,
    /// The node that counted.
    pub node: String,
}

impl Request for Incr {
    type Reply = Counted;
}

/// A message a counter takes without answering (for throughput).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit;
joerl_dist::remote_message!(Hit, "joerl_examples::placement::Hit");

/// A numbered message of a churn stream; the counter answers [`Done`] to
/// `to` before its handler returns (so before a guaranteed one is
/// acknowledged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// The stream: 0 at-least-once, 1 exactly-once, 2 at-most-once.
    pub stream: u8,
    /// Its number in the stream.
    pub seq: u64,
    /// Where [`Done`] goes.
    pub to: Pid,
}
joerl_dist::remote_message!(Tick, "joerl_examples::placement::Tick");

/// A counter handled a [`Tick`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    /// The tick's stream.
    pub stream: u8,
    /// The tick's number.
    pub seq: u64,
}
joerl_dist::remote_message!(Done, "joerl_examples::placement::Done");

/// Hit messages handled by the counters of this process.
static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Asks a counter for its Pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAreYou;
impl Request for WhoAreYou {
    type Reply = Pid;
}

impl HandleCall<WhoAreYou> for Counter {
    async fn handle_call(
        &mut self,
        _req: WhoAreYou,
        _from: ReplyTo<Pid>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Pid> {
        CallResponse::Reply(ctx.pid())
    }
}

impl GenServer for Counter {
    type Calls = (Incr, WhoAreYou);
    type Casts = ();

    async fn handle_info(&mut self, msg: joerl_dist::Message, ctx: &mut ActorContext) {
        if msg.is::<Hit>() {
            self.count += 1;
            HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(t) = msg.downcast_ref::<Tick>() {
            self.count += 1;
            let _ = ctx
                .send(
                    t.to,
                    Done {
                        stream: t.stream,
                        seq: t.seq,
                    },
                )
                .await;
        }
    }
}

impl HandleCall<Incr> for Counter {
    async fn handle_call(
        &mut self,
        _req: Incr,
        _from: ReplyTo<Counted>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Counted> {
        self.count += 1;
        CallResponse::Reply(Counted {
            count: self.count,
            node: ctx.node().unwrap_or("").to_string(),
        })
    }
}
joerl_dist::remote_server!(Counter);

impl PlacedServer for Counter {
    fn activate(_id: &str) -> Self {
        Counter { count: 0 }
    }
}

impl Migrate for Counter {
    type State = u64;
    fn export(&self) -> u64 {
        self.count
    }
    fn import(_id: &str, count: u64) -> Self {
        Counter { count }
    }
}
placed!(server migrate Counter, "joerl_examples::Counter");

/// The `node` subcommand's options.
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementNodeArgs {
    /// The node's name.
    #[arg(long)]
    pub name: String,
    /// A seed's gossip address.
    #[arg(long)]
    pub seed: Option<String>,
    /// Membership probe interval in ms.
    #[arg(long, default_value_t = 300)]
    pub probe_ms: u64,
    /// Place through the etcd at this client URL (`metadata_store: etcd`;
    /// the examples must be built with the `etcd` feature).
    #[arg(long)]
    pub etcd: Option<String>,
}

/// For a program that drives placement nodes as children: the cookie they
/// inherit, and errors only in their logs unless `RUST_LOG` says otherwise
/// (every call to a killed node's counters would warn). Call it first in
/// `main`, before any other thread runs.
pub fn prepare_children(cookie: &str) {
    // SAFETY: called before any other thread reads the environment.
    unsafe {
        std::env::set_var("JOERL_COOKIE", cookie);
        if std::env::var_os("RUST_LOG").is_none() {
            std::env::set_var("RUST_LOG", "error");
        }
    }
}

/// Asks a child node `command` and reads the number after the answer's
/// first word (`local`, `hits`, `count ID`).
pub async fn ask_number(node: &mut crate::service_node::ChildNode, command: &str) -> Result<u64> {
    let answer = command.split_whitespace().next().unwrap_or(command);
    let line = node.ask(command, &format!("{answer} ")).await?;
    let n = line.split_whitespace().nth(1).unwrap_or("");
    n.parse()
        .with_context(|| format!("{}: no number in {line:?}", node.name))
}

/// Waits (up to 60 s) until every one of `nodes` places on exactly the
/// members `names` (sorted).
pub async fn wait_members(
    nodes: &mut [crate::service_node::ChildNode],
    names: &[String],
) -> Result<()> {
    let want = format!("members {}", names.join(","));
    let start = std::time::Instant::now();
    for n in nodes.iter_mut() {
        while n.ask("members", "members ").await? != want {
            anyhow::ensure!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "{} does not place on {want}",
                n.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// [`ask_number`] summed over `nodes`.
pub async fn sum_of(nodes: &mut [crate::service_node::ChildNode], command: &str) -> Result<u64> {
    let mut sum = 0;
    for n in nodes.iter_mut() {
        sum += ask_number(n, command).await?;
    }
    Ok(sum)
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

struct Running {
    node: DistributedSystem,
    placements: Placements,
    /// The Pids `pids` learned.
    pids: std::sync::Mutex<Vec<Pid>>,
    /// The churn run under way (`churn start`), reported by `churn report`.
    churn: std::sync::Mutex<Option<tokio::task::JoinHandle<String>>>,
}

/// The [`Done`]s a churn run's collector saw, per stream and number.
type Seen = std::sync::Arc<std::sync::Mutex<[BTreeMap<u64, u32>; 3]>>;

/// Takes a churn run's [`Done`]s.
struct Collector(Seen);

impl joerl_dist::Actor for Collector {
    async fn handle_message(&mut self, msg: joerl_dist::Message, _ctx: &mut ActorContext) {
        if let Some(d) = msg.downcast_ref::<Done>() {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *seen[usize::from(d.stream.min(2))].entry(d.seq).or_default() += 1;
        }
    }
}

/// A churn run: for `secs` seconds, a tick every `every` to each stream
/// (at-least-once, exactly-once, at-most-once; each to its own `n`
/// counters `PREFIX{a,e,m}{i}`), at most 256 guaranteed deliveries in
/// flight per stream; then waits for every delivery to end and the last
/// at-most-once ticks to land, and says what was lost and handled twice.
async fn churn(
    node: DistributedSystem,
    p: Placements,
    prefix: String,
    n: usize,
    secs: u64,
) -> String {
    use joerl_dist::cluster::placement::Guarantee;
    let seen: Seen = Default::default();
    let collector = node.spawn(Collector(seen.clone()));
    let every = Duration::from_millis(4);
    let sems: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(tokio::sync::Semaphore::new(256)))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    let mut sent = [0u64; 3];
    let mut amo_failed = 0u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        for (stream, letter) in [(0u8, 'a'), (1, 'e'), (2, 'm')] {
            let s = usize::from(stream);
            sent[s] += 1;
            let seq = sent[s];
            let r = p.actor::<Counter>(format!("{prefix}{letter}{}", seq as usize % n));
            let t = Tick {
                stream,
                seq,
                to: collector,
            };
            if stream == 2 {
                if p.deliver(&r, t, Guarantee::AtMostOnce).await.is_err() {
                    amo_failed += 1;
                }
                continue;
            }
            let g = if stream == 0 {
                Guarantee::AtLeastOnce
            } else {
                Guarantee::ExactlyOnce
            };
            let Ok(permit) = sems[s].clone().acquire_owned().await else {
                break;
            };
            let p = p.clone();
            set.spawn(async move {
                let got = p.deliver(&r, t, g).await;
                if let Err(e) = &got {
                    eprintln!("churn: a delivery failed: {e}");
                }
                drop(permit);
                (stream, got.is_ok())
            });
        }
    }
    let mut failed = [0u64; 2];
    while let Some(Ok((stream, ok))) = set.join_next().await {
        if !ok {
            failed[usize::from(stream)] += 1;
        }
    }
    // The last at-most-once ticks land (or are lost) within this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let lost = |s: usize| (1..=sent[s]).filter(|q| !seen[s].contains_key(q)).count();
    let dup = |s: usize| seen[s].values().map(|c| u64::from(c - 1)).sum::<u64>();
    format!(
        "churn alo_sent={} alo_failed={} alo_lost={} alo_dup={} eo_sent={} eo_failed={} eo_lost={} eo_dup={} amo_sent={} amo_failed={amo_failed} amo_lost={} resent={}",
        sent[0],
        failed[0],
        lost(0),
        dup(0),
        sent[1],
        failed[1],
        lost(1),
        dup(1),
        sent[2],
        lost(2),
        p.delivery_stats()
            .resent
            .load(std::sync::atomic::Ordering::Relaxed)
    )
}

/// Runs a node taking commands on stdin until `quit` or end of input.
pub async fn run(args: PlacementNodeArgs) -> Result<()> {
    let epmd =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let cookie = std::env::var("JOERL_COOKIE").unwrap_or_else(|_| "cluster-mode-demo".into());
    let node = NodeBuilder::new(&args.name, "127.0.0.1:0".parse()?, epmd.local_addr())
        .cookie(cookie)
        .start()
        .await?;
    let d = ClusterConfig::default();
    let mut b = ClusterConfig::builder()
        .cluster_name("cluster-mode")
        .bind_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .port(0)
        .probe(
            Duration::from_millis(args.probe_ms),
            d.probe_timeout.min(Duration::from_millis(args.probe_ms)),
        );
    if let Some(s) = &args.seed {
        b = b.seeds([s.clone()]);
    }
    if let Some(e) = &args.etcd {
        b = b
            .metadata_store(joerl_dist::cluster::MetadataStoreKind::Etcd)
            .etcd_endpoints([e.clone()]);
    }
    let cluster = node.enable_clustering(b.build()?).await?;
    // Embedded, or through etcd, as the config says.
    let placements = placement::start_configured(&node).await?;
    let _reporter = metrics::report(&node, Some(&placements));
    let mgmt = Management::new(&node, &placements)?;
    let server = http::serve(
        mgmt,
        http::HttpConfig::new("127.0.0.1:0".parse()?)
            .allow_mutations(true)
            .metrics(true),
    )
    .await?;
    say(format!(
        "ready {} {} {}",
        node.name(),
        cluster.gossip_addr(),
        server.local_addr()
    ));
    let r = Running {
        node,
        placements,
        pids: Default::default(),
        churn: Default::default(),
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            break;
        }
        if let Err(e) = command(&r, &words).await {
            say(format!("{} error {e:#}", words.first().unwrap_or(&"?")));
        }
    }
    server.stop().await;
    r.node.shutdown().await;
    drop(epmd);
    say("stopped");
    Ok(())
}

fn micros(t: std::time::SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn command(r: &Running, words: &[&str]) -> Result<()> {
    match words {
        ["register", prefix, n] => {
            let n: usize = n.parse()?;
            let t = Instant::now();
            r.placements.register_many(COUNTER, ids(prefix, n)).await?;
            say(format!("register ok {n} {}", t.elapsed().as_millis()));
        }
        ["calls", prefix, n, par, ms] => {
            let (n, par, ms): (usize, usize, u64) = (n.parse()?, par.parse()?, ms.parse()?);
            let t = Instant::now();
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(par.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for id in ids(prefix, n) {
                let permit = sem.clone().acquire_owned().await?;
                let (node, p) = (r.node.clone(), r.placements.clone());
                set.spawn(async move {
                    let server: ServerRef<Counter> = ServerRef::new(p.actor::<Counter>(id));
                    let got = node
                        .call_timeout(&server, Incr, Duration::from_millis(ms))
                        .await;
                    drop(permit);
                    got
                });
            }
            let (mut ok, mut err, mut sum) = (0u64, 0u64, 0u64);
            let mut per_node: BTreeMap<String, u64> = BTreeMap::new();
            while let Some(got) = set.join_next().await {
                match got? {
                    Ok(c) => {
                        ok += 1;
                        sum += c.count;
                        *per_node.entry(c.node).or_default() += 1;
                    }
                    Err(_) => err += 1,
                }
            }
            let nodes: Vec<String> = per_node.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            say(format!(
                "calls ok={ok} err={err} sum={sum} ms={} nodes={}",
                t.elapsed().as_millis(),
                nodes.join(",")
            ));
        }
        ["local"] => say(format!("local {}", r.placements.local_activations().len())),
        ["members"] => {
            let m: Vec<String> = r.placements.members().into_iter().collect();
            say(format!("members {}", m.join(",")));
        }
        ["leader"] => match r.placements.leader() {
            Some(l) => say(format!("leader {} {}", l.node, l.epoch)),
            None => say("leader none"),
        },
        ["owner", id] => {
            let owner = r
                .placements
                .owner(r.placements.actor::<Counter>(*id).identity())?;
            say(format!("owner {owner}"));
        }
        ["count", id] => {
            let server: ServerRef<Counter> = ServerRef::new(r.placements.actor::<Counter>(*id));
            let c = r
                .node
                .call_timeout(&server, Incr, Duration::from_secs(10))
                .await
                .context("the call failed")?;
            say(format!("count {} {}", c.count, c.node));
        }
        ["activate", prefix, n] => {
            let n: usize = n.parse()?;
            let mut took: Vec<u128> = Vec::with_capacity(n);
            for id in ids(prefix, n) {
                let server: ServerRef<Counter> = ServerRef::new(r.placements.actor::<Counter>(id));
                let t = Instant::now();
                r.node
                    .call_timeout(&server, Incr, Duration::from_secs(10))
                    .await
                    .context("an activating call failed")?;
                took.push(t.elapsed().as_micros());
            }
            took.sort_unstable();
            let at = |p: f64| took[((took.len() - 1) as f64 * p) as usize];
            say(format!("activate p50_us={} p99_us={}", at(0.5), at(0.99)));
        }
        ["pids", prefix, n] => {
            let n: usize = n.parse()?;
            let mut pids = Vec::with_capacity(n);
            for id in ids(prefix, n) {
                let server: ServerRef<Counter> = ServerRef::new(r.placements.actor::<Counter>(id));
                pids.push(
                    r.node
                        .call_timeout(&server, WhoAreYou, Duration::from_secs(10))
                        .await?,
                );
            }
            *r.pids.lock().unwrap_or_else(|e| e.into_inner()) = pids;
            say(format!("pids ok {n}"));
        }
        ["blast", mode, prefix, n, k] => {
            let (n, k): (usize, usize) = (n.parse()?, k.parse()?);
            let dests: Vec<Dest> = match *mode {
                "routed" | "routed-dest" => ids(prefix, n)
                    .into_iter()
                    .map(|id| r.placements.actor::<Counter>(id).into())
                    .collect(),
                "direct" => r
                    .pids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|p| Dest::Pid(*p))
                    .collect(),
                "named" => ids(prefix, n)
                    .into_iter()
                    .map(|id| {
                        let r0 = r.placements.actor::<Counter>(id);
                        let owner = r.placements.owner(r0.identity()).expect("owner");
                        let name =
                            joerl_dist::cluster::placement::placements::placed_name(r0.identity());
                        if owner == r.node.name() {
                            Dest::Name(name)
                        } else {
                            Dest::Remote { name, node: owner }
                        }
                    })
                    .collect(),
                other => bail!("blast routed, routed-dest, direct or named, not {other}"),
            };
            if dests.is_empty() {
                bail!("no targets (run pids first)");
            }
            // By identity, through `Placements::send` (the reference is
            // not copied); `routed-dest` sends the same as a `Dest` copy.
            let refs: Vec<_> = if *mode == "routed" {
                ids(prefix, n)
                    .into_iter()
                    .map(|id| r.placements.actor::<Counter>(id))
                    .collect()
            } else {
                Vec::new()
            };
            let t = Instant::now();
            if refs.is_empty() {
                for i in 0..k {
                    r.node.send(dests[i % dests.len()].clone(), Hit).await?;
                }
            } else {
                for i in 0..k {
                    r.placements.send(&refs[i % refs.len()], Hit).await?;
                }
            }
            let s = r.placements.stats();
            say(format!(
                "blast sent={k} ms={} route_hits={} route_misses={} thread_copy_misses={} pids_learned={}",
                t.elapsed().as_millis(),
                s.route_hits.load(std::sync::atomic::Ordering::Relaxed),
                s.route_misses.load(std::sync::atomic::Ordering::Relaxed),
                s.thread_copy_misses
                    .load(std::sync::atomic::Ordering::Relaxed),
                s.pids_learned.load(std::sync::atomic::Ordering::Relaxed)
            ));
        }
        ["routecost", prefix, n, k] => {
            let (n, k): (usize, usize) = (n.parse()?, k.parse()?);
            let refs: Vec<_> = ids(prefix, n)
                .into_iter()
                .map(|id| r.placements.actor::<Counter>(id))
                .collect();
            let t = Instant::now();
            for i in 0..k {
                std::hint::black_box(r.placements.owner(refs[i % n].identity())?);
            }
            say(format!(
                "routecost ns={}",
                t.elapsed().as_nanos() / k as u128
            ));
        }
        ["churn", "start", prefix, n, secs] => {
            let (n, secs): (usize, u64) = (n.parse()?, secs.parse()?);
            let task = tokio::spawn(churn(
                r.node.clone(),
                r.placements.clone(),
                prefix.to_string(),
                n.max(1),
                secs,
            ));
            *r.churn.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            say("churn started");
        }
        ["churn", "report"] => {
            let task = r.churn.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(task) = task else {
                bail!("no churn run (churn start first)");
            };
            say(task.await?);
        }
        ["actives", prefix] => {
            let at = micros(std::time::SystemTime::now());
            let list: Vec<String> = r
                .placements
                .local_activations()
                .into_iter()
                .filter(|a| a.identity.id.starts_with(prefix))
                .map(|a| format!("{}:{}", a.identity.id, micros(a.since)))
                .collect();
            say(format!("actives {at} {}", list.join(",")));
        }
        ["storestats"] => match r.placements.store() {
            Some(s) => {
                use std::sync::atomic::Ordering::Relaxed;
                let b = s.batch_stats();
                say(format!(
                    "storestats txns={} ops_max={} created={} assignments={} provisional={} degraded={} lost={} moved={}",
                    b.txns.load(Relaxed),
                    b.ops_max.load(Relaxed),
                    b.created.load(Relaxed),
                    s.assignments(),
                    s.provisional(),
                    s.is_degraded(),
                    s.stats().lost.load(Relaxed),
                    s.stats().moved.load(Relaxed),
                ));
            }
            None => say("storestats none"),
        },
        ["routestats"] => {
            use std::sync::atomic::Ordering::Relaxed;
            let s = r.placements.stats();
            say(format!(
                "routestats hits={} misses={}",
                s.route_hits.load(Relaxed),
                s.route_misses.load(Relaxed)
            ));
        }
        ["hits"] => say(format!(
            "hits {}",
            HITS.load(std::sync::atomic::Ordering::Relaxed)
        )),
        ["owners", prefix, n] => {
            let n: usize = n.parse()?;
            let mut owners = Vec::with_capacity(n);
            for id in ids(prefix, n) {
                owners.push(
                    r.placements
                        .owner(r.placements.actor::<Counter>(id).identity())?,
                );
            }
            say(format!("owners {}", owners.join(",")));
        }
        [] => {}
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
}
