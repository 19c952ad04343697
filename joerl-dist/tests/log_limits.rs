//! Bad input cannot fill the log: a flood of refused connections to a node's
//! listener is logged a few lines a second, and counted in full; so are the
//! failed connects of a sender that keeps sending to a node that is gone.
//! (Its own test binary: it installs the process's global log subscriber.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::AsyncWriteExt;

/// A log sink that keeps every line.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// The process's log, captured (installed once for the tests here).
fn captured() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            tracing_subscriber::fmt()
                .with_writer(captured.clone())
                .with_ansi(false)
                .with_env_filter("warn")
                .init();
            captured
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_node_that_is_gone_log_a_few_lines_a_second() {
    let captured = captured();
    let epmd = epmd().await;
    let sender = node("sender_to_ghost", epmd.local_addr()).await;
    // A node it talked to, gone since: every send tries to connect again.
    let gone = node("ghost", epmd.local_addr()).await;
    let ghost = gone.name().to_string();
    let (fwd, mut rx) = forward();
    let target = gone.spawn(fwd);
    sender.send(target, 1u64).await.expect("sent while it runs");
    recv::<u64>(&mut rx).await;
    gone.shutdown().await;
    let started = std::time::Instant::now();
    const SENDS: u32 = 2_000;
    for _ in 0..SENDS {
        let _ = sender.try_send(target, 42u64);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs() + 1;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("sender_to_ghost") && l.contains(&ghost))
        .filter(|l| l.contains("cannot connect") || l.contains("giving up on the node"))
        .count() as u64;
    assert!(lines >= 1, "the first failure is logged");
    assert!(
        lines <= 5 * (seconds + 1),
        "{lines} log lines for {SENDS} sends to a node that is gone in about {seconds} s"
    );
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_handshakes_is_counted_in_full_and_logged_a_few_lines_a_second() {
    let captured = captured();
    let epmd = epmd().await;
    let node = node("flooded", epmd.local_addr()).await;
    const BAD: u64 = 2_000;
    let started = std::time::Instant::now();
    for i in 0..BAD {
        let mut s = tokio::net::TcpStream::connect(node.local_addr())
            .await
            .unwrap();
        // A handshake frame claiming far more than a handshake may be.
        let _ = s.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 0, 1]).await;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_until("every bad connection counted", || {
        node.stats().refused_incoming == BAD
    })
    .await;
    let seconds = started.elapsed().as_secs() + 1;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("incoming connection refused"))
        .count() as u64;
    assert!(lines >= 1, "the first refusals are logged");
    // 5 a second, in each one-second window the flood touched.
    assert!(
        lines <= 5 * (seconds + 1),
        "{lines} log lines for {BAD} refusals in about {seconds} s"
    );
    // Once a new window opens, the next refusal's line says how many were
    // suppressed before it.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let reported = text
            .lines()
            .filter(|l| l.contains("incoming connection refused"))
            .any(|l| l.contains("suppressed=") && !l.contains("suppressed=0"));
        if reported {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line reported the suppressed ones"
        );
        let mut s = tokio::net::TcpStream::connect(node.local_addr())
            .await
            .unwrap();
        let _ = s.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 0, 1]).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    node.shutdown().await;
}
