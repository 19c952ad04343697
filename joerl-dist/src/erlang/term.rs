//! Erlang terms as a dynamic Rust value.
//!
//! [`Term`] holds any value the External Term Format can carry, in a form
//! normalized so that one Erlang value has one `Term`: every integer that fits
//! an `i64` is a [`Term::Int`] (only larger ones are [`Term::Big`]), a binary
//! whose last byte is whole is a [`Term::Binary`], a list ending in `[]` is a
//! [`Term::List`]. Decoding with [`crate::erlang::etf`] always yields this
//! form; a `Term` built by hand outside it still encodes to the value it
//! denotes.
//!
//! Two terms compare equal (`==`) when they denote the same Erlang value as
//! described here, with two refinements: maps are compared as sets of pairs
//! (Erlang does not preserve the order of map pairs, so `#{a => 1, b => 2}`
//! equals `#{b => 2, a => 1}`), and the unused low bits of a bit binary's last
//! byte are ignored. Floats compare as `f64` (so `0.0 == -0.0`). A
//! [`Term::Big`] built by hand with a value that fits an `i64` is not equal to
//! the [`Term::Int`] of that value; [`Term::big`] normalizes.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Why a term could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermError {
    /// An atom longer than Erlang allows.
    #[error(
        "an atom of {chars} characters exceeds Erlang's limit of 255 characters; carry longer text as a binary"
    )]
    AtomTooLong {
        /// The number of characters (Unicode code points) of the refused name.
        chars: usize,
    },
}

/// The most characters an Erlang atom may have.
pub const MAX_ATOM_CHARS: usize = 255;

/// An Erlang atom: a name of at most 255 characters (Unicode code points).
///
/// Cheap to clone (the name is shared). Ordered by its name's bytes, which is
/// not Erlang's term order between atoms and other types but agrees with it
/// between two atoms of ASCII names.
///
/// [`Display`](fmt::Display) prints the bare name (as `atom_to_list/1` would);
/// a [`Term::Atom`] prints it quoted where Erlang syntax needs quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Atom(Arc<str>);

impl Atom {
    /// The atom named `name`; an error if it has more than 255 characters.
    pub fn new(name: &str) -> Result<Atom, TermError> {
        let chars = name.chars().count();
        if chars > MAX_ATOM_CHARS {
            return Err(TermError::AtomTooLong { chars });
        }
        Ok(Atom(Arc::from(name)))
    }

    /// The atom named by a literal, for names known to be short (`ok`, `error`,
    /// a module name). Debug builds assert the 255-character limit; release
    /// builds do not check it, and an over-long atom is then refused by Erlang
    /// when it receives the term.
    pub fn from_static(name: &'static str) -> Atom {
        debug_assert!(
            name.chars().count() <= MAX_ATOM_CHARS,
            "atom {name:?} exceeds Erlang's limit of 255 characters"
        );
        Atom(Arc::from(name))
    }

    /// Builds an atom from a name whose length the caller has checked.
    pub(crate) fn from_checked(name: &str) -> Atom {
        Atom(Arc::from(name))
    }

