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
//!
//! **Resend buffer.** What is written (by the writer or a sender) is kept,
//! in the chunks it was written in, until the peer acknowledges it: every data
//! frame (message or signal) has a sequence number (the count of data frames
//! pushed before it, plus one), and an ACK of `n` frees the chunks whose data
//! frames are all at or below `n`. After a cut the next connection of the same
//! session starts with [`replay`](OutQueue::replay): the data frames above the
//! peer's count go back to the front of the queue, ahead of what waited. At
//! most `window` bytes are kept: past it the writer waits for acknowledgements
//! (and senders then wait as for a full queue), except for ACK frames, which
//! travel apart from the data (in `control`), so two nodes sending to each
//! other with full windows still acknowledge each other.

use std::collections::VecDeque;
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
    /// Data frames (messages and signals) ever pushed: the sender's side of
    /// the session count in `accounting.rs`, and the sequence number of the
    /// last one.
    pushed_msgs: u64,
    /// ACK frames to write, apart from the data (see the module documentation).
    control: Vec<u8>,
    /// What was written and not yet acknowledged, in write order.
    resend: VecDeque<Chunk>,
    /// Bytes in `resend`.
    resend_bytes: usize,
    /// The sequence number of the last data frame handed to a socket (or
    /// dropped): where the next chunk's numbering starts.
    taken_seq: u64,
    /// Emptied buffers of acknowledged chunks, for the next swaps: reusing
    /// them spares the allocator (a freed multi-megabyte buffer is given back
    /// to the kernel, and every page of the next one faults in again).
    spare: Vec<Vec<u8>>,
    /// Capacity of the buffers in `spare`, at most the resend `window`.
    spare_bytes: usize,
    /// The writer has taken bytes and not finished writing them.
    writer_busy: bool,
    /// The connection attached while a connection is up.
    sink: Option<Sink>,
    /// When the last frame was pushed (when its write ended, if its
    /// sender wrote it itself).
    last_push: Option<Instant>,
    /// When a sender's own write to the socket last ended.
    last_direct: Option<Instant>,
}

/// The connection attached to the queue, as the queue knows it.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A TCP write half, shared with the writer: senders may write to it
    /// directly.
    Direct(Arc<OwnedWriteHalf>),
    /// A writer task's own stream (TLS): only its identity is known here.
    Writer(Arc<()>),
}

impl Sink {
    /// A sink of its own for a writer that owns its stream.
    pub(crate) fn writer() -> Self {
        Sink::Writer(Arc::new(()))
    }

