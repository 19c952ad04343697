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
                .stderr(Stdio::piped()),
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
        "[ADDR]",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}
