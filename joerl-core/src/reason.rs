//! Why an actor stopped: Erlang's exit reasons.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The reason an actor exited, or the reason carried by an exit signal.
///
/// The variants have Erlang's meaning:
/// - [`Normal`](ExitReason::Normal): finished its work. Linked actors that do not
///   trap exits ignore it.
/// - [`Shutdown`](ExitReason::Shutdown): asked to stop by its supervisor or by
///   system shutdown. Not a failure.
/// - [`Kill`](ExitReason::Kill): sent with `exit(pid, Kill)`; cannot be trapped. The
///   killed actor's links and monitors then see [`Killed`](ExitReason::Killed).
/// - [`Panic`](ExitReason::Panic): a handler panicked; holds the panic message.
/// - [`NoProc`](ExitReason::NoProc): the target of a link or monitor did not exist.
/// - [`NoConnection`](ExitReason::NoConnection): the node of a linked or
///   monitored actor was lost.
/// - [`Custom`](ExitReason::Custom): anything else, as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// The actor finished normally.
    Normal,
    /// The actor was asked to shut down.
    Shutdown,
    /// Untrappable kill request (only meaningful as a signal sent with `exit`).
    Kill,
    /// The actor was killed by an untrappable `Kill` signal.
    Killed,
    /// A handler panicked; the panic message.
    Panic(String),
    /// The actor did not exist (dead, never existed, or from an old incarnation).
    NoProc,
    /// The connection to the actor's node was lost.
    NoConnection,
    /// An application-defined reason.
    Custom(String),
}

impl ExitReason {
    /// True for reasons that are not failures (`normal` and `shutdown`), the
    /// reasons after which a transient child is not restarted.
    pub fn is_normal_or_shutdown(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }

    /// Builds a [`Custom`](ExitReason::Custom) reason.
    pub fn custom(reason: impl Into<String>) -> Self {
        ExitReason::Custom(reason.into())
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panic(msg) => write!(f, "panic: {msg}"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::NoConnection => f.write_str("noconnection"),
            ExitReason::Custom(msg) => f.write_str(msg),
        }
    }
}
