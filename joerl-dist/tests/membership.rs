//! Membership attached to nodes: dist addresses learned from gossip (the
//! nodes use separate EPMDs, so EPMD cannot find them), a member that SWIM
//! declares failed made `noconnection` although its TCP connection is up,
//! and a partition of gossip that heals into one cluster again.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use joerl_dist::cluster::{ClusterConfig, ClusterError, ClusterEvent, ClusterHealth, MemberState};
use joerl_dist::{
    Actor, ActorContext, DistributedSystem, DownMessage, ExitReason, Message, NodeDownReason,
    NodeEvent, Pid,
};

fn config() -> ClusterConfig {
    ClusterConfig::builder()
        .cluster_name("membership-test")
        .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(0)
        .probe(Duration::from_millis(200), Duration::from_millis(80))
        .gossip_interval(Duration::from_millis(50))
        .announce_interval(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// Monitors `target` when started and forwards its downs.
struct Watch(Pid, tokio::sync::mpsc::UnboundedSender<DownMessage>);

impl Actor for Watch {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.0).unwrap();
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(d) = msg.downcast::<DownMessage>() {
            let _ = self.1.send(*d);
        }
    }
}

async fn next_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Message, Option<Pid>)>,
) -> ClusterEvent {
    let (e, _): (ClusterEvent, _) = recv(rx).await;
    e
}

