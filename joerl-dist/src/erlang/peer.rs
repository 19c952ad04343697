//! One Erlang node as this node sees it: its outgoing buffer, its connection
//! state, the links and monitors that cross to it, and the translation of
//! joerl's messages and signals into Erlang's control messages and back.
//!
//! Erlang's meaning is kept: a send to an Erlang node that is not connected
//! connects and waits in the buffer; losing the connection drops what was
//! buffered and turns every link and monitor across it into `noconnection`
//! on this side (the Erlang node does the same on its own); there is no
//! resend. Calls cross both ways: a `{'$gen_call', {From, Tag}, Request}`
//! from Erlang becomes a joerl call (the reply goes back to `Tag`, through
//! the caller's alias when it has one), and a joerl call to an Erlang
//! process becomes that tuple, its reply a joerl reply.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use joerl_core::gen_server::{BadRequest, CallReply, CallRequest, CastRequest, ReplyLost};
use joerl_core::{ExitReason, Message, MonitorRef, Pid, RouteError, Signal, UnsentMessage};
use tokio::sync::Notify;

use super::control::{Control, ProcRef};
use super::term::{Atom, ErlPid, ErlRef, Term};
use super::wire;
use crate::peer::Bookkeeping;

/// Third word of the references this node makes for its monitors.
const REF_KIND_MONITOR: u32 = 0x6a6d_6f6e; // "jmon"
/// Third word of the references this node makes as call tags.
const REF_KIND_CALL: u32 = 0x6a63_616c; // "jcal"
/// The outgoing buffer's hard limit, as a multiple of its limit for
/// messages: signals and replies go in beyond the limit, not beyond this.
const HARD_LIMIT_FACTOR: usize = 4;
/// Calls from Erlang waiting for their joerl server's reply, per peer; the
/// oldest is forgotten beyond it (its reply, if it ever comes, is dropped).
pub(crate) const MAX_PENDING_CALLS: usize = 65_536;

/// Counters of one Erlang peer.
#[derive(Default, Debug)]
pub(crate) struct ErlCounters {
    pub(crate) msgs_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) connects: AtomicU64,
    /// Messages that reached this node and were not delivered (to a name
    /// nobody holds, an alias, a type a joerl actor cannot take).
    pub(crate) dropped_in: AtomicU64,
    /// Control messages this node does not act on.
    pub(crate) unsupported: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The connection state of an Erlang peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// No connection and no dial.
    Idle,
    /// A dial is running (its number).
    Dialing(u64),
    /// This node lost a simultaneous connect and waits for the peer's own
    /// connection (admitted when it comes); no dial starts.
    Awaiting(u64),
    /// An accepted connection is in its handshake; no dial starts.
    Pending(u64),
    /// Connected: the connection's number, the peer's creation and flags.
    Up {
        conn: u64,
        creation: u32,
        flags: u64,
    },
}

/// A monitor an Erlang process holds on a local actor.
#[derive(Debug, Clone)]
struct InMonitor {
    reference: ErlRef,
    watcher: ErlPid,
    /// Set when it was made by name (the down then names the process so).
    name: Option<Atom>,
}

/// Translation tables of one peer (all cleared with the connection).
#[derive(Default)]
struct Tables {
    /// Local monitor ref (made here) -> the Erlang monitor.
    in_monitors: HashMap<MonitorRef, InMonitor>,
    /// The Erlang monitor's reference -> (local ref, local target).
    in_by_ref: HashMap<ErlRef, (MonitorRef, Pid)>,
    /// Monitors local actors hold on Erlang processes: what was monitored.
    out_monitors: HashMap<MonitorRef, ProcRef>,
    /// Calls from Erlang: joerl tag -> (Erlang's tag term, caller).
    /// Ordered by tag, which grows: the first entry is the oldest call.
    calls_in: std::collections::BTreeMap<u64, (Term, ErlPid)>,
}

/// The outgoing buffer: encoded frames waiting for the writer.
pub(crate) struct Out {
    pub(crate) buf: Vec<u8>,
    /// Bytes beyond which a message send is refused as `Full` (signals
    /// always go in: they are small and must not be lost).
    limit: usize,
    /// The connection's socket while it is up: a push that finds nothing
    /// ahead of it writes straight to it (see [`ErlPeer::push`]).
    pub(crate) sock: Option<std::sync::Arc<tokio::net::tcp::OwnedWriteHalf>>,
    /// When the last frame was pushed.
    last_push: Option<std::time::Instant>,
}

/// A push writes straight to the socket only when the previous one is at
/// least this old: sends in a burst go to the writer, which writes them
/// together; a lone frame (a call, its reply) goes out without waking it.
const DIRECT_AFTER: std::time::Duration = std::time::Duration::from_micros(5);

