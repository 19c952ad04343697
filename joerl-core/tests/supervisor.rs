//! Supervisor strategies, restart types, intensity and shutdown order.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use joerl_core::supervisor::{
    ChildSpec, Restart, Strategy, SupervisorSpec, spawn_supervisor, which_children,
};
use joerl_core::{Actor, ActorContext, ActorSystem, ExitReason, Message, Pid};

/// Event log shared by all workers of a test: (child id, event).
type Log = Arc<Mutex<Vec<(String, String)>>>;

struct Worker {
    id: String,
    log: Log,
}

impl Actor for Worker {
    async fn started(&mut self, ctx: &mut ActorContext) {
        self.log
            .lock()
            .unwrap()
            .push((self.id.clone(), format!("start {}", ctx.pid())));
    }
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let Ok(r) = msg.downcast::<ExitReason>() {
            ctx.stop(*r);
        }
    }
    async fn stopped(&mut self, reason: &ExitReason, _ctx: &mut ActorContext) {
        self.log
            .lock()
            .unwrap()
            .push((self.id.clone(), format!("stop {reason}")));
    }
}

fn worker(id: &str, log: &Log) -> ChildSpec {
    let (id2, log) = (id.to_string(), log.clone());
    ChildSpec::new(id, move || Worker {
        id: id2.clone(),
        log: log.clone(),
    })
}

async fn children(system: &ActorSystem, sup: Pid) -> Vec<(String, Option<Pid>)> {
    which_children(system, sup)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.pid))
        .collect()
}

async fn pid_of(system: &ActorSystem, sup: Pid, id: &str) -> Pid {
    children(system, sup)
        .await
        .into_iter()
        .find(|(i, _)| i == id)
        .and_then(|(_, p)| p)
        .unwrap_or_else(|| panic!("child {id} not running"))
}

fn starts(log: &Log, id: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(i, e)| i == id && e.starts_with("start"))
        .count()
}

