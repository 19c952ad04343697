//! Process identifiers that name an actor anywhere in a cluster.
//!
//! A [`Pid`] carries three numbers, like an Erlang pid:
//! - `node`: a stable 32-bit hash of the full node name (see [`node_id`]); `0` means
//!   a local-only system that has no node name.
//! - `id`: the process number, unique within one incarnation of a node.
//! - `creation`: which incarnation of the node made the process. A node that
//!   restarts under the same name gets a new creation, so a Pid of the old
//!   incarnation can never reach an actor of the new one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The node id of a system that is not part of a cluster.
pub const LOCAL_NODE: u32 = 0;

/// Identifies one actor (process) in a cluster.
///
/// Displayed as `<node.id.creation>` and parsed back from the same form:
///
/// ```
/// use joerl_core::Pid;
/// let pid = Pid::new(7, 42, 1);
/// assert_eq!(pid.to_string(), "<7.42.1>");
/// assert_eq!("<7.42.1>".parse::<Pid>().unwrap(), pid);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    node: u32,
    id: u64,
    creation: u32,
}

impl Pid {
    /// Builds a Pid from its three parts.
    pub const fn new(node: u32, id: u64, creation: u32) -> Self {
        Pid { node, id, creation }
    }

    /// The node id: [`node_id`] of the owning node's full name, or [`LOCAL_NODE`].
    pub const fn node(&self) -> u32 {
        self.node
    }

    /// The process number within its node incarnation.
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// The incarnation (creation) of the node that made this Pid.
    pub const fn creation(&self) -> u32 {
        self.creation
    }

    /// True if this Pid belongs to a local-only system (node id 0).
    pub const fn is_local_only(&self) -> bool {
        self.node == LOCAL_NODE
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}>", self.node, self.id, self.creation)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a Pid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pid {input:?}: expected the form <node.id.creation>, e.g. <0.42.0>")]
pub struct ParsePidError {
    input: String,
}

impl FromStr for Pid {
    type Err = ParsePidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePidError {
            input: s.to_string(),
        };
        let inner = s
            .trim()
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or_else(err)?;
        let mut parts = inner.split('.');
        let node = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        let id = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        let creation = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Pid { node, id, creation })
    }
}

/// Maps a full node name (`name@host`) to its 32-bit node id.
///
/// The algorithm is 32-bit FNV-1a over the UTF-8 bytes of the name (offset basis
/// `0x811c9dc5`, prime `0x01000193`). The value `0` is reserved for local-only
/// systems, so a name that hashes to `0` gets `1` instead. The function is fixed:
/// every joerl version and every user computes the same id for the same name.
///
/// ```
/// assert_eq!(joerl_core::node_id("a@localhost"), joerl_core::node_id("a@localhost"));
/// assert_ne!(joerl_core::node_id("a@localhost"), 0);
/// ```
pub fn node_id(full_name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in full_name.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    if hash == LOCAL_NODE { 1 } else { hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for pid in [
            Pid::new(0, 1, 0),
            Pid::new(u32::MAX, u64::MAX, u32::MAX),
            Pid::new(12345, 678, 9),
        ] {
            assert_eq!(pid.to_string().parse::<Pid>().unwrap(), pid);
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "<>",
            "<1.2>",
            "<1.2.3.4>",
            "1.2.3",
            "<a.2.3>",
            "<1.2.3",
            "<-1.2.3>",
        ] {
            assert!(bad.parse::<Pid>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn node_id_is_fnv1a_32() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(node_id("a"), 0xe40c_292c);
        assert_eq!(node_id("foobar"), 0xbf9c_f968);
        assert_ne!(node_id("a@localhost"), node_id("b@localhost"));
    }

    #[test]
    fn pid_serde_round_trip() {
        let pid = Pid::new(3, 4, 5);
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(pid, cfg).unwrap();
        let (back, _): (Pid, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, pid);
    }
}
