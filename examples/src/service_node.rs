//! A cluster node driven by lines on stdin, for `service_demo`,
//! `services_bench` and the cross-process tests: it runs membership, global
//! names, process groups, the service registry and remote spawn, and
//! answers each command with one line on stdout (events come as lines too).
//!
//! Commands (one per line; `NAME` is a local actor made with `actor`):
//!
//! ```text
//! actor NAME echo|counter|slow MS|stuck      a service actor, registered here as NAME
//! kill NAME                                  kills it
//! global_register GNAME NAME | global_unregister GNAME | global_whereis GNAME
//! global_call GNAME TEXT                     an Echo call to the global name
//! pg_join GROUP NAME | pg_leave GROUP NAME | pg_members GROUP | pg_monitor GROUP
//! service_register SVC NAME [k=v ...] | service_deregister SVC NAME
//! service_resolve SVC | service_watch SVC
//! service_call SVC STRATEGY TIMEOUT_MS [idempotent]
//! service_calls SVC STRATEGY COUNT TIMEOUT_MS [idempotent]
//! service_flow SVC STRATEGY MS [idempotent]  calls one after another for MS
//! spawn_on NODE worker|panics|bad ARG        a remote spawn (`bad` sends wrong args)
//! spawn_on_kind NODE KIND                    a remote spawn of a kind by name
//! spawn_link_on NODE worker ARG              linked, trapping exits; its exit is printed
//! await_global GNAME | await_pg GROUP        prints `seen_global|seen_pg NAME UNIX_NS` once visible
//! partition ADDR,ADDR|none                  drops gossip with these members (none: heals)
//! members | quit
//! ```
//!
//! Lines printed: `ready NAME GOSSIP_ADDR`, then one answer per command
//! starting with the command's name, and events: `exit NAME REASON`,
//! `conflict GNAME OTHER`, `pg_event GROUP joined|left PIDS`,
//! `service_event SVC registered|deregistered PIDS`, `linked_exit PID REASON`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use joerl_dist::cluster::global::{
    self, ConflictResolver, Global, GlobalNameConflict, GlobalOptions,
};
use joerl_dist::cluster::pg::{self, Pg, PgEvent};
use joerl_dist::cluster::service::{self, CallOptions, ServiceEvent, Services, Strategy};
use joerl_dist::cluster::spawn::{self, Spawnable};
use joerl_dist::cluster::{Cluster, ClusterConfig};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::{
    Actor, ActorContext, Dest, DistributedSystem, DownMessage, ExitMessage, ExitReason, Message,
    NodeBuilder, Pid, spawnable,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// Prints one line at once (stdout is line-buffered).
fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// An echo request: the instance answers with the text, its node and Pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo(pub String);
impl Request for Echo {
    type Reply = EchoReply;
}

/// The answer to [`Echo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoReply {
    /// The text sent.
    pub text: String,
    /// The node that answered.
    pub node: String,
    /// The instance that answered.
    pub pid: Pid,
}

/// Adds to a counter; the answer is the new total.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub u64);
impl Request for Add {
    type Reply = u64;
}

/// What a [`ServiceActor`] does with an [`Echo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers at once.
    Echo,
    /// Answers after a pause.
    Slow(Duration),
    /// Never answers.
    Stuck,
}

/// The actor behind the example services: an echo and a counter in one
/// gen_server.
pub struct ServiceActor {
    /// Its local name (for the lines it prints).
    pub name: String,
    /// How it answers echoes.
    pub behaviour: Behaviour,
    /// The counter.
    pub count: u64,
    /// Replies never given (`Stuck`), kept so callers time out.
    held: Vec<ReplyTo<EchoReply>>,
}

impl ServiceActor {
    /// A new instance.
    pub fn new(name: impl Into<String>, behaviour: Behaviour) -> Self {
        ServiceActor {
            name: name.into(),
            behaviour,
            count: 0,
            held: Vec::new(),
        }
    }
}

impl GenServer for ServiceActor {
    type Calls = (Echo, Add);
    type Casts = ();

    async fn handle_info(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Some(c) = msg.downcast_ref::<GlobalNameConflict>() {
            say(format!("conflict {} {} {}", c.name, self.name, c.other));
        }
    }
}

