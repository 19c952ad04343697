//! Actors by identity on clustered nodes over TCP: each identity activated
//! once, on the owner every node computes alike; a member that leaves gives
//! its identities to the others (activated again at their next message); a
//! member that joins takes its share (the old owner stops its activation);
//! a node without a healthy majority routes nothing.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use joerl_dist::cluster::placement::{self, PlacedActor, PlacedServer, Placements};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, SendError, placed};
use serde::{Deserialize, Serialize};

/// Counts hits; answers each with its count and node.
struct Counter {
    id: String,
    hits: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hit;
joerl_dist::remote_message!(Hit, "placement_test::Hit");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    id: String,
    node: String,
    hits: u64,
}
joerl_dist::remote_message!(Count, "placement_test::Count");

impl Actor for Counter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if msg.is::<Hit>() {
            self.hits += 1;
            if let Some(from) = ctx.sender() {
                let node = ctx.node().unwrap_or("").to_string();
                let (id, hits) = (self.id.clone(), self.hits);
                let _ = ctx.send(from, Count { id, node, hits }).await;
            }
        }
    }
}

impl PlacedActor for Counter {
    fn activate(id: &str) -> Self {
        Counter {
            id: id.to_string(),
            hits: 0,
        }
    }
}
placed!(Counter, "placement_test::Counter");

