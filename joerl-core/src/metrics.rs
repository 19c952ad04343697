//! What the runtime reports through the [`metrics`] facade (nothing is
//! recorded until the program installs a recorder, such as joerl-dist's
//! Prometheus exporter):
//!
//! - `joerl_call_duration_seconds{target}`: histogram of typed
//!   gen_server calls, from the call to its reply or failure; `target` is
//!   `local`, `remote`, `placed`, `global` or `group`.
//! - `joerl_call_failures_total{target, cause}`: calls that failed, by
//!   cause: `timeout`, `noproc`, `noconnection`, `unreachable`, `exit`,
//!   `send`, `other`.

use std::time::Duration;

use crate::gen_server::CallError;

/// Records one finished call.
pub(crate) fn call_done(target: &'static str, took: Duration, error: Option<&CallError>) {
    metrics::histogram!("joerl_call_duration_seconds", "target" => target)
        .record(took.as_secs_f64());
    if let Some(e) = error {
        let cause = match e {
            CallError::Timeout => "timeout",
            CallError::NoProc => "noproc",
            CallError::NoConnection => "noconnection",
            CallError::Unreachable(_) => "unreachable",
            CallError::Exit(_) => "exit",
            CallError::Send(_) => "send",
            _ => "other",
        };
        metrics::counter!("joerl_call_failures_total", "target" => target, "cause" => cause)
            .increment(1);
    }
}
