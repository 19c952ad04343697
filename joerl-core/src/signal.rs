//! Signals: the messages of the runtime itself (links, monitors, exits).
//!
//! Signals travel on their own queue, beside the user mailbox, so a full mailbox
//! never delays an exit, a kill or a down notification. The distribution layer
//! carries the same signals between nodes and hands them to
//! [`ActorSystem::deliver_signal`](crate::ActorSystem::deliver_signal).

use serde::{Deserialize, Serialize};

use crate::{ExitReason, MonitorRef, Pid};

/// A runtime signal addressed to one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// An exit signal from `from`. `link` is true when it comes from a link
    /// (the linked actor exited), false when someone called `exit(pid, reason)`.
    Exit {
        /// The exiting or signalling actor.
        from: Pid,
        /// The exit reason.
        reason: ExitReason,
        /// Whether the signal comes from a link.
        link: bool,
    },
    /// `from` links itself to the target.
    Link {
        /// The actor creating the link.
        from: Pid,
    },
    /// `from` removes its link to the target.
    Unlink {
        /// The actor removing the link.
        from: Pid,
    },
    /// `from` starts monitoring the target under `monitor`.
    Monitor {
        /// The monitoring actor.
        from: Pid,
        /// The monitor's reference.
        monitor: MonitorRef,
    },
    /// `from` stops the monitor `monitor`.
    Demonitor {
        /// The monitoring actor.
        from: Pid,
        /// The monitor's reference.
        monitor: MonitorRef,
    },
    /// The actor `pid`, monitored by the target under `monitor`, went down.
    Down {
        /// The monitor's reference.
        monitor: MonitorRef,
        /// The actor that went down.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
}
