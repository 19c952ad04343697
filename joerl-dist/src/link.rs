//! The one owner of a peer's connection life cycle: a state machine with no I/O.
//!
//! Every decision about the link to one peer is made here: whether to dial,
//! how long to back off, when to give up, whether an incoming connection is
//! admitted (Erlang's simultaneous-connect rule: the dial of the node with the
//! greater name wins), which connection is the current one, whether a lost
//! connection is resumed within the grace period or the node is reported down,
//! and when the node is reported up and down (exactly one down per up).
//! Events go in as method calls (a dial is wanted, an attempt started or
//! failed, a dialer introduced itself, a connection was installed or closed,
//! the grace period ran out, the queue overflowed, the node is stopping); the
//! resulting [`Action`]s come out of [`LinkMachine::drain`] and are carried out
//! by the node (`node.rs`), which does the I/O: dialing, spawning reader and
//! writer, closing sockets, replaying unacknowledged frames, delivering node
//! events.
//!
//! Nothing else keeps connection state. The node publishes two values from the
//! actions for the send path, which must not take a lock per message: whether
//! the node is up (connected, or in the grace period of a cut) and the id of
//! the current connection (a reader of any other connection stops at its next
//! frame).
//!
//! **Grace.** A connection that breaks (closed, reset, silent for the tick
//! timeout, an I/O error) while the peer may still live is not reported down at
//! once: the link redials at once and, for the grace period, keeps everything
//! the peer has not acknowledged. A new connection to the same incarnation on
//! which both sides say they kept the session resumes it (the node replays
//! what the peer did not read) and nothing is reported. A refused redial, an
//! EPMD that no longer lists the peer, a new incarnation, or the end of the
//! grace period ends it: the node is reported down then, as without grace.
//!
//! The machine reads no clock: events that need the time carry it (`now`).

use std::time::{Duration, Instant};

use crate::connection::{Admit, EndReason};
use crate::error::{DistError, HandshakeError};
use crate::events::NodeDownReason;
use crate::handshake::RefuseReason;

/// The settings the machine decides with.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    /// First delay between dial attempts.
    pub(crate) reconnect_initial: Duration,
    /// Longest delay between dial attempts.
    pub(crate) reconnect_max: Duration,
    /// Failed attempts in a row after which the machine gives up.
    pub(crate) reconnect_attempts: u32,
    /// How long a dial refused because the peer's own dial wins is given to
    /// come up before this side tries again.
    pub(crate) crossing_wait: Duration,
    /// How long a cut connection may take to be re-made before the node is
    /// reported down (zero: at once).
    pub(crate) grace: Duration,
}

impl LinkConfig {
    /// The settings of a node's configuration.
    pub(crate) fn of(c: &crate::config::DistConfig) -> Self {
        LinkConfig {
            reconnect_initial: c.reconnect_initial,
            reconnect_max: c.reconnect_max,
            reconnect_attempts: c.reconnect_attempts.max(1),
            crossing_wait: c.connect_timeout,
            grace: c.grace(),
        }
    }
}

/// Where a dial is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting out a backoff (or not started yet).
    Waiting,
    /// Asking the resolver where the peer listens.
    Resolving,
    /// Connecting and in the handshake: the simultaneous-connect rule applies.
    Handshaking,
}

/// A cut connection within its grace period: the node is not reported down,
/// and what the peer has not acknowledged is kept to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grace {
    /// Which grace period (its timer names it).
    pub(crate) id: u64,
    /// The incarnation of the peer whose session is kept.
    pub(crate) creation: u32,
    /// What is reported if the grace period ends without a resume.
    pub(crate) reason: NodeDownReason,
}

/// The state of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Not connected and not trying.
    Idle,
    /// Dial number `dial` is trying to connect.
    Dialing {
        /// Which dial (a dialer task stops when its number is no longer current).
        dial: u64,
        /// Where it is.
        phase: Phase,
        /// Failed attempts so far.
        failures: u32,
        /// The next backoff.
        delay: Duration,
        /// This dial follows the loss of a live connection: a peer that is
        /// gone (see [`peer_is_gone`]) ends it at once.
        after_loss: bool,
        /// The cut this dial is to mend, within its grace period.
        grace: Option<Grace>,
    },
    /// An admitted incoming connection is taking the place of the connection
    /// that was closed for it (a new incarnation, or a half-open one): no dial
    /// starts until it is installed or has failed.
    Taking {
        /// The cut it is to mend (a half-open connection replaced).
        grace: Option<Grace>,
    },
    /// Connection `conn` to incarnation `creation` is up since `since`.
    Up {
        /// The connection's id.
        conn: u64,
        /// The peer's creation.
        creation: u32,
        /// When it came up.
        since: Instant,
    },
    /// The node is stopping: nothing is dialed or admitted any more.
    Stopped,
}

/// What waiters on a link (`connect`) can observe. `attempt` is the number of
/// the dial attempt a result belongs to, as counted when it started, so a
/// waiter can tell the result of an attempt made after it started waiting from
/// an older one.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    /// Not connected; a dial may be under way.
    Connecting,
    /// Connected (or mending a cut within its grace period).
    Up,
    /// Dial attempt number `attempt` failed with `error`.
    Failed {
        /// Why.
        error: DistError,
        /// Which attempt.
        attempt: u64,
    },
    /// Not connected, not trying (the connection was lost, or the machine gave
    /// up dialing, then with the last attempt's `error`). Ends every wait.
    Down {
        /// Why.
        reason: NodeDownReason,
        /// The dial error that made the machine give up, if that was why.
        error: Option<DistError>,
    },
}

/// A node event, without the node's name (the node adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The peer is up with this creation.
    Up(u32),
    /// The peer is down.
    Down(NodeDownReason),
}

/// What the node must do, in order.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Publish for the send path: whether the node is up (connected, or in the
    /// grace period of a cut), and the current connection (0: none).
    Publish {
        /// Up.
        up: bool,
        /// The current connection's id.
        conn: u64,
    },
    /// Deliver a node event to subscribers and node watchers.
    Emit(Event),
    /// Stop the reader and writer of connection `conn`, which ended with
    /// `reason` after being up for `up_for`, and detach it from the queue
    /// (what is queued and unacknowledged stays).
    Close {
        /// The connection.
        conn: u64,
        /// Why it ended.
        reason: EndReason,
        /// How long it was up.
        up_for: Duration,
    },
    /// Nothing queued or unacknowledged will be carried: drop the queue and
    /// the resend buffer (counted as lost), turn every link and monitor to
    /// the peer into `noconnection`, and tell the `monitor_node` owners.
    Lost(NodeDownReason),
    /// Publish a status to waiters. `seq` orders statuses: one older than the
    /// published one is ignored (actions may be carried out by two threads).
    Status {
        /// Order of the status.
        seq: u64,
        /// The status.
        status: Status,
    },
    /// Start a dialer task for dial `dial`, first waiting `delay` if given
    /// (cut short by [`Action::WakeDialer`]).
    StartDialer {
        /// The dial's number.
        dial: u64,
        /// A first wait.
        delay: Option<Duration>,
    },
    /// Cut short the wait of the dialer task (a dial is wanted now).
    WakeDialer,
    /// Call [`LinkMachine::grace_over`] with `grace` after `after`.
    GraceTimer {
        /// Which grace period.
        grace: u64,
        /// When.
        after: Duration,
    },
}

