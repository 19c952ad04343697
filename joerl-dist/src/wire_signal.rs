//! The wire schema of signals and exit reasons: explicit tags defined here, not
//! the serde derive of joerl-core's types, so that reordering or extending an
//! enum in joerl-core cannot change what travels between nodes. No I/O.
//!
//! ```text
//! signal  = tag:u8 ...
//! tag 1   EXIT       from:pid reason link:u8 (0 = exit/2, 1 = from a link)
//! tag 2   LINK       from:pid
//! tag 3   UNLINK     from:pid
//! tag 4   MONITOR    from:pid ref:u64
//! tag 5   DEMONITOR  from:pid ref:u64
//! tag 6   DOWN       ref:u64 pid:pid reason
//! reason  = tag:u8 [len:u32 text]   (text: UTF-8, only for tags 5 and 8)
//! tag 1 normal   2 shutdown   3 kill   4 killed   5 panic(text)
//! tag 6 noproc   7 noconnection   8 custom(text)
//! pid     = node:u32 id:u64 creation:u32   (big-endian, 16 bytes)
//! ```
//!
//! Every integer is big-endian. A text is bounded by the frame that carries it;
//! an unknown tag, a bad link byte, text that is not UTF-8, or bytes after the
//! signal are errors.

use joerl_core::{ExitReason, MonitorRef, Signal};

use crate::codec::{Reader, put_pid};
use crate::error::CodecError;

mod tag {
    pub const EXIT: u8 = 1;
    pub const LINK: u8 = 2;
    pub const UNLINK: u8 = 3;
    pub const MONITOR: u8 = 4;
    pub const DEMONITOR: u8 = 5;
    pub const DOWN: u8 = 6;
}

mod reason_tag {
    pub const NORMAL: u8 = 1;
    pub const SHUTDOWN: u8 = 2;
    pub const KILL: u8 = 3;
    pub const KILLED: u8 = 4;
    pub const PANIC: u8 = 5;
    pub const NOPROC: u8 = 6;
    pub const NOCONNECTION: u8 = 7;
    pub const CUSTOM: u8 = 8;
}

/// Appends the wire form of `signal`.
pub(crate) fn put_signal(out: &mut Vec<u8>, signal: &Signal) {
    match signal {
        Signal::Exit { from, reason, link } => {
            out.push(tag::EXIT);
            put_pid(out, *from);
            put_reason(out, reason);
            out.push(u8::from(*link));
        }
        Signal::Link { from } => {
            out.push(tag::LINK);
            put_pid(out, *from);
        }
        Signal::Unlink { from } => {
            out.push(tag::UNLINK);
            put_pid(out, *from);
        }
        Signal::Monitor { from, monitor } => {
            out.push(tag::MONITOR);
            put_pid(out, *from);
            out.extend_from_slice(&monitor.0.to_be_bytes());
        }
        Signal::Demonitor { from, monitor } => {
            out.push(tag::DEMONITOR);
            put_pid(out, *from);
            out.extend_from_slice(&monitor.0.to_be_bytes());
        }
        Signal::Down {
            monitor,
            pid,
            reason,
        } => {
            out.push(tag::DOWN);
            out.extend_from_slice(&monitor.0.to_be_bytes());
            put_pid(out, *pid);
            put_reason(out, reason);
        }
    }
}

/// Decodes a signal that must use all of `bytes`.
pub(crate) fn decode_signal(bytes: &[u8]) -> Result<Signal, CodecError> {
    let mut r = Reader::new(bytes);
    let signal = match r.u8()? {
        tag::EXIT => {
            let from = r.pid()?;
            let reason = read_reason(&mut r)?;
            let link = match r.u8()? {
                0 => false,
                1 => true,
                other => {
                    return Err(CodecError::Decode(format!(
                        "exit signal link byte {other} (expected 0 or 1)"
                    )));
                }
            };
            Signal::Exit { from, reason, link }
        }
        tag::LINK => Signal::Link { from: r.pid()? },
        tag::UNLINK => Signal::Unlink { from: r.pid()? },
        tag::MONITOR => Signal::Monitor {
            from: r.pid()?,
            monitor: MonitorRef(r.u64()?),
        },
        tag::DEMONITOR => Signal::Demonitor {
            from: r.pid()?,
            monitor: MonitorRef(r.u64()?),
        },
        tag::DOWN => Signal::Down {
            monitor: MonitorRef(r.u64()?),
            pid: r.pid()?,
            reason: read_reason(&mut r)?,
        },
        other => return Err(CodecError::Decode(format!("unknown signal tag {other}"))),
    };
    if !r.is_empty() {
        return Err(CodecError::Decode("bytes after the signal".into()));
    }
    Ok(signal)
}