impl HandleCall<Echo> for ServiceActor {
    async fn handle_call(
        &mut self,
        req: Echo,
        from: ReplyTo<EchoReply>,
        ctx: &mut ActorContext,
    ) -> CallResponse<EchoReply> {
        match self.behaviour {
            Behaviour::Stuck => {
                self.held.push(from);
                return CallResponse::NoReply;
            }
            Behaviour::Slow(d) => tokio::time::sleep(d).await,
            Behaviour::Echo => {}
        }
        CallResponse::Reply(EchoReply {
            text: req.0,
            node: ctx.node().unwrap_or("").to_string(),
            pid: ctx.pid(),
        })
    }
}

impl HandleCall<Add> for ServiceActor {
    async fn handle_call(
        &mut self,
        req: Add,
        _from: ReplyTo<u64>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<u64> {
        self.count += req.0;
        CallResponse::Reply(self.count)
    }
}
joerl_dist::remote_server!(ServiceActor);

/// A remotely spawnable worker: lives until killed; `Panics` panics in
/// `started` and `Exits` stops with a custom reason after `started`.
pub struct Worker(pub WorkerArgs);

/// What a [`Worker`] does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum WorkerArgs {
    /// Stays.
    Stay(u32),
    /// Panics in `started`.
    Panics,
    /// Stops with `custom: done N` at its first message.
    ExitsOnMessage(u32),
}

impl Actor for Worker {
    async fn started(&mut self, _ctx: &mut ActorContext) {
        if let WorkerArgs::Panics = self.0 {
            panic!("a worker that panics in started");
        }
    }

    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        if let WorkerArgs::ExitsOnMessage(n) = self.0 {
            ctx.stop(ExitReason::custom(format!("done {n}")));
        }
    }
}

impl Spawnable for Worker {
    type Args = WorkerArgs;
    fn from_args(args: WorkerArgs) -> Self {
        Worker(args)
    }
}
spawnable!(Worker, "joerl_examples::Worker");

/// Prints the exits of the actors made with `actor` and of linked remote
/// spawns.
struct ExitPrinter {
    names: HashMap<Pid, String>,
}

/// Watch this actor (local only).
struct Watch(Pid, String);

impl Actor for ExitPrinter {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.trap_exit(true);
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        joerl_dist::receive!(msg, {
            Watch as w => {
                let _ = ctx.monitor(w.0);
                self.names.insert(w.0, w.1);
            },
            DownMessage as d => {
                if let Some(n) = self.names.remove(&d.pid) {
                    say(format!("exit {n} {}", d.reason));
                }
            },
            ExitMessage as e => {
                if e.reason == ExitReason::Shutdown && e.from.node() == ctx.pid().node() {
                    // The node shuts down: trapping exits must not keep it waiting.
                    ctx.stop(ExitReason::Shutdown);
                } else {
                    say(format!("linked_exit {} {}", e.from, e.reason));
                }
            },
            Link as l => {
                // Spawned linked to this actor by `spawn_link_on`.
                let node = l.node.clone();
                let arg = l.arg;
                match spawn::spawn_link_on::<Worker>(ctx, &node, WorkerArgs::ExitsOnMessage(arg)).await {
                    Ok(pid) => {
                        say(format!("spawn_link_on ok {pid}"));
                        let _ = ctx.send(pid, ()).await;
                    }
                    Err(e) => say(format!("spawn_link_on error {e}")),
                }
            },
            else _other => {},
        })
    }
}

/// Ask the exit printer to spawn a linked worker.
struct Link {
    node: String,
    arg: u32,
}

/// Prints the group and service events it receives.
struct EventPrinter;

fn pids(ps: &[Pid]) -> String {
    let mut v: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    v.sort();
    v.join(",")
}

impl Actor for EventPrinter {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        joerl_dist::receive!(msg, {
            PgEvent as e => match e {
                PgEvent::Joined { group, pids: p } => say(format!("pg_event {group} joined {}", pids(&p))),
                PgEvent::Left { group, pids: p } => say(format!("pg_event {group} left {}", pids(&p))),
            },
            ServiceEvent as e => match e {
                ServiceEvent::Registered { service, pids: p } => {
                    say(format!("service_event {service} registered {}", pids(&p)))
                }
                ServiceEvent::Deregistered { service, pids: p } => {
                    say(format!("service_event {service} deregistered {}", pids(&p)))
                }
            },
            else _other => {},
        })
    }
}

