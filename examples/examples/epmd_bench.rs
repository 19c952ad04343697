//! Lookups per second against an EPMD daemon, the way Erlang's clients do them:
//! a new TCP connection per `PORT_PLEASE2_REQ`, answered and closed by the daemon.
//!
//! ```text
//! # Start the real epmd and ours as separate processes on free loopback ports,
//! # register a node in each, measure both (ours last):
//! cargo run --release --example epmd_bench
//! cargo run --release --example epmd_bench -- --duration 6s --concurrency 2
//!
//! # Measure one running daemon (registers the node first with --register):
//! cargo run --release --example epmd_bench -- --epmd 127.0.0.1:4400 --name bench --register
//!
//! # Only our daemon (no Erlang installed):
//! cargo run --release --example epmd_bench -- --only-ours
//! ```
//!
//! In the comparison, each daemon is its own process (ours is this program
//! re-started with `--serve-ours`, a single-threaded daemon like the
//! `epmd_server` default), the measuring time is split into `--rounds` rounds
//! that alternate which daemon goes first, and the CPU time each daemon process
//! used is read from `/proc` to report its cost per lookup.
//!
//! The last line is always `epmd_lookups per_s=<float> count=<N>` for the
//! measured daemon (ours in the comparison); the real epmd's figure is printed
//! before it as `real_epmd_lookups per_s=<float> count=<N>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use joerl_epmd::{
    Alive2Request, DistInfo, EpmdClient, EpmdServer, ErlangRegistration, ServerConfig,
};

/// Measures EPMD lookups per second with a new connection per lookup.
#[derive(Debug, Clone, Parser)]
struct Args {
    /// Measure this running daemon instead of starting the real epmd and ours.
    #[arg(long)]
    epmd: Option<SocketAddr>,
    /// Node name to look up.
    #[arg(long, default_value = "bench")]
    name: String,
    /// With --epmd: register the node first (Erlang ALIVE2, held for the run).
    #[arg(long)]
    register: bool,
    /// Start only our daemon (for machines without Erlang).
    #[arg(long, conflicts_with = "epmd")]
    only_ours: bool,
    /// Total measuring time per daemon (e.g. 6s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "6s")]
    duration: Duration,
    /// Warm-up time before each measured round, not counted.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    warmup: Duration,
    /// In the comparison: rounds per daemon, alternating which daemon goes
    /// first, so slow drifts of the machine affect both alike.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Client threads, each doing one lookup at a time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Internal: run our daemon on 127.0.0.1:0, print its address, serve until killed.
    #[arg(long, hide = true)]
    serve_ours: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 6s or 500ms"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| e.to_string())
}

/// Result of one measurement (or the sum of several).
#[derive(Default)]
struct Measurement {
    count: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time the daemon process used while measured, if known.
    daemon_cpu: Option<Duration>,
}

impl Measurement {
    fn add(&mut self, other: &Measurement) {
        self.count += other.count;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.daemon_cpu = self.daemon_cpu.zip(other.daemon_cpu).map(|(a, b)| a + b);
    }

    fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// One lookup: connect, send PORT_PLEASE2_REQ, read until the daemon closes.
fn lookup_once(addr: SocketAddr, request: &[u8], reply: &mut Vec<u8>) -> std::io::Result<bool> {
    // One write on a fresh connection leaves at once; no TCP_NODELAY needed.
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(request)?;
    reply.clear();
    stream.read_to_end(reply)?;
    // PORT2_RESP with result 0: the node was found.
    Ok(reply.len() >= 12 && reply[0] == 119 && reply[1] == 0)
}

/// User plus system CPU time of process `pid` (Linux `/proc/PID/stat`, in
/// USER_HZ = 100 ticks per second).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn measure(
    addr: SocketAddr,
    name: &str,
    daemon_pid: Option<u32>,
    args: &Args,
) -> anyhow::Result<Measurement> {
    let mut request = ((1 + name.len()) as u16).to_be_bytes().to_vec();
    request.push(122);
    request.extend_from_slice(name.as_bytes());
    let mut probe = Vec::new();
    if !lookup_once(addr, &request, &mut probe).with_context(|| format!("cannot reach {addr}"))? {
        bail!(
            "{addr} does not know node {name:?} (reply {probe:?}); register it first (--register)"
        );
    }
    let run = |window: Duration| -> (u64, u64, Duration) {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let request = request.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut reply = Vec::with_capacity(64);
                    while !stop.load(Ordering::Relaxed) {
                        match lookup_once(addr, &request, &mut reply) {
                            Ok(true) => ok += 1,
                            _ => failed += 1,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = workers
            .into_iter()
            .map(|w| w.join().expect("worker thread"))
            .fold((0, 0), |(a, b), (ok, failed)| (a + ok, b + failed));
        (ok, failed, started.elapsed())
    };
    run(args.warmup);
    let cpu_before = daemon_pid.and_then(process_cpu);
    let (count, errors, elapsed) = run(args.duration);
    let cpu_after = daemon_pid.and_then(process_cpu);
    Ok(Measurement {
        count,
        errors,
        elapsed,
        daemon_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
    })
}

fn report(label: &str, addr: SocketAddr, m: &Measurement, args: &Args) {
    let cpu = match m.daemon_cpu {
        Some(cpu) if m.count > 0 => format!(
            ", daemon CPU {:.2}s = {:.1} µs per lookup",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / m.count as f64
        ),
        _ => String::new(),
    };
    println!(
        "# {label} at {addr}: {} lookups in {:.2}s with {} client thread(s), {} error(s){cpu}",
        m.count,
        m.elapsed.as_secs_f64(),
        args.concurrency,
        m.errors
    );
}

/// A daemon process of ours or the real epmd, killed and reaped on drop.
struct DaemonProcess {
    child: Child,
    addr: SocketAddr,
}

impl DaemonProcess {
    /// The real epmd in the foreground on a free loopback port.
    fn start_real() -> anyhow::Result<Self> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new("epmd")
                .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(
                    "cannot start `epmd` (install Erlang: apt-get install erlang-base), or use --only-ours",
                )?;
            let mut epmd = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if epmd.child.try_wait()?.is_some() {
                    break; // port taken meanwhile; try another
                }
                if TcpStream::connect(epmd.addr).is_ok() {
                    return Ok(epmd);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("could not start the real epmd on a free loopback port")
    }

    /// Our daemon: this program again with `--serve-ours`.
    fn start_ours() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve-ours")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start our daemon process")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("our daemon did not report its address")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("our daemon reported {line:?}"))?;
        Ok(Self { child, addr })
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--serve-ours`: a single-threaded daemon, as `epmd_server` runs by default.
fn serve_ours() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = EpmdServer::bind(ServerConfig::new("127.0.0.1:0".parse()?)).await?;
        println!("{}", server.local_addr());
        std::io::stdout().flush()?;
        // Served until the parent kills this process (or a KILL_REQ arrives).
        server.stopped().await;
        Ok(())
    })
}

/// Registers `name` the way an Erlang node does; held until dropped.
async fn register(addr: SocketAddr, name: &str) -> anyhow::Result<ErlangRegistration> {
    EpmdClient::new(addr)
        .alive2(Alive2Request {
            port: 45_000,
            name: name.to_string(),
            dist: DistInfo::default(),
        })
        .await
        .with_context(|| format!("cannot register {name:?} at {addr}"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_ours {
        return serve_ours();
    }
    // The client side is plain blocking threads; this runtime only holds the
    // registrations' connections.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    if let Some(addr) = args.epmd {
        let _held = if args.register {
            Some(runtime.block_on(register(addr, &args.name))?)
        } else {
            None
        };
        let m = measure(addr, &args.name, None, &args)?;
        report("daemon", addr, &m, &args);
        println!("epmd_lookups per_s={:.1} count={}", m.per_second(), m.count);
        return Ok(());
    }

    // Both daemons run side by side, each with the node registered, for the
    // whole comparison.
    let real = if args.only_ours {
        None
    } else {
        Some(DaemonProcess::start_real()?)
    };
    let ours = DaemonProcess::start_ours()?;
    let _held_ours = runtime.block_on(register(ours.addr, &args.name))?;
    let _held_real = match &real {
        Some(epmd) => Some(runtime.block_on(register(epmd.addr, &args.name))?),
        None => None,
    };

    let rounds = args.rounds.max(1);
    let per_round = Args {
        duration: args.duration / rounds,
        ..args.clone()
    };
    let empty = || Measurement {
        daemon_cpu: Some(Duration::ZERO),
        ..Measurement::default()
    };
    let mut real_total = empty();
    let mut ours_total = empty();
    for round in 0..rounds {
        let mut order: Vec<(&DaemonProcess, &mut Measurement)> = vec![(&ours, &mut ours_total)];
        if let Some(epmd) = &real {
            order.push((epmd, &mut real_total));
        }
        if round % 2 == 0 {
            order.reverse();
        }
        for (daemon, total) in order {
            let m = measure(daemon.addr, &args.name, Some(daemon.child.id()), &per_round)?;
            total.add(&m);
        }
    }

    if let Some(epmd) = &real {
        report("real epmd", epmd.addr, &real_total, &args);
    }
    report("joerl epmd", ours.addr, &ours_total, &args);
    if real.is_some() {
        println!(
            "real_epmd_lookups per_s={:.1} count={}",
            real_total.per_second(),
            real_total.count
        );
    }
    println!(
        "epmd_lookups per_s={:.1} count={}",
        ours_total.per_second(),
        ours_total.count
    );
    Ok(())
}
