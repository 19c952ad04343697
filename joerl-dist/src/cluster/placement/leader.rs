//! The leader: the lowest-named `Active` member of the healthy majority,
//! with an epoch that fences a stale one, behind the [`LeaderElection`]
//! seam (the embedded rule here; a metadata-store lease can take its
//! place).
//!
//! [`Election`] is the embedded rule as a state machine with no I/O: the
//! membership view goes in ([`Election::on_view`]), leaders' announcements
//! and refusals come in from peers, and it says what to send
//! ([`ElectionEffect`]). How the epoch works:
//!
//! - A node that finds itself the lowest active member of a healthy view
//!   takes office with the epoch after the highest it has seen, and
//!   announces it to every member (again whenever its view changes, so a
//!   member that joins later learns it).
//! - A node accepts an announcement from the member its own view says
//!   should lead, with an epoch at least its own; one from another node
//!   waits until its view agrees (or is dropped when a newer one comes).
//! - One with an epoch below its own is refused with the epoch it has; the
//!   leader then takes office again above it. So the epochs a node accepts
//!   only grow, and a leader's command carries its epoch: a node obeys only
//!   a command of the leader it accepted, at that epoch
//!   ([`Election::accepts`]), so a stale leader (a partition's old side,
//!   a paused process) is fenced.
//! - Without a healthy majority there is no leader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who leads, in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Leader {
    /// The leader's node name.
    pub node: String,
    /// Its epoch (grows with every new term).
    pub epoch: u64,
}

/// The seam for leader election: the embedded rule, or a metadata-store
/// lease (a later implementation).
pub trait LeaderElection: Send + Sync + 'static {
    /// The leader this node accepts now, if any.
    fn leader(&self) -> Option<Leader>;

    /// Starts a new term: the leader takes office again with the next
    /// epoch (the rule picks the same node unless the view changed).
    fn force_election(&self);

    /// True if a command from `node` at `epoch` comes from the leader this
    /// node accepts (a stale leader's is refused).
    fn accepts(&self, node: &str, epoch: u64) -> bool;
}

/// What the election asks the node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEffect {
    /// Tell every member: `me` leads at `epoch`.
    Announce {
        /// The epoch.
        epoch: u64,
    },
    /// Tell `to` that its epoch is below ours.
    Refuse {
        /// The announcer.
        to: String,
        /// Our epoch.
        epoch: u64,
    },
    /// The accepted leader changed (`None`: no leader now).
    Changed(Option<Leader>),
}

/// The embedded election of one node (no I/O).
#[derive(Debug, Clone)]
pub struct Election {
    me: String,
    /// Whom the view says should lead.
    wanted: Option<String>,
    /// The highest epoch seen, and whose term it is.
    epoch: u64,
    owner: Option<String>,
    leader: Option<Leader>,
    /// Announcements not accepted yet (their node is not the one the view
    /// wants), by node: accepted when the view agrees.
    waiting: BTreeMap<String, u64>,
}

impl Election {
    /// The election of node `me`, with no leader yet.
    pub fn new(me: impl Into<String>) -> Self {
        Election {
            me: me.into(),
            wanted: None,
            epoch: 0,
            owner: None,
            leader: None,
            waiting: BTreeMap::new(),
        }
    }

    /// The accepted leader.
    pub fn leader(&self) -> Option<&Leader> {
        self.leader.as_ref()
    }

