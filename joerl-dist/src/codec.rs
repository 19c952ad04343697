//! The one place bincode is used: user payloads and handshake records (signals
//! have their own schema, `wire_signal.rs`).
//!
//! Message bodies on the wire are a small envelope written by hand (so wrappers
//! such as gen_server calls cost a few bytes, not a serde round) around the
//! bincode encoding of the user's value:
//!
//! ```text
//! body    = kind:u8 ...
//! kind 0  plain       wire_id:u64 value...
//! kind 1  call        reply_to:pid tag:u64 plain
//! kind 2  call reply  tag:u64 plain
//! kind 3  cast        plain
//! pid     = node:u32 id:u64 creation:u32   (big-endian, 16 bytes)
//! ```
//!
//! Decoding never trusts a length or a tag: every read is bounds-checked and
//! every failure is a [`CodecError`], never a panic.

use std::any::Any;

use bincode::config::{self, Configuration, Limit};
use joerl_core::gen_server::{CallReply, CallRequest, CastRequest, ReplyLost};
use joerl_core::{Message, Pid};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::CodecError;
use crate::registry::tables;

/// The bincode configuration with a limit `L` on what decoding one value may
/// claim. bincode counts against it, cumulatively, the size of each primitive
/// it decodes (8 bytes for a `u64` however short its varint, 16 for a `u128`)
/// and the length of each string or byte string *before* allocating it, not the
/// bytes it reads: so a compact encoding is not punished, while a forged length
/// fails before anything larger than the limit is reserved.
type Cfg<const L: usize> = Configuration<config::BigEndian, config::Varint, Limit<L>>;

fn cfg<const L: usize>() -> Cfg<L> {
    config::standard().with_big_endian().with_limit::<L>()
}

/// The smallest memory limit [`decode_exact`] applies, whatever is configured.
pub(crate) const MIN_MEMORY_LIMIT: usize = 1 << 16;

/// The largest memory limit [`decode_exact`] applies, whatever is configured.
pub(crate) const MAX_MEMORY_LIMIT: usize = 1 << 31;

/// bincode claims at most 16 bytes per byte it reads (a one-byte varint
/// `u128`), plus string lengths it then reads; a value may therefore claim up to
/// this many times its size on the wire. More than that can only come from a
/// length that lies, and is refused.
pub(crate) const MAX_CLAIM_PER_WIRE_BYTE: usize = 64;

/// Memory limit for handshake records and other values joerl itself defines.
pub(crate) const CONTROL_MEMORY_LIMIT: usize = 1 << 20;

/// The limit bincode applies to a value of `wire_len` bytes when
/// `max_memory` is configured: the configured limit, but never more than
/// [`MAX_CLAIM_PER_WIRE_BYTE`] times the value's size on the wire (so a forged
/// length in a small message cannot make the node reserve the whole configured
/// amount), rounded down to a power of two (bincode's limit is a compile-time
/// constant, chosen from a ladder of powers of two) between
/// [`MIN_MEMORY_LIMIT`] and [`MAX_MEMORY_LIMIT`]. Rounding down keeps at least
/// half of `64 × wire_len`, still above what any honest encoding claims.
pub(crate) fn effective_memory_limit(max_memory: usize, wire_len: usize) -> usize {
    let m = max_memory
        .min(wire_len.saturating_mul(MAX_CLAIM_PER_WIRE_BYTE))
        .clamp(MIN_MEMORY_LIMIT, MAX_MEMORY_LIMIT);
    1usize << (usize::BITS - 1 - m.leading_zeros())
}

/// Appends the bincode encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, cfg::<{ 1 << 30 }>())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes one value from the front of `bytes` (more may follow) and says
/// how many bytes it used; decoding may claim at most [`CONTROL_MEMORY_LIMIT`]
/// (for small protocol items such as gossip members, never user values).
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, cfg::<CONTROL_MEMORY_LIMIT>()).map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => CodecError::MemoryLimit {
            limit: CONTROL_MEMORY_LIMIT,
        },
        other => CodecError::Decode(other.to_string()),
    })
}

