//! Global names across three nodes over TCP: one winner among concurrent
//! registrations, the taken-name error naming the holder, names gone
//! everywhere after an exit or a node's end, conflicts between nodes that
//! registered apart resolved by the documented rule and the resolver, and
//! global names and groups as addresses.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use joerl_dist::cluster::global::{
    self, ConflictResolver, GlobalError, GlobalNameConflict, GlobalOptions,
};
use joerl_dist::cluster::pg;
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::{
    Actor, ActorContext, CallError, Dest, DistributedSystem, DownMessage, ExitReason, GroupDest,
    Message, Pick, Pid, SendError,
};
use serde::{Deserialize, Serialize};

struct Idle;
impl Actor for Idle {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

/// Answers `Who` with its own Pid.
struct Whoami;
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Who;
impl Request for Who {
    type Reply = Pid;
}
impl GenServer for Whoami {
    type Calls = (Who,);
    type Casts = ();
}
impl HandleCall<Who> for Whoami {
    async fn handle_call(
        &mut self,
        _req: Who,
        _from: ReplyTo<Pid>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Pid> {
        CallResponse::Reply(ctx.pid())
    }
}
joerl_dist::remote_server!(Whoami);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note(u32);
joerl_dist::remote_message!(Note, "test::global::Note");

async fn connect_all(nodes: &[&DistributedSystem]) {
    for a in nodes {
        for b in nodes {
            if a.name() != b.name() {
                a.connect(b.name()).await.unwrap();
            }
        }
    }
}

async fn wait_whereis(on: &str, g: &global::Global, name: &str, want: Option<Pid>) {
    wait_until(&format!("{on} sees {name} at {want:?}"), || {
        g.whereis(name) == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_unique_across_three_nodes_and_goes_with_its_process_and_node() {
    init_tracing();
    let e = epmd().await;
    let a = node("gl_a", e.local_addr()).await;
    let b = node("gl_b", e.local_addr()).await;
    let c = node("gl_c", e.local_addr()).await;
    connect_all(&[&a, &b, &c]).await;
    let ga = global::start(&a, GlobalOptions::default()).unwrap();
    let gb = global::start(&b, GlobalOptions::default()).unwrap();
    let gc = global::start(&c, GlobalOptions::default()).unwrap();
    assert!(matches!(
        global::start(&a, GlobalOptions::default()),
        Err(global::StartGlobalError::AlreadyStarted)
    ));
    // The servers find each other: a registration on one waits for the
    // others' grants, so wait until each knows two peers' names by probing.
    let probe = a.spawn(Idle);
    ga.register("probe", probe).await.unwrap();
    wait_whereis("b", &gb, "probe", Some(probe)).await;
    wait_whereis("c", &gc, "probe", Some(probe)).await;

    // Three nodes race for one name, twenty times: one wins each time.
    for round in 0..20 {
        let name = format!("leader{round}");
        let (pa, pb, pc) = (a.spawn(Idle), b.spawn(Idle), c.spawn(Idle));
        let (ra, rb, rc) = tokio::join!(
            ga.register(&name, pa),
            gb.register(&name, pb),
            gc.register(&name, pc)
        );
        let results = [(ra, pa), (rb, pb), (rc, pc)];
        let winners: Vec<Pid> = results
            .iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        for (r, _) in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, GlobalError::Taken { holder, .. } if *holder == winner),
                    "round {round}: {e:?}"
                );
            }
        }
        for (on, g) in [("a", &ga), ("b", &gb), ("c", &gc)] {
            wait_whereis(on, g, &name, Some(winner)).await;
        }
    }

    // Taken: the error names the holder and its node.
    let holder = joerl_dist::gen_server::spawn_server(&b, Whoami)
        .pid()
        .unwrap();
    gb.register("jobs", holder).await.unwrap();
    wait_whereis("a", &ga, "jobs", Some(holder)).await;
    let other = a.spawn(Idle);
    assert_eq!(
        ga.register("jobs", other).await,
        Err(GlobalError::Taken {
            name: "jobs".into(),
            holder,
            node: b.name().to_string()
        })
    );
    // Registering again what one holds is fine; another node's process is not ours.
    gb.register("jobs", holder).await.unwrap();
    assert_eq!(
        ga.register("mine", holder).await,
        Err(GlobalError::NotLocal(holder))
    );

