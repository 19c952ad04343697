//! Distribution messages on an Erlang connection once the handshake is done,
//! with no I/O: reading the frames a peer sends (ticks, pass-through
//! messages, messages with a distribution header and its atom cache,
//! fragments) and writing this node's.
//!
//! ```text
//! frame   = length:u32 body                   length 0: a tick
//! body    = 112 control:etf message:etf       pass-through (each term with the 131 magic)
//!         | 131 68 header control message     distribution header (terms without the magic)
//!         | 131 69 seq:u64 frag:u64 header data   first fragment (frag counts down to 1)
//!         | 131 70 seq:u64 frag:u64 data          a further fragment
//! header  = n:u8 [flags:(n/2+1 bytes) refs]   atom cache references of this message
//! ```
//!
//! A message decodes to at most about `max_message_memory` bytes of terms.
//! This node writes every message with a distribution header that has no
//! atom cache references (an Erlang node that negotiated fragments or the
//! atom cache refuses pass-through messages; the atom cache is read, never
//! filled by this node) and never fragments. What a peer sends is bounded: a message, fragments
//! put together, at most `max_message` bytes; at most [`MAX_ASSEMBLIES`]
//! fragmented messages in progress; every length checked before anything is
//! allocated for it.

use std::collections::HashMap;

use super::control::{Control, ControlError};
use super::etf::{self, DecodeLimits, DecodeOptions, EtfError};
use super::term::{Atom, Term};

/// The pass-through tag (no distribution header).
pub const PASS_THROUGH: u8 = 112;
/// Distribution header.
const DIST_HEADER: u8 = 68;
/// First fragment.
const DIST_FRAG_HEADER: u8 = 69;
/// Further fragment.
const DIST_FRAG_CONT: u8 = 70;
/// Entries of a connection's atom cache (8 segments of 256).
const ATOM_CACHE_SIZE: usize = 2048;
/// Fragmented messages that may be in progress at once on one connection.
pub const MAX_ASSEMBLIES: usize = 64;

