//! The leader's directives on clustered nodes over TCP: a migration moves
//! one identity (with its state, for a kind that implements `Migrate`, or
//! fresh), a drain moves every identity off a member and places nothing
//! new on it, registered identities are activated eagerly, stay, and come
//! back on a survivor when their owner leaves, with no message sent.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use joerl_dist::cluster::placement::{
    CommandError, DirectiveError, Migrate, PlacedActor, Placements,
};
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, Pid, placed};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A numbered message to a tally.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num(u64);
joerl_dist::remote_message!(Num, "placement_moves::Num");

/// A tally's answer to one [`Num`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Got {
    id: String,
    node: String,
    num: u64,
    /// How many numbers this identity handled in all its activations
    /// whose state it carries.
    total: u64,
}
joerl_dist::remote_message!(Got, "placement_moves::Got");

/// Counts the numbers it handled, answering each.
struct Tally {
    id: String,
    total: u64,
}

impl Tally {
    async fn handle(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Some(Num(n)) = msg.downcast_ref::<Num>() {
            self.total += 1;
            if let Some(from) = ctx.sender() {
                let got = Got {
                    id: self.id.clone(),
                    node: ctx.node().unwrap_or("").to_string(),
                    num: *n,
                    total: self.total,
                };
                let _ = ctx.send(from, got).await;
            }
        }
    }
}

impl Actor for Tally {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        self.handle(msg, ctx).await;
    }
}

impl PlacedActor for Tally {
    fn activate(id: &str) -> Self {
        Tally {
            id: id.to_string(),
            total: 0,
        }
    }
}

impl Migrate for Tally {
    type State = u64;
    fn export(&self) -> u64 {
        self.total
    }
    fn import(id: &str, total: u64) -> Self {
        Tally {
            id: id.to_string(),
            total,
        }
    }
}
placed!(migrate Tally, "placement_moves::Tally");

/// The same, without `Migrate`: starts fresh wherever it moves; and idle
/// after 200 ms.
struct Fresh(Tally);

impl Actor for Fresh {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        self.0.handle(msg, ctx).await;
    }
}

impl PlacedActor for Fresh {
    fn activate(id: &str) -> Self {
        Fresh(Tally::activate(id))
    }
    fn idle_timeout() -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}
placed!(Fresh, "placement_moves::Fresh");

async fn three(prefix: &str) -> Vec<PlacedMember> {
    placed_three(prefix, "placement-moves").await
}

/// A member of `all` other than `node`.
fn another(all: &[(DistributedSystem, Placements, joerl_epmd::EpmdServer)], node: &str) -> String {
    all.iter()
        .map(|m| m.0.name().to_string())
        .find(|n| n != node)
        .expect("another member")
}

/// Collects [`Got`] answers.
struct Collect(mpsc::UnboundedSender<Got>);
impl Actor for Collect {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(g) = msg.downcast::<Got>() {
            let _ = self.0.send(*g);
        }
    }
}

