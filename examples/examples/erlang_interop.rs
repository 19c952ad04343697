//! A joerl node that Erlang/OTP nodes talk to in Erlang's own terms, and a
//! benchmark of joerl beside Erlang over Erlang's distribution protocol.
//!
//! ```text
//! # terminal 1: an EPMD (Erlang's own `epmd -port 4369`, or joerl's) and the node
//! cargo run --release --bin epmd_server -- 127.0.0.1:4369
//! cargo run --example erlang_interop -- --name joerl --epmd 127.0.0.1:4369 --cookie C
//! # terminal 2: a real Erlang node (ERL_EPMD_PORT=4369 if EPMD is elsewhere)
//! erl -name e@127.0.0.1 -setcookie C
//! 1> net_adm:ping('joerl@127.0.0.1').
//! pong
//! 2> {echo, 'joerl@127.0.0.1'} ! {self(), hi}, flush().
//! Shell got {echo,hi}
//! ok
//! 3> gen_server:call({counter, 'joerl@127.0.0.1'}, {add, 5}).
//! 5
//! 4> link(gen_server:call({counter, 'joerl@127.0.0.1'}, self)).
//! true
//! ```
//!
//! The node `NAME@127.0.0.1` (the host is the one in `--name name@host`, else
//! the `--listen` IP) registers in the EPMD at `--epmd` and runs until Ctrl-C
//! or SIGTERM, with:
//! - `echo`, an actor: to `{Pid, Term}` it replies `{echo, Term}` to Pid;
//! - `counter`, a gen_server taking Erlang terms (`Calls = (Term,)`):
//!   `{add, N}` -> the new total, `get` -> the total, `self` -> its own pid
//!   (an Erlang pid, so an Erlang process can link to or monitor it).
//!
//! It prints `ready NAME@127.0.0.1` once it is registered. Flags: `--cookie`
//! (default: JOERL_COOKIE, else ~/.joerl.cookie; Erlang's `-setcookie` must
//! match), `--listen ADDR` (default 127.0.0.1:0), `--normal` (connect to
//! Erlang nodes as a normal node, listed in their `nodes()`, instead of a
//! hidden one, in `nodes(hidden)`).
//!
//! ```text
//! cargo run --release --example erlang_interop -- bench [--count N] [--calls M]
//! erlang_interop erl_to_joerl_msgs_per_s=.. erl_to_erl_msgs_per_s=.. joerl_to_erl_msgs_per_s=.. call_rtt_us_p50_erl_joerl=.. call_rtt_us_p99_erl_joerl=.. call_rtt_us_p50_erl_erl=.. call_rtt_us_p99_erl_erl=.. call_rtt_us_p50_joerl_erl=.. call_rtt_us_p99_joerl_erl=..
//! ```
//!
//! `bench` needs `erl` and `erlc` (Debian: `apt-get install erlang-base`) and
//! starts everything itself on 127.0.0.1: joerl's EPMD in this process (port
//! 0), the joerl node `joerl@127.0.0.1` (port 0; `echo`, `counter` and
//! `sink`), and two Erlang nodes `ebench1` and `ebench2` (`erl -noshell`,
//! `ERL_EPMD_PORT` at that EPMD, `-start_epmd false`, each listening on a
//! port checked free just before). Their code is `examples/erlang/interop_bench.erl`
//! (built into this program), compiled with `erlc` into a temporary directory
//! at start; each `erl` reads one Erlang expression per line on its standard
//! input and prints its result on one line (see that module). ebench2 runs a
//! `sink` and a gen_server `bench_server` of that module. After a warm-up of
//! 5,000 messages and 2,000 calls in each of the six shapes, one after
//! another:
//! - `erl_to_joerl_msgs_per_s`: ebench1 sends `{start, self(), N}` to
//!   `{sink, 'joerl@127.0.0.1'}`, then N `{msg, I}` as fast as `!` goes; the
//!   joerl sink counts them and sends `{done, N}` back. Measured on the
//!   Erlang side, from the first `{msg, _}` sent to `{done, N}` received.
//! - `erl_to_erl_msgs_per_s`: the same from ebench1 to `{sink, ebench2}`.
//! - `joerl_to_erl_msgs_per_s`: a joerl task sends the start message (with the
//!   pid of a joerl inbox) and N `Term`s `{msg, I}` to `("sink", ebench2)` by
//!   name; measured on the joerl side, from the first `{msg, _}` sent to the
//!   inbox receiving `{done, N}`.
//! - `call_rtt_us_*_erl_joerl`: ebench1 makes M sequential
//!   `gen_server:call({counter, 'joerl@127.0.0.1'}, {add, 1})`, each timed
//!   with `erlang:monotonic_time(nanosecond)` around the call;
//!   `*_erl_erl`: the same to `{bench_server, ebench2}`; `*_joerl_erl`: the
//!   joerl node's `call_raw(("bench_server", ebench2), {add, 1})` M times,
//!   each timed with `Instant` around the call.
//!
//! Percentiles are the sorted samples' index `(M - 1) * p` on both sides.
//! Defaults N = 1,000,000 and M = 20,000. Both `erl` nodes (end of input,
//! then SIGKILL by their handle after 5 s), the joerl node and the EPMD are
//! stopped before the one result line is printed, also when a step fails or
//! Ctrl-C or SIGTERM ends the run early.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use joerl_dist::erlang::{Atom, ErlPid, Term};
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo};
use joerl_dist::{
    Actor, ActorContext, DistributedSystem, Message, NodeBuilder, NodeEvent, Pid, SpawnOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(
    about = "A joerl node Erlang/OTP nodes talk to (echo, counter), and `bench`: joerl beside Erlang",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// This node's name (`name` or `name@host`).
    #[arg(long, default_value = "joerl")]
    name: String,
    /// EPMD address (Erlang nodes find this node there: ERL_EPMD_PORT).
    #[arg(long, default_value = "127.0.0.1:4369")]
    epmd: SocketAddr,
    /// Cookie (default: JOERL_COOKIE, else ~/.joerl.cookie); `erl -setcookie` must match.
    #[arg(long)]
    cookie: Option<String>,
    /// Address to listen on (joerl and Erlang peers alike).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Connect to Erlang nodes as a normal node, not a hidden one.
    #[arg(long)]
    normal: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Starts an EPMD, a joerl node and two `erl` nodes on 127.0.0.1 and
    /// prints message rates and call round trips between them (one line).
    Bench {
        /// Messages per throughput figure.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Calls per round-trip figure.
        #[arg(long, default_value_t = 20_000)]
        calls: u64,
    },
}

/// Replies `{echo, Term}` to `{Pid, Term}`.
struct Echo;

impl Actor for Echo {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Ok(t) = msg.downcast::<Term>() else {
            return;
        };
        if let Some([Term::Pid(from), what]) = t.as_tuple() {
            let reply = Term::tuple(vec![Term::atom("echo"), what.clone()]);
            let _ = ctx.send(from.to_joerl(), reply).await;
        }
    }
}