/// One Erlang node.
pub(crate) struct ErlPeer {
    /// Full node name.
    pub(crate) name: String,
    /// The name as an atom (as pids carry it).
    pub(crate) atom: Atom,
    /// `node_id(name)`.
    pub(crate) id: u32,
    pub(crate) out: Mutex<Out>,
    /// Wakes the writer.
    pub(crate) wake: Notify,
    /// Wakes senders waiting for room.
    pub(crate) room: Notify,
    pub(crate) state: Mutex<ConnState>,
    /// Wakes those waiting for the connection to come up or a dial to fail.
    pub(crate) changed: tokio::sync::watch::Sender<u64>,
    book: Mutex<Bookkeeping>,
    tables: Mutex<Tables>,
    pub(crate) counters: ErlCounters,
    next_unlink: AtomicU64,
    /// Actors told once when this node goes down (`monitor_node`).
    pub(crate) node_monitors: Mutex<Vec<Pid>>,
    /// The reader and writer of the current connection (and its number).
    pub(crate) tasks: Mutex<(u64, Vec<tokio::task::AbortHandle>)>,
    /// The current connection's number (0: none); a reader of an older one
    /// stops at its next frame.
    pub(crate) current: AtomicU64,
    /// Held while an incoming frame is applied and while the connection's
    /// relations are dropped: a frame of a connection that is over applies
    /// nothing (it checks `current` under it).
    gate: Mutex<()>,
    /// The buffer passed its hard limit: the connection is to close.
    pub(crate) overflowed: std::sync::atomic::AtomicBool,
    /// Bytes the writer took from the buffer and has not finished writing.
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
}

/// This node as Erlang sees it: its name atom and creation, and how joerl
/// Pids of other nodes get their names.
pub(crate) struct Local<'a> {
    pub(crate) atom: &'a Atom,
    pub(crate) node_id: u32,
    pub(crate) creation: u32,
    pub(crate) name_of: &'a dyn Fn(u32) -> Option<Atom>,
}

impl Local<'_> {
    /// The Erlang pid of a joerl Pid (`None` if its node's name is unknown).
    pub(crate) fn pid(&self, pid: Pid) -> Option<ErlPid> {
        let node = if pid.node() == self.node_id {
            self.atom.clone()
        } else {
            (self.name_of)(pid.node())?
        };
        Some(ErlPid::from_joerl(pid, node))
    }

    /// The pid that stands for "no particular process" of this node
    /// (`<node.0.creation>`, joerl's system Pid).
    pub(crate) fn system_pid(&self) -> ErlPid {
        ErlPid::from_joerl(Pid::new(self.node_id, 0, self.creation), self.atom.clone())
    }

    fn reference(&self, value: u64, kind: u32) -> ErlRef {
        ErlRef {
            node: self.atom.clone(),
            creation: self.creation,
            ids: vec![value as u32, (value >> 32) as u32, kind],
        }
    }

    /// The value of a reference this node made with `kind`.
    fn ours(&self, r: &ErlRef, kind: u32) -> Option<u64> {
        (r.node == *self.atom
            && r.creation == self.creation
            && r.ids.len() == 3
            && r.ids[2] == kind)
            .then(|| u64::from(r.ids[0]) | (u64::from(r.ids[1]) << 32))
    }
}

/// Erlang's term for a joerl exit reason.
pub(crate) fn reason_term(reason: &ExitReason) -> Term {
    match reason {
        ExitReason::Normal => Term::atom("normal"),
        ExitReason::Shutdown => Term::atom("shutdown"),
        ExitReason::Kill => Term::atom("kill"),
        ExitReason::Killed => Term::atom("killed"),
        ExitReason::NoProc => Term::atom("noproc"),
        ExitReason::NoConnection => Term::atom("noconnection"),
        ExitReason::Panic(msg) => {
            Term::tuple(vec![Term::atom("panic"), Term::binary(msg.as_bytes())])
        }
        ExitReason::Custom(s) => Term::try_atom(s).unwrap_or_else(|_| Term::binary(s.as_bytes())),
    }
}

/// The joerl exit reason for an Erlang term: Erlang's standard atoms map to
/// their variants, any other atom to `Custom` of its name, anything else to
/// `Custom` of the term in Erlang syntax.
pub(crate) fn reason_of(term: &Term) -> ExitReason {
    match term.as_atom() {
        Some("normal") => ExitReason::Normal,
        Some("shutdown") => ExitReason::Shutdown,
        Some("kill") => ExitReason::Kill,
        Some("killed") => ExitReason::Killed,
        Some("noproc") => ExitReason::NoProc,
        Some("noconnection") => ExitReason::NoConnection,
        Some(other) => ExitReason::Custom(other.to_string()),
        None => match term.as_tuple() {
            Some([tag, Term::Binary(msg)]) if tag.is_atom("panic") => {
                ExitReason::Panic(String::from_utf8_lossy(msg).into_owned())
            }
            _ => ExitReason::Custom(term.to_string()),
        },
    }
}

