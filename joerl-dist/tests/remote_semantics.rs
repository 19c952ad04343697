//! Erlang semantics across OS processes: remote links, monitors, exits, calls,
//! node loss (kill -9), restarts under the same name, cross-node supervision and
//! graceful shutdown.
//!
//! Child nodes are this test binary itself, started with `--ignored --exact
//! child_node` and the environment variable `JOERL_CHILD_NODE=name`; each child is
//! a real OS process and is killed by its handle when the test ends.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use joerl_dist::gen_server::{
    CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef, spawn_server_with,
};
use joerl_dist::supervisor::{
    ChildSpec, Strategy, SupervisorSpec, spawn_supervisor, which_children,
};
use joerl_dist::{
    Actor, ActorContext, CallError, DistributedSystem, DownMessage, ExitMessage, ExitReason,
    Message, NodeDown, Pid, SpawnOptions, remote_message,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a worker reports to its observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Report {
    Exit {
        from: Pid,
        reason: ExitReason,
    },
    Down {
        pid: Pid,
        reason: ExitReason,
    },
    Stopped {
        pid: Pid,
        reason: ExitReason,
    },
    /// A worker's answer to `WorkerCmd::Ping`.
    Pong,
    /// An order checker saw all `count` numbers in order.
    InOrder {
        count: u64,
    },
    /// An order checker saw `got` where it expected `expected`.
    OutOfOrder {
        expected: u64,
        got: u64,
    },
}
remote_message!(Report, "test::Report");

/// A numbered message for the order test.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Seq(u64);
remote_message!(Seq, "test::Seq");

/// Commands a worker obeys.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum WorkerCmd {
    Link(Pid),
    Monitor(Pid),
    Stop(ExitReason),
    Exit(Pid, ExitReason),
    /// Answer `Report::Pong` to the observer: every signal that reached the
    /// worker before this message has been applied (signals go first).
    Ping,
    /// Send the command to that Pid (after whatever this worker sent before).
    Forward(Pid, Box<WorkerCmd>),
}
remote_message!(WorkerCmd, "test::WorkerCmd");

/// Calls the control server on a child node answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum CtlReq {
    /// Spawn a worker reporting to `observer`; trap exits if asked.
    Spawn {
        observer: Pid,
        trap: bool,
    },
    Add(i64, i64),
    /// Reply after this many milliseconds.
    Slow(u64),
    /// Spawn an actor that checks `count` Seq messages arrive in order.
    OrderCheck {
        observer: Pid,
        count: u64,
    },
    /// Reply with the caller the server sees.
    WhoCalls,
}
remote_message!(CtlReq, "test::CtlReq");

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CtlReply {
    Spawned(Pid),
    Sum(i64),
    Slept,
    Caller(Pid),
}
remote_message!(CtlReply, "test::CtlReply");

struct Worker {
    observer: Pid,
    trap: bool,
}

impl Actor for Worker {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.trap_exit(self.trap);
    }
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<ExitMessage>() {
            Ok(e) => {
                let _ = ctx
                    .send(
                        self.observer,
                        Report::Exit {
                            from: e.from,
                            reason: e.reason,
                        },
                    )
                    .await;
                return;
            }
            Err(m) => m,
        };
        let msg = match msg.downcast::<DownMessage>() {
            Ok(d) => {
                let _ = ctx
                    .send(
                        self.observer,
                        Report::Down {
                            pid: d.pid,
                            reason: d.reason,
                        },
                    )
                    .await;
                return;
            }
            Err(m) => m,
        };
        if let Ok(cmd) = msg.downcast::<WorkerCmd>() {
            match *cmd {
                WorkerCmd::Link(p) => ctx.link(p).unwrap(),
                WorkerCmd::Monitor(p) => {
                    ctx.monitor(p).unwrap();
                }
                WorkerCmd::Stop(r) => ctx.stop(r),
                WorkerCmd::Exit(p, r) => ctx.exit(p, r).unwrap(),
                WorkerCmd::Ping => {
                    let _ = ctx.send(self.observer, Report::Pong).await;
                }
                WorkerCmd::Forward(to, cmd) => {
                    let _ = ctx.send(to, *cmd).await;
                }
            }
        }
    }
    async fn stopped(&mut self, reason: &ExitReason, ctx: &mut ActorContext) {
        let _ = ctx
            .send(
                self.observer,
                Report::Stopped {
                    pid: ctx.pid(),
                    reason: reason.clone(),
                },
            )
            .await;
    }
}

