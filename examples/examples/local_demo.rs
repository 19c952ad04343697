//! A tour of the local runtime in one process: spawn, send, a gen_server call,
//! a link that propagates a crash, a monitor, and a supervisor restarting a
//! crashed child. Exits with a summary.
//!
//! ```text
//! cargo run --example local_demo
//! ```

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use joerl_core::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, spawn_server};
use joerl_core::supervisor::{
    ChildSpec, Strategy, SupervisorSpec, spawn_supervisor, which_children,
};
use joerl_core::{Actor, ActorContext, ActorSystem, DownMessage, ExitReason, Message, Pid};
use tokio::sync::mpsc;

/// A key-value store as a gen_server.
#[derive(Default)]
struct Store(std::collections::HashMap<String, String>);

/// Stores a value; the reply is the value it replaced.
struct Put(String, String);
impl Request for Put {
    type Reply = Option<String>;
}

/// Looks a value up.
struct Get(String);
impl Request for Get {
    type Reply = Option<String>;
}

impl GenServer for Store {
    type Calls = (Put, Get);
    type Casts = ();
}

impl HandleCall<Put> for Store {
    async fn handle_call(
        &mut self,
        Put(k, v): Put,
        _from: ReplyTo<Option<String>>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Option<String>> {
        CallResponse::Reply(self.0.insert(k, v))
    }
}

impl HandleCall<Get> for Store {
    async fn handle_call(
        &mut self,
        Get(k): Get,
        _from: ReplyTo<Option<String>>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Option<String>> {
        CallResponse::Reply(self.0.get(&k).cloned())
    }
}

/// Crashes when told to.
struct Fragile;

impl Actor for Fragile {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if msg.is::<&'static str>() {
            panic!("told to crash");
        }
    }
}

/// Forwards the down messages it gets to the demo.
struct Watcher(mpsc::UnboundedSender<DownMessage>, Pid);

impl Actor for Watcher {
    async fn started(&mut self, ctx: &mut ActorContext) {
        ctx.monitor(self.1).expect("local monitor");
    }
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(down) = msg.downcast::<DownMessage>() {
            let _ = self.0.send(*down);
        }
    }
}

#[derive(Parser)]
#[command(about = "A tour of the joerl runtime in one process")]
struct Args {}

#[tokio::main]
async fn main() -> Result<()> {
    let Args {} = Args::parse();
    tokio::select! {
        r = tour() => r,
        _ = joerl_examples::until_stopped(None) => {
            println!("interrupted");
            Ok(())
        }
    }
}

async fn tour() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    // Actor panics are expected here; report them in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("(an actor panicked: {info})")));
    let system = ActorSystem::new();
    let timeout = Duration::from_secs(5);

    // gen_server call
    let store = spawn_server(&system, Store::default());
    system
        .call(&store, Put("lang".into(), "rust".into()))
        .await?;
    let got = system.call(&store, Get("lang".into())).await?;
    println!("call: get(lang) = {got:?}");

    // monitor sees a crash
    let fragile = system.spawn(Fragile);
    let (tx, mut rx) = mpsc::unbounded_channel();
    system
        .start(Watcher(tx, fragile), Default::default())
        .await?;
    system.send(fragile, "crash").await?;
    let down = tokio::time::timeout(timeout, rx.recv())
        .await?
        .context("watcher stopped")?;
    println!(
        "monitor: {} went down with reason {}",
        down.pid, down.reason
    );

    // supervisor restarts a crashed child
    let sup = spawn_supervisor(
        &system,
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::new("fragile", || Fragile)),
    );
    let before = which_children(&system, sup).await?[0]
        .pid
        .context("child running")?;
    system.send(before, "crash").await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let after = loop {
        if let Some(pid) = which_children(&system, sup).await?[0].pid {
            if pid != before {
                break pid;
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the supervisor did not restart its child");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("supervisor: child {before} crashed and was restarted as {after}");

    let actors = system.actor_count();
    system.shutdown().await;
    println!(
        "summary: call ok, monitor saw {}, supervisor restarted 1 child, {actors} actors stopped cleanly",
        ExitReason::Panic("told to crash".into())
    );
    Ok(())
}
