//! The smallest joerl program that talks to another node (QUICKSTART.md, step 4).
//!
//! ```text
//! cargo run --example quickstart -- --epmd 127.0.0.1:4369
//! ```
//!
//! It starts two nodes in one process, registers a `greeter` on node `b`, and
//! sends it a message from node `a` by `{name, node}`; the greeter answers the
//! sender, wherever it is.

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use joerl_dist::{Actor, ActorContext, DistributedSystem, Message, remote_message};
use serde::{Deserialize, Serialize};

/// 1. A message type, registered for the wire with one macro call.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    text: String,
}
remote_message!(Hello, "quickstart::Hello");

/// 2. An actor: it answers every Hello with a Hello to the sender.
struct Greeter;

impl Actor for Greeter {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        if let (Ok(hello), Some(from)) = (msg.downcast::<Hello>(), ctx.sender()) {
            let node = ctx.node().unwrap_or("?");
            println!("greeter on {node} got: {}", hello.text);
            let reply = Hello {
                text: format!("hello back, {from}"),
            };
            let _ = ctx.send(from, reply).await;
        }
    }
}

/// Prints what it receives, then stops the program.
struct Listener(Option<tokio::sync::oneshot::Sender<()>>);

impl Actor for Listener {
    async fn started(&mut self, ctx: &mut ActorContext) {
        // 3. A remote send: the same call as a local one, to {greeter, b@127.0.0.1}.
        let hello = Hello {
            text: "hi from a".into(),
        };
        ctx.send(("greeter", "b@127.0.0.1"), hello).await.unwrap();
    }

    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(hello) = msg.downcast::<Hello>() {
            println!("listener on a got: {}", hello.text);
            if let Some(done) = self.0.take() {
                let _ = done.send(());
            }
        }
    }
}

#[derive(Parser)]
struct Args {
    /// Where EPMD runs (start it with `cargo run --bin epmd_server`).
    #[arg(long, default_value = "127.0.0.1:4369")]
    epmd: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Nodes in one program here; in real life, one per process or machine.
    // Both must share a cookie: here it comes from JOERL_COOKIE or ~/.joerl.cookie.
    let a = DistributedSystem::new("a", "127.0.0.1:0", &args.epmd).await?;
    let b = DistributedSystem::new("b", "127.0.0.1:0", &args.epmd).await?;
    let greeter = b.spawn(Greeter);
    b.register("greeter", greeter)?;
    let (done, wait) = tokio::sync::oneshot::channel();
    a.spawn(Listener(Some(done)));
    tokio::select! {
        answered = tokio::time::timeout(Duration::from_secs(10), wait) => answered??,
        _ = tokio::signal::ctrl_c() => println!("interrupted"),
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
