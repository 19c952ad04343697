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

/// Records every numbered message it handles, and how many activations of
/// its identity run at once (in this test process, across its nodes).
struct Recorder {
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num(u64);
joerl_dist::remote_message!(Num, "placement_test::Num");

/// `(id, node, n)` in the order handled, and live activations by id with
/// the most seen at once.
static RECORDED: std::sync::Mutex<Vec<(String, String, u64)>> = std::sync::Mutex::new(Vec::new());
static LIVE: std::sync::Mutex<BTreeMap<String, (i64, i64)>> =
    std::sync::Mutex::new(BTreeMap::new());

impl Actor for Recorder {
    async fn started(&mut self, _ctx: &mut ActorContext) {
        let mut live = LIVE.lock().unwrap();
        let e = live.entry(self.id.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Ok(n) = msg.downcast::<Num>() {
            let node = ctx.node().unwrap_or("").to_string();
            RECORDED.lock().unwrap().push((self.id.clone(), node, n.0));
        }
    }

    async fn stopped(&mut self, _reason: &joerl_dist::ExitReason, _ctx: &mut ActorContext) {
        LIVE.lock().unwrap().entry(self.id.clone()).or_default().0 -= 1;
    }
}

impl PlacedActor for Recorder {
    fn activate(id: &str) -> Self {
        Recorder { id: id.to_string() }
    }
}
placed!(Recorder, "placement_test::Recorder");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_owner_takes_over_only_after_the_old_one_handed_off_and_gets_what_came_later() {
    use joerl_dist::cluster::placement::{Candidate, Identity, Placement, Rendezvous};
    init_tracing();
    let (a, pa, _ea) = member("ho_a", None).await;
    let seed = a.cluster().unwrap().gossip_addr();
    let (b, pb, _eb) = member("ho_b", Some(seed)).await;
    wait_view(&[&pa, &pb], &[a.name(), b.name()]).await;
    // The identities a third node takes from the first two.
    let c_name = a.name().replace("ho_a", "ho_c");
    let two = [Candidate::new(a.name()), Candidate::new(b.name())];
    let three = [
        two[0].clone(),
        two[1].clone(),
        Candidate::new(c_name.clone()),
    ];
    let ids: Vec<String> = (0..200)
        .map(|i| format!("r{i}"))
        .filter(|id| {
            let i = Identity::new("placement_test::Recorder", id.as_str());
            Rendezvous.place(&i, &three) == Some(2)
        })
        .take(20)
        .collect();
    assert_eq!(ids.len(), 20);

    // A stream of numbered messages from b to each identity, running while c
    // joins.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (b, pb, ids, stop) = (b.clone(), pb.clone(), ids.clone(), stop.clone());
        tokio::spawn(async move {
            // What was sent, by id (a send refused for a moment without a
            // healthy majority, on a loaded machine, is not counted).
            let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                for id in &ids {
                    if b.send(pb.actor::<Recorder>(id.clone()), Num(n))
                        .await
                        .is_ok()
                    {
                        sent.entry(id.clone()).or_default().push(n);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            sent
        })
    };
    wait_until("the identities run on a and b", || {
        pa.local_activations().len() + pb.local_activations().len() >= ids.len()
    })
    .await;
    // a's view lags: c and b route to c, which must wait for a.
    pa.hold_view(true);
    let (c, pc, _ec) = member("ho_c", Some(seed)).await;
    assert_eq!(c.name(), c_name);
    wait_view(&[&pb, &pc], &[a.name(), b.name(), c.name()]).await;
    let on_a: Vec<String> = pa
        .local_activations()
        .into_iter()
        .map(|x| x.identity.id)
        .collect();
    assert!(!on_a.is_empty(), "some moved identities ran on a");
    wait_until("c claims a's identities and waits", || {
        pc.stats()
            .claim_retries
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    })
    .await;
    let early = pc.local_activations();
    assert!(
        on_a.iter()
            .all(|id| !early.iter().any(|x| &x.identity.id == id)),
        "c ran an identity a still runs"
    );
    pa.hold_view(false);
    wait_view(&[&pa], &[a.name(), b.name(), c.name()]).await;
    wait_until("c runs every moved identity", || {
        let local = pc.local_activations();
        ids.iter()
            .all(|id| local.iter().any(|a| &a.identity.id == id))
    })
    .await;
    // Keep sending a little after the move.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.await.unwrap();
    let total: usize = sent.values().map(|v| v.len()).sum();
    wait_until("every message was handled", || {
        RECORDED.lock().unwrap().len() >= total
    })
    .await;

    let recorded = RECORDED.lock().unwrap().clone();
    for id in &ids {
        let mine: Vec<&(String, String, u64)> = recorded.iter().filter(|r| &r.0 == id).collect();
        // Each number handled once: nothing lost, nothing twice.
        let mut nums: Vec<u64> = mine.iter().map(|r| r.2).collect();
        nums.sort_unstable();
        assert_eq!(nums, sent[id], "{id}");
        // Handled on the old owner, then on c: never back and forth, and
        // in order on each.
        let first_on_c = mine.iter().position(|r| r.1 == c_name).expect("moved to c");
        assert!(
            mine[first_on_c..].iter().all(|r| r.1 == c_name),
            "{id}: {mine:?}"
        );
        assert!(
            mine[..first_on_c].windows(2).all(|w| w[0].2 < w[1].2),
            "{id}"
        );
        let live = LIVE.lock().unwrap()[id];
        assert_eq!(live.1, 1, "{id}: two activations at once");
    }
    let moved = pa
        .stats()
        .handed_off
        .load(std::sync::atomic::Ordering::Relaxed)
        + pb.stats()
            .handed_off
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(moved, ids.len() as u64);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