/// How a node of these examples starts.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Its name (`NAME` or `NAME@host`).
    pub name: String,
    /// A seed's gossip address (`host:port`).
    pub seed: Option<String>,
    /// The gossip port (0: any free one).
    pub gossip_port: u16,
    /// What a global name conflict does to its loser.
    pub resolver: String,
    /// Membership probe interval, if not the default.
    pub probe_ms: Option<u64>,
}

/// One running node with every cluster service.
pub struct ServiceNode {
    /// The node.
    pub node: DistributedSystem,
    /// Its membership.
    pub cluster: Cluster,
    /// Global names.
    pub global: Global,
    /// The default pg scope.
    pub pg: Pg,
    /// The service registry.
    pub services: Services,
    /// Its own EPMD (only gossip tells members where the others are).
    _epmd: joerl_epmd::EpmdServer,
}

/// Starts a node as `setup` says, with clustering and every service.
pub async fn start(setup: &NodeSetup) -> Result<ServiceNode> {
    let epmd =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let cookie = std::env::var("JOERL_COOKIE").unwrap_or_else(|_| "service-demo".into());
    let node = NodeBuilder::new(&setup.name, "127.0.0.1:0".parse()?, epmd.local_addr())
        .cookie(cookie)
        .start()
        .await?;
    let mut b = ClusterConfig::builder()
        .cluster_name("service-demo")
        .port(setup.gossip_port);
    if let Some(ms) = setup.probe_ms {
        let d = ClusterConfig::default();
        b = b.probe(
            Duration::from_millis(ms),
            d.probe_timeout.min(Duration::from_millis(ms)),
        );
    }
    if let Some(s) = &setup.seed {
        b = b.seeds([s.clone()]);
    }
    let cluster = node.enable_clustering(b.build()?).await?;
    let resolver = match setup.resolver.as_str() {
        "exit" => ConflictResolver::ExitLoser,
        "notify" => ConflictResolver::NotifyAll,
        other => bail!("unknown resolver {other:?} (exit or notify)"),
    };
    let global = global::start(
        &node,
        GlobalOptions {
            resolver,
            ..GlobalOptions::default()
        },
    )?;
    let pg = pg::start(&node, pg::DEFAULT_SCOPE)?;
    let services = service::start(&node)?;
    Ok(ServiceNode {
        node,
        cluster,
        global,
        pg,
        services,
        _epmd: epmd,
    })
}

fn strategy(s: &str) -> Result<Strategy> {
    Ok(match s {
        "round_robin" => Strategy::RoundRobin,
        "random" => Strategy::Random,
        "least_outstanding" => Strategy::LeastOutstanding,
        "prefer_local" => Strategy::PreferLocal,
        other => bail!("unknown strategy {other:?}"),
    })
}

fn call_options(strategy_name: &str, timeout_ms: &str, rest: &[&str]) -> Result<CallOptions> {
    let mut o = CallOptions::timeout(Duration::from_millis(timeout_ms.parse()?))
        .strategy(strategy(strategy_name)?);
    if rest.contains(&"idempotent") {
        o = o.idempotent();
    }
    Ok(o)
}

/// Runs a node taking commands on stdin until `quit` or end of input.
pub async fn run(setup: NodeSetup) -> Result<()> {
    let n = start(&setup).await.context("the node does not start")?;
    let printer = n.node.spawn(ExitPrinter {
        names: HashMap::new(),
    });
    let events = n.node.spawn(EventPrinter);
    say(format!(
        "ready {} {}",
        n.node.name(),
        n.cluster.gossip_addr()
    ));
    let mut actors: HashMap<String, Pid> = HashMap::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            break;
        }
        if let Err(e) = command(&n, &words, &mut actors, printer, events).await {
            say(format!("{} error {e:#}", words.first().unwrap_or(&"?")));
        }
    }
    n.node.shutdown().await;
    say("stopped");
    Ok(())
}

