//! Delivery guarantees for messages to placed actors, as state machines
//! with no I/O (the outbox that drives them is in `outbox`):
//!
//! - [`Guarantee::AtMostOnce`], the default and Erlang's: a send is a
//!   send; a message in flight when its owner fails is lost.
//! - [`Guarantee::AtLeastOnce`]: the sending node keeps the message
//!   ([`PendingSet`]) until the activation has *handled* it and
//!   acknowledged ([`Ack`]); until then it is sent again, to the owner of
//!   the moment (so across handoffs, re-homing and reconnects), with
//!   exponential backoff, until the deadline passes
//!   ([`DeliveryError::DeadlinePassed`]).
//! - [`Guarantee::ExactlyOnce`]: at-least-once, and the owner node drops
//!   a message it has handled already from the same sender
//!   ([`DedupWindow`]): exactly-once *processing* within the window. The
//!   window lives on the node that handled the message: a duplicate that
//!   reaches a different node (a resend racing a handoff, or the resend of
//!   a message the failed owner handled just before it died, whose
//!   acknowledgement never left) is handled again there.
//!
//! Sequence numbers count per sending session (a node's placement, from
//! its start): a restarted node is a new sender.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::rendezvous::Identity;

/// How a message to a placed actor is delivered (Cajun's
/// `DeliveryGuarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Guarantee {
    /// Sent once; lost if its owner fails with it in flight (Erlang's).
    #[default]
    AtMostOnce,
    /// Kept and sent again until the owner has handled it, or the
    /// deadline passes; may be handled more than once.
    AtLeastOnce,
    /// At-least-once, and handled once within the owner node's
    /// deduplication window (see the module docs for its limits).
    ExactlyOnce,
}

/// How long a message is sent again, by default, before it is reported
/// failed.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The first wait for an acknowledgement before a message is sent again.
pub const FIRST_RESEND: Duration = Duration::from_millis(500);

/// The longest wait between two sends of one message.
pub const MAX_RESEND: Duration = Duration::from_secs(4);

/// Most messages a node keeps unacknowledged (then new ones are refused
/// with [`DeliveryError::Backlog`]).
pub const MAX_PENDING: usize = 100_000;

/// Most bytes of encoded messages a node keeps unacknowledged.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Sequence numbers the deduplication window remembers per sender, per
/// identity (older ones are forgotten: a duplicate that old is handled
/// again).
pub const DEDUP_WINDOW: usize = 4096;

/// Senders the deduplication window remembers per identity (the one heard
/// from least recently is forgotten first).
pub const DEDUP_SENDERS: usize = 64;

/// A delivery with a guarantee failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No acknowledgement came before the deadline: the message may or may
    /// not have been handled. Check the owner's health (`health()`, the
    /// management API) and send again if the operation allows it.
    #[error(
        "{identity}: not acknowledged within {deadline:?} ({attempts} sends; last problem: {last_error})"
    )]
    DeadlinePassed {
        /// The identity it was for.
        identity: String,
        /// The deadline given.
        deadline: Duration,
        /// How many times it was sent.
        attempts: u32,
        /// The last send error or `no acknowledgement`.
        last_error: String,
    },
    /// The message's type is not registered with `remote_message!`, so it
    /// cannot be kept as bytes to send again: register it.
    #[error("{type_name} is not a remote_message type; a guaranteed delivery keeps its bytes")]
    NotRemote {
        /// The Rust type.
        type_name: &'static str,
    },
    /// The message did not encode.
    #[error("the message did not encode: {0}")]
    Encode(String),
    /// Too many messages (or bytes) wait for acknowledgements on this node:
    /// slow down, or look for the owner that does not answer.
    #[error("{pending} messages ({bytes} bytes) wait for acknowledgement; the limit is {limit}")]
    Backlog {
        /// Messages waiting.
        pending: usize,
        /// Their bytes.
        bytes: usize,
        /// The limit that was reached.
        limit: String,
    },
    /// An at-most-once send failed.
    #[error("send failed: {0}")]
    Send(String),
    /// The owner node's circuit is open (an at-most-once send fails fast;
    /// a guaranteed one waits for the circuit instead).
    #[error(transparent)]
    CircuitOpen(#[from] super::breaker::CircuitOpen),
    /// Placement stopped on this node before the message was acknowledged.
    #[error("placement stopped on this node")]
    Stopped,
}