/// What an incoming distribution message asks of this node.
pub(crate) enum Inbound {
    /// Deliver `msg` to the local actor `to` (or the one registered as a name).
    Deliver {
        from: Option<Pid>,
        to: Target,
        msg: Message,
    },
    /// Apply a signal to a local actor.
    Signal { to: Pid, signal: Signal },
    /// A monitor by name from Erlang: resolve the name, then monitor (or
    /// answer noproc with the given frame).
    MonitorName {
        name: Atom,
        from: Pid,
        monitor: MonitorRef,
        noproc: Vec<u8>,
    },
    /// Write these frames back to the peer.
    Reply(Vec<u8>),
    /// Nothing to do (counted or logged already).
    Nothing,
}

/// A local actor by Pid or registered name.
pub(crate) enum Target {
    Pid(Pid),
    Name(Atom),
}

impl ErlPeer {
    /// A peer for `name` with an outgoing buffer of at most `limit` bytes
    /// of messages.
    pub(crate) fn new(name: &str, atom: Atom, limit: usize) -> Self {
        ErlPeer {
            name: name.to_string(),
            atom,
            id: joerl_core::node_id(name),
            out: Mutex::new(Out {
                buf: Vec::new(),
                limit,
                sock: None,
                last_push: None,
            }),
            wake: Notify::new(),
            room: Notify::new(),
            state: Mutex::new(ConnState::Idle),
            changed: tokio::sync::watch::channel(0).0,
            book: Mutex::new(Bookkeeping::default()),
            tables: Mutex::new(Tables::default()),
            counters: ErlCounters::default(),
            next_unlink: AtomicU64::new(1),
            node_monitors: Mutex::new(Vec::new()),
            tasks: Mutex::new((0, Vec::new())),
            current: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            overflowed: std::sync::atomic::AtomicBool::new(false),
            gate: Mutex::new(()),
        }
    }

