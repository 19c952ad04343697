//! One process's mailbox, signal queue and relations (links, monitors).
//!
//! Everything about a process that other threads touch lives behind one mutex:
//! the bounded user queue, the unbounded signal queue, the waker of the owning
//! task, senders waiting for room, and the link and monitor tables. The lock is
//! only ever held for a few pointer moves, never across an `.await` or user code.
//!
//! Invariants:
//! - Local senders never push past `capacity` (they wait or get `Full`). Only
//!   the distribution layer may push up to `capacity + extra` for messages that
//!   arrived from another node (`try_push_beyond`), so the queue stays bounded.
//! - The owner takes at most one batch (`BATCH` in `actor.rs`) out at a time, so
//!   at most `capacity + extra + BATCH` user messages exist for one actor.
//! - Once `closed` is set no message or signal is accepted; pushes fail so the
//!   caller can answer with `noproc`.
//! - `has_signals` is true whenever `signals` is non-empty (it may briefly be true
//!   with an empty queue); the owner reads it without locking as a hint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::message::Envelope;
use crate::{MonitorRef, Pid, Signal};

/// Links and monitors of one process. Allocated on first use so that idle
/// actors without relations stay small.
#[derive(Default)]
pub(crate) struct Relations {
    /// Processes linked to this one.
    pub(crate) links: HashSet<Pid>,
    /// Monitors other processes hold on this one, as (monitoring pid, reference).
    /// References are only unique per node, so the owner is part of the key.
    pub(crate) monitored_by: HashSet<(Pid, MonitorRef)>,
    /// Monitors this process holds: reference -> monitored pid.
    pub(crate) monitoring: HashMap<MonitorRef, Pid>,
}

pub(crate) struct State {
    queue: VecDeque<Envelope>,
    signals: VecDeque<Signal>,
    capacity: usize,
    closed: bool,
    pub(crate) trap_exit: bool,
    waker: Option<Waker>,
    send_waiters: Vec<Waker>,
    pub(crate) name: Option<Box<str>>,
    relations: Option<Box<Relations>>,
}

impl State {
    /// The relation tables, allocating them on first use.
    pub(crate) fn relations(&mut self) -> &mut Relations {
        self.relations.get_or_insert_with(Default::default)
    }

    /// The relation tables if any were ever created.
    pub(crate) fn relations_if_any(&mut self) -> Option<&mut Relations> {
        self.relations.as_deref_mut()
    }

    /// True once the process has exited.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The queued, not yet applied signals.
    pub(crate) fn signals_iter(&self) -> impl Iterator<Item = &Signal> {
        self.signals.iter()
    }
}

/// What a failed message push hands back.
pub(crate) enum PushError {
    /// The mailbox is full; the envelope is returned.
    Full(Envelope),
    /// The process is gone; the envelope is returned (a message for a
    /// placed activation that ended may go on to its identity's next one).
    Closed(Envelope),
}

/// What the owner finds when it wakes up.
pub(crate) enum Ready {
    /// At least one signal is queued.
    Signals,
    /// Messages were moved into the owner's local batch.
    Messages,
}

/// Everything left in a process when it closes.
pub(crate) struct Remains {
    pub(crate) signals: VecDeque<Signal>,
    pub(crate) relations: Option<Box<Relations>>,
    pub(crate) name: Option<Box<str>>,
}

/// A process: an actor's mailbox, or the reply slot of a pending call.
pub(crate) struct Process {
    pub(crate) pid: Pid,
    has_signals: AtomicBool,
    state: Mutex<State>,
}

