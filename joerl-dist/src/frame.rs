//! Frames of a node-to-node connection: parsing and encoding, no I/O.
//!
//! ```text
//! frame  = length:u32 (big-endian, bytes after the length) tag:u8 content
//! tag 1  HANDSHAKE  version:u16 record (bincode; only before the connection is up)
//! tag 2  TICK       (empty; keeps an idle connection alive)
//! tag 3  SEND       from:pid to:pid body        (from = all zero: no sender)
//! tag 4  SEND_NAMED from:pid name_len:u8 name body
//! tag 5  SIGNAL     to:pid signal (the schema in `wire_signal.rs`)
//! tag 6  GOODBYE    received:u64 (the peer is shutting down; the connection closes next)
//! tag 7  ACK        received:u64 (also serves as the idle tick)
//! tag 8  (unused: RESUME in protocol 2; the count now ends the handshake)
//! tag 9  MONITOR_NAMED from:pid monitor:u64 name_len:u8 name
//!        (a monitor on whatever is registered as `name` on the receiving node)
//! tags 10-31 are reserved for later control frames (remote spawn, group membership)
//! ```
//!
//! SEND, SEND_NAMED, SIGNAL and MONITOR_NAMED are *data frames*: numbered
//! in order (1, 2, ...) by the sender for each pair of incarnations (a
//! session), acknowledged, and replayed after a cut (see `outqueue.rs`).
//! `received` is the number of data frames the sending side has read from the
//! other side's current incarnation, over every connection between the two
//! incarnations. It frees the other side's resend buffer, and tells it exactly
//! how many of the frames it wrote never arrived: see `accounting.rs`.
//! GOODBYE may also be empty (then it carries no count).
//!
//! ```text
//! ```
//!
//! The length is checked against the configured maximum before anything is
//! allocated for the frame, and a frame is only decoded once all of it is in the
//! buffer. `body` is a message body as written by [`crate::codec`].

use joerl_core::{Pid, Signal};

use crate::codec::{Reader, put_pid};
use crate::error::{CodecError, FrameError};

/// The frame tags.
pub(crate) mod tag {
    pub const HANDSHAKE: u8 = 1;
    pub const TICK: u8 = 2;
    pub const SEND: u8 = 3;
    pub const SEND_NAMED: u8 = 4;
    pub const SIGNAL: u8 = 5;
    pub const GOODBYE: u8 = 6;
    pub const ACK: u8 = 7;
    pub const MONITOR_NAMED: u8 = 9;
}

/// Bytes of the length prefix.
pub(crate) const LEN_BYTES: usize = 4;

const NO_PID: Pid = Pid::new(0, 0, 0);

/// A decoded frame, borrowing from the read buffer.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    Handshake {
        version: u16,
        record: &'a [u8],
    },
    Tick,
    Send {
        from: Option<Pid>,
        to: Pid,
        body: &'a [u8],
    },
    SendNamed {
        from: Option<Pid>,
        name: &'a str,
        body: &'a [u8],
    },
    Signal {
        to: Pid,
        signal: Signal,
    },
    /// The peer is shutting down, having read this many of our messages (`None`:
    /// not said).
    Goodbye(Option<u64>),
    /// The peer has read this many of our messages.
    Ack(u64),
    /// `from` monitors (under `monitor`) the actor registered as `name` here.
    MonitorNamed {
        from: Pid,
        monitor: u64,
        name: &'a str,
    },
}

impl Frame<'_> {
    /// True for a data frame (the frames counted as "received").
    pub(crate) fn is_data(&self) -> bool {
        matches!(
            self,
            Frame::Send { .. }
                | Frame::SendNamed { .. }
                | Frame::Signal { .. }
                | Frame::MonitorNamed { .. }
        )
    }
}

/// Parses one frame from the front of `buf`.
///
/// `Ok(Parsed::Incomplete { needed })`: not all of the frame is here yet; `needed`
/// tells how many bytes the whole frame takes, so the caller can reserve once.
/// `Ok(Parsed::Frame(frame, used))`: a frame and the number of bytes it took.
pub(crate) fn parse(buf: &[u8], max_frame: usize) -> Result<Parsed<'_>, FrameError> {
    if buf.len() < LEN_BYTES {
        return Ok(Parsed::Incomplete { needed: LEN_BYTES });
    }
    let len = u32::from_be_bytes(buf[..LEN_BYTES].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    let total = LEN_BYTES + len;
    if buf.len() < total {
        return Ok(Parsed::Incomplete { needed: total });
    }
    let frame = decode_body(&buf[LEN_BYTES..total])?;
    Ok(Parsed::Frame(frame, total))
}

