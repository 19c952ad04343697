//! The External Term Format (ETF): Erlang's `term_to_binary/1` encoding, as
//! specified in Erlang/OTP's `erl_ext_dist` guide. Encoding and decoding of
//! byte slices, no I/O.
//!
//! Decoding accepts every encoding Erlang/OTP produces or has produced for
//! the types of [`Term`]: old and new pids, ports and references, latin-1 and
//! UTF-8 atoms, the old string floats (FLOAT_EXT) and the new binary ones,
//! small and large integers and bigs, strings, proper and improper lists,
//! maps, bit binaries, funs and external funs, and atom cache references when
//! the caller supplies the cache. Compressed terms and LOCAL_EXT are refused
//! with [`EtfError::Unsupported`].
//!
//! Decoding never trusts the input: every length is checked against the
//! bytes that remain before anything is reserved for it (each element still
//! to come needs at least one byte, counting the elements that every open
//! tuple, list and map still owes), so a short input that claims billions of
//! elements fails at once, and memory grows at most in proportion to the
//! input. Nesting is bounded by [`DecodeLimits::max_depth`] and handled with
//! an explicit stack, never with recursion, so no input and no limit can
//! overflow the thread's stack.
//!
//! Encoding chooses the forms Erlang/OTP 23 and later accept and OTP 26
//! requires: UTF-8 atoms, NEW_FLOAT_EXT, NEW_PID_EXT, NEW_PORT_EXT (V4_PORT_EXT
//! for port ids beyond 32 bits), NEWER_REFERENCE_EXT, MAP_EXT; lists of small
//! integers of at most 65535 elements are written as STRING_EXT, as Erlang
//! writes them.

use super::term::{Atom, BigInt, ErlPid, ErlPort, ErlRef, MAX_ATOM_CHARS, Term};

/// The version byte that starts a term encoded by `term_to_binary/1`.
pub const VERSION_MAGIC: u8 = 131;
/// An integer 0..=255 in one byte.
pub const SMALL_INTEGER_EXT: u8 = 97;
/// A signed 32-bit integer.
pub const INTEGER_EXT: u8 = 98;
/// A float as a 31-byte C string (`"%.20e"`), from Erlang/OTP before R11.
pub const FLOAT_EXT: u8 = 99;
/// A latin-1 atom with a 16-bit length.
pub const ATOM_EXT: u8 = 100;
/// The oldest reference encoding: one 32-bit word.
pub const REFERENCE_EXT: u8 = 101;
/// A port with an 8-bit creation.
pub const PORT_EXT: u8 = 102;
/// A pid with an 8-bit creation.
pub const PID_EXT: u8 = 103;
/// A tuple of at most 255 elements.
pub const SMALL_TUPLE_EXT: u8 = 104;
/// A tuple with a 32-bit arity.
pub const LARGE_TUPLE_EXT: u8 = 105;
/// The empty list `[]`.
pub const NIL_EXT: u8 = 106;
/// A list of integers 0..=255, as bytes with a 16-bit length.
pub const STRING_EXT: u8 = 107;
/// A list: 32-bit length, elements, tail.
pub const LIST_EXT: u8 = 108;
/// A binary with a 32-bit length.
pub const BINARY_EXT: u8 = 109;
/// An integer with at most 255 base-256 digits.
pub const SMALL_BIG_EXT: u8 = 110;
/// An integer with a 32-bit count of base-256 digits.
pub const LARGE_BIG_EXT: u8 = 111;
/// A fun (closure).
pub const NEW_FUN_EXT: u8 = 112;
/// An external fun, `fun M:F/A`.
pub const EXPORT_EXT: u8 = 113;
/// A reference with an 8-bit creation.
pub const NEW_REFERENCE_EXT: u8 = 114;
/// A latin-1 atom with an 8-bit length.
pub const SMALL_ATOM_EXT: u8 = 115;
/// A map.
pub const MAP_EXT: u8 = 116;
/// The fun encoding removed in Erlang/OTP R16; refused.
pub const FUN_EXT: u8 = 117;
/// A UTF-8 atom with a 16-bit length in bytes.
pub const ATOM_UTF8_EXT: u8 = 118;
/// A UTF-8 atom with an 8-bit length in bytes.
pub const SMALL_ATOM_UTF8_EXT: u8 = 119;
/// A port with a 64-bit id.
pub const V4_PORT_EXT: u8 = 120;
/// An IEEE 754 double, big-endian.
pub const NEW_FLOAT_EXT: u8 = 70;
/// A pid with a 32-bit creation.
pub const NEW_PID_EXT: u8 = 88;
/// A port with a 32-bit id and creation.
pub const NEW_PORT_EXT: u8 = 89;
/// A reference with a 32-bit creation.
pub const NEWER_REFERENCE_EXT: u8 = 90;
/// A bitstring whose last byte is partly used.
pub const BIT_BINARY_EXT: u8 = 77;
/// An index into the distribution connection's atom cache.
pub const ATOM_CACHE_REF: u8 = 82;
/// A term in a node-local format, meaningful only to the node that made it;
/// refused.
pub const LOCAL_EXT: u8 = 121;
/// A zlib-compressed term; refused.
pub const COMPRESSED: u8 = 80;

/// The most words a reference may have.
const MAX_REF_IDS: usize = 5;

/// Why bytes could not be decoded as a term. Offsets count from the start of
/// the slice given to [`decode`] or [`decode_with`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtfError {
    /// The input ends inside a term.
    #[error(
        "ETF input ends early: the field at byte {offset} needs {needed} bytes and fewer remain; the term is incomplete (pass all of it)"
    )]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// How many bytes the field needs.
        needed: usize,
    },
    /// A length field claims more than the rest of the input can hold.
    #[error(
        "the {what} at byte {offset} claims {len}, more than the rest of the input can hold; the input is corrupt or not ETF"
    )]
    LengthExceedsInput {
        /// Where the length field is.
        offset: usize,
        /// What it counts.
        what: &'static str,
        /// The claimed length.
        len: u64,
    },
    /// A tag byte that ETF does not define.
    #[error(
        "unknown ETF tag {tag} at byte {offset}: the input is corrupt, not ETF, or from a newer Erlang/OTP"
    )]
    UnknownTag {
        /// Where the tag is.
        offset: usize,
        /// The tag.
        tag: u8,
    },
    /// A valid encoding that this decoder does not handle.
    #[error("{what} (at byte {offset})")]
    Unsupported {
        /// Where the term starts.
        offset: usize,
        /// What is not supported, and what to do instead.
        what: &'static str,
    },
    /// The input does not start with the version byte 131.
    #[error(
        "ETF input starts with byte {found}, not the version byte 131: it is not a term_to_binary encoding, or the version byte was already stripped (then decode with DecodeOptions {{ magic: false, .. }})"
    )]
    BadMagic {
        /// The first byte.
        found: u8,
    },
    /// The term nests deeper than the limit.
    #[error(
        "the term nests deeper than {limit} levels (DecodeLimits::max_depth); raise the limit if such terms are expected"
    )]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// The term holds more terms than the limit allows.
    #[error(
        "the term holds more than {limit} terms (DecodeLimits::max_terms); on a node the limit follows DistConfig::max_message_memory"
    )]
    TooManyTerms {
        /// The limit in force.
        limit: usize,
    },
    /// A UTF-8 atom whose bytes are not UTF-8.
    #[error("the atom at byte {offset} is not valid UTF-8")]
    InvalidUtf8Atom {
        /// Where the atom starts.
        offset: usize,
    },
    /// An atom longer than Erlang allows.
    #[error("the atom at byte {offset} has {chars} characters, more than Erlang's limit of 255")]
    AtomTooLong {
        /// Where the atom starts.
        offset: usize,
        /// Its number of characters.
        chars: usize,
    },
    /// An atom cache reference without an entry.
    #[error(
        "atom cache reference {index} has no entry: terms of a distribution connection need that connection's atom cache (DecodeOptions::atom_cache)"
    )]
    BadAtomCacheRef {
        /// The cache index.
        index: u8,
    },
    /// Bytes follow a complete term.
    #[error(
        "the term ends at byte {offset} but the input goes on; decode_with decodes a term followed by other data"
    )]
    TrailingBytes {
        /// Where the first extra byte is.
        offset: usize,
    },
    /// Anything else that is not valid ETF.
    #[error("invalid ETF at byte {offset}: {what}")]
    Invalid {
        /// Where the offending field is.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// Bounds on what decoding accepts, beyond what the input's size implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// How many tuples, lists (or improper list tails), maps and funs may be
    /// open at once: `{{1}}` has depth 2. Empty tuples and maps do not count.
    /// Default 512.
    pub max_depth: usize,
    /// How many terms (every atom, number, binary and container counts one)
    /// one decode may build: what a decoded term takes in memory is about
    /// this times the size of a [`Term`], whatever the input's size. Default:
    /// no limit beyond the input's size (each term takes at least one byte).
    pub max_terms: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_depth: 512,
            max_terms: usize::MAX,
        }
    }
}