/// A gen_server taking Erlang terms: `{add, N}` -> the new total, `get` ->
/// the total, `self` -> its own pid.
struct Counter(i64);

impl GenServer for Counter {
    type Calls = (Term,);
    type Casts = ();
}

impl HandleCall<Term> for Counter {
    async fn handle_call(
        &mut self,
        req: Term,
        _from: ReplyTo<Term>,
        ctx: &mut ActorContext,
    ) -> CallResponse<Term> {
        let reply = match req.as_tuple() {
            Some([op, Term::Int(n)]) if op.is_atom("add") => {
                self.0 = self.0.wrapping_add(*n);
                Term::Int(self.0)
            }
            _ if req.is_atom("get") => Term::Int(self.0),
            _ if req.is_atom("self") => match erl_pid(ctx.system().node_name(), ctx.pid()) {
                Some(pid) => Term::Pid(pid),
                None => Term::tuple(vec![Term::atom("error"), Term::atom("no_node_name")]),
            },
            _ => Term::tuple(vec![Term::atom("error"), Term::atom("unknown")]),
        };
        CallResponse::Reply(reply)
    }
}

/// The Erlang pid of `pid` on the node called `node`.
fn erl_pid(node: Option<&str>, pid: Pid) -> Option<ErlPid> {
    Some(ErlPid::from_joerl(pid, Atom::new(node?).ok()?))
}

/// Counts `{msg, _}` after `{start, From, N}` and sends `{done, N}` to From
/// when it has N.
struct Sink {
    expected: u64,
    seen: u64,
    reply_to: Option<Pid>,
}

impl Sink {
    async fn done_if_complete(&mut self, ctx: &mut ActorContext) {
        if self.seen == self.expected {
            if let Some(to) = self.reply_to.take() {
                let done = Term::tuple(vec![Term::atom("done"), Term::from(self.expected)]);
                let _ = ctx.send(to, done).await;
            }
        }
    }
}

