//! Helpers shared by the joerl-core integration tests.
#![allow(dead_code)]

use std::time::Duration;

use joerl_core::{Actor, ActorContext, DownMessage, ExitMessage, ExitReason, Message, Pid};
use tokio::sync::mpsc;

/// Generous deadline for conditions on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a [`Probe`] saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Started(Pid),
    Exit(ExitMessage),
    Down(DownMessage),
    Text(String, Option<Pid>),
    Stopped(Pid, ExitReason),
}

/// An actor that reports everything it sees to the test, and can be told to act.
pub struct Probe {
    pub tx: mpsc::UnboundedSender<Seen>,
    pub trap: bool,
}

/// Commands a probe obeys.
pub enum Cmd {
    Link(Pid),
    Unlink(Pid),
    Monitor(Pid),
    Stop(ExitReason),
    Panic,
    Sleep(Duration),
    Forward(Pid, String),
}

impl Actor for Probe {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.trap_exit(self.trap);
        let _ = self.tx.send(Seen::Started(ctx.pid()));
    }

    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let msg = match msg.downcast::<ExitMessage>() {
            Ok(e) => {
                let _ = self.tx.send(Seen::Exit(*e));
                return;
            }
            Err(m) => m,
        };
        let msg = match msg.downcast::<DownMessage>() {
            Ok(d) => {
                let _ = self.tx.send(Seen::Down(*d));
                return;
            }
            Err(m) => m,
        };
        let msg = match msg.downcast::<String>() {
            Ok(s) => {
                let _ = self.tx.send(Seen::Text(*s, ctx.sender()));
                return;
            }
            Err(m) => m,
        };
        if let Ok(cmd) = msg.downcast::<Cmd>() {
            match *cmd {
                Cmd::Link(p) => ctx.link(p).unwrap(),
                Cmd::Unlink(p) => ctx.unlink(p).unwrap(),
                Cmd::Monitor(p) => {
                    ctx.monitor(p).unwrap();
                }
                Cmd::Stop(r) => ctx.stop(r),
                Cmd::Panic => panic!("probe told to panic"),
                Cmd::Sleep(d) => tokio::time::sleep(d).await,
                Cmd::Forward(to, text) => {
                    let _ = ctx.send(to, text).await;
                }
            }
        }
    }

    async fn stopped(&mut self, reason: &ExitReason, ctx: &mut ActorContext) {
        let _ = self.tx.send(Seen::Stopped(ctx.pid(), reason.clone()));
    }
}

pub fn probe(trap: bool) -> (Probe, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Probe { tx, trap }, rx)
}

/// Waits for the next event matching `pred`, skipping others, within [`DEADLINE`].
pub async fn expect<F: Fn(&Seen) -> bool>(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    pred: F,
) -> Seen {
    let fut = async {
        loop {
            match rx.recv().await {
                Some(seen) if pred(&seen) => return seen,
                Some(_) => continue,
                None => panic!("probe channel closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Asserts that no event matching `pred` arrives within `window`.
pub async fn expect_none<F: Fn(&Seen) -> bool>(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    window: Duration,
    what: &str,
    pred: F,
) {
    let fut = async {
        loop {
            match rx.recv().await {
                Some(seen) if pred(&seen) => panic!("unexpected {what}: {seen:?}"),
                Some(_) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    };
    let _ = tokio::time::timeout(window, fut).await;
}

/// Polls `cond` until it holds or [`DEADLINE`] passes.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
