//! Messages made of many small values arrive whatever their encoded size: the
//! decode limit bounds the memory a message may claim on the receiving node
//! (`max_message_memory`), not the ratio of that memory to its size on the wire.
//! Sizes are chosen around every boundary of the limits that were once picked
//! from the wire size (4 KiB, 64 KiB, 1 MiB, 16 MiB) and of the memory they imply.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request, spawn_server};
use joerl_dist::{ActorContext, CallError, remote_message};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbers(Vec<u64>);
remote_message!(Numbers, "test::decode_limits::Numbers");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Table(HashMap<u32, u8>);
remote_message!(Table, "test::decode_limits::Table");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Words(Vec<String>);
remote_message!(Words, "test::decode_limits::Words");

/// Element counts at and around each boundary: one small element is 1 byte on
/// the wire (2 for a one-letter string) but 8 or more bytes to bincode's limit.
const COUNTS: &[usize] = &[
    1, 511, 512, 513, 4_095, 4_096, 4_097, 8_191, 8_192, 8_193, 65_535, 65_536, 65_537, 131_072,
    1_048_575, 1_048_576, 1_048_577, 2_097_153,
];

fn numbers(n: usize) -> Numbers {
    Numbers((0..n as u64).map(|i| i % 200).collect())
}

fn table(n: usize) -> Table {
    Table((0..n as u32).map(|i| (i, (i % 200) as u8)).collect())
}

fn words(n: usize) -> Words {
    Words(
        (0..n)
            .map(|i| ((b'a' + (i % 26) as u8) as char).to_string())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_messages_of_every_size_arrive() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("dl_a", epmd.local_addr()).await;
    let b = node("dl_b", epmd.local_addr()).await;
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    for &n in COUNTS {
        a.send(sink, numbers(n)).await.unwrap();
        let (got, _): (Numbers, _) = recv(&mut rx).await;
        assert_eq!(got, numbers(n), "Vec<u64> of {n} small values");
        // Maps and strings cost more per element; the largest count is enough.
        if n <= 1_048_577 {
            a.send(sink, table(n)).await.unwrap();
            let (got, _): (Table, _) = recv(&mut rx).await;
            assert_eq!(got, table(n), "map of {n} small entries");
            a.send(sink, words(n)).await.unwrap();
            let (got, _): (Words, _) = recv(&mut rx).await;
            assert_eq!(got, words(n), "Vec<String> of {n} one-letter strings");
        }
    }
    let stats = b.stats();
    assert_eq!(stats.total.dropped_in, 0, "nothing dropped: {stats:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Replies with `n` small numbers.
struct NumberServer;

/// Asks [`NumberServer`] for this many numbers.
#[derive(Debug, Serialize, Deserialize)]
struct HowMany(u64);

impl Request for HowMany {
    type Reply = Numbers;
}

impl Request for Numbers {
    type Reply = u64;
}

impl GenServer for NumberServer {
    type Calls = (HowMany,);
    type Casts = ();
}

impl HandleCall<HowMany> for NumberServer {
    async fn handle_call(
        &mut self,
        HowMany(n): HowMany,
        _from: ReplyTo<Numbers>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<Numbers> {
        CallResponse::Reply(numbers(n as usize))
    }
}
joerl_dist::remote_server!(NumberServer);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_call_replies_of_every_size_arrive() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("dlc_a", epmd.local_addr()).await;
    let b = node("dlc_b", epmd.local_addr()).await;
    let server = spawn_server(&b, NumberServer);
    for &n in COUNTS {
        let reply = a
            .call_timeout(&server, HowMany(n as u64), DEADLINE)
            .await
            .unwrap();
        assert_eq!(reply, numbers(n), "reply of {n} small values");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_memory_limit_is_dropped_counted_and_the_connection_stays() {
    init_tracing();
    let epmd = epmd().await;
    let a = node("dlm_a", epmd.local_addr()).await;
    // 64 KiB of memory per message on b: 8,192 u64s is the most that fits.
    let b = builder("dlm_b", epmd.local_addr())
        .max_message_memory(64 * 1024)
        .start()
        .await
        .unwrap();
    let (fwd, mut rx) = forward();
    let sink = b.spawn(fwd);
    a.send(sink, numbers(20_000)).await.unwrap();
    a.send(sink, numbers(100)).await.unwrap();
    let (got, _): (Numbers, _) = recv(&mut rx).await;
    assert_eq!(got, numbers(100), "the next message still arrives");
    assert_eq!(b.stats().total.dropped_in, 1);
    assert!(b.stats().total.connected);

    // A call whose reply is over the caller's limit fails at once with the
    // reason instead of timing out.
    let server = spawn_server(&a, NumberServer);
    let started = std::time::Instant::now();
    let long = Duration::from_secs(120);
    let err = b
        .call_timeout(&server, HowMany(20_000), long)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::ReplyLost(reason) if reason.contains("max_message_memory")),
        "{err:?}"
    );
    assert!(started.elapsed() < long / 2, "not a timeout");
    let ok = b
        .call_timeout(&server, HowMany(10), DEADLINE)
        .await
        .unwrap();
    assert_eq!(ok, numbers(10));

    // A call whose request is over the server node's limit fails at once too:
    // the server's node tells the caller.
    let counter = spawn_server(&b, LenServer);
    let started = std::time::Instant::now();
    let err = a
        .call_timeout(&counter, numbers(20_000), long)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::ReplyLost(reason) if reason.contains("request") && reason.contains("max_message_memory")),
        "{err:?}"
    );
    assert!(started.elapsed() < long / 2, "not a timeout");
    let n = a
        .call_timeout(&counter, numbers(100), DEADLINE)
        .await
        .unwrap();
    assert_eq!(n, 100);
    a.shutdown().await;
    b.shutdown().await;
}

/// Replies with the number of values it was sent.
struct LenServer;

impl GenServer for LenServer {
    type Calls = (Numbers,);
    type Casts = ();
}

impl HandleCall<Numbers> for LenServer {
    async fn handle_call(
        &mut self,
        n: Numbers,
        _from: ReplyTo<u64>,
        _ctx: &mut ActorContext,
    ) -> CallResponse<u64> {
        CallResponse::Reply(n.0.len() as u64)
    }
}
