//! Cluster membership across OS processes: `cluster_example` members on
//! 127.0.0.1 with gossip ports the tests chose, each with its own EPMD (so
//! only gossip can tell members where the others are).

mod support;

use std::time::Duration;

use support::*;

/// The members block printed last: `(count, lines)`.
fn last_block(out: &str) -> Option<(usize, Vec<&str>)> {
    let start = out.rfind("Cluster members (")?;
    let block = &out[start..];
    let count: usize = block["Cluster members (".len()..]
        .split(')')
        .next()?
        .parse()
        .ok()?;
    let lines: Vec<&str> = block.lines().skip(1).take(count).collect();
    (lines.len() == count).then_some((count, lines))
}

/// Waits until the last members block shows `n` members, all active.
fn wait_all_active(p: &Proc, n: usize) {
    p.wait_until(&format!("{n} members, all Active"), |out| {
        last_block(out).is_some_and(|(count, lines)| {
            count == n && lines.iter().all(|l| l.ends_with("(Status: Active)"))
        })
    });
}

fn member(name: &str, port: u16, seed: Option<u16>, extra: &[&str]) -> Proc {
    let port_s = port.to_string();
    let seed_s = seed.map(|s| format!("localhost:{s}"));
    let mut args: Vec<&str> = vec![name];
    if let Some(s) = &seed_s {
        args.push(s);
    }
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--run-for", "120"]);
    Proc::start(
        name,
        example("cluster_example"),
        &args,
        &[("CLUSTER_PORT", &port_s), ("JOERL_COOKIE", "cluster-test")],
    )
}

fn count(out: &str, text: &str) -> usize {
    out.matches(text).count()
}

/// The three command lines of the example's documentation, with free ports
/// for 7946 and 7948 (and for the port the second one would pick itself).
#[test]
fn the_documented_command_lines_print_the_documented_lines() {
    let (p1, p2, p3) = (free_udp_port(), free_udp_port(), free_udp_port());
    let seed = format!("localhost:{p1}");
    let env = |p: u16| vec![("CLUSTER_PORT", p.to_string())];
    let start = |name: &str, args: &[&str], env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Proc::start(name, example("cluster_example"), args, &env)
    };
    let n1 = start("node1", &["node1"], env(p1));
    n1.wait_for(&format!("Node started: node1@127.0.0.1 at 127.0.0.1:{p1}"));
    let n2 = start("node2", &["node2", &seed], env(p2));
    let mut n3 = start("node3", &["node3", &seed], env(p3));
    for p in [&n1, &n2, &n3] {
        wait_all_active(p, 3);
    }
    let out = n1.output();
    for (name, port) in [("node2", p2), ("node3", p3)] {
        assert!(
            out.contains(&format!(
                "  - {name}@127.0.0.1 at 127.0.0.1:{port} (Status: Active)"
            )),
            "{out}"
        );
    }
    assert!(out.contains("Health: healthy (3 of 3 active)"), "{out}");
    n3.wait_for("Joined through 1 of 1 seed(s)");
    // Each member greets the others through addresses only gossip knew.
    n3.wait_for("Greeting from node1@127.0.0.1");
    n3.wait_for("Greeting from node2@127.0.0.1");
    // Ctrl-C leaves gracefully; the others print it as Left.
    n3.signal("INT");
    assert_eq!(n3.wait_exit(), 0, "{}", n3.output());
    let out3 = n3.output();
    let (shut, stopped) = (
        out3.find("Shutting down...").expect("Shutting down..."),
        out3.find("Node stopped").expect("Node stopped"),
    );
    assert!(shut < stopped);
    for p in [&n1, &n2] {
        p.wait_for("Event: MemberLeft node3@127.0.0.1");
        p.wait_for(&format!(
            "  - node3@127.0.0.1 at 127.0.0.1:{p3} (Status: Left)"
        ));
        assert!(!p.output().contains("MemberFailed"), "{}", p.output());
    }
    for mut p in [n1, n2] {
        p.signal("INT");
        assert_eq!(p.wait_exit(), 0, "{}", p.output());
    }
}