async fn command(
    n: &ServiceNode,
    words: &[&str],
    actors: &mut HashMap<String, Pid>,
    printer: Pid,
    events: Pid,
) -> Result<()> {
    let actor = |name: &str| -> Result<Pid> {
        actors
            .get(name)
            .copied()
            .with_context(|| format!("no actor {name}"))
    };
    match words {
        ["actor", name, kind, rest @ ..] => {
            let behaviour = match (*kind, rest) {
                ("echo" | "counter", _) => Behaviour::Echo,
                ("slow", [ms]) => Behaviour::Slow(Duration::from_millis(ms.parse()?)),
                ("stuck", _) => Behaviour::Stuck,
                _ => bail!("unknown actor kind {kind}"),
            };
            let server = joerl_dist::gen_server::spawn_server_with(
                &n.node,
                ServiceActor::new(*name, behaviour),
                joerl_dist::SpawnOptions::new().name(*name),
            )?;
            let pid = server.pid().expect("spawned by Pid");
            n.node.send(printer, Watch(pid, name.to_string())).await?;
            actors.insert(name.to_string(), pid);
            say(format!("actor {name} {pid}"));
        }
        ["kill", name] => {
            n.node.exit(actor(name)?, ExitReason::Kill)?;
            say(format!("kill {name} ok"));
        }
        ["global_register", g, name] => match n.global.register(g, actor(name)?).await {
            Ok(()) => say(format!("global_register {g} ok")),
            Err(e) => say(format!("global_register {g} error {e}")),
        },
        ["global_unregister", g] => match n.global.unregister(g).await {
            Ok(()) => say(format!("global_unregister {g} ok")),
            Err(e) => say(format!("global_unregister {g} error {e}")),
        },
        ["global_whereis", g] => match n.global.whereis(g) {
            Some(p) => say(format!("global_whereis {g} {p}")),
            None => say(format!("global_whereis {g} none")),
        },
        ["global_call", g, text] => {
            let s: ServerRef<ServiceActor> = ServerRef::new(Dest::global(*g));
            match n.node.call(&s, Echo(text.to_string())).await {
                Ok(r) => say(format!("global_call {g} {} {} {}", r.text, r.node, r.pid)),
                Err(e) => say(format!("global_call {g} error {e}")),
            }
        }
        ["pg_join", g, name] => {
            n.pg.join(g, &[actor(name)?]).await?;
            say(format!("pg_join {g} ok"));
        }
        ["pg_leave", g, name] => {
            n.pg.leave(g, &[actor(name)?]).await?;
            say(format!("pg_leave {g} ok"));
        }
        ["pg_members", g] => {
            let m = n.pg.members(g);
            say(format!("pg_members {g} {} {}", m.len(), pids(&m)));
        }
        ["pg_monitor", g] => {
            let now = n.pg.monitor(g, events).await?;
            say(format!("pg_monitor {g} {}", now.len()));
        }
        ["service_register", s, name, kv @ ..] => {
            let mut md = BTreeMap::new();
            for pair in kv {
                let (k, v) = pair.split_once('=').context("metadata is key=value")?;
                md.insert(k.to_string(), v.to_string());
            }
            n.services.register(s, actor(name)?, md).await?;
            say(format!("service_register {s} ok"));
        }
        ["service_deregister", s, name] => {
            n.services.deregister(s, actor(name)?).await?;
            say(format!("service_deregister {s} ok"));
        }
        ["service_resolve", s] => {
            let all = n.services.resolve(s).await;
            say(format!("service_resolve {s} {}", all.len()));
            for i in all {
                let md: Vec<String> = i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                say(format!(
                    "instance {s} {} {} health={} {}",
                    i.pid,
                    i.node,
                    i.health.map_or("unknown".to_string(), |h| format!("{h:?}")),
                    md.join(" ")
                ));
            }
        }
        ["service_watch", s] => {
            let now = n.services.watch(s, events).await?;
            say(format!("service_watch {s} {}", now.len()));
        }
        ["service_call", s, strat, timeout, rest @ ..] => {
            let o = call_options(strat, timeout, rest)?;
            match n
                .services
                .call::<ServiceActor, _>(s, Echo("hi".into()), o)
                .await
            {
                Ok(r) => say(format!("service_call {s} ok {}", r.pid)),
                Err(e) => say(format!("service_call {s} error {}", error_kind(&e))),
            }
        }
        ["service_calls", s, strat, count, timeout, rest @ ..] => {
            let o = call_options(strat, timeout, rest)?;
            let count: usize = count.parse()?;
            let mut by: BTreeMap<Pid, usize> = BTreeMap::new();
            let mut failed = 0;
            for _ in 0..count {
                match n
                    .services
                    .call::<ServiceActor, _>(s, Echo("hi".into()), o)
                    .await
                {
                    Ok(r) => *by.entry(r.pid).or_default() += 1,
                    Err(_) => failed += 1,
                }
            }
            let by: Vec<String> = by.iter().map(|(p, c)| format!("{p}={c}")).collect();
            say(format!(
                "service_calls {s} ok={} failed={failed} {}",
                count - failed,
                by.join(",")
            ));
        }
        ["service_flow", s, strat, ms, rest @ ..] => {
            // Runs in the background so the test can kill a node meanwhile.
            let o = call_options(strat, "5000", rest)?;
            let until = Instant::now() + Duration::from_millis(ms.parse()?);
            let services = n.services.clone();
            let s = s.to_string();
            say(format!("service_flow {s} started"));
            tokio::spawn(async move {
                let start = Instant::now();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut last_at: BTreeMap<Pid, u128> = BTreeMap::new();
                let mut by: BTreeMap<Pid, u64> = BTreeMap::new();
                while Instant::now() < until {
                    match services
                        .call::<ServiceActor, _>(&s, Echo("flow".into()), o)
                        .await
                    {
                        Ok(r) => {
                            ok += 1;
                            last_at.insert(r.pid, start.elapsed().as_millis());
                            *by.entry(r.pid).or_default() += 1;
                        }
                        Err(e) => {
                            failed += 1;
                            say(format!("service_flow_error {s} {}", error_kind(&e)));
                        }
                    }
                }
                let last: Vec<String> = last_at.iter().map(|(p, t)| format!("{p}@{t}")).collect();
                let by: Vec<String> = by.iter().map(|(p, c)| format!("{p}={c}")).collect();
                say(format!(
                    "service_flow {s} done ok={ok} failed={failed} by={} last={}",
                    by.join(","),
                    last.join(",")
                ));
            });
        }
        ["spawn_on", node, kind, arg] => {
            let r = match *kind {
                "worker" => {
                    spawn::spawn_on::<Worker>(&n.node, node, WorkerArgs::Stay(arg.parse()?)).await
                }
                "panics" => spawn::spawn_on::<Worker>(&n.node, node, WorkerArgs::Panics).await,
                "bad" => {
                    spawn::spawn_on_kind(&n.node, node, "joerl_examples::Worker", vec![0xff; 3])
                        .await
                }
                other => bail!("unknown spawn kind {other}"),
            };
            match r {
                Ok(p) => say(format!("spawn_on ok {p}")),
                Err(e) => say(format!("spawn_on error {e:?}")),
            }
        }
        ["spawn_on_kind", node, kind] => {
            match spawn::spawn_on_kind(&n.node, node, kind, Vec::new()).await {
                Ok(p) => say(format!("spawn_on_kind ok {p}")),
                Err(e) => say(format!("spawn_on_kind error {e:?}")),
            }
        }
        ["spawn_link_on", node, "worker", arg] => {
            n.node
                .send(
                    printer,
                    Link {
                        node: node.to_string(),
                        arg: arg.parse()?,
                    },
                )
                .await?;
        }
        ["await_global", g] => {
            // Polled every millisecond; the time it was seen, by the wall clock.
            let global = n.global.clone();
            let g = g.to_string();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while global.whereis(&g).is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                say(format!("seen_global {g} {}", unix_ns()));
            });
        }
        ["await_pg", g] => {
            let pg = n.pg.clone();
            let g = g.to_string();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                while pg.members(&g).is_empty() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                say(format!("seen_pg {g} {}", unix_ns()));
            });
        }
        ["partition", addrs] => {
            let far: Vec<std::net::SocketAddr> = if *addrs == "none" {
                Vec::new()
            } else {
                addrs
                    .split(',')
                    .map(|a| a.parse())
                    .collect::<Result<_, _>>()?
            };
            n.cluster.block_gossip(far);
            say(format!("partition {addrs}"));
        }
        ["members"] => {
            let mut m: Vec<String> = n
                .cluster
                .members()
                .iter()
                .map(|m| format!("{}:{:?}", m.name, m.state))
                .collect();
            m.sort();
            say(format!("members {} {}", m.len(), m.join(",")));
        }
        _ => bail!("unknown command {:?}", words.join(" ")),
    }
    Ok(())
}