fn collector(node: &DistributedSystem) -> (Pid, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (node.spawn(Collect(tx)), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Got>) -> Got {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an answer within the deadline")
        .expect("open")
}

/// Where `identity` runs now, among `all` (waits until exactly one runs it).
async fn running_on(
    all: &[(DistributedSystem, Placements, joerl_epmd::EpmdServer)],
    kind: &str,
    id: &str,
) -> String {
    let mut on = Vec::new();
    wait_until(&format!("{kind}/{id} runs on one member"), || {
        on = all
            .iter()
            .filter(|(_, p, _)| {
                p.local_activations()
                    .iter()
                    .any(|a| a.identity.kind == kind && a.identity.id == id)
            })
            .map(|(n, _, _)| n.name().to_string())
            .collect();
        on.len() == 1
    })
    .await;
    on.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_moves_the_identity_with_its_state_and_loses_nothing_sent_meanwhile() {
    init_tracing();
    let all = three("mv").await;
    let (b, pb) = (&all[1].0, &all[1].1);
    let tally = pb.actor::<Tally>("t1");
    let owner = pb.owner(tally.identity()).unwrap();
    let target = another(&all, &owner);
    let (me, mut rx) = collector(b);
    for n in 1..=50 {
        b.send_from(Some(me), &tally, Num(n)).await.unwrap();
    }
    // Half of them answered before the move, so the activation runs.
    let mut got: BTreeMap<u64, Got> = BTreeMap::new();
    while got.len() < 25 {
        let g = next(&mut rx).await;
        got.insert(g.num, g);
    }
    // Asked of a member that may not lead: it names the leader.
    pb.migrate(tally.identity(), &target).await.unwrap();
    for n in 51..=100 {
        b.send_from(Some(me), &tally, Num(n)).await.unwrap();
    }
    while got.len() < 100 {
        let g = next(&mut rx).await;
        assert!(got.insert(g.num, g.clone()).is_none(), "{} twice", g.num);
    }
    // Every number handled once; the count went on where it was.
    let totals: BTreeSet<u64> = got.values().map(|g| g.total).collect();
    assert_eq!(totals, (1..=100).collect(), "the state moved with it");
    assert_eq!(
        running_on(&all, "placement_moves::Tally", "t1").await,
        target
    );
    for (_, p, _) in &all {
        wait_until("every member routes to the target", || {
            p.owner(tally.identity()).ok().as_deref() == Some(target.as_str())
        })
        .await;
    }
    // The state was taken by the new activation, not rebuilt from messages.
    let target_p = &all.iter().find(|m| m.0.name() == target).unwrap().1;
    assert_eq!(
        target_p
            .stats()
            .state_received
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    b.send_from(Some(me), &tally, Num(101)).await.unwrap();
    let last = next(&mut rx).await;
    assert_eq!((last.node.as_str(), last.total), (target.as_str(), 101));
    // A kind without Migrate starts fresh on its target.
    let fresh = pb.actor::<Fresh>("f1");
    b.send_from(Some(me), &fresh, Num(1)).await.unwrap();
    let first = next(&mut rx).await;
    let elsewhere = another(&all, &first.node);
    pb.migrate(fresh.identity(), &elsewhere).await.unwrap();
    wait_until("b routes f1 to its target", || {
        pb.owner(fresh.identity()).ok().as_deref() == Some(elsewhere.as_str())
    })
    .await;
    b.send_from(Some(me), &fresh, Num(2)).await.unwrap();
    let moved = next(&mut rx).await;
    assert_eq!((moved.node.as_str(), moved.total), (elsewhere.as_str(), 1));
    // A migration to a node that is no member is refused, typed.
    let refused = pb.migrate(fresh.identity(), "nobody@nowhere").await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Directive(DirectiveError::NotAMember(_)))
        ),
        "{refused:?}"
    );
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_every_identity_off_its_member_and_places_nothing_new_there() {
    init_tracing();
    let all = three("dr").await;
    let (a, pa) = (&all[0].0, &all[0].1);
    let drained = all[2].0.name().to_string();
    let pc = &all[2].1;
    let ids: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    let (me, mut rx) = collector(a);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for id in &ids {
        a.send_from(Some(me), pa.actor::<Tally>(id.clone()), Num(1))
            .await
            .unwrap();
    }
    let mut on_c = 0;
    for _ in &ids {
        let g = next(&mut rx).await;
        on_c += usize::from(g.node == drained);
        totals.insert(g.id, g.total);
    }
    assert!(on_c > 0, "the member to drain runs some identities");

    // Drained while messages flow: every one is handled once, and the
    // state of every identity goes on.
    let flow = {
        let (a, pa, ids) = (a.clone(), pa.clone(), ids.clone());
        tokio::spawn(async move {
            for round in 2..=6 {
                for id in &ids {
                    a.send_from(Some(me), pa.actor::<Tally>(id.clone()), Num(round))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    pa.drain(&drained).await.unwrap();
    flow.await.unwrap();
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    while seen.len() < ids.len() * 5 {
        let g = next(&mut rx).await;
        assert!(
            seen.insert((g.id.clone(), g.num)),
            "{}#{} twice",
            g.id,
            g.num
        );
        let t = totals.entry(g.id).or_default();
        *t = (*t).max(g.total);
    }
    assert!(
        totals.values().all(|t| *t == 6),
        "every identity counted all six: {totals:?}"
    );
    wait_until("the drained member runs nothing", || {
        pc.local_activations().is_empty()
    })
    .await;
    for (_, p, _) in &all {
        wait_until("every member knows the drain", || {
            p.directives().draining.contains(&drained)
        })
        .await;
    }
    // Nothing new goes there.
    for i in 0..60 {
        let r = pa.actor::<Tally>(format!("new{i}"));
        assert_ne!(pa.owner(r.identity()).unwrap(), drained);
    }
    // The last member not drained cannot be.
    let b = all[1].0.name().to_string();
    pa.drain(&b).await.unwrap();
    let last = pa.drain(a.name()).await;
    assert!(
        matches!(
            last,
            Err(CommandError::Directive(DirectiveError::LastMember(_)))
        ),
        "{last:?}"
    );
    // Undrained, a member takes its share again.
    pa.undrain(&drained).await.unwrap();
    pa.undrain(&b).await.unwrap();
    wait_until("the undrained member owns some again", || {
        ids.iter().any(|id| {
            pc.owner(pc.actor::<Tally>(id.clone()).identity()).ok() == Some(drained.clone())
        })
    })
    .await;
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_identities_stay_and_come_back_on_a_survivor_with_no_message_sent() {
    init_tracing();
    let all = three("rg").await;
    let pa = all[0].1.clone();
    let ids: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    pa.register_many("placement_moves::Fresh", ids.clone())
        .await
        .unwrap();
    let count = |all: &[(DistributedSystem, Placements, joerl_epmd::EpmdServer)]| {
        all.iter()
            .map(|(_, p, _)| p.local_activations().len())
            .sum::<usize>()
    };
    wait_until("every registered identity runs", || count(&all) == 30).await;
    // Past several idle times (200 ms) they stay.
    let stable_since = std::time::Instant::now();
    while stable_since.elapsed() < Duration::from_millis(1500) {
        assert_eq!(count(&all), 30, "a registered identity was passivated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The member holding some leaves: they start on the others at once.
    let mut all = all;
    let gone = all.remove(2);
    assert!(!gone.1.local_activations().is_empty());
    let left = gone.0.name().to_string();
    gone.0.shutdown().await;
    for (_, p, _) in &all {
        wait_until("the leaver is out of the view", || {
            !p.members().contains(&left)
        })
        .await;
    }
    wait_until("every registered identity runs on a survivor", || {
        count(&all) == 30
    })
    .await;
    let mut ran: BTreeSet<String> = BTreeSet::new();
    for (_, p, _) in &all {
        for a in p.local_activations() {
            assert!(ran.insert(a.identity.id.clone()), "{} twice", a.identity);
        }
    }
    assert_eq!(ran, ids.iter().cloned().collect());
    // An unregistered one passivates again.
    pa.unregister("placement_moves::Fresh", "r0").await.unwrap();
    wait_until("the unregistered identity passivated", || {
        all.iter()
            .all(|(_, p, _)| !p.local_activations().iter().any(|a| a.identity.id == "r0"))
    })
    .await;
    assert_eq!(count(&all), 29);
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_undone_at_once_loses_nothing_and_keeps_the_count() {
    init_tracing();
    let all = three("un").await;
    let (b, pb) = (&all[1].0, &all[1].1);
    let (me, mut rx) = collector(b);
    let mut got: BTreeMap<u64, Got> = BTreeMap::new();
    let mut sent = 0;
    for round in 0..3 {
        let tally = pb.actor::<Tally>(format!("u{round}"));
        let owner = pb.owner(tally.identity()).unwrap();
        let target = another(&all, &owner);
        let base = round * 1000;
        for n in 1..=20 {
            b.send_from(Some(me), &tally, Num(base + n)).await.unwrap();
        }
        // Moved away and back at once, while messages flow (whether the
        // target claimed it in between depends on timing).
        pb.migrate(tally.identity(), &target).await.unwrap();
        for n in 21..=40 {
            b.send_from(Some(me), &tally, Num(base + n)).await.unwrap();
        }
        pb.unpin(tally.identity()).await.unwrap();
        for n in 41..=60 {
            b.send_from(Some(me), &tally, Num(base + n)).await.unwrap();
        }
        sent += 60;
        while got.len() < sent {
            let g = next(&mut rx).await;
            assert!(got.insert(g.num, g.clone()).is_none(), "{} twice", g.num);
        }
        let totals: BTreeSet<u64> = got
            .values()
            .filter(|g| g.num > base && g.num <= base + 60)
            .map(|g| g.total)
            .collect();
        assert_eq!(totals, (1..=60).collect(), "u{round}: the count went on");
        let id = format!("u{round}");
        assert_eq!(running_on(&all, "placement_moves::Tally", &id).await, owner);
        b.send_from(Some(me), &tally, Num(base + 61)).await.unwrap();
        let last = next(&mut rx).await;
        assert_eq!((last.node.as_str(), last.total), (owner.as_str(), 61));
        sent += 1;
        got.insert(last.num, last);
    }
    for (n, _, _) in all {
        n.shutdown().await;
    }
}
