//! A transient cut loses nothing: numbered messages flow from a to b through a
//! proxy that cuts the connection (with a FIN, with an RST, or by going silent
//! past the tick timeout) while both nodes live on. Every message must arrive
//! once, in order, and neither node may report the other down.
//!
//! Node a finds b in its own EPMD, where b is registered at the proxy's port;
//! b cannot find a (a is registered elsewhere), so only a's dials mend a cut.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use joerl_dist::{
    Actor, ActorContext, Message, NodeBuilder, NodeEvent, NodeEvents, remote_message,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Numbered(u64);
remote_message!(Numbered, "test::cuts::Numbered");

/// Counts what it receives; a duplicate or a message out of order is counted
/// as a fault.
struct Counter {
    count: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    next: u64,
}

impl Actor for Counter {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(n) = msg.downcast::<Numbered>() {
            if n.0 != self.next {
                self.faults.fetch_add(1, Ordering::Relaxed);
                eprintln!("expected {} got {}", self.next, n.0);
            }
            self.next = n.0 + 1;
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A small queue, so the sender is paced by the connection.
fn tune_small(n: NodeBuilder) -> NodeBuilder {
    n.queue_bytes(256 * 1024)
}

/// Asserts that no node-down was reported on `events`.
fn no_node_down(events: &mut NodeEvents, who: &str) {
    while let Some(event) = events.try_recv() {
        assert!(
            !matches!(event, NodeEvent::Down { .. }),
            "{who} reported {event:?} for a cut that was mended"
        );
    }
}

/// Streams `SENT` numbered messages from a to b, cutting three times with
/// `cut` (which may wait, to go silent for a while), and checks that every
/// message arrived once, in order, with no node-down on either side.
async fn stream_through_cuts(pair: Pair, cut: impl AsyncFn(&Proxy)) {
    let (a, b, proxy) = (&pair.a, &pair.b, &pair.proxy);
    a.connect(b.name()).await.unwrap();
    wait_until("b has the connection", || {
        b.nodes().contains(&a.name().to_string())
    })
    .await;
    let mut events_a = a.subscribe();
    let mut events_b = b.subscribe();
    let count = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(AtomicU64::new(0));
    let sink = b.spawn(Counter {
        count: count.clone(),
        faults: faults.clone(),
        next: 0,
    });
    const SENT: u64 = 60_000;
    const CUTS: u64 = 3;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..SENT {
                a.send(sink, Numbered(i)).await.expect("send");
            }
        })
    };
    for k in 1..=CUTS {
        wait_until("the stream reached the next cut", || {
            count.load(Ordering::Relaxed) >= SENT * k / (CUTS + 1)
        })
        .await;
        let before = a.stats().total.reconnects;
        cut(proxy).await;
        wait_until("a connection again", || a.stats().total.reconnects > before).await;
    }
    sender.await.unwrap();
    wait_until("every message arrived", || {
        count.load(Ordering::Relaxed) >= SENT
    })
    .await;
    wait_until("everything acknowledged", || {
        a.stats().total.unacked_out == 0
    })
    .await;
    assert_eq!(count.load(Ordering::Relaxed), SENT, "none twice");
    assert_eq!(faults.load(Ordering::Relaxed), 0, "in order, once each");
    let s = a.stats().total;
    assert_eq!(s.dropped_out, 0, "{s:?}");
    assert!(s.reconnects >= CUTS, "{s:?}");
    no_node_down(&mut events_a, "a");
    no_node_down(&mut events_b, "b");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_with_a_fin_lose_nothing() {
    init_tracing();
    let pair = pair("fin", tune_small, tune_small).await;
    stream_through_cuts(pair, async |p: &Proxy| p.cut()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_with_an_rst_lose_nothing() {
    init_tracing();
    let pair = pair("rst", tune_small, tune_small).await;
    stream_through_cuts(pair, async |p: &Proxy| p.cut_reset()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_cuts_past_the_tick_timeout_lose_nothing() {
    init_tracing();
    // Both sides time the silent connection out after 500 ms, then have 15 s
    // to mend it; the network comes back after 1.5 s.
    let tune = |n: NodeBuilder| {
        n.queue_bytes(256 * 1024)
            .tick_timeout(Duration::from_millis(500))
            .grace_period(Duration::from_secs(15))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(500))
    };
    let pair = pair("silent", tune, tune).await;
    stream_through_cuts(pair, async |p: &Proxy| {
        p.freeze(true);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The old connections are dead on both sides by now.
        p.cut();
        p.freeze(false);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_grace_period_is_one_node_down_then_one_up() {
    init_tracing();
    let tune = |n: NodeBuilder| {
        n.tick_timeout(Duration::from_millis(500))
            .grace_period(Duration::from_millis(800))
            .connect_timeout(Duration::from_millis(300))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(100))
            .reconnect_attempts(1000)
    };
    let pair = pair("long", tune, tune).await;
    let (a, b, proxy) = (&pair.a, &pair.b, &pair.proxy);
    a.connect(b.name()).await.unwrap();
    let mut events = a.subscribe();
    proxy.freeze(true);
    let down = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NodeEvent::Down { node, reason }) = events.recv().await {
                return (node, reason);
            }
        }
    })
    .await
    .expect("a node-down once the grace period is over");
    assert_eq!(down.0, b.name());
    proxy.cut();
    proxy.freeze(false);
    let up = tokio::time::timeout(DEADLINE, async {
        match events.recv().await {
            Some(NodeEvent::Up { node, .. }) => node,
            other => panic!("one down, then one up: {other:?}"),
        }
    })
    .await
    .expect("up again once the network is back");
    assert_eq!(up, b.name());
    a.shutdown().await;
    b.shutdown().await;
}
