//! Multi-node tests in one process: delivery, order, named send, Pids in
//! messages, cookies, simultaneous connect, reconnect after a cut, tick timeout.

mod common;

use std::time::Duration;

use common::*;
use joerl_dist::{
    Actor, ActorContext, CallError, DistError, HandshakeError, Message, NodeBuilder, NodeEvent,
    Pid, SendError, remote_message,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hello {
    text: String,
    reply_to: Pid,
}
remote_message!(Hello, "test::Hello");

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Seq(u64);
remote_message!(Seq, "test::Seq");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_send_delivers_concrete_type_with_sender_and_pids_stay_valid() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("a", epmd.local_addr()).await;
    let b = node("b", epmd.local_addr()).await;
    let (fwd_b, mut rx_b) = forward();
    let sink = b.spawn(fwd_b);
    b.register("sink", sink).unwrap();
    let (fwd_a, mut rx_a) = forward();
    let me = a.spawn(fwd_a);

    a.send(
        ("sink", b.name()),
        Hello {
            text: "hi".into(),
            reply_to: me,
        },
    )
    .await
    .unwrap();
    let (hello, from): (Hello, _) = recv(&mut rx_b).await;
    assert_eq!(hello.text, "hi");
    assert_eq!(from, None, "sent from outside an actor: no sender");
    // The Pid inside the message reaches the actor on node a.
    b.send(hello.reply_to, "pong".to_string()).await.unwrap();
    let (text, _): (String, _) = recv(&mut rx_a).await;
    assert_eq!(text, "pong");
    // A send from an actor carries its Pid as the sender, across nodes.
    b.send_from(Some(sink), me, Seq(1)).await.unwrap();
    let (seq, from): (Seq, _) = recv(&mut rx_a).await;
    assert_eq!((seq, from), (Seq(1), Some(sink)));
    assert_eq!(a.nodes(), vec![b.name().to_string()]);
    a.shutdown().await;
    b.shutdown().await;
}

/// Sends `count` Seq messages to `to` as fast as the queue allows, from an actor.
struct Blaster {
    to: Pid,
    count: u64,
}