    /// The atom's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as Erlang source writes it: bare when it can be (`ok`,
    /// `node@host`), otherwise in single quotes with escapes (`'Caps'`,
    /// `'hello world'`), as `io_lib:format("~tw", [Atom])` does.
    pub fn quoted(&self) -> String {
        let mut s = String::new();
        write_atom(&mut s, self.as_str()).expect("writing to a String cannot fail");
        s
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Atom {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Atom {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Atom {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Atom {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl TryFrom<&str> for Atom {
    type Error = TermError;
    fn try_from(name: &str) -> Result<Atom, TermError> {
        Atom::new(name)
    }
}

impl TryFrom<String> for Atom {
    type Error = TermError;
    fn try_from(name: String) -> Result<Atom, TermError> {
        Atom::new(&name)
    }
}

/// An Erlang process identifier, as NEW_PID_EXT carries it.
///
/// Erlang/OTP keeps all 32 bits of `id`, `serial` and `creation` of a pid of
/// another node. joerl's [`Pid`](joerl_core::Pid) maps onto it with
/// [`ErlPid::from_joerl`] and [`ErlPid::to_joerl`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErlPid {
    /// The node the process lives on (`name@host`).
    pub node: Atom,
    /// The process number.
    pub id: u32,
    /// The serial number, the high part of the process number.
    pub serial: u32,
    /// The incarnation of the node that made the pid.
    pub creation: u32,
}

impl ErlPid {
    /// The Erlang form of a joerl Pid whose node is called `node_name`: the
    /// low 32 bits of the joerl process number become `id`, the high 32 bits
    /// `serial`. The joerl node id is not carried (Erlang names nodes, it does
    /// not number them); [`ErlPid::to_joerl`] recomputes it from the name.
    pub fn from_joerl(pid: joerl_core::Pid, node_name: Atom) -> ErlPid {
        ErlPid {
            node: node_name,
            id: pid.id() as u32,
            serial: (pid.id() >> 32) as u32,
            creation: pid.creation(),
        }
    }

    /// The joerl Pid of this process: node id
    /// [`node_id`](joerl_core::node_id) of the node's name, process number
    /// `serial << 32 | id`, the same creation.
    pub fn to_joerl(&self) -> joerl_core::Pid {
        joerl_core::Pid::new(
            joerl_core::node_id(self.node.as_str()),
            (u64::from(self.serial) << 32) | u64::from(self.id),
            self.creation,
        )
    }
}

/// An Erlang reference (NEWER_REFERENCE_EXT): a node, its creation and 1 to 5
/// 32-bit words (`make_ref()` makes 3; Erlang/OTP accepts up to 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErlRef {
    /// The node that made the reference.
    pub node: Atom,
    /// The incarnation of that node.
    pub creation: u32,
    /// The reference's words, in ETF order; 1 to 5 of them.
    pub ids: Vec<u32>,
}

/// An Erlang port identifier (NEW_PORT_EXT, or V4_PORT_EXT for ids beyond 32
/// bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErlPort {
    /// The node the port belongs to.
    pub node: Atom,
    /// The port number.
    pub id: u64,
    /// The incarnation of that node.
    pub creation: u32,
}

/// An integer in sign-magnitude form, as ETF's big integers carry it.
///
/// `magnitude` is little-endian base-256 (ETF's digit order) with no trailing
/// zero bytes; zero is an empty magnitude and is never negative.
/// [`BigInt::new`] normalizes; a value built field by field may break these
/// rules, and is normalized when encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BigInt {
    /// True for a negative number.
    pub negative: bool,
    /// The absolute value, least significant byte first.
    pub magnitude: Vec<u8>,
}

impl BigInt {
    /// A normalized integer: trailing zero bytes of `magnitude` removed, and
    /// zero made non-negative.
    pub fn new(negative: bool, mut magnitude: Vec<u8>) -> BigInt {
        while magnitude.last() == Some(&0) {
            magnitude.pop();
        }
        let negative = negative && !magnitude.is_empty();
        BigInt {
            negative,
            magnitude,
        }
    }

    /// The integer `v`.
    pub fn from_i128(v: i128) -> BigInt {
        BigInt::new(v < 0, v.unsigned_abs().to_le_bytes().to_vec())
    }

    /// True if the value is zero.
    pub fn is_zero(&self) -> bool {
        self.magnitude.iter().all(|&b| b == 0)
    }

    /// The magnitude without trailing zero bytes.
    pub(crate) fn significant(&self) -> &[u8] {
        let n = self
            .magnitude
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        &self.magnitude[..n]
    }

    fn magnitude_u128(&self) -> Option<u128> {
        let m = self.significant();
        if m.len() > 16 {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..m.len()].copy_from_slice(m);
        Some(u128::from_le_bytes(bytes))
    }

    /// The value as an `i128`, if it fits.
    pub fn to_i128(&self) -> Option<i128> {
        let m = self.magnitude_u128()?;
        if self.negative && !self.is_zero() {
            if m <= i128::MAX as u128 + 1 {
                Some((m as i128).wrapping_neg())
            } else {
                None
            }
        } else {
            i128::try_from(m).ok()
        }
    }

    /// The value as an `i64`, if it fits.
    pub fn to_i64(&self) -> Option<i64> {
        self.to_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The value as a `u128`, if it is non-negative and fits.
    pub fn to_u128(&self) -> Option<u128> {
        if self.negative && !self.is_zero() {
            None
        } else {
            self.magnitude_u128()
        }
    }

    /// The value as a `u64`, if it is non-negative and fits.
    pub fn to_u64(&self) -> Option<u64> {
        self.to_u128().and_then(|v| u64::try_from(v).ok())
    }
}

impl fmt::Display for BigInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Base 10^9 digits by repeated division of big-endian 32-bit limbs.
        let m = self.significant();
        if m.is_empty() {
            return f.write_str("0");
        }
        let mut limbs: Vec<u32> = m
            .chunks(4)
            .rev()
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect();
        let mut groups = Vec::new();
        while limbs.iter().any(|&l| l != 0) {
            let mut rem: u64 = 0;
            for l in limbs.iter_mut() {
                let cur = (rem << 32) | u64::from(*l);
                *l = (cur / 1_000_000_000) as u32;
                rem = cur % 1_000_000_000;
            }
            groups.push(rem as u32);
            while limbs.first() == Some(&0) {
                limbs.remove(0);
            }
        }
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        let mut it = groups.iter().rev();
        if let Some(first) = it.next() {
            s.push_str(&first.to_string());
        }
        for g in it {
            s.push_str(&format!("{g:09}"));
        }
        f.write_str(&s)
    }
}

/// Any Erlang value.
///
/// See the [module documentation](self) for the normal form and for what `==`
/// means: `PartialEq` is implemented by hand so that maps compare regardless
/// of pair order.
///
/// [`Display`](fmt::Display) prints Erlang syntax as `io_lib:format("~tw")`
/// does for numbers, atoms, binaries, bit binaries, tuples, lists, maps and
/// external funs. Pids, references, ports and funs have no syntax that names
/// their node, so they print as `#Pid<node.id.serial.creation>`,
/// `#Ref<node.creation.id1.id2...>`, `#Port<node.id.creation>` and
/// `#Fun<module.old_index.old_uniq>`; this is not Erlang's local numbering
/// (`<0.42.0>`). Floats print in a shortest form that reads back as the same
/// float (`0.1`, `1.0e20`), which can differ from Erlang's choice between
/// the plain and the exponent form.
#[derive(Debug, Clone)]
pub enum Term {
    /// An atom.
    Atom(Atom),
    /// An integer that fits an `i64`.
    Int(i64),
    /// An integer outside the `i64` range.
    Big(BigInt),
    /// A float. Erlang has no NaN or infinities and refuses terms holding them.
    Float(f64),
    /// A binary.
    Binary(Vec<u8>),
    /// A bitstring whose length is not a whole number of bytes: `bits` (1 to
    /// 7) high bits of the last byte are used. A value outside 1..=7 means the
    /// last byte is whole, and encodes as a binary.
    BitBinary {
        /// The bytes; the last one is partly used.
        bytes: Vec<u8>,
        /// How many of the last byte's bits (from the most significant) count.
        bits: u8,
    },
    /// A tuple.
    Tuple(Vec<Term>),
    /// A proper list; `[]` is `List(vec![])`. Strings (charlists) are lists of
    /// [`Term::Int`].
    List(Vec<Term>),
    /// A list that does not end in `[]`: at least one element and a tail that
    /// is not a list (`[1, 2 | 3]`).
    ImproperList(Vec<Term>, Box<Term>),
    /// A map, pairs in the order they were decoded or given.
    Map(Vec<(Term, Term)>),
    /// A process identifier.
    Pid(ErlPid),
    /// A reference.
    Ref(ErlRef),
    /// A port identifier.
    Port(ErlPort),
    /// A fun (closure), kept opaque: the complete NEW_FUN_EXT encoding, tag
    /// byte included, which is encoded again verbatim. Decoding writes the
    /// fun's atoms and integers as [`etf::encode`](crate::erlang::etf::encode)
    /// does, so one fun has one `Term` whichever encodings the sender chose.
    Fun(Vec<u8>),
    /// An external fun, `fun module:function/arity`.
    Export {
        /// The module.
        module: Atom,
        /// The function.
        function: Atom,
        /// The arity.
        arity: u8,
    },
}

impl Term {
    /// The atom `name`.
    ///
    /// # Panics
    ///
    /// If `name` has more than 255 characters; [`Term::try_atom`] returns an
    /// error instead.
    pub fn atom(name: &str) -> Term {
        match Atom::new(name) {
            Ok(a) => Term::Atom(a),
            Err(e) => panic!("Term::atom({name:?}): {e}"),
        }
    }