    // A global name is an address: send and call from any node.
    let who: ServerRef<Whoami> = ServerRef::new(Dest::global("jobs"));
    assert_eq!(c.call(&who, Who).await.unwrap(), holder);
    assert_eq!(a.call(&who, Who).await.unwrap(), holder);
    assert!(matches!(
        c.send(Dest::global("nobody"), Note(1)).await,
        Err(SendError::GlobalNotRegistered(n)) if n == "nobody"
    ));
    // A call to a name nothing holds is noproc, as for a local name.
    let nobody: ServerRef<Whoami> = ServerRef::new(Dest::global("nobody"));
    assert!(matches!(c.call(&nobody, Who).await, Err(CallError::NoProc)));
    // A dead process cannot be registered.
    let dead = a.spawn(Idle);
    a.exit(dead, ExitReason::Kill).unwrap();
    wait_until("the process is gone", || !a.is_alive(dead)).await;
    assert_eq!(
        ga.register("dead", dead).await,
        Err(GlobalError::NoProc(dead))
    );

    // Unregistered from another node: gone everywhere.
    gc.unregister("jobs").await.unwrap();
    for (on, g) in [("a", &ga), ("b", &gb), ("c", &gc)] {
        wait_whereis(on, g, "jobs", None).await;
    }
    assert_eq!(
        gc.unregister("jobs").await,
        Err(GlobalError::NotRegistered("jobs".into()))
    );

    // The holder exits: gone everywhere.
    let short = c.spawn(Idle);
    gc.register("short", short).await.unwrap();
    wait_whereis("a", &ga, "short", Some(short)).await;
    c.exit(short, ExitReason::Kill).unwrap();
    for (on, g) in [("a", &ga), ("b", &gb), ("c", &gc)] {
        wait_whereis(on, g, "short", None).await;
    }

