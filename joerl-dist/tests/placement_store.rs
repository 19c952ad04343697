//! Placement through the metadata store (`cluster::placement::stored`)
//! against a real etcd each test starts: identities run once, on the node
//! their assignment names, also when the membership views of two nodes do
//! not see each other; a dead node's assignments vanish and the leader
//! re-places its registered identities; the location cache follows the
//! store's watch; malformed assignments are reported and skipped; when the
//! store stops answering, known routes keep working, new placements are
//! provisional and health is degraded, and when it answers again the
//! store's assignment wins.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use joerl_dist::cluster::placement::{
    self, Identity, PlacedActor, PlacementOptions, Placements, RetryPolicy, StorePlacement,
    StorePlacementOptions,
};
use joerl_dist::cluster::store::MetadataStore;
use joerl_dist::cluster::store::assignments::{Assignment, assignment_key};
use joerl_dist::cluster::store::etcd::{EtcdOptions, EtcdStore};
use joerl_dist::cluster::store::leader::{StoreLeader, StoreLeaderOptions};
use joerl_dist::cluster::store::local_etcd::LocalEtcd;
use joerl_dist::cluster::store::retry::RetryingStore;
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, placed};
use serde::{Deserialize, Serialize};

/// Activations started, as (id, node), by every node of this test binary.
static STARTED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Answers each `Ping` with its id and node; records its start.
struct Spot {
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping;
joerl_dist::remote_message!(Ping, "placement_store_test::Ping");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pong {
    id: String,
    node: String,
}
joerl_dist::remote_message!(Pong, "placement_store_test::Pong");

impl Actor for Spot {
    async fn started(&mut self, ctx: &mut ActorContext) {
        let node = ctx.node().unwrap_or("").to_string();
        STARTED.lock().unwrap().push((self.id.clone(), node));
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if msg.is::<Ping>() {
            if let Some(from) = ctx.sender() {
                let node = ctx.node().unwrap_or("").to_string();
                let _ = ctx
                    .send(
                        from,
                        Pong {
                            id: self.id.clone(),
                            node,
                        },
                    )
                    .await;
            }
        }
    }
}

impl PlacedActor for Spot {
    fn activate(id: &str) -> Self {
        Spot { id: id.to_string() }
    }

    fn idle_timeout() -> Option<Duration> {
        None
    }
}
placed!(Spot, "placement_store_test::Spot");

const KIND: &str = "placement_store_test::Spot";

/// Nodes started by the activations of `ids` (ids of this test only).
fn started_on(ids: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, node) in STARTED.lock().unwrap().iter() {
        if ids.contains(id) {
            by_id.entry(id.clone()).or_default().push(node.clone());
        }
    }
    by_id
}

async fn etcd_store(endpoint: &str) -> Arc<dyn MetadataStore> {
    let mut o = EtcdOptions::new([endpoint.to_string()]);
    o.request_timeout = Duration::from_secs(1);
    o.connect_timeout = Duration::from_secs(1);
    Arc::new(EtcdStore::connect(o).await.expect("connects"))
}

/// A node placing through the store at `endpoint` under `prefix`.
struct StoreMember {
    node: DistributedSystem,
    placements: Placements,
    store: Arc<StorePlacement>,
    _epmd: Option<joerl_epmd::EpmdServer>,
}

impl StoreMember {
    fn stats(&self) -> &placement::StorePlacementStats {
        self.store.stats()
    }
}

/// Starts placement through the store on a clustered `node`.
async fn place_through_store(
    node: &DistributedSystem,
    endpoint: &str,
    prefix: &str,
) -> (Placements, Arc<StorePlacement>) {
    let rs = RetryingStore::new(
        etcd_store(endpoint).await,
        RetryPolicy {
            attempts: 2,
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            multiplier: 2.0,
        },
    );
    let leader = StoreLeader::start(
        node,
        Arc::new(rs.clone()),
        StoreLeaderOptions {
            election: format!("{prefix}/leader"),
            ttl: Duration::from_secs(2),
            poll: Duration::from_millis(100),
        },
    )
    .unwrap();
    let sp = StorePlacement::start(
        node,
        rs,
        StorePlacementOptions {
            prefix: prefix.to_string(),
            lease_ttl: Duration::from_secs(2),
            ..StorePlacementOptions::default()
        },
    )
    .await
    .expect("the placement lease is granted");
    let p = placement::start_with_store(
        node,
        Arc::new(leader),
        PlacementOptions::default(),
        sp.clone(),
    )
    .unwrap();
    (p, sp)
}

