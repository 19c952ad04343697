//! gen_server call, cast, info, deferred replies and call errors.

mod common;

use std::time::Duration;

use common::*;
use joerl_core::gen_server::{CallResponse, GenServer, ReplyTo, spawn_server};
use joerl_core::{ActorContext, ActorSystem, CallError, ExitReason, Message, Pid};

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

#[derive(Default)]
struct Counter {
    total: i64,
    deferred: Option<ReplyTo>,
    infos: Vec<String>,
}

impl GenServer for Counter {
    type Call = Req;
    type Reply = i64;
    type Cast = i64;

    async fn handle_call(
        &mut self,
        req: Req,
        from: ReplyTo,
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

    async fn handle_cast(&mut self, n: i64, _ctx: &mut ActorContext) {
        self.total += n;
    }

    async fn handle_info(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(s) = msg.downcast::<String>() {
            self.infos.push(*s);
        }
    }
}

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_cast_and_info() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    assert_eq!(system.call::<_, i64>(s, Req::Add(2), T).await.unwrap(), 2);
    system.cast(s, 5i64).await.unwrap();
    system.send(s, Box::new("info".to_string())).await.unwrap();
    // Messages from one sender are handled in order, so the call sees both.
    assert_eq!(system.call::<_, i64>(s, Req::Get, T).await.unwrap(), 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_reply() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let sys2 = system.clone();
    let waiting = tokio::spawn(async move { sys2.call::<_, i64>(s, Req::Defer, T).await });
    // Release until the deferred call (which may not be parked yet) gets its reply.
    let start = std::time::Instant::now();
    while !waiting.is_finished() {
        assert!(start.elapsed() < DEADLINE, "deferred reply never arrived");
        system.call::<_, i64>(s, Req::Release(42), T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.await.unwrap().unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_timeout() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let err = system
        .call::<_, i64>(s, Req::Never, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout), "{err:?}");
    // The server still works and the late reply slot is gone.
    assert_eq!(system.call::<_, i64>(s, Req::Add(1), T).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_dead_server_is_noproc_promptly() {
    let system = ActorSystem::new();
    let dead = Pid::new(system.node_id(), 55_555, system.creation());
    let start = std::time::Instant::now();
    let err = system
        .call::<_, i64>(dead, Req::Get, Duration::from_secs(30))
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
        .call::<_, i64>(s, Req::Crash, Duration::from_secs(30))
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
        .call::<_, i64>(s, Req::StopWith("done".into()), T)
        .await
        .unwrap();
    assert_eq!(r, -1);
    wait_until("server gone", || !system.is_alive(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_request_or_reply_type_is_a_typed_error() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    let err = system.call::<_, i64>(s, "not a Req", T).await.unwrap_err();
    assert!(matches!(err, CallError::BadRequest), "{err:?}");
    let err = system.call::<_, String>(s, Req::Get, T).await.unwrap_err();
    assert!(matches!(err, CallError::UnexpectedReply { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_leave_no_bookkeeping_behind() {
    let system = ActorSystem::new();
    let s = spawn_server(&system, Counter::default());
    for i in 0..100 {
        assert_eq!(
            system.call::<_, i64>(s, Req::Add(1), T).await.unwrap(),
            i + 1
        );
    }
    let _ = system
        .call::<_, i64>(s, Req::Never, Duration::from_millis(20))
        .await;
    wait_until("server's monitor table empty", || {
        system.relation_counts(s) == Some((0, 0, 0))
    })
    .await;
}
