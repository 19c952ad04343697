//! Erlang's `epmd` command line, so that `epmd_server` installed as `epmd`
//! changes nothing for Erlang.
//!
//! The arguments are read the way `erts/epmd/src/epmd.c` reads them: one pass
//! from left to right; numbers go through C's `atoi` (so `-port 12x` is 12,
//! and 0 or a missing value prints the usage); a client flag (`-names`,
//! `-started`, `-dump`, `-kill`, `-stop Name`) acts at once and must end the
//! command line; anything unknown prints epmd's usage and exits with 1. The
//! client flags print what `epmd_cli.c` prints and exit as it does. The
//! daemon listens as `epmd_srv.c` does (see [`ListenPlan`]).
//!
//! The one joerl addition is `--pid-file PATH` (or `--pid-file=PATH`): the
//! daemon writes its process id there once it listens, and removes the file
//! when it stops.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use joerl_epmd::protocol::{DUMP_REQ, KILL_REQ, NAMES_REQ, STOP_REQ};
use joerl_epmd::{DEFAULT_EPMD_PORT, EpmdServer, IdleActivity, ServerConfig, ServerError};
use tracing::{info, warn};

/// epmd's usage text, byte for byte (OTP 25 built with systemd support, as
/// Debian's), printed to stderr for a command line epmd would not take.
const USAGE: &str = r#"usage: epmd [-d|-debug] [DbgExtra...] [-address List]
            [-port No] [-daemon] [-relaxed_command_check]
       epmd [-d|-debug] [-port No] [-names|-kill|-stop name]

See the Erlang epmd manual page for info about the usage.

Regular options
    -address List
        Let epmd listen only on the comma-separated list of IP
        addresses (and on the loopback interface).
    -port No
        Let epmd listen to another port than default 4369
    -d
    -debug
        Enable debugging. This will give a log to
        the standard error stream. It will shorten
        the number of saved used node names to 5.

        If you give more than one debug flag you may
        get more debugging information.
    -daemon
        Start epmd detached (as a daemon)
    -relaxed_command_check
        Allow this instance of epmd to be killed with
        epmd -kill even if there are registered nodes.
        Also allows forced unregister (epmd -stop).
    -systemd
        Wait for socket from systemd. The option makes sense
        when started from .socket unit.

DbgExtra options
    -packet_timeout Seconds
        Set the number of seconds a connection can be
        inactive before epmd times out and closes the
        connection (default 60).

    -delay_accept Seconds
        To simulate a busy server you can insert a
        delay between epmd gets notified about that
        a new connection is requested and when the
        connections gets accepted.

    -delay_write Seconds
        Also a simulation of a busy server. Inserts
        a delay before a reply is sent.

Interactive options
    -names
        List names registered with the currently running epmd
    -kill
        Kill the currently running epmd
        (only allowed if -names show empty database or
        -relaxed_command_check was given when epmd was started).
    -stop Name
        Forcibly unregisters a name with epmd
        (only allowed if -relaxed_command_check was given when 
        epmd was started).
"#;

/// epmd's `CLOSE_TIMEOUT`: the default `-packet_timeout`, in seconds.
const CLOSE_TIMEOUT_SECS: u32 = 60;

/// epmd's most listening sockets (`MAX_LISTEN_SOCKETS` in `epmd_int.h`).
const MAX_LISTEN_SOCKETS: usize = 16;

/// Whether the command line is epmd's rather than joerl's: the program is
/// called `epmd`, or an argument is a single-dash word such as `-names`,
/// `-port` or `-d` (clap's `-h` and `-V` stay joerl's).
pub fn is_epmd_style(args: &[OsString]) -> bool {
    let called_epmd = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name == "epmd");
    called_epmd
        || args.iter().skip(1).any(|arg| {
            let arg = arg.as_bytes();
            arg.len() >= 2
                && arg[0] == b'-'
                && arg[1].is_ascii_alphabetic()
                && arg != b"-h"
                && arg != b"-V"
        })
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Run the daemon.
    Serve,
    /// `-names`, or with `silent` `-started` (which only sets the exit status).
    Names { silent: bool },
    /// `-dump`.
    Dump,
    /// `-kill`.
    Kill,
    /// `-stop Name`.
    Stop(Vec<u8>),
}