/// Why a frame from an Erlang peer is refused. Each closes the connection
/// (the stream can no longer be trusted), with this as the logged reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A term did not decode.
    #[error("malformed term: {0}")]
    Term(#[from] EtfError),
    /// The control message is not one.
    #[error("malformed control message: {0}")]
    Control(#[from] ControlError),
    /// The distribution header is malformed.
    #[error("malformed distribution header: {0}")]
    Header(String),
    /// A message (or fragments put together) exceeds the limit.
    #[error("message of {len} bytes exceeds the limit of {max} (DistConfig::max_frame_size)")]
    TooLarge {
        /// The size reached.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes follow the message's last term.
    #[error("{0} bytes follow the message")]
    Trailing(usize),
}

/// One distribution message from the peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The control message.
    pub control: Control,
    /// The message (or exit reason) that follows it, if the control message has one.
    pub payload: Option<Term>,
}

/// A fragmented message being put together.
struct Assembly {
    /// The fragment id expected next (they count down to 1).
    next: u64,
    /// The atom cache references of the message (from its first fragment).
    refs: Vec<Option<Atom>>,
    data: Vec<u8>,
}

/// Reads the frames of one connection; holds its atom cache and the
/// fragments in progress.
pub struct Reader {
    cache: Vec<Option<Atom>>,
    assemblies: HashMap<u64, Assembly>,
    max_message: usize,
    limits: DecodeLimits,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("assemblies", &self.assemblies.len())
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

fn header_err(what: impl Into<String>) -> WireError {
    WireError::Header(what.into())
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], WireError> {
    let end = at
        .checked_add(n)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| header_err(format!("truncated {what}")))?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

impl Reader {
    /// A reader that accepts messages of at most `max_message` bytes (one
    /// message, and all fragments in progress together) and decodes terms
    /// that take at most about `max_memory` bytes (counted as terms of
    /// `size_of::<Term>()` each).
    pub fn new(max_message: usize, max_memory: usize) -> Self {
        Reader {
            cache: vec![None; ATOM_CACHE_SIZE],
            assemblies: HashMap::new(),
            max_message,
            limits: DecodeLimits {
                max_terms: (max_memory / std::mem::size_of::<Term>()).max(1024),
                ..DecodeLimits::default()
            },
        }
    }

    /// Bytes held by the fragmented messages in progress.
    fn assembled_bytes(&self) -> usize {
        self.assemblies.values().map(|a| a.data.len()).sum()
    }

    /// Fragmented messages in progress.
    pub fn assemblies(&self) -> usize {
        self.assemblies.len()
    }

    /// Reads one frame body (what follows its length). `Ok(None)`: a tick, or
    /// a fragment of a message not complete yet.
    pub fn frame(&mut self, body: &[u8]) -> Result<Option<Incoming>, WireError> {
        if body.is_empty() {
            return Ok(None);
        }
        if body.len() > self.max_message {
            return Err(WireError::TooLarge {
                len: body.len(),
                max: self.max_message,
            });
        }
        if body[0] == PASS_THROUGH {
            return self.decode(&body[1..], &[], true).map(Some);
        }
        if body.len() < 2 || body[0] != etf::VERSION_MAGIC {
            return Err(header_err(format!(
                "a message starts with {:#04x}, not 112 or 131",
                body[0]
            )));
        }
        let mut at = 2;
        match body[1] {
            DIST_HEADER => {
                let refs = self.header(body, &mut at)?;
                self.decode(&body[at..], &refs, false).map(Some)
            }
            DIST_FRAG_HEADER => {
                let seq = be_u64(take(body, &mut at, 8, "sequence id")?);
                let frag = be_u64(take(body, &mut at, 8, "fragment id")?);
                let refs = self.header(body, &mut at)?;
                if frag == 0 {
                    return Err(header_err("fragment id 0"));
                }
                if frag == 1 {
                    return self.decode(&body[at..], &refs, false).map(Some);
                }
                if self.assemblies.contains_key(&seq) {
                    return Err(header_err(format!("sequence {seq} started twice")));
                }
                let held = self.assembled_bytes() + (body.len() - at);
                if held > self.max_message {
                    return Err(WireError::TooLarge {
                        len: held,
                        max: self.max_message,
                    });
                }
                if self.assemblies.len() >= MAX_ASSEMBLIES {
                    return Err(header_err(format!(
                        "more than {MAX_ASSEMBLIES} fragmented messages in progress"
                    )));
                }
                self.assemblies.insert(
                    seq,
                    Assembly {
                        next: frag - 1,
                        refs,
                        data: body[at..].to_vec(),
                    },
                );
                Ok(None)
            }
            DIST_FRAG_CONT => {
                let seq = be_u64(take(body, &mut at, 8, "sequence id")?);
                let frag = be_u64(take(body, &mut at, 8, "fragment id")?);
                let held = self.assembled_bytes() + (body.len() - at);
                let asm = self
                    .assemblies
                    .get_mut(&seq)
                    .ok_or_else(|| header_err(format!("fragment of unknown sequence {seq}")))?;
                if frag != asm.next {
                    return Err(header_err(format!(
                        "fragment {frag} of sequence {seq}, expected {}",
                        asm.next
                    )));
                }
                if held > self.max_message {
                    return Err(WireError::TooLarge {
                        len: held,
                        max: self.max_message,
                    });
                }
                asm.data.extend_from_slice(&body[at..]);
                if frag > 1 {
                    asm.next = frag - 1;
                    return Ok(None);
                }
                let asm = self.assemblies.remove(&seq).expect("present");
                self.decode(&asm.data, &asm.refs, false).map(Some)
            }
            other => Err(header_err(format!("unknown header type {other}"))),
        }
    }

    /// Reads a header's atom cache references, updating the connection's cache.
    fn header(&mut self, b: &[u8], at: &mut usize) -> Result<Vec<Option<Atom>>, WireError> {
        let n = usize::from(take(b, at, 1, "reference count")?[0]);
        if n == 0 {
            return Ok(Vec::new());
        }
        let flags = take(b, at, n / 2 + 1, "header flags")?.to_vec();
        let nibble = |i: usize| (flags[i / 2] >> (4 * (i % 2))) & 0x0f;
        let long_atoms = nibble(n) & 0x01 != 0;
        let mut refs = Vec::with_capacity(n);
        for i in 0..n {
            let f = nibble(i);
            let segment = usize::from(f & 0x07);
            let internal = usize::from(take(b, at, 1, "cache index")?[0]);
            let index = segment * 256 + internal;
            if f & 0x08 != 0 {
                let len = if long_atoms {
                    let l = take(b, at, 2, "atom length")?;
                    usize::from(u16::from_be_bytes([l[0], l[1]]))
                } else {
                    usize::from(take(b, at, 1, "atom length")?[0])
                };
                let text = take(b, at, len, "atom text")?;
                let text = std::str::from_utf8(text)
                    .map_err(|_| header_err("an atom cache entry is not UTF-8"))?;
                let atom = Atom::new(text).map_err(|e| header_err(e.to_string()))?;
                self.cache[index] = Some(atom);
            }
            match &self.cache[index] {
                Some(a) => refs.push(Some(a.clone())),
                None => return Err(header_err(format!("atom cache entry {index} is empty"))),
            }
        }
        Ok(refs)
    }

    fn decode(
        &self,
        bytes: &[u8],
        refs: &[Option<Atom>],
        magic: bool,
    ) -> Result<Incoming, WireError> {
        let opts = DecodeOptions {
            limits: self.limits.clone(),
            magic,
            atom_cache: Some(refs),
        };
        let (ctl, used) = etf::decode_with(bytes, &opts)?;
        let control = Control::from_term(&ctl)?;
        let rest = &bytes[used..];
        let payload = if control.has_payload() {
            let (msg, used) = etf::decode_with(rest, &opts)?;
            if used != rest.len() {
                return Err(WireError::Trailing(rest.len() - used));
            }
            Some(msg)
        } else {
            if !rest.is_empty() {
                return Err(WireError::Trailing(rest.len()));
            }
            None
        };
        Ok(Incoming { control, payload })
    }
}

/// Appends one message to `out`: length, a distribution header without
/// atom cache references (`131 68 0`), the control message and the payload
/// (without the magic). Erlang nodes that negotiated fragments refuse
/// pass-through messages. `control` must have a form ([`Control::to_term`]).
pub fn put_message(out: &mut Vec<u8>, control: &Control, payload: Option<&Term>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, etf::VERSION_MAGIC, DIST_HEADER, 0]);
    let ctl = control
        .to_term()
        .expect("only control messages with a form are written");
    etf::encode_into(&ctl, out);
    if let Some(p) = payload {
        etf::encode_into(p, out);
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a tick (an empty frame).
pub fn put_tick(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erlang::term::ErlPid;

    fn epid(n: u32) -> ErlPid {
        ErlPid {
            node: Atom::new("e@h").unwrap(),
            id: n,
            serial: 0,
            creation: 3,
        }
    }

    fn frame_body(buf: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        &buf[4..]
    }

    #[test]
    fn a_message_round_trips_and_a_tick_is_empty() {
        let ctl = Control::Send {
            from: Some(epid(1)),
            to: epid(2),
        };
        let msg = Term::tuple(vec![Term::atom("msg"), Term::Int(7)]);
        let mut buf = Vec::new();
        put_message(&mut buf, &ctl, Some(&msg));
        let mut r = Reader::new(1 << 20, 1 << 30);
        let got = r.frame(frame_body(&buf)).unwrap().unwrap();
        assert_eq!(got.control, ctl);
        assert_eq!(got.payload, Some(msg.clone()));
        // The pass-through form (each term with its magic) reads the same.
        let mut pass = vec![PASS_THROUGH];
        pass.extend_from_slice(&etf::encode(&ctl.to_term().unwrap()));
        pass.extend_from_slice(&etf::encode(&msg));
        let got = r.frame(&pass).unwrap().unwrap();
        assert_eq!(got.control, ctl);
        assert_eq!(got.payload, Some(msg));
        let mut tick = Vec::new();
        put_tick(&mut tick);
        assert_eq!(tick, [0, 0, 0, 0]);
        assert_eq!(r.frame(&[]).unwrap(), None);
    }

    /// A message with a distribution header: `{6, From, '', echo}` whose
    /// atom `echo` comes through cache reference 0 (a new entry in segment 1).
    fn header_message(new_entry: bool) -> Vec<u8> {
        let mut b = vec![131, DIST_HEADER, 1];
        // Flags: ref 0 = new entry (0x8) | segment 1; then the long-atoms nibble (0).
        b.push(if new_entry { 0x09 } else { 0x01 });
        b.push(5); // internal segment index: cache entry 256 + 5
        if new_entry {
            b.push(4);
            b.extend_from_slice(b"echo");
        }
        // The control tuple without the magic, with ATOM_CACHE_REF 0 for the name.
        b.extend_from_slice(&[etf::SMALL_TUPLE_EXT, 4, etf::SMALL_INTEGER_EXT, 6]);
        let mut from = Vec::new();
        etf::encode_into(&Term::Pid(epid(1)), &mut from);
        b.extend_from_slice(&from);
        b.extend_from_slice(&[etf::SMALL_ATOM_UTF8_EXT, 0]);
        b.extend_from_slice(&[etf::ATOM_CACHE_REF, 0]);
        // The message: ATOM_CACHE_REF 0 again.
        b.extend_from_slice(&[etf::ATOM_CACHE_REF, 0]);
        b
    }

    #[test]
    fn a_distribution_header_fills_and_uses_the_atom_cache() {
        let mut r = Reader::new(1 << 20, 1 << 30);
        // A reference to an entry nobody filled is refused.
        assert!(r.frame(&header_message(false)).is_err());
        let got = r.frame(&header_message(true)).unwrap().unwrap();
        assert_eq!(
            got.control,
            Control::RegSend {
                from: epid(1),
                to: Atom::new("echo").unwrap()
            }
        );
        assert_eq!(got.payload, Some(Term::atom("echo")));
        // The entry stays for later messages of the connection.
        assert!(r.frame(&header_message(false)).unwrap().is_some());
    }

    #[test]
    fn fragments_are_put_together_in_order_and_bounded() {
        let ctl = Control::Send {
            from: Some(epid(1)),
            to: epid(2),
        };
        let msg = Term::binary(vec![7u8; 1000]);
        let mut whole = Vec::new();
        etf::encode_into(&ctl.to_term().unwrap(), &mut whole);
        etf::encode_into(&msg, &mut whole);
        let parts: Vec<&[u8]> = whole.chunks(300).collect();
        let n = parts.len() as u64;
        let frag = |i: usize| -> Vec<u8> {
            let id = n - i as u64;
            let mut b = vec![
                131,
                if i == 0 {
                    DIST_FRAG_HEADER
                } else {
                    DIST_FRAG_CONT
                },
            ];
            b.extend_from_slice(&9u64.to_be_bytes());
            b.extend_from_slice(&id.to_be_bytes());
            if i == 0 {
                b.push(0); // no atom cache references
            }
            b.extend_from_slice(parts[i]);
            b
        };
        let mut r = Reader::new(1 << 20, 1 << 30);
        for i in 0..parts.len() - 1 {
            assert_eq!(r.frame(&frag(i)).unwrap(), None);
        }
        assert_eq!(r.assemblies(), 1);
        let got = r.frame(&frag(parts.len() - 1)).unwrap().unwrap();
        assert_eq!(got.payload, Some(msg));
        assert_eq!(r.assemblies(), 0);

        // Out of order, unknown sequence, over the size limit.
        let mut r = Reader::new(1 << 20, 1 << 30);
        r.frame(&frag(0)).unwrap();
        assert!(r.frame(&frag(2)).is_err());
        let mut r = Reader::new(1 << 20, 1 << 30);
        assert!(r.frame(&frag(1)).is_err());
        let mut r = Reader::new(700, 1 << 30);
        r.frame(&frag(0)).unwrap();
        r.frame(&frag(1)).unwrap();
        assert!(matches!(r.frame(&frag(2)), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn malformed_frames_are_refused_never_panic() {
        let ctl = Control::Send {
            from: Some(epid(1)),
            to: epid(2),
        };
        let mut buf = Vec::new();
        put_message(&mut buf, &ctl, Some(&Term::atom("x")));
        let body = frame_body(&buf).to_vec();
        for cut in 1..body.len() {
            let mut r = Reader::new(1 << 20, 1 << 30);
            assert!(r.frame(&body[..cut]).is_err(), "prefix {cut}");
        }
        let mut extra = body.clone();
        extra.push(0);
        assert!(matches!(
            Reader::new(1 << 20, 1 << 30).frame(&extra),
            Err(WireError::Trailing(1))
        ));
        for junk in [&[1u8][..], &[131], &[131, 99], &[131, 68, 3, 0]] {
            assert!(Reader::new(1 << 20, 1 << 30).frame(junk).is_err());
        }
        // Too many fragmented messages at once.
        let mut r = Reader::new(1 << 20, 1 << 30);
        for seq in 0..=MAX_ASSEMBLIES as u64 {
            let mut b = vec![131, DIST_FRAG_HEADER];
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend_from_slice(&5u64.to_be_bytes());
            b.push(0);
            let res = r.frame(&b);
            assert_eq!(res.is_err(), seq == MAX_ASSEMBLIES as u64);
        }
    }
}