/// Checks that Seq numbers arrive in order; reports once.
struct OrderCheck {
    observer: Pid,
    count: u64,
    next: u64,
}

impl Actor for OrderCheck {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Ok(seq) = msg.downcast::<Seq>() else {
            return;
        };
        if self.next == u64::MAX {
            return;
        }
        if seq.0 != self.next {
            let report = Report::OutOfOrder {
                expected: self.next,
                got: seq.0,
            };
            self.next = u64::MAX;
            let _ = ctx.send(self.observer, report).await;
            return;
        }
        self.next += 1;
        if self.next == self.count {
            let _ = ctx
                .send(self.observer, Report::InOrder { count: self.count })
                .await;
        }
    }
}

/// Sends `count` Seq messages to `to`, from an actor, as fast as allowed.
struct SeqSender {
    to: Pid,
    count: u64,
}

impl Actor for SeqSender {
    async fn started(&mut self, ctx: &mut ActorContext) {
        for i in 0..self.count {
            ctx.send(self.to, Seq(i)).await.expect("send");
        }
    }
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

struct Ctl;

impl Request for CtlReq {
    type Reply = CtlReply;
}

impl GenServer for Ctl {
    type Calls = (CtlReq,);
    type Casts = ();
}

impl HandleCall<CtlReq> for Ctl {
    async fn handle_call(
        &mut self,
        req: CtlReq,
        from: ReplyTo<CtlReply>,
        ctx: &mut ActorContext,
    ) -> CallResponse<CtlReply> {
        match req {
            CtlReq::Spawn { observer, trap } => {
                let pid = ctx.spawn(Worker { observer, trap });
                CallResponse::Reply(CtlReply::Spawned(pid))
            }
            CtlReq::Add(a, b) => CallResponse::Reply(CtlReply::Sum(a + b)),
            CtlReq::WhoCalls => CallResponse::Reply(CtlReply::Caller(from.caller())),
            CtlReq::OrderCheck { observer, count } => {
                let pid = ctx.spawn(OrderCheck {
                    observer,
                    count,
                    next: 0,
                });
                CallResponse::Reply(CtlReply::Spawned(pid))
            }
            CtlReq::Slow(ms) => {
                let system = ctx.system().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    from.reply(&system, CtlReply::Slept);
                });
                CallResponse::NoReply
            }
        }
    }
}

/// The body of a child node process.
#[test]
#[ignore = "runs only as a child process of the other tests"]
fn child_node() {
    let Ok(name) = std::env::var("JOERL_CHILD_NODE") else {
        return;
    };
    let epmd: SocketAddr = std::env::var("JOERL_CHILD_EPMD").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = builder(&name, epmd)
            .start()
            .await
            .expect("child node starts");
        spawn_server_with(&node, Ctl, SpawnOptions::new().name("ctl")).unwrap();
        println!("\nJOERL_READY {}", node.name());
        // Run until killed, or until stdin closes (the parent is gone).
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                if s.trim() == "shutdown" {
                    return;
                }
                s.clear();
            }
        })
        .await;
        node.shutdown().await;
    });
}

/// A child node process, killed (SIGKILL) when dropped.
struct ChildNode {
    child: Child,
    name: String,
}

impl ChildNode {
    fn start(short: &str, epmd: SocketAddr) -> ChildNode {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "child_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("JOERL_CHILD_NODE", short)
            .env("JOERL_CHILD_EPMD", epmd.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        // Wait for its ready line.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // libtest may print "test child_node ... " first on the same line.
                if let Some((_, name)) = line.split_once("JOERL_READY ") {
                    let _ = tx.send(name.trim().to_string());
                }
            }
        });
        let name = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child node ready within 60 s");
        ChildNode { child, name }
    }

    /// kill -9.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the child to shut down gracefully and waits for it to exit.
    fn shutdown(&mut self) {
        use std::io::Write;
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"shutdown\n");
            let _ = stdin.flush();
        }
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