/// The result of [`parse`].
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    Incomplete { needed: usize },
    Frame(Frame<'a>, usize),
}

fn opt_pid(pid: Pid) -> Option<Pid> {
    if pid == NO_PID { None } else { Some(pid) }
}

fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut r = Reader::new(body);
    let t = r.u8()?;
    let frame = match t {
        tag::HANDSHAKE => {
            let version = r.u16()?;
            Frame::Handshake {
                version,
                record: r.rest(),
            }
        }
        tag::TICK => {
            expect_end(r)?;
            Frame::Tick
        }
        tag::SEND => {
            let from = opt_pid(r.pid()?);
            let to = r.pid()?;
            Frame::Send {
                from,
                to,
                body: r.rest(),
            }
        }
        tag::SEND_NAMED => {
            let from = opt_pid(r.pid()?);
            let len = r.u8()? as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::BadName)?;
            Frame::SendNamed {
                from,
                name,
                body: r.rest(),
            }
        }
        tag::SIGNAL => {
            let to = r.pid()?;
            let signal = crate::wire_signal::decode_signal(r.rest())?;
            Frame::Signal { to, signal }
        }
        tag::GOODBYE => {
            if r.is_empty() {
                Frame::Goodbye(None)
            } else {
                let n = r.u64()?;
                expect_end(r)?;
                Frame::Goodbye(Some(n))
            }
        }
        tag::ACK => {
            let n = r.u64()?;
            expect_end(r)?;
            Frame::Ack(n)
        }
        tag::MONITOR_NAMED => {
            let from = r.pid()?;
            let monitor = r.u64()?;
            let len = r.u8()? as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::BadName)?;
            expect_end(r)?;
            Frame::MonitorNamed {
                from,
                monitor,
                name,
            }
        }
        other => return Err(FrameError::UnknownTag(other)),
    };
    Ok(frame)
}

fn expect_end(r: Reader<'_>) -> Result<(), FrameError> {
    if r.rest().is_empty() {
        Ok(())
    } else {
        Err(FrameError::Codec(CodecError::Decode(
            "unexpected bytes after the frame".into(),
        )))
    }
}

/// Starts a frame in `out`: reserves the length and writes the tag. Returns the
/// frame's start, to pass to [`finish`].
pub(crate) fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, tag]);
    start
}