/// Appends the wire form of an exit reason.
pub(crate) fn put_reason(out: &mut Vec<u8>, reason: &ExitReason) {
    let text = |out: &mut Vec<u8>, tag: u8, s: &str| {
        out.push(tag);
        // A text longer than 4 GiB cannot be in a frame anyway; cut it rather
        // than write a length that lies.
        let bytes = &s.as_bytes()[..s.len().min(u32::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    match reason {
        ExitReason::Normal => out.push(reason_tag::NORMAL),
        ExitReason::Shutdown => out.push(reason_tag::SHUTDOWN),
        ExitReason::Kill => out.push(reason_tag::KILL),
        ExitReason::Killed => out.push(reason_tag::KILLED),
        ExitReason::Panic(s) => text(out, reason_tag::PANIC, s),
        ExitReason::NoProc => out.push(reason_tag::NOPROC),
        ExitReason::NoConnection => out.push(reason_tag::NOCONNECTION),
        ExitReason::Custom(s) => text(out, reason_tag::CUSTOM, s),
    }
}

/// Reads an exit reason.
pub(crate) fn read_reason(r: &mut Reader<'_>) -> Result<ExitReason, CodecError> {
    let text = |r: &mut Reader<'_>| -> Result<String, CodecError> {
        let len = r.u32()? as usize;
        let bytes = r.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CodecError::Decode("exit reason text is not UTF-8".into()))
    };
    Ok(match r.u8()? {
        reason_tag::NORMAL => ExitReason::Normal,
        reason_tag::SHUTDOWN => ExitReason::Shutdown,
        reason_tag::KILL => ExitReason::Kill,
        reason_tag::KILLED => ExitReason::Killed,
        reason_tag::PANIC => ExitReason::Panic(text(r)?),
        reason_tag::NOPROC => ExitReason::NoProc,
        reason_tag::NOCONNECTION => ExitReason::NoConnection,
        reason_tag::CUSTOM => ExitReason::Custom(text(r)?),
        other => {
            return Err(CodecError::Decode(format!(
                "unknown exit reason tag {other}"
            )));
        }
    })
}

/// Registry hooks for sending an [`ExitReason`] as a message: the same schema,
/// not its serde derive.
pub(crate) fn encode_reason_message(
    value: &dyn std::any::Any,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let reason = value
        .downcast_ref::<ExitReason>()
        .ok_or(CodecError::TypeMismatch("joerl_core::ExitReason"))?;
    put_reason(out, reason);
    Ok(())
}

/// See [`encode_reason_message`].
pub(crate) fn decode_reason_message(
    bytes: &[u8],
    _max_memory: usize,
) -> Result<joerl_core::Message, CodecError> {
    let mut r = Reader::new(bytes);
    let reason = read_reason(&mut r)?;
    if !r.is_empty() {
        return Err(CodecError::Decode("bytes after the exit reason".into()));
    }
    Ok(Box::new(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use joerl_core::Pid;

    fn reasons() -> Vec<ExitReason> {
        vec![
            ExitReason::Normal,
            ExitReason::Shutdown,
            ExitReason::Kill,
            ExitReason::Killed,
            ExitReason::Panic("boom ✓".into()),
            ExitReason::NoProc,
            ExitReason::NoConnection,
            ExitReason::Custom(String::new()),
        ]
    }

    #[test]
    fn every_signal_and_reason_round_trips() {
        let (a, b) = (Pid::new(1, 2, 3), Pid::new(4, 5, 6));
        let mut signals = vec![
            Signal::Link { from: a },
            Signal::Unlink { from: a },
            Signal::Monitor {
                from: a,
                monitor: MonitorRef(u64::MAX),
            },
            Signal::Demonitor {
                from: b,
                monitor: MonitorRef(7),
            },
        ];
        for reason in reasons() {
            signals.push(Signal::Exit {
                from: a,
                reason: reason.clone(),
                link: true,
            });
            signals.push(Signal::Exit {
                from: b,
                reason: reason.clone(),
                link: false,
            });
            signals.push(Signal::Down {
                monitor: MonitorRef(9),
                pid: b,
                reason,
            });
        }
        for s in signals {
            let mut out = Vec::new();
            put_signal(&mut out, &s);
            assert_eq!(decode_signal(&out).unwrap(), s);
        }
    }

    #[test]
    fn the_bytes_are_the_documented_schema() {
        // A fixed vector: it must never change unless the schema does (and
        // CLUSTERING.md with it).
        let mut out = Vec::new();
        put_signal(
            &mut out,
            &Signal::Down {
                monitor: MonitorRef(0x0102),
                pid: Pid::new(0xA, 0xB, 0xC),
                reason: ExitReason::Custom("hi".into()),
            },
        );
        let mut expected = vec![6];
        expected.extend_from_slice(&0x0102u64.to_be_bytes());
        expected.extend_from_slice(&0xAu32.to_be_bytes());
        expected.extend_from_slice(&0xBu64.to_be_bytes());
        expected.extend_from_slice(&0xCu32.to_be_bytes());
        expected.extend_from_slice(&[8, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(out, expected);
        let mut out = Vec::new();
        put_signal(
            &mut out,
            &Signal::Exit {
                from: Pid::new(0, 1, 0),
                reason: ExitReason::NoConnection,
                link: true,
            },
        );
        assert_eq!(out[0], 1);
        assert_eq!(&out[17..], &[7, 1]);
    }

    #[test]
    fn malformed_signals_are_errors_not_panics() {
        assert!(decode_signal(&[]).is_err());
        assert!(decode_signal(&[99]).is_err());
        let mut exit = Vec::new();
        put_signal(
            &mut exit,
            &Signal::Exit {
                from: Pid::new(1, 1, 1),
                reason: ExitReason::Normal,
                link: false,
            },
        );
        let mut bad_link = exit.clone();
        *bad_link.last_mut().unwrap() = 2;
        assert!(decode_signal(&bad_link).is_err());
        let mut trailing = exit.clone();
        trailing.push(0);
        assert!(decode_signal(&trailing).is_err());
        for cut in 0..exit.len() {
            assert!(decode_signal(&exit[..cut]).is_err());
        }
        // A text claiming 4 GiB in a few bytes.
        let mut forged = vec![tag::DOWN];
        forged.extend_from_slice(&[0; 8 + 16]);
        forged.extend_from_slice(&[reason_tag::PANIC, 0xff, 0xff, 0xff, 0xff, b'x']);
        assert!(decode_signal(&forged).is_err());
        let mut not_utf8 = vec![tag::DOWN];
        not_utf8.extend_from_slice(&[0; 8 + 16]);
        not_utf8.extend_from_slice(&[reason_tag::CUSTOM, 0, 0, 0, 1, 0xff]);
        assert!(decode_signal(&not_utf8).is_err());
    }

    #[test]
    fn exit_reasons_as_messages_use_the_same_schema() {
        for reason in reasons() {
            let mut out = Vec::new();
            encode_reason_message(&reason, &mut out).unwrap();
            let mut direct = Vec::new();
            put_reason(&mut direct, &reason);
            assert_eq!(out, direct);
            let back = decode_reason_message(&out, 1 << 20).unwrap();
            assert_eq!(*back.downcast::<ExitReason>().unwrap(), reason);
        }
    }
}