async fn wait_members(node: &DistributedSystem, others: &[&str]) {
    let cluster = node.cluster().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut active: Vec<String> = cluster
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.name)
            .collect();
        active.sort();
        if active == others {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sees {active:?}, not {others:?}",
            node.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_each_other_through_gossip_and_a_failed_member_is_noconnection() {
    init_tracing();
    // Two EPMDs: neither node can find the other through EPMD.
    let (epmd_a, epmd_b) = (epmd().await, epmd().await);
    let a = builder("memb_a", epmd_a.local_addr())
        .start()
        .await
        .unwrap();
    let b = builder("memb_b", epmd_b.local_addr())
        .start()
        .await
        .unwrap();
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    b.register("sink", sink).unwrap();
    // Without membership, a cannot reach b.
    assert!(a.connect(b.name()).await.is_err());
    assert!(matches!(a.cluster(), Err(ClusterError::NotEnabled)));

    let ca = a.enable_clustering(config()).await.unwrap();
    assert!(matches!(
        a.enable_clustering(config()).await,
        Err(ClusterError::AlreadyEnabled)
    ));
    let cb = b.enable_clustering(config()).await.unwrap();
    // An actor on a receives the membership changes as messages.
    let (watch_fwd, mut changes) = forward();
    ca.monitor_members(&a, a.spawn(watch_fwd));
    assert_eq!(
        ca.health(),
        ClusterHealth {
            healthy: true,
            active: 1,
            total: 1,
            suspected: 0
        }
    );
    assert_eq!(ca.self_member().state, MemberState::Active);
    let seed = ca.gossip_addr().to_string();
    // A member that is its own seed skips itself.
    assert_eq!(ca.join(&[seed.as_str()]).await.unwrap(), 0);
    assert_eq!(ca.self_member().state, MemberState::Active);
    assert_eq!(cb.join(&[seed]).await.unwrap(), 1);
    wait_members(&a, &[b.name()]).await;
    assert!(matches!(
        next_event(&mut changes).await,
        ClusterEvent::MemberJoined(m) if m.name == b.name()
    ));
    assert!(matches!(
        next_event(&mut changes).await,
        ClusterEvent::MemberUp(m) if m.name == b.name() && m.dist_addr == b.local_addr()
    ));
    assert_eq!(ca.health().active, 2);
    assert_eq!(cb.self_member().state, MemberState::Active);
    assert_eq!(ca.member(b.name()).unwrap().state, MemberState::Active);
    assert!(matches!(
        ca.member("nobody@127.0.0.1"),
        Err(ClusterError::NodeNotFound(_))
    ));
    // A named send from a now finds b by its gossiped dist address.
    a.send(("sink", b.name()), 42u32).await.unwrap();
    let (n, _): (u32, _) = recv(&mut rx).await;
    assert_eq!(n, 42);

    // Gossip between them stops (their TCP connection stays up): a's SWIM
    // declares b failed, and a makes that a node down.
    let (tx, mut downs) = tokio::sync::mpsc::unbounded_channel();
    a.spawn(Watch(sink, tx));
    wait_until("the monitor reached b", || {
        b.relation_counts(sink).is_some_and(|c| c != (0, 0, 0))
    })
    .await;
    let mut node_events = a.subscribe();
    cb.block_gossip(vec![ca.gossip_addr()]);
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("the failed member is noconnection in time")
        .unwrap();
    assert_eq!(down.reason, ExitReason::NoConnection);
    loop {
        match tokio::time::timeout(DEADLINE, node_events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            NodeEvent::Down { node, reason } => {
                assert_eq!(node, b.name());
                // Both sides lost gossip: a's membership disconnected b, or
                // b's disconnected a first and a saw the connection close.
                // Either way membership, not TCP, ended a healthy connection.
                assert!(
                    matches!(&reason, NodeDownReason::Disconnected(why) if why.contains("membership"))
                        || matches!(&reason, NodeDownReason::ConnectionClosed),
                    "{reason:?}"
                );
                break;
            }
            NodeEvent::Up { .. } => continue,
        }
    }
    // Suspicion first (it never stopped traffic), then the failure (a
    // suspicion refuted on the way, on a loaded machine, is no part of it).
    let mut seen = Vec::new();
    loop {
        match next_event(&mut changes).await {
            ClusterEvent::MemberSuspected(m) => seen.push(format!("suspected {}", m.name)),
            ClusterEvent::MemberRecovered(_) => seen.clear(),
            ClusterEvent::MemberFailed(m) => {
                seen.push(format!("failed {}", m.name));
                break;
            }
            other => panic!("{other:?} after {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            format!("suspected {}", b.name()),
            format!("failed {}", b.name())
        ]
    );
    let lost_majority = ClusterHealth {
        healthy: false,
        active: 1,
        total: 2,
        suspected: 0,
    };
    assert_eq!(
        next_event(&mut changes).await,
        ClusterEvent::HealthChanged(lost_majority)
    );
    assert_eq!(ca.health(), lost_majority);
    assert_eq!(ca.member(b.name()).unwrap().state, MemberState::Failed);

    // The partition heals: each side announces to the member it holds
    // failed, b learns it was declared down and rejoins under its next
    // incarnation, and a sees it up again.
    cb.block_gossip(Vec::new());
    loop {
        match next_event(&mut changes).await {
            ClusterEvent::MemberUp(m) => {
                assert_eq!(m.name, b.name());
                assert_eq!(m.incarnation, 1, "a new incarnation");
                break;
            }
            ClusterEvent::HealthChanged(_)
            | ClusterEvent::MemberSuspected(_)
            | ClusterEvent::MemberRecovered(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    wait_members(&a, &[b.name()]).await;
    wait_members(&b, &[a.name()]).await;
    assert!(ca.health().healthy);
    a.send(("sink", b.name()), 43u32).await.unwrap();
    let (n, _): (u32, _) = recv(&mut rx).await;
    assert_eq!(n, 43);

    // A graceful leave is Left, not Failed.
    cb.leave().await;
    assert_eq!(cb.self_member().state, MemberState::Left);
    loop {
        match next_event(&mut changes).await {
            ClusterEvent::MemberLeft(m) => {
                assert_eq!(m.name, b.name());
                break;
            }
            ClusterEvent::HealthChanged(_)
            | ClusterEvent::MemberSuspected(_)
            | ClusterEvent::MemberRecovered(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ca.member(b.name()).unwrap().state, MemberState::Left);
    assert_eq!(ca.health().total, 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// Two groups of two lose gossip between them (each side holds the other
/// failed, both keep their majority-less view), then the network heals and
/// they are one cluster of four again. With `connect_all`, members are
/// connected as they come up, before any send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_two_groups_heals_into_one_cluster() {
    init_tracing();
    let epmd = epmd().await;
    let mut nodes = Vec::new();
    for name in ["grp_a", "grp_b", "grp_c", "grp_d"] {
        let config = ClusterConfig::builder()
            .cluster_name("partition-test")
            .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(0)
            .probe(Duration::from_millis(200), Duration::from_millis(80))
            .gossip_interval(Duration::from_millis(50))
            .announce_interval(Duration::from_millis(500))
            .connect_all(true)
            .build()
            .unwrap();
        let (node, _) = builder(name, epmd.local_addr())
            .start_clustered(config)
            .await
            .unwrap();
        nodes.push(node);
    }
    let seed = nodes[0].cluster().unwrap().gossip_addr().to_string();
    for n in &nodes[1..] {
        n.cluster().unwrap().join(&[seed.as_str()]).await.unwrap();
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
    let others = |i: usize| -> Vec<&str> {
        let mut v: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.as_str())
            .collect();
        v.sort();
        v
    };
    for (i, n) in nodes.iter().enumerate() {
        wait_members(n, &others(i)).await;
    }
    // connect_all: every member is connected without a send.
    for (i, n) in nodes.iter().enumerate() {
        let want = others(i);
        wait_until("connected to every member", || {
            let mut got = n.nodes();
            got.sort();
            got == want
        })
        .await;
    }
    let gossip: Vec<_> = nodes
        .iter()
        .map(|n| n.cluster().unwrap().gossip_addr())
        .collect();
    // {a, b} | {c, d}
    for (i, n) in nodes.iter().enumerate() {
        let far: Vec<_> = if i < 2 {
            gossip[2..].to_vec()
        } else {
            gossip[..2].to_vec()
        };
        n.cluster().unwrap().block_gossip(far);
    }
    for (i, n) in nodes.iter().enumerate() {
        let far = if i < 2 { [2, 3] } else { [0, 1] };
        let cluster = n.cluster().unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !far
            .iter()
            .all(|&j| cluster.member(&names[j]).map(|m| m.state).ok() == Some(MemberState::Failed))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never held the far side failed: {:?}",
                names[i],
                cluster.members()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let h = cluster.health();
        assert_eq!((h.active, h.total, h.healthy), (2, 4, false));
    }
    for n in &nodes {
        n.cluster().unwrap().block_gossip(Vec::new());
    }
    for (i, n) in nodes.iter().enumerate() {
        wait_members(n, &others(i)).await;
        assert!(n.cluster().unwrap().health().healthy);
    }
    // A node's shutdown leaves the cluster: the others see it Left.
    let last = nodes.pop().unwrap();
    let name = last.name().to_string();
    last.shutdown().await;
    for n in &nodes {
        let cluster = n.cluster().unwrap();
        wait_until("the stopped node is Left", || {
            cluster.member(&name).map(|m| m.state).ok() == Some(MemberState::Left)
        })
        .await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}
