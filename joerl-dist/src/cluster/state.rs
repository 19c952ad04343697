//! The node life cycle as users see it, and what each membership change asks
//! of the node. No I/O: [`Membership`] takes the gossip driver's
//! [`SwimEvent`]s and gives back [`Effect`]s (cluster events, address
//! changes, disconnects, eager connects), which the cluster handle carries
//! out.
//!
//! Members are known by their gossip address, as SWIM knows them. One node
//! name may have more than one identity for a while (a node restarted on
//! another gossip port, before the old one is declared down): the node's
//! address is the one of its newest active identity (greatest creation, then
//! rejoin count), and the failure of an older identity never disconnects a
//! newer one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use super::gossip::SwimEvent;
use super::member::MemberId;

/// How a member stands, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MemberState {
    /// Not a member this node knows.
    Unknown,
    /// This node, announced to its seeds, before any member answered.
    Joining,
    /// A member that answers: its node can be reached.
    Active,
    /// Missed a probe and its indirect probes; still active (traffic is not
    /// stopped) until it is declared failed or refutes the suspicion.
    Suspected,
    /// Declared down by the cluster: its node is `noconnection` to every
    /// link and monitor. It comes back only as a newer identity.
    Failed,
    /// This node, telling the others it leaves.
    Leaving,
    /// Left the cluster gracefully.
    Left,
}

impl MemberState {
    /// Whether a member in this state counts as active (`Active` or
    /// `Suspected`).
    pub fn is_active(self) -> bool {
        matches!(self, MemberState::Active | MemberState::Suspected)
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Unknown => "Unknown",
            MemberState::Joining => "Joining",
            MemberState::Active => "Active",
            MemberState::Suspected => "Suspected",
            MemberState::Failed => "Failed",
            MemberState::Leaving => "Leaving",
            MemberState::Left => "Left",
        })
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The node's full name (`name@host`).
    pub name: String,
    /// Where its gossip socket listens (the member's unique address).
    pub gossip_addr: SocketAddr,
    /// Where its distribution listener accepts connections.
    pub dist_addr: SocketAddr,
    /// How it stands.
    pub state: MemberState,
    /// The node's creation (a restarted node has another).
    pub creation: u32,
    /// How many times this creation rejoined after being declared failed:
    /// with `creation`, which incarnation of the node this is.
    pub incarnation: u32,
    /// Its roles, version and the like.
    pub metadata: BTreeMap<String, String>,
}

impl Member {
    fn of(id: &MemberId, state: MemberState) -> Member {
        Member {
            name: id.node.clone(),
            gossip_addr: id.gossip,
            dist_addr: id.dist,
            state,
            creation: id.creation,
            incarnation: id.rejoin,
            metadata: id.metadata.clone(),
        }
    }

    fn is(&self, id: &MemberId) -> bool {
        self.name == id.node
            && self.gossip_addr == id.gossip
            && self.creation == id.creation
            && self.incarnation == id.rejoin
    }

    fn rank(&self) -> (u32, u32) {
        (self.creation, self.incarnation)
    }
}

/// Whether the cluster, as this node sees it, keeps a majority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterHealth {
    /// The active members (this node included) are more than half of
    /// `total`: SNGO's rule and Akka's keep-majority test.
    pub healthy: bool,
    /// Active (or suspected) members, this node included.
    pub active: usize,
    /// The last known size: active and failed members, this node included
    /// (members that left do not count; a node counts once, whatever its
    /// incarnations).
    pub total: usize,
    /// Members suspected now (counted in `active`).
    pub suspected: usize,
}

/// A membership change, delivered in order and none dropped: to actors as
/// messages (`Cluster::monitor_members`) and to other code as a stream
/// (`Cluster::subscribe`). Every event is about another member; this node's
/// own state is `Cluster::self_member`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClusterEvent {
    /// A node incarnation (name and creation) this node had not seen joined
    /// the cluster. `MemberUp` follows at once: joerl has no leader step
    /// between the two.
    MemberJoined(Member),
    /// A member became active: its node can be reached from now on (also a
    /// failed member back under a newer incarnation).
    MemberUp(Member),
    /// An active member is suspected. Traffic is not stopped.
    MemberSuspected(Member),
    /// A suspected member refuted the suspicion.
    MemberRecovered(Member),
    /// A member was declared failed: its node is `noconnection` from now on
    /// (unless a newer incarnation of it is active).
    MemberFailed(Member),
    /// A member left gracefully.
    MemberLeft(Member),
    /// Whether the cluster keeps a majority changed.
    HealthChanged(ClusterHealth),
    /// The placement layer's leader changed (membership itself never sends
    /// it): the node that leads now, if any, and its epoch.
    LeaderChanged {
        /// The leader's node name (`None`: no leader, for want of a healthy
        /// majority).
        leader: Option<String>,
        /// Its epoch (the last one's while there is none).
        epoch: u64,
    },
    /// The metadata store placement goes through stopped or started
    /// answering (placement through a store only): while it does not, the
    /// node is in degraded mode.
    MetadataStore {
        /// True if it answers again.
        reachable: bool,
        /// The last failure, while it does not.
        error: Option<String>,
    },
}

