//! Where a message or a request goes: one type for every kind of address.
//!
//! Erlang's `!`, `gen_server:call` and `monitor` accept a Pid, a registered
//! name, or `{Name, Node}`; a [`Dest`] is any of those, and anything that names
//! one converts into it, so the same call takes all three:
//!
//! ```
//! use joerl_core::{Dest, Pid};
//!
//! let by_pid: Dest = Pid::new(0, 7, 0).into();
//! let by_name: Dest = "jobs".into();
//! let on_node: Dest = ("jobs", "coord@host").into();
//! assert_eq!(on_node.to_string(), "{jobs, coord@host}");
//! # let _ = (by_pid, by_name);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Pid;

/// An address: a Pid, a name registered on this node, or a name registered on
/// another node (Erlang's `{Name, Node}`). A name is looked up when the message
/// is sent (for `{Name, Node}`, by the node that has the name), so an address by
/// name keeps working across restarts of the actor that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dest {
    /// One actor, local or remote.
    Pid(Pid),
    /// The actor registered under this name on this node.
    Name(String),
    /// The actor registered as `name` on the node named `node`. On this node's
    /// own name it is the same as [`Dest::Name`].
    Remote {
        /// The registered name.
        name: String,
        /// The node's full name (`name@host`).
        node: String,
    },
}

impl Dest {
    /// The Pid, if the address is one.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            Dest::Pid(pid) => Some(*pid),
            _ => None,
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Pid(pid) => write!(f, "{pid}"),
            Dest::Name(name) => f.write_str(name),
            Dest::Remote { name, node } => write!(f, "{{{name}, {node}}}"),
        }
    }
}

impl From<Pid> for Dest {
    fn from(pid: Pid) -> Self {
        Dest::Pid(pid)
    }
}

impl From<&Pid> for Dest {
    fn from(pid: &Pid) -> Self {
        Dest::Pid(*pid)
    }
}

impl From<&str> for Dest {
    fn from(name: &str) -> Self {
        Dest::Name(name.to_string())
    }
}

impl From<String> for Dest {
    fn from(name: String) -> Self {
        Dest::Name(name)
    }
}

impl From<&Dest> for Dest {
    fn from(dest: &Dest) -> Self {
        dest.clone()
    }
}

impl<N: Into<String>, M: Into<String>> From<(N, M)> for Dest {
    fn from((name, node): (N, M)) -> Self {
        Dest::Remote {
            name: name.into(),
            node: node.into(),
        }
    }
}
