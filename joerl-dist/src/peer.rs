//! One remote node as this node sees it: its outgoing queue, connection state,
//! statistics, and the links and monitors that cross to it.
//!
//! A `Peer` outlives its connections: a reconnect installs a new connection in
//! the same peer, so statistics and the queue persist. Its connection life
//! cycle belongs to its [`LinkMachine`](crate::link::LinkMachine); the peer
//! only holds what the node publishes from it for the send path. The link and monitor
//! bookkeeping records every relation between a local actor and an actor on this
//! peer, so that losing the connection can turn each into a `noconnection` exit
//! or down, and leave nothing behind.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use joerl_core::{ExitReason, MonitorRef, Pid, Signal};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::link::{LinkConfig, LinkMachine, Status};
use crate::outqueue::OutQueue;

/// Counters of one peer.
#[derive(Default)]
pub(crate) struct PeerCounters {
    pub(crate) msgs_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) msgs_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) dropped_in: AtomicU64,
    pub(crate) unknown_types: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Links and monitors between local actors and actors on one peer.
#[derive(Default)]
pub(crate) struct Bookkeeping {
    /// (local, remote) pairs that are linked.
    links: HashSet<(Pid, Pid)>,
    /// Monitors local actors hold on remote actors: (owner, ref) -> target.
    monitors_out: HashMap<(Pid, MonitorRef), Pid>,
    /// Monitors remote actors hold on local actors: (owner, ref) -> target.
    monitors_in: HashMap<(Pid, MonitorRef), Pid>,
}

impl Bookkeeping {
    /// Records a signal a local actor sends to the remote actor `to`.
    pub(crate) fn outgoing(&mut self, to: Pid, sig: &Signal) {
        match sig {
            Signal::Link { from } => {
                self.links.insert((*from, to));
            }
            Signal::Unlink { from } => {
                self.links.remove(&(*from, to));
            }
            Signal::Exit {
                from, link: true, ..
            } => {
                self.links.remove(&(*from, to));
            }
            Signal::Exit { .. } => {}
            Signal::Monitor { from, monitor } => {
                self.monitors_out.insert((*from, *monitor), to);
            }
            Signal::Demonitor { from, monitor } => {
                self.monitors_out.remove(&(*from, *monitor));
            }
            Signal::Down { monitor, .. } => {
                self.monitors_in.remove(&(to, *monitor));
            }
        }
    }

    /// Records a signal the remote side sends to the local actor `to`.
    pub(crate) fn incoming(&mut self, to: Pid, sig: &Signal) {
        match sig {
            Signal::Link { from } => {
                self.links.insert((to, *from));
            }
            Signal::Unlink { from } => {
                self.links.remove(&(to, *from));
            }
            Signal::Exit {
                from, link: true, ..
            } => {
                self.links.remove(&(to, *from));
            }
            Signal::Exit { .. } => {}
            Signal::Monitor { from, monitor } => {
                self.monitors_in.insert((*from, *monitor), to);
            }
            Signal::Demonitor { from, monitor } => {
                self.monitors_in.remove(&(*from, *monitor));
            }
            Signal::Down { monitor, .. } => {
                self.monitors_out.remove(&(to, *monitor));
            }
        }
    }

    /// Empties the tables and returns the local signals that losing the peer
    /// implies: exits for links, downs for monitors (both `noconnection`), and
    /// demonitors that clear remote monitors from local actors.
    pub(crate) fn node_lost(&mut self) -> Vec<(Pid, Signal)> {
        let mut out = Vec::new();
        for (local, remote) in self.links.drain() {
            out.push((
                local,
                Signal::Exit {
                    from: remote,
                    reason: ExitReason::NoConnection,
                    link: true,
                },
            ));
        }
        for ((owner, monitor), target) in self.monitors_out.drain() {
            out.push((
                owner,
                Signal::Down {
                    monitor,
                    pid: target,
                    reason: ExitReason::NoConnection,
                },
            ));
        }
        for ((owner, monitor), target) in self.monitors_in.drain() {
            out.push((
                target,
                Signal::Demonitor {
                    from: owner,
                    monitor,
                },
            ));
        }
        out
    }

