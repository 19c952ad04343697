//! Process groups across three nodes over TCP: joins and leaves seen
//! everywhere, only local processes join, monitors get changes in order, and
//! a member's exit or its node's end removes it everywhere.

mod common;

use common::*;
use joerl_dist::cluster::pg::{self, PgError, PgEvent};
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, Pid};

struct Idle;
impl Actor for Idle {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

/// Waits until `g` has exactly `want` (in any order) in `pg`'s view.
async fn wait_group(on: &str, pg: &pg::Pg, g: &str, want: &[Pid]) {
    let mut want = want.to_vec();
    want.sort();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut got = pg.members(g);
        got.sort();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{on}: group {g} is {got:?}, not {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn connect_all(nodes: &[&DistributedSystem]) {
    for a in nodes {
        for b in nodes {
            if a.name() != b.name() {
                a.connect(b.name()).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_seen_on_every_node_and_clean_up_after_exits_and_node_loss() {
    init_tracing();
    let e = epmd().await;
    let a = node("pg_a", e.local_addr()).await;
    let b = node("pg_b", e.local_addr()).await;
    let c = node("pg_c", e.local_addr()).await;
    connect_all(&[&a, &b, &c]).await;
    let (pa, pb, pc) = (
        pg::start(&a, pg::DEFAULT_SCOPE).unwrap(),
        pg::start(&b, pg::DEFAULT_SCOPE).unwrap(),
        pg::start(&c, pg::DEFAULT_SCOPE).unwrap(),
    );
    // A watcher on c sees every change of "workers", in order.
    let (fwd, mut changes) = forward();
    let watcher = c.spawn(fwd);
    assert!(pc.monitor("workers", watcher).await.unwrap().is_empty());

    let (a1, a2, b1) = (a.spawn(Idle), a.spawn(Idle), b.spawn(Idle));
    pa.join("workers", &[a1, a2]).await.unwrap();
    pb.join("workers", &[b1]).await.unwrap();
    for (on, p) in [("a", &pa), ("b", &pb), ("c", &pc)] {
        wait_group(on, p, "workers", &[a1, a2, b1]).await;
    }
    assert_eq!(pc.which_groups(), ["workers"]);
    let mut local = pa.local_members("workers");
    local.sort();
    assert_eq!(local, {
        let mut v = vec![a1, a2];
        v.sort();
        v
    });
    assert!(pc.local_members("workers").is_empty());
    // A node joins only its own processes.
    assert_eq!(pa.join("workers", &[b1]).await, Err(PgError::NotLocal(b1)));
    assert!(matches!(
        pb.leave("workers", &[b.spawn(Idle)]).await,
        Err(PgError::NotJoined { .. })
    ));

    // Leave, then an exit: gone everywhere, the group still there.
    pa.leave("workers", &[a2]).await.unwrap();
    for (on, p) in [("a", &pa), ("b", &pb), ("c", &pc)] {
        wait_group(on, p, "workers", &[a1, b1]).await;
    }
    a.exit(a1, joerl_dist::ExitReason::Kill).unwrap();
    for (on, p) in [("a", &pa), ("b", &pb), ("c", &pc)] {
        wait_group(on, p, "workers", &[b1]).await;
    }
    // b's node goes: its members with it; an empty group does not exist.
    b.shutdown().await;
    for (on, p) in [("a", &pa), ("c", &pc)] {
        wait_group(on, p, "workers", &[]).await;
        assert!(p.which_groups().is_empty(), "{on}");
    }

    // The watcher saw, in order: a1 and a2 join (one event), b1 join, a2
    // leave, a1 leave, b1 leave (the first two joins may come in either
    // order: they are from two nodes).
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let (e, _): (PgEvent, _) = recv(&mut changes).await;
        seen.push(e);
    }
    let joined = |pids: &[Pid]| PgEvent::Joined {
        group: "workers".into(),
        pids: pids.to_vec(),
    };
    let left = |pids: &[Pid]| PgEvent::Left {
        group: "workers".into(),
        pids: pids.to_vec(),
    };
    assert!(seen[..2].contains(&joined(&[a1, a2])), "{seen:?}");
    assert!(seen[..2].contains(&joined(&[b1])), "{seen:?}");
    assert_eq!(seen[2..], [left(&[a2]), left(&[a1]), left(&[b1])]);
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_later_learns_the_groups() {
    init_tracing();
    let e = epmd().await;
    let a = node("pgl_a", e.local_addr()).await;
    let pa = pg::start(&a, "jobs").unwrap();
    let a1 = a.spawn(Idle);
    pa.join("queue", &[a1]).await.unwrap();
    let b = node("pgl_b", e.local_addr()).await;
    let pb = pg::start(&b, "jobs").unwrap();
    // A scope of another name on a does not mix in.
    let other = pg::start(&a, pg::DEFAULT_SCOPE).unwrap();
    other.join("queue", &[a.spawn(Idle)]).await.unwrap();
    b.connect(a.name()).await.unwrap();
    wait_group("b", &pb, "queue", &[a1]).await;
    let b1 = b.spawn(Idle);
    pb.join("queue", &[b1]).await.unwrap();
    wait_group("a", &pa, "queue", &[a1, b1]).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_started_after_connecting_exchange_joins_made_during_the_handshake() {
    init_tracing();
    let e = epmd().await;
    let a = node("pgh_a", e.local_addr()).await;
    let b = node("pgh_b", e.local_addr()).await;
    a.connect(b.name()).await.unwrap();
    let pa = pg::start(&a, pg::DEFAULT_SCOPE).unwrap();
    let (a1, a2) = (a.spawn(Idle), a.spawn(Idle));
    pa.join("g", &[a1]).await.unwrap();
    // b's scope starts after the connection (a's node-up discovery found
    // none), and joins come on both sides while they discover each other.
    let pb = pg::start(&b, pg::DEFAULT_SCOPE).unwrap();
    pa.join("g", &[a2]).await.unwrap();
    let b1 = b.spawn(Idle);
    pb.join("g", &[b1]).await.unwrap();
    wait_group("a", &pa, "g", &[a1, a2, b1]).await;
    wait_group("b", &pb, "g", &[a1, a2, b1]).await;
    // Joined twice, left once: still a member, once.
    pb.join("g", &[b1]).await.unwrap();
    pb.leave("g", &[b1]).await.unwrap();
    wait_group("a", &pa, "g", &[a1, a2, b1]).await;
    wait_group("b", &pb, "g", &[a1, a2, b1]).await;
    a.shutdown().await;
    b.shutdown().await;
}