/// Now, by the wall clock, in ns since the Unix epoch (the node processes
/// of one machine share it).
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A short word for a service error, then its text.
fn error_kind(e: &service::ServiceError) -> String {
    use service::ServiceError as E;
    let kind = match e {
        E::Timeout { .. } => "timeout",
        E::NoInstance { .. } => "no_instance",
        E::Call { .. } => "call",
        _ => "other",
    };
    format!("{kind}: {e}")
}

/// A node process started from an example (this same program with its
/// `node` subcommand): its stdin, and its stdout lines as they come.
pub struct ChildNode {
    /// The node's name.
    pub name: String,
    /// Its gossip address, from its `ready` line.
    pub gossip: String,
    /// The words of its `ready` line after the gossip address.
    pub ready_rest: Vec<String>,
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Lines read while looking for another one, oldest first (bounded).
    backlog: std::collections::VecDeque<String>,
}

impl ChildNode {
    /// Starts `program node --name NAME [--seed SEED] extra...` and waits
    /// for its `ready` line.
    pub async fn start(name: &str, seed: Option<&str>, extra: &[&str]) -> Result<ChildNode> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.arg("node").arg("--name").arg(name);
        if let Some(s) = seed {
            cmd.arg("--seed").arg(s);
        }
        cmd.args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut proc = cmd.spawn().context("cannot start a node process")?;
        let stdin = proc.stdin.take().expect("piped");
        let stdout = proc.stdout.take().expect("piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut c = ChildNode {
            name: name.to_string(),
            gossip: String::new(),
            ready_rest: Vec::new(),
            proc,
            stdin,
            lines,
            backlog: std::collections::VecDeque::new(),
        };
        let ready = c.expect("ready ", Duration::from_secs(60)).await?;
        let mut w = ready.split_whitespace().skip(1);
        c.name = w.next().unwrap_or(name).to_string();
        c.gossip = w.next().unwrap_or("").to_string();
        c.ready_rest = w.map(str::to_string).collect();
        Ok(c)
    }

    /// Writes a command line.
    pub async fn tell(&mut self, line: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Writes a command and waits for the line that starts with `answer`.
    pub async fn ask(&mut self, line: &str, answer: &str) -> Result<String> {
        self.tell(line).await?;
        self.expect(answer, Duration::from_secs(60)).await
    }

    /// The first line not taken yet that starts with `prefix`, within
    /// `limit` (other lines stay for later calls, up to 10,000).
    pub async fn expect(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        if let Some(i) = self.backlog.iter().position(|l| l.starts_with(prefix)) {
            return Ok(self.backlog.remove(i).expect("found"));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => bail!("{}: no {prefix:?} line within {limit:?}", self.name),
                Ok(None) => bail!("{}: the node stopped before {prefix:?}", self.name),
                Ok(Some(l)) if l.starts_with(prefix) => return Ok(l),
                Ok(Some(l)) => {
                    if self.backlog.len() == 10_000 {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(l);
                }
            }
        }
    }

    /// Every line not taken yet, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self.backlog.drain(..).collect();
        while let Ok(l) = self.lines.try_recv() {
            out.push(l);
        }
        out
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<()> {
        self.proc.kill().await?;
        Ok(())
    }

    /// Asks the node to quit and waits for its exit.
    pub async fn quit(mut self) -> Result<()> {
        let _ = self.tell("quit").await;
        match tokio::time::timeout(Duration::from_secs(30), self.proc.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.proc.kill().await?,
        }
        Ok(())
    }

    /// The process's id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.id()
    }
}

/// The `node` subcommand's options (for the examples' command lines).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's name.
    #[arg(long)]
    pub name: String,
    /// A seed's gossip address.
    #[arg(long)]
    pub seed: Option<String>,
    /// The gossip port (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub gossip_port: u16,
    /// What a global name conflict does to its loser: exit or notify.
    #[arg(long, default_value = "exit")]
    pub resolver: String,
    /// Membership probe interval in ms (default: membership's).
    #[arg(long)]
    pub probe_ms: Option<u64>,
}

impl NodeArgs {
    /// The setup these options describe.
    pub fn setup(&self) -> NodeSetup {
        NodeSetup {
            name: self.name.clone(),
            seed: self.seed.clone(),
            gossip_port: self.gossip_port,
            resolver: self.resolver.clone(),
            probe_ms: self.probe_ms,
        }
    }
}
