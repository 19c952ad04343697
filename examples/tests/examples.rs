//! Runs every example with short, bounded arguments on 127.0.0.1 (ports chosen
//! by the test) and checks what it prints.

mod support;

use support::*;

const COOKIE: (&str, &str) = ("JOERL_COOKIE", "examples-test");

#[test]
fn local_demo_prints_a_summary() {
    let mut p = Proc::start("local_demo", example("local_demo"), &[], &[]);
    let out = p.expect_success();
    assert!(out.contains("call: get(lang) = Some(\"rust\")"), "{out}");
    assert!(
        out.contains("went down with reason panic: told to crash"),
        "{out}"
    );
    assert!(out.contains("summary:"), "{out}");
}

#[test]
fn local_bench_prints_one_result_line_per_mode() {
    for (mode, prefix) in [
        ("throughput", "local_throughput msgs_per_s="),
        ("rtt", "local_rtt p50_us="),
        ("spawn", "spawn per_s="),
    ] {
        let mut p = Proc::start(
            "local_bench",
            example("local_bench"),
            &[mode, "--count", "2000"],
            &[],
        );
        let out = p.expect_success();
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(prefix) && last.ends_with("count=2000"),
            "{mode}: {out}"
        );
    }
}

#[test]
fn epmd_server_example_answers_and_stops_on_sigterm() {
    let (mut epmd, addr) = epmd();
    let mut ping = Proc::start(
        "epmd ping",
        bin_or_example("epmd_server"),
        &["ping", "--epmd", &addr],
        &[],
    );
    ping.expect_success();
    epmd.signal("TERM");
    assert_eq!(epmd.wait_exit(), 0, "{}", epmd.output());
}

/// The `epmd_server` binary when built, else the example of the same program.
fn bin_or_example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let b = exe.parent().unwrap().parent().unwrap().join(name);
    if b.exists() { b } else { example(name) }
}

#[test]
fn distributed_system_example_nodes_find_and_greet_each_other() {
    let (_epmd, addr) = epmd();
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let mut a = Proc::start(
        "node_a",
        example("distributed_system_example"),
        &["node_a", &pa, "--epmd", &addr, "--duration", "8"],
        &[COOKIE],
    );
    a.wait_for("node node_a@127.0.0.1 up");
    let mut b = Proc::start(
        "node_b",
        example("distributed_system_example"),
        &["node_b", &pb, "--epmd", &addr, "--duration", "8"],
        &[COOKIE],
    );
    a.wait_for("received from node_b@127.0.0.1: hello from node_b@127.0.0.1");
    b.wait_for("received from node_a@127.0.0.1: hello from node_a@127.0.0.1");
    b.wait_for("found node_a@127.0.0.1");
    a.expect_success();
    b.expect_success();
}

#[test]
fn distributed_cluster_reports_nodes_coming_and_going() {
    let (_epmd, addr) = epmd();
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let a = Proc::start(
        "node_a",
        example("distributed_cluster"),
        &["node_a", &pa, "--epmd", &addr, "--interval-ms", "200"],
        &[COOKIE],
    );
    a.wait_for("node node_a@127.0.0.1 joined the cluster");
    let mut b = Proc::start(
        "node_b",
        example("distributed_cluster"),
        &["node_b", &pb, "--epmd", &addr, "--interval-ms", "200"],
        &[COOKIE],
    );
    b.wait_for("node up: node_a@127.0.0.1");
    b.wait_for("heartbeat from node_a@127.0.0.1");
    a.wait_for("cluster view: [node_a@127.0.0.1, node_b@127.0.0.1]");
    b.signal("INT");
    assert_eq!(b.wait_exit(), 0, "{}", b.output());
    a.wait_for("node down: node_b@127.0.0.1");
    a.wait_for("cluster view: [node_a@127.0.0.1]");
}

