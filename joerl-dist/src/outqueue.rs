//! The bounded outgoing queue toward one peer.
//!
//! Senders encode frames straight into one shared buffer; the peer's writer swaps
//! the whole buffer out and writes it with one call, so many small messages
//! become one `write` (and one TCP segment train) without any per-message
//! allocation. The bound is in bytes: once `max_bytes` are waiting, user messages
//! are refused with `Full` (and `send` waits on [`OutQueue::ready`]). Signals are
//! never refused: they are few, each caused by a live actor's action, and losing
//! one would break a link or monitor.
//!
//! When the queue is idle (nothing waiting, the writer not in the middle of a
//! write, and no frame pushed for a few microseconds), the sender writes its frame
//! to the socket itself with a non-blocking `try_write`, under the queue's lock,
//! so a lone message does not wait for the writer task to be woken, while a stream
//! of messages still goes out in large coalesced writes. Whatever the socket does not take stays queued for
//! the writer; the lock and the `writer_busy` flag keep every byte in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Why a push did not happen.
pub(crate) enum PushError<E> {
    /// The queue is full.
    Full,
    /// The encoder failed; nothing was queued.
    Encode(E),
}

struct Buf {
    bytes: Vec<u8>,
    frames: usize,
    /// Bytes at the front of `bytes` that are the tail of a frame a sender has
    /// partly written to the socket itself (never more than one frame).
    partial_head: usize,
    /// Messages (not other frames) ever pushed: the sender's side of the
    /// session count in `accounting.rs`.
    pushed_msgs: u64,
    /// The writer has taken bytes and not finished writing them.
    writer_busy: bool,
    /// The connection's write half while a connection is up.
    sink: Option<Arc<OwnedWriteHalf>>,
    /// When the last frame was pushed.
    last_push: Option<Instant>,
}

/// A sender writes to the socket itself only after the queue has seen no frame for
/// this long: a stream of messages is left to the writer, which coalesces it into
/// few large writes; a lone message (a request, a reply) goes out at once.
const DIRECT_WRITE_AFTER_IDLE: Duration = Duration::from_micros(5);

/// What [`OutQueue::clear`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cleared {
    /// Frames dropped.
    pub(crate) frames: usize,
    /// Of those, user messages.
    pub(crate) msgs: u64,
    /// Messages ever pushed, at the moment of clearing.
    pub(crate) pushed_msgs: u64,
}

/// The user messages among the whole frames in `bytes`.
fn count_messages(mut bytes: &[u8]) -> u64 {
    let mut n = 0;
    while bytes.len() > crate::frame::LEN_BYTES {
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let tag = bytes[crate::frame::LEN_BYTES];
        if tag == crate::frame::tag::SEND || tag == crate::frame::tag::SEND_NAMED {
            n += 1;
        }
        let total = crate::frame::LEN_BYTES + len;
        if total > bytes.len() {
            break;
        }
        bytes = &bytes[total..];
    }
    n
}

/// See the module documentation.
pub(crate) struct OutQueue {
    buf: Mutex<Buf>,
    frames: AtomicUsize,
    writer: Notify,
    space: Notify,
    max_bytes: usize,
    /// Even forced frames are refused past this: the peer is not reading, and
    /// the connection should be dropped rather than the buffer grown further.
    hard_max: usize,
}

impl OutQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        OutQueue {
            buf: Mutex::new(Buf {
                bytes: Vec::new(),
                frames: 0,
                partial_head: 0,
                pushed_msgs: 0,
                writer_busy: false,
                sink: None,
                last_push: None,
            }),
            frames: AtomicUsize::new(0),
            writer: Notify::new(),
            space: Notify::new(),
            max_bytes,
            hard_max: max_bytes
                .saturating_mul(4)
                .max(max_bytes + 16 * 1024 * 1024),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new connection's write half (the writer task holds another).
    pub(crate) fn attach(&self, sink: Arc<OwnedWriteHalf>) {
        let mut buf = self.lock();
        buf.sink = Some(sink);
        buf.writer_busy = false;
    }

