//! Log lines that peers can trigger are rate limited: a flood of bad input
//! costs a bounded number of lines, while the daemon's counters see every input.
//!
//! A test binary of its own: the daemon runs on this test's current-thread
//! runtime, inside a `tracing` subscriber that writes to a buffer.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use joerl_epmd::protocol::{JoerlRequest, LookupRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing_subscriber::fmt::MakeWriter;

/// A `tracing` writer that appends to a shared buffer.
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

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Kinds of bad input, each closing its connection after one log-worthy event.
fn bad_inputs() -> Vec<Vec<u8>> {
    let mut bad_bincode = JoerlRequest::Lookup(LookupRequest { name: "x".into() })
        .encode_body()
        .unwrap();
    bad_bincode.truncate(2);
    bad_bincode.extend_from_slice(&[0xff, 0xff, 0xff]);
    vec![
        vec![0, 1, b'Q'],                // unknown tag
        vec![0, 0],                      // zero length
        vec![0xff, 0xff, b'n'],          // too large
        vec![0, 4, b'z', b'a', 0, b'b'], // NUL in a PORT_PLEASE2 name
        vec![0, 1, b'n', b'!'],          // NAMES_REQ with a trailing byte
        [&(bad_bincode.len() as u16).to_be_bytes()[..], &bad_bincode].concat(),
    ]
}

#[test]
fn ten_thousand_malformed_requests_log_a_bounded_number_of_lines() {
    const INPUTS: u64 = 10_000;
    const CLIENTS: u64 = 16;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let log_so_far = captured.clone();
    let (stats, extra) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let server = start_server(|_| {}).await;
            let addr = server.local_addr();
            let inputs = Arc::new(bad_inputs());
            let mut clients = tokio::task::JoinSet::new();
            for c in 0..CLIENTS {
                let inputs = inputs.clone();
                clients.spawn(async move {
                    for i in (c..INPUTS).step_by(CLIENTS as usize) {
                        let mut stream = TcpStream::connect(addr).await.expect("connect");
                        stream
                            .write_all(&inputs[i as usize % inputs.len()])
                            .await
                            .expect("write");
                        assert_eq!(read_until_closed(&mut stream).await, b"", "input {i}");
                    }
                });
            }
            while let Some(done) = clients.join_next().await {
                done.expect("client task");
            }
            wait_for("every input to be counted", DEADLINE, || async {
                (server.stats().malformed_requests >= INPUTS).then_some(())
            })
            .await;
            // A fast run fits in one rate-limit window: the count of what was
            // dropped comes with the first line of a later window, so send
            // one more bad request at a time until such a line is logged.
            let mut extra = 0u64;
            wait_for("a line saying how many were suppressed", DEADLINE, || {
                extra += 1;
                let input = inputs[0].clone();
                let log_so_far = log_so_far.clone();
                async move {
                    let mut stream = TcpStream::connect(addr).await.expect("connect");
                    stream.write_all(&input).await.expect("write");
                    assert_eq!(read_until_closed(&mut stream).await, b"");
                    let log = String::from_utf8_lossy(&log_so_far.0.lock().unwrap()).into_owned();
                    log.lines()
                        .any(|l| {
                            l.contains("closing connection after")
                                && l.split("suppressed=").nth(1).is_some_and(|r| {
                                    r.split_whitespace()
                                        .next()
                                        .and_then(|n| n.parse::<u64>().ok())
                                        .is_some_and(|n| n > 0)
                                })
                        })
                        .then_some(())
                }
            })
            .await;
            let stats = wait_for("the extra inputs to be counted", DEADLINE, || async {
                let stats = server.stats();
                (stats.malformed_requests >= INPUTS + extra).then_some(stats)
            })
            .await;
            server.shutdown().await;
            (stats, extra)
        })
    });
    let elapsed = started.elapsed();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let bad_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("closing connection after"))
        .collect();
    assert_eq!(stats.malformed_requests, INPUTS + extra, "{stats:?}");
    // 5 lines per one-second window, and the run spans at most elapsed + 1 windows.
    let bound = 5 * (elapsed.as_secs() + 2);
    assert!(
        !bad_lines.is_empty() && bad_lines.len() as u64 <= bound,
        "{} lines about bad input in {elapsed:?} (bound {bound}):\n{log}",
        bad_lines.len()
    );
    // The lines after a dropped one say how many were dropped.
    let suppressed: u64 = bad_lines
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find("suppressed=")? + "suppressed=".len()..];
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(
        suppressed > 0 && suppressed + bad_lines.len() as u64 <= INPUTS + extra,
        "suppressed {suppressed}"
    );
    assert!(
        log.len() < 200 * bound as usize + 4096,
        "{} bytes of log",
        log.len()
    );
    eprintln!(
        "{INPUTS} malformed requests in {elapsed:?}: {} log lines about them ({} bytes of log in all), {suppressed} reported as suppressed",
        bad_lines.len(),
        log.len()
    );
}
