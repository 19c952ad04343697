//! A work queue over three OS processes: a supervised `jobs` server on a
//! coordinator node, two worker nodes that call `{jobs, coord@127.0.0.1}` for
//! jobs, and a job re-queued when its worker is killed (SIGKILL) mid-job.
//!
//! ```text
//! cargo run --example work_queue
//! ```
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, ServerRef};
use joerl_dist::supervisor::{ChildSpec, Strategy, SupervisorSpec, spawn_supervisor};
use joerl_dist::{
    Actor, ActorContext, DownMessage, Message, MonitorRef, NodeBuilder, Pid, receive,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// Asks for a job: `None` when none is left to hand out.
#[derive(Serialize, Deserialize)]
struct GetJob;
impl Request for GetJob {
    type Reply = Option<u64>;
}

/// Reports a job done.
#[derive(Serialize, Deserialize)]
struct JobDone(u64);
impl Request for JobDone {
    type Reply = ();
}

/// The queue: hands jobs out, takes back the job of a worker that goes down.
struct Jobs {
    total: u64,
    pending: VecDeque<u64>,
    /// Who holds which job, under which monitor.
    taken: HashMap<Pid, (u64, MonitorRef)>,
    done: u64,
    requeued: u64,
}

impl GenServer for Jobs {
    type Calls = (GetJob, JobDone);
    type Casts = ();
    async fn handle_info(&mut self, msg: Message, _ctx: &mut ActorContext) {
        if let Ok(down) = msg.downcast::<DownMessage>() {
            if let Some((job, _)) = self.taken.remove(&down.pid) {
                println!(
                    "worker {} went down ({}): job {job} re-queued",
                    down.pid, down.reason
                );
                self.pending.push_front(job);
                self.requeued += 1;
            }
        }
    }
}

impl HandleCall<GetJob> for Jobs {
    async fn handle_call(
        &mut self,
        _: GetJob,
        from: ReplyTo<Option<u64>>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Option<u64>> {
        let job = self.pending.pop_front();
        if let Some(job) = job {
            let monitor = ctx.monitor(from.caller()).expect("a node can monitor");
            self.taken.insert(from.caller(), (job, monitor));
        }
        CallResponse::Reply(job)
    }
}

impl HandleCall<JobDone> for Jobs {
    async fn handle_call(
        &mut self,
        JobDone(job): JobDone,
        from: ReplyTo<()>,
        ctx: &mut ActorContext,
    ) -> CallResponse<()> {
        if let Some((_, monitor)) = self.taken.remove(&from.caller()) {
            ctx.demonitor(monitor);
        }
        self.done += 1;
        println!("job {job} done by {}", from.caller());
        if self.done == self.total {
            println!(
                "work_queue jobs={} done={} requeued={} workers=2",
                self.total, self.done, self.requeued
            );
        }
        CallResponse::Reply(())
    }
}
joerl_dist::remote_server!(Jobs);

/// A worker: calls for a job, works 20 ms, reports it, again; stops when none is left.
struct Worker(ServerRef<Jobs>);
struct Next;

impl Actor for Worker {
    async fn started(&mut self, ctx: &mut ActorContext) {
        let _ = ctx.send(ctx.pid(), Next).await;
    }
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        receive!(msg, {
            Next as _ => match ctx.call(&self.0, GetJob).await {
                Ok(Some(job)) => {
                    println!("took job {job}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = ctx.call(&self.0, JobDone(job)).await;
                    let _ = ctx.send(ctx.pid(), Next).await;
                }
                Ok(None) => { ctx.send_after(ctx.pid(), Next, Duration::from_millis(50)); }
                Err(e) => { println!("queue gone: {e}"); ctx.stop(joerl_dist::ExitReason::Normal) }
            },
            else _other => {},
        })
    }
}

#[derive(Parser)]
struct Args {
    /// `coord` or `worker` (for the processes this program starts), with the EPMD address.
    role: Option<String>,
    epmd: Option<std::net::SocketAddr>,
    #[arg(long, default_value_t = 40)]
    jobs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging_at("error");
    let args = Args::parse();
    let (Some(role), Some(epmd)) = (args.role.as_deref(), args.epmd) else {
        return launch(args.jobs).await;
    };
    let name = if role == "coord" {
        "coord".to_string()
    } else {
        format!("worker{}", std::process::id())
    };
    let node = NodeBuilder::new(name, "127.0.0.1:0".parse()?, epmd)
        .start()
        .await?;
    if role == "coord" {
        let total = args.jobs;
        let jobs = move || Jobs {
            total,
            pending: (0..total).collect(),
            taken: HashMap::new(),
            done: 0,
            requeued: 0,
        };
        spawn_supervisor(
            &node,
            SupervisorSpec::new(Strategy::OneForOne)
                .child(ChildSpec::server("jobs", jobs).name("jobs")),
        );
    } else {
        node.spawn(Worker(ServerRef::new(("jobs", "coord@127.0.0.1"))));
    }
    println!("ready");
    joerl_examples::until_stopped(Some(Duration::from_secs(60))).await;
    Ok(())
}

/// Starts EPMD here and the three nodes as processes; kills a worker mid-job.
async fn launch(jobs: u64) -> Result<()> {
    let epmd =
        joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new("127.0.0.1:0".parse()?)).await?;
    let start = |role: &str| -> Result<_> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                role,
                &epmd.local_addr().to_string(),
                "--jobs",
                &jobs.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        Ok((
            tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines(),
            child,
        ))
    };
    let (mut coord, _c) = start("coord")?;
    while coord.next_line().await?.context("coordinator exited")? != "ready" {}
    let (mut w1, mut w1_child) = start("worker")?;
    let (mut w2, _w2_child) = start("worker")?;
    // Kill the first worker while it holds a job (after its third).
    let mut taken = 0;
    while let Some(line) = w1.next_line().await? {
        taken += line.starts_with("took job") as u32;
        if taken == 3 {
            w1_child.kill().await?;
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = w2.next_line().await {} });
    let summary = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = coord.next_line().await? {
            if line.starts_with("work_queue ") {
                return Ok(line);
            }
            if line.contains("re-queued") {
                println!("{line}");
            }
        }
        anyhow::bail!("the coordinator exited before the summary")
    })
    .await
    .context("no summary within 30 s")??;
    println!("{summary}");
    Ok(())
}