    /// Moves the state from `expected` to `new`; `false` (and nothing
    /// changed) if it was not `expected`.
    pub(crate) fn swap_state(&self, expected: ConnState, new: ConnState) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *st != expected {
            return false;
        }
        *st = new;
        true
    }

    pub(crate) fn conn_state(&self) -> ConnState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while connected.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.conn_state(), ConnState::Up { .. })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, Bookkeeping> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one frame to the buffer; `Err(())` if it is over its limit
    /// and `force` is false.
    fn push(&self, force: bool, put: impl FnOnce(&mut Vec<u8>)) -> Result<(), ()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if !force && out.buf.len() >= out.limit {
            return Err(());
        }
        if out.buf.len() >= out.limit.saturating_mul(HARD_LIMIT_FACTOR) {
            // The peer has not read for a long while: the connection closes
            // (its writer sees this), and links and monitors across it fire
            // noconnection, rather than the buffer growing further.
            self.overflowed.store(true, Ordering::Release);
            drop(out);
            self.wake.notify_one();
            return Err(());
        }
        let before = out.buf.len();
        put(&mut out.buf);
        let now = std::time::Instant::now();
        let lone = out
            .last_push
            .is_none_or(|t| now.duration_since(t) >= DIRECT_AFTER);
        out.last_push = Some(now);
        // Nothing ahead of this frame (the buffer was empty and the writer
        // holds nothing): write it now, from this thread. Under the lock,
        // so nothing can overtake it; what the socket does not take waits
        // for the writer.
        if before == 0 && lone && self.in_flight.load(Ordering::Acquire) == 0 {
            if let Some(sock) = out.sock.clone() {
                match sock.try_write(&out.buf) {
                    Ok(n) => {
                        out.buf.drain(..n);
                        add(&self.counters.bytes_out, n as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The writer meets the same error and ends the connection.
                    Err(_) => {}
                }
            }
        }
        let waiting = !out.buf.is_empty();
        drop(out);
        if before == 0 && waiting {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Makes `sock` (or none) the socket pushes may write to directly.
    pub(crate) fn set_socket(&self, sock: Option<std::sync::Arc<tokio::net::tcp::OwnedWriteHalf>>) {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).sock = sock;
    }

    /// Writes a control message (and payload) now or when connected.
    pub(crate) fn push_control(
        &self,
        force: bool,
        control: &Control,
        payload: Option<&Term>,
    ) -> Result<(), ()> {
        tracing::trace!(peer = %self.name, ?control, payload = ?payload.map(|p| p.to_string()), "to Erlang");
        self.push(force, |b| wire::put_message(b, control, payload))
    }

    /// Appends an encoded frame (always: replies and acks must not be lost).
    pub(crate) fn push_raw(&self, frame: &[u8]) {
        let _ = self.push(true, |b| b.extend_from_slice(frame));
    }

    /// True when nothing waits in the buffer or in the writer's hands.
    pub(crate) fn is_flushed(&self) -> bool {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buf
            .is_empty()
            && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Drops what waits in the buffer (the connection is gone).
    pub(crate) fn clear_out(&self) {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buf
            .clear();
        self.room.notify_waiters();
    }

    /// Takes what waits in the buffer for connection `conn`, leaving `spare`
    /// (emptied) in its place; `false` (and nothing taken) if `conn` is no
    /// longer the current connection.
    pub(crate) fn take_out(&self, conn: u64, spare: &mut Vec<u8>) -> bool {
        spare.clear();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.current.load(Ordering::Acquire) != conn {
            return false;
        }
        std::mem::swap(&mut out.buf, spare);
        self.in_flight.store(spare.len(), Ordering::Release);
        drop(out);
        self.room.notify_waiters();
        true
    }

    /// Forgets a call from Erlang whose request could not be delivered.
    pub(crate) fn forget_call(&self, tag: u64) {
        self.tables().calls_in.remove(&tag);
    }

    /// Resolves when the buffer likely has room.
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.room.notified();
            {
                let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
                if out.buf.len() < out.limit {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The connection is gone: what the bookkeeping implies for local actors
    /// (noconnection exits and downs), and the tables cleared.
    pub(crate) fn lost(&self) -> Vec<(Pid, Signal)> {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        *self.tables() = Tables::default();
        self.clear_out();
        self.overflowed.store(false, Ordering::Release);
        self.book().node_lost()
    }

    // ---- joerl -> Erlang -------------------------------------------------

    /// Turns a message for the Erlang process `to` (or name) into a control
    /// message and payload.
    fn outgoing_message(
        &self,
        me: &Local<'_>,
        from: Option<Pid>,
        to: Result<ErlPid, Atom>,
        msg: Message,
    ) -> Result<(Control, Term), RouteError> {
        let sender = |p: Option<Pid>| p.and_then(|p| me.pid(p));
        let not_serializable = |detail: String| RouteError::NotSerializable { detail };
        let msg = match msg.downcast::<CallRequest>() {
            Ok(call) => {
                let request = term_of(call.request, call.request_type, &me.name_of)?;
                let reply_to = me.pid(call.reply_to).ok_or_else(|| {
                    not_serializable("the call's reply address has no node name".into())
                })?;
                let tag = Term::Ref(me.reference(call.tag, REF_KIND_CALL));
                let payload = Term::tuple(vec![
                    Term::atom("$gen_call"),
                    Term::tuple(vec![Term::Pid(reply_to.clone()), tag]),
                    request,
                ]);
                let control = match to {
                    Ok(to) => Control::Send {
                        from: Some(reply_to),
                        to,
                    },
                    Err(name) => Control::RegSend {
                        from: reply_to,
                        to: name,
                    },
                };
                return Ok((control, payload));
            }
            Err(other) => other,
        };
        let msg = match msg.downcast::<CallReply>() {
            Ok(reply) => {
                let pending = {
                    let mut t = self.tables();
                    t.calls_in.remove(&reply.tag)
                };
                let Some((tag, caller)) = pending else {
                    return Err(not_serializable(format!(
                        "the reply to call {} from an Erlang node came after the call was forgotten",
                        reply.tag
                    )));
                };
                let value = reply_term(reply.reply, reply.reply_type, &me.name_of);
                let payload = Term::tuple(vec![tag.clone(), value]);
                // OTP 24+ callers tag with `[alias | Ref]` and take the
                // reply at the alias; older ones at their pid.
                let from = sender(from).unwrap_or_else(|| me.system_pid());
                return Ok((reply_control(&tag, from, caller), payload));
            }
            Err(other) => other,
        };
        let payload = match msg.downcast::<CastRequest>() {
            Ok(cast) => Term::tuple(vec![
                Term::atom("$gen_cast"),
                term_of(cast.request, cast.request_type, &me.name_of)?,
            ]),
            Err(other) => term_of(other, "the message", &me.name_of)?,
        };
        let control = match to {
            Ok(to) => Control::Send {
                from: sender(from),
                to,
            },
            Err(name) => Control::RegSend {
                from: sender(from).unwrap_or_else(|| me.system_pid()),
                to: name,
            },
        };
        Ok((control, payload))
    }

    /// Queues a message for the Erlang process `to` (Pid) or registered name.
    pub(crate) fn send(
        &self,
        me: &Local<'_>,
        from: Option<Pid>,
        to: Result<Pid, &str>,
        msg: Message,
    ) -> Result<(), RouteError> {
        let full = {
            let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            out.buf.len() >= out.limit
        };
        if full {
            return Err(RouteError::Full(UnsentMessage::new(msg)));
        }
        let to = match to {
            Ok(pid) => Ok(ErlPid::from_joerl(pid, self.atom.clone())),
            Err(name) => Err(name_atom(name)?),
        };
        let (control, payload) = self.outgoing_message(me, from, to, msg)?;
        // Room was checked above; a concurrent sender may overshoot by one
        // message, which the limit tolerates.
        let _ = self.push_control(true, &control, Some(&payload));
        add(&self.counters.msgs_out, 1);
        Ok(())
    }

    /// Queues a signal for the Erlang process `to`, recording it in the
    /// bookkeeping first (so losing the connection answers it).
    pub(crate) fn signal(&self, me: &Local<'_>, to: Pid, signal: Signal) -> Result<(), RouteError> {
        let erl_to = ErlPid::from_joerl(to, self.atom.clone());
        let unnamed = |p: Pid| {
            me.pid(p).ok_or_else(|| RouteError::NotSerializable {
                detail: format!("{p} has no node name Erlang can know it by"),
            })
        };
        let control = match &signal {
            Signal::Link { from } => Control::Link {
                from: unnamed(*from)?,
                to: erl_to,
            },
            Signal::Unlink { from } => Control::UnlinkId {
                id: self.next_unlink.fetch_add(1, Ordering::Relaxed),
                from: unnamed(*from)?,
                to: erl_to,
            },
            Signal::Exit { from, reason, link } => {
                let from = unnamed(*from)?;
                let reason = Some(reason_term(reason));
                if *link {
                    Control::Exit {
                        from,
                        to: erl_to,
                        reason,
                    }
                } else {
                    Control::Exit2 {
                        from,
                        to: erl_to,
                        reason,
                    }
                }
            }
            Signal::Monitor { from, monitor } => {
                let from = unnamed(*from)?;
                self.tables()
                    .out_monitors
                    .insert(*monitor, ProcRef::Pid(erl_to.clone()));
                Control::MonitorP {
                    from,
                    to: ProcRef::Pid(erl_to),
                    reference: me.reference(monitor.0, REF_KIND_MONITOR),
                }
            }
            Signal::Demonitor { from, monitor } => {
                let target = self
                    .tables()
                    .out_monitors
                    .remove(monitor)
                    .unwrap_or(ProcRef::Pid(erl_to));
                Control::DemonitorP {
                    from: unnamed(*from)?,
                    to: target,
                    reference: me.reference(monitor.0, REF_KIND_MONITOR),
                }
            }
            Signal::Down {
                monitor,
                pid,
                reason,
            } => {
                let held = self.tables().in_monitors.remove(monitor);
                let Some(held) = held else {
                    // Not (or no longer) an Erlang monitor: nothing to say.
                    return Ok(());
                };
                self.tables().in_by_ref.remove(&held.reference);
                let from = match held.name {
                    Some(name) => ProcRef::Name(name),
                    None => ProcRef::Pid(unnamed(*pid)?),
                };
                Control::MonitorPExit {
                    from,
                    to: held.watcher,
                    reference: held.reference,
                    reason: Some(reason_term(reason)),
                }
            }
        };
        self.book().outgoing(to, &signal);
        let _ = self.push_control(true, &control, None);
        Ok(())
    }

    /// Starts monitor `monitor` of the local `from` on whatever is registered
    /// as `name` on this Erlang node.
    pub(crate) fn monitor_named(
        &self,
        me: &Local<'_>,
        from: Pid,
        monitor: MonitorRef,
        name: &str,
    ) -> Result<(), RouteError> {
        let atom = name_atom(name)?;
        let erl_from = me.pid(from).ok_or_else(|| RouteError::NotSerializable {
            detail: format!("{from} has no node name"),
        })?;
        let target = Pid::new(self.id, 0, 0);
        self.tables()
            .out_monitors
            .insert(monitor, ProcRef::Name(atom.clone()));
        self.book()
            .outgoing(target, &Signal::Monitor { from, monitor });
        let control = Control::MonitorP {
            from: erl_from,
            to: ProcRef::Name(atom),
            reference: me.reference(monitor.0, REF_KIND_MONITOR),
        };
        let _ = self.push_control(true, &control, None);
        Ok(())
    }

    // ---- Erlang -> joerl -------------------------------------------------

    /// What an incoming message from this peer asks of this node.
    /// `new_ref` makes a fresh local monitor reference.
    pub(crate) fn incoming(
        &self,
        me: &Local<'_>,
        conn: u64,
        control: Control,
        payload: Option<Term>,
        new_ref: &dyn Fn() -> MonitorRef,
    ) -> Inbound {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if self.current.load(Ordering::Acquire) != conn {
            return Inbound::Nothing;
        }
        add(&self.counters.msgs_in, 1);
        let j = |p: &ErlPid| p.to_joerl();
        match control {
            Control::Send { from, to } => self.message_in(me, from, Target::Pid(j(&to)), payload),
            Control::RegSend { from, to } => {
                self.message_in(me, Some(from), Target::Name(to), payload)
            }
            Control::AliasSend { .. } => {
                // This node hands out no aliases.
                add(&self.counters.dropped_in, 1);
                tracing::debug!(peer = %self.name, "a message to an alias was dropped: joerl nodes make no aliases");
                Inbound::Nothing
            }
            Control::Link { from, to } => self.signal_in(j(&to), Signal::Link { from: j(&from) }),
            Control::UnlinkId { id, from, to } => {
                let unlink = self.signal_in(j(&to), Signal::Unlink { from: j(&from) });
                // The ack goes out before anything else this side sends to the
                // unlinker: it is written now, the unlink applied after.
                let ack = Control::UnlinkIdAck {
                    id,
                    from: to,
                    to: from,
                };
                let mut frame = Vec::new();
                wire::put_message(&mut frame, &ack, None);
                let _ = self.push(true, |b| b.extend_from_slice(&frame));
                unlink
            }
            Control::UnlinkIdAck { .. } => Inbound::Nothing,
            Control::Exit { from, to, reason } => {
                let reason = reason
                    .or(payload)
                    .map(|r| reason_of(&r))
                    .unwrap_or(ExitReason::Normal);
                self.signal_in(
                    j(&to),
                    Signal::Exit {
                        from: j(&from),
                        reason,
                        link: true,
                    },
                )
            }
            Control::Exit2 { from, to, reason } => {
                let reason = reason
                    .or(payload)
                    .map(|r| reason_of(&r))
                    .unwrap_or(ExitReason::Normal);
                self.signal_in(
                    j(&to),
                    Signal::Exit {
                        from: j(&from),
                        reason,
                        link: false,
                    },
                )
            }
            Control::MonitorP {
                from,
                to,
                reference,
            } => {
                let monitor = new_ref();
                let watcher = from.clone();
                match to {
                    ProcRef::Pid(target) => {
                        let target = j(&target);
                        self.hold_in_monitor(monitor, reference, watcher, None, target);
                        self.signal_in(
                            target,
                            Signal::Monitor {
                                from: j(&from),
                                monitor,
                            },
                        )
                    }
                    ProcRef::Name(name) => {
                        let mut noproc = Vec::new();
                        wire::put_message(
                            &mut noproc,
                            &Control::MonitorPExit {
                                from: ProcRef::Name(name.clone()),
                                to: from.clone(),
                                reference: reference.clone(),
                                reason: Some(Term::atom("noproc")),
                            },
                            None,
                        );
                        // Held before the name resolves, so a demonitor
                        // that overtakes it finds it.
                        self.tables().in_monitors.insert(
                            monitor,
                            InMonitor {
                                reference,
                                watcher,
                                name: Some(name.clone()),
                            },
                        );
                        Inbound::MonitorName {
                            name,
                            from: j(&from),
                            monitor,
                            noproc,
                        }
                    }
                }
            }
            Control::DemonitorP {
                from, reference, ..
            } => {
                let held = self.tables().in_by_ref.remove(&reference);
                match held {
                    Some((monitor, target)) => {
                        self.tables().in_monitors.remove(&monitor);
                        self.signal_in(
                            target,
                            Signal::Demonitor {
                                from: j(&from),
                                monitor,
                            },
                        )
                    }
                    None => Inbound::Nothing,
                }
            }
            Control::MonitorPExit {
                from,
                to,
                reference,
                reason,
            } => {
                let Some(value) = me.ours(&reference, REF_KIND_MONITOR) else {
                    return Inbound::Nothing;
                };
                let monitor = MonitorRef(value);
                self.tables().out_monitors.remove(&monitor);
                let pid = match from {
                    ProcRef::Pid(p) => j(&p),
                    ProcRef::Name(_) => Pid::new(self.id, 0, 0),
                };
                let reason = reason
                    .or(payload)
                    .map(|r| reason_of(&r))
                    .unwrap_or(ExitReason::NoProc);
                self.signal_in(
                    j(&to),
                    Signal::Down {
                        monitor,
                        pid,
                        reason,
                    },
                )
            }
            Control::SpawnRequest { req_id, from, .. } => {
                let mut frame = Vec::new();
                wire::put_message(
                    &mut frame,
                    &Control::SpawnReply {
                        req_id,
                        to: from,
                        flags: 0,
                        result: Term::atom("notsup"),
                    },
                    None,
                );
                Inbound::Reply(frame)
            }
            Control::SpawnReply { .. } => Inbound::Nothing,
            Control::Unsupported(op) => {
                add(&self.counters.unsupported, 1);
                tracing::debug!(peer = %self.name, op, "control message not acted on");
                Inbound::Nothing
            }
        }
    }

    fn hold_in_monitor(
        &self,
        monitor: MonitorRef,
        reference: ErlRef,
        watcher: ErlPid,
        name: Option<Atom>,
        target: Pid,
    ) {
        let mut t = self.tables();
        t.in_by_ref.insert(reference.clone(), (monitor, target));
        t.in_monitors.insert(
            monitor,
            InMonitor {
                reference,
                watcher,
                name,
            },
        );
    }

    /// A monitor by name resolved to `target`: records it under its
    /// reference. `false` if a demonitor came first.
    pub(crate) fn name_resolved(&self, monitor: MonitorRef, target: Pid) -> bool {
        let mut t = self.tables();
        let Some(held) = t.in_monitors.get(&monitor).cloned() else {
            return false;
        };
        t.in_by_ref.insert(held.reference, (monitor, target));
        true
    }

    /// A monitor by name found nothing: forgets it.
    pub(crate) fn name_missing(&self, monitor: MonitorRef) {
        self.tables().in_monitors.remove(&monitor);
    }

    fn signal_in(&self, to: Pid, signal: Signal) -> Inbound {
        self.book().incoming(to, &signal);
        Inbound::Signal { to, signal }
    }

    fn message_in(
        &self,
        me: &Local<'_>,
        from: Option<ErlPid>,
        to: Target,
        payload: Option<Term>,
    ) -> Inbound {
        let Some(payload) = payload else {
            return Inbound::Nothing;
        };
        let from_pid = from.as_ref().map(ErlPid::to_joerl);
        // A gen_server call: `{'$gen_call', {From, Tag}, Request}`.
        if let Some([label, from_tag, request]) = payload.as_tuple()
            && label.is_atom("$gen_call")
            && let Some([Term::Pid(caller), tag]) = from_tag.as_tuple()
            && is_call_tag(tag)
        {
            if let Target::Name(name) = &to
                && let Some(answer) = self.builtin_call(me, name, caller, tag, request)
            {
                return Inbound::Reply(answer);
            }
            let joerl_tag = {
                let mut t = self.tables();
                let tag_value = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
                if t.calls_in.len() >= MAX_PENDING_CALLS {
                    t.calls_in.pop_first();
                }
                t.calls_in.insert(tag_value, (tag.clone(), caller.clone()));
                tag_value
            };
            let caller = caller.to_joerl();
            let msg: Message = Box::new(CallRequest {
                caller,
                reply_to: caller,
                tag: joerl_tag,
                request: Box::new(request.clone()),
                request_type: std::any::type_name::<Term>(),
            });
            return Inbound::Deliver {
                from: Some(caller),
                to,
                msg,
            };
        }
        if let Some([label, request]) = payload.as_tuple() {
            if label.is_atom("$gen_cast") {
                let msg: Message = Box::new(CastRequest {
                    request: Box::new(request.clone()),
                    request_type: std::any::type_name::<Term>(),
                });
                return Inbound::Deliver {
                    from: from_pid,
                    to,
                    msg,
                };
            }
        }
        // The reply to a call this node made: `{Tag, Reply}` with our tag.
        if let (Target::Pid(_), Some([Term::Ref(r), _])) = (&to, payload.as_tuple()) {
            if let Some(tag) = me.ours(r, REF_KIND_CALL) {
                let Term::Tuple(mut items) = payload else {
                    unreachable!("matched a tuple")
                };
                let reply = items.pop().expect("two elements");
                let msg: Message = Box::new(CallReply {
                    tag,
                    reply: Box::new(reply),
                    reply_type: std::any::type_name::<Term>(),
                });
                return Inbound::Deliver {
                    from: from_pid,
                    to,
                    msg,
                };
            }
        }
        Inbound::Deliver {
            from: from_pid,
            to,
            msg: Box::new(payload),
        }
    }

    /// Calls the kernel answers itself: `net_kernel`'s `{is_auth, Node}`
    /// (what `net_adm:ping/1` asks) and `rex` (the `rpc` server), which
    /// answers `{badrpc, ..}`: a joerl node runs no Erlang code.
    fn builtin_call(
        &self,
        me: &Local<'_>,
        name: &Atom,
        caller: &ErlPid,
        tag: &Term,
        request: &Term,
    ) -> Option<Vec<u8>> {
        let answer = match name.as_str() {
            "net_kernel" => match request.as_tuple() {
                Some([op, _]) if op.is_atom("is_auth") => Term::atom("yes"),
                _ => return None,
            },
            "rex" => Term::tuple(vec![
                Term::atom("badrpc"),
                Term::tuple(vec![
                    Term::atom("notsup"),
                    Term::binary(&b"a joerl node runs no Erlang code; call a registered joerl gen_server instead"[..]),
                ]),
            ]),
            _ => return None,
        };
        let mut frame = Vec::new();
        let payload = Term::tuple(vec![tag.clone(), answer]);
        let control = reply_control(tag, me.system_pid(), caller.clone());
        wire::put_message(&mut frame, &control, Some(&payload));
        Some(frame)
    }
}

/// A registered name as an atom, or why it cannot be one.
fn name_atom(name: &str) -> Result<Atom, RouteError> {
    Atom::new(name).map_err(|e| RouteError::NotSerializable {
        detail: format!("{name:?} cannot be an Erlang registered name: {e}"),
    })
}

/// Where the reply to an Erlang call with `tag` goes: to the alias the tag
/// names (OTP 24 and later), else to the caller's pid.
fn reply_control(tag: &Term, from: ErlPid, caller: ErlPid) -> Control {
    match alias_of(tag) {
        Some(alias) => Control::AliasSend { from, alias },
        None => Control::Send {
            from: Some(from),
            to: caller,
        },
    }
}

/// The alias a gen_server call's tag names: `[alias | Ref]` (OTP 24 and
/// later) or `[[alias | Ref] | _]` (as `gen:reply/2` also takes).
fn alias_of(tag: &Term) -> Option<ErlRef> {
    /// `[alias | Ref]` itself.
    fn direct(t: &Term) -> Option<ErlRef> {
        match t {
            Term::ImproperList(head, tail) => match (head.as_slice(), tail.as_ref()) {
                ([first], Term::Ref(r)) if first.is_atom("alias") => Some(r.clone()),
                _ => None,
            },
            _ => None,
        }
    }
    direct(tag).or_else(|| match tag {
        Term::ImproperList(head, _) | Term::List(head) => head.first().and_then(direct),
        _ => None,
    })
}

/// True for what a gen_server call's tag can be: a reference, or a list
/// headed by `alias` (or by such a list) ending in a reference.
fn is_call_tag(tag: &Term) -> bool {
    // Small on purpose: a pending call keeps its tag.
    let small = |t: &Term| matches!(t, Term::Ref(_) | Term::Atom(_));
    match tag {
        Term::Ref(_) => true,
        Term::ImproperList(head, tail) if alias_of(tag).is_some() => {
            head.len() <= 4
                && head.iter().all(|h| small(h) || alias_of(h).is_some())
                && (small(tail) || tail.as_list().is_some_and(|l| l.is_empty()))
        }
        Term::List(items) if alias_of(tag).is_some() => {
            items.len() <= 4 && items.iter().all(|h| small(h) || alias_of(h).is_some())
        }
        _ => false,
    }
}

/// Tags of calls from Erlang nodes (unique in this process, so a reply
/// finds its call whichever peer it came from).
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// A message for an Erlang process as a term: a [`Term`] as it is, a
/// registered type through serde.
fn term_of(
    msg: Message,
    what: &str,
    names: &dyn crate::erlang::serde_term::PidNames,
) -> Result<Term, RouteError> {
    match msg.downcast::<Term>() {
        Ok(t) => Ok(*t),
        Err(other) => crate::erlang::convert::to_term(other, names).map_err(|detail| {
            RouteError::NotSerializable {
                detail: format!("{what} cannot be sent to an Erlang node: {detail}"),
            }
        }),
    }
}

/// A joerl server's reply as a term (what cannot become one says why).
fn reply_term(
    reply: Message,
    reply_type: &str,
    names: &dyn crate::erlang::serde_term::PidNames,
) -> Term {
    if reply.is::<BadRequest>() {
        return Term::tuple(vec![
            Term::atom("error"),
            Term::tuple(vec![
                Term::atom("bad_request"),
                Term::binary(&b"the joerl server does not take Erlang terms (add joerl_dist::erlang::Term to its Calls)"[..]),
            ]),
        ]);
    }
    if let Some(lost) = reply.downcast_ref::<ReplyLost>() {
        return Term::tuple(vec![
            Term::atom("error"),
            Term::binary(lost.reason.as_bytes()),
        ]);
    }
    match term_of(reply, reply_type, names) {
        Ok(t) => t,
        Err(e) => Term::tuple(vec![
            Term::atom("error"),
            Term::binary(e.to_string().into_bytes()),
        ]),
    }
}
