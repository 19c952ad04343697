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

/// The other OS process of the tests below (this test binary run again with
/// `JOERL_LEADER_CHILD` set to the etcd endpoint): a node taking part in the
/// election, saying `JOERL-CHILD leader=..` whenever that changes, and
/// `JOERL-CHILD resumed leader=..` when its clock jumped by more than a
/// second between two looks (it was paused), with what it counted itself
/// at that instant. Without the variable it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_child_process() {
    let Ok(endpoint) = std::env::var("JOERL_LEADER_CHILD") else {
        return;
    };
    let e = epmd().await;
    let n = node("slx_child", e.local_addr()).await;
    let l = StoreLeader::start(&n, store(endpoint).await, options()).unwrap();
    let mut last = None;
    let mut looked = std::time::Instant::now();
    loop {
        let leads = l.is_leader();
        if looked.elapsed() > Duration::from_secs(1) {
            println!("JOERL-CHILD resumed leader={leads}");
        }
        if last != Some(leads) {
            println!("JOERL-CHILD leader={leads}");
            last = Some(leads);
        }
        looked = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts the child process; its `JOERL-CHILD` lines come through the
/// channel.
fn child(
    endpoint: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut c = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leader_child_process", "--nocapture"])
        .env("JOERL_LEADER_CHILD", endpoint)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the child starts");
    let mut lines = tokio::io::BufReader::new(c.stdout.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(at) = l.find("JOERL-CHILD ") {
                let _ = tx.send(l[at + "JOERL-CHILD ".len()..].trim().to_string());
            }
        }
    });
    (c, rx)
}

async fn said(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the child says something within 30 s")
        .expect("the child goes on")
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_process_is_fenced_and_a_killed_one_replaced() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let (mut c, mut rx) = child(&etcd.endpoint());
    let pid = c.id().expect("running");
    assert_eq!(said(&mut rx).await, "leader=false");
    assert_eq!(said(&mut rx).await, "leader=true", "the child leads first");

    let e = epmd().await;
    let n = node("slx_parent", e.local_addr()).await;
    let me = StoreLeader::start(&n, store(etcd.endpoint()).await, options()).unwrap();
    wait_until("the parent follows the child", || {
        me.leader().is_some_and(|l| l.node.starts_with("slx_child"))
    })
    .await;
    let old = me.leader().unwrap();

    // Paused (SIGSTOP): its lease runs out, the parent leads. (What it
    // said before is dropped: only what it says after resuming counts.)
    while rx.try_recv().is_ok() {}
    signal(pid, "-STOP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !me.is_leader() {
        assert!(
            std::time::Instant::now() < deadline,
            "no takeover from a paused leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(me.leader().unwrap().epoch > old.epoch);
    // Resumed: at its first look it does not count itself leader.
    signal(pid, "-CONT");
    let resumed = loop {
        let l = said(&mut rx).await;
        if l.starts_with("resumed") {
            break l;
        }
        assert_ne!(l, "leader=true", "the resumed child led again");
    };
    assert_eq!(
        resumed, "resumed leader=false",
        "fenced at once on resuming"
    );
    // And it follows: nothing says it leads while the parent does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(l) = rx.try_recv() {
        assert_ne!(l, "leader=true", "the resumed child led again");
    }
    assert!(me.is_leader());

    // The parent steps down; the child leads; SIGKILL: the parent leads
    // again once the child's lease expires.
    me.force_election();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(l)) if l == "leader=true" => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the child never led again"
            ),
        }
    }
    wait_until("the parent follows the child again", || {
        me.leader().is_some_and(|l| l.node.starts_with("slx_child"))
    })
    .await;
    signal(pid, "-KILL");
    let _ = c.wait().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !me.is_leader() {
        assert!(
            std::time::Instant::now() < deadline,
            "no takeover from a killed leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_key_at_the_head_of_the_election_is_reported_not_followed() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    // Written by hand with etcdctl under the election's prefix, before any
    // node campaigns: no lease, a value that is no node's name.
    etcdctl(
        &etcd.endpoint(),
        &[b"put", b"test/leader/by-hand", b"\xff\xfe"],
    );
    let e = epmd().await;
    let n = node("slm_a", e.local_addr()).await;
    let l = StoreLeader::start(&n, store(etcd.endpoint()).await, options()).unwrap();
    wait_until("the bad candidacy is seen", || {
        l.stats().malformed.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(l.leader(), None, "nobody is followed");
    assert!(!l.is_leader(), "the node waits behind it");
    // The operator deletes it: the node leads.
    let s = store(etcd.endpoint()).await;
    assert!(s.delete("test/leader/by-hand").await.unwrap());
    wait_until("the node leads once it is gone", || l.is_leader()).await;
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_store_unreachable_as_degraded() {
    use joerl_dist::cluster::management::Management;
    use joerl_dist::cluster::placement::RetryPolicy;
    use joerl_dist::cluster::store::retry::RetryingStore;
    init_tracing();
    let mut etcd = LocalEtcd::start().await.expect("etcd starts");
    let m = placed_member("slh_a", "store-health", None).await;
    let rs = RetryingStore::new(
        store(etcd.endpoint()).await,
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    );
    let mgmt = Management::new(&m.0, &m.1).unwrap().with_store(&rs);
    rs.put("h", b"1".to_vec(), None).await.unwrap();
    let h = mgmt.health();
    assert!(!h.degraded);
    assert!(
        h.store
            .as_ref()
            .is_some_and(|s| s.reachable && s.error.is_none())
    );

    etcd.stop();
    assert!(rs.get("h").await.is_err());
    let h = mgmt.health();
    assert!(h.degraded, "{h:?}");
    let s = h.store.clone().unwrap();
    assert!(!s.reachable && s.unreachable_since_ms.is_some() && s.error.is_some());
    // As the management API's JSON says it.
    let json = serde_json::to_value(&h).unwrap();
    assert_eq!(json["degraded"], true);
    assert_eq!(json["store"]["reachable"], false);
    // Without a store, health has none and is not degraded.
    let plain = Management::new(&m.0, &m.1).unwrap().health();
    assert!(plain.store.is_none() && !plain.degraded);
    m.0.shutdown().await;
}