/// The settings epmd would run with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EpmdArgs {
    /// The port as epmd keeps it, an `int` whose low 16 bits the sockets use.
    port: i32,
    /// `-address` (or `ERL_EPMD_ADDRESS`): the comma-separated list.
    addresses: Option<String>,
    /// How many `-d`/`-debug`.
    debug: u32,
    daemon: bool,
    /// `-relaxed_command_check` (or `ERL_EPMD_RELAXED_COMMAND_CHECK`).
    relaxed: bool,
    /// Seconds; epmd keeps these three `unsigned`, so `-1` is 4294967295.
    packet_timeout: u32,
    delay_accept: u32,
    delay_write: u32,
    systemd: bool,
    pid_file: Option<PathBuf>,
    action: Action,
}

/// The command line is not one epmd takes: print its usage.
#[derive(Debug, PartialEq, Eq)]
struct Usage;

/// C's `atoi` as glibc has it, `(int) strtol(text, NULL, 10)`: leading white
/// space, an optional sign, then digits up to the first other byte (none: 0),
/// saturating at the range of a 64-bit `long` before the cut to `int`.
fn atoi(text: &[u8]) -> i32 {
    let mut rest = text
        .iter()
        .copied()
        .skip_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .peekable();
    let negative = match rest.peek() {
        Some(b'-') => {
            rest.next();
            true
        }
        Some(b'+') => {
            rest.next();
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    for digit in rest.take_while(u8::is_ascii_digit) {
        let digit = i64::from(digit - b'0');
        value = if negative {
            value.saturating_mul(10).saturating_sub(digit)
        } else {
            value.saturating_mul(10).saturating_add(digit)
        };
    }
    value as i32
}

/// Reads the command line (program name first) and the environment the way
/// epmd's `main` does: the variables give the starting values, the flags
/// override them in order, and a client flag must come last.
fn parse(args: &[OsString], env: impl Fn(&str) -> Option<OsString>) -> Result<EpmdArgs, Usage> {
    let mut parsed = EpmdArgs {
        port: env("ERL_EPMD_PORT").map_or(i32::from(DEFAULT_EPMD_PORT), |v| atoi(v.as_bytes())),
        addresses: env("ERL_EPMD_ADDRESS").map(|v| v.to_string_lossy().into_owned()),
        debug: 0,
        daemon: false,
        // Set at all, whatever its value.
        relaxed: env("ERL_EPMD_RELAXED_COMMAND_CHECK").is_some(),
        packet_timeout: CLOSE_TIMEOUT_SECS,
        delay_accept: 0,
        delay_write: 0,
        systemd: false,
        pid_file: None,
        action: Action::Serve,
    };
    // epmd's `(argc == 1) || ((x = atoi(argv[1])) == 0)` test.
    let nonzero = |value: Option<&OsString>| {
        value
            .map(|v| atoi(v.as_bytes()))
            .filter(|n| *n != 0)
            .ok_or(Usage)
    };
    // A client flag acts when it is read, so nothing may follow it.
    let last = |mut parsed: EpmdArgs, after: &[OsString], action: Action| {
        if after.is_empty() {
            parsed.action = action;
            Ok(parsed)
        } else {
            Err(Usage)
        }
    };
    let mut rest = args.get(1..).unwrap_or_default();
    while let Some((flag, after)) = rest.split_first() {
        let value = after.first();
        let mut used = 1;
        match flag.as_bytes() {
            b"-d" | b"-debug" => parsed.debug += 1,
            b"-packet_timeout" => {
                parsed.packet_timeout = nonzero(value)? as u32;
                used = 2;
            }
            b"-delay_accept" => {
                parsed.delay_accept = nonzero(value)? as u32;
                used = 2;
            }
            b"-delay_write" => {
                parsed.delay_write = nonzero(value)? as u32;
                used = 2;
            }
            b"-daemon" => parsed.daemon = true,
            b"-relaxed_command_check" => parsed.relaxed = true,
            b"-kill" => return last(parsed, after, Action::Kill),
            b"-address" => {
                parsed.addresses = Some(value.ok_or(Usage)?.to_string_lossy().into_owned());
                used = 2;
            }
            b"-port" => {
                parsed.port = nonzero(value)?;
                used = 2;
            }
            b"-names" => return last(parsed, after, Action::Names { silent: false }),
            b"-started" => return last(parsed, after, Action::Names { silent: true }),
            b"-dump" => return last(parsed, after, Action::Dump),
            b"-stop" => {
                return match after {
                    [name] => {
                        parsed.action = Action::Stop(name.as_bytes().to_vec());
                        Ok(parsed)
                    }
                    _ => Err(Usage),
                };
            }
            b"-systemd" => parsed.systemd = true,
            b"--pid-file" => {
                parsed.pid_file = Some(PathBuf::from(value.ok_or(Usage)?));
                used = 2;
            }
            other => match other.strip_prefix(b"--pid-file=") {
                Some(path) if !path.is_empty() => {
                    parsed.pid_file = Some(PathBuf::from(std::ffi::OsStr::from_bytes(path)));
                }
                _ => return Err(Usage),
            },
        }
        rest = &rest[used..];
    }
    Ok(parsed)
}

/// Where the daemon listens, by epmd's rule (`run()` in `epmd_srv.c`).
///
/// Without an address list: `0.0.0.0` and `::` (the latter skipped only if
/// the system has no IPv6 at all). With a list (one that has anything besides
/// spaces and commas): `127.0.0.1` and `::1` first, `::1` skipped if it cannot
/// be bound, then every listed address except those two, each of which must
/// be bound. Any address whose port is taken means another epmd runs: exit
/// with 0, as epmd does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenPlan {
    primary: SocketAddr,
    optional: Vec<SocketAddr>,
    extra: Vec<SocketAddr>,
}

impl ListenPlan {
    /// The plan for epmd's address list (`None`: no `-address` and no
    /// `ERL_EPMD_ADDRESS`); the error is the line epmd prints before exiting with 1.
    fn new(addresses: Option<&str>, port: u16) -> Result<Self, String> {
        let at = |ip: IpAddr| SocketAddr::new(ip, port);
        let listed = addresses.filter(|list| list.chars().any(|c| c != ' ' && c != ','));
        let Some(list) = listed else {
            return Ok(Self {
                primary: at(Ipv4Addr::UNSPECIFIED.into()),
                optional: Vec::new(),
                extra: vec![at(Ipv6Addr::UNSPECIFIED.into())],
            });
        };
        let loopback4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let loopback6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        // epmd counts its sockets as it goes, the two loopback ones included.
        let mut sockets = 2;
        let mut extra = Vec::new();
        for token in list.split([',', ' ']).filter(|t| !t.is_empty()) {
            // inet_pton: IPv6 first, then dotted-quad IPv4.
            let ip = token
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .or_else(|_| token.parse::<Ipv4Addr>().map(IpAddr::V4))
                .map_err(|_| format!("cannot parse IP address \"{token}\""))?;
            if ip == loopback4 || ip == loopback6 {
                continue;
            }
            sockets += 1;
            if sockets >= MAX_LISTEN_SOCKETS {
                return Err(format!(
                    "cannot listen on more than {MAX_LISTEN_SOCKETS} IP addresses"
                ));
            }
            // epmd would bind a repeated address twice and take the second
            // bind's "address in use" for another epmd; one socket is enough.
            if !extra.contains(&at(ip)) {
                extra.push(at(ip));
            }
        }
        Ok(Self {
            primary: at(loopback4),
            optional: vec![at(loopback6)],
            extra,
        })
    }
}

/// The log filter for `-d` given `debug` times: epmd prints its level-0
/// messages (errors and refusals) always, and more with each `-d`.
fn log_level(debug: u32) -> &'static str {
    match debug {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Seconds of a `-delay_*` flag; 0 (not given) is no delay.
fn delay(seconds: u32) -> Option<Duration> {
    (seconds != 0).then(|| Duration::from_secs(seconds.into()))
}

/// Runs `epmd_server` with epmd's command line `args` (program name first).
pub fn main(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let parsed = match parse(&args, |name| std::env::var_os(name)) {
        Ok(parsed) => parsed,
        Err(Usage) => {
            eprint!("{USAGE}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // `unsigned short sport = g->port;` in epmd.
    let port = parsed.port as u16;
    match &parsed.action {
        Action::Names { silent } => Ok(client::call(port, NAMES_REQ, *silent)),
        Action::Dump => Ok(client::call(port, DUMP_REQ, false)),
        Action::Kill => Ok(client::kill(port)),
        Action::Stop(name) => Ok(client::stop(port, name)),
        Action::Serve => serve(parsed, port),
    }
}

/// The daemon: in the foreground, or with `-daemon` detached (the process
/// that was started waits until the daemon listens, then exits with 0).
fn serve(args: EpmdArgs, port: u16) -> anyhow::Result<ExitCode> {
    let plan = match ListenPlan::new(args.addresses.as_deref(), port) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("epmd: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The daemon moves to `/`, so a relative path must be resolved first.
    let pid_file = args
        .pid_file
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve the --pid-file path")?;
    let mut readiness = None;
    if args.daemon {
        match daemon::detach().context("cannot start the daemon")? {
            daemon::Detached::Foreground(code) => return Ok(code),
            daemon::Detached::Daemon(ready) => readiness = Some(ready),
        }
    }
    super::init_logging(log_level(args.debug));
    if args.systemd {
        warn!("-systemd accepted and ignored: joerl binds its own listening sockets");
    }
    let config = ServerConfig {
        listen_addr: plan.primary,
        optional_listen_addrs: plan.optional,
        extra_listen_addrs: plan.extra,
        idle_timeout: Duration::from_secs(args.packet_timeout.into()),
        idle_activity: IdleActivity::AnyBytes,
        delay_accept: delay(args.delay_accept),
        delay_write: delay(args.delay_write),
        relaxed_command_check: args.relaxed,
        ..ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let server = match EpmdServer::bind(config).await {
            Ok(server) => server,
            Err(ServerError::Bind { addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                // What epmd does when another epmd has the port (e.g. a
                // second `epmd -daemon` started by `erl`): exit with 0.
                info!(
                    "there is already a epmd running at port {port} on ipaddr {}",
                    addr.ip()
                );
                if let Some(ready) = readiness {
                    ready.already_running();
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(err) => {
                if let Some(ready) = readiness {
                    ready.failed(&err.to_string());
                }
                return Err(err.into());
            }
        };
        let pid_file = match pid_file.as_deref().map(super::PidFile::create).transpose() {
            Ok(pid_file) => pid_file,
            Err(err) => {
                if let Some(ready) = readiness {
                    ready.failed(&format!("{err:#}"));
                }
                return Err(err);
            }
        };
        if let Some(ready) = readiness {
            ready.listening();
        }
        let result = super::serve_until_stopped(server).await;
        drop(pid_file);
        result
    })
}

/// The client flags, printing what `epmd_cli.c` prints.
mod client {
    use super::*;

    /// Connects as epmd does: `::1` first, then `127.0.0.1`.
    fn connect(port: u16, silent: bool) -> Result<TcpStream, ExitCode> {
        if let Ok(stream) = TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            return Ok(stream);
        }
        TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).map_err(|_| {
            if !silent {
                eprintln!("epmd: Cannot connect to local epmd");
            }
            ExitCode::FAILURE
        })
    }

    /// Writes to stdout as `printf`/`fwrite` would (errors ignored, as there).
    fn print(bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// epmd's `read_fill`: `Ok(true)` once `buf` is full, `Ok(false)` if the
    /// daemon closed first (epmd then reports what it got as empty).
    fn read_fill(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match stream.read(&mut buf[got..])? {
                0 => return Ok(false),
                n => got += n,
            }
        }
        Ok(true)
    }

    /// `-names`, `-started` (`silent`) and `-dump`: the header line, then the
    /// daemon's reply as it comes.
    pub(super) fn call(port: u16, tag: u8, silent: bool) -> ExitCode {
        let mut stream = match connect(port, silent) {
            Ok(stream) => stream,
            Err(code) => return code,
        };
        if stream.write_all(&[0, 1, tag]).is_err() {
            print(b"epmd: Can't write to epmd\n");
            return ExitCode::FAILURE;
        }
        // One read of the 4-byte port, as epmd does.
        let mut head = [0u8; 4];
        if !matches!(stream.read(&mut head), Ok(4)) {
            if !silent {
                print(b"epmd: no response from local epmd\n");
            }
            return ExitCode::FAILURE;
        }
        if !silent {
            let port = i32::from_be_bytes(head);
            print(format!("epmd: up and running on port {port} with data:\n").as_bytes());
        }
        let mut buf = [0u8; 3 * 255 * 4];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return ExitCode::SUCCESS,
                Ok(n) if !silent => print(&buf[..n]),
                Ok(_) => {}
            }
        }
    }

    /// `-kill`.
    pub(super) fn kill(port: u16) -> ExitCode {
        let mut stream = match connect(port, false) {
            Ok(stream) => stream,
            Err(code) => return code,
        };
        if stream.write_all(&[0, 1, KILL_REQ]).is_err() {
            print(b"epmd: Can't write to epmd\n");
            return ExitCode::FAILURE;
        }
        let mut answer = [0u8; 2];
        match read_fill(&mut stream, &mut answer) {
            Ok(true) if &answer == b"OK" => {
                print(b"Killed\n");
                ExitCode::SUCCESS
            }
            Ok(true) => {
                print(b"Killing not allowed - living nodes in database.\n");
                ExitCode::FAILURE
            }
            Ok(false) => {
                print(b"epmd: local epmd responded with <>\n");
                ExitCode::FAILURE
            }
            Err(_) => {
                print(b"epmd: failed to read answer from local epmd\n");
                ExitCode::FAILURE
            }
        }
    }

    /// `-stop Name`: prints the daemon's 7-byte answer (`STOPPED` or `NOEXIST`).
    pub(super) fn stop(port: u16, name: &[u8]) -> ExitCode {
        if name.len() > 1000 {
            print(b"epmd: Name too long!");
            return ExitCode::FAILURE;
        }
        let mut stream = match connect(port, false) {
            Ok(stream) => stream,
            Err(code) => return code,
        };
        let mut request = Vec::with_capacity(name.len() + 3);
        request.extend_from_slice(&(name.len() as u16 + 1).to_be_bytes());
        request.push(STOP_REQ);
        request.extend_from_slice(name);
        if stream.write_all(&request).is_err() {
            print(b"epmd: Can't write to epmd\n");
            return ExitCode::FAILURE;
        }
        let mut answer = [0u8; 7];
        match read_fill(&mut stream, &mut answer) {
            Ok(true) => {
                // printf("%s\n"): up to a NUL byte, if any.
                let text = answer.split(|b| *b == 0).next().unwrap_or_default();
                print(&[text, b"\n"].concat());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                print(b"epmd: local epmd responded with <>\n");
                ExitCode::FAILURE
            }
            Err(_) => {
                print(b"epmd: failed to read answer from local epmd\n");
                ExitCode::FAILURE
            }
        }
    }
}

/// `-daemon`: detaching as epmd does (fork, a new session, fork again, `/`
/// as the directory, standard I/O on `/dev/null`, every inherited descriptor
/// closed, SIGHUP ignored), plus a pipe on which the daemon tells the process
/// that was started whether it listens.
mod daemon {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
    use std::process::ExitCode;

    /// Which side of the fork the caller is on.
    pub(super) enum Detached {
        /// The process that was started: it has waited for the daemon's
        /// report and exits with this code.
        Foreground(ExitCode),
        /// The daemon, detached; it reports once it listens (or cannot).
        Daemon(Readiness),
    }

    /// The write end of the report pipe. Dropping it unsent tells the
    /// foreground process that the daemon failed.
    pub(super) struct Readiness(File);

    const LISTENING: u8 = b'0';
    const ALREADY_RUNNING: u8 = b'1';
    const FAILED: u8 = b'2';

    impl Readiness {
        /// The daemon listens: the foreground process exits with 0.
        pub(super) fn listening(self) {
            self.send(LISTENING, "");
        }

        /// Another epmd has the port: both exit with 0, as epmd does.
        pub(super) fn already_running(self) {
            self.send(ALREADY_RUNNING, "");
        }

        /// The daemon cannot run: the foreground process prints `why` and exits with 1.
        pub(super) fn failed(self, why: &str) {
            self.send(FAILED, why);
        }

        fn send(mut self, status: u8, why: &str) {
            // The foreground process reads until the pipe closes, i.e. until
            // `self` is dropped here.
            let _ = self.0.write_all(&[status]);
            let _ = self.0.write_all(why.as_bytes());
        }
    }

    fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// Forks the daemon off. Must be called while the process has a single
    /// thread (before the tokio runtime and the logger exist).
    pub(super) fn detach() -> std::io::Result<Detached> {
        let (read_end, write_end) = pipe()?;
        // SAFETY: the process has one thread, so the child can go on running
        // ordinary code after fork().
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => {
                drop(read_end);
                // SAFETY: system calls without pointers. A session of its own
                // detaches the daemon from the terminal; the second fork makes
                // it no session leader, so it can never get a terminal back.
                unsafe {
                    if libc::setsid() < 0 {
                        libc::_exit(1);
                    }
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                    match libc::fork() {
                        -1 => libc::_exit(1),
                        0 => {}
                        _ => libc::_exit(0),
                    }
                }
                become_daemon(write_end.as_raw_fd())?;
                Ok(Detached::Daemon(Readiness(File::from(write_end))))
            }
            child => {
                drop(write_end);
                reap(child);
                Ok(Detached::Foreground(wait_for_report(File::from(read_end))))
            }
        }
    }

    /// Waits for the intermediate child, which exits right after its fork.
    fn reap(child: libc::pid_t) {
        loop {
            // SAFETY: a null status pointer is allowed.
            let done = unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            if done != -1
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return;
            }
        }
    }

    fn wait_for_report(mut pipe: File) -> ExitCode {
        let mut report = Vec::new();
        let _ = pipe.read_to_end(&mut report);
        match report.split_first() {
            Some((&(LISTENING | ALREADY_RUNNING), _)) => ExitCode::SUCCESS,
            Some((&FAILED, why)) => {
                eprintln!("epmd: {}", String::from_utf8_lossy(why));
                ExitCode::FAILURE
            }
            _ => {
                eprintln!("epmd: the daemon stopped before it listened");
                ExitCode::FAILURE
            }
        }
    }

    /// The daemon's side: `/` as its directory, standard I/O on `/dev/null`,
    /// no descriptor but `keep` inherited.
    fn become_daemon(keep: RawFd) -> std::io::Result<()> {
        std::env::set_current_dir("/")?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into_raw_fd();
        for fd in 0..=2 {
            // SAFETY: dup2 between descriptors of this process.
            if unsafe { libc::dup2(null, fd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // /dev/null may itself have become 0, 1 or 2 (if those were closed).
        if null > 2 {
            // SAFETY: `null` is ours and no longer used.
            unsafe { libc::close(null) };
        }
        for fd in open_descriptors() {
            if fd > 2 && fd != keep {
                // SAFETY: closing inherited descriptors that nothing in this
                // process owns (it has opened nothing else yet); a stale one
                // (the directory listing's own) fails harmlessly.
                unsafe { libc::close(fd) };
            }
        }
        Ok(())
    }

    fn open_descriptors() -> Vec<RawFd> {
        let listed = std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd"));
        match listed {
            Ok(dir) => dir
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => (3..1024).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("epmd")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_words(words: &[&str]) -> Result<EpmdArgs, Usage> {
        parse(&args(words), no_env)
    }

    #[test]
    fn atoi_matches_c() {
        for (text, value) in [
            ("4369", 4369),
            ("  12x", 12),
            ("+7", 7),
            ("-1", -1),
            ("abc", 0),
            ("", 0),
            ("99999999999", 1_215_752_191),
            ("99999999999999999999999", -1),
            ("-99999999999999999999999", 0),
        ] {
            assert_eq!(atoi(text.as_bytes()), value, "{text:?}");
        }
    }

    #[test]
    fn epmd_style_is_recognised() {
        let line = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_epmd_style(&line(&["/usr/local/bin/epmd"])));
        assert!(is_epmd_style(&line(&["epmd", "--help"])));
        assert!(is_epmd_style(&line(&["epmd_server", "-names"])));
        assert!(is_epmd_style(&line(&["epmd_server", "-d"])));
        assert!(!is_epmd_style(&line(&["epmd_server"])));
        assert!(!is_epmd_style(&line(&["epmd_server", "-h"])));
        assert!(!is_epmd_style(&line(&["epmd_server", "-V"])));
        assert!(!is_epmd_style(&line(&[
            "epmd_server",
            "127.0.0.1:4400",
            "--lease",
            "1s"
        ])));
        assert!(!is_epmd_style(&line(&[
            "epmd_server",
            "list",
            "--epmd",
            "127.0.0.1:1"
        ])));
    }

    #[test]
    fn flags_parse_in_order_as_epmd_reads_them() {
        let parsed = parse_words(&[]).unwrap();
        assert_eq!(
            (
                parsed.port,
                parsed.addresses.clone(),
                parsed.debug,
                parsed.daemon
            ),
            (4369, None, 0, false)
        );
        assert_eq!(
            (
                parsed.packet_timeout,
                parsed.delay_accept,
                parsed.delay_write
            ),
            (60, 0, 0)
        );
        assert_eq!(parsed.action, Action::Serve);

        let parsed = parse_words(&[
            "-d",
            "-debug",
            "-d",
            "-port",
            "4400",
            "-address",
            "10.0.0.1,::1",
            "-daemon",
            "-relaxed_command_check",
            "-packet_timeout",
            "7",
            "-delay_accept",
            "2",
            "-delay_write",
            "-1",
            "-systemd",
            "--pid-file",
            "/run/epmd.pid",
        ])
        .unwrap();
        assert_eq!(parsed.debug, 3);
        assert_eq!(parsed.port, 4400);
        assert_eq!(parsed.addresses.as_deref(), Some("10.0.0.1,::1"));
        assert!(parsed.daemon && parsed.relaxed && parsed.systemd);
        assert_eq!(
            (
                parsed.packet_timeout,
                parsed.delay_accept,
                parsed.delay_write
            ),
            (7, 2, u32::MAX)
        );
        assert_eq!(parsed.pid_file, Some(PathBuf::from("/run/epmd.pid")));
        let parsed = parse_words(&["--pid-file=p", "-port", "12x"]).unwrap();
        assert_eq!(
            (parsed.pid_file, parsed.port),
            (Some(PathBuf::from("p")), 12)
        );

        // Client flags act where they stand, with the flags read before them.
        assert_eq!(
            parse_words(&["-port", "4401", "-names"]).unwrap().action,
            Action::Names { silent: false }
        );
        assert_eq!(
            parse_words(&["-port", "4401", "-names"]).unwrap().port,
            4401
        );
        assert_eq!(
            parse_words(&["-started"]).unwrap().action,
            Action::Names { silent: true }
        );
        assert_eq!(parse_words(&["-dump"]).unwrap().action, Action::Dump);
        assert_eq!(parse_words(&["-d", "-kill"]).unwrap().action, Action::Kill);
        assert_eq!(
            parse_words(&["-stop", "foo"]).unwrap().action,
            Action::Stop(b"foo".to_vec())
        );

        for bad in [
            &["-bogus"][..],
            &["--help"],
            &["-port"],
            &["-port", "0"],
            &["-port", "x"],
            &["-packet_timeout", "0"],
            &["-delay_accept"],
            &["-delay_write", "none"],
            &["-address"],
            &["-names", "-port", "3"],
            &["-kill", "now"],
            &["-stop"],
            &["-stop", "a", "b"],
            &["--pid-file"],
            &["--pid-file="],
            &["4369"],
        ] {
            assert_eq!(parse_words(bad), Err(Usage), "{bad:?}");
        }
    }

    #[test]
    fn the_environment_gives_starting_values_that_flags_override() {
        let env = |name: &str| match name {
            "ERL_EPMD_PORT" => Some(OsString::from("4500")),
            "ERL_EPMD_ADDRESS" => Some(OsString::from("10.1.1.1")),
            // Set, even to nothing, means relaxed.
            "ERL_EPMD_RELAXED_COMMAND_CHECK" => Some(OsString::new()),
            _ => None,
        };
        let parsed = parse(&args(&[]), env).unwrap();
        assert_eq!(
            (parsed.port, parsed.addresses.as_deref(), parsed.relaxed),
            (4500, Some("10.1.1.1"), true)
        );
        let parsed = parse(&args(&["-port", "4501", "-address", "10.2.2.2"]), env).unwrap();
        assert_eq!(
            (parsed.port, parsed.addresses.as_deref()),
            (4501, Some("10.2.2.2"))
        );
        // A port that is not a number is 0 there, as in epmd (no usage error).
        let parsed = parse(&args(&[]), |name| {
            (name == "ERL_EPMD_PORT").then(|| OsString::from("none"))
        })
        .unwrap();
        assert_eq!(parsed.port, 0);
    }

    #[test]
    fn listening_follows_epmds_rule() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        let all = ListenPlan::new(None, 4369).unwrap();
        assert_eq!(
            all,
            ListenPlan {
                primary: addr("0.0.0.0:4369"),
                optional: vec![],
                extra: vec![addr("[::]:4369")],
            }
        );
        // Only separators: no list.
        assert_eq!(ListenPlan::new(Some(" , ,"), 4369).unwrap(), all);
        let listed =
            ListenPlan::new(Some("10.0.0.1, fd00::2,127.0.0.1 ::1,10.0.0.1"), 4400).unwrap();
        assert_eq!(
            listed,
            ListenPlan {
                primary: addr("127.0.0.1:4400"),
                optional: vec![addr("[::1]:4400")],
                extra: vec![addr("10.0.0.1:4400"), addr("[fd00::2]:4400")],
            }
        );
        assert_eq!(
            ListenPlan::new(Some("10.0.0.1,localhost"), 4400),
            Err("cannot parse IP address \"localhost\"".to_string())
        );
        let many: Vec<String> = (1..=14).map(|i| format!("10.0.0.{i}")).collect();
        assert!(ListenPlan::new(Some(&many[..13].join(",")), 1).is_ok());
        assert_eq!(
            ListenPlan::new(Some(&many.join(",")), 1),
            Err("cannot listen on more than 16 IP addresses".to_string())
        );
    }

    #[test]
    fn debug_flags_raise_the_log_level() {
        assert_eq!(
            [0, 1, 2, 3, 9].map(log_level),
            ["warn", "info", "debug", "trace", "trace"]
        );
    }
}
