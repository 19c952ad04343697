//! Remote spawn between two nodes over real TCP: a registered kind started
//! on the other node, each typed error, and `spawn_link_on` with exits both
//! ways.

mod common;

use common::*;
use joerl_dist::cluster::spawn::{
    RemoteSpawnError, Spawnable, serve, spawn_link_on, spawn_on, spawn_on_kind,
};
use joerl_dist::{Actor, ActorContext, ExitMessage, ExitReason, Message, Pid, spawnable};
use serde::{Deserialize, Serialize};

/// Answers `Ask` with its argument plus the asked number.
struct Adder(u32);

#[derive(Debug, Serialize, Deserialize)]
struct Ask(u32);
joerl_dist::remote_message!(Ask, "remote_spawn_test::Ask");

#[derive(Debug, Serialize, Deserialize)]
struct Sum(u32);
joerl_dist::remote_message!(Sum, "remote_spawn_test::Sum");

impl Actor for Adder {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let (Ok(a), Some(from)) = (msg.downcast::<Ask>(), ctx.sender()) {
            let _ = ctx.send(from, Sum(self.0 + a.0)).await;
        }
    }
}

impl Spawnable for Adder {
    type Args = u32;
    fn from_args(n: u32) -> Self {
        Adder(n)
    }
}
spawnable!(Adder, "remote_spawn_test::Adder");

/// Holds big arguments; panics in `from_args` on an empty one.
struct Big;

impl Actor for Big {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

impl Spawnable for Big {
    type Args = Vec<u8>;
    fn from_args(bytes: Vec<u8>) -> Self {
        assert!(!bytes.is_empty(), "no bytes");
        Big
    }
}
spawnable!(Big, "remote_spawn_test::Big");

/// Panics in `started`.
struct Crasher;

impl Actor for Crasher {
    async fn started(&mut self, _ctx: &mut ActorContext) {
        panic!("told to crash while starting");
    }
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

impl Spawnable for Crasher {
    type Args = ();
    fn from_args(_: ()) -> Self {
        Crasher
    }
}
spawnable!(Crasher, "remote_spawn_test::Crasher");

/// Stops with the reason it is sent.
struct Quitter;

#[derive(Debug, Serialize, Deserialize)]
struct Quit(String);
joerl_dist::remote_message!(Quit, "remote_spawn_test::Quit");

impl Actor for Quitter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Ok(q) = msg.downcast::<Quit>() {
            ctx.stop(ExitReason::Custom(q.0));
        }
    }
}

impl Spawnable for Quitter {
    type Args = ();
    fn from_args(_: ()) -> Self {
        Quitter
    }
}
spawnable!(Quitter, "remote_spawn_test::Quitter");

/// Traps exits, spawns a linked `Quitter` on `node` when started, and
/// forwards the result and every exit it gets.
struct Parent {
    node: String,
    out: tokio::sync::mpsc::UnboundedSender<Result<Pid, RemoteSpawnError>>,
    exits: tokio::sync::mpsc::UnboundedSender<ExitMessage>,
}