    fn same(&self, other: &Sink) -> bool {
        match (self, other) {
            (Sink::Direct(a), Sink::Direct(b)) => Arc::ptr_eq(a, b),
            (Sink::Writer(a), Sink::Writer(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Bytes written in one go and kept until acknowledged.
struct Chunk {
    bytes: Arc<Vec<u8>>,
    /// Bytes at the front that are the tail of a frame kept whole in the
    /// chunk before.
    skip: usize,
    /// The sequence number of the first data frame that starts after `skip`.
    first_seq: u64,
    /// The sequence number of the last data frame in the chunk (`first_seq -
    /// 1` if it holds none).
    last_seq: u64,
    /// Written by senders (frame by frame): later direct writes may be appended.
    direct: bool,
}

/// Largest frame a sender writes itself, and largest chunk direct writes are
/// appended to.
const MAX_DIRECT_CHUNK: usize = 64 * 1024;
/// Most buffers kept spare (their capacity is bounded apart, by the resend
/// window).
const MAX_SPARES: usize = 32;

/// What the writer gets from [`OutQueue::take_as`].
pub(crate) enum Take {
    /// Its connection is no longer the attached one.
    Detached,
    /// Nothing to write now (the queue is empty, or the resend window is full
    /// and no ACK waits).
    Idle,
    /// Write `data` and then `control` (ACKs), then call
    /// [`write_done_as`](OutQueue::write_done_as).
    Write {
        /// ACK frames (swapped into the writer's vector).
        control: bool,
        /// Data, kept in the resend buffer as well.
        data: Option<Arc<Vec<u8>>>,
    },
}

/// True for the tags of data frames: sequenced, acknowledged, replayed.
pub(crate) fn is_data_tag(tag: u8) -> bool {
    use crate::frame::tag;
    matches!(
        tag,
        tag::SEND | tag::SEND_NAMED | tag::SIGNAL | tag::MONITOR_NAMED
    )
}

/// A sender writes to the socket itself only after the queue has seen no frame for
/// this long: a stream of messages is left to the writer, which coalesces it into
/// few large writes; a lone message (a request, a reply) goes out at once.
const DIRECT_WRITE_AFTER_IDLE: Duration = Duration::from_micros(5);

/// A sender writes to the socket itself at most once in this long: a sender
/// whose messages are spaced just past [`DIRECT_WRITE_AFTER_IDLE`] (one that
/// sends to several nodes in turn, or does some work per message) would
/// otherwise pay a system call per message, which spaces its messages
/// further; above this rate the writer coalesces them. A request and its
/// reply (a round trip of tens of microseconds) still go out at once.
const DIRECT_WRITE_SPACING: Duration = Duration::from_micros(20);

/// What [`OutQueue::clear`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cleared {
    /// Frames dropped unwritten.
    pub(crate) frames: usize,
    /// Of those, data frames (messages and signals).
    pub(crate) msgs: u64,
    /// Data frames ever pushed, at the moment of clearing.
    pub(crate) pushed_msgs: u64,
}

/// Calls `each(frame, tag)` for every whole frame in `bytes`.
fn frames(mut bytes: &[u8], mut each: impl FnMut(&[u8], u8)) {
    while bytes.len() > crate::frame::LEN_BYTES {
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let total = crate::frame::LEN_BYTES + len;
        if total > bytes.len() {
            break;
        }
        each(&bytes[..total], bytes[crate::frame::LEN_BYTES]);
        bytes = &bytes[total..];
    }
}

/// The data frames among the whole frames in `bytes`.
fn count_data(bytes: &[u8]) -> u64 {
    let mut n = 0;
    frames(bytes, |_, tag| {
        if is_data_tag(tag) {
            n += 1;
        }
    });
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
    /// Most bytes kept in the resend buffer.
    window: usize,
}

impl OutQueue {
    /// A queue of `max_bytes` that keeps up to `window` bytes for resending.
    pub(crate) fn new(max_bytes: usize, window: usize) -> Self {
        OutQueue {
            buf: Mutex::new(Buf {
                bytes: Vec::new(),
                frames: 0,
                partial_head: 0,
                pushed_msgs: 0,
                control: Vec::new(),
                resend: VecDeque::new(),
                resend_bytes: 0,
                taken_seq: 0,
                spare: Vec::new(),
                spare_bytes: 0,
                writer_busy: false,
                sink: None,
                last_push: None,
                last_direct: None,
            }),
            frames: AtomicUsize::new(0),
            writer: Notify::new(),
            space: Notify::new(),
            max_bytes,
            hard_max: max_bytes
                .saturating_mul(4)
                .max(max_bytes + 16 * 1024 * 1024),
            window: window.max(4 * 1024 * 1024),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new connection (its writer task holds the same sink).
    pub(crate) fn attach(&self, sink: Sink) {
        let mut buf = self.lock();
        buf.sink = Some(sink);
        buf.writer_busy = false;
    }

    /// Appends one frame written by `encode`; `data` says it is a data frame
    /// (a message or a signal: sequenced, counted for loss accounting, kept
    /// for resending). With `force`, ignores the bound up to a
    /// hard limit of four times it (at least 16 MiB more); past that even
    /// forced frames get `Full`, and the caller should drop the connection.
    /// Returns the number of bytes written straight to the socket (see the
    /// module documentation).
    pub(crate) fn push<E>(
        &self,
        force: bool,
        data: bool,
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
        if data {
            buf.pushed_msgs += 1;
        }
        let was_empty = start == 0;
        let now = Instant::now();
        let idle = buf
            .last_push
            .is_none_or(|t| now.duration_since(t) > DIRECT_WRITE_AFTER_IDLE);
        buf.last_push = Some(now);
        let spaced = buf
            .last_direct
            .is_none_or(|t| now.duration_since(t) > DIRECT_WRITE_SPACING);
        // Only a small frame: a large one goes to the writer, whose chunk
        // keeps it for resending without a copy.
        if was_empty
            && idle
            && spaced
            && !buf.writer_busy
            && buf.resend_bytes < self.window
            && buf.bytes.len() <= MAX_DIRECT_CHUNK
        {
            if let Some(Sink::Direct(sink)) = buf.sink.clone() {
                let written = sink.try_write(&buf.bytes);
                // Timed from the write's end: on loopback the system call
                // also runs the receiver's side of TCP and can take tens of
                // microseconds, and a sender whose next push came that much
                // later would otherwise find the queue idle again and pay a
                // system call per frame.
                let end = Instant::now();
                buf.last_direct = Some(end);
                buf.last_push = Some(end);
                match written {
                    Ok(0) => {}
                    Ok(n) if n == buf.bytes.len() => {
                        Self::keep_direct(&mut buf, n);
                        buf.bytes.clear();
                        return Ok(n);
                    }
                    Ok(n) => {
                        Self::keep_direct(&mut buf, n);
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

    /// Keeps the (small) frame a sender is writing itself (all of
    /// `buf.bytes`, of which the socket took `written` bytes) in the resend
    /// buffer, appended to the last chunk if that one also holds direct
    /// writes. Leaves in `buf.bytes` what the socket did not take.
    fn keep_direct(buf: &mut Buf, written: usize) {
        let first_seq = buf.taken_seq + 1;
        buf.taken_seq = buf.pushed_msgs;
        buf.resend_bytes += buf.bytes.len();
        if let Some(last) = buf.resend.back_mut() {
            if last.direct && last.bytes.len() + buf.bytes.len() <= MAX_DIRECT_CHUNK {
                if let Some(bytes) = Arc::get_mut(&mut last.bytes) {
                    bytes.extend_from_slice(&buf.bytes);
                    last.last_seq = buf.taken_seq;
                    buf.bytes.drain(..written);
                    return;
                }
            }
        }
        // Copied: the queue keeps its buffer.
        let mut bytes = Self::take_spare(buf).unwrap_or_default();
        bytes.extend_from_slice(&buf.bytes);
        buf.bytes.drain(..written);
        let last_seq = buf.taken_seq;
        buf.resend.push_back(Chunk {
            bytes: Arc::new(bytes),
            skip: 0,
            first_seq,
            last_seq,
            direct: true,
        });
    }

    /// Writer side (tests): takes what there is to write, as
    /// [`take_as`](Self::take_as) does, into `out`. Returns the frames taken.
    #[cfg(test)]
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> usize {
        let mut buf = self.lock();
        let frames = buf.frames;
        let mut control = Vec::new();
        if let Take::Write { data, .. } = self.take_locked(&mut buf, &mut control) {
            if let Some(d) = data {
                out.extend_from_slice(&d);
            }
            out.extend_from_slice(&control);
        }
        buf.writer_busy = false;
        frames
    }

    fn take_locked(&self, buf: &mut Buf, control: &mut Vec<u8>) -> Take {
        control.clear();
        std::mem::swap(&mut buf.control, control);
        // The tail of a frame a sender partly wrote must follow at once,
        // whatever the window.
        let data =
            if !buf.bytes.is_empty() && (buf.resend_bytes < self.window || buf.partial_head > 0) {
                let capacity = buf.bytes.capacity().max(64 * 1024);
                let fresh = Self::take_spare(buf).unwrap_or_else(|| Vec::with_capacity(capacity));
                let bytes = Arc::new(std::mem::replace(&mut buf.bytes, fresh));
                let first_seq = buf.taken_seq + 1;
                buf.taken_seq = buf.pushed_msgs;
                buf.resend_bytes += bytes.len();
                buf.resend.push_back(Chunk {
                    bytes: bytes.clone(),
                    skip: std::mem::take(&mut buf.partial_head),
                    first_seq,
                    last_seq: buf.taken_seq,
                    direct: false,
                });
                let frames = std::mem::take(&mut buf.frames);
                self.frames.store(0, Ordering::Relaxed);
                if frames > 0 {
                    self.space.notify_waiters();
                }
                Some(bytes)
            } else {
                None
            };
        if data.is_none() && control.is_empty() {
            return Take::Idle;
        }
        buf.writer_busy = true;
        Take::Write {
            control: !control.is_empty(),
            data,
        }
    }

    /// True if `writer` is the sink of the connection now attached.
    fn owns(buf: &Buf, writer: &Sink) -> bool {
        buf.sink.as_ref().is_some_and(|s| s.same(writer))
    }

    /// For the writer of the connection whose write half is `writer`: what to
    /// write now. The ACKs waiting are swapped into `control`; the data, if
    /// the resend window has room, comes as a chunk also kept for resending.
    /// [`Take::Detached`] (and nothing taken) if that connection is no longer
    /// the attached one, so a writer that outlives its connection for a moment
    /// cannot take what the next connection should carry.
    pub(crate) fn take_as(&self, writer: &Sink, control: &mut Vec<u8>) -> Take {
        let mut buf = self.lock();
        if !Self::owns(&buf, writer) {
            return Take::Detached;
        }
        self.take_locked(&mut buf, control)
    }

    /// The peer has read every data frame up to sequence number `upto`: frees
    /// the chunks that hold nothing after it (and wakes a writer waiting for
    /// room in the window).
    pub(crate) fn acknowledged(&self, upto: u64) {
        let mut buf = self.lock();
        let was_full = buf.resend_bytes >= self.window;
        while buf.resend.front().is_some_and(|c| c.last_seq <= upto) {
            let chunk = buf.resend.pop_front().expect("checked");
            buf.resend_bytes -= chunk.bytes.len();
            if let Ok(bytes) = Arc::try_unwrap(chunk.bytes) {
                self.keep_spare(&mut buf, bytes);
            }
        }
        let now_free = buf.resend_bytes < self.window;
        drop(buf);
        if was_full && now_free {
            self.writer.notify_one();
        }
    }

    /// Keeps an emptied buffer for the next swap, if the spares stay within
    /// `window` bytes (the most the resend buffer itself may hold).
    fn keep_spare(&self, buf: &mut Buf, mut bytes: Vec<u8>) {
        let capacity = bytes.capacity();
        if buf.spare.len() < MAX_SPARES && buf.spare_bytes + capacity <= self.window {
            bytes.clear();
            buf.spare_bytes += capacity;
            buf.spare.push(bytes);
        }
    }

    /// The largest spare buffer: the queue's buffer then rarely grows (a
    /// growing buffer is a fresh allocation and a copy).
    fn take_spare(buf: &mut Buf) -> Option<Vec<u8>> {
        let largest = (0..buf.spare.len()).max_by_key(|&i| buf.spare[i].capacity())?;
        let bytes = buf.spare.swap_remove(largest);
        buf.spare_bytes -= bytes.capacity();
        Some(bytes)
    }

    /// Frees the spare buffers: the writer calls it when the connection has
    /// been idle for a tick, so an idle peer holds no memory for a burst
    /// long past.
    pub(crate) fn release_spares(&self) {
        let mut buf = self.lock();
        buf.spare = Vec::new();
        buf.spare_bytes = 0;
    }

    /// The sequence number of the last data frame handed to a socket or
    /// dropped: a new session's first frame is the one after it.
    pub(crate) fn taken_seq(&self) -> u64 {
        self.lock().taken_seq
    }

    /// Bytes written and not yet acknowledged.
    pub(crate) fn unacknowledged_bytes(&self) -> usize {
        self.lock().resend_bytes
    }

    /// For a new connection that resumes the session (before it is
    /// attached): the data frames the peer has not read (those after sequence
    /// number `upto`) go back to the front of the queue, in order, ahead of
    /// what waited. Returns how many.
    pub(crate) fn replay(&self, upto: u64) -> usize {
        let mut buf = self.lock();
        debug_assert!(buf.sink.is_none());
        // The tail of a frame a sender partly wrote: kept whole in the
        // resend buffer.
        if buf.partial_head > 0 {
            let head = std::mem::take(&mut buf.partial_head);
            buf.bytes.drain(..head);
            buf.frames = buf.frames.saturating_sub(1);
        }
        let mut again = Vec::new();
        let mut n = 0;
        for chunk in std::mem::take(&mut buf.resend) {
            let mut seq = chunk.first_seq - 1;
            frames(&chunk.bytes[chunk.skip..], |frame, tag| {
                if is_data_tag(tag) {
                    seq += 1;
                    if seq > upto {
                        again.extend_from_slice(frame);
                        n += 1;
                    }
                }
            });
        }
        buf.resend_bytes = 0;
        buf.taken_seq = upto.min(buf.taken_seq);
        buf.bytes.splice(0..0, again);
        buf.frames += n;
        self.frames.store(buf.frames, Ordering::Relaxed);
        n
    }

    /// Appends an ACK frame (`encode` writes it) for the writer `writer`, if
    /// its connection is still the attached one. Returns false otherwise.
    pub(crate) fn push_control_as(&self, writer: &Sink, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        self.push_control(|buf| Self::owns(buf, writer), encode)
    }

    /// Appends an ACK frame while a connection is attached and `still` holds
    /// (checked under the queue's lock). ACKs travel apart from the data (see
    /// the module documentation). Returns false if nothing was appended.
    pub(crate) fn push_ack(
        &self,
        still: impl FnOnce() -> bool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        self.push_control(|buf| buf.sink.is_some() && still(), encode)
    }

    fn push_control(
        &self,
        ok: impl FnOnce(&Buf) -> bool,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let mut buf = self.lock();
        if !ok(&buf) {
            return false;
        }
        let was_empty = buf.control.is_empty();
        encode(&mut buf.control);
        drop(buf);
        if was_empty {
            self.writer.notify_one();
        }
        true
    }

    /// True when nothing is queued and the writer is not in the middle of a write.
    pub(crate) fn is_flushed(&self) -> bool {
        let buf = self.lock();
        buf.bytes.is_empty() && buf.control.is_empty() && !buf.writer_busy
    }

    /// Writer side: the bytes `writer` took last are all written (ignored if
    /// its connection is no longer the attached one).
    pub(crate) fn write_done_as(&self, writer: &Sink) {
        let mut buf = self.lock();
        if Self::owns(&buf, writer) {
            buf.writer_busy = false;
        }
    }

    /// Detaches the connection (its writer stops at its next take); what is
    /// queued and unacknowledged stays, for the next connection.
    pub(crate) fn detach(&self) {
        let mut buf = self.lock();
        buf.sink = None;
        buf.writer_busy = false;
        // ACKs are of the connection: the next one starts with the handshake's.
        buf.control.clear();
    }

    /// Drops everything queued and unacknowledged and detaches the
    /// connection. Returns what was dropped unwritten and the push count at
    /// that moment.
    pub(crate) fn clear(&self) -> Cleared {
        let mut buf = self.lock();
        buf.sink = None;
        buf.writer_busy = false;
        buf.control.clear();
        let msgs = count_data(&buf.bytes[buf.partial_head..]);
        buf.bytes.clear();
        buf.bytes.shrink_to(64 * 1024);
        buf.partial_head = 0;
        buf.resend.clear();
        buf.resend_bytes = 0;
        buf.spare = Vec::new();
        buf.spare_bytes = 0;
        buf.taken_seq = buf.pushed_msgs;
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

    /// Data frames ever pushed.
    pub(crate) fn pushed_msgs(&self) -> u64 {
        self.lock().pushed_msgs
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
        let q = OutQueue::new(8, 0);
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
        let q = OutQueue::new(8, 0);
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
        let q = OutQueue::new(100, 0);
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
        let q = OutQueue::new(1 << 20, 0);
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
        assert_eq!(q.depth(), 0);
    }

    fn push_send(q: &OutQueue, n: u8) {
        q.push::<()>(false, true, |b| {
            let start = crate::frame::begin_send(b, None, joerl_core::Pid::new(1, 2, 3));
            b.push(n);
            crate::frame::finish(b, start, 1 << 20).unwrap();
            Ok(())
        })
        .ok()
        .unwrap();
    }

    /// The one-byte bodies of the SEND frames in `bytes`.
    fn bodies(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match crate::frame::parse(&bytes[at..], 1 << 20).unwrap() {
                crate::frame::Parsed::Frame(crate::frame::Frame::Send { body, .. }, used) => {
                    out.push(body[0]);
                    at += used;
                }
                crate::frame::Parsed::Frame(_, used) => at += used,
                crate::frame::Parsed::Incomplete { .. } => panic!("partial frame"),
            }
        }
        out
    }

    #[test]
    fn written_frames_are_kept_until_acknowledged_and_replayed_in_order() {
        let q = OutQueue::new(1 << 20, 0);
        for n in 1..=3 {
            push_send(&q, n);
        }
        // ACKs are of a connection: none without one.
        assert!(
            !q.push_ack(|| true, |b| crate::frame::put_ack(b, 9)),
            "no connection"
        );
        let mut out = Vec::new();
        q.take(&mut out);
        assert_eq!(bodies(&out), vec![1, 2, 3]);
        for n in 4..=5 {
            push_send(&q, n);
        }
        out.clear();
        q.take(&mut out);
        assert_eq!(bodies(&out), vec![4, 5]);
        assert!(q.unacknowledged_bytes() > 0);
        // The peer read 1 and 2: the first chunk stays (3 is in it).
        q.acknowledged(2);
        push_send(&q, 6); // queued, never written
        // Cut; the next connection replays 3, 4, 5 ahead of 6.
        assert_eq!(q.replay(2), 3);
        assert_eq!(q.unacknowledged_bytes(), 0);
        out.clear();
        q.take(&mut out);
        assert_eq!(bodies(&out), vec![3, 4, 5, 6]);
        // Numbering goes on: all six acknowledged frees everything.
        q.acknowledged(6);
        assert_eq!(q.unacknowledged_bytes(), 0);
        push_send(&q, 7);
        out.clear();
        q.take(&mut out);
        q.acknowledged(6);
        assert!(q.unacknowledged_bytes() > 0, "7 is not acknowledged");
        q.acknowledged(7);
        assert_eq!(q.unacknowledged_bytes(), 0);
    }

    #[test]
    fn acknowledged_buffers_are_reused_within_the_window_and_freed_when_idle() {
        let window = 16 * 1024 * 1024;
        let q = OutQueue::new(8 * 1024 * 1024, window);
        let big = vec![7u8; 1024 * 1024];
        let push_big = |q: &OutQueue| {
            q.push::<()>(false, true, |b| {
                let start = crate::frame::begin_send(b, None, joerl_core::Pid::new(1, 2, 3));
                b.extend_from_slice(&big);
                crate::frame::finish(b, start, 64 << 20).unwrap();
                Ok(())
            })
            .ok()
            .unwrap();
        };
        let mut out = Vec::new();
        let mut acked = 0;
        for round in 0..20 {
            // Three frames at once make a buffer larger than any one frame.
            for _ in 0..3 {
                push_big(&q);
            }
            out.clear();
            assert_eq!(q.take(&mut out), 3, "round {round}");
            acked += 3;
            q.acknowledged(acked);
            let buf = q.lock();
            assert!(
                buf.spare_bytes <= window,
                "round {round}: {}",
                buf.spare_bytes
            );
            assert_eq!(
                buf.spare_bytes,
                buf.spare.iter().map(Vec::capacity).sum::<usize>()
            );
            if round > 0 {
                // The buffer swapped in for the next frames is a spare as
                // large as the one written: it does not grow again.
                assert!(buf.bytes.capacity() >= 3 * big.len(), "round {round}");
                assert!(!buf.spare.is_empty(), "round {round}");
            }
        }
        q.release_spares();
        assert_eq!(q.lock().spare_bytes, 0);
        assert!(q.lock().spare.is_empty());
    }

    #[test]
    fn a_full_window_holds_data_back_but_not_acks() {
        let q = OutQueue::new(64 << 20, 0);
        // The window is at least 4 MiB.
        let big = vec![7u8; 5 << 20];
        q.push::<()>(false, true, |b| {
            let start = crate::frame::begin_send(b, None, joerl_core::Pid::new(1, 2, 3));
            b.extend_from_slice(&big);
            crate::frame::finish(b, start, 64 << 20).unwrap();
            Ok(())
        })
        .ok()
        .unwrap();
        let mut out = Vec::new();
        q.take(&mut out);
        assert!(out.len() > 5 << 20);
        push_send(&q, 2);
        let mut control = Vec::new();
        let mut buf = q.lock();
        buf.control
            .extend_from_slice(&[0, 0, 0, 9, crate::frame::tag::ACK]);
        buf.control.extend_from_slice(&5u64.to_be_bytes());
        buf.writer_busy = false;
        match q.take_locked(&mut buf, &mut control) {
            Take::Write {
                control: true,
                data: None,
            } => {}
            _ => panic!("only the ACK may go while the window is full"),
        }
        buf.writer_busy = false;
        drop(buf);
        q.acknowledged(1);
        out.clear();
        q.take(&mut out);
        assert_eq!(bodies(&out), vec![2]);
    }

    #[test]
    fn failed_encoder_queues_nothing() {
        let q = OutQueue::new(100, 0);
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
