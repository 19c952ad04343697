//! The peer table does not grow with churn: nodes that came and went, and that
//! nothing refers to any more, are forgotten; their statistics stay in the totals.

mod common;

use std::time::Duration;

use common::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nodes_that_came_and_went_leave_the_table_empty() {
    init_tracing();
    let epmd = epmd().await;
    let a = builder("table_a", epmd.local_addr())
        .peer_sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    const CYCLES: u64 = 1_000;
    let mut rss_after_warmup = 0;
    for i in 0..CYCLES {
        let b = node(&format!("churn_{i}"), epmd.local_addr()).await;
        let (fwd, mut rx) = forward();
        let sink = b.spawn(fwd);
        a.send(sink, i).await.unwrap();
        let (got, _): (u64, _) = recv(&mut rx).await;
        assert_eq!(got, i);
        b.shutdown().await;
        if i == 99 {
            rss_after_warmup = rss_kib();
        }
    }
    wait_until("every departed node is forgotten", || {
        a.stats().peers.is_empty()
    })
    .await;
    assert!(
        a.known_nodes().is_empty(),
        "the node table forgets them too"
    );
    let stats = a.stats();
    assert_eq!(stats.total.msgs_out, CYCLES, "forgotten peers still count");
    assert_eq!(stats.total.dropped_out, 0);
    println!(
        "peers_known=0 rss_kib_after_100={rss_after_warmup} rss_kib_after_{CYCLES}={}",
        rss_kib()
    );
    // A forgotten node is found again like any other.
    let again = node("churn_7", epmd.local_addr()).await;
    let (fwd, mut rx) = forward();
    let sink = again.spawn(fwd);
    a.send(sink, 7u64).await.unwrap();
    assert_eq!(recv::<u64>(&mut rx).await.0, 7);
    again.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_monitor_or_a_connection_is_kept() {
    init_tracing();
    let epmd = epmd().await;
    let a = builder("keep_a", epmd.local_addr())
        .peer_sweep_interval(Duration::from_millis(20))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .reconnect_attempts(2)
        .start()
        .await
        .unwrap();
    let b = node("keep_b", epmd.local_addr()).await;
    a.connect(b.name()).await.unwrap();
    // Connected: kept through many sweeps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.stats().peers.len(), 1);
    // Down but watched with monitor_node: kept until the NodeDown is delivered.
    let (fwd, mut rx) = forward();
    let watcher = a.spawn(fwd);
    a.monitor_node(watcher, "ghost@127.0.0.1").unwrap();
    let (down, _): (joerl_dist::NodeDown, _) = recv(&mut rx).await;
    assert_eq!(down.node, "ghost@127.0.0.1");
    wait_until("the ghost is forgotten once nothing watches it", || {
        a.stats().peers.len() == 1
    })
    .await;
    assert_eq!(a.stats().peers[0].node, b.name());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_table_says_how_each_node_was_learned_and_where_it_listens() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("info_a", epmd.local_addr()).await;
    let b = node("info_b", epmd.local_addr()).await;
    a.connect(b.name()).await.unwrap();
    wait_until("b has the connection", || {
        b.nodes().contains(&a.name().to_string())
    })
    .await;
    let on_a = a.node_info(b.name()).expect("a knows b");
    assert_eq!(on_a.learned, joerl_dist::Learned::Named);
    assert_eq!(on_a.addr, Some(b.local_addr()), "where a dialed b");
    assert_eq!(on_a.creation, Some(b.creation()));
    assert_eq!(on_a.node_id, joerl_dist::core::node_id(b.name()));
    assert!(on_a.connected);
    let on_b = b.node_info(a.name()).expect("b knows a");
    assert_eq!(on_b.learned, joerl_dist::Learned::Accepted);
    assert_eq!(on_b.addr, None, "b never dialed a");
    assert_eq!(on_b.creation, Some(a.creation()));
    assert_eq!(b.known_nodes().len(), 1);
    b.shutdown().await;
    wait_until("a sees b down", || {
        a.node_info(b.name()).is_some_and(|n| !n.connected)
    })
    .await;
    a.shutdown().await;
}
