//! Our client against our daemon over real sockets on 127.0.0.1: registrations,
//! leases, ownership, Erlang requests, limits and bad input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use joerl_epmd::protocol::{
    self, Alive2Reply, JoerlReply, JoerlRequest, KeepAliveRequest, LookupRequest, NamesReply,
    PortPleaseReply, RegisterRequest, RegistrationToken, UnregisterRequest,
};
use joerl_epmd::{
    Alive2Request, ClientError, DistInfo, EpmdClient, EpmdServer, NodeKind, Registration,
    RegistrationScope, RegistryError, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn alive2(name: &str, port: u16, highest_version: u16) -> Alive2Request {
    Alive2Request {
        port,
        name: name.into(),
        dist: DistInfo {
            highest_version,
            ..DistInfo::default()
        },
    }
}

#[tokio::test]
async fn port_zero_reports_the_real_port_and_ping_answers() {
    let server = start_server(|_| {}).await;
    assert_ne!(server.local_addr().port(), 0);
    let client = EpmdClient::new(server.local_addr());
    let pong = client.ping().await.unwrap();
    assert!(pong.daemon.starts_with("joerl-epmd"));
    assert_eq!(pong.nodes, 0);
    server.shutdown().await;
    assert!(matches!(
        client.ping().await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn register_lookup_list_with_metadata() {
    let server = start_server(|_| {}).await;
    let client = EpmdClient::new(server.local_addr());
    let alpha = client
        .register(
            Registration::new("alpha", 9101)
                .host("10.0.0.7")
                .metadata("role", "worker")
                .metadata("zone", "b"),
        )
        .await
        .unwrap();
    let beta = client
        .register(Registration::new("beta", 9102).connection_bound())
        .await
        .unwrap();
    assert_eq!(alpha.lease(), Some(Duration::from_secs(60)));
    assert_eq!(beta.lease(), None);

    let found = client
        .lookup("alpha")
        .await
        .unwrap()
        .expect("alpha registered");
    assert_eq!(found.port, 9101);
    assert_eq!(found.host, "10.0.0.7");
    assert_eq!(
        found.metadata.get("role").map(String::as_str),
        Some("worker")
    );
    assert_eq!(found.creation, alpha.creation());
    assert_eq!(found.kind, NodeKind::Joerl);
    assert_eq!(found.lease_ms, Some(60_000));
    // No host given: the daemon reports its own address.
    let beta_info = client.lookup("beta").await.unwrap().unwrap();
    assert_eq!(beta_info.host, "127.0.0.1");
    assert!(client.lookup("gamma").await.unwrap().is_none());

    let names: Vec<String> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["beta", "alpha"]);

    // joerl registrations are visible to Erlang's requests too.
    let port = client.port_please("alpha").await.unwrap().unwrap();
    assert_eq!((port.port, port.name.as_str()), (9101, "alpha"));
    let erl_names = client.names().await.unwrap();
    assert_eq!(erl_names.epmd_port, u32::from(server.local_addr().port()));
    assert_eq!(
        erl_names.nodes,
        vec![("beta".to_string(), 9102), ("alpha".to_string(), 9101)]
    );

    // A second registration of a live name is refused.
    let dup = client.register(Registration::new("alpha", 1)).await;
    assert!(
        matches!(dup, Err(ClientError::Refused { source: RegistryError::NameTaken(ref n), .. }) if n == "alpha"),
        "{dup:?}"
    );

    alpha.unregister().await.unwrap();
    assert!(client.lookup("alpha").await.unwrap().is_none());
    drop(beta);
    wait_until_unregistered(
        "beta to be unregistered by the dropped guard",
        &client,
        "beta",
        true,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_lease_that_is_not_renewed_expires_and_a_renewed_one_stays() {
    let server = start_server(short_leases).await;
    let client = EpmdClient::new(server.local_addr());
    // Renewed every 100 ms; a lease of 800 ms leaves room for a loaded machine.
    let kept = client
        .register(Registration::new("kept", 1).lease(Duration::from_millis(800)))
        .await
        .unwrap();
    let silent = client
        .register(Registration::new("silent", 2))
        .await
        .unwrap();
    assert_eq!(silent.lease(), Some(Duration::from_millis(300)));
    assert!(client.lookup("silent").await.unwrap().is_some());
    // The process "dies": no more keep-alives, no unregister.
    silent.abandon().await;
    wait_until_unregistered("the abandoned lease to expire", &client, "silent", true).await;
    // The renewed registration outlives several lease lengths (observed, not slept on:
    // every lookup must find it while 3 lease lengths pass).
    let watch_started = Instant::now();
    while watch_started.elapsed() < Duration::from_millis(2400) {
        let found = client.lookup("kept").await.unwrap();
        assert!(
            found.is_some(),
            "renewed lease vanished after {:?}",
            watch_started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept.state().generation, 1, "the lease never lapsed");
    kept.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn the_guard_registers_again_after_the_daemon_restarts() {
    let first = start_server(short_leases).await;
    let addr = first.local_addr();
    let client = EpmdClient::new(addr);
    let guard = client
        .register(Registration::new("phoenix", 7000).metadata("v", "1"))
        .await
        .unwrap();
    let tethered = client
        .register(Registration::new("tethered", 7001).connection_bound())
        .await
        .unwrap();
    let mut changes = guard.subscribe();
    let mut tethered_changes = tethered.subscribe();
    assert_eq!(guard.state().generation, 1);
    first.shutdown().await;
    // The connection-held registration knows at once that it is gone.
    tokio::time::timeout(DEADLINE, tethered_changes.wait_for(|s| !s.registered))
        .await
        .expect("loss noticed")
        .unwrap();

    let second = wait_for("the port to be bound again", DEADLINE, || async move {
        let mut config = ServerConfig::new(addr);
        short_leases(&mut config);
        EpmdServer::bind(config).await.ok()
    })
    .await;
    let found = wait_for(
        "the guard to register with the new daemon",
        DEADLINE,
        || {
            let client = client.clone();
            async move { client.lookup("phoenix").await.ok().flatten() }
        },
    )
    .await;
    assert_eq!(found.metadata.get("v").map(String::as_str), Some("1"));
    tokio::time::timeout(
        DEADLINE,
        changes.wait_for(|s| s.generation >= 2 && s.registered),
    )
    .await
    .expect("state change published")
    .unwrap();
    assert_eq!(guard.creation(), found.creation);
    tokio::time::timeout(
        DEADLINE,
        tethered_changes.wait_for(|s| s.generation >= 2 && s.registered),
    )
    .await
    .expect("connection-held registration restored")
    .unwrap();
    let restored = client.lookup("tethered").await.unwrap().unwrap();
    assert_eq!(
        (restored.lease_ms, restored.creation),
        (None, tethered.creation())
    );
    drop(tethered);
    drop(guard);
    wait_until_unregistered("the dropped guard to unregister", &client, "phoenix", true).await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_lease_survives_its_connection_being_cut() {
    // The lease holder's connection is cut by the idle timeout again and again;
    // the guard reconnects and renews the same lease.
    let server = start_server(|c| {
        short_leases(c);
        c.keepalive_interval = Duration::from_millis(250);
        c.default_lease = Duration::from_secs(1);
        c.idle_timeout = Duration::from_millis(100);
    })
    .await;
    let client = EpmdClient::new(server.local_addr());
    let guard = client
        .register(Registration::new("leaser", 1))
        .await
        .unwrap();
    // The connection is cut 100 ms after every keep-alive; observe 2.5 leases.
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_millis(2500) {
        assert!(client.lookup("leaser").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reconnections renewed the same lease: no new registration was needed.
    assert_eq!(guard.state().generation, 1);
    assert!(guard.state().registered);
    guard.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn only_the_token_holder_may_renew_or_remove() {
    let server = start_server(|_| {}).await;
    let addr = server.local_addr();
    let mut owner = RawJoerl::connect(addr).await;
    let reply = owner
        .call(JoerlRequest::Register(RegisterRequest {
            name: "owned".into(),
            host: String::new(),
            port: 4242,
            metadata: Default::default(),
            lease_ms: Some(0),
            dist: DistInfo::default(),
        }))
        .await;
    let JoerlReply::Registered(registered) = reply else {
        panic!("unexpected {reply:?}");
    };
    let mut stranger = RawJoerl::connect(addr).await;
    let forged = RegistrationToken::random();
    assert_eq!(
        stranger
            .call(JoerlRequest::Unregister(UnregisterRequest {
                token: forged
            }))
            .await,
        JoerlReply::Refused(RegistryError::UnknownToken)
    );
    assert_eq!(
        stranger
            .call(JoerlRequest::KeepAlive(KeepAliveRequest { token: forged }))
            .await,
        JoerlReply::Refused(RegistryError::UnknownToken)
    );
    // STOP_REQ is refused without --relaxed-command-check: closed without a reply.
    assert_eq!(raw_request(addr, b"sowned").await, b"");
    let client = EpmdClient::new(addr);
    assert!(client.lookup("owned").await.unwrap().is_some());
    // The holder may, from any connection.
    let mut holder_elsewhere = RawJoerl::connect(addr).await;
    assert_eq!(
        holder_elsewhere
            .call(JoerlRequest::KeepAlive(KeepAliveRequest {
                token: registered.token
            }))
            .await,
        JoerlReply::KeptAlive {
            lease_ms: Some(60_000)
        }
    );
    assert_eq!(
        holder_elsewhere
            .call(JoerlRequest::Unregister(UnregisterRequest {
                token: registered.token
            }))
            .await,
        JoerlReply::Unregistered
    );
    assert!(client.lookup("owned").await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_held_registration_ends_with_its_connection() {
    let server = start_server(|_| {}).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);

    let mut raw = RawJoerl::connect(addr).await;
    let reply = raw
        .call(JoerlRequest::Register(RegisterRequest {
            name: "tethered".into(),
            host: String::new(),
            port: 5000,
            metadata: Default::default(),
            lease_ms: None,
            dist: DistInfo::default(),
        }))
        .await;
    assert!(
        matches!(reply, JoerlReply::Registered(ref r) if r.lease_ms.is_none()),
        "{reply:?}"
    );
    // The same connection can still ask things.
    assert!(matches!(
        raw.call(JoerlRequest::Lookup(LookupRequest {
            name: "tethered".into()
        }))
        .await,
        JoerlReply::Lookup(Some(_))
    ));
    drop(raw);
    wait_until_unregistered(
        "the joerl registration to end with its connection",
        &client,
        "tethered",
        true,
    )
    .await;

    // Same for Erlang's ALIVE2.
    let erl = client.alive2(alive2("erlish", 5001, 6)).await.unwrap();
    assert!(erl.extended());
    let found = client.lookup("erlish").await.unwrap().unwrap();
    assert_eq!(
        (found.kind, found.creation),
        (NodeKind::Erlang, erl.creation())
    );
    erl.close().await;
    wait_until_unregistered(
        "the ALIVE2 registration to end with its connection",
        &client,
        "erlish",
        true,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn creations_follow_epmd_for_both_reply_formats() {
    let server = start_server(|_| {}).await;
    let client = EpmdClient::new(server.local_addr());
    let first = client.alive2(alive2("cr", 1, 6)).await.unwrap();
    let c1 = first.creation();
    first.close().await;
    let second = wait_for("the name to be free again", DEADLINE, || {
        let client = client.clone();
        async move { client.alive2(alive2("cr", 1, 6)).await.ok() }
    })
    .await;
    assert_eq!(second.creation(), c1.wrapping_add(1));
    // A duplicate is refused with the real epmd's bytes: result 1, creation 99.
    let mut frame = protocol::Request::Alive2(alive2("cr", 2, 6))
        .encode()
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 6];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [118, 1, 0, 0, 0, 99]);
    drop(stream);
    second.close().await;
    // Version 5 nodes get the 16-bit reply with a creation in 1..=3.
    frame = protocol::Request::Alive2(alive2("old", 1, 5))
        .encode()
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.unwrap();
    let (decoded, _) = Alive2Reply::decode(&reply).unwrap().unwrap();
    assert!(!decoded.extended && decoded.result == 0);
    assert!((1..=3).contains(&decoded.creation), "{decoded:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn erlang_requests_are_answered_like_epmd() {
    let server = start_server(|_| {}).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let port_bytes = u32::from(addr.port()).to_be_bytes();

    assert_eq!(raw_request(addr, b"n").await, port_bytes);
    assert_eq!(raw_request(addr, b"zmissing").await, [119, 1]);

    let reg = client
        .alive2(Alive2Request {
            port: 5555,
            name: "bar".into(),
            dist: DistInfo {
                highest_version: 5,
                lowest_version: 5,
                extra: b"xy".to_vec(),
                ..DistInfo::default()
            },
        })
        .await
        .unwrap();
    // Bytes as the real epmd sent them in the same situation.
    assert_eq!(
        raw_request(addr, b"zbar").await,
        [
            0x77, 0x00, 0x15, 0xb3, 0x4d, 0x00, 0x00, 0x05, 0x00, 0x05, 0x00, 0x03, 0x62, 0x61,
            0x72, 0x00, 0x02, 0x78, 0x79
        ]
    );
    assert_eq!(
        raw_request(addr, b"zbar\0").await,
        raw_request(addr, b"zbar").await
    );
    let names = raw_request(addr, b"n").await;
    assert_eq!(&names[..4], port_bytes);
    assert_eq!(&names[4..], b"name bar at port 5555\n");
    let dump = raw_request(addr, b"d").await;
    let text = String::from_utf8_lossy(&dump[4..]).into_owned();
    assert!(
        text.starts_with("active name     <bar> at port 5555, fd = ") && text.ends_with("\n\0"),
        "{text:?}"
    );
    // KILL is refused while a node is registered; STOP is refused without relaxed mode.
    assert_eq!(raw_request(addr, b"k").await, b"NO");
    assert_eq!(raw_request(addr, b"sbar").await, b"");
    assert!(client.port_please("bar").await.unwrap().is_some());
    reg.close().await;
    wait_until_unregistered("bar to go", &client, "bar", false).await;
    let dump = raw_request(addr, b"d").await;
    assert!(
        String::from_utf8_lossy(&dump[4..])
            .starts_with("old/unused name <bar>, port = 5555, fd = "),
        "{dump:?}"
    );
    // With no node left, KILL stops the daemon.
    assert_eq!(raw_request(addr, b"k").await, b"OK");
    tokio::time::timeout(DEADLINE, server.stopped())
        .await
        .expect("KILL_REQ stops the daemon");
    assert!(server.is_stopped());
}

#[tokio::test]
async fn requests_split_across_packets_are_answered_the_same() {
    // A request that is complete when accepted is answered by the accept loop;
    // one that arrives in pieces is finished by a connection task. Same answer.
    let server = start_server(|_| {}).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let reg = client.alive2(alive2("split", 4321, 6)).await.unwrap();
    let whole = raw_request(addr, b"zsplit").await;
    assert_eq!(whole[..4], [119, 0, 0x10, 0xe1]);
    for cut in [1, 2, 3, 5] {
        let frame = [&[0u8, 6][..], b"zsplit"].concat();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&frame[..cut]).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        stream.write_all(&frame[cut..]).await.unwrap();
        assert_eq!(read_until_closed(&mut stream).await, whole, "cut at {cut}");
    }
    reg.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn relaxed_mode_allows_stop_and_kill_with_nodes() {
    let server = start_server(|c| c.relaxed_command_check = true).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let mut reg = client.alive2(alive2("victim", 1, 6)).await.unwrap();
    assert_eq!(raw_request(addr, b"svictim").await, b"STOPPED");
    assert_eq!(raw_request(addr, b"snobody").await, b"NOEXISTSTOPPED");
    assert!(client.lookup("victim").await.unwrap().is_none());
    // The stopped node's connection is closed by the daemon.
    tokio::time::timeout(DEADLINE, reg.closed())
        .await
        .expect("closed in time");
    let _other = client.alive2(alive2("survivor", 1, 6)).await.unwrap();
    assert_eq!(raw_request(addr, b"k").await, b"OK");
    tokio::time::timeout(DEADLINE, server.stopped())
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let server = start_server(|c| c.max_request_bytes = 512).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let keeper = client.alive2(alive2("steady", 1234, 6)).await.unwrap();
    let leased = client
        .register(Registration::new("leased", 1))
        .await
        .unwrap();

    let mut version2 = JoerlRequest::Lookup(LookupRequest { name: "x".into() })
        .encode_body()
        .unwrap();
    version2[1] = 2;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("unknown tag", vec![0, 1, b'Q'], vec![]),
        ("zero length", vec![0, 0], vec![]),
        ("too large", vec![0xff, 0xff, b'n'], vec![]),
        ("truncated then closed", vec![0, 9, b'z', b'a'], vec![]),
        ("ALIVE2 too short", vec![0, 3, b'x', 0, 1], vec![]),
        (
            "NUL in PORT_PLEASE2 name",
            vec![0, 4, b'z', b'a', 0, b'b'],
            vec![],
        ),
        ("bad bincode", vec![0, 4, 0xA3, 1, 0xff, 0xff], vec![]),
        (
            "unsupported joerl version",
            [&(version2.len() as u16).to_be_bytes()[..], &version2].concat(),
            protocol::encode_version_reply(),
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        if what == "truncated then closed" {
            stream.shutdown().await.unwrap();
        }
        let reply = read_until_closed(&mut stream).await;
        assert_eq!(reply, expected, "{what}");
        // Everyone else is still served.
        assert!(client.lookup("steady").await.unwrap().is_some(), "{what}");
        assert!(
            client.port_please("leased").await.unwrap().is_some(),
            "{what}"
        );
    }
    // Data on an ALIVE2 connection ends that registration only (as in epmd).
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(
        &protocol::Request::Alive2(alive2("chatty", 1, 6))
            .encode()
            .unwrap(),
    )
    .await
    .unwrap();
    let mut reply = [0u8; 6];
    held.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..2], [118, 0]);
    held.write_all(b"zz").await.unwrap();
    assert_eq!(read_until_closed(&mut held).await, b"");
    assert!(client.lookup("chatty").await.unwrap().is_none());
    assert!(client.lookup("steady").await.unwrap().is_some());
    assert_eq!(client.ping().await.unwrap().nodes, 2);
    keeper.close().await;
    leased.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_without_registration_are_closed() {
    let server = start_server(|c| c.idle_timeout = Duration::from_millis(200)).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let holder = client.alive2(alive2("patient", 1, 6)).await.unwrap();
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut idle).await, b"");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A partial request does not keep a connection alive either.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[0, 5, b'z']).await.unwrap();
    assert_eq!(read_until_closed(&mut slow).await, b"");
    // The registered node's connection outlives several idle timeouts.
    let observed = Instant::now();
    while observed.elapsed() < Duration::from_millis(800) {
        assert!(client.lookup("patient").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn at_the_connection_limit_idle_connections_make_room_but_registrations_keep_theirs() {
    let server = start_server(|c| c.max_connections = 2).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    // An idle connection (it sends nothing; the idle timeout is 60 s) and a registration.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    wait_for("the idle connection to hold a slot", DEADLINE, || async {
        (server.stats().open_connections == 1).then_some(())
    })
    .await;
    let keeper = client.alive2(alive2("keeper", 1, 6)).await.unwrap();
    // At the limit, a new request takes the idle connection's slot.
    let names = client.names().await.unwrap();
    assert_eq!(names.nodes, vec![("keeper".to_string(), 1)]);
    assert_eq!(read_until_closed(&mut idle).await, b"", "idle one closed");
    assert_eq!(server.stats().connections_evicted, 1);
    // With both slots held by registrations, a new connection is closed at once
    // (as epmd does) and the registrations stay.
    let second = client.alive2(alive2("keeper2", 2, 6)).await.unwrap();
    assert_eq!(server.stats().open_connections, 2);
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(&[0, 1, b'n']).await.ok();
    assert_eq!(read_until_closed(&mut third).await, b"", "over the limit");
    let stats = server.stats();
    assert_eq!(
        (stats.connections_refused, stats.connections_evicted),
        (1, 1)
    );
    assert_eq!(server.registry().len(Instant::now()), 2);
    keeper.close().await;
    let names: NamesReply = wait_for("a free slot after closing", DEADLINE, || {
        let client = client.clone();
        async move { client.names().await.ok() }
    })
    .await;
    assert_eq!(names.nodes, vec![("keeper2".to_string(), 2)]);
    second.close().await;
    server.shutdown().await;
}

/// `NAMES_REQ`, or a joerl list followed by `NAMES_REQ` (joerl requests may
/// be pipelined), for a client that never reads.
fn greedy_request(i: usize) -> Vec<u8> {
    let names = protocol::Request::Names.encode().unwrap();
    if i % 2 == 0 {
        names
    } else {
        let mut frame = protocol::Request::Joerl(JoerlRequest::List(protocol::ListRequest {}))
            .encode()
            .unwrap();
        frame.extend_from_slice(&names);
        frame
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_neither_keep_the_slots_nor_block_lookups() {
    const BAD: usize = 300;
    const NODES: usize = 2000;
    let server = start_server(|c| {
        c.max_connections = 200;
        c.write_timeout = Duration::from_secs(2);
        c.send_buffer_bytes = Some(16 * 1024);
        c.max_nodes = NODES + 10;
        c.max_registrations_per_connection = NODES;
        c.max_registrations_per_source = NODES + 10;
    })
    .await;
    let addr = server.local_addr();
    // Replies are large: NAMES about 100 KB, the list about 250 KB.
    register_many(addr, "a_node_with_a_rather_long_name_", NODES, 64).await;
    let mut bad = Vec::with_capacity(BAD);
    for i in 0..BAD {
        bad.push(never_reading_client(addr, &greedy_request(i)).await);
    }
    // The bad clients fill every slot, blocked writing (the 100 oldest made
    // room for the newest ones).
    wait_for(
        "the bad clients to be blocked writing",
        DEADLINE,
        || async {
            let stats = server.stats();
            (stats.writing_connections >= 190).then_some(())
        },
    )
    .await;
    let before = server.stats();
    assert_eq!(before.open_connections, 200, "{before:?}");

    // Meanwhile a well-behaved client's lookups and registrations succeed.
    let client = EpmdClient::new(addr);
    for i in (0..NODES).step_by(100) {
        let name = format!("a_node_with_a_rather_long_name_{i}");
        let found = client.port_please(&name).await.unwrap();
        assert_eq!(found.map(|r| r.name), Some(name));
    }
    let newcomer = client.alive2(alive2("newcomer", 4000, 6)).await.unwrap();
    let joerl_newcomer = client
        .register(Registration::new("joerl_newcomer", 4001))
        .await
        .unwrap();
    assert!(client.port_please("newcomer").await.unwrap().is_some());
    let during = server.stats();
    assert!(
        during.writing_connections >= 100,
        "the bad clients were still connected: {during:?}"
    );

    // After the write timeout every bad connection is closed, each by a reset
    // or after the reply it could take; the bad sockets see that.
    let closed = wait_for("the bad connections to be closed", DEADLINE, || async {
        let stats = server.stats();
        let closed = stats.write_timeouts + stats.connections_evicted + stats.connections_refused;
        (closed >= BAD as u64 && stats.writing_connections == 0).then_some(stats)
    })
    .await;
    assert!(closed.write_timeouts >= 100, "{closed:?}");
    for stream in &mut bad {
        drain_until_closed(stream).await;
    }
    // The registrations made during the attack are intact.
    assert!(client.port_please("newcomer").await.unwrap().is_some());
    assert!(client.lookup("joerl_newcomer").await.unwrap().is_some());
    assert_eq!(client.names().await.unwrap().nodes.len(), NODES + 2);
    newcomer.close().await;
    joerl_newcomer.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn copies_of_the_table_held_by_slow_readers_are_bounded() {
    // NAMES for these 1000 nodes is about 55 KB; allow about two copies.
    let server = start_server(|c| {
        c.max_reply_memory = 120 * 1024;
        c.send_buffer_bytes = Some(4096);
        c.max_registrations_per_connection = 1000;
        c.max_registrations_per_source = 1010;
    })
    .await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    register_many(addr, "a_node_with_a_rather_long_name_", 1000, 0).await;
    let names = protocol::Request::Names.encode().unwrap();
    let stuck = |n: u64| {
        let server = &server;
        async move {
            wait_for("the slow readers to be blocked", DEADLINE, || async {
                (server.stats().writing_connections == n).then_some(())
            })
            .await
        }
    };
    let mut slow = vec![never_reading_client(addr, &names).await];
    stuck(1).await;
    // The table changes: the next slow reader gets a new copy...
    let first = client
        .register(Registration::new("extra1", 1))
        .await
        .unwrap();
    slow.push(never_reading_client(addr, &names).await);
    stuck(2).await;
    assert_eq!(server.stats().stale_replies, 0);
    // ... but a third copy would pass the limit: the previous copy is sent.
    let second = client
        .register(Registration::new("extra2", 2))
        .await
        .unwrap();
    slow.push(never_reading_client(addr, &names).await);
    stuck(3).await;
    assert_eq!(server.stats().stale_replies, 1);
    let seen: Vec<String> = client
        .names()
        .await
        .unwrap()
        .nodes
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(seen.contains(&"extra1".to_string()), "{}", seen.len());
    assert!(!seen.contains(&"extra2".to_string()));
    assert_eq!(server.stats().stale_replies, 2);
    // When the slow readers go, their copies go, and answers are current again.
    drop(slow);
    stuck(0).await;
    let seen = client.names().await.unwrap().nodes;
    assert!(seen.iter().any(|(name, _)| name == "extra2"));
    assert_eq!(seen.len(), 1002);
    first.unregister().await.unwrap();
    second.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_peer_that_does_not_read() {
    let server = start_server(|c| {
        c.write_timeout = Duration::from_secs(3600);
        c.send_buffer_bytes = Some(4096);
        c.max_registrations_per_connection = 500;
        c.max_registrations_per_source = 500;
    })
    .await;
    let addr = server.local_addr();
    register_many(addr, "shutdown_node_", 500, 200).await;
    let mut stuck = never_reading_client(addr, &greedy_request(1)).await;
    wait_for("the reply write to block", DEADLINE, || async {
        (server.stats().writing_connections == 1).then_some(())
    })
    .await;
    tokio::time::timeout(DEADLINE, server.shutdown())
        .await
        .expect("shutdown finishes although a write is blocked");
    drain_until_closed(&mut stuck).await;
}

#[tokio::test]
async fn registrations_are_limited_per_connection_and_per_source() {
    let server = start_server(|c| {
        c.max_registrations_per_connection = 3;
        c.max_registrations_per_source = 5;
    })
    .await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let mut first = RawJoerl::connect(addr).await;
    for i in 0..3 {
        let lease = (i == 0).then_some(0);
        let reply = first
            .call(register_request(&format!("c1_{i}"), 1, lease))
            .await;
        assert!(matches!(reply, JoerlReply::Registered(_)), "{reply:?}");
    }
    let refused = first.call(register_request("c1_3", 1, None)).await;
    let JoerlReply::Refused(err) = refused else {
        panic!("not refused: {refused:?}");
    };
    assert_eq!(
        err,
        RegistryError::TooManyRegistrations {
            scope: RegistrationScope::Connection,
            max: 3
        }
    );
    assert!(
        err.to_string()
            .contains("--max-registrations-per-connection"),
        "{err}"
    );
    // Another connection from the same address: two more, then the source is full.
    let mut second = RawJoerl::connect(addr).await;
    for i in 0..2 {
        let reply = second
            .call(register_request(&format!("c2_{i}"), 1, None))
            .await;
        assert!(matches!(reply, JoerlReply::Registered(_)), "{reply:?}");
    }
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let refused = client.register(Registration::new("c3", 1)).await;
    match refused {
        Err(ClientError::Refused {
            source:
                ref err @ RegistryError::TooManyRegistrations {
                    scope: RegistrationScope::Source(ip),
                    max: 5,
                },
            ..
        }) if ip == loopback => {
            let message = err.to_string();
            assert!(
                message.contains("source address 127.0.0.1")
                    && message.contains("--max-registrations-per-source"),
                "{message}"
            );
        }
        other => panic!("not refused for the source: {other:?}"),
    }
    // Erlang registrations from that source are refused too (result 1, as for a taken name).
    assert!(matches!(
        client.alive2(alive2("erl_c4", 1, 6)).await,
        Err(ClientError::Alive2Refused { result: 1, .. })
    ));
    // Another source is not affected.
    let mut elsewhere = RawJoerl::connect_from("127.0.0.2", addr).await;
    let reply = elsewhere
        .call(register_request("other_source", 1, None))
        .await;
    assert!(matches!(reply, JoerlReply::Registered(_)), "{reply:?}");
    assert!(server.stats().registrations_refused >= 3);
    // The first connection's connection-held registrations go with it; its lease stays.
    drop(first);
    let guard = wait_for("room for the source again", DEADLINE, || {
        let client = client.clone();
        async move { client.register(Registration::new("c3", 1)).await.ok() }
    })
    .await;
    let names: Vec<String> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["c3", "other_source", "c2_1", "c2_0", "c1_0"]);
    guard.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn an_erlang_request_with_trailing_bytes_is_closed_without_a_reply_as_epmd_does() {
    let server = start_server(|_| {}).await;
    let addr = server.local_addr();
    let client = EpmdClient::new(addr);
    let frame = |name: &str| {
        protocol::Request::Alive2(alive2(name, 7000, 6))
            .encode()
            .unwrap()
    };
    // Sent in one write with anything after it: no reply, no registration.
    for (name, extra) in [
        ("trail1", b"?".to_vec()),
        ("trail5", b"hello".to_vec()),
        ("trail_names", vec![0, 1, b'n']),
    ] {
        let reply = raw_exchange(addr, &[frame(name), extra].concat()).await;
        assert_eq!(reply, b"", "{name}");
        assert!(client.lookup(name).await.unwrap().is_none(), "{name}");
    }
    // Bytes that come after the request was read remove the registration
    // (after the reply), as before.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&frame("late")).await.unwrap();
    let mut reply = [0u8; 6];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut reply))
        .await
        .expect("reply in time")
        .unwrap();
    assert_eq!(reply[..2], [118, 0]);
    assert!(client.lookup("late").await.unwrap().is_some());
    stream.write_all(b"?").await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, b"");
    wait_until_unregistered("the late registration to be removed", &client, "late", true).await;
    // The same holds for the other Erlang requests.
    assert_eq!(raw_exchange(addr, &[0, 1, b'n', b'?']).await, b"");
    assert_eq!(raw_exchange(addr, b"\0\x05zlate?").await, b"");
    let stats = server.stats();
    assert_eq!(stats.malformed_requests, 5, "{stats:?}");
    assert_eq!(stats.alive2_unexpected_data, 1, "{stats:?}");
    // joerl requests may still be pipelined, with an Erlang request last.
    let mut pipelined = protocol::Request::Joerl(JoerlRequest::Ping(protocol::PingRequest {}))
        .encode()
        .unwrap();
    pipelined.extend(
        protocol::Request::Joerl(JoerlRequest::Lookup(LookupRequest { name: "x".into() }))
            .encode()
            .unwrap(),
    );
    pipelined.extend_from_slice(&[0, 1, b'n']);
    let reply = raw_exchange(addr, &pipelined).await;
    let first = protocol::joerl_reply_len(&reply).unwrap() + 4;
    let second = first + protocol::joerl_reply_len(&reply[first..]).unwrap() + 4;
    assert!(matches!(
        JoerlReply::decode_body(&reply[4..first]),
        Ok(JoerlReply::Pong(_))
    ));
    assert_eq!(
        JoerlReply::decode_body(&reply[first + 4..second]).unwrap(),
        JoerlReply::Lookup(None)
    );
    assert_eq!(reply[second..], u32::from(addr.port()).to_be_bytes());
    server.shutdown().await;
}

#[tokio::test]
async fn the_node_table_is_bounded() {
    let server = start_server(|c| c.max_nodes = 1).await;
    let client = EpmdClient::new(server.local_addr());
    let first = client.alive2(alive2("only", 1, 6)).await.unwrap();
    let refused = client.alive2(alive2("second", 2, 6)).await;
    assert!(
        matches!(refused, Err(ClientError::Alive2Refused { result: 1, .. })),
        "{refused:?}"
    );
    let refused = client.register(Registration::new("third", 3)).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Refused {
                source: RegistryError::TableFull { max: 1 },
                ..
            })
        ),
        "{refused:?}"
    );
    first.close().await;
    let guard = wait_for("a free slot", DEADLINE, || {
        let client = client.clone();
        async move { client.register(Registration::new("third", 3)).await.ok() }
    })
    .await;
    guard.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn replies_larger_than_the_client_limit_are_refused() {
    let server = start_server(|_| {}).await;
    let client = EpmdClient::new(server.local_addr());
    let mut big = Registration::new("big", 1);
    for i in 0..40 {
        big = big.metadata(format!("key{i}"), "v".repeat(64));
    }
    let guard = client.register(big).await.unwrap();
    let small = client.clone().with_max_reply_bytes(256);
    assert!(matches!(
        small.list().await,
        Err(ClientError::ReplyTooLarge { max: 256, .. })
    ));
    assert!(matches!(
        small.with_max_reply_bytes(8).names().await,
        Err(ClientError::ReplyTooLarge { .. })
    ));
    assert_eq!(client.list().await.unwrap().len(), 1);
    guard.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn calls_time_out_against_a_silent_peer() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let client = EpmdClient::new(addr).with_timeout(Duration::from_millis(200));
    assert!(matches!(
        client.ping().await,
        Err(ClientError::Timeout { .. })
    ));
    assert!(matches!(
        client.port_please("x").await,
        Err(ClientError::Timeout { .. })
    ));
    hold.abort();
}

#[tokio::test]
async fn port_please_reply_decodes_what_the_daemon_sends_for_joerl_nodes() {
    let server = start_server(|_| {}).await;
    let client = EpmdClient::new(server.local_addr());
    let guard = client
        .register(Registration::new("hidden", 4100).dist(DistInfo {
            node_type: protocol::NODE_TYPE_HIDDEN,
            extra: vec![9, 8, 7],
            ..DistInfo::default()
        }))
        .await
        .unwrap();
    let reply = client.port_please("hidden").await.unwrap().unwrap();
    assert_eq!(
        reply,
        PortPleaseReply {
            port: 4100,
            name: "hidden".into(),
            dist: DistInfo {
                node_type: 72,
                protocol: 0,
                highest_version: 6,
                lowest_version: 5,
                extra: vec![9, 8, 7],
            }
        }
    );
    guard.unregister().await.unwrap();
    server.shutdown().await;
}

/// Binds `tweak`ed settings, retrying with a new port when the one the
/// kernel gave 127.0.0.1 is taken on another address.
async fn bind_retrying(tweak: impl Fn(&mut ServerConfig)) -> EpmdServer {
    for _ in 0..5 {
        let mut config = ServerConfig::new(loopback0());
        tweak(&mut config);
        match EpmdServer::bind(config).await {
            Ok(server) => return server,
            Err(joerl_epmd::ServerError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                continue;
            }
            Err(err) => panic!("cannot bind: {err}"),
        }
    }
    panic!("no port free on every address");
}

#[tokio::test]
async fn several_listening_addresses_share_one_table() {
    // 127.0.0.2 is loopback too on Linux; ::1 only where IPv6 works (optional).
    let server = bind_retrying(|c| {
        c.optional_listen_addrs = vec!["[::1]:0".parse().unwrap()];
        c.extra_listen_addrs = vec!["127.0.0.2:0".parse().unwrap()];
    })
    .await;
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs[0], server.local_addr());
    assert!(
        addrs.iter().all(|a| a.port() == server.local_addr().port()),
        "{addrs:?}"
    );
    assert!(
        addrs.contains(
            &format!("127.0.0.2:{}", server.local_addr().port())
                .parse()
                .unwrap()
        )
    );
    let held = EpmdClient::new(addrs[0])
        .alive2(alive2("shared", 7001, 6))
        .await
        .unwrap();
    for addr in &addrs {
        let names = EpmdClient::new(*addr).names().await.unwrap();
        assert_eq!(names.nodes, vec![("shared".to_string(), 7001)], "{addr}");
        assert_eq!(names.epmd_port, u32::from(addr.port()));
    }
    held.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_optional_address_that_cannot_be_bound_is_skipped_an_extra_one_fails() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here.
    let absent: std::net::SocketAddr = "192.0.2.1:0".parse().unwrap();
    let server = start_server(|c| c.optional_listen_addrs = vec![absent]).await;
    assert_eq!(server.local_addrs(), &[server.local_addr()]);
    server.shutdown().await;
    let mut config = ServerConfig::new(loopback0());
    config.extra_listen_addrs = vec![absent];
    match EpmdServer::bind(config).await {
        Err(joerl_epmd::ServerError::Bind { addr, .. }) => assert_eq!(addr.ip(), absent.ip()),
        other => panic!("expected a bind error, got {other:?}"),
    }
    // A port in use fails even on an optional address: another daemon has it.
    let taken = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let mut config = ServerConfig::new(loopback0());
    config.optional_listen_addrs = vec![taken.local_addr().unwrap()];
    match EpmdServer::bind(config).await {
        Err(joerl_epmd::ServerError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse)
        }
        other => panic!("expected the port to be in use, got {other:?}"),
    }
}

#[tokio::test]
async fn with_any_bytes_the_idle_clock_runs_from_the_last_byte() {
    let idle = Duration::from_secs(1);
    let server = start_server(|c| {
        c.idle_timeout = idle;
        c.idle_activity = joerl_epmd::IdleActivity::AnyBytes;
    })
    .await;
    let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
    // A request announced as 100 bytes, sent a byte at a time for 3 s:
    // still open, as in epmd, where every read notes activity.
    slow.write_all(&[0, 100]).await.unwrap();
    let trickle = Instant::now();
    while trickle.elapsed() < 3 * idle {
        tokio::time::sleep(Duration::from_millis(200)).await;
        slow.write_all(b"z").await.unwrap();
    }
    let last_byte = Instant::now();
    let mut probe = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(10), slow.read(&mut probe))
            .await
            .is_err(),
        "closed while bytes kept arriving"
    );
    assert_eq!(read_until_closed(&mut slow).await, b"");
    assert!(last_byte.elapsed() >= idle);
    server.shutdown().await;
}

#[tokio::test]
async fn delays_before_accepting_and_before_replying_are_kept() {
    let delay = Duration::from_millis(300);
    for accept in [true, false] {
        let server = start_server(|c| {
            if accept {
                c.delay_accept = Some(delay);
            } else {
                c.delay_write = Some(delay);
            }
        })
        .await;
        let addr = server.local_addr();
        // PORT_PLEASE2 (answered at accept without a delay) and NAMES.
        for body in [&b"zmissing"[..], b"n"] {
            let started = Instant::now();
            let reply = raw_request(addr, body).await;
            assert!(!reply.is_empty());
            assert!(started.elapsed() >= delay, "accept={accept} {body:?}");
        }
        server.shutdown().await;
    }
}
