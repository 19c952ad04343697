//! `epmd_server`: the joerl port mapper daemon, and client commands for operators.
//!
//! joerl's command line:
//!
//! ```text
//! epmd_server [ADDR] [flags]              run the daemon (ADDR defaults to 127.0.0.1:4369)
//! epmd_server list [--epmd ADDR]          list registered nodes with metadata
//! epmd_server lookup NAME [--epmd ADDR]   show one node
//! epmd_server ping [--epmd ADDR]          check that the daemon answers
//! ```
//!
//! Erlang's `epmd` command line, taken when the program is called `epmd` or an
//! argument is one of epmd's single-dash flags, so that this binary installed
//! as `epmd` is a drop-in for Erlang's:
//!
//! ```text
//! epmd [-d|-debug]... [-address List] [-port No] [-daemon] [-relaxed_command_check]
//!      [-packet_timeout Seconds] [-delay_accept Seconds] [-delay_write Seconds]
//!      [-systemd] [--pid-file PATH]       run the daemon (all interfaces, port 4369)
//! epmd [-d|-debug] [-port No] -names | -started | -dump | -kill | -stop Name
//! ```
//!
//! with `ERL_EPMD_PORT`, `ERL_EPMD_ADDRESS` and `ERL_EPMD_RELAXED_COMMAND_CHECK`
//! as epmd reads them; see the `epmd_mode` module and "Running as epmd" in
//! `CLUSTERING.md`.
//!
//! This file is also compiled as the `epmd_server` example of `joerl-examples`
//! (which includes it as a module), so it keeps a `pub fn main`.

// Relative to this file's directory, both as the binary's root and as the
// example's module.
#[path = "epmd_server/epmd_mode.rs"]
mod epmd_mode;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use joerl_epmd::{ClientError, EpmdClient, EpmdServer, NodeInfo, ServerConfig};
use tracing::info;

/// The joerl port mapper: an EPMD daemon that Erlang nodes and tools can use,
/// plus joerl's leases and metadata.
#[derive(Debug, Parser)]
#[command(name = "epmd_server", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

/// Flags of the daemon.
#[derive(Debug, Args)]
struct DaemonArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(default_value = "127.0.0.1:4369")]
    addr: SocketAddr,
    /// Lease granted to joerl nodes that ask for the default (e.g. 60s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    lease: Duration,
    /// Keep-alive interval the daemon asks lease holders to use.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    keepalive: Duration,
    /// Shortest lease granted.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    min_lease: Duration,
    /// Longest lease granted.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    max_lease: Duration,
    /// How often expired leases are removed (default: a quarter of the shortest lease, at most 1s).
    #[arg(long, value_parser = parse_duration)]
    reap_interval: Option<Duration>,
    /// Most simultaneous connections. At the limit a new connection takes the
    /// slot of the longest-waiting connection that holds no registration and is
    /// blocked writing or waiting for a request; if none, it is closed at once.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Close connections that hold no registration after this long without a request.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    idle_timeout: Duration,
    /// Close a connection (with a reset) when writing a reply to it makes no
    /// progress for this long, i.e. its peer does not read.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    write_timeout: Duration,
    /// Kernel send buffer of each connection in bytes (SO_SNDBUF); bounds what a
    /// peer that does not read makes the kernel hold for it. 0: the system default.
    #[arg(long, default_value_t = joerl_epmd::server::DEFAULT_SEND_BUFFER_BYTES)]
    send_buffer: usize,
    /// Memory for the NAMES, DUMP and list replies shared between connections;
    /// beyond it (slow readers holding copies), a request after a change of
    /// the table gets the previous copy.
    #[arg(long, default_value_t = joerl_epmd::server::DEFAULT_MAX_REPLY_MEMORY)]
    max_reply_memory: usize,
    /// Largest request accepted, in bytes (at most 65535).
    #[arg(long, default_value_t = 4096)]
    max_request_bytes: usize,
    /// Allow KILL_REQ while nodes are registered, and STOP_REQ (like epmd's -relaxed_command_check).
    #[arg(long)]
    relaxed_command_check: bool,
    /// Accept joerl registrations from non-loopback peers.
    #[arg(long)]
    allow_remote_register: bool,
    /// Most registered nodes; further registrations are refused.
    #[arg(long, default_value_t = 10_000)]
    max_nodes: usize,
    /// Most live registrations made on one connection; further ones are refused.
    #[arg(long, default_value_t = joerl_epmd::registry::DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION)]
    max_registrations_per_connection: usize,
    /// Most live registrations from one source address (an IPv4 address or an
    /// IPv6 /64; local nodes all come from 127.0.0.1); further ones are refused.
    #[arg(long, default_value_t = joerl_epmd::registry::DEFAULT_MAX_REGISTRATIONS_PER_SOURCE)]
    max_registrations_per_source: usize,
    /// Threads serving connections. One thread (like epmd's single loop) has the
    /// lowest latency per lookup; more help only when requests queue up.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write the daemon's process id to this file once it listens (removed when it stops).
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

