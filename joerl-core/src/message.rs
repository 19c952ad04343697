//! Messages and the system messages an actor can receive.
//!
//! A user message is a [`Message`]: any `Send` value in a box. The receiver
//! downcasts it once to the type it expects. Messages that arrive from another
//! node are delivered as their concrete type too, so the receiving code is the
//! same for local and remote senders.

use std::any::{Any, TypeId};

use serde::{Deserialize, Serialize};

use crate::{ExitReason, Pid};

/// A message: any value that can cross threads, boxed.
pub type Message = Box<dyn Any + Send>;

/// Dispatches a [`Message`] by its type, like a `receive` with one clause
/// per type: the first arm whose type the message is runs, with the value
/// bound to its pattern (irrefutable: a name, a tuple struct, a struct); the
/// `else` arm gets what no arm took, still a `Message`. Arms may `.await`.
///
/// ```
/// use joerl_core::{receive, DownMessage, Message};
///
/// struct Ping(u32);
/// fn describe(msg: Message) -> String {
///     receive!(msg, {
///         Ping as Ping(n) => format!("ping {n}"),
///         DownMessage as down => format!("{} is down", down.pid),
///         else other => format!("something else: is it a &str? {}", other.is::<&str>()),
///     })
/// }
/// assert_eq!(describe(Box::new(Ping(3))), "ping 3");
/// assert_eq!(describe(Box::new("hi")), "something else: is it a &str? true");
/// ```
#[macro_export]
macro_rules! receive {
    ($msg:expr, { $($ty:ty as $p:pat => $body:expr,)* else $rest:ident => $fallback:expr $(,)? }) => {{
        let __joerl_msg: $crate::Message = $msg;
        'receive: {
            $(
                let __joerl_msg = match __joerl_msg.downcast::<$ty>() {
                    Ok(__joerl_value) => {
                        let $p = *__joerl_value;
                        break 'receive $body;
                    }
                    Err(__joerl_other) => __joerl_other,
                };
            )*
            let $rest = __joerl_msg;
            $fallback
        }
    }};
}

/// `value` as a [`Message`] and the name of its type; a value that already is
/// a [`Message`] is passed through as it is (its type unknown here), not boxed
/// a second time.
pub(crate) fn into_message<M: Any + Send>(value: M) -> (Message, Option<&'static str>) {
    // Decided at compile time for each `M`.
    if TypeId::of::<M>() == TypeId::of::<Message>() {
        let mut slot = Some(value);
        let msg = (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<Message>>()
            .and_then(Option::take)
            .expect("M is Message");
        return (msg, None);
    }
    (Box::new(value), Some(std::any::type_name::<M>()))
}

/// A message handed back by a send that did not happen (for example a full
/// mailbox), so the caller can retry it. Take it back with
/// [`into_inner`](UnsentMessage::into_inner).
///
/// Unlike a bare [`Message`], this is `Sync`, so errors that carry it work with
/// `?` into `anyhow::Error` and `Box<dyn Error + Send + Sync>`.
pub struct UnsentMessage(Message);

// SAFETY: the boxed value is only reachable by value (`into_inner`), never through
// `&UnsentMessage`, so sharing a reference between threads exposes nothing that is
// not `Sync`.
unsafe impl Sync for UnsentMessage {}

impl UnsentMessage {
    /// Wraps a message.
    pub fn new(msg: Message) -> Self {
        UnsentMessage(msg)
    }

    /// The message.
    pub fn into_inner(self) -> Message {
        self.0
    }
}

impl std::fmt::Debug for UnsentMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsentMessage(..)")
    }
}

/// Identifies one monitor, as returned by `monitor` and carried by [`DownMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MonitorRef(pub u64);

/// Delivered to an actor that traps exits when a linked actor exits or when
/// someone calls `exit` on it (Erlang's `{'EXIT', From, Reason}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitMessage {
    /// The actor the exit signal came from.
    pub from: Pid,
    /// Its exit reason.
    pub reason: ExitReason,
}

/// Delivered when a monitored actor exits (Erlang's `{'DOWN', Ref, process, Pid, Reason}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownMessage {
    /// The reference `monitor` returned.
    pub monitor: MonitorRef,
    /// The monitored actor.
    pub pid: Pid,
    /// Why it exited; `NoProc` if it did not exist, `NoConnection` if its node was lost.
    pub reason: ExitReason,
}

/// A message in a mailbox, with the sender it came from.
pub(crate) struct Envelope {
    pub(crate) from: Pid,
    pub(crate) msg: Message,
}

/// The sender value used for messages that have no sending actor.
pub(crate) const NO_SENDER: Pid = Pid::new(0, 0, 0);

impl Envelope {
    pub(crate) fn new(from: Option<Pid>, msg: Message) -> Self {
        Envelope {
            from: from.unwrap_or(NO_SENDER),
            msg,
        }
    }
}
