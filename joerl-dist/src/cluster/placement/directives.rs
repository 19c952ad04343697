//! The leader's placement directives: members being drained, identities
//! pinned to a member by a migration, and identities registered for eager
//! activation. The leader issues every change; every member keeps a
//! replica, so routing stays a local computation.
//!
//! This module is the state machine, with no I/O: [`Table`] is the
//! replicated state, [`Op`] one change, [`Table::issue`] the leader's side
//! and [`Table::on_delta`], [`Table::on_sync`] a member's. How the replica
//! stays right:
//!
//! - The table carries the version `(epoch, seq)`: the leader's epoch when
//!   the last change was issued and the change's number in that epoch.
//! - A leader issues a change only with the epoch it holds now, never
//!   below the table's ([`DirectiveError::StaleLeader`]). The first change
//!   of a new epoch goes out as the whole table ([`Issued::full`]); later
//!   ones as deltas.
//! - A member applies a delta only if it is the next one (same epoch, seq
//!   one above its own); one further ahead is a gap, and the member asks
//!   the leader for the whole table. A delta or table older than its own,
//!   or sent by a leader whose epoch is below the leader the member
//!   accepts, is dropped (a stale leader is fenced). The fence is on the
//!   sender's epoch as leader, not on the table's (a leader that took
//!   office after the last change sends a table of an older epoch).
//! - The leader says its version every second; a member behind it asks for
//!   the whole table, so a lost delta is repaired.
//! - A new leader adopts the newest table a majority of members has before
//!   its first change, so a leader that missed changes (or restarted
//!   empty) does not overwrite them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::rendezvous::Identity;

/// Most identities pinned to a member at once.
pub const MAX_PINS: usize = 10_000;

/// Most identities registered for eager activation in a cluster.
pub const MAX_REGISTERED: usize = 100_000;

/// Most identities one [`Op::Register`] or [`Op::Unregister`] carries.
pub const MAX_BATCH: usize = 10_000;

/// The replicated directives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The epoch of the leader that issued the last change.
    pub epoch: u64,
    /// The last change's number within that epoch.
    pub seq: u64,
    /// Members being drained: nothing is placed on them.
    pub draining: BTreeSet<String>,
    /// Identities a migration pinned to a member.
    pub pins: BTreeMap<Identity, String>,
    /// Identities activated eagerly on their owner, and again on the new
    /// owner after their owner failed.
    pub registered: BTreeSet<Identity>,
}

/// One change to the directives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Stop placing on this member and move its identities off.
    Drain(String),
    /// Place on this member again.
    Undrain(String),
    /// Place this identity on this member (a migration).
    Pin(Identity, String),
    /// Place this identity by the placement function again.
    Unpin(Identity),
    /// Activate these identities eagerly, and again after a failure.
    Register(Vec<Identity>),
    /// Activate these identities at their first message only, again.
    Unregister(Vec<Identity>),
    /// These members left the view: their drains and pins go.
    Forget(Vec<String>),
}

/// Why the leader did not issue a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum DirectiveError {
    /// This node does not lead (or no longer): ask the leader.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node accepts, if any.
        leader: Option<String>,
    },
    /// There is no leader now (no healthy majority, or an election runs):
    /// try again shortly.
    #[error("there is no leader now: try again once the cluster has a healthy majority")]
    NoLeader,
    /// The directives carry a newer epoch than this leader's: it was
    /// replaced.
    #[error(
        "leader epoch {epoch} is below the directives' epoch {table}: a newer leader took over"
    )]
    StaleLeader {
        /// The epoch the command was issued with.
        epoch: u64,
        /// The directives' epoch.
        table: u64,
    },
    /// The node is not a member that placement places on.
    #[error("{0:?} is not an active member running placement")]
    NotAMember(String),
    /// Draining it would leave no member to place on.
    #[error("{0:?} is the last member not being drained: it cannot be drained")]
    LastMember(String),
    /// The target member is being drained.
    #[error("{0:?} is being drained: nothing is placed on it")]
    Draining(String),
    /// The kind is not registered on the leader.
    #[error("the kind {0:?} is not registered (placed!) on the leader")]
    UnknownKind(String),
    /// A limit of the directives would be passed.
    #[error("{what} would pass its limit of {limit}: unpin or unregister first")]
    Limit {
        /// What is full.
        what: String,
        /// Its limit.
        limit: usize,
    },
    /// The leader did not answer in time, or could not be reached.
    #[error("the leader did not answer: {0}")]
    Unreachable(String),
}