/// Who sent a guaranteed message: a node's placement session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sender {
    /// The sending node's full name (acknowledgements go there).
    pub node: String,
    /// Random, from the sender's placement start.
    pub session: u64,
}

/// A guaranteed message on the wire: the user's message as its registered
/// type's bytes, so it can be sent again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reliable {
    /// Who to acknowledge.
    pub sender: Sender,
    /// Its number in the sender's session.
    pub seq: u64,
    /// Deduplicated at the owner (exactly-once).
    pub dedup: bool,
    /// The registered wire id of the message's type.
    pub wire: u64,
    /// The message, encoded as its type registers.
    pub bytes: Vec<u8>,
}
crate::remote_message!(Reliable, "joerl::placement::Reliable");

/// The acknowledgement of a handled [`Reliable`], to the sender's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The sender's session.
    pub session: u64,
    /// The message's number.
    pub seq: u64,
    /// The node that handled it.
    pub by: String,
}
crate::remote_message!(Ack, "joerl::placement::Ack");

/// One message waiting for its acknowledgement.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Where it goes.
    pub identity: Identity,
    /// What goes.
    pub message: Reliable,
    /// When it is reported failed.
    pub deadline: Instant,
    /// The deadline as given, for the error.
    pub within: Duration,
    /// When it is sent next.
    pub next: Instant,
    /// Sends so far.
    pub attempts: u32,
    /// The last send error.
    pub last_error: Option<String>,
}

/// What [`PendingSet::due`] found: the messages to send again, and the
/// numbers whose deadline passed with their error.
pub type Due = (Vec<(Identity, Reliable)>, Vec<(u64, DeliveryError)>);

/// The messages a node keeps until acknowledged.
#[derive(Debug, Default)]
pub struct PendingSet {
    by_seq: BTreeMap<u64, Pending>,
    /// When each one is due next (its next send or its deadline, the
    /// earlier), so [`Self::due`] looks only at what is due.
    by_time: BTreeSet<(Instant, u64)>,
    bytes: usize,
}

impl Pending {
    /// When it is due next: sent again, or reported failed.
    fn due_at(&self) -> Instant {
        self.next.min(self.deadline)
    }
}

impl PendingSet {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// True if none waits.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Bytes of the messages waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps a message about to be sent the first time at `now`; refused
    /// past [`MAX_PENDING`] or [`MAX_PENDING_BYTES`].
    pub fn insert(
        &mut self,
        identity: Identity,
        message: Reliable,
        within: Duration,
        now: Instant,
    ) -> Result<(), DeliveryError> {
        let size = message.bytes.len();
        let limit = if self.by_seq.len() >= MAX_PENDING {
            Some(format!("{MAX_PENDING} messages"))
        } else if self.bytes + size > MAX_PENDING_BYTES {
            Some(format!("{MAX_PENDING_BYTES} bytes"))
        } else {
            None
        };
        if let Some(limit) = limit {
            return Err(DeliveryError::Backlog {
                pending: self.by_seq.len(),
                bytes: self.bytes,
                limit,
            });
        }
        self.bytes += size;
        let seq = message.seq;
        let p = Pending {
            identity,
            message,
            deadline: now + within,
            within,
            next: now + FIRST_RESEND,
            attempts: 1,
            last_error: None,
        };
        self.by_time.insert((p.due_at(), seq));
        if let Some(old) = self.by_seq.insert(seq, p) {
            // A number used twice (not done by the outbox): the newer wins.
            self.bytes -= old.message.bytes.len();
            self.by_time.remove(&(old.due_at(), seq));
        }
        Ok(())
    }