/// Where a client command connects.
#[derive(Debug, Args)]
struct Target {
    /// Address of the daemon.
    #[arg(long, default_value = "127.0.0.1:4369")]
    epmd: SocketAddr,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the registered nodes with their metadata.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show one registered node.
    Lookup {
        /// Node name (the part before `@`).
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check that the daemon answers.
    Ping {
        #[command(flatten)]
        target: Target,
    },
}

/// Parses `250ms`, `20s`, `5m`, `1h`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 20s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Entry point (shared with the `epmd_server` example). With epmd's command
/// line it behaves as epmd; with joerl's it exits with status 1 when `lookup`
/// does not find the node.
pub fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if epmd_mode::is_epmd_style(&args) {
        return epmd_mode::main(args);
    }
    let cli = Cli::parse_from(args);
    init_logging(if cli.command.is_some() {
        "warn"
    } else {
        "info"
    });
    let threads = match &cli.command {
        None => cli.daemon.threads,
        Some(_) => 1,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            None => run_daemon(cli.daemon).await,
            Some(Command::List { target }) => list(target).await,
            Some(Command::Lookup { name, target }) => lookup(target, &name).await,
            Some(Command::Ping { target }) => ping(target).await,
        }
    })
}

/// Logs to stderr at `default_level` unless `RUST_LOG` says otherwise.
fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A file holding the daemon's process id, removed on drop if it still does.
struct PidFile {
    path: PathBuf,
    contents: String,
}

impl PidFile {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let contents = format!("{}\n", std::process::id());
        std::fs::write(path, &contents)
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            contents,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Another daemon may have taken the file over since.
        if std::fs::read_to_string(&self.path).is_ok_and(|now| now == self.contents) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn run_daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let config = ServerConfig {
        listen_addr: args.addr,
        max_connections: args.max_connections,
        idle_timeout: args.idle_timeout,
        write_timeout: args.write_timeout,
        send_buffer_bytes: (args.send_buffer != 0).then_some(args.send_buffer),
        max_reply_memory: args.max_reply_memory,
        max_request_bytes: args.max_request_bytes,
        default_lease: args.lease,
        keepalive_interval: args.keepalive,
        min_lease: args.min_lease,
        max_lease: args.max_lease,
        reap_interval: args.reap_interval,
        relaxed_command_check: args.relaxed_command_check,
        allow_remote_register: args.allow_remote_register,
        max_nodes: args.max_nodes,
        max_registrations_per_connection: args.max_registrations_per_connection,
        max_registrations_per_source: args.max_registrations_per_source,
        ..ServerConfig::default()
    };
    let server = EpmdServer::bind(config).await?;
    let _pid_file = args.pid_file.as_deref().map(PidFile::create).transpose()?;
    serve_until_stopped(server).await
}

/// Serves until Ctrl-C, SIGTERM or a `KILL_REQ`.
async fn serve_until_stopped(server: EpmdServer) -> anyhow::Result<ExitCode> {
    let mut terminate = terminate_signal()?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result.context("cannot listen for Ctrl-C")?;
            info!("Ctrl-C received; shutting down");
        }
        _ = terminate.recv() => info!("SIGTERM received; shutting down"),
        _ = server.stopped() => {
            info!("stopped by KILL_REQ");
            return Ok(ExitCode::SUCCESS);
        }
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn terminate_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")
}

#[cfg(not(unix))]
fn terminate_signal() -> anyhow::Result<NeverSignal> {
    Ok(NeverSignal)
}

#[cfg(not(unix))]
struct NeverSignal;

#[cfg(not(unix))]
impl NeverSignal {
    async fn recv(&mut self) -> Option<()> {
        std::future::pending().await
    }
}

fn client(target: &Target) -> EpmdClient {
    EpmdClient::new(target.epmd).with_timeout(target.timeout)
}

/// Whether the daemon is probably an Erlang epmd that closed on a joerl request.
fn speaks_only_erlang(err: &ClientError) -> bool {
    matches!(err, ClientError::ClosedEarly { .. })
}