    /// The atom `name`, or an error if it has more than 255 characters.
    pub fn try_atom(name: &str) -> Result<Term, TermError> {
        Atom::new(name).map(Term::Atom)
    }

    /// A tuple.
    pub fn tuple(items: Vec<Term>) -> Term {
        Term::Tuple(items)
    }

    /// A proper list.
    pub fn list(items: Vec<Term>) -> Term {
        Term::List(items)
    }

    /// A binary.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Term {
        Term::Binary(bytes.into())
    }

    /// The empty list `[]`.
    pub fn nil() -> Term {
        Term::List(Vec::new())
    }

    /// A map.
    pub fn map(pairs: Vec<(Term, Term)>) -> Term {
        Term::Map(pairs)
    }

    /// The integer `v`, normalized: [`Term::Int`] when it fits an `i64`,
    /// otherwise [`Term::Big`].
    pub fn big(v: BigInt) -> Term {
        match v.to_i64() {
            Some(i) => Term::Int(i),
            None => Term::Big(BigInt::new(v.negative, v.magnitude)),
        }
    }

    /// The atom's name, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a.as_str()),
            _ => None,
        }
    }

    /// True if this is the atom `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }

    /// The integer, if this is an integer that fits an `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Term::Int(i) => Some(*i),
            Term::Big(b) => b.to_i64(),
            _ => None,
        }
    }

    /// The float, if this is a float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Term::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Term]> {
        match self {
            Term::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The elements, if this is a proper list.
    pub fn as_list(&self) -> Option<&[Term]> {
        match self {
            Term::List(l) => Some(l),
            _ => None,
        }
    }

    /// The bytes, if this is a binary.
    pub fn as_binary(&self) -> Option<&[u8]> {
        match self {
            Term::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The pairs, if this is a map.
    pub fn as_map(&self) -> Option<&[(Term, Term)]> {
        match self {
            Term::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The pid, if this is a pid.
    pub fn as_pid(&self) -> Option<&ErlPid> {
        match self {
            Term::Pid(p) => Some(p),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map that has it.
    pub fn map_get(&self, key: &Term) -> Option<&Term> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// The low `8 - bits` bits of a bit binary's last byte do not count.
fn last_byte_mask(bits: u8) -> u8 {
    0xffu8 << (8 - bits)
}

fn bit_binaries_equal(a: &[u8], ab: u8, b: &[u8], bb: u8) -> bool {
    let whole = |bits: u8| !(1..=7).contains(&bits);
    match (whole(ab), whole(bb)) {
        (true, true) => a == b,
        (false, false) => {
            ab == bb
                && a.len() == b.len()
                && match (a.split_last(), b.split_last()) {
                    (Some((la, ra)), Some((lb, rb))) => {
                        ra == rb && la & last_byte_mask(ab) == lb & last_byte_mask(bb)
                    }
                    (None, None) => true,
                    _ => false,
                }
        }
        _ => false,
    }
}

fn maps_equal(a: &[(Term, Term)], b: &[(Term, Term)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    'next: for (ka, va) in a {
        for (i, (kb, vb)) in b.iter().enumerate() {
            if !used[i] && ka == kb && va == vb {
                used[i] = true;
                continue 'next;
            }
        }
        return false;
    }
    true
}

impl PartialEq for Term {
    fn eq(&self, other: &Term) -> bool {
        use Term::*;
        match (self, other) {
            (Atom(a), Atom(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Big(a), Big(b)) => {
                a.significant() == b.significant() && (a.negative == b.negative || a.is_zero())
            }
            (Float(a), Float(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (Binary(a), BitBinary { bytes, bits }) | (BitBinary { bytes, bits }, Binary(a)) => {
                bit_binaries_equal(a, 8, bytes, *bits)
            }
            (
                BitBinary { bytes: a, bits: ab },
                BitBinary {
                    bytes: b, bits: bb, ..
                },
            ) => bit_binaries_equal(a, *ab, b, *bb),
            (Tuple(a), Tuple(b)) => a == b,
            (List(a), List(b)) => a == b,
            (ImproperList(a, ta), ImproperList(b, tb)) => a == b && ta == tb,
            (Map(a), Map(b)) => maps_equal(a, b),
            (Pid(a), Pid(b)) => a == b,
            (Ref(a), Ref(b)) => a == b,
            (Port(a), Port(b)) => a == b,
            (Fun(a), Fun(b)) => a == b,
            (
                Export {
                    module: ma,
                    function: fa,
                    arity: aa,
                },
                Export {
                    module: mb,
                    function: fb,
                    arity: ab,
                },
            ) => ma == mb && fa == fb && aa == ab,
            _ => false,
        }
    }
}

impl From<Atom> for Term {
    fn from(a: Atom) -> Term {
        Term::Atom(a)
    }
}

impl From<i64> for Term {
    fn from(v: i64) -> Term {
        Term::Int(v)
    }
}

impl From<i32> for Term {
    fn from(v: i32) -> Term {
        Term::Int(i64::from(v))
    }
}

impl From<u32> for Term {
    fn from(v: u32) -> Term {
        Term::Int(i64::from(v))
    }
}

impl From<u8> for Term {
    fn from(v: u8) -> Term {
        Term::Int(i64::from(v))
    }
}

/// A [`Term::Int`], or a [`Term::Big`] beyond `i64::MAX`.
impl From<u64> for Term {
    fn from(v: u64) -> Term {
        Term::from(i128::from(v))
    }
}

/// A [`Term::Int`], or a [`Term::Big`] outside the `i64` range.
impl From<i128> for Term {
    fn from(v: i128) -> Term {
        match i64::try_from(v) {
            Ok(i) => Term::Int(i),
            Err(_) => Term::Big(BigInt::from_i128(v)),
        }
    }
}

impl From<f64> for Term {
    fn from(v: f64) -> Term {
        Term::Float(v)
    }
}

/// The atoms `true` and `false`.
impl From<bool> for Term {
    fn from(v: bool) -> Term {
        Term::Atom(Atom::from_static(if v { "true" } else { "false" }))
    }
}

/// A UTF-8 binary, as Elixir carries strings (not an Erlang charlist, which
/// is a list of code points; build that with [`Term::list`]).
impl From<&str> for Term {
    fn from(v: &str) -> Term {
        Term::Binary(v.as_bytes().to_vec())
    }
}

/// A UTF-8 binary, like `From<&str>`.
impl From<String> for Term {
    fn from(v: String) -> Term {
        Term::Binary(v.into_bytes())
    }
}

impl From<ErlPid> for Term {
    fn from(v: ErlPid) -> Term {
        Term::Pid(v)
    }
}

impl From<ErlRef> for Term {
    fn from(v: ErlRef) -> Term {
        Term::Ref(v)
    }
}

impl From<ErlPort> for Term {
    fn from(v: ErlPort) -> Term {
        Term::Port(v)
    }
}

impl From<BigInt> for Term {
    fn from(v: BigInt) -> Term {
        Term::big(v)
    }
}

/// A proper list.
impl From<Vec<Term>> for Term {
    fn from(v: Vec<Term>) -> Term {
        Term::List(v)
    }
}

const RESERVED_WORDS: &[&str] = &[
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
    "rem", "try", "when", "xor",
];

fn is_lower_start(c: char) -> bool {
    c.is_ascii_lowercase() || (('ß'..='ÿ').contains(&c) && c != '÷')
}

fn is_name_char(c: char) -> bool {
    is_lower_start(c)
        || c.is_ascii_uppercase()
        || (('À'..='Þ').contains(&c) && c != '×')
        || c.is_ascii_digit()
        || c == '_'
        || c == '@'
}

/// Erlang's rule (`io_lib:quote_atom/2`) for an atom that reads back without
/// quotes.
fn atom_is_bare(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if is_lower_start(c) => {}
        _ => return false,
    }
    chars.all(is_name_char) && !RESERVED_WORDS.contains(&name)
}

fn write_atom(f: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if atom_is_bare(name) {
        return f.write_str(name);
    }
    f.write_char('\'')?;
    for c in name.chars() {
        match c {
            '\'' => f.write_str("\\'")?,
            '\\' => f.write_str("\\\\")?,
            ' '..='~' => f.write_char(c)?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{b}' => f.write_str("\\v")?,
            '\u{8}' => f.write_str("\\b")?,
            '\u{c}' => f.write_str("\\f")?,
            '\u{1b}' => f.write_str("\\e")?,
            '\u{7f}' => f.write_str("\\d")?,
            c if (c as u32) < 0xa0 => write!(f, "\\{:03o}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('\'')
}

fn write_float(f: &mut fmt::Formatter<'_>, v: f64) -> fmt::Result {
    // Rust's shortest round-trip form, with the ".0" Erlang requires before
    // an exponent (`1e20` is not an Erlang float, `1.0e20` is).
    let s = format!("{v:?}");
    match s.split_once('e') {
        Some((mant, exp)) if !mant.contains('.') => write!(f, "{mant}.0e{exp}"),
        _ => f.write_str(&s),
    }
}

fn write_seq(f: &mut fmt::Formatter<'_>, items: &[Term]) -> fmt::Result {
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{t}")?;
    }
    Ok(())
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Atom(a) => write_atom(f, a.as_str()),
            Term::Int(i) => write!(f, "{i}"),
            Term::Big(b) => write!(f, "{b}"),
            Term::Float(v) => write_float(f, *v),
            Term::Binary(b) => {
                f.write_str("<<")?;
                for (i, byte) in b.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{byte}")?;
                }
                f.write_str(">>")
            }
            Term::BitBinary { bytes, bits } => {
                let Some((last, whole)) = bytes.split_last() else {
                    return f.write_str("<<>>");
                };
                if !(1..=7).contains(bits) {
                    return write!(f, "{}", Term::Binary(bytes.clone()));
                }
                f.write_str("<<")?;
                for byte in whole {
                    write!(f, "{byte},")?;
                }
                write!(f, "{}:{bits}>>", last >> (8 - bits))
            }
            Term::Tuple(items) => {
                f.write_str("{")?;
                write_seq(f, items)?;
                f.write_str("}")
            }
            Term::List(items) => {
                f.write_str("[")?;
                write_seq(f, items)?;
                f.write_str("]")
            }
            Term::ImproperList(items, tail) => {
                f.write_str("[")?;
                write_seq(f, items)?;
                write!(f, "|{tail}]")
            }
            Term::Map(pairs) => {
                f.write_str("#{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k} => {v}")?;
                }
                f.write_str("}")
            }
            Term::Pid(p) => {
                f.write_str("#Pid<")?;
                write_atom(f, p.node.as_str())?;
                write!(f, ".{}.{}.{}>", p.id, p.serial, p.creation)
            }
            Term::Ref(r) => {
                f.write_str("#Ref<")?;
                write_atom(f, r.node.as_str())?;
                write!(f, ".{}", r.creation)?;
                for id in &r.ids {
                    write!(f, ".{id}")?;
                }
                f.write_str(">")
            }
            Term::Port(p) => {
                f.write_str("#Port<")?;
                write_atom(f, p.node.as_str())?;
                write!(f, ".{}.{}>", p.id, p.creation)
            }
            Term::Fun(bytes) => match crate::erlang::etf::fun_summary(bytes) {
                Some((module, old_index, old_uniq)) => {
                    f.write_str("#Fun<")?;
                    write_atom(f, module.as_str())?;
                    write!(f, ".{old_index}.{old_uniq}>")
                }
                None => write!(f, "#Fun<{} bytes>", bytes.len()),
            },
            Term::Export {
                module,
                function,
                arity,
            } => {
                f.write_str("fun ")?;
                write_atom(f, module.as_str())?;
                f.write_str(":")?;
                write_atom(f, function.as_str())?;
                write!(f, "/{arity}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_limit_counts_characters() {
        assert!(Atom::new(&"a".repeat(255)).is_ok());
        assert_eq!(
            Atom::new(&"a".repeat(256)),
            Err(TermError::AtomTooLong { chars: 256 })
        );
        // 255 three-byte characters: 765 bytes, still a valid atom.
        assert!(Atom::new(&"你".repeat(255)).is_ok());
        assert!(Term::try_atom(&"x".repeat(300)).is_err());
        assert_eq!(Atom::from_static("ok"), "ok");
        assert_eq!(Atom::new("ok").unwrap(), *"ok");
    }

    #[test]
    fn maps_compare_regardless_of_order() {
        let a = Term::map(vec![
            (Term::atom("a"), Term::Int(1)),
            (Term::atom("b"), Term::Int(2)),
        ]);
        let b = Term::map(vec![
            (Term::atom("b"), Term::Int(2)),
            (Term::atom("a"), Term::Int(1)),
        ]);
        assert_eq!(a, b);
        let c = Term::map(vec![
            (Term::atom("b"), Term::Int(2)),
            (Term::atom("a"), Term::Int(2)),
        ]);
        assert_ne!(a, c);
    }

    #[test]
    fn bit_binaries_ignore_unused_bits() {
        let a = Term::BitBinary {
            bytes: vec![1, 0b1110_0000],
            bits: 3,
        };
        let b = Term::BitBinary {
            bytes: vec![1, 0b1111_1111],
            bits: 3,
        };
        assert_eq!(a, b);
        assert_ne!(
            a,
            Term::BitBinary {
                bytes: vec![1, 0b1110_0000],
                bits: 4
            }
        );
        assert_eq!(
            Term::BitBinary {
                bytes: vec![1, 2],
                bits: 8
            },
            Term::binary(vec![1, 2])
        );
    }

    #[test]
    fn display_is_erlang_syntax() {
        let t = Term::list(vec![
            Term::map(vec![(Term::atom("a"), Term::Int(1))]),
            Term::ImproperList(vec![Term::Int(1), Term::Int(2)], Box::new(Term::Int(3))),
            Term::BitBinary {
                bytes: vec![1, 0b0100_0000],
                bits: 3,
            },
            Term::tuple(vec![]),
            Term::nil(),
            Term::atom("hello world"),
            Term::atom("Caps"),
            Term::atom("a\nb"),
            Term::atom("héllo"),
            Term::atom("a\u{1}b"),
            Term::atom("end"),
            Term::atom(""),
            Term::atom("node@host"),
            Term::binary(*b"ab"),
            Term::Int(-5),
            Term::from(1i128 << 70),
            Term::Float(1.0e20),
            Term::Float(0.1),
            Term::Export {
                module: Atom::from_static("lists"),
                function: Atom::from_static("map"),
                arity: 2,
            },
        ]);
        assert_eq!(
            t.to_string(),
            "[#{a => 1},[1,2|3],<<1,2:3>>,{},[],'hello world','Caps','a\\nb',héllo,'a\\001b','end','',node@host,<<97,98>>,-5,1180591620717411303424,1.0e20,0.1,fun lists:map/2]"
        );
    }

    #[test]
    fn big_int_conversions() {
        for v in [
            0i128,
            1,
            -1,
            i64::MAX as i128,
            i64::MIN as i128,
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            i128::MAX,
            i128::MIN,
        ] {
            let b = BigInt::from_i128(v);
            assert_eq!(b.to_i128(), Some(v));
            assert_eq!(b.to_string(), v.to_string());
        }
        assert_eq!(BigInt::new(true, vec![0, 0]), BigInt::new(false, vec![]));
        assert_eq!(Term::from(u64::MAX).to_string(), u64::MAX.to_string());
        assert_eq!(Term::big(BigInt::from_i128(7)), Term::Int(7));
        assert_eq!(BigInt::new(false, vec![0; 17]).to_i128(), Some(0));
        assert_eq!(BigInt::new(false, vec![1; 17]).to_i128(), None);
    }

    #[test]
    fn joerl_pid_conversion() {
        let pid = joerl_core::Pid::new(joerl_core::node_id("a@host"), (7u64 << 32) | 42, 3);
        let e = ErlPid::from_joerl(pid, Atom::new("a@host").unwrap());
        assert_eq!((e.id, e.serial, e.creation), (42, 7, 3));
        assert_eq!(e.to_joerl(), pid);
    }
}