    /// The acknowledgement of `seq` came: it is no longer kept. `None` if
    /// it was not (acknowledged before, or expired).
    pub fn ack(&mut self, seq: u64) -> Option<Pending> {
        let p = self.by_seq.remove(&seq)?;
        self.bytes -= p.message.bytes.len();
        self.by_time.remove(&(p.due_at(), seq));
        Some(p)
    }

    /// A send of `seq` failed at once with `error`.
    pub fn failed(&mut self, seq: u64, error: String) {
        if let Some(p) = self.by_seq.get_mut(&seq) {
            p.last_error = Some(error);
        }
    }

    /// What is due at `now`: the messages to send again (their attempt
    /// counted and their next send scheduled with doubled backoff, less
    /// up to half of it by `jitter` in `[0, 1]`, so that many messages
    /// kept at once do not all go again together) and those whose
    /// deadline passed (removed, with their error).
    pub fn due(&mut self, now: Instant, jitter: f64) -> Due {
        let mut again = Vec::new();
        let mut expired = Vec::new();
        let mut rescheduled = Vec::new();
        // Only what is due: the earliest first, up to `now`.
        while let Some(&(at, seq)) = self.by_time.first() {
            if at > now {
                break;
            }
            self.by_time.pop_first();
            let Some(p) = self.by_seq.get_mut(&seq) else {
                continue;
            };
            if now >= p.deadline {
                // Put back, so that `ack` finds and removes it.
                rescheduled.push((at, seq));
                expired.push(seq);
            } else {
                let wait = FIRST_RESEND
                    .saturating_mul(1 << p.attempts.min(16))
                    .min(MAX_RESEND);
                let wait = wait.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0);
                p.attempts += 1;
                p.next = (now + wait).min(p.deadline);
                rescheduled.push((p.due_at(), seq));
                again.push((p.identity.clone(), p.message.clone()));
            }
        }
        self.by_time.extend(rescheduled);
        let expired = expired
            .into_iter()
            .filter_map(|seq| {
                let p = self.ack(seq)?;
                Some((
                    seq,
                    DeliveryError::DeadlinePassed {
                        identity: p.identity.to_string(),
                        deadline: p.within,
                        attempts: p.attempts,
                        last_error: p
                            .last_error
                            .unwrap_or_else(|| "no acknowledgement".to_string()),
                    },
                ))
            })
            .collect();
        (again, expired)
    }

    /// The earliest instant something is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }
}

/// What one sender's messages to one identity looked like so far.
#[derive(Debug, Default, Clone)]
struct SenderWindow {
    seen: BTreeSet<u64>,
    /// Order of last use among the identity's senders.
    used: u64,
}

/// The deduplication window of one identity on its owner node: the
/// sequence numbers handled, per sender, the newest [`DEDUP_WINDOW`] of
/// each of the [`DEDUP_SENDERS`] senders heard from last.
#[derive(Debug, Default, Clone)]
pub struct DedupWindow {
    senders: HashMap<Sender, SenderWindow>,
    clock: u64,
}

impl DedupWindow {
    /// True if `seq` from `sender` was handled already.
    pub fn seen(&self, sender: &Sender, seq: u64) -> bool {
        self.senders
            .get(sender)
            .is_some_and(|w| w.seen.contains(&seq))
    }

    /// `seq` from `sender` was handled.
    pub fn mark(&mut self, sender: &Sender, seq: u64) {
        self.clock += 1;
        if !self.senders.contains_key(sender) && self.senders.len() >= DEDUP_SENDERS {
            if let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, w)| w.used)
                .map(|(s, _)| s.clone())
            {
                self.senders.remove(&oldest);
            }
        }
        let w = self.senders.entry(sender.clone()).or_default();
        w.used = self.clock;
        w.seen.insert(seq);
        while w.seen.len() > DEDUP_WINDOW {
            w.seen.pop_first();
        }
    }

    /// Senders remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// What the window holds, for the identity's next owner (see
    /// [`ClaimAnswer::Handed`](super::handoff::ClaimAnswer::Handed)).
    pub fn export(&self) -> Vec<SeenBy> {
        self.senders
            .iter()
            .map(|(sender, w)| SeenBy {
                sender: sender.clone(),
                seqs: w.seen.iter().copied().collect(),
            })
            .collect()
    }

    /// Adds what another node's window for the same identity held (its
    /// previous owner's): those messages were handled there.
    pub fn merge(&mut self, seen: &[SeenBy]) {
        for s in seen {
            for &seq in s.seqs.iter().rev().take(DEDUP_WINDOW).rev() {
                self.mark(&s.sender, seq);
            }
        }
    }
}