#[test]
fn remote_ping_pong_client_finds_server_by_name() {
    let (_epmd, addr) = epmd();
    let server = Proc::start(
        "server",
        example("remote_ping_pong"),
        &["server", "--epmd", &addr],
        &[COOKIE],
    );
    server.wait_for("server pong_server@127.0.0.1 ready");
    let mut client = Proc::start(
        "client",
        example("remote_ping_pong"),
        &["client", "--epmd", &addr, "--rounds", "5"],
        &[COOKIE],
    );
    let out = client.expect_success();
    assert!(out.contains("pong 5 in"), "{out}");
    assert!(out.contains("summary: 5 round trips"), "{out}");
    server.wait_for("ping 5 from");
}

#[test]
fn remote_actors_runs_to_its_summary() {
    let mut p = Proc::start("remote_actors", example("remote_actors"), &[], &[]);
    let out = p.expect_success();
    assert!(
        out.contains("compute reply: sum of squares 1..=1000 = Number(333833500)"),
        "{out}"
    );
    assert!(out.contains("20 concurrent requests answered"), "{out}");
    assert!(out.contains("summary:"), "{out}");
}

#[test]
fn distributed_chat_delivers_lines_and_announces_leaving() {
    let (_epmd, addr) = epmd();
    let (pa, pb) = (free_port().to_string(), free_port().to_string());
    let mut alice = Proc::start(
        "alice",
        example("distributed_chat"),
        &["--node", "alice", "--port", &pa, "--epmd", &addr],
        &[COOKIE],
    );
    alice.wait_for("alice is in the chat");
    let join = format!("127.0.0.1:{pa}");
    let mut bob = Proc::start(
        "bob",
        example("distributed_chat"),
        &[
            "--node",
            "bob",
            "--port",
            &pb,
            "--epmd",
            &addr,
            "--connect",
            &join,
        ],
        &[COOKIE],
    );
    bob.wait_for("bob is in the chat");
    alice.wait_for("*** bob joined");
    bob.type_line("hello alice");
    alice.wait_for("<bob> hello alice");
    alice.type_line("hi bob");
    bob.wait_for("<alice> hi bob");
    bob.type_line("/quit");
    assert_eq!(bob.wait_exit(), 0, "{}", bob.output());
    alice.wait_for("*** bob left");
    alice.type_line("/quit");
    assert_eq!(alice.wait_exit(), 0, "{}", alice.output());
}

#[test]
fn work_queue_requeues_the_job_of_a_killed_worker_and_finishes_every_job() {
    let mut p = Proc::start("work_queue", example("work_queue"), &["--jobs", "30"], &[]);
    let out = p.expect_success();
    let summary = out
        .lines()
        .find(|l| l.starts_with("work_queue "))
        .unwrap_or_else(|| panic!("no summary line: {out}"));
    let field = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {summary}"))
    };
    assert_eq!(field("jobs"), 30, "{summary}");
    assert_eq!(
        field("done"),
        30,
        "every job done once the worker died: {summary}"
    );
    assert!(field("requeued") >= 1, "the killed worker's job: {out}");
    assert_eq!(field("workers"), 2);
    assert!(out.contains("(noconnection): job"), "{out}");
}

#[test]
fn cluster_demo_kills_a_node_and_exits_with_a_summary() {
    // Built first: the bound is on the demo's run, not on compiling it.
    let binary = example("cluster_demo");
    let start = std::time::Instant::now();
    let mut p = Proc::start("cluster_demo", binary, &[], &[]);
    let out = p.expect_success();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.contains("EPMD running in the background"), "{out}");
    assert!(
        out.contains("remote calls: sum of squares on alpha = Number(338350)"),
        "{out}"
    );
    assert!(
        out.contains("demo's monitor fired") && out.contains("went down with reason noconnection"),
        "{out}"
    );
    assert!(
        out.contains("alpha's monitor fired too") && out.contains("noconnection"),
        "{out}"
    );
    assert!(out.contains("summary: 3 nodes"), "{out}");
}

