//! Delivery guarantees to placed actors on clustered nodes over TCP: a
//! message is sent again until its activation has handled it (so a handler
//! slower than the first resend runs twice at-least-once and once
//! exactly-once), nothing sent at-least-once is lost when its owner goes
//! away with messages in flight, a message never acknowledged fails with
//! its deadline, a payload is decoded within the owner's memory limit, and
//! an exactly-once message sent again after its owner handed off is not
//! handled again by the new owner, and a delivery still waiting when its
//! node shuts down fails at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use joerl_dist::cluster::placement::{DeliveryError, Guarantee, PlacedActor, Placements};
use joerl_dist::cluster::placement::{PlacedServer, RetryPolicy};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request};
use joerl_dist::{Actor, ActorContext, Message, placed};
use serde::{Deserialize, Serialize};

/// A numbered message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num(u64);
joerl_dist::remote_message!(Num, "placement_delivery::Num");

/// What every activation of the test's kinds handled: (node, id, number),
/// in order. The nodes share this process, so a node that goes away
/// leaves its record here.
static HANDLED: Mutex<Vec<(String, String, u64)>> = Mutex::new(Vec::new());

fn handled(id: &str) -> Vec<u64> {
    HANDLED
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, i, _)| i == id)
        .map(|(_, _, n)| *n)
        .collect()
}

/// Records each number; takes `pause` over each.
struct Record {
    id: String,
    pause: Duration,
}

impl Record {
    async fn handle(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Some(Num(n)) = msg.downcast_ref::<Num>() {
            tokio::time::sleep(self.pause).await;
            HANDLED.lock().unwrap().push((
                ctx.node().unwrap_or("").to_string(),
                self.id.clone(),
                *n,
            ));
        }
    }
}

/// Handles at once.
struct Quick(Record);

impl Actor for Quick {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        self.0.handle(msg, ctx).await;
    }
}

impl PlacedActor for Quick {
    fn activate(id: &str) -> Self {
        Quick(Record {
            id: id.to_string(),
            pause: Duration::ZERO,
        })
    }
    fn guarantee() -> Guarantee {
        Guarantee::AtLeastOnce
    }
}
placed!(Quick, "placement_delivery::Quick");

/// Takes 2.5 s over each message: longer than the first two resends
/// (0.5 s, then 1 s later).
struct Slow(Record);

impl Actor for Slow {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        self.0.handle(msg, ctx).await;
    }
}

impl PlacedActor for Slow {
    fn activate(id: &str) -> Self {
        Slow(Record {
            id: id.to_string(),
            pause: Duration::from_millis(2500),
        })
    }
}
placed!(Slow, "placement_delivery::Slow");

async fn three(prefix: &str) -> Vec<PlacedMember> {
    placed_three(prefix, "placement-delivery").await
}