/// The sequence numbers one sender's guaranteed messages to an identity
/// had when its owner handed it off (they were handled there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenBy {
    /// The sender.
    pub sender: Sender,
    /// The sequence numbers handled, ascending.
    pub seqs: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, size: usize) -> Reliable {
        Reliable {
            sender: Sender {
                node: "a@h".into(),
                session: 7,
            },
            seq,
            dedup: false,
            wire: 1,
            bytes: vec![0; size],
        }
    }

    #[test]
    fn due_takes_only_what_is_due_among_many_and_acked_ones_are_gone_from_the_schedule() {
        let t0 = Instant::now();
        let mut p = PendingSet::default();
        let id = Identity::new("k", "i");
        // 10,000 kept at t0 (first resend at t0 + 0.5 s), one at t0 + 10 s.
        for seq in 1..=10_000 {
            p.insert(id.clone(), msg(seq, 1), Duration::from_secs(30), t0)
                .unwrap();
        }
        let late = t0 + Duration::from_secs(10);
        p.insert(id.clone(), msg(10_001, 1), Duration::from_secs(30), late)
            .unwrap();
        for seq in 1..=10_000 {
            p.ack(seq).unwrap();
        }
        assert_eq!(p.next_due(), Some(late + FIRST_RESEND));
        let (again, expired) = p.due(late, 0.0);
        assert!(again.is_empty() && expired.is_empty());
        let (again, _) = p.due(late + FIRST_RESEND, 0.0);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.seq, 10_001);
        // Rescheduled once, doubled: 1 s later.
        assert_eq!(p.next_due(), Some(late + FIRST_RESEND * 3));
        // At the deadline it expires, and nothing is left to schedule.
        let (_, expired) = p.due(late + Duration::from_secs(30), 0.0);
        assert_eq!(expired.len(), 1);
        assert!(p.is_empty());
        assert_eq!(p.next_due(), None);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn a_window_handed_on_makes_its_messages_duplicates_at_the_next_owner() {
        let (a, b) = (
            Sender {
                node: "a@h".into(),
                session: 1,
            },
            Sender {
                node: "b@h".into(),
                session: 2,
            },
        );
        let mut old = DedupWindow::default();
        for seq in 1..=10 {
            old.mark(&a, seq);
        }
        old.mark(&b, 7);
        let mut new = DedupWindow::default();
        new.mark(&a, 11);
        new.merge(&old.export());
        assert!((1..=11).all(|s| new.seen(&a, s)));
        assert!(new.seen(&b, 7) && !new.seen(&b, 8));
        assert!(!new.seen(&a, 12));
        // The merged window keeps its bound.
        let mut big = DedupWindow::default();
        for seq in 1..=(2 * DEDUP_WINDOW as u64) {
            big.mark(&a, seq);
        }
        let mut merged = DedupWindow::default();
        merged.merge(&big.export());
        assert!(merged.seen(&a, 2 * DEDUP_WINDOW as u64));
        assert!(!merged.seen(&a, DEDUP_WINDOW as u64));
    }

    #[test]
    fn pending_is_sent_again_with_backoff_until_acknowledged() {
        let t0 = Instant::now();
        let mut p = PendingSet::default();
        p.insert(
            Identity::new("k", "1"),
            msg(1, 10),
            Duration::from_secs(30),
            t0,
        )
        .unwrap();
        assert_eq!(p.bytes(), 10);
        // Nothing before the first resend time.
        assert!(p.due(t0 + Duration::from_millis(499), 0.0).0.is_empty());
        let (again, expired) = p.due(t0 + FIRST_RESEND, 0.0);
        assert_eq!(again.len(), 1);
        assert!(expired.is_empty());
        // The next wait doubled: not due 999 ms later, due 1 s later.
        let t1 = t0 + FIRST_RESEND;
        assert!(p.due(t1 + Duration::from_millis(999), 0.0).0.is_empty());
        assert_eq!(p.due(t1 + Duration::from_secs(1), 0.0).0.len(), 1);
        // Full jitter takes half the next wait off (4 s, capped, to 2 s).
        let t2 = t1 + Duration::from_secs(1);
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(p.due(t3, 1.0).0.len(), 1);
        assert!(p.due(t3 + Duration::from_millis(1999), 0.0).0.is_empty());
        assert_eq!(p.due(t3 + Duration::from_secs(2), 0.0).0.len(), 1);
        assert!(p.ack(1).is_some());
        assert!(p.ack(1).is_none(), "an acknowledgement counts once");
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn backoff_is_capped_and_the_deadline_reports_failure() {
        let t0 = Instant::now();
        let mut p = PendingSet::default();
        p.insert(
            Identity::new("k", "1"),
            msg(1, 1),
            Duration::from_secs(20),
            t0,
        )
        .unwrap();
        p.failed(1, "connection refused".into());
        let mut t = t0;
        let mut sends = 1;
        let mut gaps = Vec::new();
        let mut last = t0;
        loop {
            t += Duration::from_millis(100);
            let (again, expired) = p.due(t, 0.0);
            if !again.is_empty() {
                sends += 1;
                gaps.push(t - last);
                last = t;
            }
            if let Some((seq, e)) = expired.into_iter().next() {
                assert_eq!(seq, 1);
                match e {
                    DeliveryError::DeadlinePassed {
                        attempts,
                        last_error,
                        deadline,
                        ..
                    } => {
                        assert_eq!(attempts, sends);
                        assert_eq!(last_error, "connection refused");
                        assert_eq!(deadline, Duration::from_secs(20));
                    }
                    other => panic!("{other:?}"),
                }
                break;
            }
        }
        assert!(t >= t0 + Duration::from_secs(20));
        assert!(
            gaps.iter()
                .all(|g| *g <= MAX_RESEND + Duration::from_millis(100))
        );
        assert!(gaps.iter().any(|g| *g >= MAX_RESEND), "{gaps:?}");
        assert!(p.is_empty());
    }

    #[test]
    fn pending_refuses_past_its_limits() {
        let t0 = Instant::now();
        let mut p = PendingSet::default();
        p.insert(
            Identity::new("k", "1"),
            msg(1, MAX_PENDING_BYTES - 5),
            DEFAULT_DEADLINE,
            t0,
        )
        .unwrap();
        let e = p
            .insert(Identity::new("k", "1"), msg(2, 6), DEFAULT_DEADLINE, t0)
            .unwrap_err();
        assert!(
            matches!(e, DeliveryError::Backlog { pending: 1, .. }),
            "{e}"
        );
        p.insert(Identity::new("k", "1"), msg(3, 5), DEFAULT_DEADLINE, t0)
            .unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn dedup_window_remembers_per_sender_and_forgets_the_oldest() {
        let a = Sender {
            node: "a@h".into(),
            session: 1,
        };
        let a2 = Sender {
            node: "a@h".into(),
            session: 2,
        };
        let mut w = DedupWindow::default();
        assert!(!w.seen(&a, 1));
        w.mark(&a, 1);
        assert!(w.seen(&a, 1));
        assert!(!w.seen(&a2, 1), "a restarted sender is another sender");
        for seq in 2..=(DEDUP_WINDOW as u64 + 1) {
            w.mark(&a, seq);
        }
        assert!(!w.seen(&a, 1), "the oldest number is forgotten");
        assert!(w.seen(&a, 2));
        for s in 0..DEDUP_SENDERS as u64 {
            w.mark(
                &Sender {
                    node: format!("n{s}@h"),
                    session: s,
                },
                1,
            );
        }
        assert_eq!(w.senders(), DEDUP_SENDERS);
        assert!(!w.seen(&a, 2), "the sender heard from least recently went");
    }
}
