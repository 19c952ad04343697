//! The node's [`NameService`]: global names and process groups as
//! addresses ([`Dest::Global`](joerl_core::Dest::Global),
//! [`Dest::Group`](joerl_core::Dest::Group)), read from the tables the
//! global server and the pg scope servers keep in memory. Installed on the
//! node the first time either is started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use joerl_core::{GroupDest, Message, NameService, Pick, Pid, PlacedRoute, SendError};

use super::global::Table;
use super::pg::View;
use super::placement::placements::PlacementState;
use crate::DistributedSystem;

/// The tables behind cluster-wide addresses on one node.
pub(crate) struct ClusterNames {
    node: u32,
    global: RwLock<Option<Arc<RwLock<Table>>>>,
    scopes: RwLock<HashMap<String, Arc<RwLock<View>>>>,
    /// Round-robin turns, by (scope, group).
    turns: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
    /// Placed identities, once placement runs.
    placement: OnceLock<Arc<PlacementState>>,
}

impl ClusterNames {
    /// The node's name service, installed on first use.
    pub(crate) fn of(node: &DistributedSystem) -> Arc<ClusterNames> {
        if let Some(n) = node.extension::<ClusterNames>() {
            return n;
        }
        let names = Arc::new(ClusterNames {
            node: node.node_id(),
            global: RwLock::new(None),
            scopes: RwLock::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
            placement: OnceLock::new(),
        });
        match node.set_extension(names.clone()) {
            Ok(()) => {
                node.set_name_service(names.clone());
                names
            }
            // Another caller installed one first: use it.
            Err(_) => node
                .extension::<ClusterNames>()
                .expect("an extension once set stays"),
        }
    }

    /// Takes the table of the global server that runs now.
    pub(crate) fn set_global(&self, table: Arc<RwLock<Table>>) {
        *self.global.write().unwrap_or_else(|e| e.into_inner()) = Some(table);
    }

    /// Takes placement's state; false if placement runs already.
    pub(crate) fn set_placement(&self, state: Arc<PlacementState>) -> bool {
        self.placement.set(state).is_ok()
    }

    /// Takes the view of a pg scope's server that runs now.
    pub(crate) fn add_scope(&self, scope: &str, view: Arc<RwLock<View>>) {
        let mut s = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        s.insert(scope.to_string(), view);
    }

    fn turn(&self, dest: &GroupDest) -> Arc<AtomicUsize> {
        let mut t = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        t.entry((dest.scope.clone(), dest.group.clone()))
            .or_default()
            .clone()
    }
}

impl NameService for ClusterNames {
    fn whereis_global(&self, name: &str) -> Result<Option<Pid>, SendError> {
        let table = self
            .global
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| SendError::NoNameService(format!("the global name {name:?}")))?;
        Ok(table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .whereis(name))
    }

    fn group_targets(&self, dest: &GroupDest) -> Result<Vec<Pid>, SendError> {
        let view = {
            let s = self.scopes.read().unwrap_or_else(|e| e.into_inner());
            s.get(&dest.scope)
                .cloned()
                .ok_or_else(|| SendError::NoNameService(format!("the pg scope {:?}", dest.scope)))?
        };
        let members = view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .members(&dest.group);
        if members.is_empty() {
            return Ok(members);
        }
        let one = match dest.pick {
            Pick::All => return Ok(members),
            Pick::Random => members[rand::random_range(0..members.len())],
            Pick::RoundRobin => {
                members[self.turn(dest).fetch_add(1, Ordering::Relaxed) % members.len()]
            }
            Pick::PreferLocal => {
                let local: Vec<Pid> = members
                    .iter()
                    .copied()
                    .filter(|p| p.node() == self.node)
                    .collect();
                let from = if local.is_empty() { &members } else { &local };
                from[rand::random_range(0..from.len())]
            }
        };
        Ok(vec![one])
    }

    fn route_placed(&self, kind: &Arc<str>, id: &Arc<str>) -> Result<PlacedRoute, SendError> {
        match self.placement.get() {
            Some(p) => p.route_shared(kind, id),
            None => Err(SendError::NoNameService(format!(
                "the placed identity {kind}/{id}"
            ))),
        }
    }

    fn route_placed_send(&self, kind: &Arc<str>, id: &Arc<str>) -> Result<PlacedRoute, SendError> {
        match self.placement.get() {
            Some(p) => p.route_send_shared(kind, id),
            None => Err(SendError::NoNameService(format!(
                "the placed identity {kind}/{id}"
            ))),
        }
    }

    fn moved(&self, pid: Pid) -> Option<String> {
        self.placement.get()?.moved(pid)
    }

    fn activate(&self, name: &str) -> Option<Pid> {
        self.placement.get()?.activate(name)
    }

    fn copy_message(&self, msg: &Message) -> Option<Message> {
        let (ty, _) = crate::registry::tables().by_type((**msg).type_id())?;
        let mut bytes = Vec::new();
        (ty.encode)(&**msg, &mut bytes).ok()?;
        // Our own encoding: decoding it needs no more than it took.
        (ty.decode)(&bytes, usize::MAX >> 1).ok()
    }
}