/// What a dialer does after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Stop: the dial is no longer current (connected another way, gave up,
    /// stopped).
    Stop,
    /// Wait this long (the node adds jitter), then try again.
    Retry(Duration),
}

/// How a connection was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Installed {
    /// A new session: the node is reported up.
    Fresh,
    /// The session of a cut continues: replay what the peer did not read;
    /// nothing is reported.
    Resumed,
}

/// Why an install was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotInstalled {
    /// A connection is up already (or the node is stopping).
    AlreadyUp,
    /// What this side told the peer in the handshake may be stale (its epoch
    /// changed since: for example its grace ran out, or another connection
    /// came and went): the connection is dropped, so the peer, if it
    /// installed it, sees a cut and learns the truth in the next handshake.
    Stale,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct LinkMachine {
    config: LinkConfig,
    /// This node's name is greater than the peer's: its dial wins.
    we_win_crossing: bool,
    state: State,
    /// The node is stopping (see [`begin_stop`](Self::begin_stop)).
    stopping: bool,
    /// Counts the changes a handshake's resume point depends on (a
    /// connection installed, a cut begun or ended): an install whose
    /// handshake saw another epoch is refused (see [`epoch`](Self::epoch)).
    epoch: u64,
    /// Admitted incoming connections not yet installed or dropped.
    accepting: usize,
    /// A resolver has found where the peer listens (so a resolver that no
    /// longer finds it says it is gone, not merely that this node cannot
    /// look it up).
    listed: bool,
    /// A connection to the peer was up once: a later dial (wanted by a send,
    /// a link or a monitor after the link went idle) ends at the first sign
    /// that the peer is gone, as the dial right after a loss does, so what
    /// waits on it fails with `noconnection` at once instead of after every
    /// retry (Erlang's auto-connect makes one attempt).
    was_up: bool,
    /// Dial attempts started so far.
    attempts: u64,
    next_dial: u64,
    next_grace: u64,
    status_seq: u64,
    out: Vec<Action>,
}

impl LinkMachine {
    /// The link from `me` to `peer`, idle.
    pub(crate) fn new(me: &str, peer: &str, config: LinkConfig) -> Self {
        LinkMachine {
            config,
            we_win_crossing: me > peer,
            state: State::Idle,
            stopping: false,
            epoch: 0,
            accepting: 0,
            listed: false,
            was_up: false,
            attempts: 0,
            next_dial: 0,
            next_grace: 0,
            status_seq: 0,
            out: Vec::new(),
        }
    }