/// A clustered member (EPMD of its own) placing through the store.
async fn member(
    name: &str,
    cluster: &str,
    seed: Option<SocketAddr>,
    endpoint: &str,
    prefix: &str,
) -> StoreMember {
    let (node, e) = clustered(name, cluster, seed).await;
    let (placements, store) = place_through_store(&node, endpoint, prefix).await;
    StoreMember {
        node,
        placements,
        store,
        _epmd: Some(e),
    }
}

/// `n` members of one cluster, each seeing all.
async fn members(tag: &str, n: usize, endpoint: &str) -> Vec<StoreMember> {
    let cluster = format!("{tag}-cluster");
    let first = member(&format!("{tag}_0"), &cluster, None, endpoint, tag).await;
    let seed = first.node.cluster().unwrap().gossip_addr();
    let mut all = vec![first];
    for i in 1..n {
        all.push(member(&format!("{tag}_{i}"), &cluster, Some(seed), endpoint, tag).await);
    }
    let names: std::collections::BTreeSet<String> =
        all.iter().map(|m| m.node.name().to_string()).collect();
    for m in &all {
        wait_until("every member places on all", || {
            m.placements.members() == names
        })
        .await;
    }
    all
}

/// Sends a `Ping` to `id` from a forwarding actor on `m` and returns the
/// node of the `Pong`.
async fn ping(m: &StoreMember, id: &str) -> String {
    let (f, mut rx) = forward();
    let me = m.node.spawn(f);
    m.node
        .send_from(Some(me), m.placements.actor_of(KIND, id), Ping)
        .await
        .expect("sent");
    let (pong, _) = recv::<Pong>(&mut rx).await;
    assert_eq!(pong.id, id);
    let _ = m.node.exit(me, joerl_dist::ExitReason::Normal);
    pong.node
}

