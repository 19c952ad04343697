//! Exact counts of the data frames (messages and signals) this node sent to a
//! peer that never arrived. No I/O: the peer's connection code feeds it events.
//!
//! Both sides count the data frames (SEND, SEND_NAMED, SIGNAL, MONITOR_NAMED)
//! of one pair of incarnations, a *session*, across all of its connections: the
//! sender counts what it pushed into its queue, the receiver what it read. The
//! receiver reports its count in ACK frames (periodically and as the idle
//! tick), in the `Resume` record that ends every handshake, and in GOODBYE. A
//! cut mended within the grace period loses nothing (the queue replays what
//! the peer did not read) and is no loss here. When the node goes down the
//! sender knows exactly what it never wrote (the frames cleared from its queue,
//! `unsent`); the `Resume` of the next connection of the same session tells it how
//! many of the rest the receiver read, so what was written but never read
//! (`lost`) is known exactly as well, wherever it was lost: in the writer's
//! hands, in a socket buffer, or in the network. If the peer comes back as a new
//! incarnation, whatever the old one had not acknowledged is counted as lost with
//! it; a peer that never comes back leaves its unacknowledged messages in
//! `unacked` (their fate is unknown to anyone alive).

/// See the module documentation. Counts are of data frames, not of other frames.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Accounting {
    /// The peer incarnation of the current session (`None` before the first connection).
    peer_creation: Option<u32>,
    /// The queue's push count when this session began.
    base: u64,
    /// Maps the peer's count to the queue's sequence numbers: the `n`th data
    /// frame the peer read is the queue's `n + seq_offset`th. Set by each
    /// connection that starts a new session or follows a loss (see
    /// [`map_counts`](Self::map_counts)); a resumed session keeps it.
    seq_offset: i64,
    /// Messages of this session cleared from the queue before being written.
    unsent: u64,
    /// The queue's push count when the last connection was lost, until the peer
    /// reports what it read by then.
    pushed_at_loss: Option<u64>,
    /// The highest count of messages the peer has reported reading, this session.
    acked: u64,
    /// Messages of this session known to be lost (written, never read).
    lost_session: u64,
    /// All-time totals, for statistics.
    unsent_total: u64,
    lost_total: u64,
    /// The peer said goodbye: what it reported then is final.
    peer_left: bool,
}

/// What the statistics show.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LossCounts {
    /// Messages never written: cleared from the queue with a lost connection.
    pub(crate) unsent: u64,
    /// Messages written but never read by the peer.
    pub(crate) lost: u64,
    /// Messages written whose arrival the peer has not yet acknowledged.
    pub(crate) unacked: u64,
}

impl Accounting {
    /// Messages pushed this session and not yet accounted for as read, unsent or lost.
    fn outstanding(&self, pushed: u64) -> u64 {
        pushed
            .saturating_sub(self.base)
            .saturating_sub(self.unsent)
            .saturating_sub(self.acked)
            .saturating_sub(self.lost_session)
    }

    /// The connection was lost; `pushed` is the queue's push count at that moment
    /// and `cleared` the messages cleared from the queue unwritten.
    pub(crate) fn connection_lost(&mut self, pushed: u64, cleared: u64) {
        self.unsent += cleared;
        self.unsent_total += cleared;
        if self.peer_left {
            // The peer's goodbye count is final: the rest will never be read.
            let lost = self.outstanding(pushed);
            self.lost_session += lost;
            self.lost_total += lost;
            // Still the end of this session: what is pushed from now on is for
            // the peer's next incarnation (its outstanding count here is 0).
            self.pushed_at_loss = Some(pushed);
        } else {
            self.pushed_at_loss = Some(pushed);
        }
    }

    /// A connection to incarnation `creation` of the peer came up; `pushed` is the
    /// queue's push count now. Starts a new session if the incarnation changed,
    /// counting what the old one never acknowledged as lost.
    pub(crate) fn connection_up(&mut self, creation: u32, pushed: u64) {
        if self.peer_creation == Some(creation) {
            self.peer_left = false;
            return;
        }
        if self.peer_creation.is_some() {
            // Messages pushed after the old session's last connection was lost
            // belong to the new session.
            let end = self.pushed_at_loss.unwrap_or(pushed);
            let lost = self.outstanding(end);
            self.lost_total += lost;
            self.base = end;
            self.unsent = 0;
            self.acked = 0;
            self.lost_session = 0;
        }
        self.peer_creation = Some(creation);
        self.pushed_at_loss = None;
        self.peer_left = false;
    }

    /// The queue's sequence number of the `n`th data frame the peer has
    /// read of this session.
    pub(crate) fn seq(&self, n: u64) -> u64 {
        (n as i64).saturating_add(self.seq_offset).max(0) as u64
    }

    /// A connection that does not resume a session came up: the peer has
    /// read `received` of our frames, and the next one it reads is the one
    /// after the queue's sequence number `taken` (everything up to `taken`
    /// was written to an earlier connection, or dropped). Holds whatever the
    /// peer's count is: for example a peer that kept counting while this
    /// node forgot it.
    pub(crate) fn map_counts(&mut self, taken: u64, received: u64) {
        self.seq_offset = taken as i64 - received as i64;
    }

    /// The peer reported reading `received` of this session's messages in an ACK.
    pub(crate) fn acked(&mut self, received: u64) {
        self.acked = self.acked.max(received);
    }

