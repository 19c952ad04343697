//! Erlang semantics of links, monitors, exits, kill, trap_exit and panics.

mod common;

use std::time::Duration;

use common::*;
use joerl_core::{
    Actor, ActorContext, ActorSystem, ExitReason, LinkError, Message, Pid, SendError, SpawnOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_actor_dies_with_the_same_reason() {
    let system = ActorSystem::new();
    let (a, mut arx) = probe(false);
    let (b, mut brx) = probe(false);
    let a = system.spawn(a);
    let b = system.spawn(b);
    system.send(a, Cmd::Link(b)).await.unwrap();
    wait_until("link established", || {
        system.relation_counts(b) == Some((1, 0, 0))
    })
    .await;
    system
        .send(a, Cmd::Stop(ExitReason::custom("boom")))
        .await
        .unwrap();
    expect(
        &mut arx,
        "a stopped",
        |s| matches!(s, Seen::Stopped(_, r) if *r == ExitReason::custom("boom")),
    )
    .await;
    expect(
        &mut brx,
        "b stopped with boom",
        |s| matches!(s, Seen::Stopped(p, r) if *p == b && *r == ExitReason::custom("boom")),
    )
    .await;
    wait_until("b gone", || !system.is_alive(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_actor_gets_exit_message_instead() {
    let system = ActorSystem::new();
    let (a, mut arx) = probe(false);
    let (b, mut brx) = probe(true);
    let a = system.spawn(a);
    let b = system.spawn(b);
    expect(&mut brx, "b started", |s| matches!(s, Seen::Started(_))).await;
    system.send(a, Cmd::Link(b)).await.unwrap();
    wait_until("link established", || {
        system.relation_counts(b) == Some((1, 0, 0))
    })
    .await;
    system
        .send(a, Cmd::Stop(ExitReason::custom("boom")))
        .await
        .unwrap();
    expect(&mut arx, "a stopped", |s| matches!(s, Seen::Stopped(..))).await;
    let seen = expect(&mut brx, "exit message", |s| matches!(s, Seen::Exit(_))).await;
    assert_eq!(
        seen,
        Seen::Exit(joerl_core::ExitMessage {
            from: a,
            reason: ExitReason::custom("boom")
        })
    );
    assert!(system.is_alive(b), "a trapping actor survives");
    assert_eq!(
        system.relation_counts(b),
        Some((0, 0, 0)),
        "the link is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_does_not_kill_linked_actors() {
    let system = ActorSystem::new();
    let (a, mut arx) = probe(false);
    let (b, mut brx) = probe(false);
    let a = system.spawn(a);
    let b = system.spawn(b);
    system.send(a, Cmd::Link(b)).await.unwrap();
    wait_until("link established", || {
        system.relation_counts(b) == Some((1, 0, 0))
    })
    .await;
    system.send(a, Cmd::Stop(ExitReason::Normal)).await.unwrap();
    expect(&mut arx, "a stopped", |s| matches!(s, Seen::Stopped(..))).await;
    wait_until("b's link to a removed", || {
        system.relation_counts(b) == Some((0, 0, 0))
    })
    .await;
    expect_none(&mut brx, Duration::from_millis(200), "b stop", |s| {
        matches!(s, Seen::Stopped(..))
    })
    .await;
    assert!(system.is_alive(b));
    // A plain exit(pid, normal) from someone else is ignored too.
    system.exit(b, ExitReason::Normal).unwrap();
    system.send(b, "still here".to_string()).await.unwrap();
    expect(
        &mut brx,
        "b answers",
        |s| matches!(s, Seen::Text(t, _) if t == "still here"),
    )
    .await;
    assert!(system.is_alive(b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_is_untrappable_and_links_see_killed() {
    let system = ActorSystem::new();
    let (victim, mut vrx) = probe(true);
    let (watcher, mut wrx) = probe(true);
    let victim = system.spawn(victim);
    let watcher = system.spawn(watcher);
    expect(&mut vrx, "victim started", |s| {
        matches!(s, Seen::Started(_))
    })
    .await;
    system.send(watcher, Cmd::Link(victim)).await.unwrap();
    wait_until("link", || system.relation_counts(victim) == Some((1, 0, 0))).await;
    // The victim is busy in a long handler; kill must still stop it.
    system
        .send(victim, Cmd::Sleep(Duration::from_secs(3600)))
        .await
        .unwrap();
    system.exit(victim, ExitReason::Kill).unwrap();
    let seen = expect(&mut wrx, "exit message", |s| matches!(s, Seen::Exit(_))).await;
    assert_eq!(
        seen,
        Seen::Exit(joerl_core::ExitMessage {
            from: victim,
            reason: ExitReason::Killed
        })
    );
    wait_until("victim gone", || !system.is_alive(victim)).await;
    // A killed actor's stopped hook does not run.
    expect_none(&mut vrx, Duration::from_millis(100), "stopped hook", |s| {
        matches!(s, Seen::Stopped(..))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_actor_receives_exit_signals_sent_with_exit() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(true);
    let p = system.spawn(p);
    expect(&mut rx, "started", |s| matches!(s, Seen::Started(_))).await;
    system.exit(p, ExitReason::Shutdown).unwrap();
    let seen = expect(&mut rx, "exit message", |s| matches!(s, Seen::Exit(_))).await;
    let Seen::Exit(e) = seen else { unreachable!() };
    assert_eq!(e.reason, ExitReason::Shutdown);
    assert_eq!(
        e.from.id(),
        0,
        "signals from the system come from its system pid"
    );
    assert!(system.is_alive(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrapped_exit_signal_stops_an_actor_even_inside_a_handler() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(false);
    let p = system.spawn(p);
    system
        .send(p, Cmd::Sleep(Duration::from_secs(3600)))
        .await
        .unwrap();
    system.exit(p, ExitReason::custom("stop now")).unwrap();
    expect(
        &mut rx,
        "stopped",
        |s| matches!(s, Seen::Stopped(_, r) if *r == ExitReason::custom("stop now")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_of_dead_or_unknown_pid_fires_noproc_at_once() {
    let system = ActorSystem::new();
    let (w, mut wrx) = probe(false);
    let w = system.spawn(w);
    let (short, mut srx) = probe(false);
    let short = system.spawn(short);
    system
        .send(short, Cmd::Stop(ExitReason::Normal))
        .await
        .unwrap();
    expect(&mut srx, "short stopped", |s| {
        matches!(s, Seen::Stopped(..))
    })
    .await;
    wait_until("short gone", || !system.is_alive(short)).await;
    let unknown = Pid::new(system.node_id(), 999_999, system.creation());
    let stale = Pid::new(system.node_id(), 1, system.creation() + 1);
    for target in [short, unknown, stale] {
        system.send(w, Cmd::Monitor(target)).await.unwrap();
        let seen = expect(&mut wrx, "down", |s| matches!(s, Seen::Down(_))).await;
        let Seen::Down(d) = seen else { unreachable!() };
        assert_eq!(d.pid, target);
        assert_eq!(d.reason, ExitReason::NoProc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_exit_reason_and_demonitor_cleans_up() {
    let system = ActorSystem::new();
    let (w, mut wrx) = probe(false);
    let (t, mut trx) = probe(false);
    let w = system.spawn(w);
    let t = system.spawn(t);
    system.send(w, Cmd::Monitor(t)).await.unwrap();
    wait_until("monitor registered", || {
        system.relation_counts(t) == Some((0, 1, 0))
    })
    .await;
    assert_eq!(system.relation_counts(w), Some((0, 0, 1)));
    system
        .send(t, Cmd::Stop(ExitReason::custom("bye")))
        .await
        .unwrap();
    expect(&mut trx, "t stopped", |s| matches!(s, Seen::Stopped(..))).await;
    let Seen::Down(d) = expect(&mut wrx, "down", |s| matches!(s, Seen::Down(_))).await else {
        unreachable!()
    };
    assert_eq!((d.pid, d.reason), (t, ExitReason::custom("bye")));
    wait_until("monitor table empty", || {
        system.relation_counts(w) == Some((0, 0, 0))
    })
    .await;
}

struct Panicker;
impl Actor for Panicker {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {
        panic!("kaboom");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_becomes_exit_reason_seen_by_links_and_monitors() {
    let system = ActorSystem::new();
    let (linked, mut lrx) = probe(true);
    let (mon, mut mrx) = probe(false);
    let linked = system.spawn(linked);
    let mon = system.spawn(mon);
    let bad = system.spawn(Panicker);
    system.send(linked, Cmd::Link(bad)).await.unwrap();
    system.send(mon, Cmd::Monitor(bad)).await.unwrap();
    wait_until("link and monitor", || {
        system.relation_counts(bad) == Some((1, 1, 0))
    })
    .await;
    system.send(bad, 1u8).await.unwrap();
    let Seen::Exit(e) = expect(&mut lrx, "exit", |s| matches!(s, Seen::Exit(_))).await else {
        unreachable!()
    };
    assert_eq!(e.reason, ExitReason::Panic("kaboom".into()));
    let Seen::Down(d) = expect(&mut mrx, "down", |s| matches!(s, Seen::Down(_))).await else {
        unreachable!()
    };
    assert_eq!(d.reason, ExitReason::Panic("kaboom".into()));
    // The runtime keeps going.
    let (p, mut prx) = probe(false);
    let p = system.spawn(p);
    system.send(p, "alive".to_string()).await.unwrap();
    expect(
        &mut prx,
        "new actor works",
        |s| matches!(s, Seen::Text(t, _) if t == "alive"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_to_dead_pid_gives_noproc_exit() {
    let system = ActorSystem::new();
    let (w, mut wrx) = probe(true);
    let w = system.spawn(w);
    let unknown = Pid::new(system.node_id(), 424_242, system.creation());
    system.send(w, Cmd::Link(unknown)).await.unwrap();
    let Seen::Exit(e) = expect(&mut wrx, "exit", |s| matches!(s, Seen::Exit(_))).await else {
        unreachable!()
    };
    assert_eq!((e.from, e.reason), (unknown, ExitReason::NoProc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlink_stops_propagation() {
    let system = ActorSystem::new();
    let (a, mut arx) = probe(false);
    let (b, mut brx) = probe(false);
    let a = system.spawn(a);
    let b = system.spawn(b);
    system.send(a, Cmd::Link(b)).await.unwrap();
    wait_until("linked", || system.relation_counts(b) == Some((1, 0, 0))).await;
    system.send(a, Cmd::Unlink(b)).await.unwrap();
    wait_until("unlinked", || system.relation_counts(b) == Some((0, 0, 0))).await;
    system
        .send(a, Cmd::Stop(ExitReason::custom("x")))
        .await
        .unwrap();
    expect(&mut arx, "a stopped", |s| matches!(s, Seen::Stopped(..))).await;
    expect_none(&mut brx, Duration::from_millis(200), "b stop", |s| {
        matches!(s, Seen::Stopped(..))
    })
    .await;
    assert!(system.is_alive(b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_is_visible_to_the_receiver() {
    let system = ActorSystem::new();
    let (a, _arx) = probe(false);
    let (b, mut brx) = probe(false);
    let a = system.spawn(a);
    let b = system.spawn(b);
    system.send(a, Cmd::Forward(b, "hi".into())).await.unwrap();
    let seen = expect(&mut brx, "text", |s| matches!(s, Seen::Text(..))).await;
    assert_eq!(seen, Seen::Text("hi".into(), Some(a)));
    system.send(b, "anon".to_string()).await.unwrap();
    let seen = expect(
        &mut brx,
        "text",
        |s| matches!(s, Seen::Text(t, _) if t == "anon"),
    )
    .await;
    assert_eq!(seen, Seen::Text("anon".into(), None));
}

/// Waits on a gate before handling anything, so its mailbox can be filled.
struct Gated(
    tokio::sync::watch::Receiver<bool>,
    tokio::sync::mpsc::UnboundedSender<u32>,
);
impl Actor for Gated {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let _ = self.0.wait_for(|open| *open).await;
        if let Ok(n) = msg.downcast::<u32>() {
            let _ = self.1.send(*n);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_mailbox_try_send_full_and_send_waits() {
    let system = ActorSystem::new();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pid = system
        .spawn_with(Gated(gate_rx, tx), SpawnOptions::new().capacity(4))
        .unwrap();
    // The first message is taken into the handler (blocked on the gate); the
    // rest fill the mailbox.
    system.send(pid, 0u32).await.unwrap();
    wait_until("first message taken", || system.mailbox_len(pid) == Some(0)).await;
    for i in 1..=4u32 {
        system.try_send(pid, i).unwrap();
    }
    match system.try_send(pid, 5u32) {
        Err(SendError::Full(m)) => assert_eq!(*m.into_inner().downcast::<u32>().unwrap(), 5),
        other => panic!("expected Full, got {other:?}"),
    }
    // A waiting send completes once the actor makes room.
    let sys2 = system.clone();
    let waiting = tokio::spawn(async move { sys2.send(pid, 5u32).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "send must wait while the mailbox is full"
    );
    gate_tx.send(true).unwrap();
    waiting.await.unwrap().unwrap();
    for want in 0..=5u32 {
        let got = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, want, "messages arrive in send order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_bypass_a_full_mailbox() {
    let system = ActorSystem::new();
    let (_gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let pid = system
        .spawn_with(Gated(gate_rx, tx), SpawnOptions::new().capacity(1))
        .unwrap();
    system.send(pid, 0u32).await.unwrap();
    wait_until("first taken", || system.mailbox_len(pid) == Some(0)).await;
    system.try_send(pid, 1u32).unwrap();
    assert!(matches!(
        system.try_send(pid, 2u32),
        Err(SendError::Full(_))
    ));
    let (w, mut wrx) = probe(false);
    let w = system.spawn(w);
    system.send(w, Cmd::Monitor(pid)).await.unwrap();
    wait_until("monitor set despite full mailbox", || {
        system.relation_counts(pid) == Some((0, 1, 0))
    })
    .await;
    system.exit(pid, ExitReason::custom("bye")).unwrap();
    let Seen::Down(d) = expect(&mut wrx, "down", |s| matches!(s, Seen::Down(_))).await else {
        unreachable!()
    };
    assert_eq!(d.reason, ExitReason::custom("bye"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_register_send_and_vanish_on_exit() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(false);
    let pid = system
        .spawn_with(p, SpawnOptions::new().name("worker"))
        .unwrap();
    assert_eq!(system.whereis("worker"), Some(pid));
    let (other, _orx) = probe(false);
    assert!(matches!(
        system.spawn_with(other, SpawnOptions::new().name("worker")),
        Err(joerl_core::SpawnError::NameTaken(_))
    ));
    system.send("worker", "by name".to_string()).await.unwrap();
    expect(
        &mut rx,
        "named message",
        |s| matches!(s, Seen::Text(t, _) if t == "by name"),
    )
    .await;
    assert!(matches!(
        system.register("second", pid),
        Err(joerl_core::RegisterError::AlreadyNamed { .. })
    ));
    assert_eq!(system.unregister("worker"), Some(pid));
    assert_eq!(system.whereis("worker"), None);
    system.register("again", pid).unwrap();
    system.exit(pid, ExitReason::Kill).unwrap();
    wait_until("name removed on exit", || system.whereis("again").is_none()).await;
    assert!(matches!(
        system.send("again", 1u8).await,
        Err(SendError::NameNotRegistered(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_dead_pid_is_noproc_and_remote_without_router_is_clear_error() {
    let system = ActorSystem::new();
    let dead = Pid::new(system.node_id(), 77_777, system.creation());
    assert!(matches!(
        system.send(dead, 1u8).await,
        Err(SendError::NoProc(_))
    ));
    let remote = Pid::new(joerl_core::node_id("other@host"), 1, 1);
    let err = system.send(remote, 1u8).await.unwrap_err();
    assert!(matches!(err, SendError::NoRouter(p) if p == remote));
    assert!(err.to_string().contains("no distribution router"), "{err}");
    assert!(matches!(
        system.exit(remote, ExitReason::Kill),
        Err(LinkError::NoRouter(_))
    ));
    assert!(matches!(
        system.send(("name", "other@host"), 1u8).await,
        Err(SendError::NoRouterForNode(_))
    ));
    let (w, _wrx) = probe(false);
    let w = system.spawn(w);
    let _ = w;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything_and_runs_stopped_hooks() {
    let system = ActorSystem::new();
    let mut rxs = Vec::new();
    for _ in 0..20 {
        let (p, rx) = probe(false);
        system.spawn(p);
        rxs.push(rx);
    }
    let (trapper, mut trx) = probe(true);
    system.spawn(trapper);
    expect(&mut trx, "started", |s| matches!(s, Seen::Started(_))).await;
    assert_eq!(system.actor_count(), 21);
    // The trapping actor ignores the shutdown signal; it must be killed after the grace.
    system.shutdown_with_grace(Duration::from_millis(300)).await;
    assert_eq!(system.actor_count(), 0);
    for mut rx in rxs {
        expect(&mut rx, "stopped hook", |s| {
            matches!(s, Seen::Stopped(_, ExitReason::Shutdown))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_actors() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(false);
    system.spawn(p);
    expect(&mut rx, "started", |s| matches!(s, Seen::Started(_))).await;
    drop(system);
    expect(&mut rx, "stopped by drop", |s| {
        matches!(s, Seen::Stopped(_, ExitReason::Shutdown))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_and_cancel() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(false);
    let pid = system.spawn(p);
    let t1 = system.send_after(pid, "later".to_string(), Duration::from_millis(20));
    let t2 = system.send_after(pid, "never".to_string(), Duration::from_secs(3600));
    assert!(t2.cancel(), "a pending timer cancels");
    assert!(!t2.cancel(), "a second cancel reports nothing to cancel");
    expect(
        &mut rx,
        "timer message",
        |s| matches!(s, Seen::Text(t, _) if t == "later"),
    )
    .await;
    wait_until("t1 done", || t1.is_done()).await;
    assert!(!t1.cancel(), "a fired timer cannot be cancelled");
}

/// Time is the subject: on tokio's paused clock a timer's message arrives
/// exactly when its delay has passed, never before, and a cancelled timer's
/// never, however far the clock goes.
#[tokio::test(start_paused = true)]
async fn timers_keep_their_time_on_a_paused_clock() {
    let system = ActorSystem::new();
    let (p, mut rx) = probe(false);
    let pid = system.spawn(p);
    expect(&mut rx, "started", |s| matches!(s, Seen::Started(_))).await;
    let start = tokio::time::Instant::now();
    let _due = system.send_after(pid, "due".to_string(), Duration::from_secs(30));
    let cancelled = system.send_after(pid, "cancelled".to_string(), Duration::from_secs(10));
    assert!(cancelled.cancel());
    // Just before the delay: nothing.
    tokio::time::sleep(Duration::from_millis(29_999)).await;
    assert!(rx.try_recv().is_err(), "nothing before 30 s");
    let seen = expect(&mut rx, "the timer's message", |s| {
        matches!(s, Seen::Text(_, _))
    })
    .await;
    assert!(
        matches!(seen, Seen::Text(ref t, _) if t == "due"),
        "{seen:?}"
    );
    let at = start.elapsed();
    assert!(
        at >= Duration::from_secs(30) && at < Duration::from_millis(30_010),
        "at {at:?}"
    );
    // Two hours later, still nothing from the cancelled one.
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert!(rx.try_recv().is_err(), "a cancelled timer never fires");
}

#[test]
fn many_timers_do_not_use_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let system = ActorSystem::new();
        let (p, _rx) = probe(false);
        let pid = system.spawn(p);
        let timers: Vec<_> = (0..10_000)
            .map(|_| system.send_after(pid, (), Duration::from_secs(3600)))
            .collect();
        let threads = std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            threads < 64,
            "10,000 timers must not create threads (saw {threads})"
        );
        for t in timers {
            assert!(t.cancel());
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_from_different_owners_with_the_same_ref_are_distinct() {
    // Monitor references are only unique per node: two nodes can both monitor a
    // process with MonitorRef(1). Removing one must not remove the other.
    let system = ActorSystem::new();
    let (t, _trx) = probe(false);
    let target = system.spawn(t);
    let owner_a = Pid::new(joerl_core::node_id("a@host"), 5, 1);
    let owner_b = Pid::new(joerl_core::node_id("b@host"), 5, 1);
    let same = joerl_core::MonitorRef(1);
    for from in [owner_a, owner_b] {
        system.deliver_signal(
            target,
            joerl_core::Signal::Monitor {
                from,
                monitor: same,
            },
        );
    }
    wait_until("two monitors", || {
        system.relation_counts(target) == Some((0, 2, 0))
    })
    .await;
    system.deliver_signal(
        target,
        joerl_core::Signal::Demonitor {
            from: owner_a,
            monitor: same,
        },
    );
    wait_until("one monitor left", || {
        system.relation_counts(target) == Some((0, 1, 0))
    })
    .await;
}

/// Blocks its worker thread (a badly behaved handler) for a while, and never
/// finishes its stopped hook: only a kill ends it.
struct Blocker;
impl Actor for Blocker {
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {
        std::thread::sleep(Duration::from_millis(400));
    }
    async fn stopped(&mut self, _reason: &ExitReason, _ctx: &mut ActorContext) {
        std::future::pending::<()>().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_queued_with_shutdown_skips_the_stopped_hook_and_shutdown_finishes() {
    let system = ActorSystem::new();
    let pid = system.spawn(Blocker);
    system.send(pid, ()).await.unwrap();
    wait_until("handler running", || system.mailbox_len(pid) == Some(0)).await;
    // Both the shutdown signal and, after the grace, the kill are queued while
    // the handler blocks; the kill must win.
    tokio::time::timeout(
        DEADLINE,
        system.shutdown_with_grace(Duration::from_millis(50)),
    )
    .await
    .expect("shutdown finishes");
    assert_eq!(system.actor_count(), 0);
}
