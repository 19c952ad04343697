//! `epmd_server` installed as `epmd`: linked into a temporary directory under
//! that name and driven exactly as Erlang drives its own epmd, by Erlang's
//! `epmd` client (`-names`, `-kill`, `-stop`) and by real `erl` nodes, with the
//! outputs of both clients compared byte for byte.
//!
//! The tests need `erl` and `epmd` on the PATH and are skipped (with a line
//! saying so) without them. Every daemon listens on 127.0.0.1 and ::1 on a port
//! chosen here and checked free on both; every process started here is stopped
//! by its handle or its process id.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ChildGuard;
use joerl_epmd::protocol::{self, Alive2Reply};
use joerl_epmd::{Alive2Request, DistInfo, EpmdClient};

const BIN: &str = env!("CARGO_BIN_EXE_epmd_server");
/// Generous deadline for anything but `erl` on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for things that wait on `erl` starting up.
const ERL_DEADLINE: Duration = Duration::from_secs(60);
const COOKIE: &str = "joerl_dropin_cookie";

/// Erlang's programs, found on the PATH.
struct Erlang {
    epmd: PathBuf,
    erl: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Erlang's `epmd` and `erl`, or `None` (after printing why) when either is missing.
fn erlang_or_skip(test: &str) -> Option<Erlang> {
    match (on_path("epmd"), on_path("erl")) {
        (Some(epmd), Some(erl)) => Some(Erlang { epmd, erl }),
        _ => {
            println!(
                "skipping {test}: Erlang's `epmd` and `erl` are not on the PATH \
                 (Debian: `apt-get install erlang-base`)"
            );
            None
        }
    }
}

/// A directory of its own holding our binary as `epmd`; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("joerl_epmd_{tag}_{}_{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(BIN, dir.join("epmd")).unwrap();
        Self(dir)
    }

    /// Our binary, called `epmd`.
    fn epmd(&self) -> PathBuf {
        self.0.join("epmd")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// PATH with this directory first.
    fn search_path(&self) -> String {
        format!(
            "{}:{}",
            self.0.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port free on 127.0.0.1 (and on ::1 where IPv6 works) a moment ago; never 4369.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port != 4369 && (!ipv6_loopback() || TcpListener::bind(("::1", port)).is_ok()) {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it gives `Some`, or panics after `deadline`.
fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command with no ERL_EPMD_* variables from our own environment.
fn command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .env_remove("ERL_EPMD_ADDRESS")
        .env_remove("ERL_EPMD_RELAXED_COMMAND_CHECK")
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end (killed and failing after `DEADLINE`).
fn run(what: &str, mut command: Command) -> Output {
    let mut child = ChildGuard::spawn(what, command.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let started = Instant::now();
    while child.child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.child.take().unwrap().wait_with_output().unwrap()
}

/// Runs an epmd client (`program`) with `args` against the daemon on `port`.
fn client(program: &Path, port: u16, args: &[&str]) -> Output {
    let port = port.to_string();
    let all: Vec<&str> = ["-port", port.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run(
        &format!("{} {all:?}", program.display()),
        command(program, &all),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Both clients run with `args`: they exit alike and print the same bytes;
/// returns what they printed on stdout.
fn both_clients(erlang: &Erlang, dir: &TempDir, port: u16, args: &[&str]) -> (String, i32) {
    let real = client(&erlang.epmd, port, args);
    let ours = client(&dir.epmd(), port, args);
    assert_eq!(
        (text(&ours.stdout), text(&ours.stderr), ours.status.code()),
        (text(&real.stdout), text(&real.stderr), real.status.code()),
        "`epmd {args:?}`: ours (left) differs from Erlang's (right)"
    );
    (text(&real.stdout), real.status.code().unwrap())
}

/// One raw NAMES_REQ to `addr`: the reply, if the daemon answers.
fn names_at(addr: SocketAddr) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream.write_all(&[0, 1, protocol::NAMES_REQ]).ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    (reply.len() >= 4).then_some(reply)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Our `epmd` in the foreground on 127.0.0.1 and ::1 (`-address 127.0.0.1`),
/// on a free port, with `args` and `env`; waits until it answers.
fn start_our_epmd(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> (ChildGuard, u16) {
    for _ in 0..5 {
        let port = free_port();
        let port_text = port.to_string();
        let all: Vec<&str> = ["-port", port_text.as_str(), "-address", "127.0.0.1", "-d"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let log = std::fs::File::create(dir.path("epmd.log")).unwrap();
        let mut command = command(&dir.epmd(), &all);
        command
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        let mut daemon = ChildGuard::spawn("our epmd", &mut command);
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if daemon.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                // The port was taken meanwhile: epmd exits; try another one.
                break;
            }
            if names_at(loopback(port)).is_some() {
                return (daemon, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!(
        "our epmd did not start; its log:\n{}",
        std::fs::read_to_string(dir.path("epmd.log")).unwrap_or_default()
    );
}

/// Waits for the foreground daemon to exit by itself; returns its exit status.
fn wait_exit(daemon: &mut ChildGuard) -> std::process::ExitStatus {
    let child = daemon.child.as_mut().unwrap();
    wait_for("our epmd to exit", DEADLINE, || child.try_wait().unwrap())
}

/// A real `erl` node `name@localhost` using the epmd on `port`, with `dir`
/// first in its PATH.
///
/// When a distributed `erl` starts epmd itself, erlexec runs
/// `"<its own bindir>/epmd" -daemon` through `system()` (`start_epmd` in
/// `erts/etc/common/erlexec.c`), not a PATH lookup, and it puts its bindir at
/// the front of PATH as well; so PATH alone cannot make `erl` start our epmd.
/// Here ours already runs and `-start_epmd false` keeps `erl` from starting
/// Erlang's; `erl_starts_our_epmd_given_with_its_epmd_flag` shows erlexec's
/// `-epmd PROGRAM`, which does start ours.
fn start_erl(
    erlang: &Erlang,
    dir: &TempDir,
    name: &str,
    port: u16,
    epmd: Option<&str>,
) -> ChildGuard {
    let sname = format!("{name}@localhost");
    let mut args = vec![
        "-sname",
        &sname,
        "-setcookie",
        COOKIE,
        "-noshell",
        "-kernel",
        "inet_dist_use_interface",
        "{127,0,0,1}",
    ];
    match epmd {
        Some(program) => args.extend(["-epmd", program]),
        None => args.extend(["-start_epmd", "false"]),
    }
    let mut command = command(&erlang.erl, &args);
    command
        .env("ERL_EPMD_PORT", port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("PATH", dir.search_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(&format!("erl node {name}"), &mut command)
}

/// The header line epmd's `-names` prints.
fn header(port: u16) -> String {
    format!("epmd: up and running on port {port} with data:\n")
}

/// Waits until Erlang's `epmd -names` lists `name`; returns the node's port.
fn wait_listed(erlang: &Erlang, port: u16, name: &str) -> u16 {
    let prefix = format!("name {name} at port ");
    wait_for(&format!("{name} in epmd -names"), ERL_DEADLINE, || {
        let printed = text(&client(&erlang.epmd, port, &["-names"]).stdout);
        printed
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    })
}

fn wait_unlisted(erlang: &Erlang, port: u16, name: &str) {
    let line = format!("name {name} at port ");
    wait_for(
        &format!("{name} to leave epmd -names"),
        ERL_DEADLINE,
        || {
            let printed = text(&client(&erlang.epmd, port, &["-names"]).stdout);
            (printed.starts_with("epmd: up and running") && !printed.contains(&line)).then_some(())
        },
    );
}

/// The creation of `name` in the daemon on `port` (joerl's lookup).
fn creation(port: u16, name: &str) -> Option<u32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(EpmdClient::new(loopback(port)).lookup(name))
        .unwrap()
        .map(|node| node.creation)
}

/// Holds an ALIVE2 registration of `name` on a socket of the test's own.
fn hold_alive2(port: u16, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(loopback(port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = protocol::Request::Alive2(Alive2Request {
        port: 7300,
        name: name.into(),
        dist: DistInfo::default(),
    });
    stream.write_all(&request.encode().unwrap()).unwrap();
    let mut reply = Vec::new();
    while Alive2Reply::decode(&reply).unwrap().is_none() {
        let mut chunk = [0u8; 8];
        let n = stream.read(&mut chunk).expect("ALIVE2 reply in time");
        assert_ne!(n, 0, "closed before replying");
        reply.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(reply[1], 0, "registration of {name} refused: {reply:?}");
    stream
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaps).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A detached daemon of ours, known by its pid file: stopped with SIGTERM (by
/// its process id) if a test ends without having stopped it.
struct DetachedDaemon {
    pid: u32,
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a process id in the pid file")
}

impl DetachedDaemon {
    fn from_pid_file(path: &Path) -> Self {
        Self {
            pid: read_pid(path),
        }
    }

    fn is_ours(&self) -> bool {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid));
        exe.ok() == std::fs::canonicalize(BIN).ok()
    }
}

impl Drop for DetachedDaemon {
    fn drop(&mut self) {
        if !process_gone(self.pid) && self.is_ours() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
    }
}

#[test]
fn erlang_tools_and_a_real_node_use_our_epmd() {
    let Some(erlang) = erlang_or_skip("erlang_tools_and_a_real_node_use_our_epmd") else {
        return;
    };
    let dir = TempDir::new("names");
    let (mut daemon, port) = start_our_epmd(&dir, &[], &[]);
    // -address 127.0.0.1 means 127.0.0.1 and ::1 (Erlang's client tries ::1 first).
    if ipv6_loopback() {
        assert!(names_at(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).is_some());
    }

    let (printed, status) = both_clients(&erlang, &dir, port, &["-names"]);
    assert_eq!((printed, status), (header(port), 0));

    let node = start_erl(&erlang, &dir, "dropin_a", port, None);
    let node_port = wait_listed(&erlang, port, "dropin_a");
    let (printed, status) = both_clients(&erlang, &dir, port, &["-names"]);
    assert_eq!(
        (printed, status),
        (
            format!("{}name dropin_a at port {node_port}\n", header(port)),
            0
        )
    );

    // Without -relaxed_command_check: no kill while a node lives, no stop.
    let (printed, status) = both_clients(&erlang, &dir, port, &["-kill"]);
    assert_eq!(
        (printed.as_str(), status),
        ("Killing not allowed - living nodes in database.\n", 1)
    );
    let (printed, status) = both_clients(&erlang, &dir, port, &["-stop", "dropin_a"]);
    assert_eq!(
        (printed.as_str(), status),
        ("epmd: local epmd responded with <>\n", 1)
    );
    assert_eq!(wait_listed(&erlang, port, "dropin_a"), node_port);

    // The node goes with its connection; then Erlang's -kill stops ours.
    drop(node);
    wait_unlisted(&erlang, port, "dropin_a");
    let killed = client(&erlang.epmd, port, &["-kill"]);
    assert_eq!(
        (text(&killed.stdout).as_str(), killed.status.code()),
        ("Killed\n", Some(0))
    );
    assert!(wait_exit(&mut daemon).success());

    // No daemon: the same complaint and status from both.
    let real = client(&erlang.epmd, port, &["-names"]);
    let ours = client(&dir.epmd(), port, &["-names"]);
    assert_eq!(
        (text(&real.stderr).as_str(), real.status.code()),
        ("epmd: Cannot connect to local epmd\n", Some(1))
    );
    assert_eq!(
        (ours.stdout, ours.stderr, ours.status.code()),
        (real.stdout, real.stderr, real.status.code())
    );
}

#[test]
fn relaxed_command_check_allows_stop_and_kill() {
    let Some(erlang) = erlang_or_skip("relaxed_command_check_allows_stop_and_kill") else {
        return;
    };
    let dir = TempDir::new("relaxed");
    let (mut daemon, port) = start_our_epmd(&dir, &["-relaxed_command_check"], &[]);
    let node = start_erl(&erlang, &dir, "dropin_b", port, None);
    wait_listed(&erlang, port, "dropin_b");
    let first = creation(port, "dropin_b").expect("dropin_b registered");

    // -stop unregisters the node and closes its connection; an Erlang node
    // then registers again (it does so with Erlang's epmd as well), with the
    // next creation.
    let stopped = client(&erlang.epmd, port, &["-stop", "dropin_b"]);
    assert_eq!(
        (text(&stopped.stdout).as_str(), stopped.status.code()),
        ("STOPPED\n", Some(0))
    );
    wait_for("dropin_b to register again", ERL_DEADLINE, || {
        creation(port, "dropin_b").filter(|c| *c != first)
    });

    // A registration that does not come back: stopped, its connection closed,
    // gone from -names; stopping it again finds nothing.
    let mut held = hold_alive2(port, "held_by_test");
    let (printed, status) = both_clients(&erlang, &dir, port, &["-names"]);
    assert!(
        printed.contains("name held_by_test at port 7300\n"),
        "{printed}"
    );
    assert_eq!(status, 0);
    let stopped = client(&dir.epmd(), port, &["-stop", "held_by_test"]);
    assert_eq!(
        (text(&stopped.stdout).as_str(), stopped.status.code()),
        ("STOPPED\n", Some(0))
    );
    let mut rest = Vec::new();
    held.read_to_end(&mut rest)
        .expect("the daemon closes the stopped node's connection");
    assert_eq!(rest, b"");
    let (printed, _) = both_clients(&erlang, &dir, port, &["-names"]);
    assert!(!printed.contains("held_by_test"), "{printed}");
    let (printed, status) = both_clients(&erlang, &dir, port, &["-stop", "held_by_test"]);
    assert_eq!((printed.as_str(), status), ("NOEXIST\n", 0));

    // -kill with a live node is allowed now.
    let killed = client(&dir.epmd(), port, &["-kill"]);
    assert_eq!(
        (text(&killed.stdout).as_str(), killed.status.code()),
        ("Killed\n", Some(0))
    );
    assert!(wait_exit(&mut daemon).success());
    drop(node);
}

#[test]
fn daemon_mode_detaches_and_stops_on_kill() {
    let Some(erlang) = erlang_or_skip("daemon_mode_detaches_and_stops_on_kill") else {
        return;
    };
    let dir = TempDir::new("daemon");
    let port = free_port();
    let pid_file = dir.path("epmd.pid");
    let pid_arg = pid_file.to_str().unwrap();
    // Port and addresses from epmd's variables this time.
    let start = || {
        let mut command = command(&dir.epmd(), &["-daemon", "--pid-file", pid_arg]);
        command
            .env("ERL_EPMD_PORT", port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        run("our epmd -daemon", command)
    };
    let foreground = start();
    assert_eq!(
        (
            text(&foreground.stdout),
            text(&foreground.stderr),
            foreground.status.code()
        ),
        (String::new(), String::new(), Some(0))
    );
    let daemon = DetachedDaemon::from_pid_file(&pid_file);
    assert!(!process_gone(daemon.pid) && daemon.is_ours());
    for fd in 0..=2 {
        assert_eq!(
            std::fs::read_link(format!("/proc/{}/fd/{fd}", daemon.pid)).unwrap(),
            Path::new("/dev/null")
        );
    }
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", daemon.pid)).unwrap(),
        Path::new("/")
    );

    // The foreground exited once the daemon listened: it answers at once.
    let names = client(&erlang.epmd, port, &["-names"]);
    assert_eq!(
        (text(&names.stdout), names.status.code()),
        (header(port), Some(0))
    );
    // A second `epmd -daemon` (as every `erl` starts) leaves it alone and exits with 0.
    let second = start();
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(read_pid(&pid_file), daemon.pid);

    let killed = client(&erlang.epmd, port, &["-kill"]);
    assert_eq!(
        (text(&killed.stdout).as_str(), killed.status.code()),
        ("Killed\n", Some(0))
    );
    wait_for("the daemon's process to end", DEADLINE, || {
        process_gone(daemon.pid).then_some(())
    });
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
}

#[test]
fn erl_starts_our_epmd_given_with_its_epmd_flag() {
    let Some(erlang) = erlang_or_skip("erl_starts_our_epmd_given_with_its_epmd_flag") else {
        return;
    };
    let dir = TempDir::new("erlstarts");
    let port = free_port();
    let pid_file = dir.path("epmd.pid");
    // erlexec hands this string to system(); ERL_EPMD_PORT and ERL_EPMD_ADDRESS
    // reach our epmd through erl's environment.
    let program = format!(
        "{} -daemon --pid-file {}",
        dir.epmd().display(),
        pid_file.display()
    );
    let node = start_erl(&erlang, &dir, "dropin_c", port, Some(&program));
    let node_port = wait_listed(&erlang, port, "dropin_c");
    let daemon = DetachedDaemon::from_pid_file(&pid_file);
    assert!(daemon.is_ours(), "the epmd erl started is not ours");
    let (printed, _) = both_clients(&erlang, &dir, port, &["-names"]);
    assert_eq!(
        printed,
        format!("{}name dropin_c at port {node_port}\n", header(port))
    );
    drop(node);
    wait_unlisted(&erlang, port, "dropin_c");
    let killed = client(&erlang.epmd, port, &["-kill"]);
    assert_eq!(text(&killed.stdout), "Killed\n");
    wait_for("the daemon's process to end", DEADLINE, || {
        process_gone(daemon.pid).then_some(())
    });
}

/// Whether the daemon has closed `stream` (without waiting).
fn closed_now(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let closed = match stream.read(&mut probe) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected reply to a partial request"),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Blocks until the daemon closes `stream`; returns when that was.
fn wait_closed(stream: &mut TcpStream) -> Instant {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert_eq!(rest, b""),
        Err(err) => assert!(
            !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "not closed within {DEADLINE:?}"
        ),
    }
    Instant::now()
}

#[test]
fn packet_timeout_counts_from_the_last_byte_received() {
    let timeout = Duration::from_secs(3);
    let dir = TempDir::new("packet");
    let (_daemon, port) = start_our_epmd(&dir, &["-packet_timeout", "3"], &[]);

    // Silent: closed after the timeout, long before epmd's default of 60 s.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(loopback(port)).unwrap();
    assert!(wait_closed(&mut silent) - opened >= timeout);

    // A request whose bytes trickle in, one every 500 ms for 8 s: every byte
    // is activity, so the connection stays; after the last one, the timeout.
    let mut slow = TcpStream::connect(loopback(port)).unwrap();
    slow.write_all(&[0, 100]).unwrap();
    let trickle = Instant::now();
    while trickle.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(500));
        assert!(!closed_now(&mut slow), "closed while bytes kept arriving");
        slow.write_all(b"z").unwrap();
    }
    let last_byte = Instant::now();
    assert!(wait_closed(&mut slow) - last_byte >= timeout);
}

/// Seconds from sending NAMES_REQ on a new connection to the end of the reply.
fn names_round_trip(port: u16) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let reply = names_at(loopback(port)).expect("a NAMES reply");
    (started.elapsed(), reply)
}

#[test]
fn delay_accept_and_delay_write_hold_the_reply() {
    let Some(erlang) = erlang_or_skip("delay_accept_and_delay_write_hold_the_reply") else {
        return;
    };
    let dir = TempDir::new("delays");
    for flag in ["-delay_accept", "-delay_write"] {
        let (mut daemon, port) = start_our_epmd(&dir, &[flag, "2"], &[]);
        let (took, reply) = names_round_trip(port);
        assert_eq!(reply, u32::from(port).to_be_bytes(), "{flag}");
        assert!(
            took >= Duration::from_secs(2),
            "{flag}: reply after {took:?}"
        );
        // Erlang's client just waits.
        let names = client(&erlang.epmd, port, &["-names"]);
        assert_eq!(text(&names.stdout), header(port), "{flag}");
        let killed = client(&erlang.epmd, port, &["-kill"]);
        assert_eq!(text(&killed.stdout), "Killed\n", "{flag}");
        assert!(wait_exit(&mut daemon).success());
    }
}

/// epmd's usage text without the lines about `-systemd`, which only an epmd
/// built with systemd support has.
fn without_systemd(usage: &[u8]) -> String {
    let usage = text(usage);
    let lines: Vec<&str> = usage.lines().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == "    -systemd" {
            i += 3;
            continue;
        }
        kept.push(lines[i]);
        i += 1;
    }
    kept.join("\n")
}

#[test]
fn bad_command_lines_get_epmds_usage() {
    let Some(erlang) = erlang_or_skip("bad_command_lines_get_epmds_usage") else {
        return;
    };
    let dir = TempDir::new("usage");
    let long_name = "n".repeat(1001);
    for args in [
        &["-bogus"][..],
        &["--help"],
        &["-port"],
        &["-port", "0"],
        &["-port", "x", "-names"],
        &["-names", "-port", "4400"],
        &["-packet_timeout", "0"],
        &["-delay_accept", "soon"],
        &["-delay_write"],
        &["-address"],
        &["-kill", "now"],
        &["-stop"],
        &["-stop", "a", "b"],
        &["-d", "-x"],
    ] {
        let real = run("epmd", command(&erlang.epmd, args));
        let ours = run("our epmd", command(&dir.epmd(), args));
        assert_eq!(real.status.code(), Some(1), "{args:?}");
        assert_eq!(ours.status.code(), Some(1), "{args:?}");
        assert_eq!(
            (ours.stdout.as_slice(), real.stdout.as_slice()),
            (&b""[..], &b""[..])
        );
        assert!(text(&real.stderr).starts_with("usage: epmd "), "{args:?}");
        assert_eq!(
            without_systemd(&ours.stderr),
            without_systemd(&real.stderr),
            "{args:?}"
        );
    }
    // A name epmd will not send (no daemon needed: it checks first).
    let real = run("epmd", command(&erlang.epmd, &["-stop", &long_name]));
    let ours = run("our epmd", command(&dir.epmd(), &["-stop", &long_name]));
    assert_eq!(text(&real.stdout), "epmd: Name too long!");
    assert_eq!(
        (ours.stdout, ours.status.code()),
        (real.stdout, real.status.code())
    );
}
