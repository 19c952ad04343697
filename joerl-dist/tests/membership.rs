//! Membership attached to nodes: dist addresses learned from gossip (the
//! nodes use separate EPMDs, so EPMD cannot find them), and a member that
//! SWIM declares down made `noconnection` although its TCP connection is up.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use joerl_dist::cluster::config::ClusterConfig;
use joerl_dist::cluster::gossip::SwimState;
use joerl_dist::cluster::node::{ClusterEvent, ClusterHealth, ClusterNode, MemberDirectory};
use joerl_dist::{
    Actor, ActorContext, DownMessage, ExitReason, Message, NodeDownReason, NodeEvent, Pid,
};

fn config() -> ClusterConfig {
    ClusterConfig::builder()
        .cluster_name("membership-test")
        .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(0)
        .probe(Duration::from_millis(200), Duration::from_millis(80))
        .gossip_interval(Duration::from_millis(50))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_each_other_through_gossip_and_a_failed_member_is_noconnection() {
    init_tracing();
    // Two EPMDs: neither node can find the other through EPMD.
    let (epmd_a, epmd_b) = (epmd().await, epmd().await);
    let (dir_a, dir_b) = (MemberDirectory::new(), MemberDirectory::new());
    let a = builder("memb_a", epmd_a.local_addr())
        .first_resolver(dir_a.clone())
        .start()
        .await
        .unwrap();
    let b = builder("memb_b", epmd_b.local_addr())
        .first_resolver(dir_b.clone())
        .start()
        .await
        .unwrap();
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    b.register("sink", sink).unwrap();
    // Without membership, a cannot reach b.
    assert!(a.connect(b.name()).await.is_err());

    let ca = ClusterNode::start(&a, &config(), dir_a.clone())
        .await
        .unwrap();
    let cb = ClusterNode::start(&b, &config(), dir_b.clone())
        .await
        .unwrap();
    // An actor on a receives the membership changes as messages.
    let (watch_fwd, mut changes) = forward();
    ca.monitor_members(a.spawn(watch_fwd));
    assert_eq!(
        ca.health(),
        ClusterHealth {
            healthy: true,
            active: 1,
            total: 1
        }
    );
    let seed = ca.gossip().local_addr().to_string();
    assert_eq!(cb.join(&[seed]).await.unwrap(), 1);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let members = ca.members().await;
        if members
            .iter()
            .any(|m| m.id.node == b.name() && m.state == SwimState::Alive)
            && dir_a.get(b.name()) == Some(b.local_addr())
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b never joined a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (up, _): (ClusterEvent, _) = recv(&mut changes).await;
    assert!(
        matches!(&up, ClusterEvent::MemberUp(id) if id.node == b.name()),
        "{up:?}"
    );
    assert_eq!(ca.health().active, 2);
    // A named send from a now finds b by its gossiped dist address.
    a.send(("sink", b.name()), 42u32).await.unwrap();
    let (n, _): (u32, _) = recv(&mut rx).await;
    assert_eq!(n, 42);

    // b's membership stops (its node and TCP connection stay up): a's SWIM
    // declares it down, and a makes that a node down, once.
    let (tx, mut downs) = tokio::sync::mpsc::unbounded_channel();
    a.spawn(Watch(sink, tx));
    wait_until("the monitor reached b", || {
        b.relation_counts(sink).is_some_and(|c| c != (0, 0, 0))
    })
    .await;
    let mut events = a.subscribe();
    drop(cb);
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("the failed member is noconnection in time")
        .unwrap();
    assert_eq!(down.reason, ExitReason::NoConnection);
    loop {
        match tokio::time::timeout(DEADLINE, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            NodeEvent::Down { node, reason } => {
                assert_eq!(node, b.name());
                assert!(
                    matches!(&reason, NodeDownReason::Disconnected(why) if why.contains("membership")),
                    "{reason:?}"
                );
                break;
            }
            NodeEvent::Up { .. } => continue,
        }
    }
    assert_eq!(
        dir_a.get(b.name()),
        None,
        "a failed member leaves the directory"
    );
    let (failed, _): (ClusterEvent, _) = recv(&mut changes).await;
    assert!(
        matches!(&failed, ClusterEvent::MemberFailed(id) if id.node == b.name()),
        "{failed:?}"
    );
    let (health, _): (ClusterEvent, _) = recv(&mut changes).await;
    let lost_majority = ClusterHealth {
        healthy: false,
        active: 1,
        total: 2,
    };
    assert_eq!(health, ClusterEvent::HealthChanged(lost_majority));
    assert_eq!(ca.health(), lost_majority);
    drop(ca);
    a.shutdown().await;
    b.shutdown().await;
}