async fn wait_restarted(system: &ActorSystem, sup: Pid, id: &str, old: Pid) -> Pid {
    let start = std::time::Instant::now();
    loop {
        if let Some((_, Some(p))) = children(system, sup)
            .await
            .into_iter()
            .find(|(i, _)| i == id)
        {
            if p != old {
                return p;
            }
        }
        assert!(start.elapsed() < DEADLINE, "child {id} was not restarted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(worker("a", &log))
        .child(worker("b", &log));
    let sup = spawn_supervisor(&system, spec);
    let a = pid_of(&system, sup, "a").await;
    let b = pid_of(&system, sup, "b").await;
    system.send(a, ExitReason::custom("crash")).await.unwrap();
    let a2 = wait_restarted(&system, sup, "a", a).await;
    assert_ne!(a, a2);
    assert_eq!(pid_of(&system, sup, "b").await, b, "sibling untouched");
    assert!(system.is_alive(b));
    assert_eq!(starts(&log, "a"), 2);
    assert_eq!(starts(&log, "b"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_stops_siblings_before_restarting_all() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(5, Duration::from_secs(10))
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let sup = spawn_supervisor(&system, spec);
    let b = pid_of(&system, sup, "b").await;
    let (a, c) = (
        pid_of(&system, sup, "a").await,
        pid_of(&system, sup, "c").await,
    );
    log.lock().unwrap().clear();
    system.send(b, ExitReason::custom("crash")).await.unwrap();
    wait_restarted(&system, sup, "b", b).await;
    wait_restarted(&system, sup, "c", c).await;
    wait_restarted(&system, sup, "a", a).await;
    assert!(
        !system.is_alive(a) && !system.is_alive(c),
        "old siblings are gone"
    );
    let events: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(i, e)| format!("{i} {}", e.split(' ').next().unwrap()))
        .collect();
    // b crashed; c then a were stopped (reverse order); then a, b, c started, each once.
    assert_eq!(
        events,
        vec![
            "b stop", "c stop", "a stop", "a start", "b start", "c start"
        ],
        "{events:?}"
    );
    assert_eq!(system.actor_count(), 4, "no duplicate children");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::RestForOne)
        .intensity(5, Duration::from_secs(10))
        .child(worker("a", &log))
        .child(worker("b", &log))
        .child(worker("c", &log));
    let sup = spawn_supervisor(&system, spec);
    let a = pid_of(&system, sup, "a").await;
    let b = pid_of(&system, sup, "b").await;
    let c = pid_of(&system, sup, "c").await;
    system.send(b, ExitReason::custom("crash")).await.unwrap();
    wait_restarted(&system, sup, "b", b).await;
    wait_restarted(&system, sup, "c", c).await;
    assert_eq!(
        pid_of(&system, sup, "a").await,
        a,
        "earlier sibling untouched"
    );
    assert_eq!(
        (starts(&log, "a"), starts(&log, "b"), starts(&log, "c")),
        (1, 2, 2)
    );
    assert_eq!(system.actor_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_types_permanent_transient_temporary() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(10))
        .child(worker("perm", &log).restart(Restart::Permanent))
        .child(worker("trans", &log).restart(Restart::Transient))
        .child(worker("temp", &log).restart(Restart::Temporary));
    let sup = spawn_supervisor(&system, spec);
    // Permanent: restarted even after a normal exit.
    let p = pid_of(&system, sup, "perm").await;
    system.send(p, ExitReason::Normal).await.unwrap();
    wait_restarted(&system, sup, "perm", p).await;
    // Transient: not restarted after normal, restarted after a crash.
    let t = pid_of(&system, sup, "trans").await;
    system.send(t, ExitReason::Normal).await.unwrap();
    wait_until("transient gone", || !system.is_alive(t)).await;
    let start = std::time::Instant::now();
    loop {
        let kids = children(&system, sup).await;
        if kids.iter().any(|(i, p)| i == "trans" && p.is_none()) {
            break;
        }
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        starts(&log, "trans"),
        1,
        "transient not restarted after normal exit"
    );
    // Temporary: never restarted, and forgotten.
    let tmp = pid_of(&system, sup, "temp").await;
    system.send(tmp, ExitReason::custom("crash")).await.unwrap();
    let start = std::time::Instant::now();
    while children(&system, sup)
        .await
        .iter()
        .any(|(i, _)| i == "temp")
    {
        assert!(start.elapsed() < DEADLINE, "temporary child not removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(starts(&log, "temp"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_child_restarts_after_crash() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(10))
        .child(worker("trans", &log).restart(Restart::Transient));
    let sup = spawn_supervisor(&system, spec);
    let t = pid_of(&system, sup, "trans").await;
    system.send(t, ExitReason::custom("crash")).await.unwrap();
    wait_restarted(&system, sup, "trans", t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_stops_supervisor_with_shutdown() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(60))
        .child(worker("a", &log))
        .child(worker("b", &log));
    let sup = spawn_supervisor(&system, spec);
    let (w, mut wrx) = probe(false);
    let w = system.spawn(w);
    system.send(w, Cmd::Monitor(sup)).await.unwrap();
    wait_until("monitor set", || {
        system.relation_counts(sup).map(|c| c.1) == Some(1)
    })
    .await;
    let b = pid_of(&system, sup, "b").await;
    let mut a = pid_of(&system, sup, "a").await;
    for _ in 0..2 {
        system.send(a, ExitReason::custom("crash")).await.unwrap();
        a = wait_restarted(&system, sup, "a", a).await;
    }
    system.send(a, ExitReason::custom("crash")).await.unwrap();
    let Seen::Down(d) = expect(&mut wrx, "supervisor down", |s| matches!(s, Seen::Down(_))).await
    else {
        unreachable!()
    };
    assert_eq!(d.reason, ExitReason::Shutdown);
    assert!(
        !system.is_alive(b),
        "children are stopped with the supervisor"
    );
    wait_until("only the watcher is left", || system.actor_count() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_shut_down_in_reverse_start_order() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(worker("first", &log))
        .child(worker("second", &log))
        .child(worker("third", &log));
    let sup = spawn_supervisor(&system, spec);
    pid_of(&system, sup, "third").await;
    log.lock().unwrap().clear();
    system.exit(sup, ExitReason::Shutdown).unwrap();
    wait_until("all stopped", || system.actor_count() == 0).await;
    let order: Vec<String> = log.lock().unwrap().iter().map(|(i, _)| i.clone()).collect();
    assert_eq!(order, vec!["third", "second", "first"]);
}

/// Traps exits and never stops on shutdown: the supervisor must kill it.
struct Stubborn;
impl Actor for Stubborn {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.trap_exit(true);
    }
    async fn handle_message(&mut self, _msg: Message, _ctx: &mut ActorContext) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stubborn_child_is_killed_after_its_shutdown_timeout() {
    let system = ActorSystem::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(ChildSpec::new("stubborn", || Stubborn).shutdown(Duration::from_millis(100)));
    let sup = spawn_supervisor(&system, spec);
    let child = pid_of(&system, sup, "stubborn").await;
    system.exit(sup, ExitReason::Shutdown).unwrap();
    wait_until("child killed", || !system.is_alive(child)).await;
    wait_until("supervisor gone", || system.actor_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_shutdown_stops_supervision_tree() {
    let system = ActorSystem::new();
    let log = Log::default();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(worker("a", &log))
        .child(worker("b", &log));
    let sup = spawn_supervisor(&system, spec);
    pid_of(&system, sup, "b").await;
    system.shutdown().await;
    assert_eq!(system.actor_count(), 0);
    // Nothing was restarted during shutdown.
    assert_eq!((starts(&log, "a"), starts(&log, "b")), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_child_name_follows_the_child_across_three_restarts() {
    let system = ActorSystem::new();
    let log: Log = Arc::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(60))
        .child(worker("jobs", &log).name("jobs"));
    let sup = spawn_supervisor(&system, spec);
    let mut pid = pid_of(&system, sup, "jobs").await;
    for round in 0..3 {
        assert_eq!(system.whereis("jobs"), Some(pid), "round {round}");
        // Crash the child through its name: the name reaches the running one.
        system
            .send("jobs", ExitReason::Custom("crash".into()))
            .await
            .unwrap();
        pid = wait_restarted(&system, sup, "jobs", pid).await;
    }
    assert_eq!(system.whereis("jobs"), Some(pid));
    assert_eq!(starts(&log, "jobs"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_name_held_by_another_actor_fails_the_start() {
    let system = ActorSystem::new();
    let log: Log = Arc::default();
    let squatter = system.spawn(Worker {
        id: "squatter".into(),
        log: log.clone(),
    });
    system.register("jobs", squatter).unwrap();
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(worker("jobs", &log).name("jobs"));
    let sup = spawn_supervisor(&system, spec);
    wait_until("supervisor gave up", || !system.is_alive(sup)).await;
    assert_eq!(system.whereis("jobs"), Some(squatter));
    assert_eq!(starts(&log, "jobs"), 0);
}