    // The holder's node goes: its names go everywhere.
    let on_b = b.spawn(Idle);
    gb.register("on_b", on_b).await.unwrap();
    wait_whereis("c", &gc, "on_b", Some(on_b)).await;
    b.shutdown().await;
    for (on, g) in [("a", &ga), ("c", &gc)] {
        wait_whereis(on, g, "on_b", None).await;
    }
    // ... and the name is free again.
    let again = c.spawn(Idle);
    gc.register("on_b", again).await.unwrap();
    wait_whereis("a", &ga, "on_b", Some(again)).await;
    a.shutdown().await;
    c.shutdown().await;
}

/// Registers `x` on two unconnected nodes, the one on the first node first.
async fn registered_apart(
    prefix: &str,
    resolver: ConflictResolver,
) -> (
    joerl_epmd::EpmdServer,
    DistributedSystem,
    DistributedSystem,
    global::Global,
    global::Global,
    Pid,
    Pid,
) {
    let e = epmd().await;
    let a = node(&format!("{prefix}_a"), e.local_addr()).await;
    let b = node(&format!("{prefix}_b"), e.local_addr()).await;
    let opts = GlobalOptions {
        resolver,
        ..GlobalOptions::default()
    };
    let ga = global::start(&a, opts.clone()).unwrap();
    let gb = global::start(&b, opts).unwrap();
    let (fa, _) = forward();
    let (fb, _) = forward();
    let first = a.spawn(fa);
    ga.register("x", first).await.unwrap();
    // The later registration loses (the registering nodes' clocks: one
    // machine here, so a pause makes the order certain).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = b.spawn(fb);
    gb.register("x", second).await.unwrap();
    (e, a, b, ga, gb, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_keeps_the_older_registration_and_the_loser_exits() {
    init_tracing();
    let (_e, a, b, ga, gb, first, second) =
        registered_apart("glx", ConflictResolver::ExitLoser).await;
    let (fwd, mut downs) = forward();
    let watcher = b.spawn(fwd);
    b.spawn(WatchDown(second, watcher));
    // The monitor is set before the nodes meet.
    let (_ready, _): (Note, _) = recv(&mut downs).await;
    a.connect(b.name()).await.unwrap();
    wait_whereis("a", &ga, "x", Some(first)).await;
    wait_whereis("b", &gb, "x", Some(first)).await;
    let (reason, _): (ExitReason, _) = recv(&mut downs).await;
    assert_eq!(reason, global::conflict_exit_reason("x"));
    assert!(a.is_alive(first));
    a.shutdown().await;
    b.shutdown().await;
}

/// Monitors a process (the first) and tells the second its exit reason.
struct WatchDown(Pid, Pid);
impl Actor for WatchDown {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.0).unwrap();
        let _ = ctx.send(self.1, Note(0)).await;
    }
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Ok(d) = msg.downcast::<DownMessage>() {
            let _ = ctx.send(self.1, d.reason).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_all_unregisters_both_and_tells_both_and_a_custom_resolver_runs_on_the_losers_node()
{
    init_tracing();
    let e = epmd().await;
    let a = node("gln_a", e.local_addr()).await;
    let b = node("gln_b", e.local_addr()).await;
    let opts = GlobalOptions {
        resolver: ConflictResolver::NotifyAll,
        ..GlobalOptions::default()
    };
    let ga = global::start(&a, opts.clone()).unwrap();
    let gb = global::start(&b, opts).unwrap();
    let (fa, mut ra) = forward();
    let (fb, mut rb) = forward();
    let (pa, pb) = (a.spawn(fa), b.spawn(fb));
    ga.register("x", pa).await.unwrap();
    gb.register("x", pb).await.unwrap();
    a.connect(b.name()).await.unwrap();
    let (ca, _): (GlobalNameConflict, _) = recv(&mut ra).await;
    let (cb, _): (GlobalNameConflict, _) = recv(&mut rb).await;
    assert_eq!((ca.name.as_str(), ca.other), ("x", pb));
    assert_eq!((cb.name.as_str(), cb.other), ("x", pa));
    wait_whereis("a", &ga, "x", None).await;
    wait_whereis("b", &gb, "x", None).await;
    a.shutdown().await;
    b.shutdown().await;

    // A custom resolver: called once, on the loser's node, with both.
    type Seen = Vec<(String, Pid, Pid, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let resolver = ConflictResolver::Custom(Arc::new(move |c, system| {
        s.lock().unwrap().push((
            c.name.clone(),
            c.winner.pid,
            c.loser.pid,
            system.node_name().unwrap_or("").to_string(),
        ));
    }));
    let (_e, a, b, ga, gb, first, second) = registered_apart("glc", resolver).await;
    a.connect(b.name()).await.unwrap();
    wait_whereis("a", &ga, "x", Some(first)).await;
    wait_whereis("b", &gb, "x", Some(first)).await;
    wait_until("the resolver ran", || !seen.lock().unwrap().is_empty()).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [("x".to_string(), first, second, b.name().to_string())]
    );
    // The loser is not killed by a custom resolver that does not.
    assert!(b.is_alive(second));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_an_address_for_all_members_or_one_picked() {
    init_tracing();
    let e = epmd().await;
    let a = node("glg_a", e.local_addr()).await;
    let b = node("glg_b", e.local_addr()).await;
    connect_all(&[&a, &b]).await;
    let pa = pg::start(&a, "work").unwrap();
    let pb = pg::start(&b, "work").unwrap();
    let (f1, mut r1) = forward();
    let (f2, mut r2) = forward();
    let (m1, m2) = (a.spawn(f1), b.spawn(f2));
    pa.join("g", &[m1]).await.unwrap();
    pb.join("g", &[m2]).await.unwrap();
    wait_until("a sees both members", || pa.members("g").len() == 2).await;
    // To all: each member gets its copy, across nodes too.
    let all = GroupDest::new("g").scope("work");
    a.send(all.clone(), Note(7)).await.unwrap();
    let (n1, _): (Note, _) = recv(&mut r1).await;
    let (n2, _): (Note, _) = recv(&mut r2).await;
    assert_eq!((n1.0, n2.0), (7, 7));
    // A type not registered for the wire cannot be copied for two members.
    #[derive(Debug)]
    struct Local;
    assert!(matches!(
        a.send(all.clone(), Local).await,
        Err(SendError::NotCopyable(_))
    ));
    // Round robin: both in two sends; prefer local: this node's member.
    let rr = all.clone().pick(Pick::RoundRobin);
    a.send(rr.clone(), Note(1)).await.unwrap();
    a.send(rr, Note(2)).await.unwrap();
    let (x, _): (Note, _) = recv(&mut r1).await;
    let (y, _): (Note, _) = recv(&mut r2).await;
    assert_eq!(x.0 + y.0, 3);
    for i in 0..5 {
        b.send(all.clone().pick(Pick::PreferLocal), Note(10 + i))
            .await
            .unwrap();
        let (n, _): (Note, _) = recv(&mut r2).await;
        assert_eq!(n.0, 10 + i);
    }
    // An empty group and a scope that does not run here are errors.
    assert!(matches!(
        a.send(GroupDest::new("none").scope("work"), Note(0)).await,
        Err(SendError::EmptyGroup { .. })
    ));
    assert!(matches!(
        a.send(GroupDest::new("g").scope("elsewhere"), Note(0))
            .await,
        Err(SendError::NoNameService(_))
    ));
    a.shutdown().await;
    b.shutdown().await;
}
