//! The bounded outgoing queue toward one peer.
//!
//! Senders encode frames straight into one shared buffer; the peer's writer swaps
//! the whole buffer out and writes it with one call, so many small messages
//! become one `write` (and one TCP segment train) without any per-message
//! allocation. The bound is in bytes: once `max_bytes` are waiting, user messages
//! are refused with `Full` (and `send` waits on [`OutQueue::ready`]). Signals are
//! never refused: they are few, each caused by a live actor's action, and losing
//! one would break a link or monitor.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

/// See the module documentation.
pub(crate) struct OutQueue {
    buf: Mutex<Buf>,
    frames: AtomicUsize,
    writer: Notify,
    space: Notify,
    max_bytes: usize,
}

impl OutQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        OutQueue {
            buf: Mutex::new(Buf {
                bytes: Vec::new(),
                frames: 0,
            }),
            frames: AtomicUsize::new(0),
            writer: Notify::new(),
            space: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one frame written by `encode`. With `force`, ignores the bound.
    pub(crate) fn push<E>(
        &self,
        force: bool,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), PushError<E>> {
        let mut buf = self.lock();
        if !force && buf.bytes.len() >= self.max_bytes {
            return Err(PushError::Full);
        }
        let start = buf.bytes.len();
        if let Err(e) = encode(&mut buf.bytes) {
            buf.bytes.truncate(start);
            return Err(PushError::Encode(e));
        }
        let was_empty = start == 0;
        buf.frames += 1;
        self.frames.store(buf.frames, Ordering::Relaxed);
        drop(buf);
        if was_empty {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Writer side: swaps the queued bytes into `out` (which must be empty).
    /// Returns the number of frames taken.
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> usize {
        let mut buf = self.lock();
        std::mem::swap(&mut buf.bytes, out);
        let frames = std::mem::take(&mut buf.frames);
        self.frames.store(0, Ordering::Relaxed);
        drop(buf);
        if frames > 0 {
            self.space.notify_waiters();
        }
        frames
    }

    /// Drops everything queued. Returns the number of frames dropped.
    pub(crate) fn clear(&self) -> usize {
        let mut buf = self.lock();
        buf.bytes.clear();
        buf.bytes.shrink_to(64 * 1024);
        let frames = std::mem::take(&mut buf.frames);
        self.frames.store(0, Ordering::Relaxed);
        drop(buf);
        self.space.notify_waiters();
        frames
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
        q.push::<()>(false, |b| {
            b.extend_from_slice(&[1; 8]);
            Ok(())
        })
        .ok()
        .unwrap();
        assert!(matches!(
            q.push::<()>(false, |b| {
                b.push(2);
                Ok(())
            }),
            Err(PushError::Full)
        ));
        assert!(
            q.push::<()>(true, |b| {
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
    fn failed_encoder_queues_nothing() {
        let q = OutQueue::new(100);
        let r = q.push(false, |b| {
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
