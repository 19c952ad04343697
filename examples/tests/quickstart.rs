//! Runs QUICKSTART.md's commands as written, with the EPMD port and the node
//! ports changed to free ones, and checks that each shows what the document says
//! it shows. Editing a command in the document without keeping this test true
//! fails it, as does letting step 4's code drift from `examples/quickstart.rs`.

mod support;

use support::*;

/// The fenced blocks of a Markdown file: (language, body).
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some("")) => out.push(current.take().unwrap()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// A `cargo run` command from the document, turned into the built program and
/// its arguments, with the default EPMD and the listed ports replaced.
fn program(cmd: &str, epmd: &str, ports: &[(&str, String)]) -> (std::path::PathBuf, Vec<String>) {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(
        &words[..2],
        ["cargo", "run"],
        "not a cargo run command: {cmd}"
    );
    let (kind, name) = (words[2], words[3]);
    let mut args: Vec<String> = words
        .iter()
        .skip(4)
        .filter(|w| **w != "--")
        .map(|w| w.to_string())
        .collect();
    for a in args.iter_mut() {
        for (from, to) in ports {
            if a == from {
                *a = to.clone();
            }
        }
    }
    let path = match kind {
        "--bin" => {
            // The daemon binary takes its listen address as its argument.
            args.insert(0, epmd.to_string());
            let exe = std::env::current_exe().unwrap();
            let b = exe.parent().unwrap().parent().unwrap().join(name);
            if b.exists() { b } else { example(name) }
        }
        "--example" => {
            args.push("--epmd".into());
            args.push(epmd.into());
            example(name)
        }
        other => panic!("unexpected cargo run kind {other} in {cmd}"),
    };
    (path, args)
}

fn start(cmd: &str, epmd: &str, ports: &[(&str, String)], cookie: &str) -> Proc {
    let (path, args) = program(cmd, epmd, ports);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(cmd, path, &args, &[("JOERL_COOKIE", cookie)])
}

fn expect_lines(p: &Proc, text: &str) {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        p.wait_for(line);
    }
}

#[test]
fn quickstart_commands_work_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let md = std::fs::read_to_string(root.join("QUICKSTART.md")).expect("QUICKSTART.md");
    let blocks = blocks(&md);
    let sh: Vec<&str> = blocks
        .iter()
        .filter(|(l, _)| l == "sh")
        .map(|(_, b)| b.trim())
        .collect();
    assert_eq!(
        sh,
        [
            "export JOERL_COOKIE=quickstart",
            "cargo run --bin epmd_server",
            "cargo run --example remote_ping_pong -- server",
            "cargo run --example remote_ping_pong -- client",
            "cargo run --example distributed_cluster -- node_a 5001",
            "cargo run --example distributed_cluster -- node_b 5002",
            "cargo run --example quickstart",
        ],
        "QUICKSTART.md's commands changed: update this test with them"
    );
    let cookie = sh[0].strip_prefix("export JOERL_COOKIE=").unwrap();
    // The expected-output blocks, in document order.
    let text: Vec<&str> = blocks
        .iter()
        .filter(|(l, _)| l == "text")
        .map(|(_, b)| b.as_str())
        .collect();
    assert_eq!(
        text.len(),
        6,
        "QUICKSTART.md's expected outputs changed: update this test"
    );

    let epmd_addr = format!("127.0.0.1:{}", free_port());
    let ports = [
        ("5001", free_port().to_string()),
        ("5002", free_port().to_string()),
    ];

    // 1. EPMD.
    let mut epmd = start(sh[1], &epmd_addr, &ports, cookie);
    expect_lines(&epmd, text[0]);
    // 2. Ping-pong.
    let mut server = start(sh[2], &epmd_addr, &ports, cookie);
    expect_lines(&server, text[1]);
    let mut client = start(sh[3], &epmd_addr, &ports, cookie);
    client.expect_success();
    expect_lines(&client, text[2]);
    server.wait_for("ping 1 from <");
    server.signal("INT");
    assert_eq!(server.wait_exit(), 0, "{}", server.output());
    // 3. A node going down.
    let node_a = start(sh[4], &epmd_addr, &ports, cookie);
    node_a.wait_for("joined the cluster");
    let mut node_b = start(sh[5], &epmd_addr, &ports, cookie);
    expect_lines(&node_b, text[3]);
    node_b.signal("INT");
    assert_eq!(node_b.wait_exit(), 0, "{}", node_b.output());
    expect_lines(&node_a, text[4]);
    drop(node_a);
    // 4. The first program.
    let mut first = start(sh[6], &epmd_addr, &ports, cookie);
    first.expect_success();
    expect_lines(&first, text[5]);
    epmd.signal("TERM");
    assert_eq!(epmd.wait_exit(), 0);
}

#[test]
fn quickstart_program_is_the_example_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let md = std::fs::read_to_string(root.join("QUICKSTART.md")).unwrap();
    let rust: Vec<String> = blocks(&md)
        .into_iter()
        .filter(|(l, _)| l == "rust")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(rust.len(), 1, "QUICKSTART.md has one Rust program");
    let file = std::fs::read_to_string(root.join("examples/examples/quickstart.rs")).unwrap();
    assert_eq!(
        rust[0].trim_end(),
        file.trim_end(),
        "QUICKSTART.md step 4 differs from examples/examples/quickstart.rs"
    );
}