/// Five members through one seed; one killed with SIGKILL is `Failed` at
/// every survivor, and each survivor's monitor on it fires `noconnection`,
/// exactly once.
#[test]
fn five_members_join_through_one_seed_and_a_killed_one_fails_everywhere_once() {
    let ports: Vec<u16> = (0..5).map(|_| free_udp_port()).collect();
    let mut members = vec![member("m1", ports[0], None, &[])];
    members[0].wait_for("Node started: m1@127.0.0.1");
    for (i, &p) in ports.iter().enumerate().skip(1) {
        members.push(member(&format!("m{}", i + 1), p, Some(ports[0]), &[]));
    }
    for p in &members {
        wait_all_active(p, 5);
    }
    let victim = members.pop().unwrap();
    victim.signal("KILL");
    drop(victim);
    for p in &members {
        p.wait_for("Event: MemberFailed m5@127.0.0.1");
        p.wait_for("Monitor: greeter on m5@127.0.0.1 down: noconnection");
    }
    for mut p in members {
        p.signal("INT");
        assert_eq!(p.wait_exit(), 0, "{}", p.output());
        let out = p.output();
        assert_eq!(count(&out, "Event: MemberFailed m5@127.0.0.1"), 1, "{out}");
        assert_eq!(
            count(&out, "Monitor: greeter on m5@127.0.0.1 down"),
            1,
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("  - m5@127.0.0.1 at ") && l.ends_with("(Status: Failed)")),
            "{out}"
        );
    }
}

/// A member stopped (SIGSTOP) for longer than the suspicion timeout is
/// `Failed`; continued (SIGCONT), it learns it was declared down and comes
/// back as its next incarnation.
#[test]
fn a_stopped_member_fails_and_comes_back_as_a_new_incarnation() {
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let s1 = member("s1", ports[0], None, &[]);
    s1.wait_for("Node started: s1@127.0.0.1");
    let s2 = member("s2", ports[1], Some(ports[0]), &[]);
    let s3 = member("s3", ports[2], Some(ports[0]), &[]);
    for p in [&s1, &s2, &s3] {
        wait_all_active(p, 3);
    }
    s3.signal("STOP");
    for p in [&s1, &s2] {
        p.wait_for("Event: MemberFailed s3@127.0.0.1");
        p.wait_for("Monitor: greeter on s3@127.0.0.1 down: noconnection");
    }
    s3.signal("CONT");
    for p in [&s1, &s2] {
        p.wait_for("Event: MemberUp s3@127.0.0.1 (incarnation 1)");
        wait_all_active(p, 3);
    }
    wait_all_active(&s3, 3);
    for mut p in [s1, s2, s3] {
        p.signal("INT");
        assert_eq!(p.wait_exit(), 0, "{}", p.output());
    }
}

