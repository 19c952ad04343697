//! The leader's coordination, over the wire: commands to the leader
//! (drain, migrate, register), and the replication of its
//! [`directives`](super::directives) to every member's placement server.
//!
//! - A command is a call ([`Command`]) to the leader's placement server;
//!   a member that does not lead answers [`DirectiveError::NotLeader`]
//!   with the leader it knows, and [`Placements`](super::Placements) asks
//!   that one. The leader checks the command against its view, applies
//!   it, sends it to every other `Active` member ([`Delta`], or the whole
//!   table as a [`Snapshot`] for the first change of its epoch), and
//!   answers with the change's number.
//! - Every second the leader says its version ([`Version`]) to every
//!   member; a member behind it (a lost delta, a member that joined later)
//!   asks for the table ([`WantSnapshot`]). The leader also forgets the
//!   drains and pins of members that left its view.
//! - A member applies what passes [`Table::on_delta`] or
//!   [`Table::on_sync`], fenced at the epoch of the leader it accepts; its
//!   identities then follow the new directives as after a membership
//!   change (handed off, activated eagerly if registered).

use std::collections::BTreeSet;

use std::sync::atomic::Ordering;

use joerl_core::Dest;
use joerl_core::gen_server::{Request, ServerRef};
use serde::{Deserialize, Serialize};

use super::directives::{DirectiveError, Op, Received, Table};
use super::handoff::{ClaimServer, PLACEMENT_SERVER};
use super::kinds;
use super::placements::PlacementState;

/// A command for the leader: a call to its placement server, answered
/// with the change's number in the leader's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// The change.
    pub op: Op,
}
impl Request for Command {
    type Reply = Result<u64, DirectiveError>;
}

/// One change from the leader, the next after `(epoch, seq - 1)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delta {
    /// The leader's node name.
    pub leader: String,
    /// Its epoch.
    pub epoch: u64,
    /// The change's number in the epoch.
    pub seq: u64,
    /// The change.
    pub op: Op,
}
crate::remote_message!(Delta, "joerl::placement::Delta");

/// The leader's whole table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The leader's node name.
    pub leader: String,
    /// Its epoch as leader (the table's may be older).
    pub leader_epoch: u64,
    /// The directives.
    pub table: Table,
}
crate::remote_message!(Snapshot, "joerl::placement::Snapshot");

/// The leader's version, said every second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// The leader's node name.
    pub leader: String,
    /// Its epoch as leader (the table's may be older).
    pub leader_epoch: u64,
    /// The table's epoch.
    pub epoch: u64,
    /// Its seq.
    pub seq: u64,
}
crate::remote_message!(Version, "joerl::placement::Version");

/// A new leader asks a member for its table (answered with it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetTable;
impl Request for GetTable {
    type Reply = Table;
}

/// How long a new leader waits for members' tables.
pub const GATHER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A member behind the leader asks for the whole table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WantSnapshot {
    /// The member's node name.
    pub node: String,
}
crate::remote_message!(WantSnapshot, "joerl::placement::WantSnapshot");

fn to_server(node: &str) -> Dest {
    Dest::Remote {
        name: PLACEMENT_SERVER.to_string(),
        node: node.to_string(),
    }
}

impl PlacementState {
    /// The epoch of the leader this node accepts (0 if none): directives
    /// from below it are refused.
    pub(crate) fn fence(&self) -> u64 {
        self.election()
            .and_then(|e| e.leader())
            .map(|l| l.epoch)
            .unwrap_or(0)
    }

    /// A new leader's first step: adopts the newest table of a majority of
    /// the members (itself included), so that no change it missed is
    /// overwritten by its own.
    async fn gather(&self, epoch: u64) -> Result<(), DirectiveError> {
        if self.gathered.load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        let Some(system) = self.system() else {
            return Err(DirectiveError::NoLeader);
        };
        let others = self.others();
        // A majority of the members, this node included.
        let members = others.len() + 1;
        let needed = members / 2 + 1;
        let mut calls = tokio::task::JoinSet::new();
        for node in others {
            let system = system.clone();
            calls.spawn(async move {
                let server: ServerRef<ClaimServer> = ServerRef::new(to_server(&node));
                system.call_timeout(&server, GetTable, GATHER_TIMEOUT).await
            });
        }
        let mut answered = 1;
        while let Some(r) = calls.join_next().await {
            if let Ok(Ok(table)) = r {
                answered += 1;
                let _ =
                    self.with_table(|t, _| Ok::<_, DirectiveError>(t.on_sync(table, u64::MAX, 0)));
            }
        }
        if answered < needed {
            return Err(DirectiveError::Unreachable(format!(
                "the new leader heard the directives of {answered} members, a majority is {needed}"
            )));
        }
        self.gathered.store(epoch, Ordering::Release);
        Ok(())
    }