    /// The highest epoch seen.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True if this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.node == self.me)
    }

    /// See [`LeaderElection::accepts`].
    pub fn accepts(&self, node: &str, epoch: u64) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|l| l.node == node && l.epoch == epoch)
    }

    fn set(&mut self, leader: Option<Leader>, out: &mut Vec<ElectionEffect>) {
        if self.leader != leader {
            self.leader = leader.clone();
            out.push(ElectionEffect::Changed(leader));
        }
    }

    fn take_office(&mut self, out: &mut Vec<ElectionEffect>) {
        self.epoch += 1;
        self.owner = Some(self.me.clone());
        let me = Leader {
            node: self.me.clone(),
            epoch: self.epoch,
        };
        self.set(Some(me), out);
        out.push(ElectionEffect::Announce { epoch: self.epoch });
    }

    /// Membership changed: the active members (this node included if it is
    /// active) and whether they are a healthy majority.
    pub fn on_view(&mut self, active: &[String], healthy: bool) -> Vec<ElectionEffect> {
        let mut out = Vec::new();
        let wanted = if healthy {
            active.iter().min().cloned()
        } else {
            None
        };
        let changed = wanted != self.wanted;
        self.wanted = wanted.clone();
        match wanted {
            None => self.set(None, &mut out),
            Some(w) if w == self.me => {
                if !self.is_leader() {
                    self.take_office(&mut out);
                } else if changed || !active.is_empty() {
                    // Members may have joined: tell them.
                    out.push(ElectionEffect::Announce { epoch: self.epoch });
                }
            }
            Some(w) => {
                if self.leader.as_ref().is_some_and(|l| l.node != w) {
                    self.set(None, &mut out);
                }
                if let Some(e) = self.waiting.remove(&w) {
                    out.extend(self.on_announce(&w, e));
                }
            }
        }
        out
    }

    /// `from` announced it leads at `epoch`.
    pub fn on_announce(&mut self, from: &str, epoch: u64) -> Vec<ElectionEffect> {
        let mut out = Vec::new();
        // Below ours, or ours but another node's term: refused, so terms
        // only grow and each belongs to one node.
        let taken = epoch == self.epoch && self.owner.as_deref().is_some_and(|o| o != from);
        if epoch < self.epoch || taken {
            out.push(ElectionEffect::Refuse {
                to: from.to_string(),
                epoch: self.epoch,
            });
            return out;
        }
        if self.wanted.as_deref() != Some(from) {
            // Our view does not agree yet: keep it for when it does.
            self.waiting.insert(from.to_string(), epoch);
            return out;
        }
        if from == self.me {
            return out;
        }
        self.epoch = epoch;
        self.owner = Some(from.to_string());
        self.waiting.clear();
        self.set(
            Some(Leader {
                node: from.to_string(),
                epoch,
            }),
            &mut out,
        );
        out
    }

    /// A member refused our announcement: its epoch is `epoch`.
    pub fn on_refused(&mut self, epoch: u64) -> Vec<ElectionEffect> {
        let mut out = Vec::new();
        if epoch >= self.epoch {
            self.epoch = epoch;
            if self.wanted.as_deref() == Some(self.me.as_str()) {
                self.take_office(&mut out);
            }
        }
        out
    }

    /// A new term, if this node leads (see [`LeaderElection::force_election`]).
    pub fn force(&mut self) -> Vec<ElectionEffect> {
        let mut out = Vec::new();
        if self.is_leader() {
            self.take_office(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn leader(node: &str, epoch: u64) -> Option<Leader> {
        Some(Leader {
            node: node.into(),
            epoch,
        })
    }

    #[test]
    fn the_lowest_active_member_of_a_healthy_view_leads_and_others_follow() {
        let view = names(&["a", "b", "c"]);
        let mut a = Election::new("a");
        let mut b = Election::new("b");
        let out = a.on_view(&view, true);
        assert_eq!(
            out,
            [
                ElectionEffect::Changed(leader("a", 1)),
                ElectionEffect::Announce { epoch: 1 }
            ]
        );
        // b hears the announcement before its own view has a: it waits.
        assert!(b.on_announce("a", 1).is_empty());
        assert_eq!(b.leader(), None);
        assert_eq!(
            b.on_view(&view, true),
            [ElectionEffect::Changed(leader("a", 1))]
        );
        assert!(b.accepts("a", 1) && !b.accepts("a", 0) && !b.accepts("b", 1));
        // No majority: no leader anywhere.
        assert_eq!(b.on_view(&view, false), [ElectionEffect::Changed(None)]);
        assert_eq!(a.on_view(&view, false), [ElectionEffect::Changed(None)]);
        assert!(!a.is_leader());
    }

    #[test]
    fn a_failed_leader_is_replaced_with_a_higher_epoch_and_fenced_when_it_returns() {
        let mut a = Election::new("a");
        let mut b = Election::new("b");
        let mut c = Election::new("c");
        let all = names(&["a", "b", "c"]);
        a.on_view(&all, true);
        for e in [&mut b, &mut c] {
            e.on_view(&all, true);
            e.on_announce("a", 1);
        }
        // A partition: a alone has no majority; b takes office at 2.
        assert_eq!(
            a.on_view(&names(&["a"]), false),
            [ElectionEffect::Changed(None)]
        );
        let rest = names(&["b", "c"]);
        assert_eq!(
            b.on_view(&rest, true),
            [
                ElectionEffect::Changed(leader("b", 2)),
                ElectionEffect::Announce { epoch: 2 }
            ]
        );
        assert_eq!(c.on_view(&rest, true), [ElectionEffect::Changed(None)]);
        assert_eq!(
            c.on_announce("b", 2),
            [ElectionEffect::Changed(leader("b", 2))]
        );
        // The old leader's commands are refused from now on.
        assert!(!c.accepts("a", 1) && c.accepts("b", 2));
        // The heal: a is lowest again and takes office with its stale
        // epoch's next, 2, which is b's term: refused, it goes above.
        assert_eq!(
            a.on_view(&all, true),
            [
                ElectionEffect::Changed(leader("a", 2)),
                ElectionEffect::Announce { epoch: 2 }
            ]
        );
        assert_eq!(b.on_view(&all, true), [ElectionEffect::Changed(None)]);
        assert_eq!(
            b.on_announce("a", 2),
            [ElectionEffect::Refuse {
                to: "a".into(),
                epoch: 2
            }]
        );
        assert_eq!(
            a.on_refused(2),
            [
                ElectionEffect::Changed(leader("a", 3)),
                ElectionEffect::Announce { epoch: 3 }
            ]
        );
        assert_eq!(
            b.on_announce("a", 3),
            [ElectionEffect::Changed(leader("a", 3))]
        );
        c.on_view(&all, true);
        assert_eq!(
            c.on_announce("a", 3),
            [ElectionEffect::Changed(leader("a", 3))]
        );
        assert!(!c.accepts("b", 2) && !c.accepts("a", 2) && c.accepts("a", 3));
        // A late announcement of an older term is refused.
        assert_eq!(
            c.on_announce("b", 2),
            [ElectionEffect::Refuse {
                to: "b".into(),
                epoch: 3
            }]
        );
    }

    #[test]
    fn a_forced_election_is_a_new_term_of_the_same_leader() {
        let mut a = Election::new("a");
        let mut b = Election::new("b");
        let all = names(&["a", "b"]);
        a.on_view(&all, true);
        b.on_view(&all, true);
        b.on_announce("a", 1);
        assert!(b.force().is_empty(), "only the leader starts a term");
        assert_eq!(
            a.force(),
            [
                ElectionEffect::Changed(leader("a", 2)),
                ElectionEffect::Announce { epoch: 2 }
            ]
        );
        assert_eq!(
            b.on_announce("a", 2),
            [ElectionEffect::Changed(leader("a", 2))]
        );
    }
}
