//! gen_server call, cast, info, deferred replies and call errors.

mod common;

use std::time::Duration;

use common::*;
use joerl_core::gen_server::{
    CallResponse, GenServer, HandleCall, HandleCast, ReplyTo, Request, ServerRef, spawn_server,
};
use joerl_core::{Actor, ActorContext, ActorSystem, CallError, ExitReason, Message, Pid};

#[derive(Debug)]
enum Req {
    Add(i64),
    Get,
    Defer,
    Release(i64),
    Never,
    Crash,
    StopWith(String),
}

impl Request for Req {
    type Reply = i64;
}

#[derive(Default)]
struct Counter {
    total: i64,
    deferred: Option<ReplyTo<i64>>,
    infos: Vec<String>,
}

impl GenServer for Counter {
    type Calls = (Req, WhoCalls);
    type Casts = (i64,);

    async fn handle_info(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(s) = msg.downcast::<String>() {
            self.infos.push(*s);
        }
    }
}

impl HandleCall<Req> for Counter {
    async fn handle_call(
        &mut self,
        req: Req,
        from: ReplyTo<i64>,
        ctx: &mut ActorContext,
    ) -> CallResponse<i64> {
        match req {
            Req::Add(n) => {
                self.total += n;
                CallResponse::Reply(self.total)
            }
            Req::Get => CallResponse::Reply(self.total + self.infos.len() as i64 * 1000),
            Req::Defer => {
                self.deferred = Some(from);
                CallResponse::NoReply
            }
            Req::Release(v) => {
                if let Some(waiting) = self.deferred.take() {
                    waiting.reply(ctx.system(), v);
                }
                CallResponse::Reply(0)
            }
            Req::Never => CallResponse::NoReply,
            Req::Crash => panic!("server crash"),
            Req::StopWith(r) => CallResponse::Stop(-1, ExitReason::Custom(r)),
        }
    }
}

impl HandleCast<i64> for Counter {
    async fn handle_cast(&mut self, n: i64, _ctx: &mut ActorContext) {
        self.total += n;
    }
}

/// Asks the server who called it.
struct WhoCalls;

impl Request for WhoCalls {
    type Reply = Pid;
}

impl HandleCall<WhoCalls> for Counter {
    async fn handle_call(
        &mut self,
        _: WhoCalls,
        from: ReplyTo<Pid>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Pid> {
        CallResponse::Reply(from.caller())
    }
}

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_cast_and_info() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    assert_eq!(system.call_timeout(&s, Req::Add(2), T).await.unwrap(), 2);
    system.cast(&s, 5i64).await.unwrap();
    system
        .send(s.pid().unwrap(), "info".to_string())
        .await
        .unwrap();
    // Messages from one sender are handled in order, so the call sees both.
    assert_eq!(system.call_timeout(&s, Req::Get, T).await.unwrap(), 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_reply() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let (sys2, s2) = (system.clone(), s.clone());
    let waiting = tokio::spawn(async move { sys2.call_timeout(&s2, Req::Defer, T).await });
    // Release until the deferred call (which may not be parked yet) gets its reply.
    let start = std::time::Instant::now();
    while !waiting.is_finished() {
        assert!(start.elapsed() < DEADLINE, "deferred reply never arrived");
        system.call_timeout(&s, Req::Release(42), T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.await.unwrap().unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_timeout() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let err = system
        .call_timeout(&s, Req::Never, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout), "{err:?}");
    // The server still works and the late reply slot is gone.
    assert_eq!(system.call_timeout(&s, Req::Add(1), T).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_dead_server_is_noproc_promptly() {
    let system = ActorSystem::new();
    let dead = Pid::new(system.node_id(), 55_555, system.creation());
    let start = std::time::Instant::now();
    let err = system
        .call_timeout(
            &ServerRef::<Counter>::new(dead),
            Req::Get,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::NoProc), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "noproc must not wait for the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reports_server_exit_reason() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let err = system
        .call_timeout(&s, Req::Crash, Duration::from_secs(30))
        .await
        .unwrap_err();
    match err {
        CallError::Exit(ExitReason::Panic(m)) => assert_eq!(m, "server crash"),
        other => panic!("expected the panic reason, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_reply_arrives_before_down() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let r = system
        .call_timeout(&s, Req::StopWith("done".into()), T)
        .await
        .unwrap();
    assert_eq!(r, -1);
    wait_until("server gone", || !system.is_alive(s.pid().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_calls_with_a_foreign_request_or_reply_type_are_typed_errors() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let err = system.call_raw(s.dest(), "not a Req", T).await.unwrap_err();
    assert!(matches!(err, CallError::BadRequest), "{err:?}");
    // An untyped call gets the reply as a Message.
    let reply = system.call_raw(&s, Req::Get, T).await.unwrap();
    assert_eq!(*reply.downcast::<i64>().unwrap(), 0);
}

/// A request the server answers in `HandleCall` but forgot in `type Calls`.
struct Forgotten;

impl Request for Forgotten {
    type Reply = ();
}

impl HandleCall<Forgotten> for Counter {
    async fn handle_call(
        &mut self,
        _: Forgotten,
        _from: ReplyTo<()>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<()> {
        CallResponse::Reply(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_missing_from_type_calls_fails_at_once_and_names_it() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let start = std::time::Instant::now();
    let err = system.call(&s, Forgotten).await.unwrap_err();
    match &err {
        CallError::NotInCalls { server, request } => {
            assert!(server.ends_with("Counter"), "{server}");
            assert!(request.ends_with("Forgotten"), "{request}");
        }
        other => panic!("expected NotInCalls, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(1), "must not wait");
    assert!(err.to_string().contains("type Calls"), "{err}");
}

/// Calls `server` from inside an actor and reports who the server saw.
struct Caller {
    server: ServerRef<Counter>,
    report: tokio::sync::mpsc::UnboundedSender<(Pid, Pid)>,
}

impl Actor for Caller {
    async fn handle_message(&mut self, _msg: Message, ctx: &mut ActorContext) {
        let seen = ctx.call(&self.server, WhoCalls).await.unwrap();
        let _ = self.report.send((ctx.pid(), seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_the_calling_actor_as_its_caller() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let caller = system.spawn(Caller {
        server: s.clone(),
        report: tx,
    });
    system.send(caller, ()).await.unwrap();
    let (me, seen) = rx.recv().await.unwrap();
    assert_eq!(seen, me, "the server saw its reply slot, not the caller");
    // Outside any actor, the caller is the call's own reply address: a live
    // process while the call waits, never the server itself.
    let seen = system.call(&s, WhoCalls).await.unwrap();
    assert_ne!(seen, s.pid().unwrap());
    assert_eq!(seen.node(), system.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_leave_no_bookkeeping_behind() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    for i in 0..100 {
        assert_eq!(
            system.call_timeout(&s, Req::Add(1), T).await.unwrap(),
            i + 1
        );
    }
    let _ = system
        .call_timeout(&s, Req::Never, Duration::from_millis(20))
        .await;
    wait_until("server's monitor table empty", || {
        system.relation_counts(s.pid().unwrap()) == Some((0, 0, 0))
    })
    .await;
}