    /// The leader's side of a [`Command`].
    pub(crate) async fn command(&self, op: Op) -> Result<u64, DirectiveError> {
        let leader = self
            .election()
            .and_then(|e| e.leader())
            .ok_or(DirectiveError::NoLeader)?;
        if leader.node != self.me() {
            return Err(DirectiveError::NotLeader {
                leader: Some(leader.node),
            });
        }
        self.gather(leader.epoch).await?;
        let unknown = |i: &super::Identity| kinds::kind(&i.kind).is_none();
        match &op {
            Op::Pin(i, _) if unknown(i) => {
                return Err(DirectiveError::UnknownKind(i.kind.clone()));
            }
            Op::Register(ids) => {
                if let Some(i) = ids.iter().find(|i| unknown(i)) {
                    return Err(DirectiveError::UnknownKind(i.kind.clone()));
                }
            }
            _ => {}
        }
        let issued = self.with_table(|table, members| table.issue(leader.epoch, op, members))?;
        let seq = issued.seq;
        let op = issued.op.clone();
        if issued.full {
            self.broadcast(Snapshot {
                leader: self.me().to_string(),
                leader_epoch: leader.epoch,
                table: self.table(),
            });
        } else {
            self.broadcast(Delta {
                leader: self.me().to_string(),
                epoch: issued.epoch,
                seq: issued.seq,
                op: issued.op,
            });
        }
        self.update(None);
        self.after_op(&op);
        Ok(seq)
    }

    /// Sends what `make` makes to every other `Active` member's placement
    /// server (dropped for a member the node cannot reach now: the
    /// version said every second repairs it).
    fn broadcast<M: Clone + Send + 'static>(&self, message: M) {
        let Some(system) = self.system() else {
            return;
        };
        for node in self.others() {
            if let Err(e) = system.try_send(to_server(&node), message.clone()) {
                tracing::debug!(%node, error = %e, "placement: directive not sent");
            }
        }
    }

    /// A member's side of a [`Delta`].
    pub(crate) fn on_delta(&self, d: Delta) {
        let fence = self.fence();
        let r = self
            .with_table(|t, _| Ok::<_, DirectiveError>(t.on_delta(d.epoch, d.seq, &d.op, fence)));
        match r {
            Ok(Received::Applied) => {
                self.update(None);
                self.after_op(&d.op);
            }
            Ok(Received::Gap) => self.want_snapshot(&d.leader),
            _ => self.count_stale_directive(),
        }
    }

    /// A member's side of a [`Snapshot`]: applied like the changes it
    /// holds (identities newly pinned here are activated).
    pub(crate) fn on_snapshot(&self, s: Snapshot) {
        let fence = self.fence();
        let me = self.me().to_string();
        let r = self.with_table(|t, _| {
            let before: BTreeSet<super::Identity> = t
                .pins
                .iter()
                .filter(|(_, n)| **n == me)
                .map(|(i, _)| i.clone())
                .collect();
            let r = t.on_sync(s.table, s.leader_epoch, fence);
            let new: Vec<super::Identity> = t
                .pins
                .iter()
                .filter(|(i, n)| **n == me && !before.contains(*i))
                .map(|(i, _)| i.clone())
                .collect();
            Ok::<_, DirectiveError>((r, new))
        });
        match r {
            Ok((Received::Applied, new)) => {
                self.update(None);
                for identity in new {
                    self.after_op(&Op::Pin(identity, me.clone()));
                }
            }
            _ => self.count_stale_directive(),
        }
    }

    /// A member's side of a [`Version`].
    pub(crate) fn on_version(&self, v: Version) {
        let fence = self.fence();
        if self.table_behind(v.epoch, v.seq, v.leader_epoch, fence) {
            self.want_snapshot(&v.leader);
        }
    }

    /// The leader's side of a [`WantSnapshot`].
    pub(crate) fn on_want_snapshot(&self, w: WantSnapshot) {
        if !self.leads() {
            return;
        }
        let Some(system) = self.system() else {
            return;
        };
        let snapshot = Snapshot {
            leader: self.me().to_string(),
            leader_epoch: self.fence(),
            table: self.table(),
        };
        if let Err(e) = system.try_send(to_server(&w.node), snapshot) {
            tracing::debug!(node = %w.node, error = %e, "placement: directives not sent");
        }
    }

    fn want_snapshot(&self, leader: &str) {
        let Some(system) = self.system() else {
            return;
        };
        let want = WantSnapshot {
            node: self.me().to_string(),
        };
        if let Err(e) = system.try_send(to_server(leader), want) {
            tracing::debug!(%leader, error = %e, "placement: directives not asked for");
        }
    }

    /// True if this node leads now.
    pub(crate) fn leads(&self) -> bool {
        self.election()
            .and_then(|e| e.leader())
            .is_some_and(|l| l.node == self.me())
    }

    /// The leader's second: says its version to every member, and forgets
    /// the drains and pins of members that left its view.
    pub(crate) async fn leader_tick(&self) {
        if !self.leads() {
            return;
        }
        let table = self.table();
        let all: BTreeSet<String> = self
            .others()
            .into_iter()
            .chain([self.me().to_string()])
            .collect();
        let gone: BTreeSet<String> = table
            .draining
            .iter()
            .chain(table.pins.values())
            .filter(|n| !all.contains(*n))
            .cloned()
            .collect();
        if !gone.is_empty() {
            let gone: Vec<String> = gone.into_iter().collect();
            tracing::info!(
                ?gone,
                "placement: forgetting the directives of members that left"
            );
            if let Err(e) = self.command(Op::Forget(gone)).await {
                tracing::debug!(error = %e, "placement: directives not pruned");
            }
        }
        let (epoch, seq) = self.table().version();
        if (epoch, seq) == (0, 0) {
            return;
        }
        let me = self.me().to_string();
        self.broadcast(Version {
            leader: me,
            leader_epoch: self.fence(),
            epoch,
            seq,
        });
    }
}