/// How [`decode_with`] reads its input.
#[derive(Debug, Clone)]
pub struct DecodeOptions<'a> {
    /// Bounds on the term.
    pub limits: DecodeLimits,
    /// Expect the version byte 131 first (as `term_to_binary/1` writes it).
    /// Terms inside a distribution message that has a distribution header
    /// have none. Default true.
    pub magic: bool,
    /// The atom cache that ATOM_CACHE_REF indexes resolve against, from the
    /// distribution header of the message the term came in. `None`: an atom
    /// cache reference is an error.
    pub atom_cache: Option<&'a [Option<Atom>]>,
}

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        DecodeOptions {
            limits: DecodeLimits::default(),
            magic: true,
            atom_cache: None,
        }
    }
}

/// Decodes a complete `term_to_binary/1` encoding: the version byte 131, one
/// term, nothing after it. Default limits.
pub fn decode(bytes: &[u8]) -> Result<Term, EtfError> {
    let (term, used) = decode_with(bytes, &DecodeOptions::default())?;
    if used != bytes.len() {
        return Err(EtfError::TrailingBytes { offset: used });
    }
    Ok(term)
}

/// Decodes one term from the front of `bytes`; returns it and the number of
/// bytes it took (the version byte included), so further data may follow.
pub fn decode_with(bytes: &[u8], options: &DecodeOptions<'_>) -> Result<(Term, usize), EtfError> {
    let mut d = Decoder {
        r: Reader { bytes, pos: 0 },
        cache: options.atom_cache,
        max_depth: options.limits.max_depth,
        max_terms: options.limits.max_terms,
        terms: 0,
    };
    if options.magic {
        let found = d.r.u8()?;
        if found != VERSION_MAGIC {
            return Err(EtfError::BadMagic { found });
        }
    }
    let term = d.term()?;
    Ok((term, d.r.pos))
}

/// Maps of at most this many keys are written with their keys in order.
const SMALL_MAP_KEYS: usize = 32;