#[test]
fn dist_bench_modes_and_wrong_cookie() {
    let (_epmd, addr) = epmd();
    let server = Proc::start(
        "serve",
        example("dist_bench"),
        &[
            "serve",
            "--name",
            "bench_srv",
            "--epmd",
            &addr,
            "--cookie",
            "c",
        ],
        &[],
    );
    server.wait_for("serving bench_srv@127.0.0.1");
    let target = "bench_srv@127.0.0.1";
    let mut t = Proc::start(
        "throughput",
        example("dist_bench"),
        &[
            "throughput",
            "--name",
            "cli1",
            "--target",
            target,
            "--epmd",
            &addr,
            "--cookie",
            "c",
            "--count",
            "20000",
            "--size",
            "32",
        ],
        &[],
    );
    let out = t.expect_success();
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("throughput msgs_per_s=") && last.ends_with("count=20000 size=32"),
        "{out}"
    );
    let mut r = Proc::start(
        "rtt",
        example("dist_bench"),
        &[
            "rtt", "--name", "cli2", "--target", target, "--epmd", &addr, "--cookie", "c",
            "--count", "200",
        ],
        &[],
    );
    let out = r.expect_success();
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .starts_with("rtt p50_us="),
        "{out}"
    );
    // cuts: numbered messages through the client's own proxy, cut twice; what
    // the client's node counted as dropped (nothing) is what the counter never got.
    let mut c = Proc::start(
        "cuts",
        example("dist_bench"),
        &[
            "cuts", "--name", "cli5", "--target", target, "--epmd", &addr, "--cookie", "c",
            "--count", "200000", "--cuts", "2",
        ],
        &[],
    );
    let out = c.expect_success();
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let lines: Vec<&str> = out.lines().collect();
    let (accounting, result) = (lines[lines.len() - 2], lines[lines.len() - 1]);
    assert!(result.starts_with("cuts sent=200000 "), "{out}");
    // Each cut is mended within the grace period: nothing lost or reported.
    assert_eq!(field(result, "lost"), 0, "{out}");
    assert_eq!(field(result, "node_downs"), 0, "{out}");
    assert_eq!(field(result, "duplicated"), 0, "{out}");
    assert_eq!(field(result, "reordered"), 0, "{out}");
    assert_eq!(
        field(accounting, "dropped_out"),
        field(result, "lost"),
        "the node's count of dropped messages is the receiver's: {out}"
    );
    // A wrong cookie: non-zero exit within 10 s, saying authentication failed.
    let started = std::time::Instant::now();
    let mut bad = Proc::start(
        "wrong cookie",
        example("dist_bench"),
        &[
            "rtt", "--name", "cli3", "--target", target, "--epmd", &addr, "--cookie", "wrong",
            "--count", "10",
        ],
        &[],
    );
    let code = bad.wait_exit();
    assert_ne!(code, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        bad.output().contains("authentication failed"),
        "{}",
        bad.output()
    );
    // watch: kill -9 the server and see the down message.
    let watch = Proc::start(
        "watch",
        example("dist_bench"),
        &[
            "watch", "--name", "cli4", "--target", target, "--epmd", &addr, "--cookie", "c",
        ],
        &[],
    );
    watch.wait_for("watching sink");
    server.signal("KILL");
    watch.wait_for("down reason=noconnection after_ms=");
}

