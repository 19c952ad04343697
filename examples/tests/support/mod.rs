//! Running the example programs from tests: locating the built binaries,
//! free loopback ports, and child processes whose output can be waited on.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous deadline for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `target/<profile>` of the running test binary.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// The built example `name`, brought up to date first: `cargo test` builds
/// every example, but not when it was started with a target filter, and a stale
/// binary would test old code.
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let p = target_dir().join("examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|n| n == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "joerl-examples", "--example", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build example {name}");
        built.push(name.to_string());
    }
    assert!(p.exists(), "example {name} is not at {}", p.display());
    p
}

/// The built binary `name` of a workspace member.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "binary {name} is not built at {}; run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// A loopback port that was free a moment ago (bind to port 0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running child process; its stdout and stderr are collected. Killed (and
/// reaped) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `program args...` with `env` added and stdin piped.
    pub fn start(name: &str, program: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(&program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            output,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output contains `text`.
    pub fn wait_for(&self, text: &str) {
        self.wait_until(&format!("{text:?} printed"), |out| out.contains(text));
    }

    /// Writes a line to the process's stdin.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a signal by PID (`INT` for Ctrl-C, `TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        self.wait_exit_within(DEADLINE)
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit_within(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > limit {
                panic!(
                    "{} did not exit within {limit:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit.
    pub fn expect_success(&mut self) -> String {
        self.expect_success_within(DEADLINE)
    }

    /// Waits up to `limit` for a successful exit.
    pub fn expect_success_within(&mut self, limit: Duration) -> String {
        let code = self.wait_exit_within(limit);
        let out = self.output();
        assert_eq!(code, 0, "{} exited with {code}; output:\n{out}", self.name);
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the example `epmd_server` on a free loopback port; returns it and its address.
pub fn epmd() -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let p = Proc::start("epmd_server", example("epmd_server"), &[&addr], &[]);
    p.wait_for("epmd listening");
    (p, addr)
}

/// A UDP loopback port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    /// Waits until `check` holds for the output so far.
    pub fn wait_until(&self, what: &str, mut check: impl FnMut(&str) -> bool) {
        let start = Instant::now();
        loop {
            if check(&self.output()) {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "{}: {what}: not within {DEADLINE:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The benchmark line of `out` that starts with `prefix ` and its keys, in
/// order, each value checked to be a number.
pub fn bench_line(out: &str, prefix: &str) -> (String, Vec<String>) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{prefix} ")))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"));
    let mut keys = Vec::new();
    for kv in line.split(' ').skip(1) {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
        assert!(v.parse::<f64>().is_ok(), "{k}={v} in {line}");
        keys.push(k.to_string());
    }
    (line.to_string(), keys)
}