    /// The peer's `Resume` on a new connection of a new session (not a resumed
    /// one): it had read `received` messages
    /// when the connection came up, which settles the last loss exactly.
    pub(crate) fn resumed(&mut self, received: u64) {
        self.acked(received);
        if let Some(at_loss) = self.pushed_at_loss.take() {
            let lost = self.outstanding(at_loss);
            self.lost_session += lost;
            self.lost_total += lost;
        }
    }

    /// The peer said goodbye having read `received` messages.
    pub(crate) fn goodbye(&mut self, received: u64) {
        self.acked(received);
        self.peer_left = true;
    }

    /// The counts to show, with `pushed` the queue's push count now.
    pub(crate) fn counts(&self, pushed: u64) -> LossCounts {
        LossCounts {
            unsent: self.unsent_total,
            lost: self.lost_total,
            unacked: self.outstanding(self.pushed_at_loss.unwrap_or(pushed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_is_settled_exactly_by_the_next_resume() {
        let mut a = Accounting::default();
        a.connection_up(7, 0);
        a.acked(40); // 100 pushed, 40 acknowledged so far
        a.connection_lost(100, 10); // 10 still queued are cleared
        assert_eq!(
            a.counts(100),
            LossCounts {
                unsent: 10,
                lost: 0,
                unacked: 50
            }
        );
        // 5 more pushed while reconnecting; the peer had read 85 of the 90 written.
        a.connection_up(7, 105);
        a.resumed(85);
        assert_eq!(
            a.counts(105),
            LossCounts {
                unsent: 10,
                lost: 5,
                unacked: 5
            }
        );
        // The 5 pushed after the cut arrive: the receiver's count goes on from 85.
        a.acked(90);
        assert_eq!(a.counts(105).unacked, 0);
        // A second cut with nothing lost.
        a.connection_lost(105, 0);
        a.connection_up(7, 105);
        a.resumed(90);
        assert_eq!(
            a.counts(105),
            LossCounts {
                unsent: 10,
                lost: 5,
                unacked: 0
            }
        );
    }

    #[test]
    fn several_cuts_before_a_resume_are_settled_together() {
        let mut a = Accounting::default();
        a.connection_up(1, 0);
        a.connection_lost(50, 0);
        a.connection_up(1, 60); // came up, but was cut before the peer's count arrived
        a.connection_lost(60, 0);
        a.connection_up(1, 60);
        a.resumed(45);
        assert_eq!(a.counts(60).lost, 15);
        assert_eq!(a.counts(60).unacked, 0);
    }

    #[test]
    fn a_new_incarnation_takes_the_unacknowledged_with_the_old_one() {
        let mut a = Accounting::default();
        a.connection_up(1, 0);
        a.acked(30);
        a.connection_lost(50, 5); // 15 written and not acknowledged
        // Pushed 8 more while the peer restarted; they go to the new incarnation.
        a.connection_up(2, 58);
        assert_eq!(
            a.counts(58),
            LossCounts {
                unsent: 5,
                lost: 15,
                unacked: 8
            }
        );
        a.resumed(0); // the new incarnation has read nothing of ours yet
        assert_eq!(a.counts(58).lost, 15);
        a.acked(8);
        assert_eq!(a.counts(58).unacked, 0);
    }

    #[test]
    fn a_goodbye_count_is_final() {
        let mut a = Accounting::default();
        a.connection_up(1, 0);
        a.goodbye(20);
        a.connection_lost(30, 4); // 6 written after the peer stopped reading
        assert_eq!(
            a.counts(30),
            LossCounts {
                unsent: 4,
                lost: 6,
                unacked: 0
            }
        );
    }

    #[test]
    fn after_a_goodbye_messages_for_the_next_incarnation_are_not_lost() {
        let mut a = Accounting::default();
        a.connection_up(1, 0);
        a.goodbye(20);
        a.connection_lost(30, 4); // 6 written after the peer stopped reading
        // 5 more queued while the peer restarts; its new incarnation reads them.
        a.connection_up(2, 35);
        a.resumed(0);
        a.acked(5);
        assert_eq!(
            a.counts(35),
            LossCounts {
                unsent: 4,
                lost: 6,
                unacked: 0
            }
        );
    }

    #[test]
    fn messages_cleared_before_the_first_connection_are_unsent_only() {
        let mut a = Accounting::default();
        a.connection_lost(12, 12); // gave up dialing with 12 queued
        a.connection_up(3, 20); // 8 more pushed, then the first connection
        a.resumed(0);
        assert_eq!(
            a.counts(20),
            LossCounts {
                unsent: 12,
                lost: 0,
                unacked: 8
            }
        );
    }

    #[test]
    fn counts_map_to_sequence_numbers_whatever_the_peer_counted_before() {
        let mut a = Accounting::default();
        // First connection: nothing taken, the peer read nothing.
        a.connection_up(1, 0);
        a.map_counts(0, 0);
        assert_eq!(a.seq(5), 5);
        // This node forgot the peer, which kept counting (1,000 read).
        let mut a = Accounting::default();
        a.connection_up(1, 0);
        a.map_counts(0, 1_000);
        assert_eq!(a.seq(1_000), 0);
        assert_eq!(a.seq(1_007), 7);
        // 40 frames dropped before the first connection came up.
        let mut a = Accounting::default();
        a.connection_lost(40, 40);
        a.connection_up(1, 40);
        a.map_counts(40, 0);
        assert_eq!(a.seq(1), 41);
    }
}