/// What a membership change asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell subscribers.
    Event(ClusterEvent),
    /// From now on `node` is dialed at this address (`None`: not through
    /// membership).
    Route {
        /// The node's name.
        node: String,
        /// Its dist address.
        dist: Option<SocketAddr>,
    },
    /// Treat `node` as down now (`noconnection` to links and monitors),
    /// unless the incarnation connected is another than `creation`.
    Disconnect {
        /// The node's name.
        node: String,
        /// The creation of the incarnation that failed or left.
        creation: u32,
        /// Why, for the node-down reason.
        reason: &'static str,
    },
    /// Connect to `node` now (eager connect, Erlang's `connect_all`).
    Connect(String),
}

/// Most failed or departed identities remembered (the oldest is forgotten
/// first); the active ones are bounded by the cluster's size.
pub const MAX_GONE: usize = 1024;

/// The membership as this node sees it: a state machine over gossip events.
#[derive(Debug)]
pub struct Membership {
    me: Member,
    others: HashMap<SocketAddr, Member>,
    /// Failed and departed identities, oldest first (bounded).
    gone: VecDeque<SocketAddr>,
    /// Node incarnations (name, creation) already announced as joined.
    seen: HashSet<(String, u32)>,
    routes: HashMap<String, SocketAddr>,
    health: ClusterHealth,
    connect_all: bool,
}

impl Membership {
    /// This node as `me`; `joining` if it starts by announcing to seeds,
    /// else it is a cluster of one, active at once. With `connect_all`, each
    /// member that comes up is connected to at once.
    pub fn new(me: &MemberId, joining: bool, connect_all: bool) -> Membership {
        let state = if joining {
            MemberState::Joining
        } else {
            MemberState::Active
        };
        let mut m = Membership {
            me: Member::of(me, state),
            others: HashMap::new(),
            gone: VecDeque::new(),
            seen: HashSet::new(),
            routes: HashMap::new(),
            health: ClusterHealth {
                healthy: true,
                active: 1,
                total: 1,
                suspected: 0,
            },
            connect_all,
        };
        m.health = m.compute_health();
        m
    }

    /// This node.
    pub fn self_member(&self) -> Member {
        self.me.clone()
    }