/// An id of `kind` whose owner is `node`, as `p` places.
fn id_owned_by(p: &Placements, kind: &str, node: &str, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| {
            p.owner(p.actor_of(kind, id.clone()).identity())
                .is_ok_and(|o| o == node)
        })
        .expect("some id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_resend_runs_twice_at_least_once_and_once_exactly_once() {
    init_tracing();
    let all = three("pd_slow").await;
    let (a, b) = (&all[0], &all[1]);
    let kind = "placement_delivery::Slow";
    let twice = id_owned_by(&a.1, kind, b.0.name(), "twice");
    let once = id_owned_by(&a.1, kind, b.0.name(), "once");

    // At-least-once: acknowledged after the first handling, and the copy
    // sent while it ran is handled again.
    let r = a.1.actor_of(kind, twice.clone());
    a.1.deliver(&r, Num(1), Guarantee::AtLeastOnce)
        .await
        .expect("acknowledged");
    assert!(a.1.delivery_stats().resent.load(Ordering::Relaxed) >= 1);
    wait_until("the resent copy is handled too", || {
        handled(&twice).len() >= 2
    })
    .await;
    assert!(handled(&twice).iter().all(|n| *n == 1));

    // Exactly-once: the copies are dropped by the owner's window.
    let before = b.1.stats().duplicates_dropped.load(Ordering::Relaxed);
    let r = a.1.actor_of(kind, once.clone());
    a.1.deliver(&r, Num(7), Guarantee::ExactlyOnce)
        .await
        .expect("acknowledged");
    wait_until("the owner dropped a copy", || {
        b.1.stats().duplicates_dropped.load(Ordering::Relaxed) > before
    })
    .await;
    assert_eq!(handled(&once), vec![7], "handled once");
    assert_eq!(a.1.unacknowledged(), 0);

    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sent_at_least_once_is_lost_when_its_owner_goes_away_with_messages_in_flight() {
    init_tracing();
    let mut all = three("pd_gone").await;
    let kind = "placement_delivery::Quick";
    let victim = all[2].0.name().to_string();
    let id = id_owned_by(&all[0].1, kind, &victim, "gone");
    let p = all[0].1.clone();
    const N: u64 = 300;
    // `tell` uses the kind's guarantee: at-least-once for `Quick`.
    let sender = tokio::spawn(async move {
        let r = p.actor_of(kind, id.clone());
        let mut results = BTreeMap::new();
        let mut tasks = Vec::new();
        for n in 1..=N {
            let (p, r) = (p.clone(), r.clone());
            tasks.push(tokio::spawn(async move { (n, p.tell(&r, Num(n)).await) }));
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in tasks {
            let (n, res) = t.await.unwrap();
            results.insert(n, res);
        }
        (id, results)
    });
    // The owner goes while numbers are on their way to it.
    let gone_id = id_owned_by(&all[0].1, kind, &victim, "gone");
    wait_until("the owner handled some", || handled(&gone_id).len() >= 20).await;
    let (v, _, _e) = all.remove(2);
    v.shutdown().await;
    let (id, results) = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("every delivery ends")
        .unwrap();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    let got: BTreeSet<u64> = handled(&id).into_iter().collect();
    let lost: Vec<u64> = (1..=N).filter(|n| !got.contains(n)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let on: BTreeSet<String> = HANDLED
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, i, _)| *i == id)
        .map(|(n, _, _)| n.clone())
        .collect();
    assert!(
        on.len() >= 2,
        "handled on the owner and then a survivor: {on:?}"
    );
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_never_acknowledged_fails_with_its_deadline() {
    init_tracing();
    let all = three("pd_late").await;
    let a = &all[0];
    let r = a.1.actor_of("placement_delivery::Slow", "late");
    let e =
        a.1.deliver_within(&r, Num(1), Guarantee::AtLeastOnce, Duration::from_secs(1))
            .await
            .unwrap_err();
    match e {
        DeliveryError::DeadlinePassed {
            deadline, attempts, ..
        } => {
            assert_eq!(deadline, Duration::from_secs(1));
            assert!(attempts >= 2, "{attempts} sends");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.1.unacknowledged(), 0, "not kept after its deadline");
    // A type that is not a remote_message cannot be kept.
    struct Local;
    let e =
        a.1.deliver(&r, Local, Guarantee::AtLeastOnce)
            .await
            .unwrap_err();
    assert!(matches!(e, DeliveryError::NotRemote { .. }), "{e}");
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

/// Which node answers (a request safe to repeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WhereAreYou;
impl Request for WhereAreYou {
    type Reply = String;
}

/// A placed gen_server that says where it runs.
struct Teller;

impl GenServer for Teller {
    type Calls = (WhereAreYou,);
    type Casts = ();
}

impl HandleCall<WhereAreYou> for Teller {
    async fn handle_call(
        &mut self,
        _req: WhereAreYou,
        _from: ReplyTo<String>,
        ctx: &mut ActorContext,
    ) -> CallResponse<String> {
        CallResponse::Reply(ctx.node().unwrap_or("").to_string())
    }
}
joerl_dist::remote_server!(Teller);

impl PlacedServer for Teller {
    fn activate(_id: &str) -> Self {
        Teller
    }
}
placed!(server Teller, "placement_delivery::Teller");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_retried_until_a_survivor_answers_after_its_owner_goes() {
    init_tracing();
    let mut all = three("pd_retry").await;
    let kind = "placement_delivery::Teller";
    let victim = all[2].0.name().to_string();
    let id = id_owned_by(&all[0].1, kind, &victim, "t");
    let p = all[0].1.clone();
    let r = p.actor_of(kind, id);
    let policy = RetryPolicy {
        attempts: 20,
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
        multiplier: 2.0,
    };
    let first = p
        .call_idempotent::<Teller, _>(&r, WhereAreYou, Duration::from_secs(1), policy)
        .await
        .expect("the owner answers");
    assert_eq!(first, victim);
    // The owner goes while the caller's view is held back for 600 ms (it
    // keeps routing to the owner that is gone): the attempts meanwhile fail
    // and are retried until the released view routes to the new owner.
    p.hold_view(true);
    let (v, _, _e) = all.remove(2);
    v.shutdown().await;
    let release = {
        let p = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            p.hold_view(false);
        })
    };
    let t = std::time::Instant::now();
    let next = p
        .call_idempotent::<Teller, _>(&r, WhereAreYou, Duration::from_secs(1), policy)
        .await
        .expect("a survivor answers");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "answered after {:?}, while the view was still held",
        t.elapsed()
    );
    release.await.unwrap();
    assert_ne!(next, victim);
    assert!(all.iter().any(|m| m.0.name() == next), "{next}");
    for (n, _, _) in all {
        n.shutdown().await;
    }
}

/// Many small values: a payload that claims about eight times its size on
/// the wire when decoded (a `u64` length per string).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wide(Vec<String>);
joerl_dist::remote_message!(Wide, "placement_delivery::Wide");

/// Records how many strings each `Wide` it handles holds.
struct Widths;

static WIDTHS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

impl Actor for Widths {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Some(Wide(v)) = msg.downcast_ref::<Wide>() {
            WIDTHS.lock().unwrap().push(v.len());
        }
    }
}

