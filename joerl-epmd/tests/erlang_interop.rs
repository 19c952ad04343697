//! Interoperation with Erlang/OTP's own programs (Debian's `erlang-base`):
//! Erlang's `epmd -names` and real `erl` nodes against our daemon, our client
//! against the real `epmd`, and the two daemons compared byte for byte.
//!
//! These tests need `erl` and `epmd` on the PATH and fail with an explanation
//! when they are missing. Every daemon listens on 127.0.0.1 on a port chosen
//! here; every process started here is killed by its own handle.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use joerl_epmd::protocol::{self, Alive2Reply};
use joerl_epmd::{Alive2Request, DistInfo, EpmdClient, NodeKind, Registration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs Erlang's `epmd -port P -names` client and returns what it prints.
fn erlang_epmd_names(port: u16) -> String {
    let mut command = Command::new(erlang_tool("epmd"));
    command
        .args(["-port", &port.to_string(), "-names"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ChildGuard::spawn("epmd -names", &mut command).wait_output(DEADLINE)
}

#[tokio::test]
async fn erlang_epmd_names_lists_nodes_registered_through_our_client() {
    let server = start_server(|_| {}).await;
    let port = server.local_addr().port();
    let client = EpmdClient::new(server.local_addr());
    let joerl_node = client
        .register(Registration::new("jnode", 9200).metadata("role", "test"))
        .await
        .unwrap();
    let erlang_style = client
        .alive2(Alive2Request {
            port: 9201,
            name: "anode".into(),
            dist: DistInfo::default(),
        })
        .await
        .unwrap();
    let printed = tokio::task::spawn_blocking(move || erlang_epmd_names(port))
        .await
        .unwrap();
    assert!(
        printed.contains(&format!("epmd: up and running on port {port} with data:")),
        "{printed}"
    );
    assert!(printed.contains("name jnode at port 9200"), "{printed}");
    assert!(printed.contains("name anode at port 9201"), "{printed}");
    erlang_style.close().await;
    joerl_node.unregister().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_real_erl_node_registers_in_our_daemon_and_leaves_with_its_connection() {
    let server = start_server(|_| {}).await;
    let port = server.local_addr().port();
    let client = EpmdClient::new(server.local_addr());
    let node = start_erl("joerl_a", port, None);
    let info = wait_for("erl node joerl_a to register", ERL_DEADLINE, || {
        let client = client.clone();
        async move { client.lookup("joerl_a").await.ok().flatten() }
    })
    .await;
    assert_eq!(info.kind, NodeKind::Erlang);
    assert_eq!(info.dist.node_type, protocol::NODE_TYPE_NORMAL);
    assert!(info.dist.highest_version >= 6, "{info:?}");
    assert_ne!(info.port, 0);
    // Erlang's own tools see it too.
    let printed = tokio::task::spawn_blocking(move || erlang_epmd_names(port))
        .await
        .unwrap();
    assert!(
        printed.contains(&format!("name joerl_a at port {}", info.port)),
        "{printed}"
    );
    // The node dies: its ALIVE2 connection closes and the name goes.
    drop(node);
    wait_until_unregistered(
        "the killed node to be unregistered",
        &client,
        "joerl_a",
        true,
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_real_erl_nodes_find_each_other_through_our_daemon() {
    let server = start_server(|_| {}).await;
    let port = server.local_addr().port();
    let client = EpmdClient::new(server.local_addr());
    let _a = start_erl("joerl_ping_a", port, None);
    wait_for("erl node joerl_ping_a to register", ERL_DEADLINE, || {
        let client = client.clone();
        async move { client.lookup("joerl_ping_a").await.ok().flatten() }
    })
    .await;
    let b = start_erl(
        "joerl_ping_b",
        port,
        Some(
            "io:format(\"ping_result=~p~n\", [net_adm:ping('joerl_ping_a@localhost')]), \
             io:format(\"names=~p~n\", [net_adm:names()]), halt().",
        ),
    );
    let output = tokio::task::spawn_blocking(move || b.wait_output(ERL_DEADLINE))
        .await
        .unwrap();
    assert!(output.contains("ping_result=pong"), "{output}");
    assert!(output.contains("\"joerl_ping_a\""), "{output}");
    assert!(output.contains("\"joerl_ping_b\""), "{output}");
    server.shutdown().await;
}

#[tokio::test]
async fn our_client_finds_a_real_erl_node_through_the_real_epmd() {
    let (_epmd, addr) = real_epmd(false).await;
    let client = EpmdClient::new(addr);
    let _node = start_erl("joerl_r", addr.port(), None);
    let reply = wait_for("erl node joerl_r in the real epmd", ERL_DEADLINE, || {
        let client = client.clone();
        async move { client.port_please("joerl_r").await.ok().flatten() }
    })
    .await;
    assert_eq!(reply.name, "joerl_r");
    assert_eq!(reply.dist.node_type, protocol::NODE_TYPE_NORMAL);
    assert!(reply.dist.highest_version >= 6);
    let names = client.names().await.unwrap();
    assert_eq!(names.epmd_port, u32::from(addr.port()));
    assert!(
        names.nodes.contains(&("joerl_r".to_string(), reply.port)),
        "{names:?}"
    );
    assert!(client.port_please("nobody").await.unwrap().is_none());

    // Our ALIVE2 registration is accepted by the real epmd as well.
    let ours = client
        .alive2(Alive2Request {
            port: 9300,
            name: "joerl_side".into(),
            dist: DistInfo::default(),
        })
        .await
        .unwrap();
    assert!(ours.extended());
    let seen = client.port_please("joerl_side").await.unwrap().unwrap();
    assert_eq!((seen.port, seen.dist.clone()), (9300, DistInfo::default()));
    ours.close().await;
}

/// One request sent to both daemons; returns (real epmd's reply, ours).
async fn both(real: SocketAddr, ours: SocketAddr, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (raw_request(real, body).await, raw_request(ours, body).await)
}

/// Holds an ALIVE2 registration on a raw socket; returns the socket and the reply bytes.
async fn raw_alive2(addr: SocketAddr, request: &Alive2Request) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&protocol::Request::Alive2(request.clone()).encode().unwrap())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let started = Instant::now();
    while Alive2Reply::decode(&reply).unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "no ALIVE2 reply");
        let mut chunk = [0u8; 8];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed before replying");
        reply.extend_from_slice(&chunk[..n]);
    }
    (stream, reply)
}

/// DUMP output with the `fd = N` numbers (which differ between daemons) removed.
fn without_fds(dump: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(&dump[4..])
        .split("\n\0")
        .map(|line| match line.find("fd = ") {
            Some(at) => {
                let rest = &line[at + 5..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                format!("{}fd = #{}", &line[..at], &rest[digits..])
            }
            None => line.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn our_daemon_answers_byte_for_byte_like_the_real_epmd() {
    let (mut epmd, real) = real_epmd(false).await;
    let server = start_server(|_| {}).await;
    let ours = server.local_addr();
    let header = |addr: SocketAddr| u32::from(addr.port()).to_be_bytes().to_vec();

    // Empty table.
    let (r, o) = both(real, ours, b"n").await;
    assert_eq!((r, o), (header(real), header(ours)));
    for body in [&b"zmissing"[..], b"Q", b"", b"x\x00\x01", b"sname", b"z\0"] {
        let (r, o) = both(real, ours, body).await;
        assert_eq!(r, o, "request {body:?}");
    }

    // A version-5 node with extra bytes, then a version-6 node.
    let old = Alive2Request {
        port: 5555,
        name: "bar".into(),
        dist: DistInfo {
            highest_version: 5,
            lowest_version: 5,
            extra: b"xy".to_vec(),
            ..DistInfo::default()
        },
    };
    let (real_old, real_old_reply) = raw_alive2(real, &old).await;
    let (our_old, our_old_reply) = raw_alive2(ours, &old).await;
    assert_eq!(real_old_reply.len(), 4);
    assert_eq!(our_old_reply[..2], real_old_reply[..2]);
    for reply in [&real_old_reply, &our_old_reply] {
        assert!(
            (1..=3).contains(&u16::from_be_bytes([reply[2], reply[3]])),
            "{reply:?}"
        );
    }
    let new = Alive2Request {
        port: 6000,
        name: "foo".into(),
        dist: DistInfo::default(),
    };
    let (real_new, real_new_reply) = raw_alive2(real, &new).await;
    let (our_new, our_new_reply) = raw_alive2(ours, &new).await;
    assert_eq!(
        (real_new_reply.len(), our_new_reply[..2].to_vec()),
        (6, vec![118, 0])
    );
    assert_eq!(real_new_reply[..2], our_new_reply[..2]);

    for body in [&b"zbar"[..], b"zbar\0", b"zfoo", b"znope", b"k", b"sfoo"] {
        let (r, o) = both(real, ours, body).await;
        assert_eq!(r, o, "request {body:?}");
    }
    let (r, o) = both(real, ours, b"n").await;
    assert_eq!(r[4..], o[4..]);
    assert_eq!(&r[4..], b"name foo at port 6000\nname bar at port 5555\n");
    let (r, o) = both(real, ours, b"d").await;
    assert_eq!(without_fds(&r), without_fds(&o));

    // A duplicate name: refused with creation 99, same bytes.
    let (_real_dup, r) = raw_alive2(real, &new).await;
    let (_our_dup, o) = raw_alive2(ours, &new).await;
    assert_eq!((r.clone(), o), (r, vec![118, 1, 0, 0, 0, 99]));

    // Re-registering a name continues its creation counter (+1) in both.
    let real_first = u32::from_be_bytes(real_new_reply[2..6].try_into().unwrap());
    let our_first = u32::from_be_bytes(our_new_reply[2..6].try_into().unwrap());
    drop((real_new, our_new));
    let real_client = EpmdClient::new(real);
    let our_client = EpmdClient::new(ours);
    for client in [&real_client, &our_client] {
        wait_until_unregistered("foo to be released", client, "foo", false).await;
    }
    let (real_again, r) = raw_alive2(real, &new).await;
    let (our_again, o) = raw_alive2(ours, &new).await;
    assert_eq!(
        u32::from_be_bytes(r[2..6].try_into().unwrap()),
        real_first.wrapping_add(1)
    );
    assert_eq!(
        u32::from_be_bytes(o[2..6].try_into().unwrap()),
        our_first.wrapping_add(1)
    );
    let (r, o) = both(real, ours, b"d").await;
    assert_eq!(without_fds(&r), without_fds(&o));

    // Any byte on a registration's connection ends it, in both.
    for mut stream in [real_again, our_again] {
        stream.write_all(b"?").await.unwrap();
        assert_eq!(read_until_closed(&mut stream).await, b"");
    }
    drop((real_old, our_old));
    for client in [&real_client, &our_client] {
        wait_for("all names released", DEADLINE, || {
            let client = client.clone();
            async move { client.names().await.unwrap().nodes.is_empty().then_some(()) }
        })
        .await;
    }
    let (r, o) = both(real, ours, b"d").await;
    assert_eq!(without_fds(&r), without_fds(&o));
    assert!(without_fds(&o)[0].starts_with("old/unused name <"), "{o:?}");

    // With no node left, KILL stops both daemons.
    let (r, o) = both(real, ours, b"k").await;
    assert_eq!((r.as_slice(), o.as_slice()), (&b"OK"[..], &b"OK"[..]));
    tokio::time::timeout(DEADLINE, server.stopped())
        .await
        .expect("our daemon stops");
    let child = epmd.child.as_mut().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "the real epmd did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn relaxed_stop_answers_like_the_real_epmd() {
    let (_epmd, real) = real_epmd(true).await;
    let server = start_server(|c| c.relaxed_command_check = true).await;
    let ours = server.local_addr();
    let node = Alive2Request {
        port: 7000,
        name: "target".into(),
        dist: DistInfo::default(),
    };
    let (mut real_held, _) = raw_alive2(real, &node).await;
    let (mut our_held, _) = raw_alive2(ours, &node).await;
    let (r, o) = both(real, ours, b"starget").await;
    assert_eq!(
        (r.as_slice(), o.as_slice()),
        (&b"STOPPED"[..], &b"STOPPED"[..])
    );
    // Both close the stopped node's connection.
    assert_eq!(read_until_closed(&mut real_held).await, b"");
    assert_eq!(read_until_closed(&mut our_held).await, b"");
    let (r, o) = both(real, ours, b"starget").await;
    assert_eq!(
        (r.as_slice(), o.as_slice()),
        (&b"NOEXISTSTOPPED"[..], &b"NOEXISTSTOPPED"[..])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn trailing_bytes_after_a_request_are_handled_like_the_real_epmd() {
    let (_epmd, real) = real_epmd(false).await;
    let server = start_server(|_| {}).await;
    let ours = server.local_addr();
    let frame = |name: &str| {
        protocol::Request::Alive2(Alive2Request {
            port: 7100,
            name: name.into(),
            dist: DistInfo::default(),
        })
        .encode()
        .unwrap()
    };
    // In one write with the request: closed without a reply, nothing registered
    // (the real epmd logs "got N bytes in packet, expected M").
    for (name, extra) in [
        ("trail1", b"?".to_vec()),
        ("trail5", b"hello".to_vec()),
        ("trail_names", vec![0, 1, b'n']),
    ] {
        let bytes = [frame(name), extra].concat();
        let (r, o) = (
            raw_exchange(real, &bytes).await,
            raw_exchange(ours, &bytes).await,
        );
        assert_eq!((r.as_slice(), o.as_slice()), (&b""[..], &b""[..]), "{name}");
    }
    for bytes in [&[0u8, 1, b'n', b'?'][..], b"\0\x06zfirst?"] {
        let (r, o) = (
            raw_exchange(real, bytes).await,
            raw_exchange(ours, bytes).await,
        );
        assert_eq!(
            (r.as_slice(), o.as_slice()),
            (&b""[..], &b""[..]),
            "{bytes:?}"
        );
    }
    for addr in [real, ours] {
        let names = EpmdClient::new(addr).names().await.unwrap();
        assert!(names.nodes.is_empty(), "{addr}: {names:?}");
    }
    // After the reply, any byte removes the registration in both.
    for addr in [real, ours] {
        let (mut held, reply) = raw_alive2(
            addr,
            &Alive2Request {
                port: 7101,
                name: "late".into(),
                dist: DistInfo::default(),
            },
        )
        .await;
        assert_eq!(reply[..2], [118, 0], "{addr}");
        held.write_all(b"?").await.unwrap();
        assert_eq!(read_until_closed(&mut held).await, b"", "{addr}");
        let client = EpmdClient::new(addr);
        wait_until_unregistered("the registration to be removed", &client, "late", false).await;
    }
    server.shutdown().await;
}