/// Decodes a value that must use every byte of `bytes`, allowing decoding to
/// claim at most [`effective_memory_limit`]`(max_memory, bytes.len())`. The
/// limit bounds what a peer can make this node reserve for one value; a value
/// that fits it is decoded whatever its size on the wire.
pub(crate) fn decode_exact<T: DeserializeOwned>(
    bytes: &[u8],
    max_memory: usize,
) -> Result<T, CodecError> {
    let limit = effective_memory_limit(max_memory, bytes.len());
    macro_rules! ladder {
        ($($shift:literal)*) => {
            match limit.trailing_zeros() {
                $($shift => bincode::serde::decode_from_slice(bytes, cfg::<{ 1usize << $shift }>()),)*
                _ => bincode::serde::decode_from_slice(bytes, cfg::<MAX_MEMORY_LIMIT>()),
            }
        };
    }
    let decoded = ladder!(16 17 18 19 20 21 22 23 24 25 26 27 28 29 30);
    let (value, used) = decoded.map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => CodecError::MemoryLimit { limit },
        other => CodecError::Decode(other.to_string()),
    })?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

const KIND_PLAIN: u8 = 0;
const KIND_CALL: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_CAST: u8 = 3;
/// A call that also names its caller (KIND_CALL is still read, from nodes
/// that do not send this: its caller is taken to be its reply address).
const KIND_CALL_FROM: u8 = 4;

/// Writes a Pid as 16 big-endian bytes.
pub(crate) fn put_pid(out: &mut Vec<u8>, pid: Pid) {
    out.extend_from_slice(&pid.node().to_be_bytes());
    out.extend_from_slice(&pid.id().to_be_bytes());
    out.extend_from_slice(&pid.creation().to_be_bytes());
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn pid(&mut self) -> Result<Pid, CodecError> {
        let node = self.u32()?;
        let id = self.u64()?;
        let creation = self.u32()?;
        Ok(Pid::new(node, id, creation))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.buf
    }
}