impl Actor for Blaster {
    async fn started(&mut self, ctx: &mut ActorContext) {
        for i in 0..self.count {
            ctx.send(self.to, Seq(i)).await.expect("send");
        }
    }
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

/// Checks that Seq numbers arrive in order and reports when all are in.
struct OrderCheck {
    next: u64,
    count: u64,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl Actor for OrderCheck {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let Ok(seq) = msg.downcast::<Seq>() else {
            return;
        };
        if seq.0 != self.next {
            if let Some(d) = self.done.take() {
                let _ = d.send(Err(format!("expected {}, got {}", self.next, seq.0)));
            }
            return;
        }
        self.next += 1;
        if self.next == self.count {
            if let Some(d) = self.done.take() {
                let _ = d.send(Ok(()));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_messages_arrive_in_send_order() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("order_a", epmd.local_addr()).await;
    let b = node("order_b", epmd.local_addr()).await;
    const N: u64 = 1_000_000;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let checker = b.spawn(OrderCheck {
        next: 0,
        count: N,
        done: Some(tx),
    });
    a.connect(b.name()).await.unwrap();
    a.spawn(Blaster {
        to: checker,
        count: N,
    });
    let verdict = tokio::time::timeout(Duration::from_secs(300), rx)
        .await
        .expect("all messages within 5 minutes")
        .unwrap();
    verdict.unwrap();
    let stats = a.stats();
    assert!(stats.total.msgs_out >= N);
    assert_eq!(stats.total.dropped_out, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_is_refused_and_nothing_is_delivered() {
    init_tracing();
    let epmd = epmd().await;
    let good = node("good", epmd.local_addr()).await;
    let bad = builder("bad", epmd.local_addr())
        .cookie("another-cookie")
        .reconnect_attempts(2)
        .start()
        .await
        .unwrap();
    let (fwd, mut rx) = forward();
    let sink = good.spawn(fwd);
    good.register("sink", sink).unwrap();
    let err = bad.connect(good.name()).await.unwrap_err();
    assert!(
        matches!(
            err,
            DistError::Handshake {
                source: HandshakeError::AuthenticationFailed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("authentication failed"), "{err}");
    // A send is queued, the connection never comes up, the message never arrives.
    let _ = bad.send(("sink", good.name()), Seq(1)).await;
    // And the good node refuses a dial in the other direction too.
    let err = good.connect(bad.name()).await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "no message may be delivered without the cookie"
    );
    assert!(good.nodes().is_empty() && bad.nodes().is_empty());
    good.shutdown().await;
    bad.shutdown().await;
}

/// A resolver whose table the test fills after the nodes have started.
#[derive(Default, Clone)]
struct TableResolver(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::SocketAddr>>>,
);

impl joerl_dist::resolve::Resolver for TableResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> joerl_dist::resolve::ResolveFuture<'a> {
        let found = self.0.lock().unwrap().get(node).map(|a| vec![*a]);
        Box::pin(async move { Ok(found) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connect_yields_one_connection() {
    init_tracing();
    let epmd = epmd().await;
    let mut simultaneous = 0;
    for round in 0..3 {
        // Each node reaches the other through a proxy that holds connections
        // until both dials are in: the two handshakes then meet, and the
        // simultaneous-connect rule has to pick one of them.
        let (ra, rb) = (TableResolver::default(), TableResolver::default());
        let a = builder(&format!("sim_a{round}"), epmd.local_addr())
            .resolver(std::sync::Arc::new(ra.clone()))
            .start()
            .await
            .unwrap();
        let b = builder(&format!("sim_b{round}"), epmd.local_addr())
            .resolver(std::sync::Arc::new(rb.clone()))
            .start()
            .await
            .unwrap();
        let to_a = GateProxy::start(a.local_addr()).await;
        let to_b = GateProxy::start(b.local_addr()).await;
        ra.0.lock().unwrap().insert(b.name().to_string(), to_b.addr);
        rb.0.lock().unwrap().insert(a.name().to_string(), to_a.addr);
        let (a2, b2) = (a.clone(), b.clone());
        let (an, bn) = (a.name().to_string(), b.name().to_string());
        let dial_a = tokio::spawn(async move { a2.connect(&bn).await });
        let dial_b = tokio::spawn(async move { b2.connect(&an).await });
        wait_until("both dials are held", || {
            to_a.held.load(std::sync::atomic::Ordering::SeqCst) == 1
                && to_b.held.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await;
        to_a.release();
        to_b.release();
        dial_a.await.unwrap().unwrap();
        dial_b.await.unwrap().unwrap();
        wait_until("both sides connected", || {
            a.nodes().contains(&b.name().to_string()) && b.nodes().contains(&a.name().to_string())
        })
        .await;
        // Erlang's rule: the dial of the node with the greater name wins. Its
        // connection (through the proxy in front of the smaller node) stays;
        // the other is closed, whichever way the crossing was noticed (the
        // greater node refusing the smaller's dial as simultaneous, or, when
        // its own dial was already up, the smaller node declining `Alive`).
        let greater_is_a = a.name() > b.name();
        let (to_greater, to_smaller) = if greater_is_a {
            (&to_a, &to_b)
        } else {
            (&to_b, &to_a)
        };
        wait_until("the losing dial is closed", || {
            to_greater.open.load(std::sync::atomic::Ordering::SeqCst) == 0
        })
        .await;
        assert_eq!(
            to_smaller.open.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "round {round}: the greater node's dial carries the connection"
        );
        let (greater, smaller) = if greater_is_a { (&a, &b) } else { (&b, &a) };
        assert_eq!(smaller.stats().simultaneous_refused, 0, "round {round}");
        simultaneous += greater.stats().simultaneous_refused;
        for (n, peer) in [(&a, b.name()), (&b, a.name())] {
            let stats = n.stats();
            let p = stats
                .peers
                .iter()
                .find(|p| p.node == peer)
                .expect("peer known");
            assert!(p.connected);
            assert_eq!(
                p.reconnects,
                0,
                "exactly one connection was installed on {}",
                n.name()
            );
        }
        // And it works both ways.
        let (fa, mut rxa) = forward();
        let pa = a.spawn(fa);
        b.send(pa, Seq(round)).await.unwrap();
        assert_eq!(recv::<Seq>(&mut rxa).await.0, Seq(round));
        a.shutdown().await;
        b.shutdown().await;
    }
    println!("simultaneous refusals: {simultaneous} of 3 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_type_is_a_clear_error() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("unreg_a", epmd.local_addr()).await;
    let b = node("unreg_b", epmd.local_addr()).await;
    let (fwd, _rx) = forward();
    let sink = b.spawn(fwd);
    a.connect(b.name()).await.unwrap();
    struct NotOnTheWire;
    let err = a.send(sink, NotOnTheWire).await.unwrap_err();
    assert!(matches!(err, SendError::Route(_)), "{err}");
    assert!(err.to_string().contains("remote_message!"), "{err}");
    assert!(
        err.to_string().contains("NotOnTheWire"),
        "the error names the type: {err}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_mended_without_loss_or_node_down() {
    init_tracing();
    // Node a finds "cut_b" through epmd1, where it is registered behind a proxy;
    // node b itself is registered in epmd2.
    let epmd1 = epmd().await;
    let epmd2 = epmd().await;
    let a = node("cut_a", epmd1.local_addr()).await;
    let b = builder("cut_b", epmd2.local_addr()).start().await.unwrap();
    let proxy = Proxy::start(b.local_addr()).await;
    let _fake = joerl_epmd::EpmdClient::new(epmd1.local_addr())
        .register(
            joerl_epmd::Registration::new("cut_b", proxy.addr.port())
                .host("127.0.0.1")
                .metadata(joerl_dist::NODE_NAME_KEY, b.name()),
        )
        .await
        .unwrap();
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    b.register("sink", sink).unwrap();
    let mut events = a.subscribe();
    a.send(("sink", b.name()), Seq(1)).await.unwrap();
    assert_eq!(recv::<Seq>(&mut rx).await.0, Seq(1));
    // Messages sent while the connection is cut wait for the next one; the
    // cut is mended within the grace period, so all of them arrive, in
    // order, once each, and nobody hears of a node-down.
    proxy.cut();
    for n in 2..=50 {
        a.send(("sink", b.name()), Seq(n)).await.unwrap();
    }
    for n in 2..=50 {
        assert_eq!(recv::<Seq>(&mut rx).await.0, Seq(n));
    }
    wait_until("reconnected", || a.stats().total.reconnects >= 1).await;
    proxy.cut();
    a.send(("sink", b.name()), Seq(51)).await.unwrap();
    assert_eq!(recv::<Seq>(&mut rx).await.0, Seq(51));
    assert!(
        rx.try_recv().is_err(),
        "nothing arrives twice after a resume"
    );
    while let Some(event) = events.try_recv() {
        assert!(
            !matches!(event, NodeEvent::Down { .. }),
            "no node-down for a mended cut: {event:?}"
        );
    }
    let s = a.stats().total;
    assert_eq!(s.dropped_out, 0, "{s:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_declared_down_after_tick_timeout() {
    init_tracing();
    let epmd1 = epmd().await;
    let epmd2 = epmd().await;
    let a = builder("tick_a", epmd1.local_addr())
        .tick_timeout(Duration::from_millis(2000))
        .reconnect_attempts(1)
        .start()
        .await
        .unwrap();
    let b = builder("tick_b", epmd2.local_addr())
        .tick_timeout(Duration::from_millis(2000))
        .start()
        .await
        .unwrap();
    let proxy = Proxy::start(b.local_addr()).await;
    let _fake = joerl_epmd::EpmdClient::new(epmd1.local_addr())
        .register(joerl_epmd::Registration::new("tick_b", proxy.addr.port()).host("127.0.0.1"))
        .await
        .unwrap();
    a.connect(b.name()).await.unwrap();
    let mut events = a.subscribe();
    // Idle for several tick intervals: ticks keep the connection up.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(
        a.nodes().contains(&b.name().to_string()),
        "ticks keep an idle connection up"
    );
    while let Some(ev) = events.try_recv() {
        assert!(
            !matches!(ev, NodeEvent::Down { .. }),
            "no node-down while idle: {ev:?}"
        );
    }
    proxy.freeze(true);
    let reason = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NodeEvent::Down { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("node-down after the tick timeout");
    assert!(
        matches!(reason, joerl_dist::NodeDownReason::TickTimeout(_)),
        "{reason}"
    );
    proxy.freeze(false);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_listener_does_not_hurt_the_node() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let epmd = epmd().await;
    let a = node("garbage_a", epmd.local_addr()).await;
    let b = node("garbage_b", epmd.local_addr()).await;
    for junk in [
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 3, 1, 0, 1],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        let mut s = tokio::net::TcpStream::connect(a.local_addr())
            .await
            .unwrap();
        s.write_all(&junk).await.unwrap();
        let mut buf = [0u8; 64];
        // The node answers with at most a refusal and closes the connection.
        let closed = tokio::time::timeout(DEADLINE, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection with junk {junk:?} is closed");
    }
    let (fwd, mut rx) = forward();
    let sink = a.spawn(fwd);
    // b has never talked to a: the send learns a's name from EPMD by its node id.
    b.send(sink, Seq(7)).await.unwrap();
    assert_eq!(recv::<Seq>(&mut rx).await.0, Seq(7));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_node_and_node_events_report_graceful_shutdown_at_once() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("mon_a", epmd.local_addr()).await;
    let b = node("mon_b", epmd.local_addr()).await;
    a.connect(b.name()).await.unwrap();
    let (fwd, mut rx) = forward();
    let watcher = a.spawn(fwd);
    a.monitor_node(watcher, b.name()).unwrap();
    let mut events = a.subscribe();
    let start = std::time::Instant::now();
    b.shutdown().await;
    let (down, _): (joerl_dist::NodeDown, _) = recv(&mut rx).await;
    assert_eq!(down.node, b.name());
    let down_event = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NodeEvent::Down { node, .. }) = events.recv().await {
                return node;
            }
        }
    })
    .await
    .expect("a node-down event");
    assert_eq!(down_event, b.name());
    assert!(
        start.elapsed() < a.config().tick_timeout,
        "graceful shutdown is seen before any tick timeout"
    );
    a.shutdown().await;
}

/// Counts the look-ups it passes on.
struct CountingResolver {
    inner: joerl_dist::resolve::EpmdResolver,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl joerl_dist::resolve::Resolver for CountingResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> joerl_dist::resolve::ResolveFuture<'a> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.resolve(node)
    }
}

/// Every node event `a` has seen so far.
fn drain(events: &mut joerl_dist::NodeEvents) -> Vec<NodeEvent> {
    let mut out = Vec::new();
    while let Some(ev) = events.try_recv() {
        out.push(ev);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_reported_down_once_and_not_redialed_once_gone() {
    init_tracing();
    let epmd = epmd().await;
    // Fast, few redials: without the "gone" rule a second Down would follow
    // within about 100 ms, when the redials give up.
    let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = builder("once_a", epmd.local_addr())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .reconnect_attempts(3)
        .resolver(std::sync::Arc::new(CountingResolver {
            inner: joerl_dist::resolve::EpmdResolver::at(epmd.local_addr()),
            count: lookups.clone(),
        }))
        .start()
        .await
        .unwrap();
    let b = node("once_b", epmd.local_addr()).await;
    let b_name = b.name().to_string();
    let mut events = a.subscribe();
    a.connect(&b_name).await.unwrap();
    // b vanishes without a goodbye: its sockets and its EPMD registration close.
    drop(b);
    let down = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NodeEvent::Down { node, .. }) = events.recv().await {
                return node;
            }
        }
    })
    .await
    .expect("node-down");
    assert_eq!(down, b_name);
    let lookups_at_down = lookups.load(std::sync::atomic::Ordering::SeqCst);
    // Far longer than the three redials would take.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = drain(&mut events);
    assert!(
        later.iter().all(|e| !matches!(e, NodeEvent::Down { .. })),
        "one Down per Up: {later:?}"
    );
    // One redial found b gone (EPMD no longer lists it), and that was all.
    let redials = lookups.load(std::sync::atomic::Ordering::SeqCst) - lookups_at_down;
    assert!(redials <= 1, "{redials} look-ups after the loss");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_never_up_gets_no_down_event_but_monitor_node_fires() {
    init_tracing();
    let epmd = epmd().await;
    let a = builder("never_a", epmd.local_addr())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .reconnect_attempts(2)
        .start()
        .await
        .unwrap();
    let mut events = a.subscribe();
    let (fwd, mut rx) = forward();
    let watcher = a.spawn(fwd);
    // Erlang's monitor_node on an unreachable node: {nodedown, Node} at once.
    a.monitor_node(watcher, "ghost@127.0.0.1").unwrap();
    let (down, _): (joerl_dist::NodeDown, _) = recv(&mut rx).await;
    assert_eq!(down.node, "ghost@127.0.0.1");
    let seen = drain(&mut events);
    assert!(
        seen.is_empty(),
        "no node event for a node never up: {seen:?}"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_node_names_are_refused_with_a_typed_error() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("names_a", epmd.local_addr()).await;
    for bad in ["pz@not a host", "nohost", "x@", "x@-bad-"] {
        assert!(
            matches!(a.connect(bad).await, Err(DistError::InvalidNodeName(n)) if n == bad),
            "{bad}"
        );
    }
    let err = builder("pz@not a host", epmd.local_addr())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, DistError::InvalidNodeName(_)), "{err:?}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dials_now_and_each_failure_keeps_its_cause() {
    init_tracing();
    let epmd = epmd().await;
    // Backoff far longer than the test: a connect that waited for it would fail.
    let a = builder("cause_a", epmd.local_addr())
        .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    // Not registered in EPMD.
    let err = a.connect("late_b@127.0.0.1").await.unwrap_err();
    assert!(
        matches!(err, DistError::UnknownNode(ref n) if n == "late_b@127.0.0.1"),
        "{err:?}"
    );
    // The node starts now: the next connect dials at once (not after the
    // backoff) and does not return the previous attempt's error.
    let b = node("late_b", epmd.local_addr()).await;
    let started = std::time::Instant::now();
    a.connect(b.name()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));

    // Registered, but nothing listens at its port: Unreachable, with the io error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let _ghost = joerl_epmd::EpmdClient::new(epmd.local_addr())
        .register(joerl_epmd::Registration::new("ghost", port).host("127.0.0.1"))
        .await
        .unwrap();
    match a.connect("ghost@127.0.0.1").await.unwrap_err() {
        DistError::Unreachable { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other:?}"),
    }

    // The wrong cookie: the handshake error itself.
    let c = builder("cause_c", epmd.local_addr())
        .cookie("another-cookie")
        .start()
        .await
        .unwrap();
    match a.connect(c.name()).await.unwrap_err() {
        DistError::Handshake { source, .. } => {
            assert_eq!(source, HandshakeError::AuthenticationFailed)
        }
        other => panic!("{other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Holds every message until released, then forwards them all, in order.
struct SlowWatcher {
    release: std::sync::Arc<tokio::sync::Semaphore>,
    out: tokio::sync::mpsc::UnboundedSender<Message>,
}

impl Actor for SlowWatcher {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        // The first message blocks until the test has made every event.
        let _permit = self.release.acquire().await;
        let _ = self.out.send(msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_events_are_lossless_and_in_order_for_slow_watchers() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("watch_a", epmd.local_addr()).await;
    // A subscriber that reads nothing until the end, and an actor with a
    // mailbox of one that is stuck in its handler meanwhile.
    let mut events = a.subscribe();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = a
        .spawn_with(
            SlowWatcher {
                release: release.clone(),
                out: tx,
            },
            joerl_dist::SpawnOptions::new().capacity(1),
        )
        .unwrap();
    a.monitor_nodes(watcher);
    // More up/down pairs than the 256 events a broadcast channel would keep.
    const NODES: usize = 140;
    for i in 0..NODES {
        let b = node(&format!("watch_b{i}"), epmd.local_addr()).await;
        a.connect(b.name()).await.unwrap();
        wait_until("b has the connection too", || {
            b.nodes().contains(&a.name().to_string())
        })
        .await;
        b.shutdown().await;
        wait_until("the node-down arrived", || {
            !a.nodes().contains(&b.name().to_string())
        })
        .await;
    }
    release.add_permits(usize::MAX >> 4);
    let check = |seen: Vec<(bool, String)>| {
        assert_eq!(seen.len(), 2 * NODES, "every Up and every Down");
        for (i, pair) in seen.chunks(2).enumerate() {
            let name = format!("watch_b{i}@127.0.0.1");
            assert_eq!(pair, [(true, name.clone()), (false, name)], "in order");
        }
    };
    let mut from_subscriber = Vec::new();
    while let Some(ev) = events.try_recv() {
        from_subscriber.push(match ev {
            NodeEvent::Up { node, .. } => (true, node),
            NodeEvent::Down { node, reason } => {
                assert_eq!(reason, joerl_dist::NodeDownReason::Goodbye);
                (false, node)
            }
        });
    }
    check(from_subscriber);
    let mut from_actor = Vec::new();
    while from_actor.len() < 2 * NODES {
        let msg = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("the watcher forwards every event")
            .unwrap();
        from_actor.push(match msg.downcast::<joerl_dist::NodeUp>() {
            Ok(up) => (true, up.node),
            Err(msg) => (false, msg.downcast::<joerl_dist::NodeDown>().unwrap().node),
        });
    }
    check(from_actor);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_found_at_their_own_hosts_epmd_or_in_a_static_table() {
    init_tracing();
    // b lives on another address ([::1]) with an EPMD of its own there; a's
    // EPMD (on 127.0.0.1) has never heard of it. As in Erlang, a asks the
    // EPMD on b's host.
    let epmd_a = epmd().await;
    let epmd_b =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("[::1]:0".parse().unwrap()))
            .await
            .expect("epmd binds on ::1");
    let b = NodeBuilder::new("res_b@::1", "[::1]:0".parse().unwrap(), epmd_b.local_addr())
        .cookie("test-cookie")
        .start()
        .await
        .unwrap();
    let a = builder("res_a", epmd_a.local_addr())
        .peer_epmd_port(epmd_b.local_addr().port())
        .start()
        .await
        .unwrap();
    a.connect(b.name()).await.unwrap();
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    b.register("sink", sink).unwrap();
    a.send(("sink", b.name()), Seq(7)).await.unwrap();
    assert_eq!(recv::<Seq>(&mut rx).await.0, Seq(7));

    // c is in no EPMD a asks, but in a's static table.
    let epmd_c = epmd().await;
    let c = node("res_c", epmd_c.local_addr()).await;
    let d = builder("res_d", epmd_a.local_addr())
        .static_peer(c.name(), c.local_addr())
        .start()
        .await
        .unwrap();
    d.connect(c.name()).await.unwrap();
    // Without the entry, a asks the EPMD port it was given on c's host,
    // where no EPMD listens, and says so.
    let port = epmd_b.local_addr().port();
    match a.connect(c.name()).await {
        Err(DistError::Epmd { addr, .. }) => assert_eq!(addr.port(), port),
        other => panic!("{other:?}"),
    }
    for n in [&a, &b, &c, &d] {
        n.shutdown().await;
    }
}

/// Doubles what it is called with.
struct Doubler;

/// Asks [`Doubler`] to double a number.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Double(u64);

impl joerl_dist::gen_server::Request for Double {
    type Reply = u64;
}

/// Asks a server which Pid called it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct WhoCalls;

impl joerl_dist::gen_server::Request for WhoCalls {
    type Reply = Pid;
}

impl joerl_dist::gen_server::GenServer for Doubler {
    type Calls = (Double, WhoCalls);
    type Casts = ();
}

impl joerl_dist::gen_server::HandleCall<Double> for Doubler {
    async fn handle_call(
        &mut self,
        Double(n): Double,
        _from: joerl_dist::gen_server::ReplyTo<u64>,
        _ctx: &mut ActorContext,
    ) -> joerl_dist::gen_server::CallResponse<u64> {
        joerl_dist::gen_server::CallResponse::Reply(n * 2)
    }
}

impl joerl_dist::gen_server::HandleCall<WhoCalls> for Doubler {
    async fn handle_call(
        &mut self,
        _: WhoCalls,
        from: joerl_dist::gen_server::ReplyTo<Pid>,
        _ctx: &mut ActorContext,
    ) -> joerl_dist::gen_server::CallResponse<Pid> {
        joerl_dist::gen_server::CallResponse::Reply(from.caller())
    }
}
joerl_dist::remote_server!(Doubler);

fn doubler_at(node: &str) -> joerl_dist::gen_server::ServerRef<Doubler> {
    joerl_dist::gen_server::ServerRef::new(("doubler", node))
}

/// Calls the doubler on `node` by name from inside an actor, on every
/// message, and reports (itself, who the server saw).
struct RemoteCaller {
    node: String,
    out: tokio::sync::mpsc::UnboundedSender<(Pid, Result<Pid, CallError>)>,
}

impl Actor for RemoteCaller {
    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        let seen = ctx.call(&doubler_at(&self.node), WhoCalls).await;
        let _ = self.out.send((ctx.pid(), seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_calls_by_name_on_another_node_and_the_server_sees_that_actor() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("caller_a", epmd.local_addr()).await;
    let b = node("caller_b", epmd.local_addr()).await;
    joerl_dist::gen_server::spawn_server_with(
        &b,
        Doubler,
        joerl_dist::SpawnOptions::new().name("doubler"),
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The actor's node has never talked to b: the call connects first.
    let caller = a.spawn(RemoteCaller {
        node: b.name().to_string(),
        out: tx,
    });
    a.send(caller, ()).await.unwrap();
    let (me, seen) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.unwrap(), me, "the server saw the calling actor");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_by_name_is_one_round_trip_and_leaves_no_monitor_behind() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("byname_a", epmd.local_addr()).await;
    let b = node("byname_b", epmd.local_addr()).await;
    let server = joerl_dist::gen_server::spawn_server_with(
        &b,
        Doubler,
        joerl_dist::SpawnOptions::new().name("doubler"),
    )
    .unwrap();
    a.connect(b.name()).await.unwrap();
    let in_before = |n: &joerl_dist::DistributedSystem, peer: &str| {
        n.stats()
            .peers
            .iter()
            .find(|p| p.node == peer)
            .map_or(0, |p| p.msgs_in)
    };
    for i in 0..50u64 {
        let before = in_before(&b, a.name());
        let r = a
            .call_timeout(&doubler_at(b.name()), Double(i), DEADLINE)
            .await
            .unwrap();
        assert_eq!(r, 2 * i);
        // One message reached b for the call: the request, with no look-up
        // first (the named monitor travels as a signal beside it).
        assert_eq!(in_before(&b, a.name()) - before, 1);
    }
    // Every call's monitor is gone again on both sides.
    wait_until("no monitors left", || {
        b.remote_relations(a.name()) == Some((0, 0, 0))
            && a.remote_relations(b.name()) == Some((0, 0, 0))
    })
    .await;
    // Nothing registered: noproc at once.
    let nobody = joerl_dist::gen_server::ServerRef::<Doubler>::new(("nobody", b.name()));
    let err = a
        .call_timeout(&nobody, Double(1), DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(err, joerl_dist::CallError::NoProc), "{err:?}");
    // whereis_remote works by name too (no well-known process id).
    assert_eq!(
        a.whereis_remote("doubler", b.name(), DEADLINE)
            .await
            .unwrap(),
        server.pid()
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Monitors `(name, node)` by name when started and forwards what it gets.
struct NameWatcher {
    name: String,
    node: String,
    out: tokio::sync::mpsc::UnboundedSender<(joerl_dist::MonitorRef, Message)>,
    monitor: Option<joerl_dist::MonitorRef>,
}

impl Actor for NameWatcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.monitor = Some(
            ctx.monitor((self.name.as_str(), self.node.as_str()))
                .unwrap(),
        );
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let _ = self.out.send((self.monitor.unwrap(), msg));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_monitors_a_remote_name_and_sees_it_go_down() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("mon_a", epmd.local_addr()).await;
    let b = node("mon_b", epmd.local_addr()).await;
    let (fwd, _rx) = forward();
    let svc = b.spawn(fwd);
    b.register("svc", svc).unwrap();
    a.connect(b.name()).await.unwrap();
    let watch = |name: &str, node: &str| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        a.spawn(NameWatcher {
            name: name.into(),
            node: node.into(),
            out: tx,
            monitor: None,
        });
        rx
    };
    let next_down = |mut rx: tokio::sync::mpsc::UnboundedReceiver<(
        joerl_dist::MonitorRef,
        Message,
    )>| async move {
        let (monitor, msg) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("a down message")
            .unwrap();
        let down = msg
            .downcast::<joerl_dist::DownMessage>()
            .expect("a DownMessage");
        assert_eq!(down.monitor, monitor);
        *down
    };
    // Nothing registered under the name, remotely or here: noproc at once.
    let down = next_down(watch("nobody", b.name())).await;
    assert_eq!(down.reason, joerl_dist::ExitReason::NoProc);
    let down = next_down(watch("nobody", a.name())).await;
    assert_eq!(down.reason, joerl_dist::ExitReason::NoProc);
    // The registered actor goes down: the down names it and its reason.
    let rx = watch("svc", b.name());
    wait_until("b holds the monitor", || {
        b.remote_relations(a.name())
            .is_some_and(|(_, _, held)| held == 1)
    })
    .await;
    b.exit(svc, joerl_dist::ExitReason::Kill).unwrap();
    let down = next_down(rx).await;
    assert_eq!(down.pid, svc);
    assert_eq!(down.reason, joerl_dist::ExitReason::Killed);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_reports_every_connected_node_down_and_ends_the_stream() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("drop_a", epmd.local_addr()).await;
    let b = node("drop_b", epmd.local_addr()).await;
    let mut events = a.subscribe();
    a.connect(b.name()).await.unwrap();
    drop(a);
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("the stream ends")
    {
        seen.push(ev);
    }
    assert_eq!(
        seen,
        vec![
            NodeEvent::Up {
                node: b.name().to_string(),
                creation: b.creation()
            },
            NodeEvent::Down {
                node: b.name().to_string(),
                reason: joerl_dist::NodeDownReason::ShuttingDown
            },
        ]
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_unreachable_node_says_why() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("callcause_a", epmd.local_addr()).await;
    let cause = |err: CallError| -> DistError {
        match err {
            CallError::Unreachable(e) => e
                .downcast_ref::<DistError>()
                .cloned()
                .expect("the cause is a DistError"),
            other => panic!("not Unreachable: {other:?}"),
        }
    };
    let call = |node: &'static str| {
        let a = a.clone();
        async move {
            let srv = joerl_dist::gen_server::ServerRef::<Doubler>::new(("srv", node));
            a.call_timeout(&srv, Double(1), DEADLINE).await.unwrap_err()
        }
    };
    assert!(matches!(
        cause(call("nobody@127.0.0.1").await),
        DistError::UnknownNode(_)
    ));
    assert!(matches!(
        cause(call("pz@not a host").await),
        DistError::InvalidNodeName(_)
    ));
    let c = builder("callcause_c", epmd.local_addr())
        .cookie("another-cookie")
        .start()
        .await
        .unwrap();
    assert!(matches!(
        cause(call("callcause_c@127.0.0.1").await),
        DistError::Handshake {
            source: HandshakeError::AuthenticationFailed,
            ..
        }
    ));
    a.shutdown().await;
    c.shutdown().await;
}

/// A server whose request crosses nodes but whose reply type is registered
/// nowhere.
struct Unsendable;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AskUnsendable;
joerl_dist::remote_message!(AskUnsendable, "test::transport::AskUnsendable");

/// Never registered for the wire.
#[derive(Debug)]
struct LocalOnly;

impl joerl_dist::gen_server::Request for AskUnsendable {
    type Reply = LocalOnly;
}

/// Never registered either, as a request.
#[derive(Debug)]
struct UnregisteredRequest;

impl joerl_dist::gen_server::Request for UnregisteredRequest {
    type Reply = u64;
}

impl joerl_dist::gen_server::GenServer for Unsendable {
    type Calls = (AskUnsendable, UnregisteredRequest);
    type Casts = ();
}

impl joerl_dist::gen_server::HandleCall<AskUnsendable> for Unsendable {
    async fn handle_call(
        &mut self,
        _: AskUnsendable,
        _from: joerl_dist::gen_server::ReplyTo<LocalOnly>,
        _ctx: &mut ActorContext,
    ) -> joerl_dist::gen_server::CallResponse<LocalOnly> {
        joerl_dist::gen_server::CallResponse::Reply(LocalOnly)
    }
}

impl joerl_dist::gen_server::HandleCall<UnregisteredRequest> for Unsendable {
    async fn handle_call(
        &mut self,
        _: UnregisteredRequest,
        _from: joerl_dist::gen_server::ReplyTo<u64>,
        _ctx: &mut ActorContext,
    ) -> joerl_dist::gen_server::CallResponse<u64> {
        joerl_dist::gen_server::CallResponse::Reply(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_request_or_reply_types_fail_the_call_at_once_and_name_the_type() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("unreg_a", epmd.local_addr()).await;
    let b = node("unreg_b", epmd.local_addr()).await;
    joerl_dist::gen_server::spawn_server_with(
        &b,
        Unsendable,
        joerl_dist::SpawnOptions::new().name("unsendable"),
    )
    .unwrap();
    let server = joerl_dist::gen_server::ServerRef::<Unsendable>::new(("unsendable", b.name()));
    let long = Duration::from_secs(120);
    // The reply cannot leave b: b answers with the reason instead.
    let started = std::time::Instant::now();
    let err = a
        .call_timeout(&server, AskUnsendable, long)
        .await
        .unwrap_err();
    match &err {
        CallError::ReplyLost(reason) => {
            assert!(reason.contains("LocalOnly"), "{reason}");
            assert!(reason.contains("remote_message!"), "{reason}");
        }
        other => panic!("expected ReplyLost, got {other:?}"),
    }
    assert!(started.elapsed() < long / 4, "not a timeout");
    // The request cannot leave a: the call fails before anything is sent.
    let started = std::time::Instant::now();
    let err = a
        .call_timeout(&server, UnregisteredRequest, long)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, CallError::Send(_)) && text.contains("UnregisteredRequest"),
        "{text}"
    );
    assert!(started.elapsed() < long / 4, "not a timeout");
    a.shutdown().await;
    b.shutdown().await;
}

/// Monitors `target` when started and forwards the downs it gets.
struct DownWatcher {
    target: Pid,
    out: tokio::sync::mpsc::UnboundedSender<joerl_dist::DownMessage>,
}

impl Actor for DownWatcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.target).unwrap();
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(d) = msg.downcast::<joerl_dist::DownMessage>() {
            let _ = self.out.send(*d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reports_the_node_down_once_with_noconnection_to_monitors() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("disc_a", epmd.local_addr()).await;
    let b = node("disc_b", epmd.local_addr()).await;
    let (fwd, _rx) = forward();
    let target = b.spawn(fwd);
    a.connect(b.name()).await.unwrap();
    let mut events = a.subscribe();
    let (tx, mut downs) = tokio::sync::mpsc::unbounded_channel();
    a.spawn(DownWatcher { target, out: tx });
    wait_until("the monitor reached b", || {
        b.relation_counts(target).is_some_and(|c| c != (0, 0, 0))
    })
    .await;
    assert!(!a.disconnect("nobody@127.0.0.1", "test"), "no such peer");
    assert!(a.disconnect(b.name(), "declared failed"));
    let down = tokio::time::timeout(DEADLINE, downs.recv())
        .await
        .expect("down in time")
        .unwrap();
    assert_eq!(down.reason, joerl_dist::ExitReason::NoConnection);
    assert_eq!(down.pid, target);
    loop {
        match tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("event in time")
            .unwrap()
        {
            joerl_dist::NodeEvent::Down { node, reason } => {
                assert_eq!(node, b.name());
                assert_eq!(
                    reason,
                    joerl_dist::NodeDownReason::Disconnected("declared failed".into())
                );
                break;
            }
            joerl_dist::NodeEvent::Up { .. } => continue,
        }
    }
    // Exactly once: no second node-down for b while the peer reconnects.
    let window = tokio::time::Instant::now() + Duration::from_millis(500);
    // The next event, if any within the window, is an up (a new connection),
    // never a second down.
    if let Ok(Some(joerl_dist::NodeEvent::Down { node, reason })) =
        tokio::time::timeout_at(window, events.recv()).await
    {
        panic!("a second down for {node} without an up first: {reason:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}