#[test]
fn dist_bench_over_tls_with_generated_certificates() {
    let dir = std::env::temp_dir().join(format!("joerl-certs-{}", std::process::id()));
    let mut gen_certs = Proc::start(
        "gen-certs",
        example("dist_bench"),
        &[
            "gen-certs",
            "--dir",
            dir.to_str().unwrap(),
            "--names",
            "srv,cli",
        ],
        &[],
    );
    let out = gen_certs.expect_success();
    assert!(out.contains("gen-certs dir="), "{out}");
    let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
    for f in ["ca.pem", "srv.pem", "srv.key", "cli.pem", "cli.key"] {
        assert!(dir.join(f).exists(), "{f} written");
    }
    let (ca, srv_cert, srv_key, cli_cert, cli_key) = (
        file("ca.pem"),
        file("srv.pem"),
        file("srv.key"),
        file("cli.pem"),
        file("cli.key"),
    );
    let (_epmd, addr) = epmd();
    let server = Proc::start(
        "serve tls",
        example("dist_bench"),
        &[
            "serve",
            "--name",
            "tls_srv",
            "--epmd",
            &addr,
            "--cookie",
            "c",
            "--tls-cert",
            &srv_cert,
            "--tls-key",
            &srv_key,
            "--tls-ca",
            &ca,
        ],
        &[],
    );
    server.wait_for("serving tls_srv@127.0.0.1");
    let mut t = Proc::start(
        "throughput tls",
        example("dist_bench"),
        &[
            "throughput",
            "--name",
            "tls_cli",
            "--target",
            "tls_srv@127.0.0.1",
            "--epmd",
            &addr,
            "--cookie",
            "c",
            "--count",
            "20000",
            "--size",
            "32",
            "--tls-cert",
            &cli_cert,
            "--tls-key",
            &cli_key,
            "--tls-ca",
            &ca,
        ],
        &[],
    );
    let out = t.expect_success();
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .starts_with("throughput msgs_per_s="),
        "{out}"
    );
    // A plain client is refused, and says why.
    let mut plain = Proc::start(
        "plain against tls",
        example("dist_bench"),
        &[
            "rtt",
            "--name",
            "plain_cli",
            "--target",
            "tls_srv@127.0.0.1",
            "--epmd",
            &addr,
            "--cookie",
            "c",
            "--count",
            "10",
        ],
        &[],
    );
    assert_ne!(plain.wait_exit(), 0);
    assert!(plain.output().contains("TLS"), "{}", plain.output());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_mode_demo_rehomes_migrates_and_drains_within_a_minute() {
    // Built first: the bound is on the demo's run, not on compiling it.
    let binary = example("cluster_mode_demo");
    let start = std::time::Instant::now();
    let mut p = Proc::start("cluster_mode_demo", binary, &[], &[]);
    let out = p.expect_success();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        out.contains("placement: 1000 counters by identity"),
        "{out}"
    );
    assert!(out.contains("failover: cm_c killed"), "{out}");
    assert!(out.contains("its count went on"), "{out}");
    assert!(out.contains("every count kept"), "{out}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("summary: cluster_mode_demo "))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let field = |k: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {summary}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("counters"), 1000);
    assert!(field("rehome_ms") < 30_000, "{summary}");
    assert!(summary.contains("migrate=ok drain=ok"), "{summary}");
}

#[test]
fn placement_bench_prints_its_line() {
    let mut p = Proc::start(
        "placement_bench",
        example("placement_bench"),
        &[
            "--nodes",
            "3",
            "--actors",
            "50",
            "--msgs",
            "2000",
            "--join-ids",
            "1000",
            "--churn-secs",
            "15",
            "--churn-ids",
            "20",
        ],
        &[],
    );
    // Up to five node processes of a debug build, next to the other tests.
    let out = p.expect_success_within(std::time::Duration::from_secs(300));
    let line = out
        .lines()
        .find(|l| l.starts_with("placement nodes=3 actors=50 "))
        .unwrap_or_else(|| panic!("no result line in {out}"));
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .to_string()
    };
    for k in [
        "activate_us_p50",
        "routed_msgs_per_s",
        "direct_msgs_per_s",
        "rehome_ms",
    ] {
        assert!(field(k).parse::<f64>().unwrap() > 0.0, "{k} in {line}");
    }
    let ratio: f64 = field("routed_ratio").parse().unwrap();
    assert!(ratio > 0.0, "{line}");
    // One node of four joined: about a quarter moved, all to it.
    let moved: f64 = field("moved_on_join").parse().unwrap();
    assert!((0.15..0.35).contains(&moved), "{line}");
    // The churn run, across processes, one of them killed with SIGKILL
    // while at-least-once and exactly-once ticks flowed: nothing lost, never
    // two activations of an identity at once. (Exactly-once copies handled
    // twice are printed, not asserted: a tick the killed owner handled
    // before its acknowledgement left is handled again by the new owner, as
    // CLUSTERING.md says.)
    assert_eq!(field("duplicates"), "0", "{line}");
    assert_eq!(field("lost"), "0", "{line}");
    assert_eq!(field("lost_exactly_once"), "0", "{line}");
    field("duplicates_processed_exactly_once")
        .parse::<u64>()
        .unwrap();
    field("lost_at_most_once").parse::<u64>().unwrap();
}

