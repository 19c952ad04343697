//! What a connection loss costs, counted exactly, and how fast a node gets back
//! after a half-open cut.
//!
//! Node a reaches node b through a proxy (a finds b in its own EPMD, where b is
//! registered at the proxy's port), so the test can cut the connection while
//! both nodes live on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, PeerStats, remote_message};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Numbered(u64);
remote_message!(Numbered, "test::loss::Numbered");

/// Counts what it receives and checks that numbers only grow.
struct Counter {
    count: Arc<AtomicU64>,
    last: Option<u64>,
}

impl Actor for Counter {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(n) = msg.downcast::<Numbered>() {
            if let Some(last) = self.last {
                assert!(n.0 > last, "{} arrived after {last}", n.0);
            }
            self.last = Some(n.0);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn peer_stats(node: &DistributedSystem, peer: &str) -> PeerStats {
    node.stats()
        .peers
        .into_iter()
        .find(|p| p.node == peer)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_out_equals_what_the_receiver_never_got_over_ten_cuts() {
    init_tracing();
    // Without a grace period a cut is a node-down, as in Erlang, and what was
    // in flight is lost: the accounting must say exactly how much.
    let pair = pair(
        "loss",
        |n| n.queue_bytes(256 * 1024).grace_period(Duration::ZERO),
        |n| n.grace_period(Duration::ZERO),
    )
    .await;
    let (a, b, proxy) = (&pair.a, &pair.b, &pair.proxy);
    a.connect(b.name()).await.unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let sink = b.spawn(Counter {
        count: count.clone(),
        last: None,
    });
    const SENT: u64 = 400_000;
    const CUTS: u64 = 10;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..SENT {
                a.send(sink, Numbered(i)).await.expect("send");
            }
        })
    };
    // Cut ten times while the stream flows, each time on a live connection. The
    // small queue keeps the sender paced by the connection.
    for k in 1..=CUTS {
        let at = SENT * k / (CUTS + 1);
        wait_until("the stream reached the next cut", || {
            let s = peer_stats(a, b.name());
            s.connected && s.reconnects == k - 1 && s.msgs_out >= at
        })
        .await;
        proxy.cut();
        wait_until("reconnected after the cut", || {
            peer_stats(a, b.name()).reconnects >= k
        })
        .await;
    }
    sender.await.unwrap();
    // Once the last reconnect has settled every loss and the rest is
    // acknowledged, the count of dropped messages is exact.
    wait_until("every message acknowledged or counted", || {
        let s = peer_stats(a, b.name());
        s.connected && s.unacked_out == 0
    })
    .await;
    let s = peer_stats(a, b.name());
    assert_eq!(s.msgs_out, SENT);
    assert_eq!(s.dropped_out, s.dropped_out_unsent + s.dropped_out_lost);
    wait_until("the receiver has every message that was not lost", || {
        count.load(Ordering::Relaxed) == SENT - s.dropped_out
    })
    .await;
    let received = count.load(Ordering::Relaxed);
    println!(
        "cuts={CUTS} sent={SENT} received={received} dropped_out={} unsent={} lost={} reconnects={}",
        s.dropped_out, s.dropped_out_unsent, s.dropped_out_lost, s.reconnects
    );
    assert!(s.reconnects >= CUTS, "{s:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_after_a_half_open_cut_does_not_wait_for_the_connect_timeout() {
    init_tracing();
    // A connect timeout far beyond the test's deadline: a dial that waited
    // for it (as when b refused a's redial as "already connected") fails the test.
    let pair = pair(
        "half",
        |n| {
            n.connect_timeout(Duration::from_secs(120))
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        },
        |n| n.tick_timeout(Duration::from_secs(60)),
    )
    .await;
    let (a, b, proxy) = (&pair.a, &pair.b, &pair.proxy);
    let count = Arc::new(AtomicU64::new(0));
    let sink = b.spawn(Counter {
        count: count.clone(),
        last: None,
    });
    a.connect(b.name()).await.unwrap();
    // b installs the connection once it has read a's last handshake record.
    wait_until("b has the connection", || {
        b.nodes().contains(&a.name().to_string())
    })
    .await;
    let mut times = Vec::new();
    for i in 0..20u64 {
        let before = peer_stats(a, b.name()).reconnects;
        // b keeps its side open and hears nothing: its connection is half-open.
        proxy.cut_half();
        let cut = Instant::now();
        wait_until("a redialed and b took the new connection", || {
            let s = peer_stats(a, b.name());
            s.connected && s.reconnects > before
        })
        .await;
        times.push(cut.elapsed());
        // The new connection carries messages both ways.
        a.send(sink, Numbered(i)).await.unwrap();
        wait_until("the message arrived", || {
            count.load(Ordering::Relaxed) == i + 1
        })
        .await;
    }
    times.sort();
    println!(
        "half_open_reconnect cuts=20 p50_ms={:.1} max_ms={:.1}",
        times[10].as_secs_f64() * 1e3,
        times[19].as_secs_f64() * 1e3
    );
    assert_eq!(peer_stats(b, a.name()).reconnects, 20);
    a.shutdown().await;
    b.shutdown().await;
}