const T: Duration = Duration::from_secs(15);

/// Starts an order checker for `count` numbered messages on the child behind
/// `ctl` and a sender of them on `a`; the returned future resolves to the
/// checker's verdict (within 2 minutes).
async fn stream_in_order(
    a: &DistributedSystem,
    ctl: Pid,
    count: u64,
) -> impl std::future::Future<Output = Report> {
    let (fwd, mut obs) = forward();
    let observer = a.spawn(fwd);
    let checker = match a
        .call_timeout(
            &ServerRef::<Ctl>::new(ctl),
            CtlReq::OrderCheck { observer, count },
            T,
        )
        .await
        .unwrap()
    {
        CtlReply::Spawned(p) => p,
        other => panic!("{other:?}"),
    };
    a.spawn(SeqSender { to: checker, count });
    async move {
        tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                let (msg, _) = obs.recv().await.expect("observer alive");
                if let Ok(r) = msg.downcast::<Report>() {
                    return *r;
                }
            }
        })
        .await
        .expect("all messages within 2 minutes")
    }
}

/// Connects to a child and resolves its control server's Pid by name.
async fn ctl(node: &DistributedSystem, child: &ChildNode) -> Pid {
    node.whereis_remote("ctl", &child.name, T)
        .await
        .expect("the child answers")
        .expect("ctl is registered")
}

async fn spawn_worker(node: &DistributedSystem, ctl: Pid, observer: Pid, trap: bool) -> Pid {
    match node
        .call_timeout(
            &ServerRef::<Ctl>::new(ctl),
            CtlReq::Spawn { observer, trap },
            T,
        )
        .await
        .unwrap()
    {
        CtlReply::Spawned(p) => p,
        other => panic!("{other:?}"),
    }
}

async fn report(rx: &mut mpsc::UnboundedReceiver<(Message, Option<Pid>)>) -> Report {
    loop {
        let (msg, _) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("report in time")
            .unwrap();
        if let Ok(r) = msg.downcast::<Report>() {
            return *r;
        }
    }
}

async fn expect_report(rx: &mut mpsc::UnboundedReceiver<(Message, Option<Pid>)>, want: Report) {
    loop {
        let r = report(rx).await;
        if r == want {
            return;
        }
    }
}