/// Erlang's term order: number < atom < reference < fun < port < pid <
/// tuple < map < nil < list < bit string; within a kind, by value (numbers
/// numerically, integers before floats of the same value; atoms and binaries
/// by their bytes; tuples and maps by size first).
pub fn term_order(a: &Term, b: &Term) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn rank(t: &Term) -> u8 {
        match t {
            Term::Int(_) | Term::Big(_) | Term::Float(_) => 0,
            Term::Atom(_) => 1,
            Term::Ref(_) => 2,
            Term::Fun(_) | Term::Export { .. } => 3,
            Term::Port(_) => 4,
            Term::Pid(_) => 5,
            Term::Tuple(_) => 6,
            Term::Map(_) => 7,
            Term::List(l) if l.is_empty() => 8,
            Term::List(_) | Term::ImproperList(..) => 9,
            Term::Binary(_) | Term::BitBinary { .. } => 10,
        }
    }
    fn num(t: &Term) -> (f64, u8) {
        match t {
            Term::Int(i) => (*i as f64, 0),
            Term::Big(b) => (
                b.to_i128().map(|v| v as f64).unwrap_or(if b.negative {
                    f64::MIN
                } else {
                    f64::MAX
                }),
                0,
            ),
            Term::Float(f) => (*f, 1),
            _ => (0.0, 0),
        }
    }
    fn list_parts(t: &Term) -> (&[Term], Option<&Term>) {
        match t {
            Term::List(l) => (l, None),
            Term::ImproperList(l, tail) => (l, Some(tail)),
            _ => (&[], None),
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Term::Int(x), Term::Int(y)) => x.cmp(y),
        _ if ra == 0 => {
            let ((x, kx), (y, ky)) = (num(a), num(b));
            x.partial_cmp(&y)
                .unwrap_or(Ordering::Equal)
                .then(kx.cmp(&ky))
        }
        (Term::Atom(x), Term::Atom(y)) => x.as_str().as_bytes().cmp(y.as_str().as_bytes()),
        (Term::Ref(x), Term::Ref(y)) => x
            .node
            .as_str()
            .cmp(y.node.as_str())
            .then(x.ids.iter().rev().cmp(y.ids.iter().rev()))
            .then(x.creation.cmp(&y.creation)),
        (Term::Port(x), Term::Port(y)) => x
            .node
            .as_str()
            .cmp(y.node.as_str())
            .then(x.id.cmp(&y.id))
            .then(x.creation.cmp(&y.creation)),
        (Term::Pid(x), Term::Pid(y)) => x
            .node
            .as_str()
            .cmp(y.node.as_str())
            .then(x.serial.cmp(&y.serial))
            .then(x.id.cmp(&y.id))
            .then(x.creation.cmp(&y.creation)),
        (Term::Tuple(x), Term::Tuple(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| term_order(p, q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (Term::Map(x), Term::Map(y)) => x.len().cmp(&y.len()).then_with(|| {
            fn sorted(m: &[(Term, Term)]) -> Vec<&(Term, Term)> {
                let mut v: Vec<&(Term, Term)> = m.iter().collect();
                v.sort_by(|a, b| term_order(&a.0, &b.0));
                v
            }
            let (sx, sy) = (sorted(x), sorted(y));
            sx.iter()
                .zip(&sy)
                .map(|(p, q)| term_order(&p.0, &q.0))
                .chain(sx.iter().zip(&sy).map(|(p, q)| term_order(&p.1, &q.1)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (Term::Binary(_) | Term::BitBinary { .. }, _) => {
            let bits = |t: &Term| match t {
                Term::Binary(b) => (b.clone(), 8u8),
                Term::BitBinary { bytes, bits } => (bytes.clone(), *bits),
                _ => (Vec::new(), 8),
            };
            let ((x, bx), (y, by)) = (bits(a), bits(b));
            x.cmp(&y).then(bx.cmp(&by))
        }
        _ if ra == 9 || ra == 8 => {
            let ((xs, xt), (ys, yt)) = (list_parts(a), list_parts(b));
            for (p, q) in xs.iter().zip(ys) {
                let o = term_order(p, q);
                if o.is_ne() {
                    return o;
                }
            }
            match xs.len().cmp(&ys.len()) {
                // The shorter one goes on with its tail.
                Ordering::Less => xt.map_or(Ordering::Less, |t| {
                    term_order(t, &Term::List(ys[xs.len()..].to_vec()))
                }),
                Ordering::Greater => yt.map_or(Ordering::Greater, |t| {
                    term_order(&Term::List(xs[ys.len()..].to_vec()), t)
                }),
                Ordering::Equal => match (xt, yt) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                    (Some(p), Some(q)) => term_order(p, q),
                },
            }
        }
        (Term::Fun(x), Term::Fun(y)) => x.cmp(y),
        (
            Term::Export {
                module: m1,
                function: f1,
                arity: a1,
            },
            Term::Export {
                module: m2,
                function: f2,
                arity: a2,
            },
        ) => m1
            .as_str()
            .cmp(m2.as_str())
            .then(f1.as_str().cmp(f2.as_str()))
            .then(a1.cmp(a2)),
        _ => Ordering::Equal,
    }
}

/// Encodes `term` as `term_to_binary/1` does: the version byte 131, then the
/// term.
///
/// Encoding cannot fail for a term Erlang can hold. For terms it cannot, the
/// bytes are still written and Erlang refuses them on decoding: a NaN or
/// infinite float, a reference with no words or more than 5.
///
/// # Panics
///
/// If a binary, tuple, list or map has more than `u32::MAX` elements (bytes),
/// or a reference more than 65535 words, which ETF cannot express.
pub fn encode(term: &Term) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_with_magic_into(term, &mut out);
    out
}

/// Appends the version byte 131 and the encoding of `term` to `out`; see
/// [`encode`].
pub fn encode_with_magic_into(term: &Term, out: &mut Vec<u8>) {
    out.push(VERSION_MAGIC);
    encode_into(term, out);
}

/// Appends the encoding of `term`, without the version byte, to `out` (the
/// form of terms after a distribution header); see [`encode`] for what can
/// panic.
pub fn encode_into(term: &Term, out: &mut Vec<u8>) {
    enum Job<'t> {
        Term(&'t Term),
        Nil,
    }
    // Children are pushed in reverse so that they pop, and are written, in order.
    let mut jobs = vec![Job::Term(term)];
    while let Some(job) = jobs.pop() {
        let term = match job {
            Job::Nil => {
                out.push(NIL_EXT);
                continue;
            }
            Job::Term(t) => t,
        };
        match term {
            Term::Atom(a) => put_atom(out, a),
            Term::Int(i) => put_int(out, *i),
            Term::Big(b) => put_big(out, b),
            Term::Float(v) => {
                out.push(NEW_FLOAT_EXT);
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
            Term::Binary(b) => put_binary(out, b),
            Term::BitBinary { bytes, bits } => match bytes.split_last() {
                Some((last, whole)) if (1..=7).contains(bits) => {
                    out.push(BIT_BINARY_EXT);
                    out.extend_from_slice(&len_u32(bytes.len(), "bit binary").to_be_bytes());
                    out.push(*bits);
                    out.extend_from_slice(whole);
                    out.push(last & (0xffu8 << (8 - bits)));
                }
                _ => put_binary(out, bytes),
            },
            Term::Tuple(items) => {
                if let Ok(n) = u8::try_from(items.len()) {
                    out.push(SMALL_TUPLE_EXT);
                    out.push(n);
                } else {
                    out.push(LARGE_TUPLE_EXT);
                    out.extend_from_slice(&len_u32(items.len(), "tuple").to_be_bytes());
                }
                jobs.extend(items.iter().rev().map(Job::Term));
            }
            Term::List(items) => {
                if items.is_empty() {
                    out.push(NIL_EXT);
                } else if let Some(s) = as_string_ext(items) {
                    out.push(STRING_EXT);
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend(s);
                } else {
                    out.push(LIST_EXT);
                    out.extend_from_slice(&len_u32(items.len(), "list").to_be_bytes());
                    jobs.push(Job::Nil);
                    jobs.extend(items.iter().rev().map(Job::Term));
                }
            }
            Term::ImproperList(items, tail) => {
                // Without elements the "list" is just its tail.
                if !items.is_empty() {
                    out.push(LIST_EXT);
                    out.extend_from_slice(&len_u32(items.len(), "list").to_be_bytes());
                }
                jobs.push(Job::Term(tail));
                jobs.extend(items.iter().rev().map(Job::Term));
            }
            Term::Map(pairs) => {
                out.push(MAP_EXT);
                out.extend_from_slice(&len_u32(pairs.len(), "map").to_be_bytes());
                // A small map (up to 32 keys) goes in Erlang's term order of
                // its keys, as term_to_binary writes it: Erlang keeps such a
                // map as a sorted array and a distribution connection may
                // take it as sent.
                let mut order: Vec<&(Term, Term)> = pairs.iter().collect();
                if order.len() <= SMALL_MAP_KEYS {
                    order.sort_by(|a, b| term_order(&a.0, &b.0));
                }
                for (k, v) in order.into_iter().rev() {
                    jobs.push(Job::Term(v));
                    jobs.push(Job::Term(k));
                }
            }
            Term::Pid(p) => put_pid(out, p),
            Term::Ref(r) => {
                out.push(NEWER_REFERENCE_EXT);
                let n = u16::try_from(r.ids.len())
                    .expect("a reference of more than 65535 words cannot be encoded in ETF");
                out.extend_from_slice(&n.to_be_bytes());
                put_atom(out, &r.node);
                out.extend_from_slice(&r.creation.to_be_bytes());
                for id in &r.ids {
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
            Term::Port(p) => {
                if let Ok(id) = u32::try_from(p.id) {
                    out.push(NEW_PORT_EXT);
                    put_atom(out, &p.node);
                    out.extend_from_slice(&id.to_be_bytes());
                } else {
                    out.push(V4_PORT_EXT);
                    put_atom(out, &p.node);
                    out.extend_from_slice(&p.id.to_be_bytes());
                }
                out.extend_from_slice(&p.creation.to_be_bytes());
            }
            Term::Fun(bytes) => out.extend_from_slice(bytes),
            Term::Export {
                module,
                function,
                arity,
            } => {
                out.push(EXPORT_EXT);
                put_atom(out, module);
                put_atom(out, function);
                out.push(SMALL_INTEGER_EXT);
                out.push(*arity);
            }
        }
    }
}

fn len_u32(len: usize, what: &str) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| {
        panic!("a {what} of {len} elements (bytes) cannot be encoded in ETF (at most 2^32 - 1)")
    })
}

/// The bytes of a list that STRING_EXT can carry.
fn as_string_ext(items: &[Term]) -> Option<Vec<u8>> {
    if items.len() > usize::from(u16::MAX) {
        return None;
    }
    items
        .iter()
        .map(|t| match t {
            Term::Int(i) => u8::try_from(*i).ok(),
            _ => None,
        })
        .collect()
}

fn put_atom(out: &mut Vec<u8>, atom: &Atom) {
    let name = atom.as_str().as_bytes();
    if let Ok(n) = u8::try_from(name.len()) {
        out.push(SMALL_ATOM_UTF8_EXT);
        out.push(n);
    } else {
        // At most 255 characters of at most 4 bytes: always fits 16 bits.
        out.push(ATOM_UTF8_EXT);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(name);
}

fn put_int(out: &mut Vec<u8>, i: i64) {
    if let Ok(b) = u8::try_from(i) {
        out.push(SMALL_INTEGER_EXT);
        out.push(b);
    } else if let Ok(w) = i32::try_from(i) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        let bytes = i.unsigned_abs().to_le_bytes();
        let n = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        out.push(SMALL_BIG_EXT);
        out.push(n as u8);
        out.push(u8::from(i < 0));
        out.extend_from_slice(&bytes[..n]);
    }
}

fn put_big(out: &mut Vec<u8>, b: &BigInt) {
    // A value that fits an i64 gets the integer encoding Erlang would use.
    if let Some(i) = b.to_i64() {
        return put_int(out, i);
    }
    let m = b.significant();
    if let Ok(n) = u8::try_from(m.len()) {
        out.push(SMALL_BIG_EXT);
        out.push(n);
    } else {
        out.push(LARGE_BIG_EXT);
        out.extend_from_slice(&len_u32(m.len(), "big integer").to_be_bytes());
    }
    out.push(u8::from(b.negative));
    out.extend_from_slice(m);
}

fn put_binary(out: &mut Vec<u8>, b: &[u8]) {
    out.push(BINARY_EXT);
    out.extend_from_slice(&len_u32(b.len(), "binary").to_be_bytes());
    out.extend_from_slice(b);
}

fn put_pid(out: &mut Vec<u8>, p: &ErlPid) {
    out.push(NEW_PID_EXT);
    put_atom(out, &p.node);
    out.extend_from_slice(&p.id.to_be_bytes());
    out.extend_from_slice(&p.serial.to_be_bytes());
    out.extend_from_slice(&p.creation.to_be_bytes());
}

/// Module, OldIndex and OldUniq of an encoded fun, for display.
pub(crate) fn fun_summary(bytes: &[u8]) -> Option<(Atom, i64, i64)> {
    let mut d = Decoder {
        r: Reader { bytes, pos: 0 },
        cache: None,
        max_depth: 0,
        max_terms: 0,
        terms: 0,
    };
    if d.r.u8().ok()? != NEW_FUN_EXT {
        return None;
    }
    d.r.take(4 + 1 + 16 + 4 + 4).ok()?;
    let module = d.atom().ok()?;
    let old_index = d.small_int().ok()?;
    let old_uniq = d.small_int().ok()?;
    Some((module, old_index, old_uniq))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], EtfError> {
        if n > self.remaining() {
            return Err(EtfError::Truncated {
                offset: self.pos,
                needed: n,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EtfError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, EtfError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, EtfError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, EtfError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, EtfError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Takes `len` bytes announced by the length field at `offset`.
    fn take_counted(
        &mut self,
        offset: usize,
        what: &'static str,
        len: usize,
    ) -> Result<&'a [u8], EtfError> {
        if len > self.remaining() {
            return Err(EtfError::LengthExceedsInput {
                offset,
                what,
                len: len as u64,
            });
        }
        self.take(len)
    }
}

/// A container being decoded, waiting for its elements.
enum Open {
    Tuple {
        items: Vec<Term>,
        left: usize,
    },
    /// `left` counts the elements still to come plus the tail.
    List {
        items: Vec<Term>,
        left: usize,
    },
    /// `left` counts keys and values still to come.
    Map {
        pairs: Vec<(Term, Term)>,
        key: Option<Term>,
        left: usize,
    },
    Fun(Box<OpenFun>),
}

/// A NEW_FUN_EXT being decoded: its fixed fields are read, its module too;
/// OldIndex, OldUniq, Pid and the free variables come as terms.
struct OpenFun {
    /// Where its tag is.
    start: usize,
    /// Where its Size field says it ends.
    end: usize,
    module: Atom,
    /// OldIndex, OldUniq, Pid, free variables.
    parts: Vec<Term>,
    left: usize,
}

/// What reading one term's first bytes produced.
enum Step {
    Done(Term),
    Opened(Open),
}

struct Decoder<'a, 'c> {
    r: Reader<'a>,
    cache: Option<&'c [Option<Atom>]>,
    max_depth: usize,
    max_terms: usize,
    /// Terms read so far.
    terms: usize,
}

impl Decoder<'_, '_> {
    fn term(&mut self) -> Result<Term, EtfError> {
        let mut stack: Vec<Open> = Vec::new();
        // Elements that the open containers still expect, each of at least one
        // byte still unread: a container's claimed length must fit in what
        // remains after them.
        let mut owed: usize = 0;
        loop {
            if !stack.is_empty() {
                owed -= 1;
            }
            self.terms += 1;
            if self.terms > self.max_terms {
                return Err(EtfError::TooManyTerms {
                    limit: self.max_terms,
                });
            }
            let mut value = match self.step(owed)? {
                Step::Done(t) => t,
                Step::Opened(open) => {
                    if stack.len() >= self.max_depth {
                        return Err(EtfError::TooDeep {
                            limit: self.max_depth,
                        });
                    }
                    owed += open.left();
                    stack.push(open);
                    continue;
                }
            };
            // Hand the value to the innermost container; each container it
            // completes is in turn a value for the next one out.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                if !top.accept(value) {
                    break;
                }
                let done = stack.pop().expect("the top exists");
                value = self.finish(done)?;
            }
        }
    }

    fn step(&mut self, owed: usize) -> Result<Step, EtfError> {
        let offset = self.r.pos;
        let tag = self.r.u8()?;
        // The room left for a container's elements: what remains of the
        // input after the elements the open containers still expect.
        let room = |r: &Reader<'_>| r.remaining().saturating_sub(owed);
        let count = |r: &Reader<'_>, what: &'static str, at: usize, n: usize, per: usize| {
            if n.saturating_mul(per) > room(r) {
                Err(EtfError::LengthExceedsInput {
                    offset: at,
                    what,
                    len: n as u64,
                })
            } else {
                Ok(n)
            }
        };
        let t = match tag {
            SMALL_INTEGER_EXT => Term::Int(i64::from(self.r.u8()?)),
            INTEGER_EXT => Term::Int(i64::from(i32::from_be_bytes(self.r.array()?))),
            NEW_FLOAT_EXT => Term::Float(f64::from_bits(self.r.u64()?)),
            FLOAT_EXT => {
                let raw = self.r.take(31)?;
                let text = raw.split(|&b| b == 0).next().unwrap_or(&[]);
                let v = std::str::from_utf8(text)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or(EtfError::Invalid {
                        offset: offset + 1,
                        what: "FLOAT_EXT does not hold a number",
                    })?;
                Term::Float(v)
            }
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT | ATOM_CACHE_REF => {
                Term::Atom(self.atom_body(tag, offset)?)
            }
            SMALL_BIG_EXT | LARGE_BIG_EXT => {
                let at = self.r.pos;
                let n = if tag == SMALL_BIG_EXT {
                    usize::from(self.r.u8()?)
                } else {
                    self.r.u32()? as usize
                };
                let sign_at = self.r.pos;
                let sign = self.r.u8()?;
                if sign > 1 {
                    return Err(EtfError::Invalid {
                        offset: sign_at,
                        what: "the sign of a big integer is neither 0 nor 1",
                    });
                }
                let digits = self.r.take_counted(at, "big integer's digit count", n)?;
                Term::big(BigInt::new(sign == 1, digits.to_vec()))
            }
            BINARY_EXT => {
                let at = self.r.pos;
                let n = self.r.u32()? as usize;
                Term::Binary(self.r.take_counted(at, "binary length", n)?.to_vec())
            }
            BIT_BINARY_EXT => {
                let at = self.r.pos;
                let n = self.r.u32()? as usize;
                let bits_at = self.r.pos;
                let bits = self.r.u8()?;
                let bytes = self.r.take_counted(at, "bit binary length", n)?;
                match (n, bits) {
                    // Erlang reads an empty bitstring this way.
                    (0, 0) => Term::Binary(Vec::new()),
                    (1.., 8) => Term::Binary(bytes.to_vec()),
                    (1.., 1..=7) => {
                        let mut bytes = bytes.to_vec();
                        if let Some(last) = bytes.last_mut() {
                            *last &= 0xffu8 << (8 - bits);
                        }
                        Term::BitBinary { bytes, bits }
                    }
                    _ => {
                        return Err(EtfError::Invalid {
                            offset: bits_at,
                            what: "a bit binary's used bits are not 1 to 8 (or its length is 0)",
                        });
                    }
                }
            }
            NIL_EXT => Term::List(Vec::new()),
            STRING_EXT => {
                let at = self.r.pos;
                let n = usize::from(self.r.u16()?);
                let s = self.r.take_counted(at, "string length", n)?;
                // One term per character.
                self.terms = self.terms.saturating_add(n);
                if self.terms > self.max_terms {
                    return Err(EtfError::TooManyTerms {
                        limit: self.max_terms,
                    });
                }
                Term::List(s.iter().map(|&b| Term::Int(i64::from(b))).collect())
            }
            SMALL_TUPLE_EXT | LARGE_TUPLE_EXT => {
                let at = self.r.pos;
                let n = if tag == SMALL_TUPLE_EXT {
                    usize::from(self.r.u8()?)
                } else {
                    self.r.u32()? as usize
                };
                let n = count(&self.r, "tuple arity", at, n, 1)?;
                if n == 0 {
                    Term::Tuple(Vec::new())
                } else {
                    return Ok(Step::Opened(Open::Tuple {
                        items: Vec::with_capacity(n),
                        left: n,
                    }));
                }
            }
            LIST_EXT => {
                let at = self.r.pos;
                let n = self.r.u32()? as usize;
                // The elements, and one more for the tail.
                let n = count(&self.r, "list length", at, n.saturating_add(1), 1)? - 1;
                return Ok(Step::Opened(Open::List {
                    items: Vec::with_capacity(n),
                    left: n + 1,
                }));
            }
            MAP_EXT => {
                let at = self.r.pos;
                let n = self.r.u32()? as usize;
                let n = count(&self.r, "map arity", at, n, 2)?;
                if n == 0 {
                    Term::Map(Vec::new())
                } else {
                    return Ok(Step::Opened(Open::Map {
                        pairs: Vec::with_capacity(n),
                        key: None,
                        left: 2 * n,
                    }));
                }
            }
            PID_EXT | NEW_PID_EXT => {
                let node = self.atom()?;
                let id = self.r.u32()?;
                let serial = self.r.u32()?;
                let creation = if tag == PID_EXT {
                    u32::from(self.r.u8()?)
                } else {
                    self.r.u32()?
                };
                Term::Pid(ErlPid {
                    node,
                    id,
                    serial,
                    creation,
                })
            }
            PORT_EXT | NEW_PORT_EXT | V4_PORT_EXT => {
                let node = self.atom()?;
                let id = if tag == V4_PORT_EXT {
                    self.r.u64()?
                } else {
                    u64::from(self.r.u32()?)
                };
                let creation = if tag == PORT_EXT {
                    u32::from(self.r.u8()?)
                } else {
                    self.r.u32()?
                };
                Term::Port(ErlPort { node, id, creation })
            }
            REFERENCE_EXT => {
                let node = self.atom()?;
                let id = self.r.u32()?;
                let creation = u32::from(self.r.u8()?);
                Term::Ref(ErlRef {
                    node,
                    creation,
                    ids: vec![id],
                })
            }
            NEW_REFERENCE_EXT | NEWER_REFERENCE_EXT => {
                let at = self.r.pos;
                let n = usize::from(self.r.u16()?);
                if n == 0 || n > MAX_REF_IDS {
                    return Err(EtfError::Invalid {
                        offset: at,
                        what: "a reference has no words or more than 5",
                    });
                }
                let node = self.atom()?;
                let creation = if tag == NEW_REFERENCE_EXT {
                    u32::from(self.r.u8()?)
                } else {
                    self.r.u32()?
                };
                let words = self.r.take(4 * n)?;
                let ids = words
                    .chunks_exact(4)
                    .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
                    .collect();
                Term::Ref(ErlRef {
                    node,
                    creation,
                    ids,
                })
            }
            EXPORT_EXT => {
                let module = self.atom()?;
                let function = self.atom()?;
                let at = self.r.pos;
                if self.r.u8()? != SMALL_INTEGER_EXT {
                    return Err(EtfError::Invalid {
                        offset: at,
                        what: "an external fun's arity is not a SMALL_INTEGER_EXT",
                    });
                }
                let arity = self.r.u8()?;
                Term::Export {
                    module,
                    function,
                    arity,
                }
            }
            NEW_FUN_EXT => {
                let size_at = self.r.pos;
                let size = self.r.u32()? as usize;
                // Size counts itself and everything after it.
                if size > self.r.remaining() + 4 {
                    return Err(EtfError::Truncated {
                        offset: size_at,
                        needed: size,
                    });
                }
                let end = size_at + size;
                let _arity_uniq_index = self.r.take(1 + 16 + 4)?;
                let free_at = self.r.pos;
                let num_free = self.r.u32()? as usize;
                let module = self.atom()?;
                let n = count(
                    &self.r,
                    "fun's free variable count",
                    free_at,
                    num_free.saturating_add(3),
                    1,
                )?;
                return Ok(Step::Opened(Open::Fun(Box::new(OpenFun {
                    start: offset,
                    end,
                    module,
                    parts: Vec::with_capacity(n),
                    left: n,
                }))));
            }
            COMPRESSED => {
                return Err(EtfError::Unsupported {
                    offset,
                    what: "compressed terms are not supported: encode with term_to_binary/1 without the compressed option",
                });
            }
            LOCAL_EXT => {
                return Err(EtfError::Unsupported {
                    offset,
                    what: "LOCAL_EXT terms are not supported: they are meaningful only to the node that made them",
                });
            }
            FUN_EXT => {
                return Err(EtfError::Unsupported {
                    offset,
                    what: "FUN_EXT funs (from Erlang/OTP before R16) are not supported",
                });
            }
            tag => return Err(EtfError::UnknownTag { offset, tag }),
        };
        Ok(Step::Done(t))
    }

    /// Builds the term of a container whose elements have all arrived.
    fn finish(&mut self, open: Open) -> Result<Term, EtfError> {
        Ok(match open {
            Open::Tuple { items, .. } => Term::Tuple(items),
            Open::Map { pairs, .. } => Term::Map(pairs),
            Open::List { mut items, .. } => {
                // The tail is the last item. A tail that is itself a list
                // (never written by Erlang, but valid) is flattened into it.
                let tail = items.pop().expect("a list's tail arrived");
                match tail {
                    Term::List(rest) => {
                        items.extend(rest);
                        Term::List(items)
                    }
                    Term::ImproperList(rest, t) => {
                        items.extend(rest);
                        Term::ImproperList(items, t)
                    }
                    t if items.is_empty() => t,
                    t => Term::ImproperList(items, Box::new(t)),
                }
            }
            Open::Fun(f) => self.finish_fun(*f)?,
        })
    }

    fn finish_fun(&mut self, f: OpenFun) -> Result<Term, EtfError> {
        let size_at = f.start + 1;
        if self.r.pos != f.end {
            return Err(EtfError::Invalid {
                offset: size_at,
                what: "a fun's Size field does not match the length of its contents",
            });
        }
        let ok = matches!(f.parts[0], Term::Int(_))
            && matches!(f.parts[1], Term::Int(_))
            && matches!(f.parts[2], Term::Pid(_));
        if !ok {
            return Err(EtfError::Invalid {
                offset: size_at,
                what: "a fun's OldIndex and OldUniq are not integers, or its Pid is not a pid",
            });
        }
        // The fun is written again as `encode` writes its parts, so that one
        // fun has one encoding whatever atom and integer encodings the sender
        // chose, and atom cache references (meaningless outside their
        // connection) are spelled out.
        let fixed = &self.r.bytes[size_at + 4..size_at + 4 + 1 + 16 + 4 + 4];
        let mut out = vec![NEW_FUN_EXT, 0, 0, 0, 0];
        out.extend_from_slice(fixed);
        put_atom(&mut out, &f.module);
        for part in &f.parts {
            encode_into(part, &mut out);
        }
        let size = (out.len() - 1) as u32;
        out[1..5].copy_from_slice(&size.to_be_bytes());
        Ok(Term::Fun(out))
    }

    /// An atom in any of its encodings.
    fn atom(&mut self) -> Result<Atom, EtfError> {
        let offset = self.r.pos;
        let tag = self.r.u8()?;
        match tag {
            ATOM_EXT | SMALL_ATOM_EXT | ATOM_UTF8_EXT | SMALL_ATOM_UTF8_EXT | ATOM_CACHE_REF => {
                self.atom_body(tag, offset)
            }
            _ => Err(EtfError::Invalid {
                offset,
                what: "expected an atom",
            }),
        }
    }

    fn atom_body(&mut self, tag: u8, offset: usize) -> Result<Atom, EtfError> {
        if tag == ATOM_CACHE_REF {
            let index = self.r.u8()?;
            let atom = self
                .cache
                .and_then(|c| c.get(usize::from(index)))
                .and_then(Clone::clone)
                .ok_or(EtfError::BadAtomCacheRef { index })?;
            return Ok(atom);
        }
        let at = self.r.pos;
        let n = match tag {
            ATOM_EXT | ATOM_UTF8_EXT => usize::from(self.r.u16()?),
            _ => usize::from(self.r.u8()?),
        };
        let bytes = self.r.take_counted(at, "atom length", n)?;
        let name: String = if tag == ATOM_EXT || tag == SMALL_ATOM_EXT {
            bytes.iter().map(|&b| char::from(b)).collect()
        } else {
            std::str::from_utf8(bytes)
                .map_err(|_| EtfError::InvalidUtf8Atom { offset })?
                .to_owned()
        };
        let chars = name.chars().count();
        if chars > MAX_ATOM_CHARS {
            return Err(EtfError::AtomTooLong { offset, chars });
        }
        Ok(Atom::from_checked(&name))
    }

    /// A SMALL_INTEGER_EXT or INTEGER_EXT.
    fn small_int(&mut self) -> Result<i64, EtfError> {
        let offset = self.r.pos;
        match self.r.u8()? {
            SMALL_INTEGER_EXT => Ok(i64::from(self.r.u8()?)),
            INTEGER_EXT => Ok(i64::from(i32::from_be_bytes(self.r.array()?))),
            _ => Err(EtfError::Invalid {
                offset,
                what: "expected a small integer",
            }),
        }
    }
}

impl Open {
    /// Elements still expected.
    fn left(&self) -> usize {
        match self {
            Open::Tuple { left, .. } | Open::List { left, .. } | Open::Map { left, .. } => *left,
            Open::Fun(f) => f.left,
        }
    }

    /// Takes the next element; true when the container is complete.
    fn accept(&mut self, value: Term) -> bool {
        match self {
            Open::Tuple { items, left } | Open::List { items, left } => {
                items.push(value);
                *left -= 1;
                *left == 0
            }
            Open::Map { pairs, key, left } => {
                match key.take() {
                    None => *key = Some(value),
                    Some(k) => pairs.push((k, value)),
                }
                *left -= 1;
                *left == 0
            }
            Open::Fun(f) => {
                f.parts.push(value);
                f.left -= 1;
                f.left == 0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(s: &str) -> Atom {
        Atom::new(s).unwrap()
    }

    fn round_trip(t: &Term) {
        let bytes = encode(t);
        assert_eq!(&decode(&bytes).unwrap(), t, "bytes {bytes:?}");
    }

    #[test]
    fn atoms_in_every_encoding() {
        // term_to_binary(hello) in OTP 26, and in OTP 25 (latin-1 ATOM_EXT).
        let hello = Term::atom("hello");
        assert_eq!(encode(&hello), [131, 119, 5, 104, 101, 108, 108, 111]);
        assert_eq!(
            decode(&[131, 100, 0, 5, 104, 101, 108, 108, 111]).unwrap(),
            hello
        );
        assert_eq!(
            decode(&[131, 115, 5, 104, 101, 108, 108, 111]).unwrap(),
            hello
        );
        assert_eq!(
            decode(&[131, 118, 0, 5, 104, 101, 108, 108, 111]).unwrap(),
            hello
        );
        // 'héllo' in latin-1 and in UTF-8.
        let h = Term::atom("héllo");
        assert_eq!(
            decode(&[131, 100, 0, 5, 104, 0xe9, 108, 108, 111]).unwrap(),
            h
        );
        assert_eq!(
            decode(&[131, 119, 6, 104, 0xc3, 0xa9, 108, 108, 111]).unwrap(),
            h
        );
        assert_eq!(
            decode(&[131, 119, 2, 0xc3, 0x28]),
            Err(EtfError::InvalidUtf8Atom { offset: 1 })
        );
        // 255 three-byte characters need ATOM_UTF8_EXT.
        let long = Term::atom(&"你".repeat(255));
        let bytes = encode(&long);
        assert_eq!(&bytes[..4], &[131, ATOM_UTF8_EXT, 2, 253]);
        round_trip(&long);
        let mut too_long = vec![131, ATOM_EXT, 1, 0];
        too_long.extend(std::iter::repeat_n(b'a', 256));
        assert_eq!(
            decode(&too_long),
            Err(EtfError::AtomTooLong {
                offset: 1,
                chars: 256
            })
        );
    }

    #[test]
    fn atom_cache_references() {
        let cache = [None, Some(atom("cached"))];
        let opts = DecodeOptions {
            atom_cache: Some(&cache),
            ..Default::default()
        };
        assert_eq!(
            decode_with(&[131, ATOM_CACHE_REF, 1], &opts).unwrap(),
            (Term::atom("cached"), 3)
        );
        assert_eq!(
            decode_with(&[131, ATOM_CACHE_REF, 0], &opts),
            Err(EtfError::BadAtomCacheRef { index: 0 })
        );
        assert_eq!(
            decode(&[131, ATOM_CACHE_REF, 1]),
            Err(EtfError::BadAtomCacheRef { index: 1 })
        );
    }

    #[test]
    fn integers() {
        assert_eq!(encode(&Term::Int(5)), [131, 97, 5]);
        assert_eq!(encode(&Term::Int(256)), [131, 98, 0, 0, 1, 0]);
        assert_eq!(encode(&Term::Int(-1)), [131, 98, 255, 255, 255, 255]);
        // 2^31 and -(2^31 + 1) need a big.
        assert_eq!(encode(&Term::Int(1 << 31)), [131, 110, 4, 0, 0, 0, 0, 128]);
        assert_eq!(
            encode(&Term::Int(-(1 << 31) - 1)),
            [131, 110, 4, 1, 1, 0, 0, 128]
        );
        for v in [
            0,
            255,
            256,
            -1,
            i32::MAX as i64,
            i32::MIN as i64,
            i32::MAX as i64 + 1,
            i64::MAX,
            i64::MIN,
        ] {
            round_trip(&Term::Int(v));
        }
        // A big that fits i64 decodes to Int; sign bytes other than 0/1 fail.
        assert_eq!(decode(&[131, 110, 1, 1, 7]).unwrap(), Term::Int(-7));
        assert_eq!(
            decode(&[131, 111, 0, 0, 0, 2, 0, 1, 0]).unwrap(),
            Term::Int(1)
        );
        assert_eq!(
            decode(&[131, 110, 1, 2, 7]),
            Err(EtfError::Invalid {
                offset: 3,
                what: "the sign of a big integer is neither 0 nor 1"
            })
        );
        // 1 bsl 64 and -(1 bsl 63) - 1 stay big; a 300-byte big is LARGE_BIG_EXT.
        let b = Term::from(1i128 << 64);
        assert_eq!(encode(&b), [131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        round_trip(&b);
        round_trip(&Term::from(i64::MIN as i128 - 1));
        let mut m = vec![0u8; 299];
        m.push(1);
        let large = Term::Big(BigInt::new(true, m));
        assert_eq!(encode(&large)[1], LARGE_BIG_EXT);
        round_trip(&large);
        // Trailing zero digits are dropped when encoding, and a Big that fits
        // i64 is written as an integer.
        assert_eq!(
            encode(&Term::Big(BigInt {
                negative: false,
                magnitude: vec![5, 0, 0]
            })),
            [131, 97, 5]
        );
    }

    #[test]
    fn floats_new_and_old() {
        assert_eq!(
            encode(&Term::Float(1.5)),
            [131, 70, 63, 248, 0, 0, 0, 0, 0, 0]
        );
        // term_to_binary(1.5, [{minor_version, 0}]).
        let mut old = vec![131, 99];
        old.extend_from_slice(b"1.50000000000000000000e+00");
        old.extend_from_slice(&[0; 5]);
        assert_eq!(decode(&old).unwrap(), Term::Float(1.5));
        let mut bad = vec![131, 99];
        bad.extend_from_slice(&[b'x'; 31]);
        assert!(matches!(
            decode(&bad),
            Err(EtfError::Invalid { offset: 2, .. })
        ));
        round_trip(&Term::Float(-1.0e-300));
    }

    #[test]
    fn binaries_and_bit_binaries() {
        assert_eq!(
            encode(&Term::binary(vec![1, 2, 3])),
            [131, 109, 0, 0, 0, 3, 1, 2, 3]
        );
        // term_to_binary(<<1:3>>); Erlang ignores the unused bits.
        let bits = Term::BitBinary {
            bytes: vec![32],
            bits: 3,
        };
        assert_eq!(encode(&bits), [131, 77, 0, 0, 0, 1, 3, 32]);
        assert_eq!(decode(&[131, 77, 0, 0, 0, 1, 3, 255]).unwrap(), {
            Term::BitBinary {
                bytes: vec![224],
                bits: 3,
            }
        });
        assert_eq!(
            decode(&[131, 77, 0, 0, 0, 1, 8, 255]).unwrap(),
            Term::binary(vec![255])
        );
        assert_eq!(
            decode(&[131, 77, 0, 0, 0, 0, 0]).unwrap(),
            Term::binary(vec![])
        );
        for bad in [
            &[131, 77, 0, 0, 0, 1, 0, 1][..],
            &[131, 77, 0, 0, 0, 1, 9, 1],
        ] {
            assert!(matches!(
                decode(bad),
                Err(EtfError::Invalid { offset: 6, .. })
            ));
        }
        // A bit binary with a whole last byte is a binary.
        assert_eq!(
            encode(&Term::BitBinary {
                bytes: vec![1],
                bits: 8
            }),
            encode(&Term::binary(vec![1]))
        );
    }

    #[test]
    fn tuples_lists_maps() {
        assert_eq!(
            encode(&Term::tuple(vec![Term::atom("a"), Term::Int(1)])),
            [131, 104, 2, 119, 1, 97, 97, 1]
        );
        let large = Term::tuple((0..300).map(Term::Int).collect());
        assert_eq!(encode(&large)[1], LARGE_TUPLE_EXT);
        round_trip(&large);
        assert_eq!(encode(&Term::nil()), [131, 106]);
        // "ab" is STRING_EXT, and STRING_EXT decodes to a list of integers.
        let s = Term::list(vec![Term::Int(97), Term::Int(98)]);
        assert_eq!(encode(&s), [131, 107, 0, 2, 97, 98]);
        round_trip(&s);
        let l = Term::list(vec![Term::Int(1000), Term::atom("x")]);
        assert_eq!(
            encode(&l),
            [131, 108, 0, 0, 0, 2, 98, 0, 0, 3, 232, 119, 1, 120, 106]
        );
        round_trip(&l);
        // [1,2|3]
        let improper = Term::ImproperList(vec![Term::Int(1), Term::Int(2)], Box::new(Term::Int(3)));
        assert_eq!(
            encode(&improper),
            [131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 97, 3]
        );
        round_trip(&improper);
        // A list whose tail is a list is one flat list.
        assert_eq!(
            decode(&[131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 1, 2]).unwrap(),
            Term::list(vec![Term::Int(1), Term::Int(2)])
        );
        let map = Term::map(vec![
            (Term::atom("a"), Term::Int(1)),
            (Term::binary(*b"k"), Term::nil()),
        ]);
        assert_eq!(
            encode(&map),
            [
                131, 116, 0, 0, 0, 2, 119, 1, 97, 97, 1, 109, 0, 0, 0, 1, 107, 106
            ]
        );
        round_trip(&map);
        round_trip(&Term::map(vec![]));
        round_trip(&Term::tuple(vec![]));
    }

    #[test]
    fn pids_ports_refs() {
        let node = atom("n@h");
        let pid = Term::Pid(ErlPid {
            node: node.clone(),
            id: 1,
            serial: 2,
            creation: 3,
        });
        assert_eq!(
            encode(&pid),
            [
                131, 88, 119, 3, 110, 64, 104, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3
            ]
        );
        round_trip(&pid);
        // PID_EXT, with a latin-1 node atom and an 8-bit creation.
        assert_eq!(
            decode(&[131, 103, 100, 0, 3, 110, 64, 104, 0, 0, 0, 1, 0, 0, 0, 2, 3]).unwrap(),
            pid
        );
        let port = |id| {
            Term::Port(ErlPort {
                node: node.clone(),
                id,
                creation: 3,
            })
        };
        assert_eq!(
            encode(&port(5)),
            [131, 89, 119, 3, 110, 64, 104, 0, 0, 0, 5, 0, 0, 0, 3]
        );
        assert_eq!(encode(&port(1 << 40))[1], V4_PORT_EXT);
        round_trip(&port(5));
        round_trip(&port(u64::MAX));
        assert_eq!(
            decode(&[131, 102, 100, 0, 3, 110, 64, 104, 0, 0, 0, 5, 3]).unwrap(),
            port(5)
        );
        let r = Term::Ref(ErlRef {
            node: node.clone(),
            creation: 3,
            ids: vec![7, 8, 9],
        });
        assert_eq!(
            encode(&r),
            [
                131, 90, 0, 3, 119, 3, 110, 64, 104, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9
            ]
        );
        round_trip(&r);
        // NEW_REFERENCE_EXT (8-bit creation) and REFERENCE_EXT.
        assert_eq!(
            decode(&[
                131, 114, 0, 3, 100, 0, 3, 110, 64, 104, 3, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9
            ])
            .unwrap(),
            r
        );
        assert_eq!(
            decode(&[131, 101, 100, 0, 3, 110, 64, 104, 0, 0, 0, 7, 3]).unwrap(),
            Term::Ref(ErlRef {
                node: node.clone(),
                creation: 3,
                ids: vec![7]
            })
        );
        for n in [0u8, 6] {
            let bytes = [131, 90, 0, n, 119, 3, 110, 64, 104];
            assert!(matches!(
                decode(&bytes),
                Err(EtfError::Invalid { offset: 2, .. })
            ));
        }
    }

    /// A fun with one free variable, as `encode` writes it.
    fn sample_fun() -> Vec<u8> {
        let mut f = vec![NEW_FUN_EXT, 0, 0, 0, 0, 0];
        f.extend_from_slice(&[0xab; 16]);
        f.extend_from_slice(&[0, 0, 0, 0]); // Index
        f.extend_from_slice(&[0, 0, 0, 1]); // NumFree
        f.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, 1, b'm']); // Module
        f.extend_from_slice(&[97, 0]); // OldIndex
        f.extend_from_slice(&[98, 1, 2, 3, 4]); // OldUniq
        f.extend(
            encode(&Term::Pid(ErlPid {
                node: atom("n@h"),
                id: 1,
                serial: 0,
                creation: 0,
            }))
            .into_iter()
            .skip(1),
        );
        f.extend_from_slice(&[97, 42]); // the free variable
        let size = (f.len() - 1) as u32;
        f[1..5].copy_from_slice(&size.to_be_bytes());
        f
    }

    #[test]
    fn funs_and_exports() {
        let f = sample_fun();
        let mut bytes = vec![131];
        bytes.extend_from_slice(&f);
        let t = decode(&bytes).unwrap();
        assert_eq!(t, Term::Fun(f.clone()));
        assert_eq!(encode(&t), bytes);
        assert_eq!(t.to_string(), "#Fun<m.0.16909060>");
        // The same fun with a latin-1 module atom, as OTP 25 writes it by
        // default, is the same term.
        let module_at = 1 + 1 + 4 + 1 + 16 + 4 + 4;
        let mut latin1 = bytes[..module_at].to_vec();
        latin1.extend_from_slice(&[ATOM_EXT, 0, 1, b'm']);
        latin1.extend_from_slice(&bytes[module_at + 3..]);
        let size = (latin1.len() - 2) as u32;
        latin1[2..6].copy_from_slice(&size.to_be_bytes());
        assert_eq!(decode(&latin1).unwrap(), t);
        // A wrong Size field is caught.
        let mut wrong = bytes.clone();
        let size = u32::from_be_bytes(wrong[2..6].try_into().unwrap());
        wrong[2..6].copy_from_slice(&(size - 1).to_be_bytes());
        assert!(matches!(
            decode(&wrong),
            Err(EtfError::Invalid { offset: 2, .. })
        ));
        // fun lists:map/2, as term_to_binary writes it in OTP 25.
        let export = [
            131, 113, 100, 0, 5, 108, 105, 115, 116, 115, 100, 0, 3, 109, 97, 112, 97, 2,
        ];
        let e = decode(&export).unwrap();
        assert_eq!(
            e,
            Term::Export {
                module: atom("lists"),
                function: atom("map"),
                arity: 2
            }
        );
        round_trip(&e);
    }

    #[test]
    fn a_fun_that_used_the_atom_cache_is_written_without_it() {
        let f = sample_fun();
        // The same fun with its module as atom cache reference 0.
        let module_at = 1 + 4 + 1 + 16 + 4 + 4;
        let mut cached = f[..module_at].to_vec();
        cached.extend_from_slice(&[ATOM_CACHE_REF, 0]);
        cached.extend_from_slice(&f[module_at + 3..]);
        let size = (cached.len() - 1) as u32;
        cached[1..5].copy_from_slice(&size.to_be_bytes());
        let cache = [Some(atom("m"))];
        let opts = DecodeOptions {
            magic: false,
            atom_cache: Some(&cache),
            ..Default::default()
        };
        let (t, used) = decode_with(&cached, &opts).unwrap();
        assert_eq!(used, cached.len());
        let Term::Fun(bytes) = &t else {
            panic!("not a fun: {t:?}")
        };
        assert_eq!(bytes, &f);
        let mut plain = vec![131];
        plain.extend_from_slice(bytes);
        assert_eq!(t.to_string(), "#Fun<m.0.16909060>");
        assert_eq!(decode(&plain).unwrap(), t);
    }

    #[test]
    fn refused_encodings() {
        assert!(matches!(
            decode(&[131, 80, 0, 0, 0, 1, 120, 156]),
            Err(EtfError::Unsupported { offset: 1, what }) if what.starts_with("compressed terms are not supported")
        ));
        assert!(matches!(
            decode(&[131, 121, 1]),
            Err(EtfError::Unsupported { offset: 1, .. })
        ));
        assert_eq!(
            decode(&[131, 200]),
            Err(EtfError::UnknownTag {
                offset: 1,
                tag: 200
            })
        );
        assert_eq!(decode(&[130, 106]), Err(EtfError::BadMagic { found: 130 }));
        assert_eq!(
            decode(&[]),
            Err(EtfError::Truncated {
                offset: 0,
                needed: 1
            })
        );
        assert_eq!(
            decode(&[131, 106, 106]),
            Err(EtfError::TrailingBytes { offset: 2 })
        );
        let no_magic = DecodeOptions {
            magic: false,
            ..Default::default()
        };
        assert_eq!(
            decode_with(&[106, 106], &no_magic).unwrap(),
            (Term::nil(), 1)
        );
    }

    fn complex_term() -> Term {
        let node = atom("node@host");
        Term::tuple(vec![
            Term::atom("héllo"),
            Term::Int(-70000),
            Term::from(1i128 << 100),
            Term::Float(2.5),
            Term::binary(*b"bin"),
            Term::BitBinary {
                bytes: vec![1, 128],
                bits: 1,
            },
            Term::list(vec![Term::Int(1), Term::Int(300), Term::nil()]),
            Term::ImproperList(vec![Term::Int(1)], Box::new(Term::atom("t"))),
            Term::map(vec![(Term::Int(1), Term::tuple(vec![Term::Int(2)]))]),
            Term::Pid(ErlPid {
                node: node.clone(),
                id: 1,
                serial: 2,
                creation: 3,
            }),
            Term::Ref(ErlRef {
                node: node.clone(),
                creation: 1,
                ids: vec![1, 2, 3],
            }),
            Term::Port(ErlPort {
                node,
                id: 9,
                creation: 1,
            }),
            Term::Fun(sample_fun()),
            Term::Export {
                module: atom("lists"),
                function: atom("map"),
                arity: 2,
            },
            Term::list(vec![Term::Int(104), Term::Int(105)]),
        ])
    }

    #[test]
    fn every_prefix_of_a_complex_term_fails_cleanly() {
        let t = complex_term();
        let bytes = encode(&t);
        assert_eq!(decode(&bytes).unwrap(), t);
        for n in 0..bytes.len() {
            match decode(&bytes[..n]) {
                Err(EtfError::Truncated { .. } | EtfError::LengthExceedsInput { .. }) => {}
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn every_single_byte_corruption_fails_or_decodes_without_panic() {
        let bytes = encode(&complex_term());
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
    }

    #[test]
    fn huge_claimed_lengths_fail_before_allocating() {
        let cases: &[&[u8]] = &[
            &[131, 105, 255, 255, 255, 255],
            &[131, 108, 255, 255, 255, 255],
            &[131, 116, 255, 255, 255, 255],
            &[131, 109, 255, 255, 255, 255],
            &[131, 77, 255, 255, 255, 255, 3],
            &[131, 111, 255, 255, 255, 255, 0],
            &[131, 107, 255, 255],
            &[131, 118, 255, 255],
        ];
        for bytes in cases {
            assert!(
                matches!(decode(bytes), Err(EtfError::LengthExceedsInput { .. })),
                "{bytes:?}: {:?}",
                decode(bytes)
            );
        }
        // Nested tuples each claiming all that remains: together they claim
        // more than the input holds, which is caught at the second.
        let mut nested = vec![131];
        for _ in 0..4 {
            nested.extend_from_slice(&[105, 0, 0, 0, 30]);
        }
        nested.extend_from_slice(&[106; 20]);
        assert!(matches!(
            decode(&nested),
            Err(EtfError::LengthExceedsInput { offset: 7, .. })
        ));
        // A map needs two bytes a pair.
        assert!(matches!(
            decode(&[131, 116, 0, 0, 0, 2, 97, 1, 97]),
            Err(EtfError::LengthExceedsInput { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for (open, depth) in [(&[104u8, 1][..], 100_000), (&[108, 0, 0, 0, 1], 100_000)] {
            let mut bytes = vec![131];
            for _ in 0..depth {
                bytes.extend_from_slice(open);
            }
            bytes.push(106);
            bytes.extend(std::iter::repeat_n(
                106,
                if open[0] == 108 { depth } else { 0 },
            ));
            assert_eq!(decode(&bytes), Err(EtfError::TooDeep { limit: 512 }));
            // Even a limit far beyond any stack's capacity is safe.
            let opts = DecodeOptions {
                limits: DecodeLimits {
                    max_depth: usize::MAX,
                    ..DecodeLimits::default()
                },
                ..Default::default()
            };
            let (t, used) = decode_with(&bytes, &opts).unwrap();
            assert_eq!(used, bytes.len());
            // Drop the deep term iteratively too.
            let mut stack = vec![t];
            while let Some(t) = stack.pop() {
                match t {
                    Term::Tuple(items) | Term::List(items) => stack.extend(items),
                    _ => {}
                }
            }
        }
        // Depth 512 is accepted, 513 is not.
        let nest = |n: usize| {
            let mut b = vec![131];
            b.extend(std::iter::repeat_n([104u8, 1], n).flatten());
            b.push(106);
            b
        };
        assert!(decode(&nest(512)).is_ok());
        assert_eq!(decode(&nest(513)), Err(EtfError::TooDeep { limit: 512 }));
    }

    #[test]
    fn encoding_a_deep_term_does_not_recurse() {
        let mut t = Term::nil();
        for _ in 0..100_000 {
            t = Term::List(vec![t]);
        }
        let bytes = encode(&t);
        assert_eq!(bytes.len(), 1 + 100_000 * 6 + 1);
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            if let Term::List(items) = t {
                stack.extend(items);
            }
        }
    }

    #[test]
    fn complex_term_round_trips() {
        round_trip(&complex_term());
    }
}
