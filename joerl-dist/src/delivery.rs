//! Delivering what arrives on a connection to local actors.
//!
//! The reader hands every decoded frame to a [`Dispatcher`]. Messages go into
//! their target's mailbox; a full mailbox first runs over by a bounded amount
//! (`mailbox_overflow`), then further messages for that target are parked, in
//! order, and a drain task feeds them in as room appears, so one busy actor never
//! holds up the others. Past `max_parked` parked messages the reader stops
//! reading, which pushes back on the sending node through TCP. Parked messages
//! belong to the peer, not the connection, so per-target order survives a
//! reconnect. Signals are applied to the link/monitor bookkeeping, then handed to
//! the actor system; a signal for another node is dropped (a node never relays).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use joerl_core::fxhash::FxBuildHasher;
use joerl_core::{Message, Pid, SendError};
use joerl_epmd::log_limit::LogLimiter;
use tokio::sync::Notify;

use crate::codec;
use crate::connection::{EndReason, FrameSink};
use crate::error::CodecError;
use crate::frame::Frame;
use crate::node::NodeInner;
use crate::peer::{Peer, PeerCounters};

/// Log lines about messages of unregistered types, per second.
static UNKNOWN_TYPE_LOG: LogLimiter = LogLimiter::new(5);
/// Log lines about messages and signals addressed to another node, per second.
static MISROUTED_LOG: LogLimiter = LogLimiter::new(5);
/// Log lines about undecodable messages, per second.
static UNDECODABLE_LOG: LogLimiter = LogLimiter::new(5);

/// Messages (with their senders) waiting for one target's mailbox.
type ParkedQueue = VecDeque<(Option<Pid>, Message)>;

/// Incoming messages waiting for room in full local mailboxes, per target. One
/// per peer (not per connection), so per-target order holds across reconnects.
#[derive(Default)]
pub(crate) struct Parked {
    map: Mutex<HashMap<Pid, ParkedQueue, FxBuildHasher>>,
    /// Targets with an entry in `map`; zero lets delivery skip the lock.
    targets: AtomicUsize,
    /// Messages parked.
    count: AtomicUsize,
    space: Notify,
}

/// An ACK goes back to the peer after this many of its data frames, or this
/// many bytes of them (bodies plus 32 a frame), whichever comes first (besides the one in every
/// idle tick), so what its resend buffer keeps stays small.
const ACK_EVERY: u64 = 8192;
const ACK_EVERY_BYTES: usize = 1024 * 1024;

impl Parked {
    /// True when nothing is parked.
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0 && self.targets.load(Ordering::Acquire) == 0
    }
}

/// Hands the frames of one connection to local actors.
pub(crate) struct Dispatcher {
    node: Arc<NodeInner>,
    peer: Arc<Peer>,
    parked: Arc<Parked>,
    conn_id: u64,
    /// Data frames read since the last ACK this reader sent.
    since_ack: u64,
    /// Bytes of message bodies read since the last ACK this reader sent.
    since_ack_bytes: usize,
    /// The peer's `received` as this reader keeps it (it is the only writer
    /// while its connection is current): a plain store per message, no
    /// read-modify-write.
    received: u64,
}

impl Dispatcher {
    /// The dispatcher for connection `conn_id` of `peer`.
    pub(crate) fn new(node: Arc<NodeInner>, peer: Arc<Peer>, conn_id: u64) -> Self {
        let parked = peer.parked.clone();
        let received = peer.received.load(Ordering::Relaxed);
        Dispatcher {
            node,
            peer,
            parked,
            conn_id,
            since_ack: 0,
            since_ack_bytes: 0,
            received,
        }
    }

    /// Counts one data frame (with a body of `bytes`) read from the peer and
    /// acknowledges every [`ACK_EVERY`]th (or [`ACK_EVERY_BYTES`]).
    fn count_received(&mut self, bytes: usize) {
        self.received += 1;
        let received = self.received;
        self.peer.received.store(received, Ordering::Relaxed);
        self.since_ack += 1;
        self.since_ack_bytes += bytes;
        if self.since_ack >= ACK_EVERY || self.since_ack_bytes >= ACK_EVERY_BYTES {
            self.since_ack = 0;
            self.since_ack_bytes = 0;
            let peer = &self.peer;
            let conn_id = self.conn_id;
            // Checked under the queue's lock: a connection lost meanwhile
            // must not carry this count to the next connection.
            peer.queue.push_ack(
                || peer.current_conn.load(Ordering::Acquire) == conn_id,
                |b| crate::frame::put_ack(b, received),
            );
        }
    }