impl Actor for Sink {
    async fn handle_message(&mut self, msg: Message, ctx: &mut ActorContext) {
        let Some(t) = msg.downcast_ref::<Term>() else {
            return;
        };
        match t.as_tuple() {
            Some([tag, _]) if tag.is_atom("msg") => {
                self.seen += 1;
                self.done_if_complete(ctx).await;
            }
            Some([tag, Term::Pid(from), n]) if tag.is_atom("start") => {
                self.expected = n.as_int().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                self.seen = 0;
                self.reply_to = Some(from.to_joerl());
                self.done_if_complete(ctx).await;
            }
            _ => {}
        }
    }
}

/// Hands what it receives to the bench code.
struct Inbox(mpsc::UnboundedSender<Message>);

impl Actor for Inbox {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let _ = self.0.send(msg);
    }
}

/// Registers `echo` and `counter` on `node`.
fn spawn_services(node: &DistributedSystem) -> Result<()> {
    node.system()
        .spawn_with(Echo, SpawnOptions::new().name("echo"))
        .context("cannot register echo")?;
    joerl_dist::gen_server::spawn_server_with(
        node.system(),
        Counter(0),
        SpawnOptions::new().name("counter"),
    )
    .context("cannot register counter")?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    joerl_examples::init_logging();
    let args = Args::parse();
    match args.mode {
        None => serve(args.node).await,
        Some(Mode::Bench { count, calls }) => bench(count, calls).await,
    }
}

async fn serve(a: NodeArgs) -> Result<()> {
    let mut builder = NodeBuilder::new(a.name, a.listen, a.epmd).erlang_hidden(!a.normal);
    if let Some(cookie) = a.cookie {
        builder = builder.cookie(cookie);
    }
    let node = builder.start().await.context("cannot start the node")?;
    if let Err(e) = spawn_services(&node) {
        node.shutdown().await;
        return Err(e);
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", node.name())?;
        out.flush()?;
    }
    joerl_examples::until_stopped(None).await;
    node.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------- bench

/// The Erlang side of the benchmark.
const ERL_MODULE: &str = include_str!("../erlang/interop_bench.erl");
/// Messages and calls per shape before measuring.
const WARM_MSGS: u64 = 5_000;
const WARM_CALLS: u64 = 2_000;
/// How long `erl` may take to start and answer its first expression.
const ERL_START: Duration = Duration::from_secs(30);
/// How long one run may take (the module's own deadline is 100 s).
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// One joerl call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped `erl` may take to exit before it is killed.
const ERL_EXIT: Duration = Duration::from_secs(5);

/// A temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "joerl-erlang-interop-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the Erlang module into `dir` and compiles it there with `erlc`.
fn compile_module(dir: &std::path::Path) -> Result<()> {
    let src = dir.join("interop_bench.erl");
    std::fs::write(&src, ERL_MODULE).with_context(|| format!("cannot write {}", src.display()))?;
    let out = std::process::Command::new("erlc")
        .arg("-o")
        .arg(dir)
        .arg(&src)
        .output()
        .context("cannot run erlc (bench needs Erlang/OTP: apt-get install erlang-base)")?;
    if !out.status.success() {
        bail!(
            "erlc failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// A running `erl` that evaluates one expression per line of its input.
struct ErlNode {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its full node name (`name@127.0.0.1`).
    name: String,
}

impl ErlNode {
    /// Starts `erl -name SHORT@127.0.0.1` registered in the EPMD at
    /// `epmd_port`, with the module in `dir`; [`ready`](Self::ready) waits
    /// until it evaluates.
    fn spawn(short: &str, epmd_port: u16, cookie: &str, dir: &std::path::Path) -> Result<Self> {
        let name = format!("{short}@127.0.0.1");
        let port = free_port()?.to_string();
        let mut child = Command::new("erl")
            .args(["-noshell", "-name", &name, "-setcookie", cookie])
            .args(["-start_epmd", "false"])
            .args(["-kernel", "inet_dist_use_interface", "{127,0,0,1}"])
            .args(["-kernel", "inet_dist_listen_min", &port])
            .args(["-kernel", "inet_dist_listen_max", &port])
            .arg("-pa")
            .arg(dir)
            .args(["-eval", "interop_bench:repl()."])
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start erl (bench needs Erlang/OTP: apt-get install erlang-base)")?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let stdout = stdout.expect("piped");
        Ok(ErlNode {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            name,
        })
    }

    /// Waits until the node evaluates.
    async fn ready(&mut self) -> Result<()> {
        let v = self
            .eval("ok", ERL_START)
            .await
            .with_context(|| format!("erl {} did not start", self.name))?;
        if v != "ok" {
            bail!("erl {} answered {v} to ok", self.name);
        }
        Ok(())
    }

    /// Evaluates `expr` (no trailing dot) and returns the value printed
    /// (`V` of `{ok,V}`); `{error,..}` is an error.
    async fn eval(&mut self, expr: &str, deadline: Duration) -> Result<String> {
        let stdin = self.stdin.as_mut().context("erl's input is closed")?;
        stdin
            .write_all(format!("{expr}.\n").as_bytes())
            .await
            .with_context(|| format!("erl {} does not read", self.name))?;
        stdin.flush().await?;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let line = tokio::time::timeout_at(until, self.lines.next_line())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "erl {} did not answer {expr} within {deadline:?}",
                        self.name
                    )
                })?
                .with_context(|| format!("reading erl {}'s output", self.name))?;
            match line {
                Some(l) if l.starts_with("{ok,") && l.ends_with('}') => {
                    return Ok(l["{ok,".len()..l.len() - 1].to_string());
                }
                Some(l) if l.starts_with("{error,") => {
                    bail!("erl {} failed on {expr}: {l}", self.name)
                }
                // Anything else (Erlang's log) is shown.
                Some(l) => eprintln!("[{}] {l}", self.name),
                None => bail!("erl {} ended while evaluating {expr}", self.name),
            }
        }
    }

    /// Evaluates `expr` and checks that its value is `want`.
    async fn expect(&mut self, expr: &str, want: &str) -> Result<()> {
        let got = self.eval(expr, ERL_START).await?;
        if got != want {
            bail!("erl {}: {expr} gave {got}, not {want}", self.name);
        }
        Ok(())
    }

    /// Ends the node: end of input makes it halt; if it has not exited
    /// within `ERL_EXIT`, SIGKILL by its handle. Waits for it either way.
    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(ERL_EXIT, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "erl {} did not halt within {ERL_EXIT:?}; killing it",
                self.name
            );
            let _ = self.child.kill().await;
        }
    }
}