    /// The other members known now, by name, then newest incarnation first.
    pub fn members(&self) -> Vec<Member> {
        let mut v: Vec<Member> = self.others.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(b.rank().cmp(&a.rank())));
        v
    }

    /// The member named `name` (its newest identity, active ones first).
    pub fn member(&self, name: &str) -> Option<Member> {
        if name == self.me.name {
            return Some(self.me.clone());
        }
        self.others
            .values()
            .filter(|m| m.name == name)
            .max_by_key(|m| (m.state.is_active(), m.rank()))
            .cloned()
    }

    /// The health now.
    pub fn health(&self) -> ClusterHealth {
        self.health
    }

    /// This node starts announcing to seeds (a `join`): `Joining` unless it
    /// already has members.
    pub fn joining(&mut self) {
        if self.me.state == MemberState::Active
            && !self.others.values().any(|m| m.state.is_active())
        {
            self.me.state = MemberState::Joining;
        }
    }

    /// This node tells the others it leaves.
    pub fn leaving(&mut self) {
        self.me.state = MemberState::Leaving;
    }

    /// This node has left: it knows no member any more.
    pub fn left(&mut self) -> Vec<Effect> {
        self.me.state = MemberState::Left;
        let names: HashSet<String> = self.others.values().map(|m| m.name.clone()).collect();
        self.others.clear();
        self.gone.clear();
        let mut out = Vec::new();
        for name in names {
            self.reroute(&name, &mut out);
        }
        self.health = self.compute_health();
        out
    }

    /// Applies one gossip event: what it asks of the node, in order.
    pub fn apply(&mut self, event: SwimEvent) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            SwimEvent::Joined => {
                if self.me.state == MemberState::Joining {
                    self.me.state = MemberState::Active;
                }
            }
            SwimEvent::Rejoined(id) => {
                self.me = Member::of(&id, MemberState::Active);
            }
            SwimEvent::Up(id) => self.up(&id, &mut out),
            SwimEvent::Suspected(id) => {
                if let Some(m) = self.current(&id)
                    && m.state == MemberState::Active
                {
                    m.state = MemberState::Suspected;
                    let m = m.clone();
                    out.push(Effect::Event(ClusterEvent::MemberSuspected(m)));
                }
            }
            SwimEvent::Refuted(id) => {
                if let Some(m) = self.current(&id)
                    && m.state == MemberState::Suspected
                {
                    m.state = MemberState::Active;
                    let m = m.clone();
                    out.push(Effect::Event(ClusterEvent::MemberRecovered(m)));
                }
            }
            SwimEvent::Down(id) => self.gone_from(&id, MemberState::Failed, &mut out),
            SwimEvent::Left(id) => self.gone_from(&id, MemberState::Left, &mut out),
            SwimEvent::Renamed { old, new, alive } => self.renamed(&old, &new, alive, &mut out),
        }
        let now = self.compute_health();
        if now.healthy != self.health.healthy {
            out.push(Effect::Event(ClusterEvent::HealthChanged(now)));
        }
        self.health = now;
        out
    }

    fn current(&mut self, id: &MemberId) -> Option<&mut Member> {
        self.others.get_mut(&id.gossip).filter(|m| m.is(id))
    }

    fn up(&mut self, id: &MemberId, out: &mut Vec<Effect>) {
        // This node's own earlier identity (a restart on another gossip
        // port, before the cluster found the old one down) is not a member.
        if id.node == self.me.name {
            return;
        }
        let member = Member::of(id, MemberState::Active);
        self.others.insert(id.gossip, member.clone());
        self.gone.retain(|a| *a != id.gossip);
        // The route first: a subscriber that sends to the member at its
        // `MemberUp` finds it.
        self.reroute(&id.node, out);
        if self.seen.insert((id.node.clone(), id.creation)) {
            out.push(Effect::Event(ClusterEvent::MemberJoined(member.clone())));
        }
        out.push(Effect::Event(ClusterEvent::MemberUp(member)));
        if self.connect_all {
            out.push(Effect::Connect(id.node.clone()));
        }
    }

    fn gone_from(&mut self, id: &MemberId, state: MemberState, out: &mut Vec<Effect>) {
        let Some(m) = self.current(id) else { return };
        if !m.state.is_active() {
            return;
        }
        m.state = state;
        let m = m.clone();
        let was = self.routes.get(&id.node).copied();
        out.push(Effect::Event(if state == MemberState::Left {
            ClusterEvent::MemberLeft(m)
        } else {
            ClusterEvent::MemberFailed(m)
        }));
        self.remember_gone(id.gossip);
        if state == MemberState::Left {
            // A node that left counts no more, in any incarnation but an
            // active one.
            self.seen.remove(&(id.node.clone(), id.creation));
        }
        self.reroute(&id.node, out);
        // Down if the node was reached at this identity's address and is not
        // any more (a newer incarnation elsewhere stays; the node checks the
        // creation of the one connected).
        let now = self.routes.get(&id.node).copied();
        if was == Some(id.dist) && now != Some(id.dist) {
            out.push(Effect::Disconnect {
                node: id.node.clone(),
                creation: id.creation,
                reason: if state == MemberState::Left {
                    "left the cluster"
                } else {
                    "declared failed by cluster membership"
                },
            });
        }
    }

    fn renamed(&mut self, old: &MemberId, new: &MemberId, alive: bool, out: &mut Vec<Effect>) {
        if new.node == self.me.name {
            // This node's own earlier identity: not a member.
            if self.others.get(&old.gossip).is_some_and(|m| m.is(old)) {
                self.others.remove(&old.gossip);
                self.reroute(&old.node, out);
            }
            return;
        }
        let Some(m) = self.others.get(&old.gossip).filter(|m| m.is(old)).cloned() else {
            return;
        };
        if !m.state.is_active() {
            // Down before. A newer one alive gets its `Up` next; a newer one
            // down too takes the old one's place among the failed, unless
            // the old one had left.
            if !alive && m.state == MemberState::Failed {
                self.others
                    .insert(new.gossip, Member::of(new, MemberState::Failed));
            }
            return;
        }
        let rejoined = old.node == new.node
            && old.creation == new.creation
            && new.rejoin > old.rejoin
            && old.dist == new.dist;
        if alive && rejoined {
            // The same process, rejoined after others declared it down:
            // here it never went away.
            let state = m.state;
            self.others.insert(new.gossip, Member::of(new, state));
            self.reroute(&new.node, out);
            return;
        }
        // Another process at the address, or the newer one down already: the
        // old one is gone.
        self.gone_from(old, MemberState::Failed, out);
        if alive {
            self.up(new, out);
        } else {
            self.others
                .insert(new.gossip, Member::of(new, MemberState::Failed));
        }
    }

    fn remember_gone(&mut self, addr: SocketAddr) {
        self.gone.retain(|a| *a != addr);
        self.gone.push_back(addr);
        while self.gone.len() > MAX_GONE {
            if let Some(oldest) = self.gone.pop_front()
                && self
                    .others
                    .get(&oldest)
                    .is_some_and(|m| !m.state.is_active())
                && let Some(m) = self.others.remove(&oldest)
                && !self
                    .others
                    .values()
                    .any(|o| o.name == m.name && o.creation == m.creation)
            {
                self.seen.remove(&(m.name, m.creation));
            }
        }
    }

    /// Points `name` at its newest active identity, if that changed.
    fn reroute(&mut self, name: &str, out: &mut Vec<Effect>) {
        let best = self
            .others
            .values()
            .filter(|m| m.name == name && m.state.is_active())
            .max_by_key(|m| m.rank())
            .map(|m| m.dist_addr);
        let before = self.routes.get(name).copied();
        if best == before {
            return;
        }
        match best {
            Some(a) => self.routes.insert(name.to_string(), a),
            None => self.routes.remove(name),
        };
        out.push(Effect::Route {
            node: name.to_string(),
            dist: best,
        });
    }

    fn compute_health(&self) -> ClusterHealth {
        let mut active = HashSet::new();
        let mut failed = HashSet::new();
        let mut suspected = 0;
        for m in self.others.values() {
            match m.state {
                MemberState::Active => {
                    active.insert(&m.name);
                }
                MemberState::Suspected => {
                    suspected += 1;
                    active.insert(&m.name);
                }
                MemberState::Failed => {
                    failed.insert(&m.name);
                }
                _ => {}
            }
        }
        let me_active = matches!(
            self.me.state,
            MemberState::Active | MemberState::Joining | MemberState::Leaving
        );
        let active_n = active.len() + usize::from(me_active);
        let failed_n = failed.iter().filter(|n| !active.contains(*n)).count();
        let total = active_n + failed_n;
        ClusterHealth {
            healthy: active_n * 2 > total,
            active: active_n,
            total,
            suspected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16, name: &str, creation: u32, rejoin: u32) -> MemberId {
        MemberId {
            node: format!("{name}@127.0.0.1"),
            gossip: SocketAddr::from(([127, 0, 0, 1], port)),
            dist: SocketAddr::from(([127, 0, 0, 1], port + 1000)),
            creation,
            rejoin,
            metadata: Default::default(),
        }
    }

    fn events(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Event(ClusterEvent::MemberJoined(m)) => format!("joined {}", m.name),
                Effect::Event(ClusterEvent::MemberUp(m)) => format!("up {}", m.name),
                Effect::Event(ClusterEvent::MemberSuspected(m)) => format!("suspected {}", m.name),
                Effect::Event(ClusterEvent::MemberRecovered(m)) => format!("recovered {}", m.name),
                Effect::Event(ClusterEvent::MemberFailed(m)) => format!("failed {}", m.name),
                Effect::Event(ClusterEvent::MemberLeft(m)) => format!("left {}", m.name),
                Effect::Event(ClusterEvent::HealthChanged(h)) => {
                    format!("health {} {}/{}", h.healthy, h.active, h.total)
                }
                Effect::Event(ClusterEvent::LeaderChanged { .. }) => "leader".into(),
                Effect::Event(ClusterEvent::MetadataStore { reachable, .. }) => {
                    format!("store {reachable}")
                }
                Effect::Route { node, dist } => format!("route {node} {}", dist.is_some()),
                Effect::Disconnect { node, .. } => format!("disconnect {node}"),
                Effect::Connect(n) => format!("connect {n}"),
            })
            .collect()
    }

    #[test]
    fn the_life_cycle_of_a_member_up_suspected_recovered_failed() {
        let me = id(1, "me", 1, 0);
        let mut m = Membership::new(&me, true, false);
        assert_eq!(m.self_member().state, MemberState::Joining);
        m.apply(SwimEvent::Joined);
        assert_eq!(m.self_member().state, MemberState::Active);
        let b = id(2, "b", 7, 0);
        assert_eq!(
            events(&m.apply(SwimEvent::Up(b.clone()))),
            [
                "route b@127.0.0.1 true",
                "joined b@127.0.0.1",
                "up b@127.0.0.1"
            ]
        );
        assert_eq!(
            events(&m.apply(SwimEvent::Suspected(b.clone()))),
            ["suspected b@127.0.0.1"]
        );
        assert_eq!(
            m.member("b@127.0.0.1").unwrap().state,
            MemberState::Suspected
        );
        assert!(m.health().healthy, "a suspected member still counts");
        assert_eq!(
            events(&m.apply(SwimEvent::Refuted(b.clone()))),
            ["recovered b@127.0.0.1"]
        );
        let c = id(3, "c", 1, 0);
        m.apply(SwimEvent::Up(c.clone()));
        assert_eq!(
            events(&m.apply(SwimEvent::Down(b.clone()))),
            [
                "failed b@127.0.0.1",
                "route b@127.0.0.1 false",
                "disconnect b@127.0.0.1"
            ]
        );
        assert_eq!(m.health().active, 2);
        assert_eq!(m.health().total, 3);
        // A second failure loses the majority: one event says so.
        assert_eq!(
            events(&m.apply(SwimEvent::Down(c.clone()))),
            [
                "failed c@127.0.0.1",
                "route c@127.0.0.1 false",
                "disconnect c@127.0.0.1",
                "health false 1/3"
            ]
        );
        // The same down again changes nothing (exactly once).
        assert!(events(&m.apply(SwimEvent::Down(c))).is_empty());
        // b rejoins under its next incarnation: up again, not joined again.
        let b1 = id(2, "b", 7, 1);
        assert!(
            events(&m.apply(SwimEvent::Renamed {
                old: b.clone(),
                new: b1.clone(),
                alive: true
            }))
            .is_empty()
        );
        assert_eq!(
            events(&m.apply(SwimEvent::Up(b1.clone()))),
            [
                "route b@127.0.0.1 true",
                "up b@127.0.0.1",
                "health true 2/3"
            ]
        );
        assert_eq!(m.member("b@127.0.0.1").unwrap().incarnation, 1);
    }

    #[test]
    fn an_old_incarnation_failing_never_disconnects_the_new_one() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, true);
        let old = id(2, "b", 1, 0);
        m.apply(SwimEvent::Up(old.clone()));
        // Restarted on another gossip port before the old one is found down.
        let new = id(5, "b", 2, 0);
        assert_eq!(
            events(&m.apply(SwimEvent::Up(new.clone()))),
            [
                "route b@127.0.0.1 true",
                "joined b@127.0.0.1",
                "up b@127.0.0.1",
                "connect b@127.0.0.1"
            ]
        );
        assert_eq!(m.member("b@127.0.0.1").unwrap().creation, 2);
        assert_eq!(
            events(&m.apply(SwimEvent::Down(old))),
            ["failed b@127.0.0.1"],
            "no disconnect, no reroute: the new incarnation stays"
        );
        assert_eq!(m.health().total, 2, "a node counts once");
        assert!(m.health().healthy);
    }

    #[test]
    fn a_restart_at_the_same_address_fails_the_old_and_joins_the_new() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, false);
        let old = id(2, "b", 1, 0);
        m.apply(SwimEvent::Up(old.clone()));
        let new = id(2, "b", 2, 0);
        assert_eq!(
            events(&m.apply(SwimEvent::Renamed {
                old,
                new,
                alive: true
            })),
            [
                "failed b@127.0.0.1",
                "route b@127.0.0.1 false",
                "disconnect b@127.0.0.1",
                "route b@127.0.0.1 true",
                "joined b@127.0.0.1",
                "up b@127.0.0.1"
            ]
        );
        assert_eq!(m.members().len(), 1);
    }

    #[test]
    fn a_leave_is_left_not_failed_and_leaves_the_count() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, false);
        let b = id(2, "b", 1, 0);
        m.apply(SwimEvent::Up(b.clone()));
        assert_eq!(
            events(&m.apply(SwimEvent::Left(b))),
            [
                "left b@127.0.0.1",
                "route b@127.0.0.1 false",
                "disconnect b@127.0.0.1"
            ]
        );
        assert_eq!(m.health().total, 1);
        assert_eq!(m.member("b@127.0.0.1").unwrap().state, MemberState::Left);
        assert!(m.member("x@127.0.0.1").is_none());
    }

    #[test]
    fn a_rejoin_keeps_the_member_and_a_same_creation_elsewhere_is_a_restart() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, false);
        let b = id(2, "b", 1, 0);
        m.apply(SwimEvent::Up(b.clone()));
        m.apply(SwimEvent::Suspected(b.clone()));
        // Others declared it down; it rejoined before this node heard: the
        // suspicion carries over until it is refuted.
        let b1 = id(2, "b", 1, 1);
        assert_eq!(
            events(&m.apply(SwimEvent::Renamed {
                old: b.clone(),
                new: b1.clone(),
                alive: true
            })),
            Vec::<String>::new()
        );
        assert_eq!(
            m.member("b@127.0.0.1").unwrap().state,
            MemberState::Suspected
        );
        assert_eq!(
            events(&m.apply(SwimEvent::Refuted(b1.clone()))),
            ["recovered b@127.0.0.1"]
        );
        // The same creation with another dist address is another process
        // (a restart within the creation's second): the old one failed.
        let mut b2 = id(2, "b", 1, 0);
        b2.dist = SocketAddr::from(([127, 0, 0, 1], 9999));
        b2.rejoin = 2;
        assert_eq!(
            events(&m.apply(SwimEvent::Renamed {
                old: b1,
                new: b2,
                alive: true
            })),
            [
                "failed b@127.0.0.1",
                "route b@127.0.0.1 false",
                "disconnect b@127.0.0.1",
                "route b@127.0.0.1 true",
                "up b@127.0.0.1"
            ]
        );
    }

    #[test]
    fn a_replacement_that_is_down_already_is_not_announced_up() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, true);
        let old = id(2, "b", 1, 0);
        m.apply(SwimEvent::Up(old.clone()));
        let new = id(2, "b", 2, 0);
        assert_eq!(
            events(&m.apply(SwimEvent::Renamed {
                old,
                new: new.clone(),
                alive: false
            })),
            [
                "failed b@127.0.0.1",
                "route b@127.0.0.1 false",
                "disconnect b@127.0.0.1",
                "health false 1/2"
            ]
        );
        assert_eq!(m.member("b@127.0.0.1").unwrap().creation, 2);
        assert_eq!(m.member("b@127.0.0.1").unwrap().state, MemberState::Failed);
        // foca's `Down` of the newer one then changes nothing.
        assert!(events(&m.apply(SwimEvent::Down(new))).is_empty());
        assert_eq!(m.health().total, 2);
    }

    #[test]
    fn this_nodes_own_earlier_identity_is_not_a_member() {
        let me = id(5, "me", 2, 0);
        let mut m = Membership::new(&me, false, false);
        let earlier = id(1, "me", 1, 0);
        assert!(events(&m.apply(SwimEvent::Up(earlier.clone()))).is_empty());
        assert!(events(&m.apply(SwimEvent::Down(earlier))).is_empty());
        assert!(m.members().is_empty());
        assert_eq!(m.health().total, 1);
    }

    #[test]
    fn the_failure_of_the_newest_incarnation_disconnects_it_even_if_an_older_lingers() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, false);
        let old = id(2, "b", 1, 0);
        let new = id(3, "b", 2, 0);
        m.apply(SwimEvent::Up(old));
        m.apply(SwimEvent::Up(new.clone()));
        let e = m.apply(SwimEvent::Down(new));
        assert!(
            e.contains(&Effect::Disconnect {
                node: "b@127.0.0.1".into(),
                creation: 2,
                reason: "declared failed by cluster membership"
            }),
            "{e:?}"
        );
    }

    #[test]
    fn departed_identities_are_bounded() {
        let mut m = Membership::new(&id(1, "me", 1, 0), false, false);
        for i in 0..(MAX_GONE as u16 + 50) {
            let b = id(10_000 + i, &format!("n{i}"), 1, 0);
            m.apply(SwimEvent::Up(b.clone()));
            if i % 2 == 0 {
                m.apply(SwimEvent::Left(b));
            } else {
                m.apply(SwimEvent::Down(b));
            }
        }
        assert!(m.members().len() <= MAX_GONE);
        assert!(m.seen.len() <= MAX_GONE, "{}", m.seen.len());
    }
}