impl Actor for Parent {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.trap_exit(true);
        let r = spawn_link_on::<Quitter>(ctx, &self.node, ()).await;
        let _ = self.out.send(r);
    }
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        match msg.downcast::<ExitMessage>() {
            Ok(e) => {
                let _ = self.exits.send(*e);
            }
            Err(msg) => {
                if let Ok(q) = msg.downcast::<Quit>() {
                    ctx.stop(ExitReason::Custom(q.0));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_kind_starts_on_the_other_node_and_each_failure_is_typed() {
    init_tracing();
    let e = epmd().await;
    let a = node("spawn_a", e.local_addr()).await;
    let b = node("spawn_b", e.local_addr()).await;
    // b does not serve remote spawns yet.
    assert_eq!(
        spawn_on::<Adder>(&a, b.name(), 1).await,
        Err(RemoteSpawnError::NotServing(b.name().to_string()))
    );
    serve(&b).unwrap();
    let pid = spawn_on::<Adder>(&a, b.name(), 40).await.unwrap();
    assert_eq!(pid.node(), joerl_dist::core::node_id(b.name()), "runs on b");
    let (fwd, mut rx) = forward();
    let me = a.spawn(fwd);
    a.send_from(Some(me), pid, Ask(2)).await.unwrap();
    let (Sum(n), _): (Sum, _) = recv(&mut rx).await;
    assert_eq!(n, 42);

    assert_eq!(
        spawn_on_kind(&a, b.name(), "no::such::Kind", Vec::new()).await,
        Err(RemoteSpawnError::UnknownKind {
            node: b.name().to_string(),
            kind: "no::such::Kind".to_string()
        })
    );
    assert!(matches!(
        spawn_on_kind(&a, b.name(), "remote_spawn_test::Adder", vec![0xff; 3]).await,
        Err(RemoteSpawnError::BadArgs { kind, .. }) if kind == "remote_spawn_test::Adder"
    ));
    match spawn_on::<Crasher>(&a, b.name(), ()).await {
        Err(RemoteSpawnError::StartFailed { kind, reason, .. }) => {
            assert_eq!(kind, "remote_spawn_test::Crasher");
            assert!(
                matches!(&reason, ExitReason::Panic(m) if m.contains("told to crash")),
                "{reason:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Arguments over the 1 MiB of control items, within max_message_memory.
    assert!(
        spawn_on::<Big>(&a, b.name(), vec![7u8; 2 << 20])
            .await
            .is_ok()
    );
    // A from_args that panics is an error, and the server keeps serving.
    assert!(matches!(
        spawn_on::<Big>(&a, b.name(), Vec::new()).await,
        Err(RemoteSpawnError::BadArgs { reason, .. }) if reason.contains("no bytes")
    ));
    assert!(spawn_on::<Adder>(&a, b.name(), 1).await.is_ok());
    // A node nobody runs.
    assert!(matches!(
        spawn_on::<Adder>(&a, "nobody@127.0.0.1", 1).await,
        Err(RemoteSpawnError::NodeDown { node, .. }) if node == "nobody@127.0.0.1"
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_link_on_links_both_ways_across_nodes() {
    init_tracing();
    let e = epmd().await;
    let a = node("slink_a", e.local_addr()).await;
    let b = node("slink_b", e.local_addr()).await;
    serve(&b).unwrap();
    let start_parent = |a: &joerl_dist::DistributedSystem| {
        let (out, got) = tokio::sync::mpsc::unbounded_channel();
        let (exits, exited) = tokio::sync::mpsc::unbounded_channel();
        let parent = a.spawn(Parent {
            node: b.name().to_string(),
            out,
            exits,
        });
        (parent, got, exited)
    };
    // The child exits: the trapping parent gets its reason.
    let (_parent, mut got, mut exited) = start_parent(&a);
    let child = tokio::time::timeout(DEADLINE, got.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until("b holds the link", || {
        b.relation_counts(child)
            .is_some_and(|(links, _, _)| links == 1)
    })
    .await;
    a.send(child, Quit("done here".into())).await.unwrap();
    let exit = tokio::time::timeout(DEADLINE, exited.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.from, child);
    assert_eq!(exit.reason, ExitReason::Custom("done here".into()));

    // The parent exits: the child, not trapping, goes with it.
    let (parent, mut got, _exited) = start_parent(&a);
    let child = tokio::time::timeout(DEADLINE, got.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until("b holds the link", || {
        b.relation_counts(child)
            .is_some_and(|(links, _, _)| links == 1)
    })
    .await;
    a.send(parent, Quit("parent leaves".into())).await.unwrap();
    wait_until("the child exited with its parent", || {
        b.relation_counts(child).is_none()
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Spawns a monitored `Quitter` on `node` when started; forwards the result
/// and the down.
struct Watcher {
    node: String,
    out: tokio::sync::mpsc::UnboundedSender<Result<Pid, RemoteSpawnError>>,
    downs: tokio::sync::mpsc::UnboundedSender<joerl_dist::DownMessage>,
}

impl Actor for Watcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        let r = joerl_dist::cluster::spawn::spawn_monitor_on::<Quitter>(ctx, &self.node, ())
            .await
            .map(|(pid, _)| pid);
        let _ = self.out.send(r);
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(d) = msg.downcast::<joerl_dist::DownMessage>() {
            let _ = self.downs.send(*d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_monitor_on_reports_the_remote_actors_exit_reason() {
    init_tracing();
    let e = epmd().await;
    let a = node("smon_a", e.local_addr()).await;
    let b = node("smon_b", e.local_addr()).await;
    serve(&b).unwrap();
    let (out, mut got) = tokio::sync::mpsc::unbounded_channel();
    let (downs, mut downed) = tokio::sync::mpsc::unbounded_channel();
    a.spawn(Watcher {
        node: b.name().to_string(),
        out,
        downs,
    });
    let child = tokio::time::timeout(DEADLINE, got.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until("b holds the monitor", || {
        b.relation_counts(child).is_some_and(|(_, by, _)| by == 1)
    })
    .await;
    a.send(child, Quit("finished".into())).await.unwrap();
    let down = tokio::time::timeout(DEADLINE, downed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down.pid, child);
    assert_eq!(down.reason, ExitReason::Custom("finished".into()));
    a.shutdown().await;
    b.shutdown().await;
}