/// Every integer in `s`, in order.
fn ints(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// ERL sends N messages to `dest` (an Erlang expression); the elapsed
/// microseconds it measured.
async fn erl_send(erl: &mut ErlNode, dest: &str, n: u64) -> Result<u64> {
    let v = erl
        .eval(
            &format!("interop_bench:send_run({dest}, {n})"),
            RUN_DEADLINE,
        )
        .await?;
    match (v.starts_with("{sent,"), ints(&v).as_slice()) {
        (true, [got, micros]) if *got == n => Ok((*micros).max(1)),
        _ => bail!("unexpected send_run result {v}"),
    }
}

/// ERL makes M calls to `server` (an Erlang expression); p50 and p99 in
/// nanoseconds.
async fn erl_call(erl: &mut ErlNode, server: &str, m: u64) -> Result<(u64, u64)> {
    let v = erl
        .eval(
            &format!("interop_bench:call_run({server}, {m})"),
            RUN_DEADLINE,
        )
        .await?;
    match (v.starts_with("{rtt,"), ints(&v).as_slice()) {
        (true, [p50, p99]) => Ok((*p50, *p99)),
        _ => bail!("unexpected call_run result {v}"),
    }
}

/// A task aborted when this handle is dropped (a run that fails or is
/// interrupted leaves no sender behind).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The joerl node sends N `{msg, I}` to `("sink", erl_node)`; the time from
/// the first one to the sink's `{done, N}`.
async fn joerl_send(node: &DistributedSystem, erl_node: &str, n: u64) -> Result<Duration> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inbox = node.spawn(Inbox(tx));
    let mut events = node.subscribe();
    let result = async {
        let me = erl_pid(Some(node.name()), inbox).context("this node's name is not an atom")?;
        let start = Term::tuple(vec![Term::atom("start"), Term::Pid(me), Term::from(n)]);
        node.send(("sink", erl_node), start)
            .await
            .context("sending start to the Erlang sink")?;
        let t0 = Instant::now();
        let mut producer = {
            let node = node.clone();
            let erl_node = erl_node.to_string();
            AbortOnDrop(tokio::spawn(async move {
                let msg = Atom::new("msg").expect("an atom");
                for i in 1..=n {
                    let m = Term::Tuple(vec![Term::Atom(msg.clone()), Term::from(i)]);
                    node.send(("sink", erl_node.as_str()), m).await?;
                }
                anyhow::Ok(())
            }))
        };
        // The sink's node going down ends the run at once.
        let down = async {
            while let Some(ev) = events.recv().await {
                if matches!(&ev, NodeEvent::Down { node, .. } if node == erl_node) {
                    return ev;
                }
            }
            std::future::pending().await
        };
        let done = tokio::select! {
            r = tokio::time::timeout(RUN_DEADLINE, rx.recv()) => r,
            ev = down => {
                bail!("{erl_node} went away during the run: {ev:?}");
            }
        };
        let elapsed = t0.elapsed();
        let reply = match done {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                bail!("inbox closed");
            }
            Err(_) => {
                bail!("the Erlang sink did not report within {RUN_DEADLINE:?}");
            }
        };
        (&mut producer.0)
            .await
            .context("the sender task failed")?
            .context("sending to the Erlang sink")?;
        let reply = reply
            .downcast::<Term>()
            .map_err(|_| anyhow::anyhow!("the inbox got something else than a term"))?;
        match reply.as_tuple() {
            Some([tag, got]) if tag.is_atom("done") && got.as_int() == i64::try_from(n).ok() => {
                Ok(elapsed)
            }
            _ => bail!("the Erlang sink answered {reply}"),
        }
    }
    .await;
    let _ = node.system().exit(inbox, joerl_dist::ExitReason::Kill);
    result
}

