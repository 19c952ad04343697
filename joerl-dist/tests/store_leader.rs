//! Leader election through the metadata store (`cluster::store::leader`)
//! against a real etcd started by each test: one leader among three nodes,
//! the next takes over when it stops (later epoch), and a leader cut off
//! from the store (a TCP proxy between it and etcd stops forwarding) stops
//! leading before the store elects another: never two leaders at once.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use joerl_dist::cluster::placement::{Leader, LeaderElection};
use joerl_dist::cluster::store::MetadataStore;
use joerl_dist::cluster::store::etcd::{EtcdOptions, EtcdStore};
use joerl_dist::cluster::store::leader::{StoreLeader, StoreLeaderOptions};
use joerl_dist::cluster::store::local_etcd::LocalEtcd;

async fn store(endpoint: String) -> Arc<dyn MetadataStore> {
    let mut o = EtcdOptions::new([endpoint]);
    o.request_timeout = Duration::from_secs(1);
    o.connect_timeout = Duration::from_secs(1);
    Arc::new(EtcdStore::connect(o).await.expect("connects"))
}

fn options() -> StoreLeaderOptions {
    StoreLeaderOptions {
        election: "test/leader".into(),
        ttl: Duration::from_secs(2),
        poll: Duration::from_millis(100),
    }
}

/// The leader every one of `all` accepts, once they agree.
async fn agreed(all: &[&StoreLeader]) -> Leader {
    wait_until("every node accepts the same leader", || {
        let first = all[0].leader();
        first.is_some() && all.iter().all(|l| l.leader() == first)
    })
    .await;
    all[0].leader().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_among_three_and_the_next_takes_over_when_it_stops() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let e = epmd().await;
    let mut nodes = Vec::new();
    let mut leaders = Vec::new();
    for name in ["sl_a", "sl_b", "sl_c"] {
        let n = node(name, e.local_addr()).await;
        leaders.push(StoreLeader::start(&n, store(etcd.endpoint()).await, options()).unwrap());
        nodes.push(n);
    }
    let all: Vec<&StoreLeader> = leaders.iter().collect();
    let first = agreed(&all).await;
    assert_eq!(
        leaders.iter().filter(|l| l.is_leader()).count(),
        1,
        "exactly one counts itself leader"
    );
    let i = nodes.iter().position(|n| n.name() == first.node).unwrap();
    assert!(leaders[i].accepts(&first.node, first.epoch));
    assert!(!leaders[(i + 1) % 3].accepts(&first.node, first.epoch + 1));

    // The leader stops: one of the others leads, at a later epoch.
    leaders[i].stop().await;
    let rest: Vec<&StoreLeader> = (0..3).filter(|j| *j != i).map(|j| &leaders[j]).collect();
    wait_until("a new leader", || {
        rest[0].leader().is_some_and(|l| l.node != first.node)
    })
    .await;
    let second = agreed(&rest).await;
    assert_ne!(second.node, first.node);
    assert!(second.epoch > first.epoch, "{second:?} after {first:?}");
    assert!(
        !rest[0].accepts(&first.node, first.epoch),
        "the old leader's epoch is refused"
    );

    // force_election from a member that does not lead deposes the leader.
    let j = nodes.iter().position(|n| n.name() == second.node).unwrap();
    let other = (0..3).find(|k| *k != i && *k != j).unwrap();
    leaders[other].force_election();
    wait_until("the forced election ends the term", || {
        leaders[other]
            .leader()
            .is_some_and(|l| l.epoch > second.epoch)
    })
    .await;

    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_store_stops_leading_before_another_starts() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let proxy = Proxy::start(etcd.client_addr()).await;
    let e = epmd().await;
    let a = node("slc_a", e.local_addr()).await;
    let b = node("slc_b", e.local_addr()).await;
    // A reaches etcd through the proxy only, and leads first.
    let la =
        StoreLeader::start(&a, store(format!("http://{}", proxy.addr)).await, options()).unwrap();
    wait_until("a leads", || la.is_leader()).await;
    let old = la.leader().unwrap();
    let lb = StoreLeader::start(&b, store(etcd.endpoint()).await, options()).unwrap();
    wait_until("b accepts a", || lb.leader().as_ref() == Some(&old)).await;

    // The partition: A's connection to etcd stops forwarding.
    proxy.freeze(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut a_stopped = None;
    loop {
        let (a_leads, b_leads) = (la.is_leader(), lb.is_leader());
        assert!(!(a_leads && b_leads), "two leaders at once");
        if !a_leads && a_stopped.is_none() {
            a_stopped = Some(std::time::Instant::now());
        }
        if b_leads {
            assert!(a_stopped.is_some(), "b leads while a still does");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = lb.leader().unwrap();
    assert!(new.epoch > old.epoch, "{new:?} after {old:?}");
    assert!(
        la.stats().terms_lapsed.load(Ordering::Relaxed) >= 1,
        "a counted its lapsed term"
    );
    assert!(!lb.accepts(&old.node, old.epoch), "the old term is fenced");

    // Healed: A follows the new leader and does not lead.
    proxy.freeze(false);
    wait_until("a accepts b", || la.leader().as_ref() == Some(&new)).await;
    assert!(!la.is_leader());

    a.shutdown().await;
    b.shutdown().await;
}