impl Process {
    pub(crate) fn new(pid: Pid, capacity: usize, trap_exit: bool) -> Self {
        Process {
            pid,
            has_signals: AtomicBool::new(false),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                signals: VecDeque::new(),
                capacity: capacity.max(1),
                closed: false,
                trap_exit,
                waker: None,
                send_waiters: Vec::new(),
                name: None,
                relations: None,
            }),
        }
    }

    /// Locks the state. The lock is never held across user code, so poisoning
    /// can only follow a bug in this crate; the data stays consistent anyway.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if a signal may be waiting (a hint read without the lock).
    #[inline]
    pub(crate) fn has_signals(&self) -> bool {
        self.has_signals.load(Ordering::Acquire)
    }

    /// Appends a user message if there is room.
    pub(crate) fn try_push(&self, env: Envelope) -> Result<(), PushError> {
        self.try_push_beyond(env, 0)
    }

    /// Appends a user message while the queue holds fewer than `capacity + extra`.
    pub(crate) fn try_push_beyond(&self, env: Envelope, extra: usize) -> Result<(), PushError> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed(env));
        }
        if st.queue.len() >= st.capacity.saturating_add(extra) {
            return Err(PushError::Full(env));
        }
        st.queue.push_back(env);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Appends a user message or, when full, registers `cx` to be woken when the
    /// owner takes messages out.
    pub(crate) fn poll_push(&self, env: Envelope, cx: &mut Context<'_>) -> Result<(), PushError> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed(env));
        }
        if st.queue.len() >= st.capacity {
            if !st.send_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.send_waiters.push(cx.waker().clone());
            }
            return Err(PushError::Full(env));
        }
        st.queue.push_back(env);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Appends a signal. Signals are not bounded by the mailbox capacity: each is
    /// the result of an action of a live process (a link, a monitor, an exit), so
    /// their number is bounded by what the senders hold.
    pub(crate) fn push_signal(&self, sig: Signal) -> Result<(), Signal> {
        let mut st = self.lock();
        if st.closed {
            return Err(sig);
        }
        st.signals.push_back(sig);
        self.has_signals.store(true, Ordering::Release);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Moves all queued signals into `out`.
    pub(crate) fn take_signals(&self, out: &mut VecDeque<Signal>) {
        let mut st = self.lock();
        out.append(&mut st.signals);
        self.has_signals.store(false, Ordering::Release);
    }

    /// Owner side: ready when a signal is queued or messages could be moved into
    /// `batch` (at most `max`); otherwise stores the waker and returns pending.
    pub(crate) fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Envelope>,
        max: usize,
    ) -> Poll<Ready> {
        let mut st = self.lock();
        if !st.signals.is_empty() {
            return Poll::Ready(Ready::Signals);
        }
        if !st.queue.is_empty() {
            let n = st.queue.len().min(max);
            batch.extend(st.queue.drain(..n));
            let waiters = std::mem::take(&mut st.send_waiters);
            drop(st);
            for w in waiters {
                w.wake();
            }
            return Poll::Ready(Ready::Messages);
        }
        Self::store_waker(&mut st, cx);
        Poll::Pending
    }

    /// Owner side, while a handler is suspended: wake `cx` on the next signal.
    /// Returns false if a signal is already queued (the caller should process it).
    /// With `ignore_queued`, registers even if signals are queued (used while only
    /// a kill matters and the other signals must stay queued).
    pub(crate) fn register_for_signals(&self, cx: &mut Context<'_>, ignore_queued: bool) -> bool {
        let mut st = self.lock();
        if !ignore_queued && !st.signals.is_empty() {
            return false;
        }
        Self::store_waker(&mut st, cx);
        true
    }

    fn store_waker(st: &mut State, cx: &mut Context<'_>) {
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
    }

    /// Closes the process: nothing more is accepted. Returns what is left to
    /// answer (queued signals, relations, the registered name). Queued user
    /// messages are dropped, as Erlang drops a dead process's mailbox.
    pub(crate) fn close(&self) -> Remains {
        let mut st = self.lock();
        st.closed = true;
        let signals = std::mem::take(&mut st.signals);
        self.has_signals.store(false, Ordering::Release);
        let queue = std::mem::take(&mut st.queue);
        let waiters = std::mem::take(&mut st.send_waiters);
        st.waker = None;
        let remains = Remains {
            signals,
            relations: st.relations.take(),
            name: st.name.take(),
        };
        drop(st);
        drop(queue);
        for w in waiters {
            w.wake();
        }
        remains
    }

    /// Moves every queued user message into `out` (used by call reply slots).
    pub(crate) fn take_messages(&self, out: &mut VecDeque<Envelope>) {
        let mut st = self.lock();
        out.append(&mut st.queue);
    }

    /// True once the process has exited.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Number of user messages waiting in the mailbox.
    pub(crate) fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }
}