/// The assignment of `id` in the store, read directly.
async fn stored_owner(endpoint: &str, prefix: &str, id: &str) -> Option<Assignment> {
    let s = etcd_store(endpoint).await;
    let key = assignment_key(&format!("{prefix}/assignments"), KIND, id);
    s.get(&key)
        .await
        .unwrap()
        .map(|e| Assignment::decode(&key, &e.value).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_run_once_on_the_node_their_assignment_names() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let all = members("ps1", 3, &etcd.endpoint()).await;
    let ids: Vec<String> = (0..30).map(|i| format!("ps1-{i}")).collect();
    // From every node to every identity, twice.
    let mut answered: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..2 {
        for m in &all {
            for id in &ids {
                let node = ping(m, id).await;
                let first = answered.entry(id.clone()).or_insert_with(|| node.clone());
                assert_eq!(*first, node, "{id} answered from two nodes");
            }
        }
    }
    let started = started_on(&ids);
    for id in &ids {
        assert_eq!(started[id].len(), 1, "{id} started {:?}", started[id]);
        let a = stored_owner(&etcd.endpoint(), "ps1", id)
            .await
            .expect("assigned in the store");
        assert_eq!(a.node, answered[id], "{id}: the store names its node");
    }
    // Spread over more than one node (the rendezvous choice is tried
    // first), and every node's view of the store has them all.
    let nodes: std::collections::BTreeSet<&String> = answered.values().collect();
    assert!(nodes.len() > 1, "{nodes:?}");
    for m in &all {
        wait_until("the view has every assignment", || {
            m.store.assignments() >= ids.len()
        })
        .await;
        assert!(m.stats().created.load(Ordering::Relaxed) <= ids.len() as u64);
    }
    let created: u64 = all
        .iter()
        .map(|m| m.stats().created.load(Ordering::Relaxed))
        .sum();
    assert_eq!(created, ids.len() as u64, "one create per identity");
    for m in all {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_whose_memberships_do_not_see_each_other_run_each_identity_once() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    // One EPMD (they reach each other by name), two clusters of one: each
    // view says it alone is a healthy majority and the owner of everything
    // (the embedded mode would run every identity on both).
    let e = epmd().await;
    let mut pair = Vec::new();
    for (name, cluster) in [("ps2_a", "ps2-left"), ("ps2_b", "ps2-right")] {
        let node = builder(name, e.local_addr()).start().await.unwrap();
        node.enable_clustering(cluster_config(cluster, None))
            .await
            .unwrap();
        let (placements, store) = place_through_store(&node, &etcd.endpoint(), "ps2").await;
        wait_until("the node places on itself", || {
            placements.members().contains(node.name())
        })
        .await;
        pair.push(StoreMember {
            node,
            placements,
            store,
            _epmd: None,
        });
    }
    let ids: Vec<String> = (0..20).map(|i| format!("ps2-{i}")).collect();
    // Both at once, for every identity.
    let (a, b) = (&pair[0], &pair[1]);
    let mut answers = Vec::new();
    for id in &ids {
        let (x, y) = tokio::join!(ping(a, id), ping(b, id));
        assert_eq!(x, y, "{id}: both senders reach the one activation");
        answers.push(x);
    }
    let started = started_on(&ids);
    for (id, node) in ids.iter().zip(&answers) {
        assert_eq!(started[id], vec![node.clone()], "{id}");
    }
    let moved = a.stats().moved.load(Ordering::Relaxed) + b.stats().moved.load(Ordering::Relaxed);
    assert!(moved > 0, "some claims lost the race and forwarded");
    for m in pair {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_assignments_vanish_and_the_leader_re_places_its_registered_identities() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    // The third node reaches etcd through a proxy, to be cut off from it.
    let proxy = Proxy::start(etcd.client_addr()).await;
    let via_proxy = format!("http://{}", proxy.addr);
    let cluster = "ps3-cluster";
    let a = member("ps3_a", cluster, None, &endpoint, "ps3").await;
    let seed = a.node.cluster().unwrap().gossip_addr();
    let b = member("ps3_b", cluster, Some(seed), &endpoint, "ps3").await;
    let c = member("ps3_c", cluster, Some(seed), &via_proxy, "ps3").await;
    let names: std::collections::BTreeSet<String> = [&a, &b, &c]
        .iter()
        .map(|m| m.node.name().to_string())
        .collect();
    for m in [&a, &b, &c] {
        wait_until("every member places on all", || {
            m.placements.members() == names
        })
        .await;
    }
    // Identities that run on c: one registered (eager), others virtual.
    let mut on_c = Vec::new();
    for i in 0..60 {
        let id = format!("ps3-{i}");
        if ping(&a, &id).await == c.node.name() {
            on_c.push(id);
        }
        if on_c.len() == 4 {
            break;
        }
    }
    assert!(on_c.len() >= 2, "some identities run on c");
    let registered = on_c[0].clone();
    a.placements.register(KIND, &registered).await.unwrap();
    for m in [&a, &b, &c] {
        wait_until("every node has the registration", || {
            m.placements
                .directives()
                .registered
                .contains(&Identity::new(KIND, registered.as_str()))
        })
        .await;
    }

    // c is cut off from etcd: its lease runs out (2 s), its assignments
    // vanish from the store, and the leader wakes the registered one on a
    // or b with no message sent.
    proxy.freeze(true);
    for id in &on_c {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match stored_owner(&endpoint, "ps3", id).await {
                Some(o) if o.node == c.node.name() => {}
                _ => break,
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} still assigned to c"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_until("the registered identity runs again on a or b", || {
        started_on(std::slice::from_ref(&registered))
            .get(&registered)
            .is_some_and(|n| n.len() == 2 && n[1] != c.node.name())
    })
    .await;
    let replaced =
        a.stats().replaced.load(Ordering::Relaxed) + b.stats().replaced.load(Ordering::Relaxed);
    assert_eq!(replaced, 1, "the leader re-placed the registered identity");
    // A virtual one is placed again at its next message, on a or b.
    let virt = &on_c[1];
    let now = ping(&a, virt).await;
    assert_ne!(now, c.node.name(), "{virt} placed again away from c");
    assert_eq!(
        stored_owner(&endpoint, "ps3", virt).await.map(|o| o.node),
        Some(now)
    );
    // c reaches etcd again: its activations of identities the store gave
    // to others hand off (the store's assignment wins), and it takes a
    // new lease.
    proxy.freeze(false);
    wait_until("c took a new lease and its activations lost", || {
        c.stats().new_leases.load(Ordering::Relaxed) >= 1
            && c.stats().lost.load(Ordering::Relaxed) >= 2
    })
    .await;
    wait_until("c runs neither identity any more", || {
        !c.placements
            .local_activations()
            .iter()
            .any(|x| x.identity.id == registered || x.identity.id == *virt)
    })
    .await;
    for m in [a, b, c] {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_cache_follows_the_stores_watch() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let all = members("ps4", 2, &etcd.endpoint()).await;
    let (a, b) = (&all[0], &all[1]);
    // An identity that runs on b, reached from a (its route and Pid
    // cached on a).
    let mut id = None;
    for i in 0..40 {
        let x = format!("ps4-{i}");
        if ping(a, &x).await == b.node.name() {
            id = Some(x);
            break;
        }
    }
    let id = id.expect("an identity on b");
    for _ in 0..5 {
        assert_eq!(ping(a, &id).await, b.node.name());
    }
    let hits = a.placements.stats().route_hits.load(Ordering::Relaxed);
    assert!(hits > 0, "the cache answered");
    // Moving it by hand is refused plainly (not supported through a store).
    let moved = a
        .placements
        .migrate(&Identity::new(KIND, id.as_str()), a.node.name())
        .await;
    assert!(
        matches!(moved, Err(placement::CommandError::NotWithStore("migrate"))),
        "{moved:?}"
    );
    // The store now says a runs it (as an operator moving it by hand
    // would write it): a's cached route goes, the next message runs it on
    // a, and b hands its activation off.
    let key = assignment_key("ps4/assignments", KIND, &id);
    let to_a = Assignment {
        node: a.node.name().to_string(),
        creation: a.node.creation(),
    };
    etcdctl(&etcd.endpoint(), &[b"put", key.as_bytes(), &to_a.encode()]);
    wait_until("both views have the change", || {
        a.stats().invalidated.load(Ordering::Relaxed) >= 1
            && b.store
                .owner(KIND, &id)
                .is_some_and(|o| o.node == a.node.name())
    })
    .await;
    assert_eq!(ping(a, &id).await, a.node.name());
    assert_eq!(ping(b, &id).await, a.node.name());
    wait_until("b no longer runs it", || {
        !b.placements
            .local_activations()
            .iter()
            .any(|x| x.identity.id == id)
    })
    .await;
    // Its assignment deleted by hand: the activation stops (another node
    // could be given the identity now), and the next message places it
    // again, with a new assignment.
    etcdctl(&etcd.endpoint(), &[b"del", key.as_bytes()]);
    wait_until("a stopped the activation whose assignment ended", || {
        !a.placements
            .local_activations()
            .iter()
            .any(|x| x.identity.id == id)
    })
    .await;
    let again = ping(b, &id).await;
    assert_eq!(
        stored_owner(&etcd.endpoint(), "ps4", &id)
            .await
            .map(|o| o.node),
        Some(again)
    );
    for m in all {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_assignment_written_by_hand_is_reported_and_the_node_serves_the_rest() {
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let all = members("ps5", 1, &etcd.endpoint()).await;
    let a = &all[0];
    let key = assignment_key("ps5/assignments", KIND, "ps5-bad");
    etcdctl(&etcd.endpoint(), &[b"put", key.as_bytes(), b"{not json"]);
    wait_until("the view skipped it", || {
        a.store.owner(KIND, "ps5-bad").is_none() && a.store.listings() >= 1
    })
    .await;
    // A message to it is not delivered (logged, counted), and nothing
    // else suffers.
    let (f, mut rx) = forward();
    let me = a.node.spawn(f);
    a.node
        .send_from(Some(me), a.placements.actor_of(KIND, "ps5-bad"), Ping)
        .await
        .expect("sent");
    wait_until("the claim found the assignment malformed", || {
        a.stats().malformed.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no activation answered"
    );
    assert_eq!(ping(a, "ps5-good").await, a.node.name());
    // A running identity's assignment deleted by hand: its activation
    // stops (another node could be given the identity now); the next
    // message places it again, with a new assignment.
    let good = assignment_key("ps5/assignments", KIND, "ps5-good");
    etcdctl(&etcd.endpoint(), &[b"del", good.as_bytes()]);
    wait_until("the activation whose assignment ended stopped", || {
        !a.placements
            .local_activations()
            .iter()
            .any(|x| x.identity.id == "ps5-good")
    })
    .await;
    assert_eq!(ping(a, "ps5-good").await, a.node.name());
    assert_eq!(
        started_on(&["ps5-good".to_string()])["ps5-good"].len(),
        2,
        "started again"
    );
    assert!(
        stored_owner(&etcd.endpoint(), "ps5", "ps5-good")
            .await
            .is_some()
    );
    // Rewritten properly (deleted), the identity is placed.
    etcdctl(&etcd.endpoint(), &[b"del", key.as_bytes()]);
    assert_eq!(ping(a, "ps5-bad").await, a.node.name());
    for m in all {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_degrades_the_node_and_a_restarted_one_confirms_what_was_provisional() {
    use joerl_dist::cluster::ClusterEvent;
    use joerl_dist::cluster::management::Management;
    init_tracing();
    let dir = std::env::temp_dir().join(format!("joerl-etcd-ps6-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut etcd = LocalEtcd::start_in(&dir).await.expect("etcd starts");
    let (client, peer) = (etcd.client_addr(), etcd.peer_addr());
    let all = members("ps6", 2, &etcd.endpoint()).await;
    let (a, b) = (&all[0], &all[1]);
    let mut events = a.node.cluster().unwrap().subscribe();
    let ids: Vec<String> = (0..20).map(|i| format!("ps6-{i}")).collect();
    for id in &ids {
        ping(a, id).await;
    }
    let mgmt = Management::new(&a.node, &a.placements).unwrap();
    assert!(!mgmt.health().degraded);

    etcd.stop();
    drop(etcd);
    // Known identities keep answering, from the same nodes.
    for _ in 0..3 {
        for id in &ids {
            ping(a, id).await;
            ping(b, id).await;
        }
    }
    // A new identity: placed provisionally by the rendezvous choice.
    let fresh = "ps6-fresh".to_string();
    let ran_on = ping(a, &fresh).await;
    let owner = if ran_on == a.node.name() { a } else { b };
    assert!(
        owner
            .store
            .is_provisional(&Identity::new(KIND, fresh.as_str())),
        "provisional on {ran_on}"
    );
    wait_until("health says degraded", || mgmt.health().degraded).await;
    let down = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Some(ClusterEvent::MetadataStore {
                    reachable: false, ..
                }) => break,
                Some(_) => {}
                None => panic!("the events ended"),
            }
        }
    })
    .await;
    assert!(down.is_ok(), "an event said the store is unreachable");

    let etcd = LocalEtcd::start_at(&dir, client, peer)
        .await
        .expect("restarts");
    wait_until("the provisional activation is confirmed", || {
        owner.store.provisional() == 0 && owner.stats().confirmed.load(Ordering::Relaxed) >= 1
    })
    .await;
    wait_until("health is no longer degraded", || !mgmt.health().degraded).await;
    assert_eq!(
        stored_owner(&etcd.endpoint(), "ps6", &fresh)
            .await
            .map(|o| o.node),
        Some(ran_on.clone())
    );
    assert_eq!(ping(b, &fresh).await, ran_on);
    let started = started_on(&ids);
    assert!(ids.iter().all(|id| started[id].len() == 1));
    for m in all {
        m.node.shutdown().await;
    }
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_config_chooses_placement_through_etcd() {
    use joerl_dist::cluster::{ClusterConfig, MetadataStoreKind};
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let e = epmd().await;
    let node = builder("ps7_a", e.local_addr()).start().await.unwrap();
    let config = ClusterConfig::builder()
        .cluster_name("ps7")
        .bind_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .port(0)
        .metadata_store(MetadataStoreKind::Etcd)
        .etcd_endpoints([etcd.endpoint()])
        .build()
        .unwrap();
    node.enable_clustering(config).await.unwrap();
    let placements = placement::start_configured(&node).await.unwrap();
    let store = placements
        .store()
        .expect("placement goes through the store");
    assert_eq!(store.prefix(), "joerl/ps7/placement");
    wait_until("the node places on itself", || {
        placements.members().contains(node.name())
    })
    .await;
    let m = StoreMember {
        node: node.clone(),
        placements: placements.clone(),
        store: store.clone(),
        _epmd: None,
    };
    assert_eq!(ping(&m, "ps7-1").await, node.name());
    let key = assignment_key("joerl/ps7/placement/assignments", KIND, "ps7-1");
    let s = etcd_store(&etcd.endpoint()).await;
    let got = s
        .get(&key)
        .await
        .unwrap()
        .expect("written under the cluster's prefix");
    assert_eq!(
        Assignment::decode(&key, &got.value).unwrap().node,
        node.name()
    );
    // The node revokes its lease as it shuts down: its assignments are
    // gone when shutdown returns, not a TTL later.
    node.shutdown().await;
    assert!(
        s.get(&key).await.unwrap().is_none(),
        "{key} outlived the node"
    );
    drop(e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_to_a_node_whose_assignment_vanished_claims_the_identity_again() {
    use joerl_dist::cluster::placement::placements::placed_name;
    init_tracing();
    let etcd = LocalEtcd::start().await.expect("etcd starts");
    let all = members("ps8", 1, &etcd.endpoint()).await;
    let a = &all[0];
    // A node that is gone: its assignment lives on in etcd until its
    // 2 s lease runs out (nobody renews it).
    let s = etcd_store(&etcd.endpoint()).await;
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    let key = assignment_key("ps8/assignments", KIND, "ps8-x");
    let ghost = Assignment {
        node: "ps8_ghost@127.0.0.1".into(),
        creation: 1,
    };
    s.put(&key, ghost.encode(), Some(lease)).await.unwrap();
    wait_until("a sees the ghost's assignment", || {
        a.store.owner(KIND, "ps8-x").is_some()
    })
    .await;
    // Messages that reach a's name for the identity start an activation
    // that finds the ghost's assignment and forwards there; they keep
    // coming, so the forwarder never goes idle.
    let (f, mut rx) = forward();
    let me = a.node.spawn(f);
    let name = placed_name(&Identity::new(KIND, "ps8-x"));
    let deadline = std::time::Instant::now() + DEADLINE;
    let pong = loop {
        a.node
            .send_from(Some(me), joerl_dist::Dest::Name(name.clone()), Ping)
            .await
            .expect("sent");
        if let Ok(Some((m, _))) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            break m.downcast::<Pong>().expect("a Pong");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the identity never ran again after the ghost's lease ended"
        );
    };
    // Once the lease ended, the forwarder claimed the identity and runs it.
    assert_eq!(pong.node, a.node.name());
    assert!(
        a.stats().moved.load(Ordering::Relaxed) >= 1,
        "it forwarded first"
    );
    assert_eq!(
        stored_owner(&etcd.endpoint(), "ps8", "ps8-x")
            .await
            .map(|o| o.node),
        Some(a.node.name().to_string())
    );
    for m in all {
        m.node.shutdown().await;
    }
}