    /// The actions the events so far asked for, in order.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.out.drain(..)
    }

    /// The state now.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The current connection, if up.
    pub(crate) fn current_conn(&self) -> Option<u64> {
        match self.state {
            State::Up { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// Dial attempts started so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Not connected, not dialing, no incoming connection pending: the peer
    /// may be forgotten if nothing else uses it.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle | State::Stopped) && self.accepting == 0
    }

    /// The answer to a peer's `Alive` question on our dial: go on only if no
    /// connection is up and none is being admitted.
    pub(crate) fn wants_dialed_connection(&self) -> bool {
        !matches!(self.state, State::Up { .. } | State::Stopped) && self.accepting == 0
    }

    /// The epoch now: a handshake records it with what it tells the peer
    /// (whether the session is kept, how much was read), and its install is
    /// refused if the epoch changed since, because what it told may be stale.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this side keeps the session with incarnation `creation` of
    /// the peer (it is mending a cut to it), as told in the handshake.
    pub(crate) fn keeps_session(&self, creation: u32) -> bool {
        self.grace().is_some_and(|g| g.creation == creation)
    }

    fn grace(&self) -> Option<&Grace> {
        match &self.state {
            State::Dialing { grace, .. } | State::Taking { grace } => grace.as_ref(),
            _ => None,
        }
    }

    fn take_grace(&mut self) -> Option<Grace> {
        match &mut self.state {
            State::Dialing { grace, .. } | State::Taking { grace } => grace.take(),
            _ => None,
        }
    }

    fn status(&mut self, status: Status) {
        self.status_seq += 1;
        self.out.push(Action::Status {
            seq: self.status_seq,
            status,
        });
    }

    fn start_dial(&mut self, delay: Option<Duration>, after_loss: bool, grace: Option<Grace>) {
        self.next_dial += 1;
        let dial = self.next_dial;
        let in_grace = grace.is_some();
        self.state = State::Dialing {
            dial,
            phase: Phase::Waiting,
            failures: 0,
            delay: self.config.reconnect_initial,
            after_loss,
            grace,
        };
        // While mending a cut the node is still up for waiters.
        if !in_grace {
            self.status(Status::Connecting);
        }
        self.out.push(Action::StartDialer { dial, delay });
    }

    /// A dial is wanted: something was sent to the peer, or a monitor, a
    /// `connect` (`now`: cut a backoff short) or discovery asked for it.
    pub(crate) fn want(&mut self, now: bool) {
        if self.stopping {
            return;
        }
        match self.state {
            State::Idle => self.start_dial(None, self.was_up, None),
            State::Dialing {
                phase: Phase::Waiting,
                ..
            } if now => self.out.push(Action::WakeDialer),
            _ => {}
        }
    }

    /// Dial `dial` starts an attempt. Returns its number, or `None` if the
    /// dial is no longer current (its task ends).
    pub(crate) fn attempt_started(&mut self, dial: u64) -> Option<u64> {
        match &mut self.state {
            State::Dialing { dial: d, phase, .. } if *d == dial => {
                *phase = Phase::Resolving;
                self.attempts += 1;
                Some(self.attempts)
            }
            _ => None,
        }
    }

    /// Dial `dial` knows where the peer listens and connects.
    pub(crate) fn handshake_started(&mut self, dial: u64) {
        self.listed = true;
        if let State::Dialing { dial: d, phase, .. } = &mut self.state {
            if *d == dial {
                *phase = Phase::Handshaking;
            }
        }
    }

    /// Attempt `attempt` of dial `dial` failed with `error`.
    pub(crate) fn attempt_failed(&mut self, dial: u64, attempt: u64, error: DistError) -> Next {
        let State::Dialing {
            dial: d,
            phase,
            failures,
            delay,
            after_loss,
            grace,
        } = &mut self.state
        else {
            return Next::Stop;
        };
        if *d != dial {
            return Next::Stop;
        }
        *phase = Phase::Waiting;
        *failures += 1;
        let crossed = matches!(
            error,
            DistError::Handshake {
                source: HandshakeError::Simultaneous | HandshakeError::AlreadyConnected,
                ..
            }
        );
        // A peer that is dialing us in the meantime is not gone: its
        // connection may mend the cut.
        let mending = grace.is_some() && self.accepting > 0;
        let gone = (*after_loss || grace.is_some())
            && peer_is_gone(&error)
            && (self.listed || !matches!(error, DistError::UnknownNode(_)));
        if !mending && (gone || *failures >= self.config.reconnect_attempts) {
            self.give_up(error);
            return Next::Stop;
        }
        if crossed {
            // The peer's own connection is used (or about to be): give it
            // time to come up, and tell waiters nothing (it is no failure).
            return Next::Retry(self.config.crossing_wait);
        }
        let wait = *delay;
        *delay = (*delay * 2).min(self.config.reconnect_max);
        if grace.is_none() {
            self.status(Status::Failed { error, attempt });
        }
        Next::Retry(wait)
    }

    /// Stops dialing a peer that never came up, is gone, or could not be
    /// reached again within the grace period: what waits for it is dropped
    /// and every relation to it fails with `noconnection`.
    fn give_up(&mut self, error: DistError) {
        let reason = match self.take_grace() {
            // The cut is reported as what it was; the give-up adds no down.
            Some(g) => {
                self.end_grace(g.reason.clone());
                g.reason
            }
            None => {
                let reason = NodeDownReason::Unreachable(error.to_string());
                self.out.push(Action::Lost(reason.clone()));
                reason
            }
        };
        self.state = State::Idle;
        self.status(Status::Down {
            reason,
            error: Some(error),
        });
    }

    /// The grace period `id` ran out (its timer fired): if the cut it was
    /// for is still not mended, the node is reported down, and the dial goes
    /// on as after any loss.
    pub(crate) fn grace_over(&mut self, id: u64) {
        match self.grace() {
            Some(g) if g.id == id => {}
            _ => return,
        }
        self.epoch += 1;
        let g = self.take_grace().expect("checked");
        self.end_grace(g.reason.clone());
        self.status(Status::Down {
            reason: g.reason,
            error: None,
        });
    }

    /// Reports the node down at the end of a grace period (the grace is
    /// already taken out of the state).
    fn end_grace(&mut self, reason: NodeDownReason) {
        self.epoch += 1;
        let reason = if self.stopping {
            NodeDownReason::ShuttingDown
        } else {
            reason
        };
        self.out.push(Action::Publish { up: false, conn: 0 });
        self.out.push(Action::Emit(Event::Down(reason.clone())));
        self.out.push(Action::Lost(reason));
    }

    /// An authenticated dialer of incarnation `creation` asks to connect.
    /// On `Ok`, the connection counts as being admitted until
    /// [`accept_ended`](Self::accept_ended).
    pub(crate) fn incoming(&mut self, creation: u32, now: Instant) -> Result<Admit, RefuseReason> {
        if self.stopping {
            return Err(RefuseReason::ShuttingDown);
        }
        // A new incarnation while mending a cut to the old one: the old one
        // is dead.
        if self.grace().is_some_and(|g| g.creation != creation) {
            self.take_grace();
            self.end_grace(NodeDownReason::Replaced(
                "a new incarnation of the node connected".into(),
            ));
        }
        let admit = match self.state {
            State::Stopped => return Err(RefuseReason::ShuttingDown),
            // Our connection to this very incarnation looks up, yet it dials
            // us: ours is probably half-open. Ask it.
            State::Up {
                creation: c, conn, ..
            } if c == creation => Admit::IfHalfOpen(conn),
            // A new incarnation: the old one is dead.
            State::Up { conn, .. } => {
                self.down(
                    conn,
                    EndReason::Replaced("a new incarnation of the node connected".into()),
                    now,
                );
                self.state = State::Taking { grace: None };
                Admit::Yes
            }
            // Both dialed at once: the dial of the node with the greater name
            // wins, so the greater node refuses the other's.
            State::Dialing {
                phase: Phase::Handshaking,
                ..
            } if self.we_win_crossing => return Err(RefuseReason::Simultaneous),
            _ => Admit::Yes,
        };
        self.accepting += 1;
        Ok(admit)
    }

    /// The dialer confirmed that it has no connection to us: close our
    /// connection `old` to the same incarnation, which was half-open (a cut
    /// this side had not noticed: the session is kept, within a grace
    /// period, for the new connection to resume). Refused if another
    /// connection has taken its place meanwhile.
    pub(crate) fn half_open_confirmed(
        &mut self,
        old: u64,
        now: Instant,
    ) -> Result<(), RefuseReason> {
        match self.state {
            State::Up { conn, .. } if conn == old => {
                let reason = EndReason::Replaced(
                    "the peer dialed again: this connection was half-open".into(),
                );
                match self.cut(conn, reason, now, true) {
                    Some(grace) => self.state = State::Taking { grace: Some(grace) },
                    None => {
                        self.down(
                            conn,
                            EndReason::Replaced(
                                "the peer dialed again: this connection was half-open".into(),
                            ),
                            now,
                        );
                        self.state = State::Taking { grace: None };
                    }
                }
                Ok(())
            }
            State::Up { .. } => Err(RefuseReason::AlreadyConnected),
            State::Stopped => Err(RefuseReason::ShuttingDown),
            // It ended by itself meanwhile (and may be redialing): the
            // incoming one takes over.
            _ => {
                let grace = self.take_grace();
                self.state = State::Taking { grace };
                Ok(())
            }
        }
    }

    /// An admitted incoming connection was installed (`installed`) or dropped.
    pub(crate) fn accept_ended(&mut self, installed: bool) {
        self.accepting = self.accepting.saturating_sub(1);
        // The connection closed for this one did not get a successor: redial
        // as after any loss (still mending the cut, if it is one).
        if !installed
            && matches!(self.state, State::Taking { .. })
            && self.accepting == 0
            && !self.stopping
        {
            let grace = self.take_grace();
            let delay = if grace.is_some() {
                None
            } else {
                Some(self.config.reconnect_initial)
            };
            self.start_dial(delay, true, grace);
        }
    }

    /// An authenticated connection `conn` to incarnation `creation` is to be
    /// installed; `both_kept`: both sides said in the handshake that they
    /// kept the session (each was mending a cut to the other); `epoch`: the
    /// epoch when this side said what it said. If the epoch changed since
    /// (another connection came or went, a cut began or its grace ran out),
    /// what this side told the peer may be stale: the connection is refused
    /// (the peer, if it installed it, sees a cut, and the next handshake
    /// tells it the truth). Otherwise, with `both_kept`, the session resumes;
    /// without, any cut being mended ends (the node is reported down) and a
    /// new session starts (reported up).
    pub(crate) fn install(
        &mut self,
        conn: u64,
        creation: u32,
        both_kept: bool,
        epoch: u64,
        now: Instant,
    ) -> Result<Installed, NotInstalled> {
        if matches!(self.state, State::Up { .. } | State::Stopped) {
            return Err(NotInstalled::AlreadyUp);
        }
        if epoch != self.epoch || (both_kept && !self.keeps_session(creation)) {
            return Err(NotInstalled::Stale);
        }
        self.epoch += 1;
        if let Some(g) = self.take_grace() {
            if !both_kept {
                self.end_grace(g.reason);
            }
        }
        self.state = State::Up {
            conn,
            creation,
            since: now,
        };
        self.was_up = true;
        self.out.push(Action::Publish { up: true, conn });
        if both_kept {
            return Ok(Installed::Resumed);
        }
        self.out.push(Action::Emit(Event::Up(creation)));
        self.status(Status::Up);
        Ok(Installed::Fresh)
    }

    /// Connection `conn` ended with `reason` (the peer closed it, said
    /// goodbye, went silent for the tick timeout, sent garbage, ...). Ignored
    /// if `conn` is not the current connection. A cut (closed, reset, silent,
    /// an I/O error) is mended within the grace period; otherwise the node is
    /// reported down, and redialed unless the peer said goodbye or the
    /// connection was replaced.
    pub(crate) fn connection_closed(&mut self, conn: u64, reason: EndReason, now: Instant) {
        if self.current_conn() != Some(conn) {
            return;
        }
        let redial = !self.stopping
            && !matches!(
                reason,
                EndReason::Goodbye
                    | EndReason::Replaced(_)
                    | EndReason::Superseded
                    | EndReason::Disconnected(_)
            );
        if redial {
            if let Some(grace) = self.cut(conn, reason.clone(), now, false) {
                self.start_dial(None, true, Some(grace));
                return;
            }
        }
        self.down(conn, reason, now);
        if redial {
            self.start_dial(Some(self.config.reconnect_initial), true, None);
        } else if self.stopping {
            self.state = State::Stopped;
        }
    }

    /// If `reason` is a cut that may be mended (and grace is on), closes `conn`
    /// without reporting anything and returns the grace period begun; the
    /// caller sets the next state. `replaced`: closed for an incoming
    /// connection of the same incarnation (a half-open one).
    fn cut(&mut self, conn: u64, reason: EndReason, now: Instant, replaced: bool) -> Option<Grace> {
        let State::Up {
            creation, since, ..
        } = self.state
        else {
            return None;
        };
        let mendable = replaced
            || matches!(
                reason,
                EndReason::Closed | EndReason::Io(_) | EndReason::TickTimeout(_)
            );
        if !mendable || self.stopping || self.config.grace.is_zero() {
            return None;
        }
        self.next_grace += 1;
        self.epoch += 1;
        let grace = Grace {
            id: self.next_grace,
            creation,
            reason: reason.node_down_reason(),
        };
        self.state = State::Idle;
        self.out.push(Action::Publish { up: true, conn: 0 });
        self.out.push(Action::Close {
            conn,
            reason,
            up_for: now.saturating_duration_since(since),
        });
        self.out.push(Action::GraceTimer {
            grace: grace.id,
            after: self.config.grace,
        });
        Some(grace)
    }

    /// This node drops the peer on purpose (Erlang's `disconnect_node/1`;
    /// the cluster layer for a member declared failed): the connection that
    /// is up, or the cut being mended, is reported down at once with
    /// `Disconnected(why)`, exactly once, and not redialed; nothing happens if
    /// the peer is already down. A later send dials again.
    pub(crate) fn disconnect(&mut self, why: String, now: Instant) {
        if let Some(conn) = self.current_conn() {
            self.connection_closed(conn, EndReason::Disconnected(why), now);
        } else if self.take_grace().is_some() {
            let reason = NodeDownReason::Disconnected(why);
            self.end_grace(reason.clone());
            self.status(Status::Down {
                reason,
                error: None,
            });
            // The redial that was mending the cut stops here (its task ends
            // at its next step), as a disconnect is not redialed.
            self.state = if self.stopping {
                State::Stopped
            } else {
                State::Idle
            };
        }
    }

    /// The outgoing queue reached its hard limit: the peer does not read.
    /// Closes the connection if one is up (and redials); otherwise drops what
    /// waits and fails every relation to the peer.
    pub(crate) fn queue_overflow(&mut self, now: Instant) {
        if let Some(conn) = self.current_conn() {
            self.connection_closed(conn, EndReason::NotReading, now);
            return;
        }
        let reason = NodeDownReason::NotReading;
        match self.take_grace() {
            Some(_) => self.end_grace(reason.clone()),
            None => self.out.push(Action::Lost(reason.clone())),
        }
        self.status(Status::Down {
            reason,
            error: None,
        });
    }

    /// The node begins to stop (it still says goodbye on the connection that
    /// is up): from now on nothing is dialed or admitted, a connection that
    /// ends is not redialed or mended, and the node is reported down with
    /// `ShuttingDown`. A dial under way is abandoned.
    pub(crate) fn begin_stop(&mut self) {
        self.stopping = true;
        if self.take_grace().is_some() {
            self.end_grace(NodeDownReason::ShuttingDown);
        }
        if !matches!(self.state, State::Up { .. }) {
            self.state = State::Stopped;
        }
    }

    /// The node stops: the connection that is up is closed and reported
    /// down (`ShuttingDown`).
    pub(crate) fn stop(&mut self, now: Instant) {
        self.begin_stop();
        if let Some(conn) = self.current_conn() {
            self.down(conn, EndReason::Goodbye, now);
        }
        self.state = State::Stopped;
    }

    /// Leaves the up state of `conn`: close it, report the node down, fail
    /// what depended on it. The caller sets the next state.
    fn down(&mut self, conn: u64, reason: EndReason, now: Instant) {
        let State::Up { since, .. } = self.state else {
            return;
        };
        let down_reason = if self.stopping {
            NodeDownReason::ShuttingDown
        } else {
            reason.node_down_reason()
        };
        self.state = State::Idle;
        self.out.push(Action::Publish { up: false, conn: 0 });
        self.out
            .push(Action::Emit(Event::Down(down_reason.clone())));
        self.out.push(Action::Close {
            conn,
            reason,
            up_for: now.saturating_duration_since(since),
        });
        self.out.push(Action::Lost(down_reason.clone()));
        self.status(Status::Down {
            reason: down_reason,
            error: None,
        });
    }
}

/// Whether a failed redial after the loss of a live connection shows that the
/// peer is gone (not merely unreachable for a moment): its EPMD no longer lists
/// it (the machine counts that only if a resolver found it before), or nothing
/// listens at its address any more. Then there is nothing to wait for, and the
/// machine gives up at once instead of backing off.
pub(crate) fn peer_is_gone(e: &DistError) -> bool {
    match e {
        DistError::UnknownNode(_) => true,
        DistError::Unreachable { source, .. } => {
            source.kind() == std::io::ErrorKind::ConnectionRefused
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! The machine fed event sequences; each test checks the states and the
    //! actions that come out.

    use super::*;
    use std::sync::Arc;

    fn config() -> LinkConfig {
        LinkConfig {
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(400),
            reconnect_attempts: 4,
            crossing_wait: Duration::from_secs(3),
            grace: Duration::ZERO,
        }
    }

    fn machine(me: &str, peer: &str) -> LinkMachine {
        LinkMachine::new(me, peer, config())
    }

    fn actions(m: &mut LinkMachine) -> Vec<Action> {
        m.drain().collect()
    }

    fn events(actions: &[Action]) -> Vec<Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Emit(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn dialer(actions: &[Action]) -> Option<(u64, Option<Duration>)> {
        actions.iter().find_map(|a| match a {
            Action::StartDialer { dial, delay } => Some((*dial, *delay)),
            _ => None,
        })
    }

    fn lost(actions: &[Action]) -> Vec<NodeDownReason> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Lost(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn closed(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect()
    }

    fn last_status(actions: &[Action]) -> Option<Status> {
        actions.iter().rev().find_map(|a| match a {
            Action::Status { status, .. } => Some(status.clone()),
            _ => None,
        })
    }

    fn refused_io() -> DistError {
        DistError::Unreachable {
            node: "b@h".into(),
            addr: "127.0.0.1:1".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    fn auth_failed() -> DistError {
        DistError::Handshake {
            node: "b@h".into(),
            source: HandshakeError::AuthenticationFailed,
        }
    }

    fn crossed() -> DistError {
        DistError::Handshake {
            node: "b@h".into(),
            source: HandshakeError::Simultaneous,
        }
    }

    /// Dials and installs connection `conn` to incarnation `creation`.
    fn connect(m: &mut LinkMachine, conn: u64, creation: u32, now: Instant) -> u64 {
        m.want(false);
        let (dial, delay) = dialer(&actions(m)).expect("a dial starts");
        assert_eq!(delay, None, "a first dial does not wait");
        m.attempt_started(dial).expect("current");
        m.handshake_started(dial);
        m.install(conn, creation, false, m.epoch(), now)
            .expect("installed");
        let a = actions(m);
        assert_eq!(events(&a), vec![Event::Up(creation)]);
        assert!(matches!(last_status(&a), Some(Status::Up)));
        dial
    }

    #[test]
    fn a_wanted_dial_starts_once_and_connect_wakes_its_backoff() {
        let mut m = machine("a@h", "b@h");
        m.want(false);
        let a = actions(&mut m);
        let (dial, _) = dialer(&a).unwrap();
        assert!(matches!(last_status(&a), Some(Status::Connecting)));
        // More sends while dialing start nothing more.
        m.want(false);
        assert!(actions(&mut m).is_empty());
        assert_eq!(m.attempt_started(dial), Some(1));
        assert_eq!(
            m.attempt_failed(dial, 1, refused_io()),
            Next::Retry(Duration::from_millis(100))
        );
        let a = actions(&mut m);
        assert!(matches!(
            last_status(&a),
            Some(Status::Failed { attempt: 1, .. })
        ));
        // `connect` during the backoff dials now.
        m.want(true);
        assert!(matches!(actions(&mut m)[..], [Action::WakeDialer]));
        // The backoff doubles up to its cap.
        assert_eq!(m.attempt_started(dial), Some(2));
        assert_eq!(
            m.attempt_failed(dial, 2, refused_io()),
            Next::Retry(Duration::from_millis(200))
        );
        assert_eq!(m.attempt_started(dial), Some(3));
        assert_eq!(
            m.attempt_failed(dial, 3, refused_io()),
            Next::Retry(Duration::from_millis(400))
        );
    }

    #[test]
    fn a_handshake_failure_backs_off_then_gives_up_with_its_error() {
        let mut m = machine("a@h", "b@h");
        m.want(false);
        let (dial, _) = dialer(&actions(&mut m)).unwrap();
        for n in 1..=3 {
            assert_eq!(m.attempt_started(dial), Some(n));
            m.handshake_started(dial);
            assert!(matches!(
                m.attempt_failed(dial, n, auth_failed()),
                Next::Retry(_)
            ));
            let a = actions(&mut m);
            assert!(events(&a).is_empty(), "never up, never down");
            assert!(lost(&a).is_empty());
        }
        assert_eq!(m.attempt_started(dial), Some(4));
        assert_eq!(m.attempt_failed(dial, 4, auth_failed()), Next::Stop);
        let a = actions(&mut m);
        assert!(events(&a).is_empty(), "no node event for a node never up");
        assert!(matches!(lost(&a)[..], [NodeDownReason::Unreachable(_)]));
        assert!(matches!(
            last_status(&a),
            Some(Status::Down {
                error: Some(DistError::Handshake {
                    source: HandshakeError::AuthenticationFailed,
                    ..
                }),
                ..
            })
        ));
        assert_eq!(m.state(), &State::Idle);
        assert!(m.is_idle());
        // The dial's task stops; the next send dials again, afresh.
        assert_eq!(m.attempt_started(dial), None);
        m.want(false);
        let (again, _) = dialer(&actions(&mut m)).unwrap();
        assert_ne!(again, dial);
    }

    #[test]
    fn a_tick_timeout_reports_down_once_and_redials_after_a_backoff() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 7, 1, t0);
        assert!(!m.is_idle());
        m.connection_closed(
            7,
            EndReason::TickTimeout(Duration::from_secs(4)),
            t0 + Duration::from_secs(9),
        );
        let a = actions(&mut m);
        assert_eq!(
            events(&a),
            vec![Event::Down(NodeDownReason::TickTimeout(
                Duration::from_secs(4)
            ))]
        );
        assert_eq!(closed(&a), vec![7]);
        assert!(matches!(
            a.iter().find(|x| matches!(x, Action::Close { .. })),
            Some(Action::Close { up_for, .. }) if *up_for == Duration::from_secs(9)
        ));
        assert_eq!(lost(&a).len(), 1);
        assert!(matches!(a[0], Action::Publish { up: false, conn: 0 }));
        let (dial, delay) = dialer(&a).expect("redials");
        assert_eq!(delay, Some(Duration::from_millis(100)));
        // The writer's end of the same connection changes nothing more.
        m.connection_closed(7, EndReason::Closed, t0);
        assert!(actions(&mut m).is_empty());
        // A redial finds the node gone (refused): given up at once, no second
        // down (it was not up).
        assert_eq!(m.attempt_started(dial), Some(2));
        assert_eq!(m.attempt_failed(dial, 2, refused_io()), Next::Stop);
        let a = actions(&mut m);
        assert!(events(&a).is_empty());
        assert_eq!(m.state(), &State::Idle);
    }

    #[test]
    fn a_goodbye_reports_down_and_does_not_redial() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 3, 1, t0);
        m.connection_closed(3, EndReason::Goodbye, t0);
        let a = actions(&mut m);
        assert_eq!(events(&a), vec![Event::Down(NodeDownReason::Goodbye)]);
        assert_eq!(dialer(&a), None);
        assert_eq!(m.state(), &State::Idle);
    }

    #[test]
    fn both_dialing_at_once_the_greater_names_dial_wins() {
        let t0 = Instant::now();
        // `b@h` > `a@h`.
        let mut a = machine("a@h", "b@h");
        let mut b = machine("b@h", "a@h");
        a.want(false);
        b.want(false);
        let (da, _) = dialer(&actions(&mut a)).unwrap();
        let (db, _) = dialer(&actions(&mut b)).unwrap();
        a.attempt_started(da).unwrap();
        b.attempt_started(db).unwrap();
        a.handshake_started(da);
        b.handshake_started(db);
        // Each receives the other's hello.
        assert_eq!(b.incoming(1, t0), Err(RefuseReason::Simultaneous));
        assert_eq!(a.incoming(2, t0), Ok(Admit::Yes));
        // a's dial is refused: it waits for b's connection and tells waiters
        // nothing.
        assert_eq!(
            a.attempt_failed(da, 1, crossed()),
            Next::Retry(Duration::from_secs(3))
        );
        assert!(last_status(&actions(&mut a)).is_none());
        // b's dial completes on both sides.
        b.install(10, 1, false, b.epoch(), t0).unwrap();
        a.install(20, 2, false, a.epoch(), t0).unwrap();
        a.accept_ended(true);
        assert_eq!(events(&actions(&mut a)), vec![Event::Up(2)]);
        assert_eq!(events(&actions(&mut b)), vec![Event::Up(1)]);
        // a's dial task ends at its next attempt.
        assert_eq!(a.attempt_started(da), None);
        assert_eq!(a.current_conn(), Some(20));
    }

    #[test]
    fn the_lesser_node_admits_a_crossing_dial_and_the_greater_refuses_only_while_handshaking() {
        let t0 = Instant::now();
        let mut b = machine("b@h", "a@h");
        b.want(false);
        let (db, _) = dialer(&actions(&mut b)).unwrap();
        // Backing off (or resolving), not handshaking: a's dial is admitted.
        assert_eq!(b.incoming(1, t0), Ok(Admit::Yes));
        assert!(
            !b.wants_dialed_connection(),
            "an admitted connection is pending"
        );
        b.accept_ended(false);
        assert!(b.wants_dialed_connection());
        b.attempt_started(db).unwrap();
        assert_eq!(b.incoming(1, t0), Ok(Admit::Yes));
        b.accept_ended(false);
        b.handshake_started(db);
        assert_eq!(b.incoming(1, t0), Err(RefuseReason::Simultaneous));
    }

    #[test]
    fn a_restarted_peer_dialing_in_replaces_the_old_connection() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        // Creation 2 dials in while connection 5 (to creation 1) looks alive.
        assert_eq!(m.incoming(2, t0), Ok(Admit::Yes));
        let a = actions(&mut m);
        assert_eq!(closed(&a), vec![5]);
        assert!(matches!(
            events(&a)[..],
            [Event::Down(NodeDownReason::Replaced(_))]
        ));
        assert_eq!(lost(&a).len(), 1, "relations to the old incarnation fail");
        assert_eq!(dialer(&a), None, "the incoming connection takes over");
        assert_eq!(m.state(), &State::Taking { grace: None });
        // A send meanwhile starts no crossing dial.
        m.want(false);
        assert!(actions(&mut m).is_empty());
        m.install(6, 2, false, m.epoch(), t0).unwrap();
        m.accept_ended(true);
        assert_eq!(events(&actions(&mut m)), vec![Event::Up(2)]);
        assert_eq!(m.current_conn(), Some(6));
    }

    #[test]
    fn the_same_incarnation_dialing_in_is_asked_and_a_half_open_connection_replaced() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        assert_eq!(m.incoming(1, t0), Ok(Admit::IfHalfOpen(5)));
        assert!(
            actions(&mut m).is_empty(),
            "nothing changes before the answer"
        );
        m.half_open_confirmed(5, t0).unwrap();
        let a = actions(&mut m);
        assert_eq!(closed(&a), vec![5]);
        assert_eq!(events(&a).len(), 1);
        assert_eq!(m.state(), &State::Taking { grace: None });
        // The new connection fails before it is installed: redial as after a loss.
        m.accept_ended(false);
        let (dial, delay) = dialer(&actions(&mut m)).expect("redials");
        assert!(delay.is_some());
        // A gone peer ends that redial at once.
        m.attempt_started(dial).unwrap();
        assert_eq!(
            m.attempt_failed(dial, 1, DistError::UnknownNode("b@h".into())),
            Next::Stop
        );
    }

    #[test]
    fn a_half_open_answer_after_another_connection_took_over_is_refused() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        assert_eq!(m.incoming(1, t0), Ok(Admit::IfHalfOpen(5)));
        m.connection_closed(5, EndReason::Closed, t0);
        let _ = actions(&mut m);
        m.install(8, 1, false, m.epoch(), t0).unwrap();
        let _ = actions(&mut m);
        assert_eq!(
            m.half_open_confirmed(5, t0),
            Err(RefuseReason::AlreadyConnected)
        );
        assert_eq!(m.current_conn(), Some(8));
    }

    #[test]
    fn a_second_connection_is_not_installed_while_one_is_up() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        assert_eq!(
            m.install(6, 1, false, m.epoch(), t0),
            Err(NotInstalled::AlreadyUp)
        );
        assert!(actions(&mut m).is_empty());
        assert_eq!(m.current_conn(), Some(5));
    }

    #[test]
    fn every_up_has_exactly_one_down_over_many_cycles() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        let mut ups = 0;
        let mut downs = 0;
        let mut conn = 0;
        for round in 0..50u32 {
            m.want(false);
            let mut a = actions(&mut m);
            let dial = match dialer(&a) {
                Some((d, _)) => d,
                None => panic!("round {round}: no dial in {a:?}"),
            };
            m.attempt_started(dial).unwrap();
            conn += 1;
            m.install(conn, round, false, m.epoch(), t0).unwrap();
            a = actions(&mut m);
            // Every kind of ending, twice over (reader and writer both report).
            let reason = match round % 4 {
                0 => EndReason::Closed,
                1 => EndReason::Goodbye,
                2 => EndReason::TickTimeout(Duration::from_secs(1)),
                _ => EndReason::Io("reset".into()),
            };
            m.connection_closed(conn, reason.clone(), t0);
            m.connection_closed(conn, reason, t0);
            a.extend(actions(&mut m));
            for e in events(&a) {
                match e {
                    Event::Up(_) => ups += 1,
                    Event::Down(_) => downs += 1,
                }
            }
            // End any redial so the next round starts from idle.
            if let Some((d, _)) = dialer(&a) {
                m.attempt_started(d).unwrap();
                assert_eq!(m.attempt_failed(d, 0, refused_io()), Next::Stop);
                let _ = actions(&mut m);
            }
            assert_eq!(m.state(), &State::Idle, "round {round}");
        }
        assert_eq!((ups, downs), (50, 50));
    }

    #[test]
    fn a_full_queue_closes_the_connection_or_fails_what_waits() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        m.want(false);
        let _ = actions(&mut m);
        m.queue_overflow(t0);
        let a = actions(&mut m);
        assert!(events(&a).is_empty());
        assert!(matches!(lost(&a)[..], [NodeDownReason::NotReading]));
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        m.queue_overflow(t0);
        let a = actions(&mut m);
        assert_eq!(closed(&a), vec![5]);
        assert_eq!(events(&a), vec![Event::Down(NodeDownReason::NotReading)]);
        assert!(dialer(&a).is_some(), "the connection is redialed");
    }

    #[test]
    fn stopping_reports_down_as_shutting_down_and_dials_nothing_more() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        m.begin_stop();
        assert!(actions(&mut m).is_empty(), "still up to say goodbye");
        // The peer closes first, having read our goodbye.
        m.connection_closed(5, EndReason::Closed, t0);
        let a = actions(&mut m);
        assert_eq!(events(&a), vec![Event::Down(NodeDownReason::ShuttingDown)]);
        assert_eq!(dialer(&a), None);
        m.want(true);
        assert!(actions(&mut m).is_empty());
        assert_eq!(m.incoming(2, t0), Err(RefuseReason::ShuttingDown));
        m.stop(t0);
        assert!(actions(&mut m).is_empty(), "one down per up");
        assert_eq!(m.state(), &State::Stopped);

        // A dial under way is abandoned.
        let mut m = machine("a@h", "b@h");
        m.want(false);
        let (dial, _) = dialer(&actions(&mut m)).unwrap();
        m.stop(t0);
        assert_eq!(m.attempt_started(dial), None);
        assert_eq!(
            m.install(1, 1, false, m.epoch(), t0),
            Err(NotInstalled::AlreadyUp)
        );
    }

    #[test]
    fn statuses_are_numbered_in_order() {
        let t0 = Instant::now();
        let mut m = machine("a@h", "b@h");
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let seqs: Vec<u64> = actions(&mut m)
            .iter()
            .filter_map(|a| match a {
                Action::Status { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert!(seqs.len() >= 2);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    fn graceful() -> LinkMachine {
        LinkMachine::new(
            "a@h",
            "b@h",
            LinkConfig {
                grace: Duration::from_secs(4),
                ..config()
            },
        )
    }

    fn grace_timer(actions: &[Action]) -> Option<(u64, Duration)> {
        actions.iter().find_map(|a| match a {
            Action::GraceTimer { grace, after } => Some((*grace, *after)),
            _ => None,
        })
    }

    #[test]
    fn a_cut_is_mended_silently_when_both_sides_kept_the_session() {
        let t0 = Instant::now();
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let a = actions(&mut m);
        assert!(events(&a).is_empty(), "no node-down for a cut");
        assert!(lost(&a).is_empty(), "nothing fails, nothing is dropped");
        assert_eq!(closed(&a), vec![5]);
        assert!(matches!(a[0], Action::Publish { up: true, conn: 0 }));
        assert!(last_status(&a).is_none(), "waiters still see it up");
        let (dial, delay) = dialer(&a).expect("redials");
        assert_eq!(delay, None, "at once");
        let (id, after) = grace_timer(&a).expect("a grace period begins");
        assert_eq!(after, Duration::from_secs(4));
        assert!(m.keeps_session(1));
        assert!(!m.keeps_session(2));
        // A redial that times out (the network is silent) backs off; still
        // nothing is reported.
        m.attempt_started(dial).unwrap();
        assert!(matches!(
            m.attempt_failed(dial, 2, DistError::Timeout("slow".into())),
            Next::Retry(_)
        ));
        assert!(actions(&mut m).is_empty());
        m.attempt_started(dial).unwrap();
        assert_eq!(m.install(6, 1, true, m.epoch(), t0), Ok(Installed::Resumed));
        let a = actions(&mut m);
        assert!(events(&a).is_empty(), "a resume reports nothing");
        assert!(matches!(a[..], [Action::Publish { up: true, conn: 6 }]));
        // The timer of the mended cut changes nothing.
        m.grace_over(id);
        assert!(actions(&mut m).is_empty());
        assert_eq!(m.current_conn(), Some(6));
    }

    #[test]
    fn a_cut_not_mended_within_the_grace_period_is_one_node_down() {
        let t0 = Instant::now();
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::TickTimeout(Duration::from_secs(4)), t0);
        let a = actions(&mut m);
        let (id, _) = grace_timer(&a).unwrap();
        let (dial, _) = dialer(&a).unwrap();
        // Another grace period's timer: nothing.
        m.grace_over(id + 1);
        assert!(actions(&mut m).is_empty());
        m.grace_over(id);
        let a = actions(&mut m);
        assert_eq!(
            events(&a),
            vec![Event::Down(NodeDownReason::TickTimeout(
                Duration::from_secs(4)
            ))]
        );
        assert_eq!(lost(&a).len(), 1);
        assert!(matches!(last_status(&a), Some(Status::Down { .. })));
        // The dial goes on; the next connection is a new session, reported up.
        assert!(!m.keeps_session(1));
        m.attempt_started(dial).unwrap();
        assert_eq!(m.install(6, 1, false, m.epoch(), t0), Ok(Installed::Fresh));
        assert_eq!(events(&actions(&mut m)), vec![Event::Up(1)]);
    }

    #[test]
    fn a_gone_peer_or_a_new_incarnation_ends_the_grace_period_at_once() {
        let t0 = Instant::now();
        // Refused: nothing listens there any more (kill -9).
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let (dial, _) = dialer(&actions(&mut m)).unwrap();
        m.attempt_started(dial).unwrap();
        assert_eq!(m.attempt_failed(dial, 2, refused_io()), Next::Stop);
        let a = actions(&mut m);
        assert_eq!(
            events(&a),
            vec![Event::Down(NodeDownReason::ConnectionClosed)]
        );
        assert_eq!(lost(&a).len(), 1, "one loss, not one per cause");
        assert!(matches!(
            last_status(&a),
            Some(Status::Down { error: Some(_), .. })
        ));
        assert_eq!(m.state(), &State::Idle);

        // A new incarnation dials in.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let _ = actions(&mut m);
        assert_eq!(m.incoming(2, t0), Ok(Admit::Yes));
        let a = actions(&mut m);
        assert!(matches!(
            events(&a)[..],
            [Event::Down(NodeDownReason::Replaced(_))]
        ));
        assert_eq!(m.install(6, 2, false, m.epoch(), t0), Ok(Installed::Fresh));
        assert_eq!(events(&actions(&mut m)), vec![Event::Up(2)]);
    }

    #[test]
    fn a_later_dial_to_a_peer_once_up_ends_at_the_first_sign_it_is_gone() {
        let t0 = Instant::now();
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let (dial, _) = dialer(&actions(&mut m)).unwrap();
        m.attempt_started(dial).unwrap();
        assert_eq!(m.attempt_failed(dial, 2, refused_io()), Next::Stop);
        let _ = actions(&mut m);
        assert_eq!(m.state(), &State::Idle);
        // A monitor set after the give-up dials again: the first refusal
        // ends that dial too (its monitors fail with noconnection now, not
        // after every retry).
        m.want(false);
        let (again, _) = dialer(&actions(&mut m)).unwrap();
        m.attempt_started(again).unwrap();
        assert_eq!(m.attempt_failed(again, 3, refused_io()), Next::Stop);
        let a = actions(&mut m);
        assert!(matches!(lost(&a)[..], [NodeDownReason::Unreachable(_)]));
        assert!(events(&a).is_empty(), "down was reported once, before");
        // Unknown to the resolvers now is gone as well.
        m.want(false);
        let (third, _) = dialer(&actions(&mut m)).unwrap();
        m.attempt_started(third).unwrap();
        assert_eq!(
            m.attempt_failed(third, 4, DistError::UnknownNode("b@h".into())),
            Next::Stop
        );
        // A peer never up is retried: it may be starting.
        let mut fresh = graceful();
        fresh.want(false);
        let (d, _) = dialer(&actions(&mut fresh)).unwrap();
        fresh.attempt_started(d).unwrap();
        assert!(matches!(
            fresh.attempt_failed(d, 1, refused_io()),
            Next::Retry(_)
        ));
    }

    #[test]
    fn a_peer_this_node_never_found_is_not_gone_when_it_cannot_find_it() {
        let t0 = Instant::now();
        let mut m = graceful();
        // Connected by the peer's dial: this node never resolved it.
        assert_eq!(m.incoming(1, t0), Ok(Admit::Yes));
        m.install(5, 1, false, m.epoch(), t0).unwrap();
        m.accept_ended(true);
        let _ = actions(&mut m);
        m.connection_closed(5, EndReason::Closed, t0);
        let (dial, _) = dialer(&actions(&mut m)).unwrap();
        m.attempt_started(dial).unwrap();
        assert!(matches!(
            m.attempt_failed(dial, 1, DistError::UnknownNode("b@h".into())),
            Next::Retry(_)
        ));
        assert!(actions(&mut m).is_empty(), "still mending");
        // The peer's own redial mends it.
        assert_eq!(m.incoming(1, t0), Ok(Admit::Yes));
        assert_eq!(m.install(6, 1, true, m.epoch(), t0), Ok(Installed::Resumed));
        m.accept_ended(true);
        assert!(events(&actions(&mut m)).is_empty());
    }

    #[test]
    fn a_resume_this_side_can_no_longer_honour_is_refused_and_a_one_sided_one_is_fresh() {
        let t0 = Instant::now();
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let a = actions(&mut m);
        let (id, _) = grace_timer(&a).unwrap();
        // Both said they kept it, then this side's grace ran out.
        let said_at = m.epoch();
        assert!(m.keeps_session(1));
        m.grace_over(id);
        let _ = actions(&mut m);
        assert_eq!(m.install(6, 1, true, said_at, t0), Err(NotInstalled::Stale));
        // What a handshake said before another connection came and went is
        // stale too, even though the session is kept again.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let _ = actions(&mut m);
        let said_at = m.epoch();
        assert_eq!(m.incoming(1, t0), Ok(Admit::Yes));
        assert_eq!(m.install(6, 1, true, m.epoch(), t0), Ok(Installed::Resumed));
        m.accept_ended(true);
        m.connection_closed(6, EndReason::Closed, t0);
        let _ = actions(&mut m);
        assert!(m.keeps_session(1));
        assert_eq!(m.install(7, 1, true, said_at, t0), Err(NotInstalled::Stale));
        assert_eq!(m.install(7, 1, true, m.epoch(), t0), Ok(Installed::Resumed));
        // Only one side kept it: a new session, and the cut is reported.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Io("reset".into()), t0);
        let _ = actions(&mut m);
        assert_eq!(m.install(6, 1, false, m.epoch(), t0), Ok(Installed::Fresh));
        assert_eq!(
            events(&actions(&mut m)),
            vec![
                Event::Down(NodeDownReason::Io("reset".into())),
                Event::Up(1)
            ]
        );
    }

    #[test]
    fn a_half_open_connection_replaced_keeps_the_session() {
        let t0 = Instant::now();
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        assert_eq!(m.incoming(1, t0), Ok(Admit::IfHalfOpen(5)));
        m.half_open_confirmed(5, t0).unwrap();
        let a = actions(&mut m);
        assert_eq!(closed(&a), vec![5]);
        assert!(events(&a).is_empty());
        assert!(m.keeps_session(1));
        assert_eq!(m.install(6, 1, true, m.epoch(), t0), Ok(Installed::Resumed));
        m.accept_ended(true);
        assert!(events(&actions(&mut m)).is_empty());
    }

    #[test]
    fn a_disconnect_reports_the_peer_down_once_and_does_not_redial() {
        let t0 = Instant::now();
        // While up.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.disconnect("declared failed".into(), t0);
        let a = actions(&mut m);
        assert_eq!(
            events(&a),
            vec![Event::Down(NodeDownReason::Disconnected(
                "declared failed".into()
            ))]
        );
        assert!(grace_timer(&a).is_none(), "not a cut to mend");
        assert!(dialer(&a).is_none(), "not redialed");
        assert_eq!(
            lost(&a),
            vec![NodeDownReason::Disconnected("declared failed".into())]
        );
        // Again, or when the peer is already down: nothing more.
        m.disconnect("again".into(), t0);
        assert!(events(&actions(&mut m)).is_empty());
        // While a cut is being mended: the grace period ends with it, once.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        assert!(events(&actions(&mut m)).is_empty(), "a cut alone is silent");
        m.disconnect("declared failed".into(), t0);
        let a = actions(&mut m);
        assert_eq!(
            events(&a),
            vec![Event::Down(NodeDownReason::Disconnected(
                "declared failed".into()
            ))]
        );
        assert_eq!(lost(&a).len(), 1);
        assert!(m.is_idle(), "the mending redial stops: {:?}", m.state());
        m.disconnect("again".into(), t0);
        assert!(events(&actions(&mut m)).is_empty());
    }

    #[test]
    fn goodbye_garbage_and_stopping_are_no_cuts_to_mend() {
        let t0 = Instant::now();
        for reason in [
            EndReason::Goodbye,
            EndReason::NotReading,
            EndReason::Malformed(crate::error::FrameError::BadName),
        ] {
            let mut m = graceful();
            connect(&mut m, 5, 1, t0);
            m.connection_closed(5, reason.clone(), t0);
            let a = actions(&mut m);
            assert_eq!(events(&a).len(), 1, "{reason:?} is reported at once");
            assert!(grace_timer(&a).is_none());
        }
        // Stopping while a cut is mended reports it, as a shutdown.
        let mut m = graceful();
        connect(&mut m, 5, 1, t0);
        m.connection_closed(5, EndReason::Closed, t0);
        let _ = actions(&mut m);
        m.begin_stop();
        assert_eq!(
            events(&actions(&mut m)),
            vec![Event::Down(NodeDownReason::ShuttingDown)]
        );
        m.stop(t0);
        assert!(actions(&mut m).is_empty());
    }
}
