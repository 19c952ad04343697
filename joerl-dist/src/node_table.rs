//! The node table: what this node knows of other nodes (id, full name,
//! creation, the address it dialed them at, how it learned of them), apart
//! from their queues and connections (`peer.rs`). No I/O.
//!
//! An entry lives as long as its peer; when the node forgets a down and unused
//! peer, its entry is kept as *forgotten* (the name only, so a Pid of that
//! node still finds it), up to [`MAX_FORGOTTEN`] of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Most forgotten nodes remembered (by name); past it, the forgotten ones are
/// dropped all at once (a Pid of such a node is resolved through EPMD like one
/// of a node never seen).
pub(crate) const MAX_FORGOTTEN: usize = 65_536;

/// How this node learned of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Learned {
    /// Something here named it: a send, call, monitor or `connect` by name.
    Named,
    /// It dialed this node.
    Accepted,
    /// Auto-discovery found it in EPMD.
    Discovered,
    /// A Pid of it arrived, and EPMD said which node has that id.
    ByPid,
}

/// What this node knows of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its full name, `name@host`.
    pub name: String,
    /// `joerl_core::node_id(name)`.
    pub node_id: u32,
    /// The creation of the incarnation last connected (`None`: never connected).
    pub creation: Option<u32>,
    /// Where this node last dialed it (`None`: it only dialed this node).
    pub addr: Option<SocketAddr>,
    /// How this node first learned of it.
    pub learned: Learned,
    /// Connected now (or mending a cut within the grace period).
    pub connected: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    creation: Option<u32>,
    addr: Option<SocketAddr>,
    learned: Learned,
    forgotten: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct NodeTable {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<u32, Entry>,
    /// How many entries are forgotten.
    forgotten: usize,
}

impl std::ops::Deref for Entries {
    type Target = HashMap<u32, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl NodeTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Node `id`, named `name`, is known now (it has a peer), learned `how`
    /// unless it was known before.
    pub(crate) fn learn(&self, id: u32, name: &str, how: Learned) {
        let mut t = self.lock();
        match t.map.get_mut(&id) {
            Some(e) => {
                if e.forgotten {
                    e.forgotten = false;
                    t.forgotten -= 1;
                }
            }
            None => {
                t.map.insert(
                    id,
                    Entry {
                        name: name.to_string(),
                        creation: None,
                        addr: None,
                        learned: how,
                        forgotten: false,
                    },
                );
            }
        }
    }

    /// This node dialed node `id` at `addr` and reached incarnation `creation`.
    pub(crate) fn dialed(&self, id: u32, addr: SocketAddr) {
        if let Some(e) = self.lock().map.get_mut(&id) {
            e.addr = Some(addr);
        }
    }

    /// A connection to incarnation `creation` of node `id` came up.
    pub(crate) fn connected(&self, id: u32, creation: u32) {
        if let Some(e) = self.lock().map.get_mut(&id) {
            e.creation = Some(creation);
        }
    }

    /// The peers of `ids` were forgotten: keep their names only.
    pub(crate) fn forget(&self, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        let mut t = self.lock();
        if t.forgotten + ids.len() > MAX_FORGOTTEN {
            t.map.retain(|_, e| !e.forgotten);
            t.forgotten = 0;
        }
        for id in ids {
            if let Some(e) = t.map.get_mut(id) {
                if !e.forgotten {
                    e.forgotten = true;
                    e.creation = None;
                    e.addr = None;
                    t.forgotten += 1;
                }
            }
        }
    }

    /// The name of a forgotten node `id`, if remembered.
    pub(crate) fn forgotten_name(&self, id: u32) -> Option<String> {
        self.lock()
            .get(&id)
            .filter(|e| e.forgotten)
            .map(|e| e.name.clone())
    }

    /// What is known of the nodes that have a peer now, sorted by name, with
    /// `connected` false (the caller knows; it is asked after this table's
    /// lock is released, so no lock is taken under it).
    pub(crate) fn known(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self
            .lock()
            .iter()
            .filter(|(_, e)| !e.forgotten)
            .map(|(id, e)| NodeInfo {
                name: e.name.clone(),
                node_id: *id,
                creation: e.creation,
                addr: e.addr,
                learned: e.learned,
                connected: false,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Forgotten nodes remembered by name.
    #[cfg(test)]
    pub(crate) fn forgotten_count(&self) -> usize {
        self.lock().forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_their_peers_and_forgotten_ones_keep_only_the_name() {
        let t = NodeTable::default();
        t.learn(1, "a@h", Learned::Named);
        t.learn(2, "b@h", Learned::Accepted);
        // Learned again another way: the first way stays.
        t.learn(1, "a@h", Learned::ByPid);
        t.dialed(1, "127.0.0.1:7".parse().unwrap());
        t.connected(1, 42);
        let known = t.known();
        assert_eq!(known.len(), 2);
        assert_eq!(
            known[0],
            NodeInfo {
                name: "a@h".into(),
                node_id: 1,
                creation: Some(42),
                addr: Some("127.0.0.1:7".parse().unwrap()),
                learned: Learned::Named,
                connected: false,
            }
        );
        assert_eq!(known[1].learned, Learned::Accepted);
        assert_eq!(known[1].addr, None);
        t.forget(&[1]);
        assert_eq!(t.known().len(), 1);
        assert_eq!(t.forgotten_name(1).as_deref(), Some("a@h"));
        assert_eq!(t.forgotten_name(2), None, "b is not forgotten");
        // Known again: revived.
        t.learn(1, "a@h", Learned::ByPid);
        assert_eq!(t.forgotten_name(1), None);
        assert_eq!(t.known().len(), 2);
    }

    #[test]
    fn forgotten_entries_are_bounded() {
        let t = NodeTable::default();
        for id in 0..(MAX_FORGOTTEN as u32 + 10) {
            t.learn(id, &format!("n{id}@h"), Learned::Named);
            t.forget(&[id]);
        }
        assert!(t.forgotten_count() <= MAX_FORGOTTEN);
    }
}