/// The joerl node calls `("bench_server", erl_node)` M times; samples in
/// nanoseconds.
async fn joerl_call(node: &DistributedSystem, erl_node: &str, m: u64) -> Result<Vec<u32>> {
    let add = Atom::new("add").expect("an atom");
    let mut samples = Vec::with_capacity(m as usize);
    for _ in 0..m {
        let req = Term::Tuple(vec![Term::Atom(add.clone()), Term::Int(1)]);
        let t0 = Instant::now();
        let reply = node
            .system()
            .call_raw(("bench_server", erl_node), req, CALL_TIMEOUT)
            .await
            .context("calling bench_server on the Erlang node")?;
        let rtt = t0.elapsed();
        match reply.downcast::<Term>() {
            Ok(t) if t.as_int().is_some() => {}
            Ok(t) => bail!("bench_server answered {t}"),
            Err(_) => bail!("bench_server answered something else than a term"),
        }
        samples.push(rtt.as_nanos().min(u32::MAX as u128) as u32);
    }
    Ok(samples)
}

/// What `bench` prints.
struct Figures {
    erl_to_joerl: f64,
    erl_to_erl: f64,
    joerl_to_erl: f64,
    /// (p50, p99) in microseconds.
    erl_joerl: (f64, f64),
    erl_erl: (f64, f64),
    joerl_erl: (f64, f64),
}

fn per_s(n: u64, micros: u64) -> f64 {
    n as f64 / (micros as f64 / 1e6)
}

fn us(p: (u64, u64)) -> (f64, f64) {
    (p.0 as f64 / 1000.0, p.1 as f64 / 1000.0)
}