    /// Decodes a message body. An undecodable body is counted and dropped; if it
    /// is a call's reply or request, the caller gets a
    /// [`ReplyLost`](joerl_core::gen_server::ReplyLost) (delivered here, or sent
    /// back to its node) so its `call` fails at once with the reason.
    fn decode(&self, body: &[u8]) -> Option<Message> {
        let err = match codec::decode_message(body, self.node.config.max_message_memory) {
            Ok(m) => return Some(m),
            Err(e) => e,
        };
        match &err {
            CodecError::UnknownWireId(id) => {
                PeerCounters::add(&self.peer.counters.unknown_types, 1);
                if let Some(suppressed) = UNKNOWN_TYPE_LOG.check() {
                    tracing::warn!(
                        peer = %self.peer.name,
                        wire_id = format_args!("{id:#018x}"),
                        suppressed,
                        "message of a type not registered on this node dropped; register it with remote_message!"
                    );
                }
            }
            e => {
                PeerCounters::add(&self.peer.counters.dropped_in, 1);
                if let Some(suppressed) = UNDECODABLE_LOG.check() {
                    tracing::warn!(peer = %self.peer.name, error = %e, suppressed, "undecodable message dropped");
                }
            }
        }
        match codec::lost_call(body, &err)? {
            codec::LostCall::Reply(reply) => Some(reply),
            // Only to the peer that sent the request: a node never relays.
            codec::LostCall::Request { reply_to, answer } if reply_to.node() == self.peer_id() => {
                if let Err(e) = self.node.system.try_send(reply_to, answer) {
                    tracing::debug!(peer = %self.peer.name, %reply_to, error = %e, "could not tell the caller its request was lost");
                }
                None
            }
            codec::LostCall::Request { .. } => None,
        }
    }

    fn peer_id(&self) -> u32 {
        joerl_core::node_id(&self.peer.name)
    }

    /// Delivers to a local actor. A full mailbox first runs over by up to
    /// `mailbox_overflow` messages; past that the message is parked (in order,
    /// per target) so other actors' messages keep flowing; past `max_parked`
    /// parked messages the connection stops reading (back-pressure to the sender).
    async fn deliver(&mut self, from: Option<Pid>, to: Pid, msg: Message) {
        // Keep per-target order: if this target already has messages waiting,
        // this one waits behind them.
        let msg = if self.parked.targets.load(Ordering::Acquire) == 0 {
            Some(msg)
        } else {
            let mut map = self.parked.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&to) {
                Some(q) => {
                    q.push_back((from, msg));
                    // Counted under the lock, so a drain never subtracts first.
                    self.parked.count.fetch_add(1, Ordering::AcqRel);
                    None
                }
                None => Some(msg),
            }
        };
        let Some(msg) = msg else {
            self.backpressure().await;
            return;
        };
        match self
            .node
            .system
            .try_deliver(from, to, msg, self.node.config.mailbox_overflow)
        {
            Ok(()) => {}
            Err(SendError::Full(m)) => {
                let new_target = {
                    let mut map = self.parked.map.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = map.entry(to);
                    let new_target = matches!(entry, std::collections::hash_map::Entry::Vacant(_));
                    entry.or_default().push_back((from, m.into_inner()));
                    self.parked.count.fetch_add(1, Ordering::AcqRel);
                    if new_target {
                        self.parked.targets.fetch_add(1, Ordering::AcqRel);
                    }
                    new_target
                };
                if new_target {
                    tokio::spawn(drain_parked(
                        self.node.clone(),
                        self.peer.clone(),
                        self.parked.clone(),
                        to,
                    ));
                }
                self.backpressure().await;
            }
            Err(e) => {
                PeerCounters::add(&self.peer.counters.dropped_in, 1);
                tracing::debug!(peer = %self.peer.name, %to, error = %e, "incoming message not delivered");
            }
        }
    }

    async fn backpressure(&self) {
        let max = self.node.config.max_parked.max(1);
        if self.parked.count.load(Ordering::Acquire) < max {
            return;
        }
        loop {
            let notified = self.parked.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.parked.count.load(Ordering::Acquire) < max {
                return;
            }
            notified.await;
        }
    }
}

/// Delivers one target's parked messages in order, waiting for room. Takes them
/// out in batches (one lock per batch), and wakes a reader held back by
/// [`Dispatcher::backpressure`] only when the count drops below the limit.
async fn drain_parked(node: Arc<NodeInner>, peer: Arc<Peer>, parked: Arc<Parked>, to: Pid) {
    const BATCH: usize = 256;
    let max = node.config.max_parked.max(1);
    let mut batch: ParkedQueue = VecDeque::with_capacity(BATCH);
    loop {
        {
            let mut map = parked.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&to) {
                Some(q) if !q.is_empty() => {
                    let n = q.len().min(BATCH);
                    batch.extend(q.drain(..n));
                }
                _ => {
                    if map.remove(&to).is_some() {
                        parked.targets.fetch_sub(1, Ordering::AcqRel);
                    }
                    return;
                }
            }
        }
        let n = batch.len();
        let before = parked.count.fetch_sub(n, Ordering::AcqRel);
        if before >= max && before - n < max {
            parked.space.notify_waiters();
        }
        while let Some((from, msg)) = batch.pop_front() {
            if let Err(e) = node.system.send_from(from, to, msg).await {
                // The target is gone: so is everything parked for it.
                let removed = parked
                    .map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&to);
                if removed.is_some() {
                    parked.targets.fetch_sub(1, Ordering::AcqRel);
                }
                let rest = removed.map_or(0, |q| q.len());
                if rest > 0 {
                    parked.count.fetch_sub(rest, Ordering::AcqRel);
                    parked.space.notify_waiters();
                }
                let dropped = rest + batch.len() + 1;
                PeerCounters::add(&peer.counters.dropped_in, dropped as u64);
                tracing::debug!(peer = %peer.name, %to, error = %e, dropped, "parked messages not delivered");
                return;
            }
        }
    }
}

