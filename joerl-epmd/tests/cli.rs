//! The `epmd_server` binary: the daemon on an address chosen here, the client
//! commands against it, and a clean stop on SIGTERM.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use joerl_epmd::{EpmdClient, Registration};

const BIN: &str = env!("CARGO_BIN_EXE_epmd_server");

fn run_client(args: &[&str]) -> Output {
    let mut child = ChildGuard::spawn(
        "epmd_server client command",
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let started = Instant::now();
    let inner = child.child.as_mut().unwrap();
    while inner.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "{args:?} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.child.take().unwrap().wait_with_output().unwrap()
}

/// Starts the daemon binary on a free loopback port and waits until it answers.
async fn start_daemon(extra: &[&str]) -> (ChildGuard, SocketAddr) {
    start_daemon_with(extra, true).await
}

/// Like [`start_daemon`]; with `keep_log` false its log goes nowhere.
async fn start_daemon_with(extra: &[&str], keep_log: bool) -> (ChildGuard, SocketAddr) {
    for _ in 0..5 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut daemon = ChildGuard::spawn(
            "epmd_server daemon",
            Command::new(BIN)
                .arg(addr.to_string())
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(if keep_log {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }),
        );
        let client = EpmdClient::new(addr).with_timeout(Duration::from_secs(2));
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if daemon.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                break; // the port was taken meanwhile; try another
            }
            if client.ping().await.is_ok() {
                return (daemon, addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("the epmd_server binary did not start");
}

#[tokio::test]
async fn client_commands_and_sigterm() {
    let (mut daemon, addr) = start_daemon(&["--lease", "30s", "--keepalive", "10s"]).await;
    let epmd = addr.to_string();
    let client = EpmdClient::new(addr);
    let guard = client
        .register(Registration::new("cli_node", 9400).metadata("role", "web"))
        .await
        .unwrap();

    let list = tokio::task::spawn_blocking({
        let epmd = epmd.clone();
        move || run_client(&["list", "--epmd", &epmd])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert!(text.contains("cli_node"), "{text}");
    assert!(text.contains("role=web"), "{text}");
    assert!(text.contains("lease 30s"), "{text}");

    let lookup = tokio::task::spawn_blocking({
        let epmd = epmd.clone();
        move || run_client(&["lookup", "cli_node", "--epmd", &epmd])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&lookup.stdout);
    assert!(lookup.status.success(), "{lookup:?}");
    assert!(text.contains("port:      9400"), "{text}");

    let missing = tokio::task::spawn_blocking({
        let epmd = epmd.clone();
        move || run_client(&["lookup", "nobody", "--epmd", &epmd])
    })
    .await
    .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");

    let ping = tokio::task::spawn_blocking({
        let epmd = epmd.clone();
        move || run_client(&["ping", "--epmd", &epmd])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{ping:?}");
    assert!(text.contains("pong from joerl-epmd"), "{text}");
    assert!(text.contains("1 node(s)"), "{text}");
    drop(guard);

    // SIGTERM, sent to this daemon by its PID, stops it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let mut child = daemon.child.take().unwrap();
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("SIGTERM received; shutting down"), "{log}");
    assert!(log.contains("epmd stopped"), "{log}");
}

#[test]
fn help_lists_the_commands_and_flags() {
    let help = run_client(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    for expected in [
        "list",
        "lookup",
        "ping",
        "--lease",
        "--keepalive",
        "--max-connections",
        "--idle-timeout",
        "--max-request-bytes",
        "--write-timeout",
        "--send-buffer",
        "--max-reply-memory",
        "--max-registrations-per-connection",
        "--max-registrations-per-source",
        "[ADDR]",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

/// A number from the environment, or `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The daemon binary's memory with many clients that send `NAMES_REQ` and a
/// joerl list and never read, against a table of many nodes: before, while
/// they are connected, and after the daemon has closed them at the write
/// timeout. `JOERL_EPMD_RSS_NODES` and `JOERL_EPMD_RSS_CLIENTS` change the
/// numbers (defaults 10000 and 500); run with `--nocapture` to see the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cost_the_daemon_binary_little_memory() {
    let nodes = env_or("JOERL_EPMD_RSS_NODES", 10_000);
    let clients = env_or("JOERL_EPMD_RSS_CLIENTS", 500);
    let limit = (nodes + 100).to_string();
    let max_connections = (clients + 100).to_string();
    let (daemon, addr) = start_daemon_with(
        &[
            "--max-nodes",
            &limit,
            "--max-registrations-per-connection",
            &limit,
            "--max-registrations-per-source",
            &limit,
            "--max-connections",
            &max_connections,
            "--write-timeout",
            "1s",
            "--lease",
            "10m",
            "--max-lease",
            "1h",
        ],
        false,
    )
    .await;
    let pid = daemon.pid().to_string();
    register_many(addr, "a_node_with_a_rather_long_name_", nodes, 64).await;
    let client = EpmdClient::new(addr);
    assert_eq!(client.names().await.unwrap().nodes.len(), nodes);
    let fds_before = open_fds(&pid);
    let rss_before = proc_status_kib(&pid, "VmRSS");

    let names = joerl_epmd::protocol::Request::Names.encode().unwrap();
    let list = joerl_epmd::protocol::Request::Joerl(joerl_epmd::protocol::JoerlRequest::List(
        joerl_epmd::protocol::ListRequest {},
    ))
    .encode()
    .unwrap();
    let mut bad = Vec::with_capacity(clients);
    for i in 0..clients {
        let request = if i % 2 == 0 {
            names.clone()
        } else {
            [list.clone(), names.clone()].concat()
        };
        bad.push(never_reading_client(addr, &request).await);
    }
    // Every bad client has been answered in part (the rest of its reply is
    // stuck): its first bytes are waiting in its socket.
    for stream in &bad {
        let mut first = [0u8; 1];
        tokio::time::timeout(DEADLINE, stream.peek(&mut first))
            .await
            .expect("the daemon starts replying in time")
            .unwrap();
    }
    let rss_during = proc_status_kib(&pid, "VmRSS");
    // Lookups still work meanwhile.
    assert!(
        client
            .port_please("a_node_with_a_rather_long_name_7")
            .await
            .unwrap()
            .is_some()
    );

    // The daemon closes them at the write timeout: its descriptors go back to
    // what they were.
    let started = Instant::now();
    while open_fds(&pid) > fds_before + 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "the daemon did not close the bad connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for stream in &mut bad {
        drain_until_closed(stream).await;
    }
    drop(bad);
    assert_eq!(client.names().await.unwrap().nodes.len(), nodes);
    let rss_after = proc_status_kib(&pid, "VmRSS");
    let rss_peak = proc_status_kib(&pid, "VmHWM");
    eprintln!(
        "epmd_server RSS with {nodes} nodes and {clients} clients that never read: \
         before {rss_before} KiB, during {rss_during} KiB, after {rss_after} KiB (peak {rss_peak} KiB)"
    );
    // Generous bounds: the clients cost little while connected, and nothing
    // stays but what the allocator keeps for reuse.
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "before {rss_before} KiB, after {rss_after} KiB"
    );
    assert!(
        rss_during <= rss_before + 64 * 1024,
        "before {rss_before} KiB, during {rss_during} KiB"
    );
}
