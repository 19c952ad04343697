//! The SWIM driver: one task per member owns its UDP socket, its `foca`
//! instance and its timers. foca decides (probes, suspicion, gossip); this
//! task only moves its bytes and timers, seals and opens every packet
//! ([`packet`](super::packet)), counts what it refuses, and reports member
//! changes to its subscribers, in order and without loss.
//!
//! Inside the envelope, a body starts with a kind byte: 0 for foca's data, 1
//! for a leave notice (the leaving member's whole identity), sent straight to
//! every known member before SWIM's own leave, so that a leave is told apart
//! from a failure. A notice counts only from the address of the identity it
//! names, and only for the identity the receiver knows there now: one of an
//! older incarnation, or about someone else, is refused. A notice lost on the
//! way makes the leave look like a failure.
//!
//! Besides foca's own periodic announce (to random members, and to members
//! it holds down, which is how the two sides of a healed partition find each
//! other again), the driver announces to its seeds: while it knows no member,
//! with a backoff from the probe interval up to the announce interval; after
//! that, every announce interval, to the seeds that are not members it knows
//! alive (a seed that restarted, or was on the far side of a partition).
//! Timers live in the driver's own queue, so nothing outlives the driver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::ClusterConfig;
use super::member::{MemberCodec, MemberId};
use super::packet::{MIN_PACKET, PacketError, PacketKey};

/// How a member stands, as SWIM sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwimState {
    /// Answering probes.
    Alive,
    /// Missed a probe; not yet declared down (traffic is not stopped).
    Suspected,
    /// Declared down by the cluster (SWIM's confirmed failure).
    Down,
    /// Left the cluster gracefully (it said so before going).
    Left,
}

/// One member as the driver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwimMember {
    /// Who.
    pub id: MemberId,
    /// Its SWIM incarnation (raised by the member to refute a suspicion).
    pub incarnation: u16,
    /// How it stands.
    pub state: SwimState,
}

/// A change in membership, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwimEvent {
    /// A member became active.
    Up(MemberId),
    /// An active member is suspected (missed a probe and its indirect
    /// probes). It is still active.
    Suspected(MemberId),
    /// A suspected member refuted the suspicion: it answers again.
    Refuted(MemberId),
    /// An active member was declared down.
    Down(MemberId),
    /// An active member left gracefully.
    Left(MemberId),
    /// A newer identity replaced an older one at the same address (a
    /// restart, or a rejoin after being declared down). When the older one
    /// was down and the newer is alive, an `Up` of the newer one follows.
    Renamed {
        /// The identity that was known.
        old: MemberId,
        /// The one that replaced it.
        new: MemberId,
        /// Whether the newer one is active (SWIM's view when the change was
        /// reported).
        alive: bool,
    },
    /// This member is known by at least one active member: it has joined
    /// (again, after a rejoin).
    Joined,
    /// This member learned the cluster declared it down and rejoined under
    /// the given identity (the same node, the next rejoin count).
    Rejoined(MemberId),
}

/// Counters of one gossip socket.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Packets accepted and handed to SWIM.
    pub accepted: AtomicU64,
    /// Packets sent.
    pub sent: AtomicU64,
    /// Bytes received, refused packets included.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Refused: shorter than a header and a tag.
    pub truncated: AtomicU64,
    /// Refused: over `max_packet_size`.
    pub oversized: AtomicU64,
    /// Refused: not a joerl gossip packet, or another version.
    pub not_gossip: AtomicU64,
    /// Refused: of another cluster name.
    pub wrong_cluster: AtomicU64,
    /// Refused: failed authentication (another cookie, or altered).
    pub bad_tag: AtomicU64,
    /// Authenticated, but SWIM could not read it, or a leave notice that
    /// names another identity than the one at its address.
    pub malformed: AtomicU64,
    /// Dropped on purpose, to or from an address given to
    /// [`Gossip::block`] (fault injection, not a refusal).
    pub blocked: AtomicU64,
}