impl FrameSink for Dispatcher {
    async fn frame(&mut self, frame: Frame<'_>) -> Result<(), EndReason> {
        if self.peer.current_conn.load(Ordering::Acquire) != self.conn_id {
            return Err(EndReason::Superseded);
        }
        if frame.is_data() {
            // Bodies, plus a frame's usual overhead (signals have no body).
            let bytes = 32
                + match &frame {
                    Frame::Send { body, .. } | Frame::SendNamed { body, .. } => body.len(),
                    _ => 0,
                };
            self.count_received(bytes);
        }
        match frame {
            Frame::Send { from, to, body } => {
                PeerCounters::add(&self.peer.counters.msgs_in, 1);
                if to.node() != self.node.me.node_id {
                    PeerCounters::add(&self.peer.counters.dropped_in, 1);
                    if let Some(suppressed) = MISROUTED_LOG.check() {
                        tracing::warn!(peer = %self.peer.name, %to, suppressed, "message for another node dropped");
                    }
                    return Ok(());
                }
                if let Some(msg) = self.decode(body) {
                    self.deliver(from, to, msg).await;
                }
            }
            Frame::SendNamed { from, name, body } => {
                PeerCounters::add(&self.peer.counters.msgs_in, 1);
                let Some(msg) = self.decode(body) else {
                    return Ok(());
                };
                match self.node.system.whereis(name) {
                    Some(to) => self.deliver(from, to, msg).await,
                    None => {
                        PeerCounters::add(&self.peer.counters.dropped_in, 1);
                        tracing::debug!(peer = %self.peer.name, name, "message for an unregistered name dropped");
                    }
                }
            }
            Frame::Signal { to, signal } if to.node() != self.node.me.node_id => {
                // Never relay: a peer must not reach a third node through us.
                PeerCounters::add(&self.peer.counters.dropped_in, 1);
                if let Some(suppressed) = MISROUTED_LOG.check() {
                    tracing::warn!(peer = %self.peer.name, %to, ?signal, suppressed, "signal for another node dropped");
                }
            }
            Frame::Signal { to, signal } => {
                // A demonitor goes to the actor the monitor is on, as the
                // bookkeeping recorded it (for a monitor made by name the
                // demonitor can only name the node, not the actor).
                let to = match &signal {
                    joerl_core::Signal::Demonitor { from, monitor } => {
                        self.peer.book().monitored_by(*from, *monitor).unwrap_or(to)
                    }
                    _ => to,
                };
                self.peer.book().incoming(to, &signal);
                self.node.system.deliver_signal(to, signal);
            }
            Frame::MonitorNamed {
                from,
                monitor,
                name,
            } => {
                let monitor = joerl_core::MonitorRef(monitor);
                let signal = joerl_core::Signal::Monitor { from, monitor };
                match self.node.system.whereis(name) {
                    Some(to) => {
                        self.peer.book().incoming(to, &signal);
                        self.node.system.deliver_signal(to, signal);
                    }
                    None => {
                        // Nothing registered: the monitor fires at once.
                        let me = Pid::new(self.node.me.node_id, 0, self.node.me.creation);
                        let down = joerl_core::Signal::Down {
                            monitor,
                            pid: me,
                            reason: joerl_core::ExitReason::NoProc,
                        };
                        let max = self.node.config.max_frame_size;
                        let _ = self.peer.queue.push(true, true, |b| {
                            crate::frame::put_signal(b, from, &down, max)
                        });
                    }
                }
            }
            Frame::Tick | Frame::Handshake { .. } => {}
            Frame::Ack(n) => {
                let mut accounting = self.peer.accounting();
                accounting.acked(n);
                // Under the accounting lock (taken before the queue's), so
                // no new session begins in between.
                self.peer.queue.acknowledged(accounting.seq(n));
            }
            Frame::Goodbye(n) => {
                if let Some(n) = n {
                    self.peer.accounting().goodbye(n);
                }
                return Err(EndReason::Goodbye);
            }
        }
        Ok(())
    }
}
