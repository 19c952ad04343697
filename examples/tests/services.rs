//! Cluster services across OS processes: `service_demo node` processes on
//! 127.0.0.1, each with its own EPMD (only gossip tells them where the
//! others are), driven through stdin. Global names, process groups, remote
//! spawn and the service registry, with kills (SIGKILL) and partitions.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// One node process and what it printed at start.
struct Node {
    p: Proc,
    name: String,
    gossip: String,
}

impl Node {
    fn start(short: &str, seed: Option<&Node>, extra: &[&str]) -> Node {
        let seed_addr = seed.map(|s| s.gossip.clone());
        let mut args = vec!["node", "--name", short, "--probe-ms", "300"];
        if let Some(s) = &seed_addr {
            args.extend_from_slice(&["--seed", s]);
        }
        args.extend_from_slice(extra);
        let p = Proc::start(
            short,
            example("service_demo"),
            &args,
            &[("JOERL_COOKIE", "services-test")],
        );
        p.wait_for("ready ");
        let out = p.output();
        let ready = out.lines().find(|l| l.starts_with("ready ")).unwrap();
        let mut w = ready.split_whitespace().skip(1);
        let name = w.next().unwrap().to_string();
        let gossip = w.next().unwrap().to_string();
        Node { p, name, gossip }
    }