/// A local worker, observed by the returned receiver.
fn local_worker(
    node: &DistributedSystem,
    trap: bool,
) -> (Pid, mpsc::UnboundedReceiver<(Message, Option<Pid>)>) {
    let (fwd, rx) = forward();
    let observer = node.spawn(fwd);
    (node.spawn(Worker { observer, trap }), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_links_propagate_exits_both_ways_trapped_and_untrapped() {
    init_tracing();
    let epmd = epmd().await;
    let child = ChildNode::start("links_b", epmd.local_addr());
    let a = node("links_a", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;

    // Remote dies abnormally -> local untrapped worker dies with the same reason.
    let (fwd, mut obs) = forward();
    let observer = a.spawn(fwd);
    let remote = spawn_worker(&a, ctl, observer, false).await;
    let (local, mut lrx) = local_worker(&a, false);
    a.send(local, WorkerCmd::Link(remote)).await.unwrap();
    wait_until("link recorded", || {
        a.remote_relations(&child.name).map(|r| r.0) == Some(1)
    })
    .await;
    a.send(remote, WorkerCmd::Stop(ExitReason::custom("remote boom")))
        .await
        .unwrap();
    expect_report(
        &mut lrx,
        Report::Stopped {
            pid: local,
            reason: ExitReason::custom("remote boom"),
        },
    )
    .await;
    expect_report(
        &mut obs,
        Report::Stopped {
            pid: remote,
            reason: ExitReason::custom("remote boom"),
        },
    )
    .await;

    // Local dies abnormally -> remote trapping worker gets an exit message.
    let remote = spawn_worker(&a, ctl, observer, true).await;
    let (local, _lrx) = local_worker(&a, false);
    a.send(local, WorkerCmd::Link(remote)).await.unwrap();
    wait_until("link recorded", || {
        a.remote_relations(&child.name).map(|r| r.0) == Some(1)
    })
    .await;
    a.send(local, WorkerCmd::Stop(ExitReason::custom("local boom")))
        .await
        .unwrap();
    expect_report(
        &mut obs,
        Report::Exit {
            from: local,
            reason: ExitReason::custom("local boom"),
        },
    )
    .await;
    assert!(a.is_alive(remote) || a.nodes().contains(&child.name));

    // Remote exits normally -> local untrapped worker survives; trapped one is told.
    let remote = spawn_worker(&a, ctl, observer, false).await;
    let (local, mut lrx) = local_worker(&a, true);
    a.send(local, WorkerCmd::Link(remote)).await.unwrap();
    wait_until("link recorded", || {
        a.remote_relations(&child.name).map(|r| r.0) == Some(1)
    })
    .await;
    a.send(remote, WorkerCmd::Stop(ExitReason::Normal))
        .await
        .unwrap();
    expect_report(
        &mut lrx,
        Report::Exit {
            from: remote,
            reason: ExitReason::Normal,
        },
    )
    .await;
    assert!(a.is_alive(local));
    wait_until("no links left", || {
        a.remote_relations(&child.name) == Some((0, 0, 0))
    })
    .await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_monitors_exit_and_kill() {
    init_tracing();
    let epmd = epmd().await;
    let child = ChildNode::start("mon_b", epmd.local_addr());
    let a = node("mon_a", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;
    let (fwd, _obs) = forward();
    let observer = a.spawn(fwd);
    let (local, mut lrx) = local_worker(&a, false);

    // Normal exit.
    let remote = spawn_worker(&a, ctl, observer, false).await;
    a.send(local, WorkerCmd::Monitor(remote)).await.unwrap();
    wait_until("monitor recorded", || {
        a.remote_relations(&child.name).map(|r| r.1) == Some(1)
    })
    .await;
    a.send(remote, WorkerCmd::Stop(ExitReason::Normal))
        .await
        .unwrap();
    expect_report(
        &mut lrx,
        Report::Down {
            pid: remote,
            reason: ExitReason::Normal,
        },
    )
    .await;

    // exit(pid, kill) from this node: untrappable, the monitor sees `killed`.
    let remote = spawn_worker(&a, ctl, observer, true).await;
    a.send(local, WorkerCmd::Monitor(remote)).await.unwrap();
    wait_until("monitor recorded", || {
        a.remote_relations(&child.name).map(|r| r.1) == Some(1)
    })
    .await;
    a.exit(remote, ExitReason::Kill).unwrap();
    expect_report(
        &mut lrx,
        Report::Down {
            pid: remote,
            reason: ExitReason::Killed,
        },
    )
    .await;

    // A dead remote Pid: noproc at once.
    a.send(local, WorkerCmd::Monitor(remote)).await.unwrap();
    expect_report(
        &mut lrx,
        Report::Down {
            pid: remote,
            reason: ExitReason::NoProc,
        },
    )
    .await;
    wait_until("tables empty", || {
        a.remote_relations(&child.name) == Some((0, 0, 0))
    })
    .await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_calls_succeed_time_out_and_fail_with_noconnection() {
    init_tracing();
    let epmd = epmd().await;
    let mut child = ChildNode::start("call_b", epmd.local_addr());
    let a = node("call_a", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;
    match a
        .call_timeout(&ServerRef::<Ctl>::new(ctl), CtlReq::Add(2, 3), T)
        .await
        .unwrap()
    {
        CtlReply::Sum(5) => {}
        other => panic!("{other:?}"),
    }
    let err = a
        .call_timeout(
            &ServerRef::<Ctl>::new(ctl),
            CtlReq::Slow(5_000),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout), "{err:?}");
    // A call in flight when the node dies fails promptly with noconnection.
    let a2 = a.clone();
    let pending = tokio::spawn(async move {
        a2.call_timeout(
            &ServerRef::<Ctl>::new(ctl),
            CtlReq::Slow(60_000),
            Duration::from_secs(60),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed_at = std::time::Instant::now();
    child.kill();
    let err = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("prompt")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CallError::NoConnection), "{err:?}");
    assert!(killed_at.elapsed() < Duration::from_secs(30));
    a.shutdown().await;
}

/// What [`NodeUser`] saw, for the test.
#[derive(Debug)]
enum Seen {
    Ready {
        me: Pid,
        caller: Pid,
        sum: i64,
        whereis: Option<Pid>,
        nodes: Vec<String>,
    },
    Down(String),
}

/// Uses the distributed half of its context on a peer node (no
/// DistributedSystem held): watches it, looks its control server up, calls
/// it by `{name, node}`, and reports.
struct NodeUser {
    peer: String,
    out: mpsc::UnboundedSender<Seen>,
}

impl Actor for NodeUser {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor_node(&self.peer).expect("monitor_node");
        let ctl = ServerRef::<Ctl>::new(("ctl", self.peer.as_str()));
        let caller = match ctx.call(&ctl, CtlReq::WhoCalls).await.expect("call") {
            CtlReply::Caller(p) => p,
            other => panic!("{other:?}"),
        };
        let sum = match ctx.call(&ctl, CtlReq::Add(2, 3)).await.expect("call") {
            CtlReply::Sum(n) => n,
            other => panic!("{other:?}"),
        };
        let whereis = ctx.whereis("ctl", &self.peer).await.expect("whereis");
        let _ = self.out.send(Seen::Ready {
            me: ctx.pid(),
            caller,
            sum,
            whereis,
            nodes: ctx.nodes(),
        });
    }

    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(down) = msg.downcast::<NodeDown>() {
            let _ = self.out.send(Seen::Down(down.node));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_watches_looks_up_and_calls_a_node_in_another_process_from_its_context() {
    init_tracing();
    let epmd = epmd().await;
    let mut child = ChildNode::start("ctxuse_b", epmd.local_addr());
    let a = node("ctxuse_a", epmd.local_addr()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    a.spawn(NodeUser {
        peer: child.name.clone(),
        out: tx,
    });
    async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("in time")
            .expect("actor alive")
    }
    match next(&mut rx).await {
        Seen::Ready {
            me,
            caller,
            sum,
            whereis,
            nodes,
        } => {
            assert_eq!(
                caller, me,
                "the server in the other process saw the calling actor"
            );
            assert_eq!(sum, 5);
            let found = whereis.expect("ctl is registered there");
            assert_eq!(found.node(), joerl_dist::core::node_id(&child.name));
            assert_eq!(nodes, vec![child.name.clone()]);
        }
        other => panic!("{other:?}"),
    }
    child.kill();
    match next(&mut rx).await {
        Seen::Down(node) => assert_eq!(node, child.name),
        other => panic!("{other:?}"),
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_on_a_system_that_is_not_a_node_gets_a_clear_error() {
    let system = joerl_dist::ActorSystem::new();
    struct Try(mpsc::UnboundedSender<String>);
    impl Actor for Try {
        async fn started(&mut self, ctx: &mut ActorContext) {
            let e = ctx.monitor_node("b@127.0.0.1").unwrap_err();
            assert!(matches!(e, joerl_dist::core::NodeError::NotANode));
            assert!(ctx.monitor_nodes(true).is_err());
            assert!(ctx.nodes().is_empty());
            assert_eq!(ctx.node(), None);
            let _ = self.0.send(e.to_string());
        }
        async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    system.spawn(Try(tx));
    let text = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("NodeBuilder"), "{text}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_fires_noconnection_on_two_surviving_nodes_and_tables_empty() {
    init_tracing();
    let epmd = epmd().await;
    let mut victim = ChildNode::start("victim", epmd.local_addr());
    let other = ChildNode::start("survivor", epmd.local_addr());
    let a = node("observer_a", epmd.local_addr()).await;
    let vctl = ctl(&a, &victim).await;
    let sctl = ctl(&a, &other).await;
    let (fwd, mut obs) = forward();
    let observer = a.spawn(fwd);
    // On node a: a trapping worker linked to, and a worker monitoring, a victim worker.
    let target = spawn_worker(&a, vctl, observer, false).await;
    let (linked, mut lrx) = local_worker(&a, true);
    let (monitoring, mut mrx) = local_worker(&a, false);
    a.send(linked, WorkerCmd::Link(target)).await.unwrap();
    a.send(monitoring, WorkerCmd::Monitor(target))
        .await
        .unwrap();
    a.monitor_node(observer, &victim.name).unwrap();
    // On the surviving child: a trapping worker linked to the victim worker, and
    // one monitoring it; both report to `observer` on node a.
    let s_linked = spawn_worker(&a, sctl, observer, true).await;
    let s_mon = spawn_worker(&a, sctl, observer, false).await;
    a.send(s_linked, WorkerCmd::Link(target)).await.unwrap();
    a.send(s_mon, WorkerCmd::Monitor(target)).await.unwrap();
    wait_until("relations on a", || {
        a.remote_relations(&victim.name) == Some((1, 1, 0))
    })
    .await;
    // Give the survivor's signals time to reach the victim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill();
    expect_report(
        &mut lrx,
        Report::Exit {
            from: target,
            reason: ExitReason::NoConnection,
        },
    )
    .await;
    expect_report(
        &mut mrx,
        Report::Down {
            pid: target,
            reason: ExitReason::NoConnection,
        },
    )
    .await;
    let mut seen = (false, false, false);
    while seen != (true, true, true) {
        let (msg, _) = tokio::time::timeout(DEADLINE, obs.recv())
            .await
            .expect("reports")
            .unwrap();
        let msg = match msg.downcast::<NodeDown>() {
            Ok(nd) => {
                assert_eq!(nd.node, victim.name);
                seen.0 = true;
                continue;
            }
            Err(m) => m,
        };
        match *msg.downcast::<Report>().unwrap() {
            Report::Exit {
                from,
                reason: ExitReason::NoConnection,
            } if from == target => seen.1 = true,
            Report::Down {
                pid,
                reason: ExitReason::NoConnection,
            } if pid == target => seen.2 = true,
            _ => {}
        }
    }
    wait_until("a's tables toward the victim are empty", || {
        a.remote_relations(&victim.name) == Some((0, 0, 0))
    })
    .await;
    assert_eq!(a.relation_counts(linked), Some((0, 0, 0)));
    assert_eq!(a.relation_counts(monitoring), Some((0, 0, 0)));
    a.shutdown().await;
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_incarnation_pid_gives_noproc_after_restart() {
    init_tracing();
    let epmd = epmd().await;
    let mut child = ChildNode::start("phoenix", epmd.local_addr());
    let a = node("phoenix_watch", epmd.local_addr()).await;
    let ctl1 = ctl(&a, &child).await;
    let (fwd, _obs) = forward();
    let observer = a.spawn(fwd);
    let old = spawn_worker(&a, ctl1, observer, false).await;
    child.kill();
    wait_until("node down seen", || !a.nodes().contains(&child.name)).await;
    let child2 = ChildNode::start("phoenix", epmd.local_addr());
    assert_eq!(child2.name, child.name);
    let ctl2 = ctl(&a, &child2).await;
    assert_ne!(
        ctl1.creation(),
        ctl2.creation(),
        "a restarted node has a new creation"
    );
    let (local, mut lrx) = local_worker(&a, false);
    a.send(local, WorkerCmd::Monitor(old)).await.unwrap();
    expect_report(
        &mut lrx,
        Report::Down {
            pid: old,
            reason: ExitReason::NoProc,
        },
    )
    .await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_on_a_restarts_its_child_on_b() {
    init_tracing();
    let epmd = epmd().await;
    let child = ChildNode::start("sup_b", epmd.local_addr());
    let a = node("sup_a", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;
    let (fwd, _obs) = forward();
    let observer = a.spawn(fwd);
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(30))
        .child(ChildSpec::from_fn("remote_worker", move |system| {
            Box::pin(async move {
                match system
                    .call_timeout(
                        &ServerRef::<Ctl>::new(ctl),
                        CtlReq::Spawn {
                            observer,
                            trap: false,
                        },
                        T,
                    )
                    .await
                {
                    Ok(CtlReply::Spawned(pid)) => Ok(pid),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            })
        }));
    let sup = spawn_supervisor(&a, spec);
    let first = loop {
        if let Some(p) = which_children(&a, sup).await.unwrap()[0].pid {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        first.node(),
        joerl_dist::core::node_id(&child.name),
        "the child lives on node b"
    );
    a.send(first, WorkerCmd::Stop(ExitReason::custom("crash")))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(p) = which_children(&a, sup).await.unwrap()[0].pid {
            if p != first {
                assert_eq!(p.node(), first.node());
                break;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the remote child was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_seen_at_once_with_shutdown_reasons() {
    init_tracing();
    let epmd = epmd().await;
    let mut child = ChildNode::start("leaving", epmd.local_addr());
    let a = node("staying", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;
    let (fwd, mut obs) = forward();
    let observer = a.spawn(fwd);
    let remote = spawn_worker(&a, ctl, observer, false).await;
    let (local, mut lrx) = local_worker(&a, false);
    a.send(local, WorkerCmd::Monitor(remote)).await.unwrap();
    wait_until("monitor recorded", || {
        a.remote_relations(&child.name).map(|r| r.1) == Some(1)
    })
    .await;
    // The local worker's monitor signal goes out before its ping, on the same
    // connection: once the remote worker answers, the monitor is in place
    // (else a shutdown racing it answers the monitor with noproc, as Erlang
    // would).
    a.send(local, WorkerCmd::Forward(remote, Box::new(WorkerCmd::Ping)))
        .await
        .unwrap();
    expect_report(&mut obs, Report::Pong).await;
    let mut events = a.subscribe();
    let start = std::time::Instant::now();
    child.shutdown();
    // The remote actor stopped with `shutdown`, and the node-down came before any tick timeout.
    expect_report(
        &mut lrx,
        Report::Down {
            pid: remote,
            reason: ExitReason::Shutdown,
        },
    )
    .await;
    loop {
        match tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("node down")
            .unwrap()
        {
            joerl_dist::NodeEvent::Down { node, .. } if node == child.name => break,
            _ => {}
        }
    }
    assert!(start.elapsed() < a.config().tick_timeout + Duration::from_secs(2));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_between_processes_arrive_in_send_order() {
    init_tracing();
    let epmd = epmd().await;
    let child = ChildNode::start("order_b", epmd.local_addr());
    let a = node("order_a", epmd.local_addr()).await;
    let ctl = ctl(&a, &child).await;
    const N: u64 = 200_000;
    let verdict = stream_in_order(&a, ctl, N).await;
    assert_eq!(verdict.await, Report::InOrder { count: N });
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stopped_and_continued_mid_stream_loses_and_reorders_nothing() {
    init_tracing();
    let epmd = epmd().await;
    let child = ChildNode::start("stop_b", epmd.local_addr());
    // a gives up on the silent connection quickly, and mends it once the
    // child runs again.
    let a = builder("stop_a", epmd.local_addr())
        .tick_timeout(Duration::from_millis(800))
        .grace_period(Duration::from_secs(60))
        .connect_timeout(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .reconnect_attempts(10_000)
        .start()
        .await
        .unwrap();
    let mut events = a.subscribe();
    let ctl = ctl(&a, &child).await;
    const N: u64 = 300_000;
    let verdict = stream_in_order(&a, ctl, N).await;
    let sent = |a: &DistributedSystem| {
        a.stats()
            .peers
            .iter()
            .find(|p| p.node == child.name)
            .map_or(0, |p| p.msgs_out)
    };
    wait_until("a third of the stream is out", || sent(&a) >= N / 3).await;
    let pid = child.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    // Stopped for longer than a's tick timeout: a cuts the connection.
    wait_until("a has heard nothing for twice its tick timeout", || {
        a.last_heard(&child.name)
            .is_some_and(|d| d > Duration::from_millis(1600))
    })
    .await;
    signal("-CONT");
    assert_eq!(verdict.await, Report::InOrder { count: N });
    while let Some(event) = events.try_recv() {
        assert!(
            !matches!(event, joerl_dist::NodeEvent::Down { .. }),
            "no node-down for a peer that was only stopped: {event:?}"
        );
    }
    let s = a.stats().total;
    assert!(
        s.reconnects >= 1,
        "the connection was cut and mended: {s:?}"
    );
    assert_eq!(s.dropped_out, 0, "{s:?}");
    a.shutdown().await;
}