    /// The local actor that the remote `owner` monitors under `monitor`, if
    /// any: where its demonitor goes (one of a monitor made by name arrives
    /// addressed to the node, not the actor).
    pub(crate) fn monitored_by(&self, owner: Pid, monitor: MonitorRef) -> Option<Pid> {
        self.monitors_in.get(&(owner, monitor)).copied()
    }

    /// Sizes of the tables: (links, monitors out, monitors in).
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.links.len(),
            self.monitors_out.len(),
            self.monitors_in.len(),
        )
    }
}

/// A value on a cache line of its own. The reader touches `received` and
/// `current_conn` for every frame; they must not share a line with what
/// senders on other cores update for every message (the queue, the counters).
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// See the module documentation.
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) queue: OutQueue,
    pub(crate) counters: PeerCounters,
    pub(crate) book: Mutex<Bookkeeping>,
    pub(crate) node_monitors: Mutex<Vec<Pid>>,
    /// The owner of the connection life cycle (see `link.rs`). Every
    /// decision about the connection is made there, under this lock.
    pub(crate) link: Mutex<LinkMachine>,
    /// Published from the machine's actions, for the send path (no lock per
    /// message): a connection is up.
    up: AtomicBool,
    /// Incoming messages parked for full mailboxes (see `delivery::Parked`).
    pub(crate) parked: std::sync::Arc<crate::delivery::Parked>,
    /// Exact loss counts of the messages sent to this peer.
    pub(crate) accounting: Mutex<crate::accounting::Accounting>,
    /// Messages read from the peer's current incarnation (`rx_creation`), over
    /// all its connections: reported to it in ACK, RESUME and GOODBYE frames.
    pub(crate) received: Padded<AtomicU64>,
    /// The incarnation `received` counts for.
    pub(crate) rx_creation: Mutex<Option<u32>>,
    /// Published from the machine's actions: the connection whose reader may
    /// deliver (0: none); a superseded reader stops at its next frame.
    pub(crate) current_conn: Padded<AtomicU64>,
    /// The reader and writer tasks of the current connection, by its id.
    pub(crate) tasks: Mutex<Option<(u64, Vec<AbortHandle>)>>,
    /// The reader task of the current (or last) connection: a new connection is
    /// installed only after it has stopped, so no frame of an old connection is
    /// delivered after one of the new.
    pub(crate) reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Reader tasks running (of this and earlier connections): a handshake
    /// tells the peer how much it has read only when no reader of an earlier
    /// connection runs any more, so the count is final.
    pub(crate) readers: watch::Sender<usize>,
    /// Held through `install`, so two connections installed at once (a dial and
    /// an accept) wait for the old reader one after the other.
    pub(crate) install_lock: tokio::sync::Mutex<()>,
    /// Sweeps in a row that found the peer unused (see `forget_idle_peers`).
    pub(crate) idle_sweeps: AtomicU64,
    /// When data last arrived, in milliseconds since `epoch`.
    last_heard_ms: AtomicU64,
    epoch: Instant,
    /// The machine's statuses, for waiters (`connect`), with their order.
    pub(crate) status: watch::Sender<(u64, Status)>,
    /// Wakes a dial loop that is waiting out its backoff: `connect` dials now.
    pub(crate) dial_now: tokio::sync::Notify,
}