    /// Lines of the output that start with `prefix`.
    fn lines(&self, prefix: &str) -> Vec<String> {
        self.p
            .output()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Types `cmd` and waits for the next line starting with `answer`.
    fn ask(&mut self, cmd: &str, answer: &str) -> String {
        let before = self.lines(answer).len();
        self.p.type_line(cmd);
        let what = format!("an answer {answer:?} to {cmd:?}");
        self.p.wait_until(&what, |out| {
            out.lines().filter(|l| l.starts_with(answer)).count() > before
        });
        self.lines(answer)[before].clone()
    }

    /// Asks `cmd` until its answer satisfies `ok` (generous deadline).
    fn ask_until(&mut self, cmd: &str, answer: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let a = self.ask(cmd, answer);
            if ok(&a) {
                return a;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: {cmd:?} never answered as wanted; last: {a}\n{}",
                self.name,
                self.p.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Pid of a new actor `name` of `kind`.
    fn actor(&mut self, name: &str, kind: &str) -> String {
        let a = self.ask(&format!("actor {name} {kind}"), &format!("actor {name} "));
        a.rsplit(' ').next().unwrap().to_string()
    }

    fn wait_line(&self, line: &str) {
        self.p.wait_for(line);
    }
}

/// `n` nodes that see each other as members.
fn cluster(prefix: &str, n: usize, extra: &[&str]) -> Vec<Node> {
    let first = Node::start(&format!("{prefix}1"), None, extra);
    let mut nodes = vec![first];
    for i in 2..=n {
        let node = Node::start(&format!("{prefix}{i}"), Some(&nodes[0]), extra);
        nodes.push(node);
    }
    for node in nodes.iter_mut() {
        node.ask_until("members", "members ", |a| {
            a.starts_with(&format!("members {} ", n - 1)) && !a.contains("Suspected")
        });
    }
    nodes
}

/// Drops gossip between the first two nodes and the third ({1, 2} | {3}).
fn split_off_the_third(n: &mut [Node]) {
    let (g1, g2, g3) = (
        n[0].gossip.clone(),
        n[1].gossip.clone(),
        n[2].gossip.clone(),
    );
    n[0].ask(&format!("partition {g3}"), "partition");
    n[1].ask(&format!("partition {g3}"), "partition");
    n[2].ask(&format!("partition {g1},{g2}"), "partition");
}

fn quit(nodes: Vec<Node>) {
    for mut n in nodes {
        n.p.type_line("quit");
        n.p.wait_exit();
    }
}

#[test]
fn global_names_are_unique_and_go_with_their_process_and_node() {
    let mut n = cluster("gn", 3, &[]);
    let a1 = n[0].actor("a1", "echo");
    n[1].actor("b1", "echo");
    n[2].actor("c1", "echo");
    assert_eq!(
        n[0].ask("global_register boss a1", "global_register boss"),
        "global_register boss ok"
    );
    for node in n.iter_mut() {
        node.ask_until("global_whereis boss", "global_whereis boss", |a| {
            a.ends_with(&a1)
        });
    }
    // Taken: the error names the holder and its node.
    let taken = n[1].ask("global_register boss b1", "global_register boss");
    assert!(taken.contains("taken by") && taken.contains(&a1), "{taken}");
    // Called by name from another node.
    let call = n[2].ask("global_call boss hello", "global_call boss");
    assert!(call.contains("hello") && call.contains(&a1), "{call}");
    // The holder exits: gone everywhere.
    n[0].ask("kill a1", "kill a1");
    for node in n.iter_mut() {
        node.ask_until("global_whereis boss", "global_whereis boss", |a| {
            a.ends_with("none")
        });
    }
    // The holder's node is killed: its names go everywhere.
    let c1 = n[2].actor("c2", "echo");
    n[2].ask("global_register on_c c2", "global_register on_c");
    for node in n.iter_mut().take(2) {
        node.ask_until("global_whereis on_c", "global_whereis on_c", |a| {
            a.ends_with(&c1)
        });
    }
    let mut c = n.pop().unwrap();
    c.p.signal("KILL");
    c.p.wait_exit();
    for node in n.iter_mut() {
        node.ask_until("global_whereis on_c", "global_whereis on_c", |a| {
            a.ends_with("none")
        });
    }
    // ... and free again.
    assert_eq!(
        n[1].ask("global_register on_c b1", "global_register on_c"),
        "global_register on_c ok"
    );
    quit(n);
}

#[test]
fn a_name_registered_on_both_sides_of_a_partition_has_one_holder_after_the_heal() {
    let mut n = cluster("gp", 3, &[]);
    // {1, 2} | {3}
    split_off_the_third(&mut n);
    n[0].ask_until("members", "members", |a| a.contains("gp3@127.0.0.1:Failed"));
    n[2].ask_until("members", "members", |a| {
        a.contains("gp1@127.0.0.1:Failed") && a.contains("gp2@127.0.0.1:Failed")
    });
    // Both sides register "x": the majority side first.
    let first = n[1].actor("x1", "echo");
    assert_eq!(
        n[1].ask("global_register x x1", "global_register x"),
        "global_register x ok"
    );
    std::thread::sleep(Duration::from_millis(20));
    let second = n[2].actor("x3", "echo");
    assert_eq!(
        n[2].ask("global_register x x3", "global_register x"),
        "global_register x ok"
    );
    n[0].ask_until("global_whereis x", "global_whereis x", |a| {
        a.ends_with(&first)
    });
    // Heal: one holder everywhere, the older; the resolver killed the other.
    for node in n.iter_mut() {
        node.ask("partition none", "partition");
    }
    for node in n.iter_mut() {
        node.ask_until("global_whereis x", "global_whereis x", |a| {
            a.ends_with(&first)
        });
    }
    n[2].wait_line("exit x3 global_name_conflict: x");
    let _ = second;
    quit(n);
}

#[test]
fn groups_across_three_nodes_clean_up_after_exits_kills_and_merge_after_a_partition() {
    let mut n = cluster("pg", 3, &[]);
    n[2].ask("pg_monitor workers", "pg_monitor workers");
    let a = n[0].actor("a", "echo");
    let b = n[1].actor("b", "echo");
    let c = n[2].actor("c", "echo");
    n[0].ask("pg_join workers a", "pg_join workers");
    n[1].ask("pg_join workers b", "pg_join workers");
    n[2].ask("pg_join workers c", "pg_join workers");
    for node in n.iter_mut() {
        node.ask_until("pg_members workers", "pg_members workers", |l| {
            l.starts_with("pg_members workers 3 ")
        });
    }
    n[0].ask("pg_leave workers a", "pg_leave workers");
    n[1].ask("kill b", "kill b");
    for node in n.iter_mut() {
        node.ask_until("pg_members workers", "pg_members workers", |l| {
            l == format!("pg_members workers 1 {c}")
        });
    }
    // The watcher on the third node saw it all, in order for each member.
    let events = n[2].lines("pg_event workers");
    let pos = |e: &str| {
        events
            .iter()
            .position(|l| l == e)
            .unwrap_or_else(|| panic!("no {e:?} in {events:?}"))
    };
    assert!(
        pos(&format!("pg_event workers joined {a}")) < pos(&format!("pg_event workers left {a}"))
    );
    assert!(
        pos(&format!("pg_event workers joined {b}")) < pos(&format!("pg_event workers left {b}"))
    );
    pos(&format!("pg_event workers joined {c}"));

    // A partition: each side keeps its own members; after the heal both
    // sides' members are seen again (no group resurrected empty).
    split_off_the_third(&mut n);
    n[0].ask_until("pg_members workers", "pg_members workers", |l| {
        l.starts_with("pg_members workers 0")
    });
    let a2 = n[0].actor("a2", "echo");
    n[0].ask("pg_join workers a2", "pg_join workers");
    for node in n.iter_mut() {
        node.ask("partition none", "partition");
    }
    for node in n.iter_mut() {
        node.ask_until("pg_members workers", "pg_members workers", |l| {
            let mut want = [a2.clone(), c.clone()];
            want.sort();
            l == format!("pg_members workers 2 {}", want.join(","))
        });
    }
    // A killed node's members go everywhere.
    let mut third = n.pop().unwrap();
    third.p.signal("KILL");
    third.p.wait_exit();
    for node in n.iter_mut() {
        node.ask_until("pg_members workers", "pg_members workers", |l| {
            l == format!("pg_members workers 1 {a2}")
        });
    }
    quit(n);
}

#[test]
fn remote_spawn_errors_are_typed_and_a_linked_spawn_reports_its_exit() {
    let mut n = cluster("rs", 2, &[]);
    let other = n[1].name.clone();
    let ok = n[0].ask(&format!("spawn_on {other} worker 1"), "spawn_on");
    assert!(ok.starts_with("spawn_on ok <"), "{ok}");
    let unknown = n[0].ask(&format!("spawn_on_kind {other} no::Such"), "spawn_on_kind");
    assert!(
        unknown.contains("UnknownKind") && unknown.contains("no::Such"),
        "{unknown}"
    );
    let bad = n[0].ask(&format!("spawn_on {other} bad 0"), "spawn_on");
    assert!(bad.contains("BadArgs"), "{bad}");
    let panics = n[0].ask(&format!("spawn_on {other} panics 0"), "spawn_on");
    assert!(panics.contains("StartFailed"), "{panics}");
    let down = n[0].ask("spawn_on nowhere@127.0.0.1 worker 1", "spawn_on");
    assert!(down.contains("NodeDown"), "{down}");
    // Linked across nodes, trapping exits: the child's exit arrives as a message.
    let linked = n[0].ask(&format!("spawn_link_on {other} worker 7"), "spawn_link_on");
    assert!(linked.starts_with("spawn_link_on ok <"), "{linked}");
    let child = linked.rsplit(' ').next().unwrap().to_string();
    n[0].wait_line(&format!("linked_exit {child} done 7"));
    quit(n);
}

/// `calls` answered by each instance: `PID=count`.
fn by_instance(line: &str) -> Vec<(String, usize)> {
    line.split_whitespace()
        .last()
        .unwrap()
        .split(',')
        .filter(|s| s.contains('='))
        .map(|s| {
            let (p, c) = s.split_once('=').unwrap();
            (p.to_string(), c.parse().unwrap())
        })
        .collect()
}

#[test]
fn service_calls_balance_skip_failed_nodes_time_out_and_retry_idempotent_calls() {
    let mut n = cluster("sv", 3, &[]);
    let mut pids = Vec::new();
    for (i, node) in n.iter_mut().enumerate() {
        pids.push(node.actor("e", "echo"));
        node.ask(
            &format!("service_register echo e zone=z{i}"),
            "service_register",
        );
    }
    n[0].ask_until("service_resolve echo", "service_resolve echo", |l| {
        l == "service_resolve echo 3"
    });
    let resolved = n[0].lines("instance echo");
    assert!(
        resolved
            .iter()
            .any(|l| l.contains("zone=z2") && l.contains("sv3@127.0.0.1")),
        "{resolved:?}"
    );

    // Round robin visits every instance, evenly.
    let rr = n[0].ask(
        "service_calls echo round_robin 9 5000",
        "service_calls echo",
    );
    let counts = by_instance(&rr);
    assert_eq!(counts.len(), 3, "{rr}");
    assert!(counts.iter().all(|(_, c)| *c == 3), "{rr}");
    // Prefer local: this node's.
    let local = n[1].ask(
        "service_calls echo prefer_local 5 5000",
        "service_calls echo",
    );
    assert_eq!(by_instance(&local), [(pids[1].clone(), 5)], "{local}");

    // Least outstanding avoids a slow instance: four flows of calls from one
    // node for two seconds; the slow instance (300 ms a call) gets a call
    // only when it has no more waiting than the fast one, so a small share.
    let slow = n[0].actor("slow", "slow 300");
    n[0].ask("service_register lo slow", "service_register");
    let fast = n[1].actor("fast", "echo");
    n[1].ask("service_register lo fast", "service_register");
    n[0].ask_until("service_resolve lo", "service_resolve lo", |l| {
        l == "service_resolve lo 2"
    });
    for _ in 0..4 {
        n[0].ask(
            "service_flow lo least_outstanding 2000",
            "service_flow lo started",
        );
    }
    n[0].p.wait_until("four flows end", |o| {
        o.matches("service_flow lo done").count() == 4
    });
    let (mut to_slow, mut to_fast) = (0u64, 0u64);
    for done in n[0].lines("service_flow lo done") {
        assert!(done.contains(" failed=0 "), "{done}");
        let by = done
            .split(" by=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        for pc in by.split(',').filter(|s| !s.is_empty()) {
            let (p, c) = pc.split_once('=').unwrap();
            let c: u64 = c.parse().unwrap();
            if p == slow {
                to_slow += c;
            } else if p == fast {
                to_fast += c;
            }
        }
    }
    assert!(
        to_slow * 20 < to_slow + to_fast,
        "least outstanding sent {to_slow} calls to the slow instance and {to_fast} to the fast one"
    );

    // A call that gets no reply times out, typed.
    n[2].actor("stuck", "stuck");
    n[2].ask("service_register stuck stuck", "service_register");
    n[0].ask_until("service_resolve stuck", "service_resolve stuck", |l| {
        l == "service_resolve stuck 1"
    });
    let t = n[0].ask("service_call stuck random 300", "service_call stuck");
    assert!(t.starts_with("service_call stuck error timeout"), "{t}");

    // A node is killed while idempotent calls flow: none fails, and calls
    // stop going to it.
    n[0].ask(
        "service_flow echo round_robin 8000 idempotent",
        "service_flow echo started",
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut third = n.pop().unwrap();
    third.p.signal("KILL");
    third.p.wait_exit();
    n[0].p
        .wait_until("the flow ends", |o| o.contains("service_flow echo done"));
    let done = n[0].lines("service_flow echo done").pop().unwrap();
    assert!(done.contains("failed=0"), "{done}\n{}", n[0].p.output());
    // The killed node's instance got calls before the kill only; the others after.
    let last: Vec<(String, u128)> = done
        .rsplit("last=")
        .next()
        .unwrap()
        .split(',')
        .map(|s| {
            let (p, t) = s.split_once('@').unwrap();
            (p.to_string(), t.parse().unwrap())
        })
        .collect();
    let dead_last = last.iter().find(|(p, _)| *p == pids[2]).map(|(_, t)| *t);
    let live_last = last
        .iter()
        .filter(|(p, _)| *p != pids[2])
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    assert!(dead_last.is_none_or(|d| d < live_last), "{done}");
    // No instance on the failed node is chosen.
    n[0].ask_until("members", "members", |a| a.contains("sv3@127.0.0.1:Failed"));
    let after = n[0].ask("service_calls echo random 20 5000", "service_calls echo");
    assert!(
        after.contains("ok=20 failed=0") && !after.contains(&pids[2]),
        "{after}"
    );
    quit(n);
}

#[test]
fn services_bench_prints_its_line() {
    let mut p = Proc::start(
        "services_bench",
        example("services_bench"),
        &["--samples", "10", "--calls", "100"],
        &[],
    );
    let out = p.expect_success();
    let (line, keys) = bench_line(&out, "services");
    assert_eq!(
        keys,
        [
            "nodes",
            "global_register_us_p50",
            "global_visible_ms_p99",
            "pg_join_visible_ms_p99",
            "service_call_us_p50",
            "direct_call_us_p50",
            "call_ratio",
            "failover_ms",
            "spawn_on_us_p50"
        ]
    );
    assert!(line.starts_with("services nodes=5 "), "{line}");
    let failover = out
        .lines()
        .find(|l| l.starts_with("services_failover "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(failover.contains(" failed_calls=0 "), "{failover}");
}

#[test]
fn the_service_demo_runs_and_prints_its_summary() {
    let mut p = Proc::start("service_demo", example("service_demo"), &[], &[]);
    let out = p.expect_success();
    for line in [
        "Echo reply from svc3@127.0.0.1: hello",
        "Counter (prefer local) on svc1@127.0.0.1: 5",
        "is taken by",
        "Event: echo instance",
        "Health: 2 of 2 members active",
        "Summary: 3 nodes",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}
