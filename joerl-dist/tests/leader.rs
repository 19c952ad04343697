//! The embedded leader on clustered nodes over TCP: the lowest active
//! member leads, every node agrees on it and its epoch; when it goes the
//! next one leads at a higher epoch and the old term is fenced; a forced
//! election is a new term; `LeaderChanged` reaches subscribers.

mod common;

use common::*;
use joerl_dist::DistributedSystem;
use joerl_dist::cluster::ClusterEvent;
use joerl_dist::cluster::placement::{EmbeddedLeader, Leader, LeaderElection, elector};

async fn member(
    name: &str,
    seed: Option<std::net::SocketAddr>,
) -> (DistributedSystem, EmbeddedLeader, joerl_epmd::EpmdServer) {
    let (node, e) = clustered(name, "leader-test", seed).await;
    let l = elector::start(&node).unwrap();
    (node, l, e)
}

async fn wait_leader(all: &[&EmbeddedLeader], node: &str) -> u64 {
    let mut epoch = 0;
    for l in all {
        wait_until(&format!("{l:?} follows {node}"), || {
            l.leader().is_some_and(|x| x.node == node)
        })
        .await;
    }
    wait_until("one epoch everywhere", || {
        let e: Vec<u64> = all
            .iter()
            .map(|l| l.leader().map_or(0, |x| x.epoch))
            .collect();
        epoch = e[0];
        e.iter().all(|x| *x == e[0])
    })
    .await;
    epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lowest_member_leads_and_a_successor_fences_it() {
    init_tracing();
    let (a, la, _ea) = member("ld_a", None).await;
    let seed = a.cluster().unwrap().gossip_addr();
    let (b, lb, _eb) = member("ld_b", Some(seed)).await;
    let mut events = b.cluster().unwrap().subscribe();
    let (c, lc, _ec) = member("ld_c", Some(seed)).await;
    let first = wait_leader(&[&la, &lb, &lc], a.name()).await;
    assert!(la.is_leader() && !lb.is_leader() && !lc.is_leader());
    assert!(lc.accepts(a.name(), first) && !lc.accepts(b.name(), first));
    // b's subscription saw the change.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("a LeaderChanged in time")
            .expect("open");
        if let ClusterEvent::LeaderChanged {
            leader: Some(l),
            epoch,
        } = e
            && l == a.name()
        {
            assert_eq!(epoch, first);
            break;
        }
    }

    // A forced election: the same leader, the next epoch, everywhere.
    lc.force_election();
    wait_until("a new term", || {
        [&la, &lb, &lc].iter().all(|l| {
            l.leader()
                == Some(Leader {
                    node: a.name().to_string(),
                    epoch: first + 1,
                })
        })
    })
    .await;
    assert!(!lb.accepts(a.name(), first), "the old term is fenced");

    // The leader goes: b leads at a higher epoch; a's term is refused.
    a.shutdown().await;
    let second = wait_leader(&[&lb, &lc], b.name()).await;
    assert!(second > first + 1, "{second}");
    assert!(!lc.accepts(a.name(), first + 1) && lc.accepts(b.name(), second));
    b.shutdown().await;
    c.shutdown().await;
}