/// A change the leader issued: send [`Issued::full`]'s table or the delta.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    /// The version of the change.
    pub epoch: u64,
    /// Its number in the epoch.
    pub seq: u64,
    /// The change.
    pub op: Op,
    /// True if members need the whole table (the first change of an
    /// epoch).
    pub full: bool,
}

/// What a member did with a delta or a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Applied: the directives changed.
    Applied,
    /// Older than what it has, or from a fenced leader: dropped.
    Stale,
    /// Further ahead than the next change: ask the leader for the table.
    Gap,
}

impl Table {
    /// The version `(epoch, seq)`.
    pub fn version(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    /// True if nothing is drained, pinned or registered.
    pub fn is_empty(&self) -> bool {
        self.draining.is_empty() && self.pins.is_empty() && self.registered.is_empty()
    }

    /// Checks `op` against the members placement places on now
    /// (`members`), without applying it.
    pub fn check(&self, op: &Op, members: &BTreeSet<String>) -> Result<(), DirectiveError> {
        match op {
            Op::Drain(node) => {
                if !members.contains(node) {
                    return Err(DirectiveError::NotAMember(node.clone()));
                }
                let left = members
                    .iter()
                    .filter(|m| *m != node && !self.draining.contains(*m))
                    .count();
                if left == 0 {
                    return Err(DirectiveError::LastMember(node.clone()));
                }
            }
            Op::Pin(identity, node) => {
                if !members.contains(node) {
                    return Err(DirectiveError::NotAMember(node.clone()));
                }
                if self.draining.contains(node) {
                    return Err(DirectiveError::Draining(node.clone()));
                }
                if self.pins.len() >= MAX_PINS && !self.pins.contains_key(identity) {
                    return Err(DirectiveError::Limit {
                        what: "pins".into(),
                        limit: MAX_PINS,
                    });
                }
            }
            Op::Register(ids) | Op::Unregister(ids) if ids.len() > MAX_BATCH => {
                return Err(DirectiveError::Limit {
                    what: "one registration batch".into(),
                    limit: MAX_BATCH,
                });
            }
            Op::Register(ids) => {
                let new = ids.iter().filter(|i| !self.registered.contains(*i)).count();
                if self.registered.len() + new > MAX_REGISTERED {
                    return Err(DirectiveError::Limit {
                        what: "registered identities".into(),
                        limit: MAX_REGISTERED,
                    });
                }
            }
            Op::Undrain(_) | Op::Unpin(_) | Op::Unregister(_) | Op::Forget(_) => {}
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Drain(n) => {
                self.draining.insert(n.clone());
                // A pin to a drained member would keep the identity there.
                self.pins.retain(|_, to| to != n);
            }
            Op::Undrain(n) => {
                self.draining.remove(n);
            }
            Op::Pin(i, n) => {
                self.pins.insert(i.clone(), n.clone());
            }
            Op::Unpin(i) => {
                self.pins.remove(i);
            }
            Op::Register(ids) => self.registered.extend(ids.iter().cloned()),
            Op::Unregister(ids) => {
                for i in ids {
                    self.registered.remove(i);
                }
            }
            Op::Forget(nodes) => {
                for n in nodes {
                    self.draining.remove(n);
                }
                self.pins.retain(|_, to| !nodes.contains(to));
            }
        }
    }

    /// The leader's side: applies `op` (checked against `members`) at the
    /// leader's `epoch`, and says what to send.
    pub fn issue(
        &mut self,
        epoch: u64,
        op: Op,
        members: &BTreeSet<String>,
    ) -> Result<Issued, DirectiveError> {
        if epoch < self.epoch {
            return Err(DirectiveError::StaleLeader {
                epoch,
                table: self.epoch,
            });
        }
        self.check(&op, members)?;
        let full = epoch > self.epoch;
        if full {
            self.epoch = epoch;
            self.seq = 0;
        }
        self.seq += 1;
        self.apply(&op);
        Ok(Issued {
            epoch,
            seq: self.seq,
            op,
            full,
        })
    }

    /// A member's side: the delta `(epoch, seq, op)` from the leader; the
    /// member accepts leaders of epoch `fence` or newer.
    pub fn on_delta(&mut self, epoch: u64, seq: u64, op: &Op, fence: u64) -> Received {
        if epoch < fence || (epoch, seq) <= self.version() {
            return Received::Stale;
        }
        if epoch != self.epoch || seq != self.seq + 1 {
            return Received::Gap;
        }
        self.seq = seq;
        self.apply(op);
        Received::Applied
    }

    /// A member's side: the whole table, from a leader of epoch
    /// `leader_epoch`; taken if it is newer and that leader is not fenced.
    pub fn on_sync(&mut self, table: Table, leader_epoch: u64, fence: u64) -> Received {
        if leader_epoch < fence || table.version() <= self.version() {
            return Received::Stale;
        }
        *self = table;
        Received::Applied
    }

    /// A member's side: a leader of epoch `leader_epoch` says its table's
    /// version; true if this replica is behind it (ask for the table).
    pub fn behind(&self, epoch: u64, seq: u64, leader_epoch: u64, fence: u64) -> bool {
        leader_epoch >= fence && (epoch, seq) > self.version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn id(n: &str) -> Identity {
        Identity::new("k", n)
    }

    #[test]
    fn a_replica_that_applies_every_delta_in_order_equals_the_leaders_table() {
        let m = members(&["a", "b", "c"]);
        let mut leader = Table::default();
        let mut replica = Table::default();
        let ops = [
            Op::Register(vec![id("1"), id("2")]),
            Op::Pin(id("1"), "b".into()),
            Op::Drain("c".into()),
            Op::Unregister(vec![id("2")]),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let issued = leader.issue(3, op, &m).unwrap();
            assert_eq!(issued.full, i == 0);
            if issued.full {
                assert_eq!(replica.on_sync(leader.clone(), 3, 0), Received::Applied);
            } else {
                assert_eq!(
                    replica.on_delta(issued.epoch, issued.seq, &issued.op, 3),
                    Received::Applied
                );
            }
        }
        assert_eq!(replica, leader);
        assert_eq!(replica.version(), (3, 4));
        assert!(replica.registered.contains(&id("1")) && !replica.registered.contains(&id("2")));
        assert_eq!(replica.pins.get(&id("1")).map(|s| s.as_str()), Some("b"));
        assert!(replica.draining.contains("c"));
    }

    #[test]
    fn a_missed_delta_is_a_gap_and_the_table_repairs_it() {
        let m = members(&["a", "b"]);
        let mut leader = Table::default();
        let mut replica = Table::default();
        let first = leader.issue(1, Op::Drain("b".into()), &m).unwrap();
        assert!(first.full);
        replica.on_sync(leader.clone(), 3, 0);
        let _lost = leader.issue(1, Op::Undrain("b".into()), &m).unwrap();
        let third = leader.issue(1, Op::Pin(id("x"), "b".into()), &m).unwrap();
        assert_eq!(
            replica.on_delta(third.epoch, third.seq, &third.op, 1),
            Received::Gap
        );
        // Nothing of the gapped delta was applied.
        assert!(replica.pins.is_empty() && replica.draining.contains("b"));
        assert!(replica.behind(1, 3, 1, 1));
        assert_eq!(replica.on_sync(leader.clone(), 1, 1), Received::Applied);
        assert_eq!(replica, leader);
        assert!(!replica.behind(1, 3, 1, 1));
        // A delta it has already is stale, and changes nothing.
        assert_eq!(
            replica.on_delta(third.epoch, third.seq, &third.op, 1),
            Received::Stale
        );
    }

    #[test]
    fn a_stale_leader_is_fenced_on_both_sides() {
        let m = members(&["a", "b", "c"]);
        // The new leader (epoch 5) issued; the old one (epoch 4) did not
        // hear of it.
        let mut new = Table::default();
        let issued = new.issue(5, Op::Drain("c".into()), &m).unwrap();
        let mut replica = Table::default();
        replica.on_sync(new.clone(), 5, 5);
        assert_eq!(
            new.issue(4, Op::Undrain("c".into()), &m),
            Err(DirectiveError::StaleLeader { epoch: 4, table: 5 })
        );
        let mut old = Table::default();
        let stale = old.issue(4, Op::Undrain("c".into()), &m).unwrap();
        assert_eq!(
            replica.on_sync(old.clone(), 4, 5),
            Received::Stale,
            "a table from below the accepted epoch is refused"
        );
        assert_eq!(
            replica.on_delta(stale.epoch, stale.seq, &stale.op, 5),
            Received::Stale
        );
        // A replica that has not accepted epoch 5 yet still refuses the
        // older version.
        let mut late = Table::default();
        late.on_sync(new.clone(), 5, 0);
        assert_eq!(late.on_sync(old, 4, 0), Received::Stale);
        assert!(late.draining.contains("c") && issued.epoch == 5);
        // A newer leader's first change replaces the table.
        let next = new.issue(6, Op::Undrain("c".into()), &m).unwrap();
        assert!(next.full && next.seq == 1);
        assert_eq!(
            replica.on_delta(next.epoch, next.seq, &next.op, 5),
            Received::Gap,
            "a new epoch's first change comes as the table"
        );
        assert_eq!(replica.on_sync(new.clone(), 6, 5), Received::Applied);
        assert!(replica.draining.is_empty());
        // A leader that took office after the last change sends a table of
        // an older epoch: a member that accepts that leader takes it.
        let mut behind = Table::default();
        assert!(behind.behind(new.epoch, new.seq, 7, 7));
        assert_eq!(behind.on_sync(new.clone(), 7, 7), Received::Applied);
        assert_eq!(behind, new);
    }

    #[test]
    fn the_leader_refuses_what_would_leave_nowhere_to_place_or_pass_a_limit() {
        let m = members(&["a", "b"]);
        let mut t = Table::default();
        assert_eq!(
            t.issue(1, Op::Drain("z".into()), &m),
            Err(DirectiveError::NotAMember("z".into()))
        );
        t.issue(1, Op::Drain("a".into()), &m).unwrap();
        assert_eq!(
            t.issue(1, Op::Drain("b".into()), &m),
            Err(DirectiveError::LastMember("b".into()))
        );
        assert_eq!(
            t.issue(1, Op::Pin(id("1"), "a".into()), &m),
            Err(DirectiveError::Draining("a".into()))
        );
        assert_eq!(
            t.issue(1, Op::Pin(id("1"), "z".into()), &m),
            Err(DirectiveError::NotAMember("z".into()))
        );
        let too_many: Vec<Identity> = (0..=MAX_BATCH).map(|i| id(&i.to_string())).collect();
        assert!(matches!(
            t.issue(1, Op::Register(too_many), &m),
            Err(DirectiveError::Limit { .. })
        ));
        for i in 0..MAX_PINS {
            t.pins.insert(id(&i.to_string()), "b".into());
        }
        assert!(matches!(
            t.issue(1, Op::Pin(id("new"), "b".into()), &m),
            Err(DirectiveError::Limit { what, .. }) if what == "pins"
        ));
        // Re-pinning one that is pinned is no new entry.
        t.issue(1, Op::Pin(id("0"), "b".into()), &m).unwrap();
        // Refused changes did not move the version.
        assert_eq!(t.version(), (1, 2));
    }

    #[test]
    fn draining_or_forgetting_a_member_drops_the_pins_to_it() {
        let m = members(&["a", "b", "c"]);
        let mut t = Table::default();
        t.issue(1, Op::Pin(id("1"), "b".into()), &m).unwrap();
        t.issue(1, Op::Pin(id("2"), "c".into()), &m).unwrap();
        t.issue(1, Op::Drain("b".into()), &m).unwrap();
        assert!(!t.pins.contains_key(&id("1")) && t.pins.contains_key(&id("2")));
        t.issue(1, Op::Forget(vec!["b".into(), "c".into()]), &m)
            .unwrap();
        assert!(t.pins.is_empty() && t.draining.is_empty());
    }
}