/// A placed gen_server: typed calls by identity.
struct Account {
    balance: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit(u64);
impl Request for Deposit {
    type Reply = (u64, String);
}

impl GenServer for Account {
    type Calls = (Deposit,);
    type Casts = ();
}

impl HandleCall<Deposit> for Account {
    async fn handle_call(
        &mut self,
        req: Deposit,
        _from: ReplyTo<(u64, String)>,
        ctx: &mut ActorContext,
    ) -> CallResponse<(u64, String)> {
        self.balance += req.0;
        CallResponse::Reply((self.balance, ctx.node().unwrap_or("").to_string()))
    }
}
joerl_dist::remote_server!(Account);

impl PlacedServer for Account {
    fn activate(_id: &str) -> Self {
        Account { balance: 0 }
    }
}
placed!(server Account, "placement_test::Account");

/// A clustered node with placement, and its own EPMD.
async fn member(
    name: &str,
    seed: Option<std::net::SocketAddr>,
) -> (DistributedSystem, Placements, joerl_epmd::EpmdServer) {
    let (node, e) = clustered(name, "placement-test", seed).await;
    let p = placement::start(&node).unwrap();
    (node, p, e)
}

/// Waits until every node's placement view has exactly `names`.
async fn wait_view(nodes: &[&Placements], names: &[&str]) {
    let want: std::collections::BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    for p in nodes {
        wait_until(&format!("{p:?} places on {want:?}"), || p.members() == want).await;
    }
}

/// Sends a hit to each id from `from`, and collects the answers by id.
async fn hit_all(
    from: &DistributedSystem,
    p: &Placements,
    ids: &[String],
) -> BTreeMap<String, Count> {
    let (fwd, mut rx) = forward();
    let me = from.spawn(fwd);
    for id in ids {
        from.send_from(Some(me), p.actor::<Counter>(id.clone()), Hit)
            .await
            .unwrap();
    }
    let mut got = BTreeMap::new();
    while got.len() < ids.len() {
        let (c, _): (Count, _) = recv(&mut rx).await;
        got.insert(c.id.clone(), c);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_live_once_on_their_owner_and_follow_membership_changes() {
    init_tracing();
    let (a, pa, _ea) = member("pl_a", None).await;
    let seed = a.cluster().unwrap().gossip_addr();
    let (b, pb, _eb) = member("pl_b", Some(seed)).await;
    let (c, pc, _ec) = member("pl_c", Some(seed)).await;
    let names = [a.name(), b.name(), c.name()];
    wait_view(&[&pa, &pb, &pc], &names).await;
    let ids: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();

    // Every node computes the same owner; each identity answers from it.
    let got = hit_all(&b, &pb, &ids).await;
    for id in &ids {
        let r = pa.actor::<Counter>(id.clone());
        let owner = pa.owner(r.identity()).unwrap();
        assert_eq!(pb.owner(r.identity()).unwrap(), owner);
        assert_eq!(pc.owner(r.identity()).unwrap(), owner);
        assert_eq!(got[id].node, owner, "{id}");
        assert_eq!(got[id].hits, 1);
    }
    // One activation each, all three nodes used.
    let mut seen = HashSet::new();
    for p in [&pa, &pb, &pc] {
        let local = p.local_activations();
        assert!(!local.is_empty(), "{p:?} owns nothing");
        for act in local
            .into_iter()
            .filter(|a| a.identity.kind == "placement_test::Counter")
        {
            assert!(
                seen.insert(act.identity.id.clone()),
                "{} twice",
                act.identity
            );
        }
    }
    assert_eq!(seen.len(), ids.len());
    // A placed gen_server answers typed calls from any node, on its owner.
    for (i, (from, p)) in [(&a, &pa), (&b, &pb), (&c, &pc)].into_iter().enumerate() {
        let acct: ServerRef<Account> = ServerRef::new(p.actor::<Account>("acct-1"));
        let (balance, node) = from.call(&acct, Deposit(10)).await.unwrap();
        assert_eq!(balance, 10 * (i as u64 + 1));
        assert_eq!(
            node,
            pa.owner(pa.actor::<Account>("acct-1").identity()).unwrap()
        );
    }
    // A second round reaches the same activations.
    let again = hit_all(&a, &pa, &ids).await;
    assert!(again.values().all(|c| c.hits == 2));

    // c leaves: its identities start again on a and b; the others keep counting.
    let on_c: HashSet<String> = got
        .values()
        .filter(|c| c.node == names[2])
        .map(|c| c.id.clone())
        .collect();
    assert!(!on_c.is_empty());
    c.shutdown().await;
    wait_view(&[&pa, &pb], &names[..2]).await;
    let after = hit_all(&a, &pa, &ids).await;
    for (id, cnt) in &after {
        assert_ne!(cnt.node, names[2]);
        let want = if on_c.contains(id) { 1 } else { 3 };
        assert_eq!(cnt.hits, want, "{id} on {}", cnt.node);
    }

    // d joins: it takes its share; the old owners stop those activations.
    let (d, pd, _ed) = member("pl_d", Some(seed)).await;
    let names4 = [a.name(), b.name(), d.name()];
    wait_view(&[&pa, &pb, &pd], &names4).await;
    let moved: Vec<String> = ids
        .iter()
        .filter(|id| {
            let r = pa.actor::<Counter>(id.to_string());
            pa.owner(r.identity()).unwrap() == names4[2]
        })
        .cloned()
        .collect();
    assert!(!moved.is_empty());
    wait_until("the old owners gave the moved identities up", || {
        [&pa, &pb].iter().all(|p| {
            p.local_activations()
                .iter()
                .all(|a| !moved.contains(&a.identity.id))
        })
    })
    .await;
    let last = hit_all(&b, &pb, &ids).await;
    for id in &moved {
        assert_eq!(last[id].node, names4[2]);
        assert_eq!(last[id].hits, 1, "{id} starts again on its new owner");
    }
    assert!(
        pa.stats()
            .handed_off
            .load(std::sync::atomic::Ordering::Relaxed)
            + pb.stats()
                .handed_off
                .load(std::sync::atomic::Ordering::Relaxed)
            >= moved.len() as u64
    );

    // a alone (gossip to both others dropped): no healthy majority, nothing
    // routed, and what ran there is stopped.
    let on_a = pa.local_activations().len();
    assert!(on_a > 0);
    let ca = a.cluster().unwrap();
    ca.block_gossip(vec![
        b.cluster().unwrap().gossip_addr(),
        d.cluster().unwrap().gossip_addr(),
    ]);
    wait_until("a sees no majority", || !ca.health().healthy).await;
    wait_until("a's placement knows it", || {
        matches!(
            pa.owner(pa.actor::<Counter>("c1").identity()),
            Err(SendError::NotPlaced { .. })
        )
    })
    .await;
    assert!(matches!(
        a.send(pa.actor::<Counter>("c1"), Hit).await,
        Err(SendError::NotPlaced { .. })
    ));
    wait_until("a stopped its activations", || {
        pa.local_activations().is_empty()
    })
    .await;
    assert!(
        pa.stats()
            .stopped_no_majority
            .load(std::sync::atomic::Ordering::Relaxed)
            >= on_a as u64
    );
    ca.block_gossip(Vec::new());
    for n in [a, b, d] {
        n.shutdown().await;
    }
}