impl PlacedActor for Widths {
    fn activate(_id: &str) -> Self {
        Widths
    }
}
placed!(Widths, "placement_delivery::Widths");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guaranteed_payload_is_decoded_within_the_owners_memory_limit() {
    init_tracing();
    let kind = "placement_delivery::Widths";
    let a = placed_member("pd_limit_a", "placement-delivery-limit", None).await;
    let seed = a.0.cluster().unwrap().gossip_addr();
    // The owner decodes at most 1 MiB per message.
    let e = epmd().await;
    let node = builder("pd_limit_b", e.local_addr())
        .max_message_memory(1 << 20)
        .start()
        .await
        .unwrap();
    node.enable_clustering(cluster_config("placement-delivery-limit", Some(seed)))
        .await
        .unwrap();
    let p = joerl_dist::cluster::placement::start(&node).unwrap();
    let b: PlacedMember = (node, p, e);
    let names: BTreeSet<String> = [a.0.name().to_string(), b.0.name().to_string()].into();
    for m in [&a, &b] {
        wait_until("both place on both", || m.1.members() == names).await;
        wait_until("both know the leader", || m.1.leader().is_some()).await;
    }
    let r =
        a.1.actor_of(kind, id_owned_by(&a.1, kind, b.0.name(), "wide"));

    // 10 strings: handled.
    a.1.deliver(&r, Wide(vec![String::new(); 10]), Guarantee::AtLeastOnce)
        .await
        .expect("acknowledged");
    wait_until("the small one is handled", || {
        WIDTHS.lock().unwrap().contains(&10)
    })
    .await;

    // 200,000 empty strings: ~200 KB on the wire (the envelope is within
    // the owner's 1 MiB), ~1.6 MB claimed when its payload is decoded (over
    // it, though within 64 times its size): acknowledged, counted, not
    // handled.
    let undecodable = b.1.stats().undecodable.load(Ordering::Relaxed);
    a.1.deliver(
        &r,
        Wide(vec![String::new(); 200_000]),
        Guarantee::AtLeastOnce,
    )
    .await
    .expect("acknowledged, though not handled");
    assert_eq!(
        b.1.stats().undecodable.load(Ordering::Relaxed),
        undecodable + 1
    );
    a.1.deliver(&r, Wide(vec![String::new(); 11]), Guarantee::AtLeastOnce)
        .await
        .expect("acknowledged");
    wait_until("the next one is handled", || {
        WIDTHS.lock().unwrap().contains(&11)
    })
    .await;
    assert!(!WIDTHS.lock().unwrap().contains(&200_000));

    for (n, _, _) in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_message_sent_again_after_its_owner_handed_off_is_not_handled_twice() {
    init_tracing();
    let all = three("pd_window").await;
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    let kind = "placement_delivery::Quick";
    let id = id_owned_by(&a.1, kind, b.0.name(), "window");
    let r = a.1.actor_of(kind, id.clone());

    // The sender's acknowledgements are lost (its acknowledgement actor is
    // gone), so it sends the message again and again.
    let acks =
        a.0.whereis(joerl_dist::cluster::placement::outbox::ACK_SERVER)
            .expect("the acknowledgement actor runs");
    a.0.exit(acks, joerl_dist::ExitReason::Kill).unwrap();
    wait_until("the acknowledgement actor is gone", || !a.0.is_alive(acks)).await;
    let p = a.1.clone();
    let r2 = r.clone();
    let sending = tokio::spawn(async move {
        p.deliver_within(&r2, Num(1), Guarantee::ExactlyOnce, Duration::from_secs(60))
            .await
    });
    wait_until("the owner handled it", || handled(&id) == vec![1]).await;

    // The identity moves to c; the copies sent again reach c, whose window
    // has what b handled: dropped there, not handled again.
    let dropped = c.1.stats().duplicates_dropped.load(Ordering::Relaxed);
    a.1.migrate(r.identity(), c.0.name())
        .await
        .expect("migrated");
    wait_until("c runs the identity", || {
        c.1.local_activations()
            .iter()
            .any(|x| x.identity == *r.identity())
    })
    .await;
    wait_until("a copy sent again reached c and was dropped", || {
        c.1.stats().duplicates_dropped.load(Ordering::Relaxed) > dropped
    })
    .await;
    assert_eq!(handled(&id), vec![1], "handled once, by b");
    sending.abort();

    for (n, _, _) in all {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_when_its_node_shuts_down_fails_at_once_as_stopped() {
    init_tracing();
    let mut all = three("pd_stop").await;
    let kind = "placement_delivery::Slow";
    let id = id_owned_by(&all[0].1, kind, all[1].0.name(), "stop");
    let r = all[0].1.actor_of(kind, id.clone());
    let p = all[0].1.clone();
    // Handled in 2.5 s, acknowledged after that: still waiting when the
    // sending node shuts down.
    let waiting = tokio::spawn(async move {
        p.deliver_within(&r, Num(1), Guarantee::AtLeastOnce, Duration::from_secs(60))
            .await
    });
    let owner = all[1].1.clone();
    wait_until("the owner runs the identity", || {
        owner
            .local_activations()
            .iter()
            .any(|x| x.identity.id == id)
    })
    .await;
    let (a, _, _e) = all.remove(0);
    let t = std::time::Instant::now();
    a.shutdown().await;
    let res = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the delivery ends well before its 60 s deadline")
        .unwrap();
    assert!(matches!(res, Err(DeliveryError::Stopped)), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(20));

    for (n, _, _) in all {
        n.shutdown().await;
    }
}
