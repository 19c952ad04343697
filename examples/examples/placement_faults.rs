//! Placement through failures, across OS processes: three node processes
//! (each with its own EPMD, joined through gossip) and 30 registered
//! counters; then
//!
//! 1. the leader is killed with SIGKILL: the survivors accept the next
//!    member as leader with a higher epoch, every counter answers again from
//!    the survivors, and a registration goes through the new leader;
//! 2. a second member is killed: the last one sees 1 of 3 members, no
//!    majority, stops every activation it ran and refuses to activate any
//!    identity (its sends by identity fail fast).
//!
//! ```text
//! cargo run --example placement_faults
//! leader_kill old=pf_1@127.0.0.1/1 new=pf_2@127.0.0.1/2 answered=30 registered_after=ok
//! minority local=0 answered=0 refused=30
//! placement_faults ok
//! ```
//!
//! Exits non-zero (with what it saw) if a step does not happen within its
//! deadline. Run by `examples/tests/examples.rs`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use joerl_examples::placement_node::{self, PlacementNodeArgs};
use joerl_examples::service_node::ChildNode;

#[derive(Parser, Debug)]
#[command(about = "Placement through a leader kill and a lost majority, across processes")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// One node (started by this program itself).
    #[command(hide = true)]
    Node(PlacementNodeArgs),
}

/// The `leader NODE EPOCH` a node reports, or `None`.
async fn leader(n: &mut ChildNode) -> Result<Option<(String, u64)>> {
    let line = n.ask("leader", "leader ").await?;
    let mut w = line.split_whitespace().skip(1);
    match (w.next(), w.next()) {
        (Some("none"), _) | (None, _) => Ok(None),
        (Some(node), Some(epoch)) => Ok(Some((node.to_string(), epoch.parse()?))),
        (Some(_), None) => bail!("{line}"),
    }
}

/// `calls` over the 30 counters: how many answered.
async fn answered(n: &mut ChildNode) -> Result<usize> {
    let line = n.ask("calls r 30 8 1000", "calls ").await?;
    let ok = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ok="))
        .context("ok=")?;
    Ok(ok.parse()?)
}

/// A step's deadline: `wait()` pauses 100 ms before the next look, or
/// fails once the step took longer than its limit.
struct Deadline {
    what: &'static str,
    start: Instant,
}

impl Deadline {
    fn new(what: &'static str) -> Self {
        Deadline {
            what,
            start: Instant::now(),
        }
    }

    async fn wait(&self) -> Result<()> {
        let limit = Duration::from_secs(60);
        ensure!(
            self.start.elapsed() < limit,
            "{}: not within {limit:?}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging();
    let args = Args::parse();
    if let Some(Role::Node(a)) = args.role {
        return placement_node::run(a).await;
    }
    placement_node::prepare_children("placement-faults");
    let mut nodes = vec![ChildNode::start("pf_1", None, &[]).await?];
    let seed = nodes[0].gossip.clone();
    for i in 2..=3 {
        nodes.push(ChildNode::start(&format!("pf_{i}"), Some(&seed), &[]).await?);
    }
    let mut names: Vec<String> = nodes.iter().map(|c| c.name.clone()).collect();
    names.sort();
    placement_node::wait_members(&mut nodes, &names).await?;
    // The leader is the lowest-ordered member: pf_1.
    let mut old = None;
    for n in nodes.iter_mut() {
        let d = Deadline::new("a leader accepted");
        let l = loop {
            if let Some(l) = leader(n).await? {
                break Some(l);
            }
            d.wait().await?;
        };
        ensure!(old.is_none() || old == l, "two leaders: {old:?} and {l:?}");
        old = l;
    }
    let (old_node, old_epoch) = old.context("a leader")?;
    ensure!(old_node == names[0], "leader {old_node}, not {}", names[0]);
    let line = nodes[1].ask("register r 30", "register ").await?;
    ensure!(line.starts_with("register ok"), "{line}");
    let d = Deadline::new("every counter answers");
    while answered(&mut nodes[1]).await? != 30 {
        d.wait().await?;
    }

    // 1. The leader is killed.
    let mut victim = nodes.remove(0);
    victim.kill().await?;
    let mut new = None;
    for n in nodes.iter_mut() {
        let d = Deadline::new("the survivors accept a new leader");
        let l = loop {
            match leader(n).await? {
                Some((node, epoch)) if node != old_node && epoch > old_epoch => {
                    break Some((node, epoch));
                }
                _ => d.wait().await?,
            }
        };
        ensure!(new.is_none() || new == l, "two leaders: {new:?} and {l:?}");
        new = l;
    }
    let (new_node, new_epoch) = new.context("a new leader")?;
    ensure!(
        new_node == names[1],
        "new leader {new_node}, not {}",
        names[1]
    );
    let d = Deadline::new("every counter answers from the survivors");
    let got = loop {
        let got = answered(&mut nodes[1]).await?;
        if got == 30 {
            break got;
        }
        d.wait().await?;
    };
    let line = nodes[1].ask("register s 5", "register ").await?;
    ensure!(
        line.starts_with("register ok"),
        "a registration through the new leader: {line}"
    );
    println!(
        "leader_kill old={old_node}/{old_epoch} new={new_node}/{new_epoch} answered={got} registered_after=ok"
    );

    // 2. A second member is killed: the last one is a minority of three.
    let mut second = nodes.pop().context("a third member")?;
    second.kill().await?;
    let last = &mut nodes[0];
    let d = Deadline::new("the last member stops its activations");
    while placement_node::ask_number(last, "local").await? != 0 {
        d.wait().await?;
    }
    let line = last.ask("calls r 30 8 1000", "calls ").await?;
    let field = |k: &str| -> Result<usize> {
        Ok(line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .with_context(|| format!("{k}= in {line}"))?
            .parse()?)
    };
    let (ok, refused) = (field("ok")?, field("err")?);
    let local = placement_node::ask_number(last, "local").await?;
    println!("minority local={local} answered={ok} refused={refused}");
    ensure!(
        ok == 0 && refused == 30 && local == 0,
        "a minority activated something: {line}, local {local}"
    );
    let last = nodes.pop().context("the last member")?;
    last.quit().await?;
    drop((victim, second));
    println!("placement_faults ok");
    Ok(())
}