fn format_metadata(node: &NodeInfo) -> String {
    if node.metadata.is_empty() {
        return "-".into();
    }
    node.metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn format_lifetime(node: &NodeInfo) -> String {
    match node.lease_ms {
        Some(ms) => format!("lease {}", humane(Duration::from_millis(ms))),
        None => "connection".into(),
    }
}

fn humane(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

async fn list(target: Target) -> anyhow::Result<ExitCode> {
    let client = client(&target);
    match client.list().await {
        Ok(nodes) => {
            println!(
                "{:<20} {:<16} {:>5} {:>10} {:<6} {:<16} METADATA",
                "NAME", "HOST", "PORT", "CREATION", "KIND", "LIFETIME"
            );
            for node in &nodes {
                println!(
                    "{:<20} {:<16} {:>5} {:>10} {:<6} {:<16} {}",
                    node.name,
                    node.host,
                    node.port,
                    node.creation,
                    format!("{:?}", node.kind).to_lowercase(),
                    format_lifetime(node),
                    format_metadata(node)
                );
            }
            println!("{} node(s) registered at {}", nodes.len(), target.epmd);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if speaks_only_erlang(&err) => {
            let names = client.names().await.with_context(|| {
                format!("{} closed on a joerl request and on NAMES_REQ", target.epmd)
            })?;
            println!(
                "{} speaks only Erlang's protocol (no metadata); NAMES_REQ says:",
                target.epmd
            );
            for (name, port) in &names.nodes {
                println!("name {name} at port {port}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(err.into()),
    }
}

async fn lookup(target: Target, name: &str) -> anyhow::Result<ExitCode> {
    let client = client(&target);
    match client.lookup(name).await {
        Ok(Some(node)) => {
            println!("name:      {}", node.name);
            println!("host:      {}", node.host);
            println!("port:      {}", node.port);
            println!("creation:  {}", node.creation);
            println!("kind:      {:?}", node.kind);
            println!("lifetime:  {}", format_lifetime(&node));
            println!(
                "dist:      type {} protocol {} versions {}..={} extra {} byte(s)",
                node.dist.node_type,
                node.dist.protocol,
                node.dist.lowest_version,
                node.dist.highest_version,
                node.dist.extra.len()
            );
            println!("metadata:  {}", format_metadata(&node));
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => not_registered(name, &target),
        Err(err) if speaks_only_erlang(&err) => match client.port_please(name).await? {
            Some(reply) => {
                println!("name:      {}", reply.name);
                println!("port:      {}", reply.port);
                println!(
                    "dist:      type {} protocol {} versions {}..={}",
                    reply.dist.node_type,
                    reply.dist.protocol,
                    reply.dist.lowest_version,
                    reply.dist.highest_version
                );
                println!(
                    "(from PORT_PLEASE2_REQ: {} speaks only Erlang's protocol)",
                    target.epmd
                );
                Ok(ExitCode::SUCCESS)
            }
            None => not_registered(name, &target),
        },
        Err(err) => Err(err.into()),
    }
}

async fn ping(target: Target) -> anyhow::Result<ExitCode> {
    let client = client(&target);
    let started = Instant::now();
    match client.ping().await {
        Ok(pong) => {
            println!(
                "pong from {} at {}: {} node(s), up {}s, protocol v{}, {:.1} ms",
                pong.daemon,
                target.epmd,
                pong.nodes,
                pong.uptime_secs,
                pong.protocol_version,
                started.elapsed().as_secs_f64() * 1000.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if speaks_only_erlang(&err) => {
            let names = client.names().await?;
            println!(
                "{} answers NAMES_REQ (an Erlang epmd on port {}): {} node(s), {:.1} ms",
                target.epmd,
                names.epmd_port,
                names.nodes.len(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(err.into()),
    }
}

fn not_registered(name: &str, target: &Target) -> anyhow::Result<ExitCode> {
    eprintln!("{name} is not registered at {}", target.epmd);
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_shapes_parse() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["epmd_server"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.daemon.addr, "127.0.0.1:4369".parse().unwrap());
        let cli =
            Cli::try_parse_from(["epmd_server", "127.0.0.1:4400", "--lease", "300ms"]).unwrap();
        assert_eq!(cli.daemon.addr.port(), 4400);
        assert_eq!(cli.daemon.lease, Duration::from_millis(300));
        assert_eq!(cli.daemon.write_timeout, Duration::from_secs(5));
        assert_eq!(
            (
                cli.daemon.max_registrations_per_connection,
                cli.daemon.max_registrations_per_source,
                cli.daemon.send_buffer
            ),
            (64, 256, 64 * 1024)
        );
        let cli = Cli::try_parse_from([
            "epmd_server",
            "--write-timeout",
            "300ms",
            "--max-registrations-per-connection",
            "5",
            "--max-registrations-per-source",
            "7",
            "--send-buffer",
            "0",
            "--max-reply-memory",
            "1000000",
            "--relaxed-command-check",
        ])
        .unwrap();
        assert_eq!(cli.daemon.write_timeout, Duration::from_millis(300));
        assert_eq!(cli.daemon.max_registrations_per_connection, 5);
        assert_eq!(cli.daemon.max_registrations_per_source, 7);
        assert_eq!(cli.daemon.send_buffer, 0);
        assert_eq!(cli.daemon.max_reply_memory, 1_000_000);
        assert!(cli.daemon.relaxed_command_check);
        let cli = Cli::try_parse_from(["epmd_server", "list", "--epmd", "127.0.0.1:4401"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::List { target }) if target.epmd.port() == 4401)
        );
        let cli = Cli::try_parse_from(["epmd_server", "lookup", "foo", "--epmd", "127.0.0.1:4401"])
            .unwrap();
        assert!(matches!(cli.command, Some(Command::Lookup { name, .. }) if name == "foo"));
        assert!(Cli::try_parse_from(["epmd_server", "ping"]).is_ok());
        assert!(Cli::try_parse_from(["epmd_server", "not-an-address"]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
