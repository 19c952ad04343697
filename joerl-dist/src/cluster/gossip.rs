//! The SWIM driver: one task per member owns its UDP socket, its `foca`
//! instance and its timers. foca decides (probes, suspicion, gossip); this
//! task only moves its bytes and timers, seals and opens every packet
//! ([`packet`](super::packet)), counts what it refuses, and reports member
//! changes to its subscribers, in order and without loss.
//!
//! Inside the envelope, a body starts with a kind byte: 0 for foca's data, 1
//! for a leave notice (the leaving node's name), sent straight to every known
//! member before SWIM's own leave, so that a leave is told apart from a
//! failure. A notice lost on the way makes the leave look like a failure.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

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
    /// An active member was declared down.
    Down(MemberId),
    /// An active member left gracefully.
    Left(MemberId),
    /// A newer identity replaced an older one at the same address (a
    /// restart, or a rejoin after being declared down).
    Renamed {
        /// The identity that was known.
        old: MemberId,
        /// The one that replaced it.
        new: MemberId,
    },
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
    /// Authenticated, but SWIM could not read it.
    pub malformed: AtomicU64,
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
    Join(Vec<SocketAddr>),
    Leave(oneshot::Sender<()>),
    Members(oneshot::Sender<Vec<SwimMember>>),
    Subscribe(mpsc::UnboundedSender<SwimEvent>),
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
    f
}

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
        mut identity: MemberId,
    ) -> std::io::Result<Gossip> {
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
        let task = tokio::spawn(run(socket, key, foca, rx, stats.clone()));
        Ok(Gossip {
            commands,
            local,
            stats,
            task,
        })
    }

    /// The bound gossip address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's counters.
    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    /// Announces this member to `seeds` (their gossip addresses).
    pub fn join(&self, seeds: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Join(seeds));
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

/// Most leave notices remembered at once (addresses of members that said
/// they leave and did not come back yet).
const MAX_LEAVING: usize = 4096;

const BODY_SWIM: u8 = 0;
const BODY_LEAVING: u8 = 1;