/// Appends the body of `msg` (envelope plus bincode value) to `out`.
/// On error `out` is left as it was.
pub(crate) fn encode_message(msg: &Message, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    let result = encode_message_inner(msg, out, true);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_message_inner(msg: &Message, out: &mut Vec<u8>, outer: bool) -> Result<(), CodecError> {
    let any: &(dyn Any + Send) = &**msg;
    if outer {
        if let Some(call) = any.downcast_ref::<CallRequest>() {
            out.push(KIND_CALL_FROM);
            put_pid(out, call.caller);
            put_pid(out, call.reply_to);
            out.extend_from_slice(&call.tag.to_be_bytes());
            return encode_inner_named(&call.request, call.request_type, out);
        }
        if let Some(reply) = any.downcast_ref::<CallReply>() {
            out.push(KIND_REPLY);
            out.extend_from_slice(&reply.tag.to_be_bytes());
            return encode_inner_named(&reply.reply, reply.reply_type, out);
        }
        if let Some(cast) = any.downcast_ref::<CastRequest>() {
            out.push(KIND_CAST);
            return encode_inner_named(&cast.request, cast.request_type, out);
        }
    }
    let (entry, wire_id) = tables()
        .by_type(any.type_id())
        .ok_or(CodecError::Unregistered(any.type_id()))?;
    out.push(KIND_PLAIN);
    out.extend_from_slice(&wire_id.to_be_bytes());
    (entry.encode)(any, out)
}

/// The value inside a call, reply or cast, whose Rust type's name is known:
/// an unregistered type is named in the error.
fn encode_inner_named(
    msg: &Message,
    type_name: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match encode_message_inner(msg, out, false) {
        Err(CodecError::Unregistered(_)) => Err(CodecError::UnregisteredNamed(type_name)),
        other => other,
    }
}

/// Decodes a message body produced by [`encode_message`], letting the user's
/// value claim at most `max_memory` bytes (see [`decode_exact`]).
pub(crate) fn decode_message(body: &[u8], max_memory: usize) -> Result<Message, CodecError> {
    let mut r = Reader::new(body);
    match r.u8()? {
        KIND_PLAIN => decode_plain(r, max_memory),
        kind @ (KIND_CALL | KIND_CALL_FROM) => {
            let caller = if kind == KIND_CALL_FROM {
                Some(r.pid()?)
            } else {
                None
            };
            let reply_to = r.pid()?;
            let tag = r.u64()?;
            expect_plain(&mut r)?;
            let (request, request_type) = decode_plain_named(r, max_memory)?;
            Ok(Box::new(CallRequest {
                caller: caller.unwrap_or(reply_to),
                reply_to,
                tag,
                request,
                request_type,
            }))
        }
        KIND_REPLY => {
            let tag = r.u64()?;
            expect_plain(&mut r)?;
            let (reply, reply_type) = decode_plain_named(r, max_memory)?;
            Ok(Box::new(CallReply {
                tag,
                reply,
                reply_type,
            }))
        }
        KIND_CAST => {
            expect_plain(&mut r)?;
            let (request, request_type) = decode_plain_named(r, max_memory)?;
            Ok(Box::new(CastRequest {
                request,
                request_type,
            }))
        }
        other => Err(CodecError::UnknownKind(other)),
    }
}

/// What to do about a message body that could not be decoded (`error`), when
/// it belongs to a call, so that the caller learns at once instead of waiting
/// for its timeout. `None` if `body` is not a call with a readable header.
pub(crate) fn lost_call(body: &[u8], error: &CodecError) -> Option<LostCall> {
    let mut r = Reader::new(body);
    match r.u8().ok()? {
        KIND_REPLY => {
            let tag = r.u64().ok()?;
            Some(LostCall::Reply(Box::new(CallReply {
                tag,
                reply: Box::new(ReplyLost {
                    reason: format!("the reply could not be decoded: {error}"),
                }),
                reply_type: std::any::type_name::<ReplyLost>(),
            })))
        }
        kind @ (KIND_CALL | KIND_CALL_FROM) => {
            if kind == KIND_CALL_FROM {
                r.pid().ok()?;
            }
            let reply_to = r.pid().ok()?;
            let tag = r.u64().ok()?;
            Some(LostCall::Request {
                reply_to,
                answer: Box::new(CallReply {
                    tag,
                    reply: Box::new(ReplyLost {
                        reason: format!(
                            "the request could not be decoded on the server's node: {error}"
                        ),
                    }),
                    reply_type: std::any::type_name::<ReplyLost>(),
                }),
            })
        }
        _ => None,
    }
}

/// See [`lost_call`].
pub(crate) enum LostCall {
    /// A reply: deliver this instead, to the frame's target (the caller).
    Reply(Message),
    /// A request: send `answer` back to the caller's reply address.
    Request {
        /// Where the caller waits.
        reply_to: Pid,
        /// The reply that fails its call.
        answer: Message,
    },
}

fn expect_plain(r: &mut Reader<'_>) -> Result<(), CodecError> {
    match r.u8()? {
        KIND_PLAIN => Ok(()),
        other => Err(CodecError::UnknownKind(other)),
    }
}

fn decode_plain(r: Reader<'_>, max_memory: usize) -> Result<Message, CodecError> {
    decode_plain_named(r, max_memory).map(|(msg, _)| msg)
}

/// A plain value and its Rust type's name.
fn decode_plain_named(
    mut r: Reader<'_>,
    max_memory: usize,
) -> Result<(Message, &'static str), CodecError> {
    let wire_id = r.u64()?;
    let entry = tables()
        .by_wire(wire_id)
        .ok_or(CodecError::UnknownWireId(wire_id))?;
    Ok(((entry.decode)(r.rest(), max_memory)?, (entry.type_name)()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_wrapped_messages_round_trip() {
        let mut buf = Vec::new();
        encode_message(&(Box::new("hi".to_string()) as Message), &mut buf).unwrap();
        let back = decode_message(&buf, 1 << 20).unwrap();
        assert_eq!(*back.downcast::<String>().unwrap(), "hi");

        let call: Message = Box::new(CallRequest {
            caller: Pid::new(1, 7, 3),
            reply_to: Pid::new(1, 2, 3),
            tag: 99,
            request: Box::new(42u64),
            request_type: "u64",
        });
        buf.clear();
        encode_message(&call, &mut buf).unwrap();
        let back = decode_message(&buf, 1 << 20)
            .unwrap()
            .downcast::<CallRequest>()
            .unwrap();
        assert_eq!(
            (back.caller, back.reply_to, back.tag),
            (Pid::new(1, 7, 3), Pid::new(1, 2, 3), 99)
        );
        assert_eq!(*back.request.downcast::<u64>().unwrap(), 42);

        let reply: Message = Box::new(CallReply {
            tag: 5,
            reply: Box::new(true),
            reply_type: "bool",
        });
        buf.clear();
        encode_message(&reply, &mut buf).unwrap();
        let back = decode_message(&buf, 1 << 20)
            .unwrap()
            .downcast::<CallReply>()
            .unwrap();
        assert_eq!(back.tag, 5);
        assert!(*back.reply.downcast::<bool>().unwrap());
    }

    #[test]
    fn an_unregistered_request_or_reply_is_named_by_its_type() {
        struct NotRegistered;
        let call: Message = Box::new(CallRequest {
            caller: Pid::new(1, 7, 3),
            reply_to: Pid::new(1, 2, 3),
            tag: 1,
            request: Box::new(NotRegistered),
            request_type: "my::NotRegistered",
        });
        let mut buf = Vec::new();
        let err = encode_message(&call, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::UnregisteredNamed("my::NotRegistered")
        ));
        assert!(err.to_string().contains("remote_server!"), "{err}");
        assert!(buf.is_empty());
    }

    #[test]
    fn unregistered_type_is_an_error_and_leaves_buffer_unchanged() {
        struct NotRegistered;
        let mut buf = vec![1, 2, 3];
        let err = encode_message(&(Box::new(NotRegistered) as Message), &mut buf).unwrap_err();
        assert!(matches!(err, CodecError::Unregistered(_)));
        assert_eq!(buf, vec![1, 2, 3]);
    }

    #[test]
    fn the_limit_follows_the_configuration_and_the_wire_size() {
        // Rounded down to a power of two.
        assert_eq!(effective_memory_limit(100 << 20, 1 << 30), 64 << 20);
        // A small value may claim 64 times its size, at least 64 KiB.
        assert_eq!(effective_memory_limit(256 << 20, 10), 64 * 1024);
        assert_eq!(effective_memory_limit(256 << 20, 100_000), 4 << 20);
        // Never above 2 GiB.
        assert_eq!(effective_memory_limit(usize::MAX, usize::MAX), 1 << 31);
        // Compact encodings claim well under the limit: 10,000 one-byte varints.
        let mut buf = Vec::new();
        encode_into(&vec![1u64; 10_000], &mut buf).unwrap();
        let v: Vec<u64> = decode_exact(&buf, 1 << 30).unwrap();
        assert_eq!(v.len(), 10_000);
        let mut buf = Vec::new();
        encode_into(&vec![1u128; 10_000], &mut buf).unwrap();
        let v: Vec<u128> = decode_exact(&buf, 1 << 30).unwrap();
        assert_eq!(v.len(), 10_000);
    }

    #[test]
    fn forged_lengths_are_refused_without_allocating_them() {
        // A String claiming about 1 GiB in a 10-byte input.
        let mut forged = vec![0xfd]; // varint marker for a u64 length
        forged.extend_from_slice(&(1u64 << 30).to_be_bytes());
        forged.push(b'a');
        let r: Result<String, _> = decode_exact(&forged, 1 << 20);
        assert!(r.is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over many inputs, including valid
        // prefixes with corrupted tails.
        let mut valid = Vec::new();
        encode_message(&(Box::new(vec![7u8; 40]) as Message), &mut valid).unwrap();
        let mut state: u64 = 0x1234_5678;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut input: Vec<u8> = if i % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.clone();
                let at = (next() as usize) % v.len();
                v[at] ^= (next() as u8) | 1;
                v.truncate((next() as usize) % (v.len() + 1));
                v
            };
            if i % 7 == 0 && !input.is_empty() {
                input[0] = (next() % 4) as u8;
            }
            let _ = decode_message(&input, 1 << 20);
        }
    }
}
