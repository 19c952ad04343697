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

/// An address: a Pid, a name registered on this node, a name registered on
/// another node (Erlang's `{Name, Node}`), a name registered in the whole
/// cluster (Erlang's `{global, Name}`), or a process group. A name is looked up
/// when the message is sent (for `{Name, Node}`, by the node that has the
/// name; for global names and groups, in this node's [`NameService`]), so an
/// address by name keeps working across restarts of the actor that holds it.
///
/// [`NameService`]: crate::NameService
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
    /// The actor registered under this name in the whole cluster (Erlang's
    /// `{global, Name}`): needs joerl-dist's `cluster::global` running on
    /// this node.
    Global(String),
    /// Members of a process group: all of them, or one picked (see
    /// [`GroupDest`]); needs joerl-dist's `cluster::pg` scope running on this
    /// node.
    Group(GroupDest),
    /// The actor of identity `(kind, id)`, wherever the cluster placed it
    /// (activated on its first message): needs joerl-dist's
    /// `cluster::placement` running on this node.
    Placed {
        /// The kind's registered name (shared: a copy of the address is
        /// cheap, as a Pid is).
        kind: std::sync::Arc<str>,
        /// The id within the kind.
        id: std::sync::Arc<str>,
    },
}

/// A process group as an address: the scope, the group, and which members a
/// message goes to.
///
/// ```
/// use joerl_core::{Dest, GroupDest, Pick};
///
/// let all: Dest = GroupDest::new("workers").into();
/// let one = Dest::from(GroupDest::new("workers").scope("jobs").pick(Pick::RoundRobin));
/// assert_eq!(one.to_string(), "{pg, jobs, workers, round_robin}");
/// # let _ = all;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupDest {
    /// The pg scope (`"default"` unless chosen).
    pub scope: String,
    /// The group's name.
    pub group: String,
    /// Which members get the message.
    pub pick: Pick,
}

impl GroupDest {
    /// Every member of `group` in the default scope.
    pub fn new(group: impl Into<String>) -> Self {
        GroupDest {
            scope: "default".to_string(),
            group: group.into(),
            pick: Pick::All,
        }
    }

    /// In the scope `scope` instead.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// To the members `pick` chooses.
    pub fn pick(mut self, pick: Pick) -> Self {
        self.pick = pick;
        self
    }
}

/// Which members of a group a message sent to a [`GroupDest`] reaches. A
/// call goes to one member: with [`Pick::All`], to the first (Erlang's
/// `pg:get_members` order is unspecified; so is this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pick {
    /// Every member (the message is copied for each; a type registered for
    /// the wire can be copied, another can go to a group of one only).
    All,
    /// One member, at random.
    Random,
    /// One member, each in turn (per node and group).
    RoundRobin,
    /// A member on this node if there is one, else one at random.
    PreferLocal,
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pick::All => "all",
            Pick::Random => "random",
            Pick::RoundRobin => "round_robin",
            Pick::PreferLocal => "prefer_local",
        })
    }
}

impl From<GroupDest> for Dest {
    fn from(group: GroupDest) -> Self {
        Dest::Group(group)
    }
}

impl Dest {
    /// The name registered in the whole cluster as `name` (Erlang's
    /// `{global, Name}`).
    pub fn global(name: impl Into<String>) -> Self {
        Dest::Global(name.into())
    }

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
            Dest::Global(name) => write!(f, "{{global, {name}}}"),
            Dest::Group(g) => write!(f, "{{pg, {}, {}, {}}}", g.scope, g.group, g.pick),
            Dest::Placed { kind, id } => write!(f, "{{placed, {kind}, {id}}}"),
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