impl Peer {
    pub(crate) fn new(name: String, me: &str, config: &crate::config::DistConfig) -> Self {
        Peer {
            link: Mutex::new(LinkMachine::new(me, &name, LinkConfig::of(config))),
            name,
            queue: OutQueue::new(config.queue_bytes, config.resend_window),
            readers: watch::channel(0).0,
            counters: PeerCounters::default(),
            book: Mutex::new(Bookkeeping::default()),
            node_monitors: Mutex::new(Vec::new()),
            up: AtomicBool::new(false),
            parked: Default::default(),
            accounting: Mutex::default(),
            received: Padded(AtomicU64::new(0)),
            rx_creation: Mutex::new(None),
            current_conn: Padded(AtomicU64::new(0)),
            tasks: Mutex::new(None),
            reader: Mutex::new(None),
            install_lock: tokio::sync::Mutex::new(()),
            idle_sweeps: AtomicU64::new(0),
            last_heard_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            status: watch::channel((0, Status::Connecting)).0,
            dial_now: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn link(&self) -> std::sync::MutexGuard<'_, LinkMachine> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the machine's view for the send path (see `Action::Publish`).
    pub(crate) fn publish(&self, up: bool, conn: u64) {
        self.current_conn.store(conn, Ordering::Release);
        self.up.store(up, Ordering::Release);
    }

    pub(crate) fn accounting(&self) -> std::sync::MutexGuard<'_, crate::accounting::Accounting> {
        self.accounting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, Bookkeeping> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if a connection is up.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records that data arrived now.
    pub(crate) fn heard(&self) {
        self.last_heard_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long ago data last arrived (None if never).
    pub(crate) fn last_heard(&self) -> Option<std::time::Duration> {
        let at = self.last_heard_ms.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(std::time::Duration::from_millis(now.saturating_sub(at)))
    }
}

/// Counts a reader task in [`Peer::readers`] for as long as it lives
/// (dropped when the task ends or is aborted).
pub(crate) struct ReaderGuard(pub(crate) std::sync::Arc<Peer>);

impl ReaderGuard {
    /// Counts a reader of `peer`.
    pub(crate) fn new(peer: std::sync::Arc<Peer>) -> Self {
        peer.readers.send_modify(|n| *n += 1);
        ReaderGuard(peer)
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.readers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_tracks_both_directions_and_turns_into_noconnection() {
        let local = Pid::new(1, 10, 1);
        let remote = Pid::new(2, 20, 1);
        let mut b = Bookkeeping::default();
        b.outgoing(remote, &Signal::Link { from: local });
        b.outgoing(
            remote,
            &Signal::Monitor {
                from: local,
                monitor: MonitorRef(1),
            },
        );
        b.incoming(
            local,
            &Signal::Monitor {
                from: remote,
                monitor: MonitorRef(2),
            },
        );
        assert_eq!(b.sizes(), (1, 1, 1));
        let lost = b.node_lost();
        assert_eq!(b.sizes(), (0, 0, 0));
        assert!(lost.contains(&(
            local,
            Signal::Exit {
                from: remote,
                reason: ExitReason::NoConnection,
                link: true
            }
        )));
        assert!(lost.contains(&(
            local,
            Signal::Down {
                monitor: MonitorRef(1),
                pid: remote,
                reason: ExitReason::NoConnection
            }
        )));
        assert!(lost.contains(&(
            local,
            Signal::Demonitor {
                from: remote,
                monitor: MonitorRef(2)
            }
        )));
    }

    #[test]
    fn bookkeeping_forgets_relations_that_end_normally() {
        let local = Pid::new(1, 10, 1);
        let remote = Pid::new(2, 20, 1);
        let mut b = Bookkeeping::default();
        b.outgoing(remote, &Signal::Link { from: local });
        b.incoming(
            local,
            &Signal::Exit {
                from: remote,
                reason: ExitReason::Normal,
                link: true,
            },
        );
        b.outgoing(
            remote,
            &Signal::Monitor {
                from: local,
                monitor: MonitorRef(1),
            },
        );
        b.incoming(
            local,
            &Signal::Down {
                monitor: MonitorRef(1),
                pid: remote,
                reason: ExitReason::Normal,
            },
        );
        b.incoming(
            local,
            &Signal::Monitor {
                from: remote,
                monitor: MonitorRef(3),
            },
        );
        b.outgoing(
            remote,
            &Signal::Down {
                monitor: MonitorRef(3),
                pid: local,
                reason: ExitReason::Normal,
            },
        );
        assert_eq!(b.sizes(), (0, 0, 0));
    }
}