async fn run(
    socket: UdpSocket,
    key: PacketKey,
    mut foca: Swim,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stats: Arc<GossipStats>,
) {
    let mut runtime = AccumulatingRuntime::new();
    let (timer_tx, mut timers) = mpsc::unbounded_channel::<Timer<MemberId>>();
    let mut subscribers: Vec<mpsc::UnboundedSender<SwimEvent>> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut sealed = Vec::new();
    // Gossip addresses of members that said they leave.
    let mut leaving: std::collections::HashSet<SocketAddr> = Default::default();
    loop {
        tokio::select! {
            // Commands first: a subscription made before a change sees it.
            biased;
            command = commands.recv() => match command {
                None => return,
                Some(Command::Join(seeds)) => {
                    for seed in seeds {
                        let _ = foca.announce(placeholder(seed), &mut runtime);
                    }
                }
                Some(Command::Members(reply)) => {
                    let _ = reply.send(snapshot(&foca, &leaving));
                }
                Some(Command::Subscribe(tx)) => subscribers.push(tx),
                Some(Command::Leave(done)) => {
                    leave(&socket, &key, &mut foca, &mut runtime, &mut sealed, &stats).await;
                    let _ = done.send(());
                    return;
                }
            },
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                match key.open(&buf[..n]) {
                    Ok([BODY_SWIM, body @ ..]) => {
                        if foca.handle_data(body, &mut runtime).is_ok() {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok([BODY_LEAVING, ..]) => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        // Bounded: notices from more addresses than any
                        // cluster has are dropped (and counted as malformed).
                        if leaving.len() < MAX_LEAVING {
                            leaving.insert(from);
                        } else {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip packet refused");
                        stats.refused(e);
                    }
                }
            }
            Some(timer) = timers.recv() => {
                let _ = foca.handle_timer(timer, &mut runtime);
            }
        }
        flush(&socket, &key, &mut runtime, &mut sealed, &stats).await;
        while let Some((after, timer)) = runtime.to_schedule() {
            let tx = timer_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
        }
        while let Some(n) = runtime.to_notify() {
            let event = match n {
                OwnedNotification::MemberUp(id) if !id.node.is_empty() => {
                    leaving.remove(&id.gossip);
                    SwimEvent::Up(id)
                }
                OwnedNotification::MemberDown(id) if !id.node.is_empty() => {
                    if leaving.contains(&id.gossip) {
                        SwimEvent::Left(id)
                    } else {
                        SwimEvent::Down(id)
                    }
                }
                OwnedNotification::Rename(old, new) if !old.node.is_empty() => {
                    SwimEvent::Renamed { old, new }
                }
                _ => continue,
            };
            subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }
}

/// The members foca knows, placeholders left out.
fn snapshot(foca: &Swim, leaving: &std::collections::HashSet<SocketAddr>) -> Vec<SwimMember> {
    foca.iter_membership_state()
        .filter(|m| !m.id().node.is_empty())
        .map(|m| SwimMember {
            id: m.id().clone(),
            incarnation: m.incarnation(),
            state: match m.state() {
                State::Alive => SwimState::Alive,
                State::Suspect => SwimState::Suspected,
                State::Down if leaving.contains(&m.id().gossip) => SwimState::Left,
                State::Down => SwimState::Down,
            },
        })
        .collect()
}

/// Tells every known member this one leaves, then leaves through SWIM.
async fn leave(
    socket: &UdpSocket,
    key: &PacketKey,
    foca: &mut Swim,
    runtime: &mut AccumulatingRuntime<MemberId>,
    sealed: &mut Vec<u8>,
    stats: &GossipStats,
) {
    let notice = [BODY_LEAVING];
    if key.seal(&notice, sealed).is_ok() {
        let members: Vec<SocketAddr> = foca.iter_members().map(|m| m.id().gossip).collect();
        for to in members {
            if let Ok(n) = socket.send_to(sealed, to).await {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = foca.leave_cluster(&mut *runtime);
    flush(socket, key, runtime, sealed, stats).await;
}

/// Seals and sends what foca queued.
async fn flush(
    socket: &UdpSocket,
    key: &PacketKey,
    runtime: &mut AccumulatingRuntime<MemberId>,
    sealed: &mut Vec<u8>,
    stats: &GossipStats,
) {
    let mut framed = Vec::new();
    while let Some((to, body)) = runtime.to_send() {
        framed.clear();
        framed.push(BODY_SWIM);
        framed.extend_from_slice(&body);
        if key.seal(&framed, sealed).is_err() {
            continue;
        }
        if let Ok(n) = socket.send_to(sealed, to.gossip).await {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
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
        b.join(vec![a.local_addr()]);
        d.join(vec![a.local_addr()]);
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
                other => panic!("{other:?}"),
            }
        }
        ups.sort();
        assert_eq!(ups, ["m2@127.0.0.1", "m3@127.0.0.1"]);
        // A graceful leave, then a silent failure (the task stops, no leave).
        b.leave().await;
        match next(&mut events).await {
            SwimEvent::Left(id) => assert_eq!(id.node, "m2@127.0.0.1"),
            other => panic!("{other:?}"),
        }
        let m2 = a
            .members()
            .await
            .into_iter()
            .find(|m| m.id.node == "m2@127.0.0.1");
        assert_eq!(m2.map(|m| m.state), Some(SwimState::Left));
        drop(d);
        match next(&mut events).await {
            SwimEvent::Down(id) => assert_eq!(id.node, "m3@127.0.0.1"),
            other => panic!("{other:?}"),
        }
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
        intruder.join(vec![a.local_addr()]);
        other_cluster.join(vec![a.local_addr()]);
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
        friend.join(vec![a.local_addr()]);
        wait_for("a real member still joins", async || {
            alive_names(&a).await == ["m4@127.0.0.1"]
        })
        .await;
    }
}