async fn bench(count: u64, calls: u64) -> Result<()> {
    if count == 0 || calls == 0 {
        bail!("--count and --calls must be at least 1");
    }
    let dir = TempDir::new()?;
    compile_module(&dir.0)?;
    let epmd = joerl_epmd::EpmdServer::bind(joerl_epmd::ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
    ))
    .await
    .context("cannot start the EPMD")?;
    let epmd_port = epmd.local_addr().port();
    let cookie = format!(
        "interop-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let node = match NodeBuilder::new("joerl", "127.0.0.1:0".parse()?, epmd.local_addr())
        .cookie(cookie.clone())
        .start()
        .await
    {
        Ok(node) => node,
        Err(e) => {
            epmd.shutdown().await;
            return Err(anyhow::Error::new(e).context("cannot start the joerl node"));
        }
    };
    let mut erls: Vec<ErlNode> = Vec::new();
    let run = async {
        spawn_services(&node)?;
        let sink = node.spawn(Sink {
            expected: 0,
            seen: 0,
            reply_to: None,
        });
        node.register("sink", sink)?;
        eprintln!("starting ebench1 and ebench2");
        // Each child is in `erls` as soon as it runs, so that it is stopped
        // below whatever happens next.
        erls.push(ErlNode::spawn("ebench1", epmd_port, &cookie, &dir.0)?);
        erls.push(ErlNode::spawn("ebench2", epmd_port, &cookie, &dir.0)?);
        let [e1, e2] = erls.as_mut_slice() else {
            unreachable!("two erl nodes");
        };
        let (r1, r2) = tokio::join!(e1.ready(), e2.ready());
        r1?;
        r2?;
        measure(&node, e1, e2, count, calls).await
    };
    // Ctrl-C or SIGTERM ends the run early; the cleanup below still runs.
    let result = tokio::select! {
        r = run => r,
        _ = joerl_examples::until_stopped(None) => Err(anyhow::anyhow!("interrupted")),
    };
    for erl in erls {
        erl.stop().await;
    }
    node.shutdown().await;
    epmd.shutdown().await;
    drop(dir);
    let f = result?;
    println!(
        "erlang_interop erl_to_joerl_msgs_per_s={:.0} erl_to_erl_msgs_per_s={:.0} joerl_to_erl_msgs_per_s={:.0} \
         call_rtt_us_p50_erl_joerl={:.1} call_rtt_us_p99_erl_joerl={:.1} \
         call_rtt_us_p50_erl_erl={:.1} call_rtt_us_p99_erl_erl={:.1} \
         call_rtt_us_p50_joerl_erl={:.1} call_rtt_us_p99_joerl_erl={:.1}",
        f.erl_to_joerl,
        f.erl_to_erl,
        f.joerl_to_erl,
        f.erl_joerl.0,
        f.erl_joerl.1,
        f.erl_erl.0,
        f.erl_erl.1,
        f.joerl_erl.0,
        f.joerl_erl.1,
    );
    Ok(())
}

async fn measure(
    node: &DistributedSystem,
    e1: &mut ErlNode,
    e2: &mut ErlNode,
    count: u64,
    calls: u64,
) -> Result<Figures> {
    let j = node.name().to_string();
    let e2_name = e2.name.clone();
    // ebench2's sink and gen_server; every connection made before measuring.
    e2.eval("is_pid(interop_bench:start_sink())", ERL_START)
        .await
        .and_then(|v| (v == "true").then_some(()).context("no sink"))?;
    e2.eval("is_pid(interop_bench:start_server())", ERL_START)
        .await
        .and_then(|v| (v == "true").then_some(()).context("no bench_server"))?;
    e1.expect(&format!("net_adm:ping('{j}')"), "pong").await?;
    e1.expect(&format!("net_adm:ping('{e2_name}')"), "pong")
        .await?;
    tokio::time::timeout(ERL_START, node.connect(&e2_name))
        .await
        .context("connecting to ebench2 took too long")?
        .context("cannot connect to ebench2")?;

    let to_joerl = format!("{{sink, '{j}'}}");
    let to_erl = format!("{{sink, '{e2_name}'}}");
    let counter = format!("{{counter, '{j}'}}");
    let server = format!("{{bench_server, '{e2_name}'}}");

    eprintln!("warming up");
    let (wm, wc) = (WARM_MSGS, WARM_CALLS);
    erl_send(e1, &to_joerl, wm).await?;
    erl_send(e1, &to_erl, wm).await?;
    joerl_send(node, &e2_name, wm).await?;
    erl_call(e1, &counter, wc).await?;
    erl_call(e1, &server, wc).await?;
    joerl_call(node, &e2_name, wc).await?;

    eprintln!("measuring: {count} messages, {calls} calls");
    let step = |what: &str| eprintln!("  {what}");
    step("erl_to_joerl");
    let erl_to_joerl = per_s(count, erl_send(e1, &to_joerl, count).await?);
    step("erl_to_erl");
    let erl_to_erl = per_s(count, erl_send(e1, &to_erl, count).await?);
    step("joerl_to_erl");
    let elapsed = joerl_send(node, &e2_name, count).await?;
    let joerl_to_erl = per_s(count, (elapsed.as_micros() as u64).max(1));
    step("call_rtt erl_joerl");
    let erl_joerl = us(erl_call(e1, &counter, calls).await?);
    step("call_rtt erl_erl");
    let erl_erl = us(erl_call(e1, &server, calls).await?);
    step("call_rtt joerl_erl");
    let mut samples = joerl_call(node, &e2_name, calls).await?;
    let l = joerl_examples::latency(&mut samples);
    Ok(Figures {
        erl_to_joerl,
        erl_to_erl,
        joerl_to_erl,
        erl_joerl,
        erl_erl,
        joerl_erl: (l.p50_us, l.p99_us),
    })
}