impl GossipStats {
    fn refused(&self, e: PacketError) {
        let c = match e {
            PacketError::Truncated(_) => &self.truncated,
            PacketError::Oversized { .. } => &self.oversized,
            PacketError::NotGossip | PacketError::Version(_) => &self.not_gossip,
            PacketError::WrongCluster => &self.wrong_cluster,
            PacketError::BadTag => &self.bad_tag,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every refused packet, whatever the reason.
    pub fn refused_total(&self) -> u64 {
        [
            &self.truncated,
            &self.oversized,
            &self.not_gossip,
            &self.wrong_cluster,
            &self.bad_tag,
            &self.malformed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

enum Command {
    Join {
        seeds: Vec<SocketAddr>,
        wait: Duration,
        reply: oneshot::Sender<JoinReply>,
    },
    Leave(oneshot::Sender<()>),
    Members(oneshot::Sender<Vec<SwimMember>>),
    Subscribe(mpsc::UnboundedSender<SwimEvent>),
    Block(Vec<SocketAddr>),
}

/// A running gossip member. Dropping it stops the task without a leave; call
/// [`leave`](Self::leave) to leave gracefully.
#[derive(Debug)]
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    local: SocketAddr,
    stats: Arc<GossipStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// foca's settings from the cluster's.
fn foca_config(c: &ClusterConfig) -> foca::Config {
    let mut f = foca::Config::new_lan(NonZeroU32::new(8).expect("non-zero"));
    f.probe_period = c.probe_interval;
    f.probe_rtt = c.probe_timeout;
    f.suspect_to_down_after = c.probe_interval * c.suspicion_multiplier;
    f.max_packet_size =
        // The envelope and the body's kind byte come on top of foca's data.
        NonZeroUsize::new(c.max_packet_size - MIN_PACKET - 1).expect("validated: at least 512");
    f.periodic_gossip = Some(foca::PeriodicParams {
        frequency: c.gossip_interval,
        num_members: NonZeroUsize::new(3).expect("non-zero"),
    });
    f.periodic_announce = Some(foca::PeriodicParams {
        frequency: c.announce_interval,
        num_members: NonZeroUsize::new(1).expect("non-zero"),
    });
    f.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: c.announce_interval,
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    // A down member is forgotten after this (then it may come back under
    // the identity it had); until then it is announced to, so a healed
    // partition merges.
    f.remove_down_after = REMOVE_DOWN_AFTER;
    // Each update goes to 3 members per gossip round until it was sent this
    // many times. foca's LAN default for 8 members (3) reaches about 95% of
    // members per update (an epidemic of fan-out 3), so at 20 members some
    // learned a join or a failure only from their own probes, seconds
    // later; 8 is memberlist's figure for 20 to 99 members.
    f.max_transmissions = std::num::NonZeroU8::new(MAX_TRANSMISSIONS).expect("non-zero");
    f
}

/// How many times each membership update is sent on.
const MAX_TRANSMISSIONS: u8 = 8;

/// How long a member declared down is remembered.
const REMOVE_DOWN_AFTER: Duration = Duration::from_secs(3600);

/// A seed's placeholder identity: foca needs one to address the announce,
/// and the seed's real identity (a later creation) replaces it.
fn placeholder(addr: SocketAddr) -> MemberId {
    MemberId {
        node: String::new(),
        gossip: addr,
        dist: addr,
        creation: 0,
        rejoin: 0,
        metadata: Default::default(),
    }
}

impl Gossip {
    /// Binds the gossip socket of `config` and starts SWIM as `identity`
    /// (whose `gossip` address is replaced by the bound one), with packets
    /// keyed by `cookie`.
    pub async fn start(
        config: &ClusterConfig,
        cookie: &str,
        identity: MemberId,
    ) -> std::io::Result<Gossip> {
        let key = PacketKey::new(cookie, &config.cluster_name, config.max_packet_size);
        Self::start_keyed(config, key, identity).await
    }

    /// [`start`](Self::start) with the packet key already made.
    pub async fn start_keyed(
        config: &ClusterConfig,
        key: PacketKey,
        identity: MemberId,
    ) -> std::io::Result<Gossip> {
        Ok(Self::start_with_events(config, key, identity).await?.0)
    }

    /// [`start_keyed`](Self::start_keyed), with a subscription made before
    /// the first packet is read (nothing is missed).
    pub async fn start_with_events(
        config: &ClusterConfig,
        key: PacketKey,
        mut identity: MemberId,
    ) -> std::io::Result<(Gossip, mpsc::UnboundedReceiver<SwimEvent>)> {
        let socket = UdpSocket::bind((config.bind_addr, config.port)).await?;
        let local = socket.local_addr()?;
        identity.gossip = local;
        let foca = Foca::new(
            identity,
            foca_config(config),
            rand::rngs::StdRng::from_os_rng(),
            MemberCodec,
        );
        let stats = Arc::new(GossipStats::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let (first, events) = mpsc::unbounded_channel();
        let driver = Driver {
            socket,
            key,
            foca,
            runtime: AccumulatingRuntime::new(),
            stats: stats.clone(),
            subscribers: vec![first],
            sealed: Vec::new(),
            framed: Vec::new(),
            leaving: HashMap::new(),
            suspects: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            seeds: Vec::new(),
            next_announce: Some(Instant::now() + config.probe_interval),
            backoff: config.probe_interval,
            first_backoff: config.probe_interval,
            announce_interval: config.announce_interval,
            grace: config.probe_timeout,
            joins: Vec::new(),
            blocked: HashSet::new(),
        };
        let task = tokio::spawn(driver.run(rx));
        Ok((
            Gossip {
                commands,
                local,
                stats,
                task,
            },
            events,
        ))
    }

    /// Stops at once, without a leave (as a crash would look to the others).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// The bound gossip address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Announces this member to `seeds` (their gossip addresses) and keeps
    /// them as seeds (announced to again while this member knows nobody, and
    /// every announce interval while they are not members). Waits at most
    /// `wait` for them to answer: the seeds that answered by then (once one
    /// answered, the others get a probe timeout more).
    pub async fn join(&self, seeds: Vec<SocketAddr>, wait: Duration) -> JoinReply {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Join { seeds, wait, reply })
            .is_err()
        {
            return JoinReply::default();
        }
        rx.await.unwrap_or_default()
    }

    /// The members known now (this one excluded).
    pub async fn members(&self) -> Vec<SwimMember> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Members(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Every change from now on, in order, none dropped (the queue is
    /// unbounded: keep reading it).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<SwimEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Subscribe(tx));
        rx
    }

    /// Fault injection, for tests and drills: from now on, drops every
    /// packet to or from these gossip addresses (counted in `blocked`),
    /// as a network partition would; an empty list heals it.
    pub fn block(&self, addrs: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Block(addrs));
    }

    /// Leaves the cluster: tells the members this one is going, then stops
    /// (the handle then knows no members).
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

type Swim = Foca<MemberId, MemberCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// Most leave notices remembered at once (members that said they leave and
/// were not forgotten yet).
const MAX_LEAVING: usize = 4096;
/// Most seeds kept.
const MAX_SEEDS: usize = 256;
/// Most members held down announced to in one round while alone.
const MAX_DOWN_ANNOUNCES: usize = 16;

const BODY_SWIM: u8 = 0;
const BODY_LEAVING: u8 = 1;

/// How a `join` went: the seeds that answered from their own address, and
/// whether this member is known by an active member (a seed behind NAT, or
/// on another of its addresses, answers from an address not in the list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinReply {
    /// Seeds that answered.
    pub reached: Vec<SocketAddr>,
    /// SWIM said this member joined before the answer was given (so even
    /// with no seed in `reached`, it is in a cluster).
    pub joined: bool,
}

/// A `join` waiting for its seeds to answer.
struct PendingJoin {
    seeds: Vec<SocketAddr>,
    reached: Vec<SocketAddr>,
    joined: bool,
    deadline: Instant,
    reply: oneshot::Sender<JoinReply>,
}

struct Driver {
    socket: UdpSocket,
    key: PacketKey,
    foca: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    stats: Arc<GossipStats>,
    subscribers: Vec<mpsc::UnboundedSender<SwimEvent>>,
    sealed: Vec<u8>,
    framed: Vec<u8>,
    /// Members that said they leave, by gossip address.
    leaving: HashMap<SocketAddr, MemberId>,
    /// Members suspected now, by gossip address.
    suspects: HashMap<SocketAddr, MemberId>,
    /// foca's timers, by when they fire (a sequence number breaks ties).
    timers: BTreeMap<(Instant, u64), Timer<MemberId>>,
    timer_seq: u64,
    seeds: Vec<SocketAddr>,
    next_announce: Option<Instant>,
    backoff: Duration,
    first_backoff: Duration,
    announce_interval: Duration,
    grace: Duration,
    joins: Vec<PendingJoin>,
    blocked: HashSet<SocketAddr>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            // Timers first when due: a flood of packets does not stop
            // probes, suspicion or announces.
            if self.next_wake().is_some_and(|w| w <= Instant::now()) {
                self.wake();
                self.after_swim().await;
            }
            let wake = self.next_wake();
            tokio::select! {
                // Commands first: a subscription made before a change sees it.
                biased;
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                },
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    self.received(&buf[..n], from);
                }
                _ = sleep_until(wake) => self.wake(),
            }
            self.after_swim().await;
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Join { seeds, wait, reply } => {
                // Not itself: one seed list is often given to every member.
                let me = self.socket.local_addr().ok();
                let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| Some(*s) != me).collect();
                for &seed in &seeds {
                    if !self.seeds.contains(&seed) && self.seeds.len() < MAX_SEEDS {
                        self.seeds.push(seed);
                    }
                    let _ = self.foca.announce(placeholder(seed), &mut self.runtime);
                }
                self.backoff = self.first_backoff;
                self.next_announce = Some(Instant::now() + self.backoff);
                self.joins.push(PendingJoin {
                    seeds,
                    reached: Vec::new(),
                    joined: false,
                    deadline: Instant::now() + wait,
                    reply,
                });
                self.answer_joins(Instant::now());
            }
            Command::Members(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Subscribe(tx) => self.subscribers.push(tx),
            Command::Block(addrs) => self.blocked = addrs.into_iter().collect(),
            Command::Leave(_) => unreachable!("handled by the loop"),
        }
    }

    fn received(&mut self, packet: &[u8], from: SocketAddr) {
        self.stats
            .bytes_in
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        if self.blocked.contains(&from) {
            self.stats.blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.key.open(packet) {
            Ok([BODY_SWIM, body @ ..]) => {
                if self.foca.handle_data(body, &mut self.runtime).is_ok() {
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    self.heard_from(from);
                } else {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok([BODY_LEAVING, body @ ..]) => {
                // Only for the identity active at its own address now.
                let notice =
                    crate::codec::decode_prefix::<MemberId>(body)
                        .ok()
                        .filter(|(id, used)| {
                            *used == body.len()
                                && id.gossip == from
                                && self
                                    .foca
                                    .iter_membership_state()
                                    .any(|m| m.id() == id && m.state() != State::Down)
                        });
                match notice {
                    // Bounded: notices from more members than any cluster
                    // has are dropped (and counted as malformed).
                    Some((id, _))
                        if self.leaving.len() < MAX_LEAVING
                            || self.leaving.contains_key(&id.gossip) =>
                    {
                        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        self.leaving.insert(from, id.clone());
                        // It is gone now: down at once (reported as left),
                        // rather than found by probes. Not gossiped on:
                        // every member gets its own notice first, and a
                        // down gossiped ahead of a member's notice would
                        // make that member see a failure.
                        let _ = self.foca.apply_many(
                            std::iter::once(foca::Member::new(id, 0, State::Down)),
                            false,
                            &mut self.runtime,
                        );
                    }
                    _ => {
                        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, %from, "gossip packet refused");
                self.stats.refused(e);
            }
        }
    }

    /// An authenticated packet came from `from`: a seed that answers.
    fn heard_from(&mut self, from: SocketAddr) {
        let mut any = false;
        for j in &mut self.joins {
            if j.seeds.contains(&from) && !j.reached.contains(&from) {
                j.reached.push(from);
                any = true;
            }
        }
        if any {
            let now = Instant::now();
            for j in &mut self.joins {
                // Once one answered, the others get a probe timeout more.
                if !j.reached.is_empty() {
                    j.deadline = j.deadline.min(now + self.grace);
                }
            }
            self.answer_joins(now);
        }
    }

    fn answer_joins(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.joins.len() {
            let j = &self.joins[i];
            if j.reached.len() == j.seeds.len() || j.deadline <= now {
                let j = self.joins.swap_remove(i);
                let _ = j.reply.send(JoinReply {
                    reached: j.reached,
                    joined: j.joined,
                });
            } else {
                i += 1;
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        let join = self.joins.iter().map(|j| j.deadline).min();
        [timer, join, self.next_announce]
            .into_iter()
            .flatten()
            .min()
    }

    fn wake(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Timer::RemoveDown(id) = &timer {
                if self.leaving.get(&id.gossip) == Some(id) {
                    self.leaving.remove(&id.gossip);
                }
            }
            let _ = self.foca.handle_timer(timer, &mut self.runtime);
        }
        if self.next_announce.is_some_and(|at| at <= now) {
            self.announce_to_seeds(now);
        }
        self.answer_joins(now);
    }

    /// Announces to the seeds that are not alive members and, while no
    /// member is alive, to members held down too (foca itself stops
    /// announcing to them then), with a backoff while alone.
    fn announce_to_seeds(&mut self, now: Instant) {
        let alive: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().gossip).collect();
        let alone = alive.is_empty();
        for seed in self.seeds.clone() {
            if !alive.contains(&seed) {
                let _ = self.foca.announce(placeholder(seed), &mut self.runtime);
            }
        }
        if alone {
            let down: Vec<MemberId> = self
                .foca
                .iter_membership_state()
                .filter(|m| {
                    m.state() == State::Down
                        && !m.id().node.is_empty()
                        && self.leaving.get(&m.id().gossip) != Some(m.id())
                        && !self.seeds.contains(&m.id().gossip)
                })
                .take(MAX_DOWN_ANNOUNCES)
                .map(|m| m.id().clone())
                .collect();
            for id in down {
                let _ = self.foca.announce(id, &mut self.runtime);
            }
        }
        let after = if alone {
            let b = self.backoff;
            self.backoff = (b * 2).min(self.announce_interval);
            b
        } else {
            self.backoff = self.first_backoff;
            self.announce_interval
        };
        self.next_announce = Some(now + after);
    }

    /// Sends what foca queued, schedules its timers, reports its changes.
    async fn after_swim(&mut self) {
        self.flush().await;
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        let mut events = Vec::new();
        while let Some(n) = self.runtime.to_notify() {
            let event = match n {
                OwnedNotification::MemberUp(id) if !id.node.is_empty() => {
                    if self.leaving.get(&id.gossip).is_some_and(|l| l != &id) {
                        self.leaving.remove(&id.gossip);
                    }
                    SwimEvent::Up(id)
                }
                OwnedNotification::MemberDown(id) if !id.node.is_empty() => {
                    self.suspects.remove(&id.gossip);
                    if self.leaving.get(&id.gossip) == Some(&id) {
                        SwimEvent::Left(id)
                    } else {
                        SwimEvent::Down(id)
                    }
                }
                OwnedNotification::Rename(old, new) if !old.node.is_empty() => {
                    // A suspicion of the old identity carries over to the
                    // new one; the diff below then sees it end.
                    if self.suspects.remove(&old.gossip).is_some() {
                        self.suspects.insert(new.gossip, new.clone());
                    }
                    let alive = self
                        .foca
                        .iter_membership_state()
                        .any(|m| m.id() == &new && m.state() != State::Down);
                    SwimEvent::Renamed { old, new, alive }
                }
                OwnedNotification::Active => {
                    // Joined, whoever answered: pending joins end soon.
                    let now = Instant::now();
                    for j in &mut self.joins {
                        j.joined = true;
                        j.deadline = j.deadline.min(now + self.grace);
                    }
                    SwimEvent::Joined
                }
                OwnedNotification::Rejoin(id) => SwimEvent::Rejoined(id),
                _ => continue,
            };
            events.push(event);
        }
        self.diff_suspects(&mut events);
        for event in events {
            self.subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    /// Suspicions foca started or dropped since the last look (foca does
    /// not report them).
    fn diff_suspects(&mut self, events: &mut Vec<SwimEvent>) {
        let mut now_suspect: HashMap<SocketAddr, &MemberId> = HashMap::new();
        let mut alive: HashSet<&MemberId> = HashSet::new();
        for m in self.foca.iter_membership_state() {
            if m.id().node.is_empty() {
                continue;
            }
            match m.state() {
                State::Suspect => {
                    now_suspect.insert(m.id().gossip, m.id());
                }
                State::Alive => {
                    alive.insert(m.id());
                }
                State::Down => {}
            }
        }
        let before = std::mem::take(&mut self.suspects);
        for (addr, id) in before {
            if now_suspect.get(&addr) == Some(&&id) {
                self.suspects.insert(addr, id);
            } else if alive.contains(&id) {
                events.push(SwimEvent::Refuted(id));
            }
        }
        for (addr, id) in now_suspect {
            if let std::collections::hash_map::Entry::Vacant(e) = self.suspects.entry(addr) {
                e.insert(id.clone());
                events.push(SwimEvent::Suspected(id.clone()));
            }
        }
    }

    /// The members foca knows, placeholders left out.
    fn snapshot(&self) -> Vec<SwimMember> {
        self.foca
            .iter_membership_state()
            .filter(|m| !m.id().node.is_empty())
            .map(|m| SwimMember {
                id: m.id().clone(),
                incarnation: m.incarnation(),
                state: match m.state() {
                    State::Alive => SwimState::Alive,
                    State::Suspect => SwimState::Suspected,
                    State::Down if self.leaving.get(&m.id().gossip) == Some(m.id()) => {
                        SwimState::Left
                    }
                    State::Down => SwimState::Down,
                },
            })
            .collect()
    }

    /// Tells every known member this one leaves, then leaves through SWIM.
    async fn leave(&mut self) {
        let mut notice = vec![BODY_LEAVING];
        let sealed = crate::codec::encode_into(self.foca.identity(), &mut notice).is_ok()
            && self.key.seal(&notice, &mut self.sealed).is_ok();
        if sealed {
            let members: Vec<SocketAddr> =
                self.foca.iter_members().map(|m| m.id().gossip).collect();
            for to in members {
                self.send(to).await;
            }
        }
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.flush().await;
    }

    /// Sends `self.sealed` to `to`, unless blocked.
    async fn send(&mut self, to: SocketAddr) {
        if self.blocked.contains(&to) {
            self.stats.blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(n) = self.socket.send_to(&self.sealed, to).await {
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Seals and sends what foca queued.
    async fn flush(&mut self) {
        while let Some((to, body)) = self.runtime.to_send() {
            self.framed.clear();
            self.framed.push(BODY_SWIM);
            self.framed.extend_from_slice(&body);
            if self.key.seal(&self.framed, &mut self.sealed).is_err() {
                continue;
            }
            self.send(to.gossip).await;
        }
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn config(name: &str) -> ClusterConfig {
        ClusterConfig::builder()
            .cluster_name(name)
            .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(0)
            .probe(Duration::from_millis(200), Duration::from_millis(80))
            .gossip_interval(Duration::from_millis(50))
            .build()
            .unwrap()
    }

    fn identity(n: u16) -> MemberId {
        MemberId {
            node: format!("m{n}@127.0.0.1"),
            gossip: SocketAddr::from(([127, 0, 0, 1], 0)),
            dist: SocketAddr::from(([127, 0, 0, 1], 20_000 + n)),
            creation: 1,
            rejoin: 0,
            metadata: Default::default(),
        }
    }

    async fn alive_names(g: &Gossip) -> Vec<String> {
        let mut v: Vec<String> = g
            .members()
            .await
            .into_iter()
            .filter(|m| m.state == SwimState::Alive)
            .map(|m| m.id.node)
            .collect();
        v.sort();
        v
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<SwimEvent>) -> SwimEvent {
        tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("a membership change within 20 s")
            .expect("the driver runs")
    }

    async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_join_through_one_seed_and_see_a_leave_and_a_failure() {
        let c = config("t3");
        let a = Gossip::start(&c, "cookie", identity(1)).await.unwrap();
        let b = Gossip::start(&c, "cookie", identity(2)).await.unwrap();
        let d = Gossip::start(&c, "cookie", identity(3)).await.unwrap();
        let mut events = a.subscribe();
        let wait = Duration::from_secs(20);
        assert_eq!(
            b.join(vec![a.local_addr()], wait).await.reached,
            [a.local_addr()]
        );
        assert_eq!(
            d.join(vec![a.local_addr()], wait).await.reached,
            [a.local_addr()]
        );
        for (g, others) in [
            (&a, ["m2@127.0.0.1", "m3@127.0.0.1"]),
            (&b, ["m1@127.0.0.1", "m3@127.0.0.1"]),
            (&d, ["m1@127.0.0.1", "m2@127.0.0.1"]),
        ] {
            wait_for("every member sees the two others alive", async || {
                alive_names(g).await == others
            })
            .await;
        }
        let mut ups = Vec::new();
        while ups.len() < 2 {
            match next(&mut events).await {
                SwimEvent::Up(id) => ups.push(id.node),
                // A probe missed on a loaded machine is no failure.
                SwimEvent::Joined | SwimEvent::Suspected(_) | SwimEvent::Refuted(_) => {}
                other => panic!("{other:?}"),
            }
        }
        ups.sort();
        assert_eq!(ups, ["m2@127.0.0.1", "m3@127.0.0.1"]);
        // A graceful leave, then a silent failure (the task stops, no leave).
        b.leave().await;
        loop {
            match next(&mut events).await {
                SwimEvent::Left(id) => {
                    assert_eq!(id.node, "m2@127.0.0.1");
                    break;
                }
                SwimEvent::Suspected(_) | SwimEvent::Refuted(_) => {}
                other => panic!("{other:?}"),
            }
        }
        let m2 = a
            .members()
            .await
            .into_iter()
            .find(|m| m.id.node == "m2@127.0.0.1");
        assert_eq!(m2.map(|m| m.state), Some(SwimState::Left));
        drop(d);
        // Suspected first, then down (a suspicion refuted before the stop
        // is no part of it).
        let mut suspected = false;
        loop {
            match next(&mut events).await {
                SwimEvent::Suspected(id) => suspected = id.node == "m3@127.0.0.1",
                SwimEvent::Refuted(_) => suspected = false,
                SwimEvent::Down(id) => {
                    assert_eq!(id.node, "m3@127.0.0.1");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(suspected, "suspected before it was declared down");
        assert_eq!(a.stats().refused_total(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_cookie_or_cluster_cannot_join_and_garbage_is_counted() {
        let c = config("tc");
        let a = Gossip::start(&c, "cookie", identity(1)).await.unwrap();
        let intruder = Gossip::start(&c, "wrong", identity(2)).await.unwrap();
        let other_cluster = Gossip::start(&config("elsewhere"), "cookie", identity(3))
            .await
            .unwrap();
        let short = Duration::from_millis(300);
        assert_eq!(
            intruder.join(vec![a.local_addr()], short).await,
            JoinReply::default()
        );
        assert_eq!(
            other_cluster.join(vec![a.local_addr()], short).await,
            JoinReply::default()
        );
        wait_for("both refused", async || {
            a.stats().bad_tag.load(Ordering::Relaxed) > 0
                && a.stats().wrong_cluster.load(Ordering::Relaxed) > 0
        })
        .await;
        // Garbage from a plain socket: counted, the member keeps serving.
        // One at a time: UDP may drop what a loaded receiver has no room for.
        let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..200u32 {
            let before = a.stats().refused_total();
            let len = 1 + (i as usize * 37) % 1500;
            let bytes: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            junk.send_to(&bytes, a.local_addr()).await.unwrap();
            wait_for("garbage counted", async || {
                a.stats().refused_total() > before
            })
            .await;
        }
        assert!(a.members().await.is_empty(), "nobody joined");
        let friend = Gossip::start(&c, "cookie", identity(4)).await.unwrap();
        friend.join(vec![a.local_addr()], Duration::ZERO).await;
        wait_for("a real member still joins", async || {
            alive_names(&a).await == ["m4@127.0.0.1"]
        })
        .await;
    }
}

#[cfg(test)]
mod many {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// Twenty members through one seed: each learns all the others (how
    /// fast is `cluster_bench`'s `converge_ms`, not this test's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_members_converge_through_one_seed() {
        let c = ClusterConfig::builder()
            .cluster_name("cv")
            .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(0)
            .build()
            .unwrap();
        let mut gs = Vec::new();
        for n in 0..20u16 {
            let id = MemberId {
                node: format!("m{n}@127.0.0.1"),
                gossip: SocketAddr::from(([127, 0, 0, 1], 0)),
                dist: SocketAddr::from(([127, 0, 0, 1], 20_000 + n)),
                creation: 1,
                rejoin: 0,
                metadata: Default::default(),
            };
            gs.push(Gossip::start(&c, "k", id).await.unwrap());
        }
        let seed = gs[0].local_addr();
        for g in &gs[1..] {
            g.join(vec![seed], Duration::ZERO).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut fewest = usize::MAX;
            for g in &gs {
                let n = g
                    .members()
                    .await
                    .iter()
                    .filter(|m| m.state == SwimState::Alive)
                    .count();
                fewest = fewest.min(n);
            }
            if fewest == 19 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a member sees only {fewest} of 19"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
