//! A real Erlang node driven from a test: `erl` started with a small
//! read-eval-print loop on its standard input, one expression per line, its
//! result printed on one line as `{ok, Value}` or `{error, Class, Reason}`
//! (bindings kept from line to line). Stopped by its own handle (SIGKILL by
//! PID when asked, otherwise killed on drop).
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one expression may take to answer (a loaded 2-core machine
/// starts an `erl` in a few seconds).
pub const ERL_DEADLINE: Duration = Duration::from_secs(30);

/// The loop `erl` runs: read a line, evaluate it with the bindings so far,
/// print the result with `~w` (one line), repeat; halt at end of input.
const REPL: &str = "Loop = fun Loop(B) -> \
    case io:get_line('') of \
      eof -> halt(); \
      Line -> \
        {R, B2} = try \
            {ok, Toks, _} = erl_scan:string(Line), \
            {ok, Es} = erl_parse:parse_exprs(Toks), \
            {value, V, NB} = erl_eval:exprs(Es, B), \
            {{ok, V}, NB} \
          catch C:E -> {{error, C, E}, B} end, \
        io:format(\"~w~n\", [R]), \
        Loop(B2) \
    end \
  end, Loop(erl_eval:new_bindings()).";

/// True if `erl` can be started here.
pub fn have_erl() -> bool {
    std::process::Command::new("erl")
        .args(["-noshell", "-eval", "halt()."])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running `erl` node.
pub struct Erl {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its full node name (`name@127.0.0.1`).
    pub name: String,
}

impl Erl {
    /// Starts `erl -name NAME@127.0.0.1 -setcookie COOKIE` registered in the
    /// EPMD at `epmd_port`, with `extra` arguments, and waits until it
    /// evaluates.
    pub async fn start(name: &str, epmd_port: u16, cookie: &str, extra: &[&str]) -> Erl {
        assert!(
            have_erl(),
            "these tests need Erlang/OTP's erl on the PATH (Debian: apt-get install erlang-base)"
        );
        let full = format!("{name}@127.0.0.1");
        let mut child = Command::new("erl")
            .args(["-noshell", "-name", &full, "-setcookie", cookie])
            .args(extra)
            .args(["-eval", REPL])
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("erl starts");
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut erl = Erl {
            child,
            stdin,
            lines,
            name: full,
        };
        assert_eq!(erl.eval("ok").await, "{ok,ok}");
        erl
    }

    /// Evaluates `expr` (no trailing dot) and returns the printed result.
    pub async fn eval(&mut self, expr: &str) -> String {
        self.stdin
            .write_all(format!("{expr}.\n").as_bytes())
            .await
            .expect("erl reads");
        self.stdin.flush().await.expect("erl reads");
        loop {
            match tokio::time::timeout(ERL_DEADLINE, self.lines.next_line()).await {
                // The loop's own lines; anything else (Erlang's log) is shown.
                Ok(Ok(Some(line))) if line.starts_with("{ok,") || line.starts_with("{error,") => {
                    return line;
                }
                Ok(Ok(Some(line))) => eprintln!("[{}] {line}", self.name),
                Ok(Ok(None)) => {
                    let status = self.child.try_wait();
                    panic!(
                        "erl {} ended ({status:?}) while evaluating {expr}",
                        self.name
                    )
                }
                Ok(Err(e)) => panic!("reading erl's output: {e}"),
                Err(_) => panic!(
                    "erl {} did not answer {expr} within {ERL_DEADLINE:?}",
                    self.name
                ),
            }
        }
    }

    /// Evaluates `expr` and checks its printed result.
    pub async fn expect(&mut self, expr: &str, want: &str) {
        let got = self.eval(expr).await;
        assert_eq!(got, want, "erl {}: {expr}", self.name);
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Kills the node with SIGKILL by its PID and waits for it to end.
    pub async fn kill9(mut self) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let _ = self.child.wait().await;
    }

    /// Ends the node (end of input makes it halt) and waits for it.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(ERL_DEADLINE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Polls `cond` (async) until it holds, for at most [`ERL_DEADLINE`].
pub async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < ERL_DEADLINE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