/// Writes the length of the frame started at `start`. Fails (and removes the
/// frame) if it exceeds `max_frame`.
pub(crate) fn finish(out: &mut Vec<u8>, start: usize, max_frame: usize) -> Result<(), FrameError> {
    let len = out.len() - start - LEN_BYTES;
    if len > max_frame || len > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    out[start..start + LEN_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Appends a SEND frame header (the caller appends the body, then calls [`finish`]).
pub(crate) fn begin_send(out: &mut Vec<u8>, from: Option<Pid>, to: Pid) -> usize {
    let start = begin(out, tag::SEND);
    put_pid(out, from.unwrap_or(NO_PID));
    put_pid(out, to);
    start
}

/// Appends a SEND_NAMED frame header. Names longer than 255 bytes are refused.
pub(crate) fn begin_send_named(
    out: &mut Vec<u8>,
    from: Option<Pid>,
    name: &str,
) -> Result<usize, FrameError> {
    if name.len() > u8::MAX as usize {
        return Err(FrameError::BadName);
    }
    let start = begin(out, tag::SEND_NAMED);
    put_pid(out, from.unwrap_or(NO_PID));
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(start)
}

/// Appends a whole SIGNAL frame.
pub(crate) fn put_signal(
    out: &mut Vec<u8>,
    to: Pid,
    signal: &Signal,
    max_frame: usize,
) -> Result<(), FrameError> {
    let start = begin(out, tag::SIGNAL);
    put_pid(out, to);
    crate::wire_signal::put_signal(out, signal);
    finish(out, start, max_frame)
}

/// Appends a whole MONITOR_NAMED frame. Names longer than 255 bytes are refused.
pub(crate) fn put_monitor_named(
    out: &mut Vec<u8>,
    from: Pid,
    monitor: u64,
    name: &str,
) -> Result<(), FrameError> {
    if name.len() > u8::MAX as usize {
        return Err(FrameError::BadName);
    }
    let start = begin(out, tag::MONITOR_NAMED);
    put_pid(out, from);
    out.extend_from_slice(&monitor.to_be_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    finish(out, start, usize::MAX)
}

/// Appends a TICK frame (joerl sends ACK frames as ticks; TICK is still read).
#[cfg(test)]
pub(crate) fn put_tick(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 1, tag::TICK]);
}

/// Appends a GOODBYE frame saying `received` messages were read.
pub(crate) fn put_goodbye(out: &mut Vec<u8>, received: u64) {
    put_count(out, tag::GOODBYE, received);
}

/// Appends an ACK frame.
pub(crate) fn put_ack(out: &mut Vec<u8>, received: u64) {
    put_count(out, tag::ACK, received);
}

fn put_count(out: &mut Vec<u8>, tag: u8, n: u64) {
    out.extend_from_slice(&[0, 0, 0, 9, tag]);
    out.extend_from_slice(&n.to_be_bytes());
}

/// Appends a HANDSHAKE frame carrying an already encoded record.
pub(crate) fn put_handshake(
    out: &mut Vec<u8>,
    version: u16,
    record: &[u8],
    max_frame: usize,
) -> Result<(), FrameError> {
    let start = begin(out, tag::HANDSHAKE);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(record);
    finish(out, start, max_frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use joerl_core::ExitReason;

    const MAX: usize = 1 << 20;

    fn one(buf: &[u8]) -> (Frame<'_>, usize) {
        match parse(buf, MAX).unwrap() {
            Parsed::Frame(f, n) => (f, n),
            Parsed::Incomplete { .. } => panic!("incomplete"),
        }
    }

    #[test]
    fn send_frame_round_trip() {
        let mut out = Vec::new();
        let start = begin_send(&mut out, Some(Pid::new(1, 2, 3)), Pid::new(4, 5, 6));
        out.extend_from_slice(b"body");
        finish(&mut out, start, MAX).unwrap();
        let (f, used) = one(&out);
        assert_eq!(used, out.len());
        match f {
            Frame::Send { from, to, body } => {
                assert_eq!(from, Some(Pid::new(1, 2, 3)));
                assert_eq!(to, Pid::new(4, 5, 6));
                assert_eq!(body, b"body");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn named_signal_tick_goodbye_round_trip() {
        let mut out = Vec::new();
        let s = begin_send_named(&mut out, None, "sink").unwrap();
        out.push(9);
        finish(&mut out, s, MAX).unwrap();
        let sig = Signal::Exit {
            from: Pid::new(1, 1, 1),
            reason: ExitReason::NoConnection,
            link: true,
        };
        put_signal(&mut out, Pid::new(2, 2, 2), &sig, MAX).unwrap();
        put_tick(&mut out);
        put_goodbye(&mut out, 42);
        put_ack(&mut out, 7);
        out.extend_from_slice(&[0, 0, 0, 1, tag::GOODBYE]);
        let (f, n1) = one(&out);
        assert!(matches!(
            f,
            Frame::SendNamed {
                from: None,
                name: "sink",
                body: [9]
            }
        ));
        let (f, n2) = one(&out[n1..]);
        match f {
            Frame::Signal { to, signal } => {
                assert_eq!(to, Pid::new(2, 2, 2));
                assert_eq!(signal, sig);
            }
            other => panic!("{other:?}"),
        }
        let (f, n3) = one(&out[n1 + n2..]);
        assert!(matches!(f, Frame::Tick));
        let mut at = n1 + n2 + n3;
        let mut next = || {
            let (f, n) = one(&out[at..]);
            at += n;
            f
        };
        assert!(matches!(next(), Frame::Goodbye(Some(42))));
        assert!(matches!(next(), Frame::Ack(7)));
        assert!(matches!(next(), Frame::Goodbye(None)));
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        let mut out = Vec::new();
        put_tick(&mut out);
        for cut in 0..out.len() {
            assert!(matches!(
                parse(&out[..cut], MAX).unwrap(),
                Parsed::Incomplete { .. }
            ));
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let huge = [0xff, 0xff, 0xff, 0xff, 3];
        assert!(matches!(
            parse(&huge, MAX),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(parse(&[0, 0, 0, 0], MAX), Err(FrameError::Empty)));
        assert!(matches!(
            parse(&[0, 0, 0, 1, 99], MAX),
            Err(FrameError::UnknownTag(99))
        ));
        assert!(matches!(
            parse(&[0, 0, 0, 3, tag::SEND, 1, 2], MAX),
            Err(FrameError::Codec(_))
        ));
        let mut out = Vec::new();
        let s = begin(&mut out, tag::SEND);
        out.extend_from_slice(&[0u8; 100]);
        assert!(matches!(
            finish(&mut out, s, 50),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty(), "a refused frame is removed");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 48) as usize;
            let mut buf = Vec::with_capacity(len + 4);
            buf.extend_from_slice(&(len as u32).to_be_bytes());
            let mut s = state;
            for _ in 0..len {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                buf.push((s >> 33) as u8 % 8);
            }
            let _ = parse(&buf, MAX);
        }
    }
}