/// A member with another cookie, or another cluster name, cannot join (the
/// seed adds no member and counts the refused packets); the seed keeps
/// serving a real member after thousands of random, mutated, truncated and
/// oversized datagrams.
#[test]
fn strangers_and_garbage_cannot_join_and_the_seed_keeps_serving() {
    use joerl_dist::cluster::packet::PacketKey;
    let (p1, p2, p3, p4) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let mut seed = member("seed", p1, None, &[]);
    seed.wait_for("Node started: seed@127.0.0.1");
    let mut wrong_cookie = member("intruder", p2, Some(p1), &["--cookie", "not-the-cookie"]);
    let mut other_cluster = Proc::start(
        "other_cluster",
        example("cluster_example"),
        &["stranger", &format!("localhost:{p1}"), "--run-for", "120"],
        &[
            ("CLUSTER_PORT", &p3.to_string()),
            ("CLUSTER_NAME", "another-cluster"),
            ("JOERL_COOKIE", "cluster-test"),
        ],
    );
    wrong_cookie.wait_for("Join failed: no seed answered");
    other_cluster.wait_for("Join failed: no seed answered");
    for p in [&mut wrong_cookie, &mut other_cluster] {
        p.signal("INT");
        p.wait_exit();
    }

    // Garbage: random bytes, packets sealed with the right key around a
    // random body, real-looking packets with flipped bits, truncated and
    // oversized ones.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = format!("127.0.0.1:{p1}");
    let key = PacketKey::new("cluster-test", "joerl", 1400);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sealed = Vec::new();
    for i in 0..4000u32 {
        let len = (rand() % 1400) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        let packet = match i % 5 {
            0 => body,
            1 => {
                body.truncate(1300);
                // An authenticated body SWIM cannot read.
                key.seal(&body, &mut sealed).unwrap();
                sealed.clone()
            }
            2 => {
                body.truncate(1300);
                key.seal(&body, &mut sealed).unwrap();
                let at = (rand() as usize) % sealed.len();
                sealed[at] ^= 1 << (rand() % 8);
                sealed.clone()
            }
            3 => body.into_iter().take((rand() % 27) as usize).collect(),
            _ => vec![0x4a; 1401 + (rand() % 2000) as usize],
        };
        let _ = sock.send_to(&packet, &to);
        if i % 200 == 0 {
            // Let the seed drain its socket now and then (UDP drops what a
            // full receive buffer has no room for; nothing here counts on it).
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut friend = member("friend", p4, Some(p1), &[]);
    wait_all_active(&seed, 2);
    friend.wait_for("Joined through 1 of 1 seed(s)");
    seed.signal("INT");
    assert_eq!(seed.wait_exit(), 0, "{}", seed.output());
    let out = seed.output();
    assert!(!out.contains("intruder@"), "{out}");
    assert!(!out.contains("stranger@"), "{out}");
    let stats = out
        .lines()
        .find(|l| l.starts_with("Gossip: "))
        .unwrap_or_else(|| panic!("no stats line: {out}"));
    let field = |k: &str| -> u64 {
        stats
            .split([' ', '(', ')'])
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    for k in [
        "truncated",
        "oversized",
        "not_gossip",
        "wrong_cluster",
        "bad_tag",
        "malformed",
    ] {
        assert!(field(k) > 0, "{k} counted: {stats}");
    }
    assert!(field("refused") > 1000, "{stats}");
    friend.signal("INT");
    friend.wait_exit();
}

/// Configuration precedence across a real start: file < `CLUSTER_PORT` <
/// `--port`; an invalid file value stops the start with the field named.
#[test]
fn configuration_precedence_and_an_invalid_field_at_start() {
    let dir = std::env::temp_dir().join(format!("joerl-cluster-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pf, pe, pa) = (free_udp_port(), free_udp_port(), free_udp_port());
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, format!("port: {pf}\ncluster_name: cfg-test\n")).unwrap();
    let file_s = file.to_str().unwrap().to_string();
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["cfg", "--config", file_s.as_str(), "--run-for", "0"];
        args.extend_from_slice(extra);
        let mut p = Proc::start("cfg", example("cluster_example"), &args, env);
        let code = p.wait_exit();
        (code, p.output())
    };
    let pe_s = pe.to_string();
    let pa_s = pa.to_string();
    let (code, out) = run(&[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("at 127.0.0.1:{pf}")), "file: {out}");
    let (code, out) = run(&[("CLUSTER_PORT", &pe_s)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("at 127.0.0.1:{pe}")),
        "env over file: {out}"
    );
    let (code, out) = run(&[("CLUSTER_PORT", &pe_s)], &["--port", &pa_s]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("at 127.0.0.1:{pa}")),
        "builder over env: {out}"
    );
    let (code, out) = run(&[("CLUSTER_PORT", "seventy")], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("CLUSTER_PORT"), "{out}");
    std::fs::write(&file, "probe_interval_ms: 300\nprobe_timeout_ms: 900\n").unwrap();
    let (code, out) = run(&[], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("probe_timeout_ms"), "{out}");
    std::fs::write(&file, "prot: 7000\n").unwrap();
    let (code, out) = run(&[], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("prot"), "an unknown key is named: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The benchmark runs every phase with short traffic and prints its line.
#[test]
fn cluster_bench_prints_its_line() {
    let mut p = Proc::start(
        "cluster_bench",
        example("cluster_bench"),
        &["--nodes", "4", "--traffic-secs", "1", "--idle-secs", "1"],
        &[],
    );
    let out = p.expect_success();
    let (line, keys) = bench_line(&out, "membership");
    assert_eq!(
        keys,
        [
            "nodes",
            "converge_ms",
            "leave_ms",
            "detect_ms",
            "false_failures",
            "gossip_bytes_per_node_s"
        ]
    );
    assert!(line.starts_with("membership nodes=4 "), "{line}");
}
