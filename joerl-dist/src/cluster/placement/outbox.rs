//! The sending side of guaranteed deliveries (see
//! [`delivery`](super::delivery)): a node's messages kept until
//! acknowledged, the actor that takes the acknowledgements
//! ([`ACK_SERVER`]), and the task that sends again what is due, each time
//! to the identity's owner of the moment, through the owner node's
//! [`Breakers`] (an open circuit skips that send; the
//! message waits for the next).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use joerl_core::{Actor, ActorContext, ActorSystem, Dest, Message, SpawnOptions};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::breaker::Breakers;
use super::delivery::{Ack, DeliveryError, PendingSet, Reliable, Sender};
use super::placements::PlacementState;
use super::rendezvous::Identity;

/// The registered name of the actor that takes a node's acknowledgements.
pub const ACK_SERVER: &str = "joerl_placement_acks";

/// How often the resend task looks at what is due, at most.
const TICK: Duration = Duration::from_millis(50);

/// Counters of a node's guaranteed deliveries.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Messages acknowledged.
    pub acked: AtomicU64,
    /// Sends after the first.
    pub resent: AtomicU64,
    /// Messages whose deadline passed.
    pub expired: AtomicU64,
    /// Sends skipped because the owner's circuit was open.
    pub circuit_open: AtomicU64,
}

/// Who waits for each kept message's outcome.
type Waiters = HashMap<u64, oneshot::Sender<Result<(), DeliveryError>>>;

/// What a node keeps until acknowledged.
pub(crate) struct Outbox {
    sender: Sender,
    next_seq: AtomicU64,
    pending: Mutex<(PendingSet, Waiters)>,
    wake: Notify,
    pub(crate) stats: OutboxStats,
    pub(crate) breakers: Breakers,
}

impl Outbox {
    /// The outbox of node `node`, with a fresh session.
    pub(crate) fn new(node: &str, breakers: Breakers) -> Self {
        Outbox {
            sender: Sender {
                node: node.to_string(),
                session: rand::random(),
            },
            next_seq: AtomicU64::new(1),
            pending: Mutex::new((PendingSet::default(), HashMap::new())),
            wake: Notify::new(),
            stats: OutboxStats::default(),
            breakers,
        }
    }

    /// Messages waiting for acknowledgement.
    pub(crate) fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    /// Keeps `message` (of registered wire type `wire`) for `identity` and
    /// gives the envelope to send and the receiver of its outcome.
    pub(crate) fn keep(
        &self,
        identity: Identity,
        wire: u64,
        bytes: Vec<u8>,
        dedup: bool,
        within: Duration,
    ) -> Result<(Reliable, oneshot::Receiver<Result<(), DeliveryError>>), DeliveryError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let message = Reliable {
            sender: self.sender.clone(),
            seq,
            dedup,
            wire,
            bytes,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.0.insert(identity, message.clone(), within, Instant::now())?;
            p.1.insert(seq, tx);
        }
        self.wake.notify_one();
        Ok((message, rx))
    }

    /// A send of `seq` failed at once.
    pub(crate) fn failed(&self, seq: u64, error: String) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.0.failed(seq, error);
    }

    /// The acknowledgement of `seq` in `session` came.
    fn acked(&self, session: u64, seq: u64, from: &str) {
        if session != self.sender.session {
            return;
        }
        let waiter = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.0.ack(seq).and_then(|_| p.1.remove(&seq))
        };
        if let Some(w) = waiter {
            self.stats.acked.fetch_add(1, Ordering::Relaxed);
            self.breakers.success(from);
            let _ = w.send(Ok(()));
        }
    }

    /// Every waiter learns that placement stopped.
    fn close(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (_, w) in p.1.drain() {
            let _ = w.send(Err(DeliveryError::Stopped));
        }
        p.0 = PendingSet::default();
    }
}

/// Takes acknowledgements for the node's outbox.
struct AckServer {
    state: Weak<PlacementState>,
}

impl Actor for AckServer {
    async fn handle_message(&mut self, msg: Message, _ctx: &mut ActorContext) {
        let Ok(ack) = msg.downcast::<Ack>() else {
            return;
        };
        if let Some(s) = self.state.upgrade() {
            s.outbox().acked(ack.session, ack.seq, &ack.by);
        }
    }

    /// The node shuts down: no acknowledgement can come any more, so every
    /// delivery still waiting fails now with `Stopped` (not at its
    /// deadline).
    async fn stopped(&mut self, reason: &joerl_core::ExitReason, _ctx: &mut ActorContext) {
        if matches!(reason, joerl_core::ExitReason::Shutdown) {
            if let Some(s) = self.state.upgrade() {
                s.outbox().close();
            }
        }
    }
}

/// Starts the acknowledgement actor and the resend task of `state`.
pub(crate) fn start(
    system: &ActorSystem,
    state: &Arc<PlacementState>,
) -> Result<(), joerl_core::SpawnError> {
    system.spawn_with(
        AckServer {
            state: Arc::downgrade(state),
        },
        SpawnOptions::new().name(ACK_SERVER),
    )?;
    let weak = Arc::downgrade(state);
    // The task holds the state only while it waits (at most a second), so
    // the state goes soon after the node's last other holder.
    tokio::spawn(async move {
        loop {
            let Some(s) = weak.upgrade() else { return };
            let Some(system) = s.system() else {
                s.outbox().close();
                return;
            };
            resend_due(&s, &system);
            let next = s
                .outbox()
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .next_due();
            let now = Instant::now();
            let until = next
                .unwrap_or(now + Duration::from_secs(1))
                .clamp(now + TICK, now + Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = s.outbox().wake.notified() => {}
            }
        }
    });
    Ok(())
}

/// Sends again what is due, reports what expired.
fn resend_due(s: &PlacementState, system: &ActorSystem) {
    let outbox = s.outbox();
    let (again, expired) = {
        let mut p = outbox.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (again, expired) = p.0.due(Instant::now(), rand::random::<f64>());
        let expired: Vec<_> = expired
            .into_iter()
            .filter_map(|(seq, e)| p.1.remove(&seq).map(|w| (w, e)))
            .collect();
        (again, expired)
    };
    for (w, e) in expired {
        outbox.stats.expired.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "placement: a guaranteed delivery failed");
        let _ = w.send(Err(e));
    }
    for (identity, message) in again {
        outbox.stats.resent.fetch_add(1, Ordering::Relaxed);
        let seq = message.seq;
        // No acknowledgement in time counts against the owner's circuit.
        if let Some(o) = s.remote_owner(&identity).as_deref() {
            outbox.breakers.failure(o, "no acknowledgement in time");
            if let Err(open) = outbox.breakers.acquire(o) {
                outbox.stats.circuit_open.fetch_add(1, Ordering::Relaxed);
                outbox.failed(seq, open.to_string());
                continue;
            }
        }
        let dest = Dest::Placed {
            kind: identity.kind.as_str().into(),
            id: identity.id.as_str().into(),
        };
        if let Err(e) = system.try_send(dest, message) {
            outbox.failed(seq, e.to_string());
        }
    }
}