#[test]
fn placement_faults_change_leader_and_refuse_in_a_minority() {
    let mut p = Proc::start("placement_faults", example("placement_faults"), &[], &[]);
    // Three debug node processes and two failure detections.
    let out = p.expect_success_within(std::time::Duration::from_secs(240));
    let kill = out
        .lines()
        .find(|l| l.starts_with("leader_kill "))
        .unwrap_or_else(|| panic!("no leader_kill line in {out}"));
    assert!(kill.contains("old=pf_1@"), "{kill}");
    assert!(kill.contains("new=pf_2@"), "{kill}");
    assert!(kill.contains("answered=30 registered_after=ok"), "{kill}");
    // The new leader's epoch is above the old one's (the fence).
    let epoch = |key: &str| -> u64 {
        kill.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.rsplit_once('/'))
            .map(|(_, e)| e.parse().unwrap())
            .unwrap_or_else(|| panic!("{key} in {kill}"))
    };
    assert!(epoch("new=") > epoch("old="), "{kill}");
    assert!(
        out.contains("minority local=0 answered=0 refused=30"),
        "{out}"
    );
    assert!(out.contains("placement_faults ok"), "{out}");
}

#[test]
fn erlang_interop_answers_a_real_erl_node_and_its_bench_prints_its_line() {
    let (_epmd, addr) = epmd();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let mut node = Proc::start(
        "erlang_interop",
        example("erlang_interop"),
        &[
            "--name",
            "jint",
            "--epmd",
            &addr,
            "--cookie",
            "interop-test",
        ],
        &[],
    );
    node.wait_for("ready jint@127.0.0.1");
    // The header's erl lines, in one erl run: ping, echo, a call, a pid.
    let eval = "J = 'jint@127.0.0.1', \
        R = {net_adm:ping(J), \
             begin {echo, J} ! {self(), hi}, receive {echo, X} -> X after 20000 -> timeout end end, \
             gen_server:call({counter, J}, {add, 5}), \
             is_pid(gen_server:call({counter, J}, self))}, \
        io:format(\"result ~w~n\", [R]), halt().";
    let mut erl = Proc::start(
        "erl",
        "erl".into(),
        &[
            "-noshell",
            "-name",
            "eint@127.0.0.1",
            "-setcookie",
            "interop-test",
            "-eval",
            eval,
        ],
        &[("ERL_EPMD_PORT", &port)],
    );
    let out = erl.expect_success();
    assert!(out.contains("result {pong,hi,5,true}"), "{out}");
    node.signal("TERM");
    assert_eq!(node.wait_exit(), 0, "{}", node.output());
    // The benchmark, short: one line with every figure.
    let mut bench = Proc::start(
        "erlang_interop bench",
        example("erlang_interop"),
        &["bench", "--count", "20000", "--calls", "200"],
        &[],
    );
    let out = bench.expect_success_within(std::time::Duration::from_secs(180));
    let (_, keys) = bench_line(&out, "erlang_interop");
    assert_eq!(
        keys,
        [
            "erl_to_joerl_msgs_per_s",
            "erl_to_erl_msgs_per_s",
            "joerl_to_erl_msgs_per_s",
            "call_rtt_us_p50_erl_joerl",
            "call_rtt_us_p99_erl_joerl",
            "call_rtt_us_p50_erl_erl",
            "call_rtt_us_p99_erl_erl",
            "call_rtt_us_p50_joerl_erl",
            "call_rtt_us_p99_joerl_erl",
        ]
    );
}