    /// Appends one frame written by `encode`; `message` says it is a user message
    /// (counted for loss accounting). With `force`, ignores the bound up to a
    /// hard limit of four times it (at least 16 MiB more); past that even
    /// forced frames get `Full`, and the caller should drop the connection.
    /// Returns the number of bytes written straight to the socket (see the
    /// module documentation).
    pub(crate) fn push<E>(
        &self,
        force: bool,
        message: bool,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, PushError<E>> {
        let mut buf = self.lock();
        let limit = if force { self.hard_max } else { self.max_bytes };
        if buf.bytes.len() >= limit {
            return Err(PushError::Full);
        }
        let start = buf.bytes.len();
        // A panicking encoder (a user's Serialize) must not leave half a frame in
        // the shared buffer: remove it, release the lock, then let the panic go on.
        let encoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encode(&mut buf.bytes)));
        match encoded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                buf.bytes.truncate(start);
                return Err(PushError::Encode(e));
            }
            Err(panic) => {
                buf.bytes.truncate(start);
                drop(buf);
                std::panic::resume_unwind(panic);
            }
        }
        if message {
            buf.pushed_msgs += 1;
        }
        let was_empty = start == 0;
        let now = Instant::now();
        let idle = buf
            .last_push
            .is_none_or(|t| now.duration_since(t) > DIRECT_WRITE_AFTER_IDLE);
        buf.last_push = Some(now);
        if was_empty && idle && !buf.writer_busy {
            if let Some(sink) = buf.sink.clone() {
                match sink.try_write(&buf.bytes) {
                    Ok(n) if n == buf.bytes.len() => {
                        buf.bytes.clear();
                        return Ok(n);
                    }
                    Ok(n) => {
                        buf.bytes.drain(..n);
                        buf.partial_head = buf.bytes.len();
                        buf.frames += 1;
                        self.frames.store(buf.frames, Ordering::Relaxed);
                        drop(buf);
                        self.writer.notify_one();
                        return Ok(n);
                    }
                    // Would block, or an error the writer will meet and report.
                    Err(_) => {}
                }
            }
        }
        buf.frames += 1;
        self.frames.store(buf.frames, Ordering::Relaxed);
        drop(buf);
        if was_empty {
            self.writer.notify_one();
        }
        Ok(0)
    }

    /// Writer side: swaps the queued bytes into `out` (which must be empty) and,
    /// if there were any, marks the writer busy until [`write_done`](Self::write_done).
    /// Returns the number of frames taken.
    #[cfg(test)]
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> usize {
        let mut buf = self.lock();
        self.take_locked(&mut buf, out)
    }

    fn take_locked(&self, buf: &mut Buf, out: &mut Vec<u8>) -> usize {
        std::mem::swap(&mut buf.bytes, out);
        buf.partial_head = 0;
        buf.writer_busy = !out.is_empty();
        let frames = std::mem::take(&mut buf.frames);
        self.frames.store(0, Ordering::Relaxed);
        if frames > 0 {
            self.space.notify_waiters();
        }
        frames
    }

    /// True if `writer` is the write half of the connection now attached.
    fn owns(buf: &Buf, writer: &Arc<OwnedWriteHalf>) -> bool {
        buf.sink.as_ref().is_some_and(|s| Arc::ptr_eq(s, writer))
    }

    /// [`take`](Self::take) for the writer of the connection whose write half is
    /// `writer`; `None` (and nothing taken) if that connection is no longer the
    /// attached one, so a writer that outlives its connection for a moment
    /// cannot take what the next connection should carry.
    pub(crate) fn take_as(&self, writer: &Arc<OwnedWriteHalf>, out: &mut Vec<u8>) -> Option<usize> {
        let mut buf = self.lock();
        if !Self::owns(&buf, writer) {
            return None;
        }
        Some(self.take_locked(&mut buf, out))
    }

    /// Appends a control frame (a tick) for the writer `writer`, if its
    /// connection is still the attached one. Returns false otherwise.
    pub(crate) fn push_control_as(
        &self,
        writer: &Arc<OwnedWriteHalf>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let mut buf = self.lock();
        if !Self::owns(&buf, writer) {
            return false;
        }
        let was_empty = buf.bytes.is_empty();
        encode(&mut buf.bytes);
        buf.frames += 1;
        self.frames.store(buf.frames, Ordering::Relaxed);
        buf.last_push = Some(Instant::now());
        drop(buf);
        if was_empty {
            self.writer.notify_one();
        }
        true
    }

    /// True when nothing is queued and the writer is not in the middle of a write.
    pub(crate) fn is_flushed(&self) -> bool {
        let buf = self.lock();
        buf.bytes.is_empty() && !buf.writer_busy
    }

    /// Writer side: the bytes `writer` took last are all written (ignored if
    /// its connection is no longer the attached one).
    pub(crate) fn write_done_as(&self, writer: &Arc<OwnedWriteHalf>) {
        let mut buf = self.lock();
        if Self::owns(&buf, writer) {
            buf.writer_busy = false;
        }
    }

    /// Drops everything queued and detaches the connection. Returns what was
    /// dropped and the push count at that moment.
    pub(crate) fn clear(&self) -> Cleared {
        let mut buf = self.lock();
        buf.sink = None;
        buf.writer_busy = false;
        let msgs = count_messages(&buf.bytes[buf.partial_head..]);
        buf.bytes.clear();
        buf.bytes.shrink_to(64 * 1024);
        buf.partial_head = 0;
        let frames = std::mem::take(&mut buf.frames);
        let pushed_msgs = buf.pushed_msgs;
        self.frames.store(0, Ordering::Relaxed);
        drop(buf);
        self.space.notify_waiters();
        Cleared {
            frames,
            msgs,
            pushed_msgs,
        }
    }

    /// Messages ever pushed.
    pub(crate) fn pushed_msgs(&self) -> u64 {
        self.lock().pushed_msgs
    }

    /// Puts a frame in front of everything queued, for the first frame of a new
    /// connection. Only before [`attach`](Self::attach): nothing can be partly
    /// written then.
    pub(crate) fn prepend(&self, frame: &[u8]) {
        let mut buf = self.lock();
        debug_assert!(buf.sink.is_none() && buf.partial_head == 0);
        buf.bytes.splice(0..0, frame.iter().copied());
        buf.frames += 1;
        self.frames.store(buf.frames, Ordering::Relaxed);
    }

    /// Frames waiting to be written.
    pub(crate) fn depth(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// Resolves when the writer should look at the queue.
    pub(crate) async fn wait_for_data(&self) {
        self.writer.notified().await
    }

    /// Wakes the writer (used at shutdown and after a new connection is installed).
    pub(crate) fn wake_writer(&self) {
        self.writer.notify_one();
    }

    /// Resolves when the queue is below its bound.
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.space.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.lock().bytes.len() < self.max_bytes {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_refuses_messages_but_not_forced_frames() {
        let q = OutQueue::new(8);
        q.push::<()>(false, false, |b| {
            b.extend_from_slice(&[1; 8]);
            Ok(())
        })
        .ok()
        .unwrap();
        assert!(matches!(
            q.push::<()>(false, false, |b| {
                b.push(2);
                Ok(())
            }),
            Err(PushError::Full)
        ));
        assert!(
            q.push::<()>(true, false, |b| {
                b.push(3);
                Ok(())
            })
            .is_ok()
        );
        assert_eq!(q.depth(), 2);
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out), 2);
        assert_eq!(out.len(), 9);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn forced_frames_stop_at_the_hard_limit() {
        let q = OutQueue::new(8);
        let mut pushed = 0;
        while q
            .push::<()>(true, false, |b| {
                b.extend_from_slice(&[0; 1024]);
                Ok(())
            })
            .is_ok()
        {
            pushed += 1;
            assert!(pushed < 100_000, "forced pushes must be bounded");
        }
        assert!(pushed >= 16 * 1024, "the hard limit is at least 16 MiB");
    }

    #[test]
    fn panicking_encoder_leaves_no_partial_frame() {
        let q = OutQueue::new(100);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = q.push::<()>(false, false, |b| {
                b.extend_from_slice(b"half a frame");
                panic!("user Serialize panicked");
            });
        }));
        assert!(r.is_err());
        let mut out = Vec::new();
        q.take(&mut out);
        assert!(out.is_empty());
        assert!(
            q.push::<()>(false, false, |b| {
                b.push(1);
                Ok(())
            })
            .is_ok(),
            "the queue still works"
        );
    }

    #[test]
    fn clear_counts_the_messages_it_drops() {
        let q = OutQueue::new(1 << 20);
        for _ in 0..3 {
            q.push::<()>(false, true, |b| {
                let start = crate::frame::begin_send(b, None, joerl_core::Pid::new(1, 2, 3));
                b.extend_from_slice(&[0; 10]);
                crate::frame::finish(b, start, 1 << 20).unwrap();
                Ok(())
            })
            .ok()
            .unwrap();
        }
        q.push::<()>(true, false, |b| {
            crate::frame::put_tick(b);
            Ok(())
        })
        .ok()
        .unwrap();
        // The writer takes the first three and the tick; two more messages follow.
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out), 4);
        for _ in 0..2 {
            q.push::<()>(false, true, |b| {
                let start = crate::frame::begin_send(b, None, joerl_core::Pid::new(1, 2, 3));
                crate::frame::finish(b, start, 1 << 20).unwrap();
                Ok(())
            })
            .ok()
            .unwrap();
        }
        let cleared = q.clear();
        assert_eq!(
            cleared,
            Cleared {
                frames: 2,
                msgs: 2,
                pushed_msgs: 5
            }
        );
        q.prepend(&[0, 0, 0, 1, crate::frame::tag::TICK]);
        assert_eq!(q.depth(), 1);
    }

    #[test]
    fn failed_encoder_queues_nothing() {
        let q = OutQueue::new(100);
        let r = q.push(false, false, |b| {
            b.extend_from_slice(b"partial");
            Err("bad")
        });
        assert!(matches!(r, Err(PushError::Encode("bad"))));
        assert_eq!(q.depth(), 0);
        let mut out = Vec::new();
        q.take(&mut out);
        assert!(out.is_empty(), "a failed frame leaves no bytes behind");
    }
}
